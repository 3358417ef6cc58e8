//! `hushd explain NAME` and `GET /explain`: why is this name (not) blocked?
//!
//! The decision always comes from `Policy::decide`, the very function the daemon answers
//! queries with, so an explanation never disagrees with what a client sees. The evidence
//! (which entries of which lists cover the name, with file and line) is found by scanning the
//! list sources again with the same parsers: slow next to the matcher, but this is an admin's
//! question, not a query.

use std::{net::IpAddr, path::Path};

use hickory_proto::rr::Name;
use serde::Serialize;

use crate::{
    lists::{self, FileEntry, ListFile, formats::Kind},
    policy::{Action, Policy, Verdict},
};

/// One entry (or pattern) of one list that covers the name.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Evidence {
    pub list: String,
    pub action: &'static str,
    /// The entry as hushd read it: a name, or `/pattern/`.
    pub entry: String,
    /// `exact`, `subdomains`, `exception` or `pattern`.
    pub kind: &'static str,
    /// The file the entry is in (the list's `.toml`, or its `domains_file`).
    pub file: String,
    pub line: usize,
    /// Whether the list applies to the client's group (`action` is then the group's, which
    /// may override the list's own).
    pub applies: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub name: String,
    pub client: IpAddr,
    /// The client's name in `[clients]`, if it has one.
    pub client_name: Option<String>,
    /// The group the client falls in (`default`: in no `[[groups]]`).
    pub group: String,
    /// Every group: its name and, per list it changes, what it does (`-` for left out).
    pub groups: Vec<GroupSummary>,
    /// `block`, `log`, `allow`, `forward` (no list decides), `refuse` (client not allowed), or
    /// `bypass` (hushd answers itself: a `[server]` bypass-defence toggle, before the lists).
    pub decision: &'static str,
    /// The list whose action was taken.
    pub winner: Option<String>,
    /// Why the winner wins (the rank rule allow > block > log).
    pub why: String,
    /// Every entry of every list that covers the name, the winner's first.
    pub matches: Vec<Evidence>,
    /// For an address: its country and network in `[egress] country_db` / `asn_db`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub name: String,
    /// The lists whose action differs from their own for this group, as `list=action` (or
    /// `list=-` for a list left out).
    pub changes: Vec<String>,
}

fn group_summaries(policy: &Policy) -> Vec<GroupSummary> {
    policy
        .groups()
        .iter()
        .map(|g| GroupSummary {
            name: g.name.to_string(),
            changes: policy
                .lists()
                .iter()
                .enumerate()
                .filter_map(|(tag, l)| {
                    let tag = tag as crate::policy::matcher::Tag;
                    g.overrides(tag, l.action).then(|| {
                        format!("{}={}", l.name, g.action(tag).map_or("-", Action::as_str))
                    })
                })
                .collect(),
        })
        .collect()
}

