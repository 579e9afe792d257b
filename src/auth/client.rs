//! Client authentication: who is this client? SCRAM-SHA-256 against the configured verifier, or
//! `trust` for loopback clients of users configured that way. Unknown users get the same SCRAM
//! exchange against a mock verifier and fail at the same point with the same error as a wrong
//! password, so the set of users cannot be probed. md5 is never offered.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::scram::{self, ChannelBinding, ScramError, ScramServer};
use crate::config::{ClientAuth, Config, User};
use crate::error::ClientError;
use crate::protocol::messages as msg;
use crate::session::io::{read_client_frame, send_all};
use crate::tls::identity::CertIdentity;
use crate::tls::server::TlsPeer;

/// SCRAM messages are a few hundred bytes; PostgreSQL caps authentication messages similarly.
const MAX_AUTH_MESSAGE: usize = 2048;

/// Runs the authentication exchange. On success AuthenticationOk has been sent.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    config: &Config,
    user_name: &str,
    peer: SocketAddr,
    tls: Option<&TlsPeer>,
) -> Result<Arc<User>, ClientError> {
    let user = config.users.get(user_name).cloned();
    let mut out = BytesMut::new();
    let has_cert = tls.is_some_and(|t| t.identity.is_some());
    let mock = || Some(config.mock_auth.verifier_for(user_name));
    let (verifier, is_mock) = match user.as_deref().map(|u| &u.auth) {
        Some(ClientAuth::Trust) if peer.ip().is_loopback() => (None, false),
        Some(ClientAuth::Scram(v)) => (Some(v.clone()), false),
        // A certificate user asked for without any certificate is treated like an unknown
        // user, so probing without a certificate cannot tell which certificate users exist.
        // (A client holding a certificate from our CA is told about a mismatch.)
        Some(ClientAuth::Cert(_) | ClientAuth::CertAndScram(..)) if !has_cert => (mock(), true),
        Some(ClientAuth::Cert(expected)) => {
            check_certificate(tls, expected, user_name, peer)?;
            (None, false)
        }
        Some(ClientAuth::CertAndScram(expected, v)) => {
            check_certificate(tls, expected, user_name, peer)?;
            (Some(v.clone()), false)
        }
        // Unknown users, and trust users connecting from elsewhere, go through a mock exchange.
        None | Some(ClientAuth::Trust) => (mock(), true),
    };
    let Some(verifier) = verifier else {
        // Trust from loopback, or a certificate that matched: no password exchange.
        msg::put_auth_ok(&mut out);
        send_all(stream, &out).await.map_err(io_closed)?;
        return user.ok_or(ClientError::AuthFailed {
            user: user_name.into(),
        });
    };
    // On TLS, offer SCRAM-SHA-256-PLUS bound to the certificate this session was served with.
    let cb = match tls.and_then(|t| t.channel_binding.as_ref()) {
        Some(end_point) => ChannelBinding::TlsServerEndPoint(end_point.clone()),
        None => ChannelBinding::NotSupported,
    };
    let mechanisms = scram::mechanisms(&cb);
    let mut scram = ScramServer::new(verifier, is_mock, cb);
    msg::put_auth_sasl(&mut out, mechanisms);
    send_all(stream, &out).await.map_err(io_closed)?;

    let fail = |e: ScramError| -> ClientError {
        if e.is_protocol_violation() {
            tracing::info!(user = user_name, %peer, error = %e, "SCRAM protocol violation");
            ClientError::ProtocolViolation {
                reason: "malformed SCRAM message".into(),
            }
        } else {
            tracing::info!(user = user_name, %peer, "authentication failed");
            ClientError::AuthFailed {
                user: user_name.into(),
            }
        }
    };

    let body = expect_password_message(stream, buf).await?;
    let (mechanism, data) =
        msg::decode_sasl_initial(&body).map_err(|e| ClientError::ProtocolViolation {
            reason: e.to_string(),
        })?;
    let server_first = scram.client_first(mechanism, data).map_err(fail)?;
    out.clear();
    msg::put_auth_sasl_continue(&mut out, &server_first);
    send_all(stream, &out).await.map_err(io_closed)?;

    let body = expect_password_message(stream, buf).await?;
    let server_final = scram.client_final(&body).map_err(fail)?;
    let user = user.ok_or(ClientError::AuthFailed {
        user: user_name.into(),
    })?;
    out.clear();
    msg::put_auth_sasl_final(&mut out, &server_final);
    msg::put_auth_ok(&mut out);
    send_all(stream, &out).await.map_err(io_closed)?;
    Ok(user)
}

/// The client certificate must be there and carry the identity the user is configured with.
fn check_certificate(
    tls: Option<&TlsPeer>,
    expected: &CertIdentity,
    user_name: &str,
    peer: SocketAddr,
) -> Result<(), ClientError> {
    let Some(identity) = tls.and_then(|t| t.identity.as_ref()) else {
        tracing::info!(user = user_name, %peer, "certificate authentication without a client certificate");
        return Err(ClientError::ClientCertRequired);
    };
    if !identity.matches(expected) {
        // Fit for audit: who claimed to be whom, with which certificate.
        tracing::warn!(
            user = user_name,
            %peer,
            expected = %expected,
            certificate = %identity.describe(),
            "client certificate does not match the requested user"
        );
        return Err(ClientError::CertIdentityMismatch {
            user: user_name.into(),
        });
    }
    Ok(())
}

async fn expect_password_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<BytesMut, ClientError> {
    match read_client_frame(stream, buf, MAX_AUTH_MESSAGE).await {
        Ok(Some((b'p', body))) => Ok(body),
        Ok(Some((tag, _))) => Err(ClientError::ProtocolViolation {
            reason: format!("expected a password message, got message type {tag}"),
        }),
        // libpq hangs up here to ask the user for a password, then reconnects.
        Ok(None) => Err(ClientError::ProtocolViolation {
            reason: "client closed the connection during authentication".into(),
        }),
        Err(e) => Err(e),
    }
}

fn io_closed(_: std::io::Error) -> ClientError {
    ClientError::ProtocolViolation {
        reason: "connection lost during authentication".into(),
    }
}
