//! The client-facing side of TLS: the acceptor (SSLRequest flow and direct TLS), client
//! certificate verification, the handshake limits, and reloading certificate files without
//! dropping established sessions.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::identity::{ClientIdentity, tls_server_end_point};
use super::{FileWatch, TlsError, load_certs, load_key, load_roots, provider};
use crate::config::{ClientCertMode, ClientTlsSettings, TlsMinVersion};

/// The ALPN protocol name PostgreSQL 17 uses; required for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// One generation of loaded TLS material.
pub struct TlsMaterial {
    pub acceptor: TlsAcceptor,
    /// tls-server-end-point channel-binding data for our certificate; `None` if its signature
    /// algorithm has no defined hash for channel binding (then SCRAM-SHA-256-PLUS is not offered).
    pub end_point: Option<Vec<u8>>,
}

/// What the handshake established about the peer, passed down to authentication.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The verified client certificate's identity, when one was presented.
    pub identity: Option<ClientIdentity>,
    /// Channel-binding data of the certificate this session was served with.
    pub channel_binding: Option<Vec<u8>>,
}

pub struct ServerTls {
    settings: ClientTlsSettings,
    material: ArcSwap<TlsMaterial>,
    watch: FileWatch,
    handshakes: Semaphore,
}

impl ServerTls {
    pub fn load(settings: &ClientTlsSettings) -> Result<ServerTls, TlsError> {
        let material = build(settings)?;
        let mut files = vec![settings.cert.clone(), settings.key.clone()];
        files.extend(settings.client_ca.clone());
        Ok(ServerTls {
            settings: settings.clone(),
            material: ArcSwap::from_pointee(material),
            watch: FileWatch::new(files),
            handshakes: Semaphore::new(settings.max_concurrent_handshakes),
        })
    }

    pub fn settings(&self) -> &ClientTlsSettings {
        &self.settings
    }

    /// Reloads if a file changed. A broken new file leaves the current material in place and
    /// is reported; established sessions are never affected.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if !self.watch.changed() {
            return Ok(false);
        }
        let material = build(&self.settings)?;
        self.material.store(Arc::new(material));
        Ok(true)
    }

    /// Runs the server side of a handshake on `tcp`, within the handshake timeout and the cap on
    /// concurrent handshakes. `direct`: PostgreSQL 17 direct TLS, where ALPN is mandatory.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        direct: bool,
    ) -> Result<(TlsStream<TcpStream>, TlsPeer), TlsError> {
        let timeout = self.settings.handshake_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = tokio::time::timeout_at(deadline, self.handshakes.acquire())
            .await
            .map_err(|_| TlsError::Timeout)?
            .map_err(|_| TlsError::Timeout)?;
        let material = self.material.load_full();
        let stream = tokio::time::timeout_at(deadline, material.acceptor.accept(tcp))
            .await
            .map_err(|_| TlsError::Timeout)?
            .map_err(TlsError::Handshake)?;
        let conn = stream.get_ref().1;
        if direct && conn.alpn_protocol() != Some(ALPN_POSTGRESQL) {
            return Err(TlsError::Protocol(
                "direct TLS connection without the \"postgresql\" ALPN protocol".into(),
            ));
        }
        let identity = match conn.peer_certificates().and_then(|c| c.first()) {
            // The verifier has checked the chain; this only reads the names out of it.
            Some(cert) => Some(
                ClientIdentity::from_der(cert)
                    .map_err(|e| TlsError::Protocol(format!("client certificate: {e}")))?,
            ),
            None => None,
        };
        Ok((
            stream,
            TlsPeer {
                identity,
                channel_binding: material.end_point.clone(),
            },
        ))
    }
}

fn build(settings: &ClientTlsSettings) -> Result<TlsMaterial, TlsError> {
    let certs = load_certs(&settings.cert)?;
    let key = load_key(&settings.key)?;
    let end_point = match tls_server_end_point(&certs[0]) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "server certificate cannot be used for channel binding; SCRAM-SHA-256-PLUS not offered");
            None
        }
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsMinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder =
        rustls::ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
    let builder = match (&settings.client_ca, settings.client_cert) {
        (Some(ca), ClientCertMode::Optional | ClientCertMode::Required) => {
            let roots = Arc::new(load_roots(ca)?);
            // A certificate that is presented is always verified. Its absence is allowed here
            // and refused by the session for `required`, which can then say so in a proper
            // PostgreSQL error instead of a bare TLS alert.
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Protocol(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(TlsMaterial {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        end_point,
    })
}
