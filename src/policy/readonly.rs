//! Read-only classification: decides whether parsed SQL is positively known to be a read, for
//! identities whose policy says `read_only = true`. It owns the rules (which statement kinds,
//! which nested constructs, which `SET`s) and the function allowlist.
//!
//! Fail closed: anything this module does not recognise as a read is a violation. It is one of
//! two layers; the backend session also runs with `default_transaction_read_only = on`, so the
//! rules here additionally deny every statement that could switch that off.
//!
//! What a syntax check cannot see (and why the backend setting is still needed): functions called
//! by views, rules, defaults or casts; user-defined operators; and unqualified function names that
//! PostgreSQL resolves to a same-named function in another schema through overloading.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, ContextModifier, DeclareType, DescribeAlias, Expr, ObjectName, ObjectNamePart,
    OrderByExpr, OrderBySort, Query, Reset, Select, SetExpr, Statement, TableFactor,
    TransactionAccessMode, TransactionMode, UnaryOperator, UtilityOption, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Functions a read-only policy allows on top of the built-in safe list (lower-case names,
/// optionally schema-qualified like "public.my_fn").
///
/// An unqualified extra (`my_fn`) allows unqualified calls and `pg_catalog.my_fn`; a qualified
/// extra (`public.my_fn`) allows exactly that qualified call. An unqualified call is not allowed
/// by a qualified entry because PostgreSQL may resolve it to another schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionAllowlist {
    /// Each entry split into its name parts, folded to lower case like unquoted identifiers.
    extra: BTreeSet<Vec<String>>,
}

impl FunctionAllowlist {
    /// The default safe list: pure functions from `pg_catalog` (plus a few harmless volatile
    /// ones such as `clock_timestamp`), nothing with side effects.
    pub fn builtin() -> Self {
        Self::default()
    }

    /// Adds functions to the allowlist. Entries with an empty name part are ignored: they could
    /// never match a call, and guessing what was meant would not be failing closed.
    pub fn with_extra<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, extra: I) -> Self {
        for entry in extra {
            let parts: Vec<String> = entry
                .as_ref()
                .split('.')
                .map(|part| part.trim().to_ascii_lowercase())
                .collect();
            if parts.iter().all(|part| !part.is_empty()) {
                self.extra.insert(parts);
            }
        }
        self
    }

    /// Whether a call of the function `name` is allowed.
    ///
    /// Unquoted parts compare case-insensitively (PostgreSQL folds them to lower case), quoted
    /// parts exactly. `pg_catalog.f` is allowed when `f` is; any other qualification must be on
    /// the allowlist as written.
    pub fn allows(&self, name: &ObjectName) -> bool {
        let Some(parts) = name_parts(name) else {
            return false;
        };
        match parts.as_slice() {
            [(function, quoted)] => {
                // `coalesce(...)` unquoted is grammar; `"coalesce"(...)` would call whatever
                // function of that name the search path finds.
                (!quoted && SYNTAX_FORMS.contains(&function.as_str()))
                    || is_builtin(function)
                    || self.extra.contains(std::slice::from_ref(function))
            }
            [(schema, _), (function, _)] if schema == "pg_catalog" => {
                is_builtin(function) || self.extra.contains(std::slice::from_ref(function))
            }
            _ => {
                let names: Vec<String> = parts.into_iter().map(|(part, _)| part).collect();
                self.extra.contains(&names)
            }
        }
    }
}

/// Why a statement is not a read. The text is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadOnlyViolation {
    /// A statement that changes data, schema or privileges.
    #[error("read-only policy: {0} is a write")]
    Write(String),
    /// `FOR UPDATE` / `FOR SHARE` anywhere: row locks are writes to the tuples.
    #[error("read-only policy: row locking (FOR UPDATE / FOR SHARE) is not allowed")]
    Locking,
    /// `WITH x AS (INSERT/UPDATE/DELETE/MERGE ...)`.
    #[error("read-only policy: a data-modifying statement in WITH is not allowed")]
    WritableCte,
    /// `SELECT ... INTO` creates a table.
    #[error("read-only policy: SELECT INTO creates a table")]
    SelectInto,
    /// `EXPLAIN ANALYZE` executes its statement, which must therefore be a read itself.
    #[error("read-only policy: EXPLAIN ANALYZE executes its statement, which must be a query")]
    ExplainAnalyzeWrite,
    /// A function that is not on the allowlist.
    #[error("read-only policy: function {0} is not allowed")]
    Function(String),
    /// An operator named with a schema other than `pg_catalog`.
    #[error("read-only policy: operator {0} is not allowed")]
    Operator(String),
    /// A statement that would switch the session or transaction to read-write.
    #[error("read-only policy: {0} would undo the read-only session")]
    UndoesReadOnly(String),
    /// `SET ROLE`, `SET SESSION AUTHORIZATION`: escapes the identity the policy was chosen for.
    #[error("read-only policy: {0} would change the session identity")]
    ChangesIdentity(String),
    /// A setting change that would let pgward and PostgreSQL read the SQL text differently, or
    /// let an unqualified function name resolve outside `pg_catalog`.
    #[error("read-only policy: this change of {0} is not allowed")]
    ProtectedSetting(String),
    /// Anything else that is not positively known to be a read.
    #[error("read-only policy: {0} is not allowed")]
    NotARead(String),
    /// The SQL could not be parsed, so it cannot be shown to be a read.
    #[error("read-only policy: statement could not be parsed: {0}")]
    Unparsable(String),
}

/// Checks statements already parsed with sqlparser's PostgreSqlDialect.
///
/// Every statement must pass; an empty list passes because it runs nothing.
pub fn check(
    statements: &[Statement],
    functions: &FunctionAllowlist,
) -> Result<(), ReadOnlyViolation> {
    statements
        .iter()
        .try_for_each(|statement| check_statement(statement, functions))
}

/// Convenience for tests and the CLI: parse with PostgreSqlDialect and check; a parse error is a
/// violation (fail closed).
pub fn check_sql(sql: &str, functions: &FunctionAllowlist) -> Result<(), ReadOnlyViolation> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|error| ReadOnlyViolation::Unparsable(error.to_string()))?;
    check(&statements, functions)
}

fn check_statement(
    statement: &Statement,
    functions: &FunctionAllowlist,
) -> Result<(), ReadOnlyViolation> {
    match statement {
        Statement::Query(query) => check_query(query, functions),
        Statement::Explain {
            describe_alias: DescribeAlias::Explain,
            analyze,
            query_plan: false,
            estimate: false,
            statement,
            options,
            verbose: _,
            format: _,
        } => {
            // `EXPLAIN (ANALYZE false)` counts as ANALYZE too: judging the option's value would
            // be one more thing to get wrong, and the plan-only form is available.
            let analyze = *analyze || options.iter().flatten().any(is_analyze_option);
            if analyze {
                match statement.as_ref() {
                    // `WITH ... INSERT` is a query whose body writes.
                    Statement::Query(query) => {
                        check_query(query, functions).map_err(|violation| match violation {
                            ReadOnlyViolation::Write(_) => ReadOnlyViolation::ExplainAnalyzeWrite,
                            other => other,
                        })
                    }
                    _ => Err(ReadOnlyViolation::ExplainAnalyzeWrite),
                }
            } else {
                check_explain_plan(statement, functions)
            }
        }
        Statement::ShowVariable { .. } => Ok(()),
        Statement::Set(set) => check_set(set),
        Statement::Reset(reset) => check_reset(&reset.reset),
        Statement::StartTransaction {
            modes,
            begin,
            transaction: _,
            modifier: None,
            statements,
            exception: None,
            has_end_keyword: false,
        } if statements.is_empty() => {
            let what = if *begin {
                "BEGIN READ WRITE"
            } else {
                "START TRANSACTION READ WRITE"
            };
            check_transaction_modes(modes, what)
        }
        Statement::Commit { modifier: None, .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Ok(()),
        Statement::Declare { stmts } => match stmts.as_slice() {
            [declare]
                if declare.names.len() == 1
                    && declare.declare_type == Some(DeclareType::Cursor)
                    && declare.data_type.is_none()
                    && declare.assignment.is_none() =>
            {
                // A held cursor outlives its transaction: PostgreSQL materialises it at commit
                // and keeps it on the (pooled) server connection.
                if declare.hold == Some(true) {
                    return Err(ReadOnlyViolation::NotARead(
                        "DECLARE ... WITH HOLD".to_string(),
                    ));
                }
                match &declare.for_query {
                    Some(query) => check_query(query, functions),
                    None => Err(ReadOnlyViolation::NotARead("DECLARE".to_string())),
                }
            }
            _ => Err(ReadOnlyViolation::NotARead("DECLARE".to_string())),
        },
        Statement::Fetch { into: None, .. } => Ok(()),
        Statement::Close { .. } => Ok(()),
        // COPY TO only reads, but COPY FROM writes and both take over the connection's protocol
        // flow; refusing both keeps the rule simple. Clients can SELECT instead.
        Statement::Copy { .. } => Err(ReadOnlyViolation::NotARead(
            "COPY (refused in both directions; use SELECT)".to_string(),
        )),
        other => Err(refused_statement(other)),
    }
}

/// A full read check of a query: every nested query, expression and table expression.
fn check_query(query: &Query, functions: &FunctionAllowlist) -> Result<(), ReadOnlyViolation> {
    let mut check = ReadCheck {
        functions,
        mode: Mode::Read,
    };
    match query.visit(&mut check) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(violation) => Err(violation),
    }
}

