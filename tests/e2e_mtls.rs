//! End to end, mTLS with certificates from our own tool (certs/README.md, issue 5):
//!
//! ```text
//! client ──mTLS (client SVID)──► Envoy ──► EchoUpstream
//!                                  │ ext_authz over mTLS (Envoy's SVID)
//!                                  ▼
//!                              portcullis (server.tls with client_ca)
//! ```
//!
//! Envoy's listener presents a portcullis-issued server certificate and requires
//! client certificates that chain to our bundle; it reports the client's URI SAN
//! (access log `%DOWNSTREAM_PEER_URI_SAN%`, and the XFCC header it forwards). A
//! client certificate from another CA, or none, is refused. portcullis' gRPC
//! listener requires Envoy's client certificate: a real Check goes through it; a
//! plaintext connection, a TLS one without a certificate, and an Envoy without a
//! client certificate are refused. Needs Envoy (`scripts/test`, or `ENVOY_BIN`).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::pki::{tls_client, TestPki};
use support::{free_port, EchoUpstream, Envoy, Portcullis, PortcullisConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const VIDEOS: &str = "spiffe://example.org/ns/default/sa/videos";
const PORTCULLIS: &str = "spiffe://example.org/ns/default/sa/portcullis";

/// How Envoy connects to portcullis.
#[derive(Clone, Copy, PartialEq)]
enum ToPortcullis {
    /// mTLS with Envoy's own SVID, portcullis verified by its SPIFFE ID.
    Mtls,
    /// TLS, but no client certificate.
    TlsWithoutClientCert,
}

/// An Envoy bootstrap: a downstream-mTLS listener in front of `upstream`, with
/// ext_authz to portcullis at `portcullis` over TLS.
fn mtls_bootstrap(
    listener: SocketAddr,
    admin: SocketAddr,
    portcullis: SocketAddr,
    upstream: SocketAddr,
    pki: &TestPki,
    access_log: &Path,
    to_portcullis: ToPortcullis,
) -> String {
    let certs = pki.certs();
    let front = certs.join("front");
    let envoy = certs.join("envoy");
    let bundle = pki.bundle();
    let client_cert = match to_portcullis {
        ToPortcullis::Mtls => format!(
            "tls_certificates:\n              - certificate_chain: {{ filename: {} }}\n                private_key: {{ filename: {} }}\n            ",
            envoy.join("chain.pem").display(),
            envoy.join("key.pem").display()
        ),
        ToPortcullis::TlsWithoutClientCert => String::new(),
    };
    format!(
        r#"
static_resources:
  listeners:
    - name: mtls
      address:
        socket_address: {{ address: {listener_ip}, port_value: {listener_port} }}
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:
                tls_certificates:
                  - certificate_chain: {{ filename: {front_chain} }}
                    private_key: {{ filename: {front_key} }}
                validation_context:
                  trusted_ca: {{ filename: {bundle} }}
          filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: mtls
                forward_client_cert_details: SANITIZE_SET
                set_current_client_cert_details: {{ uri: true }}
                access_log:
                  - name: envoy.access_loggers.file
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
                      path: {access_log}
                      log_format:
                        text_format_source:
                          inline_string: "peer=%DOWNSTREAM_PEER_URI_SAN% path=%REQ(:PATH)% status=%RESPONSE_CODE%\n"
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: upstream }}
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      grpc_service:
                        envoy_grpc: {{ cluster_name: portcullis }}
                        timeout: 2s
                      failure_mode_allow: false
                      status_on_error: {{ code: ServiceUnavailable }}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: portcullis
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: localhost
          common_tls_context:
            {client_cert}validation_context:
              trusted_ca: {{ filename: {bundle} }}
              match_typed_subject_alt_names:
                - san_type: URI
                  matcher: {{ exact: "{PORTCULLIS}" }}
      load_assignment:
        cluster_name: portcullis
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {portcullis_ip}, port_value: {portcullis_port} }}
    - name: upstream
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: upstream
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {upstream_ip}, port_value: {upstream_port} }}
admin:
  address:
    socket_address: {{ address: {admin_ip}, port_value: {admin_port} }}
