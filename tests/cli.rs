//! The command line: `check-config` (with environment overrides and every error at once) and
//! `scram-verifier`.

use std::process::Command;

use pgward::auth::scram::{ChannelBinding, ScramClient, ScramServer, ScramVerifier};
use pgward::auth::secret::Secret;

fn pgward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgward"))
}

const MINIMAL: &str = r#"
[[users]]
name = "app"
scram_verifier = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

[[databases]]
name = "appdb"
backend_user = "app_rw"
backend_password_env = "APP_RW_PASSWORD"
"#;

#[test]
fn check_config_accepts_a_valid_file_and_the_example() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pgward.toml");
    std::fs::write(&path, MINIMAL).expect("write");
    let out = pgward()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The example refers to the quickstart's development certificates: make some and point the
    // config at them through the environment, as an operator could.
    let certs = dir.path().join("certs");
    let out = pgward()
        .args(["certs", "dev", "--out"])
        .arg(&certs)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pgward.toml");
    let out = pgward()
        .args(["check-config", "--config", example])
        .env("PGWARD__CLIENT_TLS__CERT", certs.join("server.crt"))
        .env("PGWARD__CLIENT_TLS__KEY", certs.join("server.key"))
        .env("PGWARD__CLIENT_TLS__CLIENT_CA", certs.join("ca.crt"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "example config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Pointed at a missing certificate, the example is refused and says why.
    let out = pgward()
        .args(["check-config", "--config", example])
        .env("PGWARD__CLIENT_TLS__CERT", dir.path().join("missing.crt"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.crt"));
}

#[test]
fn environment_overrides_apply_and_are_validated() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pgward.toml");
    std::fs::write(&path, MINIMAL).expect("write");
    let out = pgward()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env("PGWARD__SERVER__MAX_CLIENT_CONNECTIONS", "0")
        .env("PGWARD__SERVER__LISTEN", "not-an-address")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_client_connections"), "{err}");
    assert!(
        err.contains("server.listen"),
        "both errors reported at once: {err}"
    );
    let out = pgward()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env("PGWARD__SERVER__NO_SUCH_KEY", "1")
        .output()
        .expect("run");
    assert!(
        !out.status.success(),
        "unknown keys from the environment are errors too"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
}

#[test]
fn unknown_keys_in_the_file_are_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pgward.toml");
    std::fs::write(&path, format!("{MINIMAL}\npool_sise = 3\n")).expect("write");
    let out = pgward()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pool_sise"));
}

#[test]
fn certs_dev_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().expect("dir");
    let run = |force: bool| {
        let mut cmd = pgward();
        cmd.args(["certs", "dev", "--out"]).arg(dir.path());
        if force {
            cmd.arg("--force");
        }
        cmd.output().expect("run")
    };
    let first = run(false);
    assert!(first.status.success());
    assert!(String::from_utf8_lossy(&first.stdout).contains("NOT FOR PRODUCTION"));
    let again = run(false);
    assert!(
        !again.status.success(),
        "existing files are not overwritten silently"
    );
    assert!(run(true).status.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("server.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "private keys are readable by the owner only"
    );
}

#[test]
fn scram_verifier_reads_stdin_and_prints_a_working_verifier() {
    use std::io::Write;
    let mut child = pgward()
        .arg("scram-verifier")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"correct horse\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(!text.contains("correct horse"));
    let verifier = ScramVerifier::parse(text.trim()).expect("pg_authid format");
    // The verifier authenticates the password it was made from, and only that one.
    for (password, should_pass) in [("correct horse", true), ("correct horse\n", false)] {
        let mut server = ScramServer::new(verifier.clone(), false, ChannelBinding::NotSupported);
        let mut client = ScramClient::new(
            &Secret::new(password),
            ChannelBinding::NotSupported,
            &["SCRAM-SHA-256"],
        )
        .expect("client");
        let first = server
            .client_first(client.mechanism(), &client.client_first())
            .expect("first");
        let fin = client.server_first(&first).expect("final");
        assert_eq!(
            server.client_final(&fin).is_ok(),
            should_pass,
            "{password:?}"
        );
    }
}
