//! `Config::parse` on arbitrary UTF-8: never panics, every error names the file, and an accepted
//! config holds the promises the rest of the daemon relies on.

use std::{path::Path, time::Duration};

use hushd::{config::Config, diagnostic::LoadError};

const PATH: &str = "/fuzz/hushd.toml";

/// One input: panics if hushd breaks a promise the module comment lists.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new(PATH), text) {
        Ok(config) => {
            assert_eq!(config.path, Path::new(PATH));
            assert!(
                !config.upstream.servers.is_empty(),
                "accepted with no upstream server"
            );
            assert!(config.upstream.attempt_timeout <= config.upstream.timeout);
            assert!(config.upstream.timeout >= Duration::from_millis(50));
            assert!(config.upstream.timeout <= Duration::from_millis(60_000));
            assert!(config.server.tcp_idle_timeout >= Duration::from_secs(1));
            assert!(config.cache.min_ttl <= config.cache.max_ttl);
            for net in &config.server.allow_clients {
                assert_eq!(net.network(), net.ip(), "{net} has host bits set");
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an Err with no error in it");
            for e in &errors.0 {
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
                }
            }
        }
    }
}
