//! Envoy configured the way istiod configures it for portcullis as a CUSTOM
//! ext_authz provider, and the case table every mesh shape must decide alike.
//!
//! What istiod generates (Istio 1.2x, `pilot/pkg/security/authz/builder` and the
//! listener builders), reproduced here as static bootstraps:
//!
//! - **The provider** (`meshConfig.extensionProviders[].envoyExtAuthzGrpc`) becomes an
//!   `envoy.filters.http.ext_authz` filter whose `grpc_service` is the Service's
//!   outbound cluster `outbound|PORT||HOST` (authority `outbound_.PORT_._.HOST`),
//!   with `timeout`, `failure_mode_allow: failOpen`, `status_on_error:
//!   statusOnError` and **no** `allowed_headers`: every request header is sent.
//!   The cluster is reached with Istio mutual TLS (the proxy's own SVID).
//! - **`action: CUSTOM` policies** become an RBAC filter in front of it with only
//!   `shadow_rules` (action `DENY`, one policy `istio-ext-authz-ns[NS]-policy[NAME]-rule[N]`
//!   per rule, `shadow_rules_stat_prefix: istio_ext_authz_`); the ext_authz filter
//!   runs only when that shadow engine matched (`filter_enabled_metadata` on
//!   `istio_ext_authz_shadow_effective_policy_id`, prefix `istio-ext-authz`).
//! - **The ingress gateway**: `use_remote_address: true`, XFF hops 0,
//!   `forward_client_cert_details: SANITIZE_SET` (`gatewayTopology`'s default) with
//!   `set_current_client_cert_details` subject, cert, DNS and URI — a client
//!   without a certificate leaves no XFCC at all — and mutual TLS with its own
//!   SVID (`.../sa/istio-ingressgateway-service-account`) to the workload.
//! - **A sidecar's inbound listener**: mutual TLS required, client certificates
//!   validated against the mesh root and the trust domain (`spiffe://TD/` prefix),
//!   `forward_client_cert_details: APPEND_FORWARD` with subject, DNS and URI — so
//!   the XFCC portcullis sees ends with the sidecar's own account of its direct peer
//!   (`By=<this workload>;...;URI=<the caller>`) — then the CUSTOM filters, then
//!   the app over loopback. ext_authz reports the caller's URI SAN as
//!   `source.principal` (istiod sets no `include_peer_certificate`).
//! - **A sidecar's outbound side**: plain HTTP from the app, mutual TLS with the
//!   workload's SVID to the destination, whose SPIFFE ID is checked.
//!
//! The provider and the CUSTOM rules are read from the shipped `mesh/istio/` files,
//! so the test proves what ships. Only the rule shapes those files use are
//! translated (no conditions, `source.principals`, `source.notPrincipals`): extend
//! [`shadow_principals`] when a shipped policy needs more.
//!
//! [`cases`] is the shared table: the same requests, with the same expected
//! answers, go through the plain `mesh/envoy/` configs and through these.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_yaml_ng::Value;

use super::pki::{portcullis_ok, TestPki};
use super::portcullis::USER_TRAFFIC_POLICY;
use super::{ClerkClaims, RequestBuilder, Response, SigningKey};

/// `mesh/istio/istio-operator.yaml`: the MeshConfig extension provider.
pub const ISTIO_OPERATOR: &str = include_str!("../../mesh/istio/istio-operator.yaml");
/// `mesh/istio/authorization-ingress.yaml`: CUSTOM at the ingress gateway.
pub const INGRESS_POLICY: &str = include_str!("../../mesh/istio/authorization-ingress.yaml");
/// `mesh/istio/authorization-workloads.yaml`: CUSTOM at the workloads.
pub const WORKLOAD_POLICY: &str = include_str!("../../mesh/istio/authorization-workloads.yaml");

/// Istio's default trust domain.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// The ingress gateway's identity (the service account of Istio's gateway chart).
pub const GATEWAY: &str =
    "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
