//! The local syslog socket: the line zrepl (Go's `log/syslog`) writes to it, and the connection.

use std::io::{self, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use zrepl_config::LogLevel;

/// The tag of every message.
pub const TAG: &str = "zrepl";

/// Where the local syslog daemon listens, tried in this order.
pub const SOCKET_PATHS: [&str; 3] = ["/dev/log", "/var/run/syslog", "/var/run/log"];

/// zrepl's level -> syslog severity (RFC 5424).
pub fn severity(l: LogLevel) -> u8 {
    match l {
        LogLevel::Debug => 7, // debug
        LogLevel::Info => 6,  // informational
        LogLevel::Warn => 4,  // warning
        LogLevel::Error => 3, // err
    }
}

/// The priority value: facility * 8 + severity.
pub fn priority(facility: u8, l: LogLevel) -> u8 {
    facility * 8 + severity(l)
}

/// `<PRI>Mmm dd hh:mm:ss zrepl[PID]: message\n` (BSD syslog, local form, as Go's `log/syslog`
/// writes to a local socket).
pub fn line(pri: u8, time: &DateTime<FixedOffset>, pid: u32, msg: &str) -> Vec<u8> {
    let nl = if msg.ends_with('\n') { "" } else { "\n" };
    format!(
        "<{pri}>{} {TAG}[{pid}]: {msg}{nl}",
        time.format("%b %e %H:%M:%S")
    )
    .into_bytes()
}

/// The first existing socket path, or the override.
pub fn socket_path(over: Option<&Path>) -> io::Result<PathBuf> {
    if let Some(p) = over {
        return Ok(p.to_path_buf());
    }
    SOCKET_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no local syslog socket (tried {})", SOCKET_PATHS.join(", ")),
            )
        })
}

/// A connection to the local syslog daemon: datagram first, stream as the fallback.
pub enum Conn {
    Datagram(UnixDatagram),
    Stream(UnixStream),
}

impl Conn {
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Conn> {
        let dgram = UnixDatagram::unbound().and_then(|s| {
            s.connect(path)?;
            s.set_write_timeout(Some(timeout))?;
            Ok(s)
        });
        match dgram {
            Ok(s) => Ok(Conn::Datagram(s)),
            Err(e) => match UnixStream::connect(path) {
                Ok(s) => {
                    s.set_write_timeout(Some(timeout))?;
                    Ok(Conn::Stream(s))
                }
                Err(_) => Err(io::Error::new(
                    e.kind(),
                    format!("cannot connect to syslog at {}: {e}", path.display()),
                )),
            },
        }
    }

    pub fn send(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Conn::Datagram(s) => s.send(line).map(|_| ()),
            Conn::Stream(s) => s.write_all(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn priorities() {
        let cases = [
            (16, LogLevel::Debug, 135),
            (16, LogLevel::Info, 134),
            (16, LogLevel::Warn, 132),
            (16, LogLevel::Error, 131),
            (3, LogLevel::Error, 27),
            (0, LogLevel::Debug, 7),
        ];
        for (fac, lvl, want) in cases {
            assert_eq!(priority(fac, lvl), want, "{fac} {lvl:?}");
        }
    }

    #[test]
    fn lines() {
        let t = |d| {
            FixedOffset::east_opt(0)
                .unwrap()
                .with_ymd_and_hms(2024, 3, d, 4, 5, 6)
                .unwrap()
        };
        let cases = [
            (t(5), "hello", "<134>Mar  5 04:05:06 zrepl[42]: hello\n"),
            (t(15), "x\n", "<134>Mar 15 04:05:06 zrepl[42]: x\n"),
        ];
        for (time, msg, want) in cases {
            assert_eq!(String::from_utf8(line(134, &time, 42, msg)).unwrap(), want);
        }
    }
}
