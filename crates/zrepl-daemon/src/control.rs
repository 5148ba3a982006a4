//! The control socket: HTTP/1.1 + JSON over a unix socket, with zrepl's endpoints
//! (`POST /status`, `POST /signal`, `POST /version`). Only the file system protects it, so the
//! socket's directory must not be accessible by other users.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::jobs::JobHandle;
use crate::status::{DaemonStatus, VersionInfo};
use crate::wakeup::WaitResult;
use crate::DaemonError;

/// `{"Name": "<job>", "Op": "wakeup"|"reset"}`, zrepl's signal request.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignalRequest {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Op")]
    pub op: String,
}

#[derive(Clone)]
pub(crate) struct ControlState {
    pub jobs: Arc<Vec<Arc<JobHandle>>>,
    pub zfs: zrepl_zfs::Zfs,
    pub version: VersionInfo,
    /// The running config: `reload` checks its TLS material.
    pub cfg: Arc<zrepl_config::Config>,
}

/// `zrepl signal reload [JOB]`: reads the TLS certificates, keys and CAs of every job (or of
/// `job`) now and reports what does not load. Listeners and connectors pick renewed files up
/// by themselves at their next handshake (`zrepl_transport`); this tells the operator whether
/// the renewal is usable before a peer finds out. Returns the number of TLS configurations
/// checked, or every problem.
pub(crate) fn reload_tls(cfg: &zrepl_config::Config, job: Option<&str>) -> Result<usize, String> {
    use zrepl_config::{Connect, Job, Serve};
    let mut checked = 0;
    let mut problems = Vec::new();
    let mut found = job.is_none();
    for j in &cfg.jobs {
        if job.is_some_and(|n| n != j.name()) {
            continue;
        }
        found = true;
        let (serve, connect) = match j {
            Job::Sink(s) => (Some(&s.serve), None),
            Job::Source(s) => (Some(&s.serve), None),
            Job::Push(p) => (None, Some(&p.connect)),
            Job::Pull(p) => (None, Some(&p.connect)),
            _ => (None, None),
        };
        if let Some(s @ Serve::Tls { .. }) = serve {
            checked += 1;
            if let Err(e) = zrepl_transport::check_serve(s) {
                problems.push(format!("job {:?}: serve: {e}", j.name()));
            }
        }
        if let Some(c @ Connect::Tls { .. }) = connect {
            checked += 1;
            if let Err(e) = zrepl_transport::Connector::from_config(c) {
                problems.push(format!("job {:?}: connect: {e}", j.name()));
            }
        }
    }
    if !found {
        return Err(format!("Job {} does not exist", job.unwrap_or("")));
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(format!(
            "{} (the previous files stay in use until these load)",
            problems.join("; ")
        ))
    }
}

/// Creates the socket's directory if needed (mode 0700), refuses a directory others can access,
/// refuses to start when another daemon answers on the socket, and removes a stale socket.
pub(crate) async fn bind(sockpath: &Path) -> Result<UnixListener, DaemonError> {
    let err = |msg: String| DaemonError::ControlSocket(format!("{}: {msg}", sockpath.display()));
    let dir = sockpath
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            if let Some(p) =
                zrepl_transport::socket_dir_problem(&m, rustix::process::geteuid().as_raw())
            {
                return Err(err(format!("directory {}: {p}", dir.display())));
            }
            if m.permissions().mode() & 0o007 != 0 {
                return Err(err(format!(
                    "directory {} must not be accessible by others (chmod 0700 {})",
                    dir.display(),
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create directory: {e}")))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err(format!("cannot restrict directory permissions: {e}")))?;
        }
        Err(e) => return Err(err(format!("cannot access directory: {e}"))),
    }
    match std::fs::symlink_metadata(sockpath) {
        Ok(m) if m.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(sockpath).await.is_ok() {
                return Err(err(
                    "another zrepl daemon is running (its control socket answers)".into(),
                ));
            }
            std::fs::remove_file(sockpath)
                .map_err(|e| err(format!("cannot remove stale socket: {e}")))?;
        }
        Ok(_) => return Err(err("exists and is not a socket".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let l = UnixListener::bind(sockpath).map_err(|e| err(format!("cannot listen: {e}")))?;
    std::fs::set_permissions(sockpath, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(format!("cannot restrict socket permissions: {e}")))?;
    Ok(l)
}

pub(crate) async fn serve(
    listener: UnixListener,
    sockpath: PathBuf,
    state: ControlState,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/status", post(status))
        .route("/signal", post(signal))
        .route("/version", post(version))
        .route("/wait", post(wait))
        .with_state(state);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "control socket failed");
    }
    let _ = std::fs::remove_file(&sockpath);
}

async fn status(State(st): State<ControlState>) -> Json<DaemonStatus> {
    Json(crate::status::collect(&st.jobs, &st.zfs))
}

async fn version(State(st): State<ControlState>) -> Json<VersionInfo> {
    Json(st.version.clone())
}

async fn signal(State(st): State<ControlState>, body: axum::body::Bytes) -> Response {
    let req: SignalRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid signal request: {e}"),
            )
                .into_response()
        }
    };
    if req.op == "reload" {
        let job = Some(req.name.as_str()).filter(|n| !n.is_empty());
        return match reload_tls(&st.cfg, job) {
            Ok(n) => Json(serde_json::json!({ "tls_checked": n })).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        };
    }
    let Some(job) = st.jobs.iter().find(|j| j.name == req.name) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Job {} does not exist", req.name),
        )
            .into_response();
    };
    // zrepl answers `{}`; the run number is our addition (for `--wait`).
    let r = match req.op.as_str() {
        "wakeup" => job.wakeup().map(|run| serde_json::json!({ "run": run })),
        "reset" => job.reset().map(|()| serde_json::json!({})),
        op => Err(format!("operation {op:?} is invalid")),
    };
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// `{"Name": "<job>", "Run": <n>, "TimeoutSecs": <s>}`: waits (at most `TimeoutSecs`, capped at
/// [`MAX_WAIT`]) until run `n` of the job finished; answers a [`WaitResult`].
#[derive(Debug, Serialize, Deserialize)]
pub struct WaitRequest {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Run")]
    pub run: u64,
    #[serde(rename = "TimeoutSecs", default)]
    pub timeout_secs: u64,
}

/// The longest a `/wait` request is held open; clients ask again.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn wait(State(st): State<ControlState>, body: axum::body::Bytes) -> Response {
    let req: WaitRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid wait request: {e}"),
            )
                .into_response()
        }
    };
    let Some(job) = st.jobs.iter().find(|j| j.name == req.name) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Job {} does not exist", req.name),
        )
            .into_response();
    };
    let limit = std::time::Duration::from_secs(req.timeout_secs).min(MAX_WAIT);
    let r = tokio::time::timeout(limit, job.runs.wait(req.run))
        .await
        .unwrap_or(WaitResult::Pending);
    Json(r).into_response()
}
