//! The sender's request dispatch (`zrepl_rpc::serve_sender`) fed arbitrary requests by a peer,
//! with [`MockSender`] behind it.
//!
//! Input: a mode byte, then
//! - mode % 4 == 3: the bytes after the handshake and the stream-connection magic (frames of
//!   PROTOCOL.md §5: a `send` request, keepalives, anything);
//! - otherwise: up to 16 requests on one HTTP/2 connection, each `method byte | flags | chunk`:
//!   the method is `METHODS[byte % len]` (bit 7: GET instead of POST), the flags' bits 0-1 ask for
//!   zstd (`always`, `auto`), bit 6 adds a zstd level header, bits 2-5 and the chunk describe the
//!   body ([`crate::script`]).
//!
//! Properties: the server never panics, and every request it reads gets status 200 and a
//! well-framed reply whose message parses as a `Reply`, ended by a status trailer; only a
//! successful `send` has bytes after its message.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use zrepl_rpc::handshake;
use zrepl_rpc::wire::{method, Reply};

use crate::input::{chunk, Input};
use crate::mock::{fs, send_request, snap, MockSender};
use crate::script::{self, ScriptBody};

pub const METHODS: &[&str] = &[
    method::PING,
    method::LIST_FILESYSTEMS,
    method::LIST_VERSIONS,
    method::LIST_VERSIONS_MANY,
    method::DESTROY_SNAPSHOTS,
    method::REPLICATION_CURSOR,
    method::REPLICATION_CURSORS,
    method::SEND_DRY,
    method::SEND,
    method::SEND_COMPLETED,
    method::PREPARE_SENDS,
    method::SENDS_COMPLETED,
    method::CONVERGE,
    method::RECEIVE,
    method::RECEIVES_COMPLETED,
    "bogus",
];

const ZSTD_ALWAYS: u8 = 1;
const ZSTD_AUTO: u8 = 2;
const ZSTD_LEVEL: u8 = 0x40;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    crate::runtime().block_on(async move {
        let (mut peer, server) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(zrepl_rpc::serve_sender(
            server,
            Arc::new(MockSender),
            zrepl_rpc::ServeOptions {
                send_compressible: mode & 4 != 0,
                handshake_timeout: Duration::from_secs(10),
                ..Default::default()
            },
        ));
        handshake::exchange(&mut peer, Duration::ZERO)
            .await
            .expect("the server's banner");
        if mode % 4 == 3 {
            stream_connection(peer, input.rest()).await;
        } else {
            http2(peer, input).await;
        }
        // The server ends once the peer is gone (its timers run on the paused clock).
        let _ = srv.await;
    });
}

