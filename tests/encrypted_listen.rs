//! DNS over TLS and DNS over HTTPS listeners, through real clients: kdig (`+tls`, `+https`),
//! curl for the HTTP side, a rustls client where the test must hold a connection or look at
//! the certificate presented, and dnsperf (`-m dot`, `-m doh`). The certificate is made by the
//! test (rcgen), signed by its own CA; upstream is the loopback fixture.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{RData, RecordType, rdata::svcb::SvcParamValue},
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::{Setup, free_port, list, tool, upstream::Upstream, wait_until};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, pki_types::ServerName},
};

const HOST: &str = "dns.test";

/// The test's CA, which signs every certificate hushd presents here.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "hushd test CA");
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `dns.test` and 127.0.0.1: (its PEM, its key's PEM, its DER).
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![HOST.to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(self.pem.as_bytes())
            .map(Result::unwrap)
        {
            roots.add(cert).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"dot".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

/// hushd with a DoT and a DoH listener, the CA's certificate, and `extra` in `[server]`.
struct Encrypted {
    setup: Setup,
    ca: Ca,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    dot: SocketAddr,
    doh: SocketAddr,
}

impl Encrypted {
    fn new(upstream: SocketAddr, extra: &str) -> Self {
        let tls_dir = tempfile::tempdir().unwrap().keep();
        let (cert_file, key_file) = (tls_dir.join("fullchain.pem"), tls_dir.join("privkey.pem"));
        // four ports free now and all different (nothing holds them until hushd binds them)
        let (setup, dot, doh) = loop {
            let dot: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let doh: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let setup = Setup::new(
                &[upstream],
                &format!(
                    "tls_listen = [\"{dot}\"]\nhttps_listen = [\"{doh}\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}",
                    cert_file.display(),
                    key_file.display()
                ),
            );
            let mut ports = [dot, doh, setup.dns, setup.metrics].map(|a| a.port());
            ports.sort_unstable();
            if ports.windows(2).all(|w| w[0] != w[1]) {
                break (setup, dot, doh);
            }
        };
        let ca = Ca::new();
        let ca_file = tls_dir.join("ca.pem");
        std::fs::write(&ca_file, &ca.pem).unwrap();
        let this = Self {
            setup,
            ca,
            ca_file,
            cert_file,
            key_file,
            dot,
            doh,
        };
        this.install(&this.ca.leaf());
        this
    }

    /// Writes a certificate and key the way ACME clients do: new files renamed over the old.
    fn install(&self, (cert, key, _): &(String, String, Vec<u8>)) {
        for (path, text) in [(&self.cert_file, cert), (&self.key_file, key)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }

    fn kdig(&self, args: &[&str]) -> Option<String> {
        let kdig = tool("kdig")?;
        let out = Command::new(kdig)
            .args([
                "@127.0.0.1",
                "+timeout=3",
                "+retry=0",
                "+tls-hostname=dns.test",
            ])
            .arg(format!("+tls-ca={}", self.ca_file.display()))
            .args(args)
            .output()
            .unwrap();
        Some(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    fn dot_kdig(&self, name: &str) -> Option<String> {
        let port = self.dot.port().to_string();
        self.kdig(&["-p", &port, "+tls", name])
    }

    fn doh_kdig(&self, name: &str, get: bool) -> Option<String> {
        let port = self.doh.port().to_string();
        let method = if get { "+https-get" } else { "+https" };
        self.kdig(&["-p", &port, method, name])
    }

    /// curl against the DoH listener: (HTTP status, headers and body as text).
    fn curl(&self, args: &[&str]) -> Option<(u16, String)> {
        let curl = tool("curl")?;
        let out = Command::new(curl)
            .args(["-s", "-i", "--max-time", "5", "--http2", "--cacert"])
            .arg(&self.ca_file)
            .args([
                "--resolve",
                &format!("{HOST}:{}:127.0.0.1", self.doh.port()),
            ])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Some((status, text))
    }

    fn doh_url(&self, rest: &str) -> String {
        format!("https://{HOST}:{}{rest}", self.doh.port())
    }

    /// A DoT connection of the test's own (rustls), for holding open and for the certificate.
    async fn dot_connect(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.dot).await.unwrap();
        self.ca
            .connector()
            .connect(ServerName::try_from(HOST).unwrap(), tcp)
            .await
            .unwrap()
    }
}

/// The DNS status kdig prints (after the HTTP session's own `status: 200`, over DoH).
fn status(out: &str) -> Option<&str> {
    out.split("->>HEADER<<-")
        .nth(1)?
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
}

fn a_query(name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.parse().unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// One query over a DoT connection (TCP framing), and its answer.
async fn dot_ask(stream: &mut tokio_rustls::client::TlsStream<TcpStream>, name: &str) -> Message {
    let query = a_query(name);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut len))
        .await
        .expect("an answer in time")
        .unwrap();
    let mut reply = vec![0; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).await.unwrap();
    Message::from_vec(&reply).unwrap()
}

fn presented(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_and_doh_answer_block_and_count_by_protocol() {
    let up = Upstream::start().await;
    let enc = Encrypted::new(up.addr, "");
    enc.setup
        .write_list("ads", &list("block", &["blocked.test"]));
    let hushd = enc.setup.start();

    let Some(out) = enc.dot_kdig("www.example.") else {
        return;
    };
    assert_eq!(status(&out), Some("NOERROR"), "{out}");
    assert!(out.contains("192.0.2.1"), "{out}");
    let out = enc.dot_kdig("blocked.test.").unwrap();
    assert_eq!(status(&out), Some("NXDOMAIN"), "{out}");

    for get in [false, true] {
        let out = enc.doh_kdig("www.example.", get).unwrap();
        assert_eq!(status(&out), Some("NOERROR"), "get={get}: {out}");
        assert!(out.contains("192.0.2.1"), "{out}");
        let out = enc.doh_kdig("blocked.test.", get).unwrap();
        assert_eq!(status(&out), Some("NXDOMAIN"), "get={get}: {out}");
    }
    // counted by protocol
    let metric = |protocol: &str, outcome: &str| {
        hushd
            .metric(&format!(
                "hushd_queries_total{{outcome=\"{outcome}\",protocol=\"{protocol}\",qtype=\"A\"}}"
            ))
            .unwrap_or(0.0)
    };
    assert_eq!(metric("tls", "blocked"), 1.0, "{}", hushd.metrics_text());
    assert_eq!(metric("https", "blocked"), 2.0, "{}", hushd.metrics_text());
    assert_eq!(
        metric("tls", "forwarded") + metric("tls", "cached"),
        1.0,
        "{}",
        hushd.metrics_text()
    );
    assert_eq!(
        metric("https", "forwarded") + metric("https", "cached"),
        2.0
    );

    // RFC 8484 over HTTP/2 with curl: the answer's type and freshness, and the wrong requests
    let query = base64_url(&a_query("www.example."));
    let (code, text) = enc
        .curl(&[&enc.doh_url(&format!("/dns-query?dns={query}"))])
        .unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(text.starts_with("HTTP/2"), "{text}");
    assert!(
        text.contains("content-type: application/dns-message"),
        "{text}"
    );
    // cached: the fixture's TTL of 300 counted down
    let max_age: u32 = text
        .split("cache-control: max-age=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no max-age: {text}"));
    assert!((290..=300).contains(&max_age), "{text}");
    let (code, _) = enc.curl(&[&enc.doh_url("/dns-query?dns=%%%")]).unwrap();
    assert_eq!(code, 400);
    let (code, _) = enc
        .curl(&[&enc.doh_url(&format!("/other?dns={query}"))])
        .unwrap();
    assert_eq!(code, 404);
    let (code, text) = enc
        .curl(&["-X", "PUT", &enc.doh_url("/dns-query")])
        .unwrap();
    assert_eq!(code, 405, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("allow: get, post"),
        "{text}"
    );
    let (code, _) = enc
        .curl(&[
            "-H",
            "content-type: text/plain",
            "--data-binary",
            "x",
            &enc.doh_url("/dns-query"),
        ])
        .unwrap();
    assert_eq!(code, 415);
    // HTTP/1.1 too
    let (code, text) = enc
        .curl(&[
            "--http1.1",
            &enc.doh_url(&format!("/dns-query?dns={query}")),
        ])
        .unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(text.starts_with("HTTP/1.1"), "{text}");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_allow_clients_are_refused_over_both() {
    let up = Upstream::start().await;
    let enc = Encrypted::new(up.addr, "allow_clients = [\"192.0.2.0/24\"]");
    let _hushd = enc.setup.start();
    let Some(out) = enc.dot_kdig("www.example.") else {
        return;
    };
    assert_eq!(status(&out), Some("REFUSED"), "{out}");
    let out = enc.doh_kdig("www.example.", false).unwrap();
    assert_eq!(status(&out), Some("REFUSED"), "{out}");
    assert_eq!(up.seen.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_a_silent_one_is_closed_after_the_handshake_timeout() {
    let up = Upstream::start().await;
    let enc = Encrypted::new(up.addr, "tls_handshake_timeout_secs = 1");
    enc.setup
        .append_config("[limits]\nexempt_clients = []\nmax_tcp_connections_per_client = 2");
    let hushd = enc.setup.start();

    // two silent connections take the client's two places (DoT and DoH count alike)
    let mut silent = TcpStream::connect(enc.dot).await.unwrap();
    let mut other = TcpStream::connect(enc.doh).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(enc.dot).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a third connection is closed at accept: {closed:?}"
    );
    assert!(wait_until(Duration::from_secs(2), || hushd
        .metric(r#"hushd_limited_total{reason="tcp_limit"}"#)
        == Some(1.0)));

    // no handshake: closed after about a second
    let started = Instant::now();
    for stream in [&mut silent, &mut other] {
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed by the handshake timeout: {read:?}"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    // and their places are free again
    let mut stream = enc.dot_connect().await;
    assert_eq!(
        dot_ask(&mut stream, "www.example.")
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_presented_without_restart_and_a_broken_one_is_not() {
    let up = Upstream::start().await;
    let enc = Encrypted::new(up.addr, "");
    let hushd = enc.setup.start();
    let first_der = std::fs::read(&enc.cert_file).unwrap();
    let mut open = enc.dot_connect().await;
    let first = presented(&open);
    assert_eq!(
        dot_ask(&mut open, "one.example.")
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );

    let renewed = enc.ca.leaf();
    enc.install(&renewed);
    assert!(
        hushd.wait_log("TLS certificate reloaded", Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
    let fresh = enc.dot_connect().await;
    assert_eq!(
        presented(&fresh),
        renewed.2,
        "new handshakes get the new certificate"
    );
    assert_ne!(presented(&fresh), first);
    // the connection opened before keeps working
    assert_eq!(
        dot_ask(&mut open, "two.example.")
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );
    assert_ne!(std::fs::read(&enc.cert_file).unwrap(), first_der);

    // a broken renewal: a key that is not the certificate's, then garbage
    let other = enc.ca.leaf();
    let tmp = enc.key_file.with_extension("tmp");
    std::fs::write(&tmp, &other.1).unwrap();
    std::fs::rename(&tmp, &enc.key_file).unwrap();
    assert!(
        hushd.wait_log("does not belong to the certificate", Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
    assert!(hushd.log().contains("the one in force stays"));
    std::fs::write(&enc.cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    assert!(
        hushd.wait_log("not a PEM certificate chain", Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
    let still = enc.dot_connect().await;
    assert_eq!(
        presented(&still),
        renewed.2,
        "the last good certificate stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddr_designates_both_listeners_with_hickorys_svcb() {
    let up = Upstream::start().await;
    let enc = Encrypted::new(up.addr, "");
    let hushd = enc.setup.start();
    let mut client = support::udp_client(hushd.dns, None).await;
    let r = support::query(&mut client, "_dns.resolver.arpa.", RecordType::SVCB).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    let svcb: Vec<_> = r
        .answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SVCB(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(svcb.len(), 2, "{:?}", r.answers);
    for (record, alpn, port) in [
        (&svcb[0], "dot", enc.dot.port()),
        (&svcb[1], "h2", enc.doh.port()),
    ] {
        assert_eq!(record.target_name.to_ascii(), "dns.test.");
        let params = &record.svc_params;
        assert!(
            params
                .iter()
                .any(|(_, v)| matches!(v, SvcParamValue::Alpn(a) if a.0 == [alpn]))
        );
        assert!(params.iter().any(|(_, v)| *v == SvcParamValue::Port(port)));
        assert!(params.iter().any(|(_, v)| matches!(v, SvcParamValue::Ipv4Hint(h) if h.0.iter().any(|a| a.0 == std::net::Ipv4Addr::LOCALHOST))));
    }
    assert!(svcb[1].svc_params.iter().any(|(k, v)| u16::from(*k) == 7
        && matches!(v, SvcParamValue::Unknown(u) if u.0 == b"/dns-query{?dns}")));
    // other types in the zone stay NODATA, and nothing went upstream
    let r = support::query(&mut client, "_dns.resolver.arpa.", RecordType::A).await;
    assert!(r.answers.is_empty());
    assert_eq!(up.seen.total(), 0);
}

#[test]
fn check_reports_a_broken_pair_and_listeners_without_one() {
    let setup = Setup::new(&["127.0.0.1:53".parse().unwrap()], "");
    let dir = setup.dir.path();
    std::fs::write(dir.join("bad.pem"), "not a certificate\n").unwrap();
    std::fs::write(dir.join("key.pem"), "\n").unwrap();
    let original = std::fs::read_to_string(setup.config_path()).unwrap();
    let check = |server: &str| {
        let config = original.replacen("[server]\n", &format!("[server]\n{server}\n"), 1);
        std::fs::write(setup.config_path(), config).unwrap();
        let out = Command::new(support::HUSHD)
            .arg("check")
            .arg("--config")
            .arg(setup.config_path())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = check("cert_file = \"bad.pem\"\nkey_file = \"key.pem\"");
    assert!(!ok, "{out}");
    assert!(out.contains("bad.pem: holds no certificate"), "{out}");
    let (ok, out) = check("tls_listen = [\"127.0.0.1:8853\"]");
    assert!(!ok, "{out}");
    assert!(out.contains("hushd.toml:2:"), "{out}");
    assert!(out.contains("tls_listen needs [server] cert_file"), "{out}");
}

/// dnsperf against both listeners for two seconds each: every query answered. dnsperf 2.10's
/// DoH client takes one answer per TLS read, so this also guards `https::AnswerPerWrite` (each
/// answer in TLS records of its own): without it most of its queries are lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsperf_over_dot_and_doh_loses_nothing() {
    let up = Upstream::start().await;
    let enc = Encrypted::new(up.addr, "");
    let _hushd = enc.setup.start();
    let Some(dnsperf) = tool("dnsperf") else {
        return;
    };
    let data = enc.setup.dir.path().join("queries.txt");
    std::fs::write(
        &data,
        "www.example. A\nmail.example. AAAA\nblocked.test. A\n",
    )
    .unwrap();
    for (mode, port, extra) in [
        ("dot", enc.dot.port(), vec![]),
        (
            "doh",
            enc.doh.port(),
            vec![
                "-O".to_string(),
                format!("doh-uri=https://127.0.0.1:{}/dns-query", enc.doh.port()),
            ],
        ),
    ] {
        let out = Command::new(&dnsperf)
            .args(["-m", mode, "-s", "127.0.0.1", "-p", &port.to_string()])
            .arg("-d")
            .arg(&data)
            .args(["-c", "2", "-l", "2", "-Q", "2000"])
            .args(&extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let completed = text
            .lines()
            .find(|l| l.trim_start().starts_with("Queries completed:"))
            .unwrap_or_else(|| panic!("{mode}: {text}{}", String::from_utf8_lossy(&out.stderr)));
        let n: u64 = completed
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(n > 100, "{mode}: {text}");
        assert!(text.contains("Queries lost:         0 "), "{mode}: {text}");
    }
}
