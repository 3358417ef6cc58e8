# hushd: the daemon under test. The names go to blocklists/bench.txt, named by the list file
# blocklists/bench.toml (domains_file: the format hushd's docs give for big imported lists);
# hushd watches that folder and reloads by itself, so a list edit needs no signal.
PEER_ADDR=$BENCH_NET.4
HUSHD_BIN=${HUSHD_BIN:-$REPO/target/release/hushd}

peer_prepare() { hushd_prepare "$1"; }
hushd_prepare() {  # LIST (also used by the hushd-* variants)
  mkdir -p "$PDIR/blocklists"
  cp "$1" "$PDIR/blocklists/bench.txt"
  printf 'action = "block"\ndomains_file = "bench.txt"\n' > "$PDIR/blocklists/bench.toml"
  hushd_config
}
hushd_config() {  # $PDIR/hushd.toml
  cat > "$PDIR/hushd.toml" <<C
[server]
listen = ["$PEER_ADDR:$PEER_PORT"]
allow_clients = ["127.0.0.0/8"]

[upstream]
servers = ["$UPSTREAM_ADDR:$UPSTREAM_PORT"]

[metrics]
listen = "$PEER_ADDR:${HUSHD_METRICS_PORT:-9153}"

[blocklists]
dir = "blocklists"

[cache]
size = ${CACHE_ENTRIES:-100000}

# The peers keep no per-device record of matches; the evidence store's cost is measured on its
# own (bench/egress.sh --part evidence). With it on here, every blocked query of the flood is an
# event for the writer thread, which shares the daemon's one pinned CPU.
[evidence]
enabled = ${HUSHD_EVIDENCE:-false}
C
}
peer_cmd() { echo "$HUSHD_BIN --config $PDIR/hushd.toml"; }
# Edit as an editor saves: write the whole new file beside the old one (a hidden name, which
# hushd ignores) and rename it over.
peer_add() {  # NAME
  local f=$PDIR/blocklists/bench.txt
  { cat "$f"; printf '%s\n' "$1"; } > "$PDIR/blocklists/.bench.txt.new"
  mv -f "$PDIR/blocklists/.bench.txt.new" "$f"
}
peer_reload()  { :; }
peer_version() { "$HUSHD_BIN" --version || echo hushd; }
