//! `App`: the one shared state of a running pgward, passed by `Arc` — the configuration and
//! pools now in force (a [`Routing`], swapped whole by a reload), the cancel registry, client
//! counters and the shutdown signal. No globals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendLogin, Config, Database, User};
use crate::error::ClientError;
use crate::pool::{Pool, PoolKey};
use crate::session::cancel::CancelRegistry;
use crate::tls::TlsError;
use crate::tls::backend::BackendTls;
use crate::tls::server::ServerTls;

pub struct App {
    /// The config and pools now in force; a reload swaps the whole [`Routing`] at once.
    routing: ArcSwap<Routing>,
    /// `routing`'s generation, for the check every session makes at each turn of its loop:
    /// one relaxed load instead of an `ArcSwap` load. Stored after the routing it names.
    generation: std::sync::atomic::AtomicU64,
    /// TLS towards clients; `None` when disabled. Its settings need a restart to change (the
    /// files it reads are re-read on RELOAD, SIGHUP and every `reload_interval`).
    pub client_tls: Option<ServerTls>,
    pub cancels: Arc<CancelRegistry>,
    clients: Arc<AtomicUsize>,
    user_clients: Arc<Mutex<HashMap<String, usize>>>,
    /// Cancelled when pgward starts draining: sessions end at their next idle point.
    pub shutdown: CancellationToken,
    /// Every distinct named statement clients prepared, with its server-side name.
    pub statements: crate::session::prepared::StatementRegistry,
    /// Live client sessions (admin console, metrics, audit session ids).
    pub sessions: Arc<crate::session::registry::SessionRegistry>,
    /// Prometheus metrics (served on the admin HTTP listener).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether a backend answered the last reachability probe (for /readyz).
    pub backend_reachable: std::sync::atomic::AtomicBool,
    /// Audit events (a disabled handle when not configured).
    pub audit: crate::audit::Auditor,
    /// What audited statements are (fingerprint, redacted text, kind), by text.
    pub descriptions: crate::session::executed::Descriptions,
    /// One reload at a time (RELOAD from two admin sessions, SIGHUP).
    reloading: Mutex<()>,
}

/// One generation of configuration: the validated config and the pools built for it. Sessions
/// authenticate and route against one snapshot; a reload builds the next and swaps it in whole,
/// so nobody ever sees the users of one file with the pools of another.
pub struct Routing {
    pub config: Arc<Config>,
    /// Starts at 0; each successful reload adds one. A session compares the generation it
    /// routed with at its idle points and then adopts the new routing (`Relay::adopt_reload`).
    pub generation: u64,
    pools: HashMap<PoolKey, Arc<Pool>>,
    /// TLS towards each database that uses it, by database name.
    backend_tls: HashMap<String, Arc<BackendTls>>,
}

