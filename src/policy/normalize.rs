//! Statement normalization and fingerprints: the one definition of "the same statement" that
//! allowlist matching relies on.
//!
//! # The property everything here serves
//!
//! pgward lets a statement through when its normalized text equals an approved normalized text.
//! That is only safe if **`normalize(a) == normalize(b)` implies that PostgreSQL reads `a` and
//! `b` as the same token sequence**, up to whitespace, comments, the case of unquoted words
//! (which PostgreSQL folds) and empty statements (which it skips) — and, when a policy opts into
//! [`LiteralMode::Replace`], up to the values of literals. Three steps give that:
//!
//! 1. **Lexing like PostgreSQL.** The statement is tokenized with sqlparser's PostgreSQL
//!    dialect. Wherever that tokenizer can draw a token boundary differently from PostgreSQL's
//!    own lexer (`scan.l`), the statement is refused (fail closed) rather than guessed at; the
//!    cases are listed below. So on every accepted input, sqlparser's tokens are PostgreSQL's.
//! 2. **Rendering tokens, not text.** The normalized text is built from the tokens alone: each
//!    token's source text, verbatim (unquoted words case-folded: keywords upper, other words
//!    lower, ASCII only, as PostgreSQL folds identifiers), joined by a spacing rule that depends
//!    only on the tokens, never on the input's whitespace (see [`normalize`]). Comments and
//!    whitespace are dropped; empty statements too, so a trailing `;` goes.
//! 3. **Checking the rendering reads back.** The normalized text is tokenized again and must
//!    give exactly the same tokens; if joining two tokens without a space would merge or split
//!    them (`t. 5` would become `t.5`), the statement is refused. This makes the rendering
//!    injective by construction: equal normalized texts re-tokenize to equal token sequences,
//!    so the inputs had equal token sequences, so (step 1) PostgreSQL reads them alike.
//!
//! The fingerprint is a short hash of the normalized text, for people and logs. Matching always
//! compares the full normalized text; a fingerprint collision cannot approve anything.
//!
//! # What sqlparser 0.63's PostgreSQL tokenizer does, and what is refused
//!
//! Read in `sqlparser::tokenizer` and checked by the tests below.
//!
//! - Block comments nest (`supports_nested_comments`), as in PostgreSQL:
//!   `/* a /* b */ c */ SELECT 1` is one comment and `SELECT 1`. `--` comments end at `\n` or
//!   `\r`, as in PostgreSQL; `#` is an operator, not a comment. Comment "hints" (`/*!...*/`) are
//!   off for this dialect.
//! - `'...'` is read with standard_conforming_strings on: `''` is a quote, a backslash is just a
//!   character, so `'\'` is one backslash. PostgreSQL reads a backslash as an escape when
//!   standard_conforming_strings is off — which any client can arrange (`SET`, `set_config()`,
//!   role settings) — and then `'\' -- ' ; DROP TABLE t; --` holds a different string *and a
//!   second statement*, while it normalizes like `'\'`. So **a backslash in a `'...'` or
//!   `N'...'` literal is refused**; `E'...'` strings and parameters say the same thing
//!   unambiguously.
//! - `E'...'` strings: backslash escapes as in PostgreSQL (`E'\''` is one quote); a malformed
//!   `\u`/`\U` escape or `\0` is a tokenizer error. A backslash right after a non-ASCII
//!   character is refused: under a client_encoding such as SJIS or BIG5 that byte pair can be
//!   one character whose second byte is `\`, so PostgreSQL would end the string where
//!   sqlparser does not. (Defence in depth only: the session must keep client_encoding UTF8.)
//! - `U&'...'`: one token; sqlparser's escape handling never consumes a quote, so the string
//!   ends where PostgreSQL's does (a bad escape is an error). `U&"..."` (a Unicode identifier in
//!   PostgreSQL) is split by sqlparser into `U`, `&`, `"..."`, which is what PostgreSQL reads for
//!   `U & "..."` — so `U&"` is refused.
//! - `$$...$$` and `$tag$...$tag$`: end at the first closing delimiter, as in PostgreSQL.
//!   sqlparser also takes `$1$...$1$` as a dollar quote, where PostgreSQL reads the parameter
//!   `$1`: tags starting with a digit are refused. A `$` that is neither a parameter `$n` nor a
//!   dollar quote is refused.
//! - `"..."` identifiers with `""` escapes: as in PostgreSQL. `b"..."` is a sqlparser byte
//!   string (PostgreSQL: the name `b` then an identifier): refused.
//! - `B'...'` and `X'...'`: sqlparser reads backslash escapes in `X'...'` and doubled quotes in
//!   both; PostgreSQL reads neither. Any backslash or inner quote in them is refused.
//! - Operators: PostgreSQL takes the longest run of operator characters, cut before `--`/`/*`,
//!   dropping trailing `+`/`-` unless the run holds one of ``~!@#^&|`?%``; sqlparser has its own
//!   table (it reads `x>-1` as the operator `>-`, and `@--` as one operator). Every run is split
//!   the PostgreSQL way and must match sqlparser's tokens, else the statement is refused.
//! - Numbers: `1abc`, `1.2.3`, `0x1Fg`, `0o17` or `$1abc` lex differently across PostgreSQL versions
//!   (trailing junk is an error since 15, a separate name before). A number or parameter
//!   directly followed by a name or number, a number followed by `.`, `..`, and the `10L` form
//!   are refused.
//! - Adjacent string literals (`'a' 'b'`) are refused: PostgreSQL joins them only across a
//!   newline, a distinction the normalized text does not keep.
//! - Whitespace: sqlparser treats any Unicode whitespace as a separator only where a token may
//!   start with it; for PostgreSQL every non-ASCII character is an identifier character, and so
//!   it is for sqlparser's PostgreSQL dialect (`SELECT\u{a0}1` is one name). A vertical tab
//!   (whitespace for sqlparser, not for PostgreSQL before 16) and characters sqlparser cannot
//!   classify (`Token::Char`, a bare `\`) are refused, and so is NUL.
//!
//! What remains assumed: the server reads the statement as UTF-8 (client_encoding UTF8) and
//! with the lexer described above; identifiers longer than 63 bytes, which PostgreSQL
//! truncates, only make matching stricter.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use ring::digest;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, Tokenizer, Whitespace};

/// Longer statements are refused: normalization is linear, but memory per statement is not free.
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;

/// A run of operator characters longer than this is refused. No real statement comes close;
/// the bound keeps splitting runs the PostgreSQL way linear.
const MAX_OPERATOR_RUN: usize = 256;

/// Whether literal values are part of the statement's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiteralMode {
    /// Literals stay as written: `WHERE id = 1` and `WHERE id = 2` are different statements.
    #[default]
    Keep,
    /// Opt-in: string and numeric literals become `?`, so one entry approves every value. A
    /// string literal can carry code (`DO $$...$$`, `EXECUTE`-style functions), which this mode
    /// approves with it.
    Replace,
}

