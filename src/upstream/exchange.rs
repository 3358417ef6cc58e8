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
        checking_disabled: bool,
        timeout: Duration,
    ) -> Result<Message, ExchangeError> {
        match self {
            Self::Udp(udp) => udp.exchange(query, checking_disabled, timeout).await,
            Self::Tcp(tcp) => tcp.exchange(query, checking_disabled, timeout).await,
            Self::Tls(tls) => within(timeout, tls.ask(query, checking_disabled)).await,
            Self::Https(https) => within(timeout, https.ask(query, checking_disabled)).await,
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

/// The query hushd sends for `query`: recursion desired, hushd's EDNS payload, ID `id`. DO is
/// always set (RFC 3225), so the answer carries its signatures and denial proofs whether or not
/// the client that caused the lookup wants them: one cached answer serves both kinds of client
/// (the records are left out for a client without DO when it is served). CD is the client's
/// (RFC 4035 §3.2.2): a validating client that checks for itself asks for data its upstream's
/// validation would have rejected.
/// An encrypted exchange bounded by `timeout`, connecting included (the UDP and TCP exchanges
/// keep their own deadlines, which their retries need).
async fn within(
    timeout: Duration,
    ask: impl Future<Output = Result<Message, ExchangeError>>,
) -> Result<Message, ExchangeError> {
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| ExchangeError::Timeout(timeout))?
}

pub fn query_message(
    id: u16,
    query: &Query,
    edns_payload: u16,
    checking_disabled: bool,
) -> Message {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.metadata.checking_disabled = checking_disabled;
    message.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(edns_payload);
    edns.set_dnssec_ok(true);
    message.set_edns(edns);
    message
}

/// A random query ID (hickory draws them from a CSPRNG).
pub fn random_id() -> u16 {
    Message::query().metadata.id
}
