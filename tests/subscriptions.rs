//! Subscriptions by URL, end to end: the real `hushd` fetching from a real HTTP server on
//! loopback that this test drives through every way a download goes wrong, while a client keeps
//! asking and must get every answer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::op::ResponseCode;
use support::{Hushd, Setup, rcode, udp_client, upstream::Upstream, wait_for_rcode, wait_until};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// What the list server answers next.
#[derive(Clone)]
enum Serve {
    /// 200 with this body and ETag; 304 to a request that names the ETag.
    List {
        body: String,
        etag: String,
    },
    Status500,
    /// Accepts and never answers.
    Silent,
    /// 200 with a close-delimited body (no Content-Length) of this many bytes of valid names.
    Endless(usize),
    Html,
    /// Promises Content-Length 4000, sends a few names and closes.
    Truncated,
}

/// A plain HTTP/1.1 server on 127.0.0.1, one request per connection.
struct ListServer {
    addr: SocketAddr,
    serve: Arc<Mutex<Serve>>,
    /// Every request head received, in order.
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ListServer {
    async fn start(serve: Serve) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), serve)
    }

    /// The same server over TLS with `tls` (a certificate for 127.0.0.1).
    async fn start_tls(tls: tokio_rustls::TlsAcceptor, serve: Serve) -> Self {
        Self::start_with(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            Some(tls),
            serve,
        )
    }

    fn start_on(listener: TcpListener, serve: Serve) -> Self {
        Self::start_with(listener, None, serve)
    }

    fn start_with(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        serve: Serve,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let serve = Arc::new(Mutex::new(serve));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (serve, requests) = (serve.clone(), requests.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (serve, requests, tls) = (serve.clone(), requests.clone(), tls.clone());
                    tokio::spawn(async move {
                        match tls {
                            None => answer(stream, serve, requests).await,
                            Some(tls) => {
                                // a client that refuses the certificate ends the handshake
                                if let Ok(stream) = tls.accept(stream).await {
                                    answer(stream, serve, requests).await;
                                }
                            }
                        }
                    });
                }
            }
        });
        Self {
            addr,
            serve,
            requests,
            task,
        }
    }

    fn set(&self, serve: Serve) {
        *self.serve.lock().unwrap() = serve;
    }

    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn url(&self) -> String {
        format!("http://{}/lists/ads.txt", self.addr)
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    serve: Arc<Mutex<Serve>>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n @ 1..)) => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    requests.lock().unwrap().push(head.clone());
    let serve = serve.lock().unwrap().clone();
    let response: Vec<u8> = match serve {
        Serve::List { body, etag } => {
            let quoted = format!("\"{etag}\"");
            let conditional = head
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("if-none-match:") && l.contains(&quoted));
            if conditional {
                format!("HTTP/1.1 304 Not Modified\r\nETag: {quoted}\r\nConnection: close\r\n\r\n").into()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: {quoted}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .into()
            }
        }
        Serve::Status500 => {
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 6\r\nConnection: close\r\n\r\noops!\n".to_vec()
        }
        Serve::Silent => {
            // hold the connection open, answer nothing; the client must give up on its own
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        Serve::Endless(size) => {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n".to_vec();
            let mut i = 0;
            while r.len() < size {
                r.extend_from_slice(format!("n{i}.big.example\n").as_bytes());
                i += 1;
            }
            r
        }
        Serve::Html => {
            let page = "<!DOCTYPE html>\n<html><body>Sign in to the guest Wi-Fi</body></html>\n";
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            )
            .into()
        }
        Serve::Truncated => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\nConnection: close\r\n\r\ncut.example\nshort.example\n".to_vec()
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// A config with fast fetch settings, so every failure shows within seconds.
fn setup(up: &Upstream) -> Setup {
    let setup = Setup::new(&[up.addr], "");
    setup.append_config(
        "[lists]\nconnect_timeout = \"1s\"\ntimeout = \"1s\"\nretry_after = \"1s\"\nmax_bytes = 4096\n",
    );
    setup
}

fn subscription(url: &str, refresh: &str) -> String {
    format!(
        "action = \"block\"\nurl = \"{url}\"\nrefresh = \"{refresh}\"\ndomains = [\"static.example\"]\n"
    )
}

fn state_dir(setup: &Setup) -> PathBuf {
    setup.dir.path().join("state").join("lists")
}

fn fetches(hushd: &Hushd, result: &str) -> f64 {
    hushd
        .metric(&format!(
            "hushd_list_fetches_total{{list=\"ads\",result=\"{result}\"}}"
        ))
        .unwrap_or(0.0)
}

