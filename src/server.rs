//! Assembles and runs the process: the gRPC listener (ext_authz, health,
//! reflection, admin, token service) and the HTTP listener, with graceful
//! shutdown.

use crate::admin_api::pb::token_service_server::TokenServiceServer;
use crate::admin_api::{pb::admin_server::AdminServer, pb::FILE_DESCRIPTOR_SET, AdminApi};
use crate::authorizer::{Authorizer, Pipeline};
use crate::clock::Clock;
use crate::config::{Config, HttpLimits};
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
        addr: SocketAddr,
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
    grpc: TcpListener,
    http: TcpListener,
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
        let grpc = TcpListener::bind(config.grpc_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.grpc_listen,
                source,
            })?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.http_listen,
                source,
            })?;
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
        // Evictions published by other replicas.
        if let Some(url) = &config.redis {
            let authorizer = Arc::clone(&authorizer);
            let apply = move |event: crate::replicas::DirectoryEvent| {
                let pipeline = authorizer.pipeline();
                async move { event.apply(pipeline.directory()).await }
            };
            refreshers.push(
                crate::replicas::spawn_subscriber(url, apply)
                    .map_err(|e| ServeError::Directory(e.0))?,
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
            authorizer,
            last_reload,
            tls,
            refreshers,
            drain_delay: config.drain_delay,
            shutdown_timeout: config.shutdown_timeout,
            http_limits: config.http_limits,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
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
            if !authorizer.keys_loaded() {
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                health.set_not_serving::<AuthorizationService>().await;
            }
            tokio::spawn(async move {
                while !authorizer.keys_loaded() {
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
        let grpc: std::pin::Pin<
            Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
        > =
            match &self.tls {
                Some(tls) => Box::pin(grpc.serve_with_incoming_shutdown(
                    tls.incoming(self.grpc),
                    stopped(stop_rx.clone()),
                )),
                None => Box::pin(grpc.serve_with_incoming_shutdown(
                    // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs hold a
                    // small deny answer for ~40 ms (measured by the benchmark).
                    tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true)),
                    stopped(stop_rx.clone()),
                )),
            };
        let http = crate::http::serve(
            self.http,
            crate::http::router(Arc::clone(&self.authorizer), Arc::clone(&self.last_reload)),
            self.http_limits,
            stopped(stop_rx.clone()),
        );
        let serving = async { tokio::join!(grpc, http).0 };
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
        result.map_err(ServeError::from)
    }
}
