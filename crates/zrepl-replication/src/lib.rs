//! The replication driver: one *run* is up to `max_attempts` *attempts*; an attempt lists the
//! filesystems of both sides, plans each one (`zrepl-planner`), and executes the steps of all
//! filesystems concurrently through one step queue (spec §3.2).
//!
//! * A filesystem's failure is recorded in the report and never stops the others.
//! * The step queue admits at most `step_concurrency` steps at once, oldest target snapshot
//!   first, so every filesystem gets snapshot T1 before any gets T2.
//! * A child filesystem's initial replication waits until its parents exist on the receiver; if
//!   a parent fails its initial replication, the child fails too.
//! * After a failed attempt, a temporary (connectivity) error leads to another attempt after a
//!   backoff, up to the reconnect deadline; any other error ends the run. Each attempt plans from
//!   scratch, so it includes snapshots made meanwhile (zrepl 0.7 instead truncates the new plan
//!   to the previous attempt's steps).

pub mod converge;
mod queue;
pub mod report;

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use zrepl_planner::{Policy, ReceiverFs, SenderFs, Step};
use zrepl_protocol::{
    ByteStream, EndpointError, FilesystemInfo, ReceiveRequest, Receiver, ReplicationConfig,
    SendRequest, Sender,
};
use zrepl_zfs_types::DatasetPath;

use converge::Converge;
use queue::StepQueue;
pub use report::{
    AttemptReport, AttemptState, BlockedOn, Counter, FilesystemReport, FsState, ReportHandle,
    RunReport, RunState, StepReport,
};

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub policy: Policy,
    pub replication: ReplicationConfig,
    /// `replication.concurrency.steps`.
    pub step_concurrency: usize,
    /// `replication.concurrency.size_estimates`.
    pub size_estimate_concurrency: usize,
    /// `ZREPL_REPLICATION_MAX_ATTEMPTS` (zrepl: 3).
    pub max_attempts: usize,
    /// How long to keep retrying after connectivity errors (zrepl: 10 minutes).
    pub reconnect_timeout: Duration,
    /// A step whose stream moves no bytes for this long (from the send request to the end of
    /// the receive) is aborted as a temporary error: the next attempt resumes it.
    pub stall_timeout: Option<Duration>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            policy: Policy::default(),
            replication: ReplicationConfig::default(),
            step_concurrency: 1,
            size_estimate_concurrency: 4,
            max_attempts: 3,
            reconnect_timeout: Duration::from_secs(600),
            stall_timeout: None,
        }
    }
}

/// An error with the time it happened: the most recent error of an attempt decides whether to
/// retry.
#[derive(Debug, Clone)]
struct TimedError {
    at: chrono::DateTime<Utc>,
    err: EndpointError,
}

impl TimedError {
    fn now(err: EndpointError) -> Self {
        TimedError {
            at: Utc::now(),
            err,
        }
    }
}

/// The filesystem listings of a run that created and removed no filesystem: its last attempt
/// succeeded, had no planning error, every sender filesystem was already on the receiver without
/// a partial receive, and every step was incremental (no full send, so no new filesystem or
/// placeholder). Snapshots, holds and bookmarks may have changed; which filesystems exist and
/// which are placeholders did not. Pruning right after such a run uses these listings instead
/// of listing both sides' filesystems again (it lists versions as always).
#[derive(Debug, Clone)]
pub struct FilesystemsUnchanged {
    pub sender: Vec<FilesystemInfo>,
    pub receiver: Vec<FilesystemInfo>,
    /// When the listings began.
    pub listed_at: std::time::Instant,
}

