//! The daemon's config file: serde shapes that reject unknown keys, then validated, typed values.
//! The same `Config::load` serves startup, `hushd check` and every reload, so what `check`
//! accepts is exactly what the daemon will run.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use hickory_proto::rr::{LowerName, Name};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use toml::Spanned;

use crate::diagnostic::{LoadError, LoadErrors};

mod groups;
mod upstream_server;
pub use self::groups::{ClientName, DEFAULT_GROUP, GroupConfig};
pub use self::upstream_server::{Transport, UpstreamServer};

/// The answer a blocked lookup gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockResponse {
    /// NXDOMAIN with an RFC 8914 Extended DNS Error 15 (Blocked) naming the list.
    #[default]
    Nxdomain,
    /// 0.0.0.0 for A, :: for AAAA, NODATA for other types.
    Null,
    /// REFUSED, with the same Extended DNS Error.
    Refused,
}

/// What a list does with the names it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Answer the lookup with the block response instead of forwarding it.
    Block,
    /// Audit: forward as normal, and log and count the match.
    Log,
    /// Exempt the name (and its subdomains) from every block and log list.
    Allow,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Log => "log",
            Self::Allow => "allow",
        }
    }
}

/// `[server]` toggles for the answers hushd gives itself to the names devices probe before
/// they bypass it (see `policy::bypass`). Each is on unless the admin turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BypassDefence {
    /// `use-application-dns.net` -> NXDOMAIN: Firefox keeps its default DNS over HTTPS off.
    pub firefox_canary: bool,
    /// `mask.icloud.com`, `mask-h2.icloud.com` -> NXDOMAIN: Apple devices keep iCloud Private
    /// Relay off on this network and say so to the user.
    pub icloud_private_relay: bool,
    /// Names under `resolver.arpa` -> NODATA: no upstream resolver is designated to clients
    /// (RFC 9462 DDR), so they stay on hushd.
    pub resolver_arpa: bool,
}

impl Default for BypassDefence {
    fn default() -> Self {
        Self {
            firefox_canary: true,
            icloud_private_relay: true,
            resolver_arpa: true,
        }
    }
}

/// The validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub metrics: MetricsConfig,
    pub blocklists: BlocklistsConfig,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
    pub lists: ListsConfig,
    pub egress: EgressConfig,
    pub evidence: EvidenceConfig,
    pub querylog: QueryLogConfig,
    /// `[clients]`: names for devices, in logs, evidence and groups.
    pub clients: Vec<ClientName>,
    /// `[[groups]]`, in file order; clients in none are in the implicit `default` group.
    pub groups: Vec<GroupConfig>,
}

/// `[egress]`: what answer addresses are checked against, and how firewall sets are fed.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressConfig {
    /// A MaxMind DB (GeoLite2-Country, DB-IP, iptoasn-country) for lists' `countries`; absolute,
    /// or already joined to the config's folder.
    pub country_db: Option<PathBuf>,
    /// A MaxMind DB (GeoLite2-ASN, iptoasn-asn) for lists' `asns`.
    pub asn_db: Option<PathBuf>,
    /// Shortest timeout an address is given in an nftables set, in seconds: a short DNS TTL must
    /// not let the set entry expire while the device is still connected.
    pub min_timeout_secs: u32,
}

/// `[evidence]`: the device x vendor record of list matches.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceConfig {
    pub enabled: bool,
    /// Absolute, or already joined to the config's folder (`$STATE_DIRECTORY` under systemd).
    pub path: PathBuf,
    pub retention_days: u32,
    /// How often matches are written in one batch; what a crash may lose at most.
    pub flush: Duration,
}

/// `[querylog]`: every query, one JSON object a line (opt-in).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryLogConfig {
    pub enabled: bool,
    pub path: PathBuf,
    /// Only queries that matched a list.
    pub only_matches: bool,
    /// Rotate at this size.
    pub max_bytes: u64,
    /// Rotated files kept (`queries.jsonl.1` ... `.keep`).
    pub keep: u32,
    /// Applies to the evidence store too.
    pub anonymize: Anonymize,
}

/// How client addresses are stored in the query log and the evidence store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymize {
    #[default]
    None,
    /// IPv4 to its /24, IPv6 to its /48.
    Truncate,
}

/// `[egress] min_timeout_secs` default: five minutes outlives most connections' DNS TTLs.
pub const DEFAULT_NFT_MIN_TIMEOUT_SECS: u32 = 300;

/// `[lists]`: where subscriptions keep their last good copies, and how they are fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct ListsConfig {
    /// Absolute, or already joined to the config's folder.
    pub state_dir: PathBuf,
    /// PEM certificates trusted beside the system's roots (an office's own CA).
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Budget for one whole download, body included.
    pub timeout: Duration,
    /// Largest download accepted; a larger one is cut off while streaming and rejected.
    pub max_bytes: u64,
    /// Wait before the first retry after a failed fetch; it doubles per failure, up to `refresh`.
    pub retry_after: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Queries per second per client address (IPv6 per /56); 0 turns the limit off.
    pub client_qps: u32,
    /// Every `slip`-th limited query gets a TC=1 answer instead of silence; 0 never.
    pub slip: u32,
    pub exempt_clients: Vec<IpNetwork>,
    /// Queries waiting for upstream at once; past it new ones are dropped.
    pub max_inflight: usize,
    /// Open TCP connections at once, from everyone; past it new ones are closed at accept.
    pub max_tcp_connections: usize,
    /// Open TCP connections from one client (IPv6 per /56); exempt clients are not capped.
    pub max_tcp_connections_per_client: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub allow_clients: Vec<IpNetwork>,
    pub block_response: BlockResponse,
    pub block_ttl: u32,
    pub tcp_idle_timeout: Duration,
    pub bypass: BypassDefence,
    /// DNS over TLS (RFC 7858) listeners.
    pub tls_listen: Vec<SocketAddr>,
    /// DNS over HTTPS (RFC 8484) listeners, answering at `/dns-query`.
    pub https_listen: Vec<SocketAddr>,
    /// The certificate and key both encrypted listeners present; set whenever one of them is.
    pub tls: Option<TlsFiles>,
    /// A connection that has not finished its TLS handshake by then is closed.
    pub tls_handshake_timeout: Duration,
    /// `health_name`: the name a load balancer's health check asks (dnsdist `checkName`);
    /// hushd answers it itself, NOERROR while it serves and REFUSED while it drains.
    pub health_name: Option<LowerName>,
    /// `drain_secs`: on SIGTERM, how long hushd keeps answering (failing only the health
    /// check) before it stops, so a load balancer moves clients away without losing a query.
    pub drain: Duration,
}

