//! The answer cache. It holds upstream answers only and knows nothing of the policy: blocking is
//! decided before the cache is consulted, so a reload never needs a flush and a cached answer can
//! never leak a name that a new list blocks. It is bounded (S3-FIFO eviction by quick_cache) in
//! answers and in bytes, and looked up with a borrowed key, so a hit allocates nothing.

use std::{
    hash::{Hash, Hasher},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode},
    rr::{LowerName, Name, Record, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use quick_cache::{
    DefaultHashBuilder, Equivalent, OptionsBuilder, Weighter,
    sync::{Cache as QuickCache, DefaultLifecycle},
};

use crate::{
    answer::Answer,
    config::CacheConfig,
    destinations::{self, Destinations, DestinationsRef},
};

/// A cached answer, kept only in wire form: a few hundred bytes where hickory's `Record`s took
/// about a kilobyte per answer (measured with heaptrack under the bench's query mix). UDP hits
/// copy the bytes and patch the TTLs; the rarer paths that need records (TCP, truncation, stale)
/// decode them. Where the answer sends the client (`Destinations`) is worked out when the entry
/// is made and kept after the records, so a hit can be inspected without decoding.
///
/// A signed answer is kept in two forms: as upstream gave it (with RRSIG, NSEC and NSEC3), for
/// clients that set DO, and without those records, for the rest (RFC 4035 §3.2.1). Leaving
/// records out of a compressed message moves counts, TTL offsets and compression pointers, so
/// the second form is encoded once, when the entry is made, not cut from the first on each hit;
/// an unsigned answer has one form and pays nothing.
#[derive(Debug)]
pub struct Entry {
    rcode: ResponseCode,
    stored: Instant,
    ttl: u32,
    min_ttl: u32,
    /// The upstream's AD, already cleared for an upstream not trusted with it.
    authentic_data: bool,
    /// The answer as upstream gave it. From `records_end` on its `wire` holds the answer's
    /// destinations, encoded as `Destinations` does (no second allocation: a plain A answer
    /// adds 10 bytes).
    full: Form,
    /// The answer without the DNSSEC records a client without DO must not see; `None` when it
    /// had none (most answers), and then `full` serves every client.
    plain: Option<Box<Form>>,
    question_len: u16,
    records_end: u16,
    /// When a refresh of this answer last failed, in milliseconds after `stored`, plus one; 0 if
    /// none has. Atomic so the refresh can note it through the shared `Arc`, lock-free.
    failed_at: AtomicU64,
    /// The cache's running total of entry bytes: this entry adds its `bytes()` when made and takes
    /// them back when the last reference to it goes, so the total is what answers really hold,
    /// including evicted ones a reply in progress still reads.
    ledger: Arc<AtomicU64>,
}

/// One encoding of an answer, ready to be sent after a header.
#[derive(Debug)]
struct Form {
    counts: HeaderCounts,
    /// The question (the entry's name and type) and then the answer, authority and additional
    /// records, encoded as one message after its header, TTLs as upstream gave them.
    /// Compression pointers in the records are valid behind any question of the same length,
    /// and every client question for this entry has that length (same name, same type).
    wire: Box<[u8]>,
    /// Where each record's TTL field is in `wire`.
    ttl_at: Box<[u16]>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.ledger.fetch_sub(self.bytes(), Ordering::Relaxed);
    }
}

/// The question, and the client's CD bit: an answer to a CD query may be data the upstream's
/// validation would have rejected (RFC 4035 §3.2.2), so it must never reach a client that
/// relies on that validation. DO needs no key of its own: one entry serves both (`Entry`).
type Key = (LowerName, RecordType, bool);

/// Looks a key up without building (and allocating) an owned one.
struct KeyRef<'a>(&'a LowerName, RecordType, bool);

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // must agree with the tuple's derived Hash: fields in order
        self.0.hash(state);
        self.1.hash(state);
        self.2.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self.0 == key.0 && self.1 == key.1 && self.2 == key.2
    }
}

type Entries =
    QuickCache<Key, Weighed, ByBytes, DefaultHashBuilder, DefaultLifecycle<Key, Weighed>>;

pub struct Cache {
    /// `size = 0` is a capacity of 0: nothing is kept, and a reload can turn the cache on.
    entries: Entries,
    /// Bytes held by entries, see `Entry::ledger`.
    bytes: Arc<AtomicU64>,
    /// The `[cache]` bounds in force, swapped by `reconfigure`: read when an answer is stored
    /// (TTL bounds, weight) and when a stale one is looked for, never on a fresh hit.
    settings: ArcSwap<Settings>,
    /// Whether the upstreams in force are trusted with AD (`config::trusts_ad`), set by
    /// `trust_ad`. An entry keeps the AD its upstream gave when it was stored; a hit passes it
    /// on only while this holds, so `trust_ad = false` takes AD off cached answers too.
    ad_trusted: AtomicBool,
}

struct Settings {
    config: CacheConfig,
    /// `weight_floor` of the config.
    floor: u64,
    /// The weight capacity given to quick_cache: `max_bytes`, or 0 when `size` is 0.
    capacity: u64,
}

impl Settings {
    fn of(config: &CacheConfig) -> Self {
        Self {
            floor: weight_floor(config.max_bytes, config.size),
            capacity: if config.size == 0 {
                0
            } else {
                config.max_bytes
            },
            config: config.clone(),
        }
    }
}

/// A cached entry and its weight, fixed when it was stored: quick_cache asks for an entry's
/// weight again when it leaves, so the weight must not change under it (a new `size` gives the
/// entries new weights through `reconfigure`, which replaces each).
#[derive(Clone)]
struct Weighed {
    entry: Arc<Entry>,
    weight: u64,
}

/// quick_cache's weight of an entry: its bytes, but never less than `max_bytes / size` (the
/// floor). quick_cache bounds only the total weight, so that one bound keeps both limits: the
/// entries' bytes stay within `max_bytes`, and no more than `size` entries fit.
#[derive(Clone)]
struct ByBytes;

impl Weighter<Key, Weighed> for ByBytes {
    fn weight(&self, _key: &Key, weighed: &Weighed) -> u64 {
        weighed.weight
    }
}

fn weight(bytes: u64, floor: u64) -> u64 {
    bytes.max(floor)
}

/// The weight a small answer counts for, so that `size` of them fill `max_bytes`.
fn weight_floor(max_bytes: u64, size: u64) -> u64 {
    max_bytes.div_ceil(size.max(1)).max(1)
}

/// Each quick_cache shard holds an equal part of the byte budget and refuses an answer heavier
/// than its part: enough shards for concurrency, but each big enough for 16 of the largest
/// (64 KB) answers.
fn shards(max_bytes: u64) -> usize {
    const SHARD_BYTES: u64 = 1 << 20;
    let most = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
    usize::try_from(max_bytes / SHARD_BYTES)
        .unwrap_or(usize::MAX)
        .clamp(1, most)
}

