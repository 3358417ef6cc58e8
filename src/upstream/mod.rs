//! Forwarding to the upstream resolvers.
//!
//! A plain server is asked over UDP through hushd's socket pool (`udp`), and again over a TCP
//! connection of hushd's own (`tcp`) when the UDP reply is truncated; a DoT server (`tls`) over
//! one long-lived TLS connection with queries pipelined on it, a DoH server (`https`) over one
//! HTTP/2 connection with a stream per query (`connection` keeps and remakes either,
//! `tls_client` checks certificates). All sit behind one `Exchange`, and one classifier
//! (`classify`) judges every reply. hushd knows which server answered, times it, and fails over
//! itself, the same for every transport:
//!
//! - servers are tried in config order; one that failed (timeout, ICMP unreachable, a garbled
//!   or mismatched reply) is skipped for a back-off period (0.5 s, doubling to 30 s), so a dead
//!   first server does not add its timeout to every query;
//! - a SERVFAIL, REFUSED or other failure rcode is a failure of the name, not of the server:
//!   the next healthy server is asked, the server is not backed off, and if no server resolves
//!   the name the result is a resolution failure (RFC 9520) that the cache keeps briefly;
//! - the whole lookup has one deadline, after which the client gets SERVFAIL.

mod classify;
mod connection;
mod exchange;
mod https;
mod tcp;
mod tls;
mod tls_client;
mod udp;

pub use self::tls_client::load_ca_file;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Query, ResponseCode},
    rr::{DNSClass, Name, RecordType},
};
use prometheus::{Histogram, IntCounter};
use rustls::ClientConfig;
use thiserror::Error;

use self::{
    classify::{Classified, classify},
    exchange::{Exchange, ExchangeError},
    https::DohExchange,
    tcp::TcpExchange,
    tls::DotExchange,
    udp::UdpExchange,
};
use crate::{
    answer::Answer,
    config::{Transport, UpstreamConfig, UpstreamServer, trusts_ad},
    metrics::Metrics,
    wire::EDNS_PAYLOAD,
};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
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
    config: UpstreamServer,
    /// UDP for a plain server; the TLS connection or HTTP/2 connection for an encrypted one.
    first: Exchange,
    /// For answers too big for UDP (plain servers only: DoT and DoH carry any size).
    tcp: Option<Exchange>,
    duration: Histogram,
    errors: IntCounter,
    failures: AtomicU32,
    /// Milliseconds since `Upstream::epoch` until which this server is skipped.
    down_until: AtomicU64,
    /// Its AD bit is passed on to clients (`config::trusts_ad`); otherwise cleared.
    trust_ad: bool,
}

/// How one attempt at one server ended.
enum Attempt {
    Answer(Answer),
    /// The server answered, but could not resolve the name.
    RcodeFailure(ResponseCode),
    /// The server (or the path to it) failed: it is backed off.
    ServerFailure {
        error: String,
        timed_out: bool,
    },
    /// hushd could not ask (no free ID, say): neither the server's fault nor the name's.
    Local(String),
}

impl Attempt {
    fn of(classified: Classified) -> Self {
        match classified {
            Classified::Answer(answer) => Self::Answer(answer),
            Classified::RcodeFailure(rcode) => Self::RcodeFailure(rcode),
            Classified::Truncated => Self::ServerFailure {
                error: "truncated over a stream".into(),
                timed_out: false,
            },
            Classified::Garbled(why) => Self::ServerFailure {
                error: why.into(),
                timed_out: false,
            },
        }
    }

    fn of_error(e: &ExchangeError) -> Self {
        if e.is_server_failure() {
            Self::ServerFailure {
                error: e.to_string(),
                timed_out: matches!(e, ExchangeError::Timeout(_)),
            }
        } else {
            Self::Local(e.to_string())
        }
    }
}

