//! How often an audit match (a `log` list) is written to the log. Every match is counted in
//! `hushd_list_matches_total`; the log gets at most one line per (client, list) every
//! `INTERVAL`, and that line says how many matches were left out since the one before. A
//! client hammering a listed name, or a flood from spoofed sources, therefore cannot fill the
//! journal: the table is a fixed number of slots (a newcomer takes over a slot, nothing grows),
//! and all lines together are capped at `LINES_PER_SECOND`.

use std::{
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// At most one audit line per (client, list) in this time.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// At most this many audit lines per second from all clients and lists together.
pub const LINES_PER_SECOND: u32 = 100;
/// (client, list) pairs remembered at once.
const SLOTS: usize = 4096;

/// Whose matches a slot counts: the client and a hash of the list's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    client: IpAddr,
    list: u64,
}

/// One (client, list): when its last line was written, and the matches left out since.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: Key,
    logged_at_ms: u64,
    suppressed: u64,
}

/// What to do with one audit match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Write a line, saying that `suppressed` matches were left out before it.
    Log {
        suppressed: u64,
    },
    Suppress,
}

/// The per-(client, list) rule, for the slot `key` hashes to. A different key in the slot is
/// replaced (its count of left-out matches is lost; the metric still has them).
fn decide(slot: &mut Option<Slot>, key: Key, now_ms: u64, interval_ms: u64) -> Decision {
    match slot {
        Some(s) if s.key == key => {
            if now_ms.saturating_sub(s.logged_at_ms) < interval_ms {
                s.suppressed = s.suppressed.saturating_add(1);
                Decision::Suppress
            } else {
                let suppressed = s.suppressed;
                s.logged_at_ms = now_ms;
                s.suppressed = 0;
                Decision::Log { suppressed }
            }
        }
        _ => {
            *slot = Some(Slot {
                key,
                logged_at_ms: now_ms,
                suppressed: 0,
            });
            Decision::Log { suppressed: 0 }
        }
    }
}

/// The cap on all lines together: `used` lines so far in the whole second `second`.
#[derive(Debug, Default)]
struct Budget {
    second: u64,
    used: u32,
}

