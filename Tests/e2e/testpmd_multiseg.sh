#!/usr/bin/env bash
# Multi-segment frames from DPDK's virtio driver, and frontends that keep their rings while
# the switch side goes away (issue 22), in the set-ups of DPDK's vhost test plans
# (loopback_virtio_user_server_mode, loopback_multi_paths_port_restart). testpmd runs
# interactively with two virtio-user ports (server=1: the switch ports are vhostuserclient),
# io forwarding in a closed loop through the switch:
#   1-3. txpkts 64,128,256,512 (each frame one indirect descriptor): packed and split with
#        in_order=1 (DPDK's default), packed with in_order=0
#   4-6. txpkts 9 x 120 with txsplit rand (indirect tables and chains mixed): packed
#        in_order=1, split in_order=1 and 0
#   7-8. mrg_rxbuf=1, 8000-byte frames sent as 4 x 2000 (indirect TX, mergeable RX): packed, split
#   9-10. split, then packed: testpmd's port stop all / port start all, then del-port and
#        add-port of one switch port while testpmd runs, then kill -9 of vswitchd and a
#        restart, again and again: both directions forward again each time
#   11. the Linux kernel through a TAP port: ping -s 8000 and -s 8972 -M do (8028- and
#       9000-byte packets) to testpmd's icmpecho on a packed port
#   12. like 9 with 2 queue pairs per port
#   13. testpmd quit and started again under a running switch
# vswitchd is restarted E2E_RESYNC_RESTARTS times (10) in rounds 9, 10 and 12, and testpmd
# relaunched as often in round 13.
# Not here: packed with in_order=0 and the 1-9 segment mix. DPDK's driver then leaves a
# stale buffer id in the ring descriptor of each indirect frame (it writes the id into the
# table instead) and loses track of its own TX ring, with DPDK's own vhost backend as well
# (docs/frontends.md).
# Pass: in each round both switch ports forward both ways (rx and tx grow by more than 1000
# frames in a sample of 2 s, 1 s in the restart loops: testpmd takes what the switch delivers), nothing is dropped as a bad
# descriptor, testpmd stays alive; every ping of round 11 is answered. Rates (Mpps per
# port) go to multiseg.txt in the log dir.
source "$(dirname "$0")/lib.sh"

e2e_require_root
TESTPMD=${TESTPMD:-/usr/bin/dpdk-testpmd}
[[ -x $TESTPMD ]] || e2e_missing "dpdk-testpmd" "install dpdk-dev"
e2e_require_tool ip iproute2
e2e_require_tool ping iputils-ping
e2e_require_binaries
vsw_hugepages_setup "${E2E_HUGEPAGES:-1024}" || true
free=$(vsw_hugepages_free)
((free >= 256)) || e2e_fail "testpmd needs 256 free 2 MiB hugepages (-m 512), have $free"
RATES="$E2E_LOG_DIR/multiseg.txt"
RESTARTS=${E2E_RESYNC_RESTARTS:-10}   # vswitchd restarts per re-add round, testpmd relaunches
: >"$RATES"

tp_files_cleanup() {
    rm -f /dev/hugepages/vswms$$-*map_* 2>/dev/null
    rm -rf /var/run/dpdk/vswms$$-* 2>/dev/null
    return 0
}
E2E_CLEANUP_HOOKS+=(tp_files_cleanup)

# tp_start N VDEV_EXTRA [TESTPMD ARGS...]: interactive testpmd listening on two sockets,
# commands written to a fifo (tp_cmd). Sets TP_PID, TP_LOG, TP_S0, TP_S1.
tp_start() {
    local n=$1 extra=$2
    shift 2
    TP_S0="$E2E_TMP/ms$n-0.sock" TP_S1="$E2E_TMP/ms$n-1.sock" TP_LOG="$E2E_LOG_DIR/testpmd-$n.log"
    rm -f "$E2E_TMP/tp.in"
    mkfifo "$E2E_TMP/tp.in"
    # shellcheck disable=SC2054  # commas belong to the DPDK arguments
    local q=${TP_QUEUES:-1}
    local cmd=(timeout -k 5 -s INT 300 "$TESTPMD" -l "0,1" --main-lcore 1 --no-pci -m 512
        --single-file-segments --file-prefix "vswms$$-$n"
        --vdev "net_virtio_user0,path=$TP_S0,queues=$q,server=1,mac=02:00:00:00:00:00$extra"
        --vdev "net_virtio_user1,path=$TP_S1,queues=$q,server=1,mac=02:00:00:00:00:01$extra"
        -- -i --forward-mode=io --eth-peer=0,02:00:00:00:00:01 --eth-peer=1,02:00:00:00:00:00
        --nb-cores=1 --total-num-mbufs=32768 --rxq="$q" --txq="$q" "$@")
    printf '%q ' "${cmd[@]}" >"$TP_LOG.cmdline"
    "${cmd[@]}" <"$E2E_TMP/tp.in" >"$TP_LOG" 2>&1 &
    TP_PID=$!
    E2E_PIDS+=("$TP_PID")
    exec 7>"$E2E_TMP/tp.in"
    e2e_msg "testpmd pid $TP_PID ($TP_LOG)"
}