/// Runs one replication run between `sender` and `receiver`, recording progress in `report`.
/// Returns when the run is done, failed, or `cancel` fired; with the run's filesystem listings
/// if they still hold (see [`FilesystemsUnchanged`]).
#[tracing::instrument(name = "repl", skip_all, fields(subsystem = "repl"))]
pub async fn run<S: Sender, R: Receiver>(
    sender: &S,
    receiver: &R,
    cfg: &DriverConfig,
    report: &ReportHandle,
    cancel: &CancellationToken,
) -> Option<FilesystemsUnchanged> {
    let mut deadline = tokio::time::Instant::now() + cfg.reconnect_timeout;
    let mut first_temporary = true;
    let mut backoff = Duration::from_secs(1);
    for attempt_no in 1..=cfg.max_attempts.max(1) {
        let completed = std::sync::Mutex::new(Vec::new());
        let outcome = tokio::select! {
            o = attempt(sender, receiver, cfg, report, &completed) => o,
            _ = cancel.cancelled() => {
                // Steps that were received keep their bookkeeping (receiver's hold, sender's
                // cursor): it is quick, and what zrepl would have done after each step.
                let done = std::mem::take(&mut *completed.lock().unwrap_or_else(|e| e.into_inner()));
                if !done.is_empty() {
                    let queue = StepQueue::new(1);
                    let estimates = Semaphore::new(1);
                    let ctx = FsCtx {
                        sender,
                        receiver,
                        cfg,
                        report,
                        queue: &queue,
                        estimates: &estimates,
                        completed: &completed,
                    };
                    ctx.complete(done).await;
                }
                finish(report, RunState::Cancelled);
                return None;
            }
        };
        let err = match outcome {
            Ok(unchanged) => {
                finish(report, RunState::Done);
                return unchanged;
            }
            Err(e) => e,
        };
        let last = attempt_no == cfg.max_attempts.max(1);
        // Like zrepl, the reconnect window starts at the (first) connectivity failure.
        if err.err.is_temporary() && first_temporary {
            first_temporary = false;
            deadline = tokio::time::Instant::now() + cfg.reconnect_timeout;
        }
        if !err.err.is_temporary() || last || tokio::time::Instant::now() >= deadline {
            finish(report, RunState::Failed);
            return None;
        }
        tracing::warn!(attempt = attempt_no, err = %err.err, "temporary error, waiting before the next attempt");
        let wait = backoff.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        report.update(|r| {
            r.state = RunState::WaitReconnect;
            r.wait_reconnect_until =
                Some(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default());
            r.wait_reconnect_error = Some(err.err.to_string());
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => {
                finish(report, RunState::Cancelled);
                return None;
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
        report.update(|r| {
            r.state = RunState::Running;
            r.wait_reconnect_until = None;
        });
    }
    None
}

fn finish(report: &ReportHandle, state: RunState) {
    report.update(|r| {
        r.state = state;
        r.finished_at = Some(Utc::now());
        r.wait_reconnect_until = None;
    });
}

fn set_attempt(report: &ReportHandle, f: impl FnOnce(&mut AttemptReport)) {
    report.update(|r| {
        if let Some(a) = r.attempts.last_mut() {
            f(a)
        }
    })
}

fn set_fs(report: &ReportHandle, idx: usize, f: impl FnOnce(&mut FilesystemReport)) {
    set_attempt(report, |a| {
        if let Some(fs) = a.filesystems.get_mut(idx) {
            f(fs)
        }
    })
}

/// Whether a parent filesystem exists on the receiver yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Pending,
    Present,
    Failed,
}

async fn attempt<S: Sender, R: Receiver>(
    sender: &S,
    receiver: &R,
    cfg: &DriverConfig,
    report: &ReportHandle,
    completed: &std::sync::Mutex<Vec<Received>>,
) -> Result<Option<FilesystemsUnchanged>, TimedError> {
    let listed_at = std::time::Instant::now();
    report.update(|r| {
        r.attempts.push(AttemptReport {
            state: AttemptState::Planning,
            started_at: Utc::now(),
            finished_at: None,
            plan_error: None,
            filesystems: Vec::new(),
        })
    });
    // Each side lists its filesystems and then their versions (one listing per side for every
    // filesystem that needs its versions, not one per filesystem: the planner's input for the
    // whole attempt). The sides list at the same time: the receiver's versions wait only for
    // both filesystem listings (which of its filesystems the sender has), not for the
    // sender's versions.
    let (sfs_tx, sfs_rx) = tokio::sync::oneshot::channel::<Vec<DatasetPath>>();
    let sender_side = async {
        let mut sfs = sender.list_filesystems().await?;
        sfs.sort_by(|a, b| a.path.cmp(&b.path));
        let s_need: Vec<DatasetPath> = sfs
            .iter()
            .filter(|f| !f.is_placeholder)
            .map(|f| f.path.clone())
            .collect();
        // Dropped unsent when the listing fails: then this side's error ends the join.
        let _ = sfs_tx.send(s_need.clone());
        let s_versions = sender.list_versions_many(&s_need).await?;
        Ok::<_, EndpointError>((sfs, s_need, s_versions))
    };
    let receiver_side = async {
        let rfs = receiver.list_filesystems().await?;
        let s_need = sfs_rx.await.map_err(|_| {
            EndpointError::new(
                zrepl_protocol::ErrorKind::Internal,
                "the sender's filesystem listing failed",
            )
        })?;
        let rmap: HashMap<&DatasetPath, &FilesystemInfo> =
            rfs.iter().map(|f| (&f.path, f)).collect();
        let r_need: Vec<DatasetPath> = s_need
            .into_iter()
            .filter(|p| rmap.get(p).is_some_and(|r| !r.is_placeholder))
            .collect();
        let r_versions = receiver.list_versions_many(&r_need).await?;
        Ok::<_, EndpointError>((rfs, r_need, r_versions))
    };
    let listed = futures::future::try_join(sender_side, receiver_side).await;
    let ((sfs, s_need, s_versions), (rfs, r_need, r_versions)) = match listed {
        Ok(x) => x,
        Err(e) => return Err(plan_failed(report, e)),
    };
    if s_versions.len() != s_need.len() || r_versions.len() != r_need.len() {
        return Err(plan_failed(
            report,
            EndpointError::new(
                zrepl_protocol::ErrorKind::Internal,
                "a peer listed versions of a different number of filesystems than asked",
            ),
        ));
    }
    if sfs.is_empty() {
        tracing::warn!("no filesystems were considered for replication");
    }
    let rmap: HashMap<DatasetPath, FilesystemInfo> =
        rfs.into_iter().map(|f| (f.path.clone(), f)).collect();
    set_attempt(report, |a| {
        a.state = AttemptState::FanOutFilesystems;
        a.filesystems = sfs
            .iter()
            .map(|f| FilesystemReport::new(f.path.to_string()))
            .collect();
    });
    let mut s_versions: HashMap<DatasetPath, _> = s_need.into_iter().zip(s_versions).collect();
    let mut r_versions: HashMap<DatasetPath, _> = r_need.into_iter().zip(r_versions).collect();

    let queue = StepQueue::new(cfg.step_concurrency.max(1));
    let estimates = Semaphore::new(cfg.size_estimate_concurrency.max(1));
    let ctx = FsCtx {
        sender,
        receiver,
        cfg,
        report,
        queue: &queue,
        estimates: &estimates,
        completed,
    };
    let plans = futures::future::join_all(sfs.iter().map(|fs| {
        let sv = s_versions.remove(&fs.path);
        let rv = r_versions.remove(&fs.path);
        ctx.plan(fs, rmap.get(&fs.path), sv, rv)
    }))
    .await;
    // Up-to-date filesystems whose listings show what a lost completion leaves: converged
    // after the steps (below).
    let mut converges: Vec<(usize, Converge)> = Vec::new();
    let plans: Vec<Result<Vec<(Step, u64)>, EndpointError>> = plans
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.map(|(steps, c)| {
                if c != Converge::default() {
                    converges.push((i, c));
                }
                steps
            })
        })
        .collect();
    // Whether the filesystem listings still hold after this attempt: no planning error, every
    // filesystem already on the receiver (no placeholder or partial receive to deal with), and
    // incremental steps only (a full send creates a filesystem, maybe placeholders too).
    let same_filesystems = plans.iter().all(|p| {
        p.as_ref()
            .is_ok_and(|steps| steps.iter().all(|(s, _)| !s.is_initial()))
    }) && sfs
        .iter()
        .all(|f| rmap.get(&f.path).is_some_and(|r| r.resume_token.is_none()));
    // Protect every step of the attempt at once (step holds on all of them in one go).
    let all_reqs: Vec<SendRequest> = sfs
        .iter()
        .zip(&plans)
        .filter_map(|(fs, p)| p.as_ref().ok().map(|steps| (fs, steps)))
        .flat_map(|(fs, steps)| steps.iter().map(|(s, _)| ctx.request(&fs.path, s)))
        .collect();
    if !all_reqs.is_empty() {
        if let Err(e) = sender.prepare_sends(&all_reqs).await {
            if e.is_temporary() {
                return Err(plan_failed(report, e));
            }
            tracing::warn!(err = %e, "cannot prepare the steps of this attempt at once; each step prepares itself");
        }
    }

    let presence: Vec<(watch::Sender<Presence>, watch::Receiver<Presence>)> = sfs
        .iter()
        .map(|_| watch::channel(Presence::Pending))
        .collect();
    let tasks = sfs
        .iter()
        .zip(plans)
        .enumerate()
        .map(|(idx, (fs, planned))| {
            // Parents: every replicated filesystem whose path is a proper prefix of this one.
            let parents: Vec<(String, watch::Receiver<Presence>)> = sfs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.path != fs.path && fs.path.has_prefix(&p.path))
                .map(|(i, p)| (p.path.to_string(), presence[i].1.clone()))
                .collect();
            let me = &presence[idx].0;
            let ctx = &ctx;
            let rcv = rmap.get(&fs.path);
            async move {
                let r = ctx.filesystem(idx, fs, rcv, planned, parents, me).await;
                // Whatever happened, children must not wait forever.
                if me.borrow().eq(&Presence::Pending) {
                    let _ = me.send(if r.is_ok() {
                        Presence::Present
                    } else {
                        Presence::Failed
                    });
                }
                r
            }
        });
    let results = futures::future::join_all(tasks).await;
    let mut errors: Vec<TimedError> = results.into_iter().filter_map(Result::err).collect();
    let done = std::mem::take(&mut *completed.lock().unwrap_or_else(|e| e.into_inner()));
    errors.extend(ctx.complete(done).await);
    errors.extend(ctx.converge(converges).await);
    errors.sort_by_key(|e| e.at);
    let state = if errors.is_empty() {
        AttemptState::Done
    } else {
        AttemptState::FilesystemError
    };
    set_attempt(report, |a| {
        a.state = state;
        a.finished_at = Some(Utc::now());
    });
    match errors.pop() {
        // Handed to pruning (copied only here, when they still hold).
        None if same_filesystems => {
            let mut receiver: Vec<FilesystemInfo> = rmap.into_values().collect();
            receiver.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(Some(FilesystemsUnchanged {
                sender: sfs,
                receiver,
                listed_at,
            }))
        }
        None => Ok(None),
        Some(e) => Err(e),
    }
}

