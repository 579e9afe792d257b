//! Statement policy: what a client may run. A [`Policy`] is attached to users (and through them
//! to client identities); the relay asks it about every statement a client sends — a simple
//! Query or a Parse — and about FunctionCall messages, before anything reaches the server.
//!
//! The parts: [`normalize`] (normalized text and fingerprints), [`allowlist`] (approved
//! statements, learned records), [`readonly`] (the read-only classifier). This module puts them
//! together, caches the analysis of each distinct statement (sqlparser runs once per distinct
//! text, never per execution), and applies the mode:
//! - `off`: the policy does nothing;
//! - `learn`: everything passes; each distinct statement is recorded for `allowlist build`;
//! - `audit`: everything passes; what would be denied is reported;
//! - `enforce`: what the rules deny is refused with SQLSTATE 42501.
//!
//! Fail closed: a statement that cannot be analyzed (not UTF-8, over the size limit, not
//! tokenizable or parseable) is denied in enforce mode, like any other denial.

pub mod allowlist;
pub mod normalize;
pub mod readonly;
pub mod shape;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Set, Statement, Value,
    Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::config::raw::RawPolicy;
use allowlist::{Allowlist, LearnedRecord};
use normalize::{Fingerprint, LiteralMode};
use readonly::{FunctionAllowlist, ReadOnlyViolation};

/// Distinct statements whose analysis is kept per policy. Beyond it the cache starts over: a
/// client sending endless distinct texts costs CPU, never unbounded memory.
const CACHE_LIMIT: usize = 20_000;

/// Longest integer literal a statement may have to be looked up by its shape (see
/// [`Policy::analysis`]): nine digits always fit the `u64`/`i64` sqlparser reads some numbers
/// into, so whether a statement parses cannot turn on a masked value.
const SHAPE_MAX_DIGITS: usize = 9;

/// Stack for analyzing one statement: enough for the deepest tree a statement of
/// [`normalize::MAX_STATEMENT_BYTES`] can make (about 40 bytes of stack per byte of SQL in the
/// worst case measured).
const ANALYSIS_STACK: usize = 64 << 20;

/// Statements up to this size are analyzed on the caller's stack: at most a few thousand
/// nested terms, far from overflowing even a debug build's 2 MiB thread stack.
const SMALL_STATEMENT: usize = 8 * 1024;

/// Statements a `prepared_only` policy lets through over the simple protocol by default.
pub const DEFAULT_SESSION_STATEMENTS: &[&str] = &[
    "BEGIN",
    "START TRANSACTION",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Learn,
    Audit,
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Learn => "learn",
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        }
    }
}

/// What a policy allows that is blocked by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowances {
    pub copy_from: bool,
    pub copy_to: bool,
    pub listen_notify: bool,
    pub function_call: bool,
    pub set_role: bool,
}

/// A policy as configured, before its files are read.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub name: String,
    pub mode: Mode,
    pub prepared_only: bool,
    pub read_only: bool,
    pub allowlist: Option<PathBuf>,
    pub literals: LiteralMode,
    pub session_statements: Vec<String>,
    pub read_only_functions: Vec<String>,
    pub learn_file: Option<PathBuf>,
    pub max_statement_bytes: usize,
    pub allow: Allowances,
}

