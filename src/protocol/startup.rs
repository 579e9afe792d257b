//! The untyped first packet a client sends (no type byte): StartupMessage, SSLRequest,
//! GSSENCRequest, CancelRequest. Bounded at 10,000 bytes as PostgreSQL bounds it.

use thiserror::Error;

/// PostgreSQL's own limit for the startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET: usize = 10_000;

const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// Protocol 3.0: the only version pgward speaks (as PostgreSQL 15 does).
pub const PROTOCOL_3_0: u32 = 3 << 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedVersion { major: u16, minor: u16 },
}

/// A client's cancel key: what we issued in BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(StartupMessage),
}

#[derive(Debug, PartialEq, Eq)]
pub struct StartupMessage {
    /// Requested minor version of protocol 3 (greater than 0 is answered with
    /// NegotiateProtocolVersion).
    pub minor_version: u16,
    /// Parameters in the order sent, `_pq_.` protocol options excluded.
    pub params: Vec<(String, String)>,
    /// `_pq_.*` options we do not understand (all of them): reported in NegotiateProtocolVersion.
    pub unknown_protocol_options: Vec<String>,
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The declared total length of a startup packet from its first four bytes, checked.
pub fn declared_len(header: [u8; 4]) -> Result<usize, StartupError> {
    let len = u32::from_be_bytes(header) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(StartupError::BadLength);
    }
    Ok(len)
}

/// Parses the packet body (everything after the 4-byte length).
pub fn parse(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let code = body
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(StartupError::BadLength)?;
    let rest = &body[4..];
    match code {
        SSL_REQUEST_CODE if rest.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if rest.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            if rest.len() != 8 {
                return Err(StartupError::Malformed(
                    "cancel request must carry exactly 8 bytes",
                ));
            }
            Ok(StartupPacket::Cancel(CancelKey {
                pid: i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
                secret: i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
            }))
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => Err(StartupError::BadLength),
        version => parse_startup_message(version, rest).map(StartupPacket::Startup),
    }
}

fn parse_startup_message(version: u32, mut rest: &[u8]) -> Result<StartupMessage, StartupError> {
    let major = (version >> 16) as u16;
    let minor = (version & 0xffff) as u16;
    if major != 3 {
        return Err(StartupError::UnsupportedVersion { major, minor });
    }
    let mut params = Vec::new();
    let mut unknown_protocol_options = Vec::new();
    loop {
        let (name, after) = cstr(rest)?;
        if name.is_empty() {
            if !after.is_empty() {
                return Err(StartupError::Malformed("bytes after the terminating zero"));
            }
            break;
        }
        let (value, after) = cstr(after)?;
        rest = after;
        if name.starts_with("_pq_.") {
            unknown_protocol_options.push(name.to_owned());
        } else if params.iter().any(|(k, _)| k == name) {
            return Err(StartupError::Malformed("a parameter is given twice"));
        } else {
            params.push((name.to_owned(), value.to_owned()));
        }
    }
    Ok(StartupMessage {
        minor_version: minor,
        params,
        unknown_protocol_options,
    })
}

fn cstr(buf: &[u8]) -> Result<(&str, &[u8]), StartupError> {
    let nul = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartupError::Malformed("missing terminator"))?;
    let s = std::str::from_utf8(&buf[..nul])
        .map_err(|_| StartupError::Malformed("invalid UTF-8 in a parameter"))?;
    Ok((s, &buf[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(version: u32, kv: &[(&str, &str)]) -> Vec<u8> {
        let mut v = version.to_be_bytes().to_vec();
        for (k, val) in kv {
            v.extend_from_slice(k.as_bytes());
            v.push(0);
            v.extend_from_slice(val.as_bytes());
            v.push(0);
        }
        v.push(0);
        v
    }

    #[test]
    fn parses_startup_and_requests() {
        let p = parse(&startup(
            PROTOCOL_3_0,
            &[("user", "app"), ("database", "db")],
        ))
        .unwrap();
        let StartupPacket::Startup(m) = p else {
            panic!("not a startup message")
        };
        assert_eq!(m.param("user"), Some("app"));
        assert_eq!(m.minor_version, 0);
        assert_eq!(
            parse(&SSL_REQUEST_CODE.to_be_bytes()).unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            parse(&GSSENC_REQUEST_CODE.to_be_bytes()).unwrap(),
            StartupPacket::GssEncRequest
        );
        let mut c = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        c.extend_from_slice(&7i32.to_be_bytes());
        c.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(
            parse(&c).unwrap(),
            StartupPacket::Cancel(CancelKey { pid: 7, secret: -9 })
        );
    }

    #[test]
    fn newer_minor_and_protocol_options_are_noted() {
        let p = parse(&startup(
            PROTOCOL_3_0 | 2,
            &[("user", "u"), ("_pq_.x", "1")],
        ))
        .unwrap();
        let StartupPacket::Startup(m) = p else {
            panic!("not a startup message")
        };
        assert_eq!(m.minor_version, 2);
        assert_eq!(m.unknown_protocol_options, vec!["_pq_.x".to_string()]);
        assert!(m.param("_pq_.x").is_none());
    }

    #[test]
    fn rejects_bad_packets() {
        assert!(matches!(
            parse(&startup(2 << 16, &[("user", "u")])),
            Err(StartupError::UnsupportedVersion { major: 2, .. })
        ));
        assert!(parse(&[0, 3]).is_err());
        let mut unterminated = startup(PROTOCOL_3_0, &[("user", "u")]);
        unterminated.pop();
        assert!(parse(&unterminated).is_err());
        assert!(parse(&startup(PROTOCOL_3_0, &[("user", "a"), ("user", "b")])).is_err());
        assert_eq!(declared_len([0, 0, 0, 4]), Err(StartupError::BadLength));
        assert_eq!(declared_len([0, 1, 0, 0]), Err(StartupError::BadLength));
        assert_eq!(declared_len([0, 0, 0, 8]), Ok(8));
    }
}