impl Upstream {
    pub async fn new(
        config: &UpstreamConfig,
        metrics: &Metrics,
    ) -> Result<Self, UpstreamSetupError> {
        let tls = TlsConfigs::for_servers(config)?;
        let mut servers = Vec::with_capacity(config.servers.len());
        let trust_ad = trusts_ad(config);
        for server in &config.servers {
            let label = server.to_string();
            let (duration, errors, rejected) = metrics.upstream(&label);
            let addr = server.addr;
            let setup = |e: String| UpstreamSetupError(format!("{label}: {e}"));
            let (first, tcp) = match (&server.transport, &tls) {
                (Transport::Plain, _) => {
                    let udp = UdpExchange::new(addr, EDNS_PAYLOAD, rejected)
                        .await
                        .map_err(|e| setup(format!("cannot open UDP sockets: {e}")))?;
                    let tcp = TcpExchange::new(addr, EDNS_PAYLOAD);
                    (Exchange::Udp(udp), Some(Exchange::Tcp(tcp)))
                }
                (Transport::Tls { .. }, Some(tls)) => {
                    let name = tls_client::server_name(&server.tls_name()).map_err(setup)?;
                    let dot = DotExchange::new(
                        addr,
                        name,
                        label.clone(),
                        tls.dot.clone(),
                        EDNS_PAYLOAD,
                        rejected,
                    );
                    (Exchange::Tls(dot), None)
                }
                (Transport::Https { path, .. }, Some(tls)) => {
                    let authority = server.tls_name();
                    let name = tls_client::server_name(&authority).map_err(setup)?;
                    let doh = DohExchange::new(
                        addr,
                        name,
                        &authority,
                        path,
                        label.clone(),
                        tls.doh.clone(),
                        EDNS_PAYLOAD,
                    )
                    .map_err(UpstreamSetupError)?;
                    (Exchange::Https(doh), None)
                }
                (_, None) => unreachable!("TLS settings are made when any server is encrypted"),
            };
            servers.push(Server {
                config: server.clone(),
                first,
                tcp,
                duration,
                errors,
                failures: AtomicU32::new(0),
                down_until: AtomicU64::new(0),
                trust_ad,
            });
        }
        Ok(Self {
            servers,
            timeout: config.timeout,
            attempt_timeout: config.attempt_timeout,
            epoch: Instant::now(),
        })
    }

