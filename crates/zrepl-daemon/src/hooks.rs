//! Snapshot hooks (spec §2.7): `command`, `postgres-checkpoint` and `mysql-lock-tables`.
//!
//! Per filesystem the hooks whose filter matches form a plan: pre edges in config order, the
//! snapshot, post edges in reverse order, each only for a hook whose pre edge succeeded. A failed
//! pre edge of a hook with `err_is_fatal` stops the remaining pre edges and prevents the
//! snapshot; every hook error marks the filesystem as failed. What a pre edge holds (the
//! mysql connection with its global read lock) is handed to its post edge, which releases it
//! whether or not the snapshot succeeded.
//!
//! Unlike zrepl 0.7, the database hooks honour `timeout`: connecting and every statement
//! together must finish within it. A `FLUSH TABLES WITH READ LOCK` that has not finished by then
//! is killed on the server from a second connection, so a waiting lock request does not go on
//! blocking writers after the hook gave up.

pub mod dsn;

use std::future::Future;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use zrepl_filters::DatasetFilter;
use zrepl_zfs::DatasetPath;

pub use dsn::{MysqlAddr, MysqlDsn};

/// A configured snapshot hook.
#[derive(Debug, Clone)]
pub enum Hook {
    Command(CommandHook),
    PostgresCheckpoint(PostgresHook),
    MysqlLockTables(MysqlHook),
}

/// A `command` hook: run before (`pre_snapshot`) and after (`post_snapshot`) the snapshot of
/// every filesystem its filter matches.
#[derive(Debug, Clone)]
pub struct CommandHook {
    pub path: String,
    pub timeout: Duration,
    pub err_is_fatal: bool,
    pub filter: DatasetFilter,
}

/// `postgres-checkpoint`: `CHECKPOINT` before the snapshot, so the snapshot holds a recent
/// checkpoint and crash recovery from it replays little WAL. Needs a superuser (or the
/// `pg_checkpoint` role).
#[derive(Debug, Clone)]
pub struct PostgresHook {
    pub config: tokio_postgres::Config,
    pub timeout: Duration,
    pub err_is_fatal: bool,
    pub filter: DatasetFilter,
}

/// `mysql-lock-tables`: `FLUSH TABLES WITH READ LOCK` before the snapshot, `UNLOCK TABLES` after
/// it, on one connection held across the snapshot. Needs the `RELOAD` privilege.
#[derive(Debug, Clone)]
pub struct MysqlHook {
    pub dsn: MysqlDsn,
    pub timeout: Duration,
    pub err_is_fatal: bool,
    pub filter: DatasetFilter,
}

impl Hook {
    /// Builds a `postgres-checkpoint` hook; the DSN is checked now (lib/pq defaults from the
    /// daemon's environment).
    pub fn postgres(
        dsn: &str,
        timeout: Duration,
        err_is_fatal: bool,
        filter: DatasetFilter,
    ) -> Result<Hook, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut config = dsn::postgres_config(dsn, &env, daemon_user().as_deref())?;
        if config.get_connect_timeout().is_none_or(|t| *t > timeout) {
            config.connect_timeout(timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("zrepl");
        }
        Ok(Hook::PostgresCheckpoint(PostgresHook {
            config,
            timeout,
            err_is_fatal,
            filter,
        }))
    }

    /// Builds a `mysql-lock-tables` hook; the DSN is checked now.
    pub fn mysql(
        dsn: &str,
        timeout: Duration,
        err_is_fatal: bool,
        filter: DatasetFilter,
    ) -> Result<Hook, String> {
        Ok(Hook::MysqlLockTables(MysqlHook {
            dsn: dsn::parse_mysql_dsn(dsn)?,
            timeout,
            err_is_fatal,
            filter,
        }))
    }

    pub fn filter(&self) -> &DatasetFilter {
        match self {
            Hook::Command(h) => &h.filter,
            Hook::PostgresCheckpoint(h) => &h.filter,
            Hook::MysqlLockTables(h) => &h.filter,
        }
    }

    /// Names the hook in logs and errors (never with a password).
    pub fn name(&self) -> String {
        match self {
            Hook::Command(h) => h.path.clone(),
            Hook::PostgresCheckpoint(h) => {
                let c = &h.config;
                let hosts: Vec<String> = c
                    .get_hosts()
                    .iter()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(s) => s.clone(),
                        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                    })
                    .collect();
                let mut s = format!("postgres-checkpoint host={}", hosts.join(","));
                if let Some(p) = c.get_ports().first() {
                    s += &format!(" port={p}");
                }
                if let Some(u) = c.get_user() {
                    s += &format!(" user={u}");
                }
                if let Some(d) = c.get_dbname() {
                    s += &format!(" dbname={d}");
                }
                s
            }
            Hook::MysqlLockTables(h) => format!("mysql-lock-tables {}", h.dsn),
        }
    }
}

