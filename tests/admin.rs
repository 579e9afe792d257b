//! The admin console from psql: SHOW POOLS/CLIENTS/SERVERS/STATS/CONFIG/POLICIES and RELOAD for
//! an admin user, secrets redacted, every command audited; anyone else is refused.

mod support;

use support::pgward::{APP_PASSWORD, Options, TestEnv, run};

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_user_uses_the_console_from_psql() {
    let env = TestEnv::with(Options {
        server_extra: "admin_users = [\"app\"]".into(),
        extra: "\n[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\nfsync = \"always\"\n".into(),
        ..Options::default()
    });
    // A client with some history, still connected.
    let c = env.client("appdb").await;
    support::pgward::one_value(&c, "SELECT 1").await;
    let show = |cmd: &str| {
        let (ok, out, err) = run(env.psql("pgward").args(["-At", "-F", "|", "-c", cmd]));
        assert!(ok, "{cmd}: {err}");
        out
    };
    let pools = show("SHOW POOLS");
    assert!(pools.contains("appdb|app_rw|"), "{pools}");
    let clients = show("show clients;");
    assert!(clients.contains("|app|appdb|"), "{clients}");
    let stats = show("SHOW STATS");
    let appdb = stats
        .lines()
        .find(|l| l.starts_with("appdb|app_rw|"))
        .unwrap_or_else(|| panic!("{stats}"));
    let xacts: u64 = appdb
        .split('|')
        .nth(2)
        .and_then(|v| v.parse().ok())
        .expect("count");
    assert!(xacts >= 1, "{stats}");
    let servers = show("SHOW SERVERS");
    assert!(servers.contains("appdb|app_rw|"), "{servers}");
    let config = show("SHOW CONFIG");
    assert!(
        config.contains("databases.appdb.backend_password|<redacted>"),
        "{config}"
    );
    for secret in [
        APP_PASSWORD,
        support::pgward::BACKEND_PASSWORD,
        "SCRAM-SHA-256$",
    ] {
        assert!(!config.contains(secret), "SHOW CONFIG shows a secret");
    }
    show("SHOW POLICIES");
    let (ok, _, _) = run(env.psql("pgward").args(["-c", "RELOAD"]));
    assert!(ok);
    let (ok, _, err) = run(env.psql("pgward").args(["-c", "DROP TABLE x"]));
    assert!(!ok && err.contains("unknown admin command"), "{err}");
    drop(c);
    let TestEnv { pgward, pg, dir } = env;
    drop(pgward);
    drop(pg);
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit");
    assert!(audit.contains("\"config.reloaded\""), "{audit}");
    for cmd in ["SHOW POOLS", "SHOW CONFIG", "RELOAD", "unknown"] {
        assert!(
            audit.lines().any(|l| l.contains("\"admin.command\"")
                && l.contains(&format!("\"command\":\"{cmd}\""))),
            "{cmd} not audited:\n{audit}"
        );
    }
}

#[test]
fn anyone_else_is_refused() {
    let env = TestEnv::with(Options::default());
    let (ok, _, err) = run(env.psql("pgward").args(["-c", "SHOW POOLS"]));
    assert!(!ok);
    assert!(
        err.contains("not allowed to use the pgward admin console"),
        "{err}"
    );
}
