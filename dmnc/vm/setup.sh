# dmnc VM-side setup (POSIX sh). Runs inside the Docker VM, in a container with --net=host and NET_ADMIN,
# and configures the VM end of dmnc's WireGuard tunnel: the `chip0` interface and the iptables rules Docker needs.
#
# dmnc passes this text as `sh -c SCRIPT dmnc-setup MODE --nonce HEX OPTIONS...`: every value arrives as its own argv
# item and is never interpolated into shell code. Only public values come in; the VM private key is generated here and
# never printed (it lives in the kernel, or for the userspace fallback in a 0600 file inside the container).
#
# Modes:
#   setup      kernel WireGuard: (re)create chip0 idempotently, configure it and the rules, print the result, exit.
#              When the VM kernel has no WireGuard, print a `mode=kernel-missing` result and exit 0: dmnc then
#              starts the userspace fallback container.
#   userspace  the fallback container's command: run wireguard-go for chip0 in the foreground, configure it and
#              the rules, print the result, then wait for wireguard-go.
#   teardown   remove chip0 and every rule setup added (from both iptables backends), print the result, exit.
#   check      test whether the VM kernel can create a WireGuard link (a temporary one, deleted at once; chip0 and
#              the rules are not touched), print `mode=kernel-ok` or `mode=kernel-missing`, exit; `mode=foreign`
#              first when chip0 exists and is not dmnc's. Takes only --nonce.
#
# Every mode requires:
#   --nonce HEX                  dmnc's nonce for this run, 32 lowercase hex digits, echoed in the result line so
#                                dmnc accepts only the answer of the run it started
# Options (setup/userspace; teardown needs only the addresses, interface and iptables choice):
#   --host-public-key KEY        the host peer's WireGuard public key (base64)
#   --port PORT                  the host peer's UDP port
#   --endpoint ADDR              explicit host address or name (skips the candidates)
#   --endpoint-candidate NAME    repeatable; the first that resolves inside the VM wins. Default:
#                                host.docker.internal host.lima.internal host.containers.internal
#   --host-address IP --vm-address IP        IPv4 tunnel addresses (default 10.33.33.1 / 10.33.33.2)
#   --host-address6 IP --vm-address6 IP      IPv6 tunnel addresses (optional, both or neither)
#   --mtu N                      default 1420
#   --interface NAME             default chip0
#   --iptables auto|legacy|nft   default auto: the backend that holds Docker's chains
#   --allow-inbound PORT/PROTO   repeatable, PROTO tcp or udp: a host port containers may open connections to
#                                through the tunnel. Towards the host only replies of its own flows pass otherwise.
#   --shim LINK,KIND,PARENT,ROUTE,reserved|probe,ADDR[,ADDR...]
#                                KIND macvlan, ipvlan (L2), ipvlan-l3 or ipvlan-l3s (those two reserved only);
#                                repeatable: a macvlan/ipvlan shim (see "Shims" below); every setup run deletes every
#                                dmncm* link and creates exactly these. Teardown deletes them all.
#   --direct-host ADDR           repeatable: one of the host's own addresses (not its tunnel address). Where the VM
#                                shares a link with it (a connected route), that link gets the tunnel's rules and is
#                                reported as a direct path (see "Direct path" below). Teardown removes those rules.
#   --state-dir DIR              userspace mode only: where the fallback keeps its private key (default
#                                /var/lib/dmnc-setup, inside the container, so a restart keeps the same key)
#
# Output, the last line on stdout on success (one line, space-separated key=value fields, no spaces in values):
#   dmnc-setup-result v1 nonce=HEX mode=kernel public-key=KEY endpoint=ADDR:PORT endpoint-name=NAME ipv6=on|off kernel=RELEASE
#   dmnc-setup-result v1 nonce=HEX mode=userspace public-key=KEY endpoint=ADDR:PORT endpoint-name=NAME ipv6=on|off kernel=RELEASE
#   (either line may end in ` shims-failed=LINK,...`: the --shim links that could not be made, e.g. parent down,
#   and in ` direct=IF/VMADDR/HOSTADDR,...`: the links to --direct-host addresses that now carry the direct path's
#   rules, each with the VM's interface, its address there and the host's)
#   (setup, userspace and check results may end in ` docker-nftables=marked|unmarked`: Docker runs its nftables
#   firewall backend; see "Docker's nftables firewall backend" below)
#   dmnc-setup-result v1 nonce=HEX mode=kernel-missing kernel=RELEASE
#   dmnc-setup-result v1 nonce=HEX mode=removed kernel=RELEASE
#   dmnc-setup-result v1 nonce=HEX mode=kernel-ok kernel=RELEASE
#   dmnc-setup-result v1 nonce=HEX mode=foreign interface=NAME kernel=RELEASE
# mode=foreign (setup, userspace, teardown, check): NAME exists and is not dmnc's (interface_owner below); nothing was
# changed, neither the interface nor any rule.
# IPv6 endpoints are written [ADDR]:PORT; ipv6=off means an IPv4-only tunnel (no IPv6 addresses were asked for, or
# the VM has IPv6 disabled). Every failure prints one line `dmnc-setup: error: ...` on stderr and
# exits 1 (2 for bad arguments).

# Completed with this run's nonce once the arguments are checked.
RESULT_PREFIX='dmnc-setup-result v1'
DEFAULT_CANDIDATES='host.docker.internal host.lima.internal host.containers.internal'
# Keeps NAT mappings and the host's knowledge of our endpoint alive (wg(8) suggests 25 s behind NAT).
PERSISTENT_KEEPALIVE=25
# The filter chain of what the VM may send towards the host through the tunnel (to_host_rules).
TO_HOST_CHAIN='DMNC-TO-HOST'
# Shim links are named with this prefix (dmnc/vm/shims.py SHIM_LINK_PREFIX); teardown deletes every such link.
SHIM_PREFIX='dmncm'
# The filter chain of what may come from a shim (from_shim_rules).
FROM_SHIM_CHAIN='DMNC-FROM-SHIM'
# Duplicate-address probes: RFC 5227 section 1.1 sends PROBE_NUM=3 probes over about a second and a half; two
# probes a second apart is the common `arping -D` use on a link we just created.
ARP_PROBES=2
ARP_PROBE_WAIT_S=2
# 40 names of 14 characters fit the result line beside its other fields (shims_result_field).
MAX_REPORTED_SHIMS=40
# The ifalias (ip-link(8) `alias`, IFLA_IFALIAS) dmnc puts on its VM interface. The host key is new at every
# start, so nothing else tells dmnc's chip0 from another tool's of the same name (docker-mac-net-connect's).
OWNER_ALIAS='dmnc'
# Bounds every delete loop in teardown: a rule that survives this many deletes means iptables is misbehaving.
MAX_RULE_COPIES=100
# Docker's nftables firewall backend (Docker Engine 29, `firewall-backend: nftables`) keeps its rules in the tables
# `ip docker-bridges` and `ip6 docker-bridges`, and accepts packets carrying the daemon's `bridge-accept-fwmark` with
# a rule commented "ALLOW FW MARK" (Docker docs, "Docker with nftables"; moby's nftabler). dmnc's own table:
DOCKER_NFT_TABLE='docker-bridges'
DOCKER_ACCEPT_MARK_COMMENT='ALLOW FW MARK'
NFT_TABLE='dmnc'

die() {
    printf 'dmnc-setup: error: %s\n' "$(one_line "$*")" >&2
    # A wireguard-go this script started must not outlive it (outside a container nothing else would stop it).
    if [ -n "${wg_pid:-}" ]; then
        kill "$wg_pid" 2>/dev/null
    fi
    exit 1
}

usage_error() {
    printf 'dmnc-setup: error: %s\n' "$(one_line "$*")" >&2
    exit 2
}

note() {
    printf 'dmnc-setup: %s\n' "$(one_line "$*")" >&2
}

# Collapses any whitespace (newlines included) to single spaces, so every message stays one line.
one_line() (
    set -f # the output is split into words below, never globbed (this runs in $(...): a subshell)
    IFS=' 	
'
    # shellcheck disable=SC2086 # word splitting is the point here
    set -- $1
    printf '%s' "$*"
)

# must WHAT CMD [ARGS...]: runs CMD, and on failure dies naming WHAT and the command's own error output.
must() {
    must_what=$1
    shift
    must_err=$("$@" 2>&1 >/dev/null) && return 0
    must_status=$?
    die "$must_what failed (exit $must_status): ${must_err:-no error output}"
}

require_tool() {
    command -v "$1" >/dev/null 2>&1 || die "the \`$1\` command is missing from the setup image"
}

# ---------------------------------------------------------------------------------------------------------------
# Arguments

