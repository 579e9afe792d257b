//! Regressions from a second review: refusals while earlier pipeline answers are pending, and
//! a failing re-applied setting in the hand-over preparation.

mod support;
use support::pgward::{Options, RawSession, TestEnv, one_value};
use support::wire::{pbe, sync};

fn read_n_ready(s: &mut RawSession, n: usize) -> String {
    let mut out = String::new();
    let mut seen = 0;
    while seen < n {
        let (t, body) = s.read_message();
        out.push(t as char);
        if t == b'E' {
            out.push_str(&format!(
                "<{}>",
                String::from_utf8_lossy(&body).replace('\0', "|")
            ));
        }
        if t == b'Z' {
            out.push_str(&format!("({})", body[0] as char));
            seen += 1;
        }
    }
    out
}

/// Refusal in the 2nd pipeline while the 1st pipeline's Sync is still unanswered.
#[tokio::test(flavor = "multi_thread")]
async fn r1_refusal_with_earlier_sync_pending() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let port = env.port();
    let setup = env.client("appdb").await;
    setup
        .batch_execute("CREATE TABLE r1 (x int)")
        .await
        .unwrap();
    let mut a = RawSession::login(port, "appdb");
    let mut bytes = pbe("SELECT pg_sleep(0.3)");
    bytes.extend(sync());
    bytes.extend(pbe("INSERT INTO r1 VALUES (1)"));
    bytes.extend(pbe("LISTEN x"));
    bytes.extend(sync());
    a.send(&bytes);
    let got = read_n_ready(&mut a, 2);
    eprintln!("R1 client got: {got}");
    let n = one_value(&setup, "SELECT count(*) FROM r1").await;
    eprintln!("R1 rows: {n}");
    assert!(
        !got.contains("pgward_refused"),
        "marker error leaked: {got}"
    );
    assert!(got.contains("0A000"), "refusal error missing: {got}");
    assert_eq!(got.matches('Z').count(), 2, "{got}");
    assert_eq!(n, "0", "the refused pipeline rolled back");
}

/// The 1st pipeline fails on its own; the refusal in the 2nd is then silently dropped.
#[tokio::test(flavor = "multi_thread")]
async fn r2_earlier_pipeline_error_hides_refusal() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let port = env.port();
    let setup = env.client("appdb").await;
    setup
        .batch_execute("CREATE TABLE r2 (x int)")
        .await
        .unwrap();
    let mut a = RawSession::login(port, "appdb");
    let mut bytes = pbe("SELECT 1/0");
    bytes.extend(sync());
    bytes.extend(pbe("INSERT INTO r2 VALUES (1)"));
    bytes.extend(pbe("LISTEN x"));
    bytes.extend(sync());
    a.send(&bytes);
    let got = read_n_ready(&mut a, 2);
    eprintln!("R2 client got: {got}");
    let n = one_value(&setup, "SELECT count(*) FROM r2").await;
    eprintln!("R2 rows: {n}");
    assert!(
        got.contains("22012"),
        "the first pipeline's own error: {got}"
    );
    assert!(got.contains("0A000"), "refusal error missing: {got}");
    assert!(
        !got.contains("pgward_refused"),
        "marker error leaked: {got}"
    );
    assert_eq!(n, "0", "the refused pipeline rolled back");
}

/// A failing re-applied SET rolls back the pipelined RESET ALL: the previous client's
/// settings stay for this client's turn.
#[tokio::test(flavor = "multi_thread")]
async fn r3_failed_preparation_keeps_previous_clients_settings() {
    let env = TestEnv::with(Options {
        pool_size: 1,
        ..Options::default()
    });
    let a = env.client("appdb").await;
    a.batch_execute(
        "CREATE FUNCTION set_tenant(t text) RETURNS text LANGUAGE sql AS $$ SELECT set_config('app.tenant', t, false) $$",
    ).await.unwrap();
    let b = env.client("appdb").await;
    b.batch_execute("SET plpgsql.variable_conflict = 'bogus'")
        .await
        .unwrap();
    eprintln!("B set placeholder");
    a.batch_execute("DO $$BEGIN PERFORM 1; END$$")
        .await
        .unwrap();
    one_value(&a, "SELECT set_tenant('tenant-A')").await;
    let seen = one_value(
        &b,
        "SELECT coalesce(current_setting('app.tenant', true), '<unset>')",
    )
    .await;
    eprintln!("R3 B sees app.tenant = {seen}");
    assert!(
        seen.is_empty() || seen == "<unset>",
        "A's tenant leaked into B: {seen}"
    );
}
