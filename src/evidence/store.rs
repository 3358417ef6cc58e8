//! The evidence database: SQLite (bundled, WAL), one table of aggregated rows, one row per
//! (day, client, list, name, action, via). The writer thread is its only writer; `hushd report`
//! and `/api/evidence` read it while the daemon runs (WAL lets them), and `hushd evidence
//! forget` deletes from it.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rusqlite::{Connection, ErrorCode, OpenFlags, params};

/// The schema, exactly as REPORT and QUERYLOG read it. `user_version` 1.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS evidence (
    day          TEXT    NOT NULL,
    client       TEXT    NOT NULL,
    client_name  TEXT    NOT NULL,
    client_group TEXT    NOT NULL,
    list         TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    via          TEXT    NOT NULL,
    count        INTEGER NOT NULL,
    first_seen   TEXT    NOT NULL,
    last_seen    TEXT    NOT NULL,
    qtypes       TEXT    NOT NULL,
    PRIMARY KEY (day, client, list, name, action, via)
);
CREATE INDEX IF NOT EXISTS evidence_by_list ON evidence (list, day);
PRAGMA user_version = 1;
";

/// One row, as written. Texts as the schema says: `day` `YYYY-MM-DD`, times RFC 3339 UTC with
/// milliseconds, `qtypes` sorted and comma-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub day: String,
    pub client: String,
    pub client_name: String,
    pub client_group: String,
    pub list: String,
    pub name: String,
    pub action: &'static str,
    pub via: &'static str,
    pub count: i64,
    pub first_seen: String,
    pub last_seen: String,
    pub qtypes: String,
}

/// Adds a batch's row to the stored one: counts add up, first and last seen widen (the texts
/// are fixed-width UTC, so they compare as text), query types merge (distinct, sorted as text),
/// and the device's name and group become the latest.
const UPSERT: &str = "
INSERT INTO evidence (day, client, client_name, client_group, list, name, action, via, count,
                      first_seen, last_seen, qtypes)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
ON CONFLICT (day, client, list, name, action, via) DO UPDATE SET
    count = count + excluded.count,
    first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen),
    qtypes = (SELECT group_concat(t, ',' ORDER BY t) FROM (
        SELECT DISTINCT value AS t FROM json_each(
            '[\"' || replace(evidence.qtypes || ',' || excluded.qtypes, ',', '\",\"') || '\"]'))),
    client_name = excluded.client_name,
    client_group = excluded.client_group
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is damaged or not a database: the writer moves it aside and starts afresh.
    #[error("evidence database {} is corrupt: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// Anything else (cannot open or create it, disk full, read-only, busy): the writer keeps
    /// its rows and tries again at the next flush.
    #[error("evidence database {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

impl StoreError {
    fn of(path: &Path, source: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        if is_corrupt(&source) {
            Self::Corrupt { path, source }
        } else {
            Self::Sqlite { path, source }
        }
    }

    pub fn is_corrupt(&self) -> bool {
        matches!(self, Self::Corrupt { .. })
    }
}

