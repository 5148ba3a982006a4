//! The outlets: each one a queue and a writer thread, so that a slow or broken destination never
//! blocks the code that logs. A full queue drops the entry and reports it to the error outlet.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use zrepl_config::LogLevel;

use crate::format::Formatter;
use crate::record::Record;
use crate::syslog;

pub(crate) enum Msg {
    Line(LogLevel, Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// Where an outlet reports its own failures: the first outlet (zrepl's "error outlet"), or
/// stderr for the first outlet itself.
#[derive(Clone)]
pub(crate) struct Reporter {
    outlet_type: &'static str,
    target: Option<(Formatter, SyncSender<Msg>)>,
}

impl Reporter {
    pub(crate) fn report(&self, err: &str) {
        if let Some((fmt, tx)) = &self.target {
            let rec = Record::new(crate::now(), LogLevel::Error, "outlet error")
                .with("outlet_type", self.outlet_type)
                .with("err", err);
            if let Ok(mut line) = fmt.format(&rec) {
                line.push('\n');
                if tx
                    .try_send(Msg::Line(LogLevel::Error, line.into_bytes()))
                    .is_ok()
                {
                    return;
                }
            }
        }
        eprintln!("zrepl: {} log outlet error: {err}", self.outlet_type);
    }
}

/// The logging side of an outlet.
pub(crate) struct Outlet {
    pub(crate) min: LogLevel,
    pub(crate) formatter: Formatter,
    pub(crate) tx: SyncSender<Msg>,
    pub(crate) reporter: Reporter,
    full_error: &'static str,
}

impl Outlet {
    pub(crate) fn write(&self, r: &Record) {
        let mut line = match self.formatter.format(r) {
            Ok(l) => l,
            Err(e) => {
                self.reporter.report(&format!("cannot format entry: {e}"));
                return;
            }
        };
        line.push('\n');
        match self.tx.try_send(Msg::Line(r.level, line.into_bytes())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.reporter.report(self.full_error),
            Err(TrySendError::Disconnected(_)) => self.reporter.report("outlet writer stopped"),
        }
    }

    /// The reporter that sends to this outlet, for the outlets after it.
    pub(crate) fn as_error_target(&self, outlet_type: &'static str) -> Reporter {
        Reporter {
            outlet_type,
            target: Some((self.formatter, self.tx.clone())),
        }
    }
}

pub(crate) fn reporter_to_stderr(outlet_type: &'static str) -> Reporter {
    Reporter {
        outlet_type,
        target: None,
    }
}

pub(crate) struct Spec {
    pub(crate) outlet_type: &'static str,
    pub(crate) min: LogLevel,
    pub(crate) formatter: Formatter,
    pub(crate) kind: Kind,
}

pub(crate) enum Kind {
    Writer(Box<dyn Write + Send>),
    Syslog {
        facility: u8,
        retry: Duration,
        socket: Option<PathBuf>,
    },
    Tcp {
        address: String,
        net: String,
        retry: Duration,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    },
}

/// Starts the writer thread of `spec`; its errors go to `reporter` (built from the error
/// outlet before).
pub(crate) fn start(spec: Spec, reporter_for: impl Fn(&'static str) -> Reporter) -> Outlet {
    let reporter = reporter_for(spec.outlet_type);
    let thread_reporter = reporter.clone();
    let (tx, full_error) = match spec.kind {
        Kind::Writer(w) => {
            let (tx, rx) = mpsc::sync_channel(1024);
            spawn("stdout", move || writer_loop(rx, w, thread_reporter));
            (tx, "stdout is not fast enough, entry dropped")
        }
        Kind::Syslog {
            facility,
            retry,
            socket,
        } => {
            let (tx, rx) = mpsc::sync_channel(1024);
            spawn("syslog", move || {
                syslog_loop(rx, facility, retry, socket, thread_reporter)
            });
            (tx, "syslog is not fast enough, entry dropped")
        }
        Kind::Tcp {
            address,
            net,
            retry,
            tls,
        } => {
            // zrepl's tcp outlet buffers exactly one entry.
            let (tx, rx) = mpsc::sync_channel(1);
            spawn("tcp", move || {
                tcp_loop(rx, address, net, retry, tls, thread_reporter)
            });
            (tx, "connection broken or not fast enough")
        }
    };
    Outlet {
        min: spec.min,
        formatter: spec.formatter,
        tx,
        reporter,
        full_error,
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    // If the thread cannot be started the channel's receiver is dropped and every write
    // reports "outlet writer stopped".
    let _ = std::thread::Builder::new()
        .name(format!("log-{name}"))
        .spawn(f);
}

fn writer_loop(rx: Receiver<Msg>, mut w: Box<dyn Write + Send>, reporter: Reporter) {
    for msg in rx {
        match msg {
            Msg::Line(_, line) => {
                if let Err(e) = w.write_all(&line).and_then(|_| w.flush()) {
                    reporter.report(&e.to_string());
                }
            }
            Msg::Flush(ack) => {
                let _ = w.flush();
                let _ = ack.send(());
            }
        }
    }
}

fn syslog_loop(
    rx: Receiver<Msg>,
    facility: u8,
    retry: Duration,
    socket: Option<PathBuf>,
    reporter: Reporter,
) {
    let pid = std::process::id();
    let mut conn: Option<syslog::Conn> = None;
    let mut last_attempt: Option<Instant> = None;
    let connect = |last_attempt: &mut Option<Instant>| -> Option<syslog::Conn> {
        *last_attempt = Some(Instant::now());
        match syslog::socket_path(socket.as_deref()).and_then(|p| syslog::Conn::connect(&p, retry))
        {
            Ok(c) => Some(c),
            Err(e) => {
                reporter.report(&e.to_string());
                None
            }
        }
    };
    for msg in rx {
        let (level, text) = match msg {
            Msg::Line(level, text) => (level, text),
            Msg::Flush(ack) => {
                let _ = ack.send(());
                continue;
            }
        };
        let text = String::from_utf8_lossy(&text);
        let line = syslog::line(
            syslog::priority(facility, level),
            &crate::now(),
            pid,
            text.trim_end_matches('\n'),
        );
        if conn.is_none() {
            // At most one connection attempt per retry interval; entries in between are dropped.
            if last_attempt.is_some_and(|t| t.elapsed() < retry) {
                continue;
            }
            conn = connect(&mut last_attempt);
        }
        let Some(c) = conn.as_mut() else { continue };
        if let Err(e) = c.send(&line) {
            // The daemon may have restarted: one immediate reconnect, as Go's syslog writer.
            conn = connect(&mut last_attempt);
            match conn.as_mut().map(|c| c.send(&line)) {
                Some(Ok(())) => {}
                Some(Err(e2)) => {
                    reporter.report(&format!("cannot write to syslog: {e2}"));
                    conn = None;
                }
                None => reporter.report(&format!("cannot write to syslog: {e}")),
            }
        }
    }
}

enum TcpConn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl TcpConn {
    fn sock(&self) -> &TcpStream {
        match self {
            TcpConn::Plain(s) => s,
            TcpConn::Tls(s) => &s.sock,
        }
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            TcpConn::Plain(s) => s.write_all(line),
            TcpConn::Tls(s) => s.write_all(line).and_then(|_| s.flush()),
        }
    }

    /// Whether the collector has closed the connection (checked without blocking before each
    /// write, so that an entry is not written into a dead connection's buffer).
    fn peer_closed(&mut self) -> bool {
        if self.sock().set_nonblocking(true).is_err() {
            return true;
        }
        let closed = match self {
            TcpConn::Plain(s) => match s.peek(&mut [0u8; 1]) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            },
            TcpConn::Tls(s) => {
                let s = &mut **s;
                loop {
                    match s.conn.read_tls(&mut s.sock) {
                        Ok(0) => break true,
                        Ok(_) => {
                            if s.conn.process_new_packets().is_err() {
                                break true;
                            }
                            // Discard application data; Ok(0) is the peer's close_notify.
                            let mut buf = [0u8; 512];
                            match s.conn.reader().read(&mut buf) {
                                Ok(0) => break true,
                                Ok(_) => continue,
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                                Err(_) => break true,
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                        Err(_) => break true,
                    }
                }
            }
        };
        closed || self.sock().set_nonblocking(false).is_err()
    }
}

fn tcp_connect(
    address: &str,
    net: &str,
    timeout: Duration,
    tls: &Option<(Arc<ClientConfig>, ServerName<'static>)>,
) -> io::Result<TcpConn> {
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()?
        .filter(|a| match net {
            "tcp4" => a.is_ipv4(),
            "tcp6" => a.is_ipv6(),
            _ => true,
        })
        .collect();
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("no {net} address for {address}"),
    );
    let mut sock = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let sock = sock.ok_or(last)?;
    sock.set_write_timeout(Some(timeout))?;
    sock.set_read_timeout(Some(timeout))?;
    let _ = sock.set_nodelay(true);
    match tls {
        None => Ok(TcpConn::Plain(sock)),
        Some((cfg, name)) => {
            let conn =
                ClientConnection::new(cfg.clone(), name.clone()).map_err(io::Error::other)?;
            let mut s = StreamOwned::new(conn, sock);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
            Ok(TcpConn::Tls(Box::new(s)))
        }
    }
}

fn tcp_loop(
    rx: Receiver<Msg>,
    address: String,
    net: String,
    retry: Duration,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    reporter: Reporter,
) {
    let mut conn: Option<TcpConn> = None;
    let mut next_attempt = Instant::now();
    for msg in rx {
        let line = match msg {
            Msg::Line(_, l) => l,
            Msg::Flush(ack) => {
                let _ = ack.send(());
                continue;
            }
        };
        // One entry is kept while reconnecting; meanwhile new entries find the queue full and
        // are dropped (and reported) by the logging side.
        let mut tries = 0;
        while tries < 2 {
            if conn.as_mut().is_some_and(|c| c.peer_closed()) {
                conn = None;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => {
                    std::thread::sleep(next_attempt.saturating_duration_since(Instant::now()));
                    next_attempt = Instant::now() + retry;
                    match tcp_connect(&address, &net, retry, &tls) {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            reporter
                                .report(&format!("cannot connect to log collector {address}: {e}"));
                            continue;
                        }
                    }
                }
            };
            tries += 1;
            match c.write_line(&line) {
                Ok(()) => break,
                Err(e) => {
                    reporter.report(&format!("cannot write to log collector {address}: {e}"));
                    conn = None;
                }
            }
        }
    }
}
