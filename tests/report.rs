//! `hushd report` and `/api/evidence`: the real binary reading evidence stores made with the
//! store's schema, in every format, merged, filtered; and the running daemon's API and devices
//! gauge over its `[evidence] path`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::{Value, json};
use support::{
    HUSHD, Setup,
    evidence::{Row, add_rows, ago, create_store},
    list,
    upstream::Upstream,
};

/// Three devices in November: a named TV on two Xiaomi names (one found through a CNAME) over
/// two days, an unnamed device on Samsung, a phone on TikTok days later.
fn november() -> Vec<Row> {
    vec![
        Row::new(
            "127.0.0.10",
            "xiaomi",
            "tracking.miui.com",
            12,
            "2026-11-20T08:00:00.000Z",
            "2026-11-20T17:30:00.250Z",
        )
        .named("living-room-tv", "iot"),
        Row::new(
            "127.0.0.10",
            "xiaomi",
            "tracking.miui.com",
            3,
            "2026-11-21T09:00:00.000Z",
            "2026-11-21T09:10:00.000Z",
        )
        .named("living-room-tv", "iot")
        .qtypes("A,AAAA"),
        Row::new(
            "127.0.0.10",
            "xiaomi",
            "data.mistat.xiaomi.com",
            2,
            "2026-11-21T10:00:00.000Z",
            "2026-11-21T10:05:00.000Z",
        )
        .named("living-room-tv", "iot")
        .via("cname"),
        Row::new(
            "127.0.0.11",
            "samsung",
            "samsungads.com",
            5,
            "2026-11-22T12:00:00.000Z",
            "2026-11-22T13:00:00.000Z",
        )
        .action("block")
        .qtypes("HTTPS"),
        Row::new(
            "127.0.0.12",
            "tiktok",
            "log.tiktokv.com",
            7,
            "2026-11-25T20:00:00.000Z",
            "2026-11-25T21:00:00.000Z",
        )
        .named("ceo-phone", "staff"),
    ]
}

fn run(args: &[&str]) -> Output {
    Command::new(HUSHD)
        .args(args)
        .env_remove("HUSHD_CONFIG")
        .output()
        .expect("run hushd")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "hushd report failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `hushd report --db DB` over all of November, with `extra` options.
fn report(db: &Path, extra: &[&str]) -> String {
    let db = db.to_str().unwrap();
    let mut args = vec![
        "report",
        "--db",
        db,
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-30",
    ];
    args.extend_from_slice(extra);
    stdout(&run(&args))
}

fn store(dir: &Path, file: &str, rows: &[Row]) -> PathBuf {
    let path = dir.join(file);
    drop(create_store(&path, rows));
    path
}

const CSV_HEADER: &str = "device,address,group,list,action,lookups,first_seen,last_seen,via,qtypes";

#[test]
fn csv_holds_a_row_per_device_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path(), "evidence.db", &november());
    assert_eq!(
        report(&db, &["--format", "csv"]),
        format!(
            "{CSV_HEADER}\r\n\
             127.0.0.11,127.0.0.11,default,samsung,block,5,2026-11-22T12:00:00.000Z,2026-11-22T13:00:00.000Z,name,HTTPS\r\n\
             ceo-phone,127.0.0.12,staff,tiktok,log,7,2026-11-25T20:00:00.000Z,2026-11-25T21:00:00.000Z,name,A\r\n\
             living-room-tv,127.0.0.10,iot,xiaomi,log,17,2026-11-20T08:00:00.000Z,2026-11-21T10:05:00.000Z,\"cname,name\",\"A,AAAA\"\r\n"
        )
    );
    assert_eq!(
        report(&db, &["--format", "csv", "--by-name"]),
        "device,address,group,list,action,name,lookups,first_seen,last_seen,via,qtypes\r\n\
         127.0.0.11,127.0.0.11,default,samsung,block,samsungads.com,5,2026-11-22T12:00:00.000Z,2026-11-22T13:00:00.000Z,name,HTTPS\r\n\
         ceo-phone,127.0.0.12,staff,tiktok,log,log.tiktokv.com,7,2026-11-25T20:00:00.000Z,2026-11-25T21:00:00.000Z,name,A\r\n\
         living-room-tv,127.0.0.10,iot,xiaomi,log,data.mistat.xiaomi.com,2,2026-11-21T10:00:00.000Z,2026-11-21T10:05:00.000Z,cname,A\r\n\
         living-room-tv,127.0.0.10,iot,xiaomi,log,tracking.miui.com,15,2026-11-20T08:00:00.000Z,2026-11-21T09:10:00.000Z,name,\"A,AAAA\"\r\n"
    );
}