/// portcullis' own identity (its pod's sidecar, in namespace `portcullis`).
pub const PORTCULLIS: &str = "spiffe://cluster.local/ns/portcullis/sa/portcullis";
/// The workload that receives user traffic from the gateway and east-west calls.
pub const CHANNELS: &str = "spiffe://cluster.local/ns/default/sa/channels";
/// A workload the policy lets call channels.
pub const VIDEOS: &str = "spiffe://cluster.local/ns/default/sa/videos";
/// A workload the policy does not let call channels.
pub const COMMENTS: &str = "spiffe://cluster.local/ns/default/sa/comments";

/// The one policy every shape is decided by: the user-traffic policy of
/// `e2e_user_traffic.rs` ([`USER_TRAFFIC_POLICY`]), plus videos (only) may call
/// channels' internal API.
pub fn policy() -> String {
    format!(
        "{USER_TRAFFIC_POLICY}  - name: channels-internal\n    to: {{ paths: [/internal/channels/**] }}\n    from: {{ services: [{VIDEOS}] }}\n"
    )
}

/// The `mtls:` section of portcullis in an Istio mesh (as in
/// `mesh/kubernetes/base/portcullis.yaml`). The harness' config keeps
/// `trust_domain: example.org`, so `cluster.local` is accepted as a federated
/// trust domain: for accepting and matching IDs the two are the same.
pub const MTLS_YAML: &str = "\
federated_trust_domains: [cluster.local]
mtls:
  identity_from: [source_principal, peer_certificate, xfcc]
";

/// The mesh's CA (trust domain `cluster.local`) with an SVID for portcullis
/// (`certs/portcullis`, DNS `localhost`), the gateway (`certs/gateway`), and the
/// workloads channels, videos and comments (`certs/NAME`).
pub fn mesh_pki() -> TestPki {
    let pki = TestPki::new(TRUST_DOMAIN);
    for (dir, id, dns) in [
        ("portcullis", PORTCULLIS, Some("localhost")),
        ("gateway", GATEWAY, None),
        ("channels", CHANNELS, None),
        ("videos", VIDEOS, None),
        ("comments", COMMENTS, None),
    ] {
        let out = pki.certs().join(dir);
        let out = out.to_str().expect("a UTF-8 path");
        let mut args = vec![
            "cert",
            "issue",
            "--spiffe-id",
            id,
            "--out",
            out,
            "--dir",
            pki.certs_str(),
        ];
        if let Some(dns) = dns {
            args.extend(["--dns", dns]);
        }
        portcullis_ok(&args);
    }
    pki
}

/// The `envoyExtAuthzGrpc` provider named `portcullis`, as shipped.
#[derive(Debug, Clone)]
pub struct Provider {
    pub service: String,
    pub port: u16,
    pub timeout: String,
    pub fail_open: bool,
    /// Envoy's `StatusCode` name for `statusOnError` (`None`: Envoy's default, 403).
    pub status_on_error: Option<&'static str>,
}