/// Records an attempt that failed before any filesystem was replicated.
fn plan_failed(report: &ReportHandle, e: EndpointError) -> TimedError {
    let msg = e.to_string();
    set_attempt(report, |a| {
        a.state = AttemptState::PlanningError;
        a.plan_error = Some(msg);
        a.finished_at = Some(Utc::now());
    });
    TimedError::now(e)
}

/// A received step whose completion (receiver's GUID check and hold, sender's cursor) waits for
/// the end of the attempt.
struct Received {
    idx: usize,
    send: SendRequest,
    recv: ReceiveRequest,
}

struct FsCtx<'a, S, R> {
    sender: &'a S,
    receiver: &'a R,
    cfg: &'a DriverConfig,
    report: &'a ReportHandle,
    queue: &'a StepQueue,
    estimates: &'a Semaphore,
    completed: &'a std::sync::Mutex<Vec<Received>>,
}

impl<S: Sender, R: Receiver> FsCtx<'_, S, R> {
    #[tracing::instrument(name = "fs", skip_all, fields(fs = %fs.path))]
    async fn filesystem(
        &self,
        idx: usize,
        fs: &FilesystemInfo,
        rcv: Option<&FilesystemInfo>,
        planned: Result<Vec<(Step, u64)>, EndpointError>,
        parents: Vec<(String, watch::Receiver<Presence>)>,
        me: &watch::Sender<Presence>,
    ) -> Result<(), TimedError> {
        set_fs(self.report, idx, |f| f.blocked_on = BlockedOn::Nothing);
        let steps = match planned {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(err = %msg, "planning failed");
                set_fs(self.report, idx, |f| {
                    f.state = FsState::PlanningError;
                    f.plan_error = Some(msg);
                });
                return Err(TimedError::now(e));
            }
        };
        set_fs(self.report, idx, |f| {
            f.state = FsState::Stepping;
            f.steps = steps.iter().map(|(s, est)| step_report(s, *est)).collect();
        });
        let counters: Vec<Counter> = self
            .report
            .update(|r| {
                r.attempts.last().map(|a| {
                    a.filesystems[idx]
                        .steps
                        .iter()
                        .map(|s| s.bytes_replicated.clone())
                        .collect()
                })
            })
            .unwrap_or_default();

        // A resumed full send is still an initial replication: children wait for it.
        let initial = steps.first().is_some_and(|(s, _)| s.is_initial());
        if !initial {
            let _ = me.send(Presence::Present);
        } else if !parents.is_empty() {
            set_fs(self.report, idx, |f| {
                f.blocked_on = BlockedOn::ParentInitialRepl
            });
            let mut failed = Vec::new();
            for (name, mut rx) in parents {
                let st = rx
                    .wait_for(|p| *p != Presence::Pending)
                    .await
                    .map(|p| *p)
                    .unwrap_or(Presence::Failed);
                if st == Presence::Failed {
                    failed.push(name);
                }
            }
            if !failed.is_empty() {
                let e = EndpointError::new(
                    zrepl_protocol::ErrorKind::Internal,
                    format!("parent(s) failed during initial replication: {failed:?}"),
                );
                set_fs(self.report, idx, |f| {
                    f.state = FsState::StepError;
                    f.step_error = Some(e.to_string());
                    f.blocked_on = BlockedOn::Nothing;
                });
                return Err(TimedError::now(e));
            }
        }

        for (i, (step, _)) in steps.iter().enumerate() {
            set_fs(self.report, idx, |f| {
                f.current_step = i;
                f.blocked_on = BlockedOn::ReplQueue;
            });
            let _slot = self.queue.acquire(step.target_date()).await;
            set_fs(self.report, idx, |f| f.blocked_on = BlockedOn::Nothing);
            let counter = counters.get(i).cloned().unwrap_or_default();
            // Only a receiver that listed a resume token has partial state to abort.
            let partial_state = i == 0 && rcv.is_some_and(|r| r.resume_token.is_some());
            if let Err(e) = self
                .step((idx, i), &fs.path, step, counter, partial_state)
                .await
            {
                tracing::error!(step = %step, err = %e, "step failed");
                let msg = format!("step {step}: {e}");
                set_fs(self.report, idx, |f| {
                    f.state = FsState::StepError;
                    f.step_error = Some(msg);
                });
                return Err(TimedError::now(e));
            }
            if i == 0 {
                let _ = me.send(Presence::Present);
            }
        }
        set_fs(self.report, idx, |f| {
            f.state = FsState::Done;
            f.current_step = f.steps.len();
        });
        Ok(())
    }

    /// Plans one filesystem from the versions both sides listed for the attempt.
    async fn plan(
        &self,
        fs: &FilesystemInfo,
        rcv: Option<&FilesystemInfo>,
        s_versions: Option<Result<Vec<zrepl_zfs_types::FilesystemVersion>, EndpointError>>,
        r_versions: Option<Result<Vec<zrepl_zfs_types::FilesystemVersion>, EndpointError>>,
    ) -> Result<(Vec<(Step, u64)>, Converge), EndpointError> {
        let sender_fs = SenderFs {
            is_placeholder: fs.is_placeholder,
            versions: s_versions.transpose()?.unwrap_or_default(),
        };
        let receiver_fs = match rcv {
            None => ReceiverFs::default(),
            Some(r) => ReceiverFs {
                exists: true,
                is_placeholder: r.is_placeholder,
                versions: r_versions.transpose()?.unwrap_or_default(),
                resume_token: r.resume_token.clone(),
            },
        };
        let steps = zrepl_planner::plan(&sender_fs, &receiver_fs, &self.cfg.policy)
            .map_err(|e| EndpointError::new(zrepl_protocol::ErrorKind::Internal, e.to_string()))?;
        if steps.is_empty() {
            let c = converge::converge_requests(
                &fs.path,
                &sender_fs,
                &receiver_fs,
                self.cfg.replication,
            );
            return Ok((Vec::new(), c));
        }
        // Size estimates, concurrently but bounded; a failure here (e.g. the encryption policy)
        // fails the planning of this filesystem, as in zrepl. Only full and resumed steps are
        // estimated before they run: an incremental step's estimate would cost a `zfs send -n`
        // per step, and its size is known once it ran (see `step`).
        let estimates = steps.iter().map(|s| async {
            if s.from.is_some() && s.resume_token.is_none() {
                return Ok(0);
            }
            let _permit = self.estimates.acquire().await;
            self.sender.send_dry(&self.request(&fs.path, s)).await
        });
        let sizes = futures::future::try_join_all(estimates).await?;
        Ok((steps.into_iter().zip(sizes).collect(), Converge::default()))
    }

    fn request(&self, fs: &DatasetPath, s: &Step) -> SendRequest {
        SendRequest {
            intermediates: s.intermediates.clone(),
            filesystem: fs.clone(),
            from: s.from.clone(),
            to: s.to.clone(),
            resume_token: s.resume_token.clone(),
            replication: self.cfg.replication,
        }
    }

    #[tracing::instrument(name = "step", skip_all, fields(step = %step))]
    async fn step(
        &self,
        (idx, step_no): (usize, usize),
        fs: &DatasetPath,
        step: &Step,
        counter: Counter,
        partial_state: bool,
    ) -> Result<(), EndpointError> {
        tracing::info!("replicating step");
        let req = self.request(fs, step);
        let transfer = async {
            let (res, stream) = self.sender.send(req.clone()).await?;
            let counted: ByteStream = Box::pin(CountingReader {
                inner: stream,
                counter: counter.clone(),
            });
            let recv = ReceiveRequest {
                intermediates: step.intermediates.clone(),
                filesystem: fs.clone(),
                to: step.to.clone(),
                clear_resume_token: partial_state && !res.used_resume_token,
                replication: self.cfg.replication,
                from: step.from.clone(),
                deferred: true,
            };
            self.receiver.receive(recv.clone(), counted).await?;
            Ok::<_, EndpointError>((res, recv))
        };
        // Dropping the transfer on a stall drops both ends of the stream: a local `zfs send` or
        // `zfs recv -s` is killed (the receiver keeps its resumable state), a network peer sees
        // its connection close.
        let (res, recv) = match self.cfg.stall_timeout {
            None => transfer.await?,
            Some(limit) => tokio::select! {
                r = transfer => r?,
                stalled = watch_stall(&counter, limit) => return Err(stalled),
            },
        };
        zrepl_failpoint::hit("driver.step.after_receive")
            .map_err(|e| EndpointError::new(zrepl_protocol::ErrorKind::Internal, e.to_string()))?;
        // A step that was not estimated beforehand: its size is what went through.
        set_fs(self.report, idx, |f| {
            if let Some(s) = f.steps.get_mut(step_no) {
                if s.bytes_expected == 0 {
                    s.bytes_expected = res.expected_size.max(counter.get());
                }
            }
        });
        // The receiver's GUID check and hold and the sender's cursor follow for all steps of
        // the attempt at once (`complete`); the step holds protect both snapshots until then.
        self.completed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Received {
                idx,
                send: req,
                recv,
            });
        Ok(())
    }

    /// Completes the received steps of the attempt: the receiver checks and holds what it
    /// received, then the sender moves its cursors and releases its step holds, each side in as
    /// few commands as it can. A failure is that filesystem's step error.
    async fn complete(&self, done: Vec<Received>) -> Vec<TimedError> {
        if done.is_empty() {
            return Vec::new();
        }
        let mut errors = Vec::new();
        let mut fail = |idx: usize, step: String, e: EndpointError| {
            tracing::error!(step = %step, err = %e, "step failed");
            let msg = format!("step {step}: {e}");
            set_fs(self.report, idx, |f| {
                f.state = FsState::StepError;
                f.step_error = Some(msg);
            });
            errors.push(TimedError::now(e));
        };
        let recvs: Vec<ReceiveRequest> = done.iter().map(|d| d.recv.clone()).collect();
        let rres = match self.receiver.receives_completed(&recvs).await {
            Ok(r) if r.len() == done.len() => r,
            Ok(_) => done
                .iter()
                .map(|_| {
                    Err(EndpointError::new(
                        zrepl_protocol::ErrorKind::Internal,
                        "receiver answered for a different number of steps",
                    ))
                })
                .collect(),
            Err(e) => done.iter().map(|_| Err(e.clone())).collect(),
        };
        // A filesystem's later steps only count if its earlier ones were fine.
        let mut failed_fs = std::collections::HashSet::new();
        let mut ok = Vec::new();
        for (d, r) in done.into_iter().zip(rres) {
            if failed_fs.contains(&d.idx) {
                continue;
            }
            match r {
                Ok(()) => ok.push(d),
                Err(e) => {
                    failed_fs.insert(d.idx);
                    fail(d.idx, step_name(&d.send), e);
                }
            }
        }
        if let Err(e) = zrepl_failpoint::hit("driver.complete.after_receives_completed") {
            let e = EndpointError::new(zrepl_protocol::ErrorKind::Internal, e.to_string());
            for d in ok {
                if failed_fs.insert(d.idx) {
                    fail(d.idx, step_name(&d.send), e.clone());
                }
            }
            return errors;
        }
        let sends: Vec<SendRequest> = ok.iter().map(|d| d.send.clone()).collect();
        let sres = match self.sender.sends_completed(&sends).await {
            Ok(r) if r.len() == ok.len() => r,
            Ok(_) => ok
                .iter()
                .map(|_| {
                    Err(EndpointError::new(
                        zrepl_protocol::ErrorKind::Internal,
                        "sender answered for a different number of steps",
                    ))
                })
                .collect(),
            Err(e) => ok.iter().map(|_| Err(e.clone())).collect(),
        };
        for (d, r) in ok.into_iter().zip(sres) {
            if let Err(e) = r {
                if failed_fs.insert(d.idx) {
                    fail(d.idx, step_name(&d.send), e);
                }
            }
        }
        errors
    }
}

