//! The `portcullis` command line.

mod cli;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc hands freed memory back; glibc's per-thread arenas kept ~20 MB of it
/// after a full cache fill (BENCHMARKS.md, memory).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// 127.0.0.1:9191 and :8181, an HS256 dev issuer, a SQLite user directory
    /// with two demo users and their tokens, the quick-start policy), state in
    /// ./.portcullis-dev/.
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
    /// Policy tools: run test cases, explain a decision.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The mesh's SPIFFE certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Service certificates (X509-SVIDs): issue, inspect, renew.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Service tokens (JWT-SVID shaped, ES256) and their public keys.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Revoke a token (--jti), every token of a subject issued before now
    /// (--sub) or a Clerk session (--sid) on every replica of a running
    /// portcullis; or list the revocations in force (--list). Talks to the
    /// admin API on the gRPC listener over mTLS: presents DIR/chain.pem and
    /// DIR/key.pem (a SPIFFE ID in admin.principals), and verifies the server
    /// against DIR/bundle.pem and its SPIFFE ID, not its DNS name.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["jti", "sub", "sid", "list"])))]
    Revoke {
        /// The gRPC listener (server.grpc_listen, with server.tls and client_ca).
        #[arg(long, value_name = "HOST:PORT")]
        server: String,
        /// A `portcullis cert issue` output directory: chain.pem, key.pem, bundle.pem.
        #[arg(long, value_name = "DIR")]
        cert: PathBuf,
        /// One token, by its `jti` claim.
        #[arg(long)]
        jti: Option<String>,
        /// Every token of this subject issued before now ("sign out everywhere").
        #[arg(long)]
        sub: Option<String>,
        /// Every token of this Clerk session (`sid` claim).
        #[arg(long)]
        sid: Option<String>,
        /// List the revocations in force instead.
        #[arg(long)]
        list: bool,
        /// How long the revocation lasts: at least the remaining life of the
        /// tokens it must refuse.
        #[arg(long, default_value = "24h", conflicts_with = "list")]
        ttl: portcullis::ca::Ttl,
        /// The SPIFFE ID the server must present [default: any SVID of the
        /// bundle's trust domain].
        #[arg(long, value_name = "SPIFFE_ID")]
        server_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the root CA (ECDSA P-256, 10 years, URI SAN spiffe://TRUST-DOMAIN)
    /// and the trust bundle DIR/bundle.pem.
    Init {
        /// The mesh's SPIFFE trust domain.
        #[arg(long, default_value = "example.org")]
        trust_domain: String,
        /// Where the CA lives (DIR/ca/, DIR/bundle.pem).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Replace an existing CA (everything it issued stops verifying).
        #[arg(long)]
        force: bool,
    },
    /// Create (or replace) the intermediate CA (pathlen 0) signed by the root; it
    /// then signs every new service certificate.
    Intermediate {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Lifetime, e.g. 2y, 365d.
        #[arg(long, default_value = "2y")]
        ttl: portcullis::ca::Ttl,
        /// Also write Istio's plug-in CA files (ca-cert.pem, ca-key.pem,
        /// root-cert.pem, cert-chain.pem) here and print the kubectl command.
        #[arg(long)]
        istio_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Issue an X509-SVID: OUT/cert.pem, chain.pem, key.pem (0600), bundle.pem.
    Issue {
        /// The Kubernetes service account: spiffe://TD/ns/NAMESPACE/sa/NAME.
        #[arg(
            long,
            required_unless_present = "spiffe_id",
            conflicts_with = "spiffe_id"
        )]
        service: Option<String>,
        /// The namespace of --service.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// A full SPIFFE ID in the CA's trust domain, instead of --service.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// An extra DNS SAN (repeatable).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Lifetime, e.g. 1h, 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: portcullis::ca::Ttl,
        /// Output directory [default: DIR/NAME, NAME the service account or the
        /// ID's last path segment].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the CA lives.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Summarize a certificate and check it: SPIFFE X509-SVID rules, validity, and
    /// the chain to the trust bundle. Exit 1 when any check fails.
    Inspect {
        /// A PEM certificate (cert.pem or chain.pem: the leaf first).
        file: PathBuf,
        /// The trust bundle [default: bundle.pem beside FILE, else certs/bundle.pem].
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// The expected trust domain [default: the bundle root's].
        #[arg(long)]
        trust_domain: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-issue OUT's certificate (same identity, new key) once the given share of
    /// its lifetime has passed; keep it otherwise. Files are replaced atomically.
    Renew {
        /// The directory of an issued certificate (holding cert.pem).
        #[arg(long)]
        out: PathBuf,
        /// Renew once this share of the lifetime has passed.
        #[arg(long, default_value = "50%")]
        if_within: portcullis::ca::RenewThreshold,
        /// New lifetime [default: the current certificate's].
        #[arg(long)]
        ttl: Option<portcullis::ca::Ttl>,
        /// Where the CA lives.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a service token for spiffe://TD/ns/NAMESPACE/sa/SERVICE, signed with
    /// DIR/tokens/signing-key.pem (created on first use).
    Issue {
        #[arg(long)]
        service: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// An audience (repeatable) [default: spiffe://TD].
        #[arg(long = "audience", value_name = "AUD")]
        audiences: Vec<String>,
        /// Lifetime, e.g. 15m, 1h.
        #[arg(long, default_value = "15m")]
        ttl: portcullis::ca::Ttl,
        /// Where the CA and the token key live.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Print the public JWKS of the token signer (also kept in DIR/tokens/jwks.json).
    Jwks {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run policy test cases (YAML: request + principal -> expected decision,
    /// status, rule, headers); prints `N passed, M failed`, exits 1 on a failure.
    Test {
        /// Test files (see mesh/quickstart/policy_test.yaml).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Decide one request (JSON or YAML: method, path, host, headers, principal)
    /// offline and print how every rule fared.
    Explain {
        /// The request file.
        #[arg(long)]
        request: PathBuf,
        /// The policy file (default: the config's policy, else ./policy.yaml).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// A portcullis.yaml whose headers, trust domain and policy apply.
        #[arg(long)]
        config: Option<PathBuf>,
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
        Command::Policy {
            command: PolicyCommand::Test { files },
        } => cli::policy::test(&files),
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    request,
                    policy,
                    config,
                },
        } => cli::policy::explain(&request, policy.as_deref(), config.as_deref()),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => Ok(cli::serve::check(&config)),
        Command::Ca {
            command:
                CaCommand::Init {
                    trust_domain,
                    dir,
                    force,
                },
        } => cli::ca::init(&trust_domain, &dir, force),
        Command::Ca {
            command:
                CaCommand::Intermediate {
                    dir,
                    ttl,
                    istio_dir,
                },
        } => cli::ca::intermediate(&dir, ttl, istio_dir.as_deref()),
        Command::Cert {
            command:
                CertCommand::Issue {
                    service,
                    namespace,
                    spiffe_id,
                    dns,
                    ttl,
                    out,
                    dir,
                },
        } => cli::ca::issue(
            cli::ca::Subject {
                service,
                namespace,
                spiffe_id,
            },
            dns,
            ttl,
            out,
            &dir,
        ),
        Command::Cert {
            command:
                CertCommand::Inspect {
                    file,
                    bundle,
                    trust_domain,
                    json,
                },
        } => cli::ca::inspect(&file, bundle, trust_domain.as_deref(), json),
        Command::Cert {
            command:
                CertCommand::Renew {
                    out,
                    if_within,
                    ttl,
                    dir,
                },
        } => cli::ca::renew(&out, if_within, ttl, &dir),
        Command::Token {
            command:
                TokenCommand::Issue {
                    service,
                    namespace,
                    audiences,
                    ttl,
                    dir,
                },
        } => cli::token::issue(&service, &namespace, audiences, ttl, &dir),
        Command::Token {
            command: TokenCommand::Jwks { dir },
        } => cli::token::jwks(&dir),
        Command::Revoke {
            server,
            cert,
            jti,
            sub,
            sid,
            list,
            ttl,
            server_id,
        } => {
            use portcullis::admin_pb::revoke_request::Target;
            let target = jti
                .map(Target::Jti)
                .or(sub.map(Target::Sub))
                .or(sid.map(Target::Sid));
            let action = match target {
                Some(target) if !list => cli::revoke::Action::Revoke { target, ttl: ttl.0 },
                _ => cli::revoke::Action::List,
            };
            let connection = cli::revoke::Connection {
                server: &server,
                cert: &cert,
                server_id: server_id.as_deref(),
            };
            cli::revoke::revoke(&connection, action)
        }
    }
}
