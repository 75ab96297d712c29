#!/usr/bin/env bash
# Two QEMU guests on vhostuser ports (vswitchd listens; QEMU connects with reconnect=1) ping
# each other with 1400-byte pings; then the FDB has both MACs and both ports counted traffic.
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
vswitchd_start
e2e_pair_ping br0 vhostuser 10 1400
e2e_pass
