//! End to end, Istio-shaped (docs/istio.md): real Envoys configured the way istiod
//! configures an ingress gateway and sidecars for portcullis as a CUSTOM ext_authz
//! provider (tests/support/istio.rs says what istiod generates), with SVIDs of
//! trust domain `cluster.local` from our own tool, and the real portcullis binary
//! deciding with one policy.
//!
//! ```text
//! user ──HTTP──► gateway (CUSTOM) ──mTLS, gateway SVID──► channels' sidecar ──► app
//! videos/comments app ──► its sidecar ──mTLS, own SVID──► channels' sidecar (CUSTOM) ──► app
//!                             every CUSTOM hop ──ext_authz, mTLS──► portcullis
//! ```
//!
//! The same case table ([`support::istio::cases`]) goes through the plain
//! `mesh/envoy/` configs (front proxy; channels and caller sidecars) and through
//! the Istio shape, and both must give the table's answers; the table lives in
//! tests/support/istio.rs beside the Istio configs, and its policy is
//! `e2e_user_traffic.rs`'s plus one east-west rule. With the shipped workload
//! policy the gateway's traffic is decided at the gateway only (the app sees no
//! `x-caller-spiffe-id`); a second test removes that exception and shows the
//! gateway becoming the caller at the workload. Without portcullis every CUSTOM
//! hop answers 503 (fail closed). Needs Envoy (`scripts/test`, or `ENVOY_BIN`).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use support::envoy::{render_template, SIDECAR_CHANNELS, SIDECAR_VIDEOS};
use support::istio::{
    self, Credential, CustomPolicy, Entrances, Outcome, Provider, ProxyAddrs, Tokens, GATEWAY,
    PLAIN_SIDECAR_IDS,
};
use support::pki::TestPki;
use support::{
    free_port, EchoUpstream, Envoy, JwksServer, Portcullis, PortcullisConfig, SigningKey, FIRST_KID,
};

const CALLERS: [&str; 2] = ["videos", "comments"];

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// portcullis for this mesh: the Clerk issuer at `jwks`, `policy`, `mtls` as in
/// an Istio mesh plus `extra_mtls` (lines under `mtls:`); with `tls`, its gRPC
/// listener takes only clients with a certificate of the mesh CA.
fn config(
    jwks: &JwksServer,
    pki: &TestPki,
    tls: bool,
    policy: &str,
    extra_mtls: &str,
) -> PortcullisConfig {
    let config = PortcullisConfig::user_traffic(jwks.uri())
        .with_policy(policy)
        .with_yaml(istio::MTLS_YAML)
        .with_yaml(extra_mtls);
    if !tls {
        return config;
    }
    let certs = pki.certs().join("portcullis");
    config.with_tls(
        &certs.join("chain.pem"),
        &certs.join("key.pem"),
        Some(&pki.bundle()),
    )
}

async fn start(yaml: &str, listener: SocketAddr, admin: SocketAddr) -> Envoy {
    Envoy::start_bootstrap(tempfile::tempdir().unwrap(), yaml, listener, admin).await
}

/// The plain mesh/envoy shape: the front proxy asking `front_portcullis`, the
/// channels sidecar and the callers' sidecars (their templates moved to trust
/// domain cluster.local) asking `tls_portcullis`.
struct PlainShape {
    _envoys: Vec<Envoy>,
    entrances: Entrances,
}

