# shellcheck shell=bash
# shellcheck disable=SC2034  # GUEST_LOG and GUEST_PID are read by Tools/lib/guest.sh and lib.sh
# Helpers for Tests/e2e/libvirt.sh (not named .sh: the runner would take it for a test): a private libvirtd (and virtlogd if none runs) and
# test guests defined as libvirt domains (type qemu, direct kernel boot of the test image,
# memfd shared memory, one <interface type='vhostuser'>). Sourced after lib.sh.
#
#   lv_start                          start the daemons (stopped on exit); sets LV_URI
#   lv_guest NAME MAC SOCK MODE IP CMD  define and start a domain; MODE client|server is
#                                     libvirt's <source mode=...> (QEMU's side of the socket)
#   lv_destroy NAME                   stop and undefine it
#   lv_qemu_log NAME                  libvirt's QEMU log of it
#   virsh_lv ARGS...                  virsh against the private libvirtd

LV_DIR="$E2E_TMP/libvirt"
# Domains are named vswe2e-NAME so that they cannot clash with the host's own.
lv_domain() { echo "vswe2e-$1"; }
LV_URI=""

virsh_lv() { virsh -q -c "$LV_URI" "$@"; }

lv_require() {
    e2e_require_root
    e2e_require_tool libvirtd libvirt-daemon-system
    e2e_require_tool virtlogd libvirt-daemon-system
    e2e_require_tool virsh libvirt-clients
    getent passwd libvirt-qemu >/dev/null || e2e_missing "user libvirt-qemu" "install libvirt-daemon-system"
    getent group kvm >/dev/null || e2e_missing "group kvm" "install libvirt-daemon-system"
}

# _lv_listening SOCKET: a daemon accepts connections on SOCKET (a stale file does not count).
_lv_listening() {
    [[ -S $1 ]] && python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$1" 2>/dev/null
}

# _lv_pid_alive FILE: the pid in FILE runs.
_lv_pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

lv_start() {
    mkdir -p "$LV_DIR"
    # QEMU runs as libvirt-qemu: it must reach the kernel, the sockets and its serial logs.
    chmod 0711 "$E2E_TMP"
    chmod 0755 "$LV_DIR"
    cp "$GUEST_KERNEL" "$LV_DIR/vmlinuz"
    cp "$GUEST_INITRD" "$LV_DIR/initrd"
    chmod 0644 "$LV_DIR/vmlinuz" "$LV_DIR/initrd"
    if _lv_listening /run/libvirt/virtlogd-sock; then
        e2e_msg "virtlogd already runs: using it"
    else
        virtlogd -d -p "$LV_DIR/virtlogd.pid" || e2e_fail "virtlogd did not start"
        E2E_CLEANUP_HOOKS+=("_lv_pid_alive '$LV_DIR/virtlogd.pid' && vsw_kill_pid \$(cat '$LV_DIR/virtlogd.pid') 5")
    fi
    if _lv_listening /run/libvirt/libvirt-sock || _lv_listening /run/libvirt/virtqemud-sock; then
        # Two daemons would share /run/libvirt/qemu: use the running one.
        e2e_msg "a libvirt daemon already runs: using qemu:///system"
        LV_URI="qemu:///system"
    else
        cat >"$LV_DIR/libvirtd.conf" <<EOF
unix_sock_dir = "$LV_DIR"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
EOF
        libvirtd -d --config "$LV_DIR/libvirtd.conf" -p "$LV_DIR/libvirtd.pid" || e2e_fail "libvirtd did not start"
        E2E_CLEANUP_HOOKS+=("_lv_cleanup")
        LV_URI="qemu:///system?socket=$LV_DIR/libvirt-sock"
    fi
    local deadline=$((SECONDS + 30))
    until virsh_lv version >/dev/null 2>&1; do
        ((SECONDS < deadline)) || e2e_fail "libvirtd does not answer on $LV_URI"
        sleep 0.5
    done
    e2e_msg "libvirtd answers on $LV_URI ($(virsh_lv version | grep -E 'library|hypervisor' | tr -s ' ' | tr '\n' ';'))"
}

LV_DOMAINS=()

_lv_cleanup() {
    local d
    for d in "${LV_DOMAINS[@]}"; do lv_destroy "$d" >/dev/null 2>&1; done
    _lv_pid_alive "$LV_DIR/libvirtd.pid" && vsw_kill_pid "$(cat "$LV_DIR/libvirtd.pid")" 10
}

