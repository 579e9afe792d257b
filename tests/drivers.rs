//! Real drivers through pgward: asyncpg and psycopg 3 (Python) use named prepared statements
//! the way applications do — asyncpg for every query with arguments, psycopg for everything
//! with `prepare_threshold=0` — in transaction mode with three times more clients than server
//! connections. The scripts in `tests/drivers/` check every result and exit non-zero saying
//! what was wrong; each scenario ends by running every client's statements on each server
//! connection in turn (the others held in open transactions), so statements certainly run
//! on servers where that client did not prepare them. One session-mode run of the asyncpg
//! script is the control.
//!
//! The drivers live in a virtualenv made by `scripts/install-deps.sh` (PEP 668: no system-wide
//! pip); without it these tests fail, saying so.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::pgward::{APP_PASSWORD, APP_USER, Options, TestEnv};

/// The virtualenv `scripts/install-deps.sh` creates, relative to the repository root.
const PYDRIVERS_VENV: &str = "target/pydrivers";

/// More than the script's own deadline (`PGWARD_DEADLINE`, after which it dumps its stacks).
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Clients per script: three times the transaction-mode pool.
const CLIENTS: usize = 6;
const POOL_SIZE: usize = 2;
/// Iterations per client (each a handful of statements); a few seconds per script at most.
const ROUNDS: usize = 100;

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(PYDRIVERS_VENV).join("bin").join("python");
    let ok = Command::new(&python)
        .args(["-c", "import asyncpg, psycopg"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import asyncpg and psycopg: run scripts/install-deps.sh \
         (it creates the virtualenv {PYDRIVERS_VENV} with both drivers)",
        python.display()
    );
    python
}

/// A [`TestEnv`] and the pool size its databases were given (the scripts need it).
struct Env {
    env: TestEnv,
    pool_size: usize,
}

fn env_with(pool_size: usize) -> Env {
    Env {
        env: TestEnv::with(Options {
            pool_size,
            ..Options::default()
        }),
        pool_size,
    }
}

fn transaction_env() -> Env {
    env_with(POOL_SIZE)
}

/// One run of a driver script: which script, scenario, database and process index.
struct Run<'a> {
    script: &'a str,
    scenario: &'a str,
    db: &'a str,
    index: usize,
}

struct Running {
    label: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Run<'_> {
    fn spawn(&self, env: &Env, python: &Path) -> Running {
        let Env { env, pool_size } = env;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers");
        let label = format!(
            "{} {} on {} (process {})",
            self.script, self.scenario, self.db, self.index
        );
        let base = format!("{}-{}-{}", self.script, self.scenario, self.index);
        let out = env.dir.path().join(format!("{base}.stdout"));
        let err = env.dir.path().join(format!("{base}.stderr"));
        let mode = if self.db == "appdb_session" {
            "session"
        } else {
            "transaction"
        };
        let child = Command::new(python)
            .arg(dir.join(self.script))
            .arg(self.scenario)
            .current_dir(&dir)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PGWARD_HOST", "127.0.0.1")
            .env("PGWARD_PORT", env.port().to_string())
            .env("PGWARD_USER", APP_USER)
            .env("PGWARD_PASSWORD", APP_PASSWORD)
            .env("PGWARD_DB", self.db)
            .env("PGWARD_MODE", mode)
            .env("PGWARD_POOL_SIZE", pool_size.to_string())
            .env("PGWARD_CLIENTS", CLIENTS.to_string())
            .env("PGWARD_ROUNDS", ROUNDS.to_string())
            .env("PGWARD_INDEX", self.index.to_string())
            .env("PGWARD_DEADLINE", "45")
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
        Running {
            label,
            child,
            out,
            err,
        }
    }
}

