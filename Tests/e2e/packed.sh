#!/usr/bin/env bash
# Packed virtqueues (VIRTIO_F_RING_PACKED) against real frontends:
#   1. DPDK testpmd, two virtio-user ports with packed_vq=1, io forwarding in a closed loop
#      through the switch (the switch ports are vhostuserclient, testpmd listens).
#   2. The same with port 0 packed and port 1 split: frames cross between the two ring kinds.
#   3. A QEMU guest with packed=on pings a split-ring guest (1400-byte pings, both ways),
#      then is killed with SIGKILL, started again and pings again.
#   4. A QEMU guest with packed=on sends 8 MiB over TCP with TSO (multi-fragment frames as
#      indirect descriptors) to a split guest: same md5 on both sides, no bad descriptor.
# Pass: both switch ports' rx counters grow and testpmd receives on both ports; the guests
# ping each other; `vswitch show` lists RING_PACKED for the packed ports only.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_binaries
TESTPMD=${TESTPMD:-/usr/bin/dpdk-testpmd}
RUN_SECS=${E2E_TESTPMD_SECS:-20}

# features PORT: the negotiated feature names of a port, from `vswitch show --format json`.
features() {
    vsw show --format json | python3 -c '
import json, sys
want = sys.argv[1]
def walk(o):
    if isinstance(o, dict):
        if o.get("name") == want and "features" in o:
            print(" ".join(o["features"])); sys.exit(0)
        for v in o.values(): walk(v)
    elif isinstance(o, list):
        for v in o: walk(v)
walk(json.load(sys.stdin))' "$1"
}

testpmd_files_cleanup() {
    rm -f /dev/hugepages/vswpk[0-9]map_* 2>/dev/null
    rm -rf /var/run/dpdk/vswpk[0-9] 2>/dev/null
    return 0
}

# testpmd_start LOG SOCK0 SOCK1 PREFIX PACKED0 PACKED1: testpmd listening on both sockets.
testpmd_start() {
    local log=$1 s0=$2 s1=$3 prefix=$4
    # shellcheck disable=SC2054  # commas belong to the DPDK arguments
    local cmd=(timeout -k 5 -s INT "$RUN_SECS" "$TESTPMD" -l "0,1" --main-lcore 1 --no-pci -m 512
        --single-file-segments --file-prefix "$prefix"
        --vdev "net_virtio_user0,path=$s0,queues=1,server=1,packed_vq=$5,mac=02:00:00:00:00:00${TP_VDEV_EXTRA:-}"
        --vdev "net_virtio_user1,path=$s1,queues=1,server=1,packed_vq=$6,mac=02:00:00:00:00:01${TP_VDEV_EXTRA:-}"
        -- --forward-mode=io --txpkts=64 --eth-peer=0,02:00:00:00:00:01 --eth-peer=1,02:00:00:00:00:00
        --nb-cores=1 --total-num-mbufs=32768 --tx-first --stats-period 1)
    printf '%q ' "${cmd[@]}" >"$log.cmdline"
    "${cmd[@]}" </dev/null >"$log" 2>&1 &
    TESTPMD_PID=$!
    E2E_PIDS+=("$TESTPMD_PID")
    e2e_msg "testpmd pid $TESTPMD_PID ($log)"
}

# testpmd_rx LOG PORT: the last RX-packets figure printed for that port.
testpmd_rx() {
    tr -d '\r' <"$1" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' | awk -v want="$2" '
        /statistics for port/ { for (i = 1; i <= NF; i++) if ($(i) == "port") port = $(i + 1); next }
        /^[ ]*RX-packets:/ && port == want { v = $2 }
        /Accumulated forward statistics/ { port = "" }
        END { print (v == "" ? -1 : v) }'
}

rx_of() { port_stats "$1" | awk -v p="$2" '$1 == p {print $2}'; }

