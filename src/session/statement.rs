//! What a SQL string does to *session* state, decided lexically: enough to keep one client's
//! session settings from leaking to the next client of a shared (transaction-mode) server
//! connection. This is not the statement policy (that uses a real parser); it answers only
//! "is this a session-level SET, something pgward must reset, or something that cannot be shared?".
//!
//! The lexer understands quoting ('…', E'…', "…", $tag$…$tag$) and comments (--, nested /* */),
//! so a keyword inside a string or comment is never mistaken for one outside.

/// The effect of one statement on session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// Nothing beyond the current transaction.
    None,
    /// `SET LOCAL …` / `SET TRANSACTION …`: the server answers `SET`, and nothing outlives the
    /// transaction.
    TransactionScoped,
    /// `SET [SESSION] name …`: tracked and replayed for this client on every server it gets.
    Set { name: String },
    /// `RESET name` or `SET name TO DEFAULT`: the client's setting is dropped.
    Reset { name: String },
    /// `RESET ALL` / `DISCARD ALL`: every tracked setting is dropped.
    ResetAll,
    /// Changes session state pgward cannot replay (e.g. `set_config(…, false)`): the server
    /// connection is reset before another client uses it.
    Untracked,
    /// Cannot be shared between clients: refused in transaction pooling mode.
    Unshareable(&'static str),
    /// `DEALLOCATE [PREPARE] name` (`Some`, the name as PostgreSQL folds it) or `… ALL`
    /// (`None`): in transaction mode pgward answers it from the client's own statements.
    Deallocate(Option<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    /// A quoted identifier, quotes included.
    Quoted(&'a str),
    /// A string literal (any quoting), quotes included.
    Str(&'a str),
    Num,
    Punct(u8),
}

/// Splits on top-level `;` and returns each non-empty statement with its tokens.
struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Lexer { s, pos: 0 }
    }

    fn skip_space_and_comments(&mut self) {
        let b = self.s.as_bytes();
        loop {
            while self.pos < b.len() && b[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if b[self.pos..].starts_with(b"--") {
                while self.pos < b.len() && b[self.pos] != b'\n' {
                    self.pos += 1;
                }
            } else if b[self.pos..].starts_with(b"/*") {
                let mut depth = 0usize;
                while self.pos < b.len() {
                    if b[self.pos..].starts_with(b"/*") {
                        depth += 1;
                        self.pos += 2;
                    } else if b[self.pos..].starts_with(b"*/") {
                        depth -= 1;
                        self.pos += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        self.pos += 1;
                    }
                }
            } else {
                return;
            }
        }
    }

    fn next_tok(&mut self) -> Option<Tok<'a>> {
        self.skip_space_and_comments();
        let b = self.s.as_bytes();
        let start = self.pos;
        let c = *b.get(start)?;
        // E'…' / e'…': backslash escapes; other strings: '' doubling only.
        if (c == b'e' || c == b'E') && b.get(start + 1) == Some(&b'\'') {
            self.pos += 1;
            self.quoted(b'\'', true);
            return Some(Tok::Str(&self.s[start..self.pos]));
        }
        if c == b'\'' {
            self.quoted(b'\'', false);
            return Some(Tok::Str(&self.s[start..self.pos]));
        }
        if c == b'"' {
            self.quoted(b'"', false);
            return Some(Tok::Quoted(&self.s[start..self.pos]));
        }
        if let Some(end) = (c == b'$').then(|| self.dollar_tag_end()).flatten() {
            let tag = &self.s[start..end];
            self.pos = match self.s[end..].find(tag) {
                Some(i) => end + i + tag.len(),
                None => b.len(),
            };
            return Some(Tok::Str(&self.s[start..self.pos]));
        }
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while self.pos < b.len()
                && (b[self.pos].is_ascii_alphanumeric()
                    || b[self.pos] == b'_'
                    || b[self.pos] == b'$'
                    || b[self.pos] >= 0x80)
            {
                self.pos += 1;
            }
            return Some(Tok::Word(&self.s[start..self.pos]));
        }
        if c.is_ascii_digit() {
            while self.pos < b.len() && (b[self.pos].is_ascii_alphanumeric() || b[self.pos] == b'.')
            {
                self.pos += 1;
            }
            return Some(Tok::Num);
        }
        self.pos += 1;
        Some(Tok::Punct(c))
    }

    fn quoted(&mut self, q: u8, backslash: bool) {
        let b = self.s.as_bytes();
        self.pos += 1;
        while self.pos < b.len() {
            let c = b[self.pos];
            if backslash && c == b'\\' {
                self.pos += 2;
                continue;
            }
            self.pos += 1;
            if c == q {
                if b.get(self.pos) == Some(&q) {
                    self.pos += 1;
                } else {
                    return;
                }
            }
        }
        self.pos = self.pos.min(b.len());
    }

    /// `$tag$` or `$$` at the current position: the index just past the opening tag.
    fn dollar_tag_end(&self) -> Option<usize> {
        let b = self.s.as_bytes();
        let mut i = self.pos + 1;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
            if i == self.pos + 1 && b[i].is_ascii_digit() {
                return None; // $1 is a parameter, not a tag
            }
            i += 1;
        }
        (b.get(i) == Some(&b'$')).then_some(i + 1)
    }
}

