//! Faults of the environment (issue: a round that recovers from anything): each one ends the
//! run with a clear error that names it, loses nothing, and the run after the fault is gone
//! converges (the invariants of ARCHITECTURE.md, "Convergence", checked by
//! [`Scenario::check`]).
//!
//! Layout as in `crash.rs`: push job over `local` to a sink, `<pool>/src/{a,quiet,deep,deep/x}`.

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

/// The initial replication, with the daemon already running.
fn initial(s: &Scenario) -> TestResult {
    let r = s.run()?;
    ensure!(r == "done", "initial replication: {r}\n{}", s.log_tail());
    Ok(())
}

/// The push job's last run as JSON text (errors included).
fn last_run(s: &Scenario) -> Result<String, String> {
    Ok(s.status()?["jobs"][SENDER_JOB]["replication"].to_string())
}

/// Runs the push job and expects it to fail within `within`, naming `needle`; returns the run.
fn run_fails(s: &Scenario, needle: &str, within: Duration) -> Result<String, String> {
    let start = Instant::now();
    let r = s.run()?;
    let took = start.elapsed();
    let run = last_run(s)?;
    if r != "failed" {
        return Err(format!(
            "the run did not fail ({r}): {run}\n{}",
            s.log_tail()
        ));
    }
    if !run.contains(needle) {
        return Err(format!("the run's errors do not say {needle:?}: {run}"));
    }
    if took > within {
        return Err(format!(
            "the run took {took:?} to fail (limit {within:?}): {run}"
        ));
    }
    Ok(run)
}

fn token(fs: &str) -> Result<String, String> {
    Ok(
        zfs(&["get", "-H", "-o", "value", "receive_resume_token", fs])?
            .trim()
            .to_string(),
    )
}

/// The receiver runs out of space mid-stream (a quota): the run ends promptly with that error
/// and loses nothing; the run after the quota was raised replicates the step: it resumes the
/// partial receive where OpenZFS kept one, and sends the step again where it did not (OpenZFS
/// 2.3 keeps none when a quota stops an incremental receive: measured here).
pub(crate) async fn fault_quota_mid_stream_then_resume(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        initial(&s)?;
        let ra = s.recv("a");
        let used: u64 = zfs(&["get", "-Hp", "-o", "value", "used", &ra])?
            .trim()
            .parse()
            .map_err(|e| format!("used of {ra}: {e}"))?;
        zfs(&["set", &format!("quota={}", used + (6 << 20)), &ra])?;
        s.snapshots(&["a"], 24)?;
        let run = run_fails(&s, "out of space", Duration::from_secs(120))?;
        let partial = token(&ra)? != "-";
        let says = if partial {
            "next run resumes it"
        } else {
            "next run sends the step again"
        };
        ensure!(
            run.contains(says),
            "the error does not say {says:?} (partial receive kept: {partial}): {run}"
        );
        eprintln!("  quota: partial receive kept by OpenZFS: {partial}");
        // The sender lost nothing: the step's snapshots are still there and protected.
        let src = crate::replication::path(&t, "src/a");
        for snap in &s.made["a"] {
            ensure!(
                crate::replication::exists(&format!("{src}@{snap}")),
                "{src}@{snap} is gone after the failed run"
            );
        }
        zfs(&["set", "quota=none", &ra])?;
        let r = s.run()?;
        ensure!(
            r == "done",
            "the run after raising the quota: {r}\n{}",
            s.log_tail()
        );
        let run = last_run(&s)?;
        ensure!(
            run.contains(&format!("\"resumed\":{partial}")),
            "the step was not {} {run}",
            if partial { "resumed:" } else { "sent anew:" }
        );
        s.check()
    })();
    let _ = d.kill();
    let _ = d.wait();
    res
}

