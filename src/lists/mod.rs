//! Loading list files: each `*.toml` in the blocklist folder is one list, named by its file stem.
//! Loading is apart from matching (the routedns split): this module turns files into validated
//! `ListFile`s, and `Policy::build` turns those into a new immutable matcher.

pub mod fetch;
pub mod formats;
pub mod ips;
pub mod refresh;
pub mod store;
pub mod subscription;

use self::formats::{Format, Item, Kind, Match, Tally, Written};

use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::Deserialize;
use toml::Spanned;

pub use crate::config::Action;
use crate::{
    config::BlockResponse,
    diagnostic::{LoadError, LoadErrors},
    egress::SetRef,
};

/// One parsed and validated list file.
#[derive(Debug, Clone, PartialEq)]
pub struct ListFile {
    pub name: String,
    pub path: PathBuf,
    pub action: Action,
    pub description: Option<String>,
    pub block_response: Option<BlockResponse>,
    /// Normalised: lower-case, no final dot.
    pub domains: Vec<String>,
    /// A plain-text file of more names (`domains_file`), in the same folder; read while the
    /// policy is built, so a million-name import never sits in memory as strings.
    pub domains_file: Option<PathBuf>,
    /// How `domains_file` is written (`auto`: decided from its first lines).
    pub format: Format,
    /// What a bare name means (`None`: the format's own default, see `formats::Written`).
    pub match_kind: Option<Match>,
    /// Regular expressions on the lower-case name without final dot, each checked to compile.
    pub patterns: Vec<String>,
    /// `url` (and `refresh`, `sha256`): names downloaded in the background; their stored copy
    /// is read like a `domains_file`.
    pub subscription: Option<subscription::Subscription>,
    /// Answer addresses this list matches (RPZ-IP): `ips`, addresses or CIDRs.
    pub ips: Vec<IpNetwork>,
    /// A file of more addresses or CIDRs, one a line, in the same folder (`ips_file`).
    pub ips_file: Option<PathBuf>,
    /// Answer addresses in these countries (ISO 3166-1 alpha-2, upper-case), looked up in
    /// `[egress] country_db`.
    pub countries: Vec<String>,
    /// Answer addresses in these autonomous systems, looked up in `[egress] asn_db`.
    pub asns: Vec<u32>,
    /// nftables sets that receive every address answered for a name this list matches.
    pub nft_sets: Vec<SetRef>,
}

impl ListFile {
    /// A list of inline names only, every other key at its default: what a list file holding
    /// just `action` and `domains` loads as (tests and fuzz targets build policies from these).
    pub fn inline(path: PathBuf, action: Action, domains: &[&str]) -> Self {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            name,
            path,
            action,
            description: None,
            block_response: None,
            domains: domains.iter().map(ToString::to_string).collect(),
            domains_file: None,
            format: Format::Auto,
            match_kind: None,
            patterns: Vec::new(),
            subscription: None,
            ips: Vec::new(),
            ips_file: None,
            countries: Vec::new(),
            asns: Vec::new(),
            nft_sets: Vec::new(),
        }
    }

    /// The kind of an inline `domains` entry: the list's `match`, by default subdomains.
    pub fn inline_kind(&self) -> Kind {
        Written::Bare.resolve(self.match_kind)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    action: Action,
    description: Option<String>,
    block_response: Option<BlockResponse>,
    #[serde(default)]
    domains: Vec<Spanned<String>>,
    domains_file: Option<Spanned<String>>,
    #[serde(default)]
    format: Format,
    #[serde(rename = "match")]
    match_kind: Option<Match>,
    #[serde(default)]
    patterns: Vec<Spanned<String>>,
    url: Option<Spanned<String>>,
    refresh: Option<Spanned<String>>,
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    ips: Vec<Spanned<String>>,
    ips_file: Option<Spanned<String>>,
    #[serde(default)]
    countries: Vec<Spanned<String>>,
    #[serde(default)]
    asns: Vec<u32>,
    #[serde(default)]
    nft_sets: Vec<Spanned<String>>,
}