/// The daemon's user name, lib/pq's default user: `$USER`, else the owner of this process
/// looked up in /etc/passwd.
fn daemon_user() -> Option<String> {
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return Some(u);
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
    })
}

/// What a pre edge leaves for its post edge.
pub enum Held {
    Nothing,
    /// The connection holding the global read lock.
    Mysql(MysqlLock),
}

pub struct MysqlLock {
    conn: mysql_async::Conn,
}

/// One hook as the plan sees it.
pub(crate) trait Edge {
    type Held: Send;
    fn err_is_fatal(&self) -> bool;
    fn name(&self) -> String;
    fn pre(
        &self,
        fs: &DatasetPath,
        snapname: &str,
    ) -> impl Future<Output = Result<Self::Held, String>> + Send;
    fn post(
        &self,
        held: Self::Held,
        fs: &DatasetPath,
        snapname: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

impl Edge for Hook {
    type Held = Held;

    fn err_is_fatal(&self) -> bool {
        match self {
            Hook::Command(h) => h.err_is_fatal,
            Hook::PostgresCheckpoint(h) => h.err_is_fatal,
            Hook::MysqlLockTables(h) => h.err_is_fatal,
        }
    }

    fn name(&self) -> String {
        Hook::name(self)
    }

    async fn pre(&self, fs: &DatasetPath, snapname: &str) -> Result<Held, String> {
        match self {
            Hook::Command(h) => h
                .run("pre_snapshot", fs, snapname)
                .await
                .map(|()| Held::Nothing),
            Hook::PostgresCheckpoint(h) => h
                .checkpoint()
                .await
                .map(|()| Held::Nothing)
                .map_err(|e| format!("{} pre_snapshot for {fs}: {e}", self.name())),
            Hook::MysqlLockTables(h) => h
                .lock()
                .await
                .map(Held::Mysql)
                .map_err(|e| format!("{} pre_snapshot for {fs}: {e}", self.name())),
        }
    }

    async fn post(&self, held: Held, fs: &DatasetPath, snapname: &str) -> Result<(), String> {
        match (self, held) {
            (Hook::Command(h), _) => h.run("post_snapshot", fs, snapname).await,
            (Hook::MysqlLockTables(h), Held::Mysql(lock)) => h
                .unlock(lock)
                .await
                .map_err(|e| format!("{} post_snapshot for {fs}: {e}", self.name())),
            // postgres-checkpoint has no post edge.
            _ => Ok(()),
        }
    }
}

/// The result of one filesystem's plan.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PlanOutcome {
    pub snapshotted: bool,
    /// Every problem, each prefixed with the filesystem.
    pub errors: Vec<String>,
}

/// Runs one filesystem's plan: pre edges in order, `snapshot` (not polled when a fatal pre edge
/// failed), post edges in reverse order for the hooks whose pre edge succeeded.
pub(crate) async fn run_plan<E: Edge + Sync>(
    hooks: &[&E],
    fs: &DatasetPath,
    snapname: &str,
    snapshot: impl Future<Output = Result<(), String>>,
) -> PlanOutcome {
    let mut held: Vec<(&E, E::Held)> = Vec::new();
    let mut errors = Vec::new();
    let mut fatal = false;
    for h in hooks {
        match h.pre(fs, snapname).await {
            Ok(s) => held.push((h, s)),
            Err(e) => {
                tracing::warn!(hook = %h.name(), fs = %fs, error = %e, "pre-snapshot hook failed");
                errors.push(format!("{fs}: {e}"));
                if h.err_is_fatal() {
                    fatal = true;
                    break;
                }
            }
        }
    }
    let snapshotted = if fatal {
        errors.push(format!(
            "{fs}: snapshot skipped because a pre-snapshot hook with err_is_fatal failed"
        ));
        false
    } else {
        match snapshot.await {
            Ok(()) => true,
            Err(e) => {
                errors.push(format!("{fs}: {e}"));
                false
            }
        }
    };
    while let Some((h, s)) = held.pop() {
        if let Err(e) = h.post(s, fs, snapname).await {
            tracing::warn!(hook = %h.name(), fs = %fs, error = %e, "post-snapshot hook failed");
            errors.push(format!("{fs}: {e}"));
        }
    }
    PlanOutcome {
        snapshotted,
        errors,
    }
}

/// At most this much hook output is kept (zrepl's `ZREPL_MAX_HOOK_LOG_SIZE`).
const MAX_HOOK_OUTPUT: usize = 1 << 20;

impl CommandHook {
    /// Runs the hook directly (no shell) with zrepl's environment; output is logged.
    async fn run(&self, hook_type: &str, fs: &DatasetPath, snapname: &str) -> Result<(), String> {
        let (fs_s, timeout_s) = (fs.to_string(), self.timeout.as_secs().to_string());
        let mut cmd = crate::hook_process::command(
            &self.path,
            &[],
            [
                ("ZREPL_HOOKTYPE", hook_type),
                ("ZREPL_FS", fs_s.as_str()),
                ("ZREPL_SNAPNAME", snapname),
                ("ZREPL_DRYRUN", ""),
                ("ZREPL_TIMEOUT", timeout_s.as_str()),
            ],
        );
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run hook {}: {e}", self.path))?;
        // A timeout or a cancelled caller ends the hook and everything it started (its
        // process group); a hook that finished may leave background processes.
        let group = crate::hook_process::GroupGuard::new(&child);
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(o)) => {
                group.disarm();
                o
            }
            Ok(Err(e)) => return Err(format!("hook {}: {e}", self.path)),
            Err(_) => {
                return Err(format!(
                    "timed out after {:?}: hook {} {hook_type} for {fs}",
                    self.timeout, self.path
                ));
            }
        };
        let text =
            |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(MAX_HOOK_OUTPUT)]).into_owned();
        for line in text(&out.stdout).lines() {
            tracing::info!(hook = %self.path, fs = %fs, stdout = line, "hook output");
        }
        for line in text(&out.stderr).lines() {
            tracing::warn!(hook = %self.path, fs = %fs, stderr = line, "hook output");
        }
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "hook {} {hook_type} for {fs} failed: {}",
                self.path, out.status
            ))
        }
    }
}