impl Budget {
    fn take(&mut self, now_ms: u64, per_second: u32) -> bool {
        let second = now_ms / 1000;
        if second != self.second {
            self.second = second;
            self.used = 0;
        }
        if self.used < per_second {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

pub struct AuditLimiter {
    slots: Box<[Mutex<Option<Slot>>]>,
    budget: Mutex<Budget>,
    /// Keyed per process, so nobody can aim a flood of sources at one client's slot.
    hasher: RandomState,
    interval_ms: u64,
    lines_per_second: u32,
    started: Instant,
}

impl AuditLimiter {
    /// hushd's own limits: one line per (client, list) every `INTERVAL`, `LINES_PER_SECOND` in all.
    pub fn with_defaults() -> Self {
        Self::new(INTERVAL, LINES_PER_SECOND)
    }

    pub fn new(interval: Duration, lines_per_second: u32) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
            budget: Mutex::new(Budget::default()),
            hasher: RandomState::new(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            lines_per_second,
            started: Instant::now(),
        }
    }

    /// Whether this match of `list` by `client` gets a line: `Some(k)` when it does, `k` being
    /// the matches of this pair left out since its last line.
    pub fn admit(&self, client: IpAddr, list: &str) -> Option<u64> {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.admit_at(client, list, now_ms)
    }

    fn slot_index(&self, key: Key) -> usize {
        (self.hasher.hash_one((key.client, key.list)) as usize) % self.slots.len()
    }

    fn admit_at(&self, client: IpAddr, list: &str, now_ms: u64) -> Option<u64> {
        let key = Key {
            client,
            list: self.hasher.hash_one(list),
        };
        let mut slot = self.slots[self.slot_index(key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Decision::Log { suppressed } = decide(&mut slot, key, now_ms, self.interval_ms) else {
            return None;
        };
        let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        if budget.take(now_ms, self.lines_per_second) {
            return Some(suppressed);
        }
        // Over the global cap: this match is left out too, and the pair's next line says so.
        if let Some(s) = slot.as_mut() {
            s.suppressed = suppressed.saturating_add(1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8, list: u64) -> Key {
        Key {
            client: IpAddr::from([127, 0, 0, last]),
            list,
        }
    }

    #[test]
    fn one_line_per_interval_then_the_count_of_what_was_left_out() {
        let mut slot = None;
        let k = key(1, 1);
        assert_eq!(
            decide(&mut slot, k, 0, 10_000),
            Decision::Log { suppressed: 0 }
        );
        for t in [1, 500, 9_999] {
            assert_eq!(decide(&mut slot, k, t, 10_000), Decision::Suppress);
        }
        assert_eq!(
            decide(&mut slot, k, 10_000, 10_000),
            Decision::Log { suppressed: 3 }
        );
        assert_eq!(decide(&mut slot, k, 10_001, 10_000), Decision::Suppress);
    }

    #[test]
    fn another_pair_takes_the_slot_over() {
        let mut slot = None;
        let (a, b) = (key(1, 1), key(2, 1));
        decide(&mut slot, a, 0, 10_000);
        assert_eq!(decide(&mut slot, a, 1, 10_000), Decision::Suppress);
        assert_eq!(
            decide(&mut slot, b, 2, 10_000),
            Decision::Log { suppressed: 0 }
        );
        assert_eq!(decide(&mut slot, b, 3, 10_000), Decision::Suppress);
        // the same client with another list is another pair
        assert_eq!(
            decide(&mut slot, key(2, 9), 4, 10_000),
            Decision::Log { suppressed: 0 }
        );
    }

    #[test]
    fn the_budget_refills_each_second() {
        let mut b = Budget::default();
        assert!((0..3).all(|_| b.take(10, 3)));
        assert!(!b.take(999, 3));
        assert!(b.take(1_000, 3));
    }

    #[test]
    fn a_pair_is_limited_and_others_are_not() {
        let limiter = AuditLimiter::new(Duration::from_secs(10), 1000);
        let client = IpAddr::from([127, 0, 0, 1]);
        let slot = |client, list: &str| {
            limiter.slot_index(Key {
                client,
                list: limiter.hasher.hash_one(list),
            })
        };
        // pairs in slots of their own, so that none takes another's over
        let names: Vec<String> = (0..10).map(|i| format!("xiaomi{i}")).collect();
        let second = names
            .iter()
            .find(|l| slot(client, l) != slot(client, "samsung"))
            .unwrap();
        let taken = [slot(client, "samsung"), slot(client, second)];
        let other = (2..=255)
            .map(|i| IpAddr::from([127, 0, 0, i]))
            .find(|&c| !taken.contains(&slot(c, "samsung")))
            .unwrap();
        assert_eq!(limiter.admit_at(client, "samsung", 0), Some(0));
        assert_eq!(limiter.admit_at(client, "samsung", 5), None);
        assert_eq!(limiter.admit_at(client, second, 6), Some(0));
        assert_eq!(limiter.admit_at(other, "samsung", 7), Some(0));
        assert_eq!(limiter.admit_at(client, "samsung", 10_000), Some(1));
    }

    #[test]
    fn spoofed_sources_are_capped_in_lines_and_memory() {
        let limiter = AuditLimiter::new(Duration::from_secs(10), 50);
        let mut lines = 0;
        for i in 0..100_000u32 {
            let client = IpAddr::from(i.to_be_bytes());
            lines += u32::from(limiter.admit_at(client, "samsung", 0).is_some());
        }
        assert_eq!(lines, 50, "one second's budget");
        assert_eq!(limiter.slots.len(), SLOTS);
    }

    #[test]
    fn left_out_over_the_global_cap_is_reported_next_time() {
        let limiter = AuditLimiter::new(Duration::from_secs(10), 1);
        let (a, b) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(limiter.admit_at(a, "l", 0), Some(0));
        assert_eq!(limiter.admit_at(b, "l", 1), None, "over the cap");
        assert_eq!(limiter.admit_at(b, "l", 2), None, "within b's interval");
        assert_eq!(limiter.admit_at(b, "l", 10_001), Some(2));
    }
}