MODE=${1:-}
[ $# -gt 0 ] && shift
case $MODE in
    setup | userspace | teardown | check) ;;
    '') usage_error "missing mode: setup, userspace, teardown or check" ;;
    *) usage_error "unknown mode '$MODE': expected setup, userspace, teardown or check" ;;
esac

NONCE=''
HOST_PUBLIC_KEY=''
PORT=''
ENDPOINT=''
CANDIDATES=''
HOST_ADDRESS='10.33.33.1'
VM_ADDRESS='10.33.33.2'
HOST_ADDRESS6=''
VM_ADDRESS6=''
MTU='1420'
IFACE='chip0'
IPTABLES_CHOICE='auto'
STATE_DIR='/var/lib/dmnc-setup'
ALLOW_INBOUND=''
SHIMS=''
DIRECT_HOSTS=''

while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage_error "option $1 needs a value"
    case $1 in
        --nonce) NONCE=$2 ;;
        --host-public-key) HOST_PUBLIC_KEY=$2 ;;
        --port) PORT=$2 ;;
        --endpoint) ENDPOINT=$2 ;;
        --endpoint-candidate) CANDIDATES="$CANDIDATES $2" ;;
        --host-address) HOST_ADDRESS=$2 ;;
        --vm-address) VM_ADDRESS=$2 ;;
        --host-address6) HOST_ADDRESS6=$2 ;;
        --vm-address6) VM_ADDRESS6=$2 ;;
        --mtu) MTU=$2 ;;
        --interface) IFACE=$2 ;;
        --iptables) IPTABLES_CHOICE=$2 ;;
        --state-dir) STATE_DIR=$2 ;;
        --allow-inbound) ALLOW_INBOUND="$ALLOW_INBOUND $2" ;;
        --shim) SHIMS="$SHIMS $2" ;;
        --direct-host) DIRECT_HOSTS="$DIRECT_HOSTS $2" ;;
        *) usage_error "unknown option '$1'" ;;
    esac
    shift 2
done

is_decimal() {
    case $1 in
        '' | *[!0-9]*) return 1 ;;
    esac
    # Leading zeros and absurd lengths are rejected before arithmetic sees them.
    [ "${#1}" -le 5 ] && [ "$1" = "${1#0}" ]
}

# in_range VALUE MIN MAX: VALUE is a plain decimal number within [MIN, MAX].
in_range() {
    is_decimal "$1" || return 1
    [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]
}

is_ip_literal() {
    case $1 in
        *:*)
            case $1 in
                *[!0-9A-Fa-f.:]*) return 1 ;;
            esac
            return 0
            ;;
        *.*.*.*) is_ipv4_literal "$1" ;;
        *) return 1 ;;
    esac
}

# is_ipv4_literal TEXT: four decimal octets 0-255 without leading zeros, the form Python's ipaddress writes. Anything
# else (010.1.1.1, which inet_aton(3) reads as octal, or 1.2.3.999) would be read differently by ip, iptables and nft,
# or make `nft -f` fail halfway through a setup.
is_ipv4_literal() {
    case $1 in
        *[!0-9.]* | .* | *. | *..*) return 1 ;;
    esac
    iv_ifs=$IFS
    IFS=.
    set -f
    # shellcheck disable=SC2086 # splitting on dots is the point
    set -- $1
    set +f
    IFS=$iv_ifs
    [ $# -eq 4 ] || return 1
    for iv_octet in "$@"; do
        case $iv_octet in
            0) ;;
            0* | ????*) return 1 ;;
        esac
        [ "$iv_octet" -le 255 ] || return 1
    done
}

# 16 random bytes from dmnc (Python's secrets.token_hex), lowercase hex: nothing else may reach the result line.
case $NONCE in
    '' | *[!0-9a-f]*) usage_error "invalid or missing --nonce: expected 32 lowercase hex digits" ;;
esac
[ "${#NONCE}" -eq 32 ] || usage_error "invalid --nonce: expected 32 lowercase hex digits"
RESULT_PREFIX="$RESULT_PREFIX nonce=$NONCE"

# Every --allow-inbound value is PORT/tcp or PORT/udp, PORT 1-65535: only such words reach iptables.
check_allow_inbound() {
    for inbound in $ALLOW_INBOUND; do
        case $inbound in
            */tcp | */udp) in_range "${inbound%/*}" 1 65535 && continue ;;
        esac
        usage_error "invalid --allow-inbound '$inbound': expected PORT/tcp or PORT/udp, PORT 1-65535"
    done
}

# ip_words_ok TEXT: only hex digits, dots, colons and slashes, not starting with a dot or slash, so an address or
# route from --shim is never an option (an IPv6 one may start with `::`).
ip_words_ok() {
    case $1 in
        '' | *[!0-9A-Fa-f.:/]* | [./]*) return 1 ;;
    esac
    return 0
}

check_shims() {
    for shim in $SHIMS; do
        split_shim "$shim"
        case $sh_link in
            "$SHIM_PREFIX"*) ;;
            *) usage_error "invalid --shim '$shim': the link name must start with $SHIM_PREFIX" ;;
        esac
        for sh_name in "$sh_link" "$sh_parent"; do
            case $sh_name in
                '' | *[!A-Za-z0-9_.-]* | [.-]*) usage_error "invalid --shim '$shim': bad interface name '$sh_name'" ;;
            esac
            [ "${#sh_name}" -le 15 ] || usage_error "invalid --shim '$shim': '$sh_name' is longer than 15 characters"
        done
        case $sh_kind/$sh_how in
            macvlan/reserved | macvlan/probe | ipvlan/reserved | ipvlan/probe) ;;
            ipvlan-l3/reserved | ipvlan-l3s/reserved) ;;
            *)
                usage_error "invalid --shim '$shim': expected macvlan|ipvlan and reserved|probe," \
                    "or ipvlan-l3|ipvlan-l3s and reserved"
                ;;
        esac
        ip_words_ok "$sh_route" || usage_error "invalid --shim '$shim': bad route '$sh_route'"
        [ -n "$sh_addresses" ] || usage_error "invalid --shim '$shim': no address"
        for sh_address in $sh_addresses; do
            ip_words_ok "$sh_address" || usage_error "invalid --shim '$shim': bad address '$sh_address'"
        done
    done
}

# Every --direct-host is an IP literal (never an option), at most MAX_DIRECT_HOSTS of them (dmnc/vm/params.py).
MAX_DIRECT_HOSTS=16
check_direct_hosts() {
    cd_count=0
    for cd_host in $DIRECT_HOSTS; do
        is_ip_literal "$cd_host" || usage_error "invalid --direct-host '$cd_host'"
        cd_count=$((cd_count + 1))
    done
    [ "$cd_count" -le "$MAX_DIRECT_HOSTS" ] || usage_error "more than $MAX_DIRECT_HOSTS --direct-host addresses"
}

# split_shim VALUE: LINK,KIND,PARENT,ROUTE,HOW,ADDR... into sh_link sh_kind sh_parent sh_route sh_how and
# sh_addresses (space-separated).
split_shim() {
    sp_ifs=$IFS
    IFS=,
    set -f
    # shellcheck disable=SC2086 # splitting on commas is the point
    set -- $1
    set +f
    IFS=$sp_ifs
    sh_link=${1:-} sh_kind=${2:-} sh_parent=${3:-} sh_route=${4:-} sh_how=${5:-}
    sh_addresses=''
    [ $# -gt 5 ] && shift 5 && sh_addresses=$*
    return 0
}

case $IFACE in
    '' | *[!A-Za-z0-9_.-]* | [.-]*) usage_error "invalid interface name '$IFACE'" ;;
esac
# IFNAMSIZ is 16 including the terminating NUL (linux/if.h).
[ "${#IFACE}" -le 15 ] || usage_error "interface name '$IFACE' is longer than 15 characters"
case $IPTABLES_CHOICE in
    auto | legacy | nft) ;;
    *) usage_error "invalid --iptables '$IPTABLES_CHOICE': expected auto, legacy or nft" ;;
esac
is_ip_literal "$HOST_ADDRESS" || usage_error "invalid --host-address '$HOST_ADDRESS'"
if [ -n "$HOST_ADDRESS6" ]; then
    is_ip_literal "$HOST_ADDRESS6" || usage_error "invalid --host-address6 '$HOST_ADDRESS6'"
fi

