#!/usr/bin/env bash
# Guests started by the real libvirtd (Debian's, QEMU as libvirt-qemu, domain type qemu,
# direct kernel boot) on <interface type='vhostuser'>, every domain made from the example
# Configs/libvirt-guest.xml (lv_domain_xml substitutes names, paths, MAC, mode):
#   1. client mode (QEMU connects, vhostuser ports) with vswitchd --socket-group kvm on a run
#      directory that did not exist (as after a reboot): vswitchd creates it root:kvm setgid,
#      the sockets are root:kvm 0660, and the two guests ping each other;
#   2. the same guests in server mode (QEMU listens, vhostuserclient ports), ping again;
#   3. a guest denied by permissions (a socket of group root): QEMU's log says "Permission
#      denied" and `vswitch show` gives the permission reason within a few seconds.
source "$(dirname "$0")/lib.sh"
# shellcheck source=lib-libvirt.bash
source "$(dirname "$0")/lib-libvirt.bash"

e2e_require_guest
e2e_require_binaries
lv_require
lv_start

RUN="$E2E_TMP/boot/run/vswitch"   # not there: vswitchd makes it
VSWITCHD_RUN_DIR=$RUN vswitchd_start --socket-group kvm
[[ $(stat -c '%G %A' "$RUN") == "kvm drwxr-sr-x" ]] ||
    e2e_fail "run directory is $(stat -c '%U:%G %A' "$RUN"), expected root:kvm drwxr-sr-x"
e2e_msg "run directory created as $(stat -c '%U:%G %A' "$RUN")"

# ping_pair MODE: vm1 and vm2 ping each other through br0's ports vm1 and vm2.
ping_pair() {
    local mode=$1 a b
    GUEST_WAIT_PEER=10.0.0.1 lv_guest vm2 52:54:00:00:00:02 "$(port_path vm2)" "$mode" 10.0.0.2/24 "ping -c 10 -s 1400 10.0.0.1"
    GUEST_WAIT_PEER=10.0.0.2 lv_guest vm1 52:54:00:00:00:01 "$(port_path vm1)" "$mode" 10.0.0.1/24 "ping -c 10 -s 1400 10.0.0.2"
    lv_wait_up vm1
    lv_wait_up vm2
    e2e_ping_check vm1 1
    e2e_ping_check vm2 1
    e2e_snapshot "after ping, $mode mode"
    expect_fdb_has br0 52:54:00:00:00:01 52:54:00:00:00:02
    expect_traffic br0 vm1 vm2
    for a in vm1 vm2; do
        b=$(show_ports | awk -v p="$a" '$1 == p {print $4}')
        [[ $b == up ]] || e2e_fail "port $a: link $b after the ping"
    done
    vsw_ok doctor vm1 >"$E2E_LOG_DIR/doctor-$mode.txt"
    grep -q "shared with QEMU" "$E2E_LOG_DIR/doctor-$mode.txt" ||
        e2e_fail "doctor does not see vm1's memory as shared: $(cat "$E2E_LOG_DIR/doctor-$mode.txt")"
    lv_destroy vm1
    lv_destroy vm2
}

port_path() { vsw show --format json | python3 -c 'import json,sys
for b in json.load(sys.stdin)["bridges"]:
    for p in b["ports"]:
        if p["name"] == sys.argv[1]: print(p["path"])' "$1"; }

# --- 1. client mode: the switch creates the sockets
vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuser --path vm1.sock >/dev/null
vsw_ok add-port br0 vm2 --type vhostuser --path vm2.sock >/dev/null
for p in vm1 vm2; do
    [[ $(stat -c '%U:%G %a' "$RUN/$p.sock") == "root:kvm 660" ]] ||
        e2e_fail "$RUN/$p.sock is $(stat -c '%U:%G %a' "$RUN/$p.sock"), expected root:kvm 660"
done
e2e_msg "sockets: $(stat -c '%n %U:%G %a' "$RUN"/vm1.sock | sed "s|$RUN/||")"
ping_pair client

# --- 2. server mode: QEMU creates the sockets in a directory its user may write
QDIR="$E2E_TMP/qemu-sockets"
install -d -m 0770 -o libvirt-qemu -g kvm "$QDIR"
vsw_ok del-port br0 vm1 >/dev/null
vsw_ok del-port br0 vm2 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$QDIR/vm1.sock" >/dev/null
vsw_ok add-port br0 vm2 --type vhostuserclient --path "$QDIR/vm2.sock" >/dev/null
reason=$(vsw show --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bridges"][0]["ports"][0].get("reason",""))')
[[ $reason == *"does not exist (QEMU not started yet?)"* ]] || e2e_fail "reason before QEMU starts: '$reason'"
e2e_msg "before the guests: $reason"
ping_pair server

# --- 3. denied: a socket of group root, QEMU as libvirt-qemu may not connect
vsw_ok add-port br0 vm3 --type vhostuser --path vm3.sock --socket-group root >/dev/null
qlog=$(lv_qemu_log vm3)
skip=$(($(wc -l <"$qlog" 2>/dev/null || echo 0) + 1))   # earlier runs' lines
denied() { tail -n "+$skip" "$qlog" 2>/dev/null | grep -m1 "Permission denied"; }
lv_guest vm3 52:54:00:00:00:03 "$RUN/vm3.sock" client 10.0.0.3/24 ""
start=$SECONDS
reason=""
while ((SECONDS - start < 30)); do
    reason=$(vsw show --format json | python3 -c 'import json,sys
for p in json.load(sys.stdin)["bridges"][0]["ports"]:
    if p["name"] == "vm3": print(p.get("reason", ""))')
    [[ -n $(denied) ]] && break
    sleep 0.5
done
[[ -n $(denied) ]] || e2e_fail "QEMU's log does not say Permission denied: $(tail -n 5 "$qlog" 2>&1)"
e2e_msg "QEMU: $(denied)"
[[ $reason == *"root:root 0660: QEMU as libvirt-qemu cannot connect; use --socket-group"* ]] ||
    e2e_fail "vswitch show gives no permission reason for vm3 after $((SECONDS - start)) s: '$reason'"
e2e_msg "vswitch show, $((SECONDS - start)) s after virsh start: $reason"
grep -q "link down: listening: .*QEMU as libvirt-qemu cannot connect" "$VSWITCHD_LOG" || e2e_fail "the reason is not in the log"
vsw_ok doctor vm3 >"$E2E_LOG_DIR/doctor-denied.txt"
grep -q "fix: vswitchd --socket-group kvm" "$E2E_LOG_DIR/doctor-denied.txt" ||
    e2e_fail "doctor does not suggest --socket-group kvm: $(cat "$E2E_LOG_DIR/doctor-denied.txt")"
lv_destroy vm3
e2e_pass
