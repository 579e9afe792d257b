//! Development certificates (`pgward certs dev --out DIR`): a throw-away CA, a server
//! certificate for localhost and a client certificate, so TLS and certificate authentication
//! can be tried without an existing PKI. **For development only, not for production**: the
//! keys are generated on and written to the local disk unencrypted, and nothing tracks or
//! revokes what is issued.
//!
//! The same module issues further leaf certificates from a CA given as PEM ([`issue`]), which
//! the test suites use to build certificates with arbitrary names and validity periods.
//!
//! All keys are ECDSA P-256 signed with SHA-256 (rcgen's default): fast to generate with
//! `ring` (which cannot generate RSA keys) and accepted by rustls, OpenSSL and libpq.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::asn1_rs::{FromDer, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Name;

/// Errors from generating or writing development certificates.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} already exists (use --force to replace the development certificates)")]
    AlreadyExists { path: PathBuf },
    #[error(
        "client user {0:?} cannot be used in a certificate: use 1-64 ASCII letters, digits, \
         '.', '-' or '_' (it becomes the CN and the spiffe://pgward.dev/<user> URI)"
    )]
    InvalidClientUser(String),
    #[error("invalid certificate request: {0}")]
    InvalidSpec(String),
    #[error("cannot issue from this CA: {0}")]
    InvalidCa(String),
}

