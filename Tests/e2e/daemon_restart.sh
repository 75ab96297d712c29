#!/usr/bin/env bash
# vswitchd restarted with the same run dir and no add-br/add-port comes back with its
# bridges and ports from <run-dir>/vswitchd.json, and the guests ping each other again:
#   1. br0 (aging 120) with vm1 (vhostuserclient: QEMU listens) and vm2 (vhostuser, relative
#      path in the run dir: QEMU connects with reconnect=1). Both guests ping each other
#      without end, one `ping -c 1` at a time (busybox ping exits on a send error, and the
#      guest's link goes down while the switch is away): reply lines on their serial consoles.
#   2. kill -9 vswitchd: the replies stop (the traffic really goes through the switch).
#      Start it again: `vswitch show` lists the same bridge and ports, replies come back.
#   3. The same with a clean SIGTERM: the daemon exits 0 and leaves the file as it was.
#   4. A change after the restart (set-aging) is saved: persistence goes on after a restore.
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
vswitchd_start

CONFIG="$E2E_TMP/run/vswitchd.json"
S1="$E2E_TMP/vm1.sock" S2="$E2E_TMP/run/vm2.sock"

# config_summary: "bridge aging" and "port type path" lines from `show --format json`.
config_summary() {
    vsw show --format json | python3 -c '
import json, sys
doc = json.load(sys.stdin)
for b in doc.get("bridges", []):
    print("bridge", b["name"], b["agingSeconds"])
    for p in b["ports"]:
        print("port", b["name"], p["name"], p["type"], p["path"])
' || e2e_fail "vswitch show --format json failed"
}

# pinger IP: the guest command.
pinger() { echo "while :; do ping -c 1 -W 1 $1; sleep 0.5; done"; }

# replies NAME PEER: ping replies from PEER so far on NAME's serial console.
replies() { tr -d '\r' <"${GUEST_LOG[$1]}" | grep -c "bytes from $2" || true; }

# wait_replies NAME PEER N TIMEOUT: wait until N more replies than now (prints seconds taken).
wait_replies() {
    local name=$1 peer=$2 n=$3 timeout=$4 base start=$SECONDS
    base=$(replies "$name" "$peer")
    while (($(replies "$name" "$peer") < base + n)); do
        guest_alive "$name" || e2e_fail "guest $name died"
        ((SECONDS - start < timeout)) ||
            e2e_fail "guest $name: fewer than $n new replies from $peer within ${timeout}s ($(replies "$name" "$peer") in all)"
        sleep 0.5
    done
    echo $((SECONDS - start))
}

vsw_ok add-br br0 --aging 120 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$S1" >/dev/null
vsw_ok add-port br0 vm2 --type vhostuser --path vm2.sock >/dev/null
[[ -s $CONFIG ]] || e2e_fail "no configuration file at $CONFIG after add-port"
python3 "$E2E_DIR/jsonq.py" check <"$CONFIG" || e2e_fail "$CONFIG is not JSON"
e2e_msg "configuration saved: $(tr -d ' \n' <"$CONFIG")"
[[ $(stat -c %a "$CONFIG") == 600 ]] || e2e_fail "$CONFIG has mode $(stat -c %a "$CONFIG"), expected 600"
[[ $(stat -c %a "$S2") == 660 ]] || e2e_fail "vhost-user socket $S2 has mode $(stat -c %a "$S2"), expected 660"
BEFORE=$(config_summary)
e2e_msg "configuration: $(tr '\n' ';' <<<"$BEFORE")"

e2e_boot vm1 52:54:00:00:00:01 "$S1" server 10.0.0.1/24 "$(pinger 10.0.0.2)"
e2e_boot vm2 52:54:00:00:00:02 "$S2" client 10.0.0.2/24 "$(pinger 10.0.0.1)"
e2e_wait_up vm1
e2e_wait_up vm2
e2e_msg "vm1 hears vm2 after $(wait_replies vm1 10.0.0.2 3 120)s, vm2 hears vm1 after $(wait_replies vm2 10.0.0.1 3 120)s"
e2e_snapshot "before the first restart"

# restart_round SIGNAL: stop vswitchd with SIGNAL, start it again with nothing but the run dir.
restart_round() {
    local sig=$1 rc=0 saved r1 r2
    saved=$(cat "$CONFIG")
    e2e_msg "=== kill -$sig vswitchd (pid $VSWITCHD_PID)"
    kill "-$sig" "$VSWITCHD_PID"
    wait "$VSWITCHD_PID" 2>/dev/null || rc=$?
    VSWITCHD_PID=""
    if [[ $sig == TERM ]]; then
        ((rc == 0)) || e2e_fail "vswitchd exited with status $rc on SIGTERM"
        [[ ! -e $S2 ]] || e2e_fail "clean shutdown left the vhost-user socket $S2"
    fi
    [[ $(cat "$CONFIG") == "$saved" ]] || e2e_fail "the configuration file changed while vswitchd stopped"
    r1=$(replies vm1 10.0.0.2)
    sleep 3
    r2=$(replies vm1 10.0.0.2)
    e2e_msg "with vswitchd down, vm1 got $((r2 - r1)) replies in 3 s"
    ((r2 - r1 <= 1)) || e2e_fail "vm1 kept getting replies with vswitchd down: the ping does not go through the switch"

    local t0=$SECONDS
    vswitchd_start
    local after
    after=$(config_summary)
    [[ $after == "$BEFORE" ]] || e2e_fail "after the restart, show lists: $(tr '\n' ';' <<<"$after"); before: $(tr '\n' ';' <<<"$BEFORE")"
    e2e_msg "after kill -$sig the restarted vswitchd lists the same bridge and ports"
    local w1 w2
    w1=$(wait_replies vm1 10.0.0.2 3 90)
    w2=$(wait_replies vm2 10.0.0.1 3 90)
    e2e_msg "after kill -$sig: pings flow again ${w1}s (vm1) and $((SECONDS - t0))s (vm2) after the start"
    e2e_snapshot "after kill -$sig and restart"
    local ports   # not piped into grep -q: an early exit would break the pipe (pipefail)
    ports=$(show_ports)
    grep -q '^vm1 .* connected up$' <<<"$ports" || e2e_fail "vm1 not connected/up: $(tr '\n' ';' <<<"$ports")"
    grep -q '^vm2 .* connected up$' <<<"$ports" || e2e_fail "vm2 not connected/up: $(tr '\n' ';' <<<"$ports")"
}

restart_round KILL
restart_round TERM

vsw_ok set-aging br0 60 >/dev/null
grep -q '"agingSeconds" : 60' "$CONFIG" || e2e_fail "set-aging after the restart was not saved: $(tr -d ' \n' <"$CONFIG")"
expect_fdb_has br0 52:54:00:00:00:01 52:54:00:00:00:02
e2e_pass
