# shellcheck shell=bash
# shellcheck disable=SC2034  # GUEST_RUN_DIR etc. are read by Tools/lib/guest.sh
# Shared helpers for the end-to-end tests in Tests/e2e/*.sh. Sourced at the top of each test:
#
#   source "$(dirname "$0")/lib.sh"
#
# Exit codes: 0 pass, 1 fail, 77 skip. A missing tool is a skip ("install X"), or a failure
# naming the tool when CI=true. Every test gets:
#   E2E_NAME      the test's name
#   E2E_LOG_DIR   where its logs go (kept; Tests/e2e/run sets it and dumps it on failure)
#   E2E_TMP       a private temp dir for sockets (short path; removed on exit)
#   VSWITCH_SOCK  the control socket of the vswitchd started by vswitchd_start
# and a trap that always stops the guests, testpmd and vswitchd that the test started.
# Nothing here reads /work/shared.

set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VSWITCH_REPO="$(cd "$E2E_DIR/../.." && pwd)"
export VSWITCH_REPO
# shellcheck source=../../Tools/lib/guest.sh
source "$VSWITCH_REPO/Tools/lib/guest.sh"

E2E_NAME="${E2E_NAME:-$(basename "$0" .sh)}"
E2E_LOG_DIR="${E2E_LOG_DIR:-$VSWITCH_CACHE/e2e/manual/$E2E_NAME}"
mkdir -p "$E2E_LOG_DIR"
E2E_LOG_DIR="$(cd "$E2E_LOG_DIR" && pwd)"
E2E_TMP="$(mktemp -d /tmp/vsw-e2e.XXXXXX)"
GUEST_RUN_DIR="$E2E_TMP/guests" # used by Tools/lib/guest.sh
VSWITCHD_BIN="${VSWITCHD_BIN:-$VSWITCH_REPO/.build/release/vswitchd}"
VSWITCH_BIN="${VSWITCH_BIN:-$VSWITCH_REPO/.build/release/vswitch}"
VSWITCH_SOCK="$E2E_TMP/ctl.sock"
export VSWITCH_SOCK
VSWITCHD_PID=""
VSWITCHD_LOG="$E2E_LOG_DIR/vswitchd.log"
E2E_PIDS=()          # other background processes (testpmd ...) to stop on exit
E2E_CLEANUP_HOOKS=() # extra commands run on exit, after the processes are stopped

e2e_msg() { printf '[%s %s] %s\n' "$E2E_NAME" "$(date +%H:%M:%S)" "$*"; }

_e2e_cleanup() {
    local rc=$?
    set +e
    guest_kill_all
    local p h
    for p in "${E2E_PIDS[@]}"; do vsw_kill_pid "$p" 5; done
    if [[ -n $VSWITCHD_PID ]]; then vsw_kill_pid "$VSWITCHD_PID" 10; fi
    for h in "${E2E_CLEANUP_HOOKS[@]}"; do eval "$h"; done
    if [[ ${E2E_KEEP_TMP:-0} == 1 ]]; then
        echo "kept $E2E_TMP" >&2
    else
        rm -rf "$E2E_TMP"
    fi
    exit "$rc"
}
trap _e2e_cleanup EXIT
trap 'e2e_msg "interrupted"; exit 1' INT TERM HUP

e2e_fail() {
    echo "FAIL: $*"
    exit 1
}

e2e_skip() {
    echo "SKIP: $*"
    exit 77
}

e2e_pass() {
    e2e_check_daemon
    echo "PASS: ${*:-$E2E_NAME}"
    exit 0
}

# e2e_missing WHAT HOWTO: skip, or fail under CI=true.
e2e_missing() {
    if [[ ${CI:-} == true ]]; then
        e2e_fail "required tool missing: $1 ($2)"
    fi
    e2e_skip "$1 missing: $2"
}

# e2e_require_tool TOOL PACKAGE
e2e_require_tool() {
    vsw_have "$1" || e2e_missing "$1" "install $2"
}

e2e_require_root() {
    [[ $(id -u) -eq 0 ]] || e2e_missing "root" "run as root"
}

