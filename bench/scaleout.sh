#!/usr/bin/env bash
# hushd scale-out bench (issue 13, "More than one server"), run by hand.
#
# usage: bench/scaleout.sh [--runs N] [--modes none,drain,term,kill] [--run DIR]
#
# Two hushd (the release binary) on loopback, reading their lists from ONE shared folder, behind
# dnsdist (Debian's package) load-balancing them round robin with health checks every second.
# An authoritative NSD on loopback is their upstream. Per run and mode:
#   dnsperf sends a fixed rate (QPS, default 2000/s, well below what either instance alone
#   serves) to dnsdist for LOAD_SECS (30 s); STOP_AT (10) seconds plus a random part of a
#   check interval in, hushd "a" is stopped:
#     none   it is not: the loss the machine and the harness cause by themselves (a baseline)
#     drain  the planned way: dnsdist is told to take it out (console: getServer(0):setDown()),
#            then, DRAIN_SECS later, hushd gets SIGTERM
#     term   SIGTERM with no warning to dnsdist (a package upgrade, systemctl stop): hushd drains
#            for HUSHD_DRAIN seconds ([server] drain_secs, default 2 here; 0 stops at once),
#            answering every query but REFUSING its health_name, which dnsdist checks
#     kill   SIGKILL (a crash, the OOM killer)
#   Reported: queries sent and lost (dnsperf: no answer within 2 s), the loss in %, and for
#   term/kill the seconds from the signal until dnsdist marked the backend down (its API, polled
#   every 10 ms by ddwatch.py), beside checkInterval. Then "a" is started again and must be
#   marked up before the next step.
# Once per run, with both instances up and no load: a name is added to the shared list folder
# (a new file renamed over the old, as an editor saves) and each instance is polled directly
# (probe.py, every ~2 ms) until that name answers NXDOMAIN: seconds to the block on each.
# At the end both evidence stores are copied with sqlite3 .backup and merged by
# `hushd report --db a --db b`: which client addresses hushd saw behind dnsdist.
#
# Everything listens on 127.0.55.0/24 (BENCH_NET): NSD .1:5300, hushd a .2:5353 (metrics
# .2:9153), hushd b .3:5353 (.3:9153), dnsdist .10:5353 (console .10:5199, API .10:8083).
# Every load is bounded in time; everything started is stopped on exit, also on Ctrl-C.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
RUNS=3 MODES=none,drain,term,kill RUN=${RUN:-/tmp/hushd-scaleout}
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) RUNS=$2; shift ;;
    --modes) MODES=$2; shift ;;
    --run) RUN=$2; shift ;;
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "--runs takes a number >= 1" >&2; exit 2; }
: "${QPS:=2000}" "${LOAD_SECS:=30}" "${STOP_AT:=10}" "${DRAIN_SECS:=0.5}"
: "${CHECK_INTERVAL:=1}" "${CHECK_TIMEOUT_MS:=200}" "${BENCH_NET:=127.0.55}"
HUSHD_BIN=${HUSHD_BIN:-$REPO/target/release/hushd}
PY=${PY:-python3}
NET=$BENCH_NET DNSDIST=$BENCH_NET.10
[[ $NET =~ ^127\.[0-9]+\.[0-9]+$ ]] || { echo "BENCH_NET must look like 127.X.Y" >&2; exit 2; }

log() { echo "[$(date +%H:%M:%S)] $*"; }
die() { echo "scaleout bench: $*" >&2; exit 1; }
for tool in dnsdist dnsperf nsd sqlite3 timeout; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y dnsdist dnsperf nsd sqlite3)"
done
[[ -x $HUSHD_BIN ]] || die "$HUSHD_BIN not built (cargo build --release)"
mkdir -p "$RUN"; RUN=$(cd "$RUN" && pwd)
rm -rf "${RUN:?}"/{a,b,shared,upstream,dnsdist,out,data}
mkdir -p "$RUN"/{a,b,shared/blocklists,upstream,dnsdist,out,data}

