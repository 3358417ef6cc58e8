#!/usr/bin/env python3
"""Generate the benchmark's block lists and query files.

usage: gen.py OUTDIR [--sizes 1000,1000000] [--telemetry blocklists/xiaomi.toml] [--real 200]
                     [--queries 200000] [--allowed 10000] [--miss 1000000] [--patterns 1000] [--seed 1]

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
  OUTDIR/patterns.txt   regular expressions, one a line, in the shapes of Pi-hole's and Blocky's
                        regex lists (anchors, alternations, classes, counted repeats), on the
                        lower-case name without final dot; none matches any name the benchmark
                        asks for (checked here), so every query pays the full pattern scan and
                        every answer stays what the .expect files say.
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


# Made-up ad-network words: none is part of a name the benchmark asks for.
AD_WORDS = ["adzerk", "adnxs", "bidswitch", "pubmatic", "openx", "criteo", "taboola", "outbrain",
            "mgid", "revcontent", "smartadserver", "yieldmo", "sovrn", "teads", "adform", "spotx",
            "zemanta", "adcolony", "vungle", "inmobi", "mopub", "chartboost", "applovin", "unityads"]
PATTERN_SHAPES = [
    r"^ads?[0-9]*\.{w}{n}\.example$",
    r"^(pixel|beacon|collect|events?)[0-9]{{0,3}}\.{w}{n}\.(com|net|io)$",
    r"(^|\.){w}{n}-(analytics|metrics|telemetry)\.[a-z]{{2,6}}$",
    r"^[a-z0-9-]+\.{w}cdn{n}\.(net|com)$",
    r"^([a-z]{{2,8}}\.)?(ad)?serv(er|ing)?[0-9]*\.{w}{n}\.",
    r"^{w}[0-9]{{1,4}}\.(ads|adserver|banners?){n}\.",
    r"\.{w}-{n}\.(example|invalid)$",
    r"^[0-9a-f]{{8}}\.{w}{n}\.[a-z]+$",
    r"^(www\.)?{w}{n}\.(co|com?)\.[a-z]{{2}}$",
    r"^rtb[0-9]*[_.-]{w}{n}x[0-9]*\.",
    r"[_.-]{w}{n}[_.-](sync|match|ssp|dsp)\.",
    r"^(ad|ads|adv|banner)[sxv]?[0-9]*[_.-]{w}{n}[_.-]",
]


def patterns(count, asked, rnd):
    """`count` distinct regexes, none of which matches a name in `asked` (names the benchmark
    queries, or samples of each synthetic shape): the shapes only use the common subset of
    Python's and Rust's regex syntax, so this check holds for hushd too."""
    out, seen = [], set()
    for _ in range(count * 10):  # bounded: 24 words x 1000 numbers per shape is plenty
        if len(out) == count:
            break
        shape = PATTERN_SHAPES[len(out) % len(PATTERN_SHAPES)]
        p = shape.format(w=rnd.choice(AD_WORDS), n=rnd.randrange(1000))
        if p in seen:
            continue
        rx = re.compile(p)
        hit = next((a for a in asked if rx.search(a)), None)
        if hit is not None:
            raise SystemExit(f"gen: pattern {p!r} matches the benchmark's name {hit!r}")
        seen.add(p)
        out.append(p)
    if len(out) < count:
        raise SystemExit(f"gen: only {len(out)} distinct patterns of {count}")
    return out


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
    ap.add_argument("--patterns", type=int, default=1000, help="regexes for hushd-patterns")
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

    # Every shape of name the benchmark asks for: the real ones, their subdomains, and samples of
    # each synthetic kind (the patterns' words and anchors never meet their fixed parts).
    asked = real + [f"sub{i}.{r}" for i, r in enumerate(real)]
    for i in list(range(0, 10)) + list(range(10, a.allowed, 97)):
        asked += [f"host{i}.example-allowed.test", f"track{i}.telemetry-block.test",
                  f"sub{i % 100}.track{i}.telemetry-block.test", f"new{i}{i}.telemetry-block.test",
                  f"miss{i}-{i * 7919 % 10**6}.example-allowed.test"]
    with open(f"{a.outdir}/patterns.txt", "w") as f:
        f.writelines(p + "\n" for p in patterns(a.patterns, asked, random.Random(a.seed)))
    print(f"gen: patterns.txt ({a.patterns} regexes, none matching a queried name)")


if __name__ == "__main__":
    main()
