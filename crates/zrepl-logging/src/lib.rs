//! zrepl's logging: the `global.logging` outlets (`stdout`, `syslog`, `tcp` with optional TLS)
//! and formats (`human`, `logfmt`, `json`) as a `tracing` layer.
//!
//! Every event carries the fields of its enclosing spans (`job`, `subsystem`, `fs`, `step`, ...)
//! plus `span` (the names of the enclosing spans joined by `$`, `NOSPAN` outside any span). Each
//! outlet has its own level and a writer thread behind a bounded queue: a slow outlet drops
//! entries instead of blocking the daemon. The first outlet is the error outlet: failures of
//! the others are logged there as `outlet error` entries (fields `outlet_type`, `err`).
//!
//! Environment (read by [`init`]):
//! * `ZREPL_LOG`: an `EnvFilter` directive (e.g. `zrepl_zfs=debug,info`) that replaces the
//!   default pre-filter (the lowest outlet level); each outlet still drops entries below its
//!   own level.
//! * `ZREPL_SYSLOG_SOCKET`: the local syslog socket to use instead of the first existing of
//!   `/dev/log`, `/var/run/syslog`, `/var/run/log`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};
use zrepl_config::{LogFormat, LogLevel, LoggingOutlet};

pub mod format;
mod layer;
mod outlet;
pub mod record;
pub mod syslog;
mod tls;

pub use format::{FormatError, Formatter, Metadata};
pub use layer::{EventFilter, ZreplLayer};
pub use record::{Record, Value};

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("tcp log outlet TLS: {path}: {msg}")]
    Tls { path: String, msg: String },
    #[error("tcp log outlet address {0}")]
    Address(String),
    #[error("invalid ZREPL_LOG filter: {0}")]
    EnvFilter(String),
    #[error("cannot install the logger: {0}")]
    Install(String),
}

/// The local time of an entry.
pub(crate) fn now() -> DateTime<FixedOffset> {
    chrono::Local::now().fixed_offset()
}

/// The host of `host:port` (brackets of an IPv6 literal removed).
pub(crate) fn split_host(address: &str) -> Result<&str, LoggingError> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| LoggingError::Address(format!("{address:?}: missing port")))?;
    if port.is_empty() {
        return Err(LoggingError::Address(format!("{address:?}: missing port")));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(LoggingError::Address(format!("{address:?}: missing host")));
    }
    Ok(host)
}

fn duration(d: zrepl_config::units::GoDuration) -> Duration {
    Duration::from_nanos(d.as_nanos().clamp(1, u64::MAX as i128) as u64)
}

/// Builds the layer for a list of outlets. The defaults come from the process; tests replace
/// stdout, the terminal check and the syslog socket.
pub struct Builder {
    stdout: Option<Box<dyn Write + Send>>,
    stdout_is_tty: Option<bool>,
    syslog_socket: Option<PathBuf>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            stdout: None,
            stdout_is_tty: None,
            syslog_socket: None,
        }
    }

    /// Where the `stdout` outlet writes instead of the process's stdout.
    pub fn stdout(mut self, w: Box<dyn Write + Send>, is_tty: bool) -> Self {
        self.stdout = Some(w);
        self.stdout_is_tty = Some(is_tty);
        self
    }

    /// The local syslog socket (instead of `/dev/log` and friends).
    pub fn syslog_socket(mut self, p: Option<PathBuf>) -> Self {
        self.syslog_socket = p;
        self
    }

    /// Validates the outlets (TLS files, addresses) and starts their writer threads.
    pub fn build(
        mut self,
        outlets: &[LoggingOutlet],
    ) -> Result<(ZreplLayer, LoggingGuard), LoggingError> {
        let default = [LoggingOutlet::Stdout {
            level: LogLevel::Warn,
            format: LogFormat::Human,
            time: false,
            color: false,
        }];
        // An explicit empty list: stdout, warn, human, without metadata.
        let (outlets, bare) = if outlets.is_empty() {
            (&default[..], true)
        } else {
            (outlets, false)
        };
        // Validate everything before starting any thread.
        let mut specs = Vec::new();
        for o in outlets {
            specs.push(match o {
                LoggingOutlet::Stdout {
                    level,
                    format,
                    time,
                    color,
                } => {
                    let tty = self
                        .stdout_is_tty
                        .unwrap_or_else(|| std::io::stdout().is_terminal());
                    let meta = if bare {
                        Metadata::NONE
                    } else {
                        Metadata {
                            // zrepl drops the time only when stdout is not a terminal.
                            time: tty || *time,
                            level: true,
                            color: tty && *color,
                        }
                    };
                    let w = self
                        .stdout
                        .take()
                        .unwrap_or_else(|| Box::new(std::io::stdout()));
                    outlet::Spec {
                        outlet_type: "stdout",
                        min: *level,
                        formatter: Formatter::new(*format, meta),
                        kind: outlet::Kind::Writer(w),
                    }
                }
                LoggingOutlet::Syslog {
                    level,
                    format,
                    facility,
                    retry_interval,
                } => outlet::Spec {
                    outlet_type: "syslog",
                    min: *level,
                    formatter: Formatter::new(*format, Metadata::NONE),
                    kind: outlet::Kind::Syslog {
                        facility: facility.code(),
                        retry: duration(*retry_interval),
                        socket: self.syslog_socket.clone(),
                    },
                },
                LoggingOutlet::Tcp {
                    level,
                    format,
                    address,
                    net,
                    retry_interval,
                    tls,
                } => {
                    split_host(address)?;
                    let tls = match tls {
                        None => None,
                        Some(t) => Some((tls::client_config(t)?, tls::server_name(address)?)),
                    };
                    outlet::Spec {
                        outlet_type: "tcp",
                        min: *level,
                        formatter: Formatter::new(*format, Metadata::PLAIN),
                        kind: outlet::Kind::Tcp {
                            address: address.clone(),
                            net: net.clone(),
                            retry: duration(*retry_interval),
                            tls,
                        },
                    }
                }
            });
        }
        let mut started: Vec<outlet::Outlet> = Vec::new();
        for spec in specs {
            let o = match started.first() {
                None => outlet::start(spec, outlet::reporter_to_stderr),
                Some(first) => outlet::start(spec, |t| first.as_error_target(t)),
            };
            started.push(o);
        }
        let guard = LoggingGuard {
            queues: started.iter().map(|o| o.tx.clone()).collect(),
        };
        Ok((ZreplLayer { outlets: started }, guard))
    }
}

