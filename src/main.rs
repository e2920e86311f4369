//! The `portcullis` command line (SPEC §2).

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use portcullis::config::{dev, Config};
use portcullis::server::Server;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "One authorization service for a whole service mesh: Envoy ext_authz for end users and services"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Without --config: embedded dev defaults (listeners on
    /// 127.0.0.1:9191 and :8181, an HS256 dev issuer, demo tokens, the quick-start
    /// policy), state in ./.portcullis-dev/.
    Serve {
        /// The config file (portcullis.yaml).
        #[arg(long, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config and its policy; print every error; exit 1 on any.
    Check {
        #[arg(long, default_value = "portcullis.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => serve(config),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => Ok(check(&config)),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
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

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
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
        let server = Server::bind(&config).await?;
        tracing::info!(grpc = %server.grpc_addr(), http = %server.http_addr(), "portcullis serving");
        server.run(shutdown_signal()).await?;
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
        "  (secret kept in {}/secret; tokens in {}/tokens.env)",
        setup.dir.display(),
        setup.dir.display()
    );
    for token in &setup.tokens {
        println!("  {} ({}): {}", token.subject, token.role, token.token);
    }
    println!("  try: curl -H \"Authorization: Bearer $USER_TOKEN\" through Envoy (see mesh/quickstart/README.md)");
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
