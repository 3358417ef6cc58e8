//! One exchange with one upstream server: a query goes out, a reply (or a typed failure) comes
//! back. The transports sit behind one enum so that failover, classification and metrics above
//! them (`upstream::Upstream`) are the same whatever carried the bytes: plain UDP and TCP, DNS
//! over TLS (`tls`) and DNS over HTTPS (`https`).

use std::{io, time::Duration};

use hickory_proto::op::{Edns, Message, Query};

use super::{https::DohExchange, tcp::TcpExchange, tls::DotExchange, udp::UdpExchange};

pub enum Exchange {
    Udp(UdpExchange),
    Tcp(TcpExchange),
    Tls(DotExchange),
    Https(DohExchange),
}

impl Exchange {
    /// Sends `query` and waits up to `timeout` for the server's reply. The reply's ID matches;
    /// whether it answers the question is for `classify` to judge.
    pub async fn exchange(
        &self,
        query: &Query,
        timeout: Duration,
    ) -> Result<Message, ExchangeError> {
        match self {
            Self::Udp(udp) => udp.exchange(query, timeout).await,
            Self::Tcp(tcp) => tcp.exchange(query, timeout).await,
            Self::Tls(tls) => tls.exchange(query, timeout).await,
            Self::Https(https) => https.exchange(query, timeout).await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("port unreachable")]
    Unreachable,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("unusable reply: {0}")]
    Garbled(String),
    #[error("cannot encode the query: {0}")]
    Encode(String),
    #[error("no free query ID on the socket")]
    Busy,
    /// No connection to a DoT or DoH server could be made: TCP, or the TLS handshake (a
    /// certificate that does not hold the configured name, say).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection ended before the answer came.
    #[error("connection closed before the answer")]
    Closed,
}

impl ExchangeError {
    /// The server (or the path to it) failed, as opposed to hushd itself: only such errors
    /// count against the server and back it off.
    pub fn is_server_failure(&self) -> bool {
        !matches!(self, Self::Encode(_) | Self::Busy)
    }
}

/// The query hushd sends for `query`: recursion desired, hushd's EDNS payload, ID `id`.
pub fn query_message(id: u16, query: &Query, edns_payload: u16) -> Message {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(edns_payload);
    message.set_edns(edns);
    message
}

/// A random query ID (hickory draws them from a CSPRNG).
pub fn random_id() -> u16 {
    Message::query().metadata.id
}
