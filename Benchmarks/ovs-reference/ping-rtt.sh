#!/usr/bin/env bash
# Reference figure: two test guests (the same image and QEMU command lines as vswitch's tests)
# ping each other through OVS-DPDK 3.1 (Debian's openvswitch-switch-dpdk) instead of vswitch.
#
#   sudo Benchmarks/ovs-reference/ping-rtt.sh [--port-type dpdkvhostuserclient|dpdkvhostuser]
#                                             [--count 20] [--size 1400] [--no-wait-peer]
#
# Prints the ping output and a closing line:
#   ovs-dpdk <port-type> ping -c 20 -s 1400: loss=0% min=0.812 ms median=1.104 ms max=... ms
# By default guest 1 first pings guest 2 until it answers (ARP and MAC learning done), then runs
# the measured `ping -c COUNT -s SIZE`, like Tests/e2e; --no-wait-peer measures from a cold start.
# Needs root. Installs openvswitch-switch-dpdk, qemu-system-x86, busybox-static, cpio if missing.
# Uses 2 MiB hugepages (reserves 1024 if fewer). Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
source Tools/lib/guest.sh

PORT_TYPE=dpdkvhostuserclient
COUNT=20
SIZE=1400
WAIT_PEER=1
while (($#)); do
    case "$1" in
        --port-type) PORT_TYPE=$2; shift 2 ;;
        --count) COUNT=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --no-wait-peer) WAIT_PEER=0; shift ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        *) vsw_die "unknown argument: $1" ;;
    esac
done
case "$PORT_TYPE" in dpdkvhostuserclient | dpdkvhostuser) ;; *) vsw_die "bad --port-type $PORT_TYPE" ;; esac
[[ $(id -u) -eq 0 ]] || vsw_die "run as root"

OVS_VSWITCHD=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
vsw_apt_install "${GUEST_HOST_PACKAGES[@]}" openvswitch-switch-dpdk
[[ -x $OVS_VSWITCHD ]] || vsw_die "$OVS_VSWITCHD missing after installing openvswitch-switch-dpdk"
guest_build_image

if pgrep -f '^[^ ]*ovs-vswitchd' >/dev/null; then
    vsw_warn "another ovs-vswitchd is running; figures may be distorted"
fi

D=$(mktemp -d /tmp/vsw-ovsref.XXXXXX)
GUEST_RUN_DIR=$D/guests
export OVS_RUNDIR=$D OVS_LOGDIR=$D OVS_DBDIR=$D
V=(ovs-vsctl --timeout=30 "--db=unix:$D/db.sock")
KEEP=${KEEP_LOGS:-0}

