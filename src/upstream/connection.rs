//! The one long-lived connection a DoT or DoH upstream keeps: reused by every query while it is
//! open, made again when it has died or been closed for idleness. Queries that find no open
//! connection share one attempt to make it (a burst after an outage opens one connection, not
//! a hundred), and queries that were waiting on an attempt that failed fail with it rather than
//! each trying again. Back-off between attempts is `Upstream`'s: a failed connection is a
//! server failure there, and the server is skipped for 0.5 s, doubling to 30 s.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;

use super::exchange::ExchangeError;

/// How long a connection may sit with no query in flight before hushd closes it (RFC 7858
/// §3.4: clients should close idle connections; servers close them after some tens of
/// seconds, so a shorter time here means hushd rarely sends into a connection being closed).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// A failed connection attempt is logged at warn at most this often per server (later ones,
/// until a success, at debug), so a server with a bad certificate does not flood the journal.
const WARN_EVERY: Duration = Duration::from_secs(60);

pub trait Connection: Send + Sync {
    /// Still usable: not closed by either side, not failed.
    fn is_open(&self) -> bool;
}

pub struct ConnectionSlot<C> {
    /// How the server is named in logs (its display form, scheme included).
    server: String,
    current: ArcSwapOption<C>,
    attempts: tokio::sync::Mutex<AttemptState>,
}

#[derive(Default)]
struct AttemptState {
    /// When the last attempt failed and why; cleared by a success.
    failed: Option<(Instant, String)>,
    warned_at: Option<Instant>,
}

/// A connection, and whether it was made for this query (a fresh one) or reused.
pub struct Got<C> {
    pub connection: Arc<C>,
    pub fresh: bool,
}

impl<C: Connection> ConnectionSlot<C> {
    pub fn new(server: String) -> Self {
        Self {
            server,
            current: ArcSwapOption::empty(),
            attempts: tokio::sync::Mutex::new(AttemptState::default()),
        }
    }

    /// The open connection, or a new one made by `connect`.
    pub async fn get<F, Fut>(&self, connect: F) -> Result<Got<C>, ExchangeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<C>, ExchangeError>>,
    {
        if let Some(connection) = self.open() {
            return Ok(Got {
                connection,
                fresh: false,
            });
        }
        let asked = Instant::now();
        let mut state = self.attempts.lock().await;
        // made, or failed, by the query that held the lock before this one
        if let Some(connection) = self.open() {
            return Ok(Got {
                connection,
                fresh: false,
            });
        }
        if let Some((at, why)) = &state.failed
            && *at >= asked
        {
            return Err(ExchangeError::Connect(why.clone()));
        }
        match connect().await {
            Ok(connection) => {
                self.current.store(Some(connection.clone()));
                if state.failed.take().is_some() {
                    tracing::info!(upstream = %self.server, "connected to upstream again");
                }
                state.warned_at = None;
                Ok(Got {
                    connection,
                    fresh: true,
                })
            }
            Err(e) => {
                let why = e.to_string();
                let now = Instant::now();
                if state
                    .warned_at
                    .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
                {
                    tracing::warn!(upstream = %self.server, error = %why, "cannot connect to upstream");
                    state.warned_at = Some(now);
                } else {
                    tracing::debug!(upstream = %self.server, error = %why, "cannot connect to upstream");
                }
                state.failed = Some((now, why));
                Err(e)
            }
        }
    }

    fn open(&self) -> Option<Arc<C>> {
        self.current.load_full().filter(|c| c.is_open())
    }

    /// The current connection, open or not (tests count and close connections through it).
    #[cfg(test)]
    pub fn current(&self) -> Option<Arc<C>> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    struct Fake(AtomicBool);

    impl Connection for Fake {
        fn is_open(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[tokio::test]
    async fn concurrent_queries_share_one_connection_and_one_failed_attempt() {
        let slot = Arc::new(ConnectionSlot::<Fake>::new("tls://test".into()));
        let made = Arc::new(AtomicUsize::new(0));
        let ask = |fail: bool| {
            let slot = slot.clone();
            let made = made.clone();
            async move {
                slot.get(|| async move {
                    made.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if fail {
                        Err(ExchangeError::Connect("refused".into()))
                    } else {
                        Ok(Arc::new(Fake(AtomicBool::new(true))))
                    }
                })
                .await
                .map(|got| got.fresh)
            }
        };
        // ten queries during one failing attempt: one attempt, ten failures
        let failed = futures_util::future::join_all((0..10).map(|_| ask(true))).await;
        assert!(failed.iter().all(Result::is_err));
        assert_eq!(made.load(Ordering::Relaxed), 1);
        // the next burst tries again, once, and all but the first reuse the connection
        let got = futures_util::future::join_all((0..10).map(|_| ask(false))).await;
        assert_eq!(made.load(Ordering::Relaxed), 2);
        let fresh = got.iter().filter(|g| matches!(g, Ok(true))).count();
        assert_eq!(fresh, 1);
        // a closed connection is replaced
        slot.current().unwrap().0.store(false, Ordering::Relaxed);
        assert!(matches!(ask(false).await, Ok(true)));
        assert_eq!(made.load(Ordering::Relaxed), 3);
    }
}
