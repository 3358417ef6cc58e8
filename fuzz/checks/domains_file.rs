//! `read_domains_file` (a list's `domains_file`, or a stored download) on arbitrary bytes,
//! written to a temporary file, against the in-memory parser `formats::parse_text`.
//!
//! Checked: never panics; a file is rejected whole only for a reason (a page, NUL bytes, or a
//! majority of broken lines), else bad lines are skipped and counted; the entries streamed
//! from the file are exactly `parse_text`'s for the format reported, with their line numbers;
//! every name is in the matcher's normalised form.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use hushd::lists::{
    FileEntry,
    formats::{self, Format, Item},
    normalize_domain, read_domains_file,
};

/// One input: panics if hushd breaks a promise the module comment lists.
pub fn run(data: &[u8]) {
    let path = scratch_file();
    std::fs::write(path, data).expect("write the scratch file");
    let mut got: Vec<String> = Vec::new();
    let result = read_domains_file(path, Format::Auto, None, |line, e| {
        got.push(match e {
            FileEntry::Name(n, kind) => {
                let n = String::from_utf8(n.to_vec()).expect("a name that is not UTF-8");
                assert!(
                    !n.is_empty() && n.len() <= 253 && !n.ends_with('.'),
                    "{n:?}"
                );
                assert_eq!(normalize_domain(&n).as_deref(), Ok(n.as_str()), "{n:?}");
                format!("{line}:{n}:{kind:?}")
            }
            FileEntry::Pattern(p) => format!("{line}:/{p}/"),
        })
    });
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            assert!(!e.0.is_empty(), "an Err with no error in it");
            let shown = e.to_string();
            assert!(shown.starts_with(&path.display().to_string()), "{shown:?}");
            return;
        }
    };
    assert_ne!(report.format, Format::Auto, "auto is always decided");
    let tally = &report.tally;
    assert!(
        tally.invalid() * 2 <= tally.meaningful || tally.meaningful < 4,
        "a mostly broken file was accepted: {tally:?}"
    );
    assert!(tally.first_skipped.len() <= formats::Tally::SHOWN);
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the streamed reader skips broken lines; parse_text takes only text
    };
    let mut want: Vec<String> = Vec::new();
    let (_, want_tally) = formats::parse_text(text, report.format, |line, item| match item {
        Item::Name(n, w) => want.push(format!("{line}:{n}:{:?}", w.resolve(None))),
        Item::Pattern(p) => want.push(format!("{line}:/{p}/")),
        Item::Skip(_) => {}
    });
    // `lines()` and a line reader differ only on a final `\r` without `\n`
    if !text.ends_with('\r') {
        assert_eq!(got, want, "entries streamed vs parsed");
        assert_eq!(tally, &want_tally, "tally streamed vs parsed");
    }
}

/// One file per fuzzing process, rewritten for each input.
fn scratch_file() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("hushd-fuzz-{}.txt", std::process::id())))
}
