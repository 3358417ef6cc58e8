//! The policy: who may ask, and what happens to a name. A `Policy` is immutable: a reload builds
//! a whole new one off the hot path and swaps it in atomically, so a query always sees one
//! consistent policy, never half of a reload. `decide` is a pure function of the policy, the
//! client address and the name, so it is tested without sockets.

pub mod access;
pub mod bypass;
pub mod geo;
pub mod groups;
pub mod ip_rules;
pub mod matcher;

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
};

use hickory_proto::rr::Name;

use self::{
    access::{Client, ClientAccess},
    bypass::{BypassAnswer, BypassDefence},
    geo::{Geo, GeoBuilder},
    groups::{Group, Groups},
    ip_rules::{IpRules, IpRulesBuilder},
    matcher::{DomainSet, DomainSetBuilder, Kind, NameKey, Tag},
};
pub use crate::{config::BlockResponse, lists::Action};
use crate::{
    config::Config,
    destinations::DestinationsRef,
    diagnostic::{LoadError, LoadErrors},
    egress::{
        SetRef,
        nft::{CheckError, SetTargets},
    },
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
    /// Shared, so a match handed to the evidence store costs a reference count, not a copy.
    pub name: Arc<str>,
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
    /// `nft_sets`: the sets every address answered for a name this list decides goes into.
    pub nft_sets: Vec<SetRef>,
    /// Those sets as the firewall writer knows them, once `Policy::attach_sets` ran.
    pub sets: SetTargets,
    /// This list's `hushd_list_matches_total` counters, one per (action, via), each resolved on
    /// its first match and kept for the life of this policy. The action is the one applied, which
    /// a group may have overridden.
    pub matches: [[OnceLock<prometheus::IntCounter>; Via::COUNT]; 3],
}

/// How a list matched a query: the name asked, a CNAME/DNAME target in its answer, or an
/// address in its answer (by range, country or network). The `via` label of
/// `hushd_list_matches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// A list matched by where an answer leads, and what it matched (for the block reply's EDE
/// text and the logs): `CNAME x.tiktokv.com`, `IP 203.0.113.7`.
#[derive(Debug, Clone)]
pub struct AnswerMatch<'p> {
    pub matched: Match<'p>,
    pub what: String,
}

impl<'p> AnswerMatch<'p> {
    fn target(matched: Match<'p>, target: &[u8]) -> Self {
        Self {
            matched,
            what: format!("CNAME {}", String::from_utf8_lossy(target)),
        }
    }

