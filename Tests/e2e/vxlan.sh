#!/usr/bin/env bash
# VXLAN tunnel ports against the Linux kernel's vxlan device and between two vswitchd instances.
#
#   nsA (vswitchd A)  192.0.2.1    ---veth---  192.0.2.2    nsK: kernel vx42 (VNI 42, dstport 4789), 10.42.0.100
#   nsA               198.51.100.1 ---veth---  198.51.100.2 nsB: vswitchd B
#   overlay 10.42.0.0/24, VNI 42: guest vm1 (10.42.0.1) on A's br0, guest vm2 (10.42.0.2) on B's br0.
#   A's vx0 has two remotes (K and B): floods go to both, unicast only to the one the MAC was
#   learned from. Each vswitchd runs in its own network namespace (ip netns exec).
#
# Pass:
#   (a) vm1 pings 10.42.0.100 behind the kernel's vxlan device; nsK pings vm1 back; the kernel's
#       vxlan FDB has vm1's MAC at A's address and A's FDB has vx42's MAC on vx0.
#   (b) vm2 (behind vswitchd B) pings vm1 (behind vswitchd A) with 1400-byte pings (guest MTU
#       1450 = veth MTU 1500 - 50); both tunnel ports count traffic.
#   (c) tshark, capturing both of A's underlay links, decodes UDP 4789 as VXLAN with VNI 42 and
#       the inner ICMP echo requests and replies of both conversations.
#   Also: with a kernel vxlan device holding UDP 4789 in nsB, add-port fails with a clear error
#   and creates nothing; `show` lists the tunnel's remotes, VNI and UDP port.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_tool tshark tshark
e2e_require_binaries
e2e_require_guest

NSA=vswA$$ NSB=vswB$$ NSK=vswK$$
netns_add "$NSA" "$NSB" "$NSK"

# underlay: two veth pairs from nsA
ip link add vak$$ netns "$NSA" type veth peer name vka$$ netns "$NSK"
ip link add vab$$ netns "$NSA" type veth peer name vba$$ netns "$NSB"
ip -n "$NSA" addr add 192.0.2.1/24 dev vak$$
ip -n "$NSK" addr add 192.0.2.2/24 dev vka$$
ip -n "$NSA" addr add 198.51.100.1/24 dev vab$$
ip -n "$NSB" addr add 198.51.100.2/24 dev vba$$
for l in "$NSA vak$$" "$NSK vka$$" "$NSA vab$$" "$NSB vba$$"; do
    read -r n d <<<"$l"
    ip -n "$n" link set "$d" up
done

# the kernel's VTEP in nsK (its default UDP port is 8472: say 4789)
ip -n "$NSK" link add vx42 type vxlan id 42 remote 192.0.2.1 local 192.0.2.2 dstport 4789 dev vka$$ ||
    e2e_missing "kernel vxlan support" "a kernel with the vxlan module"
ip -n "$NSK" addr add 10.42.0.100/24 dev vx42
ip -n "$NSK" link set vx42 up
K_MAC=$(ip netns exec "$NSK" cat /sys/class/net/vx42/address)
e2e_msg "namespaces $NSA $NSB $NSK; kernel vx42 mtu $(ip netns exec "$NSK" cat /sys/class/net/vx42/mtu) mac $K_MAC"

# vswitchd A in nsA (lib.sh's daemon), vswitchd B in nsB
vswitchd_start_in_netns "$NSA"
vswitchd_other "$NSB" b
vswb() { vsw_at b "$@"; }

# A: vm1 and a tunnel to the kernel and to B
vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
# no --local: A has two underlay addresses, and replies must come from the one each remote knows
vsw_ok add-port br0 vx0 --type vxlan --remote 192.0.2.2,198.51.100.2 --vni 42 >/dev/null

# B: a kernel vxlan device already holds UDP 4789 in nsB: refused, nothing created
vswb add-br br0 >/dev/null || e2e_fail "B: add-br failed"
ip -n "$NSB" link add vxsquat type vxlan id 7 dstport 4789 dev vba$$
ip -n "$NSB" link set vxsquat up
rc=0
err=$(vswb add-port br0 vx0 --type vxlan --remote 198.51.100.1 --vni 42 2>&1) || rc=$?
((rc == 1)) || e2e_fail "add-port on a busy UDP port: exit $rc, expected 1 ($err)"
grep -q "already in use by another program" <<<"$err" || e2e_fail "unclear error for a busy UDP port: $err"
e2e_msg "busy UDP port refused: $err"
grep -q "Port vx0" <<<"$(vswb show)" && e2e_fail "a refused tunnel port was created anyway"
rc=0
err=$(vswb add-port br0 vx0 --type vxlan --remote no-such-host.invalid --vni 42 2>&1) || rc=$?
((rc == 1)) && grep -q "cannot resolve remote" <<<"$err" || e2e_fail "unresolvable remote: exit $rc: $err"
ip -n "$NSB" link del vxsquat
vswb add-port br0 vx0 --type vxlan --remote 198.51.100.1 --vni 42 --local 198.51.100.2 --dst-port 4789 >/dev/null ||
    e2e_fail "B: add-port vx0 failed"
vswb add-port br0 vm2 --type vhostuserclient --path "$E2E_TMP/vm2.sock" >/dev/null || e2e_fail "B: add-port vm2 failed"