impl Provider {
    /// Reads the provider from `mesh/istio/istio-operator.yaml`.
    pub fn shipped() -> Self {
        let operator: Value = serde_yaml_ng::from_str(ISTIO_OPERATOR).expect("istio-operator.yaml");
        let providers = operator["spec"]["meshConfig"]["extensionProviders"]
            .as_sequence()
            .expect("spec.meshConfig.extensionProviders is a list");
        let provider = providers
            .iter()
            .find(|p| p["name"].as_str() == Some("portcullis"))
            .expect("an extension provider named portcullis");
        let grpc = &provider["envoyExtAuthzGrpc"];
        let status_on_error = grpc["statusOnError"].as_str().map(|code| match code {
            "503" => "ServiceUnavailable",
            "500" => "InternalServerError",
            "403" => "Forbidden",
            other => {
                panic!("statusOnError {other:?}: add its Envoy name in tests/support/istio.rs")
            }
        });
        Self {
            service: grpc["service"].as_str().expect("service").to_owned(),
            port: grpc["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .expect("port"),
            timeout: grpc["timeout"].as_str().unwrap_or("600s").to_owned(),
            fail_open: grpc["failOpen"].as_bool().unwrap_or(false),
            status_on_error,
        }
    }

    /// The outbound cluster istiod names after the Service.
    pub fn cluster(&self) -> String {
        outbound_cluster(self.port, &self.service)
    }
}

/// `outbound|PORT||HOST`, istiod's name for a Service port's cluster.
pub fn outbound_cluster(port: u16, host: &str) -> String {
    format!("outbound|{port}||{host}")
}

/// A CUSTOM `AuthorizationPolicy` as shipped, reduced to what istiod turns into
/// the shadow RBAC filter.
#[derive(Debug, Clone)]
pub struct CustomPolicy {
    pub namespace: String,
    pub name: String,
    /// One entry per rule: the RBAC `principals` of that shadow policy (YAML).
    pub rules: Vec<String>,
}

impl CustomPolicy {
    /// Parses a shipped policy; panics on anything but a CUSTOM policy for the
    /// `portcullis` provider with rules of the shapes this module translates.
    pub fn parse(file: &str, yaml: &str) -> Self {
        let policy: Value = serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            policy["kind"].as_str(),
            Some("AuthorizationPolicy"),
            "{file}"
        );
        assert_eq!(policy["spec"]["action"].as_str(), Some("CUSTOM"), "{file}");
        assert_eq!(
            policy["spec"]["provider"]["name"].as_str(),
            Some("portcullis"),
            "{file}: provider"
        );
        let rules = policy["spec"]["rules"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{file}: spec.rules"))
            .iter()
            .map(|rule| shadow_principals(file, rule))
            .collect();
        Self {
            namespace: policy["metadata"]["namespace"]
                .as_str()
                .expect("namespace")
                .to_owned(),
            name: policy["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_owned(),
            rules,
        }
    }

    /// The shipped ingress gateway policy.
    pub fn ingress() -> Self {
        Self::parse("authorization-ingress.yaml", INGRESS_POLICY)
    }

    /// The shipped workload policy.
    pub fn workloads() -> Self {
        Self::parse("authorization-workloads.yaml", WORKLOAD_POLICY)
    }

    /// The same policy with every rule matching every caller: what a workload
    /// policy without the gateway exception would generate.
    pub fn matching_everyone(mut self) -> Self {
        for rule in &mut self.rules {
            *rule = "[{ any: true }]".to_owned();
        }
        self
    }

    /// The RBAC filter istiod puts in front of ext_authz for this policy.
    fn rbac_filter(&self, indent: &str) -> String {
        let mut policies = String::new();
        for (i, principals) in self.rules.iter().enumerate() {
            policies.push_str(&format!(
                "{indent}        \"istio-ext-authz-ns[{ns}]-policy[{name}]-rule[{i}]\":\n\
                 {indent}          permissions: [{{ any: true }}]\n\
                 {indent}          principals: {principals}\n",
                ns = self.namespace,
                name = self.name,
            ));
        }
        format!(
            "{indent}- name: envoy.filters.http.rbac\n\
             {indent}  typed_config:\n\
             {indent}    \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\n\
             {indent}    shadow_rules:\n\
             {indent}      action: DENY\n\
             {indent}      policies:\n\
             {policies}\
             {indent}    shadow_rules_stat_prefix: istio_ext_authz_\n"
        )
    }
}

/// The RBAC principals of one CUSTOM rule: `[{ any: true }]` for a rule without
/// `from`, else the source principals (Istio writes them without `spiffe://`).
fn shadow_principals(file: &str, rule: &Value) -> String {
    let Some(map) = rule.as_mapping() else {
        panic!("{file}: a rule is not a map")
    };
    for key in map.keys() {
        assert_eq!(
            key.as_str(),
            Some("from"),
            "{file}: only `from` rules are translated (tests/support/istio.rs)"
        );
    }
    let Some(from) = rule["from"].as_sequence() else {
        return "[{ any: true }]".to_owned();
    };
    let id = |p: &Value| {
        format!(
            "{{ authenticated: {{ principal_name: {{ exact: \"spiffe://{}\" }} }} }}",
            p.as_str().expect("a principal")
        )
    };
    let mut alternatives = Vec::new();
    for entry in from {
        let source = &entry["source"];
        let mut ids = Vec::new();
        if let Some(list) = source["principals"].as_sequence() {
            let any: Vec<String> = list.iter().map(id).collect();
            ids.push(format!("{{ or_ids: {{ ids: [{}] }} }}", any.join(", ")));
        }
        if let Some(list) = source["notPrincipals"].as_sequence() {
            let any: Vec<String> = list.iter().map(id).collect();
            ids.push(format!(
                "{{ not_id: {{ or_ids: {{ ids: [{}] }} }} }}",
                any.join(", ")
            ));
        }
        let known = ["principals", "notPrincipals"];
        for key in source.as_mapping().expect("source is a map").keys() {
            assert!(
                known.contains(&key.as_str().unwrap_or_default()),
                "{file}: source.{key:?} is not translated (tests/support/istio.rs)"
            );
        }
        alternatives.push(format!("{{ and_ids: {{ ids: [{}] }} }}", ids.join(", ")));
    }
    format!("[{}]", alternatives.join(", "))
}

/// The certificate files of one identity (a directory of `mesh_pki`).
fn certs(pki: &TestPki, dir: &str) -> (String, String) {
    let dir = pki.certs().join(dir);
    let path = |f: &str| dir.join(f).display().to_string();
    (path("chain.pem"), path("key.pem"))
}

/// An `UpstreamTlsContext` as Istio's mutual TLS builds it: the proxy's SVID, the
/// mesh root, the destination's SPIFFE ID.
fn istio_mutual_upstream(pki: &TestPki, own: &str, peer: &str, sni: &str, indent: &str) -> String {
    let (chain, key) = certs(pki, own);
    format!(
        "{indent}transport_socket:\n\
         {indent}  name: envoy.transport_sockets.tls\n\
         {indent}  typed_config:\n\
         {indent}    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n\
         {indent}    sni: \"{sni}\"\n\
         {indent}    common_tls_context:\n\
         {indent}      tls_certificates:\n\
         {indent}        - certificate_chain: {{ filename: {chain} }}\n\
         {indent}          private_key: {{ filename: {key} }}\n\
         {indent}      validation_context:\n\
         {indent}        trusted_ca: {{ filename: {bundle} }}\n\
         {indent}        match_typed_subject_alt_names:\n\
         {indent}          - san_type: URI\n\
         {indent}            matcher: {{ exact: \"{peer}\" }}\n",
        bundle = pki.bundle().display(),
    )
}

/// The CUSTOM provider's ext_authz filter, as istiod generates it.
fn ext_authz_filter(provider: &Provider, indent: &str) -> String {
    let status = provider
        .status_on_error
        .map(|code| format!("{indent}    status_on_error: {{ code: {code} }}\n"))
        .unwrap_or_default();
    format!(
        "{indent}- name: envoy.filters.http.ext_authz\n\
         {indent}  typed_config:\n\
         {indent}    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz\n\
         {indent}    transport_api_version: V3\n\
         {indent}    grpc_service:\n\
         {indent}      envoy_grpc:\n\
         {indent}        cluster_name: \"{cluster}\"\n\
         {indent}        authority: \"{authority}\"\n\
         {indent}      timeout: {timeout}\n\
         {indent}    failure_mode_allow: {fail_open}\n\
         {status}\
         {indent}    filter_enabled_metadata:\n\
         {indent}      filter: envoy.filters.http.rbac\n\
         {indent}      path: [{{ key: istio_ext_authz_shadow_effective_policy_id }}]\n\
         {indent}      value: {{ string_match: {{ prefix: istio-ext-authz }} }}\n",
        cluster = provider.cluster(),
        authority = provider.cluster().replace('|', "_."),
        timeout = provider.timeout,
        fail_open = provider.fail_open,
    )
}

/// The provider's cluster: portcullis at `addr`, over HTTP/2 with Istio mutual
/// TLS from the proxy whose SVID is `certs/own`.
fn portcullis_cluster(pki: &TestPki, provider: &Provider, own: &str, addr: SocketAddr) -> String {
    let tls = istio_mutual_upstream(
        pki,
        own,
        PORTCULLIS,
        &provider.cluster().replace('|', "_."),
        "      ",
    );
    format!(
        "    - name: \"{cluster}\"\n\
         \x20     type: STATIC\n\
         \x20     connect_timeout: 1s\n\
         \x20     typed_extension_protocol_options:\n\
         \x20       envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n\
         \x20         \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n\
         \x20         explicit_http_config: {{ http2_protocol_options: {{}} }}\n\
         {tls}\
         \x20     load_assignment:\n\
         \x20       cluster_name: \"{cluster}\"\n\
         \x20       endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }} }}] }}]\n",
        cluster = provider.cluster(),
        ip = addr.ip(),
        port = addr.port(),
    )
}

fn admin(addr: SocketAddr) -> String {
    format!(
        "admin:\n  address: {{ socket_address: {{ address: {}, port_value: {} }} }}\n",
        addr.ip(),
        addr.port()
    )
}

/// Where one Istio-shaped proxy listens and what it talks to.
pub struct ProxyAddrs {
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    /// The next hop: the workload's sidecar (gateway, outbound) or the app (inbound).
    pub upstream: SocketAddr,
    /// portcullis' gRPC listener (TLS, client certificates from the mesh CA).
    pub portcullis: SocketAddr,
}

/// The ingress gateway: plain HTTP from clients, the `ingress` CUSTOM policy,
/// mutual TLS to channels' sidecar at `addrs.upstream`.
pub fn gateway_yaml(
    pki: &TestPki,
    provider: &Provider,
    ingress: &CustomPolicy,
    addrs: &ProxyAddrs,
) -> String {
    let destination = "channels.default.svc.cluster.local";
    let cluster = outbound_cluster(8080, destination);
    let tls = istio_mutual_upstream(
        pki,
        "gateway",
        CHANNELS,
        &cluster.replace('|', "_."),
        "      ",
    );
    format!(
        "\
static_resources:
  listeners:
    - name: 0.0.0.0_8080
      address: {{ socket_address: {{ address: {lip}, port_value: {lport} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: outbound_0.0.0.0_8080
                server_name: istio-envoy
                use_remote_address: true
                xff_num_trusted_hops: 0
                forward_client_cert_details: SANITIZE_SET
                set_current_client_cert_details: {{ subject: true, cert: true, dns: true, uri: true }}
                normalize_path: true
                route_config:
                  name: http.8080
                  virtual_hosts:
                    - name: \"*:80\"
                      domains: [\"*\"]
                      routes:
                        - match: {{ prefix: / }}
                          route: {{ cluster: \"{cluster}\", timeout: 0s }}
                http_filters:
{rbac}{ext_authz}                  - name: envoy.filters.http.router
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: \"{cluster}\"
      type: STATIC
      connect_timeout: 1s
{tls}      load_assignment:
        cluster_name: \"{cluster}\"
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {uip}, port_value: {uport} }} }} }} }}] }}]
{portcullis}{admin}",
        lip = addrs.listener.ip(),
        lport = addrs.listener.port(),
        uip = addrs.upstream.ip(),
        uport = addrs.upstream.port(),
        rbac = ingress.rbac_filter("                  "),
        ext_authz = ext_authz_filter(provider, "                  "),
        portcullis = portcullis_cluster(pki, provider, "gateway", addrs.portcullis),
        admin = admin(addrs.admin),
    )
}