# lv_domain_xml NAME MAC SOCK MODE APPEND LOG: Configs/libvirt-guest.xml with this guest's
# name, MAC, kernel, initrd, command line, socket, mode and serial file put in (so the test
# keeps the example true); in server mode without <reconnect> (libvirt 9.0 refuses it there).
# Fails if the example lost what docs/libvirt.md says it has.
lv_domain_xml() {
    python3 - "$VSWITCH_REPO/Configs/libvirt-guest.xml" "$(lv_domain "$1")" "$2" "$3" "$4" "$5" "$6" "$LV_DIR" <<'PY'
import sys, xml.etree.ElementTree as ET
src, name, mac, sock, mode, append, log, lvdir = sys.argv[1:]
Q = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", Q)
d = ET.parse(src).getroot()
def one(path):
    e = d.find(path)
    if e is None: sys.exit(f"Configs/libvirt-guest.xml: no {path}")
    return e
iface = one("devices/interface[@type='vhostuser']")
source = iface.find("source")
want = [d.get("type") == "qemu", one("memoryBacking/source").get("type") == "memfd",
        one("memoryBacking/access").get("mode") == "shared", source.get("mode") == "client",
        source.find("reconnect") is not None and source.find("reconnect").get("timeout") == "1",
        any(a.get("value") == "virtio-net-pci.vectors=0" for a in d.iter(f"{{{Q}}}arg"))]
if not all(want): sys.exit(f"Configs/libvirt-guest.xml lost type qemu/memfd/shared/client/reconnect/vectors=0: {want}")
one("name").text = name
one("os/kernel").text = f"{lvdir}/vmlinuz"
one("os/initrd").text = f"{lvdir}/initrd"
one("os/cmdline").text = append
iface.find("mac").set("address", mac)
source.set("path", sock)
source.set("mode", mode)
if mode == "server": source.remove(source.find("reconnect"))
one("devices/serial[@type='file']/source").set("path", log)
sys.stdout.write(ET.tostring(d, encoding="unicode") + "\n")
PY
}

# lv_guest NAME MAC SOCK MODE IP CMD: like e2e_boot, through libvirt. The kernel command
# line is the one Tools/lib/guest.sh gives QEMU; the serial log is read the same way.
lv_guest() {
    local name=$1 mac=$2 sock=$3 mode=$4 ip=$5 cmd=$6 log n=1 append args=() i
    log="$E2E_LOG_DIR/$name.serial.log"
    while [[ -e $log ]]; do n=$((n + 1)); log="$E2E_LOG_DIR/$name-$n.serial.log"; done
    mapfile -t args < <(guest_qemu_args "$name" "$mac" "$sock" server "$ip" "$cmd" "$log")
    for ((i = 0; i < ${#args[@]}; i++)); do [[ ${args[i]} == -append ]] && append=${args[i + 1]}; done
    # QEMU (libvirt-qemu) writes the serial log: give it a file in a directory it can reach.
    local serial="$LV_DIR/$name-$n.serial"
    : >"$serial"
    chown libvirt-qemu "$serial"
    lv_domain_xml "$name" "$mac" "$sock" "$mode" "$append" "$serial" >"$LV_DIR/$name.xml" ||
        e2e_fail "no domain XML from Configs/libvirt-guest.xml for $name"
    cp "$LV_DIR/$name.xml" "$E2E_LOG_DIR/$name-$n.domain.xml"
    virsh_lv define "$LV_DIR/$name.xml" >/dev/null || e2e_fail "virsh define $(lv_domain "$name") failed"
    LV_DOMAINS+=("$name")
    # The serial log is linked into the log dir so that the runner dumps it on failure.
    ln -sf "$serial" "$log"
    GUEST_LOG[$name]=$log
    # A QEMU that connects (mode='client') and is refused waits: virsh start does not
    # return. Start in the background; the test decides what it expects.
    (timeout 120 virsh -q -c "$LV_URI" start "$(lv_domain "$name")" >"$LV_DIR/$name.start.log" 2>&1) &
    E2E_PIDS+=("$!")
    e2e_msg "domain $name starting ($mode mode, socket $sock, serial $(basename "$log"))"
}

# lv_guest_pid NAME: QEMU's pid once libvirt has started it.
lv_guest_pid() { cat "/run/libvirt/qemu/$(lv_domain "$1").pid" 2>/dev/null; }

# lv_qemu_log NAME: libvirt's log of the domain's QEMU (kept across runs: read from an offset).
lv_qemu_log() { echo "/var/log/libvirt/qemu/$(lv_domain "$1").log"; }

# lv_wait_up NAME [TIMEOUT]: like e2e_wait_up, with QEMU's pid from libvirt.
lv_wait_up() {
    local name=$1 timeout=${2:-180} deadline
    deadline=$((SECONDS + timeout))
    until [[ -n $(lv_guest_pid "$name") ]]; do
        ((SECONDS < deadline)) || e2e_fail "libvirt did not start $name: $(cat "$LV_DIR/$name.start.log")"
        sleep 0.5
    done
    GUEST_PID[$name]=$(lv_guest_pid "$name")
    e2e_wait_up "$name" "$timeout"
    e2e_msg "QEMU of $name runs as $(ps -o user= -p "${GUEST_PID[$name]}")"
}

lv_destroy() {
    virsh_lv destroy "$(lv_domain "$1")" >/dev/null 2>&1 || true
    virsh_lv undefine "$(lv_domain "$1")" >/dev/null 2>&1 || true
    unset "GUEST_PID[$1]"
}
