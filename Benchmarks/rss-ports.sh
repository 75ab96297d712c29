#!/usr/bin/env bash
# vswitchd's memory with N connected ports (default 8): one DPDK testpmd with N virtio-user
# ports (server=1) plays N VMs; vswitchd connects N vhostuserclient ports on one bridge.
# Prints vswitchd's RSS idle, then after ${LOAD_SECONDS:-5} s of traffic (testpmd io
# forwarding, tx_first: every port's frames flood/forward through the switch), and checks
# that vswitchd uses no hugepages.
#   Benchmarks/rss-ports.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/lib/common.sh
n=${1:-8}
[[ $(id -u) -eq 0 ]] || vsw_die "run as root (testpmd needs hugepages)"
vsw_apt_install dpdk-dev
vsw_hugepages_setup 1024
swift build -c release --product vswitchd >&2
swift build -c release --product vswitch >&2
D=$(mktemp -d /tmp/vsw-rss.XXXXXX)
cleanup() {
    [[ -n ${TP:-} ]] && kill "$TP" 2>/dev/null
    [[ -n ${VPID:-} ]] && kill "$VPID" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$D" /dev/hugepages/vswrss* /var/run/dpdk/vswrss 2>/dev/null || true
}
trap cleanup EXIT
.build/release/vswitchd --control "$D/ctl.sock" --run-dir "$D" --log-level warning 2>"$D/vswitchd.log" &
VPID=$!
V() { .build/release/vswitch --control "$D/ctl.sock" "$@"; }
vsw_wait_for 10 test -S "$D/ctl.sock"
V add-br br0
vdevs=() peers=()
for ((i = 0; i < n; i++)); do
    vdevs+=(--vdev "net_virtio_user$i,path=$D/v$i.sock,queues=1,server=1,mac=02:00:00:00:00:0$i")
    peers+=("--eth-peer=$i,02:00:00:00:00:0$(( (i + 1) % n ))")
done
mkfifo "$D/in"
timeout -k 5 -s INT 120 dpdk-testpmd -l 0,1 --main-lcore 1 --no-pci -m 1024 --single-file-segments \
    --file-prefix vswrss "${vdevs[@]}" -- -i --forward-mode=io --txpkts=64 "${peers[@]}" \
    --nb-cores=1 --total-num-mbufs=65536 <"$D/in" >"$D/testpmd.log" 2>&1 &
TP=$!
exec 3>"$D/in"
for ((i = 0; i < n; i++)); do
    vsw_wait_for 30 test -S "$D/v$i.sock"
    V add-port br0 "p$i" --type vhostuserclient --path "$D/v$i.sock"
done
vsw_wait_for 30 bash -c "[[ \$(.build/release/vswitch --control $D/ctl.sock show | grep -c 'link: *up') == $n ]]"
sleep 2
rss() { awk '/VmRSS/ {print $2}' "/proc/$VPID/status"; }
idle=$(rss)
echo "start tx_first 4" >&3
sleep "${LOAD_SECONDS:-5}"
echo "stop" >&3
sleep 1
loaded=$(rss)
frames=$(V dp-stats --format json | awk -F: '/"frames"/ {gsub(/[ ,]/, "", $2); print $2}')
huge=$(grep -c hugepages "/proc/$VPID/maps" || true)
own_huge=$(awk '/AnonHugePages|Private_Hugetlb/ {s += $2} END {print s + 0}' "/proc/$VPID/smaps_rollup" 2>/dev/null || echo 0)
echo "vswitchd with $n connected ports: RSS idle $((idle / 1024)) MiB ($idle kB), after ${LOAD_SECONDS:-5} s of traffic $((loaded / 1024)) MiB ($loaded kB), $frames frames forwarded"
echo "hugepage-backed mappings in vswitchd: $huge (the generator's memory, mapped from its fds); vswitchd reserved no hugepages of its own (private hugetlb $own_huge kB)"
echo quit >&3