PIDS=() NSD_PID= DD_PID= WATCH_PID=
declare -A HUSHD_PID
alive() { local s; s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1); [[ -n $s && $s != Z ]]; }
stop_pid() {  # PID [SIGNAL]: the signal (TERM), up to 5 s, then KILL
  local pid=$1
  [[ -n $pid ]] || return 0
  kill -"${2:-TERM}" "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  [[ -n $WATCH_PID ]] && kill "$WATCH_PID" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for i in a b; do stop_pid "${HUSHD_PID[$i]:-}"; done
  stop_pid "$DD_PID"
  stop_pid "$NSD_PID"
  wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "NA"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
calc() { awk "BEGIN {printf \"%.${2:-3}f\", $1}"; }

# --- the upstream: NSD, authoritative for two wildcard zones ----------------------------------
upstream_start() {
  local d=$RUN/upstream zone ip
  for zone in example-allowed.test:192.0.2.1 telemetry-block.test:192.0.2.66; do
    ip=${zone#*:} zone=${zone%%:*}
    printf '$ORIGIN %s.\n$TTL 3600\n@ SOA ns.%s. admin.%s. 1 3600 600 86400 3600\n@ NS ns\nns A %s\n* A %s\n* AAAA 2001:db8::1\n' \
      "$zone" "$zone" "$zone" "$NET.1" "$ip" > "$d/$zone.zone"
  done
  cat > "$d/nsd.conf" <<C
server:
  ip-address: $NET.1@5300
  port: 5300
  server-count: 1
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "$d"
  database: ""
  zonelistfile: "$d/zone.list"
  xfrdfile: "$d/xfrd.state"
  xfrdir: "$d"
  pidfile: "$d/nsd.pid"
  logfile: "$d/nsd.log"
  verbosity: 0
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: example-allowed.test
  zonefile: example-allowed.test.zone
zone:
  name: telemetry-block.test
  zonefile: telemetry-block.test.zone
C
  nsd -c "$d/nsd.conf"   # daemonizes and writes its pidfile
  for _ in $(seq 100); do [[ -s $d/nsd.pid ]] && break; sleep 0.05; done
  NSD_PID=$(cat "$d/nsd.pid" 2>/dev/null) || die "NSD did not start (see $d/nsd.log)"
  timeout 30 "$PY" "$HERE/probe.py" "$NET.1" 5300 20 host0.example-allowed.test NOERROR >/dev/null \
    || die "NSD does not answer (see $d/nsd.log)"
}

# --- the shared config folder and the two hushd -----------------------------------------------
# On real hosts the whole config directory is the same file for file (listen = 0.0.0.0:53);
# here both run on one host, so each has a hushd.toml of its own that differs only in its
# addresses and store, and both read their lists from the one shared folder.
data() {
  seq 0 999 | sed 's/.*/track&.telemetry-block.test/' > "$RUN/shared/blocklists/bench.txt"
  printf 'action = "block"\ndomains_file = "bench.txt"\n' > "$RUN/shared/blocklists/bench.toml"
  # 90 % allowed names (cache-hot after the first pass), 10 % listed ones.
  "$PY" - "$RUN/data/queries.txt" <<'P'
import random, sys
random.seed(13)
with open(sys.argv[1], "w") as f:
    for i in range(100000):
        if random.random() < 0.1:
            f.write(f"track{random.randrange(1000)}.telemetry-block.test A\n")
        else:
            f.write(f"host{random.randrange(5000)}.example-allowed.test A\n")
P
}
hushd_config() {  # NAME ADDR
  cat > "$RUN/$1/hushd.toml" <<C
[server]
listen = ["$2:5353"]
allow_clients = ["127.0.0.0/8"]
# dnsdist's checkName: hushd answers it itself, REFUSED while it drains after SIGTERM
health_name = "health.hushd.internal."
drain_secs = ${HUSHD_DRAIN:-2}

[upstream]
servers = ["$NET.1:5300"]

[metrics]
listen = "$2:9153"

[blocklists]
dir = "$RUN/shared/blocklists"

[cache]
size = 100000

# Behind dnsdist every query comes from dnsdist's address: a per-client limit would limit the
# whole network at once.
[limits]
client_qps = 0

[evidence]
path = "$RUN/$1/evidence.db"
flush_secs = 1
C
}
hushd_addr() { case $1 in a) echo "$NET.2" ;; b) echo "$NET.3" ;; esac; }
hushd_start() {  # NAME: start it and wait until it answers
  local addr; addr=$(hushd_addr "$1")
  "$HUSHD_BIN" --config "$RUN/$1/hushd.toml" >> "$RUN/$1/hushd.log" 2>&1 &
  HUSHD_PID[$1]=$!
  timeout 70 "$PY" "$HERE/probe.py" "$addr" 5353 60 track0.telemetry-block.test NXDOMAIN host0.example-allowed.test NOERROR >/dev/null \
    || die "hushd $1 did not come up (see $RUN/$1/hushd.log)"
}

