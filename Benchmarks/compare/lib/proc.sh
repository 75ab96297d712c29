# shellcheck shell=bash
# /proc sampling for Benchmarks/compare/run (sourced by it): CPU ticks of processes and
# threads, steal time, RSS, and the check for other busy processes before and during a run.
# Uses run's D and HP_NEED, and OVS_DIR (systems/ovs.sh) to count OVS's daemons as ours.
# shellcheck disable=SC2034 # DISTURBED is read by run

CLK_TCK=$(getconf CLK_TCK)

# proc_ticks PID [TID]: utime+stime clock ticks of a process (or one of its threads)
proc_ticks() {
    local f=/proc/$1/stat
    [[ -n ${2:-} ]] && f=/proc/$1/task/$2/stat
    sed 's/.*) //' "$f" 2>/dev/null | awk '{ print $12 + $13 }'
}
# thread_ticks PID: "tid ticks" for every thread
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        [[ -r $t/stat ]] && echo "${t##*/} $(sed 's/.*) //' "$t/stat" | awk '{ print $12 + $13 }')"
    done
}
# busiest_thread_pct FILE0 FILE1 SECONDS: CPU % of the thread that used most CPU between two
# thread_ticks snapshots
busiest_thread_pct() {
    awk -v dt="$3" -v hz="$CLK_TCK" 'NR == FNR { a[$1] = $2; next }
        ($1 in a) { d = $2 - a[$1]; if (d > m) m = d }
        END { p = 100 * m / hz / dt; printf "%.1f", (p > 100 ? 100 : p) }' "$1" "$2"
}
# cpu_stat: "cpu0 total steal" per CPU from /proc/stat (steal: time the host ran something else)
cpu_stat() { awk '/^cpu[0-9]/ { t = 0; for (i = 2; i <= NF; i++) t += $i; print $1, t, $9 }' /proc/stat; }
# steal_pct FILE0 FILE1: "pct0 pct1 ..." steal share of each CPU between two cpu_stat snapshots
steal_pct() {
    awk 'NR == FNR { t[$1] = $2; s[$1] = $3; next }
        { d = $2 - t[$1]; printf "%s%.1f", (n++ ? " " : ""), (d > 0 ? 100 * ($3 - s[$1]) / d : 0) }
        END { print "" }' "$1" "$2"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# proc_snapshot: "pid ppid ticks comm" for every process
proc_snapshot() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk '{
        pid = $1; c = $0; sub(/^[0-9]+ \(/, "", c); comm = c; sub(/\) [A-Za-z] .*/, "", comm)
        gsub(/[ ,]/, "_", comm); r = c; sub(/.*\) /, "", r); split(r, f, " ")
        print pid, f[2], f[12] + f[13], comm }'
}
# foreign_cpu SNAP0 SNAP1 SECONDS THRESHOLD_PCT: processes outside this script's tree (and
# outside OVS's daemonised processes) that used >= THRESHOLD % of a CPU between the snapshots
foreign_cpu() {
    local ours="$$"
    if [[ -n $OVS_DIR ]]; then
        local f
        for f in "$OVS_DIR"/*.pid; do [[ -f $f ]] && ours+=" $(cat "$f")"; done
    fi
    awk -v dt="$3" -v hz="$CLK_TCK" -v th="$4" -v ours="$ours" '
        NR == FNR { t0[$1] = $3; next }
        { pp[$1] = $2; t1[$1] = $3; cm[$1] = $4 }
        END {
            n = split(ours, o, " "); for (i = 1; i <= n; i++) mine[o[i]] = 1
            for (p in pp) { q = p; k = 0; while (q != "" && q > 1 && k++ < 64) { if (q in mine) { own[p] = 1; break } q = pp[q] } }
            for (p in t1) if (!(p in own) && (p in t0)) {
                pct = 100 * (t1[p] - t0[p]) / hz / dt
                if (pct >= th) printf "%s(%s) %.0f%%\n", cm[p], p, pct
            }
        }' "$1" "$2"
}
# named_busy: processes that distort a closed-loop measurement whatever their CPU (not ours)
named_busy() {
    local p comm out=""
    while read -r p comm; do
        [[ -n $p ]] || continue
        pstree_ours "$p" && continue
        out+="$comm($p) "
    done < <(pgrep -l '^(qemu-system|dpdk-testpmd|ovs-vswitchd|vswitchd|vswitch-microbe|testpmd)' 2>/dev/null)
    printf '%s' "$out"
}
pstree_ours() { # PID: true when PID descends from this script or is one of OVS's daemons we started
    local q=$1 k=0
    if [[ -n $OVS_DIR ]] && cat "$OVS_DIR"/*.pid 2>/dev/null | grep -qx "$1"; then return 0; fi
    while [[ -n $q && $q -gt 1 && k -lt 64 ]]; do
        [[ $q == "$$" ]] && return 0
        q=$(awk '{ sub(/.*\) /, ""); print $2 }' "/proc/$q/stat" 2>/dev/null)
        k=$((k + 1))
    done
    return 1
}
# busy_report: empty when the machine is quiet enough to measure, else what is wrong
busy_report() {
    local s0=$D/.snap0 s1=$D/.snap1 r hp
    proc_snapshot >"$s0"; sleep 2; proc_snapshot >"$s1"
    r="$(named_busy)$(foreign_cpu "$s0" "$s1" 2 20 | tr '\n' ' ')"
    hp=$(vsw_hugepages_free)
    ((hp >= HP_NEED)) || r+="only $hp free hugepages (need $HP_NEED) "
    printf '%s' "$r"
}
# wait_quiet MAX_SECONDS: wait until busy_report is empty; sets DISTURBED (empty when quiet)
wait_quiet() {
    local max=$1 start=$SECONDS r warned=0
    while true; do
        r=$(busy_report)
        if [[ -z $r ]]; then DISTURBED=""; return 0; fi
        if ((SECONDS - start >= max)); then
            DISTURBED=$r
            vsw_warn "!!! MACHINE BUSY, measuring anyway (figures are distorted): $r"
            return 1
        fi
        if ((!warned)); then
            vsw_warn "machine busy: $r-- waiting up to $((max - (SECONDS - start))) s"
            warned=1
        fi
        sleep 10
    done
}
