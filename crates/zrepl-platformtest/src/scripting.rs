//! Scripting a replication (issue: scheduling and scripting): `zrepl signal wakeup --wait` and
//! its exit codes, `zrepl run` to a pool imported only for that run, a push job replicating on
//! its own interval.
//!
//! Layout as in `crash.rs`: push job over `local` to a sink, `<pool>/src/{a,quiet,deep,deep/x}`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::crash::Scenario;
use crate::pool::{sh, TestPool};
use crate::replication::{zfs, SENDER_JOB};
use crate::{Ctx, TestResult};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)).into());
        }
    };
}

const ALL: &[&str] = &["a", "quiet", "deep", "deep/x"];

/// Runs `zrepl --config CFG ARGS`; exit code, stdout, stderr.
fn zrepl(s: &Scenario, args: &[&str]) -> Result<(i32, String, String), String> {
    let out = Command::new("zrepl")
        .args(["--config", &s.cfg])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run zrepl: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn newest_received(s: &Scenario, fs: &str) -> Result<Option<String>, String> {
    let r = s.recv(fs);
    if !crate::replication::exists(&r) {
        return Ok(None);
    }
    Ok(zfs(&[
        "list",
        "-H",
        "-o",
        "name",
        "-t",
        "snapshot",
        "-s",
        "createtxg",
        "-d",
        "1",
        &r,
    ])?
    .lines()
    .last()
    .and_then(|l| l.split_once('@').map(|(_, n)| n.to_string())))
}

/// `wakeup --wait` returns 0 after a good run, 3 after a run whose receiver is gone, 0 again
/// once it is back; the summary names the run and what happened.
pub(crate) async fn script_wakeup_wait_exit_codes(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        let (code, out, err) = zrepl(&s, &["signal", "wakeup", SENDER_JOB, "--wait"])?;
        ensure!(code == 0, "exit {code}: {out}{err}\n{}", s.log_tail());
        ensure!(out.contains("run #1: replication done"), "summary: {out}");
        // The receiver's root is gone (renamed away): replication fails, exit 3.
        let sink = s.sink.clone();
        let away = format!("{}/away", t.pool);
        zfs(&["rename", &sink, &away])?;
        s.snapshots(&["a"], 1)?;
        let (code, out, err) = zrepl(&s, &["signal", "wakeup", SENDER_JOB, "--wait"])?;
        ensure!(code == 3, "exit {code}: {out}{err}");
        ensure!(
            out.contains("run #2: replication failed") && out.contains("does not exist"),
            "summary: {out}"
        );
        zfs(&["rename", &away, &sink])?;
        let (code, out, err) = zrepl(
            &s,
            &["signal", "wakeup", SENDER_JOB, "--wait", "--timeout", "5m"],
        )?;
        ensure!(code == 0, "exit {code}: {out}{err}");
        ensure!(out.contains("run #3: replication done"), "summary: {out}");
        s.check()
    })();
    let _ = d.kill();
    let _ = d.wait();
    res
}

/// `zrepl run` without a daemon replicates to a sink on a pool that is imported only for the
/// run (an external disk), twice, incrementally the second time.
pub(crate) async fn script_zrepl_run_to_pool_imported_for_the_run(t: Ctx) -> TestResult {
    let mut disk = TestPool::create()?;
    let dir = disk
        .image
        .parent()
        .ok_or("pool image has no directory")?
        .display()
        .to_string();
    let res: TestResult = (|| {
        let mut s = Scenario::new(&t)?;
        s.sink = format!("{}/backup", disk.name);
        zfs(&["create", &s.sink])?;
        s.configure(ALL, "resumability", "{type: manual}")?;
        let (code, out, err) = zrepl(&s, &["run", SENDER_JOB])?;
        ensure!(code == 0, "first run: exit {code}: {out}{err}");
        ensure!(out.contains("replication done"), "summary: {out}");
        sh(&["zpool", "export", &disk.name])?;
        // The disk is away; snapshots go on.
        s.snapshots(ALL, 1)?;
        s.snapshots(&["a"], 1)?;
        sh(&["zpool", "import", "-d", &dir, &disk.name])?;
        let (code, out, err) = zrepl(&s, &["run", SENDER_JOB])?;
        ensure!(code == 0, "second run: exit {code}: {out}{err}");
        sh(&["zpool", "export", &disk.name])?;
        sh(&["zpool", "import", "-d", &dir, &disk.name])?;
        for fs in ALL {
            let want = s.made[*fs].last().cloned();
            ensure!(
                newest_received(&s, fs)? == want,
                "{fs}: the disk does not have {want:?}"
            );
        }
        s.check()
    })();
    if sh(&["zpool", "list", "-H", &disk.name]).is_err() {
        let _ = sh(&["zpool", "import", "-d", &dir, &disk.name]);
    }
    let cleanup = disk.destroy();
    res?;
    cleanup.map_err(|e| format!("destroying the disk pool: {e}").into())
}

