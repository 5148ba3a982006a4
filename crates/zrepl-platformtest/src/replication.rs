//! Replication platform tests: the endpoints and the driver on real OpenZFS, with zrepl 0.7's
//! on-disk abstractions, and the daemon end to end (`zrepl` binary beside this one).
//!
//! Layout in every test: the sender's filesystems live under `<pool>/src`, the receiving job's
//! `root_fs` is `<pool>/sink` and the client identity is `client`, so `<pool>/src/a` arrives at
//! `<pool>/sink/client/<pool>/src/a`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use zrepl_endpoint::{LocalReceiver, LocalSender, PlaceholderPolicy, ReceiverConfig, SenderConfig};
use zrepl_filters::DatasetFilter;
use zrepl_protocol::{
    ByteStream, EndpointError, FilesystemInfo, Protection, Receiver, ReplicationConfig,
    SendRequest, SendResponse, Sender,
};
use zrepl_replication::{DriverConfig, FsState, ReportHandle, RunReport, RunState};
use zrepl_zfs::{DatasetPath, FilesystemVersion};
use zrepl_zfs_types::abstraction::{cursor_bookmark_name, last_received_hold_tag, step_hold_tag};
use zrepl_zfs_types::resume_token;

use crate::pool::sh;
use crate::{Ctx, TestResult};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)).into());
        }
    };
}

pub(crate) const SENDER_JOB: &str = "push";
pub(crate) const RECEIVER_JOB: &str = "sink";

pub(crate) fn path(t: &Ctx, rel: &str) -> String {
    format!("{}/{rel}", t.pool)
}

pub(crate) fn dp(s: &str) -> DatasetPath {
    DatasetPath::parse(s).expect("valid dataset path")
}

/// Where sender filesystem `<pool>/src/<rel>` lands on the receiver.
pub(crate) fn recv_path(t: &Ctx, rel: &str) -> String {
    format!("{}/sink/client/{}/src/{rel}", t.pool, t.pool)
}

pub(crate) fn zfs(args: &[&str]) -> Result<String, String> {
    let mut v = vec!["zfs"];
    v.extend_from_slice(args);
    sh(&v)
}

pub(crate) fn guid(name: &str) -> Result<u64, String> {
    zfs(&["get", "-Hp", "-o", "value", "guid", name])?
        .trim()
        .parse()
        .map_err(|e| format!("guid of {name}: {e}"))
}

pub(crate) fn exists(name: &str) -> bool {
    zfs(&["get", "-H", "-o", "value", "name", name]).is_ok()
}

/// Short names (`@x`, `#y`) of the snapshots and bookmarks of `fs`, oldest first.
pub(crate) fn versions(fs: &str) -> Result<Vec<String>, String> {
    let out = zfs(&[
        "list",
        "-H",
        "-o",
        "name",
        "-t",
        "snapshot,bookmark",
        "-s",
        "createtxg",
        "-d",
        "1",
        fs,
    ])?;
    Ok(out
        .lines()
        .map(|l| l[l.find(['@', '#']).unwrap_or(0)..].to_string())
        .collect())
}

pub(crate) fn holds(snap: &str) -> Result<Vec<String>, String> {
    Ok(zfs(&["holds", "-H", snap])?
        .lines()
        .filter_map(|l| l.split('\t').nth(1).map(str::to_string))
        .collect())
}

/// All holds (`snapshot tag`) on all snapshots of `root` and its descendants.
pub(crate) fn all_holds(root: &str) -> Result<Vec<String>, String> {
    let snaps: Vec<String> = zfs(&["list", "-H", "-o", "name", "-t", "snapshot", "-r", root])?
        .lines()
        .map(str::to_string)
        .collect();
    if snaps.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["holds", "-H"];
    args.extend(snaps.iter().map(String::as_str));
    Ok(zfs(&args)?
        .lines()
        .map(|l| l.split('\t').take(2).collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect())
}

pub(crate) fn create(t: &Ctx, rel: &str) -> Result<String, String> {
    let p = path(t, rel);
    zfs(&["create", "-p", &p])?;
    Ok(p)
}

pub(crate) fn snapshot(name: &str) -> Result<(), String> {
    zfs(&["snapshot", name]).map(|_| ())
}

pub(crate) fn write(fs: &str, file: &str, mib: usize) -> Result<(), String> {
    let mp = zfs(&["get", "-H", "-o", "value", "mountpoint", fs])?
        .trim()
        .to_string();
    sh(&[
        "dd",
        "if=/dev/urandom",
        &format!("of={mp}/{file}"),
        "bs=1M",
        &format!("count={mib}"),
        "status=none",
    ])?;
    sh(&["sync"]).map(|_| ())
}

pub(crate) fn sender(t: &Ctx, filter: &[(&str, bool)]) -> LocalSender {
    let pats: Vec<(String, bool)> = filter.iter().map(|(p, b)| (path(t, p), *b)).collect();
    let f = DatasetFilter::new(pats.iter().map(|(p, b)| (p.as_str(), *b))).expect("valid filter");
    LocalSender::new(t.zfs.clone(), SenderConfig::new(SENDER_JOB, f), &t.reg)
}

pub(crate) fn receiver(
    t: &Ctx,
    identity: &str,
    placeholder: PlaceholderPolicy,
) -> Result<LocalReceiver, String> {
    receiver_in(t, identity, placeholder, &t.reg)
}

/// [`receiver`] with the endpoints' state of `reg` (listings cache or not).
pub(crate) fn receiver_in(
    t: &Ctx,
    identity: &str,
    placeholder: PlaceholderPolicy,
    reg: &zrepl_endpoint::Registry,
) -> Result<LocalReceiver, String> {
    let root = path(t, "sink");
    if !exists(&root) {
        zfs(&["create", &root])?;
    }
    LocalReceiver::new(
        t.zfs.clone(),
        ReceiverConfig {
            job: RECEIVER_JOB.into(),
            root_fs: dp(&root),
            client_identity: Some(identity.into()),
            placeholder,
            inherit: vec![],
            override_: vec![],
            bandwidth_limit: None,
            identity_component: true,
            strip_prefix: None,
        },
        reg,
    )
    .map_err(|e| e.to_string())
}

pub(crate) async fn replicate<S: Sender, R: Receiver>(
    s: &S,
    r: &R,
    cfg: &DriverConfig,
) -> RunReport {
    let report = ReportHandle::new(chrono::Utc::now());
    zrepl_replication::run(s, r, cfg, &report, &CancellationToken::new()).await;
    report.snapshot()
}

pub(crate) fn one_attempt() -> DriverConfig {
    DriverConfig {
        max_attempts: 1,
        ..DriverConfig::default()
    }
}

pub(crate) fn must_succeed(r: &RunReport) -> TestResult {
    ensure!(r.state == RunState::Done, "run failed: {r:#?}");
    Ok(())
}

pub(crate) fn fs_report<'a>(
    r: &'a RunReport,
    fs: &str,
) -> Result<&'a zrepl_replication::FilesystemReport, String> {
    r.attempts
        .last()
        .and_then(|a| a.filesystems.iter().find(|f| f.name == fs))
        .ok_or_else(|| format!("{fs} not in report: {r:#?}"))
}

/// Starts `zrepl daemon` with `cfg`, output to `log_path`, and waits until its control socket
/// answers.
pub(crate) fn spawn_daemon(cfg: &str, log_path: &str) -> Result<std::process::Child, String> {
    let log = std::fs::File::create(log_path).map_err(|e| e.to_string())?;
    let mut child = start_daemon(cfg, log, None, &[])?;
    wait_daemon(cfg, &mut child, log_path)?;
    Ok(child)
}