/// channels' sidecar, inbound: mutual TLS required from any workload of the
/// trust domain, XFCC appended, the `workloads` CUSTOM policy, then the app at
/// `addrs.upstream` in plain HTTP.
pub fn inbound_sidecar_yaml(
    pki: &TestPki,
    provider: &Provider,
    workloads: &CustomPolicy,
    addrs: &ProxyAddrs,
) -> String {
    let (chain, key) = certs(pki, "channels");
    format!(
        "\
static_resources:
  listeners:
    - name: virtualInbound
      address: {{ socket_address: {{ address: {lip}, port_value: {lport} }} }}
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:
                tls_certificates:
                  - certificate_chain: {{ filename: {chain} }}
                    private_key: {{ filename: {key} }}
                validation_context:
                  trusted_ca: {{ filename: {bundle} }}
                  match_typed_subject_alt_names:
                    - san_type: URI
                      matcher: {{ prefix: \"spiffe://{TRUST_DOMAIN}/\" }}
          filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: inbound_0.0.0.0_8080
                server_name: istio-envoy
                use_remote_address: false
                forward_client_cert_details: APPEND_FORWARD
                set_current_client_cert_details: {{ subject: true, dns: true, uri: true }}
                normalize_path: true
                route_config:
                  name: inbound|8080||
                  virtual_hosts:
                    - name: inbound|http|8080
                      domains: [\"*\"]
                      routes:
                        - match: {{ prefix: / }}
                          route: {{ cluster: \"inbound|8080||\", timeout: 0s }}
                http_filters:
{rbac}{ext_authz}                  - name: envoy.filters.http.router
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: \"inbound|8080||\"
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: \"inbound|8080||\"
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {uip}, port_value: {uport} }} }} }} }}] }}]
{portcullis}{admin}",
        lip = addrs.listener.ip(),
        lport = addrs.listener.port(),
        uip = addrs.upstream.ip(),
        uport = addrs.upstream.port(),
        bundle = pki.bundle().display(),
        rbac = workloads.rbac_filter("                  "),
        ext_authz = ext_authz_filter(provider, "                  "),
        portcullis = portcullis_cluster(pki, provider, "channels", addrs.portcullis),
        admin = admin(addrs.admin),
    )
}

