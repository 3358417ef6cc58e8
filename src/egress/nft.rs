//! Feeding nftables sets with answered addresses. The query path hands each address to
//! `NftWriter::offer` (a bounded queue, never a wait); a thread of its own (`BatchLoop`) gathers
//! the offers for a few milliseconds, keeps one per set and address (the longest timeout), and
//! writes them in one netlink transaction. hushd only adds elements: it never creates, flushes
//! or deletes the admin's tables, sets or rules, and a set it cannot use is an error at start.

use std::{
    collections::hash_map::Entry,
    fmt,
    hash::{Hash, Hasher},
    io,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use netlink_packet_netfilter::nftables::SetFlags;
use prometheus::IntCounter;
use rustc_hash::{FxHashMap, FxHasher};

use super::{
    SetRef,
    netlink::{Netlink, Refresh, SetInfo, SetWrite, TYPE_IP6ADDR, TYPE_IPADDR},
};
use crate::metrics::Metrics;

/// Where the admin is told to look when hushd may not use netlink.
const DROP_IN: &str = "systemd/hushd.service.d/nftables.conf";

/// A set as the writer knows it: a small number, resolved at start and reload, so an offer
/// carries no name and the query path hashes no string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetId(u32);

/// The address family a set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrFamily {
    V4,
    V6,
}

impl AddrFamily {
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

/// The sets one list (or one group) feeds, by address family: an answer's IPv4 addresses go to
/// every `ipv4_addr` set, its IPv6 addresses to every `ipv6_addr` set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetTargets {
    v4: Arc<[SetId]>,
    v6: Arc<[SetId]>,
}

impl SetTargets {
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn for_addr(&self, addr: &IpAddr) -> &[SetId] {
        match addr {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        }
    }
}

/// A set that passed `check_sets`, with the family of addresses it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSet {
    pub set: SetRef,
    pub family: AddrFamily,
}

/// Why a set cannot be fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetProblem {
    /// The table or the set does not exist.
    Missing,
    /// The key is not an IPv4 or IPv6 address.
    WrongType { key_type: u32, key_len: u32 },
    /// No `flags timeout`: elements could not expire.
    NoTimeout,
    /// An interval set, a map or a constant set: hushd adds single addresses to a plain set.
    WrongKind(&'static str),
    /// Anything else the kernel said.
    Kernel(String),
}

/// What `check_sets` found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// hushd may not talk to nftables at all: one error for every set.
    #[error("{0}")]
    Access(String),
    /// One set, by its index in the slice checked.
    #[error("nftables set \"{set}\": {}", describe(problem))]
    Set {
        index: usize,
        set: SetRef,
        problem: SetProblem,
    },
}

fn describe(p: &SetProblem) -> String {
    match p {
        SetProblem::Missing => "does not exist; hushd never creates sets: create it in your \
             ruleset (nftables/hushd.nft is an example) and load it before hushd starts"
            .into(),
        SetProblem::WrongType { key_type, key_len } => format!(
            "holds {}, not addresses: declare it `type ipv4_addr` or `type ipv6_addr`",
            type_name(*key_type, *key_len)
        ),
        SetProblem::NoTimeout => "has no `flags timeout`: hushd's elements must expire when \
             the answers do; declare it with `flags timeout;`"
            .into(),
        SetProblem::WrongKind(kind) => format!(
            "is {kind}: hushd adds single addresses, to a plain set (`type ipv4_addr; flags timeout;`)"
        ),
        SetProblem::Kernel(e) => format!("cannot be read: {e}"),
    }
}

fn type_name(key_type: u32, key_len: u32) -> String {
    match (key_type, key_len) {
        (TYPE_IPADDR, 4) => "ipv4_addr".into(),
        (TYPE_IP6ADDR, 16) => "ipv6_addr".into(),
        (9, _) => "ether_addr".into(),
        (12, _) => "inet_proto".into(),
        (13, _) => "inet_service".into(),
        (19, _) => "mark".into(),
        (_, l) if l > 16 => format!("a concatenation or a key of {l} bytes"),
        (t, l) => format!("keys of type {t} ({l} bytes)"),
    }
}

