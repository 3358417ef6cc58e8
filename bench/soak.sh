#!/usr/bin/env bash
# hushd soak: a steady query rate for a long time while the block list is edited every second.
# Reports queries lost (dnsperf), answers with the wrong rcode, reloads done, how long each edit
# took to be enforced, and hushd's RSS over the run. Exits 1 if hushd never became ready, died,
# answered any query with the wrong rcode, or did not enforce an edit. Loopback only; bounded by
# SOAK_SECS. Uses the same NSD upstream as bench/run.sh.
#
# usage: SOAK_SECS=600 SOAK_QPS=2000 bench/soak.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
: "${SOAK_SECS:=600}" "${SOAK_QPS:=2000}" "${RUN:=/tmp/hushd-soak}" "${BENCH_NET:=127.0.54}"
: "${HUSHD_BIN:=$REPO/target/release/hushd}"
UPSTREAM_ADDR=$BENCH_NET.1 UPSTREAM_PORT=5300 ADDR=$BENCH_NET.4 PORT=5353
PY=${PY:-python3}
rm -rf "$RUN"; mkdir -p "$RUN/upstream" "$RUN/hushd/blocklists"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
            [[ -s $RUN/upstream/nsd.pid ]] && kill "$(cat "$RUN/upstream/nsd.pid")" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# upstream: NSD, one wildcard zone
cat > "$RUN/upstream/soak.test.zone" <<Z
\$ORIGIN soak.test.
\$TTL 60
@    SOA  ns admin 1 3600 600 86400 60
@    NS   ns
ns   A    $UPSTREAM_ADDR
*    A    192.0.2.1
*    AAAA 2001:db8::1
Z
cat > "$RUN/upstream/nsd.conf" <<C
server:
  ip-address: $UPSTREAM_ADDR@$UPSTREAM_PORT
  port: $UPSTREAM_PORT
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "$RUN/upstream"
  database: ""
  zonelistfile: "$RUN/upstream/zone.list"
  xfrdfile: "$RUN/upstream/xfrd.state"
  xfrdir: "$RUN/upstream"
  pidfile: "$RUN/upstream/nsd.pid"
  logfile: "$RUN/upstream/nsd.log"
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: soak.test
  zonefile: soak.test.zone
C
nsd -c "$RUN/upstream/nsd.conf" || true
for _ in $(seq 100); do [[ -s $RUN/upstream/nsd.pid ]] && break; sleep 0.05; done
if [[ ! -s $RUN/upstream/nsd.pid ]]; then
  echo "soak: FAILED: the NSD upstream did not start on $UPSTREAM_ADDR:$UPSTREAM_PORT (address taken? set BENCH_NET); its log:" >&2
  tail -n 5 "$RUN/upstream/nsd.log" >&2
  exit 1
fi

# hushd with a 1000-name list; queries: 2000 names (a short TTL keeps some forwarding going),
# a quarter of them blocked
"$PY" - "$RUN" <<'P'
import sys, random
run = sys.argv[1]
random.seed(1)
with open(f"{run}/hushd/blocklists/soak.txt", "w") as f:
    f.writelines(f"blocked{i}.soak.test\n" for i in range(1000))
expect = {}
with open(f"{run}/queries.txt", "w") as f:
    for _ in range(100000):
        blocked = random.random() < 0.25
        name = f"blocked{random.randrange(1000)}" if blocked else f"host{random.randrange(2000)}"
        expect[f"{name}.soak.test"] = "NXDOMAIN" if blocked else "NOERROR"
        f.write(f"{name}.soak.test {'AAAA' if random.random() < 0.2 else 'A'}\n")
with open(f"{run}/queries.expect", "w") as f:  # for rcodes.py
    f.writelines(f"{name} {rcode}\n" for name, rcode in expect.items())
P
printf 'action = "block"\ndomains_file = "soak.txt"\n' > "$RUN/hushd/blocklists/soak.toml"
cat > "$RUN/hushd/hushd.toml" <<C
[server]
listen = ["$ADDR:$PORT"]
allow_clients = ["127.0.0.0/8"]
[upstream]
servers = ["$UPSTREAM_ADDR:$UPSTREAM_PORT"]
[metrics]
listen = "$ADDR:9153"
C
"$HUSHD_BIN" --config "$RUN/hushd/hushd.toml" 2> "$RUN/hushd.log" & pids+=($!)
HUSHD=$!
for _ in $(seq 200); do grep -q "hushd ready" "$RUN/hushd.log" && break; kill -0 "$HUSHD" 2>/dev/null || break; sleep 0.05; done
if ! grep -q "hushd ready" "$RUN/hushd.log"; then
  echo "soak: FAILED: hushd did not become ready within 10 s; its log:" >&2
  tail -n 20 "$RUN/hushd.log" >&2
  exit 1
