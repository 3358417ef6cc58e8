//! The HTTP endpoint for monitoring: `/metrics` (Prometheus text format), `/healthz`,
//! `/explain?name=…&client=…` (why the running policy decides a name as it does, as JSON), and
//! `/api/evidence?since=…` (`hushd report --format json` from the running daemon's store) and
//! `/config` (the config in force, as TOML, for `hushd check --diff-running`).

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use arc_swap::ArcSwap;
use axum::{
    Json, Router,
    extract::Query,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    evidence::report::{self, ClientFilter, ReadError, Report, Selection, When, Window},
    explain,
    metrics::Metrics,
    policy::Policy,
};

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// What `/explain` answers from: the running policy, and the list folder to find evidence in.
#[derive(Clone)]
pub struct ExplainSource {
    pub policy: Arc<ArcSwap<Policy>>,
    pub blocklists: PathBuf,
    /// Where subscriptions' stored copies are (`[lists] state_dir`).
    pub state_dir: PathBuf,
    /// The client explained when the request names none.
    pub default_client: IpAddr,
    /// One explanation at a time: each reads every list file again, so a burst of requests
    /// must not take the machine's cores from the queries.
    pub running: Arc<tokio::sync::Semaphore>,
}

impl ExplainSource {
    pub fn new(
        policy: Arc<ArcSwap<Policy>>,
        blocklists: PathBuf,
        state_dir: PathBuf,
        default_client: IpAddr,
    ) -> Self {
        Self {
            policy,
            blocklists,
            state_dir,
            default_client,
            running: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// What `/api/evidence` reads: the running daemon's evidence store.
#[derive(Clone)]
pub struct EvidenceSource {
    /// `None` when `[evidence] enabled = false`; swapped by a reload.
    pub store: crate::evidence::StorePath,
    /// One report at a time: a long window over a big store is seconds of CPU.
    pub running: Arc<tokio::sync::Semaphore>,
}

impl EvidenceSource {
    pub fn new(store: crate::evidence::StorePath) -> Self {
        Self {
            store,
            running: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// `hushd report`'s options, as query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceQuery {
    since: Option<String>,
    until: Option<String>,
    list: Option<String>,
    group: Option<String>,
    client: Option<String>,
    #[serde(alias = "by-name")]
    by_name: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ExplainQuery {
    name: String,
    client: Option<IpAddr>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    explain_from: ExplainSource,
    evidence: EvidenceSource,
    running_config: Arc<ArcSwap<String>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/config",
            get(move || {
                let text = running_config.load_full();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/toml; charset=utf-8")],
                        String::clone(&text),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                        .into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/explain",
            get(move |Query(q): Query<ExplainQuery>| {
                let from = explain_from.clone();
                async move {
                    let Ok(_permit) = from.running.clone().try_acquire_owned() else {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "another explanation is being prepared; retry\n",
                        )
                            .into_response();
                    };
                    // Re-reading the lists is file IO and parsing: off the runtime's threads.
                    let answer =
                        tokio::task::spawn_blocking(move || explain_running(&from, &q)).await;
                    match answer {
                        Ok(Ok(e)) => Json(e).into_response(),
                        Ok(Err(why)) => (StatusCode::BAD_REQUEST, why + "\n").into_response(),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
        .route(
            "/api/evidence",
            get(move |Query(q): Query<EvidenceQuery>| {
                let evidence = evidence.clone();
                async move {
                    let Some(store) = evidence.store.load_full() else {
                        return (
                            StatusCode::NOT_FOUND,
                            "the evidence store is off ([evidence] enabled = false)\n",
                        )
                            .into_response();
                    };
                    let selection = match evidence_selection(&q, std::time::SystemTime::now()) {
                        Ok(s) => s,
                        Err(why) => return (StatusCode::BAD_REQUEST, why + "\n").into_response(),
                    };
                    let Ok(_permit) = evidence.running.clone().try_acquire_owned() else {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "another evidence report is being prepared; retry\n",
                        )
                            .into_response();
                    };
                    // SQLite reads are file IO: off the runtime's threads.
                    let answer =
                        tokio::task::spawn_blocking(move || evidence_report(&store, &selection))
                            .await;
                    match answer {
                        Ok(Ok(report)) => Json(report).into_response(),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "/api/evidence");
                            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
                        }
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

fn explain_running(from: &ExplainSource, q: &ExplainQuery) -> Result<explain::Explanation, String> {
    let policy = from.policy.load_full();
    let client = q.client.unwrap_or(from.default_client);
    if let Ok(addr) = q.name.trim().parse::<IpAddr>() {
        return Ok(explain::explain_address(&policy, client, addr));
    }
    let name = explain::parse_name(&q.name)?;
    // Evidence only: if a list was edited into a broken state since the last reload, the
    // decision still comes from the running policy, with whatever evidence still reads.
    let files = crate::lists::load_dir(&from.blocklists).unwrap_or_default();
    Ok(explain::explain(
        &policy,
        &files,
        &from.state_dir,
        client,
        &name,
    ))
}

/// The report's selection from `/api/evidence`'s parameters, as `hushd report` reads its
/// options (`since` defaults to `7d`).
fn evidence_selection(q: &EvidenceQuery, now: std::time::SystemTime) -> Result<Selection, String> {
    let since: When = q
        .since
        .as_deref()
        .unwrap_or("7d")
        .parse()
        .map_err(|e| format!("since: {e}"))?;
    let until: Option<When> = q
        .until
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| format!("until: {e}"))?;
    let client: Option<ClientFilter> = q
        .client
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| format!("client: {e}"))?;
    let window = Window::new(since, until, now).map_err(|e| e.to_string())?;
    Ok(Selection {
        window,
        list: q.list.clone(),
        group: q.group.clone(),
        client,
        by_name: q.by_name.unwrap_or(false),
    })
}

/// The running daemon's store as a report; before hushd's first recorded match there may be
/// no store yet, which is an empty report.
fn evidence_report(store: &std::path::Path, selection: &Selection) -> Result<Report, ReadError> {
    let rows = match report::read_store(store, selection) {
        Err(ReadError::Missing(_)) => Vec::new(),
        other => other?,
    };
    Ok(Report::build(
        &rows,
        selection,
        vec![store.display().to_string()],
        std::time::SystemTime::now(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_parameters_read_as_the_report_options() {
        let now = humantime::parse_rfc3339("2026-12-03T12:00:00Z").unwrap();
        let s = evidence_selection(&EvidenceQuery::default(), now).unwrap();
        assert_eq!(s.window.since_text(), "2026-11-26T12:00:00.000Z");
        let q = EvidenceQuery {
            since: Some("2026-12-01".into()),
            until: Some("2026-12-02".into()),
            client: Some("10.0.0.0/24".into()),
            by_name: Some(true),
            ..Default::default()
        };
        let s = evidence_selection(&q, now).unwrap();
        assert_eq!(s.window.until_text(), "2026-12-02T23:59:59.999Z");
        assert!(s.by_name && s.client.is_some());
        for (bad, says) in [
            (
                EvidenceQuery {
                    since: Some("7x".into()),
                    ..Default::default()
                },
                "since: ",
            ),
            (
                EvidenceQuery {
                    client: Some("10.0.0.0/40".into()),
                    ..Default::default()
                },
                "client: ",
            ),
            (
                EvidenceQuery {
                    since: Some("2026-12-03".into()),
                    until: Some("2026-12-01".into()),
                    ..Default::default()
                },
                "the window is empty",
            ),
        ] {
            let e = evidence_selection(&bad, now).unwrap_err();
            assert!(e.starts_with(says), "{e}");
        }
    }

    #[test]
    fn no_store_yet_is_an_empty_report() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("evidence.db");
        let selection =
            evidence_selection(&EvidenceQuery::default(), std::time::SystemTime::now()).unwrap();
        let report = evidence_report(&store, &selection).unwrap();
        assert!(report.rows.is_empty());
        assert!(!store.exists(), "a report must not create the store");
    }
}
