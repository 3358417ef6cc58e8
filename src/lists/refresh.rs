//! Keeps subscriptions fresh in the background. One task per subscription sleeps until its copy
//! is due (jittered, so many hushds do not hit a publisher at once), downloads it, and on a
//! changed copy asks the `Reloader` for a reload: a download becomes a policy through the same
//! path as a file edit. Failures retry sooner with a doubling back-off and never touch the
//! stored copy. Nothing here is on the query path, and a reload never waits for a download.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use reqwest::Url;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    ListFile,
    fetch::{self, Download, FetchError, Fetcher, Validators},
    store::{self, Meta},
    subscription::Subscription,
};
use crate::{config::Config, config::ListsConfig, metrics::Metrics, reload::Trigger};

/// `SIGHUP` refetches copies older than this: a reload signal is no reason to hit a publisher
/// that answered a moment ago.
pub const HANGUP_MIN_AGE: Duration = Duration::from_secs(60);

/// The subscriptions of the policy in force, and how to fetch them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub settings: ListsConfig,
    pub subscriptions: Vec<(String, Subscription)>,
}

impl Plan {
    pub fn new(config: &Config, files: &[ListFile]) -> Self {
        Self {
            settings: config.lists.clone(),
            subscriptions: files
                .iter()
                .filter_map(|f| Some((f.name.clone(), f.subscription.clone()?)))
                .collect(),
        }
    }

    /// A note per subscription with no stored copy yet: its list is loaded without the
    /// downloaded names until the first fetch succeeds (startup never waits for it).
    pub fn notes(&self) -> Vec<String> {
        let ca_file = match &self.settings.ca_file {
            Some(path) if !self.subscriptions.is_empty() => fetch::load_ca_file(path)
                .err()
                .map(|e| format!("{e}: no subscription can be downloaded")),
            _ => None,
        };
        ca_file
            .into_iter()
            .chain(self.subscriptions
            .iter()
            .filter(|(name, _)| store::existing_copy(&self.settings.state_dir, name).is_none())
            .map(|(name, sub)| {
                format!(
                    "list {name}: no stored copy of {} yet (in {}); loaded without its downloaded names until the first fetch",
                    redacted(&sub.url),
                    self.settings.state_dir.display()
                )
            }))
            .collect()
    }
}

/// The URL for logs: without a password or a query, which may hold a token.
pub fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

/// The next wait: `refresh` after a success; after failures, `retry_after` doubling per
/// failure, never longer than `refresh`.
pub fn next_delay(failures: u32, refresh: Duration, retry_after: Duration) -> Duration {
    if failures == 0 {
        return refresh;
    }
    let factor = 1u32 << (failures - 1).min(20);
    retry_after.saturating_mul(factor).min(refresh)
}

/// Up to a tenth more, at random.
pub fn jittered(delay: Duration) -> Duration {
    let tenth = u64::try_from(delay.as_millis() / 10).unwrap_or(u64::MAX);
    delay + Duration::from_millis(fastrand::u64(0..=tenth))
}

/// How long after start the first fetch is due: at once without a usable copy, else when the
/// copy reaches `refresh` of age (a restart does not refetch fresh copies).
pub fn first_fetch_in(meta: Option<&Meta>, sub: &Subscription, now: SystemTime) -> Duration {
    let Some(meta) = meta.filter(|m| usable(m, sub)) else {
        return Duration::ZERO;
    };
    let age = now.duration_since(meta.checked_at()).unwrap_or_default();
    sub.refresh.saturating_sub(age)
}

/// A record of this URL, of the pinned content if there is a pin.
fn usable(meta: &Meta, sub: &Subscription) -> bool {
    meta.url == sub.url.as_str() && sub.sha256.as_ref().is_none_or(|pin| *pin == meta.sha256)
}

pub struct Refresher {
    pub metrics: Arc<Metrics>,
    pub trigger: Trigger,
    /// Bumped on each SIGHUP.
    pub hangups: watch::Receiver<u64>,
    pub shutdown: CancellationToken,
}

