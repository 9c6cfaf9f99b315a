"""Fill the release-specific values into the Homebrew formula template (build/homebrew/dmnc.rb).

    python build/homebrew/render_formula.py --repository OWNER/NAME --version 1.2.3 --sdist dist/dmnc-1.2.3.tar.gz

prints the formula for that release: its source tarball URL on the repository's GitHub release, the tarball's
sha256 and the repository's homepage. Everything else (dependencies, resources, service block) is in the template.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).with_name("dmnc.rb")
PLACEHOLDERS = ("@REPOSITORY@", "@VERSION@", "@SDIST_SHA256@")
# GitHub owner (39 chars, alphanumerics and single hyphens) / repository name (alphanumerics, ".", "_", "-").
REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
# PEP 440 public versions as dmnc publishes them (release segment with an optional pre/post/dev suffix).
VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?")


class RenderError(Exception):
    """A release value that cannot go into a formula; the message names it."""


def render(template: str, *, repository: str, version: str, sdist_sha256: str) -> str:
    if not REPOSITORY.fullmatch(repository) or repository.split("/")[1] in {".", ".."}:
        raise RenderError(f"not a GitHub OWNER/NAME: {repository!r}")
    if not VERSION.fullmatch(version):
        raise RenderError(f"not a release version: {version!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", sdist_sha256):
        raise RenderError(f"not a sha256 hex digest: {sdist_sha256!r}")
    missing = [placeholder for placeholder in PLACEHOLDERS if placeholder not in template]
    if missing:
        raise RenderError(f"template lacks {', '.join(missing)}")
    return (
        template.replace("@REPOSITORY@", repository)
        .replace("@VERSION@", version)
        .replace("@SDIST_SHA256@", sdist_sha256)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repository", required=True, help="GitHub OWNER/NAME the release is published in")
    parser.add_argument("--version", required=True, help="release version, without the leading v")
    parser.add_argument("--sdist", required=True, type=Path, help="the release's source tarball")
    args = parser.parse_args(argv)
    try:
        digest = hashlib.sha256(args.sdist.read_bytes()).hexdigest()
        formula = render(TEMPLATE.read_text(), repository=args.repository, version=args.version, sdist_sha256=digest)
    except OSError as error:
        print(f"render_formula: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    except RenderError as error:
        print(f"render_formula: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(formula)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
