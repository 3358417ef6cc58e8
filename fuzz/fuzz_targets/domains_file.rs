//! The `domains_file` target; what it drives and checks is in `fuzz/checks/domains_file.rs`, which
//! `tests/fuzz_corpus.rs` also runs over the committed corpus on every `cargo test`.

#![no_main]

#[path = "../checks/domains_file.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
