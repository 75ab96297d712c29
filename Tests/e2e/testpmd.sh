#!/usr/bin/env bash
# DPDK testpmd as a vhost-user frontend (the role of a VM) with two virtio-user ports, io
# forwarding, started with --tx-first: the two ports form a closed loop through the switch
# (frames from port 0 carry src 02:..:00 dst 02:..:01 and come back in on port 1, and so on).
#   round 1: testpmd listens (server=1), switch ports are vhostuserclient
#   round 2: the switch listens (vhostuser ports), testpmd connects
#   round 3: like 1 with mrg_rxbuf=0,in_order=1 (no mergeable RX buffers; IN_ORDER offered by
#            both sides and negotiated)
#   round 4: like 1 with queues=2 (--rxq=2 --txq=2): multiqueue from a DPDK frontend
# Pass: in each round both switch ports' rx counters grow while testpmd runs, and testpmd's
# final statistics show RX-packets > 0 on both of its ports.
source "$(dirname "$0")/lib.sh"

e2e_require_root
TESTPMD=${TESTPMD:-/usr/bin/dpdk-testpmd}
[[ -x $TESTPMD ]] || e2e_missing "dpdk-testpmd" "install dpdk-dev"
e2e_require_binaries
vsw_hugepages_setup "${E2E_HUGEPAGES:-1024}" || true
free=$(vsw_hugepages_free)
((free >= 256)) || e2e_fail "testpmd needs 256 free 2 MiB hugepages (-m 512), have $free"
e2e_msg "free hugepages: $free"
vswitchd_start

RUN_SECS=${E2E_TESTPMD_SECS:-24}

# DPDK leaves its hugepage files (<prefix>map_N) and run dir behind when it exits: remove ours.
testpmd_files_cleanup() {
    rm -f /dev/hugepages/vswtp$$-*map_* 2>/dev/null
    rm -rf /var/run/dpdk/vswtp$$-* 2>/dev/null
    return 0
}
E2E_CLEANUP_HOOKS+=(testpmd_files_cleanup)

# testpmd_start LOG SERVER(0|1) SOCK0 SOCK1 PREFIX: start testpmd in the background (TESTPMD_PID).
testpmd_start() {
    local log=$1 server=$2 s0=$3 s1=$4 prefix=$5 srv=""
    local q=${TP_QUEUES:-1} extra=${TP_VDEV_EXTRA:-}
    ((server)) && srv=",server=1"
    # shellcheck disable=SC2054  # commas belong to the DPDK arguments
    local cmd=(timeout -k 5 -s INT "$RUN_SECS" "$TESTPMD" -l "0,1" --main-lcore 1 --no-pci -m 512
        --single-file-segments --file-prefix "$prefix"
        --vdev "net_virtio_user0,path=$s0,queues=$q$srv,mac=02:00:00:00:00:00$extra"
        --vdev "net_virtio_user1,path=$s1,queues=$q$srv,mac=02:00:00:00:00:01$extra"
        -- --forward-mode=io --txpkts=64 --eth-peer=0,02:00:00:00:00:01 --eth-peer=1,02:00:00:00:00:00
        --rxq="$q" --txq="$q" --nb-cores=1 --total-num-mbufs=32768 --tx-first --stats-period 1)
    printf '%q ' "${cmd[@]}" >"$log.cmdline"
    "${cmd[@]}" </dev/null >"$log" 2>&1 &
    TESTPMD_PID=$!
    E2E_PIDS+=("$TESTPMD_PID")
    e2e_msg "testpmd pid $TESTPMD_PID ($log)"
}

# testpmd_rx LOG PORT: the last RX-packets figure printed for that port (NIC or forward statistics).
testpmd_rx() {
    tr -d '\r' <"$1" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' | awk -v want="$2" '
        /statistics for port/ { for (i = 1; i <= NF; i++) if ($(i) == "port") port = $(i + 1); next }
        /^[ ]*RX-packets:/ && port == want { v = $2 }
        /Accumulated forward statistics/ { port = "" }
        END { print (v == "" ? -1 : v) }'
}

# switch_rx BR PORT0 PORT1: "rx0 rx1" packet counters of the two switch ports.
switch_rx() {
    local t
    t=$(port_stats "$1")
    echo "$(awk -v p="$2" '$1 == p {print $2}' <<<"$t") $(awk -v p="$3" '$1 == p {print $2}' <<<"$t")"
}

