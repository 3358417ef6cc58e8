//! The list format parsers (`lists::formats`) on arbitrary bytes, in every format.
//!
//! Checked: never panics; `reject_unusable` accepts only NUL-free UTF-8 that is not mostly
//! broken lines; every name given is normalised; subdomain rules come only from `||`/`*.`
//! syntax and exceptions only from `@@`; an adblock rule with a `$` modifier never gives a
//! name (it is skipped, never widened; hosts lines, which adblock files may hold, aside); every pattern compiles; the tally adds up.

use hushd::lists::{
    formats::{self, Format, Item, Written},
    normalize_domain,
};

const FORMATS: [Format; 5] = [
    Format::Auto,
    Format::Plain,
    Format::Hosts,
    Format::Adblock,
    Format::Wildcard,
];

/// One input: panics if hushd breaks a promise the module comment lists.
pub fn run(data: &[u8]) {
    let usable = formats::reject_unusable(data);
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(usable.is_err(), "non-UTF-8 accepted");
        return;
    };
    if text.contains('\0') {
        assert!(usable.is_err(), "NUL bytes accepted");
    }
    for format in FORMATS {
        let lines: Vec<&str> = text.lines().collect();
        let (mut entries, mut patterns, mut skips) = (0, 0, 0);
        let used = match format {
            Format::Auto => formats::detect(text.get(..text.len().min(64 << 10)).unwrap_or(text)),
            f => f,
        };
        let (reported, tally) = formats::parse_text(text, format, |line, item| {
            let written = lines[line - 1];
            match item {
                Item::Name(n, w) => {
                    entries += 1;
                    assert_eq!(normalize_domain(&n).as_deref(), Ok(n.as_str()), "{n:?}");
                    let trimmed = written.trim();
                    match w {
                        Written::Subdomains => assert!(
                            trimmed.starts_with("||") || trimmed.starts_with("*."),
                            "{written:?} gave a subdomain rule"
                        ),
                        Written::Except => assert!(trimmed.starts_with("@@||"), "{written:?}"),
                        Written::Bare | Written::BareExact => {}
                    }
                    // (a hosts line in an adblock file is a hosts line: its `$` is in a bad name)
                    let hosts_line = trimmed
                        .split_ascii_whitespace()
                        .next()
                        .map(|f| f.split('%').next().unwrap_or(f))
                        .is_some_and(|f| f.parse::<std::net::IpAddr>().is_ok());
                    if used == Format::Adblock && !hosts_line {
                        assert!(!trimmed.contains('$'), "{written:?} was widened");
                    }
                }
                Item::Pattern(p) => {
                    patterns += 1;
                    assert_eq!(used, Format::Adblock);
                    assert!(formats::check_pattern(p).is_ok(), "{p:?}");
                }
                Item::Skip(_) => skips += 1,
            }
        });
        assert_eq!(reported, used);
        assert_eq!(tally.entries, entries);
        assert_eq!(tally.patterns, patterns);
        assert_eq!(tally.skipped.values().sum::<usize>(), skips);
        assert_eq!(tally.meaningful, entries + patterns + skips);
        if format == Format::Auto && usable.is_ok() {
            assert!(tally.reject_majority_invalid().is_ok());
        }
    }
}