# --- dnsdist ----------------------------------------------------------------------------------
DD_KEY= API_KEY=scaleout-bench
dnsdist_start() {
  DD_KEY=$("$PY" -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
  local i name addr
  {
    echo "setLocal('$DNSDIST:5353')"
    echo "setACL({'127.0.0.0/8'})"
    echo "controlSocket('$DNSDIST:5199')"
    echo "setKey('$DD_KEY')"
    echo "webserver('$DNSDIST:8083')"
    echo "setWebserverConfig({apiKey='$API_KEY', acl='127.0.0.0/8'})"
    echo "setVerboseHealthChecks(true)"
    for i in 0 1; do
      name=$([[ $i == 0 ]] && echo a || echo b) addr=$(hushd_addr "$name")
      # source: the address hushd sees every query come from. checkName: a name the upstream
      # answers (and hushd then caches), so a check tests hushd, not the root servers.
      echo "newServer{address='$addr:5353', name='hushd-$name', source='$DNSDIST', checkName='health.hushd.internal.', mustResolve=true, checkInterval=$CHECK_INTERVAL, checkTimeout=$CHECK_TIMEOUT_MS, maxCheckFailures=1, rise=1}"
    done
    echo "setServerPolicy(roundrobin)"
  } > "$RUN/dnsdist/dnsdist.conf"
  dnsdist --check-config -C "$RUN/dnsdist/dnsdist.conf" > "$RUN/dnsdist/check.log" 2>&1 \
    || die "dnsdist rejects its config (see $RUN/dnsdist/check.log)"
  dnsdist --supervised --disable-syslog -C "$RUN/dnsdist/dnsdist.conf" > "$RUN/dnsdist/dnsdist.log" 2>&1 &
  DD_PID=$!
  timeout 40 "$PY" "$HERE/probe.py" "$DNSDIST" 5353 30 host1.example-allowed.test NOERROR >/dev/null \
    || die "dnsdist does not answer (see $RUN/dnsdist/dnsdist.log)"
}
dd_console() { dnsdist -C "$RUN/dnsdist/dnsdist.conf" -c "$DNSDIST:5199" -e "$1"; }
dd_state() {  # BACKEND: its state in dnsdist's API (up, down, UP, DOWN)
  curl -s -H "X-API-Key: $API_KEY" "http://$DNSDIST:8083/api/v1/servers/localhost" \
    | "$PY" -c 'import json, sys; print({s["name"]: s["state"] for s in json.load(sys.stdin)["servers"]}.get(sys.argv[1], "NA"))' "$1"
}
wait_up() {  # BACKEND: until dnsdist has it up again (30 s at most)
  for _ in $(seq 300); do [[ $(dd_state "$1") == up ]] && return 0; sleep 0.1; done
  die "dnsdist never marked $1 up again"
}

# --- one load run with one instance stopped ---------------------------------------------------
RESULTS=$RUN/results.tsv
printf 'run\tmode\tsent\tlost\tloss_pct\tservfail\tdown_after_s\n' > "$RESULTS"
load_run() {  # RUN MODE
  local r=$1 mode=$2 out=$RUN/out/$2-r$1 t_stop down=NA
  mkdir -p "$out"
  rm -f "$out/stop"
  timeout $((LOAD_SECS + 30)) "$PY" "$HERE/ddwatch.py" "http://$DNSDIST:8083/api/v1/servers/localhost" "$API_KEY" \
    "$out/stop" $((LOAD_SECS + 20)) > "$out/states.txt" 2> "$out/ddwatch.err" &
  WATCH_PID=$!
  timeout $((LOAD_SECS + 30)) dnsperf -s "$DNSDIST" -p 5353 -d "$RUN/data/queries.txt" -l "$LOAD_SECS" -Q "$QPS" \
    -c 4 -q 10000 -t 2 > "$out/dnsperf.txt" 2>&1 &
  local load=$!
  PIDS+=("$load")
  # A random fraction of a check interval more: the stop falls anywhere between two health
  # checks, as a crash would, instead of at the same point of dnsdist's check cycle every run.
  sleep "$STOP_AT"; sleep "$(calc "$RANDOM % 1000 * $CHECK_INTERVAL / 1000" 3)"
  case $mode in
    none) t_stop=$EPOCHREALTIME ;;
    drain)
      dd_console 'getServer(0):setDown()' > "$out/console.txt" 2>&1
      sleep "$DRAIN_SECS"
      t_stop=$EPOCHREALTIME; stop_pid "${HUSHD_PID[a]}" TERM ;;
    term) t_stop=$EPOCHREALTIME; stop_pid "${HUSHD_PID[a]}" TERM ;;
    kill) t_stop=$EPOCHREALTIME; stop_pid "${HUSHD_PID[a]}" KILL ;;
    *) die "unknown mode $mode (drain, term, kill)" ;;
  esac
  echo "$t_stop" > "$out/stopped_at"
  wait "$load" || true
  touch "$out/stop"; wait "$WATCH_PID" || true; WATCH_PID=
  if [[ $mode == term || $mode == kill ]]; then
    local t; t=$(awk -v t0="$t_stop" '$2 == "hushd-a" && tolower($3) == "down" && $1 >= t0 {print $1; exit}' "$out/states.txt")
    [[ -n $t ]] && down=$(calc "$t - $t_stop" 3)
  fi
  local sent lost pct sf
  sent=$(awk '/Queries sent:/ {print $3}' "$out/dnsperf.txt")
  lost=$(awk '/Queries lost:/ {print $3}' "$out/dnsperf.txt")
  sf=$(awk '/Response codes:/ {for (i = 1; i <= NF; i++) if ($i == "SERVFAIL") {v = $(i+1); gsub(/,/, "", v)}} END {print (v == "" ? 0 : v)}' "$out/dnsperf.txt")
  pct=NA; [[ -n $sent && -n $lost && $sent != 0 ]] && pct=$(calc "$lost * 100 / $sent" 3)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$mode" "${sent:-NA}" "${lost:-NA}" "$pct" "$sf" "$down" >> "$RESULTS"
  log "run $r $mode: sent ${sent:-NA} lost ${lost:-NA} (${pct}%) servfail $sf; marked down after ${down}s"
  # back to two instances for the next step
  [[ $mode == none ]] && return 0
  hushd_start a
  [[ $mode == drain ]] && dd_console 'getServer(0):setAuto()' >> "$out/console.txt" 2>&1
  wait_up hushd-a
}

