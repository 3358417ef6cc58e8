//! Forwarding to the upstream resolvers.
//!
//! Each upstream server is asked over UDP through hushd's socket pool (`exchange`), and over
//! TCP through a `hickory-resolver` of its own (cache off: hushd's `Cache` is the only one) when
//! the UDP answer is truncated. hushd knows which server answered, times it, and fails over
//! itself: servers are tried in config order, one that just failed is skipped for a back-off
//! period (so a dead first server does not add its timeout to every query), and the whole
//! lookup has one deadline after which the client gets SERVFAIL.

mod exchange;

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use hickory_net::{DnsError, NetError, runtime::TokioRuntimeProvider};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{Name, RData, RecordType},
};
use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig},
};

use self::exchange::UdpExchange;
use prometheus::{Histogram, IntCounter};
use thiserror::Error;

use crate::{answer::Answer, config::UpstreamConfig, metrics::Metrics, wire::EDNS_PAYLOAD};

/// In-flight queries allowed on one upstream connection; hickory's default of 32 would turn a
/// busy office's burst into "busy" errors.
const MAX_ACTIVE_PER_CONNECTION: usize = 4096;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("no upstream answered within {0:?}")]
    Timeout(Duration),
    #[error("every upstream failed; last error: {0}")]
    Failed(String),
}

pub struct Upstream {
    servers: Vec<Server>,
    timeout: Duration,
    attempt_timeout: Duration,
    epoch: Instant,
}

struct Server {
    addr: SocketAddr,
    udp: UdpExchange,
    /// TCP only: for answers too big for UDP.
    tcp: TokioResolver,
    duration: Histogram,
    errors: IntCounter,
    failures: AtomicU32,
    /// Milliseconds since `Upstream::epoch` until which this server is skipped.
    down_until: AtomicU64,
}

impl Upstream {
    pub async fn new(
        config: &UpstreamConfig,
        metrics: &Metrics,
    ) -> Result<Self, UpstreamSetupError> {
        let mut servers = Vec::with_capacity(config.servers.len());
        for &addr in &config.servers {
            let (duration, errors, rejected) = metrics.upstream(&addr.to_string());
            let udp = UdpExchange::new(addr, EDNS_PAYLOAD, rejected)
                .await
                .map_err(|e| UpstreamSetupError(format!("{addr}: cannot open UDP sockets: {e}")))?;
            servers.push(Server {
                addr,
                udp,
                tcp: tcp_resolver(addr, config.attempt_timeout)
                    .map_err(|e| UpstreamSetupError(format!("{addr}: {e}")))?,
                duration,
                errors,
                failures: AtomicU32::new(0),
                down_until: AtomicU64::new(0),
            });
        }
        Ok(Self {
            servers,
            timeout: config.timeout,
            attempt_timeout: config.attempt_timeout,
            epoch: Instant::now(),
        })
    }

    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.servers.iter().map(|s| s.addr)
    }

    pub async fn resolve(&self, name: &Name, qtype: RecordType) -> Result<Answer, UpstreamError> {
        match tokio::time::timeout(self.timeout, self.try_servers(name, qtype)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        }
    }

    async fn try_servers(&self, name: &Name, qtype: RecordType) -> Result<Answer, UpstreamError> {
        let now = self.now_ms();
        // Healthy servers in config order, then the ones in back-off as a last resort.
        let (up, down): (Vec<&Server>, Vec<&Server>) = self
            .servers
            .iter()
            .partition(|s| s.down_until.load(Ordering::Relaxed) <= now);
        let mut last_error = String::from("no upstream servers");
        for server in up.into_iter().chain(down) {
            let started = Instant::now();
            let result =
                tokio::time::timeout(self.attempt_timeout, self.exchange(server, name, qtype))
                    .await;
            match result {
                Ok(Ok(answer)) => {
                    server.duration.observe(started.elapsed().as_secs_f64());
                    server.failures.store(0, Ordering::Relaxed);
                    server.down_until.store(0, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Err(e)) => last_error = format!("{}: {e}", server.addr),
                Err(_) => {
                    last_error = format!(
                        "{}: no answer within {:?}",
                        server.addr, self.attempt_timeout
                    )
                }
            }
            server.errors.inc();
            self.back_off(server);
            tracing::debug!(upstream = %server.addr, %name, %qtype, error = %last_error, "upstream attempt failed");
        }
        Err(UpstreamError::Failed(last_error))
    }

    /// One attempt at one server: UDP, then TCP if the answer was truncated.
    async fn exchange(
        &self,
        server: &Server,
        name: &Name,
        qtype: RecordType,
    ) -> Result<Answer, String> {
        let message = server
            .udp
            .query(name, qtype, self.attempt_timeout)
            .await
            .map_err(|e| e.to_string())?;
        if message.metadata.truncation {
            return classify(server.tcp.lookup(name.clone(), qtype).await)
                .map_err(|e| e.to_string());
        }
        answer_of(message)
    }

    fn back_off(&self, server: &Server) {
        let failures = server
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let backoff = Duration::from_millis(500u64 << failures.min(6)).min(MAX_BACKOFF);
        let until = self.now_ms() + backoff.as_millis() as u64;
        server.down_until.store(until, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A resolver that asks `addr` over TCP only.
fn tcp_resolver(addr: SocketAddr, timeout: Duration) -> Result<TokioResolver, NetError> {
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    ns.connections = vec![tcp];
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], vec![ns]),
        TokioRuntimeProvider::default(),
    );
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.attempts = 0; // one try per server: failover is ours
    opts.timeout = timeout;
    opts.num_concurrent_reqs = 1;
    opts.max_active_requests = MAX_ACTIVE_PER_CONNECTION;
    opts.preserve_intermediates = true; // keep CNAME chains (RFC 1034 §4.3.2)
    opts.use_hosts_file = ResolveHosts::Never;
    opts.edns_payload_len = EDNS_PAYLOAD;
    builder.build()
}

