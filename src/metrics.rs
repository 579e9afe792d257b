//! Prometheus metrics: the one `Registry` pgward exposes, every metric family in it, and typed
//! handles with their label values resolved once, so the hot path only touches atomics.
//!
//! # Why handles
//!
//! A `*Vec::with_label_values` lookup hashes the labels and takes a lock (~400 ns under
//! contention); a resolved counter is one atomic add (~40 ns). So label values are resolved when a
//! pool or policy is created ([`Metrics::pool`], [`Metrics::policy`]) or, for fixed label sets
//! (client states, auth failure reasons, reload results), once in [`Metrics::new`]. Nothing here
//! is called with a label value taken from a client: label values are config names (pool and
//! policy names) or our own enums, so cardinality is bounded by the config.
//!
//! # The `pool` label
//!
//! A pool is keyed by (database, backend role, read-only): one label `pool` carries the whole key
//! as `database/backend_user`, with a `/ro` suffix for read-only pools ([`pool_label`]). One label
//! keeps a pool one series (per state) in dashboards and alerts, and matches the metric names the
//! alert rules in `deploy/prometheus/alerts.yaml` use; `label_replace` can split it if needed.
//!
//! # Audit figures
//!
//! The audit writer keeps its own atomics. Instead of copying them into gauges and counters (a
//! periodic task, values stale between copies, counters emulated with reset+add), a collector
//! calls a source closure at scrape time ([`Metrics::set_audit_source`]): the scrape shows exactly
//! what the audit writer counted, and counters stay counters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Upper bounds for the checkout wait histogram: a warm pool answers in microseconds, a saturated
/// one in up to the checkout timeout (seconds).
const CHECKOUT_WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds for the query duration histogram: OLTP statements in milliseconds up to reports
/// in a minute.
const QUERY_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The value of the `pool` label for a pool keyed by (database, backend role, read-only).
pub fn pool_label(database: &str, backend_user: &str, read_only: bool) -> String {
    if read_only {
        format!("{database}/{backend_user}/ro")
    } else {
        format!("{database}/{backend_user}")
    }
}

/// Where a client connection is in its life (`pgward_client_connections{state}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// Accepted, not yet authenticated (startup, TLS, SCRAM/certificate).
    Authenticating,
    /// Authenticated, holding no server connection.
    Idle,
    /// Waiting for a server connection from a pool.
    Waiting,
    /// Holding a server connection (in a transaction, or a session-mode client).
    Active,
}

