//! UDP exchanges with one upstream server over a small pool of sockets.
//!
//! hickory-resolver opens, binds and closes a fresh socket for every UDP query; under a stream
//! of cache misses those syscalls and its layered futures cost more than the forwarding itself
//! (profiled: half of hushd's CPU at ~12k misses/s, where Unbound did ~24k). Here each server
//! gets a few connected sockets, each bound by the kernel to a random source port, with one
//! receive task that hands each answer to the query waiting for it. A socket is replaced by a
//! new one (a new random port) after `ROTATE_AFTER_QUERIES` queries or `ROTATE_AFTER`, so a
//! port seen once is soon worthless to a spoofer, at the cost of one bind per 256 queries;
//! the old socket lives on until its last waiting query is done. A bind that fails (out of
//! descriptors, say) keeps the old socket and tries again a little later. An answer is accepted
//! only if its ID (random per query) matches an outstanding query *and* its question is the one
//! that was asked; anything else (late, forged, garbled) is dropped and counted. Truncated
//! answers are retried over TCP by the caller.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, Query};
use prometheus::IntCounter;
use tokio::{
    net::UdpSocket,
    sync::{Notify, oneshot},
};

use super::{
    classify::answers_question,
    exchange::{ExchangeError, query_message, random_id},
};

/// Sockets per upstream server: enough to spread the kernel's per-socket work, few enough to
/// keep the in-flight table small.
const SOCKETS: usize = 8;
/// hushd advertises a 1232-byte EDNS payload upstream; anything bigger is cut, fails to decode
/// and is rejected like any garbled answer.
const RECV_BUFFER: usize = 4_096;
/// A socket (its source port) is used for at most this many queries...
const ROTATE_AFTER_QUERIES: usize = 256;
/// ...and for at most this long.
const ROTATE_AFTER: Duration = Duration::from_secs(60);
/// After a failed bind the old socket serves on; a new one is tried after this long (or
/// another `ROTATE_AFTER_QUERIES` queries), not on every query while descriptors are short.
const RETRY_BIND_AFTER: Duration = Duration::from_secs(1);
/// Random IDs drawn before giving up on a socket whose in-flight table is (nearly) full. With
/// half of the 65536 IDs taken, 16 draws all miss with odds of 1 in 65536.
const MAX_ID_DRAWS: usize = 16;

pub struct UdpExchange {
    server: SocketAddr,
    sockets: Vec<ArcSwap<PooledSocket>>,
    next: AtomicUsize,
    edns_payload: u16,
    rejected: IntCounter,
    /// Test seam: this many binds fail as if the process were out of descriptors.
    #[cfg(test)]
    failing_binds: AtomicUsize,
}

struct PooledSocket {
    socket: UdpSocket,
    pending: Mutex<HashMap<u16, Pending>>,
    born: Instant,
    queries: AtomicUsize,
    /// Milliseconds after `born` past which the socket is replaced (`ROTATE_AFTER`, pushed
    /// back by `RETRY_BIND_AFTER` when a replacement could not be bound).
    rotate_at_ms: AtomicU64,
    /// One query at a time replaces the socket; the others use it as is meanwhile.
    rotating: AtomicBool,
    /// Replaced in the pool: its receiver ends once no query waits on it.
    retired: AtomicBool,
    /// Its receiver has ended; set under the `pending` lock, which a query holds to register,
    /// so a query that picked this socket just before it was replaced never waits on it.
    closed: AtomicBool,
    /// Wakes the receiver to check whether it may end.
    check_retired: Notify,
}

impl PooledSocket {
    /// A socket connected to `server` from a kernel-chosen random port, with its receiver.
    async fn bind(server: SocketAddr, rejected: &IntCounter) -> io::Result<Arc<Self>> {
        let bind: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(bind).await?;
        // connected: the kernel drops datagrams from any other address for us
        socket.connect(server).await?;
        let pooled = Arc::new(Self {
            socket,
            pending: Mutex::new(HashMap::new()),
            born: Instant::now(),
            queries: AtomicUsize::new(0),
            rotate_at_ms: AtomicU64::new(ROTATE_AFTER.as_millis() as u64),
            rotating: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            check_retired: Notify::new(),
        });
        tokio::spawn(receive(Arc::downgrade(&pooled), rejected.clone()));
        Ok(pooled)
    }

    /// Counts one more query on this socket; true if it is time to replace the socket.
    fn rotation_due(&self) -> bool {
        let used = self.queries.fetch_add(1, Ordering::Relaxed);
        let age_ms = self.born.elapsed().as_millis() as u64;
        used >= ROTATE_AFTER_QUERIES || age_ms >= self.rotate_at_ms.load(Ordering::Relaxed)
    }

