//! One connection from pgward to a PostgreSQL server: opening it, logging in as the backend role
//! (SCRAM-SHA-256, md5 or cleartext as the server asks), learning its parameters and cancel key,
//! and running pgward's own housekeeping queries (reset, session-state replay) on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::ServerStream;
use crate::auth::scram::{ChannelBinding, ScramClient};
use crate::auth::secret::Secret;
use crate::config::{BackendLogin, Target};
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::messages::{self as msg, TxStatus};
use crate::session::io::send_all;
use crate::session::state::{ServerBase, SessionParams};
use crate::tls::backend::BackendTls;

/// Server messages during login and housekeeping are small; a larger one is a fault.
const MAX_HOUSEKEEPING_MESSAGE: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("server closed the connection")]
    Closed,
    #[error("protocol error from server: {0}")]
    Protocol(String),
    #[error("backend login as {user:?} failed: {code} {message}")]
    LoginRejected {
        user: String,
        code: String,
        message: String,
    },
    #[error("backend password for {user:?} unavailable: {reason}")]
    NoPassword { user: String, reason: String },
    #[error(
        "server asked for a cleartext password over an unencrypted connection; set allow_cleartext_password to permit it"
    )]
    CleartextRefused,
    #[error("server requested an unsupported authentication method (code {0})")]
    UnsupportedAuth(i32),
    #[error("server error {code}: {message}")]
    Query {
        code: String,
        message: String,
        /// Which of the statements sent together failed (0-based).
        index: usize,
    },
    /// The reset of another client's state failed: the connection must not be used.
    #[error("resetting the connection failed: {code} {message}")]
    ResetFailed { code: String, message: String },
    #[error("TLS to the server: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// What a CancelRequest for this connection needs, including how to reach the server: a
/// cancel travels with the same TLS as the connection it cancels.
#[derive(Debug, Clone)]
pub struct BackendKey {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
    pub tls: Option<Arc<BackendTls>>,
}

/// An authenticated server connection in a known state (between transactions when pooled).
#[derive(Debug)]
pub struct ServerConn {
    pub id: u64,
    pub stream: ServerStream,
    /// Bytes read from the server and not yet handled. Empty whenever the connection is idle.
    pub buf: BytesMut,
    pub key: BackendKey,
    /// ParameterStatus values the server reported at login.
    pub params: Vec<(String, String)>,
    pub created: Instant,
    pub expires: Option<Instant>,
    pub last_used: Instant,
    /// What the connection is when reset: the client startup parameters it was opened with.
    pub base: ServerBase,
    /// The client-visible session state (startup parameters + tracked SETs) now in effect.
    pub applied: Option<Arc<SessionParams>>,
    /// Session state pgward cannot describe may be present: reset before anyone else uses it.
    pub dirty: bool,
    /// The session (its id, unique in the process and never reused) whose state this
    /// connection may carry; `None` when it carries nobody's (fresh, or `DISCARD ALL` ran at
    /// release). A cancel key's pid would not do: it is random, and a new session may draw the
    /// pid of one that left, and so skip the reset of what that one left behind.
    pub last_client: Option<u64>,
    /// The named statements pgward prepared on this connection (transaction mode).
    pub prepared: crate::session::prepared::ServerStatements,
}

impl ServerConn {
    /// Opens and logs in, with the client startup parameters `opened_with` (see
    /// [`ServerBase`]). The password is read from its source here, every time, so rotating the
    /// file rotates the credential for new connections.
    #[allow(clippy::too_many_arguments)]
    pub async fn connect(
        id: u64,
        opened_with: Arc<SessionParams>,
        target: &Target,
        login: &BackendLogin,
        tls: Option<&Arc<BackendTls>>,
        allow_cleartext: bool,
        timeout: Duration,
        lifetime: Option<Duration>,
    ) -> Result<ServerConn, ServerError> {
        tokio::time::timeout(
            timeout,
            Self::connect_inner(
                id,
                opened_with,
                target,
                login,
                tls,
                allow_cleartext,
                lifetime,
            ),
        )
        .await
        .map_err(|_| ServerError::Timeout(timeout))?
    }

