//! Test support: the real `hushd` binary started as a process on loopback, real DNS clients
//! (hickory's), and a real authoritative upstream (`upstream.rs`).

#![allow(dead_code)]

pub mod evidence;
pub mod netns;
pub mod unbound;
pub mod upstream;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hickory_net::{
    client::{Client, ClientHandle},
    runtime::TokioRuntimeProvider,
    tcp::TcpClientStream,
    udp::UdpClientStream,
};
use hickory_proto::{
    op::DnsResponse,
    rr::{DNSClass, Name, RecordType},
};

pub const HUSHD: &str = env!("CARGO_BIN_EXE_hushd");

/// Runs `hushd --config CONFIG ARGS...` to its end: whether it succeeded, and what it printed
/// (standard output, then standard error).
pub fn hushd_cli(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(HUSHD)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A port free for both UDP and TCP on 127.0.0.1 right now, below the kernel's ephemeral
/// range (32768 and up by default): a port taken from that range was often handed to another
/// test's client socket before hushd could bind it ("Address already in use").
pub fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        let free = std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
}

/// A config folder with `hushd.toml` and `blocklists/`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub dns: SocketAddr,
    pub metrics: SocketAddr,
}

impl Setup {
    /// `server_extra` goes into `[server]`; `upstreams` become `[upstream] servers`.
    pub fn new(upstreams: &[SocketAddr], server_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        std::fs::create_dir(dir.path().join("blocklists")).unwrap();
        let servers: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
        let config = format!(
            "[server]\nlisten = [\"{dns}\"]\n{server_extra}\n\n[upstream]\nservers = [{}]\ntimeout_ms = 2000\nattempt_timeout_ms = 1000\n\n[metrics]\nlisten = \"{metrics}\"\n\n[blocklists]\ndir = \"blocklists\"\n",
            servers.join(", ")
        );
        std::fs::write(dir.path().join("hushd.toml"), config).unwrap();
        Self { dir, dns, metrics }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("hushd.toml")
    }

    /// Appends `toml` (whole sections, such as `[limits]\nclient_qps = 200`) to the config.
    pub fn append_config(&self, toml: &str) {
        let config = std::fs::read_to_string(self.config_path()).unwrap();
        std::fs::write(self.config_path(), format!("{config}\n{toml}\n")).unwrap();
    }

    /// Replaces the config the way editors save: a new file renamed over the old one.
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join(".hushd.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    /// Drops the test config's short upstream timeouts, so hushd runs on its defaults (which
    /// let a 1.5 s upstream answer through).
    pub fn use_default_upstream_timeouts(&self) {
        let config = std::fs::read_to_string(self.config_path()).unwrap();
        let defaults: String = config
            .lines()
            .filter(|l| !l.contains("timeout_ms"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(self.config_path(), defaults).unwrap();
    }

    pub fn list_path(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("blocklists")
            .join(format!("{name}.toml"))
    }

    /// Writes a list the way editors save: a new file renamed over the old one.
    pub fn write_list(&self, name: &str, text: &str) {
        let tmp = self
            .dir
            .path()
            .join("blocklists")
            .join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.list_path(name)).unwrap();
    }

    pub fn start(&self) -> Hushd {
        Hushd::start(self)
    }
}

/// A running `hushd`; killed when dropped. Its stderr (the log) goes to a file.
pub struct Hushd {
    child: Child,
    pub dns: SocketAddr,
    pub metrics: SocketAddr,
    log: PathBuf,
}

impl Hushd {
    fn start(setup: &Setup) -> Self {
        Self::start_with(setup, &[], &[])
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("hushd exited with {status}:\n{}", self.log());
            }
            if self.log().contains("hushd ready") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("hushd not ready after 10 s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for `needle` to appear in the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics")
    }

    /// The value of the metric line that starts with `series` (name and labels as rendered).
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has ended.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Hushd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

pub async fn udp_client(
    server: SocketAddr,
    bind: Option<SocketAddr>,
) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_bind_addr(bind)
        .with_timeout(Some(Duration::from_secs(5)))
        .build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    client
}

pub async fn tcp_client(server: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(
        server,
        None,
        Some(Duration::from_secs(5)),
        TokioRuntimeProvider::default(),
    );
    let stream = stream.await.expect("tcp connect");
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream, sender);
    tokio::spawn(bg);
    client
}

