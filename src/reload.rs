//! Live reload. A change to the config file, to any list file in the blocklist folder or to an
//! `[egress]` database (seen by `notify`), or a SIGHUP, triggers one reload: the whole new policy is built on the policy
//! thread (`policy_thread`), off the query path, and swapped in atomically. If anything is wrong, the old policy
//! stays in force in full, and every error is logged with its file, line and column.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::{
    config::Config,
    diagnostic::LoadErrors,
    egress::nft::{self, NftWriter},
    lists::{self, is_policy_file, refresh::Plan},
    metrics::Metrics,
    policy::Policy,
    policy_thread::PolicyThread,
};

/// Editors write a file in several steps (write a temporary file, rename it over, touch it);
/// one reload after they are done beats several during. 50 ms covers the writes the tests and
/// benchmarks make (sed -i, write and rename, append) and is a tenth of the 0.5 s budget.
const SETTLE: Duration = Duration::from_millis(50);

/// Asks for a reload; many requests in a burst make one reload.
pub type Trigger = mpsc::Sender<()>;

pub struct Reloader {
    running: Config,
    policy: Arc<ArcSwap<Policy>>,
    metrics: Arc<Metrics>,
    builder: PolicyThread,
    watcher: Option<RecommendedWatcher>,
    /// The folders watched, and the database files among what changes in them.
    watched: (Vec<PathBuf>, Vec<PathBuf>),
    trigger: Trigger,
    /// Where each new policy's subscriptions go (the `Refresher` follows them).
    plans: Option<tokio::sync::watch::Sender<Arc<Plan>>>,
    firewall: Firewall,
}

/// What `load_policy` does with the nftables sets lists and groups name.
#[derive(Clone)]
pub enum Firewall {
    /// `hushd check`: each set is checked with the kernel, nothing is written.
    Check,
    /// The daemon: each set is checked and registered with the writer that feeds it.
    Feed(NftWriter),
}

/// Loads the lists of `config` and builds the policy, with the subscriptions it holds: what
/// startup, `hushd check` and every reload do. A set that is missing or of the wrong kind fails
/// the load like any other bad key (at start hushd does not start; on reload the running policy
/// stays).
pub fn load_policy(config: &Config, firewall: &Firewall) -> Result<(Policy, Plan), LoadErrors> {
    let files = lists::load_dir(&config.blocklists.dir)?;
    let plan = Plan::new(config, &files);
    let mut policy = Policy::build(config, files)?;
    if !policy.set_refs().is_empty() {
        match firewall {
            Firewall::Check => policy.attach_sets(config, |sets| {
                nft::check_sets(sets).map(|_| nft::SetTargets::default())
            })?,
            Firewall::Feed(writer) => {
                writer.set_min_timeout(config.egress.min_timeout_secs);
                policy.attach_sets(config, |sets| writer.resolve(sets))?;
            }
        }
    }
    Ok((policy, plan))
}

impl Reloader {
    pub fn new(
        running: Config,
        policy: Arc<ArcSwap<Policy>>,
        metrics: Arc<Metrics>,
        builder: PolicyThread,
        trigger: Trigger,
        firewall: Firewall,
    ) -> Self {
        let mut reloader = Self {
            firewall,
            running,
            policy,
            metrics,
            builder,
            watcher: None,
            watched: Default::default(),
            trigger,
            plans: None,
        };
        reloader.watch();
        reloader
    }

    /// Publishes each reloaded policy's subscriptions on `plans`.
    pub fn with_plans(mut self, plans: tokio::sync::watch::Sender<Arc<Plan>>) -> Self {
        self.plans = Some(plans);
        self
    }

