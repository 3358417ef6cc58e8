#!/usr/bin/env python3
"""cpurounds.py CPU_TSV PEERS: the summary of bench/run.sh --only cpu.

CPU_TSV has one row per round and peer (CPU time per answered query at the fixed rate). For each
list size it prints each peer's median, lowest and highest figure and, for every peer after the
first in PEERS (comma-separated), the first peer's figure divided by that peer's, taken round by
round (both measured seconds apart), with the median of those ratios and how many were below 1.
A round where either figure is NA, or where a peer gave answers with the wrong rcode, is left out
of the ratios."""
import csv
import statistics
import sys


def main() -> None:
    path, peers = sys.argv[1], sys.argv[2].split(",")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for size in dict.fromkeys(r["list"] for r in rows):
        figures: dict[str, dict[str, float]] = {p: {} for p in peers}
        for r in rows:
            if r["list"] != size or r["cpu_us_per_query"] == "NA" or r["bad_rcodes"] not in ("0", ""):
                continue
            figures.setdefault(r["peer"], {})[r["round"]] = float(r["cpu_us_per_query"])
        rounds = len({r["round"] for r in rows if r["list"] == size})
        print(f"\nCPU time per answered query (us), list {size}, {rounds} rounds")
        print(f"{'peer':<16}{'median':>8}{'min':>8}{'max':>8}{'rounds':>8}")
        for peer in peers:
            v = list(figures.get(peer, {}).values())
            if v:
                print(f"{peer:<16}{statistics.median(v):>8.2f}{min(v):>8.2f}{max(v):>8.2f}{len(v):>8}")
            else:
                print(f"{peer:<16}{'NA':>8}")
        first = peers[0]
        for peer in peers[1:]:
            both = sorted(set(figures.get(first, {})) & set(figures.get(peer, {})), key=int)
            ratios = [figures[first][r] / figures[peer][r] for r in both]
            if not ratios:
                print(f"{first} / {peer}: NA (no round with both)")
                continue
            below = sum(1 for x in ratios if x < 1)
            print(
                f"{first} / {peer}: median {statistics.median(ratios):.3f} over {len(ratios)} rounds, "
                f"{below} below 1 (per round: {' '.join(f'{x:.3f}' for x in ratios)})"
            )


if __name__ == "__main__":
    main()
