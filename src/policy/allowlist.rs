//! Allowlist files and learned-statement records: their formats, readers, writers and
//! validation. An allowlist holds approved statements in normalized form (see
//! [`super::normalize`]); a statement is allowed when its normalized text equals an entry's
//! text exactly. Learn mode appends one record per distinct statement to a JSON-lines file,
//! which [`build_allowlist`] and [`render`] turn into an allowlist for people to review.
//!
//! Everything here fails closed: an allowlist with any invalid entry is not loaded at all.
//!
//! ```toml
//! # pgward allowlist: approved statements for policy "app"
//! version = 1
//!
//! [[statement]]
//! fingerprint = "a1b2c3d4e5f60718"
//! text = "SELECT * FROM users WHERE id = $1"
//! name = "get_user"        # optional
//! comment = "profile page" # optional
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::normalize::{self, Fingerprint, LiteralMode, NormalizeError};

/// Larger allowlist files are refused rather than read into memory.
pub const MAX_ALLOWLIST_BYTES: u64 = 64 << 20;

/// Longest learned record line: a maximal statement's normalized text with every character
/// escaped, plus room for the other fields.
pub const MAX_LEARNED_LINE_BYTES: usize = 16 << 20;

/// One approved statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowlistEntry {
    pub fingerprint: Fingerprint,
    /// Normalized text, with the literal mode of the policy that uses the allowlist.
    pub text: String,
    pub name: Option<String>,
    pub comment: Option<String>,
}

/// A validated allowlist: entries in file order, looked up by their full normalized text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<AllowlistEntry>,
    by_text: HashMap<String, usize>,
}

/// Which entry an error is about: its 1-based position in the file and its name, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLabel {
    pub index: usize,
    pub name: Option<String>,
}

impl fmt::Display for EntryLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "statement #{}", self.index)?;
        match &self.name {
            Some(name) => write!(f, " ({name:?})"),
            None => Ok(()),
        }
    }
}