#[derive(Debug, Error)]
#[error("{0}")]
pub struct UpstreamSetupError(String);

/// A UDP answer as an answer to cache and send, or the failure that makes us try the next
/// server. NXDOMAIN and NODATA are answers; SERVFAIL, REFUSED and the like are failures.
fn answer_of(message: Message) -> Result<Answer, String> {
    let rcode = message.metadata.response_code;
    if !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
        return Err(format!("upstream answered {rcode}"));
    }
    let ttl = if message.answers.is_empty() || rcode == ResponseCode::NXDomain {
        // RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM); none without an SOA
        message.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
    } else {
        message.answers.iter().map(|r| r.ttl).min()
    };
    Ok(Answer {
        rcode,
        answers: message.answers,
        authorities: message.authorities,
        additionals: message.additionals,
        ttl,
    })
}

/// An upstream result as an answer to cache and send, or the error that makes us try the next
/// server. NXDOMAIN and NODATA are answers, not failures.
fn classify(
    result: Result<hickory_resolver::lookup::Lookup, NetError>,
) -> Result<Answer, NetError> {
    match result {
        Ok(lookup) => {
            let answers = lookup.answers().to_vec();
            let ttl = answers.iter().map(|r| r.ttl).min();
            Ok(Answer {
                rcode: ResponseCode::NoError,
                answers,
                authorities: lookup.authorities().to_vec(),
                additionals: lookup.additionals().to_vec(),
                ttl,
            })
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(no_records))) => {
            let rcode = no_records.response_code;
            if !matches!(rcode, ResponseCode::NXDomain | ResponseCode::NoError) {
                return Err(NetError::Dns(DnsError::ResponseCode(rcode)));
            }
            Ok(Answer {
                rcode,
                answers: Vec::new(),
                authorities: no_records
                    .soa
                    .map(|soa| soa.into_record_of_rdata())
                    .into_iter()
                    .collect(),
                additionals: Vec::new(),
                ttl: no_records.negative_ttl,
            })
        }
        Err(e) => Err(e),
    }
}
