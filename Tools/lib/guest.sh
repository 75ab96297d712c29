# shellcheck shell=bash
# Test guests for vswitch: a Debian cloud kernel + busybox initramfs, booted under QEMU TCG
# with a virtio-net device on a vhost-user socket. Sourced, never executed.
#
# Image (cached in $VSWITCH_CACHE/guest/, default $REPO/.cache/guest/):
#   guest_build_image         build or reuse vmlinuz + initramfs (sets GUEST_KERNEL, GUEST_INITRD)
#
# Guests:
#   guest_boot NAME MAC SOCKPATH MODE IP CMD LOGFILE
#       MODE   server  QEMU listens on SOCKPATH (server=on,wait=off): switch port type vhostuserclient
#              client  QEMU connects to SOCKPATH (reconnect=1):       switch port type vhostuser
#              user    no vhost-user: an isolated QEMU user-mode netdev (restrict=on), SOCKPATH ignored
#              none    no network device at all
#       IP     e.g. 10.0.0.1/24, or "" for none
#       CMD    shell command run in the guest after boot, or "" to stay idle (answering pings)
#       LOGFILE  serial console log; QEMU's own stderr goes to LOGFILE.qemu
#     Environment knobs (read at each call):
#       GUEST_MEM=memfd|hugepages   memory backend (default memfd; hugepages needs vsw_hugepages_setup)
#       GUEST_MEM_MB=256            guest RAM
#       GUEST_MEM_SLOTS="slots=16,maxmem=8G"  memory hotplug: appended to -m (DIMMs via GUEST_QEMU_EXTRA)
#       GUEST_AFTER=stay|poweroff   after CMD (default stay)
#       GUEST_WAIT_PEER=IP          before CMD, ping IP until it answers (GUEST_WAIT_SECS, default 90)
#       GUEST_MTU=1500, GUEST_LINK_WAIT=20, GUEST_DEBUG=0
#       GUEST_NETDEV_OPTS=",queues=2"  extra -netdev options; GUEST_DEVICE_OPTS=",mq=on" extra -device options
#       GUEST_SMP=1, GUEST_QEMU_EXTRA="..." extra QEMU arguments (word-split)
#     Records the pid in GUEST_PID[NAME] and $GUEST_RUN_DIR/NAME.pid; the log in GUEST_LOG[NAME].
#   guest_wait NAME REGEX TIMEOUT      wait for a serial line (returns 2 if QEMU died)
#   guest_wait_cmd NAME TIMEOUT        wait for GUEST-CMD-EXIT; prints the exit code
#   guest_cmd_output NAME              the command's output (between the markers)
#   guest_kill NAME [SIGNAL]           SIGNAL (default TERM, then KILL) to that guest's QEMU
#   guest_kill_all                     every guest started by this shell
#
# Nothing here reads /work/shared.

if [[ -n "${_VSWITCH_GUEST_SH:-}" ]]; then return 0; fi
_VSWITCH_GUEST_SH=1

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

GUEST_DIR="$VSWITCH_CACHE/guest"
GUEST_KERNEL="$GUEST_DIR/vmlinuz"
GUEST_INITRD="$GUEST_DIR/initramfs.cpio.gz"
GUEST_INIT_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/guest-init"
GUEST_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net)
GUEST_RUN_DIR="${GUEST_RUN_DIR:-}"
declare -gA GUEST_PID=()
declare -gA GUEST_LOG=()

guest_qemu_bin() { echo "${QEMU:-qemu-system-x86_64}"; }

# Packages the guest machinery needs on the host.
GUEST_HOST_PACKAGES=(qemu-system-x86 busybox-static cpio)

guest_install_packages() { vsw_apt_install "${GUEST_HOST_PACKAGES[@]}"; }

# Which versioned kernel package linux-image-cloud-amd64 points at (e.g. linux-image-6.1.0-56-cloud-amd64).
_guest_kernel_pkg() {
    if [[ -n "${VSWITCH_GUEST_KERNEL_PKG:-}" ]]; then echo "$VSWITCH_GUEST_KERNEL_PKG"; return 0; fi
    local pkg
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-cloud-amd64$/ {print $2; exit}')
    if [[ -z $pkg ]]; then
        vsw_apt_update_once
        pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-cloud-amd64$/ {print $2; exit}')
    fi
    [[ -n $pkg ]] || vsw_die "cannot resolve the dependency of linux-image-cloud-amd64 (apt-cache depends)"
    echo "$pkg"
}

