//! `zrepl daemon`, `zrepl signal`, `zrepl status`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{PruneArgs, RunArgs, SignalArgs, SignalOp, StatusArgs, StatusMode};
use crate::control_client::{block_on, post};
use zrepl_daemon::wakeup::WaitResult;

/// `zrepl stdinserver IDENTITY`: runs as sshd's forced command; stdout is the protocol stream,
/// so errors go to stderr only (ssh shows them to the connecting daemon's log).
pub fn stdinserver(
    config: Option<&Path>,
    args: crate::cli::StdinserverArgs,
) -> anyhow::Result<ExitCode> {
    let cfg = crate::cli::load_config(config)?;
    let sockdir = cfg.global.serve.stdinserver.sockdir.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(zrepl_transport::stdinserver_proxy(
        &sockdir,
        &args.client_identity,
    ))
    .context("stdinserver")?;
    Ok(ExitCode::SUCCESS)
}

pub fn daemon(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cfg = crate::cli::load_config(config)?;
    // Kept until the daemon returns, so that queued entries are written.
    let _log = init_logging(&cfg)?;
    match crate::limits::raise_nofile() {
        Ok((before, after)) if before != after => {
            tracing::info!(
                ?before,
                ?after,
                "raised the open files limit (RLIMIT_NOFILE)"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit (RLIMIT_NOFILE)"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let grace = cfg.global.shutdown_timeout();
    rt.block_on(async {
        let shutdown = zrepl_daemon::Shutdown::default();
        let s2 = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!(
                timeout = ?grace,
                "received termination signal: finishing replication runs in progress (send it again to abort them)"
            );
            s2.stop.cancel();
            tokio::select! {
                _ = wait_for_signal() => {
                    tracing::warn!("received a second termination signal: aborting");
                }
                _ = tokio::time::sleep(grace) => {
                    tracing::warn!(timeout = ?grace, "global.shutdown_timeout passed: aborting the runs in progress");
                }
            }
            s2.abort.cancel();
        });
        let zfs = zrepl_zfs::Zfs::new(zrepl_zfs::ZfsConfig {
            observer: Some(zrepl_daemon::metrics::zfs_observer()),
            command_timeout: cfg.global.zfs.command_timeout(),
            ..crate::zfs_config()
        });
        zrepl_daemon::run(cfg, zfs, crate::version::version_info(), shutdown)
            .await
            .context("cannot run daemon")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `zrepl run JOB`: one cycle without a daemon. Refused while a daemon of this config runs the
/// job (the two would replicate the same filesystems at once): wake it up instead.
pub fn run_job(config: Option<&Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::cli::load_config(config)?;
    let _log = init_logging(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = rt.block_on(async {
        let sock = PathBuf::from(&cfg.global.control.sockpath);
        if let Ok(body) = post(&sock, "/status", &serde_json::json!({})).await {
            let runs_it = zrepl_status::DaemonStatus::from_json(&body)
                .map(|s| s.jobs.contains_key(&args.job))
                .unwrap_or(false);
            if runs_it {
                anyhow::bail!(
                    "the zrepl daemon on {} runs job {:?}: use `zrepl signal wakeup {} --wait` instead",
                    sock.display(),
                    args.job,
                    args.job
                );
            }
        }
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::warn!("received termination signal, aborting the run");
            c2.cancel();
        });
        let zfs = zrepl_zfs::Zfs::new(zrepl_zfs::ZfsConfig {
            command_timeout: cfg.global.zfs.command_timeout(),
            ..crate::zfs_config()
        });
        zrepl_daemon::run_once(&cfg, &args.job, &zfs, &cancel)
            .await
            .with_context(|| format!("cannot run job {:?}", args.job))
    })?;
    println!("{}", outcome.summary(&args.job));
    Ok(ExitCode::from(outcome.exit_code()))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut i), Ok(mut t)) => {
            tokio::select! {
                _ = i.recv() => {}
                _ = t.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The config's logging outlets as the global logger (`ZREPL_LOG` and `ZREPL_SYSLOG_SOCKET`
/// are read by `zrepl_logging::init`). An invalid outlet (e.g. unreadable TLS files) refuses
/// the start.
fn init_logging(cfg: &zrepl_config::Config) -> anyhow::Result<zrepl_logging::LoggingGuard> {
    zrepl_logging::init(&cfg.global.logging).context("cannot set up logging outlets")
}

/// The control socket path from the config, or zrepl's default when there is no config.
pub fn sockpath(config: Option<&Path>, require: bool) -> anyhow::Result<PathBuf> {
    if !require && config.is_none() && crate::cli::resolve_config_path(None).is_err() {
        return Ok(PathBuf::from("/var/run/zrepl/control"));
    }
    let cfg = crate::cli::load_config(config)?;
    Ok(PathBuf::from(cfg.global.control.sockpath))
}

pub fn signal(config: Option<&Path>, args: SignalArgs) -> anyhow::Result<ExitCode> {
    let sock = sockpath(config, true)?;
    let op = match args.op {
        SignalOp::Wakeup => "wakeup",
        SignalOp::Reset => "reset",
        SignalOp::Reload => "reload",
    };
    if args.wait && args.op != SignalOp::Wakeup {
        anyhow::bail!("--wait works with wakeup only");
    }
    let job = args.job.clone().unwrap_or_default();
    let body = block_on(post(
        &sock,
        "/signal",
        &serde_json::json!({"Name": job, "Op": op}),
    ))?
    .with_context(|| match args.op {
        SignalOp::Reload if job.is_empty() => "reload".to_string(),
        _ => format!("signal {op} to job {job:?}"),
    })?;
    if args.op == SignalOp::Reload {
        let n = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["tls_checked"].as_u64())
            .unwrap_or(0);
        println!("TLS material of {n} listener(s) and connection(s) loads; renewed files are used from the next connection on");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let job = job.as_str();
    let run = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["run"].as_u64())
        .context("the daemon did not say which run the wakeup starts (is it an older zrepl?)")?;
    let deadline = args.timeout.map(|t| std::time::Instant::now() + t);
    let outcome = block_on(async {
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(None);
            }
            let secs = left
                .map(|l| l.as_secs().max(1))
                .unwrap_or(u64::MAX)
                .min(zrepl_daemon::control::MAX_WAIT.as_secs());
            let body = post(
                &sock,
                "/wait",
                &serde_json::json!({"Name": job, "Run": run, "TimeoutSecs": secs}),
            )
            .await
            .with_context(|| format!("waiting for run #{run} of job {job:?}"))?;
            match serde_json::from_slice::<WaitResult>(&body)
                .context("invalid answer from the daemon")?
            {
                WaitResult::Pending => continue,
                WaitResult::Finished { outcome } => return Ok(Some(outcome)),
                WaitResult::Forgotten => anyhow::bail!(
                    "run #{run} of job {job:?} finished, but the daemon no longer knows how"
                ),
            }
        }
    })?;
    match outcome {
        Ok(Some(o)) => {
            println!("{}", o.summary(job));
            Ok(ExitCode::from(o.exit_code()))
        }
        Ok(None) => {
            eprintln!("timed out waiting for run #{run} of job {job:?}; it goes on (zrepl status)");
            Ok(ExitCode::from(zrepl_daemon::wakeup::exit::TIMEOUT))
        }
        Err(e) => Err(e),
    }
}

pub fn status(config: Option<&Path>, args: StatusArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    if args.mode == StatusMode::Interactive && !std::io::stdout().is_terminal() {
        anyhow::bail!("stdout is not a tty, please use --mode dump or --mode raw");
    }
    let sock = sockpath(config, true)?;
    let body = block_on(post(&sock, "/status", &serde_json::json!({})))??;
    match args.mode {
        StatusMode::Raw => {
            println!("{}", String::from_utf8_lossy(&body));
        }
        StatusMode::Dump => {
            let status = zrepl_status::DaemonStatus::from_json(&body)
                .context("invalid status from daemon")?;
            print!(
                "{}",
                crate::status_text::render(&status, args.job.as_deref())
            );
        }
        StatusMode::Interactive => {
            let first =
                zrepl_tui::Status::from_json(&body).context("invalid status from daemon")?;
            if let Some(j) = &args.job {
                anyhow::ensure!(first.jobs.contains_key(j), "job {j:?} does not exist");
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let mut daemon = ControlDaemon { rt, sock };
            zrepl_tui::run(&mut daemon, first, args.delay, args.job).context("terminal")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The interactive view's access to the daemon: the control socket, one request at a time.
struct ControlDaemon {
    rt: tokio::runtime::Runtime,
    sock: PathBuf,
}

impl zrepl_tui::Daemon for ControlDaemon {
    fn status(&mut self) -> Result<zrepl_tui::Status, String> {
        let body = self
            .rt
            .block_on(post(&self.sock, "/status", &serde_json::json!({})))
            .map_err(|e| format!("{e:#}"))?;
        zrepl_tui::Status::from_json(&body).map_err(|e| format!("invalid status: {e}"))
    }

    fn signal(&mut self, job: &str, op: &str) -> Result<(), String> {
        self.rt
            .block_on(post(
                &self.sock,
                "/signal",
                &serde_json::json!({"Name": job, "Op": op}),
            ))
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    }
}

pub fn prune(config: Option<&Path>, args: PruneArgs) -> anyhow::Result<ExitCode> {
    if !args.dry_run {
        anyhow::bail!(
            "zrepl prune only decides (--dry-run): snapshots are destroyed by the daemon after each replication run (zrepl signal wakeup {})",
            args.job
        );
    }
    let cfg = crate::cli::load_config(config)?;
    let zfs = zrepl_zfs::Zfs::new(crate::zfs_config());
    let report = block_on(zrepl_daemon::prune_dry_run(&cfg, &args.job, &zfs))??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", zrepl_daemon::prune::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}
