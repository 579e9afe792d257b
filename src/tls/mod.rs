//! TLS on both legs, with rustls (ring provider): the client-facing acceptor with mTLS and
//! reload ([`server`]), the connector to PostgreSQL with verify-full / verify-ca / require
//! ([`backend`]), the typed identity of a client certificate ([`identity`]), and development
//! certificates ([`dev_certs`]).

pub mod backend;
pub mod dev_certs;
pub mod identity;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("{0}")]
    Protocol(String),
}

/// The one crypto provider pgward uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// All certificates of a PEM file; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The error text of a PEM parser never contains key material, only its position.
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// A CA bundle as a root store; certificates that are not valid trust anchors are an error
/// (a silently shorter bundle would fail later and confusingly).
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(load_certs(path)?);
    if added == 0 || ignored > 0 {
        return Err(file_error(
            path,
            format!("{added} usable CA certificates, {ignored} unusable"),
        ));
    }
    Ok(roots)
}

/// Notices when files change (by modification time and size), for reloading certificates that
/// cert-manager or an operator replaces while pgward runs.
/// A file's modification time and size, `None` while it cannot be read.
type Stamp = Option<(SystemTime, u64)>;

#[derive(Debug)]
pub struct FileWatch {
    files: std::sync::Mutex<Vec<(PathBuf, Stamp)>>,
}

impl FileWatch {
    pub fn new(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        let files = paths
            .into_iter()
            .map(|p| {
                let stamp = stamp(&p);
                (p, stamp)
            })
            .collect();
        FileWatch {
            files: std::sync::Mutex::new(files),
        }
    }

    /// True if any file changed since the last call (or since `new`).
    pub fn changed(&self) -> bool {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut any = false;
        for (path, seen) in files.iter_mut() {
            let now = stamp(path);
            if now != *seen {
                *seen = now;
                any = true;
            }
        }
        any
    }
}

fn stamp(p: &Path) -> Stamp {
    // metadata() follows symlinks: Kubernetes swaps a `..data` symlink, and the target's
    // times are what change.
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}
