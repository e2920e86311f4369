//! The acceptor with certificates from our own tool: mTLS handshakes, peer
//! certificates visible to tonic, refused clients, and reload on renewal.

use super::*;
use crate::ca::{CaDir, LeafSpec, Validity};
use crate::identity::TrustDomain;
use rustls::pki_types::ServerName;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_stream::StreamExt as _;
use tonic::transport::server::Connected as _;

struct Pki {
    dir: tempfile::TempDir,
    ca: CaDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaDir::new(dir.path().join("certs"));
        let td = TrustDomain::new("example.org").unwrap();
        let now = SystemTime::now();
        ca.init(
            &td,
            Validity::starting_at(now, crate::ca::profile::ROOT_TTL),
            false,
        )
        .unwrap();
        ca.intermediate(Validity::starting_at(
            now,
            crate::ca::profile::INTERMEDIATE_TTL,
        ))
        .unwrap();
        let pki = Pki { dir, ca };
        pki.issue("portcullis", &["localhost"]);
        pki.issue("envoy", &[]);
        pki
    }

    fn issue(&self, name: &str, dns: &[&str]) {
        let id = TrustDomain::new("example.org")
            .unwrap()
            .service("default", name)
            .unwrap();
        let spec = LeafSpec::new(id, dns.iter().map(|d| d.to_string()).collect()).unwrap();
        let validity = Validity::starting_at(SystemTime::now(), Duration::from_secs(3600));
        self.ca.issue(&spec, validity, &self.out(name)).unwrap();
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server_files(&self) -> TlsConfig {
        TlsConfig {
            cert: self.out("portcullis").join("chain.pem"),
            key: self.out("portcullis").join("key.pem"),
            client_ca: Some(self.ca.bundle()),
        }
    }

    /// A client trusting this PKI's bundle, presenting `identity`'s certificate
    /// if given.
    fn client(&self, identity: Option<&str>) -> tokio_rustls::TlsConnector {
        self.client_trusting(identity, self)
    }

    /// A client with `identity` from this PKI, trusting `server`'s bundle.
    fn client_trusting(&self, identity: Option<&str>, server: &Pki) -> tokio_rustls::TlsConnector {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(server.ca.bundle()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.out(name).join("chain.pem"))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(self.out(name).join("key.pem")).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

async fn listen(
    acceptor: &Arc<TlsAcceptor>,
) -> (
    std::net::SocketAddr,
    ReceiverStream<Result<TlsStream<TcpStream>, Infallible>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, acceptor.incoming(listener))
}

/// Connects, handshakes, and round-trips a byte (TLS 1.3 reports a refused client
/// certificate only on the first read).
async fn exchange(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut byte)).await {
        Ok(Ok(1)) => {}
        Ok(Ok(_)) => return Err("closed".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("timed out".into()),
    }
    let (_, session) = tls.get_ref();
    Ok(session.peer_certificates().unwrap_or_default().to_vec())
}

/// Echoes one byte on every accepted connection; returns the accepted streams'
/// peer certificates as tonic sees them.
fn serve(
    mut incoming: ReceiverStream<Result<TlsStream<TcpStream>, Infallible>>,
) -> tokio::sync::mpsc::UnboundedReceiver<Option<usize>> {
    let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(mut stream)) = incoming.next().await {
            let peer_certs = stream.connect_info().peer_certs().map(|c| c.len());
            let _ = seen_tx.send(peer_certs);
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                if stream.read_exact(&mut byte).await.is_ok() {
                    let _ = stream.write_all(&byte).await;
                    let _ = stream.flush().await;
                }
            });
        }
    });
    seen_rx
}

#[tokio::test]
async fn mtls_client_is_accepted_and_tonic_sees_its_certificate() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::new(&pki.server_files()).unwrap();
    let (addr, incoming) = listen(&acceptor).await;
    let mut seen = serve(incoming);
    exchange(&pki.client(Some("envoy")), addr).await.unwrap();
    // chain.pem: the leaf and the intermediate.
    assert_eq!(seen.recv().await.unwrap(), Some(2));
}

#[tokio::test]
async fn client_without_certificate_or_from_another_ca_is_refused_and_accepting_goes_on() {
    let pki = Pki::new();
    let other = Pki::new();
    let acceptor = TlsAcceptor::new(&pki.server_files()).unwrap();
    let (addr, incoming) = listen(&acceptor).await;
    let mut seen = serve(incoming);
    assert!(
        exchange(&pki.client(None), addr).await.is_err(),
        "no client cert"
    );
    // A client of another CA that trusts our server: refused by our verifier.
    let foreign = other.client_trusting(Some("envoy"), &pki);
    assert!(
        exchange(&foreign, addr).await.is_err(),
        "foreign client cert"
    );
    // Plain bytes instead of a ClientHello.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    // The loop still accepts good clients.
    exchange(&pki.client(Some("envoy")), addr).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), Some(2));
    assert!(
        seen.try_recv().is_err(),
        "only the good client was handed over"
    );
}

#[tokio::test]
async fn renewed_certificates_are_served_without_restart_and_bad_ones_are_not() {
    let pki = Pki::new();
    let acceptor = TlsAcceptor::new(&pki.server_files()).unwrap();
    let (addr, incoming) = listen(&acceptor).await;
    let _seen = serve(incoming);
    let client = pki.client(Some("envoy"));
    let before = exchange(&client, addr).await.unwrap();

    assert!(
        !acceptor.reload_if_changed().unwrap(),
        "nothing changed yet"
    );
    pki.issue("portcullis", &["localhost"]);
    assert!(acceptor.reload_if_changed().unwrap());
    let after = exchange(&client, addr).await.unwrap();
    assert_ne!(before[0], after[0], "the renewed certificate is served");

    // A key that does not match: the reload fails, the last good config stays.
    std::fs::copy(
        pki.out("envoy").join("key.pem"),
        pki.out("portcullis").join("key.pem"),
    )
    .unwrap();
    assert!(matches!(
        acceptor.reload_if_changed(),
        Err(TlsError::Identity(_))
    ));
    let still = exchange(&client, addr).await.unwrap();
    assert_eq!(still[0], after[0]);
}

#[test]
fn unusable_files_say_which_and_why() {
    let pki = Pki::new();
    let mut files = pki.server_files();
    files.key = pki.out("envoy").join("key.pem");
    let err = server_config(&files).unwrap_err();
    assert_eq!(err.key(), "key");
    files = pki.server_files();
    files.client_ca = Some(pki.out("portcullis").join("key.pem"));
    assert_eq!(server_config(&files).unwrap_err().key(), "client_ca");
    files = pki.server_files();
    files.cert = pki.out("portcullis").join("key.pem");
    assert_eq!(server_config(&files).unwrap_err().key(), "cert");
}
