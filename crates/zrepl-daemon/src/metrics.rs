//! Prometheus metrics: `GET /metrics` on every `global.monitoring` listener of type prometheus.
//!
//! Most values are computed at scrape time from the job handles (status and run history) and the
//! zrepl-zfs command counters, so nothing has to be kept in sync. Only the zfs command durations
//! are observed as they happen (a [`CommandObserver`] feeding a histogram).
//!
//! Names follow zrepl 0.7 where zrepl has the metric (`zrepl_start_time`,
//! `zrepl_replication_last_successful`, `zrepl_replication_filesystem_errors`,
//! `zrepl_replication_bytes_replicated`, `zrepl_zfscmd_runtime`), with the label `zrepl_job`;
//! counters carry the `_total` suffix the Prometheus conventions (and `promtool check metrics`)
//! require. The README lists every metric.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;
use zrepl_replication::{FsState, RunState};
use zrepl_zfs::{CommandInfo, CommandObserver, CommandResult, Zfs};

use crate::jobs::JobHandle;
use crate::status::VersionInfo;
use crate::DaemonError;

/// zrepl's buckets for `zrepl_zfscmd_runtime` (seconds).
const ZFSCMD_BUCKETS: [f64; 10] = [0.01, 0.1, 0.2, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 60.0];

/// Durations of finished zfs/zpool commands, per binary and verb.
pub struct ZfsCommandMetrics {
    runtime: HistogramVec,
}

static ZFS_COMMANDS: LazyLock<Arc<ZfsCommandMetrics>> = LazyLock::new(|| {
    Arc::new(ZfsCommandMetrics {
        runtime: HistogramVec::new(
            HistogramOpts::new(
                "zrepl_zfscmd_runtime",
                "Wall-clock seconds of each finished zfs/zpool command.",
            )
            .buckets(ZFSCMD_BUCKETS.to_vec()),
            &["zfsbinary", "zfsverb"],
        )
        .expect("valid histogram"),
    })
});

/// The observer to install in the daemon's [`zrepl_zfs::ZfsConfig`] so that command durations
/// reach the metrics.
pub fn zfs_observer() -> Arc<dyn CommandObserver> {
    ZFS_COMMANDS.clone()
}

impl CommandObserver for ZfsCommandMetrics {
    fn started(&self, cmd: &CommandInfo) {
        // zrepl logs every zfs command at debug level too (its zfscmd package).
        tracing::debug!(cmd = %cmd.argv.join(" "), "zfs command started");
    }

    fn finished(&self, cmd: &CommandInfo, result: CommandResult, elapsed: Duration) {
        tracing::debug!(
            cmd = %cmd.argv.join(" "),
            ?result,
            ms = elapsed.as_millis() as u64,
            "zfs command finished"
        );
        self.runtime
            .with_label_values(&[cmd.binary.as_str(), cmd.verb.as_str()])
            .observe(elapsed.as_secs_f64());
    }
}

