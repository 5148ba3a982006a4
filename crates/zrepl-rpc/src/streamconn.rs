//! Stream connections (PROTOCOL.md §5): a zfs stream of a `send` or `receive` gets a transport
//! connection of its own, without HTTP/2 framing, so that the bytes go through one copy per side
//! at the speed of the transport.
//!
//! After the version handshake the client writes [`MAGIC`] (an HTTP/2 connection starts with
//! its preface instead), then frames: `u8 kind | u32 BE length | payload`. The request is one
//! `REQUEST` frame; the zfs stream is `DATA` frames ended by `END` (all of it arrived) or `ABORT`
//! (its producer failed, with the reason); the reply is one `REPLY` frame. The side that reads
//! the zfs stream sends `KEEPALIVE` frames on the otherwise idle reverse direction, the writing
//! side sends one whenever its producer was silent for [`HEARTBEAT`]; a side that hears nothing
//! for [`IDLE_LIMIT`] gives up, so a dead or frozen peer is detected within seconds.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use zrepl_protocol::ByteStream;

/// First bytes of a stream connection after the handshake.
pub(crate) const MAGIC: &[u8; 8] = b"ZRSTRM01";

pub(crate) const REQUEST: u8 = 1;
pub(crate) const DATA: u8 = 2;
pub(crate) const KEEPALIVE: u8 = 3;
pub(crate) const END: u8 = 4;
pub(crate) const ABORT: u8 = 5;
pub(crate) const REPLY: u8 = 6;

/// Largest `DATA` payload accepted (we send at most [`CHUNK`]).
pub(crate) const MAX_DATA: usize = 4 << 20;
/// Bytes read from the producer per `DATA` frame at most.
const CHUNK: usize = 1 << 20;
/// Largest `ABORT` reason accepted.
const MAX_ABORT: usize = 64 << 10;
/// A side sends `KEEPALIVE` after this much silence.
pub(crate) const HEARTBEAT: Duration = crate::KEEPALIVE_INTERVAL;
/// A side that hears nothing for this long considers the peer gone.
pub(crate) const IDLE_LIMIT: Duration =
    Duration::from_secs(crate::KEEPALIVE_INTERVAL.as_secs() + crate::KEEPALIVE_TIMEOUT.as_secs());

/// The `REQUEST` frame.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamRequest {
    /// `send` or `receive`.
    pub method: String,
    /// The method's request message.
    pub message: serde_json::Value,
    /// `receive`: the encoding of the stream (`identity` or `zstd`).
    #[serde(default)]
    pub encoding: Option<String>,
    /// `send`: the client accepts zstd, `auto` or `always`.
    #[serde(default)]
    pub accept_zstd: Option<String>,
    /// `send`: the zstd level the client asks for.
    #[serde(default)]
    pub zstd_level: Option<i32>,
}

/// The `REPLY` frame of a `send`: the result and the encoding of the stream that follows.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendReply {
    pub result: crate::wire::Reply<zrepl_protocol::SendResponse>,
    pub encoding: String,
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Writes one frame and flushes it.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.push(kind);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one frame that is not `DATA`, refusing a payload longer than `limit`.
pub(crate) async fn read_control<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 5];
    r.read_exact(&mut h).await?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if h[0] == DATA {
        return Err(invalid("unexpected DATA frame"));
    }
    if len > limit {
        return Err(invalid(format!(
            "frame of {len} bytes exceeds the limit of {limit} bytes"
        )));
    }
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).await?;
    Ok((h[0], p))
}

/// `fut`'s result, or a `TimedOut` error if the peer stays silent for [`IDLE_LIMIT`].
async fn within_idle_limit<T>(fut: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(IDLE_LIMIT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("peer silent for {IDLE_LIMIT:?}"),
            ))
        })
}

/// Reads `KEEPALIVE` frames until a `REPLY` (returned) within [`IDLE_LIMIT`] of each other.
pub(crate) async fn read_reply<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> std::io::Result<Vec<u8>> {
    loop {
        match within_idle_limit(read_control(r, limit)).await? {
            (KEEPALIVE, p) if p.is_empty() => continue,
            (REPLY, p) => return Ok(p),
            (k, _) => return Err(invalid(format!("unexpected frame kind {k} (want a reply)"))),
        }
    }
}

