//! Assembles and runs the process: the gRPC listener (ext_authz, health,
//! reflection, admin, token service) and the HTTP listener, with graceful
//! shutdown.

use crate::admin_api::pb::token_service_server::TokenServiceServer;
use crate::admin_api::{pb::admin_server::AdminServer, pb::FILE_DESCRIPTOR_SET, AdminApi};
use crate::authorizer::{Authorizer, Pipeline};
use crate::clock::Clock;
use crate::config::{Config, HttpLimits, ListenAddr};
use crate::ext_authz::AuthorizationService;
use crate::identity::token_cache::TokenCacheLimits;
use crate::metrics::Metrics;
use crate::reload::LastReload;
use crate::runtime::Runtime;
use crate::tls::TlsAcceptor;
use crate::token_api::TokenApi;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: ListenAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("user directory: {0}")]
    Directory(String),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC listener TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// How the process was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: say NOT_SERVING, keep answering for `server.drain_delay`, then
    /// close the listeners and finish in-flight requests.
    Graceful,
    /// SIGINT (Ctrl-C): the same without the drain delay.
    Immediate,
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    grpc: GrpcListener,
    http: TcpListener,
    /// `server.check_listen`: the gateway checks' own listener; `None`: they
    /// are served on `http` (docs/gateways.md).
    check: Option<TcpListener>,
    /// `server.trusted_proxies`, for the checks' client address.
    trusted_proxies: crate::config::TrustedProxies,
    authorizer: Arc<Authorizer>,
    /// Why the last reload failed (readiness shows it).
    last_reload: Arc<LastReload>,
    /// TLS on the gRPC listener (`server.tls`), reloaded when its files change.
    tls: Option<Arc<TlsAcceptor>>,
    refreshers: Vec<JoinHandle<()>>,
    drain_delay: Duration,
    shutdown_timeout: Duration,
    http_limits: HttpLimits,
}

impl Server {
    /// Binds both listeners and starts the JWKS fetches (start does not wait for
    /// them; readiness does).
    pub async fn bind(config: &Config) -> Result<Server, ServeError> {
        Self::bind_with_clock(config, Clock::System).await
    }