impl PlainShape {
    async fn start(
        pki: &TestPki,
        front_portcullis: SocketAddr,
        tls_portcullis: SocketAddr,
        app: SocketAddr,
    ) -> Self {
        let front = Envoy::start(front_portcullis, app).await;
        let channels_addr = local();
        let channels_admin = local();
        let channels = render_template(
            "sidecar-channels.yaml",
            SIDECAR_CHANNELS,
            &[
                (addr("0.0.0.0:9443"), channels_addr),
                (addr("127.0.0.1:8002"), app),
                (addr("127.0.0.1:9191"), tls_portcullis),
                (addr("127.0.0.1:15010"), channels_admin),
            ],
            &PLAIN_SIDECAR_IDS,
            &pki.certs(),
        );
        let mut envoys = vec![front, start(&channels, channels_addr, channels_admin).await];
        let mut callers = BTreeMap::new();
        for caller in CALLERS {
            let (listener, admin) = (local(), local());
            let own = format!("certs/{caller}/");
            let yaml = render_template(
                "sidecar-videos.yaml",
                SIDECAR_VIDEOS,
                &[
                    (addr("127.0.0.1:15001"), listener),
                    (addr("127.0.0.1:9443"), channels_addr),
                    (addr("127.0.0.1:15000"), admin),
                ],
                &[("certs/videos/", own.as_str()), PLAIN_SIDECAR_IDS[1]],
                &pki.certs(),
            );
            envoys.push(start(&yaml, listener, admin).await);
            callers.insert(caller, listener);
        }
        let edge = envoys[0].addr();
        Self {
            _envoys: envoys,
            entrances: Entrances { edge, callers },
        }
    }
}

/// The Istio shape: the ingress gateway, channels' sidecar with the workload
/// policy `workloads`, the callers' sidecars; every CUSTOM hop asks `portcullis`.
struct IstioShape {
    _envoys: Vec<Envoy>,
    entrances: Entrances,
}

