//! The composition root: loads the config, builds every part, binds the sockets and wires
//! signals, reload and metrics together. Errors here get their context and end the process.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, anyhow};
use arc_swap::ArcSwap;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::{
    certs::CertStore,
    config::Config,
    egress::nft::NftWriter,
    evidence::querylog::QueryLog,
    evidence::report::publish_devices,
    evidence::{Evidence, store::unusable_path},
    handler::QueryHandler,
    http,
    https::{ALPN_DOH, HttpsServer},
    limits::TcpConnectionLimiter,
    listener,
    lists::refresh::{self, Refresher},
    metrics::Metrics,
    policy_thread::PolicyThread,
    reload::{Firewall, Live, Reloader, load_policy, raw_config, render_config},
    tcp::TcpServer,
    tls::{ALPN_DOT, TlsServer},
    udp,
};

/// How often `hushd_evidence_devices` is counted again from the store.
const DEVICES_EVERY: Duration = Duration::from_secs(60);

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let (config, raw) = Config::parse(config_path, &text)
        .and_then(|config| Ok((config, raw_config(config_path, &text)?)))
        .map_err(|e| anyhow!("{e}"))
        .context("invalid config")?;
    let running_config = Arc::new(ArcSwap::from_pointee(render_config(&raw)));
    let evidence_path: crate::evidence::StorePath = Arc::new(arc_swap::ArcSwapOption::new(
        config
            .evidence
            .enabled
            .then(|| Arc::new(config.evidence.path.clone())),
    ));
    warn_if_root();

    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    // Subscriptions start from their stored copies: startup never waits for the network.
    let builder = PolicyThread::spawn().context("cannot start the policy thread")?;
    // The firewall-set writer's thread idles until a list or group names a set.
    let nft = NftWriter::start(metrics.clone(), config.egress.min_timeout_secs)
        .context("cannot start the nftables writer")?;
    let firewall = Firewall::Feed(nft.clone());
    let (policy, plan) = {
        let (config, firewall) = (config.clone(), firewall.clone());
        builder.run_blocking(move || load_policy(&config, &firewall))
    }
    .ok_or_else(|| anyhow!("the policy build failed"))?
    .map_err(|e| anyhow!("{e}"))
    .context("invalid blocklists")?;
    for note in plan.notes() {
        tracing::warn!("{note}");
    }
    refresh::announce(&plan, &metrics);
    metrics.policy_loaded(
        policy.lists().iter().map(|l| (&*l.name, l.domains)),
        policy.domain_count(),
    );
    metrics.entries_skipped(policy.skipped());
    let (lists, names) = (policy.lists().len(), policy.domain_count());
    let policy = Arc::new(ArcSwap::from_pointee(policy));
    let mut handler = QueryHandler::new(&config, policy.clone(), metrics.clone())
        .await
        .context("cannot set up the upstream resolvers")?;
    handler.nft = Some(nft);
    // List matches go to the evidence store's thread; disabled, there is no thread and no queue.
    let evidence = if config.evidence.enabled {
        let evidence = Evidence::start(&config.evidence, config.querylog.anonymize, &metrics)
            .context("cannot start the evidence writer")?;
        handler.evidence.store(Some(Arc::new(evidence.sink())));
        Some(evidence)
    } else {
        None
    };
    let evidence = Arc::new(Mutex::new(evidence));
    // Opt-in: every query of every person is sensitive (docs/privacy.md).
    if config.querylog.enabled {
        let log = QueryLog::start(&config.querylog, &metrics)
            .context("cannot start the query log writer")?;
        tracing::info!(path = %config.querylog.path.display(), only_matches = config.querylog.only_matches, "query log on");
        handler.querylog.store(Some(Arc::new(log)));
    }
    let querylog = handler.querylog.clone();
    let (cache, upstream) = (handler.cache.clone(), handler.upstream.load_full());
    // Both transports have their own loops in front of the same handler: UDP to answer without a
    // task per datagram (udp.rs), TCP to cap connections at accept (tcp.rs).
    let shutdown = CancellationToken::new();
    let live_handler = handler.clone();
    let handler = Arc::new(handler);
    let tcp_limiter = Arc::new(TcpConnectionLimiter::new(
        config.limits.max_tcp_connections,
        config.limits.max_tcp_connections_per_client,
        config.limits.exempt_clients.clone(),
        config.server.tcp_idle_timeout,
    ));
    let tcp_server = Arc::new(TcpServer {
        handler: handler.clone(),
        limiter: tcp_limiter.clone(),
    });
    let workers = udp_workers();
    for &addr in &config.server.listen {
        let tcp =
            listener::bind_tcp(addr).with_context(|| format!("cannot listen on {addr} (TCP)"))?;
        tokio::spawn(tcp_server.clone().serve(tcp, shutdown.clone()));
        udp::serve(addr, workers, handler.clone(), &shutdown)
            .with_context(|| format!("cannot listen on {addr} (UDP)"))?;
    }
    // DoT and DoH: the same accept loop and caps as TCP, after a TLS handshake.
    let (hangups, hangup_count) = tokio::sync::watch::channel(0u64);
    if let Some(files) = &config.server.tls {
        let has_listeners =
            !config.server.tls_listen.is_empty() || !config.server.https_listen.is_empty();
        if has_listeners {
            start_encrypted(
                &config,
                files.clone(),
                &tcp_server,
                hangup_count.clone(),
                &shutdown,
            )?;
        }
    }

    if let Some(addr) = config.metrics.listen {
        let listener = http::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        let (metrics, shutdown, running_config) =
            (metrics.clone(), shutdown.clone(), running_config.clone());
        let explain_from = http::ExplainSource::new(
            policy.clone(),
            config.blocklists.dir.clone(),
            config.lists.state_dir.clone(),
            crate::explain::default_client(&config),
        );
        let evidence = http::EvidenceSource::new(evidence_path.clone());
        tokio::spawn(async move {
            let served = http::serve(
                listener,
                metrics,
                explain_from,
                evidence,
                running_config,
                shutdown,
            )
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }

    // The devices gauge is counted from the store, never on the query path; it idles while the
    // store is off (a reload may turn it on).
    tokio::spawn(publish_devices(
        evidence_path.clone(),
        policy.clone(),
        metrics.clone(),
        DEVICES_EVERY,
        shutdown.clone(),
    ));

    // Capacity 1: a pending reload already covers any change that comes before it runs.
    let (trigger, requests) = tokio::sync::mpsc::channel(1);
    let (plans, plan) = tokio::sync::watch::channel(Arc::new(plan));
    tokio::spawn(
        Reloader::new(
            config.clone(),
            raw,
            Live {
                handler: live_handler,
                tcp: tcp_limiter,
                evidence: evidence.clone(),
                evidence_path,
                running_config,
            },
            policy,
            metrics.clone(),
            builder,
            trigger.clone(),
            firewall,
        )
        .with_plans(plans)
        .run(requests),
    );
    tokio::spawn(
        Refresher {
            metrics: metrics.clone(),
            trigger: trigger.clone(),
            hangups: hangup_count,
            shutdown: shutdown.clone(),
        }
        .run(plan),
    );

    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let reopen = querylog.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading, and refreshing subscriptions older than a minute");
            let _ = trigger.try_send(());
            hangups.send_modify(|n| *n += 1);
            // logrotate moved the file away: the next lines go to a new one at its path
            if let Some(log) = &*reopen.load() {
                log.reopen();
            }
        }
    });
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let stop = shutdown.clone();
    let (draining, drain_policy) = (handler.draining.clone(), handler.policy.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        // `drain_secs`: keep answering while the health name says we are going, so a load
        // balancer in front moves clients to another hushd before this one stops listening
        let drain = drain_policy.load().drain;
        if !drain.is_zero() {
            draining.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                drain_secs = drain.as_secs(),
                "draining: the health name is REFUSED, every other query still answered"
            );
            tokio::select! {
                () = tokio::time::sleep(drain) => {},
                // a second signal stops at once
                _ = terminate.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        tracing::info!("shutting down");
        stop.cancel();
    });

    {
        let (cache, metrics) = (cache.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics
                    .cache_entries
                    .set(i64::try_from(cache.len()).unwrap_or(i64::MAX));
                metrics
                    .cache_bytes
                    .set(i64::try_from(cache.bytes()).unwrap_or(i64::MAX));
            }
        });
    }

    tracing::info!(
        listen = ?config.server.listen,
        tls_listen = ?config.server.tls_listen,
        https_listen = ?config.server.https_listen,
        upstream = ?upstream.addrs().collect::<Vec<_>>(),
        metrics = ?config.metrics.listen,
        lists,
        names,
        "hushd ready"
    );
    // Tell systemd (Type=notify) we serve; outside systemd this does nothing.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    shutdown.cancelled().await;
    if let Some(log) = querylog.load_full() {
        // the last second of lines, still in the writer's buffer
        tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(2)))
            .await
            .ok();
    }
    // A clean stop loses no evidence: what the writer holds is written before exit.
    let evidence = evidence.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(evidence) = evidence {
        let _ = tokio::task::spawn_blocking(move || evidence.stop(EVIDENCE_STOP_WAIT)).await;
    }
    Ok(())
}

