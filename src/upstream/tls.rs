//! DNS over TLS (RFC 7858) to one upstream server: one long-lived connection, queries
//! pipelined on it (RFC 7766 §6.2.1: many in flight, answers taken in whatever order they
//! come and matched by ID and question), RFC 1035 §4.2.2 framing.
//!
//! A connection has a writer task (queries from a channel, as many as are queued written
//! before one flush, so a burst shares TLS records and packets) and a reader task (answers to
//! the queries that wait for them). Reading and writing never wait on each other, so a server
//! that stops reading while it writes cannot deadlock the two. The connection ends when the
//! server closes it or it fails (every waiting query fails at once, and the next query opens
//! a new one), or when it has had no query in flight for `IDLE_TIMEOUT`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use futures_util::StreamExt;
use hickory_proto::op::{Message, Query};
use prometheus::IntCounter;
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::{
    io::{AsyncWriteExt, BufWriter, ReadHalf, WriteHalf},
    net::TcpStream,
    sync::{mpsc, oneshot},
};
use tokio_rustls::client::TlsStream;
use tokio_util::{
    codec::{FramedRead, LengthDelimitedCodec},
    sync::CancellationToken,
};

use super::{
    connection::{Connection, ConnectionSlot, Got, IDLE_TIMEOUT},
    exchange::{ExchangeError, query_message, random_id},
    tls_client,
    udp::{Pending, free_id},
};

type Stream = TlsStream<TcpStream>;

pub struct DotExchange {
    server: SocketAddr,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
    edns_payload: u16,
    rejected: IntCounter,
    slot: ConnectionSlot<DotConnection>,
}

impl DotExchange {
    /// `label` names the server in logs; `name` is what its certificate must hold.
    pub fn new(
        server: SocketAddr,
        name: ServerName<'static>,
        label: String,
        config: Arc<ClientConfig>,
        edns_payload: u16,
        rejected: IntCounter,
    ) -> Self {
        Self {
            server,
            name,
            config,
            edns_payload,
            rejected,
            slot: ConnectionSlot::new(label),
        }
    }

    /// Sends one query on the shared connection (made first if there is none) and waits for
    /// its answer; `Exchange::exchange` bounds it, connecting included.
    pub async fn ask(
        &self,
        query: &Query,
        checking_disabled: bool,
    ) -> Result<Message, ExchangeError> {
        // A reused connection may have been closed by the server just as the query went out
        // (its idle timer and ours race): such a query is asked once more on a new one, so an
        // ordinary idle close never counts against the server.
        // at most one retry: a connection that is made for the query and fails is the server's
        for retry in [true, false] {
            let Got { connection, fresh } = self
                .slot
                .get(|| async {
                    let stream = tls_client::connect(self.server, &self.name, &self.config).await?;
                    Ok(DotConnection::start(stream, self.rejected.clone()))
                })
                .await?;
            match connection
                .ask(query, self.edns_payload, checking_disabled)
                .await
            {
                Err(ExchangeError::Closed) if !fresh && retry => continue,
                result => return result,
            }
        }
        Err(ExchangeError::Closed)
    }
}

pub struct DotConnection {
    /// Queries waiting for their answer, by ID. `None` once the connection has ended: taken
    /// under the same lock a query registers under, so none registers on a dead connection.
    pending: Mutex<Option<HashMap<u16, Pending>>>,
    outgoing: mpsc::UnboundedSender<Bytes>,
    open: AtomicBool,
    /// Cancelled when the connection ends: tells the writer the reader has ended, or the
    /// other way round.
    ended: CancellationToken,
}

impl Connection for DotConnection {
    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

impl DotConnection {
    fn start(stream: Stream, rejected: IntCounter) -> Arc<Self> {
        let (read, write) = tokio::io::split(stream);
        let (outgoing, queue) = mpsc::unbounded_channel();
        let connection = Arc::new(Self {
            pending: Mutex::new(Some(HashMap::new())),
            outgoing,
            open: AtomicBool::new(true),
            ended: CancellationToken::new(),
        });
        tokio::spawn(read_answers(Arc::downgrade(&connection), read, rejected));
        tokio::spawn(write_queries(Arc::downgrade(&connection), write, queue));
        connection
    }

