//! zrepl-logging end to end: every format parsed back, the syslog outlet on a real unix
//! datagram socket, the tcp outlet (plain and TLS with a client certificate) across a collector
//! restart, the error outlet.

mod parse;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zrepl_config::units::GoDuration;
use zrepl_config::{LogFormat, LogLevel, LoggingOutlet, SyslogFacility, TcpOutletTls};
use zrepl_logging::Builder;

/// A `Write` the test can read back (stands in for stdout).
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn stdout(level: LogLevel, format: LogFormat, time: bool, color: bool) -> LoggingOutlet {
    LoggingOutlet::Stdout {
        level,
        format,
        time,
        color,
    }
}

fn tcp(
    address: String,
    level: LogLevel,
    retry_ms: i64,
    tls: Option<TcpOutletTls>,
) -> LoggingOutlet {
    LoggingOutlet::Tcp {
        level,
        format: LogFormat::Json,
        address,
        net: "tcp".into(),
        retry_interval: GoDuration::from_nanos(retry_ms as i128 * 1_000_000),
        tls,
    }
}

/// Runs `f` with the outlets as the thread's subscriber, then waits for the outlets' queues.
fn with_outlets(outlets: &[LoggingOutlet], builder: Builder, f: impl FnOnce()) {
    let (sub, guard) = zrepl_logging::subscriber(outlets, None, builder).unwrap();
    tracing::subscriber::with_default(sub, f);
    assert!(
        guard.flush(Duration::from_secs(10)),
        "outlets did not flush"
    );
}

/// The replication-shaped events every format test logs.
fn emit() {
    tracing::warn!("outside any span");
    let job = tracing::info_span!("job", job = "prod");
    let _j = job.enter();
    let repl = tracing::info_span!("repl", subsystem = "repl", fs = "pool/data");
    let _r = repl.enter();
    let step = tracing::info_span!("step", step = "@a => @b");
    let _s = step.enter();
    tracing::info!(bytes = 42u64, ok = true, "replicating step");
    let e = std::io::Error::other("disk on fire");
    tracing::error!(
        err = &e as &(dyn std::error::Error + 'static),
        detail = "a \"quoted\" = thing\nnext",
        "step failed"
    );
    tracing::debug!("below the outlet level");
}

fn time_ok(s: &str) {
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("time {s:?}: {e}"));
}

#[test]
fn json_format_parses_back_with_span_fields() {
    let buf = Buf::default();
    with_outlets(
        &[stdout(LogLevel::Info, LogFormat::Json, true, true)],
        Builder::new().stdout(Box::new(buf.clone()), false),
        emit,
    );
    let lines = buf.lines();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["msg"], "outside any span");
    assert_eq!(v[0]["level"], "warn");
    assert_eq!(v[0]["span"], "NOSPAN");
    assert!(v[0].get("job").is_none());

    assert_eq!(v[1]["msg"], "replicating step");
    assert_eq!(v[1]["level"], "info");
    assert_eq!(v[1]["job"], "prod");
    assert_eq!(v[1]["subsystem"], "repl");
    assert_eq!(v[1]["fs"], "pool/data");
    assert_eq!(v[1]["step"], "@a => @b");
    assert_eq!(v[1]["span"], "job$repl$step");
    assert_eq!(v[1]["bytes"], 42);
    assert_eq!(v[1]["ok"], true);

    assert_eq!(v[2]["level"], "error");
    assert_eq!(v[2]["err"], "disk on fire");
    assert_eq!(v[2]["detail"], "a \"quoted\" = thing\nnext");
    for x in &v {
        time_ok(x["time"].as_str().unwrap());
    }
}

