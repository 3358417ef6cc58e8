//! `hushd evidence forget --client X`: deletes one client's data, for a person who asks to be
//! forgotten (GDPR art. 17) or a device that left. X is a `[clients]` name (its rows under that
//! name, and under each of its addresses), an address, or a network in CIDR form.
//!
//! - The evidence store: its rows of that client are deleted in one transaction, with SQLite's
//!   `secure_delete` (the freed pages are overwritten), then the WAL is checkpointed so the
//!   rows do not linger in it. Safe while hushd runs (WAL: the daemon's writer waits, at most
//!   the busy timeout).
//! - The query log: every file at its path (the live file, `queries.jsonl.1` ...,
//!   logrotate's uncompressed copies) is rewritten without the client's lines, under the lock
//!   the daemon's writer takes for each write, so no line is lost or torn while hushd runs
//!   (lines it cannot queue meanwhile are dropped and counted, as whenever the disk is slow).
//!   Compressed copies are named, not opened: the admin purges them.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, Write},
    net::IpAddr,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use ipnetwork::IpNetwork;
use nix::fcntl::Flock;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use serde::Deserialize;

use super::querylog::lock;
use crate::config::{Anonymize, Config};

/// Whose data: what `--client` named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A `[clients]` name and its addresses in the config.
    Name(String, Vec<IpAddr>),
    Address(IpAddr),
    Network(IpNetwork),
}

#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error(
        "--client {0}: not a [clients] name in the config, an address or a network (CIDR such as 192.168.1.0/24)"
    )]
    UnknownClient(String),
    #[error("evidence store {path}: {source}")]
    Store {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("query log {path}: {source}")]
    Log { path: PathBuf, source: io::Error },
}

impl Who {
    /// Reads `--client`: a network if it has a `/`, else an address, else a `[clients]` name.
    pub fn parse(arg: &str, config: &Config) -> Result<Self, ForgetError> {
        if arg.contains('/') {
            return IpNetwork::from_str(arg)
                .map(Self::Network)
                .map_err(|_| ForgetError::UnknownClient(arg.into()));
        }
        if let Ok(addr) = IpAddr::from_str(arg) {
            return Ok(Self::Address(addr.to_canonical()));
        }
        config
            .clients
            .iter()
            .find(|c| c.name == arg)
            .map(|c| Self::Name(c.name.clone(), c.addresses.clone()))
            .ok_or_else(|| ForgetError::UnknownClient(arg.into()))
    }

    /// Whether a row or line with this client address (as text) and name is this client's.
    pub fn matches(&self, client: &str, client_name: Option<&str>) -> bool {
        let addr = IpAddr::from_str(client).ok().map(|a| a.to_canonical());
        match self {
            Self::Name(name, addresses) => {
                client_name == Some(name.as_str())
                    || addr.is_some_and(|a| addresses.iter().any(|b| b.to_canonical() == a))
            }
            Self::Address(want) => addr == Some(*want),
            Self::Network(net) => addr.is_some_and(|a| net.contains(a)),
        }
    }

    /// What the output calls it.
    fn describe(&self) -> String {
        match self {
            Self::Name(name, addresses) => {
                let addresses: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
                format!("\"{name}\" ({})", addresses.join(", "))
            }
            Self::Address(a) => a.to_string(),
            Self::Network(n) => n.to_string(),
        }
    }
}

/// What `forget` did, to print.
#[derive(Debug, Default)]
pub struct Forgotten {
    /// Rows deleted from the store; `None`: there is no store at that path.
    pub rows: Option<usize>,
    /// Each query log file rewritten, with the lines it lost.
    pub log_files: Vec<(PathBuf, usize)>,
    /// Files that look like copies of the query log but are compressed: left to the admin.
    pub untouched: Vec<PathBuf>,
}

/// Deletes `who`'s rows from the store at `db` and its lines from the query logs at
/// `querylog`'s path.
pub fn forget(db: &Path, querylog: &Path, who: &Who) -> Result<Forgotten, ForgetError> {
    let rows = forget_in_store(db, who).map_err(|source| ForgetError::Store {
        path: db.to_path_buf(),
        source,
    })?;
    let mut done = Forgotten {
        rows,
        ..Forgotten::default()
    };
    forget_in_log(querylog, who, &mut done).map_err(|source| ForgetError::Log {
        path: querylog.to_path_buf(),
        source,
    })?;
    Ok(done)
}

/// How long a delete waits for the daemon's writer to finish its batch.
const BUSY: Duration = Duration::from_secs(10);