    async fn connect_inner(
        id: u64,
        opened_with: Arc<SessionParams>,
        target: &Target,
        login: &BackendLogin,
        tls: Option<&Arc<BackendTls>>,
        allow_cleartext: bool,
        lifetime: Option<Duration>,
    ) -> Result<ServerConn, ServerError> {
        let addr_text = format!("{}:{}", target.host, target.port);
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|source| ServerError::Connect {
                addr: addr_text.clone(),
                source,
            })?;
        stream.set_nodelay(true)?;
        let addr = stream.peer_addr()?;
        let (stream, channel_binding) = match tls {
            Some(t) => {
                let (s, end_point) = t.connect(stream).await?;
                let cb = match end_point {
                    Some(h) => ChannelBinding::TlsServerEndPoint(h),
                    None => ChannelBinding::NotSupported,
                };
                (ServerStream::Tls(Box::new(s)), cb)
            }
            None => (ServerStream::Plain(stream), ChannelBinding::NotSupported),
        };
        // Cleartext passwords travel only to a server whose certificate was verified, unless
        // the operator explicitly allowed otherwise.
        let allow_cleartext = allow_cleartext || tls.is_some_and(|t| t.verified());
        let password = login.password.read().map_err(|e| ServerError::NoPassword {
            user: login.user.clone(),
            reason: e.to_string(),
        })?;
        let now = Instant::now();
        let mut conn = ServerConn {
            id,
            stream,
            buf: BytesMut::with_capacity(8192),
            key: BackendKey {
                addr,
                pid: 0,
                secret: 0,
                tls: tls.cloned(),
            },
            params: Vec::new(),
            created: now,
            expires: lifetime.map(|l| now + jittered(l)),
            last_used: now,
            // A fresh connection carries the server's defaults and what it was opened with.
            applied: Some(Arc::clone(&opened_with)),
            base: ServerBase {
                opened_with: Arc::clone(&opened_with),
                reported: Vec::new(),
            },
            dirty: false,
            last_client: None,
            prepared: Default::default(),
        };
        let mut out = BytesMut::new();
        let mut params = vec![("user", login.user.as_str()), ("database", &target.dbname)];
        if login.read_only {
            params.push(("default_transaction_read_only", "on"));
        }
        // Only allowlisted names a logged-in client used, with values the server accepted.
        params.extend(
            opened_with
                .startup
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        msg::put_startup(&mut out, &params);
        send_all(&mut conn.stream, &out).await?;
        conn.authenticate(
            &login.user,
            password.as_ref(),
            allow_cleartext,
            channel_binding,
        )
        .await?;
        conn.read_until_ready(&login.user).await?;
        conn.base.record_reported(&conn.params);
        Ok(conn)
    }

