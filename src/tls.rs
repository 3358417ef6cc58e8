//! The DNS over TLS listener (RFC 7858): TCP framing inside TLS. Connections are accepted and
//! capped by the TCP accept loop (`TcpServer::accept_loop`, the same caps as plain TCP), get
//! `tls_handshake_timeout` to finish their handshake, and are then served by the TCP connection
//! loop (`TcpServer::connection`: pipelining, idle timeout, the same admission and answers),
//! counted as `protocol="tls"`.

use std::{sync::Arc, time::Duration};

use hickory_net::xfer::Protocol;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::tcp::TcpServer;

/// RFC 9461 / IANA's ALPN id for DNS over TLS. A client that offers no ALPN is served too.
pub const ALPN_DOT: &[u8] = b"dot";

pub struct TlsServer {
    pub tcp: Arc<TcpServer>,
    pub acceptor: TlsAcceptor,
    /// A connection that has not finished its handshake by then is closed.
    pub handshake_timeout: Duration,
}

impl TlsServer {
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let tls = self.clone();
        self.tcp
            .clone()
            .accept_loop(listener, shutdown, move |server, stream, src| {
                let tls = tls.clone();
                async move {
                    let Some(stream) =
                        handshake(&tls.acceptor, tls.handshake_timeout, stream, src).await
                    else {
                        return;
                    };
                    let (read, write) = tokio::io::split(stream);
                    server.connection(read, write, src, Protocol::Tls).await;
                }
            })
            .await;
    }
}

/// The server side of a TLS handshake, within `timeout`; `None` (logged at debug) when it fails
/// or takes too long, and the connection is then closed.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    timeout: Duration,
    stream: tokio::net::TcpStream,
    src: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%src, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%src, "TLS handshake not finished in time, closed");
            None
        }
    }
}
