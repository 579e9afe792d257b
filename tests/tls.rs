//! TLS and mTLS with real clients: psql (libpq) with verify-full, client certificates and
//! channel binding; openssl for protocol versions and certificate reload; a rustls client for
//! direct TLS. Behind pgward, a PostgreSQL that only accepts TLS, verified with verify-full.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use support::pg::PgServer;
use support::pgward::{APP_PASSWORD, APP_USER, Options, TestEnv, one_value, run};
use support::pki::TestPki;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// pgward's client-side certificates, issued by `pki`.
struct ClientSide {
    pki: TestPki,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn client_side(dir: &Path) -> ClientSide {
    let pki = TestPki::new(&dir.join("pki"));
    let (server_cert, server_key) = pki.server_cert("pgward", &["localhost"], &[LOCALHOST]);
    ClientSide {
        pki,
        server_cert,
        server_key,
    }
}

fn client_tls_section(cs: &ClientSide, extra: &str) -> String {
    format!(
        "[client_tls]\nmode = \"require\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nreload_interval = 0.2\n{extra}\n",
        cs.server_cert.display(),
        cs.server_key.display(),
        cs.pki.ca_cert().display()
    )
}

/// psql to pgward over TLS with libpq's own settings; no client certificate unless given.
fn psql(env: &TestEnv, user: &str, sslmode: &str, ca: &Path) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .env("PGHOST", "localhost")
        .env("PGPORT", env.port().to_string())
        .env("PGUSER", user)
        .env("PGDATABASE", "appdb")
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGSSLMODE", sslmode)
        .env("PGSSLROOTCERT", ca)
        .env("PGSSLCERT", "/nonexistent")
        .env("PGSSLKEY", "/nonexistent")
        .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

fn with_cert(mut cmd: Command, cert: &Path, key: &Path) -> Command {
    cmd.env("PGSSLCERT", cert).env("PGSSLKEY", key);
    cmd
}

fn env_with(tmp: &Path, client_cert: &str, user_extra: &str, extra: &str) -> (TestEnv, ClientSide) {
    let cs = client_side(tmp);
    let env = TestEnv::with(Options {
        client_tls: client_tls_section(&cs, &format!("client_cert = \"{client_cert}\"")),
        user_extra: user_extra.into(),
        extra: extra.into(),
        ..Options::default()
    });
    (env, cs)
}

#[test]
fn verify_full_with_a_client_certificate_and_channel_binding() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (env, cs) = env_with(tmp.path(), "required", "", "");
    let (cert, key) = cs
        .pki
        .client_cert("app", "app", &["spiffe://test/app"], &[]);
    let mut cmd = with_cert(
        psql(&env, APP_USER, "verify-full", &cs.pki.ca_cert()),
        &cert,
        &key,
    );
    let (ok, out, err) = run(cmd.args(["-c", "SELECT 'over tls'"]));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "over tls");
    // SCRAM-SHA-256-PLUS, bound to pgward's certificate.
    let mut cmd = with_cert(
        psql(&env, APP_USER, "verify-full", &cs.pki.ca_cert()),
        &cert,
        &key,
    );
    cmd.env("PGCHANNELBINDING", "require");
    let (ok, out, err) = run(cmd.args(["-c", "SELECT 'bound'"]));
    assert!(ok, "channel_binding=require: {err}");
    assert_eq!(out.trim(), "bound");
}

#[test]
fn a_required_client_certificate_missing_fails_clearly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (env, cs) = env_with(tmp.path(), "required", "", "");
    let (ok, _, err) =
        run(psql(&env, APP_USER, "verify-full", &cs.pki.ca_cert()).args(["-c", "SELECT 1"]));
    assert!(!ok);
    assert!(
        err.contains("a valid client certificate is required"),
        "{err}"
    );
}

#[test]
fn a_certificate_from_another_ca_fails() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (env, cs) = env_with(tmp.path(), "required", "", "");
    let rogue = TestPki::other_ca(&tmp.path().join("rogue"));
    let (cert, key) = rogue.client_cert("app", "app", &["spiffe://test/app"], &[]);
    let cmd = psql(&env, APP_USER, "verify-full", &cs.pki.ca_cert());
    let (ok, _, err) = run(with_cert(cmd, &cert, &key).args(["-c", "SELECT 1"]));
    assert!(!ok, "a certificate from another CA must be refused");
    assert!(
        err.to_lowercase().contains("ssl") || err.contains("certificate"),
        "{err}"
    );
    // And pgward's certificate does not verify against a CA the client does not trust.
    let (ok, _, err) =
        run(psql(&env, APP_USER, "verify-full", &rogue.ca_cert()).args(["-c", "SELECT 1"]));
    assert!(!ok);
    assert!(err.contains("certificate verify failed"), "{err}");
}

