//! Crash tests of the daemon end to end: a failpoint (zrepl-failpoint) kills the daemon at a
//! boundary of a round, of pruning or of snapshotting; the daemon is restarted and runs until it
//! converges; then the invariants of ARCHITECTURE.md ("Convergence") must hold. The
//! kill-anywhere campaign kills it at random moments instead.
//!
//! Layout: push job `push` over `local` to sink `sink`, `<pool>/src/{a,quiet,deep,deep/x}`
//! replicated (`quiet` gets new snapshots only now and then), `<pool>/src/outside` not in the
//! filter (a user's snapshot, hold and bookmark there, and a user's bookmark on `a`, must
//! survive everything).

use std::process::Child;
use std::time::{Duration, Instant};

use zrepl_zfs_types::abstraction::AbstractionType;
use zrepl_zfs_types::abstraction::{last_received_hold_tag, parse_cursor_bookmark, step_hold_tag};

use crate::pool::sh;
use crate::replication::{
    all_holds, create, exists, path, recv_path, snapshot, start_daemon, wait_daemon, write, zfs,
    RECEIVER_JOB, SENDER_JOB,
};
use crate::{Ctx, TestResult};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)).into());
        }
    };
}

/// The replicated filesystems (relative to `<pool>/src`).
const REPLICATED: &[&str] = &["a", "quiet", "deep", "deep/x"];
/// Keep rules: the newest `KEEP` snapshots on each side.
const KEEP: usize = 3;
/// The kill-anywhere campaign converges (and checks the invariants) after this many kills.
const CLEAN_EVERY: usize = 8;

pub(crate) struct Scenario {
    pub(crate) t: Ctx,
    dir: String,
    pub(crate) cfg: String,
    pub(crate) log: String,
    /// Snapshots made so far, per filesystem, oldest first.
    pub(crate) made: std::collections::BTreeMap<String, Vec<String>>,
    next: usize,
    /// The sink's `root_fs` (default `<pool>/sink`).
    pub(crate) sink: String,
    /// Lines added to `global:` (indented by two spaces).
    pub(crate) global_extra: String,
    /// Entries added to the push job's `replication:` map (`, key: value`).
    pub(crate) replication_extra: String,
    /// Lines added to the push job (indented by two spaces).
    pub(crate) push_extra: String,
    /// Environment of the daemon beyond the test's own.
    pub(crate) env: Vec<(String, String)>,
    /// Each new snapshot's file replaces the previous one of its filesystem, so that the live
    /// data stays bounded however many snapshots are made (the test pools are small).
    pub(crate) replace_files: bool,
}

impl Scenario {
    pub(crate) fn new(t: &Ctx) -> Result<Self, String> {
        for fs in REPLICATED {
            create(t, &format!("src/{fs}"))?;
        }
        let outside = create(t, "src/outside")?;
        snapshot(&format!("{outside}@users"))?;
        zfs(&["hold", "users-hold", &format!("{outside}@users")])?;
        zfs(&[
            "bookmark",
            &format!("{outside}@users"),
            &format!("{outside}#users"),
        ])?;
        create(t, "sink")?;
        let dir = format!("/tmp/{}-crash", t.pool);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut s = Scenario {
            t: t.clone(),
            cfg: format!("{dir}/zrepl.yml"),
            log: format!("{dir}/daemon.log"),
            dir,
            made: Default::default(),
            next: 1,
            sink: path(t, "sink"),
            global_extra: String::new(),
            replication_extra: String::new(),
            push_extra: String::new(),
            env: Vec::new(),
            replace_files: false,
        };
        s.configure(REPLICATED, "resumability", "{type: manual}")?;
        // A first snapshot everywhere, and a user's bookmark on `a`.
        s.snapshots(REPLICATED, 1)?;
        let a = path(t, "src/a");
        zfs(&["bookmark", &format!("{a}@s1"), &format!("{a}#users")])?;
        Ok(s)
    }

