#!/usr/bin/env bash
# A guest killed with SIGKILL and started again on the same socket (same mode) gets its
# connectivity back, for a vhostuserclient port (vswitchd must reconnect to the new QEMU) and
# a vhostuser port (vswitchd must accept the new QEMU's connection):
#   1. vm1 and vm2 up; vm1 pings vm2.
#   2. kill -9 vm1; start vm1 again; it pings vm2 again.
#   3. kill -9 vm2 (the guest that stayed idle); start it again; it pings vm1.
# Types to run: E2E_RESTART_TYPES (default "vhostuserclient vhostuser").
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
vswitchd_start

COUNT=${E2E_RESTART_PINGS:-5}

restart_round() {
    local type=$1 br=$2 mode
    mode=$(mode_for_type "$type")
    local s1="$E2E_TMP/$br-vm1.sock" s2="$E2E_TMP/$br-vm2.sock"
    e2e_msg "=== $type ports on $br"
    vsw_ok add-br "$br" >/dev/null
    local p1="${br}vm1" p2="${br}vm2"
    vsw_ok add-port "$br" "$p1" --type "$type" --path "$s1" >/dev/null
    vsw_ok add-port "$br" "$p2" --type "$type" --path "$s2" >/dev/null
    local fds_before maps_before
    fds_before=$(daemon_fds); maps_before=$(daemon_guest_maps)

    e2e_boot vm2 52:54:00:00:00:02 "$s2" "$mode" 10.0.0.2/24 ""
    GUEST_WAIT_PEER=10.0.0.2 e2e_boot vm1 52:54:00:00:00:01 "$s1" "$mode" 10.0.0.1/24 "ping -c $COUNT -s 1400 10.0.0.2"
    e2e_wait_up vm1
    e2e_wait_up vm2
    e2e_ping_check vm1 1
    e2e_snapshot "$type: first ping" "$br"

    e2e_msg "$type: kill -9 vm1 (pid ${GUEST_PID[vm1]})"
    guest_kill vm1 KILL
    sleep 1
    e2e_check_daemon
    e2e_snapshot "$type: vm1 killed" "$br"
    local rx_before
    rx_before=$(port_counter "$br" "$p1" rx)
    GUEST_WAIT_PEER=10.0.0.2 e2e_boot vm1 52:54:00:00:00:01 "$s1" "$mode" 10.0.0.1/24 "ping -c $COUNT -s 1400 10.0.0.2"
    e2e_wait_up vm1
    e2e_ping_check vm1 1
    local rx_after
    rx_after=$(port_counter "$br" "$p1" rx)
    e2e_msg "$type: port $p1 rx packets $rx_before -> $rx_after"
    ((rx_after > rx_before)) || e2e_fail "$type: port $p1 rx counter did not grow after the restart ($rx_before -> $rx_after)"
    e2e_snapshot "$type: vm1 restarted" "$br"

    e2e_msg "$type: kill -9 vm2 (pid ${GUEST_PID[vm2]})"
    guest_kill vm2 KILL
    sleep 1
    e2e_check_daemon
    GUEST_WAIT_PEER=10.0.0.1 e2e_boot vm2 52:54:00:00:00:02 "$s2" "$mode" 10.0.0.2/24 "ping -c $COUNT -s 1400 10.0.0.1"
    e2e_wait_up vm2
    e2e_ping_check vm2 1
    e2e_snapshot "$type: vm2 restarted" "$br"
    expect_fdb_has "$br" 52:54:00:00:00:01 52:54:00:00:00:02

    guest_kill vm1
    guest_kill vm2
    # A disconnect must unmap guest memory and close every fd the guest gave us.
    sleep 2
    local fds_after maps_after
    fds_after=$(daemon_fds); maps_after=$(daemon_guest_maps)
    e2e_msg "$type: vswitchd fds $fds_before -> $fds_after, guest memory mappings $maps_before -> $maps_after"
    ((maps_after == maps_before)) || e2e_fail "$type: guest memory still mapped after both guests left ($maps_after mappings)"
    ((fds_after <= fds_before)) || e2e_fail "$type: vswitchd leaks fds ($fds_before before the guests, $fds_after after)"
}

daemon_fds() { ls "/proc/$VSWITCHD_PID/fd" | wc -l; }
daemon_guest_maps() { grep -cE 'memfd:|hugepages' "/proc/$VSWITCHD_PID/maps" || true; }

n=0
for type in ${E2E_RESTART_TYPES:-vhostuserclient vhostuser}; do
    n=$((n + 1))
    restart_round "$type" "br$n"
done
e2e_pass