/// Whether a set as the kernel describes it can take hushd's elements, and of which family.
pub fn judge(info: &SetInfo) -> Result<AddrFamily, SetProblem> {
    let family = match (info.key_type, info.key_len) {
        (TYPE_IPADDR, 4) => AddrFamily::V4,
        (TYPE_IP6ADDR, 16) => AddrFamily::V6,
        (key_type, key_len) => return Err(SetProblem::WrongType { key_type, key_len }),
    };
    for (flag, kind) in [
        (SetFlags::Map, "a map"),
        (SetFlags::Interval, "an interval set (`flags interval`)"),
        (SetFlags::Constant, "a constant set"),
        (SetFlags::Concat, "a concatenation"),
    ] {
        if info.flags.contains(flag) {
            return Err(SetProblem::WrongKind(kind));
        }
    }
    if !info.flags.contains(SetFlags::Timeout) {
        return Err(SetProblem::NoTimeout);
    }
    Ok(family)
}

/// Checks every set with the kernel: it exists, holds IPv4 or IPv6 addresses, and has
/// `flags timeout`. For `hushd check` and at start and reload; touches nothing.
pub fn check_sets(sets: &[SetRef]) -> Result<Vec<CheckedSet>, Vec<CheckError>> {
    if sets.is_empty() {
        return Ok(Vec::new());
    }
    let mut netlink = Netlink::open().map_err(|e| vec![access_error(&e)])?;
    let mut checked = Vec::with_capacity(sets.len());
    let mut errors = Vec::new();
    for (index, set) in sets.iter().enumerate() {
        let problem = match netlink.get_set(set) {
            Ok(info) => match judge(&info) {
                Ok(family) => {
                    checked.push(CheckedSet {
                        set: set.clone(),
                        family,
                    });
                    continue;
                }
                Err(p) => p,
            },
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => SetProblem::Missing,
            Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => {
                return Err(vec![access_error(&e)]);
            }
            Err(e) => SetProblem::Kernel(e.to_string()),
        };
        errors.push(CheckError::Set {
            index,
            set: set.clone(),
            problem,
        });
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}

fn access_error(e: &io::Error) -> CheckError {
    let why = match e.raw_os_error() {
        Some(nix::libc::EPERM) | Some(nix::libc::EACCES) => {
            "hushd lacks CAP_NET_ADMIN, which nftables requires"
        }
        Some(nix::libc::EAFNOSUPPORT) | Some(nix::libc::EPROTONOSUPPORT) => {
            "netlink sockets are not allowed (RestrictAddressFamilies without AF_NETLINK) or nf_tables is missing"
        }
        _ => "netlink failed",
    };
    CheckError::Access(format!(
        "cannot use nftables sets ({e}): {why}; lists with nft_sets need the systemd drop-in \
         {DROP_IN} (CAP_NET_ADMIN and AF_NETLINK), or run `hushd check` as root"
    ))
}

/// `max(record TTL, [egress] min_timeout_secs)`: an element outlives every cached copy of the
/// answer, and a short TTL does not make it expire before the connection it was for starts.
pub fn element_timeout(ttl: u32, min_timeout_secs: u32) -> u32 {
    ttl.max(min_timeout_secs)
}

/// One address for one set, as the query path hands it over.
#[derive(Debug, Clone, Copy)]
struct Offer {
    set: SetId,
    addr: IpAddr,
    timeout_secs: u32,
}

/// A set the writer feeds, with its series of `hushd_nft_elements_total`.
struct Slot {
    set: SetRef,
    family: AddrFamily,
    added: IntCounter,
    dropped: IntCounter,
    error: IntCounter,
    /// Whether the last write failed, so a failing set is logged once, not once a batch.
    failing: AtomicBool,
}

struct Shared {
    /// Set -> id. Taken only at start and reload, never by the query path.
    ids: Mutex<FxHashMap<SetRef, SetId>>,
    /// Indexed by `SetId`; grows when a reload names a new set, never shrinks, so an id in a
    /// policy being replaced stays valid.
    slots: ArcSwap<Vec<Arc<Slot>>>,
    min_timeout_secs: AtomicU32,
    metrics: Arc<Metrics>,
    recent: Recent,
}

/// What `offer_answer` handed over lately, so a popular name's cache hits (thousands a second)
/// re-offer its addresses only when the expiry they ask for has moved on by `reoffer_after`,
/// not at every query: the writer's thread then spends its time on new addresses. A lossy,
/// fixed table of atomics (no lock, no growth), two ways per bucket: a bucket keeps the last
/// two (set, address) pairs hashed to it, so only a third in the same bucket costs extra
/// offers (with one way, 1000 hot addresses cycling kept ~120 of them re-offered at every
/// query through collisions).
struct Recent {
    /// The (set, address) hash in the high 32 bits, the second (since `epoch`) it was offered in
    /// the low 32.
    offered: Box<[AtomicU64]>,
    /// The expiry that offer asked for, in seconds since `epoch`.
    expiry: Box<[AtomicU32]>,
    epoch: Instant,
    after_secs: u32,
}

const RECENT_SLOTS: usize = 16 * 1024;

impl Recent {
    fn new(after: Duration) -> Self {
        Self {
            offered: (0..RECENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            expiry: (0..RECENT_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            epoch: Instant::now(),
            after_secs: u32::try_from(after.as_secs()).unwrap_or(u32::MAX),
        }
    }

    /// Seconds since the table was made, from 1: a slot never written (0) is always the older
    /// way, so two pairs offered in the first second do not share one slot.
    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs())
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1)
    }

    /// The bucket's first slot (the other is the next one) and the tag.
    fn slot(set: SetId, addr: &IpAddr) -> (usize, u64) {
        let mut h = FxHasher::default();
        (set, addr).hash(&mut h);
        // FxHash alone leaves addresses that differ in their last bytes sharing slots and
        // tags (1000 such addresses: 502 distinct); murmur3's finaliser spreads every bit.
        let mut h = h.finish();
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        (
            ((h as usize) % (RECENT_SLOTS / 2)) * 2,
            h & 0xffff_ffff_0000_0000,
        )
    }

    /// Whether the same offer went out less than `after_secs` ago, asking for an expiry no
    /// more than `after_secs` earlier than this one.
    fn is_fresh(&self, set: SetId, addr: &IpAddr, now: u32, expiry: u32) -> bool {
        if self.after_secs == 0 {
            return false;
        }
        let (bucket, tag) = Self::slot(set, addr);
        (bucket..bucket + 2).any(|i| {
            let offered = self.offered[i].load(Ordering::Relaxed);
            offered & 0xffff_ffff_0000_0000 == tag
                && now.saturating_sub(offered as u32) < self.after_secs
                && self.expiry[i]
                    .load(Ordering::Relaxed)
                    .saturating_add(self.after_secs)
                    > expiry
        })
    }

    fn offered(&self, set: SetId, addr: &IpAddr, now: u32, expiry: u32) {
        let (bucket, tag) = Self::slot(set, addr);
        // its own slot if it has one, else the one offered longer ago
        let [a, b] = [bucket, bucket + 1].map(|i| self.offered[i].load(Ordering::Relaxed));
        let i = if a & 0xffff_ffff_0000_0000 == tag {
            bucket
        } else if b & 0xffff_ffff_0000_0000 == tag || (b as u32) < (a as u32) {
            bucket + 1
        } else {
            bucket
        };
        self.expiry[i].store(expiry, Ordering::Relaxed);
        self.offered[i].store(tag | u64::from(now), Ordering::Relaxed);
    }
}

