//! The `pgward` command line: run the pooler, check a config, make SCRAM verifiers.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgward::auth::scram::ScramVerifier;
use pgward::auth::secret::Secret;
use pgward::config::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "pgward",
    version,
    about = "A security-enforcing PostgreSQL connection pooler"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pooler.
    Run {
        #[arg(
            long,
            short,
            default_value = "config/pgward.toml",
            env = "PGWARD_CONFIG"
        )]
        config: PathBuf,
    },
    /// Validate a configuration file (with environment overrides) and exit.
    CheckConfig {
        #[arg(
            long,
            short,
            default_value = "config/pgward.toml",
            env = "PGWARD_CONFIG"
        )]
        config: PathBuf,
    },
    /// Read a password from standard input and print a SCRAM-SHA-256 verifier for it
    /// (PostgreSQL's pg_authid format), for `scram_verifier` or a users file.
    ScramVerifier {
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// Certificates for development and tests.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write a development CA, a server certificate for localhost/127.0.0.1 and a client
    /// certificate. NOT FOR PRODUCTION: the CA key sits next to the certificates.
    Dev {
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// The client certificate's user: CN=<user>, URI SAN spiffe://pgward.dev/<user>.
        #[arg(long, default_value = "app")]
        client_user: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour codes only for a person at a terminal, never in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { config } => match config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} users, {} databases)",
                    config.display(),
                    c.users.len(),
                    c.databases.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::FAILURE
            }
        },
        Command::ScramVerifier { iterations } => {
            let mut input = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut input) {
                eprintln!("reading the password from stdin: {e}");
                return ExitCode::FAILURE;
            }
            while matches!(input.last(), Some(b'\n' | b'\r')) {
                input.pop();
            }
            if input.is_empty() {
                eprintln!("no password on stdin");
                return ExitCode::FAILURE;
            }
            if !(4096..=10_000_000).contains(&iterations) {
                eprintln!("--iterations must be between 4096 and 10000000");
                return ExitCode::FAILURE;
            }
            let v = ScramVerifier::new_random(&Secret::new(input), iterations);
            println!("{v}");
            ExitCode::SUCCESS
        }
        Command::Certs {
            command:
                CertsCommand::Dev {
                    out,
                    client_user,
                    force,
                },
        } => match pgward::tls::dev_certs::write_dev_certs(&out, &client_user, force) {
            Ok(c) => {
                println!("development certificates (NOT FOR PRODUCTION) written:");
                for (what, p) in [
                    ("CA certificate", &c.ca_cert),
                    (
                        "server certificate (localhost, 127.0.0.1, ::1)",
                        &c.server_cert,
                    ),
                    ("server key", &c.server_key),
                    ("client certificate", &c.client_cert),
                    ("client key", &c.client_key),
                ] {
                    println!("  {what}: {}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pgward certs dev: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: PathBuf) -> ExitCode {
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.server.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %config.server.listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(listen = %config.server.listen, "pgward listening");
        match pgward::run(config, listener, pgward::signal::shutdown_requested()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                ExitCode::FAILURE
            }
        }
    })
}
