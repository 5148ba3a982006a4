//! Driver tests over in-memory endpoints.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::io::AsyncReadExt;
use zrepl_protocol::{ConvergeRequest, DestroyResult, ErrorKind, SendResponse};
use zrepl_zfs_types::{FilesystemVersion, VersionType};

use super::*;

fn snap(name: &str, txg: u64) -> FilesystemVersion {
    FilesystemVersion {
        typ: VersionType::Snapshot,
        name: name.into(),
        guid: txg * 1000,
        createtxg: txg,
        creation: txg as i64,
        userrefs: Some(0),
    }
}

fn p(s: &str) -> DatasetPath {
    DatasetPath::parse(s).unwrap()
}

#[derive(Default)]
struct FakeSender {
    fs: BTreeMap<DatasetPath, Vec<FilesystemVersion>>,
    /// `list_filesystems` fails with a connectivity error this many times.
    flaky_lists: AtomicUsize,
    completed: Mutex<Vec<String>>,
    /// `converge` requests: filesystem and common version.
    converged: Mutex<Vec<String>>,
    /// `converge` answers with no result at all (a broken peer).
    converge_answers_nothing: bool,
    /// This many sends deliver half their stream, then nothing ever again (a hung `zfs send`).
    stalling_sends: AtomicUsize,
    /// `list_versions` waits for this (a slow listing that only ends once the receiver has
    /// listed its versions).
    versions_wait: Option<std::sync::Arc<tokio::sync::Notify>>,
}

/// Yields `head`, then stays pending forever.
struct Stalling {
    head: std::io::Cursor<Vec<u8>>,
}

impl AsyncRead for Stalling {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.head.position() < self.head.get_ref().len() as u64 {
            return Pin::new(&mut self.head).poll_read(cx, buf);
        }
        Poll::Pending
    }
}

impl Sender for FakeSender {
    async fn list_filesystems(&self) -> zrepl_protocol::Result<Vec<FilesystemInfo>> {
        if self
            .flaky_lists
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(EndpointError::new(
                ErrorKind::Connectivity,
                "connection refused",
            ));
        }
        Ok(self
            .fs
            .keys()
            .map(|k| FilesystemInfo {
                path: k.clone(),
                is_placeholder: false,
                resume_token: None,
            })
            .collect())
    }
    async fn list_versions(
        &self,
        fs: &DatasetPath,
    ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
        if let Some(n) = &self.versions_wait {
            n.notified().await;
        }
        Ok(self.fs.get(fs).cloned().unwrap_or_default())
    }
    async fn send_dry(&self, _req: &SendRequest) -> zrepl_protocol::Result<u64> {
        Ok(100)
    }
    async fn send(&self, req: SendRequest) -> zrepl_protocol::Result<(SendResponse, ByteStream)> {
        let payload = format!("{}:{}", req.filesystem, req.to.guid).into_bytes();
        if self
            .stalling_sends
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let head = payload[..payload.len() / 2].to_vec();
            return Ok((
                SendResponse {
                    used_resume_token: false,
                    expected_size: 0,
                },
                Box::pin(Stalling {
                    head: std::io::Cursor::new(head),
                }),
            ));
        }
        Ok((
            SendResponse {
                used_resume_token: req.resume_token.is_some(),
                expected_size: 0,
            },
            Box::pin(std::io::Cursor::new(payload)),
        ))
    }
    async fn send_completed(&self, req: &SendRequest) -> zrepl_protocol::Result<()> {
        self.completed.lock().unwrap().push(format!(
            "{}{}",
            req.filesystem,
            req.to.relative_name()
        ));
        Ok(())
    }
    async fn converge(
        &self,
        reqs: &[ConvergeRequest],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<()>>> {
        let r = record_converge(&self.converged, reqs);
        Ok(if self.converge_answers_nothing {
            Vec::new()
        } else {
            r
        })
    }
    async fn replication_cursor(
        &self,
        _fs: &DatasetPath,
    ) -> zrepl_protocol::Result<Option<FilesystemVersion>> {
        Ok(None)
    }
    async fn destroy_snapshots(
        &self,
        _fs: &DatasetPath,
        _s: &[FilesystemVersion],
    ) -> zrepl_protocol::Result<Vec<DestroyResult>> {
        Ok(vec![])
    }
}

