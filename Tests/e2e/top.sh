#!/usr/bin/env bash
# vswitch top while two guests ping: `--once` prints one plain frame with both ports and
# non-zero rates; under tmux the full-screen view shows both ports with non-zero rates, `q`
# ends it (exit 0); in a 50-column window the frame is cut to it, and SIGTERM ends it (exit 143),
# each time with the terminal restored
# (icanon and echo back on, as `stty -a` in the same pane shows).
source "$(dirname "$0")/lib.sh"

e2e_require_binaries
e2e_require_guest
e2e_require_tool tmux tmux
vswitchd_start

vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
vsw_ok add-port br0 vm2 --type vhostuserclient --path "$E2E_TMP/vm2.sock" >/dev/null
GUEST_WAIT_PEER=10.0.0.1 e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" server 10.0.0.2/24 "ping -c 60 10.0.0.1"
GUEST_WAIT_PEER=10.0.0.2 e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.0.1/24 "ping -c 60 10.0.0.2"
e2e_wait_up vm1
e2e_wait_up vm2

# ports_busy FILE: both vm1 and vm2 have a row "br0 PORT up RXPPS TXPPS ..." with non-zero rates.
ports_busy() {
    local p
    for p in vm1 vm2; do
        awk -v p="$p" '$1 == "br0" && $2 == p && $3 == "up" && $4 + 0 > 0 && $5 + 0 > 0 { ok = 1 } END { exit !ok }' "$1" ||
            return 1
    done
}

# --once: two samples 2 s apart (a ping a second each way: never an empty interval).
ok=0
for try in 1 2 3; do
    vsw top --once --interval 2 >"$E2E_LOG_DIR/once.txt" 2>&1 || e2e_fail "top --once failed: $(head -c 300 "$E2E_LOG_DIR/once.txt")"
    if ports_busy "$E2E_LOG_DIR/once.txt"; then ok=1; break; fi
done
cat "$E2E_LOG_DIR/once.txt"
((ok)) || e2e_fail "top --once: vm1 and vm2 not both up with non-zero rates"
grep -q $'\e' "$E2E_LOG_DIR/once.txt" && e2e_fail "top --once printed escape codes"
grep -q '^forwarding thread: busy [0-9.]*% of awake cycles' "$E2E_LOG_DIR/once.txt" || e2e_fail "top --once: no forwarding thread line"
e2e_msg "ok      top --once: both ports with non-zero rates, no escape codes"

# Full screen under tmux, on a private server, started from a shell so the terminal's state
# after top ends can be checked in the same pane.
TMUX_L="vswtop-$$"
tm() { tmux -L "$TMUX_L" -f /dev/null "$@"; }
E2E_CLEANUP_HOOKS+=("tm kill-server 2>/dev/null")
tm new-session -d -s top -x 160 -y 40 "env -i PATH=/usr/bin:/bin TERM=screen bash --norc --noprofile" ||
    e2e_fail "tmux new-session failed"
TOP_CMD="$VSWITCH_BIN --control $VSWITCH_SOCK top --interval 2; echo top-exit=\$?; stty -a | tr ' ;' '\n\n' | grep -E -x -e '-?icanon' -e '-?echo' | tr '\n' ' '; echo"

# run_top: starts top in the pane and waits until both ports show non-zero rates.
run_top() {
    tm send-keys -t top "clear; $TOP_CMD" Enter
    local i
    for i in $(seq 1 20); do
        sleep 1
        tm capture-pane -p -t top >"$E2E_LOG_DIR/pane-$1.txt"
        if grep -q '^vswitch top - ' "$E2E_LOG_DIR/pane-$1.txt" && ports_busy "$E2E_LOG_DIR/pane-$1.txt"; then return 0; fi
    done
    cat "$E2E_LOG_DIR/pane-$1.txt"
    e2e_fail "tmux: top did not show vm1 and vm2 with non-zero rates within 20 s"
}

# wait_exit TAG STATUS: the pane shows "top-exit=STATUS" and the restored terminal flags.
wait_exit() {
    local i
    for i in $(seq 1 10); do
        sleep 0.5
        tm capture-pane -p -t top >"$E2E_LOG_DIR/pane-$1-after.txt"
        grep -q "^top-exit=" "$E2E_LOG_DIR/pane-$1-after.txt" && break
    done
    cat "$E2E_LOG_DIR/pane-$1-after.txt" >&2
    grep -q "^top-exit=$2\$" "$E2E_LOG_DIR/pane-$1-after.txt" || e2e_fail "$1: top did not exit with status $2"
    grep -q "^icanon echo *$" "$E2E_LOG_DIR/pane-$1-after.txt" || e2e_fail "$1: the terminal was not restored (icanon, echo)"
    pgrep -P "$(tm display -p -t top '#{pane_pid}')" >/dev/null && e2e_fail "$1: top still runs"
    e2e_msg "ok      $1: top exited with $2, terminal restored"
}

run_top q
sed -n '1,8p' "$E2E_LOG_DIR/pane-q.txt"
e2e_msg "ok      tmux: the full-screen view shows vm1 and vm2 with non-zero rates"
tm send-keys -t top q
wait_exit q 0

# A narrow window: the frame is cut to it (read each refresh), the rates still show.
tm resize-window -t top -x 50 -y 8 || e2e_fail "tmux resize-window failed"
run_top term
awk 'length > 50 { bad = 1 } END { exit bad }' "$E2E_LOG_DIR/pane-term.txt" || e2e_fail "top drew lines wider than the 50-column window"
e2e_msg "ok      a 50x8 window: the frame is cut to it"
pid=$(pgrep -P "$(tm display -p -t top '#{pane_pid}')") || e2e_fail "no top process under the pane's shell"
kill -TERM "$pid"
wait_exit term 143

vsw_ok show >/dev/null
e2e_pass