e2e_require_binaries() {
    [[ -x $VSWITCHD_BIN ]] || e2e_missing "$VSWITCHD_BIN" "run swift build -c release"
    [[ -x $VSWITCH_BIN ]] || e2e_missing "$VSWITCH_BIN" "run swift build -c release"
    e2e_require_tool python3 python3
}

# e2e_require_guest: QEMU, busybox, cpio, and the guest image (built now if needed).
e2e_require_guest() {
    e2e_require_tool "$(guest_qemu_bin)" qemu-system-x86
    e2e_require_tool cpio cpio
    _guest_busybox >/dev/null || e2e_missing "static busybox" "install busybox-static"
    if [[ ! -s $GUEST_KERNEL || ! -s $GUEST_INITRD ]] || [[ ${E2E_REBUILD_GUEST:-0} == 1 ]]; then
        e2e_msg "building the guest image"
    fi
    guest_build_image >>"$E2E_LOG_DIR/guest-build.log" 2>&1 ||
        e2e_fail "could not build the guest image (see guest-build.log)"
}

# vsw_expect_refused WHAT REGEX ARGS...: `vswitch ARGS` must fail, its error matching REGEX
# (case-insensitive); the message is logged.
vsw_expect_refused() {
    local what=$1 re=$2 err
    shift 2
    if err=$(vsw "$@" 2>&1 >/dev/null); then e2e_fail "$what: 'vswitch $*' succeeded"; fi
    grep -Eqi -- "$re" <<<"$err" || e2e_fail "$what: unexpected message: $err"
    e2e_msg "refused ($what): $err"
}

# vsw ARGS...: the CLI against this test's daemon.
vsw() { "$VSWITCH_BIN" --control "$VSWITCH_SOCK" "$@"; }

# vsw_ok ARGS...: the CLI, failing the test (with its stderr) when it fails.
vsw_ok() {
    local out rc=0
    out=$(vsw "$@" 2>&1) || rc=$?
    if ((rc != 0)); then
        e2e_fail "vswitch $* exited $rc: $out"
    fi
    [[ -z $out ]] || printf '%s\n' "$out"
}

# vswitchd_start [EXTRA ARGS...]: start the daemon with a fresh run dir; wait until it answers.
#   VSWITCHD_RUN_DIR=DIR   run dir that vswitchd itself creates (not made here: the reboot case)
vswitchd_start() {
    e2e_require_binaries
    local run=${VSWITCHD_RUN_DIR:-$E2E_TMP/run}
    [[ -n ${VSWITCHD_RUN_DIR:-} ]] || mkdir -p "$run"
    e2e_msg "starting vswitchd (log $VSWITCHD_LOG)"
    "$VSWITCHD_BIN" --control "$VSWITCH_SOCK" --run-dir "$run" --log-level "${VSWITCHD_LOG_LEVEL:-debug}" "$@" \
        </dev/null >>"$VSWITCHD_LOG" 2>&1 &
    VSWITCHD_PID=$!
    local deadline=$((SECONDS + ${VSWITCHD_START_TIMEOUT:-30}))
    while true; do
        if ! kill -0 "$VSWITCHD_PID" 2>/dev/null; then
            wait "$VSWITCHD_PID" 2>/dev/null && rc=0 || rc=$?
            VSWITCHD_PID=""
            e2e_fail "vswitchd exited during start-up (status $rc); see vswitchd.log"
        fi
        if [[ -S $VSWITCH_SOCK ]] && vsw show >/dev/null 2>&1; then break; fi
        ((SECONDS < deadline)) || e2e_fail "vswitchd did not answer on $VSWITCH_SOCK within ${VSWITCHD_START_TIMEOUT:-30}s"
        sleep 0.2
    done
    e2e_msg "vswitchd pid $VSWITCHD_PID is answering"
}

vswitchd_alive() { [[ -n $VSWITCHD_PID ]] && kill -0 "$VSWITCHD_PID" 2>/dev/null; }

# ---- network namespaces (the tunnel tests: vxlan*.sh, geneve.sh)