# --- a list edit in the shared folder, timed on each instance ---------------------------------
EDITS=$RUN/edits.tsv
printf 'run\ta_s\tb_s\n' > "$EDITS"
edit_run() {  # RUN
  local r=$1 out=$RUN/out/edit-r$1 name="added$1-$RANDOM.telemetry-block.test" f=$RUN/shared/blocklists/bench.txt
  mkdir -p "$out"; rm -f "$out/go"
  local pa pb
  # each probe asks the name once (both forward and cache it: NOERROR), then polls after "go"
  timeout 30 "$PY" "$HERE/probe.py" "$NET.2" 5353 20 --after "$out/go" "$name" NXDOMAIN > "$out/a.probe" 2>&1 &
  pa=$!
  timeout 30 "$PY" "$HERE/probe.py" "$NET.3" 5353 20 --after "$out/go" "$name" NXDOMAIN > "$out/b.probe" 2>&1 &
  pb=$!
  for _ in $(seq 500); do grep -q ready "$out/a.probe" && grep -q ready "$out/b.probe" && break; sleep 0.01; done
  { cat "$f"; echo "$name"; } > "$RUN/shared/blocklists/.bench.txt.new"
  local t0=$EPOCHREALTIME
  mv -f "$RUN/shared/blocklists/.bench.txt.new" "$f"
  touch "$out/go"
  local ta=NA tb=NA
  wait "$pa" && ta=$(calc "$(tail -n 1 "$out/a.probe") - $t0" 3)
  wait "$pb" && tb=$(calc "$(tail -n 1 "$out/b.probe") - $t0" 3)
  printf '%s\t%s\t%s\n' "$r" "$ta" "$tb" >> "$EDITS"
  log "run $r edit: $name blocked on a after ${ta}s, on b after ${tb}s ($(head -n 1 "$out/a.probe" | cut -d' ' -f2) before)"
}

