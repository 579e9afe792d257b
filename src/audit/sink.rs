//! Where encoded events go: the [`Sink`] trait the writer task drives, the [`Batch`] of lines
//! it hands over, and the stdout sink. The file and syslog sinks live in their own modules.
//!
//! The contract that makes retries safe: a failed [`Sink::write`] says how many whole lines
//! were delivered, and leaves no part of a later line behind (as far as the destination allows),
//! so the writer resends exactly the rest and the hash chain stays intact.

use std::future::Future;
use std::io;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::event::EventKind;

/// Lines (JSON events, each ending in `\n`) in sequence order, with what a sink may need to
/// frame them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    buf: Bytes,
    lines: Vec<LineInfo>,
}

#[derive(Debug, Clone, Copy)]
struct LineInfo {
    /// Offset just past this line's newline.
    end: usize,
    kind: EventKind,
    ts: SystemTime,
    seq: u64,
}

/// One line of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// The JSON object, without the newline.
    pub json: &'a [u8],
    pub kind: EventKind,
    /// The event's `ts`.
    pub ts: SystemTime,
    pub seq: u64,
}

impl Batch {
    /// Every line, each with its newline.
    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn line(&self, i: usize) -> Line<'_> {
        let info = self.lines[i];
        let start = if i == 0 { 0 } else { self.lines[i - 1].end };
        Line {
            json: &self.buf[start..info.end - 1],
            kind: info.kind,
            ts: info.ts,
            seq: info.seq,
        }
    }

    pub fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        (0..self.len()).map(|i| self.line(i))
    }

    /// Offsets just past each line's newline.
    pub(crate) fn ends(&self) -> impl Iterator<Item = usize> + '_ {
        self.lines.iter().map(|l| l.end)
    }

    /// The lines from `first` on.
    pub fn tail(&self, first: usize) -> Batch {
        let first = first.min(self.len());
        let offset = match first {
            0 => 0,
            n => self.lines[n - 1].end,
        };
        Batch {
            buf: self.buf.slice(offset..),
            lines: self.lines[first..]
                .iter()
                .map(|l| LineInfo {
                    end: l.end - offset,
                    ..*l
                })
                .collect(),
        }
    }
}

/// Builds a [`Batch`] line by line.
#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    buf: bytes::BytesMut,
    lines: Vec<LineInfo>,
}

impl BatchBuilder {
    /// Appends `json` (one line, no newline).
    pub(crate) fn push(&mut self, json: &[u8], kind: EventKind, ts: SystemTime, seq: u64) {
        self.buf.extend_from_slice(json);
        self.buf.extend_from_slice(b"\n");
        self.lines.push(LineInfo {
            end: self.buf.len(),
            kind,
            ts,
            seq,
        });
    }

    /// The batch so far; the builder starts over, reusing its buffer once the batch is gone.
    pub(crate) fn take(&mut self) -> Batch {
        Batch {
            buf: self.buf.split().freeze(),
            lines: std::mem::take(&mut self.lines),
        }
    }
}

/// A failed write: the first `delivered` lines reached the destination, the rest did not.
#[derive(Debug)]
pub struct SinkError {
    pub delivered: usize,
    pub error: io::Error,
}

impl SinkError {
    pub fn none_delivered(error: io::Error) -> SinkError {
        SinkError {
            delivered: 0,
            error,
        }
    }
}

