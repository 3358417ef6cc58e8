//! config/README.md is the reference of every config and list key, and hushd.toml(5) is
//! rendered from it: so every key the parser accepts must be in its section's table there, and
//! every key a table documents must be one the parser accepts. The parser's keys are read from
//! the running binary itself: `hushd check` on a file with an unknown key answers with the
//! section's whole list of keys (serde's `deny_unknown_fields`), so a key added to src/config.rs
//! or src/lists without a line in the README fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

const UNKNOWN: &str = "hushd_undocumented_key";

/// The keys `hushd check` lists as expected when `text` holds an unknown one.
fn parser_keys(text: &str, list: Option<&str>) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("blocklists")).unwrap();
    if let Some(list) = list {
        std::fs::write(dir.path().join("blocklists/probe.toml"), list).unwrap();
    }
    let config = dir.path().join("hushd.toml");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(support::HUSHD)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "hushd check accepted {UNKNOWN}");
    let expected = stderr
        .lines()
        .find_map(|l| l.split_once(&format!("unknown field `{UNKNOWN}`, expected ")))
        .map(|(_, keys)| keys)
        .unwrap_or_else(|| panic!("no list of expected keys in:\n{stderr}"));
    // serde writes "`a`", "`a` or `b`" or "one of `a`, `b`, `c`": the keys are the quoted words.
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

const UPSTREAM: &str = "[upstream]\nservers = [\"127.0.0.1:53\"]\n";

/// Section name ("server", "groups", "list file") -> the keys the parser accepts there.
fn keys_of_parser() -> BTreeMap<String, BTreeSet<String>> {
    let mut sections = BTreeMap::new();
    let top = parser_keys(&format!("{UNKNOWN} = 1\n{UPSTREAM}"), None);
    for section in &top {
        let text = match section.as_str() {
            // A table of names, not keys: documented as a whole.
            "clients" => continue,
            "groups" => format!("{UPSTREAM}[[groups]]\nname = \"g\"\n{UNKNOWN} = 1\n"),
            "upstream" => format!("[upstream]\nservers = [\"127.0.0.1:53\"]\n{UNKNOWN} = 1\n"),
            s => format!("{UPSTREAM}[{s}]\n{UNKNOWN} = 1\n"),
        };
        sections.insert(section.clone(), parser_keys(&text, None));
    }
    sections.insert(
        "list file".to_owned(),
        parser_keys(
            UPSTREAM,
            Some(&format!("action = \"block\"\n{UNKNOWN} = 1\n")),
        ),
    );
    sections.insert("top level".to_owned(), top);
    sections
}

/// Section name -> the keys the README's key tables (first column headed `key`) document.
/// `## \`[server]\`` is the section `server`; `## List files` is `list file`; rows of
/// `## \`[clients]\` and \`[[groups]]\`` are `[clients]` (that section as a whole) and
/// `[[groups]] name`, `clients`... (the keys of `groups`).
fn keys_of_readme(markdown: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut sections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    let mut heading: Option<String> = None;
    let mut cell: Option<String> = None;
    let (mut in_head, mut first_cell, mut key_table) = (false, false, false);
    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Heading {
                level: HeadingLevel::H2,
                ..
            }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(HeadingLevel::H2)) => {
                let h = heading.take().unwrap_or_default();
                section = if h == "List files" {
                    "list file".to_owned()
                } else if h.starts_with("[clients]") {
                    "groups".to_owned()
                } else {
                    h.split(']')
                        .next()
                        .unwrap()
                        .trim_start_matches('[')
                        .to_owned()
                };
            }
            Event::Code(c) | Event::Text(c) => {
                if let Some(h) = &mut heading {
                    h.push_str(&c);
                }
                if let Some(cell) = &mut cell {
                    cell.push_str(&c);
                }
            }
            Event::Start(Tag::TableHead) => (in_head, first_cell) = (true, true),
            Event::Start(Tag::TableRow) => first_cell = true,
            Event::Start(Tag::TableCell) if first_cell => cell = Some(String::new()),
            Event::End(TagEnd::TableCell) => {
                if let Some(text) = cell.take() {
                    if in_head {
                        key_table = text == "key";
                    } else if key_table {
                        let (s, key) = match text.as_str() {
                            "[clients]" => ("top level", "clients"),
                            t => (section.as_str(), t.trim_start_matches("[[groups]] ")),
                        };
                        sections
                            .entry(s.to_owned())
                            .or_default()
                            .insert(key.to_owned());
                    }
                }
                first_cell = false;
            }
            Event::End(TagEnd::TableHead) => in_head = false,
            _ => {}
        }
    }
    // A section with a heading of its own is documented at the top level too.
    let headed: Vec<String> = sections
        .keys()
        .filter(|s| !matches!(s.as_str(), "top level" | "list file"))
        .cloned()
        .collect();
    sections
        .entry("top level".to_owned())
        .or_default()
        .extend(headed);
    sections
}

#[test]
fn every_key_the_parser_accepts_is_in_config_readme_and_no_other() {
    let readme = std::fs::read_to_string(support::project_root().join("config/README.md")).unwrap();
    let documented = keys_of_readme(&readme);
    let parsed = keys_of_parser();
    assert!(parsed["server"].contains("listen"), "{parsed:?}");
    let mut problems = Vec::new();
    for (section, keys) in &parsed {
        let doc = documented.get(section).cloned().unwrap_or_default();
        for key in keys.difference(&doc) {
            problems.push(format!(
                "{section}: `{key}` is accepted by the parser but missing from config/README.md"
            ));
        }
        for key in doc.difference(keys) {
            problems.push(format!(
                "{section}: `{key}` is in config/README.md but the parser does not accept it"
            ));
        }
    }
    for section in documented.keys().filter(|s| !parsed.contains_key(*s)) {
        problems.push(format!(
            "config/README.md documents a section `{section}` the parser does not know"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
