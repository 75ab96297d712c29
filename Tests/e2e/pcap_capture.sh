#!/usr/bin/env bash
# pcap ports and live capture, read by tcpdump and tshark. Two QEMU guests ping each other
# through br0 while four pcap ports record: the whole bridge (an 8 MiB ring, its writer
# pinned to CPU 0), an ICMP-only filter, a rotating file (8 KiB x 3 files), and vm1's
# transmitted frames cut to 64 bytes. A live capture
# `vswitch capture br0 -c 5 -w - | tcpdump -nr -` runs at the same time. Then: every echo
# request and reply sent is in the files, the filter kept only ICMP, the rotated files open in
# tshark, the live capture showed exactly 5 frames, a Ctrl-C'd capture is dropped by the
# daemon, bad options are refused without creating anything, and del-port leaves a complete file.
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
e2e_require_tool tcpdump tcpdump
e2e_require_tool tshark tshark
vswitchd_start

CAP="$E2E_TMP/cap"
mkdir -p "$CAP"
COUNT=10
vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
vsw_ok add-port br0 vm2 --type vhostuserclient --path "$E2E_TMP/vm2.sock" >/dev/null
vsw_ok add-port br0 cap --type pcap --file "$CAP/all.pcap" --buffer-size 8M --capture-cpu 0 >/dev/null
vsw_ok add-port br0 capicmp --type pcap --file "$CAP/icmp.pcap" --filter icmp >/dev/null
vsw_ok add-port br0 caprot --type pcap --file "$CAP/rot.pcap" --rotate-size 8k --rotate-count 3 >/dev/null
vsw_ok add-port br0 capvm1 --type pcap --file "$CAP/vm1rx.pcap" --port vm1 --direction rx --snaplen 64 >/dev/null

# Bad input: a clear error, nothing created, the daemon and the other ports unaffected.
expect_refused() {
    local want=$1 out rc=0
    shift
    out=$(vsw "$@" 2>&1) || rc=$?
    ((rc != 0)) || e2e_fail "vswitch $* succeeded; expected an error mentioning '$want'"
    grep -qi -- "$want" <<<"$out" || e2e_fail "vswitch $*: error '$out' does not mention '$want'"
    e2e_msg "refused as expected: $out"
}
expect_refused "invalid filter" add-port br0 bad1 --type pcap --file "$CAP/bad1.pcap" --filter 'icmp or'
expect_refused "No such file" add-port br0 bad2 --type pcap --file "$E2E_TMP/no-such-dir/x.pcap"
expect_refused "no port named vm9" add-port br0 bad3 --type pcap --file "$CAP/bad3.pcap" --port vm9
expect_refused "direction" add-port br0 bad4 --type pcap --file "$CAP/bad4.pcap" --port vm1 --direction sideways
expect_refused "invalid buffer size" add-port br0 bad6 --type pcap --file "$CAP/bad6.pcap" --buffer-size 1k
expect_refused "invalid capture CPU" add-port br0 bad7 --type pcap --file "$CAP/bad7.pcap" --capture-cpu 4096
expect_refused "invalid filter" capture br0 -f 'tcp port' -w "$CAP/bad5.pcap"
for f in bad1 bad3 bad4 bad5 bad6 bad7; do [[ ! -e $CAP/$f.pcap ]] || e2e_fail "a refused add-port created $CAP/$f.pcap"; done
[[ $(show_ports | awk '$2 == "pcap"' | wc -l) == 4 ]] || e2e_fail "expected 4 pcap ports: $(show_ports | tr '\n' ';')"

# Live capture of the first 5 frames, started before the guests.
vsw capture br0 -c 5 -w - 2>"$E2E_LOG_DIR/live.err" | tcpdump -nr - >"$E2E_LOG_DIR/live.txt" 2>>"$E2E_LOG_DIR/live.err" &
LIVE_PID=$!
E2E_PIDS+=("$LIVE_PID")

GUEST_WAIT_PEER=10.0.0.1 e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" server 10.0.0.2/24 "ping -c $COUNT -s 1400 10.0.0.1"
GUEST_WAIT_PEER=10.0.0.2 e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.0.1/24 "ping -c $COUNT -s 1400 10.0.0.2"
e2e_wait_up vm1
e2e_wait_up vm2
e2e_ping_check vm1 1
e2e_ping_check vm2 1
e2e_snapshot "after ping"
sent=0
for g in vm1 vm2; do
    sum=$(guest_ping_summary "${GUEST_LOG[$g]}")
    sent=$((sent + $(vsw_kv tx "$sum")))
done
# The guests' own waits for their peer (GUEST_WAIT_PEER) sent echo requests too: at least
# $sent requests crossed the bridge.

# 1. The live capture ended by itself after exactly 5 frames.
for _ in $(seq 1 100); do kill -0 "$LIVE_PID" 2>/dev/null || break; sleep 0.2; done
kill -0 "$LIVE_PID" 2>/dev/null && e2e_fail "vswitch capture -c 5 did not end"
wait "$LIVE_PID" || e2e_fail "vswitch capture -c 5 | tcpdump failed: $(cat "$E2E_LOG_DIR/live.err")"
live=$(wc -l <"$E2E_LOG_DIR/live.txt")
((live == 5)) || e2e_fail "live capture: tcpdump read $live frames, expected exactly 5: $(cat "$E2E_LOG_DIR/live.txt")"
e2e_msg "live capture: exactly 5 frames"

