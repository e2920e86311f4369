//! `portcullis serve` and `portcullis config check`.

use anyhow::Context as _;
use portcullis::config::{dev, Config};
use portcullis::server::{Server, Stop};
use std::path::PathBuf;
use std::process::ExitCode;

pub fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} issuer(s), {} policy rule(s))",
                path.display(),
                config.issuers.len(),
                config.policy.rules().len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let errors = e.errors();
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{} error(s) in {}", errors.len(), path.display());
            ExitCode::from(1)
        }
    }
}

pub fn serve(config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match &config_path {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => {
                for error in e.errors() {
                    eprintln!("{error}");
                }
                eprintln!("portcullis did not start: fix the config above (check it with `portcullis config check --config {}`)", path.display());
                return Ok(ExitCode::from(1));
            }
        },
        None => {
            let setup = dev::setup(std::path::Path::new(".portcullis-dev"))
                .context("preparing the embedded dev defaults")?;
            print_dev_banner(&setup);
            setup.config
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Install the signal handlers before anything is served, so a SIGTERM that
        // arrives right after start is a graceful stop, not the default kill.
        let shutdown = shutdown_signal()?;
        let server = Server::bind(&config).await?;
        tracing::info!(grpc = %server.grpc_listen(), http = %server.http_addr(), "portcullis serving");
        server.run(shutdown).await?;
        tracing::info!("portcullis stopped");
        Ok(ExitCode::SUCCESS)
    })
}

fn print_dev_banner(setup: &dev::DevSetup) {
    println!("portcullis: no --config given, running on the embedded dev defaults.");
    println!("  ext_authz gRPC: 127.0.0.1:9191   HTTP: http://127.0.0.1:8181 (/healthz /readyz /metrics)");
    println!(
        "  HS256 dev issuer iss={} secret={}",
        dev::DEV_ISSUER,
        setup.secret
    );
    println!(
        "  (secret kept in {0}/secret; tokens in {0}/tokens.env; users in the SQLite directory {0}/portcullis-dev.db)",
        setup.dir.display()
    );
    for token in &setup.tokens {
        println!("  {} ({}): {}", token.subject, token.role, token.token);
    }
    println!("  try: curl -H \"Authorization: Bearer $USER_TOKEN\" through Envoy (see mesh/quickstart/README.md)");
}

/// Registers SIGTERM and SIGINT now; the returned future completes on the first
/// (SIGTERM drains, SIGINT skips the drain delay), and a second signal of either
/// kind exits the process at once.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = Stop> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    Ok(async move {
        #[cfg(unix)]
        let stop = tokio::select! {
            _ = term.recv() => Stop::Graceful,
            _ = interrupt.recv() => Stop::Immediate,
        };
        #[cfg(not(unix))]
        let stop = {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Immediate
        };
        tracing::info!(?stop, "shutdown requested (a second signal exits at once)");
        #[cfg(unix)]
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = interrupt.recv() => {},
            }
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        });
        stop
    })
}
