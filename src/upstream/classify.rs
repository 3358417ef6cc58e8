//! What an upstream reply means for hushd, as a pure function of the reply and the question:
//! an answer to cache and send, a cue to retry over TCP, an rcode that says this server could
//! not resolve this name (try another, but the server is fine), or a reply no server should
//! send (which counts against the server like a timeout).

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{RData, RecordType},
};

use crate::answer::Answer;

#[derive(Debug)]
pub enum Classified {
    Answer(Answer),
    /// TC=1: ask again over TCP.
    Truncated,
    /// SERVFAIL, REFUSED, NOTIMP, FORMERR...: this server would not or could not resolve this
    /// name. A validating resolver SERVFAILs a DNSSEC-broken name every time; the server itself
    /// is healthy.
    RcodeFailure(ResponseCode),
    /// Not a response to the question asked.
    Garbled(&'static str),
}

pub fn classify(reply: Message, asked: &Query) -> Classified {
    if reply.metadata.op_code != OpCode::Query {
        return Classified::Garbled("not a standard query response");
    }
    if !answers_question(&reply, asked) {
        return Classified::Garbled("not an answer to the question asked");
    }
    if reply.metadata.truncation {
        return Classified::Truncated;
    }
    match reply.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {
            Classified::Answer(answer_of(reply, asked.query_type()))
        }
        rcode => Classified::RcodeFailure(rcode),
    }
}

/// The reply is a response to exactly the question asked (`Name`'s equality ignores case).
pub fn answers_question(reply: &Message, asked: &Query) -> bool {
    reply.metadata.message_type == MessageType::Response
        && reply.queries.len() == 1
        && reply.queries[0].query_type() == asked.query_type()
        && reply.queries[0].query_class() == asked.query_class()
        && reply.queries[0].name() == asked.name()
}