fi

rss() { awk '$1 == "VmRSS:" {print $2}' "/proc/$HUSHD/status"; }
echo "soak: ${SOAK_SECS}s at ${SOAK_QPS} q/s, a list edit every second"
# -v: every answer's rcode, checked against its name by rcodes.py
dnsperf -s "$ADDR" -p "$PORT" -d "$RUN/queries.txt" -Q "$SOAK_QPS" -l "$SOAK_SECS" -c 4 -t 2 -v \
  > "$RUN/dnsperf.txt" 2>&1 & pids+=($!)
PERF=$!
# RSS is tracked from 10 s in, once the cache and the runtime have warmed up
# and separately over the second half, to tell warm-up from growth.
rss_first=$(rss); rss_min=; rss_max=; half_min=; half_max=; edits=0 unenforced=0 edit_max=0
start=$(date +%s)
while kill -0 "$PERF" 2>/dev/null && (( $(date +%s) - start < SOAK_SECS + 30 )); do
  sleep 1
  # an edit as an editor saves it: a new file renamed over the old one
  { cat "$RUN/hushd/blocklists/soak.txt"; echo "edit$edits.soak.test"; } > "$RUN/hushd/blocklists/.soak.new"
  t0=$EPOCHREALTIME
  mv -f "$RUN/hushd/blocklists/.soak.new" "$RUN/hushd/blocklists/soak.txt"
  # the edit must take effect: its new name answers NXDOMAIN within 5 s
  if t1=$(timeout 10 "$PY" "$HERE/probe.py" "$ADDR" "$PORT" 5 "edit$edits.soak.test" NXDOMAIN 2>/dev/null | tail -n 1) \
     && [[ $t1 =~ ^[0-9.]+$ ]]; then
    edit_max=$(echo "t = $t1 - $t0; if (t > $edit_max) t else $edit_max" | bc)
  else
    unenforced=$((unenforced + 1))
    echo "  edit $edits (edit$edits.soak.test) was not enforced within 5 s" >&2
  fi
  edits=$((edits + 1))
  r=$(rss)
  if (( edits >= 10 )); then
    [[ -z $rss_min ]] && rss_min=$r rss_max=$r
    (( r < rss_min )) && rss_min=$r; (( r > rss_max )) && rss_max=$r
  fi
  if (( edits >= SOAK_SECS / 2 )); then
    [[ -z $half_min ]] && half_min=$r half_max=$r
    (( r < half_min )) && half_min=$r; (( r > half_max )) && half_max=$r
  fi
  (( edits % 60 == 0 )) && echo "  ${edits}s: RSS ${r} kB"
done
wait "$PERF" || true
sleep 1
reloads=$(grep -c "policy reloaded" "$RUN/hushd.log" || true)
rejected=$(grep -c "reload rejected" "$RUN/hushd.log" || true)
grep -E "Queries (sent|completed|lost)|Average Latency" "$RUN/dnsperf.txt"
read -r ok wrong < <("$PY" "$HERE/rcodes.py" "$RUN/queries.expect" "$RUN/dnsperf.txt")
echo "answers with the expected rcode: $ok, with another: $wrong"
echo "edits: $edits, reloads: $reloads, rejected: $rejected, not enforced within 5 s: $unenforced, slowest edit to enforcement: ${edit_max}s"
echo "RSS kB: at start $rss_first; from 10 s on: min ${rss_min:-NA}, max ${rss_max:-NA}; second half: min ${half_min:-NA}, max ${half_max:-NA}; last $(rss)"
failed=0
kill -0 "$HUSHD" 2>/dev/null || { echo "soak: FAILED: hushd died (see $RUN/hushd.log)" >&2; failed=1; }
[[ $ok =~ ^[0-9]+$ && $ok -gt 0 ]] || { echo "soak: FAILED: no answer with the expected rcode" >&2; failed=1; }
[[ $wrong == 0 ]] || { echo "soak: FAILED: $wrong answers with the wrong rcode" >&2; failed=1; }
(( unenforced == 0 )) || { echo "soak: FAILED: $unenforced edits were not enforced" >&2; failed=1; }
exit "$failed"
