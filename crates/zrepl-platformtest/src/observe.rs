//! Observability end to end: the `zrepl status` TUI in a tmux pane and the Prometheus endpoint,
//! both against a daemon in the middle of a replication.
//!
//! The transfer is slowed down by pausing the test pool's `zfs send` most of the time
//! (SIGSTOP/SIGCONT), so that it is observably in progress for many seconds.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pool::sh;
use crate::replication::{create, snapshot, spawn_daemon, write, RECEIVER_JOB, SENDER_JOB};
use crate::{Ctx, TestResult};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        let ok: bool = $cond;
        if !ok {
            return Err(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)).into());
        }
    };
}

/// Slows the daemon down: it is stopped (SIGSTOP) for 800 ms out of every 840 ms until dropped
/// (each short run moves a few pipes' worth of data: roughly 3 MiB/s in the VM).
/// The local transport copies the stream through the daemon, so `zfs send` and `zfs recv` just
/// wait on their pipes (stopping `zfs send` itself would make it fail with "signal received").
struct Throttle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pid: String,
}

impl Throttle {
    fn start(pid: u32) -> Throttle {
        let pid = pid.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, p) = (stop.clone(), pid.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let _ = sh(&["kill", "-STOP", &p]);
                std::thread::sleep(Duration::from_millis(800));
                let _ = sh(&["kill", "-CONT", &p]);
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        Throttle {
            stop,
            thread: Some(thread),
            pid,
        }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = sh(&["kill", "-CONT", &self.pid]);
    }
}