impl Routing {
    /// Builds the pools `config` can reach. A pool of `previous` whose key, database settings
    /// and backend login are unchanged is kept as it is (with its warm connections); backend
    /// TLS material is kept when the database's TLS settings are. Returns the routing and the
    /// pools that are new.
    fn build(
        config: Arc<Config>,
        previous: Option<&Routing>,
        metrics: &crate::metrics::Metrics,
    ) -> Result<(Routing, Vec<Arc<Pool>>), TlsError> {
        let mut backend_tls = HashMap::new();
        for db in config.databases.values() {
            let kept = previous.and_then(|p| {
                let old = p.config.databases.get(&db.name)?;
                (old.tls == db.tls && old.target.host == db.target.host)
                    .then(|| p.backend_tls.get(&db.name).cloned())
                    .flatten()
            });
            let tls = match kept {
                Some(t) => Some(t),
                None => BackendTls::new(&db.tls, &db.target.host)?.map(Arc::new),
            };
            if let Some(t) = tls {
                backend_tls.insert(db.name.clone(), t);
            }
        }
        // Every (key, database, login) the config can route to.
        let mut wanted: Vec<(PoolKey, Arc<Database>, BackendLogin)> = Vec::new();
        for db in config.databases.values() {
            let key = PoolKey {
                database: db.name.clone(),
                backend_user: db.backend.user.clone(),
                read_only: false,
            };
            wanted.push((key, Arc::clone(db), db.backend.clone()));
        }
        // Pools for users with their own backend role or a read-only policy.
        for user in config.users.values() {
            let read_only = user.policy.as_ref().is_some_and(|p| p.read_only_backend());
            if user.backend.is_none() && !read_only {
                continue;
            }
            for db in config.databases.values() {
                if !user_may_use(user, &db.name) {
                    continue;
                }
                let mut login = user.backend.clone().unwrap_or_else(|| db.backend.clone());
                login.read_only = read_only;
                let key = PoolKey {
                    database: db.name.clone(),
                    backend_user: login.user.clone(),
                    read_only,
                };
                wanted.push((key, Arc::clone(db), login));
            }
        }
        let mut pools = HashMap::new();
        let mut created = Vec::new();
        for (key, db, login) in wanted {
            if pools.contains_key(&key) {
                continue;
            }
            let kept = previous
                .and_then(|p| p.pools.get(&key))
                .filter(|old| *old.database == *db && old.login() == &login && !old.is_closed())
                .cloned();
            let pool = match kept {
                Some(old) => old,
                None => {
                    let m = metrics.pool(&crate::metrics::pool_label(
                        &key.database,
                        &key.backend_user,
                        key.read_only,
                    ));
                    let tls = backend_tls.get(&db.name).cloned();
                    let pool = Pool::new(key.clone(), db, login, tls, m);
                    created.push(Arc::clone(&pool));
                    pool
                }
            };
            pools.insert(key, pool);
        }
        let generation = previous.map_or(0, |p| p.generation + 1);
        Ok((
            Routing {
                config,
                generation,
                pools,
                backend_tls,
            },
            created,
        ))
    }

    /// The pool for an authenticated user's requested database.
    pub fn route(&self, user: &User, database: &str) -> Result<Arc<Pool>, ClientError> {
        let unknown = || ClientError::UnknownDatabase {
            database: database.to_owned(),
        };
        let db = self.config.databases.get(database).ok_or_else(unknown)?;
        if !user_may_use(user, database) {
            // The same answer as for a database that does not exist: no probing.
            return Err(unknown());
        }
        let backend_user = user.backend.as_ref().map_or(&db.backend.user, |b| &b.user);
        let key = PoolKey {
            database: db.name.clone(),
            backend_user: backend_user.clone(),
            read_only: user.policy.as_ref().is_some_and(|p| p.read_only_backend()),
        };
        self.pools.get(&key).cloned().ok_or_else(unknown)
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }
}

