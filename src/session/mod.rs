//! One client's life: startup negotiation, authentication, routing to a pool, the relay loop,
//! and the cleanup that leaves the server connection clean (or closes it).

pub mod cancel;
pub mod executed;
pub mod io;
pub mod prepared;
pub mod registry;
pub mod relay;
pub mod state;
pub mod statement;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

use crate::app::{App, ClientPermit};
use crate::auth;
use crate::config::{ClientCertMode, ClientTlsMode, PoolMode};
use crate::error::ClientError;
use crate::protocol::messages::{self as msg, TxStatus};
use crate::protocol::startup::{StartupMessage, StartupPacket};
use crate::tls::server::TlsPeer;
use relay::{Relay, SessionEnd};

/// The first byte of a TLS record carrying a handshake message: a direct-TLS ClientHello.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
use state::{ServerReport, SessionParams};

/// Serves one accepted connection. `permit` is `None` when the client limit was reached: the
/// client still gets a proper 53300 error once it has said hello.
pub async fn serve(app: Arc<App>, tcp: TcpStream, peer: SocketAddr, permit: Option<ClientPermit>) {
    let deadline = tokio::time::Instant::now() + app.config().server.startup_timeout;
    if permit.is_some() {
        use crate::audit::event::{Event, EventFields};
        app.audit
            .emit(Event::new(EventFields::ConnectionAccepted).client(peer))
            .await;
    }
    let mut buf = BytesMut::with_capacity(8192);
    // The phases are boxed one by one: a task's future is as large as its largest state, and
    // an idle client (of 10,000) should hold only what its relay needs, not room for a TLS
    // handshake or a SCRAM exchange.
    let opened = tokio::time::timeout_at(deadline, Box::pin(open(&app, tcp, &mut buf, peer))).await;
    match opened {
        Ok(Opened::Plain(stream, startup)) => {
            let login = run_session(app, stream, buf, peer, permit, startup, None, deadline);
            if let Some(session) = Box::pin(login).await {
                Box::pin(relay_session(session)).await
            }
        }
        Ok(Opened::Tls(stream, tls, startup)) => {
            let login = run_session(
                app,
                *stream,
                buf,
                peer,
                permit,
                startup,
                Some(tls),
                deadline,
            );
            if let Some(session) = Box::pin(login).await {
                Box::pin(relay_session(session)).await
            }
        }
        Ok(Opened::Done) => {}
        Err(_) => tracing::info!(%peer, "startup timed out"),
    }
}

fn tls_failed(app: &App, peer: SocketAddr) {
    use crate::audit::event::{Event, EventFields};
    app.metrics.tls_handshake_failure();
    app.audit.emit_now(
        Event::new(EventFields::TlsHandshakeFailed {
            reason: crate::audit::codes::TlsFailure::Protocol,
        })
        .client(peer),
    );
}

/// The audit event and metric for a session refused before it ran anything.
async fn audit_refusal(app: &App, peer: SocketAddr, user: &str, database: &str, e: &ClientError) {
    use crate::audit::codes::{AuthFailure, RejectReason};
    use crate::audit::event::{Event, EventFields, Identity};
    use crate::metrics::AuthFailure as M;
    let auth = |reason, metric| {
        app.metrics.auth_failure(metric);
        EventFields::AuthFailed {
            method: None,
            reason,
        }
    };
    let rejected = |reason| {
        app.metrics.client_rejected();
        EventFields::ConnectionRejected { reason }
    };
    let fields = match e {
        ClientError::AuthFailed { .. } if app.config().users.contains_key(user) => {
            auth(AuthFailure::WrongPassword, M::Password)
        }
        ClientError::AuthFailed { .. } => auth(AuthFailure::UnknownUser, M::Password),
        ClientError::CertIdentityMismatch { .. } => {
            auth(AuthFailure::CertificateMismatch, M::Certificate)
        }
        ClientError::ClientCertRequired => auth(AuthFailure::CertificateRequired, M::Certificate),
        ClientError::AuthNotAllowed { .. } => auth(AuthFailure::MethodNotAllowed, M::NotAllowed),
        ClientError::TlsRequired => {
            app.metrics.auth_failure(M::TlsRequired);
            EventFields::ConnectionRejected {
                reason: RejectReason::TlsRequired,
            }
        }
        ClientError::TooManyClients => rejected(RejectReason::Limit),
        ClientError::TooManyClientsForUser { .. } => rejected(RejectReason::UserLimit),
        ClientError::UnknownDatabase { .. } => rejected(RejectReason::UnknownDatabase),
        ClientError::StartupParamRefused { .. } => rejected(RejectReason::StartupParameter),
        ClientError::ShuttingDown => rejected(RejectReason::Draining),
        ClientError::CheckoutTimeout { .. } => rejected(RejectReason::Timeout),
        ClientError::AuditUnavailable => rejected(RejectReason::AuditUnavailable),
        _ => rejected(RejectReason::Protocol),
    };
    let mut ev = Event::new(fields).client(peer);
    if !user.is_empty() {
        ev = ev.identity(Arc::new(Identity::user(user)));
    }
    if !database.is_empty() {
        ev = ev.database(database);
    }
    app.audit.emit(ev).await;
}

