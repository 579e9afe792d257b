//! The Prometheus alert rules in `deploy/prometheus/alerts.yaml` against what pgward exposes:
//! the file is a well-formed PrometheusRule, every expression is valid PromQL, and every
//! `pgward_*` metric an expression names is served by `/metrics` of a fresh pgward — so a renamed
//! metric cannot silently turn an alert into one that never fires.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use pgward::admin_http::{self, Readiness};
use pgward::metrics::{AuthFailure, Metrics, pool_label};
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yaml");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

/// An alerting rule; unknown fields are refused so a misspelt key (`annotation`, `label`) fails
/// here rather than being ignored by Prometheus.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// A rule's `for`: a Prometheus duration, where (unlike a PromQL range) zero is allowed and
/// means the alert fires on the first evaluation that matches.
fn is_rule_duration(s: &str) -> bool {
    let number = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    (!number.is_empty() && number.bytes().all(|b| b == b'0'))
        || promql_parser::util::parse_duration(s).is_ok()
}

fn load() -> PrometheusRule {
    let text = std::fs::read_to_string(ALERTS).expect("alerts.yaml is readable");
    serde_norway::from_str(&text).expect("alerts.yaml is a PrometheusRule")
}

fn rules(file: &PrometheusRule) -> impl Iterator<Item = &Rule> {
    file.spec.groups.iter().flat_map(|g| g.rules.iter())
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every identifier starting with `pgward_` in `expr` (a plain scan of the text).
fn scanned_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    let mut prev: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("pgward_") && !prev.is_some_and(is_ident) {
            let end = rest.find(|c| !is_ident(c)).unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
            prev = rest[..end].chars().last();
            rest = &rest[end..];
        } else {
            prev = Some(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    names
}

/// The metric names of every selector in a parsed expression.
struct Selectors(BTreeSet<String>);

impl ExprVisitor for Selectors {
    type Error = ();

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        let vs = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(name) = vs.and_then(|vs| vs.name.clone()) {
            self.0.insert(name);
        }
        Ok(true)
    }
}

fn parsed_names(rule: &Rule) -> BTreeSet<String> {
    let expr = promql_parser::parser::parse(&rule.expr)
        .unwrap_or_else(|e| panic!("{}: expr is not valid PromQL: {e}", rule.alert));
    let mut v = Selectors(BTreeSet::new());
    walk_expr(&mut v, &expr).expect("the visitor does not fail");
    v.0
}

#[test]
fn alert_rules_are_a_well_formed_prometheus_rule() {
    let file = load();
    assert_eq!(file.api_version, "monitoring.coreos.com/v1");
    assert_eq!(file.kind, "PrometheusRule");
    assert_eq!(file.metadata.name, "pgward");
    assert!(!file.spec.groups.is_empty());

    let mut seen = BTreeSet::new();
    for group in &file.spec.groups {
        assert!(!group.name.is_empty());
        assert!(!group.rules.is_empty(), "group {} has no rules", group.name);
    }
    for rule in rules(&file) {
        assert!(
            seen.insert(rule.alert.clone()),
            "duplicate alert {}",
            rule.alert
        );
        assert!(
            rule.alert.starts_with("Pgward"),
            "{}: alerts are named Pgward…",
            rule.alert
        );
        assert!(
            is_rule_duration(&rule.for_),
            "{}: `for: {}` is not a duration",
            rule.alert,
            rule.for_
        );
        let severity = rule.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("info" | "warning" | "critical")),
            "{}: severity {severity:?}",
            rule.alert
        );
        for key in ["summary", "description"] {
            assert!(
                rule.annotations
                    .get(key)
                    .is_some_and(|s| !s.trim().is_empty()),
                "{}: no {key} annotation",
                rule.alert
            );
        }
        // The scan below finds exactly the metrics the PromQL parser sees: nothing is missed
        // because of how an expression is written.
        let parsed: BTreeSet<String> = parsed_names(rule)
            .into_iter()
            .filter(|n| n.starts_with("pgward_"))
            .collect();
        assert_eq!(parsed, scanned_names(&rule.expr), "{}", rule.alert);
        assert!(!parsed.is_empty(), "{}: uses no pgward metric", rule.alert);
    }

    // The alerts the issue asks for, by the metric each watches.
    let watched = |metric: &str| {
        rules(&file)
            .filter(|r| scanned_names(&r.expr).contains(metric))
            .map(|r| r.for_.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(watched("pgward_client_connections_max"), ["5m"]);
    assert_eq!(watched("pgward_pool_utilization_ratio"), ["5m"]);
    assert!(!watched("pgward_pool_checkout_timeouts_total").is_empty());
    assert!(!watched("pgward_auth_failures_total").is_empty());
    assert!(!watched("pgward_policy_decisions_total").is_empty());
    assert!(!watched("pgward_audit_events_dropped_total").is_empty());
}

#[test]
fn the_scan_finds_names_and_only_names() {
    let names = scanned_names(
        r#"sum without (x) (rate(pgward_a_total{l="v"}[5m])) / pgward_b:ratio and not_pgward_c"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["pgward_a_total", "pgward_b:ratio"]
    );
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: pgward\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the admin endpoint answers")
        .unwrap();
    String::from_utf8(out).expect("a text response")
}

/// Families and sample names of a Prometheus text exposition.
struct Exposition {
    /// Family name → type (`counter`, `gauge`, `histogram`, …).
    types: BTreeMap<String, String>,
    samples: BTreeSet<String>,
}

impl Exposition {
    fn parse(body: &str) -> Exposition {
        let mut types = BTreeMap::new();
        let mut samples = BTreeSet::new();
        for line in body.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let mut parts = t.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    types.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(|c: char| !is_ident(c)).unwrap_or(line.len());
                samples.insert(line[..end].to_owned());
            }
        }
        Exposition { types, samples }
    }

    /// Whether `name` (as written in a rule) is served: as a sample name, and belonging to a
    /// family of that name or, for `_bucket`/`_sum`/`_count`, to a histogram or summary.
    fn serves(&self, name: &str) -> bool {
        if !self.samples.contains(name) {
            return false;
        }
        if self.types.contains_key(name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|family| {
                matches!(
                    self.types.get(family).map(String::as_str),
                    Some("histogram" | "summary")
                ) && (*suffix != "_bucket" || self.types[family] == "histogram")
            })
        })
    }
}

