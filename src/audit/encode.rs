//! Encoding an [`Event`] as one JSON line: field order, timestamps, hex, and the ASCII-only
//! output the rest of the module relies on.
//!
//! The field order is fixed (`ts, event, seq, sid`, then client and identity, `database`, the
//! event's own fields, and `prev` last) so lines diff and grep predictably. Absent optional
//! fields are left out, except `sid`, which is `null` for process-level events so every line
//! has it.
//!
//! Output is pure ASCII: anything else is written as a `\uXXXX` escape. That keeps a line
//! valid as syslog MSG-ANY (RFC 5424 wants a BOM before UTF-8), keeps the bytes the hash chain
//! covers independent of any re-encoding on the way to a SIEM, and stops a client-chosen user
//! or application name from carrying terminal or bidirectional-text control characters into
//! whatever displays the log.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::event::{Event, EventFields, NormalizedSql};
use crate::policy::normalize::Fingerprint;

/// What the writer adds to an event as it writes it.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    pub ts: SystemTime,
    pub seq: u64,
    /// SHA-256 of the previous line, when the hash chain is on.
    pub prev: Option<&'a [u8; 32]>,
}

/// Client-chosen application names are cut to this (PostgreSQL keeps 63 bytes).
const MAX_APPLICATION_NAME: usize = 64;

/// Appends `event` to `out` as one JSON object, without the newline. `max_text_bytes` bounds
/// the normalized statement text (cut at a character boundary, with `"text_truncated":true`);
/// 0 means no bound.
pub fn encode_event(
    out: &mut Vec<u8>,
    event: &Event,
    stamp: &Stamp<'_>,
    max_text_bytes: usize,
) -> Result<(), serde_json::Error> {
    let record = Record {
        event,
        stamp,
        max_text_bytes,
    };
    let mut ser = serde_json::Serializer::with_formatter(out, AsciiFormatter);
    record.serialize(&mut ser)
}

struct Record<'a> {
    event: &'a Event,
    stamp: &'a Stamp<'a>,
    max_text_bytes: usize,
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ts", Rfc3339::new(self.stamp.ts).as_str())?;
        m.serialize_entry("event", e.kind().name())?;
        m.serialize_entry("seq", &self.stamp.seq)?;
        m.serialize_entry("sid", &e.sid)?;
        if let Some(client) = &e.client {
            m.serialize_entry("client", Addr::new(client).as_str())?;
        }
        if let Some(id) = &e.identity {
            m.serialize_entry("user", &id.user)?;
            if let Some(subject) = &id.cert_subject {
                m.serialize_entry("cert_subject", subject)?;
            }
            if !id.cert_san.is_empty() {
                m.serialize_entry("cert_san", &id.cert_san)?;
            }
            if let Some(sha) = &id.cert_sha256 {
                m.serialize_entry("cert_sha256", Hex::new(sha).as_str())?;
            }
        }
        if let Some(db) = &e.database {
            m.serialize_entry("database", &**db)?;
        }
        self.fields(&mut m)?;
        if let Some(prev) = self.stamp.prev {
            m.serialize_entry("prev", Hex::new(prev).as_str())?;
        }
        m.end()
    }
}

