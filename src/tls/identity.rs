//! Who a client certificate says the client is.
//!
//! This module owns three things:
//!
//! * [`ClientIdentity`]: the names and fingerprint extracted from a client certificate that
//!   rustls has *already verified* against the configured CA. It is the typed value handed
//!   down to authentication; nothing here checks signatures, chains or validity periods.
//! * [`CertIdentity`]: what a user's `cert_identity` setting asks for, and the matching rules
//!   between the two ([`ClientIdentity::matches`]).
//! * [`tls_server_end_point`]: the RFC 5929 §4.1 channel-binding data for a certificate, as
//!   used by SCRAM-SHA-256-PLUS.
//!
//! Certificate bytes may come from a peer, so every parsing path returns an [`IdentityError`]
//! instead of panicking.

use std::fmt;
use std::time::{Duration, SystemTime};

use x509_parser::asn1_rs::{Any, FromDer, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, X509Name};

/// Errors from reading a certificate.
///
/// Messages never echo certificate contents back: they may be attacker-controlled and end up
/// in logs.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not a DER-encoded X.509 certificate.
    #[error("certificate is not valid DER X.509: {0}")]
    Malformed(String),
    /// A certificate parsed, but bytes followed it. The fingerprint covers the whole input, so
    /// accepting this would make two encodings of one certificate fingerprint differently.
    #[error("certificate DER is followed by {0} trailing bytes")]
    TrailingData(usize),
    /// The subject holds more than one CN. Picking one would be arbitrary (OpenSSL-based
    /// software takes the first, others the last), and an identity must not be ambiguous.
    #[error("certificate subject has more than one common name (CN)")]
    MultipleCommonNames,
    /// The subject CN uses a string type we cannot decode to Unicode (e.g. T61String).
    #[error("certificate subject common name (CN) uses an unsupported string encoding")]
    UndecodableCommonName,
    /// The subjectAltName extension is present but malformed, duplicated, or holds a DNS/URI
    /// name that is not valid text.
    #[error("certificate subjectAltName extension is invalid: {0}")]
    InvalidSubjectAltName(String),
    /// notAfter cannot be represented as a `SystemTime` on this platform.
    #[error("certificate notAfter is outside the representable time range")]
    UnrepresentableNotAfter,
    /// RFC 5929 defines no tls-server-end-point hash for this signature algorithm (Ed25519,
    /// Ed448, algorithms without a hash or with a hash we cannot compute, unknown OIDs).
    /// PostgreSQL likewise refuses channel binding for such certificates.
    #[error(
        "certificate signature algorithm {algorithm} has no tls-server-end-point channel binding"
    )]
    UnsupportedSignatureForChannelBinding {
        /// Dotted OID of the signature algorithm (or of the PSS hash, for RSASSA-PSS).
        algorithm: String,
    },
    /// RSASSA-PSS parameters could not be read, so the hash is unknown.
    #[error("certificate RSASSA-PSS signature parameters are malformed")]
    MalformedSignatureParameters,
}

/// The verified client certificate, as a typed value passed down to authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject's single commonName, if it has one.
    pub subject_cn: Option<String>,
    /// dNSName subjectAltName entries, as written in the certificate.
    pub dns_sans: Vec<String>,
    /// uniformResourceIdentifier subjectAltName entries (SPIFFE IDs live here).
    pub uri_sans: Vec<String>,
    /// SHA-256 of the DER certificate.
    pub fingerprint_sha256: [u8; 32],
    /// End of the certificate's validity period.
    pub not_after: SystemTime,
}

impl ClientIdentity {
    /// Extracts the identity from a DER certificate.
    ///
    /// Call this only on a certificate that the TLS layer has verified; this function does not
    /// check signatures, chains, key usage or validity dates.
    /// A short name for logs and the admin console: the first URI SAN, else the first DNS
    /// SAN, else `CN=…`.
    pub fn label(&self) -> Option<String> {
        self.uri_sans
            .first()
            .or(self.dns_sans.first())
            .cloned()
            .or_else(|| self.subject_cn.as_ref().map(|cn| format!("CN={cn}")))
    }

    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let cert = parse_whole(der)?;

        let subject_cn = single_common_name(cert.subject())?;

