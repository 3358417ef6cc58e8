//! The TLS side of DoT and DoH upstreams: which roots are trusted (the system's, plus
//! `[upstream] ca_file`), and one connect-and-handshake that checks the server's certificate
//! against the name configured for it.

use std::{net::SocketAddr, path::Path, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::exchange::ExchangeError;

/// The certificates of `[upstream] ca_file`; `Err` says why it cannot be used.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read [upstream] ca_file {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("[upstream] ca_file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "[upstream] ca_file {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// Client settings shared by every encrypted upstream: the system's roots and the `ca_file`
/// ones, TLS 1.2 and 1.3, `alpn` offered (`h2` for DoH; nothing for DoT, which RFC 7858 runs
/// without ALPN).
pub fn client_config(ca_file: Option<&Path>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for cert in load_ca_file(path)? {
            roots.add(cert).map_err(|e| {
                format!(
                    "[upstream] ca_file {}: unusable certificate: {e}",
                    path.display()
                )
            })?;
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted certificates for encrypted upstreams: the system has none (install ca-certificates) and [upstream] ca_file is not set".into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name the certificate must hold, as rustls wants it (checked when the config was read).
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string()).map_err(|e| format!("{name:?}: {e}"))
}

/// A TCP connection to `addr` with a finished TLS handshake, the certificate checked for
/// `name`. Every failure is the server's (or the path's): `ExchangeError::Connect` with why.
pub async fn connect(
    addr: SocketAddr,
    name: &ServerName<'static>,
    config: &Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, ExchangeError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| ExchangeError::Connect(format!("TCP connect: {e}")))?;
    tcp.set_nodelay(true)
        .map_err(|e| ExchangeError::Connect(format!("TCP setup: {e}")))?;
    TlsConnector::from(config.clone())
        .connect(name.clone(), tcp)
        .await
        .map_err(|e| ExchangeError::Connect(format!("TLS handshake: {e}")))
}
