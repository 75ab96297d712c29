#!/usr/bin/env bash
# IPv6 underlay (issue 19): VXLAN and Geneve ports over IPv6 against the Linux kernel.
#
#   nsA (vswitchd A) 2001:db8::1 ---veth--- 2001:db8::2 nsK (the kernel), addresses `nodad`
#   VNI 42: A's vx42 (--remote 2001:db8::2) + TAP 10.42.0.1   <-> kernel vx42 (vxlan id 42 remote 2001:db8::1 local 2001:db8::2 dstport 4789), 10.42.0.100
#   VNI 44: A's vx44 (--group ff05::100 --dev IF) + TAP 10.44.0.1 <-> kernel vx44 (vxlan id 44 group ff05::100 dev IF dstport 4789), 10.44.0.100
#   VNI 43: A's gn43 (--type geneve --remote 2001:db8::2 --local 2001:db8::1) + TAP 10.43.0.1 <-> kernel gnv43 (geneve id 43 remote 2001:db8::1), 10.43.0.100
#   Each on its own bridge of A; vx42 and vx44 share A's [::]:4789 socket (VNI demux).
#
# Pass: each overlay pings both ways (at least 9 of 10) with 1402-byte pings that fill the
# 1430-byte MTU (1500 - 70) with DF set; A's `show` reports overhead 70 and mtu 1430 for each
# port, the group and the learned remote 2001:db8::2 for vx44; the kernel's FDB has A's TAP MAC
# behind 2001:db8::1; tcpdump on the underlay decodes IPv6/UDP 4789 as VXLAN VNI 42 and 44;
# and IPv6/UDP 6081 as Geneve VNI 43; mixed address families and IPv6 mistakes are refused
# with clear errors. A kernel without geneve ("Unknown device type"): the Geneve far side is
# vswitchd B in nsK (gn43 to 2001:db8::1, TAP 10.43.0.100), and the test says so.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_tool ping iputils-ping
e2e_require_tool bridge iproute2
e2e_require_tool tcpdump tcpdump
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"

NSA=vsw6A$$ NSK=vsw6K$$
netns_add "$NSA" "$NSK"
for n in "$NSA" "$NSK"; do
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 ||
        e2e_missing "IPv6" "a kernel with IPv6 enabled"
done
ip link add v6k$$ netns "$NSA" type veth peer name v6a$$ netns "$NSK"
ip -n "$NSA" addr add 2001:db8::1/64 dev v6k$$ nodad
ip -n "$NSK" addr add 2001:db8::2/64 dev v6a$$ nodad
ip -n "$NSA" link set v6k$$ up
ip -n "$NSK" link set v6a$$ up

# The kernel's VTEPs in nsK
ip -n "$NSK" link add vx42 type vxlan id 42 remote 2001:db8::1 local 2001:db8::2 dstport 4789 dev v6a$$ ||
    e2e_missing "kernel vxlan support" "a kernel with the vxlan module"
ip -n "$NSK" link add vx44 type vxlan id 44 group ff05::100 dev v6a$$ dstport 4789 ||
    e2e_fail "the kernel refused an IPv6 group vxlan device"
GENEVE=1
if ! ip -n "$NSK" link add gnv43 type geneve id 43 remote 2001:db8::1 2>"$E2E_TMP/geneve.err"; then
    GENEVE=0
    e2e_msg "this kernel has no geneve device ($(cat "$E2E_TMP/geneve.err")): Geneve over IPv6 runs against vswitchd B in $NSK"
