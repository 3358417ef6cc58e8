//! The certificate and key the DoT and DoH listeners present, read from `[server] cert_file`
//! and `key_file` and read again whenever either changes (an ACME client renewing writes new
//! files, or renames or re-points a symlink over them), without a restart: the pair in force
//! sits behind an `ArcSwap` that rustls asks at every handshake (`ResolvesServerCert`), so new
//! handshakes get the new certificate and open connections keep the session they have. A pair
//! that does not load (unreadable, bad PEM, a key that is not the certificate's) leaves the
//! one in force and is logged with what is wrong.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

/// ACME clients write the chain and the key one after the other; one reload once both are
/// written beats a warning about a half-renewed pair in between.
const SETTLE: Duration = Duration::from_millis(200);

/// Why a certificate and key pair cannot be used. Each names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not a PEM certificate chain: {message}", path.display())]
    CertPem { path: PathBuf, message: String },
    #[error("{}: holds no certificate (expected a -----BEGIN CERTIFICATE----- block)", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "{}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY): {message}",
        path.display()
    )]
    KeyPem { path: PathBuf, message: String },
    #[error("{}: unusable private key: {message}", path.display())]
    Key { path: PathBuf, message: String },
    #[error(
        "{}: the private key does not belong to the certificate in {} (its first certificate must be the server's own)",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: {message}", cert.display())]
    Invalid { cert: PathBuf, message: String },
}

/// The ring provider: the one reqwest already builds rustls with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the pair: the chain's PEM certificates (the server's own first), the
/// private key, and that the key is the certificate's.
pub fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(&files.cert_file)?, read(&files.key_file)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::CertPem {
            path: files.cert_file.clone(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: files.cert_file.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::KeyPem {
        path: files.key_file.clone(),
        message: e.to_string(),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key {
            path: files.key_file.clone(),
            message: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CertError::Mismatch {
                cert: files.cert_file.clone(),
                key: files.key_file.clone(),
            })
        }
        // the key type cannot say (no public key to compare): rustls itself accepts it
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(CertError::Invalid {
            cert: files.cert_file.clone(),
            message: e.to_string(),
        }),
    }
}

