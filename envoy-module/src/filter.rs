//! The in-proxy pipeline: portcullis' [`Authorizer`] built from the same
//! `portcullis.yaml` and policy as the server, asked on Envoy's worker thread, and
//! its [`Answer`] turned into Envoy callbacks — the adapter, like
//! `src/ext_authz/mod.rs` is for gRPC — and the guard placed after the ext_authz
//! fallback. docs/in-proxy.md says what is decided here and what falls back.

use crate::abi;
use crate::envoy::{self, Stream};
use portcullis::clock::Clock;
use portcullis::config::Config;
use portcullis::directory::DirectoryError;
use portcullis::identity::token_cache::TokenCacheLimits;
use portcullis::in_proxy::{
    hear_other_replicas, spawn_reload, Answer, Authorizer, DenyKind, LastReload, Pipeline,
    RequestId, Runtime, Watched, ALLOWED_METADATA, POLL_INTERVAL,
};
use portcullis::metrics::Metrics;
use portcullis::policy::{LimitScope, Policy};
use portcullis::request::{AuthzRequest, RequestBuilder};
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The filter's `filter_config` (a `google.protobuf.StringValue` holding YAML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The `portcullis.yaml` to load (relative: to Envoy's working directory).
    #[serde(default)]
    config: Option<PathBuf>,
    /// What answers a request the module cannot decide without waiting on I/O.
    #[serde(default)]
    fallback: Fallback,
    /// This instance is the guard after the ext_authz fallback, not a pipeline.
    #[serde(default)]
    guard: bool,
}

/// Who decides a request the module cannot decide on the worker thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Fallback {
    /// Nobody: it is refused with 503 (fail closed), like an unreachable
    /// dependency of the server.
    #[default]
    None,
    /// The `envoy.filters.http.ext_authz` filter after this one, which runs only
    /// when this module has not decided (its `filter_enabled_metadata` reads
    /// `portcullis.decided`, docs/in-proxy.md).
    ExtAuthz,
}

/// The dynamic metadata that tells the ext_authz fallback (and the guard) this
/// module decided.
const DECIDED_NAMESPACE: &str = "portcullis";
const DECIDED_KEY: &str = "decided";
/// The namespace Envoy's ext_authz filter emits the server's dynamic metadata in.
const EXT_AUTHZ_NAMESPACE: &str = "envoy.filters.http.ext_authz";

/// How long Envoy waits, when it drops a filter config, for the module's
/// background work (reload, JWKS refreshes, Redis subscriptions) to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a filter config cannot be loaded: Envoy logs it and refuses the config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// `filter_config` is not the YAML this module reads.
    #[error(
        "filter_config must be YAML `config: PATH` [`fallback: ext_authz`], or `guard: true`: {0}"
    )]
    Settings(String),
    /// Neither a config nor the guard.
    #[error("filter_config needs `config: PATH` (or `guard: true` for the guard)")]
    NoConfig,
    /// The guard takes no config: it runs no pipeline.
    #[error("filter_config: `guard: true` takes no other key (the guard runs no pipeline)")]
    GuardWithConfig,
    /// The `portcullis.yaml` or its policy is invalid.
    #[error("{}", .0.errors().join("; "))]
    Config(#[from] portcullis::config::Error),
    /// The module's background runtime did not start.
    #[error("cannot start the module's runtime: {0}")]
    Runtime(std::io::Error),
    /// The user directory or the Redis of `state.redis` cannot be set up.
    #[error(transparent)]
    State(#[from] DirectoryError),
    /// Every request such a limit allows would be refused with 503.
    #[error(
        "the policy has `scope: global` rate limits ({rules}) and `state.redis`: the module leaves \
         them to the portcullis server, so it needs `fallback: ext_authz` (docs/in-proxy.md)"
    )]
    GlobalLimitsWithoutFallback { rules: String },
}

/// One filter config: the module deciding, or the guard after the fallback.
pub enum FilterConfig {
    InProxy(InProxy),
    Guard,
}