impl ClientState {
    const ALL: [ClientState; 4] = [
        ClientState::Authenticating,
        ClientState::Idle,
        ClientState::Waiting,
        ClientState::Active,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Authenticating => "authenticating",
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a client failed to authenticate (`pgward_auth_failures_total{reason}`). A fixed set, so a
/// client cannot create series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// Wrong password or unknown user. One reason for both, as clients get one message for
    /// both: the metric does not undo what the mock SCRAM exchange hides.
    Password,
    /// Missing, expired or wrong client certificate (identity mismatch).
    Certificate,
    /// Authenticated, but not allowed this database, auth method or connection.
    NotAllowed,
    /// TLS was required and the client did not use it.
    TlsRequired,
    /// A malformed or out-of-order authentication exchange.
    Protocol,
    /// The client did not finish authenticating in time.
    Timeout,
}

impl AuthFailure {
    const ALL: [AuthFailure; 6] = [
        AuthFailure::Password,
        AuthFailure::Certificate,
        AuthFailure::NotAllowed,
        AuthFailure::TlsRequired,
        AuthFailure::Protocol,
        AuthFailure::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Password => "password",
            AuthFailure::Certificate => "certificate",
            AuthFailure::NotAllowed => "not_allowed",
            AuthFailure::TlsRequired => "tls_required",
            AuthFailure::Protocol => "protocol",
            AuthFailure::Timeout => "timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the audit writer reports at scrape time (see [`Metrics::set_audit_source`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Events queued, not yet written.
    pub queue_depth: u64,
    /// Events written to the sink since start.
    pub written: u64,
    /// Events dropped (queue full, sink failed) since start.
    pub dropped: u64,
}

type AuditSource = Arc<dyn Fn() -> AuditStats + Send + Sync>;

/// All of pgward's metrics, registered into a registry of their own (never the global default
/// one, so tests and embedders get a clean set per `Metrics`).
pub struct Metrics {
    registry: Registry,
    clients: Arc<ClientGauges>,
    client_connections_max: IntGauge,
    client_rejections: IntCounter,
    server_connections: IntGaugeVec,
    pool_size_max: IntGaugeVec,
    pool_utilization: GaugeVec,
    checkout_wait: HistogramVec,
    checkout_timeouts: IntCounterVec,
    server_replacements: IntCounterVec,
    transactions: IntCounterVec,
    queries: IntCounterVec,
    query_duration: HistogramVec,
    auth_failures: [IntCounter; AuthFailure::ALL.len()],
    tls_handshake_failures: IntCounter,
    policy_decisions: IntCounterVec,
    audit: AuditCollector,
    config_reload_ok: IntCounter,
    config_reload_error: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers `c` and returns it. Names and help texts are constants of this module, so a failure
/// is a bug here (a duplicate or malformed name), caught by the tests, never caused by input.
fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are constants and unique");
    c
}

/// Unwraps a metric constructor's result; as for [`register`], an error is a bug in this module.
fn opts_ok<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric names and labels are constants")
}

impl Metrics {
    /// Creates every metric family in a new registry. Fixed label sets (client states, auth
    /// failure reasons, reload results) get their series at once, so they are scraped as 0
    /// before anything happens; pools and policies get theirs from [`Metrics::pool`] and
    /// [`Metrics::policy`].
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;

        let client_connections = register(
            r,
            opts_ok(IntGaugeVec::new(
                Opts::new("pgward_client_connections", "Client connections by state."),
                &["state"],
            )),
        );
        let clients = Arc::new(ClientGauges {
            by_state: ClientState::ALL.map(|s| client_connections.with_label_values(&[s.as_str()])),
        });
        let client_connections_max = register(
            r,
            opts_ok(IntGauge::new(
                "pgward_client_connections_max",
                "Configured maximum number of client connections.",
            )),
        );
        let client_rejections = register(
            r,
            opts_ok(IntCounter::new(
                "pgward_client_connections_rejected_total",
                "Client connections refused because a connection limit was reached.",
            )),
        );

        let server_connections = register(
            r,
            opts_ok(IntGaugeVec::new(
                Opts::new(
                    "pgward_server_connections",
                    "Server (backend) connections per pool by state.",
                ),
                &["pool", "state"],
            )),
        );
        let pool_size_max = register(
            r,
            opts_ok(IntGaugeVec::new(
                Opts::new(
                    "pgward_pool_size_max",
                    "Maximum number of server connections per pool.",
                ),
                &["pool"],
            )),
        );
        let pool_utilization = register(
            r,
            opts_ok(GaugeVec::new(
                Opts::new(
                    "pgward_pool_utilization_ratio",
                    "Active server connections divided by the pool maximum.",
                ),
                &["pool"],
            )),
        );
        let checkout_wait = register(
            r,
            opts_ok(HistogramVec::new(
                HistogramOpts::new(
                    "pgward_pool_checkout_wait_seconds",
                    "Time a client waited for a server connection from the pool.",
                )
                .buckets(CHECKOUT_WAIT_BUCKETS.to_vec()),
                &["pool"],
            )),
        );
        let checkout_timeouts = register(
            r,
            opts_ok(IntCounterVec::new(
                Opts::new(
                    "pgward_pool_checkout_timeouts_total",
                    "Checkouts that gave up waiting for a server connection.",
                ),
                &["pool"],
            )),
        );
        let server_replacements = register(
            r,
            opts_ok(IntCounterVec::new(
                Opts::new(
                    "pgward_server_connections_replaced_total",
                    "Server connections closed to open one in their place for a client with \
                     other startup parameters than those they were opened with.",
                ),
                &["pool"],
            )),
        );
        let transactions = register(
            r,
            opts_ok(IntCounterVec::new(
                Opts::new(
                    "pgward_transactions_total",
                    "Transactions completed per pool.",
                ),
                &["pool"],
            )),
        );
        let queries = register(
            r,
            opts_ok(IntCounterVec::new(
                Opts::new("pgward_queries_total", "Queries completed per pool."),
                &["pool"],
            )),
        );
        let query_duration = register(
            r,
            opts_ok(HistogramVec::new(
                HistogramOpts::new(
                    "pgward_query_duration_seconds",
                    "Time from a query reaching the server to its completion.",
                )
                .buckets(QUERY_DURATION_BUCKETS.to_vec()),
                &["pool"],
            )),
        );

