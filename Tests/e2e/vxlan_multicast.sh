#!/usr/bin/env bash
# VXLAN over a multicast underlay (issue 19): no remote configured anywhere, and hosts that
# join later are reachable without touching the others' configuration.
#
#   nsA (vswitchd A) 192.0.2.1 --+
#   nsB (vswitchd B) 192.0.2.2 --+-- Linux bridge in nsX (multicast snooping off)
#   nsK (kernel vx42) 192.0.2.3 -+   (joins later)
#   nsC (vswitchd C) 192.0.2.4 --+   (joins later)
#   overlay 10.42.0.0/24, VNI 42, group 239.1.1.1: a TAP port of A (10.42.0.1, in nsA), of B
#   (10.42.0.2, in nsB) and of C (10.42.0.3, in nsC), the kernel's `vxlan id 42 group 239.1.1.1
#   dev ...` (10.42.0.100).
#
# Pass: (1) A and B, alone on the group, ping each other. (2) Then the kernel's host and
# vswitchd C are plugged into the underlay bridge and start their VTEPs (same group, nothing
# else), while A's and B's configuration stays as it was: every endpoint pings every other
# (at least 4 of 5; ARP floods go to the group, replies and unicast to the remote learned
# from each source, as with the kernel); A's `show` lists the group and the three remotes it
# learned; the kernel's FDB has A's TAP MAC at 192.0.2.1. Also: --remote with --group and a
# group that is not multicast are refused.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_tool ping iputils-ping
e2e_require_tool bridge iproute2
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"

NSA=vswMA$$ NSB=vswMB$$ NSK=vswMK$$ NSC=vswMC$$ NSX=vswMX$$
netns_add "$NSA" "$NSB" "$NSK" "$NSC" "$NSX"

# The underlay: one veth from each host to a bridge in nsX; multicast floods to every port
# (with snooping on, the bridge would wait for IGMP reports and a querier).
ip -n "$NSX" link add mbr$$ type bridge mcast_snooping 0 || e2e_missing "Linux bridge" "a kernel with CONFIG_BRIDGE"
ip -n "$NSX" link set mbr$$ up
# plug NS X N: a veth m<X> from NS to the bridge, with 192.0.2.N/24
plug() {
    ip link add "m$2$$" netns "$1" type veth peer name "x$2$$" netns "$NSX"
    ip -n "$NSX" link set "x$2$$" master mbr$$ up
    ip -n "$1" addr add "192.0.2.$3/24" dev "m$2$$"
    ip -n "$1" link set "m$2$$" up
}
plug "$NSA" a 1
plug "$NSB" b 2

vswitchd_start_in_netns "$NSA"
vswitchd_other "$NSB" b
vsw_expect_refused "--remote with --group" "mutually exclusive" \
    add-port br0 vx0 --type vxlan --remote 192.0.2.9 --group 239.1.1.1 --vni 42
vsw_ok add-br br0 >/dev/null
vsw_expect_refused "a unicast group" "not a multicast address" add-port br0 vx0 --type vxlan --group 192.0.2.9 --vni 42
vsw_ok add-port br0 vx0 --type vxlan --group 239.1.1.1 --dev ma$$ --vni 42 >/dev/null
vsw_ok add-port br0 tap0 --type tap --ifname vta$$ >/dev/null
# tunnel_host NAME NS IF: br0 with a group-mode vx0 on IF and tap0 (vt<NAME>) on vswitchd NAME
tunnel_host() {
    vsw_at "$1" add-br br0 >/dev/null || e2e_fail "$1: add-br failed"
    vsw_at "$1" add-port br0 vx0 --type vxlan --group 239.1.1.1 --dev "$3" --ttl 1 --vni 42 >/dev/null ||
        e2e_fail "$1: add-port vx0 failed"
    vsw_at "$1" add-port br0 tap0 --type tap --ifname "vt$1$$" >/dev/null || e2e_fail "$1: add-port tap0 failed"
}
tunnel_host b "$NSB" mb$$
# overlay NS IF ADDR: the overlay address on a TAP (or vxlan) interface, MTU 1450, up
overlay() {
    ip -n "$1" addr add "$3/24" dev "$2"
    ip -n "$1" link set "$2" mtu 1450 up
}
overlay "$NSA" vta$$ 10.42.0.1
overlay "$NSB" vtb$$ 10.42.0.2

declare -A HOST=([10.42.0.1]=$NSA [10.42.0.2]=$NSB [10.42.0.100]=$NSK [10.42.0.3]=$NSC)
# every_pair ADDR...: each pings each other, at least 4 of 5 replies
every_pair() {
    local from to got
    for from in "$@"; do
        for to in "$@"; do
            [[ $from == "$to" ]] && continue
            got=$(netns_ping "${HOST[$from]}" "$from" "$to" 5)
            e2e_msg "$from -> $to: $got of 5 replies"
            ((got >= 4)) || e2e_fail "$from -> $to: only $got of 5 replies"
        done
    done
}
e2e_msg "(1) A and B alone on the group"
every_pair 10.42.0.1 10.42.0.2
vsw show >"$E2E_TMP/show-before"

e2e_msg "(2) the kernel's host and vswitchd C join; A and B are not touched"
plug "$NSK" k 3
plug "$NSC" c 4
# The kernel's VTEP in nsK: group mode, no remote (its default UDP port is 8472: say 4789).
ip -n "$NSK" link add vx42 type vxlan id 42 group 239.1.1.1 dev mk$$ dstport 4789 ||
    e2e_missing "kernel vxlan support" "a kernel with the vxlan module"
overlay "$NSK" vx42 10.42.0.100
vswitchd_other "$NSC" c
tunnel_host c "$NSC" mc$$
overlay "$NSC" vtc$$ 10.42.0.3
every_pair 10.42.0.1 10.42.0.2 10.42.0.100 10.42.0.3

show=$(vsw show)
{ echo "### A before the others joined"; cat "$E2E_TMP/show-before"; echo "### A after"; printf '%s\n' "$show"
  echo "### C"; vsw_at c show; } >>"$E2E_LOG_DIR/snapshots.log"
for want in "type: *vxlan" "group: *239.1.1.1" "ttl: *1" "dev: *ma$$" "learned_remotes: *.*192.0.2.2" \
    "learned_remotes: *.*192.0.2.3" "learned_remotes: *.*192.0.2.4"; do
    grep -Eq "$want" <<<"$show" || e2e_fail "vswitch show lacks '$want':
$show"
done
a_mac=$(ip netns exec "$NSA" cat /sys/class/net/vta$$/address)
kfdb=$(bridge -n "$NSK" fdb show dev vx42)
grep -q "$a_mac dst 192.0.2.1" <<<"$kfdb" || e2e_fail "the kernel did not learn A's TAP ($a_mac) at 192.0.2.1: $kfdb"
for n in b c; do kill -0 "${OTHER_PID[$n]}" 2>/dev/null || e2e_fail "vswitchd $n died (see vswitchd-$n.log)"; done
e2e_msg "kernel learned $a_mac at 192.0.2.1; A: $(grep -E 'learned_remotes' <<<"$show" | tr -s ' ')"
e2e_pass