/// How the writer batches. `Default` is what hushd runs with.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Offers waiting for the writer; past this they are dropped and counted.
    pub queue: usize,
    /// Distinct (set, address) pairs in one batch.
    pub max_batch: usize,
    /// How long the first offer of a batch waits for others.
    pub max_delay: Duration,
    /// How existing elements get their new timeout; `None`: what the running kernel needs.
    pub refresh: Option<Refresh>,
    /// `offer_answer` skips an address it offered less than this long ago, unless the new
    /// answer asks for an expiry later by this much (a longer TTL). Zero offers every time.
    pub reoffer_after: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            queue: 16 * 1024,
            max_batch: 1000,
            max_delay: Duration::from_millis(10),
            refresh: None,
            reoffer_after: Duration::from_secs(10),
        }
    }
}

/// The query path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct NftWriter {
    queue: SyncSender<Offer>,
    shared: Arc<Shared>,
}

impl NftWriter {
    /// A writer and the loop that applies its offers; run the loop on a thread of its own. It
    /// ends when every handle to the writer is gone.
    pub fn new(
        metrics: Arc<Metrics>,
        min_timeout_secs: u32,
        options: WriterOptions,
    ) -> (Self, BatchLoop) {
        let (queue, offers) = sync_channel(options.queue.max(1));
        let shared = Arc::new(Shared {
            ids: Mutex::new(FxHashMap::default()),
            slots: ArcSwap::from_pointee(Vec::new()),
            min_timeout_secs: AtomicU32::new(min_timeout_secs),
            metrics,
            recent: Recent::new(options.reoffer_after),
        });
        let writer = Self {
            queue,
            shared: shared.clone(),
        };
        (
            writer,
            BatchLoop {
                offers,
                shared,
                options,
            },
        )
    }