        let auth_failures_vec = register(
            r,
            opts_ok(IntCounterVec::new(
                Opts::new(
                    "pgward_auth_failures_total",
                    "Client authentication failures by reason.",
                ),
                &["reason"],
            )),
        );
        let auth_failures =
            AuthFailure::ALL.map(|a| auth_failures_vec.with_label_values(&[a.as_str()]));
        let tls_handshake_failures = register(
            r,
            opts_ok(IntCounter::new(
                "pgward_tls_handshake_failures_total",
                "Client TLS handshakes that failed.",
            )),
        );

        let policy_decisions = register(
            r,
            opts_ok(IntCounterVec::new(
                Opts::new(
                    "pgward_policy_decisions_total",
                    "Statement policy decisions by policy and outcome.",
                ),
                &["policy", "outcome"],
            )),
        );

        let audit = register(r, AuditCollector::new());

        let config_reloads = register(
            r,
            opts_ok(IntCounterVec::new(
                Opts::new(
                    "pgward_config_reloads_total",
                    "Configuration reloads by result.",
                ),
                &["result"],
            )),
        );
        let config_reload_ok = config_reloads.with_label_values(&["ok"]);
        let config_reload_error = config_reloads.with_label_values(&["error"]);

        let build_info = register(
            r,
            opts_ok(IntGaugeVec::new(
                Opts::new(
                    "pgward_build_info",
                    "Always 1; the version label says which pgward is running.",
                ),
                &["version"],
            )),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        Metrics {
            registry,
            clients,
            client_connections_max,
            client_rejections,
            server_connections,
            pool_size_max,
            pool_utilization,
            checkout_wait,
            checkout_timeouts,
            server_replacements,
            transactions,
            queries,
            query_duration,
            auth_failures,
            tls_handshake_failures,
            policy_decisions,
            audit,
            config_reload_ok,
            config_reload_error,
        }
    }

    /// The registry to serve (cheap to clone: it is shared, not copied).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Handles for one pool, with its label value resolved now. Call once per pool (at startup
    /// or reload), keep the result with the pool; calling again with the same name returns
    /// handles to the same series.
    pub fn pool(&self, pool_name: &str) -> PoolMetrics {
        let state = |s: &str| self.server_connections.with_label_values(&[pool_name, s]);
        PoolMetrics(Arc::new(PoolInner {
            active: state("active"),
            idle: state("idle"),
            testing: state("testing"),
            connecting: state("connecting"),
            size_max: self.pool_size_max.with_label_values(&[pool_name]),
            utilization: self.pool_utilization.with_label_values(&[pool_name]),
            checkout_wait: self.checkout_wait.with_label_values(&[pool_name]),
            checkout_timeouts: self.checkout_timeouts.with_label_values(&[pool_name]),
            replacements: self.server_replacements.with_label_values(&[pool_name]),
            transactions: self.transactions.with_label_values(&[pool_name]),
            queries: self.queries.with_label_values(&[pool_name]),
            query_duration: self.query_duration.with_label_values(&[pool_name]),
        }))
    }