/// The first 8 bytes of SHA-256 of a normalized text, big-endian. Shown and logged in place of
/// statement text; never used alone to decide a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A fingerprint is written as exactly 16 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint is exactly 16 hexadecimal digits")]
pub struct ParseFingerprintError;

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // from_str_radix alone would accept a sign and shorter strings.
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseFingerprintError);
        }
        u64::from_str_radix(s, 16)
            .map(Fingerprint)
            .map_err(|_| ParseFingerprintError)
    }
}

/// A statement in normalized form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub text: String,
    pub fingerprint: Fingerprint,
    /// Non-empty statements, separated by top-level `;`.
    pub statements: usize,
}

/// Why a statement has no normalized form. Messages carry positions, not statement text, so
/// they can be logged for denied statements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("statement is {len} bytes, longer than the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("statement contains a NUL character")]
    Nul,
    /// sqlparser's tokenizer failed: unterminated string, quoted identifier or comment, or a
    /// malformed escape.
    #[error("cannot tokenize statement: {0}")]
    Tokenize(String),
    /// Text that PostgreSQL could read differently from pgward (see the module documentation).
    #[error("refused at line {line}, column {column}: {reason}")]
    Refused {
        line: u64,
        column: u64,
        reason: &'static str,
    },
    /// The normalized form would not tokenize back to the same tokens.
    #[error("statement has no unambiguous normalized form (tokens would merge when respaced)")]
    Unstable,
    /// sqlparser's token positions did not cover the input; never expected.
    #[error("internal error: token positions do not match the statement")]
    Positions,
}

/// Normalizes a client's statement (see the module documentation for what is kept and why).
///
/// The normalized text puts exactly one space between tokens, except none after `(`, `[`, `.`,
/// `::`, `:` and none before `)`, `]`, `,`, `.`, `::`, `:`, `;`, `[`, nor before a `(` that
/// follows a name or a keyword other than the clause words in `SPACED_BEFORE_PAREN`
/// (`COUNT(*)`, `t(a, b)`, but `IN ($1, $2)`, `SELECT (1 + 2)`). The rule looks at tokens
/// only, so it cannot depend on how the input was spaced. A unary minus stays a token of its
/// own (`- 1`, or `- ?` with [`LiteralMode::Replace`]). Placeholders `$n` and
/// `TRUE`/`FALSE`/`NULL` are never replaced.
///
/// With [`LiteralMode::Replace`] the jsonb operator `?` is refused: it would read exactly like
/// a replaced literal. `?|`, `?&` and `jsonb_exists()` are fine.
pub fn normalize(sql: &str, literals: LiteralMode) -> Result<Normalized, NormalizeError> {
    normalize_with(sql, literals, false)
}

/// Normalizes text that is already meant to be normalized (allowlist entries, learned
/// records). The only difference from [`normalize`]: with [`LiteralMode::Replace`] a bare `?`
/// is a replaced literal, kept as it is. For any `n = normalize(sql, mode)`,
/// `normalize_stored(&n.text, mode)` gives `n` back.
pub fn normalize_stored(text: &str, literals: LiteralMode) -> Result<Normalized, NormalizeError> {
    normalize_with(text, literals, true)
}

/// SHA-256 of the normalized text, first 8 bytes, big-endian.
pub fn fingerprint(normalized_text: &str) -> Fingerprint {
    let hash = digest::digest(&digest::SHA256, normalized_text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    Fingerprint(u64::from_be_bytes(first))
}

/// A token with its source text.
struct Lexeme<'a> {
    token: Token,
    raw: &'a str,
    /// Byte offset of `raw` in the source.
    start: usize,
    loc: Location,
}

impl Lexeme<'_> {
    fn end(&self) -> usize {
        self.start + self.raw.len()
    }

    fn is_whitespace(&self) -> bool {
        matches!(self.token, Token::Whitespace(_))
    }

    fn refused(&self, reason: &'static str) -> NormalizeError {
        NormalizeError::Refused {
            line: self.loc.line,
            column: self.loc.column,
            reason,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A name, quoted or not, or a keyword that may be followed by an argument list.
    Word,
    /// A keyword in `SPACED_BEFORE_PAREN`.
    Clause,
    Other,
}

/// Keywords after which a `(` keeps its space: they start clauses or operands, not calls. Only
/// readability depends on this list, not safety (the normalized text is checked to read back).
const SPACED_BEFORE_PAREN: &[Keyword] = &[
    Keyword::ALL,
    Keyword::AND,
    Keyword::ANY,
    Keyword::AS,
    Keyword::BETWEEN,
    Keyword::BY,
    Keyword::CASE,
    Keyword::CONFLICT,
    Keyword::DISTINCT,
    Keyword::ELSE,
    Keyword::EXCEPT,
    Keyword::EXISTS,
    Keyword::FILTER,
    Keyword::FROM,
    Keyword::GROUP,
    Keyword::HAVING,
    Keyword::ILIKE,
    Keyword::IN,
    Keyword::INTERSECT,
    Keyword::IS,
    Keyword::JOIN,
    Keyword::LATERAL,
    Keyword::LIKE,
    Keyword::LIMIT,
    Keyword::NOT,
    Keyword::OFFSET,
    Keyword::ON,
    Keyword::OR,
    Keyword::OVER,
    Keyword::RETURNING,
    Keyword::SELECT,
    Keyword::SET,
    Keyword::SOME,
    Keyword::THEN,
    Keyword::UNION,
    Keyword::USING,
    Keyword::VALUES,
    Keyword::WHEN,
    Keyword::WHERE,
    Keyword::WITH,
];

/// The words written upper case in normalized text: PostgreSQL's reserved key words and the
/// common statement and clause words. Sorted (binary search). Only readability depends on it.
const SQL_WORDS: &[&str] = &[
    "ABORT",
    "ALL",
    "ALTER",
    "ANALYSE",
    "ANALYZE",
    "AND",
    "ANY",
    "ARRAY",
    "AS",
    "ASC",
    "ASYMMETRIC",
    "BEGIN",
    "BETWEEN",
    "BOTH",
    "BY",
    "CASE",
    "CAST",
    "CHECK",
    "COLLATE",
    "COLUMN",
    "COMMIT",
    "CONFLICT",
    "CONSTRAINT",
    "COPY",
    "CREATE",
    "CROSS",
    "CURRENT_CATALOG",
    "CURRENT_DATE",
    "CURRENT_ROLE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_USER",
    "DEALLOCATE",
    "DEFAULT",
    "DEFERRABLE",
    "DELETE",
    "DESC",
    "DISCARD",
    "DISTINCT",
    "DO",
    "DROP",
    "ELSE",
    "END",
    "EXCEPT",
    "EXISTS",
    "EXPLAIN",
    "FALSE",
    "FETCH",
    "FILTER",
    "FOR",
    "FOREIGN",
    "FROM",
    "FULL",
    "GRANT",
    "GROUP",
    "HAVING",
    "ILIKE",
    "IN",
    "INITIALLY",
    "INNER",
    "INSERT",
    "INTERSECT",
    "INTERVAL",
    "INTO",
    "IS",
    "JOIN",
    "LATERAL",
    "LEADING",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "NATURAL",
    "NOT",
    "NOTHING",
    "NULL",
    "OFFSET",
    "ON",
    "ONLY",
    "OR",
    "ORDER",
    "OUTER",
    "OVER",
    "PARTITION",
    "PLACING",
    "PRIMARY",
    "REFERENCES",
    "RESET",
    "RETURNING",
    "RIGHT",
    "ROLLBACK",
    "SAVEPOINT",
    "SELECT",
    "SESSION_USER",
    "SET",
    "SHOW",
    "SOME",
    "START",
    "SYMMETRIC",
    "TABLE",
    "THEN",
    "TO",
    "TRAILING",
    "TRANSACTION",
    "TRUE",
    "TRUNCATE",
    "UNION",
    "UNIQUE",
    "UPDATE",
    "USER",
    "USING",
    "VALUES",
    "VARIADIC",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
];

fn is_sql_word(raw: &str) -> bool {
    raw.len() <= 20
        && SQL_WORDS
            .binary_search(&raw.to_ascii_uppercase().as_str())
            .is_ok()
}

/// One token of the normalized text.
struct Piece<'a> {
    text: Cow<'a, str>,
    kind: Kind,
}

