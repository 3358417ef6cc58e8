//! List content formats. Every source of names (a `domains_file` beside the list, a downloaded
//! subscription) goes through here, so a file is judged the same whichever way it arrived.
//!
//! Pure parsers: a line in, entries (`name`, `kind`, `line`), patterns or a skip reason out.
//! Matching is elsewhere (`policy::matcher`); these functions touch no file and no socket.

use std::fmt;

use serde::Deserialize;

/// How a file's lines are written. `Auto` looks at the first meaningful lines of each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Auto,
    /// One name a line, `#` comments (hagezi, NextDNS, hushd's own `domains_file`).
    Plain,
    /// `0.0.0.0 a b`, `127.0.0.1 a`, `:: a` (StevenBlack, Pi-hole's gravity imports).
    Hosts,
    /// The DNS subset of Adblock Plus / AdGuard syntax: `||name^`, `@@||name^`, `/regex/`.
    Adblock,
    /// `*.name` lines (hagezi's "wildcard domains" flavour).
    Wildcard,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Plain => "plain",
            Self::Hosts => "hosts",
            Self::Adblock => "adblock",
            Self::Wildcard => "wildcard",
        }
    }
}

/// The list's `match` key: what a bare name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    /// The name and every name under it (hushd's behaviour before `match` existed).
    Subdomains,
    /// The name alone.
    Exact,
}

/// What an entry covers once the list's `match` is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Exact,
    Subdomains,
    /// An adblock `@@||name^` rule: cancels this list's own matches of the name and its
    /// subdomains (never another list's).
    Except,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Subdomains => "subdomains",
            Self::Except => "exception",
        }
    }
}

/// What a parser says a name means before the list's `match` key is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A plain name: the list's `match`, by default subdomains.
    Bare,
    /// A hosts entry or an adblock bare name: the exact name unless the list says
    /// `match = "subdomains"` (Pi-hole's and AdGuard's meaning; a hosts entry
    /// `s3.amazonaws.com` must not take every bucket with it).
    BareExact,
    /// `||name^` or `*.name`.
    Subdomains,
    /// `@@||name^`.
    Except,
}

impl Written {
    pub fn resolve(self, list_match: Option<Match>) -> Kind {
        match (self, list_match) {
            (Self::Subdomains, _) => Kind::Subdomains,
            (Self::Except, _) => Kind::Except,
            (Self::Bare, None | Some(Match::Subdomains))
            | (Self::BareExact, Some(Match::Subdomains)) => Kind::Subdomains,
            (Self::Bare | Self::BareExact, _) => Kind::Exact,
        }
    }
}

/// Why a line was left out. Lines are skipped and counted, never fatal to the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Not a valid domain name.
    InvalidName,
    /// More than one field where one name belongs.
    ExtraFields,
    /// Bytes that are not UTF-8.
    NotUtf8,
    /// An adblock rule with a `$` modifier: it applies to some clients or types only, and
    /// widening it to everyone would block what the list's author did not.
    Modifier,
    /// A cosmetic (`##`, `#@#`, ...) rule: page hiding, nothing DNS can do.
    Cosmetic,
    /// A rule on a URL or path, not a whole name.
    UrlPath,
    /// Adblock syntax DNS cannot honour exactly (wildcards inside names, bare exceptions).
    Unsupported,
    /// A `/regex/` that does not compile (or is over the size limit).
    InvalidPattern,
}