"#,
        listener_ip = listener.ip(),
        listener_port = listener.port(),
        admin_ip = admin.ip(),
        admin_port = admin.port(),
        portcullis_ip = portcullis.ip(),
        portcullis_port = portcullis.port(),
        upstream_ip = upstream.ip(),
        upstream_port = upstream.port(),
        front_chain = front.join("chain.pem").display(),
        front_key = front.join("key.pem").display(),
        bundle = bundle.display(),
        access_log = access_log.display(),
    )
}

/// Our mesh: a CA with Envoy's server SVID (`front`, DNS localhost), Envoy's
/// client SVID towards portcullis (`envoy`), portcullis' SVID, and a caller.
fn mesh_pki() -> TestPki {
    let pki = TestPki::new("example.org");
    pki.issue("front", &["localhost"]);
    pki.issue("envoy", &[]);
    pki.issue("portcullis", &["localhost"]);
    pki.issue("videos", &[]);
    pki
}

/// portcullis with `server.tls` from `pki`, requiring client certificates.
async fn start_portcullis(pki: &TestPki) -> Portcullis {
    let certs = pki.certs().join("portcullis");
    let jwks =
        support::JwksServer::start(&[&support::SigningKey::generate(support::FIRST_KID)]).await;
    let config = PortcullisConfig::user_traffic(jwks.uri()).with_tls(
        &certs.join("chain.pem"),
        &certs.join("key.pem"),
        Some(&pki.bundle()),
    );
    let portcullis = Portcullis::start(&config).await;
    // The JWKS server may stop: these tests present no user tokens.
    drop(jwks);
    portcullis
}

async fn start_envoy(
    pki: &TestPki,
    portcullis: SocketAddr,
    upstream: SocketAddr,
    to_portcullis: ToPortcullis,
) -> (Envoy, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let access_log = dir.path().join("access.log");
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = mtls_bootstrap(
        listener,
        admin,
        portcullis,
        upstream,
        pki,
        &access_log,
        to_portcullis,
    );
    (
        Envoy::start_bootstrap(dir, &yaml, listener, admin).await,
        access_log,
    )
}

