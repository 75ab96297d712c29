# shellcheck shell=bash
# The "vxlan" system of Benchmarks/compare/run (sourced by it): the same closed loop, but the
# generator's two ports sit on two vswitchd instances joined by a VXLAN tunnel:
#
#   gen port 0 <-> vswitchd A (p0, vx0) ==VXLAN VNI 42, UDP 4789, veth pair== vswitchd B (vx0, p1) <-> gen port 1
#
# Each instance runs in its own network namespace (ip netns exec); the veth MTU is 9000 so
# 1518-byte frames fit (1518 + 36 > 1500). Both forwarding threads are on CPU 1 (taskset and
# --forwarding-cpu 1), with the kernel's UDP work they cause (a sendmsg on one side runs the
# veth and UDP receive path of the other in the same softirq), so the figure is what one CPU
# does for two switches and the kernel's UDP stack; the generator has CPU 0 as for the others.
# Switch figures (busy, cycles/pkt) are A's; B's dp-stats and port stats go to the run's logs.
# shellcheck disable=SC2034 # VSWD_PID is read by systems/vswitch.sh

VX_NS_A=vswcmpA$$
VX_NS_B=vswcmpB$$
VX_B_PID=""

vxlan_setup() {
    local dir=$1 size=$2 n a b
    a=("$VSWITCH" --control "$dir/ctl.sock")
    b=("$VSWITCH" --control "$dir/ctl-b.sock")
    for n in "$VX_NS_A" "$VX_NS_B"; do ip netns add "$n" || { echo "ip netns add $n failed"; return 1; }; done
    ip link add vxa$$ netns "$VX_NS_A" mtu 9000 type veth peer name vxb$$ netns "$VX_NS_B" mtu 9000 ||
        { echo "cannot create the veth pair"; return 1; }
    ip -n "$VX_NS_A" addr add 198.51.100.1/24 dev vxa$$
    ip -n "$VX_NS_B" addr add 198.51.100.2/24 dev vxb$$
    ip -n "$VX_NS_A" link set vxa$$ up
    ip -n "$VX_NS_B" link set vxb$$ up
    taskset -c 1 ip netns exec "$VX_NS_A" "$VSWITCHD" --control "$dir/ctl.sock" --run-dir "$dir" --forwarding-cpu 1 \
        --log-level warning >"$dir/vswitchd.log" 2>&1 &
    VSWD_PID=$!
    taskset -c 1 ip netns exec "$VX_NS_B" "$VSWITCHD" --control "$dir/ctl-b.sock" --run-dir "$dir" --forwarding-cpu 1 \
        --log-level warning >"$dir/vswitchd-b.log" 2>&1 &
    VX_B_PID=$!
    vsw_wait_for 15 test -S "$dir/ctl.sock" -a -S "$dir/ctl-b.sock" || { echo "a vswitchd did not create its control socket"; return 1; }
    "${a[@]}" add-br br0 >/dev/null && "${b[@]}" add-br br0 >/dev/null || { echo "add-br failed"; return 1; }
    "${a[@]}" add-port br0 vx0 --type vxlan --remote 198.51.100.2 --vni 42 >/dev/null || { echo "A: add-port vx0 failed"; return 1; }
    "${b[@]}" add-port br0 vx0 --type vxlan --remote 198.51.100.1 --vni 42 >/dev/null || { echo "B: add-port vx0 failed"; return 1; }
    gen_start "$dir" "$size"
    "${a[@]}" add-port br0 p0 --type vhostuserclient --path "$dir/v0.sock" >/dev/null || { echo "add-port p0 failed"; return 1; }
    "${b[@]}" add-port br0 p1 --type vhostuserclient --path "$dir/v1.sock" >/dev/null || { echo "add-port p1 failed"; return 1; }
}
vxlan_snap0() { vswitch_snap0 "$1"; }
vxlan_snap1() {
    vswitch_snap1 "$1"
    "$VSWITCH" --control "$1/ctl-b.sock" dp-stats >"$1/dp-stats-b.txt" 2>&1
}
vxlan_figures() { vswitch_figures "$@"; }
vxlan_teardown() {
    local dir=$1 bdrops
    if [[ -n $VX_B_PID ]] && kill -0 "$VX_B_PID" 2>/dev/null; then
        "$VSWITCH" --control "$dir/ctl-b.sock" port stats br0 >"$dir/port-stats-b.txt" 2>&1
        bdrops=$("$VSWITCH" --control "$dir/ctl-b.sock" port stats br0 --format json 2>/dev/null |
            awk '{ gsub(/[",:]/, " ") } $1 ~ /Drop/ { s += $2 } END { print s + 0 }')
    else
        NOTE+="vswitchd B exited during the run "
    fi
    vswitch_teardown "$dir"
    SW_DROPS=$((${SW_DROPS:-0} + ${bdrops:-0}))
    vxlan_stop
}
vxlan_stop() {
    [[ -n $VX_B_PID ]] && vsw_kill_pid "$VX_B_PID" 15
    VX_B_PID=""
    ip netns del "$VX_NS_A" 2>/dev/null
    ip netns del "$VX_NS_B" 2>/dev/null
    return 0
}
