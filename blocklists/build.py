#!/usr/bin/env python3
"""Builds a hushd list file (blocklists/<vendor>.toml) from a compiled vendor list.

Usage: python3 blocklists/build.py SOURCE.txt [SOURCE.txt ...] [--out DIR]

A compiled list is plain text, one name per line, in sections:

    # <header comments: title, totals, notes>
    #
    # Source A: <repository>, path <file>
    #   <source comments: snapshot, License: ..., format, upstream version>
    name
    name
    #   (N new entries from this source)
    #
    # Source B: ...

The list's name is the file stem (vendor). The TOML keeps every comment of the compiled
list verbatim in its header (so every source's name, location, license and version travels
with the entries) and repeats each source's name, location and license before its group of
entries, so any entry can be traced to its source and license (GPL-3.0 entries stay
recognisably GPL-3.0). Entries hushd should not ship are dropped only through DROPPED below,
each with the reason, which is written into the file's header.

Python 3 standard library only; the generated files are committed, and hushd and its tests
never run this script.
"""

import argparse
import pathlib
import re
import sys

# vendor -> (title, description, action). Only xiaomi blocks on a fresh install; every other
# vendor list is audit-only, so a new install gathers evidence without breaking any device.
VENDORS = {
    "xiaomi": ("Xiaomi / MIUI telemetry and tracking", "Xiaomi / MIUI telemetry and tracking", "block"),
    "samsung": ("Samsung telemetry, ads and ACR", "Samsung phone and TV telemetry, ads and ACR", "log"),
    "huawei": ("Huawei / HarmonyOS telemetry and tracking", "Huawei / HarmonyOS telemetry and tracking", "log"),
    "apple": ("Apple telemetry, diagnostics and ads", "Apple telemetry, diagnostics and ads", "log"),
    "amazon": ("Amazon devices (Fire TV, Echo, Kindle) telemetry and ads", "Amazon device telemetry and ads", "log"),
    "windows": ("Windows / Office telemetry", "Windows and Office telemetry", "log"),
    "tiktok": ("TikTok fingerprinting and tracking", "TikTok fingerprinting and tracking", "log"),
    "lgwebos": ("LG webOS TV telemetry, ads and ACR", "LG webOS TV telemetry, ads and ACR", "log"),
    "roku": ("Roku telemetry and ads", "Roku telemetry and ads", "log"),
    "oppo-realme": ("OPPO / Realme / OnePlus (ColorOS, HeyTap) telemetry and ads",
                    "OPPO / Realme (ColorOS, HeyTap) telemetry and ads", "log"),
    "vivo": ("Vivo telemetry and tracking", "Vivo telemetry and tracking", "log"),
}

# (vendor, name) -> why it is left out. hushd matches every subdomain of a listed name, so a
# bare registrable domain that is not the vendor's own would block (or, in audit mode, count
# under this vendor) far more than the vendor's telemetry.
DROPPED = {
    ("samsung", "demdex.net"): [
        "Adobe Experience Cloud's domain, used by many sites that are not Samsung's:",
        "listed bare it would block all of them, and in audit mode it would count every",
        "visit to any Adobe-tracked site as Samsung telemetry. Samsung's own demdex",
        "names (samsung.demdex.net, samsungeu.demdex.net, ...) stay in the list.",
    ],
    ("windows", "msedge.net"): [
        "Microsoft's Azure Front Door domain, serving many Microsoft 365 and Windows",
        "names besides telemetry. WindowsSpyBlocker lists it in hosts format, which",
        "blocks that one exact name; in hushd a listed name matches all its subdomains,",
        "so it would reach every *.msedge.net service. The telemetry name",
        "win10-trt.msedge.net stays in the list.",
    ],
}

SOURCE = re.compile(r"^# Source [A-Z]+: ")
NEW_ENTRIES = re.compile(r"^#   \((\d+) new entries from this source\)$")

ACTION_TEXT = {
    "block": [
        '# Shipped with action = "block": this is the one vendor list hushd blocks on a fresh',
        '# install. Every other shipped vendor list is action = "log" (audit only). If a Xiaomi',
        "# device stops updating, syncing or receiving push after you install hushd, see the",
        "# commented xiaomi entries in allow.toml.",
    ],
    "log": [
        '# Shipped with action = "log" (audit only): hushd forwards these lookups as normal and',
        '# logs and counts each match (hushd_list_matches_total{{list="{vendor}",action="log"}}),',
        "# so a fresh install gathers evidence without breaking any device. Before you change",
        '# it to "block", look for commented {vendor} entries in allow.toml: names whose block',
        "# is reported to break updates, push, sign-in or sync (no entry: no report found).",
    ],
}


