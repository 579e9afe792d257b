//! Framing of the PostgreSQL v3 message stream: the 5-byte header (type byte + big-endian length)
//! and the bounded scan that splits a read buffer into messages.
//!
//! Hand-written because the relay forwards the original bytes and needs to look at most messages
//! only by their header: a general decoder would copy and allocate per message (see the design's
//! hot-path rules). The scanner never reads past the declared length, never panics on peer input,
//! and answers `Ok(None)` until the bytes it needs are there.

use thiserror::Error;

/// How much free space a read buffer gets before each read. `read_buf` on a full `BytesMut`
/// would otherwise read 64 bytes at a time.
pub const READ_CHUNK: usize = 16 * 1024;

/// Ensures `buf` has room for a good-sized read; reuses consumed space when it can.
pub fn make_room(buf: &mut bytes::BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// Type byte + 4-byte length.
pub const HEADER_LEN: usize = 5;

/// The protocol's own ceiling (PostgreSQL rejects anything at or above 1 GiB).
pub const PROTOCOL_MAX_MESSAGE: usize = 0x3fff_ffff;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {len} for message type {}", show_tag(*tag))]
    BadLength { tag: u8, len: i64 },
    #[error("message type {} of {len} bytes exceeds the limit of {max} bytes", show_tag(*tag))]
    TooLong { tag: u8, len: usize, max: usize },
}

fn show_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// A complete message at the start of a buffer: `buf[..len]` is the whole message, header included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub len: usize,
}

impl Frame {
    /// The body of this frame within the buffer it was found in.
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[HEADER_LEN..self.len]
    }
}

/// What the scanner found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// A whole message the caller wants to look at.
    Whole(Frame),
    /// `len` bytes the caller forwards without looking: the header and/or part of the body of a
    /// message whose type the caller does not inspect. Large rows and COPY data stream through
    /// without being buffered whole.
    Passthrough {
        tag: u8,
        len: usize,
        message_start: bool,
    },
}

/// Splits a byte stream into [`Chunk`]s. Holds only the count of body bytes still to pass through
/// for a streamed message, so a reused buffer can be scanned read after read.
#[derive(Debug, Default)]
pub struct FrameScanner {
    streaming: usize,
    streaming_tag: u8,
}

impl FrameScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// True while the bytes of a streamed message are still coming.
    pub fn mid_message(&self) -> bool {
        self.streaming > 0
    }

    /// Body bytes of the streamed message still to come.
    pub fn remaining(&self) -> usize {
        self.streaming
    }

    /// Finds the next chunk at the start of `buf`.
    ///
    /// `inspect(tag)` says which message types must be whole; `max_len` bounds every message's
    /// declared length (header included). `Ok(None)`: more bytes are needed.
    pub fn next(
        &mut self,
        buf: &[u8],
        inspect: impl Fn(u8) -> bool,
        max_len: usize,
    ) -> Result<Option<Chunk>, FrameError> {
        if self.streaming > 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            let n = self.streaming.min(buf.len());
            self.streaming -= n;
            return Ok(Some(Chunk::Passthrough {
                tag: self.streaming_tag,
                len: n,
                message_start: false,
            }));
        }
        let Some(header) = peek_header(buf, max_len)? else {
            return Ok(None);
        };
        if inspect(header.tag) {
            if buf.len() < header.len {
                return Ok(None);
            }
            return Ok(Some(Chunk::Whole(header)));
        }
        let n = header.len.min(buf.len());
        self.streaming = header.len - n;
        self.streaming_tag = header.tag;
        Ok(Some(Chunk::Passthrough {
            tag: header.tag,
            len: n,
            message_start: true,
        }))
    }
}

/// Reads a header at the start of `buf` and checks its length; `Ok(None)` if fewer than 5 bytes.
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<Frame>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let tag = header[0];
    let declared = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    // The length counts itself (4 bytes) but not the type byte.
    if declared < 4 {
        return Err(FrameError::BadLength {
            tag,
            len: declared.into(),
        });
    }
    let len = declared as usize + 1;
    if len > max_len.min(PROTOCOL_MAX_MESSAGE) {
        return Err(FrameError::TooLong {
            tag,
            len,
            max: max_len,
        });
    }
    Ok(Some(Frame { tag, len }))
}

/// The first complete frame of `buf`, if there is one (every type inspected).
pub fn next_whole(buf: &[u8], max_len: usize) -> Result<Option<Frame>, FrameError> {
    match peek_header(buf, max_len)? {
        Some(f) if buf.len() >= f.len => Ok(Some(f)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn whole_frames_wait_for_all_bytes() {
        let m = msg(b'Q', b"select 1\0");
        let mut s = FrameScanner::new();
        for cut in 0..m.len() {
            assert_eq!(
                s.next(&m[..cut], |_| true, 1024).unwrap(),
                None,
                "cut {cut}"
            );
        }
        assert_eq!(
            s.next(&m, |_| true, 1024).unwrap(),
            Some(Chunk::Whole(Frame {
                tag: b'Q',
                len: m.len()
            }))
        );
    }

    #[test]
    fn passthrough_streams_large_messages() {
        let body = vec![7u8; 100];
        let m = msg(b'D', &body);
        let mut s = FrameScanner::new();
        let first = s.next(&m[..30], |t| t == b'Z', 1 << 20).unwrap();
        assert_eq!(
            first,
            Some(Chunk::Passthrough {
                tag: b'D',
                len: 30,
                message_start: true
            })
        );
        assert!(s.mid_message());
        let rest = s.next(&m[30..], |t| t == b'Z', 1 << 20).unwrap();
        assert_eq!(
            rest,
            Some(Chunk::Passthrough {
                tag: b'D',
                len: m.len() - 30,
                message_start: false
            })
        );
        assert!(!s.mid_message());
        let z = msg(b'Z', b"I");
        assert!(matches!(
            s.next(&z, |t| t == b'Z', 1 << 20).unwrap(),
            Some(Chunk::Whole(_))
        ));
    }

    #[test]
    fn bad_and_oversized_lengths_are_errors() {
        let mut s = FrameScanner::new();
        assert!(matches!(
            s.next(&[b'Q', 0, 0, 0, 3], |_| true, 1024),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            s.next(&[b'Q', 0xff, 0xff, 0xff, 0xff], |_| true, 1024),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            s.next(&[b'Q', 0x10, 0, 0, 0], |_| false, 1024),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            let mut s = FrameScanner::new();
            let mut off = 0;
            while let Ok(Some(c)) = s.next(&bytes[off..], |t| t & 1 == 0, 64) {
                let n = match c {
                    Chunk::Whole(f) => f.len,
                    Chunk::Passthrough { len, .. } => len,
                };
                assert!(off + n <= bytes.len());
                off += n;
            }
        }
    }
}