    /// Writes the config: `fss` replicated, both protection levels `guarantee_<protection>`.
    pub(crate) fn configure(
        &self,
        fss: &[&str],
        protection: &str,
        snapshotting: &str,
    ) -> Result<(), String> {
        let pool = &self.t.pool;
        let filter: Vec<String> = fss
            .iter()
            .map(|f| format!("\"{pool}/src/{f}\": true"))
            .collect();
        std::fs::write(
            &self.cfg,
            format!(
                "global:\n  control:\n    sockpath: {dir}/run/control\n  logging:\n    - {{type: stdout, level: debug, format: human}}\n{global_extra}\
                 jobs:\n\
                 - type: sink\n  name: {RECEIVER_JOB}\n  root_fs: {sink}\n  serve: {{type: local, listener_name: l}}\n  recv: {{placeholder: {{encryption: inherit}}}}\n\
                 - type: push\n  name: {SENDER_JOB}\n  connect: {{type: local, listener_name: l, client_identity: client}}\n  filesystems: {{{filter}}}\n  snapshotting: {snapshotting}\n  replication: {{protection: {{initial: guarantee_{protection}, incremental: guarantee_{protection}}}{replication_extra}}}\n{push_extra}  pruning: {{keep_sender: [{{type: not_replicated}}, {{type: last_n, count: {KEEP}, regex: \"^s\"}}, {{type: regex, regex: \"^zrepl_\"}}], keep_receiver: [{{type: last_n, count: {KEEP}, regex: \"^s\"}}, {{type: regex, regex: \"^zrepl_\"}}]}}\n",
                dir = self.dir,
                filter = filter.join(", "),
                sink = self.sink,
                global_extra = self.global_extra,
                replication_extra = self.replication_extra,
                push_extra = self.push_extra,
            ),
        )
        .map_err(|e| e.to_string())
    }

    /// A new snapshot `s<N>` (after `mib` MiB of new data) on each of `fss`.
    pub(crate) fn snapshots(&mut self, fss: &[&str], mib: usize) -> Result<(), String> {
        let name = format!("s{}", self.next);
        self.next += 1;
        for fs in fss {
            let p = path(&self.t, &format!("src/{fs}"));
            if let Some(prev) = self
                .made
                .get(*fs)
                .and_then(|m| m.last())
                .filter(|_| self.replace_files)
            {
                let mp = zfs(&["get", "-H", "-o", "value", "mountpoint", &p])?;
                let f = format!("{}/{prev}", mp.trim());
                std::fs::remove_file(&f).map_err(|e| format!("rm {f}: {e}"))?;
            }
            write(&p, &name, mib)?;
            snapshot(&format!("{p}@{name}"))?;
            self.made
                .entry(fs.to_string())
                .or_default()
                .push(name.clone());
        }
        Ok(())
    }

