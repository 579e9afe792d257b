//! Logs: no secret ever reaches them. Everything pgward logs at TRACE level during logins,
//! failed logins, backend logins, rotation and errors is captured and searched for the
//! passwords involved.

mod support;

use support::logs;
use support::pgward::{APP_PASSWORD, APP_USER, BACKEND_PASSWORD, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn no_password_or_verifier_key_is_logged() {
    let log = logs::capture();
    let env = TestEnv::start();
    let wrong = "wrong-password-5d1e";
    let c = env.client("appdb").await;
    c.simple_query("SELECT 1").await.expect("query");
    let _ = env.try_client(APP_USER, wrong, "appdb").await;
    let _ = env.try_client("nobody", wrong, "appdb").await;
    // A backend login that fails (wrong backend password in the file) is logged too.
    std::fs::write(
        env.dir.path().join("app_rw.password"),
        "stale-backend-pw-88\n",
    )
    .expect("write");
    // A second client needs a connection of its own while the first holds one.
    let d = env.client("appdb").await;
    c.batch_execute("BEGIN").await.expect("begin");
    let _ = d.simple_query("SELECT 1").await;
    c.batch_execute("COMMIT").await.expect("commit");
    drop(d);
    let config_text = std::fs::read_to_string(env.config_path()).expect("config");
    drop(c);
    drop(env);
    let text = log.contents();
    assert!(
        text.contains("authentication failed")
            && text.contains("opening a server connection failed"),
        "the capture must see pgward's logs:\n{text}"
    );
    for secret in [APP_PASSWORD, BACKEND_PASSWORD, wrong, "stale-backend-pw-88"] {
        assert!(
            !text.contains(secret),
            "secret {secret:?} found in the log:\n{text}"
        );
    }
    // Nor the keys of the SCRAM verifier (StoredKey:ServerKey).
    let verifier = config_text
        .lines()
        .find_map(|l| l.strip_prefix("scram_verifier = \""))
        .expect("verifier in config");
    let keys = verifier.rsplit('$').next().expect("keys");
    for key in keys.trim_end_matches('"').split(':') {
        assert!(!text.contains(key), "verifier key found in the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_in_transaction_and_client_idle_timeouts() {
    let env = TestEnv::with(support::pgward::Options {
        pool_size: 1,
        server_extra: "idle_in_transaction_timeout = 0.5\nclient_idle_timeout = 1.5".into(),
        ..Default::default()
    });
    let a = env.client("appdb").await;
    a.batch_execute("BEGIN").await.expect("begin");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let e = a.simple_query("SELECT 1").await.expect_err("timed out");
    let code = support::pgward::sqlstate(&e);
    // The connection was closed with 25P03; depending on timing the client sees the error or
    // only the closed socket.
    assert!(code.is_none() || code.as_deref() == Some("25P03"), "{e}");
    // The server connection was rolled back and returned: the pool of one serves the next.
    let b = env.client("appdb").await;
    b.simple_query("SELECT 1").await.expect("pool usable");
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    assert!(
        b.simple_query("SELECT 1").await.is_err(),
        "idle client closed"
    );
    let c = env.client("appdb").await;
    c.simple_query("SELECT 1").await.expect("pool usable");
}