impl SkipReason {
    /// The `reason` label of `hushd_list_entries_skipped_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidName => "invalid_name",
            Self::ExtraFields => "extra_fields",
            Self::NotUtf8 => "not_utf8",
            Self::Modifier => "modifier",
            Self::Cosmetic => "cosmetic",
            Self::UrlPath => "url_path",
            Self::Unsupported => "unsupported",
            Self::InvalidPattern => "invalid_pattern",
        }
    }

    /// Whether the line is broken, as opposed to a valid rule hushd does not apply: only broken
    /// lines count towards rejecting a whole file (an adblock list is mostly cosmetic rules).
    pub fn is_invalid(self) -> bool {
        matches!(self, Self::InvalidName | Self::ExtraFields | Self::NotUtf8)
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a line gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    /// A name, lower-case, without its final dot.
    Name(String, Written),
    /// A regular expression (adblock `/regex/`), already checked to compile.
    Pattern(&'a str),
    Skip(SkipReason),
}

/// Names a hosts file maps to themselves; importing them would block the host itself.
pub const HOSTS_BOILERPLATE: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

/// Lines `detect` looks at, at most.
const DETECT_LINES: usize = 50;

/// Decides a file's format from its first meaningful lines (comments and blank lines skipped).
/// Adblock syntax anywhere in them wins (adblock files also carry bare names); then hosts if
/// most lines start with an address; then wildcard if any `*.` line; plain otherwise.
pub fn detect(head: &str) -> Format {
    let (mut hosts, mut wildcard, mut seen) = (0, 0, 0);
    for line in head.lines().map(str::trim) {
        // Every `#` line is a comment here, `####` banners of hosts files included; an adblock
        // file shows itself by its other lines.
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if seen == DETECT_LINES {
            break;
        }
        seen += 1;
        if first_field_is_address(line) {
            hosts += 1;
            continue;
        }
        // a cosmetic rule has no space before its `##` (`example.org##.ad`)
        let cosmetic = line
            .find("##")
            .is_some_and(|at| !line[..at].contains(char::is_whitespace));
        if line.starts_with('!')
            || line.starts_with("||")
            || line.starts_with("@@")
            || line.starts_with("[Adblock")
            || line.ends_with('^')
            || cosmetic
            || line.len() > 2 && line.starts_with('/') && line.ends_with('/')
        {
            return Format::Adblock;
        }
        if line.starts_with("*.") {
            wildcard += 1;
        }
    }
    if hosts * 2 > seen {
        Format::Hosts
    } else if wildcard > 0 {
        Format::Wildcard
    } else {
        Format::Plain
    }
}

fn first_field_is_address(line: &str) -> bool {
    line.split_ascii_whitespace()
        .next()
        // `fe80::1%lo0`: a zone does not make an address less of one
        .map(|f| f.split('%').next().unwrap_or(f))
        .is_some_and(|f| f.parse::<std::net::IpAddr>().is_ok())
}

/// Parses one line of a file in `format` (never `Auto`: `detect` first), passing what it gives
/// to `out`. A comment or blank line gives nothing.
pub fn parse_line<'a>(format: Format, line: &'a str, mut out: impl FnMut(Item<'a>)) {
    match format {
        // AdGuard's DNS syntax takes hosts lines too
        Format::Adblock if first_field_is_address(line) => {
            hosts_names(line.split('#').next().unwrap_or(""), &mut out);
        }
        Format::Adblock => {
            if let Some(item) = adblock_line(line.trim()) {
                out(item);
            }
        }
        Format::Hosts | Format::Plain | Format::Auto => {
            let content = line.split('#').next().unwrap_or("");
            if first_field_is_address(content) {
                // A hosts line in a plain file is still a hosts line: hushd's `domains_file`
                // always took both.
                hosts_names(content, &mut out);
            } else {
                let written = if format == Format::Hosts {
                    Written::BareExact
                } else {
                    Written::Bare
                };
                single_name(content, written, &mut out);
            }
        }
        Format::Wildcard => {
            let content = line.split('#').next().unwrap_or("").trim();
            match content.strip_prefix("*.") {
                Some(rest) => single_name(rest, Written::Subdomains, &mut out),
                None => single_name(content, Written::Bare, &mut out),
            }
        }
    }
}

fn hosts_names<'a>(content: &'a str, out: &mut impl FnMut(Item<'a>)) {
    for field in content.split_ascii_whitespace().skip(1) {
        if HOSTS_BOILERPLATE.contains(&field) {
            continue;
        }
        out(name_item(field, Written::BareExact));
    }
}

fn single_name<'a>(content: &'a str, written: Written, out: &mut impl FnMut(Item<'a>)) {
    let mut fields = content.split_ascii_whitespace();
    let Some(first) = fields.next() else { return };
    if fields.next().is_some() {
        out(Item::Skip(SkipReason::ExtraFields));
    } else {
        out(name_item(first, written));
    }
}

fn name_item<'a>(field: &str, written: Written) -> Item<'a> {
    match super::check_domain(field) {
        Ok(valid) => Item::Name(valid.to_ascii_lowercase(), written),
        Err(_) => Item::Skip(SkipReason::InvalidName),
    }
}

/// One trimmed line of an adblock-syntax file. Only what means "this whole name" for every
/// client is taken; anything narrower is skipped, never widened into a block for everyone.
fn adblock_line(line: &str) -> Option<Item<'_>> {
    const NOTHING: Item<'static> = Item::Skip(SkipReason::Unsupported);
    if line.is_empty() || line.starts_with('!') || line.starts_with('[') && line.ends_with(']') {
        return None;
    }
    if ["##", "#@#", "#?#", "#$#", "#%#"]
        .iter()
        .any(|m| line.contains(m))
    {
        return Some(Item::Skip(SkipReason::Cosmetic));
    }
    if line.starts_with('#') {
        return None;
    }
    let (except, rule) = match line.strip_prefix("@@") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    if rule.len() > 2 && rule.starts_with('/') && rule.ends_with('/') {
        if except {
            return Some(NOTHING);
        }
        let pattern = &rule[1..rule.len() - 1];
        return Some(match check_pattern(pattern) {
            Ok(()) => Item::Pattern(pattern),
            Err(_) => Item::Skip(SkipReason::InvalidPattern),
        });
    }
    if rule.contains('$') {
        return Some(Item::Skip(SkipReason::Modifier));
    }
    if let Some(rest) = rule.strip_prefix("||") {
        let (name, after) = rest.split_at(rest.find('^').unwrap_or(rest.len()));
        if name.contains('/') || !matches!(after, "" | "^" | "^|") {
            return Some(Item::Skip(SkipReason::UrlPath));
        }
        if name.contains('*') {
            return Some(NOTHING);
        }
        let written = if except {
            Written::Except
        } else {
            Written::Subdomains
        };
        return Some(name_item(name, written));
    }
    if rule.starts_with('|') || rule.contains('/') {
        return Some(Item::Skip(SkipReason::UrlPath));
    }
    if except || rule.contains(['*', '^']) {
        return Some(NOTHING);
    }
    if rule.split_ascii_whitespace().nth(1).is_some() {
        return Some(Item::Skip(SkipReason::ExtraFields));
    }
    Some(name_item(rule, Written::BareExact))
}

