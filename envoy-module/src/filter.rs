//! The in-proxy pipeline: portcullis' [`Authorizer`] built from the same
//! `portcullis.yaml` and policy as the server, asked on Envoy's worker thread, and
//! its [`Answer`] turned into Envoy callbacks — the adapter, like
//! `src/ext_authz/mod.rs` is for gRPC. docs/in-proxy.md says what is decided here
//! and what falls back.

use crate::abi;
use crate::envoy::{self, Stream};
use portcullis::clock::Clock;
use portcullis::config::Config;
use portcullis::identity::token_cache::TokenCacheLimits;
use portcullis::in_proxy::{
    hear_other_replicas, spawn_reload, Answer, Authorizer, DenyKind, LastReload, Pipeline,
    RequestId, Runtime, Watched, POLL_INTERVAL,
};
use portcullis::metrics::Metrics;
use portcullis::request::{AuthzRequest, RequestBuilder};
use serde::Deserialize;
use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// The filter's `filter_config` (a `google.protobuf.StringValue` holding YAML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The `portcullis.yaml` to load (relative: to Envoy's working directory).
    config: PathBuf,
    /// What answers a request the module cannot decide without waiting on I/O.
    #[serde(default)]
    fallback: Fallback,
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

/// The dynamic metadata that tells the ext_authz fallback this module decided.
const DECIDED_NAMESPACE: &str = "portcullis";
const DECIDED_KEY: &str = "decided";

/// One filter config: the authorizer (shared by every worker; its caches are
/// thread-safe), and the runtime its background work runs on.
pub struct InProxy {
    authorizer: Arc<Authorizer>,
    fallback: Fallback,
    /// Whether Clerk webhooks are configured: a request carrying a Svix
    /// signature then needs its body, which this module does not read.
    webhooks: bool,
    /// Hot reload, JWKS refreshers, and the checks that had to wait on I/O.
    /// Dropped last: its tasks hold the authorizer.
    tokio: tokio::runtime::Runtime,
}

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
    /// Loads the config and policy named by `filter_config` and builds the
    /// pipeline, as `portcullis serve` does.
    pub fn load(filter_config: &[u8]) -> Result<InProxy, String> {
        let text = std::str::from_utf8(filter_config)
            .map_err(|_| "filter_config is not UTF-8".to_owned())?;
        let settings: Settings = serde_yaml_ng::from_str(text).map_err(|e| {
            format!("filter_config must be YAML `config: PATH` [`fallback: ext_authz`]: {e}")
        })?;
        let config = Config::load(&settings.config).map_err(|e| e.errors().join("; "))?;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portcullis")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the module's runtime: {e}"))?;
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
            let pipeline = Pipeline::build(&config, &runtime).map_err(|e| e.to_string())?;
            let authorizer = Arc::new(Authorizer::new(
                runtime,
                pipeline,
                Arc::clone(&config.policy),
            ));
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
                hear_other_replicas(url, &authorizer).map_err(|e| e.to_string())?;
            }
            authorizer
        };
        envoy::log(
            abi::LOG_INFO,
            &format!(
                "portcullis: loaded {} (fallback: {:?})",
                settings.config.display(),
                settings.fallback
            ),
        );
        Ok(InProxy {
            authorizer,
            fallback: settings.fallback,
            webhooks: config.clerk_webhook.is_some(),
            tokio,
        })
    }

    /// Decides the request whose headers `stream` holds, on the calling (worker)
    /// thread, or leaves it to the fallback.
    pub fn on_request_headers(&self, stream: &Stream, end_of_stream: bool) -> Verdict {
        let headers = stream.request_headers();
        let request = match self.request(stream, &headers, end_of_stream) {
            Ok(request) => request,
            Err(why) => return self.undecided(stream, why, &headers),
        };
        let answer = {
            // Inside the module's runtime, so a timer or a spawn in the pipeline
            // finds one; the check itself runs here, polled once.
            let _runtime = self.tokio.enter();
            let authorizer = Arc::clone(&self.authorizer);
            let mut check = Box::pin(async move { authorizer.check(&request).await });
            match check.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(answer) => answer,
                Poll::Pending => {
                    // Not dropped: cancelling it half-way would leave its JWKS
                    // refetch marked as done. It finishes on the module's runtime,
                    // and what it waited for (keys, a user) is cached for the next
                    // request; its answer is not used.
                    self.tokio.spawn(check);
                    return self.undecided(stream, Undecided::NeedsIo, &headers);
                }
            }
        };
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
                    // under the stripped prefixes were removed above).
                    if headers.iter().any(|(sent, _)| *sent == name.as_bytes()) {
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
            // "Could not decide" (the revocation set not loaded yet, a directory
            // that failed): the fallback may be able to.
            Answer::Deny {
                kind: DenyKind::Unavailable,
                ..
            } if self.fallback == Fallback::ExtAuthz => Verdict::Fallback,
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
    /// a `CheckRequest`; or why this module cannot decide it.
    fn request(
        &self,
        stream: &Stream,
        headers: &[(&[u8], &[u8])],
        end_of_stream: bool,
    ) -> Result<AuthzRequest, Undecided> {
        if stream
            .attribute(abi::ATTRIBUTE_CONNECTION_TLS_VERSION)
            .is_some_and(|version| !version.is_empty())
        {
            return Err(Undecided::Tls);
        }
        let capacity = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut builder = RequestBuilder::with_capacity(capacity);
        for (name, value) in headers {
            let value = text(value);
            match *name {
                b":method" => builder = builder.method(&value),
                b":path" => builder = builder.path(&value),
                b":authority" => builder = builder.host(&value),
                name if name.starts_with(b":") => {}
                b"svix-signature" if self.webhooks && !end_of_stream => {
                    return Err(Undecided::NeedsBody)
                }
                name => builder = builder.header(&text(name), &value),
            }
        }
        // Envoy's `source.address` is the downstream peer as `ip:port`; the
        // request model holds the IP, as ext_authz's `attributes.source` gives it.
        if let Some(peer) = stream.attribute(abi::ATTRIBUTE_SOURCE_ADDRESS) {
            let peer = text(peer);
            match peer.parse::<SocketAddr>() {
                Ok(addr) => builder = builder.client_address(&addr.ip().to_string()),
                Err(_) => builder = builder.client_address(&peer),
            }
        }
        Ok(builder.build())
    }

    /// What happens to a request this module does not decide: the fallback's,
    /// or a 503 carrying the request's `x-request-id` (or a new one).
    fn undecided(&self, stream: &Stream, why: Undecided, headers: &[(&[u8], &[u8])]) -> Verdict {
        if self.fallback == Fallback::ExtAuthz {
            return Verdict::Fallback;
        }
        let request = match headers.iter().find(|(name, _)| *name == b"x-request-id") {
            Some((_, id)) => AuthzRequest::builder()
                .header("x-request-id", &text(id))
                .build(),
            None => AuthzRequest::default(),
        };
        let message = format!(
            "not decided in-proxy ({}) and no fallback is configured",
            why.as_str()
        );
        let request_id = RequestId::of(&request, "x-request-id");
        if let Answer::Deny {
            kind,
            headers,
            body,
        } = Answer::deny(DenyKind::Unavailable, &message, &request_id.value)
        {
            stream.send_response(kind.status(), &headers, &body);
        }
        Verdict::Denied
    }
}

/// Header bytes as text: Envoy's are ASCII in practice; anything else has each
/// bad sequence replaced (as the ext_authz decoder does), so it never equals a
/// configured name or value by accident.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    // `from_utf8` first: its check is several times faster than the lossy
    // conversion's on the (ASCII) headers every request carries.
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}