/// Plain `EXPLAIN` plans without executing, so the statement may be a write. Planning can still
/// evaluate functions (constant folding of immutable and stable ones, including mislabelled
/// user functions), so the function allowlist applies to the statement all the same.
fn check_explain_plan(
    statement: &Statement,
    functions: &FunctionAllowlist,
) -> Result<(), ReadOnlyViolation> {
    match statement {
        Statement::Query(_)
        | Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => {}
        // PostgreSQL can also EXPLAIN EXECUTE, DECLARE and CREATE TABLE AS; not needed for reads.
        other => {
            return Err(ReadOnlyViolation::NotARead(format!(
                "EXPLAIN {}",
                statement_kind(other)
            )));
        }
    }
    let mut check = ReadCheck {
        functions,
        mode: Mode::PlanOnly,
    };
    match statement.visit(&mut check) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(violation) => Err(violation),
    }
}

fn is_analyze_option(option: &UtilityOption) -> bool {
    let name = option.name.value.to_ascii_lowercase();
    name == "analyze" || name == "analyse"
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The tree will be executed: it must be a read.
    Read,
    /// The tree will only be planned (`EXPLAIN` without `ANALYZE`): only what planning may
    /// evaluate matters.
    PlanOnly,
}

/// Walks the whole tree with sqlparser's visitor, so constructs nested anywhere (subqueries in
/// FROM, WHERE, the select list, CTEs, set operations, lateral joins, function arguments, CASE,
/// FILTER, OVER, ORDER BY, LIMIT ...) are seen without a hand-written walk that could miss one.
struct ReadCheck<'a> {
    functions: &'a FunctionAllowlist,
    mode: Mode,
}

