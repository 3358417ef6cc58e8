#!/usr/bin/env bash
# hushd benchmark: hushd, Unbound, dnsmasq and a trivial UDP responder (the floor), one at a time,
# as forwarding filters in front of the same authoritative NSD upstream, with the same block list,
# the same queries and the same CPU pinning. Everything runs on 127.0.0.0/8. See bench/README.md.
#
# usage: bench/run.sh [--quick] [--runs N] [--sizes 1000,1000000] [--peers hushd,unbound,dnsmasq,floor]
#                     [--run DIR] [--only memory|speed|cpu] [--rounds N] [--dnssec]   (more peers: hushd-sub, hushd-patterns; see bench/peers/)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
QUICK=0 RUNS= SIZES= PEERS=hushd,unbound,dnsmasq,floor ONLY= DNSSEC=0 ROUNDS=
RUN=${RUN:-/tmp/hushd-bench}
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ;;
    --runs) RUNS=$2; shift ;;
    --sizes) SIZES=$2; shift ;;
    --peers) PEERS=$2; shift ;;
    --run) RUN=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --dnssec) DNSSEC=1 ;;
    -h|--help) usage ;;
    *) echo "unknown option: $1" >&2; usage 2 >&2 ;;
  esac
  shift
done
[[ -z $RUNS || $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "--runs takes a number >= 1" >&2; exit 2; }
[[ -z $ONLY || $ONLY == memory || $ONLY == speed || $ONLY == cpu ]] || { echo "--only takes: memory, speed, cpu" >&2; exit 2; }
[[ -z $ROUNDS || $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "--rounds takes a number >= 1" >&2; exit 2; }
RUN=$(mkdir -p "$RUN" && cd "$RUN" && pwd)
[[ $RUN != *[[:space:]]* ]] || { echo "the run folder must not contain spaces" >&2; exit 2; }

# Knobs (environment). --quick: one run, the 1k list, 3-second loads.
if [[ $QUICK == 1 ]]; then
  : "${RUNS:=1}" "${SIZES:=1000}" "${LOAD_SECS:=3}" "${CPU_SECS:=3}" "${LAT_SECS:=3}" "${WARMUP_SECS:=1}" "${MISS_SECS:=3}"
  : "${RELOAD_WINDOW:=4}" "${EDIT_AT:=1.5}" "${MISS_NAMES:=300000}"
fi
: "${RUNS:=3}" "${SIZES:=1000,1000000}" "${ROUNDS:=15}"
: "${LOAD_SECS:=10}"      # saturating run (dnsperf -l)
: "${CPU_SECS:=10}"       # fixed-rate run for CPU time per query
: "${CPU_QPS:=50000}"     # its rate: well below saturation, an office's peak rather than a flood
: "${LAT_SECS:=10}"       # fixed-rate latency run
: "${WARMUP_SECS:=3}"     # fills the cache before measuring
: "${MISS_SECS:=10}"      # cache-miss run
: "${RELOAD_WINDOW:=10}"  # fixed-rate load around a reload (longer if the quiet reload was slow)
: "${EDIT_AT:=3}"         # seconds into that window when the list is edited
: "${MISS_NAMES:=1000000}"
: "${CLIENTS:=8}" "${OUTSTANDING:=200}" "${THREADS:=1}" "${LAT_QPS:=5000}"
: "${MAX_PASSES:=100}"    # bound on passes over a query file (dnsperf -n), besides the time limit
: "${DAEMON_CPU:=1}" "${LOAD_CPU:=0}"   # daemon on one CPU; dnsperf, probes and NSD on another
: "${STARTUP_TIMEOUT:=60}" "${RELOAD_TIMEOUT:=60}"
# Addresses: the upstream on $BENCH_NET.1, the daemons on .2 (unbound) .3 (dnsmasq) .4 (hushd)
# .5 (floor) .6 (hushd-sub) and .7 (hushd-patterns), all on port PEER_PORT: well away from a hushd or resolver you may run yourself.
: "${BENCH_NET:=127.0.53}" "${PEER_PORT:=5353}" "${CACHE_ENTRIES:=100000}"
: "${UPSTREAM:=$BENCH_NET.1:5300}"
UPSTREAM_ADDR=${UPSTREAM%:*} UPSTREAM_PORT=${UPSTREAM##*:}
PY=${PY:-$(command -v /usr/bin/python3 || command -v python3)}
export RUN REPO HERE BENCH_NET PEER_PORT UPSTREAM_ADDR UPSTREAM_PORT CACHE_ENTRIES

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
for tool in dnsperf nsd nsd-checkconf bc taskset timeout; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y dnsperf nsd unbound dnsmasq-base bc)"
done
# --dnssec: the upstream's zones are signed and every dnsperf query sets DO (dnsperf -D), so
# answers carry RRSIGs (and the NSEC that proves a wildcard expansion) to cache and serve.
DNSPERF_DNSSEC=()
if [[ $DNSSEC == 1 ]]; then
  for tool in ldns-keygen ldns-signzone; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y ldnsutils)"
  done
  DNSPERF_DNSSEC=(-D)
fi
case $UPSTREAM_ADDR in 127.*) ;; *) die "UPSTREAM must be on 127.0.0.0/8" ;; esac
[[ $BENCH_NET =~ ^127\.[0-9]+\.[0-9]+$ ]] || die "BENCH_NET must look like 127.X.Y"
if (( $(nproc) < 2 )); then log "only one CPU: daemon and load share CPU 0"; DAEMON_CPU=0 LOAD_CPU=0; fi

