//! The fuzz targets' committed corpora, replayed on every `cargo test`: each file under
//! `fuzz/corpus/TARGET/` goes through the very checks the fuzz target runs
//! (`fuzz/checks/TARGET.rs`), so an input that once crashed hushd stays fixed without a fuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // the checks are the fuzz targets' own

#[path = "../fuzz/checks/config_parser.rs"]
mod config_parser;
#[path = "../fuzz/checks/domains_file.rs"]
mod domains_file;
#[path = "../fuzz/checks/list_formats.rs"]
mod list_formats;
#[path = "../fuzz/checks/list_parser.rs"]
mod list_parser;
#[path = "../fuzz/checks/matcher.rs"]
mod matcher;
#[path = "../fuzz/checks/request.rs"]
mod request;

use std::{panic, path::PathBuf};

/// Runs `check` on every file of `fuzz/corpus/TARGET`; fails naming each file that panicked.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no corpus files", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|f| {
            let data = std::fs::read(f).unwrap();
            panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus files fail (the panic of each is printed above):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn config_parser_corpus() {
    replay("config_parser", config_parser::run);
}

#[test]
fn list_parser_corpus() {
    replay("list_parser", list_parser::run);
}

#[test]
fn domains_file_corpus() {
    replay("domains_file", domains_file::run);
}

#[test]
fn list_formats_corpus() {
    replay("list_formats", list_formats::run);
}

#[test]
fn matcher_corpus() {
    replay("matcher", matcher::run);
}

#[test]
fn request_corpus() {
    replay("request", request::run);
}
