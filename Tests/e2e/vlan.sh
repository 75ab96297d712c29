#!/usr/bin/env bash
# VLANs: two QEMU guests on access ports (VLAN 10 and 20) and a TAP trunk port (10,20). Behind
# the trunk, a responder (vlan_host.py) plays 10.0.10.9 on VLAN 10 and 10.0.20.9 on VLAN 20 and
# answers only frames tagged with the right VLAN. Each guest pings its VLAN's host; vm1 cannot
# reach vm2's 10.0.10.2 (same subnet, other VLAN); tcpdump on the trunk sees frames tagged 10
# and 20 and no untagged guest frame.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool tcpdump tcpdump
e2e_require_guest
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"

TAP="vsv$$"
vswitchd_start
vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" --vlan-mode access --tag 10 >/dev/null
vsw_ok add-port br0 vm2 --type vhostuserclient --path "$E2E_TMP/vm2.sock" --vlan-mode access --tag 20 >/dev/null
vsw_ok add-port br0 trunk --type tap --ifname "$TAP" --vlan-mode trunk --trunks 10,20 >/dev/null
shown=$(vsw show)
grep -q "vlan: *trunk 10,20" <<<"$shown" || e2e_fail "show does not give the trunk policy: $shown"

# The trunk's far side: two hosts, 10.0.10.9 on VLAN 10 and 10.0.20.9 on VLAN 20, answered
# by a small responder on an AF_PACKET socket (no kernel 8021q module needed), and tcpdump.
ip link set "$TAP" up
python3 "$E2E_DIR/vlan_host.py" "$TAP" 10:10.0.10.9 20:10.0.20.9 >"$E2E_LOG_DIR/vlan_host.log" 2>&1 &
E2E_PIDS+=($!)
tcpdump -i "$TAP" -e -nn -w "$E2E_TMP/trunk.pcap" >/dev/null 2>"$E2E_LOG_DIR/tcpdump.log" &
TCPDUMP_PID=$!
E2E_PIDS+=($TCPDUMP_PID)

# vm2 sits on VLAN 20 but also holds 10.0.10.2, an address of VLAN 10's subnet.
GUEST_WAIT_PEER=10.0.10.9 e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.10.1/24 \
    "ping -c 3 -W 1 10.0.10.2 >/dev/null && echo VLAN-LEAK; ping -c 5 10.0.10.9"
e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" server 10.0.10.2/24 \
    "ip addr add 10.0.20.2/24 dev eth0; i=0; while [ \$i -lt 60 ] && ! ping -c 1 -W 1 10.0.20.9 >/dev/null; do i=\$((i+1)); done; ping -c 5 10.0.20.9"
e2e_wait_up vm1
e2e_wait_up vm2
e2e_ping_check vm1 1
e2e_ping_check vm2 1

grep -q VLAN-LEAK <<<"$(guest_cmd_output vm1)" && e2e_fail "VLAN leak: vm1 (VLAN 10) reached vm2's 10.0.10.2 (VLAN 20)"
e2e_msg "vm1 (VLAN 10) -> 10.0.10.2 (vm2, VLAN 20): unreachable, as it must be"
grep -q "VLAN 10 icmp 10.0.10.1 -> 10.0.10.9" "$E2E_LOG_DIR/vlan_host.log" || e2e_fail "no VLAN-10 echo from vm1 on the trunk"
grep -q "VLAN 20 icmp 10.0.20.2 -> 10.0.20.9" "$E2E_LOG_DIR/vlan_host.log" || e2e_fail "no VLAN-20 echo from vm2 on the trunk"
grep -Eq "VLAN (10|20) .* 10.0.10.2 " "$E2E_LOG_DIR/vlan_host.log" && e2e_fail "the trunk saw vm2 in VLAN 10's subnet"
e2e_msg "trunk side: $(sort "$E2E_LOG_DIR/vlan_host.log" | uniq -c | tr '\n' ';')"

kill "$TCPDUMP_PID" 2>/dev/null; sleep 1
tags=$(tcpdump -nn -e -r "$E2E_TMP/trunk.pcap" 2>/dev/null | grep -o 'vlan [0-9]*' | sort | uniq -c | tr '\n' ' ')
e2e_msg "tagged frames on the trunk (tcpdump): $tags"
grep -q 'vlan 10' <<<"$tags" && grep -q 'vlan 20' <<<"$tags" || e2e_fail "the trunk did not carry both VLANs tagged: $tags"
untagged=$(tcpdump -nn -e -r "$E2E_TMP/trunk.pcap" 'not vlan' 2>/dev/null | grep -c 52:54:00 || true)
((untagged == 0)) || e2e_fail "$untagged untagged guest frames on the trunk"
e2e_snapshot "end"
fdb=$(fdb_macs br0)   # not piped into grep -q: an early exit would break the pipe
grep -qi '^52:54:00:00:00:01 vm1 10$' <<<"$fdb" || e2e_fail "vm1 not learned in VLAN 10: $(tr '\n' ';' <<<"$fdb")"
grep -qi '^52:54:00:00:00:02 vm2 20$' <<<"$fdb" || e2e_fail "vm2 not learned in VLAN 20: $(tr '\n' ';' <<<"$fdb")"
e2e_pass
