//! `parse_list` on arbitrary UTF-8: never panics, every accepted name is in the normalised form
//! the matcher expects, a `domains_file` can only name a `.txt` file beside the list, and every
//! error names the file (and, where it has one, a line and column inside the text).

use std::path::Path;

use hickory_proto::rr::Name;
use hushd::{
    diagnostic::LoadError,
    lists::{normalize_domain, parse_list},
};

const PATH: &str = "/fuzz/list.toml";

/// One input: panics if hushd breaks a promise the module comment lists.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_list(Path::new(PATH), text) {
        Ok(list) => {
            assert_eq!(list.name, "list", "the list is named by the file stem");
            if let Some(f) = &list.domains_file {
                // A list may only name a plain .txt file beside itself, never a path elsewhere.
                assert_eq!(f.parent(), Some(Path::new("/fuzz")), "domains_file {f:?}");
                assert!(
                    f.extension().is_some_and(|e| e == "txt"),
                    "domains_file {f:?}"
                );
                let file = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                assert!(
                    !file.starts_with('.') && !file.contains(['/', '\\']),
                    "domains_file {f:?}"
                );
            }
            for d in &list.domains {
                assert!(!d.is_empty(), "empty domain accepted from {text:?}");
                assert!(d.len() <= 253, "{}-byte domain accepted", d.len());
                assert!(
                    d.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()),
                    "domain {d:?} is not lower-case ASCII"
                );
                assert!(!d.ends_with('.'), "domain {d:?} keeps its final dot");
                assert!(
                    d.split('.').all(|l| !l.is_empty() && l.len() <= 63),
                    "domain {d:?} has an empty or over-long label"
                );
                // Normalising is idempotent, and what the list accepts is a DNS name.
                assert_eq!(normalize_domain(d).as_deref(), Ok(d.as_str()));
                assert!(
                    Name::from_labels(d.split('.').map(str::as_bytes)).is_ok(),
                    "{d:?} is not a DNS name"
                );
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an Err with no error in it");
            for e in &errors.0 {
                check_located(e, text);
            }
            // The joined report is what `hushd check` prints.
            assert!(errors.to_string().starts_with(PATH));
        }
    }
}

fn check_located(e: &LoadError, text: &str) {
    let shown = e.to_string();
    assert!(
        shown.starts_with(PATH),
        "error does not name the file: {shown:?}"
    );
    if let LoadError::At { line, column, .. } = e {
        let lines = text.split('\n').count();
        assert!(
            (1..=lines).contains(line),
            "line {line} outside the text's {lines} lines: {shown:?}"
        );
        assert!(*column >= 1, "column 0: {shown:?}");
        assert!(
            shown.starts_with(&format!("{PATH}:{line}:{column}: ")),
            "{shown:?}"
        );
    }
}
