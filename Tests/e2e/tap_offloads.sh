#!/usr/bin/env bash
# Offloads through a TAP port (IFF_VNET_HDR, TUNSETOFFLOAD CSUM|TSO4|TSO6) with the real kernel:
# a QEMU guest on br0 and a TAP port whose interface lives in a network namespace (10.0.9.9)
# exchange a bulk TCP stream each way (busybox nc in the guest, Tests/e2e/tcp_stream.py in the
# namespace), md5 compared, in two rounds:
#   offload  the guest negotiates CSUM/GUEST_CSUM/TSO (QEMU's default): its TSO frames must
#            reach the kernel whole and the kernel's GSO frames must reach it whole; the
#            average frame in both directions, by the switch's counters and by the kernel's
#            own interface counters (ip -s link), is above 1514 bytes
#   plain    the guest has no offloads: the kernel still sends 64 KiB segments, the switch
#            cuts them (the guest gets no frame above 1514 bytes) and the data still matches
# No frame is dropped as bad offload metadata (txDropBadOffload, rxDropBadOffload). Prints the
# throughput of each transfer into tap_offloads.txt.
#   TAP_OFFLOAD_MB=16            megabytes per transfer
#   TAP_OFFLOAD_ROUNDS="offload plain"
#   E2E_TAP_STRACE=1             strace -c -f -p vswitchd during each transfer: system calls per
#                                frame crossing the TAP and per MiB (strace-*.txt), slower
#   E2E_TAP_EXPECT_OFFLOADS=0    report only, do not require large frames (for a daemon
#                                without TAP offloads, to measure the difference)
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_guest
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"
if [[ ${E2E_TAP_STRACE:-0} == 1 ]]; then e2e_require_tool strace strace; fi

OFF=",csum=off,guest_csum=off,host_tso4=off,host_tso6=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,host_ecn=off,guest_ufo=off,host_ufo=off"
MB=${TAP_OFFLOAD_MB:-16}
BYTES=$((MB * 1024 * 1024))
EXPECT=${E2E_TAP_EXPECT_OFFLOADS:-1}
NS="vswto$$"
TAP="vsto$$"
STREAM="$E2E_DIR/tcp_stream.py"
E2E_CLEANUP_HOOKS+=("ip netns del $NS 2>/dev/null")
ip netns add "$NS" || e2e_missing "network namespaces" "a kernel with CONFIG_NET_NS (ip netns add failed)"