impl FilterConfig {
    /// Reads `filter_config` and, unless it is the guard, loads the config and
    /// policy it names and builds the pipeline, as `portcullis serve` does.
    pub fn load(filter_config: &[u8]) -> Result<FilterConfig, LoadError> {
        let text = std::str::from_utf8(filter_config)
            .map_err(|_| LoadError::Settings("not UTF-8".to_owned()))?;
        let settings: Settings =
            serde_yaml_ng::from_str(text).map_err(|e| LoadError::Settings(e.to_string()))?;
        match (settings.guard, settings.config) {
            (true, None) if settings.fallback == Fallback::None => {
                envoy::log(
                    abi::LOG_INFO,
                    "portcullis: guard loaded: a request neither the module nor ext_authz allowed is refused with 503",
                );
                Ok(FilterConfig::Guard)
            }
            (true, _) => Err(LoadError::GuardWithConfig),
            (false, None) => Err(LoadError::NoConfig),
            (false, Some(config)) => InProxy::load(config, settings.fallback).map(Self::InProxy),
        }
    }
}

/// The module deciding: the authorizer (shared by every worker; its caches are
/// thread-safe), and the runtime its background work runs on.
pub struct InProxy {
    authorizer: Arc<Authorizer>,
    fallback: Fallback,
    /// Hot reload, JWKS refreshers, and the checks that had to wait on I/O.
    /// `None` only while dropping (shut down first: its tasks hold the
    /// authorizer).
    tokio: Option<tokio::runtime::Runtime>,
}

// Envoy's workers share one filter config: it must be safe to use from all of them.
const _: fn() = || {
    fn shared_by_workers<T: Send + Sync>() {}
    shared_by_workers::<InProxy>();
    shared_by_workers::<FilterConfig>();
};

/// What the request-headers hook does with the stream.
pub enum Verdict {
    /// Let the request go on, having applied the allow; `response` is for the
    /// response-headers hook.
    Allow { response: Vec<(String, String)> },
    /// A local reply was sent.
    Denied,
    /// Not decided here: the ext_authz filter after this one decides.
    Fallback,
}

/// Why the module cannot decide a request itself.
#[derive(Debug, Clone, Copy)]
enum Undecided {
    /// The check had to wait on I/O (remote JWKS, the user directory, Redis).
    NeedsIo,
    /// A webhook needs its body.
    NeedsBody,
    /// The downstream connection is TLS: the peer certificate is not read here.
    Tls,
}

impl Undecided {
    fn as_str(self) -> &'static str {
        match self {
            Undecided::NeedsIo => "the check needs I/O",
            Undecided::NeedsBody => "the request needs its body",
            Undecided::Tls => "the connection is TLS",
        }
    }
}

impl InProxy {
    fn load(path: PathBuf, fallback: Fallback) -> Result<InProxy, LoadError> {
        let config = Config::load(&path)?;
        if config.redis.is_some() && fallback == Fallback::None {
            let rules = global_limits(&config.policy);
            if !rules.is_empty() {
                return Err(LoadError::GlobalLimitsWithoutFallback {
                    rules: rules.join(", "),
                });
            }
        }
        if config.redis.is_none()
            && (config.revocation.sessions_from_webhooks
                || !config.revocation.admin_principals.is_empty())
        {
            envoy::log(
                abi::LOG_WARN,
                "portcullis: `revocation` is configured without `state.redis`: revocations taken by the \
                 servers never reach this module, which keeps allowing revoked tokens (docs/in-proxy.md)",
            );
        }
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portcullis")
            .enable_all()
            .build()
            .map_err(LoadError::Runtime)?;
        let authorizer = {
            let _runtime = tokio.enter();
            let runtime = Arc::new(Runtime::new(
                Arc::new(Metrics::default()),
                Clock::System,
                TokenCacheLimits {
                    max_bytes: config.token_cache.max_bytes,
                    max_token_bytes: config.token_cache.max_token_bytes,
                },
            ));
            let pipeline = Pipeline::build(&config, &runtime)?;
            // A global limit counted here and again by the fallback would count
            // twice; it is never counted here (docs/in-proxy.md).
            let authorizer = Arc::new(
                Authorizer::new(runtime, pipeline, Arc::clone(&config.policy))
                    .leaving_global_limits(),
            );
            spawn_reload(
                Watched::of(&config),
                Arc::clone(&authorizer),
                Arc::new(LastReload::default()),
                POLL_INTERVAL,
            );
            // Revocations and directory events of the other replicas, exactly as
            // the server hears them: until the revocation set is loaded, a check
            // with a token is answered 503 (here: left to the fallback).
            if let Some(url) = &config.redis {
                hear_other_replicas(url, &authorizer)?;
            }
            authorizer
        };
        envoy::log(
            abi::LOG_INFO,
            &format!(
                "portcullis: loaded {} (fallback: {:?})",
                path.display(),
                fallback
            ),
        );
        Ok(InProxy {
            authorizer,
            fallback,
            tokio: Some(tokio),
        })
    }

