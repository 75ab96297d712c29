#!/usr/bin/env bash
# vswitchd --metrics: while two guests ping, curl scrapes /metrics; the rx/tx counters grow and
# equal `vswitch port stats`; the MAC learned count goes from 0 to at least 2 (none aged) and
# equals `fdb show`'s; promtool check metrics accepts the text (Debian's prometheus);
# 404/405/400 for other requests, a half-sent request does not hold up a scrape; a bad
# --metrics value or a taken port stops vswitchd with a clear error.
source "$(dirname "$0")/lib.sh"

e2e_require_binaries
e2e_require_guest
e2e_require_tool curl curl
PORT=$((19100 + $$ % 800))
ADDR=127.0.0.1:$PORT
URL=http://$ADDR/metrics
vswitchd_start --metrics "$ADDR"

scrape() { curl -sf --max-time 5 "$URL" >"$E2E_LOG_DIR/$1.prom" || e2e_fail "scrape $1 failed"; }
# value SCRAPE NAME LABELS: the sample's value (integer part), or empty.
value() { grep -F "$2{$3} " "$E2E_LOG_DIR/$1.prom" | awk '{ sub(/\.0$/, "", $2); print $2 }'; }
stat() { vsw port stats br0 "$1" --format json | python3 -c "import json,sys; print(json.load(sys.stdin)['stats'][0]['$2'])"; }

vsw_ok add-br br0 >/dev/null
vsw_ok add-port br0 vm1 --type vhostuserclient --path "$E2E_TMP/vm1.sock" >/dev/null
vsw_ok add-port br0 vm2 --type vhostuserclient --path "$E2E_TMP/vm2.sock" >/dev/null
scrape before
[[ $(value before vswitch_bridge_mac_learned_total 'bridge="br0"') == 0 ]] || e2e_fail "MAC learns before any guest ran"
GUEST_WAIT_PEER=10.0.0.1 e2e_boot vm2 52:54:00:00:00:02 "$E2E_TMP/vm2.sock" server 10.0.0.2/24 "ping -c 12 10.0.0.1"
GUEST_WAIT_PEER=10.0.0.2 e2e_boot vm1 52:54:00:00:00:01 "$E2E_TMP/vm1.sock" server 10.0.0.1/24 "ping -c 12 10.0.0.2"
e2e_wait_up vm1
e2e_wait_up vm2
scrape early
sleep 4
scrape middle
for p in vm1 vm2; do
    for c in rx_packets tx_packets rx_bytes tx_bytes; do
        a=$(value early vswitch_port_${c}_total "bridge=\"br0\",port=\"$p\"")
        b=$(value middle vswitch_port_${c}_total "bridge=\"br0\",port=\"$p\"")
        [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] || e2e_fail "$p $c: no sample ($a, $b)"
        ((b > a)) || e2e_fail "$p $c did not grow while pinging: $a -> $b"
        e2e_msg "ok      $p $c: $a -> $b"
    done
done
e2e_ping_check vm1 1
e2e_ping_check vm2 1

# Guests (nearly) idle now; an ARP refresh may still pass, so each `port stats` value must lie
# between a scrape before and a scrape after it (the counters only grow).
sleep 1
scrape idle
declare -A STATS=()
for p in vm1 vm2; do
    for c in rxPackets txPackets rxBytes txBytes txDropNoBuffers; do STATS[$p.$c]=$(stat "$p" "$c"); done
done
scrape after
for p in vm1 vm2; do
    for c in rxPackets txPackets rxBytes txBytes txDropNoBuffers; do
        s=${STATS[$p.$c]}
        case $c in
            txDropNoBuffers) n=vswitch_port_tx_dropped_packets_total l="bridge=\"br0\",port=\"$p\",reason=\"no_buffers\"" ;;
            *) n="vswitch_port_$(sed 's/\([A-Z]\)/_\L\1/g' <<<"$c")_total" l="bridge=\"br0\",port=\"$p\"" ;;
        esac
        a=$(value idle "$n" "$l") b=$(value after "$n" "$l")
        [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] || e2e_fail "$p $c: no sample ($a, $b)"
        ((a <= s && s <= b)) || e2e_fail "$p $c: port stats $s is not between the scrapes before ($a) and after ($b)"
    done
    [[ $(value idle vswitch_port_link_up "bridge=\"br0\",port=\"$p\",type=\"vhostuserclient\"") == 1 ]] ||
        e2e_fail "$p: vswitch_port_link_up is not 1"
