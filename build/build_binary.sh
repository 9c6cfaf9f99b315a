#!/usr/bin/env bash
# Builds the self-contained dmnc executable for this OS/arch with PyInstaller (build/dmnc.spec).
#
#   build/build_binary.sh [onefile|onedir]
#   build/build_binary.sh venv       only make the pinned build venv (tests/run does, before the tests) and print its path
#
# Reproducible: the exact versions of build/requirements.txt in a venv of their own (a new one when that file or the
# Python version changes; build/out/venv links to it), SOURCE_DATE_EPOCH = the last commit's time, PYTHONHASHSEED fixed. Everything goes under
# build/out/ (gitignored; DMNC_BUILD_OUT=DIR puts it all, venv included, under DIR instead):
#   build/out/dist-onefile/dmnc                 onefile executable
#   build/out/dist-onedir/dmnc/dmnc             onedir executable (with its libraries beside it)
#   build/out/release/dmnc-VERSION-OS-ARCH      (onefile only) the release artifact, plus its .sha256 file
# PYTHON selects the interpreter the venv is made from (default python3; must be >= 3.11).
# DMNC_BUILD_VENV_PREBUILT=1 never installs from a package index: a missing build venv is an error (exit 3); the
# packaging tests set it, so no test depends on what a registry answers at that moment.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-onefile}"
case "$mode" in
    onefile | onedir | venv) ;;
    *)
        echo "usage: $0 [onefile|onedir|venv]" >&2
        exit 2
        ;;
esac

python="${PYTHON:-python3}"
out="${DMNC_BUILD_OUT:-build/out}"
os_name="$(uname -s | tr '[:upper:]' '[:lower:]')"
arch="$(uname -m)"
lock="build/requirements.txt"

# macOS ships shasum; Linux coreutils sha256sum. Same output format.
sha256() {
    if command -v sha256sum >/dev/null; then sha256sum "$@"; else shasum -a 256 "$@"; fi
}

# One venv per lock content and Python version, so builds share it (DMNC_BUILD_VENVS=DIR keeps them in DIR across
# build directories; tests use that) and a changed lock can never reuse a stale one.
key="$({ cat "$lock"; "$python" -c 'import sys; print(sys.version)'; } | sha256)"
venv="${DMNC_BUILD_VENVS:-$out}/venv-$os_name-$arch-${key:0:16}"
if [ ! -f "$venv/.complete" ] && [ -n "${DMNC_BUILD_VENV_PREBUILT:-}" ]; then
    echo "the pinned build venv $venv is missing; make it with: build/build_binary.sh venv (tests/run does)" >&2
    exit 3
fi
if [ ! -f "$venv/.complete" ]; then
    mkdir -p "$(dirname "$venv")"
    # mkdir is atomic: the first build makes the venv, concurrent ones wait for it.
    waited=0
    until mkdir "$venv.lock" 2>/dev/null; do
        if [ "$waited" -ge 600 ]; then
            echo "waited 600 s for $venv.lock; if no other build is running, remove it" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    trap 'rmdir "$venv.lock"' EXIT
    if [ ! -f "$venv/.complete" ]; then
        echo "== build venv $venv from $lock"
        rm -rf "$venv"
        "$python" -m venv "$venv"
        # --no-deps: only what the lock names gets in; `pip check` then proves the lock is complete.
        "$venv/bin/python" -m pip install -q --no-deps -r "$lock"
        "$venv/bin/python" -m pip check
        touch "$venv/.complete"
    fi
    rmdir "$venv.lock"
    trap - EXIT
fi
if [ "$mode" = venv ]; then
    echo "$venv"
    exit 0
fi
mkdir -p "$out"
ln -sfn "$(cd "$venv" && pwd)" "$out/venv"

version="$("$venv/bin/python" -c 'import sys; sys.path.insert(0, "."); import dmnc; print(dmnc.__version__)')"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH
# PyInstaller's bytecode and archive order depend on string hashing; a fixed seed makes them repeatable.
export PYTHONHASHSEED=0
export DMNC_BUILD_MODE="$mode"

echo "== dmnc $version, $mode, $os_name/$arch, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
"$venv/bin/python" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$out/dist-$mode" --workpath "$out/work-$mode" build/dmnc.spec

if [ "$mode" = onefile ]; then
    executable="$out/dist-onefile/dmnc"
    mkdir -p "$out/release"
    artifact="dmnc-$version-$os_name-$arch"
    cp "$executable" "$out/release/$artifact"
    (cd "$out/release" && sha256 "$artifact" > "$artifact.sha256")
    echo "== $out/release/$artifact"
else
    executable="$out/dist-onedir/dmnc/dmnc"
fi

# The build is only done when the frozen program runs and reports the version it was stamped with.
reported="$("$executable" --version)"
if [ "$reported" != "dmnc $version" ]; then
    echo "frozen $executable reports '$reported', expected 'dmnc $version'" >&2
    exit 1
fi
echo "== $executable: $reported"
