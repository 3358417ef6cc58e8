#!/usr/bin/env python3
"""Writes the hand-made seed corpora under fuzz/corpus/<target>/ (re-run after editing).

The shipped list and config files are copied in as seeds too. Files already in a corpus folder
that this script did not write (for example inputs merged in from a fuzzing run) are left alone.
"""
import pathlib
import shutil

FUZZ = pathlib.Path(__file__).resolve().parent.parent
REPO = FUZZ.parent
CORPUS = FUZZ / "corpus"

L63 = "a" * 63
L64 = "b" * 64
NAME_253 = ".".join(["c" * 63] * 3 + ["d" * 61])  # 63*3 + 61 + 3 dots = 253
NAME_254 = NAME_253 + "e"
MANY_LABELS = ".".join(["a"] * 127)  # 253 characters, 127 labels

LIST = {
    "valid_comments.toml": '# source: example\ndescription = "Xiaomi"\naction = "block"\n'
    'domains = [\n  "Tracking.MIUI.com.", # analytics\n  "mistat.xiaomi.com",\n]\n',
    "valid_log_null.toml": 'action = "log"\nblock_response = "null"\ndomains = ["_dmarc.x-y.com", "com"]\n',
    "valid_allow_empty.toml": 'action = "allow"\n',
    "valid_refused_literal.toml": "action = 'block'\nblock_response = 'refused'\n"
    "description = '''multi\nline'''\ndomains = ['a.example', \"\"\"b.example\"\"\"]\n",
    "valid_crlf_bom.toml": '\ufeffaction = "block"\r\ndomains = [\r\n  "a.example",\r\n]\r\n',
    "valid_long_names.toml": f'action = "block"\ndomains = ["{L63}.com", "{NAME_253}", "{MANY_LABELS}"]\n',
    "valid_escapes.toml": 'action = "block"\ndomains = ["\\u0041.example", "\\x61.example"]\n',
    "bad_names.toml": 'action = "block"\ndomains = ["ok.com", "bad name.com",\n "*.x.com", "", ".", "a..b",'
    ' ".a.b", " a.b", "a.b/c", "a.b.", "-"]\n',
    "bad_unicode.toml": 'action = "block"\ndomains = [\n  "ä.com",\n  "例え.テスト",\n  "xn--r8jz45g.xn--zckzah", # ok\n  "🙂.com",\n]\n',
    "bad_huge_label.toml": f'action = "block"\ndomains = ["{L64}.com"]\n',
    "bad_too_long.toml": f'action = "block"\ndomains = ["{NAME_254}", "{MANY_LABELS}.a"]\n',
    "bad_unknown_key.toml": 'action = "block"\ndomain = []\n',
    "bad_action.toml": 'action = "deny"\n',
    "bad_missing_action.toml": 'domains = ["a.com"]\n',
    "bad_block_response.toml": 'action = "block"\nblock_response = 3\n',
    "bad_missing_comma.toml": 'action = "block"\ndomains = [\n  "a.com",\n  "b.com"\n  "c.com",\n]\n',
    "bad_unterminated_string.toml": 'action = "block"\ndomains = ["a.com\n',
    "bad_unterminated_array.toml": 'action = "block"\ndomains = ["a.com",',
    "bad_types.toml": 'action = "block"\ndomains = [1, 2.5, true, {a = 1}, [ "x" ]]\n',
    "bad_table.toml": '[domains]\naction = "block"\n',
    "bad_duplicate_key.toml": 'action = "block"\naction = "log"\n',
    "bad_unicode_keys.toml": 'äction = "block"\n"dömains" = ["é"]\n',
    "bad_no_newline_at_end.toml": 'action = "block"\ndomains = ["x y"]',
    "valid_domains_file.toml": 'action = "block"\ndomains_file = "big.txt"\ndomains = ["a.example"]\n',
    "bad_domains_file.toml": 'action = "block"\ndomains_file = "../etc/passwd.txt"\n# also: "/etc/x.txt",'
    ' "sub/x.txt", "x.toml", ".hidden.txt", "", "a\\\\b.txt", "big.TXT"\n',
}