/// SQLITE_CORRUPT and SQLITE_NOTADB: the file cannot be trusted, whatever is retried.
pub fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating it if need be) the store at `path`: WAL, the schema, and a quick check
    /// of the whole file, so a damaged database is found at start, not half-way through a
    /// report.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |e| StoreError::of(path, e);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        // A reader (`hushd report`) never blocks the writer in WAL mode; `forget` may, briefly.
        conn.busy_timeout(Duration::from_secs(2)).map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "the evidence database is not in WAL mode: reports may wait for the writer");
        }
        // WAL with NORMAL: a transaction survives the process being killed; only a power
        // loss may take the last ones.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let check: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(err)?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                    Some(format!("quick_check: {check}")),
                ),
            });
        }
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `rows` in one transaction: all of them or, on an error, none.
    pub fn upsert(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::of(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx.prepare_cached(UPSERT).map_err(err)?;
            for r in rows {
                stmt.execute(params![
                    r.day,
                    r.client,
                    r.client_name,
                    r.client_group,
                    r.list,
                    r.name,
                    r.action,
                    r.via,
                    r.count,
                    r.first_seen,
                    r.last_seen,
                    r.qtypes
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Deletes the rows of days before `first_kept` (`YYYY-MM-DD`); how many went.
    pub fn prune(&self, first_kept: &str) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM evidence WHERE day < ?1", [first_kept])
            .map_err(|e| StoreError::of(&self.path, e))
    }
}

/// The first day `retention_days` keeps at `now`: today and the `retention_days` before it.
pub fn first_kept_day(now: SystemTime, retention_days: u32) -> String {
    let back = Duration::from_secs(u64::from(retention_days) * 86_400);
    super::batch::day_of(now.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH))
}

/// Moves a corrupt database out of the way, with its WAL and shared-memory files (a WAL left
/// behind would be replayed into the fresh database): `evidence.db` becomes
/// `evidence.db.corrupt-20261203T083000Z` (and `...-wal`, `...-shm`, as SQLite names them, so
/// `sqlite3` still opens the copy). Returns the new name of the database file.
pub fn move_aside(path: &Path, now: SystemTime) -> io::Result<PathBuf> {
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", aside.display()))?;
        }
    }
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// Why the store (or the query log) at `path` cannot be used, for `hushd check`: its folder is
/// missing, is not a folder, or hushd may not write in it (SQLite's side files, the log's
/// rotation); or the file is a folder or read-only.
pub fn unusable_path(path: &Path) -> Option<String> {
    use nix::unistd::{AccessFlags, access};
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(folder) {
        Err(e) => return Some(format!("folder {} cannot be used: {e}", folder.display())),
        Ok(m) if !m.is_dir() => return Some(format!("{} is not a folder", folder.display())),
        Ok(_) => {}
    }
    // SQLite writes the database, its WAL and its shared-memory file in that folder.
    if let Err(e) = access(folder, AccessFlags::W_OK | AccessFlags::X_OK) {
        return Some(format!(
            "hushd may not write in folder {}: {}",
            folder.display(),
            io::Error::from(e)
        ));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Some(format!("{} is a folder", path.display())),
        Ok(_) => access(path, AccessFlags::R_OK | AccessFlags::W_OK)
            .err()
            .map(|e| {
                format!(
                    "hushd may not write {}: {}",
                    path.display(),
                    io::Error::from(e)
                )
            }),
        Err(_) => None, // created at start
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn row(count: i64, first: &str, last: &str, qtypes: &str, name: &str) -> Row {
        Row {
            day: "2026-12-03".into(),
            client: "192.0.2.7".into(),
            client_name: name.into(),
            client_group: "iot".into(),
            list: "xiaomi".into(),
            name: "api.xiaomi.com".into(),
            action: "log",
            via: "name",
            count,
            first_seen: first.into(),
            last_seen: last.into(),
            qtypes: qtypes.into(),
        }
    }

    fn all(store: &Store) -> Vec<(i64, String, String, String, String)> {
        let mut stmt = store
            .conn
            .prepare("SELECT count, first_seen, last_seen, qtypes, client_name FROM evidence")
            .unwrap();
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    #[test]
    fn upserts_add_counts_widen_times_and_merge_qtypes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("evidence.db")).unwrap();
        let t = |s: &str| format!("2026-12-03T{s}Z");
        s.upsert(&[row(
            2,
            &t("08:00:00.000"),
            &t("08:10:00.000"),
            "AAAA,HTTPS",
            "",
        )])
        .unwrap();
        s.upsert(&[row(
            3,
            &t("07:59:59.999"),
            &t("08:05:00.000"),
            "A,HTTPS,TYPE65280",
            "tv",
        )])
        .unwrap();
        assert_eq!(
            all(&s),
            [(
                5,
                t("07:59:59.999"),
                t("08:10:00.000"),
                "A,AAAA,HTTPS,TYPE65280".into(),
                "tv".into()
            )]
        );
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = s
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1);
    }

    #[test]
    fn prune_deletes_days_before_the_first_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("evidence.db")).unwrap();
        let mut old = row(1, "x", "x", "A", "");
        old.day = "2026-09-03".into();
        let mut kept = old.clone();
        kept.day = "2026-09-04".into();
        s.upsert(&[old, kept, row(1, "x", "x", "A", "")]).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_286_600);
        assert_eq!(first_kept_day(now, 90), "2026-09-04");
        assert_eq!(s.prune(&first_kept_day(now, 90)).unwrap(), 1);
        assert_eq!(all(&s).len(), 2);
    }

    #[test]
    fn garbage_is_corrupt_and_moves_aside_with_its_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evidence.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
        // SQLite itself removed the WAL that could not be one; a real one stays with its file
        std::fs::write(dir.path().join("evidence.db-wal"), b"old wal").unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_286_600);
        let aside = move_aside(&path, now).unwrap();
        assert_eq!(
            aside,
            dir.path().join("evidence.db.corrupt-20261203T083000Z")
        );
        assert!(aside.exists() && !path.exists());
        assert!(
            dir.path()
                .join("evidence.db.corrupt-20261203T083000Z-wal")
                .exists()
        );
        assert!(!dir.path().join("evidence.db-wal").exists());
        assert!(Store::open(&path).is_ok());
    }

    #[test]
    fn an_unusable_path_is_an_error_not_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"").unwrap();
        let path = file.join("evidence.db");
        let err = Store::open(&path).unwrap_err();
        assert!(!err.is_corrupt(), "{err}");
        assert!(unusable_path(&path).unwrap().contains("not a folder"));
        let missing = dir.path().join("missing").join("evidence.db");
        assert!(unusable_path(&missing).unwrap().contains("cannot be used"));
        assert!(unusable_path(&dir.path().join("evidence.db")).is_none());
        assert!(unusable_path(dir.path()).unwrap().contains("is a folder"));
    }
}