    /// [`Server::bind`] with the clock every TTL and `exp` is judged by (tests
    /// pass a manual one).
    pub async fn bind_with_clock(config: &Config, clock: Clock) -> Result<Server, ServeError> {
        let grpc = GrpcListener::bind(&config.grpc_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.grpc_listen.clone(),
                source,
            })?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.http_listen.into(),
                source,
            })?;
        let check = match config.check_listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServeError::Bind {
                            addr: addr.into(),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let mut refreshers = Vec::new();
        let tls = config.tls.as_ref().map(TlsAcceptor::new).transpose()?;
        if let Some(tls) = &tls {
            refreshers.push(tls.spawn_reloader(crate::tls::RELOAD_INTERVAL));
        }
        metrics
            .policy_reloads
            .get_or_create(&crate::metrics::ResultLabels { result: "success" })
            .inc();
        let runtime = Arc::new(Runtime::new(
            metrics,
            clock,
            TokenCacheLimits {
                max_bytes: config.token_cache.max_bytes,
                max_token_bytes: config.token_cache.max_token_bytes,
            },
        ));
        let pipeline = Pipeline::build(config, &runtime).map_err(|e| ServeError::Directory(e.0))?;
        let authorizer = Arc::new(Authorizer::new(
            runtime,
            pipeline,
            Arc::clone(&config.policy),
        ));
        // Evictions and revocations published by other replicas.
        if let Some(url) = &config.redis {
            refreshers.push(
                hear_other_replicas(url, &authorizer).map_err(|e| ServeError::Directory(e.0))?,
            );
        }
        // Hot reload of the policy file and the config file.
        let last_reload = Arc::new(LastReload::default());
        refreshers.push(crate::reload::spawn(
            crate::reload::Watched::of(config),
            Arc::clone(&authorizer),
            Arc::clone(&last_reload),
            crate::reload::POLL_INTERVAL,
        ));
        Ok(Server {
            grpc,
            http,
            check,
            trusted_proxies: config.trusted_proxies.clone(),
            authorizer,
            last_reload,
            tls,
            refreshers,
            drain_delay: config.drain_delay,
            shutdown_timeout: config.shutdown_timeout,
            http_limits: config.http_limits,
        })
    }

    /// The gRPC listener's TCP address; for a `unix:` listener the unspecified
    /// `0.0.0.0:0` (see [`Server::grpc_listen`]).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listen()
            .tcp()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where the gRPC listener listens (the bound port of a TCP listener).
    pub fn grpc_listen(&self) -> ListenAddr {
        match &self.grpc {
            GrpcListener::Tcp(listener) => ListenAddr::Tcp(
                listener
                    .local_addr()
                    .expect("bound listener has an address"),
            ),
            GrpcListener::Unix { path, .. } => ListenAddr::Unix(path.clone()),
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Where the gateway checks (`/check/...`) are served: `server.check_listen`,
    /// else the HTTP listener.
    pub fn check_addr(&self) -> SocketAddr {
        self.check.as_ref().map_or_else(
            || self.http_addr(),
            |check| check.local_addr().expect("bound listener has an address"),
        )
    }

    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    /// Serves until `shutdown` says how to stop (docs/operations.md,
    /// "Shutdown"): health says NOT_SERVING at once, the listeners keep
    /// answering for the drain delay (not on [`Stop::Immediate`]), then stop
    /// accepting (HTTP/2 GOAWAY) and wait at most `shutdown_timeout` for the
    /// requests in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = Stop> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        // NOT_SERVING until every issuer has keys: a replica that just started
        // (a rolling restart) gets no Checks it would answer 503.
        let warm_up = {
            let (health, authorizer) = (health.clone(), Arc::clone(&self.authorizer));
            // Nor before it knows the revocations (docs/revocation.md).
            let warm = |a: &Authorizer| a.keys_loaded() && a.runtime().revocations().is_loaded();
            if !warm(&authorizer) {
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                health.set_not_serving::<AuthorizationService>().await;
            }
            tokio::spawn(async move {
                while !warm(&authorizer) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if !authorizer.runtime().is_draining() {
                    health
                        .set_service_status("", tonic_health::ServingStatus::Serving)
                        .await;
                    health.set_serving::<AuthorizationService>().await;
                }
            })
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let runtime = Arc::clone(self.authorizer.runtime());
        let drain_delay = self.drain_delay;
        tokio::spawn(async move {
            let stop = shutdown.await;
            runtime.start_draining();
            warm_up.abort();
            // "" is the whole server, which Envoy's gRPC health check asks about.
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            health.set_not_serving::<AuthorizationService>().await;
            if stop == Stop::Graceful && !drain_delay.is_zero() {
                tracing::info!(
                    drain_delay_s = drain_delay.as_secs_f64(),
                    "shutting down: NOT_SERVING, still answering while traffic moves away"
                );
                tokio::time::sleep(drain_delay).await;
            }
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let grpc = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(AuthorizationService::new(Arc::clone(&self.authorizer)))
            .add_service(AdminServer::new(AdminApi::new(
                Arc::clone(&self.authorizer),
                Arc::clone(&self.last_reload),
            )))
            .add_service(TokenServiceServer::new(TokenApi::new(Arc::clone(
                &self.authorizer,
            ))));
        let mut socket_file = None;
        let grpc: std::pin::Pin<
            Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
        > = match (self.grpc, &self.tls) {
            (GrpcListener::Tcp(listener), Some(tls)) => Box::pin(
                grpc.serve_with_incoming_shutdown(tls.incoming(listener), stopped(stop_rx.clone())),
            ),
            (GrpcListener::Tcp(listener), None) => Box::pin(grpc.serve_with_incoming_shutdown(
                // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs hold a
                // small deny answer for ~40 ms (measured by the benchmark).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopped(stop_rx.clone()),
            )),
            // Config validation refuses server.tls with a unix: listener.
            (GrpcListener::Unix { listener, path }, _) => {
                socket_file = Some(path);
                Box::pin(grpc.serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    stopped(stop_rx.clone()),
                ))
            }
        };
        // The gateway checks on their own listener, or beside the rest.
        let checks =
            crate::http::check_router(Arc::clone(&self.authorizer), self.trusted_proxies.clone());
        let router =
            crate::http::router(Arc::clone(&self.authorizer), Arc::clone(&self.last_reload));
        let (router, check) = match self.check {
            Some(listener) => (router, Some((listener, checks))),
            None => (router.merge(checks), None),
        };
        let http = crate::http::serve(
            self.http,
            router,
            self.http_limits,
            stopped(stop_rx.clone()),
        );
        let check = {
            let (limits, stop) = (self.http_limits, stopped(stop_rx.clone()));
            async move {
                if let Some((listener, checks)) = check {
                    crate::http::serve(listener, checks, limits, stop).await;
                }
            }
        };
        let serving = async { tokio::join!(grpc, http, check).0 };
        let shutdown_timeout = self.shutdown_timeout;
        let deadline = async move {
            stopped(stop_rx).await;
            tokio::time::sleep(shutdown_timeout).await;
        };
        let result = tokio::select! {
            result = serving => result,
            () = deadline => {
                tracing::warn!(shutdown_timeout_s = shutdown_timeout.as_secs_f64(),
                    "requests still in flight after shutdown_timeout; stopping anyway");
                Ok(())
            }
        };
        for refresher in self.refreshers {
            refresher.abort();
        }
        if let Some(path) = socket_file {
            let _ = std::fs::remove_file(path);
        }
        result.map_err(ServeError::from)
    }
}

/// The gRPC listener: TCP, or a Unix domain socket for an Envoy in the same pod.
enum GrpcListener {
    Tcp(TcpListener),
    Unix {
        listener: tokio::net::UnixListener,
        path: std::path::PathBuf,
    },
}

impl GrpcListener {
    /// Binds `addr`. A socket file left by an earlier process (one that was
    /// killed) is replaced; any other file at that path is an error. The socket
    /// is made group-writable (0660): Envoy in the same pod connects through a
    /// shared volume, as the same group (docs/in-pod.md).
    async fn bind(addr: &ListenAddr) -> std::io::Result<GrpcListener> {
        match addr {
            ListenAddr::Tcp(addr) => TcpListener::bind(addr).await.map(GrpcListener::Tcp),
            ListenAddr::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                match std::fs::symlink_metadata(path) {
                    Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
                    Ok(_) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "a file that is not a socket is in the way",
                        ))
                    }
                    Err(_) => {}
                }
                let listener = tokio::net::UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Ok(GrpcListener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
        }
    }
}

