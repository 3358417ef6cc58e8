//! The query log (`[querylog]`, opt-in): every query, one JSON object a line, for Loki, Vector,
//! Elasticsearch or `jq`.
//!
//! The query path pays for it only when it is on, and then little: a transport starts a
//! `Trace` for each query (`QueryHandler::trace`, `None` when the log is off: one branch, no
//! allocation, no clock read), the handler notes on it what only the policy knows (the client's
//! name and group, the list that matched, the upstream that answered), and the transport hands
//! it over with how the query ended (`QueryHandler::log`). Handing over is a `try_send` of one
//! pointer into a bounded queue: a full queue drops the line and counts it
//! (`hushd_querylog_dropped_total`), never a wait. The line is formatted on the writer's thread,
//! which buffers lines and writes them at least once a second (so `tail -f` follows) and
//! whenever 64 KiB have gathered.
//!
//! The file: `path`, created 0640; when a write would take it past `max_bytes` it is renamed to
//! `path.1` (`.1` to `.2` and so on, up to `keep`) and a new one started. SIGHUP reopens the
//! path, for logrotate's `create` mode. Each write (and each rotation) holds an exclusive
//! `flock` on the file, so `hushd evidence forget` can rewrite the log while hushd runs
//! (`forget.rs` takes the same lock).

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    net::{IpAddr, SocketAddr},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant, SystemTime},
};

use hickory_net::xfer::Protocol;
use hickory_proto::{
    op::ResponseCode,
    rr::{LowerName, Name, RecordType},
};
use nix::fcntl::{Flock, FlockArg};
use prometheus::IntCounter;
use serde::Serialize;

use crate::{
    cache::Hit,
    config::{Anonymize, QueryLogConfig},
    destinations::{self, DestinationsRef},
    metrics::{Metrics, Outcome},
    policy::{Action, Match, Via},
    reply::Reply,
};

/// Lines waiting for the writer, at most. At 5 000 queries a second this is 3 s of backlog;
/// past it lines are dropped and counted, and queries go on being answered.
const QUEUE: usize = 16_384;
/// Written out at least this often, so a `tail -f` follows the log.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Written out when this much has gathered.
const FLUSH_BYTES: usize = 64 * 1024;

/// The query log's handle: the queue into its writer thread. Cheap to clone.
#[derive(Clone)]
pub struct QueryLog {
    queue: SyncSender<Message>,
    shared: Arc<Shared>,
    only_matches: bool,
}

struct Shared {
    /// Set by SIGHUP: the writer reopens its path at its next wake-up (within a second).
    reopen: AtomicBool,
    dropped: IntCounter,
}

enum Message {
    Line(Box<Record>),
    /// Write out what is buffered, then say so (at shutdown).
    Flush(SyncSender<()>),
}

/// One query's line in the making. `Trace::OFF` (no allocation) unless the query log is on.
#[derive(Default)]
pub struct Trace(Option<Box<Record>>);

/// What a line says. The transport fills the question and the ending, the handler what only the
/// policy knows; the writer thread formats it.
pub struct Record {
    started: Instant,
    at: SystemTime,
    client: IpAddr,
    protocol: Protocol,
    qname: Option<LowerName>,
    qtype: RecordType,
    client_name: Option<Arc<str>>,
    group: Option<Arc<str>>,
    matched: Option<Noted>,
    upstream: Option<SocketAddr>,
    outcome: Outcome,
    rcode: ResponseCode,
    answers: Answers,
    duration: Duration,
}

/// The list match a line names: the one that decided the query.
struct Noted {
    list: Arc<str>,
    action: Action,
    via: Via,
}

/// What the client was answered, as the transport has it; the writer reads the addresses out.
pub enum Answers {
    None,
    /// A cache hit sent from its wire form: its addresses were worked out when it was cached.
    Hit(Hit),
    /// A reply built record by record (forwarded, blocked, stale, or a hit too big for UDP).
    Reply(Reply),
}

