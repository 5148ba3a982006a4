//! Skipping unchanged filesystems (`written_threshold`) and the `zrepl monitor` checks, against
//! real OpenZFS and a real daemon.
//!
//! Layout as in `crash.rs`: push job over `local` to a sink, `<pool>/src/{a,quiet,deep,deep/x}`,
//! each with a first snapshot `s1`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::crash::Scenario;
use crate::replication::{path, write, zfs, RECEIVER_JOB, SENDER_JOB};
use crate::{Ctx, TestResult};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)).into());
        }
    };
}

const ALL: &[&str] = &["a", "quiet", "deep", "deep/x"];

/// `zrepl --config CFG ARGS`: exit code and stdout (stderr appended, for messages).
fn zrepl(s: &Scenario, args: &[&str]) -> Result<(i32, String), String> {
    let out = Command::new("zrepl")
        .args(["--config", &s.cfg])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run zrepl: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// The snapshots named `prefix*` of `fs`.
fn snapshots_with(fs: &str, prefix: &str) -> Result<Vec<String>, String> {
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
        fs,
    ])?
    .lines()
    .filter_map(|l| l.split_once('@').map(|(_, n)| n.to_string()))
    .filter(|n| n.starts_with(prefix))
    .collect())
}

/// Waits until the push job's snapshotter reports a round other than `before`; returns it.
fn next_round(s: &Scenario, before: &serde_json::Value) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = s.status()?;
        let r = &st["jobs"][SENDER_JOB]["snapshotting"]["last_round"];
        if !r.is_null() && r["started_at"] != before["started_at"] {
            return Ok(r.clone());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no snapshot round after {before}: {st:#}\n{}",
                s.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// With `written_threshold`, a round snapshots only the filesystems that changed since the
/// job's newest snapshot (and all of them the first time, when the newest snapshot is a
/// foreign `s1`); skipped filesystems run no hooks, and status and log name them.
pub(crate) async fn monitor_skip_empty_snapshots(t: Ctx) -> TestResult {
    let s = Scenario::new(&t)?;
    let dir = std::path::Path::new(&s.cfg)
        .parent()
        .ok_or("config has no directory")?
        .to_path_buf();
    let hook = dir.join("hook.sh");
    let hook_log = dir.join("hook.log");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$ZREPL_HOOKTYPE $ZREPL_FS $ZREPL_SNAPNAME\" >> {}\n",
            hook_log.display()
        ),
    )?;
    std::process::Command::new("chmod")
        .args(["755", hook.to_str().ok_or("hook path")?])
        .status()?;
    s.configure(
        ALL,
        "resumability",
        &format!(
            "{{type: periodic, prefix: zrepl_, interval: 15s, written_threshold: 1, hooks: [{{type: command, path: {}}}]}}",
            hook.display()
        ),
    )?;
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        // Round 1: nothing has a zrepl_ snapshot yet, everything is snapshotted.
        let r1 = next_round(&s, &serde_json::Value::Null)?;
        ensure!(r1["error"].is_null(), "round 1 failed: {r1:#}");
        ensure!(
            r1["filesystems"].as_array().map_or(0, Vec::len) == ALL.len(),
            "round 1: {r1:#}"
        );
        for fs in ALL {
            let n = snapshots_with(&path(&t, &format!("src/{fs}")), "zrepl_")?;
            ensure!(n.len() == 1, "{fs} after round 1: {n:?}");
        }
        // Only `a` changes before round 2.
        write(&path(&t, "src/a"), "change", 1)?;
        let r2 = next_round(&s, &r1)?;
        ensure!(r2["error"].is_null(), "round 2 failed: {r2:#}");
        let a = path(&t, "src/a");
        ensure!(
            r2["filesystems"] == serde_json::json!([a]),
            "round 2 snapshotted: {r2:#}"
        );
        let mut skipped: Vec<String> = r2["skipped"]
            .as_array()
            .ok_or_else(|| format!("no skipped list: {r2:#}"))?
            .iter()
            .map(|x| x["filesystem"].as_str().unwrap_or("").to_string())
            .collect();
        skipped.sort();
        let mut want: Vec<String> = ["deep", "deep/x", "quiet"]
            .iter()
            .map(|f| path(&t, &format!("src/{f}")))
            .collect();
        want.sort();
        ensure!(skipped == want, "skipped {skipped:?}, want {want:?}");
        ensure!(
            r2["skipped"]
                .as_array()
                .is_some_and(|v| v.iter().all(|x| x["written"] == 0)),
            "unchanged filesystems wrote bytes: {r2:#}"
        );
        ensure!(snapshots_with(&a, "zrepl_")?.len() == 2, "a: two snapshots");
        for fs in ["quiet", "deep", "deep/x"] {
            let n = snapshots_with(&path(&t, &format!("src/{fs}")), "zrepl_")?;
            ensure!(n.len() == 1, "{fs} was snapshotted again: {n:?}");
        }
        // Hooks ran for every filesystem in round 1 and only for `a` in round 2.
        let name2 = r2["snapshot_name"].as_str().unwrap_or("?");
        let hooks = std::fs::read_to_string(&hook_log).map_err(|e| e.to_string())?;
        let round2: Vec<&str> = hooks.lines().filter(|l| l.ends_with(name2)).collect();
        ensure!(
            round2
                == [
                    format!("pre_snapshot {a} {name2}"),
                    format!("post_snapshot {a} {name2}")
                ],
            "round 2 hooks: {round2:?}\nall: {hooks}"
        );
        let log = std::fs::read_to_string(&s.log).unwrap_or_default();
        ensure!(
            log.contains("skipping snapshot") && log.contains(&path(&t, "src/quiet")),
            "the log does not say what was skipped:\n{}",
            s.log_tail()
        );
        // Status says it too.
        let (code, out) = zrepl(&s, &["status", "--mode", "dump"])?;
        ensure!(
            code == 0 && out.contains("3 unchanged skipped"),
            "status: {out}"
        );
        Ok(())
    })();
    let _ = d.kill();
    let _ = d.wait();
    res
}