/// Subscribes to the other replicas' events through Redis: directory
/// evictions, and revocations — the whole set loaded after each
/// (re)subscription, so readiness waits for the first load and nothing
/// announced while Redis was away is missed (docs/revocation.md). From the
/// call on, checks with a token answer 503 until the first load. The server
/// and the Envoy module (docs/in-proxy.md) both hear the others through here.
pub fn hear_other_replicas(
    url: &str,
    authorizer: &Arc<Authorizer>,
) -> Result<JoinHandle<()>, crate::directory::DirectoryError> {
    use crate::revocation::store;
    let runtime = authorizer.runtime();
    let feed = store::Feed::new(Arc::clone(runtime.revocations()), runtime.shared(url)?);
    let catch_up = {
        let feed = feed.clone();
        move || feed.catch_up()
    };
    let on_change = {
        let feed = feed.clone();
        move |state, error: Option<&str>| feed.subscription_changed(state, error)
    };
    let authorizer = Arc::clone(authorizer);
    let on_message = move |channel: &str, payload: String| {
        let is_revocation = channel == store::CHANNEL;
        let (authorizer, feed) = (Arc::clone(&authorizer), feed.clone());
        async move {
            if is_revocation {
                feed.apply(&payload);
            } else {
                let pipeline = authorizer.pipeline();
                crate::replicas::apply_directory_event(&payload, pipeline.directory()).await;
            }
        }
    };
    crate::replicas::spawn_subscriber(
        url,
        &[crate::replicas::CHANNEL, store::CHANNEL],
        catch_up,
        on_message,
        on_change,
    )
}
