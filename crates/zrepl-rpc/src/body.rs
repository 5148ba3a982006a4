//! Message bodies (PROTOCOL.md §4): every request and response body is
//! `u32 BE length | JSON message | [raw stream bytes]`, closed by an HTTP/2 trailer that says
//! whether the stream ended well. A body that ends without that trailer was cut off.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use zrepl_protocol::ByteStream;

/// Trailer: `ok`, or the stream's producer failed.
pub(crate) const TRAILER_STATUS: &str = "zrepl-stream-status";
/// Trailer: why the producer failed (escaped to visible ASCII).
pub(crate) const TRAILER_ERROR: &str = "zrepl-stream-error";
/// Bytes read from a stream per DATA frame at most.
const CHUNK: usize = 256 << 10;

/// An outgoing body: the message, then the stream (if any), then the status trailer.
pub(crate) struct OutBody {
    prefix: Option<Bytes>,
    stream: Option<ByteStream>,
    buf: BytesMut,
    finished: bool,
}

impl OutBody {
    pub(crate) fn new(message: &[u8], stream: Option<ByteStream>) -> Self {
        let mut p = BytesMut::with_capacity(4 + message.len());
        p.extend_from_slice(&(message.len() as u32).to_be_bytes());
        p.extend_from_slice(message);
        OutBody {
            prefix: Some(p.freeze()),
            stream,
            buf: BytesMut::new(),
            finished: false,
        }
    }
}

/// Makes any text a valid header value (visible ASCII).
pub(crate) fn escape(s: &str) -> HeaderValue {
    let mut out: String = s.chars().flat_map(char::escape_default).collect();
    out.truncate(4096);
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("unprintable error"))
}

fn trailers(result: Result<(), String>) -> HeaderMap {
    let mut h = HeaderMap::new();
    match result {
        Ok(()) => {
            h.insert(TRAILER_STATUS, HeaderValue::from_static("ok"));
        }
        Err(e) => {
            h.insert(TRAILER_STATUS, HeaderValue::from_static("error"));
            h.insert(TRAILER_ERROR, escape(&e));
        }
    }
    h
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if let Some(p) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        let Some(s) = this.stream.as_mut() else {
            this.finished = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers(Ok(()))))));
        };
        if this.buf.capacity() < CHUNK {
            this.buf.reserve(CHUNK);
        }
        match ready!(tokio_util::io::poll_read_buf(s.as_mut(), cx, &mut this.buf)) {
            Ok(0) => {
                this.stream = None;
                this.finished = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(Ok(()))))))
            }
            Ok(_) => Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze())))),
            Err(e) => {
                // The producer (zfs send) failed: tell the peer why, in band, and end cleanly.
                this.stream = None;
                this.finished = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(Err(e.to_string()))))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.prefix.is_none()
    }
}

/// An incoming body as bytes: fails if the peer's trailer reports an error or is missing.
pub(crate) struct InStream {
    body: Incoming,
    cur: Bytes,
    done: bool,
}

impl InStream {
    pub(crate) fn new(body: Incoming) -> Self {
        InStream {
            body,
            cur: Bytes::new(),
            done: false,
        }
    }

    /// Reads the leading message, refusing one longer than `limit`.
    pub(crate) async fn message(&mut self, limit: usize) -> std::io::Result<Vec<u8>> {
        let mut n = [0u8; 4];
        self.read_exact(&mut n).await?;
        let n = u32::from_be_bytes(n) as usize;
        if n > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("message of {n} bytes exceeds the limit of {limit} bytes"),
            ));
        }
        let mut m = vec![0u8; n];
        self.read_exact(&mut m).await?;
        Ok(m)
    }

    /// Consumes the rest of the body (a control reply has nothing after its message but the
    /// trailer, which must say ok).
    pub(crate) async fn finish(mut self) -> std::io::Result<()> {
        let mut sink = [0u8; 1];
        match self.read(&mut sink).await? {
            0 => Ok(()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unexpected data after the message",
            )),
        }
    }

    pub(crate) fn into_stream(self) -> ByteStream {
        Box::pin(self)
    }
}

fn check_trailers(t: &HeaderMap) -> std::io::Result<()> {
    match t.get(TRAILER_STATUS).map(|v| v.as_bytes()) {
        Some(b"ok") => Ok(()),
        Some(b"error") => Err(std::io::Error::other(format!(
            "peer's stream failed: {}",
            t.get(TRAILER_ERROR)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no reason given")
        ))),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "malformed stream trailer",
        )),
    }
}

impl AsyncRead for InStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.cur.is_empty() {
                let n = this.cur.len().min(buf.remaining());
                buf.put_slice(&this.cur[..n]);
                this.cur.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => this.cur = d,
                    Err(f) => {
                        if let Ok(t) = f.into_trailers() {
                            this.done = true;
                            check_trailers(&t)?;
                        }
                    }
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        format!("connection to peer lost mid-stream: {e}"),
                    )));
                }
                None => {
                    this.done = true;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "stream ended without its trailer (cut off)",
                    )));
                }
            }
        }
    }
}

/// For tests of the framing: a body collected whole.
#[allow(dead_code)]
pub(crate) async fn collect(b: OutBody) -> std::io::Result<(Bytes, Option<HeaderMap>)> {
    let c = b.collect().await?;
    let t = c.trailers().cloned();
    Ok((c.to_bytes(), t))
}
