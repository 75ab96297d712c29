#!/usr/bin/env bash
# Checksum and TCP segmentation offloads between QEMU guests: a TCP transfer (busybox nc) of
# 8 MiB of random data, compared by md5, in three set-ups:
#   both      both guests negotiate CSUM/GUEST_CSUM/TSO: metadata passes through the switch
#   mixed     the receiver has no offloads: the switch finishes checksums and cuts TSO frames
#   none      no offloads at all (baseline)
# Prints the transfer time of each; checks the sender really sent TSO frames (average frame
# size above 1514 bytes) where it negotiated TSO, and that nothing was dropped as malformed.
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
OFF=",csum=off,guest_csum=off,host_tso4=off,host_tso6=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,host_ecn=off,guest_ufo=off,host_ufo=off"
MB=${OFFLOAD_TEST_MB:-8}
vswitchd_start
vsw_ok add-br br0 >/dev/null

round() {
    local name=$1 tx_opts=$2 rx_opts=$3 n=$4
    vsw_ok add-port br0 "s$n" --type vhostuserclient --path "$E2E_TMP/s$n.sock" >/dev/null
    vsw_ok add-port br0 "r$n" --type vhostuserclient --path "$E2E_TMP/r$n.sock" >/dev/null
    GUEST_DEVICE_OPTS=$rx_opts e2e_boot "r$n" "52:54:00:00:01:0$n" "$E2E_TMP/r$n.sock" server 10.0.0.2/24 \
        "mkfifo /tmp/in; nc -l -p 5001 < /tmp/in > /tmp/r & exec 3>/tmp/in; wait \$!; md5sum /tmp/r; wc -c < /tmp/r"
    GUEST_DEVICE_OPTS=$tx_opts GUEST_WAIT_PEER=10.0.0.2 e2e_boot "s$n" "52:54:00:00:00:0$n" "$E2E_TMP/s$n.sock" server 10.0.0.1/24 \
        "dd if=/dev/urandom of=/tmp/d bs=64k count=$((MB * 16)) 2>/dev/null; md5sum /tmp/d; sleep 1; time nc -w 3 10.0.0.2 5001 < /tmp/d"
    e2e_wait_up "r$n"
    e2e_wait_up "s$n"
    guest_wait_cmd "s$n" 400 >/dev/null || e2e_fail "$name: sender did not finish"
    guest_wait_cmd "r$n" 60 >/dev/null || e2e_fail "$name: receiver did not finish"
    local sent got size secs
    sent=$(guest_cmd_output "s$n" | grep -o '^[0-9a-f]\{32\}' | head -n1)
    got=$(guest_cmd_output "r$n" | grep -o '^[0-9a-f]\{32\}' | head -n1)
    size=$(guest_cmd_output "r$n" | grep -E '^[0-9]+$' | tail -n1)
    secs=$(guest_cmd_output "s$n" | tr -d '\r' | awk '/^real/ {gsub("s","",$3); split($2,m,"m"); print m[1]*60 + $3}')
    [[ -n $sent && $sent == "$got" ]] || e2e_fail "$name: data differs (sent md5 $sent, received $got, $size bytes)"
    e2e_snapshot "$name"
    local stats rxp rxb
    stats=$(vsw port stats br0 "s$n" --format json)
    rxp=$(python3 -c 'import json,sys; s=json.load(sys.stdin)["stats"][0]; print(s["rxPackets"], s["rxBytes"])' <<<"$stats")
    rxb=${rxp#* }; rxp=${rxp% *}
    local avg=$((rxb / (rxp > 0 ? rxp : 1)))
    e2e_msg "$name: $size bytes, md5 ok, ${secs}s ($(awk -v b="$size" -v s="$secs" 'BEGIN {if (s > 0) printf "%.1f", b * 8 / s / 1e6; else print "?"}') Mbit/s), sender frames avg $avg bytes"
    echo "OFFLOAD $name seconds=$secs avg_frame=$avg" >>"$E2E_LOG_DIR/offloads.txt"
    if [[ $tx_opts != "$OFF" ]] && ((avg <= 1514)); then e2e_fail "$name: the sender did not use TSO (avg frame $avg bytes)"; fi
    if [[ $tx_opts == "$OFF" ]] && ((avg > 1514)); then e2e_fail "$name: frames above 1514 bytes without TSO"; fi
    local bad
    bad=$(vsw port stats br0 --format json | python3 -c 'import json,sys; print(sum(s.get("txDropBadOffload") or 0 for s in json.load(sys.stdin)["stats"]))')
    ((bad == 0)) || e2e_fail "$name: $bad frames dropped as bad offload metadata"
    guest_kill "s$n"; guest_kill "r$n"
    vsw_ok del-port br0 "s$n" >/dev/null; vsw_ok del-port br0 "r$n" >/dev/null
}

for r in ${OFFLOAD_ROUNDS:-both mixed none}; do
    case $r in
        both) round both "" "" 1 ;;
        mixed) round mixed "" "$OFF" 2 ;;
        none) round none "$OFF" "$OFF" 3 ;;
    esac
done
e2e_pass