/// What a scrape reads.
#[derive(Clone)]
pub(crate) struct MetricsState {
    pub jobs: Arc<Vec<Arc<JobHandle>>>,
    pub zfs: Zfs,
    pub version: VersionInfo,
    pub started: DateTime<Utc>,
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// The exposition text (Prometheus text format 0.0.4) at time `now`.
pub(crate) fn render(st: &MetricsState, now: DateTime<Utc>) -> String {
    let r = Registry::new();
    let ts = |t: DateTime<Utc>| t.timestamp_millis() as f64 / 1e3;

    gauge(
        &r,
        "zrepl_start_time",
        "Unix time the daemon started.",
        &["raw", "version_info"],
    )
    .with_label_values(&[
        // The bare version (`0.1.0`) from `zrepl version=0.1.0 ...`, like zrepl's `raw`.
        st.version
            .version
            .split_whitespace()
            .find_map(|w| w.strip_prefix("version="))
            .unwrap_or(&st.version.version),
        st.version.version.as_str(),
    ])
    .set(ts(st.started));

    let last_ok = gauge(
        &r,
        "zrepl_replication_last_successful",
        "Unix time of the job's last replication run without errors.",
        &["zrepl_job"],
    );
    let fs_errors = gauge(
        &r,
        "zrepl_replication_filesystem_errors",
        "Filesystems that failed in the latest attempt of the job's current or last run; -1 if planning failed.",
        &["zrepl_job"],
    );
    let running = gauge(
        &r,
        "zrepl_replication_running",
        "1 while a replication run of the job is in progress.",
        &["zrepl_job"],
    );
    let runs = counter(
        &r,
        "zrepl_replication_runs_total",
        "Finished replication runs, by result (success, failure, cancelled).",
        &["zrepl_job", "result"],
    );
    let run_duration = gauge(
        &r,
        "zrepl_replication_last_run_duration_seconds",
        "Duration of the job's last finished replication run.",
        &["zrepl_job"],
    );
    let bytes = counter(
        &r,
        "zrepl_replication_bytes_replicated_total",
        "Bytes of send streams replicated per filesystem (finished runs plus the one in progress).",
        &["zrepl_job", "filesystem"],
    );
    let fs_last_ok = gauge(
        &r,
        "zrepl_replication_last_successful_timestamp_seconds",
        "Unix time a replication run last ended with the filesystem fully replicated.",
        &["zrepl_job", "filesystem"],
    );
    let lag = gauge(
        &r,
        "zrepl_replication_lag_seconds",
        "Age of the newest snapshot replicated to the receiver (how far the receiver is behind now).",
        &["zrepl_job", "filesystem"],
    );
    let attempt_ok = gauge(
        &r,
        "zrepl_replication_last_attempt_success",
        "1 if the filesystem's last replication attempt succeeded, 0 if it failed.",
        &["zrepl_job", "filesystem"],
    );
    let job_error = gauge(
        &r,
        "zrepl_job_error",
        "1 if the job reports an error (failed run, cannot listen), else 0.",
        &["zrepl_job"],
    );

    let bp_count = gauge(
        &r,
        "zrepl_snapshotting_backpressure_filesystems",
        "Filesystems whose replication lagged more than snapshotting.backpressure.max_lag in the job's last snapshot round.",
        &["zrepl_job"],
    );
    let bp_lag = gauge(
        &r,
        "zrepl_snapshotting_backpressure_lag_seconds",
        "Age of the oldest snapshot not replicated yet, per filesystem over snapshotting.backpressure.max_lag in the last round.",
        &["zrepl_job", "filesystem"],
    );

    for job in st.jobs.iter() {
        let name = job.name.as_str();
        if let Some(lagging) = job
            .lagging
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            bp_count
                .with_label_values(&[name])
                .set(lagging.len() as f64);
            for l in lagging {
                bp_lag
                    .with_label_values(&[name, &l.filesystem])
                    .set(l.lag_secs as f64);
            }
        }
        let status = job.status();
        let hist = job.history.snapshot();
        job_error
            .with_label_values(&[name])
            .set(f64::from(u8::from(status.error.is_some())));
        if !matches!(status.kind.as_str(), "push" | "pull") {
            continue;
        }
        if let Some(t) = status.last_successful_replication {
            last_ok.with_label_values(&[name]).set(ts(t));
        }
        let live = status.replication.as_ref();
        running.with_label_values(&[name]).set(f64::from(u8::from(
            live.is_some_and(|r| matches!(r.state, RunState::Running | RunState::WaitReconnect)),
        )));
        for res in ["success", "failure", "cancelled"] {
            runs.with_label_values(&[name, res])
                .inc_by(hist.runs.get(res).copied().unwrap_or(0));
        }
        if let Some(d) = hist.last_run_duration_secs {
            run_duration.with_label_values(&[name]).set(d);
        }
        if let Some(a) = live.and_then(|r| r.attempts.last()) {
            let n = if a.plan_error.is_some() {
                -1.0
            } else {
                a.filesystems.iter().filter(|f| f.error().is_some()).count() as f64
            };
            fs_errors.with_label_values(&[name]).set(n);
        }
        // Bytes of the run in progress (or the last one, if not recorded yet).
        let mut live_bytes = std::collections::BTreeMap::<&str, u64>::new();
        if let Some(run) = live.filter(|r| hist.last_recorded_run != Some(r.started_at)) {
            for a in &run.attempts {
                for f in &a.filesystems {
                    *live_bytes.entry(f.name.as_str()).or_default() += f.bytes_replicated();
                }
            }
        }
        let mut names: std::collections::BTreeSet<&str> =
            hist.filesystems.keys().map(String::as_str).collect();
        names.extend(live_bytes.keys());
        for fs in names {
            let labels = [name, fs];
            let h = hist.filesystems.get(fs);
            bytes.with_label_values(&labels).inc_by(
                h.map_or(0, |h| h.bytes_replicated) + live_bytes.get(fs).copied().unwrap_or(0),
            );
            let Some(h) = h else { continue };
            if let Some(t) = h.last_success {
                fs_last_ok.with_label_values(&labels).set(ts(t));
            }
            if let Some(c) = h.newest_replicated_creation {
                lag.with_label_values(&labels)
                    .set((now.timestamp() - c).max(0) as f64);
            }
            attempt_ok
                .with_label_values(&labels)
                .set(f64::from(u8::from(h.last_attempt_ok)));
        }
        // A filesystem failing right now in the live run counts as a failed attempt already.
        if let Some(a) = live.and_then(|r| r.attempts.last()) {
            for f in a
                .filesystems
                .iter()
                .filter(|f| matches!(f.state, FsState::PlanningError | FsState::StepError))
            {
                attempt_ok.with_label_values(&[name, &f.name]).set(0.0);
            }
        }
    }