fn normalize_with(
    sql: &str,
    literals: LiteralMode,
    question_is_placeholder: bool,
) -> Result<Normalized, NormalizeError> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(NormalizeError::TooLong {
            len: sql.len(),
            max: MAX_STATEMENT_BYTES,
        });
    }
    // The wire protocol ends a statement at NUL; never let the two readings differ.
    if sql.contains('\0') {
        return Err(NormalizeError::Nul);
    }
    let lexemes = lex(sql)?;
    for lx in &lexemes {
        if let Some(reason) = refuse_token(lx, literals, question_is_placeholder) {
            return Err(lx.refused(reason));
        }
    }
    check_operator_runs(sql, &lexemes)?;

    // Significant tokens, each with whether the input had nothing between it and the previous.
    let mut tokens: Vec<(&Lexeme<'_>, bool, Piece<'_>)> = Vec::new();
    let mut gap = true;
    for lx in &lexemes {
        if lx.is_whitespace() {
            gap = true;
            continue;
        }
        tokens.push((lx, !gap, piece(lx, literals)));
        gap = false;
    }
    for pair in tokens.windows(2) {
        let [(a, _, pa), (b, joined, pb)] = pair else {
            continue;
        };
        // A pair must be safe both as the input has it and as the normalized text will have it,
        // so that normalizing the normalized text succeeds too.
        let adjacent = *joined || tight(pa, pb);
        if let Some(reason) = refuse_pair(sql, a, b, adjacent) {
            return Err(b.refused(reason));
        }
    }

    // Drop empty statements; join the others with `;`.
    let mut pieces: Vec<Piece<'_>> = Vec::with_capacity(tokens.len());
    let mut statements = 0;
    let mut in_statement = false;
    for (lx, _, piece) in tokens {
        if lx.token == Token::SemiColon {
            in_statement = false;
            continue;
        }
        if !in_statement {
            if statements > 0 {
                pieces.push(Piece {
                    text: Cow::Borrowed(";"),
                    kind: Kind::Other,
                });
            }
            statements += 1;
            in_statement = true;
        }
        pieces.push(piece);
    }

    let mut text = String::with_capacity(sql.len() + sql.len() / 4);
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 && !tight(&pieces[i - 1], p) {
            text.push(' ');
        }
        text.push_str(&p.text);
    }
    if !reads_back(&text, &pieces) {
        return Err(NormalizeError::Unstable);
    }
    Ok(Normalized {
        fingerprint: fingerprint(&text),
        text,
        statements,
    })
}

/// Tokenizes `sql` and attaches each token's source text. sqlparser reports (line, column)
/// spans, columns counting characters; one forward walk turns them into byte offsets.
fn lex(sql: &str) -> Result<Vec<Lexeme<'_>>, NormalizeError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| NormalizeError::Tokenize(e.to_string()))?;
    let mut out = Vec::with_capacity(tokens.len());
    let mut chars = sql.char_indices();
    let (mut byte, mut line, mut column) = (0usize, 1u64, 1u64);
    for t in tokens {
        if (t.span.start.line, t.span.start.column) != (line, column) {
            return Err(NormalizeError::Positions);
        }
        let start = byte;
        let end = (t.span.end.line, t.span.end.column);
        while (line, column) < end {
            let Some((i, ch)) = chars.next() else {
                return Err(NormalizeError::Positions);
            };
            byte = i + ch.len_utf8();
            if ch == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        if (line, column) != end || byte == start {
            return Err(NormalizeError::Positions);
        }
        let raw = sql.get(start..byte).ok_or(NormalizeError::Positions)?;
        out.push(Lexeme {
            token: t.token,
            raw,
            start,
            loc: t.span.start,
        });
    }
    if byte != sql.len() {
        return Err(NormalizeError::Positions);
    }
    Ok(out)
}

fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::SingleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::Number(..)
    )
}

/// A numeric literal: a number, or sqlparser's reading of `0x1F` (a hex string without quotes).
fn is_number(lx: &Lexeme<'_>) -> bool {
    match lx.token {
        Token::Number(..) => true,
        Token::HexStringLiteral(_) => lx.raw.starts_with('0'),
        _ => false,
    }
}

fn is_string(lx: &Lexeme<'_>) -> bool {
    is_literal(&lx.token) && !is_number(lx)
}

