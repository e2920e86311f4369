//! The Envoy bootstraps of the reference points: the listener settings of
//! `mesh/envoy/front-proxy.yaml` (edge HCM: path normalization, slash merging,
//! underscore headers refused), one route answered by Envoy itself
//! (`direct_response`, so the upstream costs nothing), and one of:
//! no auth, native `jwt_authn` (with or without its JWT cache), ext_authz to
//! a gRPC cluster (null-authz or portcullis), optionally sending only the headers
//! portcullis reads (`allowed_headers`), or the portcullis dynamic module.

use std::net::SocketAddr;

/// What sits in front of the route.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    /// Native `jwt_authn` with the JWKS inline; `cache`: its verified-JWT cache.
    JwtAuthn {
        issuer: String,
        jwks: String,
        cache: bool,
    },
    /// ext_authz over gRPC (HTTP/2, plaintext loopback) to `authz`.
    ExtAuthz {
        authz: Endpoint,
        allowed_headers: bool,
    },
    /// The portcullis dynamic module (docs/in-proxy.md) reading the
    /// `portcullis.yaml` at `config`, with the ext_authz filter after it as its
    /// fallback to `fallback`, as `mesh/envoy/front-proxy-module.yaml` has them.
    /// Envoy finds the library through `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.
    Module {
        config: std::path::PathBuf,
        fallback: Endpoint,
    },
}

/// Where the ext_authz cluster's one endpoint is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Tcp(SocketAddr),
    /// A Unix domain socket (`server.grpc_listen: unix:PATH`).
    Pipe(std::path::PathBuf),
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::Tcp(addr)
    }
}

impl Endpoint {
    fn address(&self) -> String {
        match self {
            Endpoint::Tcp(addr) => format!(
                "socket_address: {{ address: {}, port_value: {} }}",
                addr.ip(),
                addr.port()
            ),
            Endpoint::Pipe(path) => format!("pipe: {{ path: {} }}", path.display()),
        }
    }
}

/// The `allowed_headers` block of the shipped front proxy
/// (`mesh/envoy/front-proxy.yaml`): the headers portcullis reads — credentials,
/// the request id, XFCC, Svix and every header under a stripped prefix
/// (portcullis removes those it sees, so it must see them all). Measured with
/// what we ship, not a copy of it.
pub fn shipped_allowed_headers() -> String {
    const FRONT_PROXY: &str = include_str!("../../mesh/envoy/front-proxy.yaml");
    let block: Vec<&str> = FRONT_PROXY
        .lines()
        .skip_while(|l| l.trim() != "allowed_headers:")
        .take_while(|l| {
            let t = l.trim();
            t == "allowed_headers:" || t == "patterns:" || t.starts_with("- {")
        })
        .collect();
    assert!(
        block.len() > 2,
        "mesh/envoy/front-proxy.yaml has an allowed_headers block"
    );
    format!("\n{}", block.join("\n"))
}

pub fn bootstrap(listener: SocketAddr, admin: SocketAddr, auth: &Auth) -> String {
    let (filter, cluster) = match auth {
        Auth::None => (String::new(), String::new()),
        Auth::JwtAuthn {
            issuer,
            jwks,
            cache,
        } => {
            let cache = if *cache {
                "\n                          jwt_cache_config: { jwt_cache_size: 1000 }"
            } else {
                ""
            };
            (
                format!(
                    r#"
                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        clerk:
                          issuer: {issuer}
                          from_headers: [{{ name: authorization, value_prefix: "Bearer " }}]
                          local_jwks:
                            inline_string: '{jwks}'{cache}
                      rules:
                        - match: {{ prefix: / }}
                          requires: {{ provider_name: clerk }}"#
                ),
                String::new(),
            )
        }
        Auth::ExtAuthz {
            authz,
            allowed_headers,
        } => (
            ext_authz_filter(
                "",
                &if *allowed_headers {
                    shipped_allowed_headers()
                } else {
                    String::new()
                },
            ),
            authz_cluster(authz),
        ),
        Auth::Module { config, fallback } => (
            format!(
                r#"
                  - name: portcullis
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
                      dynamic_module_config: {{ name: portcullis_envoy_module, do_not_close: true }}
                      filter_name: portcullis
                      filter_config:
                        "@type": type.googleapis.com/google.protobuf.StringValue
                        value: |
                          config: {config}
                          fallback: ext_authz{ext_authz}"#,
                config = config.display(),
                // Runs only when the module has not decided.
                ext_authz = ext_authz_filter(
                    r#"
                      filter_enabled_metadata:
                        filter: portcullis
                        path: [{ key: decided }]
                        value: { string_match: { exact: "true" } }
                        invert: true"#,
                    &shipped_allowed_headers(),
                ),
            ),
            authz_cluster(fallback),
        ),
    };
    format!(
        r#"static_resources:
  listeners:
    - name: front
      address:
        socket_address: {{ address: {lip}, port_value: {lport} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: front
                use_remote_address: true
                xff_num_trusted_hops: 0
                preserve_external_request_id: true
                normalize_path: true
                merge_slashes: true
                path_with_escaped_slashes_action: REJECT_REQUEST
                common_http_protocol_options:
                  headers_with_underscores_action: REJECT_REQUEST
                request_headers_timeout: 10s
                route_config:
                  name: front
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }}
                http_filters:{filter}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{cluster}
overload_manager:
  resource_monitors:
    - name: envoy.resource_monitors.global_downstream_max_connections
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
        max_active_downstream_connections: 50000
admin:
  address:
    socket_address: {{ address: {aip}, port_value: {aport} }}
"#,
        lip = listener.ip(),
        lport = listener.port(),
        aip = admin.ip(),
        aport = admin.port(),
    )
}

/// The ext_authz filter asking the `authz` cluster, with `extra` settings and
/// `allowed_headers` (a block, or empty for every header).
fn ext_authz_filter(extra: &str, allowed_headers: &str) -> String {
    format!(
        r#"
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3{extra}
                      grpc_service:
                        envoy_grpc: {{ cluster_name: authz }}
                        timeout: 1s
                      failure_mode_allow: false
                      status_on_error: {{ code: ServiceUnavailable }}{allowed_headers}"#
    )
}

/// The gRPC cluster `authz` with its one endpoint.
fn authz_cluster(authz: &Endpoint) -> String {
    format!(
        r#"
  clusters:
    - name: authz
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: authz
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    {address}"#,
        address = authz.address(),
    )
}
