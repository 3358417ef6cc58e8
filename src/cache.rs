//! The answer cache. It holds upstream answers only and knows nothing of the policy: blocking is
//! decided before the cache is consulted, so a reload never needs a flush and a cached answer can
//! never leak a name that a new list blocks.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::ResponseCode,
    rr::{LowerName, Record, RecordType},
};
use moka::sync::Cache as Moka;

use crate::config::CacheConfig;

/// An answer as upstream gave it, ready to be cached and replayed.
#[derive(Debug, Clone)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// How long the answer may be reused: the smallest record TTL, or the negative TTL (RFC 2308).
    /// `None` when it must not be cached (a negative answer without an SOA).
    pub ttl: Option<u32>,
}

#[derive(Debug)]
struct Entry {
    answer: Answer,
    stored: Instant,
    ttl: u32,
}

type Key = (LowerName, RecordType);

pub struct Cache {
    entries: Option<Moka<Key, Arc<Entry>>>,
    config: CacheConfig,
}

struct TtlExpiry;

impl moka::Expiry<Key, Arc<Entry>> for TtlExpiry {
    fn expire_after_create(&self, _: &Key, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(entry.ttl)))
    }
}

impl Cache {
    pub fn new(config: &CacheConfig) -> Self {
        let entries = (config.size > 0).then(|| {
            Moka::builder()
                .max_capacity(config.size)
                .expire_after(TtlExpiry)
                .build()
        });
        Self {
            entries,
            config: config.clone(),
        }
    }

    /// A fresh answer, its record TTLs lowered by the time it has spent in the cache.
    pub fn get(&self, name: &LowerName, qtype: RecordType) -> Option<Answer> {
        let entry = self.entries.as_ref()?.get(&(name.clone(), qtype))?;
        let age = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= entry.ttl {
            return None; // moka expires lazily; never serve past the TTL
        }
        let mut answer = entry.answer.clone();
        for r in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
            .chain(answer.additionals.iter_mut())
        {
            // The entry's TTL may be capped below a record's own (max_ttl) or raised above it
            // (min_ttl): what clients see must agree with how long hushd keeps it.
            r.ttl = r
                .ttl
                .max(self.config.min_ttl)
                .min(entry.ttl)
                .saturating_sub(age);
        }
        answer.ttl = Some(entry.ttl - age);
        Some(answer)
    }

    /// Stores `answer` under the TTL bounds of the config; returns the TTL used, if stored.
    pub fn insert(&self, name: LowerName, qtype: RecordType, answer: &Answer) -> Option<u32> {
        let entries = self.entries.as_ref()?;
        let ttl = self.clamp(answer)?;
        entries.insert(
            (name, qtype),
            Arc::new(Entry {
                answer: answer.clone(),
                stored: Instant::now(),
                ttl,
            }),
        );
        Some(ttl)
    }

    fn clamp(&self, answer: &Answer) -> Option<u32> {
        let ttl = answer.ttl?;
        let ttl = match answer.rcode {
            ResponseCode::NoError if !answer.answers.is_empty() => {
                ttl.clamp(self.config.min_ttl, self.config.max_ttl)
            }
            ResponseCode::NoError | ResponseCode::NXDomain => ttl.min(self.config.negative_max_ttl),
            _ => return None,
        };
        (ttl > 0).then_some(ttl)
    }

    pub fn len(&self) -> u64 {
        self.entries.as_ref().map_or(0, Moka::entry_count)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr};

    use hickory_proto::rr::{Name, RData, rdata::A};

    use super::*;

    fn config() -> CacheConfig {
        CacheConfig {
            size: 100,
            min_ttl: 0,
            max_ttl: 300,
            negative_max_ttl: 60,
        }
    }

    fn positive(ttl: u32) -> Answer {
        let name = Name::from_str("a.example.").unwrap();
        Answer {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(
                name,
                ttl,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
            )],
            authorities: vec![],
            additionals: vec![],
            ttl: Some(ttl),
        }
    }

    fn key() -> LowerName {
        LowerName::from_str("a.example.").unwrap()
    }

    #[test]
    fn hit_after_insert_and_ttls_are_capped() {
        let c = Cache::new(&config());
        assert!(c.get(&key(), RecordType::A).is_none());
        assert_eq!(c.insert(key(), RecordType::A, &positive(3600)), Some(300));
        let hit = c.get(&key(), RecordType::A).unwrap();
        assert_eq!(hit.answers.len(), 1);
        assert!(c.get(&key(), RecordType::AAAA).is_none());
    }

    #[test]
    fn negative_answers_use_their_own_cap_and_need_an_soa_ttl() {
        let c = Cache::new(&config());
        let mut nx = positive(0);
        nx.rcode = ResponseCode::NXDomain;
        nx.answers.clear();
        nx.ttl = Some(900);
        assert_eq!(c.insert(key(), RecordType::A, &nx), Some(60));
        nx.ttl = None;
        assert_eq!(c.insert(key(), RecordType::AAAA, &nx), None);
    }

    #[test]
    fn failures_and_zero_ttls_are_not_cached() {
        let c = Cache::new(&config());
        let mut fail = positive(100);
        fail.rcode = ResponseCode::ServFail;
        assert_eq!(c.insert(key(), RecordType::A, &fail), None);
        assert_eq!(c.insert(key(), RecordType::A, &positive(0)), None);
    }

    #[test]
    fn size_zero_disables_the_cache() {
        let c = Cache::new(&CacheConfig {
            size: 0,
            ..config()
        });
        assert_eq!(c.insert(key(), RecordType::A, &positive(100)), None);
        assert!(c.get(&key(), RecordType::A).is_none());
    }
}
