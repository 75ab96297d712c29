#!/usr/bin/env bash
# A TAP port reaches the host kernel, even from another network namespace: a QEMU guest on a
# vhostuserclient port pings 10.0.9.9 on a TAP interface that the test moves into a namespace
# of its own; the namespace pings the guest back. Also: the TAP error cases leave the daemon and
# the working ports alone, and del-port removes the interface.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_guest
e2e_require_binaries
[[ -c /dev/net/tun ]] || e2e_missing "/dev/net/tun" "modprobe tun"

NS="vswe2e$$"
TAP="vst$$"
E2E_CLEANUP_HOOKS+=("ip netns del $NS 2>/dev/null")
ip netns add "$NS" || e2e_fail "ip netns add $NS failed"

vswitchd_start
vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
vsw_ok add-port br0 tap0 --type tap --ifname "$TAP" >/dev/null
grep -q "UP" <<<"$(ip link show "$TAP")" || e2e_fail "TAP $TAP is not up after add-port: $(ip link show "$TAP" 2>&1)"
e2e_msg "TAP $TAP created and up"

# Error cases: clear messages, nothing created, the bridge keeps working.
vsw_expect_refused "same interface twice" "already port tap0" add-port br0 tap1 --type tap --ifname "$TAP"
vsw_expect_refused "not a TAP device" "not a TAP device" add-port br0 tap1 --type tap --ifname lo
vsw_expect_refused "missing --ifname" "--ifname" add-port br0 tap1 --type tap
ports=$(show_ports)
grep -q '^tap1 ' <<<"$ports" && e2e_fail "a refused port was created anyway"

# Into the namespace: the descriptor keeps carrying frames.
ip link set "$TAP" netns "$NS" || e2e_fail "cannot move $TAP into $NS"
ip -n "$NS" addr add 10.0.9.9/24 dev "$TAP"
ip -n "$NS" link set "$TAP" up
ip -n "$NS" link set lo up
e2e_msg "$TAP moved into namespace $NS with 10.0.9.9/24"

GUEST_WAIT_PEER=10.0.9.9 e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.9.1/24 "ping -c 10 -s 1400 10.0.9.9"
e2e_wait_up vm1
e2e_ping_check vm1 1
out=$(ip netns exec "$NS" ping -c 5 -W 2 10.0.9.1 2>&1) || e2e_fail "namespace -> guest ping failed: $out"
e2e_msg "namespace -> guest: $(grep -E 'packets transmitted' <<<"$out")"

e2e_snapshot "after ping"
ns_mac=$(ip -n "$NS" -o link show "$TAP" | grep -o 'link/ether [0-9a-f:]*' | awk '{print $2}')
expect_fdb_has br0 52:54:00:00:00:01 "$ns_mac"
fdb=$(fdb_macs br0)
grep -qi "^$ns_mac tap0 " <<<"$fdb" || e2e_fail "$ns_mac not learned on tap0: $(tr '\n' ';' <<<"$fdb")"
expect_traffic br0 vm1 tap0
grep -A3 "Port tap0" <<<"$(vsw show)" | grep -q "type: *tap" || e2e_fail "show does not list tap0 as a tap port: $(vsw show)"

vsw_ok del-port br0 tap0 >/dev/null
sleep 0.5
ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && e2e_fail "$TAP still exists after del-port"
e2e_msg "del-port removed $TAP"
e2e_pass
