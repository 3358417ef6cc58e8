//! The transports against the real binary: TCP pipelining, the rate limit over TCP, and what
//! gets no reply at all (admission comes before any answer, FORMERR included).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::RecordType,
};
use support::{Setup, list, query, udp_client, upstream::Upstream, wait_until};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// An A query for `name` with `id`, encoded.
fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.parse().unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// The same query with its question replaced by a compression pointer into the header.
fn pointer_question(id: u16) -> Vec<u8> {
    let mut bytes = query_bytes(id, "a.");
    bytes.splice(12..15, [0xc0, 0x00]);
    bytes
}

/// A header that promises a question, then a label running past the end: does not decode.
fn undecodable(id: u16) -> Vec<u8> {
    let mut bytes = query_bytes(id, "a.example.");
    bytes.truncate(15);
    bytes
}

fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(&(m.len() as u16).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

async fn tcp_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// The next message on `stream`, or `None` if none comes within `wait` (or it closed).
async fn read_message(stream: &mut TcpStream, wait: Duration) -> Option<Message> {
    let read = async {
        let len = stream.read_u16().await.ok()?;
        let mut reply = vec![0u8; usize::from(len)];
        stream.read_exact(&mut reply).await.ok()?;
        Message::from_vec(&reply).ok()
    };
    tokio::time::timeout(wait, read).await.ok()?
}

/// Every datagram that reaches `socket` within `wait`, decoded.
async fn replies_within(socket: &UdpSocket, wait: Duration) -> Vec<Message> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout_at(deadline.into(), socket.recv_from(&mut buf)).await
    {
        out.push(Message::from_vec(&buf[..n]).unwrap());
    }
    out
}

/// RFC 7766 §6.2.1.1: a slow upstream lookup first on a connection does not hold up the
/// blocked and cached answers asked after it; they arrive first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_tcp_queries_are_answered_as_they_are_ready() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.use_default_upstream_timeouts();
    setup.write_list("lab", &list("block", &["blocked.test"]));
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    query(&mut udp, "warm.example.", RecordType::A).await;

    let mut stream = tcp_from("127.0.0.1", hushd.dns).await;
    let mut messages = vec![query_bytes(1, "slow.example.")];
    for id in 2..=9u16 {
        let name = if id % 2 == 0 {
            "blocked.test."
        } else {
            "warm.example."
        };
        messages.push(query_bytes(id, name));
    }
    let started = Instant::now();
    stream.write_all(&framed(&messages)).await.unwrap();
    let mut order = Vec::new();
    while order.len() < messages.len() {
        let Some(reply) = read_message(&mut stream, Duration::from_secs(5)).await else {
            break;
        };
        order.push(reply.metadata.id);
    }
    let elapsed = started.elapsed();
    assert_eq!(order.len(), messages.len(), "answers: {order:?}");
    assert_eq!(
        order.last(),
        Some(&1),
        "the slow lookup held up the rest: {order:?}"
    );
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=9).collect::<Vec<u16>>());
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
}

/// One connection cannot make hushd take on unbounded work: of 40 pipelined slow lookups, at
/// most 16 are waiting for upstream at once (and more than one is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_has_a_bounded_number_of_queries_in_flight() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.use_default_upstream_timeouts();
    let hushd = setup.start();
    let mut stream = tcp_from("127.0.0.1", hushd.dns).await;
    let messages: Vec<Vec<u8>> = (0..40u16)
        .map(|id| query_bytes(id, &format!("slow.n{id}.example.")))
        .collect();
    stream.write_all(&framed(&messages)).await.unwrap();
    // well inside the first 1.5 s round
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut asked = up.seen.names();
    asked.sort();
    asked.dedup();
    assert!(
        (2..=16).contains(&asked.len()),
        "{} lookups upstream at once: {asked:?}",
        asked.len()
    );
    // and all of them are answered in the end
    let mut answered = 0;
    while answered < messages.len()
        && read_message(&mut stream, Duration::from_secs(5))
            .await
            .is_some()
    {
        answered += 1;
    }
    assert_eq!(answered, messages.len());
}

/// The per-client rate limit holds over TCP too: 400 pipelined queries from a client limited
/// to 50 a second are not all answered, and the rest are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_queries_count_against_the_client_rate_limit() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("lab", &list("block", &["blocked.test"]));
    // 127.0.0.2 is allowed (127.0.0.0/8) but not exempt (127.0.0.1/32, ::1)
    setup.append_config("[limits]\nclient_qps = 50");
    let hushd = setup.start();

    let mut stream = tcp_from("127.0.0.2", hushd.dns).await;
    let messages: Vec<Vec<u8>> = (0..400u16)
        .map(|id| query_bytes(id, "blocked.test."))
        .collect();
    stream.write_all(&framed(&messages)).await.unwrap();
    let mut answered = 0;
    // a limited query gets no answer: read until the answers stop
    while answered < messages.len()
        && read_message(&mut stream, Duration::from_secs(2))
            .await
            .is_some()
    {
        answered += 1;
    }
    assert!(
        (40..300).contains(&answered),
        "{answered} of 400 answered at client_qps = 50"
    );
    let limited = hushd
        .metric(r#"hushd_limited_total{reason="ratelimit"}"#)
        .unwrap_or(0.0);
    assert!(limited >= 100.0, "{limited} counted as rate limited");
}