    /// A replacement could not be bound: serve on, and try again after `RETRY_BIND_AFTER` or
    /// another `ROTATE_AFTER_QUERIES` queries, whichever comes first.
    fn postpone_rotation(&self) {
        let age_ms = self.born.elapsed().as_millis() as u64;
        self.rotate_at_ms.store(
            age_ms + RETRY_BIND_AFTER.as_millis() as u64,
            Ordering::Relaxed,
        );
        self.queries.store(0, Ordering::Relaxed);
        self.rotating.store(false, Ordering::Release);
    }

    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.check_retired.notify_one();
    }

    /// Retired, with no query waiting: marks it closed, and its receiver can end.
    fn close_if_done(&self) -> bool {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let done = self.retired.load(Ordering::Acquire) && pending.is_empty();
        if done {
            self.closed.store(true, Ordering::Release);
        }
        done
    }
}

/// A query waiting for its answer (UDP and DoT match answers to queries the same way).
pub(super) struct Pending {
    pub(super) query: Query,
    pub(super) reply: oneshot::Sender<Message>,
}

impl Pending {
    /// Hands `answer` to the query in `pending` it answers: its ID must be outstanding and its
    /// question the one asked, so a forged or stray reply reaches nobody. False if none.
    pub(super) fn deliver(pending: &Mutex<impl PendingTable>, answer: Message) -> bool {
        let waiter = {
            let mut table = pending.lock().unwrap_or_else(|p| p.into_inner());
            let Some(table) = table.table() else {
                return false;
            };
            match table.get(&answer.metadata.id) {
                Some(p) if answers_question(&answer, &p.query) => table.remove(&answer.metadata.id),
                _ => None,
            }
        };
        waiter.is_some_and(|w| {
            let _ = w.reply.send(answer);
            true
        })
    }
}

/// The waiting queries of a socket (always there) or a connection (gone once it ended).
pub(super) trait PendingTable {
    fn table(&mut self) -> Option<&mut HashMap<u16, Pending>>;
}

impl PendingTable for HashMap<u16, Pending> {
    fn table(&mut self) -> Option<&mut HashMap<u16, Pending>> {
        Some(self)
    }
}

impl PendingTable for Option<HashMap<u16, Pending>> {
    fn table(&mut self) -> Option<&mut HashMap<u16, Pending>> {
        self.as_mut()
    }
}

/// An ID for which `taken` is false, from at most `MAX_ID_DRAWS` calls of `draw`: `None` when
/// the table is too full to find one quickly (the caller fails the query rather than spin).
pub(super) fn free_id(taken: impl Fn(u16) -> bool, mut draw: impl FnMut() -> u16) -> Option<u16> {
    (0..MAX_ID_DRAWS).map(|_| draw()).find(|&id| !taken(id))
}

impl UdpExchange {
    /// Binds the sockets (the kernel picks random ephemeral ports) and starts their receivers.
    /// `rejected` counts answers that matched no outstanding query.
    pub async fn new(
        server: SocketAddr,
        edns_payload: u16,
        rejected: IntCounter,
    ) -> io::Result<Self> {
        let mut sockets = Vec::with_capacity(SOCKETS);
        for _ in 0..SOCKETS {
            sockets.push(ArcSwap::new(PooledSocket::bind(server, &rejected).await?));
        }
        Ok(Self {
            server,
            sockets,
            next: AtomicUsize::new(0),
            edns_payload,
            rejected,
            #[cfg(test)]
            failing_binds: AtomicUsize::new(0),
        })
    }

    async fn bind(&self) -> io::Result<Arc<PooledSocket>> {
        #[cfg(test)]
        if self
            .failing_binds
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::from_raw_os_error(24)); // EMFILE
        }
        PooledSocket::bind(self.server, &self.rejected).await
    }

    /// The socket for the next query, replaced first if it has served its share.
    async fn socket(&self) -> Arc<PooledSocket> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.sockets.len();
        let slot = &self.sockets[index];
        let pooled = slot.load_full();
        if pooled.rotation_due() && !pooled.rotating.swap(true, Ordering::AcqRel) {
            match self.bind().await {
                Ok(fresh) => {
                    slot.store(fresh.clone());
                    pooled.retire();
                    return fresh;
                }
                // out of descriptors, say: the old port is better than no answer
                Err(e) => {
                    pooled.postpone_rotation();
                    tracing::warn!(server = %self.server, error = %e, "cannot open a new upstream socket");
                }
            }
        }
        pooled
    }

    /// Sends one query and waits up to `timeout` for its answer.
    pub async fn exchange(
        &self,
        query: &Query,
        checking_disabled: bool,
        timeout: Duration,
    ) -> Result<Message, ExchangeError> {
        let (tx, rx) = oneshot::channel();
        let mut reply = Some(tx);
        let (pooled, id) = loop {
            let pooled = self.socket().await;
            let registered = {
                let mut pending = pooled.pending.lock().unwrap_or_else(|p| p.into_inner());
                // A socket whose receiver has just ended was replaced: its slot holds the new one.
                if pooled.closed.load(Ordering::Acquire) {
                    None
                } else {
                    let id = free_id(|id| pending.contains_key(&id), random_id)
                        .ok_or(ExchangeError::Busy)?;
                    reply.take().map(|reply| {
                        pending.insert(
                            id,
                            Pending {
                                query: query.clone(),
                                reply,
                            },
                        );
                        id
                    })
                }
            };
            if let Some(id) = registered {
                break (pooled, id);
            }
        };
        let pooled = &pooled;
        // Whatever happens from here, the entry must not outlive this call.
        let _cleanup = RemoveOnDrop { pooled, id };

        let bytes = query_message(id, query, self.edns_payload, checking_disabled)
            .to_vec()
            .map_err(|e| ExchangeError::Encode(e.to_string()))?;
        pooled.socket.send(&bytes).await?;

        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            // the receive task dropped the sender: the server's port is closed
            Ok(Err(_)) => Err(ExchangeError::Unreachable),
            Err(_) => Err(ExchangeError::Timeout(timeout)),
        }
    }
}

