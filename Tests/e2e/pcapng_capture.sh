#!/usr/bin/env bash
# pcapng captures that name each frame's port and direction. Two QEMU guests ping each other
# through br0 while three pcapng pcap ports record: the whole bridge (each frame once, on its
# ingress port), the whole bridge with --direction both (each frame in, and each copy out), a
# rotating file (8 KiB x 3); and `vswitch capture br0 --format pcapng --direction both -c 20`
# streams live. A port added after the captures started gets its interface block. Then:
# tshark shows the port names (frame.interface_name) and directions
# (frame.packet_flags_direction), capinfos and tcpdump (libpcap) read every file, each echo
# request vm1 sent is vm1/inbound and vm2/outbound in the "both" file, del-port ends the
# file with statistics blocks, and the format survives a restart of vswitchd.
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
e2e_require_tool tshark tshark
e2e_require_tool capinfos tshark
e2e_require_tool tcpdump tcpdump
vswitchd_start

CAP="$E2E_TMP/cap"
mkdir -p "$CAP"
COUNT=8
vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
vsw_ok add-port br0 vm2 --type vhostuserclient --path "$E2E_TMP/vm2.sock" >/dev/null
vsw_ok add-port br0 ng --type pcap --format pcapng --file "$CAP/all.pcapng" >/dev/null
vsw_ok add-port br0 ngboth --type pcap --format pcapng --direction both --file "$CAP/both.pcapng" >/dev/null
vsw_ok add-port br0 ngrot --type pcap --format pcapng --file "$CAP/rot.pcapng" --rotate-size 8k --rotate-count 3 >/dev/null
out=$(vsw add-port br0 bad --type pcap --format pcapng --file "$E2E_TMP/no-such-dir/x.pcapng" 2>&1) &&
    e2e_fail "a pcapng port in a missing directory was accepted"
grep -q "No such file" <<<"$out" || e2e_fail "unclear error for a missing directory: $out"
out=$(vsw add-port br0 bad --type tap --ifname x0 --format pcapng 2>&1) && e2e_fail "--format pcapng on a TAP port was accepted"
e2e_msg "refused as expected: $out"

vsw capture br0 --format pcapng --direction both -c 20 -w "$CAP/live.pcapng" 2>"$E2E_LOG_DIR/live.err" &
LIVE_PID=$!
E2E_PIDS+=("$LIVE_PID")

GUEST_WAIT_PEER=10.0.0.1 e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" server 10.0.0.2/24 "ping -c $COUNT -s 1400 10.0.0.1"
GUEST_WAIT_PEER=10.0.0.2 e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.0.1/24 "ping -c $COUNT -s 1400 10.0.0.2"
e2e_wait_up vm1
e2e_wait_up vm2
e2e_ping_check vm1 1
e2e_ping_check vm2 1
# A port that joins after the captures started: its interface block comes with the next batch.
vsw_ok add-port br0 vm3 --type vhostuserclient --path "$E2E_TMP/vm3.sock" >/dev/null
sleep 2
e2e_snapshot "after ping"

tshark_errors() { grep -v 'Running as user "root"' "$1" || true; }
# fields FILE [FILTER]: "interface<TAB>direction" of each frame (tshark, Wireshark's view).
fields() {
    tshark -r "$1" ${2:+-Y "$2"} -T fields -e frame.interface_name -e frame.packet_flags_direction \
        2>"$E2E_LOG_DIR/tshark.err"
    [[ -z $(tshark_errors "$E2E_LOG_DIR/tshark.err") ]] || e2e_fail "tshark -r $1: $(cat "$E2E_LOG_DIR/tshark.err")"
}

# 1. Live capture: 20 frames, in and out, on named interfaces.
for _ in $(seq 1 100); do kill -0 "$LIVE_PID" 2>/dev/null || break; sleep 0.2; done
kill -0 "$LIVE_PID" 2>/dev/null && e2e_fail "vswitch capture --format pcapng -c 20 did not end"
wait "$LIVE_PID" || e2e_fail "vswitch capture --format pcapng failed: $(cat "$E2E_LOG_DIR/live.err")"
live=$(fields "$CAP/live.pcapng")
[[ $(wc -l <<<"$live") == 20 ]] || e2e_fail "live.pcapng: $(wc -l <<<"$live") frames, expected 20"
grep -q $'^vm[12]\t0x00000001$' <<<"$live" || e2e_fail "live.pcapng: no inbound frame on vm1/vm2: $live"
grep -q $'^vm[12]\t0x00000002$' <<<"$live" || e2e_fail "live.pcapng: no outbound frame on vm1/vm2: $live"
e2e_msg "live.pcapng (tshark -T fields -e frame.interface_name -e frame.packet_flags_direction):"
sort <<<"$live" | uniq -c | sed 's/^/    /'

