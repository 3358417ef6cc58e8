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
