#!/usr/bin/env python3
"""ddwatch.py URL APIKEY STOPFILE DEADLINE_S

Polls dnsdist's API (URL, e.g. http://127.0.55.10:8083/api/v1/servers/localhost) about every
10 ms and prints one line per backend state change: "EPOCH_SECONDS NAME STATE" (STATE as dnsdist
gives it: up, down, or UP/DOWN when set by hand), the first poll's states included. Stops when
STOPFILE exists or after DEADLINE_S. The caller compares the time a backend turned "down" with
the time it stopped that backend: how long dnsdist took to notice."""
import json
import os
import sys
import time
import urllib.request


def states(url, key):
    req = urllib.request.Request(url, headers={"X-API-Key": key})
    with urllib.request.urlopen(req, timeout=0.5) as resp:
        doc = json.load(resp)
    return {s["name"]: s["state"] for s in doc.get("servers", [])}


def main():
    url, key, stop, deadline = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    give_up = time.monotonic() + deadline
    seen = {}
    print("ready", flush=True)
    while not os.path.exists(stop) and time.monotonic() < give_up:
        try:
            now = states(url, key)
        except (OSError, ValueError):  # dnsdist busy or not up yet: try again
            time.sleep(0.01)
            continue
        stamp = time.time()
        for name, state in sorted(now.items()):
            if seen.get(name) != state:
                print(f"{stamp:.6f} {name} {state}", flush=True)
                seen[name] = state
        time.sleep(0.01)
    return 0


if __name__ == "__main__":
    sys.exit(main())