    fn tokio(&self) -> &tokio::runtime::Runtime {
        self.tokio
            .as_ref()
            .expect("the runtime lives until the InProxy is dropped")
    }

    /// Decides the request whose headers `stream` holds, on the calling (worker)
    /// thread, or leaves it to the fallback.
    pub fn on_request_headers(&self, stream: &mut Stream, end_of_stream: bool) -> Verdict {
        // Everything read from Envoy's header buffers is copied into the request
        // model here: the answer is applied (headers changed) after.
        let request = Arc::new(self.request(stream));
        if let Some(why) = self.undecidable(stream, &request, end_of_stream) {
            return self.undecided(stream, &request, why);
        }
        let answer = {
            // Inside the module's runtime, so a timer or a spawn in the pipeline
            // finds one; the check itself runs here, polled once.
            let _runtime = self.tokio().enter();
            let authorizer = Arc::clone(&self.authorizer);
            let checked = Arc::clone(&request);
            let mut check = Box::pin(async move { authorizer.check(&checked).await });
            match check.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(answer) => answer,
                Poll::Pending => {
                    // Not dropped: cancelling it half-way would leave its JWKS
                    // refetch marked as done. It finishes on the module's runtime,
                    // and what it waited for (keys, a user) is cached for the next
                    // request; its answer is not used. It never counts a global
                    // rate limit (the authorizer leaves those to the server).
                    self.tokio().spawn(check);
                    return self.undecided(stream, &request, Undecided::NeedsIo);
                }
            }
        };
        match answer {
            // "Could not decide" (the revocation set not loaded yet, a directory
            // that failed, a global rate limit): the fallback may be able to.
            Answer::Deny {
                kind: DenyKind::Unavailable,
                ..
            } if self.fallback == Fallback::ExtAuthz => Verdict::Fallback,
            answer => self.apply(stream, &request, answer),
        }
    }

    /// Carries out `answer` on the stream: an allow's header changes (and the
    /// metadata that switches the fallback off), or a deny's local reply.
    fn apply(&self, stream: &mut Stream, request: &AuthzRequest, answer: Answer) -> Verdict {
        match answer {
            Answer::Allow {
                set,
                remove,
                response,
            } => {
                for name in &remove {
                    stream.remove_request_header(name);
                }
                for (name, value) in &set {
                    // Context headers are usually new to the request (the client's
                    // under the stripped prefixes were removed above): adding is
                    // cheaper than setting, which searches for the name first.
                    if request.header(name).is_some() {
                        stream.set_request_header(name, value);
                    } else {
                        stream.add_request_header(name, value);
                    }
                }
                if self.fallback == Fallback::ExtAuthz {
                    stream.set_metadata(DECIDED_NAMESPACE, DECIDED_KEY, "true");
                }
                Verdict::Allow { response }
            }
            Answer::Deny {
                kind,
                headers,
                body,
            } => {
                stream.send_response(kind.status(), &headers, &body);
                Verdict::Denied
            }
        }
    }

    /// The request model of the stream, as the ext_authz adapter builds it from
    /// a `CheckRequest`: repeated headers joined with `,` by the same function.
    fn request(&self, stream: &Stream) -> AuthzRequest {
        let headers = stream.request_headers();
        let capacity = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut builder = RequestBuilder::with_capacity(capacity);
        let (mut method, mut path, mut host) = (&[][..], &[][..], &[][..]);
        for (name, value) in &headers {
            match *name {
                b":method" => method = value,
                b":path" => path = value,
                b":authority" => host = value,
                name if name.starts_with(b":") => {}
                name => builder.join_header_bytes(name, value),
            }
        }
        // Envoy's header bytes are ASCII in practice: borrowed, not copied.
        let text = String::from_utf8_lossy;
        builder = builder
            .method(&text(method))
            .path(&text(path))
            .host(&text(host));
        // Envoy's `source.address` is the downstream peer as `ip:port`; the
        // request model holds the IP, as ext_authz's `attributes.source` gives it.
        if let Some(peer) = stream.attribute(abi::ATTRIBUTE_SOURCE_ADDRESS) {
            let peer = text(peer);
            match peer.parse::<SocketAddr>() {
                Ok(addr) => builder = builder.client_address(&addr.ip().to_string()),
                Err(_) => builder = builder.client_address(&peer),
            }
        }
        builder.build()
    }

    /// Why this module cannot decide `request`, if it cannot.
    fn undecidable(
        &self,
        stream: &Stream,
        request: &AuthzRequest,
        end_of_stream: bool,
    ) -> Option<Undecided> {
        if stream
            .attribute(abi::ATTRIBUTE_CONNECTION_TLS_VERSION)
            .is_some_and(|version| !version.is_empty())
        {
            return Some(Undecided::Tls);
        }
        // The pipeline in force now (webhooks may be configured by a reload).
        if !end_of_stream
            && request.header("svix-signature").is_some()
            && self.authorizer.pipeline().clerk_webhook().is_some()
        {
            return Some(Undecided::NeedsBody);
        }
        None
    }

    /// What happens to a request this module does not decide: the fallback's,
    /// or a 503 carrying the request's id.
    fn undecided(&self, stream: &mut Stream, request: &AuthzRequest, why: Undecided) -> Verdict {
        if self.fallback == Fallback::ExtAuthz {
            return Verdict::Fallback;
        }
        let message = format!(
            "not decided in-proxy ({}) and no fallback is configured",
            why.as_str()
        );
        let answer = self.authorizer.unavailable(request, &message);
        self.apply(stream, request, answer)
    }
}