/// Size limit of one compiled pattern set, so a list cannot make hushd build a huge automaton.
pub const PATTERN_SIZE_LIMIT: usize = 8 << 20;

/// Whether `pattern` compiles under hushd's limits; `Err` says why not. Only its NFA is built:
/// that is where syntax and size are judged, and it costs a fraction of a whole matcher, which
/// matters with thousands of patterns checked one by one at every reload.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    use regex_automata::nfa::thompson::{self, WhichCaptures};
    thompson::Compiler::new()
        .syntax(pattern_syntax())
        .configure(
            thompson::Config::new()
                .nfa_size_limit(Some(PATTERN_SIZE_LIMIT))
                .which_captures(WhichCaptures::None),
        )
        .build(pattern)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Names are ASCII: Unicode classes would only make the automaton bigger.
fn pattern_syntax() -> regex_automata::util::syntax::Config {
    regex_automata::util::syntax::Config::new()
        .unicode(false)
        .utf8(false)
}

/// Compiles patterns into one automaton matched in linear time.
pub fn compile_patterns<P: AsRef<str>>(patterns: &[P]) -> Result<PatternSet, String> {
    PatternSet::new(patterns)
}

/// The policy's automaton for `patterns`: the one a live policy already holds if it was built
/// from the same patterns in the same order, else a new one, remembered for the next build.
///
/// A reload builds the new policy while the old one still serves, and most reloads change names,
/// not patterns. Compiling again meant two automata alive at once and the compiler's ~4 MiB of
/// short-lived heap, which glibc keeps, on top of the two name sets: with 1M names and 1000
/// patterns each reload raised the peak by another MiB or so. Shared, a reload costs no compile
/// and no memory for its patterns, and the lazy DFA keeps the states it has learned.
pub fn shared_patterns(patterns: Vec<String>) -> Result<std::sync::Arc<PatternSet>, String> {
    use std::sync::{Arc, Mutex, PoisonError, Weak};
    // Weak: an automaton lives as long as a policy holds it, not for this list's sake. Mostly
    // one entry (two during a reload that changes the patterns).
    static LIVE: Mutex<Vec<Weak<PatternSet>>> = Mutex::new(Vec::new());
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    live.retain(|set| set.strong_count() > 0);
    let same = live
        .iter()
        .filter_map(Weak::upgrade)
        .find(|set| set.patterns == patterns);
    if let Some(set) = same {
        return Ok(set);
    }
    let mut set = PatternSet::new(&patterns)?;
    set.patterns = patterns;
    let set = Arc::new(set);
    live.push(Arc::downgrade(&set));
    Ok(set)
}

