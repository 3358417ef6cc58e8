//! DNS over HTTPS (RFC 8484) to one upstream server: one long-lived HTTP/2 connection, each
//! query a POST of `application/dns-message` on a stream of its own, so any number are in
//! flight at once (up to the server's stream limit, past which h2 queues them) and each answer
//! is matched by its stream. The query ID is 0 (RFC 8484 §4.1: an HTTP cache can then share
//! answers; the stream, not the ID, says which query an answer is for).
//!
//! The connection ends when the server closes it (GOAWAY) or it fails, or after
//! `IDLE_TIMEOUT` with no query in flight; the next query opens a new one.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use h2::client::SendRequest;
use hickory_proto::op::{Message, Query};
use http::{Method, Request, StatusCode, header};
use rustls::{ClientConfig, pki_types::ServerName};

use super::{
    connection::{Connection, ConnectionSlot, Got, IDLE_TIMEOUT},
    exchange::{ExchangeError, query_message},
    tls_client,
};

const DNS_MESSAGE: &str = "application/dns-message";
/// The largest DNS message; a longer body is not an answer.
const MAX_BODY: usize = 65_535;

pub struct DohExchange {
    server: SocketAddr,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
    /// `https://name/path`: what every request asks for.
    uri: http::Uri,
    edns_payload: u16,
    slot: ConnectionSlot<DohConnection>,
}

impl DohExchange {
    /// `authority` (the certificate name, or the address) and `path` make the request URI;
    /// `config` must offer ALPN `h2`.
    pub fn new(
        server: SocketAddr,
        name: ServerName<'static>,
        authority: &str,
        path: &str,
        label: String,
        config: Arc<ClientConfig>,
        edns_payload: u16,
    ) -> Result<Self, String> {
        let authority = match server.ip() {
            std::net::IpAddr::V6(ip) if authority == ip.to_string() => format!("[{ip}]"),
            _ => authority.to_string(),
        };
        let uri = format!("https://{authority}:{}{path}", server.port())
            .parse::<http::Uri>()
            .map_err(|e| format!("{label}: not a usable URL: {e}"))?;
        Ok(Self {
            server,
            name,
            config,
            uri,
            edns_payload,
            slot: ConnectionSlot::new(label),
        })
    }

    /// Sends one query on the shared connection (made first if there is none) and waits for
    /// its answer; `Exchange::exchange` bounds it, connecting included.
    pub async fn ask(
        &self,
        query: &Query,
        checking_disabled: bool,
    ) -> Result<Message, ExchangeError> {
        let body: Bytes = query_message(0, query, self.edns_payload, checking_disabled)
            .to_vec()
            .map_err(|e| ExchangeError::Encode(e.to_string()))?
            .into();
        // As for DoT: a reused connection the server closed meanwhile (GOAWAY after its idle
        // time) gets the query again on a new one, and is not the server's failure.
        // at most one retry: a connection that is made for the query and fails is the server's
        for retry in [true, false] {
            let Got { connection, fresh } = self.slot.get(|| self.connect()).await?;
            match connection.ask(&self.uri, body.clone()).await {
                Err(ExchangeError::Closed) if !fresh && retry => continue,
                result => return result,
            }
        }
        Err(ExchangeError::Closed)
    }

    async fn connect(&self) -> Result<Arc<DohConnection>, ExchangeError> {
        let stream = tls_client::connect(self.server, &self.name, &self.config).await?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ExchangeError::Connect(
                "the server did not agree to HTTP/2 (ALPN h2), which DoH needs".into(),
            ));
        }
        let (send, connection) = h2::client::Builder::new()
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| ExchangeError::Connect(format!("HTTP/2 handshake: {e}")))?;
        let doh = Arc::new(DohConnection {
            send,
            open: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            born: Instant::now(),
            last_used_ms: AtomicU64::new(0),
        });
        tokio::spawn(drive(Arc::downgrade(&doh), connection));
        Ok(doh)
    }
}