        let mut dns_sans = Vec::new();
        let mut uri_sans = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::InvalidSubjectAltName(e.to_string()))?;
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(s) => dns_sans.push((*s).to_owned()),
                    GeneralName::URI(s) => uri_sans.push((*s).to_owned()),
                    // x509-parser reports names it could not decode as text (e.g. invalid
                    // UTF-8 in an IA5String) as `Invalid`. Silently dropping one could hide the
                    // very name an operator expects to see, so refuse the certificate.
                    GeneralName::Invalid(_, _) => {
                        return Err(IdentityError::InvalidSubjectAltName(
                            "undecodable name entry".to_owned(),
                        ));
                    }
                    // IP addresses, e-mail addresses, directory names etc. are not identities
                    // that `cert_identity` can ask for.
                    _ => {}
                }
            }
        }

        let not_after = unix_to_system_time(cert.validity().not_after.timestamp())
            .ok_or(IdentityError::UnrepresentableNotAfter)?;

        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut fingerprint_sha256 = [0u8; 32];
        // SHA-256 output is always 32 bytes; `copy_from_slice` cannot fail here.
        fingerprint_sha256.copy_from_slice(digest.as_ref());

        Ok(Self {
            subject_cn,
            dns_sans,
            uri_sans,
            fingerprint_sha256,
            not_after,
        })
    }

    /// The SHA-256 fingerprint as lowercase hex without separators.
    pub fn fingerprint_hex(&self) -> String {
        hex_lower(&self.fingerprint_sha256)
    }

    /// Whether this certificate carries the identity a user's `cert_identity` asks for.
    ///
    /// Rules (each chosen to avoid granting more than was configured):
    ///
    /// * **URI**: byte-exact, case-sensitive comparison with no normalisation. SPIFFE IDs are
    ///   defined to be compared exactly, and normalising (case folding, percent-decoding,
    ///   dot-segment removal) would let two distinct IDs collide.
    /// * **DNS**: ASCII case-insensitive (DNS names are case-insensitive, RFC 4343), but
    ///   **no wildcard matching**: a client certificate for `*.example.org` does not match
    ///   `app.example.org`. Wildcards describe which hosts a *server* may be reached at; a
    ///   client presents one identity, and a wildcard client certificate would let every holder
    ///   of its key impersonate every user mapped to any name under it. SANs containing `*`
    ///   never match, and [`CertIdentity::parse`] rejects `*` in the expected name.
    /// * **CN**: byte-exact comparison with the subject's single CN.
    ///
    /// A certificate with several SANs of the asked type matches if any one of them does.
    pub fn matches(&self, expected: &CertIdentity) -> bool {
        match expected {
            CertIdentity::Uri(want) => self.uri_sans.iter().any(|have| have == want),
            CertIdentity::Dns(want) => {
                // Defence in depth: a hand-built `CertIdentity::Dns("*.x")` must not turn into a
                // literal match against a wildcard SAN either.
                !want.contains('*')
                    && self
                        .dns_sans
                        .iter()
                        .any(|have| !have.contains('*') && have.eq_ignore_ascii_case(want))
            }
            CertIdentity::CommonName(want) => self.subject_cn.as_deref() == Some(want.as_str()),
        }
    }

    /// One line for logs/audit: CN, SANs, fingerprint.
    ///
    /// Values come from the certificate and are therefore escaped (control and bidi characters,
    /// quotes) and truncated so that a hostile certificate cannot forge or flood log lines.
    pub fn describe(&self) -> String {
        let mut out = String::from("cn=");
        match &self.subject_cn {
            Some(cn) => push_quoted(&mut out, cn),
            None => out.push('-'),
        }
        out.push_str(" dns=");
        push_list(&mut out, &self.dns_sans);
        out.push_str(" uri=");
        push_list(&mut out, &self.uri_sans);
        out.push_str(" sha256=");
        out.push_str(&self.fingerprint_hex());
        out
    }
}

/// What a user's `cert_identity` setting asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertIdentity {
    /// A uniformResourceIdentifier SAN, e.g. a SPIFFE ID.
    Uri(String),
    /// A dNSName SAN.
    Dns(String),
    /// The subject commonName.
    CommonName(String),
}

impl CertIdentity {
    /// Parses a `cert_identity` setting.
    ///
    /// * `"spiffe://example.org/ns/prod/sa/app"` or any `"scheme://…"` (optionally prefixed
    ///   `"URI:"`) → [`CertIdentity::Uri`]
    /// * `"CN=app"` → [`CertIdentity::CommonName`]
    /// * `"DNS:host.example"` or a bare hostname → [`CertIdentity::Dns`]
    ///
    /// Prefixes are case-insensitive; values are kept as written. Values that could never
    /// match a certificate (wildcards, whitespace, non-ASCII URIs or hostnames, malformed
    /// SPIFFE IDs) are rejected here, so a typo fails at config load rather than as a
    /// mysterious authentication failure.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("cert_identity is empty".to_owned());
        }
        if s.trim() != s {
            return Err("cert_identity has leading or trailing whitespace".to_owned());
        }
        if let Some(cn) = strip_prefix_ignore_ascii_case(s, "CN=") {
            return parse_common_name(cn).map(Self::CommonName);
        }
        if let Some(host) = strip_prefix_ignore_ascii_case(s, "DNS:") {
            return parse_hostname(host).map(Self::Dns);
        }
        if let Some(uri) = strip_prefix_ignore_ascii_case(s, "URI:") {
            return parse_uri(uri).map(Self::Uri);
        }
        if s.contains("://") {
            return parse_uri(s).map(Self::Uri);
        }
        if let Some((attr, _)) = s.split_once('=') {
            return Err(format!(
                "cert_identity attribute {attr:?} is not supported; use CN=…, DNS:…, or a URI \
                 such as spiffe://…"
            ));
        }
        parse_hostname(s).map(Self::Dns).map_err(|e| {
            format!(
                "{e} (cert_identity must be a URI such as spiffe://…, CN=…, DNS:…, or a hostname)"
            )
        })
    }
}