impl Record<'_> {
    fn fields<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        match &self.event.fields {
            EventFields::ConnectionAccepted => {}
            EventFields::ConnectionRejected { reason } => {
                m.serialize_entry("reason", reason.as_str())?;
            }
            EventFields::TlsHandshakeFailed { reason } => {
                m.serialize_entry("reason", reason.as_str())?;
            }
            EventFields::AuthSucceeded {
                method,
                backend_role,
            } => {
                m.serialize_entry("method", method.as_str())?;
                if let Some(role) = backend_role {
                    m.serialize_entry("backend_role", &**role)?;
                }
            }
            EventFields::AuthFailed { method, reason } => {
                if let Some(method) = method {
                    m.serialize_entry("method", method.as_str())?;
                }
                m.serialize_entry("reason", reason.as_str())?;
            }
            EventFields::SessionStarted(s) => {
                if let Some(role) = &s.backend_role {
                    m.serialize_entry("backend_role", &**role)?;
                }
                if let Some(mode) = s.pool_mode {
                    let mode = match mode {
                        crate::config::PoolMode::Session => "session",
                        crate::config::PoolMode::Transaction => "transaction",
                    };
                    m.serialize_entry("pool_mode", mode)?;
                }
                if let Some(policy) = &s.policy {
                    m.serialize_entry("policy", &**policy)?;
                }
                m.serialize_entry("tls", &s.tls)?;
                if let Some(name) = &s.application_name {
                    m.serialize_entry("application_name", cut(name, MAX_APPLICATION_NAME).0)?;
                }
            }
            EventFields::SessionEnded(s) => {
                m.serialize_entry("duration_us", &micros(s.duration))?;
                m.serialize_entry("transactions", &s.transactions)?;
                m.serialize_entry("statements", &s.statements)?;
                m.serialize_entry("bytes_in", &s.bytes_in)?;
                m.serialize_entry("bytes_out", &s.bytes_out)?;
                m.serialize_entry("reason", s.reason.as_str())?;
            }
            EventFields::StatementExecuted(s) => {
                m.serialize_entry("fingerprint", FingerprintHex::new(s.fingerprint).as_str())?;
                self.text(m, s.text.as_ref())?;
                m.serialize_entry("kind", s.kind.as_str())?;
                m.serialize_entry("protocol", s.protocol.as_str())?;
                m.serialize_entry("duration_us", &micros(s.duration))?;
                if let Some(tag) = &s.command {
                    m.serialize_entry("command", tag.command())?;
                    if let Some(rows) = tag.rows() {
                        m.serialize_entry("rows", &rows)?;
                    }
                }
                if let Some(state) = &s.sqlstate {
                    m.serialize_entry("sqlstate", state.as_str())?;
                }
            }
            EventFields::StatementDenied(s) => {
                m.serialize_entry("policy", &*s.policy)?;
                m.serialize_entry("mode", s.mode.as_str())?;
                m.serialize_entry("reason", s.reason.as_str())?;
                if let Some(detail) = s.reason.detail() {
                    m.serialize_entry("detail", detail)?;
                }
                m.serialize_entry("fingerprint", FingerprintHex::new(s.fingerprint).as_str())?;
                self.text(m, s.text.as_ref())?;
                m.serialize_entry("protocol", s.protocol.as_str())?;
            }
            EventFields::StatementLearned {
                policy,
                fingerprint,
                text,
            } => {
                m.serialize_entry("policy", &**policy)?;
                m.serialize_entry("fingerprint", FingerprintHex::new(*fingerprint).as_str())?;
                self.text(m, text.as_ref())?;
            }
            EventFields::PoolCheckoutTimeout {
                backend_role,
                waited,
                pool_size,
            } => {
                m.serialize_entry("backend_role", &**backend_role)?;
                m.serialize_entry("waited_us", &micros(*waited))?;
                m.serialize_entry("pool_size", pool_size)?;
            }
            EventFields::ConfigReloaded { succeeded, errors } => {
                m.serialize_entry("succeeded", succeeded)?;
                m.serialize_entry("errors", errors)?;
            }
            EventFields::AdminCommand {
                interface,
                command,
                allowed,
            } => {
                m.serialize_entry("interface", interface.as_str())?;
                m.serialize_entry("command", command)?;
                m.serialize_entry("allowed", allowed)?;
            }
        }
        Ok(())
    }

    fn text<M: SerializeMap>(
        &self,
        m: &mut M,
        text: Option<&NormalizedSql>,
    ) -> Result<(), M::Error> {
        if let Some(text) = text {
            let (shown, truncated) = cut(text.as_str(), self.max_text_bytes);
            m.serialize_entry("text", shown)?;
            if truncated {
                m.serialize_entry("text_truncated", &true)?;
            }
        }
        Ok(())
    }
}

/// `s` cut to at most `max` bytes at a character boundary (0: not cut), and whether it was.
fn cut(s: &str, max: usize) -> (&str, bool) {
    if max == 0 || s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// serde_json's compact formatter, with every non-ASCII character escaped.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        // Nearly always: names and normalized statements are ASCII (checked a word at a time).
        if fragment.is_ascii() {
            return writer.write_all(bytes);
        }
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() {
                continue;
            }
            writer.write_all(&bytes[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + ch.len_utf8();
        }
        writer.write_all(&bytes[start..])
    }
}

