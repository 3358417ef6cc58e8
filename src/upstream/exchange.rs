//! UDP exchanges with one upstream server over a small pool of sockets.
//!
//! hickory-resolver opens, binds and closes a fresh socket for every UDP query; under a stream
//! of cache misses those syscalls and its layered futures cost more than the forwarding itself
//! (profiled: half of hushd's CPU at ~12k misses/s, where Unbound did ~24k). Here each server
//! gets a few connected sockets, each bound by the kernel to a random source port, with one
//! receive task that hands each answer to the query waiting for it. A socket is replaced by a
//! new one (a new random port) after `ROTATE_AFTER_QUERIES` queries or `ROTATE_AFTER`, so a
//! port seen once is soon worthless to a spoofer, at the cost of one bind per 256 queries;
//! the old socket lives on until its last waiting query is done. An answer is accepted only
//! if its ID (random per query) matches an outstanding query *and* its question is the one that
//! was asked; anything else (late, forged, garbled) is dropped and counted. Truncated answers
//! are retried over TCP by the caller.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{DNSClass, Name, RecordType},
};
use prometheus::IntCounter;
use tokio::{
    net::UdpSocket,
    sync::{Notify, oneshot},
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

pub struct UdpExchange {
    server: SocketAddr,
    sockets: Vec<ArcSwap<PooledSocket>>,
    next: AtomicUsize,
    edns_payload: u16,
    rejected: IntCounter,
}

struct PooledSocket {
    socket: UdpSocket,
    pending: Mutex<HashMap<u16, Pending>>,
    born: Instant,
    queries: AtomicUsize,
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
            retired: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            check_retired: Notify::new(),
        });
        tokio::spawn(receive(Arc::downgrade(&pooled), rejected.clone()));
        Ok(pooled)
    }

    fn too_old(&self) -> bool {
        self.born.elapsed() >= ROTATE_AFTER
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

struct Pending {
    query: Query,
    reply: oneshot::Sender<Message>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("port unreachable")]
    Unreachable,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("cannot encode the query: {0}")]
    Encode(String),
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
        })
    }

    /// The socket for the next query, replaced first if it has served its share.
    async fn socket(&self) -> Arc<PooledSocket> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.sockets.len();
        let slot = &self.sockets[index];
        let pooled = slot.load_full();
        let used = pooled.queries.fetch_add(1, Ordering::Relaxed);
        // Exactly one query sees the threshold: it rotates; the others use the socket as is.
        if used == ROTATE_AFTER_QUERIES || (used < ROTATE_AFTER_QUERIES && pooled.too_old()) {
            pooled
                .queries
                .store(ROTATE_AFTER_QUERIES + 1, Ordering::Relaxed);
            match PooledSocket::bind(self.server, &self.rejected).await {
                Ok(fresh) => {
                    slot.store(fresh.clone());
                    pooled.retire();
                    return fresh;
                }
                // out of descriptors, say: the old port is better than no answer
                Err(e) => {
                    tracing::warn!(server = %self.server, error = %e, "cannot open a new upstream socket")
                }
            }
        }
        pooled
    }

    /// Sends one query and waits up to `timeout` for its answer.
    pub async fn query(
        &self,
        name: &Name,
        qtype: RecordType,
        timeout: Duration,
    ) -> Result<Message, ExchangeError> {
        let mut query = Query::query(name.clone(), qtype);
        query.set_query_class(DNSClass::IN);

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
                    let id = loop {
                        // hickory draws message IDs from a CSPRNG
                        let id = Message::query().metadata.id;
                        if !pending.contains_key(&id) {
                            break id;
                        }
                    };
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

        let mut message = Message::query();
        message.metadata.id = id;
        message.metadata.recursion_desired = true;
        message.add_query(query);
        let mut edns = Edns::new();
        edns.set_max_payload(self.edns_payload);
        message.set_edns(edns);
        let bytes = message
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
        let waiting = {
            let mut pending = socket.pending.lock().unwrap_or_else(|p| p.into_inner());
            match pending.get(&answer.metadata.id) {
                Some(p) if answers_question(&answer, &p.query) => {
                    pending.remove(&answer.metadata.id)
                }
                _ => None,
            }
        };
        match waiting {
            Some(p) => {
                let _ = p.reply.send(answer);
            }
            None => rejected.inc(),
        }
    }
}

/// The answer is a response to exactly the question asked (`Name`'s equality ignores case).
fn answers_question(answer: &Message, asked: &Query) -> bool {
    answer.metadata.message_type == hickory_proto::op::MessageType::Response
        && answer.queries.len() == 1
        && answer.queries[0].query_type() == asked.query_type()
        && answer.queries[0].query_class() == asked.query_class()
        && answer.queries[0].name() == asked.name()
}
