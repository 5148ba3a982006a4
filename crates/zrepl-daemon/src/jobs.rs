//! Jobs built from the config, and their loops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zrepl_config as config;
use zrepl_endpoint::{LocalSender, PlaceholderPolicy, ReceiverConfig, SenderConfig};
use zrepl_protocol::{Protection, ReplicationConfig};
use zrepl_replication::{DriverConfig, ReportHandle, RunReport};
use zrepl_zfs::Zfs;

use crate::local::LocalListeners;
use crate::prune::PruneReport;
use crate::snapshot::{SharedStatus, Snapshotter, SnapshotterStatus};
use crate::DaemonError;

/// What a job is doing, for `zrepl status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a wakeup.
    Idle,
    Replicating,
    /// A passive job serving its peers.
    Serving,
    /// The job could not start or stopped with an error.
    Error,
}

/// A job's status.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub state: JobState,
    pub error: Option<String>,
    /// The current or last replication run.
    pub replication: Option<RunReport>,
    /// The last pruning of both sides (after the replication run).
    pub pruning: Option<PruneReport>,
    /// The last pruning of a snap job.
    pub pruning_local: Option<crate::prune::SideReport>,
    pub snapshotting: Option<SnapshotterStatus>,
    pub last_successful_replication: Option<DateTime<Utc>>,
}

/// What the daemon keeps per job: its signals and its status.
pub struct JobHandle {
    pub name: String,
    pub kind: &'static str,
    wakeup: Option<mpsc::Sender<()>>,
    /// Cancels the run in progress (`zrepl signal reset`).
    current_run: Mutex<Option<CancellationToken>>,
    state: Mutex<JobStateInner>,
    /// Finished replication runs, for the metrics.
    pub(crate) history: crate::history::JobHistory,
}

struct JobStateInner {
    state: JobState,
    error: Option<String>,
    report: Option<ReportHandle>,
    pruning: Option<PruneReport>,
    pruning_local: Option<crate::prune::SideReport>,
    snapshotter: Option<SharedStatus>,
    last_success: Option<DateTime<Utc>>,
}