# Download and unpack the kernel package into $GUEST_DIR/kernel (once).
_guest_fetch_kernel() {
    if [[ -s $GUEST_DIR/kernel/vmlinuz && -s $GUEST_DIR/kernel/release ]]; then return 0; fi
    local pkg tmp deb
    pkg=$(_guest_kernel_pkg)
    vsw_log "Fetching guest kernel: apt-get download $pkg"
    tmp=$(mktemp -d "$GUEST_DIR/.kernel.XXXXXX")
    (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) || {
        vsw_apt_update_once
        (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2)
    } || { rm -rf "$tmp"; vsw_die "apt-get download $pkg failed"; }
    deb=$(ls "$tmp"/*.deb)
    dpkg -x "$deb" "$tmp/x"
    local vmlinuz release
    vmlinuz=$(ls "$tmp"/x/boot/vmlinuz-* | head -n1)
    release=${vmlinuz##*/vmlinuz-}
    [[ -d $tmp/x/lib/modules/$release ]] || { rm -rf "$tmp"; vsw_die "no modules for $release in $deb"; }
    rm -rf "$GUEST_DIR/kernel.new"
    mkdir -p "$GUEST_DIR/kernel.new/modules"
    cp "$vmlinuz" "$GUEST_DIR/kernel.new/vmlinuz"
    cp "$tmp/x/boot/config-$release" "$GUEST_DIR/kernel.new/config" 2>/dev/null || true
    # keep only the modules the guest needs, decompressed
    local m f order=()
    for m in "${GUEST_MODULES[@]}"; do
        f=$(find "$tmp/x/lib/modules/$release" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" \) | head -n1)
        if [[ -z $f ]]; then
            vsw_info "module $m: not a module in $release (built in or absent)"
            continue
        fi
        case "$f" in
            *.ko) cp "$f" "$GUEST_DIR/kernel.new/modules/$m.ko" ;;
            *.ko.xz) xz -dc "$f" >"$GUEST_DIR/kernel.new/modules/$m.ko" 2>/dev/null ||
                busybox unxz -c "$f" >"$GUEST_DIR/kernel.new/modules/$m.ko" ;;
            *.ko.zst) zstd -dc "$f" >"$GUEST_DIR/kernel.new/modules/$m.ko" ;;
            *.ko.gz) gzip -dc "$f" >"$GUEST_DIR/kernel.new/modules/$m.ko" ;;
        esac
        order+=("$m")
    done
    printf '%s\n' "${order[@]}" >"$GUEST_DIR/kernel.new/modules/vsw-order"
    echo "$pkg" >"$GUEST_DIR/kernel.new/package"
    echo "$release" >"$GUEST_DIR/kernel.new/release"
    rm -rf "$tmp" "$GUEST_DIR/kernel"
    mv "$GUEST_DIR/kernel.new" "$GUEST_DIR/kernel"
    vsw_info "kernel $release, modules: ${order[*]}"
}

_guest_busybox() {
    local b
    for b in /bin/busybox /usr/bin/busybox; do
        # busybox-static puts a static binary at /bin/busybox
        if [[ -x $b ]] && file_is_static "$b"; then echo "$b"; return 0; fi
    done
    return 1
}

file_is_static() {
    # a dynamic x86-64 binary names its interpreter; avoids depending on `file`/readelf
    ! LC_ALL=C grep -q -a '/lib64/ld-linux-x86-64.so.2' "$1"
}

