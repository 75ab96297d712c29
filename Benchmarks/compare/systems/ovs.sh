# shellcheck shell=bash
# The "ovs" system of Benchmarks/compare/run (sourced by it): OVS-DPDK 3.1 (a fresh database
# and ovs-vswitchd-dpdk per run, PMD on CPU 1), a netdev bridge with two dpdkvhostuserclient
# ports; switch figures from pmd-stats-show and the PMD thread's ticks.
# shellcheck disable=SC2034 # SW_*, RSS are read by run

OVS_DIR=""

ovs_stop() {
    [[ -n $OVS_DIR ]] || return 0
    local f
    for f in "$OVS_DIR/vswitchd.pid" "$OVS_DIR/ovsdb.pid"; do
        [[ -f $f ]] && vsw_kill_pid "$(cat "$f")" 20
    done
    OVS_DIR=""
}

ovs_setup() {
    local dir=$1 size=$2 i
    OVS_DIR=$dir/ovs
    mkdir -p "$OVS_DIR"
    export OVS_RUNDIR=$OVS_DIR OVS_LOGDIR=$OVS_DIR OVS_DBDIR=$OVS_DIR
    local V=(ovs-vsctl --timeout=30 "--db=unix:$OVS_DIR/db.sock")
    ovsdb-tool create "$OVS_DIR/conf.db" /usr/share/openvswitch/vswitch.ovsschema || { echo "ovsdb-tool create failed"; return 1; }
    ovsdb-server "$OVS_DIR/conf.db" --remote="punix:$OVS_DIR/db.sock" --pidfile="$OVS_DIR/ovsdb.pid" \
        --detach --log-file="$OVS_DIR/ovsdb.log" -vconsole:off || { echo "ovsdb-server failed"; return 1; }
    "${V[@]}" --no-wait init
    "${V[@]}" --no-wait set Open_vSwitch . other_config:dpdk-init=true other_config:dpdk-lcore-mask=0x2 \
        other_config:pmd-cpu-mask=0x2 other_config:dpdk-socket-mem=512 \
        "other_config:dpdk-extra=--no-pci --file-prefix=$PREFIX-ovs"
    taskset -c 1 "$OVS_VSWITCHD" "unix:$OVS_DIR/db.sock" --pidfile="$OVS_DIR/vswitchd.pid" --detach \
        --log-file="$OVS_DIR/vswitchd.log" -vconsole:off || { echo "ovs-vswitchd-dpdk failed to start"; return 1; }
    vsw_wait_for 60 bash -c "[[ \$(${V[*]} get Open_vSwitch . dpdk_initialized 2>/dev/null) == true ]]" ||
        { echo "OVS-DPDK did not initialise DPDK"; return 1; }
    OVS_PID=$(cat "$OVS_DIR/vswitchd.pid")
    OVS_CTL=$(ls "$OVS_DIR"/ovs-vswitchd*."$OVS_PID".ctl 2>/dev/null | head -n1)
    [[ -n $OVS_CTL ]] || { echo "no ovs-vswitchd control socket"; return 1; }
    "${V[@]}" add-br br0 -- set bridge br0 datapath_type=netdev || { echo "OVS add-br failed"; return 1; }
    gen_start "$dir" "$size"
    for i in 0 1; do
        "${V[@]}" add-port br0 "p$i" -- set Interface "p$i" type=dpdkvhostuserclient \
            "options:vhost-server-path=$dir/v$i.sock" || { echo "OVS add-port p$i failed"; return 1; }
    done
}
ovs_snap0() {
    ovs-appctl -t "$OVS_CTL" dpif-netdev/pmd-stats-clear >/dev/null 2>&1
    thread_ticks "$OVS_PID" >"$1/threads0.txt"
}
ovs_snap1() {
    ovs-appctl -t "$OVS_CTL" dpif-netdev/pmd-stats-show >"$1/pmd-stats.txt" 2>&1
    thread_ticks "$OVS_PID" >"$1/threads1.txt"
    RSS=$(rss_kb "$OVS_PID")
}
ovs_figures() {
    local dir=$1 dt=$2
    SW_CPU=$(busiest_thread_pct "$dir/threads0.txt" "$dir/threads1.txt" "$dt")
    # pmd-stats-show: "processing cycles: N (P%)", "avg cycles per packet: A (...)",
    # "avg processing cycles per packet: B (...)", "packets received: N"
    read -r SW_BUSY SW_CYC SW_BCYC SW_PKTS <<<"$(awk '
        /processing cycles:/ && !/per packet/ { p = $NF; gsub(/[()%]/, "", p) }
        /avg cycles per packet:/ { c = $5 }
        /avg processing cycles per packet:/ { b = $6 }
        /packets received:/ && n == "" { n = $3 } # the pmd thread block comes first
        END { printf "%s %s %s %s\n", (p == "" ? "-" : p), (c == "" ? "-" : c), (b == "" ? "-" : b), (n == "" ? 0 : n) }' "$dir/pmd-stats.txt")"
    [[ $SW_BUSY == - ]] && SW_BUSY=""
    [[ $SW_CYC == - ]] && SW_CYC=""
    [[ $SW_BCYC == - ]] && SW_BCYC=""
}
ovs_teardown() {
    local dir=$1
    [[ -n $OVS_DIR ]] || return 0
    if [[ -n ${OVS_PID:-} ]] && ! kill -0 "$OVS_PID" 2>/dev/null; then
        NOTE+="ovs-vswitchd exited during the run "
    else
        ovs-vsctl --timeout=10 "--db=unix:$OVS_DIR/db.sock" show >"$dir/show.txt" 2>&1
        ovs-appctl -t "$OVS_CTL" dpctl/show -s >"$dir/dpctl.txt" 2>&1
        # p0 and p1 only: br0's internal port (down) drops what is flooded to it
        SW_DROPS=$(for p in p0 p1; do
            ovs-vsctl --timeout=10 "--db=unix:$OVS_DIR/db.sock" get Interface "$p" statistics 2>/dev/null
        done | tr ',{}' '\n\n\n' | awk -F= '$1 ~ /(rx|tx)_dropped$/ { s += $2 } END { print s + 0 }')
    fi
    ovs_stop
    unset OVS_RUNDIR OVS_LOGDIR OVS_DBDIR
}
