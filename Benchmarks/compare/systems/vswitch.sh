# shellcheck shell=bash
# The "vswitch" system of Benchmarks/compare/run (sourced by it): vswitchd on CPU 1 with
# bridge br0 and two vhostuserclient ports to the generator (optionally a pcap port,
# VSWITCH_CAPTURE=1); switch figures from `vswitch dp-stats` and the forwarding thread's ticks.
# shellcheck disable=SC2034 # SW_*, VSW_*, RSS, CAPTURE_STATS are read by run

VSWD_PID=""

vswd_stop() {
    [[ -n $VSWD_PID ]] || return 0
    vsw_kill_pid "$VSWD_PID" 15
    VSWD_PID=""
}

vswitch_setup() {
    local dir=$1 size=$2 c
    taskset -c 1 "$VSWITCHD" --control "$dir/ctl.sock" --run-dir "$dir" --forwarding-cpu 1 \
        --log-level warning >"$dir/vswitchd.log" 2>&1 &
    VSWD_PID=$!
    vsw_wait_for 15 test -S "$dir/ctl.sock" || { echo "vswitchd did not create its control socket"; return 1; }
    c=("$VSWITCH" --control "$dir/ctl.sock")
    "${c[@]}" add-br br0 >/dev/null || { echo "add-br failed"; return 1; }
    gen_start "$dir" "$size"
    "${c[@]}" add-port br0 p0 --type vhostuserclient --path "$dir/v0.sock" >/dev/null || { echo "add-port p0 failed"; return 1; }
    "${c[@]}" add-port br0 p1 --type vhostuserclient --path "$dir/v1.sock" >/dev/null || { echo "add-port p1 failed"; return 1; }
    if [[ -n ${VSWITCH_CAPTURE:-} ]]; then
        local f=() tid
        [[ -n ${VSWITCH_CAPTURE_FILTER:-} ]] && f=(--filter "$VSWITCH_CAPTURE_FILTER")
        "${c[@]}" add-port br0 cap --type pcap --file "$dir/capture.pcap" --rotate-size 100M --rotate-count 2 "${f[@]}" \
            >/dev/null || { echo "add-port cap failed"; return 1; }
        # The writer is not the forwarding thread: like the control thread, it belongs off its CPU.
        for tid in /proc/"$VSWD_PID"/task/*; do
            [[ $(cat "$tid/comm" 2>/dev/null) == vswitch-pcap ]] && taskset -p -c "${VSWITCH_CAPTURE_CPU:-0}" "${tid##*/}" >/dev/null
        done
    fi
}
vsw_dp() { # DIR: dp-stats "polls emptyPolls sleeps frames cpuSeconds busyCycles awakeCycles"
    "$VSWITCH" --control "$1/ctl.sock" dp-stats --format json 2>/dev/null | awk '
        { gsub(/[",:{}]/, " ") }
        $1 == "polls" { p = $2 } $1 == "emptyPolls" { e = $2 } $1 == "sleeps" { s = $2 }
        $1 == "frames" { f = $2 } $1 == "cpuSeconds" { c = $2 }
        $1 == "busyCycles" { b = $2 } $1 == "awakeCycles" { w = $2 }
        END { if (p != "") print p, e, s, f, c, b + 0, w + 0 }'
}
vswitch_snap0() { DP0=$(vsw_dp "$1"); thread_ticks "$VSWD_PID" >"$1/threads0.txt"; }
vswitch_snap1() { DP1=$(vsw_dp "$1"); thread_ticks "$VSWD_PID" >"$1/threads1.txt"; RSS=$(rss_kb "$VSWD_PID"); }
# sets SW_* from the snapshots over DT seconds
vswitch_figures() {
    local dir=$1 dt=$2
    SW_CPU=$(busiest_thread_pct "$dir/threads0.txt" "$dir/threads1.txt" "$dt")
    if [[ -n $DP0 && -n $DP1 ]]; then
        read -r SW_BUSY SW_CPU2 SW_CYC VSW_EMPTY VSW_SLEEPS VSW_FPB SW_PKTS SW_BCYC <<<"$(awk -v a="$DP0" -v b="$DP1" \
            -v dt="$dt" -v mhz="${TSC_MHZ:-0}" 'BEGIN {
                split(a, x, " "); split(b, y, " ")
                polls = y[1] - x[1]; empty = y[2] - x[2]; sleeps = y[3] - x[3]; fr = y[4] - x[4]; cpu = y[5] - x[5]
                bc = y[6] - x[6]; wc = y[7] - x[7]
                # time-based: TSC cycles in passes that forwarded / cycles awake
                busy = wc > 0 ? 100 * bc / wc : (polls > 0 ? 100 * (polls - empty) / polls : 0)
                bcyc = (fr > 0 && bc > 0) ? sprintf("%.0f", bc / fr) : "-"
                cyc = (fr > 0 && mhz > 0) ? cpu * mhz * 1e6 / fr : ""
                fpb = (polls - empty) > 0 ? fr / (polls - empty) : 0
                emp = (polls > 0) ? 100 * empty / polls : 0
                cpct = 100 * cpu / dt; if (cpct > 100) cpct = 100 # dp-stats and the window differ by ms
                printf "%.1f %.1f %s %.1f %.0f %.1f %d %s\n", busy, cpct, (cyc == "" ? "-" : sprintf("%.0f", cyc)),
                    emp, sleeps / dt, fpb, fr, bcyc }')"
        [[ $SW_CYC == - ]] && SW_CYC=""
        [[ $SW_BCYC == - ]] && SW_BCYC=""
        # dp-stats' own CPU figure is the forwarding thread's, exactly
        SW_CPU=$SW_CPU2
    fi
}
vswitch_teardown() {
    local dir=$1
    [[ -n $VSWD_PID ]] || return 0
    if ! kill -0 "$VSWD_PID" 2>/dev/null; then
        wait "$VSWD_PID" 2>/dev/null
        NOTE+="vswitchd exited during the run (status $?) "
    else
        "$VSWITCH" --control "$dir/ctl.sock" show >"$dir/show.txt" 2>&1
        "$VSWITCH" --control "$dir/ctl.sock" port stats br0 >"$dir/port-stats.txt" 2>&1
        SW_DROPS=$("$VSWITCH" --control "$dir/ctl.sock" port stats br0 --format json 2>/dev/null |
            awk '{ gsub(/[",:]/, " ") } $1 == "port" { p = $2 } $1 ~ /Drop/ && p != "cap" { s += $2 } END { print s + 0 }')
        [[ -n ${VSWITCH_CAPTURE:-} ]] && CAPTURE_STATS=$("$VSWITCH" --control "$dir/ctl.sock" show --format json 2>/dev/null |
            awk '{ gsub(/[",:]/, " ") } $1 == "framesWritten" { w = $2 } $1 == "framesDropped" { d = $2 }
                 $1 == "framesFilteredOut" { f = $2 } END { printf "capture: %d written, %d dropped, %d filtered out", w, d, f }')
    fi
    vswd_stop
}
