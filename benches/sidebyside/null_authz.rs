//! `null-authz`: the floor any tonic ext_authz server pays (BENCHMARKS.md).
//!
//! The same tonic version and server settings as portcullis (`src/server.rs`: a
//! default `tonic::transport::Server::builder()` on a plaintext TCP listener with
//! TCP_NODELAY, inside the same multi-thread tokio runtime `portcullis serve`
//! builds, with the same global allocator (jemalloc, set in
//! `examples/null_authz.rs`) and the same `tracing` subscriber at `info`:
//! without one, every span h2 and hyper open falls through to `log` and costs
//! ~4,000 instructions a Check, which would raise the floor), and a `Check` that
//! answers OK without looking at the request. Built as `examples/null_authz.rs`,
//! run by the benchmark harness as its own process so its CPU time can be read
//! apart.
//!
//! With `--verify-rs256 JWKS_FILE` it is the floor of scenario (b) instead: the
//! same server doing one bare RS256 verification (`jsonwebtoken::decode`, the
//! harness' "bare" cost) of the request's bearer token, and nothing else.
//!
//! With `--context-headers` its OK sets the four user-context headers portcullis
//! sets in scenario (a), with fixed values of the same lengths: what an authorizer
//! that passes a user context costs Envoy, apart from what deciding costs.

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

/// Always OK, or OK when the bearer token verifies.
pub struct NullAuthz {
    rs256: Option<(jsonwebtoken::DecodingKey, jsonwebtoken::Validation)>,
    /// Headers every OK sets (`--context-headers`).
    set: Vec<HeaderValueOption>,
}

/// The user context portcullis sets in scenario (a), values of the same lengths.
const CONTEXT_HEADERS: &[(&str, &str)] = &[
    ("x-user-id", "u-00000001"),
    ("x-user-role", "member"),
    ("x-user-channel-id", "ch-0000001"),
    ("x-user-clerk-id", "user_2abcdefghijklmnopqrstuvwx"),
];

#[tonic::async_trait]
impl Authorization for NullAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let allowed = self.rs256.as_ref().is_none_or(|(key, validation)| {
            bearer(request.get_ref()).is_some_and(|token| {
                jsonwebtoken::decode::<serde_json::Value>(token, key, validation).is_ok()
            })
        });
        Ok(Response::new(if allowed {
            CheckResponse {
                status: Some(rpc::Status::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: self.set.clone(),
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(rpc::Status {
                    code: 16,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse::default())),
                ..Default::default()
            }
        }))
    }
}

fn bearer(request: &CheckRequest) -> Option<&str> {
    let headers = &request
        .attributes
        .as_ref()?
        .request
        .as_ref()?
        .http
        .as_ref()?
        .headers;
    headers.get("authorization")?.strip_prefix("Bearer ")
}

const USAGE: &str = "usage: null_authz ADDR [--verify-rs256 JWKS_FILE | --context-headers]";

/// `null_authz ADDR [--verify-rs256 JWKS_FILE | --context-headers]`: serves on
/// ADDR until killed; prints `ready` once listening.
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args.next().ok_or(USAGE)?.parse()?;
    let mut authz = NullAuthz {
        rs256: None,
        set: Vec::new(),
    };
    match (args.next().as_deref(), args.next()) {
        (None, _) => {}
        (Some("--verify-rs256"), Some(file)) => {
            let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&std::fs::read(file)?)?;
            let jwk = jwks.keys.first().ok_or("the JWKS has no key")?;
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            validation.validate_aud = false;
            authz.rs256 = Some((jsonwebtoken::DecodingKey::from_jwk(jwk)?, validation));
        }
        (Some("--context-headers"), None) => {
            authz.set = CONTEXT_HEADERS
                .iter()
                .map(|(key, value)| HeaderValueOption {
                    header: Some(HeaderValue {
                        key: (*key).into(),
                        value: (*value).into(),
                        ..Default::default()
                    }),
                    append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    ..Default::default()
                })
                .collect();
        }
        _ => return Err(USAGE.into()),
    };
    // As `portcullis serve` logs (src/main.rs).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("ready {}", listener.local_addr()?);
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(authz))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await?;
        Ok(())
    })
}