/// Why one token is refused, if it is.
fn refuse_token(
    lx: &Lexeme<'_>,
    literals: LiteralMode,
    question_is_placeholder: bool,
) -> Option<&'static str> {
    let raw = lx.raw;
    match &lx.token {
        // Form feed is PostgreSQL whitespace; vertical tab only since PostgreSQL 16.
        Token::Whitespace(Whitespace::Space) if raw != " " && raw != "\u{c}" => {
            Some("a whitespace character PostgreSQL may not treat as whitespace")
        }
        Token::Whitespace(_) => None,
        Token::SingleQuotedString(_) | Token::NationalStringLiteral(_) if raw.contains('\\') => {
            Some(
                "backslash in a '...' string: its meaning depends on standard_conforming_strings; \
                 use E'...' or a parameter",
            )
        }
        Token::EscapedStringLiteral(_) if backslash_after_non_ascii(raw) => {
            Some("backslash right after a non-ASCII character in an E'...' string")
        }
        Token::HexStringLiteral(_) | Token::SingleQuotedByteStringLiteral(_)
            if raw.contains('\\') || raw.matches('\'').count() > 2 =>
        {
            Some("backslash or quote inside a bit or hex string")
        }
        Token::DollarQuotedString(d)
            if d.tag
                .as_deref()
                .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit())) =>
        {
            Some("dollar-quote tag starting with a digit (PostgreSQL reads a parameter)")
        }
        Token::Placeholder(p) if !is_parameter(p) => Some("`$` that is not a parameter `$n`"),
        Token::Number(_, true) => Some("number with an `L` suffix"),
        Token::Question if literals == LiteralMode::Replace && !question_is_placeholder => Some(
            "the `?` operator reads like a replaced literal; use jsonb_exists() or a policy \
             that keeps literals",
        ),
        Token::Char(_) | Token::Backslash => Some("a character PostgreSQL does not accept here"),
        // Forms of other dialects; sqlparser only produces `b"..."` for PostgreSQL.
        Token::EOF
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::QuoteDelimitedStringLiteral(_)
        | Token::NationalQuoteDelimitedStringLiteral(_)
        | Token::DuckIntDiv => Some("a token PostgreSQL does not read this way"),
        _ => None,
    }
}

fn is_parameter(p: &str) -> bool {
    p.strip_prefix('$')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn backslash_after_non_ascii(raw: &str) -> bool {
    let mut prev_non_ascii = false;
    for c in raw.chars() {
        if c == '\\' && prev_non_ascii {
            return true;
        }
        prev_non_ascii = !c.is_ascii();
    }
    false
}

/// Why two consecutive tokens are refused, if they are. `adjacent`: nothing between them in the
/// input or in the normalized text.
fn refuse_pair(sql: &str, a: &Lexeme<'_>, b: &Lexeme<'_>, adjacent: bool) -> Option<&'static str> {
    if is_string(a) && is_string(b) {
        return Some("two string literals in a row");
    }
    if !adjacent {
        return None;
    }
    let b_is_name = matches!(&b.token, Token::Word(w) if w.quote_style.is_none());
    if is_number(a) && (b_is_name || is_number(b) || b.token == Token::Period) {
        return Some("number directly followed by a name, number or period");
    }
    if matches!(a.token, Token::Placeholder(_)) && (b_is_name || is_number(b)) {
        return Some("parameter directly followed by a name or number");
    }
    if a.token == Token::Period && b.token == Token::Period {
        return Some("`..`");
    }
    if let Token::Word(w) = &a.token
        && w.quote_style.is_none()
        && a.raw.eq_ignore_ascii_case("u")
        && sql
            .get(a.end()..)
            .is_some_and(|rest| rest.starts_with("&\""))
    {
        return Some("U&\"...\" identifier");
    }
    None
}

/// PostgreSQL's operator characters (`op_chars` in scan.l).
fn is_op_char(b: u8) -> bool {
    b"~!@#^&|`?+-*/%<>=".contains(&b)
}

fn is_operator(lx: &Lexeme<'_>) -> bool {
    !lx.is_whitespace() && lx.raw.bytes().all(is_op_char)
}

/// Splits every run of operator characters as PostgreSQL's lexer does and requires sqlparser's
/// tokens to have the same boundaries.
fn check_operator_runs(sql: &str, lexemes: &[Lexeme<'_>]) -> Result<(), NormalizeError> {
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < lexemes.len() {
        let first = &lexemes[i];
        if !is_operator(first) {
            i += 1;
            continue;
        }
        // PostgreSQL's run: operator characters up to a comment start (`--` or `/*`).
        let mut end = first.start;
        while end < bytes.len()
            && is_op_char(bytes[end])
            && !bytes[end..].starts_with(b"--")
            && !bytes[end..].starts_with(b"/*")
        {
            end += 1;
        }
        if end - first.start > MAX_OPERATOR_RUN {
            return Err(first.refused("implausibly long run of operator characters"));
        }
        let mut pos = first.start;
        let mut j = i;
        while pos < end {
            let len = pg_operator_len(&bytes[pos..end]);
            match lexemes.get(j) {
                Some(lx) if is_operator(lx) && lx.start == pos && lx.raw.len() == len => {}
                _ => return Err(first.refused("operator characters PostgreSQL splits differently")),
            }
            pos += len;
            j += 1;
        }
        // PostgreSQL's operator ends here; sqlparser must not continue it.
        if lexemes
            .get(j)
            .is_some_and(|lx| lx.start == pos && is_operator(lx))
        {
            return Err(first.refused("operator characters PostgreSQL splits differently"));
        }
        i = j.max(i + 1);
    }
    Ok(())
}

/// Length of the operator PostgreSQL's lexer takes from the start of `run` (operator characters
/// only, no comment start): all of it, except that trailing `+`/`-` are given back unless the
/// operator holds a character SQL's own operators do not use (scan.l, rule `{operator}`).
fn pg_operator_len(run: &[u8]) -> usize {
    let mut n = run.len();
    if n > 1
        && matches!(run[n - 1], b'+' | b'-')
        && !run[..n - 1].iter().any(|c| b"~!@#^&|`?%".contains(c))
    {
        while n > 1 && matches!(run[n - 1], b'+' | b'-') {
            n -= 1;
        }
    }
    n
}

/// The token as it appears in the normalized text.
fn piece<'a>(lx: &Lexeme<'a>, literals: LiteralMode) -> Piece<'a> {
    match &lx.token {
        Token::Word(w) if w.quote_style.is_none() => {
            // SQL's own words upper, other names lower: ASCII only, as PostgreSQL folds
            // identifiers. "SQL's own words" is pgward's fixed list, not sqlparser's keyword
            // table: that table holds ordinary names (`name`, `id`, `data`) and grows between
            // releases, which would change normalized texts and break existing allowlists.
            let upper = w.keyword != Keyword::NoKeyword && is_sql_word(lx.raw);
            let folded = if upper {
                lx.raw.bytes().any(|b| b.is_ascii_lowercase())
            } else {
                lx.raw.bytes().any(|b| b.is_ascii_uppercase())
            };
            let text = match (folded, upper) {
                (false, _) => Cow::Borrowed(lx.raw),
                (true, true) => Cow::Owned(lx.raw.to_ascii_uppercase()),
                (true, false) => Cow::Owned(lx.raw.to_ascii_lowercase()),
            };
            let kind = if SPACED_BEFORE_PAREN.contains(&w.keyword) {
                Kind::Clause
            } else {
                Kind::Word
            };
            Piece { text, kind }
        }
        Token::Word(_) => Piece {
            text: Cow::Borrowed(lx.raw),
            kind: Kind::Word,
        },
        t if literals == LiteralMode::Replace && is_literal(t) => Piece {
            text: Cow::Borrowed("?"),
            kind: Kind::Other,
        },
        _ => Piece {
            text: Cow::Borrowed(lx.raw),
            kind: Kind::Other,
        },
    }
}

