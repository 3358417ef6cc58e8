#!/usr/bin/env bash
# How hushd's cache-hot QPS scales with cores: hushd pinned to one CPU (one UDP worker) against
# hushd free on every CPU (one SO_REUSEPORT socket and worker per core), alternating, with the
# same dnsperf load (-T 2, unpinned) on the same machine. Uses the data and the NSD upstream setup
# of bench/run.sh (run that once first, or pass --run to a folder it filled). Everything stays on
# 127.0.0.0/8; each load is bounded by -l.
#
# usage: bench/multicore.sh [--pairs N] [--secs S] [--run DIR] [--size 1000000]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
PAIRS=5 SECS=6 RUN=${RUN:-/tmp/hushd-bench} SIZE=1000000
while [[ $# -gt 0 ]]; do
  case $1 in
    --pairs) PAIRS=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --run) RUN=$2; shift ;;
    --size) SIZE=$2; shift ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
  shift
done
HUSHD_BIN=${HUSHD_BIN:-$REPO/target/release/hushd}
ADDR=127.0.53.6 PORT=5353 UP=127.0.53.1:5300
LIST=$RUN/data/list-$SIZE.txt QUERIES=$RUN/data/queries-$SIZE.txt
[[ -f $LIST && -f $QUERIES && -f $RUN/upstream/nsd.conf ]] || { echo "run bench/run.sh first (no data in $RUN)" >&2; exit 1; }
[[ -x $HUSHD_BIN ]] || { echo "no $HUSHD_BIN: cargo build --release" >&2; exit 1; }

D=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [[ -f $D/nsd.pid ]] && kill "$(cat "$D/nsd.pid")" 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
mkdir -p "$D/blocklists"
cp "$LIST" "$D/blocklists/bench.txt"
printf 'action = "block"\ndomains_file = "bench.txt"\n' > "$D/blocklists/bench.toml"
printf '[server]\nlisten = ["%s:%s"]\nallow_clients = ["127.0.0.0/8"]\n[upstream]\nservers = ["%s"]\n[metrics]\nenabled = false\n[blocklists]\ndir = "blocklists"\n[cache]\nsize = 100000\n' \
  "$ADDR" "$PORT" "$UP" > "$D/hushd.toml"
sed "s|pidfile: .*|pidfile: \"$D/nsd.pid\"|" "$RUN/upstream/nsd.conf" > "$D/nsd.conf"
nsd -c "$D/nsd.conf"
for _ in $(seq 100); do [[ -s $D/nsd.pid ]] && break; sleep 0.05; done

one() {  # PIN(yes|no) -> prints QPS
  if [[ $1 == yes ]]; then taskset -c 1 "$HUSHD_BIN" --config "$D/hushd.toml" 2>/dev/null & else "$HUSHD_BIN" --config "$D/hushd.toml" 2>/dev/null & fi
  local pid=$!; PIDS+=("$pid")
  for _ in $(seq 100); do dig +short +time=1 +tries=1 -p "$PORT" @"$ADDR" warm.example-allowed.test >/dev/null 2>&1 && break; sleep 0.05; done
  timeout $((SECS + 20)) dnsperf -s "$ADDR" -p "$PORT" -d "$QUERIES" -l 2 -c 8 -q 200 -T 2 >/dev/null 2>&1 || true
  timeout $((SECS + 20)) dnsperf -s "$ADDR" -p "$PORT" -d "$QUERIES" -l "$SECS" -c 8 -q 200 -T 2 2>&1 \
    | awk '/Queries per second/ {printf "%.0f", $4}'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
pinned=() free=()
for i in $(seq "$PAIRS"); do
  p=$(one yes); f=$(one no)
  echo "pair $i: pinned to 1 CPU $p q/s, all $(nproc) CPUs $f q/s"
  pinned+=("$p"); free+=("$f")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
mp=$(median "${pinned[@]}") mf=$(median "${free[@]}")
echo "median: pinned $mp q/s, all CPUs $mf q/s, ratio $(echo "scale=2; $mf / $mp" | bc)"
