//! The DNS over HTTPS listener (RFC 8484): `/dns-query`, GET with `?dns=` (base64url) and POST
//! with an `application/dns-message` body, over HTTP/2 or HTTP/1.1 inside TLS. Connections are
//! accepted and capped by the TCP accept loop (`TcpServer::accept_loop`) and get
//! `tls_handshake_timeout` to finish their handshake; each query goes through the same
//! admission and answers as every other transport (`tcp::first_step`, `tcp::finish`), counted
//! as `protocol="https"`. HTTP/2 allows `MAX_STREAMS` (100) streams at once per connection;
//! a connection with no request open for `tcp_idle_timeout` is closed.
//!
//! hyper directly, not axum: one path and two methods need no router, and every layer axum
//! adds would run for every query.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{
    Engine,
    alphabet::URL_SAFE,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use hickory_net::xfer::Protocol;
use hickory_proto::{
    op::ResponseCode,
    rr::{RData, Record},
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    reply::Reply,
    tcp::{FirstStep, TcpServer, finish, first_step},
    tls::handshake,
};

/// Streams open at once on one HTTP/2 connection. RFC 9113 §6.5.2 recommends no fewer than
/// 100: until a client has read this setting it may open that many, and the streams over a
/// smaller limit would be refused (dnsperf, for one, then loses those queries). The per-client
/// rate limit and `max_inflight` bound the work as for every transport.
const MAX_STREAMS: u32 = 100;

/// The path RFC 8484 §4.1 suggests and DDR advertises (`dohpath`).
pub const DOH_PATH: &str = "/dns-query";
/// RFC 8484's media type, for POST bodies and every answer.
pub const DNS_MESSAGE: &str = "application/dns-message";
/// The largest DNS message (RFC 8484 §6: what TCP framing could carry).
const MAX_MESSAGE: usize = 65_535;
/// ALPN ids offered: HTTP/2 (RFC 8484 §5.2 recommends it), and HTTP/1.1 for older clients.
pub const ALPN_DOH: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// GET's `dns` parameter: base64url, RFC 8484 §4.1 says without padding; with it is accepted.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub struct HttpsServer {
    pub tcp: Arc<TcpServer>,
    pub acceptor: TlsAcceptor,
    pub handshake_timeout: Duration,
    http: auto::Builder<TokioExecutor>,
}

impl HttpsServer {
    pub fn new(tcp: Arc<TcpServer>, acceptor: TlsAcceptor, handshake_timeout: Duration) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(tcp.limiter.idle_timeout());
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS);
        Self {
            tcp,
            acceptor,
            handshake_timeout,
            http,
        }
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let https = self.clone();
        self.tcp
            .clone()
            .accept_loop(listener, shutdown, move |server, stream, src| {
                let https = https.clone();
                async move {
                    if let Some(stream) =
                        handshake(&https.acceptor, https.handshake_timeout, stream, src).await
                    {
                        https.connection(server, stream, src).await;
                    }
                }
            })
            .await;
    }

    /// One HTTP connection, closed once it has had no request open for the idle timeout.
    async fn connection(
        &self,
        server: Arc<TcpServer>,
        stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        src: SocketAddr,
    ) {
        let idle = server.limiter.idle_timeout();
        let activity = Arc::new(Activity::new());
        let service = {
            let activity = activity.clone();
            service_fn(move |request| {
                let (server, activity) = (server.clone(), activity.clone());
                async move {
                    let _busy = activity.begin();
                    Ok::<_, Infallible>(answer(&server, request, src).await)
                }
            })
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(AnswerPerWrite::new(stream, h2));
        let connection = self.http.serve_connection(io, service);
        tokio::pin!(connection);
        loop {
            // None while a request is open: look again after `idle`
            let wait = activity.idle_for(idle);
            if wait == Some(Duration::ZERO) {
                break;
            }
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%src, error = %e, "HTTPS connection closed");
                    }
                    return;
                }
                () = tokio::time::sleep(wait.unwrap_or(idle)) => {}
            }
        }
        tracing::debug!(%src, "HTTPS connection idle, closed");
        // GOAWAY (HTTP/2) or close after the response in progress (HTTP/1.1), then drop it if
        // the client does not finish either
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(idle, connection).await;
    }
}