/// The whole JSON object, field by field (`generated` is the time the report was made).
#[test]
fn json_carries_rows_matrix_lists_and_days() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path(), "evidence.db", &november());
    let mut got: Value = serde_json::from_str(&report(&db, &["--format", "json"])).unwrap();
    let generated = got["generated"].take();
    assert!(
        humantime::parse_rfc3339(generated.as_str().unwrap()).is_ok(),
        "{generated}"
    );
    let cell = |lookups: u64, first: &str, last: &str| json!({ "lookups": lookups, "first_seen": first, "last_seen": last });
    let want = json!({
        "generated": null,
        "since": "2026-11-01T00:00:00.000Z",
        "until": "2026-11-30T23:59:59.999Z",
        "filters": { "list": null, "group": null, "client": null, "by_name": false },
        "stores": [db.display().to_string()],
        "rows": [
            {
                "device": "127.0.0.11", "address": "127.0.0.11", "group": "default",
                "list": "samsung", "action": "block", "lookups": 5,
                "first_seen": "2026-11-22T12:00:00.000Z", "last_seen": "2026-11-22T13:00:00.000Z",
                "via": ["name"], "qtypes": ["HTTPS"]
            },
            {
                "device": "ceo-phone", "address": "127.0.0.12", "group": "staff",
                "list": "tiktok", "action": "log", "lookups": 7,
                "first_seen": "2026-11-25T20:00:00.000Z", "last_seen": "2026-11-25T21:00:00.000Z",
                "via": ["name"], "qtypes": ["A"]
            },
            {
                "device": "living-room-tv", "address": "127.0.0.10", "group": "iot",
                "list": "xiaomi", "action": "log", "lookups": 17,
                "first_seen": "2026-11-20T08:00:00.000Z", "last_seen": "2026-11-21T10:05:00.000Z",
                "via": ["cname", "name"], "qtypes": ["A", "AAAA"]
            }
        ],
        "matrix": {
            "lists": ["samsung", "tiktok", "xiaomi"],
            "devices": [
                {
                    "device": "127.0.0.11", "address": "127.0.0.11", "group": "default",
                    "cells": [cell(5, "2026-11-22T12:00:00.000Z", "2026-11-22T13:00:00.000Z"), null, null]
                },
                {
                    "device": "ceo-phone", "address": "127.0.0.12", "group": "staff",
                    "cells": [null, cell(7, "2026-11-25T20:00:00.000Z", "2026-11-25T21:00:00.000Z"), null]
                },
                {
                    "device": "living-room-tv", "address": "127.0.0.10", "group": "iot",
                    "cells": [null, null, cell(17, "2026-11-20T08:00:00.000Z", "2026-11-21T10:05:00.000Z")]
                }
            ]
        },
        "lists": [
            {
                "list": "samsung", "actions": ["block"], "lookups": 5,
                "devices": [{
                    "device": "127.0.0.11", "address": "127.0.0.11", "group": "default", "lookups": 5,
                    "first_seen": "2026-11-22T12:00:00.000Z", "last_seen": "2026-11-22T13:00:00.000Z",
                    "names": [{
                        "name": "samsungads.com", "lookups": 5,
                        "first_seen": "2026-11-22T12:00:00.000Z", "last_seen": "2026-11-22T13:00:00.000Z",
                        "via": ["name"], "qtypes": ["HTTPS"]
                    }]
                }]
            },
            {
                "list": "tiktok", "actions": ["log"], "lookups": 7,
                "devices": [{
                    "device": "ceo-phone", "address": "127.0.0.12", "group": "staff", "lookups": 7,
                    "first_seen": "2026-11-25T20:00:00.000Z", "last_seen": "2026-11-25T21:00:00.000Z",
                    "names": [{
                        "name": "log.tiktokv.com", "lookups": 7,
                        "first_seen": "2026-11-25T20:00:00.000Z", "last_seen": "2026-11-25T21:00:00.000Z",
                        "via": ["name"], "qtypes": ["A"]
                    }]
                }]
            },
            {
                "list": "xiaomi", "actions": ["log"], "lookups": 17,
                "devices": [{
                    "device": "living-room-tv", "address": "127.0.0.10", "group": "iot", "lookups": 17,
                    "first_seen": "2026-11-20T08:00:00.000Z", "last_seen": "2026-11-21T10:05:00.000Z",
                    "names": [
                        {
                            "name": "tracking.miui.com", "lookups": 15,
                            "first_seen": "2026-11-20T08:00:00.000Z", "last_seen": "2026-11-21T09:10:00.000Z",
                            "via": ["name"], "qtypes": ["A", "AAAA"]
                        },
                        {
                            "name": "data.mistat.xiaomi.com", "lookups": 2,
                            "first_seen": "2026-11-21T10:00:00.000Z", "last_seen": "2026-11-21T10:05:00.000Z",
                            "via": ["cname"], "qtypes": ["A"]
                        }
                    ]
                }]
            }
        ],
        "days": [
            { "day": "2026-11-20", "list": "xiaomi", "lookups": 12, "devices": 1 },
            { "day": "2026-11-21", "list": "xiaomi", "lookups": 5, "devices": 1 },
            { "day": "2026-11-22", "list": "samsung", "lookups": 5, "devices": 1 },
            { "day": "2026-11-25", "list": "tiktok", "lookups": 7, "devices": 1 }
        ]
    });
    assert_eq!(got, want, "{}", serde_json::to_string_pretty(&got).unwrap());

    // --by-name: the same rows split by name, each with its `name`
    let by_name: Value =
        serde_json::from_str(&report(&db, &["--format", "json", "--by-name"])).unwrap();
    let names: Vec<(&str, &str, u64)> = by_name["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["device"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["lookups"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("127.0.0.11", "samsungads.com", 5),
            ("ceo-phone", "log.tiktokv.com", 7),
            ("living-room-tv", "data.mistat.xiaomi.com", 2),
            ("living-room-tv", "tracking.miui.com", 15),
        ]
    );
}