/// Why pgward could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// Why a reload changed nothing; the running configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the configuration was not loaded from a file, so there is nothing to re-read")]
    NoSource,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ReloadError {
    /// What an admin client is told. A TOML syntax error quotes the offending line, which may
    /// hold a verifier: that text goes to the log only.
    pub fn client_text(&self) -> String {
        match self {
            ReloadError::Config(crate::config::ConfigError::Load(_)) => {
                "the configuration file cannot be read or parsed (details in pgward's log)".into()
            }
            other => other.to_string(),
        }
    }

    /// How many problems the new file has (for the `config.reloaded` event).
    pub fn count(&self) -> u32 {
        match self {
            ReloadError::Config(crate::config::ConfigError::Invalid(v)) => v.len() as u32,
            _ => 1,
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub generation: u64,
    /// Pools opened for new or changed databases, logins or pool settings.
    pub pools_created: usize,
    /// Pools no longer routed to: idle connections closed, busy ones closed when released.
    pub pools_retired: usize,
    /// Policies whose rules changed (sessions adopt the new rules at their next idle point).
    pub policies_changed: Vec<String>,
    /// Settings that changed in the file but only take effect after a restart; the running
    /// values stay in force (and are what SHOW CONFIG shows).
    pub needs_restart: Vec<&'static str>,
}

/// A counted client connection; the count drops with it.
pub struct ClientPermit {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        if let Some(f) = self.release.take() {
            f();
        }
    }
}

impl App {
    /// Starts the audit writer (if configured), then builds the shared state. Must run inside
    /// a tokio runtime.
    pub async fn start(config: Config) -> Result<Arc<App>, StartError> {
        let auditor = match &config.audit {
            Some(settings) => crate::audit::start(settings.clone()).await?,
            None => crate::audit::Auditor::disabled(),
        };
        Ok(Self::with_auditor(config, auditor)?)
    }

    /// Builds the shared state without audit.
    pub fn new(config: Config) -> Result<Arc<App>, TlsError> {
        Self::with_auditor(config, crate::audit::Auditor::disabled())
    }

    /// Builds the shared state and one pool per (database, backend role) the config can reach.
    pub fn with_auditor(
        config: Config,
        audit: crate::audit::Auditor,
    ) -> Result<Arc<App>, TlsError> {
        let config = Arc::new(config);
        let client_tls = config
            .client_tls
            .as_ref()
            .map(ServerTls::load)
            .transpose()?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        metrics.set_client_connections_max(config.server.max_client_connections);
        for name in config.policies.keys() {
            // Series exist from the start, so alerts and dashboards see zeros, not gaps.
            let _ = metrics.policy(name);
        }
        let (routing, _) = Routing::build(config, None, &metrics)?;
        Ok(Arc::new(App {
            generation: std::sync::atomic::AtomicU64::new(routing.generation),
            routing: ArcSwap::from_pointee(routing),
            client_tls,
            cancels: Arc::new(CancelRegistry::default()),
            clients: Arc::new(AtomicUsize::new(0)),
            user_clients: Arc::new(Mutex::new(HashMap::new())),
            shutdown: CancellationToken::new(),
            statements: Default::default(),
            sessions: Default::default(),
            metrics,
            backend_reachable: std::sync::atomic::AtomicBool::new(false),
            audit,
            descriptions: Default::default(),
            reloading: Mutex::new(()),
        }))
    }

    /// The configuration now in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.routing.load().config)
    }

    /// The configuration and pools now in force, as one snapshot.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The generation of the routing now in force (cheap: for a session's idle points).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// RELOAD and SIGHUP: re-reads certificates, reopens the audit file, and re-reads the
    /// config file. Users, databases, pools and policies take effect for new sessions at once
    /// and for running sessions at their next idle point; a file with errors changes nothing.
    /// Counted in the reload metric and audited as `config.reloaded` either way.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reload_tls();
        self.audit.reopen();
        let result = self.reload_config();
        let errors = match &result {
            Ok(report) => {
                self.metrics.config_reload_ok();
                tracing::info!(
                    generation = report.generation,
                    pools_created = report.pools_created,
                    pools_retired = report.pools_retired,
                    policies_changed = ?report.policies_changed,
                    "configuration reloaded"
                );
                for setting in &report.needs_restart {
                    tracing::warn!(
                        setting,
                        "changed in the configuration file; takes effect after a restart"
                    );
                }
                0
            }
            Err(e) => {
                self.metrics.config_reload_failed();
                tracing::error!(error = %e, "configuration reload failed; the running configuration stays");
                e.count()
            }
        };
        self.audit.emit_now(crate::audit::event::Event::new(
            crate::audit::event::EventFields::ConfigReloaded {
                succeeded: errors == 0,
                errors,
            },
        ));
        result
    }

    fn reload_config(&self) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.routing.load_full();
        let path = old.config.source.clone().ok_or(ReloadError::NoSource)?;
        let mut config = crate::config::load(&path)?;
        let mut report = ReloadReport::default();
        // What is bound or started once keeps its running value, so SHOW CONFIG tells the truth.
        let running = &old.config;
        if config.server.listen != running.server.listen {
            report.needs_restart.push("server.listen");
            config.server.listen = running.server.listen;
        }
        if config.server.admin_listen != running.server.admin_listen {
            report.needs_restart.push("server.admin_listen");
            config.server.admin_listen = running.server.admin_listen;
        }
        if config.server.log_format != running.server.log_format {
            report.needs_restart.push("server.log_format");
            config.server.log_format = running.server.log_format;
        }
        if config.client_tls != running.client_tls {
            report.needs_restart.push("client_tls");
            config.client_tls = running.client_tls.clone();
        }
        if config.audit != running.audit {
            report.needs_restart.push("audit");
            config.audit = running.audit.clone();
        }
        keep_unchanged_policies(&mut config, running, &mut report.policies_changed);
        let (routing, created) = Routing::build(Arc::new(config), Some(&old), &self.metrics)?;
        self.metrics
            .set_client_connections_max(routing.config.server.max_client_connections);
        for name in routing.config.policies.keys() {
            let _ = self.metrics.policy(name);
        }
        let retired: Vec<Arc<Pool>> = old
            .pools()
            .filter(|p| !routing.pools().any(|n| Arc::ptr_eq(n, p)))
            .cloned()
            .collect();
        report.generation = routing.generation;
        report.pools_created = created.len();
        report.pools_retired = retired.len();
        let generation = routing.generation;
        self.routing.store(Arc::new(routing));
        self.generation.store(generation, Ordering::Release);
        for pool in created {
            self.spawn_maintenance(pool);
        }
        // Sessions still holding a connection of a retired pool keep it until they release
        // it; the closed pool then closes it instead of keeping it.
        for pool in retired {
            pool.close();
        }
        Ok(report)
    }

    /// Runs a pool's housekeeping until the pool closes or pgward drains.
    pub fn spawn_maintenance(&self, pool: Arc<Pool>) {
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = pool.maintain(Duration::from_secs(1)) => {}
                _ = token.cancelled() => {}
            }
        });
    }

    /// Re-reads certificate, key and CA files that changed, on both legs. A broken file leaves
    /// the previous material in place and is logged; established sessions are unaffected.
    pub fn reload_tls(&self) {
        if let Some(t) = &self.client_tls {
            match t.reload_if_changed() {
                Ok(true) => tracing::info!("client TLS certificates reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "client TLS reload failed; keeping the previous certificates")
                }
            }
        }
        for t in self.routing.load().backend_tls.values() {
            match t.reload_if_changed() {
                Ok(true) => tracing::info!(backend = ?t, "backend TLS files reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(backend = ?t, error = %e, "backend TLS reload failed; keeping the previous files")
                }
            }
        }
    }

    /// The pools now routed to.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.routing.load().pools.values().cloned().collect()
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Admits a new connection if the global client limit allows.
    pub fn admit(&self) -> Option<ClientPermit> {
        let max = self.routing.load().config.server.max_client_connections;
        let counter = Arc::clone(&self.clients);
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ClientPermit {
            release: Some(Box::new(move || {
                counter.fetch_sub(1, Ordering::AcqRel);
            })),
        })
    }

    /// Admits an authenticated client if its user's connection limit allows.
    pub fn admit_user(&self, user: &User) -> Option<ClientPermit> {
        let Some(max) = user.max_connections else {
            return Some(ClientPermit { release: None });
        };
        let mut counts = self.user_clients.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(user.name.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        let map = Arc::clone(&self.user_clients);
        let name = user.name.clone();
        Some(ClientPermit {
            release: Some(Box::new(move || {
                let mut counts = map.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = counts.get_mut(&name) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(&name);
                    }
                }
            })),
        })
    }

    /// The pool for an authenticated user's requested database, in the routing now in force.
    pub fn route(&self, user: &User, database: &str) -> Result<Arc<Pool>, ClientError> {
        self.routing.load().route(user, database)
    }

    pub fn cancel_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

fn user_may_use(user: &User, database: &str) -> bool {
    user.databases
        .as_ref()
        .is_none_or(|list| list.iter().any(|d| d == database))
}

/// Puts the running `Arc<Policy>` back into `config` wherever the reloaded policy of the same
/// name has the same rules: its decision cache stays warm and its sessions see no change. The
/// names of policies whose rules differ are pushed to `changed`.
fn keep_unchanged_policies(config: &mut Config, running: &Config, changed: &mut Vec<String>) {
    for (name, policy) in config.policies.iter_mut() {
        match running.policies.get(name) {
            Some(old) if old.same_rules(policy) => *policy = Arc::clone(old),
            Some(_) => changed.push(name.clone()),
            None => {}
        }
    }
    changed.sort();
    for user in config.users.values_mut() {
        let Some(kept) = user
            .policy
            .as_ref()
            .and_then(|p| config.policies.get(&p.name))
            .filter(|kept| !user.policy.as_ref().is_some_and(|p| Arc::ptr_eq(kept, p)))
            .cloned()
        else {
            continue;
        };
        // A freshly validated config holds each user once, so this is its only reference.
        if let Some(u) = Arc::get_mut(user) {
            u.policy = Some(kept);
        }
    }
}
