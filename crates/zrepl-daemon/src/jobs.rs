//! Jobs built from the config, and their loops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use zrepl_config as config;
use zrepl_endpoint::{LocalSender, PlaceholderPolicy, ReceiverConfig, Registry, SenderConfig};
use zrepl_protocol::{Protection, Receiver, ReplicationConfig, Sender};
use zrepl_replication::{DriverConfig, ReportHandle};
use zrepl_zfs::Zfs;

use crate::local::{LocalListeners, LocalPeer};
use crate::prune::PruneReport;
use crate::schedule::ReplicationSchedule;
use crate::snapshot::{SharedStatus, Snapshotter};
use crate::wakeup::{RunLog, RunOutcome, Trigger, Wakeups};
use crate::DaemonError;

/// A job's status and state, for `zrepl status` (the `/status` contract's types).
pub use zrepl_status::{JobState, JobStatus};

/// What the daemon keeps per job: its signals and its status.
pub struct JobHandle {
    pub name: String,
    pub kind: &'static str,
    wakeup: Option<Trigger>,
    /// Finished runs, for `zrepl signal wakeup --wait`.
    pub(crate) runs: RunLog,
    /// Cancels the run in progress (`zrepl signal reset`).
    current_run: Mutex<Option<CancellationToken>>,
    state: Mutex<JobStateInner>,
    /// Finished replication runs, for the metrics.
    pub(crate) history: crate::history::JobHistory,
    /// Filesystems `snapshotting.backpressure` found lagging in the last round, for the metrics.
    pub(crate) lagging: crate::backpressure::Shared,
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
        wakeup: Option<Trigger>,
        state: JobState,
    ) -> Self {
        JobHandle {
            name: name.to_string(),
            kind,
            wakeup,
            runs: RunLog::default(),
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
            lagging: Default::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, JobStateInner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> JobStatus {
        let s = self.inner();
        JobStatus {
            name: self.name.clone(),
            kind: self.kind.to_string(),
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
    /// Returns the number of the run the wakeup starts.
    pub fn wakeup(&self) -> Result<u64, String> {
        // A source's trigger only tells its snapshotter's rounds apart: no run follows, so a
        // `--wait` would never end. Its pull job decides when it replicates.
        let tx = self.wakeup.as_ref().filter(|_| self.kind != "source");
        let Some(tx) = tx else {
            return Err(format!(
                "job {:?} of type {} cannot be woken up",
                self.name, self.kind
            ));
        };
        tx.try_send(())
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

/// How an active job reaches its peer.
pub(crate) enum Connection {
    /// In-process (`local` transport).
    Local {
        listener: String,
        client_identity: String,
        dial_timeout: Duration,
    },
    /// Over the network: a fresh RPC client (one connection) per invocation.
    Remote {
        connector: Arc<zrepl_transport::Connector>,
        opts: zrepl_rpc::ClientOptions,
    },
    /// An agentless remote (`ssh+zfs`): the remote side's endpoint runs here, on a `zfs`
    /// handle whose commands run over ssh. A push job has the receiver's config, a pull job
    /// the sender's.
    Agentless {
        zfs: Zfs,
        receiver: Option<Box<ReceiverConfig>>,
        sender: Option<Box<SenderConfig>>,
    },
}

impl Connection {
    fn client(&self) -> Option<zrepl_rpc::Client> {
        let Connection::Remote { connector, opts } = self else {
            return None;
        };
        let c = connector.clone();
        let dial: zrepl_rpc::Dialer = Arc::new(move || {
            let c = c.clone();
            Box::pin(async move {
                c.connect()
                    .await
                    .map(|io| Box::new(io) as Box<dyn zrepl_rpc::ClientConn>)
                    .map_err(|e| e.to_string())
            })
        });
        Some(zrepl_rpc::Client::new(
            connector.describe(),
            dial,
            opts.clone(),
        ))
    }
}

/// How a passive job is reached.
#[derive(Clone)]
pub(crate) enum Serving {
    Local {
        listener: String,
    },
    Net {
        serve: config::Serve,
        sockdir: String,
    },
}

/// What a passive job serves.
pub(crate) enum Role {
    Sink(ReceiverConfig),
    Source {
        sender: SenderConfig,
        snapshotter: Option<Box<Snapshotter>>,
        /// The snapshotter's wakeups (drained: the pulling side decides when to replicate).
        wakeups: Option<Wakeups>,
        /// `step_holds.max_age`: step holds older than this are released.
        step_holds_max_age: Option<std::time::Duration>,
    },
}

/// The pieces every active (push, pull) job has.
pub(crate) struct Active {
    pub handle: Arc<JobHandle>,
    pub wakeups: Wakeups,
    pub connection: Connection,
    pub driver: DriverConfig,
    pub keep_sender: crate::prune::Keep,
    pub keep_receiver: crate::prune::Keep,
    /// Commands around every run.
    pub hooks: config::ReplicationHooks,
}

/// A job ready to run.
pub(crate) enum Runnable {
    Push {
        active: Active,
        sender: LocalSender,
        snapshotter: Option<Snapshotter>,
        schedule: ReplicationSchedule,
    },
    Pull {
        active: Active,
        receiver: ReceiverConfig,
        schedule: ReplicationSchedule,
    },
    Snap {
        handle: Arc<JobHandle>,
        wakeups: Wakeups,
        sender: LocalSender,
        keep: crate::prune::Keep,
        snapshotter: Option<Snapshotter>,
    },
    Passive {
        handle: Arc<JobHandle>,
        serving: Serving,
        role: Role,
        /// Commands around every client session.
        hooks: config::ReplicationHooks,
    },
}

impl Runnable {
    /// Sink and source jobs: they serve peers.
    pub(crate) fn is_passive(&self) -> bool {
        matches!(self, Runnable::Passive { .. })
    }

    pub(crate) fn handle(&self) -> &Arc<JobHandle> {
        match self {
            Runnable::Push { active, .. } | Runnable::Pull { active, .. } => &active.handle,
            Runnable::Snap { handle, .. } | Runnable::Passive { handle, .. } => handle,
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
            snapshots: r.snapshots.clone(),
            packages: r.packages,
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
        stall_timeout: r.stall_timeout(),
    }
}

/// The snapshotter of a job, if its snapshotting is not `manual`. `push`: a filesystem without
/// the job's replication cursor counts as never replicated for `backpressure`.
fn snapshotter(
    job: &str,
    s: &config::Snapshotting,
    filter: &zrepl_filters::DatasetFilter,
    zfs: &Zfs,
    push: bool,
) -> Result<Option<Snapshotter>, DaemonError> {
    let (prefix, format, location, hooks, schedule, written_threshold) = match s {
        config::Snapshotting::Manual => return Ok(None),
        config::Snapshotting::Periodic {
            prefix,
            interval,
            timestamp_format,
            timestamp_location,
            hooks,
            written_threshold,
            ..
        } => (
            prefix,
            timestamp_format,
            timestamp_location,
            hooks,
            crate::snapshot::Schedule::Periodic {
                interval_secs: interval.as_secs(),
            },
            *written_threshold,
        ),
        config::Snapshotting::Cron {
            prefix,
            cron,
            timestamp_format,
            timestamp_location,
            hooks,
            written_threshold,
            ..
        } => (
            prefix,
            timestamp_format,
            timestamp_location,
            hooks,
            crate::snapshot::Schedule::Cron(cron.clone()),
            *written_threshold,
        ),
    };
    // Database DSNs are checked here, so that `zrepl daemon` refuses a hook that cannot work.
    let mut built = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        let bad = |e: String| {
            DaemonError::Unsupported(format!("job {job:?}: snapshotting hook #{}: {e}", i + 1))
        };
        built.push(match h {
            config::Hook::Command {
                path,
                timeout,
                err_is_fatal,
                filesystems,
            } => crate::hooks::Hook::Command(crate::hooks::CommandHook {
                path: path.clone(),
                timeout: timeout.to_std(),
                err_is_fatal: *err_is_fatal,
                filter: filesystems.clone(),
            }),
            config::Hook::PostgresCheckpoint {
                dsn,
                timeout,
                err_is_fatal,
                filesystems,
            } => crate::hooks::Hook::postgres(
                dsn,
                timeout.to_std(),
                *err_is_fatal,
                filesystems.clone(),
            )
            .map_err(bad)?,
            config::Hook::MysqlLockTables {
                dsn,
                timeout,
                err_is_fatal,
                filesystems,
            } => {
                crate::hooks::Hook::mysql(dsn, timeout.to_std(), *err_is_fatal, filesystems.clone())
                    .map_err(bad)?
            }
        });
    }
    Ok(Some(Snapshotter {
        zfs: zfs.clone(),
        filter: filter.clone(),
        prefix: prefix.clone(),
        format: format.clone(),
        location: *location,
        schedule,
        hooks: built,
        written_threshold,
        backpressure: s.backpressure().map(|b| crate::backpressure::Backpressure {
            job: job.to_string(),
            max_lag_secs: b.max_lag.as_secs(),
            action: b.action,
            without_cursor_counts: push,
        }),
        lagging: Default::default(),
    }))
}

fn bandwidth(l: &config::BandwidthLimit) -> Option<zrepl_endpoint::BandwidthLimit> {
    l.max_bytes_per_sec()
        .map(|bytes_per_sec| zrepl_endpoint::BandwidthLimit {
            bytes_per_sec,
            bucket_capacity: l.bucket_capacity.bytes().max(1.0) as u64,
        })
}

fn sender_config(
    job: &str,
    filesystems: &zrepl_filters::DatasetFilter,
    s: &config::SendOptions,
) -> SenderConfig {
    SenderConfig {
        job: job.to_string(),
        filesystems: filesystems.clone(),
        encrypted: s.encrypted,
        raw: s.raw,
        send_properties: s.send_properties,
        backup_properties: s.backup_properties,
        large_blocks: s.large_blocks,
        compressed: s.compressed,
        embedded_data: s.embedded_data,
        saved: s.saved,
        bandwidth_limit: bandwidth(&s.bandwidth_limit),
        client_destroy: zrepl_endpoint::ClientDestroy::Allow,
    }
}

/// A source's `client_pruning`: what its pull clients may destroy.
fn client_destroy(p: &config::ClientPruning) -> zrepl_endpoint::ClientDestroy {
    match (p.allow, p.keep.is_empty()) {
        (false, _) => zrepl_endpoint::ClientDestroy::Refuse,
        (true, true) => zrepl_endpoint::ClientDestroy::Allow,
        (true, false) => zrepl_endpoint::ClientDestroy::Keep(crate::prune::rules(&p.keep)),
    }
}

/// Whether zstd can shrink this sender's streams (`auto` compression).
fn compressible(s: &config::SendOptions) -> bool {
    !(s.encrypted || s.raw || s.compressed)
}

fn receiver_config(
    job: &str,
    root_fs: &zrepl_zfs_types::DatasetPath,
    mapping: &config::Mapping,
    r: &config::RecvOptions,
) -> ReceiverConfig {
    let placeholder = match r.placeholder.encryption {
        config::PlaceholderEncryption::Unspecified => PlaceholderPolicy::Unspecified,
        config::PlaceholderEncryption::Inherit => PlaceholderPolicy::Inherit,
        config::PlaceholderEncryption::Off => PlaceholderPolicy::Off,
    };
    ReceiverConfig {
        job: job.to_string(),
        root_fs: root_fs.clone(),
        client_identity: None,
        placeholder,
        inherit: r.properties.inherit.clone(),
        override_: r
            .properties
            .override_
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        bandwidth_limit: bandwidth(&r.bandwidth_limit),
        identity_component: mapping.identity_component,
        strip_prefix: mapping.strip_prefix.clone(),
    }
}

fn connection(
    job: &str,
    c: &config::Connect,
    r: &config::Replication,
    local_send_compressible: bool,
    zfs: &Zfs,
    sockdir: &str,
) -> Result<Connection, DaemonError> {
    Ok(match c {
        config::Connect::Agentless(a) => {
            let remote = zrepl_zfs::Remote {
                ssh_binary: "ssh".into(),
                host: a.host.clone(),
                user: a.user.clone(),
                port: a.port,
                identity_file: a.identity_file.clone().into(),
                known_hosts: a.known_hosts.clone().map(Into::into),
                options: a.options.clone(),
                // One master connection per remote, in the daemon's own socket directory.
                control_path: zrepl_zfs::Remote::control_path_in(
                    std::path::Path::new(sockdir),
                    &a.user,
                    &a.host,
                    a.port,
                ),
                zfs_binary: "zfs".into(),
                zpool_binary: "zpool".into(),
            };
            let remote_zfs = zfs.with_remote(remote);
            Connection::Agentless {
                zfs: remote_zfs,
                receiver: a.root_fs.as_ref().map(|root| {
                    Box::new(receiver_config(
                        job,
                        root,
                        &config::Mapping {
                            identity_component: false,
                            ..config::Mapping::default()
                        },
                        &a.recv,
                    ))
                }),
                sender: a
                    .filesystems
                    .as_ref()
                    .map(|f| Box::new(sender_config(job, f, &a.send))),
            }
        }
        config::Connect::Local {
            listener_name,
            client_identity,
            dial_timeout,
        } => Connection::Local {
            listener: listener_name.clone(),
            client_identity: client_identity.clone(),
            dial_timeout: dial_timeout.to_std(),
        },
        other => {
            let connector = zrepl_transport::Connector::from_config(other)
                .map_err(|e| DaemonError::Unsupported(format!("job {job:?}: connect: {e}")))?;
            let opts = zrepl_rpc::ClientOptions {
                compression: match r.compression {
                    config::StreamCompression::Auto => zrepl_rpc::Compression::Auto,
                    config::StreamCompression::Off => zrepl_rpc::Compression::Off,
                    config::StreamCompression::Zstd => zrepl_rpc::Compression::Always,
                },
                zstd_level: r.compression_level,
                local_send_compressible,
                dial_timeout: connector.dial_timeout(),
                // A stream connection over ssh costs an ssh session (process, key exchange)
                // per step, and ssh's own cipher caps throughput below what HTTP/2 framing
                // costs: over ssh, streams share the one connection.
                stream_connections: !matches!(other, config::Connect::Ssh { .. }),
                limits: zrepl_rpc::wire::Limits::lowered_by_env(),
            };
            Connection::Remote {
                connector: Arc::new(connector),
                opts,
            }
        }
    })
}

fn serving(s: &config::Serve, sockdir: &str) -> Serving {
    match s {
        config::Serve::Local { listener_name } => Serving::Local {
            listener: listener_name.clone(),
        },
        other => Serving::Net {
            serve: other.clone(),
            sockdir: sockdir.to_string(),
        },
    }
}

/// Builds the runnable jobs. Anything that cannot run (unreadable certificates, bad hooks) is
/// refused up front with a clear message, instead of a daemon that silently does nothing.
/// `reg`: the daemon's endpoint state, shared by every endpoint it creates.
pub(crate) fn build(
    cfg: &config::Config,
    zfs: &Zfs,
    reg: &Registry,
) -> Result<Vec<Runnable>, DaemonError> {
    let sockdir = cfg.global.serve.stdinserver.sockdir.as_str();
    let mut out = Vec::new();
    let mut problems = crate::compile::conflicts(cfg);
    for job in &cfg.jobs {
        // A TLS connect or serve can only fail on its certificate files.
        let tls = matches!(
            job,
            config::Job::Push(config::PushJob {
                connect: config::Connect::Tls { .. },
                ..
            }) | config::Job::Pull(config::PullJob {
                connect: config::Connect::Tls { .. },
                ..
            }) | config::Job::Sink(config::SinkJob {
                serve: config::Serve::Tls { .. },
                ..
            }) | config::Job::Source(config::SourceJob {
                serve: config::Serve::Tls { .. },
                ..
            })
        );
        let serve = match job {
            config::Job::Sink(s) => Some(&s.serve),
            config::Job::Source(s) => Some(&s.serve),
            _ => None,
        };
        if let Some(serve) = serve {
            if let Err(e) = zrepl_transport::check_serve(serve) {
                problems.push(crate::compile::Problem {
                    message: format!("job {:?}: serve: {e}", job.name()),
                    tls_material: tls,
                });
                continue;
            }
        }
        match build_job(job, zfs, reg, sockdir) {
            Ok(r) => out.push(r),
            Err(e) => problems.push(crate::compile::Problem {
                message: e.to_string(),
                tls_material: tls && e.to_string().contains(": connect: "),
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(DaemonError::Config(problems))
    }
}

/// One job, ready to run; the first problem it has.
fn build_job(
    job: &config::Job,
    zfs: &Zfs,
    reg: &Registry,
    sockdir: &str,
) -> Result<Runnable, DaemonError> {
    {
        match job {
            config::Job::Push(p) => {
                let snapshotter = snapshotter(&p.name, &p.snapshotting, &p.filesystems, zfs, true)?;
                let (tx, rx) = crate::wakeup::channel();
                Ok(Runnable::Push {
                    active: Active {
                        handle: Arc::new(JobHandle::new(&p.name, "push", Some(tx), JobState::Idle)),
                        wakeups: rx,
                        connection: connection(
                            &p.name,
                            &p.connect,
                            &p.replication,
                            compressible(&p.send),
                            zfs,
                            sockdir,
                        )?,
                        driver: driver_config(&p.replication, &p.conflict_resolution),
                        keep_sender: keep(
                            &p.pruning.keep_sender,
                            &p.pruning,
                            &p.replication,
                            p.snapshotting.prefix(),
                        ),
                        keep_receiver: keep(
                            &p.pruning.keep_receiver,
                            &p.pruning,
                            &p.replication,
                            p.snapshotting.prefix(),
                        ),
                        hooks: p.hooks.clone(),
                    },
                    sender: LocalSender::new(
                        zfs.clone(),
                        sender_config(&p.name, &p.filesystems, &p.send),
                        reg,
                    ),
                    snapshotter,
                    schedule: replication_schedule(&p.interval, &p.cron),
                })
            }
            config::Job::Pull(p) => {
                let (tx, rx) = crate::wakeup::channel();
                Ok(Runnable::Pull {
                    active: Active {
                        handle: Arc::new(JobHandle::new(&p.name, "pull", Some(tx), JobState::Idle)),
                        wakeups: rx,
                        connection: connection(
                            &p.name,
                            &p.connect,
                            &p.replication,
                            false,
                            zfs,
                            sockdir,
                        )?,
                        driver: driver_config(&p.replication, &p.conflict_resolution),
                        keep_sender: keep(&p.pruning.keep_sender, &p.pruning, &p.replication, None),
                        keep_receiver: keep(
                            &p.pruning.keep_receiver,
                            &p.pruning,
                            &p.replication,
                            None,
                        ),
                        hooks: p.hooks.clone(),
                    },
                    receiver: receiver_config(&p.name, &p.root_fs, &p.mapping, &p.recv),
                    schedule: replication_schedule(&p.interval, &p.cron),
                })
            }
            config::Job::Sink(s) => Ok(Runnable::Passive {
                handle: Arc::new(JobHandle::new(&s.name, "sink", None, JobState::Serving)),
                serving: serving(&s.serve, sockdir),
                role: Role::Sink(receiver_config(&s.name, &s.root_fs, &s.mapping, &s.recv)),
                hooks: s.hooks.clone(),
            }),
            config::Job::Source(s) => {
                let snapshotter =
                    snapshotter(&s.name, &s.snapshotting, &s.filesystems, zfs, false)?;
                // The snapshotter's rounds have nothing to wake: the pulling side decides when.
                let (tx, rx) = crate::wakeup::channel();
                Ok(Runnable::Passive {
                    handle: Arc::new(JobHandle::new(
                        &s.name,
                        "source",
                        snapshotter.is_some().then_some(tx),
                        JobState::Serving,
                    )),
                    serving: serving(&s.serve, sockdir),
                    role: Role::Source {
                        sender: SenderConfig {
                            client_destroy: client_destroy(&s.client_pruning),
                            ..sender_config(&s.name, &s.filesystems, &s.send)
                        },
                        snapshotter: snapshotter.map(Box::new),
                        wakeups: Some(rx),
                        step_holds_max_age: s.step_holds.map(|h| {
                            std::time::Duration::from_secs(h.max_age.as_secs().max(1) as u64)
                        }),
                    },
                    hooks: s.hooks.clone(),
                })
            }
            config::Job::Snap(j) => {
                let snapshotter =
                    snapshotter(&j.name, &j.snapshotting, &j.filesystems, zfs, false)?;
                let (tx, rx) = crate::wakeup::channel();
                Ok(Runnable::Snap {
                    handle: Arc::new(JobHandle::new(&j.name, "snap", Some(tx), JobState::Idle)),
                    wakeups: rx,
                    sender: LocalSender::new(
                        zfs.clone(),
                        SenderConfig::new(j.name.clone(), j.filesystems.clone()),
                        reg,
                    ),
                    keep: crate::prune::Keep::new(
                        &j.pruning.keep,
                        j.pruning.scope,
                        &zrepl_filters::SnapshotFilter::all(),
                        j.snapshotting.prefix(),
                    ),
                    snapshotter,
                })
            }
        }
    }
}

/// The pruning of one side of a replicating job.
fn keep(
    rules: &[config::KeepRule],
    pruning: &config::PruningSenderReceiver,
    replication: &config::Replication,
    prefix: Option<&str>,
) -> crate::prune::Keep {
    crate::prune::Keep::new(rules, pruning.scope, &replication.snapshots, prefix)
}

fn log_prune(job: &str, pr: &PruneReport) {
    for (side, rep) in [("sender", &pr.sender), ("receiver", &pr.receiver)] {
        if let Some(e) = &rep.error {
            tracing::error!(job, side, error = %e, "pruning failed");
        }
        for f in &rep.filesystems {
            if !f.foreign.is_empty() {
                tracing::warn!(job, side, fs = %f.filesystem, snapshots = ?f.foreign, "pruning destroys snapshots this job did not make (pruning.scope: all, as zrepl 0.7); pruning.scope: own or selected spares them");
            }
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

/// What pruning of job `job` would destroy now, decided without destroying anything: push and
/// pull jobs (both sides; a remote side is asked over the network, read-only) and snap jobs.
pub(crate) async fn prune_dry_run(
    cfg: &config::Config,
    job: &str,
    zfs: &Zfs,
) -> Result<PruneReport, DaemonError> {
    // A dry run of its own: it shares nothing with a running daemon.
    let reg = Registry::default();
    let runnables = build(cfg, zfs, &reg)?;
    let mut locals = std::collections::HashMap::new();
    for r in &runnables {
        if let Runnable::Passive {
            serving: Serving::Local { listener },
            role,
            ..
        } = r
        {
            let peer = match role {
                Role::Sink(rc) => LocalPeer::Sink(zfs.clone(), rc.clone()),
                Role::Source { sender, .. } => LocalPeer::Source(zfs.clone(), sender.clone()),
            };
            locals.entry(listener.clone()).or_insert(peer);
        }
    }
    let err = |e: String| DaemonError::Unsupported(format!("job {job:?}: {e}"));
    for r in runnables {
        if r.handle().name != job {
            continue;
        }
        return match r {
            Runnable::Push { active, sender, .. } => {
                let a = &active;
                match (&a.connection, a.connection.client()) {
                    (_, Some(remote)) => Ok(crate::prune::prune(
                        &sender,
                        &remote,
                        &a.keep_sender,
                        &a.keep_receiver,
                        true,
                    )
                    .await),
                    (
                        Connection::Local {
                            listener,
                            client_identity,
                            ..
                        },
                        None,
                    ) => {
                        let Some(LocalPeer::Sink(z, mut rc)) = locals.get(listener).cloned() else {
                            return Err(err(format!(
                                "no sink job serves local listener {listener:?}"
                            )));
                        };
                        rc.client_identity = Some(client_identity.clone());
                        let receiver = zrepl_endpoint::LocalReceiver::new(z, rc, &reg)
                            .map_err(|e| err(e.to_string()))?;
                        Ok(crate::prune::prune(
                            &sender,
                            &receiver,
                            &a.keep_sender,
                            &a.keep_receiver,
                            true,
                        )
                        .await)
                    }
                    (
                        Connection::Agentless {
                            zfs: remote,
                            receiver: Some(rc),
                            ..
                        },
                        None,
                    ) => {
                        let receiver = zrepl_endpoint::LocalReceiver::new(
                            remote.clone(),
                            (**rc).clone(),
                            &reg,
                        )
                        .map_err(|e| err(e.to_string()))?;
                        Ok(crate::prune::prune(
                            &sender,
                            &receiver,
                            &a.keep_sender,
                            &a.keep_receiver,
                            true,
                        )
                        .await)
                    }
                    (Connection::Agentless { .. }, None) => {
                        Err(err("connect.root_fs is missing".into()))
                    }
                    (Connection::Remote { .. }, None) => {
                        unreachable!("remote connections have a client")
                    }
                }
            }
            Runnable::Pull {
                active, receiver, ..
            } => {
                let a = &active;
                let receiver = zrepl_endpoint::LocalReceiver::new(zfs.clone(), receiver, &reg)
                    .map_err(|e| err(e.to_string()))?;
                match (&a.connection, a.connection.client()) {
                    (_, Some(remote)) => Ok(crate::prune::prune(
                        &remote,
                        &receiver,
                        &a.keep_sender,
                        &a.keep_receiver,
                        true,
                    )
                    .await),
                    (Connection::Local { listener, .. }, None) => {
                        let Some(LocalPeer::Source(z, sc)) = locals.get(listener).cloned() else {
                            return Err(err(format!(
                                "no source job serves local listener {listener:?}"
                            )));
                        };
                        let sender = LocalSender::new(z, sc, &reg);
                        Ok(crate::prune::prune(
                            &sender,
                            &receiver,
                            &a.keep_sender,
                            &a.keep_receiver,
                            true,
                        )
                        .await)
                    }
                    (
                        Connection::Agentless {
                            zfs: remote,
                            sender: Some(sc),
                            ..
                        },
                        None,
                    ) => {
                        let sender = LocalSender::new(remote.clone(), (**sc).clone(), &reg);
                        Ok(crate::prune::prune(
                            &sender,
                            &receiver,
                            &a.keep_sender,
                            &a.keep_receiver,
                            true,
                        )
                        .await)
                    }
                    (Connection::Agentless { .. }, None) => {
                        Err(err("connect.filesystems is missing".into()))
                    }
                    (Connection::Remote { .. }, None) => {
                        unreachable!("remote connections have a client")
                    }
                }
            }
            Runnable::Snap { sender, keep, .. } => Ok(PruneReport {
                sender: crate::prune::prune_local(&sender, &keep, true).await,
                receiver: Default::default(),
            }),
            Runnable::Passive { handle, .. } => Err(err(format!(
                "a {} job does not prune (its peer's push or pull job does)",
                handle.kind
            ))),
        };
    }
    Err(DaemonError::Unsupported(format!(
        "no job named {job:?} in this config"
    )))
}

/// One invocation of an active job: replicate, then prune both sides (also after a failed
/// replication, unless cancelled). The error summarises what failed.
async fn invocation<S: Sender, R: Receiver>(
    a: &Active,
    sender: &S,
    receiver: &R,
    report: &ReportHandle,
    cancel: &CancellationToken,
    pruned: &mut Option<PruneReport>,
) -> Result<(), String> {
    let unchanged = zrepl_replication::run(sender, receiver, &a.driver, report, cancel).await;
    if !cancel.is_cancelled() {
        let pr = tokio::select! {
            p = crate::prune::prune_after(sender, receiver, &a.keep_sender, &a.keep_receiver, false, unchanged) => Some(p),
            _ = cancel.cancelled() => None,
        };
        if let Some(pr) = pr {
            log_prune(&a.handle.name, &pr);
            a.handle.inner().pruning = Some(pr.clone());
            *pruned = Some(pr);
        }
    }
    let r = report.snapshot();
    if r.succeeded() {
        return Ok(());
    }
    let failed: Vec<String> = r
        .failed_filesystems()
        .iter()
        .map(|f| format!("{}: {}", f.name, f.error().unwrap_or("")))
        .collect();
    let plan = r.attempts.last().and_then(|a| a.plan_error.clone());
    Err(plan.unwrap_or_else(|| format!("replication {:?}: {}", r.state, failed.join("; "))))
}

fn replication_schedule(
    interval: &config::PullInterval,
    cron: &Option<zrepl_config::cron::CronSchedule>,
) -> ReplicationSchedule {
    ReplicationSchedule {
        every: match interval {
            config::PullInterval::Manual => None,
            config::PullInterval::Every(d) => Some(d.to_std()),
        },
        cron: cron.clone(),
    }
}

/// A pruning's failure (if any) and the number of snapshots it destroyed.
fn prune_outcome(pr: &PruneReport) -> (Option<String>, usize) {
    let (se, sd) = side_outcome(&pr.sender);
    let (re, rd) = side_outcome(&pr.receiver);
    let err = match (se, re) {
        (None, None) => None,
        (Some(s), None) => Some(format!("sender: {s}")),
        (None, Some(r)) => Some(format!("receiver: {r}")),
        (Some(s), Some(r)) => Some(format!("sender: {s}; receiver: {r}")),
    };
    (err, sd + rd)
}

fn side_outcome(side: &crate::prune::SideReport) -> (Option<String>, usize) {
    let mut errors: Vec<String> = side.error.iter().cloned().collect();
    let mut destroyed = 0;
    for f in &side.filesystems {
        destroyed += f.destroy.len().saturating_sub(f.errors.len());
        errors.extend(
            f.errors
                .iter()
                .map(|(snap, why)| format!("{}@{snap}: {why}", f.filesystem)),
        );
    }
    ((!errors.is_empty()).then(|| errors.join("; ")), destroyed)
}

enum Side<'a> {
    Push(&'a LocalSender),
    Pull(&'a ReceiverConfig),
}

/// The loop of a push or pull job: one invocation per wakeup.
async fn active_loop(
    mut a: Active,
    side: Side<'_>,
    zfs: &Zfs,
    listeners: &LocalListeners,
    reg: &Registry,
    stop: &CancellationToken,
    abort: &CancellationToken,
) {
    loop {
        let run_id = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            w = a.wakeups.recv() => match w { Some(id) => id, None => return },
        };
        run_active(&a, &side, zfs, listeners, reg, run_id, abort).await;
    }
}

/// One run of an active job (replication, then pruning); recorded in the job's status and
/// run log, and returned.
async fn run_active(
    a: &Active,
    side: &Side<'_>,
    zfs: &Zfs,
    listeners: &LocalListeners,
    reg: &Registry,
    run_id: u64,
    abort: &CancellationToken,
) -> RunOutcome {
    let job = a.handle.name.clone();
    {
        let started_at = Utc::now();
        let mut pruned = None;
        let run_cancel = abort.child_token();
        *a.handle
            .current_run
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(run_cancel.clone());
        let report = ReportHandle::new(Utc::now());
        {
            let mut s = a.handle.inner();
            s.state = JobState::Replicating;
            s.error = None;
            s.report = Some(report.clone());
        }
        tracing::info!(job = %job, "replication started");
        let prevented = match &a.hooks.pre {
            None => None,
            Some(h) => {
                let env = crate::job_hooks::hook_env(&job, "pre", run_id, None);
                // A reset or the daemon's abort kills the hook (kill_on_drop).
                let ran = tokio::select! {
                    r = crate::job_hooks::run(h, &job, &env) => r,
                    _ = run_cancel.cancelled() => Err("pre hook killed: the run was reset or the daemon is stopping".to_string()),
                };
                match ran {
                    Ok(()) => None,
                    Err(e) if h.err_is_fatal => Some(e),
                    Err(e) => {
                        tracing::warn!(job = %job, error = %e, "pre hook failed (not fatal)");
                        None
                    }
                }
            }
        };
        let client = a.connection.client();
        let outcome = if let Some(e) = prevented {
            tracing::error!(job = %job, error = %e, "the pre hook prevents this run (err_is_fatal)");
            report.fail_unstarted(Utc::now());
            Err(format!("{e}: the run was prevented (err_is_fatal)"))
        } else {
            match (side, &a.connection, &client) {
                (Side::Push(sender), _, Some(remote)) => {
                    invocation(a, *sender, remote, &report, &run_cancel, &mut pruned).await
                }
                (Side::Pull(rc), _, Some(remote)) => {
                    match zrepl_endpoint::LocalReceiver::new(zfs.clone(), (*rc).clone(), reg) {
                        Ok(receiver) => {
                            invocation(a, remote, &receiver, &report, &run_cancel, &mut pruned)
                                .await
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                (
                    Side::Push(sender),
                    Connection::Local {
                        listener,
                        client_identity,
                        dial_timeout,
                    },
                    None,
                ) => match listeners
                    .connect(listener, client_identity, *dial_timeout, &run_cancel)
                    .await
                {
                    Ok(receiver) => {
                        let r =
                            invocation(a, *sender, &receiver, &report, &run_cancel, &mut pruned)
                                .await;
                        receiver.end(&r).await;
                        r
                    }
                    Err(e) => Err(e),
                },
                (
                    Side::Pull(rc),
                    Connection::Local {
                        listener,
                        client_identity,
                        dial_timeout,
                    },
                    None,
                ) => {
                    let receiver =
                        zrepl_endpoint::LocalReceiver::new(zfs.clone(), (*rc).clone(), reg);
                    match (
                        listeners
                            .connect_sender(listener, client_identity, *dial_timeout, &run_cancel)
                            .await,
                        receiver,
                    ) {
                        (Ok(sender), Ok(receiver)) => {
                            let r = invocation(
                                a,
                                &sender,
                                &receiver,
                                &report,
                                &run_cancel,
                                &mut pruned,
                            )
                            .await;
                            sender.end(&r).await;
                            r
                        }
                        (Err(e), _) => Err(e),
                        (Ok(sender), Err(e)) => {
                            let e = e.to_string();
                            sender.end(&Err(e.clone())).await;
                            Err(e)
                        }
                    }
                }
                (
                    Side::Push(sender),
                    Connection::Agentless {
                        zfs: remote,
                        receiver: Some(rc),
                        ..
                    },
                    None,
                ) => {
                    match zrepl_endpoint::LocalReceiver::new(remote.clone(), (**rc).clone(), reg) {
                        Ok(receiver) => {
                            invocation(a, *sender, &receiver, &report, &run_cancel, &mut pruned)
                                .await
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                (
                    Side::Pull(rc),
                    Connection::Agentless {
                        zfs: remote,
                        sender: Some(sc),
                        ..
                    },
                    None,
                ) => {
                    let sender = LocalSender::new(remote.clone(), (**sc).clone(), reg);
                    match zrepl_endpoint::LocalReceiver::new(zfs.clone(), (*rc).clone(), reg) {
                        Ok(receiver) => {
                            invocation(a, &sender, &receiver, &report, &run_cancel, &mut pruned)
                                .await
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                (_, Connection::Agentless { .. }, None) => {
                    Err("the ssh+zfs connection names no remote side for this job".into())
                }
                (_, Connection::Remote { .. }, None) => {
                    unreachable!("remote connections have a client")
                }
            }
        };
        // One connection per invocation: closed here.
        drop(client);
        a.handle
            .current_run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let snap = report.snapshot();
        a.handle.history.record_run(&snap, Utc::now());
        let (pruning_error, destroyed) = pruned.as_ref().map(prune_outcome).unwrap_or((
            Some("pruning did not run (the run was cancelled or prevented)".into()),
            0,
        ));
        let repl_state = match (&outcome, snap.state) {
            (Err(_), zrepl_replication::RunState::Cancelled) => "cancelled".to_string(),
            (Err(_), _) => "failed".to_string(),
            (Ok(()), st) => st.as_str().to_string(),
        };
        let mut run = RunOutcome {
            run: run_id,
            started_at,
            finished_at: Utc::now(),
            replication: Some(repl_state),
            replication_error: outcome.as_ref().err().cloned(),
            snapshot_error: None,
            pruning_error,
            destroyed,
            bytes: snap
                .attempts
                .iter()
                .flat_map(|a| &a.filesystems)
                .map(|f| f.bytes_replicated())
                .sum(),
        };
        let mut outcome = outcome;
        if let Some(h) = &a.hooks.post {
            let env = crate::job_hooks::hook_env(
                &job,
                "post",
                run_id,
                Some((
                    run.replication.as_deref().unwrap_or(""),
                    run.replication_error.as_deref(),
                    run.bytes,
                )),
            );
            // The daemon's abort kills a post hook still running (and skips one not started).
            let ran = tokio::select! {
                biased;
                _ = abort.cancelled() => Err("post hook not run or killed: the daemon is stopping".to_string()),
                r = crate::job_hooks::run(h, &job, &env) => r,
            };
            if let Err(e) = ran {
                if h.err_is_fatal {
                    run.replication = Some("failed".into());
                    run.replication_error = Some(match &run.replication_error {
                        Some(prev) => format!("{prev}; {e}"),
                        None => e.clone(),
                    });
                    outcome = Err(run.replication_error.clone().unwrap_or_default());
                } else {
                    tracing::warn!(job = %job, error = %e, "post hook failed (not fatal)");
                }
            }
        }
        a.handle.runs.record(run.clone());
        let mut s = a.handle.inner();
        s.state = JobState::Idle;
        match outcome {
            Ok(()) => {
                tracing::info!(job = %job, "replication done");
                s.last_success = Some(Utc::now());
            }
            Err(e) => {
                tracing::error!(job = %job, error = %e, "replication failed");
                s.error = Some(e);
            }
        }
        run
    }
}

/// `zrepl run JOB`: one cycle of a push, pull or snap job without a daemon: a snapshot round (if
/// the job snapshots), replication, pruning. `local` transports reach the passive jobs of the
/// same config in-process; network transports their remote daemon.
pub(crate) async fn run_once(
    cfg: &config::Config,
    job: &str,
    zfs: &Zfs,
    cancel: &CancellationToken,
) -> Result<RunOutcome, DaemonError> {
    let reg = Registry::default();
    let runnables = build(cfg, zfs, &reg)?;
    let listeners = LocalListeners::new(reg.clone());
    for r in &runnables {
        if let Runnable::Passive {
            serving: Serving::Local { listener },
            role,
            ..
        } = r
        {
            let peer = match role {
                Role::Sink(rc) => LocalPeer::Sink(zfs.clone(), rc.clone()),
                Role::Source { sender, .. } => LocalPeer::Source(zfs.clone(), sender.clone()),
            };
            listeners
                .register(listener, peer)
                .map_err(DaemonError::Unsupported)?;
            if let Runnable::Passive { handle, hooks, .. } = r {
                listeners.set_hooks(
                    listener,
                    crate::serve_hooks::for_role(&handle.name, role, hooks),
                );
            }
        }
    }
    let Some(r) = runnables.into_iter().find(|r| r.handle().name == job) else {
        return Err(DaemonError::Unsupported(format!(
            "job {job:?} does not exist in the config"
        )));
    };
    let snapshot = |s: Option<Snapshotter>| async move {
        match s {
            Some(s) => {
                let report = s.round(&crate::snapshot::new_status()).await;
                if let Some(e) = &report.error {
                    tracing::error!(job = %job, error = %e, "snapshotting failed");
                }
                report.error
            }
            None => None,
        }
    };
    match r {
        Runnable::Push {
            active,
            sender,
            snapshotter,
            ..
        } => {
            let snapshot_error = snapshot(snapshotter).await;
            let mut o = run_active(
                &active,
                &Side::Push(&sender),
                zfs,
                &listeners,
                &reg,
                1,
                cancel,
            )
            .await;
            o.snapshot_error = snapshot_error;
            Ok(o)
        }
        Runnable::Pull {
            active, receiver, ..
        } => Ok(run_active(
            &active,
            &Side::Pull(&receiver),
            zfs,
            &listeners,
            &reg,
            1,
            cancel,
        )
        .await),
        Runnable::Snap {
            sender,
            keep,
            snapshotter,
            ..
        } => {
            let started_at = Utc::now();
            let snapshot_error = snapshot(snapshotter).await;
            let pr = tokio::select! {
                p = crate::prune::prune_local(&sender, &keep, false) => Some(p),
                _ = cancel.cancelled() => None,
            };
            let (pruning_error, destroyed) = match &pr {
                Some(pr) => {
                    log_prune(
                        job,
                        &PruneReport {
                            sender: pr.clone(),
                            receiver: Default::default(),
                        },
                    );
                    side_outcome(pr)
                }
                None => (Some("cancelled".into()), 0),
            };
            Ok(RunOutcome {
                run: 1,
                started_at,
                finished_at: Utc::now(),
                replication: None,
                replication_error: None,
                snapshot_error,
                pruning_error,
                destroyed,
                bytes: 0,
            })
        }
        Runnable::Passive { handle, .. } => Err(DaemonError::Unsupported(format!(
            "job {job:?} is a {} job: it serves its peers; zrepl run runs push, pull and snap jobs",
            handle.kind
        ))),
    }
}

/// Runs a job: an active job until `stop` (a run in progress goes on until it ends or `abort`
/// cancels it), a passive one until `abort`.
pub(crate) async fn run(
    job: Runnable,
    zfs: Zfs,
    listeners: LocalListeners,
    reg: Registry,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    // Passive jobs serve until they are aborted.
    let shutdown = &abort;
    match job {
        Runnable::Passive {
            handle,
            serving,
            role,
            hooks,
        } => {
            let mut role = role;
            if let Role::Source {
                snapshotter,
                wakeups,
                sender,
                step_holds_max_age,
            } = &mut role
            {
                spawn_snapshotter(&handle, snapshotter.take().map(|s| *s), &stop);
                if let Some(mut rx) = wakeups.take() {
                    tokio::spawn(async move { while rx.recv().await.is_some() {} });
                }
                if let Some(max_age) = *step_holds_max_age {
                    let s = LocalSender::new(zfs.clone(), sender.clone(), &reg);
                    spawn_step_hold_expiry(&handle.name, s, max_age, &stop);
                }
            }
            let hooks = crate::serve_hooks::for_role(&handle.name, &role, &hooks);
            let result = match serving {
                Serving::Local { listener } => {
                    listeners.set_hooks(&listener, hooks);
                    let peer = match &role {
                        Role::Sink(rc) => LocalPeer::Sink(zfs.clone(), rc.clone()),
                        Role::Source { sender, .. } => {
                            LocalPeer::Source(zfs.clone(), sender.clone())
                        }
                    };
                    match listeners.register(&listener, peer) {
                        Ok(()) => {
                            shutdown.cancelled().await;
                            listeners.unregister(&listener);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Serving::Net { serve, sockdir } => {
                    crate::serve::serve(
                        &handle, &serve, &sockdir, &role, &zfs, &reg, hooks, shutdown,
                    )
                    .await
                }
            };
            if let Err(e) = result {
                tracing::error!(job = %handle.name, error = %e, "cannot serve");
                let mut s = handle.inner();
                s.state = JobState::Error;
                s.error = Some(e);
            }
        }
        Runnable::Push {
            active,
            sender,
            snapshotter,
            schedule,
        } => {
            spawn_snapshotter(&active.handle, snapshotter, &stop);
            if let Some(t) = active.handle.wakeup.clone() {
                crate::schedule::spawn(&active.handle.name, schedule, t, &stop);
            }
            active_loop(
                active,
                Side::Push(&sender),
                &zfs,
                &listeners,
                &reg,
                &stop,
                &abort,
            )
            .await;
        }
        Runnable::Pull {
            active,
            receiver,
            schedule,
        } => {
            if let Some(t) = active.handle.wakeup.clone() {
                crate::schedule::spawn(&active.handle.name, schedule, t, &stop);
            }
            active_loop(
                active,
                Side::Pull(&receiver),
                &zfs,
                &listeners,
                &reg,
                &stop,
                &abort,
            )
            .await;
        }
        Runnable::Snap {
            handle,
            mut wakeups,
            sender,
            keep,
            snapshotter,
        } => {
            spawn_snapshotter(&handle, snapshotter, &stop);
            loop {
                let run_id = tokio::select! {
                    w = wakeups.recv() => match w { Some(id) => id, None => return },
                    _ = stop.cancelled() => return,
                };
                let started_at = Utc::now();
                let pr = tokio::select! {
                    p = crate::prune::prune_local(&sender, &keep, false) => p,
                    _ = abort.cancelled() => return,
                };
                let (pruning_error, destroyed) = side_outcome(&pr);
                handle.runs.record(RunOutcome {
                    run: run_id,
                    started_at,
                    finished_at: Utc::now(),
                    replication: None,
                    replication_error: None,
                    snapshot_error: None,
                    pruning_error,
                    destroyed,
                    bytes: 0,
                });
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
/// A source's `step_holds.max_age`: releases the job's step holds older than `max_age` now
/// and then every quarter of it (at least every 5 s, at most every 10 min) until shutdown.
fn spawn_step_hold_expiry(
    job: &str,
    sender: LocalSender,
    max_age: std::time::Duration,
    shutdown: &CancellationToken,
) {
    let every = (max_age / 4).clamp(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(600),
    );
    let (job, shutdown) = (job.to_string(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            let now = chrono::Utc::now().timestamp();
            match sender.release_expired_step_holds(now, max_age).await {
                Ok(released) if !released.is_empty() => {
                    let names: Vec<String> = released.iter().map(ToString::to_string).collect();
                    tracing::info!(
                        job = %job,
                        max_age_secs = max_age.as_secs(),
                        snapshots = %names.join(" "),
                        "released step holds older than step_holds.max_age (a client did not complete its steps)"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job = %job, error = %e, "cannot release expired step holds")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
}

fn spawn_snapshotter(
    handle: &Arc<JobHandle>,
    snapshotter: Option<Snapshotter>,
    shutdown: &CancellationToken,
) {
    let (Some(mut s), Some(tx)) = (snapshotter, handle.wakeup.clone()) else {
        return;
    };
    s.lagging = handle.lagging.clone();
    let status = crate::snapshot::new_status();
    handle.inner().snapshotter = Some(status.clone());
    tokio::spawn(tracing::Instrument::in_current_span(s.run(
        tx,
        status,
        shutdown.clone(),
    )));
}
