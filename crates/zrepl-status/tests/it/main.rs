//! The `/status` contract: round trip, the schema in `docs/schemas/status.schema.json`, the
//! exact field names, and documents of other versions.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use zrepl_status::*;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_764_000_000 + secs, 250_000_000)
        .unwrap()
}

fn step(from: Option<&str>, to: &str, expected: u64, replicated: u64) -> StepReport {
    StepReport {
        intermediates: Vec::new(),
        from: from.map(String::from),
        to: to.into(),
        resumed: from.is_some(),
        bytes_expected: expected,
        bytes_replicated: Counter::new(replicated),
        to_creation: 1_764_000_000,
    }
}

/// A document with every optional part present and every state value used.
fn full() -> DaemonStatus {
    let fs =
        |name: &str, state: FsState, blocked_on: BlockedOn, steps: Vec<StepReport>, cur: usize| {
            FilesystemReport {
                name: name.into(),
                state,
                blocked_on,
                plan_error: (state == FsState::PlanningError).then(|| "no common ancestor".into()),
                step_error: (state == FsState::StepError).then(|| "dataset is busy".into()),
                steps,
                current_step: cur,
            }
        };
    let run = RunReport {
        state: RunState::WaitReconnect,
        started_at: t(0),
        finished_at: Some(t(90)),
        attempts: vec![
            AttemptReport {
                state: AttemptState::PlanningError,
                started_at: t(0),
                finished_at: Some(t(1)),
                plan_error: Some("connection refused".into()),
                filesystems: vec![],
            },
            AttemptReport {
                state: AttemptState::FanOutFilesystems,
                started_at: t(30),
                finished_at: Some(t(60)),
                plan_error: None,
                filesystems: vec![
                    fs(
                        "pool/a",
                        FsState::Stepping,
                        BlockedOn::Nothing,
                        vec![step(Some("@1"), "@2", 2048, 1024), step(None, "@3", 0, 0)],
                        0,
                    ),
                    fs("pool/b", FsState::Planning, BlockedOn::PlanQueue, vec![], 0),
                    fs(
                        "pool/c",
                        FsState::PlanningError,
                        BlockedOn::ReplQueue,
                        vec![],
                        0,
                    ),
                    fs(
                        "pool/c/d",
                        FsState::StepError,
                        BlockedOn::ParentInitialRepl,
                        vec![step(Some("#b"), "@4", 10, 3)],
                        0,
                    ),
                    fs("pool/e", FsState::Done, BlockedOn::Nothing, vec![], 0),
                ],
            },
        ],
        wait_reconnect_until: Some(t(120)),
        wait_reconnect_error: Some("peer went away".into()),
    };
    let fs_prune = FsPrune {
        filesystem: "pool/a".into(),
        skipped: None,
        destroy: vec!["zrepl_1".into(), "zrepl_2".into()],
        keep: vec![("zrepl_3".into(), vec!["last_n".into(), "grid".into()])],
        errors: vec![("zrepl_2".into(), "dataset is busy".into())],
        foreign: vec!["zrepl_1".into()],
    };
    let side = SideReport {
        error: Some("listing failed on one filesystem".into()),
        filesystems: vec![
            fs_prune,
            FsPrune::skipped("pool/p", "filesystem is placeholder"),
        ],
    };
    let snapshotting = SnapshotterStatus {
        state: SnapState::ErrorWait,
        next_round_at: Some(t(600)),
        last_round: Some(RoundReport {
            started_at: t(0),
            snapshot_name: "zrepl_20251124_160000_000".into(),
            filesystems: vec!["pool/a".into()],
            skipped: vec![Skipped {
                filesystem: "pool/b".into(),
                written: 4096,
            }],
            error: Some("hook failed".into()),
        }),
        error: Some("hook failed".into()),
    };
    let job = |name: &str, kind: &str, state: JobState| JobStatus {
        name: name.into(),
        kind: kind.into(),
        state,
        error: Some("boom".into()),
        replication: Some(run.clone()),
        pruning: Some(PruneReport {
            sender: side.clone(),
            receiver: side.clone(),
        }),
        pruning_local: Some(side.clone()),
        snapshotting: Some(snapshotting.clone()),
        last_successful_replication: Some(t(-3600)),
    };
    let mut jobs = BTreeMap::new();
    for (name, kind, state) in [
        ("push", "push", JobState::Replicating),
        ("pull", "pull", JobState::Idle),
        ("sink", "sink", JobState::Serving),
        ("snap", "snap", JobState::Error),
    ] {
        jobs.insert(name.to_string(), job(name, kind, state));
    }
    // The other run and snapshotter states.
    for (i, state) in [
        RunState::Running,
        RunState::Done,
        RunState::Failed,
        RunState::Cancelled,
    ]
    .into_iter()
    .enumerate()
    {
        let mut j = job(&format!("_run{i}"), "push", JobState::Idle);
        let r = j.replication.as_mut().unwrap();
        r.state = state;
        r.attempts[1].state = [
            AttemptState::Planning,
            AttemptState::FilesystemError,
            AttemptState::Done,
            AttemptState::Done,
        ][i];
        j.snapshotting.as_mut().unwrap().state = [
            SnapState::SyncUp,
            SnapState::Waiting,
            SnapState::Snapshotting,
        ][i % 3];
        jobs.insert(j.name.clone(), j);
    }
    DaemonStatus {
        version: VERSION,
        jobs,
        global: GlobalStatus {
            zfs_commands: ZfsCommands {
                active: vec![ActiveCommand {
                    argv: vec!["zfs".into(), "send".into(), "pool/a@2".into()],
                    running_for_secs: 1.5,
                }],
                started: [("zfs send".to_string(), 3), ("zpool list".to_string(), 1)]
                    .into_iter()
                    .collect(),
            },
        },
    }
}

