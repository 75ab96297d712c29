#!/usr/bin/env bash
# A guest whose RAM is on 2 MiB hugepages (memory-backend-file on /dev/hugepages: the switch
# maps 2 MiB-aligned regions) pings a guest with memfd RAM, both ways, through vswitchd.
source "$(dirname "$0")/lib.sh"

e2e_require_root
e2e_require_guest
e2e_require_binaries
vsw_hugepages_setup "${E2E_HUGEPAGES:-1024}" || true
free=$(vsw_hugepages_free)
((free >= 128)) || e2e_fail "need 128 free 2 MiB hugepages for the guest, have $free"
e2e_msg "free hugepages: $free"
vswitchd_start
E2E_VM1_MEM=hugepages E2E_VM2_MEM=memfd e2e_pair_ping br0 vhostuserclient 10 1400
e2e_pass
