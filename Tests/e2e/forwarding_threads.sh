#!/usr/bin/env bash
# Two forwarding threads (`vswitchd --forwarding-cpus 0,1`), no QEMU: bad CPU lists stop
# vswitchd with a clear error; br0 and br1 land on different threads (`show`), each thread is
# named and pinned to its CPU; two namespaces on TAP ports of each bridge ping each other, and
# `dp-stats` counts each bridge's frames on its own thread; idle, neither thread uses CPU.
# `add-br --cpu N` places a bridge by hand; `add-port --cpu N` puts br3's two ports on the two
# threads, and they ping across the peer link.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_tool ping iputils-ping
e2e_require_tool taskset util-linux
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"
taskset -pc 0,1 $$ >/dev/null 2>&1 || e2e_skip "needs CPUs 0 and 1"

# Bad lists: vswitchd exits at once with the reason (before it opens anything).
refused_start() {
    local list=$1 re=$2 out rc=0
    out=$("$VSWITCHD_BIN" --control "$E2E_TMP/bad.sock" --run-dir "$E2E_TMP" --no-persist --forwarding-cpus "$list" 2>&1) || rc=$?
    ((rc != 0)) || e2e_fail "--forwarding-cpus '$list' was accepted"
    grep -Eq -- "$re" <<<"$out" || e2e_fail "--forwarding-cpus '$list': unexpected message: $out"
    e2e_msg "refused --forwarding-cpus '$list' (exit $rc): $(head -1 <<<"$out")"
}
refused_start 0,0 "CPU 0 is given twice"
refused_start 0,4000 "CPU 4000 does not exist"
refused_start x "'x' is not a CPU number"
out=$("$VSWITCHD_BIN" --control "$E2E_TMP/bad.sock" --forwarding-cpu 0 --forwarding-cpus 0,1 2>&1) &&
    e2e_fail "--forwarding-cpu with --forwarding-cpus was accepted"
grep -q "mutually exclusive" <<<"$out" || e2e_fail "--forwarding-cpu with --forwarding-cpus: $out"

