//! The query log (`[querylog]`, opt-in): every query, one JSON object a line, for Loki, Vector,
//! Elasticsearch or `jq`.
//!
//! The query path pays for it only when it is on, and then little: a transport starts a
//! `Trace` for each query (`QueryHandler::trace`, `None` when the log is off: one branch, no
//! allocation, no clock read), the handler notes on it what only the policy knows (the client's
//! name and group, the list that matched, the upstream that answered), and the transport hands
//! it over with how the query ended (`QueryHandler::log`). Handing over is a `try_send` of the
//! record into a bounded queue: a full queue drops the line and counts it
//! (`hushd_querylog_dropped_total`), never a wait, and never a wake-up of the writer, which
//! takes what has queued every 10 ms. The line is formatted on the writer's thread, which
//! buffers lines and writes them at least once a second (so `tail -f` follows) and whenever
//! 64 KiB have gathered.
//!
//! The file: `path`, created 0640; when a write would take it past `max_bytes` it is renamed to
//! `path.1` (`.1` to `.2` and so on, up to `keep`) and a new one started. SIGHUP reopens the
//! path, for logrotate. Each write (and each rotation) holds an exclusive
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
        mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel},
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

use super::DrainPace;
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

// Lines are nearly every message, and a slot of the queue holds one either way.
#[allow(clippy::large_enum_variant)]
enum Message {
    /// By value: the record's box is freed on the query path's thread, which made it.
    Line(Record),
    /// Write out what is buffered, then say so (at shutdown).
    Flush(SyncSender<()>),
}

/// One query's line in the making. `Trace::OFF` (no allocation) unless the query log is on.
#[derive(Default)]
pub struct Trace(Option<Box<Record>>);

/// What a line says. The transport fills the question and the ending, the handler what only the
/// policy knows; the writer thread formats it.
pub struct Record {
    /// When the query was taken up (the only other clock read is at the end, for `duration`);
    /// the writer turns it into the wall-clock time.
    started: Instant,
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
    answers: Answered,
    duration: Duration,
}

/// The answer's addresses as a record keeps them.
enum Answered {
    None,
    /// Read out of a cache hit on the query path (a few nanoseconds), so the hit's entry is
    /// released where it was taken: the cache's hottest entries are not bounced between cores.
    Few([IpAddr; FEW], u8),
    Many(Vec<IpAddr>),
    /// Read out on the writer's thread.
    Reply(Box<Reply>),
}

/// Addresses of a cache hit kept without an allocation.
const FEW: usize = 4;