    async fn authenticate(
        &mut self,
        user: &str,
        password: Option<&Secret>,
        allow_cleartext: bool,
        channel_binding: ChannelBinding,
    ) -> Result<(), ServerError> {
        let mut scram: Option<ScramClient> = None;
        let mut scram_verified = false;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'R' => {}
                b'E' => return Err(login_error(user, &body)),
                b'N' => continue,
                other => {
                    return Err(ServerError::Protocol(format!(
                        "unexpected message '{}' during authentication",
                        other as char
                    )));
                }
            }
            let (code, data) = msg::decode_auth_request(&body)
                .map_err(|e| ServerError::Protocol(e.to_string()))?;
            let need_password = || {
                password.ok_or_else(|| ServerError::NoPassword {
                    user: user.to_owned(),
                    reason: "the server asks for a password and none is configured".into(),
                })
            };
            let mut out = BytesMut::new();
            match code {
                // Once SCRAM started, success must come after the server proved it knows the
                // verifier (SASLFinal): an impostor must not be able to skip that step.
                0 if scram.is_some() && !scram_verified => {
                    return Err(ServerError::Protocol(
                        "server skipped the SCRAM server signature".into(),
                    ));
                }
                0 => return Ok(()),
                3 => {
                    // Cleartext over a plaintext leg would expose the password on the wire.
                    if !allow_cleartext {
                        return Err(ServerError::CleartextRefused);
                    }
                    msg::put_password_bytes(&mut out, need_password()?.expose(), true);
                }
                5 => {
                    let salt: [u8; 4] = data
                        .try_into()
                        .map_err(|_| ServerError::Protocol("md5 salt is not 4 bytes".into()))?;
                    let hashed = crate::auth::scram::md5_password(user, need_password()?, salt);
                    msg::put_password_bytes(&mut out, hashed.expose(), true);
                }
                10 => {
                    let mechanisms = msg::decode_sasl_mechanisms(data)
                        .map_err(|e| ServerError::Protocol(e.to_string()))?;
                    // SCRAM-SHA-256-PLUS when the server offers it over TLS: the exchange is then
                    // bound to this TLS session, so a relaying attacker cannot complete it.
                    let mut client = ScramClient::new(
                        need_password()?,
                        channel_binding.clone(),
                        &mechanisms[..],
                    )
                    .map_err(|e| ServerError::Protocol(e.to_string()))?;
                    let first = client.client_first();
                    msg::put_sasl_initial(&mut out, client.mechanism(), &first);
                    scram = Some(client);
                }
                11 => {
                    let client = scram
                        .as_mut()
                        .ok_or_else(|| ServerError::Protocol("SASLContinue before SASL".into()))?;
                    // The key derivation (PBKDF2, thousands of HMAC rounds) takes milliseconds:
                    // on a multi-threaded runtime the worker hands its other sessions to another
                    // thread meanwhile, so opening a server connection never stalls them.
                    let mut derive = || client.server_first(data);
                    let fin =
                        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                                tokio::task::block_in_place(derive)
                            }
                            _ => derive(),
                        }
                        .map_err(|e| ServerError::Protocol(e.to_string()))?;
                    msg::put_password_bytes(&mut out, &fin, false);
                }
                12 => {
                    let client = scram
                        .as_mut()
                        .ok_or_else(|| ServerError::Protocol("SASLFinal before SASL".into()))?;
                    // A server that cannot prove it knows the verifier is not the server we meant.
                    client
                        .server_final(data)
                        .map_err(|e| ServerError::Protocol(e.to_string()))?;
                    scram_verified = true;
                    continue;
                }
                other => return Err(ServerError::UnsupportedAuth(other)),
            }
            send_all(&mut self.stream, &out).await?;
        }
    }

    /// After AuthenticationOk: ParameterStatus, BackendKeyData, then ReadyForQuery.
    async fn read_until_ready(&mut self, user: &str) -> Result<(), ServerError> {
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'S' => {
                    let (k, v) = msg::decode_parameter_status(&body)
                        .map_err(|e| ServerError::Protocol(e.to_string()))?;
                    self.params.retain(|(n, _)| n != k);
                    self.params.push((k.to_owned(), v.to_owned()));
                }
                b'K' => {
                    let (pid, secret) = msg::decode_backend_key(&body)
                        .map_err(|e| ServerError::Protocol(e.to_string()))?;
                    self.key.pid = pid;
                    self.key.secret = secret;
                }
                b'Z' => return Ok(()),
                b'E' => return Err(login_error(user, &body)),
                b'N' => {}
                other => {
                    return Err(ServerError::Protocol(format!(
                        "unexpected message '{}' after authentication",
                        other as char
                    )));
                }
            }
        }
    }

    /// Reads one whole message (bounded), for login and housekeeping only; the relay has its own
    /// zero-copy loop.
    pub async fn read_message(&mut self) -> Result<(u8, BytesMut), ServerError> {
        loop {
            if let Some(f) = frame::next_whole(&self.buf, MAX_HOUSEKEEPING_MESSAGE)
                .map_err(|e| ServerError::Protocol(e.to_string()))?
            {
                let mut m = self.buf.split_to(f.len);
                m.advance(HEADER_LEN);
                return Ok((f.tag, m));
            }
            frame::make_room(&mut self.buf);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ServerError::Closed);
            }
        }
    }

    /// Sends each statement as its own Query (pipelined: one round trip) and waits for all of
    /// them. Used for resets and session-state replay, so results are discarded; the first error
    /// is returned after the server is ready again.
    pub async fn run_queries(&mut self, queries: &[&str]) -> Result<TxStatus, ServerError> {
        let mut out = BytesMut::new();
        for q in queries {
            msg::put_query(&mut out, q);
        }
        send_all(&mut self.stream, &out).await?;
        self.wait_ready(queries.len()).await
    }

    /// Reads until `count` ReadyForQuery messages have arrived.
    pub async fn wait_ready(&mut self, count: usize) -> Result<TxStatus, ServerError> {
        let mut first_error = None;
        // ReadyForQuery messages so far: also which statement an error belongs to.
        let mut answered = 0;
        let mut status = TxStatus::Idle;
        while answered < count {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'Z' => {
                    status = msg::decode_ready(&body)
                        .map_err(|e| ServerError::Protocol(e.to_string()))?;
                    answered += 1;
                }
                b'E' if first_error.is_none() => {
                    let e = msg::decode_error(&body)
                        .map_err(|e| ServerError::Protocol(e.to_string()))?;
                    first_error = Some(ServerError::Query {
                        code: e.code.to_owned(),
                        message: e.message.to_owned(),
                        index: answered,
                    });
                }
                b'S' => {
                    if let Ok((k, v)) = msg::decode_parameter_status(&body) {
                        self.params.retain(|(n, _)| n != k);
                        self.params.push((k.to_owned(), v.to_owned()));
                    }
                }
                // Copy responses cannot come from our own statements; anything else is results.
                _ => {}
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(status),
        }
    }

    /// True if the server has closed the connection or sent something unprompted (e.g. a FATAL
    /// on shutdown) while idle. One non-blocking read, no waiting.
    pub fn is_broken(&self) -> bool {
        !self.buf.is_empty() || self.stream.closed_or_unexpected_data()
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// Best-effort polite close: Terminate if the socket takes it now, without waiting.
    pub fn close(self) {
        let mut out = BytesMut::new();
        msg::put_terminate(&mut out);
        self.stream.try_write_plain(&out);
    }
}