/// Waits for queued entries on [`LoggingGuard::flush`] and on drop (bounded).
pub struct LoggingGuard {
    queues: Vec<SyncSender<outlet::Msg>>,
}

impl LoggingGuard {
    /// Waits until every outlet has written what was queued before, at most `timeout` in all.
    /// Returns whether all outlets confirmed.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut acks = Vec::new();
        let mut all = true;
        for q in &self.queues {
            let (tx, rx) = mpsc::channel();
            let mut msg = outlet::Msg::Flush(tx);
            loop {
                match q.try_send(msg) {
                    Ok(()) => {
                        acks.push(rx);
                        break;
                    }
                    Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                        msg = m;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    // A stuck outlet (e.g. tcp while reconnecting) must not keep the others
                    // from being flushed.
                    Err(_) => {
                        all = false;
                        break;
                    }
                }
            }
        }
        acks.into_iter().fold(all, |all, rx| {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_ok()
                && all
        })
    }
}

impl Drop for LoggingGuard {
    fn drop(&mut self) {
        self.flush(Duration::from_secs(2));
    }
}

/// The pre-filter for `outlets`: `env` (an `EnvFilter` directive) if given, else the lowest
/// outlet level.
pub fn event_filter(
    outlets: &[LoggingOutlet],
    env: Option<&str>,
) -> Result<EventFilter, LoggingError> {
    if let Some(directive) = env {
        return EnvFilter::try_new(directive)
            .map(|f| EventFilter::Env(Box::new(f)))
            .map_err(|e| LoggingError::EnvFilter(e.to_string()));
    }
    let min = outlets
        .iter()
        .map(|o| o.level())
        .min()
        .unwrap_or(LogLevel::Warn);
    Ok(EventFilter::Level(match min {
        LogLevel::Debug => tracing::level_filters::LevelFilter::DEBUG,
        LogLevel::Info => tracing::level_filters::LevelFilter::INFO,
        LogLevel::Warn => tracing::level_filters::LevelFilter::WARN,
        LogLevel::Error => tracing::level_filters::LevelFilter::ERROR,
    }))
}

/// A complete subscriber for `outlets`, not installed.
pub fn subscriber(
    outlets: &[LoggingOutlet],
    env: Option<&str>,
    builder: Builder,
) -> Result<(impl tracing::Subscriber + Send + Sync, LoggingGuard), LoggingError> {
    let filter = event_filter(outlets, env)?;
    let (layer, guard) = builder.build(outlets)?;
    Ok((
        tracing_subscriber::registry().with(layer.with_filter(filter)),
        guard,
    ))
}

/// Installs the outlets as the process's global logger (reads `ZREPL_LOG` and
/// `ZREPL_SYSLOG_SOCKET`). Keep the guard until exit so queued entries are written.
pub fn init(outlets: &[LoggingOutlet]) -> Result<LoggingGuard, LoggingError> {
    let env = std::env::var("ZREPL_LOG").ok().filter(|s| !s.is_empty());
    let socket = std::env::var_os("ZREPL_SYSLOG_SOCKET")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let (sub, guard) = subscriber(
        outlets,
        env.as_deref(),
        Builder::new().syslog_socket(socket),
    )?;
    // try_init also forwards `log` records of dependencies (tracing-log).
    sub.try_init()
        .map_err(|e| LoggingError::Install(e.to_string()))?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let cases = [
            ("collector:514", Ok("collector")),
            ("10.0.0.1:1", Ok("10.0.0.1")),
            ("[::1]:5000", Ok("::1")),
            ("nohost", Err(())),
            (":5", Err(())),
            ("host:", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(split_host(input).map_err(|_| ()), want, "{input}");
        }
    }
}
