//! List content formats. Every source of names (a `domains_file` beside the list, a downloaded
//! subscription) goes through here, so a file is judged the same whichever way it arrived.

/// Whether `bytes` can be a list at all, before any line is parsed: a captive portal's login
/// page, a proxy's error page or a binary must never replace a list (it would silently empty
/// it, or fill it with garbage). `Err` says what it looks like instead.
pub fn reject_unusable(bytes: &[u8]) -> Result<(), String> {
    if bytes.contains(&0) {
        return Err("binary content (NUL bytes), not a text list".into());
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err("not UTF-8 text".into());
    };
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let head = first
        .get(..first.len().min(64))
        .unwrap_or("")
        .to_ascii_lowercase();
    if ["<!doctype", "<html", "<head", "<body", "<?xml"]
        .iter()
        .any(|tag| head.starts_with(tag))
    {
        return Err("an HTML or XML page (a captive portal or an error page?), not a list".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_binaries_are_not_lists() {
        assert!(reject_unusable(b"example.com\n").is_ok());
        assert!(reject_unusable(b"").is_ok());
        assert!(reject_unusable(b"\n  <!DOCTYPE html><html>").is_err());
        assert!(reject_unusable(b"<html><body>Log in to the Wi-Fi</body></html>").is_err());
        assert!(reject_unusable(b"<?xml version=\"1.0\"?><Error/>").is_err());
        assert!(reject_unusable(b"\x1f\x8b\x08\x00\x00").is_err()); // gzip
        assert!(reject_unusable(b"a.com\n\xff\xfe").is_err());
    }
}