/// Binds the DoT and DoH listeners with the certificate of `files`, reloaded when the files
/// change or on SIGHUP (`hangups`).
fn start_encrypted(
    config: &Config,
    files: crate::config::TlsFiles,
    tcp: &Arc<TcpServer>,
    hangups: tokio::sync::watch::Receiver<u64>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let certs = CertStore::load(files).context("cannot load the TLS certificate")?;
    certs
        .clone()
        .watch(hangups, shutdown.clone())
        .context("cannot watch the TLS certificate files")?;
    let handshake_timeout = config.server.tls_handshake_timeout;
    if !config.server.tls_listen.is_empty() {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
            certs.server_config(&[ALPN_DOT]).context("TLS setup")?,
        ));
        let server = Arc::new(TlsServer {
            tcp: tcp.clone(),
            acceptor,
            handshake_timeout,
        });
        for &addr in &config.server.tls_listen {
            let listener = listener::bind_tcp(addr)
                .with_context(|| format!("cannot listen on {addr} (DNS over TLS)"))?;
            tokio::spawn(server.clone().serve(listener, shutdown.clone()));
        }
    }
    if !config.server.https_listen.is_empty() {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
            certs.server_config(&ALPN_DOH).context("TLS setup")?,
        ));
        let server = Arc::new(HttpsServer::new(tcp.clone(), acceptor, handshake_timeout));
        for &addr in &config.server.https_listen {
            let listener = listener::bind_tcp(addr)
                .with_context(|| format!("cannot listen on {addr} (DNS over HTTPS)"))?;
            tokio::spawn(server.clone().serve(listener, shutdown.clone()));
        }
    }
    Ok(())
}

