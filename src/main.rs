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
        pgward::run(config, listener, pgward::signal::shutdown_requested()).await;
        ExitCode::SUCCESS
    })
}