struct RemoveOnDrop<'a> {
    pooled: &'a PooledSocket,
    id: u16,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let mut pending = self
            .pooled
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending.remove(&self.id);
        if pending.is_empty() && self.pooled.retired.load(Ordering::Acquire) {
            self.pooled.check_retired.notify_one();
        }
    }
}

/// Hands each answer on `pooled` to the query that waits for it, until the pool is dropped.
async fn receive(pooled: std::sync::Weak<PooledSocket>, rejected: IntCounter) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let Some(socket) = pooled.upgrade() else {
            return;
        };
        if socket.close_if_done() {
            return;
        }
        let received = tokio::select! {
            r = socket.socket.recv(&mut buf) => r,
            () = socket.check_retired.notified() => continue,
            // wake now and then so a dropped pool ends this task
            () = tokio::time::sleep(Duration::from_secs(5)) => continue,
        };
        let len = match received {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // ICMP port unreachable: nothing listens there. Fail the waiting queries now
                // (dropping their senders) so they fail over instead of waiting out the timeout.
                socket
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                continue;
            }
            Err(_) => continue,
        };
        let Ok(answer) = Message::from_vec(&buf[..len]) else {
            rejected.inc();
            continue;
        };
        if !Pending::deliver(&socket.pending, answer) {
            rejected.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_search_is_bounded() {
        let mut draws = 0;
        assert_eq!(
            free_id(
                |_| true,
                || {
                    draws += 1;
                    7
                }
            ),
            None
        );
        assert_eq!(draws, MAX_ID_DRAWS);
        let mut ids = [1u16, 2, 3].into_iter();
        assert_eq!(free_id(|id| id < 3, || ids.next().unwrap_or(0)), Some(3));
    }

    fn local_port(pooled: &PooledSocket) -> u16 {
        pooled.socket.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn rotation_goes_on_after_a_failed_bind() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let counter = IntCounter::new("rejected", "test").unwrap();
        let exchange = UdpExchange::new(server.local_addr().unwrap(), 1232, counter)
            .await
            .unwrap();
        let slot = |exchange: &UdpExchange| local_port(&exchange.sockets[0].load());
        let first = slot(&exchange);

        // the slot's socket has served its share, and the bind of its replacement fails
        exchange.failing_binds.store(1, Ordering::Relaxed);
        exchange.sockets[0]
            .load()
            .queries
            .store(ROTATE_AFTER_QUERIES, Ordering::Relaxed);
        exchange.next.store(0, Ordering::Relaxed);
        let used = exchange.socket().await;
        assert_eq!(local_port(&used), first);
        assert_eq!(slot(&exchange), first, "the old socket serves on");

        // another share later, the bind works: the slot gets a new socket
        let mut rotated = false;
        for _ in 0..(ROTATE_AFTER_QUERIES + 2) * SOCKETS {
            exchange.socket().await;
            if slot(&exchange) != first {
                rotated = true;
                break;
            }
        }
        assert!(rotated, "rotation stopped for good after one failed bind");
    }

    #[tokio::test]
    async fn after_a_failed_bind_an_old_socket_is_retried_soon_not_on_every_query() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let counter = IntCounter::new("rejected", "test").unwrap();
        let exchange = UdpExchange::new(server.local_addr().unwrap(), 1232, counter)
            .await
            .unwrap();
        let pooled = exchange.sockets[0].load_full();
        pooled.rotate_at_ms.store(0, Ordering::Relaxed); // as if past ROTATE_AFTER
        exchange.failing_binds.store(1, Ordering::Relaxed);
        exchange.next.store(0, Ordering::Relaxed);
        exchange.socket().await;
        assert!(
            pooled.rotate_at_ms.load(Ordering::Relaxed) >= RETRY_BIND_AFTER.as_millis() as u64,
            "the next try waits"
        );
        assert!(!pooled.rotation_due(), "not due again right away");
        pooled
            .rotate_at_ms
            .store(pooled.born.elapsed().as_millis() as u64, Ordering::Relaxed);
        exchange.next.store(0, Ordering::Relaxed);
        let fresh = exchange.socket().await;
        assert_ne!(local_port(&fresh), local_port(&pooled));
        assert!(pooled.retired.load(Ordering::Relaxed));
    }
}