type CacheFn = Box<
    dyn Fn() -> regex_automata::hybrid::dfa::Cache
        + Send
        + Sync
        + std::panic::UnwindSafe
        + std::panic::RefUnwindSafe,
>;

/// Every list's patterns as one forward lazy DFA (`regex-automata`'s `hybrid`), every pattern
/// reported (`MatchKind::All`), with a pool of caches for the threads that match.
///
/// Not the meta engine: for the bench's 1000 patterns it allocated ~11 MiB of short-lived
/// heap to compile (reverse automata, prefilters, a full DFA attempt), which stays with the
/// process, where the forward lazy DFA alone takes ~4 MiB and matches as fast (200k names in
/// ~19 ms either way). Names are matched whole and only "which patterns" is asked, so nothing
/// else is needed.
pub struct PatternSet {
    dfa: regex_automata::hybrid::dfa::DFA,
    caches: regex_automata::util::pool::Pool<regex_automata::hybrid::dfa::Cache, CacheFn>,
    /// The patterns it was compiled from, when `shared_patterns` compiled it (to know it again).
    patterns: Vec<String>,
}

impl fmt::Debug for PatternSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatternSet")
            .field("patterns", &self.pattern_len())
            .finish()
    }
}

impl PatternSet {
    fn new<P: AsRef<str>>(patterns: &[P]) -> Result<Self, String> {
        use regex_automata::{
            MatchKind,
            hybrid::dfa,
            nfa::thompson::{self, WhichCaptures},
        };
        let dfa = dfa::DFA::builder()
            .syntax(pattern_syntax())
            .thompson(
                thompson::Config::new()
                    .nfa_size_limit(Some(PATTERN_SIZE_LIMIT))
                    .which_captures(WhichCaptures::None),
            )
            .configure(
                dfa::Config::new()
                    .match_kind(MatchKind::All)
                    .cache_capacity(2 << 20)
                    // never give up on the lazy DFA (there is no slower engine behind it)
                    .minimum_cache_clear_count(None),
            )
            .build_many(patterns)
            .map_err(|e| e.to_string())?;
        let for_cache = dfa.clone();
        let create: CacheFn = Box::new(move || for_cache.create_cache());
        Ok(Self {
            dfa,
            caches: regex_automata::util::pool::Pool::new(create),
            patterns: Vec::new(),
        })
    }

    pub fn pattern_len(&self) -> usize {
        self.dfa.pattern_len()
    }

    /// Whether any pattern matches `name`.
    pub fn is_match(&self, name: &[u8]) -> bool {
        let input = regex_automata::Input::new(name).earliest(true);
        let mut cache = self.caches.get();
        // No quit bytes are configured and the DFA never gives up: an error cannot happen,
        // and would mean no match rather than a panic on the query path.
        matches!(self.dfa.try_search_fwd(&mut cache, &input), Ok(Some(_)))
    }

    /// The indexes of the patterns that match `name`.
    pub fn matching(&self, name: &[u8]) -> Vec<usize> {
        let mut set = regex_automata::PatternSet::new(self.pattern_len());
        let mut cache = self.caches.get();
        let input = regex_automata::Input::new(name);
        let _ = self
            .dfa
            .try_which_overlapping_matches(&mut cache, &input, &mut set);
        set.iter().map(|p| p.as_usize()).collect()
    }
}

/// Counts of one file's lines, for `hushd check`, the skip metric and the whole-file rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Lines that gave a name or pattern, or a skip.
    pub meaningful: usize,
    pub entries: usize,
    pub patterns: usize,
    /// Per reason, in `SkipReason` order.
    pub skipped: std::collections::BTreeMap<SkipReason, usize>,
    /// The first few skipped lines: (line number, reason, the line as written, shortened).
    pub first_skipped: Vec<(usize, SkipReason, String)>,
}

