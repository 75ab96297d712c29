#!/usr/bin/env bash
# The CLI's error paths against a running vswitchd: each mistake gives a non-zero exit and a
# clear message on stderr, nothing changes, and the daemon is still alive afterwards.
source "$(dirname "$0")/lib.sh"

e2e_require_binaries
vswitchd_start

FAILS=()
OUT="$E2E_TMP/out" ERR="$E2E_TMP/err"

# expect_error DESCRIPTION REGEX ARGS...: vswitch ARGS must exit non-zero and print on stderr a
# message that matches the extended REGEX (case-insensitive).
expect_error() {
    local what=$1 re=$2 rc=0
    shift 2
    vsw "$@" >"$OUT" 2>"$ERR" || rc=$?
    local err
    err=$(tr '\n' ' ' <"$ERR")
    if ((rc == 0)); then
        FAILS+=("$what: 'vswitch $*' exited 0 (stdout: $(head -c 200 "$OUT"))")
        e2e_msg "NOT OK  $what: exit 0"
    elif [[ ! -s $ERR ]]; then
        FAILS+=("$what: 'vswitch $*' exited $rc with nothing on stderr")
        e2e_msg "NOT OK  $what: exit $rc, empty stderr"
    elif ! grep -Eqi -- "$re" "$ERR"; then
        FAILS+=("$what: 'vswitch $*' exited $rc, stderr does not match /$re/: $err")
        e2e_msg "NOT OK  $what: exit $rc, stderr: $err"
    elif grep -Eq 'Fatal error|Stack dump|backtrace|Segmentation' "$ERR"; then
        FAILS+=("$what: the CLI crashed: $err")
        e2e_msg "NOT OK  $what: crash: $err"
    else
        e2e_msg "ok      $what: exit $rc, stderr: $err"
    fi
    if ! vswitchd_alive; then
        e2e_fail "vswitchd died after: vswitch $*"
    fi
}

expect_ok() {
    local what=$1 rc=0
    shift
    vsw "$@" >"$OUT" 2>"$ERR" || rc=$?
    if ((rc != 0)); then
        FAILS+=("$what: 'vswitch $*' exited $rc: $(tr '\n' ' ' <"$ERR")")
        e2e_msg "NOT OK  $what: exit $rc"
    else
        e2e_msg "ok      $what"
    fi
}

P1="$E2E_TMP/p1.sock"
expect_ok "add-br br0" add-br br0
expect_ok "add-port p1" add-port br0 p1 --type vhostuser --path "$P1"

expect_error "unknown bridge (add-port)" 'br9|bridge' add-port br9 p9 --type vhostuser --path "$E2E_TMP/p9.sock"
expect_error "unknown bridge (fdb show)" 'br9|bridge' fdb show br9
expect_error "unknown bridge (del-br)" 'br9|bridge' del-br br9
expect_error "duplicate bridge" 'br0|exist|already|duplicate' add-br br0
expect_error "duplicate port name" 'p1|exist|already|duplicate' add-port br0 p1 --type vhostuser --path "$E2E_TMP/other.sock"
expect_error "path already used by another port" 'path|p1\.sock|in use|already|used' add-port br0 p2 --type vhostuserclient --path "$P1"
expect_error "missing --path" 'path' add-port br0 p3 --type vhostuser
expect_error "unknown --type" 'type|bogus' add-port br0 p4 --type bogus --path "$E2E_TMP/p4.sock"
expect_error "unknown port (del-port)" 'p7|port' del-port br0 p7
expect_error "unknown command" 'frobnicate|unknown|unexpected|invalid|usage' frobnicate

# the daemon is alive, and nothing changed: br0 holds p1 only
e2e_check_daemon
json=$(vsw show --format json) || e2e_fail "vswitch show --format json failed after the errors"
ports=$(python3 "$E2E_DIR/jsonq.py" ports <<<"$json" | awk '{print $1}' | sort | tr '\n' ' ')
e2e_msg "ports after the errors: $ports"
[[ $ports == "p1 " ]] || FAILS+=("after the errors the switch has ports '$ports', expected only p1")
bridges=$(python3 -c 'import json,sys
d=json.load(sys.stdin)
def walk(o):
    if isinstance(o, dict):
        if "ports" in o and "name" in o: yield o["name"]
        for v in o.values(): yield from walk(v)
    elif isinstance(o, list):
        for v in o: yield from walk(v)
print(" ".join(sorted(walk(d))))' <<<"$json")
[[ $bridges == "br0" ]] || FAILS+=("after the errors the switch has bridges '$bridges', expected br0")

# $VSWITCH_SOCK works instead of --control; a dead socket gives a clear error
rc=0
VSWITCH_SOCK="$VSWITCH_SOCK" "$VSWITCH_BIN" show >"$OUT" 2>"$ERR" || rc=$?
((rc == 0)) || FAILS+=("'VSWITCH_SOCK=... vswitch show' exited $rc: $(tr '\n' ' ' <"$ERR")")
rc=0
"$VSWITCH_BIN" --control "$E2E_TMP/nothing-here.sock" show >"$OUT" 2>"$ERR" || rc=$?
if ((rc == 0)) || [[ ! -s $ERR ]]; then
    FAILS+=("vswitch against a missing socket: exit $rc, stderr '$(tr '\n' ' ' <"$ERR")'")
else
    e2e_msg "ok      no daemon: exit $rc, stderr: $(tr '\n' ' ' <"$ERR")"
fi

# cleanup commands work
expect_ok "del-port p1" del-port br0 p1
expect_ok "del-br br0" del-br br0
e2e_check_daemon

if ((${#FAILS[@]})); then
    printf '  - %s\n' "${FAILS[@]}"
    e2e_fail "${#FAILS[@]} CLI error case(s) wrong"
fi
e2e_pass
