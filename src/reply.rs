//! Pure builders of the replies hushd sends: blocked answers, forwarded and cached answers,
//! errors and the EDNS that goes with them. No I/O here; the handler sends what these build.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::LazyLock,
};

use hickory_proto::{
    op::{Edns, Metadata, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, HINFO, SOA, SVCB, opt::EdnsOption},
    },
};

use crate::{
    answer::Answer, config::BlockResponse, policy::bypass::BypassAnswer, wire::EDNS_PAYLOAD,
};

/// EDNS option code of an Extended DNS Error (RFC 8914).
const EDE_OPTION: u16 = 15;
/// RFC 8914 §4.16: "Blocked".
pub const EDE_BLOCKED: u16 = 15;

/// A reply, owned, ready to hand to hickory's `MessageResponseBuilder`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub metadata: Metadata,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    pub edns: Option<Edns>,
}

impl Reply {
    /// An empty reply to `request` with `rcode`: ID, opcode and RD copied, RA set.
    pub fn new(request: &Metadata, request_edns: Option<&Edns>, rcode: ResponseCode) -> Self {
        Self {
            metadata: response_metadata(request, rcode),
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            edns: request_edns.map(response_edns),
        }
    }

    /// The RCODE of a block reply in `mode`.
    pub fn block_rcode(mode: BlockResponse) -> ResponseCode {
        match mode {
            BlockResponse::Nxdomain => ResponseCode::NXDomain,
            BlockResponse::Null => ResponseCode::NoError,
            BlockResponse::Refused => ResponseCode::Refused,
        }
    }

    /// The answer to a lookup that a block list matched.
    pub fn blocked(
        request: &Metadata,
        request_edns: Option<&Edns>,
        qname: &Name,
        qtype: RecordType,
        mode: BlockResponse,
        list: &str,
        ttl: u32,
    ) -> Self {
        let mut reply = Self::new(request, request_edns, Self::block_rcode(mode));
        let null = match (mode, qtype) {
            (BlockResponse::Null, RecordType::A) => Some(RData::A(A(Ipv4Addr::UNSPECIFIED))),
            (BlockResponse::Null, RecordType::AAAA) => {
                Some(RData::AAAA(AAAA(Ipv6Addr::UNSPECIFIED)))
            }
            _ => None,
        };
        match (mode, null) {
            (_, Some(rdata)) => reply
                .answers
                .push(Record::from_rdata(qname.clone(), ttl, rdata)),
            // NXDOMAIN and NODATA carry an SOA so resolvers cache the "no" for `ttl` (RFC 2308).
            (BlockResponse::Nxdomain | BlockResponse::Null, None) => {
                reply.authorities.push(block_soa(qname, ttl))
            }
            (BlockResponse::Refused, None) => {}
        }
        reply.add_ede(EDE_BLOCKED, &format!("blocked by list {list}"));
        reply
    }

    /// hushd's own answer to a name devices ask before they bypass it (`policy::bypass`):
    /// NXDOMAIN or NODATA, each with the SOA a blocked name's negative answer carries, so
    /// resolvers behind hushd cache it for `ttl` (RFC 2308). The canaries' NXDOMAIN is a block
    /// by local policy and says so in an EDE naming the toggle; `resolver.arpa`'s NODATA is the
    /// ordinary answer of a locally served zone (RFC 9462 §4) and carries none.
    pub fn bypass(
        request: &Metadata,
        request_edns: Option<&Edns>,
        qname: &Name,
        answer: BypassAnswer,
        ttl: u32,
    ) -> Self {
        let mut reply = Self::new(request, request_edns, answer.rcode());
        reply.authorities.push(block_soa(qname, ttl));
        if answer.rcode() == ResponseCode::NXDomain {
            reply.add_ede(
                EDE_BLOCKED,
                &format!("answered by hushd ([server] {})", answer.toggle()),
            );
        }
        reply
    }

    /// hushd's designation of its own encrypted listeners (RFC 9462 DDR): the
    /// `_dns.resolver.arpa` SVCB records, kept by resolvers behind hushd for `ttl`.
    pub fn designated(
        request: &Metadata,
        request_edns: Option<&Edns>,
        qname: &Name,
        records: &[SVCB],
        ttl: u32,
    ) -> Self {
        let mut reply = Self::new(request, request_edns, ResponseCode::NoError);
        reply.answers = records
            .iter()
            .map(|svcb| Record::from_rdata(qname.clone(), ttl, RData::SVCB(svcb.clone())))
            .collect();
        reply
    }