# --- main ---------------------------------------------------------------------------------------
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
data
upstream_start
for i in a b; do hushd_config "$i" "$(hushd_addr $i)"; hushd_start "$i"; done
dnsdist_start
wait_up hushd-a; wait_up hushd-b
log "$("$HUSHD_BIN" --version), $(dnsdist --version | head -n 1), $(nsd -v 2>&1 | head -n 1); $QPS q/s for ${LOAD_SECS}s, stop at ${STOP_AT}s, checkInterval ${CHECK_INTERVAL}s, checkTimeout ${CHECK_TIMEOUT_MS}ms"
IFS=, read -r -a modes <<< "$MODES"
for r in $(seq "$RUNS"); do
  for m in "${modes[@]}"; do load_run "$r" "$m"; done
  edit_run "$r"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Evidence: both stores copied as a backup does (never the live file and its WAL over a share),
# then one report over both.
sleep 2   # flush_secs = 1: the last matches are written
for i in a b; do sqlite3 "$RUN/$i/evidence.db" ".backup '$RUN/out/evidence-$i.db'"; done
"$HUSHD_BIN" report --db "$RUN/out/evidence-a.db" --db "$RUN/out/evidence-b.db" --since all --format csv \
  > "$RUN/out/report.csv" 2> "$RUN/out/report.err" || log "hushd report failed: $(cat "$RUN/out/report.err")"
CLIENTS=$(tail -n +2 "$RUN/out/report.csv" | cut -d, -f2 | sort -u | paste -sd' ')
MATCHES=$(tail -n +2 "$RUN/out/report.csv" | awk -F, '{s += $6} END {print s + 0}')

# --- the table ----------------------------------------------------------------------------------
{
  echo "hushd scale-out bench, $(date -u +%FT%TZ): $("$HUSHD_BIN" --version), $(dnsdist --version | head -n 1)"
  echo "$QPS q/s for ${LOAD_SECS}s through dnsdist (roundrobin over 2 hushd), hushd a stopped ${STOP_AT}-$((STOP_AT + CHECK_INTERVAL))s in;"
  echo "checkInterval ${CHECK_INTERVAL}s, checkTimeout ${CHECK_TIMEOUT_MS}ms, maxCheckFailures 1; $RUNS run(s); load average $LOAD_BEFORE before, $LOAD_AFTER after ($(nproc) CPUs)"
  echo
  echo "| mode | sent (median) | lost (median) | loss % (median) | loss % per run | marked down after s (median) | per run |"
  echo "|---|---|---|---|---|---|---|"
  for m in "${modes[@]}"; do
    col() { awk -F'\t' -v m="$m" -v c="$1" 'NR > 1 && $2 == m {print $c}' "$RESULTS"; }
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$m" "$(col 3 | median)" "$(col 4 | median)" "$(col 5 | median)" \
      "$(col 5 | paste -sd' ')" "$(col 7 | grep -v NA | median)" "$(col 7 | paste -sd' ')"
  done
  echo
  echo "| list edit in the shared folder | median s | per run |"
  echo "|---|---|---|"
  for c in 2:a 3:b; do
    printf '| blocked on hushd %s | %s | %s |\n' "${c#*:}" "$(awk -F'\t' -v c="${c%%:*}" 'NR > 1 {print $c}' "$EDITS" | grep -v NA | median)" \
      "$(awk -F'\t' -v c="${c%%:*}" 'NR > 1 {print $c}' "$EDITS" | paste -sd' ')"
  done
  echo
  echo "evidence, both stores merged (hushd report --db a --db b): $MATCHES matches, client addresses seen: ${CLIENTS:-none}"
} | tee "$RUN/results.md"
log "raw figures: $RESULTS, $EDITS; per step: $RUN/out/"