#[test]
fn logfmt_format_parses_back() {
    let buf = Buf::default();
    with_outlets(
        &[stdout(LogLevel::Info, LogFormat::Logfmt, true, true)],
        Builder::new().stdout(Box::new(buf.clone()), false),
        emit,
    );
    let lines = buf.lines();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let recs: Vec<Vec<(String, Option<String>)>> =
        lines.iter().map(|l| parse::logfmt(l).unwrap()).collect();
    let map = |r: &Vec<(String, Option<String>)>| -> BTreeMap<String, Option<String>> {
        r.iter().cloned().collect()
    };
    let s = |x: &str| Some(x.to_string());

    // Metadata and prefix fields come first, in zrepl's order.
    let keys: Vec<&str> = recs[1].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &keys[..6],
        ["time", "level", "job", "subsystem", "span", "msg"]
    );
    let r0 = map(&recs[0]);
    assert_eq!(r0["msg"], s("outside any span"));
    assert_eq!(r0["level"], s("warn"));
    assert_eq!(r0["span"], s("NOSPAN"));
    let r1 = map(&recs[1]);
    assert_eq!(r1["job"], s("prod"));
    assert_eq!(r1["subsystem"], s("repl"));
    assert_eq!(r1["fs"], s("pool/data"));
    assert_eq!(r1["step"], s("@a => @b"));
    assert_eq!(r1["bytes"], s("42"));
    assert_eq!(r1["ok"], s("true"));
    assert_eq!(r1["msg"], s("replicating step"));
    let r2 = map(&recs[2]);
    assert_eq!(r2["level"], s("error"));
    assert_eq!(r2["err"], s("disk on fire"));
    assert_eq!(r2["detail"], s("a \"quoted\" = thing\nnext"));
    for r in [&r0, &r1, &r2] {
        time_ok(r["time"].as_deref().unwrap());
    }
}

#[test]
fn human_format_field_by_field() {
    let buf = Buf::default();
    with_outlets(
        &[stdout(LogLevel::Info, LogFormat::Human, true, true)],
        Builder::new().stdout(Box::new(buf.clone()), false),
        emit,
    );
    let lines = buf.lines();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let h: Vec<parse::Human> = lines
        .iter()
        .zip(["outside any span", "replicating step", "step failed"])
        .map(|(l, msg)| parse::human(l, msg).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    for x in &h {
        time_ok(x.time.as_deref().expect("time"));
    }
    assert_eq!(h[0].brackets, ["WARN", "NOSPAN"]);
    assert!(h[0].fields.is_empty());
    assert_eq!(h[1].brackets, ["INFO", "prod", "repl", "job$repl$step"]);
    assert_eq!(
        h[1].fields,
        [
            ("fs".to_string(), "pool/data".to_string()),
            ("step".to_string(), "@a => @b".to_string()),
            ("bytes".to_string(), "42".to_string()),
            ("ok".to_string(), "true".to_string()),
        ]
    );
    assert_eq!(h[2].brackets[0], "ERRO");
    assert!(h[2].fields.contains(&(
        "detail".to_string(),
        "a \"quoted\" = thing\nnext".to_string()
    )));
}

#[test]
fn stdout_metadata_flags_follow_the_terminal() {
    // Not a terminal, time: false -> no time; color never without a terminal.
    let buf = Buf::default();
    with_outlets(
        &[stdout(LogLevel::Warn, LogFormat::Human, false, true)],
        Builder::new().stdout(Box::new(buf.clone()), false),
        || tracing::warn!("plain"),
    );
    assert_eq!(buf.lines(), ["[WARN][NOSPAN]: plain"]);
    // A terminal keeps the time even with time: false, and colors unless color: false.
    let buf = Buf::default();
    with_outlets(
        &[stdout(LogLevel::Warn, LogFormat::Human, false, true)],
        Builder::new().stdout(Box::new(buf.clone()), true),
        || tracing::warn!("tty"),
    );
    let line = &buf.lines()[0];
    let h = parse::human(line, "tty").unwrap();
    time_ok(h.time.as_deref().unwrap());
    assert!(line.contains("[\x1b[93mWARN\x1b[0m]"), "{line:?}");
    // An explicit empty outlet list: stdout, warn, human, no metadata.
    let buf = Buf::default();
    with_outlets(
        &[],
        Builder::new().stdout(Box::new(buf.clone()), true),
        || {
            tracing::info!("dropped");
            tracing::warn!(n = 1, "kept");
        },
    );
    assert_eq!(buf.lines(), ["[NOSPAN]: kept n=\"1\""]);
}

/// A unix datagram socket standing in for /dev/log.
struct FakeSyslog {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    sock: UnixDatagram,
}

impl FakeSyslog {
    fn bind() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FakeSyslog {
            _dir: dir,
            path,
            sock,
        }
    }

    fn recv(&self) -> String {
        let mut b = vec![0u8; 65536];
        let n = self.sock.recv(&mut b).expect("no syslog datagram");
        String::from_utf8(b[..n].to_vec()).unwrap()
    }
}

