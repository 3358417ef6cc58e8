//! Checks on raw DNS bytes that hickory's decoder does not make, shared by every transport.

use hickory_proto::{
    op::{Header, HeaderCounts, Metadata, ResponseCode},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};

/// The UDP payload size hushd accepts and offers, to clients and upstream (DNS Flag Day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;

/// The question section names its names in full, without compression pointers, in every
/// question (a query with several is answered FORMERR, and that reply echoes them all). The
/// first question starts right after the header, so a pointer there can only point into the
/// header: never a real name. (hickory accepts it; the check is ours.)
pub fn question_is_plain(question: &[u8]) -> bool {
    let mut i = 0;
    while i < question.len() {
        loop {
            match question.get(i) {
                Some(0) => break,
                Some(&len @ 1..=63) => i += usize::from(len) + 1,
                _ => return false, // a pointer (0xC0), a reserved label type, or cut short
            }
        }
        i += 1 + 4; // the root label, then type and class
    }
    i == question.len()
}

/// A FORMERR reply to a datagram that has a DNS header but does not decode, so a client with a
/// broken query gets an answer instead of a timeout. Nothing for responses or for bytes without
/// a header.
pub fn formerr_for(datagram: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(datagram)).ok()?;
    if header.metadata.message_type == hickory_proto::op::MessageType::Response {
        return None;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    let mut out = Vec::with_capacity(12);
    Header {
        metadata,
        counts: HeaderCounts::default(),
    }
    .emit(&mut BinEncoder::new(&mut out))
    .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_with_pointers_or_cut_short_are_not_plain() {
        assert!(question_is_plain(b"\x01a\x03com\x00\x00\x01\x00\x01"));
        assert!(question_is_plain(b"\x00\x00\x01\x00\x01")); // the root
        assert!(!question_is_plain(b"\xc0\x00\x00\x01\x00\x01")); // pointer into the header
        assert!(!question_is_plain(b"\x01a\xc0\x0c"));
        assert!(!question_is_plain(b"\x05ab")); // label runs past the end
        assert!(!question_is_plain(b"\x41abc\x00")); // reserved label type 0x40
        assert!(!question_is_plain(b"\x01a\x00\x00\x01")); // type and class cut short
        // every question counts, not just the first (found by the request fuzzer)
        assert!(question_is_plain(
            b"\x01a\x00\x00\x01\x00\x01\x01b\x00\x00\x01\x00\x01"
        ));
        assert!(!question_is_plain(
            b"\x01a\x00\x00\x01\x00\x01\x01b\xc0\x0c\x00\x01\x00\x01"
        ));
    }
}