/// The point of the TC=1 slip: a client whose UDP rate is used up (by itself, or by a spoofed
/// flood in its name) retries over TCP and is answered there, at its own TCP rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_limited_over_udp_is_answered_over_tcp() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("lab", &list("block", &["blocked.test"]));
    setup.append_config("[limits]\nclient_qps = 20");
    let hushd = setup.start();

    let udp = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for id in 0..400u16 {
        udp.send_to(&query_bytes(id, "blocked.test."), hushd.dns)
            .await
            .unwrap();
    }
    let limited = || {
        hushd
            .metric(r#"hushd_limited_total{reason="ratelimit"}"#)
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(5), || limited() >= 300.0),
        "{} UDP queries limited",
        limited()
    );

    let mut stream = tcp_from("127.0.0.2", hushd.dns).await;
    let messages: Vec<Vec<u8>> = (0..10u16)
        .map(|id| query_bytes(1000 + id, "blocked.test."))
        .collect();
    stream.write_all(&framed(&messages)).await.unwrap();
    for _ in 0..messages.len() {
        let reply = read_message(&mut stream, Duration::from_secs(3))
            .await
            .expect("a TCP retry went unanswered after the UDP rate was used up");
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    }
}

/// A question with a compression pointer gets FORMERR over TCP as over UDP, at once, and the
/// connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_question_with_a_compression_pointer_gets_formerr() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("lab", &list("block", &["blocked.test"]));
    let hushd = setup.start();
    let mut stream = tcp_from("127.0.0.1", hushd.dns).await;
    stream
        .write_all(&framed(&[pointer_question(7)]))
        .await
        .unwrap();
    let reply = read_message(&mut stream, Duration::from_secs(3))
        .await
        .expect("no reply to a pointer question");
    assert_eq!(reply.metadata.id, 7);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert!(reply.queries.is_empty());
    stream
        .write_all(&framed(&[query_bytes(8, "blocked.test.")]))
        .await
        .unwrap();
    let reply = read_message(&mut stream, Duration::from_secs(3))
        .await
        .expect("the connection stopped serving");
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}

/// No reply before admission: a source outside `allow_clients` gets REFUSED to a well-formed
/// query and nothing else, FORMERR included; a source over its rate gets nothing to a
/// malformed datagram (not even the TC=1 slip); a response is never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_replies_only_after_admission() {
    let up = Upstream::start().await;
    let setup = Setup::new(
        &[up.addr],
        "allow_clients = [\"127.0.0.1/32\", \"127.0.0.2/32\"]",
    );
    setup.write_list("lab", &list("block", &["blocked.test"]));
    // the outsider is exempt from the rate limit, so only allow_clients decides for it
    setup.append_config(
        "[limits]\nclient_qps = 1\nexempt_clients = [\"127.0.0.1/32\", \"127.0.0.3/32\"]",
    );
    let hushd = setup.start();
    let silence = Duration::from_millis(800);

    // outside allow_clients: malformed datagrams get nothing; a well-formed query REFUSED
    let outsider = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    for bytes in [undecodable(1), pointer_question(2)] {
        outsider.send_to(&bytes, hushd.dns).await.unwrap();
    }
    let replies = replies_within(&outsider, silence).await;
    assert!(replies.is_empty(), "outsider got {replies:?}");
    outsider
        .send_to(&query_bytes(3, "blocked.test."), hushd.dns)
        .await
        .unwrap();
    let replies = replies_within(&outsider, silence).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].metadata.id, 3);
    assert_eq!(replies[0].metadata.response_code, ResponseCode::Refused);

    // over its rate (1 a second, so the bucket stays empty for the rest of this part):
    // malformed datagrams get nothing, whichever of them the slip would have answered
    let limited = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for id in 10..13 {
        limited
            .send_to(&query_bytes(id, "blocked.test."), hushd.dns)
            .await
            .unwrap();
    }
    for id in 20..26 {
        let bytes = if id % 2 == 0 {
            undecodable(id)
        } else {
            pointer_question(id)
        };
        limited.send_to(&bytes, hushd.dns).await.unwrap();
    }
    let replies = replies_within(&limited, silence).await;
    let ids: Vec<u16> = replies.iter().map(|r| r.metadata.id).collect();
    assert!(ids.contains(&10), "the first query was answered: {ids:?}");
    assert!(
        ids.iter().all(|id| *id < 20),
        "malformed datagrams over the rate got replies: {ids:?}"
    );

    // a response (QR=1), from an allowed, exempt source: never answered
    let host = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut response = Message::from_vec(&query_bytes(30, "blocked.test.")).unwrap();
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    host.send_to(&response.to_vec().unwrap(), hushd.dns)
        .await
        .unwrap();
    let mut broken_response = undecodable(31);
    broken_response[2] |= 0x80;
    host.send_to(&broken_response, hushd.dns).await.unwrap();
    let replies = replies_within(&host, silence).await;
    assert!(replies.is_empty(), "responses were answered: {replies:?}");
    // while the same source's malformed query does get its FORMERR
    host.send_to(&undecodable(32), hushd.dns).await.unwrap();
    let replies = replies_within(&host, silence).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].metadata.response_code, ResponseCode::FormErr);
}
