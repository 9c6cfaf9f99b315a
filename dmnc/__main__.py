from dmnc.cli import main

raise SystemExit(main())