    /// An upstream (or cached) answer, as the reply to `request` for `qtype`: without its
    /// RRSIG, NSEC and NSEC3 records unless the client set DO (RFC 4035 §3.2.1), and with AD
    /// only as `gives_ad` allows.
    pub fn forwarded(
        request: &Metadata,
        request_edns: Option<&Edns>,
        qtype: RecordType,
        answer: Answer,
    ) -> Self {
        let mut reply = Self::new(request, request_edns, answer.rcode);
        reply.metadata.authentic_data = gives_ad(request, request_edns, answer.authentic_data);
        let answer = match dnssec_ok(request_edns) {
            true => answer,
            false => answer.without_dnssec(qtype).unwrap_or(answer),
        };
        reply.answers = answer.answers;
        reply.authorities = answer.authorities;
        reply.additionals = answer.additionals;
        reply
    }

    /// RFC 8482 §4.2: answer ANY with one synthesized HINFO instead of everything there is, which
    /// is what makes ANY useful for amplification.
    pub fn minimal_any(request: &Metadata, request_edns: Option<&Edns>, qname: &Name) -> Self {
        let mut reply = Self::new(request, request_edns, ResponseCode::NoError);
        reply.answers.push(Record::from_rdata(
            qname.clone(),
            3600,
            RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
        ));
        reply
    }

    /// Adds an Extended DNS Error; only possible when the client spoke EDNS.
    pub fn add_ede(&mut self, code: u16, text: &str) {
        if let Some(edns) = &mut self.edns {
            let mut data = Vec::with_capacity(2 + text.len());
            data.extend_from_slice(&code.to_be_bytes());
            data.extend_from_slice(text.as_bytes());
            edns.options_mut()
                .insert(EdnsOption::Unknown(EDE_OPTION, data));
        }
    }
}

/// The header of a reply to `request`: ID, opcode and RD copied, QR and RA set.
pub fn response_metadata(request: &Metadata, rcode: ResponseCode) -> Metadata {
    let mut metadata = Metadata::response_from_request(request);
    metadata.recursion_available = true;
    metadata.authoritative = false;
    metadata.response_code = rcode;
    metadata
}

/// The OPT record of a response to a client that sent `request`. Its payload size also bounds
/// the UDP reply: hickory truncates (TC=1) anything bigger, so it is the smaller of what the client
/// can take and what hushd offers, never below 512 (RFC 6891 §6.2.5). DO is echoed (RFC 3225
/// §3), on every reply, hushd's own included: it says the reply was made for a DNSSEC-aware
/// client, not that it is signed.
pub fn response_edns(request: &Edns) -> Edns {
    let mut edns = Edns::new();
    edns.set_version(0);
    edns.set_max_payload(request.max_payload().clamp(512, EDNS_PAYLOAD));
    edns.set_dnssec_ok(request.flags().dnssec_ok);
    edns
}

/// The client set DO: it wants the DNSSEC records of an answer.
pub fn dnssec_ok(request_edns: Option<&Edns>) -> bool {
    request_edns.is_some_and(|e| e.flags().dnssec_ok)
}

/// The AD bit of a reply to `request` carrying an answer whose AD is `authentic`: set only when
/// the answer is upstream's, validated and from a trusted upstream (`authentic`: `Answer` and
/// `Hit` clear it otherwise, and hushd's own answers never pass here), and the client showed it
/// understands AD by setting AD or DO (RFC 6840 §5.7-5.8).
pub fn gives_ad(request: &Metadata, request_edns: Option<&Edns>, authentic: bool) -> bool {
    authentic && (request.authentic_data || dnssec_ok(request_edns))
}

/// A synthetic SOA for blocked names, owned by the blocked name itself.
fn block_soa(qname: &Name, ttl: u32) -> Record {
    // parsed once, not per blocked query
    static NAMES: LazyLock<(Name, Name)> = LazyLock::new(|| {
        let name = |s| Name::from_ascii(s).unwrap_or_else(|_| Name::root());
        (name("hushd.invalid."), name("blocked.hushd.invalid."))
    });
    let (mname, rname) = NAMES.clone();
    let soa = SOA::new(mname, rname, 1, 3600, 600, 86_400, ttl);
    Record::from_rdata(qname.clone(), ttl, RData::SOA(soa))
}