impl IstioShape {
    async fn start(
        pki: &TestPki,
        workloads: &CustomPolicy,
        portcullis: SocketAddr,
        app: SocketAddr,
    ) -> Self {
        let provider = Provider::shipped();
        let inbound = ProxyAddrs {
            listener: local(),
            admin: local(),
            upstream: app,
            portcullis,
        };
        let channels = istio::inbound_sidecar_yaml(pki, &provider, workloads, &inbound);
        let mut envoys = vec![start(&channels, inbound.listener, inbound.admin).await];
        let gateway = ProxyAddrs {
            listener: local(),
            admin: local(),
            upstream: inbound.listener,
            portcullis,
        };
        let yaml = istio::gateway_yaml(pki, &provider, &CustomPolicy::ingress(), &gateway);
        envoys.push(start(&yaml, gateway.listener, gateway.admin).await);
        let mut callers = BTreeMap::new();
        for caller in CALLERS {
            let (listener, admin) = (local(), local());
            let yaml = istio::outbound_sidecar_yaml(pki, caller, listener, admin, inbound.listener);
            envoys.push(start(&yaml, listener, admin).await);
            callers.insert(caller, listener);
        }
        Self {
            _envoys: envoys,
            entrances: Entrances {
                edge: gateway.listener,
                callers,
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_shaped_proxies_decide_as_the_plain_envoy_configs() {
    support::envoy::envoy_bin(); // Fail fast when Envoy is missing.
    let pki = istio::mesh_pki();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let app = EchoUpstream::start().await;
    let tokens = Tokens::new(&key);
    let cases = istio::cases();
    let tls_portcullis = Portcullis::start(&config(&jwks, &pki, true, &istio::policy(), "")).await;

    let mut plain: Vec<Outcome> = Vec::new();
    {
        let front_portcullis =
            Portcullis::start(&config(&jwks, &pki, false, &istio::policy(), "")).await;
        let shape = PlainShape::start(
            &pki,
            front_portcullis.grpc_addr(),
            tls_portcullis.grpc_addr(),
            app.addr(),
        )
        .await;
        for case in &cases {
            plain.push(istio::run_case("mesh/envoy", case, &shape.entrances, &tokens).await);
        }
    }

    let shape = IstioShape::start(
        &pki,
        &CustomPolicy::workloads(),
        tls_portcullis.grpc_addr(),
        app.addr(),
    )
    .await;
    let mut table = String::from("\ncase | mesh/envoy | Istio-shaped\n");
    for (case, plain) in cases.iter().zip(&plain) {
        let istio = istio::run_case("Istio-shaped", case, &shape.entrances, &tokens).await;
        table.push_str(&format!("{} | {plain} | {istio}\n", case.name));
        assert_eq!(
            &istio, plain,
            "{}: the two shapes answer differently",
            case.name
        );
    }
    println!("{table}");

    // Fail closed, with the provider's statusOnError: without portcullis nothing
    // passes, at the gateway or east-west.
    drop(tls_portcullis);
    let token = tokens.token(Credential::User("USER")).unwrap();
    let at_gateway =
        support::RequestBuilder::new(shape.entrances.edge, http::Method::GET, "/api/videos")
            .bearer(token)
            .send()
            .await;
    assert_eq!(
        at_gateway.status, 503,
        "portcullis down, at the gateway: {at_gateway}"
    );
    assert!(at_gateway.upstream().is_none(), "{at_gateway}");
    let videos = shape.entrances.callers["videos"];
    let east_west = support::RequestBuilder::new(videos, http::Method::GET, "/internal/channels/7")
        .send()
        .await;
    assert_eq!(
        east_west.status, 503,
        "portcullis down, east-west: {east_west}"
    );
    assert!(east_west.upstream().is_none(), "{east_west}");
}

/// A workload policy that also covers the ingress gateway's traffic (the
/// shipped one leaves it out): portcullis is asked at the gateway and again at
/// the workload, where the caller is the gateway acting for the user it relays,
/// so the user counts only under a `forward_user` rule naming the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_traffic_checked_again_at_the_workload() {
    gateway_traffic_at_the_workload("").await;
}

/// The same with the gateway in `mtls.xfcc_trusted_from`: the workload's sidecar
/// appends its own account of the gateway to XFCC, which names the gateway
/// itself, so the caller is still the gateway (no client certificate relayed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_gateway_behind_a_sidecar_is_still_the_caller() {
    gateway_traffic_at_the_workload(&format!("  xfcc_trusted_from: [{GATEWAY}]\n")).await;
}

async fn gateway_traffic_at_the_workload(extra_mtls: &str) {
    support::envoy::envoy_bin();
    let pki = istio::mesh_pki();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let app = EchoUpstream::start().await;
    let tokens = Tokens::new(&key);
    let policy = format!(
        "{}  - name: videos-via-gateway\n    to: {{ paths: [/api/videos, /api/videos/**], methods: [GET] }}\n    from: {{ services: [{GATEWAY}], users: {{ roles: [USER, ADMIN] }} }}\n    forward_user: true\n",
        istio::policy()
    );
    let portcullis = Portcullis::start(&config(&jwks, &pki, true, &policy, extra_mtls)).await;
    let everyone = CustomPolicy::workloads().matching_everyone();
    let shape = IstioShape::start(&pki, &everyone, portcullis.grpc_addr(), app.addr()).await;
    let get = |path: &str, role: &'static str| {
        support::RequestBuilder::new(shape.entrances.edge, http::Method::GET, path)
            .bearer(tokens.token(Credential::User(role)).unwrap())
    };

    let response = get("/api/videos", "USER").send().await;
    assert_eq!(response.status, 200, "{response}");
    let seen = response.upstream().expect("the app answered");
    assert_eq!(seen.header("x-user-id"), Some(tokens.user.sub.as_str()));
    assert_eq!(seen.header("x-user-role"), Some("USER"));
    assert_eq!(
        seen.header("x-caller-spiffe-id"),
        Some(GATEWAY),
        "at the workload, the gateway is the caller"
    );

    // The gateway allows it (rule `admin`); the workload does not: no rule lets
    // the gateway relay an ADMIN to the admin API.
    let response = get("/api/admin/users", "ADMIN").send().await;
    assert_eq!(response.status, 403, "{response}");
    assert!(response.upstream().is_none(), "{response}");
}