# --- helpers ---------------------------------------------------------------------------------
calc() { printf "%.${2:-3}f" "$(echo "scale=6; $1" | bc)"; }   # calc EXPR [DECIMALS]
# utime+stime of PID in clock ticks; PID's VmRSS or VmHWM in MiB; NA once PID is gone.
ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13; f=1} END {if (!f) print "NA"}'; }
mem_mib() { awk -v k="$2:" '$1 == k {printf "%.1f", $2 / 1024; f=1} END {if (!f) print "NA"}' "/proc/$1/status" 2>/dev/null || echo NA; }
alive() { local s; s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1); [[ -n $s && $s != Z ]]; }
port_free() { "$PY" -c 'import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind((sys.argv[1], int(sys.argv[2])))' "$1" "$2" 2>/dev/null; }
on_load_cpu() { taskset -c "$LOAD_CPU" "$@"; }

# dnsperf_run OUTFILE QUERYFILE SECONDS [dnsperf options]: one bounded run against the current
# peer: at most SECONDS, at most PASSES (default MAX_PASSES) times through QUERYFILE.
# (Started in the background and waited for, so that Ctrl-C stops the benchmark at once.)
dnsperf_run() {
  local out=$1 qf=$2 secs=$3; shift 3
  timeout $(( ${secs%.*} + 30 )) taskset -c "$LOAD_CPU" dnsperf -s "$PEER_ADDR" -p "$PEER_PORT" -d "$qf" \
    -l "$secs" -n "${PASSES:-$MAX_PASSES}" -c "$CLIENTS" -T "$THREADS" -q "$OUTSTANDING" -t 2 "${DNSPERF_DNSSEC[@]}" "$@" > "$out" 2>&1 &
  LOAD_PID=$!
  wait "$LOAD_PID" || true
  LOAD_PID=
}
dp_runtime() { awk '/Run time \(s\):/ {print $4; f=1} END {if (!f) print "NA"}' "$1"; }
dp_lost()    { awk '/Queries lost:/ {print $3; f=1} END {if (!f) print "NA"}' "$1"; }
dp_sent()    { awk '/Queries sent:/ {print $3; f=1} END {if (!f) print "NA"}' "$1"; }
# dp_ok OUTFILE EXPECT: sets OK (answers with the rcode the query file expects) and WRONG (any
# other rcode), from rcodes.py; only OK answers count as answered.
dp_ok()      { read -r OK WRONG < <("$PY" "$HERE/rcodes.py" "$2" "$1" 2>/dev/null || echo NA NA); }
dp_nxpct()   { awk '/Response codes:/ {for (i = 1; i <= NF; i++) if ($i == "NXDOMAIN") {v = $(i+2); gsub(/[()%,]/, "", v)}} END {print (v == "" ? "0" : v)}' "$1"; }