pub async fn query(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    qtype: RecordType,
) -> DnsResponse {
    client
        .query(Name::from_ascii(name).unwrap(), DNSClass::IN, qtype)
        .await
        .unwrap_or_else(|e| panic!("query {name} {qtype}: {e}"))
}

/// The response code of an A query for `name`.
pub async fn rcode(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
) -> hickory_proto::op::ResponseCode {
    query(client, name, RecordType::A).await.response_code
}

/// Asks `name` until the answer has `rcode`; how long that took, or `None` after `timeout`.
pub async fn wait_for_rcode(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    rcode: hickory_proto::op::ResponseCode,
    timeout: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if self::rcode(client, name).await == rcode {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// A list file with `action` and `domains`.
pub fn list(action: &str, domains: &[&str]) -> String {
    let entries: Vec<String> = domains.iter().map(|d| format!("  \"{d}\",\n")).collect();
    format!(
        "action = \"{action}\"\ndomains = [\n{}]\n",
        entries.concat()
    )
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The path of a system tool the tests use, or `None` (with a note) where it is not installed.
/// With HUSHD_REQUIRE_TOOLS set (as `.ci/run` does), a missing tool is a failure.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("HUSHD_REQUIRE_TOOLS").is_none(),
            "{name} is required (HUSHD_REQUIRE_TOOLS is set) but not installed"
        );
        eprintln!("note: {name} is not installed; skipping the part of the test that needs it");
    }
    found
}

impl Hushd {
    /// Like `Setup::start`, with extra command-line arguments and environment variables.
    pub fn start_with(setup: &Setup, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = setup.dir.path().join("hushd.log");
        let child = Command::new(HUSHD)
            .arg("--config")
            .arg(setup.config_path())
            .args(args)
            .env("RUST_LOG", "info,hickory_server=warn,hickory_resolver=warn,hickory_net=warn,hickory_proto=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start hushd");
        let mut hushd = Self {
            child,
            dns: setup.dns,
            metrics: setup.metrics,
            log,
        };
        hushd.wait_ready();
        hushd
    }
}

/// A running `hushd` whose stderr is a pipe nobody reads: a log sink that has stalled (journald
/// busy, a full pipe). Ready once `/healthz` answers, since its log cannot be read. Killed when
/// dropped.
pub struct StalledLog {
    child: Child,
    /// The pipe's read end, held open and never read.
    _stderr: std::process::ChildStderr,
    pub dns: SocketAddr,
    pub metrics: SocketAddr,
}

impl StalledLog {
    pub fn start(setup: &Setup, rust_log: &str) -> Self {
        let mut child = Command::new(HUSHD)
            .arg("--config")
            .arg(setup.config_path())
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hushd");
        let stderr = child.stderr.take().expect("piped stderr");
        let ready = wait_until(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&setup.metrics, Duration::from_millis(200)).is_ok()
        });
        assert!(ready, "hushd (stderr to a pipe) not ready after 10 s");
        Self {
            child,
            _stderr: stderr,
            dns: setup.dns,
            metrics: setup.metrics,
        }
    }

    /// The value of the metric line that starts with `series`; `None` also when the endpoint
    /// does not answer within a few seconds (a hushd stuck on its log).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let get = || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        };
        get()
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }
}

impl Drop for StalledLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of a response's Extended DNS Error 15 (Blocked), if it carries one.
pub fn ede_text(r: &DnsResponse) -> Option<String> {
    use hickory_proto::rr::rdata::opt::EdnsOption;
    r.edns
        .as_ref()?
        .options()
        .as_ref()
        .iter()
        .find_map(|(_, o)| match o {
            EdnsOption::Unknown(15, data) => Some(String::from_utf8_lossy(&data[2..]).into_owned()),
            _ => None,
        })
}
