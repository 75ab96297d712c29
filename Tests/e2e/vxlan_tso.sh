#!/usr/bin/env bash
# TSO segments over a VXLAN tunnel (issue 17: UDP GSO and GRO) against the kernel's vxlan
# driver: the host kernel in nsA sends a bulk TCP stream through a TAP port with offloads (its
# 64 KiB GSO segments reach vswitchd whole), vswitchd's vxlan port sends each segment as UDP
# GSO super-datagrams that the kernel cuts, and a kernel vxlan device in nsK decapsulates the
# datagrams and hands the frames to its TCP stack; then the same stream the other way.
#
#   nsA: tap0 (10.7.0.1, mtu 1450) -- vswitchd br0: tap0 + vx0 (--vni 42) -- 192.0.2.1
#        ---veth--- 192.0.2.2 nsK: kernel vx42 (id 42, dstport 4789, 10.7.0.100, mtu 1450)
#
# Pass: the data arrives intact both ways (md5); nsA -> nsK: vx0's txGsoDatagrams grew, by
# at least one per 64 KiB sent, txGsoRefused stayed 0 and nothing was dropped as too big
# (every piece fits the 1500-byte underlay); the kernel vxlan device received at least as
# many frames as vx0 counted sent, none above 1464 bytes on average. nsK -> nsA: no drops on
# vx0. Then two vswitchd (A in nsA, B in nsK) with a tunnel between them and a TAP each:
# the data intact both ways, each sender's GSO super-datagrams arrive at the other as GRO
# messages (at least one per 64 KiB each), and the receiving switch merges most segments into
# TSO frames for its TAP (fewer writev than frames), which the receiving kernel's TCP takes
# without a checksum error. For reference, the same namespaces joined by one
# bridge of A (TAP to TAP). Throughput and counters go into vxlan_tso.txt.
#   VXLAN_TSO_MB=32     megabytes per direction
#   E2E_VXLAN_STRACE=1  strace -c -f -p vswitchd during each transfer: system calls per frame
#   E2E_VXLAN_EXPECT_GSO=0  report only, do not require GSO (for a daemon without it)
#   E2E_VXLAN_EXPECT_COALESCE=0  do not require the receiving switch to merge segments into
#                       TSO frames for its TAP (for a daemon without receive-side coalescing)
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_tool python3 python3
e2e_require_tool ethtool ethtool
if [[ ${E2E_VXLAN_STRACE:-0} == 1 ]]; then e2e_require_tool strace strace; fi
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"

MB=${VXLAN_TSO_MB:-32}
BYTES=$((MB * 1024 * 1024))
STREAM="$E2E_DIR/tcp_stream.py"
NSA=vswTA$$ NSK=vswTK$$
netns_add "$NSA" "$NSK"
for n in "$NSA" "$NSK"; do
    for k in all default; do ip netns exec "$n" sysctl -qw "net.ipv6.conf.$k.disable_ipv6=1"; done
done
ip link add vta$$ netns "$NSA" type veth peer name vtk$$ netns "$NSK"
ip -n "$NSA" addr add 192.0.2.1/24 dev vta$$
ip -n "$NSK" addr add 192.0.2.2/24 dev vtk$$
ip -n "$NSA" link set vta$$ up
ip -n "$NSK" link set vtk$$ up
ip -n "$NSK" link add vx42 type vxlan id 42 remote 192.0.2.1 local 192.0.2.2 dstport 4789 dev vtk$$ ||
    e2e_missing "kernel vxlan support" "a kernel with the vxlan module"
ip -n "$NSK" addr add 10.7.0.100/24 dev vx42
ip -n "$NSK" link set vx42 mtu 1450 up
# Between namespaces on one host a frame that vx42 sends keeps its inner TCP checksum
# unfinished (CHECKSUM_PARTIAL: veth "offloads" it and nothing ever computes it); the kernel
# trusts that on local delivery, but vswitchd reads the bytes from a UDP socket and passes
# them on, and nsA's TCP drops the frames with a bad checksum. A real NIC computes it. So
# vx42 checksums in software here (and therefore sends MSS-sized frames, no TSO).
ip netns exec "$NSK" ethtool -K vx42 tx off >/dev/null || e2e_fail "ethtool -K vx42 tx off failed"