    /// The servers as configured, in the order they are tried.
    pub fn servers(&self) -> impl Iterator<Item = &UpstreamServer> + '_ {
        self.servers.iter().map(|s| &s.config)
    }

    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.servers.iter().map(|s| s.config.addr)
    }

    /// An answer (NOERROR, NXDOMAIN, or a resolution failure when every server asked answered
    /// SERVFAIL, REFUSED or the like) and the server it came from (for a resolution failure,
    /// the last one asked), or an error when no server answered in time. `checking_disabled`
    /// is the client's CD bit, passed on.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        checking_disabled: bool,
    ) -> Result<(Answer, SocketAddr), UpstreamError> {
        let deadline = Instant::now() + self.timeout;
        let mut query = Query::query(name.clone(), qtype);
        query.set_query_class(DNSClass::IN);

        let now = self.now_ms();
        // Healthy servers in config order, then the ones in back-off as a last resort.
        let (up, down): (Vec<&Server>, Vec<&Server>) = self
            .servers
            .iter()
            .partition(|s| s.down_until.load(Ordering::Relaxed) <= now);
        let healthy = up.len();
        let mut name_failed_at = None;
        let mut asked_again = false;
        let mut last_error = String::from("no upstream servers");
        for (i, server) in up.into_iter().chain(down).enumerate() {
            // After a failure rcode one more healthy server is asked, once: a name that fails
            // on two is unlikely to resolve on a third, and a server in back-off is no better.
            if name_failed_at.is_some() {
                if asked_again || i >= healthy {
                    break;
                }
                asked_again = true;
            }
            let budget = deadline.saturating_duration_since(Instant::now());
            if budget.is_zero() {
                if name_failed_at.is_none() {
                    return Err(UpstreamError::Timeout(self.timeout));
                }
                break;
            }
            let attempt_budget = budget.min(self.attempt_timeout);
            let started = Instant::now();
            let failures_before = server.failures.load(Ordering::Relaxed);
            match self
                .attempt(server, &query, checking_disabled, attempt_budget)
                .await
            {
                Attempt::Answer(mut answer) => {
                    server.answered(started);
                    answer.authentic_data &= server.trust_ad;
                    return Ok((answer, server.config.addr));
                }
                Attempt::RcodeFailure(rcode) => {
                    server.answered(started);
                    // counted as a failed attempt (what the metric has always meant), but the
                    // server stays in the rotation
                    server.errors.inc();
                    tracing::debug!(upstream = %server.config, %name, %qtype, %rcode, "upstream could not resolve the name");
                    name_failed_at = Some(server.config.addr);
                }
                Attempt::ServerFailure { error, timed_out } => {
                    last_error = format!("{}: {error}", server.config);
                    server.errors.inc();
                    // A server whose attempt the query's deadline cut to less than half its
                    // attempt time did not get a fair try; with at least half, it did (and with
                    // attempt_timeout_ms = timeout_ms the first attempt is always a little short).
                    if !timed_out || attempt_budget >= self.attempt_timeout / 2 {
                        self.back_off(server, failures_before);
                    }
                    tracing::debug!(upstream = %server.config, %name, %qtype, error = %last_error, "upstream attempt failed");
                }
                Attempt::Local(error) => {
                    last_error = format!("{}: {error}", server.config);
                    tracing::debug!(upstream = %server.config, %name, %qtype, error = %last_error, "cannot ask upstream");
                }
            }
        }
        if let Some(server) = name_failed_at {
            return Ok((Answer::resolution_failure(), server));
        }
        if Instant::now() >= deadline {
            return Err(UpstreamError::Timeout(self.timeout));
        }
        Err(UpstreamError::Failed(last_error))
    }

    /// One attempt at one server within `budget`: UDP, then TCP if the reply was truncated;
    /// or the server's one encrypted transport.
    async fn attempt(
        &self,
        server: &Server,
        query: &Query,
        checking_disabled: bool,
        budget: Duration,
    ) -> Attempt {
        let deadline = Instant::now() + budget;
        let reply = match server
            .first
            .exchange(query, checking_disabled, budget)
            .await
        {
            Ok(reply) => reply,
            Err(e) => return Attempt::of_error(&e),
        };
        match (classify(reply, query), &server.tcp) {
            (Classified::Truncated, Some(tcp)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match tcp.exchange(query, checking_disabled, left).await {
                    Ok(reply) => Attempt::of(classify(reply, query)),
                    Err(e) => Attempt::of_error(&e),
                }
            }
            (classified, _) => Attempt::of(classified),
        }
    }

    /// Counts a failure of an attempt that started when the server had `failures_before`
    /// failures in a row. Attempts that were under way together when a server went down fail
    /// together: only the first of them counts, so one outage under load is one failure (a
    /// 0.5 s back-off), not a hundred (30 s).
    fn back_off(&self, server: &Server, failures_before: u32) {
        let failures = failures_before.saturating_add(1);
        if server
            .failures
            .compare_exchange(
                failures_before,
                failures,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            let until = self.now_ms() + backoff(failures).as_millis() as u64;
            server.down_until.store(until, Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl Server {
    /// The server replied: it is healthy, whatever it said about the name.
    fn answered(&self, started: Instant) {
        self.duration.observe(started.elapsed().as_secs_f64());
        self.failures.store(0, Ordering::Relaxed);
        self.down_until.store(0, Ordering::Relaxed);
    }
}

/// How long a server is skipped after its `failures`-th failure in a row (1 or more).
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

#[derive(Debug, Error)]
#[error("{0}")]
pub struct UpstreamSetupError(String);

/// TLS client settings for DoT (no ALPN) and DoH (ALPN h2), made once for all servers and only
/// when some server is encrypted (reading the system's roots takes a few milliseconds).
struct TlsConfigs {
    dot: Arc<ClientConfig>,
    doh: Arc<ClientConfig>,
}

impl TlsConfigs {
    fn for_servers(config: &UpstreamConfig) -> Result<Option<Self>, UpstreamSetupError> {
        if !config.servers.iter().any(UpstreamServer::is_encrypted) {
            return Ok(None);
        }
        let ca_file = config.ca_file.as_deref();
        Ok(Some(Self {
            dot: tls_client::client_config(ca_file, &[]).map_err(UpstreamSetupError)?,
            doh: tls_client::client_config(ca_file, &[b"h2"]).map_err(UpstreamSetupError)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_half_a_second_and_doubles_to_thirty() {
        let ms = |n| backoff(n).as_millis();
        assert_eq!(ms(1), 500);
        assert_eq!(ms(2), 1_000);
        assert_eq!(ms(3), 2_000);
        assert_eq!(ms(7), 30_000);
        assert_eq!(ms(u32::MAX), 30_000);
    }
}