vswitchd_start
vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 tap0 --type tap --ifname "$TAP" >/dev/null
offloads=$(python3 -c 'import json,sys
for b in json.load(sys.stdin)["bridges"]:
    for p in b["ports"]:
        if p["name"] == "tap0": print((p.get("options") or {}).get("offloads", "none"))' <<<"$(vsw show --format json)")
e2e_msg "tap0 offloads: $offloads"
if ((EXPECT)) && [[ $offloads != "csum,tso4,tso6" ]]; then
    e2e_fail "tap0 should have offloads csum,tso4,tso6, show says '$offloads'"
fi
ip link set "$TAP" netns "$NS" || e2e_fail "cannot move $TAP into $NS"
ip -n "$NS" addr add 10.0.9.9/24 dev "$TAP"
ip -n "$NS" link set "$TAP" up
ip -n "$NS" link set lo up
e2e_msg "$TAP in namespace $NS with 10.0.9.9/24"
dd if=/dev/urandom of="$E2E_TMP/host.data" bs=1M count="$MB" 2>/dev/null

# counters PORT: "rxPackets rxBytes txPackets txBytes" of a port of br0.
counters() {
    vsw port stats br0 "$1" --format json | python3 -c 'import json,sys
s = json.load(sys.stdin)["stats"][0]
print(s["rxPackets"], s["rxBytes"], s["txPackets"], s["txBytes"])'
}
# kernel_counters: "rxPackets rxBytes txPackets txBytes" of the TAP as the kernel counts them.
kernel_counters() {
    ip -n "$NS" -s -j link show "$TAP" | python3 -c 'import json,sys
s = json.load(sys.stdin)[0]["stats64"]
print(s["rx"]["packets"], s["rx"]["bytes"], s["tx"]["packets"], s["tx"]["bytes"])'
}
avg() { echo $(($2 / ($1 > 0 ? $1 : 1))); }
# delta "A B C D" "E F G H": "E-A F-B G-C H-D"
delta() { paste -d' ' <(tr ' ' '\n' <<<"$1") <(tr ' ' '\n' <<<"$2") | awk '{printf "%d ", $2 - $1}'; }
mbits() { awk -v b="$BYTES" -v s="$1" 'BEGIN {if (s > 0) printf "%.0f", b * 8 / s / 1e6; else print "?"}'; }

STRACE_PID=""
strace_start() {
    [[ ${E2E_TAP_STRACE:-0} == 1 ]] || return 0
    strace -c -f -p "$VSWITCHD_PID" -o "$E2E_LOG_DIR/strace-$1.txt" 2>/dev/null &
    STRACE_PID=$!
    E2E_PIDS+=("$STRACE_PID")
    sleep 2   # attached to every thread
}
# strace_stop NAME FRAMES: system calls while the transfer ran, per frame and per MiB.
strace_stop() {
    [[ -n $STRACE_PID ]] || return 0
    kill -INT "$STRACE_PID" 2>/dev/null
    wait "$STRACE_PID" 2>/dev/null || true
    STRACE_PID=""
    local f="$E2E_LOG_DIR/strace-$1.txt" calls top
    # strace -c lines: % time, seconds, usecs/call, calls, [errors,] syscall
    calls=$(awk '$1 ~ /^[0-9.]+$/ && $NF != "total" {c += $4} END {print c + 0}' "$f" 2>/dev/null)
    top=$(awk '$1 ~ /^[0-9.]+$/ && $NF != "total" {print $4, $NF}' "$f" 2>/dev/null | sort -rn | head -n 6 |
        awk '{printf "%s=%s ", $2, $1}')
    local per
    per=$(awk -v c="$calls" -v f="$2" 'BEGIN {printf "%.2f", c / (f > 0 ? f : 1)}')
    e2e_msg "$1: $calls system calls, $per per frame crossing the TAP ($2 frames)," \
        "$(awk -v c="$calls" -v m="$MB" 'BEGIN {printf "%.0f", c / m}') per MiB; $top"
    echo "STRACE $1 calls=$calls frames=$2 per_frame=$per per_mib=$(awk -v c="$calls" -v m="$MB" 'BEGIN {printf "%.0f", c / m}') $top" \
        >>"$E2E_LOG_DIR/tap_offloads.txt"
}

round() {
    local name=$1 opts=$2 n=$3
    local port="vm$n" ip="10.0.9.$n" mac="52:54:00:00:09:0$n"
    vsw_ok add-port br0 "$port" --type vhostuserclient --path "$E2E_TMP/$port.sock" >/dev/null
    # The guest listens on 5002 from the start, then sends to 5001 as soon as the namespace
    # listens there (retrying while refused): the counters and strace are ready by then.
    GUEST_DEVICE_OPTS=$opts GUEST_WAIT_PEER=10.0.9.9 e2e_boot "$port" "$mac" "$E2E_TMP/$port.sock" server "$ip/24" \
        "mkfifo /tmp/in; nc -l -p 5002 < /tmp/in > /tmp/r & exec 3>/tmp/in; dd if=/dev/urandom of=/tmp/d bs=64k count=$((MB * 16)) 2>/dev/null; md5sum /tmp/d; echo SENDING; i=0; until nc 10.0.9.9 5001 < /tmp/d; do i=\$((i + 1)); [ \$i -gt 600 ] && break; sleep 0.2; done; echo SENT; wait \$!; md5sum /tmp/r; wc -c < /tmp/r"
    e2e_wait_up "$port"
    guest_wait "$port" '^SENDING' 300 || e2e_fail "$name: the guest did not get ready to send"

    # Guest -> host.
    local t0 k0 v0 t1 k1 v1 t2 k2 v2 up down
    t0=$(counters tap0); k0=$(kernel_counters); v0=$(counters "$port")
    strace_start "$name-to-host"
    up=$(ip netns exec "$NS" python3 "$STREAM" recv 5001 "$BYTES" "$E2E_TMP/from-guest" 2>&1) ||
        e2e_fail "$name: the host receiver failed: $up"
    t1=$(counters tap0); k1=$(kernel_counters); v1=$(counters "$port")
    local urp urb utp utb krp krb
    read -r urp urb utp utb <<<"$(delta "$t0" "$t1")"
    read -r krp krb _ _ <<<"$(delta "$k0" "$k1")"
    strace_stop "$name-to-host" "$((urp + utp))"

    # Host -> guest.
    strace_start "$name-to-guest"
    down=$(ip netns exec "$NS" python3 "$STREAM" send "$ip" 5002 "$E2E_TMP/host.data" 2>&1) ||
        e2e_fail "$name: the host sender failed: $down"
    t2=$(counters tap0); k2=$(kernel_counters); v2=$(counters "$port")
    local drp drb dtp dtb ktp ktb vtp vtb
    read -r drp drb dtp dtb <<<"$(delta "$t1" "$t2")"
    read -r _ _ ktp ktb <<<"$(delta "$k1" "$k2")"
    read -r _ _ vtp vtb <<<"$(delta "$v1" "$v2")"
    strace_stop "$name-to-guest" "$((drp + dtp))"

    guest_wait_cmd "$port" 240 >/dev/null || e2e_fail "$name: the guest's command did not finish"
    local out sent got gotsize upmd5 downmd5 upsecs downsecs
    out=$(guest_cmd_output "$port" | tr -d '\r')
    sent=$(grep -o '^[0-9a-f]\{32\}' <<<"$out" | sed -n 1p)
    got=$(grep -o '^[0-9a-f]\{32\}' <<<"$out" | sed -n 2p)
    gotsize=$(grep -E '^[0-9]+$' <<<"$out" | tail -n1)
    upmd5=$(grep -o 'md5=[0-9a-f]*' <<<"$up" | cut -d= -f2)
    downmd5=$(grep -o 'md5=[0-9a-f]*' <<<"$down" | cut -d= -f2)
    [[ -n $sent && $sent == "$upmd5" ]] || e2e_fail "$name: guest -> host data differs (guest md5 $sent, host: $up)"
    [[ -n $got && $got == "$downmd5" && $gotsize == "$BYTES" ]] ||
        e2e_fail "$name: host -> guest data differs (host md5 $downmd5, guest got $got, $gotsize bytes)"
    upsecs=$(grep -o 'seconds=[0-9.]*' <<<"$up" | cut -d= -f2)
    downsecs=$(grep -o 'seconds=[0-9.]*' <<<"$down" | cut -d= -f2)
    e2e_snapshot "$name"
    local a_tx a_krx a_rx a_ktx a_guest
    a_tx=$(avg "$utp" "$utb"); a_krx=$(avg "$krp" "$krb")
    a_rx=$(avg "$drp" "$drb"); a_ktx=$(avg "$ktp" "$ktb"); a_guest=$(avg "$vtp" "$vtb")
    e2e_msg "$name: guest -> host $MB MiB, md5 ok, ${upsecs}s ($(mbits "$upsecs") Mbit/s); to the kernel:" \
        "tap0 tx $utp frames avg $a_tx B, the kernel's rx $krp frames avg $a_krx B"
    e2e_msg "$name: host -> guest $MB MiB, md5 ok, ${downsecs}s ($(mbits "$downsecs") Mbit/s); the kernel's tx" \
        "$ktp frames avg $a_ktx B, tap0 rx $drp frames avg $a_rx B, to the guest $vtp frames avg $a_guest B"
    echo "TAP $name to_host_s=$upsecs to_host_mbit=$(mbits "$upsecs") tap_tx_avg=$a_tx kernel_rx_avg=$a_krx" \
        "to_guest_s=$downsecs to_guest_mbit=$(mbits "$downsecs") kernel_tx_avg=$a_ktx tap_rx_avg=$a_rx guest_rx_avg=$a_guest" \
        >>"$E2E_LOG_DIR/tap_offloads.txt"
    if ((EXPECT)); then
        if [[ $name == offload ]]; then
            ((a_tx > 1514 && a_krx > 1514)) ||
                e2e_fail "$name: guest TSO frames did not reach the kernel whole (tap0 tx avg $a_tx B, kernel rx avg $a_krx B)"
            ((a_rx > 1514 && a_guest > 1514)) ||
                e2e_fail "$name: kernel GSO frames did not reach the guest whole (tap0 rx avg $a_rx B, guest avg $a_guest B)"
        else
            ((a_tx <= 1514)) || e2e_fail "$name: frames above 1514 bytes from a guest without TSO (avg $a_tx B)"
            ((a_rx > 1514)) || e2e_fail "$name: the kernel sent no GSO frames (tap0 rx avg $a_rx B)"
            ((a_guest <= 1514)) || e2e_fail "$name: a guest without offloads got frames above 1514 bytes (avg $a_guest B)"
        fi
    fi
    local bad
    bad=$(vsw port stats br0 --format json | python3 -c 'import json,sys
print(sum((s.get("txDropBadOffload") or 0) + (s.get("rxDropBadOffload") or 0) for s in json.load(sys.stdin)["stats"]))')
    ((bad == 0)) || e2e_fail "$name: $bad frames dropped as bad offload metadata"
    guest_kill "$port"
    vsw_ok del-port br0 "$port" >/dev/null
}

n=1
for r in ${TAP_OFFLOAD_ROUNDS:-offload plain}; do
    case $r in
        offload) round offload "" "$n" ;;
        plain) round plain "$OFF" "$n" ;;
        *) e2e_fail "unknown round $r" ;;
    esac
    n=$((n + 1))
done
e2e_check_daemon
e2e_pass