# guest_build_image: build (or reuse) the kernel and initramfs. Safe to call concurrently.
guest_build_image() {
    mkdir -p "$GUEST_DIR"
    (
        flock 9
        local bb stamp want
        bb=$(_guest_busybox) || vsw_die "no static busybox (apt-get install busybox-static)"
        vsw_have cpio || vsw_die "cpio missing (apt-get install cpio)"
        _guest_fetch_kernel
        want=$(cat "$GUEST_INIT_SRC" "$GUEST_DIR/kernel/release" "$GUEST_DIR/kernel/modules/vsw-order" \
            <(sha256sum "$bb") | sha256sum | cut -d' ' -f1)
        stamp=$(cat "$GUEST_DIR/initramfs.stamp" 2>/dev/null || true)
        if [[ $stamp == "$want" && -s $GUEST_DIR/initramfs.cpio.gz && -s $GUEST_DIR/vmlinuz ]]; then
            exit 0
        fi
        vsw_log "Building guest initramfs"
        local root
        root=$(mktemp -d "$GUEST_DIR/.root.XXXXXX")
        mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,lib/modules,usr/bin,usr/sbin}
        cp "$bb" "$root/bin/busybox"
        ln -s busybox "$root/bin/sh"
        cp "$GUEST_INIT_SRC" "$root/init"
        chmod 0755 "$root/init" "$root/bin/busybox"
        cp "$GUEST_DIR/kernel/modules/"*.ko "$root/lib/modules/" 2>/dev/null || true
        cp "$GUEST_DIR/kernel/modules/vsw-order" "$root/lib/modules/"
        echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
        echo "root:x:0:" >"$root/etc/group"
        (cd "$root" && find . -print0 | LC_ALL=C sort -z |
            cpio --null -o -H newc --owner=0:0 --quiet) | gzip -1 >"$GUEST_DIR/initramfs.cpio.gz.new"
        rm -rf "$root"
        cp "$GUEST_DIR/kernel/vmlinuz" "$GUEST_DIR/vmlinuz.new"
        mv "$GUEST_DIR/vmlinuz.new" "$GUEST_DIR/vmlinuz"
        mv "$GUEST_DIR/initramfs.cpio.gz.new" "$GUEST_DIR/initramfs.cpio.gz"
        echo "$want" >"$GUEST_DIR/initramfs.stamp"
        vsw_info "guest image: $GUEST_DIR/vmlinuz + $GUEST_DIR/initramfs.cpio.gz ($(du -h "$GUEST_DIR/initramfs.cpio.gz" | cut -f1))"
    ) 9>"$GUEST_DIR/.lock"
}

# sets GUEST_RUN_DIR (in the calling shell: do not call it in $(...))
_guest_run_dir() {
    if [[ -z $GUEST_RUN_DIR ]]; then
        GUEST_RUN_DIR=$(mktemp -d /tmp/vsw-guests.XXXXXX)
    fi
    mkdir -p "$GUEST_RUN_DIR"
}

# guest_qemu_args NAME MAC SOCKPATH MODE IP CMD LOGFILE: print the QEMU command line, one word per line.
guest_qemu_args() {
    local name=$1 mac=$2 sock=$3 mode=$4 ip=$5 cmd=$6 log=$7
    local mem_mb=${GUEST_MEM_MB:-256}
    local append="console=ttyS0 quiet loglevel=4 panic=-1 vsw.name=$name"
    [[ -n $ip ]] && append+=" vsw.ip=$ip"
    append+=" vsw.mtu=${GUEST_MTU:-1500} vsw.link=${GUEST_LINK_WAIT:-20} vsw.after=${GUEST_AFTER:-stay}"
    [[ -n ${GUEST_WAIT_PEER:-} ]] && append+=" vsw.wait=$GUEST_WAIT_PEER vsw.waitsec=${GUEST_WAIT_SECS:-90}"
    [[ ${GUEST_DEBUG:-0} == 1 ]] && append+=" vsw.debug=1"
    if [[ -n $cmd ]]; then
        append+=" vsw.cmd=$(printf '%s' "$cmd" | base64 -w0)"
    fi
    local args=(
        "$(guest_qemu_bin)" -name "$name" -accel tcg -machine pc -m "$mem_mb${GUEST_MEM_SLOTS:+,$GUEST_MEM_SLOTS}" -smp "${GUEST_SMP:-1}"
        -nographic -nodefaults -no-reboot -no-user-config
        -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" -append "$append"
        -serial "file:$log" -monitor none
    )
    case "${GUEST_MEM:-memfd}" in
        memfd) args+=(-object "memory-backend-memfd,id=mem,size=${mem_mb}M,share=on") ;;
        hugepages | hugepage | huge)
            if [[ -z ${GUEST_HUGEPAGE_DIR:-} ]] && ! mountpoint -q /dev/hugepages 2>/dev/null; then
                vsw_hugepages_setup 1024 >&2 || vsw_warn "hugepages not set up"
            fi
            args+=(-object "memory-backend-file,id=mem,size=${mem_mb}M,mem-path=${GUEST_HUGEPAGE_DIR:-/dev/hugepages},share=on") ;;
        *) vsw_die "GUEST_MEM must be memfd or hugepages, not ${GUEST_MEM}" ;;
    esac
    args+=(-numa "node,memdev=mem")
    local dev="virtio-net-pci,netdev=n0,mac=$mac,romfile=,vectors=0${GUEST_DEVICE_OPTS:-}"
    case "$mode" in
        server)
            args+=(-chardev "socket,id=c0,path=$sock,server=on,wait=off"
                -netdev "vhost-user,id=n0,chardev=c0${GUEST_NETDEV_OPTS:-}" -device "$dev") ;;
        client)
            args+=(-chardev "socket,id=c0,path=$sock,reconnect=1"
                -netdev "vhost-user,id=n0,chardev=c0${GUEST_NETDEV_OPTS:-}" -device "$dev") ;;
        user) args+=(-netdev "user,id=n0,restrict=on" -device "$dev") ;;
        none) ;;
        *) vsw_die "guest mode must be server, client, user or none, not '$mode'" ;;
    esac
    if [[ -n ${GUEST_QEMU_EXTRA:-} ]]; then
        local extra
        read -r -a extra <<<"$GUEST_QEMU_EXTRA"
        args+=("${extra[@]}")
    fi
    printf '%s\n' "${args[@]}"
}

