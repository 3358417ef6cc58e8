//! The answer cache. It holds upstream answers only and knows nothing of the policy: blocking is
//! decided before the cache is consulted, so a reload never needs a flush and a cached answer can
//! never leak a name that a new list blocks. It is bounded (S3-FIFO eviction by quick_cache),
//! and looked up with a borrowed key, so a hit allocates nothing.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::Instant,
};

use arc_swap::ArcSwapOption;
use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, Query, ResponseCode},
    rr::{LowerName, Record, RecordType},
    serialize::binary::{BinEncodable, BinEncoder},
};
use quick_cache::{Equivalent, sync::Cache as QuickCache};

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
pub struct Entry {
    answer: Answer,
    stored: Instant,
    ttl: u32,
    min_ttl: u32,
    /// The answer's sections as wire bytes, encoded at one age in whole seconds; replaced when a
    /// hit sees a different age, so a hot name is encoded about once a second, not per query.
    wire: ArcSwapOption<Wire>,
}

#[derive(Debug)]
struct Wire {
    age: u32,
    /// Length of the question section it was encoded after: compression pointers in `body` are
    /// only valid behind a question of the same length.
    question_len: usize,
    counts: HeaderCounts,
    /// Everything after the question: answer, authority and additional records.
    body: Box<[u8]>,
}

type Key = (LowerName, RecordType);

/// Looks a key up without building (and allocating) an owned one.
struct KeyRef<'a>(&'a LowerName, RecordType);

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // must agree with the tuple's derived Hash: fields in order
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self.0 == key.0 && self.1 == key.1
    }
}

pub struct Cache {
    entries: Option<QuickCache<Key, Arc<Entry>>>,
    config: CacheConfig,
}

/// A fresh cached answer and its age.
pub struct Hit {
    entry: Arc<Entry>,
    age: u32,
    /// Past its TTL, served under RFC 8767: every record gets `STALE_TTL`.
    stale: bool,
}

/// TTL of a stale answer (RFC 8767 §4 recommends 30 s): clients come back soon for a fresh one.
pub const STALE_TTL: u32 = 30;

impl Cache {
    pub fn new(config: &CacheConfig) -> Self {
        let entries = (config.size > 0).then(|| QuickCache::new(config.size as usize));
        Self {
            entries,
            config: config.clone(),
        }
    }

    /// A fresh answer for the question, if cached.
    pub fn get(&self, name: &LowerName, qtype: RecordType) -> Option<Hit> {
        let entry = self.entries.as_ref()?.get(&KeyRef(name, qtype))?;
        let age = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        // Expired entries are not served; they stay until the capacity evicts them.
        (age < entry.ttl).then_some(Hit {
            entry,
            age,
            stale: false,
        })
    }

