//! Matches added up in memory between two writes: one entry per (day, client, list, name,
//! action, via), the store's primary key, with its count, first and last time and query types.
//! Pure: no I/O, no clock of its own.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use hickory_proto::rr::{LowerName, RecordType};
use rustc_hash::FxHashMap;

use super::{Event, store::Row};
use crate::{
    config::Anonymize,
    policy::{Action, Via},
};

/// The store's primary key, before it is text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// Days since 1970-01-01, UTC.
    day: u64,
    /// After anonymizing.
    client: IpAddr,
    list: Arc<str>,
    name: LowerName,
    action: Action,
    via: Via,
}

#[derive(Debug, Clone)]
struct Tally {
    count: u64,
    first: SystemTime,
    last: SystemTime,
    /// Distinct, in no order (a few at most).
    qtypes: Vec<RecordType>,
    /// The latest seen: a renamed device or a group change shows in the row.
    client_name: Option<Arc<str>>,
    group: Arc<str>,
}

/// What `Batch::add` did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Counted,
    /// The batch holds `max_rows` rows and this event needed a new one.
    Dropped,
}

/// Matches not yet written.
#[derive(Debug)]
pub struct Batch {
    rows: FxHashMap<Key, Tally>,
    max_rows: usize,
    anonymize: Anonymize,
}

