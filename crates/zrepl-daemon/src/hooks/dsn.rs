//! The database hooks' DSNs (spec §2.7), turned into client options without any I/O.
//!
//! zrepl 0.7 hands `postgres-checkpoint` DSNs to lib/pq (libpq's `key=value` list or a
//! `postgres://` URL) and `mysql-lock-tables` DSNs to Go-MySQL-Driver
//! (`[user[:password]@][net[(addr)]]/dbname[?param=value&...]`). Both are accepted here with the
//! same meaning; what this build cannot honour (TLS, other networks) is refused with a message
//! when the job is built, so `zrepl daemon` does not start with a hook that could never work.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use zrepl_config::units::GoDuration;

/// This build speaks to databases in plain text only (no TLS stack compiled in).
const NO_TLS: &str =
    "this build connects to databases without TLS (use a unix socket or localhost)";

/// A postgres-checkpoint DSN as tokio-postgres options, with lib/pq's defaults filled in:
/// `PGHOST`/`PGPORT`/`PGUSER`/`PGPASSWORD`/`PGDATABASE` from `env` where the DSN is silent, host
/// `localhost`, port 5432, user `os_user`. A host starting with `/` is a unix socket directory.
pub fn postgres_config(
    dsn: &str,
    env: &dyn Fn(&str) -> Option<String>,
    os_user: Option<&str>,
) -> Result<tokio_postgres::Config, String> {
    let mut cfg = tokio_postgres::Config::from_str(dsn).map_err(|e| {
        // tokio-postgres says what is wrong in the error's source.
        let mut e: &dyn std::error::Error = &e;
        while let Some(s) = e.source() {
            e = s;
        }
        let e = e.to_string();
        if e.contains("sslmode") {
            format!("invalid postgres dsn: {e} ({NO_TLS}; sslmode=disable)")
        } else {
            format!("invalid postgres dsn: {e}")
        }
    })?;
    match cfg.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable | tokio_postgres::config::SslMode::Prefer => {}
        _ => {
            return Err(format!(
                "postgres dsn asks for TLS: {NO_TLS}; sslmode=disable"
            ))
        }
    }
    if cfg.get_hosts().is_empty() {
        let hosts = env("PGHOST").unwrap_or_else(|| "localhost".into());
        for h in hosts.split(',') {
            cfg.host(h);
        }
    }
    if cfg.get_ports().is_empty() {
        if let Some(p) = env("PGPORT") {
            cfg.port(
                p.parse()
                    .map_err(|_| format!("invalid PGPORT in the environment: {p:?}"))?,
            );
        }
    }
    if cfg.get_user().is_none() {
        match env("PGUSER").or_else(|| os_user.map(str::to_string)) {
            Some(u) => {
                cfg.user(u);
            }
            None => return Err("postgres dsn has no user= and the daemon's user is unknown".into()),
        }
    }
    if cfg.get_password().is_none() {
        if let Some(p) = env("PGPASSWORD") {
            cfg.password(p);
        }
    }
    if cfg.get_dbname().is_none() {
        if let Some(d) = env("PGDATABASE") {
            cfg.dbname(d);
        }
    }
    Ok(cfg)
}

/// Where a MySQL/MariaDB server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MysqlAddr {
    Tcp { host: String, port: u16 },
    Unix(String),
}

/// A Go-MySQL-Driver DSN, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlDsn {
    pub user: String,
    pub password: Option<String>,
    pub addr: MysqlAddr,
    pub db: Option<String>,
    /// `timeout=`: the dial timeout.
    pub connect_timeout: Option<Duration>,
    /// `allowCleartextPasswords=true`.
    pub cleartext_passwords: bool,
    /// Parameters the driver does not know are system variables it sets on every connection
    /// (`SET name=value`, value verbatim), in DSN order.
    pub session_vars: Vec<(String, String)>,
}

impl fmt::Debug for MysqlDsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The DSN without its password, for logs and errors.
impl fmt::Display for MysqlDsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.user.is_empty() {
            write!(f, "{}", self.user)?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        match &self.addr {
            MysqlAddr::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp([{host}]:{port})")?
            }
            MysqlAddr::Tcp { host, port } => write!(f, "tcp({host}:{port})")?,
            MysqlAddr::Unix(p) => write!(f, "unix({p})")?,
        }
        write!(f, "/{}", self.db.as_deref().unwrap_or(""))
    }
}

