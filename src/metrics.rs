//! Prometheus counters, in a registry of hushd's own. Labels stay low-cardinality: never a
//! query name or a client address, only small fixed sets (protocol, qtype, outcome, rcode) and
//! admin-chosen names (list, upstream).

use std::sync::OnceLock;

use hickory_net::xfer::Protocol;
use hickory_proto::{op::ResponseCode, rr::RecordType};

use crate::policy::bypass::BypassAnswer;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
    core::{Collector, Desc, Describer},
    proto::MetricFamily,
};

/// How a query ended, the `outcome` label of `hushd_queries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    Cached,
    Blocked,
    Refused,
    Servfail,
    Formerr,
    Notimp,
    /// Answered locally without asking upstream (RFC 8482 minimal ANY answers).
    Local,
    /// An expired cached answer, because upstream failed or was too slow (RFC 8767).
    Stale,
    /// hushd's own answer to a name devices ask before bypassing it (`policy::bypass`).
    Bypass,
}

impl Outcome {
    const ALL: [Self; 10] = [
        Self::Forwarded,
        Self::Cached,
        Self::Blocked,
        Self::Refused,
        Self::Servfail,
        Self::Formerr,
        Self::Notimp,
        Self::Local,
        Self::Stale,
        Self::Bypass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Cached => "cached",
            Self::Blocked => "blocked",
            Self::Refused => "refused",
            Self::Servfail => "servfail",
            Self::Formerr => "formerr",
            Self::Notimp => "notimp",
            Self::Local => "local",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }
}

const PROTOCOLS: [&str; 5] = ["udp", "tcp", "tls", "https", "other"];
/// Query types with a label of their own; everything else counts as "other".
const QTYPES: [RecordType; 16] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::HTTPS,
    RecordType::SVCB,
    RecordType::CNAME,
    RecordType::MX,
    RecordType::TXT,
    RecordType::NS,
    RecordType::SOA,
    RecordType::PTR,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::NAPTR,
    RecordType::DS,
    RecordType::DNSKEY,
    RecordType::ANY,
];

fn protocol_index(p: Protocol) -> usize {
    match p {
        Protocol::Udp => 0,
        Protocol::Tcp => 1,
        Protocol::Tls => 2,
        Protocol::Https => 3,
        _ => 4,
    }
}

/// The `qtype` label: a fixed set, so a client cannot create series at will.
fn qtype_name(i: usize) -> &'static str {
    const NAMES: [&str; 16] = [
        "A", "AAAA", "HTTPS", "SVCB", "CNAME", "MX", "TXT", "NS", "SOA", "PTR", "SRV", "CAA",
        "NAPTR", "DS", "DNSKEY", "ANY",
    ];
    NAMES[i]
}

fn qtype_index(t: RecordType) -> usize {
    QTYPES.iter().position(|q| *q == t).unwrap_or(QTYPES.len())
}

/// The `rcode` label values, indexed by `rcode_index`.
const RCODE_LABELS: [&str; 8] = [
    "other", "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP", "BADVERS",
];

/// The mnemonic dig prints (`NOERROR`, `NXDOMAIN`), as the metrics and the query log write an
/// RCODE; `None` for the others.
pub fn rcode_mnemonic(r: ResponseCode) -> Option<&'static str> {
    match rcode_index(r) {
        0 => None,
        i => Some(RCODE_LABELS[i]),
    }
}

fn rcode_index(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 1,
        ResponseCode::NXDomain => 2,
        ResponseCode::ServFail => 3,
        ResponseCode::Refused => 4,
        ResponseCode::FormErr => 5,
        ResponseCode::NotImp => 6,
        ResponseCode::BADVERS => 7,
        _ => 0,
    }
}

/// Where `hushd_log_dropped_total` reads its value: the log writer's own count of dropped
/// lines, set once by the binary when it sets up logging (the writer lives outside the library).
static LOG_DROPS: OnceLock<Box<dyn Fn() -> u64 + Send + Sync>> = OnceLock::new();