CONFIG = {
    "minimal.toml": '[upstream]\nservers = ["192.0.2.1"]\n',
    "every_key.toml": (
        "[server]\n"
        'listen = ["127.0.0.1:5353", "[::1]:5353"]\n'
        'allow_clients = ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]\n'
        'block_response = "refused"\nblock_ttl = 300\ntcp_idle_timeout_secs = 30\n'
        "[upstream]\n"
        'servers = ["9.9.9.9", "[2620:fe::fe]:53", "149.112.112.112:5353"]\n'
        "timeout_ms = 2500\nattempt_timeout_ms = 4000\n"
        '[metrics]\nlisten = "[::1]:9153"\nenabled = true\n'
        '[blocklists]\ndir = "/var/lib/hushd/lists"\n'
        "[cache]\nsize = 0\nmin_ttl = 5\nmax_ttl = 5\nnegative_max_ttl = 0\n"
    ),
    "metrics_disabled.toml": '[metrics]\nenabled = false\nlisten = "nonsense"\n[upstream]\nservers = ["192.0.2.1"]\n',
    "inline_tables.toml": 'server = { block_response = "null" }\nupstream = { servers = ["192.0.2.1"] }\n',
    "bad_unknown_keys.toml": '[server]\nlisten = []\nlisen = 1\nbogus = 1\n[upstream]\nservers = ["192.0.2.1"]\n[extra]\n',
    "bad_values.toml": '[server]\nlisten = ["127.0.0.1"]\nallow_clients = ["10.0.0.1/8", "nonsense", "::1/129", "1.2.3.4/33"]\n'
    '[upstream]\nservers = ["nope", "1.2.3.4:99999", "[::1]", "::1:53"]\n',
    "bad_missing_upstream.toml": "[server]\n",
    "bad_empty_servers.toml": "[upstream]\nservers = []\n",
    "bad_timeouts.toml": '[server]\ntcp_idle_timeout_secs = 0\n[upstream]\nservers = ["192.0.2.1"]\ntimeout_ms = 49\nattempt_timeout_ms = 60001\n',
    "bad_ttls.toml": '[server]\nblock_ttl = 5000000000\n[upstream]\nservers = ["192.0.2.1"]\n[cache]\nmin_ttl = 10\nmax_ttl = 1\nsize = -1\n',
    "bad_types.toml": '[server]\nlisten = "127.0.0.1:53"\nblock_response = "drop"\n[upstream]\nservers = "192.0.2.1"\ntimeout_ms = 1.5\n',
    "bad_syntax.toml": '[server\nlisten = ["127.0.0.1:53",\n',
    "bad_unicode.toml": '[server]\nallow_clients = ["١٢٧.0.0.1/8", "ｆｄ00::/8"]\n[upstream]\nservers = ["9.9.9.9:٥٣", "🙂"]\n',
    "bad_duplicate_table.toml": '[upstream]\nservers = ["192.0.2.1"]\n[upstream]\nservers = ["192.0.2.2"]\n',
    "bad_array_of_tables.toml": '[[upstream]]\nservers = ["192.0.2.1"]\n',
}

