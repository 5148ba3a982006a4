//! Passive jobs (sink, source) on a network transport: accept, authenticate, serve the
//! endpoint for the client's identity over zrepl-rpc. With `hooks`, a client's control
//! connection is a session (`serve_hooks.rs`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use zrepl_config as config;
use zrepl_endpoint::{LocalReceiver, LocalSender};
use zrepl_zfs::Zfs;

use crate::jobs::{JobHandle, Role};
use crate::serve_hooks::{Hooked, ServingHooks, Session};

/// Serves until `shutdown`; an error means the listener could not be set up.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    handle: &Arc<JobHandle>,
    serve: &config::Serve,
    sockdir: &str,
    role: &Role,
    zfs: &Zfs,
    reg: &zrepl_endpoint::Registry,
    hooks: Option<Arc<ServingHooks>>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let job = handle.name.clone();
    let mut listener = zrepl_transport::Listener::bind(serve, sockdir)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(a) = listener.local_addr() {
        tracing::info!(job = %job, addr = %a, "listening");
    }
    let handshake_timeout = match serve {
        config::Serve::Tls {
            handshake_timeout, ..
        } => zrepl_transport::effective_handshake_timeout(handshake_timeout.to_std()),
        _ => std::time::Duration::from_secs(10),
    };
    let limits = crate::conn_limits::ConnLimits::new(
        crate::conn_limits::PER_IDENTITY,
        crate::conn_limits::TOTAL,
    );
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let incoming = tokio::select! {
            i = listener.accept() => i,
            _ = shutdown.cancelled() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let incoming = match incoming {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = incoming.peer();
        let job = job.clone();
        let zfs = zfs.clone();
        let reg = reg.clone();
        let hooks = hooks.clone();
        let limits = limits.clone();
        let endpoint = match role {
            Role::Sink(rc) => Endpoint::Sink(rc.clone()),
            Role::Source { sender, .. } => Endpoint::Source(sender.clone()),
        };
        conns.spawn(tracing::Instrument::in_current_span(async move {
            let (io, identity) = match incoming.authenticate().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(job = %job, peer = %peer, error = %e, "connection refused");
                    return;
                }
            };
            let mut io = io;
            let _admitted = match limits.admit(&identity) {
                Ok(a) => a,
                Err(reason) => {
                    tracing::warn!(job = %job, peer = %peer, client = %identity, "connection refused: {reason}");
                    // Briefly: a refused connection is not counted anywhere, so it must not
                    // linger.
                    let brief = handshake_timeout.min(std::time::Duration::from_secs(1));
                    let _ = zrepl_rpc::handshake::refuse(&mut io, brief, &reason).await;
                    return;
                }
            };
            tracing::debug!(job = %job, peer = %peer, client = %identity, "client connected");
            let opts = |send_compressible| zrepl_rpc::ServeOptions {
                send_compressible,
                handshake_timeout,
                limits: zrepl_rpc::wire::Limits::lowered_by_env(),
            };
            let compressible = match &endpoint {
                Endpoint::Sink(_) => false,
                Endpoint::Source(sc) => !(sc.encrypted || sc.raw || sc.compressed),
            };
            let accepted = match zrepl_rpc::accept(io, opts(compressible)).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(job = %job, client = %identity, error = %e, "connection ended");
                    return;
                }
            };
            // A session per control connection; stream connections report to their client's.
            let session = match &hooks {
                Some(h) if accepted.is_control() => Some(h.start(&identity)),
                _ => None,
            };
            let result = match endpoint {
                Endpoint::Sink(mut rc) => {
                    rc.client_identity = Some(identity.clone());
                    match LocalReceiver::new(zfs, rc, &reg) {
                        Ok(r) => accepted
                            .serve_receiver(Arc::new(hooked(&session, &hooks, &identity, r)))
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Endpoint::Source(sc) => {
                    let s = LocalSender::shared(zfs, sc, &identity, &reg);
                    accepted
                        .serve_sender(Arc::new(hooked(&session, &hooks, &identity, s)))
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            if let Some(s) = session {
                s.end(result.clone()).await;
            }
            match result {
                Ok(()) => tracing::debug!(job = %job, client = %identity, "client disconnected"),
                Err(e) => {
                    tracing::warn!(job = %job, client = %identity, error = %e, "connection ended")
                }
            }
        }));
    }
    // Shutdown: dropping the connections kills their zfs processes; partial receives stay
    // resumable.
    conns.shutdown().await;
    Ok(())
}

/// The endpoint of a connection: the session's, a stream connection's (reporting to its
/// client's sessions), or plain without hooks.
fn hooked<E>(
    session: &Option<Session>,
    hooks: &Option<Arc<ServingHooks>>,
    identity: &str,
    inner: E,
) -> Hooked<E> {
    match (session, hooks) {
        (Some(s), _) => s.wrap(inner),
        (None, Some(h)) => h.stream(identity, inner),
        (None, None) => Hooked::plain(inner),
    }
}

enum Endpoint {
    Sink(zrepl_endpoint::ReceiverConfig),
    Source(zrepl_endpoint::SenderConfig),
}