E2E_NETNS=()
_netns_cleanup() {
    local n
    for n in "${E2E_NETNS[@]}"; do ip netns del "$n" 2>/dev/null; done
    return 0
}

# netns_add NS...: network namespaces with lo up, deleted when the test exits (after its
# processes are stopped). A kernel without them is a missing tool.
netns_add() {
    local n
    ((${#E2E_NETNS[@]} > 0)) || E2E_CLEANUP_HOOKS+=(_netns_cleanup)
    for n in "$@"; do
        ip netns add "$n" || e2e_missing "network namespaces" "a kernel with CONFIG_NET_NS (ip netns add failed)"
        E2E_NETNS+=("$n")
        ip -n "$n" link set lo up
    done
}

# vswitchd_start_in_netns NS [EXTRA ARGS...]: vswitchd_start with the daemon inside NS (the
# control socket stays in E2E_TMP, so `vsw` works from here). REAL_VSWITCHD is the binary.
vswitchd_start_in_netns() {
    local ns=$1
    shift
    REAL_VSWITCHD=${REAL_VSWITCHD:-$VSWITCHD_BIN}
    VSWITCHD_BIN=$E2E_TMP/vswitchd-in-netns
    printf '#!/bin/sh\nexec ip netns exec %s %q "$@"\n' "$ns" "$REAL_VSWITCHD" >"$VSWITCHD_BIN"
    chmod +x "$VSWITCHD_BIN"
    vswitchd_start "$@"
}

# vswitchd_other NS NAME: one more vswitchd, inside NS, with control socket
# $E2E_TMP/ctl-NAME.sock, run dir $E2E_TMP/run-NAME and log vswitchd-NAME.log; waits until it
# answers. Its pid is OTHER_PID[NAME] (and in E2E_PIDS); `vsw_at NAME ARGS...` drives it.
declare -A OTHER_PID=()
vswitchd_other() {
    local ns=$1 name=$2
    mkdir -p "$E2E_TMP/run-$name"
    ip netns exec "$ns" "${REAL_VSWITCHD:-$VSWITCHD_BIN}" --control "$E2E_TMP/ctl-$name.sock" --run-dir "$E2E_TMP/run-$name" \
        --log-level "${VSWITCHD_LOG_LEVEL:-debug}" </dev/null >>"$E2E_LOG_DIR/vswitchd-$name.log" 2>&1 &
    OTHER_PID[$name]=$!
    E2E_PIDS+=("$!")
    vsw_wait_for 30 vsw_at "$name" show >/dev/null 2>&1 || e2e_fail "vswitchd $name did not answer (see vswitchd-$name.log)"
}

# vsw_at NAME ARGS...: the CLI against the vswitchd started by `vswitchd_other NS NAME`.
vsw_at() {
    local name=$1
    shift
    "$VSWITCH_BIN" --control "$E2E_TMP/ctl-$name.sock" "$@"
}

# netns_ping NS FROM TO COUNT: ping from address FROM in NS; prints the number of replies.
netns_ping() {
    local out
    out=$(ip netns exec "$1" ping -c "$4" -i 0.2 -W 2 -I "$2" "$3" 2>&1) || true
    sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out" | grep . || echo 0
}

# e2e_check_daemon: fail if the daemon we started has died.
e2e_check_daemon() {
    if [[ -n $VSWITCHD_PID ]] && ! kill -0 "$VSWITCHD_PID" 2>/dev/null; then
        local rc=0
        wait "$VSWITCHD_PID" 2>/dev/null || rc=$?
        VSWITCHD_PID=""
        e2e_fail "vswitchd died (status $rc); see vswitchd.log"
    fi
}

# e2e_snapshot TAG [BRIDGE...]: the daemon's state (show; fdb and port stats of each BRIDGE,
# default br0) appended to snapshots.log for post-mortems.
e2e_snapshot() {
    local tag=$1 br
    shift
    (($#)) || set -- br0
    {
        echo "### $tag: vswitch show"
        vsw show 2>&1 || true
        for br in "$@"; do
            echo "### $tag: vswitch fdb show $br"
            vsw fdb show "$br" 2>&1 || true
            echo "### $tag: vswitch port stats $br"
            vsw port stats "$br" 2>&1 || true
        done
    } >>"$E2E_LOG_DIR/snapshots.log"
}

# fdb_macs BRIDGE: "mac port vlan" lines from `fdb show --format json`.
fdb_macs() {
    local json
    json=$(vsw fdb show "$1" --format json) || e2e_fail "vswitch fdb show $1 --format json failed"
    python3 "$E2E_DIR/jsonq.py" fdb <<<"$json" || e2e_fail "fdb show --format json: bad JSON: $json"
}

# port_stats BRIDGE: "port rxPackets txPackets rxBytes txBytes" lines.
port_stats() {
    local json
    json=$(vsw port stats "$@" --format json) || e2e_fail "vswitch port stats $* --format json failed"
    python3 "$E2E_DIR/jsonq.py" stats <<<"$json" || e2e_fail "port stats --format json: bad JSON: $json"
}

# port_counter BRIDGE PORT rx|tx: one counter (packets).
port_counter() {
    local col
    case "$3" in rx) col=2 ;; tx) col=3 ;; *) e2e_fail "port_counter: rx or tx" ;; esac
    port_stats "$1" | awk -v p="$2" -v c="$col" '$1 == p {print $c; found = 1} END {if (!found) print -1}'
}

# show_ports: "name type state link" lines from `show --format json`.
show_ports() {
    local json
    json=$(vsw show --format json) || e2e_fail "vswitch show --format json failed"
    python3 "$E2E_DIR/jsonq.py" ports <<<"$json" || e2e_fail "show --format json: bad JSON: $json"
}

# expect_fdb_has BRIDGE MAC...: fail unless every MAC is in the FDB.
expect_fdb_has() {
    local br=$1 mac table
    shift
    table=$(fdb_macs "$br")
    for mac in "$@"; do
        grep -qi "^$mac " <<<"$table" || e2e_fail "FDB of $br lacks $mac; it has: $(tr '\n' ';' <<<"$table")"
    done
    e2e_msg "FDB of $br has $*"
}

# expect_traffic BRIDGE PORT...: fail unless each PORT has rx > 0 and tx > 0.
expect_traffic() {
    local br=$1 p rx tx table
    shift
    table=$(port_stats "$br")
    for p in "$@"; do
        rx=$(awk -v p="$p" '$1 == p {print $2}' <<<"$table")
        tx=$(awk -v p="$p" '$1 == p {print $3}' <<<"$table")
        [[ -n $rx && -n $tx ]] || e2e_fail "port stats of $br lack port $p: $(tr '\n' ';' <<<"$table")"
        ((rx > 0 && tx > 0)) || e2e_fail "port $p: rx=$rx tx=$tx packets, expected both > 0"
        e2e_msg "port $p: rx=$rx tx=$tx packets"
    done
}

# e2e_boot NAME MAC SOCK MODE IP CMD: guest_boot with the log in the log dir. A second boot of
# the same NAME gets NAME-2.serial.log etc.
e2e_boot() {
    local name=$1 log n=1
    log="$E2E_LOG_DIR/$name.serial.log"
    while [[ -e $log ]]; do n=$((n + 1)); log="$E2E_LOG_DIR/$name-$n.serial.log"; done
    guest_boot "$1" "$2" "$3" "$4" "$5" "$6" "$log" >>"$E2E_LOG_DIR/guests.log" 2>&1 ||
        e2e_fail "could not start guest $name"
    e2e_msg "guest $name started (pid ${GUEST_PID[$name]}, $4 mode, ${GUEST_MEM:-memfd}, $(basename "$log"))"
}

# e2e_wait_up NAME [TIMEOUT]
e2e_wait_up() {
    local rc=0
    guest_wait "$1" '^GUEST-UP' "${2:-180}" || rc=$?
    case $rc in
        0) e2e_msg "guest $1 is up" ;;
        2) e2e_fail "guest $1: QEMU exited before GUEST-UP ($(tail -n 3 "${GUEST_LOG[$1]}.qemu" | tr '\n' ' '))" ;;
        *) e2e_fail "guest $1 did not print GUEST-UP within ${2:-180}s" ;;
    esac
}

