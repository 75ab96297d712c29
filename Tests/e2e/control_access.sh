#!/usr/bin/env bash
# Who may use the control socket, and what the daemon does with bad input (no QEMU needed):
#   1. The control socket is 0600: user nobody cannot connect. With its mode loosened by
#      hand (chmod 666), nobody connects but gets "permission denied" from the SO_PEERCRED check.
#   2. --control-group G: the socket is 0660 and owned by G; a member of G may use it,
#      nobody (not in G) may not.
#   3. Malformed requests to the real daemon (bad JSON, wrong types, out-of-range values,
#      a NUL in a path, huge lines) each get an error line; the daemon lives on.
#   4. A vhost-user port on a path that is a regular file is refused; the file is kept.
#      A server port's socket is 0660.
#   5. A corrupt configuration file stops the daemon with one clear error and exit 1, and is
#      left as it was; --no-persist ignores the default file.
source "$(dirname "$0")/lib.sh"

e2e_require_binaries
e2e_require_root
e2e_require_tool setpriv util-linux
e2e_require_tool groupadd passwd

# A directory that user nobody can enter (E2E_TMP is 0700), with a copy of the CLI.
PUB=$(mktemp -d /tmp/vsw-acc.XXXXXX)
chmod 755 "$PUB"
E2E_CLEANUP_HOOKS+=("rm -rf '$PUB'")
cp "$VSWITCH_BIN" "$PUB/vswitch"
chmod 755 "$PUB/vswitch"
VSWITCH_SOCK="$PUB/ctl.sock"
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
"${NOBODY[@]}" "$PUB/vswitch" --help >/dev/null 2>&1 ||
    e2e_missing "a vswitch binary user nobody can run" "the Swift runtime libraries must be world-readable"

# as_nobody [setpriv options --] ARGS...: the CLI as uid 65534; stdout+stderr, exit status kept.
as_nobody() { "${NOBODY[@]}" "$PUB/vswitch" --control "$VSWITCH_SOCK" "$@" 2>&1; }

expect_refused() {  # DESCRIPTION REGEX COMMAND...
    local what=$1 re=$2 out rc=0
    shift 2
    out=$("$@" 2>&1) || rc=$?
    ((rc != 0)) || e2e_fail "$what: exit 0 ($out)"
    grep -Eq -- "$re" <<<"$out" || e2e_fail "$what: exit $rc, output does not match /$re/: $out"
    e2e_msg "ok  $what: exit $rc: $out"
}

# --- 1. owner-only socket, and the SO_PEERCRED check behind it
vswitchd_start
[[ $(stat -c '%a %U' "$VSWITCH_SOCK") == "600 root" ]] || e2e_fail "control socket: $(stat -c '%a %U:%G' "$VSWITCH_SOCK"), expected 600 root"
expect_refused "nobody, socket 0600" "Permission denied" as_nobody show
chmod 666 "$VSWITCH_SOCK"
expect_refused "nobody, socket chmod 666 by hand" "permission denied: uid 65534 may not use the vswitchd control socket" as_nobody add-br evil
vsw_ok show >/dev/null
[[ $(vsw show) == "no bridges" ]] || e2e_fail "a refused request changed something: $(vsw show)"

# --- 2. --control-group
GROUP="vswe2e$$"
groupadd "$GROUP" || e2e_fail "groupadd $GROUP failed"
E2E_CLEANUP_HOOKS+=("groupdel '$GROUP'")
GID=$(getent group "$GROUP" | cut -d: -f3)
kill -TERM "$VSWITCHD_PID"; wait "$VSWITCHD_PID" || true; VSWITCHD_PID=""
vswitchd_start --control-group "$GROUP"
[[ $(stat -c '%a %G' "$VSWITCH_SOCK") == "660 $GROUP" ]] || e2e_fail "control socket: $(stat -c '%a %U:%G' "$VSWITCH_SOCK"), expected 660 root:$GROUP"
out=$("${NOBODY[@]/--clear-groups/--groups=$GID}" "$PUB/vswitch" --control "$VSWITCH_SOCK" add-br grp 2>&1) ||
    e2e_fail "a member of $GROUP cannot use the socket: $out"
e2e_msg "ok  uid 65534 in group $GROUP: add-br works"
expect_refused "nobody, not in $GROUP" "Permission denied" as_nobody show
chmod 666 "$VSWITCH_SOCK"
expect_refused "nobody, not in $GROUP, socket 666" "allowed: root, members of group $GROUP" as_nobody show
vsw_ok del-br grp >/dev/null

