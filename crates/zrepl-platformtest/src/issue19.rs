//! Issue 19, items 6 and 8 on real OpenZFS: session hooks of a sink (over tcp and over
//! `local`), and `snapshotting.backpressure` of a push job whose receiver goes away.

use std::time::{Duration, Instant};

use crate::pool::sh;
use crate::replication::{create, exists, snapshot, spawn_daemon, write, zfs};
use crate::{Ctx, TestResult};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)).into());
        }
    };
}

/// `zrepl --config CFG ARGS`: exit code and stdout + stderr.
fn zrepl(cfg: &str, args: &[&str]) -> Result<(i32, String), String> {
    let out = std::process::Command::new("zrepl")
        .args(["--config", cfg])
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

fn status(cfg: &str) -> Result<serde_json::Value, String> {
    let (code, out) = zrepl(cfg, &["status", "--mode", "raw"])?;
    ensure!(code == 0, "zrepl status: {out}");
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

fn tail(path: &str) -> String {
    let l = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = l.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits (`secs` at most) until the hook log has a line starting with `prefix`; that line.
fn wait_line(log: &str, prefix: &str, secs: u64) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let l = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = l.lines().find(|l| l.starts_with(prefix)) {
            return Ok(line.to_string());
        }
        if Instant::now() > deadline {
            return Err(format!("no hook line {prefix:?} in:\n{l}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sink session hooks: over tcp a session is the push client's control connection, over
/// `local` one run of the push job. Both hooks see the client, the root, the received
/// filesystems and the result; a fatal pre failure refuses the client's session, which the
/// push job reports (`wakeup --wait` exits 3) and nothing is received; post still runs.
pub(crate) async fn issue19_sink_session_hooks_tcp_and_local(t: Ctx) -> TestResult {
    let p = &t.pool;
    let a = create(&t, "src/a")?;
    let b = create(&t, "src/b")?;
    create(&t, "sink")?;
    create(&t, "sinkl")?;
    for fs in [&a, &b] {
        write(fs, "f", 1)?;
        snapshot(&format!("{fs}@1"))?;
    }
    let dir = format!("/tmp/{p}-issue19-hooks");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let hooklog = format!("{dir}/hooks.log");
    let _ = std::fs::remove_file(&hooklog);
    let script = format!(
        "#!/bin/sh\nfss=$(printf '%s' \"$ZREPL_FILESYSTEMS\" | tr '\\n' ',')\n\
         echo \"$ZREPL_HOOKTYPE job=$ZREPL_JOB_NAME session=$ZREPL_SESSION client=$ZREPL_CLIENT root=$ZREPL_ROOT result=$ZREPL_RESULT fss=$fss err=$ZREPL_JOB_ERR\" >> {hooklog}\n\
         [ \"$ZREPL_HOOKTYPE\" = pre_replication ] && [ -e {dir}/fail-$ZREPL_JOB_NAME ] && {{ echo 'no space for you' >&2; exit 9; }}\nexit 0\n"
    );
    std::fs::write(format!("{dir}/hook"), script).map_err(|e| e.to_string())?;
    sh(&["chmod", "755", &format!("{dir}/hook")])?;
    let hooks = format!(
        "  hooks:\n    pre: {{path: {dir}/hook, err_is_fatal: true, timeout: 30s}}\n    post: {{path: {dir}/hook}}\n"
    );
    let keep = "pruning: {keep_sender: [{type: regex, regex: \".*\"}], keep_receiver: [{type: regex, regex: \".*\"}]}";
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: sink\n  name: sink\n  root_fs: {p}/sink\n  recv: {{placeholder: {{encryption: inherit}}}}\n  serve: {{type: tcp, listen: \"127.0.0.1:28901\", clients: {{\"127.0.0.1\": c}}}}\n{hooks}\
             - type: push\n  name: push\n  connect: {{type: tcp, address: \"127.0.0.1:28901\"}}\n  filesystems: {{\"{a}\": true}}\n  snapshotting: {{type: manual}}\n  {keep}\n\
             - type: sink\n  name: sinkl\n  root_fs: {p}/sinkl\n  recv: {{placeholder: {{encryption: inherit}}}}\n  serve: {{type: local, listener_name: l}}\n{hooks}\
             - type: push\n  name: pushl\n  connect: {{type: local, listener_name: l, client_identity: cl}}\n  filesystems: {{\"{b}\": true}}\n  snapshotting: {{type: manual}}\n  {keep}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let daemon_log = format!("{dir}/daemon.log");
    let mut d = spawn_daemon(&cfg, &daemon_log)?;
    let res: TestResult = (|| {
        // Over tcp: one session for the push job's run (replication and pruning).
        let (code, out) = zrepl(&cfg, &["signal", "wakeup", "push", "--wait"])?;
        ensure!(code == 0, "exit {code}: {out}\n{}", tail(&daemon_log));
        let pre = wait_line(&hooklog, "pre_replication job=sink ", 10)?;
        ensure!(
            pre == format!(
                "pre_replication job=sink session=1 client=c root={p}/sink/c result= fss= err="
            ),
            "pre: {pre}"
        );
        // The post hook runs when the client has closed its connection (after --wait returned).
        let post = wait_line(&hooklog, "post_replication job=sink ", 20)?;
        ensure!(
            post == format!("post_replication job=sink session=1 client=c root={p}/sink/c result=done fss={p}/sink/c/{a} err="),
            "post: {post}"
        );
        // Over local: the push job's run is the session; post has run when the run ends.
        let (code, out) = zrepl(&cfg, &["signal", "wakeup", "pushl", "--wait"])?;
        ensure!(code == 0, "exit {code}: {out}\n{}", tail(&daemon_log));
        let l = std::fs::read_to_string(&hooklog).map_err(|e| e.to_string())?;
        let local: Vec<&str> = l.lines().filter(|l| l.contains(" job=sinkl ")).collect();
        ensure!(
            local
                == [
                    format!("pre_replication job=sinkl session=1 client=cl root={p}/sinkl/cl result= fss= err="),
                    format!("post_replication job=sinkl session=1 client=cl root={p}/sinkl/cl result=done fss={p}/sinkl/cl/{b} err="),
                ],
            "local session hooks: {l}"
        );
        // Only one session per run over tcp (stream connections are no sessions).
        ensure!(
            l.lines().filter(|l| l.contains(" job=sink ")).count() == 2,
            "hook lines of the tcp sink: {l}"
        );

        // A fatal pre failure refuses the session: the push run fails with the hook's error.
        std::fs::write(format!("{dir}/fail-sink"), "").map_err(|e| e.to_string())?;
        write(&a, "g", 1)?;
        snapshot(&format!("{a}@2"))?;
        let (code, out) = zrepl(&cfg, &["signal", "wakeup", "push", "--wait"])?;
        ensure!(code == 3, "exit {code}: {out}");
        ensure!(
            out.contains("refused the session of client \\\"c\\\"")
                || out.contains("refused the session of client \"c\""),
            "the client does not report the refusal: {out}"
        );
        ensure!(
            !exists(&format!("{p}/sink/c/{a}@2")),
            "a refused session received a snapshot"
        );
        let post = wait_line(&hooklog, "post_replication job=sink session=2 ", 20)?;
        ensure!(
            post.contains("result=failed")
                && post.contains("refused the session")
                && post.contains("fss= "),
            "post of the refused session: {post}"
        );
        // The local sink is not affected; the tcp sink serves again without the failure.
        std::fs::remove_file(format!("{dir}/fail-sink")).map_err(|e| e.to_string())?;
        let (code, out) = zrepl(&cfg, &["signal", "wakeup", "push", "--wait"])?;
        ensure!(code == 0, "exit {code}: {out}");
        ensure!(
            exists(&format!("{p}/sink/c/{a}@2")),
            "not received after the refusal ended"
        );
        let log = std::fs::read_to_string(&daemon_log).unwrap_or_default();
        ensure!(
            log.contains("no space for you"),
            "the hook's stderr is not logged"
        );
        Ok(())
    })();
    let _ = d.kill();
    let _ = d.wait();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// Snapshots of the job's prefix on `fs`.
fn count_snapshots(fs: &str) -> Result<usize, String> {
    Ok(
        zfs(&["list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", fs])?
            .lines()
            .filter(|l| l.contains("@zrepl_"))
            .count(),
    )
}

/// A push job snapshotting every 3 s with `backpressure: {max_lag: 20s}`: while it replicates,
/// nothing is held back; while its receiver is gone, snapshots go on until the oldest
/// unreplicated one is older than 20 s, then stop (status error and log say why); when the
/// receiver is back, the next run replicates and snapshots resume.
pub(crate) async fn issue19_backpressure_stops_and_resumes_snapshots(t: Ctx) -> TestResult {
    let p = &t.pool;
    let a = create(&t, "src/a")?;
    let b = create(&t, "src/b")?;
    let sink = create(&t, "sink")?;
    let dir = format!("/tmp/{p}-issue19-bp");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: sink\n  name: sink\n  root_fs: {sink}\n  recv: {{placeholder: {{encryption: inherit}}}}\n  serve: {{type: local, listener_name: l}}\n\
             - type: push\n  name: push\n  connect: {{type: local, listener_name: l, client_identity: c}}\n  filesystems: {{\"{a}\": true, \"{b}\": true}}\n\
             \x20 snapshotting: {{type: periodic, prefix: zrepl_, interval: 3s, backpressure: {{max_lag: 20s}}}}\n\
             \x20 pruning: {{keep_sender: [{{type: regex, regex: \".*\"}}], keep_receiver: [{{type: regex, regex: \".*\"}}]}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let daemon_log = format!("{dir}/daemon.log");
    let mut d = spawn_daemon(&cfg, &daemon_log)?;
    let away = format!("{p}/away");
    let res: TestResult = (|| {
        let snap_error = |st: &serde_json::Value| {
            st["jobs"]["push"]["snapshotting"]["error"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        // Replicating: snapshots are taken and replicated.
        let deadline = Instant::now() + Duration::from_secs(60);
        while status(&cfg)?["jobs"]["push"]["last_successful_replication"].is_null() {
            ensure!(
                Instant::now() < deadline,
                "no successful run\n{}",
                tail(&daemon_log)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        // Replication keeps up (a run takes a few seconds in the VM): nothing is held back.
        std::thread::sleep(Duration::from_secs(8));
        let st = status(&cfg)?;
        ensure!(
            !snap_error(&st).contains("backpressure"),
            "held back while replicating: {:#}",
            st["jobs"]["push"]["snapshotting"]
        );
        // The receiver goes away: runs fail, snapshots go on until the lag exceeds 20 s.
        zfs(&["rename", &sink, &away])?;
        let at_rename = count_snapshots(&a)?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let st = status(&cfg)?;
            if snap_error(&st).contains("backpressure") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "snapshotting never held back: {:#}\n{}",
                st["jobs"]["push"]["snapshotting"],
                tail(&daemon_log)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let held = count_snapshots(&a)?;
        ensure!(
            held > at_rename,
            "no snapshot was taken after the receiver went away ({at_rename} -> {held})"
        );
        let err = snap_error(&status(&cfg)?);
        ensure!(
            err.contains("not snapshotted") && err.contains(&a) && err.contains(&b),
            "status error: {err}"
        );
        let before = (count_snapshots(&a)?, count_snapshots(&b)?);
        std::thread::sleep(Duration::from_secs(10));
        let after = (count_snapshots(&a)?, count_snapshots(&b)?);
        ensure!(
            before == after,
            "snapshots were taken while held back: {before:?} -> {after:?}"
        );
        let log = std::fs::read_to_string(&daemon_log).unwrap_or_default();
        ensure!(
            log.contains("replication lags behind"),
            "the held-back filesystems are not logged\n{}",
            tail(&daemon_log)
        );
        // The receiver is back: the next run (woken by the snapshotter's round) replicates the
        // backlog, and the round after it snapshots again.
        zfs(&["rename", &away, &sink])?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let now = (count_snapshots(&a)?, count_snapshots(&b)?);
            if now.0 > after.0 && now.1 > after.1 && snap_error(&status(&cfg)?).is_empty() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "snapshots did not resume: {now:?}, status {:#}\n{}",
                status(&cfg)?["jobs"]["push"]["snapshotting"],
                tail(&daemon_log)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    })();
    let _ = d.kill();
    let _ = d.wait();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// A source job with session hooks and `backpressure: {max_lag: 20s}`, pulled over tcp by a
/// pull job of the same daemon: the pull's session runs the source's hooks (the client, the
/// filesystems sent, no root); a filesystem never pulled (no cursor) is not held back; once
/// pulled, snapshots stop when no pull came for longer than `max_lag` (the source's cursor is
/// moved by the pull client's completions) and resume after the next pull.
pub(crate) async fn issue19_source_session_hooks_and_backpressure(t: Ctx) -> TestResult {
    let p = &t.pool;
    let a = create(&t, "src/a")?;
    create(&t, "pulled")?;
    let dir = format!("/tmp/{p}-issue19-src");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let hooklog = format!("{dir}/hooks.log");
    let _ = std::fs::remove_file(&hooklog);
    let script = format!(
        "#!/bin/sh\nfss=$(printf '%s' \"$ZREPL_FILESYSTEMS\" | tr '\\n' ',')\n\
         echo \"$ZREPL_HOOKTYPE job=$ZREPL_JOB_NAME session=$ZREPL_SESSION client=$ZREPL_CLIENT root=${{ZREPL_ROOT-unset}} result=$ZREPL_RESULT fss=$fss err=$ZREPL_JOB_ERR\" >> {hooklog}\n"
    );
    std::fs::write(format!("{dir}/hook"), script).map_err(|e| e.to_string())?;
    sh(&["chmod", "755", &format!("{dir}/hook")])?;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: source\n  name: source\n  serve: {{type: tcp, listen: \"127.0.0.1:28911\", clients: {{\"127.0.0.1\": c}}}}\n  filesystems: {{\"{a}\": true}}\n\
             \x20 snapshotting: {{type: periodic, prefix: zrepl_, interval: 3s, backpressure: {{max_lag: 20s}}}}\n\
             \x20 hooks: {{pre: {{path: {dir}/hook}}, post: {{path: {dir}/hook}}}}\n\
             - type: pull\n  name: pull\n  root_fs: {p}/pulled\n  interval: manual\n  recv: {{placeholder: {{encryption: inherit}}}}\n  connect: {{type: tcp, address: \"127.0.0.1:28911\"}}\n\
             \x20 pruning: {{keep_sender: [{{type: regex, regex: \".*\"}}], keep_receiver: [{{type: regex, regex: \".*\"}}]}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let daemon_log = format!("{dir}/daemon.log");
    let mut d = spawn_daemon(&cfg, &daemon_log)?;
    let res: TestResult = (|| {
        let snap_error = |st: &serde_json::Value| {
            st["jobs"]["source"]["snapshotting"]["error"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        // Never pulled: no cursor, snapshots go on past max_lag.
        std::thread::sleep(Duration::from_secs(26));
        let st = status(&cfg)?;
        ensure!(
            !snap_error(&st).contains("backpressure") && count_snapshots(&a)? >= 6,
            "a filesystem never pulled was held back: {:#}",
            st["jobs"]["source"]["snapshotting"]
        );
        let (code, out) = zrepl(&cfg, &["signal", "wakeup", "pull", "--wait"])?;
        ensure!(code == 0, "exit {code}: {out}\n{}", tail(&daemon_log));
        let pre = wait_line(&hooklog, "pre_replication job=source ", 10)?;
        ensure!(
            pre == "pre_replication job=source session=1 client=c root=unset result= fss= err=",
            "pre: {pre}"
        );
        let post = wait_line(&hooklog, "post_replication job=source session=1 ", 20)?;
        ensure!(
            post == format!("post_replication job=source session=1 client=c root=unset result=done fss={a} err="),
            "post: {post}"
        );
        // No pull for longer than max_lag: the source stops snapshotting.
        let deadline = Instant::now() + Duration::from_secs(90);
        while !snap_error(&status(&cfg)?).contains("backpressure") {
            ensure!(
                Instant::now() < deadline,
                "the source never held back\n{}",
                tail(&daemon_log)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let held = count_snapshots(&a)?;
        std::thread::sleep(Duration::from_secs(8));
        ensure!(
            count_snapshots(&a)? == held,
            "the source snapshotted while held back"
        );
        // A pull replicates the backlog and moves the cursor: snapshots resume.
        let (code, out) = zrepl(&cfg, &["signal", "wakeup", "pull", "--wait"])?;
        ensure!(code == 0, "exit {code}: {out}\n{}", tail(&daemon_log));
        let deadline = Instant::now() + Duration::from_secs(60);
        while count_snapshots(&a)? == held || !snap_error(&status(&cfg)?).is_empty() {
            ensure!(
                Instant::now() < deadline,
                "the source did not resume snapshotting\n{}",
                tail(&daemon_log)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    })();
    let _ = d.kill();
    let _ = d.wait();
    let _ = std::fs::remove_dir_all(&dir);
    res
}