/// The outbound side of `caller`'s sidecar: plain HTTP from the app, mutual TLS
/// with the caller's SVID to channels' sidecar at `upstream`.
pub fn outbound_sidecar_yaml(
    pki: &TestPki,
    caller: &str,
    listener: SocketAddr,
    admin_addr: SocketAddr,
    upstream: SocketAddr,
) -> String {
    let cluster = outbound_cluster(8080, "channels.default.svc.cluster.local");
    let tls = istio_mutual_upstream(pki, caller, CHANNELS, &cluster.replace('|', "_."), "      ");
    format!(
        "\
static_resources:
  listeners:
    - name: 0.0.0.0_8080
      address: {{ socket_address: {{ address: {lip}, port_value: {lport} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: outbound_0.0.0.0_8080
                route_config:
                  name: \"8080\"
                  virtual_hosts:
                    - name: channels.default.svc.cluster.local:8080
                      domains: [\"*\"]
                      routes:
                        - match: {{ prefix: / }}
                          route: {{ cluster: \"{cluster}\", timeout: 0s }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: \"{cluster}\"
      type: STATIC
      connect_timeout: 1s
{tls}      load_assignment:
        cluster_name: \"{cluster}\"
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {uip}, port_value: {uport} }} }} }} }}] }}]
{admin}",
        lip = listener.ip(),
        lport = listener.port(),
        uip = upstream.ip(),
        uport = upstream.port(),
        admin = admin(admin_addr),
    )
}