/// One statement of a query string: its text and its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    pub text: &'a str,
    pub effect: SessionEffect,
}

/// Splits a query string into statements and classifies each.
pub fn classify(sql: &str) -> Vec<Statement<'_>> {
    let mut out = Vec::new();
    let mut lx = Lexer::new(sql);
    let mut toks: Vec<Tok<'_>> = Vec::new();
    let mut start = None;
    loop {
        lx.skip_space_and_comments();
        let here = lx.pos;
        let t = lx.next_tok();
        match t {
            None | Some(Tok::Punct(b';')) => {
                if let Some(s) = start.take() {
                    out.push(Statement {
                        text: sql[s..here].trim_end(),
                        effect: effect(&toks),
                    });
                }
                toks.clear();
                if t.is_none() {
                    return out;
                }
            }
            Some(tok) => {
                start.get_or_insert(here);
                toks.push(tok);
            }
        }
    }
}

/// Shapes (see [`crate::policy::shape`]) of statement texts a session recently classified as
/// having no session effect at all, with their statement counts: the next text of the same
/// shape — the same bytes but for integer literals, as a simple-protocol client sends
/// `... WHERE id = 42` with a new number each time — skips the lexer.
///
/// Exact because [`classify`] reads words, quoted names, strings, punctuation and the kind of
/// each token, never a number's value (`Tok::Num` has none), and two texts of one shape lex to
/// the same tokens but for the values of whole number tokens. Only "no effect" is kept:
/// anything else carries the statement's own text and is worked out each time.
#[derive(Debug, Default)]
pub struct PlainShapes {
    entries: Vec<(Box<[u8]>, usize)>,
    /// The entry the next new shape replaces once the list is full.
    next: usize,
}

/// Shapes a session keeps: a few distinct statements in rotation is what a client repeats.
const PLAIN_SHAPES: usize = 8;

impl PlainShapes {
    /// How many statements (all without effect) a text of this shape holds, if known.
    pub fn statements(&self, shape: &[u8]) -> Option<usize> {
        self.entries
            .iter()
            .find(|(s, _)| &**s == shape)
            .map(|(_, n)| *n)
    }

    pub fn remember(&mut self, shape: Box<[u8]>, statements: usize) {
        if self.entries.len() < PLAIN_SHAPES {
            self.entries.push((shape, statements));
        } else {
            self.entries[self.next] = (shape, statements);
            self.next = (self.next + 1) % PLAIN_SHAPES;
        }
    }

    /// Gives the memory back (an idle session).
    pub fn clear(&mut self) {
        *self = PlainShapes::default();
    }
}

fn word_is(t: Option<&Tok<'_>>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

/// Words that, inside a string literal, may be SQL that some function executes in this session
/// (`query_to_xml('…')`, `EXECUTE` in a DO body): such a statement is treated as changing
/// session state. False alarms only cost a reset of the server connection.
const SUSPICIOUS_IN_STRINGS: &[&str] = &[
    "set_config",
    "set",
    "reset",
    "role",
    "listen",
    "advisory_lock",
    "temp",
    "prepare",
    "declare",
    "discard",
    "load",
];

const SESSION_LOCK_FUNCTIONS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// `needle` in `haystack` not followed by an identifier character: `set`, `SET/**/x`, `set(`
/// match; `settings` does not.
fn contains_word_ignore_case(haystack: &str, needle: &str) -> bool {
    let h = haystack.as_bytes();
    let n = needle.len();
    (0..h.len().saturating_sub(n - 1)).any(|i| {
        h[i..i + n].eq_ignore_ascii_case(needle.as_bytes())
            && h.get(i + n)
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
    })
}

/// The name of an identifier token, quotes removed.
fn ident<'a>(t: &Tok<'a>) -> Option<&'a str> {
    match t {
        Tok::Word(w) => Some(w),
        Tok::Quoted(q) => Some(q.trim_matches('"')),
        _ => None,
    }
}

