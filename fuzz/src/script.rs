//! HTTP/2 bodies and stream-connection frames as a fuzz input describes them.
//!
//! A body is described by a flags byte and a chunk of bytes (`flags`):
//! - bit 4 clear: the bytes up to the first NUL are the message, sent behind its `u32` BE length
//!   prefix as PROTOCOL.md §4 frames it, and the bytes after the NUL follow as the raw stream;
//!   bit 4 set: the bytes are the whole body as they are (any framing, or none);
//! - bit 5: the body goes in two DATA frames instead of one;
//! - bits 2-3: the trailer: `ok`, `error` with a reason, none (cut off), or a malformed one.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use hyper::body::{Body, Frame};

/// Trailer names (PROTOCOL.md §4).
pub const TRAILER_STATUS: &str = "zrepl-stream-status";
pub const TRAILER_ERROR: &str = "zrepl-stream-error";

/// Stream-connection frame kinds (PROTOCOL.md §5).
pub const MAGIC: &[u8; 8] = b"ZRSTRM01";
pub const REQUEST: u8 = 1;
pub const DATA: u8 = 2;
pub const KEEPALIVE: u8 = 3;
pub const END: u8 = 4;
pub const ABORT: u8 = 5;
pub const REPLY: u8 = 6;

pub const RAW: u8 = 0x10;
pub const SPLIT: u8 = 0x20;
pub const TRAILER_OK: u8 = 0;
pub const TRAILER_ERR: u8 = 1 << 2;
pub const TRAILER_NONE: u8 = 2 << 2;
pub const TRAILER_BAD: u8 = 3 << 2;

/// A body that yields prepared frames.
pub struct ScriptBody(VecDeque<Frame<Bytes>>);

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// `u32` BE length, then `m`.
pub fn prefixed(m: &[u8]) -> Vec<u8> {
    let mut out = (m.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(m);
    out
}

/// The body `flags` and `bytes` describe (see the module docs).
pub fn body(flags: u8, bytes: &[u8]) -> ScriptBody {
    let payload = if flags & RAW != 0 {
        bytes.to_vec()
    } else {
        let (msg, stream) = match bytes.iter().position(|&b| b == 0) {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (bytes, &[][..]),
        };
        let mut p = prefixed(msg);
        p.extend_from_slice(stream);
        p
    };
    let mut frames = VecDeque::new();
    if flags & SPLIT != 0 && payload.len() > 1 {
        let (a, b) = payload.split_at(payload.len() / 2);
        frames.push_back(Frame::data(Bytes::copy_from_slice(a)));
        frames.push_back(Frame::data(Bytes::copy_from_slice(b)));
    } else {
        frames.push_back(Frame::data(Bytes::from(payload)));
    }
    let mut t = HeaderMap::new();
    match flags & (3 << 2) {
        TRAILER_OK => {
            t.insert(TRAILER_STATUS, HeaderValue::from_static("ok"));
        }
        TRAILER_ERR => {
            t.insert(TRAILER_STATUS, HeaderValue::from_static("error"));
            t.insert(TRAILER_ERROR, HeaderValue::from_static("zfs send exited"));
        }
        TRAILER_NONE => {}
        _ => {
            t.insert(TRAILER_STATUS, HeaderValue::from_static("maybe"));
        }
    }
    if !t.is_empty() {
        frames.push_back(Frame::trailers(t));
    }
    ScriptBody(frames)
}

/// The description of a well-framed body: message, then stream bytes (for seeds).
pub fn framed(message: &[u8], stream: &[u8]) -> Vec<u8> {
    assert!(!message.contains(&0), "JSON has no NUL");
    let mut out = message.to_vec();
    if !stream.is_empty() {
        out.push(0);
        out.extend_from_slice(stream);
    }
    out
}

/// One stream-connection frame.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}
