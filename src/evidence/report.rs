//! `hushd report` and `GET /api/evidence`: which device looked up which list's names, since
//! when and how often, read back from the evidence store. Reading is the only part that touches
//! a database (`read`); from rows on, everything is pure: `Report::build` aggregates, `text`
//! and `html` render.

mod devices;
mod html;
mod read;
mod text;
mod window;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use serde::Serialize;

pub use devices::publish_devices;
pub use html::html;
pub use read::{ReadError, devices_per_list, merge, read_store, read_stores};
pub use text::{csv, json, table};
pub use window::{ClientFilter, Selection, When, WhenError, Window, timestamp};

/// One row of the store: one day's matches of one client, list, name, action and way of
/// matching (the schema is in the store's module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub day: String,
    pub client: String,
    pub client_name: String,
    pub client_group: String,
    pub list: String,
    pub name: String,
    pub action: String,
    pub via: String,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub qtypes: String,
}

/// A report: the rows a spreadsheet gets, and the views the table and the page show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub generated: String,
    /// `null`: from the first record on.
    pub since: Option<String>,
    pub until: String,
    pub filters: Filters,
    /// The stores read (several: merged).
    pub stores: Vec<String>,
    /// One per device, list and action (and name, with `--by-name`).
    pub rows: Vec<Row>,
    pub matrix: Matrix,
    /// Per list, the devices and names behind it.
    pub lists: Vec<ListDetail>,
    /// Lookups per day and list.
    pub days: Vec<DayCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filters {
    pub list: Option<String>,
    pub group: Option<String>,
    pub client: Option<String>,
    pub by_name: bool,
}

/// A device's matches of one list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The device's `[clients]` name, or its address when it has none.
    pub device: String,
    pub address: String,
    pub group: String,
    pub list: String,
    pub action: String,
    /// Only with `--by-name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub lookups: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// How the names matched: `name`, `cname`, `ip`, `country`, `asn`.
    pub via: Vec<String>,
    pub qtypes: Vec<String>,
}

