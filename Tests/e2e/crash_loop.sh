#!/usr/bin/env bash
# A frontend killed with SIGKILL and started again, many times, while another port pair
# carries traffic (issue 6, promise 4):
#   - pair A (gen0, gen1; vhostuserclient ports): a testpmd in io mode runs for the whole
#     test, a closed loop of frames through the switch;
#   - pair B (vic0, vic1; vhostuser ports): a second testpmd connects, forwards, and is
#     killed with kill -9; then it is started again, E2E_CRASH_ROUNDS times (default 50).
# Pass: after every restart the switch serves pair B again (its rx counters grow); pair A's
# rx counters grow in every round (its traffic never stops); vswitchd never dies; and once
# pair B is gone, vswitchd's open fds and guest memory mappings (/proc/PID/fd, /proc/PID/maps)
# are back to their values from before pair B first connected.
source "$(dirname "$0")/lib.sh"

e2e_require_root
TESTPMD=${TESTPMD:-/usr/bin/dpdk-testpmd}
[[ -x $TESTPMD ]] || e2e_missing "dpdk-testpmd" "install dpdk-dev"
e2e_require_binaries
vsw_hugepages_setup "${E2E_HUGEPAGES:-1024}" || true
free=$(vsw_hugepages_free)
((free >= 300)) || e2e_fail "two testpmds need 300 free 2 MiB hugepages, have $free"
ROUNDS=${E2E_CRASH_ROUNDS:-50}

# DPDK leaves hugepage files and a run dir behind, above all when killed: remove ours.
crash_files_cleanup() {
    rm -f /dev/hugepages/vswcl[gv]map_* 2>/dev/null
    rm -rf /var/run/dpdk/vswclg /var/run/dpdk/vswclv 2>/dev/null
    return 0
}
crash_files_cleanup
E2E_CLEANUP_HOOKS+=(crash_files_cleanup)
vswitchd_start

# testpmd_cmd PREFIX MAIN_LCORE SERVER SOCK0 SOCK1 MAC0 MAC1: a 2-port io-forwarding testpmd.
testpmd_cmd() {
    local prefix=$1 main=$2 srv="" s0=$4 s1=$5 m0=$6 m1=$7
    (($3)) && srv=",server=1"
    # shellcheck disable=SC2054  # commas belong to the DPDK arguments
    CMD=("$TESTPMD" -l 0,1 --main-lcore "$main" --no-pci -m 256 --single-file-segments --file-prefix "$prefix"
        --vdev "net_virtio_user0,path=$s0,queues=1$srv,mac=$m0"
        --vdev "net_virtio_user1,path=$s1,queues=1$srv,mac=$m1"
        -- --forward-mode=io --txpkts=64 --eth-peer=0,"$m1" --eth-peer=1,"$m0"
        --nb-cores=1 --total-num-mbufs=8192 --tx-first --stats-period 5)
}

# rx_of PORT: the switch's rx packet counter of PORT on br0.
STATS=""
refresh_stats() { STATS=$(port_stats br0); }
rx_of() { awk -v p="$1" '$1 == p {print $2; found = 1} END {if (!found) print -1}' <<<"$STATS"; }

daemon_fds() { ls "/proc/$VSWITCHD_PID/fd" | wc -l; }
daemon_guest_maps() { grep -cE 'memfd:|hugepages' "/proc/$VSWITCHD_PID/maps" || true; }
daemon_maps() { wc -l <"/proc/$VSWITCHD_PID/maps"; }

vsw_ok add-br br0 >/dev/null
G0="$E2E_TMP/g0.sock" G1="$E2E_TMP/g1.sock" V0="$E2E_TMP/v0.sock" V1="$E2E_TMP/v1.sock"

# Pair A: testpmd listens, the switch connects. It forwards on CPU 0 for the whole test.
testpmd_cmd vswclg 1 1 "$G0" "$G1" 02:00:00:00:0a:00 02:00:00:00:0a:01
timeout -k 5 -s INT 3000 "${CMD[@]}" </dev/null >"$E2E_LOG_DIR/testpmd-gen.log" 2>&1 &
GEN_PID=$!
E2E_PIDS+=("$GEN_PID")
vsw_ok add-port br0 gen0 --type vhostuserclient --path "$G0" >/dev/null
vsw_ok add-port br0 gen1 --type vhostuserclient --path "$G1" >/dev/null
vsw_ok add-port br0 vic0 --type vhostuser --path "$V0" >/dev/null
vsw_ok add-port br0 vic1 --type vhostuser --path "$V1" >/dev/null
vsw_wait_for 10 test -S "$V0" -a -S "$V1" || e2e_fail "the switch did not create $V0 and $V1"