/// Whether the normalized text joins `a` and `b` without a space.
fn tight(a: &Piece<'_>, b: &Piece<'_>) -> bool {
    let after = a.kind == Kind::Other && matches!(&*a.text, "(" | "[" | "." | "::" | ":");
    let before = b.kind == Kind::Other
        && (matches!(&*b.text, ")" | "]" | "," | "." | "::" | ":" | ";" | "[")
            || (&*b.text == "(" && a.kind == Kind::Word));
    after || before
}

/// Whether `text` tokenizes to exactly `pieces`, separated by single spaces or nothing.
fn reads_back(text: &str, pieces: &[Piece<'_>]) -> bool {
    let Ok(lexemes) = lex(text) else {
        return false;
    };
    let mut expected = pieces.iter();
    for lx in &lexemes {
        match &lx.token {
            Token::Whitespace(Whitespace::Space) if lx.raw == " " => {}
            Token::Whitespace(_) => return false,
            _ => match expected.next() {
                Some(p) if p.text == lx.raw => {}
                _ => return false,
            },
        }
    }
    expected.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(sql: &str) -> String {
        match normalize(sql, LiteralMode::Keep) {
            Ok(n) => n.text,
            Err(e) => panic!("{sql:?}: {e}"),
        }
    }

    fn replace(sql: &str) -> String {
        match normalize(sql, LiteralMode::Replace) {
            Ok(n) => n.text,
            Err(e) => panic!("{sql:?}: {e}"),
        }
    }

    fn refused(sql: &str, mode: LiteralMode) -> NormalizeError {
        match normalize(sql, mode) {
            Ok(n) => panic!("{sql:?} normalized to {:?}, expected an error", n.text),
            Err(e) => e,
        }
    }

    fn is_refused(sql: &str) -> bool {
        matches!(
            normalize(sql, LiteralMode::Keep),
            Err(NormalizeError::Refused { .. })
        )
    }

    #[test]
    fn whitespace_comments_and_case_do_not_matter() {
        let a = "SELECT * FROM users WHERE id = $1";
        for b in [
            "select *  from USERS where id=$1 -- x",
            "  SELECT\t*\nFROM users\r\nWHERE id=$1 ;  ",
            "/* lead */ SeLeCt * /* mid */ FROM Users WHERE ID = $1;\n-- trailing",
            "/* a /* nested */ b */SELECT * FROM users WHERE id = $1;;",
        ] {
            assert_eq!(keep(b), keep(a), "{b:?}");
        }
        assert_eq!(keep(a), "SELECT * FROM users WHERE id = $1");
    }

    #[test]
    fn anything_else_matters() {
        let base = "SELECT * FROM users WHERE id = $1 AND name = 'bob'";
        for other in [
            "SELECT * FROM users WHERE id = $2 AND name = 'bob'",
            "SELECT * FROM users WHERE id = $1 AND name = 'Bob'",
            "SELECT * FROM \"Users\" WHERE id = $1 AND name = 'bob'",
            "SELECT * FROM \"users\" WHERE id = $1 AND name = 'bob'",
            "SELECT * FROM users WHERE id = $1 AND name = 'bob' OR 1=1",
            "SELECT * FROM users WHERE id = $1 AND name = E'bob'",
            "SELECT * FROM users WHERE id = $1 AND name = $$bob$$",
            "SELECT * FROM users WHERE id = $1 AND name = 'bob'; SELECT 1",
            "SELECT * FROM users WHERE id = 1 AND name = 'bob'",
            "SELECT * FROM users WHERE id = - $1 AND name = 'bob'",
        ] {
            assert_ne!(keep(other), keep(base), "{other:?}");
        }
        assert_ne!(keep("SELECT 1"), keep("SELECT 2"));
        assert_ne!(keep("SELECT 1.0"), keep("SELECT 1"));
    }

    #[test]
    fn spacing_rule() {
        assert_eq!(keep("select a.b,c from t"), "SELECT a.b, c FROM t");
        assert_eq!(keep("select f( x ) , g(y)"), "SELECT f(x), g(y)");
        assert_eq!(
            keep("select $1 :: int , x[ 1 : 2 ]"),
            "SELECT $1::int, x[1:2]"
        );
        assert_eq!(keep("select count ( * ) from t"), "SELECT count(*) FROM t");
        assert_eq!(
            keep("select x from t where y in(1,2)"),
            "SELECT x FROM t WHERE y IN (1, 2)"
        );
        assert_eq!(
            keep("insert into t(a) values($1)"),
            "INSERT INTO t(a) VALUES ($1)"
        );
        assert_eq!(keep("select -1, a-b, a - -b"), "SELECT - 1, a - b, a - - b");
        assert_eq!(keep("select (1+2)*3"), "SELECT (1 + 2) * 3");
        assert_eq!(keep("select doc->>'k' from t"), "SELECT doc ->> 'k' FROM t");
        assert_eq!(keep("select ARRAY [1,2]"), "SELECT ARRAY[1, 2]");
        assert_eq!(keep("select s . \"T\" . c"), "SELECT s.\"T\".c");
        assert_eq!(keep("select f(a => 1, b := 2)"), "SELECT f(a => 1, b := 2)");
    }

    #[test]
    fn words_fold_as_postgres_does() {
        // Keywords up, names down, ASCII only; quoted identifiers untouched.
        assert_eq!(keep("select MyCol from MyTab"), "SELECT mycol FROM mytab");
        assert_eq!(
            keep("select Ärger, ÄRGER, äRGER"),
            "SELECT Ärger, Ärger, ärger"
        );
        assert_eq!(keep("select \"MyCol\""), "SELECT \"MyCol\"");
        assert_ne!(keep("select \"a\"\"b\""), keep("select \"a\"\"B\""));
        assert_eq!(keep("select true, NULL, False"), "SELECT TRUE, NULL, FALSE");
    }

    #[test]
    fn statements_and_semicolons() {
        let n = |s| match normalize(s, LiteralMode::Keep) {
            Ok(n) => (n.text, n.statements),
            Err(e) => panic!("{s:?}: {e}"),
        };
        assert_eq!(n("SELECT 1; SELECT 2"), ("SELECT 1; SELECT 2".into(), 2));
        assert_eq!(n("SELECT 1;"), ("SELECT 1".into(), 1));
        assert_eq!(n(";;SELECT 1;;SELECT 2;"), ("SELECT 1; SELECT 2".into(), 2));
        assert_eq!(n(";;"), (String::new(), 0));
        assert_eq!(n(""), (String::new(), 0));
        assert_eq!(n(" -- only a comment\n"), (String::new(), 0));
        // A `;` inside a literal or comment separates nothing.
        assert_eq!(n("SELECT ';' /* ; */"), ("SELECT ';'".into(), 1));
    }

    #[test]
    fn literals_kept_verbatim() {
        for lit in [
            "'it''s'",
            "E'\\''",
            "E'a\\nb'",
            "U&'d\\0061t\\+000061'",
            "$$a ' \" $ b$$",
            "$tag$ $$ inner $$ $tag$",
            "N'x'",
            "B'1010'",
            "X'1F'",
            "0x1F",
            "1.5e-3",
            "1_000",
            "'\u{e9}\u{1F600}'",
            "'\n'",
        ] {
            assert_eq!(
                keep(&format!("SELECT {lit}")),
                format!("SELECT {lit}"),
                "{lit}"
            );
        }
    }

    #[test]
    fn replace_mode() {
        assert_eq!(
            replace("select * from t where a = 'x' and b = 42 and c = -1.5 and d = $1"),
            "SELECT * FROM t WHERE a = ? AND b = ? AND c = - ? AND d = $1"
        );
        assert_eq!(
            replace("select E'\\'', U&'x', $q$x$q$, B'1', X'ff', N'n', 0xff, 1e5"),
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?"
        );
        assert_eq!(
            replace("select true, null, x ?| array['a']"),
            "SELECT TRUE, NULL, x ?| ARRAY[?]"
        );
        assert_eq!(
            replace("select f('a'),('b')::text"),
            "SELECT f(?), (?)::text"
        );
        assert_eq!(replace("select 1"), replace("select 'one'"));
        assert_ne!(replace("select 1"), replace("select -1"));
        assert_ne!(replace("select 1"), replace("select $1"));
        // The jsonb `?` operator would read like a literal.
        assert!(matches!(
            refused("select x ? 'k'", LiteralMode::Replace),
            NormalizeError::Refused { .. }
        ));
        assert_eq!(keep("select x ? 'k'"), "SELECT x ? 'k'");
    }

    #[test]
    fn stored_text_is_a_fixed_point() {
        for mode in [LiteralMode::Keep, LiteralMode::Replace] {
            for sql in CORPUS {
                let Ok(n) = normalize(sql, mode) else {
                    continue;
                };
                assert_eq!(
                    normalize_stored(&n.text, mode).as_ref(),
                    Ok(&n),
                    "{sql:?} {mode:?}"
                );
            }
        }
        assert_eq!(
            normalize_stored("SELECT * FROM t WHERE a = ?", LiteralMode::Replace).map(|n| n.text),
            Ok("SELECT * FROM t WHERE a = ?".to_string())
        );
    }

    #[test]
    fn tokenizer_errors_fail_closed() {
        for sql in [
            "SELECT 'unterminated",
            "SELECT E'unterminated\\'",
            "SELECT \"unterminated",
            "SELECT /* unterminated /* nested */",
            "SELECT $$unterminated",
            "SELECT $a$unterminated$b$",
            "SELECT E'\\u12'",
            "SELECT U&'\\'",
        ] {
            assert!(
                matches!(refused(sql, LiteralMode::Keep), NormalizeError::Tokenize(_)),
                "{sql:?}"
            );
        }
    }

    #[test]
    fn nested_comments_hide_nothing() {
        assert_eq!(keep("/* a /* b */ c */ SELECT 1"), "SELECT 1");
        // One level closed is still a comment; PostgreSQL agrees.
        assert!(matches!(
            refused("/* a /* b */ SELECT 1", LiteralMode::Keep),
            NormalizeError::Tokenize(_)
        ));
        assert_eq!(keep("SELECT 1 --x; DROP TABLE t"), "SELECT 1");
        assert_eq!(
            keep("SELECT 1 --x\r; DROP TABLE t"),
            "SELECT 1; DROP TABLE t"
        );
        assert_eq!(keep("SELECT 1/**/+/**/2"), "SELECT 1 + 2");
    }

    #[test]
    fn string_forms() {
        // Standard strings: a backslash would mean something else with
        // standard_conforming_strings off.
        assert!(is_refused("SELECT '\\'"));
        assert!(is_refused("SELECT '\\' -- ' ; DROP TABLE t; --"));
        assert!(is_refused("SELECT N'\\'"));
        // E'' strings are unambiguous.
        assert_eq!(keep("SELECT E'\\\\'"), "SELECT E'\\\\'");
        assert_eq!(keep("SELECT e'\\'' -- '"), "SELECT e'\\''");
        assert!(is_refused("SELECT E'\u{df}\\' OR 1=1 --'"));
        // Quotes and backslashes inside bit/hex strings read differently.
        assert!(is_refused("SELECT X'\\'' , 1 -- '"));
        assert!(is_refused("SELECT B'1''0'"));
        // Adjacent string literals.
        assert!(is_refused("SELECT 'a'\n'b'"));
        assert!(is_refused("SELECT 'a' /* c */ E'b'"));
        assert!(is_refused("SELECT $$a$$$$b$$"));
        // Unicode strings and identifiers.
        assert_eq!(
            keep("SELECT U&'\\0041' uescape '!'"),
            "SELECT U&'\\0041' uescape '!'"
        );
        assert!(is_refused("SELECT U&\"x\" FROM t"));
        assert_eq!(keep("SELECT u & \"x\" FROM t"), "SELECT u & \"x\" FROM t");
        // Identifiers with doubled quotes.
        assert_eq!(keep("SELECT \"a\"\"b\" FROM t"), "SELECT \"a\"\"b\" FROM t");
        assert!(is_refused("SELECT b\"x\""));
    }

    #[test]
    fn dollar_forms() {
        assert_eq!(keep("SELECT $a$ x $b$ y $a$"), "SELECT $a$ x $b$ y $a$");
        assert_eq!(keep("SELECT a$b$c, $1"), "SELECT a$b$c, $1");
        assert!(is_refused("SELECT $1$abc$1$"));
        assert!(is_refused("SELECT $1abc"));
        assert!(is_refused("SELECT $ 1"));
        assert!(is_refused("SELECT $€$x$€$"));
    }

    #[test]
    fn number_forms() {
        assert!(is_refused("SELECT 1abc"));
        assert!(is_refused("SELECT 1.2.3"));
        assert!(is_refused("SELECT 1..2"));
        assert!(is_refused("SELECT 0x1Fg"));
        assert!(is_refused("SELECT 10L"));
        assert!(is_refused("SELECT 0o17"));
        assert!(is_refused("SELECT 1 .x"));
        assert!(is_refused("SELECT a..b"));
        assert_eq!(keep("SELECT 1 abc"), "SELECT 1 abc");
        assert_eq!(
            keep("SELECT * FROM t LIMIT 10 OFFSET 5"),
            "SELECT * FROM t LIMIT 10 OFFSET 5"
        );
        assert_eq!(keep("SELECT .5, 5., 1e+5"), "SELECT .5, 5., 1e+5");
        assert_eq!(keep("SELECT ($1).f"), "SELECT ($1).f");
    }

    #[test]
    fn operator_runs_split_as_postgres_does() {
        assert_eq!(pg_operator_len(b"=-"), 1);
        assert_eq!(pg_operator_len(b"*-+"), 1);
        assert_eq!(pg_operator_len(b"@-"), 2);
        assert_eq!(pg_operator_len(b"!=-"), 3);
        assert_eq!(pg_operator_len(b"%-"), 2);
        assert_eq!(pg_operator_len(b"<>"), 2);
        assert_eq!(
            keep("SELECT a=-1, a<-1, a*-1, a<=-1, a+-1"),
            "SELECT a = - 1, a < - 1, a * - 1, a <= - 1, a + - 1"
        );
        assert_eq!(
            keep("SELECT a||b, a->>'x', a#>>'{x}', a@>b, a<@b"),
            "SELECT a || b, a ->> 'x', a #>> '{x}', a @> b, a <@ b"
        );
        // sqlparser reads these as one operator, PostgreSQL as two (or the reverse).
        for sql in [
            "SELECT a>-1",
            "SELECT a>=-1",
            "SELECT a<>-1",
            "SELECT a!=-1",
            "SELECT a^-1",
            "SELECT a @-- x\n",
        ] {
            assert!(is_refused(sql), "{sql:?}");
        }
        assert!(is_refused(&format!(
            "SELECT 1 {} 1",
            "+".repeat(MAX_OPERATOR_RUN + 1)
        )));
        assert_eq!(
            keep(&format!("SELECT 1 {}1", "+ ".repeat(1000))).len(),
            2010
        );
    }

    #[test]
    fn characters_postgres_rejects_or_reads_otherwise() {
        assert!(is_refused("SELECT\u{b}1"));
        assert!(is_refused("SELECT `x`"));
        assert!(is_refused("SELECT \\x"));
        assert_eq!(
            refused("SELECT '\0'", LiteralMode::Keep),
            NormalizeError::Nul
        );
        assert_eq!(keep("SELECT\u{c}1"), "SELECT 1");
        // Non-ASCII whitespace is a name character for PostgreSQL and for sqlparser alike.
        assert_eq!(keep("SELECT\u{a0}1"), "select\u{a0}1");
    }

    #[test]
    fn errors_name_positions_not_text() {
        let e = refused("SELECT 1,\n  '\\secret'", LiteralMode::Keep);
        assert_eq!(
            e,
            NormalizeError::Refused {
                line: 2,
                column: 3,
                reason: "backslash in a '...' string: its meaning depends on \
                         standard_conforming_strings; use E'...' or a parameter"
            }
        );
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn respacing_that_would_merge_tokens_is_refused() {
        assert_eq!(
            refused("SELECT t. 5", LiteralMode::Keep),
            NormalizeError::Unstable
        );
        assert_eq!(
            refused("SELECT a: :b", LiteralMode::Keep),
            NormalizeError::Unstable
        );
    }

    #[test]
    fn too_long() {
        let sql = format!("SELECT '{}'", "x".repeat(MAX_STATEMENT_BYTES));
        assert!(matches!(
            refused(&sql, LiteralMode::Keep),
            NormalizeError::TooLong { .. }
        ));
        let sql = format!("SELECT '{}'", "x".repeat(MAX_STATEMENT_BYTES - 20));
        assert!(normalize(&sql, LiteralMode::Keep).is_ok());
    }

    #[test]
    fn fingerprint_format() {
        // SHA-256("") = e3b0c44298fc1c14...
        assert_eq!(fingerprint("").to_string(), "e3b0c44298fc1c14");
        assert_eq!(fingerprint("").0, 0xe3b0_c442_98fc_1c14);
        let f = fingerprint("SELECT 1");
        assert_eq!(f.to_string().parse::<Fingerprint>(), Ok(f));
        assert_eq!(
            "E3B0C44298FC1C14".parse::<Fingerprint>(),
            Ok(fingerprint(""))
        );
        for bad in [
            "",
            "e3b0c44298fc1c1",
            "e3b0c44298fc1c145",
            "+3b0c44298fc1c14",
            "g3b0c44298fc1c14",
            " e3b0c44298fc1c1",
        ] {
            assert_eq!(
                bad.parse::<Fingerprint>(),
                Err(ParseFingerprintError),
                "{bad:?}"
            );
        }
        let n = normalize("select 1", LiteralMode::Keep).ok();
        assert_eq!(n.map(|n| n.fingerprint), Some(fingerprint("SELECT 1")));
    }

    /// Statements for the property tests: ordinary SQL plus lexical corner cases.
    const CORPUS: &[&str] = &[
        "SELECT * FROM users WHERE id = $1",
        "select id, name from users where email = $1 and active",
        "INSERT INTO t (a, b) VALUES ($1, 'x''y'), ($2, E'\\n')",
        "UPDATE t SET a = a + 1, b = -2.5e-3 WHERE c IN (1, 2, 3) RETURNING *",
        "DELETE FROM \"Weird \"\" Name\" WHERE x::int[] @> ARRAY[1]",
        "SELECT count(*), max(x) FILTER (WHERE y > 0) OVER (PARTITION BY z) FROM t GROUP BY 1",
        "WITH q AS (SELECT 1 AS a) SELECT a FROM q; SELECT 2",
        "SELECT $$dollar ' \" -- /* $$, $t$x$t$, U&'\\0041', B'101', X'ff', N'n'",
        "SELECT a->'b'->>'c', d #>> '{e,f}', g ?| array['h'], i || j FROM k",
        "SELECT CAST($1 AS numeric(10, 2)), x::varchar(20), interval '1 day'",
        "SELECT t.a, s.\"B\", u.* FROM t JOIN s ON t.id = s.id LEFT JOIN u USING (id)",
        "SELECT CASE WHEN a < b THEN 'lt' WHEN a <> b THEN 'ne' ELSE NULL END",
        "SELECT x FROM t WHERE y LIKE 'a%' ESCAPE '!' ORDER BY x DESC NULLS LAST LIMIT 10",
        "SELECT f(a => 1, b := 2), g(VARIADIC ARRAY[1, 2])",
        "SELECT 'a' || 'b', 1 + - 2, (1 * 2) / 3 % 4 ^ 5, |/ 16, @ -5",
        "SELECT x ? 'k' FROM t",
        "SELECT 1 FROM t WHERE a = ANY($1::int[]) AND b BETWEEN 1 AND 2",
        "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; COMMIT",
        "SELECT Ärger, \"Ärger\", ärger FROM ☃",
        "SELECT 0x1F, 1_000_000, .5, 5., 1e10",
        "SELECT * FROM t WHERE a=$1 AND b=$2",
        "SELECT * FROM t WHERE a = $1 AND b = $2",
        "SELECT * FROM T WHERE A = $1 AND B = $2",
        "SELECT * FROM t WHERE a = $2 AND b = $1",
        "SELECT * FROM t WHERE a = 1",
        "SELECT * FROM t WHERE a = '1'",
        "SELECT * FROM t WHERE a = 1 OR 1 = 1",
        "SELECT * FROM t WHERE \"a\" = $1 AND b = $2",
        "SELECT ARRAY[1,2][1:2], (x).y, ($1).z",
    ];

    /// Per statement, the significant tokens as their source text (unquoted words upper-cased):
    /// what PostgreSQL sees, modulo whitespace, comments, case and empty statements.
    fn token_statements(sql: &str) -> Vec<Vec<String>> {
        let Ok(lexemes) = lex(sql) else {
            return Vec::new();
        };
        let mut out = vec![Vec::new()];
        for lx in lexemes {
            match &lx.token {
                Token::Whitespace(_) => {}
                Token::SemiColon => out.push(Vec::new()),
                Token::Word(w) if w.quote_style.is_none() => {
                    if let Some(last) = out.last_mut() {
                        last.push(lx.raw.to_ascii_uppercase());
                    }
                }
                _ => {
                    if let Some(last) = out.last_mut() {
                        last.push(lx.raw.to_string());
                    }
                }
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// A deterministic pseudo-random sequence (xorshift), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    /// Rewrites `sql` with different whitespace, comments and case of unquoted words, keeping
    /// its tokens.
    fn perturb(sql: &str, rng: &mut Rng) -> String {
        let Ok(lexemes) = lex(sql) else {
            return sql.to_string();
        };
        let mut out = String::new();
        for (i, lx) in lexemes.iter().enumerate() {
            match &lx.token {
                Token::Whitespace(_) => {
                    out.push_str(rng.pick(&[
                        " ",
                        "\n",
                        "\t ",
                        " /* c */ ",
                        " -- c\n",
                        "\r\n",
                        " /* /* n */ */",
                    ]));
                }
                Token::Word(w) if w.quote_style.is_none() => {
                    for c in lx.raw.chars() {
                        if rng.next().is_multiple_of(2) {
                            out.push(c.to_ascii_uppercase());
                        } else {
                            out.push(c.to_ascii_lowercase());
                        }
                    }
                }
                _ => out.push_str(lx.raw),
            }
            // Sometimes add whitespace where there was none. It starts with a space: sqlparser
            // would read `-/**/` as one operator (and the statement is refused).
            let next_is_ws = lexemes.get(i + 1).is_some_and(|n| n.is_whitespace());
            if !next_is_ws && !lx.is_whitespace() && rng.next().is_multiple_of(3) {
                out.push_str(rng.pick(&[" ", " /**/", "\n"]));
            }
        }
        if rng.next().is_multiple_of(2) {
            out.push_str(rng.pick(&[";", " ; ", ";;", "; -- done"]));
        }
        out
    }

    #[test]
    fn equal_normalized_text_means_equal_tokens() {
        for mode in [LiteralMode::Keep, LiteralMode::Replace] {
            let normalized: Vec<(&str, Option<String>)> = CORPUS
                .iter()
                .map(|s| (*s, normalize(s, mode).ok().map(|n| n.text)))
                .collect();
            for (a, na) in &normalized {
                for (b, nb) in &normalized {
                    let (Some(na), Some(nb)) = (na, nb) else {
                        continue;
                    };
                    if mode == LiteralMode::Keep {
                        assert_eq!(
                            na == nb,
                            token_statements(a) == token_statements(b),
                            "{a:?} vs {b:?}"
                        );
                    } else if na == nb {
                        assert_eq!(
                            token_statements(a).len(),
                            token_statements(b).len(),
                            "{a:?} vs {b:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn perturbed_inputs_normalize_alike() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for sql in CORPUS {
            let Ok(base) = normalize(sql, LiteralMode::Keep) else {
                panic!("corpus statement refused: {sql:?}");
            };
            for _ in 0..50 {
                let variant = perturb(sql, &mut rng);
                match normalize(&variant, LiteralMode::Keep) {
                    Ok(n) => {
                        assert_eq!(n, base, "{sql:?} vs {variant:?}");
                        assert_eq!(token_statements(&variant), token_statements(sql));
                    }
                    Err(e) => panic!("{variant:?} (from {sql:?}): {e}"),
                }
            }
        }
    }

    #[test]
    fn single_token_changes_are_seen() {
        // Changing, dropping or adding any one token changes the normalized text (unless the
        // change is to a `;` at a statement boundary, or the result is refused).
        for sql in CORPUS {
            let Ok(lexemes) = lex(sql) else { continue };
            let Ok(base) = normalize(sql, LiteralMode::Keep) else {
                continue;
            };
            for (i, lx) in lexemes.iter().enumerate() {
                if lx.is_whitespace() || lx.token == Token::SemiColon {
                    continue;
                }
                for replacement in ["", " OR 1=1 ", " x ", " 'y' ", " ; "] {
                    if replacement.trim().eq_ignore_ascii_case(lx.raw) {
                        continue;
                    }
                    let mut variant = String::new();
                    for (j, other) in lexemes.iter().enumerate() {
                        if i == j {
                            variant.push_str(replacement);
                        } else {
                            variant.push_str(other.raw);
                        }
                    }
                    if let Ok(n) = normalize(&variant, LiteralMode::Keep) {
                        assert_ne!(n.text, base.text, "{sql:?} vs {variant:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn linear_on_large_input() {
        // 100k tokens on one line: quadratic position handling would take minutes.
        let sql = format!("SELECT {}1", "1 + ".repeat(100_000));
        let n = normalize(&sql, LiteralMode::Replace).map(|n| n.statements);
        assert_eq!(n, Ok(1));
    }
}

#[cfg(test)]
mod sql_words {
    #[test]
    fn the_word_list_is_sorted_and_ordinary_names_stay_lower_case() {
        assert!(super::SQL_WORDS.windows(2).all(|w| w[0] < w[1]));
        let n = super::normalize(
            "select Name, data from Items where ID = $1",
            super::LiteralMode::Keep,
        )
        .expect("normalizes");
        assert_eq!(n.text, "SELECT name, data FROM items WHERE id = $1");
    }
}
