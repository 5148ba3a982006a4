//! Parts (PROTOCOL.md §4b): a list too long for one message travels after it, as frames
//! `u32 BE length | JSON array of items`, each within the message limit, until the body ends.
//! Both sides hold the items, never the whole list as one JSON text: there is no size at which
//! a round, a listing or a pruning stops working.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::wire::MAX_PARTS_TOTAL;

/// Produces the frames of `items` lazily: one frame in memory at a time, each at most `budget`
/// bytes of JSON unless a single item is longer (that item then has a frame of its own).
pub(crate) struct PartsReader<I> {
    items: std::iter::Peekable<std::vec::IntoIter<I>>,
    budget: usize,
    cur: Bytes,
}

impl<I: Serialize> PartsReader<I> {
    pub(crate) fn new(items: Vec<I>, budget: usize) -> Self {
        PartsReader {
            items: items.into_iter().peekable(),
            budget: budget.max(1),
            cur: Bytes::new(),
        }
    }

    fn next_frame(&mut self) -> Option<Bytes> {
        self.items.peek()?;
        let mut json = Vec::with_capacity(self.budget.min(1 << 20) + 64);
        json.push(b'[');
        let mut item = Vec::new();
        while let Some(it) = self.items.peek() {
            item.clear();
            serde_json::to_writer(&mut item, it).expect("items serialize");
            if json.len() > 1 && json.len() + item.len() + 2 > self.budget {
                break;
            }
            if json.len() > 1 {
                json.push(b',');
            }
            json.extend_from_slice(&item);
            self.items.next();
        }
        json.push(b']');
        let mut f = Vec::with_capacity(4 + json.len());
        f.extend_from_slice(&(json.len() as u32).to_be_bytes());
        f.extend_from_slice(&json);
        Some(Bytes::from(f))
    }
}

impl<I: Serialize + Unpin> AsyncRead for PartsReader<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.cur.is_empty() {
            match this.next_frame() {
                Some(f) => this.cur = f,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.cur.len().min(buf.remaining());
        buf.put_slice(&this.cur[..n]);
        this.cur.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// The frames of `items` as a stream for a message body.
pub(crate) fn stream<I: Serialize + Send + Unpin + 'static>(
    items: Vec<I>,
    budget: usize,
) -> zrepl_protocol::ByteStream {
    Box::pin(PartsReader::new(items, budget))
}

/// The frame budget for a side whose messages may be `limit` bytes: well within the limit, so
/// that the JSON of one item never pushes a frame over it.
pub(crate) fn budget(limit: usize) -> usize {
    (limit / 4).max(512)
}

fn bad(m: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, m)
}

/// Reads frames until the body ends: each at most `limit` bytes, all together at most
/// [`MAX_PARTS_TOTAL`]. `deadline` bounds the wait for each frame (zero: none).
pub(crate) async fn read<I, R>(
    rd: &mut R,
    limit: usize,
    deadline: std::time::Duration,
) -> std::io::Result<Vec<I>>
where
    I: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut out = Vec::new();
    let mut total = 0usize;
    loop {
        let frame = async {
            let mut n = [0u8; 4];
            // A clean end of the body at a frame boundary ends the parts.
            let got = rd.read(&mut n[..1]).await?;
            if got == 0 {
                return Ok(None);
            }
            rd.read_exact(&mut n[1..]).await?;
            let n = u32::from_be_bytes(n) as usize;
            if n > limit {
                return Err(bad(format!(
                    "part of {n} bytes exceeds the limit of {limit} bytes"
                )));
            }
            total += n;
            if total > MAX_PARTS_TOTAL {
                return Err(bad(format!(
                    "parts exceed {MAX_PARTS_TOTAL} bytes in total"
                )));
            }
            let mut m = vec![0u8; n];
            rd.read_exact(&mut m).await?;
            Ok(Some(m))
        };
        let frame = if deadline.is_zero() {
            frame.await?
        } else {
            tokio::time::timeout(deadline, frame).await.map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("a part did not arrive within {deadline:?}"),
                )
            })??
        };
        let Some(m) = frame else {
            return Ok(out);
        };
        let items: Vec<I> =
            serde_json::from_slice(&m).map_err(|e| bad(format!("malformed part: {e}")))?;
        out.extend(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roundtrip(
        items: Vec<String>,
        budget: usize,
        limit: usize,
    ) -> std::io::Result<Vec<String>> {
        let mut s = stream(items, budget);
        read(&mut s, limit, std::time::Duration::ZERO).await
    }

    #[tokio::test]
    async fn items_survive_any_budget_and_frames_stay_within_it() {
        let items: Vec<String> = (0..1000)
            .map(|i| format!("item-{i}-{}", "x".repeat(i % 37)))
            .collect();
        for budget in [1, 16, 100, 1000, 1 << 20] {
            let got = roundtrip(items.clone(), budget, 1 << 20).await.unwrap();
            assert_eq!(got, items, "budget {budget}");
            // Every frame within max(budget, longest item + 2).
            let mut r = PartsReader::new(items.clone(), budget);
            let longest = items.iter().map(|s| s.len() + 4).max().unwrap();
            while let Some(f) = r.next_frame() {
                assert!(
                    f.len() - 4 <= budget.max(longest),
                    "budget {budget}: {}",
                    f.len()
                );
            }
        }
        assert_eq!(
            roundtrip(vec![], 10, 10).await.unwrap(),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn oversized_malformed_and_cut_parts_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x00\x00\x10\x00[]", "exceeds the limit"),
            (b"\x00\x00\x00\x02[", "early eof"),
            (b"\x00\x00\x00\x02{}", "malformed part"),
            (b"\x00\x00", "early eof"),
            (b"\x00\x00\x00\x04[1,]", "malformed part"),
        ];
        for (bytes, want) in cases {
            let mut r: &[u8] = bytes;
            let e = read::<String, _>(&mut r, 1024, std::time::Duration::ZERO)
                .await
                .unwrap_err();
            assert!(
                e.to_string().to_lowercase().contains(want),
                "{bytes:?}: {e}"
            );
        }
    }
}
