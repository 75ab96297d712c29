#!/usr/bin/env bash
# VXLAN remote learning (issue 19): a VTEP that no vswitchd configuration names becomes
# reachable when it comes from the allowed prefix.
#
#   nsA (vswitchd A) 192.0.2.1 ---veth--- 192.0.2.2 nsK: kernel vx42 (VNI 42, remote 192.0.2.1), 10.42.0.100
#   A's vx0: --remote 192.0.2.50 (a VTEP that is down) --learning --remote-prefix 192.0.2.0/24
#   guest vm1 (10.42.0.1) on A's br0.
#
# Pass: nsK pings vm1: its ARP arrives from 192.0.2.2, which A learns as a remote
# (`learned_remotes` in show); vm1's replies go to it; nsK gets every reply; vm1 then pings
# nsK's 10.42.0.100 by unicast to the learned VTEP (floods go to configured remotes only, as
# with the kernel's `learning`). Then with --remote-prefix 198.51.100.0/24 (the kernel outside it) nothing gets
# through and A counts rxDropUnknownRemote.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_tool ip iproute2
e2e_require_binaries
e2e_require_guest

NSA=vswLA$$ NSK=vswLK$$
netns_add "$NSA" "$NSK"
ip link add vlk$$ netns "$NSA" type veth peer name vkl$$ netns "$NSK"
ip -n "$NSA" addr add 192.0.2.1/24 dev vlk$$
ip -n "$NSK" addr add 192.0.2.2/24 dev vkl$$
ip -n "$NSA" link set vlk$$ up
ip -n "$NSK" link set vkl$$ up
ip -n "$NSK" link add vx42 type vxlan id 42 remote 192.0.2.1 local 192.0.2.2 dstport 4789 dev vkl$$ ||
    e2e_missing "kernel vxlan support" "a kernel with the vxlan module"
ip -n "$NSK" addr add 10.42.0.100/24 dev vx42
ip -n "$NSK" link set vx42 mtu 1450 up

vswitchd_start_in_netns "$NSA"
vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
vsw_ok add-port br0 vx0 --type vxlan --remote 192.0.2.50 --vni 42 --learning --remote-prefix 192.0.2.0/24 >/dev/null
# vm1 pings back after the kernel's VTEP has spoken first (its ARP request leaves vm1 a
# neighbour entry): floods go to the configured remotes only, as with the kernel's learning.
GUEST_MTU=1450 e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.42.0.1/24 "sleep 8; ping -c 5 -i 0.5 10.42.0.100"
e2e_wait_up vm1

out=$(ip netns exec "$NSK" ping -c 10 -i 0.2 -W 2 10.42.0.1 2>&1) || true
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
learned=$(vsw show --format json | python3 -c '
import json, sys
for b in json.load(sys.stdin)["bridges"]:
    for p in b["ports"]:
        if p["name"] == "vx0": print((p.get("options") or {}).get("learned_remotes", ""))')
e2e_msg "kernel VTEP 192.0.2.2 (not configured) -> vm1: ${received:-0} of 10 replies; A learned remotes: $learned"
[[ $learned == *192.0.2.2* ]] || e2e_fail "A did not learn 192.0.2.2 as a remote (learned_remotes: '$learned')"
((${received:-0} >= 9)) || e2e_fail "only ${received:-0} of 10 pings from the kernel's VTEP answered: $out"

# And the other way: vm1's unicast goes to the learned VTEP.
e2e_ping_check vm1 0

# Outside the prefix: refused and counted.
guest_kill vm1
vsw_ok del-port br0 vx0 >/dev/null
vsw_ok add-port br0 vx0 --type vxlan --remote 192.0.2.50 --vni 42 --learning --remote-prefix 198.51.100.0/24 >/dev/null
ip netns exec "$NSK" ping -c 3 -i 0.2 -W 1 10.42.0.1 >/dev/null 2>&1 && e2e_fail "a VTEP outside the prefix got through"
drops=$(vsw port stats br0 vx0 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"][0].get("rxDropUnknownRemote", 0))')
((drops > 0)) || e2e_fail "datagrams from outside the prefix were not counted (rxDropUnknownRemote $drops)"
e2e_msg "outside --remote-prefix: refused, rxDropUnknownRemote $drops"
vsw_expect_refused "learning from anywhere by default" "needs --remote-prefix" add-port br0 vx1 --type vxlan --remote 192.0.2.50 --vni 43 --learning
vsw_expect_refused "host bits" "host bits" add-port br0 vx1 --type vxlan --remote 192.0.2.50 --vni 43 --dst-port 4790 --learning --remote-prefix 192.0.2.1/24
e2e_pass
