//! Upstream lookups in progress, one per question, so that clients asking the same question at
//! the same time (a popular name as it expires, a flood of one name) cost one upstream query.
//!
//! The first client to miss becomes the *leader*: it gets a `Finish` and starts the lookup in a
//! task of its own; everyone who asks meanwhile *follows* it and gets the same result. The
//! lookup does not belong to any waiting client, so a client that gives up (a stale answer
//! served after `stale_after`, a closed TCP connection) cancels nothing for the others. The entry
//! leaves the map when the `Finish` is published or dropped, so the map holds no more entries
//! than there are lookups running (each holds a `max_inflight` permit: see `QueryHandler::forward`).
//!
//! The map is a plain mutex-guarded hash map: it is only touched on a cache miss, twice per
//! lookup and once per follower, never on the cache-hit path.

use std::{
    hash::Hash,
    sync::{Arc, Mutex},
    time::Instant,
};

use hickory_proto::rr::{LowerName, RecordType};
use rustc_hash::FxHashMap;
use tokio::sync::watch;

use crate::answer::Answer;

/// The upstream lookups of a `QueryHandler`: each yields upstream's answer, or `None` when no
/// upstream answered.
/// An upstream answer with where it leads, worked out once for the cache and every waiter, and
/// the server it came from (for the query log).
pub type Resolved = (
    Answer,
    crate::destinations::Destinations,
    std::net::SocketAddr,
);

pub type Lookups = InFlight<LookupKey, Option<Arc<Resolved>>>;

/// What a lookup is shared by: the question, and the client's CD bit, which is passed upstream
/// and changes the answer (data a validating upstream would reject). DO does not: every
/// upstream query sets it, and the answer serves clients with and without it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupKey {
    pub name: LowerName,
    pub qtype: RecordType,
    pub cd: bool,
}

/// The lookups in progress, by key.
pub struct InFlight<K, V> {
    running: Mutex<FxHashMap<K, Lookup<V>>>,
}

/// A handle on a lookup in progress: its start and, once there, its result.
pub struct Lookup<V> {
    result: watch::Receiver<Option<V>>,
    started: Instant,
}

/// What `InFlight::join` makes of the caller.
pub enum Joined<K: Eq + Hash, V> {
    /// No lookup was running: the caller must start one and publish its result with `Finish`.
    Leader(Lookup<V>, Finish<K, V>),
    /// One is running: wait for it.
    Follower(Lookup<V>),
}

/// The leader's side of a lookup. Publishing the result, or dropping this without (a panic, a
/// runtime shutting down), ends the lookup: its waiters wake and the key is free again.
pub struct Finish<K: Eq + Hash, V> {
    map: Arc<InFlight<K, V>>,
    key: K,
    result: watch::Sender<Option<V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> InFlight<K, V> {
    pub fn new() -> Self {
        Self {
            running: Mutex::new(FxHashMap::default()),
        }
    }

    /// Follows the lookup running for `key`, or registers a new one for the caller to run.
    pub fn join(self: &Arc<Self>, key: K) -> Joined<K, V> {
        let mut running = self.lock();
        if let Some(lookup) = running.get(&key) {
            return Joined::Follower(lookup.clone());
        }
        let (sender, receiver) = watch::channel(None);
        let lookup = Lookup {
            result: receiver,
            started: Instant::now(),
        };
        running.insert(key.clone(), lookup.clone());
        Joined::Leader(
            lookup,
            Finish {
                map: self.clone(),
                key,
                result: sender,
            },
        )
    }

    /// Lookups running now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<K, Lookup<V>>> {
        // The map holds no invariant a panic could break half-way: go on with it.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Default for InFlight<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Clone for Lookup<V> {
    fn clone(&self) -> Self {
        Self {
            result: self.result.clone(),
            started: self.started,
        }
    }
}

impl<V: Clone> Lookup<V> {
    /// When the lookup started: waiters with a stale answer at hand measure `stale_after` from
    /// here, so that clients joining late do not each wait the whole period again.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The lookup's result; `None` if it ended without one (see `Finish`).
    pub async fn result(&mut self) -> Option<V> {
        self.result
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone())
    }
}

impl<K: Eq + Hash, V> Finish<K, V> {
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Gives `value` to every waiter, present and future, and ends the lookup.
    pub fn publish(self, value: V) {
        self.result.send_replace(Some(value));
    }
}

impl<K: Eq + Hash, V> Drop for Finish<K, V> {
    fn drop(&mut self) {
        // Only this lookup's own entry can be under the key: `join` never replaces one.
        self.map
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type Map = Arc<InFlight<&'static str, u32>>;

    #[tokio::test]
    async fn one_leader_per_key_and_every_waiter_gets_its_result() {
        let map: Map = Arc::default();
        let Joined::Leader(mut led, finish) = map.join("a") else {
            panic!("the first caller leads");
        };
        let mut followers: Vec<_> = (0..5)
            .map(|_| match map.join("a") {
                Joined::Follower(lookup) => lookup,
                Joined::Leader(..) => panic!("a second leader for the same key"),
            })
            .collect();
        assert!(matches!(map.join("b"), Joined::Leader(..)));
        assert_eq!(map.len(), 1, "b's leader dropped its Finish: b is gone");

        let waiting = tokio::spawn(async move {
            let mut got = Vec::new();
            for f in &mut followers {
                got.push(f.result().await);
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        finish.publish(7);
        assert_eq!(led.result().await, Some(7));
        assert_eq!(waiting.await.unwrap(), vec![Some(7); 5]);
        assert!(map.is_empty(), "the entry leaves with the result");
        assert!(matches!(map.join("a"), Joined::Leader(..)), "a new lookup");
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_cancels_nothing() {
        let map: Map = Arc::default();
        let Joined::Leader(_, finish) = map.join("a") else {
            panic!("the first caller leads");
        };
        let Joined::Follower(mut impatient) = map.join("a") else {
            panic!("follows");
        };
        let gave_up = tokio::time::timeout(Duration::from_millis(10), impatient.result()).await;
        assert!(gave_up.is_err());
        drop(impatient);
        let Joined::Follower(mut patient) = map.join("a") else {
            panic!("still running");
        };
        finish.publish(1);
        assert_eq!(patient.result().await, Some(1));
    }

    #[tokio::test]
    async fn a_lookup_that_ends_without_a_result_wakes_its_waiters_and_leaves() {
        let map: Map = Arc::default();
        let Joined::Leader(mut led, finish) = map.join("a") else {
            panic!("the first caller leads");
        };
        drop(finish);
        assert_eq!(led.result().await, None);
        assert!(map.is_empty());
    }

    #[test]
    fn followers_share_the_leaders_start() {
        let map: Map = Arc::default();
        let Joined::Leader(first, _f) = map.join("a") else {
            panic!("leads");
        };
        let Joined::Follower(second) = map.join("a") else {
            panic!("follows");
        };
        assert_eq!(first.started(), second.started());
    }
}