    let cmds = counter(
        &r,
        "zrepl_zfs_commands_total",
        "zfs/zpool processes that finished, by binary, verb and result (success, failure, cancelled).",
        &["zfsbinary", "zfsverb", "result"],
    );
    let cmd_secs = gauge(
        &r,
        "zrepl_zfs_command_seconds_max",
        "Longest wall-clock duration of a finished zfs/zpool command, by binary and verb.",
        &["zfsbinary", "zfsverb"],
    );
    for ((bin, verb), s) in st.zfs.command_stats() {
        for (res, n) in [
            ("success", s.succeeded),
            ("failure", s.failed),
            ("cancelled", s.cancelled),
        ] {
            cmds.with_label_values(&[bin.as_str(), &verb, res])
                .inc_by(n);
        }
        cmd_secs
            .with_label_values(&[bin.as_str(), &verb])
            .set(s.max_duration.as_secs_f64());
    }
    let active = gauge(
        &r,
        "zrepl_zfs_commands_active",
        "zfs/zpool processes running now.",
        &[],
    );
    active
        .with_label_values(&[] as &[&str])
        .set(st.zfs.active_commands().len() as f64);

    let mut families = r.gather();
    families.extend(ZFS_COMMANDS.runtime_families());
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

impl ZfsCommandMetrics {
    fn runtime_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        self.runtime
            .collect()
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

/// Binds a prometheus listener (`host:port`, empty host = all addresses). `freebind` allows an
/// address that is not (yet) configured on this host (Linux `IP_FREEBIND`).
pub(crate) fn bind(listen: &str, freebind: bool) -> Result<tokio::net::TcpListener, DaemonError> {
    let err = |m: String| DaemonError::Monitoring(format!("prometheus listener {listen}: {m}"));
    let addr: SocketAddr = match listen.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}")
            .parse()
            .map_err(|e| err(format!("{e}")))?,
        None => listen
            .to_socket_addrs()
            .map_err(|e| err(e.to_string()))?
            .next()
            .ok_or_else(|| err("does not resolve".into()))?,
    };
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)
        .map_err(|e| err(e.to_string()))?;
    sock.set_reuse_address(true)
        .map_err(|e| err(e.to_string()))?;
    if freebind {
        let r = if addr.is_ipv4() {
            sock.set_freebind_v4(true)
        } else {
            sock.set_freebind_v6(true)
        };
        r.map_err(|e| err(format!("cannot set freebind: {e}")))?;
    }
    sock.bind(&addr.into())
        .map_err(|e| err(format!("cannot listen: {e}")))?;
    sock.listen(128).map_err(|e| err(e.to_string()))?;
    sock.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
    tokio::net::TcpListener::from_std(sock.into()).map_err(|e| err(e.to_string()))
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: MetricsState,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    // Bounded connections, each with a lifetime, and a shutdown that does not wait for clients
    // that never finish their request (`bounded.rs`).
    let listener = crate::bounded::BoundedListener::new(
        listener,
        crate::bounded::MAX_CONNECTIONS,
        crate::bounded::CONNECTION_LIFETIME,
    );
    let s = shutdown.clone();
    let serve = axum::serve(listener, app).with_graceful_shutdown(s.cancelled_owned());
    crate::bounded::serve_until(async { serve.await }, &shutdown).await;
}

