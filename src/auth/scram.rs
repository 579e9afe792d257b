//! SCRAM-SHA-256 (RFC 5802, RFC 7677) exactly as PostgreSQL speaks it, on both sides of the pooler.
//!
//! This module owns:
//! * [`ScramVerifier`]: PostgreSQL's `pg_authid.rolpassword` format
//!   (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`), parsing, generation, and the
//!   deterministic *mock* verifier used for unknown users;
//! * [`ScramServer`]: the exchange with a client of pgward, including channel binding
//!   (`tls-server-end-point`) and downgrade detection;
//! * [`ScramClient`]: pgward logging in to a PostgreSQL backend;
//! * [`md5_password`]: the answer to a backend's md5 challenge (client side only: pgward never
//!   offers md5 to its own clients).
//!
//! It is hand-written rather than taken from a crate because the crates available are either
//! client-only, don't support PostgreSQL's verifier format, or don't do mock authentication for
//! unknown users, and all three matter here.
//!
//! Rules kept throughout: every byte from the peer is untrusted (no `unwrap`, no slice indexing
//! on peer input, every size bounded, every malformed message is an `Err`); secrets (password,
//! salted password, keys, proofs) never reach a `Debug` output or an error message; comparisons
//! of secret-derived values are constant-time. An unknown user and a wrong password end with the
//! same [`ScramError::InvalidProof`] after the same work, so a client cannot tell them apart.

use std::fmt;
use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest as _, Md5};
use rand::RngCore as _;
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq as _;

use super::secret::Secret;

/// SASL mechanism name without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SASL mechanism name with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// Highest iteration count we accept from a verifier or a backend: a malicious server must not
/// make us spin in PBKDF2 for minutes.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// The iteration count of mock verifiers: PostgreSQL's default, so a mock looks like a real one.
pub const MOCK_ITERATIONS: u32 = 4096;
/// Largest SCRAM message accepted from a peer. Real messages are well under 300 bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// The only channel-binding type PostgreSQL implements.
const CB_TYPE: &[u8] = b"tls-server-end-point";
const KEY_LEN: usize = 32;
/// Same salt length as PostgreSQL, so our verifiers (and mock ones) look like its own.
const SALT_LEN: usize = 16;
/// PostgreSQL's server nonce length (raw bytes before base64).
const SERVER_NONCE_LEN: usize = 18;
const CLIENT_NONCE_LEN: usize = 24;
const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";

type Key = [u8; KEY_LEN];

/// Why a `pg_authid` SCRAM verifier could not be parsed. Never contains the input: a
/// misconfigured entry might be a plaintext password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifierError {
    #[error("not a SCRAM-SHA-256 verifier")]
    NotScram,
    #[error("malformed SCRAM-SHA-256 verifier: {0}")]
    Malformed(&'static str),
}

/// Why a SCRAM exchange failed. The messages are static or sanitized: no secret, no peer bytes
/// (except a short, printable-only reason sent by a backend in `e=`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The peer sent a malformed or unexpected message (or a step was called out of order).
    #[error("SCRAM protocol violation: {0}")]
    Protocol(&'static str),
    /// Channel-binding negotiation or check failed, including a detected downgrade.
    #[error("SCRAM channel binding failed: {0}")]
    ChannelBinding(&'static str),
    /// Wrong password *or* unknown user: deliberately one variant so they cannot be told apart.
    #[error("password authentication failed")]
    InvalidProof,
    /// Client side: the backend's `v=` did not verify, so it does not know our password (or
    /// someone is in the middle).
    #[error("backend's SCRAM server signature is invalid")]
    InvalidServerSignature,
    /// Client side: the backend ended the exchange with `e=<reason>`.
    #[error("backend rejected SCRAM authentication: {0}")]
    ServerError(String),
}

impl ScramError {
    /// True when the peer broke the protocol (malformed, out of order, channel-binding
    /// negotiation). PostgreSQL reports these with SQLSTATE 08P01; `InvalidProof` is 28P01.
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            ScramError::Protocol(_) | ScramError::ChannelBinding(_)
        )
    }
}

/// What we know about channel binding on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// connection not over TLS
    NotSupported,
    /// TLS; the data is the tls-server-end-point hash of our certificate
    TlsServerEndPoint(Vec<u8>),
}

/// The SASL mechanisms to offer in AuthenticationSASL, in order of preference.
pub fn mechanisms(cb: &ChannelBinding) -> &'static [&'static str] {
    match cb {
        ChannelBinding::NotSupported => &[SCRAM_SHA_256],
        ChannelBinding::TlsServerEndPoint(_) => &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
    }
}

// ---- Crypto primitives --------------------------------------------------------------------------

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Key {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0; KEY_LEN];
    out.copy_from_slice(hmac::sign(&key, msg).as_ref()); // ring's output is always 32 bytes
    out
}

/// HMAC-SHA-256 with a key prepared once ([`hmac::Key::new`] hashes the key into its inner and
/// outer pads: two SHA-256 blocks a key).
fn sign(key: &hmac::Key, msg: &[u8]) -> Key {
    let mut out = [0; KEY_LEN];
    out.copy_from_slice(hmac::sign(key, msg).as_ref()); // ring's output is always 32 bytes
    out
}

fn sha256(data: &[u8]) -> Key {
    let mut out = [0; KEY_LEN];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// Hi() of RFC 5802 is PBKDF2-HMAC-SHA-256 with a 32-byte output.
fn salted_password(password: &Secret, salt: &[u8], iterations: NonZeroU32) -> Secret {
    let mut out = [0; KEY_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.expose(),
        &mut out,
    );
    let salted = Secret::new(out.to_vec());
    out.fill(0);
    salted
}

/// PostgreSQL normalizes passwords with SASLprep, and falls back to the raw bytes when the
/// password is not UTF-8 or SASLprep rejects it; doing the same keeps us interoperable with
/// verifiers created by `ALTER ROLE ... PASSWORD`.
fn saslprep(password: &Secret) -> Secret {
    let prepared = std::str::from_utf8(password.expose())
        .ok()
        .and_then(|s| stringprep::saslprep(s).ok());
    match prepared {
        Some(p) => Secret::new(p.into_owned()),
        None => password.clone(),
    }
}

fn random_nonce(raw_len: usize) -> String {
    let mut raw = vec![0; raw_len];
    rand::rng().fill_bytes(&mut raw);
    B64.encode(raw)
}

/// Keeps iteration counts in the range every consumer accepts, so `generate` never produces a
/// verifier that `parse` (or PostgreSQL) would reject.
fn clamp_iterations(iterations: u32) -> NonZeroU32 {
    NonZeroU32::new(iterations.min(MAX_ITERATIONS)).unwrap_or(NonZeroU32::MIN)
}

/// Decimal digits only (no sign, no spaces), within 1..=MAX_ITERATIONS.
fn parse_iterations(s: &[u8]) -> Option<NonZeroU32> {
    if s.is_empty() || s.len() > 8 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u32 = std::str::from_utf8(s).ok()?.parse().ok()?;
    NonZeroU32::new(n).filter(|n| n.get() <= MAX_ITERATIONS)
}

// ---- Message parsing helpers (all on bytes: a peer is not obliged to send UTF-8) ----------------

/// Shorthands for the two ways a peer's message is refused before any proof is checked.
fn violation<T>(reason: &'static str) -> Result<T, ScramError> {
    Err(ScramError::Protocol(reason))
}

fn cb_failure<T>(reason: &'static str) -> Result<T, ScramError> {
    Err(ScramError::ChannelBinding(reason))
}

fn check_message(data: &[u8]) -> Result<(), ScramError> {
    if data.is_empty() {
        return violation("empty SCRAM message");
    }
    if data.len() > MAX_MESSAGE_LEN {
        return violation("SCRAM message too long");
    }
    // PostgreSQL handles these as C strings; an embedded NUL would make us and it disagree.
    if data.contains(&0) {
        return violation("SCRAM message contains a NUL byte");
    }
    Ok(())
}

fn split_commas(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b',')
}