/// Parameters that change nothing for a hook that only locks and unlocks tables: accepted and
/// ignored. (`readTimeout`/`writeTimeout`: the hook's `timeout` bounds every round trip anyway.)
const IGNORED_PARAMS: &[&str] = &[
    "allowAllFiles",
    "allowFallbackToPlaintext",
    "allowNativePasswords",
    "charset",
    "checkConnLiveness",
    "clientFoundRows",
    "collation",
    "columnsWithAlias",
    "connectionAttributes",
    "interpolateParams",
    "loc",
    "maxAllowedPacket",
    "multiStatements",
    "parseTime",
    "readTimeout",
    "rejectReadOnly",
    "timeTruncate",
    "writeTimeout",
];

/// Parameters whose feature this build lacks: refused rather than silently dropped.
const REFUSED_PARAMS: &[&str] = &["allowOldPasswords", "compress", "serverPubKey"];

/// Decodes a Go-MySQL-Driver DSN with that driver's rules: the last `/` starts the database
/// name, the last `@` before it ends `user[:password]` (the password may contain `:` and `@`),
/// the network defaults to `tcp` at `127.0.0.1:3306` (`unix`: `/tmp/mysql.sock`), a TCP address
/// without port gets 3306, the database name is path-unescaped and parameter values are
/// query-unescaped.
pub fn parse_mysql_dsn(dsn: &str) -> Result<MysqlDsn, String> {
    let err = |m: &str| Err(format!("invalid mysql dsn: {m}"));
    let Some(slash) = dsn.rfind('/') else {
        if dsn.is_empty() {
            return parse_mysql_dsn("/");
        }
        return err("missing the slash separating the database name");
    };
    let (head, tail) = (&dsn[..slash], &dsn[slash + 1..]);
    let (userinfo, netaddr) = match head.rfind('@') {
        Some(at) => (Some(&head[..at]), &head[at + 1..]),
        None => (None, head),
    };
    let (user, password) = match userinfo {
        None => (String::new(), None),
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (u.to_string(), Some(p.to_string())),
            None => (u.to_string(), None),
        },
    };
    let (net, addr) = match netaddr.find('(') {
        Some(open) => {
            let Some(inner) = netaddr[open + 1..].strip_suffix(')') else {
                return err("network address not terminated (missing closing brace)");
            };
            (&netaddr[..open], Some(inner))
        }
        None => (netaddr, None),
    };
    let addr = match net {
        "" | "tcp" | "tcp4" | "tcp6" => {
            let a = addr.filter(|a| !a.is_empty()).unwrap_or("127.0.0.1:3306");
            let (host, port) = split_host_port(a)?;
            MysqlAddr::Tcp { host, port }
        }
        "unix" => MysqlAddr::Unix(
            addr.filter(|a| !a.is_empty())
                .unwrap_or("/tmp/mysql.sock")
                .to_string(),
        ),
        other => return err(&format!("unsupported network {other:?} (tcp or unix)")),
    };
    let (db, query) = match tail.split_once('?') {
        Some((d, q)) => (d, Some(q)),
        None => (tail, None),
    };
    let db = unescape(db, false).ok_or("invalid mysql dsn: invalid escape in the database name")?;
    let mut out = MysqlDsn {
        user,
        password,
        addr,
        db: (!db.is_empty()).then_some(db),
        connect_timeout: None,
        cleartext_passwords: false,
        session_vars: vec![],
    };
    for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        // Like the driver, a parameter without `=` is skipped.
        let Some((key, value)) = kv.split_once('=') else {
            continue;
        };
        let value = unescape(value, true)
            .ok_or_else(|| format!("invalid mysql dsn: invalid escape in parameter {key}"))?;
        match key {
            "timeout" => {
                let d = GoDuration::parse(&value)
                    .map_err(|e| format!("invalid mysql dsn: timeout={value}: {e}"))?;
                if d.is_negative() {
                    return err(&format!("timeout={value} is negative"));
                }
                out.connect_timeout = (!d.is_zero()).then(|| d.to_std());
            }
            "tls" => {
                if !matches!(value.as_str(), "false" | "0" | "False" | "FALSE") {
                    return err(&format!("tls={value}: {NO_TLS}; tls=false"));
                }
            }
            "allowCleartextPasswords" => out.cleartext_passwords = go_bool(key, &value)?,
            k if REFUSED_PARAMS.contains(&k) => {
                if go_bool(k, &value).unwrap_or(true) {
                    return err(&format!("parameter {k} is not supported by this build"));
                }
            }
            k if IGNORED_PARAMS.contains(&k) => {}
            k => {
                let valid = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
                if !valid {
                    return err(&format!("invalid system variable name {k:?}"));
                }
                out.session_vars.push((k.to_string(), value));
            }
        }
    }
    Ok(out)
}

