#!/usr/bin/env bash
# The Debian package (Tools/package): lintian, dpkg -i / -r / -P on this machine, the unit under
# systemd-analyze verify, and the installed binaries in a fresh Debian 12 root without Swift.
#   VSWITCH_DEB=FILE   test this .deb instead of building one (Tools/test builds it first)
source "$(dirname "$0")/lib.sh"

e2e_require_root
for t in dpkg-deb:dpkg lintian:lintian debootstrap:debootstrap systemd-analyze:systemd readelf:binutils curl:curl; do
    e2e_require_tool "${t%%:*}" "${t#*:}"
done

DEB=${VSWITCH_DEB:-}
if [[ -z $DEB ]]; then
    e2e_msg "Tools/package (log package-build.log)"
    DEB=$("$VSWITCH_REPO/Tools/package" 2>"$E2E_LOG_DIR/package-build.log" | tail -n1) ||
        e2e_fail "Tools/package failed; see package-build.log"
fi
[[ -f $DEB ]] || e2e_fail "no package at '$DEB'"
e2e_msg "package $DEB ($(du -h "$DEB" | cut -f1), installed $(dpkg-deb -f "$DEB" Installed-Size) KiB)"
e2e_msg "Depends: $(dpkg-deb -f "$DEB" Depends)"

# lintian: no errors; the warnings are listed.
lintian "$DEB" >"$E2E_LOG_DIR/lintian.txt" 2>&1 || true
grep -v 'running with root privileges' "$E2E_LOG_DIR/lintian.txt" | sed 's/^/    lintian: /' || true
if grep -q '^E: ' "$E2E_LOG_DIR/lintian.txt"; then e2e_fail "lintian errors: $(grep '^E: ' "$E2E_LOG_DIR/lintian.txt" | head -5 | tr '\n' ' ')"; fi
e2e_msg "ok      lintian: no errors, $(grep -c '^W: ' "$E2E_LOG_DIR/lintian.txt" || true) warnings"

# ---- dpkg on this machine ---------------------------------------------------------------
if dpkg-query -W vswitch >/dev/null 2>&1; then e2e_fail "a vswitch package is installed already; dpkg -P vswitch first"; fi
E2E_CLEANUP_HOOKS+=("dpkg -P vswitch >/dev/null 2>&1")
dpkg -i "$DEB" >"$E2E_LOG_DIR/dpkg-i.txt" 2>&1 || e2e_fail "dpkg -i: $(tail -3 "$E2E_LOG_DIR/dpkg-i.txt")"
FILES=(/usr/sbin/vswitchd /usr/bin/vswitch /lib/systemd/system/vswitchd.service /etc/default/vswitchd
    /usr/share/bash-completion/completions/vswitch /usr/share/zsh/vendor-completions/_vswitch
    /usr/share/fish/vendor_completions.d/vswitch.fish /usr/share/man/man8/vswitchd.8.gz
    /usr/share/man/man1/vswitch.1.gz /usr/share/man/man1/vswitch.add-port.1.gz /usr/share/doc/vswitch/copyright)
for f in "${FILES[@]}"; do [[ -e $f ]] || e2e_fail "dpkg -i: $f is missing"; done
[[ -d /etc/vswitch ]] || e2e_fail "no /etc/vswitch"
getent group vswitch >/dev/null || e2e_fail "postinst did not create group vswitch"
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/vswitchd.service)
[[ -x ${exec_start%% *} ]] || e2e_fail "the unit's ExecStart ${exec_start%% *} is not installed"
for opt in --config --run-dir --control-group; do
    /usr/sbin/vswitchd --help | grep -q -- "$opt" || e2e_fail "vswitchd has no $opt (the unit uses it)"
done
if ldd /usr/sbin/vswitchd | grep -Ei 'swift|libFoundation|libdispatch'; then e2e_fail "vswitchd needs a Swift library"; fi
systemd-analyze verify /lib/systemd/system/vswitchd.service >"$E2E_LOG_DIR/verify.txt" 2>&1 ||
    e2e_fail "systemd-analyze verify: $(head -5 "$E2E_LOG_DIR/verify.txt" | tr '\n' ' ')"
e2e_msg "ok      dpkg -i: $(dpkg -L vswitch | grep -c -v '/$') paths, group vswitch, systemd-analyze verify accepts the unit"
dpkg -L vswitch | while read -r f; do [[ -d $f ]] || echo "    $f"; done
bash -c 'source /usr/share/bash-completion/completions/vswitch && complete -p vswitch' >/dev/null ||
    e2e_fail "the bash completion does not load"

if [[ -d /run/systemd/system ]]; then
    echo '{"bridges":[{"addBridge":{"agingSeconds":300,"bridge":"br9","command":"add-br"},"addPorts":[]}],"version":1}' \
        >/etc/vswitch/vswitchd.json
    # restart: postinst has started it already, with the empty configuration.
    systemctl restart vswitchd || e2e_fail "systemctl restart vswitchd failed"
    vsw_wait_for 20 sh -c 'vswitch --control /run/vswitch/vswitchd.sock show | grep -q br9' ||
        e2e_fail "the service did not restore br9"
    systemctl stop vswitchd
    e2e_msg "ok      systemctl restart vswitchd brought back br9"
