#!/usr/bin/env bash
# hushd egress benchmark (issue figures for groups, answer inspection and nftables sets).
#
# usage: bench/egress.sh [--runs N] [--part groups|nft|evidence|all] [--run DIR]
#
# Part "groups" (no root needed): cache-hot QPS of three daemons, one at a time, pinned to one
# CPU, each asked by SOURCES dnsperf processes in parallel from their own loopback addresses
# (the devices) on the other CPU:
#   hushd         the 1000-name block list, no groups
#   hushd-groups  the same list plus 10 groups over 1000 named clients (every dnsperf source is
#                 a named client in one of them), per-group lists and actions, and answer
#                 inspection on: every answer's CNAME targets are matched and its addresses
#                 looked up in a list of 1000 `ips` ranges
#   unbound       the same list as local-zones
# Rounds alternate the daemons; the report gives each median and the ratios.
#
# Part "nft" (root: runs in a network namespace it creates): hushd with a list whose names are
# answered with 10 000 distinct addresses and whose `nft_sets` is a real set. A probe asks the
# 10 000 names at 1000/s while dnsperf keeps the cache-hot load on; a poller lists the set every
# 100 ms. Reports cache-hot QPS with and without the set feeding, and how long after its answer
# each address appeared in the set (max and p99).
#
# Part "evidence": cache-hot QPS of hushd with the evidence store on and the query log writing
# every query, against the same hushd with both off (a tenth of the names asked are in an audit
# list, so the store gets matches); then a 5 000 q/s run with both on: queries lost (dnsperf)
# and hushd_evidence_dropped_total / hushd_querylog_dropped_total, which must stay 0.
#
# Everything stays on 127.0.0.0/8 or inside the namespace; every load is bounded in time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
RUNS=3 PART=all RUN=${RUN:-/tmp/hushd-egress-bench}
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) RUNS=$2; shift ;;
    --part) PART=$2; shift ;;
    --run) RUN=$2; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
: "${LOAD_SECS:=10}" "${SOURCES:=2}" "${CLIENTS:=4}" "${OUTSTANDING:=100}"
: "${DAEMON_CPU:=1}" "${LOAD_CPU:=0}" "${NET:=127.0.56}" "${PORT:=5353}"
HUSHD_BIN=${HUSHD_BIN:-$REPO/target/release/hushd}
PY=${PY:-python3}
mkdir -p "$RUN"; RUN=$(cd "$RUN" && pwd)
log() { echo "[$(date +%H:%M:%S)] $*"; }
die() { echo "egress bench: $*" >&2; exit 1; }
for tool in dnsperf dnsmasq unbound taskset timeout; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y dnsperf dnsmasq unbound)"
done
[[ -x $HUSHD_BIN ]] || die "$HUSHD_BIN not built (cargo build --release)"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# The upstream: dnsmasq answering every name with 192.0.2.1 (and the nft part's names from a
# hosts file with one address each).
upstream_start() {  # ADDR [HOSTS_FILE]
  [[ -z ${UPSTREAM_UP:-} ]] || return 0
  UPSTREAM_UP=1
  local hosts=()
  [[ -n ${2:-} ]] && hosts=(--addn-hosts="$2")
  taskset -c "$LOAD_CPU" dnsmasq -k -p 5300 --listen-address="$1" --bind-interfaces --no-resolv \
    --no-hosts "${hosts[@]}" --address=/example.test/192.0.2.1 --local-ttl=3600 --cache-size=0 \
    --log-facility=/dev/null &
  PIDS+=($!)
  sleep 0.3
}

# 1000 names asked (cache-hot) and 1000 listed (blocked) names, as the main bench.
data() {
  mkdir -p "$RUN/data"
  seq 0 999 | sed 's/.*/host&.example.test A/' > "$RUN/data/queries.txt"
  seq 0 999 | sed 's/.*/tracker&.telemetry.test/' > "$RUN/data/list.txt"
}