    /// An expired answer no older than `serve_stale_secs` past its TTL, for when upstream
    /// cannot answer (RFC 8767).
    pub fn get_stale(&self, name: &LowerName, qtype: RecordType) -> Option<Hit> {
        let max_stale = self.config.serve_stale_secs;
        if max_stale == 0 {
            return None;
        }
        let entry = self.entries.as_ref()?.get(&KeyRef(name, qtype))?;
        let age = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        let stale = age >= entry.ttl;
        (age < entry.ttl.saturating_add(max_stale)).then_some(Hit { entry, age, stale })
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
                min_ttl: self.config.min_ttl,
                wire: ArcSwapOption::empty(),
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

    pub fn stale_after(&self) -> std::time::Duration {
        self.config.stale_after
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, QuickCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Hit {
    /// The answer with its record TTLs lowered by the time it has spent in the cache.
    pub fn answer(&self) -> Answer {
        let entry = &self.entry;
        let mut answer = entry.answer.clone();
        for r in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
            .chain(answer.additionals.iter_mut())
        {
            // The entry's TTL may be capped below a record's own (max_ttl) or raised above it
            // (min_ttl): what clients see must agree with how long hushd keeps it.
            r.ttl = if self.stale {
                STALE_TTL
            } else {
                r.ttl
                    .max(entry.min_ttl)
                    .min(entry.ttl)
                    .saturating_sub(self.age)
            };
        }
        answer.ttl = Some(if self.stale {
            STALE_TTL
        } else {
            entry.ttl.saturating_sub(self.age)
        });
        answer
    }

    pub fn rcode(&self) -> ResponseCode {
        self.entry.answer.rcode
    }

    /// Writes the whole reply to `out` from the pre-encoded sections: `metadata` for the
    /// header, the client's own question bytes (so its letter case is echoed), the cached
    /// records, then `edns`' OPT. Returns false, leaving `out` to be discarded, when the reply
    /// would exceed `max_size` (the caller then builds a truncated one the slow way).
    pub fn write_wire(
        &self,
        metadata: Metadata,
        question: &[u8],
        query: &Query,
        edns: Option<&Edns>,
        max_size: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        let wire = match self.entry.wire.load_full() {
            Some(w) if w.age == self.age && w.question_len == question.len() => w,
            _ => match self.encode_wire(query) {
                Some(w) if w.question_len == question.len() => {
                    let w = Arc::new(w);
                    self.entry.wire.store(Some(w.clone()));
                    w
                }
                _ => return false,
            },
        };
        out.clear();
        let mut counts = wire.counts;
        counts.additionals += u16::from(edns.is_some());
        let mut encoder = BinEncoder::new(out);
        if (Header { metadata, counts }).emit(&mut encoder).is_err() {
            return false;
        }
        out.extend_from_slice(question);
        out.extend_from_slice(&wire.body);
        if let Some(edns) = edns {
            let mut encoder = BinEncoder::with_offset(out, out.len() as u32);
            if Record::from(edns).emit(&mut encoder).is_err() {
                return false;
            }
        }
        out.len() <= max_size
    }

    /// Encodes the records behind `query`'s question (with an empty header).
    fn encode_wire(&self, query: &Query) -> Option<Wire> {
        let answer = self.answer();
        let mut m = Message::response(0, OpCode::Query);
        m.add_query(query.clone());
        let question_len = {
            let mut q = Vec::with_capacity(64);
            let mut enc = BinEncoder::new(&mut q);
            for query in &m.queries {
                query.emit(&mut enc).ok()?;
            }
            q.len()
        };
        m.add_answers(answer.answers);
        m.add_authorities(answer.authorities);
        m.add_additionals(answer.additionals);
        let bytes = m.to_vec().ok()?;
        let counts = HeaderCounts {
            queries: m.queries.len() as u16,
            answers: m.answers.len() as u16,
            authorities: m.authorities.len() as u16,
            additionals: m.additionals.len() as u16,
        };
        let body = bytes.get(12 + question_len..)?.into();
        Some(Wire {
            age: self.age,
            question_len,
            counts,
            body,
        })
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
            serve_stale_secs: 86_400,
            stale_after: std::time::Duration::from_millis(1800),
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
        let hit = c.get(&key(), RecordType::A).unwrap().answer();
        assert_eq!(hit.answers.len(), 1);
        assert_eq!(hit.answers[0].ttl, 300);
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
    fn expired_answers_are_served_stale_with_a_short_ttl_within_the_limit() {
        let c = Cache::new(&config());
        c.insert(key(), RecordType::A, &positive(1));
        assert!(c.get_stale(&key(), RecordType::A).is_some_and(|h| !h.stale));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(c.get(&key(), RecordType::A).is_none());
        let stale = c.get_stale(&key(), RecordType::A).unwrap();
        assert!(stale.stale);
        assert!(stale.answer().answers.iter().all(|r| r.ttl == STALE_TTL));
        let off = Cache::new(&CacheConfig {
            serve_stale_secs: 0,
            ..config()
        });
        off.insert(key(), RecordType::A, &positive(1));
        assert!(off.get_stale(&key(), RecordType::A).is_none());
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