/// Starts `zrepl daemon` with `cfg`, output to `log`, with `ZREPL_FAILPOINTS` set to
/// `failpoints` (or removed) and `env` added; does not wait for it.
pub(crate) fn start_daemon(
    cfg: &str,
    log: std::fs::File,
    failpoints: Option<&str>,
    env: &[(String, String)],
) -> Result<std::process::Child, String> {
    let mut cmd = Command::new("zrepl");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.args(["--config", cfg, "daemon"])
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .stdin(Stdio::null());
    match failpoints {
        Some(f) => cmd.env("ZREPL_FAILPOINTS", f),
        None => cmd.env_remove("ZREPL_FAILPOINTS"),
    };
    cmd.spawn()
        .map_err(|e| format!("cannot start zrepl daemon (is zrepl in PATH?): {e}"))
}

/// Waits until the daemon answers on its control socket; errs (and kills it) if it exits or
/// does not answer within 30 s.
pub(crate) fn wait_daemon(
    cfg: &str,
    child: &mut std::process::Child,
    log_path: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sh(&["zrepl", "--config", cfg, "status", "--mode", "raw"]).is_err() {
        let log = || std::fs::read_to_string(log_path).unwrap_or_default();
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("daemon exited at start ({st}):\n{}", log()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "daemon did not answer on its control socket:\n{}",
                log()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A sender whose streams end after `cut` bytes: the receiver sees a truncated stream, exactly
/// like a connection cut mid-transfer.
pub(crate) struct CuttingSender {
    pub(crate) inner: LocalSender,
    pub(crate) cut: u64,
}

impl Sender for CuttingSender {
    async fn list_filesystems(&self) -> zrepl_protocol::Result<Vec<FilesystemInfo>> {
        self.inner.list_filesystems().await
    }
    async fn list_versions(
        &self,
        fs: &DatasetPath,
    ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
        self.inner.list_versions(fs).await
    }
    async fn send_dry(&self, req: &SendRequest) -> zrepl_protocol::Result<u64> {
        self.inner.send_dry(req).await
    }
    async fn send(&self, req: SendRequest) -> zrepl_protocol::Result<(SendResponse, ByteStream)> {
        let (res, stream) = self.inner.send(req).await?;
        Ok((res, Box::pin(stream.take(self.cut))))
    }
    async fn send_completed(&self, req: &SendRequest) -> zrepl_protocol::Result<()> {
        self.inner.send_completed(req).await
    }
    async fn converge(
        &self,
        reqs: &[zrepl_protocol::ConvergeRequest],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<()>>> {
        self.inner.converge(reqs).await
    }
    async fn replication_cursor(
        &self,
        fs: &DatasetPath,
    ) -> zrepl_protocol::Result<Option<FilesystemVersion>> {
        self.inner.replication_cursor(fs).await
    }
    async fn destroy_snapshots(
        &self,
        fs: &DatasetPath,
        s: &[FilesystemVersion],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::DestroyResult>> {
        self.inner.destroy_snapshots(fs, s).await
    }
}

pub async fn repl_initial_then_incremental_chain(t: Ctx) -> TestResult {
    let a = create(&t, "src/a")?;
    write(&a, "f1", 2)?;
    snapshot(&format!("{a}@1"))?;
    let s = sender(&t, &[("src/a", true)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    let ra = recv_path(&t, "a");
    ensure!(
        guid(&format!("{ra}@1"))? == guid(&format!("{a}@1"))?,
        "guid of @1"
    );
    for n in 2..=4 {
        write(&a, &format!("f{n}"), 1)?;
        snapshot(&format!("{a}@{n}"))?;
    }
    let rep = replicate(&s, &r, &one_attempt()).await;
    must_succeed(&rep)?;
    let steps: Vec<String> = fs_report(&rep, &a)?
        .steps
        .iter()
        .map(|s| format!("{:?} => {}", s.from, s.to))
        .collect();
    ensure!(
        steps
            == [
                "Some(\"@1\") => @2",
                "Some(\"@2\") => @3",
                "Some(\"@3\") => @4"
            ],
        "{steps:?}"
    );
    for n in 1..=4 {
        ensure!(
            guid(&format!("{ra}@{n}"))? == guid(&format!("{a}@{n}"))?,
            "guid of @{n} differs"
        );
    }
    // resumability: cursor on the newest, no step holds left; last-received hold on the newest.
    let g4 = guid(&format!("{a}@4"))?;
    let sv = versions(&a)?;
    ensure!(
        sv.contains(&format!("#{}", cursor_bookmark_name(g4, SENDER_JOB))),
        "{sv:?}"
    );
    ensure!(
        sv.iter().filter(|v| v.starts_with("#zrepl_CURSOR")).count() == 1,
        "older cursors left: {sv:?}"
    );
    ensure!(
        all_holds(&a)?.is_empty(),
        "step holds left: {:?}",
        all_holds(&a)?
    );
    ensure!(
        holds(&format!("{ra}@4"))? == [last_received_hold_tag(RECEIVER_JOB)],
        "last-received hold"
    );
    ensure!(
        holds(&format!("{ra}@3"))?.is_empty(),
        "old last-received hold not released"
    );
    // Placeholders for the parents, detected as such.
    for ph in [
        format!("{}/sink/client", t.pool),
        format!("{}/sink/client/{}/src", t.pool, t.pool),
    ] {
        let v = zfs(&["get", "-H", "-o", "value,source", "zrepl:placeholder", &ph])?;
        ensure!(v.trim() == "on\tlocal", "{ph}: {v:?}");
    }
    // A third run has nothing to do.
    let rep = replicate(&s, &r, &one_attempt()).await;
    must_succeed(&rep)?;
    ensure!(fs_report(&rep, &a)?.steps.is_empty(), "{rep:#?}");
    // The versions the receiver lists with its filesystems stand in for the next versions
    // listing only while nothing changed in between: a destroy through it shows at once. (A
    // receiver without the listings cache, which always lists versions with its filesystems.)
    let r = receiver_in(
        &t,
        "client",
        PlaceholderPolicy::Inherit,
        &zrepl_endpoint::Registry::without_listing_cache(),
    )?;
    r.list_filesystems().await.map_err(|e| e.to_string())?;
    let rel = dp(&a);
    let doomed: Vec<FilesystemVersion> = r
        .list_versions(&rel)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|v| v.name == "1")
        .collect();
    r.list_filesystems().await.map_err(|e| e.to_string())?;
    let res = r
        .destroy_snapshots(&rel, &doomed)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        doomed.len() == 1 && res.iter().all(|d| d.error.is_none()),
        "{res:?}"
    );
    let after = r
        .list_versions_many(std::slice::from_ref(&rel))
        .await
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = match after.as_slice() {
        [Ok(vs)] => vs.iter().map(|v| v.name.clone()).collect(),
        other => return Err(format!("{other:?}").into()),
    };
    ensure!(!names.iter().any(|n| n == "1"), "stale listing: {names:?}");
    Ok(())
}

pub async fn repl_interrupted_transfer_resumes_without_leftover_holds(t: Ctx) -> TestResult {
    let a = create(&t, "src/a")?;
    write(&a, "f", 1)?;
    snapshot(&format!("{a}@1"))?;
    let s = sender(&t, &[("src/a", true)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    write(&a, "big", 16)?;
    snapshot(&format!("{a}@2"))?;
    let cut = CuttingSender {
        inner: sender(&t, &[("src/a", true)]),
        cut: 2 << 20,
    };
    let rep = replicate(&cut, &r, &one_attempt()).await;
    ensure!(
        rep.state == RunState::Failed,
        "cut stream must fail the step: {rep:#?}"
    );
    let ra = recv_path(&t, "a");
    let token = zfs(&["get", "-H", "-o", "value", "receive_resume_token", &ra])?
        .trim()
        .to_string();
    ensure!(token != "-", "no resume token after the cut");
    let decoded = resume_token::decode(&token).map_err(|e| e.to_string())?;
    ensure!(decoded.toguid == guid(&format!("{a}@2"))?, "token toguid");
    // The step is protected meanwhile: @1 and @2 carry the step hold.
    ensure!(
        holds(&format!("{a}@2"))? == [step_hold_tag(SENDER_JOB)],
        "step hold on @2"
    );
    ensure!(
        holds(&format!("{a}@1"))? == [step_hold_tag(SENDER_JOB)],
        "step hold on @1"
    );

    let rep = replicate(&s, &r, &one_attempt()).await;
    must_succeed(&rep)?;
    let st = &fs_report(&rep, &a)?.steps;
    ensure!(
        st.len() == 1 && st[0].resumed,
        "expected one resumed step: {st:?}"
    );
    ensure!(
        guid(&format!("{ra}@2"))? == guid(&format!("{a}@2"))?,
        "guid @2"
    );
    ensure!(
        all_holds(&a)?.is_empty(),
        "step holds left: {:?}",
        all_holds(&a)?
    );
    let tok = zfs(&["get", "-H", "-o", "value", "receive_resume_token", &ra])?;
    ensure!(tok.trim() == "-", "token left: {tok}");
    Ok(())
}

pub async fn repl_dropin_from_zrepl07_cursor_and_hold(t: Ctx) -> TestResult {
    // State as zrepl 0.7 leaves it: a replicated snapshot, the sender's cursor bookmark, the
    // receiver's last-received hold, placeholders for the receiver's parents.
    let a = create(&t, "src/a")?;
    write(&a, "f", 4)?;
    snapshot(&format!("{a}@a"))?;
    let root = create(&t, "sink")?;
    let mut parent = root.clone();
    for c in ["client".to_string(), t.pool.clone(), "src".to_string()] {
        parent = format!("{parent}/{c}");
        zfs(&[
            "create",
            "-o",
            "zrepl:placeholder=on",
            "-o",
            "mountpoint=none",
            &parent,
        ])?;
    }
    let ra = recv_path(&t, "a");
    sh(&["sh", "-c", &format!("zfs send '{a}@a' | zfs recv '{ra}'")])?;
    let ga = guid(&format!("{a}@a"))?;
    zfs(&[
        "bookmark",
        &format!("{a}@a"),
        &format!("{a}#zrepl_CURSOR_G_{ga:016x}_J_{SENDER_JOB}"),
    ])?;
    zfs(&[
        "hold",
        &format!("zrepl_last_received_J_{RECEIVER_JOB}"),
        &format!("{ra}@a"),
    ])?;
    // The sender pruned @a meanwhile: only the cursor bookmark links the two sides.
    write(&a, "g", 1)?;
    snapshot(&format!("{a}@b"))?;
    zfs(&["destroy", &format!("{a}@a")])?;

    let s = sender(&t, &[("src/a", true)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Unspecified)?;
    let rep = replicate(&s, &r, &one_attempt()).await;
    must_succeed(&rep)?;
    let st = &fs_report(&rep, &a)?.steps;
    ensure!(
        st.len() == 1
            && st[0].from.as_deref()
                == Some(&format!("#zrepl_CURSOR_G_{ga:016x}_J_{SENDER_JOB}")[..]),
        "expected one incremental step from the zrepl 0.7 cursor: {st:?}"
    );
    ensure!(
        guid(&format!("{ra}@b"))? == guid(&format!("{a}@b"))?,
        "guid @b"
    );
    ensure!(
        holds(&format!("{ra}@b"))? == [last_received_hold_tag(RECEIVER_JOB)],
        "hold moved to @b"
    );
    ensure!(holds(&format!("{ra}@a"))?.is_empty(), "old hold released");
    Ok(())
}

pub async fn repl_encrypted_raw_to_keyless_receiver(t: Ctx) -> TestResult {
    std::fs::write(&t.key_file, "platformtest-passphrase")?;
    let src = create(&t, "src")?;
    let e = format!("{src}/enc");
    zfs(&[
        "create",
        "-o",
        "encryption=on",
        "-o",
        "keyformat=passphrase",
        "-o",
        &format!("keylocation=file://{}", t.key_file.display()),
        &e,
    ])?;
    write(&e, "secret", 1)?;
    snapshot(&format!("{e}@1"))?;
    let plain = create(&t, "src/plain")?;
    snapshot(&format!("{plain}@1"))?;
    let f = DatasetFilter::new([(e.as_str(), true), (plain.as_str(), true)])
        .map_err(|e| format!("{e:?}"))?;
    let mut cfg = SenderConfig::new(SENDER_JOB, f);
    cfg.encrypted = true;
    let s = LocalSender::new(t.zfs.clone(), cfg, &t.reg);
    let r = receiver(&t, "client", PlaceholderPolicy::Off)?;
    let rep = replicate(&s, &r, &one_attempt()).await;
    // The unencrypted filesystem is refused by policy; the encrypted one replicates.
    let pr = fs_report(&rep, &plain)?;
    ensure!(
        pr.state == FsState::PlanningError
            && pr
                .error()
                .unwrap_or("")
                .contains("encrypted send mandated by policy, but filesystem"),
        "{pr:?}"
    );
    let re = recv_path(&t, "enc");
    ensure!(fs_report(&rep, &e)?.state == FsState::Done, "{rep:#?}");
    ensure!(
        guid(&format!("{re}@1"))? == guid(&format!("{e}@1"))?,
        "guid"
    );
    let ks = zfs(&["get", "-H", "-o", "value", "keystatus,encryption", &re])?;
    ensure!(
        ks.lines().next() == Some("unavailable"),
        "receiver must not have the key: {ks}"
    );
    ensure!(
        ks.lines().nth(1) != Some("off"),
        "received dataset must stay encrypted: {ks}"
    );
    Ok(())
}

pub async fn repl_properties_override_and_inherit(t: Ctx) -> TestResult {
    let p = create(&t, "src/props")?;
    zfs(&["set", "org.test:keep=1", "org.test:drop=1", &p])?;
    snapshot(&format!("{p}@1"))?;
    let f = DatasetFilter::new([(p.as_str(), true)]).map_err(|e| format!("{e:?}"))?;
    let mut cfg = SenderConfig::new(SENDER_JOB, f);
    cfg.send_properties = true;
    let s = LocalSender::new(t.zfs.clone(), cfg, &t.reg);
    let root = create(&t, "sink")?;
    let r = LocalReceiver::new(
        t.zfs.clone(),
        ReceiverConfig {
            job: RECEIVER_JOB.into(),
            root_fs: dp(&root),
            client_identity: Some("client".into()),
            placeholder: PlaceholderPolicy::Inherit,
            inherit: vec!["org.test:drop".into()],
            override_: vec![("org.test:forced".into(), "x".into())],
            bandwidth_limit: None,
            identity_component: true,
            strip_prefix: None,
        },
        &t.reg,
    )
    .map_err(|e| e.to_string())?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    let rp = recv_path(&t, "props");
    let get = |prop: &str| {
        zfs(&["get", "-H", "-o", "value,source", prop, &rp]).map(|s| s.trim().to_string())
    };
    ensure!(
        get("org.test:keep")? == "1\treceived",
        "{}",
        get("org.test:keep")?
    );
    ensure!(get("org.test:drop")? == "-\t-", "{}", get("org.test:drop")?);
    ensure!(
        get("org.test:forced")? == "x\tlocal",
        "{}",
        get("org.test:forced")?
    );
    Ok(())
}

pub async fn repl_conflict_on_one_filesystem_while_five_replicate(t: Ctx) -> TestResult {
    let mut names = Vec::new();
    for i in 1..=5 {
        names.push(create(&t, &format!("src/f{i}"))?);
    }
    let div = create(&t, "src/div")?;
    for n in names.iter().chain([&div]) {
        snapshot(&format!("{n}@1"))?;
    }
    let s = sender(&t, &[("src<", true), ("src", false)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    // Someone writes on the receiver: its history diverges from the sender's.
    let rdiv = recv_path(&t, "div");
    snapshot(&format!("{rdiv}@rogue"))?;
    for n in names.iter().chain([&div]) {
        snapshot(&format!("{n}@2"))?;
    }
    let rep = replicate(&s, &r, &one_attempt()).await;
    let d = fs_report(&rep, &div)?;
    ensure!(
        d.state == FsState::PlanningError
            && d.error().unwrap_or("").contains("not present on sender"),
        "{d:?}"
    );
    ensure!(
        d.error().unwrap_or("").contains("zfs rollback -r"),
        "conflict must say what to do: {d:?}"
    );
    for (i, n) in names.iter().enumerate() {
        ensure!(fs_report(&rep, n)?.state == FsState::Done, "{n}: {rep:#?}");
        let rn = recv_path(&t, &format!("f{}", i + 1));
        ensure!(
            guid(&format!("{rn}@2"))? == guid(&format!("{n}@2"))?,
            "{rn}"
        );
    }
    Ok(())
}

pub async fn repl_initial_replication_policies(t: Ctx) -> TestResult {
    let a = create(&t, "src/a")?;
    // Names in reverse order: order must come from createtxg.
    for n in ["c", "b", "a"] {
        write(&a, n, 1)?;
        snapshot(&format!("{a}@{n}"))?;
    }
    let s = sender(&t, &[("src/a", true)]);
    let run = |policy| DriverConfig {
        max_attempts: 1,
        policy: zrepl_planner::Policy {
            initial_replication: policy,
            ..Default::default()
        },
        ..DriverConfig::default()
    };
    let r1 = receiver(&t, "mostrecent", PlaceholderPolicy::Inherit)?;
    must_succeed(&replicate(&s, &r1, &run(zrepl_planner::InitialReplication::MostRecent)).await)?;
    let r2 = receiver(&t, "all", PlaceholderPolicy::Inherit)?;
    must_succeed(&replicate(&s, &r2, &run(zrepl_planner::InitialReplication::All)).await)?;
    let r3 = receiver(&t, "fail", PlaceholderPolicy::Inherit)?;
    let rep = replicate(&s, &r3, &run(zrepl_planner::InitialReplication::Fail)).await;
    let dest = |id: &str| format!("{}/sink/{id}/{}/src/a", t.pool, t.pool);
    let snaps = |id: &str| -> Result<Vec<String>, String> {
        Ok(versions(&dest(id))?
            .into_iter()
            .filter(|v| v.starts_with('@'))
            .collect())
    };
    ensure!(snaps("mostrecent")? == ["@a"], "{:?}", snaps("mostrecent")?);
    ensure!(snaps("all")? == ["@c", "@b", "@a"], "{:?}", snaps("all")?);
    ensure!(
        fs_report(&rep, &a)?
            .error()
            .unwrap_or("")
            .contains("automatic conflict resolution for initial replication is disabled"),
        "{rep:#?}"
    );
    ensure!(
        !exists(&dest("fail")),
        "fail policy must not create anything"
    );
    Ok(())
}

pub async fn repl_protection_levels(t: Ctx) -> TestResult {
    let cases = [
        ("res", Protection::GuaranteeResumability),
        ("inc", Protection::GuaranteeIncremental),
        ("none", Protection::GuaranteeNothing),
    ];
    for (name, level) in cases {
        let fs = create(&t, &format!("src/{name}"))?;
        write(&fs, "f", 1)?;
        snapshot(&format!("{fs}@1"))?;
        let cfg = DriverConfig {
            max_attempts: 1,
            replication: ReplicationConfig {
                initial: level,
                incremental: level,
            },
            ..DriverConfig::default()
        };
        let f = DatasetFilter::new([(fs.as_str(), true)]).map_err(|e| format!("{e:?}"))?;
        let s = LocalSender::new(
            t.zfs.clone(),
            SenderConfig::new(SENDER_JOB, f.clone()),
            &t.reg,
        );
        let r = receiver(&t, name, PlaceholderPolicy::Inherit)?;
        must_succeed(&replicate(&s, &r, &cfg).await)?;
        write(&fs, "g", 8)?;
        snapshot(&format!("{fs}@2"))?;
        let (g1, g2) = (guid(&format!("{fs}@1"))?, guid(&format!("{fs}@2"))?);
        // Interrupted step: what protects it?
        let cut = CuttingSender {
            inner: LocalSender::new(t.zfs.clone(), SenderConfig::new(SENDER_JOB, f), &t.reg),
            cut: 1 << 20,
        };
        let rep = replicate(&cut, &r, &cfg).await;
        ensure!(rep.state == RunState::Failed, "{name}: {rep:#?}");
        let sv = versions(&fs)?;
        let tentative = |g: u64| format!("#zrepl_CURSORTENTATIVE__G_{g:016x}_J_{SENDER_JOB}");
        match level {
            Protection::GuaranteeResumability => {
                ensure!(
                    holds(&format!("{fs}@2"))? == [step_hold_tag(SENDER_JOB)],
                    "{name}"
                );
                ensure!(
                    holds(&format!("{fs}@1"))? == [step_hold_tag(SENDER_JOB)],
                    "{name}"
                );
                ensure!(
                    !sv.iter().any(|v| v.contains("CURSORTENTATIVE")),
                    "{name}: {sv:?}"
                );
            }
            Protection::GuaranteeIncremental => {
                ensure!(all_holds(&fs)?.is_empty(), "{name}: {:?}", all_holds(&fs)?);
                ensure!(
                    sv.contains(&tentative(g2)) && sv.contains(&tentative(g1)),
                    "{name}: {sv:?}"
                );
            }
            Protection::GuaranteeNothing => {
                ensure!(all_holds(&fs)?.is_empty(), "{name}");
                ensure!(
                    !sv.iter().any(|v| v.starts_with("#zrepl")),
                    "{name}: {sv:?}"
                );
            }
        }
        // Completion.
        must_succeed(&replicate(&s, &r, &cfg).await)?;
        let sv = versions(&fs)?;
        let rfs = format!("{}/sink/{name}/{}/src/{name}", t.pool, t.pool);
        ensure!(all_holds(&fs)?.is_empty(), "{name}: step holds left");
        ensure!(
            !sv.iter().any(|v| v.contains("CURSORTENTATIVE")),
            "{name}: {sv:?}"
        );
        let cursor = format!("#{}", cursor_bookmark_name(g2, SENDER_JOB));
        if level == Protection::GuaranteeNothing {
            ensure!(
                !sv.iter().any(|v| v.starts_with("#zrepl")),
                "{name}: {sv:?}"
            );
            ensure!(
                all_holds(&rfs)?.is_empty(),
                "{name}: receiver holds {:?}",
                all_holds(&rfs)?
            );
        } else {
            ensure!(sv.contains(&cursor), "{name}: {sv:?}");
            ensure!(
                holds(&format!("{rfs}@2"))? == [last_received_hold_tag(RECEIVER_JOB)],
                "{name}"
            );
        }
    }
    Ok(())
}

pub async fn repl_malicious_requests_refused(t: Ctx) -> TestResult {
    let a = create(&t, "src/a")?;
    let secret = create(&t, "src/secret")?;
    write(&secret, "s", 4)?;
    snapshot(&format!("{a}@1"))?;
    snapshot(&format!("{secret}@1"))?;
    let s = sender(&t, &[("src/a", true)]);
    let v = |fs: &str, n: &str| -> Result<FilesystemVersion, String> {
        Ok(FilesystemVersion {
            typ: zrepl_zfs::VersionType::Snapshot,
            name: n.into(),
            guid: guid(&format!("{fs}@{n}"))?,
            createtxg: zfs(&[
                "get",
                "-Hp",
                "-o",
                "value",
                "createtxg",
                &format!("{fs}@{n}"),
            ])?
            .trim()
            .parse()
            .map_err(|e| format!("{e}"))?,
            creation: 0,
            userrefs: Some(0),
        })
    };
    let req = |fs: &str, to: FilesystemVersion, token: Option<String>| SendRequest {
        intermediates: Vec::new(),
        filesystem: dp(fs),
        from: None,
        to,
        resume_token: token,
        replication: ReplicationConfig::default(),
    };
    let is_refusal = |r: Result<_, EndpointError>, what: &str| -> TestResult {
        match r {
            Err(e) if e.kind == zrepl_protocol::ErrorKind::InvalidRequest => Ok(()),
            Err(e) => Err(format!("{what}: wrong error kind: {e:?}").into()),
            Ok(_) => Err(format!("{what}: was accepted").into()),
        }
    };
    // Feature detection probes `zfs send` without arguments; run it before counting.
    t.zfs.features().await?;
    let sends_before = t.zfs.zfs_commands_started("send");
    // A filesystem outside the filter.
    is_refusal(
        s.send(req(&secret, v(&secret, "1")?, None))
            .await
            .map(|_| ()),
        "send outside filter",
    )?;
    is_refusal(
        s.list_versions(&dp(&secret)).await.map(|_| ()),
        "list outside filter",
    )?;
    is_refusal(
        s.destroy_snapshots(&dp(&secret), &[v(&secret, "1")?])
            .await
            .map(|_| ()),
        "destroy outside filter",
    )?;
    // A forged resume token: for the secret filesystem, presented with an allowed one.
    let forged = resume_token::encode(&resume_token::ResumeToken::new(
        guid(&format!("{secret}@1"))?,
        format!("{secret}@1"),
    ));
    is_refusal(
        s.send(req(&a, v(&a, "1")?, Some(forged))).await.map(|_| ()),
        "forged token for another dataset",
    )?;
    let wrong_guid = resume_token::encode(&resume_token::ResumeToken::new(12345, format!("{a}@1")));
    is_refusal(
        s.send(req(&a, v(&a, "1")?, Some(wrong_guid)))
            .await
            .map(|_| ()),
        "token with another toguid",
    )?;
    // A request whose guid does not match the snapshot.
    let mut wrong = v(&a, "1")?;
    wrong.guid ^= 1;
    is_refusal(s.send(req(&a, wrong, None)).await.map(|_| ()), "wrong guid")?;
    ensure!(
        t.zfs.zfs_commands_started("send") == sends_before,
        "a refused request must not start zfs send"
    );
    ensure!(
        all_holds(&a)?.is_empty() && all_holds(&secret)?.is_empty(),
        "refusals must not hold anything"
    );

    // Receiver: names are confined below root_fs/<identity>; '..' cannot even be expressed.
    ensure!(
        DatasetPath::parse("x/../y").is_err() && DatasetPath::parse("../y").is_err(),
        "dotdot parses"
    );
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    let other = receiver(&t, "other", PlaceholderPolicy::Inherit)?;
    must_succeed(&replicate(&s, &other, &one_attempt()).await)?;
    let before = zfs(&[
        "list",
        "-H",
        "-r",
        "-t",
        "all",
        "-o",
        "name,guid",
        &format!("{}/sink/other", t.pool),
    ])?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    ensure!(
        exists(&recv_path(&t, "a")),
        "client's replication landed below its own root"
    );
    // Nothing of client "other" was touched by client "client".
    let after = zfs(&[
        "list",
        "-H",
        "-r",
        "-t",
        "all",
        "-o",
        "name,guid",
        &format!("{}/sink/other", t.pool),
    ])?;
    ensure!(
        before == after,
        "client 'other' changed:\n{before}\n{after}"
    );
    // And an empty path is refused outright.
    let empty = r.list_versions(&DatasetPath::empty()).await;
    ensure!(empty.is_err(), "empty path accepted");
    Ok(())
}

/// The daemon end to end: `zrepl daemon` with a push job and a sink job over `local`,
/// `snapshotting: manual`, woken by `zrepl signal wakeup`; then killed mid-transfer and
/// restarted: the next wakeup resumes and leaves no step hold.
pub async fn daemon_push_sink_local_wakeup_and_kill(t: Ctx) -> TestResult {
    let a = create(&t, "src/a")?;
    write(&a, "f", 2)?;
    snapshot(&format!("{a}@1"))?;
    create(&t, "sink")?;
    let dir = format!("/tmp/{}-daemon", t.pool);
    std::fs::create_dir_all(&dir)?;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control:\n    sockpath: {dir}/run/control\n  logging:\n    - {{type: stdout, level: info, format: human}}\n\
             jobs:\n\
             - type: sink\n  name: {RECEIVER_JOB}\n  root_fs: {pool}/sink\n  serve: {{type: local, listener_name: l}}\n  recv: {{placeholder: {{encryption: inherit}}}}\n\
             - type: push\n  name: {SENDER_JOB}\n  connect: {{type: local, listener_name: l, client_identity: client}}\n  filesystems: {{\"{pool}/src/a\": true}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: not_replicated}}, {{type: last_n, count: 2}}], keep_receiver: [{{type: last_n, count: 2}}]}}\n",
            pool = t.pool
        ),
    )?;
    let zrepl = |args: &[&str]| -> Result<String, String> {
        let mut v = vec!["zrepl", "--config", cfg.as_str()];
        v.extend_from_slice(args);
        sh(&v)
    };
    let log_path = format!("{dir}/daemon.log");
    let start = || spawn_daemon(&cfg, &log_path);
    let status = || -> Result<serde_json::Value, String> {
        serde_json::from_str(&zrepl(&["status", "--mode", "raw"])?).map_err(|e| e.to_string())
    };
    let wait_run = |want_success: bool| -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let st = status()?;
            let job = &st["jobs"][SENDER_JOB];
            let run = job["replication"]["state"].as_str().unwrap_or("");
            if job["state"] == "idle" && matches!(run, "done" | "failed" | "cancelled") {
                ensure!((run == "done") == want_success, "run ended {run}: {job:#}");
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "replication did not finish: {job:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let mut d = start()?;
    let res: TestResult = (|| {
        zrepl(&["signal", "wakeup", SENDER_JOB])?;
        wait_run(true)?;
        let ra = recv_path(&t, "a");
        ensure!(
            guid(&format!("{ra}@1"))? == guid(&format!("{a}@1"))?,
            "initial replication"
        );
        write(&a, "g", 1)?;
        snapshot(&format!("{a}@2"))?;
        zrepl(&["signal", "wakeup", SENDER_JOB])?;
        wait_run(true)?;
        ensure!(
            guid(&format!("{ra}@2"))? == guid(&format!("{a}@2"))?,
            "incremental replication"
        );

        // Kill the daemon in the middle of a big transfer.
        write(&a, "big", 48)?;
        snapshot(&format!("{a}@3"))?;
        zrepl(&["signal", "wakeup", SENDER_JOB])?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let st = status()?;
            let steps =
                &st["jobs"][SENDER_JOB]["replication"]["attempts"][0]["filesystems"][0]["steps"];
            if steps[0]["bytes_replicated"].as_u64().unwrap_or(0) > (1 << 20) {
                // Freeze the transfer so it cannot finish before the daemon dies.
                sh(&["pkill", "-STOP", "-f", "^zfs send"])?;
                break;
            }
            ensure!(Instant::now() < deadline, "transfer did not start: {st:#}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = d.kill();
        return Err(format!("{e}\ndaemon log:\n{}", log()).into());
    }
    d.kill()?;
    d.wait()?;
    let _ = sh(&["pkill", "-KILL", "-f", "^zfs send"]);
    let ra = recv_path(&t, "a");
    // The orphaned `zfs recv` sees its input end and saves resumable state.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tok = zfs(&["get", "-H", "-o", "value", "receive_resume_token", &ra])?;
        if tok.trim() != "-" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no resume token after killing the daemon"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut d = start()?;
    let res: TestResult = (|| {
        zrepl(&["signal", "wakeup", SENDER_JOB])?;
        wait_run(true)?;
        let st = status()?;
        let step =
            &st["jobs"][SENDER_JOB]["replication"]["attempts"][0]["filesystems"][0]["steps"][0];
        ensure!(
            step["resumed"] == true,
            "the transfer was not resumed: {st:#}"
        );
        ensure!(
            guid(&format!("{ra}@3"))? == guid(&format!("{a}@3"))?,
            "resumed replication"
        );
        ensure!(
            all_holds(&a)?.is_empty(),
            "step holds left: {:?}",
            all_holds(&a)?
        );
        // The push job pruned both sides after the run, per its keep rules (the last 2 each;
        // @1 is replicated, so not_replicated does not keep it on the sender).
        let snaps = |fs: &str| -> Result<Vec<String>, String> {
            Ok(versions(fs)?
                .into_iter()
                .filter(|v| v.starts_with('@'))
                .collect())
        };
        ensure!(
            snaps(&a)? == ["@2", "@3"],
            "sender after pruning: {:?}",
            snaps(&a)?
        );
        ensure!(
            snaps(&ra)? == ["@2", "@3"],
            "receiver after pruning: {:?}",
            snaps(&ra)?
        );
        let pruned = &st["jobs"][SENDER_JOB]["pruning"]["sender"]["filesystems"][0]["destroy"];
        ensure!(
            *pruned == serde_json::json!(["1"]),
            "pruning report: {st:#}"
        );
        Ok(())
    })();
    let _ = d.kill();
    let _ = d.wait();
    res.map_err(|e| format!("{e}\ndaemon log:\n{}", log()).into())
}

/// Pruning both sides after replication: the dry run says exactly what the real run destroys;
/// a held snapshot is reported and kept; the cursor's snapshot is never destroyed.
pub async fn prune_both_sides_dry_run_matches_and_holds_are_kept(t: Ctx) -> TestResult {
    use zrepl_daemon::prune::{prune, Keep, PruneReport};
    let a = create(&t, "src/a")?;
    for i in 1..=6 {
        write(&a, &format!("f{i}"), 1)?;
        snapshot(&format!("{a}@zrepl_{i}"))?;
    }
    snapshot(&format!("{a}@manual"))?;
    let s = sender(&t, &[("src/a", true)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    let cfg = DriverConfig {
        max_attempts: 1,
        policy: zrepl_planner::Policy {
            initial_replication: zrepl_planner::InitialReplication::All,
            ..Default::default()
        },
        ..DriverConfig::default()
    };
    must_succeed(&replicate(&s, &r, &cfg).await)?;
    // Someone holds an old snapshot on the sender.
    zfs(&["hold", "backup-tool", &format!("{a}@zrepl_1")])?;
    let keep_sender = vec![
        zrepl_pruning::Rule::NotReplicated {
            keep_snapshot_at_cursor: true,
        },
        zrepl_pruning::Rule::LastN {
            count: 2,
            regex: Some(regex::Regex::new("^zrepl_").unwrap()),
        },
        zrepl_pruning::Rule::Regex {
            regex: regex::Regex::new("^zrepl_").unwrap(),
            negate: true,
        },
    ];
    // Names sort like creation times here, so ties in the 1-second creation resolution are harmless.
    let keep_receiver = vec![zrepl_pruning::Rule::LastN {
        count: 2,
        regex: Some(regex::Regex::new("^zrepl_").unwrap()),
    }];
    // The dry run through a sender without the listings cache (as on OpenZFS 2.1) and with
    // its own command counts: its filesystems, cursors and versions are one listing.
    let uncached_zfs = zrepl_zfs::Zfs::new(zrepl_zfs::ZfsConfig::default());
    uncached_zfs.features().await?;
    let listings =
        |z: &zrepl_zfs::Zfs| z.zfs_commands_started("list") + z.zfs_commands_started("get");
    let before = listings(&uncached_zfs);
    let uncached = LocalSender::new(
        uncached_zfs.clone(),
        SenderConfig::new(
            SENDER_JOB,
            DatasetFilter::new([(path(&t, "src/a").as_str(), true)]).expect("valid filter"),
        ),
        &zrepl_endpoint::Registry::without_listing_cache(),
    );
    let dry: PruneReport = prune(
        &uncached,
        &r,
        &Keep::rules_only(keep_sender.clone()),
        &Keep::rules_only(keep_receiver.clone()),
        true,
    )
    .await;
    let sender_listings = listings(&uncached_zfs) - before;
    ensure!(
        sender_listings == 1,
        "pruning ran {sender_listings} listings on the sender (its filesystems, cursors and versions are one): {:?}",
        uncached_zfs.command_stats()
    );
    let ra = recv_path(&t, "a");
    ensure!(
        versions(&a)?.iter().filter(|v| v.starts_with('@')).count() == 7,
        "dry run destroyed something"
    );
    let sd = dry
        .sender
        .filesystems
        .iter()
        .find(|f| f.filesystem == a)
        .ok_or("sender fs missing in dry run")?;
    ensure!(
        sd.destroy == ["zrepl_2", "zrepl_3", "zrepl_4"],
        "sender dry run: {sd:?}"
    );
    let held = sd
        .keep
        .iter()
        .find(|(n, _)| n == "zrepl_1")
        .ok_or("zrepl_1 missing")?;
    ensure!(
        held.1.iter().any(|w| w.contains("held")),
        "hold must be the reason: {held:?}"
    );
    let rd = dry
        .receiver
        .filesystems
        .iter()
        .find(|f| f.filesystem == a)
        .ok_or("receiver fs missing")?;
    ensure!(
        rd.destroy == ["zrepl_1", "zrepl_2", "zrepl_3", "zrepl_4"],
        "receiver dry run: {rd:?}"
    );

    let real = prune(
        &s,
        &r,
        &Keep::rules_only(keep_sender),
        &Keep::rules_only(keep_receiver),
        false,
    )
    .await;
    let sr = real
        .sender
        .filesystems
        .iter()
        .find(|f| f.filesystem == a)
        .ok_or("sender fs missing")?;
    ensure!(
        sr.destroy == sd.destroy && sr.errors.is_empty(),
        "real run differs: {sr:?}"
    );
    let snaps = |fs: &str| -> Result<Vec<String>, String> {
        Ok(versions(fs)?
            .into_iter()
            .filter(|v| v.starts_with('@'))
            .collect())
    };
    ensure!(
        snaps(&a)? == ["@zrepl_1", "@zrepl_5", "@zrepl_6", "@manual"],
        "{:?}",
        snaps(&a)?
    );
    ensure!(
        snaps(&ra)? == ["@zrepl_5", "@zrepl_6", "@manual"],
        "{:?}",
        snaps(&ra)?
    );
    // Incremental replication still works after pruning (cursor and last-received snapshot kept).
    snapshot(&format!("{a}@zrepl_7"))?;
    must_succeed(&replicate(&s, &r, &cfg).await)?;
    ensure!(
        guid(&format!("{ra}@zrepl_7"))? == guid(&format!("{a}@zrepl_7"))?,
        "replication after pruning"
    );
    Ok(())
}

/// The daemon unattended: a push job with periodic snapshotting every 3 s replicates three
/// successive rounds by itself; a snap job on another filesystem snapshots on its own schedule
/// and prunes to its keep rule.
pub async fn daemon_periodic_push_rounds_and_snap_job(t: Ctx) -> TestResult {
    let a = create(&t, "src/a")?;
    create(&t, "src/b")?;
    let other = create(&t, "other")?;
    write(&a, "f", 1)?;
    create(&t, "sink")?;
    let dir = format!("/tmp/{}-periodic", t.pool);
    std::fs::create_dir_all(&dir)?;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control:\n    sockpath: {dir}/run/control\n  logging:\n    - {{type: stdout, level: info, format: human}}\n\
             jobs:\n\
             - type: sink\n  name: {RECEIVER_JOB}\n  root_fs: {pool}/sink\n  serve: {{type: local, listener_name: l}}\n  recv: {{placeholder: {{encryption: inherit}}}}\n\
             - type: push\n  name: {SENDER_JOB}\n  connect: {{type: local, listener_name: l, client_identity: client}}\n  filesystems: {{\"{pool}/src<\": true, \"{pool}/src\": false}}\n  snapshotting: {{type: periodic, prefix: zrepl_, interval: 3s, timestamp_format: human}}\n  pruning:\n    keep_sender: [{{type: not_replicated}}, {{type: last_n, count: 100}}]\n    keep_receiver: [{{type: last_n, count: 100}}]\n\
             - type: snap\n  name: snapjob\n  filesystems: {{\"{pool}/other\": true}}\n  snapshotting: {{type: periodic, prefix: snap_, interval: 2s, timestamp_format: unix-seconds}}\n  pruning:\n    keep: [{{type: last_n, count: 2}}]\n",
            pool = t.pool
        ),
    )?;
    let log_path = format!("{dir}/daemon.log");
    let mut d = spawn_daemon(&cfg, &log_path)?;
    let res: TestResult = (|| {
        let ra = recv_path(&t, "a");
        let rb = recv_path(&t, "b");
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let prefixed = |fs: &str| -> Vec<String> {
                versions(fs)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|v| v.starts_with("@zrepl_"))
                    .collect()
            };
            let (sa, rav, rbv) = (prefixed(&a), prefixed(&ra), prefixed(&rb));
            if rav.len() >= 3 && rbv.len() >= 3 {
                // Same names on both filesystems of a round (one timestamp per round), and the
                // receiver's snapshots are the sender's.
                ensure!(
                    rav == rbv,
                    "rounds differ between filesystems: {rav:?} vs {rbv:?}"
                );
                for v in &rav {
                    ensure!(sa.contains(v), "{v} not on sender");
                    ensure!(
                        guid(&format!("{ra}{v}"))? == guid(&format!("{a}{v}"))?,
                        "guid of {v}"
                    );
                }
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "3 rounds not replicated: sender {sa:?}, receiver {rav:?} / {rbv:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // The snap job: rounds of its own, pruned to the newest 2.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st: serde_json::Value = serde_json::from_str(&sh(&[
                "zrepl", "--config", &cfg, "status", "--mode", "raw",
            ])?)?;
            let rounds_done = st["jobs"]["snapjob"]["snapshotting"]["last_round"].is_object();
            let snaps: Vec<String> = versions(&other)?
                .into_iter()
                .filter(|v| v.starts_with("@snap_"))
                .collect();
            if rounds_done && st["jobs"]["snapjob"]["pruning_local"].is_object() && snaps.len() == 2
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "snap job did not prune to 2: {snaps:?} {:#}",
                st["jobs"]["snapjob"]
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    })();
    let _ = d.kill();
    let _ = d.wait();
    res.map_err(|e| {
        format!(
            "{e}\ndaemon log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
        .into()
    })
}

/// The operator commands on real ZFS: `zfs-abstraction list/release-all/release-stale`,
/// `migrate replication-cursor:v1-v2`, `test placeholder` (the `zrepl` binary, black-box).
pub async fn ops_zfs_abstraction_migrate_and_placeholder(t: Ctx) -> TestResult {
    let a = create(&t, "src/a")?;
    let b = create(&t, "src/b")?;
    snapshot(&format!("{a}@1"))?;
    snapshot(&format!("{b}@1"))?;
    let s = sender(&t, &[("src<", true), ("src", false)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    snapshot(&format!("{a}@2"))?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    let (g1, g2) = (guid(&format!("{a}@1"))?, guid(&format!("{a}@2"))?);
    // Leftovers of an abandoned attempt: a step hold and an older cursor on @1.
    zfs(&["hold", &step_hold_tag(SENDER_JOB), &format!("{a}@1")])?;
    zfs(&[
        "bookmark",
        &format!("{a}@1"),
        &format!("{a}#{}", cursor_bookmark_name(g1, SENDER_JOB)),
    ])?;

    let zrepl = |args: &[&str]| -> Result<String, String> {
        let mut v = vec!["zrepl"];
        v.extend_from_slice(args);
        sh(&v)
    };
    let fs_filter = format!("{}<:ok", t.pool);
    let listed = zrepl(&["zfs-abstraction", "list", "--json", "--fs", &fs_filter])?;
    let items: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&listed)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()?;
    let has = |typ: &str, path: &str, job: &str| {
        items
            .iter()
            .any(|i| i["Type"] == typ && i["FullPath"] == path && i["JobID"] == job)
    };
    let ra = recv_path(&t, "a");
    ensure!(
        has(
            "replication-cursor-bookmark-v2",
            &format!("{a}#{}", cursor_bookmark_name(g2, SENDER_JOB)),
            SENDER_JOB
        ),
        "{listed}"
    );
    ensure!(
        has(
            "replication-cursor-bookmark-v2",
            &format!("{a}#{}", cursor_bookmark_name(g1, SENDER_JOB)),
            SENDER_JOB
        ),
        "{listed}"
    );
    ensure!(has("step-hold", &format!("{a}@1"), SENDER_JOB), "{listed}");
    ensure!(
        has("last-received-hold", &format!("{ra}@2"), RECEIVER_JOB),
        "{listed}"
    );

    // release-all --dry-run changes nothing.
    let state = || -> Result<String, String> {
        Ok(format!(
            "{:?}{:?}",
            all_holds(&path(&t, "src"))?,
            versions(&a)?
        ))
    };
    let before = state()?;
    let dry = zrepl(&[
        "zfs-abstraction",
        "release-all",
        "--dry-run",
        "--fs",
        &fs_filter,
    ])?;
    ensure!(
        dry.lines().all(|l| l.starts_with("would destroy ")) && dry.lines().count() >= 4,
        "{dry}"
    );
    ensure!(
        state()? == before,
        "release-all --dry-run changed something"
    );

    // release-stale: the abandoned step hold and the older cursor go; the live ones stay.
    let out = zrepl(&["zfs-abstraction", "release-stale", "--fs", &fs_filter])?;
    ensure!(out.lines().count() == 2, "{out}");
    ensure!(
        holds(&format!("{a}@1"))?.is_empty(),
        "stale step hold not released"
    );
    let sv = versions(&a)?;
    ensure!(
        !sv.contains(&format!("#{}", cursor_bookmark_name(g1, SENDER_JOB))),
        "{sv:?}"
    );
    ensure!(
        sv.contains(&format!("#{}", cursor_bookmark_name(g2, SENDER_JOB))),
        "live cursor destroyed: {sv:?}"
    );
    ensure!(
        holds(&format!("{ra}@2"))? == [last_received_hold_tag(RECEIVER_JOB)],
        "live hold released"
    );

    // migrate replication-cursor:v1-v2: a's v1 cursor (older than its v2 cursor) goes; b's v1
    // cursor on a snapshot newer than b's v2 cursor stays.
    zfs(&[
        "bookmark",
        &format!("{a}@1"),
        &format!("{a}#zrepl_replication_cursor"),
    ])?;
    snapshot(&format!("{b}@2"))?;
    zfs(&[
        "bookmark",
        &format!("{b}@2"),
        &format!("{b}#zrepl_replication_cursor"),
    ])?;
    let dir = format!("/tmp/{}-ops", t.pool);
    std::fs::create_dir_all(&dir)?;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "jobs:\n- type: sink\n  name: {RECEIVER_JOB}\n  root_fs: {pool}/sink\n  serve: {{type: local, listener_name: l}}\n\
             - type: push\n  name: {SENDER_JOB}\n  connect: {{type: local, listener_name: l, client_identity: client}}\n  filesystems: {{\"{pool}/src<\": true, \"{pool}/src\": false}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: last_n, count: 10}}], keep_receiver: [{{type: last_n, count: 10}}]}}\n",
            pool = t.pool
        ),
    )?;
    let dry = zrepl(&[
        "--config",
        &cfg,
        "migrate",
        "replication-cursor:v1-v2",
        "--dry-run",
    ])?;
    ensure!(dry.contains("would destroy v1 cursor"), "{dry}");
    ensure!(
        versions(&a)?.contains(&"#zrepl_replication_cursor".to_string()),
        "dry run destroyed"
    );
    let out = zrepl(&["--config", &cfg, "migrate", "replication-cursor:v1-v2"])?;
    ensure!(
        !versions(&a)?.contains(&"#zrepl_replication_cursor".to_string()),
        "{out}"
    );
    ensure!(
        versions(&b)?.contains(&"#zrepl_replication_cursor".to_string()),
        "b's v1 cursor must stay: {out}"
    );

    // migrate 0.0.X:0.1:placeholder: a zrepl 0.0.x placeholder (hash value) becomes `on`.
    let legacy = format!("{}/sink/legacy", t.pool);
    let hash = zrepl_zfs::legacy_placeholder_value(&dp(&legacy));
    zfs(&[
        "create",
        "-o",
        &format!("zrepl:placeholder={hash}"),
        &legacy,
    ])?;
    let get = || {
        zfs(&["get", "-H", "-o", "value", "zrepl:placeholder", &legacy])
            .map(|v| v.trim().to_string())
    };
    let dry = zrepl(&[
        "--config",
        &cfg,
        "migrate",
        "0.0.X:0.1:placeholder",
        "--dry-run",
    ])?;
    ensure!(
        dry.contains(&format!("would migrate {legacy}")) && get()? == hash,
        "{dry}"
    );
    let out = zrepl(&["--config", &cfg, "migrate", "0.0.X:0.1:placeholder"])?;
    ensure!(get()? == "on", "{out}");
    let again = zrepl(&["--config", &cfg, "migrate", "0.0.X:0.1:placeholder"])?;
    ensure!(
        !again.contains("migrated"),
        "second migration must be a no-op: {again}"
    );

    // test placeholder.
    let ph = format!("{}/sink/client", t.pool);
    let out = zrepl(&["test", "placeholder", "--dataset", &ph])?;
    ensure!(
        out == format!("IS_PLACEHOLDER\tDATASET\tzrepl:placeholder\nyes\t{ph}\ton\n"),
        "{out:?}"
    );
    let out = zrepl(&["test", "placeholder", "--dataset", &ra])?;
    ensure!(
        out.lines().nth(1) == Some(&format!("no\t{ra}\t")[..]),
        "{out:?}"
    );
    ensure!(
        zrepl(&[
            "test",
            "placeholder",
            "--dataset",
            &format!("{}/nope", t.pool)
        ])
        .is_err(),
        "missing dataset"
    );
    Ok(())
}

/// Snapshotting hooks: pre/post command hooks with zrepl's environment; a failing fatal pre hook
/// (and a timed-out one) prevents that filesystem's snapshot, visible in the status; others are
/// snapshotted.
pub async fn daemon_snapshot_hooks(t: Ctx) -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    for n in ["h1", "h2", "h3", "h4"] {
        create(&t, &format!("src/{n}"))?;
    }
    let dir = format!("/tmp/{}-hooks", t.pool);
    std::fs::create_dir_all(&dir)?;
    let log_file = format!("{dir}/hook.log");
    let script = |name: &str, body: &str| -> Result<String, std::io::Error> {
        let p = format!("{dir}/{name}");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n"))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(p)
    };
    let logger = script(
        "logger.sh",
        &format!("echo \"$ZREPL_HOOKTYPE $ZREPL_FS $ZREPL_SNAPNAME dry=$ZREPL_DRYRUN timeout=$ZREPL_TIMEOUT\" >> {log_file}; echo logged"),
    )?;
    let failing = script("fail.sh", "echo failing >&2; exit 3")?;
    let slow = script("slow.sh", "sleep 30")?;
    let cfg = format!("{dir}/zrepl.yml");
    let pool = &t.pool;
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control:\n    sockpath: {dir}/run/control\n  logging:\n    - {{type: stdout, level: info, format: human}}\n\
             jobs:\n- type: snap\n  name: snaphooks\n  filesystems: {{\"{pool}/src<\": true, \"{pool}/src\": false}}\n\
             \x20 snapshotting:\n    type: periodic\n    prefix: zrepl_\n    interval: 1h\n    hooks:\n\
             \x20   - {{type: command, path: {logger}, timeout: 10s, filesystems: {{\"{pool}/src/h1\": true}}}}\n\
             \x20   - {{type: command, path: {failing}, err_is_fatal: true, filesystems: {{\"{pool}/src/h2\": true}}}}\n\
             \x20   - {{type: command, path: {slow}, timeout: 1s, err_is_fatal: true, filesystems: {{\"{pool}/src/h4\": true}}}}\n\
             \x20 pruning: {{keep: [{{type: last_n, count: 10}}]}}\n"
        ),
    )?;
    let out_log = format!("{dir}/daemon.log");
    let mut d = spawn_daemon(&cfg, &out_log)?;
    let res: TestResult = (|| {
        let deadline = Instant::now() + Duration::from_secs(90);
        let st = loop {
            let st: serde_json::Value = serde_json::from_str(
                &sh(&["zrepl", "--config", &cfg, "status", "--mode", "raw"])
                    .unwrap_or_else(|_| "{}".into()),
            )
            .unwrap_or_default();
            if st["jobs"]["snaphooks"]["snapshotting"]["last_round"].is_object() {
                break st;
            }
            ensure!(Instant::now() < deadline, "no snapshot round: {st:#}");
            std::thread::sleep(Duration::from_millis(300));
        };
        let round = &st["jobs"]["snaphooks"]["snapshotting"]["last_round"];
        let name = round["snapshot_name"]
            .as_str()
            .ok_or("no snapshot name")?
            .to_string();
        let snapped: Vec<&str> = round["filesystems"]
            .as_array()
            .ok_or("no list")?
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let (h1, h2, h3, h4) = (
            path(&t, "src/h1"),
            path(&t, "src/h2"),
            path(&t, "src/h3"),
            path(&t, "src/h4"),
        );
        ensure!(
            snapped.contains(&h1.as_str()) && snapped.contains(&h3.as_str()),
            "{round:#}"
        );
        ensure!(
            !snapped.contains(&h2.as_str()) && !snapped.contains(&h4.as_str()),
            "{round:#}"
        );
        ensure!(
            exists(&format!("{h1}@{name}")) && exists(&format!("{h3}@{name}")),
            "snapshots missing"
        );
        ensure!(
            !exists(&format!("{h2}@{name}")) && !exists(&format!("{h4}@{name}")),
            "fatal hooks must prevent snapshots"
        );
        let err = round["error"].as_str().unwrap_or("");
        ensure!(
            err.contains(&h2) && err.contains("timed out"),
            "errors must be visible in status: {err}"
        );
        let hook_log = std::fs::read_to_string(&log_file)?;
        ensure!(
            hook_log == format!("pre_snapshot {h1} {name} dry= timeout=10\npost_snapshot {h1} {name} dry= timeout=10\n"),
            "{hook_log:?}"
        );
        Ok(())
    })();
    let _ = d.kill();
    let _ = d.wait();
    res.map_err(|e| {
        format!(
            "{e}\ndaemon log:\n{}",
            std::fs::read_to_string(&out_log).unwrap_or_default()
        )
        .into()
    })
}
