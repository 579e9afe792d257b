//! The file sink: appends JSON lines to one file, fsyncs when the writer asks, and follows log
//! rotation.
//!
//! Rotation is noticed two ways: an explicit [`Sink::reopen`] (the SIGHUP handler), and
//! [`Sink::maintain`], which the writer calls about once a second and which compares the open
//! file's device and inode with what the path names now. A path that is gone or names another
//! file (logrotate's rename + create) is reopened; a file shorter than what was written
//! (logrotate's `copytruncate`) restarts the hash chain.
//!
//! Blocking file calls run on tokio's blocking pool: an fsync can take seconds, and the writer
//! shares its runtime with the sessions.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::sink::{Batch, Sink, SinkError};

/// A last line longer than this is not read back for the hash chain: no event is this long
/// (statement text is capped at 1 MiB), so the file is not one of ours.
const MAX_LINE: u64 = 16 << 20;
const READ_CHUNK: u64 = 64 << 10;

pub struct FileSink {
    path: PathBuf,
    file: Arc<File>,
    dev: u64,
    ino: u64,
    /// The file's length after our last write; a shorter file was truncated under us.
    len: u64,
}

struct Opened {
    file: File,
    dev: u64,
    ino: u64,
    len: u64,
}

impl FileSink {
    /// Opens (creating, mode 0600) `path` for appending.
    pub async fn open(path: impl Into<PathBuf>) -> io::Result<FileSink> {
        let path = path.into();
        let p = path.clone();
        let o = blocking(move || open_file(&p)).await?;
        Ok(FileSink {
            path,
            file: Arc::new(o.file),
            dev: o.dev,
            ino: o.ino,
            len: o.len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_file(path: &Path) -> io::Result<Opened> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        // Audit records name users and statements: not for every local account to read.
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (use sink = \"stdout\" for a stream)",
        ));
    }
    let mut len = meta.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            // A line torn by a crash: end it, so it stays one bad line instead of corrupting
            // the first new one too.
            (&file).write_all(b"\n")?;
            len += 1;
        }
    }
    Ok(Opened {
        dev: meta.dev(),
        ino: meta.ino(),
        len,
        file,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("audit file task failed: {e}")))?
}

/// Appends `data` (whole lines); returns the file's new length. On error, a torn last line is
/// cut off again so the retry starts on a line boundary.
fn append(file: &File, data: &[u8]) -> Result<u64, SinkError> {
    let start = file.metadata().map_err(SinkError::none_delivered)?.len();
    let mut pos = 0;
    let error = loop {
        if pos == data.len() {
            return Ok(start + data.len() as u64);
        }
        match (&*file).write(&data[pos..]) {
            Ok(0) => break io::Error::from(io::ErrorKind::WriteZero),
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break e,
        }
    };
    let whole = data[..pos]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    if pos > whole {
        // Best effort: if even this fails, the torn line is visible to `audit verify`.
        let _ = file.set_len(start + whole as u64);
    }
    Err(SinkError {
        delivered: data[..whole].iter().filter(|&&b| b == b'\n').count(),
        error,
    })
}

/// The last complete line of `file` (without its newline), `None` when it is empty.
fn read_last_line(file: &File) -> io::Result<Option<Vec<u8>>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    // Where the line ends: before its newline (open made sure there is one, unless something
    // else appended since).
    let end = if last[0] == b'\n' { len - 1 } else { len };
    let mut start = end;
    let mut chunk = vec![0u8; READ_CHUNK as usize];
    while start > 0 {
        let from = start.saturating_sub(READ_CHUNK);
        let part = &mut chunk[..(start - from) as usize];
        file.read_exact_at(part, from)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            start = from + i as u64 + 1;
            break;
        }
        start = from;
        if end - start > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the last line is longer than {MAX_LINE} bytes: not an audit file"),
            ));
        }
    }
    let mut line = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut line, start)?;
    Ok(Some(line))
}

impl Sink for FileSink {
    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let file = Arc::clone(&self.file);
        let data = batch.bytes().clone();
        match tokio::task::spawn_blocking(move || append(&file, &data)).await {
            Ok(Ok(len)) => {
                self.len = len;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(SinkError::none_delivered(io::Error::other(format!(
                "audit file task failed: {e}"
            )))),
        }
    }