    /// Watches the folders (not the files: editors save by renaming a new file over the old
    /// one, which a watch on the file itself would lose, and so do database updaters).
    fn watch(&mut self) {
        let config_file = self.running.path.clone();
        let dirs = [
            config_file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            self.running.blocklists.dir.clone(),
        ];
        let egress = &self.running.egress;
        let databases: Vec<PathBuf> = [&egress.country_db, &egress.asn_db]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let database_dirs = databases
            .iter()
            .map(|db| db.parent().map(Path::to_path_buf).unwrap_or_default());
        let mut dirs: Vec<PathBuf> = dirs
            .into_iter()
            .chain(database_dirs)
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d
                }
            })
            .collect();
        let list_dir = dirs[1].clone();
        // One watch per folder: the databases often sit beside the config.
        let mut seen = Vec::new();
        dirs.retain(|d| {
            let new = !seen.contains(d);
            seen.push(d.clone());
            new
        });
        let watched = (dirs, databases);
        if self.watcher.is_some() && watched == self.watched {
            return;
        }
        let (dirs, databases) = &watched;
        let trigger = self.trigger.clone();
        let databases_seen = databases.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            // Only the config file itself, list files in the list folder and the databases: other
            // files beside them (logs, notes, an updater's temporary file) must not cost a reload.
            let relevant = |p: &PathBuf| {
                p.file_name() == config_file.file_name()
                    || (is_policy_file(p) && same_dir(p.parent(), &list_dir))
                    || databases_seen.iter().any(|db| {
                        p.file_name() == db.file_name() && same_dir(p.parent(), parent_dir(db))
                    })
            };
            if event.paths.iter().any(relevant) {
                // Full channel: a reload is already pending, which will see this change too.
                let _ = trigger.try_send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch files; reload with SIGHUP");
                return;
            }
        };
        for dir in dirs {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::error!(dir = %dir.display(), error = %e, "cannot watch folder; reload with SIGHUP");
            }
        }
        self.watcher = Some(watcher);
        self.watched = watched;
    }

    pub async fn run(mut self, mut requests: mpsc::Receiver<()>) {
        while requests.recv().await.is_some() {
            // Let the burst settle, then reload once.
            loop {
                match tokio::time::timeout(SETTLE, requests.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            self.reload().await;
        }
    }

    async fn reload(&mut self) {
        let path = self.running.path.clone();
        let firewall = self.firewall.clone();
        let started = std::time::Instant::now();
        let loaded = self
            .builder
            .run(move || -> Result<(Config, Policy, Plan), LoadErrors> {
                let config = Config::load(&path)?;
                let (policy, plan) = load_policy(&config, &firewall)?;
                Ok((config, policy, plan))
            })
            .await;
        let (config, policy, plan) = match loaded {
            Some(Ok(loaded)) => loaded,
            Some(Err(errors)) => {
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
                tracing::error!(
                    errors = errors.0.len(),
                    "reload rejected; the previous policy stays in force"
                );
                self.metrics.reload_error();
                return;
            }
            None => {
                tracing::error!("the policy build failed; the previous policy stays in force");
                self.metrics.reload_error();
                return;
            }
        };
        warn_about_restart_only_changes(&self.running, &config);
        self.metrics.policy_loaded(
            policy.lists().iter().map(|l| (&*l.name, l.domains)),
            policy.domain_count(),
        );
        self.metrics.entries_skipped(policy.skipped());
        let (lists, names, matcher_bytes) = (
            policy.lists().len(),
            policy.domain_count(),
            policy.heap_bytes(),
        );
        let old = self.policy.swap(Arc::new(policy));
        tracing::info!(
            lists,
            names,
            matcher_bytes,
            build_ms = started.elapsed().as_millis() as u64,
            "policy reloaded"
        );
        self.builder.drop_later(old);
        if let Some(plans) = &self.plans {
            for note in plan.notes() {
                tracing::warn!("{note}");
            }
            plans.send_if_modified(|running| {
                let changed = **running != plan;
                if changed {
                    *running = Arc::new(plan);
                }
                changed
            });
        }
        let watch_changed = config.blocklists.dir != self.running.blocklists.dir
            || config.egress != self.running.egress;
        // Keep what is running (listeners, upstreams, cache) but track the config now in force.
        self.running.server.allow_clients = config.server.allow_clients;
        self.running.server.block_response = config.server.block_response;
        self.running.server.block_ttl = config.server.block_ttl;
        self.running.server.bypass = config.server.bypass;
        self.running.blocklists = config.blocklists;
        self.running.egress = config.egress;
        if watch_changed {
            self.watch();
        }
    }
}

/// Settings that bind sockets or size long-lived state are read at start only.
fn warn_about_restart_only_changes(running: &Config, new: &Config) {
    let changed = [
        ("server.listen", running.server.listen != new.server.listen),
        (
            "server.tcp_idle_timeout_secs",
            running.server.tcp_idle_timeout != new.server.tcp_idle_timeout,
        ),
        ("upstream", running.upstream != new.upstream),
        ("metrics", running.metrics != new.metrics),
        ("cache", running.cache != new.cache),
        ("limits", running.limits != new.limits),
        ("evidence", running.evidence != new.evidence),
        ("querylog", running.querylog != new.querylog),
    ];
    for (key, _) in changed.iter().filter(|(_, c)| *c) {
        tracing::warn!(
            key,
            "changed in the config file; it takes effect after a restart"
        );
    }
}

/// The folder of `file` as `watch` watches it (`.` for a bare file name).
fn parent_dir(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `dir` (a changed file's folder, as notify reports it) is `watched`. notify reports
/// paths under the folder as it was given; both may be relative, so compare canonical forms
/// when they differ.
fn same_dir(dir: Option<&Path>, watched: &Path) -> bool {
    let Some(dir) = dir else { return false };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    dir == watched
        || match (dir.canonicalize(), watched.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}
