//! The TCP listener: hushd's own accept loop, so connections can be capped (total and per
//! client) before they cost anything (hickory-server's `register_listener` takes the whole
//! listener and has no such hook), and its own connection loop, so pipelined queries are
//! answered concurrently. hickory's `TcpStream` writes only while it is polled for the next
//! query, so a connection that pauses reading (at its pipeline cap, or after the client
//! half-closes) would stop writing too; here a reader and a writer share the connection, and
//! the framing is tokio-util's length-delimited codec. Each query goes through the same
//! admission, answer and reply path as UDP (`QueryHandler::admit`, `answer_locally`, `encode`).
//!
//! The accept loop and the connection loop are generic over what runs on the connection, so
//! DNS over TLS (`tls.rs`: the same framing inside TLS) and DNS over HTTPS (`https.rs`) share
//! the caps, and DoT shares the pipelined connection loop, instead of copies of them.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use hickory_net::xfer::Protocol;
use hickory_server::server::Request;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_util::{
    bytes::Bytes,
    codec::{FramedRead, FramedWrite, LengthDelimitedCodec},
    sync::CancellationToken,
};

use crate::{
    evidence::querylog::Trace,
    handler::{Admission, Answered, QueryHandler, Step, cached_reply, encode},
    limits::{TcpConnectionLimiter, TcpConnectionSlot},
};

/// Queries of one connection being answered at once. Bounded so one client cannot make hushd
/// hold unbounded tasks; past it the connection's reading pauses.
pub const MAX_PIPELINED: usize = 16;
/// Answers queued per connection before their senders wait for the client to read them.
const RESPONSE_BUFFER: usize = 32;

pub struct TcpServer {
    pub handler: Arc<QueryHandler>,
    /// The connection caps and the idle timeout (RFC 7766 §6.2.3), both reloadable.
    pub limiter: Arc<TcpConnectionLimiter>,
}

impl TcpServer {
    /// Accepts connections on `listener` until `shutdown`; each admitted one is served by a task
    /// of its own, holding its slot under the caps until it closes.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        self.accept_loop(listener, shutdown, |server, stream, src| async move {
            let (read, write) = stream.into_split();
            server.connection(read, write, src, Protocol::Tcp).await;
        })
        .await;
    }

    /// The accept loop every stream listener shares (plain TCP, DoT, DoH): checks the
    /// connection caps at accept, then runs `serve_connection` in a task of its own, which holds
    /// the connection's slot under the caps and counts it in `hushd_tcp_connections` until it
    /// ends (or `shutdown`).
    pub async fn accept_loop<F, Fut>(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        serve_connection: F,
    ) where
        F: Fn(Arc<Self>, TcpStream, SocketAddr) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            let (stream, src) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and the like: back off briefly rather than spin on accept
                        tracing::warn!(error = %e, "cannot accept a TCP connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            let Some(slot) = self.limiter.acquire(src.ip()) else {
                // Dropping the stream closes it: the client learns at once, instead of waiting in
                // the backlog, and a slow-connection flood holds nothing of ours.
                self.handler.metrics.limited("tcp_limit");
                tracing::debug!(%src, "TCP connection refused: connection cap reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = serve_connection(self.clone(), stream, src);
            let metrics = self.handler.metrics.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _slot: TcpConnectionSlot = slot;
                metrics.tcp_connections.inc();
                tokio::select! {
                    () = connection => {}
                    () = shutdown.cancelled() => {}
                }
                metrics.tcp_connections.dec();
            });
        }
    }

    /// One client connection of DNS messages in TCP framing (plain, or inside TLS): a reader
    /// that admits and answers queries as they come, and a writer that sends the answers in the
    /// order they are ready (RFC 7766 §6.2.1.1), so a slow upstream lookup does not hold up the
    /// queries behind it. `protocol` is what the queries are counted and logged as.
    pub async fn connection<R, W>(&self, read: R, write: W, src: SocketAddr, protocol: Protocol)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (replies, queue) = mpsc::channel(RESPONSE_BUFFER);
        tokio::join!(
            self.read_queries(read, src, protocol, replies),
            write_replies(write, queue, self.limiter.idle_timeout()),
        );
    }

    /// Reads queries until the client closes, goes idle or stops reading its answers; then
    /// waits for the answers still coming from upstream (each bounded by upstream's deadline).
    async fn read_queries(
        &self,
        read: impl AsyncRead + Unpin,
        src: SocketAddr,
        protocol: Protocol,
        replies: Replies,
    ) {
        let mut frames = FramedRead::new(read, dns_framing());
        let pipeline = Arc::new(Semaphore::new(MAX_PIPELINED));
        loop {
            // At the cap, reading pauses: the client's queries wait in its own socket buffer.
            let Ok(permit) = pipeline.clone().acquire_owned().await else {
                break;
            };
            // The timeout covers a whole message, so one stalled mid-message is closed too.
            let frame = tokio::select! {
                frame = tokio::time::timeout(self.limiter.idle_timeout(), frames.next()) => frame,
                () = replies.closed() => break, // the writer gave up on the client
            };
            let message = match frame {
                Ok(Some(Ok(message))) => message,
                Ok(None) => break, // closed by the client
                Ok(Some(Err(e))) => {
                    tracing::debug!(%src, error = %e, "TCP connection closed");
                    break;
                }
                Err(_) => {
                    tracing::debug!(%src, "TCP connection idle, closed");
                    break;
                }
            };
            self.query(&message, src, protocol, &replies, permit).await;
        }
        let _ = pipeline.acquire_many(MAX_PIPELINED as u32).await;
        // `replies` drops here: the writer sends what is queued, then closes.
    }

    /// One query, through the same admission, local answer and upstream reservation as UDP.
    /// Only an upstream lookup gets a task (holding `permit`, the connection's pipeline slot).
    async fn query(
        &self,
        message: &[u8],
        src: SocketAddr,
        protocol: Protocol,
        replies: &Replies,
        permit: OwnedSemaphorePermit,
    ) {
        let handler = &self.handler;
        let (request, answered, trace) = match first_step(handler, message, src, protocol) {
            FirstStep::Nothing => return,
            FirstStep::Formerr(reply) => {
                let _ = replies.send(reply).await;
                return;
            }
            FirstStep::Answered(request, answered, trace) => (request, answered, trace),
            FirstStep::Forward(request, upstream, mut trace) => {
                let (handler, replies) = (handler.clone(), replies.clone());
                tokio::spawn(async move {
                    // the connection's place for this query; `upstream` passes to the lookup
                    let _pipelined = permit;
                    let answered = handler.forward(&request, upstream, &mut trace).await;
                    send(&handler, &request, answered, &replies, trace).await;
                });
                return;
            }
        };
        send(handler, &request, answered, replies, trace).await;
    }
}