    /// A writer with hushd's defaults, its loop on a thread named `hushd-nft`.
    pub fn start(metrics: Arc<Metrics>, min_timeout_secs: u32) -> io::Result<Self> {
        let (writer, batches) = Self::new(metrics, min_timeout_secs, WriterOptions::default());
        std::thread::Builder::new()
            .name("hushd-nft".into())
            .spawn(move || batches.run())?;
        Ok(writer)
    }

    /// At start and reload: checks `sets` with the kernel and returns the targets to keep
    /// with the list or group that names them. A set seen before keeps its id and counters.
    pub fn resolve(&self, sets: &[SetRef]) -> Result<SetTargets, Vec<CheckError>> {
        Ok(self.register(&check_sets(sets)?))
    }

    /// Ids for sets already checked (`check_sets`), for callers that check every set once.
    pub fn register(&self, sets: &[CheckedSet]) -> SetTargets {
        let mut ids = self.shared.ids.lock().unwrap_or_else(|p| p.into_inner());
        let mut slots: Option<Vec<Arc<Slot>>> = None;
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for checked in sets {
            let id = match ids.entry(checked.set.clone()) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => {
                    let slots = slots.get_or_insert_with(|| self.shared.slots.load().to_vec());
                    let id = SetId(u32::try_from(slots.len()).unwrap_or(u32::MAX));
                    let label = checked.set.to_string();
                    let [added, dropped, error] = self.shared.metrics.nft_set_counters(&label);
                    slots.push(Arc::new(Slot {
                        set: checked.set.clone(),
                        family: checked.family,
                        added,
                        dropped,
                        error,
                        failing: AtomicBool::new(false),
                    }));
                    *e.insert(id)
                }
            };
            // A set recreated with the other family since it was first seen keeps its id; the
            // loop checks each address against the family it was registered with.
            let list = match checked.family {
                AddrFamily::V4 => &mut v4,
                AddrFamily::V6 => &mut v6,
            };
            if !list.contains(&id) {
                list.push(id);
            }
        }
        if let Some(slots) = slots {
            self.shared.slots.store(Arc::new(slots));
        }
        SetTargets {
            v4: v4.into(),
            v6: v6.into(),
        }
    }

    /// `[egress] min_timeout_secs`, at reload.
    pub fn set_min_timeout(&self, secs: u32) {
        self.shared.min_timeout_secs.store(secs, Ordering::Relaxed);
    }

    /// Hands one address to the writer. Never waits: with the queue full the offer is dropped
    /// and counted (`result="dropped"`), and `false` returned.
    pub fn offer(&self, set: SetId, addr: IpAddr, timeout_secs: u32) -> bool {
        match self.queue.try_send(Offer {
            set,
            addr,
            timeout_secs,
        }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                if let Some(slot) = self.shared.slots.load().get(set.0 as usize) {
                    slot.dropped.inc();
                }
                false
            }
        }
    }

    /// Hands one answer's addresses, with their record TTLs, to every set of their family in
    /// `targets`, each with the timeout `max(ttl, min_timeout_secs)`. For upstream answers and
    /// cache hits alike: an address offered within `reoffer_after` (10 s) for an expiry no
    /// later is skipped, so the element is refreshed while the name is in use without a hot
    /// name flooding the writer.
    pub fn offer_answer(
        &self,
        targets: &SetTargets,
        addrs: impl IntoIterator<Item = (IpAddr, u32)>,
    ) {
        if targets.is_empty() {
            return;
        }
        let min = self.shared.min_timeout_secs.load(Ordering::Relaxed);
        let recent = &self.shared.recent;
        let now = recent.now();
        for (addr, ttl) in addrs {
            let timeout = element_timeout(ttl, min);
            let expiry = now.saturating_add(timeout);
            for set in targets.for_addr(&addr) {
                if recent.is_fresh(*set, &addr, now, expiry) {
                    continue;
                }
                if self.offer(*set, addr, timeout) {
                    recent.offered(*set, &addr, now, expiry);
                }
            }
        }
    }
}