/// Waits until `hushd_list_fetches_total{list="ads",result}` passes `above`.
fn wait_fetches(hushd: &Hushd, result: &str, above: f64) -> f64 {
    let mut now = 0.0;
    let seen = wait_until(Duration::from_secs(20), || {
        now = fetches(hushd, result);
        now > above
    });
    assert!(seen, "no {result} fetch past {above}:\n{}", hushd.log());
    now
}

/// Asks a name that no list holds, over and over, until stopped; counts the queries that went
/// unanswered or failed. Bounded: at most 3000 queries, 120 s.
struct SteadyClient {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    asked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SteadyClient {
    fn start(dns: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let asked = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (stop, failed, asked) = (stop.clone(), failed.clone(), asked.clone());
            async move {
                let mut client = udp_client(dns, None).await;
                let started = Instant::now();
                for i in 0..3000 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120)
                    {
                        break;
                    }
                    let name = format!("q{i}.steady.example.");
                    let ok = hickory_net::client::ClientHandle::query(
                        &mut client,
                        hickory_proto::rr::Name::from_ascii(&name).unwrap(),
                        hickory_proto::rr::DNSClass::IN,
                        hickory_proto::rr::RecordType::A,
                    )
                    .await
                    .is_ok_and(|r| r.response_code == ResponseCode::NoError);
                    asked.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self {
            stop,
            failed,
            asked,
            task,
        }
    }

    /// (asked, failed)
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.asked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_follows_its_server_and_keeps_its_last_good_copy_through_every_failure() {
    let up = Upstream::start().await;
    let server = ListServer::start(Serve::List {
        body: "# v1\n0.0.0.0 one.example\n".into(),
        etag: "v1".into(),
    })
    .await;
    let setup = setup(&up);
    setup.write_list("ads", &subscription(&server.url(), "1s"));
    let hushd = setup.start();
    let steady = SteadyClient::start(hushd.dns);
    let mut udp = udp_client(hushd.dns, None).await;
    let long = Duration::from_secs(20);

    // first fetch: stored, and in force without a restart; the list's own names stay
    assert!(
        wait_for_rcode(&mut udp, "one.example.", ResponseCode::NXDomain, long)
            .await
            .is_some(),
        "{}",
        hushd.log()
    );
    assert_eq!(
        rcode(&mut udp, "static.example.").await,
        ResponseCode::NXDomain
    );
    let stored = state_dir(&setup).join("ads.txt");
    assert_eq!(
        std::fs::read_to_string(&stored).unwrap(),
        "# v1\n0.0.0.0 one.example\n"
    );
    assert!(fetches(&hushd, "ok") >= 1.0);

    // unchanged: the next fetches are conditional and answered 304
    wait_fetches(&hushd, "not_modified", 1.0);
    assert!(
        server
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("if-none-match: \"v1\"")),
        "no conditional GET"
    );
    let confirmed = hushd
        .metric("hushd_list_last_success_timestamp_seconds{list=\"ads\"}")
        .unwrap();
    assert!(confirmed > 1.6e9, "{confirmed}");

    // changed content: applied live through a reload
    server.set(Serve::List {
        body: "two.example\n".into(),
        etag: "v2".into(),
    });
    assert!(
        wait_for_rcode(&mut udp, "two.example.", ResponseCode::NXDomain, long)
            .await
            .is_some(),
        "{}",
        hushd.log()
    );
    assert_eq!(rcode(&mut udp, "one.example.").await, ResponseCode::NoError);

    // every failure keeps the v2 copy in force and is counted under its result
    let cases = [
        (Serve::Status500, "error", "500"),
        (Serve::Silent, "error", "timeout"),
        (Serve::Endless(64 * 1024), "rejected", "max_bytes"),
        // announced too large: refused before the body is read
        (
            Serve::List {
                body: "big.example\n".repeat(400),
                etag: "big".into(),
            },
            "rejected",
            "max_bytes",
        ),
        (Serve::Html, "rejected", "HTML"),
        (
            Serve::Truncated,
            "error",
            "end of file before message length",
        ),
    ];
    for (serve, result, logged) in cases {
        let before = fetches(&hushd, result);
        server.set(serve);
        wait_fetches(&hushd, result, before);
        assert!(
            hushd.wait_log(logged, Duration::from_secs(5)),
            "{logged} not logged:\n{}",
            hushd.log()
        );
        assert_eq!(
            rcode(&mut udp, "two.example.").await,
            ResponseCode::NXDomain,
            "{result}"
        );
        assert_eq!(rcode(&mut udp, "cut.example.").await, ResponseCode::NoError);
        assert_eq!(
            std::fs::read_to_string(&stored).unwrap(),
            "two.example\n",
            "{logged}"
        );
    }
    // a failed download never counts as a success
    assert!(
        hushd
            .log()
            .contains("no complete answer within [lists] timeout"),
        "{}",
        hushd.log()
    );
    let reload_errors = hushd.metric("hushd_reloads_total{result=\"error\"}");
    assert_eq!(reload_errors, Some(0.0));