cleanup() {
    local rc=$?
    set +e
    guest_kill_all
    local f
    for f in "$D/vswitchd.pid" "$D/ovsdb.pid"; do
        [[ -f $f ]] && vsw_kill_pid "$(cat "$f")" 10
    done
    rm -rf /var/run/dpdk/vswovsref
    if ((rc != 0)) || ((KEEP)); then
        echo "--- logs kept in $D" >&2
        if ((rc != 0)); then
            for f in "$D"/vswitchd.log "$D"/*.serial.log; do
                [[ -f $f ]] && { echo "--- tail $f" >&2; tail -n 40 "$f" | tr -d '\r' >&2; }
            done
        fi
    else
        rm -rf "$D"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

vsw_log "Hugepages for OVS-DPDK"
vsw_hugepages_setup 1024 || true
vsw_info "free 2 MiB hugepages: $(vsw_hugepages_free)"

vsw_log "Starting ovsdb-server and ovs-vswitchd-dpdk (run dir $D)"
ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ovsdb-server "$D/conf.db" --remote="punix:$D/db.sock" --pidfile="$D/ovsdb.pid" --detach --log-file="$D/ovsdb.log" -vconsole:off
"${V[@]}" --no-wait init
"${V[@]}" --no-wait set Open_vSwitch . other_config:dpdk-init=true other_config:dpdk-lcore-mask=0x2 \
    other_config:pmd-cpu-mask=0x2 other_config:dpdk-socket-mem=512 "other_config:dpdk-extra=--no-pci --file-prefix=vswovsref"
taskset -c 1 "$OVS_VSWITCHD" "unix:$D/db.sock" --pidfile="$D/vswitchd.pid" --detach --log-file="$D/vswitchd.log" -vconsole:off
vsw_wait_for 60 bash -c "[[ \$(${V[*]} get Open_vSwitch . dpdk_initialized 2>/dev/null) == true ]]" ||
    vsw_die "OVS-DPDK did not initialise DPDK (see $D/vswitchd.log)"
OVS_PID=$(cat "$D/vswitchd.pid")
CTL=$(ls "$D"/ovs-vswitchd*."$OVS_PID".ctl 2>/dev/null | head -n1)
APPCTL=(ovs-appctl -t "$CTL")

"${V[@]}" add-br br0 -- set bridge br0 datapath_type=netdev
for i in 1 2; do
    if [[ $PORT_TYPE == dpdkvhostuserclient ]]; then
        "${V[@]}" add-port br0 "vm$i" -- set Interface "vm$i" type=dpdkvhostuserclient "options:vhost-server-path=$D/vm$i.sock"
    else
        # OVS listens on $OVS_RUNDIR/<port name>
        "${V[@]}" add-port br0 "vm$i.sock" -- set Interface "vm$i.sock" type=dpdkvhostuser
    fi
done
if [[ $PORT_TYPE == dpdkvhostuserclient ]]; then MODE=server; else MODE=client; fi
if [[ $MODE == client ]]; then
    vsw_wait_for 20 test -S "$D/vm1.sock" -a -S "$D/vm2.sock" || vsw_die "OVS did not create its vhost-user sockets"
fi

vsw_log "Booting two guests (QEMU TCG, $MODE mode, memfd memory)"
guest_boot vm2 52:54:00:00:00:02 "$D/vm2.sock" "$MODE" 10.0.0.2/24 "" "$D/vm2.serial.log"
PING="ping -c $COUNT -s $SIZE 10.0.0.2"
if ((WAIT_PEER)); then
    GUEST_WAIT_PEER=10.0.0.2 guest_boot vm1 52:54:00:00:00:01 "$D/vm1.sock" "$MODE" 10.0.0.1/24 "$PING" "$D/vm1.serial.log"
else
    guest_wait vm2 '^GUEST-UP' 120 || vsw_die "vm2 did not boot"
    guest_boot vm1 52:54:00:00:00:01 "$D/vm1.sock" "$MODE" 10.0.0.1/24 "$PING" "$D/vm1.serial.log"
fi
guest_wait vm1 '^GUEST-UP' 120 || vsw_die "vm1 did not boot"
guest_wait vm2 '^GUEST-UP' 120 || vsw_die "vm2 did not boot"
vsw_info "both guests up; vm1 runs: $PING"
rc=$(guest_wait_cmd vm1 $((COUNT * 3 + 150))) || vsw_die "vm1's ping did not finish"

tr -d '\r' <"$D/vm1.serial.log" | grep -E '^GUEST-(LINK|PEER)' || true
guest_cmd_output vm1
echo
echo "--- ovs-appctl fdb/show br0"
"${APPCTL[@]}" fdb/show br0 || true
echo "--- ovs-appctl dpif-netdev/pmd-stats-show"
"${APPCTL[@]}" dpif-netdev/pmd-stats-show | head -n 20 || true
sum=$(guest_ping_summary "$D/vm1.serial.log")
printf 'ovs-dpdk %s ping -c %s -s %s: loss=%s%% min=%s ms median=%s ms max=%s ms (replies=%s, ping rc=%s)\n' \
    "$PORT_TYPE" "$COUNT" "$SIZE" "$(vsw_kv loss "$sum")" "$(vsw_kv min "$sum")" "$(vsw_kv median "$sum")" \
    "$(vsw_kv max "$sum")" "$(vsw_kv count "$sum")" "$rc"
[[ $(vsw_kv count "$sum") -gt 0 ]]
