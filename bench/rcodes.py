#!/usr/bin/env python3
"""rcodes.py EXPECT DNSPERF_OUTPUT [QUERY_FILE]: prints "ok wrong": how many answers had the rcode
the query file expects (ok) and how many had another (wrong: a SERVFAIL, say). Only ok answers
count as answered, so a daemon that fails fast does not score well.

EXPECT is the queries-*.expect file gen.py writes: "# shares NOERROR=0.7 NXDOMAIN=0.3", then
"NAME RCODE" lines (a name not listed expects the only rcode of the shares, if there is one).
With `dnsperf -v` output ("> RCODE name TYPE seconds" per answer) every answer is checked against
its name. Without it, from the summary: dnsperf sends the query file's lines in order (looping),
so the rcodes the first "Queries sent" lines expect are known; of each rcode at most that many
answers count. That is exact when no query was lost, and off by at most the lost ones."""
import re
import sys


def read_expect(path):
    shares, names = {}, {}
    with open(path) as f:
        for line in f:
            if line.startswith("# shares"):
                shares = {r: float(v) for r, v in (kv.split("=") for kv in line.split()[2:])}
            elif line.strip():
                name, rcode = line.split()
                names[name.rstrip(".").lower()] = rcode
    return shares, names


def from_verbose(lines, shares, names):
    default = next(iter(shares)) if len(shares) == 1 else None
    ok = wrong = 0
    for line in lines:
        if not line.startswith("> "):
            continue
        parts = line.split()
        if len(parts) < 3 or parts[1] in ("T", "I"):
            continue  # a timeout or an interrupted query: lost, not answered
        want = names.get(parts[2].rstrip(".").lower(), default)
        if parts[1] == want:
            ok += 1
        else:
            wrong += 1
    return ok, wrong


def expected_counts(query_file, sent, shares, names):
    """How many of the first `sent` queries dnsperf sends from `query_file` expect each rcode."""
    default = next(iter(shares)) if len(shares) == 1 else None
    with open(query_file) as f:
        wants = [names.get(line.split()[0].rstrip(".").lower(), default) for line in f if line.strip()]
    counts = {}
    if not wants:
        return counts
    passes, rest = divmod(sent, len(wants))
    for i, want in enumerate(wants):
        counts[want] = counts.get(want, 0) + passes + (1 if i < rest else 0)
    return counts


def from_summary(text, shares, names, query_file):
    sent = re.search(r"Queries sent:\s+(\d+)", text)
    completed = re.search(r"Queries completed:\s+(\d+)", text)
    codes = re.search(r"Response codes:(.*)", text)
    if not sent or not completed:
        return None
    completed = int(completed.group(1))
    got = {r: int(n) for r, n in re.findall(r"([A-Z]+) (\d+) \(", codes.group(1))} if codes else {}
    want = expected_counts(query_file, int(sent.group(1)), shares, names)
    ok = sum(min(got.get(r, 0), n) for r, n in want.items() if r is not None)
    return ok, completed - ok


def main():
    shares, names = read_expect(sys.argv[1])
    with open(sys.argv[2]) as f:
        text = f.read()
    if re.search(r"^> ", text, re.M):
        result = from_verbose(text.splitlines(), shares, names)
    else:
        query_file = sys.argv[3] if len(sys.argv) > 3 else re.sub(r"\.expect$", ".txt", sys.argv[1])
        result = from_summary(text, shares, names, query_file)
    print("NA NA" if result is None else f"{result[0]} {result[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