/// Paths of the files [`write_dev_certs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// The development PKI in memory, as PEM (certificates `CERTIFICATE`, keys PKCS#8
/// `PRIVATE KEY`).
///
/// `Debug` is deliberately not derived: it would print private keys.
#[derive(Clone)]
pub struct DevPki {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

/// What [`issue`] should put into a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject CN; empty means the subject has no CN at all.
    pub common_name: String,
    /// dNSName SANs, written as given (wildcards allowed, for testing that they are refused).
    pub dns: Vec<String>,
    /// uniformResourceIdentifier SANs (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
    /// iPAddress SANs.
    pub ips: Vec<IpAddr>,
    /// `true`: extended key usage serverAuth; `false`: clientAuth.
    pub server: bool,
    /// Validity period; both must lie in 1950..=9999 and `not_before <= not_after`.
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// File names inside the output directory. The CA key is never written: without it nobody
/// can issue more certificates under this CA, which limits the damage if the directory leaks.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const SERVER_CERT_FILE: &str = "server.crt";
pub const SERVER_KEY_FILE: &str = "server.key";
pub const CLIENT_CERT_FILE: &str = "client.crt";
pub const CLIENT_KEY_FILE: &str = "client.key";

/// Trust domain of the client certificate's SPIFFE ID.
pub const DEV_TRUST_DOMAIN: &str = "pgward.dev";

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Certificates start slightly in the past so that a peer whose clock is a little behind
/// does not reject them as "not yet valid".
const BACKDATE: Duration = Duration::from_secs(3_600);

/// Writes a development CA, a server certificate for localhost / 127.0.0.1 / ::1, and a client
/// certificate for `client_user` (subject CN=<client_user>, URI SAN
/// spiffe://pgward.dev/<client_user>), all signed by the CA, as PEM files in `out` (created if
/// missing, mode 0700 when created). Keys are written with mode 0600, certificates 0644.
///
/// **For development only, not for production.** The CA key is not written (see
/// [`CA_CERT_FILE`]); to get new certificates, run again with `overwrite`.
///
/// Refuses to overwrite existing files unless `overwrite` is true; in that case each file is
/// replaced atomically (written to a temporary file in `out`, then renamed), so a file that
/// is a symlink is replaced rather than followed.
pub fn write_dev_certs(
    out: &Path,
    client_user: &str,
    overwrite: bool,
) -> Result<DevCerts, DevCertError> {
    // Generate first: an invalid user name must not leave a half-written directory behind.
    let pki = generate(client_user)?;

    create_private_dir(out)?;

    let certs = DevCerts {
        ca_cert: out.join(CA_CERT_FILE),
        server_cert: out.join(SERVER_CERT_FILE),
        server_key: out.join(SERVER_KEY_FILE),
        client_cert: out.join(CLIENT_CERT_FILE),
        client_key: out.join(CLIENT_KEY_FILE),
    };
    let files: [(&Path, &str, bool); 5] = [
        (&certs.ca_cert, &pki.ca_cert_pem, false),
        (&certs.server_cert, &pki.server_cert_pem, false),
        (&certs.server_key, &pki.server_key_pem, true),
        (&certs.client_cert, &pki.client_cert_pem, false),
        (&certs.client_key, &pki.client_key_pem, true),
    ];

    if !overwrite {
        // Check all five before writing any, so a refusal leaves the directory untouched.
        // `symlink_metadata` also catches dangling symlinks.
        for (path, _, _) in &files {
            if fs::symlink_metadata(path).is_ok() {
                return Err(DevCertError::AlreadyExists {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    for (path, contents, secret) in files {
        if overwrite {
            replace_file(path, contents, secret)?;
        } else {
            // `create_new` (O_EXCL) closes the race with a file appearing after the check.
            write_new_file(path, contents, secret)?;
        }
    }
    Ok(certs)
}

/// The development PKI in memory: CA (10 years, CA:TRUE pathlen 0, keyCertSign + cRLSign),
/// server certificate (1 year, serverAuth, DNS localhost, IP 127.0.0.1 and ::1) and client
/// certificate (1 year, clientAuth, CN=`client_user`, URI spiffe://pgward.dev/`client_user`).
///
/// `client_user` must be 1–64 characters of ASCII letters, digits, `.`, `-`, `_` (and not `.`
/// or `..`), so that it is a valid SPIFFE path segment.
pub fn generate(client_user: &str) -> Result<DevPki, DevCertError> {
    check_client_user(client_user)?;
    let now = SystemTime::now();
    let start = now - BACKDATE;

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(
        DnType::OrganizationName,
        "pgward development (not for production)",
    );
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pgward development CA");
    // pathlen 0: this CA signs leaves only, never another CA.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca_params, start, now + CA_VALIDITY)?;
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let server_spec = LeafSpec {
        common_name: "localhost".to_owned(),
        dns: vec!["localhost".to_owned()],
        uris: Vec::new(),
        ips: vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
        server: true,
        not_before: start,
        not_after: now + LEAF_VALIDITY,
    };
    let (server_cert, server_key) = issue_leaf(&ca, &server_spec)?;

    let client_spec = LeafSpec {
        common_name: client_user.to_owned(),
        dns: Vec::new(),
        uris: vec![format!("spiffe://{DEV_TRUST_DOMAIN}/{client_user}")],
        ips: Vec::new(),
        server: false,
        not_before: start,
        not_after: now + LEAF_VALIDITY,
    };
    let (client_cert, client_key) = issue_leaf(&ca, &client_spec)?;

    Ok(DevPki {
        ca_cert_pem: ca.pem(),
        ca_key_pem: ca.key().serialize_pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    })
}

/// Issues another certificate from an existing CA (PEM certificate + PKCS#8 PEM key), for
/// tests. The leaf gets a fresh ECDSA P-256 key, CA:FALSE, digitalSignature, and extended key
/// usage serverAuth or clientAuth per `spec.server`; it is signed with the CA key's algorithm.
///
/// Returns `(certificate PEM, key PEM)`. The CA certificate must be a CA (basicConstraints
/// CA:TRUE) whose public key matches `ca_key_pem`.
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    spec: &LeafSpec,
) -> Result<(String, String), DevCertError> {
    let ca_der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .map_err(|e| DevCertError::InvalidCa(format!("CA certificate PEM: {e}")))?;
    let (_, ca) = X509Certificate::from_der(&ca_der)
        .map_err(|e| DevCertError::InvalidCa(format!("CA certificate: {e}")))?;
    let ca_key = KeyPair::from_pem(ca_key_pem)
        .map_err(|e| DevCertError::InvalidCa(format!("CA key: {e}")))?;

    let is_ca = ca
        .basic_constraints()
        .map_err(|e| DevCertError::InvalidCa(e.to_string()))?
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(DevCertError::InvalidCa(
            "certificate is not a CA (basicConstraints CA:TRUE missing)".to_owned(),
        ));
    }
    if ca.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
        return Err(DevCertError::InvalidCa(
            "key does not belong to the CA certificate".to_owned(),
        ));
    }

    // rcgen can reconstruct an issuer from a certificate only with its `x509-parser` feature,
    // which pgward does not enable; rebuild the three things signing needs (subject name, key
    // identifier, key usages) from our own parse instead.
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name_from(ca.subject())?;
    // Reuse the CA's subjectKeyIdentifier verbatim so the leaf's authorityKeyIdentifier
    // points at it, whatever method the CA used to derive it.
    let ski = ca
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    let has_ski = ski.is_some();
    if let Some(ski) = ski {
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
    }
    if let Some(ku) = ca
        .key_usage()
        .map_err(|e| DevCertError::InvalidCa(e.to_string()))?
    {
        if !ku.value.key_cert_sign() {
            return Err(DevCertError::InvalidCa(
                "CA key usage does not include keyCertSign".to_owned(),
            ));
        }
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    }
    let issuer = Issuer::new(params, ca_key);

    let (cert, key) = issue_leaf_with(&issuer, spec, has_ski)?;

    // A re-encoded subject that differs from the original by a single byte (string type,
    // attribute order, multi-valued RDNs) would produce a leaf that no verifier chains to the
    // CA. Check rather than hand out such a certificate.
    let (_, leaf) = X509Certificate::from_der(cert.der())
        .map_err(|e| DevCertError::InvalidCa(format!("re-parsing issued certificate: {e}")))?;
    if leaf.issuer().as_raw() != ca.subject().as_raw() {
        return Err(DevCertError::InvalidCa(
            "the CA subject name cannot be reproduced exactly (unsupported name encoding)"
                .to_owned(),
        ));
    }
    Ok((cert.pem(), key.serialize_pem()))
}

// --- internals ---------------------------------------------------------------------------

fn issue_leaf(
    ca: &CertifiedIssuer<'_, KeyPair>,
    spec: &LeafSpec,
) -> Result<(Certificate, KeyPair), DevCertError> {
    issue_leaf_with(ca, spec, true)
}

fn issue_leaf_with(
    issuer: &Issuer<'_, KeyPair>,
    spec: &LeafSpec,
    authority_key_id: bool,
) -> Result<(Certificate, KeyPair), DevCertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if !spec.common_name.is_empty() {
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
    }
    for name in &spec.dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.as_str().try_into()?));
    }
    for uri in &spec.uris {
        params
            .subject_alt_names
            .push(SanType::URI(uri.as_str().try_into()?));
    }
    for ip in &spec.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    // ExplicitNoCa writes basicConstraints CA:FALSE (and a subjectKeyIdentifier), so the leaf
    // can never be mistaken for a CA by a lenient verifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if spec.server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.use_authority_key_identifier_extension = authority_key_id;
    set_validity(&mut params, spec.not_before, spec.not_after)?;

    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert, key))
}