impl<S: Sender, R: Receiver> FsCtx<'_, S, R> {
    /// Converges the up-to-date filesystems that need it, both sides at once (each side's
    /// requests in one batch). A side that cannot converge a filesystem fails that filesystem
    /// (its stale holds block pruning until a run converges it); a peer that cannot converge
    /// at all (the call itself fails) is only logged: the replicated data is complete.
    async fn converge(&self, converges: Vec<(usize, Converge)>) -> Vec<TimedError> {
        if converges.is_empty() {
            return Vec::new();
        }
        let (mut sidx, mut sreqs, mut ridx, mut rreqs) = (vec![], vec![], vec![], vec![]);
        for (i, c) in converges {
            if let Some(r) = c.sender {
                sidx.push(i);
                sreqs.push(r);
            }
            if let Some(r) = c.receiver {
                ridx.push(i);
                rreqs.push(r);
            }
        }
        tracing::debug!(
            sender = sreqs.len(),
            receiver = rreqs.len(),
            "converging up-to-date filesystems"
        );
        async fn side<F: std::future::Future>(empty: bool, fut: F) -> Option<F::Output> {
            if empty {
                return None;
            }
            Some(fut.await)
        }
        let (sres, rres) = tokio::join!(
            side(sreqs.is_empty(), self.sender.converge(&sreqs)),
            side(rreqs.is_empty(), self.receiver.converge(&rreqs)),
        );
        let mut errors = Vec::new();
        for (who, idx, res) in [("sender", &sidx, sres), ("receiver", &ridx, rres)] {
            match res {
                None => {}
                Some(Err(e)) => {
                    tracing::warn!(side = who, err = %e, "cannot converge up-to-date filesystems")
                }
                Some(Ok(results)) if results.len() != idx.len() => {
                    tracing::warn!(
                        side = who,
                        "cannot converge up-to-date filesystems: the peer answered for a different number of filesystems"
                    )
                }
                Some(Ok(results)) => {
                    for (i, r) in idx.iter().zip(results) {
                        if let Err(e) = r {
                            tracing::error!(side = who, err = %e, "cannot converge filesystem");
                            let msg = format!("converging the {who}: {e}");
                            set_fs(self.report, *i, |f| {
                                f.state = FsState::StepError;
                                f.step_error = Some(msg);
                            });
                            errors.push(TimedError::now(e));
                        }
                    }
                }
            }
        }
        errors
    }
}