/// `<PRI>Mmm dd hh:mm:ss zrepl[PID]: message\n` -> (pri, message).
fn split_syslog(d: &str) -> (u8, String) {
    let rest = d.strip_prefix('<').expect(d);
    let (pri, rest) = rest.split_once('>').expect(d);
    // "Mar  5 04:05:06 " is 16 characters.
    chrono::NaiveTime::parse_from_str(&rest[7..15], "%H:%M:%S").expect(d);
    let tag = format!("zrepl[{}]: ", std::process::id());
    let msg = rest[16..].strip_prefix(&tag).expect(d);
    let msg = msg.strip_suffix('\n').expect(d);
    (pri.parse().unwrap(), msg.to_string())
}

#[test]
fn syslog_outlet_delivers_with_facility_and_severity() {
    let fake = FakeSyslog::bind();
    with_outlets(
        &[LoggingOutlet::Syslog {
            level: LogLevel::Debug,
            format: LogFormat::Logfmt,
            facility: SyslogFacility::Local3,
            retry_interval: GoDuration::from_secs(10),
        }],
        Builder::new().syslog_socket(Some(fake.path.clone())),
        || {
            let s = tracing::info_span!("job", job = "prod");
            let _e = s.enter();
            tracing::debug!("d");
            tracing::info!(fs = "pool/a", "i");
            tracing::warn!("w");
            tracing::error!("e");
        },
    );
    let local3 = 19u8;
    for (msg, sev) in [("d", 7u8), ("i", 6), ("w", 4), ("e", 3)] {
        let (pri, text) = split_syslog(&fake.recv());
        assert_eq!(pri, local3 * 8 + sev, "{msg}");
        let kv: BTreeMap<String, Option<String>> =
            parse::logfmt(&text).unwrap().into_iter().collect();
        assert_eq!(kv["msg"].as_deref(), Some(msg));
        assert_eq!(kv["job"].as_deref(), Some("prod"));
        // The syslog formatter has no time or level metadata: syslog has its own.
        assert!(
            !kv.contains_key("time") && !kv.contains_key("level"),
            "{text}"
        );
        if msg == "i" {
            assert_eq!(kv["fs"].as_deref(), Some("pool/a"));
        }
    }
}

#[test]
fn syslog_outlet_reconnects_after_retry_interval_and_reports_to_the_error_outlet() {
    let errors = Buf::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let outlets = [
        stdout(LogLevel::Error, LogFormat::Json, true, false),
        LoggingOutlet::Syslog {
            level: LogLevel::Info,
            format: LogFormat::Human,
            facility: SyslogFacility::Daemon,
            retry_interval: GoDuration::from_nanos(300_000_000),
        },
    ];
    let (sub, guard) = zrepl_logging::subscriber(
        &outlets,
        None,
        Builder::new()
            .stdout(Box::new(errors.clone()), false)
            .syslog_socket(Some(path.clone())),
    )
    .unwrap();
    tracing::subscriber::with_default(sub, || {
        // No syslog daemon yet: the connection fails and is reported on the error outlet.
        tracing::info!("lost");
        assert!(guard.flush(Duration::from_secs(5)));
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        // Within the retry interval entries are dropped; after it, delivered.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = None;
        let mut i = 0;
        while got.is_none() && Instant::now() < deadline {
            i += 1;
            tracing::info!(n = i, "after bind");
            let mut b = [0u8; 4096];
            if let Ok(n) = sock.recv(&mut b) {
                got = Some(String::from_utf8(b[..n].to_vec()).unwrap());
            }
        }
        let got = got.expect("syslog outlet never reconnected");
        let (pri, text) = split_syslog(&got);
        assert_eq!(pri, 3 * 8 + 6);
        let h = parse::human(&text, "after bind").unwrap();
        assert_eq!(h.brackets, ["NOSPAN"]);
    });
    drop(guard);
    let errs: Vec<serde_json::Value> = errors
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let e = errs
        .iter()
        .find(|e| e["msg"] == "outlet error")
        .unwrap_or_else(|| panic!("no outlet error: {errs:#?}"));
    assert_eq!(e["outlet_type"], "syslog");
    assert_eq!(e["level"], "error");
    assert!(e["err"]
        .as_str()
        .unwrap()
        .contains("cannot connect to syslog"));
}