if [ "$MODE" = setup ] || [ "$MODE" = userspace ]; then
    # A WireGuard key is 32 bytes: 44 base64 characters ending in one '=' (RFC 4648 section 4).
    case $HOST_PUBLIC_KEY in
        *[!A-Za-z0-9+/=]* | *=?* | '') usage_error "invalid --host-public-key: expected 44 base64 characters" ;;
    esac
    [ "${#HOST_PUBLIC_KEY}" -eq 44 ] || usage_error "invalid --host-public-key: expected 44 base64 characters"
    in_range "$PORT" 1 65535 || usage_error "invalid --port '$PORT': expected 1-65535"
    # 576 is the IPv4 minimum datagram size every host must accept (RFC 791); IPv6 needs 1280 (RFC 8200 section 5).
    in_range "$MTU" 576 65535 || usage_error "invalid --mtu '$MTU': expected 576-65535"
    if [ -n "$HOST_ADDRESS6$VM_ADDRESS6" ] && [ "$MTU" -lt 1280 ]; then
        usage_error "--mtu $MTU is below the IPv6 minimum of 1280"
    fi
    is_ip_literal "$VM_ADDRESS" || usage_error "invalid --vm-address '$VM_ADDRESS'"
    if [ -n "$HOST_ADDRESS6" ] || [ -n "$VM_ADDRESS6" ]; then
        is_ip_literal "$VM_ADDRESS6" || usage_error "invalid --vm-address6 '$VM_ADDRESS6'"
        [ -n "$HOST_ADDRESS6" ] || usage_error "--vm-address6 given without --host-address6"
    fi
    case $ENDPOINT in
        -*) usage_error "invalid --endpoint '$ENDPOINT'" ;;
    esac
    [ -n "$CANDIDATES" ] || CANDIDATES=$DEFAULT_CANDIDATES
    check_allow_inbound
    check_shims
    check_direct_hosts
fi

KERNEL_RELEASE=$(uname -r 2>/dev/null) || KERNEL_RELEASE=''
case $KERNEL_RELEASE in
    '' | *[!A-Za-z0-9._+~-]*) KERNEL_RELEASE=unknown ;;
esac

# ---------------------------------------------------------------------------------------------------------------
# Endpoint

# Prints the first address NAME resolves to inside the VM, IPv4 preferred (the host peer listens on IPv4 first).
resolve() {
    command -v getent >/dev/null 2>&1 || return 1
    resolve_out=$(getent ahostsv4 "$1" 2>/dev/null) || resolve_out=$(getent hosts "$1" 2>/dev/null) || return 1
    set -f # the output is split into words below, never globbed (this runs in $(...): a subshell)
    # shellcheck disable=SC2086 # splitting getent's columns
    set -- $resolve_out
    set +f
    is_ip_literal "${1:-}" || return 1
    printf '%s' "$1"
}

choose_endpoint() {
    if [ -n "$ENDPOINT" ]; then
        ENDPOINT_NAME=$ENDPOINT
        if is_ip_literal "$ENDPOINT"; then
            ENDPOINT_ADDRESS=$ENDPOINT
        else
            ENDPOINT_ADDRESS=$(resolve "$ENDPOINT") || die "the endpoint '$ENDPOINT' does not resolve inside the VM"
        fi
    else
        for candidate in $CANDIDATES; do
            if ENDPOINT_ADDRESS=$(resolve "$candidate"); then
                ENDPOINT_NAME=$candidate
                break
            fi
            ENDPOINT_ADDRESS=''
        done
        [ -n "$ENDPOINT_ADDRESS" ] ||
            die "none of the endpoint candidates resolves inside the VM ($(one_line "$CANDIDATES")): pass dmnc --endpoint with the host's address as the VM sees it"
    fi
    case $ENDPOINT_ADDRESS in
        *:*) WG_ENDPOINT="[$ENDPOINT_ADDRESS]:$PORT" ;;
        *) WG_ENDPOINT="$ENDPOINT_ADDRESS:$PORT" ;;
    esac
}

# ---------------------------------------------------------------------------------------------------------------
# iptables

# The backend Docker uses holds its DOCKER chain; rules in the other backend would never see Docker's traffic.
choose_iptables() {
    case $IPTABLES_CHOICE in
        legacy | nft)
            IPT="iptables-$IPTABLES_CHOICE"
            IPT6="ip6tables-$IPTABLES_CHOICE"
            ;;
        auto)
            IPT=''
            for backend in nft legacy; do
                if command -v "iptables-$backend" >/dev/null 2>&1 &&
                    "iptables-$backend" -t filter -S DOCKER >/dev/null 2>&1; then
                    IPT="iptables-$backend"
                    IPT6="ip6tables-$backend"
                    break
                fi
            done
            if [ -z "$IPT" ]; then
                # No Docker chains anywhere (yet): the image's default `iptables` is the distribution's choice.
                IPT=iptables
                IPT6=ip6tables
            fi
            ;;
    esac
    require_tool "$IPT"
    if [ -n "$HOST_ADDRESS6" ]; then
        require_tool "$IPT6"
    fi
}

# ensure_rule TOOL TABLE CHAIN RULE...: inserts RULE at the top of CHAIN unless an identical rule exists.
ensure_rule() {
    er_tool=$1 er_table=$2 er_chain=$3
    shift 3
    "$er_tool" -w -t "$er_table" -C "$er_chain" "$@" >/dev/null 2>&1 && return 0
    must "$er_tool -t $er_table -I $er_chain $*" "$er_tool" -w -t "$er_table" -I "$er_chain" 1 "$@"
}

# remove_rule TOOL TABLE CHAIN RULE...: deletes every copy of RULE from CHAIN.
remove_rule() {
    rr_tool=$1 rr_table=$2 rr_chain=$3
    shift 3
    rr_count=0
    while "$rr_tool" -w -t "$rr_table" -C "$rr_chain" "$@" >/dev/null 2>&1; do
        must "$rr_tool -t $rr_table -D $rr_chain $*" "$rr_tool" -w -t "$rr_table" -D "$rr_chain" "$@"
        rr_count=$((rr_count + 1))
        [ "$rr_count" -lt "$MAX_RULE_COPIES" ] || die "$rr_tool keeps reporting the rule '$*' after $rr_count deletes"
    done
}

# apply_rules ACTION TOOL HOST_ADDRESS: ACTION is ensure_rule or remove_rule; the rule list lives only here so
# setup and teardown cannot drift apart.
apply_rules() {
    ar_action=$1 ar_tool=$2 ar_host=$3
    if [ "$ar_action" = ensure_rule ] && ! "$ar_tool" -w -t filter -S DOCKER-USER >/dev/null 2>&1; then
        # Docker creates DOCKER-USER and jumps to it from FORWARD; creating it first is harmless and lets
        # Docker (which keeps an existing DOCKER-USER) pick our rules up when it starts.
        must "$ar_tool -t filter -N DOCKER-USER" "$ar_tool" -w -t filter -N DOCKER-USER
    fi
    # Docker >= 28 drops packets to container addresses arriving on any other interface in raw PREROUTING.
    "$ar_action" "$ar_tool" raw PREROUTING -i "$IFACE" -j ACCEPT
    # Docker Desktop >= 4.39 (and Docker's FORWARD policy DROP) drop forwarded traffic unless DOCKER-USER accepts it.
    "$ar_action" "$ar_tool" filter DOCKER-USER -i "$IFACE" -j ACCEPT
    to_host_rules "$ar_action" "$ar_tool"
    from_shim_rules "$ar_action" "$ar_tool"
    # Containers on --internal networks have no route back to the host's tunnel address: answer via the bridge.
    "$ar_action" "$ar_tool" nat POSTROUTING -s "$ar_host" -j MASQUERADE
    if [ "$ar_action" = remove_rule ]; then
        # Only succeeds when the chain is empty and nothing jumps to it, i.e. when we created it and Docker never
        # took it over; Docker's own chain stays.
        "$ar_tool" -w -t filter -X DOCKER-USER >/dev/null 2>&1 || true
    fi
}

# to_host_rules ACTION TOOL: towards the host only replies of flows the host started pass (conntrack
# ESTABLISHED,RELATED, iptables-extensions(8)), plus new connections to the --allow-inbound ports; the rest is
# dropped, both forwarded from containers (DOCKER-USER, which FORWARD consults before Docker's isolation chains) and
# sent by the VM's own namespace (OUTPUT: host-network containers).
to_host_rules() {
    th_action=$1 th_tool=$2
    # Earlier versions accepted everything towards the tunnel: that rule goes on every run.
    remove_rule "$th_tool" filter DOCKER-USER -o "$IFACE" -j ACCEPT
    if [ "$th_action" = ensure_rule ]; then
        fill_to_host_chain "$th_tool"
    fi
    "$th_action" "$th_tool" filter DOCKER-USER -o "$IFACE" -j "$TO_HOST_CHAIN"
    "$th_action" "$th_tool" filter OUTPUT -o "$IFACE" -j "$TO_HOST_CHAIN"
    if [ "$th_action" = remove_rule ] && "$th_tool" -w -t filter -S "$TO_HOST_CHAIN" >/dev/null 2>&1; then
        must "$th_tool -t filter -F $TO_HOST_CHAIN" "$th_tool" -w -t filter -F "$TO_HOST_CHAIN"
        must "$th_tool -t filter -X $TO_HOST_CHAIN" "$th_tool" -w -t filter -X "$TO_HOST_CHAIN"
    fi
}

