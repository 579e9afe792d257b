//! Malformed input: garbage, absurd lengths, truncated packets, unknown message types. pgward
//! answers with a protocol-violation error where it can, closes that connection, logs it, and
//! keeps serving everyone else.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::logs;
use support::pgward::{RawSession, TestEnv, query_message};

/// Sends `bytes`, then reads until pgward closes. Returns what it answered.
fn send_and_drain(port: u16, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s.write_all(bytes).expect("send");
    if half_close {
        s.shutdown(std::net::Shutdown::Write).expect("half close");
    }
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("pgward did not close the connection: {e}"),
    }
    answer
}

fn is_protocol_violation(answer: &[u8]) -> bool {
    answer.first() == Some(&b'E') && answer.windows(6).any(|w| w == b"C08P01")
}

async fn still_serving(env: &TestEnv) {
    let c = env.client("appdb").await;
    c.simple_query("SELECT 1")
        .await
        .expect("pgward keeps serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_absurd_lengths_and_truncation_close_only_that_connection() {
    let log = logs::capture();
    let env = TestEnv::start();
    let port = env.port();
    let bystander = env.client("appdb").await;
    let answer = send_and_drain(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert!(is_protocol_violation(&answer), "{answer:?}");
    let answer = send_and_drain(port, &[0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0], false);
    assert!(is_protocol_violation(&answer), "{answer:?}");
    let answer = send_and_drain(port, &[0, 0, 0, 2], false);
    assert!(is_protocol_violation(&answer), "{answer:?}");
    // Declares 100 bytes, sends 12, hangs up.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&(3u32 << 16).to_be_bytes());
    truncated.extend_from_slice(b"user");
    let _ = send_and_drain(port, &truncated, true);
    // Probes that connect and leave are not errors.
    let _ = send_and_drain(port, b"", true);
    bystander
        .simple_query("SELECT 'unharmed'")
        .await
        .expect("an established session is unaffected");
    still_serving(&env).await;
    let text = log.contents();
    assert!(text.contains("08P01"), "violations are logged:\n{text}");
}

#[test]
fn oversized_and_unknown_messages_after_login_end_only_that_session() {
    let env = TestEnv::start();
    let mut ok = RawSession::login(env.port(), "appdb");
    ok.send(&query_message("SELECT 1"));
    loop {
        let (tag, _) = ok.read_message();
        if tag == b'Z' {
            break;
        }
    }
    // Declared length over max_message_bytes (1 MiB in the tests): refused from the header,
    // before pgward buffers any of it.
    let mut big = RawSession::login(env.port(), "appdb");
    big.send(&[b'Q', 0x00, 0x20, 0x00, 0x00]);
    assert_eq!(big.errors_until_closed(), vec!["08P01".to_string()]);
    // A message type that does not exist.
    let mut odd = RawSession::login(env.port(), "appdb");
    odd.send(&[b'~', 0, 0, 0, 4]);
    assert_eq!(odd.errors_until_closed(), vec!["08P01".to_string()]);
    // A Query whose body is not a C string.
    let mut broken = RawSession::login(env.port(), "appdb");
    broken.send(&[b'Q', 0, 0, 0, 7, b'a', b'b', b'c']);
    assert_eq!(broken.errors_until_closed(), vec!["08P01".to_string()]);
    // The first session never noticed.
    ok.send(&query_message("SELECT 2"));
    let mut saw_row = false;
    loop {
        let (tag, _) = ok.read_message();
        saw_row |= tag == b'D';
        if tag == b'Z' {
            break;
        }
    }
    assert!(saw_row);
}