/// The value of attribute `name` in `field` (`name=value`), or `reason` as a protocol error.
fn attr<'a>(
    field: Option<&'a [u8]>,
    name: u8,
    reason: &'static str,
) -> Result<&'a [u8], ScramError> {
    match field {
        Some([n, b'=', value @ ..]) if *n == name => Ok(value),
        _ => Err(ScramError::Protocol(reason)),
    }
}

/// An optional extension attribute: syntax-checked, then ignored (as PostgreSQL does).
fn extension(field: &[u8]) -> Result<(), ScramError> {
    match field {
        [n, b'=', ..] if n.is_ascii_alphabetic() => Ok(()),
        _ => violation("malformed attribute"),
    }
}

/// RFC 5802 `printable`: 0x21..=0x7E except ','. Must also be non-empty.
fn is_valid_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn decode_b64(value: &[u8], reason: &'static str) -> Result<Vec<u8>, ScramError> {
    B64.decode(value).map_err(|_| ScramError::Protocol(reason))
}

fn key_from_b64(value: &[u8]) -> Option<Key> {
    B64.decode(value).ok()?.try_into().ok()
}

fn decode_key(value: &[u8], reason: &'static str) -> Result<Key, ScramError> {
    key_from_b64(value).ok_or(ScramError::Protocol(reason))
}

// ---- Verifier -----------------------------------------------------------------------------------

/// A SCRAM-SHA-256 verifier in PostgreSQL's `pg_authid` format. Holds no password, but the keys
/// are still password-equivalent for *this* protocol's server side, so `Debug` omits them.
#[derive(Clone)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Key,
    server_key: Key,
    /// `stored_key` and `server_key` as HMAC keys, prepared once rather than at every login
    /// (two SHA-256 blocks each: ~6% of pgward's instructions per `pgbench -C` connection,
    /// callgrind). They are the same secrets as the keys they come from.
    stored_mac: hmac::Key,
    server_mac: hmac::Key,
    /// Set only by [`MockVerifiers`]: a server built on a mock verifier refuses even a
    /// correct proof, whatever the caller passes as `is_mock` (defense in depth).
    mock: bool,
}