/// Explains `name` for `client` under `policy`, with evidence from `files` (the list sources
/// the policy was built from) and their subscriptions' copies stored in `state_dir`.
pub fn explain(
    policy: &Policy,
    files: &[ListFile],
    state_dir: &Path,
    client: IpAddr,
    name: &Name,
) -> Explanation {
    let text = name_text(name);
    let verdict = policy.decide(client, name);
    let who = policy.client(client);
    let group = policy.group(&who);
    let (decision, winner) = match verdict {
        Verdict::Refuse => ("refuse", None),
        Verdict::Bypass(_) => ("bypass", None),
        Verdict::Block(m) => ("block", Some(m)),
        Verdict::Forward(Some(m)) => (m.action.as_str(), Some(m)),
        Verdict::Forward(None) => ("forward", None),
    };
    let mut matches = evidence(files, state_dir, &text);
    // What each list does for this client's group.
    for e in &mut matches {
        let tag = policy.lists().iter().position(|l| *l.name == *e.list);
        let action = tag.and_then(|t| group.action(t as crate::policy::matcher::Tag));
        e.applies = action.is_some();
        if let Some(a) = action {
            e.action = a.as_str();
        }
    }
    let winner_name = winner.map(|m| m.list.name.to_string());
    // winner's entries first, then the rest by rank (highest first)
    matches.sort_by_key(|e| {
        (
            Some(&e.list) != winner_name.as_ref(),
            std::cmp::Reverse(rank_of(e.action)),
        )
    });
    let why = match (verdict, winner) {
        (Verdict::Refuse, _) => "the client is not in allow_clients: every query is refused".into(),
        (Verdict::Bypass(answer), _) => format!("{}; the lists are not consulted", answer.why()),
        (_, None) if matches.iter().any(|e| e.kind == "exception") => {
            "the only entries are cancelled by their own list's @@ exception; forwarded".into()
        }
        (_, None) => "no list has an entry or pattern covering the name; forwarded".into(),
        (_, Some(w)) => why_wins(&w.list.name, w.action, &matches),
    };
    let why = match matches
        .iter()
        .filter(|e| !e.applies)
        .map(|e| e.list.as_str())
        .collect::<std::collections::BTreeSet<_>>()
    {
        left_out if left_out.is_empty() => why,
        left_out => format!(
            "{why}; group {} leaves out {}",
            group.name,
            left_out.into_iter().collect::<Vec<_>>().join(", ")
        ),
    };
    Explanation {
        place: None,
        name: text,
        client,
        client_name: who.name.map(|n| n.to_string()),
        group: group.name.to_string(),
        groups: group_summaries(policy),
        decision,
        winner: winner_name,
        why,
        matches,
    }
}

/// Explains an answer address: which lists' `ips`, `countries` or `asns` hold it for `client`'s
/// group, which one decides what an answer carrying it gets, and where it is (country,
/// network). What the query path does with each address of an answer (`Policy::address_match`).
pub fn explain_address(policy: &Policy, client: IpAddr, addr: IpAddr) -> Explanation {
    let who = policy.client(client);
    let group = policy.group(&who);
    let place = (!policy.geo().is_empty()).then(|| policy.geo().place(addr).to_string());
    let mut matches = Vec::new();
    policy.address_lists(addr, |tag, via| {
        let Some(list) = policy.lists().get(usize::from(tag)) else {
            return;
        };
        let action = group.action(tag);
        matches.push(Evidence {
            list: list.name.to_string(),
            action: action.unwrap_or(list.action).as_str(),
            entry: match via {
                crate::policy::Via::Ip => addr.to_string(),
                _ => place.clone().unwrap_or_default(),
            },
            kind: via.as_str(),
            file: String::new(),
            line: 0,
            applies: action.is_some(),
        });
    });
    let (decision, winner) = match (who.allowed, policy.address_match(group, addr)) {
        (false, _) => ("refuse", None),
        (true, Some(m)) => (m.action.as_str(), Some(m)),
        (true, None) => ("forward", None),
    };
    let winner_name = winner.map(|m| m.list.name.to_string());
    matches.sort_by_key(|e| {
        (
            Some(&e.list) != winner_name.as_ref(),
            std::cmp::Reverse(rank_of(e.action)),
        )
    });
    let why = match winner {
        _ if !who.allowed => "the client is not in allow_clients: every query is refused".into(),
        None => {
            "no list's ips, countries or asns hold the address: answers carrying it are not changed"
                .into()
        }
        Some(w) => format!(
            "an answer carrying it is treated by list {} ({} by {}); {}",
            w.list.name,
            w.action.as_str(),
            w.via.as_str(),
            why_wins(&w.list.name, w.action, &matches)
        ),
    };
    Explanation {
        name: addr.to_string(),
        client,
        client_name: who.name.map(|n| n.to_string()),
        group: group.name.to_string(),
        groups: group_summaries(policy),
        decision,
        winner: winner_name,
        why,
        matches,
        place,
    }
}

fn rank_of(action: &str) -> u8 {
    match action {
        "allow" => 2,
        "block" => 1,
        _ => 0,
    }
}