impl Tally {
    /// Skipped lines shown by `hushd check`, at most.
    pub const SHOWN: usize = 5;

    pub fn count(&mut self, item: &Item<'_>, line_number: usize, line: &str) {
        match item {
            Item::Name(..) => self.entries += 1,
            Item::Pattern(_) => self.patterns += 1,
            Item::Skip(reason) => {
                *self.skipped.entry(*reason).or_default() += 1;
                if self.first_skipped.len() < Self::SHOWN {
                    let shown: String = line.trim().chars().take(100).collect();
                    self.first_skipped.push((line_number, *reason, shown));
                }
            }
        }
        self.meaningful += 1;
    }

    pub fn invalid(&self) -> usize {
        self.skipped
            .iter()
            .filter(|(r, _)| r.is_invalid())
            .map(|(_, n)| n)
            .sum()
    }

    /// A file most of whose lines are broken is not the list it claims to be (a captive
    /// portal's page, a truncated or wrong download): it is rejected whole.
    pub fn reject_majority_invalid(&self) -> Result<(), String> {
        let invalid = self.invalid();
        if self.meaningful >= 4 && invalid * 2 > self.meaningful {
            return Err(format!(
                "{invalid} of its {} lines are not valid entries: not a list",
                self.meaningful
            ));
        }
        Ok(())
    }
}

/// Parses a whole text in `format` (`Auto` is decided here), calling `each(line, item)`.
/// Returns the format used and the tally. For in-memory sources (a download, a fuzz input);
/// files on disk are streamed by `lists::read_domains_file` through `parse_line` the same way.
pub fn parse_text<'a>(
    text: &'a str,
    format: Format,
    mut each: impl FnMut(usize, Item<'a>),
) -> (Format, Tally) {
    let format = match format {
        Format::Auto => detect(text.get(..text.len().min(64 << 10)).unwrap_or(text)),
        f => f,
    };
    let mut tally = Tally::default();
    for (i, line) in text.lines().enumerate() {
        parse_line(format, line, |item| {
            tally.count(&item, i + 1, line);
            each(i + 1, item);
        });
    }
    (format, tally)
}

/// Whether `bytes` can be a list at all: a captive portal's login page, a proxy's error page or
/// a binary must never replace a list (it would silently empty it, or fill it with garbage),
/// and neither may a file most of whose lines are not entries. `Err` says what it looks like.
pub fn reject_unusable(bytes: &[u8]) -> Result<(), String> {
    reject_unusable_as(bytes, Format::Auto).map(|_| ())
}

/// `reject_unusable` for content that will be read as `format`; `Ok` holds what it found.
pub fn reject_unusable_as(bytes: &[u8], format: Format) -> Result<Tally, String> {
    if bytes.contains(&0) {
        return Err("binary content (NUL bytes), not a text list".into());
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err("not UTF-8 text".into());
    };
    reject_page(text)?;
    let (_, tally) = parse_text(text, format, |_, _| {});
    tally.reject_majority_invalid()?;
    Ok(tally)
}