impl Refresher {
    /// Follows `plans` (one per policy loaded): starts a task per new or changed subscription,
    /// stops those of removed ones, all of them when the fetch settings change.
    pub async fn run(self, mut plans: watch::Receiver<Arc<Plan>>) {
        let mut tasks: HashMap<String, (Subscription, CancellationToken)> = HashMap::new();
        let mut current: Option<(ListsConfig, Arc<Fetcher>)> = None;
        loop {
            let plan = plans.borrow_and_update().clone();
            if plan.subscriptions.is_empty() {
                // No HTTP client until a list subscribes: building one loads the system's trust
                // roots and TLS code, ~3 MiB of a daemon that may never download anything.
                for (name, (_, task)) in tasks.drain() {
                    task.cancel();
                    self.metrics.subscription_removed(&name);
                }
                current = None;
                tokio::select! {
                    changed = plans.changed() => if changed.is_err() { break },
                    () = self.shutdown.cancelled() => break,
                }
                continue;
            }
            let fetcher = match &current {
                Some((settings, fetcher)) if *settings == plan.settings => fetcher.clone(),
                _ => {
                    for (_, (_, task)) in tasks.drain() {
                        task.cancel();
                    }
                    let fetcher = Arc::new(Fetcher::new(&plan.settings));
                    current = Some((plan.settings.clone(), fetcher.clone()));
                    fetcher
                }
            };
            tasks.retain(|name, (sub, task)| {
                let keep = plan
                    .subscriptions
                    .iter()
                    .any(|(n, s)| n == name && s == sub);
                if !keep {
                    task.cancel();
                    if !plan.subscriptions.iter().any(|(n, _)| n == name) {
                        self.metrics.subscription_removed(name);
                    }
                }
                keep
            });
            for (name, sub) in &plan.subscriptions {
                if tasks.contains_key(name) {
                    continue;
                }
                let cancel = self.shutdown.child_token();
                let task = Subscriber {
                    name: name.clone(),
                    sub: sub.clone(),
                    state_dir: plan.settings.state_dir.clone(),
                    fetcher: fetcher.clone(),
                    retry_after: plan.settings.retry_after,
                    metrics: self.metrics.clone(),
                    trigger: self.trigger.clone(),
                };
                tokio::spawn(task.keep_fresh(self.hangups.clone(), cancel.clone()));
                tasks.insert(name.clone(), (sub.clone(), cancel));
            }
            tokio::select! {
                changed = plans.changed() => if changed.is_err() { break },
                () = self.shutdown.cancelled() => break,
            }
        }
        for (_, (_, task)) in tasks {
            task.cancel();
        }
    }
}

struct Subscriber {
    name: String,
    sub: Subscription,
    state_dir: PathBuf,
    fetcher: Arc<Fetcher>,
    retry_after: Duration,
    metrics: Arc<Metrics>,
    trigger: Trigger,
}

/// Publishes each subscription's series with its stored copy's age, before the first fetch:
/// a scrape right after startup sees every subscription.
pub fn announce(plan: &Plan, metrics: &Metrics) {
    for (name, _) in &plan.subscriptions {
        let meta = store::load_meta(&plan.settings.state_dir, name);
        metrics.subscription_started(name, meta.map_or(0, |m| m.checked_unix));
    }
}