#[test]
fn the_table_shows_the_matrix_and_the_names_behind_each_list() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path(), "evidence.db", &november());
    let text = report(&db, &[]);
    assert!(
        text.starts_with("hushd evidence: 2026-11-01 00:00 to 2026-11-30 23:59 UTC"),
        "{text}"
    );
    assert!(text.contains("3 devices, 3 lists, 29 lookups."), "{text}");
    let matrix: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("device "))
        .take(4)
        .collect();
    assert_eq!(matrix.len(), 4, "{text}");
    assert!(
        matrix[0]
            .split_whitespace()
            .eq(["device", "address", "group", "samsung", "tiktok", "xiaomi"])
    );
    assert!(
        matrix[3].starts_with("living-room-tv  127.0.0.10  iot")
            && matrix[3].ends_with(" 17  2026-11-20 .. 2026-11-21")
            && matrix[3].split_whitespace().filter(|c| *c == "-").count() == 2,
        "{text}"
    );
    assert!(
        text.contains(
            "\nxiaomi (log): 1 device, 17 lookups\n  living-room-tv (127.0.0.10), group iot: 17 lookups, 2026-11-20 08:00 .. 2026-11-21 10:05\n    tracking.miui.com       15  A,AAAA  2026-11-20 08:00 .. 2026-11-21 09:10\n    data.mistat.xiaomi.com  2   A       2026-11-21 10:00 .. 2026-11-21 10:05  via cname\n"
        ),
        "{text}"
    );
}

/// The page is one file that loads nothing from anywhere, and shows every device and name.
#[test]
fn html_is_one_self_contained_page() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path(), "evidence.db", &november());
    let out = dir.path().join("report.html");
    let printed = report(
        &db,
        &["--format", "html", "--output", out.to_str().unwrap()],
    );
    assert!(printed.is_empty(), "{printed}");
    let page = std::fs::read_to_string(&out).unwrap();
    let lower = page.to_ascii_lowercase();
    for outside in [
        "http://", "https://", "<script", "src=", "href=", "@import", "url(",
    ] {
        assert!(!lower.contains(outside), "the page holds {outside}");
    }
    for shown in [
        "living-room-tv",
        "ceo-phone",
        "127.0.0.11",
        "data.mistat.xiaomi.com",
        "log.tiktokv.com",
        "<svg",
        "Lookups per day",
    ] {
        assert!(page.contains(shown), "{shown} missing");
    }
}