fn why_wins(winner: &str, action: Action, matches: &[Evidence]) -> String {
    let cancelled: Vec<&str> = matches
        .iter()
        .filter(|e| e.kind == "exception")
        .map(|e| e.list.as_str())
        .collect();
    let mut others: Vec<&Evidence> = matches
        .iter()
        .filter(|e| {
            e.applies
                && e.list != winner
                && e.kind != "exception"
                && !cancelled.contains(&e.list.as_str())
        })
        .collect();
    others.dedup_by(|a, b| a.list == b.list);
    let mut why = match others.iter().find(|e| e.action == action.as_str()) {
        None if others.is_empty() => format!("{winner} is the only list that matches"),
        None => format!(
            "{} outranks {} (allow > block > log)",
            action.as_str(),
            others
                .iter()
                .map(|e| format!("{} ({})", e.list, e.action))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(same) => format!(
            "{winner} and {} are both {} lists: the more specific entry names the list (a name entry before a pattern)",
            same.list,
            action.as_str()
        ),
    };
    if !cancelled.is_empty() {
        why.push_str(&format!(
            "; {} matched but cancelled by its own @@ exception",
            cancelled.join(", ")
        ));
    }
    why
}

/// The name as lists hold it: lower-case, no final dot.
fn name_text(name: &Name) -> String {
    let t = name.to_ascii().to_ascii_lowercase();
    match t.strip_suffix('.') {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => t,
    }
}

/// Whether a listed `entry` of `kind` covers `name`.
fn covers(entry: &str, kind: Kind, name: &str) -> bool {
    name == entry
        || kind != Kind::Exact
            && name
                .strip_suffix(entry)
                .is_some_and(|rest| rest.ends_with('.'))
}

/// Every entry and pattern of `files` that covers `name`, read again from the sources: the list
/// file, its `domains_file`, and its subscription's copy in `state_dir` (shown by its URL).
pub fn evidence(files: &[ListFile], state_dir: &Path, name: &str) -> Vec<Evidence> {
    let mut found = Vec::new();
    for file in files {
        let toml = std::fs::read_to_string(&file.path).unwrap_or_default();
        let at = |needle: &str| toml_line(&toml, needle);
        let mut push = |entry: String, kind: &'static str, source: String, line: usize| {
            found.push(Evidence {
                list: file.name.clone(),
                action: file.action.as_str(),
                entry,
                kind,
                file: source,
                line,
                applies: true,
            });
        };
        let list_file = file.path.display().to_string();
        let inline = file.inline_kind();
        for d in file.domains.iter().filter(|d| covers(d, inline, name)) {
            push(d.clone(), inline.as_str(), list_file.clone(), at(d));
        }
        for p in &file.patterns {
            if pattern_matches(p, name) {
                push(format!("/{p}/"), "pattern", list_file.clone(), at(p));
            }
        }
        let copy = file.subscription.as_ref().and_then(|sub| {
            lists::store::existing_copy(state_dir, &file.name).map(|path| {
                (
                    path.clone(),
                    format!("{} (stored copy {})", sub.url, path.display()),
                )
            })
        });
        let sources = file
            .domains_file
            .iter()
            .map(|path| (path.clone(), path.display().to_string()))
            .chain(copy);
        for (path, source) in sources {
            // A file that no longer loads gives no evidence; `hushd check` says why.
            let _ =
                lists::read_domains_file(&path, file.format, file.match_kind, |line, e| match e {
                    FileEntry::Name(n, kind) => {
                        let n = String::from_utf8_lossy(n);
                        if covers(&n, kind, name) {
                            push(n.into_owned(), kind.as_str(), source.clone(), line);
                        }
                    }
                    FileEntry::Pattern(p) => {
                        if pattern_matches(p, name) {
                            push(format!("/{p}/"), "pattern", source.clone(), line);
                        }
                    }
                });
        }
    }
    found
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    lists::formats::compile_patterns(&[pattern]).is_ok_and(|re| re.is_match(name.as_bytes()))
}

/// The line of the list file where `needle` is written (quoted), 0 if not found.
fn toml_line(toml: &str, needle: &str) -> usize {
    let lower = needle.to_ascii_lowercase();
    toml.lines()
        .position(|l| {
            let l = l.to_ascii_lowercase();
            [format!("\"{lower}"), format!("'{lower}")]
                .iter()
                .any(|q| l.contains(q.as_str()))
        })
        .map_or(0, |i| i + 1)
}