pub struct DohConnection {
    send: SendRequest<Bytes>,
    open: AtomicBool,
    in_flight: AtomicUsize,
    born: Instant,
    /// Milliseconds after `born` when a query last started or ended.
    last_used_ms: AtomicU64,
}

impl Connection for DohConnection {
    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

impl DohConnection {
    async fn ask(&self, uri: &http::Uri, body: Bytes) -> Result<Message, ExchangeError> {
        let _in_flight = InFlight::new(self);
        let mut send = self.send.clone().ready().await.map_err(closed)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, DNS_MESSAGE)
            .header(header::ACCEPT, DNS_MESSAGE)
            .header(header::CONTENT_LENGTH, body.len())
            .body(())
            .map_err(|e| ExchangeError::Encode(e.to_string()))?;
        let (response, mut stream) = send.send_request(request, false).map_err(closed)?;
        stream.send_data(body, true).map_err(closed)?;
        let response = response.await.map_err(closed)?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(ExchangeError::Garbled(format!("HTTP status {status}")));
        }
        let content_type = response.headers().get(header::CONTENT_TYPE);
        if content_type.is_none_or(|t| t.as_bytes() != DNS_MESSAGE.as_bytes()) {
            return Err(ExchangeError::Garbled(format!(
                "content type {content_type:?}, not {DNS_MESSAGE}"
            )));
        }
        let mut body = response.into_body();
        let mut reply = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(closed)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if reply.len() + chunk.len() > MAX_BODY {
                return Err(ExchangeError::Garbled(
                    "body longer than a DNS message".into(),
                ));
            }
            reply.extend_from_slice(&chunk);
        }
        let reply = Message::from_vec(&reply)
            .map_err(|e| ExchangeError::Garbled(format!("does not decode: {e}")))?;
        if reply.metadata.id != 0 {
            return Err(ExchangeError::Garbled("reply with another ID".into()));
        }
        Ok(reply)
    }

    fn touch(&self) {
        self.last_used_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_used_ms.load(Ordering::Relaxed));
        Some(self.born.elapsed().saturating_sub(last))
    }
}

/// Counts a query in flight on a connection while it lives, so the idle timer leaves it be.
struct InFlight<'a>(&'a DohConnection);

impl<'a> InFlight<'a> {
    fn new(connection: &'a DohConnection) -> Self {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        connection.touch();
        Self(connection)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An h2 error on the connection (GOAWAY, reset, I/O) means the connection is gone or going: a
/// query on it may be asked again on a new one. Anything else about one stream is the
/// server's answer going wrong.
fn closed(e: h2::Error) -> ExchangeError {
    if e.is_io() || e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        ExchangeError::Closed
    } else {
        ExchangeError::Garbled(format!("HTTP/2: {e}"))
    }
}

/// Runs the HTTP/2 connection (its frames, pings, flow control) until the server ends it, it
/// fails, or it has been idle for `IDLE_TIMEOUT`.
async fn drive<T>(doh: std::sync::Weak<DohConnection>, connection: h2::client::Connection<T, Bytes>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let idle = {
        let doh = doh.clone();
        async move {
            let mut wait = IDLE_TIMEOUT;
            loop {
                tokio::time::sleep(wait).await;
                let Some(doh) = doh.upgrade() else {
                    return;
                };
                match doh.idle_for() {
                    Some(idle) if idle >= IDLE_TIMEOUT => {
                        doh.open.store(false, Ordering::Release);
                        return;
                    }
                    Some(idle) => wait = IDLE_TIMEOUT - idle,
                    None => wait = IDLE_TIMEOUT,
                }
            }
        }
    };
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "upstream HTTP/2 connection failed");
            }
        }
        () = idle => {}
    }
    if let Some(doh) = doh.upgrade() {
        doh.open.store(false, Ordering::Release);
    }
}
