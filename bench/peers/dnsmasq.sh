# dnsmasq as a forwarding filter: every listed name becomes `server=/NAME/` in a servers-file
# (no server address: the name and all its subdomains are answered locally, NXDOMAIN, and never
# forwarded). `address=/NAME/` would block the same way, but only a servers-file is re-read on
# SIGHUP, which is how a list edit is applied here. SIGHUP also empties dnsmasq's cache.
PEER_ADDR=$BENCH_NET.3

peer_prepare() {  # LIST
  sed 's|.*|server=/&/|' "$1" > "$PDIR/blocklist.servers"
}
peer_cmd() {
  echo "dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll" \
       "--listen-address=$PEER_ADDR --port=$PEER_PORT --bind-interfaces" \
       "--server=$UPSTREAM_ADDR#$UPSTREAM_PORT --servers-file=$PDIR/blocklist.servers" \
       "--cache-size=${DNSMASQ_CACHE:-10000} --dns-forward-max=1000" \
       "--pid-file=$PDIR/dnsmasq.pid --log-facility=$PDIR/dnsmasq.log --user=$(id -un)"
}
peer_add()     { echo "server=/$1/" >> "$PDIR/blocklist.servers"; }
peer_reload()  { kill -HUP "$PEER_PID"; }
peer_version() { dnsmasq --version | sed '1s/^Dnsmasq version \([^ ]*\).*/dnsmasq \1/'; }
