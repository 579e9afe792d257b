//! The syslog sink: each event as one RFC 5424 message whose MSG is the JSON line, over TCP
//! with RFC 6587 octet-counting framing or over UDP (one datagram per message).
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`: PRI from the configured facility
//! and the event's severity, TIMESTAMP the event's `ts`, MSGID the event name, no
//! STRUCTURED-DATA. The JSON is ASCII, so MSG needs no BOM (MSG-ANY).
//!
//! TCP is reconnected on the next write after any failure; a write that stalls for
//! [`WRITE_TIMEOUT`] counts as a failure, so a receiver that stops reading makes the sink fail
//! (and, with `fail_closed`, stops new sessions) instead of hanging silently. Delivery is what
//! TCP gives: a message the kernel accepted just before the connection died can be lost, and
//! one written partly is sent again whole.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpStream, UdpSocket};

use super::encode::Rfc3339;
use super::settings::{SyslogProtocol, SyslogSettings};
use super::sink::{Batch, Sink, SinkError, write_counting};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// Longest header: `<191>1 ` + timestamp + hostname (255) + app-name (48) + procid (10) +
/// msgid (32) + spaces and `-`.
const MAX_HEADER: usize = 7 + 27 + 1 + 255 + 1 + 48 + 1 + 10 + 1 + 32 + 3;

pub struct SyslogSink {
    settings: SyslogSettings,
    hostname: String,
    procid: String,
    tcp: Option<TcpStream>,
    udp: Option<UdpSocket>,
    /// Framed messages of the batch being written, reused.
    frames: Vec<u8>,
    ends: Vec<usize>,
}

impl SyslogSink {
    pub fn new(settings: SyslogSettings) -> SyslogSink {
        SyslogSink {
            settings,
            hostname: hostname(),
            procid: std::process::id().to_string(),
            tcp: None,
            udp: None,
            frames: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Frames the batch into `self.frames`, message ends into `self.ends`.
    fn frame(&mut self, batch: &Batch) {
        self.frames.clear();
        self.ends.clear();
        let tcp = self.settings.protocol == SyslogProtocol::Tcp;
        let mut msg = Vec::new();
        for line in batch.lines() {
            msg.clear();
            let pri = u16::from(self.settings.facility) * 8 + u16::from(line.kind.severity());
            // Writing into a Vec cannot fail.
            let _ = write!(msg, "<{pri}>1 ");
            msg.extend_from_slice(Rfc3339::new(line.ts).as_str().as_bytes());
            for field in [
                self.hostname.as_str(),
                self.settings.app_name.as_str(),
                self.procid.as_str(),
                line.kind.name(),
                "-",
            ] {
                msg.push(b' ');
                msg.extend_from_slice(field.as_bytes());
            }
            msg.push(b' ');
            msg.extend_from_slice(line.json);
            if tcp {
                let _ = write!(self.frames, "{} ", msg.len());
            }
            self.frames.extend_from_slice(&msg);
            self.ends.push(self.frames.len());
        }
    }

    async fn connect_tcp(&mut self) -> io::Result<&mut TcpStream> {
        if let Some(stream) = &self.tcp {
            // A receiver that closed its side reads as EOF; writing would seem to work and
            // lose the messages, so reconnect first.
            let mut probe = [0u8; 64];
            match stream.try_read(&mut probe) {
                Ok(0) => self.tcp = None,
                Ok(_) => {} // receivers do not talk; ignore it
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.tcp = None,
            }
        }
        if self.tcp.is_none() {
            let mut last = io::Error::other("syslog_address resolved to no address");
            for addr in resolve(&self.settings.address).await? {
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                    Ok(Ok(stream)) => {
                        stream.set_nodelay(true)?;
                        self.tcp = Some(stream);
                        break;
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
                }
            }
            if self.tcp.is_none() {
                return Err(last);
            }
        }
        self.tcp
            .as_mut()
            .ok_or_else(|| io::Error::other("not connected"))
    }

    async fn connect_udp(&mut self) -> io::Result<&UdpSocket> {
        if self.udp.is_none() {
            let addr = resolve(&self.settings.address)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| io::Error::other("syslog_address resolved to no address"))?;
            let local: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let socket = UdpSocket::bind(local).await?;
            // Connected, so ICMP port-unreachable comes back as an error on a later send.
            socket.connect(addr).await?;
            self.udp = Some(socket);
        }
        self.udp
            .as_ref()
            .ok_or_else(|| io::Error::other("no socket"))
    }

    async fn write_tcp(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.frame(batch);
        let frames = std::mem::take(&mut self.frames);
        let ends = std::mem::take(&mut self.ends);
        let result = match self.connect_tcp().await {
            Ok(stream) => {
                match tokio::time::timeout(
                    WRITE_TIMEOUT,
                    write_counting(stream, &frames, ends.iter().copied()),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(SinkError::none_delivered(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "syslog receiver stopped reading",
                    ))),
                }
            }
            Err(e) => Err(SinkError::none_delivered(e)),
        };
        if result.is_err() {
            // Half a frame may be on the wire; only a new connection starts clean.
            self.tcp = None;
        }
        (self.frames, self.ends) = (frames, ends);
        result
    }

    async fn write_udp(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.frame(batch);
        let frames = std::mem::take(&mut self.frames);
        let ends = std::mem::take(&mut self.ends);
        let mut result = Ok(());
        let mut start = 0;
        for (delivered, &end) in ends.iter().enumerate() {
            let sent = match self.connect_udp().await {
                Ok(socket) => socket.send(&frames[start..end]).await,
                Err(e) => Err(e),
            };
            if let Err(error) = sent {
                self.udp = None;
                result = Err(SinkError { delivered, error });
                break;
            }
            start = end;
        }
        (self.frames, self.ends) = (frames, ends);
        result
    }
}

impl Sink for SyslogSink {
    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        match self.settings.protocol {
            SyslogProtocol::Tcp => self.write_tcp(batch).await,
            SyslogProtocol::Udp => self.write_udp(batch).await,
        }
    }

    /// Reconnects. A stream has no file to restart the chain for: it goes on.
    async fn reopen(&mut self) -> io::Result<bool> {
        self.tcp = None;
        self.udp = None;
        self.maintain().await
    }

    /// Connects if not connected, so a failing receiver is noticed (and its recovery too)
    /// while no events flow.
    async fn maintain(&mut self) -> io::Result<bool> {
        match self.settings.protocol {
            SyslogProtocol::Tcp => self.connect_tcp().await.map(|_| false),
            SyslogProtocol::Udp => self.connect_udp().await.map(|_| false),
        }
    }

    fn max_line(&self) -> Option<usize> {
        (self.settings.protocol == SyslogProtocol::Udp).then_some(MAX_DATAGRAM - MAX_HEADER)
    }
}

async fn resolve(address: &str) -> io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host(address).await?.collect())
}

/// This host's name as RFC 5424 wants it (printable ASCII, at most 255), or `-`.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    clean_hostname(&name)
}

fn clean_hostname(name: &str) -> String {
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() { "-".into() } else { name }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::audit::event::EventKind;
    use crate::audit::sink::BatchBuilder;

    fn settings(address: SocketAddr, protocol: SyslogProtocol) -> SyslogSettings {
        SyslogSettings {
            address: address.to_string(),
            protocol,
            facility: 10, // authpriv
            app_name: "pgward".into(),
        }
    }

    fn batch() -> Batch {
        let ts = UNIX_EPOCH + Duration::new(1_764_000_000, 5_000);
        let mut b = BatchBuilder::default();
        b.push(br#"{"event":"auth.failed"}"#, EventKind::AuthFailed, ts, 1);
        b.push(
            br#"{"event":"session.started"}"#,
            EventKind::SessionStarted,
            ts,
            2,
        );
        b.take()
    }

    fn header(pri: u16, msgid: &str) -> String {
        format!(
            "<{pri}>1 2025-11-24T16:00:00.000005Z {} pgward {} {msgid} - ",
            hostname(),
            std::process::id()
        )
    }

    /// Reads one octet-counted frame.
    async fn read_frame<R: AsyncBufReadExt + Unpin>(r: &mut R) -> String {
        let mut len = Vec::new();
        r.read_until(b' ', &mut len).await.expect("length");
        let len: usize = std::str::from_utf8(&len[..len.len() - 1])
            .expect("ascii")
            .parse()
            .expect("number");
        let mut msg = vec![0u8; len];
        r.read_exact(&mut msg).await.expect("message");
        String::from_utf8(msg).expect("utf-8")
    }

    #[tokio::test]
    async fn tcp_messages_are_octet_counted_rfc5424() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut sink = SyslogSink::new(settings(
            listener.local_addr().expect("addr"),
            SyslogProtocol::Tcp,
        ));
        sink.write(&batch()).await.expect("writes");
        let (conn, _) = listener.accept().await.expect("accept");
        let mut r = BufReader::new(conn);
        // authpriv (10) * 8 + warning (4); + informational (6).
        assert_eq!(
            read_frame(&mut r).await,
            format!(
                "{}{}",
                header(84, "auth.failed"),
                r#"{"event":"auth.failed"}"#
            )
        );
        assert_eq!(
            read_frame(&mut r).await,
            format!(
                "{}{}",
                header(86, "session.started"),
                r#"{"event":"session.started"}"#
            )
        );
    }

    #[tokio::test]
    async fn tcp_reconnects_after_the_receiver_goes_away() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut sink = SyslogSink::new(settings(addr, SyslogProtocol::Tcp));
        sink.write(&batch()).await.expect("writes");
        let (conn, _) = listener.accept().await.expect("accept");
        drop(conn);
        // The closed connection is noticed before writing, and a new one is made.
        tokio::time::sleep(Duration::from_millis(50)).await;
        sink.write(&batch()).await.expect("writes again");
        let (conn, _) = listener.accept().await.expect("second connection");
        let mut r = BufReader::new(conn);
        assert!(
            read_frame(&mut r)
                .await
                .ends_with(r#"{"event":"auth.failed"}"#)
        );

        // Nobody listening: the write fails, nothing is counted as delivered.
        drop(r);
        drop(listener);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut failed = false;
        for _ in 0..3 {
            if let Err(e) = sink.write(&batch()).await {
                assert_eq!(e.delivered, 0);
                failed = true;
                break;
            }
        }
        assert!(failed);
        assert!(sink.maintain().await.is_err());
    }

    #[tokio::test]
    async fn udp_sends_one_datagram_per_message() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let mut sink = SyslogSink::new(settings(
            receiver.local_addr().expect("addr"),
            SyslogProtocol::Udp,
        ));
        sink.write(&batch()).await.expect("writes");
        let mut buf = vec![0u8; 70_000];
        let n = receiver.recv(&mut buf).await.expect("datagram");
        assert_eq!(
            std::str::from_utf8(&buf[..n]).expect("utf-8"),
            format!(
                "{}{}",
                header(84, "auth.failed"),
                r#"{"event":"auth.failed"}"#
            )
        );
        let n = receiver.recv(&mut buf).await.expect("datagram");
        assert!(
            std::str::from_utf8(&buf[..n])
                .expect("utf-8")
                .starts_with(&header(86, "session.started"))
        );
        assert_eq!(sink.max_line(), Some(MAX_DATAGRAM - MAX_HEADER));
    }

    #[test]
    fn hostnames_are_printable_ascii() {
        assert_eq!(clean_hostname(" db-1.example\n"), "db-1.example");
        assert_eq!(clean_hostname("hé st"), "hst");
        assert_eq!(clean_hostname(""), "-");
        assert_eq!(clean_hostname(&"h".repeat(300)).len(), 255);
    }
}