# fill_to_host_chain TOOL: (re)writes the chain without a moment in which it lets more through than either the old
# or the new rules: the new rules and a final DROP go in first, then the old rules (and their DROP) come out.
fill_to_host_chain() {
    ft_tool=$1
    if ! "$ft_tool" -w -t filter -S "$TO_HOST_CHAIN" >/dev/null 2>&1; then
        must "$ft_tool -t filter -N $TO_HOST_CHAIN" "$ft_tool" -w -t filter -N "$TO_HOST_CHAIN"
    fi
    ft_old=$(chain_rule_count "$ft_tool")
    ft_position=1
    must "$ft_tool -t filter -I $TO_HOST_CHAIN (replies)" "$ft_tool" -w -t filter -I "$TO_HOST_CHAIN" 1 \
        -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    for inbound in $ALLOW_INBOUND; do
        ft_position=$((ft_position + 1))
        must "$ft_tool -t filter -I $TO_HOST_CHAIN (port $inbound)" "$ft_tool" -w -t filter -I "$TO_HOST_CHAIN" \
            "$ft_position" -p "${inbound#*/}" --dport "${inbound%/*}" -m conntrack --ctstate NEW -j ACCEPT
    done
    ft_position=$((ft_position + 1))
    must "$ft_tool -t filter -I $TO_HOST_CHAIN (drop)" "$ft_tool" -w -t filter -I "$TO_HOST_CHAIN" "$ft_position" -j DROP
    while [ "$ft_old" -gt 0 ]; do
        must "$ft_tool -t filter -D $TO_HOST_CHAIN (old rule)" "$ft_tool" -w -t filter -D "$TO_HOST_CHAIN" \
            $((ft_position + 1))
        ft_old=$((ft_old - 1))
    done
}

chain_rule_count() {
    cr_count=0
    cr_rules=$("$1" -w -t filter -S "$TO_HOST_CHAIN") || die "cannot list $TO_HOST_CHAIN with $1"
    for cr_word in $cr_rules; do
        [ "$cr_word" = "-A" ] && cr_count=$((cr_count + 1))
    done
    echo "$cr_count"
}

# ---------------------------------------------------------------------------------------------------------------
# Ownership of the interface

# interface_owner: prints who owns the existing $IFACE: `dmnc` (it carries OWNER_ALIAS), `legacy` (dmnc 0.1's, from
# before the mark: see is_legacy_interface) or `foreign` (anything else: another tool's, never touched).
interface_owner() {
    set -f # the output is split into words below, never globbed (this runs in $(...): a subshell)
    io_details=$(ip link show dev "$IFACE" 2>/dev/null) || io_details=''
    # `ip link show` prints the alias on a line of its own: "    alias NAME" (iproute2 ip/ipaddress.c).
    io_marked=no
    io_saved_ifs=$IFS
    IFS='
'
    for io_line in $io_details; do
        IFS=$io_saved_ifs
        # shellcheck disable=SC2086 # splitting the line into words is the point
        set -- $io_line
        if [ "$#" -eq 2 ] && [ "$1" = alias ] && [ "$2" = "$OWNER_ALIAS" ]; then
            io_marked=yes
        fi
    done
    IFS=$io_saved_ifs
    if [ "$io_marked" = yes ]; then
        echo dmnc
    elif is_legacy_interface; then
        echo legacy
    else
        echo foreign
    fi
}

# is_legacy_interface: the upgrade rule for a chip0 dmnc 0.1 made before it marked its interface. All of these hold:
# it is a kernel WireGuard link; it has exactly one peer, whose allowed IPs are exactly dmnc's host tunnel addresses
# (HOST_ADDRESS/32, plus HOST_ADDRESS6/128 when given) with dmnc's PERSISTENT_KEEPALIVE; and the rule dmnc 0.1 added
# for traffic towards the host (filter DOCKER-USER -o IFACE -j ACCEPT) or the DMNC-TO-HOST chain is present in the
# chosen iptables backend. docker-mac-net-connect's chip0 has the same peer shape but none of dmnc's rules.
is_legacy_interface() {
    case $(ip -d link show dev "$IFACE" 2>/dev/null) in
        *wireguard*) ;;
        *) return 1 ;;
    esac
    command -v wg >/dev/null 2>&1 || return 1
    il_dump=$(wg show "$IFACE" dump 2>/dev/null) || return 1
    # wg(8) `dump`: the interface line, then one line per peer, tab-separated: public-key preshared-key endpoint
    # allowed-ips latest-handshake transfer-rx transfer-tx persistent-keepalive.
    il_peers=$(printf '%s\n' "$il_dump" | sed 1d)
    [ -n "$il_peers" ] || return 1
    [ "$(printf '%s\n' "$il_peers" | wc -l)" -eq 1 ] || return 1
    il_allowed=$(printf '%s\n' "$il_peers" | cut -f 4)
    il_keepalive=$(printf '%s\n' "$il_peers" | cut -f 8)
    [ "$il_keepalive" = "$PERSISTENT_KEEPALIVE" ] || return 1
    case $il_allowed in
        "$HOST_ADDRESS/32") ;;
        "$HOST_ADDRESS/32,$HOST_ADDRESS6/128" | "$HOST_ADDRESS6/128,$HOST_ADDRESS/32")
            [ -n "$HOST_ADDRESS6" ] || return 1
            ;;
        *) return 1 ;;
    esac
    for il_tool in "${IPT:-iptables}" iptables-nft iptables-legacy; do
        command -v "$il_tool" >/dev/null 2>&1 || continue
        "$il_tool" -w -t filter -C DOCKER-USER -o "$IFACE" -j ACCEPT >/dev/null 2>&1 && return 0
        "$il_tool" -w -t filter -S "$TO_HOST_CHAIN" >/dev/null 2>&1 && return 0
    done
    return 1
}

# refuse_foreign_interface: when $IFACE exists and is not dmnc's, print the `foreign` result and exit, having
# changed nothing. A legacy interface is marked and so becomes dmnc's.
refuse_foreign_interface() {
    [ -n "$(link_details)" ] || return 0
    case $(interface_owner) in
        dmnc) ;;
        legacy)
            note "$IFACE is dmnc 0.1's (from before the ownership mark): marking it as dmnc's"
            mark_interface
            ;;
        *) report_foreign_interface ;;
    esac
}

# report_foreign_interface: the `foreign` result for $IFACE, and exit having changed nothing.
report_foreign_interface() {
    note "$IFACE exists and is not dmnc's (another tool's, e.g. docker-mac-net-connect): left untouched"
    printf '%s mode=foreign interface=%s kernel=%s\n' "$RESULT_PREFIX" "$IFACE" "$KERNEL_RELEASE"
    exit 0
}

# mark_interface: puts dmnc's mark on $IFACE; an interface dmnc created but could not mark is deleted again, or
# the next run would take it for another tool's.
mark_interface() {
    mi_err=$(ip link set dev "$IFACE" alias "$OWNER_ALIAS" 2>&1) && return 0
    ip link del dev "$IFACE" >/dev/null 2>&1
    die "marking $IFACE as dmnc's (ip link set alias) failed: ${mi_err:-no error output}"
}

# ---------------------------------------------------------------------------------------------------------------
# Interface

link_details() {
    ip -d link show dev "$IFACE" 2>/dev/null
}

# The IPv6 half of the tunnel is used when dmnc asked for it and the VM has IPv6 on the interface; a VM booted with
# IPv6 disabled gets an IPv4-only tunnel (reported as ipv6=off) rather than no tunnel at all.
decide_ipv6() {
    TUNNEL6=off
    [ -n "$HOST_ADDRESS6" ] || return 0
    ipv6_disabled=1
    if [ -r "/proc/sys/net/ipv6/conf/$IFACE/disable_ipv6" ]; then
        read -r ipv6_disabled <"/proc/sys/net/ipv6/conf/$IFACE/disable_ipv6"
    fi
    if [ "$ipv6_disabled" = 0 ]; then
        TUNNEL6=on
    else
        note "IPv6 is disabled in the VM: the tunnel carries IPv4 only"
    fi
}