/// Where one query over a stream transport stands after its synchronous part.
pub enum FirstStep {
    /// Nothing goes back (`Admission::Drop`: no header, a response, rate-limited, or an
    /// outsider's malformed message).
    Nothing,
    /// A header-only FORMERR, already encoded and counted.
    Formerr(Vec<u8>),
    /// Answered without upstream: refused, blocked, local, cached or overloaded.
    Answered(Box<Request>, Answered, Trace),
    /// To ask upstream, holding a `max_inflight` place.
    Forward(Box<Request>, OwnedSemaphorePermit, Trace),
}

/// Admission, local answer and upstream reservation for one query, the same for every stream
/// transport; each then sends the answer (or waits for upstream) its own way.
pub fn first_step(
    handler: &QueryHandler,
    message: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> FirstStep {
    let request = match handler.admit(message, src, protocol) {
        Admission::Drop | Admission::Slip(_) => return FirstStep::Nothing,
        Admission::Formerr(reply) => return FirstStep::Formerr(reply),
        Admission::Refuse(request) => {
            let trace = handler.trace_request(&request);
            let answered = handler.refused(&request);
            return FirstStep::Answered(request, answered, trace);
        }
        Admission::Query(request) => request,
    };
    let mut trace = handler.trace_request(&request);
    let answered = match handler.answer_locally(&request, &mut trace) {
        Step::Answered(answered) => answered,
        Step::Blocked(blocked) => blocked.into_answered(),
        Step::Cached(hit, qtype) => cached_reply(&request, &hit, qtype),
        Step::Forward => match handler.reserve_upstream(&request) {
            Ok(upstream) => return FirstStep::Forward(request, upstream, trace),
            Err(overloaded) => *overloaded,
        },
    };
    FirstStep::Answered(request, answered, trace)
}

/// Counts `answered` (metrics, query log) and encodes it as the reply to `request`.
pub fn finish(
    handler: &QueryHandler,
    request: &Request,
    answered: Answered,
    trace: Trace,
) -> Vec<u8> {
    handler.count(request, &answered);
    let mut out = Vec::with_capacity(512);
    encode(request, &answered.reply, &mut out);
    handler.log_answered(trace, answered);
    out
}

/// Answers on their way to the connection's writer, encoded.
type Replies = mpsc::Sender<Vec<u8>>;

/// Counts `answered` (metrics, query log) and queues it for the client; a client gone by then
/// is no error.
async fn send(
    handler: &QueryHandler,
    request: &Request,
    answered: Answered,
    replies: &Replies,
    trace: Trace,
) {
    let out = finish(handler, request, answered, trace);
    let _ = replies.send(out).await;
}

/// Writes the answers as they come, flushing when none is waiting. A client that stops
/// reading is given up on after the idle timeout: dropping `queue` tells the reader.
async fn write_replies(
    write: impl AsyncWrite + Unpin,
    mut queue: mpsc::Receiver<Vec<u8>>,
    idle: Duration,
) {
    let mut frames = FramedWrite::new(write, dns_framing());
    while let Some(reply) = queue.recv().await {
        let written: Result<std::io::Result<()>, _> = tokio::time::timeout(idle, async {
            frames.feed(Bytes::from(reply)).await?;
            while let Ok(more) = queue.try_recv() {
                frames.feed(Bytes::from(more)).await?;
            }
            SinkExt::<Bytes>::flush(&mut frames).await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            break;
        }
    }
}

/// DNS over TCP framing: each message after its length in two bytes (RFC 1035 §4.2.2).
fn dns_framing() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .new_codec()
}
