#!/usr/bin/env bash
# Geneve tunnel ports (RFC 8926) against the Linux kernel's geneve device.
#
#   nsA (vswitchd A) 192.0.2.1 ---veth--- 192.0.2.2 nsK: kernel gnv42 (VNI 42, UDP 6081), 10.42.0.100
#   A's br0: gn0 (--type geneve --remote 192.0.2.2 --vni 42) and a TAP port (10.42.0.1, in nsA).
#   A kernel built without geneve (`ip link add type geneve`: "Unknown device type"): nsK runs
#   vswitchd B instead (a geneve port to 192.0.2.1 and a TAP port with 10.42.0.100), and
#   tshark's Geneve dissector is the independent check of the wire format; the test says so.
#
# Pass: nsA pings 10.42.0.100 and nsK pings 10.42.0.1 back (at least 9 of 10 each way, 1000
# bytes); tshark on A's underlay decodes UDP 6081 as Geneve version 0, VNI 42, protocol
# 0x6558, with the inner ICMP; A's `show` lists the port on UDP 6081; with the kernel, its FDB
# has A's TAP MAC; a datagram with a critical option is dropped and counted
# (rxDropCriticalOption); --group with --type geneve is refused.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_tool ping iputils-ping
e2e_require_tool bridge iproute2
e2e_require_tool tshark tshark
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"

NSA=vswGA$$ NSK=vswGK$$
netns_add "$NSA" "$NSK"
ip link add vgk$$ netns "$NSA" type veth peer name vkg$$ netns "$NSK"
ip -n "$NSA" addr add 192.0.2.1/24 dev vgk$$
ip -n "$NSK" addr add 192.0.2.2/24 dev vkg$$
ip -n "$NSA" link set vgk$$ up
ip -n "$NSK" link set vkg$$ up
KERNEL=1
if ip -n "$NSK" link add gnv42 type geneve id 42 remote 192.0.2.1 2>"$E2E_TMP/geneve.err"; then
    ip -n "$NSK" addr add 10.42.0.100/24 dev gnv42
    ip -n "$NSK" link set gnv42 mtu 1450 up
else
    KERNEL=0
    e2e_msg "this kernel has no geneve device ($(cat "$E2E_TMP/geneve.err")): the far side is vswitchd B in $NSK, tshark checks the wire format"
fi

vswitchd_start_in_netns "$NSA"
if ((!KERNEL)); then
    vswitchd_other "$NSK" b
    vswb() { vsw_at b "$@"; }
    vswb add-br br0 >/dev/null && vswb add-port br0 gn0 --type geneve --remote 192.0.2.1 --vni 42 >/dev/null &&
        vswb add-port br0 tap0 --type tap --ifname vtk$$ >/dev/null || e2e_fail "B: setting up br0 failed"
    ip -n "$NSK" addr add 10.42.0.100/24 dev vtk$$
    ip -n "$NSK" link set vtk$$ mtu 1450 up
fi
vsw_ok add-br br0 >/dev/null
vsw_expect_refused "--group with geneve" "--group applies to --type vxlan only" \
    add-port br0 gn0 --type geneve --group 239.1.1.1 --vni 42
vsw_ok add-port br0 gn0 --type geneve --remote 192.0.2.2 --vni 42 >/dev/null
vsw_ok add-port br0 tap0 --type tap --ifname vtg$$ >/dev/null
ip -n "$NSA" addr add 10.42.0.1/24 dev vtg$$
ip -n "$NSA" link set vtg$$ mtu 1450 up

CAP=$E2E_TMP/underlay.pcapng
ip netns exec "$NSA" tshark -q -i vgk$$ -f "udp port 6081" -w "$CAP" >"$E2E_LOG_DIR/tshark.log" 2>&1 &
TSHARK_PID=$!
E2E_PIDS+=("$TSHARK_PID")
vsw_wait_log "$E2E_LOG_DIR/tshark.log" "Capturing on" 20 "$TSHARK_PID" || e2e_fail "tshark did not start (see tshark.log)"
for l in "$NSA 10.42.0.1 10.42.0.100" "$NSK 10.42.0.100 10.42.0.1"; do
    read -r n from to <<<"$l"
    out=$(ip netns exec "$n" ping -c 10 -i 0.2 -W 2 -s 1000 "$to" 2>&1) || true
    got=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
    e2e_msg "$from -> $to over Geneve: ${got:-0} of 10 replies"
    ((${got:-0} >= 9)) || e2e_fail "$from -> $to: only ${got:-0} of 10 replies: $out"
done

sleep 1
kill "$TSHARK_PID" 2>/dev/null
wait "$TSHARK_PID" 2>/dev/null
decoded=$(tshark -r "$CAP" -Y "geneve && icmp" -T fields -e geneve.version -e geneve.vni -e geneve.proto_type -e icmp.type 2>/dev/null |
    sort | uniq -c)
e2e_msg "tshark: $(tr '\n' ';' <<<"$decoded")"
grep -Eq "0[[:space:]]+0x0*2a[[:space:]]+0x6558[[:space:]]+8$|0[[:space:]]+42[[:space:]]+0x6558[[:space:]]+8$" <<<"$decoded" ||
    e2e_fail "tshark did not decode Geneve (version 0, VNI 42, 0x6558) echo requests: $decoded"
grep -Eq "0[[:space:]]+(0x0*2a|42)[[:space:]]+0x6558[[:space:]]+0$" <<<"$decoded" ||
    e2e_fail "tshark did not decode Geneve echo replies: $decoded"
show=$(vsw show)
printf '%s\n' "$show" >>"$E2E_LOG_DIR/snapshots.log"
for want in "type: *geneve" "dst_port: *6081" "vni: *42" "remote: *192.0.2.2"; do
    grep -Eq "$want" <<<"$show" || e2e_fail "vswitch show lacks '$want':
$show"
done
a_mac=$(ip netns exec "$NSA" cat /sys/class/net/vtg$$/address)
if ((KERNEL)); then
    grep -q "$a_mac" <<<"$(bridge -n "$NSK" fdb show dev gnv42)" || e2e_fail "the kernel's geneve FDB lacks A's TAP $a_mac"
fi

# A datagram with a critical option, from the remote's address: dropped and counted.
ip netns exec "$NSK" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.2", 0))
frame = bytes.fromhex("ffffffffffff02000000000108060001") + bytes(44)
s.sendto(bytes([2, 0x40, 0x65, 0x58, 0, 0, 42, 0, 1, 2, 0x83, 1, 0, 0, 0, 0]) + frame, ("192.0.2.1", 6081))'
sleep 0.5
crit=$(vsw port stats br0 gn0 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"][0].get("rxDropCriticalOption", 0))')
((crit == 1)) || e2e_fail "a critical option was not counted (rxDropCriticalOption $crit)"
e2e_msg "critical option dropped and counted (rxDropCriticalOption $crit)"
((KERNEL)) || e2e_msg "NOTE: not run against the kernel's geneve device (this kernel has none)"
e2e_pass