/// What is wrong with one allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("text is empty")]
    EmptyText,
    #[error("text cannot be normalized: {0}")]
    Normalize(NormalizeError),
    #[error("text holds {0} statements; an entry holds exactly one")]
    StatementCount(usize),
    /// The text must be written in normalized form, so that what people review is exactly
    /// what is compared.
    #[error("text is not in normalized form; write it as {normalized:?}")]
    NotNormalized { normalized: String },
    #[error("fingerprint {0:?} is not 16 hexadecimal digits")]
    BadFingerprint(String),
    #[error("fingerprint {stated} does not match the text, whose fingerprint is {actual}")]
    FingerprintMismatch {
        stated: Fingerprint,
        actual: Fingerprint,
    },
    #[error("same text as statement #{first}")]
    Duplicate { first: usize },
    #[error("sqlparser cannot parse the text: {0}")]
    Unparseable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    /// Not TOML, an unknown or missing key, or a value of the wrong type.
    #[error("invalid allowlist: {0}")]
    Syntax(String),
    #[error("allowlist version {0} is not supported (this pgward reads version 1)")]
    Version(i64),
    #[error("{entry}: {problem}")]
    Entry {
        entry: EntryLabel,
        problem: EntryProblem,
    },
    #[error("learned records, line {line}: {problem}")]
    Learned { line: usize, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowlist {
    version: i64,
    #[serde(default)]
    statement: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    fingerprint: String,
    text: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

impl Allowlist {
    /// Parses and validates allowlist TOML for a policy with literal mode `literals`. Every
    /// entry must hold exactly one statement, written in normalized form, with the matching
    /// fingerprint, once, and parseable by sqlparser.
    pub fn parse(toml_text: &str, literals: LiteralMode) -> Result<Allowlist, AllowlistError> {
        let raw: RawAllowlist = config::Config::builder()
            .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| AllowlistError::Syntax(e.to_string()))?;
        if raw.version != 1 {
            return Err(AllowlistError::Version(raw.version));
        }
        let mut list = Allowlist::default();
        for (i, entry) in raw.statement.into_iter().enumerate() {
            let index = i + 1;
            let fail = |problem| AllowlistError::Entry {
                entry: EntryLabel {
                    index,
                    name: entry.name.clone(),
                },
                problem,
            };
            let fingerprint = check_entry(&entry, literals).map_err(fail)?;
            if let Some(&first) = list.by_text.get(&entry.text) {
                return Err(fail(EntryProblem::Duplicate { first: first + 1 }));
            }
            list.by_text.insert(entry.text.clone(), list.entries.len());
            list.entries.push(AllowlistEntry {
                fingerprint,
                text: entry.text,
                name: entry.name,
                comment: entry.comment,
            });
        }
        Ok(list)
    }

    /// Reads and validates an allowlist file (see [`Allowlist::parse`]).
    pub fn load(path: &Path, literals: LiteralMode) -> Result<Allowlist, AllowlistError> {
        let io = |source| AllowlistError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        // Not UTF-8 reads as an InvalidData error.
        file.take(MAX_ALLOWLIST_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_ALLOWLIST_BYTES {
            return Err(AllowlistError::TooLarge {
                path: path.to_path_buf(),
                max: MAX_ALLOWLIST_BYTES,
            });
        }
        Allowlist::parse(&text, literals)
    }

    /// The entry whose text is exactly `normalized_text`: a full-text comparison, never a
    /// fingerprint one.
    pub fn lookup(&self, normalized_text: &str) -> Option<&AllowlistEntry> {
        self.by_text
            .get(normalized_text)
            .and_then(|&i| self.entries.get(i))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in file order.
    pub fn entries(&self) -> impl Iterator<Item = &AllowlistEntry> {
        self.entries.iter()
    }
}

/// Validates one entry on its own; returns its fingerprint.
fn check_entry(entry: &RawEntry, literals: LiteralMode) -> Result<Fingerprint, EntryProblem> {
    if entry.text.trim().is_empty() {
        return Err(EntryProblem::EmptyText);
    }
    let normalized =
        normalize::normalize_stored(&entry.text, literals).map_err(EntryProblem::Normalize)?;
    if normalized.statements != 1 {
        return Err(EntryProblem::StatementCount(normalized.statements));
    }
    if normalized.text != entry.text {
        return Err(EntryProblem::NotNormalized {
            normalized: normalized.text,
        });
    }
    let stated: Fingerprint = entry
        .fingerprint
        .parse()
        .map_err(|_| EntryProblem::BadFingerprint(entry.fingerprint.clone()))?;
    if stated != normalized.fingerprint {
        return Err(EntryProblem::FingerprintMismatch {
            stated,
            actual: normalized.fingerprint,
        });
    }
    check_parses(&entry.text, literals).map_err(EntryProblem::Unparseable)?;
    Ok(stated)
}

/// Whether sqlparser parses `text`, so that typos and statements pgward cannot reason about are
/// caught when the allowlist is loaded.
///
/// With [`LiteralMode::Replace`] each `?` stands for a literal (`normalize` refuses the `?`
/// operator in that mode). sqlparser wants numbers in some places (`VARCHAR(?)`) and strings in
/// others, and a parameter `$n` fits most, so the text is tried with every `?` read as `$n`,
/// then as `0`, then as `''`; it passes if one of them parses. A statement that needs two
/// different kinds at once is refused — use `LiteralMode::Keep` for it.
fn check_parses(text: &str, literals: LiteralMode) -> Result<(), String> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize()
        .map_err(|e| e.to_string())?;
    if literals == LiteralMode::Keep || !tokens.contains(&Token::Question) {
        return Parser::new(&dialect)
            .with_tokens(tokens)
            .parse_statements()
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let mut first_error = None;
    for stand_in in 0..3 {
        let mut n = 0;
        let substituted: Vec<Token> = tokens
            .iter()
            .map(|t| match t {
                Token::Question => {
                    n += 1;
                    match stand_in {
                        0 => Token::Placeholder(format!("${n}")),
                        1 => Token::Number("0".into(), false),
                        _ => Token::SingleQuotedString(String::new()),
                    }
                }
                other => other.clone(),
            })
            .collect();
        match Parser::new(&dialect)
            .with_tokens(substituted)
            .parse_statements()
        {
            Ok(_) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Err(first_error.unwrap_or_default())
}

/// Allowlist TOML for `entries`, which [`Allowlist::parse`] reads back. Each line of
/// `header_comment` becomes a `#` comment at the top.
pub fn render(entries: &[AllowlistEntry], header_comment: &str) -> String {
    let mut out = String::new();
    for line in header_comment.lines() {
        out.push('#');
        if !line.is_empty() {
            out.push(' ');
            // TOML comments may not hold control characters other than tab.
            out.extend(
                line.chars()
                    .map(|c| if c.is_control() && c != '\t' { ' ' } else { c }),
            );
        }
        out.push('\n');
    }
    out.push_str("version = 1\n");
    for e in entries {
        out.push_str("\n[[statement]]\n");
        push_toml_pair(&mut out, "fingerprint", &e.fingerprint.to_string());
        push_toml_pair(&mut out, "text", &e.text);
        if let Some(name) = &e.name {
            push_toml_pair(&mut out, "name", name);
        }
        if let Some(comment) = &e.comment {
            push_toml_pair(&mut out, "comment", comment);
        }
    }
    out
}

/// `key = "value"`, the value as a TOML basic string.
fn push_toml_pair(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str(" = \"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push_str("\"\n");
}

/// A statement seen in learn mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedRecord {
    pub user: String,
    pub database: String,
    pub fingerprint: Fingerprint,
    /// Normalized text.
    pub text: String,
}

/// One JSON line, ending with `'\n'`:
/// `{"user":"app","database":"appdb","fingerprint":"…","text":"…"}`.
pub fn encode_learned(r: &LearnedRecord) -> String {
    let mut out = String::with_capacity(r.text.len() + r.user.len() + r.database.len() + 80);
    out.push_str("{\"user\":");
    push_json_string(&mut out, &r.user);
    out.push_str(",\"database\":");
    push_json_string(&mut out, &r.database);
    out.push_str(",\"fingerprint\":");
    push_json_string(&mut out, &r.fingerprint.to_string());
    out.push_str(",\"text\":");
    push_json_string(&mut out, &r.text);
    out.push_str("}\n");
    out
}

fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Reads learned records: one JSON object per line with exactly the string fields `user`,
/// `database`, `fingerprint` and `text`. Blank lines are skipped; anything else that is not
/// such a record — a truncated last line included — is an error naming the line (1-based).
/// Each record's fingerprint must match its text.
pub fn parse_learned(contents: &str) -> Result<Vec<LearnedRecord>, AllowlistError> {
    let mut records = Vec::new();
    for (i, line) in contents.split('\n').enumerate() {
        if line.trim_matches(is_json_space).is_empty() {
            continue;
        }
        let record = decode_learned(line).map_err(|problem| AllowlistError::Learned {
            line: i + 1,
            problem,
        })?;
        records.push(record);
    }
    Ok(records)
}

fn decode_learned(line: &str) -> Result<LearnedRecord, String> {
    if line.len() > MAX_LEARNED_LINE_BYTES {
        return Err(format!("longer than {MAX_LEARNED_LINE_BYTES} bytes"));
    }
    const FIELDS: [&str; 4] = ["user", "database", "fingerprint", "text"];
    let mut values: [Option<String>; 4] = Default::default();
    let mut json = Json { s: line, i: 0 };
    json.expect(b'{')?;
    loop {
        let key = json.string()?;
        json.expect(b':')?;
        let value = json.string()?;
        let slot = FIELDS
            .iter()
            .position(|f| *f == key)
            .ok_or_else(|| format!("unknown field {key:?}"))?;
        if values[slot].replace(value).is_some() {
            return Err(format!("field {key:?} appears twice"));
        }
        match json.next_byte() {
            Some(b',') => continue,
            Some(b'}') => break,
            _ => return Err("expected ',' or '}' after a field".into()),
        }
    }
    if json.next_byte().is_some() {
        return Err("unexpected characters after the record".into());
    }
    let [Some(user), Some(database), Some(fingerprint), Some(text)] = values else {
        return Err("a record needs user, database, fingerprint and text".into());
    };
    let fingerprint: Fingerprint = fingerprint
        .parse()
        .map_err(|_| format!("fingerprint {fingerprint:?} is not 16 hexadecimal digits"))?;
    let actual = normalize::fingerprint(&text);
    if fingerprint != actual {
        return Err(format!(
            "fingerprint {fingerprint} does not match the text, whose fingerprint is {actual}"
        ));
    }
    Ok(LearnedRecord {
        user,
        database,
        fingerprint,
        text,
    })
}

fn is_json_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r')
}

/// A strict reader for one flat JSON object of strings (serde_json is not a dependency of
/// pgward, and this is all the format needs): no recursion, no numbers, no nesting; input is one
/// line, so every loop is bounded by its length.
struct Json<'a> {
    s: &'a str,
    i: usize,
}

impl Json<'_> {
    fn skip_space(&mut self) {
        while self
            .s
            .as_bytes()
            .get(self.i)
            .is_some_and(|&b| is_json_space(char::from(b)))
        {
            self.i += 1;
        }
    }

    /// The next byte after any whitespace, consumed.
    fn next_byte(&mut self) -> Option<u8> {
        self.skip_space();
        let b = self.s.as_bytes().get(self.i).copied();
        if b.is_some() {
            self.i += 1;
        }
        b
    }

    fn expect(&mut self, want: u8) -> Result<(), String> {
        match self.next_byte() {
            Some(b) if b == want => Ok(()),
            _ => Err(format!("expected '{}'", char::from(want))),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let bytes = self.s.as_bytes();
        let mut out = String::new();
        loop {
            // Copy the run up to the next quote, backslash or control character; it ends at
            // an ASCII byte, so it is whole UTF-8.
            let start = self.i;
            while bytes
                .get(self.i)
                .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
            {
                self.i += 1;
            }
            out.push_str(self.s.get(start..self.i).ok_or("bad string")?);
            let Some(&b) = bytes.get(self.i) else {
                return Err("unterminated string".into());
            };
            self.i += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => {
                    let Some(&e) = bytes.get(self.i) else {
                        return Err("unterminated string".into());
                    };
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err("invalid escape in string".into()),
                    };
                    out.push(c);
                }
                _ => return Err("control character in string".into()),
            }
        }
    }

    /// After `\u`: four hex digits, or a surrogate pair written as two escapes.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.s.as_bytes().get(self.i..self.i + 2) != Some(b"\\u") {
                    return Err("unpaired surrogate in \\u escape".into());
                }
                self.i += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err("unpaired surrogate in \\u escape".into());
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err("unpaired surrogate in \\u escape".into()),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| "invalid \\u escape".into())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .s
            .get(self.i..self.i + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or("invalid \\u escape")?;
        self.i += 4;
        u32::from_str_radix(digits, 16).map_err(|_| "invalid \\u escape".into())
    }
}

