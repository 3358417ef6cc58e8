//! The HTTP endpoint for monitoring: `/metrics` (Prometheus text format), `/healthz`, and
//! `/explain?name=…&client=…` (why the running policy decides a name as it does, as JSON).

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

use crate::{explain, metrics::Metrics, policy::Policy};

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

#[derive(Debug, Deserialize)]
struct ExplainQuery {
    name: String,
    client: Option<IpAddr>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    explain_from: ExplainSource,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
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