/// How long a stop waits for the evidence writer's last flush.
const EVIDENCE_STOP_WAIT: Duration = Duration::from_secs(5);

/// One UDP socket per core the process may use: each worker loop then keeps one core busy.
fn udp_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Loads and validates the config and every list without starting; the errors, if any, are the
/// exact ones a reload would log. Per list: its names, and for its file the format used and
/// the lines left out, by reason, with the first few.
pub fn check(config_path: &Path) -> Result<String, crate::diagnostic::LoadErrors> {
    let config = Config::load(config_path)?;
    // Running, an unusable store or query log is logged and retried and DNS goes on; here it
    // is an error, so the admin hears of it before the evidence or the log is missing.
    let unusable: Vec<_> = [
        (
            "[evidence] path",
            config.evidence.enabled,
            &config.evidence.path,
        ),
        (
            "[querylog] path",
            config.querylog.enabled,
            &config.querylog.path,
        ),
    ]
    .into_iter()
    .filter(|(_, enabled, _)| *enabled)
    .filter_map(|(key, _, path)| {
        unusable_path(path).map(|why| crate::diagnostic::LoadError::File {
            path: config_path.to_path_buf(),
            message: format!("{key} {}: {why}", path.display()),
        })
    })
    .collect();
    if !unusable.is_empty() {
        return Err(crate::diagnostic::LoadErrors(unusable));
    }
    if let Some(files) = &config.server.tls {
        crate::certs::load_pair(files, &crate::certs::provider()).map_err(|e| {
            crate::diagnostic::LoadErrors(vec![crate::diagnostic::LoadError::File {
                path: config_path.to_path_buf(),
                message: format!("[server] cert_file / key_file: {e}"),
            }])
        })?;
    }
    let (policy, plan) = load_policy(&config, &Firewall::Check)?;
    let mut out = format!("{}: ok\n", config_path.display());
    for (tag, l) in policy.lists().iter().enumerate() {
        out.push_str(&format!(
            "  list {:<20} {:<6} {:>8} names\n",
            l.name,
            l.action.as_str(),
            l.domains
        ));
        out.push_str(&check_address_lines(
            &policy,
            tag as crate::policy::matcher::Tag,
        ));
        if let Some(file) = &l.file {
            out.push_str(&check_file_lines("file", file, l.patterns));
        } else if l.patterns > 0 {
            out.push_str(&format!("    {} patterns\n", l.patterns));
        }
        if let Some(copy) = &l.copy {
            out.push_str(&check_file_lines(
                "subscription copy",
                copy,
                copy.tally.patterns,
            ));
        }
    }
    out.push_str(&format!(
        "  {} distinct names in {} lists\n",
        policy.domain_count(),
        policy.lists().len()
    ));
    for db in policy.geo().databases() {
        let built = std::time::UNIX_EPOCH + Duration::from_secs(db.build_epoch());
        out.push_str(&format!(
            "  {} {}: {}, built {}{}\n",
            db.key(),
            db.path().display(),
            db.database_type(),
            humantime::format_rfc3339_seconds(built),
            db.country_field()
                .map(|f| format!(", countries from {f}"))
                .unwrap_or_default()
        ));
    }
    for note in plan.notes() {
        out.push_str(&format!("  note: {note}\n"));
    }
    Ok(out)
}

