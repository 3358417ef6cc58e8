#!/usr/bin/env python3
"""probe.py HOST PORT DEADLINE_S [--after FILE] NAME RCODE [NAME RCODE ...]

Asks HOST:PORT for NAME (type A) over and over, about every 2 ms, until the answer's rcode is RCODE
(NOERROR, NXDOMAIN, REFUSED, SERVFAIL or ANY); then does the same for the next pair. Prints the wall
clock (epoch seconds) at which the last pair was satisfied and exits 0; exits 1 after DEADLINE_S.

It prints "ready" once it is set up, so the caller can start it before the event it times and
subtract that event's own timestamp: interpreter start-up is then not part of the measurement.
With --after FILE it first asks for each NAME once (so the daemon has forwarded and cached it),
prints "ready BEFORE-RCODE...", and starts polling only once FILE exists: the caller makes the
change it times, notes the time, then creates FILE."""
import os
import random
import socket
import struct
import sys
import time

RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


def query(name):
    qid = random.randrange(65536)
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    return qid, struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)


def rcode_of(sock, name, wait=0.02):
    """The rcode of one answer to NAME, or None (no answer in time, or nobody listening)."""
    qid, packet = query(name)
    try:
        sock.send(packet)
        give_up = time.monotonic() + wait
        while time.monotonic() < give_up:
            data = sock.recv(4096)
            if len(data) >= 4 and struct.unpack(">H", data[:2])[0] == qid:
                return RCODES.get(data[3] & 0xF, str(data[3] & 0xF))
    except OSError:  # timeout, or ECONNREFUSED while the daemon is not up yet
        pass
    return None


def main():
    args = sys.argv[1:]
    host, port, deadline = args[0], int(args[1]), time.monotonic() + float(args[2])
    after = None
    if args[3] == "--after":
        after, args = args[4], args[:3] + args[5:]
    pairs = list(zip(args[3::2], args[4::2]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))  # connected: an ICMP "port unreachable" ends the wait at once
    sock.settimeout(0.02)
    if after:
        before = [rcode_of(sock, name, wait=2.0) or "none" for name, _ in pairs]
        print("ready", *before, flush=True)
        while not os.path.exists(after):
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.0005)
    else:
        print("ready", flush=True)
    for name, want in pairs:
        while True:
            got = rcode_of(sock, name)
            if got is not None and (want == "ANY" or got == want):
                break
            if time.monotonic() > deadline:
                print(f"probe: timeout waiting for {name} {want} (last answer: {got})", file=sys.stderr)
                return 1
            time.sleep(0.002)
    print(f"{time.time():.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