impl Answered {
    fn of(answers: Answers) -> Self {
        match answers {
            Answers::None => Self::None,
            Answers::Reply(reply) => Self::Reply(Box::new(reply)),
            Answers::Hit(hit) => {
                let mut few = [IpAddr::from([0u8; 4]); FEW];
                let mut n = 0;
                for (ip, _) in hit.addresses() {
                    if n == FEW {
                        return Self::Many(hit.addresses().map(|(ip, _)| ip).collect());
                    }
                    few[n] = ip;
                    n += 1;
                }
                Self::Few(few, n as u8)
            }
        }
    }
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

/// A name a line keeps (client, group, list): shared where the policy holds it shared (a
/// reference count), copied where it holds a `String`.
pub trait ToShared {
    fn to_shared(&self) -> Arc<str>;
}

impl ToShared for str {
    fn to_shared(&self) -> Arc<str> {
        Arc::from(self)
    }
}

impl ToShared for String {
    fn to_shared(&self) -> Arc<str> {
        Arc::from(self.as_str())
    }
}

impl ToShared for Arc<str> {
    fn to_shared(&self) -> Arc<str> {
        Self::clone(self)
    }
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
            answers: Answered::None,
            duration: Duration::ZERO,
        })))
    }

    /// Who the client is, as the policy that answers it knows it.
    #[inline]
    pub fn asked<N, G>(&mut self, client_name: Option<&N>, group: &G)
    where
        N: ToShared + ?Sized,
        G: ToShared + ?Sized,
    {
        if let Some(r) = &mut self.0 {
            r.client_name = client_name.map(ToShared::to_shared);
            r.group = Some(group.to_shared());
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
                    list: m.list.name.to_shared(),
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
            scratch: Scratch::default(),
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
        record.answers = Answered::of(answers);
        match self.queue.try_send(Message::Line(*record)) {
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
    /// Scratch space for a line's name and time.
    scratch: Scratch,
    shared: Arc<Shared>,
}

impl Writer {
    /// Drains the queue at `DrainPace` (never woken by a sender); the queue holds what arrives
    /// meanwhile.
    fn run(&mut self, lines: Receiver<Message>) {
        let mut next_flush = Instant::now() + FLUSH_EVERY;
        // Records carry a monotonic instant; the wall clock is read here, once a second, so a
        // clock step (NTP) shows in the lines within a second.
        let mut anchor = (Instant::now(), SystemTime::now());
        let mut pace = DrainPace::new();
        loop {
            let mut taken = 0;
            loop {
                match lines.try_recv() {
                    Ok(Message::Line(record)) => {
                        taken += 1;
                        let at = wall_clock(record.started, anchor);
                        format_line(
                            &record,
                            at,
                            self.anonymize,
                            &mut self.scratch,
                            &mut self.buf,
                        );
                        self.pending += 1;
                        if self.buf.len() >= FLUSH_BYTES {
                            self.flush();
                        }
                    }
                    Ok(Message::Flush(done)) => {
                        self.flush();
                        let _ = done.try_send(());
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
                next_flush = Instant::now() + FLUSH_EVERY;
                anchor = (Instant::now(), SystemTime::now());
            }
            if self.shared.reopen.swap(false, Ordering::Relaxed) {
                self.flush();
                self.file.reopen();
                tracing::info!(path = %self.file.path.display(), "query log reopened");
            }
            // (at 150 000 queries a second, DrainPace::IDLE is 7 500 lines: the queue holds them)
            pace.sleep(taken, None);
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

/// When `started` was on the wall clock, given one moment read on both clocks.
fn wall_clock(started: Instant, (instant, system): (Instant, SystemTime)) -> SystemTime {
    match started.checked_duration_since(instant) {
        Some(after) => system + after,
        None => system - instant.duration_since(started),
    }
}

/// What `format_line` keeps between lines: the query name's buffer, and the RFC 3339 text of
/// the last second seen, so a second's lines format their date once (formatting the whole
/// time per line was a fifth of the writer's time, and the writer shares the daemon's CPU).
#[derive(Default)]
pub(super) struct Scratch {
    name: String,
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    stamp: String,
}

impl Scratch {
    /// `at` as RFC 3339 with milliseconds, as `humantime::format_rfc3339_millis` writes it.
    fn write_time(&mut self, at: SystemTime, out: &mut Vec<u8>) {
        let since = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            self.stamp.clear();
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            self.stamp.push_str(text.trim_end_matches('Z'));
            self.second = Some(second);
        }
        out.extend_from_slice(self.stamp.as_bytes());
        push_thousandths(out, since.subsec_millis().into());
        out.push(b'Z');
    }
}

/// Appends `record`, which started `at`, as one JSON line to `out`. The field names and their
/// order are the interface (`docs/privacy.md`; shipping configs and dashboards read them).
/// Written by hand: addresses, numbers and hushd's own words need no escaping, and the names
/// (query, client, group, list) go through serde_json, which escapes whatever they hold.
fn format_line(
    record: &Record,
    at: SystemTime,
    anonymize: Anonymize,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) {
    // Writing into a Vec cannot fail.
    let text = |out: &mut Vec<u8>, value: Option<&str>| match value {
        Some(value) => {
            let _ = serde_json::to_writer(&mut *out, value);
        }
        None => out.extend_from_slice(b"null"),
    };
    let word = |out: &mut Vec<u8>, value: Option<&str>| match value {
        Some(value) => {
            out.push(b'"');
            out.extend_from_slice(value.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    };
    out.extend_from_slice(b"{\"ts\":\"");
    scratch.write_time(at, out);
    out.extend_from_slice(b"\",\"client\":\"");
    push_ip(out, anonymize.apply(record.client));
    out.extend_from_slice(b"\",\"client_name\":");
    text(out, record.client_name.as_deref());
    out.extend_from_slice(b",\"group\":");
    text(out, record.group.as_deref());
    let protocol: &[u8] = match record.protocol {
        Protocol::Udp => b"udp",
        Protocol::Tcp => b"tcp",
        Protocol::Tls => b"tls",
        Protocol::Https => b"https",
        _ => b"other",
    };
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(protocol);
    out.extend_from_slice(b"\",\"qname\":");
    let name = &mut scratch.name;
    name.clear();
    let plain = match &record.qname {
        Some(qname) => query_name(qname, name),
        None => true,
    };
    if plain {
        // letters, digits, '-', '_' and '.' need no JSON escaping
        word(out, Some(name));
    } else {
        text(out, Some(name));
    }
    out.extend_from_slice(b",\"qtype\":\"");
    match record.qtype {
        RecordType::Unknown(n) => {
            out.extend_from_slice(b"TYPE");
            push_int(out, n);
        }
        t => out.extend_from_slice(<&'static str>::from(t).as_bytes()),
    }
    out.extend_from_slice(b"\",\"outcome\":\"");
    out.extend_from_slice(record.outcome.as_str().as_bytes());
    out.extend_from_slice(b"\",\"rcode\":\"");
    match crate::metrics::rcode_mnemonic(record.rcode) {
        Some(name) => out.extend_from_slice(name.as_bytes()),
        None => {
            out.extend_from_slice(b"RCODE");
            push_int(out, u16::from(record.rcode));
        }
    }
    out.extend_from_slice(b"\",\"list\":");
    let matched = record.matched.as_ref();
    text(out, matched.map(|m| &*m.list));
    out.extend_from_slice(b",\"action\":");
    word(out, matched.map(|m| m.action.as_str()));
    out.extend_from_slice(b",\"via\":");
    word(out, matched.map(|m| m.via.as_str()));
    out.extend_from_slice(b",\"answers\":[");
    for_each_address(record, |i, ip| {
        out.extend_from_slice(if i == 0 { b"\"" } else { b",\"" });
        push_ip(out, ip);
        out.push(b'"');
    });
    out.extend_from_slice(b"],\"upstream\":");
    match record.upstream {
        Some(SocketAddr::V4(upstream)) => {
            out.push(b'"');
            push_ip(out, IpAddr::V4(*upstream.ip()));
            out.push(b':');
            push_int(out, upstream.port());
            out.push(b'"');
        }
        Some(upstream) => {
            let _ = write!(out, "\"{upstream}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    // microseconds, as milliseconds with three decimals
    let micros = u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX);
    out.extend_from_slice(b",\"duration_ms\":");
    push_int(out, micros / 1000);
    push_thousandths(out, micros % 1000);
    let cached = matches!(record.outcome, Outcome::Cached | Outcome::Stale);
    out.extend_from_slice(if cached {
        b",\"cached\":true}\n"
    } else {
        b",\"cached\":false}\n"
    });
}

/// `.` and `n` (below 1000) as three digits: the fraction of a time or a duration.
fn push_thousandths(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&[
        b'.',
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

/// An integer in decimal, without `fmt`'s machinery.
fn push_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An address as `Display` writes it; IPv4 (nearly every line's client and answers) without
/// `fmt`, which was a third of the writer's time.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            push_int(out, a);
            for octet in [b, c, d] {
                out.push(b'.');
                push_int(out, octet);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Calls `f` with each address the client was given (and its place): where the answer's chain
/// leads (A, AAAA, and the address hints of HTTPS/SVCB), the same for a cache hit and a reply
/// built record by record.
fn for_each_address(record: &Record, mut f: impl FnMut(usize, IpAddr)) {
    match &record.answers {
        Answered::None => {}
        Answered::Few(few, n) => few[..usize::from(*n)]
            .iter()
            .enumerate()
            .for_each(|(i, &ip)| f(i, ip)),
        Answered::Many(many) => many.iter().enumerate().for_each(|(i, &ip)| f(i, ip)),
        Answered::Reply(reply) => {
            let Some(qname) = &record.qname else {
                return;
            };
            let mut encoded = Vec::new();
            destinations::encode(&Name::from(qname), &reply.answers, &mut encoded);
            DestinationsRef::new(&encoded)
                .addresses()
                .enumerate()
                .for_each(|(i, (ip, _))| f(i, ip));
        }
    }
}

/// Lower case, without the final dot, as the evidence store and `hushd report` write names
/// (the root stays `.`), appended to `out`.
/// Returns whether the name was plain (needs no JSON escaping).
fn query_name(name: &LowerName, out: &mut String) -> bool {
    use std::fmt::Write as _;
    // the usual name: lower-case letters, digits, '-' and '_', copied as they are; anything
    // else is written by hickory, which escapes it as a zone file would
    let plain = |label: &[u8]| {
        label
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
    };
    let name = Name::from(name);
    if name.iter().all(plain) {
        for (i, label) in name.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.extend(label.iter().map(|&b| char::from(b)));
        }
        if out.is_empty() {
            out.push('.');
        }
        return true;
    }
    let start = out.len();
    let _ = write!(out, "{}", LowerName::from(name));
    if out.len() > start + 1 && out.ends_with('.') {
        out.pop();
    }
    false
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
        r.duration = Duration::from_micros(1_234);
        *r
    }

    /// The time written from a second's cached text is humantime's, across seconds and within.
    #[test]
    fn times_written_from_the_cached_second_are_rfc3339_millis() {
        let mut scratch = Scratch::default();
        for ms in [
            0_u64,
            1,
            999,
            1000,
            1_764_750_600_123,
            1_764_750_600_999,
            1_764_750_601_007,
        ] {
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            let mut out = Vec::new();
            scratch.write_time(at, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_millis(at).to_string()
            );
        }
    }

    /// A plain name is copied label by label; anything else is escaped as hickory writes it.
    #[test]
    fn query_names_plain_and_escaped() {
        let text = |n: &str| {
            let mut out = String::new();
            query_name(&LowerName::new(&Name::from_ascii(n).unwrap()), &mut out);
            out
        };
        assert_eq!(text("Tracking.MIUI.com."), "tracking.miui.com");
        assert_eq!(text("_dns.resolver.arpa."), "_dns.resolver.arpa");
        assert_eq!(text("."), ".");
        assert_eq!(text("a\\.b.example."), "a\\.b.example");
    }

    fn line(record: &Record, anonymize: Anonymize) -> serde_json::Value {
        let mut out = Vec::new();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_750_600_123);
        format_line(record, at, anonymize, &mut Scratch::default(), &mut out);
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

    /// Addresses and durations written without `fmt` read as `Display` writes them.
    #[test]
    fn addresses_ports_and_durations_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "192.168.100.255",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
        let mut r = record(Outcome::Forwarded);
        r.client = "2001:db8::9".parse().unwrap();
        r.answers = Answered::Few(
            [
                "203.0.113.7".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
                "0.0.0.0".parse().unwrap(),
                "0.0.0.0".parse().unwrap(),
            ],
            2,
        );
        for (upstream, micros, ms) in [
            ("9.9.9.9:53", 0, 0.0),
            ("[2620:fe::fe]:853", 1_000_007, 1000.007),
            ("127.0.0.1:65535", 999, 0.999),
        ] {
            r.upstream = Some(upstream.parse().unwrap());
            r.duration = Duration::from_micros(micros);
            let v = line(&r, Anonymize::None);
            assert_eq!(v["client"], "2001:db8::9");
            assert_eq!(
                v["answers"],
                serde_json::json!(["203.0.113.7", "2001:db8::1"])
            );
            assert_eq!(v["upstream"], upstream);
            assert_eq!(v["duration_ms"], ms);
        }
    }

    #[test]
    fn the_wall_clock_time_is_worked_out_from_the_monotonic_start() {
        let now = (Instant::now(), SystemTime::now());
        let before = now.0 - Duration::from_millis(1500);
        assert_eq!(wall_clock(before, now), now.1 - Duration::from_millis(1500));
        let after = now.0 + Duration::from_millis(20);
        assert_eq!(wall_clock(after, now), now.1 + Duration::from_millis(20));
    }

    #[test]
    fn names_types_and_rcodes_are_written_as_dig_writes_them() {
        let mut r = record(Outcome::Forwarded);
        r.qtype = RecordType::Unknown(65280);
        r.rcode = ResponseCode::YXRRSet;
        let v = line(&r, Anonymize::None);
        assert_eq!(
            (&v["qtype"], &v["rcode"]),
            (&"TYPE65280".into(), &"RCODE7".into())
        );
        r.qtype = RecordType::HTTPS;
        r.rcode = ResponseCode::NXDomain;
        let v = line(&r, Anonymize::None);
        assert_eq!(
            (&v["qtype"], &v["rcode"]),
            (&"HTTPS".into(), &"NXDOMAIN".into())
        );
        let mut root = String::new();
        assert!(query_name(&LowerName::from(Name::root()), &mut root));
        assert_eq!(root, ".");
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
        let by_name = |name: &str| policy.lists().iter().find(|l| &*l.name == name).unwrap();
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

    /// The query path's cost of the query log: a cached name answered by `udp::process` (the
    /// hit path) a million times with the log off and on (the writer writing to a temporary
    /// file meanwhile). Prints the figures, asserts nothing about time. Run in release:
    /// `cargo test --release --lib -- --ignored cost_of_the_query_log --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement, run by hand"]
    async fn cost_of_the_query_log_on_the_hit_path() {
        use std::hint::black_box;

        use arc_swap::ArcSwap;
        use hickory_proto::{
            op::Message,
            rr::{RData, Record as Rr, rdata::A},
        };

        use crate::{
            answer::Answer,
            config::Config,
            handler::QueryHandler,
            policy::Policy,
            udp::{Action, process},
        };

        const ROUNDS: u32 = 1_000_000;
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nallow_clients = [\"127.0.0.0/8\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\n[limits]\nclient_qps = 0\n[querylog]\nenabled = true\npath = \"{}\"\n",
            dir.path().join("queries.jsonl").display()
        );
        let config = Config::parse(Path::new("/test/hushd.toml"), &text).unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let policy = Policy::build(&config, vec![]).unwrap();
        let handler = QueryHandler::new(
            &config,
            Arc::new(ArcSwap::from_pointee(policy)),
            metrics.clone(),
        )
        .await
        .unwrap();
        let owner = Name::from_ascii("www.example.com.").unwrap();
        let answer = Answer {
            rcode: ResponseCode::NoError,
            answers: vec![Rr::from_rdata(
                owner.clone(),
                300,
                RData::A(A::new(192, 0, 2, 1)),
            )],
            authorities: vec![],
            additionals: vec![],
            ttl: Some(300),
            authentic_data: false,
        };
        handler
            .cache
            .insert(LowerName::new(&owner), RecordType::A, false, &answer);
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(hickory_proto::op::Query::query(owner, RecordType::A));
        let datagram = m.to_vec().unwrap();
        let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let mut out = Vec::with_capacity(512);
        let run = |handler: &QueryHandler, out: &mut Vec<u8>| {
            let start = Instant::now();
            for _ in 0..ROUNDS {
                let action = process(handler, black_box(&datagram), src, out);
                assert!(matches!(action, Action::Send));
            }
            start.elapsed() / ROUNDS
        };
        // warm up, then alternate off and on
        run(&handler, &mut out);
        let log = QueryLog::start(&config.querylog, &metrics).unwrap();
        for round in 0..3 {
            handler.querylog.store(None);
            let off = run(&handler, &mut out);
            handler.querylog.store(Some(Arc::new(log.clone())));
            let dropped_before = metrics.querylog_dropped.get();
            let on = run(&handler, &mut out);
            let dropped = metrics.querylog_dropped.get() - dropped_before;
            eprintln!(
                "round {round}: off {off:?}/query, on {on:?}/query ({:.2}x the time), {dropped} of {ROUNDS} lines dropped (the loop outruns the writer)",
                on.as_nanos() as f64 / off.as_nanos() as f64
            );
            log.flush(Duration::from_secs(30));
        }
        // the writer alone: how many lines a second it formats and writes
        handler.querylog.store(Some(Arc::new(log.clone())));
        let paced = Instant::now();
        let mut sent = 0u64;
        let before = metrics.querylog_dropped.get();
        while paced.elapsed() < Duration::from_secs(2) {
            for _ in 0..100 {
                process(&handler, &datagram, src, &mut out);
            }
            sent += 100;
            std::thread::sleep(Duration::from_micros(500));
        }
        log.flush(Duration::from_secs(30));
        let written = std::fs::read_to_string(dir.path().join("queries.jsonl"))
            .unwrap()
            .lines()
            .count();
        eprintln!(
            "paced at {:.0} q/s for 2 s: {} dropped; {written} lines in the file, one is {} bytes",
            sent as f64 / paced.elapsed().as_secs_f64(),
            metrics.querylog_dropped.get() - before,
            std::fs::read_to_string(dir.path().join("queries.jsonl"))
                .unwrap()
                .lines()
                .next()
                .map_or(0, str::len)
        );
    }
}