/// A log collector: accepts connections (optionally TLS with a required client certificate)
/// and forwards every line; `stop` closes the listener and every connection.
struct Collector {
    addr: SocketAddr,
    rx: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Collector {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { return };
                conns2.lock().unwrap().push(conn.try_clone().unwrap());
                let tx = tx.clone();
                let tls = tls.clone();
                std::thread::spawn(move || serve(conn, tls, tx));
            }
        });
        Collector {
            addr,
            rx,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        self.accept.take().unwrap().join().unwrap();
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn serve(conn: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, tx: mpsc::Sender<String>) {
    let reader: Box<dyn std::io::Read> = match tls {
        None => Box::new(conn),
        Some(cfg) => {
            let mut s = rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), conn);
            while s.conn.is_handshaking() {
                if s.conn.complete_io(&mut s.sock).is_err() {
                    return;
                }
            }
            assert!(
                s.conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                "client presented no certificate"
            );
            Box::new(s)
        }
    };
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { return };
        if tx.send(line).is_err() {
            return;
        }
    }
}

/// Logs `msg` (numbered) until the collector forwards one, within 15 s.
fn log_until_received(rx: &mpsc::Receiver<String>, msg: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        tracing::info!(n = i, "{msg}");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["msg"] == msg {
                return v;
            }
        }
    }
    panic!("collector never received {msg:?}");
}

