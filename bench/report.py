#!/usr/bin/env python3
"""report.py RAW_TSV RESULTS_TSV: medians over runs, one row per daemon and list size.

Reads the per-run rows bench/run.sh wrote, writes RESULTS_TSV (full column names, plus `runs`: how
many runs gave a value) and prints the same as an aligned table. NA (not measured, or the daemon
failed that step) is left out of a median; a column with no value at all stays NA."""
import csv
import statistics
import sys

# (raw column, table heading, decimals)
COLUMNS = [
    ("qps", "qps", 0),
    ("cpu_pct", "cpu%", 0),
    ("cpu_us_per_query", "cpu_us", 2),
    ("p50_ms", "p50ms", 3),
    ("p99_ms", "p99ms", 3),
    ("rss_start_mib", "rssMiB", 1),
    ("rss_peak_mib", "peakMiB", 1),
    ("startup_s", "start_s", 3),
    ("reload_s", "edit_s", 3),
    ("reload_lost", "rl_lost", 0),
    ("reload_gap_ms", "rl_gapms", 1),
    ("miss_qps", "miss_qps", 0),
    ("miss_loss_pct", "miss_loss%", 2),
    ("nxdomain_pct", "nx%", 1),
    ("bad_rcodes", "bad_rc", 0),
]


def median(values):
    nums = [float(v) for v in values if v not in (None, "", "NA")]
    return (statistics.median(nums), len(nums)) if nums else (None, 0)


def main():
    raw_path, out_path = sys.argv[1], sys.argv[2]
    with open(raw_path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    groups = {}
    for r in rows:
        groups.setdefault((r["peer"], r["list"]), []).append(r)

    table = []
    for (peer, size), rs in groups.items():
        out = {"peer": peer, "list": size, "version": rs[0]["version"], "runs": len(rs)}
        for col, _, decimals in COLUMNS:
            m, _n = median(r[col] for r in rs)
            out[col] = "NA" if m is None else f"{m:.{decimals}f}"
        table.append(out)

    fields = ["peer", "list", "runs"] + [c for c, _, _ in COLUMNS] + ["version"]
    with open(out_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(table)

    heads = ["peer", "list", "runs"] + [h for _, h, _ in COLUMNS]
    cells = [[t["peer"], t["list"], str(t["runs"])] + [t[c] for c, _, _ in COLUMNS] for t in table]
    widths = [max(len(x) for x in col) for col in zip(heads, *cells)]
    line = lambda xs: "  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(xs, widths)))
    runs = max((t["runs"] for t in table), default=0)
    print(f"\nmedians of {runs} run(s); columns explained in bench/README.md; TSV: {out_path}")
    print(line(heads))
    for c in cells:
        print(line(c))
    for peer, version in dict((t["peer"], t["version"]) for t in table).items():
        print(f"  {peer}: {version}")
    for line in list_targets(table):
        print(line)
    return 0


def list_targets(table):
    """The targets for lists from anywhere, from the hushd-sub and hushd-patterns rows: the
    patterns' QPS against hushd's, start-up from a subscription's stored copy, peak memory."""
    rows = {(t["peer"], t["list"]): t for t in table}
    num = lambda t, c: None if t is None or t[c] == "NA" else float(t[c])
    verdict = lambda ok: "NA" if ok is None else ("ok" if ok else "MISSED")
    out = []
    for size in dict.fromkeys(t["list"] for t in table):
        base, sub, pat = (rows.get((p, size)) for p in ("hushd", "hushd-sub", "hushd-patterns"))
        if sub is None and pat is None:
            continue
        out.append(f"lists from anywhere, list {size}:")
        if pat is not None:
            q, q0 = num(pat, "qps"), num(base, "qps")
            ratio = None if q is None or not q0 else q / q0
            shown = "NA (needs the hushd row too)" if ratio is None else f"{ratio:.2f}"
            out.append(f"  qps hushd-patterns / hushd = {shown} (target >= 0.90): "
                       f"{verdict(None if ratio is None else ratio >= 0.9)}")
        if sub is not None:
            st = num(sub, "startup_s")
            out.append(f"  start_s hushd-sub = {sub['startup_s']} (target <= 0.5): "
                       f"{verdict(None if st is None else st <= 0.5)}")
        for t in (base, sub, pat):
            if t is not None:
                pk = num(t, "rss_peak_mib")
                out.append(f"  peakMiB {t['peer']} = {t['rss_peak_mib']} (target <= 64): "
                           f"{verdict(None if pk is None else pk <= 64)}")
    return out


if __name__ == "__main__":
    sys.exit(main())