/// Makes `hushd_log_dropped_total` report what `dropped` returns at each scrape. The first call
/// wins: there is one log writer per process.
pub fn count_log_drops_with(dropped: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = LOG_DROPS.set(Box::new(dropped));
}

/// `hushd_log_dropped_total`, read from the log writer at scrape time, so logging itself never
/// touches a metric.
struct LogDropped {
    opts: Opts,
    desc: Desc,
}

impl LogDropped {
    fn new() -> Result<Self, prometheus::Error> {
        let opts = Opts::new(
            "hushd_log_dropped_total",
            "Log lines dropped because the log sink (stderr: journald, a pipe) was too slow",
        );
        let desc = opts.describe()?;
        Ok(Self { opts, desc })
    }
}

impl Collector for LogDropped {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(counter) = IntCounter::with_opts(self.opts.clone()) else {
            return Vec::new();
        };
        counter.inc_by(LOG_DROPS.get().map_or(0, |dropped| dropped()));
        counter.collect()
    }
}

pub struct Metrics {
    registry: Registry,
    queries: IntCounterVec,
    /// Handles of `queries`, resolved once per label set so the hot path takes no lock.
    query_handles: Box<[OnceLock<IntCounter>]>,
    responses: IntCounterVec,
    response_handles: [OnceLock<IntCounter>; RCODE_LABELS.len()],
    list_matches: IntCounterVec,
    list_entries_skipped: IntCounterVec,
    blocklist_domains: IntGaugeVec,
    policy_domains: IntGauge,
    reloads: IntCounterVec,
    last_reload: Gauge,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    upstream_duration: prometheus::HistogramVec,
    upstream_errors: IntCounterVec,
    upstream_rejected: IntCounterVec,
    limited: IntCounterVec,
    /// Open TCP connections from clients.
    pub tcp_connections: IntGauge,
    list_fetches: IntCounterVec,
    list_last_success: IntGaugeVec,
    /// `hushd_bypass_answers_total`, one handle per answer (in `BypassAnswer::ALL` order).
    bypass_answers: [IntCounter; BypassAnswer::ALL.len()],
    nft_elements: IntCounterVec,
    /// List matches the evidence store lost: its queue was full, or it could not be written
    /// for so long that its rows in memory reached their bound.
    pub evidence_dropped: IntCounter,
    /// Failed opens and writes of the evidence store (each retried at the next flush).
    pub evidence_errors: IntCounter,
    /// `hushd_querylog_dropped_total`: query log lines lost (a full queue, a failed write).
    pub querylog_dropped: IntCounter,
    /// `hushd_evidence_devices`, set from the evidence store off the query path.
    evidence_devices: IntGaugeVec,
}

/// The `result` label values of `hushd_nft_elements_total`, in the order
/// `Metrics::nft_set_counters` returns their counters.
pub const NFT_RESULTS: [&str; 3] = ["added", "dropped", "error"];

