#!/usr/bin/env bash
# Several VNIs on one UDP port (issue 19): two vxlan ports of vswitchd A, each on its own
# bridge with its own VNI, share one UDP socket on 4789, against two kernel vxlan devices
# (id 10 and id 20) that share dstport 4789 in one namespace.
#
#   nsA (vswitchd A) 192.0.2.1 ---veth--- 192.0.2.2 nsK: kernel vx10 (id 10, 10.10.0.100) and
#                                                        vx20 (id 20, 10.20.0.100), dstport 4789
#   A: br10 = vx10 (--vni 10) + tap10 (10.10.0.1, in nsA); br20 = vx20 (--vni 20) + tap20 (10.20.0.1)
#   IPv6 is off in both namespaces, so the pings and ARP are the only traffic.
#
# Pass: nsA has one UDP socket on 4789; each VNI pings both ways (at least 9 of 10); tcpdump
# on both kernel devices and both TAPs records not one frame of the other VNI's subnet (a
# frame on VNI 10 never reaches VNI 20, nor back) and at least 36 of its own (10 echo
# requests and their replies each way, 9 answered at worst); while one VNI's pings run, the
# other's counters (kernel device, tunnel port, TAP) move by at most its own ARP upkeep (2),
# never by the 40 echo frames; tcpdump on the underlay sees
# VNI 10 and VNI 20 datagrams to the same UDP port; a third port with VNI 20 on 4789 is
# refused naming vx20; deleting vx10 (whose slot carried the socket) leaves VNI 20 pinging
# and VNI 10 datagrams counted as rxDropVni on vx20; vx10 comes back; with both deleted,
# nothing listens on 4789.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_tool ping iputils-ping
e2e_require_tool ss iproute2
e2e_require_tool tcpdump tcpdump
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"

NSA=vswVA$$ NSK=vswVK$$
netns_add "$NSA" "$NSK"
for n in "$NSA" "$NSK"; do
    for k in all default; do ip netns exec "$n" sysctl -qw "net.ipv6.conf.$k.disable_ipv6=1"; done
done
ip link add vvk$$ netns "$NSA" type veth peer name vkv$$ netns "$NSK"
ip -n "$NSA" addr add 192.0.2.1/24 dev vvk$$
ip -n "$NSK" addr add 192.0.2.2/24 dev vkv$$
ip -n "$NSA" link set vvk$$ up
ip -n "$NSK" link set vkv$$ up
for v in 10 20; do
    ip -n "$NSK" link add vx$v type vxlan id $v remote 192.0.2.1 local 192.0.2.2 dstport 4789 dev vkv$$ ||
        e2e_missing "kernel vxlan support" "a kernel with the vxlan module"
    ip -n "$NSK" addr add 10.$v.0.100/24 dev vx$v
    ip -n "$NSK" link set vx$v mtu 1450 up
done

vswitchd_start_in_netns "$NSA"
for v in 10 20; do
    vsw_ok add-br br$v >/dev/null
    vsw_ok add-port br$v vx$v --type vxlan --remote 192.0.2.2 --vni $v --dst-port 4789 >/dev/null
    vsw_ok add-port br$v tap$v --type tap --ifname vt$v$$ >/dev/null
    ip -n "$NSA" addr add 10.$v.0.1/24 dev vt$v$$
    ip -n "$NSA" link set vt$v$$ mtu 1450 up
done
sockets=$(ip netns exec "$NSA" ss -uanp 'sport = :4789')
printf '%s\n' "$sockets" >>"$E2E_LOG_DIR/snapshots.log"
n=$(grep -c ':4789 ' <<<"$sockets" || true)
((n == 1)) || e2e_fail "expected one UDP socket on 4789 in nsA, found $n: $sockets"
e2e_msg "one UDP socket on 4789 for VNIs 10 and 20: $(grep ':4789 ' <<<"$sockets" | tr -s ' ')"

# counts V: "kernel-rx kernel-tx vx-rx vx-tx tap-rx tap-tx" of VNI V
counts() {
    local s=/sys/class/net/vx$1/statistics
    echo "$(ip netns exec "$NSK" cat $s/rx_packets) $(ip netns exec "$NSK" cat $s/tx_packets)" \
        "$(port_counter br$1 vx$1 rx) $(port_counter br$1 vx$1 tx) $(port_counter br$1 tap$1 rx) $(port_counter br$1 tap$1 tx)"
}
# pings V: 10 pings each way on VNI V; at least 9 replies each
pings() {
    local got
    got=$(netns_ping "$NSA" 10.$1.0.1 10.$1.0.100 10)
    e2e_msg "VNI $1: 10.$1.0.1 -> 10.$1.0.100: $got of 10 replies"
    ((got >= 9)) || e2e_fail "VNI $1: nsA -> kernel: only $got of 10 replies"
    got=$(netns_ping "$NSK" 10.$1.0.100 10.$1.0.1 10)
    e2e_msg "VNI $1: 10.$1.0.100 -> 10.$1.0.1: $got of 10 replies"
    ((got >= 9)) || e2e_fail "VNI $1: kernel -> nsA: only $got of 10 replies"
}
# apart V W: V's pings run; W's counters may move only by its own ARP upkeep (a probe and its
# answer), never by V's 20 echo frames each way
apart() {
    local before after b a i
    before=$(counts "$2")
    pings "$1"
    after=$(counts "$2")
    e2e_msg "VNI $2 during VNI $1's pings (kernel rx tx, vx$2 rx tx, tap$2 rx tx): before $before, after $after"
    read -ra b <<<"$before"
    read -ra a <<<"$after"
    for i in 0 1 2 3 4 5; do
        ((a[i] - b[i] <= 2)) || e2e_fail "VNI $1's traffic reached VNI $2: counters $before -> $after"
    done
}

