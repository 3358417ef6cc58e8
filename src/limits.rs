//! Bounded work: a per-client rate limit (token bucket per IPv4 address or IPv6 /56, for UDP
//! and TCP queries alike) with "slip", and caps on TCP connections. A flood from one client is
//! shed while its neighbours are served, and no amount of traffic can make hushd hold
//! unbounded state.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use ipnetwork::IpNetwork;
use rustc_hash::FxHasher;
use tokio::sync::Semaphore;

use crate::{
    clients::{ClientMarks, ClientTable},
    config::LimitsConfig,
};

const SHARDS: usize = 64;
/// Clients tracked at once; past it, idle buckets are dropped, and if none is idle the
/// newcomers share one bucket (so a spoofed-source flood cannot grow the table).
const MAX_CLIENTS: usize = 65_536;

/// What to do with a client's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over its rate: drop silently.
    Drop,
    /// Over its rate, but every `slip`-th such query gets an empty TC=1 answer (UDP only), so
    /// a real client that happens to be limited retries over TCP, while a spoofed flood gains no
    /// amplification. TCP queries draw on the same bucket: the retry gets through once the
    /// client's rate allows.
    Slip,
}

/// A client's identity for limiting: an IPv4 address, or an IPv6 /56 (one site's allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4(u32),
    V6(u64),
    /// Everyone who arrived while the table was full.
    Overflow,
}

impl ClientKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => Self::V6((u128::from(v6) >> 72) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    limited: u32,
}

/// Which transport a query came over. UDP and TCP queries of one client fill separate buckets:
/// a slipped (TC=1) UDP client must find its TCP retry admitted, and a spoofed UDP flood in a
/// client's name must not use up the rate of its real, handshake-proven TCP queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

pub struct RateLimiter {
    /// Swapped whole on reload (`set`); the buckets stay.
    settings: ArcSwap<RateSettings>,
    shards: Vec<Mutex<HashMap<(ClientKey, Transport), Bucket>>>,
}

/// `client_qps`, `slip` and `exempt_clients` as the limiter reads them.
struct RateSettings {
    /// Tokens per second; 0 turns limiting off.
    rate: f64,
    burst: f64,
    slip: u32,
    exempt: ClientTable,
}

impl RateSettings {
    fn new(client_qps: u32, slip: u32, exempt: &[IpNetwork]) -> Self {
        let rate = f64::from(client_qps);
        Self {
            rate,
            // one second's worth of burst on top of the rate
            burst: rate.max(1.0),
            slip,
            exempt: exempt_table(exempt),
        }
    }
}