/// A transfer that stalls (its `zfs send` stopped mid-stream) is aborted after
/// `replication.stall_timeout` and the next attempt of the same run resumes it.
pub(crate) async fn fault_stalled_transfer_is_aborted_and_resumed(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    s.replication_extra = ", stall_timeout: 4s".into();
    // Slow enough to stop the sender mid-stream.
    s.push_extra = "  send: {bandwidth_limit: {max: 2 MiB}}\n".into();
    s.configure(ALL, "resumability", "{type: manual}")?;
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        initial(&s)?;
        s.snapshots(&["a"], 20)?;
        s.zrepl(&["signal", "wakeup", SENDER_JOB])?;
        // The replicating `zfs send` (not a dry run), once it has sent something.
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid = loop {
            let found = sh(&["pgrep", "-f", "^zfs send"]).unwrap_or_default();
            let pid = found.lines().find(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| !c.split(|b| *b == 0).any(|a| a == b"-n"))
                    .unwrap_or(false)
            });
            if let Some(p) = pid {
                break p.to_string();
            }
            ensure!(Instant::now() < deadline, "no zfs send appeared");
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_secs(2));
        sh(&["kill", "-STOP", &pid])?;
        let stopped = Instant::now();
        // Wait for the run to end (it was started by the wakeup above).
        let deadline = Instant::now() + Duration::from_secs(300);
        let r = loop {
            let st = s.status()?;
            let job = &st["jobs"][SENDER_JOB];
            let state = job["replication"]["state"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if job["state"] == "idle" && matches!(state.as_str(), "done" | "failed" | "cancelled") {
                break state;
            }
            ensure!(Instant::now() < deadline, "the run did not end: {job:#}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let run = last_run(&s)?;
        ensure!(r == "done", "the stalled run did not recover ({r}): {run}");
        ensure!(
            run.contains("transfer stalled") && run.contains("stall_timeout"),
            "no attempt reports the stall: {run}"
        );
        ensure!(
            run.contains("\"resumed\":true"),
            "the next attempt did not resume the step: {run}"
        );
        ensure!(
            stopped.elapsed() < Duration::from_secs(120),
            "recovering from the stall took {:?}",
            stopped.elapsed()
        );
        // The stopped `zfs send` was killed, not left behind.
        ensure!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|st| st.contains(") Z "))
                    .unwrap_or(true),
            "the stalled zfs send {pid} is still there"
        );
        s.check()
    })();
    let _ = d.kill();
    let _ = d.wait();
    res
}

/// A `zfs` command that hangs is killed after `global.zfs.command_timeout` and the run fails
/// naming it; once the command works again, the next run converges.
pub(crate) async fn fault_hanging_zfs_command_is_bounded(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    let wrap = format!("/tmp/{}-wrap", t.pool);
    std::fs::create_dir_all(&wrap).map_err(|e| e.to_string())?;
    let real = sh(&["sh", "-c", "command -v zfs"])?.trim().to_string();
    let hang = format!("{wrap}/hang");
    let script = format!(
        "#!/bin/sh\nif [ -e {hang} ] && [ \"$1\" = list ]; then exec sleep 3600; fi\nexec {real} \"$@\"\n"
    );
    std::fs::write(format!("{wrap}/zfs"), script).map_err(|e| e.to_string())?;
    sh(&["chmod", "755", &format!("{wrap}/zfs")])?;
    s.env = vec![(
        "PATH".into(),
        format!("{wrap}:{}", std::env::var("PATH").unwrap_or_default()),
    )];
    s.global_extra = "  zfs:\n    command_timeout: 5s\n".into();
    s.configure(ALL, "resumability", "{type: manual}")?;
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        initial(&s)?;
        s.snapshots(&["a"], 1)?;
        std::fs::write(&hang, "").map_err(|e| e.to_string())?;
        let run = run_fails(&s, "timed out after 5s", Duration::from_secs(90))?;
        ensure!(
            run.contains("zfs list"),
            "the error does not name the command: {run}"
        );
        std::fs::remove_file(&hang).map_err(|e| e.to_string())?;
        // The hung commands were killed.
        crate::pool::wait_gone("^sleep 3600", Duration::from_secs(15))?;
        let r = s.run()?;
        ensure!(r == "done", "the run after the hang: {r}\n{}", s.log_tail());
        s.check()
    })();
    let _ = d.kill();
    let _ = d.wait();
    let _ = std::fs::remove_dir_all(&wrap);
    res
}