/// Offers gathered for one batch: one per (set, address), with the longest timeout offered.
#[derive(Default)]
struct Pending {
    elements: FxHashMap<(SetId, IpAddr), u32>,
}

impl Pending {
    fn insert(&mut self, offer: Offer) {
        let timeout = self.elements.entry((offer.set, offer.addr)).or_insert(0);
        *timeout = (*timeout).max(offer.timeout_secs);
    }

    fn len(&self) -> usize {
        self.elements.len()
    }

    /// The batch by set, in id and address order, leaving `self` empty for the next batch.
    fn take_by_set(&mut self) -> Vec<(SetId, Vec<(IpAddr, u32)>)> {
        let mut all: Vec<_> = self.elements.drain().collect();
        all.sort_unstable();
        let mut out: Vec<(SetId, Vec<(IpAddr, u32)>)> = Vec::new();
        for ((set, addr), timeout) in all {
            match out.last_mut() {
                Some((last, elements)) if *last == set => elements.push((addr, timeout)),
                _ => out.push((set, vec![(addr, timeout)])),
            }
        }
        out
    }
}

/// The writer's off-path half: gathers offers into batches and writes them.
pub struct BatchLoop {
    offers: Receiver<Offer>,
    shared: Arc<Shared>,
    options: WriterOptions,
}

impl BatchLoop {
    /// Runs until every `NftWriter` handle is dropped (and the last batch is written).
    pub fn run(self) {
        let refresh = self.options.refresh.unwrap_or_else(kernel_refresh);
        let mut netlink = None;
        let mut pending = Pending::default();
        while let Ok(first) = self.offers.recv() {
            pending.insert(first);
            let deadline = Instant::now() + self.options.max_delay;
            let mut open = true;
            while pending.len() < self.options.max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.offers.recv_timeout(left) {
                    Ok(offer) => pending.insert(offer),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.write(&mut pending, &mut netlink, refresh);
            if !open {
                return;
            }
        }
    }

    fn write(&self, pending: &mut Pending, netlink: &mut Option<Netlink>, refresh: Refresh) {
        let slots = self.shared.slots.load();
        let mut batch = pending.take_by_set();
        let mut used: Vec<Arc<Slot>> = Vec::with_capacity(batch.len());
        batch.retain_mut(|(id, elements)| {
            let Some(slot) = slots.get(id.0 as usize) else {
                return false;
            };
            // Only `offer` with a hand-made id could mix families; the kernel would refuse the
            // whole transaction for one such address.
            let before = elements.len();
            elements.retain(|(addr, _)| AddrFamily::of(addr) == slot.family);
            slot.error.inc_by((before - elements.len()) as u64);
            used.push(slot.clone());
            !elements.is_empty() || {
                used.pop();
                false
            }
        });
        if batch.is_empty() {
            return;
        }
        let writes: Vec<SetWrite<'_>> = batch
            .iter()
            .zip(&used)
            .map(|((_, elements), slot)| SetWrite {
                set: &slot.set,
                elements,
            })
            .collect();
        let failed = match netlink_or_open(netlink) {
            Ok(socket) => socket.write(&writes, refresh),
            Err(e) => (0..writes.len())
                .map(|i| (i, io::Error::new(e.kind(), e.to_string())))
                .collect(),
        };
        if !failed.is_empty() {
            // A fresh socket next time, in case this one is what broke.
            *netlink = None;
        }
        let mut failed = failed.into_iter().peekable();
        for (i, (write, slot)) in writes.iter().zip(&used).enumerate() {
            let count = write.elements.len() as u64;
            match failed.next_if(|(f, _)| *f == i) {
                Some((_, e)) => {
                    slot.error.inc_by(count);
                    if !slot.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(set = %slot.set, error = %e, "cannot add answered addresses to the nftables set; counting them as errors until it works again");
                    }
                }
                None => {
                    slot.added.inc_by(count);
                    if slot.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(set = %slot.set, "adding answered addresses to the nftables set works again");
                    }
                }
            }
        }
    }
}

