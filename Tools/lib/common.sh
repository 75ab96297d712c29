# shellcheck shell=bash
# Common helpers for vswitch's scripts (sourced, never executed).
#
#   VSWITCH_REPO    repository root (set here)
#   VSWITCH_CACHE   cache directory (default $VSWITCH_REPO/.cache; never committed)
#
# Nothing here reads anything outside the repository.

if [[ -n "${_VSWITCH_COMMON_SH:-}" ]]; then return 0; fi
_VSWITCH_COMMON_SH=1

VSWITCH_REPO="${VSWITCH_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
VSWITCH_CACHE="${VSWITCH_CACHE:-$VSWITCH_REPO/.cache}"
export VSWITCH_REPO VSWITCH_CACHE

# Progress / diagnostics on stderr so that stdout stays parseable.
vsw_log()  { printf '==> %s\n' "$*" >&2; }
vsw_info() { printf '    %s\n' "$*" >&2; }
vsw_warn() { printf 'warning: %s\n' "$*" >&2; }
vsw_die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# vsw_have CMD: true when CMD is on PATH (or an executable path).
vsw_have() { command -v "$1" >/dev/null 2>&1; }

# vsw_pkg_installed PKG: true when the Debian package PKG is installed.
vsw_pkg_installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

_VSWITCH_APT_UPDATED=0
# vsw_apt_install PKG...: install the packages that are missing (apt-get update at most once per
# process, and only when something is missing, so that reruns are fast and work offline).
vsw_apt_install() {
    local missing=() p
    for p in "$@"; do
        vsw_pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        vsw_die "missing packages: ${missing[*]} (run as root, or: apt-get install ${missing[*]})"
    fi
    vsw_log "Installing Debian packages: ${missing[*]}"
    if [[ $_VSWITCH_APT_UPDATED -eq 0 ]]; then
        apt-get update -qq >&2 || vsw_warn "apt-get update failed"
        _VSWITCH_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# vsw_apt_update_once: for apt-cache look-ups that need package lists.
vsw_apt_update_once() {
    if [[ $_VSWITCH_APT_UPDATED -eq 0 ]]; then
        apt-get update -qq >&2 || vsw_warn "apt-get update failed"
        _VSWITCH_APT_UPDATED=1
    fi
}

# vsw_wait_for TIMEOUT_SECONDS CMD...: poll CMD every 0.2 s until it succeeds; 1 on timeout.
vsw_wait_for() {
    local timeout=$1; shift
    local deadline=$((SECONDS + timeout))
    while true; do
        if "$@"; then return 0; fi
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# vsw_wait_log FILE REGEX TIMEOUT [PID]: wait until FILE has a line matching the extended REGEX.
# When PID is given and that process dies first, give up at once (return 2).
vsw_wait_log() {
    local file=$1 re=$2 timeout=$3 pid=${4:-}
    local deadline=$((SECONDS + timeout))
    while true; do
        if [[ -f $file ]] && tr -d '\r' <"$file" | grep -Eq -- "$re"; then return 0; fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            # one last look: the line may have been written just before the exit
            if [[ -f $file ]] && tr -d '\r' <"$file" | grep -Eq -- "$re"; then return 0; fi
            return 2
        fi
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# vsw_kill_pid PID [GRACE_SECONDS]: TERM, wait up to GRACE, then KILL. Only the given pid.
vsw_kill_pid() {
    local pid=$1 grace=${2:-5} i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.1
    fi
    wait "$pid" 2>/dev/null || true
}

# vsw_hugepages_setup [PAGES]: mount hugetlbfs on /dev/hugepages and make sure at least PAGES
# 2 MiB pages exist (default 1024). Never lowers an existing larger setting.
vsw_hugepages_setup() {
    local want=${1:-1024} have
    mkdir -p /dev/hugepages
    mountpoint -q /dev/hugepages || mount -t hugetlbfs none /dev/hugepages
    have=$(cat /proc/sys/vm/nr_hugepages)
    if ((have < want)); then
        echo "$want" >/proc/sys/vm/nr_hugepages
        have=$(cat /proc/sys/vm/nr_hugepages)
    fi
    if ((have < want)); then
        vsw_warn "only $have of $want hugepages could be reserved"
        return 1
    fi
    return 0
}

# vsw_hugepages_free: number of free 2 MiB hugepages.
vsw_hugepages_free() { awk '/^HugePages_Free:/ {print $2}' /proc/meminfo; }

# vsw_ping_summary FILE: parse busybox/iputils ping output in FILE (CR stripped) and print
#   "tx=N rx=N loss=P min=X median=Y max=Z count=K"   (RTTs in ms, from the per-reply lines)
vsw_ping_summary() {
    tr -d '\r' <"$1" | awk '
        /packets transmitted/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^transmitted,?$/) tx = $(i-2)
                if ($(i) ~ /^received,?$/) rx = ($(i-1) == "packets") ? $(i-2) : $(i-1)
                if ($(i) ~ /%$/) { loss = $(i); sub(/%/, "", loss) }
            }
        }
        /bytes from .*time=/ {
            t = $0; sub(/.*time=/, "", t); sub(/[ ]*ms.*/, "", t); rtt[n++] = t + 0
        }
        END {
            if (tx == "") tx = "?"; if (rx == "") rx = "?"; if (loss == "") loss = "?"
            if (n == 0) { printf "tx=%s rx=%s loss=%s min=- median=- max=- count=0\n", tx, rx, loss; exit }
            # insertion sort (n is small)
            for (i = 1; i < n; i++) { v = rtt[i]; j = i - 1; while (j >= 0 && rtt[j] > v) { rtt[j+1] = rtt[j]; j-- } rtt[j+1] = v }
            if (n % 2) med = rtt[int(n/2)]; else med = (rtt[n/2 - 1] + rtt[n/2]) / 2
            printf "tx=%s rx=%s loss=%s min=%.3f median=%.3f max=%.3f count=%d\n", tx, rx, loss, rtt[0], med, rtt[n-1], n
        }'
}

# vsw_kv KEY "k=v k=v ...": print the value of KEY.
vsw_kv() {
    local key=$1 kv
    for kv in $2; do
        [[ ${kv%%=*} == "$key" ]] && { printf '%s\n' "${kv#*=}"; return 0; }
    done
    return 1
}