/// The code and text of an EDE option in `edns`, if any.
#[cfg(test)]
fn ede_of(edns: &Edns) -> Option<(u16, String)> {
    edns.options()
        .as_ref()
        .iter()
        .find_map(|(code, opt)| match opt {
            EdnsOption::Unknown(EDE_OPTION, data)
                if u16::from(*code) == EDE_OPTION && data.len() >= 2 =>
            {
                Some((
                    u16::from_be_bytes([data[0], data[1]]),
                    String::from_utf8_lossy(&data[2..]).into_owned(),
                ))
            }
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{MessageType, OpCode};

    use super::*;

    fn request() -> Metadata {
        let mut m = Metadata::new(4242, MessageType::Query, OpCode::Query);
        m.recursion_desired = true;
        m
    }

    fn client_edns(payload: u16) -> Edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e
    }

    fn name() -> Name {
        Name::from_ascii("a.tracking.miui.com.").unwrap()
    }

    #[test]
    fn nxdomain_block_names_the_list_and_carries_an_soa() {
        let r = Reply::blocked(
            &request(),
            Some(&client_edns(4096)),
            &name(),
            RecordType::A,
            BlockResponse::Nxdomain,
            "xiaomi",
            60,
        );
        assert_eq!(r.metadata.id, 4242);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.metadata.recursion_available && r.metadata.recursion_desired);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        let edns = r.edns.unwrap();
        assert_eq!(edns.max_payload(), EDNS_PAYLOAD);
        assert_eq!(
            ede_of(&edns),
            Some((EDE_BLOCKED, "blocked by list xiaomi".into()))
        );
    }

    #[test]
    fn null_block_answers_unspecified_addresses_and_nodata_otherwise() {
        let a = Reply::blocked(
            &request(),
            None,
            &name(),
            RecordType::A,
            BlockResponse::Null,
            "x",
            60,
        );
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::UNSPECIFIED)));
        assert!(a.edns.is_none(), "no OPT for a client that sent none");
        let aaaa = Reply::blocked(
            &request(),
            None,
            &name(),
            RecordType::AAAA,
            BlockResponse::Null,
            "x",
            60,
        );
        assert_eq!(
            aaaa.answers[0].data,
            RData::AAAA(AAAA(Ipv6Addr::UNSPECIFIED))
        );
        let mx = Reply::blocked(
            &request(),
            None,
            &name(),
            RecordType::MX,
            BlockResponse::Null,
            "x",
            60,
        );
        assert!(mx.answers.is_empty());
        assert_eq!(mx.authorities.len(), 1);
    }

    #[test]
    fn refused_block() {
        let r = Reply::blocked(
            &request(),
            Some(&client_edns(1232)),
            &name(),
            RecordType::A,
            BlockResponse::Refused,
            "x",
            60,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert!(r.answers.is_empty() && r.authorities.is_empty());
        assert!(ede_of(r.edns.as_ref().unwrap()).is_some());
    }

    #[test]
    fn bypass_answers_are_negative_with_an_soa_and_name_their_toggle() {
        let edns = client_edns(1232);
        let canary = Name::from_ascii("use-application-dns.net.").unwrap();
        let r = Reply::bypass(
            &request(),
            Some(&edns),
            &canary,
            BypassAnswer::FirefoxCanary,
            60,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(r.authorities[0].ttl, 60);
        assert_eq!(
            ede_of(r.edns.as_ref().unwrap()),
            Some((
                EDE_BLOCKED,
                "answered by hushd ([server] firefox_canary)".into()
            ))
        );
        let ddr = Name::from_ascii("_dns.resolver.arpa.").unwrap();
        let r = Reply::bypass(
            &request(),
            Some(&edns),
            &ddr,
            BypassAnswer::ResolverArpa,
            60,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities.len(), 1);
        assert_eq!(ede_of(r.edns.as_ref().unwrap()), None);
        // no EDNS from the client, none back
        let r = Reply::bypass(
            &request(),
            None,
            &canary,
            BypassAnswer::IcloudPrivateRelay,
            60,
        );
        assert!(r.edns.is_none());
    }

    #[test]
    fn response_payload_is_bounded_both_ways() {
        assert_eq!(response_edns(&client_edns(100)).max_payload(), 512);
        assert_eq!(response_edns(&client_edns(800)).max_payload(), 800);
        assert_eq!(
            response_edns(&client_edns(65000)).max_payload(),
            EDNS_PAYLOAD
        );
    }
}
