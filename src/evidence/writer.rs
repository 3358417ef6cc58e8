//! The evidence writer's thread: takes matches from the queue, adds them up (`Batch`), and every
//! `flush_secs` writes them in one transaction. Whatever the disk does, the query path never
//! knows: a store that cannot be opened or written keeps its rows (up to a bound) and is tried
//! again at the next flush; a corrupt one is moved aside and replaced by a fresh one.

use std::{
    path::PathBuf,
    sync::mpsc::{Receiver, TryRecvError},
    time::{Duration, Instant, SystemTime},
};

use prometheus::IntCounter;

use super::{
    DrainPace, Message,
    batch::{Added, Batch},
    store::{Store, StoreError, first_kept_day, move_aside},
};
use crate::config::{Anonymize, EvidenceConfig};

/// Rows kept while the store cannot be written (~250 bytes each: ~25 MB at most). Past it,
/// matches needing a new row are dropped and counted.
const MAX_PENDING_ROWS: usize = 100_000;

/// Retention runs at start and then this often.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// A failing store is logged at most this often (each failure is counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

pub(super) struct Writer {
    path: PathBuf,
    flush_every: Duration,
    retention_days: u32,
    store: Option<Store>,
    batch: Batch,
    next_prune: Option<Instant>,
    errors: IntCounter,
    dropped: IntCounter,
    failing: Failing,
}

/// What the log has said about a failing store: the first failure at once, then one line a
/// minute with how many failed since, then one line when it works again.
#[derive(Default)]
struct Failing {
    since: Option<Instant>,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl Failing {
    fn failed(&mut self, error: &StoreError, rows: usize) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        let due = self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_EVERY);
        if due {
            tracing::error!(
                error = %error,
                rows_waiting = rows,
                failures_since_last_line = self.unlogged,
                "cannot write the evidence store; matches are kept in memory and written when it works again"
            );
            self.last_logged = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }

    fn succeeded(&mut self, path: &std::path::Path, rows: usize) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                path = %path.display(),
                rows,
                failing_secs = since.elapsed().as_secs(),
                "the evidence store is written again"
            );
        }
        self.last_logged = None;
        self.unlogged = 0;
    }
}

impl Writer {
    pub(super) fn new(
        config: &EvidenceConfig,
        anonymize: Anonymize,
        errors: IntCounter,
        dropped: IntCounter,
    ) -> Self {
        Self {
            path: config.path.clone(),
            flush_every: config.flush,
            retention_days: config.retention_days,
            store: None,
            batch: Batch::new(MAX_PENDING_ROWS, anonymize),
            next_prune: None,
            errors,
            dropped,
            failing: Failing::default(),
        }
    }

    /// Until every sink is gone: add matches up, write them every `flush_every`; the queue is
    /// drained at `DrainPace` (the queue, `QUEUE` events, holds 10 ms of over a million
    /// matches a second).
    pub(super) fn run(mut self, queue: &Receiver<Message>) {
        self.ensure_open();
        let mut next_flush = Instant::now() + self.flush_every;
        let mut pace = DrainPace::new();
        loop {
            let mut taken = 0usize;
            loop {
                match queue.try_recv() {
                    Ok(Message::Match(event)) => {
                        taken += 1;
                        if self.batch.add(event) == Added::Dropped {
                            self.dropped.inc();
                        }
                    }
                    Ok(Message::Flush(done)) => {
                        self.flush();
                        let _ = done.send(());
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.flush();
                        return;
                    }
                }
            }
            if Instant::now() >= next_flush {
                self.flush();
                // on a fixed beat, so a slow write does not push every later one back
                let now = Instant::now();
                while next_flush <= now {
                    next_flush += self.flush_every;
                }
            }
            // idle, the thread backs off to DrainPace::IDLE; a flush request then waits that long
            pace.sleep(taken, Some(next_flush));
        }
    }

    /// Writes the batch; on failure keeps it for the next flush. Prunes when due.
    fn flush(&mut self) {
        if !self.ensure_open() {
            return;
        }
        if !self.batch.is_empty() {
            let started = Instant::now();
            let rows = self.batch.rows();
            let result = match &mut self.store {
                Some(store) => store.upsert(&rows),
                None => return,
            };
            match result {
                Ok(()) => {
                    tracing::debug!(
                        rows = rows.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "evidence written"
                    );
                    self.failing.succeeded(&self.path, rows.len());
                    self.batch.clear();
                }
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            }
        }
        if self.next_prune.is_none_or(|t| Instant::now() >= t) {
            self.prune();
        }
    }

    /// Opens the store if it is not open; whether it is.
    fn ensure_open(&mut self) -> bool {
        if self.store.is_some() {
            return true;
        }
        match Store::open(&self.path) {
            Ok(store) => {
                tracing::debug!(path = %self.path.display(), "evidence store open");
                self.store = Some(store);
                self.prune();
                true
            }
            Err(e) => {
                self.fail(&e);
                // a corrupt file was moved aside by `fail`: the fresh one opens at once
                if e.is_corrupt()
                    && let Ok(store) = Store::open(&self.path)
                {
                    self.store = Some(store);
                    self.prune();
                    return true;
                }
                false
            }
        }
    }

    fn prune(&mut self) {
        let Some(store) = &self.store else { return };
        let first_kept = first_kept_day(SystemTime::now(), self.retention_days);
        match store.prune(&first_kept) {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(
                        rows = n,
                        before = first_kept,
                        "evidence older than retention_days deleted"
                    );
                }
                self.next_prune = Some(Instant::now() + PRUNE_EVERY);
            }
            Err(e) => self.fail(&e),
        }
    }

    /// Counts and logs a failure; a corrupt database is closed and moved aside.
    fn fail(&mut self, e: &StoreError) {
        self.errors.inc();
        if !e.is_corrupt() {
            self.failing.failed(e, self.batch.len());
            return;
        }
        self.store = None;
        match move_aside(&self.path, SystemTime::now()) {
            Ok(aside) => tracing::error!(
                error = %e,
                moved_to = %aside.display(),
                "THE EVIDENCE DATABASE IS CORRUPT: moved aside, starting a fresh one (the old rows are in the moved file)"
            ),
            Err(io) => {
                tracing::error!(error = %e, rename_error = %io, "THE EVIDENCE DATABASE IS CORRUPT and cannot be moved aside; evidence is kept in memory and tried again");
            }
        }
    }
}
