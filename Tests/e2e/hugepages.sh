#!/usr/bin/env bash
# A guest whose RAM is on 2 MiB hugepages (memory-backend-file on /dev/hugepages: the switch
# maps 2 MiB-aligned regions) pings a guest with memfd RAM, both ways, through vswitchd;
# `vswitch doctor` reports one as hugepages, the other as a sealed memfd, both shared.
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
# vswitch doctor tells the two backings apart.
vsw_ok doctor >"$E2E_LOG_DIR/doctor.txt"
sed -n '/^Port vm1/,/^$/p' "$E2E_LOG_DIR/doctor.txt" | grep -q "memory region 0: .*, hugepages, .*shared with QEMU" ||
    e2e_fail "doctor does not see vm1's hugepages: $(cat "$E2E_LOG_DIR/doctor.txt")"
sed -n '/^Port vm2/,$p' "$E2E_LOG_DIR/doctor.txt" | grep -q "memory region 0: .*memfd.*, 4 KiB pages, sealed against shrinking, shared with QEMU" ||
    e2e_fail "doctor does not see vm2's sealed memfd: $(cat "$E2E_LOG_DIR/doctor.txt")"
e2e_msg "doctor: $(grep -h 'memory region 0' "$E2E_LOG_DIR/doctor.txt" | tr -s ' ' | tr '\n' ';')"
e2e_pass