impl Drop for InProxy {
    fn drop(&mut self) {
        // Stops the background tasks (they hold the authorizer) without hanging
        // Envoy's main thread on one stuck in I/O.
        if let Some(tokio) = self.tokio.take() {
            tokio.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}

/// The guard after the ext_authz fallback: lets a request on only when this
/// module decided it (`portcullis.decided`) or the portcullis server allowed it
/// through ext_authz (the `portcullis: allowed` its allows carry); anything else
/// — ext_authz disabled, skipped, or failing open — is refused with 503.
pub fn guard(stream: &mut Stream) -> Verdict {
    let decided = stream
        .metadata(DECIDED_NAMESPACE, DECIDED_KEY)
        .is_some_and(|value| value == b"true");
    let (key, allowed) = ALLOWED_METADATA;
    let allowed_by_server = stream
        .metadata(EXT_AUTHZ_NAMESPACE, key)
        .is_some_and(|value| value == allowed.as_bytes());
    if decided || allowed_by_server {
        return Verdict::Allow {
            response: Vec::new(),
        };
    }
    let request_id = {
        let headers = stream.request_headers();
        let id = headers
            .iter()
            .find(|(name, _)| *name == b"x-request-id")
            .map(|(_, value)| *value);
        RequestId::from_value(id)
    };
    envoy::log(
        abi::LOG_ERROR,
        &format!(
            "portcullis guard: request {} reached the guard unauthorized (ext_authz skipped, disabled or failing open); answered 503",
            request_id.value
        ),
    );
    if let Answer::Deny {
        kind,
        headers,
        body,
    } = Answer::deny(
        DenyKind::Unavailable,
        "the request was not authorized",
        &request_id.value,
    ) {
        stream.send_response(kind.status(), &headers, &body);
    }
    Verdict::Denied
}

/// The rules of `policy` with a `scope: global` rate limit.
fn global_limits(policy: &Policy) -> Vec<&str> {
    policy
        .rules()
        .iter()
        .filter(|rule| {
            rule.rate_limit
                .as_deref()
                .is_some_and(|limit| limit.scope == LimitScope::Global)
        })
        .map(|rule| rule.name.as_str())
        .collect()
}