fn step_name(r: &SendRequest) -> String {
    match &r.from {
        Some(f) => format!(
            "{}{} => {}",
            r.filesystem,
            f.relative_name(),
            r.to.relative_name()
        ),
        None => format!("{} => {}", r.filesystem, r.to.relative_name()),
    }
}

fn step_report(s: &Step, expected: u64) -> StepReport {
    StepReport {
        from: s.from.as_ref().map(|f| f.relative_name()),
        to: s.to.relative_name(),
        intermediates: s.intermediates.iter().map(|v| v.relative_name()).collect(),
        resumed: s.resume_token.is_some(),
        bytes_expected: expected,
        bytes_replicated: Counter::default(),
        to_creation: s.to.creation,
    }
}

/// Resolves when `counter` has not moved for `limit`; the error says so.
async fn watch_stall(counter: &Counter, limit: Duration) -> EndpointError {
    let tick = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut stall = StallClock::new(counter.get(), tokio::time::Instant::now());
    loop {
        tokio::time::sleep(tick).await;
        if let Some(idle) = stall.observe(counter.get(), tokio::time::Instant::now(), limit) {
            tracing::warn!(idle = ?idle, bytes = counter.get(), "transfer stalled, aborting it");
            return EndpointError::new(
                zrepl_protocol::ErrorKind::Connectivity,
                format!(
                    "transfer stalled: no data moved for {}s (replication.stall_timeout) after {} bytes; aborted, the next attempt resumes it",
                    idle.as_secs(),
                    counter.get()
                ),
            );
        }
    }
}

