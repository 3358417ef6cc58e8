//! The UDP cache-hit path. Most queries a home or office network sends are repeats the cache
//! answers, and for those hickory's `Request::from_bytes` (a copy of the datagram, every section
//! decoded into owned parts) cost more than the answer itself. Here a plain query is read in
//! place with hickory's own decoders, piece by piece: the header, the one question (its bytes
//! kept to echo the client's letter case), the OPT record if any; and a cache hit is written
//! straight from the cache's wire form (`Hit::write_wire`).
//!
//! Anything unusual (another opcode, several questions, records in the answer or authority
//! section, more than one additional record, a question `question_is_plain` rejects, a class
//! other than IN, a zone transfer, EDNS above version 0, trailing bytes) is left untouched to
//! the full path in `udp::process`. Once the path has admitted a query (rate limit) it finishes
//! it, so each query is admitted, decided and counted exactly once, with the full path's own
//! parts: a block, a refusal or a hit too big for the client is encoded by hickory (with the
//! question read again as `Queries`, all its encoder needs), and a miss builds the `Request` the
//! forwarding task takes.

use std::net::SocketAddr;

use hickory_net::xfer::Protocol;
use hickory_proto::{
    op::{Edns, Header, MessageType, Metadata, OpCode, Query},
    rr::{DNSClass, LowerName, RData, Record, RecordType},
    serialize::binary::{BinDecodable, BinDecoder},
};
use hickory_server::{server::Request, zone_handler::Queries};

use crate::{
    evidence::querylog::{Answers, Trace},
    handler::{Answered, Blocked, QueryHandler, Step, encode_for, slip_reply, write_hit},
    limits::{Admit, Transport},
    metrics::Outcome,
    reply::Reply,
    udp::{Action, respond},
    wire::{formerr_for, question_is_plain},
};

/// A query the hit path can take, read from a datagram without copying it.
#[derive(Debug)]
pub struct PlainQuery<'a> {
    pub metadata: Metadata,
    pub name: LowerName,
    pub qtype: RecordType,
    /// The question's own bytes (name, type, class), echoed in the reply.
    pub question: &'a [u8],
    pub edns: Option<Edns>,
}

/// Reads `datagram` as a plain query; `None` for anything the full path must judge.
pub fn read(datagram: &[u8]) -> Option<PlainQuery<'_>> {
    let mut decoder = BinDecoder::new(datagram);
    let Header { metadata, counts } = Header::read(&mut decoder).ok()?;
    if metadata.message_type != MessageType::Query
        || metadata.op_code != OpCode::Query
        || counts.queries != 1
        || counts.answers != 0
        || counts.authorities != 0
        || counts.additionals > 1
    {
        return None;
    }
    let start = decoder.index();
    let query = Query::read(&mut decoder).ok()?;
    let question = datagram.get(start..decoder.index())?;
    let qtype = query.query_type();
    if !question_is_plain(question)
        || query.query_class() != DNSClass::IN
        || matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT)
    {
        return None;
    }
    let edns = match counts.additionals {
        0 => None,
        _ => {
            let record = Record::read(&mut decoder).ok()?;
            if !matches!(record.data, RData::OPT(_) | RData::Update0(RecordType::OPT)) {
                return None; // TSIG, or some record a query has no business sending
            }
            let edns = Edns::from(&record);
            if edns.version() != 0 {
                return None; // BADVERS, from the full path
            }
            Some(edns)
        }
    };
    if !decoder.is_empty() {
        return None;
    }
    Some(PlainQuery {
        metadata,
        name: LowerName::new(query.name()),
        qtype,
        question,
        edns,
    })
}

