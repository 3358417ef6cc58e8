//! The `request` target; what it drives and checks is in `fuzz/checks/request.rs`, which
//! `tests/fuzz_corpus.rs` also runs over the committed corpus on every `cargo test`.

#![no_main]

#[path = "../checks/request.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
