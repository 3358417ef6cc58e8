# hushd with the benchmark's names as a subscription (a list with a `url`) that hushd can never
# download: its URL is a loopback port where nothing listens, and its last good copy, the names
# in hosts format (`0.0.0.0 NAME`), is put in the `[lists] state_dir` before the start, with a
# record (`.meta.toml`) saying it was fetched just now, so no download is even tried during the
# run. What it shows: start-up and memory when the big list comes from the stored copy of a
# subscription, as it does on every restart in the field.
# A subscription only changes by download, so the edit columns measure an edit of a small local
# list (blocklists/bench.toml with its domains_file, as for hushd) beside the subscription: each
# edit rebuilds the whole policy, the stored copy included.
# shellcheck source=hushd.sh
source "$HERE/peers/hushd.sh"
PEER_ADDR=$BENCH_NET.6
SUB_URL=http://127.0.0.1:9/bench.txt

peer_prepare() {  # LIST
  hushd_config
  printf '\n[lists]\nstate_dir = "state"\n' >> "$PDIR/hushd.toml"
  mkdir -p "$PDIR/blocklists" "$PDIR/state"
  printf '# local edits beside the subscription\n' > "$PDIR/blocklists/bench.txt"
  printf 'action = "block"\ndomains_file = "bench.txt"\n' > "$PDIR/blocklists/bench.toml"
  # Hosts entries block only the name itself where list formats know `match`; the other
  # daemons block the name and its subdomains, so say so (and leave it out where the key is
  # unknown: there every entry covers its subdomains).
  local list=$PDIR/blocklists/bench-sub.toml
  printf 'action = "block"\nurl = "%s"\nmatch = "subdomains"\n' "$SUB_URL" > "$list"
  if "$HUSHD_BIN" --config "$PDIR/hushd.toml" check 2>&1 | grep -q 'unknown field `match`'; then
    printf 'action = "block"\nurl = "%s"\n' "$SUB_URL" > "$list"
  fi
  # the stored copy and its record, as hushd's store writes them (src/lists/store.rs)
  sed 's/^/0.0.0.0 /' "$1" > "$PDIR/state/bench-sub.txt"
  printf 'url = "%s"\nchecked_unix = %s\nsha256 = "%s"\n' "$SUB_URL" "$(date +%s)" \
    "$(sha256sum < "$PDIR/state/bench-sub.txt" | cut -d' ' -f1)" > "$PDIR/state/bench-sub.meta.toml"
}
