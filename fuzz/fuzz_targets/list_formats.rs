//! The `list_formats` target; what it drives and checks is in `fuzz/checks/list_formats.rs`, which
//! `tests/fuzz_corpus.rs` also runs over the committed corpus on every `cargo test`.

#![no_main]

#[path = "../checks/list_formats.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
