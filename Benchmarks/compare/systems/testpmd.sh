# shellcheck shell=bash
# The "testpmd" system of Benchmarks/compare/run (sourced by it): a second testpmd with two
# net_vhost ports in io mode, forwarding lcore on CPU 1 (a bare forwarder, no switching);
# switch figures from its --record-core-cycles forwarding statistics.
# shellcheck disable=SC2034 # SW_*, RSS are read by run

testpmd_setup() {
    local dir=$1 size=$2
    gen_start "$dir" "$size"
    # the reference: forwarding lcore on CPU 1, main lcore 0 (idle at its prompt)
    tp_start ref "$dir" -l 0,1 --main-lcore 0 --no-pci -m 512 --file-prefix "$PREFIX-ref" \
        --vdev "net_vhost0,iface=$dir/v0.sock,client=1,queues=1" \
        --vdev "net_vhost1,iface=$dir/v1.sock,client=1,queues=1" \
        -- -i --forward-mode=io --nb-cores=1 --record-core-cycles
}
testpmd_snap0() {
    tp_send ref 'clear fwd stats all'
    REF_T0=$(now)
    thread_ticks "${TP_REF_CHILD}" >"$1/threads0.txt" 2>/dev/null
}
testpmd_snap1() {
    local out
    out=$(tp_cmd ref 'show fwd stats all' 'CPU cycles/packet' 1 5)
    REF_T1=$(now)
    printf '%s\n' "$out" >"$1/ref-fwd-stats.txt"
    REF_FWD=$(parse_fwd_stats <<<"$out")
    thread_ticks "${TP_REF_CHILD}" >"$1/threads1.txt" 2>/dev/null
    RSS=$(rss_kb "$TP_REF_CHILD")
}
testpmd_figures() {
    local dir=$1 dt=$2 cyc pk mhz rdt
    SW_CPU=$(busiest_thread_pct "$dir/threads0.txt" "$dir/threads1.txt" "$dt")
    read -r cyc pk mhz _ <<<"$REF_FWD"
    rdt=$(calc "$REF_T1 - $REF_T0")
    mhz=${mhz:-$TSC_MHZ}
    SW_PKTS=$pk
    if [[ -n $mhz ]] && ((${pk:-0} > 0)); then
        SW_BUSY=$(calc "sprintf(\"%.1f\", 100 * $cyc / ($mhz * 1e6 * $rdt))")
        SW_BCYC=$(calc "sprintf(\"%.0f\", $cyc / $pk)")
        SW_CYC=$(calc "sprintf(\"%.0f\", $mhz * 1e6 * $rdt / $pk)")
    fi
}
testpmd_teardown() {
    if [[ -n ${TP_PID[ref]:-} ]] && ! kill -0 "${TP_PID[ref]}" 2>/dev/null; then
        NOTE+="the reference testpmd exited during the run "
    fi
    tp_stop ref
}
