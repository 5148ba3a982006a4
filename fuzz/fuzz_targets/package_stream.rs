//! Fuzz target for `zrepl_zfs::PackageCheck` and `zrepl_zfs::CheckedPackage`, which walk the
//! records of every compound stream (a package, `zfs send -I`) a receiver gets from a peer, on
//! its way to `zfs recv`.
//!
//! Input: one byte choosing the chunk size the adapter's input arrives in, the first
//! substream's BEGIN record (312 bytes), then the rest of the stream. The package must hold
//! substreams for GUIDs 2 and 3 after the first; GUID 7 is the target's.
//!
//! Properties: no panic; the adapter passes on exactly the bytes the state machine accepts,
//! whatever the chunking, and fails exactly when the state machine refuses a record.

#![no_main]

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use zrepl_zfs::stream_check::{Need, RECORD_LEN};
use zrepl_zfs::{CheckedPackage, PackageCheck};

/// Hands out `data` `chunk` bytes at a time.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let n = this
            .chunk
            .min(buf.remaining())
            .min(this.data.len() - this.at);
        buf.put_slice(&this.data[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    if data.len() < RECORD_LEN {
        return;
    }
    let (first, rest) = data.split_at(RECORD_LEN);
    let forbidden: HashSet<u64> = [7].into_iter().collect();
    let Ok(check) = PackageCheck::new(first, &[2, 3], forbidden) else {
        return;
    };
    // The state machine alone: how many bytes pass, and whether a record is refused.
    let mut c = check.clone();
    let mut at = 0usize;
    let mut refused = false;
    loop {
        match c.need() {
            Need::Rest => {
                at = rest.len();
                break;
            }
            Need::Payload(n) => {
                let k = (rest.len() - at).min(usize::try_from(n).unwrap_or(usize::MAX));
                if k == 0 {
                    break;
                }
                c.payload(k as u64);
                at += k;
            }
            Need::Header => {
                if rest.len() - at < RECORD_LEN {
                    break;
                }
                match c.header(&rest[at..at + RECORD_LEN]) {
                    Ok(()) => at += RECORD_LEN,
                    Err(_) => {
                        refused = true;
                        break;
                    }
                }
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (out, failed) = rt.block_on(async {
        let mut r = CheckedPackage::new(
            Chunked {
                data: rest.to_vec(),
                at: 0,
                chunk: usize::from(chunk) % 700 + 1,
            },
            check,
        );
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1000];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => return (out, false),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => return (out, true),
            }
        }
    });
    assert_eq!(
        failed, refused,
        "the adapter and the state machine disagree"
    );
    assert_eq!(out.len(), at, "passed bytes");
    assert!(out == rest[..at], "passed bytes are the input's prefix");
});