    async fn sync(&mut self) -> io::Result<()> {
        let file = Arc::clone(&self.file);
        blocking(move || file.sync_data()).await
    }

    async fn reopen(&mut self) -> io::Result<bool> {
        let path = self.path.clone();
        let o = blocking(move || open_file(&path)).await?;
        self.file = Arc::new(o.file);
        (self.dev, self.ino, self.len) = (o.dev, o.ino, o.len);
        Ok(true)
    }

    async fn maintain(&mut self) -> io::Result<bool> {
        match tokio::fs::metadata(&self.path).await {
            Ok(m) if (m.dev(), m.ino()) == (self.dev, self.ino) => {
                if m.len() < self.len {
                    // copytruncate: same file, new contents.
                    self.len = m.len();
                    return Ok(true);
                }
                Ok(false)
            }
            Ok(_) => self.reopen().await,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.reopen().await,
            Err(e) => Err(e),
        }
    }

    async fn last_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let file = Arc::clone(&self.file);
        blocking(move || read_last_line(&file)).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::audit::event::EventKind;
    use crate::audit::sink::BatchBuilder;

    fn batch(lines: &[&str]) -> Batch {
        let mut b = BatchBuilder::default();
        for l in lines {
            b.push(
                l.as_bytes(),
                EventKind::ConnectionAccepted,
                SystemTime::UNIX_EPOCH,
                1,
            );
        }
        b.take()
    }

    #[tokio::test]
    async fn appends_and_reads_back_the_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        let mut sink = FileSink::open(&path).await.expect("opens");
        assert_eq!(sink.last_line().await.expect("reads"), None);
        sink.write(&batch(&["{\"a\":1}", "{\"b\":2}"]))
            .await
            .expect("writes");
        sink.sync().await.expect("syncs");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"{\"a\":1}\n{\"b\":2}\n"
        );
        assert_eq!(
            sink.last_line().await.expect("reads").as_deref(),
            Some(&b"{\"b\":2}"[..])
        );
        let mode = std::fs::metadata(&path).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_ended_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":").expect("write");
        let mut sink = FileSink::open(&path).await.expect("opens");
        assert_eq!(
            sink.last_line().await.expect("reads").as_deref(),
            Some(&b"{\"b\":"[..])
        );
        sink.write(&batch(&["{\"c\":3}"])).await.expect("writes");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"{\"a\":1}\n{\"b\":\n{\"c\":3}\n"
        );
    }

    #[test]
    fn long_last_lines_are_read_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        let long = "x".repeat(3 * READ_CHUNK as usize + 17);
        for content in [
            format!("first\n{long}\n"),
            format!("{long}\n"),
            long.clone(),
            "\n".to_owned(),
        ] {
            std::fs::write(&path, &content).expect("write");
            let file = File::open(&path).expect("open");
            let want = content
                .trim_end_matches('\n')
                .rsplit('\n')
                .next()
                .map(|s| s.as_bytes());
            assert_eq!(
                read_last_line(&file).expect("reads").as_deref(),
                want,
                "{}",
                content.len()
            );
        }
    }

    #[tokio::test]
    async fn maintain_follows_rename_removal_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        let mut sink = FileSink::open(&path).await.expect("opens");
        sink.write(&batch(&["one"])).await.expect("writes");
        assert!(!sink.maintain().await.expect("checks"));

        std::fs::rename(&path, dir.path().join("a.jsonl.1")).expect("rename");
        assert!(sink.maintain().await.expect("reopens"));
        sink.write(&batch(&["two"])).await.expect("writes");
        assert_eq!(std::fs::read(&path).expect("read"), b"two\n");

        std::fs::remove_file(&path).expect("remove");
        assert!(sink.maintain().await.expect("reopens"));
        sink.write(&batch(&["three"])).await.expect("writes");
        assert_eq!(std::fs::read(&path).expect("read"), b"three\n");

        File::create(&path).expect("truncate");
        assert!(sink.maintain().await.expect("notices"));
        assert!(!sink.maintain().await.expect("checks"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.jsonl.1")).expect("read"),
            "one\n"
        );
    }

    #[tokio::test]
    async fn directories_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(FileSink::open(dir.path()).await.is_err());
    }
}
