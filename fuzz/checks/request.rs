//! The request path, raw bytes in: `hushd::udp::process`, the very function hushd's UDP loop
//! runs on every datagram (decode, rate limit, policy, cache, reply encoding). Each input is
//! sent from three sources: an ordinary client, a client over its rate limit (`client_qps = 1`,
//! drained before every input) and a client outside `allow_clients`.
//!
//! Checks, for every source: no panic; whatever hushd sends decodes as a DNS response with the
//! query's ID; a reply to a query without EDNS fits 512 bytes, and one with EDNS fits the size
//! hushd offers; a datagram with QR=1 (a response) gets no reply at all and is not forwarded.
//! The limited client gets silence or an empty TC=1 reply, never an answer and never a
//! forwarded query; the client outside `allow_clients` gets silence or an error without
//! records, never an answer and never a forwarded query.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{LowerName, RData, Record, RecordType, rdata::A},
};
use hushd::{
    answer::Answer,
    config::Config,
    handler::QueryHandler,
    lists::{Action as ListAction, ListFile},
    metrics::Metrics,
    policy::Policy,
    udp::{Action, process},
};

struct State {
    runtime: tokio::runtime::Runtime,
    handler: QueryHandler,
}

static STATE: LazyLock<State> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // the upstream is never asked: process() stops at Action::Forward
    let config = Config::parse(
        Path::new("/fuzz/hushd.toml"),
        "[server]\nallow_clients = [\"127.0.0.0/8\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\n[limits]\nclient_qps = 1\nslip = 2\nexempt_clients = [\"127.0.0.1/32\", \"192.0.2.1/32\"]\n",
    )
    .unwrap();
    let list = |name: &str, action, domains: &[&str]| {
        ListFile::inline(PathBuf::from(format!("/fuzz/{name}.toml")), action, domains)
    };
    let policy = Policy::build(
        &config,
        vec![
            list(
                "block",
                ListAction::Block,
                &["tracking.miui.com", "example.com"],
            ),
            list("log", ListAction::Log, &["samsungads.com"]),
            list("allow", ListAction::Allow, &["ok.example.com"]),
        ],
    )
    .unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let handler = runtime
        .block_on(QueryHandler::new(
            &config,
            Arc::new(ArcSwap::from_pointee(policy)),
            metrics,
        ))
        .unwrap();
    // something in the cache, so hits (and their pre-encoded replies) are fuzzed too
    for name in ["a.", "cached.test.", "ok.example.com."] {
        let owner: LowerName = name.parse().unwrap();
        let answer = Answer {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(
                owner.clone().into(),
                300,
                RData::A(A::new(192, 0, 2, 1)),
            )],
            authorities: vec![],
            additionals: vec![],
            ttl: Some(300),
            authentic_data: true,
        };
        // with CD clear and set: both keys of the cache
        handler
            .cache
            .insert(owner.clone(), RecordType::A, false, &answer);
        handler.cache.insert(owner, RecordType::A, true, &answer);
    }
    State { runtime, handler }
});

/// An ordinary client (exempt from the rate limit).
const CLIENT: &str = "127.0.0.1:53000";
/// A client over its rate limit.
const LIMITED: &str = "127.0.0.2:53000";
/// A client outside `allow_clients` (exempt from the rate limit, so its queries reach the policy).
const OUTSIDE: &str = "192.0.2.1:53000";

/// A plain query, to use up the limited client's bucket.
const DRAIN: &[u8] = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";

/// One input: panics if hushd breaks a promise the module comment lists.
pub fn run(data: &[u8]) {
    let state = &*STATE;
    let _guard = state.runtime.enter();
    let is_response = data.len() > 2 && data[2] & 0x80 != 0;
    let mut out = Vec::new();

    let action = process(&state.handler, data, CLIENT.parse().unwrap(), &mut out);
    check(data, is_response, &action, &out);

    // Over the limit: whatever tokens the bucket gathered since the last input are used up.
    let limited: SocketAddr = LIMITED.parse().unwrap();
    let mut drained = 0;
    while drained < 8
        && !matches!(
            process(&state.handler, DRAIN, limited, &mut out),
            Action::Drop
        )
    {
        drained += 1;
    }
    out.clear();
    let action = process(&state.handler, data, limited, &mut out);
    check(data, is_response, &action, &out);
    // a slip (TC=1, nothing in it), or an error such as FORMERR for what does not decode
    check_not_served(&action, &out, true, "a limited client");

    out.clear();
    let action = process(&state.handler, data, OUTSIDE.parse().unwrap(), &mut out);
    check(data, is_response, &action, &out);
    check_not_served(&action, &out, false, "a client outside allow_clients");
}

/// A client hushd must not serve (over its rate, or outside `allow_clients`) is never forwarded
/// and gets no records: at most an error, or (`slip`) an empty TC=1 answer.
fn check_not_served(action: &Action, out: &[u8], slip: bool, who: &str) {
    assert!(
        !matches!(action, Action::Forward(..)),
        "{who}'s query forwarded"
    );
    if let Action::Send = action {
        let reply = Message::from_vec(out).unwrap();
        assert!(
            reply.answers.is_empty() && reply.authorities.is_empty(),
            "{reply:?}"
        );
        assert!(
            (slip && reply.metadata.truncation)
                || !matches!(
                    reply.metadata.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain
                ),
            "{who} got {reply:?}"
        );
    }
}

/// What holds for every source: responses are never answered, and a reply decodes, carries the
/// query's ID and fits the client's size.
fn check(data: &[u8], is_response: bool, action: &Action, out: &[u8]) {
    if is_response {
        assert!(
            matches!(action, Action::Drop),
            "a response (QR=1) was answered or forwarded"
        );
    }
    if let Action::Send = action {
        let reply = Message::from_vec(out).expect("hushd sent a reply that does not decode");
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.metadata.id, u16::from_be_bytes([data[0], data[1]]));
        let limit = match Message::from_vec(data) {
            Ok(query) => query
                .edns
                .as_ref()
                .map_or(512, |e| e.max_payload().clamp(512, 1232)),
            Err(_) => 512,
        };
        assert!(
            out.len() <= usize::from(limit),
            "{} bytes for a {limit}-byte client",
            out.len()
        );
    }
}