# e2e_ping_check NAME MAX_LOST [TIMEOUT]: wait for the guest's ping command; print the summary
# and min/median RTT; fail on more than MAX_LOST lost replies.
e2e_ping_check() {
    local name=$1 maxlost=$2 timeout=${3:-240} rc=0 exitrc sum tx rx
    exitrc=$(guest_wait_cmd "$name" "$timeout") || rc=$?
    case $rc in
        0) ;;
        2) e2e_fail "guest $name: QEMU exited before its command finished" ;;
        *) e2e_fail "guest $name: command did not finish within ${timeout}s" ;;
    esac
    local peer
    peer=$(tr -d '\r' <"${GUEST_LOG[$name]}" | grep -E '^GUEST-(LINK|PEER)' | tr '\n' ' ' || true)
    [[ -z $peer ]] || e2e_msg "guest $name: $peer"
    sum=$(guest_ping_summary "${GUEST_LOG[$name]}")
    tx=$(vsw_kv tx "$sum")
    rx=$(vsw_kv rx "$sum")
    e2e_msg "guest $name ping: $tx sent, $rx received, loss $(vsw_kv loss "$sum")%, rtt min $(vsw_kv min "$sum") ms, median $(vsw_kv median "$sum") ms, max $(vsw_kv max "$sum") ms (exit $exitrc)"
    echo "RTT $E2E_NAME $name min=$(vsw_kv min "$sum") median=$(vsw_kv median "$sum") ms" >>"$E2E_LOG_DIR/rtt.txt"
    [[ $tx =~ ^[0-9]+$ && $rx =~ ^[0-9]+$ ]] || e2e_fail "guest $name: no ping summary in its output (exit $exitrc)"
    ((tx > 0)) || e2e_fail "guest $name: ping sent nothing"
    ((tx - rx <= maxlost)) || e2e_fail "guest $name: $((tx - rx)) of $tx pings lost (at most $maxlost allowed)"
}