/// The first DNS name in the certificate file's own (first) certificate, as a fully qualified
/// name; `None` when the file cannot be read or the certificate names no host.
pub fn dns_name(cert_file: &Path) -> Option<hickory_proto::rr::Name> {
    let pem = std::fs::read(cert_file).ok()?;
    let leaf = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    let cert = webpki::EndEntityCert::try_from(&leaf).ok()?;
    let name = cert.valid_dns_names().find(|n| !n.starts_with('*'))?;
    let mut name = hickory_proto::rr::Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// SHA-256 of the server's own certificate, as `openssl x509 -fingerprint -sha256` prints it
/// (without colons): what the log says was loaded, so an admin can match it with a renewal.
pub fn fingerprint(key: &CertifiedKey) -> String {
    key.cert.first().map_or_else(String::new, |leaf| {
        Sha256::digest(leaf.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    })
}

/// The pair in force, swapped whole when the files change.
pub struct CertStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertStore {
    /// Loads the pair; at start a broken pair is an error (there is nothing to keep instead).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, CertError> {
        let provider = provider();
        let key = load_pair(&files, &provider)?;
        tracing::info!(
            cert_file = %files.cert_file.display(),
            sha256 = fingerprint(&key),
            "TLS certificate loaded"
        );
        Ok(Arc::new(Self {
            files,
            provider,
            current: ArcSwap::from_pointee(key),
        }))
    }

    /// The pair rustls presents now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// A rustls server config presenting this store's pair (whatever it is at each handshake),
    /// offering `alpn` (RFC 7301: `dot` for DoT, `h2` and `http/1.1` for DoH).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<ServerConfig, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// Reads the files again; swaps the new pair in when it loads and differs. Returns what
    /// happened, for the log and the tests.
    pub fn reload(&self) -> Reloaded {
        match load_pair(&self.files, &self.provider) {
            Ok(key) if key.cert == self.current.load().cert => Reloaded::Unchanged,
            Ok(key) => {
                let sha256 = fingerprint(&key);
                self.current.store(Arc::new(key));
                Reloaded::Swapped { sha256 }
            }
            Err(e) => Reloaded::Kept(e),
        }
    }

    /// Watches the files' folders (and, for symlinks such as certbot's `live/` ones, their
    /// targets' folders) and reloads on every change there and on every SIGHUP (`hangups`),
    /// until `shutdown`. Folders, not files: a rename over a file, or a symlink re-pointed,
    /// would end a watch on the file itself.
    pub fn watch(
        self: Arc<Self>,
        mut hangups: watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) -> notify::Result<()> {
        let (changed, mut changes) = mpsc::channel::<()>(1);
        let mut watcher = RecommendedWatcher::new(
            move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = changed.try_send(());
                }
            },
            notify::Config::default(),
        )?;
        for dir in watched_dirs(&self.files) {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the TLS certificate's folder; SIGHUP reloads it");
            }
        }
        tokio::spawn(async move {
            let _watcher = watcher; // watching ends when it drops
            // the last failure logged, so folder noise does not repeat it
            let mut last_error = String::new();
            loop {
                tokio::select! {
                    Some(()) = changes.recv() => {}
                    Ok(()) = hangups.changed() => {}
                    () = shutdown.cancelled() => return,
                }
                tokio::time::sleep(SETTLE).await;
                while changes.try_recv().is_ok() {}
                let store = self.clone();
                let Ok(outcome) = tokio::task::spawn_blocking(move || store.reload()).await else {
                    continue;
                };
                match outcome {
                    Reloaded::Unchanged => last_error.clear(),
                    Reloaded::Swapped { sha256 } => {
                        last_error.clear();
                        tracing::info!(
                            cert_file = %self.files.cert_file.display(),
                            sha256,
                            "TLS certificate reloaded: new handshakes present it"
                        );
                    }
                    Reloaded::Kept(e) => {
                        let message = e.to_string();
                        if message != last_error {
                            tracing::error!(
                                "TLS certificate not reloaded, the one in force stays: {message}"
                            );
                            last_error = message;
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

/// What a reload did.
#[derive(Debug)]
pub enum Reloaded {
    /// The files hold the pair in force.
    Unchanged,
    /// A new pair is in force.
    Swapped { sha256: String },
    /// The files do not hold a usable pair; the one in force stays.
    Kept(CertError),
}

/// The folders whose changes may change the pair: each file's, and each symlink target's.
fn watched_dirs(files: &TlsFiles) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for file in [&files.cert_file, &files.key_file] {
        let resolved = std::fs::canonicalize(file).ok();
        for path in std::iter::once(file.clone()).chain(resolved) {
            if let Some(dir) = path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir.to_path_buf()
                };
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (TlsFiles, String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert_file, cert.pem()).unwrap();
        std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
        (files, cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_good_pair_loads_and_each_broken_one_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let provider = provider();
        let (good, cert_pem, _) = pair(dir.path(), "a.example");
        let (other, _, other_key) = pair(dir.path(), "b.example");
        assert!(load_pair(&good, &provider).is_ok());

        let err = |files: &TlsFiles| load_pair(files, &provider).unwrap_err().to_string();
        let mismatched = TlsFiles {
            cert_file: good.cert_file.clone(),
            key_file: other.key_file.clone(),
        };
        let e = err(&mismatched);
        assert!(e.contains("does not belong to the certificate"), "{e}");
        assert!(e.starts_with(&other.key_file.display().to_string()), "{e}");

        let missing = TlsFiles {
            cert_file: dir.path().join("none.crt"),
            key_file: good.key_file.clone(),
        };
        assert!(err(&missing).contains("none.crt: cannot read"));

        let key_as_cert = dir.path().join("key-as-cert.pem");
        std::fs::write(&key_as_cert, &other_key).unwrap();
        let e = err(&TlsFiles {
            cert_file: key_as_cert,
            key_file: good.key_file.clone(),
        });
        assert!(e.contains("holds no certificate"), "{e}");

        let cert_as_key = dir.path().join("cert-as-key.pem");
        std::fs::write(&cert_as_key, &cert_pem).unwrap();
        let e = err(&TlsFiles {
            cert_file: good.cert_file.clone(),
            key_file: cert_as_key,
        });
        assert!(e.contains("no PEM private key"), "{e}");

        let truncated = dir.path().join("truncated.pem");
        std::fs::write(&truncated, &cert_pem[..cert_pem.len() / 2]).unwrap();
        let e = err(&TlsFiles {
            cert_file: truncated,
            key_file: good.key_file.clone(),
        });
        assert!(e.contains("not a PEM certificate chain"), "{e}");
    }

    #[test]
    fn a_reload_swaps_a_new_pair_in_and_keeps_the_old_one_over_a_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _, _) = pair(dir.path(), "a.example");
        let store = CertStore::load(files.clone()).unwrap();
        let first = store.current();
        assert!(matches!(store.reload(), Reloaded::Unchanged));

        let (next, _, _) = pair(dir.path(), "b.example");
        std::fs::copy(&next.cert_file, &files.cert_file).unwrap();
        // a half-renewed pair: the new certificate beside the old key
        assert!(matches!(
            store.reload(),
            Reloaded::Kept(CertError::Mismatch { .. })
        ));
        assert_eq!(store.current().cert, first.cert);
        std::fs::copy(&next.key_file, &files.key_file).unwrap();
        assert!(matches!(store.reload(), Reloaded::Swapped { .. }));
        assert_ne!(store.current().cert, first.cert);
    }
}