/// A NOERROR or NXDOMAIN reply as an `Answer`, with the TTL it may be reused for.
fn answer_of(reply: Message, qtype: RecordType) -> Answer {
    let rcode = reply.metadata.response_code;
    let authentic_data = reply.metadata.authentic_data;
    // A CNAME chain that ends in no data (or no name) is a negative answer for the question:
    // it lives no longer than the negative TTL, nor than any link of the chain.
    let has_data = reply
        .answers
        .iter()
        .any(|r| r.record_type() == qtype || qtype == RecordType::CNAME);
    let ttl = if rcode == ResponseCode::NXDomain || !has_data {
        // RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM); none without an SOA
        let negative = reply.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        });
        let chain = reply.answers.iter().map(|r| r.ttl).min();
        negative.map(|n| chain.map_or(n, |c| c.min(n)))
    } else {
        reply.answers.iter().map(|r| r.ttl).min()
    };
    Answer {
        rcode,
        answers: reply.answers,
        authorities: reply.authorities,
        additionals: reply.additionals,
        ttl,
        // as the server said; `Upstream` clears it for a server not trusted to say it
        authentic_data,
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr};

    use hickory_proto::rr::{
        Name, Record,
        rdata::{A, CNAME, SOA},
    };

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn asked(qtype: RecordType) -> Query {
        Query::query(name("www.example."), qtype)
    }

    fn reply(rcode: ResponseCode, qtype: RecordType) -> Message {
        let mut m = Message::response(7, OpCode::Query);
        m.metadata.response_code = rcode;
        m.add_query(asked(qtype));
        m
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        Record::from_rdata(
            name("example."),
            ttl,
            RData::SOA(SOA::new(
                name("ns.example."),
                name("admin.example."),
                1,
                3600,
                600,
                86400,
                minimum,
            )),
        )
    }

    fn cname(from: &str, to: &str, ttl: u32) -> Record {
        Record::from_rdata(name(from), ttl, RData::CNAME(CNAME(name(to))))
    }

    fn a(owner: &str, ttl: u32) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))))
    }

    fn answer(c: Classified) -> Answer {
        match c {
            Classified::Answer(a) => a,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn a_positive_answer_lives_as_long_as_its_shortest_record() {
        let mut m = reply(ResponseCode::NoError, RecordType::A);
        m.add_answer(cname("www.example.", "t.example.", 300));
        m.add_answer(a("t.example.", 60));
        let got = answer(classify(m, &asked(RecordType::A)));
        assert_eq!(got.ttl, Some(60));
        assert_eq!(got.answers.len(), 2);
    }

    #[test]
    fn negative_answers_live_for_the_soa_negative_ttl_and_need_an_soa() {
        let mut m = reply(ResponseCode::NXDomain, RecordType::A);
        m.add_authority(soa(900, 60));
        assert_eq!(answer(classify(m, &asked(RecordType::A))).ttl, Some(60));
        let mut m = reply(ResponseCode::NoError, RecordType::MX);
        m.add_authority(soa(30, 60));
        assert_eq!(answer(classify(m, &asked(RecordType::MX))).ttl, Some(30));
        let m = reply(ResponseCode::NoError, RecordType::MX);
        assert_eq!(answer(classify(m, &asked(RecordType::MX))).ttl, None);
    }

    #[test]
    fn a_cname_chain_to_no_data_lives_for_the_shorter_of_chain_and_negative_ttl() {
        let chain = |cname_ttl, rcode| {
            let mut m = reply(rcode, RecordType::A);
            m.add_answer(cname("www.example.", "t.example.", cname_ttl));
            m.add_authority(soa(300, 2));
            answer(classify(m, &asked(RecordType::A))).ttl
        };
        assert_eq!(chain(300, ResponseCode::NoError), Some(2));
        assert_eq!(chain(1, ResponseCode::NoError), Some(1));
        assert_eq!(chain(300, ResponseCode::NXDomain), Some(2));
        // without an SOA the end of the chain says nothing about how long it holds
        let mut m = reply(ResponseCode::NoError, RecordType::A);
        m.add_answer(cname("www.example.", "t.example.", 300));
        assert_eq!(answer(classify(m, &asked(RecordType::A))).ttl, None);
        // asked for the CNAME itself, the CNAME is the data
        let mut m = reply(ResponseCode::NoError, RecordType::CNAME);
        m.add_answer(cname("www.example.", "t.example.", 300));
        m.add_authority(soa(300, 2));
        assert_eq!(
            answer(classify(m, &asked(RecordType::CNAME))).ttl,
            Some(300)
        );
    }

    #[test]
    fn failure_rcodes_are_failures_of_the_name_not_of_the_server() {
        for rcode in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::NotImp,
            ResponseCode::FormErr,
        ] {
            let got = classify(reply(rcode, RecordType::A), &asked(RecordType::A));
            assert!(
                matches!(got, Classified::RcodeFailure(r) if r == rcode),
                "{rcode}: {got:?}"
            );
        }
    }

    #[test]
    fn truncated_replies_ask_for_tcp() {
        let mut m = reply(ResponseCode::NoError, RecordType::A);
        m.metadata.truncation = true;
        assert!(matches!(
            classify(m, &asked(RecordType::A)),
            Classified::Truncated
        ));
    }

    #[test]
    fn replies_to_another_question_or_queries_are_garbled() {
        let mut other = Message::response(7, OpCode::Query);
        other.add_query(Query::query(name("other.example."), RecordType::A));
        assert!(matches!(
            classify(other, &asked(RecordType::A)),
            Classified::Garbled(_)
        ));
        let wrong_type = reply(ResponseCode::NoError, RecordType::AAAA);
        assert!(matches!(
            classify(wrong_type, &asked(RecordType::A)),
            Classified::Garbled(_)
        ));
        let mut not_a_response = reply(ResponseCode::NoError, RecordType::A);
        not_a_response.metadata.message_type = MessageType::Query;
        assert!(matches!(
            classify(not_a_response, &asked(RecordType::A)),
            Classified::Garbled(_)
        ));
        let mut no_question = Message::response(7, OpCode::Query);
        no_question.metadata.response_code = ResponseCode::ServFail;
        assert!(matches!(
            classify(no_question, &asked(RecordType::A)),
            Classified::Garbled(_)
        ));
    }
}
