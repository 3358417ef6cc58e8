//! Evidence stores made by hand for report tests: the store's schema (as hushd writes it) and
//! rows written with rusqlite, so the report is tested on exactly the rows given.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use rusqlite::{Connection, params};

/// The store's schema, as hushd writes it.
pub use hushd::evidence::store::SCHEMA;

/// One row of the store.
#[derive(Debug, Clone)]
pub struct Row {
    pub client: &'static str,
    pub client_name: &'static str,
    pub group: &'static str,
    pub list: &'static str,
    pub name: &'static str,
    pub action: &'static str,
    pub via: &'static str,
    pub count: u64,
    /// RFC 3339 with milliseconds; the row's day is the first ten characters.
    pub first_seen: String,
    pub last_seen: String,
    pub qtypes: &'static str,
}

impl Row {
    /// A `log` match by name, of one `A` query at `first_seen`..`last_seen`.
    pub fn new(
        client: &'static str,
        list: &'static str,
        name: &'static str,
        count: u64,
        first_seen: &str,
        last_seen: &str,
    ) -> Self {
        Self {
            client,
            client_name: "",
            group: "default",
            list,
            name,
            action: "log",
            via: "name",
            count,
            first_seen: first_seen.to_string(),
            last_seen: last_seen.to_string(),
            qtypes: "A",
        }
    }

    pub fn named(mut self, client_name: &'static str, group: &'static str) -> Self {
        self.client_name = client_name;
        self.group = group;
        self
    }

    pub fn action(mut self, action: &'static str) -> Self {
        self.action = action;
        self
    }

    pub fn via(mut self, via: &'static str) -> Self {
        self.via = via;
        self
    }

    pub fn qtypes(mut self, qtypes: &'static str) -> Self {
        self.qtypes = qtypes;
        self
    }
}

/// Creates a store at `path` (WAL mode, as hushd keeps it) holding `rows`.
pub fn create_store(path: &Path, rows: &[Row]) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    add_rows(&conn, rows);
    conn
}

pub fn add_rows(conn: &Connection, rows: &[Row]) {
    for r in rows {
        conn.execute(
            "INSERT INTO evidence (day, client, client_name, client_group, list, name, action, via,
                                   count, first_seen, last_seen, qtypes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                &r.first_seen[..10],
                r.client,
                r.client_name,
                r.group,
                r.list,
                r.name,
                r.action,
                r.via,
                r.count as i64,
                r.first_seen,
                r.last_seen,
                r.qtypes
            ],
        )
        .unwrap();
    }
}

/// `ago` before now, as the store writes times.
pub fn ago(ago: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() - ago).to_string()
}
