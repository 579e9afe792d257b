//! One client's life: startup negotiation, authentication, routing to a pool, the relay loop,
//! and the cleanup that leaves the server connection clean (or closes it).

pub mod cancel;
pub mod io;
pub mod relay;
pub mod state;
pub mod statement;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use crate::app::{App, ClientPermit};
use crate::auth;
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::protocol::messages::{self as msg, TxStatus};
use crate::protocol::startup::{StartupMessage, StartupPacket};
use relay::{Relay, SessionEnd};
use state::SessionParams;

/// Serves one accepted connection. `permit` is `None` when the client limit was reached: the
/// client still gets a proper 53300 error once it has said hello.
pub async fn serve<S>(app: Arc<App>, mut stream: S, peer: SocketAddr, permit: Option<ClientPermit>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(8192);
    let startup_timeout = app.config.server.startup_timeout;
    let begun = tokio::time::timeout(
        startup_timeout,
        begin(&app, &mut stream, &mut buf, peer, permit.is_some()),
    )
    .await;
    let begun = match begun {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::info!(%peer, sqlstate = e.sqlstate(), reason = %e.message(), "connection refused");
            send_fatal(&mut stream, &e).await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "startup timed out");
            send_fatal(
                &mut stream,
                &ClientError::ProtocolViolation {
                    reason: "startup and authentication did not finish in time".into(),
                },
            )
            .await;
            return;
        }
    };
    let Begun {
        pool,
        server,
        params,
        user_permit,
        user_name,
    } = begun;
    let cancel = app.cancels.register();
    let mut out = BytesMut::new();
    if let Some(server) = &server {
        for (k, v) in &server.params {
            msg::put_parameter_status(&mut out, k, v);
        }
    }
    msg::put_backend_key(&mut out, cancel.key.pid, cancel.key.secret);
    msg::put_ready(&mut out, TxStatus::Idle);
    if stream.write_all(&out).await.is_err() {
        return;
    }
    let mut server = server;
    // Transaction mode: the login connection goes back right away; session mode keeps it.
    if pool.settings().mode == PoolMode::Transaction {
        if let Some(s) = server.take() {
            let mut s = s;
            s.applied = Some(Arc::clone(&params));
            s.release();
        }
    } else if let Some(s) = &server {
        cancel.slot.attach(s.key);
    }
    // Every line the relay logs names the client it is about.
    let span = tracing::info_span!(
        "session",
        %peer,
        user = %user_name,
        database = %pool.key.database,
        backend_user = %pool.key.backend_user,
    );
    tracing::debug!(parent: &span, "session started");
    let end = Relay::new(app, stream, buf, pool, server, params, cancel)
        .run()
        .instrument(span)
        .await;
    match end {
        SessionEnd::ClientClosed => tracing::debug!(%peer, "session ended"),
        SessionEnd::Io(e) => tracing::debug!(%peer, error = %e, "session ended by i/o error"),
        SessionEnd::ClientError(e) => {
            tracing::info!(%peer, sqlstate = e.sqlstate(), reason = %e.message(), "session ended")
        }
    }
    drop(user_permit);
    drop(permit);
}

struct Begun {
    pool: Arc<crate::pool::Pool>,
    server: Option<crate::pool::PoolGuard>,
    params: Arc<SessionParams>,
    user_permit: ClientPermit,
    user_name: String,
}