/// Allowlist entries for the records of `user` and `database` (`None`: any), one per distinct
/// text, in the order first seen. Fingerprints are recomputed from the text.
pub fn build_allowlist(
    records: &[LearnedRecord],
    user: Option<&str>,
    database: Option<&str>,
) -> Vec<AllowlistEntry> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|r| user.is_none_or(|u| r.user == u) && database.is_none_or(|d| r.database == d))
        .filter(|r| seen.insert(r.text.as_str()))
        .map(|r| AllowlistEntry {
            fingerprint: normalize::fingerprint(&r.text),
            text: r.text.clone(),
            name: None,
            comment: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::normalize::{fingerprint, normalize};

    fn entry(sql: &str, literals: LiteralMode) -> AllowlistEntry {
        match normalize(sql, literals) {
            Ok(n) => AllowlistEntry {
                fingerprint: n.fingerprint,
                text: n.text,
                name: None,
                comment: None,
            },
            Err(e) => panic!("{sql:?}: {e}"),
        }
    }

    fn parse_keep(text: &str) -> Result<Allowlist, AllowlistError> {
        Allowlist::parse(text, LiteralMode::Keep)
    }

    fn one(text: &str) -> String {
        format!(
            "version = 1\n[[statement]]\nfingerprint = \"{}\"\ntext = {:?}\n",
            fingerprint(text),
            text
        )
    }

    fn problem(result: Result<Allowlist, AllowlistError>) -> (usize, EntryProblem) {
        match result {
            Err(AllowlistError::Entry { entry, problem }) => (entry.index, problem),
            Err(e) => panic!("expected an entry error, got {e}"),
            Ok(_) => panic!("expected an entry error, got a valid allowlist"),
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let text = "SELECT * FROM users WHERE id = $1";
        let toml = format!(
            "# pgward allowlist\nversion = 1\n\n[[statement]]\nfingerprint = \"{}\"\n\
             text = \"{text}\"\nname = \"get_user\"        # optional\n\
             comment = \"profile page\" # optional\n",
            fingerprint(text)
        );
        let list = parse_keep(&toml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(list.len(), 1);
        assert!(!list.is_empty());
        let e = list
            .lookup(text)
            .map(|e| (e.name.as_deref(), e.comment.as_deref()));
        assert_eq!(e, Some((Some("get_user"), Some("profile page"))));
        let client = normalize("select * from users where id=$1 -- hi", LiteralMode::Keep);
        assert!(client.is_ok_and(|n| list.lookup(&n.text).is_some()));
        assert!(list.lookup("SELECT * FROM users WHERE id = $2").is_none());
    }

    #[test]
    fn empty_allowlist_is_valid_and_allows_nothing() {
        let list = parse_keep("version = 1\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(list.is_empty());
        assert!(list.lookup("SELECT 1").is_none());
    }

    #[test]
    fn file_level_errors() {
        assert!(matches!(
            parse_keep("version = 2\n"),
            Err(AllowlistError::Version(2))
        ));
        assert!(matches!(parse_keep(""), Err(AllowlistError::Syntax(_))));
        assert!(matches!(
            parse_keep("version = 1\nextra = 1\n"),
            Err(AllowlistError::Syntax(_))
        ));
        assert!(matches!(
            parse_keep("version = 1\n[[statement]\n"),
            Err(AllowlistError::Syntax(_))
        ));
        let unknown = one("SELECT 1") + "texts = \"SELECT 1\"\n";
        assert!(matches!(
            parse_keep(&unknown),
            Err(AllowlistError::Syntax(_))
        ));
        let missing = "version = 1\n[[statement]]\ntext = \"SELECT 1\"\n";
        assert!(matches!(
            parse_keep(missing),
            Err(AllowlistError::Syntax(_))
        ));
    }

    #[test]
    fn entry_errors_name_the_entry() {
        let good = one("SELECT 1");
        let bad = format!(
            "{good}\n[[statement]]\nfingerprint = \"{}\"\ntext = \"select 2\"\nname = \"two\"\n",
            fingerprint("select 2")
        );
        let err = parse_keep(&bad).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "statement #2 (\"two\"): text is not in normalized form; \
                 write it as \"SELECT 2\""
            )
        );
    }

    #[test]
    fn each_entry_check() {
        let fp = |t: &str| fingerprint(t).to_string();
        let with = |fingerprint: &str, text: &str| {
            format!("version = 1\n[[statement]]\nfingerprint = {fingerprint:?}\ntext = {text:?}\n")
        };
        assert_eq!(
            problem(parse_keep(&with(&fp(""), ""))),
            (1, EntryProblem::EmptyText)
        );
        assert_eq!(
            problem(parse_keep(&with(&fp(" "), " "))),
            (1, EntryProblem::EmptyText)
        );
        assert!(matches!(
            problem(parse_keep(&with(&fp("x"), "SELECT 'x"))),
            (1, EntryProblem::Normalize(NormalizeError::Tokenize(_)))
        ));
        assert_eq!(
            problem(parse_keep(&with(
                &fp("SELECT 1; SELECT 2"),
                "SELECT 1; SELECT 2"
            ))),
            (1, EntryProblem::StatementCount(2))
        );
        assert_eq!(
            problem(parse_keep(&with(&fp(";"), ";"))),
            (1, EntryProblem::StatementCount(0))
        );
        assert_eq!(
            problem(parse_keep(&with(&fp("SELECT 1;"), "SELECT 1;"))),
            (
                1,
                EntryProblem::NotNormalized {
                    normalized: "SELECT 1".into()
                }
            )
        );
        assert_eq!(
            problem(parse_keep(&with("1234", "SELECT 1"))),
            (1, EntryProblem::BadFingerprint("1234".into()))
        );
        assert_eq!(
            problem(parse_keep(&with(&fp("SELECT 2"), "SELECT 1"))),
            (
                1,
                EntryProblem::FingerprintMismatch {
                    stated: fingerprint("SELECT 2"),
                    actual: fingerprint("SELECT 1"),
                }
            )
        );
        let twice = one("SELECT 1") + &one("SELECT 1").replace("version = 1\n", "");
        assert_eq!(
            problem(parse_keep(&twice)),
            (2, EntryProblem::Duplicate { first: 1 })
        );
        assert!(matches!(
            problem(parse_keep(&with(&fp("SELECT * FROM"), "SELECT * FROM"))),
            (1, EntryProblem::Unparseable(_))
        ));
    }

    #[test]
    fn replace_mode_entries() {
        let replace = |t: &str| Allowlist::parse(&one(t), LiteralMode::Replace);
        for sql in [
            "select * from t where a = 'x' and b = 2",
            "select x::varchar(20) from t",
            "select * from t where d > date '2020-01-01' - interval '1 day'",
            "select f(-1.5)",
        ] {
            let e = entry(sql, LiteralMode::Replace);
            let list = replace(&e.text).unwrap_or_else(|err| panic!("{sql:?}: {err}"));
            assert!(list.lookup(&e.text).is_some());
        }
        // Literals are not in normalized form for this mode...
        assert!(matches!(
            problem(replace("SELECT * FROM t WHERE a = 1")),
            (1, EntryProblem::NotNormalized { .. })
        ));
        // ...but they are for a policy that keeps them, where `?` is the jsonb operator.
        assert!(parse_keep(&one("SELECT * FROM t WHERE a = 1")).is_ok());
        assert!(parse_keep(&one("SELECT x ? 'k' FROM t")).is_ok());
        assert!(parse_keep(&one("SELECT * FROM t WHERE a = ?")).is_err());
    }

    #[test]
    fn render_round_trips() {
        let mut entries = vec![
            entry("select * from users where id = $1", LiteralMode::Keep),
            entry(
                "select E'quote\\' and \"dq\" and \\\\ and tab\t', $$multi\nline$$",
                LiteralMode::Keep,
            ),
            entry(
                "select 'ünïcödé ☃ \u{1F600}', '\u{7f}\u{1}'",
                LiteralMode::Keep,
            ),
        ];
        entries[0].name = Some("get \"user\"".into());
        entries[0].comment = Some("profile\npage \\ \u{0}".into());
        let toml = render(
            &entries,
            "pgward allowlist: policy \"app\"\nsecond line\r\n\u{1b}[31m",
        );
        assert!(toml.starts_with(
            "# pgward allowlist: policy \"app\"\n# second line\n#  [31m\nversion = 1\n"
        ));
        let list = parse_keep(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(list.entries().cloned().collect::<Vec<_>>(), entries);
        assert!(parse_keep(&render(&[], "")).is_ok_and(|l| l.is_empty()));
    }

    #[test]
    fn load_reads_files_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("allow.toml");
        let text = render(&[entry("select 1", LiteralMode::Keep)], "test");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        assert!(Allowlist::load(&path, LiteralMode::Keep).is_ok_and(|l| l.len() == 1));
        std::fs::write(&path, b"version = 1\n# \xff\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            Allowlist::load(&path, LiteralMode::Keep),
            Err(AllowlistError::Io { .. })
        ));
        assert!(matches!(
            Allowlist::load(&dir.path().join("missing.toml"), LiteralMode::Keep),
            Err(AllowlistError::Io { .. })
        ));
    }

    fn record(user: &str, database: &str, text: &str) -> LearnedRecord {
        LearnedRecord {
            user: user.into(),
            database: database.into(),
            fingerprint: fingerprint(text),
            text: text.into(),
        }
    }

    #[test]
    fn learned_records_round_trip() {
        let records = vec![
            record("app", "appdb", "SELECT * FROM users WHERE id = $1"),
            record(
                "we\"ird\\",
                "d\u{1}b",
                "SELECT 'a\nb\tc\r', E'\\\\', \"q\"\"q\"",
            ),
            record("ünï", "☃", "SELECT '\u{1F600}\u{7f}\u{2028}'"),
            record("", "", "SELECT 1"),
        ];
        let mut file = String::new();
        for r in &records {
            let line = encode_learned(r);
            assert!(line.ends_with('\n'));
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            file.push_str(&line);
        }
        assert_eq!(
            encode_learned(&records[0]),
            format!(
                "{{\"user\":\"app\",\"database\":\"appdb\",\"fingerprint\":\"{}\",\
                 \"text\":\"SELECT * FROM users WHERE id = $1\"}}\n",
                records[0].fingerprint
            )
        );
        assert_eq!(parse_learned(&file).ok(), Some(records));
        assert_eq!(parse_learned("").ok(), Some(vec![]));
        assert_eq!(parse_learned("\n \n\t\r\n").ok(), Some(vec![]));
    }

    #[test]
    fn learned_decoder_accepts_other_valid_json() {
        let text = "SELECT '/é😀'";
        let line = format!(
            " {{ \"text\" : \"SELECT '\\/\\u00e9\\ud83d\\ude00'\" , \"fingerprint\":\"{}\",\
             \"database\":\"d\",\"user\":\"u\" }} \r",
            fingerprint(text)
        );
        assert_eq!(
            parse_learned(&line).ok(),
            Some(vec![record("u", "d", text)])
        );
    }

    #[test]
    fn learned_decoder_rejects_malformed_lines() {
        let good = encode_learned(&record("u", "d", "SELECT 1"));
        let good = good.trim_end();
        let fp = fingerprint("SELECT 1");
        let bad = [
            good[..good.len() - 1].to_string(),
            good[..good.len() / 2].to_string(),
            format!("{good},"),
            format!("{good}x"),
            format!("[{good}]"),
            "{}".to_string(),
            "null".to_string(),
            format!("{{\"user\":\"u\",\"database\":\"d\",\"fingerprint\":\"{fp}\"}}"),
            format!(
                "{{\"user\":\"u\",\"user\":\"u\",\"database\":\"d\",\"fingerprint\":\"{fp}\",\"text\":\"SELECT 1\"}}"
            ),
            format!(
                "{{\"user\":\"u\",\"database\":\"d\",\"fingerprint\":\"{fp}\",\"text\":\"SELECT 1\",\"x\":\"\"}}"
            ),
            format!(
                "{{\"user\":1,\"database\":\"d\",\"fingerprint\":\"{fp}\",\"text\":\"SELECT 1\"}}"
            ),
            format!(
                "{{\"user\":\"u\",\"database\":\"d\",\"fingerprint\":\"{fp}\",\"text\":\"SELECT 2\"}}"
            ),
            r#"{"user":"u","database":"d","fingerprint":"xyz","text":"SELECT 1"}"#.to_string(),
            format!(
                "{{\"user\":\"u\\x\",\"database\":\"d\",\"fingerprint\":\"{fp}\",\"text\":\"SELECT 1\"}}"
            ),
            format!(
                "{{\"user\":\"u\\ud800\",\"database\":\"d\",\"fingerprint\":\"{fp}\",\"text\":\"SELECT 1\"}}"
            ),
            format!(
                "{{\"user\":\"u\\udc00\\ud800\",\"database\":\"d\",\"fingerprint\":\"{fp}\",\"text\":\"SELECT 1\"}}"
            ),
            format!(
                "{{\"user\":\"u\\u12\",\"database\":\"d\",\"fingerprint\":\"{fp}\",\"text\":\"SELECT 1\"}}"
            ),
            format!(
                "{{\"user\":\"u\u{1}\",\"database\":\"d\",\"fingerprint\":\"{fp}\",\"text\":\"SELECT 1\"}}"
            ),
            format!(
                "{{\"user\":\"u\" \"database\":\"d\",\"fingerprint\":\"{fp}\",\"text\":\"SELECT 1\"}}"
            ),
        ];
        for line in &bad {
            let file = format!("{good}\n\n{line}\n{good}\n");
            match parse_learned(&file) {
                Err(AllowlistError::Learned { line: 3, .. }) => {}
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn build_allowlist_dedups_in_first_seen_order() {
        let records = vec![
            record("app", "db1", "SELECT 1"),
            record("app", "db2", "SELECT 2"),
            record("other", "db1", "SELECT 3"),
            record("other", "db1", "SELECT 1"),
            record("app", "db1", "SELECT 4"),
        ];
        let texts = |u, d| {
            build_allowlist(&records, u, d)
                .into_iter()
                .map(|e| e.text)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            texts(None, None),
            ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4"]
        );
        assert_eq!(
            texts(Some("app"), None),
            ["SELECT 1", "SELECT 2", "SELECT 4"]
        );
        assert_eq!(
            texts(None, Some("db1")),
            ["SELECT 1", "SELECT 3", "SELECT 4"]
        );
        assert_eq!(texts(Some("other"), Some("db1")), ["SELECT 3", "SELECT 1"]);
        assert!(texts(Some("nobody"), None).is_empty());
        // Learned, rendered, read back: the review loop.
        let entries = build_allowlist(&records, None, None);
        let list = parse_keep(&render(&entries, "learned")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(list.len(), 4);
    }
}