impl JobHandle {
    pub(crate) fn new(
        name: &str,
        kind: &'static str,
        wakeup: Option<mpsc::Sender<()>>,
        state: JobState,
    ) -> Self {
        JobHandle {
            name: name.to_string(),
            kind,
            wakeup,
            current_run: Mutex::new(None),
            state: Mutex::new(JobStateInner {
                state,
                error: None,
                report: None,
                pruning: None,
                pruning_local: None,
                snapshotter: None,
                last_success: None,
            }),
            history: Default::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, JobStateInner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> JobStatus {
        let s = self.inner();
        JobStatus {
            name: self.name.clone(),
            kind: self.kind,
            state: s.state,
            error: s.error.clone(),
            replication: s.report.as_ref().map(ReportHandle::snapshot),
            pruning: s.pruning.clone(),
            pruning_local: s.pruning_local.clone(),
            snapshotting: s
                .snapshotter
                .as_ref()
                .map(|st| st.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            last_successful_replication: s.last_success,
        }
    }

    /// `zrepl signal wakeup`: never blocks; a wakeup already pending is an error, as in zrepl.
    pub fn wakeup(&self) -> Result<(), String> {
        let Some(tx) = &self.wakeup else {
            return Err(format!(
                "job {:?} of type {} cannot be woken up",
                self.name, self.kind
            ));
        };
        tx.try_send(()).map_err(|_| "already woken up".to_string())
    }

    /// `zrepl signal reset`: cancels the run in progress.
    pub fn reset(&self) -> Result<(), String> {
        match self
            .current_run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(t) => {
                t.cancel();
                Ok(())
            }
            None => Err("already reset".to_string()),
        }
    }
}

/// A job ready to run.
pub(crate) enum Runnable {
    Push {
        handle: Arc<JobHandle>,
        wakeups: mpsc::Receiver<()>,
        sender: LocalSender,
        listener: String,
        client_identity: String,
        dial_timeout: Duration,
        driver: DriverConfig,
        keep_sender: Vec<zrepl_pruning::Rule>,
        keep_receiver: Vec<zrepl_pruning::Rule>,
        snapshotter: Option<Snapshotter>,
    },
    Snap {
        handle: Arc<JobHandle>,
        wakeups: mpsc::Receiver<()>,
        sender: LocalSender,
        keep: Vec<zrepl_pruning::Rule>,
        snapshotter: Option<Snapshotter>,
    },
    Sink {
        handle: Arc<JobHandle>,
        listener: String,
        receiver: ReceiverConfig,
    },
}

impl Runnable {
    pub(crate) fn handle(&self) -> &Arc<JobHandle> {
        match self {
            Runnable::Push { handle, .. }
            | Runnable::Snap { handle, .. }
            | Runnable::Sink { handle, .. } => handle,
        }
    }
}

fn protection(p: config::ProtectionLevel) -> Protection {
    match p {
        config::ProtectionLevel::GuaranteeResumability => Protection::GuaranteeResumability,
        config::ProtectionLevel::GuaranteeIncremental => Protection::GuaranteeIncremental,
        config::ProtectionLevel::GuaranteeNothing => Protection::GuaranteeNothing,
    }
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

fn driver_config(r: &config::Replication, c: &config::ConflictResolution) -> DriverConfig {
    let initial_replication = match c.initial_replication {
        config::InitialReplication::MostRecent => zrepl_planner::InitialReplication::MostRecent,
        config::InitialReplication::All => zrepl_planner::InitialReplication::All,
        config::InitialReplication::Fail => zrepl_planner::InitialReplication::Fail,
    };
    DriverConfig {
        policy: zrepl_planner::Policy {
            initial_replication,
        },
        replication: ReplicationConfig {
            initial: protection(r.protection.initial),
            incremental: protection(r.protection.incremental),
        },
        step_concurrency: r.concurrency.steps as usize,
        size_estimate_concurrency: r.concurrency.size_estimates as usize,
        max_attempts: env_parse("ZREPL_REPLICATION_MAX_ATTEMPTS").unwrap_or(3),
        reconnect_timeout: std::env::var("ZREPL_REPLICATION_RECONNECT_HARD_FAIL_TIMEOUT")
            .ok()
            .and_then(|v| zrepl_config::units::GoDuration::parse(&v).ok())
            .map(|d| d.to_std())
            .unwrap_or(Duration::from_secs(600)),
    }
}

/// The snapshotter of a job, if its snapshotting is not `manual`.
fn snapshotter(
    job: &str,
    s: &config::Snapshotting,
    filter: &zrepl_filters::DatasetFilter,
    zfs: &Zfs,
) -> Result<Option<Snapshotter>, DaemonError> {
    let (prefix, format, location, hooks, schedule) = match s {
        config::Snapshotting::Manual => return Ok(None),
        config::Snapshotting::Periodic {
            prefix,
            interval,
            timestamp_format,
            timestamp_location,
            hooks,
        } => (
            prefix,
            timestamp_format,
            timestamp_location,
            hooks,
            crate::snapshot::Schedule::Periodic {
                interval_secs: interval.as_secs(),
            },
        ),
        config::Snapshotting::Cron {
            prefix,
            cron,
            timestamp_format,
            timestamp_location,
            hooks,
        } => (
            prefix,
            timestamp_format,
            timestamp_location,
            hooks,
            crate::snapshot::Schedule::Cron(cron.clone()),
        ),
    };
    let mut command_hooks = Vec::new();
    for h in hooks {
        match h {
            config::Hook::Command {
                path,
                timeout,
                err_is_fatal,
                filesystems,
            } => command_hooks.push(crate::snapshot::CommandHook {
                path: path.clone(),
                timeout: timeout.to_std(),
                err_is_fatal: *err_is_fatal,
                filter: filesystems.clone(),
            }),
            config::Hook::PostgresCheckpoint { .. } => {
                return Err(unsupported(job, "the postgres-checkpoint hook"))
            }
            config::Hook::MysqlLockTables { .. } => {
                return Err(unsupported(job, "the mysql-lock-tables hook"))
            }
        }
    }
    Ok(Some(Snapshotter {
        zfs: zfs.clone(),
        filter: filter.clone(),
        prefix: prefix.clone(),
        format: format.clone(),
        location: *location,
        schedule,
        hooks: command_hooks,
    }))
}

fn unsupported(job: &str, what: &str) -> DaemonError {
    DaemonError::Unsupported(format!(
        "job {job:?}: {what} is not supported by this build yet"
    ))
}

/// Builds the runnable jobs. Anything this build cannot run is refused up front with a clear
/// message, instead of a daemon that silently does nothing for that job.
pub(crate) fn build(cfg: &config::Config, zfs: &Zfs) -> Result<Vec<Runnable>, DaemonError> {
    let mut out = Vec::new();
    for job in &cfg.jobs {
        match job {
            config::Job::Push(p) => {
                let config::Connect::Local {
                    listener_name,
                    client_identity,
                    dial_timeout,
                } = &p.connect
                else {
                    return Err(unsupported(&p.name, "a push job over a network transport"));
                };
                let snapshotter = snapshotter(&p.name, &p.snapshotting, &p.filesystems, zfs)?;
                let s = &p.send;
                if s.bandwidth_limit.max_bytes_per_sec().is_some() {
                    return Err(unsupported(&p.name, "send.bandwidth_limit"));
                }
                let sender_cfg = SenderConfig {
                    job: p.name.clone(),
                    filesystems: p.filesystems.clone(),
                    encrypted: s.encrypted,
                    raw: s.raw,
                    send_properties: s.send_properties,
                    backup_properties: s.backup_properties,
                    large_blocks: s.large_blocks,
                    compressed: s.compressed,
                    embedded_data: s.embedded_data,
                    saved: s.saved,
                };
                let (tx, rx) = mpsc::channel(1);
                out.push(Runnable::Push {
                    handle: Arc::new(JobHandle::new(&p.name, "push", Some(tx), JobState::Idle)),
                    wakeups: rx,
                    sender: LocalSender::new(zfs.clone(), sender_cfg),
                    listener: listener_name.clone(),
                    client_identity: client_identity.clone(),
                    dial_timeout: dial_timeout.to_std(),
                    driver: driver_config(&p.replication, &p.conflict_resolution),
                    keep_sender: crate::prune::rules(&p.pruning.keep_sender),
                    keep_receiver: crate::prune::rules(&p.pruning.keep_receiver),
                    snapshotter,
                });
            }
            config::Job::Sink(s) => {
                let config::Serve::Local { listener_name } = &s.serve else {
                    return Err(unsupported(&s.name, "a sink job over a network transport"));
                };
                if s.recv.bandwidth_limit.max_bytes_per_sec().is_some() {
                    return Err(unsupported(&s.name, "recv.bandwidth_limit"));
                }
                let placeholder = match s.recv.placeholder.encryption {
                    config::PlaceholderEncryption::Unspecified => PlaceholderPolicy::Unspecified,
                    config::PlaceholderEncryption::Inherit => PlaceholderPolicy::Inherit,
                    config::PlaceholderEncryption::Off => PlaceholderPolicy::Off,
                };
                out.push(Runnable::Sink {
                    handle: Arc::new(JobHandle::new(&s.name, "sink", None, JobState::Serving)),
                    listener: listener_name.clone(),
                    receiver: ReceiverConfig {
                        job: s.name.clone(),
                        root_fs: s.root_fs.clone(),
                        client_identity: None,
                        placeholder,
                        inherit: s.recv.properties.inherit.clone(),
                        override_: s
                            .recv
                            .properties
                            .override_
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    },
                });
            }
            config::Job::Pull(j) => return Err(unsupported(&j.name, "the pull job")),
            config::Job::Source(j) => return Err(unsupported(&j.name, "the source job")),
            config::Job::Snap(j) => {
                let snapshotter = snapshotter(&j.name, &j.snapshotting, &j.filesystems, zfs)?;
                let (tx, rx) = mpsc::channel(1);
                out.push(Runnable::Snap {
                    handle: Arc::new(JobHandle::new(&j.name, "snap", Some(tx), JobState::Idle)),
                    wakeups: rx,
                    sender: LocalSender::new(
                        zfs.clone(),
                        SenderConfig::new(j.name.clone(), j.filesystems.clone()),
                    ),
                    keep: crate::prune::rules(&j.pruning.keep),
                    snapshotter,
                });
            }
        }
    }
    Ok(out)
}

fn log_prune(job: &str, pr: &PruneReport) {
    for (side, rep) in [("sender", &pr.sender), ("receiver", &pr.receiver)] {
        if let Some(e) = &rep.error {
            tracing::error!(job, side, error = %e, "pruning failed");
        }
        for f in &rep.filesystems {
            if !f.destroy.is_empty() {
                tracing::info!(job, side, fs = %f.filesystem, destroyed = ?f.destroy, "pruned snapshots");
            }
            for (snap, e) in &f.errors {
                tracing::warn!(job, side, fs = %f.filesystem, snap, error = %e, "cannot destroy snapshot");
            }
            if let Some(why) = &f.skipped {
                tracing::debug!(job, side, fs = %f.filesystem, why, "not pruned");
            }
        }
    }
}

/// Endpoints for a dry run of a push job's pruning, built from the config alone: the local
/// sender of the job and the receiver of the sink that serves its local listener.
pub(crate) fn dry_run_endpoints(
    cfg: &config::Config,
    job: &str,
    zfs: &Zfs,
) -> Result<
    (
        LocalSender,
        zrepl_endpoint::LocalReceiver,
        Vec<zrepl_pruning::Rule>,
        Vec<zrepl_pruning::Rule>,
    ),
    DaemonError,
> {
    let runnables = build(cfg, zfs)?;
    let mut sinks = std::collections::HashMap::new();
    for r in &runnables {
        if let Runnable::Sink {
            listener, receiver, ..
        } = r
        {
            sinks
                .entry(listener.clone())
                .or_insert_with(|| receiver.clone());
        }
    }
    for r in runnables {
        if let Runnable::Push {
            handle,
            sender,
            listener,
            client_identity,
            keep_sender,
            keep_receiver,
            ..
        } = r
        {
            if handle.name != job {
                continue;
            }
            let mut rc = sinks.get(&listener).cloned().ok_or_else(|| {
                DaemonError::Unsupported(format!("no sink job serves local listener {listener:?}"))
            })?;
            rc.client_identity = Some(client_identity);
            let receiver = zrepl_endpoint::LocalReceiver::new(zfs.clone(), rc)
                .map_err(|e| DaemonError::Unsupported(e.to_string()))?;
            return Ok((sender, receiver, keep_sender, keep_receiver));
        }
    }
    Err(DaemonError::Unsupported(format!(
        "job {job:?} is not a push job of this config (pruning dry runs are for push jobs)"
    )))
}

/// Runs a job until `shutdown`.
pub(crate) async fn run(
    job: Runnable,
    zfs: Zfs,
    listeners: LocalListeners,
    shutdown: CancellationToken,
) {
    match job {
        Runnable::Sink {
            handle,
            listener,
            receiver,
        } => {
            if let Err(e) = listeners.register(&listener, zfs, receiver) {
                tracing::error!(job = %handle.name, error = %e, "cannot listen");
                let mut s = handle.inner();
                s.state = JobState::Error;
                s.error = Some(e);
                return;
            }
            shutdown.cancelled().await;
            listeners.unregister(&listener);
        }
        Runnable::Push {
            handle,
            mut wakeups,
            sender,
            listener,
            client_identity,
            dial_timeout,
            driver,
            keep_sender,
            keep_receiver,
            snapshotter,
        } => {
            spawn_snapshotter(&handle, snapshotter, &shutdown);
            loop {
                tokio::select! {
                    w = wakeups.recv() => if w.is_none() { return },
                    _ = shutdown.cancelled() => return,
                }
                let run_cancel = shutdown.child_token();
                *handle.current_run.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(run_cancel.clone());
                let report = ReportHandle::new(Utc::now());
                {
                    let mut s = handle.inner();
                    s.state = JobState::Replicating;
                    s.error = None;
                    s.report = Some(report.clone());
                }
                tracing::info!(job = %handle.name, "replication started");
                let outcome = match listeners
                    .connect(&listener, &client_identity, dial_timeout, &run_cancel)
                    .await
                {
                    Err(e) => Err(e),
                    Ok(receiver) => {
                        zrepl_replication::run(&sender, &receiver, &driver, &report, &run_cancel)
                            .await;
                        // Pruning runs after every run, also a failed one, unless it was cancelled.
                        if !run_cancel.is_cancelled() {
                            let pr = tokio::select! {
                                p = crate::prune::prune(&sender, &receiver, &keep_sender, &keep_receiver, false) => Some(p),
                                _ = run_cancel.cancelled() => None,
                            };
                            if let Some(pr) = pr {
                                log_prune(&handle.name, &pr);
                                handle.inner().pruning = Some(pr);
                            }
                        }
                        let r = report.snapshot();
                        if r.succeeded() {
                            Ok(())
                        } else {
                            let failed: Vec<String> = r
                                .failed_filesystems()
                                .iter()
                                .map(|f| format!("{}: {}", f.name, f.error().unwrap_or("")))
                                .collect();
                            let plan = r.attempts.last().and_then(|a| a.plan_error.clone());
                            Err(plan.unwrap_or_else(|| {
                                format!("replication {:?}: {}", r.state, failed.join("; "))
                            }))
                        }
                    }
                };
                handle
                    .current_run
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                handle.history.record_run(&report.snapshot(), Utc::now());
                let mut s = handle.inner();
                s.state = JobState::Idle;
                match outcome {
                    Ok(()) => {
                        tracing::info!(job = %handle.name, "replication done");
                        s.last_success = Some(Utc::now());
                    }
                    Err(e) => {
                        tracing::error!(job = %handle.name, error = %e, "replication failed");
                        s.error = Some(e);
                    }
                }
            }
        }
        Runnable::Snap {
            handle,
            mut wakeups,
            sender,
            keep,
            snapshotter,
        } => {
            spawn_snapshotter(&handle, snapshotter, &shutdown);
            loop {
                tokio::select! {
                    w = wakeups.recv() => if w.is_none() { return },
                    _ = shutdown.cancelled() => return,
                }
                let pr = tokio::select! {
                    p = crate::prune::prune_local(&sender, &keep, false) => p,
                    _ = shutdown.cancelled() => return,
                };
                log_prune(
                    &handle.name,
                    &PruneReport {
                        sender: pr.clone(),
                        receiver: Default::default(),
                    },
                );
                handle.inner().pruning_local = Some(pr);
            }
        }
    }
}

/// Starts a job's snapshotter (if any); each round wakes the job.
fn spawn_snapshotter(
    handle: &Arc<JobHandle>,
    snapshotter: Option<Snapshotter>,
    shutdown: &CancellationToken,
) {
    let (Some(s), Some(tx)) = (snapshotter, handle.wakeup.clone()) else {
        return;
    };
    let status = crate::snapshot::new_status();
    handle.inner().snapshotter = Some(status.clone());
    tokio::spawn(s.run(tx, status, shutdown.clone()));
}