# --- 3. malformed requests to the real daemon
vsw_ok add-br br0 >/dev/null
PY=$(command -v /usr/bin/python3 python3 | head -n1)
"$PY" - "$VSWITCH_SOCK" >"$E2E_TMP/malformed.out" 2>&1 <<'PYEOF' || e2e_fail "malformed requests: $(cat "$E2E_TMP/malformed.out")"
import json, socket, sys
path = sys.argv[1]
lines = [
    b"garbage", b"{", b"[]", b"null", b'"show"', b"{}", b'{"command":"explode"}', b'{"command":7}',
    b'{"command":"add-br","bridge":["br0"]}', b'{"command":"add-br","bridge":"br1","agingSeconds":-5}',
    b'{"command":"add-br","bridge":"br1","agingSeconds":1e30}', b'{"command":"add-br","bridge":"br1","agingSeconds":99999999999999999999}',
    b'{"command":"add-br","bridge":"' + b"x" * 100000 + b'"}', b'{"command":"add-br"}',
    b'{"command":"set-aging","bridge":"br0"}', b'{"command":"set-aging","bridge":"br0","agingSeconds":0}',
    b'{"command":"add-port","bridge":"br0","port":"p1","type":"vhostuser","path":"' + b"/tmp/" + b"y" * 300 + b'"}',
    b'{"command":"add-port","bridge":"br0","port":"p1","type":"vhostuser","path":"/tmp/a\\u0000b"}',
    b'{"command":"add-port","bridge":"br0","port":"p1","type":"vhostuser"}',
    b'{"command":"add-port","bridge":"br0","port":"../../etc","type":"vhostuser","path":"x.sock"}',
    b'{"command":"del-port","bridge":"br0","port":"nope"}', b'{"command":"fdb-show","bridge":"nope"}',
    b"\xff\xfe\x00\x80", b"[" * 100000,
]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(path)
f = s.makefile("rb")
bad = 0
for line in lines:
    s.sendall(line + b"\n")
    r = json.loads(f.readline())
    if r.get("ok") is not False or not r.get("error"):
        print("NOT REFUSED:", line[:80], r)
        bad += 1
    else:
        print("refused:", line[:60], "->", r["error"][:120])
s.sendall(b'{"command":"show"}\n')
r = json.loads(f.readline())
if not r.get("ok"):
    print("show after the bad lines failed:", r); bad += 1
# A line over the 1 MiB limit: an error, then the daemon closes this connection.
try:
    s.sendall(b"z" * (2 << 20) + b"\n")
except OSError:
    pass
r = json.loads(f.readline() or b"{}")
print("huge line ->", r)
if r.get("ok") is not False or "longer than" not in r.get("error", ""):
    bad += 1
sys.exit(1 if bad else 0)
PYEOF
e2e_msg "malformed requests: $(grep -c '^refused' "$E2E_TMP/malformed.out") refused with an error, huge line refused, daemon alive"
e2e_check_daemon
[[ $(show_ports | wc -l) == 0 ]] || e2e_fail "a malformed request added a port: $(show_ports | tr '\n' ';')"

# --- 4. non-socket paths are never replaced; server sockets are 0660
echo keep >"$E2E_TMP/file.sock"
expect_refused "port on a regular file" "exists and is not a socket" vsw add-port br0 p1 --type vhostuser --path "$E2E_TMP/file.sock"
[[ $(cat "$E2E_TMP/file.sock") == keep ]] || e2e_fail "the regular file was changed"
vsw_ok add-port br0 p2 --type vhostuser --path p2.sock >/dev/null
[[ $(stat -c %a "$E2E_TMP/run/p2.sock") == 660 ]] || e2e_fail "vhost-user socket mode $(stat -c %a "$E2E_TMP/run/p2.sock"), expected 660"
e2e_msg "ok  server port socket is 0660"

# --- 5. corrupt configuration file
CONFIG="$E2E_TMP/run/vswitchd.json"
grep -q '"p2"' "$CONFIG" || e2e_fail "port p2 not in $CONFIG"
kill -TERM "$VSWITCHD_PID"; wait "$VSWITCHD_PID" || true; VSWITCHD_PID=""
printf '{"version":1,"bridges":[{"addBridge":' >"$CONFIG"
cp "$CONFIG" "$E2E_TMP/corrupt.copy"
rc=0
timeout 20 "$VSWITCHD_BIN" --control "$VSWITCH_SOCK" --run-dir "$E2E_TMP/run" >"$E2E_TMP/corrupt.log" 2>&1 || rc=$?
((rc != 0 && rc != 124)) || e2e_fail "vswitchd with a corrupt configuration: exit $rc (expected an error exit)"
grep -q "configuration file $CONFIG: not a vswitchd configuration: not valid JSON" "$E2E_TMP/corrupt.log" ||
    e2e_fail "no clear error for the corrupt file: $(cat "$E2E_TMP/corrupt.log")"
cmp -s "$CONFIG" "$E2E_TMP/corrupt.copy" || e2e_fail "the corrupt configuration file was changed"
e2e_msg "ok  corrupt file: exit $rc: $(grep -o 'configuration file.*' "$E2E_TMP/corrupt.log")"
vswitchd_start --no-persist
vsw_ok add-br br9 >/dev/null
cmp -s "$CONFIG" "$E2E_TMP/corrupt.copy" || e2e_fail "--no-persist wrote the configuration file"
e2e_msg "ok  --no-persist neither reads nor writes $CONFIG"
e2e_pass