/// Waits for `needle` in the file at `path` (Envoy flushes its access log
/// asynchronously).
async fn wait_for_line(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in the access log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `needle` in portcullis' log.
async fn wait_for_portcullis_log(portcullis: &Portcullis, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !portcullis.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in portcullis' log:\n{}",
            portcullis.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_accepts_our_client_certificates_reports_the_peer_and_checks_with_portcullis_over_mtls(
) {
    support::envoy::envoy_bin();
    let pki = mesh_pki();
    let upstream = EchoUpstream::start().await;
    let portcullis = start_portcullis(&pki).await;
    let (envoy, access_log) = start_envoy(
        &pki,
        portcullis.grpc_addr(),
        upstream.addr(),
        ToPortcullis::Mtls,
    )
    .await;
    let videos = tls_client(&pki.bundle(), Some(&pki.certs().join("videos")));

    // Allowed by the `public` rule: the Check went to portcullis over mTLS and
    // the request reached the upstream, with Envoy's account of the caller.
    let response = envoy
        .get("/public/hello")
        .over_tls(videos.clone())
        .send()
        .await;
    assert_eq!(response.status, 200, "{response}\n{}", envoy.log());
    let seen = response.upstream().expect("answered by the upstream");
    let xfcc = seen.header("x-forwarded-client-cert").unwrap_or_default();
    assert!(xfcc.contains(&format!("URI={VIDEOS}")), "XFCC: {xfcc:?}");
    let line = wait_for_line(&access_log, "path=/public/hello").await;
    assert_eq!(line, format!("peer={VIDEOS} path=/public/hello status=200"));

    // Denied by portcullis itself: the caller is the videos workload (its
    // client SVID, which Envoy reports as `source.principal`), and no rule lets a
    // service read user videos — a 403 with portcullis' JSON body proves the
    // answer came from portcullis through the TLS listener.
    let response = envoy.get("/api/videos").over_tls(videos).send().await;
    assert_eq!(response.status, 403, "{response}");
    assert!(response.upstream().is_none());
    assert_eq!(response.json()["error"], "forbidden", "{response}");

    // A certificate from another CA (same trust domain name) is refused by Envoy.
    let other = TestPki::new("example.org");
    let stranger = other.issue("videos", &[]);
    let refused = envoy
        .get("/public/hello")
        .over_tls(tls_client(&pki.bundle(), Some(&stranger)))
        .try_send()
        .await;
    assert!(
        refused.is_err(),
        "a foreign client certificate got {refused:?}"
    );
    // So is a client without any certificate.
    let refused = envoy
        .get("/public/hello")
        .over_tls(tls_client(&pki.bundle(), None))
        .try_send()
        .await;
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );
    assert_eq!(
        upstream.seen().len(),
        1,
        "only the first request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portcullis_grpc_listener_requires_a_client_certificate_from_our_ca() {
    let pki = mesh_pki();
    let portcullis = start_portcullis(&pki).await;
    let addr = portcullis.grpc_addr();
    let bundle = std::fs::read_to_string(pki.bundle()).unwrap();
    let health = |channel: tonic::transport::Channel| async move {
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|response| response.into_inner().status)
    };
    let tls = |identity: Option<&str>| {
        let mut config = tonic::transport::ClientTlsConfig::new()
            .domain_name("localhost")
            .ca_certificate(tonic::transport::Certificate::from_pem(&bundle));
        if let Some(name) = identity {
            let dir = pki.certs().join(name);
            config = config.identity(tonic::transport::Identity::from_pem(
                std::fs::read(dir.join("chain.pem")).unwrap(),
                std::fs::read(dir.join("key.pem")).unwrap(),
            ));
        }
        tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(config)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
    };

    // With Envoy's certificate: served.
    let channel = tls(Some("envoy")).connect().await.expect("mTLS connect");
    assert_eq!(
        health(channel).await.unwrap(),
        ServingStatus::Serving as i32
    );

    // Plaintext h2c: refused.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5));
    let result = match plain.connect().await {
        Ok(channel) => health(channel).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(result.is_err(), "plaintext got {result:?}");

    // TLS without a client certificate: refused.
    let result = match tls(None).connect().await {
        Ok(channel) => health(channel).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(result.is_err(), "no client certificate got {result:?}");

    // A client certificate of another CA: refused.
    let other = TestPki::new("example.org");
    let stranger = other.issue("envoy", &[]);
    let config = tonic::transport::ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(tonic::transport::Certificate::from_pem(&bundle))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(stranger.join("chain.pem")).unwrap(),
            std::fs::read(stranger.join("key.pem")).unwrap(),
        ));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(config)
        .unwrap()
        .timeout(Duration::from_secs(5));
    let result = match endpoint.connect().await {
        Ok(channel) => health(channel).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(
        result.is_err(),
        "a foreign client certificate got {result:?}"
    );

    // Every refusal was logged, and the listener still serves.
    let channel = tls(Some("envoy"))
        .connect()
        .await
        .expect("mTLS connect after refusals");
    assert_eq!(
        health(channel).await.unwrap(),
        ServingStatus::Serving as i32
    );
    wait_for_portcullis_log(&portcullis, "TLS handshake failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_without_a_client_certificate_cannot_reach_portcullis_and_fails_closed() {
    support::envoy::envoy_bin();
    let pki = mesh_pki();
    let upstream = EchoUpstream::start().await;
    let portcullis = start_portcullis(&pki).await;
    let (envoy, _log) = start_envoy(
        &pki,
        portcullis.grpc_addr(),
        upstream.addr(),
        ToPortcullis::TlsWithoutClientCert,
    )
    .await;
    let videos = tls_client(&pki.bundle(), Some(&pki.certs().join("videos")));
    let response = envoy.get("/public/hello").over_tls(videos).send().await;
    assert_eq!(response.status, 503, "{response}");
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
    // The refusal is logged by the handshake task, maybe just after Envoy's 503.
    wait_for_portcullis_log(&portcullis, "TLS handshake failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_server_certificate_is_served_without_restart() {
    let pki = mesh_pki();
    let portcullis = start_portcullis(&pki).await;
    let addr = portcullis.grpc_addr();
    let serial = || async {
        let connector = tls_client(&pki.bundle(), Some(&pki.certs().join("envoy")));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let before = serial().await;
    support::pki::portcullis_ok(&[
        "cert",
        "renew",
        "--out",
        pki.certs().join("portcullis").to_str().unwrap(),
        "--if-within",
        "0%",
        "--dir",
        pki.certs_str(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if serial().await != before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served:\n{}",
            portcullis.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        portcullis.log().contains("TLS certificates reloaded"),
        "{}",
        portcullis.log()
    );
}