/// Why the directory of a MySQL unix socket is not a safe place to send credentials to, if it
/// is not: a directory every user may write to (`/tmp`, the driver's default `/tmp/mysql.sock`)
/// lets anyone create the socket before the server does and receive the hook's login.
/// `mode` is the directory's permission bits.
pub fn unsafe_socket_dir(dir: &str, mode: u32) -> Option<String> {
    (mode & 0o002 != 0).then(|| {
        format!(
            "the MySQL socket's directory {dir} is writable by every user: anyone could answer in the server's place (use a socket in a protected directory, e.g. unix(/run/mysqld/mysqld.sock))"
        )
    })
}

impl MysqlDsn {
    /// The unix socket's path, if the DSN names one.
    pub fn socket_path(&self) -> Option<&str> {
        match &self.addr {
            MysqlAddr::Unix(p) => Some(p),
            MysqlAddr::Tcp { .. } => None,
        }
    }

    /// mysql_async options for exactly this server: no switch from TCP to the server's socket
    /// (`prefer_socket`), no statement cache, no pool.
    pub fn opts(&self) -> mysql_async::Opts {
        let b = mysql_async::OptsBuilder::default()
            .user((!self.user.is_empty()).then(|| self.user.clone()))
            .pass(self.password.clone())
            .db_name(self.db.clone())
            .prefer_socket(false)
            .stmt_cache_size(0)
            .enable_cleartext_plugin(self.cleartext_passwords);
        let b = match &self.addr {
            MysqlAddr::Tcp { host, port } => b.ip_or_hostname(host.clone()).tcp_port(*port),
            MysqlAddr::Unix(p) => b.socket(Some(p.clone())),
        };
        b.into()
    }

    /// The statements that set the DSN's system variables, in DSN order.
    pub fn session_statements(&self) -> Vec<String> {
        self.session_vars
            .iter()
            .map(|(k, v)| format!("SET {k}={v}"))
            .collect()
    }
}

/// `host:port`, `[v6]:port` or a bare host (port 3306), like Go's net.SplitHostPort after the
/// driver added the default port.
fn split_host_port(a: &str) -> Result<(String, u16), String> {
    let bad = || format!("invalid mysql dsn: invalid tcp address {a:?}");
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match a.matches(':').count() {
            0 => (a, None),
            1 => {
                let (h, p) = a.split_once(':').ok_or_else(bad)?;
                (h, Some(p))
            }
            // A bare IPv6 address.
            _ => (a, None),
        }
    };
    let port = match port {
        None => 3306,
        Some(p) => p.parse().map_err(|_| bad())?,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Go's strconv.ParseBool, as the driver reads boolean parameters.
fn go_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid mysql dsn: {key}={v} is not a boolean")),
    }
}

