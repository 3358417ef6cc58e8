//! Block replies as sent, kept by the request they answered, so the UDP hit path encodes a
//! blocked name's reply once instead of at every query.
//!
//! A block reply hushd makes for a name a list matched is a pure function of the policy (the
//! list's block response and name, `block_ttl`), the list that decided, and the request's bytes
//! after its ID (flags, question in the client's case, EDNS). Kept under exactly those, a reply
//! is sent again with only the ID patched in. Encoding it each time went through hickory's
//! encoder with name compression, which allocates per label: with 30 % of the bench's queries
//! blocked, that was 7 % of the daemon's CPU at 50k q/s (`perf`).
//!
//! Replies made from an answer's destinations (a CNAME or an address blocked) depend on the
//! cache, and hushd's other own answers on its state (draining): neither is kept. A reload
//! builds a new policy with a new generation, so no reply of an earlier policy is ever sent
//! again; its entries are evicted as the new ones come in.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

use quick_cache::{Equivalent, sync::Cache};

/// Replies kept, at most: a few hundred kilobytes (a key and a reply are about 100 bytes each).
const CAPACITY: usize = 2048;

/// Which policy decided a block, and by which of its lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decided {
    /// `Policy::generation`: unique to one built policy.
    pub generation: u64,
    /// The list's place among that policy's lists.
    pub list: usize,
}

type Key = (Decided, Box<[u8]>);

/// Looks a key up without copying the request.
struct KeyRef<'a>(Decided, &'a [u8]);

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // must agree with the tuple's derived Hash: fields in order, the slice as a Box hashes
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == key.0 && *self.1 == *key.1
    }
}

pub struct BlockReplies {
    replies: Cache<Key, Arc<[u8]>>,
}

impl Default for BlockReplies {
    fn default() -> Self {
        Self {
            replies: Cache::new(CAPACITY),
        }
    }
}

impl BlockReplies {
    /// Writes the kept reply to `request` (a datagram of at least 2 bytes), its ID set to the
    /// request's, into `out`. False if none is kept.
    pub fn write(&self, decided: Decided, request: &[u8], out: &mut Vec<u8>) -> bool {
        let Some((id, rest)) = request.split_at_checked(2) else {
            return false;
        };
        let Some(reply) = self.replies.get(&KeyRef(decided, rest)) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(id);
        out.extend_from_slice(&reply[2..]);
        true
    }

    /// Keeps `reply`, the encoded answer to `request`.
    pub fn keep(&self, decided: Decided, request: &[u8], reply: &[u8]) {
        if request.len() < 2 || reply.len() < 2 {
            return;
        }
        self.replies
            .insert((decided, request[2..].into()), Arc::from(reply));
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Decided = Decided {
        generation: 1,
        list: 3,
    };

    #[test]
    fn a_kept_reply_is_written_with_the_requests_id_and_nothing_else_matches() {
        let memo = BlockReplies::default();
        let request = [0x12, 0x34, 1, 0, 0, 1, b'x'];
        let reply = [0x12, 0x34, 0x81, 0x83, 0, 1, b'y'];
        let mut out = Vec::new();
        assert!(!memo.write(A, &request, &mut out));
        memo.keep(A, &request, &reply);
        // another ID: the same reply, with that ID
        assert!(memo.write(A, &[0xab, 0xcd, 1, 0, 0, 1, b'x'], &mut out));
        assert_eq!(out, [0xab, 0xcd, 0x81, 0x83, 0, 1, b'y']);
        // another byte after the ID, another list, another policy: nothing kept
        assert!(!memo.write(A, &[0x12, 0x34, 1, 0, 0, 1, b'X'], &mut out));
        let other_list = Decided { list: 4, ..A };
        assert!(!memo.write(other_list, &request, &mut out));
        let next_policy = Decided { generation: 2, ..A };
        assert!(!memo.write(next_policy, &request, &mut out));
        // too short to carry an ID
        assert!(!memo.write(A, &[0x12], &mut out));
        memo.keep(A, &[0x12], &reply);
        assert_eq!(memo.len(), 1);
    }
}