hushd_config() {  # DIR ADDR EXTRA
  mkdir -p "$1/blocklists"
  cp "$RUN/data/list.txt" "$1/blocklists/bench.txt"
  printf 'action = "block"\ndomains_file = "bench.txt"\n' > "$1/blocklists/bench.toml"
  cat > "$1/hushd.toml" <<C
[server]
listen = ["$2:$PORT"]
allow_clients = ["127.0.0.0/8", "10.0.0.0/8"]

[upstream]
servers = ["${UPSTREAM:-$NET.1}:5300"]

[metrics]
${METRICS:-enabled = false}

[blocklists]
dir = "blocklists"

[cache]
size = 100000

[limits]
client_qps = 0   # the sources are load generators, not devices to protect the server from

$3
C
}

# 10 groups over 1000 named clients: client i is 127.0.(57 + i/250).(i%250 + 1), named
# device-i; group g holds clients g*100 .. g*100+99 by name, lists a subset and overrides one.
groups_extra() {
  local i g
  echo "[clients]"
  for i in $(seq 0 999); do echo "\"device-$i\" = \"127.0.$((57 + i / 250)).$((i % 250 + 1))\""; done
  for g in $(seq 0 9); do
    echo; echo "[[groups]]"; echo "name = \"segment-$g\""
    printf 'clients = ['
    for i in $(seq $((g * 100)) $((g * 100 + 99))); do printf '"device-%d", ' "$i"; done
    echo ']'
    echo 'lists = ["bench", "vendor", "addresses"]'
    echo 'actions = { vendor = "block" }'
  done
}
groups_lists() {  # DIR: an audit list of names and one of 1000 address ranges (inspection)
  printf 'action = "log"\ndomains = ["vendor.example"]\n' > "$1/blocklists/vendor.toml"
  for i in $(seq 0 999); do echo "10.$((i / 250)).$((i % 250)).0/24"; done > "$1/blocklists/addresses.txt"
  printf 'action = "log"\nips_file = "addresses.txt"\n' > "$1/blocklists/addresses.toml"
}

unbound_config() {  # DIR ADDR
  awk '{printf "local-zone: \"%s.\" always_nxdomain\n", $0}' "$RUN/data/list.txt" > "$1/blocklist.conf"
  cat > "$1/unbound.conf" <<C
server:
  interface: $2@$PORT
  port: $PORT
  do-ip6: no
  username: ""
  chroot: ""
  directory: "$1"
  pidfile: "$1/unbound.pid"
  use-syslog: no
  logfile: "$1/unbound.log"
  verbosity: 0
  num-threads: 1
  module-config: "iterator"
  do-not-query-localhost: no
  local-zone: "test." nodefault
  msg-cache-size: 16m
  rrset-cache-size: 32m
  access-control: 127.0.0.0/8 allow
  include: "$1/blocklist.conf"
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: $NET.1@5300
C
}

# SOURCES dnsperf processes at once, each from its own address, cache-hot; prints the summed
# QPS. Source k is 127.0.(56+k).1: device-0, -250 (and -500, -750 with SOURCES=4), each in
# a different group. Two sources keep the load generators within one CPU's reach.
load() {  # ADDR SECS
  local i pids=() total=0
  for i in $(seq 1 "$SOURCES"); do
    timeout $(( $2 + 20 )) taskset -c "$LOAD_CPU" dnsperf -s "$1" -p "$PORT" -a "127.0.$((56 + i)).1" \
      -d "$RUN/data/queries.txt" -l "$2" -n 2000 -c "$CLIENTS" -q "$OUTSTANDING" \
      > "$RUN/out.$i" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  for i in $(seq 1 "$SOURCES"); do
    total=$(awk -v t="$total" '/Queries per second:/ {t += $4} END {print t}' "$RUN/out.$i")
  done
  echo "$total"
}

daemon_start() {  # CMD... (pinned; waits until it answers)
  taskset -c "$DAEMON_CPU" "$@" > "$RUN/daemon.log" 2>&1 &
  DAEMON=$!
  PIDS+=("$DAEMON")
  for _ in $(seq 200); do
    dig +short +tries=1 +time=1 @"$ADDR" -p "$PORT" host1.example.test A 2>/dev/null | grep -q 192.0.2.1 && return 0
    sleep 0.05
  done
  die "daemon did not answer: $(tail -5 "$RUN/daemon.log")"
}
daemon_stop() { kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; }

part_groups() {
  data
  upstream_start "$NET.1"
  local peer dir
  for peer in hushd hushd-groups unbound; do
    dir=$RUN/$peer; rm -rf "$dir"; mkdir -p "$dir"
    case $peer in
      hushd) hushd_config "$dir" "$NET.4" "$EVIDENCE_OFF" ;;
      hushd-groups) hushd_config "$dir" "$NET.8" "$EVIDENCE_OFF