/// Reads the peer's `KEEPALIVE` frames until it closes the connection (`Ok`) or goes silent,
/// sends something else or breaks it (`Err`).
pub(crate) async fn watch_keepalives<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<()> {
    loop {
        match within_idle_limit(read_control(r, 0)).await {
            Ok((KEEPALIVE, _)) => continue,
            Ok((k, _)) => return Err(invalid(format!("unexpected frame kind {k}"))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Writes a `KEEPALIVE` every [`HEARTBEAT`] until the write fails (or the future is dropped).
pub(crate) async fn heartbeat<W: AsyncWrite + Unpin>(w: &mut W) -> std::io::Error {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        if let Err(e) = write_frame(w, KEEPALIVE, &[]).await {
            return e;
        }
    }
}

/// Copies `src` to `w` as `DATA` frames (a `KEEPALIVE` whenever `src` was silent for
/// [`HEARTBEAT`]), then `END`; if `src` fails, `ABORT` with its error, which is returned.
pub(crate) async fn pump<W: AsyncWrite + Unpin>(
    mut src: ByteStream,
    w: &mut W,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 5 + CHUNK];
    loop {
        // `read` is cancel-safe: a timeout loses nothing.
        match tokio::time::timeout(HEARTBEAT, src.read(&mut buf[5..])).await {
            Err(_) => write_frame(w, KEEPALIVE, &[]).await?,
            Ok(Ok(0)) => return write_frame(w, END, &[]).await,
            Ok(Ok(n)) => {
                buf[0] = DATA;
                buf[1..5].copy_from_slice(&(n as u32).to_be_bytes());
                w.write_all(&buf[..5 + n]).await?;
                w.flush().await?;
            }
            Ok(Err(e)) => {
                let mut why = e.to_string();
                why.truncate(MAX_ABORT);
                // Tell the peer why, if it still listens; the producer's error is what counts.
                let _ = write_frame(w, ABORT, why.as_bytes()).await;
                return Err(e);
            }
        }
    }
}

/// The zfs stream of a stream connection as bytes: `DATA` payloads, read straight into the
/// caller's buffer. `END` is the end; `ABORT`, a closed connection without `END`, a malformed
/// frame or [`IDLE_LIMIT`] without any frame are errors, never a short stream.
pub(crate) struct FrameReader<R> {
    inner: tokio::io::Take<R>,
    /// Bytes of the current `DATA` frame not yet read.
    remaining: usize,
    header: [u8; 5],
    header_len: usize,
    /// Collecting an `ABORT` reason of this length.
    abort: Option<(Vec<u8>, usize)>,
    done: bool,
    idle: Pin<Box<tokio::time::Sleep>>,
    /// Stopped when the reader is dropped (the heartbeat of a client's `send`).
    _guard: Option<AbortOnDrop>,
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R, guard: Option<AbortOnDrop>) -> Self {
        FrameReader {
            inner: inner.take(0),
            remaining: 0,
            header: [0; 5],
            header_len: 0,
            abort: None,
            done: false,
            idle: Box::pin(tokio::time::sleep(IDLE_LIMIT)),
            _guard: guard,
        }
    }

    fn progress(&mut self) {
        let deadline = tokio::time::Instant::now() + IDLE_LIMIT;
        self.idle.as_mut().reset(deadline);
    }

    /// `Pending` unless the peer was silent too long.
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.idle.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("peer silent for {IDLE_LIMIT:?} in the middle of a stream"),
            )));
        }
        Poll::Pending
    }
}

fn cut_off() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "stream connection closed before the end of the stream (cut off)",
    )
}

