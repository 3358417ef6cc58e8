//! A small authoritative DNS server on loopback, written with hickory-server: the real upstream
//! hushd forwards to in the tests. Its answers are a fixed function of the question:
//!
//! - `nx.<anything>` and below: NXDOMAIN with an SOA
//! - `cname.<zone>`: CNAME to `target.<zone>`, plus target's A record
//! - `big.<zone>` TXT: enough TXT records to overflow a 512- or 1232-byte UDP answer
//! - `short.<zone>`: A 192.0.2.4 with a TTL of 1 s
//! - `ttl-N.<zone>` A: 192.0.2.1 with a TTL of N s
//! - `slow.<zone>`: A 192.0.2.3, after 1.5 s
//! - `servfail.<zone>`, `refused.<zone>`: SERVFAIL, REFUSED
//! - `cname-nodata.<zone>`: CNAME (TTL 300) to `nodata-target.<zone>`, which has no data:
//!   NOERROR with an SOA whose negative TTL is 2 s
//! - `tc.<zone>`: over UDP an empty answer with TC=1; over TCP only a CNAME to `tc-target.<zone>`
//!   (an incomplete chain: a client that chases it asks for `tc-target.<zone>`)
//! - A: 192.0.2.1; AAAA: 2001:db8::1; anything else: NODATA with an SOA
//!
//! `Upstream::answering(rcode)` starts one that answers everything with `rcode` instead, and
//! `answer_with` switches a running one to that; `set_authentic_data(true)` sets AD on every
//! reply from then on (as a validating resolver would); `set_silent(true)` makes it answer
//! nothing (a dead server behind a firewall: no ICMP error that would fail a lookup at once).
//! It records every name it is asked (and which came over TCP), so a test can tell what reached
//! upstream.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hickory_net::runtime::Time;
use hickory_proto::{
    op::{Header, HeaderCounts, Metadata, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, SOA, TXT},
    },
};
use hickory_server::{
    Server,
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};

pub const TTL: u32 = 300;

/// What the fixture was asked: names, the source ports UDP queries came from, and the names
/// asked over TCP.
#[derive(Clone, Default)]
pub struct Seen(
    Arc<Mutex<Vec<String>>>,
    Arc<Mutex<Vec<u16>>>,
    Arc<Mutex<Vec<String>>>,
);

impl Seen {
    /// How many times `name` was asked over TCP.
    pub fn tcp_count(&self, name: &str) -> usize {
        self.2
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// Every query, over either protocol.
    pub fn total(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn udp_source_ports(&self) -> Vec<u16> {
        self.1.lock().unwrap().clone()
    }

    pub fn names(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, name: &str) -> usize {
        self.names()
            .iter()
            .filter(|n| n.eq_ignore_ascii_case(name))
            .count()
    }
}

struct Zone {
    seen: Seen,
    /// Answer everything with this rcode.
    rcode: Arc<Mutex<Option<ResponseCode>>>,
    /// Set AD on every reply.
    authentic_data: Arc<AtomicBool>,
    /// Record queries, answer none.
    silent: Arc<AtomicBool>,
}

fn soa_for(name: &Name) -> Record {
    soa_with_negative_ttl(name, 60)
}

fn soa_with_negative_ttl(name: &Name, minimum: u32) -> Record {
    let zone = name.base_name();
    Record::from_rdata(
        zone,
        TTL,
        RData::SOA(SOA::new(
            Name::from_ascii("ns.fixture.").unwrap(),
            Name::from_ascii("admin.fixture.").unwrap(),
            1,
            3600,
            600,
            86400,
            minimum,
        )),
    )
}

#[async_trait::async_trait]
impl RequestHandler for Zone {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let info = request.request_info().unwrap();
        let name: Name = info.query.name().into();
        let qtype = info.query.query_type();
        let ascii = name.to_ascii();
        self.seen
            .0
            .lock()
            .unwrap()
            .push(ascii.trim_end_matches('.').to_string());
        let udp = request.protocol() == hickory_net::xfer::Protocol::Udp;
        if udp {
            self.seen.1.lock().unwrap().push(request.src().port());
        } else {
            self.seen
                .2
                .lock()
                .unwrap()
                .push(ascii.trim_end_matches('.').to_string());
        }

        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        meta.authentic_data = self.authentic_data.load(Ordering::Relaxed);
        if self.silent.load(Ordering::SeqCst) {
            return ResponseInfo::from(Header {
                metadata: meta,
                counts: HeaderCounts::default(),
            });
        }
        let mut answers = Vec::new();
        let mut soa = Vec::new();
        let first = name
            .iter()
            .next()
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase());
        let in_zone = |label: &str| {
            Name::from_ascii(label)
                .unwrap()
                .append_domain(&name.base_name())
                .unwrap()
        };
        let forced = *self.rcode.lock().unwrap();
        if let Some(rcode) = forced {
            meta.response_code = rcode;
        } else if first.as_deref() == Some("servfail") {
            meta.response_code = ResponseCode::ServFail;
        } else if first.as_deref() == Some("refused") {
            meta.response_code = ResponseCode::Refused;
        } else if first.as_deref() == Some("cname-nodata") {
            answers.push(Record::from_rdata(
                name.clone(),
                TTL,
                RData::CNAME(CNAME(in_zone("nodata-target"))),
            ));
            soa.push(soa_with_negative_ttl(&name, 2));
        } else if first.as_deref() == Some("tc") {
            if udp {
                meta.truncation = true;
            } else {
                answers.push(Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::CNAME(CNAME(in_zone("tc-target"))),
                ));
            }
        } else if name.iter().any(|l| l.eq_ignore_ascii_case(b"nx")) {
            meta.response_code = ResponseCode::NXDomain;
            soa.push(soa_for(&name));
        } else if first.as_deref() == Some("cname") {
            let target = Name::from_ascii("target")
                .unwrap()
                .append_domain(&name.base_name())
                .unwrap();
            answers.push(Record::from_rdata(
                name.clone(),
                TTL,
                RData::CNAME(CNAME(target.clone())),
            ));
            answers.push(Record::from_rdata(
                target,
                TTL,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 2))),
            ));
        } else if first.as_deref() == Some("big") && qtype == RecordType::TXT {
            for i in 0..30 {
                let text = format!("{i:02}-{}", "x".repeat(90));
                answers.push(Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::TXT(TXT::new(vec![text])),
                ));
            }
        } else if let Some(ip) = first
            .as_deref()
            .and_then(|l| l.strip_prefix("ip-"))
            .and_then(|dashed| dashed.replace('-', ".").parse::<Ipv4Addr>().ok())
        {
            // `ip-198-51-100-10.X`: an A record of that address (firewall tests)
            if qtype == RecordType::A {
                answers.push(Record::from_rdata(name.clone(), TTL, RData::A(A(ip))));
            } else {
                soa.push(soa_for(&name));
            }
        } else if first.as_deref() == Some("short") {
            answers.push(Record::from_rdata(
                name.clone(),
                1,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 4))),
            ));
        } else if let Some(ttl) = first
            .as_deref()
            .and_then(|l| l.strip_prefix("ttl-"))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|_| qtype == RecordType::A)
        {
            answers.push(Record::from_rdata(
                name.clone(),
                ttl,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
            ));
        } else if first.as_deref() == Some("slow") {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            answers.push(Record::from_rdata(
                name.clone(),
                TTL,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 3))),
            ));
        } else {
            match qtype {
                RecordType::A => answers.push(Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
                )),
                RecordType::AAAA => answers.push(Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
                )),
                _ => soa.push(soa_for(&name)),
            }
        }
        let builder = MessageResponseBuilder::from_message_request(request);
        let response = builder.build(meta, answers.iter(), [], soa.iter(), []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => ResponseInfo::from(Header {
                metadata: meta,
                counts: HeaderCounts::default(),
            }),
        }
    }
}

