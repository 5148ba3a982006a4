//! `send.bandwidth_limit` / `recv.bandwidth_limit`: a token bucket on a zfs stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};
use zrepl_protocol::ByteStream;

/// `max` bytes per second, bursts of up to `bucket_capacity` bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandwidthLimit {
    pub bytes_per_sec: f64,
    pub bucket_capacity: u64,
}

impl BandwidthLimit {
    /// Wraps `s` so it is read no faster than the limit.
    pub fn apply(self, s: ByteStream) -> ByteStream {
        Box::pin(Limited {
            inner: s,
            rate: self.bytes_per_sec.max(1.0),
            cap: (self.bucket_capacity.max(1)) as f64,
            tokens: (self.bucket_capacity.max(1)) as f64,
            last: Instant::now(),
            sleep: None,
        })
    }
}

/// Optional limit on a stream.
pub(crate) fn limit(l: Option<BandwidthLimit>, s: ByteStream) -> ByteStream {
    match l {
        Some(l) => l.apply(s),
        None => s,
    }
}

struct Limited {
    inner: ByteStream,
    rate: f64,
    cap: f64,
    tokens: f64,
    last: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if let Some(s) = this.sleep.as_mut() {
                ready!(s.as_mut().poll(cx));
                this.sleep = None;
            }
            let now = Instant::now();
            let dt = now.duration_since(this.last).as_secs_f64();
            this.last = now;
            this.tokens = (this.tokens + dt * this.rate).min(this.cap);
            if this.tokens >= 1.0 {
                break;
            }
            let wait = (1.0 - this.tokens).max(this.cap.min(this.rate) / 4.0) / this.rate;
            this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(wait))));
        }
        let allowed = (this.tokens as usize).min(buf.remaining());
        // Read into an initialized window of at most `allowed` bytes, then mark it filled.
        let window = buf.initialize_unfilled_to(allowed);
        let mut sub = ReadBuf::new(window);
        ready!(this.inner.as_mut().poll_read(cx, &mut sub))?;
        let n = sub.filled().len();
        buf.advance(n);
        this.tokens -= n as f64;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn rate_is_held_and_bytes_are_intact() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let l = BandwidthLimit {
            bytes_per_sec: 100_000.0,
            bucket_capacity: 10_000,
        };
        let mut s = l.apply(Box::pin(std::io::Cursor::new(data.clone())));
        let start = Instant::now();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(got, data);
        // 1 MB at 100 kB/s, minus the initial bucket.
        assert!((9.5..=10.5).contains(&secs), "took {secs}s");
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_never_exceed_the_bucket() {
        let l = BandwidthLimit {
            bytes_per_sec: 1_000.0,
            bucket_capacity: 100,
        };
        let mut s = l.apply(Box::pin(std::io::Cursor::new(vec![0u8; 10_000])));
        let mut buf = vec![0u8; 8192];
        for _ in 0..20 {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n <= 100, "read {n}");
        }
    }
}