tp_cmd() {
    e2e_msg "testpmd> $*"
    echo "$*" >&7
    sleep 0.3
}

tp_stop() {
    tp_cmd "show port stats all"
    tp_cmd quit
    exec 7>&-
    wait "$TP_PID" 2>/dev/null || true
    tp_files_cleanup
}

tp_alive() { kill -0 "$TP_PID" 2>/dev/null || e2e_fail "$1: testpmd died (see $(basename "$TP_LOG"))"; }

# counters BR P0 P1: "rx0 tx0 rx1 tx1 bad" (bad: both ports' bad-descriptor drops, both ways).
counters() {
    vsw port stats "$1" --format json | python3 -c '
import json, sys
s = {x["port"]: x for x in json.load(sys.stdin)["stats"]}
a, b = s[sys.argv[1]], s[sys.argv[2]]
bad = sum(x["rxDropBadDescriptor"] + x["txDropBadDescriptor"] for x in (a, b))
print(a["rxPackets"], a["txPackets"], b["rxPackets"], b["txPackets"], bad)' "$2" "$3"
}

# expect_forwarding LABEL BR P0 P1: both ports forward both ways, no bad descriptors.
expect_forwarding() {
    local label=$1 br=$2 p0=$3 p1=$4 a b secs=${SAMPLE_SECS:-2}
    sleep "${SETTLE_SECS:-1}"
    a=$(counters "$br" "$p0" "$p1")
    sleep "$secs"
    b=$(counters "$br" "$p0" "$p1")
    tp_alive "$label"
    local r0 t0 r1 t1 bad0 R0 T0 R1 T1 bad
    read -r r0 t0 r1 t1 bad0 <<<"$a"
    read -r R0 T0 R1 T1 bad <<<"$b"
    local rate
    rate=$(awk -v d=$((R0 - r0 + R1 - r1)) -v s="$secs" 'BEGIN {printf "%.2f", d / 2 / s / 1e6}')
    e2e_msg "$label: $rate Mpps per port (rx $p0 $r0 -> $R0, $p1 $r1 -> $R1), bad descriptors $bad"
    echo "$label mpps_per_port=$rate" >>"$RATES"
    ((bad == 0)) || e2e_fail "$label: $bad frames dropped as bad descriptors"
    ((R0 - r0 > 1000 && R1 - r1 > 1000 && T0 - t0 > 1000 && T1 - t1 > 1000)) ||
        e2e_fail "$label: the ports did not forward both ways ($a -> $b)"
}

