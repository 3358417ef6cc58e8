//! A list's subscription keys (`url`, `refresh`, `sha256`): a list whose names are downloaded
//! and kept fresh in the background, on top of any it holds itself.

use std::time::Duration;

use reqwest::Url;

/// `refresh` without the key: once a day, what list publishers ask for.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);
/// Shorter refreshes hammer the publisher for nothing (and are mistakes: "1" meant "1h").
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub url: Url,
    pub refresh: Duration,
    /// Pinned content: a download with another SHA-256 is rejected. Lower-case hex.
    pub sha256: Option<String>,
    /// The list's `format`: a download is judged as the copy will be read.
    pub format: super::formats::Format,
}

pub fn parse_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("url {raw:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url {raw:?}: only http:// and https:// are fetched"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("url {raw:?}: no host"));
    }
    Ok(url)
}

pub fn parse_refresh(raw: &str) -> Result<Duration, String> {
    let refresh = humantime::parse_duration(raw).map_err(|e| {
        format!("refresh {raw:?}: {e} (write a duration such as \"24h\" or \"30m\")")
    })?;
    if refresh < MIN_REFRESH {
        return Err(format!("refresh {raw:?} is shorter than 1s"));
    }
    Ok(refresh)
}

pub fn parse_sha256(raw: &str) -> Result<String, String> {
    if raw.len() != 64 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "sha256 {raw:?} must be 64 hexadecimal digits (the output of sha256sum)"
        ));
    }
    Ok(raw.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(parse_url("https://example.org/hosts.txt").is_ok());
        assert!(parse_url("http://127.0.0.1:8080/x").is_ok());
        for bad in [
            "file:///etc/hosts",
            "ftp://x.org/a",
            "example.org/x",
            "http://",
            "",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refresh_takes_humantime_units() {
        assert_eq!(parse_refresh("24h").unwrap(), DEFAULT_REFRESH);
        assert_eq!(parse_refresh("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_refresh("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_refresh("500ms").is_err());
        assert!(parse_refresh("24").is_err());
        assert!(parse_refresh("daily").is_err());
    }

    #[test]
    fn sha256_is_64_hex_digits() {
        let ok = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(parse_sha256(ok).unwrap(), ok.to_ascii_lowercase());
        assert!(parse_sha256(&ok[1..]).is_err());
        assert!(parse_sha256(&ok.replace('E', "g")).is_err());
    }
}
