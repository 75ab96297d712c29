#!/usr/bin/env bash
# Forwarding microbenchmark: ns/frame and allocations/frame (wall clock, median of rounds),
# then instructions per forwarded frame inside ForwardingEngine.pollOnce under callgrind
# (repeatable on a noisy machine: it counts instructions, not time).
#   Benchmarks/microbench.sh [--size 64] [--frames 2000000] [--rounds 5] [--packed] [--dirty-log] [--queues 2] [--capture | --capture-inline] [--cross]
set -euo pipefail
cd "$(dirname "$0")/.."
size=64; frames=2000000; rounds=5; ring=()
while (($#)); do
    case $1 in
        --size) size=$2; shift 2 ;;
        --frames) frames=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --packed) ring+=(--packed); shift ;;
        --dirty-log) ring+=(--dirty-log); shift ;;
        --queues) ring+=(--queues "$2"); shift 2 ;;
        --capture) ring+=(--capture); shift ;;
        --capture-inline) ring+=(--capture-inline); shift ;;   # repeatable under callgrind
        --cross) ring+=(--cross); shift ;;   # A and B on two engines linked by a PeerLink
        *) echo "usage: $0 [--size N] [--frames N] [--rounds N] [--packed] [--dirty-log] [--queues 2] [--capture | --capture-inline] [--cross]" >&2; exit 2 ;;
    esac
done
swift build -c release --product vswitch-microbench >&2
bin=.build/release/vswitch-microbench
echo "== wall clock (frame size $size)"
"$bin" --size "$size" --frames "$frames" --rounds "$rounds" ${ring[@]+"${ring[@]}"}
if ! command -v valgrind >/dev/null; then
    echo "== instructions: valgrind not installed (apt-get install valgrind)"; exit 0
fi
# valgrind 3.19 cannot read Swift 6's debug info: profile a stripped copy.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp "$bin" "$tmp/mb"; strip --strip-debug "$tmp/mb"
ir() {  # instructions inside pollOnce for a run of $1 frames (warm-up included)
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg" \
        --toggle-collect='$s8Datapath16ForwardingEngineC8pollOnceSiyF' \
        "$tmp/mb" --size "$size" --frames "$1" --rounds 1 ${ring[@]+"${ring[@]}"} >/dev/null 2>&1
    callgrind_annotate "$tmp/cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
}
a=$(ir 100000); b=$(ir 300000)
echo "== instructions per forwarded frame (pollOnce, callgrind): $(( (b - a) / 200000 ))"
