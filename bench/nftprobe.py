#!/usr/bin/env python3
"""nftprobe.py HOST PORT NAMES_FILE RATE SET MODE

Asks HOST:PORT for each name of NAMES_FILE ("name A" lines) once, at RATE queries a second, and
notes when each answer (its A address) arrived. With MODE "on" it also follows the kernel's
element events (`nft monitor new elements`, so the timing is the kernel's, not a poll's) and
notes when each address first appears in SET ("family table set"). Prints one
summary line: answered, in_set, and how long after its answer an address appeared (max, p99),
in ms. Bounded: the names once, then at most 3 s of polling."""
import json
import socket
import struct
import subprocess
import sys
import threading
import time

host, port, names_file, rate, nft_set, mode = sys.argv[1:7]
port, rate = int(port), float(rate)
names = [l.split()[0] for l in open(names_file) if l.strip()]
answered = {}
seen = {}
done = threading.Event()
ready = threading.Event()


def poll():
    family, table, name = nft_set.split()
    prefix = f"add element {family} {table} {name} {{"
    monitor = subprocess.Popen(["nft", "monitor", "new", "elements"], stdout=subprocess.PIPE, text=True)
    ready.set()
    for line in monitor.stdout:
        now = time.time()
        if line.startswith(prefix):
            for part in line[len(prefix):].rstrip(" }\n").split(","):
                seen.setdefault(part.split()[0], now)
        if done.is_set():
            break
    monitor.kill()


def receive(sock):
    while not done.is_set():
        try:
            data = sock.recv(512)
        except socket.timeout:
            continue
        now = time.time()
        an = struct.unpack(">H", data[6:8])[0]
        if an and len(data) >= 4 and data[-6:-4] == b"\x00\x04":
            addr = ".".join(str(b) for b in data[-4:])
            answered.setdefault(addr, now)


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(0.2)
sock.connect((host, port))
threads = [threading.Thread(target=receive, args=(sock,), daemon=True)]
if mode == "on":
    threads.append(threading.Thread(target=poll, daemon=True))
for t in threads:
    t.start()
if mode == "on":
    ready.wait(5)
    time.sleep(0.3)  # the monitor subscribed
start = time.time()
for i, name in enumerate(names):
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    sock.send(struct.pack(">HHHHHH", i % 65536, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1))
    delay = start + (i + 1) / rate - time.time()
    if delay > 0:
        time.sleep(delay)
deadline = time.time() + 3
while time.time() < deadline and (mode != "on" or len(seen) < len(answered) or len(answered) < len(names)):
    time.sleep(0.1)
done.set()
lags = sorted((seen[a] - t) * 1000 for a, t in answered.items() if a in seen)
p99 = lags[int(len(lags) * 0.99) - 1] if lags else float("nan")
print(f"answered={len(answered)} in_set={sum(1 for a in answered if a in seen)} "
      f"lag_max_ms={max(lags) if lags else float('nan'):.0f} lag_p99_ms={p99:.0f}")