/// The TLS stream of a DoH connection, written so that over HTTP/2 each answer (the frames up
/// to the one that ends its stream) leaves in writes of its own, so in TLS records of its own,
/// as Unbound writes them. hyper would pack several answers into one record; a client that
/// reads one answer per record (dnsperf 2.10's DoH client) then loses the others. It costs a
/// record header and, under load, a system call per answer.
struct AnswerPerWrite<S> {
    inner: S,
    frames: Option<FrameCursor>,
}

impl<S> AnswerPerWrite<S> {
    fn new(inner: S, h2: bool) -> Self {
        Self {
            inner,
            frames: h2.then(FrameCursor::default),
        }
    }
}

/// Where the bytes written so far stand in the HTTP/2 frames they carry (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FrameCursor {
    /// The frame header's 9 bytes, as far as they have come.
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// The current frame ends its stream (DATA or HEADERS with END_STREAM).
    ends_stream: bool,
}

impl FrameCursor {
    /// Moves over `bytes`; with `stop`, only up to the end of the first frame that ends a
    /// stream. Returns how many bytes it moved over.
    fn advance(&mut self, bytes: &[u8], stop: bool) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            if self.have < 9 {
                let take = (9 - self.have).min(bytes.len() - i);
                self.header[self.have..self.have + take].copy_from_slice(&bytes[i..i + take]);
                self.have += take;
                i += take;
                if self.have < 9 {
                    break;
                }
                let h = self.header;
                self.left = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                // DATA (0) or HEADERS (1) with END_STREAM (0x1)
                self.ends_stream = h[3] <= 1 && h[4] & 0x1 != 0;
            } else {
                let take = self.left.min(bytes.len() - i);
                self.left -= take;
                i += take;
            }
            if self.have == 9 && self.left == 0 {
                self.have = 0;
                if stop && self.ends_stream {
                    break;
                }
            }
        }
        i
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for AnswerPerWrite<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for AnswerPerWrite<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let Some(frames) = &mut this.frames else {
            return std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        let upto = frames.clone().advance(buf, true);
        let written = std::pin::Pin::new(&mut this.inner).poll_write(cx, &buf[..upto]);
        if let std::task::Poll::Ready(Ok(n)) = written {
            frames.advance(&buf[..n], false);
        }
        written
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection's requests in progress and when the last one ended, for its idle timeout.
struct Activity {
    start: Instant,
    open: AtomicUsize,
    /// Milliseconds after `start` when a request last began or ended.
    last: AtomicU64,
}

struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            open: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Release);
    }

    fn begin(&self) -> Busy<'_> {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self)
    }

    /// How long until the connection has been idle for `idle`: `Some(ZERO)` when it has,
    /// `None` while a request is open (it is not idle; check again after `idle`).
    fn idle_for(&self, idle: Duration) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self
            .start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Acquire)));
        Some(idle.saturating_sub(since))
    }
}

/// One HTTP request: the DNS query in it, answered, or the HTTP status saying why not.
async fn answer(
    server: &TcpServer,
    request: Request<Incoming>,
    src: SocketAddr,
) -> Response<Full<Bytes>> {
    let message = match dns_message(request, server.limiter.idle_timeout()).await {
        Ok(message) => message,
        Err(refusal) => return refusal.response(),
    };
    let handler = &server.handler;
    let (request, answered, trace) = match first_step(handler, &message, src, Protocol::Https) {
        // no header, a response, rate-limited, or an outsider's garbage: no DNS answer
        FirstStep::Nothing => return Refusal::NotAQuery.response(),
        FirstStep::Formerr(reply) => return dns_response(reply, 0),
        FirstStep::Answered(request, answered, trace) => (request, answered, trace),
        FirstStep::Forward(request, upstream, mut trace) => {
            let answered = handler.forward(&request, upstream, &mut trace).await;
            (request, answered, trace)
        }
    };
    let max_age = max_age(&answered.reply);
    dns_response(finish(handler, &request, answered, trace), max_age)
}