/// The receiving pool is exported between runs: the run fails saying so, the sender prunes
/// nothing that was not replicated, and after the import the next run catches up.
pub(crate) async fn fault_receiving_pool_exported_then_imported(t: Ctx) -> TestResult {
    let mut other = TestPool::create()?;
    let res: TestResult = async {
        let mut s = Scenario::new(&t)?;
        s.sink = format!("{}/sink", other.name);
        zfs(&["create", &s.sink])?;
        s.configure(ALL, "resumability", "{type: manual}")?;
        let mut d = s.daemon(None)?;
        let res: TestResult = (|| {
            initial(&s)?;
            sh(&["zpool", "export", &other.name])?;
            // More snapshots than the sender's keep rule keeps: not_replicated protects them.
            for _ in 0..4 {
                s.snapshots(ALL, 1)?;
            }
            let run = run_fails(&s, "is not imported", Duration::from_secs(120))?;
            ensure!(
                run.contains(&other.name),
                "the error does not name the pool: {run}"
            );
            for fs in ALL {
                let src = crate::replication::path(&t, &format!("src/{fs}"));
                for snap in &s.made[*fs][1..] {
                    ensure!(
                        crate::replication::exists(&format!("{src}@{snap}")),
                        "{src}@{snap} was destroyed while the receiver was away"
                    );
                }
            }
            let dir = other
                .image
                .parent()
                .ok_or("pool image has no directory")?
                .display()
                .to_string();
            sh(&["zpool", "import", "-d", &dir, &other.name])?;
            let r = s.run()?;
            ensure!(
                r == "done",
                "the run after the import: {r}\n{}",
                s.log_tail()
            );
            s.check()
        })();
        let _ = d.kill();
        let _ = d.wait();
        res
    }
    .await;
    // Imported again even if the test failed in between, so that it can be destroyed.
    if sh(&["zpool", "list", "-H", &other.name]).is_err() {
        let dir = other
            .image
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let _ = sh(&["zpool", "import", "-d", &dir, &other.name]);
    }
    let cleanup = other.destroy();
    res?;
    cleanup.map_err(|e| format!("destroying the second pool: {e}").into())
}

/// A received filesystem written to on the receiver: the incremental receive fails with what to
/// do, nothing is rolled back implicitly or lost, and after the admin's rollback the next run
/// converges.
pub(crate) async fn fault_modified_receiving_dataset(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        initial(&s)?;
        let ra = s.recv("a");
        // Received filesystems inherit `mountpoint=none` from zrepl's placeholders: an admin
        // mounts one somewhere to look at it, and writes.
        let mp = format!("/tmp/{}-modified", t.pool);
        zfs(&["set", &format!("mountpoint={mp}"), &ra])?;
        if zfs(&["get", "-H", "-o", "value", "mounted", &ra])?.trim() != "yes" {
            zfs(&["mount", &ra])?;
        }
        std::fs::write(format!("{mp}/written-on-the-receiver"), b"local change")
            .map_err(|e| format!("writing into {mp}: {e}"))?;
        sh(&["sync"])?;
        s.snapshots(&["a"], 1)?;
        let run = run_fails(
            &s,
            "was written to on the receiving side",
            Duration::from_secs(120),
        )?;
        ensure!(
            run.contains("zfs rollback"),
            "the error does not say what to do: {run}"
        );
        // Nothing was rolled back behind the admin's back.
        ensure!(
            std::path::Path::new(&format!("{mp}/written-on-the-receiver")).exists(),
            "the receiver's local change is gone"
        );
        let newest = s.made["a"][s.made["a"].len() - 2].clone();
        zfs(&["rollback", &format!("{ra}@{newest}")])?;
        let r = s.run()?;
        ensure!(
            r == "done",
            "the run after the rollback: {r}\n{}",
            s.log_tail()
        );
        s.check()
    })();
    let _ = d.kill();
    let _ = d.wait();
    res
}