fn schema() -> jsonschema::Validator {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas/status.schema.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    jsonschema::validator_for(&v).unwrap_or_else(|e| panic!("status.schema.json: {e}"))
}

fn assert_valid(v: &serde_json::Value) {
    let errors: Vec<String> = schema().iter_errors(v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{v:#}");
}

#[test]
fn a_full_document_round_trips() {
    let doc = full();
    let text = serde_json::to_string(&doc).unwrap();
    let back = DaemonStatus::from_json(text.as_bytes()).unwrap();
    assert_eq!(back, doc);
    assert_eq!(serde_json::to_string(&back).unwrap(), text);
    // No field of the full document is at its default: each one round-tripped for real.
    let v = serde_json::to_value(&doc).unwrap();
    assert!(v["jobs"]["push"]
        .as_object()
        .unwrap()
        .values()
        .all(|f| !f.is_null()));
}

#[test]
fn a_full_document_validates_against_the_schema() {
    assert_valid(&serde_json::to_value(full()).unwrap());
    assert_valid(&serde_json::to_value(DaemonStatus::new()).unwrap());
}

#[test]
fn the_schema_is_closed_so_undocumented_fields_are_noticed() {
    let mut v = serde_json::to_value(full()).unwrap();
    v["jobs"]["push"]["replication"]["attempts"][1]["filesystems"][0]["new_field"] = json!(1);
    assert!(!schema().is_valid(&v));
    let mut v = serde_json::to_value(full()).unwrap();
    v["jobs"]["push"]["state"] = json!("unknown");
    assert!(!schema().is_valid(&v), "the daemon never writes unknown");
}

/// The field names and shape are what zrepl-rs wrote before the contract had a type (scripts
/// and the platform tests read `status --mode raw`); only `version` was added.
#[test]
fn field_names_and_shape_are_pinned() {
    let mut jobs = BTreeMap::new();
    let mut run = RunReport::new(t(0));
    run.attempts.push(AttemptReport {
        state: AttemptState::FanOutFilesystems,
        started_at: t(0),
        finished_at: None,
        plan_error: None,
        filesystems: vec![FilesystemReport {
            steps: vec![step(None, "@1", 10, 4)],
            ..FilesystemReport::new("pool/a".into())
        }],
    });
    jobs.insert(
        "push".to_string(),
        JobStatus {
            name: "push".into(),
            kind: "push".into(),
            state: JobState::Replicating,
            replication: Some(run),
            ..Default::default()
        },
    );
    let doc = DaemonStatus {
        jobs,
        ..DaemonStatus::new()
    };
    let at = "2025-11-24T16:00:00.250Z";
    assert_eq!(
        serde_json::to_value(&doc).unwrap(),
        json!({"version": 1, "jobs": {"push": {
            "name": "push", "type": "push", "state": "replicating", "error": null,
            "replication": {"state": "running", "started_at": at, "finished_at": null, "attempts": [
                {"state": "fan-out-filesystems", "started_at": at, "finished_at": null,
                 "plan_error": null, "filesystems": [
                    {"name": "pool/a", "state": "planning", "blocked_on": "plan-queue",
                     "plan_error": null, "step_error": null, "steps": [
                        {"from": null, "to": "@1", "intermediates": [], "resumed": false, "bytes_expected": 10,
                         "bytes_replicated": 4, "to_creation": 1_764_000_000}],
                     "current_step": 0}]}],
                "wait_reconnect_until": null, "wait_reconnect_error": null},
            "pruning": null, "pruning_local": null, "snapshotting": null,
            "last_successful_replication": null}},
         "global": {"zfs_commands": {"active": [], "started": {}}}})
    );
    // Field order too (a struct serializes in declaration order).
    let text = serde_json::to_string(&doc).unwrap();
    assert!(
        text.starts_with(r#"{"version":1,"jobs":{"push":{"name":"push","type":"push","state""#),
        "{text}"
    );
}

#[test]
fn every_state_value_has_its_wire_name() {
    fn check<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        cases: &[(T, &str)],
    ) {
        for (v, wire) in cases {
            assert_eq!(serde_json::to_value(v).unwrap(), json!(wire));
            assert_eq!(&serde_json::from_value::<T>(json!(wire)).unwrap(), v);
        }
    }
    check(&[
        (JobState::Idle, "idle"),
        (JobState::Replicating, "replicating"),
        (JobState::Serving, "serving"),
        (JobState::Error, "error"),
        (JobState::Unknown, "unknown"),
    ]);
    check(&[
        (RunState::Running, "running"),
        (RunState::WaitReconnect, "wait-reconnect"),
        (RunState::Done, "done"),
        (RunState::Failed, "failed"),
        (RunState::Cancelled, "cancelled"),
    ]);
    check(&[
        (AttemptState::Planning, "planning"),
        (AttemptState::PlanningError, "planning-error"),
        (AttemptState::FanOutFilesystems, "fan-out-filesystems"),
        (AttemptState::FilesystemError, "filesystem-error"),
        (AttemptState::Done, "done"),
    ]);
    check(&[
        (FsState::Planning, "planning"),
        (FsState::PlanningError, "planning-error"),
        (FsState::Stepping, "stepping"),
        (FsState::StepError, "step-error"),
        (FsState::Done, "done"),
    ]);
    check(&[
        (BlockedOn::Nothing, "nothing"),
        (BlockedOn::PlanQueue, "plan-queue"),
        (BlockedOn::ParentInitialRepl, "parent-initial-repl"),
        (BlockedOn::ReplQueue, "repl-queue"),
    ]);
    check(&[
        (SnapState::SyncUp, "sync_up"),
        (SnapState::Waiting, "waiting"),
        (SnapState::Snapshotting, "snapshotting"),
        (SnapState::ErrorWait, "error_wait"),
    ]);
    assert_eq!(RunState::WaitReconnect.as_str(), "wait-reconnect");
    assert_eq!(SnapState::ErrorWait.to_string(), "error_wait");
}

/// A daemon from before the `version` field, or one that leaves parts out: missing fields take
/// their defaults.
#[test]
fn an_older_document_parses_with_defaults() {
    let s = DaemonStatus::from_json(
        br#"{"jobs": {"push": {"type": "push", "state": "idle", "replication": {"state": "done",
            "attempts": [{"filesystems": [{"name": "p/a", "steps": [{"to": "@1"}]}]}]}}}}"#,
    )
    .unwrap();
    assert_eq!(s.version, 0);
    assert!(s.global.zfs_commands.active.is_empty());
    let j = &s.jobs["push"];
    assert_eq!(
        (j.kind.as_str(), j.state, j.name.as_str()),
        ("push", JobState::Idle, "")
    );
    let r = j.replication.as_ref().unwrap();
    assert!(r.succeeded() && !r.is_active());
    assert_eq!(known_time(r.started_at), None);
    let a = &r.attempts[0];
    assert_eq!(a.state, AttemptState::Unknown);
    let f = &a.filesystems[0];
    assert_eq!(
        (f.state, f.blocked_on, f.current_step),
        (FsState::Unknown, BlockedOn::Nothing, 0)
    );
    assert_eq!(f.steps[0].bytes_replicated.get(), 0);
    assert!(a.lacks_estimates());
    assert!(DaemonStatus::from_json(b"{}").unwrap().jobs.is_empty());
}

