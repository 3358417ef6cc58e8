//! The policy: who may ask, and what happens to a name. A `Policy` is immutable: a reload builds
//! a whole new one off the hot path and swaps it in atomically, so a query always sees one
//! consistent policy, never half of a reload. `decide` is a pure function of the policy, the
//! client address and the name, so it is tested without sockets.

pub mod access;
pub mod bypass;
pub mod groups;
pub mod matcher;

use std::{net::IpAddr, sync::OnceLock};

use hickory_proto::rr::Name;

use self::{
    access::{Client, ClientAccess},
    bypass::{BypassAnswer, BypassDefence},
    groups::{Group, Groups},
    matcher::{DomainSet, DomainSetBuilder, Kind, NameKey, Tag},
};
pub use crate::{config::BlockResponse, lists::Action};
use crate::{
    config::Config,
    diagnostic::{LoadError, LoadErrors},
    lists::{self, ListFile, formats::Format},
};

/// When lists disagree about a name, the higher rank wins: an allow entry overrides any
/// block, and a block overrides a log-only entry (the name is blocked, which is what an admin
/// who listed it to block expects, whatever else audits it).
fn rank(action: Action) -> u8 {
    match action {
        Action::Log => 0,
        Action::Block => 1,
        Action::Allow => 2,
    }
}

/// A list as the policy keeps it; the names themselves are in the shared `DomainSet`.
#[derive(Debug)]
pub struct ListMeta {
    pub name: String,
    pub action: Action,
    pub description: Option<String>,
    pub block_response: BlockResponse,
    /// Distinct names in this list's file.
    pub domains: usize,
    /// Regular expressions of this list (its `patterns` and its file's `/regex/` lines).
    pub patterns: usize,
    /// What reading its `domains_file` gave (the format `auto` decided, skipped lines).
    pub file: Option<lists::FileReport>,
    /// The same for the stored copy of its subscription (`url`), once there is one.
    pub copy: Option<lists::FileReport>,
    /// This list's `hushd_list_matches_total` counters, one per (action, via), each resolved on
    /// its first match and kept for the life of this policy. The action is the one applied, which
    /// a group may have overridden.
    pub matches: [[OnceLock<prometheus::IntCounter>; Via::COUNT]; 3],
}

/// How a list matched a query: the name asked, a CNAME/DNAME target in its answer, or an
/// address in its answer (by range, country or network). The `via` label of
/// `hushd_list_matches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Name,
    Cname,
    Ip,
    Country,
    Asn,
}

impl Via {
    pub const COUNT: usize = 5;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Cname => "cname",
            Self::Ip => "ip",
            Self::Country => "country",
            Self::Asn => "asn",
        }
    }
}

impl ListMeta {
    /// Counts a match in `metrics` under this list's name, the action applied and how it matched.
    pub fn count_match(&self, metrics: &crate::metrics::Metrics, action: Action, via: Via) {
        self.matches[action as usize][via as usize]
            .get_or_init(|| metrics.list_match_counter(&self.name, action.as_str(), via.as_str()))
            .inc();
    }
}

/// A list that matched a query, with what it does for this client (its group may override the
/// list's own action) and how it matched.
#[derive(Debug, Clone, Copy)]
pub struct Match<'p> {
    pub list: &'p ListMeta,
    pub action: Action,
    pub via: Via,
}

impl Match<'_> {
    /// Counts it in `hushd_list_matches_total`.
    pub fn count(&self, metrics: &crate::metrics::Metrics) {
        self.list.count_match(metrics, self.action, self.via);
    }
}