/// A UTC time as RFC 3339 with microseconds: `2025-11-24T08:14:03.123456Z`.
pub struct Rfc3339([u8; 27]);

impl Rfc3339 {
    /// Times before 1970 are written as 1970; after 9999, as 9999 (neither happens on a
    /// working clock, and the format has no room for them).
    pub fn new(t: SystemTime) -> Rfc3339 {
        const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let (secs, micros) = if since.as_secs() > MAX_SECS {
            (MAX_SECS, 999_999)
        } else {
            (since.as_secs(), since.subsec_micros())
        };
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, mo, d) = civil_from_days(days);
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        put(&mut out[0..4], y);
        put(&mut out[5..7], mo);
        put(&mut out[8..10], d);
        put(&mut out[11..13], rem / 3600);
        put(&mut out[14..16], rem / 60 % 60);
        put(&mut out[17..19], rem % 60);
        put(&mut out[20..26], u64::from(micros));
        Rfc3339(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits were written into an ASCII template.
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000000Z")
    }
}

/// Writes `v` as zero-padded decimal filling `dst`.
fn put(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Lower-case hex of a SHA-256.
pub struct Hex([u8; 64]);

impl Hex {
    fn new(bytes: &[u8; 32]) -> Hex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in bytes.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        Hex(out)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// Serializes a `Display` value as a JSON string without an intermediate `String`.
/// A fingerprint as its 16 lower-case hex digits (as its `Display`), without the formatter.
struct FingerprintHex([u8; 16]);

impl FingerprintHex {
    fn new(f: Fingerprint) -> FingerprintHex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = DIGITS[((f.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        FingerprintHex(out)
    }

    fn as_str(&self) -> &str {
        // Only ASCII hex digits were written.
        std::str::from_utf8(&self.0).unwrap_or("0000000000000000")
    }
}

/// A socket address as `Display` writes it, formatted on the stack (the longest,
/// `[v6%scope]:port`, is 58 bytes): one string for the encoder rather than one per piece.
enum Addr {
    Inline {
        buf: [u8; 64],
        len: usize,
    },
    /// Never expected: `Display` wrote more than fits.
    Heap(String),
}

impl Addr {
    fn new(a: &SocketAddr) -> Addr {
        let mut buf = [0u8; 64];
        let mut rest = &mut buf[..];
        if write!(rest, "{a}").is_err() {
            return Addr::Heap(a.to_string());
        }
        let len = 64 - rest.len();
        Addr::Inline { buf, len }
    }

    fn as_str(&self) -> &str {
        match self {
            // `Display` of an address writes ASCII only.
            Addr::Inline { buf, len } => std::str::from_utf8(&buf[..*len]).unwrap_or(""),
            Addr::Heap(s) => s,
        }
    }
}

/// Hex of a SHA-256, as written in `prev`.
pub fn hex_sha256(bytes: &[u8; 32]) -> String {
    Hex::new(bytes).as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::audit::event::*;
    use crate::policy::Mode;
    use crate::policy::normalize::Fingerprint;

    fn line(event: &Event, prev: Option<&[u8; 32]>) -> String {
        let mut out = Vec::new();
        let stamp = Stamp {
            ts: UNIX_EPOCH + Duration::new(1_764_000_000, 123_456_789),
            seq: 7,
            prev,
        };
        encode_event(&mut out, event, &stamp, 16).expect("encodes");
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |s, n| {
            Rfc3339::new(UNIX_EPOCH + Duration::new(s, n))
                .as_str()
                .to_owned()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5_000), "2000-02-29T00:00:00.000005Z");
        assert_eq!(
            at(1_764_000_000, 123_456_789),
            "2025-11-24T16:00:00.123456Z"
        );
        assert_eq!(
            at(4_107_542_399, 999_999_999),
            "2100-02-28T23:59:59.999999Z"
        );
        assert_eq!(at(u64::MAX / 2, 0), "9999-12-31T23:59:59.999999Z");
        assert_eq!(
            Rfc3339::new(UNIX_EPOCH - Duration::from_secs(5)).as_str(),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn civil_dates_match_a_day_by_day_count() {
        // Walk 1970..2400 one day at a time and compare with the converter.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..157_000u64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > len[(m - 1) as usize] {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn common_fields_come_first_in_a_fixed_order() {
        let id = Identity {
            user: "app".into(),
            cert_subject: Some("CN=app".into()),
            cert_san: vec!["spiffe://example.org/app".into()],
            cert_sha256: Some([0xab; 32]),
        };
        let client: SocketAddr = "10.0.0.7:51000".parse().expect("addr");
        let e = Event::new(EventFields::AuthSucceeded {
            method: AuthMethod::Cert,
            backend_role: Some("app_rw".into()),
        })
        .sid(42)
        .client(client)
        .identity(Arc::new(id))
        .database("appdb");
        assert_eq!(
            line(&e, Some(&[0x01; 32])),
            format!(
                concat!(
                    r#"{{"ts":"2025-11-24T16:00:00.123456Z","event":"auth.succeeded","seq":7,"#,
                    r#""sid":42,"client":"10.0.0.7:51000","user":"app","cert_subject":"CN=app","#,
                    r#""cert_san":["spiffe://example.org/app"],"cert_sha256":"{}","#,
                    r#""database":"appdb","method":"cert","backend_role":"app_rw","prev":"{}"}}"#
                ),
                "ab".repeat(32),
                "01".repeat(32)
            )
        );
    }

    #[test]
    fn process_events_have_a_null_sid() {
        let e = Event::new(EventFields::ConfigReloaded {
            succeeded: false,
            errors: 2,
        });
        assert_eq!(
            line(&e, None),
            r#"{"ts":"2025-11-24T16:00:00.123456Z","event":"config.reloaded","seq":7,"sid":null,"succeeded":false,"errors":2}"#
        );
    }

    #[test]
    fn output_is_ascii_and_one_line() {
        let e = Event::new(EventFields::ConnectionAccepted)
            .identity(Arc::new(Identity::user("é\u{202e}\n\"😀")));
        let l = line(&e, None);
        assert!(l.is_ascii() && !l.contains('\n'), "{l}");
        assert!(
            l.contains(r#""user":"\u00e9\u202e\n\"\ud83d\ude00""#),
            "{l}"
        );
        let back: serde_json::Value = serde_json::from_str(&l).expect("json");
        assert_eq!(back["user"], "é\u{202e}\n\"😀");
    }

    #[test]
    fn statement_text_is_cut_at_a_character_boundary() {
        let text = NormalizedSql::from_sql("SELECT \"ééééééééé\" FROM t").expect("normalizes");
        let e = Event::new(EventFields::StatementDenied(StatementDenied {
            policy: "app".into(),
            mode: Mode::Enforce,
            reason: DenialReason::NotAllowlisted,
            fingerprint: Fingerprint(0x0123_4567_89ab_cdef),
            text: Some(text),
            protocol: Protocol::Simple,
        }));
        let v: serde_json::Value = serde_json::from_str(&line(&e, None)).expect("json");
        assert_eq!(v["text"], "SELECT \"éééé");
        assert_eq!(v["text_truncated"], true);
        assert_eq!(v["fingerprint"], "0123456789abcdef");
        assert_eq!(v["mode"], "enforce");
        assert_eq!(v["reason"], "not_allowlisted");
    }

    #[test]
    fn fingerprints_and_addresses_read_as_their_display() {
        for f in [0, 1, 0x0123_4567_89ab_cdef, u64::MAX, 0xf000_0000_0000_000f] {
            assert_eq!(
                FingerprintHex::new(Fingerprint(f)).as_str(),
                Fingerprint(f).to_string()
            );
        }
        for a in [
            "10.0.0.7:51000",
            "255.255.255.255:65535",
            "[::1]:5432",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535",
            "[::ffff:255.255.255.255]:1",
        ] {
            let addr: SocketAddr = a.parse().expect("address");
            assert_eq!(Addr::new(&addr).as_str(), addr.to_string(), "{a}");
            assert!(matches!(Addr::new(&addr), Addr::Inline { .. }), "{a}");
        }
    }

    #[test]
    fn cut_handles_edges() {
        assert_eq!(cut("abc", 0), ("abc", false));
        assert_eq!(cut("abc", 3), ("abc", false));
        assert_eq!(cut("abc", 2), ("ab", true));
        assert_eq!(cut("é", 1), ("", true));
    }
}
