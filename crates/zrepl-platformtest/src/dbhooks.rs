//! Database snapshot hooks against real servers from Debian's packages (postgresql-15 and
//! mariadb-server in the test VM): each test creates a fresh server whose data directory is a
//! dataset of the test pool, runs `zrepl daemon` with a snap job whose hooks point at it, checks
//! on the server what the hook did, and stops the server again (also when the test fails).
//!
//! Nothing is skipped: a missing server binary fails the test.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pool::sh;
use crate::replication::spawn_daemon;
use crate::{Ctx, TestResult};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)).into());
        }
    };
}

/// The newest PostgreSQL server installed (Debian: `/usr/lib/postgresql/<major>/bin`; 15 on
/// bookworm, 17 on trixie).
fn pg_bin() -> Result<String, String> {
    let majors = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL server in /usr/lib/postgresql: {e}"))?;
    let newest = majors
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .ok_or("no PostgreSQL server in /usr/lib/postgresql")?;
    Ok(format!("/usr/lib/postgresql/{newest}/bin"))
}

/// Runs `argv` as the postgres user, from `/` (postgres cannot read the test's working
/// directory, and initdb/pg_ctl refuse to run where they cannot).
fn as_postgres(argv: &[&str]) -> Result<String, String> {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(argv)
        .current_dir("/")
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run {argv:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{argv:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Creates `<pool>/<rel>` and returns its mountpoint.
fn dataset(t: &Ctx, rel: &str) -> Result<String, String> {
    let name = format!("{}/{rel}", t.pool);
    sh(&["zfs", "create", "-p", &name])?;
    Ok(
        sh(&["zfs", "get", "-H", "-o", "value", "mountpoint", &name])?
            .trim()
            .to_string(),
    )
}

fn exists(name: &str) -> bool {
    sh(&["zfs", "list", "-H", "-o", "name", name]).is_ok()
}

/// Writes an executable shell script.
fn script(path: &str, body: &str) -> Result<(), std::io::Error> {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// A snap job `dbsnap` over `<pool>/db<` with `hooks` (YAML flow mappings, one per line).
fn write_config(
    dir: &str,
    pool: &str,
    prefix: &str,
    hooks: &[String],
) -> Result<String, std::io::Error> {
    let cfg = format!("{dir}/zrepl.yml");
    let hooks: String = hooks.iter().map(|h| format!("    - {h}\n")).collect();
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control:\n    sockpath: {dir}/run/control\n  logging:\n    - {{type: stdout, level: debug, format: human}}\n\
             jobs:\n- type: snap\n  name: dbsnap\n  filesystems: {{\"{pool}/db<\": true, \"{pool}/db\": false}}\n\
             \x20 snapshotting:\n    type: periodic\n    prefix: {prefix}\n    interval: 1h\n    hooks:\n{hooks}\
             \x20 pruning: {{keep: [{{type: last_n, count: 10}}]}}\n"
        ),
    )?;
    Ok(cfg)
}

/// The daemon's first snapshot round (it runs at startup: no snapshots yet).
struct Round {
    name: String,
    filesystems: Vec<String>,
    error: String,
    log: String,
}

/// Starts the daemon on `cfg`, waits for its first round, stops it.
fn first_round(cfg: &str, dir: &str, limit: Duration) -> Result<Round, String> {
    let log_path = format!("{dir}/daemon.log");
    let mut d = spawn_daemon(cfg, &log_path)?;
    let deadline = Instant::now() + limit;
    let res = loop {
        let st: serde_json::Value = serde_json::from_str(
            &sh(&["zrepl", "--config", cfg, "status", "--mode", "raw"])
                .unwrap_or_else(|_| "{}".into()),
        )
        .unwrap_or_default();
        let round = &st["jobs"]["dbsnap"]["snapshotting"]["last_round"];
        if round.is_object() {
            break Ok(Round {
                name: round["snapshot_name"].as_str().unwrap_or("").to_string(),
                filesystems: round["filesystems"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                error: round["error"].as_str().unwrap_or("").to_string(),
                log: String::new(),
            });
        }
        if Instant::now() > deadline {
            break Err(format!("no snapshot round within {limit:?}: {st:#}"));
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = d.kill();
    let _ = d.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    match res {
        Ok(r) => Ok(Round { log, ..r }),
        Err(e) => Err(format!("{e}\ndaemon log:\n{log}")),
    }
}

/// A PostgreSQL 15 server on a data directory in the test pool, unix socket only; stopped on
/// drop.
struct Postgres {
    /// The server's programs (see [`pg_bin`]).
    bin: String,
    data: String,
    sockdir: String,
    port: &'static str,
}

impl Postgres {
    fn start(t: &Ctx) -> Result<Postgres, String> {
        let mnt = dataset(t, "db/pg")?;
        sh(&["chown", "postgres:postgres", &mnt])?;
        let data = format!("{mnt}/data");
        let sockdir = format!("/tmp/{}-pg", t.pool);
        std::fs::create_dir_all(&sockdir).map_err(|e| e.to_string())?;
        sh(&["chown", "postgres:postgres", &sockdir])?;
        let bin = pg_bin()?;
        as_postgres(&[
            &format!("{bin}/initdb"),
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ])?;
        let pg = Postgres {
            bin,
            data,
            sockdir,
            port: "5433",
        };
        let opts = format!(
            "-k {} -p {} -c listen_addresses='' -c shared_buffers=16MB",
            pg.sockdir, pg.port
        );
        as_postgres(&[
            &format!("{}/pg_ctl", pg.bin),
            "-D",
            &pg.data,
            "-o",
            &opts,
            "-l",
            &format!("{}/server.log", pg.sockdir),
            "-w",
            "-t",
            "120",
            "start",
        ])
        .map_err(|e| {
            format!(
                "{e}\nserver log:\n{}",
                std::fs::read_to_string(format!("{}/server.log", pg.sockdir)).unwrap_or_default()
            )
        })?;
        Ok(pg)
    }

    /// Checkpoints requested (by `CHECKPOINT` among others) since the server started; the
    /// counter moved to `pg_stat_checkpointer` in PostgreSQL 17.
    fn checkpoints_requested(&self) -> Result<u64, String> {
        let version: u32 = self
            .query("SHOW server_version_num")?
            .parse()
            .map_err(|e| format!("server_version_num: {e}"))?;
        let sql = if version >= 170000 {
            "SELECT num_requested FROM pg_stat_checkpointer"
        } else {
            "SELECT checkpoints_req FROM pg_stat_bgwriter"
        };
        let n = self.query(sql)?;
        n.parse().map_err(|e| format!("{sql}: {n:?}: {e}"))
    }

    fn query(&self, sql: &str) -> Result<String, String> {
        Ok(sh(&[
            "psql",
            "-h",
            &self.sockdir,
            "-p",
            self.port,
            "-U",
            "postgres",
            "-At",
            "-c",
            sql,
        ])?
        .trim()
        .to_string())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = as_postgres(&[
            &format!("{}/pg_ctl", self.bin),
            "-D",
            &self.data,
            "-m",
            "fast",
            "-w",
            "stop",
        ]) {
            eprintln!("WARNING: stopping postgres: {e}");
        }
    }
}

/// postgres-checkpoint: the hook runs CHECKPOINT on the server before the snapshot (the
/// snapshot's pg_control names the checkpoint the hook requested), and a fatal hook with an
/// unreachable DSN prevents its filesystem's snapshot.
pub async fn dbhooks_postgres_checkpoint(t: Ctx) -> TestResult {
    let pool = t.pool.clone();
    let dir = format!("/tmp/{pool}-dbhooks");
    std::fs::create_dir_all(&dir)?;
    let pg = Postgres::start(&t)?;
    dataset(&t, "db/down")?;
    dataset(&t, "db/plain")?;
    pg.query("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10000)")?;
    let req_before = pg.checkpoints_requested()?;
    let lsn_before = pg.query("SELECT checkpoint_lsn FROM pg_control_checkpoint()")?;
    let cfg = write_config(
        &dir,
        &pool,
        "zrepl_",
        &[
            format!(
                "{{type: postgres-checkpoint, dsn: \"host={} port={} user=postgres sslmode=disable\", timeout: 60s, err_is_fatal: true, filesystems: {{\"{pool}/db/pg\": true}}}}",
                pg.sockdir, pg.port
            ),
            format!(
                "{{type: postgres-checkpoint, dsn: \"host=/tmp/{pool}-nowhere port=5433 user=postgres\", timeout: 5s, err_is_fatal: true, filesystems: {{\"{pool}/db/down\": true}}}}"
            ),
        ],
    )?;
    let round = first_round(&cfg, &dir, Duration::from_secs(120))?;
    let ctx = format!(
        "round {:?} error {:?}\ndaemon log:\n{}",
        round.filesystems, round.error, round.log
    );
    let (fs_pg, fs_down, fs_plain) = (
        format!("{pool}/db/pg"),
        format!("{pool}/db/down"),
        format!("{pool}/db/plain"),
    );
    ensure!(
        round.filesystems.contains(&fs_pg) && round.filesystems.contains(&fs_plain),
        "{ctx}"
    );
    ensure!(exists(&format!("{fs_pg}@{}", round.name)), "{ctx}");
    // The server performed a requested checkpoint ...
    let req_after = pg.checkpoints_requested()?;
    let lsn_after = pg.query("SELECT checkpoint_lsn FROM pg_control_checkpoint()")?;
    ensure!(
        req_after > req_before && lsn_after != lsn_before,
        "no CHECKPOINT on the server: checkpoints_req {req_before} -> {req_after}, checkpoint_lsn {lsn_before} -> {lsn_after}\n{ctx}"
    );
    // ... before the snapshot: the snapshot's control file already names that checkpoint.
    let snap_data = format!(
        "{}/.zfs/snapshot/{}/data",
        sh(&["zfs", "get", "-H", "-o", "value", "mountpoint", &fs_pg])?.trim(),
        round.name
    );
    let control = sh(&[&format!("{}/pg_controldata", pg.bin), &snap_data])?;
    let snap_lsn = control
        .lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
        .map(str::trim)
        .ok_or_else(|| format!("no checkpoint location in pg_controldata output:\n{control}"))?;
    ensure!(
        snap_lsn == lsn_after,
        "the snapshot's checkpoint {snap_lsn} is not the hook's {lsn_after}\n{ctx}"
    );
    // err_is_fatal with an unreachable server: no snapshot, the error is in the status.
    ensure!(
        !round.filesystems.contains(&fs_down) && !exists(&format!("{fs_down}@{}", round.name)),
        "{ctx}"
    );
    ensure!(
        round
            .error
            .contains(&format!("{fs_down}: postgres-checkpoint"))
            && round.error.contains("cannot connect"),
        "{ctx}"
    );
    ensure!(!round.error.contains(&format!("{fs_pg}:")), "{ctx}");
    drop(pg);
    Ok(())
}

/// A MariaDB server on a data directory in the test pool, unix socket only; stopped on drop.
struct Mariadb {
    child: Child,
    socket: String,
    dir: String,
}

impl Mariadb {
    fn start(t: &Ctx) -> Result<Mariadb, String> {
        let mnt = dataset(t, "db/mysql")?;
        let data = format!("{mnt}/data");
        let dir = format!("/tmp/{}-mysql", t.pool);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        sh(&["chown", "mysql:mysql", &mnt, &dir])?;
        let socket = format!("{dir}/mysqld.sock");
        let cnf = format!("{dir}/my.cnf");
        std::fs::write(
            &cnf,
            format!(
                "[mysqld]\nuser=mysql\ndatadir={data}\nsocket={socket}\npid-file={dir}/mysqld.pid\n\
                 log-error={dir}/error.log\nskip-networking\ninnodb_log_file_size=8M\n\
                 innodb_buffer_pool_size=32M\ninnodb_use_native_aio=0\ninnodb_flush_method=fsync\n\
                 performance_schema=OFF\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        sh(&[
            "mariadb-install-db",
            &format!("--defaults-file={cnf}"),
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ])?;
        let child = Command::new("mariadbd")
            .arg(format!("--defaults-file={cnf}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mariadbd: {e}"))?;
        let mut db = Mariadb { child, socket, dir };
        let deadline = Instant::now() + Duration::from_secs(120);
        while sh(&["mariadb-admin", "-S", &db.socket, "-u", "root", "ping"]).is_err() {
            if let Ok(Some(st)) = db.child.try_wait() {
                return Err(format!("mariadbd exited with {st}:\n{}", db.error_log()));
            }
            if Instant::now() > deadline {
                return Err(format!("mariadbd did not answer:\n{}", db.error_log()));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(db)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(format!("{}/error.log", self.dir)).unwrap_or_default()
    }

    /// Runs `sql` as root over the socket; Err carries the client's error text.
    fn query(&self, sql: &str) -> Result<String, String> {
        Ok(sh(&[
            "mariadb",
            "-S",
            &self.socket,
            "-u",
            "root",
            "-N",
            "-B",
            "-e",
            sql,
        ])?
        .trim()
        .to_string())
    }

    /// The number of connections of the hook's user (the lock connection).
    fn hook_connections(&self) -> Result<u32, String> {
        self.query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'zrepl_lock'")?
            .parse()
            .map_err(|e| format!("{e}"))
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = sh(&[
            "mariadb-admin",
            "-S",
            &self.socket,
            "-u",
            "root",
            "shutdown",
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("WARNING: mariadbd did not stop; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// mysql-lock-tables: tables are read-locked while the snapshot is taken (a command hook that
/// runs after the lock hook, in config order, cannot INSERT in its pre and post edges), and the
/// lock and its connection are gone after the round. A fatal hook with an unreachable DSN
/// prevents its filesystem's snapshot. A lock request that cannot be granted within the hook's
/// timeout fails the hook in time and does not go on blocking writers.
pub async fn dbhooks_mysql_lock_tables(t: Ctx) -> TestResult {
    let pool = t.pool.clone();
    let dir = format!("/tmp/{pool}-dbhooks");
    std::fs::create_dir_all(&dir)?;
    let db = Mariadb::start(&t)?;
    dataset(&t, "db/down")?;
    db.query(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT) ENGINE=InnoDB; \
         CREATE TABLE shop.u (id INT) ENGINE=InnoDB; \
         INSERT INTO shop.t VALUES (1); \
         CREATE USER zrepl_lock@localhost IDENTIFIED BY 'lockpw'; \
         GRANT RELOAD ON *.* TO zrepl_lock@localhost",
    )?;
    let probe_log = format!("{dir}/probe.log");
    let probe = format!("{dir}/probe.sh");
    script(
        &probe,
        &format!(
            "out=$(mariadb -S {sock} -u root -N -B -e 'SET SESSION lock_wait_timeout=1; INSERT INTO shop.t VALUES (2)' 2>&1)\n\
             rc=$?\n\
             conns=$(mariadb -S {sock} -u root -N -B -e \"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER='zrepl_lock'\")\n\
             last=$(printf '%s\\n' \"$out\" | tail -n 1)\n\
             echo \"$ZREPL_HOOKTYPE rc=$rc conns=$conns $last\" >> {probe_log}",
            sock = db.socket
        ),
    )?;
    let lock_hook = |timeout: &str| {
        format!(
            "{{type: mysql-lock-tables, dsn: \"zrepl_lock:lockpw@unix({})/\", timeout: {timeout}, err_is_fatal: true, filesystems: {{\"{pool}/db/mysql\": true}}}}",
            db.socket
        )
    };
    let cfg = write_config(
        &dir,
        &pool,
        "zrepl_",
        &[
            lock_hook("30s"),
            format!(
                "{{type: command, path: {probe}, timeout: 30s, filesystems: {{\"{pool}/db/mysql\": true}}}}"
            ),
            format!(
                "{{type: mysql-lock-tables, dsn: \"zrepl_lock:lockpw@unix(/tmp/{pool}-mysql/nowhere.sock)/\", timeout: 5s, err_is_fatal: true, filesystems: {{\"{pool}/db/down\": true}}}}"
            ),
        ],
    )?;
    let round = first_round(&cfg, &dir, Duration::from_secs(120))?;
    let probes = std::fs::read_to_string(&probe_log).unwrap_or_default();
    let ctx = format!(
        "round {:?} error {:?}\nprobe log:\n{probes}\ndaemon log:\n{}",
        round.filesystems, round.error, round.log
    );
    let (fs_my, fs_down) = (format!("{pool}/db/mysql"), format!("{pool}/db/down"));
    ensure!(round.filesystems.contains(&fs_my), "{ctx}");
    ensure!(exists(&format!("{fs_my}@{}", round.name)), "{ctx}");
    // Before and after the snapshot, writes were refused: the global read lock was held by the
    // hook's connection across the snapshot.
    let lines: Vec<&str> = probes.lines().collect();
    ensure!(lines.len() == 2, "{ctx}");
    ensure!(
        lines[0].starts_with("pre_snapshot rc=1 conns=1 ")
            && lines[1].starts_with("post_snapshot rc=1 conns=1 "),
        "{ctx}"
    );
    ensure!(
        lines
            .iter()
            .all(|l| l.contains("Lock wait timeout exceeded")),
        "{ctx}"
    );
    // After the round the lock is released and its connection closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.hook_connections()? != 0 {
        ensure!(
            Instant::now() < deadline,
            "the lock connection is still open\n{ctx}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    db.query("SET SESSION lock_wait_timeout=5; INSERT INTO shop.t VALUES (3)")
        .map_err(|e| format!("writes still blocked after the round: {e}\n{ctx}"))?;
    ensure!(
        !round.filesystems.contains(&fs_down) && !exists(&format!("{fs_down}@{}", round.name)),
        "{ctx}"
    );
    ensure!(
        round
            .error
            .contains(&format!("{fs_down}: mysql-lock-tables"))
            && round.error.contains("cannot connect")
            && !round.error.contains("lockpw"),
        "{ctx}"
    );
    ensure!(!round.error.contains(&format!("{fs_my}:")), "{ctx}");

    // Timeout: a long-running UPDATE keeps FLUSH TABLES WITH READ LOCK waiting. The hook gives
    // up after its 3 s, no snapshot is taken, and the abandoned lock request does not keep
    // blocking writers (of another table) while the UPDATE still runs.
    let long_sql = "UPDATE shop.t SET id = id + SLEEP(60) WHERE id = 1 LIMIT 1";
    let mut long = Command::new("mariadb")
        .args(["-S", &db.socket, "-u", "root", "-e", long_sql])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let long_id = || {
        db.query(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = '{long_sql}'"
        ))
    };
    let res: TestResult = (|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while long_id()?.is_empty() {
            ensure!(Instant::now() < deadline, "the long query did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        let dir2 = format!("{dir}/timeout");
        std::fs::create_dir_all(&dir2)?;
        let cfg = write_config(&dir2, &pool, "zrepltimeout_", &[lock_hook("3s")])?;
        let started = Instant::now();
        let round = first_round(&cfg, &dir2, Duration::from_secs(60))?;
        let took = started.elapsed();
        let ctx = format!(
            "round {:?} error {:?} after {took:?}\ndaemon log:\n{}",
            round.filesystems, round.error, round.log
        );
        let ctx = format!(
            "{ctx}\nsnapshots:\n{}",
            sh(&[
                "zfs",
                "list",
                "-t",
                "snapshot",
                "-r",
                "-o",
                "name,creation",
                &pool
            ])
            .unwrap_or_default()
        );
        ensure!(!round.name.is_empty(), "{ctx}");
        ensure!(
            !round.filesystems.contains(&fs_my) && !exists(&format!("{fs_my}@{}", round.name)),
            "{ctx}"
        );
        ensure!(
            round.error.contains(&format!("{fs_my}: mysql-lock-tables"))
                && (round.error.contains("timed out") || round.error.contains("Lock wait timeout")),
            "{ctx}"
        );
        ensure!(took < Duration::from_secs(30), "{ctx}");
        // Our deadline comes before the server's lock_wait_timeout: the client gave up and
        // killed the waiting request.
        if round.error.contains("timed out") {
            ensure!(round.log.contains("killed the lock connection"), "{ctx}");
        }
        eprintln!("  timed-out lock hook after {took:?}: {}", round.error);
        ensure!(
            long.try_wait()?.is_none() && !long_id()?.is_empty(),
            "the long query ended early\n{ctx}"
        );
        db.query("SET SESSION lock_wait_timeout=5; INSERT INTO shop.u VALUES (4)")
            .map_err(|e| format!("the timed-out lock request still blocks writers: {e}\n{ctx}"))?;
        ensure!(db.hook_connections()? == 0, "lock connection left\n{ctx}");
        Ok(())
    })();
    if let Ok(id) = long_id() {
        if !id.is_empty() {
            let _ = db.query(&format!("KILL {id}"));
        }
    }
    let _ = long.kill();
    let _ = long.wait();
    res?;
    drop(db);
    Ok(())
}