fn effect(toks: &[Tok<'_>]) -> SessionEffect {
    use SessionEffect as E;
    let first = toks.first();
    // Function calls anywhere in the statement, however the name is quoted or qualified.
    let mut untracked_call = false;
    for (i, t) in toks.iter().enumerate() {
        let Some(name) = ident(t) else { continue };
        if !matches!(toks.get(i + 1), Some(Tok::Punct(b'('))) {
            continue;
        }
        if SESSION_LOCK_FUNCTIONS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        {
            return E::Unshareable("a session-level advisory lock");
        }
        untracked_call |= name.eq_ignore_ascii_case("set_config");
    }
    // Temporary objects however they are made: `pg_temp.name`, `SELECT … INTO TEMP …`.
    let temp_schema = toks.iter().any(|t| {
        ident(t).is_some_and(|n| n.len() >= 7 && n.as_bytes()[..7].eq_ignore_ascii_case(b"pg_temp"))
    });
    let into_temp = toks.windows(2).any(|w| {
        word_is(w.first(), "into") && (word_is(w.get(1), "temp") || word_is(w.get(1), "temporary"))
    });
    if temp_schema || into_temp {
        return E::Unshareable("a temporary object that outlives its transaction");
    }
    // DO blocks and procedures run arbitrary code; so may a string some function executes.
    untracked_call |= word_is(first, "do") || word_is(first, "call");
    untracked_call |= toks.iter().any(|t| match t {
        Tok::Str(s) => SUSPICIOUS_IN_STRINGS
            .iter()
            .any(|w| contains_word_ignore_case(s, w)),
        _ => false,
    });
    let result = if word_is(first, "set") {
        set_effect(&toks[1..])
    } else if word_is(first, "reset") {
        match toks.get(1) {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("all") => E::ResetAll,
            Some(Tok::Word(w))
                if w.eq_ignore_ascii_case("role") || w.eq_ignore_ascii_case("session") =>
            {
                E::Unshareable("SET ROLE / SET SESSION AUTHORIZATION")
            }
            _ => match param_name(&toks[1..]) {
                Some(name) => E::Reset { name },
                None => E::Untracked,
            },
        }
    } else if word_is(first, "discard") {
        if word_is(toks.get(1), "all") {
            E::ResetAll
        } else {
            E::None
        }
    } else if word_is(first, "listen") {
        E::Unshareable("LISTEN")
    } else if word_is(first, "prepare") && !word_is(toks.get(1), "transaction") {
        E::Unshareable("PREPARE (SQL-level prepared statements)")
    } else if word_is(first, "deallocate") {
        let rest = if word_is(toks.get(1), "prepare") {
            &toks[2..]
        } else {
            &toks[1..]
        };
        match rest {
            [Tok::Word(w)] if w.eq_ignore_ascii_case("all") => E::Deallocate(None),
            [Tok::Word(w)] => E::Deallocate(Some(w.to_ascii_lowercase())),
            [Tok::Quoted(q)] if q.len() >= 2 => {
                E::Deallocate(Some(q[1..q.len() - 1].replace("\"\"", "\"")))
            }
            _ => E::Unshareable("this form of DEALLOCATE"),
        }
    } else if word_is(first, "execute") {
        E::Unshareable("EXECUTE of SQL-level prepared statements")
    } else if word_is(first, "declare") {
        let hold = toks
            .windows(2)
            .any(|w| word_is(w.first(), "with") && word_is(w.get(1), "hold"));
        if hold {
            E::Unshareable("a WITH HOLD cursor")
        } else {
            E::None
        }
    } else if word_is(first, "create") {
        let temp = toks
            .iter()
            .take(4)
            .any(|t| word_is(Some(t), "temp") || word_is(Some(t), "temporary"));
        let on_commit_drop = toks.windows(3).any(|w| {
            word_is(w.first(), "on") && word_is(w.get(1), "commit") && word_is(w.get(2), "drop")
        });
        if temp && !on_commit_drop {
            E::Unshareable("a temporary object that outlives its transaction")
        } else {
            E::None
        }
    } else if word_is(first, "load") {
        E::Untracked
    } else {
        E::None
    };
    match result {
        E::None if untracked_call => E::Untracked,
        other => other,
    }
}

/// `SET …` after the SET keyword.
fn set_effect(rest: &[Tok<'_>]) -> SessionEffect {
    use SessionEffect as E;
    let mut rest = rest;
    match rest.first() {
        Some(Tok::Word(w)) if w.eq_ignore_ascii_case("local") => return E::TransactionScoped,
        Some(Tok::Word(w)) if w.eq_ignore_ascii_case("transaction") => {
            return E::TransactionScoped;
        }
        Some(Tok::Word(w)) if w.eq_ignore_ascii_case("role") => {
            return E::Unshareable("SET ROLE / SET SESSION AUTHORIZATION");
        }
        Some(Tok::Word(w)) if w.eq_ignore_ascii_case("session") => {
            if word_is(rest.get(1), "authorization") {
                return E::Unshareable("SET ROLE / SET SESSION AUTHORIZATION");
            }
            if word_is(rest.get(1), "characteristics") {
                return E::Set {
                    name: "session characteristics".into(),
                };
            }
            rest = &rest[1..];
            if word_is(rest.first(), "role") {
                return E::Unshareable("SET ROLE / SET SESSION AUTHORIZATION");
            }
        }
        _ => {}
    }
    let (name, consumed) = match rest {
        [Tok::Word(a), Tok::Word(b), ..]
            if a.eq_ignore_ascii_case("time") && b.eq_ignore_ascii_case("zone") =>
        {
            ("timezone".to_string(), 2)
        }
        [Tok::Word(a), ..] if a.eq_ignore_ascii_case("names") => ("client_encoding".into(), 1),
        [Tok::Word(a), ..] if a.eq_ignore_ascii_case("schema") => ("search_path".into(), 1),
        [Tok::Word(a), Tok::Word(b), ..]
            if a.eq_ignore_ascii_case("xml") && b.eq_ignore_ascii_case("option") =>
        {
            ("xmloption".into(), 2)
        }
        _ => match param_name(rest) {
            Some(n) => {
                let used = if n.contains('.') { 3 } else { 1 };
                (n, used)
            }
            None => return E::Untracked,
        },
    };
    if name == "standard_conforming_strings" || name == "backslash_quote" {
        // They change how string literals are read, and pgward's reading of later statements
        // must match the server's.
        return E::Unshareable("changing how string literals are parsed");
    }
    // `SET x TO DEFAULT` / `SET x = DEFAULT` is a reset.
    let value = &rest[consumed.min(rest.len())..];
    let is_default = matches!(value, [Tok::Word(to), Tok::Word(d)]
            if to.eq_ignore_ascii_case("to") && d.eq_ignore_ascii_case("default"))
        || matches!(value, [Tok::Punct(b'='), Tok::Word(d)] if d.eq_ignore_ascii_case("default"));
    if is_default {
        E::Reset { name }
    } else {
        E::Set { name }
    }
}

/// A parameter name: `name` or `prefix.name`, lowercased.
fn param_name(toks: &[Tok<'_>]) -> Option<String> {
    match toks {
        [Tok::Word(a), Tok::Punct(b'.'), Tok::Word(b), ..] => Some(format!(
            "{}.{}",
            a.to_ascii_lowercase(),
            b.to_ascii_lowercase()
        )),
        [Tok::Word(a), ..] => Some(a.to_ascii_lowercase()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::SessionEffect as E;
    use super::*;

    fn one(sql: &str) -> SessionEffect {
        let v = classify(sql);
        assert_eq!(v.len(), 1, "{sql}: {v:?}");
        v[0].effect.clone()
    }

    #[test]
    fn session_sets_are_tracked() {
        assert_eq!(
            one("SET statement_timeout = 5000"),
            E::Set {
                name: "statement_timeout".into()
            }
        );
        assert_eq!(
            one("set session DateStyle to 'ISO'"),
            E::Set {
                name: "datestyle".into()
            }
        );
        assert_eq!(
            one("SET TIME ZONE 'UTC'"),
            E::Set {
                name: "timezone".into()
            }
        );
        assert_eq!(
            one("SET myapp.tenant = '7'"),
            E::Set {
                name: "myapp.tenant".into()
            }
        );
        assert_eq!(one("SET x TO DEFAULT"), E::Reset { name: "x".into() });
        assert_eq!(
            one("RESET work_mem"),
            E::Reset {
                name: "work_mem".into()
            }
        );
        assert_eq!(one("RESET ALL"), E::ResetAll);
        assert_eq!(one("DISCARD ALL"), E::ResetAll);
        assert_eq!(one("DEALLOCATE ALL"), E::Deallocate(None));
        assert_eq!(
            one("deallocate prepare S_1"),
            E::Deallocate(Some("s_1".into()))
        );
        assert_eq!(
            one("DEALLOCATE \"S\"\"1\""),
            E::Deallocate(Some("S\"1".into()))
        );
        assert!(matches!(one("DEALLOCATE a b"), E::Unshareable(_)));
    }

    #[test]
    fn transaction_scoped_statements_are_harmless() {
        assert_eq!(one("SET LOCAL statement_timeout = 1"), E::TransactionScoped);
        assert_eq!(
            one("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            E::TransactionScoped
        );
        assert_eq!(one("SELECT 'the settings page'"), E::None);
        assert_eq!(one("select 'plain text', \"set\" from t"), E::None);
        assert_eq!(one("/* SET x=1 */ SELECT 1 -- ; SET y = 2"), E::None);
        assert_eq!(one("SELECT $$ ; not a statement; $$"), E::None);
        // Conservative: a string that looks like session SQL might be executed by a function.
        assert_eq!(one("SELECT $$ ; LISTEN x; $$"), E::Untracked);
        assert_eq!(one("CREATE TEMP TABLE t (a int) ON COMMIT DROP"), E::None);
        assert_eq!(one("SELECT pg_advisory_xact_lock(1)"), E::None);
    }

    #[test]
    fn unshareable_and_untracked() {
        assert!(matches!(one("LISTEN chan"), E::Unshareable(_)));
        assert!(matches!(one("PREPARE p AS SELECT 1"), E::Unshareable(_)));
        assert!(matches!(
            one("create temporary table t(a int)"),
            E::Unshareable(_)
        ));
        assert!(matches!(
            one("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
            E::Unshareable(_)
        ));
        assert!(matches!(
            one("select pg_advisory_lock(1)"),
            E::Unshareable(_)
        ));
        assert!(matches!(one("SET ROLE admin"), E::Unshareable(_)));
        assert!(matches!(
            one("SET SESSION AUTHORIZATION x"),
            E::Unshareable(_)
        ));
        assert_eq!(one("SELECT set_config('a.b', '1', false)"), E::Untracked);
        // Hidden in code that runs in this session: still noticed.
        assert_eq!(
            one("DO $$BEGIN PERFORM set_config('work_mem','77MB',false); END$$"),
            E::Untracked
        );
        assert_eq!(
            one("SELECT \"set_config\"('work_mem','78MB',false)"),
            E::Untracked
        );
        assert_eq!(
            one("SELECT pg_catalog.set_config('role','x',false)"),
            E::Untracked
        );
        assert_eq!(one("CALL my_procedure()"), E::Untracked);
        assert_eq!(
            one("SELECT query_to_xml('select set_config(''role'',''x'',false)', true, true, '')"),
            E::Untracked
        );
        assert!(matches!(
            one("SELECT \"pg_advisory_lock\"(1)"),
            E::Unshareable(_)
        ));
    }

    #[test]
    fn splits_statements() {
        let v = classify("BEGIN; SET a = 1 ; SELECT ';' ; ;COMMIT");
        let texts: Vec<_> = v.iter().map(|s| s.text).collect();
        assert_eq!(texts, vec!["BEGIN", "SET a = 1", "SELECT ';'", "COMMIT"]);
        assert_eq!(v[1].effect, E::Set { name: "a".into() });
        assert!(classify("  ;  -- nothing").is_empty());
        assert_eq!(classify("select E'\\';SET x=1'").len(), 1);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "'",
            "\"",
            "$a",
            "$a$",
            "/*",
            "e'\\",
            "set",
            "set session",
            "reset",
            "$1$",
            "é;set x=1",
        ] {
            let _ = classify(s);
        }
    }
}
