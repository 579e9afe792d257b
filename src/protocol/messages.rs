//! The few messages pgward looks inside, and the messages it writes itself.
//!
//! Decoders take one isolated, already-framed message body and return borrowed views: no
//! allocation on the hot path, no reading past the body, an error for anything malformed. (pgwire's
//! decoders allocate a `String` per field and, in our study, panicked on malformed input, so they
//! never see peer bytes here.) Encoders use pgwire's message types, which write exactly what
//! PostgreSQL writes.

use bytes::{BufMut, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::response::{ReadyForQuery, TransactionStatus as PgTxStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed {message} message: {reason}")]
pub struct DecodeError {
    pub message: &'static str,
    pub reason: &'static str,
}

fn err(message: &'static str, reason: &'static str) -> DecodeError {
    DecodeError { message, reason }
}

/// A reader over one message body that fails instead of panicking.
struct Body<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Body<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Self {
        Body { buf, message }
    }
    fn cstr(&mut self) -> Result<&'a [u8], DecodeError> {
        let nul = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(err(self.message, "missing string terminator"))?;
        let s = &self.buf[..nul];
        self.buf = &self.buf[nul + 1..];
        Ok(s)
    }
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let b = self.cstr()?;
        std::str::from_utf8(b).map_err(|_| err(self.message, "invalid UTF-8"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(err(self.message, "too short"))?;
        self.buf = rest;
        Ok(b)
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(err(self.message, "too short"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn end(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(err(self.message, "trailing bytes"))
        }
    }
}

// ---------------------------------------------------------------- client → server

/// Query ('Q'): the SQL text.
pub fn decode_query(body: &[u8]) -> Result<&str, DecodeError> {
    let mut b = Body::new(body, "Query");
    let s = b.str()?;
    b.end()?;
    Ok(s)
}

/// Query ('Q') as raw bytes: the text is in the client's encoding, which may not be UTF-8.
pub fn decode_query_bytes(body: &[u8]) -> Result<&[u8], DecodeError> {
    let mut b = Body::new(body, "Query");
    let s = b.cstr()?;
    b.end()?;
    Ok(s)
}

/// Parse ('P') as raw bytes: statement name and SQL text (the parameter types are checked).
pub fn decode_parse_raw(body: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let mut b = Body::new(body, "Parse");
    let name = b.cstr()?;
    let query = b.cstr()?;
    let n = b.i16()?;
    if n < 0 {
        return Err(err("Parse", "negative parameter count"));
    }
    b.take(n as usize * 4)?;
    b.end()?;
    Ok((name, query))
}

/// Parse ('P'): statement name, SQL text, parameter type OIDs count.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseMsg<'a> {
    pub name: &'a str,
    pub query: &'a str,
    pub param_types: &'a [u8],
}

pub fn decode_parse(body: &[u8]) -> Result<ParseMsg<'_>, DecodeError> {
    let mut b = Body::new(body, "Parse");
    let name = b.str()?;
    let query = b.str()?;
    let n = b.i16()?;
    if n < 0 {
        return Err(err("Parse", "negative parameter count"));
    }
    let param_types = b.take(n as usize * 4)?;
    b.end()?;
    Ok(ParseMsg {
        name,
        query,
        param_types,
    })
}

/// Bind ('B'): portal and statement names (the rest is parameter data we never look at).
pub fn decode_bind_names(body: &[u8]) -> Result<(&str, &str), DecodeError> {
    let mut b = Body::new(body, "Bind");
    let portal = b.str()?;
    let statement = b.str()?;
    Ok((portal, statement))
}

/// Describe ('D') and Close ('C'): `S` statement or `P` portal, and the name.
pub fn decode_target<'a>(
    body: &'a [u8],
    message: &'static str,
) -> Result<(u8, &'a str), DecodeError> {
    let mut b = Body::new(body, message);
    let kind = b.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(err(message, "target must be 'S' or 'P'"));
    }
    let name = b.str()?;
    b.end()?;
    Ok((kind, name))
}

/// Execute ('E'): the portal name.
pub fn decode_execute(body: &[u8]) -> Result<&str, DecodeError> {
    let mut b = Body::new(body, "Execute");
    let portal = b.str()?;
    b.i32()?;
    b.end()?;
    Ok(portal)
}

