//! TLS from pgward to PostgreSQL: SSLRequest, then a handshake whose verification is the
//! database's `backend_tls.mode` — `verify-full` (chain and name), `verify-ca` (chain only) or
//! `require` (encryption without authentication, spelled `dangerous` in the code).

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::identity::tls_server_end_point;
use super::server::ALPN_POSTGRESQL;
use super::{FileWatch, TlsError, load_certs, load_key, load_roots, provider};
use crate::config::{BackendTlsMode, BackendTlsSettings};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

pub struct BackendTls {
    settings: BackendTlsSettings,
    server_name: ServerName<'static>,
    connector: ArcSwap<TlsConnector>,
    watch: FileWatch,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("mode", &self.settings.mode)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl BackendTls {
    /// `None` for `mode = "disable"`.
    pub fn new(settings: &BackendTlsSettings, host: &str) -> Result<Option<BackendTls>, TlsError> {
        if settings.mode == BackendTlsMode::Disable {
            return Ok(None);
        }
        let name = settings.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| TlsError::Protocol(format!("{name:?} is not a valid server name")))?;
        let connector = build(settings)?;
        let mut files: Vec<_> = settings.ca.iter().cloned().collect();
        if let Some((c, k)) = &settings.client_cert {
            files.push(c.clone());
            files.push(k.clone());
        }
        Ok(Some(BackendTls {
            settings: settings.clone(),
            server_name,
            connector: ArcSwap::from_pointee(connector),
            watch: FileWatch::new(files),
        }))
    }

    /// The server's identity is verified: passwords and tokens may travel over this leg.
    pub fn verified(&self) -> bool {
        self.settings.verified()
    }

    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if !self.watch.changed() {
            return Ok(false);
        }
        self.connector.store(Arc::new(build(&self.settings)?));
        Ok(true)
    }

    /// SSLRequest and handshake on a fresh connection. Returns the stream and the
    /// tls-server-end-point data of the server's certificate (for SCRAM-SHA-256-PLUS).
    pub async fn connect(
        &self,
        mut tcp: TcpStream,
    ) -> Result<(TlsStream<TcpStream>, Option<Vec<u8>>), TlsError> {
        tcp.write_all(&SSL_REQUEST)
            .await
            .map_err(TlsError::Handshake)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer)
            .await
            .map_err(TlsError::Handshake)?;
        match answer[0] {
            b'S' => {}
            b'N' => {
                return Err(TlsError::Protocol(
                    "the server does not accept TLS connections".into(),
                ));
            }
            other => {
                return Err(TlsError::Protocol(format!(
                    "unexpected answer {other:#04x} to SSLRequest"
                )));
            }
        }
        // Bytes after 'S' were sent before the handshake, so nothing protects them: a
        // man in the middle could inject them (the CVE-2021-23214 class).
        let mut probe = [0u8; 1];
        match tcp.try_read(&mut probe) {
            Ok(0) => return Err(TlsError::Protocol("server closed after 'S'".into())),
            Ok(_) => {
                return Err(TlsError::Protocol(
                    "server sent unencrypted data after agreeing to TLS".into(),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(TlsError::Handshake(e)),
        }
        let connector = self.connector.load_full();
        let stream = connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(TlsError::Handshake)?;
        let end_point = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| tls_server_end_point(c).ok());
        Ok((stream, end_point))
    }
}

fn build(settings: &BackendTlsSettings) -> Result<TlsConnector, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
        BackendTlsMode::VerifyFull | BackendTlsMode::VerifyCa => {
            let ca = settings
                .ca
                .as_ref()
                .ok_or_else(|| TlsError::Protocol("verification needs a CA bundle".into()))?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Protocol(format!("CA bundle: {e}")))?;
            if settings.mode == BackendTlsMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnlyVerifier(webpki))
            }
        }
        BackendTlsMode::Require => Arc::new(DangerousUnverifiedServer(provider())),
        BackendTlsMode::Disable => {
            return Err(TlsError::Protocol(
                "TLS is disabled for this database".into(),
            ));
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &settings.client_cert {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `verify-ca`: the chain must lead to the CA; the name is not checked (libpq's verify-ca).
#[derive(Debug)]
struct ChainOnlyVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // The name is checked only after the chain verified, so a name error means the
            // chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`: encrypted but the server is not authenticated. Handshake signatures are still
/// checked (the key exchange is bound to the presented certificate); the certificate itself is
/// not. Only ever chosen explicitly in the config.
#[derive(Debug)]
struct DangerousUnverifiedServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for DangerousUnverifiedServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
