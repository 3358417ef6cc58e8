# The floor: udp-floor, a trivial tokio UDP responder (no list, cache or upstream; names under
# example-allowed.test get NOERROR, all others NXDOMAIN). A list edit changes nothing, so its
# startup and reload figures are the harness's own resolution, and its miss run never forwards.
PEER_ADDR=$BENCH_NET.5
FLOOR_BIN=${FLOOR_BIN:-$RUN/udp-floor-target/release/udp-floor}

peer_prepare() { :; }
peer_cmd()     { echo "$FLOOR_BIN $PEER_ADDR:$PEER_PORT"; }
peer_add()     { :; }
peer_reload()  { :; }
peer_version() { echo "udp-floor (tokio $(awk '/^name = "tokio"$/{getline; gsub(/[^0-9.]/, ""); print}' "$HERE/udp-floor/Cargo.lock"))"; }
