#!/usr/bin/env python3
"""Generate the benchmark's block lists and query files.

usage: gen.py OUTDIR [--sizes 1000,1000000] [--telemetry blocklists/xiaomi.toml] [--real 200]
                     [--queries 200000] [--allowed 10000] [--miss 1000000] [--seed 1]

Writes, for each list size N:
  OUTDIR/list-N.txt     N names, one per line: ~200 real telemetry names taken from hushd's own
                        Xiaomi list, then synthetic trackI.telemetry-block.test names. Every peer
                        converts this one file to its own format, so all enforce the same list.
  OUTDIR/queries-N.txt  dnsperf input ("name TYPE"): ~70% allowed names (hostI.example-allowed.test,
                        Zipf-distributed, so most are repeats a cache answers), ~30% blocked names
                        (half from a hot set, half uniform over the whole list, 5% of them as a
                        subdomain of a listed name), ~20% AAAA, the rest A.
  OUTDIR/queries-N.expect  the rcode each name of queries-N.txt must get (NXDOMAIN if listed, else
                        NOERROR), for rcodes.py: only those answers count as answered
and once:
  OUTDIR/queries-miss.txt  unique allowed names (every query is a cache miss, forwarded upstream),
                        and queries-miss.expect (all NOERROR).
"""
import argparse
import bisect
import itertools
import os
import random
import re

try:
    import tomllib
except ImportError:  # Python < 3.11: read the quoted names line by line
    tomllib = None


def telemetry_names(path, count, rnd):
    """Up to `count` distinct names from a hushd list file, in a fixed pseudo-random order."""
    with open(path, "rb") as f:
        raw = f.read()
    if tomllib:
        names = tomllib.loads(raw.decode())["domains"]
    else:
        names = re.findall(r'^\s*"([^"]+)"\s*,', raw.decode(), re.M)
    names = sorted({n.strip().rstrip(".").lower() for n in names if n.strip()})
    rnd.shuffle(names)
    return names[:count]


def zipf_cdf(n, s):
    weights = [1.0 / (i + 1) ** s for i in range(n)]
    total = sum(weights)
    return list(itertools.accumulate(w / total for w in weights))


def pick(cdf, items, rnd):
    return items[min(bisect.bisect_left(cdf, rnd.random()), len(items) - 1)]


def write_expect(path, expect, count):
    """The rcode file rcodes.py reads: each rcode's share of the query file, then NAME RCODE lines
    (none when every name gets the same rcode)."""
    total = sum(count.values())
    with open(path, "w") as f:
        f.write("# shares " + " ".join(f"{r}={c / total:.6f}" for r, c in count.items() if c) + "\n")
        f.writelines(f"{name} {rcode}\n" for name, rcode in expect.items())


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--sizes", default="1000,1000000")
    ap.add_argument("--telemetry", default=os.path.join(here, "..", "blocklists", "xiaomi.toml"))
    ap.add_argument("--real", type=int, default=200, help="real telemetry names per list")
    ap.add_argument("--queries", type=int, default=200000)
    ap.add_argument("--allowed", type=int, default=10000, help="distinct allowed names")
    ap.add_argument("--blocked-frac", type=float, default=0.30)
    ap.add_argument("--aaaa-frac", type=float, default=0.20)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--miss", type=int, default=1000000, help="unique names for the cache-miss run")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    rnd = random.Random(a.seed)

    real = telemetry_names(a.telemetry, a.real, rnd)
    allowed = [f"host{i}.example-allowed.test" for i in range(a.allowed)]
    rnd.shuffle(allowed)
    allowed_cdf = zipf_cdf(len(allowed), a.zipf)
    qtype = lambda: "AAAA" if rnd.random() < a.aaaa_frac else "A"

    for n in (int(x) for x in a.sizes.split(",")):
        listed = real[:n] + [f"track{i}.telemetry-block.test" for i in range(n - len(real[:n]))]
        with open(f"{a.outdir}/list-{n}.txt", "w") as f:
            f.write("\n".join(listed) + "\n")
        hot = listed[:200]  # a few names are asked for very often, as real telemetry is
        hot_cdf = zipf_cdf(len(hot), a.zipf)
        expect, count = {}, {"NOERROR": 0, "NXDOMAIN": 0}
        with open(f"{a.outdir}/queries-{n}.txt", "w") as f:
            for _ in range(a.queries):
                if rnd.random() < a.blocked_frac:
                    name = pick(hot_cdf, hot, rnd) if rnd.random() < 0.5 else rnd.choice(listed)
                    if rnd.random() < 0.05:
                        name = f"sub{rnd.randrange(100)}.{name}"
                    rcode = "NXDOMAIN"
                else:
                    name = pick(allowed_cdf, allowed, rnd)
                    rcode = "NOERROR"
                expect[name] = rcode
                count[rcode] += 1
                f.write(f"{name} {qtype()}\n")
        write_expect(f"{a.outdir}/queries-{n}.expect", expect, count)
        print(f"gen: list-{n}.txt ({len(real[:n])} real + {n - len(real[:n])} synthetic names), "
              f"queries-{n}.txt ({a.queries} queries)")

    with open(f"{a.outdir}/queries-miss.txt", "w") as f:
        for i in range(a.miss):
            f.write(f"miss{i}-{rnd.randrange(10**6)}.example-allowed.test {qtype()}\n")
    write_expect(f"{a.outdir}/queries-miss.expect", {}, {"NOERROR": a.miss})
    print(f"gen: queries-miss.txt ({a.miss} unique names)")


if __name__ == "__main__":
    main()