async fn stream_connection(peer: DuplexStream, rest: &[u8]) {
    let (mut rd, mut wr) = tokio::io::split(peer);
    let write = async {
        let _ = wr.write_all(script::MAGIC).await;
        let _ = wr.write_all(rest).await;
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::join!(write, read);
}

async fn http2(peer: DuplexStream, mut input: Input<'_>) {
    let Ok((mut send, conn)) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake::<_, ScriptBody>(TokioIo::new(peer))
        .await
    else {
        return;
    };
    let conn = tokio::spawn(conn);
    for _ in 0..16 {
        if input.is_empty() {
            break;
        }
        let m = input.byte();
        let flags = input.byte();
        let bytes = input.chunk();
        let name = METHODS[(m & 0x7f) as usize % METHODS.len()];
        let mut req = Request::builder()
            .method(if m & 0x80 != 0 {
                http::Method::GET
            } else {
                http::Method::POST
            })
            .uri(format!("http://zrepl/v1/{name}"));
        if flags & ZSTD_ALWAYS != 0 {
            req = req.header(zrepl_rpc::wire::HDR_ACCEPT_ZSTD, "always");
        } else if flags & ZSTD_AUTO != 0 {
            req = req.header(zrepl_rpc::wire::HDR_ACCEPT_ZSTD, "auto");
        }
        if flags & ZSTD_LEVEL != 0 {
            req = req.header(zrepl_rpc::wire::HDR_ZSTD_LEVEL, "1");
        }
        let req = req.body(script::body(flags, bytes)).expect("valid request");
        if send.ready().await.is_err() {
            break;
        }
        let Ok(resp) = send.send_request(req).await else {
            break;
        };
        check_response(name, resp).await;
    }
    drop(send);
    let _ = conn.await;
}

async fn check_response(name: &str, resp: http::Response<hyper::body::Incoming>) {
    assert_eq!(resp.status(), http::StatusCode::OK, "{name}: status");
    let mut body = resp.into_body();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(f) = body.frame().await {
        let Ok(f) = f else {
            return; // the connection broke: nothing to check
        };
        match f.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    assert!(data.len() >= 4, "{name}: reply without a message length");
    let n = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let msg = data
        .get(4..4 + n)
        .unwrap_or_else(|| panic!("{name}: reply shorter than its message"));
    let reply: Reply<serde_json::Value> =
        serde_json::from_slice(msg).unwrap_or_else(|e| panic!("{name}: reply does not parse: {e}"));
    if std::env::var_os("ZREPL_FUZZ_TRACE").is_some() {
        let rest = data.len() - 4 - n;
        eprintln!("{name}: {reply:?} and {rest} more bytes, trailers {trailers:?}");
    }
    if !(name == method::SEND && matches!(reply, Reply::Ok(_))) {
        assert_eq!(data.len(), 4 + n, "{name}: bytes after the reply");
    }
    let t = trailers.unwrap_or_else(|| panic!("{name}: reply without a trailer"));
    let status = t.get(script::TRAILER_STATUS).map(|v| v.as_bytes());
    assert!(
        matches!(status, Some(b"ok") | Some(b"error")),
        "{name}: trailer {status:?}"
    );
}

fn req(out: &mut Vec<u8>, name: &str, flags: u8, message: &serde_json::Value) {
    let i = METHODS
        .iter()
        .position(|m| *m == name)
        .expect("known method");
    out.push(i as u8);
    out.push(flags);
    chunk(out, &script::framed(message.to_string().as_bytes(), &[]));
}

/// Seeds: every method with a valid request, a round's sequence, and stream-connection sends.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use serde_json::{json, to_value};
    let a = fs("pool/a");
    let send = to_value(send_request(Some(1), 4)).unwrap();
    let send_fails = to_value(send_request(Some(1), 5)).unwrap();
    let fsreq = json!({ "filesystem": a });
    let fssreq = json!({ "filesystems": [a, fs("pool/b")] });
    let sends = json!({ "requests": [send.clone(), to_value(send_request(Some(4), 6)).unwrap()] });
    let converge = json!({ "requests": [{
        "filesystem": a, "common": snap("s2", 2), "held": [snap("s1", 1)], "bookmarks": [],
        "replication": to_value(zrepl_protocol::ReplicationConfig::default()).unwrap(),
    }]});
    let destroy = json!({ "filesystem": a, "snapshots": [snap("s1", 1), snap("s2", 2)] });
    let per_method: Vec<(&str, serde_json::Value)> = vec![
        (method::PING, json!({ "message": "hello" })),
        (method::LIST_FILESYSTEMS, json!({})),
        (method::LIST_VERSIONS, fsreq.clone()),
        (method::LIST_VERSIONS_MANY, fssreq.clone()),
        (method::DESTROY_SNAPSHOTS, destroy),
        (method::REPLICATION_CURSOR, fsreq),
        (method::REPLICATION_CURSORS, fssreq),
        (method::SEND_DRY, send.clone()),
        (method::SEND, send.clone()),
        (method::SEND_COMPLETED, send.clone()),
        (method::PREPARE_SENDS, sends.clone()),
        (method::SENDS_COMPLETED, sends.clone()),
        (method::CONVERGE, converge),
    ];
    let mut out = Vec::new();
    for (name, m) in &per_method {
        let mut s = vec![0u8];
        req(&mut s, name, script::TRAILER_OK, m);
        out.push((format!("h2-{name}"), s));
    }
    let mut round = vec![0u8];
    req(&mut round, method::LIST_FILESYSTEMS, 0, &json!({}));
    req(&mut round, method::PREPARE_SENDS, 0, &sends);
    req(&mut round, method::SEND, ZSTD_ALWAYS | ZSTD_LEVEL, &send);
    req(&mut round, method::SEND, script::SPLIT, &send_fails);
    req(&mut round, method::SENDS_COMPLETED, 0, &sends);
    out.push(("h2-round".into(), round));
    let mut auto = vec![4u8];
    req(&mut auto, method::SEND, ZSTD_AUTO, &send);
    req(
        &mut auto,
        method::PING,
        script::TRAILER_NONE,
        &json!({ "message": "x" }),
    );
    out.push(("h2-send-auto-cut".into(), auto));

    let stream_req = |accept: Option<&str>, message: &serde_json::Value| {
        let r =
            json!({ "method": "send", "message": message, "accept_zstd": accept, "zstd_level": 3 });
        let mut s = vec![3u8];
        s.extend(script::frame(script::REQUEST, r.to_string().as_bytes()));
        s.extend(script::frame(script::KEEPALIVE, &[]));
        s
    };
    out.push(("sc-send".into(), stream_req(None, &send)));
    out.push(("sc-send-zstd".into(), stream_req(Some("always"), &send)));
    out.push((
        "sc-send-fails".into(),
        stream_req(Some("auto"), &send_fails),
    ));
    out
}
