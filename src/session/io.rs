//! Reading whole, bounded messages from a client before the relay takes over (startup and
//! authentication), where each message is needed in full.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ClientError;
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::startup::{self, StartupPacket};

/// Writes all of `bytes` and flushes. A TLS stream may keep the last records in its buffer when
/// the socket would block; without the flush they would wait for the next write.
pub async fn send_all<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Reads one typed message. `Ok(None)`: the client closed the connection cleanly.
pub async fn read_client_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Option<(u8, BytesMut)>, ClientError> {
    loop {
        match frame::next_whole(buf, max_len) {
            Ok(Some(f)) => {
                let mut m = buf.split_to(f.len);
                m.advance(HEADER_LEN);
                return Ok(Some((f.tag, m)));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(ClientError::ProtocolViolation {
                    reason: e.to_string(),
                });
            }
        }
        frame::make_room(buf);
        match stream.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => {
                return Err(ClientError::ProtocolViolation {
                    reason: "connection closed in the middle of a message".into(),
                });
            }
            Ok(_) => {}
            Err(_) => return Ok(None),
        }
    }
}

/// Reads the untyped startup packet (bounded at 10,000 bytes). `Ok(None)`: closed before any
/// byte arrived (a port probe or health check).
pub async fn read_startup_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Option<StartupPacket>, ClientError> {
    let violation = |reason: String| ClientError::ProtocolViolation { reason };
    while buf.len() < 4 {
        match stream.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(violation("incomplete startup packet".into())),
            Ok(_) => {}
        }
    }
    let len = startup::declared_len([buf[0], buf[1], buf[2], buf[3]])
        .map_err(|e| violation(e.to_string()))?;
    while buf.len() < len {
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(violation("incomplete startup packet".into())),
            Ok(_) => {}
        }
    }
    let packet = buf.split_to(len);
    startup::parse(&packet[4..]).map(Some).map_err(|e| match e {
        startup::StartupError::UnsupportedVersion { major, minor } => {
            ClientError::UnsupportedProtocol { major, minor }
        }
        other => violation(other.to_string()),
    })
}
