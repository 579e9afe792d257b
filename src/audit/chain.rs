//! Tamper evidence: the hash chain over audit lines, and [`verify_file`] which checks it.
//!
//! With `chain = true` every line carries `prev`, the hex SHA-256 of the previous line's exact
//! bytes (without its newline). The first line of a file carries the hash of [`GENESIS`]; a
//! writer appending to an existing file continues from its last line. So editing, inserting or
//! deleting a line breaks the chain at the next line, and a file whose head was cut off no
//! longer starts at the genesis hash.
//!
//! What the chain cannot show by itself: lines cut off the *end* of a file. [`VerifyReport`]
//! gives the last line's hash so it can be compared with a copy kept elsewhere (the same
//! events sent to a SIEM, say).
//!
//! `seq` must increase strictly from line to line, except that it starts again at 1 where a
//! new pgward process began appending.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use ring::digest;
use serde::Deserialize;

use super::encode::hex_sha256;

/// Longer lines are not events (statement text is capped at 1 MiB); not read into memory.
const MAX_LINE: u64 = 16 << 20;

/// The text whose SHA-256 is the first `prev` of a file.
pub const GENESIS: &[u8] = b"pgward audit chain v1";

/// SHA-256 of one line (without its newline).
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, line);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn genesis_hash() -> [u8; 32] {
    line_hash(GENESIS)
}

/// An intact file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub lines: u64,
    /// The first line with `prev`; lines before it were written without the chain. `None`:
    /// no line is chained, so nothing but `seq` order could be checked.
    pub chained_from: Option<u64>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Where `seq` started again at 1 (a new process appended).
    pub restarts: u64,
    /// Hex SHA-256 of the last line: what the next `prev` must be.
    pub last_hash: Option<String>,
    /// The file ends in a line without a newline (a write in progress, or a torn write); it
    /// is not counted or checked.
    pub partial_last_line: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {0}")]
    Io(#[from] io::Error),
    /// The first place where the file is not what the writer wrote.
    #[error("line {line}: {problem}")]
    Break { line: u64, problem: Break },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// Not a JSON object with `ts`, `event` and a numeric `seq` (each once).
    NotAnEvent(String),
    /// A line without `prev` after chained lines.
    MissingPrev,
    /// `prev` is not the hash of the line before (or of the genesis text, on line 1).
    PrevMismatch { expected: String, found: String },
    /// `seq` did not increase (and did not start again at 1).
    SeqNotIncreasing { previous: u64, found: u64 },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::NotAnEvent(why) => write!(f, "not an audit event: {why}"),
            Break::MissingPrev => f.write_str("no prev field, but earlier lines are chained"),
            Break::PrevMismatch { expected, found } => {
                write!(f, "prev is {found}, expected {expected}")
            }
            Break::SeqNotIncreasing { previous, found } => {
                write!(f, "seq {found} after seq {previous}")
            }
        }
    }
}

/// The fields verification reads; serde refuses a line that has one of them twice.
#[derive(Deserialize)]
struct Head {
    #[allow(dead_code)] // required to be present
    ts: String,
    #[allow(dead_code)]
    event: String,
    seq: u64,
    prev: Option<String>,
}

/// Checks the chain and the `seq` order of an audit file, stopping at the first break.
pub fn verify_file(path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_reader(BufReader::new(File::open(path)?))
}

