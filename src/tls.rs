//! TLS for portcullis' own gRPC listener (docs/configuration.md): rustls with the
//! aws-lc-rs provider, the certificate chain and key from PEM files, and with
//! `client_ca` a required, verified client certificate (Envoy → portcullis mTLS).
//!
//! The files are re-read when they change (a poller compares their modification
//! time, size and inode), so `portcullis cert renew` needs no restart: every new
//! connection takes the current `ServerConfig`; established ones keep theirs. A
//! reload that fails keeps the previous config and says why. A failed handshake
//! is logged and the connection dropped; it never stops the accept loop.
//!
//! This room touches the files named in the config and the listener, nothing else.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// A client that has not finished its handshake by then is dropped, so slow or
/// silent connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the gRPC server to take them.
const ACCEPT_BACKLOG: usize = 64;

/// Why a TLS config could not be built from the files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{path}: no PEM CERTIFICATE in it: give the server certificate (chain.pem: leaf, then intermediate)")]
    NoCertificate { path: PathBuf },
    /// The key file holds no usable private key.
    #[error("{path}: no usable private key (PEM PKCS#8, SEC1 or PKCS#1): {reason}")]
    Key { path: PathBuf, reason: String },
    /// The client CA bundle is unusable.
    #[error("{path}: not a usable CA bundle for client certificates: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    /// rustls refused the certificate and key (for instance a key of another certificate).
    #[error("the certificate and key do not make a TLS identity: {0} (does the key belong to the certificate?)")]
    Identity(rustls::Error),
}

impl TlsError {
    /// The `server.tls` key the error is about, for config errors with a line.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { .. } | TlsError::NoCertificate { .. } => "cert",
            TlsError::Key { .. } | TlsError::Identity(_) => "key",
            TlsError::ClientCa { .. } => "client_ca",
        }
    }
}

/// `server.tls`: the files of the gRPC listener's TLS identity, absolute or
/// relative to the working directory (the config's own relative paths are
/// resolved against its directory). Checked to load at validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain, leaf first (e.g. `certs/portcullis/chain.pem`).
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// Roots that client certificates must chain to; `Some` requires one (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Builds the rustls server config from the files: HTTP/2 ALPN (gRPC), and with
/// `client_ca` every client must present a certificate that chains to it.
pub fn server_config(files: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: files.cert.clone(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Identity)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let bad = |reason: String| TlsError::ClientCa {
                path: path.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read(path)?) {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no PEM CERTIFICATE in it".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Identity)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// What identifies one version of a file: modification time, size, inode.
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

/// The listener's TLS side: the current server config, swapped on reload.
pub struct TlsAcceptor {
    files: TlsConfig,
    current: ArcSwap<ServerConfig>,
    /// The files' stamp when `current` was built, and the last one that failed.
    stamps: Mutex<(Stamp, Option<Stamp>)>,
}

impl TlsAcceptor {
    /// Loads the files; fails when they do not make a server config.
    pub fn new(files: &TlsConfig) -> Result<Arc<TlsAcceptor>, TlsError> {
        let stamp = stamp(files);
        let config = server_config(files)?;
        Ok(Arc::new(TlsAcceptor {
            files: files.clone(),
            current: ArcSwap::from_pointee(config),
            stamps: Mutex::new((stamp, None)),
        }))
    }

    /// The config new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Rebuilds the config if a file changed since the last build. `Ok(true)`:
    /// swapped; `Ok(false)`: nothing changed; `Err`: the old config stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.files);
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if now == stamps.0 {
            return Ok(false);
        }
        match server_config(&self.files) {
            Ok(config) => {
                self.current.store(Arc::new(config));
                *stamps = (now, None);
                Ok(true)
            }
            Err(e) => {
                // Not recorded as built: the next poll tries again (a renewal
                // writes the key and the certificate one after the other).
                stamps.1 = Some(now);
                Err(e)
            }
        }
    }

    /// Polls the files every `every` and reloads on change; logs each outcome once.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let acceptor = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let failed_before = acceptor
                    .stamps
                    .lock()
                    .map(|s| s.1.clone())
                    .unwrap_or_default();
                match acceptor.reload_if_changed() {
                    Ok(true) => tracing::info!(
                        cert = %acceptor.files.cert.display(),
                        "gRPC listener TLS certificates reloaded"
                    ),
                    Ok(false) => {}
                    Err(error) => {
                        let failed_now = acceptor
                            .stamps
                            .lock()
                            .map(|s| s.1.clone())
                            .unwrap_or_default();
                        if failed_now != failed_before {
                            tracing::warn!(%error, "gRPC listener TLS reload failed; still serving the previous certificates");
                        }
                    }
                }
            }
        })
    }

    /// Accepts TCP connections on `listener` and yields them once their TLS
    /// handshake succeeds, each handshake in its own task. Failed handshakes are
    /// logged and dropped. Accepting stops when the stream is dropped.
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, Infallible>> {
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_BACKLOG);
        let acceptor = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, go on.
                        tracing::warn!(%error, "gRPC listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let config = acceptor.current();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%peer, %error, "gRPC listener: TLS handshake failed; connection dropped");
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "gRPC listener: TLS handshake timed out; connection dropped");
                        }
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

fn stamp(files: &TlsConfig) -> Stamp {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some((meta.modified().ok()?, meta.len(), inode))
    })
    .collect()
}

#[cfg(test)]
mod tests;