fn shared(name: &str) -> Arc<str> {
    Arc::from(name)
}

impl Trace {
    pub const OFF: Self = Self(None);

    fn start(
        client: IpAddr,
        protocol: Protocol,
        qname: Option<LowerName>,
        qtype: RecordType,
    ) -> Self {
        Self(Some(Box::new(Record {
            started: Instant::now(),
            at: SystemTime::now(),
            client,
            protocol,
            qname,
            qtype,
            client_name: None,
            group: None,
            matched: None,
            upstream: None,
            outcome: Outcome::Forwarded,
            rcode: ResponseCode::NoError,
            answers: Answers::None,
            duration: Duration::ZERO,
        })))
    }

    /// Who the client is, as the policy that answers it knows it.
    #[inline]
    pub fn asked(&mut self, client_name: Option<&str>, group: &str) {
        if let Some(r) = &mut self.0 {
            r.client_name = client_name.map(shared);
            r.group = Some(shared(group));
        }
    }

    /// A list matched. The line names the first match, unless a later one blocks: a name
    /// audited by one list whose answer another list blocks is that list's block.
    #[inline]
    pub fn matched(&mut self, m: &Match<'_>) {
        if let Some(r) = &mut self.0 {
            let replace = match &r.matched {
                None => true,
                Some(earlier) => earlier.action != Action::Block && m.action == Action::Block,
            };
            if replace {
                r.matched = Some(Noted {
                    list: shared(&m.list.name),
                    action: m.action,
                    via: m.via,
                });
            }
        }
    }

    /// The upstream server whose reply the answer is.
    #[inline]
    pub fn answered_by(&mut self, server: SocketAddr) {
        if let Some(r) = &mut self.0 {
            r.upstream = Some(server);
        }
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    pub fn into_record(self) -> Option<Box<Record>> {
        self.0
    }
}

impl QueryLog {
    /// Starts the writer thread on `config.path` (opened now; if it cannot be, the error is
    /// logged and the writer tries again every second, counting the lines it cannot write).
    pub fn start(config: &QueryLogConfig, metrics: &Metrics) -> io::Result<Self> {
        let (queue, lines) = sync_channel(QUEUE);
        let shared = Arc::new(Shared {
            reopen: AtomicBool::new(false),
            dropped: metrics.querylog_dropped.clone(),
        });
        let mut writer = Writer {
            file: LogFile::new(config.path.clone(), config.max_bytes, config.keep),
            anonymize: config.anonymize,
            buf: Vec::with_capacity(FLUSH_BYTES * 2),
            pending: 0,
            shared: shared.clone(),
        };
        writer.file.reopen();
        std::thread::Builder::new()
            .name("hushd-querylog".into())
            .spawn(move || writer.run(lines))?;
        Ok(Self {
            queue,
            shared,
            only_matches: config.only_matches,
        })
    }

    /// A new `Trace` for a query (the handler's `trace` calls this when the log is on).
    pub fn trace(
        client: IpAddr,
        protocol: Protocol,
        qname: Option<LowerName>,
        qtype: RecordType,
    ) -> Trace {
        Trace::start(client, protocol, qname, qtype)
    }

    /// Hands a finished query to the writer; never waits. With `only_matches`, a query no list
    /// matched is let go here.
    pub fn write(
        &self,
        mut record: Box<Record>,
        outcome: Outcome,
        rcode: ResponseCode,
        answers: Answers,
    ) {
        if self.only_matches && record.matched.is_none() {
            return;
        }
        record.duration = record.started.elapsed();
        record.outcome = outcome;
        record.rcode = rcode;
        record.answers = answers;
        match self.queue.try_send(Message::Line(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.inc();
            }
        }
    }

    /// Reopens the file at its path at the writer's next wake-up (within a second): SIGHUP,
    /// after logrotate moved the file away.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
    }