wait_connected() {
    local port=$1
    vsw_wait_for 20 bash -c "'$VSWITCH_BIN' --control '$VSWITCH_SOCK' show --format json | python3 -c '
import json, sys
ok = any(p[\"name\"] == sys.argv[1] and p.get(\"state\") == \"connected\" and any(q[\"running\"] for q in p.get(\"queues\", []))
         for b in json.load(sys.stdin)[\"bridges\"] for p in b[\"ports\"])
sys.exit(0 if ok else 1)' $port" || e2e_fail "port $port did not connect and start its rings"
}

# The switch ports of round N, m<N>a and m<N>b, on testpmd's two sockets (tp_start sets them).
pair_add_ports() {
    vsw_ok add-port "$1" "m${2}a" --type vhostuserclient --path "$TP_S0" >/dev/null
    vsw_ok add-port "$1" "m${2}b" --type vhostuserclient --path "$TP_S1" >/dev/null
}
pair_connected() {
    wait_connected "m${1}a"
    wait_connected "m${1}b"
}
# pair_forwards BR N LABEL: fresh frames in the loop (frames in flight towards a port that
# went away are lost for good in a closed loop), then both ports must forward both ways.
# SETTLE_SECS and SAMPLE_SECS pass through to expect_forwarding.
pair_forwards() {
    tp_cmd stop
    tp_cmd "start tx_first 4"
    expect_forwarding "$3" "$1" "m${2}a" "m${2}b"
}
# pair_end BR: testpmd quits, the daemon must still be up, the bridge goes.
pair_end() {
    tp_cmd stop
    tp_stop
    e2e_check_daemon
    vsw_ok del-br "$1" >/dev/null
}

# traffic_round N LABEL VDEV_EXTRA "CMD;CMD..." [TESTPMD ARGS...]
traffic_round() {
    local n=$1 label=$2 extra=$3 cmds=$4 br="brm$1"
    shift 4
    e2e_msg "=== round $n: $label"
    vsw_ok add-br "$br" >/dev/null
    tp_start "$n" "$extra" "$@"
    pair_add_ports "$br" "$n"
    pair_connected "$n"
    local c
    IFS=';' read -ra c <<<"$cmds"
    for x in "${c[@]}"; do tp_cmd "$x"; done
    pair_forwards "$br" "$n" "round $n ($label)"
    e2e_snapshot "round $n: $label" "$br"
    pair_end "$br"
}

# readd_round N LABEL VDEV_EXTRA [TESTPMD ARGS]: testpmd's port stop/start, a port deleted
# and added again, then vswitchd killed and restarted RESTARTS times, under a running testpmd.
readd_round() {
    local n=$1 label=$2 extra=$3 br="brm$1" i
    shift 3
    e2e_msg "=== round $n: $label"
    vsw_ok add-br "$br" >/dev/null
    tp_start "$n" "$extra" "$@"
    pair_add_ports "$br" "$n"
    pair_connected "$n"
    pair_forwards "$br" "$n" "round $n ($label): before"
    tp_cmd stop
    tp_cmd "port stop all"
    tp_cmd "port start all"
    sleep 1
    pair_forwards "$br" "$n" "round $n ($label): testpmd port stop/start"
    vsw_ok del-port "$br" "m${n}a" >/dev/null
    sleep 1
    vsw_ok add-port "$br" "m${n}a" --type vhostuserclient --path "$TP_S0" >/dev/null
    wait_connected "m${n}a"
    pair_forwards "$br" "$n" "round $n ($label): port re-added"
    for ((i = 1; i <= RESTARTS; i++)); do
        e2e_msg "kill -9 vswitchd (pid $VSWITCHD_PID) and start it again ($i of $RESTARTS)"
        kill -9 "$VSWITCHD_PID"
        wait "$VSWITCHD_PID" 2>/dev/null || true
        VSWITCHD_PID=""
        vswitchd_start
        pair_connected "$n"
        SETTLE_SECS=0.5 SAMPLE_SECS=1 pair_forwards "$br" "$n" "round $n ($label): vswitchd restart $i"
    done
    pair_end "$br"
}

# relaunch_round N LABEL VDEV_EXTRA: the switch runs on; testpmd quits and starts again
# RESTARTS times on the same sockets (the switch's vhostuserclient ports reconnect).
relaunch_round() {
    local n=$1 label=$2 extra=$3 br="brm$1" i
    e2e_msg "=== round $n: $label"
    vsw_ok add-br "$br" >/dev/null
    for ((i = 1; i <= RESTARTS; i++)); do
        tp_start "$n" "$extra"
        ((i > 1)) || pair_add_ports "$br" "$n"
        pair_connected "$n"
        SETTLE_SECS=0.5 SAMPLE_SECS=1 pair_forwards "$br" "$n" "round $n ($label): testpmd start $i"
        tp_cmd stop
        tp_stop
    done
    e2e_check_daemon
    vsw_ok del-br "$br" >/dev/null
}

# tap_round N: kernel -> TAP -> switch -> testpmd icmpecho (packed, mergeable) and back.
tap_round() {
    local n=$1 br="brm$1" tap="vsms$$" s="$E2E_TMP/ms$1.sock" log="$E2E_LOG_DIR/testpmd-$1.log"
    e2e_msg "=== round $n: kernel pings through a TAP port to testpmd icmpecho on a packed ring"
    vsw_ok add-br "$br" >/dev/null
    # shellcheck disable=SC2054
    local cmd=(timeout -k 5 -s INT 60 "$TESTPMD" -l "0,1" --main-lcore 1 --no-pci -m 512
        --single-file-segments --file-prefix "vswms$$-$n"
        --vdev "net_virtio_user0,path=$s,queues=1,server=1,packed_vq=1,mrg_rxbuf=1,mac=02:00:00:00:00:09"
        -- --forward-mode=icmpecho --port-topology=loop --max-pkt-len=9018 --enable-scatter
        --nb-cores=1 --total-num-mbufs=16384 --stats-period 5)
    printf '%q ' "${cmd[@]}" >"$log.cmdline"
    "${cmd[@]}" </dev/null >"$log" 2>&1 &
    TP_PID=$!
    TP_LOG=$log
    E2E_PIDS+=("$TP_PID")
    vsw_ok add-port "$br" "m${n}v" --type vhostuserclient --path "$s" >/dev/null
    vsw_ok add-port "$br" "m${n}t" --type tap --ifname "$tap" >/dev/null
    ip link set "$tap" mtu 9000 up
    ip addr add 10.99.0.1/24 dev "$tap"
    wait_connected "m${n}v"
    local size out got
    for size in 8000 8972; do
        out=$(ping -c 10 -i 0.2 -W 2 -M do -s "$size" 10.99.0.2 2>&1) || true
        got=$(awk '/packets transmitted/ {print $4}' <<<"$out")
        e2e_msg "ping -s $size: ${got:-0}/10 replies ($(grep -o 'rtt.*' <<<"$out"))"
        ((${got:-0} == 10)) || e2e_fail "round $n: ping -s $size through the TAP got ${got:-0} of 10 replies"
    done
    tp_alive "round $n"
    e2e_snapshot "round $n: TAP pings" "$br"
    local bad
    bad=$(vsw port stats "$br" --format json |
        python3 -c 'import json,sys; print(sum(x["rxDropBadDescriptor"] + x["txDropBadDescriptor"] for x in json.load(sys.stdin)["stats"]))')
    ((bad == 0)) || e2e_fail "round $n: $bad frames dropped as bad descriptors"
    vsw_kill_pid "$TP_PID" 5
    tp_files_cleanup
    vsw_ok del-br "$br" >/dev/null
}

vswitchd_start
TXMIX="set txpkts 120,120,120,120,120,120,120,120,120;set txsplit rand"
SEG4="set txpkts 64,128,256,512"
JUMBO="set txpkts 2000,2000,2000,2000"
traffic_round 1 "packed, in_order=1, 4 segments" ",packed_vq=1,in_order=1" "$SEG4"
traffic_round 2 "split, in_order=1, 4 segments" ",packed_vq=0,in_order=1" "$SEG4"
traffic_round 3 "packed, in_order=0, 4 segments" ",packed_vq=1,in_order=0" "$SEG4"
traffic_round 4 "packed, in_order=1, 1-9 random segments" ",packed_vq=1,in_order=1" "$TXMIX"
traffic_round 5 "split, in_order=1, 1-9 random segments" ",packed_vq=0,in_order=1" "$TXMIX"
traffic_round 6 "split, in_order=0, 1-9 random segments" ",packed_vq=0,in_order=0" "$TXMIX"
traffic_round 7 "packed, mrg_rxbuf=1, 8000 B as 4 x 2000" ",packed_vq=1,mrg_rxbuf=1" "$JUMBO" --max-pkt-len=9018 --enable-scatter
traffic_round 8 "split, mrg_rxbuf=1, 8000 B as 4 x 2000" ",packed_vq=0,mrg_rxbuf=1" "$JUMBO" --max-pkt-len=9018 --enable-scatter
readd_round 9 "split, port re-added and vswitchd restarted" ",packed_vq=0"
readd_round 10 "packed, port re-added and vswitchd restarted" ",packed_vq=1"
tap_round 11
TP_QUEUES=2 readd_round 12 "split, 2 queue pairs, port re-added and vswitchd restarted" ",packed_vq=0"
relaunch_round 13 "split, testpmd relaunched under a running switch" ",packed_vq=0"
e2e_pass
