#!/usr/bin/env python3
"""gapprobe.py HOST PORT NAME SECONDS

Sends an A query for NAME every 5 ms for SECONDS (each waits up to 1 s for its answer) and prints
the longest time without any answer arriving ("service gap") and how many queries went unanswered.
Run around a reload: a daemon that stops answering while it loads a new list shows it here. With
no reload at all the gap is a few ms: the probe's own resolution plus scheduling noise."""
import random
import select
import socket
import struct
import sys
import time

host, port, name, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
qname = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect((host, port))
sock.setblocking(False)

pending = {}  # query id -> send time
answered = unanswered = 0
start = last_answer = last_sent = next_send = time.monotonic()
longest_gap = 0.0
while True:
    now = time.monotonic()
    sending = now - start < seconds
    if not sending and not pending:
        break
    if sending and now >= next_send:
        qid = random.randrange(65536)
        if qid not in pending:
            try:
                sock.send(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1))
                pending[qid] = last_sent = now
            except OSError:
                pass
        next_send += 0.005
    if select.select([sock], [], [], 0.001)[0]:
        while True:
            try:
                data = sock.recv(4096)
            except OSError:  # drained (or an ICMP error): back to sending
                break
            if len(data) >= 2 and pending.pop(struct.unpack(">H", data[:2])[0], None) is not None:
                t = time.monotonic()
                longest_gap = max(longest_gap, t - last_answer)
                last_answer = t
                answered += 1
    now = time.monotonic()
    for qid, sent in list(pending.items()):
        if now - sent > 1.0:
            del pending[qid]
            unanswered += 1
# A silence that lasted to the end of the run counts too.
longest_gap = max(longest_gap, last_sent - last_answer)
print(f"answered={answered} unanswered={unanswered} max_gap_ms={longest_gap * 1000:.1f}")
