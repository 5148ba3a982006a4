//! Passive jobs (sink, source) on a network transport: accept, authenticate, serve the
//! endpoint for the client's identity over zrepl-rpc.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use zrepl_config as config;
use zrepl_endpoint::{LocalReceiver, LocalSender};
use zrepl_zfs::Zfs;

use crate::jobs::{JobHandle, Role};

/// Serves until `shutdown`; an error means the listener could not be set up.
pub(crate) async fn serve(
    handle: &Arc<JobHandle>,
    serve: &config::Serve,
    sockdir: &str,
    role: &Role,
    zfs: &Zfs,
    reg: &zrepl_endpoint::Registry,
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
        } => handshake_timeout.to_std(),
        _ => std::time::Duration::from_secs(10),
    };
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
            tracing::debug!(job = %job, peer = %peer, client = %identity, "client connected");
            let result = match endpoint {
                Endpoint::Sink(mut rc) => {
                    rc.client_identity = Some(identity.clone());
                    match LocalReceiver::new(zfs, rc, &reg) {
                        Ok(r) => zrepl_rpc::serve_receiver(
                            io,
                            Arc::new(r),
                            zrepl_rpc::ServeOptions {
                                send_compressible: false,
                                handshake_timeout,
                            },
                        )
                        .await
                        .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Endpoint::Source(sc) => {
                    let send_compressible = !(sc.encrypted || sc.raw || sc.compressed);
                    zrepl_rpc::serve_sender(
                        io,
                        Arc::new(LocalSender::shared(zfs, sc, &identity, &reg)),
                        zrepl_rpc::ServeOptions {
                            send_compressible,
                            handshake_timeout,
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())
                }
            };
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

enum Endpoint {
    Sink(zrepl_endpoint::ReceiverConfig),
    Source(zrepl_endpoint::SenderConfig),
}
