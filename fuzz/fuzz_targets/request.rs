//! The request path, raw bytes in: `hushd::udp::process`, the very function hushd's UDP loop
//! runs on every datagram (decode, rate limit, policy, cache, reply encoding). Checks: no
//! panic; whatever hushd sends decodes as a DNS response with the query's ID; a reply to a
//! query without EDNS fits 512 bytes, and one with EDNS fits the size hushd offers.
#![no_main]

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
    metrics::Metrics,
    policy::{Action as ListAction, Policy, lists::ListFile},
    udp::{Action, process},
};
use libfuzzer_sys::fuzz_target;

struct State {
    runtime: tokio::runtime::Runtime,
    handler: QueryHandler,
}

static STATE: LazyLock<State> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // the upstream is never asked: process() stops at Action::Forward
    let config = Config::parse(
        Path::new("/fuzz/hushd.toml"),
        "[server]\nallow_clients = [\"127.0.0.0/8\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\n[limits]\nclient_qps = 0\n",
    )
    .unwrap();
    let list = |name: &str, action, domains: &[&str]| ListFile {
        name: name.into(),
        path: PathBuf::from(format!("/fuzz/{name}.toml")),
        action,
        description: None,
        block_response: None,
        domains: domains.iter().map(ToString::to_string).collect(),
        domains_file: None,
    };
    let policy = Policy::build(
        &config,
        vec![
            list("block", ListAction::Block, &["tracking.miui.com", "example.com"]),
            list("log", ListAction::Log, &["samsungads.com"]),
            list("allow", ListAction::Allow, &["ok.example.com"]),
        ],
    )
    .unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let handler = runtime
        .block_on(QueryHandler::new(&config, Arc::new(ArcSwap::from_pointee(policy)), metrics))
        .unwrap();
    // something in the cache, so hits (and their pre-encoded replies) are fuzzed too
    for name in ["a.", "cached.test.", "ok.example.com."] {
        let owner: LowerName = name.parse().unwrap();
        let answer = Answer {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(owner.clone().into(), 300, RData::A(A::new(192, 0, 2, 1)))],
            authorities: vec![],
            additionals: vec![],
            ttl: Some(300),
        };
        handler.cache.insert(owner, RecordType::A, &answer);
    }
    State { runtime, handler }
});

fuzz_target!(|data: &[u8]| {
    let state = &*STATE;
    let _guard = state.runtime.enter();
    let src: SocketAddr = "127.0.0.1:53000".parse().unwrap();
    let mut out = Vec::new();
    if let Action::Send = process(&state.handler, data, src, &mut out) {
        let reply = Message::from_vec(&out).expect("hushd sent a reply that does not decode");
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.metadata.id, u16::from_be_bytes([data[0], data[1]]));
        let limit = match Message::from_vec(data) {
            Ok(query) => query.edns.as_ref().map_or(512, |e| e.max_payload().clamp(512, 1232)),
            Err(_) => 512,
        };
        assert!(out.len() <= usize::from(limit), "{} bytes for a {limit}-byte client", out.len());
    }
});