/// A newer daemon: unknown fields anywhere are ignored, unknown state values read as `Unknown`.
#[test]
fn a_newer_document_parses() {
    let mut v = serde_json::to_value(full()).unwrap();
    v["version"] = json!(VERSION + 1);
    v["added_later"] = json!({"anything": [1, 2]});
    v["global"]["zfs_commands"]["added_later"] = json!(true);
    let push = &mut v["jobs"]["push"];
    push["state"] = json!("paused");
    push["added_later"] = json!("x");
    push["snapshotting"]["state"] = json!("throttled");
    let run = &mut push["replication"];
    run["state"] = json!("draining");
    run["attempts"][1]["state"] = json!("verifying");
    let fs = &mut run["attempts"][1]["filesystems"][0];
    fs["state"] = json!("verifying");
    fs["blocked_on"] = json!("bandwidth");
    fs["steps"][0]["added_later"] = json!(null);
    v["jobs"]["push"]["pruning"]["sender"]["filesystems"][0]["added_later"] = json!(0);

    let s: DaemonStatus = serde_json::from_value(v).unwrap();
    assert_eq!(s.version, VERSION + 1);
    let push = &s.jobs["push"];
    assert_eq!(push.state, JobState::Unknown);
    assert_eq!(
        push.snapshotting.as_ref().unwrap().state,
        SnapState::Unknown
    );
    let run = push.replication.as_ref().unwrap();
    assert_eq!(run.state, RunState::Unknown);
    assert_eq!(run.attempts[1].state, AttemptState::Unknown);
    let fs = &run.attempts[1].filesystems[0];
    assert_eq!(
        (fs.state, fs.blocked_on),
        (FsState::Unknown, BlockedOn::Unknown)
    );
    assert_eq!(fs.bytes(), (1024, 2048));
    // Everything else is as the full document has it.
    let mut expected = full();
    let e = expected.jobs.get_mut("push").unwrap();
    e.state = JobState::Unknown;
    e.snapshotting.as_mut().unwrap().state = SnapState::Unknown;
    let r = e.replication.as_mut().unwrap();
    r.state = RunState::Unknown;
    r.attempts[1].state = AttemptState::Unknown;
    r.attempts[1].filesystems[0].state = FsState::Unknown;
    r.attempts[1].filesystems[0].blocked_on = BlockedOn::Unknown;
    expected.version = VERSION + 1;
    assert_eq!(s, expected);
}