/// Aborts a spawned task when dropped (the postgres connection driver).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.to_string(),
        None => e.to_string(),
    }
}

/// mysql_async wraps I/O errors twice, each layer saying "Input/output error".
fn my_error(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => format!("I/O error: {io}"),
        mysql_async::Error::Server(s) => s.to_string(),
        e => e.to_string(),
    }
}

fn timed_out(t: Duration, what: &str) -> String {
    format!("timed out after {t:?} {what}")
}

impl PostgresHook {
    /// Connects, bounds the statement by the time left (`statement_timeout`, as zrepl does),
    /// and runs `CHECKPOINT`; all within `timeout`.
    async fn checkpoint(&self) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let work = async {
            let (client, connection) = self
                .config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("cannot connect: {}", pg_error(&e)))?;
            let _driver = AbortOnDrop(tokio::spawn(connection).abort_handle());
            let ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .max(1);
            client
                .batch_execute(&format!("SET statement_timeout TO {ms}"))
                .await
                .map_err(|e| format!("SET statement_timeout: {}", pg_error(&e)))?;
            client
                .batch_execute("CHECKPOINT")
                .await
                .map_err(|e| format!("CHECKPOINT: {}", pg_error(&e)))?;
            tracing::debug!(hook = %Hook::PostgresCheckpoint(self.clone()).name(), "checkpoint done");
            Ok(())
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| timed_out(self.timeout, "(connect and CHECKPOINT)"))?
    }
}

/// How long killing a stuck lock request from a second connection may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