impl fmt::Display for CertIdentity {
    /// Writes the canonical form accepted by [`CertIdentity::parse`]; URIs are written bare
    /// (they always contain `://`), DNS names as `DNS:…`, CNs as `CN=…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uri(u) => f.write_str(u),
            Self::Dns(h) => write!(f, "DNS:{h}"),
            Self::CommonName(cn) => write!(f, "CN={cn}"),
        }
    }
}

/// RFC 5929 §4.1 tls-server-end-point channel-binding data for a certificate: its hash with
/// the certificate's signature hash algorithm, SHA-256 when that is MD5 or SHA-1.
///
/// Supported signature algorithms: md5/sha1/sha256/sha384/sha512WithRSAEncryption,
/// ecdsa-with-SHA1/SHA256/SHA384/SHA512, and RSASSA-PSS whose `hashAlgorithm` parameter is
/// SHA-1 (the default), SHA-256, SHA-384 or SHA-512.
///
/// Everything else is an error rather than a SHA-256 fallback: the peer computes the same
/// value independently, and guessing a hash would only produce a mismatch that looks like a
/// man-in-the-middle. In particular:
///
/// * Ed25519/Ed448 have no separate hash; RFC 5929 leaves the binding undefined and
///   PostgreSQL/libpq refuse channel binding for such certificates →
///   [`IdentityError::UnsupportedSignatureForChannelBinding`].
/// * SHA-224 variants are defined but `ring` cannot compute SHA-224 → same error.
/// * For RSASSA-PSS we use the `hashAlgorithm` parameter and ignore the MGF1 hash, which is
///   what OpenSSL's `X509_get_signature_info` (used by PostgreSQL and libpq) reports, so both
///   ends agree. Unparseable PSS parameters →
///   [`IdentityError::MalformedSignatureParameters`].
pub fn tls_server_end_point(cert_der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let cert = parse_whole(cert_der)?;
    let alg = end_point_hash(&cert.signature_algorithm)?;
    Ok(ring::digest::digest(alg, cert_der).as_ref().to_vec())
}

// --- internals ---------------------------------------------------------------------------

// Signature algorithm OIDs (dotted form keeps the table readable and checkable against RFCs).
const MD5_WITH_RSA: &str = "1.2.840.113549.1.1.4";
const SHA1_WITH_RSA: &str = "1.2.840.113549.1.1.5";
const RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const SHA384_WITH_RSA: &str = "1.2.840.113549.1.1.12";
const SHA512_WITH_RSA: &str = "1.2.840.113549.1.1.13";
const ECDSA_WITH_SHA1: &str = "1.2.840.10045.4.1";
const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";
const ECDSA_WITH_SHA512: &str = "1.2.840.10045.4.3.4";
// Hash OIDs that may appear inside RSASSA-PSS parameters.
const HASH_SHA1: &str = "1.3.14.3.2.26";
const HASH_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const HASH_SHA384: &str = "2.16.840.1.101.3.4.2.2";
const HASH_SHA512: &str = "2.16.840.1.101.3.4.2.3";

/// The digest RFC 5929 prescribes for a certificate signed with `alg`.
fn end_point_hash(
    alg: &AlgorithmIdentifier<'_>,
) -> Result<&'static ring::digest::Algorithm, IdentityError> {
    use ring::digest::{SHA256, SHA384, SHA512};

    let oid = alg.algorithm.to_id_string();
    match oid.as_str() {
        // RFC 5929 §4.1: MD5 and SHA-1 are upgraded to SHA-256.
        MD5_WITH_RSA | SHA1_WITH_RSA | ECDSA_WITH_SHA1 | SHA256_WITH_RSA | ECDSA_WITH_SHA256 => {
            Ok(&SHA256)
        }
        SHA384_WITH_RSA | ECDSA_WITH_SHA384 => Ok(&SHA384),
        SHA512_WITH_RSA | ECDSA_WITH_SHA512 => Ok(&SHA512),
        RSASSA_PSS => {
            // RFC 4055 requires explicit parameters for RSASSA-PSS in certificates; without
            // them we cannot know which hash the peer will use.
            let params = alg
                .parameters
                .as_ref()
                .ok_or(IdentityError::MalformedSignatureParameters)?;
            let params = RsaSsaPssParams::try_from(params)
                .map_err(|_| IdentityError::MalformedSignatureParameters)?;
            // `hash_algorithm_oid` applies the RFC 4055 default (SHA-1) when absent.
            let hash = params.hash_algorithm_oid().to_id_string();
            match hash.as_str() {
                HASH_SHA1 | HASH_SHA256 => Ok(&SHA256),
                HASH_SHA384 => Ok(&SHA384),
                HASH_SHA512 => Ok(&SHA512),
                _ => Err(IdentityError::UnsupportedSignatureForChannelBinding { algorithm: hash }),
            }
        }
        // Ed25519 (1.3.101.112), Ed448, SHA-224 variants, DSA, unknown algorithms.
        _ => Err(IdentityError::UnsupportedSignatureForChannelBinding { algorithm: oid }),
    }
}