# probe_start OUTFILE HOST PORT DEADLINE NAME RCODE...: starts probe.py in the background and
# returns once it is polling; probe_end OUTFILE T0 then gives the seconds from T0 to success.
PROBE_PID= LOAD_PID= GAP_PID= PEER_PID= UPSTREAM_PID=
probe_start() {
  local out=$1; shift
  : > "$out"
  timeout $(( ${3%.*} + 10 )) taskset -c "$LOAD_CPU" "$PY" "$HERE/probe.py" "$@" > "$out" 2>> "$OUT/probe.err" &
  PROBE_PID=$!
  for _ in $(seq 500); do grep -q ready "$out" && return 0; alive "$PROBE_PID" || break; sleep 0.01; done
  return 1
}
probe_end() {  # sets PROBE_SECS (not a $(...) function: wait needs the probe as its own child)
  PROBE_SECS=NA
  if wait "$PROBE_PID"; then PROBE_SECS=$(calc "$(tail -n 1 "$1") - $2"); fi
  PROBE_PID=
}

stop_pid() {  # PID: TERM, up to 5 s, then KILL
  local pid=$1
  [[ -n $pid ]] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
CPU_PIDS=()
cleanup() {
  set +e
  for pid in $PROBE_PID $LOAD_PID $GAP_PID; do kill "$pid" 2>/dev/null; done
  stop_pid "$PEER_PID"; PEER_PID=
  for pid in "${CPU_PIDS[@]}"; do stop_pid "$pid"; done; CPU_PIDS=()
  if [[ -n $UPSTREAM_PID ]]; then stop_pid "$UPSTREAM_PID"; UPSTREAM_PID=; log "upstream NSD stopped"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the upstream: authoritative NSD with wildcard zones, rate limiting off -------------------
upstream_start() {
  local d=$RUN/upstream
  rm -rf "$d"; mkdir -p "$d"
  port_free "$UPSTREAM_ADDR" "$UPSTREAM_PORT" || die "$UPSTREAM is in use (set UPSTREAM=127.0.0.x:port)"
  local zone ip
  for zone in example-allowed.test:192.0.2.1 telemetry-block.test:192.0.2.66; do
    ip=${zone#*:} zone=${zone%%:*}
    cat > "$d/$zone.zone" <<Z
\$ORIGIN $zone.
\$TTL 3600
@    SOA  ns.$zone. admin.$zone. 1 3600 600 86400 3600
@    NS   ns
ns   A    $UPSTREAM_ADDR
*    A    $ip
*    AAAA 2001:db8::1
Z
    if [[ $DNSSEC == 1 ]]; then
      # a KSK and a ZSK (ECDSA P-256, what most signed zones use), signed in place of the file
      local ksk zsk
      ksk=$(cd "$d" && ldns-keygen -a ECDSAP256SHA256 -k "$zone") || die "ldns-keygen failed"
      zsk=$(cd "$d" && ldns-keygen -a ECDSAP256SHA256 "$zone") || die "ldns-keygen failed"
      (cd "$d" && ldns-signzone -o "$zone." -f "$zone.signed" "$zone.zone" "$zsk" "$ksk" && mv "$zone.signed" "$zone.zone") \
        || die "ldns-signzone failed"
    fi
  done
  cat > "$d/nsd.conf" <<C
server:
  ip-address: $UPSTREAM_ADDR@$UPSTREAM_PORT
  port: $UPSTREAM_PORT
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
  hide-version: yes
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: example-allowed.test
  zonefile: example-allowed.test.zone
zone:
  name: telemetry-block.test
  zonefile: telemetry-block.test.zone
C
  nsd-checkconf "$d/nsd.conf" || die "nsd-checkconf failed"
  on_load_cpu nsd -c "$d/nsd.conf"   # daemonizes and writes its pidfile
  for _ in $(seq 100); do [[ -s $d/nsd.pid ]] && break; sleep 0.05; done
  UPSTREAM_PID=$(cat "$d/nsd.pid" 2>/dev/null) || die "NSD did not start (see $d/nsd.log)"
  timeout 30 "$PY" "$HERE/probe.py" "$UPSTREAM_ADDR" "$UPSTREAM_PORT" 20 host0.example-allowed.test NOERROR >/dev/null \
    || die "NSD does not answer (see $d/nsd.log)"
  log "upstream: $(nsd -v 2>&1 | head -n 1) on $UPSTREAM (pid $UPSTREAM_PID)$([[ $DNSSEC == 1 ]] && echo ", zones signed, queries with DO")"
}

# --- one peer, one list size, one run: appends one row to $RAW ------------------------------
RAW_COLUMNS="run peer list version qps cpu_pct cpu_us_per_query bad_rcodes nxdomain_pct p50_ms p99_ms rss_start_mib rss_peak_mib startup_s reload_s reload_lost reload_gap_ms miss_qps miss_loss_pct"
emit_row() {  # the columns above, from bench_one's variables
  local row=("$run" "$peer" "$size" "$version" "$qps" "$cpu" "$cpu_us" "$bad" "$nx" "$p50" "$p99" "$rss0" "$peak" \
             "$startup" "$reload" "$rl_lost" "$gap" "$miss_qps" "$miss_loss")
  (IFS=$'\t'; echo "${row[*]}") >> "$RAW"
}
add_bad() { [[ $1 == NA || $bad == NA ]] && bad=NA || bad=$(( bad + $1 )); }
bench_one() {
  local peer=$1 size=$2 run=$3
  # shellcheck source=/dev/null
  source "$HERE/peers/$peer.sh"
  case $PEER_ADDR in 127.*) ;; *) die "$peer: address must be on 127.0.0.0/8" ;; esac
  local list=$RUN/data/list-$size.txt queries=$RUN/data/queries-$size.txt expect=$RUN/data/queries-$size.expect
  OUT=$RUN/out/$peer-$size-r$run PDIR=$RUN/$peer
  rm -rf "$OUT" "$PDIR"; mkdir -p "$OUT" "$PDIR"
  local version; version=$(peer_version 2>/dev/null | head -n 1 | tr '\t' ' ' || true)
  local hwm0=NA startup=NA qps=NA cpu=NA cpu_us=NA bad=0 nx=NA p50=NA p99=NA rss0=NA peak=NA reload=NA rl_lost=NA gap=NA miss_qps=NA miss_loss=NA

  port_free "$PEER_ADDR" "$PEER_PORT" || die "$PEER_ADDR:$PEER_PORT is in use; is another daemon running there?"
  peer_prepare "$list"
  local t0 t1 c0 c1 cmd; cmd=$(peer_cmd); echo "$cmd" > "$OUT/cmd"

  # Startup: from exec until a listed name is blocked and an allowed one is forwarded.
  probe_start "$OUT/startup.probe" "$PEER_ADDR" "$PEER_PORT" "$STARTUP_TIMEOUT" \
    "$(tail -n 1 "$list")" NXDOMAIN host0.example-allowed.test NOERROR || die "probe.py did not start"
  t0=$EPOCHREALTIME
  taskset -c "$DAEMON_CPU" $cmd >> "$OUT/daemon.log" 2>&1 &
  PEER_PID=$!
  while alive "$PROBE_PID"; do   # stop waiting early if the daemon exits (bad config, port taken)
    alive "$PEER_PID" || { kill "$PROBE_PID" 2>/dev/null; break; }
    sleep 0.05
  done
  probe_end "$OUT/startup.probe" "$t0"; startup=$PROBE_SECS
  if [[ $startup == NA ]] || ! alive "$PEER_PID"; then
    log "$peer/$size run $run: not enforcing the list (daemon exited, or ${STARTUP_TIMEOUT}s passed); see $OUT/daemon.log"
    stop_pid "$PEER_PID"; PEER_PID=
    emit_row; return 0
  fi
  rss0=$(mem_mib "$PEER_PID" VmRSS) hwm0=$(mem_mib "$PEER_PID" VmHWM)

  # Saturating throughput (after a warm-up that fills the cache), and the daemon's CPU meanwhile.
  # --only memory keeps the warm-up (the cache holds what it would after the loads) and the two
  # list edits, the steps that make the peak, and skips the loads that only time things.
  dnsperf_run "$OUT/warmup.txt" "$queries" "$WARMUP_SECS"
  if [[ $ONLY != memory ]]; then
    # CPU time is divided by dnsperf's own run time: it excludes dnsperf's start and its wait for
    # late answers at the end, when the daemon has nothing to do.
    c0=$(ticks "$PEER_PID")
    dnsperf_run "$OUT/saturate.txt" "$queries" "$LOAD_SECS"
    c1=$(ticks "$PEER_PID")
    nx=$(dp_nxpct "$OUT/saturate.txt") t1=$(dp_runtime "$OUT/saturate.txt")
    dp_ok "$OUT/saturate.txt" "$expect"; add_bad "$WRONG"
    [[ $t1 == NA || $OK == NA ]] || qps=$(calc "$OK / $t1" 0)
    [[ $t1 == NA || $c0 == NA || $c1 == NA ]] || cpu=$(calc "($c1 - $c0) * 100 / $(getconf CLK_TCK) / $t1" 0)

    # CPU time per answered query at a fixed rate, cache-hot: at saturation the load generator,
    # not the daemon, is the limit on a small machine, so this is where daemons differ.
    c0=$(ticks "$PEER_PID")
    dnsperf_run "$OUT/cpu.txt" "$queries" "$CPU_SECS" -Q "$CPU_QPS"
    c1=$(ticks "$PEER_PID")
    dp_ok "$OUT/cpu.txt" "$expect"; add_bad "$WRONG"
    [[ $OK == NA || $OK == 0 || $c0 == NA || $c1 == NA ]] \
      || cpu_us=$(calc "($c1 - $c0) * 1000000 / $(getconf CLK_TCK) / $OK" 2)

    # --only speed: saturating QPS and CPU per query, nothing after (a quick side-by-side check)
    if [[ $ONLY == speed ]]; then
      alive "$PEER_PID" || log "$peer/$size run $run: the daemon died during the run; see $OUT/daemon.log"
      stop_pid "$PEER_PID"; PEER_PID=
      emit_row; return 0
    fi
    # Latency at a fixed rate, from dnsperf's per-query times.
    dnsperf_run "$OUT/latency.raw" "$queries" "$LAT_SECS" -Q "$LAT_QPS" -v
    read -r p50 p99 _ < <("$PY" "$HERE/latpct.py" < "$OUT/latency.raw")
    dp_ok "$OUT/latency.raw" "$expect"; add_bad "$WRONG"
    sed -n '/^Statistics/,$p' "$OUT/latency.raw" > "$OUT/latency.txt"; rm -f "$OUT/latency.raw"
  fi

  # List edit to enforcement, quiet: the probe has asked for the new name once before the edit
  # (so the daemon has forwarded and cached it), and polls for it from the moment of the edit.
  local name=new$RANDOM$RANDOM.telemetry-block.test
  probe_start "$OUT/reload.probe" "$PEER_ADDR" "$PEER_PORT" "$RELOAD_TIMEOUT" --after "$OUT/edited" "$name" NXDOMAIN \
    || die "probe.py did not start"
  peer_add "$name"; t0=$EPOCHREALTIME; touch "$OUT/edited"; peer_reload
  probe_end "$OUT/reload.probe" "$t0"; reload=$PROBE_SECS
  [[ $peer == floor || $(sed -n 's/^ready //p' "$OUT/reload.probe") == NOERROR ]] \
    || log "$peer/$size run $run: $name was not answered NOERROR before it was listed"

  # A list edit under load: dnsperf at LAT_QPS plus a 5 ms gap probe; the edit lands EDIT_AT s in.
  local window=$RELOAD_WINDOW
  [[ $reload == NA ]] || window=$(calc "w = $EDIT_AT + 2 * $reload + 3; if (w < $RELOAD_WINDOW) w = $RELOAD_WINDOW; if (w > 60) w = 60; w" 0)
  name=new$RANDOM$RANDOM.telemetry-block.test
  timeout $(( window + 30 )) taskset -c "$LOAD_CPU" dnsperf -s "$PEER_ADDR" -p "$PEER_PORT" -d "$queries" \
    -l "$window" -Q "$LAT_QPS" -c "$CLIENTS" -T "$THREADS" -t 2 -n "$MAX_PASSES" "${DNSPERF_DNSSEC[@]}" > "$OUT/reload-load.txt" 2>&1 &
  LOAD_PID=$!
  timeout $(( window + 30 )) taskset -c "$LOAD_CPU" "$PY" "$HERE/gapprobe.py" "$PEER_ADDR" "$PEER_PORT" \
    host1.example-allowed.test "$window" > "$OUT/reload-gap.txt" 2>&1 &
  GAP_PID=$!
  sleep "$EDIT_AT"; peer_add "$name"; peer_reload
  wait "$LOAD_PID" || true; LOAD_PID=
  wait "$GAP_PID" || true; GAP_PID=
  # lost: no answer, or one with the wrong rcode (a daemon failing queries during its reload)
  rl_lost=$(dp_lost "$OUT/reload-load.txt"); dp_ok "$OUT/reload-load.txt" "$expect"; add_bad "$WRONG"
  [[ $rl_lost == NA || $WRONG == NA ]] || rl_lost=$(( rl_lost + WRONG ))
  gap=$(sed -n 's/.*max_gap_ms=\([0-9.]*\).*/\1/p' "$OUT/reload-gap.txt"); gap=${gap:-NA}
  timeout $(( RELOAD_TIMEOUT + 10 )) "$PY" "$HERE/probe.py" "$PEER_ADDR" "$PEER_PORT" "$RELOAD_TIMEOUT" "$name" NXDOMAIN > /dev/null \
    || log "$peer/$size run $run: the name added under load was never blocked"
  peak=$(mem_mib "$PEER_PID" VmHWM)

  # Cache misses: every name unique, so every query is forwarded upstream; each name asked once.
  if [[ $ONLY != memory ]]; then
    PASSES=1 dnsperf_run "$OUT/miss.txt" "$RUN/data/queries-miss.txt" "$MISS_SECS"
    dp_ok "$OUT/miss.txt" "$RUN/data/queries-miss.expect"; add_bad "$WRONG"
    local sent; sent=$(dp_sent "$OUT/miss.txt") t1=$(dp_runtime "$OUT/miss.txt")
    [[ $OK == NA || $t1 == NA ]] || miss_qps=$(calc "$OK / $t1" 0)
    [[ $OK == NA || $sent == NA || $sent == 0 ]] || miss_loss=$(calc "($sent - $OK) * 100 / $sent" 2)
  fi

  alive "$PEER_PID" || log "$peer/$size run $run: the daemon died during the run; see $OUT/daemon.log"
  stop_pid "$PEER_PID"; PEER_PID=
  emit_row
  log "$peer/$size run $run: qps=$qps cpu=$cpu% cpu_us=$cpu_us bad_rcodes=$bad nx=$nx% p50=${p50}ms p99=${p99}ms rss=${rss0}MiB (peak at start ${hwm0}) peak=${peak}MiB" \
      "startup=${startup}s reload=${reload}s reload_lost=$rl_lost gap=${gap}ms miss_qps=$miss_qps miss_loss=$miss_loss%"
}

# --- --only cpu: every peer up at once, CPU time per query measured in turn, round by round ----
# A run of --only speed measures one daemon, then the next, minutes apart; on a shared machine the
# host's load moves between them by more than the differences being measured. Here all peers
# answer side by side (idle, a daemon costs nothing) and each round gives every peer one fixed-rate
# load of CPU_SECS in turn, the order rotated each round, so each round's ratio compares figures
# taken seconds apart. The figure is the median over ROUNDS of those per-round ratios.
cpu_rounds() {  # SIZE
  local size=$1 list=$RUN/data/list-$1.txt queries=$RUN/data/queries-$1.txt expect=$RUN/data/queries-$1.expect
  local -a addrs=() pids=() names=()
  local peer cmd
  for peer in "${PEER_LIST[@]}"; do
    # shellcheck source=/dev/null
    source "$HERE/peers/$peer.sh"
    case $PEER_ADDR in 127.*) ;; *) die "$peer: address must be on 127.0.0.0/8" ;; esac
    OUT=$RUN/out/$peer-$size-cpu PDIR=$RUN/$peer
    rm -rf "$OUT" "$PDIR"; mkdir -p "$OUT" "$PDIR"
    port_free "$PEER_ADDR" "$PEER_PORT" || die "$PEER_ADDR:$PEER_PORT is in use; is another daemon running there?"
    peer_prepare "$list"
    cmd=$(peer_cmd); echo "$cmd" > "$OUT/cmd"
    probe_start "$OUT/startup.probe" "$PEER_ADDR" "$PEER_PORT" "$STARTUP_TIMEOUT" \
      "$(tail -n 1 "$list")" NXDOMAIN host0.example-allowed.test NOERROR || die "probe.py did not start"
    taskset -c "$DAEMON_CPU" $cmd >> "$OUT/daemon.log" 2>&1 &
    CPU_PIDS+=("$!")
    probe_end "$OUT/startup.probe" "$EPOCHREALTIME"
    [[ $PROBE_SECS != NA ]] || die "$peer does not enforce the list; see $OUT/daemon.log"
    dnsperf_run "$OUT/warmup.txt" "$queries" "$WARMUP_SECS"
    addrs+=("$PEER_ADDR") pids+=("${CPU_PIDS[-1]}") names+=("$peer")
  done
  log "cpu: ${#names[@]} peers up (${names[*]}); $ROUNDS rounds of ${CPU_SECS}s at $CPU_QPS q/s each"
  local round k i c0 c1 us n=${#names[@]}
  for round in $(seq "$ROUNDS"); do
    for k in $(seq 0 $(( n - 1 ))); do
      i=$(( (k + round - 1) % n ))
      PEER_ADDR=${addrs[i]} OUT=$RUN/out/${names[i]}-$size-cpu
      alive "${pids[i]}" || die "${names[i]} died; see $OUT/daemon.log"
      c0=$(ticks "${pids[i]}")
      dnsperf_run "$OUT/cpu-r$round.txt" "$queries" "$CPU_SECS" -Q "$CPU_QPS"
      c1=$(ticks "${pids[i]}")
      dp_ok "$OUT/cpu-r$round.txt" "$expect"
      us=NA
      [[ $OK == NA || $OK == 0 || $c0 == NA || $c1 == NA ]] || us=$(calc "($c1 - $c0) * 1000000 / $(getconf CLK_TCK) / $OK" 3)
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$k" "${names[i]}" "$size" "$us" "$OK" "$WRONG" >> "$RUN/cpu.tsv"
    done
  done
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  CPU_PIDS=()
}