/// Human-readable output of `hushd explain`.
pub fn render(e: &Explanation) -> String {
    let client = match &e.client_name {
        Some(n) => format!("{} {n:?}", e.client),
        None => e.client.to_string(),
    };
    let mut out = format!(
        "{} (client {client}, group {}): {}{}\n  why: {}\n",
        e.name,
        e.group,
        e.decision,
        e.winner
            .as_ref()
            .map(|w| format!(" by list {w}"))
            .unwrap_or_default(),
        e.why
    );
    if let Some(place) = &e.place {
        out.push_str(&format!("  where: {place}\n"));
    }
    if !e.matches.is_empty() {
        out.push_str("  matching entries:\n");
    }
    for m in &e.matches {
        let action = if m.applies { m.action } else { "-" };
        let at = match m.line {
            0 => String::new(),
            line => format!(" at {}:{line}", m.file),
        };
        out.push_str(&format!(
            "    {:<16} {:<6} {} ({}){at}\n",
            m.list, action, m.entry, m.kind
        ));
    }
    if e.groups.len() > 1 {
        out.push_str("  groups:\n");
        for g in &e.groups {
            let changes = match g.changes.is_empty() {
                true => "every list, each with its own action".to_string(),
                false => g.changes.join(" "),
            };
            out.push_str(&format!("    {:<16} {changes}\n", g.name));
        }
    }
    out
}

/// `hushd explain`: loads the config and the lists from disk, as `hushd check` does.
pub fn offline(
    config_path: &Path,
    name: &str,
    client: Option<IpAddr>,
) -> Result<Explanation, String> {
    let config = crate::config::Config::load(config_path).map_err(|e| e.to_string())?;
    let files = lists::load_dir(&config.blocklists.dir).map_err(|e| e.to_string())?;
    let policy = Policy::build(&config, files.clone()).map_err(|e| e.to_string())?;
    let client = client.unwrap_or_else(|| default_client(&config));
    if let Ok(addr) = name.trim().parse::<IpAddr>() {
        return Ok(explain_address(&policy, client, addr));
    }
    let name = parse_name(name)?;
    Ok(explain(
        &policy,
        &files,
        &config.lists.state_dir,
        client,
        &name,
    ))
}

/// A client the config serves: the first address of `allow_clients`.
pub fn default_client(config: &crate::config::Config) -> IpAddr {
    config
        .server
        .allow_clients
        .first()
        .map_or(IpAddr::from([127, 0, 0, 1]), |n| match n.ip() {
            // a host of the network, not its network address (127.0.0.1 for 127.0.0.0/8)
            IpAddr::V4(a) if n.prefix() < 32 => {
                IpAddr::from(u32::from(a).saturating_add(1).to_be_bytes())
            }
            IpAddr::V6(a) if n.prefix() < 128 => {
                IpAddr::from(u128::from(a).saturating_add(1).to_be_bytes())
            }
            ip => ip,
        })
}

pub fn parse_name(name: &str) -> Result<Name, String> {
    Name::from_ascii(name.trim()).map_err(|e| format!("{name:?} is not a domain name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_cover_by_kind_and_label() {
        assert!(covers("a.com", Kind::Subdomains, "x.a.com"));
        assert!(covers("a.com", Kind::Exact, "a.com"));
        assert!(!covers("a.com", Kind::Exact, "x.a.com"));
        assert!(!covers("a.com", Kind::Subdomains, "xa.com"));
        assert!(covers("a.com", Kind::Except, "x.a.com"));
    }

    #[test]
    fn toml_lines_are_found_by_the_quoted_entry() {
        let toml = "action = \"block\"\ndomains = [\n  \"Ads.com\",\n  'b.com',\n]\n";
        assert_eq!(toml_line(toml, "ads.com"), 3);
        assert_eq!(toml_line(toml, "b.com"), 4);
        assert_eq!(toml_line(toml, "c.com"), 0);
    }
}