/// Where a request enters the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// From the internet: the front proxy, or the ingress gateway.
    Edge,
    /// From a workload's app, through its sidecar, to channels (`videos`, `comments`).
    Caller(&'static str),
}

/// What the request carries to prove who sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    None,
    /// A valid Clerk session token of a user with this role (`USER`, `ADMIN`).
    User(&'static str),
    /// A USER token that expired two minutes ago.
    Expired,
    /// A USER token signed by a key the JWKS does not publish.
    UnknownKey,
}

/// What must happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The app answers, having received these verified headers (`None`: absent).
    Reached {
        user_role: Option<&'static str>,
        caller: Option<&'static str>,
    },
    /// portcullis refuses with this status; the app sees nothing.
    Denied(u16),
}

/// One row of the shared table.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub name: &'static str,
    pub via: Via,
    pub path: &'static str,
    pub credential: Credential,
    /// Headers the client adds, pretending to be someone.
    pub spoofed: &'static [(&'static str, &'static str)],
    pub want: Want,
}

const SPOOFED_ADMIN: &[(&str, &str)] = &[
    ("x-user-id", "admin"),
    ("x-user-role", "ADMIN"),
    (
        "x-caller-spiffe-id",
        "spiffe://cluster.local/ns/default/sa/videos",
    ),
];

