//! Limits: the client connection limit (53300), the per-user limit, and the checkout timeout,
//! each with a clear error; the pooler keeps serving afterwards.

mod support;

use std::time::{Duration, Instant};

use support::pgward::{APP_PASSWORD, APP_USER, Options, TestEnv, db_message, sqlstate};

#[tokio::test(flavor = "multi_thread")]
async fn client_past_the_maximum_gets_53300() {
    let env = TestEnv::with(Options {
        max_client_connections: 2,
        ..Options::default()
    });
    let a = env.client("appdb").await;
    let b = env.client("appdb").await;
    let e = env
        .try_client(APP_USER, APP_PASSWORD, "appdb")
        .await
        .expect_err("third client must be refused");
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    assert!(db_message(&e).contains("too many clients"), "{e}");
    drop(b);
    // The slot frees when a client leaves.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match env.try_client(APP_USER, APP_PASSWORD, "appdb").await {
            Ok(c) => {
                c.simple_query("SELECT 1").await.expect("query");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("slot never freed: {e}"),
        }
    }
    a.simple_query("SELECT 1")
        .await
        .expect("first client unaffected");
}

#[tokio::test(flavor = "multi_thread")]
async fn per_user_limit_gets_53300() {
    let env = TestEnv::with(Options {
        user_max_connections: Some(1),
        ..Options::default()
    });
    let _a = env.client("appdb").await;
    let e = env
        .try_client(APP_USER, APP_PASSWORD, "appdb")
        .await
        .expect_err("second connection of the user must be refused");
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    assert!(
        db_message(&e).contains("too many connections for role"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn checkout_timeout_is_a_clear_error_and_the_session_survives() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        checkout_timeout: 0.5,
        ..Options::default()
    });
    let holder = env.client("appdb").await;
    let waiter = env.client("appdb").await;
    holder.batch_execute("BEGIN").await.expect("begin");
    let started = Instant::now();
    let e = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("no connection free");
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    assert!(
        db_message(&e).contains("no server connection available"),
        "{e}"
    );
    holder.batch_execute("COMMIT").await.expect("commit");
    waiter
        .simple_query("SELECT 1")
        .await
        .expect("works once the pool has room");
}