configure_interface() {
    decide_ipv6
    # Peers other than the current host key are stale (the host restarted with a new key): remove them.
    peers=$(wg show "$IFACE" peers 2>/dev/null) || die "cannot read the peers of $IFACE"
    for peer in $peers; do
        if [ "$peer" != "$HOST_PUBLIC_KEY" ]; then
            must "removing stale peer from $IFACE" wg set "$IFACE" peer "$peer" remove
        fi
    done
    allowed_ips="$HOST_ADDRESS/32"
    if [ "$TUNNEL6" = on ]; then
        allowed_ips="$allowed_ips,$HOST_ADDRESS6/128"
    fi
    must "configuring the host peer on $IFACE" wg set "$IFACE" peer "$HOST_PUBLIC_KEY" endpoint "$WG_ENDPOINT" \
        persistent-keepalive "$PERSISTENT_KEEPALIVE" allowed-ips "$allowed_ips"
    must "flushing the addresses of $IFACE" ip addr flush dev "$IFACE"
    must "adding $VM_ADDRESS peer $HOST_ADDRESS to $IFACE" \
        ip addr add "$VM_ADDRESS" peer "$HOST_ADDRESS" dev "$IFACE"
    if [ "$TUNNEL6" = on ]; then
        # nodad: the point-to-point pair is ours alone; duplicate address detection would only delay use.
        must "adding $VM_ADDRESS6 peer $HOST_ADDRESS6 to $IFACE" \
            ip -6 addr add "$VM_ADDRESS6" peer "$HOST_ADDRESS6" dev "$IFACE" nodad
    fi
    must "setting $IFACE mtu $MTU and up" ip link set dev "$IFACE" mtu "$MTU" up
    if [ "$TUNNEL6" = on ]; then
        ensure_peer_route6
    fi
}

# Replies to the host leave through the route to its tunnel address, which the kernel usually does not install for
# an IPv6 `peer` address added while the link is down (Linux net/ipv6/addrconf.c). inet6_addr_add() ->
# addrconf_dad_start() queues the DAD work (addrconf_mod_dad_work()); chip0 is IFF_NOARP and the address nodad, so
# addrconf_dad_begin() completes DAD at once and addrconf_dad_completed() -> __ipv6_ifa_notify(RTM_NEWADDR) calls
# addrconf_prefix_route() for the peer. If that work runs before `ip link set up` (nearly always), the insert fails
# on the down device ("Nexthop device is not up", fib6_nh_init() in net/ipv6/route.c) and the error is dropped. On
# NETDEV_UP, addrconf_notify() -> addrconf_permanent_addr() -> fixup_permanent_addr() restores only the host route
# and the address's own prefix route (fd33:33:33::2/128), and restarts DAD only for addresses still
# INET6_IFADDR_STATE_PREDAD, so no second RTM_NEWADDR adds the peer route. IPv4 has no such gap:
# fib_netdev_event(NETDEV_UP) -> fib_add_ifaddr() (net/ipv4/fib_frontend.c) re-adds every address's peer route.
# So the IPv6 route is installed here, after the link is up, whatever the race did. Metric 256 is the kernel's own
# for address routes (IP6_RT_PRIO_ADDRCONF, include/net/addrconf.h): `replace` takes over a peer route the kernel
# did add, leaving one route however often setup runs. It belongs to chip0 and goes when the link is deleted
# (teardown, or wireguard-go exiting with the fallback container).
ensure_peer_route6() {
    must "routing $HOST_ADDRESS6 to $IFACE" \
        ip -6 route replace "$HOST_ADDRESS6/128" dev "$IFACE" metric 256
}

apply_all_rules() {
    apply_rules ensure_rule "$IPT" "$HOST_ADDRESS"
    if [ "$TUNNEL6" = on ]; then
        apply_rules ensure_rule "$IPT6" "$HOST_ADDRESS6"
    fi
}

print_result() {
    public_key=$(wg show "$IFACE" public-key 2>/dev/null) || die "cannot read the public key of $IFACE"
    printf '%s mode=%s public-key=%s endpoint=%s endpoint-name=%s ipv6=%s kernel=%s%s%s%s\n' "$RESULT_PREFIX" "$1" \
        "$public_key" "$WG_ENDPOINT" "$ENDPOINT_NAME" "$TUNNEL6" "$KERNEL_RELEASE" "$(shims_result_field)" \
        "$(direct_result_field)" "$(docker_nft_result_field)"
}

run_setup() {
    require_tool ip
    require_tool wg
    choose_endpoint
    choose_iptables
    refuse_foreign_interface
    details=$(link_details)
    if [ -n "$details" ]; then
        case $details in
            *wireguard*) ;;
            *) die "$IFACE exists and is not a kernel WireGuard interface (a userspace fallback still running?): run dmnc's teardown first" ;;
        esac
    else
        add_err=$(ip link add dev "$IFACE" type wireguard 2>&1) || {
            case $add_err in
                *'not permitted'*) die "creating $IFACE: $add_err (the setup container needs NET_ADMIN)" ;;
            esac
            note "no kernel WireGuard in this VM ($add_err): the userspace fallback is needed"
            printf '%s mode=kernel-missing kernel=%s\n' "$RESULT_PREFIX" "$KERNEL_RELEASE"
            exit 0
        }
        mark_interface
    fi
    current_key=$(wg show "$IFACE" private-key 2>/dev/null) || die "cannot read the state of $IFACE"
    case $current_key in
        '' | '(none)')
            # The key goes from `wg genkey` straight into the kernel through a pipe: never to disk or stdout.
            # shellcheck disable=SC2016 # $1 belongs to the inner shell
            must "setting the private key of $IFACE" sh -c 'umask 077; wg genkey | wg set "$1" private-key /proc/self/fd/0' \
                set-key "$IFACE"
            ;;
    esac
    configure_interface
    apply_all_rules
    apply_shims
    apply_direct
    apply_nft_table
    print_result kernel
}

run_userspace() {
    require_tool ip
    require_tool wg
    require_tool wireguard-go
    choose_endpoint
    choose_iptables
    refuse_foreign_interface
    if [ -n "$(link_details)" ]; then
        # A TUN left by a previous wireguard-go of this container (or of a crashed one): start afresh.
        must "removing the stale $IFACE" ip link del dev "$IFACE"
    fi
    umask 077
    key_file="$STATE_DIR/private.key"
    if [ ! -s "$key_file" ]; then
        must "creating $STATE_DIR" mkdir -p "$STATE_DIR"
        # shellcheck disable=SC2016 # $1 belongs to the inner shell
        must "generating the VM private key" sh -c 'umask 077; wg genkey > "$1"' gen-key "$key_file"
    fi
    # -f: stay in the foreground so this script can supervise it and the container lives as long as it does.
    WG_PROCESS_FOREGROUND=1 wireguard-go -f "$IFACE" &
    wg_pid=$!
    trap 'kill "$wg_pid" 2>/dev/null; wait "$wg_pid"; exit 0' TERM INT
    tries=0
    until wg show "$IFACE" >/dev/null 2>&1; do
        kill -0 "$wg_pid" 2>/dev/null || die "wireguard-go exited before creating $IFACE (needs NET_ADMIN and /dev/net/tun)"
        tries=$((tries + 1))
        # 100 x 0.1 s: wireguard-go is up in well under a second; ten seconds means it is stuck.
        [ "$tries" -le 100 ] || die "wireguard-go did not create $IFACE within 10 s"
        sleep 0.1
    done
    mark_interface
    must "setting the private key of $IFACE" wg set "$IFACE" private-key "$key_file"
    configure_interface
    apply_all_rules
    apply_shims
    apply_direct
    apply_nft_table
    print_result userspace
    wait "$wg_pid"
    wg_status=$?
    die "wireguard-go exited with status $wg_status"
}

run_teardown() {
    require_tool ip
    # Another tool's interface, and the rules naming it, are its own: a teardown leaves them all in place.
    refuse_foreign_interface
    if [ -n "$(link_details)" ]; then
        must "deleting $IFACE" ip link del dev "$IFACE"
    fi
    remove_shim_links
    remove_nft_table
    if [ "$IPTABLES_CHOICE" = auto ]; then
        backends='nft legacy'
    else
        backends=$IPTABLES_CHOICE
    fi
    for backend in $backends; do
        # First: the direct chain jumps to the to-host chain, which teardown_family deletes.
        teardown_direct "iptables-$backend"
        teardown_direct "ip6tables-$backend"
        teardown_family "iptables-$backend" "$HOST_ADDRESS"
        if [ -n "$HOST_ADDRESS6" ]; then
            teardown_family "ip6tables-$backend" "$HOST_ADDRESS6"
        fi
    done
    printf '%s mode=removed kernel=%s\n' "$RESULT_PREFIX" "$KERNEL_RELEASE"
}

# Touches a backend only when its ruleset mentions our interface or host address: querying an unused legacy
# table would otherwise load its kernel module and create the table as a side effect.
teardown_family() {
    command -v "$1" >/dev/null 2>&1 || return 0
    saved=$("$1-save" 2>/dev/null) || return 0
    case $saved in
        *"-i $IFACE "* | *"-o $IFACE "* | *"-s $2/"* | *"$TO_HOST_CHAIN"* | *"$FROM_SHIM_CHAIN"*) apply_rules remove_rule "$1" "$2" ;;
    esac
}