/// A push job (manual snapshotting) of `<pool>/src/a` and `<pool>/src/b` to a sink, with a
/// prometheus listener; returns (config path, log path, metrics address).
fn setup(t: &Ctx, mib: usize) -> Result<(String, String, String), String> {
    let a = create(t, "src/a")?;
    write(&a, "big", mib)?;
    snapshot(&format!("{a}@1"))?;
    let b = create(t, "src/b")?;
    write(&b, "small", 1)?;
    snapshot(&format!("{b}@1"))?;
    create(t, "sink")?;
    let dir = format!("/tmp/{}-observe", t.pool);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control:\n    sockpath: {dir}/run/control\n  logging:\n    - {{type: stdout, level: info, format: human}}\n  monitoring:\n    - {{type: prometheus, listen: \"{addr}\"}}\n\
             jobs:\n\
             - type: sink\n  name: {RECEIVER_JOB}\n  root_fs: {pool}/sink\n  serve: {{type: local, listener_name: l}}\n  recv: {{placeholder: {{encryption: inherit}}}}\n\
             - type: push\n  name: {SENDER_JOB}\n  connect: {{type: local, listener_name: l, client_identity: client}}\n  filesystems: {{\"{pool}/src/a\": true, \"{pool}/src/b\": true}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: last_n, count: 10}}], keep_receiver: [{{type: last_n, count: 10}}]}}\n",
            pool = t.pool
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok((cfg, format!("{dir}/daemon.log"), addr))
}

fn zrepl(cfg: &str, args: &[&str]) -> Result<String, String> {
    let mut v = vec!["zrepl", "--config", cfg];
    v.extend_from_slice(args);
    sh(&v)
}

fn status(cfg: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(&zrepl(cfg, &["status", "--mode", "raw"])?).map_err(|e| e.to_string())
}

/// Bytes replicated so far for filesystem `fs` in the push job's current run.
fn fs_bytes(st: &serde_json::Value, fs: &str) -> u64 {
    st["jobs"][SENDER_JOB]["replication"]["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|a| a["filesystems"].as_array())
        .and_then(|f| f.iter().find(|f| f["name"] == fs))
        .and_then(|f| f["steps"].as_array())
        .map_or(0, |s| {
            s.iter()
                .map(|s| s["bytes_replicated"].as_u64().unwrap_or(0))
                .sum()
        })
}

/// Waits until the push job has replicated more than `min` bytes of `fs` in a running run.
fn wait_bytes(cfg: &str, fs: &str, min: u64) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = status(cfg)?;
        if st["jobs"][SENDER_JOB]["replication"]["state"] == "running" && fs_bytes(&st, fs) > min {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "transfer did not start: {st:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the push job is idle after a run that ended in `want` (`done`, `cancelled`...).
fn wait_run_end(cfg: &str, want: &str) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let st = status(cfg)?;
        let job = &st["jobs"][SENDER_JOB];
        let run = job["replication"]["state"].as_str().unwrap_or("");
        if job["state"] == "idle" && matches!(run, "done" | "failed" | "cancelled") {
            ensure!(run == want, "run ended {run}, wanted {want}: {job:#}");
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "run did not end: {job:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The daemon, killed on drop; its log is appended to errors.
struct Daemon {
    child: std::process::Child,
    log: String,
}

impl Daemon {
    fn with_log(&self, r: TestResult) -> TestResult {
        r.map_err(|e| {
            format!(
                "{e}\ndaemon log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
            .into()
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `zrepl status --job push` in an 80x24 tmux pane while the job replicates: the screen shows
/// the job, a filesystem in progress and a byte count that moves; `r` + `y` resets the job and
/// `q` quits.
pub async fn observe_status_tui_mid_replication(t: Ctx) -> TestResult {
    let (cfg, log, _) = setup(&t, 64)?;
    let d = Daemon {
        child: spawn_daemon(&cfg, &log)?,
        log,
    };
    let tmux_sock = format!("zrepl-{}", t.pool);
    let tmux = |args: &[&str]| -> Result<String, String> {
        let mut v = vec!["tmux", "-L", tmux_sock.as_str()];
        v.extend_from_slice(args);
        sh(&v)
    };
    let throttle = Throttle::start(d.child.id());
    let fs_a = format!("{}/src/a", t.pool);
    let res: TestResult = (|| {
        zrepl(&cfg, &["signal", "wakeup", SENDER_JOB])?;
        // Past the stream's first record: the receiver reads that before it prepares the
        // target (several zfs commands, slow while the daemon is throttled), and the transfer
        // proper starts after.
        wait_bytes(&cfg, &fs_a, 64 << 10)?;
        let cmd =
            format!("TERM=xterm-256color zrepl --config {cfg} status --job {SENDER_JOB} -d 500ms");
        tmux(&[
            "new-session",
            "-d",
            "-s",
            "obs",
            "-x",
            "80",
            "-y",
            "24",
            &cmd,
        ])?;
        let capture = || tmux(&["capture-pane", "-p", "-t", "obs"]);
        std::thread::sleep(Duration::from_millis(2500));
        let first = capture()?;
        std::thread::sleep(Duration::from_millis(3000));
        let second = capture()?;
        let _ = std::fs::write("tui-screen.txt", &second);
        eprintln!("  TUI screen:\n{second}");
        for s in [&first, &second] {
            ensure!(s.lines().count() <= 24, "more than 24 lines:\n{s}");
            ensure!(
                s.lines().all(|l| l.chars().count() <= 80),
                "wider than 80 columns:\n{s}"
            );
            ensure!(
                s.contains(&format!(" {SENDER_JOB} (push) ")),
                "no job title:\n{s}"
            );
            ensure!(s.contains("State: replicating"), "not replicating:\n{s}");
            ensure!(
                s.lines().any(|l| l.contains("* ")
                    && l.contains("/src/a STEPPING")
                    && l.contains("full => @1")),
                "no filesystem in progress:\n{s}"
            );
        }
        let (b1, b2) = (gauge_bytes(&first)?, gauge_bytes(&second)?);
        ensure!(
            b2 > b1,
            "byte count did not move ({b1} -> {b2}):\n{first}\n{second}"
        );

        // Reset from the TUI: r asks, y confirms; the run ends cancelled.
        tmux(&["send-keys", "-t", "obs", "r"])?;
        std::thread::sleep(Duration::from_millis(700));
        let confirm = capture()?;
        ensure!(
            confirm.contains(&format!("Reset job {SENDER_JOB}")),
            "no reset confirmation:\n{confirm}"
        );
        tmux(&["send-keys", "-t", "obs", "y"])?;
        wait_run_end(&cfg, "cancelled")?;
        // q quits: the pane's command ends, which ends the session.
        tmux(&["send-keys", "-t", "obs", "q"])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tmux(&["has-session", "-t", "obs"]).is_ok() {
            ensure!(Instant::now() < deadline, "zrepl status did not quit on q");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })();
    drop(throttle);
    let _ = tmux(&["kill-server"]);
    d.with_log(res)
}

/// The `X / Y` byte count of the progress gauge, in bytes.
fn gauge_bytes(screen: &str) -> Result<f64, String> {
    let re = regex::Regex::new(r"([0-9.]+) (B|KiB|MiB|GiB) / [0-9.]+ (B|KiB|MiB|GiB)")
        .map_err(|e| e.to_string())?;
    let c = re
        .captures(screen)
        .ok_or_else(|| format!("no progress gauge on screen:\n{screen}"))?;
    let v: f64 = c[1].parse().map_err(|e| format!("{e}"))?;
    let unit = match &c[2] {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        _ => 1024.0 * 1024.0 * 1024.0,
    };
    Ok(v * unit)
}

fn scrape(addr: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("bad response: {out}"))?;
    if !head.contains(" 200 ") {
        return Err(format!("scrape failed: {head}"));
    }
    Ok(body.to_string())
}

/// `promtool check metrics` on a scrape (lint included): exit 0 or the complaints.
fn promtool(text: &str) -> TestResult {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool (package prometheus): {e}"))?;
    c.stdin
        .take()
        .ok_or("no stdin")?
        .write_all(text.as_bytes())?;
    let o = c.wait_with_output()?;
    ensure!(
        o.status.success(),
        "promtool check metrics failed ({}): {}{}\n--- scrape:\n{text}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// The value of the sample `name{labels}` (labels as printed, sorted by name).
fn sample(text: &str, series: &str) -> Result<f64, String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .ok_or_else(|| format!("no sample {series} in:\n{text}"))?
        .trim()
        .parse()
        .map_err(|e| format!("{series}: {e}"))
}

/// Scrapes `/metrics` during a replication and lints it with promtool; after a successful
/// run and again after a second one, the per-filesystem last-success timestamp moves.
pub async fn observe_metrics_promtool_and_last_success(t: Ctx) -> TestResult {
    let (cfg, log, addr) = setup(&t, 32)?;
    let d = Daemon {
        child: spawn_daemon(&cfg, &log)?,
        log,
    };
    let pool = t.pool.clone();
    let fs_a = format!("{pool}/src/a");
    let res: TestResult = (|| {
        let job = format!("zrepl_job=\"{SENDER_JOB}\"");
        let fs_labels = format!("{{filesystem=\"{fs_a}\",{job}}}");
        let throttle = Throttle::start(d.child.id());
        zrepl(&cfg, &["signal", "wakeup", SENDER_JOB])?;
        wait_bytes(&cfg, &fs_a, 1 << 20)?;
        let during = scrape(&addr)?;
        drop(throttle);
        promtool(&during)?;
        ensure!(
            sample(&during, &format!("zrepl_replication_running{{{job}}}"))? == 1.0,
            "not running:\n{during}"
        );
        let live = sample(
            &during,
            &format!("zrepl_replication_bytes_replicated_total{fs_labels}"),
        )?;
        ensure!(live >= (1 << 20) as f64, "live bytes {live}");
        ensure!(
            sample(
                &during,
                // Planning lists both sides with `zfs get -r`.
                "zrepl_zfscmd_runtime_count{zfsbinary=\"zfs\",zfsverb=\"get\"}"
            )? >= 1.0,
            "no zfs get durations:\n{during}"
        );
        ensure!(
            sample(&during, "zrepl_zfs_commands_active")? >= 1.0,
            "zfs send not active:\n{during}"
        );
        wait_run_end(&cfg, "done")?;

        let after1 = scrape(&addr)?;
        promtool(&after1)?;
        let t1 = sample(
            &after1,
            &format!("zrepl_replication_last_successful_timestamp_seconds{fs_labels}"),
        )?;
        let now = chrono::Utc::now().timestamp() as f64;
        ensure!((now - t1).abs() < 120.0, "last success {t1}, now {now}");
        ensure!(
            sample(
                &after1,
                &format!("zrepl_replication_last_attempt_success{fs_labels}")
            )? == 1.0,
            "last attempt:\n{after1}"
        );
        let bytes1 = sample(
            &after1,
            &format!("zrepl_replication_bytes_replicated_total{fs_labels}"),
        )?;
        ensure!(bytes1 >= (32 << 20) as f64, "bytes after run 1: {bytes1}");
        let lag = sample(
            &after1,
            &format!("zrepl_replication_lag_seconds{fs_labels}"),
        )?;
        ensure!((0.0..600.0).contains(&lag), "lag {lag}");
        ensure!(
            sample(
                &after1,
                &format!("zrepl_replication_runs_total{{result=\"success\",{job}}}")
            )? == 1.0,
            "runs:\n{after1}"
        );
        let job_t1 = sample(
            &after1,
            &format!("zrepl_replication_last_successful{{{job}}}"),
        )?;

        // A second successful run moves the timestamps; bytes only grow.
        std::thread::sleep(Duration::from_millis(1500));
        write(&fs_a, "more", 1).map_err(|e| e.to_string())?;
        snapshot(&format!("{fs_a}@2"))?;
        zrepl(&cfg, &["signal", "wakeup", SENDER_JOB])?;
        wait_run_end(&cfg, "done")?;
        let after2 = scrape(&addr)?;
        promtool(&after2)?;
        let t2 = sample(
            &after2,
            &format!("zrepl_replication_last_successful_timestamp_seconds{fs_labels}"),
        )?;
        ensure!(t2 > t1, "last-success timestamp did not move: {t1} -> {t2}");
        let job_t2 = sample(
            &after2,
            &format!("zrepl_replication_last_successful{{{job}}}"),
        )?;
        ensure!(job_t2 > job_t1, "job last success did not move");
        let bytes2 = sample(
            &after2,
            &format!("zrepl_replication_bytes_replicated_total{fs_labels}"),
        )?;
        ensure!(bytes2 > bytes1, "bytes {bytes1} -> {bytes2}");
        ensure!(
            sample(
                &after2,
                &format!("zrepl_replication_runs_total{{result=\"success\",{job}}}")
            )? == 2.0,
            "runs:\n{after2}"
        );
        ensure!(
            sample(&after2, &format!("zrepl_replication_running{{{job}}}"))? == 0.0,
            "still running"
        );
        let _ = std::fs::write("metrics-scrape.txt", &during);
        Ok(())
    })();
    d.with_log(res)
}