# 2. The whole-bridge file, read while still open, has every echo request and reply.
requests=$(tcpdump -nr "$CAP/all.pcap" 'icmp[icmptype] == icmp-echo' 2>/dev/null | wc -l)
replies=$(tcpdump -nr "$CAP/all.pcap" 'icmp[icmptype] == icmp-echoreply' 2>/dev/null | wc -l)
e2e_msg "all.pcap: $requests echo requests, $replies replies; the guests sent $sent pings"
((requests >= sent && replies >= sent - 2)) || e2e_fail "all.pcap lacks echo frames: $requests requests, $replies replies for $sent pings"
grep -q ARP <<<"$(tcpdump -nr "$CAP/all.pcap" arp 2>/dev/null)" || e2e_fail "all.pcap has no ARP frames"

# 3. The filtered file keeps only ICMP, and all of it.
icmp_all=$(tcpdump -nr "$CAP/all.pcap" icmp 2>/dev/null | wc -l)
filtered=$(tcpdump -nr "$CAP/icmp.pcap" 2>/dev/null | wc -l)
filtered_icmp=$(tcpdump -nr "$CAP/icmp.pcap" icmp 2>/dev/null | wc -l)
((filtered > 0 && filtered == filtered_icmp && filtered == icmp_all)) ||
    e2e_fail "icmp.pcap: $filtered frames, $filtered_icmp ICMP; all.pcap has $icmp_all ICMP"
e2e_msg "icmp.pcap: $filtered frames, all ICMP"

# 4. vm1 rx: only frames vm1 sent, cut to 64 bytes.
head=$(tcpdump -enr "$CAP/vm1rx.pcap" 2>&1 | sed -n 1p)
grep -q "snapshot length 64" <<<"$head" || e2e_fail "vm1rx.pcap: $head"
others=$(tcpdump -enr "$CAP/vm1rx.pcap" 2>/dev/null | grep -vc '^[0-9:.]* 52:54:00:00:00:01 >' || true)
mine=$(tcpdump -enr "$CAP/vm1rx.pcap" 2>/dev/null | wc -l)
((mine > 0 && others == 0)) || e2e_fail "vm1rx.pcap: $mine frames, $others not from vm1"
e2e_msg "vm1rx.pcap: $mine frames, all from vm1"

# tshark_errors FILE: what tshark said on stderr, without its warning about running as root.
tshark_errors() { grep -v 'Running as user "root"' "$1" || true; }

# 5. Rotation: 3 complete files that tshark reads, no fourth.
for f in rot.pcap rot.pcap.1 rot.pcap.2; do
    [[ -s $CAP/$f ]] || e2e_fail "rotation: $f missing ($(ls "$CAP" | tr '\n' ' '))"
    n=$(tshark -r "$CAP/$f" 2>"$E2E_LOG_DIR/tshark.err" | wc -l) || true
    [[ -z $(tshark_errors "$E2E_LOG_DIR/tshark.err") ]] || e2e_fail "tshark -r $f: $(cat "$E2E_LOG_DIR/tshark.err")"
    ((n > 0)) || e2e_fail "tshark read no frames from $f"
    e2e_msg "tshark -r $f: $n frames"
done
[[ ! -e $CAP/rot.pcap.3 ]] || e2e_fail "rotation kept more than 3 files"

# 6. Ctrl-C on an idle live capture: the daemon notices the client left and drops it.
# (A background job of a script starts with SIGINT ignored: env restores the default.)
env --default-signal=INT "$VSWITCH_BIN" --control "$VSWITCH_SOCK" capture br0 -w "$CAP/int.pcap" 2>>"$E2E_LOG_DIR/live.err" &
INT_PID=$!
E2E_PIDS+=("$INT_PID")
sleep 1
kill -INT "$INT_PID"
for _ in $(seq 1 50); do kill -0 "$INT_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$INT_PID" 2>/dev/null && e2e_fail "vswitch capture did not end on SIGINT"
for _ in $(seq 1 30); do grep -q 'reason=peerGone' "$VSWITCHD_LOG" && break; sleep 0.1; done
grep -q 'reason=peerGone' "$VSWITCHD_LOG" || e2e_fail "vswitchd did not end the interrupted live capture"
e2e_msg "interrupted live capture dropped by the daemon"

# 7. show reports the counters; del-port leaves a complete, closed file.
json=$(vsw show --format json)
written=$(python3 -c 'import json,sys; p=[p for b in json.load(sys.stdin)["bridges"] for p in b["ports"] if p["name"]=="cap"][0]; print(p["options"]["framesWritten"], p["options"]["framesDropped"], p["options"]["buffer"], p["options"]["captureCPU"])' <<<"$json")
e2e_msg "show: cap framesWritten framesDropped buffer captureCPU = $written"
[[ ${written#* * } == "8388608 0" ]] || e2e_fail "show: cap should have an 8 MiB ring and its writer on CPU 0: $written"
vsw_ok del-port br0 cap >/dev/null
n=$(tshark -r "$CAP/all.pcap" 2>"$E2E_LOG_DIR/tshark.err" | wc -l)
[[ -z $(tshark_errors "$E2E_LOG_DIR/tshark.err") ]] || e2e_fail "tshark -r all.pcap after del-port: $(cat "$E2E_LOG_DIR/tshark.err")"
((n >= ${written%% *})) || e2e_fail "all.pcap has $n frames after del-port; show said ${written%% *} written"
e2e_msg "after del-port all.pcap is complete: $n frames"
expect_traffic br0 vm1 vm2
e2e_pass