/// Startup packet, negotiation, authentication, routing and the first server checkout.
async fn begin<S: AsyncRead + AsyncWrite + Unpin>(
    app: &Arc<App>,
    stream: &mut S,
    buf: &mut BytesMut,
    peer: SocketAddr,
    admitted: bool,
) -> Result<Option<Begun>, ClientError> {
    let startup = match negotiate(app, stream, buf).await? {
        Some(s) => s,
        None => return Ok(None),
    };
    if !admitted {
        return Err(ClientError::TooManyClients);
    }
    if startup.minor_version > 0 || !startup.unknown_protocol_options.is_empty() {
        // PostgreSQL 15 behaviour: speak 3.0 and name the options we ignore.
        let mut out = BytesMut::new();
        msg::put_negotiate_protocol_version(&mut out, 0, &startup.unknown_protocol_options);
        stream
            .write_all(&out)
            .await
            .map_err(|_| ClientError::ProtocolViolation {
                reason: "connection lost".into(),
            })?;
    }
    let user_name = startup
        .param("user")
        .filter(|u| !u.is_empty())
        .ok_or(ClientError::NoUser)?
        .to_owned();
    let database = startup
        .param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user_name)
        .to_owned();
    for refused in ["options", "replication"] {
        if startup.param(refused).is_some() {
            return Err(ClientError::StartupParamRefused {
                name: refused.into(),
            });
        }
    }
    let params = SessionParams::from_startup(&startup.params)?;
    let user = auth::client::authenticate(stream, buf, &app.config, &user_name, peer).await?;
    let user_permit = app
        .admit_user(&user)
        .ok_or_else(|| ClientError::TooManyClientsForUser {
            user: user.name.clone(),
        })?;
    let pool = app.route(&user, &database)?;
    let params = Arc::new(params);
    // Take a server now: the client learns at login, as with PostgreSQL, whether its database
    // is reachable and whether its startup parameters are valid; and it is told the server's
    // real parameters.
    let mut server = pool.checkout().await.map_err(|e| match e {
        crate::pool::CheckoutError::Timeout(d) => ClientError::CheckoutTimeout {
            database: database.clone(),
            waited_ms: d.as_millis() as u64,
        },
        other => {
            tracing::warn!(pool = ?pool.key, error = %other, "no server for a new client");
            ClientError::ServerUnavailable {
                database: database.clone(),
            }
        }
    })?;
    if let Err(e) = relay::prepare_server(&mut server, &params).await {
        server.discard();
        return Err(match e {
            crate::pool::ServerError::Query { code: _, message } => {
                ClientError::StartupParamRefused {
                    name: format!("value rejected by the server: {message}"),
                }
            }
            other => {
                tracing::warn!(error = %other, "applying startup parameters failed");
                ClientError::ServerUnavailable { database }
            }
        });
    }
    Ok(Some(Begun {
        pool,
        server: Some(server),
        params,
        user_permit,
        user_name,
    }))
}

/// SSLRequest and GSSENCRequest are answered 'N' (no TLS on this listener yet); CancelRequest
/// is forwarded; the StartupMessage is returned.
async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    app: &Arc<App>,
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Option<StartupMessage>, ClientError> {
    // A client may ask for SSL and GSS once each before its StartupMessage.
    for _ in 0..3 {
        let Some(packet) = io::read_startup_packet(stream, buf).await? else {
            return Ok(None);
        };
        match packet {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                if !buf.is_empty() {
                    // Bytes pipelined behind an encryption request were sent before the
                    // client knew the answer (the CVE-2021-23214 class): refuse them.
                    return Err(ClientError::ProtocolViolation {
                        reason: "data sent before the answer to an encryption request".into(),
                    });
                }
                stream
                    .write_all(b"N")
                    .await
                    .map_err(|_| ClientError::ProtocolViolation {
                        reason: "connection lost".into(),
                    })?;
            }
            StartupPacket::Cancel(key) => {
                let app = Arc::clone(app);
                app.cancels.cancel(key, app.cancel_timeout()).await;
                return Ok(None);
            }
            StartupPacket::Startup(m) => return Ok(Some(m)),
        }
    }
    Err(ClientError::ProtocolViolation {
        reason: "too many encryption requests".into(),
    })
}

async fn send_fatal<S: AsyncWrite + Unpin>(stream: &mut S, e: &ClientError) {
    let mut out = BytesMut::new();
    e.write_to(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