/// A destination for audit lines, driven by the one writer task (never concurrently).
pub trait Sink: Send + 'static {
    /// Delivers every line of `batch`, in order. On error, reports how many whole lines were
    /// delivered and leaves no partial line behind where it can; the writer retries the rest.
    fn write(&mut self, batch: &Batch) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Makes delivered lines durable (fsync). Nothing to do for most sinks.
    fn sync(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Closes and opens the destination again (SIGHUP after a log rotation). `Ok(true)`: it
    /// may now be a different file, so the hash chain continues from its [`Sink::last_line`].
    fn reopen(&mut self) -> impl Future<Output = io::Result<bool>> + Send {
        async { Ok(false) }
    }

    /// Called about once a second, and before writing after a failure: notice a rotated file,
    /// reconnect a dropped connection. `Ok(true)`: the destination is now a different file, so
    /// the hash chain starts over from its [`Sink::last_line`].
    fn maintain(&mut self) -> impl Future<Output = io::Result<bool>> + Send {
        async { Ok(false) }
    }

    /// The last complete line already at the destination, which the hash chain continues
    /// from; `None` (the default: streams have no past) starts from the genesis hash.
    fn last_line(&mut self) -> impl Future<Output = io::Result<Option<Vec<u8>>>> + Send {
        async { Ok(None) }
    }

    /// The longest line (without newline) the destination can take; longer events are
    /// dropped and counted rather than retried forever.
    fn max_line(&self) -> Option<usize> {
        None
    }
}

/// Writes `data` and reports, on error, how many whole units (ending at `ends`) were written.
/// A partly written unit counts as not written.
pub(crate) async fn write_counting<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    ends: impl Iterator<Item = usize>,
) -> Result<(), SinkError> {
    let mut pos = 0;
    let result = async {
        while pos < data.len() {
            match w.write(&data[pos..]).await {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        w.flush().await
    }
    .await;
    result.map_err(|error| SinkError {
        delivered: ends.take_while(|end| *end <= pos).count(),
        error,
    })
}

/// JSON lines on standard output, for a container's log collector.
pub struct StdoutSink {
    out: tokio::io::Stdout,
}

impl StdoutSink {
    pub fn new() -> StdoutSink {
        StdoutSink {
            out: tokio::io::stdout(),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink::new()
    }
}

impl Sink for StdoutSink {
    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        write_counting(&mut self.out, batch.bytes(), batch.ends()).await
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    fn batch(lines: &[&str]) -> Batch {
        let mut b = BatchBuilder::default();
        for (i, l) in lines.iter().enumerate() {
            b.push(
                l.as_bytes(),
                EventKind::ConnectionAccepted,
                SystemTime::UNIX_EPOCH,
                i as u64 + 1,
            );
        }
        b.take()
    }

    #[test]
    fn lines_and_tails() {
        let b = batch(&["a", "bb", "ccc"]);
        assert_eq!(&b.bytes()[..], b"a\nbb\nccc\n");
        assert_eq!(b.line(1).json, b"bb");
        let t = b.tail(1);
        assert_eq!(&t.bytes()[..], b"bb\nccc\n");
        assert_eq!(
            t.lines().map(|l| (l.json, l.seq)).collect::<Vec<_>>(),
            vec![(&b"bb"[..], 2), (&b"ccc"[..], 3)]
        );
        assert!(b.tail(3).is_empty() && b.tail(9).bytes().is_empty());
    }

    #[test]
    fn the_builder_starts_over() {
        let mut b = BatchBuilder::default();
        b.push(
            b"x",
            EventKind::ConnectionAccepted,
            SystemTime::UNIX_EPOCH,
            1,
        );
        assert_eq!(b.take().len(), 1);
        assert!(b.take().is_empty());
    }

    /// Accepts `budget` bytes, a few at a time, then fails.
    struct Stingy {
        budget: usize,
        got: Vec<u8>,
    }

    impl AsyncWrite for Stingy {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.budget).min(3);
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
            }
            self.budget -= n;
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_count_whole_lines_only() {
        let b = batch(&["aaaa", "bbbb", "cccc"]);
        for (budget, delivered) in [(0, 0), (4, 0), (5, 1), (9, 1), (10, 2), (14, 2)] {
            let mut w = Stingy {
                budget,
                got: Vec::new(),
            };
            let e = write_counting(&mut w, b.bytes(), b.lines.iter().map(|l| l.end))
                .await
                .expect_err("fails");
            assert_eq!(e.delivered, delivered, "budget {budget}");
        }
        let mut w = Stingy {
            budget: 100,
            got: Vec::new(),
        };
        write_counting(&mut w, b.bytes(), b.lines.iter().map(|l| l.end))
            .await
            .expect("writes");
        assert_eq!(w.got, b"aaaa\nbbbb\ncccc\n");
    }
}