vswitchd_start --forwarding-cpus 0,1
vsw_ok add-br br0 >/dev/null
vsw_ok add-br br1 >/dev/null
threads=$(vsw show --format json | python3 -c '
import json, sys
print(" ".join(b["name"] + "=" + b.get("thread", "-") for b in json.load(sys.stdin)["bridges"]))')
[[ $threads == "br0=vswitch-fwd br1=vswitch-fwd1" ]] || e2e_fail "bridges not spread over the threads: $threads"
e2e_msg "placement: $threads"
vsw_ok add-br br2 --cpu 1 >/dev/null   # by hand: CPU 1's thread, though it is not the least loaded
shown=$(vsw show)
[[ $(grep -A2 "^Bridge br2" <<<"$shown" | grep -c "forwarding thread: vswitch-fwd1") == 1 ]] ||
    e2e_fail "add-br --cpu 1 did not put br2 on vswitch-fwd1: $shown"
vsw_expect_refused "a CPU without a thread" "no forwarding thread on CPU 5" add-br br3 --cpu 5
vsw_ok del-br br2 >/dev/null

# Each thread by name, pinned to its CPU.
declare -A TID=()
for t in /proc/"$VSWITCHD_PID"/task/*; do
    n=$(cat "$t/comm")
    [[ $n == vswitch-fwd || $n == vswitch-fwd1 ]] && TID[$n]=$(basename "$t")
done
[[ -n ${TID[vswitch-fwd]:-} && -n ${TID[vswitch-fwd1]:-} ]] || e2e_fail "forwarding threads not found: $(cat /proc/"$VSWITCHD_PID"/task/*/comm | tr '\n' ' ')"
for pair in vswitch-fwd:0 vswitch-fwd1:1; do
    n=${pair%:*} cpu=${pair#*:}
    list=$(taskset -pc "${TID[$n]}" | sed 's/.*: *//')
    [[ $list == "$cpu" ]] || e2e_fail "$n is allowed on CPUs '$list', not $cpu"
done
e2e_msg "threads: vswitch-fwd (tid ${TID[vswitch-fwd]}) on CPU 0, vswitch-fwd1 (tid ${TID[vswitch-fwd1]}) on CPU 1"

# Two namespaces per bridge, each behind a TAP port.
NSP="vsft$$"
netns_add "${NSP}a0" "${NSP}b0" "${NSP}a1" "${NSP}b1"
for n in "${NSP}"{a0,b0,a1,b1}; do   # no IPv6 chatter: the pings are the only frames
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
for b in 0 1; do
    for side in a b; do
        tap="vsft${side}${b}$$"
        vsw_ok add-port "br$b" "tap$side$b" --type tap --ifname "$tap" >/dev/null
        ip link set "$tap" netns "$NSP$side$b" || e2e_fail "cannot move $tap"
        ip -n "$NSP$side$b" addr add "10.0.$((b + 71)).$([[ $side == a ]] && echo 1 || echo 2)/24" dev "$tap"
        ip -n "$NSP$side$b" link set "$tap" up
    done
done
frames() {  # frames THREAD: frames taken by that thread, from dp-stats --format json
    vsw dp-stats --format json | python3 -c '
import json, sys
d = json.load(sys.stdin)["datapath"]
print(next(t["frames"] for t in d["threads"] if t["thread"] == sys.argv[1]))' "$1"
}
before0=$(frames vswitch-fwd) before1=$(frames vswitch-fwd1)
got=$(netns_ping "${NSP}a1" 10.0.72.1 10.0.72.2 10)
((got >= 9)) || e2e_fail "br1 (thread vswitch-fwd1): $got of 10 replies"
mid0=$(frames vswitch-fwd) mid1=$(frames vswitch-fwd1)
((mid1 - before1 >= 18)) || e2e_fail "pings on br1, but vswitch-fwd1 took $((mid1 - before1)) frames"
((mid0 - before0 <= 10)) || e2e_fail "pings on br1, but vswitch-fwd took $((mid0 - before0)) frames"
e2e_msg "br1: $got of 10 replies; frames vswitch-fwd1 +$((mid1 - before1)), vswitch-fwd +$((mid0 - before0))"
got=$(netns_ping "${NSP}a0" 10.0.71.1 10.0.71.2 10)
((got >= 9)) || e2e_fail "br0 (thread vswitch-fwd): $got of 10 replies"
after0=$(frames vswitch-fwd)
((after0 - mid0 >= 18)) || e2e_fail "pings on br0, but vswitch-fwd took $((after0 - mid0)) frames"
e2e_msg "br0: $got of 10 replies; frames vswitch-fwd +$((after0 - mid0))"

# One bridge across both threads: tapc3 on CPU 0's thread, tapd3 on CPU 1's (add-port --cpu):
# every frame between them crosses the peer link's rings.
netns_add "${NSP}c3" "${NSP}d3"
for side in c d; do
    n="$NSP${side}3"
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
vsw_ok add-br br3 --cpu 0 >/dev/null
for pair in c:0 d:1; do
    side=${pair%:*} cpu=${pair#*:} tap="vsft${pair%:*}3$$"
    vsw_ok add-port br3 "tap${side}3" --type tap --ifname "$tap" --cpu "$cpu" >/dev/null
    ip link set "$tap" netns "$NSP${side}3" || e2e_fail "cannot move $tap"
    ip -n "$NSP${side}3" addr add "10.0.73.$([[ $side == c ]] && echo 1 || echo 2)/24" dev "$tap"
    ip -n "$NSP${side}3" link set "$tap" up
done
shown=$(vsw show --format json | python3 -c '
import json, sys
b = next(b for b in json.load(sys.stdin)["bridges"] if b["name"] == "br3")
print(" ".join(p["name"] + "=" + p.get("options", {}).get("thread", "-") for p in b["ports"]))')
[[ $shown == "tapc3=vswitch-fwd tapd3=vswitch-fwd1" ]] || e2e_fail "br3's ports are not on the threads asked for: $shown"
s0=$(frames vswitch-fwd) s1=$(frames vswitch-fwd1)
got=$(netns_ping "${NSP}c3" 10.0.73.1 10.0.73.2 10)
((got >= 9)) || e2e_fail "br3 across threads: $got of 10 replies"
d0=$(($(frames vswitch-fwd) - s0)) d1=$(($(frames vswitch-fwd1) - s1))
# Each frame is taken twice, by its port's thread and from the ring by the other: each
# thread takes every request and every reply once (20 frames and the ARP exchange).
((d0 >= 18 && d1 >= 18)) || e2e_fail "pings across threads, but frames vswitch-fwd +$d0, vswitch-fwd1 +$d1"
e2e_msg "br3 across threads: $got of 10 replies; frames vswitch-fwd +$d0, vswitch-fwd1 +$d1"
fdb=$(vsw fdb show br3)
[[ $(grep -c "tap[cd]3" <<<"$fdb") == 2 ]] || e2e_fail "fdb show br3 does not list both TAPs once: $fdb"
vsw_expect_refused "a mirror on a bridge across threads" "not supported on it yet" add-mirror br3 m0 --select-all --output tapc3
vsw dp-stats | tee -a "$E2E_LOG_DIR/dp-stats.txt"

# Idle: both threads sleep in epoll (utime + stime in clock ticks, over 3 s).
ticks() { awk '{print $14 + $15}' "/proc/$VSWITCHD_PID/task/$1/stat"; }
sleep 1
t0=$(ticks "${TID[vswitch-fwd]}") t1=$(ticks "${TID[vswitch-fwd1]}")
sleep 3
d0=$(($(ticks "${TID[vswitch-fwd]}") - t0)) d1=$(($(ticks "${TID[vswitch-fwd1]}") - t1))
((d0 <= 2 && d1 <= 2)) || e2e_fail "idle forwarding threads used CPU: vswitch-fwd $d0, vswitch-fwd1 $d1 ticks in 3 s"
e2e_msg "idle 3 s: vswitch-fwd $d0, vswitch-fwd1 $d1 clock ticks"
e2e_pass