async fn metrics(State(st): State<MetricsState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render(&st, Utc::now()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobState;
    use zrepl_replication::{AttemptReport, AttemptState, FilesystemReport, RunReport, StepReport};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("time")
    }

    #[test]
    fn scrape_text() {
        let push = Arc::new(JobHandle::new("push", "push", None, JobState::Idle));
        let sink = Arc::new(JobHandle::new("sink", "sink", None, JobState::Serving));
        let mut r = RunReport::new(t(1000));
        r.state = RunState::Done;
        r.finished_at = Some(t(1060));
        let mut f = FilesystemReport::new("pool/a".into());
        f.state = FsState::Done;
        f.current_step = 1;
        let step = StepReport {
            intermediates: Vec::new(),
            from: None,
            to: "@1".into(),
            resumed: false,
            bytes_expected: 4096,
            bytes_replicated: Default::default(),
            to_creation: 900,
        };
        step.bytes_replicated.add(4000);
        f.steps.push(step);
        r.attempts.push(AttemptReport {
            state: AttemptState::Done,
            started_at: t(1000),
            finished_at: Some(t(1060)),
            plan_error: None,
            filesystems: vec![f],
        });
        push.history.record_run(&r, t(1060));
        *push.lagging.lock().unwrap() = Some(vec![crate::backpressure::Lagging {
            filesystem: "pool/b".into(),
            lag_secs: 7200,
        }]);
        let st = MetricsState {
            jobs: Arc::new(vec![push, sink]),
            zfs: Zfs::with_binaries("/nonexistent/zfs", "/nonexistent/zpool"),
            version: VersionInfo {
                version: "zrepl version=0.1.0 rust-implementation".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
            },
            started: t(500),
        };
        zfs_observer().finished(
            &CommandInfo {
                id: 1,
                binary: zrepl_zfs::Binary::Zfs,
                verb: "list".into(),
                argv: vec![],
                started_at: std::time::SystemTime::now(),
            },
            CommandResult::Success,
            Duration::from_millis(30),
        );
        let text = render(&st, t(2000));
        for want in [
            "# TYPE zrepl_start_time gauge",
            "zrepl_start_time{raw=\"0.1.0\",version_info=\"zrepl version=0.1.0 rust-implementation\"} 500",
            "zrepl_replication_bytes_replicated_total{filesystem=\"pool/a\",zrepl_job=\"push\"} 4000",
            "zrepl_replication_last_successful_timestamp_seconds{filesystem=\"pool/a\",zrepl_job=\"push\"} 1060",
            "zrepl_replication_lag_seconds{filesystem=\"pool/a\",zrepl_job=\"push\"} 1100",
            "zrepl_replication_last_attempt_success{filesystem=\"pool/a\",zrepl_job=\"push\"} 1",
            "zrepl_replication_runs_total{result=\"success\",zrepl_job=\"push\"} 1",
            "zrepl_replication_last_run_duration_seconds{zrepl_job=\"push\"} 60",
            "zrepl_replication_running{zrepl_job=\"push\"} 0",
            "zrepl_job_error{zrepl_job=\"sink\"} 0",
            "zrepl_snapshotting_backpressure_filesystems{zrepl_job=\"push\"} 1",
            "zrepl_snapshotting_backpressure_lag_seconds{filesystem=\"pool/b\",zrepl_job=\"push\"} 7200",
            "zrepl_zfs_commands_active 0",
            "# TYPE zrepl_zfscmd_runtime histogram",
            "zrepl_zfscmd_runtime_bucket{zfsbinary=\"zfs\",zfsverb=\"list\",le=\"0.1\"} ",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        // Every metric the Grafana dashboard queries is one this module declares.
        let dashboard = include_str!("../../../docs/grafana/zrepl.json");
        let source = include_str!("metrics.rs");
        let re = regex::Regex::new(r"zrepl_[a-z_]+").expect("regex");
        for m in re.find_iter(dashboard) {
            let name = m.as_str();
            if name == "zrepl_job" {
                continue;
            }
            let family = name.strip_suffix("_bucket").unwrap_or(name);
            assert!(
                source.contains(&format!("\"{family}\"")),
                "dashboard queries {name}, which is not exported"
            );
        }
        // Only active-side jobs have replication metrics.
        assert!(
            !text.contains("zrepl_replication_running{zrepl_job=\"sink\"}"),
            "{text}"
        );
    }
}