guest_boot() {
    (($# == 7)) || vsw_die "usage: guest_boot NAME MAC SOCKPATH MODE(server|client|user|none) IP CMD LOGFILE"
    local name=$1 log=$7
    [[ -s $GUEST_KERNEL && -s $GUEST_INITRD ]] || guest_build_image
    _guest_run_dir
    local rd=$GUEST_RUN_DIR
    mkdir -p "$(dirname "$log")"
    : >"$log"
    local args=()
    mapfile -t args < <(guest_qemu_args "$@")
    ((${#args[@]} > 5)) || return 1
    printf '%q ' "${args[@]}" >"$log.cmdline"
    echo >>"$log.cmdline"
    "${args[@]}" </dev/null >"$log.qemu" 2>&1 &
    local pid=$!
    GUEST_PID[$name]=$pid
    GUEST_LOG[$name]=$log
    echo "$pid" >"$rd/$name.pid"
    vsw_info "guest $name: pid $pid, mode $4, ${GUEST_MEM:-memfd} memory, log $log"
}

guest_pid() { echo "${GUEST_PID[$1]:-}"; }
guest_alive() { local p=${GUEST_PID[$1]:-}; [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

# guest_wait NAME REGEX TIMEOUT
guest_wait() {
    vsw_wait_log "${GUEST_LOG[$1]}" "$2" "$3" "${GUEST_PID[$1]:-}"
}

# guest_wait_cmd NAME TIMEOUT: wait for GUEST-CMD-EXIT=rc and print rc; non-zero status on timeout/death.
guest_wait_cmd() {
    local rc=0
    guest_wait "$1" '^GUEST-CMD-EXIT=' "$2" || rc=$?
    ((rc == 0)) || return "$rc"
    tr -d '\r' <"${GUEST_LOG[$1]}" | sed -n 's/^GUEST-CMD-EXIT=\([0-9]*\).*/\1/p' | tail -n1
}

# guest_cmd_output NAME [LOGFILE]: the lines between GUEST-CMD-BEGIN and GUEST-CMD-EXIT.
guest_cmd_output() {
    local log=${2:-${GUEST_LOG[$1]}}
    tr -d '\r' <"$log" | awk '/^GUEST-CMD-BEGIN/ {on = 1; next} /^GUEST-CMD-EXIT=/ {on = 0} on'
}

# guest_kill NAME [SIGNAL]
guest_kill() {
    local name=$1 sig=${2:-} pid=${GUEST_PID[$1]:-}
    [[ -n $pid ]] || return 0
    if [[ -n $sig ]]; then
        kill "-$sig" "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
        wait "$pid" 2>/dev/null || true
    else
        vsw_kill_pid "$pid" 5
    fi
    unset "GUEST_PID[$name]"
    [[ -n $GUEST_RUN_DIR ]] && rm -f "$GUEST_RUN_DIR/$name.pid"
    return 0
}

guest_kill_all() {
    local n
    for n in "${!GUEST_PID[@]}"; do guest_kill "$n"; done
    # pid files left by subshells
    if [[ -n $GUEST_RUN_DIR && -d $GUEST_RUN_DIR ]]; then
        local f p
        for f in "$GUEST_RUN_DIR"/*.pid; do
            [[ -f $f ]] || continue
            p=$(cat "$f")
            # only kill it if it is still a QEMU process
            if [[ -n $p ]] && grep -q qemu "/proc/$p/comm" 2>/dev/null; then vsw_kill_pid "$p" 3; fi
            rm -f "$f"
        done
    fi
}

# guest_ping_check LOGFILE MAX_LOST: print the ping summary; succeed if at most MAX_LOST replies
# are missing and the command exited 0 or 1 (busybox ping exits 1 if any reply is missing).
guest_ping_summary() {
    local log=$1 tmp
    tmp=$(mktemp)
    guest_cmd_output "" "$log" >"$tmp"
    vsw_ping_summary "$tmp"
    rm -f "$tmp"
}
