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
mod parts;
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

/// The largest zstd window a peer's stream may ask us to keep (2^27 = 128 MiB, zstd's default
/// limit, stated here so that no dependency update can raise it): a frame asking for more fails
/// the stream instead of allocating what the peer wants.
pub(crate) const ZSTD_WINDOW_LOG_MAX: u32 = 27;

pub(crate) fn zstd_decode(s: zrepl_protocol::ByteStream) -> zrepl_protocol::ByteStream {
    use async_compression::zstd::DParameter;
    let mut d = async_compression::tokio::bufread::ZstdDecoder::with_params(
        tokio::io::BufReader::with_capacity(256 << 10, s),
        &[DParameter::window_log_max(ZSTD_WINDOW_LOG_MAX)],
    );
    d.multiple_members(true);
    Box::pin(d)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    fn stream(b: Vec<u8>) -> zrepl_protocol::ByteStream {
        Box::pin(std::io::Cursor::new(b))
    }

    async fn encode(data: &[u8], window_log: u32) -> Vec<u8> {
        use async_compression::zstd::CParameter;
        let mut e = async_compression::tokio::bufread::ZstdEncoder::with_quality_and_params(
            std::io::Cursor::new(data.to_vec()),
            async_compression::Level::Precise(3),
            &[
                CParameter::window_log(window_log),
                CParameter::enable_long_distance_matching(true),
            ],
        );
        let mut out = Vec::new();
        e.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_peer_cannot_make_us_keep_a_huge_zstd_window() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        // Within the bound: decodes.
        let ok = encode(&data, super::ZSTD_WINDOW_LOG_MAX).await;
        let mut out = Vec::new();
        super::zstd_decode(stream(ok))
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, data);
        // A frame that asks for a 1 GiB window: refused, nothing that large allocated.
        let big = encode(&data, 30).await;
        let mut out = Vec::new();
        let e = super::zstd_decode(stream(big))
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert!(
            e.to_string().to_lowercase().contains("window") || e.to_string().contains("memory"),
            "{e}"
        );
    }
}