/// Waits (90 s at most) until the receiver's newest snapshot of `fs` is `snap`.
fn wait_for(s: &Scenario, fs: &str, snap: &str) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(90);
    while newest_received(s, fs)?.as_deref() != Some(snap) {
        ensure!(
            Instant::now() < deadline,
            "{fs}@{snap} was not replicated on the interval\n{}",
            s.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// A push job with manual snapshotting and `interval: 10s` replicates snapshots made by hand,
/// with nobody waking it up.
pub(crate) async fn script_push_replication_interval(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    s.push_extra = "  interval: 10s\n".into();
    s.configure(ALL, "resumability", "{type: manual}")?;
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        // The first run starts with the job; then every 10 s.
        wait_for(&s, "a", "s1")?;
        s.snapshots(&["a"], 1)?;
        let made = Instant::now();
        wait_for(&s, "a", "s2")?;
        ensure!(
            made.elapsed() < Duration::from_secs(60),
            "replicated only after {:?}",
            made.elapsed()
        );
        let log = std::fs::read_to_string(&s.log).unwrap_or_default();
        ensure!(
            log.contains("replication scheduled"),
            "the schedule's ticks are not logged"
        );
        // Let a run finish before checking the invariants.
        std::thread::sleep(Duration::from_secs(2));
        let r = s.run()?;
        ensure!(r == "done", "a woken run after the scheduled ones: {r}");
        s.check()
    })();
    let _ = d.kill();
    let _ = d.wait();
    res
}

/// Sends SIGTERM to the daemon.
fn sigterm(d: &std::process::Child) -> Result<(), String> {
    sh(&["kill", "-TERM", &d.id().to_string()]).map(|_| ())
}

/// Waits (`limit` at most) for the daemon to exit; its exit code.
fn wait_exit(d: &mut std::process::Child, limit: Duration) -> Result<Option<i32>, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = d.try_wait().map_err(|e| e.to_string())? {
            return Ok(Some(st.code().unwrap_or(-1)));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a replicating `zfs send` (not a dry run) runs.
fn wait_for_send() -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = sh(&["pgrep", "-f", "^zfs send"]).unwrap_or_default();
        if found.lines().any(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| !c.split(|b| *b == 0).any(|a| a == b"-n"))
                .unwrap_or(false)
        }) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "no zfs send appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM during a transfer: the run in progress finishes (within `global.shutdown_timeout`),
/// then the daemon exits 0; nothing is left to converge.
pub(crate) async fn script_sigterm_lets_the_run_finish(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    s.push_extra = "  send: {bandwidth_limit: {max: 4 MiB}}\n".into();
    s.configure(ALL, "resumability", "{type: manual}")?;
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        let r = s.run()?;
        ensure!(r == "done", "initial replication: {r}");
        s.snapshots(&["a"], 16)?;
        s.zrepl(&["signal", "wakeup", SENDER_JOB])?;
        wait_for_send()?;
        let stopped = Instant::now();
        sigterm(&d)?;
        let code = wait_exit(&mut d, Duration::from_secs(55))?;
        ensure!(
            code == Some(0),
            "the daemon did not exit cleanly after finishing the run: {code:?}\n{}",
            s.log_tail()
        );
        let took = stopped.elapsed();
        let log = std::fs::read_to_string(&s.log).unwrap_or_default();
        ensure!(
            log.contains("replication done"),
            "the run in progress did not finish\n{}",
            s.log_tail()
        );
        ensure!(
            newest_received(&s, "a")? == s.made["a"].last().cloned(),
            "the receiver does not have the snapshot of the finished run"
        );
        eprintln!("  the run finished {took:?} after SIGTERM");
        // Nothing to converge: the next daemon's run replicates nothing and the invariants hold.
        let mut d2 = s.daemon(None)?;
        let r = s.run();
        let checked = s.check();
        let _ = d2.kill();
        let _ = d2.wait();
        ensure!(r? == "done", "the run after the restart failed");
        checked
    })();
    let _ = d.kill();
    let _ = d.wait();
    res
}