impl ScramVerifier {
    fn with_keys(iterations: u32, salt: Vec<u8>, stored_key: Key, server_key: Key) -> Self {
        ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
            stored_mac: hmac::Key::new(hmac::HMAC_SHA256, &stored_key),
            server_mac: hmac::Key::new(hmac::HMAC_SHA256, &server_key),
            mock: false,
        }
    }

    /// Parses `SCRAM-SHA-256$<iter>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
    pub fn parse(s: &str) -> Result<Self, VerifierError> {
        use VerifierError::Malformed;
        let rest = s
            .strip_prefix(VERIFIER_PREFIX)
            .ok_or(VerifierError::NotScram)?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(Malformed("missing '$' before the keys"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or(Malformed("missing ':' between iteration count and salt"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or(Malformed("missing ':' between StoredKey and ServerKey"))?;
        let iterations = parse_iterations(iterations.as_bytes()).ok_or(Malformed(
            "iteration count is not an integer in 1..=10000000",
        ))?;
        let salt = B64
            .decode(salt)
            .map_err(|_| Malformed("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(Malformed("salt is empty"));
        }
        let stored_key = key_from_b64(stored_key.as_bytes())
            .ok_or(Malformed("StoredKey is not 32 bytes of base64"))?;
        let server_key = key_from_b64(server_key.as_bytes())
            .ok_or(Malformed("ServerKey is not 32 bytes of base64"))?;
        Ok(ScramVerifier::with_keys(
            iterations.get(),
            salt,
            stored_key,
            server_key,
        ))
    }

    /// Derives a verifier from a password, as PostgreSQL's `ALTER ROLE ... PASSWORD` does
    /// (SASLprep first). `iterations` is clamped to 1..=[`MAX_ITERATIONS`].
    pub fn generate(password: &Secret, salt: &[u8], iterations: u32) -> Self {
        let iterations = clamp_iterations(iterations);
        let salted = salted_password(&saslprep(password), salt, iterations);
        let client_key = hmac_sha256(salted.expose(), b"Client Key");
        ScramVerifier::with_keys(
            iterations.get(),
            salt.to_vec(),
            sha256(&client_key),
            hmac_sha256(salted.expose(), b"Server Key"),
        )
    }

    /// [`ScramVerifier::generate`] with a fresh random 16-byte salt.
    pub fn new_random(password: &Secret, iterations: u32) -> Self {
        let mut salt = [0; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        Self::generate(password, &salt, iterations)
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
}

/// The `pg_authid` form. Public data by design (it is what PostgreSQL stores).
impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERIFIER_PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &B64.encode(&self.salt))
            .finish_non_exhaustive()
    }
}

/// Fake verifiers for users that do not exist, so their exchange looks exactly like a real one
/// and fails at the same point. Made from one secret key: the same unknown user always gets the
/// same salt (as a real one would), so probing twice reveals nothing.
///
/// A mock's StoredKey and ServerKey are never seen (the proof check fails whatever they are,
/// and no server signature is sent), so every mock shares one pair, prepared with the salt
/// key when the configuration loads: making a mock costs one HMAC, about what looking up a
/// real user costs, and not the six HMAC key preparations a per-user pair took.
#[derive(Clone)]
pub struct MockVerifiers {
    salt_mac: hmac::Key,
    template: ScramVerifier,
}

impl MockVerifiers {
    /// Pass the iteration count real verifiers use.
    pub fn new(mock_key: &[u8; 32], iterations: u32) -> Self {
        let salt_mac = hmac::Key::new(hmac::HMAC_SHA256, mock_key);
        // 0xFF never occurs in UTF-8, so these inputs can never equal a username.
        let mut template = ScramVerifier::with_keys(
            clamp_iterations(iterations).get(),
            Vec::new(),
            sign(&salt_mac, &[0xFF, b'S']),
            sign(&salt_mac, &[0xFF, b'K']),
        );
        template.mock = true;
        MockVerifiers { salt_mac, template }
    }

    /// The mock verifier of `username`; authentication against it always fails.
    pub fn verifier_for(&self, username: &str) -> ScramVerifier {
        let salt_source = sign(&self.salt_mac, username.as_bytes());
        ScramVerifier {
            salt: salt_source.get(..SALT_LEN).unwrap_or(&salt_source).to_vec(),
            ..self.template.clone()
        }
    }
}

impl fmt::Debug for MockVerifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockVerifiers")
            .field("iterations", &self.template.iterations)
            .finish_non_exhaustive()
    }
}

// ---- Server side --------------------------------------------------------------------------------

enum ServerState {
    Initial,
    SentFirst {
        /// What `c=` must decode to: the gs2 header the client sent, plus our cb data for `p=`.
        cbind_input: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        nonce: Vec<u8>,
    },
    /// Succeeded or failed; any further message is a protocol violation.
    Finished,
}

/// One SCRAM exchange with a client of pgward. Feed it the SASLInitialResponse with
/// [`ScramServer::client_first`], then the SASLResponse with [`ScramServer::client_final`].
pub struct ScramServer {
    verifier: ScramVerifier,
    is_mock: bool,
    channel_binding: ChannelBinding,
    state: ServerState,
    /// Only set by the test constructor, to check the RFC 7677 vector.
    fixed_nonce: Option<String>,
}

impl ScramServer {
    /// `is_mock`: the user does not exist and `verifier` came from [`MockVerifiers`].
    /// `channel_binding` must describe this connection (it decides whether PLUS is valid).
    pub fn new(verifier: ScramVerifier, is_mock: bool, channel_binding: ChannelBinding) -> Self {
        ScramServer {
            verifier,
            is_mock,
            channel_binding,
            state: ServerState::Initial,
            fixed_nonce: None,
        }
    }

    /// Takes the mechanism and data of SASLInitialResponse; returns server-first-message.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        // Any error below ends the exchange.
        let state = std::mem::replace(&mut self.state, ServerState::Finished);
        if !matches!(state, ServerState::Initial) {
            return violation("unexpected client-first-message");
        }
        check_message(data)?;
        let tls_cb = match &self.channel_binding {
            ChannelBinding::TlsServerEndPoint(cb) => Some(cb.as_slice()),
            ChannelBinding::NotSupported => None,
        };
        let plus = match (mechanism, tls_cb) {
            (SCRAM_SHA_256, _) => false,
            (SCRAM_SHA_256_PLUS, Some(_)) => true,
            _ => return violation("client selected a mechanism not offered"),
        };

        // gs2-header = cbind-flag "," [authzid] ","
        let mut parts = data.splitn(3, |&b| b == b',');
        let cb_flag = parts.next().unwrap_or_default();
        let authzid = parts.next();
        let bare = parts
            .next()
            .ok_or(ScramError::Protocol("incomplete gs2 header"))?;
        let cb_data: &[u8] = match (cb_flag, tls_cb) {
            (b"n", _) | (b"y", None) if !plus => &[],
            // The client could do channel binding but believes we cannot, yet we offered PLUS:
            // someone removed it from our mechanism list on the way.
            (b"y", Some(_)) if !plus => {
                return cb_failure("client can bind but thinks we cannot: downgrade?");
            }
            (b"n" | b"y", _) => {
                return cb_failure("SCRAM-SHA-256-PLUS without channel binding data");
            }
            ([b'p', b'=', name @ ..], Some(cb)) if plus && name == CB_TYPE => cb,
            ([b'p', b'=', ..], _) if plus => return cb_failure("unsupported channel binding type"),
            ([b'p', b'=', ..], _) => {
                return cb_failure("channel binding data sent with SCRAM-SHA-256");
            }
            _ => return violation("invalid channel binding flag"),
        };
        match authzid {
            Some([]) => {}
            Some([b'a', b'=', ..]) => return violation("authorization identity is not supported"),
            _ => return violation("malformed gs2 header"),
        }

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        if bare.starts_with(b"m=") {
            return violation("unsupported mandatory SCRAM extension");
        }
        let mut attrs = split_commas(bare);
        // The user from the startup packet is authoritative; `n=` is ignored, like PostgreSQL.
        attr(attrs.next(), b'n', "expected username attribute")?;
        let client_nonce = attr(attrs.next(), b'r', "expected nonce attribute")?;
        if !is_valid_nonce(client_nonce) {
            return violation("invalid client nonce");
        }
        attrs.try_for_each(extension)?;

        let server_nonce = match &self.fixed_nonce {
            Some(n) => n.clone(),
            None => random_nonce(SERVER_NONCE_LEN),
        };
        let nonce = [client_nonce, server_nonce.as_bytes()].concat();
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(
            format!(
                ",s={},i={}",
                B64.encode(&self.verifier.salt),
                self.verifier.iterations
            )
            .as_bytes(),
        );
        self.state = ServerState::SentFirst {
            cbind_input: [cb_flag, b",,", cb_data].concat(),
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Takes the SASLResponse data; returns server-final-message (`v=...`) to send in
    /// AuthenticationSASLFinal. `Err(InvalidProof)` means "password authentication failed",
    /// whether the password was wrong or the user does not exist.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::SentFirst {
            cbind_input,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, ServerState::Finished)
        else {
            return violation("unexpected client-final-message");
        };
        check_message(data)?;

        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        // The proof must come last; everything before its comma is signed.
        let comma = data
            .iter()
            .rposition(|&b| b == b',')
            .ok_or(ScramError::Protocol("incomplete client-final-message"))?;
        let (without_proof, proof_field) = data.split_at(comma);
        let proof = attr(
            proof_field.get(1..),
            b'p',
            "expected proof as last attribute",
        )?;
        let mut attrs = split_commas(without_proof);
        let cbind = attr(attrs.next(), b'c', "expected channel binding attribute")?;
        let client_nonce = attr(attrs.next(), b'r', "expected nonce attribute")?;
        attrs.try_for_each(extension)?;

        let cbind = decode_b64(cbind, "channel binding attribute is not valid base64")?;
        if cbind != cbind_input {
            return cb_failure("channel binding data does not match");
        }
        if client_nonce != nonce.as_slice() {
            return violation("nonce does not match");
        }
        let proof = decode_key(proof, "proof is not 32 bytes of base64")?;

        let auth_message = [
            &client_first_bare[..],
            b",",
            &server_first,
            b",",
            without_proof,
        ]
        .concat();
        let client_signature = sign(&self.verifier.stored_mac, &auth_message);
        let client_key = xor(&proof, &client_signature);
        let proof_ok: bool = sha256(&client_key).ct_eq(&self.verifier.stored_key).into();
        // A mock exchange has done the same work as a real one and now fails the same way.
        if !proof_ok || self.is_mock || self.verifier.mock {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = sign(&self.verifier.server_mac, &auth_message);
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer").finish_non_exhaustive()
    }
}

// ---- Client side --------------------------------------------------------------------------------

enum ClientState {
    Initial,
    SentFirst {
        client_nonce: String,
        client_first_bare: String,
    },
    SentFinal {
        server_signature: Key,
    },
    Finished,
}

/// pgward authenticating to a PostgreSQL backend with SCRAM-SHA-256[-PLUS].
pub struct ScramClient {
    /// Already SASLprep'd.
    password: Secret,
    mechanism: &'static str,
    /// gs2 header: `n,,`, `y,,` or `p=tls-server-end-point,,`.
    gs2_header: &'static str,
    /// Channel-binding data, non-empty only with PLUS.
    cb_data: Vec<u8>,
    state: ClientState,
    /// Only set by the test constructor: (username, nonce), for the RFC 7677 vector.
    fixed: Option<(String, String)>,
}

impl ScramClient {
    /// Chooses the mechanism from what the backend offered in AuthenticationSASL: PLUS only when
    /// we have `TlsServerEndPoint` data *and* the backend offered it; otherwise SCRAM-SHA-256,
    /// announcing `y` (we could bind, the server seemingly cannot) when we are on TLS. Fails if
    /// the backend offered no usable SCRAM mechanism.
    pub fn new(
        password: &Secret,
        channel_binding: ChannelBinding,
        server_mechanisms: &[impl AsRef<str>],
    ) -> Result<Self, ScramError> {
        let offered = |m: &str| server_mechanisms.iter().any(|s| s.as_ref() == m);
        let (mechanism, gs2_header, cb_data) = match channel_binding {
            ChannelBinding::TlsServerEndPoint(cb) if offered(SCRAM_SHA_256_PLUS) => {
                (SCRAM_SHA_256_PLUS, "p=tls-server-end-point,,", cb)
            }
            ChannelBinding::TlsServerEndPoint(_) if offered(SCRAM_SHA_256) => {
                (SCRAM_SHA_256, "y,,", Vec::new())
            }
            ChannelBinding::NotSupported if offered(SCRAM_SHA_256) => {
                (SCRAM_SHA_256, "n,,", Vec::new())
            }
            _ => return violation("backend offered no usable SASL mechanism"),
        };
        Ok(ScramClient {
            password: saslprep(password),
            mechanism,
            gs2_header,
            cb_data,
            state: ClientState::Initial,
            fixed: None,
        })
    }

    /// The mechanism name to put in SASLInitialResponse.
    pub fn mechanism(&self) -> &'static str {
        self.mechanism
    }

    /// Whether this exchange binds to the TLS channel (for a "require channel binding" policy).
    pub fn uses_channel_binding(&self) -> bool {
        self.mechanism == SCRAM_SHA_256_PLUS
    }

    /// client-first-message, for SASLInitialResponse. Calling it again restarts the exchange.
    pub fn client_first(&mut self) -> Vec<u8> {
        let (user, client_nonce) = match &self.fixed {
            Some((user, nonce)) => (user.clone(), nonce.clone()),
            // Like libpq we send an empty name: the backend uses the startup packet's user.
            None => (String::new(), random_nonce(CLIENT_NONCE_LEN)),
        };
        let client_first_bare = format!("n={user},r={client_nonce}");
        let message = format!("{}{client_first_bare}", self.gs2_header).into_bytes();
        self.state = ClientState::SentFirst {
            client_nonce,
            client_first_bare,
        };
        message
    }

    /// Takes server-first-message (AuthenticationSASLContinue); returns client-final-message.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ClientState::SentFirst {
            client_nonce,
            client_first_bare,
        } = std::mem::replace(&mut self.state, ClientState::Finished)
        else {
            return violation("unexpected server-first-message");
        };
        check_message(data)?;
        if data.starts_with(b"m=") {
            return violation("unsupported mandatory SCRAM extension");
        }
        let mut attrs = split_commas(data);
        let nonce = attr(attrs.next(), b'r', "expected nonce attribute")?;
        let salt = attr(attrs.next(), b's', "expected salt attribute")?;
        let iterations = attr(attrs.next(), b'i', "expected iteration count attribute")?;
        if attrs.next().is_some() {
            return violation("garbage after iteration count");
        }
        if nonce.len() <= client_nonce.len()
            || !nonce.starts_with(client_nonce.as_bytes())
            || !is_valid_nonce(nonce)
        {
            return violation("server nonce does not extend ours");
        }
        let salt = decode_b64(salt, "salt is not valid base64")?;
        if salt.is_empty() {
            return violation("salt is empty");
        }
        let iterations = parse_iterations(iterations)
            .ok_or(ScramError::Protocol("iteration count out of range"))?;

        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac_sha256(salted.expose(), b"Client Key");
        let stored_key = sha256(&client_key);
        let server_key = hmac_sha256(salted.expose(), b"Server Key");

        let cbind_input = [self.gs2_header.as_bytes(), &self.cb_data].concat();
        let mut without_proof = format!("c={},r=", B64.encode(cbind_input)).into_bytes();
        without_proof.extend_from_slice(nonce);
        let auth_message = [
            client_first_bare.as_bytes(),
            b",",
            data,
            b",",
            &without_proof,
        ]
        .concat();
        let proof = xor(&client_key, &hmac_sha256(&stored_key, &auth_message));
        self.state = ClientState::SentFinal {
            server_signature: hmac_sha256(&server_key, &auth_message),
        };
        without_proof.extend_from_slice(format!(",p={}", B64.encode(proof)).as_bytes());
        Ok(without_proof)
    }

    /// Takes server-final-message (AuthenticationSASLFinal). `Ok` means the backend proved it
    /// knows our password; still wait for AuthenticationOk.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let ClientState::SentFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Finished)
        else {
            return violation("unexpected server-final-message");
        };
        check_message(data)?;
        if let Some(reason) = data.strip_prefix(b"e=") {
            // Short and printable only: it ends up in our logs.
            let reason = reason
                .iter()
                .take_while(|b| (0x20..=0x7e).contains(*b))
                .take(64)
                .map(|&b| char::from(b))
                .collect();
            return Err(ScramError::ServerError(reason));
        }
        let signature = attr(Some(data), b'v', "expected verifier attribute")?;
        let signature = decode_key(signature, "server signature is not 32 bytes of base64")?;
        if bool::from(signature.ct_eq(&server_signature)) {
            Ok(())
        } else {
            Err(ScramError::InvalidServerSignature)
        }
    }
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