fn forget_in_store(db: &Path, who: &Who) -> rusqlite::Result<Option<usize>> {
    if !db.exists() {
        return Ok(None);
    }
    // READ_WRITE without CREATE: a mistyped --db is not made into an empty store
    let mut conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(BUSY)?;
    // the deleted rows' bytes are overwritten, not just unlinked from the b-tree
    conn.pragma_update(None, "secure_delete", true)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let pairs: Vec<(String, String)> = {
        let mut distinct = tx.prepare("SELECT DISTINCT client, client_name FROM evidence")?;
        distinct
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut deleted = 0;
    {
        let mut delete =
            tx.prepare("DELETE FROM evidence WHERE client = ?1 AND client_name = ?2")?;
        for (client, name) in &pairs {
            let name_opt = (!name.is_empty()).then_some(name.as_str());
            if who.matches(client, name_opt) {
                deleted += delete.execute((client, name))?;
            }
        }
    }
    tx.commit()?;
    // Move the change into the main file and empty the WAL, which still holds the old pages.
    // Busy (a reader mid-way) is no failure: the next checkpoint does it.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    Ok(Some(deleted))
}

/// The two fields of a query log line `forget` reads.
#[derive(Deserialize)]
struct LineClient {
    client: String,
    client_name: Option<String>,
}

/// Rewrites every query log file at `path` without `who`'s lines, noting in `done` the files
/// changed (with the lines each lost) and the compressed copies left alone.
fn forget_in_log(path: &Path, who: &Who, done: &mut Forgotten) -> io::Result<()> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    // Held until every file is done: the daemon's writer neither writes nor rotates meanwhile,
    // so the copies listed now are the ones there are.
    let mut live = lock_live(path)?;
    let base = base.to_string_lossy();
    let mut copies = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != *base && name.starts_with(&*base) && entry.file_type()?.is_file() {
                    copies.push(entry.path());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    copies.sort();
    if let Some(live) = &mut live {
        let removed = rewrite_in_place(live, who)?;
        if removed > 0 {
            done.log_files.push((path.to_path_buf(), removed));
        }
    }
    forget_in_copies(copies, who, done)?;
    // only now may the writer write (or rotate) again
    drop(live);
    Ok(())
}

fn forget_in_copies(copies: Vec<PathBuf>, who: &Who, done: &mut Forgotten) -> io::Result<()> {
    for copy in copies {
        if is_compressed(&copy)? {
            done.untouched.push(copy);
            continue;
        }
        let removed = rewrite_copy(&copy, who)?;
        if removed > 0 {
            done.log_files.push((copy, removed));
        }
    }
    Ok(())
}

/// The live file, opened for rewriting and locked; `None` if there is none. If the daemon
/// rotated it between the open and the lock, the lock is on the old file: try again.
fn lock_live(path: &Path) -> io::Result<Option<Flock<File>>> {
    for _ in 0..100 {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let locked = lock(file)?;
        let now = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let held = locked.metadata()?;
        if (held.dev(), held.ino()) == (now.dev(), now.ino()) {
            return Ok(Some(locked));
        }
    }
    Err(io::Error::other(
        "the file kept being replaced while we waited for its lock",
    ))
}

fn is_compressed(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path)?;
    let n = file.read(&mut magic)?;
    let magic = &magic[..n];
    Ok([&b"\x1f\x8b"[..], b"\xfd7zX", b"\x28\xb5\x2f\xfd", b"BZh"]
        .iter()
        .any(|m| magic.starts_with(m)))
}

/// Whether a line is `who`'s. A line that is not one of hushd's (not JSON, no `client`) is
/// kept: it is not ours to judge.
fn is_theirs(line: &[u8], who: &Who) -> bool {
    serde_json::from_slice::<LineClient>(line)
        .is_ok_and(|l| who.matches(&l.client, l.client_name.as_deref()))
}

/// Copies `from` to `to` without `who`'s lines; how many were left out.
fn filter(from: impl Read, mut to: impl Write, who: &Who) -> io::Result<usize> {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    let mut removed = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if is_theirs(&line, who) {
            removed += 1;
        } else {
            to.write_all(&line)?;
        }
    }
    to.flush()?;
    Ok(removed)
}

/// A rotated copy nobody writes: filtered into a temporary file beside it, which replaces it
/// in one rename (a crash leaves the old file or the new one, never half of one).
fn rewrite_copy(path: &Path, who: &Who) -> io::Result<usize> {
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".forget");
    let tmp = path.with_file_name(tmp_name);
    let source = File::open(path)?;
    let meta = source.metadata()?;
    let out = File::create(&tmp)?;
    out.set_permissions(std::fs::Permissions::from_mode(meta.permissions().mode()))?;
    // run as root on the daemon's files: the copy stays the daemon user's (a non-root caller
    // owns what it can rewrite already, and cannot give files away)
    let _ = std::os::unix::fs::fchown(&out, Some(meta.uid()), Some(meta.gid()));
    let removed = match filter(source, io::BufWriter::new(&out), who) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if removed == 0 {
        std::fs::remove_file(&tmp)?;
        return Ok(0);
    }
    out.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(removed)
}