/// The transport a client ended up on, with its StartupMessage.
enum Opened {
    Plain(TcpStream, StartupMessage),
    Tls(Box<TlsStream<TcpStream>>, TlsPeer, StartupMessage),
    /// Answered and closed (cancel request, refusal, probe).
    Done,
}

/// Negotiates the transport: direct TLS, SSLRequest → TLS or 'N', GSSENCRequest → 'N',
/// CancelRequest, or a plaintext StartupMessage (refused when TLS is required).
async fn open(app: &Arc<App>, mut tcp: TcpStream, buf: &mut BytesMut, peer: SocketAddr) -> Opened {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) => {}
        _ => return Opened::Done,
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        // PostgreSQL 17 direct TLS: no SSLRequest, the ClientHello comes first.
        let Some(tls) = &app.client_tls else {
            tracing::info!(%peer, "direct TLS attempted but TLS is not configured");
            return Opened::Done;
        };
        return match tls.handshake(tcp, true).await {
            Ok((stream, tls_peer)) => after_handshake(app, stream, tls_peer, buf, peer).await,
            Err(e) => {
                tracing::info!(%peer, error = %e, "TLS handshake failed");
                tls_failed(app, peer);
                Opened::Done
            }
        };
    }
    // A client may ask for SSL and GSS once each before its StartupMessage.
    for _ in 0..3 {
        let packet = match io::read_startup_packet(&mut tcp, buf).await {
            Ok(Some(p)) => p,
            Ok(None) => return Opened::Done,
            Err(e) => return refuse(&mut tcp, peer, &e).await,
        };
        match packet {
            StartupPacket::SslRequest => {
                if !buf.is_empty() {
                    // Bytes pipelined behind SSLRequest were sent before the client knew the
                    // answer, so TLS cannot protect them (the CVE-2021-23214 class).
                    let e = ClientError::ProtocolViolation {
                        reason: "data sent after SSLRequest before the TLS handshake".into(),
                    };
                    return refuse(&mut tcp, peer, &e).await;
                }
                let Some(tls) = &app.client_tls else {
                    if tcp.write_all(b"N").await.is_err() {
                        return Opened::Done;
                    }
                    continue;
                };
                if tcp.write_all(b"S").await.is_err() {
                    return Opened::Done;
                }
                return match tls.handshake(tcp, false).await {
                    Ok((stream, tls_peer)) => {
                        after_handshake(app, stream, tls_peer, buf, peer).await
                    }
                    Err(e) => {
                        tracing::info!(%peer, error = %e, "TLS handshake failed");
                        tls_failed(app, peer);
                        Opened::Done
                    }
                };
            }
            StartupPacket::GssEncRequest => {
                if !buf.is_empty() || tcp.write_all(b"N").await.is_err() {
                    return Opened::Done;
                }
            }
            StartupPacket::Cancel(key) => {
                // Cancels are accepted in plaintext even where TLS is required: libpq sends
                // them that way, and the key is useless once the query it names is done.
                app.cancels.cancel(key, app.cancel_timeout()).await;
                return Opened::Done;
            }
            StartupPacket::Startup(m) => {
                let required = app
                    .client_tls
                    .as_ref()
                    .is_some_and(|t| t.settings().mode == ClientTlsMode::Require);
                if required {
                    return refuse(&mut tcp, peer, &ClientError::TlsRequired).await;
                }
                return Opened::Plain(tcp, m);
            }
        }
    }
    let e = ClientError::ProtocolViolation {
        reason: "too many encryption requests".into(),
    };
    refuse(&mut tcp, peer, &e).await
}