/// Answers `datagram` if it is a plain query (see the module), writing any reply to `out`;
/// `None` leaves it, untouched and not yet admitted, to the full path.
pub fn answer(
    handler: &QueryHandler,
    datagram: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) -> Option<Action> {
    let query = read(datagram)?;
    // Admission first, as on the full path: the rate limit, then the policy's client check.
    match handler.limiter.admit(src.ip(), Transport::Udp) {
        Admit::Yes => {}
        Admit::Drop => {
            handler.metrics.limited("ratelimit");
            return Some(Action::Drop);
        }
        Admit::Slip => {
            handler.metrics.limited("ratelimit");
            let reply = slip_reply(&query.metadata, query.edns.as_ref());
            return Some(reply_to(datagram, &reply, out));
        }
    }
    let mut trace = handler.trace(src.ip(), Protocol::Udp, &query.name, query.qtype);
    let step = handler.answer_question(
        &query.metadata,
        query.edns.as_ref(),
        src.ip(),
        &query.name,
        query.qtype,
        &mut trace,
    );
    let answered = match step {
        Step::Cached(hit, qtype) => {
            let request_edns = query.edns.as_ref();
            if write_hit(&hit, &query.metadata, request_edns, query.question, out) {
                handler.metrics.query(Protocol::Udp, qtype, Outcome::Cached);
                handler.metrics.response(hit.rcode());
                handler.log(trace, Outcome::Cached, hit.rcode(), Answers::Hit(hit));
                return Some(Action::Send);
            }
            // too big for the client: built record by record, then truncated
            let reply = Reply::forwarded(&query.metadata, request_edns, qtype, hit.answer());
            Answered {
                reply,
                outcome: Outcome::Cached,
                qtype,
            }
        }
        Step::Blocked(blocked) => return Some(send_block(handler, *blocked, datagram, out, trace)),
        Step::Answered(answered) => answered,
        // The forwarding task needs hickory's `Request`; decoding it costs little beside the
        // round trip upstream.
        Step::Forward => {
            return Some(
                match Request::from_bytes(datagram.to_vec(), src, Protocol::Udp) {
                    Ok(request) => respond(handler, Box::new(request), Step::Forward, out, trace),
                    Err(_) => formerr(datagram, out),
                },
            );
        }
    };
    let rcode = answered.reply.metadata.response_code;
    handler
        .metrics
        .query(Protocol::Udp, answered.qtype, answered.outcome);
    handler.metrics.response(rcode);
    let action = reply_to(datagram, &answered.reply, out);
    handler.log(
        trace,
        answered.outcome,
        rcode,
        Answers::Reply(answered.reply),
    );
    Some(action)
}

/// A name's block reply: the one sent before to the same request bytes (`block_replies`), or
/// made, sent and kept. The `Reply` itself is made only when there is none kept or the query
/// log wants its answers.
fn send_block(
    handler: &QueryHandler,
    blocked: Blocked,
    datagram: &[u8],
    out: &mut Vec<u8>,
    trace: Trace,
) -> Action {
    handler
        .metrics
        .query(Protocol::Udp, blocked.qtype, Outcome::Blocked);
    handler.metrics.response(blocked.rcode());
    let decided = blocked.decided;
    let kept = handler.block_replies.write(decided, datagram, out);
    if kept && !trace.is_on() {
        return Action::Send;
    }
    let answered = blocked.into_answered();
    let action = if kept {
        Action::Send
    } else {
        let action = reply_to(datagram, &answered.reply, out);
        if let Action::Send = action {
            handler.block_replies.keep(decided, datagram, out);
        }
        action
    };
    let rcode = answered.reply.metadata.response_code;
    handler.log(
        trace,
        Outcome::Blocked,
        rcode,
        Answers::Reply(answered.reply),
    );
    action
}

/// Encodes `reply` as the full path does, with the question read again as hickory's `Queries`
/// (all of a request its encoder needs). The datagram already read as a plain query, so that
/// does not fail; if it did, the client gets the full path's FORMERR.
fn reply_to(datagram: &[u8], reply: &Reply, out: &mut Vec<u8>) -> Action {
    let mut decoder = BinDecoder::new(datagram);
    let queries = Header::read(&mut decoder)
        .ok()
        .and_then(|_| Queries::read(&mut decoder, 1).ok());
    match queries {
        Some(queries) => {
            encode_for(&queries, Protocol::Udp, reply, out);
            Action::Send
        }
        None => formerr(datagram, out),
    }
}