impl Subscriber {
    async fn keep_fresh(self, mut hangups: watch::Receiver<u64>, cancel: CancellationToken) {
        let meta = store::load_meta(&self.state_dir, &self.name);
        self.metrics
            .subscription_started(&self.name, meta.as_ref().map_or(0, |m| m.checked_unix));
        let mut meta = meta.filter(|m| usable(m, &self.sub));
        let first = first_fetch_in(meta.as_ref(), &self.sub, SystemTime::now());
        let mut due = Instant::now()
            + if first.is_zero() {
                first
            } else {
                jittered(first)
            };
        let mut failures = 0u32;
        let mut hangups_open = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(due) => {}
                changed = hangups.changed(), if hangups_open => {
                    hangups_open = changed.is_ok();
                    let age = meta.as_ref().map_or(Duration::MAX, |m| {
                        SystemTime::now().duration_since(m.checked_at()).unwrap_or_default()
                    });
                    if age < HANGUP_MIN_AGE {
                        continue;
                    }
                }
            }
            // Cancelled mid-download (list removed, shutdown): drop it, store nothing.
            let fetched = tokio::select! {
                () = cancel.cancelled() => return,
                fetched = self.fetch_once(meta.as_ref()) => fetched,
            };
            match fetched {
                Ok((new_meta, result)) => {
                    failures = 0;
                    self.metrics.list_fetch(&self.name, result);
                    self.metrics
                        .subscription_current(&self.name, new_meta.checked_unix);
                    meta = Some(new_meta);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.metrics.list_fetch(&self.name, e.result());
                    tracing::warn!(
                        list = %self.name,
                        url = %redacted(&self.sub.url),
                        result = e.result(),
                        error = %e,
                        "subscription not updated; its stored copy stays in force"
                    );
                }
            }
            let wait = next_delay(failures, self.sub.refresh, self.retry_after);
            due = Instant::now() + jittered(wait);
        }
    }

    /// One download; on success the stored copy is current and this is its record.
    async fn fetch_once(&self, meta: Option<&Meta>) -> Result<(Meta, &'static str), FetchError> {
        let previous = meta.map_or_else(Validators::default, |m| Validators {
            etag: m.etag.clone(),
            last_modified: m.last_modified.clone(),
        });
        let download = self.fetcher.get(&self.sub.url, &previous).await?;
        let now = store::unix_now();
        let (new_meta, bytes) = match (download, meta) {
            (Download::NotModified, Some(meta)) => (
                Meta {
                    checked_unix: now,
                    ..meta.clone()
                },
                None,
            ),
            (Download::NotModified, None) => {
                return Err(FetchError::Transfer(
                    "304 Not Modified to a request that had no copy to compare".into(),
                ));
            }
            (Download::Body { bytes, validators }, _) => {
                let sha256 =
                    fetch::check_download(&bytes, self.sub.sha256.as_deref(), self.sub.format)
                        .map_err(FetchError::Rejected)?;
                let meta = Meta {
                    url: self.sub.url.to_string(),
                    etag: validators.etag,
                    last_modified: validators.last_modified,
                    checked_unix: now,
                    sha256,
                };
                (meta, Some(bytes))
            }
        };
        let downloaded = bytes.is_some();
        let changed = bytes.is_some() && meta.is_none_or(|m| m.sha256 != new_meta.sha256);
        let (state_dir, name, record) =
            (self.state_dir.clone(), self.name.clone(), new_meta.clone());
        let saved = tokio::task::spawn_blocking(move || match bytes {
            Some(bytes) => store::save(&state_dir, &name, &bytes, &record),
            None => store::save_meta(&state_dir, &name, &record),
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        if let Err(e) = saved {
            return Err(FetchError::Transfer(format!(
                "cannot store the copy in {}: {e}",
                self.state_dir.display()
            )));
        }
        if changed {
            tracing::info!(
                list = %self.name,
                url = %redacted(&self.sub.url),
                sha256 = %new_meta.sha256,
                "subscription downloaded a changed copy; reloading"
            );
            // Full channel: a reload is pending, and it reads the copy just stored.
            let _ = self.trigger.try_send(());
        }
        let result = if downloaded { "ok" } else { "not_modified" };
        Ok((new_meta, result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(refresh_secs: u64, pin: Option<&str>) -> Subscription {
        Subscription {
            url: Url::parse("http://127.0.0.1/x.txt").unwrap(),
            refresh: Duration::from_secs(refresh_secs),
            sha256: pin.map(str::to_string),
            format: Default::default(),
        }
    }

    #[test]
    fn back_off_doubles_from_retry_after_up_to_refresh() {
        let (refresh, retry) = (Duration::from_secs(3600), Duration::from_secs(60));
        let waits: Vec<u64> = (0..8)
            .map(|f| next_delay(f, refresh, retry).as_secs())
            .collect();
        assert_eq!(waits, [3600, 60, 120, 240, 480, 960, 1920, 3600]);
        assert_eq!(next_delay(u32::MAX, refresh, retry), refresh);
    }

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(100));
            assert!((100_000..=110_000).contains(&d.as_millis()), "{d:?}");
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_fresh_copy_of_the_same_url_and_pin_waits_for_its_refresh() {
        let now = SystemTime::now();
        let meta = Meta {
            url: "http://127.0.0.1/x.txt".into(),
            checked_unix: store::unix_now() - 600,
            sha256: "ab".into(),
            ..Meta::default()
        };
        let wait = first_fetch_in(Some(&meta), &sub(3600, None), now);
        assert!((2990..=3000).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(
            first_fetch_in(Some(&meta), &sub(300, None), now),
            Duration::ZERO
        );
        assert_eq!(first_fetch_in(None, &sub(3600, None), now), Duration::ZERO);
        let other_url = Meta {
            url: "http://127.0.0.1/y.txt".into(),
            ..meta.clone()
        };
        assert_eq!(
            first_fetch_in(Some(&other_url), &sub(3600, None), now),
            Duration::ZERO
        );
        // a new pin the stored copy does not match: fetch now
        assert_eq!(
            first_fetch_in(Some(&meta), &sub(3600, Some("cd")), now),
            Duration::ZERO
        );
        assert!(first_fetch_in(Some(&meta), &sub(3600, Some("ab")), now) > Duration::ZERO);
    }

    #[test]
    fn notes_name_unfetched_subscriptions_and_an_unusable_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ListsConfig {
            state_dir: dir.path().to_path_buf(),
            ca_file: Some(dir.path().join("missing.pem")),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_bytes: 1024,
            retry_after: Duration::from_secs(1),
        };
        let mut plan = Plan {
            settings,
            subscriptions: vec![
                ("ads".into(), sub(60, None)),
                ("more".into(), sub(60, None)),
            ],
        };
        std::fs::write(store::copy_path(dir.path(), "more"), "a.example\n").unwrap();
        let notes = plan.notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with("cannot read [lists] ca_file"),
            "{notes:?}"
        );
        assert!(
            notes[1].starts_with("list ads: no stored copy of http://127.0.0.1/x.txt"),
            "{notes:?}"
        );
        plan.subscriptions.clear();
        assert!(
            plan.notes().is_empty(),
            "a CA file without subscriptions is never read"
        );
    }

    #[test]
    fn logged_urls_lose_passwords_and_queries() {
        let url = Url::parse("https://u:secret@lists.example/a.txt?token=t0k").unwrap();
        assert_eq!(redacted(&url), "https://u@lists.example/a.txt");
    }
}