/// Over TLS only a StartupMessage or a CancelRequest may follow.
async fn after_handshake(
    app: &Arc<App>,
    mut stream: TlsStream<TcpStream>,
    tls_peer: TlsPeer,
    buf: &mut BytesMut,
    peer: SocketAddr,
) -> Opened {
    match io::read_startup_packet(&mut stream, buf).await {
        Ok(Some(StartupPacket::Startup(m))) => Opened::Tls(Box::new(stream), tls_peer, m),
        Ok(Some(StartupPacket::Cancel(key))) => {
            app.cancels.cancel(key, app.cancel_timeout()).await;
            Opened::Done
        }
        Ok(Some(_)) => {
            let e = ClientError::ProtocolViolation {
                reason: "encryption request inside TLS".into(),
            };
            refuse(&mut stream, peer, &e).await
        }
        Ok(None) => Opened::Done,
        Err(e) => refuse(&mut stream, peer, &e).await,
    }
}

async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    e: &ClientError,
) -> Opened {
    tracing::info!(%peer, sqlstate = e.sqlstate(), reason = %e.message(), "connection refused");
    send_fatal(stream, e).await;
    Opened::Done
}

/// Authentication and routing, on whichever transport the client is on: logs a client in and
/// builds its relay; `None` when the session ended here (refused, an admin console session, a
/// failed write). The login's state is dropped before the relay runs ([`relay_session`]): a
/// task's future is as large as its largest state, and what an idle client holds should be its
/// relay, not the leftovers of its login.
#[allow(clippy::too_many_arguments)]
async fn run_session<S>(
    app: Arc<App>,
    mut stream: S,
    mut buf: BytesMut,
    peer: SocketAddr,
    permit: Option<ClientPermit>,
    startup: StartupMessage,
    tls: Option<TlsPeer>,
    deadline: tokio::time::Instant,
) -> Option<LoggedIn<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // What the client claims, for the audit trail of a refusal (not yet authenticated).
    let claimed_user = startup.param("user").unwrap_or_default().to_owned();
    let claimed_db = startup
        .param("database")
        .unwrap_or(&claimed_user)
        .to_owned();
    let application_name = startup.param("application_name").map(str::to_owned);
    let cert = tls.as_ref().and_then(|t| t.identity.clone());
    let begun = tokio::time::timeout_at(
        deadline,
        Box::pin(begin(
            &app,
            &mut stream,
            &mut buf,
            peer,
            permit.is_some(),
            startup,
            tls.as_ref(),
        )),
    )
    .await;
    let begun = match begun {
        Ok(Ok(Started::Session(b))) => *b,
        Ok(Ok(Started::Admin {
            user_name,
            user_permit,
        })) => {
            Box::pin(crate::admin::serve(
                &app,
                &mut stream,
                buf,
                &user_name,
                peer,
            ))
            .await;
            drop(user_permit);
            drop(permit);
            return None;
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, sqlstate = e.sqlstate(), reason = %e.message(), "connection refused");
            audit_refusal(&app, peer, &claimed_user, &claimed_db, &e).await;
            send_fatal(&mut stream, &e).await;
            return None;
        }
        Err(_) => {
            tracing::info!(%peer, "startup timed out");
            audit_refusal(
                &app,
                peer,
                &claimed_user,
                &claimed_db,
                &ClientError::ProtocolViolation {
                    reason: String::new(),
                },
            )
            .await;
            send_fatal(
                &mut stream,
                &ClientError::ProtocolViolation {
                    reason: "startup and authentication did not finish in time".into(),
                },
            )
            .await;
            return None;
        }
    };
    let Begun {
        pool,
        server,
        reported,
        params,
        user_permit,
        user_name,
        cert_expires,
        policy,
        generation,
    } = begun;
    let cancel = app.cancels.register();
    let mut out = BytesMut::with_capacity(reported.messages().len() + 64);
    out.extend_from_slice(reported.messages());
    msg::put_backend_key(&mut out, cancel.key.pid, cancel.key.secret);
    msg::put_ready(&mut out, TxStatus::Idle);
    if io::send_all(&mut stream, &out).await.is_err() {
        return None;
    }
    let sid = app.sessions.next_sid();
    let mut server = server;
    if let Some(s) = server.as_mut() {
        s.last_client = Some(sid);
    }
    let mut login_server = None;
    // Transaction mode: the login connection goes back right away; session mode keeps it.
    if pool.settings().mode == PoolMode::Transaction {
        if let Some(mut s) = server.take() {
            // Prepared for this client at login: its next transaction needs no reset.
            s.applied = Some(Arc::clone(&params));
            login_server = Some(s.id);
            s.release();
        }
    } else if let Some(s) = &server {
        cancel.slot.attach(s.key.clone());
    }
    // Every line the relay logs names the client it is about.
    let span = tracing::info_span!(
        "session",
        %peer,
        user = %user_name,
        database = %pool.key.database,
        backend_user = %pool.key.backend_user,
        tls = tls.is_some(),
    );
    tracing::debug!(parent: &span, "session started");
    let registered = app.sessions.register(
        sid,
        registry::NewSession {
            peer,
            user: user_name.clone(),
            database: pool.key.database.clone(),
            backend_user: pool.key.backend_user.clone(),
            tls: tls.is_some(),
            cert_identity: tls
                .as_ref()
                .and_then(|t| t.identity.as_ref())
                .and_then(|i| i.label()),
        },
    );
    let identity = {
        let id = crate::audit::event::Identity::user(user_name.clone());
        Arc::new(match &cert {
            Some(c) => id.with_certificate(c),
            None => id,
        })
    };
    let audit_ctx = relay::AuditContext {
        sid: registered.info.sid,
        peer,
        identity: Arc::clone(&identity),
        database: Arc::from(pool.key.database.as_str()),
    };
    {
        use crate::audit::event::{Event, EventFields, SessionStarted};
        let backend_role: Arc<str> = Arc::from(pool.key.backend_user.as_str());
        let ev = |fields| {
            Event::new(fields)
                .sid(registered.info.sid)
                .client(peer)
                .identity(Arc::clone(&identity))
                .database(pool.key.database.as_str())
        };
        let method = match (&cert, tls.as_ref().and_then(|t| t.channel_binding.as_ref())) {
            (Some(_), _) => crate::audit::codes::AuthMethod::Cert,
            _ => crate::audit::codes::AuthMethod::Scram,
        };
        app.audit
            .emit(ev(EventFields::AuthSucceeded {
                method,
                backend_role: Some(Arc::clone(&backend_role)),
            }))
            .await;
        app.audit
            .emit(ev(EventFields::SessionStarted(SessionStarted {
                backend_role: Some(backend_role),
                pool_mode: Some(pool.settings().mode),
                policy: policy.as_ref().map(|p| Arc::from(p.name.as_str())),
                tls: tls.is_some(),
                application_name,
            })))
            .await;
    }
    let gauge = app.metrics.client_connection();
    let audit_app = Arc::clone(&app);
    let relay = Relay::new(app, stream, buf, pool, server, params, cancel)
        .with_deadline(cert_expires)
        .with_policy(policy, &user_name)
        .routed_at(generation)
        .after_login_on(login_server)
        .with_info(Arc::clone(&registered.info), gauge, audit_ctx);
    Some(LoggedIn {
        relay: Box::new(relay),
        span,
        peer,
        registered,
        identity,
        app: audit_app,
        _user_permit: user_permit,
        _permit: permit,
    })
}

