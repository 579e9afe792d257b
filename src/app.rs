//! `App`: the one shared state of a running pgward, passed by `Arc` — the validated config, the
//! pools, the cancel registry, client counters and the shutdown signal. No globals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, User};
use crate::error::ClientError;
use crate::pool::{Pool, PoolKey};
use crate::session::cancel::CancelRegistry;
use crate::tls::TlsError;
use crate::tls::backend::BackendTls;
use crate::tls::server::ServerTls;

pub struct App {
    pub config: Arc<Config>,
    pools: HashMap<PoolKey, Arc<Pool>>,
    /// TLS towards clients; `None` when disabled.
    pub client_tls: Option<ServerTls>,
    backend_tls: Vec<Arc<BackendTls>>,
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
}

/// Why pgward could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
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
        let mut backend_tls = HashMap::new();
        for db in config.databases.values() {
            if let Some(t) = BackendTls::new(&db.tls, &db.target.host)? {
                backend_tls.insert(db.name.clone(), Arc::new(t));
            }
        }
        let metrics = Arc::new(crate::metrics::Metrics::new());
        metrics.set_client_connections_max(config.server.max_client_connections);
        for name in config.policies.keys() {
            // Series exist from the start, so alerts and dashboards see zeros, not gaps.
            let _ = metrics.policy(name);
        }
        let pool_metrics = |key: &PoolKey| {
            metrics.pool(&crate::metrics::pool_label(
                &key.database,
                &key.backend_user,
                key.read_only,
            ))
        };
        let mut pools = HashMap::new();
        for db in config.databases.values() {
            let key = PoolKey {
                database: db.name.clone(),
                backend_user: db.backend.user.clone(),
                read_only: false,
            };
            let tls = backend_tls.get(&db.name).cloned();
            pools.entry(key.clone()).or_insert_with(|| {
                let m = pool_metrics(&key);
                Pool::new(key, Arc::clone(db), db.backend.clone(), tls, m)
            });
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
                let tls = backend_tls.get(&db.name).cloned();
                pools.entry(key.clone()).or_insert_with(|| {
                    let m = pool_metrics(&key);
                    Pool::new(key, Arc::clone(db), login, tls, m)
                });
            }
        }
        Ok(Arc::new(App {
            config,
            pools,
            client_tls,
            backend_tls: backend_tls.into_values().collect(),
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
        }))
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
        for t in &self.backend_tls {
            match t.reload_if_changed() {
                Ok(true) => tracing::info!(backend = ?t, "backend TLS files reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(backend = ?t, error = %e, "backend TLS reload failed; keeping the previous files")
                }
            }
        }
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Admits a new connection if the global client limit allows.
    pub fn admit(&self) -> Option<ClientPermit> {
        let max = self.config.server.max_client_connections;
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

    pub fn cancel_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

fn user_may_use(user: &User, database: &str) -> bool {
    user.databases
        .as_ref()
        .is_none_or(|list| list.iter().any(|d| d == database))
}