/// An HTML or XML page, judged from its first non-blank line.
pub fn reject_page(text: &str) -> Result<(), String> {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let head = first
        .get(..first.len().min(64))
        .unwrap_or("")
        .to_ascii_lowercase();
    if ["<!doctype", "<html", "<head", "<body", "<?xml"]
        .iter()
        .any(|tag| head.starts_with(tag))
    {
        return Err("an HTML or XML page (a captive portal or an error page?), not a list".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(line, what it gave)` for every item of `text` read as `format`.
    fn items(text: &str, format: Format) -> (Format, Vec<String>) {
        let mut got = Vec::new();
        let (used, _) = parse_text(text, format, |line, item| {
            got.push(match item {
                Item::Name(n, w) => format!("{line}:{n}:{:?}", w.resolve(None)),
                Item::Pattern(p) => format!("{line}:/{p}/"),
                Item::Skip(r) => format!("{line}:skip:{r}"),
            });
        });
        (used, got)
    }

    #[test]
    fn pages_and_binaries_are_not_lists() {
        assert!(reject_unusable(b"example.com\n").is_ok());
        assert!(reject_unusable(b"").is_ok());
        assert!(reject_unusable(b"\n  <!DOCTYPE html><html>").is_err());
        assert!(reject_unusable(b"<html><body>Log in to the Wi-Fi</body></html>").is_err());
        assert!(reject_unusable(b"<?xml version=\"1.0\"?><Error/>").is_err());
        assert!(reject_unusable(b"\x1f\x8b\x08\x00\x00").is_err()); // gzip
        assert!(reject_unusable(b"a.com\n\xff\xfe").is_err());
    }

    #[test]
    fn a_file_mostly_of_broken_lines_is_rejected_but_a_cosmetic_heavy_one_is_not() {
        // a proxy's plain-text error page: words, not names
        let err = reject_unusable(b"Access denied\nYour request was blocked by policy\nContact your administrator\nreference 1234 abc\n");
        assert!(err.unwrap_err().contains("not valid entries"));
        // EasyList-like: mostly cosmetic and path rules, which are valid, only unused
        let easy = b"[Adblock Plus 2.0]\n! Title: EasyList\n##.ad-banner\nexample.com##.sponsor\n/banner/ads/*\n||ads.example.net^\n||cdn.example.org/ads.js\n";
        assert!(reject_unusable(easy).is_ok());
        // one typo among names is fine
        assert!(reject_unusable(b"a.com\nb.com\nc .com\nd.com\n").is_ok());
    }

    #[test]
    fn plain_like_hagezi_and_nextdns() {
        // shape of hagezi's "domains" lists and NextDNS exports: a `#` header, one name a line
        let text = "# Title: HaGeZi's Pro DNS Blocklist\n# Syntax: Domains (including possible subdomains)\n\n0-29.com\nads.Example.COM.\nbad_name!.com\ntwo names.com\n";
        let (format, got) = items(text, Format::Auto);
        assert_eq!(format, Format::Plain);
        assert_eq!(
            got,
            [
                "4:0-29.com:Subdomains",
                "5:ads.example.com:Subdomains",
                "6:skip:invalid_name",
                "7:skip:extra_fields"
            ]
        );
    }

    #[test]
    fn hosts_like_stevenblack_and_pihole() {
        // shape of StevenBlack's hosts file: boilerplate first, then `0.0.0.0 name`; Pi-hole
        // exports `127.0.0.1`; IPv6 `::` and several names a line occur in older lists
        let text = "# Title: StevenBlack/hosts\n127.0.0.1 localhost\n127.0.0.1 localhost.localdomain\n255.255.255.255 broadcasthost\n::1 localhost ip6-localhost ip6-loopback\nfe80::1%lo0 localhost\n0.0.0.0 0.0.0.0\n\n0.0.0.0 s3.amazonaws.com # an exact name, not every bucket\n127.0.0.1 a.tracker.example b.tracker.example\n:: v6.tracker.example\n0.0.0.0 bad!name\n";
        let (format, got) = items(text, Format::Auto);
        assert_eq!(format, Format::Hosts);
        assert_eq!(
            got,
            [
                "9:s3.amazonaws.com:Exact",
                "10:a.tracker.example:Exact",
                "10:b.tracker.example:Exact",
                "11:v6.tracker.example:Exact",
                "12:skip:invalid_name"
            ]
        );
        // `match = "subdomains"` turns hosts entries into suffix rules, on request only
        assert_eq!(
            Written::BareExact.resolve(Some(Match::Subdomains)),
            Kind::Subdomains
        );
    }

    #[test]
    fn adblock_dns_subset_like_adguard_dns_filter() {
        // shape of AdGuard DNS filter / hagezi's adblock flavour, with the hostile lines
        // from EasyList-style files that a DNS filter must not widen
        let text = "[Adblock Plus 2.0]\n! Title: AdGuard DNS filter\n! comment\n||ads.example.com^\n||Tracker.Example.net^|\n@@||ok.ads.example.com^\n||x.com^$client=10.0.0.5\n||y.com^$important\n||z.com^$dnstype=AAAA\nexample.org##.banner\n##.ad\nexample.org#@#.ad\n||cdn.example.org/ads.js\n|https://a.example/x\n/banner/ads/\n/^ad[0-9]*\\.example\\.com$/\n/(unclosed/\n||*.wild.example^\nbare.example.com\n@@bare.example\n# hash comment\n0.0.0.0 hosts.example\n";
        let (format, got) = items(text, Format::Auto);
        assert_eq!(format, Format::Adblock);
        assert_eq!(
            got,
            [
                "4:ads.example.com:Subdomains",
                "5:tracker.example.net:Subdomains",
                "6:ok.ads.example.com:Except",
                "7:skip:modifier",
                "8:skip:modifier",
                "9:skip:modifier",
                "10:skip:cosmetic",
                "11:skip:cosmetic",
                "12:skip:cosmetic",
                "13:skip:url_path",
                "14:skip:url_path",
                "15:/banner/ads/",
                "16:/^ad[0-9]*\\.example\\.com$/",
                "17:skip:invalid_pattern",
                "18:skip:unsupported",
                "19:bare.example.com:Exact",
                "20:skip:unsupported",
                "22:hosts.example:Exact",
            ]
        );
    }

    #[test]
    fn wildcard_like_hagezi_wildcard_flavour() {
        let text = "# Syntax: Wildcard Domains\n*.ads.example.com\n*.Tracker.example\nplain.example\n*.*.bad\n";
        let (format, got) = items(text, Format::Auto);
        assert_eq!(format, Format::Wildcard);
        assert_eq!(
            got,
            [
                "2:ads.example.com:Subdomains",
                "3:tracker.example:Subdomains",
                "4:plain.example:Subdomains",
                "5:skip:invalid_name"
            ]
        );
    }

    #[test]
    fn detection_looks_past_comments_and_takes_the_declared_format_when_given() {
        assert_eq!(detect("# x\n\na.com\n"), Format::Plain);
        assert_eq!(
            detect("# x\n0.0.0.0 a.com\n0.0.0.0 b.com\nc.com\n"),
            Format::Hosts
        );
        assert_eq!(detect("a.com\n||b.com^\n"), Format::Adblock);
        assert_eq!(detect(""), Format::Plain);
        // hosts files' banners and section comments are not cosmetic rules
        assert_eq!(
            detect("##########\n## Section ##\n# ## x\n0.0.0.0 a.com # ## note\n0.0.0.0 b.com\n"),
            Format::Hosts
        );
        assert_eq!(detect("# x\nexample.org##.banner\n"), Format::Adblock);
        // declared: a plain file read as hosts gives exact names
        let (f, got) = items("a.com\n", Format::Hosts);
        assert_eq!((f, got), (Format::Hosts, vec!["1:a.com:Exact".to_string()]));
    }

    #[test]
    fn tally_counts_reasons_and_keeps_the_first_lines() {
        let mut text = String::from("a.com\n");
        for i in 0..8 {
            text.push_str(&format!("bad!{i}.com\n"));
        }
        let (_, tally) = parse_text(&text, Format::Plain, |_, _| {});
        assert_eq!(tally.entries, 1);
        assert_eq!(tally.skipped.get(&SkipReason::InvalidName), Some(&8));
        assert_eq!(tally.first_skipped.len(), Tally::SHOWN);
        assert_eq!(tally.first_skipped[0].0, 2);
        assert_eq!(tally.first_skipped[0].2, "bad!0.com");
        assert!(tally.reject_majority_invalid().is_err());
    }

    #[test]
    fn the_same_patterns_share_one_automaton_while_a_policy_holds_it() {
        use std::sync::Arc;
        let pats = |p: &[&str]| p.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let a = shared_patterns(pats(&[r"^ads?\.shared-test\.", "shared-telemetry"])).unwrap();
        let b = shared_patterns(pats(&[r"^ads?\.shared-test\.", "shared-telemetry"])).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(b.is_match(b"ad.shared-test.example"));
        // another order is another automaton: a policy maps pattern numbers to its lists
        let c = shared_patterns(pats(&["shared-telemetry", r"^ads?\.shared-test\."])).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.matching(b"ads.shared-test.shared-telemetry"), vec![0, 1]);
        assert!(shared_patterns(pats(&["shared-test("])).is_err());
        // remembered without being kept: gone with the last policy that held it
        let gone = Arc::downgrade(&a);
        drop((a, b));
        assert!(gone.upgrade().is_none());
    }
}