/// The live file, locked: rewritten in place, so the daemon's open (append-mode) handle goes
/// on writing at its new end.
fn rewrite_in_place(file: &mut File, who: &Who) -> io::Result<usize> {
    file.rewind()?;
    let mut kept = Vec::new();
    let removed = filter(&mut *file, &mut kept, who)?;
    if removed > 0 {
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(&kept)?;
        file.sync_all()?;
    }
    Ok(removed)
}

/// The report `hushd evidence forget` prints.
pub fn render(
    who: &Who,
    db: &Path,
    querylog: &Path,
    done: &Forgotten,
    anonymize: Anonymize,
) -> String {
    let mut out = String::new();
    let whom = who.describe();
    match done.rows {
        Some(n) => out.push_str(&format!(
            "evidence store {}: {n} rows of {whom} deleted\n",
            db.display()
        )),
        None => out.push_str(&format!(
            "evidence store {}: none there, nothing to delete\n",
            db.display()
        )),
    }
    if done.log_files.is_empty() {
        out.push_str(&format!(
            "query log {}: no line of {whom} (in it or its rotated copies)\n",
            querylog.display()
        ));
    }
    for (file, n) in &done.log_files {
        out.push_str(&format!(
            "query log {}: {n} lines of {whom} deleted\n",
            file.display()
        ));
    }
    for file in &done.untouched {
        out.push_str(&format!(
            "left as it is (compressed): {}: purge it by hand, or delete it\n",
            file.display()
        ));
    }
    if anonymize == Anonymize::Truncate && matches!(who, Who::Address(_)) {
        out.push_str(
            "note: anonymize = \"truncate\" stores each address as its /24 (IPv6: /48), so rows stored \
             since then name no single address; forget the network (e.g. 192.168.1.0/24) to delete \
             them, which deletes every device's rows in it\n",
        );
    }
    out.push_str(
        "note: the system journal's audit lines (target hushd::audit) name clients too; see \
         docs/privacy.md for how long journald keeps them\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            Path::new("/test/hushd.toml"),
            "[upstream]\nservers = [\"127.0.0.1:9\"]\n[clients]\n\"anna-laptop\" = [\"192.168.1.23\", \"2001:db8::23\"]\n",
        )
        .unwrap()
    }

    #[test]
    fn a_client_is_a_name_an_address_or_a_network() {
        let c = config();
        let name = Who::parse("anna-laptop", &c).unwrap();
        assert!(
            name.matches("192.168.1.23", None),
            "its address, before it had a name"
        );
        assert!(name.matches("2001:db8::23", None));
        assert!(
            name.matches("10.0.0.9", Some("anna-laptop")),
            "its name, at another address"
        );
        assert!(!name.matches("192.168.1.24", Some("ben")));
        let addr = Who::parse("192.168.1.23", &c).unwrap();
        assert!(addr.matches("192.168.1.23", Some("anna-laptop")));
        assert!(addr.matches("::ffff:192.168.1.23", None));
        assert!(!addr.matches("192.168.1.0", None));
        let net = Who::parse("192.168.1.0/24", &c).unwrap();
        assert!(net.matches("192.168.1.0", None));
        assert!(net.matches("192.168.1.200", None));
        assert!(!net.matches("192.168.2.1", None));
        assert!(matches!(
            Who::parse("nobody", &c),
            Err(ForgetError::UnknownClient(_))
        ));
        assert!(matches!(
            Who::parse("192.168.1.0/99", &c),
            Err(ForgetError::UnknownClient(_))
        ));
    }

    #[test]
    fn only_their_lines_go_and_foreign_lines_stay() {
        let who = Who::Address("127.0.0.21".parse().unwrap());
        let input = concat!(
            "{\"client\":\"127.0.0.21\",\"client_name\":null,\"qname\":\"a\"}\n",
            "{\"client\":\"127.0.0.22\",\"client_name\":null,\"qname\":\"b\"}\n",
            "not json at all\n",
            "{\"client\":\"127.0.0.21\",\"client_name\":\"x\",\"qname\":\"c\"}",
        );
        let mut out = Vec::new();
        assert_eq!(filter(input.as_bytes(), &mut out, &who).unwrap(), 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"client\":\"127.0.0.22\",\"client_name\":null,\"qname\":\"b\"}\nnot json at all\n"
        );
    }
}
