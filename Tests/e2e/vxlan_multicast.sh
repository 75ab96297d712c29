#!/usr/bin/env bash
# VXLAN over a multicast underlay (issue 19): no remote configured anywhere.
#
#   nsA (vswitchd A) 192.0.2.1 --+
#   nsB (vswitchd B) 192.0.2.2 --+-- Linux bridge in nsX (multicast snooping off)
#   nsK (kernel vx42) 192.0.2.3 -+
#   overlay 10.42.0.0/24, VNI 42, group 239.1.1.1: a TAP port of A (10.42.0.1, in nsA), a TAP
#   port of B (10.42.0.2, in nsB), the kernel's `vxlan id 42 group 239.1.1.1 dev ...` (10.42.0.100).
#
# Pass: every endpoint pings every other (ARP floods go to the group; replies and unicast go
# to the remote learned from each source, as with the kernel); A's `show` lists the group and
# the two remotes it learned; the kernel's FDB has A's TAP MAC at 192.0.2.1. Also: --remote
# with --group and a group that is not multicast are refused.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_tool ping iputils-ping
e2e_require_tool bridge iproute2
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"

NSA=vswMA$$ NSB=vswMB$$ NSK=vswMK$$ NSX=vswMX$$
netns_cleanup() {
    local n
    for n in "$NSA" "$NSB" "$NSK" "$NSX"; do ip netns del "$n" 2>/dev/null; done
    return 0
}
E2E_CLEANUP_HOOKS+=(netns_cleanup)
for n in "$NSA" "$NSB" "$NSK" "$NSX"; do
    ip netns add "$n" || e2e_missing "network namespaces" "a kernel with CONFIG_NET_NS (ip netns add failed)"
    ip -n "$n" link set lo up
done

# The underlay: one veth from each host to a bridge in nsX; multicast floods to every port
# (with snooping on, the bridge would wait for IGMP reports and a querier).
ip -n "$NSX" link add mbr$$ type bridge mcast_snooping 0 || e2e_missing "Linux bridge" "a kernel with CONFIG_BRIDGE"
ip -n "$NSX" link set mbr$$ up
i=1
for l in "$NSA a" "$NSB b" "$NSK k"; do
    read -r n x <<<"$l"
    ip link add m$x$$ netns "$n" type veth peer name x$x$$ netns "$NSX"
    ip -n "$NSX" link set x$x$$ master mbr$$ up
    ip -n "$n" addr add 192.0.2.$i/24 dev m$x$$
    ip -n "$n" link set m$x$$ up
    i=$((i + 1))
done

# The kernel's VTEP in nsK: group mode, no remote (its default UDP port is 8472: say 4789).
ip -n "$NSK" link add vx42 type vxlan id 42 group 239.1.1.1 dev mk$$ dstport 4789 ||
    e2e_missing "kernel vxlan support" "a kernel with the vxlan module"
ip -n "$NSK" addr add 10.42.0.100/24 dev vx42
ip -n "$NSK" link set vx42 mtu 1450 up

# vswitchd A in nsA (lib.sh's daemon), vswitchd B in nsB
REAL_VSWITCHD=$VSWITCHD_BIN
VSWITCHD_BIN=$E2E_TMP/vswitchd-in-netns
printf '#!/bin/sh\nexec ip netns exec %s %q "$@"\n' "$NSA" "$REAL_VSWITCHD" >"$VSWITCHD_BIN"
chmod +x "$VSWITCHD_BIN"
vswitchd_start
SOCK_B=$E2E_TMP/ctl-b.sock
mkdir -p "$E2E_TMP/run-b"
ip netns exec "$NSB" "$REAL_VSWITCHD" --control "$SOCK_B" --run-dir "$E2E_TMP/run-b" --log-level debug \
    </dev/null >>"$E2E_LOG_DIR/vswitchd-b.log" 2>&1 &
PID_B=$!
E2E_PIDS+=("$PID_B")
vswb() { "$VSWITCH_BIN" --control "$SOCK_B" "$@"; }
vsw_wait_for 30 vswb show >/dev/null 2>&1 || e2e_fail "vswitchd B did not answer (see vswitchd-b.log)"

vsw_expect_refused "--remote with --group" "mutually exclusive" \
    add-port br0 vx0 --type vxlan --remote 192.0.2.9 --group 239.1.1.1 --vni 42
vsw_ok add-br br0 >/dev/null
vsw_expect_refused "a unicast group" "not a multicast address" add-port br0 vx0 --type vxlan --group 192.0.2.9 --vni 42
vsw_ok add-port br0 vx0 --type vxlan --group 239.1.1.1 --dev ma$$ --vni 42 >/dev/null
vsw_ok add-port br0 tap0 --type tap --ifname vta$$ >/dev/null
vswb add-br br0 >/dev/null || e2e_fail "B: add-br failed"
vswb add-port br0 vx0 --type vxlan --group 239.1.1.1 --dev mb$$ --ttl 1 --vni 42 >/dev/null || e2e_fail "B: add-port vx0 failed"
vswb add-port br0 tap0 --type tap --ifname vtb$$ >/dev/null || e2e_fail "B: add-port tap0 failed"
for l in "$NSA vta$$ 10.42.0.1" "$NSB vtb$$ 10.42.0.2"; do
    read -r n t a <<<"$l"
    ip -n "$n" addr add "$a/24" dev "$t"
    ip -n "$n" link set "$t" mtu 1450 up
done

# Every endpoint pings every other.
declare -A HOST=([10.42.0.1]=$NSA [10.42.0.2]=$NSB [10.42.0.100]=$NSK)
for from in 10.42.0.1 10.42.0.2 10.42.0.100; do
    for to in 10.42.0.1 10.42.0.2 10.42.0.100; do
        [[ $from == "$to" ]] && continue
        out=$(ip netns exec "${HOST[$from]}" ping -c 5 -i 0.2 -W 2 -I "$from" "$to" 2>&1) || true
        got=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
        e2e_msg "$from -> $to: ${got:-0} of 5 replies"
        ((${got:-0} >= 4)) || e2e_fail "$from -> $to: only ${got:-0} of 5 replies: $out"
    done
done

show=$(vsw show)
printf '%s\n' "$show" >>"$E2E_LOG_DIR/snapshots.log"
for want in "type: *vxlan" "group: *239.1.1.1" "ttl: *1" "dev: *ma$$" "learned_remotes: *.*192.0.2.2" "learned_remotes: *.*192.0.2.3"; do
    grep -Eq "$want" <<<"$show" || e2e_fail "vswitch show lacks '$want':
$show"
done
a_mac=$(ip netns exec "$NSA" cat /sys/class/net/vta$$/address)
kfdb=$(bridge -n "$NSK" fdb show dev vx42)
grep -q "$a_mac dst 192.0.2.1" <<<"$kfdb" || e2e_fail "the kernel did not learn A's TAP ($a_mac) at 192.0.2.1: $kfdb"
e2e_msg "kernel learned $a_mac at 192.0.2.1; A: $(grep -E 'learned_remotes' <<<"$show" | tr -s ' ')"
e2e_pass