# testpmd_round N PACKED0 PACKED1
testpmd_round() {
    local n=$1 pk0=$2 pk1=$3 br="brp$1"
    local s0="$E2E_TMP/pk$n-0.sock" s1="$E2E_TMP/pk$n-1.sock" log="$E2E_LOG_DIR/testpmd-$n.log"
    local p0="pk${n}a" p1="pk${n}b"
    e2e_msg "=== testpmd round $n: packed_vq=$pk0 on $p0, packed_vq=$pk1 on $p1"
    vsw_ok add-br "$br" >/dev/null
    testpmd_start "$log" "$s0" "$s1" "vswpk$n" "$pk0" "$pk1"
    vsw_ok add-port "$br" "$p0" --type vhostuserclient --path "$s0" >/dev/null
    vsw_ok add-port "$br" "$p1" --type vhostuserclient --path "$s1" >/dev/null
    vsw_wait_log "$log" 'Start automatic packet forwarding|Port statistics|statistics for port' 30 "$TESTPMD_PID" ||
        e2e_fail "round $n: testpmd did not start forwarding (see testpmd-$n.log)"
    sleep 4
    e2e_snapshot "round $n: testpmd running" "$br"
    local f0 f1
    f0=$(features "$p0")
    f1=$(features "$p1")
    e2e_msg "round $n: $p0 features: $f0"
    e2e_msg "round $n: $p1 features: $f1"
    if ((pk0)); then [[ " $f0 " == *" RING_PACKED "* ]] || e2e_fail "round $n: $p0 did not negotiate RING_PACKED"
    else [[ " $f0 " != *" RING_PACKED "* ]] || e2e_fail "round $n: $p0 negotiated RING_PACKED without packed_vq"; fi
    if ((pk1)); then [[ " $f1 " == *" RING_PACKED "* ]] || e2e_fail "round $n: $p1 did not negotiate RING_PACKED"
    else [[ " $f1 " != *" RING_PACKED "* ]] || e2e_fail "round $n: $p1 negotiated RING_PACKED without packed_vq"; fi
    if [[ ${TP_VDEV_EXTRA:-} == *in_order=1* ]]; then
        [[ " $f0 " == *" IN_ORDER "* && " $f1 " == *" IN_ORDER "* ]] || e2e_fail "round $n: IN_ORDER not negotiated"
    fi
    local a0 a1 b0 b1
    a0=$(rx_of "$br" "$p0"); a1=$(rx_of "$br" "$p1")
    sleep 3
    b0=$(rx_of "$br" "$p0"); b1=$(rx_of "$br" "$p1")
    e2e_msg "round $n: switch rx packets $p0 $a0 -> $b0, $p1 $a1 -> $b1 ($(((b0 - a0 + b1 - a1) / 3)) frames/s)"
    wait "$TESTPMD_PID" 2>/dev/null && rc=0 || rc=$?
    testpmd_files_cleanup
    ((rc == 0 || rc == 124)) || e2e_msg "round $n: testpmd exited with status $rc"
    local rx0 rx1
    rx0=$(testpmd_rx "$log" 0)
    rx1=$(testpmd_rx "$log" 1)
    e2e_msg "round $n: testpmd RX-packets port0=$rx0 port1=$rx1"
    e2e_check_daemon
    [[ -n $a0 && -n $a1 && -n $b0 && -n $b1 ]] || e2e_fail "round $n: no counters for $p0/$p1 in port stats"
    ((b0 > a0 && b1 > a1)) || e2e_fail "round $n: switch rx counters did not grow on both ports"
    ((rx0 > 0 && rx1 > 0)) || e2e_fail "round $n: testpmd received nothing on a port (port0=$rx0 port1=$rx1)"
    vsw_ok del-br "$br" >/dev/null
}

guest_round() {
    local br=br0 mode=server
    e2e_msg "=== QEMU: vm1 packed=on, vm2 split"
    vsw_ok add-br "$br" >/dev/null
    vsw_ok add-port "$br" vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
    vsw_ok add-port "$br" vm2 --type vhostuserclient --path "$E2E_TMP/vm2.sock" >/dev/null
    GUEST_WAIT_PEER=10.0.0.1 \
        e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" "$mode" 10.0.0.2/24 "ping -c 10 -s 1400 10.0.0.1"
    GUEST_DEVICE_OPTS=",packed=on" GUEST_WAIT_PEER=10.0.0.2 \
        e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" "$mode" 10.0.0.1/24 "ping -c 10 -s 1400 10.0.0.2"
    e2e_wait_up vm1
    e2e_wait_up vm2
    e2e_ping_check vm1 1
    e2e_ping_check vm2 1
    e2e_snapshot "after ping" "$br"
    local f1 f2
    f1=$(features vm1)
    f2=$(features vm2)
    e2e_msg "vm1 features: $f1"
    e2e_msg "vm2 features: $f2"
    [[ " $f1 " == *" RING_PACKED "* ]] || e2e_fail "vm1 (packed=on) did not negotiate RING_PACKED"
    [[ " $f2 " != *" RING_PACKED "* ]] || e2e_fail "vm2 (split) negotiated RING_PACKED"
    e2e_check_daemon
    expect_fdb_has "$br" 52:54:00:00:00:01 52:54:00:00:00:02
    expect_traffic "$br" vm1 vm2

    # kill -9 the packed guest and start it again: the switch stops its packed rings
    # (GET_VRING_BASE), reconnects, and the new QEMU's rings run.
    e2e_msg "kill -9 vm1 (pid ${GUEST_PID[vm1]}) and start it again"
    guest_kill vm1 KILL
    sleep 1
    e2e_check_daemon
    local rx_before rx_after
    rx_before=$(port_counter "$br" vm1 rx)
    GUEST_DEVICE_OPTS=",packed=on" GUEST_WAIT_PEER=10.0.0.2 \
        e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" "$mode" 10.0.0.1/24 "ping -c 5 -s 1400 10.0.0.2"
    e2e_wait_up vm1
    e2e_ping_check vm1 1
    rx_after=$(port_counter "$br" vm1 rx)
    ((rx_after > rx_before)) || e2e_fail "vm1 rx counter did not grow after the restart ($rx_before -> $rx_after)"
    [[ " $(features vm1) " == *" RING_PACKED "* ]] || e2e_fail "restarted vm1 did not negotiate RING_PACKED"
}

