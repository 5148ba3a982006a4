//! `send.bandwidth_limit` / `recv.bandwidth_limit`: a token bucket on a zfs stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
    /// Wraps `s` so it is read no faster than the limit (a bucket of its own).
    pub fn apply(self, s: ByteStream) -> ByteStream {
        Arc::new(Bucket::new(self)).apply(s)
    }
}

/// A token bucket that any number of streams draw from together: zrepl's limit holds for all
/// concurrent steps of a job, not for each stream.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    cap: f64,
    /// Tokens and when they were last refilled.
    state: std::sync::Mutex<(f64, Instant)>,
}

impl Bucket {
    pub fn new(l: BandwidthLimit) -> Self {
        let cap = l.bucket_capacity.max(1) as f64;
        Bucket {
            rate: l.bytes_per_sec.max(1.0),
            cap,
            state: std::sync::Mutex::new((cap, Instant::now())),
        }
    }

    /// Whether this bucket enforces `l`.
    pub(crate) fn has_limit(&self, l: BandwidthLimit) -> bool {
        self.rate == l.bytes_per_sec.max(1.0) && self.cap == l.bucket_capacity.max(1) as f64
    }

    /// Wraps `s` so that it draws from this bucket.
    pub fn apply(self: &Arc<Self>, s: ByteStream) -> ByteStream {
        Box::pin(Limited {
            inner: s,
            bucket: self.clone(),
            sleep: None,
        })
    }

    /// Takes up to `want` tokens, or says how long to wait for one.
    fn take(&self, want: usize) -> Result<usize, Duration> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let dt = now.duration_since(st.1).as_secs_f64();
        st.1 = now;
        st.0 = (st.0 + dt * self.rate).min(self.cap);
        if st.0 < 1.0 {
            let wait = (1.0 - st.0).max(self.cap.min(self.rate) / 4.0) / self.rate;
            return Err(Duration::from_secs_f64(wait));
        }
        let n = (st.0 as usize).min(want);
        st.0 -= n as f64;
        Ok(n)
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.0 = (st.0 + n as f64).min(self.cap);
        }
    }
}

/// Optional limit on a stream.
pub(crate) fn limit(b: Option<&Arc<Bucket>>, s: ByteStream) -> ByteStream {
    match b {
        Some(b) => b.apply(s),
        None => s,
    }
}

struct Limited {
    inner: ByteStream,
    bucket: Arc<Bucket>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let allowed = loop {
            if let Some(s) = this.sleep.as_mut() {
                ready!(s.as_mut().poll(cx));
                this.sleep = None;
            }
            match this.bucket.take(buf.remaining()) {
                Ok(n) => break n,
                Err(wait) => this.sleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        };
        // Read into an initialized window of at most `allowed` bytes, then mark it filled;
        // tokens not used (or not used now) go back to the bucket.
        let window = buf.initialize_unfilled_to(allowed);
        let mut sub = ReadBuf::new(window);
        match this.inner.as_mut().poll_read(cx, &mut sub) {
            Poll::Pending => {
                this.bucket.give_back(allowed);
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                this.bucket.give_back(allowed);
                Poll::Ready(Err(e))
            }
            Poll::Ready(Ok(())) => {
                let n = sub.filled().len();
                buf.advance(n);
                this.bucket.give_back(allowed - n);
                Poll::Ready(Ok(()))
            }
        }
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

    #[tokio::test(start_paused = true)]
    async fn concurrent_streams_share_one_bucket() {
        let l = BandwidthLimit {
            bytes_per_sec: 100_000.0,
            bucket_capacity: 10_000,
        };
        let reg = crate::Registry::default();
        let b = reg.bucket("test\0shared", l);
        assert!(Arc::ptr_eq(&b, &reg.bucket("test\0shared", l)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let mut s = b.apply(Box::pin(std::io::Cursor::new(vec![1u8; 250_000])));
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                got.len()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 250_000);
        }
        // 4 x 250 kB together at 100 kB/s: about 10 s, not 2.5 s.
        let secs = start.elapsed().as_secs_f64();
        assert!((9.5..=10.5).contains(&secs), "took {secs}s");
    }
}