impl RateLimiter {
    pub fn new(client_qps: u32, slip: u32, exempt: Vec<IpNetwork>) -> Self {
        Self {
            settings: ArcSwap::from_pointee(RateSettings::new(client_qps, slip, &exempt)),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// New `client_qps`, `slip` and `exempt_clients` (a reload). The clients' buckets are
    /// kept: a bucket fuller than the new burst is cut to it at its next query, so a lowered
    /// rate holds from the next second on, and a raised one refills at the new rate.
    pub fn set(&self, client_qps: u32, slip: u32, exempt: &[IpNetwork]) {
        self.settings
            .store(Arc::new(RateSettings::new(client_qps, slip, exempt)));
    }

    pub fn admit(&self, client: IpAddr, transport: Transport) -> Admit {
        self.admit_with(client, transport, Instant::now)
    }

    #[cfg(test)]
    fn admit_at(&self, client: IpAddr, transport: Transport, now: Instant) -> Admit {
        self.admit_with(client, transport, || now)
    }

    /// The clock is read only for a client the limit applies to: an exempt client (the host
    /// itself, by default) or a limit of 0 costs no clock read on the hit path.
    fn admit_with(
        &self,
        client: IpAddr,
        transport: Transport,
        clock: impl FnOnce() -> Instant,
    ) -> Admit {
        let settings = self.settings.load();
        if settings.rate <= 0.0 {
            return Admit::Yes;
        }
        if settings.exempt.lookup(client).exempt {
            return Admit::Yes;
        }
        let now = clock();
        let mut key = ClientKey::of(client);
        let shard = &self.shards[shard_of(&key)];
        let mut table = shard.lock().unwrap_or_else(|p| p.into_inner());
        if !table.contains_key(&(key, transport)) && table.len() >= MAX_CLIENTS / SHARDS {
            // drop buckets that have refilled: they carry no state worth keeping
            let (rate, burst) = (settings.rate, settings.burst);
            table.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
            if table.len() >= MAX_CLIENTS / SHARDS {
                key = ClientKey::Overflow;
            }
        }
        let bucket = table.entry((key, transport)).or_insert(Bucket {
            tokens: settings.burst,
            last: now,
            limited: 0,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() * settings.rate;
        bucket.tokens = (bucket.tokens + refill).min(settings.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Admit::Yes;
        }
        bucket.limited = bucket.limited.wrapping_add(1);
        if settings.slip > 0 && bucket.limited.is_multiple_of(settings.slip) {
            Admit::Slip
        } else {
            Admit::Drop
        }
    }
}

/// Caps on open TCP connections, total and per client (IPv4 address or IPv6 /56), checked at
/// accept. Unlike UDP, TCP holds a socket, a task and buffers for as long as the client likes, so
/// a few clients could otherwise take every file descriptor. The table only holds clients with
/// a connection open, so it is bounded by the total cap.
pub struct TcpConnectionLimiter {
    /// Swapped whole on reload (`set`); the count of open connections stays.
    caps: ArcSwap<TcpCaps>,
    open: Mutex<OpenConnections>,
}

/// `max_tcp_connections`, `max_tcp_connections_per_client`, `exempt_clients` and the idle
/// timeout, as the TCP listener reads them.
struct TcpCaps {
    max_total: usize,
    max_per_client: usize,
    exempt: ClientTable,
    idle_timeout: Duration,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    per_client: HashMap<ClientKey, usize>,
}

/// One open connection's place under the caps; given back when dropped.
pub struct TcpConnectionSlot {
    limiter: Arc<TcpConnectionLimiter>,
    /// `None` for an exempt client, counted in the total only.
    key: Option<ClientKey>,
}

impl TcpConnectionLimiter {
    pub fn new(
        max_total: usize,
        max_per_client: usize,
        exempt: Vec<IpNetwork>,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            caps: ArcSwap::from_pointee(TcpCaps {
                max_total,
                max_per_client,
                exempt: exempt_table(&exempt),
                idle_timeout,
            }),
            open: Mutex::new(OpenConnections::default()),
        }
    }

    /// The caps and idle timeout of `limits` and `idle_timeout` (a reload). Connections open
    /// beyond a lowered cap stay until they close; new ones wait for room under it. The idle
    /// timeout applies from each connection's next wait for a query.
    pub fn set(&self, limits: &LimitsConfig, idle_timeout: Duration) {
        self.caps.store(Arc::new(TcpCaps {
            max_total: limits.max_tcp_connections,
            max_per_client: limits.max_tcp_connections_per_client,
            exempt: exempt_table(&limits.exempt_clients),
            idle_timeout,
        }));
    }

    /// How long a connection may wait for its next query (RFC 7766 §6.2.3).
    pub fn idle_timeout(&self) -> Duration {
        self.caps.load().idle_timeout
    }

    /// A slot for a new connection from `client`, or `None` if a cap is reached.
    pub fn acquire(self: &Arc<Self>, client: IpAddr) -> Option<TcpConnectionSlot> {
        let caps = self.caps.load();
        let key = (!caps.exempt.lookup(client).exempt).then(|| ClientKey::of(client));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= caps.max_total {
            return None;
        }
        if let Some(key) = key {
            let count = open.per_client.entry(key).or_insert(0);
            if *count >= caps.max_per_client {
                return None;
            }
            *count += 1;
        }
        open.total += 1;
        Some(TcpConnectionSlot {
            limiter: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for TcpConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(key) = self.key
            && let Some(count) = open.per_client.get_mut(&key)
        {
            *count -= 1;
            if *count == 0 {
                open.per_client.remove(&key);
            }
        }
    }
}

/// `exempt_clients` as a prefix table; each limiter keeps its own, rebuilt when the limits
/// reload.
fn exempt_table(exempt: &[IpNetwork]) -> ClientTable {
    ClientTable::builder()
        .mark(exempt, ClientMarks::EXEMPT)
        .build()
}

/// Resizes the `max_inflight` semaphore from `from` to `to` permits in place, so the queries
/// waiting for upstream keep their permits and the cap counts them. Growing adds permits at
/// once. Shrinking forgets the free permits now and, for the rest, queues one wait for them in
/// a task that forgets them as the running lookups give them back: tokio's semaphore is fair,
/// so until then no new query gets a permit ahead of it, and the new cap holds from the moment
/// the running queries fall under it. Successive resizes add up, whatever their order.
pub fn resize_inflight(inflight: &Arc<Semaphore>, from: usize, to: usize) {
    if to >= from {
        inflight.add_permits(to - from);
        return;
    }
    let surplus = from - to;
    let forgotten = inflight.forget_permits(surplus);
    let rest = u32::try_from(surplus - forgotten).unwrap_or(u32::MAX);
    if rest > 0 {
        let inflight = inflight.clone();
        tokio::spawn(async move {
            if let Ok(permits) = inflight.acquire_many_owned(rest).await {
                permits.forget();
            }
        });
    }
}

fn shard_of(key: &ClientKey) -> usize {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    (h.finish() >> 32) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const IDLE: Duration = Duration::from_secs(10);

    fn limiter(qps: u32) -> RateLimiter {
        RateLimiter::new(qps, 2, vec!["127.0.0.1/32".parse().unwrap()])
    }

    #[test]
    fn a_client_gets_its_rate_and_then_is_limited_with_slip() {
        let l = limiter(10);
        let t0 = Instant::now();
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        let admitted = (0..10)
            .filter(|_| l.admit_at(c, Transport::Udp, t0) == Admit::Yes)
            .count();
        assert_eq!(admitted, 10);
        let over: Vec<Admit> = (0..4).map(|_| l.admit_at(c, Transport::Udp, t0)).collect();
        assert_eq!(over, [Admit::Drop, Admit::Slip, Admit::Drop, Admit::Slip]);
        // a neighbour is not affected
        assert_eq!(
            l.admit_at("192.0.2.2".parse().unwrap(), Transport::Udp, t0),
            Admit::Yes
        );
        // tokens come back with time
        assert_eq!(
            l.admit_at(c, Transport::Udp, t0 + Duration::from_millis(150)),
            Admit::Yes
        );
    }

    #[test]
    fn udp_and_tcp_fill_separate_buckets() {
        let l = limiter(5);
        let t0 = Instant::now();
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..5).all(|_| l.admit_at(c, Transport::Udp, t0) == Admit::Yes));
        assert_ne!(l.admit_at(c, Transport::Udp, t0), Admit::Yes);
        // the slipped client's retry over TCP is admitted, up to the same rate
        assert!((0..5).all(|_| l.admit_at(c, Transport::Tcp, t0) == Admit::Yes));
        assert_ne!(l.admit_at(c, Transport::Tcp, t0), Admit::Yes);
    }

    #[test]
    fn ipv6_clients_are_limited_per_56() {
        let l = limiter(2);
        let t0 = Instant::now();
        assert_eq!(
            l.admit_at("2001:db8:0:1::1".parse().unwrap(), Transport::Udp, t0),
            Admit::Yes
        );
        assert_eq!(
            l.admit_at("2001:db8:0:2::1".parse().unwrap(), Transport::Udp, t0),
            Admit::Yes
        );
        // same /56 (2001:db8:0:00xx::/56): the bucket is shared and now empty
        assert_ne!(
            l.admit_at("2001:db8:0:ff::9".parse().unwrap(), Transport::Udp, t0),
            Admit::Yes
        );
        // another /56
        assert_eq!(
            l.admit_at("2001:db8:0:100::1".parse().unwrap(), Transport::Udp, t0),
            Admit::Yes
        );
    }

    #[test]
    fn exempt_clients_and_zero_rate_are_never_limited() {
        let l = limiter(1);
        let t0 = Instant::now();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..1000).all(|_| l.admit_at(local, Transport::Udp, t0) == Admit::Yes));
        let off = RateLimiter::new(0, 2, vec![]);
        let c: IpAddr = "192.0.2.9".parse().unwrap();
        assert!((0..1000).all(|_| off.admit_at(c, Transport::Udp, t0) == Admit::Yes));
    }

    #[test]
    fn tcp_connections_are_capped_per_client_and_in_total() {
        let l = Arc::new(TcpConnectionLimiter::new(
            4,
            2,
            vec!["127.0.0.1/32".parse().unwrap()],
            IDLE,
        ));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a1 = l.acquire(a).unwrap();
        let _a2 = l.acquire(a).unwrap();
        assert!(l.acquire(a).is_none(), "third from one client");
        // the same /56 is the same client
        let v6: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let _b1 = l.acquire(v6).unwrap();
        let _b2 = l.acquire("2001:db8:0:2::7".parse().unwrap()).unwrap();
        assert!(l.acquire(v6).is_none());
        // total reached: even an exempt client waits
        assert_eq!(l.open(), 4);
        assert!(l.acquire("127.0.0.1".parse().unwrap()).is_none());
        // a closed connection gives its place back
        drop(a1);
        assert!(l.acquire(a).is_some());
        let local = l.acquire("127.0.0.1".parse().unwrap());
        assert!(local.is_some(), "exempt from the per-client cap");
    }

    #[test]
    fn a_client_with_no_open_connection_leaves_no_state() {
        let l = Arc::new(TcpConnectionLimiter::new(10, 1, vec![], IDLE));
        for i in 0..100u32 {
            let slot = l.acquire(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()));
            assert!(slot.is_some());
        }
        let open = l.open.lock().unwrap();
        assert_eq!((open.total, open.per_client.len()), (0, 0));
    }

