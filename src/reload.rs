//! Live reload. A change to the config file, to any list file in the blocklist folder or to an
//! `[egress]` database (seen by `notify`), or a SIGHUP, triggers one reload: the whole new policy is built on the policy
//! thread (`policy_thread`), off the query path, and swapped in atomically. If anything is wrong, the old policy
//! stays in force in full, and every error is logged with its file, line and column.
//!
//! The rest of the config applies too (`apply_live`): new upstreams, cache bounds, limits, the
//! evidence store and the query log. Only the keys in `config_diff::RESTART_ONLY` (the
//! listeners) wait for a restart, and the reload says so, key by key.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::{
    config::{Config, trusts_ad},
    config_diff::{self, Applies},
    diagnostic::{LoadError, LoadErrors},
    egress::nft::{self, NftWriter},
    evidence::{Evidence, querylog::QueryLog},
    handler::QueryHandler,
    limits::{TcpConnectionLimiter, resize_inflight},
    lists::{self, is_policy_file, refresh::Plan},
    metrics::Metrics,
    policy::Policy,
    policy_thread::PolicyThread,
    upstream::Upstream,
};

/// Editors write a file in several steps (write a temporary file, rename it over, touch it);
/// one reload after they are done beats several during. 50 ms covers the writes the tests and
/// benchmarks make (sed -i, write and rename, append) and is a tenth of the 0.5 s budget.
const SETTLE: Duration = Duration::from_millis(50);

/// Asks for a reload; many requests in a burst make one reload.
pub type Trigger = mpsc::Sender<()>;