/// `hushd check --diff-running`: the keys of the file at `config_path` that differ from the
/// config the running hushd has in force (its metrics listener's `/config`, at `running` or
/// the file's `[metrics] listen`), one line each, saying whether a reload applies it.
pub fn diff_running(
    config_path: &Path,
    running: Option<std::net::SocketAddr>,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let config = Config::parse(config_path, &text).map_err(|e| anyhow!("{e}"))?;
    let candidate = raw_config(config_path, &text).map_err(|e| anyhow!("{e}"))?;
    let at = running.or(config.metrics.listen).ok_or_else(|| {
        anyhow!("the file has no [metrics] listen: name the running hushd's with --running ADDR")
    })?;
    let url = format!("http://{at}/config");
    let body = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?
        .block_on(async {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()?;
            client.get(&url).send().await?.error_for_status()?.text().await
        })
        .with_context(|| format!("cannot read the running config from {url} (is hushd running, with its metrics listener there?)"))?;
    let in_force: toml::Table =
        toml::from_str(&body).with_context(|| format!("{url} did not answer with a config"))?;
    let changes = crate::config_diff::changes(&in_force, &candidate);
    if changes.is_empty() {
        return Ok(format!(
            "no change from the config hushd runs with ({url})\n"
        ));
    }
    Ok(changes.iter().map(|c| format!("{c}\n")).collect())
}

/// `hushd check`'s lines about a list's answer-address rules, if it has any.
fn check_address_lines(policy: &crate::policy::Policy, tag: crate::policy::matcher::Tag) -> String {
    let mut out = String::new();
    let networks = policy.ip_rules().listed(tag);
    if networks > 0 {
        out.push_str(&format!("    ips: {networks} networks\n"));
    }
    let countries: Vec<String> = policy.geo().countries(tag).map(|c| c.to_string()).collect();
    if !countries.is_empty() {
        out.push_str(&format!("    countries: {}\n", countries.join(", ")));
    }
    let asns: Vec<String> = policy.geo().asns(tag).map(|n| format!("AS{n}")).collect();
    if !asns.is_empty() {
        out.push_str(&format!("    asns: {}\n", asns.join(", ")));
    }
    out
}

/// `hushd check`'s lines about one source file of a list (its `domains_file`, or its
/// subscription's stored copy).
fn check_file_lines(label: &str, file: &crate::lists::FileReport, patterns: usize) -> String {
    let tally = &file.tally;
    let skipped: usize = tally.skipped.values().sum();
    let mut out = format!(
        "    {label}: format {}{}, {} entries, {} patterns, {} skipped",
        file.format.as_str(),
        if file.detected { " (auto)" } else { "" },
        tally.entries,
        patterns,
        skipped
    );
    if skipped > 0 {
        let reasons: Vec<String> = tally
            .skipped
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        out.push_str(&format!(" ({})", reasons.join(", ")));
    }
    out.push('\n');
    for (line, reason, text) in &tally.first_skipped {
        out.push_str(&format!("      line {line}: {reason}: {text}\n"));
    }
    out
}

/// hushd needs no privilege but binding port 53, which the systemd unit grants as a capability.
fn warn_if_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid == Some("0") {
        tracing::warn!(
            "running as root: hushd needs no root privileges; run it as an unprivileged user (the shipped systemd unit does)"
        );
    }
}
