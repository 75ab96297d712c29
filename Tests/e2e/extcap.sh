#!/usr/bin/env bash
# Wireshark's extcap interface with the real tshark. `vswitch` is installed into an extcap
# folder as a symlink named vswitch-extcap (Wireshark's personal extcap folder under a
# scratch HOME when this Wireshark has one; otherwise its global folder, under a unique name
# removed on exit: Wireshark 4.0 has no personal folder). Two guests ping; `tshark -D` lists
# the bridge and its ports (vswitch:br0, vswitch:br0/vm1), `tshark -i vswitch:br0/vm1 -c 10
# -w F` captures 10 frames as pcapng with the port names and directions, the extcap answers
# --extcap-dlts and --extcap-config, and a capture filter is applied by the daemon.
source "$(dirname "$0")/lib.sh"

e2e_require_guest
e2e_require_binaries
e2e_require_tool tshark tshark
vswitchd_start

# Where this Wireshark looks for extcaps: its personal folder (no root needed) if it has one.
export HOME="$E2E_TMP/home"
mkdir -p "$HOME"
folders=$(tshark -G folders 2>/dev/null)
personal=$(sed -n 's/^Personal Extcap path:[[:space:]]*//p' <<<"$folders")
global=$(sed -n 's/^Extcap path:[[:space:]]*//p' <<<"$folders")
if [[ -n $personal ]]; then
    mkdir -p "$personal"
    EXTCAP="$personal/vswitch-extcap"
else
    [[ -d $global ]] || e2e_fail "tshark -G folders names no extcap folder: $folders"
    e2e_require_root
    EXTCAP="$global/vswitch-extcap-e2e-$$"
    E2E_CLEANUP_HOOKS+=("rm -f '$EXTCAP'")
fi
ln -sf "$VSWITCH_BIN" "$EXTCAP"
e2e_msg "extcap installed as $EXTCAP"

vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
vsw_ok add-port br0 vm2 --type vhostuserclient --path "$E2E_TMP/vm2.sock" >/dev/null

# The extcap's own answers.
"$EXTCAP" --extcap-interfaces --extcap-version=4.0 >"$E2E_LOG_DIR/interfaces.txt"
grep -q '^interface {value=vswitch:br0/vm1}' "$E2E_LOG_DIR/interfaces.txt" || e2e_fail "--extcap-interfaces: $(cat "$E2E_LOG_DIR/interfaces.txt")"
[[ $("$EXTCAP" --extcap-interface vswitch:br0/vm1 --extcap-dlts) == "dlt {number=1}{name=EN10MB}{display=Ethernet}" ]] ||
    e2e_fail "--extcap-dlts: $("$EXTCAP" --extcap-interface vswitch:br0/vm1 --extcap-dlts)"
"$EXTCAP" --extcap-interface vswitch:br0 --extcap-config | grep -q 'call=--direction' || e2e_fail "--extcap-config has no direction"

# 1. tshark -D lists the bridge and its ports.
tshark -D >"$E2E_LOG_DIR/tshark-D.txt" 2>&1 || e2e_fail "tshark -D: $(cat "$E2E_LOG_DIR/tshark-D.txt")"
for i in vswitch:br0 vswitch:br0/vm1 vswitch:br0/vm2; do
    grep -q "^[0-9]*\. $i " "$E2E_LOG_DIR/tshark-D.txt" || e2e_fail "tshark -D does not list $i: $(cat "$E2E_LOG_DIR/tshark-D.txt")"
done
e2e_msg "tshark -D: $(grep vswitch "$E2E_LOG_DIR/tshark-D.txt" | tr '\n' ';')"

GUEST_WAIT_PEER=10.0.0.1 e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" server 10.0.0.2/24 "ping -c 30 -i 0.2 10.0.0.1"
GUEST_WAIT_PEER=10.0.0.2 e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.0.1/24 "ping -c 30 -i 0.2 10.0.0.2"
e2e_wait_up vm1
e2e_wait_up vm2

# 2. tshark -i vswitch:br0/vm1 -c 10 -w F: 10 frames, on vm1, in both directions.
F="$E2E_TMP/vm1.pcapng"
timeout 60 tshark -i vswitch:br0/vm1 -c 10 -w "$F" >"$E2E_LOG_DIR/tshark-i.txt" 2>&1 ||
    e2e_fail "tshark -i vswitch:br0/vm1 failed: $(cat "$E2E_LOG_DIR/tshark-i.txt")"
lines=$(tshark -r "$F" -T fields -e frame.interface_name -e frame.packet_flags_direction 2>/dev/null)
e2e_msg "tshark -r F -T fields -e frame.interface_name -e frame.packet_flags_direction:"
sed 's/^/    /' <<<"$lines"
[[ $(wc -l <<<"$lines") == 10 ]] || e2e_fail "captured $(wc -l <<<"$lines") frames, expected 10"
bad=$(grep -v $'^vm1\t0x0000000[12]$' <<<"$lines" || true)
[[ -z $bad ]] || e2e_fail "frames not on vm1: $bad"
grep -q $'\t0x00000001$' <<<"$lines" && grep -q $'\t0x00000002$' <<<"$lines" ||
    e2e_fail "expected frames in both directions on vm1"

# 3. The bridge with a capture filter: only ICMP, each frame once (inbound).
F2="$E2E_TMP/br0.pcapng"
timeout 60 tshark -i vswitch:br0 -f icmp -c 4 -w "$F2" >"$E2E_LOG_DIR/tshark-i2.txt" 2>&1 ||
    e2e_fail "tshark -i vswitch:br0 -f icmp failed: $(cat "$E2E_LOG_DIR/tshark-i2.txt")"
n=$(tshark -r "$F2" -Y icmp 2>/dev/null | wc -l)
all=$(tshark -r "$F2" -T fields -e frame.interface_name -e frame.packet_flags_direction 2>/dev/null)
[[ $n == 4 && $(wc -l <<<"$all") == 4 ]] || e2e_fail "br0 with -f icmp: $n ICMP of $(wc -l <<<"$all") frames"
grep -qv $'\t0x00000001$' <<<"$all" && e2e_fail "br0 capture: not every frame inbound: $all"
e2e_msg "tshark -i vswitch:br0 -f icmp -c 4: $(sort <<<"$all" | uniq -c | tr -s ' ' | tr '\n' ';')"
e2e_pass