/// A logged-in client: its relay, and what its session's end needs.
struct LoggedIn<S> {
    relay: Box<Relay<S>>,
    span: tracing::Span,
    peer: SocketAddr,
    registered: registry::Registered,
    identity: Arc<crate::audit::event::Identity>,
    app: Arc<App>,
    /// Held for the session's life: they count it against the user's and the server's limits.
    _user_permit: ClientPermit,
    _permit: Option<ClientPermit>,
}

/// Relays a logged-in client's session, then logs and audits its end.
async fn relay_session<S>(session: LoggedIn<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The rest of `session` (registry entry, permits) is dropped at the end, once the end is
    // logged and audited.
    let peer = session.peer;
    let end = session.relay.run().instrument(session.span).await;
    match &end {
        SessionEnd::ClientClosed => tracing::debug!(%peer, "session ended"),
        SessionEnd::Io(e) => tracing::debug!(%peer, error = %e, "session ended by i/o error"),
        SessionEnd::ClientError(e) => {
            tracing::info!(%peer, sqlstate = e.sqlstate(), reason = %e.message(), "session ended")
        }
    }
    {
        use crate::audit::codes::EndReason;
        use crate::audit::event::{Event, EventFields, SessionEnded};
        use std::sync::atomic::Ordering::Relaxed;
        let i = &session.registered.info;
        let reason = match &end {
            SessionEnd::ClientClosed => EndReason::Terminate,
            SessionEnd::Io(_) => EndReason::Disconnect,
            SessionEnd::ClientError(e) => match e {
                ClientError::ClientIdleTimeout => EndReason::IdleTimeout,
                ClientError::IdleInTransactionTimeout => EndReason::IdleInTransactionTimeout,
                ClientError::ShuttingDown => EndReason::Shutdown,
                ClientError::ProtocolViolation { .. } => EndReason::ProtocolError,
                ClientError::PolicyUnenforceable { .. } => EndReason::PolicyChanged,
                _ => EndReason::ServerError,
            },
        };
        session
            .app
            .audit
            .emit(
                Event::new(EventFields::SessionEnded(SessionEnded {
                    duration: i.started.elapsed().unwrap_or_default(),
                    transactions: i.transactions.load(Relaxed),
                    statements: i.queries.load(Relaxed),
                    bytes_in: i.bytes_from_client.load(Relaxed),
                    bytes_out: i.bytes_to_client.load(Relaxed),
                    reason,
                }))
                .sid(i.sid)
                .client(peer)
                .identity(session.identity)
                .database(i.database.as_str()),
            )
            .await;
    }
}