    /// Removes a pool's series (after a reload dropped the pool), so dashboards do not show a
    /// pool that no longer exists. Handles still held keep working but are no longer scraped.
    pub fn forget_pool(&self, pool_name: &str) {
        for s in ["active", "idle", "testing", "connecting"] {
            let _ = self.server_connections.remove_label_values(&[pool_name, s]);
        }
        let _ = self.pool_size_max.remove_label_values(&[pool_name]);
        let _ = self.pool_utilization.remove_label_values(&[pool_name]);
        let _ = self.checkout_wait.remove_label_values(&[pool_name]);
        let _ = self.checkout_timeouts.remove_label_values(&[pool_name]);
        let _ = self.server_replacements.remove_label_values(&[pool_name]);
        let _ = self.transactions.remove_label_values(&[pool_name]);
        let _ = self.queries.remove_label_values(&[pool_name]);
        let _ = self.query_duration.remove_label_values(&[pool_name]);
    }

    /// Handles for one statement policy (by its config name), resolved now.
    pub fn policy(&self, name: &str) -> PolicyMetrics {
        let outcome = |o: &str| self.policy_decisions.with_label_values(&[name, o]);
        PolicyMetrics(Arc::new(PolicyInner {
            allowed: outcome("allowed"),
            denied: outcome("denied"),
            would_deny: outcome("would_deny"),
            learned: outcome("learned"),
        }))
    }

    /// Removes a policy's series (after a reload dropped the policy).
    pub fn forget_policy(&self, name: &str) {
        for o in ["allowed", "denied", "would_deny", "learned"] {
            let _ = self.policy_decisions.remove_label_values(&[name, o]);
        }
    }

    /// Counts one accepted client connection, in state `authenticating`, until the returned
    /// guard is dropped. Move it through states with [`ClientGauge::set_state`]; because the
    /// count leaves with the guard, a session that ends on any error path is never left counted.
    pub fn client_connection(&self) -> ClientGauge {
        ClientGauge::new(Arc::clone(&self.clients))
    }

    /// Sets `pgward_client_connections_max` (at startup and on reload).
    pub fn set_client_connections_max(&self, max: usize) {
        self.client_connections_max.set(to_i64(max));
    }

    /// Counts a client refused at a connection limit.
    pub fn client_rejected(&self) {
        self.client_rejections.inc();
    }

    /// Counts a failed client authentication.
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures[reason.index()].inc();
    }

    /// Counts a failed client TLS handshake.
    pub fn tls_handshake_failure(&self) {
        self.tls_handshake_failures.inc();
    }

    /// Counts a successful configuration reload.
    pub fn config_reload_ok(&self) {
        self.config_reload_ok.inc();
    }

    /// Counts a configuration reload that was refused (the old configuration stays).
    pub fn config_reload_failed(&self) {
        self.config_reload_error.inc();
    }