    #[test]
    fn the_table_stays_bounded_under_a_spoofed_flood() {
        let l = limiter(1);
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 * 2) {
            l.admit_at(
                IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()),
                Transport::Udp,
                t0,
            );
        }
        let tracked: usize = l.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(tracked <= MAX_CLIENTS + SHARDS, "{tracked} buckets");
    }

    #[test]
    fn a_new_rate_applies_to_clients_already_tracked() {
        let l = limiter(100);
        let t0 = Instant::now();
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..50).all(|_| l.admit_at(c, Transport::Udp, t0) == Admit::Yes));
        l.set(5, 2, &[]);
        // the bucket kept its 50 tokens but is cut to the new burst of 5 at its next query
        let t1 = t0 + Duration::from_millis(1);
        let admitted = (0..20)
            .filter(|_| l.admit_at(c, Transport::Udp, t1) == Admit::Yes)
            .count();
        assert_eq!(admitted, 5);
        // and raised again: refills at the new rate
        l.set(1000, 2, &[]);
        let t2 = t1 + Duration::from_millis(100);
        let admitted = (0..200)
            .filter(|_| l.admit_at(c, Transport::Udp, t2) == Admit::Yes)
            .count();
        assert_eq!(admitted, 100);
    }

    #[test]
    fn new_tcp_caps_keep_the_open_connections_counted() {
        let l = Arc::new(TcpConnectionLimiter::new(10, 10, vec![], IDLE));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| l.acquire(a).unwrap()).collect();
        let limits = LimitsConfig {
            client_qps: 0,
            slip: 2,
            exempt_clients: vec![],
            max_inflight: 10,
            max_tcp_connections: 10,
            max_tcp_connections_per_client: 2,
        };
        l.set(&limits, Duration::from_secs(3));
        assert_eq!(l.idle_timeout(), Duration::from_secs(3));
        assert!(l.acquire(a).is_none(), "three open, two allowed now");
        drop(held);
        assert!(l.acquire(a).is_some());
        assert_eq!(l.open(), 0, "the slot above was dropped at once");
    }

    #[tokio::test]
    async fn max_inflight_resizes_in_place_counting_the_permits_held() {
        let sem = Arc::new(Semaphore::new(4));
        let held: Vec<_> = (0..3)
            .map(|_| sem.clone().try_acquire_owned().unwrap())
            .collect();
        resize_inflight(&sem, 4, 1);
        tokio::task::yield_now().await;
        assert!(sem.clone().try_acquire_owned().is_err(), "3 held, cap 1");
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), async {
            while sem.available_permits() != 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let one = sem.clone().try_acquire_owned().unwrap();
        assert!(sem.clone().try_acquire_owned().is_err());
        resize_inflight(&sem, 1, 3);
        assert_eq!(sem.available_permits(), 2);
        drop(one);
    }
}