/// The shared case table: user traffic at the edge, service calls east-west.
pub fn cases() -> Vec<Case> {
    use Credential::{Expired, UnknownKey, User};
    use Via::*;
    let user = |role| Want::Reached {
        user_role: Some(role),
        caller: None,
    };
    let service = |id| Want::Reached {
        user_role: None,
        caller: Some(id),
    };
    let anonymous = Want::Reached {
        user_role: None,
        caller: None,
    };
    vec![
        Case {
            name: "USER reads videos",
            via: Edge,
            path: "/api/videos",
            credential: User("USER"),
            spoofed: &[],
            want: user("USER"),
        },
        Case {
            name: "ADMIN uses the admin API",
            via: Edge,
            path: "/api/admin/users",
            credential: User("ADMIN"),
            spoofed: &[],
            want: user("ADMIN"),
        },
        Case {
            name: "anonymous on /public",
            via: Edge,
            path: "/public/index.html",
            credential: Credential::None,
            spoofed: &[],
            want: anonymous,
        },
        Case {
            name: "no token",
            via: Edge,
            path: "/api/videos",
            credential: Credential::None,
            spoofed: &[],
            want: Want::Denied(401),
        },
        Case {
            name: "expired token",
            via: Edge,
            path: "/api/videos",
            credential: Expired,
            spoofed: &[],
            want: Want::Denied(401),
        },
        Case {
            name: "token of an unknown key",
            via: Edge,
            path: "/api/videos",
            credential: UnknownKey,
            spoofed: &[],
            want: Want::Denied(401),
        },
        Case {
            name: "USER on the admin API",
            via: Edge,
            path: "/api/admin/users",
            credential: User("USER"),
            spoofed: &[],
            want: Want::Denied(403),
        },
        Case {
            name: "USER with spoofed x-user-role: ADMIN",
            via: Edge,
            path: "/api/videos",
            credential: User("USER"),
            spoofed: SPOOFED_ADMIN,
            want: user("USER"),
        },
        Case {
            name: "anonymous with spoofed identity headers",
            via: Edge,
            path: "/public/index.html",
            credential: Credential::None,
            spoofed: SPOOFED_ADMIN,
            want: anonymous,
        },
        Case {
            name: "spoofed x-user-role alone on the admin API",
            via: Edge,
            path: "/api/admin/users",
            credential: Credential::None,
            spoofed: SPOOFED_ADMIN,
            want: Want::Denied(401),
        },
        Case {
            name: "videos calls channels",
            via: Caller("videos"),
            path: "/internal/channels/7",
            credential: Credential::None,
            spoofed: &[],
            want: service(VIDEOS),
        },
        Case {
            name: "comments calls channels",
            via: Caller("comments"),
            path: "/internal/channels/7",
            credential: Credential::None,
            spoofed: &[],
            want: Want::Denied(403),
        },
        Case {
            name: "videos outside its rule",
            via: Caller("videos"),
            path: "/api/admin/users",
            credential: Credential::None,
            spoofed: &[],
            want: Want::Denied(403),
        },
        Case {
            name: "videos with spoofed user headers",
            via: Caller("videos"),
            path: "/internal/channels/7",
            credential: Credential::None,
            spoofed: SPOOFED_ADMIN,
            want: service(VIDEOS),
        },
        Case {
            name: "comments claiming to be videos",
            via: Caller("comments"),
            path: "/internal/channels/7",
            credential: Credential::None,
            spoofed: &[("x-caller-spiffe-id", VIDEOS)],
            want: Want::Denied(403),
        },
    ]
}

/// The tokens the table's credentials stand for, made once so every shape is
/// asked with the same ones.
pub struct Tokens {
    pub user: ClerkClaims,
    pub admin: ClerkClaims,
    signed: BTreeMap<&'static str, String>,
}

impl Tokens {
    /// Signs the table's tokens with `key` (the one the JWKS publishes).
    pub fn new(key: &SigningKey) -> Self {
        let user = ClerkClaims::user("USER");
        let admin = ClerkClaims::user("ADMIN");
        let stranger = SigningKey::generate("key-stranger");
        let signed = BTreeMap::from([
            ("USER", user.sign(key)),
            ("ADMIN", admin.sign(key)),
            ("expired", ClerkClaims::user("USER").expired().sign(key)),
            ("unknown-key", ClerkClaims::user("USER").sign(&stranger)),
        ]);
        Self {
            user,
            admin,
            signed,
        }
    }

    /// The token a credential stands for (`None` for [`Credential::None`]).
    pub fn token(&self, credential: Credential) -> Option<&str> {
        let name = match credential {
            Credential::None => return None,
            Credential::User(role) => role,
            Credential::Expired => "expired",
            Credential::UnknownKey => "unknown-key",
        };
        Some(
            self.signed
                .get(name)
                .unwrap_or_else(|| panic!("no token for {name}")),
        )
    }

