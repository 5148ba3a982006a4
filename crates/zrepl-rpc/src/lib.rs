//! zrepl-rs's replication protocol (see PROTOCOL.md at the repository root).
//!
//! Over any authenticated byte stream from `zrepl-transport`: a version [`handshake`], then one
//! HTTP/2 connection (hyper) per job invocation that carries every RPC and every zfs stream of
//! that invocation as concurrent HTTP/2 streams. HTTP/2 provides per-stream flow control (bounded
//! buffers, backpressure from `zfs recv` to `zfs send`), PING keepalives (a dead peer is detected
//! within [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`]) and frame-size limits.
//!
//! The [`Client`] implements `zrepl_protocol::{Sender, Receiver}` so the replication driver
//! cannot tell a remote endpoint from a local one; [`serve_sender`] / [`serve_receiver`] expose a
//! local endpoint to one authenticated peer.

mod body;
mod client;
pub mod handshake;
mod server;
mod streamconn;
pub mod wire;

use std::time::Duration;

pub use client::{Client, ClientOptions, Compression, Conn as ClientConn, Dialer};
pub use server::{accept, serve_receiver, serve_sender, Accepted, ServeOptions};

/// An HTTP/2 PING is sent after this much silence on a connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A PING not answered within this time closes the connection: the peer is gone.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-stream flow-control window: at most this much of one zfs stream is in flight.
pub(crate) const STREAM_WINDOW: u32 = 4 << 20;
/// Per-connection flow-control window (all streams together).
pub(crate) const CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest HTTP/2 frame accepted.
pub(crate) const MAX_FRAME: u32 = 1 << 20;
/// Largest header block accepted.
pub(crate) const MAX_HEADER_LIST: u32 = 16 << 10;
/// Concurrent RPCs per connection.
pub(crate) const MAX_STREAMS: u32 = 256;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    Handshake(#[from] handshake::HandshakeError),
    #[error("connection: {0}")]
    Connection(String),
}

/// zstd encoding of a stream with all cores (zstd's own worker threads).
pub(crate) fn zstd_encode(s: zrepl_protocol::ByteStream, level: i32) -> zrepl_protocol::ByteStream {
    use async_compression::zstd::CParameter;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .clamp(1, 16);
    let r = tokio::io::BufReader::with_capacity(256 << 10, s);
    Box::pin(
        async_compression::tokio::bufread::ZstdEncoder::with_quality_and_params(
            r,
            async_compression::Level::Precise(level.clamp(1, 19)),
            &[CParameter::nb_workers(workers)],
        ),
    )
}

pub(crate) fn zstd_decode(s: zrepl_protocol::ByteStream) -> zrepl_protocol::ByteStream {
    let mut d = async_compression::tokio::bufread::ZstdDecoder::new(
        tokio::io::BufReader::with_capacity(256 << 10, s),
    );
    d.multiple_members(true);
    Box::pin(d)
}