/// Reads every list in `dir`, sorted by name. Collects the errors of all files.
pub fn load_dir(dir: &Path) -> Result<Vec<ListFile>, LoadErrors> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if is_list_file(&path) {
            paths.push(path);
        }
    }
    paths.sort();

    let mut lists = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|source| {
                LoadErrors::from(LoadError::Read {
                    path: path.clone(),
                    source,
                })
            })
            .and_then(|text| parse_list(&path, &text));
        match parsed {
            Ok(list) => lists.push(list),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(lists)
    } else {
        Err(LoadErrors(errors))
    }
}

/// `*.toml`, but not editors' hidden lock and backup files such as emacs's `.#name.toml`.
pub fn is_list_file(path: &Path) -> bool {
    is_visible_with_extension(path, "toml")
}

/// A file whose change may change the policy: a list, or a `domains_file` (`*.txt`).
pub fn is_policy_file(path: &Path) -> bool {
    is_list_file(path) || is_visible_with_extension(path, "txt")
}

fn is_visible_with_extension(path: &Path, extension: &str) -> bool {
    let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
        return false;
    };
    !file.starts_with('.') && path.extension().is_some_and(|e| e == extension)
}

/// `domains_file` and `ips_file` (`key`) name a file beside the list, never a path: a list
/// cannot make hushd read outside its folder.
fn sibling_file(list: &Path, key: &str, name: &str) -> Result<PathBuf, String> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && Path::new(name).extension().is_some_and(|e| e == "txt");
    if !plain {
        return Err(format!(
            "{key} {name:?} must be the name of a .txt file in the list's own folder (no path)"
        ));
    }
    Ok(list.with_file_name(name))
}

/// Lines in a file (0 if unreadable: the read that follows reports it), to size the matcher.
pub fn count_lines(path: &Path) -> usize {
    use std::io::Read;

    let Ok(mut file) = std::fs::File::open(path) else {
        return 0;
    };
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 1;
    while let Ok(n @ 1..) = file.read(&mut buf) {
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    lines
}

pub use self::formats::HOSTS_BOILERPLATE;

/// What reading one file gave, for `hushd check`, the metrics and `hushd explain`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    /// The format used (never `Auto`: what `auto` decided).
    pub format: Format,
    /// Whether `auto` decided it (rather than the list's `format`).
    pub detected: bool,
    pub tally: Tally,
}

