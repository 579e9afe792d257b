//! Statement shapes: a statement's bytes with its integer literals masked, for statements
//! simple enough to tell their integer literals apart without a tokenizer. Two statements with
//! one shape differ only in those literals' values, so a cache keyed on the shape serves a
//! simple-protocol client that sends `... WHERE id = 42` with a new number each time (pgbench
//! `-S`, most ORMs without server-side binding) from one analysis instead of one per value.
//! The statement audit's descriptions and the policy's decisions are cached this way; each
//! says why its answer cannot depend on the masked values.

use std::cell::RefCell;

/// Longest statement with a shape; longer ones are looked up by their exact text.
pub const MAX_BYTES: usize = 4096;

/// No limit on a masked literal's length.
pub const ANY_DIGITS: usize = usize::MAX;

thread_local! {
    /// The shape being looked up: reused, so a lookup allocates nothing.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with the shape of `sql` (see [`shape`]), or `None` when it has none, built in a
/// per-thread buffer.
pub fn with_shape<R>(sql: &[u8], max_digits: usize, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let shaped = shape(sql, max_digits, &mut buf);
            f(shaped.then_some(buf.as_slice()))
        }
        // Only if `f` itself looked up a shape: that inner lookup gets a buffer of its own.
        Err(_) => {
            let mut buf = Vec::new();
            let shaped = shape(sql, max_digits, &mut buf);
            f(shaped.then_some(buf.as_slice()))
        }
    })
}

/// Writes into `out` the statement's shape: its bytes with every integer literal's digits
/// replaced by one NUL, so `... WHERE aid = 42;` and `... WHERE aid = 4711;` have the same
/// shape. Returns false, and leaves `out` meaningless, for a statement this cannot be done
/// for exactly; it is then looked up by its exact text.
///
/// Exactly means: two statements with the same shape normalize (literals replaced) to the
/// same text, or both fail to. That holds because
///
/// - the statement is short, plain ASCII, and has none of `'`, `"`, `$`, `\`, `` ` ``, `?`,
///   `{`, `}`, NUL, control characters other than tab, CR and LF, nor `--` or `/*`: so no
///   string, quoted identifier, dollar quote, comment, parameter or escape, and every byte is
///   part of a word, a number, an operator, punctuation or whitespace, for PostgreSQL and
///   sqlparser alike;
/// - a digit run is replaced only when neither neighbour is a letter, digit, `_` or `.`: then
///   it is not part of a name, and it is a whole number token (or the exponent of one, as the
///   `5` of `1e-5`); PostgreSQL's and sqlparser's readings of a number depend on its digits
///   only through `0x`/`0o`/`0b` prefixes, `_` separators, a `.`, an exponent or an `L` suffix,
///   none of which can follow such a run; so any other digit run there gives the same tokens
///   but for that number's value;
/// - normalization with literals replaced writes every number as `?`, and refuses or accepts
///   a statement by its tokens' kinds and spacing, never by a number's value; the length limit
///   is far above [`MAX_BYTES`].
///
/// The fingerprint and the read/write kind are functions of the normalized text, so they agree
/// too. Tests compare the shape path with a fresh description for many statements.
///
/// A literal longer than `max_digits` digits makes the statement shapeless: a caller whose
/// reading of a statement depends on whether a number fits a machine integer (sqlparser reads
/// some numbers, as `FETCH 5` or `varchar(5)`, as `u64`) passes a limit below that.
pub fn shape(sql: &[u8], max_digits: usize, out: &mut Vec<u8>) -> bool {
    out.clear();
    if sql.len() > MAX_BYTES {
        return false;
    }
    // Copied in runs, not byte by byte: `sql[..copied]` is in `out` already.
    let mut copied = 0;
    let mut i = 0;
    while i < sql.len() {
        match SHAPE_CLASS[usize::from(sql[i])] & !WORD {
            PLAIN => i += 1,
            DIGIT => {
                let start = i;
                while i < sql.len() && sql[i].is_ascii_digit() {
                    i += 1;
                }
                let word = |b: &u8| SHAPE_CLASS[usize::from(*b)] & WORD != 0;
                let in_word = start.checked_sub(1).is_some_and(|j| word(&sql[j]))
                    || sql.get(i).is_some_and(word);
                if !in_word {
                    if i - start > max_digits {
                        return false;
                    }
                    out.extend_from_slice(&sql[copied..start]);
                    out.push(0);
                    copied = i;
                }
            }
            // `--` and `/*` start comments (`-*` and `/-` go with them, harmlessly).
            COMMENT_START if matches!(sql.get(i + 1), Some(b'-' | b'*')) => return false,
            COMMENT_START => i += 1,
            _ => return false,
        }
    }
    out.extend_from_slice(&sql[copied..]);
    true
}

/// Byte classes for [`shape`]: the kind of byte, and whether it can be part of a word or a
/// number (`WORD`), which stops a digit run next to it from being replaced.
const REFUSED: u8 = 0;
const PLAIN: u8 = 1;
const DIGIT: u8 = 2;
const COMMENT_START: u8 = 3;
const WORD: u8 = 0x80;

const SHAPE_CLASS: [u8; 256] = {
    let mut t = [REFUSED; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'0'..=b'9' => DIGIT | WORD,
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'.' => PLAIN | WORD,
            b' ' | b'\t' | b'\n' | b'\r' => PLAIN,
            b'(' | b')' | b',' | b';' | b'=' | b'<' | b'>' | b'+' | b'*' | b'%' | b':' | b'['
            | b']' => PLAIN,
            b'-' | b'/' => COMMENT_START,
            _ => REFUSED,
        };
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_of(sql: &str) -> Option<String> {
        let mut out = Vec::new();
        shape(sql.as_bytes(), ANY_DIGITS, &mut out)
            .then(|| String::from_utf8_lossy(&out).replace('\0', "#"))
    }

    #[test]
    fn shapes_replace_whole_integer_literals_only() {
        for (sql, want) in [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
                Some("SELECT abalance FROM pgbench_accounts WHERE aid = #;"),
            ),
            (
                "UPDATE t SET a = a + -17 WHERE id IN (1,2)",
                Some("UPDATE t SET a = a + -# WHERE id IN (#,#)"),
            ),
            ("SELECT t1.a2 FROM t1", Some("SELECT t1.a2 FROM t1")),
            ("SELECT 1.5, .5, 5., 1e-5", Some("SELECT 1.5, .5, 5., 1e-#")),
            (
                "SELECT 0x1F, 1_000, 5L, 2abc",
                Some("SELECT 0x1F, 1_000, 5L, 2abc"),
            ),
            ("SELECT x[1:2]::int8", Some("SELECT x[#:#]::int8")),
            ("SELECT 1 -- 2", None),
            ("SELECT 1 /* 2 */", None),
            ("SELECT '1'", None),
            ("SELECT \"1\"", None),
            ("SELECT $1", None),
            ("SELECT $$1$$", None),
            ("SELECT E'\\1'", None),
            ("SELECT 1 ? 2", None),
            ("SELECT 1\0", None),
            ("SELECT \u{e9}1", None),
        ] {
            assert_eq!(shape_of(sql).as_deref(), want, "{sql}");
        }
        assert!(shape_of(&format!("SELECT {}", "1".repeat(MAX_BYTES))).is_none());
    }
}