# guest_tcp_round: a packed=on guest sends 8 MiB over TCP with TSO to a split guest. Linux
# puts every multi-fragment TSO frame of a packed ring in one indirect descriptor.
guest_tcp_round() {
    local br=brt mb=${PACKED_TCP_MB:-8}
    e2e_msg "=== QEMU: packed=on guest sends $mb MiB over TCP (TSO) to a split guest"
    vsw_ok add-br "$br" >/dev/null
    vsw_ok add-port "$br" ts --type vhostuserclient --path "$E2E_TMP/ts.sock" >/dev/null
    vsw_ok add-port "$br" tr --type vhostuserclient --path "$E2E_TMP/tr.sock" >/dev/null
    e2e_boot tr 52:54:00:00:02:02 "$E2E_TMP/tr.sock" server 10.0.2.2/24 \
        "mkfifo /tmp/in; nc -l -p 5001 < /tmp/in > /tmp/r & exec 3>/tmp/in; wait \$!; md5sum /tmp/r; wc -c < /tmp/r"
    GUEST_DEVICE_OPTS=",packed=on" GUEST_WAIT_PEER=10.0.2.2 e2e_boot ts 52:54:00:00:02:01 "$E2E_TMP/ts.sock" server 10.0.2.1/24 \
        "dd if=/dev/urandom of=/tmp/d bs=64k count=$((mb * 16)) 2>/dev/null; md5sum /tmp/d; sleep 1; nc -w 3 10.0.2.2 5001 < /tmp/d"
    e2e_wait_up tr
    e2e_wait_up ts
    guest_wait_cmd ts 400 >/dev/null || e2e_fail "packed TCP: the sender did not finish"
    guest_wait_cmd tr 60 >/dev/null || e2e_fail "packed TCP: the receiver did not finish"
    local sent got
    sent=$(guest_cmd_output ts | grep -o '^[0-9a-f]\{32\}' | head -n1)
    got=$(guest_cmd_output tr | grep -o '^[0-9a-f]\{32\}' | head -n1)
    [[ -n $sent && $sent == "$got" ]] || e2e_fail "packed TCP: data differs (sent md5 $sent, received $got)"
    [[ " $(features ts) " == *" RING_PACKED "* ]] || e2e_fail "packed TCP: the sender did not negotiate RING_PACKED"
    local s
    s=$(vsw port stats "$br" ts --format json |
        python3 -c 'import json,sys; s=json.load(sys.stdin)["stats"][0]; print(s["rxPackets"], s["rxBytes"], s["rxDropBadDescriptor"])')
    local rxp rxb bad
    read -r rxp rxb bad <<<"$s"
    e2e_msg "packed TCP: md5 ok; sender frames avg $((rxb / (rxp > 0 ? rxp : 1))) bytes, $bad bad descriptors"
    ((bad == 0)) || e2e_fail "packed TCP: $bad frames from the packed guest dropped as bad descriptors"
    ((rxb / (rxp > 0 ? rxp : 1) > 1514)) || e2e_fail "packed TCP: the sender did not use TSO"
    guest_kill ts
    guest_kill tr
    vsw_ok del-br "$br" >/dev/null
}

[[ -x $TESTPMD ]] || e2e_missing "dpdk-testpmd" "install dpdk-dev"
e2e_require_guest
vsw_hugepages_setup "${E2E_HUGEPAGES:-1024}" || true
free=$(vsw_hugepages_free)
((free >= 256)) || e2e_fail "testpmd needs 256 free 2 MiB hugepages (-m 512), have $free"
E2E_CLEANUP_HOOKS+=(testpmd_files_cleanup)
vswitchd_start
testpmd_round 1 1 1
testpmd_round 2 1 0
TP_VDEV_EXTRA=",in_order=1" testpmd_round 3 1 1   # packed with VIRTIO_F_IN_ORDER negotiated
guest_round
guest_tcp_round
e2e_pass