    /// Writes out what is buffered and waits (up to `timeout`) until it is on disk: at shutdown.
    pub fn flush(&self, timeout: Duration) {
        let (done, wait) = sync_channel(1);
        let deadline = Instant::now() + timeout;
        let mut message = Message::Flush(done);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    message = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// The writer thread's side.
struct Writer {
    file: LogFile,
    anonymize: Anonymize,
    /// Formatted lines not yet written.
    buf: Vec<u8>,
    /// How many lines `buf` holds (counted as dropped if the write fails).
    pending: u64,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(&mut self, lines: Receiver<Message>) {
        let mut next_flush = Instant::now() + FLUSH_EVERY;
        loop {
            let wait = next_flush.saturating_duration_since(Instant::now());
            match lines.recv_timeout(wait) {
                Ok(Message::Line(record)) => {
                    format_line(&record, self.anonymize, &mut self.buf);
                    self.pending += 1;
                    // the record's hit or reply is freed here, off the query path
                    drop(record);
                    if self.buf.len() >= FLUSH_BYTES {
                        self.flush();
                    }
                }
                Ok(Message::Flush(done)) => {
                    self.flush();
                    let _ = done.try_send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
            if Instant::now() >= next_flush {
                self.flush();
                next_flush = Instant::now() + FLUSH_EVERY;
            }
            if self.shared.reopen.swap(false, Ordering::Relaxed) {
                self.flush();
                self.file.reopen();
                tracing::info!(path = %self.file.path.display(), "query log reopened");
            }
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.file.append(&self.buf) {
            Ok(()) => self.file.failing = false,
            Err(e) => {
                self.shared.dropped.inc_by(self.pending);
                if !self.file.failing {
                    tracing::error!(path = %self.file.path.display(), error = %e, lines = self.pending, "cannot write the query log; its lines are dropped (hushd_querylog_dropped_total) until it can");
                    self.file.failing = true;
                }
            }
        }
        self.buf.clear();
        self.pending = 0;
    }
}

/// The log file, its rotation and its lock.
struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    /// The last write failed: logged once until one succeeds.
    failing: bool,
}

impl LogFile {
    fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        Self {
            path,
            max_bytes,
            keep,
            file: None,
            failing: false,
        }
    }

    /// Opens the path anew (appending, created 0640 if missing). A failure is logged; the next
    /// write tries again.
    fn reopen(&mut self) {
        self.file = None;
        match open_log(&self.path) {
            Ok(file) => self.file = Some(file),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot open the query log");
                self.failing = true;
            }
        }
    }

    /// Appends `bytes` under the file's lock, rotating first if they would take the file past
    /// `max_bytes`. The size is read under the lock, so a file `forget` rewrote (or an admin
    /// truncated) is measured as it is now.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = match self.file.take() {
            Some(file) => file,
            None => open_log(&self.path)?,
        };
        let mut locked = lock(file)?;
        let size = locked.metadata()?.len();
        if size > 0 && size + bytes.len() as u64 > self.max_bytes {
            rotate(&self.path, self.keep)?;
            let fresh = lock(open_log(&self.path)?)?;
            // the old file (now `.1`) is unlocked and closed here
            locked = fresh;
        }
        let written = locked.write_all(bytes);
        self.file = locked.unlock().ok();
        written
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// An exclusive `flock` on `file`: what the writer and `forget` agree on.
pub(crate) fn lock(file: File) -> io::Result<Flock<File>> {
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io::Error::from(errno))
}

/// The name of the `n`th rotated file of the log at `path` (`queries.jsonl.1`).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `path.(keep-1)` -> `path.keep`, ..., `path` -> `path.1`; with `keep = 0` the file is removed.
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    for n in (1..keep).rev() {
        match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, rotated(path, 1))
}

/// One line as written, field for field (the names are the interface: `docs/privacy.md`,
/// shipping configs and dashboards read them).
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    client: IpAddr,
    client_name: Option<&'a str>,
    group: Option<&'a str>,
    protocol: &'static str,
    qname: String,
    qtype: String,
    outcome: &'static str,
    rcode: String,
    list: Option<&'a str>,
    action: Option<&'static str>,
    via: Option<&'static str>,
    answers: Vec<IpAddr>,
    upstream: Option<SocketAddr>,
    duration_ms: f64,
    cached: bool,
}