/// Parses exactly one certificate occupying all of `der`.
fn parse_whole(der: &[u8]) -> Result<X509Certificate<'_>, IdentityError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(IdentityError::TrailingData(rest.len()));
    }
    Ok(cert)
}

/// The subject's commonName, if exactly one is present.
fn single_common_name(subject: &X509Name<'_>) -> Result<Option<String>, IdentityError> {
    let mut cns = subject.iter_common_name();
    let Some(first) = cns.next() else {
        return Ok(None);
    };
    if cns.next().is_some() {
        return Err(IdentityError::MultipleCommonNames);
    }
    decode_directory_string(first.attr_value()).map(Some)
}

/// Decodes the DirectoryString types seen in practice. x509-parser's `as_str` covers the
/// ASCII/UTF-8 types; BMPString (UTF-16BE) is still produced by some Windows CAs.
fn decode_directory_string(value: &Any<'_>) -> Result<String, IdentityError> {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(data)
                .map(str::to_owned)
                .map_err(|_| IdentityError::UndecodableCommonName)
        }
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return Err(IdentityError::UndecodableCommonName);
            }
            // `chunks_exact(2)` yields exactly two bytes per chunk, so the indexing is in bounds.
            let units = data
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .map_err(|_| IdentityError::UndecodableCommonName)
        }
        _ => Err(IdentityError::UndecodableCommonName),
    }
}

/// Converts a Unix timestamp to `SystemTime` without overflow panics.
fn unix_to_system_time(secs: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn strip_prefix_ignore_ascii_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn parse_common_name(cn: &str) -> Result<String, String> {
    if cn.is_empty() {
        return Err("cert_identity CN= needs a value".to_owned());
    }
    if cn.trim() != cn {
        return Err("cert_identity CN value has leading or trailing whitespace".to_owned());
    }
    if cn.chars().any(char::is_control) {
        return Err("cert_identity CN value contains control characters".to_owned());
    }
    Ok(cn.to_owned())
}

/// Accepts a plain hostname: ASCII letters, digits, `-` and `_`, dot-separated labels of
/// 1–63 characters, at most 253 characters, no trailing dot (certificates do not carry one,
/// and matching does no normalisation).
fn parse_hostname(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("cert_identity DNS name is empty".to_owned());
    }
    if host.contains('*') {
        return Err(
            "cert_identity DNS name contains a wildcard; wildcards are for server certificates, \
             a client identity must name one exact host"
                .to_owned(),
        );
    }
    if host.len() > 253 {
        return Err("cert_identity DNS name is longer than 253 characters".to_owned());
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(format!(
                "cert_identity DNS name {host:?} has an empty label (leading, trailing or double dot)"
            ));
        }
        if label.len() > 63 {
            return Err(format!(
                "cert_identity DNS name {host:?} has a label longer than 63 characters"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "cert_identity DNS name {host:?} may contain only ASCII letters, digits, '-', \
                 '_' and '.'"
            ));
        }
    }
    Ok(host.to_owned())
}

/// Accepts `scheme://rest`. URIs in certificates are IA5String (ASCII), so non-ASCII,
/// whitespace and control characters can never match and are rejected. `spiffe://` IDs are
/// additionally checked against the SPIFFE-ID specification, whose IDs are compared exactly.
fn parse_uri(uri: &str) -> Result<String, String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!(
            "cert_identity URI {uri:?} is not of the form scheme://…"
        ));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(format!("cert_identity URI {uri:?} has an invalid scheme"));
    }
    if rest.is_empty() {
        return Err(format!("cert_identity URI {uri:?} has nothing after ://"));
    }
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "cert_identity URI {uri:?} may contain only printable ASCII without spaces"
        ));
    }
    if scheme.eq_ignore_ascii_case("spiffe") {
        check_spiffe_id(scheme, rest).map_err(|e| format!("cert_identity {uri:?}: {e}"))?;
    }
    Ok(uri.to_owned())
}

/// SPIFFE-ID rules (spiffe/standards SPIFFE-ID.md §2): lowercase scheme and trust domain,
/// path segments of `[A-Za-z0-9._-]` that are neither empty, `.` nor `..`, no query or
/// fragment, no trailing slash.
fn check_spiffe_id(scheme: &str, rest: &str) -> Result<(), &'static str> {
    if scheme != "spiffe" {
        return Err("the SPIFFE scheme must be lowercase \"spiffe\"");
    }
    let (trust_domain, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if trust_domain.is_empty() {
        return Err("SPIFFE ID has an empty trust domain");
    }
    if !trust_domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(
            "SPIFFE trust domain may contain only lowercase letters, digits, '.', '-', '_'",
        );
    }
    if path.is_empty() {
        return Ok(());
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err("SPIFFE ID path has an empty segment or a trailing slash");
        }
        if segment == "." || segment == ".." {
            return Err("SPIFFE ID path may not contain '.' or '..' segments");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err("SPIFFE ID path may contain only letters, digits, '.', '-', '_' and '/'");
        }
    }
    Ok(())
}