// ---- MD5 (backend side only) --------------------------------------------------------------------

fn hex(bytes: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .collect()
}

/// The PasswordMessage answering a backend's AuthenticationMD5Password:
/// `"md5" + md5hex(md5hex(password + user) + salt)`. No SASLprep, like PostgreSQL.
pub fn md5_password(user: &str, password: &Secret, salt: [u8; 4]) -> Secret {
    let mut inner = Md5::new();
    inner.update(password.expose());
    inner.update(user.as_bytes());
    // md5(password + user) is itself a password equivalent for md5 auth: keep it in a Secret.
    let inner = Secret::new(hex(&inner.finalize()));
    let mut outer = Md5::new();
    outer.update(inner.expose());
    outer.update(salt);
    let mut out = b"md5".to_vec();
    out.extend_from_slice(&hex(&outer.finalize()));
    Secret::new(out)
}

// ---- Test-only constructors ---------------------------------------------------------------------
// Fixed nonces, so the RFC 7677 vector can be checked end to end.

#[cfg(test)]
impl ScramServer {
    fn with_nonce(verifier: ScramVerifier, cb: ChannelBinding, server_nonce: &str) -> Self {
        let mut server = Self::new(verifier, false, cb);
        server.fixed_nonce = Some(server_nonce.to_owned());
        server
    }
}