#[test]
fn reader_helpers() {
    let doc = full();
    assert_eq!(
        doc.visible_jobs()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["pull", "push", "sink", "snap"]
    );
    let run = doc.jobs["push"].replication.as_ref().unwrap();
    assert!(run.is_active() && !run.succeeded());
    let a = &run.attempts[1];
    assert_eq!(a.bytes(), (1027, 2058));
    assert!(a.lacks_estimates());
    let failed: Vec<_> = run
        .failed_filesystems()
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(failed, ["pool/c", "pool/c/d"]);
    assert_eq!(a.filesystems[2].error(), Some("no common ancestor"));
    assert_eq!(a.filesystems[3].error(), Some("dataset is busy"));
    assert!(a.filesystems[0].is_active());
    assert!(!a.filesystems[1].is_active(), "waits for the plan queue");
    assert_eq!(known_time(t(0)), Some(t(0)));
}

#[test]
fn a_counter_is_shared_by_clones_and_compared_by_value() {
    let c = Counter::default();
    let copy = c.clone();
    c.add(5);
    assert_eq!(copy.get(), 5);
    assert_eq!(Counter::new(5), c);
    assert_ne!(Counter::new(4), c);
    assert_eq!(serde_json::to_string(&c).unwrap(), "5");
    assert_eq!(serde_json::from_str::<Counter>("7").unwrap().get(), 7);
}
