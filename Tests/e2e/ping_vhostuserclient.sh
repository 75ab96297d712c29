#!/usr/bin/env bash
# Two QEMU guests on vhostuserclient ports (QEMU listens, server=on; vswitchd connects) ping
# each other with 1400-byte pings; then the FDB has both MACs and both ports counted traffic.
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
vswitchd_start
e2e_pair_ping br0 vhostuserclient 10 1400
e2e_pass