/// Runs the scripts at once against `env`; panics with their output unless all succeed.
fn run_all(env: &Env, runs: &[Run]) {
    let python = python();
    let started = Instant::now();
    let mut running: Vec<Running> = runs.iter().map(|r| r.spawn(env, &python)).collect();
    let mut failures = Vec::new();
    for r in &mut running {
        let status = loop {
            if let Some(status) = r.child.try_wait().expect("wait for the script") {
                break Some(status);
            }
            if started.elapsed() > PROCESS_TIMEOUT {
                let _ = r.child.kill();
                let _ = r.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(&r.out).unwrap_or_default();
        let err = std::fs::read_to_string(&r.err).unwrap_or_default();
        eprintln!("--- {}: {status:?}\n{out}{err}", r.label);
        match status {
            Some(s) if s.success() => {}
            Some(s) => failures.push(format!("{} failed ({s}):\n{out}{err}", r.label)),
            None => failures.push(format!(
                "{} killed after {PROCESS_TIMEOUT:?}:\n{out}{err}",
                r.label
            )),
        }
    }
    eprintln!(
        "{} script(s) finished in {:.2?}",
        runs.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn run_one(env: &Env, script: &str, scenario: &str, db: &str) {
    run_all(
        env,
        &[Run {
            script,
            scenario,
            db,
            index: 0,
        }],
    );
}

const ASYNCPG: &str = "asyncpg_prepared.py";
const PSYCOPG: &str = "psycopg_prepared.py";

#[test]
fn asyncpg_concurrent_queries_and_transactions() {
    let env = transaction_env();
    run_one(&env, ASYNCPG, "concurrent", "appdb");
}

#[test]
fn asyncpg_statement_objects_cursors_and_executemany() {
    let env = transaction_env();
    run_one(&env, ASYNCPG, "statements", "appdb");
}

#[test]
fn asyncpg_same_statement_names_for_different_sql() {
    // Three processes, each with the same asyncpg statement names for its own SQL.
    let env = transaction_env();
    let runs: Vec<Run> = (0..3)
        .map(|index| Run {
            script: ASYNCPG,
            scenario: "collisions",
            db: "appdb",
            index,
        })
        .collect();
    run_all(&env, &runs);
}

#[test]
fn asyncpg_statement_cache_eviction_closes_statements() {
    let env = transaction_env();
    run_one(&env, ASYNCPG, "eviction", "appdb");
}

#[test]
fn asyncpg_pool_reset_between_tasks() {
    let env = transaction_env();
    run_one(&env, ASYNCPG, "pool", "appdb");
}

#[test]
fn asyncpg_session_mode_control() {
    // Session mode gives each client a server connection of its own: room for both scripts'
    // clients and the statements scenario's set-up connection.
    let env = env_with(2 * CLIENTS + 2);
    run_all(
        &env,
        &[
            Run {
                script: ASYNCPG,
                scenario: "concurrent",
                db: "appdb_session",
                index: 0,
            },
            Run {
                script: ASYNCPG,
                scenario: "statements",
                db: "appdb_session",
                index: 1,
            },
        ],
    );
}

#[test]
fn psycopg_prepare_everything_in_threads() {
    let env = transaction_env();
    run_one(&env, PSYCOPG, "threads", "appdb");
}

#[test]
fn psycopg_cache_eviction_deallocates() {
    let env = transaction_env();
    run_one(&env, PSYCOPG, "eviction", "appdb");
}

#[test]
fn psycopg_discard_all_and_deallocate_all() {
    let env = transaction_env();
    run_one(&env, PSYCOPG, "discard", "appdb");
}

/// psycopg with `prepare_threshold=0` prepares a user's `DEALLOCATE ALL` like any query:
/// client `Parse _pg3_1 'DEALLOCATE ALL'`, Sync, `Bind _pg3_1`, Execute, Sync. The server drops
/// every `pgward_*` statement; pgward must forget them for that connection (and drop the client's
/// names), so the next use of any of them — this client's or another's — prepares it again
/// instead of failing with 26000.
#[test]
fn psycopg_deallocate_all_through_extended_protocol() {
    let env = transaction_env();
    run_one(&env, PSYCOPG, "deallocate", "appdb");
}

/// The same with one server connection and no threads: deterministic.
#[test]
fn psycopg_deallocate_all_through_extended_protocol_one_server() {
    let env = env_with(1);
    run_one(&env, PSYCOPG, "deallocate_one_server", "appdb");
}

/// Client B reads the server-side name of client A's statement from `pg_prepared_statements`
/// and tries to deallocate it with a prepared `DEALLOCATE "pgward_1"` (the simple-query form is
/// answered by pgward from B's own statements): refused, and A's statement keeps working.
#[test]
fn psycopg_deallocate_cannot_drop_another_clients_statement() {
    let env = env_with(1);
    run_one(&env, PSYCOPG, "deallocate_other_client", "appdb");
}