    /// `IP 203.0.113.7`, or with where it is when a country or network rule matched
    /// (`IP 203.0.113.7, country CN, AS64500 (Example Net)`).
    fn address(policy: &Policy, matched: Match<'p>, addr: IpAddr) -> Self {
        let what = match matched.via {
            Via::Country | Via::Asn => format!("IP {addr}, {}", policy.geo.place(addr)),
            _ => format!("IP {addr}"),
        };
        Self { matched, what }
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
    /// Answer addresses in lists' `ips` and `ips_file`.
    ip_rules: IpRules,
    /// Answer addresses' countries and networks, and lists' `countries` and `asns`.
    geo: Geo,
    /// Which bypass-defence answers are on; part of the policy so a reload applies them.
    bypass: BypassDefence,
    /// hushd's encrypted listeners, as `_dns.resolver.arpa` SVCB answers them (DDR).
    designation: bypass::Designation,
    /// Some list or group feeds a firewall set (see `attach_sets`).
    feeds_sets: bool,
    pub block_ttl: u32,
    /// `[server] health_name`: a load balancer's health check, answered by hushd itself.
    pub health_name: Option<hickory_proto::rr::LowerName>,
    /// `[server] drain_secs`: read at SIGTERM, so a reload applies it like the rest.
    pub drain: std::time::Duration,
    /// Unique to this built policy (0 for a default one): what hushd keeps of the replies a
    /// policy made (`block_replies`) is never sent under another.
    generation: u64,
}

/// Every list's patterns in one automaton; `owners[i]` is the list of pattern `i`. The
/// automaton is shared with the policy before when the patterns are the same.
#[derive(Debug)]
struct Patterns {
    regex: Arc<lists::formats::PatternSet>,
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
        let (mut ip_rules, mut geo) = (IpRules::builder(), GeoBuilder::default());
        for (tag, file) in files.into_iter().enumerate() {
            let tag = tag as Tag;
            add_address_rules(&mut ip_rules, &mut geo, tag, &file, &mut errors);
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
                name: file.name.into(),
                action: file.action,
                description: file.description,
                block_response: file.block_response.unwrap_or(config.server.block_response),
                domains: distinct,
                patterns: list_patterns,
                file: report,
                copy,
                matches: Default::default(),
                nft_sets: file.nft_sets,
                sets: SetTargets::default(),
            });
        }
        // Each pattern compiled alone; together they may still pass the size limit.
        let patterns = match patterns.is_empty() {
            true => None,
            false => match lists::formats::shared_patterns(std::mem::take(&mut patterns)) {
                Ok(regex) => Some(Patterns { regex, owners }),
                Err(why) => {
                    errors.push(LoadError::File {
                        path: config.blocklists.dir.clone(),
                        message: format!("the lists' {} patterns together: {why}", owners.len()),
                    });
                    None
                }
            },
        };
        let geo = geo
            .build(&config.egress, &config.path)
            .map_err(|e| errors.extend(e))
            .unwrap_or_default();
        if full {
            errors.push(LoadError::File {
                path: config.blocklists.dir.clone(),
                message: "the lists hold more than 512 MiB of names; hushd cannot load them".into(),
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
            ip_rules: ip_rules.build(),
            geo,
            bypass: config.server.bypass,
            designation: designation(config),
            feeds_sets: false,
            block_ttl: config.server.block_ttl,
            health_name: config.server.health_name.clone(),
            drain: config.server.drain,
            generation: {
                static BUILT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        })
    }

    /// Which policy decided by which of its lists (`list` is one of `lists()`), for replies
    /// kept by their request.
    pub fn decided_by(&self, list: &ListMeta) -> crate::block_replies::Decided {
        // the list's place among this policy's lists, from its address
        let offset = (std::ptr::from_ref(list) as usize).wrapping_sub(self.lists.as_ptr() as usize);
        crate::block_replies::Decided {
            generation: self.generation,
            list: offset / size_of::<ListMeta>().max(1),
        }
    }

    /// Calls `f` with every list an answer address is in, and how: `Via::Ip` for its `ips`,
    /// `Via::Country` / `Via::Asn` for its `countries` / `asns` (a list may come more than once,
    /// once per way). IPv4-mapped IPv6 addresses count as IPv4. No allocation; a database
    /// lookup only if some list has `countries` or `asns`.
    pub fn address_lists(&self, addr: IpAddr, mut f: impl FnMut(Tag, Via)) {
        self.ip_rules.visit(addr, |tag| f(tag, Via::Ip));
        self.geo.visit(addr, f);
    }

    /// Every nftables set the lists and groups name, each once, in order.
    pub fn set_refs(&self) -> Vec<SetRef> {
        let mut refs: Vec<SetRef> = self
            .lists
            .iter()
            .flat_map(|l| l.nft_sets.iter().cloned())
            .chain(
                self.groups
                    .iter()
                    .flat_map(|g| g.egress_set.iter().cloned()),
            )
            .collect();
        refs.sort();
        refs.dedup();
        refs
    }

    /// Resolves every list's `nft_sets` and group's `egress_set` with `resolve` (the firewall
    /// writer checks them with the kernel and gives their ids): a set that is missing or of the
    /// wrong kind is an error naming the list or group, as for any other key.
    pub fn attach_sets(
        &mut self,
        config: &Config,
        mut resolve: impl FnMut(&[SetRef]) -> Result<SetTargets, Vec<CheckError>>,
    ) -> Result<(), LoadErrors> {
        let mut errors = Vec::new();
        let mut fail = |who: String, path: std::path::PathBuf, e: Vec<CheckError>| {
            for e in e {
                errors.push(LoadError::File {
                    path: path.clone(),
                    message: format!("{who}: {e}"),
                });
            }
        };
        for list in &mut self.lists {
            if list.nft_sets.is_empty() {
                continue;
            }
            match resolve(&list.nft_sets) {
                Ok(targets) => list.sets = targets,
                Err(e) => fail(
                    format!("list {} nft_sets", list.name),
                    config.blocklists.dir.join(format!("{}.toml", list.name)),
                    e,
                ),
            }
        }
        for group in self.groups.iter_mut() {
            if group.egress_set.is_empty() {
                continue;
            }
            match resolve(&group.egress_set) {
                Ok(targets) => group.egress = targets,
                Err(e) => fail(
                    format!("group {:?} egress_set", group.name),
                    config.path.clone(),
                    e,
                ),
            }
        }
        self.feeds_sets = self.lists.iter().any(|l| !l.sets.is_empty())
            || self.groups.iter().any(|g| !g.egress.is_empty());
        match errors.is_empty() {
            true => Ok(()),
            false => Err(LoadErrors(errors)),
        }
    }

    /// Whether any answer can feed a firewall set: the query path skips all set work otherwise.
    pub fn feeds_sets(&self) -> bool {
        self.feeds_sets
    }

    /// The answer-address table (`ips`, `ips_file`).
    pub fn ip_rules(&self) -> &IpRules {
        &self.ip_rules
    }

    /// The country and network databases, with the lists' `countries` and `asns`.
    pub fn geo(&self) -> &Geo {
        &self.geo
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
                out.push((&*l.name, reason.as_str(), n));
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
    /// The encrypted listeners DDR advertises (none without `tls_listen` / `https_listen`).
    pub fn designation(&self) -> &bypass::Designation {
        &self.designation
    }

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

    /// What an answer's destinations add to the decision for `group`'s client: `asked` is the
    /// question name's own match. An allow match on the name ends it (the admin exempted what
    /// the device asks, wherever it leads). Otherwise each CNAME/DNAME target is matched like a
    /// name (via `cname`) and each answered address against the lists' address rules; the
    /// first block found decides, else the first audit match is reported. Allow entries for a
    /// target or an address exempt that one only.
    pub fn answer_match<'p>(
        &'p self,
        group: &Group,
        asked: Option<Match<'p>>,
        destinations: DestinationsRef<'_>,
    ) -> Option<AnswerMatch<'p>> {
        if asked.is_some_and(|m| m.action == Action::Allow) || destinations.is_empty() {
            return None;
        }
        let mut logged = None;
        for target in destinations.targets() {
            let key = NameKey::from_key_bytes(target);
            match self.name_match(group, &key, Via::Cname) {
                Some(m) if m.action == Action::Block => {
                    return Some(AnswerMatch::target(m, target));
                }
                Some(m) if m.action == Action::Log && logged.is_none() => {
                    logged = Some(AnswerMatch::target(m, target));
                }
                _ => {}
            }
        }
        if self.ip_rules.is_empty() && self.geo.is_empty() {
            return logged;
        }
        for (addr, _) in destinations.addresses() {
            match self.address_match(group, addr) {
                Some(m) if m.action == Action::Block => {
                    return Some(AnswerMatch::address(self, m, addr));
                }
                Some(m) if m.action == Action::Log && logged.is_none() => {
                    logged = Some(AnswerMatch::address(self, m, addr));
                }
                _ => {}
            }
        }
        logged
    }

    /// The list that decides answer address `addr` for `group`: the highest rank among the
    /// lists the group applies whose ranges, countries or networks hold it (an allow list's
    /// exempts the address).
    pub fn address_match(&self, group: &Group, addr: IpAddr) -> Option<Match<'_>> {
        let mut best = None::<Match<'_>>;
        self.address_lists(addr, |tag, via| {
            let (Some(action), Some(list)) = (group.action(tag), self.lists.get(usize::from(tag)))
            else {
                return;
            };
            match best {
                Some(b) if rank(b.action) >= rank(action) => {}
                _ => best = Some(Match { list, action, via }),
            }
        });
        best
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