/// A second SIGTERM aborts the run in progress at once; the daemon exits, the partial receive
/// is kept and the next start converges.
pub(crate) async fn script_second_sigterm_aborts(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    s.push_extra = "  send: {bandwidth_limit: {max: 1 MiB}}\n".into();
    s.configure(ALL, "resumability", "{type: manual}")?;
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        let r = s.run()?;
        ensure!(r == "done", "initial replication: {r}");
        s.snapshots(&["a"], 32)?;
        s.zrepl(&["signal", "wakeup", SENDER_JOB])?;
        wait_for_send()?;
        sigterm(&d)?;
        std::thread::sleep(Duration::from_secs(1));
        ensure!(
            wait_exit(&mut d, Duration::from_millis(10))?.is_none(),
            "the daemon exited at the first SIGTERM with a run in progress"
        );
        let aborted = Instant::now();
        sigterm(&d)?;
        let code = wait_exit(&mut d, Duration::from_secs(20))?;
        ensure!(
            code.is_some(),
            "the daemon did not exit after the second SIGTERM\n{}",
            s.log_tail()
        );
        ensure!(
            aborted.elapsed() < Duration::from_secs(20),
            "aborting took {:?}",
            aborted.elapsed()
        );
        s.converge()
    })();
    let _ = d.kill();
    let _ = d.wait();
    res
}

/// Replication hooks see their environment around a run; a fatal pre hook prevents the run
/// (nothing is replicated, `wakeup --wait` exits 3) and the post hook still learns the result.
pub(crate) async fn script_replication_hooks(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    let dir = format!("/tmp/{}-hooks", t.pool);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let log = format!("{dir}/log");
    let script = format!(
        "#!/bin/sh\necho \"$ZREPL_HOOKTYPE run=$ZREPL_RUN job=$ZREPL_JOB_NAME result=$ZREPL_RESULT err=$ZREPL_JOB_ERR arg=$1 mine=$MINE\" >> {log}\n[ -e {dir}/fail ] && exit 9\nexit 0\n"
    );
    std::fs::write(format!("{dir}/hook"), script).map_err(|e| e.to_string())?;
    sh(&["chmod", "755", &format!("{dir}/hook")])?;
    s.push_extra = format!(
        "  hooks:\n    pre: {{path: {dir}/hook, args: [first], env: {{MINE: yes}}, err_is_fatal: true, timeout: 30s}}\n    post: {{path: {dir}/hook, args: [after]}}\n"
    );
    s.configure(ALL, "resumability", "{type: manual}")?;
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        let (code, out, err) = zrepl(&s, &["signal", "wakeup", SENDER_JOB, "--wait"])?;
        ensure!(code == 0, "exit {code}: {out}{err}");
        let l = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
        let lines: Vec<&str> = l.lines().collect();
        ensure!(
            lines
                == [
                    "pre_replication run=1 job=push result= err= arg=first mine=yes",
                    "post_replication run=1 job=push result=done err= arg=after mine=",
                ],
            "hook environment: {l}"
        );
        // A failing fatal pre hook prevents the run: the new snapshot stays on the sender.
        std::fs::write(format!("{dir}/fail"), "").map_err(|e| e.to_string())?;
        s.snapshots(&["a"], 1)?;
        let (code, out, err) = zrepl(&s, &["signal", "wakeup", SENDER_JOB, "--wait"])?;
        ensure!(code == 3, "exit {code}: {out}{err}");
        ensure!(
            out.contains("pre_replication hook") && out.contains("prevented"),
            "summary: {out}"
        );
        ensure!(
            newest_received(&s, "a")?.as_deref() == Some("s1"),
            "the prevented run replicated"
        );
        let l = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
        let post = l.lines().last().unwrap_or("");
        ensure!(
            post.starts_with(
                "post_replication run=2 job=push result=failed err=pre_replication hook"
            ),
            "the post hook of the prevented run: {post}"
        );
        std::fs::remove_file(format!("{dir}/fail")).map_err(|e| e.to_string())?;
        let (code, out, err) = zrepl(&s, &["signal", "wakeup", SENDER_JOB, "--wait"])?;
        ensure!(code == 0, "exit {code}: {out}{err}");
        s.check()
    })();
    let _ = d.kill();
    let _ = d.wait();
    let _ = std::fs::remove_dir_all(&dir);
    res
}
