//! The zrepl daemon: builds the jobs from the config, runs them until shutdown, and serves the
//! control socket that `zrepl status` and `zrepl signal` talk to.
//!
//! Jobs: push and sink over the `local` transport (network transports, pull/source, snapshotting
//! schedules and the snap job arrive with their issues; until then the daemon refuses such a
//! config with a message naming the job, rather than running without it).

pub mod backpressure;
mod bounded;
pub mod compile;
mod conn_limits;
pub mod control;
mod history;
mod hook_process;
pub mod hooks;
mod job_hooks;
mod jobs;
mod local;
pub mod metrics;
pub mod prune;
mod schedule;
mod serve;
mod serve_hooks;
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
    /// Everything that keeps a config from running, all at once (see [`compile`]).
    #[error("{}", .0.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("\n"))]
    Config(Vec<compile::Problem>),
}

/// The one compile step of a config that `zrepl daemon` and `zrepl configcheck` share: builds
/// every job as the daemon would (TLS material, hooks, connections) and checks listener and
/// connection conflicts between them; every problem is reported, not only the first.
/// `skip_tls_material` leaves out problems of certificate and key files
/// (`configcheck --skip-cert-check`).
pub fn compile(
    cfg: &zrepl_config::Config,
    zfs: &Zfs,
    skip_tls_material: bool,
) -> Result<(), Vec<compile::Problem>> {
    let reg = zrepl_endpoint::Registry::default();
    match jobs::build(cfg, zfs, &reg) {
        Ok(_) => Ok(()),
        Err(DaemonError::Config(p)) => {
            let p: Vec<_> = p
                .into_iter()
                .filter(|p| !(skip_tls_material && p.tls_material))
                .collect();
            if p.is_empty() {
                Ok(())
            } else {
                Err(p)
            }
        }
        Err(e) => Err(vec![compile::Problem::new(e.to_string())]),
    }
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

/// How the daemon stops: `stop` (the first SIGTERM/SIGINT) ends every job's loop and
/// snapshotting, but replication runs in progress go on (status stays available) until they
/// end or `abort` fires (a second signal, or the shutdown timeout): then they are cancelled,
/// their `zfs` children killed, and the next start resumes what was cut.
#[derive(Clone, Default)]
pub struct Shutdown {
    pub stop: CancellationToken,
    pub abort: CancellationToken,
}

/// Runs the daemon until it is stopped (see [`Shutdown`]).
pub async fn run(
    cfg: zrepl_config::Config,
    zfs: Zfs,
    version: VersionInfo,
    shutdown: Shutdown,
) -> Result<(), DaemonError> {
    let started = chrono::Utc::now();
    // The endpoints' shared state (prepared steps, receiver roots, bandwidth buckets, the
    // versions listings kept between runs) is the daemon's: created here, passed to every
    // endpoint, gone with the daemon.
    let reg = if std::env::var(zrepl_endpoint::listings::CACHE_ENV).as_deref() == Ok("off") {
        tracing::info!(
            "versions listings are not kept between runs ({}=off)",
            zrepl_endpoint::listings::CACHE_ENV
        );
        zrepl_endpoint::Registry::without_listing_cache()
    } else {
        zrepl_endpoint::Registry::default()
    };
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
    // Serving (control socket, metrics, passive jobs) ends once the active jobs have ended
    // (or on abort); the active jobs end on stop, after their runs.
    let serving_done = shutdown.abort.child_token();
    let active = TaskTracker::new();
    let serving = TaskTracker::new();
    serving.spawn(control::serve(
        listener,
        sockpath,
        control::ControlState {
            jobs: handles.clone(),
            zfs: zfs.clone(),
            version: version.clone(),
            cfg: Arc::new(cfg.clone()),
        },
        serving_done.clone(),
    ));
    for l in prometheus {
        serving.spawn(metrics::serve(
            l,
            metrics::MetricsState {
                jobs: handles.clone(),
                zfs: zfs.clone(),
                version: version.clone(),
                started,
            },
            serving_done.clone(),
        ));
    }
    for r in runnables {
        tracing::info!(job = %r.handle().name, kind = r.handle().kind, "starting job");
        let span = tracing::info_span!("job", job = %r.handle().name, subsystem = "job");
        let (tracker, abort) = if r.is_passive() {
            (&serving, serving_done.clone())
        } else {
            (&active, shutdown.abort.clone())
        };
        tracker.spawn(tracing::Instrument::instrument(
            jobs::run(
                r,
                zfs.clone(),
                listeners.clone(),
                reg.clone(),
                shutdown.stop.clone(),
                abort,
            ),
            span,
        ));
    }
    active.close();
    serving.close();
    tracing::info!(jobs = handles.len(), "daemon running");
    shutdown.stop.cancelled().await;
    tracing::info!(
        "stopping: replication runs in progress finish first (a second signal aborts them)"
    );
    loop {
        tokio::select! {
            _ = active.wait() => break,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                tracing::warn!(
                    jobs = active.len(),
                    aborting = shutdown.abort.is_cancelled(),
                    "waiting for jobs to stop"
                );
            }
        }
    }
    serving_done.cancel();
    loop {
        tokio::select! {
            _ = serving.wait() => break,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                tracing::warn!(tasks = serving.len(), "waiting for serving jobs to stop");
            }
        }
    }
    Ok(())
}
