//! End to end, one case table through every way a gateway asks portcullis
//! (docs/gateways.md): Envoy's gRPC `ext_authz` (`mesh/envoy/front-proxy.yaml`),
//! Envoy's HTTP `ext_authz` (`mesh/envoy/front-proxy-http.yaml`, `/check/envoy`),
//! nginx `auth_request` (`mesh/nginx/`, `/check/nginx`) and Caddy `forward_auth`
//! (`mesh/caddy/Caddyfile`, `/check/forward`), each the real program from the
//! shipped config, in front of the echo upstream, with the real portcullis
//! binary deciding.
//!
//! ```text
//! test ──HTTP/1.1──► gateway ──► EchoUpstream
//!                      │ gRPC Check, or HTTP /check/<dialect>
//!                      ▼
//!                   portcullis ──► JwksServer, UsersService
//! ```
//!
//! Every gateway must give every row of `tests/support/cases.rs` its answer, but
//! for documented differences (docs/gateways.md): nginx cannot remove a client's
//! context header portcullis does not set by default (it cannot remove by
//! prefix) and drops an underscored header name where the others refuse the
//! request; Caddy escapes a raw `#` (`%23`) where the others refuse it; Envoy
//! over HTTP answers a 503 of portcullis with its own empty
//! 503. Each also fails closed when portcullis is gone. Needs Envoy, nginx and Caddy
//! (`scripts/test` installs them).

mod support;

use support::cases::{self, Tokens, UsersService, Want};
use support::gateways::{self, Gateway};
use support::{
    EchoUpstream, Envoy, JwksServer, Portcullis, PortcullisConfig, RequestBuilder, SigningKey,
    FIRST_KID,
};

/// portcullis, its JWKS and users service, and the upstream behind the gateway.
struct Backends {
    portcullis: Portcullis,
    upstream: EchoUpstream,
    tokens: Tokens,
    _jwks: JwksServer,
    _users: UsersService,
}

impl Backends {
    async fn start() -> Self {
        let key = SigningKey::generate(FIRST_KID);
        let jwks = JwksServer::start(&[&key]).await;
        let users = UsersService::start().await;
        let upstream = EchoUpstream::start().await;
        let config = PortcullisConfig::user_traffic(jwks.uri())
            .with_policy(&cases::policy())
            .with_users(&users.users_yaml())
            // The gateways connect from 127.0.0.1, exactly: their
            // X-Forwarded-For is believed, and rows sent from 127.0.0.2, ...
            // are clients, never proxies.
            .with_server("  trusted_proxies: [127.0.0.1/32]\n");
        Self {
            portcullis: Portcullis::start(&config).await,
            upstream,
            tokens: Tokens::new(&key),
            _jwks: jwks,
            _users: users,
        }
    }

    /// Runs every row of the table through the gateway at `addr`; a row named
    /// in `limits` (a documented limit of that gateway) wants what it says
    /// instead, or is left out (`None`).
    async fn run_table(
        &self,
        gateway: &str,
        addr: std::net::SocketAddr,
        limits: &[(&str, Option<Want>)],
    ) {
        for mut case in cases::cases() {
            match limits.iter().find(|(name, _)| *name == case.name) {
                None => {}
                Some((_, None)) => continue,
                Some((_, Some(want))) => case.want = *want,
            }
            cases::run_case(gateway, addr, &self.upstream, &case, &self.tokens).await;
        }
    }

    /// portcullis is gone: the gateway at `addr` answers `status` and lets
    /// nothing through.
    async fn assert_fails_closed(self, gateway: &str, addr: std::net::SocketAddr, status: u16) {
        drop(self.portcullis);
        let seen = self.upstream.seen().len();
        let response = RequestBuilder::new(addr, http::Method::GET, "/public/x")
            .send()
            .await;
        assert_eq!(
            response.status, status,
            "{gateway} without portcullis: {response}"
        );
        assert_eq!(
            self.upstream.seen().len(),
            seen,
            "{gateway}: reached the upstream unchecked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_front_proxy() {
    let backends = Backends::start().await;
    let envoy = Envoy::start(backends.portcullis.grpc_addr(), backends.upstream.addr()).await;
    backends.run_table("envoy grpc", envoy.addr(), &[]).await;
    backends
        .assert_fails_closed("envoy grpc", envoy.addr(), 503)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_service() {
    let backends = Backends::start().await;
    let envoy =
        gateways::envoy_http(backends.portcullis.http_addr(), backends.upstream.addr()).await;
    // Envoy takes any 5xx of an HTTP authorization service for a failure of
    // the service: its own 503 (`status_on_error`) without portcullis' body.
    let limits = [
        (cases::DIRECTORY_DOWN, Some(Want::Refused(503))),
        (cases::DIRECTORY_BACK, Some(Want::Refused(503))),
    ];
    backends
        .run_table("envoy http", envoy.addr(), &limits)
        .await;
    backends
        .assert_fails_closed("envoy http", envoy.addr(), 503)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request() {
    let backends = Backends::start().await;
    let nginx = Gateway::nginx(backends.portcullis.http_addr(), backends.upstream.addr()).await;
    // nginx drops a header name with `_` (`underscores_in_headers off`):
    // the request goes on without it.
    let limits = [
        (cases::NGINX_LIMIT, None),
        (cases::UNDERSCORED, Some(Want::Reached(Some("USER")))),
    ];
    backends.run_table("nginx", nginx.addr(), &limits).await;
    backends
        .assert_fails_closed("nginx", nginx.addr(), 503)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth() {
    let backends = Backends::start().await;
    let caddy = Gateway::caddy(backends.portcullis.http_addr(), backends.upstream.addr()).await;
    // Go escapes a raw `#` as `%23` for portcullis and the app alike.
    let limits = [(cases::RAW_FRAGMENT, Some(Want::Denied(401)))];
    backends.run_table("caddy", caddy.addr(), &limits).await;
    // Caddy answers a forward_auth it cannot reach with 502.
    backends
        .assert_fails_closed("caddy", caddy.addr(), 502)
        .await;
}