/// Percent-decoding (Go's url.PathUnescape, or url.QueryUnescape with `plus_is_space`); None on
/// a malformed escape or invalid UTF-8.
fn unescape(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> MysqlAddr {
        MysqlAddr::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn mysql_dsns() {
        let unix = |p: &str| MysqlAddr::Unix(p.into());
        // (dsn, user, password, addr, db)
        type Row = (
            &'static str,
            &'static str,
            Option<&'static str>,
            MysqlAddr,
            Option<&'static str>,
        );
        let table: &[Row] = &[
            (
                "zrepl_lock_tables:pw@tcp(localhost)/",
                "zrepl_lock_tables",
                Some("pw"),
                tcp("localhost", 3306),
                None,
            ),
            (
                "root@unix(/run/mysqld/mysqld.sock)/",
                "root",
                None,
                unix("/run/mysqld/mysqld.sock"),
                None,
            ),
            (
                "u:p@tcp(db.example:3307)/shop",
                "u",
                Some("p"),
                tcp("db.example", 3307),
                Some("shop"),
            ),
            ("/", "", None, tcp("127.0.0.1", 3306), None),
            ("", "", None, tcp("127.0.0.1", 3306), None),
            ("u@/db", "u", None, tcp("127.0.0.1", 3306), Some("db")),
            ("u@tcp/db", "u", None, tcp("127.0.0.1", 3306), Some("db")),
            ("u@unix/", "u", None, unix("/tmp/mysql.sock"), None),
            ("u@tcp6([::1]:3306)/", "u", None, tcp("::1", 3306), None),
            ("u@tcp([fe80::1])/", "u", None, tcp("fe80::1", 3306), None),
            // The password keeps ':' and '@'; the last '@' ends it.
            (
                "u:p:a@ss@tcp(h:1)/d",
                "u",
                Some("p:a@ss"),
                tcp("h", 1),
                Some("d"),
            ),
            ("u:@tcp(h)/", "u", Some(""), tcp("h", 3306), None),
            // The database name is path-unescaped.
            ("u@tcp(h)/my%20db", "u", None, tcp("h", 3306), Some("my db")),
        ];
        for (dsn, user, pw, addr, db) in table {
            let d = parse_mysql_dsn(dsn).unwrap_or_else(|e| panic!("{dsn}: {e}"));
            assert_eq!(&d.user, user, "{dsn}");
            assert_eq!(d.password.as_deref(), *pw, "{dsn}");
            assert_eq!(&d.addr, addr, "{dsn}");
            assert_eq!(d.db.as_deref(), *db, "{dsn}");
        }
    }

    #[test]
    fn mysql_dsn_params() {
        let d = parse_mysql_dsn(
            "u@unix(/s)/?timeout=1.5s&tls=false&parseTime=true&charset=utf8mb4&lock_wait_timeout=7&sql_mode=%27ANSI%27&allowCleartextPasswords=1&novalue",
        )
        .unwrap();
        assert_eq!(d.connect_timeout, Some(Duration::from_millis(1500)));
        assert!(d.cleartext_passwords);
        assert_eq!(
            d.session_statements(),
            ["SET lock_wait_timeout=7", "SET sql_mode='ANSI'"]
        );
        assert_eq!(
            parse_mysql_dsn("/?timeout=0").unwrap().connect_timeout,
            None
        );
    }

    #[test]
    fn mysql_dsn_errors() {
        // (dsn, part of the error)
        let table = [
            ("user:pw@tcp(localhost)", "missing the slash"),
            ("u@tcp(localhost/", "not terminated"),
            ("u@tcp(h:port)/", "invalid tcp address"),
            ("u@tcp(h:99999)/", "invalid tcp address"),
            ("u@cloudsql(x)/", "unsupported network"),
            ("u@tcp(h)/?tls=true", "without TLS"),
            ("u@tcp(h)/?tls=skip-verify", "without TLS"),
            ("u@tcp(h)/?timeout=soon", "timeout=soon"),
            ("u@tcp(h)/?compress=true", "not supported"),
            ("u@tcp(h)/?allowCleartextPasswords=maybe", "not a boolean"),
            ("u@tcp(h)/?lock_wait_timeout=%zz", "invalid escape"),
            ("u@tcp(h)/?bad%20var=1", "invalid system variable"),
            ("u@tcp(h)/?x;DROP=1", "invalid system variable"),
            ("u@tcp(h)/d%zz", "invalid escape"),
        ];
        for (dsn, want) in table {
            match parse_mysql_dsn(dsn) {
                Ok(d) => panic!("{dsn}: accepted as {d:?}"),
                Err(e) => assert!(e.contains(want), "{dsn}: {e}"),
            }
        }
        // Refused parameters switched off are fine.
        assert!(parse_mysql_dsn("u@tcp(h)/?compress=false").is_ok());
    }

    #[test]
    fn mysql_dsn_display_hides_password() {
        let d = parse_mysql_dsn("u:secret@tcp(h)/db").unwrap();
        assert_eq!(d.to_string(), "u:***@tcp(h:3306)/db");
        assert_eq!(format!("{d:?}"), "u:***@tcp(h:3306)/db");
        let d = parse_mysql_dsn("u@tcp6([::1]:3306)/").unwrap();
        assert_eq!(d.to_string(), "u@tcp([::1]:3306)/");
    }

    #[test]
    fn mysql_opts() {
        let o = parse_mysql_dsn("u:p@unix(/run/mysqld/mysqld.sock)/d")
            .unwrap()
            .opts();
        assert_eq!(o.socket(), Some("/run/mysqld/mysqld.sock"));
        assert_eq!(
            (o.user(), o.pass(), o.db_name()),
            (Some("u"), Some("p"), Some("d"))
        );
        assert!(!o.prefer_socket());
        let o = parse_mysql_dsn("/").unwrap().opts();
        assert_eq!((o.ip_or_hostname(), o.tcp_port()), ("127.0.0.1", 3306));
        assert_eq!((o.socket(), o.user()), (None, None));
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn postgres_dsns() {
        use tokio_postgres::config::Host;
        // (dsn, host, port, user, dbname)
        type Row = (
            &'static str,
            Host,
            Option<u16>,
            &'static str,
            Option<&'static str>,
        );
        let table: &[Row] = &[
            (
                "host=localhost port=5432 user=postgres password=x sslmode=disable",
                Host::Tcp("localhost".into()),
                Some(5432),
                "postgres",
                None,
            ),
            (
                "host=/var/run/postgresql user=postgres dbname=app",
                Host::Unix("/var/run/postgresql".into()),
                None,
                "postgres",
                Some("app"),
            ),
            (
                "postgres://zrepl:pw@db.example:5433/app?sslmode=disable",
                Host::Tcp("db.example".into()),
                Some(5433),
                "zrepl",
                Some("app"),
            ),
            (
                "postgresql://%2Frun%2Fpostgresql/app",
                Host::Unix("/run/postgresql".into()),
                Some(5432),
                "daemonuser",
                Some("app"),
            ),
            // lib/pq's defaults: localhost, the daemon's user.
            (
                "dbname=x",
                Host::Tcp("localhost".into()),
                None,
                "daemonuser",
                Some("x"),
            ),
            ("", Host::Tcp("localhost".into()), None, "daemonuser", None),
        ];
        for (dsn, host, port, user, db) in table {
            let c = postgres_config(dsn, &no_env, Some("daemonuser"))
                .unwrap_or_else(|e| panic!("{dsn}: {e}"));
            assert_eq!(c.get_hosts(), std::slice::from_ref(host), "{dsn}");
            assert_eq!(c.get_ports().first().copied(), *port, "{dsn}");
            assert_eq!(c.get_user(), Some(*user), "{dsn}");
            assert_eq!(c.get_dbname(), *db, "{dsn}");
        }
    }

    #[test]
    fn postgres_env_defaults() {
        let env = |k: &str| {
            Some(
                match k {
                    "PGHOST" => "/tmp",
                    "PGPORT" => "6000",
                    "PGUSER" => "envuser",
                    "PGPASSWORD" => "envpw",
                    "PGDATABASE" => "envdb",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let c = postgres_config("sslmode=disable", &env, Some("os")).unwrap();
        assert_eq!(
            c.get_hosts(),
            [tokio_postgres::config::Host::Unix("/tmp".into())]
        );
        assert_eq!(c.get_ports(), [6000]);
        assert_eq!(c.get_user(), Some("envuser"));
        assert_eq!(c.get_password(), Some(&b"envpw"[..]));
        assert_eq!(c.get_dbname(), Some("envdb"));
        // The DSN wins over the environment.
        let c = postgres_config("host=h user=u dbname=d port=1", &env, None).unwrap();
        assert_eq!(
            (c.get_user(), c.get_dbname(), c.get_ports()),
            (Some("u"), Some("d"), &[1u16][..])
        );
    }

    #[test]
    fn postgres_dsn_errors() {
        // (dsn, part of the error)
        let table = [
            ("host=h user=u sslmode=require", "without TLS"),
            ("host=h user=u sslmode=verify-full", "without TLS"),
            ("host=h user=u bogus=1", "bogus"),
            ("host='unterminated", "invalid postgres dsn"),
            ("mysql://x/", "invalid postgres dsn"),
        ];
        for (dsn, want) in table {
            match postgres_config(dsn, &no_env, Some("os")) {
                Ok(c) => panic!("{dsn}: accepted as {c:?}"),
                Err(e) => assert!(e.contains(want), "{dsn}: {e}"),
            }
        }
        assert!(postgres_config("host=h", &no_env, None)
            .unwrap_err()
            .contains("no user"));
    }

    #[test]
    fn world_writable_socket_directories_are_unsafe() {
        assert!(unsafe_socket_dir("/run/mysqld", 0o755).is_none());
        assert!(unsafe_socket_dir("/var/lib/mysql", 0o750).is_none());
        let e = unsafe_socket_dir("/tmp", 0o1777).unwrap();
        assert!(e.contains("/tmp is writable by every user"), "{e}");
        assert!(unsafe_socket_dir("/srv/x", 0o777).is_some());
        let d = parse_mysql_dsn("u@unix/").unwrap();
        assert_eq!(d.socket_path(), Some("/tmp/mysql.sock"));
        let d = parse_mysql_dsn("u@tcp(db:3306)/").unwrap();
        assert_eq!(d.socket_path(), None);
    }
}
