//! Reading evidence stores back: read-only (safe beside a running hushd, which writes in WAL
//! mode), one or several (the fleet case), merged into one set of rows.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rusqlite::{Connection, OpenFlags, params};
use thiserror::Error;

use super::{
    StoredRow,
    window::{Selection, day_of, timestamp},
};

/// The schema version this reader knows (`PRAGMA user_version` of the store).
const SCHEMA_VERSION: i64 = 1;

/// How long a read waits for a lock the writer holds (a checkpoint, WAL recovery).
const BUSY_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum ReadError {
    #[error(
        "{}: no evidence store there (is [evidence] enabled, and has hushd recorded a match yet?)",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("{}: cannot read the evidence store: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{}: not an evidence store (no `evidence` table)", .0.display())]
    NotAStore(PathBuf),
    #[error(
        "{}: written by a newer hushd (schema version {version}; this one reads {SCHEMA_VERSION})",
        path.display()
    )]
    Newer { path: PathBuf, version: i64 },
}

/// Opens a store for reading only: never creates it, never writes it.
fn open(path: &Path) -> Result<Connection, ReadError> {
    if !path.exists() {
        return Err(ReadError::Missing(path.to_path_buf()));
    }
    let sqlite = |source| ReadError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    conn.busy_timeout(BUSY_WAIT).map_err(sqlite)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    if version > SCHEMA_VERSION {
        return Err(ReadError::Newer {
            path: path.to_path_buf(),
            version,
        });
    }
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'evidence')",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite)?;
    if !has_table {
        return Err(ReadError::NotAStore(path.to_path_buf()));
    }
    Ok(conn)
}

/// The rows of one store the selection may keep. The day, time, list and group conditions run
/// in SQLite (the `(list, day)` index serves a `--list`); `Selection::keeps` decides the rest.
pub fn read_store(path: &Path, selection: &Selection) -> Result<Vec<StoredRow>, ReadError> {
    let conn = open(path)?;
    let sqlite = |source| ReadError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let window = &selection.window;
    let (since, until) = (window.since_text(), window.until_text());
    let first_day = window.since.map(day_of).unwrap_or_default();
    let last_day = day_of(window.until);
    let mut statement = conn
        .prepare(
            "SELECT day, client, client_name, client_group, list, name, action, via, count,
                    first_seen, last_seen, qtypes
             FROM evidence
             WHERE day >= ?1 AND day <= ?2 AND last_seen >= ?3 AND first_seen <= ?4
               AND (?5 IS NULL OR list = ?5) AND (?6 IS NULL OR client_group = ?6)",
        )
        .map_err(sqlite)?;
    let rows = statement
        .query_map(
            params![
                first_day,
                last_day,
                since,
                until,
                selection.list,
                selection.group
            ],
            |r| {
                Ok(StoredRow {
                    day: r.get(0)?,
                    client: r.get(1)?,
                    client_name: r.get(2)?,
                    client_group: r.get(3)?,
                    list: r.get(4)?,
                    name: r.get(5)?,
                    action: r.get(6)?,
                    via: r.get(7)?,
                    // a negative count would be a damaged row: it counts as none
                    count: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
                    first_seen: r.get(9)?,
                    last_seen: r.get(10)?,
                    qtypes: r.get(11)?,
                })
            },
        )
        .map_err(sqlite)?;
    let mut out = Vec::new();
    for row in rows {
        let row = row.map_err(sqlite)?;
        if selection.keeps(&row) {
            out.push(row);
        }
    }
    Ok(out)
}

/// Every store's rows, merged (`merge`). One unreadable store fails the whole report: a fleet
/// report silently missing a resolver would understate what devices did.
pub fn read_stores(paths: &[PathBuf], selection: &Selection) -> Result<Vec<StoredRow>, ReadError> {
    let mut stores = Vec::with_capacity(paths.len());
    for path in paths {
        stores.push(read_store(path, selection)?);
    }
    Ok(merge(stores))
}