/// DDR's designation of the encrypted listeners: the target is the certificate's first DNS
/// name (what a client checks the certificate for), or the owner name when it has none or the
/// file cannot be read now (startup and `hushd check` report a bad certificate themselves).
fn designation(config: &Config) -> bypass::Designation {
    let server = &config.server;
    let Some(files) = &server.tls else {
        return bypass::Designation::default();
    };
    let target = crate::certs::dns_name(&files.cert_file).unwrap_or_else(Name::root);
    bypass::Designation::new(&target, &server.tls_listen, &server.https_listen)
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
            Verdict::Block(l) => ("block".into(), Some(l.list.name.to_string())),
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
            (&*p.group(&who).name, who.name.map(|n| &**n)),
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
        let counts: Vec<_> = p.lists().iter().map(|l| (&*l.name, l.domains)).collect();
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

    fn address_lists(p: &Policy, addr: &str) -> Vec<String> {
        let mut out = Vec::new();
        p.address_lists(addr.parse().unwrap(), |tag, via| {
            out.push(format!(
                "{}:{}",
                p.lists()[usize::from(tag)].name,
                via.as_str()
            ));
        });
        out
    }

    #[test]
    fn answer_addresses_match_by_ips_ips_file_country_and_network() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mmdb");
        std::fs::write(
            dir.path().join("doh.txt"),
            "# resolvers\n192.0.2.53\n2001:db8:2::/48\n",
        )
        .unwrap();
        let mut doh = list("doh", Action::Block, &[]);
        doh.ips = vec!["198.51.100.0/24".parse().unwrap()];
        doh.ips_file = Some(dir.path().join("doh.txt"));
        let mut cn = list("cn", Action::Log, &[]);
        cn.countries = vec!["CN".into()];
        let mut net = list("net", Action::Log, &[]);
        net.asns = vec![64501];
        net.ips = vec!["192.0.2.0/24".parse().unwrap()];
        let p = Policy::build(
            &config(&format!(
                "\n[egress]\ncountry_db = \"{0}/country.mmdb\"\nasn_db = \"{0}/asn.mmdb\"",
                fixtures.display()
            )),
            vec![cn, doh, net],
        )
        .unwrap();
        assert_eq!(
            address_lists(&p, "192.0.2.53"),
            ["doh:ip", "net:ip", "cn:country"]
        );
        assert_eq!(
            address_lists(&p, "::ffff:192.0.2.1"),
            ["net:ip", "cn:country"]
        );
        assert_eq!(address_lists(&p, "198.51.100.7"), ["doh:ip", "net:asn"]);
        assert_eq!(address_lists(&p, "2001:db8:2::1"), ["doh:ip", "net:asn"]);
        assert_eq!(address_lists(&p, "2001:db8:1::1"), ["cn:country"]);
        assert_eq!(address_lists(&p, "203.0.113.1"), Vec::<String>::new());
        assert_eq!(p.ip_rules().listed(1), 3);
        // names are untouched by address rules
        assert_eq!(
            verdict(&p, "10.0.0.1", "example.com"),
            ("forward".into(), None)
        );
    }

    #[test]
    fn address_rule_errors_fail_the_build() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.txt"), "192.0.2.0/24\n192.0.2.1/24\n").unwrap();
        let mut bad = list("bad", Action::Block, &[]);
        bad.ips_file = Some(dir.path().join("bad.txt"));
        let mut cn = list("cn", Action::Log, &[]);
        cn.countries = vec!["CN".into()];
        let err = Policy::build(&config(""), vec![bad, cn])
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(
            lines[0].contains("bad.txt:2:1: \"192.0.2.1/24\" has host bits set"),
            "{err}"
        );
        assert!(
            lines[1].starts_with(
                "/l/cn.toml: countries needs [egress] country_db in /etc/hushd/hushd.toml"
            ),
            "{err}"
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

/// Puts the answer-address rules of `file` (its `ips`, `ips_file`, `countries`, `asns`) in the
/// builders; a bad `ips_file` line is an error at its place.
fn add_address_rules(
    ip_rules: &mut IpRulesBuilder,
    geo: &mut GeoBuilder,
    tag: Tag,
    file: &ListFile,
    errors: &mut Vec<LoadError>,
) {
    for &net in &file.ips {
        ip_rules.add(net, tag);
    }
    if let Some(path) = &file.ips_file
        && let Err(e) = lists::ips::read_ips_file(path, |_, net| ip_rules.add(net, tag))
    {
        errors.extend(e.0);
    }
    geo.add_list(tag, file);
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
