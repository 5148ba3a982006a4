//! A listener for the daemon's HTTP endpoints that peers reach over the network (the Prometheus
//! exporter): at most [`MAX_CONNECTIONS`] connections at once, each closed after
//! [`CONNECTION_LIFETIME`], so that clients that connect and never finish a request (or keep
//! reading slowly) can neither pile up descriptors nor hold the daemon's shutdown (axum's
//! graceful shutdown waits for every open connection; see [`serve_until`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections served at once; more wait in the kernel's accept queue.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// How long one connection may live (a scrape takes milliseconds; Prometheus reconnects).
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// How long a shutdown waits for requests in flight before it drops their connections.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct BoundedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    lifetime: Duration,
}

impl BoundedListener {
    pub(crate) fn new(inner: TcpListener, max: usize, lifetime: Duration) -> Self {
        BoundedListener {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            lifetime,
        }
    }
}

/// A connection that ends (reads and writes fail) once its deadline passed, and frees its
/// slot when dropped.
pub(crate) struct BoundedIo {
    io: TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl BoundedIo {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection lifetime exceeded")
}

use std::future::Future;

impl AsyncRead for BoundedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Wait for a free slot before accepting: excess clients wait in the backlog.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                // The semaphore is never closed.
                continue;
            };
            match self.inner.accept().await {
                Ok((io, addr)) => {
                    let deadline = Box::pin(tokio::time::sleep(self.lifetime));
                    return (
                        BoundedIo {
                            io,
                            deadline,
                            _slot: slot,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Runs `serve` (an axum server with graceful shutdown on `shutdown`) until it ends, or until
/// [`SHUTDOWN_GRACE`] after `shutdown` fired: a client that never finishes its request cannot
/// hold the daemon's exit.
pub(crate) async fn serve_until<F>(serve: F, shutdown: &tokio_util::sync::CancellationToken)
where
    F: Future<Output = std::io::Result<()>>,
{
    tokio::select! {
        r = serve => {
            if let Err(e) = r {
                tracing::error!(error = %e, "http listener failed");
            }
        }
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::debug!("http listener: dropping connections still open after shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(
        max: usize,
        lifetime: Duration,
    ) -> (
        std::net::SocketAddr,
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = axum::Router::new().route("/metrics", get(|| async { "ok" }));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let s = shutdown.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(BoundedListener::new(l, max, lifetime), app)
                .with_graceful_shutdown(s.clone().cancelled_owned());
            serve_until(async { serve.await }, &s).await;
        });
        (addr, shutdown, task)
    }

    async fn get_ok(addr: std::net::SocketAddr) -> bool {
        let Ok(mut c) = TcpStream::connect(addr).await else {
            return false;
        };
        let _ = c
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = String::new();
        let r = tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut out)).await;
        matches!(r, Ok(Ok(_))) && out.starts_with("HTTP/1.1 200") && out.ends_with("ok")
    }

    #[tokio::test]
    async fn half_sent_requests_neither_block_others_forever_nor_hold_shutdown() {
        let (addr, shutdown, task) = server(2, Duration::from_millis(500)).await;
        // Two clients take every slot with a request they never finish.
        let mut stuck = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHo").await.unwrap();
            stuck.push(c);
        }
        // A real scrape gets through once their lifetime ended.
        let t0 = std::time::Instant::now();
        assert!(get_ok(addr).await);
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
        // Another stuck client (headers sent, its announced body never) does not hold the
        // shutdown beyond the grace period.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = std::time::Instant::now();
        shutdown.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(3), task)
            .await
            .expect("shutdown is not held by a half-sent request")
            .unwrap();
        assert!(t0.elapsed() <= SHUTDOWN_GRACE + Duration::from_secs(1));
        drop(stuck);
    }

    #[tokio::test]
    async fn a_stuck_request_does_not_hold_the_shutdown() {
        let (addr, shutdown, task) = server(4, Duration::from_secs(600)).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .unwrap();
        let mut d = TcpStream::connect(addr).await.unwrap();
        d.write_all(b"GET /metrics HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = std::time::Instant::now();
        shutdown.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(3), task)
            .await
            .expect("shutdown is not held by half-sent requests")
            .unwrap();
        // Graceful shutdown alone would wait for them: the grace period ended it.
        assert!(t0.elapsed() >= SHUTDOWN_GRACE);
        drop((c, d));
    }
}