pub fn verify_reader(mut r: impl BufRead) -> Result<VerifyReport, VerifyError> {
    let mut report = VerifyReport {
        lines: 0,
        chained_from: None,
        first_seq: None,
        last_seq: None,
        restarts: 0,
        last_hash: None,
        partial_last_line: false,
    };
    let mut prev_hash = genesis_hash();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if (&mut r).take(MAX_LINE + 1).read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') {
            if buf.len() as u64 > MAX_LINE {
                return Err(VerifyError::Break {
                    line: report.lines + 1,
                    problem: Break::NotAnEvent(format!("longer than {MAX_LINE} bytes")),
                });
            }
            report.partial_last_line = true;
            break;
        }
        buf.pop();
        let n = report.lines + 1;
        let fail = |problem| VerifyError::Break { line: n, problem };
        let head: Head =
            serde_json::from_slice(&buf).map_err(|e| fail(Break::NotAnEvent(e.to_string())))?;
        match (&head.prev, report.chained_from) {
            (Some(found), _) => {
                let expected = hex_sha256(&prev_hash);
                if *found != expected {
                    return Err(fail(Break::PrevMismatch {
                        expected,
                        found: found.clone(),
                    }));
                }
                report.chained_from.get_or_insert(n);
            }
            (None, Some(_)) => return Err(fail(Break::MissingPrev)),
            (None, None) => {}
        }
        match report.last_seq {
            Some(previous) if head.seq <= previous => {
                if head.seq == 1 {
                    report.restarts += 1;
                } else {
                    return Err(fail(Break::SeqNotIncreasing {
                        previous,
                        found: head.seq,
                    }));
                }
            }
            Some(_) => {}
            None => report.first_seq = Some(head.seq),
        }
        report.last_seq = Some(head.seq);
        prev_hash = line_hash(&buf);
        report.lines = n;
    }
    if report.lines > 0 {
        report.last_hash = Some(hex_sha256(&prev_hash));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chained file of `n` lines, as the writer makes it.
    fn chained(n: u64, first_prev: [u8; 32], first_seq: u64) -> Vec<String> {
        let mut prev = first_prev;
        (0..n)
            .map(|i| {
                let line = format!(
                    r#"{{"ts":"2025-01-01T00:00:00.000000Z","event":"connection.accepted","seq":{},"sid":{i},"prev":"{}"}}"#,
                    first_seq + i,
                    hex_sha256(&prev)
                );
                prev = line_hash(line.as_bytes());
                line
            })
            .collect()
    }

    fn verify(lines: &[String]) -> Result<VerifyReport, VerifyError> {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        verify_reader(text.as_bytes())
    }

    fn broken_at(lines: &[String]) -> (u64, Break) {
        match verify(lines) {
            Err(VerifyError::Break { line, problem }) => (line, problem),
            other => panic!("expected a break, got {other:?}"),
        }
    }

    #[test]
    fn genesis_is_fixed() {
        assert_eq!(
            hex_sha256(&genesis_hash()),
            hex_sha256(&line_hash(b"pgward audit chain v1"))
        );
    }

    #[test]
    fn an_intact_chain_verifies() {
        let lines = chained(5, genesis_hash(), 1);
        let r = verify(&lines).expect("intact");
        assert_eq!(r.lines, 5);
        assert_eq!(r.chained_from, Some(1));
        assert_eq!((r.first_seq, r.last_seq, r.restarts), (Some(1), Some(5), 0));
        assert_eq!(
            r.last_hash,
            Some(hex_sha256(&line_hash(lines[4].as_bytes())))
        );
        assert!(!r.partial_last_line);
        assert_eq!(verify(&[]).expect("empty").lines, 0);
    }

    #[test]
    fn an_edited_line_breaks_the_next_one() {
        let mut lines = chained(5, genesis_hash(), 1);
        lines[2] = lines[2].replace("\"sid\":2", "\"sid\":3");
        let (line, problem) = broken_at(&lines);
        assert_eq!(line, 4);
        assert_eq!(
            problem,
            Break::PrevMismatch {
                expected: hex_sha256(&line_hash(lines[2].as_bytes())),
                found: hex_sha256(&line_hash(chained(5, genesis_hash(), 1)[2].as_bytes())),
            }
        );
    }

    #[test]
    fn deleted_inserted_and_reordered_lines_are_found() {
        let lines = chained(5, genesis_hash(), 1);
        let mut deleted = lines.clone();
        deleted.remove(1);
        assert_eq!(broken_at(&deleted).0, 2);
        let mut head_cut = lines.clone();
        head_cut.remove(0);
        assert_eq!(broken_at(&head_cut).0, 1);
        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        assert_eq!(broken_at(&swapped).0, 3);
        let mut unchained = lines.clone();
        unchained[3] = unchained[3]
            .split(",\"prev\"")
            .next()
            .expect("split")
            .to_owned()
            + "}";
        assert_eq!(broken_at(&unchained), (4, Break::MissingPrev));
        let mut garbage = lines;
        garbage.insert(2, "not json".into());
        assert!(matches!(broken_at(&garbage), (3, Break::NotAnEvent(_))));
    }

    #[test]
    fn seq_must_increase_except_at_a_restart() {
        let mut lines = chained(3, genesis_hash(), 5);
        let last = line_hash(lines[2].as_bytes());
        lines.extend(chained(2, last, 1));
        let r = verify(&lines).expect("a restart is fine");
        assert_eq!((r.first_seq, r.last_seq, r.restarts), (Some(5), Some(2), 1));

        let mut lines = chained(3, genesis_hash(), 5);
        let last = line_hash(lines[2].as_bytes());
        lines.extend(chained(1, last, 7));
        assert_eq!(
            broken_at(&lines),
            (
                4,
                Break::SeqNotIncreasing {
                    previous: 7,
                    found: 7
                }
            )
        );
    }

    #[test]
    fn duplicate_fields_are_not_events() {
        let line = r#"{"ts":"x","event":"e","seq":1,"seq":2}"#.to_owned();
        assert!(matches!(broken_at(&[line]), (1, Break::NotAnEvent(_))));
    }

    #[test]
    fn unchained_files_check_seq_only_and_a_chain_may_start_later() {
        let plain: Vec<String> = (1..=3)
            .map(|s| format!(r#"{{"ts":"t","event":"e","seq":{s}}}"#))
            .collect();
        let r = verify(&plain).expect("plain");
        assert_eq!((r.lines, r.chained_from), (3, None));
        let mut mixed = plain.clone();
        mixed.extend(chained(2, line_hash(plain[2].as_bytes()), 1));
        let r = verify(&mixed).expect("chain continues from the last plain line");
        assert_eq!((r.lines, r.chained_from, r.restarts), (5, Some(4), 1));
    }

    #[test]
    fn an_endless_line_is_not_read_into_memory() {
        let long = vec![b'x'; MAX_LINE as usize + 10];
        assert!(matches!(
            verify_reader(&long[..]),
            Err(VerifyError::Break {
                line: 1,
                problem: Break::NotAnEvent(_)
            })
        ));
    }

    #[test]
    fn a_partial_last_line_is_reported_not_checked() {
        let lines = chained(2, genesis_hash(), 1);
        let text = format!("{}\n{}\n{{\"ts\":", lines[0], lines[1]);
        let r = verify_reader(text.as_bytes()).expect("intact so far");
        assert_eq!((r.lines, r.partial_last_line), (2, true));
    }
}