/// The running fixture; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Seen,
    rcode: Arc<Mutex<Option<ResponseCode>>>,
    authentic_data: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that answers every query with `rcode` (SERVFAIL, REFUSED...).
    pub async fn answering(rcode: ResponseCode) -> Self {
        Self::start_with(Some(rcode)).await
    }

    async fn start_with(rcode: Option<ResponseCode>) -> Self {
        // The kernel's free UDP port may be taken for TCP (tests run in parallel): try another.
        let mut attempts = 0..100;
        let (udp, addr, tcp) = loop {
            assert!(
                attempts.next().is_some(),
                "no port free for both UDP and TCP"
            );
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
                break (udp, addr, tcp);
            }
        };
        let seen = Seen::default();
        let rcode = Arc::new(Mutex::new(rcode));
        let authentic_data = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let mut server = Server::new(Zone {
            seen: seen.clone(),
            rcode: rcode.clone(),
            authentic_data: authentic_data.clone(),
            silent: silent.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 32);
        let shutdown = server.shutdown_token().clone();
        tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        Self {
            addr,
            seen,
            rcode,
            authentic_data,
            silent,
            shutdown,
        }
    }

    /// From now on set AD ("validated") on every reply, or not.
    pub fn set_authentic_data(&self, on: bool) {
        self.authentic_data.store(on, Ordering::Relaxed);
    }

    /// From now on answer everything with `rcode` (`None`: as scripted).
    pub fn answer_with(&self, rcode: Option<ResponseCode>) {
        *self.rcode.lock().unwrap() = rcode;
    }

    /// From now on (`true`) record every query and answer none; `false`: answer again.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A hostile upstream on loopback: for every query it first sends garbage, an answer with the
/// wrong ID and an answer to another question (all carrying 6.6.6.6), and then, if `honest`,
/// the real answer (192.0.2.77).
pub struct Forger {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Forger {
    pub async fn start(honest: bool) -> Self {
        use hickory_proto::op::Message;

        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            // bounded: a test never needs more
            for _ in 0..10_000 {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = query.queries.first().cloned() else {
                    continue;
                };
                let answer = |id: u16, name: Name, ip: Ipv4Addr| {
                    let mut m = Message::response(id, query.metadata.op_code);
                    m.metadata.recursion_available = true;
                    m.add_query(hickory_proto::op::Query::query(
                        name.clone(),
                        q.query_type(),
                    ));
                    m.add_answer(Record::from_rdata(name, TTL, RData::A(A(ip))));
                    m.to_vec().unwrap()
                };
                let evil = Ipv4Addr::new(6, 6, 6, 6);
                let other = Name::from_ascii("other.example.").unwrap();
                let _ = socket.send_to(b"\x12\x34garbage", from).await;
                let _ = socket
                    .send_to(
                        &answer(query.metadata.id.wrapping_add(1), q.name().clone(), evil),
                        from,
                    )
                    .await;
                let _ = socket
                    .send_to(&answer(query.metadata.id, other, evil), from)
                    .await;
                if honest {
                    let _ = socket
                        .send_to(
                            &answer(
                                query.metadata.id,
                                q.name().clone(),
                                Ipv4Addr::new(192, 0, 2, 77),
                            ),
                            from,
                        )
                        .await;
                }
            }
        });
        Self { addr, task }
    }
}

impl Drop for Forger {
    fn drop(&mut self) {
        self.task.abort();
    }
}
