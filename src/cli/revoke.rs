//! `portcullis revoke` (docs/revocation.md): revokes a token, a subject or a
//! session on a running portcullis, or lists the revocations in force, through
//! the admin API over mTLS. The client presents `DIR/chain.pem` + `DIR/key.pem`
//! and verifies the server's chain against `DIR/bundle.pem`, then its SPIFFE ID
//! (the URI SAN, not a DNS name: portcullis is addressed by IP as often as by
//! name): `--server-id` when given, else — with a warning on stderr — any SVID
//! of the trust domain named by the bundle's first root. Every root of the
//! bundle anchors the chain; only that one trust domain names the server.

use anyhow::Context as _;
use portcullis::admin_pb::admin_client::AdminClient;
use portcullis::admin_pb::revoke_request::Target;
use portcullis::admin_pb::{ListRevocationsRequest, Revocation, RevokeRequest};
use portcullis::ca::inspect::{parse_pem_certs, rfc3339, uri_sans};
use portcullis::identity::mtls::svid_of_der;
use portcullis::identity::{SpiffeId, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

/// What to do on the server.
pub enum Action {
    Revoke { target: Target, ttl: Duration },
    List,
}

/// Where the server is and how to reach it.
pub struct Connection<'a> {
    /// `HOST:PORT` of the gRPC listener.
    pub server: &'a str,
    /// A `cert issue` output directory: chain.pem, key.pem, bundle.pem.
    pub cert: &'a Path,
    /// The SPIFFE ID the server must present.
    pub server_id: Option<&'a str>,
}

pub fn revoke(connection: &Connection<'_>, action: Action) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(connection, action))
}

async fn run(connection: &Connection<'_>, action: Action) -> anyhow::Result<ExitCode> {
    let tls = client_config(connection)?;
    let connector = MtlsConnector {
        tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        server: connection.server.to_owned(),
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", connection.server))
        .with_context(|| format!("--server {}: expected HOST:PORT", connection.server))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_with_connector(connector)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {}: {}", connection.server, chain(&e)))?;
    let mut admin = AdminClient::new(channel);
    let refused = |status: tonic::Status| {
        anyhow::anyhow!(
            "{} refused: {:?}: {}",
            connection.server,
            status.code(),
            status.message()
        )
    };
    match action {
        Action::Revoke { target, ttl } => {
            let ttl_seconds = u32::try_from(ttl.as_secs())
                .ok()
                .filter(|s| *s > 0)
                .context("--ttl must be between 1s and 365d")?;
            let response = admin
                .revoke(RevokeRequest {
                    target: Some(target),
                    ttl_seconds,
                })
                .await
                .map_err(refused)?
                .into_inner();
            if let Some(revocation) = response.revocation {
                println!("revoked {}", describe(&revocation));
            }
        }
        Action::List => {
            let response = admin
                .list_revocations(ListRevocationsRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            for revocation in &response.revocations {
                println!("{}", describe(revocation));
            }
            eprintln!("{} revocation(s) in force", response.revocations.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(revocation: &Revocation) -> String {
    let at = |ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
    format!(
        "{} {} since {} until {} by {}",
        revocation.kind,
        revocation.value,
        at(revocation.revoked_at_unix_ms),
        at(revocation.expires_at_unix_ms),
        revocation.by
    )
}

/// An error and its sources, on one line (tonic's own message is "transport error").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The client's TLS config: its SVID as client certificate, the server checked
/// by [`SpiffeServerVerifier`].
fn client_config(connection: &Connection<'_>) -> anyhow::Result<rustls::ClientConfig> {
    let dir = connection.cert;
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} (--cert names a `portcullis cert issue` output directory)",
                path.display()
            )
        })
    };
    let chain: Vec<CertificateDer<'static>> = parse_pem_certs(&read("chain.pem")?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("chain.pem").display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{}: no certificate in it",
        dir.join("chain.pem").display()
    );
    let key = PrivateKeyDer::from_pem_slice(&read("key.pem")?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("key.pem").display()))?;
    let roots = parse_pem_certs(&read("bundle.pem")?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("bundle.pem").display()))?;
    let expected = match connection.server_id {
        Some(id) => Expected::Id(SpiffeId::new(id).context("--server-id")?),
        None => {
            let td = roots
                .first()
                .and_then(|root| uri_sans(root).ok())
                .and_then(|uris| uris.into_iter().find_map(|u| TrustDomain::new(&u).ok()))
                .context(
                    "the bundle's root names no trust domain (spiffe://TD): pass --server-id",
                )?;
            eprintln!(
                "warning: without --server-id, any SVID of {td} that verifies against {} is taken for the server; pass --server-id spiffe://{td}/... to name the one portcullis",
                dir.join("bundle.pem").display(),
                td = td.as_str()
            );
            Expected::TrustDomain(td)
        }
    };
    let anchors = roots
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(root).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", dir.join("bundle.pem").display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = SpiffeServerVerifier {
        anchors,
        expected,
        provider: Arc::clone(&provider),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .context("chain.pem and key.pem do not make a TLS identity")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Who the server must be.
#[derive(Debug)]
enum Expected {
    Id(SpiffeId),
    TrustDomain(TrustDomain),
}

/// Verifies the server's chain to the bundle (webpki, server-auth usage), then
/// that its SPIFFE ID is the expected one. The DNS name the client dialled is
/// not checked: an SVID names a workload, not a host.
#[derive(Debug)]
struct SpiffeServerVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    expected: Expected,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let leaf = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("the server certificate: {e:?}")))?;
        leaf.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            rustls::Error::General(format!(
                "the server certificate does not verify to the bundle: {e:?}"
            ))
        })?;
        let id = svid_of_der(end_entity)
            .map_err(|e| rustls::Error::General(format!("the server certificate: {e}")))?;
        let accepted = match &self.expected {
            Expected::Id(want) => id == *want,
            Expected::TrustDomain(td) => id.is_member_of(td),
        };
        if !accepted {
            return Err(rustls::Error::General(format!(
                "the server is {id}, not {}",
                match &self.expected {
                    Expected::Id(want) => want.to_string(),
                    Expected::TrustDomain(td) => format!("an SVID of {}", td.as_str()),
                }
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Dials `server` over TCP and TLS for tonic, whatever URI it is asked for.
#[derive(Clone)]
struct MtlsConnector {
    tls: tokio_rustls::TlsConnector,
    server: String,
}

type Io = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower_service::Service<http::Uri> for MtlsConnector {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Io, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let (tls, server) = (self.tls.clone(), self.server.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(&server).await?;
            tcp.set_nodelay(true)?;
            // SNI only: the verifier checks the SPIFFE ID, not this name.
            let host = server
                .rsplit_once(':')
                .map_or(server.as_str(), |(host, _)| host)
                .trim_matches(|c| c == '[' || c == ']');
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = tls.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}