/// Devices down, lists across.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub lists: Vec<String>,
    pub devices: Vec<MatrixRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatrixRow {
    pub device: String,
    pub address: String,
    pub group: String,
    /// One per list of `Matrix::lists`; `null` where the device never matched it.
    pub cells: Vec<Option<Cell>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub lookups: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListDetail {
    pub list: String,
    pub actions: Vec<String>,
    pub lookups: u64,
    pub devices: Vec<DeviceNames>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceNames {
    pub device: String,
    pub address: String,
    pub group: String,
    pub lookups: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub names: Vec<NameCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameCount {
    pub name: String,
    pub lookups: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub via: Vec<String>,
    pub qtypes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayCount {
    pub day: String,
    pub list: String,
    pub lookups: u64,
    pub devices: u64,
}

/// Counts and times of a set of rows added up.
#[derive(Debug, Clone, Default)]
struct Tally {
    lookups: u64,
    first_seen: String,
    last_seen: String,
    via: BTreeSet<String>,
    qtypes: BTreeSet<String>,
}

impl Tally {
    fn add(&mut self, row: &StoredRow) {
        self.lookups = self.lookups.saturating_add(row.count);
        if self.first_seen.is_empty() || row.first_seen < self.first_seen {
            self.first_seen.clone_from(&row.first_seen);
        }
        if row.last_seen > self.last_seen {
            self.last_seen.clone_from(&row.last_seen);
        }
        self.via.insert(row.via.clone());
        self.qtypes.extend(
            row.qtypes
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        );
    }

    fn cell(&self) -> Cell {
        Cell {
            lookups: self.lookups,
            first_seen: self.first_seen.clone(),
            last_seen: self.last_seen.clone(),
        }
    }
}

/// Who a device address was: its name and group as of its latest match.
#[derive(Debug, Clone, Default)]
struct Identity {
    last_seen: String,
    name: String,
    group: String,
}

impl Identity {
    fn device(&self, address: &str) -> String {
        if self.name.is_empty() {
            address.to_string()
        } else {
            self.name.clone()
        }
    }
}

impl Report {
    /// The report of `rows` (already selected and merged) for `selection`, made at `generated`.
    /// A device is one client address; a device renamed (or regrouped) in the window is shown
    /// with its latest name and group.
    pub fn build(
        rows: &[StoredRow],
        selection: &Selection,
        stores: Vec<String>,
        generated: SystemTime,
    ) -> Self {
        let mut who: BTreeMap<&str, Identity> = BTreeMap::new();
        for r in rows {
            let id = who.entry(&r.client).or_default();
            if (&r.last_seen, &r.client_name) > (&id.last_seen, &id.name) {
                *id = Identity {
                    last_seen: r.last_seen.clone(),
                    name: r.client_name.clone(),
                    group: r.client_group.clone(),
                };
            }
        }
        let identity = |address: &str| who.get(address).cloned().unwrap_or_default();

        let mut by_row: BTreeMap<(&str, &str, &str, Option<&str>), Tally> = BTreeMap::new();
        let mut cells: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
        let mut per_list: BTreeMap<&str, ListTally<'_>> = BTreeMap::new();
        let mut per_day: BTreeMap<(&str, &str), (u64, BTreeSet<&str>)> = BTreeMap::new();
        for r in rows {
            let name = selection.by_name.then_some(r.name.as_str());
            by_row
                .entry((&r.client, &r.list, &r.action, name))
                .or_default()
                .add(r);
            cells.entry((&r.client, &r.list)).or_default().add(r);
            let list = per_list.entry(&r.list).or_default();
            list.actions.insert(&r.action);
            list.total.add(r);
            let device = list.devices.entry(&r.client).or_default();
            device.0.add(r);
            device.1.entry(&r.name).or_default().add(r);
            let day = per_day.entry((&r.day, &r.list)).or_default();
            day.0 = day.0.saturating_add(r.count);
            day.1.insert(&r.client);
        }

        let mut out_rows: Vec<Row> = by_row
            .into_iter()
            .map(|((address, list, action, name), t)| {
                let id = identity(address);
                Row {
                    device: id.device(address),
                    address: address.to_string(),
                    group: id.group,
                    list: list.to_string(),
                    action: action.to_string(),
                    name: name.map(str::to_string),
                    lookups: t.lookups,
                    first_seen: t.first_seen,
                    last_seen: t.last_seen,
                    via: t.via.into_iter().collect(),
                    qtypes: t.qtypes.into_iter().collect(),
                }
            })
            .collect();
        out_rows.sort_by(|a, b| {
            (&a.device, &a.address, &a.list, &a.action, &a.name)
                .cmp(&(&b.device, &b.address, &b.list, &b.action, &b.name))
        });

        let lists: Vec<String> = per_list.keys().map(|l| l.to_string()).collect();
        let mut devices: Vec<MatrixRow> = who
            .iter()
            .map(|(address, id)| MatrixRow {
                device: id.device(address),
                address: address.to_string(),
                group: id.group.clone(),
                cells: lists
                    .iter()
                    .map(|l| cells.get(&(*address, l.as_str())).map(Tally::cell))
                    .collect(),
            })
            .collect();
        devices.sort_by(|a, b| (&a.device, &a.address).cmp(&(&b.device, &b.address)));

        let details = per_list
            .into_iter()
            .map(|(list, t)| {
                let mut devices: Vec<DeviceNames> = t
                    .devices
                    .into_iter()
                    .map(|(address, (total, names))| {
                        let id = identity(address);
                        let mut names: Vec<NameCount> = names
                            .into_iter()
                            .map(|(name, n)| NameCount {
                                name: name.to_string(),
                                lookups: n.lookups,
                                first_seen: n.first_seen,
                                last_seen: n.last_seen,
                                via: n.via.into_iter().collect(),
                                qtypes: n.qtypes.into_iter().collect(),
                            })
                            .collect();
                        names.sort_by(|a, b| b.lookups.cmp(&a.lookups).then(a.name.cmp(&b.name)));
                        DeviceNames {
                            device: id.device(address),
                            address: address.to_string(),
                            group: id.group,
                            lookups: total.lookups,
                            first_seen: total.first_seen,
                            last_seen: total.last_seen,
                            names,
                        }
                    })
                    .collect();
                devices.sort_by(|a, b| {
                    b.lookups
                        .cmp(&a.lookups)
                        .then_with(|| (&a.device, &a.address).cmp(&(&b.device, &b.address)))
                });
                ListDetail {
                    list: list.to_string(),
                    actions: t.actions.into_iter().map(str::to_string).collect(),
                    lookups: t.total.lookups,
                    devices,
                }
            })
            .collect();

        let days = per_day
            .into_iter()
            .map(|((day, list), (lookups, clients))| DayCount {
                day: day.to_string(),
                list: list.to_string(),
                lookups,
                devices: clients.len() as u64,
            })
            .collect();

        Self {
            generated: timestamp(generated),
            since: selection.window.since.map(timestamp),
            until: selection.window.until_text(),
            filters: Filters {
                list: selection.list.clone(),
                group: selection.group.clone(),
                client: selection.client.as_ref().map(ToString::to_string),
                by_name: selection.by_name,
            },
            stores,
            rows: out_rows,
            matrix: Matrix { lists, devices },
            lists: details,
            days,
        }
    }

    pub fn lookups(&self) -> u64 {
        self.lists.iter().map(|l| l.lookups).sum()
    }
}

/// One list's rows added up, by device and, within a device, by name.
#[derive(Default)]
struct ListTally<'r> {
    actions: BTreeSet<&'r str>,
    total: Tally,
    devices: BTreeMap<&'r str, (Tally, BTreeMap<&'r str, Tally>)>,
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    pub(crate) fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    /// A store row; `when` is `day HH:MM..HH:MM`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn stored(
        client: &str,
        client_name: &str,
        group: &str,
        list: &str,
        name: &str,
        action: &str,
        count: u64,
        day: &str,
        from: &str,
        to: &str,
        qtypes: &str,
    ) -> StoredRow {
        StoredRow {
            day: day.into(),
            client: client.into(),
            client_name: client_name.into(),
            client_group: group.into(),
            list: list.into(),
            name: name.into(),
            action: action.into(),
            via: "name".into(),
            count,
            first_seen: format!("{day}T{from}:00.000Z"),
            last_seen: format!("{day}T{to}:00.000Z"),
            qtypes: qtypes.into(),
        }
    }

    /// Two devices, two lists, three days; the TV also has a second name on the xiaomi list.
    pub(crate) fn office() -> Vec<StoredRow> {
        vec![
            stored(
                "10.0.5.40",
                "reception-tv",
                "iot",
                "xiaomi",
                "tracking.miui.com",
                "log",
                10,
                "2026-12-01",
                "08:00",
                "18:00",
                "A",
            ),
            stored(
                "10.0.5.40",
                "reception-tv",
                "iot",
                "xiaomi",
                "tracking.miui.com",
                "log",
                5,
                "2026-12-02",
                "08:00",
                "12:00",
                "A,AAAA",
            ),
            stored(
                "10.0.5.40",
                "reception-tv",
                "iot",
                "xiaomi",
                "data.mistat.xiaomi.com",
                "log",
                2,
                "2026-12-02",
                "09:00",
                "09:30",
                "A",
            ),
            stored(
                "10.0.5.40",
                "reception-tv",
                "iot",
                "samsung",
                "samsungads.com",
                "block",
                1,
                "2026-12-03",
                "07:00",
                "07:00",
                "HTTPS",
            ),
            stored(
                "192.168.1.23",
                "",
                "default",
                "samsung",
                "samsungads.com",
                "block",
                4,
                "2026-12-02",
                "10:00",
                "11:00",
                "A",
            ),
        ]
    }

    pub(crate) fn selection() -> Selection {
        Selection::new(
            Window::new(
                When::Day(at("2026-12-01T00:00:00Z")),
                Some(When::Day(at("2026-12-03T00:00:00Z"))),
                at("2026-12-03T12:00:00Z"),
            )
            .unwrap(),
        )
    }

    pub(crate) fn office_report(by_name: bool) -> Report {
        let mut s = selection();
        s.by_name = by_name;
        Report::build(
            &office(),
            &s,
            vec!["evidence.db".into()],
            at("2026-12-03T12:00:00Z"),
        )
    }

    #[test]
    fn rows_add_up_per_device_list_and_action() {
        let r = office_report(false);
        assert_eq!(r.since.as_deref(), Some("2026-12-01T00:00:00.000Z"));
        assert_eq!(r.until, "2026-12-03T23:59:59.999Z");
        let rows: Vec<_> = r
            .rows
            .iter()
            .map(|r| {
                (
                    r.device.as_str(),
                    r.list.as_str(),
                    r.lookups,
                    r.first_seen.as_str(),
                    r.last_seen.as_str(),
                    r.qtypes.join(","),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "192.168.1.23",
                    "samsung",
                    4,
                    "2026-12-02T10:00:00.000Z",
                    "2026-12-02T11:00:00.000Z",
                    "A".to_string()
                ),
                (
                    "reception-tv",
                    "samsung",
                    1,
                    "2026-12-03T07:00:00.000Z",
                    "2026-12-03T07:00:00.000Z",
                    "HTTPS".to_string()
                ),
                (
                    "reception-tv",
                    "xiaomi",
                    17,
                    "2026-12-01T08:00:00.000Z",
                    "2026-12-02T12:00:00.000Z",
                    "A,AAAA".to_string()
                ),
            ]
        );
        assert!(r.rows.iter().all(|r| r.name.is_none()));
        assert_eq!(r.lookups(), 22);
    }

    #[test]
    fn by_name_splits_rows_by_name() {
        let r = office_report(true);
        let tv_xiaomi: Vec<_> = r
            .rows
            .iter()
            .filter(|r| r.list == "xiaomi")
            .map(|r| (r.name.as_deref().unwrap(), r.lookups))
            .collect();
        assert_eq!(
            tv_xiaomi,
            [("data.mistat.xiaomi.com", 2), ("tracking.miui.com", 15)]
        );
    }

    #[test]
    fn the_matrix_has_a_cell_per_device_and_list() {
        let m = office_report(false).matrix;
        assert_eq!(m.lists, ["samsung", "xiaomi"]);
        assert_eq!(m.devices.len(), 2);
        assert_eq!(m.devices[0].device, "192.168.1.23");
        assert_eq!(m.devices[0].cells[1], None);
        let tv = &m.devices[1];
        assert_eq!(
            (tv.device.as_str(), tv.group.as_str()),
            ("reception-tv", "iot")
        );
        assert_eq!(
            tv.cells[1],
            Some(Cell {
                lookups: 17,
                first_seen: "2026-12-01T08:00:00.000Z".into(),
                last_seen: "2026-12-02T12:00:00.000Z".into(),
            })
        );
    }

    #[test]
    fn lists_show_their_devices_and_names_busiest_first() {
        let r = office_report(false);
        let samsung = &r.lists[0];
        assert_eq!(samsung.list, "samsung");
        assert_eq!(samsung.actions, ["block"]);
        assert_eq!(samsung.lookups, 5);
        assert_eq!(samsung.devices[0].device, "192.168.1.23");
        let xiaomi = &r.lists[1];
        let names: Vec<_> = xiaomi.devices[0]
            .names
            .iter()
            .map(|n| (n.name.as_str(), n.lookups))
            .collect();
        assert_eq!(
            names,
            [("tracking.miui.com", 15), ("data.mistat.xiaomi.com", 2)]
        );
        let days: Vec<_> = r
            .days
            .iter()
            .map(|d| (d.day.as_str(), d.list.as_str(), d.lookups, d.devices))
            .collect();
        assert_eq!(
            days,
            [
                ("2026-12-01", "xiaomi", 10, 1),
                ("2026-12-02", "samsung", 4, 1),
                ("2026-12-02", "xiaomi", 7, 1),
                ("2026-12-03", "samsung", 1, 1),
            ]
        );
    }

    #[test]
    fn a_renamed_device_shows_its_latest_name_and_group() {
        let mut rows = office();
        rows.push(stored(
            "10.0.5.40",
            "lobby-tv",
            "lobby",
            "xiaomi",
            "tracking.miui.com",
            "log",
            1,
            "2026-12-03",
            "09:00",
            "09:00",
            "A",
        ));
        let r = Report::build(&rows, &selection(), vec![], at("2026-12-03T12:00:00Z"));
        assert!(
            r.rows
                .iter()
                .filter(|r| r.address == "10.0.5.40")
                .all(|r| r.device == "lobby-tv" && r.group == "lobby")
        );
    }

    #[test]
    fn an_empty_store_makes_an_empty_report() {
        let r = Report::build(
            &[],
            &Selection::new(
                Window::new(
                    When::Ago(Duration::from_secs(3600)),
                    None,
                    SystemTime::now(),
                )
                .unwrap(),
            ),
            vec![],
            SystemTime::now(),
        );
        assert!(r.rows.is_empty() && r.matrix.devices.is_empty() && r.days.is_empty());
    }
}