round() {
    local n=$1 type=$2 br=$3 server
    local s0="$E2E_TMP/tp$n-0.sock" s1="$E2E_TMP/tp$n-1.sock" log="$E2E_LOG_DIR/testpmd-$n.log"
    local p0="tp${n}a" p1="tp${n}b" # port names unique in the switch
    e2e_msg "=== round $n: switch ports $type"
    vsw_ok add-br "$br" >/dev/null
    if [[ $type == vhostuserclient ]]; then
        server=1
        # testpmd listens; the switch ports connect (and retry until testpmd is there)
        testpmd_start "$log" 1 "$s0" "$s1" "vswtp$$-$n"
        vsw_ok add-port "$br" "$p0" --type vhostuserclient --path "$s0" >/dev/null
        vsw_ok add-port "$br" "$p1" --type vhostuserclient --path "$s1" >/dev/null
    else
        server=0
        vsw_ok add-port "$br" "$p0" --type vhostuser --path "$s0" >/dev/null
        vsw_ok add-port "$br" "$p1" --type vhostuser --path "$s1" >/dev/null
        vsw_wait_for 10 test -S "$s0" -a -S "$s1" || e2e_fail "the switch did not create $s0 and $s1"
        testpmd_start "$log" 0 "$s0" "$s1" "vswtp$$-$n"
    fi
    # wait for forwarding to start, then sample the switch's counters twice
    vsw_wait_log "$log" 'Start automatic packet forwarding|Port statistics|statistics for port' 30 "$TESTPMD_PID" ||
        e2e_fail "round $n: testpmd did not start forwarding (see testpmd-$n.log)"
    sleep 4
    e2e_snapshot "round $n: testpmd running" "$br"
    local a b
    a=$(switch_rx "$br" "$p0" "$p1")
    sleep 3
    b=$(switch_rx "$br" "$p0" "$p1")
    e2e_msg "round $n: switch rx packets $p0/$p1: $a -> $b"
    if [[ -n ${TP_CHECK:-} ]]; then "$TP_CHECK" "$br" "$p0"; fi
    wait "$TESTPMD_PID" 2>/dev/null && rc=0 || rc=$?
    testpmd_files_cleanup
    # 124: stopped by timeout's SIGINT, as planned
    ((rc == 0 || rc == 124)) || e2e_msg "round $n: testpmd exited with status $rc"
    local rx0 rx1
    rx0=$(testpmd_rx "$log" 0)
    rx1=$(testpmd_rx "$log" 1)
    e2e_msg "round $n: testpmd RX-packets port0=$rx0 port1=$rx1 (server=$server)"
    e2e_check_daemon
    local a0 a1 b0 b1
    read -r a0 a1 <<<"$a"
    read -r b0 b1 <<<"$b"
    [[ -n $a0 && -n $a1 && -n $b0 && -n $b1 ]] || e2e_fail "round $n: no counters for $p0/$p1 in port stats"
    ((b0 > a0 && b1 > a1)) || e2e_fail "round $n: switch rx counters did not grow on both ports ($a -> $b)"
    ((rx0 > 0 && rx1 > 0)) || e2e_fail "round $n: testpmd received nothing on a port (port0=$rx0 port1=$rx1)"
    e2e_snapshot "round $n: done" "$br"
}

round 1 vhostuserclient br1
round 2 vhostuser br2
TP_VDEV_EXTRA=",mrg_rxbuf=0,in_order=1" round 3 vhostuserclient br3
# running_queues PORT: virtqueues of PORT the switch is running now.
running_queues() {
    vsw show --format json | python3 -c '
import json, sys
for b in json.load(sys.stdin)["bridges"]:
    for p in b["ports"]:
        if p["name"] == sys.argv[1]: print(sum(1 for q in p["queues"] if q["running"]))' "$1"
}
check_two_pairs() {
    local n
    n=$(running_queues "$2")
    ((n == 4)) || e2e_fail "port $2 runs $n virtqueues while testpmd uses queues=2, expected 4"
    e2e_msg "port $2 runs 2 queue pairs"
}
TP_QUEUES=2 TP_CHECK=check_two_pairs round 4 vhostuserclient br4
e2e_pass