else
    e2e_msg "systemd is not PID 1 here: the service is not started (systemd-analyze verify only)"
fi

echo '{"bridges":[],"version":1}' >/etc/vswitch/vswitchd.json   # as the daemon would leave it
dpkg -r vswitch >"$E2E_LOG_DIR/dpkg-r.txt" 2>&1 || e2e_fail "dpkg -r: $(tail -3 "$E2E_LOG_DIR/dpkg-r.txt")"
for f in "${FILES[@]}"; do
    [[ $f == /etc/default/vswitchd || ! -e $f ]] || e2e_fail "dpkg -r left $f"
done
[[ -f /etc/default/vswitchd ]] || e2e_fail "dpkg -r removed the conffile /etc/default/vswitchd"
dpkg -P vswitch >"$E2E_LOG_DIR/dpkg-P.txt" 2>&1 || e2e_fail "dpkg -P: $(tail -3 "$E2E_LOG_DIR/dpkg-P.txt")"
for f in /etc/default/vswitchd /etc/vswitch /lib/systemd/system/vswitchd.service; do
    [[ ! -e $f ]] || e2e_fail "dpkg -P left $f"
done
e2e_msg "ok      dpkg -r kept only the conffile, dpkg -P removed it and /etc/vswitch"

# ---- a fresh Debian 12 root without Swift ----------------------------------------------------
CACHE_ROOT=$VSWITCH_CACHE/package-root/bookworm
if [[ ! -x $CACHE_ROOT/usr/bin/dpkg ]]; then
    e2e_msg "debootstrap --variant=minbase bookworm (cached in $CACHE_ROOT)"
    rm -rf "$CACHE_ROOT.tmp"
    mkdir -p "$(dirname "$CACHE_ROOT")"
    debootstrap --variant=minbase --include=libpcap0.8 bookworm "$CACHE_ROOT.tmp" http://deb.debian.org/debian \
        >"$E2E_LOG_DIR/debootstrap.log" 2>&1 || e2e_missing "a Debian 12 root" "debootstrap failed; see debootstrap.log"
    mv "$CACHE_ROOT.tmp" "$CACHE_ROOT"
fi
ROOT=$E2E_TMP/root
cp -a "$CACHE_ROOT" "$ROOT"
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
E2E_CLEANUP_HOOKS+=("umount -l '$ROOT/proc' '$ROOT/dev' 2>/dev/null")
[[ ! -e $ROOT/opt/swift ]] || e2e_fail "the root has /opt/swift"
cp "$DEB" "$ROOT/tmp/vswitch.deb"
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
in_root dpkg -i /tmp/vswitch.deb >"$E2E_LOG_DIR/chroot-dpkg.txt" 2>&1 || e2e_fail "dpkg -i in the root: $(tail -3 "$E2E_LOG_DIR/chroot-dpkg.txt")"
in_root sh -c 'ls /opt/swift 2>/dev/null; find / -xdev -name "libswiftCore*" 2>/dev/null' | grep -q . &&
    e2e_fail "the root has a Swift runtime"
in_root vswitchd --help >"$E2E_LOG_DIR/chroot-help.txt" 2>&1 || e2e_fail "vswitchd --help in the root: $(tail -3 "$E2E_LOG_DIR/chroot-help.txt")"
MPORT=$((19900 + $$ % 90))
start_in_root() {
    # chroot and env exec, so $! is vswitchd itself (a function in the background would be a subshell).
    chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/sbin/vswitchd --config /etc/vswitch/vswitchd.json --run-dir /run/vswitch --control-group vswitch \
        --metrics "127.0.0.1:$MPORT" >>"$E2E_LOG_DIR/chroot-vswitchd.log" 2>&1 &
    ROOT_PID=$!
    E2E_PIDS+=("$ROOT_PID")
    vsw_wait_for 20 test -S "$ROOT/run/vswitch/vswitchd.sock" || e2e_fail "vswitchd in the root did not start (chroot-vswitchd.log)"
}
start_in_root
in_root vswitch add-br br0 || e2e_fail "vswitch add-br in the root"
in_root vswitch show | tee "$E2E_LOG_DIR/chroot-show.txt" | grep -q br0 || e2e_fail "vswitch show in the root"
curl -sf --max-time 5 "http://127.0.0.1:$MPORT/metrics" | grep -q 'vswitch_bridge_mac_entries{bridge="br0"}' ||
    e2e_fail "no /metrics from the vswitchd in the root"
kill -TERM "$ROOT_PID"
rc=0
wait "$ROOT_PID" || rc=$?
((rc == 0)) || e2e_fail "vswitchd in the root exited $rc on SIGTERM"
grep -q '"br0"' "$ROOT/etc/vswitch/vswitchd.json" || e2e_fail "br0 not in the root's /etc/vswitch/vswitchd.json"
start_in_root
in_root vswitch show | grep -q br0 || e2e_fail "br0 not restored after a restart in the root"
kill -TERM "$ROOT_PID"
wait "$ROOT_PID" || true
e2e_msg "ok      in a Debian 12 root without Swift: dpkg -i, vswitchd --help, start, add-br, show, /metrics, SIGTERM (exit 0), restart restores br0"
in_root dpkg -P vswitch >/dev/null 2>&1 || e2e_fail "dpkg -P in the root"
e2e_pass
