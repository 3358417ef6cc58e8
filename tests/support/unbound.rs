//! A DNS-over-TLS and DNS-over-HTTPS upstream for the tests: Unbound on loopback answering from
//! `local-data`, with a certificate from a CA the test makes (`TestCa`) and hands hushd through
//! `[upstream] ca_file`. Needs Debian's `unbound` (built with nghttp2 for DoH).

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{free_port, tool, wait_until};

/// The name in the test server's certificate (beside 127.0.0.1).
pub const CERT_NAME: &str = "dns.test";

/// A CA and a certificate it signed for `dns.test` and 127.0.0.1, written into `dir`: the CA
/// (for hushd's `ca_file`), and the server's certificate and key (for Unbound).
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn write(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "hushd test upstream CA");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![CERT_NAME.to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let paths = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&paths.ca, ca_pem).unwrap();
        std::fs::write(&paths.cert, cert.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }
}

/// Unbound answering every name under `test.` with 192.0.2.1, over TLS at `tls` and HTTPS
/// (HTTP/2, `/dns-query`) at `https`; killed when dropped.
pub struct Unbound {
    child: Child,
    conf: PathBuf,
    log: PathBuf,
    pub tls: SocketAddr,
    pub https: SocketAddr,
}

impl Unbound {
    /// `None` when unbound is not installed (a failure under HUSHD_REQUIRE_TOOLS).
    pub fn start(dir: &Path, ca: &TestCa) -> Option<Self> {
        let unbound = tool("unbound")?;
        let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let conf = dir.join("unbound.conf");
        let log = dir.join("unbound.log");
        std::fs::write(
            &conf,
            format!(
                "server:\n  interface: 127.0.0.1@{tp}\n  interface: 127.0.0.1@{hp}\n  tls-port: {tp}\n  https-port: {hp}\n  \
                 tls-service-key: \"{key}\"\n  tls-service-pem: \"{cert}\"\n  http-endpoint: \"/dns-query\"\n  \
                 do-ip6: no\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  \
                 use-syslog: no\n  logfile: \"{log}\"\n  verbosity: 1\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  \
                 module-config: \"iterator\"\n  local-zone: \"test.\" redirect\n  local-data: \"test. 300 IN A 192.0.2.1\"\n\
                 remote-control:\n  control-enable: no\n",
                tp = tls.port(),
                hp = https.port(),
                key = ca.key.display(),
                cert = ca.cert.display(),
                dir = dir.display(),
                log = log.display(),
            ),
        )
        .unwrap();
        let mut server = Self {
            child: spawn(&unbound, &conf),
            conf,
            log,
            tls,
            https,
        };
        server.wait_listening();
        Some(server)
    }

    fn wait_listening(&mut self) {
        let up = wait_until(Duration::from_secs(10), || {
            TcpStream::connect(self.tls).is_ok() && TcpStream::connect(self.https).is_ok()
        });
        assert!(
            up,
            "unbound did not start: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Kills the server, which drops every connection to it, and starts it again.
    pub fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let unbound = tool("unbound").unwrap();
        self.child = spawn(&unbound, &self.conf);
        self.wait_listening();
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(unbound: &Path, conf: &Path) -> Child {
    Command::new(unbound)
        .args(["-d", "-c"])
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