pub struct Reloader {
    running: Config,
    /// The running config as its file has it, each restart-only key as hushd started with it.
    running_raw: toml::Table,
    live: Live,
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

/// The running parts a reload reconfigures beside the policy; each is shared with the query
/// path and swapped or resized in place, never rebuilt around it.
pub struct Live {
    /// A clone of the query handler: its upstream, cache, limiter, `max_inflight`, evidence sink
    /// and query log are the ones the listeners use.
    pub handler: QueryHandler,
    pub tcp: Arc<TcpConnectionLimiter>,
    /// The evidence writer (its thread), for the reload to replace and the shutdown to stop.
    pub evidence: Arc<Mutex<Option<Evidence>>>,
    /// Where the store is, for `/api/evidence` and the devices gauge.
    pub evidence_path: crate::evidence::StorePath,
    /// The running config (`running_raw`) as TOML, served at the metrics listener's `/config`
    /// for `hushd check --diff-running`.
    pub running_config: Arc<ArcSwap<String>>,
}

/// How long a reload waits for a replaced evidence or query-log writer's last flush.
const WRITER_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The config file as TOML, for `config_diff` (after `Config::parse` accepted it).
pub fn raw_config(path: &Path, text: &str) -> Result<toml::Table, LoadErrors> {
    toml::from_str(text).map_err(|e| LoadErrors(vec![LoadError::toml(path, text, &e)]))
}

/// The running config as `/config` serves it.
pub fn render_config(raw: &toml::Table) -> String {
    toml::to_string(raw).unwrap_or_default()
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        running: Config,
        running_raw: toml::Table,
        live: Live,
        policy: Arc<ArcSwap<Policy>>,
        metrics: Arc<Metrics>,
        builder: PolicyThread,
        trigger: Trigger,
        firewall: Firewall,
    ) -> Self {
        let mut reloader = Self {
            firewall,
            running,
            running_raw,
            live,
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
        // the encrypted listeners hushd has bound (restart-only), which DDR keeps advertising
        let server = &self.running.server;
        let bound = (
            server.tls_listen.clone(),
            server.https_listen.clone(),
            server.tls.clone(),
        );
        // A moved `[lists] state_dir` takes the copies in force along, so their names stay.
        let copies_in_force = (
            self.running.lists.state_dir.clone(),
            self.plans.as_ref().map_or_else(Vec::new, |plans| {
                let plan = plans.borrow();
                plan.subscriptions.iter().map(|(n, _)| n.clone()).collect()
            }),
        );
        let loaded = self
            .builder
            .run(
                move || -> Result<(Config, toml::Table, Policy, Plan), LoadErrors> {
                    let text = std::fs::read_to_string(&path).map_err(|source| {
                        LoadErrors(vec![LoadError::Read {
                            path: path.clone(),
                            source,
                        }])
                    })?;
                    let mut config = Config::parse(&path, &text)?;
                    let raw = raw_config(&path, &text)?;
                    (
                        config.server.tls_listen,
                        config.server.https_listen,
                        config.server.tls,
                    ) = bound;
                    carry_over_copies(&copies_in_force, &config.lists.state_dir);
                    let (policy, plan) = load_policy(&config, &firewall)?;
                    Ok((config, raw, policy, plan))
                },
            )
            .await;
        let (config, raw, policy, plan) = match loaded {
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
        log_changed_keys(&self.running_raw, &raw);
        let watch_changed = config.blocklists.dir != self.running.blocklists.dir
            || config.egress != self.running.egress;
        // Before the policy's swap, so that "policy reloaded" means the whole reload is in force.
        let config = self.apply_live(config).await;
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
        self.running_raw = config_diff::in_force_after_reload(&self.running_raw, &raw);
        self.live
            .running_config
            .store(Arc::new(render_config(&self.running_raw)));
        // The listeners stay bound where they are; nothing reads their keys after start, and
        // `running_raw` keeps them as they run.
        self.running = config;
        if watch_changed {
            self.watch();
        }
    }

    /// Applies what changed outside the policy: the upstreams, the cache's bounds, the limits,
    /// the evidence store and the query log, each swapped or resized where the query path finds
    /// it. Returns `new` as it is now in force (a part that could not be replaced keeps its
    /// running settings, so the next reload tries again).
    async fn apply_live(&self, mut new: Config) -> Config {
        let old = &self.running;
        let live = &self.live;
        let handler = &live.handler;
        if new.upstream != old.upstream {
            // A new set of servers (sockets, health, back-off), swapped in one store; lookups
            // in flight hold the old one and finish on it. The health of a server in both
            // starts afresh.
            match Upstream::new(&new.upstream, &self.metrics).await {
                Ok(upstream) => {
                    let servers: Vec<_> = upstream.addrs().collect();
                    handler.upstream.store(Arc::new(upstream));
                    // AD already cached is as good as the trust in the servers now in force
                    handler.cache.trust_ad(trusts_ad(&new.upstream));
                    tracing::info!(?servers, "upstreams replaced");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up the new upstreams; the previous ones stay");
                    new.upstream = old.upstream.clone();
                }
            }
        }
        if new.cache != old.cache {
            // Reweighing every entry is a walk over the cache: off the runtime's threads.
            let (cache, config) = (handler.cache.clone(), new.cache.clone());
            let started = std::time::Instant::now();
            let _ = tokio::task::spawn_blocking(move || cache.reconfigure(&config)).await;
            tracing::info!(
                entries = handler.cache.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "cache bounds changed, entries kept"
            );
        }
        let (limits, old_limits) = (&new.limits, &old.limits);
        if (limits.client_qps, limits.slip, &limits.exempt_clients)
            != (
                old_limits.client_qps,
                old_limits.slip,
                &old_limits.exempt_clients,
            )
        {
            handler
                .limiter
                .set(limits.client_qps, limits.slip, &limits.exempt_clients);
        }
        if limits.max_inflight != old_limits.max_inflight {
            resize_inflight(
                &handler.inflight,
                old_limits.max_inflight,
                limits.max_inflight,
            );
        }
        if limits != old_limits || new.server.tcp_idle_timeout != old.server.tcp_idle_timeout {
            live.tcp.set(limits, new.server.tcp_idle_timeout);
        }
        // The store keeps clients as the query log anonymizes them.
        let evidence_changed = new.evidence != old.evidence
            || (new.evidence.enabled && new.querylog.anonymize != old.querylog.anonymize);
        if evidence_changed && !self.replace_evidence(&new) {
            new.evidence = old.evidence.clone();
        }
        if new.querylog != old.querylog && !self.replace_querylog(&new) {
            new.querylog = old.querylog.clone();
        }
        new
    }

    /// Starts the evidence writer `new` asks for (if any), points the query path at it, then
    /// stops the old one after its last flush (on a blocking thread): a match recorded during
    /// the switch lands in one store or the other, never nowhere. False if the new writer
    /// could not start (the old one stays).
    fn replace_evidence(&self, new: &Config) -> bool {
        let started = if new.evidence.enabled {
            match Evidence::start(&new.evidence, new.querylog.anonymize, &self.metrics) {
                Ok(evidence) => Some(evidence),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the new evidence writer; the previous one stays");
                    return false;
                }
            }
        } else {
            None
        };
        let slot = &self.live.evidence;
        self.live
            .handler
            .evidence
            .store(started.as_ref().map(|e| Arc::new(e.sink())));
        let old = std::mem::replace(
            &mut *slot.lock().unwrap_or_else(|p| p.into_inner()),
            started,
        );
        if let Some(old) = old {
            tokio::task::spawn_blocking(move || old.stop(WRITER_FLUSH_WAIT));
        }
        self.live.evidence_path.store(
            new.evidence
                .enabled
                .then(|| Arc::new(new.evidence.path.clone())),
        );
        tracing::info!(
            enabled = new.evidence.enabled,
            path = %new.evidence.path.display(),
            "evidence store settings applied"
        );
        true
    }

    /// `replace_evidence` for the query log: the new writer (if on) takes the next lines, the
    /// old one writes what it holds and ends when its last handle goes.
    fn replace_querylog(&self, new: &Config) -> bool {
        let started = if new.querylog.enabled {
            match QueryLog::start(&new.querylog, &self.metrics) {
                Ok(log) => Some(Arc::new(log)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the new query log writer; the previous one stays");
                    return false;
                }
            }
        } else {
            None
        };
        let old = self.live.handler.querylog.swap(started);
        if let Some(old) = old {
            tokio::task::spawn_blocking(move || old.flush(WRITER_FLUSH_WAIT));
        }
        tracing::info!(
            enabled = new.querylog.enabled,
            path = %new.querylog.path.display(),
            "query log settings applied"
        );
        true
    }
}

/// Copies the subscriptions' stored copies from the running `[lists] state_dir` to a new one
/// (`store::carry_over`). A failure is logged, not fatal: those lists then wait for their next
/// download, as a subscription never fetched does.
fn carry_over_copies((from, names): &(PathBuf, Vec<String>), to: &Path) {
    if from == to {
        return;
    }
    match lists::store::carry_over(from, to, names.iter().map(String::as_str)) {
        Ok(0) => {}
        Ok(copies) => tracing::info!(
            copies,
            from = %from.display(),
            to = %to.display(),
            "[lists] state_dir moved: the stored copies were copied to the new folder"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            to = %to.display(),
            "[lists] state_dir moved: cannot copy the stored copies there; their lists wait for their next download"
        ),
    }
}

/// One line per key that differs between the running config and the reloaded file: applied,
/// or waiting for a restart (the same lines `hushd check --diff-running` prints).
fn log_changed_keys(running: &toml::Table, new: &toml::Table) {
    for change in config_diff::changes(running, new) {
        match change.applies {
            Applies::OnReload => tracing::info!(key = %change.key, "{change}"),
            Applies::AfterRestart => tracing::warn!(key = %change.key, "{change}"),
        }
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