#[test]
fn certificate_identity_must_match_the_user() {
    let tmp = tempfile::tempdir().expect("tmp");
    let users = r#"
[[users]]
name = "svc"
auth = "cert"
cert_identity = "spiffe://test/svc"

[[users]]
name = "both"
auth = "cert+scram"
cert_identity = "CN=both"
scram_verifier = "VERIFIER"
"#;
    let cs = client_side(tmp.path());
    let verifier = pgward::auth::scram::ScramVerifier::new_random(
        &pgward::auth::secret::Secret::new(APP_PASSWORD),
        4096,
    );
    let env = TestEnv::with(Options {
        client_tls: format!(
            "{}\n{}",
            client_tls_section(&cs, "client_cert = \"optional\""),
            users.replace("VERIFIER", &verifier.to_string())
        ),
        ..Options::default()
    });
    let ca = cs.pki.ca_cert();
    let (svc_cert, svc_key) = cs
        .pki
        .client_cert("svc", "svc", &["spiffe://test/svc"], &[]);
    let (other_cert, other_key) =
        cs.pki
            .client_cert("other", "other", &["spiffe://test/other"], &[]);
    // The right certificate is enough for `cert`.
    let mut cmd = with_cert(psql(&env, "svc", "verify-full", &ca), &svc_cert, &svc_key);
    cmd.env_remove("PGPASSWORD");
    let (ok, out, err) = run(cmd.args(["-c", "SELECT current_user"]));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "app_rw");
    // Another identity is refused with 28000.
    let mut cmd = with_cert(
        psql(&env, "svc", "verify-full", &ca),
        &other_cert,
        &other_key,
    );
    let (ok, _, err) = run(cmd.args(["-c", "SELECT 1"]));
    assert!(!ok);
    assert!(
        err.contains("certificate authentication failed for user \"svc\""),
        "{err}"
    );
    // No certificate at all: answered like an unknown user (a failed password exchange), so
    // probing without a certificate does not reveal which certificate users exist.
    let (ok, _, err) = run(psql(&env, "svc", "verify-full", &ca).args(["-c", "SELECT 1"]));
    assert!(!ok);
    assert!(
        err.contains("password authentication failed for user \"svc\""),
        "{err}"
    );
    // cert+scram: the certificate and the password.
    let (both_cert, both_key) = cs.pki.client_cert("both", "both", &[], &[]);
    let mut cmd = with_cert(
        psql(&env, "both", "verify-full", &ca),
        &both_cert,
        &both_key,
    );
    let (ok, _, err) = run(cmd.args(["-c", "SELECT 1"]));
    assert!(ok, "{err}");
    let mut cmd = with_cert(
        psql(&env, "both", "verify-full", &ca),
        &both_cert,
        &both_key,
    );
    cmd.env("PGPASSWORD", "wrong");
    let (ok, _, err) = run(cmd.args(["-c", "SELECT 1"]));
    assert!(!ok);
    assert!(err.contains("password authentication failed"), "{err}");
}