/// One entry of a file as `read_domains_file` passes it on.
#[derive(Debug, Clone, Copy)]
pub enum FileEntry<'a> {
    /// A name, lower-case, no final dot.
    Name(&'a [u8], Kind),
    /// A regular expression (adblock `/regex/`), known to compile.
    Pattern(&'a str),
}

/// The format `read_domains_file` will read `path` in: `format`, or what `auto` decides from
/// the file's first 64 KiB (`Plain` if it cannot be read; the read itself reports that).
pub fn file_format(path: &Path, format: Format) -> Format {
    use std::io::Read;

    if format != Format::Auto {
        return format;
    }
    let mut head = Vec::with_capacity(1 << 16);
    let read = std::fs::File::open(path).and_then(|f| f.take(1 << 16).read_to_end(&mut head));
    match read {
        Ok(_) => formats::detect(&String::from_utf8_lossy(&head)),
        Err(_) => Format::Plain,
    }
}

/// Streams a `domains_file` (or a stored download) in `format`, `auto` decided from its first
/// 64 KiB. Each entry goes to `add` with its line number, its kind resolved by `list_match`.
/// Bad lines are skipped and counted in the report, never fatal; but a file that is an HTML
/// page, binary, or mostly invalid lines is an error as a whole.
pub fn read_domains_file(
    path: &Path,
    format: Format,
    list_match: Option<Match>,
    mut add: impl FnMut(usize, FileEntry<'_>),
) -> Result<FileReport, LoadErrors> {
    use std::io::BufRead;

    let read_error = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let whole = |message: String| LoadError::File {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let head = reader.fill_buf().map_err(read_error)?;
    if head.contains(&0) {
        return Err(whole("binary content (NUL bytes), not a text list".into()).into());
    }
    let head_text = String::from_utf8_lossy(head);
    formats::reject_page(&head_text).map_err(whole)?;
    let detected = format == Format::Auto;
    let format = match format {
        Format::Auto => formats::detect(&head_text),
        f => f,
    };
    let mut tally = Tally::default();
    let mut line = Vec::with_capacity(256);
    for number in 1.. {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(source) => return Err(read_error(source).into()),
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            let item = Item::Skip(formats::SkipReason::NotUtf8);
            tally.count(&item, number, &String::from_utf8_lossy(&line));
            continue;
        };
        formats::parse_line(format, text, |item| {
            tally.count(&item, number, text);
            match &item {
                Item::Name(name, written) => add(
                    number,
                    FileEntry::Name(name.as_bytes(), written.resolve(list_match)),
                ),
                Item::Pattern(p) => add(number, FileEntry::Pattern(p)),
                Item::Skip(_) => {}
            }
        });
    }
    tally.reject_majority_invalid().map_err(whole)?;
    Ok(FileReport {
        format,
        detected,
        tally,
    })
}

pub fn parse_list(path: &Path, text: &str) -> Result<ListFile, LoadErrors> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| LoadError::File {
            path: path.to_path_buf(),
            message: "a list file needs a UTF-8 name, which becomes the list's name".into(),
        })?
        .to_string();
    let raw: RawList = toml::from_str(text).map_err(|e| LoadError::toml(path, text, &e))?;

    let mut errors = Vec::new();
    let mut domains = Vec::with_capacity(raw.domains.len());
    for d in &raw.domains {
        match normalize_domain(d.get_ref()) {
            Ok(n) => domains.push(n),
            Err(why) => errors.push(LoadError::at(
                path,
                text,
                d.span(),
                format!("{:?}: {why}", d.get_ref()),
            )),
        }
    }
    let mut patterns = Vec::with_capacity(raw.patterns.len());
    for p in &raw.patterns {
        match formats::check_pattern(p.get_ref()) {
            Ok(()) => patterns.push(p.get_ref().clone()),
            Err(why) => errors.push(LoadError::at(
                path,
                text,
                p.span(),
                format!("pattern {:?}: {why}", p.get_ref()),
            )),
        }
    }
    let domains_file = raw.domains_file.as_ref().and_then(|f| {
        match sibling_file(path, "domains_file", f.get_ref()) {
            Ok(p) => Some(p),
            Err(why) => {
                errors.push(LoadError::at(path, text, f.span(), why));
                None
            }
        }
    });
    let subscription = parse_subscription(&raw, &mut |span, why| {
        errors.push(LoadError::at(path, text, span, why));
    });
    let mut err_at = |span, why| errors.push(LoadError::at(path, text, span, why));
    let ips = parse_each(&raw.ips, parse_ip_rule, &mut err_at);
    let countries = parse_each(&raw.countries, parse_country, &mut err_at);
    let nft_sets = parse_each(&raw.nft_sets, SetRef::parse, &mut err_at);
    let ips_file =
        raw.ips_file
            .as_ref()
            .and_then(|f| match sibling_file(path, "ips_file", f.get_ref()) {
                Ok(p) => Some(p),
                Err(why) => {
                    errors.push(LoadError::at(path, text, f.span(), why));
                    None
                }
            });
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    Ok(ListFile {
        subscription,
        domains_file,
        name,
        path: path.to_path_buf(),
        action: raw.action,
        description: raw.description,
        block_response: raw.block_response,
        domains,
        format: raw.format,
        match_kind: raw.match_kind,
        patterns,
        ips,
        ips_file,
        countries,
        asns: raw.asns,
        nft_sets,
    })
}

/// An `ips` entry: an address (a host route) or a CIDR whose host bits are zero, so a typo such
/// as `203.0.113.7/24` is caught instead of silently matching its whole /24.
pub fn parse_ip_rule(raw: &str) -> Result<IpNetwork, String> {
    let raw = raw.trim();
    let net: IpNetwork = match raw.parse::<std::net::IpAddr>() {
        Ok(addr) => IpNetwork::from(addr),
        Err(_) => raw
            .parse()
            .map_err(|e| format!("{raw:?} is not an address or CIDR: {e}"))?,
    };
    if net.network() != net.ip() {
        return Err(format!(
            "{raw:?} has host bits set; the network is {}/{}",
            net.network(),
            net.prefix()
        ));
    }
    Ok(net)
}

