//! The TCP listener: hushd's own accept loop, so connections can be capped (total and per
//! client) before they cost anything; hickory-server's `register_listener` takes the whole
//! listener and has no such hook. Past the accept everything is hickory's: `TcpStream` frames
//! the messages, `TimeoutStream` closes idle connections (RFC 7766), and each query goes through
//! `QueryHandler`'s `RequestHandler` implementation with a hickory `ResponseHandle`, just as
//! hickory-server's own TCP loop would call it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::StreamExt;
use hickory_net::{
    BufDnsStreamHandle, DnsStreamHandle,
    runtime::{TokioTime, iocompat::AsyncIoTokioAsStd},
    tcp::TcpStream,
    xfer::Protocol,
};
use hickory_proto::op::{MessageType, SerialMessage};
use hickory_server::server::{Request, RequestHandler, ResponseHandle, TimeoutStream};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    handler::QueryHandler,
    limits::{TcpConnectionLimiter, TcpConnectionSlot},
    metrics::Metrics,
};

/// Responses queued per connection before the handler waits for the client to read them.
const RESPONSE_BUFFER: usize = 32;

pub struct TcpServer {
    pub handler: Arc<QueryHandler>,
    pub limiter: Arc<TcpConnectionLimiter>,
    /// An idle connection is closed after this long (RFC 7766 §6.2.3).
    pub idle_timeout: Duration,
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

    /// One client connection: queries are answered in order, as hickory-server does.
    async fn connection(
        &self,
        stream: tokio::net::TcpStream,
        src: SocketAddr,
        _slot: TcpConnectionSlot,
    ) {
        let metrics: &Metrics = &self.handler.metrics;
        metrics.tcp_connections.inc();
        let (framed, mut responses) = TcpStream::from_stream_with_buffer_size(
            AsyncIoTokioAsStd(stream),
            src,
            RESPONSE_BUFFER,
        );
        let mut messages = TimeoutStream::new(framed, self.idle_timeout);
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    // idle timeout, a reset, or a length prefix promising more than arrives
                    tracing::debug!(%src, error = %e, "TCP connection closed");
                    break;
                }
            };
            self.query(message, src, &mut responses).await;
        }
        metrics.tcp_connections.dec();
    }

    async fn query(
        &self,
        message: SerialMessage,
        src: SocketAddr,
        responses: &mut BufDnsStreamHandle,
    ) {
        let (bytes, _) = message.into_parts();
        // The header alone is enough for a FORMERR, should the rest not decode.
        let mut header = [0u8; 12];
        let header = bytes.get(..12).map(|h| {
            header.copy_from_slice(h);
            header
        });
        let Ok(request) = Request::from_bytes(bytes, src, Protocol::Tcp) else {
            if let Some(reply) = header.as_ref().and_then(|h| crate::wire::formerr_for(h)) {
                let _ = responses.send(SerialMessage::new(reply, src));
            }
            return;
        };
        if request.metadata.message_type == MessageType::Response {
            return; // never answer an answer
        }
        let response = ResponseHandle::new(src, responses.clone(), Protocol::Tcp);
        self.handler
            .handle_request::<_, TokioTime>(&request, response)
            .await;
    }
}