impl PolicySettings {
    pub fn from_raw(name: &str, raw: &RawPolicy, base: &Path) -> Result<PolicySettings, String> {
        let mode = match raw.mode.as_str() {
            "off" => Mode::Off,
            "learn" => Mode::Learn,
            "audit" => Mode::Audit,
            "enforce" => Mode::Enforce,
            other => {
                return Err(format!(
                    "mode must be off, learn, audit or enforce, got {other:?}"
                ));
            }
        };
        let resolve = |p: &String| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        if mode == Mode::Learn && raw.learn_file.is_none() {
            return Err("learn mode needs learn_file (where learned statements go)".into());
        }
        if raw.max_statement_bytes == 0 {
            return Err("max_statement_bytes must be at least 1".into());
        }
        Ok(PolicySettings {
            name: name.to_owned(),
            mode,
            prepared_only: raw.prepared_only,
            read_only: raw.read_only,
            allowlist: raw.allowlist.as_ref().map(resolve),
            literals: if raw.replace_literals {
                LiteralMode::Replace
            } else {
                LiteralMode::Keep
            },
            session_statements: raw.session_statements.clone().unwrap_or_else(|| {
                DEFAULT_SESSION_STATEMENTS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            read_only_functions: raw.read_only_functions.clone(),
            learn_file: raw.learn_file.as_ref().map(resolve),
            max_statement_bytes: (raw.max_statement_bytes as usize)
                .min(normalize::MAX_STATEMENT_BYTES),
            allow: Allowances {
                copy_from: raw.allow_copy_from,
                copy_to: raw.allow_copy_to,
                listen_notify: raw.allow_listen_notify,
                function_call: raw.allow_function_call,
                set_role: raw.allow_set_role,
            },
        })
    }
}

/// How a statement reached pgward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A simple Query message: SQL text with any values inlined.
    SimpleQuery,
    /// A Parse message: the statement, with values sent separately at Bind.
    Parse,
}

/// Why a statement is denied. The text goes to the client and the log: it never contains the
/// statement's text (only its fingerprint travels with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the statement cannot be analyzed ({0}); denied (fail closed)")]
    Unanalyzable(String),
    #[error("the statement is longer than this policy's limit of {0} bytes")]
    TooLong(usize),
    #[error(
        "prepared_only: ad-hoc SQL over the simple query protocol is refused; send it as a prepared statement with parameters"
    )]
    AdHoc,
    #[error("more than one statement in one message is refused")]
    MultiStatement,
    #[error("the statement is not on the allowlist")]
    NotAllowlisted,
    #[error("{0}")]
    ReadOnly(ReadOnlyViolation),
    #[error("{0} is not allowed by this policy")]
    Blocked(&'static str),
}

/// What pgward knows about one distinct statement text, whichever way it arrives.
#[derive(Debug)]
pub struct Analysis {
    /// Of the normalized text; of the raw text when it has no normalized form.
    pub fingerprint: Fingerprint,
    /// `None` when the text could not be normalized.
    pub normalized: Option<String>,
    /// Non-empty statements in the text.
    pub statements: usize,
    /// One of the policy's exact session statements (BEGIN, COMMIT, …).
    pub session_statement: bool,
    /// A denial that does not depend on the protocol used.
    denial: Option<Denial>,
}

/// The policy's answer for one statement.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub analysis: Arc<Analysis>,
    pub denial: Option<Denial>,
}

/// A statement policy with its allowlist loaded and its decision cache.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub mode: Mode,
    pub prepared_only: bool,
    pub read_only: bool,
    pub allow: Allowances,
    literals: LiteralMode,
    allowlist: Option<Allowlist>,
    session_statements: HashSet<String>,
    functions: FunctionAllowlist,
    max_statement_bytes: usize,
    /// Analyses by exact text.
    cache: AnalysisCache,
    /// Analyses by shape (integer literals masked), for statements whose analysis cannot depend
    /// on those literals' values; see [`Policy::analysis`].
    shapes: AnalysisCache,
    learner: Option<Learner>,
}

