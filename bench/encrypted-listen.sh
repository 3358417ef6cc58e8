#!/usr/bin/env bash
# Encrypted listeners: DoT and DoH queries per second, cache-hot, hushd beside Unbound
# (`tls-port` / `https-port`, the same certificate), medians of N alternating rounds.
# Both forward to one Unbound on loopback serving the query names itself (local-data), so the
# figures are the listeners' own; each server is warmed before it is measured.
#
# usage: bench/encrypted-listen.sh [--part listeners] [--quick] [--runs N] [--secs S] [--run DIR]
#        (HUSHD_BIN: the hushd to measure, default target/release/hushd; DAEMON_CPU / LOAD_CPU pin)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

PART=listeners RUNS=3 SECS=10 RUN=${RUN:-/tmp/hushd-bench-encrypted}
while [[ $# -gt 0 ]]; do
  case $1 in
    --part) PART=$2; shift ;;
    --quick) RUNS=1 SECS=3 ;;
    --runs) RUNS=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --run) RUN=$2; shift ;;
    -h|--help) usage ;;
    *) echo "unknown option: $1" >&2; usage 2 >&2 ;;
  esac
  shift
done
[[ $PART == listeners ]] || { echo "--part takes: listeners" >&2; exit 2; }
[[ $RUNS =~ ^[1-9][0-9]*$ && $SECS =~ ^[1-9][0-9]*$ ]] || { echo "--runs and --secs take numbers >= 1" >&2; exit 2; }
: "${DAEMON_CPU:=1}" "${LOAD_CPU:=0}" "${CLIENTS:=8}"
HUSHD_BIN=${HUSHD_BIN:-$REPO/target/release/hushd}
die() { echo "encrypted-listen: $*" >&2; exit 1; }
for tool in dnsperf unbound openssl taskset timeout; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y dnsperf unbound openssl)"
done
[[ -x $HUSHD_BIN ]] || die "no hushd binary: run 'cargo build --release' or set HUSHD_BIN"

rm -rf "$RUN" && mkdir -p "$RUN"
cd "$RUN"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# ports on 127.0.0.1
UP=25353 H_DNS=25354 H_DOT=25853 H_DOH=25443 U_DOT=26853 U_DOH=26443

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout key.pem -out cert.pem -subj /CN=dns.bench \
  -addext "subjectAltName=DNS:dns.bench,IP:127.0.0.1" 2>/dev/null

# the upstream: 200 names it answers itself; the query file asks each
{
  echo 'server:'
  echo "  interface: 127.0.0.1@$UP"
  echo '  username: ""'; echo '  chroot: ""'; echo "  directory: \"$RUN\""; echo '  pidfile: ""'
  echo '  use-syslog: no'; echo '  do-daemonize: no'; echo '  verbosity: 0'; echo '  num-threads: 1'
  echo '  access-control: 127.0.0.0/8 allow'
  echo '  local-zone: "bench." static'
  for i in $(seq 1 200); do echo "  local-data: \"q$i.bench. 3600 IN A 192.0.2.$((i % 250 + 1))\""; done
} > upstream.conf
for i in $(seq 1 200); do echo "q$i.bench A"; done > queries.txt

mkdir -p blocklists
cat > hushd.toml <<C
[server]
listen = ["127.0.0.1:$H_DNS"]
tls_listen = ["127.0.0.1:$H_DOT"]
https_listen = ["127.0.0.1:$H_DOH"]
cert_file = "$RUN/cert.pem"
key_file = "$RUN/key.pem"
[upstream]
servers = ["127.0.0.1:$UP"]
[metrics]
enabled = false
[blocklists]
dir = "blocklists"
[evidence]
enabled = false
[limits]
client_qps = 0
C

cat > peer.conf <<C
server:
  interface: 127.0.0.1@$U_DOT
  interface: 127.0.0.1@$U_DOH
  tls-port: $U_DOT
  https-port: $U_DOH
  tls-service-key: "$RUN/key.pem"
  tls-service-pem: "$RUN/cert.pem"
  username: ""
  chroot: ""
  directory: "$RUN"
  pidfile: ""
  use-syslog: no
  do-daemonize: no
  verbosity: 0
  num-threads: 1
  module-config: "iterator"
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  msg-cache-size: 16m
  rrset-cache-size: 32m
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$UP
C

unbound -c upstream.conf > upstream.log 2>&1 & PIDS+=($!)
taskset -c "$DAEMON_CPU" "$HUSHD_BIN" --config hushd.toml > hushd.log 2>&1 & PIDS+=($!)
taskset -c "$DAEMON_CPU" unbound -c peer.conf > peer.log 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do grep -q "hushd ready" hushd.log && break; sleep 0.1; done
grep -q "hushd ready" hushd.log || die "hushd did not start: $(tail -5 hushd.log)"
sleep 0.5

# qps MODE PORT SECONDS -> "qps lost"
qps() {
  local mode=$1 port=$2 secs=$3 extra=()
  [[ $mode == doh ]] && extra=(-O "doh-uri=https://127.0.0.1:$port/dns-query")
  local out
  out=$(timeout $((secs + 30)) taskset -c "$LOAD_CPU" dnsperf -m "$mode" -s 127.0.0.1 -p "$port" \
        -d queries.txt -c "$CLIENTS" -l "$secs" "${extra[@]}" 2>&1) || true
  echo "$out" >> dnsperf.log
  local q l
  q=$(awk '/Queries per second:/ {print $4}' <<<"$out")
  l=$(awk '/Queries lost:/ {print $3}' <<<"$out")
  echo "${q:-0} ${l:-?}"
}
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

declare -A RESULTS LOST
for mode in dot doh; do
  for server in hushd unbound; do
    port=$([[ $server == hushd ]] && { [[ $mode == dot ]] && echo $H_DOT || echo $H_DOH; } \
                                  || { [[ $mode == dot ]] && echo $U_DOT || echo $U_DOH; })
    qps "$mode" "$port" 1 > /dev/null   # warm: every name cached
  done
  for round in $(seq 1 "$RUNS"); do
    for server in hushd unbound; do
      port=$([[ $server == hushd ]] && { [[ $mode == dot ]] && echo $H_DOT || echo $H_DOH; } \
                                    || { [[ $mode == dot ]] && echo $U_DOT || echo $U_DOH; })
      read -r q l < <(qps "$mode" "$port" "$SECS")
      RESULTS[$mode.$server]+="$q "
      LOST[$mode.$server]+="$l "
      echo "round $round $mode $server: $q q/s, lost $l" >&2
    done
  done
done

{
  echo "# Encrypted listeners, cache-hot ($(date -u +%F), $RUNS rounds of ${SECS}s, dnsperf -c $CLIENTS)"
  echo
  echo "hushd: $("$HUSHD_BIN" --version 2>/dev/null || echo hushd); $(unbound -V | head -1); $(dnsperf -h 2>&1 | grep -m1 -i version || true)"
  echo
  echo "| mode | hushd q/s (median) | Unbound q/s (median) | ratio | hushd lost per round | Unbound lost per round |"
  echo "|---|---|---|---|---|---|"
  for mode in dot doh; do
    h=$(tr ' ' '\n' <<<"${RESULTS[$mode.hushd]}" | grep . | median)
    u=$(tr ' ' '\n' <<<"${RESULTS[$mode.unbound]}" | grep . | median)
    ratio=$(awk -v h="$h" -v u="$u" 'BEGIN { if (u > 0) printf "%.2f", h / u; else print "-" }')
    echo "| $mode | $h | $u | $ratio | ${LOST[$mode.hushd]}| ${LOST[$mode.unbound]}|"
  done
} | tee results.md