class Section:
    def __init__(self, header):
        self.header = header  # comment lines, the "# Source" line first
        self.names = []
        self.trailer = []  # "(N new entries ...)" and the "#" separator

    def group_comment(self):
        """The source's name, location and license: its lines up to the License line."""
        lines = []
        for line in self.header:
            lines.append(line)
            if line.startswith("#   License:"):
                return lines
        sys.exit(f"source {self.header[0]!r} has no License line")


def parse(text):
    """Splits a compiled list into its leading comments and its sources."""
    preamble, sections = [], []
    for line in text.splitlines():
        if SOURCE.match(line):
            sections.append(Section([line]))
        elif not sections:
            if not line.startswith("#"):
                sys.exit(f"a name before any source: {line!r}")
            preamble.append(line)
        elif line.startswith("#"):
            current = sections[-1]
            (current.trailer if current.names else current.header).append(line)
        elif line.strip():
            current = sections[-1]
            if current.trailer:
                sys.exit(f"a name after its source's count line: {line!r}")
            current.names.append(line.strip())
    return preamble, sections


def check(vendor, preamble, sections):
    names = [n for s in sections for n in s.names]
    if len(set(names)) != len(names):
        sys.exit(f"{vendor}: duplicate names across sources")
    for line in preamble:
        m = re.match(r"^# Total unique domains: (\d+)$", line)
        if m and int(m.group(1)) != len(names):
            sys.exit(f"{vendor}: header says {m.group(1)} names, found {len(names)}")
    for s in sections:
        counts = [int(m.group(1)) for m in map(NEW_ENTRIES.match, s.trailer) if m]
        if counts != [len(s.names)]:
            sys.exit(f"{vendor}: {s.header[0]!r} counts {counts}, has {len(s.names)} names")


def redundant_example(names):
    """A listed name under another listed name, to show that nesting is harmless."""
    listed = set(names)
    for name in names:
        labels = name.split(".")
        for i in range(1, len(labels) - 1):
            parent = ".".join(labels[i:])
            if parent in listed:
                return name, parent
    return None


def render(vendor, text, example_override=None):
    title, description, action = VENDORS[vendor]
    preamble, sections = parse(text)
    check(vendor, preamble, sections)
    dropped = {n: why for (v, n), why in DROPPED.items() if v == vendor}
    for s in sections:
        kept = [n for n in s.names if n not in dropped]
        if len(kept) != len(s.names):
            s.dropped = [n for n in s.names if n in dropped]
        s.names = kept
    names = [n for s in sections for n in s.names]

    out = [
        f"# {title}: a hushd {'block' if action == 'block' else 'audit'} list.",
        "# Generated from a compiled list; its header, sources and licenses follow verbatim.",
        "#",
    ]
    out += preamble
    for s in sections:
        out += s.header + s.trailer
    out.append("#")
    out += [line.format(vendor=vendor) for line in ACTION_TEXT[action]]
    if dropped:
        out.append("#")
        out.append(f"# LEFT OUT: {len(dropped)} name(s) of the compiled list above, so this file holds")
        out.append(f"# {len(names)} names, not the total stated there:")
        for name, why in dropped.items():
            out.append(f"#   {name}: " + why[0])
            out += [f"#     {line}" for line in why[1:]]
    out += [
        "#",
        "# Each group in `domains` below is preceded by its source's name, location and license.",
        "# In hushd every listed name also matches all of its subdomains (label-aligned), whatever",
    ]
    example = example_override or redundant_example(names)
    if example:
        child, parent = example
        out += [
            f"# the upstream semantics above; entries under a listed parent ({child}",
            f"# under {parent}) are kept as published and are redundant but harmless.",
        ]
    else:
        out[-1] += "\n# the upstream semantics above."
    out += [
        "",
        f'description = "{description} (sources below)"',
        f'action = "{action}"',
        "domains = [",
    ]
    for i, s in enumerate(sections):
        if i:
            out.append("")
        out += ["  " + line for line in s.group_comment()]
        out += [f'  "{n}",' for n in s.names]
    out.append("]")
    return "\n".join(out) + "\n", len(names)


# The example xiaomi.toml has always given; the first nested pair in file order differs.
EXAMPLES = {"xiaomi": ("default.tracking.miui.com", "tracking.miui.com")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    args = parser.parse_args()
    for source in args.sources:
        vendor = source.stem
        if vendor not in VENDORS:
            sys.exit(f"{source}: unknown vendor {vendor!r}; add it to VENDORS")
        text, count = render(vendor, source.read_text(encoding="utf-8"), EXAMPLES.get(vendor))
        (args.out / f"{vendor}.toml").write_text(text, encoding="utf-8")
        print(f"{vendor}.toml: {count} names, action {VENDORS[vendor][2]}")


if __name__ == "__main__":
    main()
