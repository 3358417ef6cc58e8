//! `hushd_evidence_devices{list}`: how many devices matched each list in the last 24 hours,
//! counted from the store by a task of its own, never on the query path.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::read::{ReadError, devices_per_list};
use crate::{metrics::Metrics, policy::Policy};

/// Counts devices per list now, then every `every`, until `shutdown`. Every list of the
/// running policy has a series (0 until a device matches it), and so does a list gone from
/// the policy that devices matched within the day. A store that cannot be read keeps the last
/// counts and is logged once until it reads again (before hushd's first match there may be no
/// store, or no table in it, yet: that is all zeros, not an error).
pub async fn publish_devices(
    store: crate::evidence::StorePath,
    policy: Arc<ArcSwap<Policy>>,
    metrics: Arc<Metrics>,
    every: Duration,
    shutdown: CancellationToken,
) {
    // every loaded list at 0 before the first count, which may fail (the writer may be
    // creating the store at that very moment)
    // (with the store off, no series at all)
    if store.load().is_some() {
        metrics.evidence_devices(policy.load().lists().iter().map(|l| (&*l.name, 0)));
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // off (or turned off by a reload): nothing to count until it is on again
        let Some(path) = store.load_full() else {
            continue;
        };
        let store = path.clone();
        let path = (*path).clone();
        let counted =
            tokio::task::spawn_blocking(move || match devices_per_list(&path, SystemTime::now()) {
                // nothing recorded yet: no store, or one the writer has no table in yet
                Err(ReadError::Missing(_) | ReadError::NotAStore(_)) => Ok(Vec::new()),
                other => other,
            })
            .await;
        let counts = match counted {
            Ok(Ok(counts)) => {
                if failing {
                    tracing::info!(store = %store.display(), "the evidence store reads again");
                    failing = false;
                }
                counts
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot count devices per list for hushd_evidence_devices; keeping the last counts");
                    failing = true;
                }
                continue;
            }
            Err(_) => continue,
        };
        let policy = policy.load();
        let mut all: Vec<(&str, u64)> = policy.lists().iter().map(|l| (&*l.name, 0)).collect();
        for (list, n) in &counts {
            match all.iter_mut().find(|(name, _)| *name == list.as_str()) {
                Some(slot) => slot.1 = *n,
                None => all.push((list.as_str(), *n)),
            }
        }
        metrics.evidence_devices(all);
    }
}
