#!/usr/bin/env bash
# Idle CPU of vswitchd with two connected QEMU guests and no traffic: boots two idle guests
# on vhostuserclient ports, waits until both links are up, then measures vswitchd's CPU
# time over ${IDLE_SECONDS:-10} s (utime+stime from /proc) and its RSS.
#   Benchmarks/idle-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/lib/common.sh
source Tools/lib/guest.sh
secs=${IDLE_SECONDS:-10}
Tools/build-guest-image >/dev/null
swift build -c release --product vswitchd >&2
swift build -c release --product vswitch >&2
D=$(mktemp -d /tmp/vsw-idle.XXXXXX)
cleanup() { guest_kill_all 2>/dev/null || true; [[ -n ${VPID:-} ]] && kill "$VPID" 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
.build/release/vswitchd --control "$D/ctl.sock" --run-dir "$D" --log-level warning 2>"$D/vswitchd.log" &
VPID=$!
V() { .build/release/vswitch --control "$D/ctl.sock" "$@"; }
vsw_wait_for 10 test -S "$D/ctl.sock"
V add-br br0
V add-port br0 vm1 --type vhostuserclient --path "$D/vm1.sock"
V add-port br0 vm2 --type vhostuserclient --path "$D/vm2.sock"
guest_boot vm1 52:54:00:00:00:01 "$D/vm1.sock" server 10.0.0.1/24 "" "$D/vm1.log"
guest_boot vm2 52:54:00:00:00:02 "$D/vm2.sock" server 10.0.0.2/24 "" "$D/vm2.log"
vsw_wait_log "$D/vm1.log" GUEST-IDLE 90 && vsw_wait_log "$D/vm2.log" GUEST-IDLE 90
vsw_wait_for 30 bash -c "[[ \$(.build/release/vswitch --control $D/ctl.sock show | grep -c 'link: *up') == 2 ]]"
sleep 3   # let boot-time chatter (IPv6 DAD, ARP) die down
ticks() { awk '{print $14 + $15}' "/proc/$VPID/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); s0=$(date +%s.%N)
sleep "$secs"
t1=$(ticks); s1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$VPID/status")
frames=$(V dp-stats --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["datapath"]["frames"])')
python3 - "$t0" "$t1" "$s0" "$s1" "$hz" "$rss" "$frames" <<'PY'
import sys
t0, t1, s0, s1, hz, rss, frames = map(float, sys.argv[1:])
print(f"vswitchd idle with 2 connected guests: {100 * (t1 - t0) / hz / (s1 - s0):.2f}% of one CPU over {s1 - s0:.1f} s "
      f"({int(t1 - t0)} ticks), RSS {rss / 1024:.1f} MiB, frames forwarded since start {int(frames)}")
PY