/// Why an HTTP request carries no DNS query hushd answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Another path than `/dns-query`.
    NotFound,
    /// Neither GET nor POST.
    Method,
    /// A POST whose body is not `application/dns-message`.
    MediaType,
    /// GET without a `dns` parameter, or one that is not base64url.
    BadParameter,
    /// A body or parameter larger than a DNS message.
    TooLarge,
    /// The body did not arrive within the idle timeout, or the stream broke.
    BodyTimeout,
    /// Admission gave nothing back (not a DNS query, over the rate limit...).
    NotAQuery,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::MediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BadParameter | Self::NotAQuery => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = self.status();
        if self == Self::Method {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, POST"));
        }
        response
    }
}

/// The DNS message of a DoH request (RFC 8484 §4.1), or why there is none.
async fn dns_message(request: Request<Incoming>, timeout: Duration) -> Result<Vec<u8>, Refusal> {
    if request.uri().path() != DOH_PATH {
        return Err(Refusal::NotFound);
    }
    match *request.method() {
        Method::GET => get_parameter(request.uri().query().unwrap_or("")),
        Method::POST => {
            let media_type = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .map(str::trim);
            if !media_type.is_some_and(|t| t.eq_ignore_ascii_case(DNS_MESSAGE)) {
                return Err(Refusal::MediaType);
            }
            let body = Limited::new(request.into_body(), MAX_MESSAGE);
            match tokio::time::timeout(timeout, body.collect()).await {
                Ok(Ok(body)) => Ok(body.to_bytes().to_vec()),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::TooLarge),
                Ok(Err(_)) | Err(_) => Err(Refusal::BodyTimeout),
            }
        }
        _ => Err(Refusal::Method),
    }
}

/// The `dns` parameter of a GET query string, decoded.
fn get_parameter(query: &str) -> Result<Vec<u8>, Refusal> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("dns="))
        .ok_or(Refusal::BadParameter)?;
    // base64 of 65535 bytes
    if value.len() > MAX_MESSAGE.div_ceil(3) * 4 {
        return Err(Refusal::TooLarge);
    }
    BASE64URL.decode(value).map_err(|_| Refusal::BadParameter)
}