fn tcp_survives_collector_restart(tls: Option<(TcpOutletTls, Arc<rustls::ServerConfig>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (outlet_tls, server_tls) = match tls {
        Some((o, s)) => (Some(o), Some(s)),
        None => (None, None),
    };
    let errors = Buf::default();
    let outlets = [
        // The error outlet first, at warn: it must not see the tcp outlet's info entries.
        stdout(LogLevel::Warn, LogFormat::Json, false, false),
        tcp(addr.to_string(), LogLevel::Debug, 200, outlet_tls),
    ];
    let (sub, guard) = zrepl_logging::subscriber(
        &outlets,
        None,
        Builder::new().stdout(Box::new(errors.clone()), false),
    )
    .unwrap();
    tracing::subscriber::with_default(sub, || {
        let c = Collector::start(listener, server_tls.clone());
        let v = log_until_received(&c.rx, "before restart");
        assert_eq!(v["level"], "info");
        time_ok(v["time"].as_str().unwrap());
        // Per-outlet levels: the tcp outlet takes debug.
        tracing::debug!("debug entry");
        let v: serde_json::Value =
            serde_json::from_str(&c.rx.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
        assert_eq!(v["msg"], "debug entry");

        // Restart the collector: close the listener and every connection, listen again on
        // the same port.
        c.stop();
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let c = Collector::start(listener, server_tls);
        let v = log_until_received(&c.rx, "after restart");
        assert_eq!(v["level"], "info");
    });
    drop(guard);
    let stdout = errors.lines();
    assert!(
        stdout.iter().all(|l| !l.contains("before restart")),
        "the stdout outlet's level is warn: {stdout:#?}"
    );
}

#[test]
fn tcp_outlet_survives_collector_restart() {
    tcp_survives_collector_restart(None);
}

/// CA, server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
fn pki(dir: &std::path::Path) -> (TcpOutletTls, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert, key)
    };
    let (srv_cert, srv_key) = leaf(vec!["127.0.0.1".into()]);
    let (cli_cert, cli_key) = leaf(vec!["client.example".into()]);
    let write = |name: &str, s: String| {
        let p = dir.join(name);
        std::fs::write(&p, s).unwrap();
        p.to_str().unwrap().to_string()
    };
    let outlet = TcpOutletTls {
        ca: Some(write("ca.pem", ca_cert.pem())),
        cert: write("client.pem", cli_cert.pem()),
        key: write("client.key", cli_key.serialize_pem()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(srv_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(srv_key.serialize_der().into()),
        )
        .unwrap();
    (outlet, Arc::new(server))
}

#[test]
fn tls_tcp_outlet_with_client_certificate_survives_collector_restart() {
    let dir = tempfile::tempdir().unwrap();
    tcp_survives_collector_restart(Some(pki(dir.path())));
}

#[test]
fn tcp_outlet_drops_when_full_and_reports_to_the_error_outlet() {
    // A port nobody listens on, and a long retry interval: the writer holds one entry, the
    // queue one more, everything after is dropped without blocking the caller.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let errors = Buf::default();
    let (sub, guard) = zrepl_logging::subscriber(
        &[
            stdout(LogLevel::Error, LogFormat::Logfmt, true, false),
            tcp(format!("127.0.0.1:{port}"), LogLevel::Info, 60_000, None),
        ],
        None,
        Builder::new().stdout(Box::new(errors.clone()), false),
    )
    .unwrap();
    tracing::subscriber::with_default(sub, || {
        for i in 0..20 {
            tracing::info!(i, "entry");
        }
    });
    // The tcp outlet cannot confirm (it waits to reconnect), the error outlet can.
    assert!(!guard.flush(Duration::from_secs(2)));
    let errs: Vec<BTreeMap<String, Option<String>>> = errors
        .lines()
        .iter()
        .map(|l| parse::logfmt(l).unwrap().into_iter().collect())
        .collect();
    let dropped = errs
        .iter()
        .filter(|e| {
            e["msg"].as_deref() == Some("outlet error")
                && e["outlet_type"].as_deref() == Some("tcp")
                && e["err"].as_deref() == Some("connection broken or not fast enough")
        })
        .count();
    assert!(dropped >= 17, "{dropped} drops reported: {errs:#?}");
    assert!(
        errs.iter().any(|e| e["err"]
            .as_deref()
            .is_some_and(|s| s.starts_with("cannot connect to log collector"))),
        "{errs:#?}"
    );
}

#[test]
fn invalid_tls_files_refuse_to_build() {
    let dir = tempfile::tempdir().unwrap();
    let (mut good, _) = pki(dir.path());
    let missing = dir.path().join("nope.pem").to_str().unwrap().to_string();
    let cases: Vec<(TcpOutletTls, &str)> = vec![
        (
            TcpOutletTls {
                cert: missing.clone(),
                ..good.clone()
            },
            "nope.pem",
        ),
        (
            TcpOutletTls {
                key: missing.clone(),
                ..good.clone()
            },
            "nope.pem",
        ),
        (
            TcpOutletTls {
                ca: Some(missing.clone()),
                ..good.clone()
            },
            "nope.pem",
        ),
        (
            TcpOutletTls {
                // A certificate where the key should be.
                key: good.cert.clone(),
                ..good.clone()
            },
            "client.pem",
        ),
    ];
    for (tls, want) in cases {
        let err = Builder::new()
            .build(&[tcp("127.0.0.1:1".into(), LogLevel::Info, 1000, Some(tls))])
            .err()
            .expect("must fail");
        let msg = err.to_string();
        assert!(msg.contains(want), "{msg}");
    }
    good.ca = None; // system roots: may or may not exist here, but must not panic
    let _ = Builder::new().build(&[tcp("127.0.0.1:1".into(), LogLevel::Info, 1000, Some(good))]);
}

#[test]
fn span_fields_survive_span_levels_below_the_outlets_and_zrepl_log_narrows() {
    // A debug span's fields are on the info event inside it, although no outlet takes debug.
    let buf = Buf::default();
    with_outlets(
        &[stdout(LogLevel::Info, LogFormat::Json, true, false)],
        Builder::new().stdout(Box::new(buf.clone()), false),
        || {
            let s = tracing::debug_span!("quiet", fs = "pool/x");
            let _e = s.enter();
            tracing::debug!("not logged");
            tracing::info!("logged");
        },
    );
    let lines = buf.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["msg"], "logged");
    assert_eq!(v["fs"], "pool/x");
    assert_eq!(v["span"], "quiet");

    // ZREPL_LOG's directive replaces the pre-filter; outlets keep their own levels.
    let buf = Buf::default();
    let outlets = [stdout(LogLevel::Info, LogFormat::Json, true, false)];
    let (sub, guard) = zrepl_logging::subscriber(
        &outlets,
        Some("warn"),
        Builder::new().stdout(Box::new(buf.clone()), false),
    )
    .unwrap();
    tracing::subscriber::with_default(sub, || {
        let s = tracing::info_span!("job", job = "j");
        let _e = s.enter();
        tracing::info!("filtered by the directive");
        tracing::debug!("filtered");
        tracing::warn!("kept");
    });
    assert!(guard.flush(Duration::from_secs(5)));
    let lines = buf.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        (v["msg"].as_str(), v["job"].as_str()),
        (Some("kept"), Some("j"))
    );
    assert!(
        zrepl_logging::subscriber(&outlets, Some("[[[not a directive"), Builder::new()).is_err()
    );
}