/// What to do with one query.
#[derive(Debug, Clone, Copy)]
pub enum Verdict<'p> {
    /// The client is not in `allow_clients`.
    Refuse,
    /// hushd answers itself, before the lists: a name devices ask before bypassing it.
    Bypass(BypassAnswer),
    /// Answer with the list's block response.
    Block(Match<'p>),
    /// Forward upstream; `Some` names the log or allow list that matched.
    Forward(Option<Match<'p>>),
}

#[derive(Debug, Default)]
pub struct Policy {
    access: ClientAccess,
    groups: Groups,
    lists: Vec<ListMeta>,
    domains: DomainSet,
    patterns: Option<Patterns>,
    /// Which bypass-defence answers are on; part of the policy so a reload applies them.
    bypass: BypassDefence,
    pub block_ttl: u32,
}

/// Every list's patterns in one automaton; `owners[i]` is the list of pattern `i`.
#[derive(Debug)]
struct Patterns {
    regex: lists::formats::PatternSet,
    owners: Vec<Tag>,
}

/// The stored copy of `file`'s subscription, if it has one and it was fetched already.
fn stored_copy(config: &Config, file: &ListFile) -> Option<std::path::PathBuf> {
    file.subscription.as_ref()?;
    lists::store::existing_copy(&config.lists.state_dir, &file.name)
}

impl Policy {
    /// Reads the config's blocklist folder and builds the policy. Every error of every file is
    /// reported; nothing is built unless all of them are clean.
    pub fn load(config: &Config) -> Result<Self, LoadErrors> {
        let files = lists::load_dir(&config.blocklists.dir)?;
        Self::build(config, files)
    }

    pub fn build(config: &Config, files: Vec<ListFile>) -> Result<Self, LoadErrors> {
        if files.len() > usize::from(matcher::MAX_TAG) {
            return Err(LoadError::File {
                path: config.blocklists.dir.clone(),
                message: format!(
                    "{} list files; hushd supports at most {}",
                    files.len(),
                    matcher::MAX_TAG
                ),
            }
            .into());
        }
        // The egress keys parse, but until answers are inspected they would be silent no-ops:
        // refuse them rather than let an admin believe they are enforced.
        let unenforced: Vec<LoadError> = files
            .iter()
            .filter(|f| {
                !f.ips.is_empty()
                    || f.ips_file.is_some()
                    || !f.countries.is_empty()
                    || !f.asns.is_empty()
                    || !f.nft_sets.is_empty()
            })
            .map(|f| LoadError::File {
                path: f.path.clone(),
                message:
                    "ips, ips_file, countries, asns and nft_sets are not enforced by this build yet"
                        .into(),
            })
            .collect();
        if !unenforced.is_empty() {
            return Err(LoadErrors(unenforced));
        }
        // Size the table up front: growing it means a second table while the first still lives.
        // A domains file has at most one name per line.
        let total = files
            .iter()
            .map(|f| {
                f.domains.len()
                    + f.domains_file.as_deref().map_or(0, lists::count_lines)
                    + stored_copy(config, f)
                        .as_deref()
                        .map_or(0, lists::count_lines)
            })
            .sum();
        let mut errors = Vec::new();
        // Groups first: they decide which lists may share a matcher entry.
        let names_actions: Vec<(&str, Action)> =
            files.iter().map(|f| (f.name.as_str(), f.action)).collect();
        let groups = Groups::build(config, &names_actions).unwrap_or_else(|e| {
            errors.extend(e);
            Groups::default()
        });
        drop(names_actions);
        let mut builder = DomainSetBuilder::with_capacity(total);
        let mut lists: Vec<ListMeta> = Vec::with_capacity(files.len());
        let mut full = false;
        let mut batch = NameBatch::default();
        let (mut patterns, mut owners) = (Vec::new(), Vec::new());
        // Lists with `@@` exceptions keep their own entries: an exception cancels its own list,
        // so the entry of another list for the same name must survive it.
        let mut own_entries: Vec<bool> = Vec::with_capacity(files.len());
        for (tag, file) in files.into_iter().enumerate() {
            let tag = tag as Tag;
            let mut distinct = 0;
            let copy = stored_copy(config, &file);
            let isolated = file
                .domains_file
                .iter()
                .chain(&copy)
                .any(|p| lists::file_format(p, file.format) == Format::Adblock);
            own_entries.push(isolated);
            let mut insert = |batch: &mut NameBatch| {
                builder.warm(batch.names());
                let shares_with = |old: Tag| {
                    !isolated
                        && !own_entries.get(usize::from(old)).copied().unwrap_or(true)
                        && groups.shared_winner(old, tag).is_some()
                };
                for (name, kind) in batch.entries() {
                    let outcome = builder.insert_kind(name, kind, tag, shares_with, |old: Tag| {
                        groups.shared_winner(old, tag) == Some(tag)
                    });
                    match outcome {
                        Some(matcher::Inserted::Kept(t)) if t == tag => {}
                        Some(_) if kind == Kind::Except => {}
                        Some(_) => distinct += 1,
                        None => full = true,
                    }
                }
                batch.clear();
            };
            let inline = file.inline_kind();
            for d in &file.domains {
                batch.push(d.as_bytes(), inline);
                if batch.is_full() {
                    insert(&mut batch);
                }
            }
            let mut list_patterns = file.patterns.len();
            patterns.extend(file.patterns);
            let mut read_source = |path: &std::path::Path| {
                lists::read_domains_file(path, file.format, file.match_kind, |_, entry| match entry
                {
                    lists::FileEntry::Name(name, kind) => {
                        batch.push(name, kind);
                        if batch.is_full() {
                            insert(&mut batch);
                        }
                    }
                    lists::FileEntry::Pattern(p) => {
                        patterns.push(p.to_string());
                        list_patterns += 1;
                    }
                })
            };
            let read = file
                .domains_file
                .as_deref()
                .map(&mut read_source)
                .transpose();
            // A subscription's last good copy is one more source of the list, read by the same
            // parsers. It passed the whole-file checks when it was stored, so should it fail them
            // now the list keeps its other sources and the log says why: a publisher's file is
            // never a reason to refuse the whole policy.
            let copy = copy.as_deref().and_then(|path| match read_source(path) {
                Ok(report) => Some(report),
                Err(e) => {
                    for e in &e.0 {
                        tracing::warn!(list = %file.name, "subscription copy not used: {e}");
                    }
                    None
                }
            });
            insert(&mut batch);
            owners.resize(patterns.len(), tag);
            let report = read.unwrap_or_else(|e| {
                errors.extend(e.0);
                None
            });
            lists.push(ListMeta {
                name: file.name,
                action: file.action,
                description: file.description,
                block_response: file.block_response.unwrap_or(config.server.block_response),
                domains: distinct,
                patterns: list_patterns,
                file: report,
                copy,
                matches: Default::default(),
            });
        }
        // Each pattern compiled alone; together they may still pass the size limit.
        let patterns = match patterns.is_empty() {
            true => None,
            false => match lists::formats::compile_patterns(&patterns) {
                Ok(regex) => Some(Patterns { regex, owners }),
                Err(why) => {
                    errors.push(LoadError::File {
                        path: config.blocklists.dir.clone(),
                        message: format!("the lists' {} patterns together: {why}", patterns.len()),
                    });
                    None
                }
            },
        };
        if full {
            errors.push(LoadError::File {
                path: config.blocklists.dir.clone(),
                message: "the lists hold more than 4 GiB of names; hushd cannot load them".into(),
            });
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        Ok(Self {
            access: ClientAccess::from_config(config),
            groups,
            lists,
            domains: builder.build(),
            patterns,
            bypass: config.server.bypass,
            block_ttl: config.server.block_ttl,
        })
    }

    pub fn lists(&self) -> &[ListMeta] {
        &self.lists
    }

    /// Lines each list's file left out, as `(list, reason, lines)`. Every list has its
    /// `invalid_name` count, 0 included, so the series exists (and `rate()` works) before the
    /// first bad line; other reasons appear once they occur.
    pub fn skipped(&self) -> Vec<(&str, &'static str, usize)> {
        let invalid = lists::formats::SkipReason::InvalidName;
        let mut out = Vec::new();
        for l in &self.lists {
            let mut by_reason = std::collections::BTreeMap::from([(invalid, 0)]);
            for tally in l.file.iter().chain(&l.copy).map(|f| &f.tally) {
                for (reason, n) in &tally.skipped {
                    *by_reason.entry(*reason).or_default() += n;
                }
            }
            for (reason, n) in by_reason {
                out.push((l.name.as_str(), reason.as_str(), n));
            }
        }
        out
    }

    /// Bytes held by the name matcher.
    pub fn heap_bytes(&self) -> usize {
        self.domains.heap_bytes()
    }

    /// Distinct names across all lists.
    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    /// Whether `client` is in `allow_clients`.
    pub fn allows(&self, client: IpAddr) -> bool {
        self.access.allows(client)
    }

    /// Who `client` is: served or not, its group, its name.
    pub fn client(&self, client: IpAddr) -> Client<'_> {
        self.access.lookup(client)
    }

    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    pub fn group(&self, client: &Client<'_>) -> &Group {
        self.groups.get(client.group)
    }

    /// What to do with `qname` asked by `client`: refused outside `allow_clients`; answered by
    /// hushd itself when it is a bypass probe (`bypass::bypass_answer`, before any list, so no
    /// allow entry undoes it); else what the lists say.
    pub fn decide(&self, client: IpAddr, qname: &Name) -> Verdict<'_> {
        let client = self.access.lookup(client);
        if !client.allowed {
            return Verdict::Refuse;
        }
        if let Some(answer) = self.bypass(qname) {
            return Verdict::Bypass(answer);
        }
        let group = self.groups.get(client.group);
        Self::verdict(self.name_match(group, &NameKey::new(qname), Via::Name))
    }

    /// hushd's own answer to `qname` when it is a bypass probe: `bypass::bypass_answer` under
    /// this policy's `[server]` toggles. Asked after `allow_clients`, before any list.
    pub fn bypass(&self, qname: &Name) -> Option<BypassAnswer> {
        bypass::bypass_answer(&self.bypass, qname)
    }

    /// Block when the match's action (for this client) is block; otherwise forward.
    pub fn verdict(found: Option<Match<'_>>) -> Verdict<'_> {
        match found {
            Some(m) if m.action == Action::Block => Verdict::Block(m),
            other => Verdict::Forward(other),
        }
    }

    /// The list that decides `key` for `group`'s members, if any: among every list that
    /// applies to the group with an entry covering the name (a list's own `@@` exceptions
    /// cancel that list's entries), the highest rank of the action the group gives it; on equal
    /// rank the more specific entry names the list. Patterns are run only when no name entry
    /// of the highest rank (allow) matched, and win only by a strictly higher rank. `via` says
    /// what `key` is (the name asked, or a CNAME target in its answer).
    pub fn name_match(&self, group: &Group, key: &NameKey, via: Via) -> Option<Match<'_>> {
        let mut excepted = false;
        let best = self.best_of_names(group, key, |_| true, &mut excepted);
        let (best, cancelled) = if excepted {
            let mut cancelled = Vec::new();
            self.domains.visit(key, |tag, kind| {
                if kind == Kind::Except {
                    cancelled.push(tag);
                }
            });
            let best = self.best_of_names(group, key, |t| !cancelled.contains(&t), &mut excepted);
            (best, cancelled)
        } else {
            (best, Vec::new())
        };
        let best = best.map(|(list, action)| Match { list, action, via });
        if best.is_some_and(|m| m.action == Action::Allow) {
            return best;
        }
        let Some(patterns) = &self.patterns else {
            return best;
        };
        if !patterns.regex.is_match(key.as_bytes()) {
            return best;
        }
        patterns
            .regex
            .matching(key.as_bytes())
            .into_iter()
            .filter_map(|p| patterns.owners.get(p))
            .filter(|t| !cancelled.contains(t))
            .filter_map(|&t| Some((self.lists.get(usize::from(t))?, group.action(t)?)))
            .fold(best, |best, (list, action)| match best {
                Some(b) if rank(b.action) >= rank(action) => Some(b),
                _ => Some(Match { list, action, via }),
            })
    }

    fn best_of_names(
        &self,
        group: &Group,
        key: &NameKey,
        counts: impl Fn(Tag) -> bool,
        excepted: &mut bool,
    ) -> Option<(&ListMeta, Action)> {
        let mut best = None::<(&ListMeta, Action)>;
        self.domains.visit(key, |tag, kind| {
            if kind == Kind::Except {
                *excepted = true;
                return;
            }
            if !counts(tag) {
                return;
            }
            let (Some(action), Some(l)) = (group.action(tag), self.lists.get(usize::from(tag)))
            else {
                return;
            };
            match best {
                Some((_, b)) if rank(b) >= rank(action) => {}
                _ => best = Some((l, action)),
            }
        });
        best
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(
            Path::new("/etc/hushd/hushd.toml"),
            &format!("[server]\nallow_clients = [\"10.0.0.0/8\", \"fd00::/8\"]\n{extra}\n[upstream]\nservers = [\"192.0.2.1\"]\n"),
        )
        .unwrap()
    }

    fn list(name: &str, action: Action, domains: &[&str]) -> ListFile {
        ListFile::inline(PathBuf::from(format!("/l/{name}.toml")), action, domains)
    }

    fn verdict(p: &Policy, client: &str, q: &str) -> (String, Option<String>) {
        let v = p.decide(client.parse().unwrap(), &Name::from_ascii(q).unwrap());
        match v {
            Verdict::Refuse => ("refuse".into(), None),
            Verdict::Bypass(a) => ("bypass".into(), Some(a.toggle().into())),
            Verdict::Block(l) => ("block".into(), Some(l.list.name.clone())),
            Verdict::Forward(l) => (
                "forward".into(),
                l.map(|l| format!("{}:{}", l.list.name, l.action.as_str())),
            ),
        }
    }

    #[test]
    fn clients_outside_allow_clients_are_refused() {
        let p = Policy::build(&config(""), vec![]).unwrap();
        assert_eq!(verdict(&p, "10.1.2.3", "example.com").0, "forward");
        assert_eq!(verdict(&p, "fd12::1", "example.com").0, "forward");
        assert_eq!(verdict(&p, "192.168.1.1", "example.com").0, "refuse");
        assert_eq!(verdict(&p, "::ffff:10.0.0.1", "example.com").0, "forward");
    }

    #[test]
    fn each_group_sees_its_own_lists_and_actions() {
        let c = config(concat!(
            "[clients]\n\"reception-tv\" = \"10.9.0.40\"\n",
            "[[groups]]\nname = \"iot\"\nclients = [\"10.0.5.0/24\", \"reception-tv\"]\n",
            "lists = [\"samsung\", \"xiaomi\"]\nactions = { samsung = \"block\" }\n",
            "[[groups]]\nname = \"staff\"\nclients = [\"10.0.6.0/24\"]\nlists = [\"samsung\"]\n",
        ));
        let p = Policy::build(
            &c,
            vec![
                list("ads", Action::Block, &["ads.com"]),
                list("samsung", Action::Log, &["samsung.com", "shared.com"]),
                list("xiaomi", Action::Block, &["xiaomi.com", "shared.com"]),
            ],
        )
        .unwrap();
        let v = |client: &str, q: &str| verdict(&p, client, q);
        let block = |l: &str| ("block".to_string(), Some(l.to_string()));
        let forward = |l: Option<&str>| ("forward".to_string(), l.map(str::to_string));
        // the default group: every list, its own action
        assert_eq!(v("10.1.1.1", "a.samsung.com"), forward(Some("samsung:log")));
        assert_eq!(v("10.1.1.1", "shared.com"), block("xiaomi"));
        assert_eq!(v("10.1.1.1", "ads.com"), block("ads"));
        // iot: samsung blocked by the override, ads not among its lists
        assert_eq!(v("10.0.5.9", "samsung.com"), block("samsung"));
        assert_eq!(v("10.0.5.9", "ads.com"), forward(None));
        assert_eq!(v("10.0.5.9", "xiaomi.com"), block("xiaomi"));
        // a named client is a host route into its group
        assert_eq!(v("10.9.0.40", "samsung.com"), block("samsung"));
        assert_eq!(v("10.9.0.41", "samsung.com"), forward(Some("samsung:log")));
        // staff leaves xiaomi out: a name both lists hold must still be samsung's for staff
        assert_eq!(v("10.0.6.7", "shared.com"), forward(Some("samsung:log")));
        assert_eq!(v("10.0.6.7", "xiaomi.com"), forward(None));
        let who = p.client("10.9.0.40".parse().unwrap());
        assert_eq!(
            (p.group(&who).name.as_str(), who.name),
            ("iot", Some("reception-tv"))
        );
    }

    #[test]
    fn a_group_naming_a_missing_list_is_an_error() {
        let c = config(
            "[[groups]]\nname = \"iot\"\nclients = [\"10.0.5.0/24\"]\nlists = [\"samsng\"]\n",
        );
        let e = Policy::build(&c, vec![list("samsung", Action::Log, &["samsung.com"])])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("group \"iot\": lists entry \"samsng\" is not a list"),
            "{e}"
        );
    }

    #[test]
    fn bypass_answers_come_after_allow_clients_and_before_every_list() {
        let lists = || {
            vec![
                list(
                    "mine",
                    Action::Allow,
                    &["use-application-dns.net", "icloud.com"],
                ),
                list("doh", Action::Block, &["resolver.arpa"]),
            ]
        };
        let p = Policy::build(&config(""), lists()).unwrap();
        let c = "10.0.0.1";
        let bypass = |t: &str| ("bypass".to_string(), Some(t.to_string()));
        // an allow entry does not undo them, a block entry does not replace them
        assert_eq!(
            verdict(&p, c, "use-application-dns.net"),
            bypass("firefox_canary")
        );
        assert_eq!(
            verdict(&p, c, "mask-h2.icloud.com"),
            bypass("icloud_private_relay")
        );
        assert_eq!(
            verdict(&p, c, "_dns.resolver.arpa"),
            bypass("resolver_arpa")
        );
        // the rest is the lists' as before
        assert_eq!(
            verdict(&p, c, "www.use-application-dns.net"),
            ("forward".into(), Some("mine:allow".into()))
        );
        // a client outside allow_clients is refused, not answered
        assert_eq!(verdict(&p, "192.168.1.1", "mask.icloud.com").0, "refuse");
        // turned off: the lists decide
        let off =
            config("firefox_canary = false\nicloud_private_relay = false\nresolver_arpa = false\n");
        let p = Policy::build(&off, lists()).unwrap();
        assert_eq!(
            verdict(&p, c, "use-application-dns.net"),
            ("forward".into(), Some("mine:allow".into()))
        );
        assert_eq!(
            verdict(&p, c, "_dns.resolver.arpa"),
            ("block".into(), Some("doh".into()))
        );
    }

    #[test]
    fn block_log_allow_and_precedence() {
        let p = Policy::build(
            &config(""),
            vec![
                list("audit", Action::Log, &["xiaomi.com", "tracking.miui.com"]),
                list("mine", Action::Allow, &["ok.tracking.miui.com"]),
                list(
                    "xiaomi",
                    Action::Block,
                    &["tracking.miui.com", "mistat.xiaomi.com"],
                ),
            ],
        )
        .unwrap();
        let c = "10.0.0.1";
        assert_eq!(
            verdict(&p, c, "a.tracking.miui.com"),
            ("block".into(), Some("xiaomi".into()))
        );
        assert_eq!(
            verdict(&p, c, "mistat.xiaomi.com"),
            ("block".into(), Some("xiaomi".into()))
        );
        assert_eq!(
            verdict(&p, c, "api.xiaomi.com"),
            ("forward".into(), Some("audit:log".into()))
        );
        assert_eq!(
            verdict(&p, c, "x.ok.tracking.miui.com"),
            ("forward".into(), Some("mine:allow".into()))
        );
        assert_eq!(verdict(&p, c, "example.org"), ("forward".into(), None));
        // distinct names per list, and across lists
        let counts: Vec<_> = p
            .lists()
            .iter()
            .map(|l| (l.name.as_str(), l.domains))
            .collect();
        assert_eq!(counts, vec![("audit", 2), ("mine", 1), ("xiaomi", 2)]);
        assert_eq!(p.domain_count(), 4);
    }

    fn file_list(dir: &Path, name: &str, toml: &str, txt: &str) -> ListFile {
        std::fs::write(dir.join(format!("{name}.txt")), txt).unwrap();
        let path = dir.join(format!("{name}.toml"));
        let text = format!("{toml}\ndomains_file = \"{name}.txt\"\n");
        std::fs::write(&path, &text).unwrap();
        lists::parse_list(&path, &text).unwrap()
    }

    #[test]
    fn hosts_entries_are_exact_and_plain_ones_cover_subdomains() {
        let dir = tempfile::tempdir().unwrap();
        let p = Policy::build(
            &config(""),
            vec![
                file_list(
                    dir.path(),
                    "hosts",
                    "action = \"block\"",
                    "0.0.0.0 s3.amazonaws.com\n0.0.0.0 t.example\n",
                ),
                file_list(dir.path(), "plain", "action = \"log\"", "t.example\n"),
            ],
        )
        .unwrap();
        let c = "10.0.0.1";
        assert_eq!(verdict(&p, c, "s3.amazonaws.com").0, "block");
        assert_eq!(verdict(&p, c, "bucket.s3.amazonaws.com").0, "forward");
        // exact in one list, subdomains in another: both held, each where it applies
        assert_eq!(
            verdict(&p, c, "t.example"),
            ("block".into(), Some("hosts".into()))
        );
        assert_eq!(
            verdict(&p, c, "a.t.example"),
            ("forward".into(), Some("plain:log".into()))
        );
        assert_eq!(p.lists()[0].domains, 2);
        assert_eq!(p.lists()[0].file.as_ref().unwrap().format, Format::Hosts);
    }

    #[test]
    fn match_key_decides_bare_names_and_an_exact_allow_still_outranks() {
        let mut exact_block = list("b", Action::Block, &["ads.example"]);
        exact_block.match_kind = Some(lists::formats::Match::Exact);
        let p = Policy::build(
            &config(""),
            vec![
                list("allow", Action::Allow, &["ok.ads.example"]),
                exact_block,
                list("sub", Action::Block, &["ok.ads.example"]),
            ],
        )
        .unwrap();
        let c = "10.0.0.1";
        assert_eq!(verdict(&p, c, "ads.example").0, "block");
        assert_eq!(verdict(&p, c, "x.ads.example").0, "forward");
        assert_eq!(
            verdict(&p, c, "ok.ads.example"),
            ("forward".into(), Some("allow:allow".into()))
        );
    }

    #[test]
    fn an_adblock_exception_cancels_its_own_list_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = Policy::build(
            &config(""),
            vec![
                file_list(
                    dir.path(),
                    "easy",
                    "action = \"block\"",
                    "! adblock\n||example.com^\n@@||cdn.example.com^\n/^ads[0-9]*\\.cdn\\./\n||x.com^$client=10.0.0.5\n",
                ),
                // the same name as the block list's: the exception must not cancel it
                file_list(dir.path(), "other", "action = \"log\"", "example.com\n"),
            ],
        )
        .unwrap();
        let c = "10.0.0.1";
        assert_eq!(verdict(&p, c, "a.example.com").0, "block");
        assert_eq!(
            verdict(&p, c, "img.cdn.example.com"),
            ("forward".into(), Some("other:log".into()))
        );
        assert_eq!(
            verdict(&p, c, "cdn.example.com"),
            ("forward".into(), Some("other:log".into()))
        );
        // the exception cancels the list's pattern too
        assert_eq!(verdict(&p, c, "ads1.cdn.example.com").0, "forward");
        // a `$client` rule is skipped, never widened into a block for everyone
        assert_eq!(verdict(&p, c, "x.com"), ("forward".into(), None));
        let report = p.lists()[0].file.as_ref().unwrap();
        assert_eq!(
            report
                .tally
                .skipped
                .get(&lists::formats::SkipReason::Modifier),
            Some(&1)
        );
        assert_eq!(p.lists()[0].patterns, 1);
    }

    #[test]
    fn patterns_match_when_no_name_entry_of_higher_rank_does() {
        let mut ads = list("ads", Action::Block, &[]);
        ads.patterns = vec![r"^ads?[0-9]*\.".into()];
        let mut audit = list("audit", Action::Log, &[]);
        audit.patterns = vec![r"telemetry".into()];
        let p = Policy::build(
            &config(""),
            vec![
                ads,
                audit,
                list("allow", Action::Allow, &["ad1.good.example"]),
                list("log", Action::Log, &["ads.example"]),
            ],
        )
        .unwrap();
        let c = "10.0.0.1";
        assert_eq!(
            verdict(&p, c, "AD7.Example.com."),
            ("block".into(), Some("ads".into()))
        );
        assert_eq!(verdict(&p, c, "bad.example.com"), ("forward".into(), None));
        // a name entry of lower rank loses to a block pattern; an allow entry wins over it
        assert_eq!(verdict(&p, c, "ads.example").0, "block");
        assert_eq!(
            verdict(&p, c, "ad1.good.example"),
            ("forward".into(), Some("allow:allow".into()))
        );
        assert_eq!(
            verdict(&p, c, "x.telemetry.example"),
            ("forward".into(), Some("audit:log".into()))
        );
    }

    #[test]
    fn block_response_comes_from_the_list_or_the_server_default() {
        let mut special = list("b", Action::Block, &["b.com"]);
        special.block_response = Some(BlockResponse::Refused);
        let p = Policy::build(
            &config("block_response = \"null\""),
            vec![list("a", Action::Block, &["a.com"]), special],
        )
        .unwrap();
        assert_eq!(p.lists()[0].block_response, BlockResponse::Null);
        assert_eq!(p.lists()[1].block_response, BlockResponse::Refused);
    }
}

/// Names waiting to go into the matcher together (see `DomainSetBuilder::warm`).
#[derive(Default)]
struct NameBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    kinds: Vec<Kind>,
}

impl NameBatch {
    const SIZE: usize = 16;

    fn push(&mut self, name: &[u8], kind: Kind) {
        self.bytes.extend_from_slice(name);
        self.ends.push(self.bytes.len());
        self.kinds.push(kind);
    }

    fn is_full(&self) -> bool {
        self.ends.len() >= Self::SIZE
    }

    fn names(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.bytes[start..end])
    }

    fn entries(&self) -> impl Iterator<Item = (&[u8], Kind)> {
        self.names().zip(self.kinds.iter().copied())
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.kinds.clear();
    }
}