vswitchd_start_in_netns "$NSA"
vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vx0 --type vxlan --remote 192.0.2.2 --vni 42 --dst-port 4789 >/dev/null
vsw_ok add-port br0 tap0 --type tap --ifname vtt$$ >/dev/null
ip -n "$NSA" addr add 10.7.0.1/24 dev vtt$$
ip -n "$NSA" link set vtt$$ mtu 1450 up
offloads=$(python3 -c 'import json,sys
for b in json.load(sys.stdin)["bridges"]:
    for p in b["ports"]:
        if p["name"] == "tap0": print((p.get("options") or {}).get("offloads", "none"))' <<<"$(vsw show --format json)")
e2e_msg "tap0 offloads: $offloads"
[[ $offloads == "csum,tso4,tso6" ]] || e2e_fail "tap0 should have offloads csum,tso4,tso6, show says '$offloads'"
got=$(netns_ping "$NSA" 10.7.0.1 10.7.0.100 5)
((got >= 4)) || e2e_fail "nsA -> kernel vx42: only $got of 5 pings answered"
dd if=/dev/urandom of="$E2E_TMP/data" bs=1M count="$MB" 2>/dev/null
want=$(md5sum <"$E2E_TMP/data" | cut -d' ' -f1)

# vx NAME...: the counters NAME... of vx0, space separated.
vx() {
    vsw port stats br0 vx0 --format json | python3 -c 'import json,sys
s = json.load(sys.stdin)["stats"][0]
print(" ".join(str(s.get(k, 0)) for k in sys.argv[1:]))' "$@"
}
kernel() { ip netns exec "$NSK" cat "/sys/class/net/vx42/statistics/$1"; }
mbits() { awk -v b="$BYTES" -v s="$1" 'BEGIN {if (s > 0) printf "%.0f", b * 8 / s / 1e6; else print "?"}'; }

STRACE_PID=""
strace_start() {
    [[ ${E2E_VXLAN_STRACE:-0} == 1 ]] || return 0
    strace -c -f -p "$VSWITCHD_PID" -o "$E2E_LOG_DIR/strace-$1.txt" 2>/dev/null &
    STRACE_PID=$!
    E2E_PIDS+=("$STRACE_PID")
    sleep 2   # attached to every thread
}
# strace_stop NAME FRAMES: vswitchd's system calls during the transfer, per frame.
strace_stop() {
    [[ -n $STRACE_PID ]] || return 0
    kill -INT "$STRACE_PID" 2>/dev/null
    wait "$STRACE_PID" 2>/dev/null || true
    STRACE_PID=""
    local f="$E2E_LOG_DIR/strace-$1.txt" calls top line
    calls=$(awk '$1 ~ /^[0-9.]+$/ && $NF != "total" {c += $4} END {print c + 0}' "$f" 2>/dev/null)
    top=$(awk '$1 ~ /^[0-9.]+$/ && $NF != "total" {print $4, $NF}' "$f" 2>/dev/null | sort -rn | head -n 6 |
        awk '{printf "%s=%s ", $2, $1}')
    line="STRACE $1: $calls system calls for $2 frames, $(awk -v c="$calls" -v f="$2" 'BEGIN {printf "%.3f", c / (f > 0 ? f : 1)}') per frame; $top"
    e2e_msg "$line"
    echo "$line" >>"$E2E_LOG_DIR/vxlan_tso.txt"
}

# transfer FROM_NS TO_NS TO_ADDR PORT: one stream of the data; sets MD5 and SECS (what the
# receiver got, first to last byte).
transfer() {
    local out
    local v6=0
    [[ $3 == *:* ]] && v6=1
    ip netns exec "$2" env TCP_STREAM_V6=$v6 python3 "$STREAM" recv "$4" "$BYTES" "$E2E_TMP/got-$4" >"$E2E_TMP/recv-$4.txt" 2>&1 &
    local rpid=$!
    E2E_PIDS+=("$rpid")
    out=$(ip netns exec "$1" python3 "$STREAM" send "$3" "$4" "$E2E_TMP/data" 2>&1) || e2e_fail "sender $1 -> $3:$4 failed: $out"
    wait "$rpid" || e2e_fail "receiver in $2 failed: $(cat "$E2E_TMP/recv-$4.txt")"
    out=$(cat "$E2E_TMP/recv-$4.txt")
    MD5=$(sed -n 's/.*md5=\([0-9a-f]*\).*/\1/p' <<<"$out")
    SECS=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$out")
}

# nsA -> nsK: the host kernel's TSO segments leave by UDP GSO.
read -r g0 r0 p0 b0 big0 nb0 <<<"$(vx txGsoDatagrams txGsoRefused txPackets txBytes txDropTooBig txDropNoBuffers)"
k0=$(kernel rx_packets) kb0=$(kernel rx_bytes)
strace_start to-kernel
transfer "$NSA" "$NSK" 10.7.0.100 5001
md5=$MD5 secs=$SECS
read -r g1 r1 p1 b1 big1 nb1 <<<"$(vx txGsoDatagrams txGsoRefused txPackets txBytes txDropTooBig txDropNoBuffers)"
k1=$(kernel rx_packets) kb1=$(kernel rx_bytes)
gso=$((g1 - g0)) frames=$((p1 - p0)) kframes=$((k1 - k0))
strace_stop to-kernel "$frames"
line="nsA -> nsK $MB MiB in ${secs}s ($(mbits "$secs") Mbit/s): vx0 sent $frames frames ($(((b1 - b0) / (frames > 0 ? frames : 1))) B average) in $gso GSO super-datagrams, txGsoRefused $((r1 - r0)), txDropTooBig $((big1 - big0)), txDropNoBuffers $((nb1 - nb0)); kernel vx42 received $kframes frames ($(((kb1 - kb0) / (kframes > 0 ? kframes : 1))) B average)"
e2e_msg "$line"
echo "$line" >>"$E2E_LOG_DIR/vxlan_tso.txt"
[[ $md5 == "$want" ]] || e2e_fail "nsA -> nsK: the data differs (md5 $md5, sent $want)"
((gso >= MB * 1024 / 64 || ${E2E_VXLAN_EXPECT_GSO:-1} == 0)) || e2e_fail "nsA -> nsK: only $gso GSO super-datagrams for $MB MiB"
((r1 == r0)) || e2e_fail "nsA -> nsK: the kernel refused UDP GSO $((r1 - r0)) times"
((big1 == big0)) || e2e_fail "nsA -> nsK: $((big1 - big0)) frames dropped as too big for the underlay"
((kframes >= frames - (nb1 - nb0))) || e2e_fail "nsA -> nsK: the kernel device got $kframes frames, vx0 sent $frames"

# nsK -> nsA: the kernel vxlan device's datagrams, received with UDP_GRO on.
read -r rp0 rg0 rl0 rc0 <<<"$(vx rxPackets rxGroDatagrams rxDropTooLong rxCoalescedFrames)"
strace_start from-kernel
transfer "$NSK" "$NSA" 10.7.0.1 5002
md5=$MD5 secs=$SECS
read -r rp1 rg1 rl1 rc1 <<<"$(vx rxPackets rxGroDatagrams rxDropTooLong rxCoalescedFrames)"
strace_stop from-kernel "$((rp1 - rp0))"
line="nsK -> nsA $MB MiB in ${secs}s ($(mbits "$secs") Mbit/s): vx0 received $((rp1 - rp0)) frames, $((rg1 - rg0)) GRO messages, $((rc1 - rc0)) merged into TSO frames for tap0, rxDropTooLong $((rl1 - rl0))"
e2e_msg "$line"
echo "$line" >>"$E2E_LOG_DIR/vxlan_tso.txt"
[[ $md5 == "$want" ]] || e2e_fail "nsK -> nsA: the data differs (md5 $md5, sent $want)"
((rl1 == rl0)) || e2e_fail "nsK -> nsA: $((rl1 - rl0)) datagrams dropped as too long"

# Part 2, vswitchd to vswitchd (over IPv4, then IPv6 inside the tunnel): a second vswitchd (B) in nsK, a tunnel on UDP 4790 between
# A's br1 (tap1 10.8.0.1 in nsA) and B's br1 (tap1 10.8.0.2 in nsK). Each side's TSO segments
# leave as GSO super-datagrams, cross the veth whole, and reach the other's socket (UDP_GRO)
# as one message each, split there.
vswitchd_other "$NSK" b
vsw_ok add-br br1 >/dev/null
vsw_ok add-port br1 vx1 --type vxlan --remote 192.0.2.2 --vni 43 --dst-port 4790 >/dev/null
vsw_ok add-port br1 tap1 --type tap --ifname vtu$$ >/dev/null
for c in "add-br br1" "add-port br1 vx1 --type vxlan --remote 192.0.2.1 --vni 43 --dst-port 4790" \
    "add-port br1 tap1 --type tap --ifname vtv$$"; do
    # shellcheck disable=SC2086  # the words of $c are the arguments
    vsw_at b $c >/dev/null || e2e_fail "vswitchd B: $c failed"
done
ip -n "$NSA" addr add 10.8.0.1/24 dev vtu$$
ip -n "$NSA" link set vtu$$ mtu 1450 up
ip -n "$NSK" addr add 10.8.0.2/24 dev vtv$$
ip -n "$NSK" link set vtv$$ mtu 1450 up
got=$(netns_ping "$NSA" 10.8.0.1 10.8.0.2 5)
((got >= 4)) || e2e_fail "nsA -> nsK through A and B: only $got of 5 pings answered"
# at WHO NAME...: the counters NAME... of vx1 on vswitchd WHO (a or b).
at() {
    local who=$1
    shift
    { if [[ $who == a ]]; then vsw port stats br1 vx1 --format json; else vsw_at b port stats br1 vx1 --format json; fi; } |
        python3 -c 'import json,sys
s = json.load(sys.stdin)["stats"][0]
print(" ".join(str(s.get(k, 0)) for k in sys.argv[1:]))' "$@"
}
# tap1 WHO NAME...: the counters NAME... of tap1 on vswitchd WHO.
tap1() {
    local who=$1
    shift
    { if [[ $who == a ]]; then vsw port stats br1 tap1 --format json; else vsw_at b port stats br1 tap1 --format json; fi; } |
        python3 -c 'import json,sys
s = json.load(sys.stdin)["stats"][0]
print(" ".join(str(s.get(k, 0)) for k in sys.argv[1:]))' "$@"
}
# csum_errors NS: TCP segments the kernel in NS dropped for a bad checksum (InCsumErrors).
csum_errors() {
    ip netns exec "$1" awk '/^Tcp:/ {if (!h) {for (i = 1; i <= NF; i++) if ($i == "InCsumErrors") c = i; h = 1} else print (c ? $c : 0)}' /proc/net/snmp
}
# cpu_ticks PID: user + system time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# switch_transfer FROM TO FROM_NS TO_NS TO_ADDR PORT
switch_transfer() {
    local g0 p0 d0 rp0 rg0 rc0 w0 e0 g1 p1 d1 rp1 rg1 rc1 w1 e1 line ca0 cb0 ca1 cb1 hz
    hz=$(getconf CLK_TCK)
    read -r g0 p0 d0 <<<"$(at "$1" txGsoDatagrams txPackets txDropNoBuffers)"
    read -r rp0 rg0 rc0 <<<"$(at "$2" rxPackets rxGroDatagrams rxCoalescedFrames)"
    read -r w0 <<<"$(tap1 "$2" txPackets)"
    e0=$(csum_errors "$4")
    [[ $2 == a ]] && strace_start "switch-b-to-a-$6"
    ca0=$(cpu_ticks "$VSWITCHD_PID") cb0=$(cpu_ticks "${OTHER_PID[b]}")
    transfer "$3" "$4" "$5" "$6"
    read -r g1 p1 d1 <<<"$(at "$1" txGsoDatagrams txPackets txDropNoBuffers)"
    read -r rp1 rg1 rc1 <<<"$(at "$2" rxPackets rxGroDatagrams rxCoalescedFrames)"
    read -r w1 <<<"$(tap1 "$2" txPackets)"
    e1=$(csum_errors "$4")
    ca1=$(cpu_ticks "$VSWITCHD_PID") cb1=$(cpu_ticks "${OTHER_PID[b]}")
    [[ $2 == a ]] && strace_stop "switch-b-to-a-$6" "$((rp1 - rp0))"
    line="switch $1 -> switch $2 (to $5), $MB MiB in ${SECS}s ($(mbits "$SECS") Mbit/s): $1 sent $((p1 - p0)) frames in $((g1 - g0)) GSO super-datagrams (dropped $((d1 - d0))), $2 received $((rp1 - rp0)) frames in $((rg1 - rg0)) GRO messages, merged $((rc1 - rc0)) of them into TSO frames and wrote $((w1 - w0)) frames to its TAP; TCP checksum errors at the receiver: $((e1 - e0)); CPU seconds of vswitchd A $(awk -v t=$((ca1 - ca0)) -v h="$hz" 'BEGIN {printf "%.2f", t / h}'), B $(awk -v t=$((cb1 - cb0)) -v h="$hz" 'BEGIN {printf "%.2f", t / h}')"
    e2e_msg "$line"
    echo "$line" >>"$E2E_LOG_DIR/vxlan_tso.txt"
    [[ $MD5 == "$want" ]] || e2e_fail "switch $1 -> switch $2: the data differs (md5 $MD5, sent $want)"
    ((e1 == e0)) || e2e_fail "switch $1 -> switch $2: the receiving kernel counted $((e1 - e0)) TCP checksum errors"
    if ((${E2E_VXLAN_EXPECT_GSO:-1})); then
        ((g1 - g0 >= MB * 1024 / 64)) || e2e_fail "switch $1 -> $2: only $((g1 - g0)) GSO super-datagrams"
        ((rg1 - rg0 >= MB * 1024 / 64)) || e2e_fail "switch $1 -> $2: only $((rg1 - rg0)) GRO messages at $2"
    fi
    if ((${E2E_VXLAN_EXPECT_COALESCE:-1})); then
        # Most segments arrive in order, in GRO messages of many: most must leave merged.
        ((2 * (rc1 - rc0) >= rp1 - rp0)) || e2e_fail "switch $1 -> $2: only $((rc1 - rc0)) of $((rp1 - rp0)) frames merged"
        ((w1 - w0 < (rp1 - rp0) / 2)) || e2e_fail "switch $1 -> $2: $((w1 - w0)) frames written to the TAP for $((rp1 - rp0)) received"
    fi
}
switch_transfer a b "$NSA" "$NSK" 10.8.0.2 5003
switch_transfer b a "$NSK" "$NSA" 10.8.0.1 5004
# The same over IPv6 inside the tunnel (GSO_TCPV6 frames both ways, merged as such).
ip netns exec "$NSA" sysctl -qw "net.ipv6.conf.vtu$$.disable_ipv6=0"
ip netns exec "$NSK" sysctl -qw "net.ipv6.conf.vtv$$.disable_ipv6=0"
ip -n "$NSA" addr add fd00:8::1/64 dev vtu$$ nodad
ip -n "$NSK" addr add fd00:8::2/64 dev vtv$$ nodad
got=$(ip netns exec "$NSA" ping -6 -c 3 -i 0.2 -W 2 fd00:8::2 2>/dev/null | grep -c "bytes from" || true)
((got >= 2)) || e2e_fail "nsA -> nsK over IPv6 through A and B: only $got of 3 pings answered"
switch_transfer a b "$NSA" "$NSK" fd00:8::2 5007
switch_transfer b a "$NSK" "$NSA" fd00:8::1 5008

# Part 3, the reference: the same two namespaces joined by one bridge of A (two TAP ports,
# one moved into nsK), no tunnel. Reported only.
vsw_ok add-br br2 >/dev/null
vsw_ok add-port br2 tap2a --type tap --ifname vtw$$ >/dev/null
vsw_ok add-port br2 tap2b --type tap --ifname vtx$$ >/dev/null
ip -n "$NSA" link set vtx$$ netns "$NSK" || e2e_fail "cannot move vtx$$ into $NSK"
ip -n "$NSA" addr add 10.9.0.1/24 dev vtw$$
ip -n "$NSA" link set vtw$$ mtu 1450 up
ip -n "$NSK" addr add 10.9.0.2/24 dev vtx$$
ip -n "$NSK" link set vtx$$ mtu 1450 up
got=$(netns_ping "$NSA" 10.9.0.1 10.9.0.2 3)
((got >= 2)) || e2e_fail "one bridge: only $got of 3 pings answered"
for d in "nsA->nsK $NSA $NSK 10.9.0.2 5005" "nsK->nsA $NSK $NSA 10.9.0.1 5006"; do
    c0=$(cpu_ticks "$VSWITCHD_PID")
    # shellcheck disable=SC2086
    transfer ${d#* }
    c1=$(cpu_ticks "$VSWITCHD_PID")
    [[ $MD5 == "$want" ]] || e2e_fail "one bridge: the data differs"
    line="one bridge (TAP to TAP) ${d%% *}: $MB MiB in ${SECS}s ($(mbits "$SECS") Mbit/s); CPU seconds of vswitchd A $(awk -v t=$((c1 - c0)) -v h="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / h}')"
    e2e_msg "$line"
    echo "$line" >>"$E2E_LOG_DIR/vxlan_tso.txt"
done
e2e_msg "PASS"
