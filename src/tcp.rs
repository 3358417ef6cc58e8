//! The TCP listener: hushd's own accept loop, so connections can be capped (total and per
//! client) before they cost anything (hickory-server's `register_listener` takes the whole
//! listener and has no such hook), and its own connection loop, so pipelined queries are
//! answered concurrently. hickory's `TcpStream` writes only while it is polled for the next
//! query, so a connection that pauses reading (at its pipeline cap, or after the client
//! half-closes) would stop writing too; here a reader and a writer share the connection, and
//! the framing is tokio-util's length-delimited codec. Each query goes through the same
//! admission, answer and reply path as UDP (`QueryHandler::admit`, `answer_locally`, `encode`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use hickory_net::xfer::Protocol;
use hickory_server::server::Request;
use tokio::{
    net::{
        TcpListener,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
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
    metrics::Metrics,
};

/// Queries of one connection being answered at once. Bounded so one client cannot make hushd
/// hold unbounded tasks; past it the connection's reading pauses.
const MAX_PIPELINED: usize = 16;
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
            let server = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = server.connection(stream, src, slot) => {}
                    () = shutdown.cancelled() => {}
                }
            });
        }
    }

    /// One client connection: a reader that admits and answers queries as they come, and a
    /// writer that sends the answers in the order they are ready (RFC 7766 §6.2.1.1), so a
    /// slow upstream lookup does not hold up the queries behind it.
    async fn connection(
        &self,
        stream: tokio::net::TcpStream,
        src: SocketAddr,
        _slot: TcpConnectionSlot,
    ) {
        let metrics: &Metrics = &self.handler.metrics;
        metrics.tcp_connections.inc();
        let (read, write) = stream.into_split();
        let (replies, queue) = mpsc::channel(RESPONSE_BUFFER);
        tokio::join!(
            self.read_queries(read, src, replies),
            write_replies(write, queue, self.limiter.idle_timeout()),
        );
        metrics.tcp_connections.dec();
    }

    /// Reads queries until the client closes, goes idle or stops reading its answers; then
    /// waits for the answers still coming from upstream (each bounded by upstream's deadline).
    async fn read_queries(&self, read: OwnedReadHalf, src: SocketAddr, replies: Replies) {
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
            self.query(&message, src, &replies, permit).await;
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
        replies: &Replies,
        permit: OwnedSemaphorePermit,
    ) {
        let handler = &self.handler;
        let request = match handler.admit(message, src, Protocol::Tcp) {
            Admission::Drop | Admission::Slip(_) => return,
            Admission::Formerr(reply) => {
                let _ = replies.send(reply).await;
                return;
            }
            Admission::Refuse(request) => {
                let trace = handler.trace_request(&request);
                let answered = handler.refused(&request);
                return send(handler, &request, answered, replies, trace).await;
            }
            Admission::Query(request) => request,
        };
        let mut trace = handler.trace_request(&request);
        let answered = match handler.answer_locally(&request, &mut trace) {
            Step::Answered(answered) => answered,
            Step::Cached(hit, qtype) => cached_reply(&request, &hit, qtype),
            Step::Forward => match handler.reserve_upstream(&request) {
                Ok(upstream) => {
                    let (handler, replies) = (handler.clone(), replies.clone());
                    tokio::spawn(async move {
                        // the connection's place for this query; `upstream` passes to the lookup
                        let _pipelined = permit;
                        let answered = handler.forward(&request, upstream, &mut trace).await;
                        send(&handler, &request, answered, &replies, trace).await;
                    });
                    return;
                }
                Err(overloaded) => *overloaded,
            },
        };
        send(handler, &request, answered, replies, trace).await;
    }
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
    handler.count(request, &answered);
    let mut out = Vec::with_capacity(512);
    encode(request, &answered.reply, &mut out);
    handler.log_answered(trace, answered);
    let _ = replies.send(out).await;
}

/// Writes the answers as they come, flushing when none is waiting. A client that stops
/// reading is given up on after the idle timeout: dropping `queue` tells the reader.
async fn write_replies(write: OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>, idle: Duration) {
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