# --- main --------------------------------------------------------------------------------------
IFS=, read -r -a PEER_LIST <<< "$PEERS"
IFS=, read -r -a SIZE_LIST <<< "$SIZES"
for peer in "${PEER_LIST[@]}"; do
  [[ -f $HERE/peers/$peer.sh ]] || die "unknown peer $peer (have: $(ls "$HERE/peers" | sed 's/\.sh$//' | xargs))"
  case $peer in
    hushd|hushd-*) [[ -x ${HUSHD_BIN:-$REPO/target/release/hushd} ]] || die "no hushd binary: run 'cargo build --release' or set HUSHD_BIN" ;;
    unbound|dnsmasq) command -v "$peer" >/dev/null || die "$peer not found" ;;
    floor)
      log "building udp-floor"
      cargo build --quiet --release --manifest-path "$HERE/udp-floor/Cargo.toml" --target-dir "$RUN/udp-floor-target" \
        || die "udp-floor did not build" ;;
  esac
done

# Lists and queries, regenerated only when their inputs change.
mkdir -p "$RUN/data"
stamp="$(cat "$HERE/gen.py" "$REPO/blocklists/xiaomi.toml" | sha1sum) $SIZES $MISS_NAMES"
if [[ $(cat "$RUN/data/stamp" 2>/dev/null) != "$stamp" ]]; then
  rm -f "$RUN"/data/*
  "$PY" "$HERE/gen.py" "$RUN/data" --sizes "$SIZES" --miss "$MISS_NAMES"
  echo "$stamp" > "$RUN/data/stamp"
fi

RAW=$RUN/raw.tsv
rm -rf "$RUN/out"; echo "$RAW_COLUMNS" | tr ' ' '\t' > "$RAW"
upstream_start
if [[ $ONLY == cpu ]]; then
  printf 'round\torder\tpeer\tlist\tcpu_us_per_query\tanswered\tbad_rcodes\n' > "$RUN/cpu.tsv"
  for size in "${SIZE_LIST[@]}"; do cpu_rounds "$size"; done
  "$PY" "$HERE/cpurounds.py" "$RUN/cpu.tsv" "$PEERS" | tee "$RUN/cpu.txt"
  exit 0
fi
log "runs=$RUNS sizes=$SIZES peers=$PEERS loads=${LOAD_SECS}s daemon CPU $DAEMON_CPU, load CPU $LOAD_CPU; output in $RUN"
for run in $(seq "$RUNS"); do
  for size in "${SIZE_LIST[@]}"; do
    for peer in "${PEER_LIST[@]}"; do
      bench_one "$peer" "$size" "$run"
    done
  done
done
"$PY" "$HERE/report.py" "$RAW" "$RUN/results.tsv"
