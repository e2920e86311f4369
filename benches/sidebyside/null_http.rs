//! The do-nothing HTTP check endpoint of the side-by-side benchmark (`scripts/bench`,
//! BENCHMARKS.md, "nginx"): 200 with an empty body to every request, on axum and
//! hyper in the same multi-thread tokio runtime `portcullis serve` runs, with the
//! same `tracing` subscriber at `info`. nginx's `auth_request` to it is the floor
//! of the HTTP mode: what any HTTP authorizer on this stack costs.
//! `cargo run --release --example null_http -- 127.0.0.1:9393`.

const USAGE: &str = "usage: null_http ADDR";

/// `null_http ADDR`: serves on ADDR until killed; prints `ready` once listening.
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = std::env::args().nth(1).ok_or(USAGE)?.parse()?;
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
        let router = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
        axum::serve(listener, router).await?;
        Ok(())
    })
}