fn netlink_or_open(netlink: &mut Option<Netlink>) -> io::Result<&mut Netlink> {
    if netlink.is_none() {
        *netlink = Some(Netlink::open()?);
    }
    netlink
        .as_mut()
        .ok_or_else(|| io::Error::other("netlink socket"))
}

fn kernel_refresh() -> Refresh {
    match nix::sys::utsname::uname() {
        Ok(u) => Refresh::for_kernel(&u.release().to_string_lossy()),
        Err(_) => Refresh::DeleteReadd,
    }
}

impl fmt::Debug for NftWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NftWriter").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key_type: u32, key_len: u32, flags: SetFlags) -> SetInfo {
        SetInfo {
            key_type,
            key_len,
            flags,
        }
    }

    #[test]
    fn only_plain_address_sets_with_timeouts_pass() {
        assert_eq!(judge(&info(7, 4, SetFlags::Timeout)), Ok(AddrFamily::V4));
        assert_eq!(
            judge(&info(8, 16, SetFlags::Timeout | SetFlags::Eval)),
            Ok(AddrFamily::V6)
        );
        assert_eq!(
            judge(&info(7, 4, SetFlags::empty())),
            Err(SetProblem::NoTimeout)
        );
        assert!(matches!(
            judge(&info(7, 4, SetFlags::Timeout | SetFlags::Interval)),
            Err(SetProblem::WrongKind(_))
        ));
        assert!(matches!(
            judge(&info(7, 4, SetFlags::Timeout | SetFlags::Map)),
            Err(SetProblem::WrongKind(_))
        ));
        assert_eq!(
            judge(&info(13, 2, SetFlags::Timeout)),
            Err(SetProblem::WrongType {
                key_type: 13,
                key_len: 2
            })
        );
    }

    #[test]
    fn errors_name_the_set_and_the_fix() {
        let set = SetRef::parse("inet hushd xiaomi4").unwrap();
        let e = CheckError::Set {
            index: 0,
            set,
            problem: SetProblem::NoTimeout,
        };
        let text = e.to_string();
        assert!(text.contains("\"inet hushd xiaomi4\""), "{text}");
        assert!(text.contains("flags timeout"), "{text}");
        let e = access_error(&io::Error::from_raw_os_error(nix::libc::EPERM));
        let text = e.to_string();
        assert!(text.contains("CAP_NET_ADMIN"), "{text}");
        assert!(text.contains(DROP_IN), "{text}");
    }

    #[test]
    fn timeout_is_the_ttl_or_the_floor() {
        assert_eq!(element_timeout(30, 300), 300);
        assert_eq!(element_timeout(3600, 300), 3600);
    }

    #[test]
    fn a_batch_keeps_one_element_per_set_and_address_with_the_longest_timeout() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let mut p = Pending::default();
        for (set, addr, timeout_secs) in [
            (0, a, 300),
            (0, a, 900),
            (0, a, 600),
            (1, a, 300),
            (1, b, 300),
        ] {
            p.insert(Offer {
                set: SetId(set),
                addr,
                timeout_secs,
            });
        }
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.take_by_set(),
            vec![
                (SetId(0), vec![(a, 900)]),
                (SetId(1), vec![(a, 300), (b, 300)])
            ]
        );
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let (writer, _loop_not_running) = NftWriter::new(
            metrics.clone(),
            300,
            WriterOptions {
                queue: 4,
                ..WriterOptions::default()
            },
        );
        let targets = writer.register(&[CheckedSet {
            set: SetRef::parse("inet hushd x4").unwrap(),
            family: AddrFamily::V4,
        }]);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains(r#"hushd_nft_elements_total{result="dropped",set="inet hushd x4"} 0"#),
            "{text}"
        );
        let started = Instant::now();
        writer.offer_answer(
            &targets,
            (0..10u8).map(|i| (IpAddr::from([192, 0, 2, i]), 60)),
        );
        // an IPv6 address has no set here: not offered, not counted
        writer.offer_answer(&targets, [("2001:db8::1".parse().unwrap(), 60)]);
        assert!(started.elapsed() < Duration::from_secs(1));
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains(r#"hushd_nft_elements_total{result="dropped",set="inet hushd x4"} 6"#),
            "{text}"
        );
    }

    #[test]
    fn a_hot_address_is_offered_again_only_when_its_expiry_moves_on() {
        let metrics = Arc::new(Metrics::new().unwrap());
        // a queue of one, never drained: a second offer that got through would be dropped
        let (writer, _loop_not_running) = NftWriter::new(
            metrics.clone(),
            300,
            WriterOptions {
                queue: 1,
                ..WriterOptions::default()
            },
        );
        let targets = writer.register(&[CheckedSet {
            set: SetRef::parse("inet hushd x4").unwrap(),
            family: AddrFamily::V4,
        }]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let dropped = || {
            String::from_utf8(metrics.render())
                .unwrap()
                .lines()
                .find_map(|l| {
                    l.strip_prefix(
                        r#"hushd_nft_elements_total{result="dropped",set="inet hushd x4"} "#,
                    )
                    .map(str::to_string)
                })
                .unwrap()
        };
        for _ in 0..1000 {
            writer.offer_answer(&targets, [(a, 60)]);
        }
        assert_eq!(dropped(), "0");
        // a longer TTL asks for a later expiry: offered (and dropped here, the queue is full)
        writer.offer_answer(&targets, [(a, 3600)]);
        assert_eq!(dropped(), "1");
        // a dropped offer is not remembered: the next query tries again
        writer.offer_answer(&targets, [(a, 3600)]);
        assert_eq!(dropped(), "2");

        let r = Recent::new(Duration::from_secs(10));
        let id = SetId(0);
        r.offered(id, &a, 100, 400);
        assert!(r.is_fresh(id, &a, 105, 405));
        assert!(
            !r.is_fresh(id, &a, 110, 410),
            "10 s later it is offered again"
        );
        assert!(
            !r.is_fresh(id, &a, 101, 3700),
            "a later expiry is offered at once"
        );
        assert!(!r.is_fresh(SetId(1), &a, 101, 401), "another set");
        assert!(!Recent::new(Duration::ZERO).is_fresh(id, &a, 100, 400));

        // two pairs sharing a bucket both stay remembered
        let (bucket, _) = Recent::slot(id, &a);
        let b = (1..u32::MAX)
            .map(|i| IpAddr::from(i.to_be_bytes()))
            .find(|b| *b != a && Recent::slot(id, b).0 == bucket)
            .unwrap();
        r.offered(id, &b, 100, 400);
        assert!(r.is_fresh(id, &a, 105, 405) && r.is_fresh(id, &b, 105, 405));
        // in the first second too
        let r = Recent::new(Duration::from_secs(10));
        let now = r.now();
        r.offered(id, &a, now, now + 300);
        r.offered(id, &b, now, now + 300);
        assert!(r.is_fresh(id, &a, now, now + 300) && r.is_fresh(id, &b, now, now + 300));
    }

    /// A (set, address) sharing another's slot and tag would be skipped as if offered: neighbours
    /// (addresses a byte apart, the same address in two sets) must not.
    #[test]
    fn neighbouring_addresses_get_their_own_slot_and_tag() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..500u32 {
            let v4 = IpAddr::from((0x0a00_0000u32 | i).to_be_bytes());
            seen.insert(Recent::slot(SetId(0), &v4));
            seen.insert(Recent::slot(SetId(1), &v4));
        }
        for i in 0..500u16 {
            seen.insert(Recent::slot(
                SetId(1),
                &IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i]),
            ));
        }
        let tags: std::collections::HashSet<u64> = seen.iter().map(|s| s.1).collect();
        assert_eq!((seen.len(), tags.len()), (1500, 1500));
    }

    #[test]
    fn a_set_keeps_its_id_across_reloads() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let (writer, _) = NftWriter::new(metrics, 300, WriterOptions::default());
        let x4 = CheckedSet {
            set: SetRef::parse("inet hushd x4").unwrap(),
            family: AddrFamily::V4,
        };
        let x6 = CheckedSet {
            set: SetRef::parse("inet hushd x6").unwrap(),
            family: AddrFamily::V6,
        };
        let first = writer.register(&[x4.clone(), x6.clone()]);
        let again = writer.register(&[x6, x4]);
        assert_eq!(first, again);
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(first.for_addr(&v4), &[SetId(0)]);
        assert_eq!(first.for_addr(&"::1".parse().unwrap()), &[SetId(1)]);
    }
}
