# hushd with the same list as `hushd` plus a second list of regular-expression `patterns`
# (gen.py's patterns.txt, 1000 by default): Pi-hole- and Blocky-like shapes that match none of
# the names the benchmark asks for, so every answer is the same as hushd's and every query that
# is not a listed name pays for the whole pattern scan. Compare its qps, cpu_us and p99 with
# hushd's row: the cost of the patterns.
# shellcheck source=hushd.sh
source "$HERE/peers/hushd.sh"
PEER_ADDR=$BENCH_NET.7

peer_prepare() {  # LIST
  hushd_prepare "$1"
  # TOML literal strings ('...'): a regex's backslashes stay as written
  { printf 'action = "block"\npatterns = [\n'
    sed "s/.*/  '&',/" "$RUN/data/patterns.txt"
    printf ']\n'; } > "$PDIR/blocklists/patterns.toml"
}
