//! Reading a list's `ips_file`: one address or CIDR a line, `#` comments, blank lines.
//!
//! Unlike a `domains_file`, which is often someone else's list in someone else's format (and
//! whose bad lines are skipped and counted), an `ips_file` is hushd's own simple format, and a
//! line it cannot read would silently leave an address unmatched: every bad line is an error at
//! its place, and the policy is not built.

use std::{io::BufRead, path::Path};

use ipnetwork::IpNetwork;

use crate::diagnostic::{LoadError, LoadErrors};

/// Bad lines reported one by one; past this, a file is most likely not an address list at all,
/// and one more line says how many more there were.
const MAX_LINE_ERRORS: usize = 20;

/// Streams `path`, giving each network to `add` with its line number; returns how many it gave.
pub fn read_ips_file(
    path: &Path,
    mut add: impl FnMut(usize, IpNetwork),
) -> Result<usize, LoadErrors> {
    let read_error = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let whole = |message: String| LoadError::File {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let head = reader.fill_buf().map_err(read_error)?;
    if head.contains(&0) {
        return Err(whole("binary content (NUL bytes), not a list of addresses".into()).into());
    }
    super::formats::reject_page(&String::from_utf8_lossy(head)).map_err(whole)?;
    let mut errors = Vec::new();
    let mut bad_lines = 0usize;
    let mut given = 0usize;
    let mut line = Vec::with_capacity(128);
    for number in 1.. {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(source) => return Err(read_error(source).into()),
        }
        let parsed = match std::str::from_utf8(&line) {
            Ok(text) => parse_line(text),
            Err(_) => Err((1, "not UTF-8 text".to_string())),
        };
        match parsed {
            Ok(Some(net)) => {
                add(number, net);
                given += 1;
            }
            Ok(None) => {}
            Err((column, message)) => {
                bad_lines += 1;
                if errors.len() < MAX_LINE_ERRORS {
                    errors.push(LoadError::At {
                        path: path.to_path_buf(),
                        line: number,
                        column,
                        message,
                    });
                }
            }
        }
    }
    if bad_lines > errors.len() {
        errors.push(whole(format!(
            "{} more bad lines not shown ({bad_lines} in all)",
            bad_lines - errors.len()
        )));
    }
    if errors.is_empty() {
        Ok(given)
    } else {
        Err(LoadErrors(errors))
    }
}

/// One line: `None` if blank or a comment, else the network, or the 1-based column of the entry
/// and why it is not one.
fn parse_line(text: &str) -> Result<Option<IpNetwork>, (usize, String)> {
    let content = text.split('#').next().unwrap_or_default();
    let entry = content.trim();
    if entry.is_empty() {
        return Ok(None);
    }
    let column = content.chars().take_while(|c| c.is_whitespace()).count() + 1;
    if entry.contains(char::is_whitespace) {
        return Err((
            column,
            format!("{entry:?}: one address or CIDR a line (a `#` starts a comment)"),
        ));
    }
    super::parse_ip_rule(entry)
        .map(Some)
        .map_err(|why| (column, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ips.txt");
        std::fs::write(&path, text).unwrap();
        let mut got = Vec::new();
        read_ips_file(&path, |line, net| got.push(format!("{line}:{net}")))
            .map(|n| {
                assert_eq!(n, got.len());
                got
            })
            .map_err(|e| {
                e.to_string()
                    .replace(&dir.path().display().to_string(), "DIR")
            })
    }

    #[test]
    fn addresses_cidrs_comments_and_blank_lines() {
        let got = read(
            b"# DoH resolvers\n203.0.113.7\n\n  198.51.100.0/24   # a comment\r\n2001:db8:bad::/48\n::ffff:192.0.2.1\n",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "2:203.0.113.7/32",
                "4:198.51.100.0/24",
                "5:2001:db8:bad::/48",
                "6:::ffff:192.0.2.1/128"
            ]
        );
        assert_eq!(read(b"").unwrap(), Vec::<String>::new());
        assert_eq!(read(b"203.0.113.9").unwrap(), ["1:203.0.113.9/32"]);
    }

    #[test]
    fn each_bad_line_is_an_error_at_its_place() {
        let err = read(b"203.0.113.0/24\n  203.0.113.7/24\nexample.com\n1.2.3.4 5.6.7.8\n\xff\n")
            .unwrap_err();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 4, "{err}");
        assert!(
            lines[0].starts_with("DIR/ips.txt:2:3: \"203.0.113.7/24\" has host bits set"),
            "{err}"
        );
        assert!(
            lines[1].starts_with("DIR/ips.txt:3:1: \"example.com\" is not an address or CIDR"),
            "{err}"
        );
        assert!(lines[2].starts_with("DIR/ips.txt:4:1: \"1.2.3.4 5.6.7.8\": one address"));
        assert!(lines[3].starts_with("DIR/ips.txt:5:1: not UTF-8"), "{err}");
    }

    #[test]
    fn a_file_that_is_no_address_list_is_an_error_as_a_whole() {
        let err = read(b"<!DOCTYPE html>\n<html>captive portal</html>\n").unwrap_err();
        assert!(err.contains("an HTML or XML page"), "{err}");
        let err = read(b"203.0.113.1\n\0\0").unwrap_err();
        assert!(err.contains("binary content"), "{err}");
        // a long file of names: the first lines one by one, then a count
        let err = read("example.com\n".repeat(100).as_bytes()).unwrap_err();
        assert_eq!(err.lines().count(), MAX_LINE_ERRORS + 1, "{err}");
        assert!(
            err.ends_with("80 more bad lines not shown (100 in all)"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = read_ips_file(&dir.path().join("none.txt"), |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("none.txt: cannot read"), "{err}");
    }
}