#[test]
fn plaintext_is_refused_when_tls_is_required() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (env, cs) = env_with(tmp.path(), "optional", "", "");
    let (ok, _, err) =
        run(psql(&env, APP_USER, "disable", &cs.pki.ca_cert()).args(["-c", "SELECT 1"]));
    assert!(!ok);
    assert!(err.contains("TLS is required"), "{err}");
    // sslmode=prefer upgrades.
    let (ok, out, err) =
        run(psql(&env, APP_USER, "prefer", &cs.pki.ca_cert()).args(["-c", "SELECT 'upgraded'"]));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "upgraded");
}

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn tls_1_1_is_refused_and_tls_1_3_only_can_be_configured() {
    if !openssl_available() {
        panic!("openssl is needed for this test (apt-get install openssl)");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (env, _cs) = env_with(tmp.path(), "optional", "", "");
    let s_client = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", env.port())])
            .args(["-starttls", "postgres"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let old = s_client(&["-tls1_1"]);
    assert!(
        !old.contains("Protocol  : TLSv1.1") || old.contains("alert"),
        "TLS 1.1 must not be negotiated:\n{old}"
    );
    assert!(old.contains("alert") || old.contains("error"), "{old}");
    let v12 = s_client(&["-tls1_2"]);
    assert!(
        v12.contains("TLSv1.2"),
        "TLS 1.2 is allowed by default:\n{v12}"
    );
    drop(env);
    // min_version = "1.3"
    let cs = client_side(&tmp.path().join("13"));
    let env = TestEnv::with(Options {
        client_tls: client_tls_section(&cs, "min_version = \"1.3\""),
        ..Options::default()
    });
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", env.port())])
        .args(["-starttls", "postgres", "-tls1_2"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("alert"),
        "TLS 1.2 refused with min_version 1.3:\n{text}"
    );
}

/// Direct TLS (PostgreSQL 17): the ClientHello comes first and must name ALPN "postgresql".
#[tokio::test(flavor = "multi_thread")]
async fn direct_tls_needs_alpn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().expect("tmp");
    let (env, cs) = env_with(tmp.path(), "optional", "", "");
    let connect = |alpn: Option<&'static [u8]>| {
        let ca = cs.pki.ca_cert();
        let port = env.port();
        async move {
            let mut roots = rustls::RootCertStore::empty();
            for c in pgward::tls::load_certs(&ca).expect("ca") {
                roots.add(c).expect("root");
            }
            let mut config = rustls::ClientConfig::builder_with_provider(pgward::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            if let Some(a) = alpn {
                config.alpn_protocols = vec![a.to_vec()];
            }
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("tcp");
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(
                    rustls_pki_types::ServerName::try_from("localhost").expect("name"),
                    tcp,
                )
                .await
                .expect("handshake");
            let packet = support::pgward::startup_packet(
                3 << 16,
                &[("user", APP_USER), ("database", "appdb")],
            );
            let _ = tls.write_all(&packet).await;
            let mut first = [0u8; 1];
            match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut first)).await {
                Ok(Ok(1)) => Some(first[0]),
                _ => None,
            }
        }
    };
    assert_eq!(
        connect(Some(b"postgresql")).await,
        Some(b'R'),
        "with ALPN the server asks for authentication"
    );
    assert_eq!(
        connect(None).await,
        None,
        "without ALPN the connection is closed"
    );
}

fn presented_subject(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-starttls", "postgres"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject in:\n{text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn replaced_certificate_files_are_used_for_new_connections_only() {
    if !openssl_available() {
        panic!("openssl is needed for this test");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (env, cs) = env_with(tmp.path(), "optional", "", "");
    let before = presented_subject(env.port());
    assert!(before.contains("localhost"), "{before}");
    // An open session over TLS.
    let mut session = psql(&env, APP_USER, "verify-full", &cs.pki.ca_cert())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    // Replace the files with a certificate for another name (same CA).
    let (new_cert, new_key) =
        cs.pki
            .server_cert("rotated", &["rotated.localhost", "localhost"], &[LOCALHOST]);
    std::fs::copy(&new_cert, &cs.server_cert).expect("replace cert");
    std::fs::copy(&new_key, &cs.server_key).expect("replace key");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = presented_subject(env.port());
        if now.contains("rotated.localhost") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still presenting {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The session opened before the reload still works.
    {
        use std::io::Write;
        let mut stdin = session.stdin.take().expect("stdin");
        writeln!(stdin, "SELECT 'still here';").expect("write");
    }
    let out = session.wait_with_output().expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("still here"));
    // A broken file does not replace the good ones.
    std::fs::write(&cs.server_cert, "not a certificate").expect("break");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(presented_subject(env.port()).contains("rotated.localhost"));
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_verify_full_works_and_a_wrong_server_name_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = TestPki::new(&tmp.path().join("backend-pki"));
    let pg = PgServer::builder().tls(&pki).tls_only().start();
    let ca = pki.ca_cert();
    let extra = format!(
        r#"
[[databases]]
name = "wrongname"
dbname = "appdb"
port = PORT
backend_user = "app_rw"
backend_password_file = "app_rw.password"
backend_tls = {{ mode = "verify-full", ca = "{ca}", server_name = "db.wrong.example" }}

[[databases]]
name = "verifyca"
dbname = "appdb"
port = PORT
backend_user = "app_rw"
backend_password_file = "app_rw.password"
backend_tls = {{ mode = "verify-ca", ca = "{ca}", server_name = "db.wrong.example" }}
"#,
        ca = ca.display()
    );
    let env = TestEnv::with_server(
        pg,
        Options {
            backend_tls: format!(
                "backend_tls = {{ mode = \"verify-full\", ca = \"{}\" }}",
                ca.display()
            ),
            extra,
            ..Options::default()
        },
    );
    let c = env.client("appdb").await;
    assert_eq!(
        one_value(
            &c,
            "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .await,
        "true",
        "the backend leg is TLS"
    );
    let e = env
        .try_client(APP_USER, APP_PASSWORD, "wrongname")
        .await
        .expect_err("a server certificate for another name must be refused");
    assert_eq!(
        support::pgward::sqlstate(&e).as_deref(),
        Some("08001"),
        "{e}"
    );
    // verify-ca checks the chain, not the name.
    let c = env.client("verifyca").await;
    assert_eq!(one_value(&c, "SELECT 'chain ok'").await, "chain ok");
    // Cancel travels over TLS too (the server refuses plaintext).
    let sleeper = env.client("appdb").await;
    let token = sleeper.cancel_token();
    let task = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    let e = task.await.expect("task").expect_err("cancelled");
    assert_eq!(
        support::pgward::sqlstate(&e).as_deref(),
        Some("57014"),
        "{e}"
    );
}

#[test]
fn sessions_end_when_the_client_certificate_expires() {
    use pgward::tls::dev_certs::{LeafSpec, generate, issue};
    use std::time::SystemTime;
    let tmp = tempfile::tempdir().expect("tmp");
    let dev = generate("app").expect("dev pki");
    let write = |name: &str, pem: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let p = tmp.path().join(name);
        std::fs::write(&p, pem).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    };
    let ca = write("ca.crt", &dev.ca_cert_pem, 0o644);
    let server_cert = write("server.crt", &dev.server_cert_pem, 0o644);
    let server_key = write("server.key", &dev.server_key_pem, 0o600);
    let now = SystemTime::now();
    let (cert_pem, key_pem) = issue(
        &dev.ca_cert_pem,
        &dev.ca_key_pem,
        &LeafSpec {
            common_name: "app".into(),
            dns: vec![],
            uris: vec![],
            ips: vec![],
            server: false,
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(4),
        },
    )
    .expect("short-lived client cert");
    let cert = write("client.crt", &cert_pem, 0o644);
    let key = write("client.key", &key_pem, 0o600);
    let env = TestEnv::with(Options {
        client_tls: format!(
            "[client_tls]\nmode = \"require\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nclient_cert = \"required\"\nend_session_on_cert_expiry = true\n",
            server_cert.display(),
            server_key.display(),
            ca.display()
        ),
        ..Options::default()
    });
    let started = std::time::Instant::now();
    let cmd = psql(&env, APP_USER, "verify-full", &ca);
    let (ok, out, err) = run(with_cert(cmd, &cert, &key).args([
        "-c",
        "SELECT 'before'",
        "-c",
        "SELECT pg_sleep(15)",
    ]));
    assert!(!ok, "the session must end:\n{out}");
    assert!(out.contains("before"), "{out}");
    assert!(
        err.contains("client certificate of this session has expired"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
}

/// A CA bundle with many roots of several kinds (like the AWS RDS global bundle: RSA 2048 and
/// 4096, ECDSA P-384) loads, and the right root anywhere in it verifies the server.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_mixed_ca_bundle_loads() {
    assert!(openssl_available(), "openssl is needed for this test");
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = TestPki::new(&tmp.path().join("backend-pki"));
    let pg = PgServer::builder().tls(&pki).tls_only().start();
    let mut bundle = String::new();
    for (i, key) in ["rsa:2048", "rsa:4096", "ec"]
        .iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        let dir = tmp.path().join(format!("other-{i}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-nodes", "-days", "30", "-subj"])
            .arg(format!("/CN=Unrelated Root {i}"))
            .args(["-keyout", "k.pem", "-out", "c.pem"])
            .current_dir(&dir);
        if *key == "ec" {
            cmd.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]);
        } else {
            cmd.args(["-newkey", key]);
        }
        let out = cmd.output().expect("openssl req");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bundle.push_str(&std::fs::read_to_string(dir.join("c.pem")).expect("read"));
        if i == 3 {
            bundle.push_str(&std::fs::read_to_string(pki.ca_cert()).expect("ca"));
        }
    }
    let bundle_path = tmp.path().join("bundle.pem");
    std::fs::write(&bundle_path, bundle).expect("write bundle");
    let env = TestEnv::with_server(
        pg,
        Options {
            backend_tls: format!(
                "backend_tls = {{ mode = \"verify-full\", ca = \"{}\" }}",
                bundle_path.display()
            ),
            ..Options::default()
        },
    );
    let c = env.client("appdb").await;
    assert_eq!(one_value(&c, "SELECT 'bundle ok'").await, "bundle ok");
}

