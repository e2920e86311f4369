//! The `portcullis` command line (SPEC §2).

mod cli;

use clap::{Parser, Subcommand, ValueEnum};
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
        Command::Serve { config } => cli::serve::serve(config),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => Ok(cli::serve::check(&config)),
    }
}
