#!/bin/sh
# One-time boot of the dmnc qemu lab guest (inittab sysinit): mounts, kernel modules, network.
# Settings come from the kernel command line, written by tests/lab/qemu_guest.py:
#   dmnc.addr=CIDR[,CIDR...]  addresses of eth0 (IPv4 and/or IPv6)
#   dmnc.gw=IP[,IP...]        default gateways (one per address family at most)
#   dmnc.hostname=NAME
#   dmnc.modules=M[,M...]     modules to load at boot (the rest is loaded on demand by the kernel via modprobe)
# Every step logs to the console (ttyS0) so a failed boot can be diagnosed from the console log.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp

addresses=""
gateways=""
modules=""
for argument in $(cat /proc/cmdline); do
    case "$argument" in
        dmnc.addr=*) addresses="${argument#dmnc.addr=}" ;;
        dmnc.gw=*) gateways="${argument#dmnc.gw=}" ;;
        dmnc.hostname=*) hostname "${argument#dmnc.hostname=}" ;;
        dmnc.modules=*) modules="${argument#dmnc.modules=}" ;;
    esac
done

for module in $(echo "$modules" | tr ',' ' '); do
    modprobe "$module" || echo "dmnc-boot: modprobe $module failed"
done

ip link set lo up
tries=0
while ! ip link show eth0 >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then
        echo "dmnc-boot: no eth0 after 10 s"
        break
    fi
    sleep 0.1
done
for address in $(echo "$addresses" | tr ',' ' '); do
    case "$address" in
        # IPv6 duplicate address detection would hold the address back for a second or more.
        *:*) ip addr add "$address" dev eth0 nodad || echo "dmnc-boot: address $address failed" ;;
        *) ip addr add "$address" dev eth0 || echo "dmnc-boot: address $address failed" ;;
    esac
done
ip link set eth0 up
for gateway in $(echo "$gateways" | tr ',' ' '); do
    ip route add default via "$gateway" || echo "dmnc-boot: gateway $gateway failed"
done
echo "dmnc-boot: done"