#[cfg(test)]
impl ScramClient {
    fn with_nonce(password: &Secret, user: &str, client_nonce: &str) -> Self {
        let mut client = Self::new(password, ChannelBinding::NotSupported, &[SCRAM_SHA_256])
            .expect("SCRAM-SHA-256 is offered");
        client.fixed = Some((user.to_owned(), client_nonce.to_owned()));
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &[u8] =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// `SELECT rolpassword FROM pg_authid` from PostgreSQL 15 after `PASSWORD 'pencil'`.
    const PG_PENCIL: &str = "SCRAM-SHA-256$4096:cfOoqFf6W3BewLu7sxZBUw==$\
WQBOaXmZQXzbuFUp12iJDXQb5knAHZbcwn5pxgh0xiU=:VIbrvhsGwsANxW17/k3gtVUeJ/5Qst672dcEotnR9x4=";
    /// The same after `PASSWORD E'I\u00adX'`: SASLprep maps the soft hyphen to nothing.
    const PG_SOFT_HYPHEN: &str = "SCRAM-SHA-256$4096:4V1etE6Aumxbh/YQGuzhTw==$\
hi5HSk2TaQmZ1zSrUVgjbrJmBNmdmguIlx5wYmZYOXA=:fH0XyKH/wl2bkjVY0MRA8XaFRgZUn93A7ICsedOvGf4=";

    const TLS_CB: &[u8] = b"0123456789abcdef0123456789abcdef";
    const MOCK_KEY: &[u8; 32] = b"mock key mock key mock key mock!";

    fn pw(s: &str) -> Secret {
        Secret::new(s)
    }

    fn rfc_verifier() -> ScramVerifier {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramVerifier::generate(&pw("pencil"), &salt, 4096)
    }

    fn rfc_server() -> ScramServer {
        let nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        ScramServer::with_nonce(rfc_verifier(), ChannelBinding::NotSupported, nonce)
    }

    fn rfc_server_after_first() -> ScramServer {
        let mut server = rfc_server();
        server
            .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST)
            .unwrap();
        server
    }

    fn rfc_client() -> ScramClient {
        ScramClient::with_nonce(&pw("pencil"), "user", "rOprNGfwEbeRWgbNEkqO")
    }

    fn tls() -> ChannelBinding {
        ChannelBinding::TlsServerEndPoint(TLS_CB.to_vec())
    }

    /// Runs a full exchange; the verifier is built from `stored` and the client uses `password`.
    fn exchange(
        verifier: ScramVerifier,
        is_mock: bool,
        password: &str,
        server_cb: ChannelBinding,
        client_cb: ChannelBinding,
    ) -> Result<(), ScramError> {
        let offered = mechanisms(&server_cb);
        let mut server = ScramServer::new(verifier, is_mock, server_cb);
        let mut client = ScramClient::new(&pw(password), client_cb, offered)?;
        let first = client.client_first();
        let server_first = server.client_first(client.mechanism(), &first)?;
        let client_final = client.server_first(&server_first)?;
        let server_final = server.client_final(&client_final)?;
        client.server_final(&server_final)
    }

