//! Assembles and runs the process: the gRPC listener (ext_authz, health,
//! reflection, admin, token service) and the HTTP listener, with graceful
//! shutdown.

use crate::admin_api::pb::token_service_server::TokenServiceServer;
use crate::admin_api::{pb::admin_server::AdminServer, pb::FILE_DESCRIPTOR_SET, AdminApi};
use crate::authorizer::{Authorizer, Engine};
use crate::config::Config;
use crate::ext_authz::AuthorizationService;
use crate::metrics::Metrics;
use crate::tls::TlsAcceptor;
use crate::token_api::TokenApi;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
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
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("user directory: {0}")]
    Directory(String),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC listener TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    grpc: TcpListener,
    http: TcpListener,
    authorizer: Arc<Authorizer>,
    /// TLS on the gRPC listener (`server.tls`), reloaded when its files change.
    tls: Option<Arc<TlsAcceptor>>,
    refreshers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds both listeners and starts the JWKS fetches (start does not wait for
    /// them; readiness does).
    pub async fn bind(config: &Config) -> Result<Server, ServeError> {
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
        let authorizer = Arc::new(Authorizer::new(
            Engine::build(config, &metrics).map_err(|e| ServeError::Directory(e.0))?,
            Arc::clone(&config.policy),
            metrics,
        ));
        // Evictions published by other replicas (SPEC §5).
        if let Some(url) = &config.redis {
            refreshers.push(crate::state::spawn_subscriber(
                url,
                Arc::clone(&authorizer),
            )?);
        }
        // Hot reload of the policy file and the config file (SPEC §7).
        refreshers.push(crate::reload::spawn(
            crate::reload::Watched::of(config),
            Arc::clone(&authorizer),
            crate::reload::POLL_INTERVAL,
        ));
        Ok(Server {
            grpc,
            http,
            authorizer,
            tls,
            refreshers,
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

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight
    /// requests finish, and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AuthorizationService>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let grpc = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(AuthorizationService::new(Arc::clone(&self.authorizer)))
            .add_service(AdminServer::new(AdminApi::new(Arc::clone(
                &self.authorizer,
            ))))
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
        let http = axum::serve(self.http, crate::http::router(Arc::clone(&self.authorizer)))
            .with_graceful_shutdown(stopped(stop_rx));
        let (grpc, http) = tokio::join!(grpc, http);
        for refresher in self.refreshers {
            refresher.abort();
        }
        grpc?;
        http.map_err(ServeError::Http)
    }
}
