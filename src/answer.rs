//! `Answer`: what an upstream exchange yields and what the cache keeps and replays. It sits
//! apart from both so that neither depends on the other, and from the reply builders (`reply`),
//! which turn it into the message a client gets.

use hickory_proto::{op::ResponseCode, rr::Record};

/// An answer as upstream gave it, ready to be cached and replayed.
#[derive(Debug, Clone)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// How long the answer may be reused: the smallest record TTL, or the negative TTL (RFC 2308).
    /// `None` when it must not be cached (a negative answer without an SOA).
    pub ttl: Option<u32>,
}

impl Answer {
    /// A resolution failure (RFC 9520): every server asked answered, but with SERVFAIL, REFUSED
    /// or the like. It carries no records; the cache keeps it for `servfail_ttl`, so a name that
    /// fails does not send a query upstream for every client retry.
    pub fn resolution_failure() -> Self {
        Self {
            rcode: ResponseCode::ServFail,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            ttl: None,
        }
    }

    pub fn is_resolution_failure(&self) -> bool {
        self.rcode == ResponseCode::ServFail
    }
}