// ---------------------------------------------------------------- server → client

/// ReadyForQuery ('Z'): the transaction status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

pub fn decode_ready(body: &[u8]) -> Result<TxStatus, DecodeError> {
    match body {
        [b'I'] => Ok(TxStatus::Idle),
        [b'T'] => Ok(TxStatus::InTransaction),
        [b'E'] => Ok(TxStatus::Failed),
        _ => Err(err("ReadyForQuery", "unknown transaction status")),
    }
}

/// CommandComplete ('C'): the command tag, e.g. `SET`, `COMMIT`, `SELECT 1`.
pub fn decode_command_complete(body: &[u8]) -> Result<&str, DecodeError> {
    let mut b = Body::new(body, "CommandComplete");
    let s = b.str()?;
    b.end()?;
    Ok(s)
}

/// ParameterStatus ('S').
pub fn decode_parameter_status(body: &[u8]) -> Result<(&str, &str), DecodeError> {
    let mut b = Body::new(body, "ParameterStatus");
    let name = b.str()?;
    let value = b.str()?;
    b.end()?;
    Ok((name, value))
}

/// BackendKeyData ('K') in protocol 3.0: process id and secret key.
pub fn decode_backend_key(body: &[u8]) -> Result<(i32, i32), DecodeError> {
    let mut b = Body::new(body, "BackendKeyData");
    let pid = b.i32()?;
    let key = b.i32()?;
    b.end()?;
    Ok((pid, key))
}

/// The fields of ErrorResponse/NoticeResponse we use: severity, SQLSTATE and message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerError<'a> {
    pub severity: &'a str,
    pub code: &'a str,
    pub message: &'a str,
}

pub fn decode_error(body: &[u8]) -> Result<ServerError<'_>, DecodeError> {
    let mut b = Body::new(body, "ErrorResponse");
    let mut e = ServerError::default();
    loop {
        let field = b.u8()?;
        if field == 0 {
            b.end()?;
            return Ok(e);
        }
        let value = b.str()?;
        match field {
            b'V' => e.severity = value,
            b'S' if e.severity.is_empty() => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            _ => {}
        }
    }
}

/// Authentication request ('R') from a server: the code and what follows it.
pub fn decode_auth_request(body: &[u8]) -> Result<(i32, &[u8]), DecodeError> {
    let mut b = Body::new(body, "Authentication");
    let code = b.i32()?;
    Ok((code, b.buf))
}

/// The mechanism names of AuthenticationSASL (code 10).
pub fn decode_sasl_mechanisms(mut data: &[u8]) -> Result<Vec<&str>, DecodeError> {
    let mut out = Vec::new();
    loop {
        let mut b = Body::new(data, "AuthenticationSASL");
        let m = b.str()?;
        data = b.buf;
        if m.is_empty() {
            return Ok(out);
        }
        if out.len() >= 16 {
            return Err(err("AuthenticationSASL", "too many mechanisms"));
        }
        out.push(m);
    }
}

/// SASLInitialResponse ('p' during SASL): mechanism and initial client response.
pub fn decode_sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), DecodeError> {
    let mut b = Body::new(body, "SASLInitialResponse");
    let mechanism = b.str()?;
    let len = b.i32()?;
    if len < 0 {
        return Err(err("SASLInitialResponse", "missing initial response"));
    }
    let data = b.take(len as usize)?;
    b.end()?;
    Ok((mechanism, data))
}

// ---------------------------------------------------------------- encoders

// pgwire's encoders only fail for values out of the protocol's range (e.g. an over-long secret
// key); none of the values passed below can be, so failures are programming errors we surface
// as a truncated buffer rather than a panic.
fn put(msg: &impl Message, buf: &mut BytesMut) {
    if let Err(e) = msg.encode(buf) {
        tracing::error!(error = %e, "encoding a protocol message failed");
    }
}

pub fn put_ready(buf: &mut BytesMut, status: TxStatus) {
    let s = match status {
        TxStatus::Idle => PgTxStatus::Idle,
        TxStatus::InTransaction => PgTxStatus::Transaction,
        TxStatus::Failed => PgTxStatus::Error,
    };
    put(&ReadyForQuery::new(s), buf);
}

