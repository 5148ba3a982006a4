//! Client of the daemon's control socket (`POST /status`, `/signal`, `/version`).

use std::path::Path;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// POSTs `body` as JSON to `endpoint` on the control socket and returns the response body.
pub async fn post(
    sockpath: &Path,
    endpoint: &str,
    body: &serde_json::Value,
) -> anyhow::Result<Vec<u8>> {
    let stream = tokio::net::UnixStream::connect(sockpath)
        .await
        .with_context(|| {
            format!(
                "cannot connect to the daemon's control socket {} (is `zrepl daemon` running?)",
                sockpath.display()
            )
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("control socket handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(format!("http://unix{endpoint}"))
        .header("content-type", "application/json")
        .header("connection", "close")
        .header("host", "unix")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
    let resp = sender
        .send_request(req)
        .await
        .context("control socket request")?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .context("control socket response")?
        .to_bytes();
    if !status.is_success() {
        anyhow::bail!("{}", String::from_utf8_lossy(&bytes).trim());
    }
    Ok(bytes.to_vec())
}

/// A current-thread runtime for one client request.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
}