/// The `result` label values of `hushd_list_fetches_total`.
pub const FETCH_RESULTS: [&str; 4] = ["ok", "not_modified", "error", "rejected"];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let queries = IntCounterVec::new(
            Opts::new(
                "hushd_queries_total",
                "DNS queries answered, by protocol, query type and outcome",
            ),
            &["protocol", "qtype", "outcome"],
        )?;
        let responses = IntCounterVec::new(
            Opts::new(
                "hushd_responses_total",
                "DNS responses sent, by response code",
            ),
            &["rcode"],
        )?;
        let list_matches = IntCounterVec::new(
            Opts::new(
                "hushd_list_matches_total",
                "Queries that matched a list, by list, the action applied (a group may override the list's own) and how it matched (name, cname, ip, country, asn)",
            ),
            &["list", "action", "via"],
        )?;
        let list_entries_skipped = IntCounterVec::new(
            Opts::new(
                "hushd_list_entries_skipped_total",
                "Lines of list files left out on loading, by list and reason (counted at each load)",
            ),
            &["list", "reason"],
        )?;
        let blocklist_domains = IntGaugeVec::new(
            Opts::new(
                "hushd_blocklist_domains",
                "Distinct names in each loaded list",
            ),
            &["list"],
        )?;
        let policy_domains = IntGauge::new(
            "hushd_policy_domains",
            "Distinct names across all loaded lists",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "hushd_reloads_total",
                "Policy reloads, by result (ok or error)",
            ),
            &["result"],
        )?;
        let last_reload = Gauge::new(
            "hushd_last_reload_success_timestamp_seconds",
            "Unix time of the last policy load that succeeded",
        )?;
        let cache_hits =
            IntCounter::new("hushd_cache_hits_total", "Queries answered from the cache")?;
        let cache_misses =
            IntCounter::new("hushd_cache_misses_total", "Queries not found in the cache")?;
        let cache_entries = IntGauge::new("hushd_cache_entries", "Answers held in the cache")?;
        let cache_bytes = IntGauge::new(
            "hushd_cache_bytes",
            "Memory held by cached answers, in bytes (about)",
        )?;
        let upstream_duration = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "hushd_upstream_duration_seconds",
                "Time for an upstream server to answer",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ]),
            &["upstream"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "hushd_upstream_errors_total",
                "Upstream attempts that failed (timeout, network error, SERVFAIL or REFUSED)",
            ),
            &["upstream"],
        )?;
        let upstream_rejected = IntCounterVec::new(
            Opts::new(
                "hushd_upstream_rejected_total",
                "Datagrams from an upstream that answered no outstanding query (late, forged or garbled)",
            ),
            &["upstream"],
        )?;
        let limited = IntCounterVec::new(
            Opts::new(
                "hushd_limited_total",
                "Queries shed: ratelimit (a client over client_qps), overload (max_inflight reached), tcp_limit (a TCP connection closed at accept: max_tcp_connections or max_tcp_connections_per_client reached)",
            ),
            &["reason"],
        )?;
        for reason in ["ratelimit", "overload", "tcp_limit"] {
            limited.with_label_values(&[reason]);
        }
        let tcp_connections = IntGauge::new(
            "hushd_tcp_connections",
            "TCP connections from clients open now: plain DNS, DNS over TLS and DNS over HTTPS, which share the max_tcp_connections caps",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("hushd_build_info", "hushd's version, as a label"),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        registry.register(Box::new(queries.clone()))?;
        registry.register(Box::new(responses.clone()))?;
        registry.register(Box::new(list_matches.clone()))?;
        registry.register(Box::new(list_entries_skipped.clone()))?;
        registry.register(Box::new(blocklist_domains.clone()))?;
        registry.register(Box::new(policy_domains.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_reload.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        registry.register(Box::new(cache_misses.clone()))?;
        registry.register(Box::new(cache_entries.clone()))?;
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(upstream_rejected.clone()))?;
        registry.register(Box::new(limited.clone()))?;
        registry.register(Box::new(tcp_connections.clone()))?;
        let list_fetches = IntCounterVec::new(
            Opts::new(
                "hushd_list_fetches_total",
                "Subscription downloads, by list and result: ok (a new copy stored), not_modified (304), error (unreachable, timed out, cut short, HTTP error), rejected (an HTML page, a binary, too large, not a list, a wrong sha256)",
            ),
            &["list", "result"],
        )?;
        let list_last_success = IntGaugeVec::new(
            Opts::new(
                "hushd_list_last_success_timestamp_seconds",
                "Unix time the subscription's server last gave or confirmed (304) its copy; 0 if never",
            ),
            &["list"],
        )?;
        registry.register(Box::new(list_fetches.clone()))?;
        registry.register(Box::new(list_last_success.clone()))?;
        let bypass_answers = IntCounterVec::new(
            Opts::new(
                "hushd_bypass_answers_total",
                "Queries hushd answered itself to keep devices from bypassing it, by the [server] toggle that turns the answer off: firefox_canary (use-application-dns.net, NXDOMAIN), icloud_private_relay (mask.icloud.com, mask-h2.icloud.com, NXDOMAIN), resolver_arpa (resolver.arpa, NODATA)",
            ),
            &["toggle"],
        )?;
        registry.register(Box::new(bypass_answers.clone()))?;
        // every series exists from the start, 0 included
        let bypass_answers =
            BypassAnswer::ALL.map(|a| bypass_answers.with_label_values(&[a.toggle()]));
        let nft_elements = IntCounterVec::new(
            Opts::new(
                "hushd_nft_elements_total",
                "Answered addresses for nftables sets, by set and result: added (written with its timeout, once per batch), dropped (the writer's queue was full), error (the kernel refused the write)",
            ),
            &["set", "result"],
        )?;
        registry.register(Box::new(nft_elements.clone()))?;
        let evidence_dropped = IntCounter::new(
            "hushd_evidence_dropped_total",
            "List matches not recorded in the evidence store: its queue was full, or it could not be written for so long that the matches kept in memory reached their bound",
        )?;
        let evidence_errors = IntCounter::new(
            "hushd_evidence_errors_total",
            "Failed opens, writes and prunes of the evidence store (an unwritable path, a full disk, a corrupt file moved aside); each is retried at the next flush",
        )?;
        registry.register(Box::new(evidence_dropped.clone()))?;
        registry.register(Box::new(evidence_errors.clone()))?;
        let querylog_dropped = IntCounter::new(
            "hushd_querylog_dropped_total",
            "Query log lines lost: the writer's queue was full, or the file could not be written (the queries were answered regardless)",
        )?;
        registry.register(Box::new(querylog_dropped.clone()))?;
        let evidence_devices = IntGaugeVec::new(
            Opts::new(
                "hushd_evidence_devices",
                "Distinct devices (client addresses) that matched each list in the last 24 hours, from the evidence store (counted every minute)",
            ),
            &["list"],
        )?;
        registry.register(Box::new(evidence_devices.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(LogDropped::new()?))?;

        // Both results exist from the start, so `increase()` sees the first error.
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }

        let slots = PROTOCOLS.len() * (QTYPES.len() + 1) * Outcome::ALL.len();
        Ok(Self {
            registry,
            queries,
            query_handles: (0..slots).map(|_| OnceLock::new()).collect(),
            responses,
            response_handles: Default::default(),
            list_matches,
            list_entries_skipped,
            blocklist_domains,
            policy_domains,
            reloads,
            last_reload,
            cache_hits,
            cache_misses,
            cache_entries,
            cache_bytes,
            upstream_duration,
            upstream_errors,
            upstream_rejected,
            limited,
            tcp_connections,
            list_fetches,
            list_last_success,
            bypass_answers,
            nft_elements,
            evidence_dropped,
            evidence_errors,
            querylog_dropped,
            evidence_devices,
        })
    }

    /// Counts one of hushd's own bypass-defence answers.
    pub fn bypass_answer(&self, answer: BypassAnswer) {
        // ALL lists the variants in declaration order
        if let Some(counter) = self.bypass_answers.get(answer as usize) {
            counter.inc();
        }
    }

    /// The `added`, `dropped` and `error` counters of one nftables set (as the admin wrote it),
    /// created together so every series is served from the start.
    pub fn nft_set_counters(&self, set: &str) -> [IntCounter; 3] {
        NFT_RESULTS.map(|result| self.nft_elements.with_label_values(&[set, result]))
    }

    /// Publishes a new count of devices per list: every list given gets its count, and a list
    /// not given loses its series (its last matching device fell out of the day, and the list
    /// is no longer loaded).
    pub fn evidence_devices<'a>(&self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let counts: Vec<(&str, u64)> = counts.into_iter().collect();
        for (list, n) in &counts {
            self.evidence_devices
                .with_label_values(&[*list])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        // set first, then remove the rest: a scrape never sees the family empty in between
        for family in self.evidence_devices.collect() {
            for metric in family.get_metric() {
                let list = metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "list")
                    .map(|l| l.value().to_string());
                if let Some(list) = list
                    && !counts.iter().any(|(l, _)| *l == list)
                {
                    let _ = self.evidence_devices.remove_label_values(&[&list]);
                }
            }
        }
    }

    /// Makes a subscription's series exist from the start (so `increase()` sees its first
    /// error); `checked_unix` is when its stored copy was last confirmed, 0 if never.
    pub fn subscription_started(&self, list: &str, checked_unix: u64) {
        for result in FETCH_RESULTS {
            self.list_fetches.with_label_values(&[list, result]);
        }
        self.subscription_current(list, checked_unix);
    }

    /// A subscription whose list is gone leaves no series behind.
    pub fn subscription_removed(&self, list: &str) {
        for result in FETCH_RESULTS {
            let _ = self.list_fetches.remove_label_values(&[list, result]);
        }
        let _ = self.list_last_success.remove_label_values(&[list]);
    }

    pub fn list_fetch(&self, list: &str, result: &str) {
        self.list_fetches.with_label_values(&[list, result]).inc();
    }

    pub fn subscription_current(&self, list: &str, checked_unix: u64) {
        self.list_last_success
            .with_label_values(&[list])
            .set(i64::try_from(checked_unix).unwrap_or(i64::MAX));
    }

    pub fn query(&self, protocol: Protocol, qtype: RecordType, outcome: Outcome) {
        let (p, q) = (protocol_index(protocol), qtype_index(qtype));
        let o = outcome as usize; // ALL lists the variants in declaration order
        let slot = (p * (QTYPES.len() + 1) + q) * Outcome::ALL.len() + o;
        if let Some(cell) = self.query_handles.get(slot) {
            cell.get_or_init(|| {
                let qtype = if q < QTYPES.len() {
                    qtype_name(q)
                } else {
                    "other"
                };
                self.queries
                    .with_label_values(&[PROTOCOLS[p], qtype, outcome.as_str()])
            })
            .inc();
        }
    }

    pub fn response(&self, rcode: ResponseCode) {
        let slot = rcode_index(rcode);
        if let Some(cell) = self.response_handles.get(slot) {
            cell.get_or_init(|| self.responses.with_label_values(&[RCODE_LABELS[slot]]))
                .inc();
        }
    }

    /// The counter of one list's matches. The policy keeps the handle with the list, so a match
    /// is counted without a label lookup.
    pub fn list_match_counter(&self, list: &str, action: &str, via: &str) -> IntCounter {
        self.list_matches.with_label_values(&[list, action, via])
    }

    /// Counts the lines a newly loaded policy's files left out, as `(list, reason, lines)`.
    pub fn entries_skipped<'a>(
        &self,
        skipped: impl IntoIterator<Item = (&'a str, &'a str, usize)>,
    ) {
        for (list, reason, lines) in skipped {
            self.list_entries_skipped
                .with_label_values(&[list, reason])
                .inc_by(lines as u64);
        }
    }

    /// Publishes the sizes of a newly loaded policy; lists that were removed disappear.
    pub fn policy_loaded<'a>(
        &self,
        lists: impl IntoIterator<Item = (&'a str, usize)>,
        distinct: usize,
    ) {
        self.blocklist_domains.reset();
        for (name, count) in lists {
            self.blocklist_domains
                .with_label_values(&[name])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.policy_domains
            .set(i64::try_from(distinct).unwrap_or(i64::MAX));
        self.reload_ok();
    }

    fn reload_ok(&self) {
        self.reloads.with_label_values(&["ok"]).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_reload.set(now);
    }

    pub fn reload_error(&self) {
        self.reloads.with_label_values(&["error"]).inc();
    }

    pub fn limited(&self, reason: &'static str) {
        self.limited.with_label_values(&[reason]).inc();
    }

    /// Handles for one upstream server, resolved once when the upstream is built.
    pub fn upstream(&self, label: &str) -> (Histogram, IntCounter, IntCounter) {
        (
            self.upstream_duration.with_label_values(&[label]),
            self.upstream_errors.with_label_values(&[label]),
            self.upstream_rejected.with_label_values(&[label]),
        )
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for I/O; a malformed family would be a bug in this file.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        // The registry leaves out a family with no series yet; a family whose labels come from
        // the config (no nft_sets configured) is still declared, so dashboards and alerts can
        // tell "nothing yet" from "not this version".
        let declared: [(&dyn Collector, &str); 2] = [
            (&self.nft_elements, "counter"),
            (&self.evidence_devices, "gauge"),
        ];
        for (family, kind) in declared {
            for mf in family.collect() {
                if mf.get_metric().is_empty() {
                    let help = mf.help().replace('\\', "\\\\").replace('\n', "\\n");
                    out.extend_from_slice(
                        format!("# HELP {0} {help}\n# TYPE {0} {kind}\n", mf.name()).as_bytes(),
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_interface_metric_with_its_labels() {
        let m = Metrics::new().unwrap();
        m.query(Protocol::Udp, RecordType::A, Outcome::Blocked);
        m.query(
            Protocol::Tcp,
            RecordType::Unknown(65000),
            Outcome::Forwarded,
        );
        m.list_match_counter("xiaomi", "block", "name").inc();
        m.policy_loaded([("xiaomi", 3)], 3);
        m.entries_skipped([("xiaomi", "modifier", 2)]);
        m.reload_error();
        m.cache_hits.inc();
        m.cache_misses.inc();
        m.subscription_started("ads", 0);
        m.list_fetch("ads", "ok");
        m.subscription_current("ads", 1_700_000_000);
        let (h, e, _) = m.upstream("127.0.0.1:53");
        h.observe(0.01);
        e.inc();
        m.query(Protocol::Udp, RecordType::SVCB, Outcome::Bypass);
        m.bypass_answer(BypassAnswer::ResolverArpa);
        let text = String::from_utf8(m.render()).unwrap();
        for want in [
            r#"hushd_queries_total{outcome="blocked",protocol="udp",qtype="A"} 1"#,
            r#"hushd_queries_total{outcome="forwarded",protocol="tcp",qtype="other"} 1"#,
            r#"hushd_list_matches_total{action="block",list="xiaomi",via="name"} 1"#,
            r#"hushd_blocklist_domains{list="xiaomi"} 3"#,
            r#"hushd_list_entries_skipped_total{list="xiaomi",reason="modifier"} 2"#,
            r#"hushd_reloads_total{result="ok"} 1"#,
            r#"hushd_reloads_total{result="error"} 1"#,
            "hushd_cache_hits_total 1",
            "hushd_cache_misses_total 1",
            r#"hushd_upstream_duration_seconds_bucket{upstream="127.0.0.1:53",le="0.01"} 1"#,
            r#"hushd_upstream_errors_total{upstream="127.0.0.1:53"} 1"#,
            r#"hushd_list_fetches_total{list="ads",result="ok"} 1"#,
            r#"hushd_list_fetches_total{list="ads",result="rejected"} 0"#,
            r#"hushd_list_last_success_timestamp_seconds{list="ads"} 1700000000"#,
            r#"hushd_queries_total{outcome="bypass",protocol="udp",qtype="SVCB"} 1"#,
            r#"hushd_bypass_answers_total{toggle="resolver_arpa"} 1"#,
            r#"hushd_bypass_answers_total{toggle="firefox_canary"} 0"#,
            r#"hushd_bypass_answers_total{toggle="icloud_private_relay"} 0"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn outcome_slots_follow_declaration_order() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
        }
        for (i, a) in BypassAnswer::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i, "{a:?}");
        }
    }

    #[test]
    fn log_drops_are_read_at_scrape_time() {
        let m = Metrics::new().unwrap();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        count_log_drops_with({
            let dropped = dropped.clone();
            move || dropped.load(std::sync::atomic::Ordering::Relaxed)
        });
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("# TYPE hushd_log_dropped_total counter"),
            "{text}"
        );
        dropped.store(7, std::sync::atomic::Ordering::Relaxed);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("\nhushd_log_dropped_total 7\n"), "{text}");
    }

    #[test]
    fn removed_lists_disappear_from_the_size_gauge() {
        let m = Metrics::new().unwrap();
        m.policy_loaded([("a", 1), ("b", 2)], 3);
        m.policy_loaded([("b", 2)], 2);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains(r#"list="a""#), "{text}");
        assert!(text.contains(r#"hushd_blocklist_domains{list="b"} 2"#));
    }
}