/// The rows of several stores as one store would hold them: rows with the same key (day,
/// client, list, name, action, via) add their counts, keep the earliest first and the latest
/// last seen, the union of their query types, and the client's name and group of the latest.
pub fn merge(stores: impl IntoIterator<Item = Vec<StoredRow>>) -> Vec<StoredRow> {
    let mut merged: BTreeMap<(String, String, String, String, String, String), StoredRow> =
        BTreeMap::new();
    for row in stores.into_iter().flatten() {
        let key = (
            row.day.clone(),
            row.client.clone(),
            row.list.clone(),
            row.name.clone(),
            row.action.clone(),
            row.via.clone(),
        );
        match merged.get_mut(&key) {
            None => {
                merged.insert(key, row);
            }
            Some(into) => {
                into.count = into.count.saturating_add(row.count);
                if row.first_seen < into.first_seen {
                    into.first_seen = row.first_seen;
                }
                if row.last_seen > into.last_seen {
                    into.last_seen = row.last_seen;
                    into.client_name = row.client_name;
                    into.client_group = row.client_group;
                }
                into.qtypes = union_qtypes(&into.qtypes, &row.qtypes);
            }
        }
    }
    merged.into_values().collect()
}

/// `'A,AAAA'` and `'A,HTTPS'` -> `'A,AAAA,HTTPS'`.
pub fn union_qtypes(a: &str, b: &str) -> String {
    let all: BTreeSet<&str> = a
        .split(',')
        .chain(b.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    all.into_iter().collect::<Vec<_>>().join(",")
}

/// For `hushd_evidence_devices{list}`: per list, the distinct clients that matched it since
/// `now - 24 h`.
pub fn devices_per_list(path: &Path, now: SystemTime) -> Result<Vec<(String, u64)>, ReadError> {
    let conn = open(path)?;
    let sqlite = |source| ReadError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let since = now
        .checked_sub(Duration::from_secs(86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut statement = conn
        .prepare(
            "SELECT list, COUNT(DISTINCT client) FROM evidence
             WHERE day >= ?1 AND last_seen >= ?2 GROUP BY list",
        )
        .map_err(sqlite)?;
    let rows = statement
        .query_map(params![day_of(since), timestamp(since)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })
        .map_err(sqlite)?;
    rows.collect::<Result<_, _>>().map_err(sqlite)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(client: &str, name: &str, count: u64, first: &str, last: &str, q: &str) -> StoredRow {
        StoredRow {
            day: "2026-12-01".into(),
            client: client.into(),
            client_name: name.into(),
            client_group: "default".into(),
            list: "xiaomi".into(),
            name: "tracking.miui.com".into(),
            action: "log".into(),
            via: "name".into(),
            count,
            first_seen: first.into(),
            last_seen: last.into(),
            qtypes: q.into(),
        }
    }

    #[test]
    fn merged_stores_add_counts_and_widen_times() {
        let a = vec![
            row(
                "10.0.0.5",
                "tv",
                3,
                "2026-12-01T08:00:00.000Z",
                "2026-12-01T09:00:00.000Z",
                "A",
            ),
            row(
                "10.0.0.6",
                "",
                1,
                "2026-12-01T08:00:00.000Z",
                "2026-12-01T08:00:00.000Z",
                "A",
            ),
        ];
        let b = vec![row(
            "10.0.0.5",
            "living-room-tv",
            4,
            "2026-12-01T07:00:00.000Z",
            "2026-12-01T10:00:00.000Z",
            "AAAA,HTTPS",
        )];
        let merged = merge([a, b]);
        assert_eq!(merged.len(), 2);
        let tv = &merged[0];
        assert_eq!(tv.count, 7);
        assert_eq!(tv.first_seen, "2026-12-01T07:00:00.000Z");
        assert_eq!(tv.last_seen, "2026-12-01T10:00:00.000Z");
        assert_eq!(tv.qtypes, "A,AAAA,HTTPS");
        // the name the device had last
        assert_eq!(tv.client_name, "living-room-tv");
        assert_eq!(merged[1].count, 1);
    }

    #[test]
    fn qtype_unions_are_sorted_and_distinct() {
        assert_eq!(union_qtypes("A,AAAA", "AAAA,A"), "A,AAAA");
        assert_eq!(union_qtypes("", "TXT"), "TXT");
        assert_eq!(union_qtypes("HTTPS", "A"), "A,HTTPS");
    }
}