    let (asked, failed) = steady.finish().await;
    assert!(asked >= 50, "only {asked} queries asked");
    assert_eq!(
        failed,
        0,
        "{failed} of {asked} queries failed:\n{}",
        hushd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_never_waits_for_the_network_and_uses_the_stored_copy() {
    let up = Upstream::start().await;
    let server = ListServer::start(Serve::List {
        body: "kept.example\n".into(),
        etag: "k".into(),
    })
    .await;
    let setup = setup(&up);
    let url = server.url();
    setup.write_list("ads", &subscription(&url, "1s"));

    // never fetched, server down: `hushd check` and startup both go ahead, with a note
    let check_unfetched = || {
        std::process::Command::new(support::HUSHD)
            .args(["check", "--config"])
            .arg(setup.config_path())
            .output()
            .unwrap()
    };
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = check_unfetched();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("note: list ads: no stored copy"),
        "{stdout}"
    );
    {
        let hushd = setup.start();
        let mut udp = udp_client(hushd.dns, None).await;
        assert_eq!(
            rcode(&mut udp, "static.example.").await,
            ResponseCode::NXDomain
        );
        wait_fetches(&hushd, "error", 0.0);
        assert!(
            hushd.wait_log("no stored copy", Duration::from_secs(5)),
            "{}",
            hushd.log()
        );
    }

    // the server is back on the same address: the copy is stored
    let listener = TcpListener::bind(url.split('/').nth(2).unwrap())
        .await
        .unwrap();
    let server = ListServer::start_on(
        listener,
        Serve::List {
            body: "kept.example\n".into(),
            etag: "k".into(),
        },
    );
    {
        let hushd = setup.start();
        let mut udp = udp_client(hushd.dns, None).await;
        assert!(
            wait_for_rcode(
                &mut udp,
                "kept.example.",
                ResponseCode::NXDomain,
                Duration::from_secs(20)
            )
            .await
            .is_some(),
            "{}",
            hushd.log()
        );
    }

    // unreachable again: the stored copy is in force from the first query on
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    assert_eq!(
        rcode(&mut udp, "kept.example.").await,
        ResponseCode::NXDomain
    );
    wait_fetches(&hushd, "error", 0.0);
    assert_eq!(
        rcode(&mut udp, "kept.example.").await,
        ResponseCode::NXDomain
    );
    let out = check_unfetched();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("no stored copy"), "{stdout}");
    assert!(
        stdout.contains(
            "    subscription copy: format plain (auto), 1 entries, 0 patterns, 0 skipped\n"
        ),
        "{stdout}"
    );