# e2e_ping_cmd COUNT SIZE IP
e2e_ping_cmd() { echo "ping -c $1 -s $2 $3"; }

# mode_for_type vhostuserclient|vhostuser: the guest's side (server|client).
mode_for_type() {
    case "$1" in
        vhostuserclient) echo server ;;
        vhostuser) echo client ;;
        *) e2e_fail "unknown port type $1" ;;
    esac
}

# e2e_pair_ping BRIDGE PORT_TYPE COUNT SIZE: two guests on two new ports of BRIDGE ping each
# other (both directions at once: each waits for the other, then pings COUNT times). Checks the
# loss (at most 1 lost each way), the FDB and the port counters.
#   E2E_VM1_MEM / E2E_VM2_MEM   memory backend of each guest (default memfd)
e2e_pair_ping() {
    local br=$1 type=$2 count=$3 size=$4 mode
    mode=$(mode_for_type "$type")
    vsw_ok add-br "$br" >/dev/null
    vsw_ok add-port "$br" vm1 --type "$type" --path "$E2E_TMP/vm1.sock" >/dev/null
    vsw_ok add-port "$br" vm2 --type "$type" --path "$E2E_TMP/vm2.sock" >/dev/null
    e2e_snapshot "ports added" "$br"
    GUEST_MEM=${E2E_VM2_MEM:-memfd} GUEST_WAIT_PEER=10.0.0.1 \
        e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" "$mode" 10.0.0.2/24 "ping -c $count -s $size 10.0.0.1"
    GUEST_MEM=${E2E_VM1_MEM:-memfd} GUEST_WAIT_PEER=10.0.0.2 \
        e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" "$mode" 10.0.0.1/24 "ping -c $count -s $size 10.0.0.2"
    e2e_wait_up vm1
    e2e_wait_up vm2
    e2e_ping_check vm1 1
    e2e_ping_check vm2 1
    e2e_snapshot "after ping" "$br"
    e2e_check_daemon
    expect_fdb_has "$br" 52:54:00:00:00:01 52:54:00:00:00:02
    expect_traffic "$br" vm1 vm2
}