    /// Installs what the audit writer reports; it is called at every scrape, so it must be cheap
    /// and must not block (read atomics). Until one is installed, the audit figures are 0.
    pub fn set_audit_source(&self, source: impl Fn() -> AuditStats + Send + Sync + 'static) {
        self.audit.set_source(Arc::new(source));
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The four client-state gauges, resolved once.
#[derive(Debug)]
struct ClientGauges {
    by_state: [IntGauge; ClientState::ALL.len()],
}

/// One counted client connection (see [`Metrics::client_connection`]).
#[derive(Debug)]
pub struct ClientGauge {
    gauges: Arc<ClientGauges>,
    state: ClientState,
}

impl ClientGauge {
    fn new(gauges: Arc<ClientGauges>) -> ClientGauge {
        let state = ClientState::Authenticating;
        gauges.by_state[state.index()].inc();
        ClientGauge { gauges, state }
    }

    /// Moves this client to `state` (two atomic adds; nothing when the state is unchanged).
    pub fn set_state(&mut self, state: ClientState) {
        if state != self.state {
            self.gauges.by_state[self.state.index()].dec();
            self.gauges.by_state[state.index()].inc();
            self.state = state;
        }
    }

    /// The state this client is counted in.
    pub fn state(&self) -> ClientState {
        self.state
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        self.gauges.by_state[self.state.index()].dec();
    }
}

#[derive(Debug)]
struct PoolInner {
    active: IntGauge,
    idle: IntGauge,
    testing: IntGauge,
    connecting: IntGauge,
    size_max: IntGauge,
    utilization: Gauge,
    checkout_wait: Histogram,
    checkout_timeouts: IntCounter,
    replacements: IntCounter,
    transactions: IntCounter,
    queries: IntCounter,
    query_duration: Histogram,
}

/// One pool's metric handles, label values resolved; cloning is one reference count.
#[derive(Debug, Clone)]
pub struct PoolMetrics(Arc<PoolInner>);

impl PoolMetrics {
    /// Records how long a checkout waited (including a wait of zero on a warm pool).
    pub fn checkout_wait(&self, waited: Duration) {
        self.0.checkout_wait.observe(waited.as_secs_f64());
    }

    /// Counts a checkout that gave up at the checkout timeout.
    pub fn checkout_timeout(&self) {
        self.0.checkout_timeouts.inc();
    }

    /// Counts a server connection closed to open another in its place: it was opened with
    /// another client's startup parameters (see `crate::pool::ClientBase`).
    pub fn connection_replaced(&self) {
        self.0.replacements.inc();
    }

    /// Counts a completed transaction.
    pub fn transaction(&self) {
        self.0.transactions.inc();
    }

    /// Counts a completed query and records how long it took.
    pub fn query(&self, took: Duration) {
        self.0.queries.inc();
        self.0.query_duration.observe(took.as_secs_f64());
    }

    /// Sets the server connection counts and the pool maximum, and from them the utilization
    /// (active / max; 0 for a pool with no maximum). Call when the counts change or from a
    /// periodic pool housekeeping tick.
    pub fn set_server_connections(
        &self,
        active: usize,
        idle: usize,
        testing: usize,
        connecting: usize,
        max: usize,
    ) {
        let p = &self.0;
        p.active.set(to_i64(active));
        p.idle.set(to_i64(idle));
        p.testing.set(to_i64(testing));
        p.connecting.set(to_i64(connecting));
        p.size_max.set(to_i64(max));
        // Precision loss converting counts to f64 only matters past 2^53 connections.
        let ratio = if max == 0 {
            0.0
        } else {
            active as f64 / max as f64
        };
        p.utilization.set(ratio);
    }
}

#[derive(Debug)]
struct PolicyInner {
    allowed: IntCounter,
    denied: IntCounter,
    would_deny: IntCounter,
    learned: IntCounter,
}

/// One policy's decision counters, label values resolved; cloning is one reference count.
#[derive(Debug, Clone)]
pub struct PolicyMetrics(Arc<PolicyInner>);

impl PolicyMetrics {
    /// A statement the policy allowed.
    pub fn allowed(&self) {
        self.0.allowed.inc();
    }

    /// A statement the policy denied (enforce mode).
    pub fn denied(&self) {
        self.0.denied.inc();
    }

    /// A statement the policy would have denied (audit mode: logged, let through).
    pub fn would_deny(&self) {
        self.0.would_deny.inc();
    }

    /// A statement recorded in learn mode.
    pub fn learned(&self) {
        self.0.learned.inc();
    }
}

/// Reports the audit writer's figures at scrape time from a source closure.
#[derive(Clone)]
struct AuditCollector {
    descs: Arc<[Desc; 3]>,
    source: Arc<Mutex<Option<AuditSource>>>,
}

const AUDIT_QUEUE_DEPTH: (&str, &str) = (
    "pgward_audit_queue_depth",
    "Audit events queued, not yet written.",
);
const AUDIT_WRITTEN: (&str, &str) = (
    "pgward_audit_events_written_total",
    "Audit events written to the sink.",
);
const AUDIT_DROPPED: (&str, &str) = (
    "pgward_audit_events_dropped_total",
    "Audit events dropped (queue full or sink failure).",
);

impl AuditCollector {
    fn new() -> AuditCollector {
        let desc = |(name, help): (&str, &str)| {
            opts_ok(Desc::new(
                name.to_owned(),
                help.to_owned(),
                Vec::new(),
                Default::default(),
            ))
        };
        AuditCollector {
            descs: Arc::new([
                desc(AUDIT_QUEUE_DEPTH),
                desc(AUDIT_WRITTEN),
                desc(AUDIT_DROPPED),
            ]),
            source: Arc::new(Mutex::new(None)),
        }
    }

    fn set_source(&self, source: AuditSource) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    fn stats(&self) -> AuditStats {
        // Clone the source out so the closure runs without the lock held.
        let source = self
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        source.map(|f| f()).unwrap_or_default()
    }
}

fn family(desc: &Desc, kind: MetricType, value: u64) -> MetricFamily {
    // Counts past 2^53 lose precision as f64; the exposition format is f64 anyway.
    let value = value as f64;
    let mut m = proto::Metric::default();
    match kind {
        MetricType::COUNTER => {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        }
        _ => {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
    }
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(vec![m]);
    f
}

impl Collector for AuditCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.stats();
        let [depth, written, dropped] = &*self.descs;
        vec![
            family(depth, MetricType::GAUGE, s.queue_depth),
            family(written, MetricType::COUNTER, s.written),
            family(dropped, MetricType::COUNTER, s.dropped),
        ]
    }
}

/// Encodes `registry` in the Prometheus text format.
pub fn encode_text(registry: &Registry) -> Result<Vec<u8>, prometheus::Error> {
    use prometheus::Encoder;
    let mut buf = Vec::with_capacity(16 * 1024);
    prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &Metrics) -> String {
        String::from_utf8(encode_text(m.registry()).unwrap()).unwrap()
    }