/// A `countries` entry: an ISO 3166-1 alpha-2 code, as the country databases write it.
pub fn parse_country(raw: &str) -> Result<String, String> {
    if raw.len() == 2 && raw.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(raw.to_ascii_uppercase())
    } else {
        Err(format!(
            "{raw:?} is not a two-letter ISO 3166-1 country code (such as \"CN\")"
        ))
    }
}

fn parse_subscription(
    raw: &RawList,
    err_at: &mut impl FnMut(std::ops::Range<usize>, String),
) -> Option<subscription::Subscription> {
    let Some(url) = &raw.url else {
        for key in [&raw.refresh, &raw.sha256].into_iter().flatten() {
            err_at(key.span(), "refresh and sha256 need a url".into());
        }
        return None;
    };
    let parsed_url = checked(url, subscription::parse_url, err_at);
    let refresh = match &raw.refresh {
        Some(r) => checked(r, subscription::parse_refresh, err_at),
        None => Some(subscription::DEFAULT_REFRESH),
    };
    let sha256 = match &raw.sha256 {
        Some(s) => checked(s, subscription::parse_sha256, err_at).map(Some),
        None => Some(None),
    };
    Some(subscription::Subscription {
        url: parsed_url?,
        refresh: refresh?,
        sha256: sha256?,
        format: raw.format,
    })
}

/// Parses each value, reporting each bad one at its place.
fn parse_each<T>(
    values: &[Spanned<String>],
    parse: fn(&str) -> Result<T, String>,
    err_at: &mut impl FnMut(std::ops::Range<usize>, String),
) -> Vec<T> {
    values
        .iter()
        .filter_map(|v| checked(v, parse, err_at))
        .collect()
}

fn checked<T>(
    value: &Spanned<String>,
    parse: fn(&str) -> Result<T, String>,
    err_at: &mut impl FnMut(std::ops::Range<usize>, String),
) -> Option<T> {
    parse(value.get_ref())
        .map_err(|why| err_at(value.span(), why))
        .ok()
}

/// Lower-cases and checks a listed name; the final dot is optional.
pub fn normalize_domain(raw: &str) -> Result<String, String> {
    check_domain(raw).map(str::to_ascii_lowercase)
}

