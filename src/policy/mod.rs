//! The policy: who may ask, and what happens to a name. A `Policy` is immutable: a reload builds
//! a whole new one off the hot path and swaps it in atomically, so a query always sees one
//! consistent policy, never half of a reload. `decide` is a pure function of the policy, the
//! client address and the name, so it is tested without sockets.

pub mod access;
pub mod matcher;

use std::{net::IpAddr, sync::OnceLock};

use hickory_proto::rr::Name;

use self::{
    access::ClientAccess,
    matcher::{DomainSet, DomainSetBuilder, NameKey, Tag},
};
pub use crate::{config::BlockResponse, lists::Action};
use crate::{
    config::Config,
    diagnostic::{LoadError, LoadErrors},
    lists::{self, ListFile},
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
    /// This list's `hushd_list_matches_total` counter, resolved on its first match and kept
    /// for the life of this policy.
    pub matches: OnceLock<prometheus::IntCounter>,
}

impl ListMeta {
    /// Counts a match in `metrics` under this list's name and action.
    pub fn count_match(&self, metrics: &crate::metrics::Metrics) {
        self.matches
            .get_or_init(|| metrics.list_match_counter(&self.name, self.action.as_str()))
            .inc();
    }
}

/// What to do with one query.
#[derive(Debug, Clone, Copy)]
pub enum Verdict<'p> {
    /// The client is not in `allow_clients`.
    Refuse,
    /// Answer with the list's block response.
    Block(&'p ListMeta),
    /// Forward upstream; `Some` names the log or allow list that matched.
    Forward(Option<&'p ListMeta>),
}

#[derive(Debug, Default)]
pub struct Policy {
    access: ClientAccess,
    lists: Vec<ListMeta>,
    domains: DomainSet,
    pub block_ttl: u32,
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
        if files.len() > usize::from(Tag::MAX) {
            return Err(LoadError::File {
                path: config.blocklists.dir.clone(),
                message: format!(
                    "{} list files; hushd supports at most {}",
                    files.len(),
                    Tag::MAX
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
        let mut builder = DomainSetBuilder::with_capacity(total);
        let mut lists: Vec<ListMeta> = Vec::with_capacity(files.len());
        let mut errors = Vec::new();
        let mut full = false;
        let mut batch = NameBatch::default();
        for (tag, file) in files.into_iter().enumerate() {
            let tag = tag as Tag;
            let file_rank = rank(file.action);
            let mut distinct = 0;
            let mut insert = |batch: &mut NameBatch| {
                builder.warm(batch.names());
                for name in batch.names() {
                    let outcome = builder.insert(name, tag, |old: Tag| {
                        file_rank > lists.get(usize::from(old)).map_or(0, |l| rank(l.action))
                    });
                    match outcome {
                        Some(matcher::Inserted::Kept(t)) if t == tag => {}
                        Some(_) => distinct += 1,
                        None => full = true,
                    }
                }
                batch.clear();
            };
            let mut add = |name: &[u8]| {
                batch.push(name);
                if batch.is_full() {
                    insert(&mut batch);
                }
            };
            for d in &file.domains {
                add(d.as_bytes());
            }
            let read = match &file.domains_file {
                Some(path) => lists::read_domains_file(path, &mut add),
                None => Ok(()),
            };
            // A subscription's last good copy is one more source file of the list. It passed
            // its checks when it was stored, so a stray bad line in it is the publisher's and
            // is skipped with a warning, never a reason to refuse the whole policy.
            if let Some(copy) = stored_copy(config, &file)
                && let Err(skipped) = lists::read_domains_file(&copy, &mut add)
            {
                for e in &skipped.0 {
                    tracing::warn!(list = %file.name, "skipped: {e}");
                }
            }
            insert(&mut batch);
            if let Err(e) = read {
                errors.extend(e.0);
            }
            lists.push(ListMeta {
                name: file.name,
                action: file.action,
                description: file.description,
                block_response: file.block_response.unwrap_or(config.server.block_response),
                domains: distinct,
                matches: OnceLock::new(),
            });
        }
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
            access: ClientAccess::new(config.server.allow_clients.clone()),
            lists,
            domains: builder.build(),
            block_ttl: config.server.block_ttl,
        })
    }

    pub fn lists(&self) -> &[ListMeta] {
        &self.lists
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

    pub fn decide(&self, client: IpAddr, qname: &Name) -> Verdict<'_> {
        if !self.access.allows(client) {
            return Verdict::Refuse;
        }
        let key = NameKey::new(qname);
        // Most specific first; on equal rank the more specific entry names the list.
        let best = self
            .domains
            .matches(&key)
            .filter_map(|tag| self.lists.get(usize::from(tag)))
            .fold(None::<&ListMeta>, |best, l| match best {
                Some(b) if rank(b.action) >= rank(l.action) => Some(b),
                _ => Some(l),
            });
        match best {
            Some(l) if l.action == Action::Block => Verdict::Block(l),
            other => Verdict::Forward(other),
        }
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
        ListFile {
            name: name.into(),
            path: PathBuf::from(format!("/l/{name}.toml")),
            action,
            description: None,
            block_response: None,
            domains: domains.iter().map(ToString::to_string).collect(),
            domains_file: None,
            subscription: None,
        }
    }

    fn verdict(p: &Policy, client: &str, q: &str) -> (String, Option<String>) {
        let v = p.decide(client.parse().unwrap(), &Name::from_ascii(q).unwrap());
        match v {
            Verdict::Refuse => ("refuse".into(), None),
            Verdict::Block(l) => ("block".into(), Some(l.name.clone())),
            Verdict::Forward(l) => (
                "forward".into(),
                l.map(|l| format!("{}:{}", l.name, l.action.as_str())),
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
}

impl NameBatch {
    const SIZE: usize = 16;

    fn push(&mut self, name: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.ends.push(self.bytes.len());
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

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}