/// `zrepl monitor snapshots|replication|alive` on a real pool and daemon: exit codes 0, 1, 2
/// by the age of the newest snapshot and of the newest replicated one, on both sides.
pub(crate) async fn monitor_checks_exit_codes(t: Ctx) -> TestResult {
    let s = Scenario::new(&t)?;
    let a = path(&t, "src/a");
    let quiet = path(&t, "src/quiet");
    // Fresh snapshots (s1 of the scenario): OK.
    let (code, out) = zrepl(
        &s,
        &["monitor", "snapshots", "--job", SENDER_JOB, "-c", "1h"],
    )?;
    ensure!(code == 0, "exit {code}: {out}");
    ensure!(
        out.starts_with("ZREPL SNAPSHOTS OK - 4 filesystems ok"),
        "{out}"
    );
    let (code, out) = zrepl(&s, &["monitor", "snapshots", &a, &quiet, "-w", "1h"])?;
    ensure!(code == 0, "exit {code}: {out}");
    let gone = path(&t, "src/gone");
    let (code, out) = zrepl(&s, &["monitor", "snapshots", &a, &gone, "-c", "1h"])?;
    ensure!(code == 2, "exit {code}: {out}");
    ensure!(
        out.contains(&format!("CRITICAL: {gone}: dataset does not exist")),
        "{out}"
    );
    // Nothing replicated yet: the push job's lag is CRITICAL.
    let (code, out) = zrepl(&s, &["monitor", "replication", SENDER_JOB, "-c", "1h"])?;
    ensure!(code == 2, "exit {code}: {out}");
    ensure!(out.contains("never replicated"), "{out}");

    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        let (code, out) = zrepl(&s, &["monitor", "alive", "--job", SENDER_JOB])?;
        ensure!(code == 0, "exit {code}: {out}");
        ensure!(out == "ZREPL ALIVE OK - job \"push\" is idle\n", "{out}");
        ensure!(s.run()? == "done", "replication failed:\n{}", s.log_tail());
        for job in [SENDER_JOB, RECEIVER_JOB] {
            let (code, out) = zrepl(&s, &["monitor", "replication", job, "-c", "1h"])?;
            ensure!(code == 0, "{job}: exit {code}: {out}");
            ensure!(
                out.starts_with("ZREPL REPLICATION OK - 4 filesystems ok"),
                "{job}: {out}"
            );
        }
        let (code, out) = zrepl(&s, &["monitor", "replication", RECEIVER_JOB, "-c", "1h"])?;
        ensure!(
            code == 0
                && out.contains(&format!(
                    "OK: {}: last replicated snapshot @s1",
                    s.recv("a")
                )),
            "{out}"
        );
        // The newest snapshots age past the thresholds.
        std::thread::sleep(Duration::from_secs(3));
        let (code, out) = zrepl(
            &s,
            &[
                "monitor",
                "snapshots",
                "--job",
                SENDER_JOB,
                "-w",
                "2s",
                "-c",
                "1h",
            ],
        )?;
        ensure!(code == 1, "exit {code}: {out}");
        ensure!(
            out.starts_with("ZREPL SNAPSHOTS WARNING - 4 warning of 4 filesystems"),
            "{out}"
        );
        let (code, out) = zrepl(
            &s,
            &[
                "monitor",
                "snapshots",
                "--job",
                SENDER_JOB,
                "-w",
                "1s",
                "-c",
                "2s",
            ],
        )?;
        ensure!(code == 2, "exit {code}: {out}");
        ensure!(
            out.starts_with("ZREPL SNAPSHOTS CRITICAL - 4 critical of 4 filesystems"),
            "{out}"
        );
        ensure!(out.contains(&format!("'{a}'=")), "perfdata: {out}");
        let (code, out) = zrepl(&s, &["monitor", "replication", SENDER_JOB, "-c", "2s"])?;
        ensure!(code == 2, "exit {code}: {out}");
        // A new snapshot on `a` only: its snapshot age is fresh again, the others stay critical.
        zfs(&["snapshot", &format!("{a}@s2")])?;
        let (code, out) = zrepl(
            &s,
            &["monitor", "snapshots", "--job", SENDER_JOB, "-c", "2s"],
        )?;
        ensure!(
            code == 2 && out.starts_with("ZREPL SNAPSHOTS CRITICAL - 3 critical of 4 filesystems"),
            "exit {code}: {out}"
        );
        ensure!(
            out.contains(&format!("OK: {a}: newest snapshot @s2 is ")),
            "{out}"
        );
        Ok(())
    })();
    let _ = d.kill();
    let _ = d.wait();
    res?;
    // The daemon is gone.
    let (code, out) = zrepl(&s, &["monitor", "alive"])?;
    ensure!(code == 2, "exit {code}: {out}");
    ensure!(
        out.starts_with("ZREPL ALIVE CRITICAL - daemon does not answer"),
        "{out}"
    );
    Ok(())
}