fn formerr(datagram: &[u8], out: &mut Vec<u8>) -> Action {
    match formerr_for(datagram) {
        Some(reply) => {
            *out = reply;
            Action::Send
        }
        None => Action::Drop,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        path::{Path, PathBuf},
        sync::Arc,
    };

    use arc_swap::ArcSwap;
    use hickory_proto::{
        op::{Message, ResponseCode},
        rr::{Name, rdata::A},
    };

    use super::*;
    use crate::{
        answer::Answer,
        config::Config,
        lists::{Action as ListAction, ListFile},
        metrics::Metrics,
        policy::Policy,
        udp::process_full,
    };

    /// A handler with a block list and a few cached answers; its upstream is never asked.
    async fn handler(limits: &str) -> QueryHandler {
        handler_with("", limits).await
    }

    /// `handler`, with `server` added to its `[server]` section.
    async fn handler_with(server: &str, limits: &str) -> QueryHandler {
        let config = Config::parse(
            Path::new("/test/hushd.toml"),
            &format!(
                "[server]\nallow_clients = [\"127.0.0.0/8\"]\n{server}\n[upstream]\nservers = [\"127.0.0.1:9\"]\n[limits]\n{limits}\n"
            ),
        )
        .unwrap();
        let list = ListFile::inline(
            PathBuf::from("/test/telemetry.toml"),
            ListAction::Block,
            &["tracking.example"],
        );
        let policy = Policy::build(&config, vec![list]).unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let h = QueryHandler::new(&config, Arc::new(ArcSwap::from_pointee(policy)), metrics)
            .await
            .unwrap();
        let cache = |name: &str, qtype, records: u8| {
            let owner = Name::from_ascii(name).unwrap();
            let answer = Answer {
                rcode: ResponseCode::NoError,
                answers: (0..records)
                    .map(|i| Record::from_rdata(owner.clone(), 300, RData::A(A::new(192, 0, 2, i))))
                    .collect(),
                authorities: vec![],
                additionals: vec![],
                ttl: Some(300),
                authentic_data: false,
            };
            h.cache
                .insert(LowerName::new(&owner), qtype, false, &answer);
        };
        cache("www.example.", RecordType::A, 1);
        // a signed answer from a trusted upstream: an RRSIG for DO clients, AD for those asking
        let owner = Name::from_ascii("signed.example.").unwrap();
        let expiration = u32::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 86_400,
        )
        .unwrap();
        let signed = Answer {
            rcode: ResponseCode::NoError,
            answers: vec![
                Record::from_rdata(owner.clone(), 300, RData::A(A::new(192, 0, 2, 9))),
                crate::answer::test_rrsig(&owner, RecordType::A, expiration),
            ],
            authorities: vec![],
            additionals: vec![],
            ttl: Some(300),
            authentic_data: true,
        };
        h.cache
            .insert(LowerName::new(&owner), RecordType::A, false, &signed);
        // 40 addresses: 40 * 16 bytes, more than 512 (no EDNS) and than a 512-byte EDNS client
        cache("big.example.", RecordType::A, 40);
        h
    }

    /// A query for `name` as a stub resolver sends it, with an OPT record when `edns` is set.
    fn query(name: &str, qtype: RecordType, edns: Option<(u16, u8)>) -> Vec<u8> {
        dnssec_query(name, qtype, edns, Flags::default())
    }

    /// The DNSSEC bits of a query: DO (in the OPT record), AD and CD (in the header).
    #[derive(Default, Clone, Copy, Debug)]
    struct Flags {
        dnssec_ok: bool,
        ad: bool,
        cd: bool,
    }

    /// `query` with the DNSSEC bits of `flags`.
    fn dnssec_query(
        name: &str,
        qtype: RecordType,
        edns: Option<(u16, u8)>,
        flags: Flags,
    ) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.metadata.authentic_data = flags.ad;
        m.metadata.checking_disabled = flags.cd;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some((payload, version)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            e.set_version(version);
            e.set_dnssec_ok(flags.dnssec_ok);
            m.edns = Some(e);
        }
        m.to_vec().unwrap()
    }

    const CLIENT: &str = "127.0.0.1:53000";

    /// Runs `datagrams` through the hit path on one handler and through the full path alone on
    /// another, and checks that both sent the same bytes and counted the same.
    async fn same_as_full_path(limits: &str, src: &str, datagrams: &[Vec<u8>]) -> usize {
        same_as_full_path_with("", limits, src, datagrams).await
    }

    /// `same_as_full_path` with `server` added to both handlers' `[server]` section.
    async fn same_as_full_path_with(
        server: &str,
        limits: &str,
        src: &str,
        datagrams: &[Vec<u8>],
    ) -> usize {
        let (fast, full) = (
            handler_with(server, limits).await,
            handler_with(server, limits).await,
        );
        let src: SocketAddr = src.parse().unwrap();
        let mut taken = 0;
        for d in datagrams {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let fast_action = answer(&fast, d, src, &mut a);
            taken += usize::from(fast_action.is_some());
            let fast_action = fast_action.unwrap_or_else(|| process_full(&fast, d, src, &mut a));
            let full_action = process_full(&full, d, src, &mut b);
            let kind = |x: &Action| match x {
                Action::Drop => "drop",
                Action::Send => "send",
                Action::Forward(..) => "forward",
            };
            assert_eq!(kind(&fast_action), kind(&full_action), "{d:02x?}");
            if let Action::Send = fast_action {
                assert_eq!(a, b, "reply to {d:02x?}");
            }
        }
        let text = |h: &QueryHandler| String::from_utf8(h.metrics.render()).unwrap();
        assert_eq!(
            text(&fast),
            text(&full),
            "the hit path counts as the full path does"
        );
        if !limits.is_empty() {
            assert!(text(&fast).contains("hushd_limited_total{reason=\"ratelimit\"}"));
        }
        taken
    }

    #[tokio::test]
    async fn replies_and_counts_are_the_full_paths() {
        let mut datagrams = Vec::new();
        for name in [
            "www.example.",
            "WwW.ExAmPlE.",
            "big.example.",
            "miss.example.",
        ] {
            for edns in [
                None,
                Some((4096, 0)),
                Some((1232, 0)),
                Some((512, 0)),
                Some((100, 0)),
            ] {
                datagrams.push(query(name, RecordType::A, edns));
            }
            datagrams.push(query(name, RecordType::AAAA, None));
        }
        for name in ["tracking.example.", "A.Tracking.Example."] {
            datagrams.push(query(name, RecordType::A, Some((1232, 0))));
            datagrams.push(query(name, RecordType::A, None));
        }
        datagrams.push(query("www.example.", RecordType::ANY, None));
        let taken = same_as_full_path("", CLIENT, &datagrams).await;
        assert_eq!(
            taken,
            datagrams.len(),
            "all plain queries take the hit path"
        );
        // a client outside allow_clients is refused the same way
        let taken = same_as_full_path("", "192.0.2.7:53000", &datagrams[..3]).await;
        assert_eq!(taken, 3);
    }

    /// A block reply sent again from `block_replies` is the full path's for the same request
    /// (its ID, flags, case and EDNS), and a new policy never gets a reply the old one made.
    #[tokio::test]
    async fn kept_block_replies_are_the_full_paths_and_die_with_their_policy() {
        let (fast, full) = (handler("").await, handler("").await);
        let src: SocketAddr = CLIENT.parse().unwrap();
        let with_id = |mut d: Vec<u8>, id: u16| {
            d[..2].copy_from_slice(&id.to_be_bytes());
            d
        };
        let mut variants = Vec::new();
        for name in ["tracking.example.", "A.Tracking.Example."] {
            for edns in [None, Some((1232, 0))] {
                for flags in [
                    Flags::default(),
                    Flags {
                        dnssec_ok: true,
                        cd: true,
                        ..Flags::default()
                    },
                ] {
                    variants.push(dnssec_query(name, RecordType::A, edns, flags));
                }
            }
            variants.push(query(name, RecordType::AAAA, None));
        }
        for (i, d) in variants.iter().enumerate() {
            for id in [7, 4242, 65535] {
                let d = with_id(d.clone(), id);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                assert!(matches!(answer(&fast, &d, src, &mut a), Some(Action::Send)));
                assert!(matches!(process_full(&full, &d, src, &mut b), Action::Send));
                assert_eq!(a, b, "variant {i}, id {id}");
            }
        }
        assert_eq!(
            fast.block_replies.len(),
            variants.len(),
            "one kept a request"
        );
        let text = |h: &QueryHandler| String::from_utf8(h.metrics.render()).unwrap();
        assert_eq!(
            text(&fast),
            text(&full),
            "a kept reply counts as a made one"
        );

        // the same list, now answering 0.0.0.0: a new policy, so the kept NXDOMAIN is not sent
        let config = Config::parse(
            Path::new("/test/hushd.toml"),
            "[server]\nallow_clients = [\"127.0.0.0/8\"]\nblock_response = \"null\"\n[upstream]\nservers = [\"127.0.0.1:9\"]\n",
        )
        .unwrap();
        let list = || {
            ListFile::inline(
                PathBuf::from("/test/telemetry.toml"),
                ListAction::Block,
                &["tracking.example"],
            )
        };
        fast.policy
            .store(Arc::new(Policy::build(&config, vec![list()]).unwrap()));
        full.policy
            .store(Arc::new(Policy::build(&config, vec![list()]).unwrap()));
        let d = with_id(variants[0].clone(), 9);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        answer(&fast, &d, src, &mut a);
        process_full(&full, &d, src, &mut b);
        assert_eq!(a, b);
        let reply = Message::from_vec(&a).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1, "{reply:?}");
    }

    /// The bypass-defence answers (NXDOMAIN and NODATA, with an SOA and, for the canaries, an
    /// EDE) are the full path's byte for byte, with EDNS and without, in the client's case; a
    /// name beside them, or any of them with its toggle off, goes upstream on both paths.
    #[tokio::test]
    async fn bypass_answers_are_the_full_paths() {
        let answered = [
            ("use-application-dns.net.", RecordType::A),
            ("Use-Application-DNS.net.", RecordType::AAAA),
            ("use-application-dns.net.", RecordType::HTTPS),
            ("use-application-dns.net.", RecordType::ANY),
            ("mask.icloud.com.", RecordType::A),
            ("MASK-H2.icloud.com.", RecordType::HTTPS),
            ("_dns.resolver.arpa.", RecordType::SVCB),
            ("resolver.arpa.", RecordType::SOA),
        ];
        let mut datagrams = Vec::new();
        for (name, qtype) in answered {
            datagrams.push(query(name, qtype, None));
            datagrams.push(query(name, qtype, Some((1232, 0))));
        }
        let taken = same_as_full_path("", CLIENT, &datagrams).await;
        assert_eq!(taken, datagrams.len(), "all take the hit path");
        // the replies are hushd's own: nothing went upstream, each is counted as bypass
        let h = handler("").await;
        let mut out = Vec::new();
        for d in &datagrams {
            assert!(matches!(
                answer(&h, d, CLIENT.parse().unwrap(), &mut out),
                Some(Action::Send)
            ));
            let reply = Message::from_vec(&out).unwrap();
            assert!(reply.answers.is_empty(), "{reply:?}");
            assert_eq!(reply.authorities.len(), 1);
        }
        let text = String::from_utf8(h.metrics.render()).unwrap();
        for (toggle, n) in [
            ("firefox_canary", 8),
            ("icloud_private_relay", 4),
            ("resolver_arpa", 4),
        ] {
            let series = format!("hushd_bypass_answers_total{{toggle=\"{toggle}\"}} {n}\n");
            assert!(text.contains(&series), "{series} in\n{text}");
        }

        let forwarded = [
            query("www.use-application-dns.net.", RecordType::A, None),
            query("mask-api.icloud.com.", RecordType::A, None),
        ];
        same_as_full_path("", CLIENT, &forwarded).await;
        let off = "firefox_canary = false\nicloud_private_relay = false\nresolver_arpa = false";
        same_as_full_path_with(off, "", CLIENT, &datagrams).await;
        let h = handler_with(off, "").await;
        for d in forwarded.iter().chain(&datagrams) {
            let action = answer(&h, d, CLIENT.parse().unwrap(), &mut out);
            let any = Message::from_vec(d).unwrap().queries[0].query_type() == RecordType::ANY;
            // ANY gets its RFC 8482 answer, as any other name does
            assert!(
                matches!(action, Some(Action::Forward(..))) || any,
                "{d:02x?}"
            );
        }
    }

    /// Signed answers, blocked names and misses, asked with every mix of DO, AD and CD: the hit
    /// path's replies are the full path's byte for byte, and they say what RFC 4035 and 6840
    /// ask: RRSIGs and DO only for DO, AD only for AD or DO and never on a block, a CD query
    /// never answered from what a query without CD cached.
    #[tokio::test]
    async fn dnssec_bits_are_the_full_paths_and_follow_the_rfcs() {
        let mut datagrams = Vec::new();
        let mut asked = Vec::new();
        for name in ["signed.example.", "www.example.", "tracking.example."] {
            for (dnssec_ok, ad, cd) in [
                (false, false, false),
                (true, false, false),
                (false, true, false),
                (true, true, false),
                (true, false, true),
            ] {
                let flags = Flags { dnssec_ok, ad, cd };
                datagrams.push(dnssec_query(name, RecordType::A, Some((1232, 0)), flags));
                asked.push((name, flags));
            }
        }
        let taken = same_as_full_path("", CLIENT, &datagrams).await;
        assert_eq!(taken, datagrams.len());

        let h = handler("").await;
        let mut out = Vec::new();
        for (d, (name, flags)) in datagrams.iter().zip(asked) {
            let action = answer(&h, d, CLIENT.parse().unwrap(), &mut out).unwrap();
            if flags.cd && name != "tracking.example." {
                // cached without CD: a CD query goes upstream for its own answer
                assert!(matches!(action, Action::Forward(..)), "{name} {flags:?}");
                continue;
            }
            let reply = Message::from_vec(&out).unwrap();
            let sigs = reply
                .answers
                .iter()
                .filter(|r| r.record_type() == RecordType::RRSIG)
                .count();
            let signed = name == "signed.example.";
            assert_eq!(
                sigs,
                usize::from(signed && flags.dnssec_ok),
                "{name} {flags:?}"
            );
            assert_eq!(
                reply.metadata.authentic_data,
                signed && (flags.ad || flags.dnssec_ok),
                "{name} {flags:?}"
            );
            assert_eq!(reply.metadata.checking_disabled, flags.cd);
            assert_eq!(reply.edns.unwrap().flags().dnssec_ok, flags.dnssec_ok);
        }
    }

    #[tokio::test]
    async fn a_hit_is_answered_from_the_cache_wire_form_with_the_clients_case() {
        let h = handler("").await;
        let mut out = Vec::new();
        let d = query("WwW.ExAmPlE.", RecordType::A, Some((1232, 0)));
        assert!(matches!(
            answer(&h, &d, CLIENT.parse().unwrap(), &mut out),
            Some(Action::Send)
        ));
        let reply = Message::from_vec(&out).unwrap();
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(reply.queries[0].name().to_ascii(), "WwW.ExAmPlE.");
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(reply.edns.unwrap().max_payload(), 1232);
        // too big for a 512-byte client: the full path's truncated reply
        let d = query("big.example.", RecordType::A, None);
        answer(&h, &d, CLIENT.parse().unwrap(), &mut out).unwrap();
        assert!(Message::from_vec(&out).unwrap().metadata.truncation);
        assert!(out.len() <= 512);
    }

    #[tokio::test]
    async fn a_hit_on_this_path_has_its_destinations_at_hand() {
        let h = handler("").await;
        let d = query("WWW.example.", RecordType::A, None);
        let q = read(&d).unwrap();
        let client = CLIENT.parse::<SocketAddr>().unwrap().ip();
        let step = h.answer_question(
            &q.metadata,
            None,
            client,
            &q.name,
            q.qtype,
            &mut Trace::default(),
        );
        let Step::Cached(hit, _) = step else {
            panic!("www.example. is cached");
        };
        let addresses: Vec<_> = hit.addresses().collect();
        assert_eq!(addresses, [([192, 0, 2, 0].into(), 300)]);
        assert_eq!(hit.destinations().targets().count(), 0);
    }

    #[tokio::test]
    async fn the_rate_limit_applies_once_per_query() {
        let d = query("www.example.", RecordType::A, None);
        // 2 q/s, every second limited query slips (TC=1): both paths drop and slip alike
        let datagrams = vec![d; 12];
        let fast = same_as_full_path(
            "client_qps = 2\nslip = 2\nexempt_clients = []",
            CLIENT,
            &datagrams,
        )
        .await;
        assert_eq!(fast, 12);
    }

    #[test]
    fn unusual_queries_are_left_to_the_full_path() {
        let plain = query("www.example.", RecordType::A, None);
        assert!(read(&plain).is_some());
        assert!(read(&query("www.example.", RecordType::A, Some((1232, 0)))).is_some());
        // EDNS version 1: BADVERS from the full path
        assert!(read(&query("www.example.", RecordType::A, Some((1232, 1)))).is_none());
        assert!(read(&query("www.example.", RecordType::AXFR, None)).is_none());
        // two questions
        let mut m = Message::from_vec(&plain).unwrap();
        m.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
        assert!(read(&m.to_vec().unwrap()).is_none());
        // another opcode, another class, a response, trailing bytes, a cut question
        let mut notify = plain.clone();
        notify[2] |= 4 << 3;
        assert!(read(&notify).is_none());
        let mut chaos = plain.clone();
        let n = chaos.len();
        chaos[n - 1] = 3;
        assert!(read(&chaos).is_none());
        let mut response = plain.clone();
        response[2] |= 0x80;
        assert!(read(&response).is_none());
        let mut trailing = plain.clone();
        trailing.push(0);
        assert!(read(&trailing).is_none());
        assert!(read(&plain[..plain.len() - 2]).is_none());
        // a compression pointer in the question (into the header)
        let mut pointer = plain[..12].to_vec();
        pointer.extend_from_slice(b"\xc0\x00\x00\x01\x00\x01");
        assert!(read(&pointer).is_none());
    }
}