# ---------------------------------------------------------------------------------------------------------------
# Shims: reaching macvlan and ipvlan (L2) containers (dmnc/vm/shims.py decides which, and their addresses)
#
# The VM cannot talk to its own macvlan children through their parent (Docker docs, "Macvlan network driver"). A
# shim is one more link of the same kind on the same parent (macvlan in bridge mode, ipvlan in the network's own
# mode, ip-link(8)), holding a /32 Docker never hands out, with a route to the containers' range through it. Tunnel
# traffic is forwarded onto it and masqueraded to the shim's address (apply_rules' MASQUERADE), so the containers
# answer it.

# remove_shim_links: deletes every link named $SHIM_PREFIX*, whatever run made it; their addresses and routes go
# with them.
remove_shim_links() {
    rs_links=$(ip -o link show 2>/dev/null) || return 0
    for rs_word in $rs_links; do
        case $rs_word in
            "$SHIM_PREFIX"*:)
                rs_link=${rs_word%:}
                rs_link=${rs_link%%@*}
                must "deleting the shim $rs_link" ip link del dev "$rs_link"
                ;;
        esac
    done
}

# apply_shims: the declared set, from scratch. A shim that cannot be made (parent missing or down, no free
# address, a clashing route) is reported on stderr and in the result's shims-failed field, never fatal.
apply_shims() {
    remove_shim_links
    SHIMS_FAILED=''
    for shim in $SHIMS; do
        split_shim "$shim"
        if ! shim_problem=$(create_shim); then
            note "shim $sh_link on $sh_parent not set up: $shim_problem"
            SHIMS_FAILED="$SHIMS_FAILED,$sh_link"
            ip link del dev "$sh_link" >/dev/null 2>&1 || true
        fi
    done
    SHIMS_FAILED=${SHIMS_FAILED#,}
}

# shims_result_field: ` shims-failed=LINK,...` naming the shims apply_shims could not make, nothing when none
# failed. At most MAX_REPORTED_SHIMS names, so the result line stays within dmnc's bound (MAX_RESULT_LINE,
# dmnc/vm/result.py); the notes on stderr name every one.
shims_result_field() {
    [ -n "${SHIMS_FAILED:-}" ] || return 0
    sr_names='' sr_count=0
    sr_ifs=$IFS
    IFS=,
    for sr_link in $SHIMS_FAILED; do
        [ "$sr_count" -lt "$MAX_REPORTED_SHIMS" ] || break
        sr_names="$sr_names,$sr_link"
        sr_count=$((sr_count + 1))
    done
    IFS=$sr_ifs
    printf ' shims-failed=%s' "${sr_names#,}"
}

# create_shim: makes the shim split_shim described; on failure prints why (one line) and returns 1.
create_shim() {
    case $sh_route in
        *:*)
            # Without the tunnel's IPv6 half nothing would use it, and from_shim_rules guard only the tunnel's families.
            if [ "${TUNNEL6:-off}" != on ]; then
                echo "an IPv6 shim needs the tunnel's IPv6 addresses (the tunnel carries IPv4 only)"
                return 1
            fi
            # Docker turns IPv6 forwarding on with its first IPv6 bridge network, never for macvlan/ipvlan ones; dmnc
            # leaves it alone (with forwarding on, the VM's own interfaces stop accepting router advertisements).
            cs_forwarding=0
            read -r cs_forwarding 2>/dev/null </proc/sys/net/ipv6/conf/all/forwarding
            if [ "$cs_forwarding" != 1 ]; then
                echo "IPv6 forwarding is off in the VM (net.ipv6.conf.all.forwarding=0): nothing could pass the shim"
                return 1
            fi
            ;;
    esac
    cs_state=$(ip -o link show dev "$sh_parent" 2>/dev/null) || {
        echo "parent interface $sh_parent is missing"
        return 1
    }
    # The flags between <...> of `ip -o link show`: IFF_UP shows as the word UP (LOWER_UP is the carrier).
    cs_flags=${cs_state#*<}
    case ",${cs_flags%%>*}," in
        *,UP,*) ;;
        *)
            echo "parent interface $sh_parent is down"
            return 1
            ;;
    esac
    # An ipvlan shim takes the network's own mode: the mode belongs to the parent's whole ipvlan port, and a shim of
    # another mode would switch the containers' links too (ipvlan_set_port_mode in the kernel's ipvlan driver).
    case $sh_kind in
        macvlan) cs_err=$(ip link add "$sh_link" link "$sh_parent" type macvlan mode bridge 2>&1) ;;
        ipvlan) cs_err=$(ip link add "$sh_link" link "$sh_parent" type ipvlan mode l2 2>&1) ;;
        ipvlan-l3) cs_err=$(ip link add "$sh_link" link "$sh_parent" type ipvlan mode l3 2>&1) ;;
        ipvlan-l3s) cs_err=$(ip link add "$sh_link" link "$sh_parent" type ipvlan mode l3s 2>&1) ;;
    esac || {
        echo "ip link add: $cs_err"
        return 1
    }
    cs_err=$(ip link set dev "$sh_link" up 2>&1) || {
        echo "ip link set up: $cs_err"
        return 1
    }
    if [ "$sh_how" = probe ] && ! command -v arping >/dev/null 2>&1; then
        echo "no \`arping\` in the setup image to probe $sh_addresses: reserve an address with --aux-address dmnc=IP"
        return 1
    fi
    cs_address=''
    for cs_candidate in $sh_addresses; do
        if [ "$sh_how" = reserved ] || address_is_free "$cs_candidate"; then
            cs_address=$cs_candidate
            break
        fi
    done
    if [ -z "$cs_address" ]; then
        echo "every candidate address answered an ARP probe ($sh_addresses): reserve one with --aux-address dmnc=IP"
        return 1
    fi
    # A host address: /32, or /128 for an IPv6 reservation, added without duplicate address detection (nodad,
    # ip-address(8)): Docker keeps the reservation out of its allocator, and DAD would hold the address back.
    case $cs_address in
        *:*) cs_err=$(ip -6 addr add "$cs_address/128" dev "$sh_link" nodad 2>&1) ;;
        *) cs_err=$(ip addr add "$cs_address/32" dev "$sh_link" 2>&1) ;;
    esac || {
        echo "ip addr add $cs_address: $cs_err"
        return 1
    }
    cs_err=$(ip route add "$sh_route" dev "$sh_link" src "$cs_address" 2>&1) || {
        echo "ip route add $sh_route: $cs_err"
        return 1
    }
}

# address_is_free ADDRESS: an ARP probe for ADDRESS from the shim (RFC 5227 section 2.1.1: sender address 0.0.0.0,
# so nobody's cache learns it) gets no answer. `arping -D` exits 0 when no reply came (busybox and iputils alike).
address_is_free() {
    arping -q -D -c "$ARP_PROBES" -w "$ARP_PROBE_WAIT_S" -I "$sh_link" "$1" >/dev/null 2>&1
}

# from_shim_rules ACTION TOOL: the shims open nothing. Macvlan children cannot reach the VM's namespace, which is
# why some use macvlan; a shim would reopen that. From a shim only replies of flows the VM or the host started
# pass (conntrack ESTABLISHED,RELATED, iptables-extensions(8)), to the VM itself (INPUT) and through it (FORWARD,
# via DOCKER-USER). `+` matches every link name with the prefix (iptables(8), -i).
from_shim_rules() {
    fs_action=$1 fs_tool=$2
    # Without any shim none of these rules is wanted (both families: a shim may carry IPv6).
    [ -n "$SHIMS" ] || fs_action=remove_rule
    if [ "$fs_action" = ensure_rule ]; then
        if ! "$fs_tool" -w -t filter -S "$FROM_SHIM_CHAIN" >/dev/null 2>&1; then
            must "$fs_tool -t filter -N $FROM_SHIM_CHAIN" "$fs_tool" -w -t filter -N "$FROM_SHIM_CHAIN"
        fi
        # Each goes in at the top: the DROP first, so the accepts end up above it.
        ensure_rule "$fs_tool" filter "$FROM_SHIM_CHAIN" -j DROP
        ensure_rule "$fs_tool" filter "$FROM_SHIM_CHAIN" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
        case $fs_tool in
            ip6tables*)
                # IPv6 finds its neighbours with ICMPv6 (RFC 4861 section 4.3, 4.4), which conntrack does not track
                # as part of a flow: IPv4's ARP never meets iptables, these would meet the DROP.
                for fs_type in neighbour-solicitation neighbour-advertisement; do
                    ensure_rule "$fs_tool" filter "$FROM_SHIM_CHAIN" -p ipv6-icmp --icmpv6-type "$fs_type" -j ACCEPT
                done
                ;;
        esac
    fi
    "$fs_action" "$fs_tool" filter INPUT -i "$SHIM_PREFIX+" -j "$FROM_SHIM_CHAIN"
    "$fs_action" "$fs_tool" filter DOCKER-USER -i "$SHIM_PREFIX+" -j "$FROM_SHIM_CHAIN"
    if [ "$fs_action" = remove_rule ] && "$fs_tool" -w -t filter -S "$FROM_SHIM_CHAIN" >/dev/null 2>&1; then
        must "$fs_tool -t filter -F $FROM_SHIM_CHAIN" "$fs_tool" -w -t filter -F "$FROM_SHIM_CHAIN"
        must "$fs_tool -t filter -X $FROM_SHIM_CHAIN" "$fs_tool" -w -t filter -X "$FROM_SHIM_CHAIN"
    fi
}