    // explain names the subscription's URL and the line of its stored copy, offline and live
    let out = std::process::Command::new(support::HUSHD)
        .args(["explain", "www.kept.example", "--json", "--config"])
        .arg(setup.config_path())
        .output()
        .unwrap();
    let offline = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{offline}");
    let live = support::http_get(hushd.metrics, "/explain?name=www.kept.example");
    let live = live.split("\r\n\r\n").nth(1).unwrap_or_default();
    for text in [&*offline, live] {
        let e: serde_json::Value = serde_json::from_str(text).expect(text);
        assert_eq!(e["decision"], "block", "{text}");
        let m = &e["matches"][0];
        assert_eq!(m["entry"], "kept.example", "{text}");
        assert_eq!(m["line"], 1, "{text}");
        let source = m["file"].as_str().unwrap_or_default();
        assert!(
            source.starts_with(&format!("{url} (stored copy ")),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refreshes_only_copies_older_than_a_minute() {
    let up = Upstream::start().await;
    let server = ListServer::start(Serve::List {
        body: "fresh.example\n".into(),
        etag: "f".into(),
    })
    .await;
    let setup = setup(&up);
    // a copy confirmed 30 minutes ago, of a list refreshed hourly: not due at startup
    let state = state_dir(&setup);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("ads.txt"), "old.example\n").unwrap();
    let checked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1800;
    std::fs::write(
        state.join("ads.meta.toml"),
        format!(
            "url = \"{}\"\nchecked_unix = {checked}\nsha256 = \"\"\n",
            server.url()
        ),
    )
    .unwrap();
    setup.write_list("ads", &subscription(&server.url(), "1h"));
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    assert_eq!(
        rcode(&mut udp, "old.example.").await,
        ResponseCode::NXDomain
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        server.request_count(),
        0,
        "a fresh copy was fetched at startup"
    );

    let pid = nix::unistd::Pid::from_raw(i32::try_from(hushd.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(
        wait_for_rcode(
            &mut udp,
            "fresh.example.",
            ResponseCode::NXDomain,
            Duration::from_secs(20)
        )
        .await
        .is_some(),
        "{}",
        hushd.log()
    );
    assert_eq!(server.request_count(), 1);

    // just fetched: another SIGHUP reloads but does not fetch
    let reloads = hushd.metric("hushd_reloads_total{result=\"ok\"}").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        hushd.metric("hushd_reloads_total{result=\"ok\"}").unwrap() > reloads
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.request_count(), 1, "{}", hushd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_go_through_the_proxy_from_the_environment() {
    let up = Upstream::start().await;
    // the "proxy" is the list server itself: it answers the absolute-form request it gets
    let proxy = ListServer::start(Serve::List {
        body: "proxied.example\n".into(),
        etag: "p".into(),
    })
    .await;
    let setup = setup(&up);
    setup.write_list(
        "ads",
        &subscription("http://lists.hushd-test.invalid/ads.txt", "1h"),
    );
    let proxy_url = format!("http://{}", proxy.addr);
    let hushd = Hushd::start_with(
        &setup,
        &[],
        &[
            ("HTTP_PROXY", &proxy_url),
            ("http_proxy", &proxy_url),
            ("NO_PROXY", ""),
        ],
    );
    let mut udp = udp_client(hushd.dns, None).await;
    assert!(
        wait_for_rcode(
            &mut udp,
            "proxied.example.",
            ResponseCode::NXDomain,
            Duration::from_secs(20)
        )
        .await
        .is_some(),
        "{}",
        hushd.log()
    );
    let first = proxy.requests.lock().unwrap()[0].clone();
    assert!(
        first.starts_with("GET http://lists.hushd-test.invalid/ads.txt HTTP/1.1"),
        "{first}"
    );
}

/// A CA and a certificate it signed for 127.0.0.1: the CA's PEM, and a TLS acceptor serving
/// the certificate.
fn test_ca() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls;

    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "hushd test office CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (ca_pem, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_servers_of_an_office_ca_are_trusted_through_ca_file() {
    let up = Upstream::start().await;
    let (ca_pem, tls) = test_ca();
    let server = ListServer::start_tls(
        tls,
        Serve::List {
            body: "office.example\n".into(),
            etag: "o".into(),
        },
    )
    .await;
    let url = format!("https://{}/lists/ads.txt", server.addr);
    let setup = setup(&up);
    setup.write_list("ads", &subscription(&url, "1s"));

    // only the system's roots: the office CA is unknown, the download fails
    let hushd = setup.start();
    wait_fetches(&hushd, "error", 0.0);
    // the log is written by a thread of its own: it may trail the metric a little
    assert!(
        wait_until(Duration::from_secs(5), || hushd
            .log()
            .to_ascii_lowercase()
            .contains("certificate")),
        "{}",
        hushd.log()
    );
    let mut udp = udp_client(hushd.dns, None).await;
    assert_eq!(
        rcode(&mut udp, "office.example.").await,
        ResponseCode::NoError
    );

    // ca_file added to the running config: trusted beside the system's roots
    std::fs::write(setup.dir.path().join("office-ca.pem"), ca_pem).unwrap();
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(
        setup.config_path(),
        config.replace("[lists]\n", "[lists]\nca_file = \"office-ca.pem\"\n"),
    )
    .unwrap();
    assert!(
        wait_for_rcode(
            &mut udp,
            "office.example.",
            ResponseCode::NXDomain,
            Duration::from_secs(20)
        )
        .await
        .is_some(),
        "{}",
        hushd.log()
    );
    assert!(fetches(&hushd, "ok") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_subscription_takes_only_the_pinned_content() {
    let up = Upstream::start().await;
    let server = ListServer::start(Serve::List {
        body: "tampered.example\n".into(),
        etag: "t".into(),
    })
    .await;
    let setup = setup(&up);
    // sha256sum of "pinned.example\n"
    let pin = "ceb3fe9bf5e5fcecec56eb4533ef04ad4f5976238fbaba55b13897ed6b2ab67a";
    setup.write_list(
        "ads",
        &format!("{}sha256 = \"{pin}\"\n", subscription(&server.url(), "1s")),
    );
    let hushd = setup.start();
    wait_fetches(&hushd, "rejected", 0.0);
    assert!(
        hushd.wait_log("the list pins", Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
    let mut udp = udp_client(hushd.dns, None).await;
    assert_eq!(
        rcode(&mut udp, "tampered.example.").await,
        ResponseCode::NoError
    );
    assert!(!state_dir(&setup).join("ads.txt").exists());

    server.set(Serve::List {
        body: "pinned.example\n".into(),
        etag: "p".into(),
    });
    assert!(
        wait_for_rcode(
            &mut udp,
            "pinned.example.",
            ResponseCode::NXDomain,
            Duration::from_secs(20)
        )
        .await
        .is_some(),
        "{}",
        hushd.log()
    );
}
