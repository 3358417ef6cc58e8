#!/usr/bin/env python3
"""latpct.py < dnsperf-v-output: prints "p50_ms p99_ms answered" for the per-query latencies that
`dnsperf -v` prints ("> RCODE name TYPE seconds" lines); "NA NA 0" if there are none."""
import sys

lat = sorted(float(l.split()[-1]) for l in sys.stdin if l.startswith("> ") and l.split()[-1][0].isdigit())
if not lat:
    print("NA NA 0")
else:
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    print(f"{pct(0.50):.3f} {pct(0.99):.3f} {len(lat)}")