MATCHER = {
    "basic.txt": "mistat.xiaomi.com=1\ntracking.miui.com=2\n?a.b.mistat.xiaomi.com\n?xmistat.xiaomi.com\n"
    "?xiaomi.com\n?mistat.xiaomi.com.evil.example\n?TRACKING.Miui.COM.\n",
    "nested.txt": "xiaomi.com=1\napi.xiaomi.com=2\n?a.api.xiaomi.com\n?api.xiaomi.com\n?com\n?.\n",
    "duplicates.txt": "a.example=1\na.example=1\nA.Example.=0\na.example=3\na.example=2\nb.example\nb.example=65535\n",
    "escaped_dots.txt": "b.com=1\na.b.com=2\n?a\\.b.com\n?x.a\\.b.com\n?a\\046b.com\n?A\\.B.COM.\n",
    "bad_names.txt": "*.x.com\n bad.com\nbad name.com\n\n.\na..b\n.a.b\nä.com\n?ä.com\n?*.x.com\n?a..b\n",
    "long_names.txt": f"{L63}.com\n{NAME_253}\n{MANY_LABELS}\n{L64}.com\n{NAME_254}\n?x.{L63}.com\n?{MANY_LABELS}\n",
    "underscore_hyphen.txt": "_dmarc.x-y.com=7\n-.com=8\nx-.com\n?_DMARC.X-Y.COM\n?mail._dmarc.x-y.com\n",
    "grow.txt": "".join(f"host{i}.example{i % 7}.net={i % 5}\n" for i in range(60)) + "?a.host3.example3.net\n",
    "suffix_chain.txt": "com=1\nb.com=2\na.b.com=3\nz.a.b.com=4\n?y.z.a.b.com\n?b.com\n",
}


DOMAINS_FILE = {
    "plain_and_hosts.txt": "# imported\nA.Example.com\n\n0.0.0.0 b.example.com c.example.com # two\n"
    "127.0.0.1 localhost\n  bad name!\nd.example.com.\n0.0.0.0 x_y!.com\n",
    "hosts_file.txt": "127.0.0.1\tlocalhost localhost.localdomain\n::1 ip6-localhost ip6-loopback\n"
    "fe80::1%lo0 local\n255.255.255.255 broadcasthost\n0.0.0.0 ads.example\n:: tracker.example\n"
    "0.0.0.0\n0.0.0.0 LOCALHOST\n",
    "adblock_style.txt": "||ads.example^\n*.tracker.example\n.leading.example\ntrailing..example\n"
    "example.com#comment\nexample.org #comment\n#",
    "crlf_tabs.txt": "a.example\r\n\tb.example \r\nc.example\x0c\r\n\r\n",
    "unicode.txt": "ä.example\n例え.テスト\nxn--r8jz45g.xn--zckzah\n\u00a0a.example\nb.example\u2003\n"
    "0.0.0.0 ｆｕｌｌ.example\n\ufeffbom.example\n",
    "long.txt": f"{L63}.com\n{L64}.com\n{NAME_253}\n{NAME_254}\n{MANY_LABELS}\n",
    "many_errors.txt": "".join(f"bad!{i}\n" for i in range(105)) + "late.example\n",
}


# Slow (16,000 inserts an input, ~40 ms under ASan): kept out of corpus/matcher so it does not
# dominate the default run; pass seeds/matcher-bulk as an extra corpus to fuzz the chunk crossing.
MATCHER_BULK = {
    "bulk.txt": "#bulk\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb00007.bulk7=1\nx.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb00008.bulk8\nbulk3=4\na.bulk3\n?y.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb00009.BULK9\n"
    "?bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb16001.bulk1\n?bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb00017.bulk2\n",
}


def write(target, files, folder=None):
    folder = folder or CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8", newline="")


def main():
    write("list_parser", LIST)
    for f in sorted((REPO / "blocklists").glob("*.toml")):
        shutil.copyfile(f, CORPUS / "list_parser" / f"shipped_{f.name}")
    write("config_parser", CONFIG)
    shutil.copyfile(REPO / "config/hushd.toml", CORPUS / "config_parser/shipped_config.toml")
    shutil.copyfile(REPO / "systemd/hushd.toml", CORPUS / "config_parser/shipped_systemd.toml")
    write("matcher", MATCHER)
    write("matcher", MATCHER_BULK, FUZZ / "seeds/matcher-bulk")
    write("domains_file", DOMAINS_FILE)
    (CORPUS / "domains_file" / "not_utf8.txt").write_bytes(b"a.example\nb\xff.example\nc.example\n")


if __name__ == "__main__":
    main()
