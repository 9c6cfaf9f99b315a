"""A fake `launchctl` (launchctl(1)) that stops a daemon the way launchd does: asynchronously.

Run as `launchctl` from a PATH directory (see `install_fake_launchctl`). Its state is one JSON file named by
FAKE_LAUNCHCTL_STATE. The behaviour modelled, for the `system/<label>` domain:

- `bootout` sends SIGTERM and returns at once; the label stays loaded ("state = SIGTERMed") for FAKE_LAUNCHCTL_EXIT_S
  seconds while the daemon shuts down, then launchd needs FAKE_LAUNCHCTL_CLEANUP_S more to clean up;
- `print` finds the label while it runs or exits (exit 0), and exits 113 "Could not find service" after that;
- `bootstrap` fails with "Bootstrap failed: 5: Input/output error" while the old instance exits or is cleaned
  up, and with 37 (EALREADY) while the label is loaded;
- `enable` always succeeds; every call is appended to the state's "calls".
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

NOT_FOUND_EXIT = 113


def main(argv: list[str]) -> int:
    state_path = Path(os.environ["FAKE_LAUNCHCTL_STATE"])
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    state.setdefault("calls", []).append(argv)
    now = time.monotonic()
    exiting_until = float(state.get("exiting_until", 0.0))
    cleaned_at = exiting_until + float(os.environ.get("FAKE_LAUNCHCTL_CLEANUP_S", "0"))
    loaded = bool(state.get("loaded", False))
    status = 0
    match argv:
        case ["bootout", target]:
            if loaded:
                state["loaded"] = False
                state["exiting_until"] = now + float(os.environ.get("FAKE_LAUNCHCTL_EXIT_S", "0"))
            else:
                print(f"Boot-out failed: 3: No such process ({target})", file=sys.stderr)
                status = 3
        case ["print", target]:
            if loaded or now < exiting_until:
                print(f"{target} = {{\n\tstate = {'running' if loaded else 'SIGTERMed'}\n}}")
            else:
                print(f'Could not find service "{target.split("/", 1)[1]}" in domain for system', file=sys.stderr)
                status = NOT_FOUND_EXIT
        case ["enable", _]:
            pass
        case ["bootstrap", "system", _]:
            if loaded:
                print("Bootstrap failed: 37: Operation already in progress", file=sys.stderr)
                status = 37
            elif now < cleaned_at:
                print("Bootstrap failed: 5: Input/output error", file=sys.stderr)
                status = 5
            else:
                state["loaded"] = True
        case _:
            print(f"fake launchctl: unsupported {argv}", file=sys.stderr)
            status = 64
    state_path.write_text(json.dumps(state))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
