#!/usr/bin/env bash
# hushd encrypted-DNS benchmark.
#
# usage: bench/encrypted.sh [--runs N] [--part dot-upstream] [--run DIR]
#
# Part "dot-upstream": cache-miss forwarding through a DNS-over-TLS upstream. An Unbound DoT
# server on loopback (certificate from a CA this script makes) answers every name under
# miss.test (a redirect zone: any name, one A record). In front of it, one at a time and
# pinned to one CPU:
#   hushd    [upstream] servers = ["tls://...#bench.test"], ca_file = the CA
#   unbound  forward-zone "." to the same server with forward-tls-upstream: yes
# dnsperf (on the other CPU) asks each forwarder over UDP names it has never seen (a fresh set
# each round, so every query is a miss and goes upstream over TLS). Rounds alternate the
# forwarders; the report gives each one's median QPS and loss (queries sent but not answered)
# and hushd/unbound. Everything stays on 127.0.0.0/8; every load is bounded in time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
RUNS=3 PART=dot-upstream RUN=${RUN:-/tmp/hushd-encrypted-bench}
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) RUNS=$2; shift ;;
    --part) PART=$2; shift ;;
    --run) RUN=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $PART == dot-upstream || $PART == all ]] || { echo "unknown part: $PART" >&2; exit 2; }
: "${LOAD_SECS:=10}" "${NAMES:=300000}" "${CLIENTS:=4}" "${OUTSTANDING:=200}"
: "${DAEMON_CPU:=1}" "${LOAD_CPU:=0}" "${NET:=127.0.57}"
HUSHD_BIN=${HUSHD_BIN:-$REPO/target/release/hushd}
mkdir -p "$RUN"; RUN=$(cd "$RUN" && pwd)
log() { echo "[$(date +%H:%M:%S)] $*"; }
die() { echo "encrypted bench: $*" >&2; exit 1; }
for tool in dnsperf unbound openssl taskset timeout; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y dnsperf unbound openssl)"
done
[[ -x $HUSHD_BIN ]] || die "$HUSHD_BIN not built (cargo build --release)"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

UPSTREAM=$NET.1 UNBOUND=$NET.2 HUSHD=$NET.4 DOT_PORT=8853 DNS_PORT=5353

# A CA and the upstream's certificate for bench.test (and its address).
certs() {
  local d=$RUN/tls
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=hushd bench CA" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=bench.test" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:bench.test,IP:%s\n' "$UPSTREAM" > "$d/san.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/san.ext" -out "$d/server.pem" 2>/dev/null
}

unbound_conf() {  # NAME BODY...
  local conf=$RUN/$1.conf; shift
  {
    echo "server:"
    printf '  %s\n' "do-daemonize: no" 'username: ""' 'chroot: ""' "directory: \"$RUN\"" 'pidfile: ""' \
      "use-syslog: no" "logfile: \"$RUN/${conf##*/}.log\"" "verbosity: 0" "num-threads: 1" \
      "do-ip6: no" "access-control: 127.0.0.0/8 allow" "so-reuseport: no"
    printf '%s\n' "$@"
    printf 'remote-control:\n  control-enable: no\n'
  } > "$conf"
  echo "$conf"
}

upstream_start() {
  local conf
  conf=$(unbound_conf upstream "  interface: $UPSTREAM@$DOT_PORT" "  tls-port: $DOT_PORT" \
    "  tls-service-key: \"$RUN/tls/server.key\"" "  tls-service-pem: \"$RUN/tls/server.pem\"" \
    "  module-config: \"iterator\"" "  incoming-num-tcp: 100" \
    '  local-zone: "miss.test." redirect' '  local-data: "miss.test. 300 IN A 192.0.2.1"')
  taskset -c "$LOAD_CPU" unbound -d -c "$conf" & PIDS+=($!)
  sleep 0.5
}

