//! The admin console: connecting to the virtual database `pgward` as one of `server.admin_users`
//! gives `SHOW POOLS | CLIENTS | SERVERS | STATS | CONFIG | POLICIES | HELP` and `RELOAD`, over
//! the simple query protocol (what psql uses). Columns follow PgBouncer's where they mean the same
//! thing. Every command, recognized or not, is audited (`admin.command`); secrets never appear
//! (`SHOW CONFIG` prints no password, verifier or key).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::app::App;
use crate::error::ClientError;
use crate::protocol::messages::{self as msg, TxStatus};
use crate::session::io;

/// The database name that selects the admin console.
pub const ADMIN_DATABASE: &str = "pgward";

/// A result set: column names and rows of text.
struct Table {
    columns: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

/// Serves one admin session until the client leaves.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    app: &Arc<App>,
    stream: &mut S,
    mut buf: BytesMut,
    user: &str,
    peer: SocketAddr,
) {
    let sid = app.sessions.next_sid();
    let mut out = BytesMut::new();
    for (k, v) in [
        ("server_version", "15.0 (pgward admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        msg::put_parameter_status(&mut out, k, v);
    }
    msg::put_backend_key(&mut out, 0, 0);
    msg::put_ready(&mut out, TxStatus::Idle);
    if io::send_all(stream, &out).await.is_err() {
        return;
    }
    tracing::info!(%peer, user, "admin console session");
    loop {
        let (tag, message) = match io::read_client_frame(stream, &mut buf, 1 << 20).await {
            Ok(Some(f)) => f,
            _ => return,
        };
        out.clear();
        match tag {
            b'X' => return,
            b'Q' => {
                let sql = msg::decode_query(&message).unwrap_or("");
                if !app.config().server.admin_users.iter().any(|u| u == user) {
                    // A reload took this user's admin right away: no further commands.
                    audit(app, sid, peer, user, "refused", false).await;
                    ClientError::AdminNotAllowed { user: user.into() }.write_to(&mut out);
                    let _ = io::send_all(stream, &out).await;
                    return;
                }
                let (command, result) = run_command(app, sql);
                audit(app, sid, peer, user, command, result.is_ok()).await;
                match result {
                    Ok(Reply::Table(t)) => put_table(&mut out, &t, command),
                    Ok(Reply::Done(tag)) => msg::put_command_complete(&mut out, tag),
                    Err(e) => e.write_to(&mut out),
                }
                msg::put_ready(&mut out, TxStatus::Idle);
            }
            b'S' => msg::put_ready(&mut out, TxStatus::Idle),
            b'H' => {}
            _ => ClientError::ProtocolViolation {
                reason: "the admin console speaks the simple query protocol only".into(),
            }
            .write_to(&mut out),
        }
        if !out.is_empty() && io::send_all(stream, &out).await.is_err() {
            return;
        }
    }
}

enum Reply {
    Table(Table),
    Done(&'static str),
}

/// Runs one command; returns its recognized name (for the audit) and the reply.
fn run_command(app: &App, sql: &str) -> (&'static str, Result<Reply, ClientError>) {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["SHOW", "POOLS"] => ("SHOW POOLS", Ok(Reply::Table(pools(app)))),
        ["SHOW", "CLIENTS"] => ("SHOW CLIENTS", Ok(Reply::Table(clients(app)))),
        ["SHOW", "SERVERS"] => ("SHOW SERVERS", Ok(Reply::Table(servers(app)))),
        ["SHOW", "STATS"] => ("SHOW STATS", Ok(Reply::Table(stats(app)))),
        ["SHOW", "CONFIG"] => ("SHOW CONFIG", Ok(Reply::Table(config(app)))),
        ["SHOW", "POLICIES"] => ("SHOW POLICIES", Ok(Reply::Table(policies(app)))),
        ["SHOW", "HELP"] | ["HELP"] => ("SHOW HELP", Ok(Reply::Table(help()))),
        ["RELOAD"] => (
            "RELOAD",
            app.reload()
                .map(|_| Reply::Done("RELOAD"))
                .map_err(|e| ClientError::ReloadFailed {
                    reason: e.client_text(),
                }),
        ),
        _ => (
            "unknown",
            Err(ClientError::AdminUnknownCommand {
                hint: "SHOW POOLS | CLIENTS | SERVERS | STATS | CONFIG | POLICIES | HELP, RELOAD",
            }),
        ),
    }
}

async fn audit(app: &App, sid: u64, peer: SocketAddr, user: &str, command: &'static str, ok: bool) {
    use crate::audit::codes::AdminInterface;
    use crate::audit::event::{Event, EventFields, Identity};
    app.audit
        .emit(
            Event::new(EventFields::AdminCommand {
                interface: AdminInterface::Console,
                command,
                allowed: ok,
            })
            .sid(sid)
            .client(peer)
            .identity(Arc::new(Identity::user(user)))
            .database(ADMIN_DATABASE),
        )
        .await;
}

fn pools(app: &App) -> Table {
    let sessions = app.sessions.list();
    let mut rows = Vec::new();
    for p in sorted_pools(app) {
        let st = p.stats();
        let mine = |s: &&Arc<crate::session::registry::SessionInfo>| {
            s.database == p.key.database && s.backend_user == p.key.backend_user
        };
        let state_count = |want| {
            sessions
                .iter()
                .filter(mine)
                .filter(|s| s.state() == want)
                .count()
        };
        use crate::session::registry::ClientState as C;
        rows.push(vec![
            p.key.database.clone(),
            p.key.backend_user.clone(),
            state_count(C::Active).to_string(),
            state_count(C::Waiting).to_string(),
            state_count(C::Idle).to_string(),
            (st.total - st.idle).to_string(),
            st.idle.to_string(),
            st.waiting.to_string(),
            p.settings().size.to_string(),
            mode(p.settings().mode).into(),
            p.key.read_only.to_string(),
        ]);
    }
    Table {
        columns: &[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_idle",
            "sv_active",
            "sv_idle",
            "waiters",
            "pool_size",
            "pool_mode",
            "read_only",
        ],
        rows,
    }
}

fn clients(app: &App) -> Table {
    let rows = app
        .sessions
        .list()
        .iter()
        .map(|s| {
            vec![
                s.sid.to_string(),
                s.user.clone(),
                s.database.clone(),
                s.state().as_str().into(),
                s.peer.ip().to_string(),
                s.peer.port().to_string(),
                rfc3339(s.started),
                s.tls.to_string(),
                s.cert_identity.clone().unwrap_or_default(),
                s.server().map(|i| i.to_string()).unwrap_or_default(),
                s.transactions.load(Relaxed).to_string(),
                s.queries.load(Relaxed).to_string(),
                s.bytes_from_client.load(Relaxed).to_string(),
                s.bytes_to_client.load(Relaxed).to_string(),
            ]
        })
        .collect();
    Table {
        columns: &[
            "sid",
            "user",
            "database",
            "state",
            "addr",
            "port",
            "connect_time",
            "tls",
            "cert_identity",
            "server",
            "transactions",
            "queries",
            "bytes_in",
            "bytes_out",
        ],
        rows,
    }
}

fn servers(app: &App) -> Table {
    let mut rows = Vec::new();
    for p in sorted_pools(app) {
        for s in app.sessions.list() {
            if s.database != p.key.database || s.backend_user != p.key.backend_user {
                continue;
            }
            if let Some(id) = s.server() {
                rows.push(vec![
                    p.key.database.clone(),
                    p.key.backend_user.clone(),
                    "active".into(),
                    id.to_string(),
                    s.sid.to_string(),
                ]);
            }
        }
        for id in p.idle_ids() {
            rows.push(vec![
                p.key.database.clone(),
                p.key.backend_user.clone(),
                "idle".into(),
                id.to_string(),
                String::new(),
            ]);
        }
    }
    Table {
        columns: &["database", "user", "state", "id", "client_sid"],
        rows,
    }
}

fn stats(app: &App) -> Table {
    let rows = sorted_pools(app)
        .iter()
        .map(|p| {
            let c = &p.counters;
            vec![
                p.key.database.clone(),
                p.key.backend_user.clone(),
                c.transactions.load(Relaxed).to_string(),
                c.queries.load(Relaxed).to_string(),
                c.query_time_us.load(Relaxed).to_string(),
                c.checkouts.load(Relaxed).to_string(),
                c.wait_time_us.load(Relaxed).to_string(),
                c.checkout_timeouts.load(Relaxed).to_string(),
            ]
        })
        .collect();
    Table {
        columns: &[
            "database",
            "user",
            "total_xact_count",
            "total_query_count",
            "total_query_time",
            "total_checkouts",
            "total_wait_time",
            "total_checkout_timeouts",
        ],
        rows,
    }
}

/// Settings as key/value; never a password, verifier, key or secret file's content.
fn config(app: &App) -> Table {
    let c = app.config();
    let s = &c.server;
    let mut rows = vec![
        kv("listen", s.listen.to_string()),
        kv("admin_listen", s.admin_listen.to_string()),
        kv(
            "max_client_connections",
            s.max_client_connections.to_string(),
        ),
        kv("max_message_bytes", s.max_message_bytes.to_string()),
        kv("startup_timeout", format!("{:?}", s.startup_timeout)),
        kv("shutdown_timeout", format!("{:?}", s.shutdown_timeout)),
        kv("admin_users", s.admin_users.join(",")),
        kv(
            "client_tls",
            if c.client_tls.is_some() { "on" } else { "off" }.into(),
        ),
        kv(
            "audit",
            if app.audit.enabled() { "on" } else { "off" }.into(),
        ),
    ];
    let mut dbs: Vec<_> = c.databases.values().collect();
    dbs.sort_by(|a, b| a.name.cmp(&b.name));
    for d in dbs {
        let p = format!("databases.{}", d.name);
        rows.push(kv(
            &format!("{p}.target"),
            format!("{}:{}/{}", d.target.host, d.target.port, d.target.dbname),
        ));
        rows.push(kv(&format!("{p}.backend_user"), d.backend.user.clone()));
        rows.push(kv(&format!("{p}.backend_password"), "<redacted>".into()));
        rows.push(kv(&format!("{p}.pool_mode"), mode(d.pool.mode).into()));
        rows.push(kv(&format!("{p}.pool_size"), d.pool.size.to_string()));
        rows.push(kv(
            &format!("{p}.max_prepared_statements"),
            d.max_prepared_statements.to_string(),
        ));
        rows.push(kv(
            &format!("{p}.max_client_statement_bytes"),
            d.max_client_statement_bytes.to_string(),
        ));
    }
    let mut users: Vec<_> = c.users.values().collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    for u in users {
        let p = format!("users.{}", u.name);
        let auth = match &u.auth {
            crate::config::ClientAuth::Scram(_) => "scram (verifier <redacted>)",
            crate::config::ClientAuth::Cert(_) => "cert",
            crate::config::ClientAuth::CertAndScram(..) => "cert+scram (verifier <redacted>)",
            crate::config::ClientAuth::Trust => "trust",
        };
        rows.push(kv(&format!("{p}.auth"), auth.into()));
        if let Some(pol) = &u.policy {
            rows.push(kv(&format!("{p}.policy"), pol.name.clone()));
        }
        if let Some(b) = &u.backend {
            rows.push(kv(&format!("{p}.backend_user"), b.user.clone()));
        }
    }
    Table {
        columns: &["key", "value"],
        rows,
    }
}

fn policies(app: &App) -> Table {
    let config = app.config();
    let mut ps: Vec<_> = config.policies.values().collect();
    ps.sort_by(|a, b| a.name.cmp(&b.name));
    let rows = ps
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.mode.as_str().into(),
                p.prepared_only.to_string(),
                p.read_only.to_string(),
                p.allowlist_len().to_string(),
            ]
        })
        .collect();
    Table {
        columns: &[
            "name",
            "mode",
            "prepared_only",
            "read_only",
            "allowlist_entries",
        ],
        rows,
    }
}