/// Two hushd instances for one office: the same device on both resolvers adds up.
#[test]
fn several_stores_merge_into_one_report() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(dir.path(), "a.db", &november());
    let b = store(
        dir.path(),
        "b.db",
        &[
            // the same key as a row of a: counts add, times widen, qtypes join
            Row::new(
                "127.0.0.10",
                "xiaomi",
                "tracking.miui.com",
                4,
                "2026-11-20T07:00:00.000Z",
                "2026-11-20T18:00:00.000Z",
            )
            .named("living-room-tv", "iot")
            .qtypes("HTTPS"),
            // a device only the second resolver saw
            Row::new(
                "127.0.0.13",
                "samsung",
                "samsungads.com",
                1,
                "2026-11-23T08:00:00.000Z",
                "2026-11-23T08:00:00.000Z",
            )
            .action("block"),
        ],
    );
    let csv = stdout(&run(&[
        "report",
        "--db",
        a.to_str().unwrap(),
        "--db",
        b.to_str().unwrap(),
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-30",
        "--format",
        "csv",
    ]));
    assert_eq!(
        csv,
        format!(
            "{CSV_HEADER}\r\n\
             127.0.0.11,127.0.0.11,default,samsung,block,5,2026-11-22T12:00:00.000Z,2026-11-22T13:00:00.000Z,name,HTTPS\r\n\
             127.0.0.13,127.0.0.13,default,samsung,block,1,2026-11-23T08:00:00.000Z,2026-11-23T08:00:00.000Z,name,A\r\n\
             ceo-phone,127.0.0.12,staff,tiktok,log,7,2026-11-25T20:00:00.000Z,2026-11-25T21:00:00.000Z,name,A\r\n\
             living-room-tv,127.0.0.10,iot,xiaomi,log,21,2026-11-20T07:00:00.000Z,2026-11-21T10:05:00.000Z,\"cname,name\",\"A,AAAA,HTTPS\"\r\n"
        )
    );
    let text = stdout(&run(&[
        "report",
        "--db",
        a.to_str().unwrap(),
        "--db",
        b.to_str().unwrap(),
        "--since",
        "all",
    ]));
    assert!(text.contains("\nstores: "), "{text}");
}

/// The devices (column 1) and lists (column 4) of each CSV row.
fn devices_and_lists(csv: &str) -> Vec<(String, String)> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[3].to_string())
        })
        .collect()
}