    #[test]
    fn rfc7677_vector_server_side() {
        let mut server = rfc_server();
        let server_first = server
            .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST)
            .unwrap();
        assert_eq!(server_first, RFC_SERVER_FIRST);
        assert_eq!(
            server.client_final(RFC_CLIENT_FINAL).unwrap(),
            RFC_SERVER_FINAL
        );
    }

    #[test]
    fn rfc7677_vector_client_side() {
        let mut client = rfc_client();
        assert_eq!(client.client_first(), RFC_CLIENT_FIRST);
        assert_eq!(
            client.server_first(RFC_SERVER_FIRST).unwrap(),
            RFC_CLIENT_FINAL
        );
        client.server_final(RFC_SERVER_FINAL).unwrap();
    }

    #[test]
    fn round_trip_and_wrong_password() {
        let verifier = ScramVerifier::new_random(&pw("s3cret"), 4096);
        let none = || ChannelBinding::NotSupported;
        exchange(verifier.clone(), false, "s3cret", none(), none()).unwrap();
        let wrong = exchange(verifier, false, "s3cret!", none(), none());
        assert_eq!(wrong, Err(ScramError::InvalidProof));
        assert!(!ScramError::InvalidProof.is_protocol_violation());
    }

    #[test]
    fn mock_verifier_always_fails_and_is_stable() {
        let mock = MockVerifiers::new(MOCK_KEY, 4096).verifier_for("ghost");
        let none = || ChannelBinding::NotSupported;
        // Whatever the password and even if the caller forgets the flag.
        for is_mock in [true, false] {
            let result = exchange(mock.clone(), is_mock, "pencil", none(), none());
            assert_eq!(result, Err(ScramError::InvalidProof));
        }
        // A mock verifier fails even if its keys match the password and the flag is forgotten.
        let mut marked = rfc_verifier();
        marked.mock = true;
        let result = exchange(marked, false, "pencil", none(), none());
        assert_eq!(result, Err(ScramError::InvalidProof));
        // A real verifier flagged as mock fails with the right password, with the same error.
        let result = exchange(rfc_verifier(), true, "pencil", none(), none());
        assert_eq!(result, Err(ScramError::InvalidProof));

        assert_eq!(
            mock.salt(),
            MockVerifiers::new(MOCK_KEY, 4096)
                .verifier_for("ghost")
                .salt()
        );
        assert_eq!(mock.salt().len(), 16);
        assert_eq!(mock.iterations(), 4096);
        assert_ne!(
            mock.salt(),
            MockVerifiers::new(MOCK_KEY, 4096)
                .verifier_for("ghost2")
                .salt()
        );
        let other_key = MockVerifiers::new(&[7; 32], 4096).verifier_for("ghost");
        assert_ne!(mock.salt(), other_key.salt());
        // Looks like any verifier from the outside.
        assert!(ScramVerifier::parse(&mock.to_string()).is_ok());
    }

    #[test]
    fn mock_server_first_looks_like_a_real_one() {
        let real = ScramVerifier::new_random(&pw("x"), 4096);
        let mock = MockVerifiers::new(MOCK_KEY, 4096).verifier_for("ghost");
        let shape = |v: ScramVerifier, is_mock| {
            let mut server = ScramServer::new(v, is_mock, ChannelBinding::NotSupported);
            let first = server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap();
            let text = String::from_utf8(first).unwrap();
            let parts: Vec<_> = text
                .split(',')
                .map(|p| (p[..2].to_owned(), p.len()))
                .collect();
            parts
        };
        assert_eq!(shape(real, false), shape(mock, true));
    }

    #[test]
    fn verifier_parse_display_round_trip() {
        let v = rfc_verifier();
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
        assert_eq!(ScramVerifier::parse(&text).unwrap().to_string(), text);
        assert_eq!(
            ScramVerifier::parse(PG_PENCIL).unwrap().to_string(),
            PG_PENCIL
        );
        // Debug shows neither key.
        let debug = format!("{v:?}");
        let keys = text.rsplit('$').next().unwrap();
        for key in keys.split(':') {
            assert!(!debug.contains(key), "{debug}");
        }
        assert!(debug.contains("4096"));
    }

    #[test]
    fn verifier_matches_real_postgresql() {
        let pg = ScramVerifier::parse(PG_PENCIL).unwrap();
        let ours = ScramVerifier::generate(&pw("pencil"), pg.salt(), pg.iterations());
        assert_eq!(ours.to_string(), PG_PENCIL);
        let none = || ChannelBinding::NotSupported;
        exchange(pg.clone(), false, "pencil", none(), none()).unwrap();
        let wrong = exchange(pg, false, "Pencil", none(), none());
        assert_eq!(wrong, Err(ScramError::InvalidProof));

        // SASLprep applied as PostgreSQL does, on both generation and login.
        let pg = ScramVerifier::parse(PG_SOFT_HYPHEN).unwrap();
        let ours = ScramVerifier::generate(&pw("I\u{ad}X"), pg.salt(), pg.iterations());
        assert_eq!(ours.to_string(), PG_SOFT_HYPHEN);
        exchange(pg.clone(), false, "IX", none(), none()).unwrap();
        exchange(pg, false, "I\u{ad}X", none(), none()).unwrap();
        // Not UTF-8: raw bytes, no panic, still consistent.
        let raw = Secret::new(vec![0xff, 0xfe, b'a']);
        let v = ScramVerifier::generate(&raw, b"salt", 1);
        assert_eq!(
            v.to_string(),
            ScramVerifier::generate(&raw, b"salt", 1).to_string()
        );
    }

    #[test]
    fn verifier_parse_rejects_bad_input_without_echoing_it() {
        let keys = "$WQBOaXmZQXzbuFUp12iJDXQb5knAHZbcwn5pxgh0xiU=:\
VIbrvhsGwsANxW17/k3gtVUeJ/5Qst672dcEotnR9x4=";
        let bad = [
            "hunter2".to_owned(),
            "md5a3556571e93b0d20722ba62be61e8c2d".to_owned(),
            "SCRAM-SHA-1$4096:c2FsdA==".to_owned() + keys,
            "SCRAM-SHA-256$0:c2FsdA==".to_owned() + keys,
            "SCRAM-SHA-256$10000001:c2FsdA==".to_owned() + keys,
            "SCRAM-SHA-256$-1:c2FsdA==".to_owned() + keys,
            "SCRAM-SHA-256$99999999999:c2FsdA==".to_owned() + keys,
            "SCRAM-SHA-256$4096:".to_owned() + keys,
            "SCRAM-SHA-256$4096:!!!".to_owned() + keys,
            "SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:c2FsdA==".to_owned(),
            "SCRAM-SHA-256$4096:c2FsdA==".to_owned(),
            "SCRAM-SHA-256$4096:c2FsdA==$WQBOaXmZQXzbuFUp12iJDXQb5knAHZbcwn5pxgh0xiU=".to_owned(),
            "SCRAM-SHA-256$".to_owned(),
        ];
        for s in &bad {
            let err = ScramVerifier::parse(s).expect_err(s);
            let msg = err.to_string();
            assert!(!msg.contains("hunter2") && !msg.contains("WQBO") && !msg.contains("c2Fs"));
        }
        assert_eq!(
            ScramVerifier::parse("hunter2").unwrap_err(),
            VerifierError::NotScram
        );
        assert!(
            ScramVerifier::parse(&("SCRAM-SHA-256$10000000:c2FsdA==".to_owned() + keys)).is_ok()
        );
    }

    #[test]
    fn channel_binding_plus_round_trip() {
        exchange(rfc_verifier(), false, "pencil", tls(), tls()).unwrap();
        let client = ScramClient::new(&pw("p"), tls(), mechanisms(&tls())).unwrap();
        assert_eq!(client.mechanism(), SCRAM_SHA_256_PLUS);
        assert!(client.uses_channel_binding());
        // Different certificate hash on each side (a man in the middle): refused.
        let other = ChannelBinding::TlsServerEndPoint(b"another certificate hash".to_vec());
        let result = exchange(rfc_verifier(), false, "pencil", tls(), other);
        assert!(
            matches!(result, Err(ScramError::ChannelBinding(_))),
            "{result:?}"
        );
    }

    #[test]
    fn channel_binding_y_flag_and_downgrade() {
        // Client on TLS, server did not offer PLUS: client says `y`.
        let mut client = ScramClient::new(&pw("pencil"), tls(), &[SCRAM_SHA_256]).unwrap();
        assert_eq!(client.mechanism(), SCRAM_SHA_256);
        assert!(!client.uses_channel_binding());
        let first = client.client_first();
        assert!(first.starts_with(b"y,,n=,r="));
        // Accepted by a server without TLS, full exchange works.
        let mut server = ScramServer::new(rfc_verifier(), false, ChannelBinding::NotSupported);
        let sf = server.client_first(SCRAM_SHA_256, &first).unwrap();
        let cf = client.server_first(&sf).unwrap();
        assert!(cf.starts_with(b"c=eSws,"));
        client
            .server_final(&server.client_final(&cf).unwrap())
            .unwrap();
        // A server that offered PLUS sees a downgrade.
        let mut server = ScramServer::new(rfc_verifier(), false, tls());
        let err = server.client_first(SCRAM_SHA_256, &first).unwrap_err();
        assert!(matches!(err, ScramError::ChannelBinding(_)) && err.is_protocol_violation());
        // `n` is fine with TLS (the client cannot bind).
        let mut server = ScramServer::new(rfc_verifier(), false, tls());
        assert!(server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").is_ok());
    }

    #[test]
    fn channel_binding_negotiation_errors() {
        let cases: [(ChannelBinding, &str, &[u8]); 6] = [
            (tls(), SCRAM_SHA_256_PLUS, b"n,,n=,r=abc"),
            (tls(), SCRAM_SHA_256_PLUS, b"y,,n=,r=abc"),
            (tls(), SCRAM_SHA_256_PLUS, b"p=tls-unique,,n=,r=abc"),
            (tls(), SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc"),
            (tls(), SCRAM_SHA_256, b"p=tls-unique,,n=,r=abc"),
            (
                ChannelBinding::NotSupported,
                SCRAM_SHA_256,
                b"p=tls-server-end-point,,n=,r=abc",
            ),
        ];
        for (cb, mech, msg) in cases {
            let mut server = ScramServer::new(rfc_verifier(), false, cb);
            let err = server.client_first(mech, msg).unwrap_err();
            assert!(
                matches!(err, ScramError::ChannelBinding(_)),
                "{mech} {msg:?}: {err:?}"
            );
        }
        // PLUS without TLS was never offered.
        let mut server = ScramServer::new(rfc_verifier(), false, ChannelBinding::NotSupported);
        let msg = b"p=tls-server-end-point,,n=,r=abc";
        let err = server.client_first(SCRAM_SHA_256_PLUS, msg).unwrap_err();
        assert!(matches!(err, ScramError::Protocol(_)));
        let mut server = ScramServer::new(rfc_verifier(), false, tls());
        assert!(server.client_first("SCRAM-SHA-1", b"n,,n=,r=abc").is_err());
    }

    #[test]
    fn client_final_channel_binding_must_match_header() {
        // Client sent `n,,` in the first message but claims `y,,` (eSws) in the final one.
        let mut client = rfc_client();
        let mut server = rfc_server();
        let sf = server
            .client_first(SCRAM_SHA_256, &client.client_first())
            .unwrap();
        let cf = String::from_utf8(client.server_first(&sf).unwrap()).unwrap();
        let tampered = cf.replacen("c=biws", "c=eSws", 1);
        let err = server.client_final(tampered.as_bytes()).unwrap_err();
        assert!(matches!(err, ScramError::ChannelBinding(_)));

        // With PLUS, `c=` carrying the header but the wrong certificate hash.
        let mut server = ScramServer::new(rfc_verifier(), false, tls());
        let first = b"p=tls-server-end-point,,n=,r=abc";
        let sf = server.client_first(SCRAM_SHA_256_PLUS, first).unwrap();
        let nonce = String::from_utf8(sf).unwrap()[2..]
            .split(',')
            .next()
            .unwrap()
            .to_owned();
        let mut cbind = b"p=tls-server-end-point,,".to_vec();
        cbind.extend_from_slice(b"wrong hash");
        let cf = format!(
            "c={},r={nonce},p={}",
            B64.encode(cbind),
            B64.encode([0; 32])
        );
        let err = server.client_final(cf.as_bytes()).unwrap_err();
        assert!(matches!(err, ScramError::ChannelBinding(_)));
    }

    #[test]
    fn client_first_malformed() {
        let long = [b"n,,n=,r=".as_slice(), &[b'a'; MAX_MESSAGE_LEN]].concat();
        let bad: [&[u8]; 17] = [
            b"",
            b"n",
            b"n,",
            b"nonsense",
            b"x,,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"n,zz,n=,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,n=",
            b"n,,r=abc",
            b"n,,n=,r=",
            b"n,,n=,r=a,bc",
            b"n,,n=,r=a b",
            b"n,,n=,r=ab\xff",
            b"n,,n=,r=ab\0c",
            b"n,,n=a\0b,r=abc",
            &long,
        ];
        for msg in bad {
            let mut server = ScramServer::new(rfc_verifier(), false, ChannelBinding::NotSupported);
            let err = server.client_first(SCRAM_SHA_256, msg).unwrap_err();
            assert!(err.is_protocol_violation(), "{msg:?}: {err:?}");
            // After an error the exchange is over.
            assert!(server.client_final(RFC_CLIENT_FINAL).is_err());
        }
        // Optional extensions after the nonce are ignored, as PostgreSQL does.
        let mut server = ScramServer::new(rfc_verifier(), false, ChannelBinding::NotSupported);
        assert!(
            server
                .client_first(SCRAM_SHA_256, b"n,,n=x,r=abc,x=1")
                .is_ok()
        );
    }

    #[test]
    fn client_final_malformed() {
        let good = std::str::from_utf8(RFC_CLIENT_FINAL).unwrap();
        let nonce = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let bad = [
            String::new(),
            "garbage".to_owned(),
            format!("c=biws,{nonce}"),
            format!("c=biws,{proof}"),
            format!("{nonce},c=biws,{proof}"),
            format!("c=biws,{nonce},{proof},x=1"),
            format!("c=b!ws,{nonce},{proof}"),
            format!("c=biws,{nonce}X,{proof}"),
            format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,{proof}"),
            format!("c=biws,{nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndV=="),
            format!("c=biws,{nonce},p=!!!"),
            format!("c=biws,{nonce},p="),
            format!("c=biws,{nonce},{proof}{}", "A".repeat(MAX_MESSAGE_LEN)),
        ];
        for msg in &bad {
            let mut server = rfc_server_after_first();
            let err = server.client_final(msg.as_bytes()).unwrap_err();
            assert!(err.is_protocol_violation(), "{msg}: {err:?}");
        }
        // Every proper prefix of a valid message fails; a flipped proof byte is a wrong password.
        for len in 0..good.len() {
            let mut server = rfc_server_after_first();
            assert!(
                server.client_final(&RFC_CLIENT_FINAL[..len]).is_err(),
                "{len}"
            );
        }
        let mut server = rfc_server_after_first();
        let flipped = good.replacen("p=dHz", "p=eHz", 1);
        assert_eq!(
            server.client_final(flipped.as_bytes()),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn out_of_order_calls_fail() {
        let mut server = ScramServer::new(rfc_verifier(), false, ChannelBinding::NotSupported);
        assert!(
            server
                .client_final(RFC_CLIENT_FINAL)
                .unwrap_err()
                .is_protocol_violation()
        );
        let mut server = rfc_server_after_first();
        assert!(
            server
                .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST)
                .is_err()
        );
        // The exchange is dead after a misstep: even a correct final is refused.
        assert!(server.client_final(RFC_CLIENT_FINAL).is_err());

        let mut client = rfc_client();
        assert!(client.server_first(RFC_SERVER_FIRST).is_err());
        assert!(client.server_final(RFC_SERVER_FINAL).is_err());
        client.client_first();
        assert!(client.server_final(RFC_SERVER_FINAL).is_err());
        assert!(client.server_first(RFC_SERVER_FIRST).is_err());
    }

    #[test]
    fn client_rejects_malicious_server_first() {
        let bad = [
            "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
            "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001",
            "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4294967296",
            "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=+4096",
            "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=",
            "r=rOprNGfwEbeRWgbNEkqO%hvY,s=,i=4096",
            "r=rOprNGfwEbeRWgbNEkqO%hvY,s=!!,i=4096",
            "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=XOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkqO%h Y,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=1",
            "m=ext,r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqO%hvY,i=4096",
            "e=other-error",
            "",
        ];
        for msg in bad {
            let mut client = rfc_client();
            client.client_first();
            let err = client.server_first(msg.as_bytes()).unwrap_err();
            assert!(err.is_protocol_violation(), "{msg}: {err:?}");
        }
    }

    #[test]
    fn client_server_final_checks() {
        let run = |msg: &[u8]| {
            let mut client = rfc_client();
            client.client_first();
            client.server_first(RFC_SERVER_FIRST).unwrap();
            client.server_final(msg)
        };
        assert_eq!(run(RFC_SERVER_FINAL), Ok(()));
        let forged = b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
        assert_eq!(run(forged), Err(ScramError::InvalidServerSignature));
        assert_eq!(
            run(b"e=invalid-proof\x07\x1b[31m"),
            Err(ScramError::ServerError("invalid-proof".to_owned()))
        );
        let long = [b"e=".as_slice(), &[b'x'; 500]].concat();
        assert!(matches!(run(&long), Err(ScramError::ServerError(r)) if r.len() == 64));
        for len in 0..RFC_SERVER_FINAL.len() {
            assert!(run(&RFC_SERVER_FINAL[..len]).is_err(), "{len}");
        }
        assert!(run(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=1").is_err());
    }

    #[test]
    fn client_mechanism_choice() {
        let none = || ChannelBinding::NotSupported;
        let c = ScramClient::new(&pw("p"), none(), &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]).unwrap();
        assert_eq!(c.mechanism(), SCRAM_SHA_256);
        let mut c = ScramClient::new(&pw("p"), none(), &["SCRAM-SHA-256".to_owned()]).unwrap();
        assert!(c.client_first().starts_with(b"n,,n=,r="));
        let mut c = ScramClient::new(&pw("p"), tls(), &[SCRAM_SHA_256_PLUS]).unwrap();
        assert!(
            c.client_first()
                .starts_with(b"p=tls-server-end-point,,n=,r=")
        );
        assert!(ScramClient::new(&pw("p"), none(), &[SCRAM_SHA_256_PLUS]).is_err());
        assert!(ScramClient::new(&pw("p"), tls(), &["SCRAM-SHA-1"]).is_err());
        assert_eq!(mechanisms(&none()), [SCRAM_SHA_256]);
        assert_eq!(mechanisms(&tls()), [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
    }

    /// Feeds random and mutated bytes to every state of both machines: errors are fine, panics
    /// are not (a panic fails the test).
    #[test]
    fn random_input_never_panics() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"nypacrsivem=,pP-_+/=0123456789%$\0\xff ";
        let cheap = ScramVerifier::generate(&pw("pencil"), b"salt", 1);
        let valid: [&[u8]; 4] = [
            RFC_CLIENT_FIRST,
            RFC_SERVER_FIRST,
            RFC_CLIENT_FINAL,
            RFC_SERVER_FINAL,
        ];
        for round in 0..3000 {
            let mut input: Vec<u8> = match round % 3 {
                0 => (0..next() % 80)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect(),
                1 => (0..next() % 1200).map(|_| next() as u8).collect(),
                _ => {
                    let base = valid[(next() % 4) as usize];
                    base[..(next() as usize % (base.len() + 1))].to_vec()
                }
            };
            if round % 5 == 0 && !input.is_empty() {
                let at = next() as usize % input.len();
                input[at] = next() as u8;
            }
            let mech = if round % 2 == 0 {
                SCRAM_SHA_256
            } else {
                SCRAM_SHA_256_PLUS
            };
            for cb in [ChannelBinding::NotSupported, tls()] {
                let _ =
                    ScramServer::new(cheap.clone(), false, cb.clone()).client_first(mech, &input);
                let mut server = ScramServer::new(cheap.clone(), false, cb);
                server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap();
                let _ = server.client_final(&input);
            }
            let mut client = ScramClient::with_nonce(&pw("pencil"), "", "rOprNGfwEbeRWgbNEkqO");
            client.client_first();
            let _ = client.server_first(&input);
            let mut client = ScramClient::with_nonce(&pw("pencil"), "", "rOprNGfwEbeRWgbNEkqO");
            client.client_first();
            client
                .server_first(b"r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=1")
                .unwrap();
            let _ = client.server_final(&input);
            let _ = ScramVerifier::parse(&String::from_utf8_lossy(&input));
        }
    }

    #[test]
    fn nothing_secret_in_debug_or_errors() {
        let mut client = ScramClient::new(&pw("hunter2"), tls(), &[SCRAM_SHA_256_PLUS]).unwrap();
        client.client_first();
        let debug = format!("{client:?}");
        assert!(!debug.contains("hunter2") && debug.contains("SCRAM-SHA-256-PLUS"));
        let server = ScramServer::new(rfc_verifier(), true, ChannelBinding::NotSupported);
        let debug = format!("{server:?}");
        assert!(
            !debug.contains("mock") && !debug.contains("W22Z"),
            "{debug}"
        );
        assert_eq!(
            ScramError::InvalidProof.to_string(),
            "password authentication failed"
        );
    }

    #[test]
    fn md5_password_known_vector() {
        // python3: "md5" + md5(md5(b"postgres" + b"postgres").hexdigest().encode()
        //                      + bytes([1, 2, 3, 4])).hexdigest()
        let out = md5_password("postgres", &pw("postgres"), [1, 2, 3, 4]);
        assert_eq!(out.expose(), b"md568be9ed08db75f318087ab337aaea044");
    }
}