/// `[server] cert_file` and `key_file`: PEM files, absolute or already joined to the config's
/// folder. Read again whenever they change (ACME renewals), see `certs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own first (certbot's `fullchain.pem`).
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Plain, DoT (`tls://`) and DoH (`https://`) servers, tried in this order.
    pub servers: Vec<UpstreamServer>,
    /// PEM certificates trusted beside the system's roots for DoT and DoH servers (an office's
    /// own CA). Absolute, or already joined to the config's folder.
    pub ca_file: Option<PathBuf>,
    /// Budget for one client query across all upstream attempts; past it the client gets SERVFAIL.
    pub timeout: Duration,
    /// Budget for one attempt at one upstream server.
    pub attempt_timeout: Duration,
    /// `trust_ad` as written; `None` leaves it to `trusts_ad`'s default.
    pub trust_ad: Option<bool>,
}

/// Whether the upstreams' AD bit ("this data was DNSSEC-validated") is passed on to clients
/// that ask for it. An AD bit is only as good as the path it came over: on a plain UDP path
/// across a network anyone on that path can set it. So by default it is trusted only when
/// every server is on this host (loopback) or reached over TLS or HTTPS, whose certificate
/// check authenticates the path; `[upstream] trust_ad` decides otherwise.
pub fn trusts_ad(config: &UpstreamConfig) -> bool {
    config.trust_ad.unwrap_or_else(|| {
        config
            .servers
            .iter()
            .all(|s| s.is_encrypted() || s.addr.ip().is_loopback())
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlocklistsConfig {
    /// Absolute, or relative to the working directory: already joined to the config's folder.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub size: u64,
    /// What the cached answers may take in memory, about, in bytes: an answer that came over TCP
    /// can be ~64 KB, so `size` alone does not bound the cache's memory.
    pub max_bytes: u64,
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub negative_max_ttl: u32,
    /// How long past its TTL an answer may still be served when upstream fails (RFC 8767).
    pub serve_stale_secs: u32,
    /// With a stale answer at hand, how long to wait for upstream before serving it: about the
    /// client's own retry timer (RFC 8767's "client response timer").
    pub stale_after: Duration,
    /// How long a resolution failure (every server answered SERVFAIL, REFUSED...) is kept, in
    /// seconds (RFC 9520 §3.2: at least 1, at most 300).
    pub servfail_ttl: u32,
}

/// Serde shapes of the file. Values that need checking are `Spanned` so an error can point at them.
mod raw {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct File {
        #[serde(default)]
        pub server: Server,
        pub upstream: Option<Upstream>,
        #[serde(default)]
        pub metrics: Metrics,
        #[serde(default)]
        pub blocklists: Blocklists,
        #[serde(default)]
        pub cache: Cache,
        #[serde(default)]
        pub limits: Limits,
        #[serde(default)]
        pub lists: Lists,
        #[serde(default)]
        pub egress: Egress,
        #[serde(default)]
        pub evidence: Evidence,
        #[serde(default)]
        pub querylog: QueryLog,
        #[serde(default)]
        pub clients: std::collections::BTreeMap<Spanned<String>, groups::raw::Addresses>,
        #[serde(default)]
        pub groups: Vec<groups::raw::Group>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Evidence {
        pub enabled: Option<bool>,
        pub path: Option<String>,
        pub retention_days: Option<Spanned<u32>>,
        pub flush_secs: Option<Spanned<u64>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct QueryLog {
        pub enabled: Option<bool>,
        pub path: Option<String>,
        pub only_matches: Option<bool>,
        pub max_bytes: Option<Spanned<u64>>,
        pub keep: Option<Spanned<u32>>,
        pub anonymize: Option<Anonymize>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Egress {
        pub country_db: Option<String>,
        pub asn_db: Option<String>,
        pub min_timeout_secs: Option<Spanned<u32>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Lists {
        pub state_dir: Option<String>,
        pub ca_file: Option<String>,
        pub connect_timeout: Option<Spanned<String>>,
        pub timeout: Option<Spanned<String>>,
        pub max_bytes: Option<Spanned<u64>>,
        pub retry_after: Option<Spanned<String>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Limits {
        pub client_qps: Option<u32>,
        pub slip: Option<u32>,
        pub exempt_clients: Option<Vec<Spanned<String>>>,
        pub max_inflight: Option<Spanned<usize>>,
        pub max_tcp_connections: Option<Spanned<usize>>,
        pub max_tcp_connections_per_client: Option<Spanned<usize>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Server {
        pub listen: Option<Vec<Spanned<String>>>,
        pub allow_clients: Option<Vec<Spanned<String>>>,
        pub block_response: Option<BlockResponse>,
        pub block_ttl: Option<u32>,
        pub tcp_idle_timeout_secs: Option<Spanned<u64>>,
        pub firefox_canary: Option<bool>,
        pub icloud_private_relay: Option<bool>,
        pub resolver_arpa: Option<bool>,
        pub tls_listen: Option<Spanned<Vec<Spanned<String>>>>,
        pub https_listen: Option<Spanned<Vec<Spanned<String>>>>,
        pub cert_file: Option<String>,
        pub key_file: Option<String>,
        pub tls_handshake_timeout_secs: Option<Spanned<u64>>,
        pub health_name: Option<Spanned<String>>,
        pub drain_secs: Option<Spanned<u64>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Upstream {
        pub servers: Spanned<Vec<Spanned<String>>>,
        pub ca_file: Option<Spanned<String>>,
        pub timeout_ms: Option<Spanned<u64>>,
        pub attempt_timeout_ms: Option<Spanned<u64>>,
        pub trust_ad: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Metrics {
        pub listen: Option<Spanned<String>>,
        pub enabled: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Blocklists {
        pub dir: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Cache {
        pub size: Option<u64>,
        pub max_bytes: Option<Spanned<u64>>,
        pub min_ttl: Option<u32>,
        pub max_ttl: Option<u32>,
        pub negative_max_ttl: Option<u32>,
        pub serve_stale_secs: Option<u32>,
        pub stale_after_ms: Option<u64>,
        pub servfail_ttl: Option<Spanned<u32>>,
    }
}

/// RFC 9520 §3.2: a resolution failure is cached for at least 1 s and at most 5 min.
const SERVFAIL_TTL_RANGE: std::ops::RangeInclusive<u32> = 1..=300;
const DEFAULT_SERVFAIL_TTL: u32 = 5;

pub const DEFAULT_LISTEN: [&str; 2] = ["127.0.0.1:5353", "[::1]:5353"];
/// Without `allow_clients` only the host itself is served: hushd is never an open resolver by default.
pub const DEFAULT_ALLOW_CLIENTS: [&str; 2] = ["127.0.0.0/8", "::1/128"];
/// `[cache] max_bytes`: 64 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;
/// The largest DNS message (over TCP): a smaller byte budget could never hold such an answer.
pub const MIN_CACHE_BYTES: u64 = 64 << 10;
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9153";
/// The host itself (monitoring, benchmarks) is never rate-limited.
pub const DEFAULT_EXEMPT_CLIENTS: [&str; 2] = ["127.0.0.1/32", "::1/128"];

impl Config {
    pub fn load(path: &Path) -> Result<Self, LoadErrors> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, the contents of `path` (used to resolve relative paths and
    /// to name the file in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, LoadErrors> {
        let raw: raw::File = toml::from_str(text).map_err(|e| LoadError::toml(path, text, &e))?;
        let mut errors = Vec::new();
        let mut err_at = |span: std::ops::Range<usize>, message: String| {
            errors.push(LoadError::at(path, text, span, message));
        };

        let listen = each(
            raw.server.listen.as_deref(),
            &DEFAULT_LISTEN,
            |s| parse_socket_addr(s, None),
            &mut err_at,
        );
        let allow_clients = each(
            raw.server.allow_clients.as_deref(),
            &DEFAULT_ALLOW_CLIENTS,
            parse_network,
            &mut err_at,
        );
        let tcp_idle_timeout = match &raw.server.tcp_idle_timeout_secs {
            Some(s) if *s.get_ref() == 0 => {
                err_at(s.span(), "tcp_idle_timeout_secs must be at least 1".into());
                Duration::from_secs(10)
            }
            Some(s) => Duration::from_secs(*s.get_ref()),
            // RFC 7766 §6.2.3: a few seconds to tens of seconds.
            None => Duration::from_secs(10),
        };

        let base = path.parent().unwrap_or(Path::new("."));
        let encrypted = encrypted_listeners(base, &raw.server, &mut err_at);

        let upstream = match &raw.upstream {
            None => {
                errors.push(LoadError::File {
                    path: path.to_path_buf(),
                    message: "missing [upstream] section: hushd needs at least one upstream server (servers = [\"9.9.9.9:53\"])".into(),
                });
                None
            }
            Some(up) => {
                let mut err_at = |span: std::ops::Range<usize>, message: String| {
                    errors.push(LoadError::at(path, text, span, message));
                };
                if up.servers.get_ref().is_empty() {
                    err_at(
                        up.servers.span(),
                        "upstream.servers is empty: list at least one resolver".into(),
                    );
                }
                let servers = each(
                    Some(up.servers.get_ref()),
                    &[],
                    UpstreamServer::parse,
                    &mut err_at,
                );
                let ca_file = up.ca_file.as_ref().and_then(|f| {
                    let file = path.parent().unwrap_or(Path::new(".")).join(f.get_ref());
                    match crate::upstream::load_ca_file(&file) {
                        Ok(_) => Some(file),
                        Err(e) => {
                            err_at(f.span(), e);
                            None
                        }
                    }
                });
                let mut millis = |v: &Option<Spanned<u64>>, default: u64, key: &str| match v {
                    Some(v) if !(50..=60_000).contains(v.get_ref()) => {
                        err_at(v.span(), format!("{key} must be between 50 and 60000"));
                        Duration::from_millis(default)
                    }
                    Some(v) => Duration::from_millis(*v.get_ref()),
                    None => Duration::from_millis(default),
                };
                let timeout = millis(&up.timeout_ms, 3000, "timeout_ms");
                let attempt_timeout = millis(&up.attempt_timeout_ms, 2000, "attempt_timeout_ms");
                Some(UpstreamConfig {
                    servers,
                    ca_file,
                    timeout,
                    attempt_timeout: attempt_timeout.min(timeout),
                    trust_ad: up.trust_ad,
                })
            }
        };

        let metrics_listen = if raw.metrics.enabled == Some(false) {
            None
        } else {
            match &raw.metrics.listen {
                Some(s) => match parse_socket_addr(s.get_ref(), None) {
                    Ok(a) => Some(a),
                    Err(m) => {
                        errors.push(LoadError::at(path, text, s.span(), m));
                        None
                    }
                },
                None => DEFAULT_METRICS_LISTEN.parse().ok(),
            }
        };

        let dir = base.join(raw.blocklists.dir.as_deref().unwrap_or("blocklists"));

        let max_bytes = match &raw.cache.max_bytes {
            Some(v) if *v.get_ref() < MIN_CACHE_BYTES => {
                errors.push(LoadError::at(
                    path,
                    text,
                    v.span(),
                    format!("max_bytes must be at least {MIN_CACHE_BYTES} (one answer of the largest size)"),
                ));
                MIN_CACHE_BYTES
            }
            Some(v) => *v.get_ref(),
            None => DEFAULT_CACHE_BYTES,
        };
        let cache = CacheConfig {
            size: raw.cache.size.unwrap_or(10_000),
            max_bytes,
            min_ttl: raw.cache.min_ttl.unwrap_or(0),
            max_ttl: raw.cache.max_ttl.unwrap_or(86_400),
            negative_max_ttl: raw.cache.negative_max_ttl.unwrap_or(3_600),
            serve_stale_secs: raw.cache.serve_stale_secs.unwrap_or(86_400),
            stale_after: Duration::from_millis(raw.cache.stale_after_ms.unwrap_or(1_800)),
            servfail_ttl: match &raw.cache.servfail_ttl {
                Some(v) if !SERVFAIL_TTL_RANGE.contains(v.get_ref()) => {
                    errors.push(LoadError::at(
                        path,
                        text,
                        v.span(),
                        "servfail_ttl must be between 1 and 300 (RFC 9520)",
                    ));
                    DEFAULT_SERVFAIL_TTL
                }
                Some(v) => *v.get_ref(),
                None => DEFAULT_SERVFAIL_TTL,
            },
        };
        if cache.min_ttl > cache.max_ttl {
            errors.push(LoadError::File {
                path: path.to_path_buf(),
                message: format!(
                    "cache.min_ttl ({}) is greater than cache.max_ttl ({})",
                    cache.min_ttl, cache.max_ttl
                ),
            });
        }

        let exempt_clients = each(
            raw.limits.exempt_clients.as_deref(),
            &DEFAULT_EXEMPT_CLIENTS,
            parse_network,
            &mut |span, m| errors.push(LoadError::at(path, text, span, m)),
        );
        let mut at_least_one =
            |value: &Option<Spanned<usize>>, key: &str, default: usize| match value {
                Some(v) if *v.get_ref() == 0 => {
                    errors.push(LoadError::at(
                        path,
                        text,
                        v.span(),
                        format!("{key} must be at least 1"),
                    ));
                    1
                }
                Some(v) => *v.get_ref(),
                None => default,
            };
        let max_inflight = at_least_one(&raw.limits.max_inflight, "max_inflight", 10_000);
        let max_tcp_connections = at_least_one(
            &raw.limits.max_tcp_connections,
            "max_tcp_connections",
            1_000,
        );
        let max_tcp_connections_per_client = at_least_one(
            &raw.limits.max_tcp_connections_per_client,
            "max_tcp_connections_per_client",
            32,
        );
        let limits = LimitsConfig {
            client_qps: raw.limits.client_qps.unwrap_or(500),
            slip: raw.limits.slip.unwrap_or(2),
            exempt_clients,
            max_inflight,
            max_tcp_connections,
            max_tcp_connections_per_client,
        };

        let lists = lists_config(base, &raw.lists, &mut |span, m| {
            errors.push(LoadError::at(path, text, span, m));
        });
        let min_timeout_secs = match &raw.egress.min_timeout_secs {
            Some(v) if *v.get_ref() == 0 => {
                errors.push(LoadError::at(
                    path,
                    text,
                    v.span(),
                    "min_timeout_secs must be at least 1".to_string(),
                ));
                DEFAULT_NFT_MIN_TIMEOUT_SECS
            }
            Some(v) => *v.get_ref(),
            None => DEFAULT_NFT_MIN_TIMEOUT_SECS,
        };
        let mut err_at = |span, m| errors.push(LoadError::at(path, text, span, m));
        let (evidence, querylog) =
            evidence_configs(base, &raw.evidence, &raw.querylog, &mut err_at);
        let (health_name, drain) = health_and_drain(&raw.server, &mut err_at);
        let clients = groups::client_names(&raw.clients, &mut err_at);
        let groups = groups::groups(&raw.groups, &clients, &mut err_at);
        let egress = EgressConfig {
            country_db: raw.egress.country_db.as_deref().map(|f| base.join(f)),
            asn_db: raw.egress.asn_db.as_deref().map(|f| base.join(f)),
            min_timeout_secs,
        };
        // Stored copies (`*.txt`) and their records (`*.meta.toml`) there would be read as lists.
        if lists.state_dir == dir {
            errors.push(LoadError::File {
                path: path.to_path_buf(),
                message: "[lists] state_dir must not be the blocklist folder: hushd writes its stored copies there".into(),
            });
        }

        match upstream {
            Some(upstream) if errors.is_empty() => Ok(Self {
                path: path.to_path_buf(),
                server: ServerConfig {
                    listen,
                    allow_clients,
                    block_response: raw.server.block_response.unwrap_or_default(),
                    block_ttl: raw.server.block_ttl.unwrap_or(60),
                    tcp_idle_timeout,
                    bypass: BypassDefence {
                        firefox_canary: raw.server.firefox_canary.unwrap_or(true),
                        icloud_private_relay: raw.server.icloud_private_relay.unwrap_or(true),
                        resolver_arpa: raw.server.resolver_arpa.unwrap_or(true),
                    },
                    tls_listen: encrypted.tls_listen,
                    https_listen: encrypted.https_listen,
                    tls: encrypted.files,
                    tls_handshake_timeout: encrypted.handshake_timeout,
                    health_name,
                    drain,
                },
                upstream,
                metrics: MetricsConfig {
                    listen: metrics_listen,
                },
                blocklists: BlocklistsConfig { dir },
                cache,
                limits,
                lists,
                egress,
                evidence,
                querylog,
                clients,
                groups,
            }),
            _ => Err(LoadErrors(errors)),
        }
    }
}

/// `[server]`'s encrypted listeners, as `encrypted_listeners` reads them.
struct EncryptedListeners {
    tls_listen: Vec<SocketAddr>,
    https_listen: Vec<SocketAddr>,
    files: Option<TlsFiles>,
    handshake_timeout: Duration,
}

/// Longest `drain_secs`: systemd's default stop timeout is 90 s, and a load balancer that
/// needs longer than a minute to notice is misconfigured.
const MAX_DRAIN_SECS: u64 = 60;

/// `[server] health_name` (a valid name) and `drain_secs` (0..=60).
fn health_and_drain(
    raw: &raw::Server,
    err_at: &mut impl FnMut(std::ops::Range<usize>, String),
) -> (Option<LowerName>, Duration) {
    let health_name = raw
        .health_name
        .as_ref()
        .and_then(|s| match Name::from_ascii(s.get_ref()) {
            Ok(mut name) if !s.get_ref().is_empty() && !name.is_root() => {
                name.set_fqdn(true);
                Some(LowerName::new(&name))
            }
            _ => {
                err_at(
                    s.span(),
                    format!("health_name {:?} is not a DNS name", s.get_ref()),
                );
                None
            }
        });
    let drain = match &raw.drain_secs {
        Some(s) if *s.get_ref() > MAX_DRAIN_SECS => {
            err_at(
                s.span(),
                format!("drain_secs must be at most {MAX_DRAIN_SECS}"),
            );
            Duration::ZERO
        }
        Some(s) => Duration::from_secs(*s.get_ref()),
        None => Duration::ZERO,
    };
    (health_name, drain)
}

/// `tls_listen`, `https_listen`, `cert_file`, `key_file`, `tls_handshake_timeout_secs`: a
/// listener without both files is an error at the listener's key, so the admin learns it from
/// `hushd check` rather than from a client that cannot connect.
fn encrypted_listeners(
    base: &Path,
    raw: &raw::Server,
    err_at: &mut impl FnMut(std::ops::Range<usize>, String),
) -> EncryptedListeners {
    let mut addrs = |key: &Option<Spanned<Vec<Spanned<String>>>>| match key {
        Some(list) => each(
            Some(list.get_ref()),
            &[],
            |s| parse_socket_addr(s, None),
            err_at,
        ),
        None => Vec::new(),
    };
    let tls_listen = addrs(&raw.tls_listen);
    let https_listen = addrs(&raw.https_listen);
    let files = match (&raw.cert_file, &raw.key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert_file: base.join(cert),
            key_file: base.join(key),
        }),
        (cert, key) => {
            let missing = match (cert, key) {
                (None, None) => "cert_file and key_file",
                (None, Some(_)) => "cert_file",
                _ => "key_file",
            };
            for (name, list) in [
                ("tls_listen", &raw.tls_listen),
                ("https_listen", &raw.https_listen),
            ] {
                if let Some(list) = list.as_ref().filter(|l| !l.get_ref().is_empty()) {
                    err_at(
                        list.span(),
                        format!(
                            "{name} needs [server] {missing}: the certificate (chain) and private key the listener presents, as PEM files"
                        ),
                    );
                }
            }
            None
        }
    };
    let handshake_timeout = match &raw.tls_handshake_timeout_secs {
        Some(s) if *s.get_ref() == 0 => {
            err_at(
                s.span(),
                "tls_handshake_timeout_secs must be at least 1".into(),
            );
            DEFAULT_TLS_HANDSHAKE_TIMEOUT
        }
        Some(s) => Duration::from_secs(*s.get_ref()),
        None => DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    };
    EncryptedListeners {
        tls_listen,
        https_listen,
        files,
        handshake_timeout,
    }
}

/// A client gets this long to finish its TLS handshake: long enough for a slow phone link,
/// short enough that silent connections cannot hold the connection caps for long.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// `[lists] max_bytes`: 64 MiB, well above the largest public blocklists (~20 MiB).
pub const DEFAULT_LIST_MAX_BYTES: u64 = 64 << 20;

/// Where stored copies go without `state_dir`: under systemd's `StateDirectory=` (which sets
/// `$STATE_DIRECTORY`, /var/lib/hushd with the shipped unit), else beside the config, since
/// /var/lib is not writable by an unprivileged user run by hand.
fn default_state_dir(config_dir: &Path) -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        // systemd joins several state directories with ':'; the first is ours
        Some(dirs) if !dirs.is_empty() => {
            let first = dirs
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            PathBuf::from(first).join("lists")
        }
        _ => config_dir.join("state").join("lists"),
    }
}

fn lists_config(
    base: &Path,
    raw: &raw::Lists,
    err_at: &mut impl FnMut(std::ops::Range<usize>, String),
) -> ListsConfig {
    let mut duration = |v: &Option<Spanned<String>>, default: Duration, key: &str| match v {
        None => default,
        Some(v) => match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d >= Duration::from_millis(100) => d,
            Ok(_) => {
                err_at(v.span(), format!("{key} must be at least 100ms"));
                default
            }
            Err(e) => {
                err_at(
                    v.span(),
                    format!("{key}: {e} (write a duration such as \"30s\" or \"5m\")"),
                );
                default
            }
        },
    };
    let connect_timeout = duration(
        &raw.connect_timeout,
        Duration::from_secs(10),
        "connect_timeout",
    );
    let timeout = duration(&raw.timeout, Duration::from_secs(300), "timeout");
    let retry_after = duration(&raw.retry_after, Duration::from_secs(60), "retry_after");
    let max_bytes = match &raw.max_bytes {
        Some(v) if *v.get_ref() == 0 => {
            err_at(v.span(), "max_bytes must be at least 1".into());
            DEFAULT_LIST_MAX_BYTES
        }
        Some(v) => *v.get_ref(),
        None => DEFAULT_LIST_MAX_BYTES,
    };
    ListsConfig {
        state_dir: raw
            .state_dir
            .as_deref()
            .map_or_else(|| default_state_dir(base), |d| base.join(d)),
        ca_file: raw.ca_file.as_deref().map(|f| base.join(f)),
        connect_timeout,
        timeout,
        max_bytes,
        retry_after,
    }
}

/// `[evidence]` and `[querylog]`. Files go beside the config unless given absolute; under
/// systemd (`$STATE_DIRECTORY`), in the state folder, which the unit makes writable.
fn evidence_configs(
    base: &Path,
    evidence: &raw::Evidence,
    querylog: &raw::QueryLog,
    err_at: &mut impl FnMut(std::ops::Range<usize>, String),
) -> (EvidenceConfig, QueryLogConfig) {
    let state = match std::env::var_os("STATE_DIRECTORY") {
        Some(dirs) if !dirs.is_empty() => PathBuf::from(
            dirs.to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        _ => base.to_path_buf(),
    };
    let at_least =
        |v: &Option<Spanned<u64>>,
         min: u64,
         default: u64,
         key: &str,
         err_at: &mut dyn FnMut(std::ops::Range<usize>, String)| match v {
            Some(v) if *v.get_ref() < min => {
                err_at(v.span(), format!("{key} must be at least {min}"));
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        };
    let flush_secs = at_least(&evidence.flush_secs, 1, 5, "flush_secs", err_at);
    let retention_days = match &evidence.retention_days {
        Some(v) if *v.get_ref() == 0 => {
            err_at(v.span(), "retention_days must be at least 1".into());
            90
        }
        Some(v) => *v.get_ref(),
        None => 90,
    };
    let max_bytes = at_least(&querylog.max_bytes, 1 << 20, 100 << 20, "max_bytes", err_at);
    let keep = match &querylog.keep {
        Some(v) if *v.get_ref() > 1000 => {
            err_at(v.span(), "keep must be at most 1000".into());
            5
        }
        Some(v) => *v.get_ref(),
        None => 5,
    };
    (
        EvidenceConfig {
            enabled: evidence.enabled.unwrap_or(true),
            path: state.join(evidence.path.as_deref().unwrap_or("evidence.db")),
            retention_days,
            flush: Duration::from_secs(flush_secs),
        },
        QueryLogConfig {
            enabled: querylog.enabled.unwrap_or(false),
            path: state.join(querylog.path.as_deref().unwrap_or("queries.jsonl")),
            only_matches: querylog.only_matches.unwrap_or(false),
            max_bytes,
            keep,
            anonymize: querylog.anonymize.unwrap_or_default(),
        },
    )
}

/// Parses each value of a list key, reporting each bad one at its place; without the key, the
/// defaults (which always parse).
fn each<T>(
    values: Option<&[Spanned<String>]>,
    defaults: &[&str],
    parse: impl Fn(&str) -> Result<T, String>,
    err_at: &mut impl FnMut(std::ops::Range<usize>, String),
) -> Vec<T> {
    match values {
        Some(values) => values
            .iter()
            .filter_map(|v| parse(v.get_ref()).map_err(|m| err_at(v.span(), m)).ok())
            .collect(),
        None => defaults.iter().filter_map(|d| parse(d).ok()).collect(),
    }
}

/// `1.2.3.4:53`, `[::1]:53`, or (where a default port is given) a bare address.
fn parse_socket_addr(s: &str, default_port: Option<u16>) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let (Some(port), Ok(ip)) = (default_port, s.parse::<IpAddr>()) {
        return Ok(SocketAddr::new(ip, port));
    }
    Err(match default_port {
        Some(_) => {
            format!("{s:?} is not an address (write 1.2.3.4, 1.2.3.4:53 or [2001:db8::1]:53)")
        }
        None => format!("{s:?} is not an address with a port (write 127.0.0.1:5353 or [::1]:5353)"),
    })
}

/// A CIDR (`10.0.0.0/8`) or a single address (`192.0.2.7`, taken as a host route).
fn parse_network(s: &str) -> Result<IpNetwork, String> {
    let net: IpNetwork = s
        .parse()
        .map_err(|e| format!("{s:?} is not a network (write 192.168.1.0/24 or fd00::/8): {e}"))?;
    if net.network() != net.ip() {
        return Err(format!(
            "{s:?} has host bits set; did you mean {}/{}?",
            net.network(),
            net.prefix()
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, LoadErrors> {
        Config::parse(Path::new("/etc/hushd/hushd.toml"), text)
    }

    const MINIMAL: &str = "[upstream]\nservers = [\"192.0.2.1\"]\n";

    #[test]
    fn groups_take_one_egress_set_or_several_and_report_bad_ones() {
        let c = parse(&format!("{MINIMAL}[[groups]]\nname = \"a\"\negress_set = \"inet hushd a4\"\n[[groups]]\nname = \"b\"\negress_set = [\"inet hushd b4\", \"inet hushd b6\"]\n")).unwrap();
        assert_eq!(c.groups[0].egress_set.len(), 1);
        assert_eq!(c.groups[1].egress_set[1].to_string(), "inet hushd b6");
        let e = parse(&format!(
            "{MINIMAL}[[groups]]\nname = \"a\"\negress_set = \"hushd a4\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("group \"a\" egress_set: \"hushd a4\": write an nftables set"),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_safe() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.server.allow_clients,
            vec![
                "127.0.0.0/8".parse::<IpNetwork>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        assert!(c.server.listen.iter().all(|a| a.ip().is_loopback()));
        assert!(c.metrics.listen.unwrap().ip().is_loopback());
        assert_eq!(
            c.upstream.servers,
            vec![UpstreamServer {
                addr: "192.0.2.1:53".parse().unwrap(),
                transport: Transport::Plain
            }]
        );
        assert_eq!(c.upstream.ca_file, None);
        assert_eq!(c.blocklists.dir, Path::new("/etc/hushd/blocklists"));
        assert_eq!(c.server.block_response, BlockResponse::Nxdomain);
        assert!(c.upstream.timeout < Duration::from_secs(5));
    }

    #[test]
    fn bypass_defences_are_on_unless_turned_off_one_by_one() {
        assert_eq!(
            parse(MINIMAL).unwrap().server.bypass,
            BypassDefence::default()
        );
        let all_on = BypassDefence::default();
        assert!(all_on.firefox_canary && all_on.icloud_private_relay && all_on.resolver_arpa);
        for (key, off) in [
            (
                "firefox_canary",
                BypassDefence {
                    firefox_canary: false,
                    ..all_on
                },
            ),
            (
                "icloud_private_relay",
                BypassDefence {
                    icloud_private_relay: false,
                    ..all_on
                },
            ),
            (
                "resolver_arpa",
                BypassDefence {
                    resolver_arpa: false,
                    ..all_on
                },
            ),
        ] {
            let c = parse(&format!("[server]\n{key} = false\n{MINIMAL}")).unwrap();
            assert_eq!(c.server.bypass, off, "{key}");
        }
        // not a boolean: an error at its place, not a silent default
        let e = parse(&format!("[server]\nfirefox_canary = \"no\"\n{MINIMAL}")).unwrap_err();
        let text = e.0[0].to_string();
        assert!(text.contains(":2:"), "{text}");
    }

    #[test]
    fn lists_settings_default_and_resolve_beside_the_config() {
        let c = parse(MINIMAL).unwrap();
        if std::env::var_os("STATE_DIRECTORY").is_none() {
            assert_eq!(c.lists.state_dir, Path::new("/etc/hushd/state/lists"));
        }
        assert_eq!(c.lists.ca_file, None);
        assert_eq!(c.lists.max_bytes, 64 << 20);
        assert_eq!(c.lists.timeout, Duration::from_secs(300));
        assert_eq!(c.lists.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.lists.retry_after, Duration::from_secs(60));
        let c = parse(&format!(
            "{MINIMAL}[lists]\nstate_dir = \"/var/lib/x\"\nca_file = \"office.pem\"\ntimeout = \"2m 30s\"\nconnect_timeout = \"500ms\"\nmax_bytes = 1024\nretry_after = \"5m\"\n"
        ))
        .unwrap();
        assert_eq!(c.lists.state_dir, Path::new("/var/lib/x"));
        assert_eq!(
            c.lists.ca_file.as_deref(),
            Some(Path::new("/etc/hushd/office.pem"))
        );
        assert_eq!(c.lists.timeout, Duration::from_secs(150));
        assert_eq!(c.lists.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.lists.max_bytes, 1024);
        assert_eq!(c.lists.retry_after, Duration::from_secs(300));
    }

    #[test]
    fn bad_lists_settings_are_reported_at_their_place() {
        let errs = parse(&format!(
            "{MINIMAL}[lists]\ntimeout = \"soon\"\nretry_after = \"1ms\"\nmax_bytes = 0\n"
        ))
        .unwrap_err();
        let lines: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains(":4:11: timeout: "), "{}", lines[0]);
        assert!(
            lines[1].contains(":5:15: retry_after must be at least 100ms"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains(":6:13: max_bytes must be at least 1"),
            "{}",
            lines[2]
        );
        let err = parse(&format!("{MINIMAL}[lists]\nstate_dir = \"blocklists\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not be the blocklist folder"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_location() {
        let err =
            parse("[server]\nlisten = []\nlisen = 1\n[upstream]\nservers = [\"192.0.2.1\"]\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with("/etc/hushd/hushd.toml:3:1: unknown field `lisen`"),
            "{err}"
        );
        let err = parse("bogus = 1\n[upstream]\nservers = [\"192.0.2.1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1:1: unknown field `bogus`"), "{err}");
    }

    #[test]
    fn every_bad_value_is_reported_at_its_place() {
        let text = "[server]\nlisten = [\"127.0.0.1\"]\nallow_clients = [\"10.0.0.1/8\", \"nonsense\"]\n[upstream]\nservers = [\"nope\"]\n";
        let errs = parse(text).unwrap_err();
        let lines: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].contains(":2:11: \"127.0.0.1\" is not an address with a port"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(":3:18: \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains(":3:32:"), "{}", lines[2]);
        assert!(lines[3].contains(":5:12:"), "{}", lines[3]);
    }

    #[test]
    fn encrypted_servers_parse_beside_plain_ones_and_bad_forms_point_at_their_place() {
        let c = parse(
            "[upstream]\nservers = [\"192.0.2.1\", \"tls://192.0.2.2#dot.example\", \"https://192.0.2.3/q#doh.example\"]\n",
        )
        .unwrap();
        let shown: Vec<String> = c.upstream.servers.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "192.0.2.1:53",
                "tls://192.0.2.2:853#dot.example",
                "https://192.0.2.3:443/q#doh.example"
            ]
        );
        let err = parse("[upstream]\nservers = [\"192.0.2.1\",\n  \"tls://dot.example\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":3:3: \"tls://dot.example\": "), "{err}");
        assert!(err.contains("give the server's IP address"), "{err}");
    }

    #[test]
    fn upstream_ca_file_must_hold_a_certificate_and_is_found_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hushd.toml");
        let text = |file: &str| {
            format!("[upstream]\nservers = [\"tls://192.0.2.1\"]\nca_file = \"{file}\"\n")
        };
        let err = Config::parse(&config, &text("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":3:11: cannot read [upstream] ca_file"),
            "{err}"
        );
        std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
        let err = Config::parse(&config, &text("empty.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".into()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        let c = Config::parse(&config, &text("ca.pem")).unwrap();
        assert_eq!(c.upstream.ca_file, Some(dir.path().join("ca.pem")));
    }

    #[test]
    fn encrypted_listeners_need_both_files_and_report_it_at_the_listener() {
        let up = "[upstream]\nservers = [\"127.0.0.1:53\"]\n";
        let c = parse(&format!("[server]\n{up}")).unwrap();
        assert!(c.server.tls_listen.is_empty() && c.server.https_listen.is_empty());
        assert_eq!(c.server.tls, None);
        assert_eq!(
            c.server.tls_handshake_timeout,
            DEFAULT_TLS_HANDSHAKE_TIMEOUT
        );

        let text = format!(
            "[server]\ntls_listen = [\"0.0.0.0:853\"]\nhttps_listen = [\"[::]:443\"]\ncert_file = \"tls/fullchain.pem\"\nkey_file = \"/etc/hushd/tls/privkey.pem\"\ntls_handshake_timeout_secs = 2\n{up}"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.server.tls_listen, vec!["0.0.0.0:853".parse().unwrap()]);
        assert_eq!(c.server.https_listen, vec!["[::]:443".parse().unwrap()]);
        let files = c.server.tls.unwrap();
        // relative to the config's folder, absolute as written
        assert_eq!(files.cert_file, Path::new("/etc/hushd/tls/fullchain.pem"));
        assert_eq!(files.key_file, Path::new("/etc/hushd/tls/privkey.pem"));
        assert_eq!(c.server.tls_handshake_timeout, Duration::from_secs(2));

        let text = format!(
            "[server]\ntls_listen = [\"0.0.0.0:853\"]\nhttps_listen = [\"0.0.0.0:443\"]\nkey_file = \"k.pem\"\ntls_handshake_timeout_secs = 0\n{up}"
        );
        let lines: Vec<String> = parse(&text)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].contains(":2:14: tls_listen needs [server] cert_file"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(":3:16: https_listen needs [server] cert_file"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains(":5:30: tls_handshake_timeout_secs must be at least 1"),
            "{}",
            lines[2]
        );
        let text = format!(
            "[server]\ntls_listen = [\"0.0.0.0\"]\ncert_file = \"c\"\nkey_file = \"k\"\n{up}"
        );
        assert!(parse(&text).is_err());
    }

    #[test]
    fn servfail_ttl_defaults_to_five_seconds_and_stays_within_rfc_9520() {
        assert_eq!(parse(MINIMAL).unwrap().cache.servfail_ttl, 5);
        let with = |v: &str| parse(&format!("{MINIMAL}[cache]\nservfail_ttl = {v}\n"));
        assert_eq!(with("300").unwrap().cache.servfail_ttl, 300);
        for bad in ["0", "301"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.contains(":4:16: servfail_ttl must be between 1 and 300"),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_upstream_is_an_error() {
        let err = parse("[server]\n").unwrap_err().to_string();
        assert!(err.contains("missing [upstream]"), "{err}");
        let err = parse("[upstream]\nservers = []\n").unwrap_err().to_string();
        assert!(err.contains("upstream.servers is empty"), "{err}");
    }

    #[test]
    fn ad_is_trusted_from_loopback_upstreams_unless_the_config_says_otherwise() {
        let trusted = |text: &str| trusts_ad(&parse(text).unwrap().upstream);
        assert!(trusted(
            "[upstream]\nservers = [\"127.0.0.1:5353\", \"[::1]:53\"]\n"
        ));
        assert!(!trusted(
            "[upstream]\nservers = [\"127.0.0.1\", \"192.0.2.1\"]\n"
        ));
        assert!(trusted(
            "[upstream]\nservers = [\"192.0.2.1\"]\ntrust_ad = true\n"
        ));
        assert!(!trusted(
            "[upstream]\nservers = [\"127.0.0.1\"]\ntrust_ad = false\n"
        ));
    }

    #[test]
    fn block_response_modes_parse() {
        for (text, want) in [
            ("nxdomain", BlockResponse::Nxdomain),
            ("null", BlockResponse::Null),
            ("refused", BlockResponse::Refused),
        ] {
            let c = parse(&format!("[server]\nblock_response = \"{text}\"\n{MINIMAL}")).unwrap();
            assert_eq!(c.server.block_response, want);
        }
        assert!(parse(&format!("[server]\nblock_response = \"drop\"\n{MINIMAL}")).is_err());
    }

    #[test]
    fn limits_default_to_a_generous_rate_with_the_host_exempt() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.limits.client_qps, 500);
        assert_eq!(c.limits.exempt_clients.len(), 2);
        let c = parse(&format!(
            "[limits]\nclient_qps = 0\nexempt_clients = []\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.limits.client_qps, 0);
        assert!(c.limits.exempt_clients.is_empty());
        assert!(parse(&format!("[limits]\nmax_inflight = 0\n{MINIMAL}")).is_err());
    }

    #[test]
    fn cache_bytes_default_to_64_mib_and_must_fit_one_large_answer() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.cache.max_bytes, 64 << 20);
        let c = parse(&format!("[cache]\nmax_bytes = 200000\n{MINIMAL}")).unwrap();
        assert_eq!(c.cache.max_bytes, 200_000);
        let err = parse(&format!("[cache]\nmax_bytes = 1000\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2:13: max_bytes must be at least 65536"),
            "{err}"
        );
    }

    #[test]
    fn metrics_can_be_disabled() {
        let c = parse(&format!("[metrics]\nenabled = false\n{MINIMAL}")).unwrap();
        assert_eq!(c.metrics.listen, None);
    }
}