/// Checks a listed name and returns it without its final dot (case unchanged).
pub fn check_domain(raw: &str) -> Result<&str, String> {
    let name = raw.trim();
    if name != raw {
        return Err("remove the spaces around the name".into());
    }
    if let Some(rest) = name.strip_prefix("*.") {
        return Err(format!(
            "wildcards are not needed: write {rest:?}, which already matches every subdomain"
        ));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty name".into());
    }
    if !name.is_ascii() {
        return Err(
            "not ASCII: write an internationalised name in its xn-- (punycode) form".into(),
        );
    }
    if name.len() > 253 {
        return Err(format!(
            "name is {} characters long; DNS allows 253",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > 63 {
            return Err(format!(
                "label {label:?} is {} characters long; DNS allows 63",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("character {c:?} is not allowed in a domain name"));
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::{formats::SkipReason, *};

    fn parse(text: &str) -> Result<ListFile, LoadErrors> {
        parse_list(Path::new("/lists/xiaomi.toml"), text)
    }

    #[test]
    fn parses_a_list_with_comments_per_entry() {
        let l = parse(
            "# source: example\ndescription = \"Xiaomi\"\naction = \"block\"\ndomains = [\n  \"Tracking.MIUI.com.\", # analytics\n  \"mistat.xiaomi.com\",\n]\n",
        )
        .unwrap();
        assert_eq!(l.name, "xiaomi");
        assert_eq!(l.action, Action::Block);
        assert_eq!(l.domains, vec!["tracking.miui.com", "mistat.xiaomi.com"]);
        assert_eq!(l.description.as_deref(), Some("Xiaomi"));
        assert_eq!(l.block_response, None);
    }

    #[test]
    fn egress_keys_parse_and_point_at_their_errors() {
        let l = parse(
            "action = \"log\"\nips = [\"203.0.113.0/24\", \"2001:db8::1\"]\ncountries = [\"cn\"]\nasns = [64500]\nnft_sets = [\"inet hushd x4\"]\n",
        )
        .unwrap();
        assert_eq!(l.ips.len(), 2);
        assert_eq!(l.ips[1].prefix(), 128);
        assert_eq!(l.countries, vec!["CN"]);
        assert_eq!(l.asns, vec![64500]);
        assert_eq!(l.nft_sets[0].to_string(), "inet hushd x4");
        let e = parse("action = \"log\"\nips = [\"203.0.113.7/24\"]\ncountries = [\"China\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("host bits set; the network is 203.0.113.0/24"),
            "{e}"
        );
        assert!(e.contains(":3:"), "{e}");
    }

    #[test]
    fn actions_and_block_responses() {
        assert_eq!(parse("action = \"log\"\n").unwrap().action, Action::Log);
        assert_eq!(parse("action = \"allow\"\n").unwrap().action, Action::Allow);
        let l = parse("action = \"block\"\nblock_response = \"null\"\n").unwrap();
        assert_eq!(l.block_response, Some(BlockResponse::Null));
        let err = parse("action = \"deny\"\n").unwrap_err().to_string();
        assert!(err.starts_with("/lists/xiaomi.toml:1:10:"), "{err}");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_name_file_line_and_column() {
        let err = parse("action = \"block\"\ndomain = []\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/lists/xiaomi.toml:2:1: unknown field `domain`"),
            "{err}"
        );
        let err =
            parse("action = \"block\"\ndomains = [\n  \"a.com\",\n  \"b.com\"\n  \"c.com\",\n]\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with("/lists/xiaomi.toml:5:3: missing comma"),
            "{err}"
        );
        let err = parse("domains = []\n").unwrap_err().to_string();
        assert!(err.contains("missing field `action`"), "{err}");
    }

    #[test]
    fn bad_names_are_reported_each_at_its_place() {
        let err =
            parse("action = \"block\"\ndomains = [\"ok.com\", \"bad name.com\",\n \"*.x.com\"]\n")
                .unwrap_err();
        let lines: Vec<_> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("/lists/xiaomi.toml:2:22: \"bad name.com\": character ' '"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("/lists/xiaomi.toml:3:2: \"*.x.com\": wildcards are not needed"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn normalize_domain_rules() {
        assert_eq!(normalize_domain("A.B.Com.").unwrap(), "a.b.com");
        assert_eq!(
            normalize_domain("_dmarc.x-y.com").unwrap(),
            "_dmarc.x-y.com"
        );
        assert_eq!(normalize_domain("com").unwrap(), "com");
        for bad in [
            "",
            ".",
            "a..b",
            ".a.b",
            " a.b",
            "a.b/c",
            "ä.com",
            &"a".repeat(64),
            &["a"; 130].join("."),
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn domains_file_is_a_sibling_txt_file_only() {
        let l = parse("action = \"block\"\ndomains_file = \"big.txt\"\n").unwrap();
        assert_eq!(l.domains_file.as_deref(), Some(Path::new("/lists/big.txt")));
        for bad in [
            "../etc/passwd.txt",
            "/etc/x.txt",
            "sub/x.txt",
            "x.toml",
            ".hidden.txt",
            "",
        ] {
            let err = parse(&format!("action = \"block\"\ndomains_file = {bad:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("/lists/xiaomi.toml:2:16: domains_file"),
                "{bad}: {err}"
            );
        }
    }

    fn read(text: &str, format: Format, m: Option<Match>) -> (Vec<String>, FileReport) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        std::fs::write(&path, text).unwrap();
        let mut got = Vec::new();
        let report = read_domains_file(&path, format, m, |line, e| match e {
            FileEntry::Name(n, kind) => got.push(format!(
                "{line}:{}:{}",
                String::from_utf8(n.to_vec()).unwrap(),
                kind.as_str()
            )),
            FileEntry::Pattern(p) => got.push(format!("{line}:/{p}/")),
        })
        .map_err(|e| e.to_string());
        match report {
            Ok(r) => (got, r),
            Err(e) => (vec![format!("error: {e}")], FileReport::default()),
        }
    }

    #[test]
    fn domains_files_skip_and_count_bad_lines_with_their_place() {
        let (names, report) = read(
            "# imported\nA.Example.com\n\n0.0.0.0 b.example.com c.example.com # two\n127.0.0.1 localhost\n  bad name!\nd.example.com.\n0.0.0.0 x_y!.com\n",
            Format::Auto,
            None,
        );
        assert_eq!(report.format, Format::Plain);
        // plain names follow `match` (subdomains); hosts entries are exact names
        assert_eq!(
            names,
            [
                "2:a.example.com:subdomains",
                "4:b.example.com:exact",
                "4:c.example.com:exact",
                "7:d.example.com:subdomains"
            ]
        );
        assert_eq!(report.tally.entries, 4);
        assert_eq!(
            report.tally.first_skipped,
            [
                (6, SkipReason::ExtraFields, "bad name!".to_string()),
                (8, SkipReason::InvalidName, "0.0.0.0 x_y!.com".to_string())
            ]
        );
        let (err, _) = read("", Format::Auto, None);
        assert!(err.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let missing =
            read_domains_file(&dir.path().join("none.txt"), Format::Auto, None, |_, _| {})
                .unwrap_err();
        assert!(missing.to_string().contains("none.txt: cannot read"));
    }

    #[test]
    fn subscription_keys_are_checked_at_their_place() {
        let l = parse("action = \"block\"\nurl = \"https://example.org/hosts.txt\"\n").unwrap();
        let sub = l.subscription.unwrap();
        assert_eq!(sub.url.as_str(), "https://example.org/hosts.txt");
        assert_eq!(sub.refresh, subscription::DEFAULT_REFRESH);
        assert_eq!(sub.sha256, None);
        assert_eq!(parse("action = \"block\"\n").unwrap().subscription, None);

        let err = parse(
            "action = \"block\"\nurl = \"ftp://x.org/a\"\nrefresh = \"often\"\nsha256 = \"ab\"\n",
        )
        .unwrap_err();
        let lines: Vec<_> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("/lists/xiaomi.toml:2:7: url \"ftp://x.org/a\""),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("/lists/xiaomi.toml:3:11: refresh \"often\""),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("/lists/xiaomi.toml:4:10: sha256 \"ab\""),
            "{lines:?}"
        );

        let err = parse("action = \"block\"\nrefresh = \"1h\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/lists/xiaomi.toml:2:11: refresh and sha256 need a url"),
            "{err}"
        );
    }

    #[test]
    fn a_page_a_binary_or_a_mostly_broken_file_is_rejected_whole() {
        for bad in [
            "<!DOCTYPE html>\n<html><body>Sign in to the hotel Wi-Fi</body></html>\n",
            "a.com\n\0\0\0\n",
            "a.com\nthis is not\na list of names\nat all, is it\n",
        ] {
            let (got, _) = read(bad, Format::Auto, None);
            assert!(got[0].starts_with("error: "), "{bad:?}: {got:?}");
        }
        // one bad line in four is skipped, not fatal
        let (got, report) = read("a.com\nb.com\nc.com\nbad line\n", Format::Auto, None);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(report.tally.invalid(), 1);
    }

    #[test]
    fn list_keys_format_match_and_patterns() {
        let l = parse(
            "action = \"block\"\ndomains_file = \"x.txt\"\nformat = \"hosts\"\nmatch = \"exact\"\npatterns = ['^ads?[0-9]*\\.']\n",
        )
        .unwrap();
        assert_eq!(l.format, Format::Hosts);
        assert_eq!(l.match_kind, Some(Match::Exact));
        assert_eq!(l.inline_kind(), Kind::Exact);
        assert_eq!(l.patterns, ["^ads?[0-9]*\\."]);
        let l = parse("action = \"block\"\n").unwrap();
        assert_eq!(
            (l.format, l.inline_kind()),
            (Format::Auto, Kind::Subdomains)
        );
        let err = parse("action = \"block\"\npatterns = [\n  'ok',\n  '(unclosed',\n]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/lists/xiaomi.toml:4:3: pattern \"(unclosed\""),
            "{err}"
        );
        let err = parse("action = \"block\"\nformat = \"csv\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/lists/xiaomi.toml:2:10"), "{err}");
    }

    #[test]
    fn only_visible_toml_files_are_lists() {
        assert!(is_list_file(Path::new("/l/xiaomi.toml")));
        assert!(!is_list_file(Path::new("/l/.#xiaomi.toml")));
        assert!(!is_list_file(Path::new("/l/xiaomi.toml~")));
        assert!(!is_list_file(Path::new("/l/xiaomi.toml.swp")));
        assert!(!is_list_file(Path::new("/l/README.md")));
    }
}