#[test]
fn bytes_after_sslrequest_are_a_protocol_violation_and_slow_handshakes_time_out() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().expect("tmp");
    let cs = client_side(tmp.path());
    let env = TestEnv::with(Options {
        client_tls: client_tls_section(&cs, "handshake_timeout = 0.5"),
        ..Options::default()
    });
    // SSLRequest with a plaintext StartupMessage pipelined behind it: refused, not 'S'.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", env.port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut bytes = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    bytes.extend(support::pgward::startup_packet(
        3 << 16,
        &[("user", APP_USER), ("database", "appdb")],
    ));
    s.write_all(&bytes).expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
    assert!(answer.windows(6).any(|w| w == b"C08P01"), "{answer:?}");
    // A client that gets 'S' and never starts the handshake is dropped after the timeout.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", env.port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .expect("send");
    let mut one = [0u8; 1];
    s.read_exact(&mut one).expect("answer");
    assert_eq!(&one, b"S");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after the handshake timeout, not {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_mtls_with_a_client_certificate() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = TestPki::new(&tmp.path().join("backend-pki"));
    // The server wants a certificate whose CN is the role name, and the password.
    let pg = PgServer::builder().tls(&pki).require_client_cert().start();
    let (cert, key) = pki.client_cert("pgward-backend", "app_rw", &[], &[]);
    let ca = pki.ca_cert();
    let extra = format!(
        r#"
[[databases]]
name = "nocert"
dbname = "appdb"
port = PORT
backend_user = "app_rw"
backend_password_file = "app_rw.password"
backend_tls = {{ mode = "verify-full", ca = "{}" }}
"#,
        ca.display()
    );
    let env = TestEnv::with_server(
        pg,
        Options {
            backend_tls: format!(
                "backend_tls = {{ mode = \"verify-full\", ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
                ca.display(),
                cert.display(),
                key.display()
            ),
            extra,
            ..Options::default()
        },
    );
    let c = env.client("appdb").await;
    assert_eq!(
        one_value(
            &c,
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .await,
        "/CN=app_rw"
    );
    let e = env
        .try_client(APP_USER, APP_PASSWORD, "nocert")
        .await
        .expect_err("without its certificate pgward cannot log in");
    assert_eq!(
        support::pgward::sqlstate(&e).as_deref(),
        Some("08001"),
        "{e}"
    );
}

/// A fault no real server produces: plaintext bytes right behind the 'S' that accepts TLS.
/// They could have been injected by a man in the middle, so the connection is abandoned.
#[tokio::test(flavor = "multi_thread")]
async fn backend_bytes_after_s_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = TestPki::new(&tmp.path().join("pki"));
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = fake.local_addr().expect("addr").port();
    let answered = tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut s, _)) = fake.accept().await {
            let mut req = [0u8; 8];
            if s.read_exact(&mut req).await.is_ok() {
                // 'S' and, in the same segment, a forged ReadyForQuery.
                let _ = s.write_all(b"SZ\0\0\0\x05I").await;
                n += 1;
            }
            if n >= 1 {
                return n;
            }
        }
        n
    });
    let config = pgward::config::from_toml(
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
[[databases]]
name = "fake"
port = {port}
backend_user = "x"
backend_tls = {{ mode = "verify-full", ca = "{}" }}
"#,
            pki.ca_cert().display()
        ),
        tmp.path(),
    )
    .expect("config");
    let app = pgward::App::new(config).expect("app");
    let pool = app.pools().into_iter().next().expect("pool");
    let err = pool.checkout().await.expect_err("must not connect");
    assert!(err.to_string().contains("unencrypted data"), "{err}");
    assert_eq!(answered.await.expect("fake server"), 1);
}