show=$(vsw show)
printf '%s\n' "$show" >>"$E2E_LOG_DIR/snapshots.log"
for want in "type: *vxlan" "remote: *192.0.2.2,198.51.100.2" "vni: *42" "dst_port: *4789" "local: *0.0.0.0" "mtu: *1450"; do
    grep -Eq "$want" <<<"$show" || e2e_fail "vswitch show lacks '$want':
$show"
done

# (c) capture A's underlay while the guests talk
CAP=$E2E_TMP/underlay.pcapng
ip netns exec "$NSA" tshark -q -i vak$$ -i vab$$ -f "udp port 4789" -w "$CAP" >"$E2E_LOG_DIR/tshark.log" 2>&1 &
TSHARK_PID=$!
E2E_PIDS+=("$TSHARK_PID")
vsw_wait_log "$E2E_LOG_DIR/tshark.log" "Capturing on" 20 "$TSHARK_PID" || e2e_fail "tshark did not start (see tshark.log)"

GUEST_MTU=1450 GUEST_WAIT_PEER=10.42.0.100 \
    e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.42.0.1/24 "ping -c 5 -s 1000 10.42.0.100"
GUEST_MTU=1450 GUEST_WAIT_PEER=10.42.0.1 \
    e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" server 10.42.0.2/24 "ping -c 5 -s 1400 10.42.0.1"
e2e_wait_up vm1
e2e_wait_up vm2
e2e_ping_check vm1 1          # (a) guest -> kernel vxlan
e2e_ping_check vm2 1          # (b) guest behind B -> guest behind A

# (a) the namespace pings back
out=$(ip netns exec "$NSK" ping -c 3 -W 2 10.42.0.1 2>&1) || e2e_fail "nsK cannot ping vm1 through the tunnel: $out"
e2e_msg "nsK -> vm1: $(grep -E 'packets transmitted' <<<"$out")"
kfdb=$(bridge -n "$NSK" fdb show dev vx42 2>/dev/null || true)
grep -qi "52:54:00:00:00:01 dst 192.0.2.1" <<<"$kfdb" || e2e_fail "the kernel did not learn vm1 behind 192.0.2.1: $kfdb"

sleep 1
vsw_kill_pid "$TSHARK_PID" 10     # tshark closes the capture file on SIGTERM
e2e_snapshot "after pings" br0
{ echo "### B: show"; vswb show; echo "### B: fdb"; vswb fdb show br0; echo "### B: stats"; vswb port stats br0; } \
    >>"$E2E_LOG_DIR/snapshots.log" 2>&1
e2e_check_daemon
kill -0 "${OTHER_PID[b]}" 2>/dev/null || e2e_fail "vswitchd B died (see vswitchd-b.log)"

expect_fdb_has br0 52:54:00:00:00:01 52:54:00:00:00:02 "$K_MAC"
grep -qi "^$K_MAC vx0 " <<<"$(fdb_macs br0)" || e2e_fail "vx42's MAC is not on vx0: $(fdb_macs br0 | tr '\n' ';')"
grep -qi "^52:54:00:00:00:02 vx0 " <<<"$(fdb_macs br0)" || e2e_fail "vm2's MAC is not on vx0"
expect_traffic br0 vm1 vx0
bstats=$(vswb port stats br0 vx0) || e2e_fail "B: port stats failed"
grep -Eq "tx packets: +[1-9]" <<<"$bstats" && grep -Eq "rx packets: +[1-9]" <<<"$bstats" ||
    e2e_fail "B's tunnel port counted no traffic: $bstats"
grep -q "rx dropped, other VNI" <<<"$bstats" || e2e_fail "tunnel drop counters missing from port stats: $bstats"

# (c) what tshark saw: VXLAN VNI 42 around ICMP echo requests and replies, both conversations
decoded=$(tshark -r "$CAP" -d udp.port==4789,vxlan -Y "vxlan && icmp" \
    -T fields -e vxlan.vni -e ip.src -e ip.dst -e icmp.type 2>>"$E2E_LOG_DIR/tshark.log" |
    awk '{ print $1, $2, $3, $4 }' | sort | uniq -c) || e2e_fail "tshark could not read the capture"
printf '%s\n' "$decoded" >"$E2E_LOG_DIR/tshark-decoded.txt"
e2e_msg "tshark: $(tshark -r "$CAP" 2>/dev/null | wc -l) frames captured; VXLAN+ICMP by (vni, outer src, outer dst, inner src, inner dst, type):"
printf '%s\n' "$decoded"
# ip.src/ip.dst list the outer and the inner addresses (comma-separated): check both.
for want in "42 192.0.2.1,10.42.0.1 192.0.2.2,10.42.0.100 8" "42 192.0.2.2,10.42.0.100 192.0.2.1,10.42.0.1 0" \
    "42 198.51.100.1,10.42.0.1 198.51.100.2,10.42.0.2 0" "42 198.51.100.2,10.42.0.2 198.51.100.1,10.42.0.1 8"; do
    grep -q " $want\$" <<<"$decoded" || e2e_fail "tshark found no VXLAN frame '$want' (vni outer,inner src outer,inner dst icmp-type)"
done
# learned unicast: vm1's pings to the kernel's host never went to B
if grep -q "198.51.100.2,10.42.0.100" <<<"$decoded"; then
    e2e_fail "unicast to 10.42.0.100 (learned behind 192.0.2.2) was also sent to 198.51.100.2"
fi
e2e_pass