/// When a byte counter last moved (pure: the caller passes the time).
#[derive(Debug, Clone, Copy)]
struct StallClock<T> {
    bytes: u64,
    since: T,
}

impl<T: Copy + std::ops::Sub<T, Output = Duration>> StallClock<T> {
    fn new(bytes: u64, now: T) -> Self {
        StallClock { bytes, since: now }
    }

    /// Records the counter at `now`; `Some(idle)` once it has not moved for `limit` or longer.
    fn observe(&mut self, bytes: u64, now: T, limit: Duration) -> Option<Duration> {
        if bytes != self.bytes {
            *self = StallClock { bytes, since: now };
            return None;
        }
        let idle = now - self.since;
        (idle >= limit).then_some(idle)
    }
}

/// Where the `driver.step.mid_stream` failpoint sits in a step's stream.
const MID_STREAM: u64 = 256 << 10;

/// Counts the bytes flowing through a send stream.
struct CountingReader {
    inner: ByteStream,
    counter: Counter,
}

impl AsyncRead for CountingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = (buf.filled().len() - before) as u64;
            let total = self.counter.get();
            self.counter.add(n);
            if total < MID_STREAM && total + n >= MID_STREAM {
                if let Err(e) = zrepl_failpoint::hit("driver.step.mid_stream") {
                    return Poll::Ready(Err(std::io::Error::other(e)));
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests;
