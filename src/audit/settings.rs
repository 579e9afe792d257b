//! The `[audit]` configuration section: [`RawAudit`] as written (serde, defaults, unknown keys
//! refused) and [`AuditSettings`], the validated form the writer is started with.
//!
//! Every problem in the section is reported at once. Keys that only mean something for another
//! sink (`path` with `sink = "syslog"`) are errors rather than ignored: whoever wrote them
//! expects them to have an effect.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `[audit]` as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// `stdout | file | syslog`.
    pub sink: String,
    /// The file for `sink = "file"`; relative to the configuration file's directory.
    pub path: Option<String>,
    /// `never | always | interval`: when the file is fsynced.
    pub fsync: String,
    /// Seconds between fsyncs with `fsync = "interval"`.
    pub fsync_interval: f64,
    /// `host:port` of the syslog receiver.
    pub syslog_address: Option<String>,
    /// `tcp` (RFC 6587 octet counting) or `udp`.
    pub syslog_protocol: String,
    /// A facility name (`authpriv`, `local0`, …) or number 0–23.
    pub syslog_facility: String,
    /// RFC 5424 APP-NAME.
    pub app_name: String,
    /// Events that may wait for the writer.
    pub queue_capacity: u64,
    /// `block` (sessions wait, nothing is lost) or `drop` (events are dropped and counted).
    pub on_full: String,
    /// Refuse new sessions while the sink is failing.
    pub fail_closed: bool,
    /// Which executed statements are recorded: `all | writes | none`. Denials always are.
    pub statements: String,
    /// Hash-chain the lines (`prev` field) so edits and deletions can be detected.
    pub chain: bool,
    /// Longest statement text written, in bytes (longer text is cut); 0: no limit.
    pub max_text_bytes: u64,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            sink: "stdout".into(),
            path: None,
            fsync: "interval".into(),
            fsync_interval: 1.0,
            syslog_address: None,
            syslog_protocol: "tcp".into(),
            syslog_facility: "authpriv".into(),
            app_name: "pgward".into(),
            queue_capacity: 10_000,
            on_full: "block".into(),
            fail_closed: false,
            statements: "writes".into(),
            chain: false,
            max_text_bytes: 4096,
        }
    }
}