gen_flowing() { refresh_stats; (($(rx_of gen0) > 0 && $(rx_of gen1) > 0)); }
vsw_wait_for 60 gen_flowing || e2e_fail "pair A never carried traffic (see testpmd-gen.log)"
sleep 2
fds_start=$(daemon_fds) gmaps_start=$(daemon_guest_maps) maps_start=$(daemon_maps)
e2e_msg "pair A flowing; vswitchd: $fds_start fds, $gmaps_start guest mappings, $maps_start mappings"
e2e_snapshot "pair A flowing" br0

refresh_stats
gen_last0=$(rx_of gen0) gen_last1=$(rx_of gen1)
VIC_PID=""
restart_secs=()
for ((r = 1; r <= ROUNDS; r++)); do
    refresh_stats
    v0=$(rx_of vic0) v1=$(rx_of vic1)
    t0=$(date +%s.%N)
    testpmd_cmd vswclv 0 0 "$V0" "$V1" 02:00:00:00:0b:00 02:00:00:00:0b:01
    "${CMD[@]}" </dev/null >"$E2E_LOG_DIR/testpmd-victim.log" 2>&1 &
    VIC_PID=$!
    E2E_PIDS+=("$VIC_PID")
    victim_flowing() { refresh_stats; (($(rx_of vic0) > v0 && $(rx_of vic1) > v1)); }
    if ! vsw_wait_for 30 victim_flowing; then
        cp "$E2E_LOG_DIR/testpmd-victim.log" "$E2E_LOG_DIR/testpmd-victim-round$r.log"
        e2e_fail "round $r: the restarted testpmd got no traffic through the switch (vic0 $v0 -> $(rx_of vic0), vic1 $v1 -> $(rx_of vic1))"
    fi
    restart_secs+=("$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN {printf "%.2f", a - b}')")
    kill -KILL "$VIC_PID"
    wait "$VIC_PID" 2>/dev/null || true
    crash_files_cleanup
    e2e_check_daemon
    # Pair A must have moved since the last round.
    refresh_stats
    g0=$(rx_of gen0) g1=$(rx_of gen1)
    ((g0 > gen_last0 && g1 > gen_last1)) ||
        e2e_fail "round $r: pair A's traffic stopped (gen0 $gen_last0 -> $g0, gen1 $gen_last1 -> $g1)"
    gen_last0=$g0 gen_last1=$g1
    ((r % 10 == 0)) && e2e_msg "round $r: victim killed; pair A rx $g0/$g1; vswitchd $(daemon_fds) fds, $(daemon_guest_maps) guest mappings"
done

# The switch notices the last kill, unmaps and closes everything of pair B.
settled() { (($(daemon_fds) == fds_start && $(daemon_guest_maps) == gmaps_start)); }
vsw_wait_for 10 settled || true
fds_end=$(daemon_fds) gmaps_end=$(daemon_guest_maps) maps_end=$(daemon_maps)
e2e_snapshot "after $ROUNDS kills" br0
median=$(printf '%s\n' "${restart_secs[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
e2e_msg "$ROUNDS kill -9 / restart rounds; start-to-traffic median ${median}s"
e2e_msg "vswitchd fds $fds_start -> $fds_end, guest mappings $gmaps_start -> $gmaps_end, all mappings $maps_start -> $maps_end"
echo "RTT crash_loop restarts=$ROUNDS restart-median=${median}s fds=$fds_start->$fds_end guest-maps=$gmaps_start->$gmaps_end" \
    >>"$E2E_LOG_DIR/rtt.txt"
((fds_end == fds_start)) || e2e_fail "vswitchd fds did not return: $fds_start before, $fds_end after"
((gmaps_end == gmaps_start)) || e2e_fail "guest memory mappings did not return: $gmaps_start before, $gmaps_end after"
kill -0 "$GEN_PID" 2>/dev/null || e2e_fail "pair A's testpmd died"
refresh_stats
(($(rx_of gen0) > gen_last0)) || e2e_fail "pair A's traffic stopped at the end"
e2e_pass
