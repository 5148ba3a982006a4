//! Fuzz target for everything a network peer can send to a passive job: the version banner,
//! then HTTP/2 frames (hyper's decoder), our body framing, trailers and the JSON messages.
//!
//! Run: `bash tools/fuzz.sh wire 300`, or from `fuzz/`: `cargo +nightly fuzz run wire`.
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
use zrepl_rpc::handshake::{decode_body, decode_header, Banner};

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
    // A paused clock: the timeouts below fire as soon as both sides wait, not in real time.
    zrepl_fuzz::runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(zrepl_rpc::serve_receiver(
            server,
            Arc::new(zrepl_fuzz::mock::NullReceiver),
            zrepl_rpc::ServeOptions {
                send_compressible: false,
                handshake_timeout: Duration::from_millis(200),
                ..Default::default()
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