impl<R: AsyncRead + Unpin> AsyncRead for FrameReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(Ok(()));
            }
            if this.remaining > 0 {
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                this.inner.set_limit(this.remaining as u64);
                let before = buf.filled().len();
                match Pin::new(&mut this.inner).poll_read(cx, buf) {
                    Poll::Pending => return this.pending(cx),
                    Poll::Ready(Err(e)) => {
                        this.done = true;
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len() - before;
                        if n == 0 {
                            this.done = true;
                            return Poll::Ready(Err(cut_off()));
                        }
                        this.remaining -= n;
                        this.progress();
                        return Poll::Ready(Ok(()));
                    }
                }
            }
            if let Some((reason, len)) = this.abort.as_mut() {
                if reason.len() < *len {
                    let mut chunk = [0u8; 4096];
                    let want = (*len - reason.len()).min(chunk.len());
                    this.inner.set_limit(want as u64);
                    let mut rb = ReadBuf::new(&mut chunk[..want]);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                        Poll::Pending => return this.pending(cx),
                        Poll::Ready(Err(e)) => {
                            this.done = true;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                            this.done = true;
                            return Poll::Ready(Err(cut_off()));
                        }
                        Poll::Ready(Ok(())) => {
                            reason.extend_from_slice(rb.filled());
                            continue;
                        }
                    }
                }
                this.done = true;
                return Poll::Ready(Err(std::io::Error::other(format!(
                    "peer's stream failed: {}",
                    zrepl_protocol::printable(&String::from_utf8_lossy(reason))
                ))));
            }
            // The next frame header.
            while this.header_len < 5 {
                this.inner.set_limit((5 - this.header_len) as u64);
                let mut rb = ReadBuf::new(&mut this.header[this.header_len..]);
                match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                    Poll::Pending => return this.pending(cx),
                    Poll::Ready(Err(e)) => {
                        this.done = true;
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            this.done = true;
                            return Poll::Ready(Err(cut_off()));
                        }
                        this.header_len += n;
                    }
                }
            }
            this.header_len = 0;
            this.progress();
            let h = this.header;
            let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
            let bad =
                |msg: String| Poll::Ready(Err(invalid(format!("malformed stream frame: {msg}"))));
            match h[0] {
                DATA if len == 0 || len > MAX_DATA => {
                    this.done = true;
                    return bad(format!("DATA of {len} bytes (1..={MAX_DATA} allowed)"));
                }
                DATA => this.remaining = len,
                KEEPALIVE | END if len != 0 => {
                    this.done = true;
                    return bad(format!("frame kind {} with a payload", h[0]));
                }
                KEEPALIVE => {}
                END => {
                    this.done = true;
                    return Poll::Ready(Ok(()));
                }
                ABORT if len > MAX_ABORT => {
                    this.done = true;
                    return bad(format!("ABORT reason of {len} bytes"));
                }
                ABORT => this.abort = Some((Vec::with_capacity(len), len)),
                k => {
                    this.done = true;
                    return bad(format!("unexpected frame kind {k}"));
                }
            }
        }
    }
}

/// The first bytes of a connection after the handshake were not [`MAGIC`]: they are given back
/// to whoever reads the connection next (HTTP/2).
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
        let mut r = FrameReader::new(std::io::Cursor::new(bytes), None);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await?;
        Ok(out)
    }

    fn frame(kind: u8, p: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&(p.len() as u32).to_be_bytes());
        v.extend_from_slice(p);
        v
    }

    #[tokio::test]
    async fn frames_decode_to_the_stream_or_a_clear_error() {
        let ok = [
            frame(DATA, b"abc"),
            frame(KEEPALIVE, b""),
            frame(DATA, b"de"),
            frame(END, b""),
        ]
        .concat();
        assert_eq!(read_all(ok).await.unwrap(), b"abcde");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            ([frame(DATA, b"abc")].concat(), "cut off"),
            (frame(DATA, b"abc")[..5].to_vec(), "cut off"),
            (vec![DATA, 0], "cut off"),
            (
                [frame(DATA, b"x"), frame(ABORT, b"zfs send: boom")].concat(),
                "boom",
            ),
            (frame(DATA, b""), "DATA of 0 bytes"),
            (vec![DATA, 0xff, 0xff, 0xff, 0xff], "DATA of"),
            (frame(KEEPALIVE, b"x"), "with a payload"),
            (frame(9, b""), "unexpected frame kind 9"),
            (frame(REPLY, b"{}"), "unexpected frame kind 6"),
            (vec![ABORT, 0xff, 0xff, 0xff, 0xff], "ABORT reason"),
        ];
        for (bytes, want) in cases {
            let e = read_all(bytes.clone()).await.unwrap_err();
            assert!(e.to_string().contains(want), "{bytes:?}: {e}");
        }
    }

    #[tokio::test]
    async fn pump_frames_and_aborts() {
        let src: ByteStream = Box::pin(std::io::Cursor::new(vec![7u8; 3 * CHUNK + 5]));
        let mut out = Vec::new();
        pump(src, &mut out).await.unwrap();
        assert_eq!(read_all(out).await.unwrap(), vec![7u8; 3 * CHUNK + 5]);

        struct Failing;
        impl AsyncRead for Failing {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Poll::Ready(Err(std::io::Error::other("zfs send exited 1")))
            }
        }
        let mut out = Vec::new();
        assert!(pump(Box::pin(Failing), &mut out).await.is_err());
        let e = read_all(out).await.unwrap_err();
        assert!(e.to_string().contains("zfs send exited 1"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(a, None);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    }
}
