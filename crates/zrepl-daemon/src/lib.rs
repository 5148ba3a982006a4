//! The zrepl daemon: builds the jobs from the config, runs them until shutdown, and serves the
//! control socket that `zrepl status` and `zrepl signal` talk to.
//!
//! Jobs: push and sink over the `local` transport (network transports, pull/source, snapshotting
//! schedules and the snap job arrive with their issues; until then the daemon refuses such a
//! config with a message naming the job, rather than running without it).

pub mod control;
mod history;
pub mod hooks;
mod jobs;
mod local;
pub mod metrics;
pub mod prune;
mod schedule;
mod serve;
pub mod skip_empty;
pub mod snapshot;
pub mod status;
pub mod wakeup;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zrepl_zfs::Zfs;

pub use control::SignalRequest;
pub use jobs::{JobState, JobStatus};
pub use status::{DaemonStatus, VersionInfo};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Unsupported(String),
    #[error("control socket {0}")]
    ControlSocket(String),
    #[error("monitoring: {0}")]
    Monitoring(String),
}

/// Decides (without destroying anything) what pruning of job `job` (push, pull or snap) would
/// do now. A remote side is only listed, over the job's transport.
pub async fn prune_dry_run(
    cfg: &zrepl_config::Config,
    job: &str,
    zfs: &Zfs,
) -> Result<prune::PruneReport, DaemonError> {
    jobs::prune_dry_run(cfg, job, zfs).await
}

/// `zrepl run JOB`: one snapshot-replicate-prune cycle of a push, pull or snap job, without a
/// daemon; `cancel` aborts it (the next run resumes what was cut).
pub async fn run_once(
    cfg: &zrepl_config::Config,
    job: &str,
    zfs: &Zfs,
    cancel: &CancellationToken,
) -> Result<wakeup::RunOutcome, DaemonError> {
    jobs::run_once(cfg, job, zfs, cancel).await
}

/// Runs the daemon until `shutdown` fires, then stops every job and waits for them.
pub async fn run(
    cfg: zrepl_config::Config,
    zfs: Zfs,
    version: VersionInfo,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let started = chrono::Utc::now();
    // The endpoints' shared state (prepared steps, receiver roots, bandwidth buckets) is the
    // daemon's: created here, passed to every endpoint, gone with the daemon.
    let reg = zrepl_endpoint::Registry::default();
    let runnables = jobs::build(&cfg, &zfs, &reg)?;
    let mut prometheus = Vec::new();
    for m in &cfg.global.monitoring {
        let zrepl_config::Monitoring::Prometheus {
            listen,
            listen_freebind,
        } = m;
        prometheus.push(metrics::bind(listen, *listen_freebind)?);
    }
    let sockpath = PathBuf::from(&cfg.global.control.sockpath);
    let listener = control::bind(&sockpath).await?;
    let handles: Arc<Vec<_>> = Arc::new(runnables.iter().map(|r| r.handle().clone()).collect());
    let listeners = local::LocalListeners::new(reg.clone());
    let tracker = TaskTracker::new();
    tracker.spawn(control::serve(
        listener,
        sockpath,
        control::ControlState {
            jobs: handles.clone(),
            zfs: zfs.clone(),
            version: version.clone(),
        },
        shutdown.clone(),
    ));
    for l in prometheus {
        tracker.spawn(metrics::serve(
            l,
            metrics::MetricsState {
                jobs: handles.clone(),
                zfs: zfs.clone(),
                version: version.clone(),
                started,
            },
            shutdown.clone(),
        ));
    }
    for r in runnables {
        tracing::info!(job = %r.handle().name, kind = r.handle().kind, "starting job");
        let span = tracing::info_span!("job", job = %r.handle().name, subsystem = "job");
        tracker.spawn(tracing::Instrument::instrument(
            jobs::run(
                r,
                zfs.clone(),
                listeners.clone(),
                reg.clone(),
                shutdown.clone(),
            ),
            span,
        ));
    }
    tracker.close();
    tracing::info!(jobs = handles.len(), "daemon running");
    shutdown.cancelled().await;
    tracing::info!("shutting down");
    loop {
        tokio::select! {
            _ = tracker.wait() => break,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                tracing::warn!(tasks = tracker.len(), "waiting for jobs to stop");
            }
        }
    }
    Ok(())
}
