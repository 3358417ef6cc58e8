#!/usr/bin/env python3
"""Builds a hushd list file (blocklists/<vendor>.toml) from a compiled vendor list (or the
compiled list of public DoH/DoT/DoQ resolvers, doh).

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
    # Not a vendor: the resolvers a device can use to resolve past hushd. Audit only as well.
    "doh": ("Public encrypted DNS resolvers (DoH, DoT, DoQ)",
            "Public DNS-over-HTTPS, -TLS and -QUIC resolvers", "log"),
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
    ("doh", "use-application-dns.net"): [
        "Firefox's canary, not a resolver. hushd answers it itself ([server] firefox_canary,",
        "before any list), and with that toggle off it must be forwarded, not counted here.",
    ],
    ("doh", "mask.icloud.com"): [
        "iCloud Private Relay, which [server] icloud_private_relay governs, before any list:",
        "turning that toggle off must let Private Relay work whatever this list's action.",
    ],
    ("doh", "mask-h2.icloud.com"): ["iCloud Private Relay, as mask.icloud.com."],
    ("doh", "mask-api.icloud.com"): ["iCloud Private Relay's own API, as mask.icloud.com."],
}

# vendor -> (does a name go, why): a whole class of names left out, each listed in the header.
GENERAL_SLDS = {"co", "com", "net", "org", "ac", "go", "gov", "edu", "or", "ne", "idv", "name"}
SAYS_DNS = re.compile(r"dns|doh|dot|resolv|quad9")
# Registrable domains that serve DNS and nothing else, whatever their name says.
DNS_ONLY_DOMAINS = {"8888.google"}


def general_purpose_domain(name):
    """A registrable domain (example.com, example.co.za) whose first label does not say DNS."""
    labels = name.split(".")
    registrable = len(labels) == 2 or (len(labels) == 3 and labels[1] in GENERAL_SLDS)
    return registrable and not SAYS_DNS.search(labels[0]) and name not in DNS_ONLY_DOMAINS


DROP_RULES = {
    "doh": (general_purpose_domain, [
        "a whole registrable domain whose name does not say DNS (dns, doh, dot, resolv...).",
        "Source B lists the hostnames that answered as DoH servers, and some of those are a",
        "site's or a platform's apex (fly.io, switch.ch, iij.jp, eth.link, a shop, a casino);",
        "in hushd a listed name also matches every name under it, so these would count (or,",
        "switched to block, block) everything hosted there. Resolvers on such a domain are",
        "usually also listed by a name of their own (dns.<domain>, doh.<domain>), which stays.",
    ]),
}

# The public resolvers' own addresses, for answer-IP rules and the firewall example: only
# anycast addresses their operators run for DNS alone, each group with its sources: the
# operator's documentation, and the names dibdot/DoH-IP-blocklists' doh-ipv4.txt and
# doh-ipv6.txt (Source B's snapshot, GPL-3.0) resolved to these addresses.
DOH_IPS = [
    ("Google Public DNS: developers.google.com/speed/public-dns/docs/using;"
     " dibdot: dns.google, 8888.google",
     ["8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844"]),
    ("Cloudflare 1.1.1.1, and for Families (malware; malware and adult):"
     " developers.cloudflare.com/1.1.1.1/ip-addresses/;"
     " dibdot: one.one.one.one, security.cloudflare-dns.com, family.cloudflare-dns.com",
     ["1.1.1.1", "1.0.0.1", "2606:4700:4700::1111", "2606:4700:4700::1001",
      "1.1.1.2", "1.0.0.2", "2606:4700:4700::1112", "2606:4700:4700::1002",
      "1.1.1.3", "1.0.0.3", "2606:4700:4700::1113", "2606:4700:4700::1003"]),
    ("Quad9 (secure, unsecured, with ECS):"
     " www.quad9.net/service/service-addresses-and-features;"
     " dibdot: dns.quad9.net, dns9, dns10, dns11.quad9.net",
     ["9.9.9.9", "149.112.112.112", "2620:fe::fe", "2620:fe::9",
      "9.9.9.10", "149.112.112.10", "2620:fe::10", "2620:fe::fe:10",
      "9.9.9.11", "149.112.112.11", "2620:fe::11", "2620:fe::fe:11"]),
    ("Cisco OpenDNS (and FamilyShield, and their DoH front ends): www.opendns.com/setupguide/;"
     " dibdot: dns.opendns.com, familyshield.opendns.com, doh.opendns.com,"
     " doh.familyshield.opendns.com",
     ["208.67.222.222", "208.67.220.220", "2620:119:35::35", "2620:119:53::53",
      "208.67.222.123", "208.67.220.123", "2620:119:35::123", "2620:119:53::123",
      "146.112.41.2", "146.112.41.3", "2620:119:fc::2", "2620:119:fc::3"]),
    ("AdGuard DNS (default, family, unfiltered, private):"
     " adguard-dns.io/kb/general/dns-providers/;"
     " dibdot: dns.adguard-dns.com, family.adguard-dns.com, unfiltered.adguard-dns.com,"
     " d.adguard-dns.com",
     ["94.140.14.14", "94.140.15.15", "2a10:50c0::ad1:ff", "2a10:50c0::ad2:ff",
      "94.140.14.15", "94.140.15.16", "2a10:50c0::bad1:ff", "2a10:50c0::bad2:ff",
      "94.140.14.140", "94.140.14.141", "2a10:50c0::1:ff", "2a10:50c0::2:ff",
      "94.140.14.49", "2a10:50c0::ded:ff"]),
    ("Control dibdot: docs.controld.com/docs/control-d-ip-ranges (the secure-DNS endpoints);"
     " dibdot: freedns.controld.com, dns.controld.com (the 76.76.2.x and 2606:1a40:: ones)",
     ["76.76.2.11", "76.76.10.11", "2606:1a40::11", "2606:1a40:1::11",
      "76.76.2.22", "76.76.10.22", "2606:1a40::22", "2606:1a40:1::22"]),
    ("Mullvad DNS: mullvad.net/en/help/dns-over-https-and-dns-over-tls;"
     " dibdot: dns.mullvad.net and its adblock, base, extended, family, all profiles",
     ["194.242.2.2", "194.242.2.3", "194.242.2.4", "194.242.2.5", "194.242.2.6", "194.242.2.9",
      "2a07:e340::2", "2a07:e340::3", "2a07:e340::4", "2a07:e340::5", "2a07:e340::6",
      "2a07:e340::9"]),
    ("CleanBrowsing (security, adult, family filters): cleanbrowsing.org/filters/;"
     " dibdot: security-, adult-, family-filter-dns.cleanbrowsing.org",
     ["185.228.168.9", "185.228.168.10", "185.228.168.168"]),
]

DOH_IPS_NOTE = [
    "#",
    "# ---------------------------------------------------------------------------------------",
    "# Resolver addresses (`ips`): an answer carrying one of them is matched like a listed name",
    "# (counted with via=\"ip\"), and the firewall example (nftables/hushd.nft) drops 443/853 to",
    "# them. Only the addresses the big operators run for DNS alone are here (anycast, no web",
    "# site behind them), so dropping them at a firewall cuts nothing else. NextDNS is not (its",
    "# addresses are per profile and per region). Source B's doh-ipv4.txt and doh-ipv6.txt hold",
    "# about 2,000 more, resolved from every name above; many are shared hosting or CDN",
    "# addresses behind a small resolver, which a firewall rule would cut other sites with.",
    "# Each group names its operator's documentation and, after \"dibdot:\", the names that",
    "# dibdot/DoH-IP-blocklists' doh-ipv4.txt and doh-ipv6.txt (Source B's repository and",
    "# snapshot, GPL-3.0) resolved to those addresses.",
]


def ips_block(groups):
    """The `ips = [...]` key of DOH_IPS."""
    out = DOH_IPS_NOTE + ["ips = ["]
    for comment, addresses in groups:
        out += wrapped(comment.split(" "), "  # ")
        out += wrapped([f'"{a}",' for a in addresses], "  ")
    out.append("]")
    return out


# vendor -> lines written after the `domains` array.
TRAILERS = {"doh": lambda: ips_block(DOH_IPS)}

SOURCE = re.compile(r"^# Source [A-Z]+: ")
NEW_ENTRIES = re.compile(r"^#   \((\d+) new entries from this source\)$")

# Replaces ACTION_TEXT for a list that is not a vendor's.
LIST_TEXT = {
    "doh": [
        '# Shipped with action = "log" (audit only): a fresh install must break no one. hushd',
        "# forwards these lookups as normal and logs and counts each match",
        '# (hushd_list_matches_total{{list="doh",action="log"}}): the devices that look up a public',
        "# encrypted resolver, which are the ones that may be resolving past hushd. Switch it to",
        '# "block" once the evidence says so; a device then cannot reach these resolvers by name',
        "# (Android Private DNS set to dns.google, a browser's DoH setting), though it may still",
        "# fall back to hushd or use an address it has hard-coded: that takes the firewall (the",
        "# resolvers' addresses are at the end of this file, commented, for answer-IP rules and",
        "# the firewall example). Firefox's canary, iCloud Private Relay and resolver.arpa are",
        "# not here: hushd answers them itself, before any list ([server] firefox_canary,",
        "# icloud_private_relay, resolver_arpa).",
    ],
}

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
    rule, rule_why = DROP_RULES.get(vendor, (lambda _: False, []))
    by_rule = [n for s in sections for n in s.names if n not in dropped and rule(n)]
    dropped_names = set(dropped) | set(by_rule)
    for s in sections:
        kept = [n for n in s.names if n not in dropped_names]
        if len(kept) != len(s.names):
            s.dropped = [n for n in s.names if n in dropped_names]
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
    out += [line.format(vendor=vendor) for line in LIST_TEXT.get(vendor, ACTION_TEXT[action])]
    left_out = len(dropped) + len(by_rule)
    if left_out:
        out.append("#")
        out.append(f"# LEFT OUT: {left_out} name(s) of the compiled list above, so this file holds")
        out.append(f"# {len(names)} names, not the total stated there:")
        for name, why in dropped.items():
            out.append(f"#   {name}: " + why[0])
            out += [f"#     {line}" for line in why[1:]]
        if by_rule:
            out.append(f"#   {len(by_rule)} names, each " + rule_why[0])
            out += [f"#     {line}" for line in rule_why[1:]]
            out += wrapped([n + "," for n in by_rule[:-1]] + by_rule[-1:], "#     ")
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
    out += TRAILERS.get(vendor, list)()
    return "\n".join(out) + "\n", len(names)


def wrapped(words, prefix, width=96):
    """`words`, space-separated, on lines of at most `width` characters starting with `prefix`."""
    lines, line = [], prefix
    for word in words:
        if line != prefix and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = prefix
        line += ("" if line == prefix else " ") + word
    lines.append(line)
    return lines


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