    /// The value of the sample `name{labels}` (labels as exposed, e.g. `pool="a/b"`).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn pool_metrics_show_up_in_the_scrape() {
        let m = Metrics::new();
        let p = m.pool(&pool_label("appdb", "app_rw", false));
        p.set_server_connections(3, 2, 1, 0, 4);
        p.checkout_wait(Duration::from_millis(2));
        p.checkout_timeout();
        p.transaction();
        p.transaction();
        p.query(Duration::from_millis(20));
        // A second handle for the same pool updates the same series.
        m.pool("appdb/app_rw").transaction();
        let t = scrape(&m);
        let l = r#"pool="appdb/app_rw""#;
        assert_eq!(
            sample(
                &t,
                &format!(r#"pgward_server_connections{{{l},state="active"}}"#)
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &t,
                &format!(r#"pgward_server_connections{{{l},state="idle"}}"#)
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &t,
                &format!(r#"pgward_server_connections{{{l},state="testing"}}"#)
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, &format!("pgward_pool_size_max{{{l}}}")),
            Some(4.0)
        );
        assert_eq!(
            sample(&t, &format!("pgward_pool_utilization_ratio{{{l}}}")),
            Some(0.75)
        );
        assert_eq!(
            sample(
                &t,
                &format!("pgward_pool_checkout_wait_seconds_count{{{l}}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                &format!(r#"pgward_pool_checkout_wait_seconds_bucket{{{l},le="0.005"}}"#)
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                &format!(r#"pgward_pool_checkout_wait_seconds_bucket{{{l},le="0.001"}}"#)
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(&t, &format!("pgward_pool_checkout_timeouts_total{{{l}}}")),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, &format!("pgward_transactions_total{{{l}}}")),
            Some(3.0)
        );
        assert_eq!(
            sample(&t, &format!("pgward_queries_total{{{l}}}")),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, &format!("pgward_query_duration_seconds_sum{{{l}}}")),
            Some(0.02)
        );

        m.forget_pool("appdb/app_rw");
        assert!(!scrape(&m).contains("appdb/app_rw"));
    }

    #[test]
    fn utilization_of_a_pool_without_maximum_is_zero() {
        let m = Metrics::new();
        m.pool("p").set_server_connections(1, 0, 0, 0, 0);
        assert_eq!(
            sample(&scrape(&m), r#"pgward_pool_utilization_ratio{pool="p"}"#),
            Some(0.0)
        );
    }

    #[test]
    fn policy_decisions_by_outcome() {
        let m = Metrics::new();
        let p = m.policy("app");
        p.allowed();
        p.allowed();
        p.denied();
        p.would_deny();
        p.learned();
        let t = scrape(&m);
        let v = |o: &str| {
            sample(
                &t,
                &format!(r#"pgward_policy_decisions_total{{outcome="{o}",policy="app"}}"#),
            )
        };
        assert_eq!(v("allowed"), Some(2.0));
        assert_eq!(v("denied"), Some(1.0));
        assert_eq!(v("would_deny"), Some(1.0));
        assert_eq!(v("learned"), Some(1.0));
        m.forget_policy("app");
        assert!(!scrape(&m).contains(r#"policy="app""#));
    }

    #[test]
    fn client_gauge_follows_states_and_leaves_on_drop() {
        let m = Metrics::new();
        m.set_client_connections_max(5000);
        let v =
            |t: &str, s: &str| sample(t, &format!(r#"pgward_client_connections{{state="{s}"}}"#));
        let mut a = m.client_connection();
        let _b = m.client_connection();
        let t = scrape(&m);
        assert_eq!(v(&t, "authenticating"), Some(2.0));
        assert_eq!(v(&t, "active"), Some(0.0));
        a.set_state(ClientState::Idle);
        a.set_state(ClientState::Waiting);
        a.set_state(ClientState::Active);
        a.set_state(ClientState::Active);
        let t = scrape(&m);
        assert_eq!(v(&t, "authenticating"), Some(1.0));
        assert_eq!(v(&t, "idle"), Some(0.0));
        assert_eq!(v(&t, "waiting"), Some(0.0));
        assert_eq!(v(&t, "active"), Some(1.0));
        drop(a);
        let t = scrape(&m);
        assert_eq!(v(&t, "active"), Some(0.0));
        assert_eq!(sample(&t, "pgward_client_connections_max"), Some(5000.0));
    }

    #[test]
    fn fixed_label_sets_exist_from_the_start() {
        let m = Metrics::new();
        m.auth_failure(AuthFailure::Password);
        m.tls_handshake_failure();
        m.config_reload_failed();
        m.client_rejected();
        let t = scrape(&m);
        for a in AuthFailure::ALL {
            let want = if a == AuthFailure::Password { 1.0 } else { 0.0 };
            let series = format!(r#"pgward_auth_failures_total{{reason="{}"}}"#, a.as_str());
            assert_eq!(sample(&t, &series), Some(want), "{series}");
        }
        assert_eq!(sample(&t, "pgward_tls_handshake_failures_total"), Some(1.0));
        assert_eq!(
            sample(&t, r#"pgward_config_reloads_total{result="ok"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(&t, r#"pgward_config_reloads_total{result="error"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, "pgward_client_connections_rejected_total"),
            Some(1.0)
        );
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            sample(&t, &format!(r#"pgward_build_info{{version="{version}"}}"#)),
            Some(1.0)
        );
    }

    #[test]
    fn audit_figures_come_from_the_source_at_scrape_time() {
        let m = Metrics::new();
        let t = scrape(&m);
        assert_eq!(sample(&t, "pgward_audit_queue_depth"), Some(0.0));
        assert_eq!(sample(&t, "pgward_audit_events_dropped_total"), Some(0.0));
        assert!(t.contains("# TYPE pgward_audit_events_written_total counter"));
        assert!(t.contains("# TYPE pgward_audit_queue_depth gauge"));

        let written = Arc::new(std::sync::atomic::AtomicU64::new(7));
        let w = Arc::clone(&written);
        m.set_audit_source(move || AuditStats {
            queue_depth: 3,
            written: w.load(std::sync::atomic::Ordering::Relaxed),
            dropped: 1,
        });
        let t = scrape(&m);
        assert_eq!(sample(&t, "pgward_audit_queue_depth"), Some(3.0));
        assert_eq!(sample(&t, "pgward_audit_events_written_total"), Some(7.0));
        assert_eq!(sample(&t, "pgward_audit_events_dropped_total"), Some(1.0));
        written.store(9, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            sample(&scrape(&m), "pgward_audit_events_written_total"),
            Some(9.0)
        );
    }

    #[test]
    fn each_metrics_has_its_own_registry() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.pool("only_a").transaction();
        assert!(!scrape(&b).contains("only_a"));
        assert!(
            prometheus::gather()
                .iter()
                .all(|f| !f.name().starts_with("pgward_"))
        );
    }
}