$(groups_extra)"; groups_lists "$dir" ;;
      unbound) unbound_config "$dir" "$NET.2" ;;
    esac
  done
  : > "$RUN/groups.tsv"
  for run in $(seq 1 "$RUNS"); do
    for peer in hushd hushd-groups unbound; do
      dir=$RUN/$peer
      case $peer in
        hushd) ADDR=$NET.4; daemon_start "$HUSHD_BIN" --config "$dir/hushd.toml" ;;
        hushd-groups) ADDR=$NET.8; daemon_start "$HUSHD_BIN" --config "$dir/hushd.toml" ;;
        unbound) ADDR=$NET.2; daemon_start unbound -d -c "$dir/unbound.conf" ;;
      esac
      load "$ADDR" 3 > /dev/null   # warm-up: every source's answers cached
      qps=$(load "$ADDR" "$LOAD_SECS")
      daemon_stop
      log "groups run $run $peer qps=$qps"
      printf '%s\t%s\t%s\n' "$run" "$peer" "$qps" >> "$RUN/groups.tsv"
    done
  done
  local h g u
  h=$(awk '$2=="hushd" {print $3}' "$RUN/groups.tsv" | median)
  g=$(awk '$2=="hushd-groups" {print $3}' "$RUN/groups.tsv" | median)
  u=$(awk '$2=="unbound" {print $3}' "$RUN/groups.tsv" | median)
  echo
  echo "cache-hot QPS, $SOURCES sources, medians of $RUNS: hushd $h, hushd-groups $g, unbound $u"
  echo "hushd-groups / hushd = $(awk -v a="$g" -v b="$h" 'BEGIN {printf "%.3f", a/b}')  (target >= 0.9)"
  echo "hushd-groups / unbound = $(awk -v a="$g" -v b="$u" 'BEGIN {printf "%.3f", a/b}')  (target >= 1.0)"
}

# --- nft: inside a network namespace (root) -------------------------------------------------
part_nft() {
  [[ $(id -u) == 0 ]] || die "the nft part needs root (a network namespace and nftables)"
  command -v nft >/dev/null || die "nft not found (apt-get install -y nftables)"
  if [[ -z ${IN_NETNS:-} ]]; then
    exec unshare -n env IN_NETNS=1 RUNS="$RUNS" "$0" --part nft --runs "$RUNS" --run "$RUN"
  fi
  ip link set lo up
  data
  # 10 000 names, each answered with its own address
  for i in $(seq 0 9999); do
    echo "10.$((i / 65536 % 256)).$((i / 256 % 256)).$((i % 256)) n$i.egress.test"
  done > "$RUN/data/hosts"
  sed 's/^[^ ]* //; s/$/ A/' "$RUN/data/hosts" > "$RUN/data/distinct.txt"
  upstream_start "$NET.1" "$RUN/data/hosts"
  nft -f - <<N
table inet hushd {
  set egress4 { type ipv4_addr; flags timeout; }
}
N
  : > "$RUN/nft.tsv"
  for run in $(seq 1 "$RUNS"); do
    for mode in off on; do
      nft flush set inet hushd egress4
      dir=$RUN/nft-$mode; rm -rf "$dir"; mkdir -p "$dir"
      hushd_config "$dir" "$NET.4" "$EVIDENCE_OFF"
      local sets=""
      [[ $mode == on ]] && sets='nft_sets = ["inet hushd egress4"]'
      printf 'action = "log"\ndomains = ["egress.test"]\n%s\n' "$sets" > "$dir/blocklists/egress.toml"
      ADDR=$NET.4; daemon_start "$HUSHD_BIN" --config "$dir/hushd.toml"
      load "$ADDR" 3 > /dev/null
      # the distinct names at 1000/s with a poller on the set, beside the cache-hot load
      taskset -c "$LOAD_CPU" "$PY" "$HERE/nftprobe.py" "$ADDR" "$PORT" "$RUN/data/distinct.txt" \
        1000 "inet hushd egress4" "$mode" > "$RUN/probe-$mode-$run.txt" &
      local probe=$!
      qps=$(load "$ADDR" "$LOAD_SECS")
      wait "$probe" || true
      daemon_stop
      log "nft run $run sets=$mode qps=$qps $(tail -1 "$RUN/probe-$mode-$run.txt")"
      printf '%s\t%s\t%s\t%s\n' "$run" "$mode" "$qps" "$(tail -1 "$RUN/probe-$mode-$run.txt")" >> "$RUN/nft.tsv"
    done
  done
  local off on
  off=$(awk '$2=="off" {print $3}' "$RUN/nft.tsv" | median)
  on=$(awk '$2=="on" {print $3}' "$RUN/nft.tsv" | median)
  echo
  echo "cache-hot QPS beside 10 000 distinct answers in 10 s, medians of $RUNS: sets off $off, sets on $on"
  echo "on / off = $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", a/b}')  (target >= 0.9)"
  grep -h . "$RUN"/probe-on-*.txt | tail -n "$RUNS"
}