/// Earliest and latest instants accepted for validity: UTCTime/GeneralizedTime as written by
/// rcgen cover 1950-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z.
const MIN_UNIX: i64 = -631_152_000;
const MAX_UNIX: i64 = 253_402_300_799;

/// Sets `not_before`/`not_after` from `SystemTime`s.
///
/// rcgen's fields are `time::OffsetDateTime`, a crate pgward does not depend on directly; the
/// values are built from rcgen's `date_time_ymd` epoch with checked arithmetic, so out-of-range
/// input is an error instead of a panic inside `time`.
fn set_validity(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), DevCertError> {
    if not_before > not_after {
        return Err(DevCertError::InvalidSpec(
            "not_before is after not_after".to_owned(),
        ));
    }
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let convert = |t: SystemTime| {
        let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).ok(),
            // Before 1970: `duration()` is how far before.
            Err(e) => i64::try_from(e.duration().as_secs()).ok().map(|s| -s),
        }
        .filter(|s| (MIN_UNIX..=MAX_UNIX).contains(s))
        .ok_or_else(|| {
            DevCertError::InvalidSpec("validity must lie between 1950 and 9999".to_owned())
        })?;
        // Whole seconds only: certificates cannot carry fractions.
        let magnitude = Duration::from_secs(secs.unsigned_abs());
        let shifted = match magnitude.try_into() {
            Ok(d) if secs >= 0 => epoch.checked_add(d),
            Ok(d) => epoch.checked_sub(d),
            Err(_) => None,
        };
        shifted.ok_or_else(|| DevCertError::InvalidSpec("validity out of range".to_owned()))
    };
    params.not_before = convert(not_before)?;
    params.not_after = convert(not_after)?;
    Ok(())
}