    /// Starts the daemon without waiting for it (it may die at once at a failpoint); the log
    /// of every start is appended to one file.
    fn daemon_raw(&self, failpoints: Option<&str>) -> Result<Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        start_daemon(&self.cfg, log, failpoints, &self.env)
    }

    pub(crate) fn daemon(&self, failpoints: Option<&str>) -> Result<Child, String> {
        let mut child = self.daemon_raw(failpoints)?;
        wait_daemon(&self.cfg, &mut child, &self.log)?;
        Ok(child)
    }

    pub(crate) fn zrepl(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["zrepl", "--config", self.cfg.as_str()];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub(crate) fn status(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.zrepl(&["status", "--mode", "raw"])?).map_err(|e| e.to_string())
    }

    pub(crate) fn log_tail(&self) -> String {
        let l = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn started_at(&self) -> serde_json::Value {
        self.status()
            .map(|s| s["jobs"][SENDER_JOB]["replication"]["started_at"].clone())
            .unwrap_or_default()
    }

    /// Wakes the push job and waits until that run (replication and pruning) is over;
    /// returns the run's state.
    pub(crate) fn run(&self) -> Result<String, String> {
        let before = self.started_at();
        self.zrepl(&["signal", "wakeup", SENDER_JOB])?;
        self.wait_run(&before)
    }

    fn wait_run(&self, before: &serde_json::Value) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let st = self.status()?;
            let job = &st["jobs"][SENDER_JOB];
            let run = job["replication"]["state"].as_str().unwrap_or("");
            if job["replication"]["started_at"] != *before
                && job["state"] == "idle"
                && matches!(run, "done" | "failed" | "cancelled")
            {
                return Ok(run.to_string());
            }
            if Instant::now() > deadline {
                return Err(format!("the run did not end: {job:#}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for `child` to die (a `kill` failpoint); errs if it lives on.
    fn wait_dead(&self, child: &mut Child, what: &str) -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(st) = child.try_wait()? {
                ensure!(
                    !st.success(),
                    "the daemon exited normally instead of dying at {what}"
                );
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the daemon did not die at failpoint {what}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One successful run with a clean daemon, stopped afterwards.
    pub(crate) fn initial_replication(&self) -> TestResult {
        let mut d = self.daemon(None)?;
        let r = self.run();
        let _ = d.kill();
        let _ = d.wait();
        ensure!(r? == "done", "initial replication failed");
        Ok(())
    }

    /// Runs (with a clean daemon) until a run succeeds; then one more run, after which the
    /// invariants must hold.
    pub(crate) fn converge(&self) -> TestResult {
        let mut d = self.daemon(None)?;
        let res = self.converge_running();
        let _ = d.kill();
        let _ = d.wait();
        res
    }

    /// [`Scenario::converge`] with the daemon that is running.
    pub(crate) fn converge_running(&self) -> TestResult {
        let mut ok = false;
        for _ in 0..3 {
            if self.run()? == "done" {
                ok = true;
                break;
            }
        }
        ensure!(
            ok,
            "no successful run after the crash:\n{}",
            self.log_tail()
        );
        self.check()
    }

    /// Where sender filesystem `<pool>/src/<fs>` lands on the receiver.
    pub(crate) fn recv(&self, fs: &str) -> String {
        format!("{}/client/{}/src/{fs}", self.sink, self.t.pool)
    }

    /// The invariants after a converged run (ARCHITECTURE.md, "Convergence").
    pub(crate) fn check(&self) -> TestResult {
        let t = &self.t;
        let step_tag = step_hold_tag(SENDER_JOB);
        let lr_tag = last_received_hold_tag(RECEIVER_JOB);
        let src_holds = all_holds(&path(t, "src"))?;
        ensure!(
            !src_holds
                .iter()
                .any(|h| h.ends_with(&format!(" {step_tag}"))),
            "step holds left on the sender: {src_holds:?}"
        );
        let sink_holds = all_holds(&self.sink)?;
        ensure!(
            !sink_holds.iter().any(|h| h.contains("zrepl_STEP")),
            "step holds on the receiver: {sink_holds:?}"
        );
        for fs in REPLICATED {
            let s = path(t, &format!("src/{fs}"));
            let r = self.recv(fs);
            let list = |ds: &str, typ: &str| -> Result<Vec<(String, u64)>, String> {
                Ok(zfs(&[
                    "list",
                    "-Hp",
                    "-o",
                    "name,guid",
                    "-t",
                    typ,
                    "-s",
                    "createtxg",
                    "-d",
                    "1",
                    ds,
                ])?
                .lines()
                .filter_map(|l| {
                    let (n, g) = l.split_once('\t')?;
                    let short = n[n.find(['@', '#'])? + 1..].to_string();
                    Some((short, g.parse().ok()?))
                })
                .collect())
            };
            let ssnaps = list(&s, "snapshot")?;
            let rsnaps = list(&r, "snapshot")?;
            let made = &self.made[*fs];
            // Everything made was replicated: the receiver's newest is the sender's newest.
            let newest = made.last().ok_or("no snapshots made")?;
            ensure!(
                rsnaps.last().map(|(n, _)| n) == Some(newest),
                "{fs}: receiver's newest is not {newest}: {rsnaps:?}"
            );
            // Equal guids for every snapshot both have.
            for (n, g) in &rsnaps {
                if let Some((_, sg)) = ssnaps.iter().find(|(sn, _)| sn == n) {
                    ensure!(sg == g, "{fs}@{n}: guid differs ({sg:#x} vs {g:#x})");
                }
            }
            // Keep rules: the newest KEEP on both sides survive.
            // (The receiver only from its first received snapshot on: an initial replication
            // sends the newest snapshot only.)
            let first_received = rsnaps
                .first()
                .and_then(|(n, _)| made.iter().position(|m| m == n))
                .unwrap_or(0);
            for (i, n) in made.iter().enumerate().rev().take(KEEP) {
                ensure!(
                    ssnaps.iter().any(|(s, _)| s == n),
                    "{fs}: sender lost {n}: {ssnaps:?}"
                );
                ensure!(
                    i < first_received || rsnaps.iter().any(|(s, _)| s == n),
                    "{fs}: receiver lost {n}: {rsnaps:?}"
                );
            }
            // Exactly one cursor of the job, at the receiver's newest; no tentative cursor.
            let bms = list(&s, "bookmark")?;
            let ours: Vec<(AbstractionType, u64)> = bms
                .iter()
                .filter_map(|(n, g)| {
                    let (typ, _, job) = parse_cursor_bookmark(n)?;
                    (job == Some(SENDER_JOB)).then_some((typ, *g))
                })
                .collect();
            let newest_guid = rsnaps.last().map(|(_, g)| *g).unwrap_or_default();
            ensure!(
                ours == [(AbstractionType::ReplicationCursorV2, newest_guid)],
                "{fs}: the job's bookmarks are not exactly one cursor at {newest}: {bms:?}"
            );
            // The last-received hold only on the receiver's newest.
            let held: Vec<&String> = sink_holds
                .iter()
                .filter(|h| h.starts_with(&format!("{r}@")) && h.ends_with(&format!(" {lr_tag}")))
                .collect();
            ensure!(
                held == [&format!("{r}@{newest} {lr_tag}")],
                "{fs}: last-received holds: {held:?}"
            );
            let tok = zfs(&["get", "-H", "-o", "value", "receive_resume_token", &r])?;
            ensure!(tok.trim() == "-", "{fs}: resume token left: {tok}");
            let ph = zfs(&["get", "-H", "-o", "value,source", "zrepl:placeholder", &r])?;
            ensure!(
                !ph.starts_with("on\tlocal") && !ph.starts_with("replacing\tlocal"),
                "{fs}: received filesystem still marked as a placeholder: {ph}"
            );
        }
        // The placeholders above the replicated filesystems keep their flag.
        let above = format!("{}/client/{}/src", self.sink, t.pool);
        let ph = zfs(&["get", "-H", "-o", "value", "zrepl:placeholder", &above])?;
        ensure!(
            ph.trim() == "on",
            "{above} is no longer a placeholder: {ph}"
        );
        // Nothing outside the filter or the receiver's root was touched.
        let outside = path(t, "src/outside");
        ensure!(
            crate::replication::holds(&format!("{outside}@users"))? == ["users-hold"],
            "a user's hold outside the filter changed"
        );
        ensure!(
            exists(&format!("{outside}#users")),
            "a user's bookmark outside the filter is gone"
        );
        ensure!(
            exists(&format!("{}#users", path(t, "src/a"))),
            "a user's bookmark on a replicated filesystem is gone"
        );
        ensure!(
            !exists(&format!("{}/client/{}/src/outside", self.sink, t.pool)),
            "a filesystem outside the filter was replicated"
        );
        Ok(())
    }
}

/// Crash at `failpoint` (`kill`) in a run that has work for it, restart, converge.
/// `prelude` is a failpoint to crash at first (the converge failpoints need a lost completion
/// to converge).
fn crash_at(t: Ctx, failpoint: &str, prelude: Option<&str>) -> TestResult {
    let mut s = Scenario::new(&t)?;
    let placeholder = matches!(
        failpoint,
        "receiver.receive.after_placeholder_cleared" | "receiver.receive.after_recv_before_unmark"
    );
    let snapshotting = failpoint == "snapshot.after_create";
    if placeholder {
        // `deep` is not replicated at first: it becomes a placeholder on the receiver.
        s.configure(&["a", "quiet", "deep/x"], "resumability", "{type: manual}")?;
    }
    // The first, initial replication.
    {
        let mut d = s.daemon(None)?;
        let r = s.run();
        let _ = d.kill();
        let _ = d.wait();
        ensure!(
            r? == "done",
            "initial replication failed:\n{}",
            s.log_tail()
        );
    }
    if placeholder {
        let ph = recv_path(&t, "deep");
        let v = zfs(&["get", "-H", "-o", "value", "zrepl:placeholder", &ph])?;
        ensure!(v.trim() == "on", "{ph} is not a placeholder: {v}");
        s.configure(REPLICATED, "resumability", "{type: manual}")?;
    }
    let fp = format!("{failpoint}=kill");
    if snapshotting {
        s.configure(
            REPLICATED,
            "resumability",
            "{type: periodic, prefix: zrepl_, interval: 10m}",
        )?;
        let mut d = s.daemon_raw(Some(&fp))?;
        s.wait_dead(&mut d, failpoint)?;
        // The snapshots exist; the next run replicates them.
        for fs in REPLICATED {
            let name = zfs(&[
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
                &path(&t, &format!("src/{fs}")),
            ])?
            .lines()
            .last()
            .and_then(|l| l.split_once('@').map(|(_, n)| n.to_string()))
            .ok_or("no snapshot")?;
            ensure!(
                name.starts_with("zrepl_"),
                "{fs}: the periodic snapshot is missing"
            );
            s.made.entry(fs.to_string()).or_default().push(name);
        }
        return s.converge();
    }
    // New data everywhere (big enough for the mid-stream point), then the crash.
    s.snapshots(REPLICATED, 2)?;
    if let Some(pre) = prelude {
        let mut d = s.daemon(Some(&format!("{pre}=kill")))?;
        s.zrepl(&["signal", "wakeup", SENDER_JOB])?;
        s.wait_dead(&mut d, pre)?;
    }
    let mut d = s.daemon(Some(&fp))?;
    s.zrepl(&["signal", "wakeup", SENDER_JOB])?;
    s.wait_dead(&mut d, failpoint)?;
    // Orphaned `zfs recv` processes finish or save their partial state.
    std::thread::sleep(Duration::from_secs(2));
    if placeholder {
        // The crash left the placeholder marked as being replaced: empty (the receive never
        // started) or with the received snapshot (the mark was not yet cleared).
        let ph = recv_path(&t, "deep");
        let v = zfs(&["get", "-H", "-o", "value,source", "zrepl:placeholder", &ph])?;
        ensure!(
            v.starts_with("replacing\tlocal"),
            "{ph} after the crash: {v}"
        );
        let snaps = zfs(&["list", "-H", "-t", "snapshot", "-d", "1", "-o", "name", &ph])?;
        let received = failpoint == "receiver.receive.after_recv_before_unmark";
        ensure!(
            snaps.trim().is_empty() != received,
            "{ph} after the crash at {failpoint} has snapshots {snaps:?}"
        );
    }
    s.converge()?;
    // And the quiet filesystem stays converged when only the others get new snapshots.
    s.snapshots(&["a", "deep", "deep/x"], 1)?;
    s.converge()
}

macro_rules! crash_tests {
    ($($name:ident => $fp:expr, $pre:expr;)*) => {
        $(pub async fn $name(t: Ctx) -> TestResult { crash_at(t, $fp, $pre) })*
        /// The failpoints covered by a crash test of this module.
        pub const COVERED: &[&str] = &[$($fp),*];
    };
}

crash_tests! {
    crash_after_step_holds => "sender.prepare_sends.after_holds", None;
    crash_mid_stream => "driver.step.mid_stream", None;
    crash_after_receive_before_completion => "driver.step.after_receive", None;
    crash_after_receives_completed => "driver.complete.after_receives_completed", None;
    crash_between_new_cursor_and_old_cursor => "sender.complete.after_new_cursor", None;
    crash_during_last_received_hold_move => "receiver.complete.after_new_hold", None;
    crash_after_placeholder_marked_before_recv => "receiver.receive.after_placeholder_cleared", None;
    crash_after_placeholder_replaced_before_unmark => "receiver.receive.after_recv_before_unmark", None;
    crash_in_convergence_after_new_cursor => "converge.sender.after_new_cursor", Some("driver.step.after_receive");
    crash_in_convergence_after_new_hold => "converge.receiver.after_new_hold", Some("driver.step.after_receive");
    crash_in_pruning_after_sender_destroys => "prune.sender.after_destroy", None;
    crash_after_snapshotting => "snapshot.after_create", None;
}

/// zrepl's `ReplicationStepCompletedLostBehavior` (the crash window found from outside): the
/// completion of a round is lost after all four receives; the next run has no new snapshot, and
/// still leaves every filesystem clean (no step holds or tentative cursors, cursor and
/// last-received hold on the newest).
fn lost_completion(t: Ctx, protection: &str) -> TestResult {
    let mut s = Scenario::new(&t)?;
    // The runs' listings are compared: without the listings cache, which would make the run
    // after the converging one list less (what converging costs is the question here).
    s.env.push((
        zrepl_endpoint::listings::CACHE_ENV.to_string(),
        "off".to_string(),
    ));
    s.configure(REPLICATED, protection, "{type: manual}")?;
    s.initial_replication()?;
    s.snapshots(REPLICATED, 1)?;
    let mut d = s.daemon(Some("driver.step.after_receive=kill@4"))?;
    s.zrepl(&["signal", "wakeup", SENDER_JOB])?;
    s.wait_dead(&mut d, "driver.step.after_receive")?;
    // Everything was received; the sender still has its step holds (or tentative cursors) and
    // lagging cursors, the receiver its old last-received holds.
    let src_holds = all_holds(&path(&t, "src"))?;
    if protection == "resumability" {
        ensure!(
            src_holds.iter().any(|h| h.contains("zrepl_STEP_J_")),
            "the crash left no step hold to converge from: {src_holds:?}"
        );
    }
    // The converging run lists exactly as much as a run with nothing to converge.
    let mut d = s.daemon(None)?;
    let res: TestResult = (|| {
        let listings = || -> Result<u64, String> {
            let st = s.status()?;
            let started = &st["global"]["zfs_commands"]["started"];
            Ok(["zfs list", "zfs get"]
                .iter()
                .map(|k| started[*k].as_u64().unwrap_or(0))
                .sum())
        };
        let l0 = listings()?;
        ensure!(
            s.run()? == "done",
            "the converging run failed:\n{}",
            s.log_tail()
        );
        let l1 = listings()?;
        s.check()?;
        ensure!(s.run()? == "done", "the run after it failed");
        let l2 = listings()?;
        ensure!(
            l1 - l0 == l2 - l1,
            "converging listed more: {} listings against {} of a run with nothing to converge",
            l1 - l0,
            l2 - l1
        );
        s.check()
    })();
    let _ = d.kill();
    let _ = d.wait();
    res
}

pub async fn crash_lost_completion_converges_guarantee_resumability(t: Ctx) -> TestResult {
    lost_completion(t, "resumability")
}

pub async fn crash_lost_completion_converges_guarantee_incremental(t: Ctx) -> TestResult {
    lost_completion(t, "incremental")
}

/// The `error` action: an injected failure fails the run (the daemon lives on and reports
/// it); the next run without it converges.
pub async fn crash_injected_error_fails_the_run_then_converges(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    s.initial_replication()?;
    s.snapshots(REPLICATED, 1)?;
    let mut d = s.daemon(Some("driver.step.after_receive=error"))?;
    let res: TestResult = (|| {
        ensure!(
            s.run()? == "failed",
            "the injected error did not fail the run"
        );
        let st = s.status()?;
        ensure!(
            st.to_string()
                .contains("failpoint driver.step.after_receive injected an error"),
            "the run's report does not name the injected error: {st:#}"
        );
        Ok(())
    })();
    let _ = d.kill();
    let _ = d.wait();
    res?;
    s.converge()
}

/// A round that fails after the receiver completed and before the sender moved its cursors
/// leaves its step holds (an `error`, the daemon lives on); the next runs of the same daemon
/// (its listings cache kept, no restart) find them, move the cursors and converge.
pub async fn crash_injected_error_converges_in_the_same_daemon(t: Ctx) -> TestResult {
    let mut s = Scenario::new(&t)?;
    s.initial_replication()?;
    // Only the first completion of this daemon fails.
    let mut d = s.daemon(Some("driver.complete.after_receives_completed=error@1"))?;
    let res: TestResult = (|| {
        s.snapshots(REPLICATED, 1)?;
        ensure!(
            s.run()? == "failed",
            "the injected error did not fail the run"
        );
        let step_tag = step_hold_tag(SENDER_JOB);
        let left = all_holds(&path(&t, "src"))?;
        ensure!(
            left.iter().any(|h| h.ends_with(&format!(" {step_tag}"))),
            "the failed round left no step holds: {left:?}"
        );
        s.converge_running()
    })();
    let _ = d.kill();
    let _ = d.wait();
    res
}

/// The kill-anywhere campaign: rounds with fresh data (the quiet filesystem only every fourth
/// round), about half of them with `replication.packages`, the daemon killed at a random
/// moment (sometimes its `zfs` processes too), restarted;
/// at the end one clean run must converge with every invariant holding.
/// `ZREPL_CAMPAIGN_KILLS` sets the number of kills (CI: 6; `tools/kill-campaign.sh`: 100+).
pub async fn crash_kill_anywhere_campaign(t: Ctx) -> TestResult {
    let kills: usize = std::env::var("ZREPL_CAMPAIGN_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut seed: u64 = std::env::var("ZREPL_CAMPAIGN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("  campaign: {kills} kills, ZREPL_CAMPAIGN_SEED={seed}");
    let seed0 = seed;
    let mut rand = move |n: u64| {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    };
    let mut s = Scenario::new(&t)?;
    s.replace_files = true;
    let mut rounds = 0;
    let mut killed_mid_run = 0;
    let mut packaged = 0;
    for k in 0..kills {
        // A clean run (with the invariants checked) every few kills: it prunes, which killed
        // runs rarely get to, so that snapshots do not pile up beyond the test pool's space.
        if k > 0 && k % CLEAN_EVERY == 0 {
            s.converge()
                .map_err(|e| format!("after {k} kills (ZREPL_CAMPAIGN_SEED={seed0}): {e}"))?;
        }
        // About half of the runs send consecutive new snapshots as `-I` packages (issue 18),
        // so kills also land inside a package and between its substreams; switching between
        // the two between runs must not matter either.
        let packages = rand(2) == 0;
        packaged += usize::from(packages);
        s.replication_extra = if packages {
            ", packages: true".into()
        } else {
            String::new()
        };
        s.configure(REPLICATED, "resumability", "{type: manual}")?;
        let fss: Vec<&str> = if k % 4 == 0 {
            REPLICATED.to_vec()
        } else {
            vec!["a", "deep", "deep/x"]
        };
        s.snapshots(&fss, 1 + rand(2) as usize)?;
        let mut d = s.daemon(None)?;
        s.zrepl(&["signal", "wakeup", SENDER_JOB])?;
        // Random moment: within the first ~4 s of the run (a round here takes a few seconds).
        std::thread::sleep(Duration::from_millis(rand(4000)));
        let running = s
            .status()
            .map(|st| st["jobs"][SENDER_JOB]["state"] != "idle")
            .unwrap_or(false);
        if running {
            killed_mid_run += 1;
        }
        d.kill()?;
        d.wait()?;
        if rand(3) == 0 {
            let _ = sh(&["pkill", "-KILL", "-x", "zfs"]);
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let res = s.converge();
    eprintln!(
        "  campaign: kills={kills} rounds={rounds} killed_mid_run={killed_mid_run} packaged={packaged} violations={}",
        usize::from(res.is_err())
    );
    res
}
