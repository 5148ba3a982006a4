//! Pipe sizing and bounded stderr capture for the streaming commands.
//!
//! A bigger pipe between `zfs send` and its consumer lets `zfs send` run ahead of a bursty
//! network (zrepl asks for the maximum). On Linux the size is raised with `F_SETPIPE_SZ`, but
//! never above `/proc/sys/fs/pipe-max-size`: as root the kernel would allow more, and resizing a
//! pipe beyond that limit can hang on kernels >= 5.8 (kernel bug 212295, zrepl #424). If the limit
//! cannot be read we leave the pipe alone. Elsewhere the pipe keeps its default size.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

/// `/proc/sys/fs/pipe-max-size`, read once.
#[cfg(target_os = "linux")]
fn pipe_max_size() -> Option<usize> {
    static MAX: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
}

/// Best-effort: raise the capacity of the pipe behind `fd` to `min(hint, pipe-max-size)`.
/// Failure only costs throughput, so it is ignored. Returns the resulting capacity if known.
#[cfg(target_os = "linux")]
pub(crate) fn set_pipe_capacity(fd: impl std::os::fd::AsFd, hint: Option<usize>) -> Option<usize> {
    let max = pipe_max_size()?;
    let want = hint.map_or(max, |h| h.min(max));
    rustix::pipe::fcntl_setpipe_size(fd, want).ok()
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_pipe_capacity<T>(_fd: T, _hint: Option<usize>) -> Option<usize> {
    None
}

/// Keeps the last `cap` bytes written to it.
#[derive(Debug)]
pub(crate) struct Ring {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Ring {
    pub fn new(cap: usize) -> Self {
        Ring {
            buf: VecDeque::new(),
            cap,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.cap {
            &data[data.len() - self.cap..]
        } else {
            data
        };
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(data);
    }

    pub fn contents(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }
}

pub(crate) type SharedRing = Arc<Mutex<Ring>>;

pub(crate) fn ring_contents(r: &SharedRing) -> String {
    r.lock().unwrap_or_else(|p| p.into_inner()).contents()
}

/// Drains `src` into a ring of `cap` bytes on a separate task (a child blocked on a full stderr
/// pipe would otherwise never exit). The task ends at EOF, i.e. when the child exits.
pub(crate) fn capture<R>(mut src: R, cap: usize) -> (SharedRing, JoinHandle<()>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let ring = Arc::new(Mutex::new(Ring::new(cap)));
    let r2 = ring.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        loop {
            match src.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => r2.lock().unwrap_or_else(|p| p.into_inner()).push(&buf[..n]),
            }
        }
    });
    (ring, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_tail() {
        let mut r = Ring::new(5);
        r.push(b"abc");
        r.push(b"defg");
        assert_eq!(r.contents(), "cdefg");
        r.push(b"0123456789");
        assert_eq!(r.contents(), "56789");
        let mut r = Ring::new(0);
        r.push(b"x");
        assert_eq!(r.contents(), "");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pipe_capacity_never_exceeds_max() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let max = pipe_max_size().unwrap();
        let got = set_pipe_capacity(&r, Some(usize::MAX)).unwrap_or(0);
        assert!(got <= max.next_power_of_two(), "{got} > {max}");
        let got = set_pipe_capacity(&r, Some(128 * 1024)).unwrap();
        assert!(got >= 128 * 1024);
    }
}