#[test]
fn filters_select_lists_groups_clients_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path(), "evidence.db", &november());
    let rows = |extra: &[&str]| {
        let mut args = vec!["--format", "csv"];
        args.extend_from_slice(extra);
        devices_and_lists(&report(&db, &args))
    };
    let pairs = |want: &[(&str, &str)]| -> Vec<(String, String)> {
        want.iter()
            .map(|(d, l)| (d.to_string(), l.to_string()))
            .collect()
    };
    assert_eq!(
        rows(&["--list", "xiaomi"]),
        pairs(&[("living-room-tv", "xiaomi")])
    );
    assert_eq!(
        rows(&["--group", "staff"]),
        pairs(&[("ceo-phone", "tiktok")])
    );
    assert_eq!(
        rows(&["--client", "ceo-phone"]),
        pairs(&[("ceo-phone", "tiktok")])
    );
    assert_eq!(
        rows(&["--client", "127.0.0.11"]),
        pairs(&[("127.0.0.11", "samsung")])
    );
    assert_eq!(
        rows(&["--client", "127.0.0.8/30"]),
        pairs(&[("127.0.0.11", "samsung"), ("living-room-tv", "xiaomi")])
    );
    assert!(rows(&["--client", "nobody"]).is_empty());
    assert!(rows(&["--list", "xiaomi", "--group", "staff"]).is_empty());

    // days: 21 to 22 leave out the 20th's row (its count too) and the 25th
    let csv = stdout(&run(&[
        "report",
        "--db",
        db.to_str().unwrap(),
        "--since",
        "2026-11-21",
        "--until",
        "2026-11-22",
        "--format",
        "csv",
    ]));
    assert_eq!(
        csv,
        format!(
            "{CSV_HEADER}\r\n\
             127.0.0.11,127.0.0.11,default,samsung,block,5,2026-11-22T12:00:00.000Z,2026-11-22T13:00:00.000Z,name,HTTPS\r\n\
             living-room-tv,127.0.0.10,iot,xiaomi,log,5,2026-11-21T09:00:00.000Z,2026-11-21T10:05:00.000Z,\"cname,name\",\"A,AAAA\"\r\n"
        )
    );
    // times: a day's row counts when its matches reach into the window
    let between = |since: &str, until: &str| {
        devices_and_lists(&stdout(&run(&[
            "report",
            "--db",
            db.to_str().unwrap(),
            "--since",
            since,
            "--until",
            until,
            "--format",
            "csv",
        ])))
    };
    assert_eq!(
        between("2026-11-22T13:00:00Z", "2026-11-25T20:00:00Z"),
        pairs(&[("127.0.0.11", "samsung"), ("ceo-phone", "tiktok")])
    );
    assert_eq!(
        between("2026-11-22T13:00:00.001Z", "2026-11-25T19:59:59Z"),
        pairs(&[])
    );
    // an offset is a time zone: 21:30+01:00 is 20:30Z, inside the phone's hour
    assert_eq!(
        between("2026-11-25T21:30:00+01:00", "2026-11-26"),
        pairs(&[("ceo-phone", "tiktok")])
    );
    // the default window is the last 7 days: nothing from November
    let recent = stdout(&run(&[
        "report",
        "--db",
        db.to_str().unwrap(),
        "--format",
        "csv",
    ]));
    assert_eq!(recent, format!("{CSV_HEADER}\r\n"));
}