/// Longest value (in chars) `describe` prints before truncating.
const DESCRIBE_MAX_CHARS: usize = 128;
/// Most SAN entries per list `describe` prints.
const DESCRIBE_MAX_ENTRIES: usize = 4;

fn push_list(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().take(DESCRIBE_MAX_ENTRIES).enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_quoted(out, item);
    }
    if items.len() > DESCRIBE_MAX_ENTRIES {
        out.push_str(&format!(",+{} more", items.len() - DESCRIBE_MAX_ENTRIES));
    }
    out.push(']');
}

/// Appends `s` in double quotes, escaping quotes, backslashes, control characters and
/// invisible/bidi formatting characters, truncated to [`DESCRIBE_MAX_CHARS`].
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        if i == DESCRIBE_MAX_CHARS {
            out.push('…');
            break;
        }
        let invisible = matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        );
        if c == '"' || c == '\\' {
            out.push('\\');
            out.push(c);
        } else if c.is_control() || invisible {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::super::dev_certs::{self, LeafSpec};
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    const DAY: Duration = Duration::from_secs(86_400);

    fn der_from_pem(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("test PEM")
            .to_vec()
    }

    fn sha(alg: &'static ring::digest::Algorithm, data: &[u8]) -> Vec<u8> {
        ring::digest::digest(alg, data).as_ref().to_vec()
    }

    /// A client certificate with CN + several DNS/URI SANs, issued by a fresh dev CA.
    fn sample_client() -> (Vec<u8>, SystemTime) {
        let pki = dev_certs::generate("alice").expect("generate");
        let now = SystemTime::now();
        let not_after = now + 30 * DAY;
        let spec = LeafSpec {
            common_name: "app-client".to_owned(),
            dns: vec![
                "App.Example.org".to_owned(),
                "db.internal".to_owned(),
                "*.wild.example.org".to_owned(),
            ],
            uris: vec![
                "spiffe://example.org/ns/prod/sa/app".to_owned(),
                "spiffe://example.org/ns/dev/sa/app".to_owned(),
            ],
            ips: vec!["10.0.0.1".parse().expect("ip")],
            server: false,
            not_before: now - DAY,
            not_after,
        };
        let (cert_pem, _key) =
            dev_certs::issue(&pki.ca_cert_pem, &pki.ca_key_pem, &spec).expect("issue");
        (der_from_pem(&cert_pem), not_after)
    }

    #[test]
    fn from_der_extracts_fields() {
        let (der, not_after) = sample_client();
        let id = ClientIdentity::from_der(&der).expect("parse");
        assert_eq!(id.subject_cn.as_deref(), Some("app-client"));
        assert_eq!(
            id.dns_sans,
            ["App.Example.org", "db.internal", "*.wild.example.org"]
        );
        assert_eq!(
            id.uri_sans,
            [
                "spiffe://example.org/ns/prod/sa/app",
                "spiffe://example.org/ns/dev/sa/app"
            ]
        );
        // Certificates carry whole seconds.
        let want = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs();
        let got = id
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs();
        assert_eq!(got, want);
    }

    #[test]
    fn fingerprint_is_sha256_of_der() {
        let (der, _) = sample_client();
        let id = ClientIdentity::from_der(&der).expect("parse");
        let independent = sha(&ring::digest::SHA256, &der);
        assert_eq!(id.fingerprint_sha256.as_slice(), independent.as_slice());
        let hex = id.fingerprint_hex();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let expected_hex: String = independent.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected_hex);
    }

    #[test]
    fn matching_rules() {
        let (der, _) = sample_client();
        let id = ClientIdentity::from_der(&der).expect("parse");
        let uri = |s: &str| CertIdentity::Uri(s.to_owned());
        let dns = |s: &str| CertIdentity::Dns(s.to_owned());
        let cn = |s: &str| CertIdentity::CommonName(s.to_owned());

        // URI: exact, any of several SANs.
        assert!(id.matches(&uri("spiffe://example.org/ns/prod/sa/app")));
        assert!(id.matches(&uri("spiffe://example.org/ns/dev/sa/app")));
        assert!(!id.matches(&uri("spiffe://example.org/ns/prod/sa/App")));
        assert!(!id.matches(&uri("SPIFFE://example.org/ns/prod/sa/app")));
        assert!(!id.matches(&uri("spiffe://example.org/ns/prod/sa/app/")));
        assert!(!id.matches(&uri("spiffe://example.org/ns/prod/sa")));

        // DNS: ASCII case-insensitive, any SAN.
        assert!(id.matches(&dns("app.example.org")));
        assert!(id.matches(&dns("APP.EXAMPLE.ORG")));
        assert!(id.matches(&dns("db.internal")));
        assert!(!id.matches(&dns("example.org")));
        // A wildcard client SAN matches nothing, not even its own literal text.
        assert!(!id.matches(&dns("x.wild.example.org")));
        assert!(!id.matches(&dns("*.wild.example.org")));

        // CN: exact.
        assert!(id.matches(&cn("app-client")));
        assert!(!id.matches(&cn("APP-CLIENT")));
        assert!(!id.matches(&cn("app")));

        // Types do not cross over: a CN is not a DNS name and vice versa.
        assert!(!id.matches(&dns("app-client")));
        assert!(!id.matches(&cn("db.internal")));
    }

    #[test]
    fn describe_is_one_escaped_line() {
        let (der, _) = sample_client();
        let id = ClientIdentity::from_der(&der).expect("parse");
        let line = id.describe();
        assert!(line.contains("cn=\"app-client\""), "{line}");
        assert!(
            line.contains("spiffe://example.org/ns/prod/sa/app"),
            "{line}"
        );
        assert!(line.ends_with(&id.fingerprint_hex()), "{line}");

        let hostile = ClientIdentity {
            subject_cn: Some("evil\n2024 LOG forged \"x\"\u{202e}".to_owned()),
            dns_sans: (0..10).map(|i| format!("h{i}.example")).collect(),
            uri_sans: vec!["x".repeat(1000)],
            fingerprint_sha256: [0xab; 32],
            not_after: SystemTime::UNIX_EPOCH,
        };
        let line = hostile.describe();
        assert!(!line.contains('\n') && !line.contains('\u{202e}'), "{line}");
        assert!(
            line.contains("\\u{a}") && line.contains("\\\"x\\\""),
            "{line}"
        );
        assert!(line.contains("+6 more"), "{line}");
        assert!(line.len() < 600, "{}", line.len());
    }

    #[test]
    fn cert_without_cn_or_sans() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "org only");
        let cert = params.self_signed(&key).expect("cert");
        let id = ClientIdentity::from_der(cert.der()).expect("parse");
        assert_eq!(id.subject_cn, None);
        assert!(id.dns_sans.is_empty() && id.uri_sans.is_empty());
        assert!(!id.matches(&CertIdentity::CommonName(String::new())));
        assert!(id.describe().starts_with("cn=- dns=[] uri=[]"));
    }

    #[test]
    fn multiple_common_names_are_refused() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "a");
        // rcgen's DistinguishedName keys on the type, so add the second CN as a custom
        // type with the CN OID.
        params
            .distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 3]), "b");
        let cert = params.self_signed(&key).expect("cert");
        assert!(matches!(
            ClientIdentity::from_der(cert.der()),
            Err(IdentityError::MultipleCommonNames)
        ));
    }

    #[test]
    fn bmpstring_common_name_is_decoded() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let bmp = rcgen::string::BmpString::try_from("Zoë").expect("bmp");
        params
            .distinguished_name
            .push(DnType::CommonName, rcgen::DnValue::BmpString(bmp));
        let cert = params.self_signed(&key).expect("cert");
        let id = ClientIdentity::from_der(cert.der()).expect("parse");
        assert_eq!(id.subject_cn.as_deref(), Some("Zoë"));
    }

    #[test]
    fn parse_cert_identity() {
        let ok = |s: &str| CertIdentity::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(
            ok("spiffe://example.org/ns/prod/sa/app"),
            CertIdentity::Uri("spiffe://example.org/ns/prod/sa/app".to_owned())
        );
        assert_eq!(
            ok("spiffe://example.org"),
            CertIdentity::Uri("spiffe://example.org".to_owned())
        );
        assert_eq!(
            ok("https://id.example.org/users/7"),
            CertIdentity::Uri("https://id.example.org/users/7".to_owned())
        );
        assert_eq!(
            ok("URI:urn+x://a"),
            CertIdentity::Uri("urn+x://a".to_owned())
        );
        assert_eq!(ok("CN=app"), CertIdentity::CommonName("app".to_owned()));
        assert_eq!(
            ok("cn=App Server 1"),
            CertIdentity::CommonName("App Server 1".to_owned())
        );
        assert_eq!(
            ok("DNS:host.example"),
            CertIdentity::Dns("host.example".to_owned())
        );
        assert_eq!(
            ok("dns:Host.Example"),
            CertIdentity::Dns("Host.Example".to_owned())
        );
        assert_eq!(
            ok("db-1.internal"),
            CertIdentity::Dns("db-1.internal".to_owned())
        );
        assert_eq!(ok("localhost"), CertIdentity::Dns("localhost".to_owned()));

        for bad in [
            "",
            " CN=app",
            "CN=app ",
            "CN=",
            "CN= app",
            "CN=a\u{7}b",
            "DNS:",
            "DNS:*.example.org",
            "*.example.org",
            "host..example",
            "host.example.",
            ".host",
            "host name",
            "hôst.example",
            "O=acme",
            "OU=x,CN=y",
            "spiffe:/example.org/x",
            "://example.org",
            "1http://x",
            "spiffe://",
            "spiffe://Example.org/x",
            "SPIFFE://example.org/x",
            "spiffe://example.org/",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org/a b",
            "https://example.org/ä",
            "URI:example.org",
            &"a".repeat(64),
            &format!("{}x", "a.".repeat(127)),
        ] {
            let r = CertIdentity::parse(bad);
            assert!(r.is_err(), "{bad:?} parsed as {r:?}");
            let msg = r.err().unwrap_or_default();
            assert!(!msg.is_empty());
        }
        let wildcard = CertIdentity::parse("*.example.org")
            .err()
            .unwrap_or_default();
        assert!(wildcard.contains("wildcard"), "{wildcard}");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "spiffe://example.org/ns/prod/sa/app",
            "URI:https://x.example/y",
            "CN=app",
            "cn=Some Name",
            "DNS:host.example",
            "host.example",
        ] {
            let parsed = CertIdentity::parse(s).expect("parse");
            let shown = parsed.to_string();
            assert_eq!(CertIdentity::parse(&shown).expect("reparse"), parsed, "{s}");
        }
        assert_eq!(
            CertIdentity::Dns("h.example".to_owned()).to_string(),
            "DNS:h.example"
        );
        assert_eq!(
            CertIdentity::CommonName("app".to_owned()).to_string(),
            "CN=app"
        );
    }

    fn self_signed_with(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = KeyPair::generate_for(alg).expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::URI("spiffe://x.test/y".try_into().expect("uri")));
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn end_point_ecdsa_sha256_is_sha256() {
        let pki = dev_certs::generate("bob").expect("generate");
        let der = der_from_pem(&pki.server_cert_pem);
        assert_eq!(
            tls_server_end_point(&der).expect("binding"),
            sha(&ring::digest::SHA256, &der)
        );
    }

    #[test]
    fn end_point_ecdsa_sha384_is_sha384() {
        let der = self_signed_with(&rcgen::PKCS_ECDSA_P384_SHA384);
        let got = tls_server_end_point(&der).expect("binding");
        assert_eq!(got.len(), 48);
        assert_eq!(got, sha(&ring::digest::SHA384, &der));
    }

    #[test]
    fn end_point_ed25519_is_unsupported() {
        let der = self_signed_with(&rcgen::PKCS_ED25519);
        match tls_server_end_point(&der) {
            Err(IdentityError::UnsupportedSignatureForChannelBinding { algorithm }) => {
                assert_eq!(algorithm, "1.3.101.112");
            }
            other => panic!("expected UnsupportedSignatureForChannelBinding, got {other:?}"),
        }
        // Identity extraction does not care about the signature algorithm.
        assert!(ClientIdentity::from_der(&der).is_ok());
    }

    // --- hand-built AlgorithmIdentifiers for paths rcgen/ring cannot produce -------------

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        assert!(content.len() < 128, "short-form length only");
        let mut v = vec![tag, u8::try_from(content.len()).expect("len")];
        v.extend_from_slice(content);
        v
    }

    fn oid_der(dotted: &str) -> Vec<u8> {
        let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().expect("arc")).collect();
        let mut body = vec![u8::try_from(arcs[0] * 40 + arcs[1]).expect("first arcs")];
        for &arc in &arcs[2..] {
            let mut chunk = vec![u8::try_from(arc & 0x7f).expect("7 bits")];
            let mut rest = arc >> 7;
            while rest > 0 {
                chunk.push(u8::try_from(rest & 0x7f).expect("7 bits") | 0x80);
                rest >>= 7;
            }
            chunk.reverse();
            body.extend(chunk);
        }
        tlv(0x06, &body)
    }

    fn hash_alg_id(hash_oid: &str) -> Vec<u8> {
        let mut inner = oid_der(hash_oid);
        inner.extend(tlv(0x05, &[]));
        tlv(0x30, &inner)
    }

    fn pss_alg_id(hash_oid: Option<&str>, mgf_hash_oid: Option<&str>) -> Vec<u8> {
        let mut params = Vec::new();
        if let Some(h) = hash_oid {
            params.extend(tlv(0xa0, &hash_alg_id(h)));
        }
        if let Some(h) = mgf_hash_oid {
            let mut mgf = oid_der("1.2.840.113549.1.1.8");
            mgf.extend(hash_alg_id(h));
            params.extend(tlv(0xa1, &tlv(0x30, &mgf)));
        }
        let mut alg = oid_der(RSASSA_PSS);
        alg.extend(tlv(0x30, &params));
        tlv(0x30, &alg)
    }

    fn plain_alg_id(oid: &str) -> Vec<u8> {
        tlv(0x30, &oid_der(oid))
    }

    fn hash_for(alg_der: &[u8]) -> Result<&'static ring::digest::Algorithm, IdentityError> {
        let (rest, alg) = AlgorithmIdentifier::from_der(alg_der).expect("alg id");
        assert!(rest.is_empty());
        end_point_hash(&alg)
    }

    #[test]
    fn end_point_hash_table() {
        use ring::digest::{SHA256, SHA384, SHA512};
        let cases: [(&str, &'static ring::digest::Algorithm); 9] = [
            (MD5_WITH_RSA, &SHA256),
            (SHA1_WITH_RSA, &SHA256),
            (ECDSA_WITH_SHA1, &SHA256),
            (SHA256_WITH_RSA, &SHA256),
            (ECDSA_WITH_SHA256, &SHA256),
            (SHA384_WITH_RSA, &SHA384),
            (ECDSA_WITH_SHA384, &SHA384),
            (SHA512_WITH_RSA, &SHA512),
            (ECDSA_WITH_SHA512, &SHA512),
        ];
        for (oid, want) in cases {
            assert_eq!(hash_for(&plain_alg_id(oid)).expect(oid), want, "{oid}");
        }
        for unsupported in [
            "1.3.101.112",           // Ed25519
            "1.3.101.113",           // Ed448
            "1.2.840.113549.1.1.14", // sha224WithRSAEncryption
            "1.2.840.10045.4.3.1",   // ecdsa-with-SHA224
            "1.2.840.10040.4.3",     // dsa-with-sha1
            "1.2.3.4",
        ] {
            assert!(
                matches!(
                    hash_for(&plain_alg_id(unsupported)),
                    Err(IdentityError::UnsupportedSignatureForChannelBinding { .. })
                ),
                "{unsupported}"
            );
        }
    }

    #[test]
    fn end_point_hash_rsassa_pss() {
        use ring::digest::{SHA256, SHA384, SHA512};
        assert_eq!(
            hash_for(&pss_alg_id(Some(HASH_SHA384), Some(HASH_SHA384))).expect("pss384"),
            &SHA384
        );
        assert_eq!(
            hash_for(&pss_alg_id(Some(HASH_SHA512), Some(HASH_SHA512))).expect("pss512"),
            &SHA512
        );
        assert_eq!(
            hash_for(&pss_alg_id(Some(HASH_SHA256), None)).expect("pss256"),
            &SHA256
        );
        // Absent hashAlgorithm defaults to SHA-1 (RFC 4055), which RFC 5929 upgrades.
        assert_eq!(
            hash_for(&pss_alg_id(None, None)).expect("pss default"),
            &SHA256
        );
        // SHA-224 is not something ring can compute: error, not a SHA-256 guess.
        assert!(matches!(
            hash_for(&pss_alg_id(Some("2.16.840.1.101.3.4.2.4"), None)),
            Err(IdentityError::UnsupportedSignatureForChannelBinding { .. })
        ));
        // PSS without parameters, or with garbage parameters.
        assert!(matches!(
            hash_for(&plain_alg_id(RSASSA_PSS)),
            Err(IdentityError::MalformedSignatureParameters)
        ));
        let mut garbage = oid_der(RSASSA_PSS);
        garbage.extend(tlv(0x04, b"nope"));
        assert!(matches!(
            hash_for(&tlv(0x30, &garbage)),
            Err(IdentityError::MalformedSignatureParameters)
        ));
    }

    /// Real RSA certificates made by OpenSSL, when it is installed (ring cannot generate RSA
    /// keys). Skipped silently otherwise; the hash table itself is covered above.
    #[test]
    fn end_point_openssl_rsa_certs() {
        let Ok(dir) = tempfile::tempdir() else {
            return;
        };
        let cases: [(&[&str], &'static ring::digest::Algorithm); 3] = [
            (&["-sha384"], &ring::digest::SHA384),
            (&["-sha512"], &ring::digest::SHA512),
            (
                &["-sha384", "-sigopt", "rsa_padding_mode:pss"],
                &ring::digest::SHA384,
            ),
        ];
        for (i, (extra, want)) in cases.into_iter().enumerate() {
            let out = dir.path().join(format!("c{i}.der"));
            let key = dir.path().join(format!("k{i}.pem"));
            let status = std::process::Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=t",
                ])
                .args(extra)
                .arg("-keyout")
                .arg(&key)
                .args(["-outform", "DER", "-days", "1", "-out"])
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let Ok(status) = status else {
                eprintln!("openssl not available; skipping RSA channel-binding test");
                return;
            };
            assert!(status.success(), "openssl failed for {extra:?}");
            let der = std::fs::read(&out).expect("read");
            assert_eq!(
                tls_server_end_point(&der).expect("binding"),
                sha(want, &der),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let (der, _) = sample_client();

        // Every truncation of a valid certificate.
        for len in 0..der.len() {
            let cut = &der[..len];
            assert!(
                ClientIdentity::from_der(cut).is_err(),
                "prefix {len} parsed"
            );
            assert!(tls_server_end_point(cut).is_err(), "prefix {len} parsed");
        }

        // Trailing bytes.
        let mut long = der.clone();
        long.push(0);
        assert!(matches!(
            ClientIdentity::from_der(&long),
            Err(IdentityError::TrailingData(1))
        ));
        assert!(tls_server_end_point(&long).is_err());

        // Single-byte corruptions and random inputs (xorshift: deterministic, no extra deps).
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut mutated = der.clone();
            let idx = usize::try_from(next() % der.len() as u64).expect("index");
            mutated[idx] ^= u8::try_from(next() % 255 + 1).expect("byte");
            let _ = ClientIdentity::from_der(&mutated);
            let _ = tls_server_end_point(&mutated);
        }
        for _ in 0..3000 {
            let len = usize::try_from(next() % 600).expect("len");
            let mut random: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
            if next() % 2 == 0 && random.len() >= 4 {
                // Give some inputs a plausible outer SEQUENCE header to get past the first check.
                random[0] = 0x30;
                random[1] = 0x82;
            }
            let _ = ClientIdentity::from_der(&random);
            let _ = tls_server_end_point(&random);
        }
    }
}