    async fn ask(
        &self,
        query: &Query,
        edns_payload: u16,
        checking_disabled: bool,
    ) -> Result<Message, ExchangeError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let pending = pending.as_mut().ok_or(ExchangeError::Closed)?;
            let id =
                free_id(|id| pending.contains_key(&id), random_id).ok_or(ExchangeError::Busy)?;
            pending.insert(
                id,
                Pending {
                    query: query.clone(),
                    reply: tx,
                },
            );
            id
        };
        let _cleanup = RemoveOnDrop {
            connection: self,
            id,
        };
        let bytes = query_message(id, query, edns_payload, checking_disabled)
            .to_vec()
            .map_err(|e| ExchangeError::Encode(e.to_string()))?;
        let frame = framed(&bytes).ok_or_else(|| ExchangeError::Encode("query too long".into()))?;
        self.outgoing
            .send(frame)
            .map_err(|_| ExchangeError::Closed)?;
        // the reader drops the sender when the connection ends
        rx.await.map_err(|_| ExchangeError::Closed)
    }

    /// Marks the connection ended and fails every query waiting on it.
    fn end(&self) {
        self.open.store(false, Ordering::Release);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.ended.cancel();
    }

    /// Ends the connection if no query is in flight; true if it did (the idle close).
    fn end_if_idle(&self) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.as_ref().is_some_and(HashMap::is_empty) {
            self.open.store(false, Ordering::Release);
            pending.take();
            true
        } else {
            false
        }
    }
}

struct RemoveOnDrop<'a> {
    connection: &'a DotConnection,
    id: u16,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self
            .connection
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            pending.remove(&self.id);
        }
    }
}

/// Hands each answer to the query waiting for it, until the server closes the connection or
/// it fails; then fails every query still waiting.
async fn read_answers(
    connection: std::sync::Weak<DotConnection>,
    read: ReadHalf<Stream>,
    rejected: IntCounter,
) {
    let mut frames = FramedRead::new(read, dns_framing());
    loop {
        let frame = {
            let Some(alive) = connection.upgrade() else {
                return;
            };
            // wait for the next answer, or for the writer to end the connection (idle)
            tokio::select! {
                frame = frames.next() => frame,
                () = alive.ended.cancelled() => None,
            }
        };
        let Some(connection) = connection.upgrade() else {
            return;
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "upstream TLS connection failed");
                connection.end();
                return;
            }
            None => {
                connection.end();
                return;
            }
        };
        let Ok(answer) = Message::from_vec(&frame) else {
            // a stream cannot be resynchronised past a message that does not decode... it can
            // (the framing is intact), but no query can be matched to it: drop it
            rejected.inc();
            continue;
        };
        if !Pending::deliver(&connection.pending, answer) {
            rejected.inc();
        }
    }
}

/// Writes queued queries, as many as are waiting before each flush; closes the connection
/// after `IDLE_TIMEOUT` with nothing in flight.
async fn write_queries(
    connection: std::sync::Weak<DotConnection>,
    write: WriteHalf<Stream>,
    mut queue: mpsc::UnboundedReceiver<Bytes>,
) {
    let mut write = BufWriter::new(write);
    loop {
        let next = {
            let Some(alive) = connection.upgrade() else {
                return;
            };
            tokio::select! {
                frame = queue.recv() => Next::Frame(frame),
                () = tokio::time::sleep(IDLE_TIMEOUT) => Next::Idle,
                () = alive.ended.cancelled() => Next::Frame(None),
            }
        };
        let frame = match next {
            Next::Frame(Some(frame)) => frame,
            Next::Frame(None) => return,
            Next::Idle => {
                let Some(connection) = connection.upgrade() else {
                    return;
                };
                if connection.end_if_idle() {
                    // close_notify and FIN; the reader sees the end (or is told) and stops
                    let _ = write.shutdown().await;
                    connection.ended.cancel();
                    return;
                }
                continue;
            }
        };
        let mut result = write.write_all(&frame).await;
        while result.is_ok()
            && let Ok(frame) = queue.try_recv()
        {
            result = write.write_all(&frame).await;
        }
        if let Err(e) = match result {
            Ok(()) => write.flush().await,
            Err(e) => Err(e),
        } {
            tracing::debug!(error = %e, "cannot write to upstream TLS connection");
            if let Some(connection) = connection.upgrade() {
                connection.end();
            }
            return;
        }
    }
}

enum Next {
    Frame(Option<Bytes>),
    Idle,
}

fn dns_framing() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(usize::from(u16::MAX))
        .new_codec()
}

/// `message` behind its two-byte length; `None` if it does not fit the length field.
fn framed(message: &[u8]) -> Option<Bytes> {
    let len = u16::try_from(message.len()).ok()?;
    let mut frame = Vec::with_capacity(2 + message.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    Some(frame.into())
}
