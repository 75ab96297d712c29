#!/usr/bin/env bash
# More than 8 memory regions (issue 21, part 3) from real QEMU memory hotplug. vm1 starts with
# -m 1G,slots=16,maxmem=8G, main RAM and 8 DIMMs (E2E_DIMMS_AT_START) each on
# memory-backend-memfd,share=on: QEMU 7.2 then has 9 regions for the switch (main RAM is one),
# more than SET_MEM_TABLE carries (QEMU would refuse to start: "a used vhost backend has no
# free memory slots left"), so it needs CONFIGURE_MEM_SLOTS and sends them one by one
# (ADD_MEM_REG). vm1 pings vm2 through br0 without end while the test
#   1. hot-plugs 8 more DIMMs through QMP (object-add + device_add; E2E_DIMMS_PLUGGED), filling
#      all 16 slots (17 regions): the port must list every region in `vswitch show --json`
#      (memfd, sealed) and in `vswitch show`, and ping goes on;
#   2. hot-unplugs the last one (device_del): the guest kernel ejects the DIMM (its memory was
#      never onlined: the guest has no udev and CONFIG_MEMORY_HOTPLUG_DEFAULT_ONLINE is off),
#      QEMU reports DEVICE_DELETED and sends REM_MEM_REG; the region count drops and ping goes on.
# vswitchd's memfd mappings follow the region count (a removed region is unmapped).
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
AT_START=${E2E_DIMMS_AT_START:-8}
PLUGGED=${E2E_DIMMS_PLUGGED:-8}
DIMM_MB=128
QMP="$E2E_TMP/vm1.qmp"
vswitchd_start

qmp() { python3 "$E2E_DIR/qmp.py" "$QMP" "$@"; }
pinger() { echo "while :; do ping -c 1 -W 1 $1; sleep 0.2; done"; }
replies() { tr -d '\r' <"${GUEST_LOG[vm1]}" | grep -c "bytes from 10.0.0.2" || true; }
lost() { tr -d '\r' <"${GUEST_LOG[vm1]}" | grep -c " 0 packets received" || true; }
# vm1's memory regions from `vswitch show --format json`: "gpa size backing sealed" lines.
vm1_regions() {
    vsw show --format json | python3 -c '
import json, sys
for b in json.load(sys.stdin)["bridges"]:
    for p in b["ports"]:
        if p["name"] == "vm1":
            for r in p.get("memoryRegions") or []:
                print(hex(r["guestPhysicalAddress"]), r["size"], r["backing"], r["sealed"])'
}
region_count() { vm1_regions | wc -l; }
has_regions() { (($(region_count) == $1)); }
memfd_maps() { grep -c "/memfd:" "/proc/$VSWITCHD_PID/maps" || true; }
# expect_pings WHAT: vm1 gets at least 5 more replies from vm2 within 30 s.
expect_pings() {
    local want=$(($(replies) + 5))
    vsw_wait_for 30 bash -c "(( \$(tr -d '\r' <'${GUEST_LOG[vm1]}' | grep -c 'bytes from 10.0.0.2') >= $want ))" ||
        e2e_fail "$1: vm1 stopped getting replies from vm2 ($(replies) so far)"
    e2e_msg "$1: vm1 gets replies from vm2 ($(replies) so far, $(lost) lost)"
}

dimms="-qmp unix:$QMP,server=on,wait=off"
for ((i = 0; i < AT_START; i++)); do
    dimms+=" -object memory-backend-memfd,id=m$i,size=${DIMM_MB}M,share=on -device pc-dimm,id=d$i,memdev=m$i"
done

vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
vsw_ok add-port br0 vm2 --type vhostuserclient --path "$E2E_TMP/vm2.sock" >/dev/null
GUEST_MEM_MB=1024 GUEST_MEM_SLOTS=slots=16,maxmem=8G GUEST_QEMU_EXTRA="$dimms" \
    e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.0.1/24 "$(pinger 10.0.0.2)"
e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" server 10.0.0.2/24 ""
e2e_wait_up vm1
e2e_wait_up vm2
expect_pings "start"
grep -q "CONFIGURE_MEM_SLOTS" <(vsw show) || e2e_fail "CONFIGURE_MEM_SLOTS was not negotiated: $(vsw show | grep 'protocol features')"
start=$(region_count)
((start >= AT_START + 1 && start > 8)) || e2e_fail "vm1 has $start memory regions, expected more than 8 (main RAM + $AT_START DIMMs)"
e2e_msg "vm1 started with $start memory regions (main RAM + $AT_START DIMMs); vswitchd maps $(memfd_maps) memfd ranges"
e2e_snapshot "started"

for ((i = AT_START; i < AT_START + PLUGGED; i++)); do
    qmp object-add "{\"qom-type\": \"memory-backend-memfd\", \"id\": \"m$i\", \"size\": $((DIMM_MB << 20)), \"share\": true}" >/dev/null ||
        e2e_fail "QMP object-add m$i failed"
    out=$(qmp device_add "{\"driver\": \"pc-dimm\", \"id\": \"d$i\", \"memdev\": \"m$i\"}") ||
        e2e_fail "QMP device_add d$i failed: $out"
done
want=$((start + PLUGGED))
vsw_wait_for 30 has_regions "$want" || e2e_fail "after hot-plugging $PLUGGED DIMMs vm1 has $(region_count) regions, expected $want"
table=$(vm1_regions)
bad=$(awk '$3 != "memfd" || $4 != "True"' <<<"$table")
[[ -z $bad ]] || e2e_fail "regions not memfd and sealed: $(tr '\n' ';' <<<"$bad")"
e2e_msg "hot-plugged $PLUGGED DIMMs: vm1 has $want regions, all memfd and sealed; vswitchd maps $(memfd_maps) memfd ranges"
printf '%s\n' "$table" >"$E2E_LOG_DIR/regions-plugged.txt"
vsw show | grep -q "memory: $want regions" || e2e_fail "vswitch show does not list $want regions"
expect_pings "after hot-plug"
e2e_snapshot "plugged"

last=$((AT_START + PLUGGED - 1))
maps_before=$(memfd_maps)
out=$(qmp device_del "{\"id\": \"d$last\"}" --wait-event DEVICE_DELETED 60) || rc=$?
if [[ ${rc:-0} != 0 ]]; then
    e2e_fail "device_del d$last: the guest did not release the DIMM within 60 s: $out"
fi
vsw_wait_for 30 has_regions "$((want - 1))" || e2e_fail "after unplugging d$last vm1 has $(region_count) regions, expected $((want - 1))"
vsw_wait_for 10 bash -c "(( \$(grep -c /memfd: /proc/$VSWITCHD_PID/maps) < $maps_before ))" ||
    e2e_fail "the removed region is still mapped in vswitchd ($(memfd_maps) memfd ranges, $maps_before before)"
qmp object-del "{\"id\": \"m$last\"}" >/dev/null || e2e_fail "QMP object-del m$last failed"
e2e_msg "unplugged d$last: vm1 has $((want - 1)) regions; vswitchd maps $(memfd_maps) memfd ranges ($maps_before before)"
expect_pings "after hot-unplug"
e2e_snapshot "unplugged"
n=$(lost)
((n <= 3)) || e2e_fail "vm1 lost $n pings"
e2e_check_daemon
e2e_pass "$start regions at start, $want after hot-plug, $((want - 1)) after unplug; $(replies) replies, $n lost"
