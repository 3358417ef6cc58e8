//! Evidence: which device matched which list, when and how often. The query path hands each
//! list match to an `EvidenceSink` (a bounded queue: it never waits, a full queue drops and
//! counts); a thread of its own (`writer.rs`) adds the matches up in memory by (day, client,
//! list, name, action, via) and writes them every `flush_secs` in one transaction to an SQLite
//! database (`store.rs`), which `hushd report` and `/api/evidence` read. Beside it: the query
//! log (`querylog.rs`, opt-in, every query), the anonymization both apply to client addresses
//! (`anonymize.rs`), and `hushd evidence forget` (`forget.rs`).

pub mod anonymize;
pub mod batch;
pub mod forget;
pub mod querylog;
pub mod report;
pub mod store;
mod writer;

use std::{
    net::IpAddr,
    sync::{
        Arc,
        mpsc::{SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use hickory_proto::rr::{LowerName, RecordType};
use prometheus::IntCounter;

use crate::{
    config::{Anonymize, EvidenceConfig},
    metrics::Metrics,
    policy::{Action, Via},
};

/// Where the running evidence store is (`None`: `[evidence] enabled = false`), for its readers
/// in the daemon (`/api/evidence`, `hushd_evidence_devices`); a reload that moves or turns off
/// the store swaps it, so they read the store the writer writes.
pub type StorePath = Arc<arc_swap::ArcSwapOption<std::path::PathBuf>>;

/// One list match, as the query path hands it over: a few reference counts and the name, no
/// text is formatted here (the writer does that, off the query path).
#[derive(Debug, Clone)]
pub struct Event {
    pub at: SystemTime,
    pub client: IpAddr,
    /// Its `[clients]` name, if it has one.
    pub client_name: Option<Arc<str>>,
    pub group: Arc<str>,
    pub list: Arc<str>,
    pub name: LowerName,
    pub qtype: RecordType,
    /// The action applied (a group may override the list's own).
    pub action: Action,
    pub via: Via,
}

/// How the writer threads (evidence and query log) take from their queues: every
/// `DrainPace::EVERY` while something comes, doubling to `DrainPace::IDLE` while nothing does,
/// sleeping in between rather than waiting on the queue, so a sender never has to wake the
/// thread: a futex wake and a context switch per match or line cost the query path more than
/// the record itself (the query log at a line per query, the evidence store under a flood of
/// blocked names).
pub(crate) struct DrainPace {
    nap: Duration,
}

impl DrainPace {
    pub(crate) const EVERY: Duration = Duration::from_millis(10);
    pub(crate) const IDLE: Duration = Duration::from_millis(50);

    pub(crate) fn new() -> Self {
        Self { nap: Self::EVERY }
    }

    /// Sleeps until the next drain, given how many messages the last one `taken`; never past
    /// `due` (the thread's next write), when there is one.
    pub(crate) fn sleep(&mut self, taken: usize, due: Option<Instant>) {
        self.nap = if taken == 0 {
            (self.nap * 2).min(Self::IDLE)
        } else {
            Self::EVERY
        };
        let nap = due.map_or(self.nap, |due| {
            self.nap.min(due.saturating_duration_since(Instant::now()))
        });
        std::thread::sleep(nap);
    }
}

/// What the writer's queue carries.
enum Message {
    Match(Event),
    /// Write what is held now, then say so (at shutdown).
    Flush(SyncSender<()>),
}

/// Matches waiting for the writer, at most; past this they are dropped and counted. At about
/// 200 bytes an event this is ~3 MB; the writer drains it every 10 ms and takes ~1M events a
/// second (release), so only a stalled writer thread or a flood past 1.6M matches a second
/// fills it.
const QUEUE: usize = 16 * 1024;

/// The query path's handle: cheap to clone, never waits.
#[derive(Clone)]
pub struct EvidenceSink {
    queue: SyncSender<Message>,
    dropped: IntCounter,
}

impl EvidenceSink {
    /// Hands a match to the writer; when its queue is full (or the writer is gone) the match is
    /// dropped and counted in `hushd_evidence_dropped_total`.
    pub fn record(&self, event: Event) {
        if self.queue.try_send(Message::Match(event)).is_err() {
            self.dropped.inc();
        }
    }
}

/// The running store: its sink for the query path and its writer thread.
pub struct Evidence {
    sink: EvidenceSink,
    thread: Option<JoinHandle<()>>,
}

impl Evidence {
    /// Starts the writer thread (`hushd-evidence`) for `config`; client addresses are stored
    /// after `anonymize`. The database is opened by the thread: an unusable path or a corrupt
    /// file is the thread's to handle (logged, counted, retried), never a reason not to serve.
    pub fn start(
        config: &EvidenceConfig,
        anonymize: Anonymize,
        metrics: &Metrics,
    ) -> std::io::Result<Self> {
        Self::start_with(config, anonymize, metrics, QUEUE)
    }

    fn start_with(
        config: &EvidenceConfig,
        anonymize: Anonymize,
        metrics: &Metrics,
        queue: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(queue.max(1));
        let writer = writer::Writer::new(
            config,
            anonymize,
            metrics.evidence_errors.clone(),
            metrics.evidence_dropped.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("hushd-evidence".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Self {
            sink: EvidenceSink {
                queue: tx,
                dropped: metrics.evidence_dropped.clone(),
            },
            thread: Some(thread),
        })
    }

    pub fn sink(&self) -> EvidenceSink {
        self.sink.clone()
    }

    /// Writes what the writer holds now, waiting up to `timeout` (at shutdown, so a clean stop
    /// loses nothing). Whether it was written (or tried: a failing store keeps its error).
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = sync_channel(1);
        let deadline = Instant::now() + timeout;
        let mut message = Message::Flush(ack);
        loop {
            match self.sink.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    message = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Flushes, then lets the thread end once the last sink is gone (it does not wait for that:
    /// the query path's handles live as long as the process).
    pub fn stop(mut self, timeout: Duration) -> bool {
        let flushed = self.flush(timeout);
        drop(self.thread.take());
        flushed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn event(list: &Arc<str>, group: &Arc<str>, name: &LowerName) -> Event {
        Event {
            at: SystemTime::now(),
            client: "192.0.2.7".parse().unwrap(),
            client_name: None,
            group: group.clone(),
            list: list.clone(),
            name: name.clone(),
            qtype: RecordType::A,
            action: Action::Log,
            via: Via::Name,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Metrics::new().unwrap();
        // a queue of two that nobody reads
        let (tx, _rx) = sync_channel(2);
        let sink = EvidenceSink {
            queue: tx,
            dropped: metrics.evidence_dropped.clone(),
        };
        let (list, group): (Arc<str>, Arc<str>) = ("vendor".into(), "default".into());
        let name = LowerName::new(&Name::from_str("t.example.com.").unwrap());
        let started = Instant::now();
        for _ in 0..10 {
            sink.record(event(&list, &group, &name));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(metrics.evidence_dropped.get(), 8);
    }

    /// The query path's cost of one match (release: `cargo test --release --lib
    /// evidence::tests::cost -- --ignored --nocapture`): building the event (the clock, three
    /// reference counts, the name) alone, then built and queued to the running writer, in
    /// bursts the queue holds (so the figure is the enqueue, not the drop of a full queue).
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn cost() {
        let metrics = Metrics::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = EvidenceConfig {
            enabled: true,
            path: dir.path().join("evidence.db"),
            retention_days: 90,
            flush: Duration::from_secs(5),
        };
        let evidence = Evidence::start(&config, Anonymize::None, &metrics).unwrap();
        let sink = evidence.sink();
        let (list, group, client_name): (Arc<str>, Arc<str>, Arc<str>) =
            ("xiaomi".into(), "iot".into(), "reception-tv".into());
        let short = LowerName::new(&Name::from_str("api.xiaomi.com.").unwrap());
        let long = LowerName::new(
            &Name::from_str("tracking.intl.miui.com.xiaomi-telemetry.example.").unwrap(),
        );
        let make = |i: u32, name: &LowerName| Event {
            at: SystemTime::now(),
            client: IpAddr::from([127, 0, 0, (i % 8) as u8]),
            client_name: Some(client_name.clone()),
            group: group.clone(),
            list: list.clone(),
            name: std::hint::black_box(name).clone(),
            qtype: RecordType::A,
            action: Action::Log,
            via: Via::Name,
        };
        for (label, name) in [("short name", &short), ("long name (>32 bytes)", &long)] {
            let rounds = 1_000_000u32;
            let started = Instant::now();
            for i in 0..rounds {
                drop(std::hint::black_box(make(i, name)));
            }
            let built = started.elapsed().as_nanos() as f64 / f64::from(rounds);

            let (bursts, burst) = (100u32, 8_000u32);
            let mut spent = Duration::ZERO;
            for b in 0..bursts {
                let started = Instant::now();
                for i in 0..burst {
                    sink.record(make(b * burst + i, name));
                }
                spent += started.elapsed();
                std::thread::sleep(Duration::from_millis(30)); // the writer drains the queue
            }
            let queued = spent.as_nanos() as f64 / f64::from(bursts * burst);
            println!(
                "{label}: {built:.0} ns to build an event, {queued:.0} ns built and queued (dropped {} of {})",
                metrics.evidence_dropped.get(),
                bursts * burst
            );
            metrics.evidence_dropped.reset();
        }
        assert!(evidence.stop(Duration::from_secs(10)));
    }
}