/// How long `answer` is kept, at `now` (seconds since the Unix epoch): its TTL within the
/// config's bounds, and never past its first signature's expiry (RFC 4035 §5.3.3), not even to
/// honour `min_ttl`: a validator would reject the answer from then on.
fn clamp(config: &CacheConfig, answer: &Answer, now: u64) -> Option<u32> {
    if answer.is_resolution_failure() {
        // RFC 9520: kept briefly, so clients retrying a failing name do not each cost
        // upstream queries; whatever TTL came with it does not apply
        return Some(config.servfail_ttl);
    }
    let ttl = answer.ttl?;
    let ttl = match answer.rcode {
        ResponseCode::NoError if !answer.answers.is_empty() => {
            ttl.clamp(config.min_ttl, config.max_ttl)
        }
        ResponseCode::NoError | ResponseCode::NXDomain => ttl.min(config.negative_max_ttl),
        _ => return None,
    };
    let ttl = answer
        .signatures_expire_in(now)
        .map_or(ttl, |left| ttl.min(left));
    (ttl > 0).then_some(ttl)
}

/// A fresh cached answer and its age.
pub struct Hit {
    entry: Arc<Entry>,
    age: u32,
    /// Past its TTL, served under RFC 8767: every record gets `STALE_TTL`.
    stale: bool,
    /// The upstreams in force at the lookup are trusted with AD (`Cache::trust_ad`).
    ad_trusted: bool,
}

/// TTL of a stale answer (RFC 8767 §4 recommends 30 s): clients come back soon for a fresh one.
pub const STALE_TTL: u32 = 30;

/// RFC 8767 §4's "failure recheck": after a refresh failed, its stale answer is served at once,
/// without asking upstream again, for this long (the RFC suggests 30 s). Otherwise every client
/// would wait `stale_after` for an upstream that is known to be down.
pub const FAILURE_RECHECK: Duration = Duration::from_secs(30);

/// An answer rather than a failure (SERVFAIL, REFUSED): only such an answer replaces one that
/// can still be served stale (RFC 8767 §4).
pub fn replaces_stale(answer: &Answer) -> bool {
    replaces_stale_rcode(answer.rcode)
}

/// Only real answers (NOERROR, NXDOMAIN) are worth serving stale or replacing a stale one.
fn replaces_stale_rcode(rcode: ResponseCode) -> bool {
    matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain)
}

impl Cache {
    pub fn new(config: &CacheConfig) -> Self {
        let settings = Settings::of(config);
        let options = OptionsBuilder::new()
            .estimated_items_capacity(usize::try_from(config.size).unwrap_or(usize::MAX))
            .weight_capacity(settings.capacity)
            .shards(shards(config.max_bytes))
            .build();
        // Only fails for values the builder's setters already rule out.
        #[allow(clippy::expect_used)]
        let options = options.expect("valid cache options");
        let entries = QuickCache::with_options(
            options,
            ByBytes,
            DefaultHashBuilder::default(),
            DefaultLifecycle::default(),
        );
        Self {
            entries,
            bytes: Arc::new(AtomicU64::new(0)),
            settings: ArcSwap::from_pointee(settings),
            // what an entry's AD already says: the upstream's, cleared for an untrusted one
            ad_trusted: AtomicBool::new(true),
        }
    }

    /// The upstreams now in force are trusted with AD, or not (a reload that changed them):
    /// hits from now on pass cached AD on only if they are.
    pub fn trust_ad(&self, trusted: bool) {
        self.ad_trusted.store(trusted, Ordering::Relaxed);
    }

    /// New `[cache]` bounds (a reload), without a flush. TTL bounds, `serve_stale_secs`,
    /// `stale_after` and `servfail_ttl` apply to answers stored from now on (an entry keeps the
    /// TTL it was stored with). A new `size` or `max_bytes` resizes the cache in place: when
    /// the floor weight changes, every entry is stored again under its new weight (its place
    /// in the eviction order kept), then quick_cache evicts down to the new capacity, coldest
    /// first. The number of shards stays what start chose for its `max_bytes`.
    pub fn reconfigure(&self, config: &CacheConfig) {
        let settings = Arc::new(Settings::of(config));
        let old = self.settings.swap(settings.clone());
        if settings.floor != old.floor {
            let entries: Vec<(Key, Weighed)> = self.entries.iter().collect();
            for (key, weighed) in entries {
                let weight = weight(weighed.entry.bytes(), settings.floor);
                let entry = weighed.entry;
                // soft: a reweighing is not a use, the entry stays as hot as it was
                let _ = self.entries.replace(key, Weighed { entry, weight }, true);
            }
        }
        if settings.capacity != old.capacity || settings.floor != old.floor {
            self.entries.set_capacity(settings.capacity);
        }
    }

    /// A fresh answer for the question (asked with CD set or not), if cached.
    pub fn get(&self, name: &LowerName, qtype: RecordType, cd: bool) -> Option<Hit> {
        let entry = self.entries.get(&KeyRef(name, qtype, cd))?.entry;
        let age = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        // Expired entries are not served; they stay until the capacity evicts them.
        (age < entry.ttl).then_some(Hit {
            entry,
            age,
            stale: false,
            ad_trusted: self.ad_trusted.load(Ordering::Relaxed),
        })
    }

    /// An expired answer no older than `serve_stale_secs` past its TTL, for when upstream
    /// cannot answer (RFC 8767).
    pub fn get_stale(&self, name: &LowerName, qtype: RecordType, cd: bool) -> Option<Hit> {
        let max_stale = self.settings.load().config.serve_stale_secs;
        if max_stale == 0 {
            return None;
        }
        let entry = self.entries.get(&KeyRef(name, qtype, cd))?.entry;
        let age = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        let stale = age >= entry.ttl;
        if stale && !replaces_stale_rcode(entry.rcode) {
            // a resolution failure past its servfail_ttl is gone, not something to fall back on
            return None;
        }
        (age < entry.ttl.saturating_add(max_stale)).then_some(Hit {
            entry,
            age,
            stale,
            ad_trusted: self.ad_trusted.load(Ordering::Relaxed),
        })
    }

    /// Stores `answer` under the TTL bounds of the config; returns the TTL used, if stored.
    pub fn insert(
        &self,
        name: LowerName,
        qtype: RecordType,
        cd: bool,
        answer: &Answer,
    ) -> Option<u32> {
        self.store((name, qtype, cd), answer, None)
    }