fn help() -> Table {
    let rows = [
        ("SHOW POOLS", "clients and server connections per pool"),
        ("SHOW CLIENTS", "live client sessions"),
        ("SHOW SERVERS", "server connections, active and idle"),
        ("SHOW STATS", "totals per pool since start"),
        ("SHOW CONFIG", "settings (secrets redacted)"),
        ("SHOW POLICIES", "statement policies"),
        (
            "RELOAD",
            "re-read the configuration file and certificates, reopen the audit file",
        ),
    ]
    .iter()
    .map(|(c, d)| vec![c.to_string(), d.to_string()])
    .collect();
    Table {
        columns: &["command", "description"],
        rows,
    }
}

fn kv(k: &str, v: String) -> Vec<String> {
    vec![k.to_owned(), v]
}

fn mode(m: crate::config::PoolMode) -> &'static str {
    match m {
        crate::config::PoolMode::Session => "session",
        crate::config::PoolMode::Transaction => "transaction",
    }
}

fn sorted_pools(app: &App) -> Vec<Arc<crate::pool::Pool>> {
    let mut v: Vec<_> = app.pools();
    v.sort_by(|a, b| {
        (&a.key.database, &a.key.backend_user, a.key.read_only).cmp(&(
            &b.key.database,
            &b.key.backend_user,
            b.key.read_only,
        ))
    });
    v
}

fn rfc3339(t: std::time::SystemTime) -> String {
    crate::audit::encode::Rfc3339::new(t).as_str().to_owned()
}

/// RowDescription (all columns text), DataRows, CommandComplete `SHOW`.
fn put_table(out: &mut BytesMut, t: &Table, _command: &str) {
    let mut body = BytesMut::new();
    body.put_i16(t.columns.len() as i16);
    for c in t.columns {
        body.put_slice(c.as_bytes());
        body.put_u8(0);
        body.put_i32(0); // table oid
        body.put_i16(0); // column number
        body.put_i32(25); // text
        body.put_i16(-1);
        body.put_i32(-1);
        body.put_i16(0); // text format
    }
    out.put_u8(b'T');
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
    for row in &t.rows {
        body.clear();
        body.put_i16(row.len() as i16);
        for v in row {
            body.put_i32(v.len() as i32);
            body.put_slice(v.as_bytes());
        }
        out.put_u8(b'D');
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(&body);
    }
    msg::put_command_complete(out, "SHOW");
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(super::rfc3339(t), "2026-11-18T11:06:40.000000Z");
    }
}