/// Appends `record` as one JSON line to `out`.
fn format_line(record: &Record, anonymize: Anonymize, out: &mut Vec<u8>) {
    let line = Line {
        ts: humantime::format_rfc3339_millis(record.at).to_string(),
        client: anonymize.apply(record.client),
        client_name: record.client_name.as_deref(),
        group: record.group.as_deref(),
        protocol: match record.protocol {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            _ => "other",
        },
        qname: record.qname.as_ref().map(query_name).unwrap_or_default(),
        qtype: type_name(record.qtype),
        outcome: record.outcome.as_str(),
        rcode: rcode_name(record.rcode),
        list: record.matched.as_ref().map(|m| &*m.list),
        action: record.matched.as_ref().map(|m| m.action.as_str()),
        via: record.matched.as_ref().map(|m| m.via.as_str()),
        answers: addresses(record),
        upstream: record.upstream,
        // microseconds, as milliseconds with three decimals
        duration_ms: record.duration.as_micros() as f64 / 1000.0,
        cached: matches!(record.outcome, Outcome::Cached | Outcome::Stale),
    };
    // A line of strings, numbers and addresses always serializes.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// The addresses the client was given: where the answer's chain leads (A, AAAA, and the
/// address hints of HTTPS/SVCB), the same for a cache hit and a reply built record by record.
fn addresses(record: &Record) -> Vec<IpAddr> {
    match &record.answers {
        Answers::None => Vec::new(),
        Answers::Hit(hit) => hit.addresses().map(|(ip, _)| ip).collect(),
        Answers::Reply(reply) => {
            let Some(qname) = &record.qname else {
                return Vec::new();
            };
            let mut encoded = Vec::new();
            destinations::encode(&Name::from(qname), &reply.answers, &mut encoded);
            DestinationsRef::new(&encoded)
                .addresses()
                .map(|(ip, _)| ip)
                .collect()
        }
    }
}

/// Lower case, without the final dot, as the evidence store and `hushd report` write names;
/// the root stays `.`.
fn query_name(name: &LowerName) -> String {
    let mut text = name.to_string();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text
}

/// `A`, `AAAA`, ...; a type hickory has no name for as RFC 3597 writes it (`TYPE65280`).
fn type_name(qtype: RecordType) -> String {
    match qtype {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

/// The mnemonic dig prints (`NOERROR`, `NXDOMAIN`); others as `RCODE23`.
fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::BADVERS => "BADVERS".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: Outcome) -> Record {
        let Trace(Some(mut r)) = Trace::start(
            "192.168.1.57".parse().unwrap(),
            Protocol::Udp,
            Some(LowerName::from(
                Name::from_ascii("WWW.Example.com.").unwrap(),
            )),
            RecordType::AAAA,
        ) else {
            unreachable!()
        };
        r.outcome = outcome;
        r.at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_750_600_123);
        r.duration = Duration::from_micros(1_234);
        *r
    }

    fn line(record: &Record, anonymize: Anonymize) -> serde_json::Value {
        let mut out = Vec::new();
        format_line(record, anonymize, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_line_has_every_field_in_its_form() {
        let mut r = record(Outcome::Cached);
        r.client_name = Some("anna-laptop".into());
        r.group = Some("staff".into());
        r.upstream = Some("127.0.0.1:53".parse().unwrap());
        let v = line(&r, Anonymize::None);
        assert_eq!(
            v,
            serde_json::json!({
                "ts": "2025-12-03T08:30:00.123Z",
                "client": "192.168.1.57",
                "client_name": "anna-laptop",
                "group": "staff",
                "protocol": "udp",
                "qname": "www.example.com",
                "qtype": "AAAA",
                "outcome": "cached",
                "rcode": "NOERROR",
                "list": null,
                "action": null,
                "via": null,
                "answers": [],
                "upstream": "127.0.0.1:53",
                "duration_ms": 1.234,
                "cached": true,
            })
        );
        let v = line(&r, Anonymize::Truncate);
        assert_eq!(v["client"], "192.168.1.0");
    }

    #[test]
    fn names_types_and_rcodes_are_written_as_dig_writes_them() {
        assert_eq!(type_name(RecordType::Unknown(65280)), "TYPE65280");
        assert_eq!(type_name(RecordType::HTTPS), "HTTPS");
        assert_eq!(rcode_name(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_name(ResponseCode::YXRRSet), "RCODE7");
        assert_eq!(query_name(&LowerName::from(Name::root())), ".");
        // a name with a quote or a backslash still makes one valid JSON line
        let mut r = record(Outcome::Forwarded);
        r.qname = Some(LowerName::from(
            Name::from_labels(vec![&b"a\"b\\c\nd"[..], b"example"]).unwrap(),
        ));
        let v = line(&r, Anonymize::None);
        assert!(v["qname"].as_str().unwrap().ends_with(".example"), "{v}");
    }

    #[test]
    fn a_block_replaces_an_earlier_audit_match_and_nothing_else_does() {
        use crate::{config::Config, lists::ListFile, policy::Policy};
        let config = Config::parse(
            Path::new("/test/hushd.toml"),
            "[upstream]\nservers = [\"127.0.0.1:9\"]\n",
        )
        .unwrap();
        let list = |name: &str| {
            ListFile::inline(
                PathBuf::from(format!("/test/{name}.toml")),
                Action::Block,
                &["x.example"],
            )
        };
        let policy = Policy::build(&config, vec![list("samsung"), list("tiktok")]).unwrap();
        let by_name = |name: &str| policy.lists().iter().find(|l| l.name == name).unwrap();
        let (audit, block) = (by_name("samsung"), by_name("tiktok"));
        let mut trace = Trace::start(
            "127.0.0.1".parse().unwrap(),
            Protocol::Udp,
            None,
            RecordType::A,
        );
        let log = |list| Match {
            list,
            action: Action::Log,
            via: Via::Name,
        };
        let blocked = |list| Match {
            list,
            action: Action::Block,
            via: Via::Cname,
        };
        trace.matched(&log(audit));
        trace.matched(&log(block));
        let noted = |t: &Trace| {
            let m = t.0.as_ref().unwrap().matched.as_ref().unwrap();
            (m.list.to_string(), m.action.as_str(), m.via.as_str())
        };
        assert_eq!(noted(&trace), ("samsung".into(), "log", "name"));
        trace.matched(&blocked(block));
        assert_eq!(noted(&trace), ("tiktok".into(), "block", "cname"));
        trace.matched(&blocked(audit));
        assert_eq!(noted(&trace), ("tiktok".into(), "block", "cname"));
        // off: nothing is kept, nothing allocated
        let mut off = Trace::OFF;
        off.matched(&blocked(block));
        off.asked(Some("x"), "y");
        assert!(!off.is_on());
    }

    #[test]
    fn rotation_renames_up_to_keep_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queries.jsonl");
        let mut file = LogFile::new(path.clone(), 100, 2);
        for round in 0..4u8 {
            // 60 bytes a write: every second write rotates
            file.append(&[b'0' + round; 60]).unwrap();
            file.append(&[b'a' + round; 60]).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(&path), "d".repeat(60));
        assert_eq!(read(&rotated(&path, 1)), "3".repeat(60));
        assert_eq!(read(&rotated(&path, 2)), "c".repeat(60));
        assert!(!rotated(&path, 3).exists());
        // keep = 0: the file starts over
        let mut file = LogFile::new(path.clone(), 100, 0);
        file.append(&[b'x'; 60]).unwrap();
        assert_eq!(read(&path), "x".repeat(60));
        assert!(!rotated(&path, 3).exists());
    }
}
