#!/usr/bin/env bash
# Obtains the Debian 6.1 cloud kernel that the qemu guest lab (tests/lab/qemu_guest.py) boots to get a real Linux
# kernel WireGuard peer: the lab host's kernel may have none.
#
# Idempotent: resolves the newest available linux-image-6.1.0-*-cloud-amd64 with apt-cache, downloads the .deb
# (apt-get download, no install), unpacks it with dpkg-deb -x and runs depmod on the unpacked tree. Nothing is done
# when that version is already unpacked. The result lives in $DMNC_LAB_CACHE (default /var/cache/dmnc-lab):
#   kernel/<version>/root/             the unpacked package (boot/vmlinuz-<version>, lib/modules/<version>/)
#   kernel/current                     one line: the version qemu_guest.py boots
set -euo pipefail

cache="${DMNC_LAB_CACHE:-/var/cache/dmnc-lab}"
kernel_dir="$cache/kernel"

# The 6.1 series is the one checked here (wireguard and virtio-net as modules, boots in seconds under TCG).
# The cloud-amd64 meta package names the current ABI; fall back to the highest versioned package apt knows.
resolve_version() {
    local dep
    dep="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: linux-image-\(6\.1\.0-[0-9]*-cloud-amd64\)$/\1/p' | head -n 1)"
    if [ -z "$dep" ]; then
        dep="$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null \
            | sed -n 's/^linux-image-\(6\.1\.0-[0-9]*-cloud-amd64\)$/\1/p' | sort -V | tail -n 1)"
    fi
    printf '%s\n' "$dep"
}

if [ -s "$kernel_dir/current" ]; then
    current="$(cat "$kernel_dir/current")"
    if [ -f "$kernel_dir/$current/root/boot/vmlinuz-$current" ] \
        && [ -f "$kernel_dir/$current/root/lib/modules/$current/modules.dep" ]; then
        echo "qemu guest kernel: $current (cached in $kernel_dir)"
        exit 0
    fi
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "the qemu guest kernel is not in $kernel_dir; run tests/run as root to fetch it" >&2
    exit 1
fi

version="$(resolve_version)"
if [ -z "$version" ]; then
    apt-get update -q
    version="$(resolve_version)"
fi
if [ -z "$version" ]; then
    echo "no linux-image-6.1.0-*-cloud-amd64 package known to apt (Debian 12 sources needed)" >&2
    exit 1
fi

target="$kernel_dir/$version"
staging="$kernel_dir/.staging-$$"
trap 'rm -rf "$staging"' EXIT
rm -rf "$staging"
mkdir -p "$staging/download"
# apt-get download writes into the current directory and runs as the _apt user when it can: let it write there.
chmod 0777 "$staging/download"
(cd "$staging/download" && apt-get download -q "linux-image-$version")
deb="$(find "$staging/download" -maxdepth 1 -name "linux-image-${version}_*.deb" | head -n 1)"
if [ -z "$deb" ]; then
    echo "apt-get download linux-image-$version produced no .deb" >&2
    exit 1
fi
dpkg-deb -x "$deb" "$staging/root"
depmod -b "$staging/root" "$version"
rm -rf "$target" "$staging/download"
mv "$staging" "$target"
printf '%s\n' "$version" > "$kernel_dir/current.tmp"
mv "$kernel_dir/current.tmp" "$kernel_dir/current"
echo "qemu guest kernel: $version (fetched into $kernel_dir)"