# Every frame that reaches each VNI's endpoints (the kernel's vx10/vx20, A's TAPs) is recorded:
# none may carry the other VNI's addresses (IPv4 or ARP).
declare -A DUMP=()
for v in 10 20; do
    ip netns exec "$NSK" tcpdump -n -U -i vx$v -w "$E2E_TMP/k$v.pcap" 2>"$E2E_LOG_DIR/tcpdump-k$v.log" &
    DUMP[k$v]=$!
    ip netns exec "$NSA" tcpdump -n -U -i vt$v$$ -w "$E2E_TMP/a$v.pcap" 2>"$E2E_LOG_DIR/tcpdump-a$v.log" &
    DUMP[a$v]=$!
done
E2E_PIDS+=("${DUMP[@]}")
for d in "${!DUMP[@]}"; do
    vsw_wait_log "$E2E_LOG_DIR/tcpdump-$d.log" "listening on" 20 "${DUMP[$d]}" || e2e_fail "tcpdump $d did not start"
done
CAP=$E2E_TMP/underlay.txt
ip netns exec "$NSA" tcpdump -l -n -i vvk$$ udp port 4789 >"$CAP" 2>"$E2E_LOG_DIR/tcpdump.log" &
TCPDUMP_PID=$!
E2E_PIDS+=("$TCPDUMP_PID")
vsw_wait_log "$E2E_LOG_DIR/tcpdump.log" "listening on" 20 "$TCPDUMP_PID" || e2e_fail "tcpdump did not start"
apart 10 20
apart 20 10
sleep 0.5
vsw_kill_pid "$TCPDUMP_PID" 5
for d in "${!DUMP[@]}"; do vsw_kill_pid "${DUMP[$d]}" 5; done
for v in 10 20; do
    w=$((30 - v))
    for side in k a; do
        own=$(tcpdump -n -r "$E2E_TMP/$side$v.pcap" "net 10.$v.0.0/24" 2>/dev/null | wc -l)
        other=$(tcpdump -n -r "$E2E_TMP/$side$v.pcap" "not net 10.$v.0.0/24" 2>/dev/null | tee -a "$E2E_LOG_DIR/leaks.txt" | wc -l)
        e2e_msg "VNI $v, $([[ $side == k ]] && echo "kernel vx$v" || echo "A's tap$v"): $own frames of 10.$v.0.0/24, $other others"
        ((own >= 36)) || e2e_fail "VNI $v: tcpdump on $side$v saw only $own of its own frames"
        ((other == 0)) || e2e_fail "VNI $v: $other frames that are not VNI $v's reached $side$v (VNI $w's? see leaks.txt)"
    done
done
cp "$CAP" "$E2E_LOG_DIR/underlay.txt"
for v in 10 20; do
    grep -Eq "192.0.2.1.[0-9]+ > 192.0.2.2.4789: VXLAN.* vni $v\b" "$CAP" &&
        grep -Eq "192.0.2.2.[0-9]+ > 192.0.2.1.4789: VXLAN.* vni $v\b" "$CAP" ||
        e2e_fail "tcpdump saw no VNI $v datagrams both ways on UDP 4789 (see underlay.txt)"
done
e2e_msg "underlay: $(grep -c 'vni 10' "$CAP") VNI 10 and $(grep -c 'vni 20' "$CAP") VNI 20 datagrams on UDP 4789"

vsw_ok add-br br30 >/dev/null
vsw_expect_refused "a taken VNI" "VNI 20 on UDP port 4789 is already taken by port vx20 of bridge br20" \
    add-port br30 vx30 --type vxlan --remote 192.0.2.2 --vni 20
vsw_expect_refused "geneve on a vxlan UDP port" "cannot share a UDP port" \
    add-port br30 gn30 --type geneve --remote 192.0.2.2 --vni 30 --dst-port 4789
grep -q "Port vx30\|vx30" <<<"$(vsw show)" && e2e_fail "a refused port was created anyway"

# vx10 carried the socket: without it, VNI 20 still works and VNI 10 goes nowhere.
vsw_ok del-port br10 vx10
pings 20
drops_before=$(vsw port stats br20 vx20 | sed -n 's/.*rx dropped, other VNI: *\([0-9]*\).*/\1/p')
got=$(netns_ping "$NSK" 10.10.0.100 10.10.0.1 3)
((got == 0)) || e2e_fail "VNI 10 answered after vx10 was deleted ($got replies)"
drops_after=$(vsw port stats br20 vx20 | sed -n 's/.*rx dropped, other VNI: *\([0-9]*\).*/\1/p')
((${drops_after:-0} > ${drops_before:-0})) || e2e_fail "VNI 10 datagrams were not counted as rxDropVni on vx20 ($drops_before -> $drops_after)"
e2e_msg "vx10 deleted: VNI 20 pings, VNI 10 datagrams dropped on vx20 (other VNI: $drops_before -> $drops_after)"
vsw_ok add-port br10 vx10 --type vxlan --remote 192.0.2.2 --vni 10 --dst-port 4789 >/dev/null
pings 10
e2e_snapshot "after pings" br10
vsw port stats br20 >>"$E2E_LOG_DIR/snapshots.log" 2>&1
vsw_ok del-port br10 vx10
vsw_ok del-port br20 vx20
left=$(ip netns exec "$NSA" ss -uan 'sport = :4789' | grep -c ':4789 ' || true)
((left == 0)) || e2e_fail "a socket on 4789 is left after the last tunnel port went"
e2e_msg "both ports deleted: nothing listens on 4789"
e2e_pass
