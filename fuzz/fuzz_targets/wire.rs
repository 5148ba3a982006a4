//! Fuzz target for everything a network peer can send to a passive job: the version banner,
//! then HTTP/2 frames (hyper's decoder), our body framing, trailers and the JSON messages.
//!
//! From `fuzz/`: `cargo +nightly fuzz run wire -- -max_total_time=60`.
//!
//! The first input byte selects the mode: even = the bytes are the peer's banner (parsed
//! directly); odd = a valid banner, then the HTTP/2 client preface (byte % 4 == 1) or the
//! stream-connection magic (byte % 4 == 3, PROTOCOL.md §4a), then the rest of the input, to a
//! real `serve_receiver`; it must end with an error or cleanly, never panic, and never reach
//! the endpoint with a message that did not parse.

#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zrepl_protocol::{ByteStream, DestroyResult, FilesystemInfo, ReceiveRequest, Receiver, Result};
use zrepl_rpc::handshake::{decode_body, decode_header, Banner};
use zrepl_zfs_types::{DatasetPath, FilesystemVersion};

struct Mock;

impl Receiver for Mock {
    async fn list_filesystems(&self) -> Result<Vec<FilesystemInfo>> {
        Ok(vec![])
    }
    async fn list_versions(&self, _: &DatasetPath) -> Result<Vec<FilesystemVersion>> {
        Ok(vec![])
    }
    async fn receive(&self, _: ReceiveRequest, mut s: ByteStream) -> Result<()> {
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
        Ok(())
    }
    async fn converge(
        &self,
        reqs: &[zrepl_protocol::ConvergeRequest],
    ) -> Result<Vec<Result<()>>> {
        Ok(reqs.iter().map(|_| Ok(())).collect())
    }
    async fn destroy_snapshots(
        &self,
        _: &DatasetPath,
        _: &[FilesystemVersion],
    ) -> Result<Vec<DestroyResult>> {
        Ok(vec![])
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if rest.len() >= 11 {
            let h: [u8; 11] = rest[..11].try_into().unwrap();
            let _ = decode_header(&h);
        }
        if let Ok(b) = decode_body(rest) {
            // Whatever parses must round trip.
            let enc = b.encode();
            assert_eq!(decode_body(&enc[11..]).unwrap(), b);
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(zrepl_rpc::serve_receiver(
            server,
            Arc::new(Mock),
            zrepl_rpc::ServeOptions {
                send_compressible: false,
                handshake_timeout: Duration::from_millis(200),
            },
        ));
        let _ = client.write_all(&Banner::ours().encode()).await;
        if mode % 4 == 1 {
            let _ = client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        } else {
            let _ = client.write_all(b"ZRSTRM01").await;
        }
        let _ = client.write_all(rest).await;
        let _ = client.shutdown().await;
        let drain = async {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = client.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(300), drain).await;
        srv.abort();
    });
});