fn dns_response(message: Vec<u8>, max_age: u32) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(DNS_MESSAGE),
    );
    if let Ok(value) = header::HeaderValue::from_str(&format!("max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    response
}

/// How long an HTTP cache may keep the answer (RFC 8484 §5.1): no longer than its shortest
/// answer TTL; for a negative answer, its SOA's negative TTL (RFC 2308 §5); for a failure
/// (SERVFAIL, REFUSED...) or an answer with nothing to go by, 0.
pub fn max_age(reply: &Reply) -> u32 {
    match reply.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        _ => return 0,
    }
    if let Some(ttl) = reply.answers.iter().map(|r| r.ttl).min() {
        return ttl;
    }
    reply
        .authorities
        .iter()
        .find_map(|r: &Record| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::Metadata,
        rr::{Name, rdata::A},
    };

    use super::*;

    fn record(ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii("a.example.").unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        )
    }

    #[test]
    fn max_age_is_the_shortest_answer_ttl_or_the_negative_ttl_and_0_for_failures() {
        let meta = Metadata::new(
            1,
            hickory_proto::op::MessageType::Query,
            hickory_proto::op::OpCode::Query,
        );
        let mut reply = Reply::new(&meta, None, ResponseCode::NoError);
        assert_eq!(max_age(&reply), 0);
        reply.answers = vec![record(300), record(60), record(120)];
        assert_eq!(max_age(&reply), 60);

        let mut negative = Reply::blocked(
            &meta,
            None,
            &Name::from_ascii("b.example.").unwrap(),
            hickory_proto::rr::RecordType::A,
            crate::config::BlockResponse::Nxdomain,
            "ads",
            45,
        );
        assert_eq!(negative.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(max_age(&negative), 45);
        negative.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(max_age(&negative), 0);
    }

    #[test]
    fn get_takes_the_dns_parameter_in_base64url_with_or_without_padding() {
        // RFC 8484 §4.1.1's example: www.example.com A, ID 0
        let example = "AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB";
        let decoded = get_parameter(&format!("ct=x&dns={example}")).unwrap();
        assert_eq!(decoded.len(), 33);
        assert_eq!(&decoded[12..16], b"\x03www");
        assert_eq!(get_parameter("dns=QUI").unwrap(), b"AB");
        assert_eq!(get_parameter("dns=QUI=").unwrap(), b"AB");
        // base64url, not base64: '-' and '_' where base64 has '+' and '/'
        assert_eq!(get_parameter("dns=-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(get_parameter("dns=@@@"), Err(Refusal::BadParameter));
        assert_eq!(get_parameter("name=x"), Err(Refusal::BadParameter));
        assert_eq!(get_parameter(""), Err(Refusal::BadParameter));
        let huge = "A".repeat(100_000);
        assert_eq!(
            get_parameter(&format!("dns={huge}")),
            Err(Refusal::TooLarge)
        );
    }

    /// A frame: its 9-byte header (length, type, flags, stream) and payload.
    fn frame(kind: u8, flags: u8, stream: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![
            0,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
            0,
            0,
            0,
            stream,
        ];
        f.extend(std::iter::repeat_n(7u8, payload));
        f
    }

    #[test]
    fn writes_end_after_each_frame_that_ends_a_stream_wherever_the_bytes_split() {
        let first = [frame(1, 0x4, 1, 20), frame(0, 0x1, 1, 59)].concat(); // HEADERS, DATA+END
        let second = [
            frame(1, 0x4, 3, 20),
            frame(0, 0x0, 3, 10),
            frame(0, 0x1, 3, 0),
        ]
        .concat();
        let settings = frame(4, 0, 0, 6);
        let all = [settings.clone(), first.clone(), second.clone()].concat();
        let mut cursor = FrameCursor::default();
        assert_eq!(
            cursor.clone().advance(&all, true),
            settings.len() + first.len()
        );
        // written a few bytes at a time, every cut still falls where an answer ends
        for step in [1, 5, 9, 10, 64] {
            let mut cursor = FrameCursor::default();
            let mut at = 0;
            let mut cuts = Vec::new();
            while at < all.len() {
                let chunk = &all[at..(at + step).min(all.len())];
                let upto = cursor.clone().advance(chunk, true);
                assert_eq!(cursor.advance(&chunk[..upto], false), upto);
                at += upto;
                if upto < chunk.len() || (cursor.have == 0 && cursor.ends_stream) {
                    cuts.push(at);
                }
            }
            assert!(
                cuts.contains(&(settings.len() + first.len())),
                "step {step}: {cuts:?}"
            );
            assert_eq!(
                cursor,
                FrameCursor {
                    ends_stream: true,
                    header: cursor.header,
                    ..Default::default()
                }
            );
        }
        cursor.advance(&all, false);
        assert_eq!(cursor.have, 0);
    }

    #[test]
    fn each_refusal_is_its_http_status() {
        assert_eq!(Refusal::NotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(Refusal::Method.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            Refusal::Method.response().headers()[header::ALLOW],
            "GET, POST"
        );
        assert_eq!(
            Refusal::MediaType.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(Refusal::TooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