#[tokio::test]
async fn every_metric_in_the_alerts_is_exposed() {
    let metrics = Metrics::new();
    // Labelled families only have series once a handle exists; pgward creates these at startup
    // for every configured pool and policy.
    let pool = metrics.pool(&pool_label("appdb", "app_rw", false));
    pool.set_server_connections(1, 1, 0, 0, 20);
    let _policy = metrics.policy("app");
    metrics.set_client_connections_max(5000);
    let _client = metrics.client_connection();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ready: Arc<dyn Readiness> = Arc::new(|| Ok(()));
    let server = tokio::spawn(admin_http::serve(
        listener,
        metrics.registry().clone(),
        ready,
        async move {
            let _ = stopped.await;
        },
    ));

    let response = get(addr, "/metrics").await;
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let exposed = Exposition::parse(body);

    let file = load();
    let mut missing = Vec::new();
    for rule in rules(&file) {
        for name in scanned_names(&rule.expr) {
            if !exposed.serves(&name) {
                missing.push(format!("{}: {name}", rule.alert));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics used by alerts but not exposed: {missing:#?}\n\nexposed: {:#?}",
        exposed.samples
    );

    // And the metric families the issue lists, whether or not an alert uses them yet.
    for family in [
        "pgward_client_connections",
        "pgward_client_connections_max",
        "pgward_server_connections",
        "pgward_pool_size_max",
        "pgward_pool_utilization_ratio",
        "pgward_pool_checkout_wait_seconds",
        "pgward_pool_checkout_timeouts_total",
        "pgward_transactions_total",
        "pgward_queries_total",
        "pgward_query_duration_seconds",
        "pgward_auth_failures_total",
        "pgward_tls_handshake_failures_total",
        "pgward_policy_decisions_total",
        "pgward_audit_queue_depth",
        "pgward_audit_events_written_total",
        "pgward_audit_events_dropped_total",
        "pgward_config_reloads_total",
        "pgward_build_info",
    ] {
        assert!(
            exposed.types.contains_key(family),
            "{family} is not exposed"
        );
    }
    // A reason label value pgward uses is there before any failure.
    assert!(body.contains(&format!(
        "pgward_auth_failures_total{{reason=\"{}\"}} 0",
        AuthFailure::Password.as_str()
    )));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the admin endpoint stops")
        .unwrap();
}