struct Begun {
    pool: Arc<crate::pool::Pool>,
    /// The connection the login took; none when the pool answered for the server.
    server: Option<crate::pool::PoolGuard>,
    /// The server's parameters the client is told (ParameterStatus).
    reported: Arc<ServerReport>,
    params: Arc<SessionParams>,
    user_permit: ClientPermit,
    user_name: String,
    /// When the session must end because its client certificate expires.
    cert_expires: Option<std::time::SystemTime>,
    /// The user's statement policy, if active.
    policy: Option<Arc<crate::policy::Policy>>,
    /// The configuration generation the session authenticated and routed with.
    generation: u64,
}

/// Startup packet, negotiation, authentication, routing and the first server checkout.
async fn begin<S: AsyncRead + AsyncWrite + Unpin>(
    app: &Arc<App>,
    stream: &mut S,
    buf: &mut BytesMut,
    peer: SocketAddr,
    admitted: bool,
    startup: StartupMessage,
    tls: Option<&TlsPeer>,
) -> Result<Started, ClientError> {
    if !admitted {
        return Err(ClientError::TooManyClients);
    }
    if startup.minor_version > 0 || !startup.unknown_protocol_options.is_empty() {
        // PostgreSQL 15 behaviour: speak 3.0 and name the options we ignore.
        let mut out = BytesMut::new();
        msg::put_negotiate_protocol_version(&mut out, 0, &startup.unknown_protocol_options);
        io::send_all(stream, &out)
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
    let tls_settings = app.client_tls.as_ref().map(|t| t.settings());
    let identity = tls.and_then(|t| t.identity.as_ref());
    if tls_settings.is_some_and(|t| t.client_cert == ClientCertMode::Required) && identity.is_none()
    {
        return Err(ClientError::ClientCertRequired);
    }
    let cert_expires = identity
        .filter(|_| tls_settings.is_some_and(|t| t.end_session_on_cert_expiry))
        .map(|i| i.not_after);
    if !app.audit.accepting_sessions() {
        // fail_closed: no session runs unaudited while the audit sink is failing.
        return Err(ClientError::AuditUnavailable);
    }
    // One snapshot for authentication and routing, even if a reload lands in between.
    let routing = app.routing();
    let user =
        auth::client::authenticate(stream, buf, &routing.config, &user_name, peer, tls).await?;
    let user_permit = app
        .admit_user(&user)
        .ok_or_else(|| ClientError::TooManyClientsForUser {
            user: user.name.clone(),
        })?;
    if database == crate::admin::ADMIN_DATABASE {
        if !routing.config.server.admin_users.contains(&user.name) {
            return Err(ClientError::AdminNotAllowed {
                user: user.name.clone(),
            });
        }
        return Ok(Started::Admin {
            user_name,
            user_permit,
        });
    }
    let policy = user.policy.clone().filter(|p| p.active());
    if policy.is_some() {
        // The policy reads SQL as UTF-8; a client encoding like SJIS can make a backslash
        // part of a character, and PostgreSQL would then read a statement differently.
        let encoding = params
            .startup
            .iter()
            .find(|(k, _)| k == "client_encoding")
            .map(|(_, v)| v.to_ascii_lowercase().replace(['-', '_'], ""));
        if encoding.is_some_and(|e| e != "utf8" && e != "unicode") {
            return Err(ClientError::StartupParamRefused {
                name: "client_encoding (a statement policy requires UTF8)".into(),
            });
        }
    }
    let pool = routing.route(&user, &database)?;
    let params = Arc::new(params);
    // In transaction mode the login's connection goes straight back: a login with parameters
    // the server accepted moments ago is told what that login was told, and takes no server
    // connection (it would wait behind every running transaction for one when the pool is
    // busy, and the server would reset it twice: for the login and for the first transaction).
    let recent = (pool.settings().mode == PoolMode::Transaction)
        .then(|| pool.login_report(&params))
        .flatten();
    let (server, reported) = match recent {
        Some(reported) => (None, reported),
        None => {
            let (server, reported) = check_out_at_login(&pool, &params, &database).await?;
            (Some(server), reported)
        }
    };
    if policy.is_some() && !conforming_strings(reported.params()) {
        // With it off the server reads backslashes in strings as escapes, unlike the policy.
        tracing::error!(pool = ?pool.key, "standard_conforming_strings is off on the server; statement policies need it on");
        if let Some(s) = server {
            s.release();
        }
        return Err(ClientError::ServerUnavailable { database });
    }
    Ok(Started::Session(Box::new(Begun {
        pool,
        server,
        reported,
        params,
        user_permit,
        user_name,
        cert_expires,
        policy,
        generation: routing.generation,
    })))
}

/// Takes a server connection for a login: the client learns at login, as with PostgreSQL,
/// whether its database is reachable and whether its startup parameters are valid, and is told
/// the server's real parameters (returned beside the connection, and kept by the pool for the
/// next login with the same parameters).
async fn check_out_at_login(
    pool: &Arc<crate::pool::Pool>,
    params: &Arc<SessionParams>,
    database: &str,
) -> Result<(crate::pool::PoolGuard, Arc<ServerReport>), ClientError> {
    // A connection opened for it now is opened without its parameters unless the server
    // accepted the same ones before: should the server refuse one, the client is told so
    // below, and no pool connection fails to open.
    let base = pool.client_base(params);
    let mut server = pool
        .checkout_preferring(None, &base)
        .await
        .map_err(|e| match e {
            crate::pool::CheckoutError::Timeout(d) => ClientError::CheckoutTimeout {
                database: database.to_owned(),
                waited_ms: d.as_millis() as u64,
            },
            other => {
                tracing::warn!(pool = ?pool.key, error = %other, "no server for a new client");
                ClientError::ServerUnavailable {
                    database: database.to_owned(),
                }
            }
        })?;
    // A connection another client used is reset before this one sees it.
    let reset = server.last_client.is_some() && pool.database.reset_on_handover;
    if let Err(e) = relay::prepare_server(&mut server, params, reset).await {
        server.discard();
        return Err(match e {
            crate::pool::ServerError::Query { message, .. } => ClientError::StartupParamRefused {
                name: format!("value rejected by the server: {message}"),
            },
            e @ crate::pool::ServerError::ResetFailed { .. } => {
                tracing::warn!(error = %e, "the hand-over reset failed at login; the server connection is closed");
                ClientError::ServerResetFailed
            }
            other => {
                tracing::warn!(error = %other, "applying startup parameters failed");
                ClientError::ServerUnavailable {
                    database: database.to_owned(),
                }
            }
        });
    }
    pool.accept_base(&base);
    let reported = Arc::new(ServerReport::new(&server.params));
    pool.record_login(params, &reported);
    Ok((server, reported))
}

/// Whether the server reads backslashes in string literals as PostgreSQL's standard says (a
/// statement policy reads them so).
fn conforming_strings(reported: &[(String, String)]) -> bool {
    !reported
        .iter()
        .any(|(k, v)| k == "standard_conforming_strings" && v != "on")
}

/// What a successful start leads to.
enum Started {
    Session(Box<Begun>),
    /// The admin console (database `pgward`, an admin user).
    Admin {
        user_name: String,
        user_permit: ClientPermit,
    },
}

async fn send_fatal<S: AsyncWrite + Unpin>(stream: &mut S, e: &ClientError) {
    let mut out = BytesMut::new();
    e.write_to(&mut out);
    let _ = io::send_all(stream, &out).await;
    let _ = stream.shutdown().await;
}
