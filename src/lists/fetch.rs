//! One download of a subscription, and the checks it must pass before it may replace the last
//! good copy. The HTTP client is reqwest over rustls: the system's trust roots plus `[lists]
//! ca_file`, proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, connect and total timeouts.

use reqwest::{StatusCode, Url, header};
use sha2::{Digest, Sha256};

use crate::{config::ListsConfig, lists, lists::formats::Format};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP client could not be built (an unreadable `ca_file`): nothing is fetched.
    #[error("{0}")]
    Setup(String),
    /// No usable answer: refused, unreachable, timed out, cut short.
    #[error("{0}")]
    Transfer(String),
    #[error("the server answered {0}")]
    Status(StatusCode),
    /// An answer that must not become the list.
    #[error("{0}")]
    Rejected(String),
}

impl FetchError {
    /// The `result` label of `hushd_list_fetches_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Self::Rejected(_) => "rejected",
            _ => "error",
        }
    }
}

/// What a previous download left to make the next one conditional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug)]
pub enum Download {
    /// 304: the stored copy is current.
    NotModified,
    Body {
        bytes: Vec<u8>,
        validators: Validators,
    },
}

pub struct Fetcher {
    settings: ListsConfig,
    /// Built at the first download, not before: the trust roots and TLS state cost ~1.3 MiB
    /// of RSS that a daemon whose copies are fresh does not need until they fall due.
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
    max_bytes: u64,
    timeout: std::time::Duration,
}

impl Fetcher {
    /// A fetcher for `settings`. A client that cannot be built (bad `ca_file`) makes every
    /// fetch fail with the reason, counted and logged; stored copies stay in force.
    pub fn new(settings: &ListsConfig) -> Self {
        Self {
            settings: settings.clone(),
            client: std::sync::OnceLock::new(),
            max_bytes: settings.max_bytes,
            timeout: settings.timeout,
        }
    }

    pub async fn get(&self, url: &Url, previous: &Validators) -> Result<Download, FetchError> {
        let client = self
            .client
            .get_or_init(|| build_client(&self.settings))
            .as_ref()
            .map_err(|e| FetchError::Setup(e.clone()))?;
        let mut request = client.get(url.clone());
        if let Some(etag) = &previous.etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = &previous.last_modified {
            request = request.header(header::IF_MODIFIED_SINCE, date);
        }
        let mut response = request.send().await.map_err(|e| self.transfer(e))?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Download::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status(status));
        }
        let too_large = || {
            FetchError::Rejected(format!(
                "larger than [lists] max_bytes ({} bytes)",
                self.max_bytes
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(too_large());
        }
        let header_text = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let validators = Validators {
            etag: header_text(header::ETAG),
            last_modified: header_text(header::LAST_MODIFIED),
        };
        let capacity = response.content_length().unwrap_or(0).min(self.max_bytes);
        let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        // Streamed with the cap checked per chunk: a server that lies about (or omits) its
        // length cannot make hushd hold more than max_bytes.
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transfer(e))? {
            if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Download::Body { bytes, validators })
    }

    /// Without the URL, which the log line gives already, redacted (it may hold a token).
    fn transfer(&self, e: reqwest::Error) -> FetchError {
        let e = e.without_url();
        if e.is_timeout() {
            return FetchError::Transfer(format!(
                "no complete answer within [lists] timeout ({})",
                humantime::format_duration(self.timeout)
            ));
        }
        FetchError::Transfer(error_chain(&e))
    }
}

fn build_client(settings: &ListsConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("hushd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::limited(5));
    if let Some(path) = &settings.ca_file {
        for cert in load_ca_file(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", error_chain(&e)))
}

/// The certificates of `[lists] ca_file`; `Err` says why it cannot be used.
pub fn load_ca_file(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read [lists] ca_file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("[lists] ca_file {}: {}", path.display(), error_chain(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "[lists] ca_file {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// reqwest's own message is only the outer layer ("error sending request"); the causes say why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Whether `bytes` may replace the stored copy, read as `format`; `Ok` holds its SHA-256
/// (lower-case hex). A page, a binary, a file of mostly broken lines (`formats`) or one with no
/// entry at all must not become an empty or garbled list.
pub fn check_download(
    bytes: &[u8],
    pinned: Option<&str>,
    format: Format,
) -> Result<String, String> {
    let tally = lists::formats::reject_unusable_as(bytes, format)?;
    if tally.entries + tally.patterns == 0 {
        return Err("no names in it".into());
    }
    let sha256 = sha256_hex(bytes);
    if let Some(pin) = pinned
        && pin != sha256
    {
        return Err(format!("content has SHA-256 {sha256}, the list pins {pin}"));
    }
    Ok(sha256)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_names_in_any_format_pass_and_other_content_is_rejected() {
        let auto = Format::Auto;
        let hosts = b"# hosts\n0.0.0.0 a.com b.com\n127.0.0.1 localhost\nc.org\n";
        assert!(check_download(hosts, None, auto).is_ok());
        assert!(check_download(b"||ads.com^\n||b.com^\n", None, auto).is_ok());
        assert!(check_download(b"||ads.com^\n", None, Format::Adblock).is_ok());
        // a few bad lines do not reject a list
        assert!(check_download(b"a.com\nb.com\nbad!\n", None, auto).is_ok());
        assert!(check_download(b"", None, auto).is_err());
        assert!(check_download(b"# only comments\n\n", None, auto).is_err());
        let json = b"{\"json\": true,\n\"x\": [1, 2],\n\"y\": \"z w\"\n}\nok.com\n";
        assert!(check_download(json, None, auto).is_err());
    }

    #[test]
    fn downloads_are_checked_for_pages_pins_and_names() {
        let body = b"a.example\n";
        let sha = sha256_hex(body);
        assert_eq!(check_download(body, None, Format::Auto), Ok(sha.clone()));
        assert_eq!(
            check_download(body, Some(&sha), Format::Auto),
            Ok(sha.clone())
        );
        let other = "0".repeat(64);
        assert!(
            check_download(body, Some(&other), Format::Auto)
                .unwrap_err()
                .contains("pins")
        );
        assert!(check_download(b"<!DOCTYPE html><p>log in</p>", None, Format::Auto).is_err());
        assert!(check_download(b"\x00\x01", None, Format::Auto).is_err());
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
