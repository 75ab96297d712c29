# shellcheck shell=bash
# testpmd control for Benchmarks/compare/run (sourced by it): each testpmd is driven through a
# fifo on its stdin, its output unbuffered into a log; the generator (gen_start); parsers for
# its port and forwarding statistics. Uses run's TESTPMD, LIFE, PREFIX, GEN_* settings.
# shellcheck disable=SC2034 # TSC_MHZ is set and read by run and the systems

declare -A TP_PID=() TP_FD=() TP_LOG=()
TSC_MHZ="" # the TSC rate testpmd reports with --record-core-cycles (set by run_one)

tp_start() { # NAME DIR TESTPMD-ARGS...
    local name=$1 dir=$2 fd
    shift 2
    local log=$dir/$name.log fifo=$dir/$name.in
    mkfifo "$fifo"
    exec {fd}<>"$fifo"
    local cmd=(timeout -k 5 -s INT "$LIFE" stdbuf -o0 -e0 "$TESTPMD" "$@")
    printf '%q ' "${cmd[@]}" >"$log.cmdline"
    "${cmd[@]}" <"$fifo" >"$log" 2>&1 {fd}>&- &
    TP_PID[$name]=$!
    TP_FD[$name]=$fd
    TP_LOG[$name]=$log
}
tp_send() { printf '%s\n' "$2" >&"${TP_FD[$1]}"; }
# tp_cmd NAME COMMAND REGEX COUNT TIMEOUT: send COMMAND, wait until its output has COUNT lines
# matching REGEX (or TIMEOUT seconds), print that output
tp_cmd() {
    local name=$1 text=$2 re=$3 count=$4 to=$5 log=${TP_LOG[$1]} off out n
    off=$(stat -c %s "$log")
    tp_send "$name" "$text"
    local deadline=$((SECONDS + to))
    while true; do
        out=$(tail -c +$((off + 1)) "$log" | tr -d '\r')
        n=$(grep -cE -- "$re" <<<"$out")
        ((n >= count)) && break
        ((SECONDS >= deadline)) && break
        kill -0 "${TP_PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    printf '%s\n' "$out"
}
tp_why() { # NAME: why testpmd NAME is not at its prompt
    if kill -0 "${TP_PID[$1]:-0}" 2>/dev/null; then
        echo "still starting (for a vhost-user peer, it waits until the peer connects)"
    else
        local e
        e=$(grep -E 'Cause:|FATAL|Cannot|[Ee]rror' "${TP_LOG[$1]}" 2>/dev/null | tail -n 2 | tr -s ' \n' ' ')
        echo "it exited${e:+: $e}"
    fi
}
tp_wait_prompt() { # NAME TIMEOUT
    vsw_wait_log "${TP_LOG[$1]}" 'testpmd> ' "$2" "${TP_PID[$1]}"
}
# parse `show port stats all`: "pps0 pps1 bps0 bps1"
parse_port_stats() {
    awk '/NIC statistics for port/ { for (i = 1; i <= NF; i++) if ($i == "port") p = $(i + 1) }
         /Rx-pps:/ { pps[p] = $2; bps[p] = $4 }
         END { printf "%s %s %s %s\n", pps[0], pps[1], bps[0], bps[1] }'
}
# parse `show fwd stats all` (with --record-core-cycles): "cycles packets mhz tx_dropped"
parse_fwd_stats() {
    awk '/Accumulated forward statistics/ { acc = 1 }
         acc && /TX-dropped:/ { for (i = 1; i <= NF; i++) if ($i == "TX-dropped:") txd = $(i + 1) }
         acc && /RX-dropped:/ { for (i = 1; i <= NF; i++) if ($i == "RX-dropped:") rxd = $(i + 1) }
         /CPU cycles\/packet=/ {
             l = $0; sub(/.*cycles=/, "", l); split(l, a, " "); cyc = a[1]
             l = $0; sub(/.*packets=/, "", l); split(l, b, /[ )]/); pk = b[1]
             l = $0; sub(/.* at /, "", l); split(l, c, " "); mhz = c[1] }
         END { printf "%s %s %s %s\n", (cyc == "" ? 0 : cyc), (pk == "" ? 0 : pk), mhz, txd + rxd }'
}

tp_stop() { # NAME: quit testpmd NAME (politely, then by signals) and close its fifo
    local name=$1 pid=${TP_PID[$1]:-} fd=${TP_FD[$1]:-} i child
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        [[ -n $fd ]] && { printf 'quit\n' >&"$fd"; } 2>/dev/null
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            child=$(pgrep -P "$pid" | head -n1)
            vsw_kill_pid "$pid" 12 # timeout(1) forwards TERM, then KILLs testpmd after 5 s
            [[ -n $child ]] && vsw_kill_pid "$child" 2
        fi
    fi
    [[ -n $pid ]] && wait "$pid" 2>/dev/null
    if [[ -n $fd ]]; then exec {fd}>&-; fi
    unset "TP_PID[$name]" "TP_FD[$name]"
}

# shellcheck disable=SC2054 # "-l 0,1" is one argument
GEN_COMMON=(-l 0,1 --main-lcore 1 --no-pci -m 512 --single-file-segments)
gen_start() { # DIR SIZE: the generator; it listens on DIR/v0.sock and DIR/v1.sock (server=1)
    local dir=$1 size=$2
    tp_start gen "$dir" "${GEN_COMMON[@]}" --file-prefix "$PREFIX-gen" \
        --vdev "net_virtio_user0,path=$dir/v0.sock,queues=$GEN_QUEUES,server=1,mac=$GEN_MAC0$GEN_RING" \
        --vdev "net_virtio_user1,path=$dir/v1.sock,queues=$GEN_QUEUES,server=1,mac=$GEN_MAC1$GEN_RING" \
        -- -i --forward-mode=io "--txpkts=$size" "--eth-peer=0,$GEN_MAC1" "--eth-peer=1,$GEN_MAC0" \
        "--rxq=$GEN_QUEUES" "--txq=$GEN_QUEUES" --nb-cores=1 --total-num-mbufs=32768 --record-core-cycles
}