fn login_error(user: &str, body: &[u8]) -> ServerError {
    match msg::decode_error(body) {
        Ok(e) => ServerError::LoginRejected {
            user: user.to_owned(),
            code: e.code.to_owned(),
            message: e.message.to_owned(),
        },
        Err(e) => ServerError::Protocol(e.to_string()),
    }
}

/// Lifetime minus up to 10%, so connections opened together do not all expire together.
fn jittered(lifetime: Duration) -> Duration {
    let jitter = rand::random::<f64>() * 0.1;
    lifetime.mul_f64(1.0 - jitter)
}

/// Sends a CancelRequest for `key` on a new connection to the same server.
pub async fn send_cancel(key: BackendKey, timeout: Duration) -> std::io::Result<()> {
    let fut = async {
        let tcp = TcpStream::connect(key.addr).await?;
        let mut s = match &key.tls {
            Some(t) => ServerStream::Tls(Box::new(
                t.connect(tcp)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                    .0,
            )),
            None => ServerStream::Plain(tcp),
        };
        let mut out = BytesMut::new();
        msg::put_cancel_request(&mut out, key.pid, key.secret);
        s.write_all(&out).await?;
        s.flush().await?;
        // The server closes the connection once it has signalled the backend; waiting for that
        // makes "cancel sent" mean "cancel delivered".
        let mut sink = [0u8; 64];
        loop {
            match s.read(&mut sink).await {
                Ok(0) => break,
                Ok(_) => {}
                // A TLS peer that closes without close_notify: the cancel was delivered.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel request timed out")
    })?
}
