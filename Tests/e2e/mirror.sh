#!/usr/bin/env bash
# Port mirrors (issue 16). vm1 pings vm2 and vm3 pings vm2, on one bridge.
#   1. mirror m0 --select-src vm1 --select-dst vm1 --output mon (a TAP port): tcpdump on the TAP
#      sees every ICMP frame between vm1 and vm2 exactly once, and none of vm3's; the TAP gets no
#      floods (no ARP of vm3).
#   2. mirror m1 --select-src vm1 --output g4 (a guest port): the switch delivers to g4 exactly as
#      many frames as it received from vm1 meanwhile (the monitor guest's rx = vm1's tx).
#   3. vswitchd killed and started again: the mirror comes back from the configuration file.
# Also: bad mirrors are refused with the reason, shown with their counters, and a mirror's
# port cannot be deleted.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_tool tcpdump tcpdump
e2e_require_guest
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"
TAP="vsm$$"
COUNT=${E2E_MIRROR_PINGS:-20}

vswitchd_start
vsw_ok add-br br0 >/dev/null
for v in vm1 vm2 vm3 g4; do vsw_ok add-port br0 "$v" --type vhostuserclient --path "$E2E_TMP/$v.sock" >/dev/null; done
vsw_ok add-port br0 mon --type tap --ifname "$TAP" >/dev/null
sysctl -qw "net.ipv6.conf.$TAP.disable_ipv6=1" 2>/dev/null || true   # the kernel's own frames are dropped anyway
vsw_ok add-mirror br0 m0 --select-src vm1 --select-dst vm1 --output mon >/dev/null

# Refusals with a clear reason.
vsw_expect_refused "output selected by its own mirror" "cannot be one of the ports it selects" add-mirror br0 m9 --select-src mon --output mon
vsw_expect_refused "two mirrors, one output" "already the output of mirror m0" add-mirror br0 m9 --select-all --output mon
vsw_expect_refused "unknown port" "no port named vm9" add-mirror br0 m9 --select-src vm9 --output vm3
vsw_expect_refused "deleting a mirrored port" "used by mirror m0" del-port br0 vm1

tcpdump -i "$TAP" -nn -U -w "$E2E_TMP/mon.pcap" icmp or arp >/dev/null 2>"$E2E_LOG_DIR/tcpdump.log" &
E2E_PIDS+=("$!")
sleep 1
e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" server 10.0.0.2/24 ""
GUEST_WAIT_PEER=10.0.0.2 e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.0.1/24 "ping -c $COUNT -i 0.2 10.0.0.2"
GUEST_WAIT_PEER=10.0.0.2 e2e_boot vm3 52:54:00:00:00:03 "$E2E_TMP/vm3.sock" server 10.0.0.3/24 "ping -c $COUNT -i 0.2 10.0.0.2"
e2e_boot g4 52:54:00:00:00:04 "$E2E_TMP/g4.sock" server "" ""
for v in vm1 vm2 vm3 g4; do e2e_wait_up "$v"; done
e2e_ping_check vm1 0
e2e_ping_check vm3 0
sleep 1
count() { tcpdump -nn -r "$E2E_TMP/mon.pcap" "$@" 2>/dev/null | wc -l; }
# vm1's pings (the boot-time reachability check included): each request and each reply
# exactly once, identified by ICMP id and sequence number.
echoes() {
    tcpdump -nn -r "$E2E_TMP/mon.pcap" "$1" 2>/dev/null | grep -o 'id [0-9]*, seq [0-9]*' | sort | uniq -c |
        awk '{n++; if ($1 != 1) dup++} END {print n + 0, dup + 0}'
}
read -r req req_dup < <(echoes 'icmp[icmptype] == icmp-echo and src host 10.0.0.1 and dst host 10.0.0.2')
read -r rep rep_dup < <(echoes 'icmp[icmptype] == icmp-echoreply and src host 10.0.0.2 and dst host 10.0.0.1')
vm3=$(count icmp and host 10.0.0.3)
e2e_msg "tcpdump on the mirror's TAP: vm1 -> vm2 echo requests $req ($req_dup seen twice), replies $rep ($rep_dup twice), ICMP frames of vm3: $vm3"
((req >= COUNT && rep == req && req_dup == 0 && rep_dup == 0)) ||
    e2e_fail "expected each of vm1's $COUNT+ echo requests and replies exactly once: requests $req ($req_dup twice), replies $rep ($rep_dup twice)"
((vm3 == 0)) || e2e_fail "$vm3 ICMP frames of vm3 (not selected) reached the mirror"
vsw show | grep -A3 "Mirror m0" | tee -a "$E2E_LOG_DIR/show.txt"
mirrored=$(vsw show --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bridges"][0]["mirrors"][0]["mirrored"])')
((mirrored >= 2 * COUNT)) || e2e_fail "mirror m0 counted $mirrored copies, expected at least $((2 * COUNT))"

# 2. A guest as the monitor: it gets a copy of every frame vm1 sends.
vsw_ok del-mirror br0 m0 >/dev/null
vsw_ok add-mirror br0 m1 --select-src vm1 --output g4 >/dev/null
rx0=$(port_counter br0 vm1 rx) tx0=$(port_counter br0 g4 tx)
guest_kill vm1
GUEST_WAIT_PEER=10.0.0.2 e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.0.1/24 "ping -c $COUNT -i 0.2 10.0.0.2"
e2e_wait_up vm1
e2e_ping_check vm1 0
sleep 1
rx1=$(port_counter br0 vm1 rx) tx1=$(port_counter br0 g4 tx)
e2e_msg "vm1 sent $((rx1 - rx0)) frames into the bridge; the monitor guest g4 was given $((tx1 - tx0))"
((rx1 - rx0 >= 2 * COUNT / 2)) || e2e_fail "vm1 sent only $((rx1 - rx0)) frames"
# A copy the monitor had no buffer for is dropped and counted (the mirror never waits):
# every frame is either delivered to g4 or in the mirror's dropped count, and drops are rare.
lost=$(vsw show --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bridges"][0]["mirrors"][0]["dropped"])')
((tx1 - tx0 + lost == rx1 - rx0)) || e2e_fail "g4 got $((tx1 - tx0)) copies of vm1's $((rx1 - rx0)) frames, $lost dropped"
((lost * 10 <= rx1 - rx0)) || e2e_fail "the mirror dropped $lost of $((rx1 - rx0)) copies"
e2e_snapshot "after the mirrors"

# 3. The mirror is in the configuration file: vswitchd killed and started again restores it.
kill -9 "$VSWITCHD_PID"
wait "$VSWITCHD_PID" 2>/dev/null || true
VSWITCHD_PID=""
vswitchd_start
vsw show | grep -A2 "Mirror m1" | grep -q "output: g4" || e2e_fail "mirror m1 not restored after a restart: $(vsw show)"
e2e_msg "mirror m1 restored from the configuration file after kill -9"
e2e_pass
