#!/usr/bin/env bash
# A frontend that shrinks the file behind its guest memory after SET_MEM_TABLE must cost
# its own connection, not the daemon (issue 21, part 1). vm1 and vm2 (QEMU) ping each other
# without end on br0. A hostile frontend (shrinking_frontend.py: any local process allowed
# on a vhost-user socket can do this; QEMU itself would die on its own truncated RAM) connects
# to port hx (vhostuser), gives the switch a plain file on /dev/shm as guest memory, sets up
# its rings, then truncates the file to 0:
#   tx rounds: and kicks its TX ring, so the switch faults reading that ring;
#   rx rounds: and stays silent; the FDB is flushed, so vm1's next ping floods and the switch
#              faults writing into hx's receive ring.
# E2E_SHRINK_ROUNDS rounds (default 20), alternating tx and rx.
# Pass: every round vswitchd stays up, logs "memory file shrunk under the switch", counts it
# (`memoryFaults` of hx in `vswitch show`), closes hx's connection and listens again; vm1
# and vm2 keep getting replies; vswitchd's fds and /dev/shm mappings return to where they were.
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
ROUNDS=${E2E_SHRINK_ROUNDS:-20}
vswitchd_start

pinger() { echo "while :; do ping -c 1 -W 1 $1; sleep 0.2; done"; }
replies() { tr -d '\r' <"${GUEST_LOG[$1]}" | grep -c "bytes from $2" || true; }
fds() { ls "/proc/$VSWITCHD_PID/fd" | wc -l; }
shm_maps() { grep -c "/dev/shm/vsw-shrink-$$" "/proc/$VSWITCHD_PID/maps" || true; }
port_state() {
    vsw show --format json | python3 -c '
import json, sys
for b in json.load(sys.stdin)["bridges"]:
    for p in b["ports"]:
        if p["name"] == "hx": print(p["state"], (p.get("options") or {}).get("memoryFaults", 0))'
}
faults() { port_state | awk '{print $2}'; }
fault_counted() { (($(faults) >= FAULTS_WANTED)); }
listening_again() { [[ $(port_state | awk '{print $1}') == listening ]]; }

vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
vsw_ok add-port br0 vm2 --type vhostuserclient --path "$E2E_TMP/vm2.sock" >/dev/null
vsw_ok add-port br0 hx --type vhostuser --path "$E2E_TMP/hx.sock" >/dev/null
e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.0.1/24 "$(pinger 10.0.0.2)"
e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" server 10.0.0.2/24 "$(pinger 10.0.0.1)"
e2e_wait_up vm1
e2e_wait_up vm2
vsw_wait_for 60 bash -c "(( \$(tr -d '\r' <'${GUEST_LOG[vm1]}' | grep -c 'bytes from 10.0.0.2') >= 3 ))" ||
    e2e_fail "vm1 and vm2 do not ping each other"
base_fds=$(fds)
e2e_msg "vswitchd holds $base_fds fds with vm1 and vm2 connected"

for ((r = 1; r <= ROUNDS; r++)); do
    mode=tx
    ((r % 2 == 0)) && mode=rx
    mem="/dev/shm/vsw-shrink-$$-$r"
    E2E_CLEANUP_HOOKS+=("rm -f $mem")
    FAULTS_WANTED=$(($(faults) + 1))
    r1=$(replies vm1 10.0.0.2)
    out="$E2E_LOG_DIR/frontend-$r.log"
    timeout 40 python3 "$E2E_DIR/shrinking_frontend.py" "$E2E_TMP/hx.sock" "$mem" "$mode" --hold 20 >"$out" 2>&1 &
    fe=$!
    E2E_PIDS+=("$fe")
    vsw_wait_log "$out" '^shrunk' 20 "$fe" || e2e_fail "round $r: the frontend did not get to the truncation (see $(basename "$out"))"
    [[ $mode == rx ]] && vsw_ok fdb flush br0 >/dev/null   # vm1's next ping floods into hx's RX ring
    vsw_wait_for 20 fault_counted || e2e_fail "round $r ($mode): hx's port did not count the memory fault (state: $(port_state))"
    e2e_check_daemon
    vsw_wait_for 10 listening_again || e2e_fail "round $r: hx is not listening again (state: $(port_state))"
    wait "$fe" 2>/dev/null || true
    grep -q "closed by the switch" "$out" || e2e_fail "round $r: the switch did not close the hostile frontend's connection"
    wait_until=$((SECONDS + 20))
    while (($(replies vm1 10.0.0.2) < r1 + 3)); do
        ((SECONDS < wait_until)) || e2e_fail "round $r: vm1 stopped getting replies from vm2"
        sleep 0.3
    done
    rm -f "$mem"
    e2e_msg "round $r ($mode): fault $(faults) survived; hx disconnected and listening again; vm1 <-> vm2 forwarding"
done
n=$(grep -c "memory file shrunk under the switch" "$VSWITCHD_LOG" || true)
((n >= ROUNDS)) || e2e_fail "vswitchd logged $n memory faults, expected $ROUNDS"
sleep 1
now_fds=$(fds) now_maps=$(shm_maps)
e2e_msg "$ROUNDS shrinks survived ($n logged); vswitchd fds $base_fds before, $now_fds after; truncated files still mapped: $now_maps"
((now_fds <= base_fds)) || e2e_fail "vswitchd holds $now_fds fds, $base_fds before: a leak"
((now_maps == 0)) || e2e_fail "vswitchd still maps $now_maps truncated guest files"
e2e_snapshot "after $ROUNDS memory shrinks"
e2e_pass