# 2. The default bridge capture: each frame once, inbound, on the port it entered by.
all=$(fields "$CAP/all.pcapng")
[[ -n $all ]] || e2e_fail "all.pcapng has no frames"
bad=$(grep -v $'^vm[12]\t0x00000001$' <<<"$all" || true)
[[ -z $bad ]] || e2e_fail "all.pcapng: frames not inbound on vm1/vm2: $(head -3 <<<"$bad")"
req1=$(fields "$CAP/all.pcapng" "icmp.type == 8 && eth.src == 52:54:00:00:00:01" | sort | uniq -c)
e2e_msg "all.pcapng: $(wc -l <<<"$all") frames, all inbound; vm1's echo requests: $req1"
grep -q $'vm1\t0x00000001' <<<"$req1" || e2e_fail "all.pcapng: vm1's echo requests are not on vm1: $req1"

# 3. --direction both: vm1's echo requests once in (vm1) and once out (vm2).
in1=$(fields "$CAP/both.pcapng" "icmp.type == 8 && eth.src == 52:54:00:00:00:01" | grep -c $'^vm1\t0x00000001$' || true)
out2=$(fields "$CAP/both.pcapng" "icmp.type == 8 && eth.src == 52:54:00:00:00:01" | grep -c $'^vm2\t0x00000002$' || true)
e2e_msg "both.pcapng: vm1's echo requests: $in1 in on vm1, $out2 out on vm2"
((in1 >= COUNT && in1 == out2)) || e2e_fail "both.pcapng: $in1 requests in on vm1 but $out2 out on vm2"
arp=$(fields "$CAP/both.pcapng" "arp && eth.dst == ff:ff:ff:ff:ff:ff" | sort | uniq -c)
e2e_msg "both.pcapng: broadcast ARP: $(tr '\n' ';' <<<"$arp")"

# 4. Rotation: 3 complete files, each starting with every interface, read by tshark and libpcap.
for f in rot.pcapng rot.pcapng.1 rot.pcapng.2; do
    [[ -s $CAP/$f ]] || e2e_fail "rotation: $f missing ($(ls "$CAP" | tr '\n' ' '))"
    n=$(fields "$CAP/$f" | wc -l)
    ((n > 0)) || e2e_fail "tshark read no frames from $f"
    python3 "$E2E_DIR/pcapng_blocks.py" "$CAP/$f" >"$E2E_LOG_DIR/$f.blocks" || e2e_fail "$f is malformed"
    [[ $(sed -n 2p "$E2E_LOG_DIR/$f.blocks") == "IDB vm1 vhostuserclient $E2E_TMP/vm1.sock" ]] ||
        e2e_fail "$f does not start with vm1's interface block"
    e2e_msg "tshark -r $f: $n frames"
done
[[ ! -e $CAP/rot.pcapng.3 ]] || e2e_fail "rotation kept more than 3 files"

# 5. del-port: the file ends with statistics; capinfos and tcpdump (libpcap) read it.
vsw_ok del-port br0 ng >/dev/null
python3 "$E2E_DIR/pcapng_blocks.py" "$CAP/all.pcapng" >"$E2E_LOG_DIR/all.blocks" || e2e_fail "all.pcapng is malformed"
tail -1 "$E2E_LOG_DIR/all.blocks" | grep -q '^ISB' || e2e_fail "all.pcapng does not end with statistics"
e2e_msg "statistics: $(grep ISB "$E2E_LOG_DIR/all.blocks" | tr '\n' ';')"
# The late port's interface block is there.
grep -q "^IDB vm3 vhostuserclient $E2E_TMP/vm3.sock$" "$E2E_LOG_DIR/all.blocks" ||
    e2e_fail "no interface block for vm3 (added during the capture): $(grep IDB "$E2E_LOG_DIR/all.blocks" | tr '\n' ';')"
e2e_msg "interfaces: $(grep IDB "$E2E_LOG_DIR/all.blocks" | tr '\n' ';')"

capinfos "$CAP/all.pcapng" >"$E2E_LOG_DIR/capinfos.txt" 2>&1 || e2e_fail "capinfos: $(cat "$E2E_LOG_DIR/capinfos.txt")"
grep -q "File type:.*pcapng" "$E2E_LOG_DIR/capinfos.txt" || e2e_fail "capinfos: $(cat "$E2E_LOG_DIR/capinfos.txt")"
grep -q "Number of interfaces in file: 3" "$E2E_LOG_DIR/capinfos.txt" || e2e_fail "capinfos: $(cat "$E2E_LOG_DIR/capinfos.txt")"
n=$(tcpdump -nr "$CAP/all.pcapng" 2>/dev/null | wc -l)
t=$(fields "$CAP/all.pcapng" | wc -l)
((n == t)) || e2e_fail "tcpdump (libpcap) read $n frames of all.pcapng, tshark $t"
e2e_msg "capinfos: $(grep -E 'File type|Number of packets|interfaces in file' "$E2E_LOG_DIR/capinfos.txt" | tr -s ' ' | tr '\n' ';')"

# 6. The format survives a restart.
kill -TERM "$VSWITCHD_PID"; wait "$VSWITCHD_PID" || true; VSWITCHD_PID=""
vswitchd_start
fmt=$(vsw show --format json | python3 -c 'import json,sys; print([p for b in json.load(sys.stdin)["bridges"] for p in b["ports"] if p["name"]=="ngboth"][0]["options"].get("format"))')
[[ $fmt == pcapng ]] || e2e_fail "after a restart ngboth has format '$fmt'"
e2e_msg "after a restart ngboth is still pcapng"
e2e_pass