    /// `insert`, with the answer's destinations already worked out (`Destinations::of`, for the
    /// same name and answer) by a caller that needed them anyway.
    pub fn insert_inspected(
        &self,
        name: LowerName,
        qtype: RecordType,
        cd: bool,
        answer: &Answer,
        destinations: &Destinations,
    ) -> Option<u32> {
        self.store((name, qtype, cd), answer, Some(destinations))
    }

    fn store(&self, key: Key, answer: &Answer, destinations: Option<&Destinations>) -> Option<u32> {
        let settings = self.settings.load();
        if settings.capacity == 0 {
            return None;
        }
        let ttl = clamp(&settings.config, answer, unix_now())?;
        let entry = Entry::encode(
            &key.0,
            key.1,
            answer,
            destinations,
            ttl,
            settings.config.min_ttl,
            &self.bytes,
        )?;
        let weight = weight(entry.bytes(), settings.floor);
        let entry = Arc::new(entry);
        self.entries.insert(key, Weighed { entry, weight });
        Some(ttl)
    }

    /// Notes that a refresh of the expired answer for the question failed, which starts its
    /// `FAILURE_RECHECK` period. A fresh answer (one that replaced it meanwhile) is left alone.
    pub fn refresh_failed(&self, name: &LowerName, qtype: RecordType, cd: bool) {
        let Some(Weighed { entry, .. }) = self.entries.peek(&KeyRef(name, qtype, cd)) else {
            return;
        };
        let age = entry.stored.elapsed();
        if age.as_secs() >= u64::from(entry.ttl) {
            let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX - 1);
            entry.failed_at.store(ms + 1, Ordering::Relaxed);
        }
    }

    pub fn stale_after(&self) -> Duration {
        self.settings.load().config.stale_after
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes the cached answers hold (about: see `Entry::bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Entry {
    /// `None` if the answer cannot be encoded (it came decoded from upstream, so it should).
    /// `destinations`, if given, are the answer's; otherwise they are worked out here.
    fn encode(
        name: &LowerName,
        qtype: RecordType,
        answer: &Answer,
        destinations: Option<&Destinations>,
        ttl: u32,
        min_ttl: u32,
        ledger: &Arc<AtomicU64>,
    ) -> Option<Self> {
        let (mut bytes, counts, question_len, ttl_at) = encode_form(name, qtype, answer)?;
        let records_end = u16::try_from(bytes.len()).ok()?;
        match destinations {
            Some(d) => bytes.extend_from_slice(d.as_bytes()),
            None => destinations::encode(name, &answer.answers, &mut bytes),
        }
        let plain = match answer.without_dnssec(qtype) {
            None => None,
            Some(stripped) => {
                let (wire, counts, _, ttl_at) = encode_form(name, qtype, &stripped)?;
                Some(Box::new(Form {
                    counts,
                    wire: wire.into(),
                    ttl_at: ttl_at.into(),
                }))
            }
        };
        let entry = Self {
            rcode: answer.rcode,
            stored: Instant::now(),
            ttl,
            min_ttl,
            authentic_data: answer.authentic_data,
            full: Form {
                counts,
                wire: bytes.into(),
                ttl_at: ttl_at.into(),
            },
            plain,
            question_len,
            records_end,
            failed_at: AtomicU64::new(0),
            ledger: ledger.clone(),
        };
        ledger.fetch_add(entry.bytes(), Ordering::Relaxed);
        Some(entry)
    }

    /// The form a client gets, and its question and records (without the destinations): the
    /// whole answer if it set DO, else the one without DNSSEC records.
    fn form(&self, dnssec_ok: bool) -> (&Form, &[u8]) {
        match &self.plain {
            Some(plain) if !dnssec_ok => (plain, &plain.wire),
            _ => (&self.full, self.records()),
        }
    }

    /// About what this answer costs in memory: the entry, its wire bytes (destinations included)
    /// and TTL offsets, and the
    /// cache's slot for it (the key, whose name's heap part, if any, is at most the question
    /// again, and the `Arc`'s counts and quick_cache's bookkeeping). Fixed once made, as
    /// quick_cache requires of a weight.
    fn bytes(&self) -> u64 {
        const SLOT: usize = size_of::<Key>() + size_of::<Arc<Entry>>() + 32;
        let form = |f: &Form| f.wire.len() + f.ttl_at.len() * size_of::<u16>();
        let plain = self
            .plain
            .as_deref()
            .map_or(0, |p| size_of::<Form>() + form(p));
        (size_of::<Self>() + SLOT + form(&self.full) + plain + usize::from(self.question_len))
            as u64
    }

    /// The question and the records, without the destinations that follow them.
    fn records(&self) -> &[u8] {
        self.full
            .wire
            .get(..usize::from(self.records_end))
            .unwrap_or_default()
    }

    fn destinations(&self) -> DestinationsRef<'_> {
        DestinationsRef::new(
            self.full
                .wire
                .get(usize::from(self.records_end)..)
                .unwrap_or_default(),
        )
    }

    /// Within the failure-recheck period of a failed refresh.
    fn rechecking(&self) -> bool {
        let now = u64::try_from(self.stored.elapsed().as_millis()).unwrap_or(u64::MAX);
        within_recheck(self.failed_at.load(Ordering::Relaxed), now)
    }
}

/// `failed_at` is 0 (no failure) or the failure's time plus one, `now` the time; both in
/// milliseconds after the entry was stored.
fn within_recheck(failed_at: u64, now: u64) -> bool {
    failed_at != 0 && now.saturating_sub(failed_at - 1) < FAILURE_RECHECK.as_millis() as u64
}

const HEADER_LEN: usize = 12;

/// Seconds since the Unix epoch, as RRSIG timestamps count them.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `answer` as it follows a header: the question and the records (bytes), the header's counts,
/// the question's length, and where each record's TTL field is (all offsets after the header).
fn encode_form(
    name: &LowerName,
    qtype: RecordType,
    answer: &Answer,
) -> Option<(Vec<u8>, HeaderCounts, u16, Vec<u16>)> {
    let mut m = Message::response(0, OpCode::Query);
    m.add_query(Query::query(Name::from(name.clone()), qtype));
    m.add_answers(answer.answers.iter().cloned());
    m.add_authorities(answer.authorities.iter().cloned());
    m.add_additionals(answer.additionals.iter().cloned());
    let mut bytes = m.to_vec().ok()?;
    let counts = HeaderCounts {
        queries: 1,
        answers: u16::try_from(answer.answers.len()).ok()?,
        authorities: u16::try_from(answer.authorities.len()).ok()?,
        additionals: u16::try_from(answer.additionals.len()).ok()?,
    };
    // Find each record's TTL field with hickory's decoder: past the owner name (which may
    // be compressed), type and class.
    let mut decoder = BinDecoder::new(&bytes);
    Header::read(&mut decoder).ok()?;
    Query::read(&mut decoder).ok()?;
    let question_len = u16::try_from(decoder.index() - HEADER_LEN).ok()?;
    let records = usize::from(counts.answers + counts.authorities + counts.additionals);
    let mut ttl_at = Vec::with_capacity(records);
    for _ in 0..records {
        Name::read(&mut decoder).ok()?;
        decoder.read_u16().ok()?; // type
        decoder.read_u16().ok()?; // class
        ttl_at.push(u16::try_from(decoder.index() - HEADER_LEN).ok()?);
        decoder.read_u32().ok()?;
        let rdlength = decoder.read_u16().ok()?.unverified();
        decoder.read_slice(usize::from(rdlength)).ok()?;
    }
    bytes.drain(..HEADER_LEN);
    Some((bytes, counts, question_len, ttl_at))
}

impl Hit {
    /// A record's TTL as served now: within the entry's own bounds, lowered by its age, or the
    /// short stale TTL. The entry's TTL may be capped below a record's own (max_ttl) or raised
    /// above it (min_ttl): what clients see must agree with how long hushd keeps it.
    fn ttl_now(&self, ttl: u32) -> u32 {
        if self.stale {
            STALE_TTL
        } else {
            ttl.max(self.entry.min_ttl)
                .min(self.entry.ttl)
                .saturating_sub(self.age)
        }
    }

    /// The answer with its record TTLs lowered by the time it has spent in the cache, DNSSEC
    /// records and all (`Reply::forwarded` leaves them out for a client without DO). A stale
    /// answer is hushd's choice, not what upstream validated now: it never carries AD.
    pub fn answer(&self) -> Answer {
        let entry = &self.entry;
        let mut answer = Answer {
            rcode: entry.rcode,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            ttl: Some(if self.stale {
                STALE_TTL
            } else {
                entry.ttl.saturating_sub(self.age)
            }),
            authentic_data: self.authentic_data(),
        };
        let mut bytes = Vec::with_capacity(HEADER_LEN + entry.full.wire.len());
        let header = Header {
            metadata: Metadata::new(0, MessageType::Response, OpCode::Query),
            counts: entry.full.counts,
        };
        if header.emit(&mut BinEncoder::new(&mut bytes)).is_err() {
            return answer;
        }
        bytes.extend_from_slice(entry.records());
        // Encoded by `Entry::encode` from records hickory had decoded: this does not fail.
        let Ok(message) = Message::from_vec(&bytes) else {
            return answer;
        };
        answer.answers = message.answers;
        answer.authorities = message.authorities;
        answer.additionals = message.additionals;
        for r in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
            .chain(answer.additionals.iter_mut())
        {
            r.ttl = self.ttl_now(r.ttl);
        }
        answer
    }

    pub fn rcode(&self) -> ResponseCode {
        self.entry.rcode
    }

    /// Where the answer sends the client, recorded when it was cached: read in place, nothing
    /// decoded. Its address TTLs are the records' own; `addresses` gives them as served now.
    pub fn destinations(&self) -> DestinationsRef<'_> {
        self.entry.destinations()
    }

    /// The answer's addresses with the TTLs this hit serves them with: lowered by the entry's
    /// age and within its bounds, as in the reply (`STALE_TTL` when stale): how long the client
    /// may use each address without asking again, so how long a firewall set must keep it.
    pub fn addresses(&self) -> impl Iterator<Item = (IpAddr, u32)> + '_ {
        self.destinations()
            .addresses()
            .map(|(ip, ttl)| (ip, self.ttl_now(ttl)))
    }

    /// The upstream (a trusted one) validated it, the upstreams in force are still trusted with
    /// AD, and it is not stale: what the AD bit of a reply to a client that asks for it
    /// (`reply::gives_ad`) may say.
    pub fn authentic_data(&self) -> bool {
        self.entry.authentic_data && self.ad_trusted && !self.stale
    }

    /// Past its TTL (only `Cache::get_stale` returns such hits).
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Stale, and a refresh failed less than `FAILURE_RECHECK` ago: serve it without asking.
    pub fn rechecking(&self) -> bool {
        self.stale && self.entry.rechecking()
    }

    /// Writes the whole reply to `out`: `metadata` for the header, the client's own question
    /// bytes (so its letter case is echoed), the cached records with their TTLs brought up to
    /// date (with the DNSSEC records only if `dnssec_ok`, the client's DO), then `edns`' OPT.
    /// Returns false, leaving `out` to be discarded, when the reply would exceed `max_size`
    /// (the caller then builds a truncated one the slow way).
    pub fn write_wire(
        &self,
        metadata: Metadata,
        question: &[u8],
        edns: Option<&Edns>,
        dnssec_ok: bool,
        max_size: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        let entry = &self.entry;
        let question_len = usize::from(entry.question_len);
        if question.len() != question_len {
            return false; // cannot happen for the same name and type; the slow path copes
        }
        let (form, records) = entry.form(dnssec_ok);
        out.clear();
        let mut counts = form.counts;
        counts.additionals += u16::from(edns.is_some());
        if (Header { metadata, counts })
            .emit(&mut BinEncoder::new(out))
            .is_err()
        {
            return false;
        }
        out.extend_from_slice(question);
        out.extend_from_slice(records.get(question_len..).unwrap_or_default());
        for &at in form.ttl_at.iter() {
            let at = usize::from(at);
            let (Some(stored), Some(field)) = (
                form.wire.get(at..at + 4),
                out.get_mut(HEADER_LEN + at..HEADER_LEN + at + 4),
            ) else {
                return false;
            };
            let stored = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
            field.copy_from_slice(&self.ttl_now(stored).to_be_bytes());
        }
        if let Some(edns) = edns {
            let mut encoder = BinEncoder::with_offset(out, out.len() as u32);
            if Record::from(edns).emit(&mut encoder).is_err() {
                return false;
            }
        }
        out.len() <= max_size
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        str::FromStr,
    };

    use hickory_proto::rr::{
        Name, RData,
        rdata::{A, AAAA, CNAME},
    };

    use super::*;

    fn config() -> CacheConfig {
        CacheConfig {
            size: 100,
            max_bytes: 1 << 20,
            min_ttl: 0,
            max_ttl: 300,
            negative_max_ttl: 60,
            serve_stale_secs: 86_400,
            stale_after: Duration::from_millis(1800),
            servfail_ttl: 5,
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
            authentic_data: false,
        }
    }

    fn key() -> LowerName {
        LowerName::from_str("a.example.").unwrap()
    }

    #[test]
    fn hit_after_insert_and_ttls_are_capped() {
        let c = Cache::new(&config());
        assert!(c.get(&key(), RecordType::A, false).is_none());
        assert_eq!(
            c.insert(key(), RecordType::A, false, &positive(3600)),
            Some(300)
        );
        let hit = c.get(&key(), RecordType::A, false).unwrap().answer();
        assert_eq!(hit.answers.len(), 1);
        assert_eq!(hit.answers[0].ttl, 300);
        assert!(c.get(&key(), RecordType::AAAA, false).is_none());
    }

    #[test]
    fn a_udp_hit_is_written_from_the_wire_form_with_ttls_brought_up_to_date() {
        let c = Cache::new(&CacheConfig {
            min_ttl: 20,
            ..config()
        });
        let mut answer = positive(3600);
        let ns = Name::from_str("ns.example.").unwrap();
        answer.authorities.push(Record::from_rdata(
            Name::from_str("example.").unwrap(),
            10, // below min_ttl: raised to it
            RData::NS(hickory_proto::rr::rdata::NS(ns.clone())),
        ));
        answer.additionals.push(Record::from_rdata(
            ns,
            100,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 53))),
        ));
        c.insert(key(), RecordType::A, false, &answer);
        let mut hit = c.get(&key(), RecordType::A, false).unwrap();
        // with the key and the slot counted, still far below the ~1 KB of hickory `Record`s
        let bytes = hit.entry.bytes();
        assert!(bytes < 400, "{bytes} bytes");
        assert_eq!(c.bytes(), bytes);
        hit.age = 7; // as if stored 7 s ago

        // the client's question, in its own letter case (hickory's encoder would lower it)
        let question = b"\x01A\x07Example\x00\x00\x01\x00\x01";
        let metadata = Metadata::new(4242, MessageType::Response, OpCode::Query);
        let mut out = Vec::new();
        assert!(hit.write_wire(metadata, question, None, false, 512, &mut out));
        let reply = Message::from_vec(&out).unwrap();
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(reply.queries[0].name().to_ascii(), "A.Example.");
        let ttls = |records: &[Record]| records.iter().map(|r| r.ttl).collect::<Vec<_>>();
        assert_eq!(ttls(&reply.answers), [300 - 7]);
        assert_eq!(ttls(&reply.authorities), [20 - 7]);
        assert_eq!(ttls(&reply.additionals), [100 - 7]);
        // the record path agrees
        let decoded = hit.answer();
        assert_eq!(ttls(&decoded.answers), [300 - 7]);
        assert_eq!(ttls(&decoded.authorities), [20 - 7]);
        assert_eq!(decoded.additionals[0].data, answer.additionals[0].data);
        // too big for the client: refused, so the caller truncates
        assert!(!hit.write_wire(metadata, question, None, false, 40, &mut out));
    }

    /// `positive(ttl)` signed: an RRSIG over the A that expires at `expiration` (Unix seconds),
    /// and an NSEC in the authority section; AD from a trusted upstream.
    fn signed(ttl: u32, expiration: u32) -> Answer {
        let mut answer = positive(ttl);
        let owner = Name::from_str("a.example.").unwrap();
        answer
            .answers
            .push(crate::answer::test_rrsig(&owner, RecordType::A, expiration));
        let nsec = hickory_proto::dnssec::rdata::NSEC::new(
            Name::from_str("b.example.").unwrap(),
            [RecordType::A, RecordType::RRSIG, RecordType::NSEC],
        );
        answer.authorities.push(Record::from_rdata(
            owner,
            300,
            RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::NSEC(nsec)),
        ));
        answer.authentic_data = true;
        answer
    }

    fn far_future() -> u32 {
        u32::try_from(unix_now() + 86_400 * 30).unwrap()
    }

    #[test]
    fn a_signed_answer_is_kept_with_and_without_its_dnssec_records() {
        let c = Cache::new(&config());
        c.insert(key(), RecordType::A, false, &signed(300, far_future()));
        let hit = c.get(&key(), RecordType::A, false).unwrap();
        assert!(hit.authentic_data());
        let question = b"\x01a\x07example\x00\x00\x01\x00\x01";
        let metadata = Metadata::new(7, MessageType::Response, OpCode::Query);
        let (mut with, mut without) = (Vec::new(), Vec::new());
        assert!(hit.write_wire(metadata, question, None, true, 4096, &mut with));
        assert!(hit.write_wire(metadata, question, None, false, 4096, &mut without));
        let with = Message::from_vec(&with).unwrap();
        let types = |rs: &[Record]| rs.iter().map(Record::record_type).collect::<Vec<_>>();
        assert_eq!(types(&with.answers), [RecordType::A, RecordType::RRSIG]);
        assert_eq!(types(&with.authorities), [RecordType::NSEC]);
        let without = Message::from_vec(&without).unwrap();
        assert_eq!(types(&without.answers), [RecordType::A]);
        assert!(without.authorities.is_empty());
        // the TTLs of the second form are brought up to date too
        assert_eq!(without.answers[0].ttl, 300);
        // the record path decodes the whole answer (Reply::forwarded leaves records out)
        assert_eq!(hit.answer().answers.len(), 2);
        assert!(hit.answer().authentic_data);

        // an unsigned answer keeps one form, and the second costs only what it holds
        c.insert(key(), RecordType::AAAA, false, &positive(300));
        let plain = c.get(&key(), RecordType::AAAA, false).unwrap();
        assert!(plain.entry.plain.is_none());
        assert!(!plain.authentic_data());
        let stripped = hit.entry.plain.as_deref().unwrap();
        assert_eq!(
            hit.entry.bytes(),
            plain.entry.bytes()
                + (hit.entry.full.wire.len() - plain.entry.full.wire.len()) as u64
                + 2 * 2
                + (size_of::<Form>() + stripped.wire.len() + 2) as u64
        );
    }

    #[test]
    fn answers_to_cd_queries_are_kept_apart() {
        let c = Cache::new(&config());
        c.insert(key(), RecordType::A, true, &positive(300));
        assert!(c.get(&key(), RecordType::A, false).is_none());
        assert!(c.get_stale(&key(), RecordType::A, false).is_none());
        assert!(c.get(&key(), RecordType::A, true).is_some());
        c.insert(key(), RecordType::A, false, &signed(300, far_future()));
        assert!(!c.get(&key(), RecordType::A, true).unwrap().authentic_data());
        assert!(
            c.get(&key(), RecordType::A, false)
                .unwrap()
                .authentic_data()
        );
    }

    #[test]
    fn cached_ad_is_passed_on_only_while_the_upstreams_are_trusted_with_it() {
        let c = Cache::new(&config());
        c.insert(key(), RecordType::A, false, &signed(300, far_future()));
        c.trust_ad(false);
        let hit = c.get(&key(), RecordType::A, false).unwrap();
        assert!(!hit.authentic_data());
        assert!(!hit.answer().authentic_data);
        c.trust_ad(true);
        assert!(
            c.get(&key(), RecordType::A, false)
                .unwrap()
                .authentic_data()
        );
    }

    #[test]
    fn an_answer_is_not_kept_past_its_signatures() {
        let c = Cache::new(&CacheConfig {
            min_ttl: 600,
            max_ttl: 3600,
            ..config()
        });
        let now = 1_800_000_000;
        // min_ttl would raise it to 600; the signature ends in 120 s
        assert_eq!(
            clamp(&c.settings.load().config, &signed(60, 1_800_000_120), now),
            Some(120)
        );
        assert_eq!(
            clamp(&c.settings.load().config, &signed(60, 1_800_086_400), now),
            Some(600)
        );
        assert_eq!(
            clamp(&c.settings.load().config, &positive(60), now),
            Some(600)
        );
        // expired already: not cached at all
        assert_eq!(
            clamp(&c.settings.load().config, &signed(60, 1_799_999_000), now),
            None
        );
        let mut nx = signed(0, 1_800_000_030);
        nx.rcode = ResponseCode::NXDomain;
        nx.answers.retain(|r| r.record_type() == RecordType::RRSIG);
        nx.ttl = Some(3600);
        assert_eq!(clamp(&c.settings.load().config, &nx, now), Some(30));
    }

    #[test]
    fn a_stale_answer_never_carries_ad() {
        let c = Cache::new(&config());
        c.insert(key(), RecordType::A, false, &signed(1, far_future()));
        std::thread::sleep(Duration::from_millis(1100));
        let stale = c.get_stale(&key(), RecordType::A, false).unwrap();
        assert!(stale.is_stale());
        assert!(!stale.authentic_data());
        assert!(!stale.answer().authentic_data);
    }

    /// What keeping a second form costs and saves, on an answer shaped like NSD's for a name
    /// in a signed wildcard zone (A + RRSIG; NS + RRSIG and the wildcard's NSEC + RRSIG in the
    /// authority section; the server's A + RRSIG as glue): the entry's bytes, and the time to
    /// write a hit for a DO client, for a plain one from the second form, and for a plain one
    /// the other way, deriving the stripped reply from the records on each hit. Prints the
    /// figures, asserts nothing about time. Run in release:
    /// `cargo test --release --lib -- --ignored cost_of_the_second_form --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn cost_of_the_second_form() {
        use hickory_proto::{
            dnssec::rdata::{DNSSECRData, NSEC},
            rr::rdata::NS,
        };
        let c = Cache::new(&config());
        let (zone, owner, ns) = (
            Name::from_str("example.").unwrap(),
            Name::from_str("a.example.").unwrap(),
            Name::from_str("ns.example.").unwrap(),
        );
        let wildcard = Name::from_str("*.example.").unwrap();
        let exp = far_future();
        let sig = |n: &Name, t| crate::answer::test_rrsig(n, t, exp);
        let a = |n: &Name| Record::from_rdata(n.clone(), 300, RData::A(A::new(192, 0, 2, 1)));
        let nsec = NSEC::new(
            ns.clone(),
            [RecordType::A, RecordType::RRSIG, RecordType::NSEC],
        );
        let answer = Answer {
            rcode: ResponseCode::NoError,
            answers: vec![a(&owner), sig(&owner, RecordType::A)],
            authorities: vec![
                Record::from_rdata(zone.clone(), 300, RData::NS(NS(ns.clone()))),
                sig(&zone, RecordType::NS),
                Record::from_rdata(
                    wildcard.clone(),
                    300,
                    RData::DNSSEC(DNSSECRData::NSEC(nsec)),
                ),
                sig(&wildcard, RecordType::NSEC),
            ],
            additionals: vec![a(&ns), sig(&ns, RecordType::A)],
            ttl: Some(300),
            authentic_data: true,
        };
        c.insert(key(), RecordType::AAAA, false, &positive(300));
        c.insert(key(), RecordType::A, false, &answer);
        let unsigned = c.get(&key(), RecordType::AAAA, false).unwrap();
        let hit = c.get(&key(), RecordType::A, false).unwrap();
        let plain = hit.entry.plain.as_deref().unwrap();
        let second = (size_of::<Form>() + plain.wire.len() + plain.ttl_at.len() * 2) as u64;
        println!(
            "entry bytes: unsigned A {}, signed {} of which the second form {} ({:.0} %)",
            unsigned.entry.bytes(),
            hit.entry.bytes(),
            second,
            second as f64 * 100.0 / (hit.entry.bytes() - second) as f64
        );

        let question = b"\x01a\x07example\x00\x00\x01\x00\x01";
        let metadata = Metadata::new(7, MessageType::Response, OpCode::Query);
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        let mut out = Vec::with_capacity(4096);
        const N: u32 = 200_000;
        let time = |what: &str, f: &mut dyn FnMut()| {
            let mut best = Duration::MAX;
            for _ in 0..5 {
                let started = Instant::now();
                for _ in 0..N {
                    f();
                }
                best = best.min(started.elapsed() / N);
            }
            println!("{what}: {best:?} a hit (best of 5 x {N})");
        };
        time("unsigned A, one form", &mut || {
            assert!(unsigned.write_wire(metadata, question, Some(&edns), false, 1232, &mut out));
        });
        time("signed, DO client", &mut || {
            assert!(hit.write_wire(metadata, question, Some(&edns), true, 1232, &mut out));
        });
        time("signed, plain client, second form", &mut || {
            assert!(hit.write_wire(metadata, question, Some(&edns), false, 1232, &mut out));
        });
        time("signed, plain client, derived on the hit", &mut || {
            let stripped = hit.answer().without_dnssec(RecordType::A).unwrap();
            let (bytes, ..) = encode_form(&key(), RecordType::A, &stripped).unwrap();
            out.clear();
            out.extend_from_slice(&bytes);
        });
    }

    /// `www.example.` -> CNAME `cdn.example.` -> A and AAAA (TTLs 3600 and 30), and an A for
    /// `cdn.example.` in the additional section, which is no destination.
    fn chained() -> Answer {
        let (www, cdn) = (
            Name::from_str("www.example.").unwrap(),
            Name::from_str("cdn.example.").unwrap(),
        );
        Answer {
            rcode: ResponseCode::NoError,
            answers: vec![
                Record::from_rdata(www, 600, RData::CNAME(CNAME(cdn.clone()))),
                Record::from_rdata(cdn.clone(), 3600, RData::A(A(Ipv4Addr::new(192, 0, 2, 7)))),
                Record::from_rdata(cdn, 30, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
            ],
            authorities: vec![],
            additionals: vec![Record::from_rdata(
                Name::from_str("cdn.example.").unwrap(),
                300,
                RData::A(A(Ipv4Addr::new(203, 0, 113, 53))),
            )],
            ttl: Some(30),
            authentic_data: false,
        }
    }

    fn www() -> LowerName {
        LowerName::from_str("www.example.").unwrap()
    }

    #[test]
    fn a_hit_gives_the_destinations_recorded_when_it_was_cached() {
        let c = Cache::new(&CacheConfig {
            min_ttl: 10,
            ..config()
        });
        let answer = chained();
        c.insert(www(), RecordType::A, false, &answer);
        let mut hit = c.get(&www(), RecordType::A, false).unwrap();
        let d = hit.destinations();
        assert_eq!(d.targets().collect::<Vec<_>>(), [b"cdn.example"]);
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        // as upstream gave them, and as `Destinations::of` has them
        assert_eq!(d.addresses().collect::<Vec<_>>(), [(v4, 3600), (v6, 30)]);
        let of = Destinations::of(&www(), &answer);
        assert!(d.addresses().eq(of.addresses()) && d.targets().eq(of.targets()));

        // as served: within the entry's bounds (it is kept 30 s, the answer's TTL), then
        // lowered by its age
        assert_eq!(hit.addresses().collect::<Vec<_>>(), [(v4, 30), (v6, 30)]);
        hit.age = 25;
        assert_eq!(hit.addresses().collect::<Vec<_>>(), [(v4, 5), (v6, 5)]);
        // the same TTLs as the reply's records
        let reply = hit.answer();
        assert_eq!(
            reply.answers[1..].iter().map(|r| r.ttl).collect::<Vec<_>>(),
            [5, 5]
        );
        hit.stale = true;
        assert!(hit.addresses().all(|(_, ttl)| ttl == STALE_TTL));

        // the destinations ride behind the records: replies are as before
        let mut out = Vec::new();
        let metadata = Metadata::new(1, MessageType::Response, OpCode::Query);
        let question = b"\x03www\x07example\x00\x00\x01\x00\x01";
        assert!(hit.write_wire(metadata, question, None, false, 512, &mut out));
        let reply = Message::from_vec(&out).unwrap();
        assert_eq!(reply.answers.len(), 3);
        assert_eq!(reply.additionals.len(), 1);
        assert_eq!(hit.answer().answers.len(), 3);
    }

    #[test]
    fn destinations_given_by_the_caller_are_the_ones_kept() {
        let c = Cache::new(&config());
        let answer = chained();
        let d = Destinations::of(&www(), &answer);
        c.insert_inspected(www(), RecordType::A, false, &answer, &d);
        let hit = c.get(&www(), RecordType::A, false).unwrap();
        assert_eq!(hit.destinations().addresses().count(), 2);
        assert!(hit.destinations().targets().eq(d.targets()));
    }

    #[test]
    fn an_entrys_weight_counts_its_destinations() {
        let c = Cache::new(&config());
        // the same records, but only as destinations in the second entry
        let mut answer = positive(300);
        let plain = {
            let mut a = answer.clone();
            a.additionals = std::mem::take(&mut a.answers);
            a
        };
        c.insert(key(), RecordType::A, false, &plain);
        let without = c.get(&key(), RecordType::A, false).unwrap();
        assert!(without.destinations().is_empty());
        c.insert(key(), RecordType::AAAA, false, &answer);
        let with = c.get(&key(), RecordType::AAAA, false).unwrap();
        assert_eq!(with.destinations().addresses().count(), 1);
        // 1 count byte, then the address: family, TTL, 4 bytes
        assert_eq!(with.entry.bytes(), without.entry.bytes() + 10);
        answer.answers.clear();
        let empty = Entry::encode(&key(), RecordType::A, &answer, None, 300, 0, &c.bytes);
        assert!(empty.unwrap().destinations().is_empty());
    }

    #[test]
    fn negative_answers_use_their_own_cap_and_need_an_soa_ttl() {
        let c = Cache::new(&config());
        let mut nx = positive(0);
        nx.rcode = ResponseCode::NXDomain;
        nx.answers.clear();
        nx.ttl = Some(900);
        assert_eq!(c.insert(key(), RecordType::A, false, &nx), Some(60));
        nx.ttl = None;
        assert_eq!(c.insert(key(), RecordType::AAAA, false, &nx), None);
    }

    #[test]
    fn resolution_failures_are_kept_for_servfail_ttl_other_rcodes_and_zero_ttls_not_at_all() {
        let c = Cache::new(&config());
        let failure = Answer::resolution_failure();
        assert_eq!(c.insert(key(), RecordType::A, false, &failure), Some(5));
        let hit = c.get(&key(), RecordType::A, false).unwrap();
        assert_eq!(hit.rcode(), ResponseCode::ServFail);
        assert!(hit.answer().answers.is_empty());
        let mut refused = positive(100);
        refused.rcode = ResponseCode::Refused;
        assert_eq!(c.insert(key(), RecordType::AAAA, false, &refused), None);
        assert_eq!(c.insert(key(), RecordType::MX, false, &positive(0)), None);
    }

    #[test]
    fn an_expired_resolution_failure_is_never_served_stale() {
        let c = Cache::new(&CacheConfig {
            servfail_ttl: 1,
            ..config()
        });
        let mut fail = positive(100);
        fail.rcode = ResponseCode::ServFail;
        fail.answers.clear();
        fail.ttl = None;
        assert_eq!(c.insert(key(), RecordType::A, false, &fail), Some(1));
        assert!(c.get(&key(), RecordType::A, false).is_some());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(c.get(&key(), RecordType::A, false).is_none());
        assert!(c.get_stale(&key(), RecordType::A, false).is_none());
    }

    #[test]
    fn expired_answers_are_served_stale_with_a_short_ttl_within_the_limit() {
        let c = Cache::new(&config());
        c.insert(key(), RecordType::A, false, &positive(1));
        assert!(
            c.get_stale(&key(), RecordType::A, false)
                .is_some_and(|h| !h.stale)
        );
        std::thread::sleep(Duration::from_millis(1100));
        assert!(c.get(&key(), RecordType::A, false).is_none());
        let stale = c.get_stale(&key(), RecordType::A, false).unwrap();
        assert!(stale.stale);
        assert!(stale.answer().answers.iter().all(|r| r.ttl == STALE_TTL));
        let off = Cache::new(&CacheConfig {
            serve_stale_secs: 0,
            ..config()
        });
        off.insert(key(), RecordType::A, false, &positive(1));
        assert!(off.get_stale(&key(), RecordType::A, false).is_none());
    }

    #[test]
    fn size_zero_disables_the_cache() {
        let c = Cache::new(&CacheConfig {
            size: 0,
            ..config()
        });
        assert_eq!(c.insert(key(), RecordType::A, false, &positive(100)), None);
        assert!(c.get(&key(), RecordType::A, false).is_none());
    }

    #[test]
    fn a_smaller_size_keeps_entries_up_to_the_new_bound() {
        let c = Cache::new(&CacheConfig {
            size: 1000,
            max_bytes: 1 << 20,
            ..config()
        });
        let name = |i| LowerName::from_str(&format!("n{i}.example.")).unwrap();
        for i in 0..200 {
            c.insert(name(i), RecordType::A, false, &positive(300));
        }
        assert_eq!(c.len(), 200);
        let started = Instant::now();
        c.reconfigure(&CacheConfig {
            size: 50,
            max_bytes: 1 << 20,
            ..config()
        });
        let took = started.elapsed();
        assert!((25..=50).contains(&c.len()), "{} entries", c.len());
        assert!(took < Duration::from_secs(1), "{took:?}");
        // growing again keeps what is there and makes room
        let kept = c.len();
        c.reconfigure(&CacheConfig {
            size: 1000,
            max_bytes: 1 << 20,
            ..config()
        });
        assert_eq!(c.len(), kept);
        for i in 1000..1300 {
            c.insert(name(i), RecordType::A, false, &positive(300));
        }
        assert!(c.len() > 300, "{} entries", c.len());
    }

    #[test]
    fn new_ttl_bounds_apply_to_answers_stored_after_them() {
        let c = Cache::new(&config());
        assert_eq!(
            c.insert(key(), RecordType::A, false, &positive(3600)),
            Some(300)
        );
        c.reconfigure(&CacheConfig {
            max_ttl: 60,
            ..config()
        });
        // kept, with the TTL it was stored with
        assert_eq!(c.len(), 1);
        let other = LowerName::from_str("b.example.").unwrap();
        assert_eq!(
            c.insert(other, RecordType::A, false, &positive(3600)),
            Some(60)
        );
    }

    #[test]
    fn a_cache_of_size_zero_can_be_turned_on_and_off() {
        let c = Cache::new(&CacheConfig {
            size: 0,
            ..config()
        });
        assert_eq!(c.insert(key(), RecordType::A, false, &positive(100)), None);
        c.reconfigure(&config());
        assert_eq!(
            c.insert(key(), RecordType::A, false, &positive(100)),
            Some(100)
        );
        assert!(c.get(&key(), RecordType::A, false).is_some());
        c.reconfigure(&CacheConfig {
            size: 0,
            ..config()
        });
        assert!(c.get(&key(), RecordType::A, false).is_none());
    }

    /// 30 TXT records of ~93 bytes for `name`: about 3 KB, like an answer that came over TCP.
    fn big(name: &str) -> Answer {
        let name = Name::from_str(name).unwrap();
        let answers = (0..30)
            .map(|i| {
                let text = format!("{i:02}-{}", "x".repeat(90));
                Record::from_rdata(
                    name.clone(),
                    300,
                    RData::TXT(hickory_proto::rr::rdata::TXT::new(vec![text])),
                )
            })
            .collect();
        Answer {
            answers,
            ..positive(300)
        }
    }

    #[test]
    fn an_entry_weighs_its_bytes_but_at_least_its_share_of_the_budget() {
        assert_eq!(weight_floor(64 << 20, 10_000), 6711);
        assert_eq!(weight_floor(100, 1_000), 1);
        assert_eq!(weight_floor(100, 0), 100);
        assert_eq!(weight(3_000, 6_711), 6_711);
        assert_eq!(weight(30_000, 6_711), 30_000);
        assert_eq!(shards(200_000), 1);
        assert!(shards(64 << 20) >= 1);
    }

    #[test]
    fn the_cache_holds_no_more_than_size_answers_nor_max_bytes() {
        let c = Cache::new(&CacheConfig {
            size: 100,
            max_bytes: 100_000,
            ..config()
        });
        // small answers: the count is the limit
        for i in 0..300 {
            let name = LowerName::from_str(&format!("n{i}.example.")).unwrap();
            c.insert(name, RecordType::A, false, &positive(300));
        }
        assert!((50..=100).contains(&c.len()), "{} entries", c.len());
        assert!(c.bytes() < 100_000 / 2, "{} bytes", c.bytes());

        // big answers: the bytes are (a new cache, as S3-FIFO would keep the small ones above)
        let c = Cache::new(&CacheConfig {
            size: 100,
            max_bytes: 100_000,
            ..config()
        });
        for i in 0..300 {
            let name = format!("big{i}.example.");
            let answer = big(&name);
            c.insert(
                LowerName::from_str(&name).unwrap(),
                RecordType::TXT,
                false,
                &answer,
            );
        }
        assert!(c.bytes() <= 100_000, "{} bytes", c.bytes());
        assert!(c.bytes() > 100_000 / 2, "{} bytes", c.bytes());
        assert!(c.len() < 40, "{} entries", c.len());
    }

    #[test]
    fn the_byte_total_follows_replacements_and_the_last_reference() {
        let c = Cache::new(&config());
        c.insert(key(), RecordType::TXT, false, &big("a.example."));
        let one = c.bytes();
        assert!(one > 3_000, "{one}");
        let hit = c.get(&key(), RecordType::TXT, false).unwrap();
        c.insert(key(), RecordType::TXT, false, &big("a.example."));
        // the replaced answer is still read by `hit`
        assert_eq!(c.bytes(), 2 * one);
        drop(hit);
        assert_eq!(c.bytes(), one);
        c.insert(key(), RecordType::TXT, false, &positive(300));
        assert!(c.bytes() < one / 5, "{}", c.bytes());
    }

    #[test]
    fn the_failure_recheck_period_runs_30_s_from_the_failure() {
        assert!(!within_recheck(0, 10));
        assert!(within_recheck(1, 0));
        assert!(within_recheck(5_001, 34_999));
        assert!(!within_recheck(5_001, 35_000));
    }

    #[test]
    fn a_failed_refresh_marks_only_an_expired_answer() {
        let c = Cache::new(&config());
        c.insert(key(), RecordType::A, false, &positive(300));
        c.refresh_failed(&key(), RecordType::A, false);
        assert!(
            !c.get_stale(&key(), RecordType::A, false)
                .unwrap()
                .rechecking()
        );
        assert_eq!(
            c.get(&key(), RecordType::A, false)
                .unwrap()
                .entry
                .failed_at
                .load(Ordering::Relaxed),
            0
        );

        c.insert(key(), RecordType::AAAA, false, &positive(1));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(
            !c.get_stale(&key(), RecordType::AAAA, false)
                .unwrap()
                .rechecking()
        );
        c.refresh_failed(&key(), RecordType::AAAA, false);
        let stale = c.get_stale(&key(), RecordType::AAAA, false).unwrap();
        assert!(stale.is_stale() && stale.rechecking());
        // a fresh answer replaces the mark with it
        c.insert(key(), RecordType::AAAA, false, &positive(1));
        assert!(
            !c.get_stale(&key(), RecordType::AAAA, false)
                .unwrap()
                .rechecking()
        );
    }
}