impl MysqlHook {
    async fn connect(&self, limit: Duration) -> Result<mysql_async::Conn, String> {
        if let Some(sock) = self.dsn.socket_path() {
            use std::os::unix::fs::PermissionsExt;
            let dir = std::path::Path::new(sock)
                .parent()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".into());
            let mode = std::fs::metadata(&dir)
                .map(|m| m.permissions().mode())
                .map_err(|e| format!("cannot check the MySQL socket's directory {dir}: {e}"))?;
            if let Some(e) = dsn::unsafe_socket_dir(&dir, mode) {
                return Err(e);
            }
        }
        let limit = self.dsn.connect_timeout.map_or(limit, |c| c.min(limit));
        match tokio::time::timeout(limit, mysql_async::Conn::new(self.dsn.opts())).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("cannot connect: {}", my_error(&e))),
            Err(_) => Err(timed_out(limit, "connecting")),
        }
    }

    /// Connects and takes the global read lock, within `timeout`; the connection is returned
    /// holding the lock. A lock request still waiting at the timeout is killed on the server.
    async fn lock(&self) -> Result<MysqlLock, String> {
        let deadline = Instant::now() + self.timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut conn = self.connect(self.timeout).await?;
        let id = conn.id();
        // The server gives up waiting for the lock by itself at our deadline, too.
        let wait_secs = left().as_secs_f64().ceil().max(1.0) as u64;
        let mut statements = vec![format!("SET SESSION lock_wait_timeout = {wait_secs}")];
        statements.extend(self.dsn.session_statements());
        statements.push("FLUSH TABLES WITH READ LOCK".into());
        let res = tokio::time::timeout(left(), async {
            for s in &statements {
                conn.query_drop(s.as_str())
                    .await
                    .map_err(|e| format!("{s}: {}", my_error(&e)))?;
            }
            Ok::<(), String>(())
        })
        .await;
        match res {
            Ok(Ok(())) => {
                tracing::debug!(hook = %self.dsn, connection = id, "global read lock taken");
                Ok(MysqlLock { conn })
            }
            Ok(Err(e)) => {
                drop(conn);
                Err(e)
            }
            Err(_) => {
                drop(conn);
                self.kill(id).await;
                Err(timed_out(
                    self.timeout,
                    "(connect and FLUSH TABLES WITH READ LOCK)",
                ))
            }
        }
    }

    /// `UNLOCK TABLES` and disconnect. Whatever fails, the lock does not outlive this call: the
    /// connection is closed, and killed on the server if it did not answer.
    async fn unlock(&self, lock: MysqlLock) -> Result<(), String> {
        let mut conn = lock.conn;
        let id = conn.id();
        let res = tokio::time::timeout(self.timeout, async {
            conn.query_drop("UNLOCK TABLES")
                .await
                .map_err(|e| format!("UNLOCK TABLES: {}", my_error(&e)))
        })
        .await;
        match res {
            Ok(Ok(())) => {
                tracing::debug!(hook = %self.dsn, connection = id, "tables unlocked");
                match tokio::time::timeout(self.timeout, conn.disconnect()).await {
                    Ok(Ok(())) => Ok(()),
                    // Unlocked already; a failed goodbye leaves no lock behind.
                    Ok(Err(e)) => {
                        tracing::warn!(hook = %self.dsn, error = %e, "disconnecting");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::warn!(hook = %self.dsn, "disconnecting timed out");
                        Ok(())
                    }
                }
            }
            Ok(Err(e)) => {
                drop(conn);
                self.kill(id).await;
                Err(e)
            }
            Err(_) => {
                drop(conn);
                self.kill(id).await;
                Err(timed_out(self.timeout, "(UNLOCK TABLES)"))
            }
        }
    }

    /// Kills connection `id` on the server from a fresh connection (ends a waiting lock
    /// request, or a lock held by a connection that stopped answering).
    async fn kill(&self, id: u32) {
        let res = tokio::time::timeout(KILL_TIMEOUT, async {
            let mut c = self.connect(KILL_TIMEOUT).await?;
            let r = c
                .query_drop(format!("KILL {id}"))
                .await
                .map_err(|e| my_error(&e));
            let _ = c.disconnect().await;
            r
        })
        .await
        .unwrap_or_else(|_| Err(timed_out(KILL_TIMEOUT, "")));
        match res {
            Ok(()) => {
                tracing::info!(hook = %self.dsn, connection = id, "killed the lock connection")
            }
            // "Unknown thread id": it is gone already.
            Err(e) => {
                tracing::warn!(hook = %self.dsn, connection = id, error = %e, "cannot kill the lock connection")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<String>>>;

    /// A hook that records its edges; its pre edge fails when `fails`.
    struct Fake {
        name: &'static str,
        fails: bool,
        fatal: bool,
        log: Log,
    }

    impl Edge for Fake {
        type Held = String;
        fn err_is_fatal(&self) -> bool {
            self.fatal
        }
        fn name(&self) -> String {
            self.name.into()
        }
        async fn pre(&self, _: &DatasetPath, _: &str) -> Result<String, String> {
            self.log.lock().unwrap().push(format!("pre {}", self.name));
            if self.fails {
                Err(format!("{} failed", self.name))
            } else {
                Ok(format!("held by {}", self.name))
            }
        }
        async fn post(&self, held: String, _: &DatasetPath, _: &str) -> Result<(), String> {
            self.log
                .lock()
                .unwrap()
                .push(format!("post {} ({held})", self.name));
            Ok(())
        }
    }

    #[tokio::test]
    async fn plan_order_and_failures() {
        // (hooks as name:ok|fail|fatal, snapshot succeeds, expected log, snapshotted, errors)
        type Row = (
            &'static [&'static str],
            bool,
            &'static [&'static str],
            bool,
            usize,
        );
        let table: &[Row] = &[
            (
                &["a:ok", "b:ok", "c:ok"],
                true,
                &[
                    "pre a",
                    "pre b",
                    "pre c",
                    "snapshot",
                    "post c (held by c)",
                    "post b (held by b)",
                    "post a (held by a)",
                ],
                true,
                0,
            ),
            // A failed snapshot still releases everything that was taken.
            (
                &["a:ok", "b:ok"],
                false,
                &[
                    "pre a",
                    "pre b",
                    "snapshot",
                    "post b (held by b)",
                    "post a (held by a)",
                ],
                false,
                1,
            ),
            // A non-fatal failure: logged, the snapshot happens, no post edge for that hook.
            (
                &["a:ok", "b:fail", "c:ok"],
                true,
                &[
                    "pre a",
                    "pre b",
                    "pre c",
                    "snapshot",
                    "post c (held by c)",
                    "post a (held by a)",
                ],
                true,
                1,
            ),
            // A fatal failure: later pre edges and the snapshot are skipped; earlier hooks are
            // released.
            (
                &["a:ok", "b:fatal", "c:ok"],
                true,
                &["pre a", "pre b", "post a (held by a)"],
                false,
                2,
            ),
            (&["a:fatal"], true, &["pre a"], false, 2),
            (&[], true, &["snapshot"], true, 0),
        ];
        let fs = DatasetPath::parse("pool/fs").unwrap();
        for (spec, snap_ok, want, want_snapshotted, want_errors) in table {
            let log: Log = Arc::default();
            let hooks: Vec<Fake> = spec
                .iter()
                .map(|s| {
                    let (name, how) = s.split_once(':').unwrap();
                    Fake {
                        name: match name {
                            "a" => "a",
                            "b" => "b",
                            _ => "c",
                        },
                        fails: how != "ok",
                        fatal: how == "fatal",
                        log: log.clone(),
                    }
                })
                .collect();
            let refs: Vec<&Fake> = hooks.iter().collect();
            let snap_log = log.clone();
            let snapshot = async move {
                snap_log.lock().unwrap().push("snapshot".into());
                if *snap_ok {
                    Ok(())
                } else {
                    Err("zfs snapshot failed".into())
                }
            };
            let out = run_plan(&refs, &fs, "zrepl_1", snapshot).await;
            assert_eq!(*log.lock().unwrap(), *want, "{spec:?}");
            assert_eq!(out.snapshotted, *want_snapshotted, "{spec:?}");
            assert_eq!(out.errors.len(), *want_errors, "{spec:?}: {:?}", out.errors);
            assert!(
                out.errors.iter().all(|e| e.starts_with("pool/fs: ")),
                "{:?}",
                out.errors
            );
        }
    }

    #[test]
    fn db_hooks_validate_dsn_when_built() {
        let f = DatasetFilter::new([("<", true)]).unwrap();
        let t = Duration::from_secs(5);
        assert!(Hook::mysql("u@tcp(localhost)", t, true, f.clone()).is_err());
        assert!(Hook::postgres("host=h user=u sslmode=require", t, true, f.clone()).is_err());
        let h = Hook::mysql(
            "u:secret@unix(/run/mysqld/mysqld.sock)/",
            t,
            true,
            f.clone(),
        )
        .unwrap();
        assert_eq!(
            h.name(),
            "mysql-lock-tables u:***@unix(/run/mysqld/mysqld.sock)/"
        );
        let h = Hook::postgres(
            "host=/var/run/postgresql user=postgres password=secret connect_timeout=60",
            t,
            false,
            f,
        )
        .unwrap();
        assert_eq!(
            h.name(),
            "postgres-checkpoint host=/var/run/postgresql user=postgres"
        );
        let Hook::PostgresCheckpoint(p) = &h else {
            unreachable!()
        };
        // The hook's timeout bounds connecting, too.
        assert_eq!(p.config.get_connect_timeout(), Some(&t));
    }
}
