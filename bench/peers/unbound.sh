# Unbound as a forwarding filter: every listed name becomes `local-zone: "NAME." always_nxdomain`
# (the name and all its subdomains). One thread, caches sized well above the query set.
# A list edit is applied with SIGHUP (what `unbound-control reload` does).
PEER_ADDR=$BENCH_NET.2

peer_prepare() {  # LIST
  awk '{printf "local-zone: \"%s.\" always_nxdomain\n", $0}' "$1" > "$PDIR/blocklist.conf"
  cat > "$PDIR/unbound.conf" <<C
server:
  interface: $PEER_ADDR@$PEER_PORT
  port: $PEER_PORT
  do-ip6: no
  username: ""
  chroot: ""
  directory: "$PDIR"
  pidfile: "$PDIR/unbound.pid"
  use-syslog: no
  logfile: "$PDIR/unbound.log"
  verbosity: 0
  num-threads: 1
  module-config: "iterator"
  do-not-query-localhost: no
  local-zone: "test." nodefault
  msg-cache-size: 16m
  rrset-cache-size: 32m
  access-control: 127.0.0.0/8 allow
  include: "$PDIR/blocklist.conf"
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: $UPSTREAM_ADDR@$UPSTREAM_PORT
C
}
peer_cmd()     { echo "unbound -d -c $PDIR/unbound.conf"; }
peer_add()     { echo "local-zone: \"$1.\" always_nxdomain" >> "$PDIR/blocklist.conf"; }
peer_reload()  { kill -HUP "$PEER_PID"; }
peer_version() { unbound -V | sed '1s/^Version /unbound /'; }