done
e2e_msg "ok      port stats of vm1 and vm2 lie between the scrapes around them (equal when idle)"
grep -q '^vswitch_bridge_mac_entries{bridge="br0"} 2' "$E2E_LOG_DIR/idle.prom" || e2e_fail "MAC entries are not 2"
# Both guests' addresses were learned (at least 2: a guest that reconnected is learned again),
# none aged (aging is 300 s); fdb show reports the same counts as the scrape after it.
learned=$(value idle vswitch_bridge_mac_learned_total 'bridge="br0"')
aged=$(value idle vswitch_bridge_mac_aged_total 'bridge="br0"')
[[ $learned =~ ^[0-9]+$ ]] && ((learned >= 2)) && [[ $aged == 0 ]] || e2e_fail "MAC learned/aged: $learned/$aged, want >= 2/0"
fdbc=$(vsw fdb show br0 --format json | python3 -c "import json,sys; c=json.load(sys.stdin)['fdb']['counts']; print(c['learned'], c['aged'])")
[[ $fdbc == "$(value after vswitch_bridge_mac_learned_total 'bridge="br0"') 0" ]] || e2e_fail "fdb show counts: $fdbc"
e2e_msg "ok      MAC learned 0 -> $learned while pinging, aged 0; fdb show agrees"
grep -q '^vswitch_forwarding_frames_total{thread="vswitch-fwd"} [1-9]' "$E2E_LOG_DIR/idle.prom" || e2e_fail "no forwarding frames"
grep -E '^vswitch_port_(rx|tx)_(packets|bytes)_total\{bridge="br0",port="vm1"\}' "$E2E_LOG_DIR/idle.prom" | sort

if vsw_have promtool; then
    promtool check metrics <"$E2E_LOG_DIR/idle.prom" >"$E2E_LOG_DIR/promtool.txt" 2>&1 ||
        e2e_fail "promtool check metrics: $(head -c 600 "$E2E_LOG_DIR/promtool.txt")"
    e2e_msg "ok      promtool check metrics"
    # Configs/grafana-vswitch.json: every query parses (as recording rules), and names only series we serve.
    python3 - "$VSWITCH_REPO/Configs/grafana-vswitch.json" "$E2E_LOG_DIR/idle.prom" >"$E2E_LOG_DIR/dashboard-rules.yml" <<'PY' ||
import json, re, sys
d = json.load(open(sys.argv[1])); served = open(sys.argv[2]).read()
exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
print("groups:\n- name: dashboard\n  rules:")
for i, e in enumerate(exprs):
    for name in re.findall(r"vswitch_[a-z_]+", e):
        if "\n" + name not in "\n" + served: sys.exit(f"dashboard names {name}, not in /metrics")
    e = e.replace("$__rate_interval", "1m").replace("$bridge", ".*").replace("$port", ".*")
    print(f"  - record: dashboard:q{i}\n    expr: {json.dumps(e)}")
PY
        e2e_fail "Configs/grafana-vswitch.json: $(tail -1 "$E2E_LOG_DIR/dashboard-rules.yml")"
    promtool check rules "$E2E_LOG_DIR/dashboard-rules.yml" >>"$E2E_LOG_DIR/promtool.txt" 2>&1 ||
        e2e_fail "a dashboard query does not parse: $(tail -3 "$E2E_LOG_DIR/promtool.txt")"
    e2e_msg "ok      Configs/grafana-vswitch.json: its queries parse and name served metrics"
elif [[ ${CI:-} == true ]]; then
    e2e_fail "required tool missing: promtool (install prometheus)"
else
    e2e_msg "promtool missing (install prometheus): not checked"
fi

# Other requests, and a client that never finishes its request.
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }
[[ $(code "http://$ADDR/") == 404 ]] || e2e_fail "GET / is not 404"
[[ $(code -X POST "$URL") == 405 ]] || e2e_fail "POST /metrics is not 405"
r=$(python3 - "$PORT" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
bad = socket.create_connection(("127.0.0.1", port)); bad.sendall(b"BLAH\r\n\r\n")
first = bad.recv(64).split(b"\r\n")[0].decode()
slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
for s in slow: s.sendall(b"GET /metr")
t = time.time()
c = socket.create_connection(("127.0.0.1", port)); c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
data = b""
while chunk := c.recv(65536): data += chunk
print(first, "|", data.split(b"\r\n")[0].decode(), "|", round(time.time() - t, 3))
PY
)
e2e_msg "malformed request, then a scrape beside 4 stalled clients: $r"
[[ $r == "HTTP/1.1 400 Bad Request | HTTP/1.1 200 OK |"* ]] || e2e_fail "unexpected answers: $r"
vsw_ok show >/dev/null

# Bad values: an argument error naming the value; a taken port: exit 1 naming the address.
out=$("$VSWITCHD_BIN" --control "$E2E_TMP/x.sock" --run-dir "$E2E_TMP/x" --no-persist --metrics localhost:9101 2>&1) && e2e_fail "--metrics localhost:9101 accepted"
grep -q "not a numeric IPv4 address" <<<"$out" || e2e_fail "--metrics localhost:9101: $out"
out=$("$VSWITCHD_BIN" --control "$E2E_TMP/y.sock" --run-dir "$E2E_TMP/y" --no-persist --metrics "$ADDR" 2>&1) && e2e_fail "a second vswitchd bound $ADDR"
grep -q "cannot listen on $ADDR" <<<"$out" || e2e_fail "taken port: $out"
e2e_msg "ok      bad --metrics values refused"
e2e_pass
