//! `read_domains_file` (a list's `domains_file`: plain names or hosts format) on arbitrary bytes,
//! written to a temporary file, against a reference reading of the same text.
//!
//! Checked: never panics; the names passed on are exactly the reference's (each valid name field,
//! lower-cased, in order) and each is in the matcher's normalised form; every error names the
//! file, and a located error's line and column point at the field it quotes.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use hushd::{
    diagnostic::LoadError,
    lists::{HOSTS_BOILERPLATE, check_domain, normalize_domain, read_domains_file},
};

/// `read_domains_file` stops after this many bad names.
const MAX_ERRORS: usize = 100;

/// One input: panics if hushd breaks a promise the module comment lists.
pub fn run(data: &[u8]) {
    let path = scratch_file();
    std::fs::write(path, data).expect("write the scratch file");
    let mut names: Vec<String> = Vec::new();
    let result = read_domains_file(path, |n| {
        names.push(String::from_utf8(n.to_vec()).expect("a name that is not UTF-8"))
    });
    let errors = match &result {
        Ok(()) => &[][..],
        Err(e) => {
            assert!(!e.0.is_empty(), "an Err with no error in it");
            &e.0[..]
        }
    };

    let (want_names, want_errors) = reference(data);
    assert_eq!(names, want_names, "names read");
    assert_eq!(errors.len(), want_errors, "errors: {errors:#?}");

    for n in &names {
        assert!(
            !n.is_empty() && n.len() <= 253 && !n.ends_with('.'),
            "{n:?}"
        );
        assert_eq!(normalize_domain(n).as_deref(), Ok(n.as_str()), "{n:?}");
    }
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    let shown_path = path.display().to_string();
    for e in errors {
        let shown = e.to_string();
        assert!(shown.starts_with(&shown_path), "{shown:?}");
        if let LoadError::At {
            line,
            column,
            message,
            ..
        } = e
        {
            assert!(*line >= 1 && *line <= lines.len(), "{shown:?}");
            assert!(*column >= 1, "{shown:?}");
            // The message starts with the quoted field, which starts at line:column.
            let at: String = lines[line - 1].chars().skip(column - 1).collect();
            let field = at
                .split(|c: char| c.is_ascii_whitespace() || c == '#')
                .next()
                .unwrap_or("");
            assert!(
                message.starts_with(&format!("{field:?}: ")),
                "{shown:?} does not quote the field at its column ({field:?})"
            );
        }
    }
}

/// The names and the number of errors `read_domains_file` should give for `data`.
fn reference(data: &[u8]) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut errors = 0;
    for line in data.split_inclusive(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            return (names, errors + 1); // a read error, and reading stops
        };
        let content = line.split('#').next().unwrap_or("");
        let fields: Vec<&str> = content.split_ascii_whitespace().collect();
        let hosts = fields.first().is_some_and(|f| f.parse::<IpAddr>().is_ok());
        let candidates = if hosts {
            &fields[1..]
        } else if fields.len() > 1 {
            errors += 1;
            continue;
        } else {
            &fields[..]
        };
        for field in candidates {
            if hosts && HOSTS_BOILERPLATE.contains(field) {
                continue;
            }
            match check_domain(field) {
                Ok(valid) => names.push(valid.to_ascii_lowercase()),
                Err(_) => {
                    errors += 1;
                    if errors >= MAX_ERRORS {
                        return (names, errors);
                    }
                }
            }
        }
    }
    (names, errors)
}

/// One file per fuzzing process, rewritten for each input.
fn scratch_file() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("hushd-fuzz-{}.txt", std::process::id())))
}