/// Rebuilds a subject name in rcgen's model, keeping each attribute's string type so that the
/// encoding comes out byte-identical (checked by the caller).
fn distinguished_name_from(name: &X509Name<'_>) -> Result<DistinguishedName, DevCertError> {
    let unsupported = |what: &str| DevCertError::InvalidCa(format!("CA subject name: {what}"));
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(unsupported("multi-valued or empty RDN"));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| unsupported("attribute OID too large"))?
            .collect();
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            // rcgen keys attributes by type; a repeated type would be silently merged.
            return Err(unsupported("repeated attribute type"));
        }
        let value = attr.attr_value();
        let text = || std::str::from_utf8(value.data).map_err(|_| unsupported("invalid text"));
        let dn_value = match value.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into()?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into()?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into()?),
            Tag::BmpString => {
                DnValue::BmpString(rcgen::string::BmpString::from_utf16be(value.data.to_vec())?)
            }
            Tag::UniversalString => DnValue::UniversalString(
                rcgen::string::UniversalString::from_utf32be(value.data.to_vec())?,
            ),
            _ => return Err(unsupported("unsupported string type")),
        };
        dn.push(ty, dn_value);
    }
    Ok(dn)
}

fn check_client_user(user: &str) -> Result<(), DevCertError> {
    let ok = (1..=64).contains(&user.len())
        && user != "."
        && user != ".."
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(DevCertError::InvalidClientUser(user.to_owned()))
    }
}

fn io_error(path: &Path, error: std::io::Error) -> DevCertError {
    DevCertError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Creates `dir` (and parents) if missing; directories created here get mode 0700 because the
/// private keys go in them. An existing directory keeps its mode.
fn create_private_dir(dir: &Path) -> Result<(), DevCertError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| io_error(dir, e))
}

/// Opens a new file (failing if anything exists at `path`) with the final mode already set,
/// so a key is never readable by others, not even for an instant.
fn create_exclusive(path: &Path, secret: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    options.open(path)
}

fn write_new_file(path: &Path, contents: &str, secret: bool) -> Result<(), DevCertError> {
    let mut file = create_exclusive(path, secret).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => DevCertError::AlreadyExists {
            path: path.to_path_buf(),
        },
        _ => io_error(path, e),
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))
}