/// Records `converge` requests as `fs@common`; every one succeeds.
fn record_converge(
    log: &Mutex<Vec<String>>,
    reqs: &[ConvergeRequest],
) -> Vec<zrepl_protocol::Result<()>> {
    let mut c = log.lock().unwrap();
    for r in reqs {
        c.push(format!("{}{}", r.filesystem, r.common.relative_name()));
    }
    reqs.iter().map(|_| Ok(())).collect()
}

#[derive(Default)]
struct FakeReceiver {
    fs: Mutex<BTreeMap<DatasetPath, Vec<FilesystemVersion>>>,
    fail_on: HashSet<DatasetPath>,
    /// Receives into these never finish.
    hang_on: HashSet<DatasetPath>,
    order: Mutex<Vec<String>>,
    /// Filesystems that are replicated too: their children must not arrive before them.
    replicated: Mutex<HashSet<DatasetPath>>,
    /// `converge` requests: filesystem and common version.
    converged: Mutex<Vec<String>>,
    /// Notified by every `list_versions`.
    versions_listed: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl Receiver for FakeReceiver {
    async fn list_filesystems(&self) -> zrepl_protocol::Result<Vec<FilesystemInfo>> {
        Ok(self
            .fs
            .lock()
            .unwrap()
            .keys()
            .map(|k| FilesystemInfo {
                path: k.clone(),
                is_placeholder: false,
                resume_token: None,
            })
            .collect())
    }
    async fn list_versions(
        &self,
        fs: &DatasetPath,
    ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
        if let Some(n) = &self.versions_listed {
            n.notify_one();
        }
        Ok(self.fs.lock().unwrap().get(fs).cloned().unwrap_or_default())
    }
    async fn receive(
        &self,
        req: ReceiveRequest,
        mut stream: ByteStream,
    ) -> zrepl_protocol::Result<()> {
        let mut buf = String::new();
        stream.read_to_string(&mut buf).await.unwrap();
        assert_eq!(buf, format!("{}:{}", req.filesystem, req.to.guid));
        if self.hang_on.contains(&req.filesystem) {
            std::future::pending::<()>().await;
        }
        if self.fail_on.contains(&req.filesystem) {
            return Err(EndpointError::zfs("cannot receive: injected failure"));
        }
        if let Some(parent) = req
            .filesystem
            .parent()
            .filter(|p| self.replicated.lock().unwrap().contains(p))
        {
            let has_parent = self.fs.lock().unwrap().contains_key(&parent);
            assert!(
                has_parent,
                "child {} received before parent",
                req.filesystem
            );
        }
        self.order
            .lock()
            .unwrap()
            .push(format!("{}{}", req.filesystem, req.to.relative_name()));
        self.fs
            .lock()
            .unwrap()
            .entry(req.filesystem.clone())
            .or_default()
            .push(req.to);
        Ok(())
    }
    async fn converge(
        &self,
        reqs: &[ConvergeRequest],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<()>>> {
        Ok(record_converge(&self.converged, reqs))
    }
    async fn destroy_snapshots(
        &self,
        _fs: &DatasetPath,
        _s: &[FilesystemVersion],
    ) -> zrepl_protocol::Result<Vec<DestroyResult>> {
        Ok(vec![])
    }
}

fn sender(fss: &[(&str, &[(&str, u64)])]) -> FakeSender {
    FakeSender {
        fs: fss
            .iter()
            .map(|(n, vs)| (p(n), vs.iter().map(|(s, t)| snap(s, *t)).collect()))
            .collect(),
        ..Default::default()
    }
}

async fn run_once(s: &FakeSender, r: &FakeReceiver, cfg: &DriverConfig) -> RunReport {
    *r.replicated.lock().unwrap() = s.fs.keys().cloned().collect();
    let report = ReportHandle::new(Utc::now());
    run(s, r, cfg, &report, &CancellationToken::new()).await;
    report.snapshot()
}

#[tokio::test]
async fn a_cancelled_run_still_completes_the_steps_that_were_received() {
    let s = sender(&[("pool/fast", &[("1", 1)]), ("pool/slow", &[("1", 2)])]);
    let r = FakeReceiver {
        hang_on: [p("pool/slow")].into_iter().collect(),
        ..Default::default()
    };
    *r.replicated.lock().unwrap() = s.fs.keys().cloned().collect();
    let cfg = DriverConfig {
        policy: Policy {
            initial_replication: zrepl_planner::InitialReplication::All,
            ..Policy::default()
        },
        step_concurrency: 2,
        ..Default::default()
    };
    let report = ReportHandle::new(Utc::now());
    let cancel = CancellationToken::new();
    let canceller = async {
        // Until pool/fast was received (pool/slow never is).
        while r.order.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        cancel.cancel();
    };
    tokio::join!(run(&s, &r, &cfg, &report, &cancel), canceller);
    assert_eq!(report.snapshot().state, RunState::Cancelled);
    // The sender's cursor moved for what arrived, not for what did not.
    assert_eq!(*s.completed.lock().unwrap(), ["pool/fast@1"]);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_transfer_is_aborted_and_the_next_attempt_replicates() {
    let s = FakeSender {
        stalling_sends: AtomicUsize::new(1),
        ..sender(&[("pool/a", &[("1", 1)])])
    };
    let r = FakeReceiver::default();
    let cfg = DriverConfig {
        stall_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let started = tokio::time::Instant::now();
    let rep = run_once(&s, &r, &cfg).await;
    assert_eq!(rep.state, RunState::Done, "{rep:#?}");
    assert_eq!(rep.attempts.len(), 2, "{rep:#?}");
    let err = rep.attempts[0].filesystems[0]
        .step_error
        .clone()
        .unwrap_or_default();
    assert!(
        err.contains("transfer stalled") && err.contains("stall_timeout"),
        "{err}"
    );
    assert_eq!(*r.order.lock().unwrap(), ["pool/a@1"]);
    // Aborted after the limit (checked every second), not long after it.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(40),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_stall_timeout_a_stalled_transfer_waits() {
    let s = FakeSender {
        stalling_sends: AtomicUsize::new(1),
        ..sender(&[("pool/a", &[("1", 1)])])
    };
    let r = FakeReceiver::default();
    let report = ReportHandle::new(Utc::now());
    let ran = tokio::time::timeout(
        Duration::from_secs(3600),
        run(
            &s,
            &r,
            &DriverConfig::default(),
            &report,
            &CancellationToken::new(),
        ),
    )
    .await;
    assert!(ran.is_err(), "the run ended: {:#?}", report.snapshot());
}

#[test]
fn stall_clock_table() {
    let limit = Duration::from_secs(10);
    let t = |s: u64| Duration::from_secs(s);
    // (bytes, now) observed in order, and whether each reports a stall.
    // (bytes, now in seconds, stalled?)
    type Observations = &'static [(u64, u64, bool)];
    let cases: &[(&str, Observations)] = &[
        (
            "moving never stalls",
            &[(1, 5, false), (2, 15, false), (3, 25, false)],
        ),
        ("idle below the limit", &[(0, 9, false)]),
        ("idle at the limit", &[(0, 10, true)]),
        (
            "progress restarts the clock",
            &[(0, 9, false), (5, 12, false), (5, 21, false), (5, 22, true)],
        ),
        (
            "a stall goes on being reported",
            &[(0, 10, true), (0, 11, true)],
        ),
    ];
    for (name, steps) in cases {
        let mut c = StallClock::new(0, t(0));
        for (bytes, now, stalled) in steps.iter() {
            assert_eq!(
                c.observe(*bytes, t(*now), limit).is_some(),
                *stalled,
                "{name}: at {now}s with {bytes} bytes"
            );
        }
    }
}

/// Both sides list their versions at the same time: the receiver's listing waits for the
/// filesystem listings only, not for the sender's versions (here the sender's listing ends
/// only after the receiver's began; listing one after the other would never finish).
#[tokio::test]
async fn the_receivers_versions_are_listed_while_the_senders_are() {
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut s = sender(&[("pool/a", &[("1", 1), ("2", 2)])]);
    s.versions_wait = Some(notify.clone());
    let r = FakeReceiver {
        versions_listed: Some(notify),
        ..FakeReceiver::default()
    };
    r.fs.lock().unwrap().insert(p("pool/a"), vec![snap("1", 1)]);
    let cfg = DriverConfig::default();
    let rep = tokio::time::timeout(Duration::from_secs(30), run_once(&s, &r, &cfg))
        .await
        .expect("the sides listed their versions one after the other");
    assert_eq!(rep.state, RunState::Done, "{rep:#?}");
    assert_eq!(r.order.lock().unwrap().clone(), ["pool/a@2"]);
}

#[tokio::test]
async fn initial_then_incremental_with_parents_first_and_oldest_first() {
    let s = sender(&[
        ("pool/a/b", &[("1", 1), ("2", 4)]),
        ("pool/a", &[("1", 2), ("2", 3)]),
    ]);
    let r = FakeReceiver::default();
    let cfg = DriverConfig {
        policy: Policy {
            initial_replication: zrepl_planner::InitialReplication::All,
            ..Policy::default()
        },
        step_concurrency: 1,
        ..Default::default()
    };
    let rep = run_once(&s, &r, &cfg).await;
    assert_eq!(rep.state, RunState::Done, "{rep:#?}");
    let order = r.order.lock().unwrap().clone();
    // The parent's initial step precedes the child's; afterwards oldest target first.
    assert_eq!(order, ["pool/a@1", "pool/a@2", "pool/a/b@1", "pool/a/b@2"]);
    assert_eq!(s.completed.lock().unwrap().len(), 4);
    let a = &rep.attempts[0].filesystems[0];
    assert_eq!(a.state, FsState::Done);
    assert_eq!(a.bytes_replicated(), 2 * "pool/a:2000".len() as u64);
    // The full step is estimated before it runs (100); the incremental one is not (a `zfs send
    // -n` per step is what batching avoids) and counts what went through.
    assert_eq!(a.bytes_expected(), 100 + "pool/a:2000".len() as u64);

    // A second run has nothing to do.
    let rep = run_once(&s, &r, &cfg).await;
    assert_eq!(rep.state, RunState::Done);
    assert_eq!(r.order.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn one_failing_filesystem_does_not_stop_others_but_fails_its_children() {
    let s = sender(&[
        ("pool/bad", &[("1", 1)]),
        ("pool/bad/child", &[("1", 2)]),
        ("pool/badger", &[("1", 3)]),
        ("pool/good", &[("1", 4)]),
    ]);
    let r = FakeReceiver {
        fail_on: [p("pool/bad")].into_iter().collect(),
        ..Default::default()
    };
    let rep = run_once(&s, &r, &DriverConfig::default()).await;
    assert_eq!(rep.state, RunState::Failed);
    assert_eq!(rep.attempts.len(), 1, "permanent errors are not retried");
    let fss = &rep.attempts[0].filesystems;
    let by_name = |n: &str| fss.iter().find(|f| f.name == n).unwrap();
    assert_eq!(by_name("pool/bad").state, FsState::StepError);
    assert!(by_name("pool/bad/child")
        .error()
        .unwrap()
        .contains("parent(s) failed during initial replication"));
    assert_eq!(
        by_name("pool/badger").state,
        FsState::Done,
        "string prefix is not a parent"
    );
    assert_eq!(by_name("pool/good").state, FsState::Done);
    assert_eq!(rep.failed_filesystems().len(), 2);
}

#[tokio::test]
async fn conflicts_are_reported_per_filesystem() {
    let s = sender(&[("pool/x", &[("1", 1), ("2", 2)]), ("pool/y", &[("1", 3)])]);
    let r = FakeReceiver::default();
    r.fs.lock()
        .unwrap()
        .insert(p("pool/x"), vec![snap("other", 9)]);
    let rep = run_once(&s, &r, &DriverConfig::default()).await;
    let fss = &rep.attempts[0].filesystems;
    assert_eq!(fss[0].state, FsState::PlanningError);
    assert!(fss[0]
        .plan_error
        .as_ref()
        .unwrap()
        .contains("no common snapshot"));
    assert_eq!(fss[1].state, FsState::Done);
}

#[tokio::test(start_paused = true)]
async fn temporary_errors_are_retried() {
    let s = sender(&[("pool/x", &[("1", 1)])]);
    s.flaky_lists.store(2, Ordering::SeqCst);
    let r = FakeReceiver::default();
    let rep = run_once(&s, &r, &DriverConfig::default()).await;
    assert_eq!(rep.state, RunState::Done, "{rep:#?}");
    assert_eq!(rep.attempts.len(), 3);
    assert_eq!(rep.attempts[0].state, AttemptState::PlanningError);

    s.flaky_lists.store(5, Ordering::SeqCst);
    let rep = run_once(&s, &r, &DriverConfig::default()).await;
    assert_eq!(rep.state, RunState::Failed);
    assert_eq!(rep.attempts.len(), 3, "max attempts");
}

#[tokio::test]
async fn cancellation_ends_the_run() {
    let s = sender(&[("pool/x", &[("1", 1)])]);
    s.flaky_lists.store(100, Ordering::SeqCst);
    let r = FakeReceiver::default();
    let report = ReportHandle::new(Utc::now());
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c2.cancel();
    });
    run(&s, &r, &DriverConfig::default(), &report, &cancel).await;
    assert_eq!(report.snapshot().state, RunState::Cancelled);
}

/// Events of a step carry the structured fields zrepl has: subsystem, fs, step.
#[tokio::test]
async fn step_events_carry_subsystem_fs_and_step() {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let outlets = [zrepl_config::LoggingOutlet::Stdout {
        level: zrepl_config::LogLevel::Info,
        format: zrepl_config::LogFormat::Json,
        time: true,
        color: false,
    }];
    let (sub, guard) = zrepl_logging::subscriber(
        &outlets,
        None,
        zrepl_logging::Builder::new().stdout(Box::new(buf.clone()), false),
    )
    .unwrap();
    let _default = tracing::subscriber::set_default(sub);
    let s = sender(&[
        ("pool/bad", &[("1", 1)]),
        ("pool/ok", &[("1", 2), ("2", 3)]),
    ]);
    let r = FakeReceiver {
        fail_on: [p("pool/bad")].into_iter().collect(),
        ..Default::default()
    };
    let cfg = DriverConfig {
        policy: Policy {
            initial_replication: zrepl_planner::InitialReplication::All,
            ..Policy::default()
        },
        ..Default::default()
    };
    run_once(&s, &r, &cfg).await;
    assert!(guard.flush(Duration::from_secs(5)));
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let entries: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e["msg"] == "replicating step")
        .map(|e| {
            assert_eq!(e["subsystem"], "repl", "{e}");
            assert_eq!(e["span"], "repl$fs$step", "{e}");
            (
                e["fs"].as_str().unwrap().to_string(),
                e["step"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("pool/bad", "full send of @1"),
        ("pool/ok", "full send of @1"),
        ("pool/ok", "@1 => @2"),
    ];
    for (fs, step) in want {
        assert!(
            steps.contains(&(fs.to_string(), step.to_string())),
            "{fs} {step}: {steps:?}"
        );
    }
    let failed = entries
        .iter()
        .find(|e| e["msg"] == "step failed")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(failed["level"], "error");
    assert_eq!(failed["fs"], "pool/bad");
    assert_eq!(failed["step"], "full send of @1");
    assert!(failed["err"].as_str().unwrap().contains("injected failure"));
}

/// A run with nothing to send still converges what a lost completion left behind (zrepl's
/// `ReplicationStepCompletedLostBehavior`): the held sender snapshot and the receiver's unheld
/// newest are reported to both sides; converged filesystems are left alone.
#[tokio::test]
async fn up_to_date_filesystems_with_leftovers_are_converged() {
    let mut s = sender(&[
        ("pool/quiet", &[("1", 1), ("2", 2)]),
        ("pool/clean", &[("1", 3)]),
    ]);
    // A step hold survived on pool/quiet@2 (userrefs 1), as after a crash before completion.
    s.fs.get_mut(&p("pool/quiet")).unwrap()[1].userrefs = Some(1);
    // The clean filesystem has its cursor.
    let cursor = FilesystemVersion {
        typ: VersionType::Bookmark,
        name: zrepl_zfs_types::abstraction::cursor_bookmark_name(3000, "push"),
        userrefs: None,
        ..snap("x", 3)
    };
    s.fs.get_mut(&p("pool/clean")).unwrap().push(cursor);
    let r = FakeReceiver::default();
    {
        let mut fs = r.fs.lock().unwrap();
        fs.insert(p("pool/quiet"), vec![snap("1", 1), snap("2", 2)]);
        let mut held = snap("1", 3);
        held.userrefs = Some(1);
        fs.insert(p("pool/clean"), vec![held]);
    }
    let rep = run_once(&s, &r, &DriverConfig::default()).await;
    assert_eq!(rep.state, RunState::Done, "{rep:#?}");
    assert!(r.order.lock().unwrap().is_empty(), "nothing was to be sent");
    assert_eq!(*s.converged.lock().unwrap(), ["pool/quiet@2"]);
    assert_eq!(*r.converged.lock().unwrap(), ["pool/quiet@2"]);

    // A peer that answers for a different number of filesystems is not believed, and does not
    // fail the filesystems (their data is replicated): the next run asks again.
    s.converge_answers_nothing = true;
    let rep = run_once(&s, &r, &DriverConfig::default()).await;
    assert_eq!(rep.state, RunState::Done, "{rep:#?}");
    assert_eq!(s.converged.lock().unwrap().len(), 2, "asked again");
}

#[tokio::test]
async fn a_run_that_created_no_filesystem_hands_its_listings_on() {
    async fn go(
        s: &FakeSender,
        r: &FakeReceiver,
    ) -> (RunState, Option<crate::FilesystemsUnchanged>) {
        // The fakes keep no holds or cursors: without protection, nothing is converged.
        let cfg = DriverConfig {
            policy: Policy {
                initial_replication: zrepl_planner::InitialReplication::All,
                ..Policy::default()
            },
            replication: ReplicationConfig {
                initial: zrepl_protocol::Protection::GuaranteeNothing,
                incremental: zrepl_protocol::Protection::GuaranteeNothing,
            },
            ..Default::default()
        };
        *r.replicated.lock().unwrap() = s.fs.keys().cloned().collect();
        let report = ReportHandle::new(Utc::now());
        let u = run(s, r, &cfg, &report, &CancellationToken::new()).await;
        (report.snapshot().state, u)
    }
    let names = |l: &[FilesystemInfo]| l.iter().map(|f| f.path.to_string()).collect::<Vec<_>>();
    let mut s = sender(&[("pool/a", &[("1", 1), ("2", 2)]), ("pool/b", &[("1", 3)])]);
    let r = FakeReceiver::default();
    // Initial replication creates the receiver's filesystems: its listings are outdated.
    assert!(
        matches!(go(&s, &r).await, (RunState::Done, None)),
        "a run with full sends"
    );
    // Nothing to do: both sides' listings, as they were listed.
    let (state, u) = go(&s, &r).await;
    assert_eq!(state, RunState::Done);
    let u = u.expect("a run that changed nothing");
    assert_eq!(names(&u.sender), ["pool/a", "pool/b"]);
    assert_eq!(names(&u.receiver), ["pool/a", "pool/b"]);
    // An incremental step changes snapshots, not filesystems.
    s.fs.get_mut(&p("pool/b")).unwrap().push(snap("2", 4));
    let (state, u) = go(&s, &r).await;
    assert_eq!(state, RunState::Done);
    assert_eq!(r.order.lock().unwrap().last().unwrap(), "pool/b@2");
    assert_eq!(
        names(&u.expect("incremental steps only").receiver),
        ["pool/a", "pool/b"]
    );
    // A filesystem the receiver lacks (even with nothing to send yet), or a new one sent in
    // full: listed again.
    s.fs.insert(p("pool/c"), Vec::new());
    assert!(
        go(&s, &r).await.1.is_none(),
        "a filesystem missing on the receiver"
    );
    s.fs.insert(p("pool/c"), vec![snap("1", 5)]);
    assert!(go(&s, &r).await.1.is_none(), "a full send");
    assert!(go(&s, &r).await.1.is_some());
    // A failed run hands nothing on.
    s.fs.get_mut(&p("pool/b")).unwrap().push(snap("3", 6));
    let bad = FakeReceiver {
        fail_on: [p("pool/b")].into_iter().collect(),
        ..Default::default()
    };
    bad.fs.lock().unwrap().extend(r.fs.lock().unwrap().clone());
    let (state, u) = go(&s, &bad).await;
    assert!(state == RunState::Failed && u.is_none(), "{state:?}");
}
