//! Configuration reload (RELOAD in the admin console, SIGHUP): users, policies and pools change
//! without a restart; running sessions adopt the change at their next idle point; a broken file
//! changes nothing.

mod support;

use std::time::Duration;

use pgward::auth::scram::ScramVerifier;
use pgward::auth::secret::Secret;
use support::pgward::{APP_PASSWORD, APP_USER, Options, TestEnv, one_value, run};

const TEMP_USER: &str = "temp";
const TEMP_PASSWORD: &str = "temp-secret-2b81";

fn temp_user_toml() -> String {
    let verifier = ScramVerifier::new_random(&Secret::new(TEMP_PASSWORD), 4096);
    format!("\n[[users]]\nname = \"{TEMP_USER}\"\nscram_verifier = \"{verifier}\"\n")
}

/// Rewrites the running config file with `edit` applied.
fn edit_config(env: &TestEnv, edit: impl FnOnce(String) -> String) {
    let path = env.config_path();
    let text = std::fs::read_to_string(&path).expect("read config");
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&path, edited).expect("write config");
}

fn admin_env(extra: &str) -> TestEnv {
    TestEnv::with(Options {
        server_extra: "admin_users = [\"app\"]".into(),
        extra: extra.into(),
        ..Options::default()
    })
}

fn reload_from_psql(env: &TestEnv) -> (bool, String) {
    let (ok, out, err) = run(env.psql("pgward").args(["-c", "RELOAD"]));
    (ok, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_adds_a_user_and_a_removed_users_sessions_end() {
    let env = admin_env("");
    assert!(
        env.try_client(TEMP_USER, TEMP_PASSWORD, "appdb")
            .await
            .is_err(),
        "not configured yet"
    );
    edit_config(&env, |t| t + &temp_user_toml());
    let (ok, out) = reload_from_psql(&env);
    assert!(ok, "{out}");
    let temp = env
        .try_client(TEMP_USER, TEMP_PASSWORD, "appdb")
        .await
        .expect("the reloaded user logs in");
    assert_eq!(one_value(&temp, "SELECT current_user").await, "app_rw");

    // Removed again: its idle session ends before running anything more; new logins fail.
    edit_config(&env, |t| {
        t.split("\n[[users]]\nname = \"temp\"")
            .next()
            .expect("head")
            .to_string()
    });
    let (ok, out) = reload_from_psql(&env);
    assert!(ok, "{out}");
    let err = temp
        .simple_query("SELECT 1")
        .await
        .expect_err("the session of a removed user ends");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "57P01", "{db:?}");
    assert!(db.message().contains("configuration reload"), "{db:?}");
    assert!(
        env.try_client(TEMP_USER, TEMP_PASSWORD, "appdb")
            .await
            .is_err()
    );
    // Everyone else is untouched.
    let app = env.client("appdb").await;
    assert_eq!(one_value(&app, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_policy_applies_to_running_sessions_at_their_next_transaction() {
    let env = TestEnv::with(Options {
        user_extra: "policy = \"p\"".into(),
        extra: "\n[policies.p]\nmode = \"off\"\n".into(),
        ..Options::default()
    });
    env.pg.superuser_sql_in(
        "appdb",
        "CREATE TABLE written (v text); GRANT ALL ON written TO app_rw;",
    );
    let c = env.client("appdb").await;
    let insert = c
        .prepare("INSERT INTO written VALUES ($1)")
        .await
        .expect("prepare");
    c.execute(&insert, &[&"before"]).await.expect("allowed");
    let pools_before = env.pgward.app.pools().len();

    // Now read-only, enforced.
    edit_config(&env, |t| {
        t.replace("mode = \"off\"", "mode = \"enforce\"\nread_only = true")
    });
    let report = env.pgward.app.reload().expect("reload");
    assert_eq!(report.policies_changed, vec!["p".to_string()]);

    // The statement prepared under the old policy is refused, as is a new write...
    let err = c
        .execute(&insert, &[&"after"])
        .await
        .expect_err("a revoked prepared statement");
    let db = err.as_db_error().expect("server error");
    assert_eq!(db.code().code(), "42501", "{db:?}");
    let err = c
        .simple_query("INSERT INTO written VALUES ('x')")
        .await
        .expect_err("denied");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("42501"),
        "{err:?}"
    );
    // ... reads still work, on a connection of the read-only pool the new policy routes to.
    assert_eq!(
        one_value(&c, "SHOW default_transaction_read_only").await,
        "on"
    );
    assert!(
        env.pgward.app.pools().len() > pools_before,
        "a read-only pool"
    );
    assert_eq!(
        env.pg
            .superuser_sql_in("appdb", "SELECT string_agg(v, ',') FROM written")
            .trim(),
        "before"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_pool_is_rebuilt_and_sessions_move_to_it() {
    let env = TestEnv::start();
    let tx = env.client("appdb").await;
    let session = env.client("appdb_session").await;
    assert_eq!(one_value(&tx, "SELECT 1").await, "1");
    assert_eq!(one_value(&session, "SELECT 1").await, "1");
    let pool_of = |db: &str| {
        env.pgward
            .app
            .pools()
            .into_iter()
            .find(|p| p.key.database == db)
            .expect("pool")
    };
    let old_tx_pool = pool_of("appdb");
    let old_session_pool = pool_of("appdb_session");

    // Only appdb changes.
    edit_config(&env, |t| t.replacen("pool_size = 5", "pool_size = 2", 1));
    let report = env.pgward.app.reload().expect("reload");
    assert_eq!((report.pools_created, report.pools_retired), (1, 1));
    let new_tx_pool = pool_of("appdb");
    assert_eq!(new_tx_pool.settings().size, 2);
    assert!(old_tx_pool.is_closed(), "the replaced pool is retired");
    assert!(
        std::sync::Arc::ptr_eq(&old_session_pool, &pool_of("appdb_session")),
        "an unchanged pool is kept with its connections"
    );

    // The transaction-mode session runs its next transaction on the new pool.
    assert_eq!(one_value(&tx, "SELECT 2").await, "2");
    assert!(new_tx_pool.stats().total >= 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(old_tx_pool.stats().total, 0, "old connections closed");
    assert_eq!(one_value(&session, "SELECT 3").await, "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_changes_nothing_and_sighup_reloads() {
    let env = admin_env("\n[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\nfsync = \"always\"\n");
    let c = env.client("appdb").await;
    let good = std::fs::read_to_string(env.config_path()).expect("read");
    edit_config(&env, |t| t.replace("pool_size = 5", "pool_size = \"many\""));
    let (ok, out) = reload_from_psql(&env);
    assert!(!ok, "{out}");
    assert!(out.contains("configuration not reloaded"), "{out}");
    assert_eq!(one_value(&c, "SELECT 1").await, "1");
    assert!(
        env.try_client(APP_USER, APP_PASSWORD, "appdb")
            .await
            .is_ok()
    );

    // A valid file with a new user, picked up on SIGHUP.
    std::fs::write(env.config_path(), good + &temp_user_toml()).expect("write");
    // Let the server's SIGHUP listener register before the signal (default action: exit).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, _, err) =
        run(std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]));
    assert!(ok, "{err}");
    let mut logged_in = false;
    for _ in 0..50 {
        if env
            .try_client(TEMP_USER, TEMP_PASSWORD, "appdb")
            .await
            .is_ok()
        {
            logged_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged_in, "SIGHUP reloaded the config");

    // Both reloads are audited, the failed one as such.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = std::fs::read_to_string(env.dir.path().join("audit.jsonl")).expect("audit");
    let reloads: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "config.reloaded")
        .collect();
    assert_eq!(reloads.len(), 2, "{audit}");
    assert_eq!(reloads[0]["succeeded"], false, "{audit}");
    assert_eq!(reloads[1]["succeeded"], true, "{audit}");
}