pub fn put_parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put(
        &ParameterStatus::new(name.to_owned(), value.to_owned()),
        buf,
    );
}

pub fn put_backend_key(buf: &mut BytesMut, pid: i32, secret: i32) {
    put(&BackendKeyData::new(pid, SecretKey::I32(secret)), buf);
}

pub fn put_auth_ok(buf: &mut BytesMut) {
    put(&Authentication::Ok, buf);
}

pub fn put_auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let m = mechanisms.iter().map(|s| s.to_string()).collect();
    put(&Authentication::SASL(m), buf);
}

pub fn put_auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    put(
        &Authentication::SASLContinue(bytes::Bytes::copy_from_slice(data)),
        buf,
    );
}

pub fn put_auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    put(
        &Authentication::SASLFinal(bytes::Bytes::copy_from_slice(data)),
        buf,
    );
}

pub fn put_negotiate_protocol_version(buf: &mut BytesMut, newest_minor: i32, unknown: &[String]) {
    put(
        &NegotiateProtocolVersion::new(newest_minor, unknown.to_vec()),
        buf,
    );
}

/// ErrorResponse or NoticeResponse fields as PostgreSQL writes them (S, V, C, M, D?, H?).
pub fn put_error_fields(
    buf: &mut BytesMut,
    tag: u8,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    let mut fields = vec![
        (b'S', severity.to_owned()),
        (b'V', severity.to_owned()),
        (b'C', code.to_owned()),
        (b'M', message.to_owned()),
    ];
    if let Some(d) = detail {
        fields.push((b'D', d.to_owned()));
    }
    if let Some(h) = hint {
        fields.push((b'H', h.to_owned()));
    }
    // Field values are C strings: a NUL inside would end the field early and let the text that
    // follows be read as further fields, so NULs are dropped.
    for (_, v) in fields.iter_mut() {
        v.retain(|c| c != '\0');
    }
    if tag == b'E' {
        put(&pgwire::messages::response::ErrorResponse::new(fields), buf);
    } else {
        put(
            &pgwire::messages::response::NoticeResponse::new(fields),
            buf,
        );
    }
}

// Messages pgward sends to servers as a client.

/// A StartupMessage for protocol 3.0 with the given parameters.
pub fn put_startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let mut m = pgwire::messages::startup::Startup::new();
    for (k, v) in params {
        m.parameters.insert((*k).to_owned(), (*v).to_owned());
    }
    put(&m, buf);
}

/// Query ('Q').
pub fn put_query(buf: &mut BytesMut, sql: &str) {
    put(
        &pgwire::messages::simplequery::Query::new(sql.to_owned()),
        buf,
    );
}

/// Parse, Bind and Execute of `sql` as the unnamed statement and portal, without a Sync. If
/// the statement fails, PostgreSQL skips every message after it until the next Sync: pgward
/// sends its hand-over reset this way so that nothing behind it can run when it fails.
pub fn put_unnamed_execute(buf: &mut BytesMut, sql: &str) {
    use pgwire::messages::extendedquery::{Bind, Execute, Parse};
    put(&Parse::new(None, sql.to_owned(), Vec::new()), buf);
    put(
        &Bind::new(None, None, Vec::new(), Vec::new(), Vec::new()),
        buf,
    );
    put(&Execute::new(None, 0), buf);
}

/// Bind and Execute of the prepared statement `name` in the unnamed portal, without a Sync
/// (see [`put_unnamed_execute`]). With `sql`, the statement is first closed (harmless if the
/// server lacks it) and prepared under `name`.
pub fn put_named_execute(buf: &mut BytesMut, name: &str, sql: Option<&str>) {
    use pgwire::messages::extendedquery::{Bind, Close, Execute, Parse};
    if let Some(sql) = sql {
        put(&Close::new(b'S', Some(name.to_owned())), buf);
        put(
            &Parse::new(Some(name.to_owned()), sql.to_owned(), Vec::new()),
            buf,
        );
    }
    put(
        &Bind::new(
            None,
            Some(name.to_owned()),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        ),
        buf,
    );
    put(&Execute::new(None, 0), buf);
}

/// CommandComplete ('C') with its command tag.
pub fn put_command_complete(buf: &mut BytesMut, tag: &str) {
    put(
        &pgwire::messages::response::CommandComplete::new(tag.to_owned()),
        buf,
    );
}

