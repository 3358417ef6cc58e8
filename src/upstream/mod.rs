//! Forwarding to the upstream resolvers.
//!
//! Each server is asked over UDP through hushd's socket pool (`udp`), and again over a TCP
//! connection of hushd's own (`tcp`) when the UDP reply is truncated; both sit behind one
//! `Exchange`, and one classifier (`classify`) judges every reply. hushd knows which server
//! answered, times it, and fails over itself:
//!
//! - servers are tried in config order; one that failed (timeout, ICMP unreachable, a garbled
//!   or mismatched reply) is skipped for a back-off period (0.5 s, doubling to 30 s), so a dead
//!   first server does not add its timeout to every query;
//! - a SERVFAIL, REFUSED or other failure rcode is a failure of the name, not of the server:
//!   the next healthy server is asked, the server is not backed off, and if no server resolves
//!   the name the result is a resolution failure (RFC 9520) that the cache keeps briefly;
//! - the whole lookup has one deadline, after which the client gets SERVFAIL.

mod classify;
mod exchange;
mod tcp;
mod udp;

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Query, ResponseCode},
    rr::{DNSClass, Name, RecordType},
};
use prometheus::{Histogram, IntCounter};
use thiserror::Error;

use self::{
    classify::{Classified, classify},
    exchange::{Exchange, ExchangeError},
    tcp::TcpExchange,
    udp::UdpExchange,
};
use crate::{
    answer::Answer,
    config::{UpstreamConfig, trusts_ad},
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
    addr: SocketAddr,
    udp: Exchange,
    /// For answers too big for UDP.
    tcp: Exchange,
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
                error: "truncated over TCP".into(),
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
        let mut servers = Vec::with_capacity(config.servers.len());
        let trust_ad = trusts_ad(config);
        for &addr in &config.servers {
            let (duration, errors, rejected) = metrics.upstream(&addr.to_string());
            let udp = UdpExchange::new(addr, EDNS_PAYLOAD, rejected)
                .await
                .map_err(|e| UpstreamSetupError(format!("{addr}: cannot open UDP sockets: {e}")))?;
            servers.push(Server {
                addr,
                udp: Exchange::Udp(udp),
                tcp: Exchange::Tcp(TcpExchange::new(addr, EDNS_PAYLOAD)),
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

    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.servers.iter().map(|s| s.addr)
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
                    return Ok((answer, server.addr));
                }
                Attempt::RcodeFailure(rcode) => {
                    server.answered(started);
                    // counted as a failed attempt (what the metric has always meant), but the
                    // server stays in the rotation
                    server.errors.inc();
                    tracing::debug!(upstream = %server.addr, %name, %qtype, %rcode, "upstream could not resolve the name");
                    name_failed_at = Some(server.addr);
                }
                Attempt::ServerFailure { error, timed_out } => {
                    last_error = format!("{}: {error}", server.addr);
                    server.errors.inc();
                    // A server whose attempt the query's deadline cut to less than half its
                    // attempt time did not get a fair try; with at least half, it did (and with
                    // attempt_timeout_ms = timeout_ms the first attempt is always a little short).
                    if !timed_out || attempt_budget >= self.attempt_timeout / 2 {
                        self.back_off(server, failures_before);
                    }
                    tracing::debug!(upstream = %server.addr, %name, %qtype, error = %last_error, "upstream attempt failed");
                }
                Attempt::Local(error) => {
                    last_error = format!("{}: {error}", server.addr);
                    tracing::debug!(upstream = %server.addr, %name, %qtype, error = %last_error, "cannot ask upstream");
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

    /// One attempt at one server within `budget`: UDP, then TCP if the reply was truncated.
    async fn attempt(
        &self,
        server: &Server,
        query: &Query,
        checking_disabled: bool,
        budget: Duration,
    ) -> Attempt {
        let deadline = Instant::now() + budget;
        let reply = match server.udp.exchange(query, checking_disabled, budget).await {
            Ok(reply) => reply,
            Err(e) => return Attempt::of_error(&e),
        };
        match classify(reply, query) {
            Classified::Truncated => {
                let left = deadline.saturating_duration_since(Instant::now());
                match server.tcp.exchange(query, checking_disabled, left).await {
                    Ok(reply) => Attempt::of(classify(reply, query)),
                    Err(e) => Attempt::of_error(&e),
                }
            }
            classified => Attempt::of(classified),
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
