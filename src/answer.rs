//! `Answer`: what an upstream exchange yields and what the cache keeps and replays. It sits
//! apart from both so that neither depends on the other, and from the reply builders (`reply`),
//! which turn it into the message a client gets.

use hickory_proto::{
    dnssec::rdata::DNSSECRData,
    op::ResponseCode,
    rr::{RData, Record, RecordType},
};

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
    /// The upstream's AD bit, and only if that upstream is trusted to set it (`trust_ad`,
    /// `upstream::Server`): whether hushd may tell a client the data was validated.
    pub authentic_data: bool,
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
            authentic_data: false,
        }
    }

    pub fn is_resolution_failure(&self) -> bool {
        self.rcode == ResponseCode::ServFail
    }

    /// The answer as a client that did not set DO gets it: RRSIG, NSEC and NSEC3 records left
    /// out (RFC 4035 §3.2.1), unless the question asked for that type. `None` when there is
    /// nothing to leave out, so the answer serves both kinds of client as it is.
    pub fn without_dnssec(&self, qtype: RecordType) -> Option<Self> {
        let shown = |r: &&Record| !hidden_without_do(r.record_type(), qtype);
        let all = || {
            self.answers
                .iter()
                .chain(&self.authorities)
                .chain(&self.additionals)
        };
        if all().all(|r| shown(&r)) {
            return None;
        }
        let keep = |records: &[Record]| records.iter().filter(shown).cloned().collect();
        Some(Self {
            rcode: self.rcode,
            answers: keep(&self.answers),
            authorities: keep(&self.authorities),
            additionals: keep(&self.additionals),
            ttl: self.ttl,
            authentic_data: self.authentic_data,
        })
    }

    /// Seconds until the first of the answer's signatures expires, at `now` (seconds since the
    /// Unix epoch): 0 if one has already; `None` when nothing in it is signed. A validator
    /// rejects an RRset whose RRSIG has expired (RFC 4035 §5.3.1), so a cached answer must not
    /// outlive its signatures.
    pub fn signatures_expire_in(&self, now: u64) -> Option<u32> {
        self.answers
            .iter()
            .chain(&self.authorities)
            .chain(&self.additionals)
            .filter_map(|r| match &r.data {
                RData::DNSSEC(DNSSECRData::RRSIG(sig)) => {
                    Some(serial_seconds_until(sig.input().sig_expiration.get(), now))
                }
                _ => None,
            })
            .min()
    }
}

/// RFC 4035 §3.2.1: the DNSSEC records a server leaves out for a client that did not set DO,
/// unless its question asked for them. DS and DNSKEY are ordinary data when asked for and
/// appear nowhere else in a recursive answer, so they stay.
pub fn hidden_without_do(rtype: RecordType, qtype: RecordType) -> bool {
    matches!(
        rtype,
        RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3
    ) && rtype != qtype
}

/// Seconds from `now` until the 32-bit timestamp `at`, read in serial number arithmetic (RFC
/// 4034 §3.1.5, RFC 1982): a timestamp within 68 years of now; 0 if it is past.
fn serial_seconds_until(at: u32, now: u64) -> u32 {
    let delta = at.wrapping_sub(now as u32) as i32;
    u32::try_from(delta).unwrap_or(0)
}

/// An RRSIG over `covered` at `owner` that expires at `expiration` (Unix seconds), with a
/// made-up signature: enough for what hushd reads of it.
#[cfg(test)]
pub fn test_rrsig(owner: &hickory_proto::rr::Name, covered: RecordType, expiration: u32) -> Record {
    use hickory_proto::{
        dnssec::{
            Algorithm,
            rdata::{RRSIG, SigInput},
        },
        rr::{Name, SerialNumber},
    };
    let input = SigInput {
        type_covered: covered,
        algorithm: Algorithm::ECDSAP256SHA256,
        num_labels: owner.num_labels(),
        original_ttl: 300,
        sig_expiration: SerialNumber::new(expiration),
        sig_inception: SerialNumber::new(expiration.wrapping_sub(86_400)),
        key_tag: 1,
        signer_name: Name::from_ascii("example.").unwrap_or_else(|_| Name::root()),
    };
    Record::from_rdata(
        owner.clone(),
        300,
        RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, vec![7; 64]))),
    )
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr};

    use hickory_proto::rr::{Name, rdata::A};

    use super::*;

    fn signed(expirations: &[u32]) -> Answer {
        let owner = Name::from_str("www.example.").unwrap();
        let mut answers = vec![Record::from_rdata(
            owner.clone(),
            300,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        )];
        answers.extend(
            expirations
                .iter()
                .map(|&e| test_rrsig(&owner, RecordType::A, e)),
        );
        Answer {
            rcode: ResponseCode::NoError,
            answers,
            authorities: vec![],
            additionals: vec![],
            ttl: Some(300),
            authentic_data: true,
        }
    }

    #[test]
    fn a_plain_client_gets_no_dnssec_records_unless_it_asked_for_them() {
        assert!(hidden_without_do(RecordType::RRSIG, RecordType::A));
        assert!(hidden_without_do(RecordType::NSEC, RecordType::A));
        assert!(hidden_without_do(RecordType::NSEC3, RecordType::AAAA));
        assert!(!hidden_without_do(RecordType::RRSIG, RecordType::RRSIG));
        assert!(!hidden_without_do(RecordType::NSEC, RecordType::NSEC));
        assert!(!hidden_without_do(RecordType::DS, RecordType::A));
        assert!(!hidden_without_do(RecordType::DNSKEY, RecordType::DNSKEY));
        assert!(!hidden_without_do(RecordType::A, RecordType::A));

        let answer = signed(&[2_000_000_000]);
        let plain = answer.without_dnssec(RecordType::A).unwrap();
        assert_eq!(plain.answers.len(), 1);
        assert_eq!(plain.answers[0].record_type(), RecordType::A);
        assert!(plain.authentic_data);
        // asked for: kept, so nothing differs
        assert!(answer.without_dnssec(RecordType::RRSIG).is_none());
        assert!(signed(&[]).without_dnssec(RecordType::A).is_none());
    }

    #[test]
    fn the_first_signature_to_expire_bounds_the_answer() {
        let now = 1_800_000_000;
        assert_eq!(signed(&[]).signatures_expire_in(now), None);
        let answer = signed(&[1_800_003_600, 1_800_000_600]);
        assert_eq!(answer.signatures_expire_in(now), Some(600));
        assert_eq!(signed(&[1_799_999_999]).signatures_expire_in(now), Some(0));
        // serial arithmetic: past 2106 the 32-bit field wraps and still reads as the future
        let later = (1u64 << 32) + 100;
        assert_eq!(signed(&[400]).signatures_expire_in(later), Some(300));
        assert_eq!(signed(&[50]).signatures_expire_in(later), Some(0));
    }
}