impl Visitor for ReadCheck<'_> {
    type Break = ReadOnlyViolation;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<Self::Break> {
        match self.mode {
            // Only reached for statements nested in a query (the query itself is visited, not
            // its statement): INSERT/UPDATE/DELETE/MERGE as a query body.
            Mode::Read => ControlFlow::Break(refused_statement(statement)),
            Mode::PlanOnly => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Self::Break> {
        if self.mode == Mode::PlanOnly {
            return ControlFlow::Continue(());
        }
        if !query.locks.is_empty() {
            return ControlFlow::Break(ReadOnlyViolation::Locking);
        }
        // Checked before the visitor descends into the CTE, so the violation names the CTE
        // rather than the nested statement.
        if let Some(with) = &query.with
            && with
                .cte_tables
                .iter()
                .any(|cte| body_writes(&cte.query.body))
        {
            return ControlFlow::Break(ReadOnlyViolation::WritableCte);
        }
        if let SetExpr::Insert(statement)
        | SetExpr::Update(statement)
        | SetExpr::Delete(statement)
        | SetExpr::Merge(statement) = query.body.as_ref()
        {
            return ControlFlow::Break(refused_statement(statement));
        }
        // Other dialects' clauses: PostgreSQL would reject them, and what they do is not ours to
        // judge.
        if query.for_clause.is_some()
            || query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            return ControlFlow::Break(ReadOnlyViolation::NotARead(
                "a query clause PostgreSQL does not have".to_string(),
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Self::Break> {
        if self.mode == Mode::Read && select.into.is_some() {
            return ControlFlow::Break(ReadOnlyViolation::SelectInto);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<Self::Break> {
        // Name parts computed by a function (another dialect's IDENTIFIER(...)) are calls too.
        if name_parts(relation).is_none() {
            return ControlFlow::Break(ReadOnlyViolation::NotARead(format!(
                "the computed name {relation}"
            )));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Self::Break> {
        match factor {
            // `FROM f(...)` is a set-returning function call, not a table.
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.check_function(name),
            TableFactor::Table { args: None, .. }
            | TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. }
            // The arguments are expressions, visited like any other.
            | TableFactor::UNNEST { .. }
            | TableFactor::JsonTable { .. }
            | TableFactor::XmlTable { .. } => ControlFlow::Continue(()),
            // TABLE(...), PIVOT, MATCH_RECOGNIZE, OPENJSON and the like are not PostgreSQL.
            _ => ControlFlow::Break(ReadOnlyViolation::NotARead(
                "a table expression PostgreSQL does not have".to_string(),
            )),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Self::Break> {
        match expr {
            Expr::Function(function) => self.check_function(&function.name),
            Expr::BinaryOp { op, .. } => check_operator(op),
            Expr::AnyOp { compare_op, .. } | Expr::AllOp { compare_op, .. } => {
                check_operator(compare_op)
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_order_by_expr(&mut self, order_by: &OrderByExpr) -> ControlFlow<Self::Break> {
        match &order_by.options.sort {
            Some(OrderBySort::Using(operator)) => check_operator_name(operator),
            _ => ControlFlow::Continue(()),
        }
    }
}

impl ReadCheck<'_> {
    fn check_function(&self, name: &ObjectName) -> ControlFlow<ReadOnlyViolation> {
        if self.functions.allows(name) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(ReadOnlyViolation::Function(name.to_string()))
        }
    }
}

/// `OPERATOR(schema.op)` picks the operator's schema explicitly; only `pg_catalog` is known to
/// hold operators backed by pure functions.
fn check_operator(op: &BinaryOperator) -> ControlFlow<ReadOnlyViolation> {
    match op {
        BinaryOperator::PGCustomBinaryOperator(parts) => match parts.as_slice() {
            [_] => ControlFlow::Continue(()),
            [schema, _] if schema.eq_ignore_ascii_case("pg_catalog") => ControlFlow::Continue(()),
            _ => ControlFlow::Break(ReadOnlyViolation::Operator(format!(
                "OPERATOR({})",
                parts.join(".")
            ))),
        },
        _ => ControlFlow::Continue(()),
    }
}

/// `ORDER BY x USING schema.op`: the same rule as `OPERATOR(schema.op)`.
fn check_operator_name(name: &ObjectName) -> ControlFlow<ReadOnlyViolation> {
    let Some(parts) = name_parts(name) else {
        return ControlFlow::Break(ReadOnlyViolation::Operator(name.to_string()));
    };
    match parts.as_slice() {
        [_] => ControlFlow::Continue(()),
        [(schema, _), _] if schema == "pg_catalog" => ControlFlow::Continue(()),
        _ => ControlFlow::Break(ReadOnlyViolation::Operator(name.to_string())),
    }
}

/// Whether a query body is, or contains at its top, a data-modifying statement.
fn body_writes(body: &SetExpr) -> bool {
    match body {
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => true,
        SetExpr::Query(query) => {
            body_writes(&query.body)
                || query.with.as_ref().is_some_and(|with| {
                    with.cte_tables
                        .iter()
                        .any(|cte| body_writes(&cte.query.body))
                })
        }
        SetExpr::SetOperation { left, right, .. } => body_writes(left) || body_writes(right),
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => false,
    }
}

fn check_transaction_modes(modes: &[TransactionMode], what: &str) -> Result<(), ReadOnlyViolation> {
    if modes.contains(&TransactionMode::AccessMode(
        TransactionAccessMode::ReadWrite,
    )) {
        return Err(ReadOnlyViolation::UndoesReadOnly(what.to_string()));
    }
    Ok(())
}

fn check_set(set: &sqlparser::ast::Set) -> Result<(), ReadOnlyViolation> {
    use sqlparser::ast::Set;
    match set {
        Set::SingleAssignment {
            scope: None | Some(ContextModifier::Session | ContextModifier::Local),
            hivevar: false,
            variable,
            values,
        } => {
            let Some(name) = setting_name(variable) else {
                return Err(ReadOnlyViolation::NotARead(format!("SET {variable}")));
            };
            // PostgreSQL only takes literals and words here; anything else (a function call, a
            // subquery) is not a value we can judge.
            if values.is_empty() || !values.iter().all(is_plain_setting_value) {
                return Err(ReadOnlyViolation::NotARead(format!(
                    "SET {name} to an expression"
                )));
            }
            check_setting_change(&name, values)
        }
        Set::SetTransaction { modes, session, .. } => {
            let what = if *session {
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"
            } else {
                "SET TRANSACTION READ WRITE"
            };
            check_transaction_modes(modes, what)
        }
        Set::SetTimeZone { value, .. } => {
            if is_plain_setting_value(value) || matches!(value, Expr::Interval(_)) {
                Ok(())
            } else {
                Err(ReadOnlyViolation::NotARead(
                    "SET TIME ZONE to an expression".to_string(),
                ))
            }
        }
        Set::SetRole { .. } => Err(ReadOnlyViolation::ChangesIdentity("SET ROLE".to_string())),
        Set::SetSessionAuthorization(_) => Err(ReadOnlyViolation::ChangesIdentity(
            "SET SESSION AUTHORIZATION".to_string(),
        )),
        // SET NAMES is client_encoding.
        Set::SetNames {
            charset_name,
            collation_name: None,
        } => {
            if is_utf8_name(&charset_name.value) {
                Ok(())
            } else {
                Err(client_encoding_violation())
            }
        }
        // Back to the encoding the client connected with.
        Set::SetNamesDefault {} => Ok(()),
        // Other dialects' forms (SET a = 1, b = 2; SET (a, b) = ...; T-SQL session options).
        _ => Err(ReadOnlyViolation::NotARead(
            "a SET form PostgreSQL does not have".to_string(),
        )),
    }
}

/// The rules for `SET name = values` by setting name.
fn check_setting_change(name: &str, values: &[Expr]) -> Result<(), ReadOnlyViolation> {
    // A custom placeholder like `x.default_transaction_read_only` is not the real setting, but
    // matching on the last part as well costs nothing and fails closed.
    let last = name.rsplit('.').next().unwrap_or(name);
    if is_read_only_setting(name) || is_read_only_setting(last) {
        return Err(ReadOnlyViolation::UndoesReadOnly(format!("SET {name}")));
    }
    match name {
        "role" | "session_authorization" => {
            Err(ReadOnlyViolation::ChangesIdentity(format!("SET {name}")))
        }
        // With standard_conforming_strings off, PostgreSQL reads backslashes in '...' as
        // escapes while sqlparser does not, so text pgward saw as one harmless string literal
        // could hide further statements. Only `on` is accepted.
        "standard_conforming_strings" => match single_value_text(values) {
            Some(value) if matches!(value.as_str(), "on" | "true" | "yes" | "1") => Ok(()),
            _ => Err(ReadOnlyViolation::ProtectedSetting(
                "standard_conforming_strings (only on)".to_string(),
            )),
        },
        // Client-only encodings (SJIS, BIG5, GBK ...) have multi-byte characters containing
        // quote and backslash bytes: another way for pgward and PostgreSQL to read the same
        // bytes differently. UTF8, or back to the connect-time value.
        "client_encoding" => match single_value_text(values) {
            Some(value) if value == "default" || is_utf8_name(&value) => Ok(()),
            _ => Err(client_encoding_violation()),
        },
        // The allowlist trusts unqualified names because pg_catalog is searched first; a
        // search_path that lists pg_catalog after another schema lets that schema's functions
        // shadow the built-ins.
        "search_path" => {
            let schemas: Vec<String> = values.iter().flat_map(search_path_entries).collect();
            match schemas.iter().position(|schema| schema == "pg_catalog") {
                Some(position) if position > 0 => Err(ReadOnlyViolation::ProtectedSetting(
                    "search_path (pg_catalog must come first)".to_string(),
                )),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

fn check_reset(reset: &Reset) -> Result<(), ReadOnlyViolation> {
    match reset {
        // RESET returns to the session's reset value. That is `on` only if pgward set
        // default_transaction_read_only as a startup parameter; if it was set with SET after
        // connecting, RESET would restore the role's or server's default. This module cannot
        // know which, so it refuses the RESETs that would matter.
        Reset::ALL => Err(ReadOnlyViolation::UndoesReadOnly("RESET ALL".to_string())),
        Reset::SessionAuthorization => Ok(()),
        Reset::ConfigurationParameter(name) => {
            let Some(name) = setting_name(name) else {
                return Err(ReadOnlyViolation::NotARead(format!("RESET {name}")));
            };
            let last = name.rsplit('.').next().unwrap_or(&name);
            if is_read_only_setting(&name) || is_read_only_setting(last) {
                Err(ReadOnlyViolation::UndoesReadOnly(format!("RESET {name}")))
            } else if name == "standard_conforming_strings" {
                Err(ReadOnlyViolation::ProtectedSetting(
                    "standard_conforming_strings".to_string(),
                ))
            } else {
                Ok(())
            }
        }
    }
}

fn is_read_only_setting(name: &str) -> bool {
    name == "default_transaction_read_only" || name == "transaction_read_only"
}

fn client_encoding_violation() -> ReadOnlyViolation {
    ReadOnlyViolation::ProtectedSetting("client_encoding (only UTF8)".to_string())
}

/// PostgreSQL's encoding names ignore case and punctuation: `UTF8`, `utf-8`, `Unicode`.
fn is_utf8_name(name: &str) -> bool {
    let cleaned: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    cleaned == "utf8" || cleaned == "unicode"
}

/// A literal, a word (`on`, `DEFAULT`, `public`) or a signed number: what PostgreSQL's SET
/// grammar accepts. Placeholders are not values PostgreSQL's SET takes.
fn is_plain_setting_value(value: &Expr) -> bool {
    match value {
        Expr::Value(value) => !matches!(value.value, Value::Placeholder(_)),
        Expr::Identifier(_) => true,
        Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => {
            matches!(expr.as_ref(), Expr::Value(value) if matches!(value.value, Value::Number(..)))
        }
        _ => false,
    }
}

/// The text of a single SET value, lower-cased; `None` for lists and unusual values.
fn single_value_text(values: &[Expr]) -> Option<String> {
    match values {
        [value] => value_text(value).map(|text| text.trim().to_ascii_lowercase()),
        _ => None,
    }
}

fn value_text(value: &Expr) -> Option<String> {
    match value {
        Expr::Identifier(ident) => Some(ident.value.clone()),
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(text)
            | Value::DoubleQuotedString(text)
            | Value::EscapedStringLiteral(text)
            | Value::UnicodeStringLiteral(text) => Some(text.clone()),
            Value::DollarQuotedString(text) => Some(text.value.clone()),
            Value::Number(number, _) => Some(number.to_string()),
            Value::Boolean(true) => Some("true".to_string()),
            Value::Boolean(false) => Some("false".to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Schema names in one search_path value: a word, or a string holding a comma-separated list.
/// Lower-casing a quoted name can only turn a different schema into "pg_catalog", which errs
/// towards refusing.
fn search_path_entries(value: &Expr) -> Vec<String> {
    match value_text(value) {
        Some(text) => text
            .split(',')
            .map(|entry| entry.trim().trim_matches('"').to_ascii_lowercase())
            .filter(|entry| !entry.is_empty())
            .collect(),
        // Not a plain value: already refused by is_plain_setting_value.
        None => Vec::new(),
    }
}

/// A setting's name as PostgreSQL compares it: parts joined with '.', case-insensitively (GUC
/// lookup ignores case even for quoted names).
fn setting_name(name: &ObjectName) -> Option<String> {
    let parts = name
        .0
        .iter()
        .map(|part| {
            part.as_ident()
                .map(|ident| ident.value.to_ascii_lowercase())
        })
        .collect::<Option<Vec<String>>>()?;
    Some(parts.join("."))
}

/// A name's parts as PostgreSQL resolves them: unquoted parts folded to lower case (ASCII only,
/// as PostgreSQL does in UTF-8), quoted parts as written; with whether each was quoted. `None`
/// when a part is not a plain identifier.
fn name_parts(name: &ObjectName) -> Option<Vec<(String, bool)>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Some(match ident.quote_style {
                None => (ident.value.to_ascii_lowercase(), false),
                Some(_) => (ident.value.clone(), true),
            }),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

/// The violation for a statement kind this module does not let through.
fn refused_statement(statement: &Statement) -> ReadOnlyViolation {
    let kind = statement_kind(statement);
    if WRITE_KINDS.iter().any(|prefix| kind.starts_with(prefix)) {
        ReadOnlyViolation::Write(kind)
    } else {
        ReadOnlyViolation::NotARead(kind)
    }
}

/// Statement kinds (see [`statement_kind`]) reported as writes rather than "not a read"; both are
/// refused, this only picks the message.
const WRITE_KINDS: &[&str] = &[
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "TRUNCATE",
    "CREATE",
    "ALTER",
    "DROP",
    "GRANT",
    "REVOKE",
    "DENY",
    "COMMENT",
    "RENAME",
    "VACUUM",
    "ANALYZE",
    "COPY",
    "LOAD DATA",
    "UNLOAD",
];

/// A statement's kind in words ("CREATE TABLE", "INSERT", "LISTEN"), taken from the name of its
/// `Statement` variant so that no user text ends up in the message and new sqlparser variants
/// still get a name.
fn statement_kind(statement: &Statement) -> String {
    /// Collects the leading identifier of a Debug rendering and then refuses further output,
    /// so formatting stops after the variant name instead of rendering the whole tree.
    struct VariantName(String);

    impl fmt::Write for VariantName {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            for c in text.chars() {
                if !(c.is_ascii_alphanumeric() || c == '_') || self.0.len() >= 64 {
                    return Err(fmt::Error);
                }
                self.0.push(c);
            }
            Ok(())
        }
    }

    let mut name = VariantName(String::new());
    // The error is the intended early stop.
    let _ = fmt::write(&mut name, format_args!("{statement:?}"));
    let mut words = String::with_capacity(name.0.len() + 4);
    let mut previous_lower = false;
    for c in name.0.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            words.push(' ');
        }
        previous_lower = c.is_ascii_lowercase();
        words.push(c.to_ascii_uppercase());
    }
    if words.is_empty() {
        "this statement".to_string()
    } else {
        words
    }
}

fn is_builtin(name: &str) -> bool {
    BUILTIN_FUNCTIONS.binary_search(&name).is_ok()
}

/// Names PostgreSQL's grammar treats as syntax rather than as function calls (constructors,
/// conditionals, SQL-standard niladic functions, SQL/JSON constructors). sqlparser represents
/// them as function calls; they are allowed only unquoted and unqualified, because a quoted or
/// qualified spelling is an ordinary call to whatever function has that name.
const SYNTAX_FORMS: &[&str] = &[
    "array",
    "coalesce",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "greatest",
    "grouping",
    "json_array",
    "json_arrayagg",
    "json_exists",
    "json_objectagg",
    "json_query",
    "json_scalar",
    "json_serialize",
    "json_value",
    "least",
    "localtime",
    "localtimestamp",
    "nullif",
    "row",
    "session_user",
    "system_user",
    "user",
];

/// The built-in safe list: functions in `pg_catalog`, sorted (binary search; a test checks the
/// order). Generous with pure functions, strict with anything with side effects.
///
/// Deliberately absent, among everything else not listed: sequences (nextval, setval, currval,
/// lastval), set_config, pg_advisory_* and pg_try_advisory_*, dblink*, pg_sleep*, file and
/// large-object access (pg_read_file, pg_read_binary_file, pg_ls_dir, pg_stat_file, lo_*),
/// backend signalling (pg_terminate_backend, pg_cancel_backend, pg_reload_conf), pg_notify,
/// txid_current / pg_current_xact_id (assign a transaction id), pg_create_* (replication slots,
/// restore points), random / setseed (setseed changes session state), and the functions that
/// run SQL text given as an argument, bypassing this check (query_to_xml and friends, ts_stat,
/// ts_rewrite).
///
/// Every name was checked to exist in pg_catalog (PostgreSQL 15), except a few added in later
/// releases (any_value, the *_strict / *_unique JSON aggregates, date_add, date_subtract, erf,
/// erfc, casefold, uuidv4, uuidv7). Names that do not exist in pg_catalog would resolve to a
/// same-named function elsewhere on the search path, so the list must not grow by guessing.
/// A few volatile functions are here because their only effect is reading a clock, the random
/// generator or file sizes: clock_timestamp, timeofday, gen_random_uuid, uuidv4, uuidv7,
/// pg_*_size, pg_is_in_recovery.
const BUILTIN_FUNCTIONS: &[&str] = &[
    "abbrev",
    "abs",
    "acos",
    "acosd",
    "acosh",
    "age",
    "any_value",
    "array_agg",
    "array_append",
    "array_cat",
    "array_dims",
    "array_fill",
    "array_length",
    "array_lower",
    "array_ndims",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_to_json",
    "array_to_string",
    "array_to_tsvector",
    "array_upper",
    "ascii",
    "asin",
    "asind",
    "asinh",
    "atan",
    "atan2",
    "atan2d",
    "atand",
    "atanh",
    "avg",
    "bit_and",
    "bit_count",
    "bit_length",
    "bit_or",
    "bit_xor",
    "bool",
    "bool_and",
    "bool_or",
    "bpchar",
    "broadcast",
    "btrim",
    "cardinality",
    "casefold",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "chr",
    "cidr",
    "clock_timestamp",
    "col_description",
    "concat",
    "concat_ws",
    "convert",
    "convert_from",
    "convert_to",
    "corr",
    "cos",
    "cosd",
    "cosh",
    "cot",
    "cotd",
    "count",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_user",
    "date",
    "date_add",
    "date_bin",
    "date_part",
    "date_subtract",
    "date_trunc",
    "daterange",
    "decode",
    "degrees",
    "dense_rank",
    "div",
    "encode",
    "erf",
    "erfc",
    "every",
    "exp",
    "extract",
    "factorial",
    "family",
    "first_value",
    "float4",
    "float8",
    "floor",
    "format",
    "format_type",
    "gcd",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "get_bit",
    "get_byte",
    "has_any_column_privilege",
    "has_column_privilege",
    "has_database_privilege",
    "has_function_privilege",
    "has_schema_privilege",
    "has_table_privilege",
    "host",
    "hostmask",
    "inet_client_addr",
    "inet_client_port",
    "inet_merge",
    "inet_same_family",
    "inet_server_addr",
    "inet_server_port",
    "initcap",
    "int2",
    "int4",
    "int4range",
    "int8",
    "int8range",
    "interval",
    "isempty",
    "isfinite",
    "json_agg",
    "json_agg_strict",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object",
    "json_object_agg",
    "json_object_agg_strict",
    "json_object_agg_unique",
    "json_object_agg_unique_strict",
    "json_object_keys",
    "json_populate_record",
    "json_populate_recordset",
    "json_strip_nulls",
    "json_to_record",
    "json_to_recordset",
    "json_typeof",
    "jsonb_agg",
    "jsonb_agg_strict",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object",
    "jsonb_object_agg",
    "jsonb_object_agg_strict",
    "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_exists_tz",
    "jsonb_path_match",
    "jsonb_path_match_tz",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_array_tz",
    "jsonb_path_query_first",
    "jsonb_path_query_first_tz",
    "jsonb_path_query_tz",
    "jsonb_populate_record",
    "jsonb_populate_recordset",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_set_lax",
    "jsonb_strip_nulls",
    "jsonb_to_record",
    "jsonb_to_recordset",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "lag",
    "last_value",
    "lcm",
    "lead",
    "left",
    "length",
    "ln",
    "log",
    "log10",
    "lower",
    "lower_inc",
    "lower_inf",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "masklen",
    "max",
    "md5",
    "min",
    "min_scale",
    "mod",
    "mode",
    "name",
    "netmask",
    "network",
    "normalize",
    "now",
    "nth_value",
    "ntile",
    "num_nonnulls",
    "num_nulls",
    "numeric",
    "numnode",
    "numrange",
    "obj_description",
    "octet_length",
    "oid",
    "overlay",
    "parse_ident",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_conf_load_time",
    "pg_database_size",
    "pg_encoding_to_char",
    "pg_function_is_visible",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_function_arguments",
    "pg_get_function_identity_arguments",
    "pg_get_function_result",
    "pg_get_functiondef",
    "pg_get_indexdef",
    "pg_get_keywords",
    "pg_get_partkeydef",
    "pg_get_ruledef",
    "pg_get_statisticsobjdef",
    "pg_get_triggerdef",
    "pg_get_userbyid",
    "pg_get_viewdef",
    "pg_has_role",
    "pg_indexes_size",
    "pg_is_in_recovery",
    "pg_postmaster_start_time",
    "pg_relation_size",
    "pg_size_bytes",
    "pg_size_pretty",
    "pg_table_is_visible",
    "pg_table_size",
    "pg_total_relation_size",
    "pg_type_is_visible",
    "pg_typeof",
    "phraseto_tsquery",
    "pi",
    "plainto_tsquery",
    "position",
    "pow",
    "power",
    "querytree",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "range_agg",
    "range_intersect_agg",
    "range_merge",
    "rank",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_substr",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "scale",
    "session_user",
    "setweight",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "shobj_description",
    "sign",
    "sin",
    "sind",
    "sinh",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "string_to_table",
    "strip",
    "strpos",
    "substr",
    "substring",
    "sum",
    "tan",
    "tand",
    "tanh",
    "text",
    "time",
    "timeofday",
    "timestamp",
    "timestamptz",
    "timetz",
    "timezone",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_regcollation",
    "to_regnamespace",
    "to_regoper",
    "to_regoperator",
    "to_regproc",
    "to_regprocedure",
    "to_regrole",
    "to_regtype",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "transaction_timestamp",
    "translate",
    "trim_array",
    "trim_scale",
    "trunc",
    "ts_delete",
    "ts_filter",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "tsrange",
    "tstzrange",
    "tsvector_to_array",
    "unistr",
    "unnest",
    "upper",
    "upper_inc",
    "upper_inf",
    "uuidv4",
    "uuidv7",
    "var_pop",
    "var_samp",
    "varchar",
    "variance",
    "version",
    "websearch_to_tsquery",
    "width_bucket",
    "xmlagg",
];

#[cfg(test)]
mod tests {
    use super::*;
    use ReadOnlyViolation as V;

    fn verdict(sql: &str) -> Result<(), ReadOnlyViolation> {
        check_sql(sql, &FunctionAllowlist::builtin())
    }

    #[track_caller]
    fn allowed(sql: &str) {
        assert_eq!(verdict(sql), Ok(()), "should be allowed: {sql}");
    }

    #[track_caller]
    fn denied(sql: &str) -> ReadOnlyViolation {
        match verdict(sql) {
            Err(violation) => violation,
            Ok(()) => panic!("should be denied: {sql}"),
        }
    }

    fn function(name: &str) -> ReadOnlyViolation {
        V::Function(name.to_string())
    }

    #[test]
    fn writes_are_denied() {
        assert_eq!(
            denied("INSERT INTO t VALUES (1)"),
            V::Write("INSERT".into())
        );
        assert_eq!(denied("UPDATE t SET a=1"), V::Write("UPDATE".into()));
        assert_eq!(denied("DELETE FROM t"), V::Write("DELETE".into()));
        assert_eq!(
            denied("MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE"),
            V::Write("MERGE".into())
        );
        assert_eq!(
            denied("CREATE TABLE x (a int)"),
            V::Write("CREATE TABLE".into())
        );
        assert_eq!(
            denied("CREATE TEMP TABLE x (a int)"),
            V::Write("CREATE TABLE".into())
        );
        assert_eq!(
            denied("CREATE TABLE x AS SELECT 1"),
            V::Write("CREATE TABLE".into())
        );
        assert!(matches!(
            denied("ALTER TABLE t ADD COLUMN b int"),
            V::Write(_)
        ));
        assert!(matches!(denied("DROP TABLE t"), V::Write(_)));
        assert!(matches!(denied("TRUNCATE t"), V::Write(_)));
        assert!(matches!(denied("GRANT SELECT ON t TO bob"), V::Write(_)));
        assert!(matches!(denied("REVOKE SELECT ON t FROM bob"), V::Write(_)));
        assert!(matches!(denied("VACUUM t"), V::Write(_)));
        assert!(matches!(denied("ANALYZE t"), V::Write(_)));
        assert!(matches!(denied("COMMENT ON TABLE t IS 'x'"), V::Write(_)));
    }

    #[test]
    fn other_statements_are_denied() {
        for sql in [
            "COPY t FROM STDIN",
            "COPY t TO STDOUT",
            "COPY (SELECT 1) TO STDOUT",
            "CALL p()",
            "LISTEN x",
            "UNLISTEN x",
            "NOTIFY x",
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "DEALLOCATE p",
            "LOCK t",
            "DISCARD ALL",
            "LOAD 'x'",
            "DESCRIBE t",
            "SHOW TABLES",
        ] {
            assert!(matches!(denied(sql), V::NotARead(_)), "{sql}");
        }
        assert_eq!(
            denied("COPY t FROM STDIN"),
            V::NotARead("COPY (refused in both directions; use SELECT)".into())
        );
        assert_eq!(denied("LISTEN x"), V::NotARead("LISTEN".into()));
    }

    #[test]
    fn statements_sqlparser_cannot_parse_are_denied() {
        for sql in [
            "this is not sql",
            "SELECT (",
            "DO $$ BEGIN DELETE FROM t; END $$",
            "CHECKPOINT",
            "REFRESH MATERIALIZED VIEW v",
            "MOVE NEXT FROM c",
            "FETCH 10 c",
            "TABLE t",
            "SELECT * FROM t FOR NO KEY UPDATE",
            "SELECT * FROM t FOR KEY SHARE",
            "SELECT 1 UNION (SELECT 1 FOR UPDATE)",
            "SELECT * FROM ROWS FROM (generate_series(1, 2), nextval('s'))",
            "EXPLAIN ANALYSE DELETE FROM t",
            "PREPARE TRANSACTION 'x'",
            "COMMIT PREPARED 'x'",
            "SELECT xmlelement(name foo)",
            "SELECT collation for ('a')",
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
        ] {
            assert!(matches!(denied(sql), V::Unparsable(_)), "{sql}");
        }
    }

    #[test]
    fn writable_ctes_are_denied() {
        assert_eq!(
            denied("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x"),
            V::WritableCte
        );
        assert_eq!(
            denied("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x"),
            V::WritableCte
        );
        assert_eq!(
            denied("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT 1"),
            V::WritableCte
        );
        assert_eq!(
            denied(
                "WITH x AS (MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE RETURNING *) \
                 SELECT 1"
            ),
            V::WritableCte
        );
        assert_eq!(
            denied("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x"),
            V::Write("INSERT".into())
        );
        // Nested in a subquery: the visitor finds it.
        assert_eq!(
            denied("SELECT (WITH y AS (DELETE FROM t RETURNING *) SELECT 1)"),
            V::WritableCte
        );
        assert_eq!(
            denied("SELECT * FROM (WITH y AS (DELETE FROM t RETURNING *) SELECT * FROM y) s"),
            V::WritableCte
        );
        assert_eq!(
            denied("SELECT 1 WHERE EXISTS (WITH y AS (DELETE FROM t RETURNING *) SELECT 1)"),
            V::WritableCte
        );
    }

    #[test]
    fn row_locks_are_denied_anywhere() {
        for sql in [
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR SHARE",
            "SELECT * FROM t FOR UPDATE OF t SKIP LOCKED",
            "SELECT * FROM t FOR SHARE NOWAIT",
            "SELECT * FROM (SELECT * FROM t FOR UPDATE) s",
            "SELECT 1 FROM t WHERE a = (SELECT b FROM u FOR SHARE)",
            "WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x",
            "WITH x AS (SELECT 1) SELECT * FROM x FOR UPDATE",
            "SELECT * FROM t JOIN LATERAL (SELECT * FROM u FOR UPDATE) s ON true",
            "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE",
            "EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE",
        ] {
            assert_eq!(denied(sql), V::Locking, "{sql}");
        }
    }

    #[test]
    fn select_into_is_denied_anywhere() {
        assert_eq!(denied("SELECT * INTO newt FROM t"), V::SelectInto);
        assert_eq!(denied("SELECT * INTO TEMP newt FROM t"), V::SelectInto);
        assert_eq!(
            denied("SELECT 1 UNION ALL SELECT * INTO newt FROM t"),
            V::SelectInto
        );
    }

    #[test]
    fn explain() {
        allowed("EXPLAIN SELECT * FROM t");
        allowed("EXPLAIN VERBOSE SELECT * FROM t");
        allowed("EXPLAIN (FORMAT JSON, COSTS false) SELECT * FROM t");
        allowed("EXPLAIN ANALYZE SELECT 1");
        allowed("EXPLAIN ANALYZE VERBOSE SELECT * FROM t WHERE a = $1");
        allowed("EXPLAIN (ANALYZE, BUFFERS) SELECT 1");
        // Plain EXPLAIN plans without executing, so writes may be planned...
        allowed("EXPLAIN DELETE FROM t");
        allowed("EXPLAIN INSERT INTO t VALUES (1)");
        allowed("EXPLAIN WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x");
        allowed("EXPLAIN SELECT * FROM t FOR UPDATE");
        // ...but planning may fold function calls, so the allowlist still applies.
        assert_eq!(denied("EXPLAIN SELECT nextval('s')"), function("nextval"));
        assert_eq!(
            denied("EXPLAIN INSERT INTO t VALUES (pg_sleep(1))"),
            function("pg_sleep")
        );
        assert_eq!(
            denied("EXPLAIN CREATE TABLE x AS SELECT 1"),
            V::NotARead("EXPLAIN CREATE TABLE".into())
        );
        assert!(matches!(denied("EXPLAIN EXECUTE p"), V::NotARead(_)));
        assert!(matches!(
            denied("EXPLAIN DECLARE c CURSOR FOR SELECT 1"),
            V::NotARead(_)
        ));

        assert_eq!(
            denied("EXPLAIN ANALYZE DELETE FROM t"),
            V::ExplainAnalyzeWrite
        );
        assert_eq!(
            denied("EXPLAIN ANALYZE INSERT INTO t VALUES (1)"),
            V::ExplainAnalyzeWrite
        );
        assert_eq!(
            denied("EXPLAIN (ANALYZE) UPDATE t SET a = 1"),
            V::ExplainAnalyzeWrite
        );
        assert_eq!(
            denied("EXPLAIN (analyse, buffers) DELETE FROM t"),
            V::ExplainAnalyzeWrite
        );
        // Counted as ANALYZE whatever the option's value: fails closed.
        assert_eq!(
            denied("EXPLAIN (ANALYZE false) DELETE FROM t"),
            V::ExplainAnalyzeWrite
        );
        assert_eq!(
            denied("EXPLAIN ANALYZE WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x"),
            V::WritableCte
        );
        assert_eq!(
            denied("EXPLAIN ANALYZE SELECT nextval('s')"),
            function("nextval")
        );
        assert_eq!(
            denied("EXPLAIN ANALYZE SELECT * INTO x FROM t"),
            V::SelectInto
        );
        assert_eq!(
            denied("EXPLAIN ANALYZE WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x"),
            V::ExplainAnalyzeWrite
        );
        assert!(matches!(
            denied("EXPLAIN ANALYZE EXPLAIN SELECT 1"),
            V::Unparsable(_)
        ));
    }

    #[test]
    fn functions_off_the_allowlist_are_denied_wherever_they_are() {
        let cases = [
            ("SELECT nextval('s')", "nextval"),
            ("SELECT 1 WHERE nextval('s') > 0", "nextval"),
            (
                "SELECT * FROM t WHERE id IN (SELECT nextval('s'))",
                "nextval",
            ),
            ("SELECT set_config('a','b',false)", "set_config"),
            ("SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
            ("SELECT pg_try_advisory_lock(1)", "pg_try_advisory_lock"),
            ("SELECT pg_advisory_xact_lock(1)", "pg_advisory_xact_lock"),
            ("SELECT pg_advisory_unlock_all()", "pg_advisory_unlock_all"),
            ("SELECT * FROM dblink('x','y') AS t(a int)", "dblink"),
            ("SELECT dblink_exec('x', 'DELETE FROM t')", "dblink_exec"),
            ("SELECT pg_sleep(10)", "pg_sleep"),
            ("SELECT pg_sleep_for('1 minute')", "pg_sleep_for"),
            ("SELECT setval('s', 1)", "setval"),
            ("SELECT currval('s')", "currval"),
            ("SELECT lastval()", "lastval"),
            ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
            (
                "SELECT pg_read_binary_file('/etc/passwd')",
                "pg_read_binary_file",
            ),
            ("SELECT * FROM pg_ls_dir('.')", "pg_ls_dir"),
            ("SELECT lo_import('/etc/passwd')", "lo_import"),
            ("SELECT lo_export(1, '/tmp/x')", "lo_export"),
            ("SELECT lo_unlink(1)", "lo_unlink"),
            ("SELECT pg_terminate_backend(1)", "pg_terminate_backend"),
            ("SELECT pg_cancel_backend(1)", "pg_cancel_backend"),
            ("SELECT pg_reload_conf()", "pg_reload_conf"),
            ("SELECT pg_notify('c', 'x')", "pg_notify"),
            ("SELECT txid_current()", "txid_current"),
            ("SELECT pg_current_xact_id()", "pg_current_xact_id"),
            (
                "SELECT pg_create_logical_replication_slot('s', 'x')",
                "pg_create_logical_replication_slot",
            ),
            (
                "SELECT pg_create_restore_point('x')",
                "pg_create_restore_point",
            ),
            ("SELECT random()", "random"),
            ("SELECT setseed(0.5)", "setseed"),
            (
                "SELECT query_to_xml('SELECT nextval(''s'')', true, true, '')",
                "query_to_xml",
            ),
            ("SELECT * FROM ts_stat('SELECT v FROM t')", "ts_stat"),
            ("SELECT ts_rewrite('a'::tsquery, 'SELECT 1')", "ts_rewrite"),
            ("SELECT my_unknown_function()", "my_unknown_function"),
            ("SELECT public.myfunc()", "public.myfunc"),
            // Everywhere in a query the visitor reaches.
            ("SELECT CASE WHEN true THEN nextval('s') END", "nextval"),
            ("SELECT COALESCE(nextval('s'), 1)", "nextval"),
            (
                "SELECT count(*) FILTER (WHERE nextval('s') > 0) FROM t",
                "nextval",
            ),
            (
                "SELECT row_number() OVER (PARTITION BY nextval('s')) FROM t",
                "nextval",
            ),
            ("SELECT a FROM t ORDER BY nextval('s')", "nextval"),
            ("SELECT a FROM t GROUP BY nextval('s')", "nextval"),
            (
                "SELECT a FROM t GROUP BY a HAVING max(nextval('s')) > 0",
                "nextval",
            ),
            ("SELECT a FROM t LIMIT nextval('s')", "nextval"),
            ("SELECT a FROM t OFFSET nextval('s')", "nextval"),
            ("SELECT 1 UNION SELECT nextval('s')", "nextval"),
            ("SELECT 1 EXCEPT SELECT 1 WHERE nextval('s') > 0", "nextval"),
            ("VALUES (nextval('s'))", "nextval"),
            ("SELECT * FROM t JOIN u ON nextval('s') > 0", "nextval"),
            (
                "SELECT * FROM t WHERE EXISTS (SELECT nextval('s'))",
                "nextval",
            ),
            ("SELECT ARRAY(SELECT nextval('s'))", "nextval"),
            ("SELECT DISTINCT ON (nextval('s')) a FROM t", "nextval"),
            (
                "SELECT * FROM t WINDOW w AS (ORDER BY nextval('s'))",
                "nextval",
            ),
            ("SELECT lower(upper(nextval('s')::text))", "nextval"),
            ("SELECT CAST(nextval('s') AS int)", "nextval"),
            ("SELECT nextval('s')::int", "nextval"),
            ("SELECT extract(epoch FROM pg_sleep(1))", "pg_sleep"),
            (
                "SELECT substring(pg_read_file('x') FROM 1 FOR 2)",
                "pg_read_file",
            ),
            (
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY nextval('s'))",
                "nextval",
            ),
            (
                "SELECT array_agg(a ORDER BY nextval('s')) FROM t",
                "nextval",
            ),
            (
                "SELECT * FROM t WHERE a = ANY(ARRAY[nextval('s')])",
                "nextval",
            ),
            ("SELECT (SELECT (SELECT nextval('s')))", "nextval"),
            (
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT nextval('s') FROM r) \
                 SELECT * FROM r",
                "nextval",
            ),
            // Table functions in FROM, lateral or not.
            ("SELECT * FROM nextval('s')", "nextval"),
            ("SELECT * FROM LATERAL nextval('s')", "nextval"),
            (
                "SELECT 1 FROM t JOIN LATERAL nextval('s') n ON true",
                "nextval",
            ),
            (
                "SELECT * FROM t, LATERAL (SELECT nextval('s')) s",
                "nextval",
            ),
            ("SELECT * FROM generate_series(1, nextval('s'))", "nextval"),
            ("SELECT * FROM unnest(ARRAY[nextval('s')])", "nextval"),
            ("SELECT * FROM public.my_srf()", "public.my_srf"),
            // Quoting keeps case: "NEXTVAL" is not nextval, and is not allowed either.
            ("SELECT \"nextval\"('s')", "\"nextval\""),
            ("SELECT \"NEXTVAL\"('s')", "\"NEXTVAL\""),
            ("SELECT NEXTVAL('s')", "NEXTVAL"),
            ("SELECT pg_catalog.nextval('s')", "pg_catalog.nextval"),
            // Quoted or qualified spellings of grammar forms are ordinary calls.
            ("SELECT \"coalesce\"(1, 2)", "\"coalesce\""),
            ("SELECT pg_catalog.coalesce(1, 2)", "pg_catalog.coalesce"),
            ("SELECT \"row\"(1)", "\"row\""),
            // A dot inside a quoted name is not a schema qualification.
            ("SELECT \"pg_catalog.lower\"('a')", "\"pg_catalog.lower\""),
            ("SELECT other.lower('a')", "other.lower"),
            ("SELECT db.pg_catalog.lower('a')", "db.pg_catalog.lower"),
            // DECLARE of a query with a bad function.
            ("DECLARE c CURSOR FOR SELECT nextval('s')", "nextval"),
        ];
        for (sql, name) in cases {
            assert_eq!(denied(sql), function(name), "{sql}");
        }
    }

    #[test]
    fn reads_are_allowed() {
        for sql in [
            "SELECT 1",
            "",
            ";",
            "SELECT * FROM t WHERE id = $1",
            "SELECT count(*), lower(name) FROM t GROUP BY 2",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) \
             SELECT * FROM r",
            "SELECT * FROM t JOIN LATERAL (SELECT 1) s ON true",
            "SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.a = t.a) s",
            "SELECT * FROM t1 NATURAL JOIN t2 CROSS JOIN t3 LEFT JOIN t4 USING (a)",
            "SELECT 1 UNION SELECT 2 INTERSECT SELECT 3 EXCEPT SELECT 4",
            "VALUES (1, 'a'), (2, 'b')",
            "SELECT * FROM (VALUES (1)) v(a)",
            "SELECT * FROM generate_series(1,3)",
            "SELECT * FROM generate_series(1, 3) WITH ORDINALITY AS g(n, i)",
            "SELECT * FROM pg_catalog.generate_series(1, 3)",
            "SELECT * FROM unnest(ARRAY[1, 2]) WITH ORDINALITY",
            "SELECT * FROM jsonb_each('{}'::jsonb)",
            "SELECT pg_catalog.lower('A')",
            "SELECT \"pg_catalog\".\"lower\"('A')",
            "SELECT \"lower\"('A')",
            "SELECT LOWER('A'), Upper('b')",
            "SELECT current_user, session_user, current_role, current_schema, user",
            "SELECT current_date, current_time, current_timestamp, localtime, localtimestamp",
            "SELECT current_catalog, current_schema(), current_database(), version()",
            "SELECT current_setting('search_path'), pg_backend_pid()",
            "SELECT now(), clock_timestamp(), date_trunc('day', now()), age(now())",
            "SELECT extract(epoch FROM now()), date_part('year', now())",
            "SELECT substring('abc' FROM 1 FOR 2), position('a' IN 'abc')",
            "SELECT trim(both 'x' FROM 'xax'), overlay('abc' PLACING 'x' FROM 2)",
            "SELECT ceil(1.5), floor(1.5), round(1.5), abs(-1), mod(5, 2)",
            "SELECT CAST('1' AS int), '1'::int, 'a' COLLATE \"C\", date '2020-01-01'",
            "SELECT interval '1 day', now() AT TIME ZONE 'UTC'",
            "SELECT COALESCE(NULL, 1), NULLIF(1, 1), GREATEST(1, 2), LEAST(1, 2)",
            "SELECT ARRAY[1, 2], ARRAY(SELECT 1), ROW(1, 2), ROW(1, 2) = ROW(1, 2)",
            "SELECT CASE WHEN a > 0 THEN 'p' ELSE 'n' END FROM t",
            "SELECT row_number() OVER (ORDER BY a), lag(a) OVER w FROM t WINDOW w AS (ORDER BY a)",
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a) FROM t",
            "SELECT array_agg(a ORDER BY b), string_agg(DISTINCT a, ',') FROM t",
            "SELECT count(*) FILTER (WHERE a > 0) FROM t",
            "SELECT a FROM t GROUP BY ROLLUP (a), CUBE (b), GROUPING SETS ((a), ())",
            "SELECT jsonb_build_object('a', 1) -> 'a', '{}'::jsonb @> '{}'",
            "SELECT to_tsvector('a') @@ to_tsquery('a')",
            "SELECT gen_random_uuid(), md5('a'), encode('a'::bytea, 'hex')",
            "SELECT pg_typeof(1), format_type(23, NULL)",
            "SELECT a FROM t WHERE a IN (1, 2) AND b BETWEEN 1 AND 2 AND c LIKE 'x%'",
            "SELECT a FROM t WHERE b IS NULL OR c IS DISTINCT FROM d",
            "SELECT a FROM t ORDER BY a DESC NULLS LAST LIMIT 10 OFFSET 5",
            "SELECT a FROM t FETCH FIRST 1 ROWS ONLY",
            "SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b",
            "SELECT * FROM t TABLESAMPLE SYSTEM (10)",
            "SELECT 1 OPERATOR(pg_catalog.+) 2",
            "SELECT 1 OPERATOR(+) 2",
            "SELECT * FROM t ORDER BY a USING <",
            "SELECT * FROM xmltable('/x' PASSING '<x/>' COLUMNS a int)",
            "SELECT * FROM json_table('[]', '$[*]' COLUMNS (a int PATH '$'))",
            "SELECT (t).a FROM t",
            "SELECT $1::text, $2",
            "SHOW search_path",
            "SHOW ALL",
            "SHOW TRANSACTION ISOLATION LEVEL",
        ] {
            allowed(sql);
        }
    }

    #[test]
    fn transactions_and_cursors() {
        for sql in [
            "BEGIN",
            "BEGIN READ ONLY",
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY",
            "BEGIN TRANSACTION",
            "BEGIN WORK",
            "START TRANSACTION",
            "START TRANSACTION READ ONLY",
            "COMMIT",
            "COMMIT AND CHAIN",
            "END",
            "ROLLBACK",
            "ABORT",
            "SAVEPOINT a",
            "RELEASE SAVEPOINT a",
            "RELEASE a",
            "ROLLBACK TO SAVEPOINT a",
            "ROLLBACK TO a",
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "SET TRANSACTION READ ONLY",
            "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "BEGIN; SELECT 1; COMMIT",
            "DECLARE c CURSOR FOR SELECT * FROM t",
            "DECLARE c BINARY INSENSITIVE NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1",
            "FETCH NEXT FROM c",
            "FETCH ALL IN c",
            "CLOSE c",
            "CLOSE ALL",
        ] {
            allowed(sql);
        }
        for sql in [
            "BEGIN READ WRITE",
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE",
            "START TRANSACTION READ WRITE",
            "SET TRANSACTION READ WRITE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "BEGIN; SET TRANSACTION READ WRITE; COMMIT",
        ] {
            assert!(matches!(denied(sql), V::UndoesReadOnly(_)), "{sql}");
        }
        assert_eq!(
            denied("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
            V::NotARead("DECLARE ... WITH HOLD".into())
        );
        assert_eq!(
            denied("DECLARE c CURSOR FOR SELECT * INTO x FROM t"),
            V::SelectInto
        );
    }

    #[test]
    fn set_of_ordinary_settings_is_allowed() {
        for sql in [
            "SET search_path = public",
            "SET search_path TO \"$user\", public",
            "SET search_path = pg_catalog, public",
            "SET search_path TO DEFAULT",
            "SET statement_timeout = '5s'",
            "SET LOCAL statement_timeout = 5000",
            "SET SESSION work_mem TO '64MB'",
            "SET TIME ZONE 'UTC'",
            "SET TIME ZONE LOCAL",
            "SET TIME ZONE -8",
            "SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE",
            "SET timezone = 'Europe/Paris'",
            "SET extra_float_digits = -1",
            "SET application_name = 'x'",
            "SET datestyle = ISO, MDY",
            "SET enable_seqscan = off",
            "SET standard_conforming_strings = on",
            "SET client_encoding = 'UTF8'",
            "SET client_encoding TO 'utf-8'",
            "SET client_encoding TO DEFAULT",
            "SET NAMES 'UTF8'",
            "SET NAMES DEFAULT",
            "SET app.tenant = '42'",
            "RESET search_path",
            "RESET statement_timeout",
            "RESET ROLE",
            "RESET SESSION AUTHORIZATION",
            "RESET client_encoding",
        ] {
            allowed(sql);
        }
    }

    #[test]
    fn statements_undoing_read_only_are_denied() {
        for sql in [
            "SET default_transaction_read_only = off",
            "SET default_transaction_read_only = on",
            "SET default_transaction_read_only TO false",
            "SET default_transaction_read_only = 0",
            "SET default_transaction_read_only TO DEFAULT",
            "SET SESSION default_transaction_read_only TO off",
            "SET LOCAL default_transaction_read_only = off",
            "SET DEFAULT_TRANSACTION_READ_ONLY = off",
            "SET \"Default_Transaction_Read_Only\" = off",
            "SET transaction_read_only = off",
            "SET LOCAL transaction_read_only TO off",
            "SET x.default_transaction_read_only = off",
            "RESET default_transaction_read_only",
            "RESET transaction_read_only",
            "RESET ALL",
        ] {
            assert!(matches!(denied(sql), V::UndoesReadOnly(_)), "{sql}");
        }
        assert_eq!(
            denied("SET default_transaction_read_only = off"),
            V::UndoesReadOnly("SET default_transaction_read_only".into())
        );
        assert_eq!(
            denied("SELECT set_config('default_transaction_read_only', 'off', false)"),
            function("set_config")
        );
    }

    #[test]
    fn identity_changes_are_denied() {
        for sql in [
            "SET ROLE admin",
            "SET ROLE NONE",
            "SET LOCAL ROLE admin",
            "SET role = admin",
            "SET SESSION AUTHORIZATION admin",
            "SET SESSION AUTHORIZATION DEFAULT",
            "SET session_authorization = admin",
        ] {
            assert!(matches!(denied(sql), V::ChangesIdentity(_)), "{sql}");
        }
    }

    #[test]
    fn settings_that_change_how_sql_is_read_are_protected() {
        for sql in [
            "SET standard_conforming_strings = off",
            "SET standard_conforming_strings TO DEFAULT",
            "RESET standard_conforming_strings",
            "SET client_encoding = 'SJIS'",
            "SET client_encoding TO 'BIG5'",
            "SET NAMES 'GBK'",
            "SET search_path = public, pg_catalog",
            "SET search_path = 'public, pg_catalog'",
            "SET search_path = myschema, \"PG_CATALOG\"",
        ] {
            assert!(matches!(denied(sql), V::ProtectedSetting(_)), "{sql}");
        }
    }

    #[test]
    fn set_values_must_be_plain() {
        assert!(matches!(denied("SET x = nextval('s')"), V::NotARead(_)));
        assert!(matches!(denied("SET x = (SELECT 1)"), V::NotARead(_)));
        assert!(matches!(denied("SET TIME ZONE now()"), V::NotARead(_)));
        assert!(matches!(denied("SET GLOBAL x = 1"), V::NotARead(_)));
    }

    #[test]
    fn every_statement_must_pass() {
        assert_eq!(denied("SELECT 1; DELETE FROM t"), V::Write("DELETE".into()));
        assert_eq!(denied("DELETE FROM t; SELECT 1"), V::Write("DELETE".into()));
        assert_eq!(
            denied("SELECT 1; SET default_transaction_read_only = off; SELECT 2"),
            V::UndoesReadOnly("SET default_transaction_read_only".into())
        );
        allowed("SELECT 1; SELECT 2; SHOW search_path");
    }

    #[test]
    fn operators_from_other_schemas_are_denied() {
        assert_eq!(
            denied("SELECT 1 OPERATOR(public.+) 2"),
            V::Operator("OPERATOR(public.+)".into())
        );
        assert!(matches!(
            denied("SELECT * FROM t WHERE a OPERATOR(evil.=) ANY(ARRAY[1])"),
            V::Operator(_) | V::Unparsable(_)
        ));
    }

    #[test]
    fn extra_functions() {
        let functions = FunctionAllowlist::builtin().with_extra(["public.myfunc", "Other_Fn"]);
        assert_eq!(check_sql("SELECT public.myfunc()", &functions), Ok(()));
        assert_eq!(check_sql("SELECT PUBLIC.MYFUNC()", &functions), Ok(()));
        assert_eq!(
            check_sql("SELECT * FROM public.myfunc()", &functions),
            Ok(())
        );
        // An unqualified call may resolve elsewhere: the qualified entry does not cover it.
        assert_eq!(
            check_sql("SELECT myfunc()", &functions),
            Err(function("myfunc"))
        );
        assert_eq!(
            check_sql("SELECT other.myfunc()", &functions),
            Err(function("other.myfunc"))
        );
        // Entries fold like unquoted identifiers.
        assert_eq!(check_sql("SELECT other_fn(1)", &functions), Ok(()));
        assert_eq!(
            check_sql("SELECT pg_catalog.other_fn(1)", &functions),
            Ok(())
        );
        assert_eq!(
            check_sql("SELECT \"Other_Fn\"(1)", &functions),
            Err(function("\"Other_Fn\""))
        );
        // The built-in list still applies, and nothing else was let in.
        assert_eq!(check_sql("SELECT lower('a')", &functions), Ok(()));
        assert_eq!(
            check_sql("SELECT nextval('s')", &functions),
            Err(function("nextval"))
        );
        // Malformed entries are ignored rather than guessed at.
        let functions = FunctionAllowlist::builtin().with_extra(["", "public.", ".x", "a..b"]);
        assert_eq!(functions, FunctionAllowlist::builtin());
    }

    #[test]
    fn allows_by_name() {
        let parse_name = |sql: &str| -> ObjectName {
            let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses");
            let Some(Statement::Query(query)) = statements.first() else {
                panic!("not a query: {sql}");
            };
            let SetExpr::Select(select) = query.body.as_ref() else {
                panic!("not a select: {sql}");
            };
            let Some(sqlparser::ast::SelectItem::UnnamedExpr(Expr::Function(function))) =
                select.projection.first()
            else {
                panic!("not a function call: {sql}");
            };
            function.name.clone()
        };
        let functions = FunctionAllowlist::builtin();
        assert!(functions.allows(&parse_name("SELECT lower('a')")));
        assert!(functions.allows(&parse_name("SELECT pg_catalog.lower('a')")));
        assert!(!functions.allows(&parse_name("SELECT nextval('a')")));
        assert!(!functions.allows(&parse_name("SELECT public.lower('a')")));
    }

    #[test]
    fn builtin_list_is_sorted_unique_and_has_nothing_dangerous() {
        assert!(
            BUILTIN_FUNCTIONS.windows(2).all(|pair| pair[0] < pair[1]),
            "BUILTIN_FUNCTIONS must be sorted and unique (binary search)"
        );
        for name in BUILTIN_FUNCTIONS.iter().chain(SYNTAX_FORMS) {
            assert_eq!(*name, name.to_ascii_lowercase());
            for dangerous in [
                "nextval",
                "setval",
                "currval",
                "lastval",
                "set_config",
                "pg_advisory",
                "pg_try_advisory",
                "dblink",
                "pg_sleep",
                "pg_read",
                "pg_ls_",
                "pg_stat_file",
                "lo_",
                "pg_terminate",
                "pg_cancel",
                "pg_reload",
                "pg_notify",
                "txid",
                "xact_id",
                "pg_create",
                "random",
                "setseed",
                "query_to",
                "cursor_to",
                "table_to",
                "ts_stat",
                "ts_rewrite",
            ] {
                assert!(!name.starts_with(dangerous), "{name} is on the safe list");
            }
        }
    }

    #[test]
    fn statement_kinds_name_the_variant() {
        let kind = |sql: &str| {
            let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses");
            statement_kind(&statements[0])
        };
        assert_eq!(kind("CREATE TABLE x (a int)"), "CREATE TABLE");
        assert_eq!(kind("INSERT INTO t VALUES (1)"), "INSERT");
        assert_eq!(kind("LISTEN x"), "LISTEN");
        assert_eq!(kind("CALL p()"), "CALL");
        assert_eq!(kind("DROP FUNCTION f"), "DROP FUNCTION");
    }

    #[test]
    fn deeply_nested_input_is_handled() {
        // Within the parser's recursion limit (about 23 nested subqueries, 47 nested calls).
        let nested_subqueries = format!("{}nextval('s'){}", "SELECT (".repeat(20), ")".repeat(20));
        assert_eq!(denied(&nested_subqueries), function("nextval"));
        let nested_calls = format!("SELECT {}1{}", "lower(".repeat(40), ")".repeat(40));
        allowed(&nested_calls);
        // Left-deep chains are not counted by the parser's limit; the visitor still reaches
        // the far end (sqlparser's derived Visit grows the stack as needed).
        let long_chain = format!("SELECT 1{} + nextval('s')", " + 1".repeat(2000));
        assert_eq!(denied(&long_chain), function("nextval"));
        let long_union = format!(
            "SELECT 1{} UNION SELECT nextval('s')",
            " UNION SELECT 1".repeat(2000)
        );
        assert_eq!(denied(&long_union), function("nextval"));
        // Beyond it: a parse error, so denied.
        let too_deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(matches!(denied(&too_deep), V::Unparsable(_)));
    }

    #[test]
    fn comment_and_quote_tricks_are_parsed_like_postgresql() {
        // PostgreSQL ends `--` comments at \r as well as \n; so does sqlparser's Postgres
        // dialect, so the DELETE is seen.
        assert_eq!(
            denied("SELECT 1 -- x\r; DELETE FROM t"),
            V::Write("DELETE".into())
        );
        // Nested block comments: PostgreSQL nests them, so this is one SELECT...
        allowed("SELECT 1 /* /* */ ; DELETE FROM t; /* */ */");
        // ...and an unbalanced nesting hides nothing from either.
        assert!(verdict("SELECT 1 /* /* */ ; DELETE FROM t; */").is_ok());
        allowed("SELECT $$'; DELETE FROM t; $$");
        allowed("SELECT E'a\\'; DELETE FROM t; --'");
        // With standard_conforming_strings on (enforced above) this is one string concatenation
        // for both parsers.
        allowed("SELECT 'a\\' || '; DELETE FROM t; --'");
    }

    #[test]
    fn violations_read_well() {
        assert_eq!(
            V::Function("nextval".into()).to_string(),
            "read-only policy: function nextval is not allowed"
        );
        assert_eq!(
            V::Write("INSERT".into()).to_string(),
            "read-only policy: INSERT is a write"
        );
        assert_eq!(
            denied("SELECT (").to_string().split(':').next(),
            Some("read-only policy")
        );
    }
}
