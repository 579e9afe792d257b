//! A throwaway certificate authority for TLS integration tests.
//!
//! [`TestPki::new`] creates a CA ("pgward test CA", ECDSA P-256, generated
//! with `rcgen`) and writes its certificate to `<dir>/ca.crt`; the CA's
//! private key only ever lives in memory. The CA then issues server
//! certificates ([`TestPki::server_cert`], extended key usage `serverAuth`)
//! and client certificates ([`TestPki::client_cert`], `clientAuth`), each
//! written as `<dir>/<name>.crt` (PEM certificate) and `<dir>/<name>.key`
//! (PEM PKCS#8 private key). [`TestPki::other_ca`] makes a second, unrelated
//! CA, for "a certificate from another CA is rejected" tests.
//!
//! Details that matter to the programs reading these files:
//!
//! * **Key file modes.** Keys are written with mode 0600: libpq refuses a
//!   client key that group or others can read, and PostgreSQL refuses such a
//!   server key. Certificates are 0644.
//! * **Server keys and the `postgres` OS user.** When the tests run as root,
//!   the server runs as `postgres` (see `pg.rs`), which cannot read a root-owned
//!   0600 key, nor enter a private temp directory. So `PgServer` copies the
//!   server's certificate, key and CA into its own cluster directory and
//!   `chown`s them there; point other servers at copies in the same way.
//! * **Validity.** From one day before creation (tolerates clock skew
//!   between test processes) to one year after.
//! * **Names.** Server certificates carry the given DNS names and IP
//!   addresses as subjectAltNames; libpq's `sslmode=verify-full` checks those
//!   (IP addresses since PostgreSQL 14), and ignores the CN when any is
//!   present. Client certificates carry the given CN as their only subject
//!   attribute, which is what `clientcert=verify-full` in `pg_hba.conf`
//!   compares with the user name, and what `pg_stat_ssl.client_dn` shows
//!   (`/CN=<cn>` in PostgreSQL 15's OpenSSL one-line format).
//!
//! Generating a key and certificate takes well under a millisecond, so each
//! test can afford its own CA.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

/// Common name of the CA made by [`TestPki::new`].
pub const CA_NAME: &str = "pgward test CA";

/// Common name of the CA made by [`TestPki::other_ca`].
pub const OTHER_CA_NAME: &str = "pgward other test CA";

/// A test certificate authority writing its files into one directory.
pub struct TestPki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_cert: PathBuf,
}

impl TestPki {
    /// Creates the CA [`CA_NAME`] and writes its certificate to `<dir>/ca.crt`.
    /// `dir` is created if missing. Panics on any error.
    pub fn new(dir: &Path) -> TestPki {
        TestPki::with_ca_name(dir, CA_NAME)
    }

    /// Another CA ([`OTHER_CA_NAME`]) with a key of its own, unrelated to any
    /// other `TestPki`: nothing it issues verifies against another CA's
    /// `ca.crt`, and vice versa. Use a different `dir` than the main CA's
    /// (both write `ca.crt`).
    pub fn other_ca(dir: &Path) -> TestPki {
        TestPki::with_ca_name(dir, OTHER_CA_NAME)
    }

    /// A CA with common name `ca_name`, certificate in `<dir>/ca.crt`.
    pub fn with_ca_name(dir: &Path, ca_name: &str) -> TestPki {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut params = base_params(ca_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let ca = CertifiedIssuer::self_signed(params, new_key())
            .unwrap_or_else(|e| panic!("self-signing the CA {ca_name:?}: {e}"));
        let ca_cert = dir.join("ca.crt");
        write_file(&ca_cert, ca.pem().as_bytes(), 0o644);
        TestPki {
            dir: dir.to_path_buf(),
            ca,
            ca_cert,
        }
    }

    /// The CA certificate (PEM): what clients use as `sslrootcert` and
    /// servers as `ssl_ca_file`.
    pub fn ca_cert(&self) -> PathBuf {
        self.ca_cert.clone()
    }

    /// The directory all files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a server certificate (extended key usage `serverAuth`) for the
    /// DNS names `dns` and addresses `ips`, with CN `dns[0]` (or `name` if
    /// `dns` is empty). Writes `<dir>/<name>.crt` and `<dir>/<name>.key`
    /// (0600), replacing earlier files of that name, and returns
    /// `(certificate, key)`.
    pub fn server_cert(&self, name: &str, dns: &[&str], ips: &[IpAddr]) -> (PathBuf, PathBuf) {
        let cn = dns.first().copied().unwrap_or(name);
        let mut params = base_params(cn);
        params.subject_alt_names = dns
            .iter()
            .map(|d| dns_san(d))
            .chain(ips.iter().map(|ip| SanType::IpAddress(*ip)))
            .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(name, params)
    }

    /// Issues a client certificate (extended key usage `clientAuth`) with
    /// subject `CN=<cn>` and subjectAltNames `uris` (URIs, e.g. SPIFFE IDs) and
    /// `dns`. Writes `<dir>/<name>.crt` and `<dir>/<name>.key` (0600, as libpq
    /// demands for `sslkey`), replacing earlier files of that name, and
    /// returns `(certificate, key)`.
    pub fn client_cert(
        &self,
        name: &str,
        cn: &str,
        uris: &[&str],
        dns: &[&str],
    ) -> (PathBuf, PathBuf) {
        let mut params = base_params(cn);
        params.subject_alt_names = uris
            .iter()
            .map(|u| {
                SanType::URI(
                    (*u).try_into()
                        .unwrap_or_else(|e| panic!("URI SAN {u:?} is not IA5: {e}")),
                )
            })
            .chain(dns.iter().map(|d| dns_san(d)))
            .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, params)
    }

    fn issue(&self, name: &str, mut params: CertificateParams) -> (PathBuf, PathBuf) {
        assert!(
            !name.is_empty() && !name.contains('/') && name != "ca",
            "certificate file name {name:?} must be a plain file name other than \"ca\""
        );
        params.use_authority_key_identifier_extension = true;
        let key = new_key();
        let cert = params
            .signed_by(&key, &self.ca)
            .unwrap_or_else(|e| panic!("issuing certificate {name:?}: {e}"));
        let cert_path = self.dir.join(format!("{name}.crt"));
        let key_path = self.dir.join(format!("{name}.key"));
        write_file(&cert_path, cert.pem().as_bytes(), 0o644);
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600);
        (cert_path, key_path)
    }
}

/// Parameters shared by all certificates: subject `CN=<cn>` only, validity
/// from a day ago to a year from now, random serial (rcgen's default).
fn base_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, cn);
    params.distinguished_name = subject;
    // rcgen exposes no clock, but OffsetDateTime + std Duration works.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock before 1970");
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let day = Duration::from_secs(24 * 60 * 60);
    params.not_before = epoch + (now - day);
    params.not_after = epoch + (now + 365 * day);
    params
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .unwrap_or_else(|e| panic!("generating an ECDSA P-256 key: {e}"))
}

fn dns_san(name: &str) -> SanType {
    SanType::DnsName(
        name.try_into()
            .unwrap_or_else(|e| panic!("DNS SAN {name:?} is not IA5: {e}")),
    )
}

/// Writes `contents` to `path` with exactly `mode`, also when the file
/// already existed with another mode. A key file is never readable by others,
/// not even briefly: a new file is created with `mode` directly.
fn write_file(path: &Path, contents: &[u8], mode: u32) {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    // An existing file kept its old mode; fix it before writing secrets.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
    file.write_all(contents)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