/// Validated `[audit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    pub sink: SinkSettings,
    pub queue_capacity: usize,
    pub on_full: OnFull,
    pub fail_closed: bool,
    pub statements: StatementFilter,
    pub chain: bool,
    pub max_text_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkSettings {
    Stdout,
    File { path: PathBuf, fsync: FsyncPolicy },
    Syslog(SyslogSettings),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    Never,
    /// After every batch of events written.
    Always,
    /// At most this long after a write.
    Interval(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    /// `host:port`, resolved at every connect (a receiver behind DNS can move).
    pub address: String,
    pub protocol: SyslogProtocol,
    /// 0–23.
    pub facility: u8,
    /// 1–48 printable ASCII characters.
    pub app_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogProtocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    Block,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementFilter {
    All,
    Writes,
    None,
}

/// Above this the queue is memory nobody budgeted for (an event is a few hundred bytes).
const MAX_QUEUE_CAPACITY: u64 = 1_000_000;
/// A UDP datagram carries at most 65,507 bytes; text of this size leaves room for the rest.
const MAX_UDP_TEXT_BYTES: u64 = 32 * 1024;
const MAX_TEXT_BYTES: u64 = 1 << 20;

impl AuditSettings {
    pub fn from_raw(raw: &RawAudit, base_dir: &Path) -> Result<AuditSettings, String> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, message: String| {
            if !ok {
                errors.push(message);
            }
        };

        let fsync = match raw.fsync.as_str() {
            "never" => FsyncPolicy::Never,
            "always" => FsyncPolicy::Always,
            "interval" => {
                let s = raw.fsync_interval;
                check(
                    s.is_finite() && s > 0.0 && s <= 3600.0,
                    format!("fsync_interval must be more than 0 and at most 3600 seconds, got {s}"),
                );
                FsyncPolicy::Interval(Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO))
            }
            other => {
                check(
                    false,
                    format!("fsync must be never, always or interval, got {other:?}"),
                );
                FsyncPolicy::Never
            }
        };
        let protocol = match raw.syslog_protocol.as_str() {
            "tcp" => SyslogProtocol::Tcp,
            "udp" => SyslogProtocol::Udp,
            other => {
                check(
                    false,
                    format!("syslog_protocol must be tcp or udp, got {other:?}"),
                );
                SyslogProtocol::Tcp
            }
        };
        let facility = parse_facility(&raw.syslog_facility);
        check(
            facility.is_some(),
            format!(
                "syslog_facility must be a facility name (kern, user, daemon, auth, authpriv, \
                 local0 … local7, …) or a number 0-23, got {:?}",
                raw.syslog_facility
            ),
        );
        check(
            (1..=48).contains(&raw.app_name.len())
                && raw.app_name.bytes().all(|b| b.is_ascii_graphic()),
            format!(
                "app_name must be 1 to 48 printable ASCII characters without spaces, got {:?}",
                raw.app_name
            ),
        );

        let sink = match raw.sink.as_str() {
            "stdout" => Some(SinkSettings::Stdout),
            "file" => match &raw.path {
                Some(p) if !p.is_empty() => Some(SinkSettings::File {
                    path: resolve(base_dir, p),
                    fsync,
                }),
                _ => {
                    check(false, "sink = \"file\" needs path".into());
                    None
                }
            },
            "syslog" => match &raw.syslog_address {
                Some(a) => {
                    check(
                        valid_address(a),
                        format!("syslog_address must be host:port, got {a:?}"),
                    );
                    Some(SinkSettings::Syslog(SyslogSettings {
                        address: a.clone(),
                        protocol,
                        facility: facility.unwrap_or(0),
                        app_name: raw.app_name.clone(),
                    }))
                }
                None => {
                    check(
                        false,
                        "sink = \"syslog\" needs syslog_address (host:port)".into(),
                    );
                    None
                }
            },
            other => {
                check(
                    false,
                    format!("sink must be stdout, file or syslog, got {other:?}"),
                );
                None
            }
        };
        check(
            raw.path.is_none() || raw.sink == "file",
            "path is only used with sink = \"file\"".into(),
        );
        check(
            raw.syslog_address.is_none() || raw.sink == "syslog",
            "syslog_address is only used with sink = \"syslog\"".into(),
        );

        check(
            (1..=MAX_QUEUE_CAPACITY).contains(&raw.queue_capacity),
            format!(
                "queue_capacity must be between 1 and {MAX_QUEUE_CAPACITY}, got {}",
                raw.queue_capacity
            ),
        );
        let on_full = match raw.on_full.as_str() {
            "block" => OnFull::Block,
            "drop" => OnFull::Drop,
            other => {
                check(
                    false,
                    format!("on_full must be block or drop, got {other:?}"),
                );
                OnFull::Block
            }
        };
        let statements = match raw.statements.as_str() {
            "all" => StatementFilter::All,
            "writes" => StatementFilter::Writes,
            "none" => StatementFilter::None,
            other => {
                check(
                    false,
                    format!("statements must be all, writes or none, got {other:?}"),
                );
                StatementFilter::None
            }
        };
        check(
            raw.max_text_bytes <= MAX_TEXT_BYTES,
            format!(
                "max_text_bytes must be at most {MAX_TEXT_BYTES}, got {}",
                raw.max_text_bytes
            ),
        );
        if matches!(&sink, Some(SinkSettings::Syslog(s)) if s.protocol == SyslogProtocol::Udp) {
            // A line must fit one datagram; a line that cannot be sent is lost.
            check(
                (1..=MAX_UDP_TEXT_BYTES).contains(&raw.max_text_bytes),
                format!(
                    "with syslog_protocol = \"udp\", max_text_bytes must be between 1 and \
                     {MAX_UDP_TEXT_BYTES}, got {}",
                    raw.max_text_bytes
                ),
            );
        }

        match sink {
            Some(sink) if errors.is_empty() => Ok(AuditSettings {
                sink,
                queue_capacity: raw.queue_capacity as usize,
                on_full,
                fail_closed: raw.fail_closed,
                statements,
                chain: raw.chain,
                max_text_bytes: raw.max_text_bytes as usize,
            }),
            _ => Err(errors.join("; ")),
        }
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `host:port` or `[v6]:port`; the host is resolved later.
fn valid_address(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !host.is_empty() && !host.contains(':'),
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// RFC 5424 §6.2.1 facility codes, by their usual names.
fn parse_facility(s: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];
    if let Some(i) = NAMES.iter().position(|n| *n == s) {
        return u8::try_from(i).ok();
    }
    s.parse::<u8>().ok().filter(|n| *n < 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawAudit {
        config::Config::builder()
            .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("deserializes")
    }

    fn settings(toml_text: &str) -> Result<AuditSettings, String> {
        AuditSettings::from_raw(&raw(toml_text), Path::new("/etc/pgward"))
    }

    #[test]
    fn defaults_write_json_lines_to_stdout() {
        let s = settings("").expect("valid");
        assert_eq!(
            s,
            AuditSettings {
                sink: SinkSettings::Stdout,
                queue_capacity: 10_000,
                on_full: OnFull::Block,
                fail_closed: false,
                statements: StatementFilter::Writes,
                chain: false,
                max_text_bytes: 4096,
            }
        );
    }

    #[test]
    fn file_paths_are_resolved_against_the_config_directory() {
        let s =
            settings("sink = \"file\"\npath = \"audit.jsonl\"\nfsync = \"always\"").expect("valid");
        assert_eq!(
            s.sink,
            SinkSettings::File {
                path: PathBuf::from("/etc/pgward/audit.jsonl"),
                fsync: FsyncPolicy::Always
            }
        );
        let s = settings("sink = \"file\"\npath = \"/var/log/a.jsonl\"\nfsync_interval = 0.5")
            .expect("valid");
        assert_eq!(
            s.sink,
            SinkSettings::File {
                path: PathBuf::from("/var/log/a.jsonl"),
                fsync: FsyncPolicy::Interval(Duration::from_millis(500))
            }
        );
    }

    #[test]
    fn syslog_settings() {
        let s = settings(
            "sink = \"syslog\"\nsyslog_address = \"[::1]:6514\"\nsyslog_protocol = \"udp\"\n\
             syslog_facility = \"local3\"\napp_name = \"pgward-prod\"\non_full = \"drop\"\n\
             fail_closed = true\nstatements = \"all\"\nchain = true",
        )
        .expect("valid");
        assert_eq!(
            s.sink,
            SinkSettings::Syslog(SyslogSettings {
                address: "[::1]:6514".into(),
                protocol: SyslogProtocol::Udp,
                facility: 19,
                app_name: "pgward-prod".into(),
            })
        );
        assert_eq!(
            (s.on_full, s.fail_closed, s.statements, s.chain),
            (OnFull::Drop, true, StatementFilter::All, true)
        );
        let s =
            settings("sink = \"syslog\"\nsyslog_address = \"logs:514\"\nsyslog_facility = \"4\"")
                .expect("valid");
        assert!(matches!(
            s.sink,
            SinkSettings::Syslog(SyslogSettings { facility: 4, .. })
        ));
    }

    #[test]
    fn every_problem_is_reported() {
        let e = settings(
            "sink = \"file\"\nfsync = \"sometimes\"\nsyslog_address = \"x:1\"\n\
             queue_capacity = 0\non_full = \"wait\"\nstatements = \"reads\"\n\
             syslog_facility = \"local8\"\napp_name = \"has space\"",
        )
        .expect_err("invalid");
        for part in [
            "needs path",
            "fsync must be",
            "syslog_address is only used",
            "queue_capacity",
            "on_full",
            "statements must be",
            "syslog_facility",
            "app_name",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
    }

    #[test]
    fn misplaced_and_malformed_values_are_refused() {
        for (text, part) in [
            ("path = \"a.jsonl\"", "path is only used"),
            ("sink = \"syslog\"", "needs syslog_address"),
            (
                "sink = \"syslog\"\nsyslog_address = \"nohost\"",
                "host:port",
            ),
            ("sink = \"syslog\"\nsyslog_address = \"h:0\"", "host:port"),
            (
                "sink = \"syslog\"\nsyslog_address = \"::1:514\"",
                "host:port",
            ),
            ("sink = \"kafka\"", "sink must be"),
            ("fsync_interval = 0", "fsync_interval"),
            ("fsync_interval = -1.0", "fsync_interval"),
            ("max_text_bytes = 2000000", "max_text_bytes"),
            (
                "sink = \"syslog\"\nsyslog_address = \"h:514\"\nsyslog_protocol = \"udp\"\nmax_text_bytes = 0",
                "max_text_bytes",
            ),
            ("syslog_protocol = \"tls\"", "syslog_protocol"),
        ] {
            let e = settings(text).expect_err(text);
            assert!(e.contains(part), "{text}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let r: Result<RawAudit, _> = config::Config::builder()
            .add_source(config::File::from_str(
                "snk = \"file\"",
                config::FileFormat::Toml,
            ))
            .build()
            .and_then(|c| c.try_deserialize());
        assert!(r.is_err());
    }
}