/// PasswordMessage ('p') with raw bytes: cleartext/md5 password, or SASL response data.
pub fn put_password_bytes(buf: &mut BytesMut, data: &[u8], nul_terminated: bool) {
    buf.put_u8(b'p');
    let len = 4 + data.len() + usize::from(nul_terminated);
    buf.put_i32(len as i32);
    buf.put_slice(data);
    if nul_terminated {
        buf.put_u8(0);
    }
}

/// SASLInitialResponse ('p').
pub fn put_sasl_initial(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    buf.put_u8(b'p');
    let len = 4 + mechanism.len() + 1 + 4 + data.len();
    buf.put_i32(len as i32);
    buf.put_slice(mechanism.as_bytes());
    buf.put_u8(0);
    buf.put_i32(data.len() as i32);
    buf.put_slice(data);
}

/// CancelRequest to a server, protocol 3.0.
pub fn put_cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_i32(16);
    buf.put_i32(80_877_102);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

/// Terminate ('X').
pub fn put_terminate(buf: &mut BytesMut) {
    buf.put_u8(b'X');
    buf.put_i32(4);
}

/// CopyFail ('f'): aborts a COPY FROM STDIN whose client went away.
pub fn put_copy_fail(buf: &mut BytesMut, reason: &str) {
    buf.put_u8(b'f');
    buf.put_i32((4 + reason.len() + 1) as i32);
    buf.put_slice(reason.as_bytes());
    buf.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_parse_bind_describe() {
        let mut p = b"s1\0select $1\0".to_vec();
        p.extend_from_slice(&1i16.to_be_bytes());
        p.extend_from_slice(&23i32.to_be_bytes());
        let m = decode_parse(&p).unwrap();
        assert_eq!(
            (m.name, m.query, m.param_types.len()),
            ("s1", "select $1", 4)
        );
        p.push(0);
        assert!(decode_parse(&p).is_err(), "trailing bytes");
        assert!(decode_parse(b"s1\0select\0\xff\xff").is_err());
        assert_eq!(decode_bind_names(b"p\0s1\0rest").unwrap(), ("p", "s1"));
        assert_eq!(decode_target(b"Sabc\0", "Describe").unwrap(), (b'S', "abc"));
        assert!(decode_target(b"Xabc\0", "Describe").is_err());
        assert_eq!(decode_execute(b"\0\0\0\0\0").unwrap(), "");
    }

    #[test]
    fn decodes_server_messages() {
        assert_eq!(decode_ready(b"T").unwrap(), TxStatus::InTransaction);
        assert!(decode_ready(b"X").is_err());
        assert!(decode_ready(b"").is_err());
        let e = decode_error(b"SERROR\0VERROR\0C57014\0Mcanceled\0\0").unwrap();
        assert_eq!(
            (e.severity, e.code, e.message),
            ("ERROR", "57014", "canceled")
        );
        assert!(decode_error(b"SERROR\0").is_err());
        assert_eq!(
            decode_sasl_mechanisms(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0").unwrap(),
            vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
        );
        assert!(decode_sasl_mechanisms(b"SCRAM").is_err());
    }

    #[test]
    fn error_fields_drop_nul() {
        let mut b = BytesMut::new();
        put_error_fields(&mut b, b'E', "ERROR", "42501", "a\0Mforged", None, None);
        let e = decode_error(&b[5..]).unwrap();
        assert_eq!(e.message, "aMforged");
    }

    #[test]
    fn decoders_never_panic_on_garbage() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 20) as usize;
            let v: Vec<u8> = (0..len)
                .map(|i| {
                    if (seed >> i) & 3 == 0 {
                        0
                    } else {
                        (seed >> (i % 8 * 8)) as u8
                    }
                })
                .collect();
            let _ = decode_parse(&v);
            let _ = decode_bind_names(&v);
            let _ = decode_target(&v, "Close");
            let _ = decode_execute(&v);
            let _ = decode_error(&v);
            let _ = decode_sasl_initial(&v);
            let _ = decode_sasl_mechanisms(&v);
            let _ = decode_backend_key(&v);
            let _ = decode_parameter_status(&v);
        }
    }
}
