//! The report as text: a table for a terminal, CSV for a spreadsheet, JSON for scripts (and
//! `/api/evidence`).

use std::fmt::Write as _;

use super::{Cell, Report};

/// The device x list matrix, then per list the devices and names behind it.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hushd evidence: {} to {} UTC (generated {} UTC)",
        report
            .since
            .as_deref()
            .map_or("the first record".into(), short_time),
        short_time(&report.until),
        short_time(&report.generated)
    );
    if let Some(f) = filter_line(report) {
        let _ = writeln!(out, "{f}");
    }
    if report.stores.len() > 1 {
        let _ = writeln!(out, "stores: {}", safe(&report.stores.join(", ")));
    }
    if report.rows.is_empty() {
        out.push_str("\nno list matches in this period\n");
        return out;
    }
    let m = &report.matrix;
    let _ = writeln!(
        out,
        "\n{}, {}, {}. Each cell: lookups, first day .. last day seen.\n",
        counted(m.devices.len() as u64, "device"),
        counted(m.lists.len() as u64, "list"),
        counted(report.lookups(), "lookup")
    );
    let mut grid: Vec<Vec<String>> = vec![
        ["device", "address", "group"]
            .iter()
            .map(|s| s.to_string())
            .chain(m.lists.iter().map(|l| safe(l)))
            .collect(),
    ];
    for d in &m.devices {
        grid.push(
            [safe(&d.device), safe(&d.address), safe(&d.group)]
                .into_iter()
                .chain(d.cells.iter().map(|c| c.as_ref().map_or("-".into(), cell)))
                .collect(),
        );
    }
    out.push_str(&aligned(&grid));

    for list in &report.lists {
        let _ = writeln!(
            out,
            "\n{} ({}): {}, {}",
            safe(&list.list),
            list.actions.join(", "),
            counted(list.devices.len() as u64, "device"),
            counted(list.lookups, "lookup")
        );
        for d in &list.devices {
            let named = if d.device == d.address {
                safe(&d.address)
            } else {
                format!("{} ({})", safe(&d.device), safe(&d.address))
            };
            let _ = writeln!(
                out,
                "  {named}, group {}: {}, {} .. {}",
                safe(&d.group),
                counted(d.lookups, "lookup"),
                short_time(&d.first_seen),
                short_time(&d.last_seen)
            );
            let names: Vec<Vec<String>> = d
                .names
                .iter()
                .map(|n| {
                    vec![
                        safe(&n.name),
                        n.lookups.to_string(),
                        n.qtypes.join(","),
                        format!(
                            "{} .. {}",
                            short_time(&n.first_seen),
                            short_time(&n.last_seen)
                        ),
                        n.via
                            .iter()
                            .filter(|v| *v != "name")
                            .map(|v| format!("via {v}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ]
                })
                .collect();
            for line in aligned(&names).lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

/// `1 device`, `2 devices`.
pub(super) fn counted(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn filter_line(report: &Report) -> Option<String> {
    let f = &report.filters;
    let parts: Vec<String> = [
        ("list", &f.list),
        ("group", &f.group),
        ("client", &f.client),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {}", safe(v))))
    .collect();
    (!parts.is_empty()).then(|| format!("only {}", parts.join(", ")))
}

/// A matrix cell, to the day (the list's section below has the minutes): the matrix must
/// stay narrow enough for a terminal with several lists.
fn cell(c: &Cell) -> String {
    let day = |t: &str| safe(&t.chars().take(10).collect::<String>());
    format!(
        "{}  {} .. {}",
        c.lookups,
        day(&c.first_seen),
        day(&c.last_seen)
    )
}

/// Columns padded to their widest cell, two spaces apart, no trailing blanks.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            let _ = write!(line, "{c:<width$}  ", width = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `2026-12-01T08:30:00.123Z` -> `2026-12-01 08:30`.
pub(super) fn short_time(t: &str) -> String {
    let minutes: String = t.chars().take(16).collect();
    safe(&minutes.replacen('T', " ", 1))
}

/// Text from the store as it may go to a terminal: names come from DNS queries and client
/// names from the admin, so control characters (escape sequences) are shown escaped.
fn safe(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One row per device, list and action (and name, with `--by-name`), with a header row.
pub fn csv(report: &Report) -> String {
    let mut header = vec!["device", "address", "group", "list", "action"];
    if report.filters.by_name {
        header.push("name");
    }
    header.extend(["lookups", "first_seen", "last_seen", "via", "qtypes"]);
    let mut out = header.join(",");
    out.push_str("\r\n");
    for r in &report.rows {
        let mut fields = vec![r.device.as_str(), &r.address, &r.group, &r.list, &r.action];
        if report.filters.by_name {
            fields.push(r.name.as_deref().unwrap_or(""));
        }
        let (lookups, via, qtypes) = (r.lookups.to_string(), r.via.join(","), r.qtypes.join(","));
        fields.extend([lookups.as_str(), &r.first_seen, &r.last_seen, &via, &qtypes]);
        let fields: Vec<String> = fields.into_iter().map(csv_field).collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break. A field a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first: a query name a device made
/// up, under a listed domain) gets a leading `'`, so opening the file runs nothing.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The whole report as one JSON object: `generated`, `since`, `until`, `rows` (the CSV's
/// rows, with the same field names), and the matrix, lists and days the table and page show.
pub fn json(report: &Report) -> String {
    // A Report is strings, numbers and lists: it always serializes.
    serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::super::tests::office_report;
    use super::*;

    #[test]
    fn csv_has_a_header_and_a_row_per_device_and_list() {
        assert_eq!(
            csv(&office_report(false)),
            "device,address,group,list,action,lookups,first_seen,last_seen,via,qtypes\r\n\
             192.168.1.23,192.168.1.23,default,samsung,block,4,2026-12-02T10:00:00.000Z,2026-12-02T11:00:00.000Z,name,A\r\n\
             reception-tv,10.0.5.40,iot,samsung,block,1,2026-12-03T07:00:00.000Z,2026-12-03T07:00:00.000Z,name,HTTPS\r\n\
             reception-tv,10.0.5.40,iot,xiaomi,log,17,2026-12-01T08:00:00.000Z,2026-12-02T12:00:00.000Z,name,\"A,AAAA\"\r\n"
        );
    }

    #[test]
    fn csv_by_name_adds_the_name_column() {
        let text = csv(&office_report(true));
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("device,address,group,list,action,name,lookups,first_seen,last_seen,via,qtypes")
        );
        assert!(text.contains(
            "reception-tv,10.0.5.40,iot,xiaomi,log,data.mistat.xiaomi.com,2,2026-12-02T09:00:00.000Z,2026-12-02T09:30:00.000Z,name,A\r\n"
        ));
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(csv_field("@SUM(1,2)"), "\"'@SUM(1,2)\"");
        assert_eq!(csv_field("-2+3"), "'-2+3");
    }

    #[test]
    fn json_carries_the_csv_fields() {
        let v: serde_json::Value = serde_json::from_str(&json(&office_report(true))).unwrap();
        assert_eq!(v["generated"], "2026-12-03T12:00:00.000Z");
        assert_eq!(v["since"], "2026-12-01T00:00:00.000Z");
        assert_eq!(v["until"], "2026-12-03T23:59:59.999Z");
        let row = &v["rows"][0];
        for field in [
            "device",
            "address",
            "group",
            "list",
            "action",
            "name",
            "lookups",
            "first_seen",
            "last_seen",
        ] {
            assert!(!row[field].is_null(), "{field} missing in {row}");
        }
        assert_eq!(v["matrix"]["lists"][0], "samsung");
        let plain: serde_json::Value = serde_json::from_str(&json(&office_report(false))).unwrap();
        assert!(plain["rows"][0].get("name").is_none());
    }

    #[test]
    fn the_table_shows_the_matrix_then_each_list() {
        let text = table(&office_report(false));
        assert!(
            text.starts_with(
                "hushd evidence: 2026-12-01 00:00 to 2026-12-03 23:59 UTC (generated 2026-12-03 12:00 UTC)\n"
            ),
            "{text}"
        );
        let matrix: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("device"))
            .take(3)
            .collect();
        assert_eq!(
            matrix,
            [
                "device        address       group    samsung                      xiaomi",
                "192.168.1.23  192.168.1.23  default  4  2026-12-02 .. 2026-12-02  -",
                "reception-tv  10.0.5.40     iot      1  2026-12-03 .. 2026-12-03  17  2026-12-01 .. 2026-12-02",
            ],
            "{text}"
        );
        assert!(text.contains("\nxiaomi (log): 1 device, 17 lookups\n  reception-tv (10.0.5.40), group iot: 17 lookups, 2026-12-01 08:00 .. 2026-12-02 12:00\n    tracking.miui.com       15  A,AAAA  2026-12-01 08:00 .. 2026-12-02 12:00\n    data.mistat.xiaomi.com  2   A       2026-12-02 09:00 .. 2026-12-02 09:30\n"), "{text}");
    }

    #[test]
    fn terminal_text_shows_control_characters_escaped() {
        assert_eq!(safe("tv\u{1b}[2J"), "tv\\u{1b}[2J");
        assert_eq!(safe("plain"), "plain");
    }
}