# ---------------------------------------------------------------------------------------------------------------
# Direct path: the host reaching containers via the VM's own address on a link they share (Colima's
# --network-address, Lima's shared/vzNAT networks, a host-only bridge), with the tunnel's rules on that link
#
# dmnc passes the host's own addresses (--direct-host). A host address the VM reaches through a connected route
# (`ip route get` names no gateway) is on a shared link; its interface gets, in chains of their own so teardown
# needs no addresses: from the host address, forwarding to containers is accepted (raw and DOCKER-USER, as -i chip0)
# and masqueraded (as the tunnel's host address); towards it, forwarded traffic passes the to-host chain, so only
# replies and the --allow-inbound ports reach the host (as -o chip0). The VM's own traffic on that link is left as
# it was: dmnc adds no way in or out that the link did not already have.

DIRECT_CHAIN='DMNC-DIRECT'
# Each entry takes at most 15 + 39 + 39 + 2 characters: four keep the result line within dmnc's bound
# (MAX_RESULT_LINE, dmnc/vm/result.py) beside every shim.
MAX_REPORTED_DIRECT=4

# direct_links: one line IF/VMADDR/HOSTADDR per --direct-host the VM reaches on a connected route, through neither
# dmnc's own interface nor a shim, a Docker bridge or loopback; at most MAX_REPORTED_DIRECT.
direct_links() {
    dl_count=0
    for dl_host in $DIRECT_HOSTS; do
        [ "$dl_count" -lt "$MAX_REPORTED_DIRECT" ] || break
        dl_route=$(ip -o route get "$dl_host" 2>/dev/null) || continue
        dl_dev='' dl_src='' dl_via='' dl_previous=''
        for dl_word in $dl_route; do
            case $dl_previous in
                dev) dl_dev=$dl_word ;;
                src) dl_src=$dl_word ;;
                via) dl_via=$dl_word ;;
            esac
            dl_previous=$dl_word
        done
        case $dl_route in
            local* | broadcast* | multicast* | unreachable* | prohibit* | blackhole*) continue ;;
        esac
        if [ -n "$dl_via" ] || [ -z "$dl_src" ]; then
            continue
        fi
        case $dl_dev in
            '' | *[!A-Za-z0-9_.-]* | [.-]* | lo | "$IFACE" | "$SHIM_PREFIX"* | docker* | br-*) continue ;;
        esac
        # The name and both addresses reach iptables and nft's input (nft_direct_rules): nothing unchecked does.
        [ "${#dl_dev}" -le 15 ] || continue
        is_ip_literal "$dl_src" || continue
        case $dl_host in
            *:*) [ "$TUNNEL6" = on ] || continue ;;
        esac
        echo "$dl_dev/$dl_src/$dl_host"
        dl_count=$((dl_count + 1))
    done
}

# direct_rules TOOL FAMILY: (re)writes the direct chains of TOOL for the links of FAMILY (4 or 6) in DIRECT_LINKS;
# with none, removes them.
direct_rules() {
    dr_tool=$1 dr_family=$2
    dr_links=''
    for dr_link in $DIRECT_LINKS; do
        case $dr_link/$dr_family in
            *:*/6) dr_links="$dr_links $dr_link" ;;
            *:*/4) ;;
            */4) dr_links="$dr_links $dr_link" ;;
        esac
    done
    teardown_direct "$dr_tool"
    [ -n "$dr_links" ] || return 0
    for dr_table in raw filter nat; do
        must "$dr_tool -t $dr_table -N $DIRECT_CHAIN" "$dr_tool" -w -t "$dr_table" -N "$DIRECT_CHAIN"
    done
    for dr_link in $dr_links; do
        dr_interface=${dr_link%%/*}
        dr_host=${dr_link##*/}
        must "$dr_tool -t raw -A $DIRECT_CHAIN" "$dr_tool" -w -t raw -A "$DIRECT_CHAIN" \
            -i "$dr_interface" -s "$dr_host" -j ACCEPT
        must "$dr_tool -t filter -A $DIRECT_CHAIN (from the host)" "$dr_tool" -w -t filter -A "$DIRECT_CHAIN" \
            -i "$dr_interface" -s "$dr_host" -j ACCEPT
        must "$dr_tool -t filter -A $DIRECT_CHAIN (towards the host)" "$dr_tool" -w -t filter -A "$DIRECT_CHAIN" \
            -o "$dr_interface" -d "$dr_host" -j "$TO_HOST_CHAIN"
        must "$dr_tool -t nat -A $DIRECT_CHAIN" "$dr_tool" -w -t nat -A "$DIRECT_CHAIN" -s "$dr_host" -j MASQUERADE
    done
    ensure_rule "$dr_tool" raw PREROUTING -j "$DIRECT_CHAIN"
    ensure_rule "$dr_tool" filter DOCKER-USER -j "$DIRECT_CHAIN"
    ensure_rule "$dr_tool" nat POSTROUTING -j "$DIRECT_CHAIN"
}

# teardown_direct TOOL: removes the jumps to the direct chains and the chains, where TOOL has them.
teardown_direct() {
    command -v "$1" >/dev/null 2>&1 || return 0
    td_saved=$("$1-save" 2>/dev/null) || return 0
    case $td_saved in
        *"$DIRECT_CHAIN"*) ;;
        *) return 0 ;;
    esac
    remove_rule "$1" raw PREROUTING -j "$DIRECT_CHAIN"
    remove_rule "$1" filter DOCKER-USER -j "$DIRECT_CHAIN"
    remove_rule "$1" nat POSTROUTING -j "$DIRECT_CHAIN"
    for td_table in raw filter nat; do
        if "$1" -w -t "$td_table" -S "$DIRECT_CHAIN" >/dev/null 2>&1; then
            must "$1 -t $td_table -F $DIRECT_CHAIN" "$1" -w -t "$td_table" -F "$DIRECT_CHAIN"
            must "$1 -t $td_table -X $DIRECT_CHAIN" "$1" -w -t "$td_table" -X "$DIRECT_CHAIN"
        fi
    done
}

# apply_direct: runs before apply_nft_table, which gives DIRECT_LINKS the same rules in nftables.
apply_direct() {
    DIRECT_LINKS=$(direct_links)
    direct_rules "$IPT" 4
    if [ "$TUNNEL6" = on ]; then
        direct_rules "$IPT6" 6
    else
        teardown_direct "$IPT6"
    fi
}

# direct_result_field: ` direct=IF/VMADDR/HOSTADDR,...` naming the links apply_direct opened, nothing when none.
direct_result_field() {
    [ -n "${DIRECT_LINKS:-}" ] || return 0
    df_list=''
    for df_link in $DIRECT_LINKS; do
        df_list="$df_list,$df_link"
    done
    printf ' direct=%s' "${df_list#,}"
}

# ---------------------------------------------------------------------------------------------------------------
# Docker's nftables firewall backend (Docker Engine 29, `firewall-backend: nftables`)
#
# Docker then drops forwarded packets in base chains of its own tables, and an accept elsewhere does not help: in
# nftables an accept ends only its own base chain, the packet still meets every other one (Docker docs, "Docker with
# nftables", migrating DOCKER-USER). What does help is a firewall mark the daemon was told to accept
# (`bridge-accept-fwmark`), set before Docker's chains see the packet. So dmnc keeps a table of its own, `inet dmnc`:
# it marks what arrives on the tunnel, and from the host's address on a direct link, with that mark (when the daemon
# has one), and carries the one-way rules (to_host_rules, from_shim_rules, direct_rules), whose DOCKER-USER jumps no
# longer run. Without the mark, status and doctor name
# the daemon setting.

