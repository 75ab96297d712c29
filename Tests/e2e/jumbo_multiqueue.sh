#!/usr/bin/env bash
# Two QEMU guests with 2 vCPUs, 2 queue pairs (mq=on) and MTU 9000 (host_mtu=9000, so
# NET_SET_MTU and VIRTIO_NET_F_MTU are negotiated) ping each other with 8000-byte pings:
# frames span several descriptors and several mergeable RX buffers, and come from either
# TX queue. Then `vswitch show` reports MTU 9000 and the second queue pair.
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
vswitchd_start
export GUEST_SMP=2 GUEST_MTU=9000 GUEST_NETDEV_OPTS=",queues=2" GUEST_DEVICE_OPTS=",mq=on,host_mtu=9000"
e2e_pair_ping br0 vhostuserclient 10 8000
show=$(vsw show --format json)
e2e_msg "show: $(echo "$show" | tr -d ' \n' | cut -c1-400)"
grep -q '"mtu" *: *9000' <<<"$show" || e2e_fail "vswitch show does not report MTU 9000"
grep -q '"index" *: *3' <<<"$show" || e2e_fail "vswitch show does not list queue 3 (second queue pair)"
e2e_pass