EVIDENCE_OFF='[evidence]
enabled = false'

part_evidence() {
  data
  upstream_start "$NET.1"
  local mode dir run qps
  for mode in off on; do
    dir=$RUN/evidence-$mode; rm -rf "$dir"; mkdir -p "$dir"
    case $mode in
      off) METRICS="listen = \"$NET.9:9153\"" hushd_config "$dir" "$NET.9" "$EVIDENCE_OFF" ;;
      on) METRICS="listen = \"$NET.9:9153\"" hushd_config "$dir" "$NET.9" "[evidence]
enabled = true
path = \"$dir/evidence.db\"

[querylog]
enabled = true
path = \"$dir/queries.jsonl\"" ;;
    esac
    seq 0 99 | sed 's/.*/  "host&.example.test",/' | { printf 'action = "log"\ndomains = [\n'; cat; printf ']\n'; } \
      > "$dir/blocklists/audit.toml"
  done
  : > "$RUN/evidence.tsv"
  ADDR=$NET.9
  for run in $(seq 1 "$RUNS"); do
    for mode in off on; do
      daemon_start "$HUSHD_BIN" --config "$RUN/evidence-$mode/hushd.toml"
      load "$ADDR" 3 > /dev/null
      qps=$(load "$ADDR" "$LOAD_SECS")
      daemon_stop
      log "evidence run $run $mode qps=$qps"
      printf '%s\t%s\t%s\n' "$run" "$mode" "$qps" >> "$RUN/evidence.tsv"
    done
  done
  daemon_start "$HUSHD_BIN" --config "$RUN/evidence-on/hushd.toml"
  timeout 40 taskset -c "$LOAD_CPU" dnsperf -s "$ADDR" -p "$PORT" -d "$RUN/data/queries.txt" -l 10 -n 100 \
    -Q 5000 -c 4 > "$RUN/evidence-5000.txt" 2>&1 || true
  sleep 6   # one flush_secs and more
  local metrics lost
  metrics=$(curl -s "http://$NET.9:9153/metrics" || true)
  lost=$(awk '/Queries lost:/ {print $3}' "$RUN/evidence-5000.txt")
  daemon_stop
  local off on
  off=$(awk '$2=="off" {print $3}' "$RUN/evidence.tsv" | median)
  on=$(awk '$2=="on" {print $3}' "$RUN/evidence.tsv" | median)
  echo
  echo "cache-hot QPS, medians of $RUNS: evidence and query log off $off, both on $on"
  echo "on / off = $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", a/b}')  (target >= 0.9)"
  echo "at 5000 q/s for 10 s with both on: queries lost $lost; $(echo "$metrics" | grep -E '^hushd_(evidence|querylog)_dropped_total' | tr '\n' ' ')"
  echo "query log lines: $(cat "$RUN"/evidence-on/queries.jsonl* 2>/dev/null | wc -l); evidence rows: $(command -v sqlite3 >/dev/null && sqlite3 "$RUN/evidence-on/evidence.db" 'select count(*) from evidence' || echo '(sqlite3 not installed)')"
}

case $PART in
  groups) part_groups ;;
  nft) part_nft ;;
  evidence) part_evidence ;;
  all) part_groups; part_evidence; "$0" --part nft --runs "$RUNS" --run "$RUN" ;;
  *) die "--part groups|nft|evidence|all" ;;
esac