    /// The subject of the user whose role is `role`.
    fn subject(&self, role: &str) -> &str {
        match role {
            "USER" => &self.user.sub,
            "ADMIN" => &self.admin.sub,
            other => panic!("no user with role {other}"),
        }
    }
}

/// Where a mesh shape takes requests in.
pub struct Entrances {
    pub edge: SocketAddr,
    /// The app-facing (outbound) listener of each caller's sidecar.
    pub callers: BTreeMap<&'static str, SocketAddr>,
}

/// What came back for one case, in the table's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: u16,
    /// Whether the app answered.
    pub reached: bool,
    pub user_id: Option<String>,
    pub user_role: Option<String>,
    pub caller: Option<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.reached {
            return write!(f, "{} (denied)", self.status);
        }
        write!(
            f,
            "{} x-user-role={} x-caller-spiffe-id={}",
            self.status,
            self.user_role.as_deref().unwrap_or("-"),
            self.caller.as_deref().unwrap_or("-")
        )
    }
}

/// Sends `case` into the shape at `entrances` and asserts the answer against the
/// case's `want` (a denial is portcullis' own JSON answer, a 401 with a Bearer
/// challenge; an allowed request carries exactly the verified headers).
pub async fn run_case(shape: &str, case: &Case, entrances: &Entrances, tokens: &Tokens) -> Outcome {
    let addr = match case.via {
        Via::Edge => entrances.edge,
        Via::Caller(name) => *entrances
            .callers
            .get(name)
            .unwrap_or_else(|| panic!("{shape}: no sidecar for {name}")),
    };
    let mut request =
        RequestBuilder::new(addr, http::Method::GET, case.path).header("host", "api.example.com");
    if let Some(token) = tokens.token(case.credential) {
        request = request.bearer(token);
    }
    for (name, value) in case.spoofed {
        request = request.header(name, value);
    }
    let response = request.send().await;
    let outcome = outcome(&response);
    let what = format!("{shape}: {}", case.name);
    match case.want {
        Want::Denied(status) => {
            assert_eq!(outcome.status, status, "{what}: {response}");
            assert!(!outcome.reached, "{what}: the app answered: {response}");
            let body = response.json();
            assert!(
                body["error"].is_string(),
                "{what}: not portcullis' deny body: {body}"
            );
            if status == 401 {
                let challenge = response.header("www-authenticate").unwrap_or_default();
                assert!(
                    challenge.starts_with("Bearer "),
                    "{what}: challenge {challenge:?}"
                );
            }
        }
        Want::Reached { user_role, caller } => {
            assert_eq!(outcome.status, 200, "{what}: {response}");
            assert!(outcome.reached, "{what}: not the app's answer: {response}");
            assert_eq!(
                outcome.user_role.as_deref(),
                user_role,
                "{what}: x-user-role"
            );
            let user_id = user_role.map(|role| tokens.subject(role));
            assert_eq!(outcome.user_id.as_deref(), user_id, "{what}: x-user-id");
            assert_eq!(
                outcome.caller.as_deref(),
                caller,
                "{what}: x-caller-spiffe-id"
            );
        }
    }
    outcome
}

fn outcome(response: &Response) -> Outcome {
    let seen = response.upstream();
    let header = |name: &str| {
        seen.as_ref()
            .and_then(|seen| seen.header(name))
            .map(str::to_owned)
    };
    Outcome {
        status: response.status,
        reached: seen.is_some(),
        user_id: header("x-user-id"),
        user_role: header("x-user-role"),
        caller: header("x-caller-spiffe-id"),
    }
}

/// `mesh/envoy/sidecar-*.yaml` use trust domain example.org and portcullis'
/// `default` namespace: the replacements that put them in this mesh (each must
/// occur in the template).
pub const PLAIN_SIDECAR_IDS: [(&str, &str); 2] = [
    ("spiffe://example.org/ns/default/sa/portcullis", PORTCULLIS),
    ("spiffe://example.org/", "spiffe://cluster.local/"),
];
