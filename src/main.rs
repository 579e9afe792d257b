//! The `pgward` command line: run the pooler, check a config, make SCRAM verifiers, and the
//! statement-policy tools (fingerprints, allowlists built from learned statements).

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
    /// Print a statement's fingerprint and normalized text (what allowlists hold).
    Fingerprint {
        /// The SQL statement.
        sql: String,
        /// Replace literals with `?` (for policies with replace_literals = true).
        #[arg(long)]
        replace_literals: bool,
    },
    /// Allowlists: build one from learned statements, or check one.
    Allowlist {
        #[command(subcommand)]
        command: AllowlistCommand,
    },
    /// Audit files.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check an audit file: every line an event, seq increasing, and (when written with
    /// chain = true) each line's hash of the one before. Reports the first break.
    Verify { file: PathBuf },
}

#[derive(Subcommand)]
enum AllowlistCommand {
    /// Turn a learn-mode file (JSON lines) into an allowlist file.
    Build {
        /// The policy's learn_file.
        #[arg(long)]
        learned: PathBuf,
        /// Only statements learned for this user.
        #[arg(long)]
        user: Option<String>,
        /// Only statements learned for this database.
        #[arg(long)]
        database: Option<String>,
        /// Where to write the allowlist; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The statements were learned with replace_literals = true.
        #[arg(long)]
        replace_literals: bool,
    },
    /// Validate an allowlist file: syntax, normalized texts, fingerprints, duplicates.
    Check {
        file: PathBuf,
        #[arg(long)]
        replace_literals: bool,
    },
}

fn literal_mode(replace: bool) -> pgward::policy::normalize::LiteralMode {
    if replace {
        pgward::policy::normalize::LiteralMode::Replace
    } else {
        pgward::policy::normalize::LiteralMode::Keep
    }
}

fn allowlist_command(command: AllowlistCommand) -> ExitCode {
    use pgward::policy::allowlist;
    match command {
        AllowlistCommand::Build {
            learned,
            user,
            database,
            out,
            replace_literals,
        } => {
            let text = match std::fs::read_to_string(&learned) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{}: {e}", learned.display());
                    return ExitCode::FAILURE;
                }
            };
            let records = match allowlist::parse_learned(&text) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}: {e}", learned.display());
                    return ExitCode::FAILURE;
                }
            };
            let entries =
                allowlist::build_allowlist(&records, user.as_deref(), database.as_deref());
            let header = format!(
                "pgward allowlist built from {} ({} statements{}{}); review before enforcing",
                learned.display(),
                entries.len(),
                user.as_deref()
                    .map(|u| format!(", user {u}"))
                    .unwrap_or_default(),
                database
                    .as_deref()
                    .map(|d| format!(", database {d}"))
                    .unwrap_or_default(),
            );
            let rendered = allowlist::render(&entries, &header);
            // What is written must load: a learned statement sqlparser cannot parse would make
            // the allowlist unusable, so it is reported here rather than at startup.
            if let Err(e) = allowlist::Allowlist::parse(&rendered, literal_mode(replace_literals)) {
                eprintln!("the built allowlist does not validate: {e}");
                return ExitCode::FAILURE;
            }
            match out {
                Some(path) => {
                    if let Err(e) = std::fs::write(&path, rendered) {
                        eprintln!("{}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                    eprintln!("{}: {} statements", path.display(), entries.len());
                }
                None => print!("{rendered}"),
            }
            ExitCode::SUCCESS
        }
        AllowlistCommand::Check {
            file,
            replace_literals,
        } => match allowlist::Allowlist::load(&file, literal_mode(replace_literals)) {
            Ok(list) => {
                println!("{}: ok ({} statements)", file.display(), list.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
    }
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
        Command::Fingerprint {
            sql,
            replace_literals,
        } => match pgward::policy::normalize::normalize(&sql, literal_mode(replace_literals)) {
            Ok(n) => {
                println!("fingerprint: {}", n.fingerprint);
                println!("normalized:  {}", n.text);
                if n.statements != 1 {
                    println!("statements:  {}", n.statements);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot normalize: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Allowlist { command } => allowlist_command(command),
        Command::Audit {
            command: AuditCommand::Verify { file },
        } => match pgward::audit::verify_file(&file) {
            Ok(r) => {
                println!(
                    "{}: ok ({} events, seq {}..{}{})",
                    file.display(),
                    r.lines,
                    r.first_seq.unwrap_or(0),
                    r.last_seq.unwrap_or(0),
                    if r.chained_from.is_some() {
                        ", hash chain intact"
                    } else {
                        ", not chained"
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
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
        let admin = match tokio::net::TcpListener::bind(config.server.admin_listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %config.server.admin_listen, error = %e, "cannot listen (admin)");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(listen = %config.server.listen, admin = %config.server.admin_listen, "pgward listening");
        // The server runs as a task on the worker threads, not on this (main) thread: an
        // accept loop here would have the I/O driver wake this thread for every new client and
        // this thread wake a worker for its session, two more context switches per connection
        // (pgbench -C: 8.7 voluntary switches per connection, against PgBouncer's 5.7).
        let server = tokio::spawn(pgward::run(
            config,
            listener,
            Some(admin),
            pgward::signal::shutdown_requested(),
        ));
        match server.await {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot start");
                ExitCode::FAILURE
            }
            Err(e) => {
                tracing::error!(error = %e, "the server task failed");
                ExitCode::FAILURE
            }
        }
    })
}