impl Batch {
    /// A batch of at most `max_rows` rows (what a store that cannot be written keeps waiting).
    pub fn new(max_rows: usize, anonymize: Anonymize) -> Self {
        Self {
            rows: FxHashMap::default(),
            max_rows,
            anonymize,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn add(&mut self, e: Event) -> Added {
        let key = Key {
            day: unix_secs(e.at) / 86_400,
            client: self.anonymize.apply(e.client),
            list: e.list,
            name: e.name,
            action: e.action,
            via: e.via,
        };
        if let Some(t) = self.rows.get_mut(&key) {
            t.count += 1;
            t.first = t.first.min(e.at);
            t.last = t.last.max(e.at);
            if !t.qtypes.contains(&e.qtype) {
                t.qtypes.push(e.qtype);
            }
            t.client_name = e.client_name;
            t.group = e.group;
            return Added::Counted;
        }
        if self.rows.len() >= self.max_rows {
            return Added::Dropped;
        }
        self.rows.insert(
            key,
            Tally {
                count: 1,
                first: e.at,
                last: e.at,
                qtypes: vec![e.qtype],
                client_name: e.client_name,
                group: e.group,
            },
        );
        Added::Counted
    }

    /// The rows as the store writes them, in key order (so a write is deterministic).
    pub fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .rows
            .iter()
            .map(|(k, t)| Row {
                day: day_text(k.day),
                client: k.client.to_string(),
                client_name: t.client_name.as_deref().unwrap_or("").to_string(),
                client_group: t.group.to_string(),
                list: k.list.to_string(),
                name: name_text(&k.name),
                action: k.action.as_str(),
                via: k.via.as_str(),
                count: i64::try_from(t.count).unwrap_or(i64::MAX),
                first_seen: timestamp(t.first),
                last_seen: timestamp(t.last),
                qtypes: qtypes_text(&t.qtypes),
            })
            .collect();
        rows.sort_by(|a, b| {
            (&a.day, &a.client, &a.list, &a.name, a.action, a.via)
                .cmp(&(&b.day, &b.client, &b.list, &b.name, b.action, b.via))
        });
        rows
    }

    /// After a write that succeeded.
    pub fn clear(&mut self) {
        self.rows.clear();
        // a burst's table is not kept for the rest of the run
        if self.rows.capacity() > 4096 {
            self.rows.shrink_to(4096);
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01, UTC).
pub fn day_text(day: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(day.saturating_mul(86_400));
    let mut s = humantime::format_rfc3339_seconds(t).to_string();
    s.truncate(10);
    s
}

/// The `day` of `t`, as the store writes it.
pub fn day_of(t: SystemTime) -> String {
    day_text(unix_secs(t) / 86_400)
}

/// RFC 3339, UTC, milliseconds: `2026-12-03T08:30:00.123Z`. Fixed width, so the store compares
/// them as text.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The query name as the store keeps it: lower-case (a `LowerName` is), in its ASCII (wire)
/// form, without the final dot.
pub fn name_text(name: &LowerName) -> String {
    let mut s = name.to_ascii();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s
}

/// `A,AAAA`: distinct, sorted as text (as the store's merge sorts them); an unnamed type is
/// `TYPE65280` (RFC 3597).
pub fn qtypes_text(qtypes: &[RecordType]) -> String {
    let mut names: Vec<String> = qtypes
        .iter()
        .map(|t| match t {
            RecordType::Unknown(n) => format!("TYPE{n}"),
            t => t.to_string(),
        })
        .collect();
    names.sort();
    names.dedup();
    names.join(",")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::{str::FromStr, time::Duration};

    use hickory_proto::rr::Name;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + 123)
    }

    fn event(secs: u64, client: &str, name: &str, qtype: RecordType) -> Event {
        Event {
            at: at(secs),
            client: client.parse().unwrap(),
            client_name: Some("tv".into()),
            group: "iot".into(),
            list: "xiaomi".into(),
            name: LowerName::new(&Name::from_str(name).unwrap()),
            qtype,
            action: Action::Log,
            via: Via::Name,
        }
    }

    // 2026-12-03T08:30:00Z
    const T: u64 = 1_796_286_600;

    #[test]
    fn matches_of_one_key_add_up_with_first_last_and_qtypes() {
        let mut b = Batch::new(10, Anonymize::None);
        b.add(event(
            T + 5,
            "192.0.2.7",
            "API.Xiaomi.com.",
            RecordType::AAAA,
        ));
        b.add(event(T, "192.0.2.7", "api.xiaomi.com.", RecordType::A));
        b.add(event(
            T + 9,
            "192.0.2.7",
            "api.xiaomi.com.",
            RecordType::AAAA,
        ));
        b.add(event(
            T + 1,
            "192.0.2.8",
            "api.xiaomi.com.",
            RecordType::HTTPS,
        ));
        let rows = b.rows();
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(
            (r.day.as_str(), r.client.as_str(), r.name.as_str()),
            ("2026-12-03", "192.0.2.7", "api.xiaomi.com")
        );
        assert_eq!(r.count, 3);
        assert_eq!(r.first_seen, "2026-12-03T08:30:00.123Z");
        assert_eq!(r.last_seen, "2026-12-03T08:30:09.123Z");
        assert_eq!(r.qtypes, "A,AAAA");
        assert_eq!(
            (r.client_name.as_str(), r.client_group.as_str()),
            ("tv", "iot")
        );
        assert_eq!((r.action, r.via), ("log", "name"));
        assert_eq!((rows[1].client.as_str(), rows[1].count), ("192.0.2.8", 1));
    }

    #[test]
    fn a_new_day_is_a_new_row() {
        let mut b = Batch::new(10, Anonymize::None);
        b.add(event(T, "192.0.2.7", "a.example.", RecordType::A));
        b.add(event(T + 86_400, "192.0.2.7", "a.example.", RecordType::A));
        let days: Vec<String> = b.rows().into_iter().map(|r| r.day).collect();
        assert_eq!(days, ["2026-12-03", "2026-12-04"]);
    }

    #[test]
    fn a_full_batch_still_counts_its_rows_but_drops_new_ones() {
        let mut b = Batch::new(1, Anonymize::None);
        assert_eq!(
            b.add(event(T, "192.0.2.7", "a.example.", RecordType::A)),
            Added::Counted
        );
        assert_eq!(
            b.add(event(T, "192.0.2.8", "a.example.", RecordType::A)),
            Added::Dropped
        );
        assert_eq!(
            b.add(event(T, "192.0.2.7", "a.example.", RecordType::A)),
            Added::Counted
        );
        assert_eq!(b.rows()[0].count, 2);
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn truncate_keeps_a_24_or_a_48_and_maps_ipv4_in_ipv6() {
        let mut b = Batch::new(10, Anonymize::Truncate);
        b.add(event(T, "192.0.2.7", "a.example.", RecordType::A));
        b.add(event(T, "::ffff:192.0.2.200", "a.example.", RecordType::A));
        b.add(event(T, "2001:db8:aa:bb::7", "a.example.", RecordType::A));
        let rows = b.rows();
        let clients: Vec<(&str, i64)> = rows.iter().map(|r| (r.client.as_str(), r.count)).collect();
        assert_eq!(clients, [("192.0.2.0", 2), ("2001:db8:aa::", 1)]);
        let none = Anonymize::None.apply("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(none, "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn texts() {
        assert_eq!(
            qtypes_text(&[
                RecordType::HTTPS,
                RecordType::A,
                RecordType::Unknown(65280),
                RecordType::A
            ]),
            "A,HTTPS,TYPE65280"
        );
        assert_eq!(name_text(&LowerName::new(&Name::root())), ".");
        assert_eq!(day_text(0), "1970-01-01");
        assert_eq!(day_of(at(T)), "2026-12-03");
    }
}