/// Bad options exit 2 with a clear message; a store that cannot be read exits 1 and says why.
#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path(), "evidence.db", &november());
    let db = db.to_str().unwrap();
    for (args, says) in [
        (vec!["--since", "7x"], "`7x` is not a time"),
        (vec!["--until", "2026-02-30"], "`2026-02-30` is not a time"),
        (
            vec!["--since", "2026-11-22", "--until", "2026-11-21"],
            "the window is empty",
        ),
        (vec!["--until", "all"], "`--until all` means nothing"),
        (vec!["--client", "10.0.0.0/33"], "not a CIDR"),
        (vec!["--format", "pdf"], "invalid value 'pdf'"),
    ] {
        let mut all = vec!["report", "--db", db];
        all.extend_from_slice(&args);
        let out = run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    let missing = dir.path().join("none.db");
    let out = run(&["report", "--db", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("none.db: no evidence store there"),
        "{stderr}"
    );
    assert!(!missing.exists(), "reading must not create a store");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        "not a database at all, not even close ".repeat(100),
    )
    .unwrap();
    let out = run(&["report", "--db", garbage.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("garbage.db: cannot read the evidence store"),
        "{stderr}"
    );

    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER);")
        .unwrap();
    let out = run(&["report", "--db", other.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not an evidence store"), "{stderr}");

    let out = run(&[
        "report",
        "--db",
        db,
        "--output",
        dir.path().join("no/such/dir/r.csv").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write"), "{stderr}");
}

/// Without --db the report reads the config's `[evidence] path` (beside the config), and it
/// reads while a writer holds the store open in the middle of a transaction (WAL).
#[test]
fn the_config_names_the_store_and_a_busy_writer_does_not_block_the_report() {
    let setup = Setup::new(&["127.0.0.1:9".parse().unwrap()], "");
    setup.append_config("[evidence]\npath = \"data/evidence.db\"");
    std::fs::create_dir(setup.dir.path().join("data")).unwrap();
    let writer = create_store(&setup.dir.path().join("data/evidence.db"), &november());
    writer.execute_batch("BEGIN IMMEDIATE;").unwrap();
    add_rows(
        &writer,
        &[Row::new(
            "127.0.0.14",
            "xiaomi",
            "uncommitted.miui.com",
            1,
            "2026-11-26T08:00:00.000Z",
            "2026-11-26T08:00:00.000Z",
        )],
    );
    let config = setup.config_path();
    let out = run(&[
        "--config",
        config.to_str().unwrap(),
        "report",
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-30",
        "--format",
        "csv",
    ]);
    let csv = stdout(&out);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(!csv.contains("127.0.0.14"), "an uncommitted row was read");
    writer.execute_batch("COMMIT;").unwrap();

    // a config that does not load is an error naming it
    setup.append_config("[evidence]\nretention_days = 0");
    let out = run(&["--config", config.to_str().unwrap(), "report"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hushd.toml"));
}

/// The running daemon: `/api/evidence` answers what `hushd report --format json` prints, with
/// the same filters as parameters; `hushd_evidence_devices{list}` counts the devices of the
/// last 24 hours, per list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_the_report_and_counts_devices() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "allow_clients = [\"127.0.0.0/8\"]");
    setup.write_list("xiaomi", &list("log", &["miui.com"]));
    setup.write_list("samsung", &list("block", &["samsungads.com"]));
    setup.write_list("tiktok", &list("log", &["tiktokv.com"]));
    let db = setup.dir.path().join("evidence.db");
    let mut rows = november();
    let (two_hours, one_hour, two_days) = (
        ago(Duration::from_secs(7200)),
        ago(Duration::from_secs(3600)),
        ago(Duration::from_secs(2 * 86_400)),
    );
    // within the day: two devices on xiaomi, one on samsung; the phone's tiktok row is older
    for (client, list, name) in [
        ("127.0.0.10", "xiaomi", "tracking.miui.com"),
        ("127.0.0.11", "xiaomi", "tracking.miui.com"),
        ("127.0.0.11", "samsung", "samsungads.com"),
    ] {
        rows.push(Row::new(client, list, name, 2, &two_hours, &one_hour));
    }
    rows.push(Row::new(
        "127.0.0.12",
        "tiktok",
        "log.tiktokv.com",
        1,
        &two_days,
        &two_days,
    ));
    drop(create_store(&db, &rows));
    setup.append_config("[evidence]\npath = \"evidence.db\"");
    let hushd = setup.start();

    let body = |path: &str| {
        let response = support::http_get(hushd.metrics, path);
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_string(), body.to_string())
    };
    let (status, api) = body("/api/evidence?since=2026-11-01&until=2026-11-30");
    assert!(status.contains("200"), "{status}: {api}");
    let mut api: Value = serde_json::from_str(&api).unwrap();
    let mut cli: Value = serde_json::from_str(&report(&db, &["--format", "json"])).unwrap();
    api["generated"].take();
    cli["generated"].take();
    assert_eq!(api, cli);

    let (_, filtered) = body(
        "/api/evidence?since=2026-11-01&until=2026-11-30&client=127.0.0.8/30&list=xiaomi&by_name=true",
    );
    let filtered: Value = serde_json::from_str(&filtered).unwrap();
    let names: Vec<&str> = filtered["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["data.mistat.xiaomi.com", "tracking.miui.com"]);

    // the default window: the last 7 days
    let (_, recent) = body("/api/evidence");
    let recent: Value = serde_json::from_str(&recent).unwrap();
    assert_eq!(recent["rows"].as_array().unwrap().len(), 4, "{recent}");

    for bad in [
        "/api/evidence?since=7x",
        "/api/evidence?client=10.0.0.0/40",
        "/api/evidence?since=2026-11-02&until=2026-11-01",
        "/api/evidence?colour=red",
    ] {
        let (status, why) = body(bad);
        assert!(status.contains("400"), "{bad}: {status} {why}");
        assert!(!why.is_empty(), "{bad}");
    }

    // counted at start, then every minute
    let counted = support::wait_until(Duration::from_secs(5), || {
        hushd.metric("hushd_evidence_devices{list=\"xiaomi\"}") == Some(2.0)
    });
    assert!(counted, "{}", hushd.metrics_text());
    assert_eq!(
        hushd.metric("hushd_evidence_devices{list=\"samsung\"}"),
        Some(1.0)
    );
    assert_eq!(
        hushd.metric("hushd_evidence_devices{list=\"tiktok\"}"),
        Some(0.0)
    );
}

/// With the store turned off, the API says so and the gauge family is declared, with no series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_the_api_says_so() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("xiaomi", &list("log", &["miui.com"]));
    setup.append_config("[evidence]\nenabled = false");
    let hushd = setup.start();
    let response = support::http_get(hushd.metrics, "/api/evidence");
    assert!(
        response.lines().next().unwrap().contains(" 404 "),
        "{response}"
    );
    assert!(response.contains("enabled = false"), "{response}");
    let text = hushd.metrics_text();
    assert!(
        text.contains("# TYPE hushd_evidence_devices gauge"),
        "{text}"
    );
    assert!(!text.contains("hushd_evidence_devices{"), "{text}");
}

/// End to end: queries from several loopback devices through the running daemon, written to
/// its store within `flush_secs`, then `hushd report` (through the config) counts them, and
/// `/api/evidence` and the devices gauge agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_from_several_devices_reach_the_report() {
    use hickory_proto::rr::RecordType::{A, AAAA};
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "allow_clients = [\"127.0.0.0/8\"]");
    setup.append_config(
        "[clients]\n\"tv\" = \"127.0.0.70\"\n\"phone\" = \"127.0.0.71\"\n\n\
         [[groups]]\nname = \"iot\"\nclients = [\"tv\"]\n\n[evidence]\nflush_secs = 1\n",
    );
    setup.write_list("xiaomi", &list("log", &["miui.example"]));
    setup.write_list("samsung", &list("block", &["samsungads.example"]));
    let hushd = setup.start();
    let started = ago(Duration::ZERO);
    for (device, name, qtype, times) in [
        ("127.0.0.70", "tracking.miui.example.", A, 3),
        ("127.0.0.70", "tracking.miui.example.", AAAA, 1),
        ("127.0.0.70", "samsungads.example.", A, 2),
        ("127.0.0.71", "tracking.miui.example.", A, 1),
        ("127.0.0.72", "data.miui.example.", A, 2),
        // no list holds it: no evidence
        ("127.0.0.72", "www.example.", A, 1),
    ] {
        let from = format!("{device}:0").parse().unwrap();
        let mut client = support::udp_client(hushd.dns, Some(from)).await;
        for _ in 0..times {
            support::query(&mut client, name, qtype).await;
        }
    }
    let ended = ago(Duration::ZERO);

    let config = setup.config_path();
    let csv = || {
        stdout(&run(&[
            "--config",
            config.to_str().unwrap(),
            "report",
            "--since",
            "1h",
            "--format",
            "csv",
            "--by-name",
        ]))
    };
    let lookups = |csv: &str| -> u64 {
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').nth(6).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    // the writer flushes every second
    assert!(
        support::wait_until(Duration::from_secs(10), || lookups(&csv()) == 9),
        "{}",
        csv()
    );
    let text = csv();
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        // times aside: each within the test's queries
        let f: Vec<&str> = line.split(',').collect();
        let (first, last) = (f[7], f[8]);
        assert!(
            started.as_str() <= first && first <= last && last <= ended.as_str(),
            "{line}: not between {started} and {ended}"
        );
        rows.push(
            f[..7]
                .iter()
                .chain(&f[9..])
                .copied()
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    assert_eq!(
        rows,
        [
            "127.0.0.72,127.0.0.72,default,xiaomi,log,data.miui.example,2,name,A",
            "phone,127.0.0.71,default,xiaomi,log,tracking.miui.example,1,name,A",
            "tv,127.0.0.70,iot,samsung,block,samsungads.example,2,name,A",
            "tv,127.0.0.70,iot,xiaomi,log,tracking.miui.example,4,name,\"A,AAAA\"",
        ],
        "{text}"
    );

    let response = support::http_get(hushd.metrics, "/api/evidence?since=1h&list=xiaomi");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    let api: Value = serde_json::from_str(body).unwrap();
    let devices: Vec<(&str, u64)> = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["device"].as_str().unwrap(),
                r["lookups"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(devices, [("127.0.0.72", 2), ("phone", 1), ("tv", 4)]);
    // counted at start (before any match): 0 until the next minute's count
    assert_eq!(
        hushd.metric("hushd_evidence_devices{list=\"xiaomi\"}"),
        Some(0.0)
    );
}