forwarder_start() {  # hushd|unbound
  local conf
  case $1 in
    hushd)
      conf=$RUN/hushd.toml
      mkdir -p "$RUN/blocklists"
      printf '[server]\nlisten = ["%s:%s"]\n[upstream]\nservers = ["tls://%s:%s#bench.test"]\nca_file = "%s"\n[cache]\nserve_stale_secs = 0\n[limits]\nmax_inflight = 4096\n[metrics]\nenabled = false\n[blocklists]\ndir = "%s/blocklists"\n' \
        "$HUSHD" "$DNS_PORT" "$UPSTREAM" "$DOT_PORT" "$RUN/tls/ca.pem" "$RUN" > "$conf"
      taskset -c "$DAEMON_CPU" "$HUSHD_BIN" --config "$conf" 2>"$RUN/hushd.log" & PIDS+=($!)
      ;;
    unbound)
      conf=$(unbound_conf forwarder "  interface: $UNBOUND@$DNS_PORT" \
        "  tls-cert-bundle: \"$RUN/tls/ca.pem\"" "  outgoing-num-tcp: 100" "  num-queries-per-thread: 4096" \
        "  qname-minimisation: no" '  local-zone: "test." nodefault' "  do-not-query-localhost: no" \
        "forward-zone:" '  name: "."' "  forward-addr: $UPSTREAM@$DOT_PORT#bench.test" "  forward-tls-upstream: yes")
      taskset -c "$DAEMON_CPU" unbound -d -c "$conf" & PIDS+=($!)
      ;;
  esac
  FORWARDER_PID=$!
  local addr; [[ $1 == hushd ]] && addr=$HUSHD || addr=$UNBOUND
  for _ in $(seq 50); do
    dig +short +time=1 +tries=1 -p "$DNS_PORT" @"$addr" warm.miss.test A >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$1 did not answer"
}

forwarder_stop() { kill "$FORWARDER_PID" 2>/dev/null || true; wait "$FORWARDER_PID" 2>/dev/null || true; sleep 0.3; }

# One round for one forwarder: fresh names, dnsperf over UDP; prints "qps loss_pct".
round() {  # PEER ROUND
  local addr; [[ $1 == hushd ]] && addr=$HUSHD || addr=$UNBOUND
  local names=$RUN/names-$1-$2.txt out=$RUN/dnsperf-$1-$2.txt
  seq 0 $((NAMES - 1)) | sed "s/.*/r$2-$1-n&.miss.test A/" > "$names"
  forwarder_start "$1"
  taskset -c "$LOAD_CPU" timeout $((LOAD_SECS + 30)) dnsperf -s "$addr" -p "$DNS_PORT" -d "$names" \
    -n 1 -l "$LOAD_SECS" -c "$CLIENTS" -q "$OUTSTANDING" -t 3 > "$out" 2>&1 || true
  forwarder_stop
  local sent done runtime
  sent=$(awk '/Queries sent:/ {print $3}' "$out")
  # answered means NOERROR, as in bench/run.sh: a forwarder that synthesises NXDOMAIN from a
  # cached parent (qname minimisation asks miss.test's parent first) must not score
  done=$(awk '/Response codes:/ {for (i = 1; i <= NF; i++) if ($i == "NOERROR") {v = $(i+1)}} END {print (v == "" ? 0 : v)}' "$out")
  runtime=$(awk '/Run time \(s\):/ {print $4}' "$out")
  [[ -n $sent && -n $done && -n $runtime ]] || die "no dnsperf figures in $out"
  awk -v s="$sent" -v d="$done" -v t="$runtime" 'BEGIN {printf "%.0f %.3f\n", d / t, (s - d) * 100 / s}'
}

command -v dig >/dev/null || die "dig not found (apt-get install -y bind9-dnsutils)"
log "run folder: $RUN"
certs
upstream_start
RESULTS=$RUN/dot-upstream.tsv
: > "$RESULTS"
for r in $(seq "$RUNS"); do
  for peer in hushd unbound; do
    read -r qps loss < <(round "$peer" "$r")
    log "round $r $peer: $qps q/s, loss $loss %"
    printf '%s\t%s\t%s\t%s\n' "$r" "$peer" "$qps" "$loss" >> "$RESULTS"
  done
done
h=$(awk '$2 == "hushd" {print $3}' "$RESULTS" | median)
u=$(awk '$2 == "unbound" {print $3}' "$RESULTS" | median)
hl=$(awk '$2 == "hushd" {print $4}' "$RESULTS" | median)
ul=$(awk '$2 == "unbound" {print $4}' "$RESULTS" | median)
{
  echo "# cache-miss forwarding through a DoT upstream (medians of $RUNS)"
  echo
  echo "| forwarder | QPS | loss % |"
  echo "|---|---|---|"
  echo "| hushd | $h | $hl |"
  echo "| unbound (forward-tls-upstream) | $u | $ul |"
  echo
  awk -v h="$h" -v u="$u" 'BEGIN {printf "hushd / unbound: %.2fx\n", h / u}'
  echo
  echo "dnsperf -c $CLIENTS -q $OUTSTANDING -l $LOAD_SECS, $NAMES fresh names a round; forwarder on CPU $DAEMON_CPU, load and upstream on CPU $LOAD_CPU."
} | tee "$RUN/dot-upstream.md"