/// Replaces `path` atomically. Opening the existing file with truncation would keep its old,
/// possibly looser, mode and follow a symlink; a fresh file renamed over it does neither.
fn replace_file(path: &Path, contents: &str, secret: bool) -> Result<(), DevCertError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A stale temporary file from a crashed run would make `create_new` fail; it is ours.
    let _ = fs::remove_file(&tmp);
    let result = write_new_file(&tmp, contents, secret)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_error(path, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::identity::{CertIdentity, ClientIdentity};
    use super::*;
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::server::WebPkiClientVerifier;
    use rustls_pki_types::{ServerName, UnixTime};
    use std::sync::Arc;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM certificate")
    }

    fn roots(ca_pem: &str) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca_pem)).expect("add CA");
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn verify_server(
        ca_pem: &str,
        cert_pem: &str,
        name: ServerName<'_>,
    ) -> Result<(), rustls::Error> {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
            .build()
            .expect("server verifier");
        verifier
            .verify_server_cert(&der(cert_pem), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn verify_client(ca_pem: &str, cert_pem: &str) -> Result<(), rustls::Error> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider())
            .build()
            .expect("client verifier");
        verifier
            .verify_client_cert(&der(cert_pem), &[], UnixTime::now())
            .map(|_| ())
    }

    fn name(s: &str) -> ServerName<'static> {
        ServerName::try_from(s.to_owned()).expect("server name")
    }

    #[test]
    fn server_cert_verifies_for_localhost_names() {
        let pki = generate("alice").expect("generate");
        verify_server(&pki.ca_cert_pem, &pki.server_cert_pem, name("localhost"))
            .expect("localhost");
        verify_server(&pki.ca_cert_pem, &pki.server_cert_pem, name("127.0.0.1"))
            .expect("127.0.0.1");
        verify_server(&pki.ca_cert_pem, &pki.server_cert_pem, name("::1")).expect("::1");
        // Names the certificate does not carry, and a different CA, must fail.
        assert!(
            verify_server(&pki.ca_cert_pem, &pki.server_cert_pem, name("example.com")).is_err()
        );
        assert!(verify_server(&pki.ca_cert_pem, &pki.server_cert_pem, name("10.0.0.1")).is_err());
        let other = generate("alice").expect("generate");
        assert!(
            verify_server(&other.ca_cert_pem, &pki.server_cert_pem, name("localhost")).is_err()
        );
        // A server certificate is not a client certificate.
        assert!(verify_client(&pki.ca_cert_pem, &pki.server_cert_pem).is_err());
    }

    #[test]
    fn client_cert_verifies_and_names_the_user() {
        let pki = generate("alice").expect("generate");
        verify_client(&pki.ca_cert_pem, &pki.client_cert_pem).expect("client cert");
        assert!(verify_server(&pki.ca_cert_pem, &pki.client_cert_pem, name("localhost")).is_err());
        let other = generate("alice").expect("generate");
        assert!(verify_client(&other.ca_cert_pem, &pki.client_cert_pem).is_err());

        let id = ClientIdentity::from_der(&der(&pki.client_cert_pem)).expect("identity");
        assert_eq!(id.subject_cn.as_deref(), Some("alice"));
        assert_eq!(id.uri_sans, ["spiffe://pgward.dev/alice"]);
        assert!(id.matches(&CertIdentity::parse("spiffe://pgward.dev/alice").expect("parse")));
        assert!(id.matches(&CertIdentity::parse("CN=alice").expect("parse")));
        assert!(!id.matches(&CertIdentity::parse("spiffe://pgward.dev/bob").expect("parse")));
    }

    #[test]
    fn validity_periods() {
        let pki = generate("alice").expect("generate");
        let now = SystemTime::now();
        let year = Duration::from_secs(365 * 86_400);
        let not_after = |pem: &str| {
            ClientIdentity::from_der(&der(pem))
                .expect("parse")
                .not_after
                .duration_since(now)
                .expect("in the future")
        };
        let ca = not_after(&pki.ca_cert_pem);
        assert!(
            ca > 10 * year - Duration::from_secs(60) && ca <= 10 * year,
            "{ca:?}"
        );
        let leaf = not_after(&pki.client_cert_pem);
        assert!(
            leaf > year - Duration::from_secs(60) && leaf <= year,
            "{leaf:?}"
        );
    }

    #[test]
    fn ca_extensions() {
        let pki = generate("alice").expect("generate");
        let ca_der = der(&pki.ca_cert_pem);
        let (_, ca) = X509Certificate::from_der(&ca_der).expect("parse");
        let bc = ca.basic_constraints().expect("bc").expect("present");
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = ca.key_usage().expect("ku").expect("present").value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let server_der = der(&pki.server_cert_pem);
        let (_, server) = X509Certificate::from_der(&server_der).expect("parse");
        let bc = server.basic_constraints().expect("bc").expect("present");
        assert!(!bc.value.ca);
        let eku = server
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.server_auth && !eku.client_auth);
    }

    #[test]
    fn issue_from_pem_ca() {
        let pki = generate("alice").expect("generate");
        let now = SystemTime::now();
        let spec = LeafSpec {
            common_name: "db.example".to_owned(),
            dns: vec!["db.example".to_owned(), "*.db.example".to_owned()],
            uris: vec!["spiffe://x.test/db".to_owned()],
            ips: vec!["192.0.2.7".parse().expect("ip")],
            server: true,
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(3_600),
        };
        let (cert, key) = issue(&pki.ca_cert_pem, &pki.ca_key_pem, &spec).expect("issue");
        assert!(key.contains("PRIVATE KEY"));
        verify_server(&pki.ca_cert_pem, &cert, name("db.example")).expect("db.example");
        verify_server(&pki.ca_cert_pem, &cert, name("x.db.example")).expect("wildcard server");
        verify_server(&pki.ca_cert_pem, &cert, name("192.0.2.7")).expect("ip");

        // Client usage.
        let client = LeafSpec {
            server: false,
            ..spec.clone()
        };
        let (cert, _) = issue(&pki.ca_cert_pem, &pki.ca_key_pem, &client).expect("issue");
        verify_client(&pki.ca_cert_pem, &cert).expect("client");

        // Expired certificates are produced as asked, and rejected by the verifier.
        let expired = LeafSpec {
            not_before: now - Duration::from_secs(7_200),
            not_after: now - Duration::from_secs(3_600),
            ..client.clone()
        };
        let (cert, _) = issue(&pki.ca_cert_pem, &pki.ca_key_pem, &expired).expect("issue");
        assert!(verify_client(&pki.ca_cert_pem, &cert).is_err());

        // Wrong key for the CA, a leaf used as CA, bad validity.
        let other = generate("bob").expect("generate");
        assert!(matches!(
            issue(&pki.ca_cert_pem, &other.ca_key_pem, &spec),
            Err(DevCertError::InvalidCa(_))
        ));
        assert!(matches!(
            issue(&pki.server_cert_pem, &pki.server_key_pem, &spec),
            Err(DevCertError::InvalidCa(_))
        ));
        let backwards = LeafSpec {
            not_before: spec.not_after,
            not_after: spec.not_before,
            ..spec.clone()
        };
        assert!(matches!(
            issue(&pki.ca_cert_pem, &pki.ca_key_pem, &backwards),
            Err(DevCertError::InvalidSpec(_))
        ));
        let far = LeafSpec {
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000),
            ..spec.clone()
        };
        assert!(matches!(
            issue(&pki.ca_cert_pem, &pki.ca_key_pem, &far),
            Err(DevCertError::InvalidSpec(_))
        ));
        let old = LeafSpec {
            not_before: SystemTime::UNIX_EPOCH - Duration::from_secs(631_152_001),
            ..spec.clone()
        };
        assert!(matches!(
            issue(&pki.ca_cert_pem, &pki.ca_key_pem, &old),
            Err(DevCertError::InvalidSpec(_))
        ));
        assert!(issue("not pem", &pki.ca_key_pem, &spec).is_err());
        assert!(issue(&pki.ca_cert_pem, "not pem", &spec).is_err());
    }

    #[test]
    fn issue_from_foreign_ca_with_printable_string_names() {
        // A CA whose subject uses PrintableString and several attributes, as OpenSSL writes
        // them: exercises the subject re-encoding and its byte-exactness check.
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CountryName,
            DnValue::PrintableString("DE".try_into().expect("printable")),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example GmbH");
        params.distinguished_name.push(
            DnType::CommonName,
            DnValue::PrintableString("Example Root".try_into().expect("printable")),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca = params.self_signed(&key).expect("ca");
        let now = SystemTime::now();
        let spec = LeafSpec {
            common_name: String::new(),
            dns: Vec::new(),
            uris: vec!["spiffe://example.de/x".to_owned()],
            ips: Vec::new(),
            server: false,
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(60),
        };
        let (cert, _) = issue(&ca.pem(), &key.serialize_pem(), &spec).expect("issue");
        verify_client(&ca.pem(), &cert).expect("verifies");
        let id = ClientIdentity::from_der(&der(&cert)).expect("identity");
        assert_eq!(id.subject_cn, None);
    }

    #[test]
    fn client_user_is_validated() {
        for bad in ["", ".", "..", "a/b", "a b", "ä", "a:b", &"x".repeat(65)] {
            assert!(
                matches!(generate(bad), Err(DevCertError::InvalidClientUser(_))),
                "{bad:?}"
            );
        }
        for good in ["alice", "app_1", "svc-db.prod", &"x".repeat(64)] {
            generate(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn write_files_modes_and_overwrite() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("nested").join("certs");
        let certs = write_dev_certs(&out, "alice", false).expect("write");
        assert_eq!(certs.ca_cert, out.join("ca.crt"));
        for p in [
            &certs.ca_cert,
            &certs.server_cert,
            &certs.server_key,
            &certs.client_cert,
            &certs.client_key,
        ] {
            assert!(p.is_file(), "{}", p.display());
        }
        // The CA key is not written.
        assert_eq!(fs::read_dir(&out).expect("read_dir").count(), 5);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode(&certs.server_key), 0o600);
            assert_eq!(mode(&certs.client_key), 0o600);
            assert_eq!(mode(&certs.server_cert), 0o644);
            assert_eq!(mode(&out), 0o700);
        }

        // What is on disk is a working PKI.
        let read = |p: &Path| fs::read_to_string(p).expect("read");
        let ca = read(&certs.ca_cert);
        let server = read(&certs.server_cert);
        verify_server(&ca, &server, name("localhost")).expect("server");
        verify_client(&ca, &read(&certs.client_cert)).expect("client");

        // No overwrite without permission, and nothing is touched.
        match write_dev_certs(&out, "alice", false) {
            Err(DevCertError::AlreadyExists { path }) => assert_eq!(path, certs.ca_cert),
            other => panic!("expected AlreadyExists, got {:?}", other.map(|_| ())),
        }
        assert_eq!(read(&certs.ca_cert), ca);

        // One existing file is enough to refuse.
        let partial = tmp.path().join("partial");
        fs::create_dir(&partial).expect("mkdir");
        fs::write(partial.join("client.key"), "x").expect("write");
        assert!(matches!(
            write_dev_certs(&partial, "alice", false),
            Err(DevCertError::AlreadyExists { .. })
        ));
        assert_eq!(fs::read_dir(&partial).expect("read_dir").count(), 1);

        // With overwrite: replaced, keys 0600 again even if someone loosened them.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&certs.server_key, fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        let again = write_dev_certs(&out, "alice", true).expect("overwrite");
        assert_eq!(again, certs);
        assert_ne!(read(&certs.ca_cert), ca);
        assert_eq!(
            fs::read_dir(&out).expect("read_dir").count(),
            5,
            "no temp files left"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode(&certs.server_key), 0o600);
        }
        verify_server(
            &read(&certs.ca_cert),
            &read(&certs.server_cert),
            name("localhost"),
        )
        .expect("new server");

        // An invalid user leaves no directory behind.
        let never = tmp.path().join("never");
        assert!(write_dev_certs(&never, "a b", false).is_err());
        assert!(!never.exists());
    }

    #[test]
    fn openssl_verifies_when_available() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let certs = write_dev_certs(tmp.path(), "alice", false).expect("write");
        let run = |purpose: &str, cert: &Path| {
            std::process::Command::new("openssl")
                .args(["verify", "-purpose", purpose, "-CAfile"])
                .arg(&certs.ca_cert)
                .arg(cert)
                .output()
        };
        let Ok(server) = run("sslserver", &certs.server_cert) else {
            eprintln!("openssl not available; skipping");
            return;
        };
        assert!(
            server.status.success(),
            "{}",
            String::from_utf8_lossy(&server.stderr)
        );
        let client = run("sslclient", &certs.client_cert).expect("openssl");
        assert!(
            client.status.success(),
            "{}",
            String::from_utf8_lossy(&client.stderr)
        );
        // Cross-check that the check can fail: the client cert is not a server cert.
        let wrong = run("sslserver", &certs.client_cert).expect("openssl");
        assert!(!wrong.status.success());

        // The key files match the certificates (OpenSSL can read rcgen's PKCS#8).
        let from_key = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&certs.server_key)
            .output()
            .expect("openssl pkey");
        let from_cert = std::process::Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(&certs.server_cert)
            .output()
            .expect("openssl x509");
        assert!(from_key.status.success() && from_cert.status.success());
        assert_eq!(from_key.stdout, from_cert.stdout);
    }
}