fi
for d in vx42 vx44 $( ((GENEVE)) && echo gnv43); do
    v=${d//[!0-9]/}
    ip -n "$NSK" addr add 10.$v.0.100/24 dev "$d"
    ip -n "$NSK" link set "$d" mtu 1430 up
done

vswitchd_start_in_netns "$NSA"
vsw_ok add-br br0 >/dev/null
vsw_expect_refused "IPv6 remote, IPv4 --local" "remote 2001:db8::2 is IPv6 but --local 192.0.2.1 is IPv4" \
    add-port br0 vx0 --type vxlan --remote 2001:db8::2 --local 192.0.2.1 --vni 42
vsw_expect_refused "IPv4 and IPv6 remotes" "all be IPv4 or all IPv6" \
    add-port br0 vx0 --type vxlan --remote 2001:db8::2,192.0.2.2 --vni 42
vsw_expect_refused "an IPv6 multicast remote" "not a unicast address" \
    add-port br0 vx0 --type vxlan --remote ff05::100 --vni 42
vsw_expect_refused "a unicast IPv6 group" "not a multicast address" \
    add-port br0 vx0 --type vxlan --group 2001:db8::100 --vni 42
vsw_expect_refused "a link-local remote" "link-local IPv6 addresses are not supported" \
    add-port br0 vx0 --type vxlan --remote fe80::2 --vni 42
vsw_expect_refused "an IPv4 prefix for an IPv6 tunnel" "all be IPv4 or all IPv6" \
    add-port br0 vx0 --type vxlan --remote 2001:db8::2 --vni 42 --learning --remote-prefix 192.0.2.0/24
vsw_ok del-br br0

# tunnel V ARGS...: bridge brV with the tunnel port ARGS (named first) and TAP tapV (10.V.0.1)
tunnel() {
    local v=$1
    shift
    vsw_ok add-br br$v >/dev/null
    vsw_ok add-port br$v "$@" >/dev/null
    vsw_ok add-port br$v tap$v --type tap --ifname vt$v$$ >/dev/null
    ip -n "$NSA" addr add 10.$v.0.1/24 dev vt$v$$
    ip -n "$NSA" link set vt$v$$ mtu 1430 up
}
tunnel 42 vx42 --type vxlan --remote 2001:db8::2 --vni 42
tunnel 44 vx44 --type vxlan --group ff05::100 --dev v6k$$ --vni 44
tunnel 43 gn43 --type geneve --remote 2001:db8::2 --local 2001:db8::1 --vni 43
if ((!GENEVE)); then
    vswitchd_other "$NSK" b
    vsw_at b add-br br43 >/dev/null && vsw_at b add-port br43 gn43 --type geneve --remote 2001:db8::1 --local 2001:db8::2 --vni 43 >/dev/null &&
        vsw_at b add-port br43 tap43 --type tap --ifname vtk$$ >/dev/null || e2e_fail "B: setting up br43 failed"
    ip -n "$NSK" addr add 10.43.0.100/24 dev vtk$$
    ip -n "$NSK" link set vtk$$ mtu 1430 up
fi

CAP=$E2E_TMP/underlay.txt
ip netns exec "$NSA" tcpdump -l -n -i v6k$$ ip6 and udp and \( port 4789 or port 6081 \) >"$CAP" 2>"$E2E_LOG_DIR/tcpdump.log" &
TCPDUMP_PID=$!
E2E_PIDS+=("$TCPDUMP_PID")
vsw_wait_log "$E2E_LOG_DIR/tcpdump.log" "listening on" 20 "$TCPDUMP_PID" || e2e_fail "tcpdump did not start"

# pings V: full-MTU pings (1402 + 28 = 1430, DF) both ways on overlay 10.V.0.0/24
pings() {
    local out got
    for dir in "$NSA 10.$1.0.1 10.$1.0.100" "$NSK 10.$1.0.100 10.$1.0.1"; do
        read -r n from to <<<"$dir"
        out=$(ip netns exec "$n" ping -c 10 -i 0.2 -W 2 -M do -s 1402 -I "$from" "$to" 2>&1) || true
        got=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
        e2e_msg "VNI $1: $from -> $to, 1402-byte pings: ${got:-0} of 10 replies"
        ((${got:-0} >= 9)) || e2e_fail "VNI $1: $from -> $to: only ${got:-0} of 10 replies: $out"
    done
}
pings 42
pings 44
pings 43
sleep 0.5
vsw_kill_pid "$TCPDUMP_PID" 5
cp "$CAP" "$E2E_LOG_DIR/underlay.txt"

show=$(vsw show)
printf '%s\n' "$show" >>"$E2E_LOG_DIR/snapshots.log"
show_json=$(vsw show --format json)
for p in vx42 vx44 gn43; do
    got=$(python3 -c '
import json, sys
for b in json.load(sys.stdin)["bridges"]:
    for p in b["ports"]:
        if p["name"] == sys.argv[1]:
            o = p.get("options", {})
            print(p.get("mtu"), o.get("overhead"), o.get("remote_ip"), o.get("local"), o.get("group", "-"), o.get("learned_remotes", "-"))
' "$p" <<<"$show_json")
    e2e_msg "$p: mtu overhead remote_ip local group learned_remotes: $got"
    read -r mtu overhead _ <<<"$got"
    [[ $mtu == 1430 && $overhead == 70 ]] || e2e_fail "$p: show reports mtu $mtu and overhead $overhead, expected 1430 and 70"
done
grep -Eq "group: *ff05::100" <<<"$show" && grep -Eq "learned_remotes: *2001:db8::2" <<<"$show" ||
    e2e_fail "vx44's show lacks the group or the learned remote 2001:db8::2"
a_mac=$(ip netns exec "$NSA" cat /sys/class/net/vt42$$/address)
kfdb=$(bridge -n "$NSK" fdb show dev vx42)
grep -q "$a_mac dst 2001:db8::1" <<<"$kfdb" || e2e_fail "the kernel did not learn A's TAP ($a_mac) behind 2001:db8::1: $kfdb"
for v in 42 44; do
    grep -Eq "2001:db8::1\.[0-9]+ > (2001:db8::2|ff05::100)\.4789: VXLAN.* vni $v\b" "$CAP" &&
        grep -Eq "2001:db8::2\.[0-9]+ > 2001:db8::1\.4789: VXLAN.* vni $v\b" "$CAP" ||
        e2e_fail "tcpdump saw no IPv6 VXLAN datagrams of VNI $v both ways (see underlay.txt)"
done
grep -Eq "2001:db8::1\.[0-9]+ > 2001:db8::2\.6081: Geneve.* vni 0x2b\b" "$CAP" &&
    grep -Eq "2001:db8::2\.[0-9]+ > 2001:db8::1\.6081: Geneve.* vni 0x2b\b" "$CAP" ||
    e2e_fail "tcpdump saw no IPv6 Geneve datagrams of VNI 43 both ways on UDP 6081 (see underlay.txt)"
e2e_msg "underlay: $(grep -c 'vni 42' "$CAP") VNI 42 and $(grep -c 'vni 44' "$CAP") VNI 44 IPv6 datagrams ($(grep -c 'ff05::100' "$CAP") to ff05::100); kernel FDB: $a_mac dst 2001:db8::1"
e2e_pass