impl Policy {
    /// Reads the allowlist and the learned records so far; any problem is a config error.
    pub fn new(s: PolicySettings) -> Result<Policy, String> {
        let allowlist = match &s.allowlist {
            Some(path) => Some(
                Allowlist::load(path, s.literals)
                    .map_err(|e| format!("allowlist {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let mut session_statements = HashSet::new();
        for stmt in &s.session_statements {
            let n = normalize::normalize(stmt, s.literals)
                .map_err(|e| format!("session_statements: {stmt:?}: {e}"))?;
            if n.statements != 1 {
                return Err(format!(
                    "session_statements: {stmt:?} must be exactly one statement"
                ));
            }
            session_statements.insert(n.text);
        }
        let learner = match &s.learn_file {
            Some(path) if s.mode == Mode::Learn => Some(Learner::open(path)?),
            _ => None,
        };
        Ok(Policy {
            functions: FunctionAllowlist::builtin().with_extra(&s.read_only_functions),
            name: s.name,
            mode: s.mode,
            prepared_only: s.prepared_only,
            read_only: s.read_only,
            allow: s.allow,
            literals: s.literals,
            allowlist,
            session_statements,
            max_statement_bytes: s.max_statement_bytes,
            cache: RwLock::new(HashMap::new()),
            shapes: RwLock::new(HashMap::new()),
            learner,
        })
    }

    /// Whether `other` decides every statement exactly as this policy does (same settings, same
    /// allowlist entries, same learn file). A configuration reload keeps the running policy,
    /// with its warm decision cache, when the new one has the same rules; sessions of a policy
    /// whose rules changed adopt the new one.
    pub fn same_rules(&self, other: &Policy) -> bool {
        self.name == other.name
            && self.mode == other.mode
            && self.prepared_only == other.prepared_only
            && self.read_only == other.read_only
            && self.allow == other.allow
            && self.literals == other.literals
            && self.allowlist == other.allowlist
            && self.session_statements == other.session_statements
            && self.functions == other.functions
            && self.max_statement_bytes == other.max_statement_bytes
            && self.learner.as_ref().map(|l| &l.path) == other.learner.as_ref().map(|l| &l.path)
    }

    /// Whether this policy does anything at all.
    pub fn active(&self) -> bool {
        self.mode != Mode::Off
    }

    /// True if the backend session must run read-only: the policy enforces `read_only`.
    pub fn read_only_backend(&self) -> bool {
        self.read_only && self.mode == Mode::Enforce
    }

    pub fn allowlist_len(&self) -> usize {
        self.allowlist.as_ref().map_or(0, Allowlist::len)
    }

    /// The rules' answer for `sql` arriving `via` a protocol path (mode not applied).
    pub fn judge(&self, sql: &[u8], via: Via) -> Verdict {
        let analysis = self.analysis(sql);
        let denial = analysis.denial.clone().or_else(|| {
            if via == Via::SimpleQuery && self.prepared_only && analysis.statements > 0 {
                if analysis.statements > 1 {
                    Some(Denial::MultiStatement)
                } else if !analysis.session_statement {
                    Some(Denial::AdHoc)
                } else {
                    None
                }
            } else {
                None
            }
        });
        Verdict { analysis, denial }
    }

    /// A FunctionCall message: no statement to look at, blocked unless allowed.
    pub fn function_call_denial(&self) -> Option<Denial> {
        (!self.allow.function_call).then_some(Denial::Blocked("the FunctionCall protocol message"))
    }

    /// Records a statement in learn mode (once per user, database and normalized text).
    /// Returns true the first time.
    pub fn learn(&self, user: &str, database: &str, analysis: &Analysis) -> bool {
        if let (Some(learner), Some(text)) = (&self.learner, &analysis.normalized)
            && analysis.statements > 0
        {
            return learner.record(LearnedRecord {
                user: user.to_owned(),
                database: database.to_owned(),
                fingerprint: analysis.fingerprint,
                text: text.clone(),
            });
        }
        false
    }

    /// The cached analysis of `sql`, computed on first sight.
    ///
    /// With literals replaced, a statement is also looked up by its shape (its bytes with
    /// integer literals masked, [`shape::shape`]), so a simple-protocol client sending
    /// `... WHERE id = 42` with a new number each time is analyzed once, not once per value.
    /// That gives the same analysis as the statement's own because
    /// - the shape guarantees that the normalized text, hence the fingerprint, the statement
    ///   count, the session-statement test and the allowlist lookup, is the same;
    /// - only analyses of plain queries, INSERT, UPDATE and DELETE that parsed are kept by shape:
    ///   their rules look at names, structure and string literals (which a shape does not
    ///   mask), never at a number's value (a `SET` value may be what a rule decides on);
    /// - a masked literal has at most [`SHAPE_MAX_DIGITS`] digits, so sqlparser accepts every
    ///   statement of a shape or none;
    /// - the length limit is checked before any lookup.
    ///
    /// With literals kept, `id = 42` and `id = 43` are different statements to the allowlist,
    /// so there are no shapes. Tests compare shape hits with fresh analyses.
    pub fn analysis(&self, sql: &[u8]) -> Arc<Analysis> {
        let by_shape =
            self.literals == LiteralMode::Replace && sql.len() <= self.max_statement_bytes;
        let shape_key = if by_shape {
            let found = shape::with_shape(sql, SHAPE_MAX_DIGITS, |key| {
                let key = key?;
                Some(
                    match cached(&self.shapes, key).or_else(|| cached(&self.cache, sql)) {
                        Some(hit) => Ok(hit),
                        None => Err(Box::<[u8]>::from(key)),
                    },
                )
            });
            match found {
                Some(Ok(hit)) => return hit,
                Some(Err(key)) => Some(key),
                None => None,
            }
        } else {
            None
        };
        if shape_key.is_none()
            && let Some(hit) = cached(&self.cache, sql)
        {
            return hit;
        }
        let (analysis, value_independent) = self.analyze_with_kind(sql);
        let a = Arc::new(analysis);
        match shape_key {
            Some(key) if value_independent => keep(&self.shapes, key, &a),
            _ => keep(&self.cache, sql.into(), &a),
        }
        a
    }

    /// The analysis without the cache (benchmarks, tools): normalization, parsing, the rules.
    pub fn analyze(&self, sql: &[u8]) -> Analysis {
        self.analyze_with_kind(sql).0
    }

    /// The analysis, and whether it holds for every statement of the same shape: the statement
    /// parsed and is only queries, INSERT, UPDATE and DELETE (see [`Policy::analysis`]).
    fn analyze_with_kind(&self, sql: &[u8]) -> (Analysis, bool) {
        let unanalyzable = |fingerprint, reason: String| Analysis {
            fingerprint,
            normalized: None,
            statements: 1,
            session_statement: false,
            denial: Some(Denial::Unanalyzable(reason)),
        };
        let raw_fingerprint = || normalize::fingerprint(&String::from_utf8_lossy(sql));
        if sql.len() > self.max_statement_bytes {
            let a = Analysis {
                denial: Some(Denial::TooLong(self.max_statement_bytes)),
                ..unanalyzable(raw_fingerprint(), String::new())
            };
            return (a, false);
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            return (
                unanalyzable(raw_fingerprint(), "not valid UTF-8".into()),
                false,
            );
        };
        let normalized = match normalize::normalize(text, self.literals) {
            Ok(n) => n,
            Err(e) => return (unanalyzable(raw_fingerprint(), e.to_string()), false),
        };
        let session_statement =
            normalized.statements == 1 && self.session_statements.contains(&normalized.text);
        let mut analysis = Analysis {
            fingerprint: normalized.fingerprint,
            normalized: Some(normalized.text),
            statements: normalized.statements,
            session_statement,
            denial: None,
        };
        if analysis.statements == 0 {
            // An empty query runs nothing.
            return (analysis, false);
        }
        // Parsing, checking and dropping the tree recurse as deep as the statement nests, and a
        // long `1 + 1 + …` chain is deep: on a worker thread's 2 MiB stack a few hundred KiB of
        // SQL would overflow it and abort the process. So this runs on a stack sized for the
        // largest statement allowed (mapped lazily; once per distinct statement).
        let run = || match Parser::parse_sql(&PostgreSqlDialect {}, text) {
            Ok(parsed) => {
                let value_independent = parsed.iter().all(|s| {
                    matches!(
                        s,
                        Statement::Query(_)
                            | Statement::Insert(_)
                            | Statement::Update(_)
                            | Statement::Delete(_)
                    )
                });
                (self.rules(&parsed, &analysis), value_independent)
            }
            Err(_) => (
                Some(Denial::Unanalyzable(
                    "sqlparser cannot parse it".to_string(),
                )),
                false,
            ),
        };
        // A short statement cannot nest deeply enough to matter; the big stack (a mapping
        // made and unmade per call) is only worth it for long ones.
        let (denial, value_independent) = if text.len() <= SMALL_STATEMENT {
            run()
        } else {
            stacker::grow(ANALYSIS_STACK, run)
        };
        analysis.denial = denial;
        (analysis, value_independent)
    }

    /// The protocol-independent rules, in order of how much they say.
    fn rules(&self, parsed: &[Statement], analysis: &Analysis) -> Option<Denial> {
        if let Some(what) = blocked_feature(parsed, &self.allow) {
            return Some(Denial::Blocked(what));
        }
        if self.read_only
            && let Err(v) = readonly::check(parsed, &self.functions)
        {
            return Some(Denial::ReadOnly(v));
        }
        if let Some(list) = &self.allowlist
            && !analysis.session_statement
        {
            if analysis.statements > 1 {
                return Some(Denial::MultiStatement);
            }
            let listed = analysis
                .normalized
                .as_deref()
                .is_some_and(|t| list.lookup(t).is_some());
            if !listed {
                return Some(Denial::NotAllowlisted);
            }
        }
        None
    }
}

type AnalysisCache = RwLock<HashMap<Box<[u8]>, Arc<Analysis>>>;

fn cached(cache: &AnalysisCache, key: &[u8]) -> Option<Arc<Analysis>> {
    let cache = cache.read().unwrap_or_else(|p| p.into_inner());
    cache.get(key).map(Arc::clone)
}

/// Keeps an analysis; a full cache starts over, so distinct texts cost CPU, not memory.
fn keep(cache: &AnalysisCache, key: Box<[u8]>, analysis: &Arc<Analysis>) {
    let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key, Arc::clone(analysis));
}

/// What every active policy blocks unless it allows it: COPY (each direction), LISTEN/NOTIFY
/// (and `pg_notify()`), SET ROLE / SET SESSION AUTHORIZATION (and `set_config()` of them), and
/// settings that would make PostgreSQL read SQL text differently from pgward.
fn blocked_feature(parsed: &[Statement], allow: &Allowances) -> Option<&'static str> {
    for stmt in parsed {
        let found = match stmt {
            Statement::Copy { to: false, .. } if !allow.copy_from => Some("COPY FROM"),
            Statement::Copy { to: true, .. } if !allow.copy_to => Some("COPY TO"),
            Statement::LISTEN { .. } | Statement::UNLISTEN { .. } | Statement::NOTIFY { .. }
                if !allow.listen_notify =>
            {
                Some("LISTEN / NOTIFY")
            }
            Statement::Set(Set::SetRole { .. } | Set::SetSessionAuthorization(_))
                if !allow.set_role =>
            {
                Some("SET ROLE / SET SESSION AUTHORIZATION")
            }
            Statement::Set(Set::SetNames { .. }) => Some("changing client_encoding"),
            Statement::Set(Set::SingleAssignment { variable, .. }) => {
                setting_blocked(&object_name(variable), allow)
            }
            // Forms PostgreSQL does not have: nothing legitimate is lost.
            Statement::Set(
                Set::ParenthesizedAssignments { .. } | Set::MultipleAssignments { .. },
            ) => Some("this form of SET"),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    let mut v = FunctionCalls { allow, found: None };
    for stmt in parsed {
        if stmt.visit(&mut v).is_break() {
            break;
        }
    }
    v.found
}

fn setting_blocked(name: &str, allow: &Allowances) -> Option<&'static str> {
    match name {
        "role" | "session_authorization" if !allow.set_role => {
            Some("SET ROLE / SET SESSION AUTHORIZATION")
        }
        // With standard_conforming_strings off or another client_encoding, PostgreSQL would
        // read the statement text differently from the normalizer (see `normalize`).
        "standard_conforming_strings" => Some("changing standard_conforming_strings"),
        "client_encoding" => Some("changing client_encoding"),
        _ => None,
    }
}

fn object_name(name: &ObjectName) -> String {
    name.to_string().to_ascii_lowercase()
}

/// Finds calls of functions that do what a blocked statement does.
struct FunctionCalls<'a> {
    allow: &'a Allowances,
    found: Option<&'static str>,
}

impl Visitor for FunctionCalls<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> std::ops::ControlFlow<()> {
        let Expr::Function(f) = expr else {
            return std::ops::ControlFlow::Continue(());
        };
        let name = object_name(&f.name);
        let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
        let found = match name {
            "pg_notify" if !self.allow.listen_notify => Some("LISTEN / NOTIFY"),
            "set_config" => match first_string_arg(&f.args) {
                Some(setting) => setting_blocked(&setting.to_ascii_lowercase(), self.allow),
                // A setting name computed at run time could be any of them.
                None => Some("set_config() with a setting name that is not a literal"),
            },
            _ => None,
        };
        match found {
            Some(what) => {
                self.found = Some(what);
                std::ops::ControlFlow::Break(())
            }
            None => std::ops::ControlFlow::Continue(()),
        }
    }
}

fn first_string_arg(args: &FunctionArguments) -> Option<String> {
    let FunctionArguments::List(list) = args else {
        return None;
    };
    match list.args.first()? {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Appends learned statements to a file, each distinct one once.
#[derive(Debug)]
struct Learner {
    path: PathBuf,
    state: Mutex<LearnerState>,
}

#[derive(Debug)]
struct LearnerState {
    seen: HashSet<(String, String, String)>,
    file: Option<std::fs::File>,
}

impl Learner {
    /// Reads what was learned before, so a restart does not record it again.
    fn open(path: &Path) -> Result<Learner, String> {
        let mut seen = HashSet::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let records = allowlist::parse_learned(&text)
                    .map_err(|e| format!("learn_file {}: {e}", path.display()))?;
                for r in records {
                    seen.insert((r.user, r.database, r.text));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("learn_file {}: {e}", path.display())),
        }
        Ok(Learner {
            path: path.to_path_buf(),
            state: Mutex::new(LearnerState { seen, file: None }),
        })
    }

    /// Writes happen only for statements never seen before: rare, small, and appended with
    /// one write each, so a blocking write under the lock is acceptable here.
    fn record(&self, r: LearnedRecord) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = (r.user.clone(), r.database.clone(), r.text.clone());
        if st.seen.contains(&key) {
            return false;
        }
        if st.file.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => st.file = Some(f),
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot open the learn file");
                    return false;
                }
            }
        }
        let line = allowlist::encode_learned(&r);
        let written = st
            .file
            .as_mut()
            .map(|f| f.write_all(line.as_bytes()))
            .unwrap_or(Ok(()));
        match written {
            Ok(()) => {
                st.seen.insert(key);
                tracing::info!(fingerprint = %r.fingerprint, user = %r.user, database = %r.database, "statement learned");
                true
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "writing a learned statement failed");
                st.file = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(f: impl FnOnce(&mut PolicySettings)) -> Policy {
        let mut s = PolicySettings {
            name: "t".into(),
            mode: Mode::Enforce,
            prepared_only: false,
            read_only: false,
            allowlist: None,
            literals: LiteralMode::Keep,
            session_statements: DEFAULT_SESSION_STATEMENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            read_only_functions: Vec::new(),
            learn_file: None,
            max_statement_bytes: 1 << 20,
            allow: Allowances::default(),
        };
        f(&mut s);
        Policy::new(s).expect("valid policy")
    }

    fn denial(p: &Policy, sql: &str, via: Via) -> Option<Denial> {
        p.judge(sql.as_bytes(), via).denial
    }

    #[test]
    fn prepared_only_refuses_ad_hoc_sql_but_not_session_statements() {
        let p = policy(|s| s.prepared_only = true);
        assert_eq!(
            denial(&p, "select 1", Via::SimpleQuery),
            Some(Denial::AdHoc)
        );
        assert_eq!(denial(&p, "select 1", Via::Parse), None);
        assert_eq!(denial(&p, "begin", Via::SimpleQuery), None);
        assert_eq!(denial(&p, "COMMIT;", Via::SimpleQuery), None);
        assert_eq!(
            denial(&p, "BEGIN; SELECT 1", Via::SimpleQuery),
            Some(Denial::MultiStatement)
        );
        assert_eq!(denial(&p, "", Via::SimpleQuery), None);
    }

    #[test]
    fn blocked_features_need_an_explicit_allowance() {
        let p = policy(|_| {});
        for (sql, what) in [
            ("COPY t FROM STDIN", "COPY FROM"),
            ("COPY t TO STDOUT", "COPY TO"),
            ("LISTEN ch", "LISTEN / NOTIFY"),
            ("NOTIFY ch", "LISTEN / NOTIFY"),
            ("SELECT pg_notify('ch', 'x')", "LISTEN / NOTIFY"),
            ("SET ROLE postgres", "SET ROLE / SET SESSION AUTHORIZATION"),
            (
                "SET SESSION AUTHORIZATION postgres",
                "SET ROLE / SET SESSION AUTHORIZATION",
            ),
            (
                "SELECT set_config('role', 'postgres', false)",
                "SET ROLE / SET SESSION AUTHORIZATION",
            ),
            (
                "SET standard_conforming_strings = off",
                "changing standard_conforming_strings",
            ),
            ("SET client_encoding = 'SJIS'", "changing client_encoding"),
        ] {
            assert_eq!(
                denial(&p, sql, Via::Parse),
                Some(Denial::Blocked(what)),
                "{sql}"
            );
        }
        let open = policy(|s| {
            s.allow = Allowances {
                copy_from: true,
                copy_to: true,
                listen_notify: true,
                function_call: true,
                set_role: true,
            }
        });
        assert_eq!(denial(&open, "COPY t FROM STDIN", Via::Parse), None);
        assert_eq!(denial(&open, "LISTEN ch", Via::Parse), None);
        assert_eq!(denial(&open, "SET ROLE postgres", Via::Parse), None);
        assert!(open.function_call_denial().is_none());
        assert!(p.function_call_denial().is_some());
        assert_eq!(
            denial(
                &p,
                "SELECT set_config('app.tenant', '1', false)",
                Via::Parse
            ),
            None
        );
    }

    /// The shape cache's promise: a statement found by its shape gets the analysis it would get
    /// on its own. Each template is judged with several literals through one policy, so all but
    /// the first are shape hits where shapes apply, and compared with a fresh analysis by a
    /// policy with the same rules; the literals include ones past the shape's digit limit and
    /// past `u64`, and SET values whose meaning is their number.
    #[test]
    fn a_shape_hit_decides_like_a_fresh_analysis() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let listed = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "SELECT x::varchar(1) FROM t",
        ];
        let mut toml = String::from("version = 1\n");
        for text in listed {
            let n = normalize::normalize(text, LiteralMode::Replace).expect("normalizes");
            toml.push_str(&format!(
                "[[statement]]\nfingerprint = \"{}\"\ntext = {:?}\n",
                n.fingerprint, n.text
            ));
        }
        let path = dir.path().join("allow.toml");
        std::fs::write(&path, toml).unwrap_or_else(|e| panic!("{e}"));
        let settings: [&dyn Fn(&mut PolicySettings); 3] = [
            &|s| {
                s.literals = LiteralMode::Replace;
                s.allowlist = Some(path.clone());
            },
            &|s| {
                s.literals = LiteralMode::Replace;
                s.read_only = true;
                s.max_statement_bytes = 60;
            },
            &|s| {
                s.literals = LiteralMode::Replace;
                s.prepared_only = true;
            },
        ];
        let templates = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
            "SELECT x::varchar({}) FROM t",
            "FETCH {} FROM c",
            "SELECT * FROM t LIMIT {} OFFSET {}",
            "UPDATE t SET a = a + {} WHERE id = {}",
            "INSERT INTO t VALUES ({}, -{})",
            "DELETE FROM t WHERE id = {}",
            "SET standard_conforming_strings = {}",
            "SET default_transaction_read_only = {}",
            "SET statement_timeout = {}",
            "SELECT {}; SET standard_conforming_strings = {}",
            "SELECT numeric({}, {})",
            "SELECT {}",
            "SELECT * FROM t WHERE id = {} FOR UPDATE",
        ];
        let values = [
            "1",
            "0",
            "42",
            "999999999",
            "1000000000",
            "99999999999999999999999",
            "007",
        ];
        for set in settings {
            let cached = policy(set);
            let fresh = policy(set);
            for template in templates {
                // Each value everywhere, then a different value per position.
                for (n, rotate) in (0..values.len()).flat_map(|n| [(n, false), (n, true)]) {
                    let sql: String = template
                        .split("{}")
                        .enumerate()
                        .map(|(i, part)| match i {
                            0 => part.to_owned(),
                            _ if rotate => format!("{}{part}", values[(n + i) % values.len()]),
                            _ => format!("{}{part}", values[n]),
                        })
                        .collect();
                    for via in [Via::SimpleQuery, Via::Parse] {
                        let a = cached.judge(sql.as_bytes(), via);
                        let b = fresh.judge(sql.as_bytes(), via);
                        let fresh_analysis = fresh.analyze(sql.as_bytes());
                        assert_eq!(a.denial, b.denial, "{sql}");
                        assert_eq!(a.analysis.denial, fresh_analysis.denial, "{sql}");
                        assert_eq!(a.analysis.fingerprint, fresh_analysis.fingerprint, "{sql}");
                        assert_eq!(a.analysis.normalized, fresh_analysis.normalized, "{sql}");
                        assert_eq!(a.analysis.statements, fresh_analysis.statements, "{sql}");
                        assert_eq!(
                            a.analysis.session_statement, fresh_analysis.session_statement,
                            "{sql}"
                        );
                    }
                }
            }
            let shapes = cached.shapes.read().map(|m| m.len()).unwrap_or_default();
            assert!(shapes > 0, "some statements were kept by shape");
        }
        // The promise is not empty: a listed query with new literals is a hit, and allowed.
        let p = policy(settings[0]);
        let first = p.analysis(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;");
        let again = p.analysis(b"SELECT abalance FROM pgbench_accounts WHERE aid = 77;");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.denial, None);
        // Kept literals: no shapes.
        let keep = policy(|s| s.literals = LiteralMode::Keep);
        let _ = keep.analysis(b"SELECT 1");
        let _ = keep.analysis(b"SELECT 2");
        assert_eq!(keep.shapes.read().map(|m| m.len()).unwrap_or(1), 0);
    }

    #[test]
    fn unanalyzable_statements_are_denied() {
        let p = policy(|s| s.max_statement_bytes = 64);
        assert!(matches!(
            denial(&p, "SELEC 1 FROM", Via::Parse),
            Some(Denial::Unanalyzable(_))
        ));
        assert!(matches!(
            denial(&p, "SELECT 'unterminated", Via::Parse),
            Some(Denial::Unanalyzable(_))
        ));
        assert!(matches!(
            p.judge(b"SELECT '\xff'", Via::Parse).denial,
            Some(Denial::Unanalyzable(_))
        ));
        let long = format!("SELECT {}", "1 + ".repeat(40));
        assert_eq!(denial(&p, &long, Via::Parse), Some(Denial::TooLong(64)));
    }

    #[test]
    fn a_deeply_nested_statement_does_not_overflow_the_stack() {
        // 200 KiB of `1+1+…` (several times what overflows a 2 MiB stack when parsed there):
        // parsed, checked and dropped without aborting the process.
        let p = policy(|s| s.read_only = true);
        let deep = format!("SELECT 1{}", "+1".repeat(100_000));
        let _ = denial(&p, &deep, Via::Parse);
        let unions = format!("SELECT 1{}", " UNION SELECT 1".repeat(20_000));
        let _ = denial(&p, &unions, Via::Parse);
    }

    #[test]
    fn read_only_uses_the_classifier() {
        let p = policy(|s| s.read_only = true);
        assert!(matches!(
            denial(&p, "INSERT INTO t VALUES (1)", Via::Parse),
            Some(Denial::ReadOnly(_))
        ));
        assert_eq!(
            denial(&p, "SELECT * FROM t WHERE id = $1", Via::Parse),
            None
        );
    }

    #[test]
    fn the_analysis_is_cached_per_text() {
        let p = policy(|_| {});
        let a = p.judge(b"SELECT 1", Via::Parse).analysis;
        let b = p.judge(b"SELECT 1", Via::SimpleQuery).analysis;
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn denial_text_never_contains_the_statement() {
        let p = policy(|s| s.prepared_only = true);
        let secret = "SELECT 'hunter2-secret'";
        let d = denial(&p, secret, Via::SimpleQuery).expect("denied");
        assert!(!d.to_string().contains("hunter2"));
        let d = denial(&p, "SELECT 'hunter2-secret", Via::Parse).expect("denied");
        assert!(!d.to_string().contains("hunter2"), "{d}");
    }
}