# docker_nft_state: DOCKER_NFT becomes none (no Docker nftables table, or no `nft` here), marked (the daemon accepts
# a mark: NFT_MARK_VALUE, NFT_MARK_KEEP = the bits outside its mask) or unmarked.
docker_nft_state() {
    DOCKER_NFT=none NFT_MARK_VALUE='' NFT_MARK_KEEP=''
    command -v nft >/dev/null 2>&1 || return 0
    dn_rules=''
    for dn_family in ip ip6; do
        dn_table=$(nft list table "$dn_family" "$DOCKER_NFT_TABLE" 2>/dev/null) || continue
        DOCKER_NFT=unmarked
        dn_rules="$dn_rules
$dn_table"
    done
    [ "$DOCKER_NFT" = unmarked ] || return 0
    dn_ifs=$IFS
    IFS='
'
    set -f
    for dn_line in $dn_rules; do
        case $dn_line in
            *"comment \"$DOCKER_ACCEPT_MARK_COMMENT\""*) parse_accept_mark "$dn_line" && break ;;
        esac
    done
    set +f
    IFS=$dn_ifs
    return 0
}

# parse_accept_mark LINE: Docker's accept rule as `nft list` prints it, `meta mark 0xVALUE ...` or
# `meta mark & 0xMASK == 0xVALUE ...`; sets DOCKER_NFT=marked and the mark, or returns 1.
parse_accept_mark() {
    IFS=' 	'
    # shellcheck disable=SC2086 # splitting the rule into words is the point (globbing is off)
    set -- $1
    [ "$#" -ge 3 ] && [ "$1" = meta ] && [ "$2" = mark ] || return 1
    if [ "$3" = '&' ] && [ "$#" -ge 6 ] && [ "$5" = '==' ]; then
        pa_mask=$4 pa_value=$6
    else
        pa_mask=0xffffffff pa_value=$3
    fi
    is_mark "$pa_mask" && is_mark "$pa_value" || return 1
    NFT_MARK_VALUE=$pa_value
    NFT_MARK_KEEP=$(printf '0x%08x' $((~pa_mask & 0xffffffff)))
    DOCKER_NFT=marked
}

# is_mark TEXT: a 32-bit mark as nft prints it, 0x and 1-8 hex digits; nothing else reaches nft's input.
is_mark() {
    case $1 in
        0x*) ;;
        *) return 1 ;;
    esac
    case ${1#0x} in
        '' | *[!0-9a-f]*) return 1 ;;
    esac
    [ "${#1}" -le 10 ]
}

docker_nft_result_field() {
    case ${DOCKER_NFT:-none} in
        marked | unmarked) printf ' docker-nftables=%s' "$DOCKER_NFT" ;;
    esac
}

# apply_nft_table: (re)writes `inet dmnc` in one nft transaction (`nft -f`: the old table goes and the new one comes
# at once, so there is no moment without the one-way rules), or removes it when Docker uses iptables.
apply_nft_table() {
    docker_nft_state
    if [ "$DOCKER_NFT" = none ]; then
        remove_nft_table
        return 0
    fi
    if [ "$DOCKER_NFT" = unmarked ]; then
        note "Docker uses its nftables firewall without bridge-accept-fwmark: its rules drop the packets of the" \
            "tunnel and of direct links to containers on bridge networks (dmnc doctor names the daemon setting)"
    fi
    # shellcheck disable=SC2016 # $1 belongs to the inner shell
    must "nft -f (table inet $NFT_TABLE)" sh -c 'printf "%s\n" "$1" | nft -f -' load-table "$(nft_table_text)"
}

# nft_table_text: dmnc's table. The mark goes on in prerouting at priority mangle, before Docker's forward chains
# look for it; the one-way rules run in forward at priority filter - 1, before Docker's own forward chain (nft(8),
# CHAINS: the standard priority names). Docker's raw-PREROUTING drops (direct access to containers with published
# ports) run at priority raw and ignore marks: only the network option trusted_host_interfaces lifts those (doctor).
# Interface names, addresses, ports and the mark were checked above (the direct links' in direct_links): no other
# text gets into nft's input.
nft_table_text() {
    printf 'table inet %s\ndelete table inet %s\ntable inet %s {\n' "$NFT_TABLE" "$NFT_TABLE" "$NFT_TABLE"
    printf '  chain prerouting {\n    type filter hook prerouting priority mangle; policy accept;\n'
    if [ "$DOCKER_NFT" = marked ]; then
        printf '    iifname "%s" meta mark set meta mark & %s | %s\n' "$IFACE" "$NFT_MARK_KEEP" "$NFT_MARK_VALUE"
        nft_direct_rules prerouting
    fi
    printf '  }\n  chain forward {\n    type filter hook forward priority filter - 1; policy accept;\n'
    printf '    oifname "%s" ct state established,related accept\n' "$IFACE"
    for inbound in $ALLOW_INBOUND; do
        printf '    oifname "%s" %s dport %s ct state new accept\n' "$IFACE" "${inbound#*/}" "${inbound%/*}"
    done
    printf '    oifname "%s" drop\n' "$IFACE"
    nft_direct_rules forward
    printf '    iifname "%s*" ct state established,related accept\n' "$SHIM_PREFIX"
    printf '    iifname "%s*" drop\n' "$SHIM_PREFIX"
    printf '  }\n}\n'
}

# nft_direct_rules prerouting|forward: the direct links' share of the table, the same rules as direct_rules gives
# them in iptables, whose DOCKER-USER jump no longer runs: from the host's address on the link the mark (prerouting),
# towards it only replies and the --allow-inbound ports (forward). IPv4 links always, IPv6 ones only with the
# tunnel's IPv6 half, as apply_direct. The masquerade of what comes from the host stays in iptables (direct_rules):
# iptables' nat chains (iptables-nft's `ip nat` table or legacy's) and Docker's nftables nat chains all hook
# postrouting at priority srcnat, and the kernel runs every registered nat chain of a new connection until one binds
# a mapping (nf_nat_inet_fn, net/netfilter/nf_nat_core.c; nft(8), NAT statements). Docker's masquerades only its
# containers' own sources, so dmnc's MASQUERADE still binds the host's connections. Filter verdicts do not combine
# that way (an accept ends only its own base chain), which is why the filter rules, unlike NAT, are repeated here.
# The interface names and addresses come from direct_links, which checked them (name characters, is_ip_literal).
nft_direct_rules() {
    for nd_link in ${DIRECT_LINKS:-}; do
        nd_interface=${nd_link%%/*}
        nd_host=${nd_link##*/}
        case $nd_host in
            *:*)
                [ "${TUNNEL6:-off}" = on ] || continue
                nd_family=ip6
                ;;
            *) nd_family=ip ;;
        esac
        if [ "$1" = prerouting ]; then
            printf '    iifname "%s" %s saddr %s meta mark set meta mark & %s | %s\n' "$nd_interface" "$nd_family" \
                "$nd_host" "$NFT_MARK_KEEP" "$NFT_MARK_VALUE"
            continue
        fi
        nd_match=$(printf 'oifname "%s" %s daddr %s' "$nd_interface" "$nd_family" "$nd_host")
        printf '    %s ct state established,related accept\n' "$nd_match"
        for inbound in $ALLOW_INBOUND; do
            printf '    %s %s dport %s ct state new accept\n' "$nd_match" "${inbound#*/}" "${inbound%/*}"
        done
        printf '    %s drop\n' "$nd_match"
    done
}

# remove_nft_table: deletes `inet dmnc` when it exists.
remove_nft_table() {
    command -v nft >/dev/null 2>&1 || return 0
    nft list table inet "$NFT_TABLE" >/dev/null 2>&1 || return 0
    must "nft delete table inet $NFT_TABLE" nft delete table inet "$NFT_TABLE"
}

# The temporary link's name carries this shell's PID: two checks at once in one VM do not collide, and it can never
# be chip0. `ip link add` failing for any reason but permissions means no kernel WireGuard, as in run_setup.
run_check() {
    require_tool ip
    # Another tool's chip0 (docker-mac-net-connect's) would make every setup refuse: doctor names it from here.
    if [ -n "$(link_details)" ] && [ "$(interface_owner)" = foreign ]; then
        report_foreign_interface
    fi
    check_iface="dmncchk$$"
    add_err=$(ip link add dev "$check_iface" type wireguard 2>&1) || {
        case $add_err in
            *'not permitted'*) die "creating a test WireGuard link: $add_err (the container needs NET_ADMIN)" ;;
        esac
        note "no kernel WireGuard in this VM ($add_err)"
        docker_nft_state
        printf '%s mode=kernel-missing kernel=%s%s\n' "$RESULT_PREFIX" "$KERNEL_RELEASE" "$(docker_nft_result_field)"
        exit 0
    }
    must "deleting the test link $check_iface" ip link del dev "$check_iface"
    docker_nft_state
    printf '%s mode=kernel-ok kernel=%s%s\n' "$RESULT_PREFIX" "$KERNEL_RELEASE" "$(docker_nft_result_field)"
}

case $MODE in
    check) run_check ;;
    setup) run_setup ;;
    userspace) run_userspace ;;
    teardown) run_teardown ;;
esac
