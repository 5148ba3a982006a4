//! `zrepl_rpc::Client` reading a malicious server: every byte the server sends is the fuzz
//! input's.
//!
//! Input: a flags byte, then
//! - flags bit 7: the server's version banner as raw bytes (then the connection ends);
//! - otherwise up to 16 operations `op | status | flags | chunk`: the client calls
//!   `OPS[op % len]`, and the server answers the next request it gets (HTTP/2) with status 200
//!   (500 when `status % 16 == 15`), the `zrepl-encoding` header of flags bits 0-1 (none,
//!   identity, zstd, bogus) and the body of flags bits 2-5 and the chunk ([`crate::script`]);
//!   a stream connection (`send`, `receive` when the banner offers `stream-conn`) gets the chunk
//!   as the raw bytes after the handshake; answer flags bit 6 adds `zrepl-reply-parts: 1` (a
//!   list reply in parts, PROTOCOL.md §4b). The server's banner offers `stream-conn` (flags bit
//!   0), `zstd` (bit 1) and `parts` (bit 6); the client's options come from bits 2-5.
//!
//! Properties: the client never panics, never hangs (its timeouts run on the paused clock) and
//! reads no more than its limits allow; every call ends with a result.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use zrepl_protocol::{
    ConvergeRequest, EndpointError, ReceiveRequest, Receiver, ReplicationConfig, SendResponse,
    Sender,
};
use zrepl_rpc::handshake::{self, Banner, PROTOCOL_VERSION};
use zrepl_rpc::wire::Reply;
use zrepl_rpc::{Client, ClientConn as Conn, ClientOptions, Compression, Dialer};

use crate::input::{chunk, Input};
use crate::mock::{fs, send_request, snap};
use crate::script;

pub const OPS: &[&str] = &[
    "ping",
    "sender.list_filesystems",
    "list_versions",
    "list_versions_many",
    "send_dry",
    "send",
    "send_completed",
    "replication_cursor",
    "replication_cursors",
    "prepare_sends",
    "sends_completed",
    "sender.converge",
    "destroy_snapshots",
    "receiver.list_filesystems",
    "receive",
    "receives_completed",
    "receiver.converge",
];

pub const OFFER_STREAM_CONN: u8 = 1;
pub const OFFER_ZSTD: u8 = 2;
pub const CLIENT_ZSTD_ALWAYS: u8 = 4;
pub const CLIENT_ZSTD_AUTO: u8 = 8;
pub const CLIENT_COMPRESSIBLE: u8 = 0x10;
pub const CLIENT_STREAM_CONN: u8 = 0x20;
pub const OFFER_PARTS: u8 = 0x40;
pub const RAW_BANNER: u8 = 0x80;

pub const ENC_IDENTITY: u8 = 1;
pub const ENC_ZSTD: u8 = 2;
/// Answer flag: the reply is in parts.
pub const REPLY_PARTS: u8 = 0x40;

/// One scripted answer.
struct Answer {
    status: u8,
    flags: u8,
    bytes: Vec<u8>,
}

type Script = Arc<Mutex<VecDeque<Answer>>>;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    crate::runtime().block_on(async move {
        if flags & RAW_BANNER != 0 {
            let banner = input.rest().to_vec();
            let client = client(flags, raw_dialer(banner));
            show("ping", client.ping("fuzz").await);
            return;
        }
        let mut ops = Vec::new();
        let mut answers = VecDeque::new();
        while !input.is_empty() && ops.len() < 16 {
            ops.push(input.byte());
            answers.push_back(Answer {
                status: input.byte(),
                flags: input.byte(),
                bytes: input.chunk().to_vec(),
            });
        }
        let mut exts = Vec::new();
        if flags & OFFER_ZSTD != 0 {
            exts.push(handshake::EXT_ZSTD.to_string());
        }
        if flags & OFFER_PARTS != 0 {
            exts.push(handshake::EXT_PARTS.to_string());
        }
        if flags & OFFER_STREAM_CONN != 0 {
            exts.push(handshake::EXT_STREAM_CONN.to_string());
        }
        let banner = Banner {
            version: PROTOCOL_VERSION,
            extensions: exts,
        }
        .encode();
        let script: Script = Arc::new(Mutex::new(answers));
        let client = client(flags, scripted_dialer(banner, script));
        for op in ops {
            call(&client, op).await;
        }
    });
}

fn client(flags: u8, dial: Dialer) -> Client {
    Client::new(
        "fuzz://server",
        dial,
        ClientOptions {
            compression: if flags & CLIENT_ZSTD_ALWAYS != 0 {
                Compression::Always
            } else if flags & CLIENT_ZSTD_AUTO != 0 {
                Compression::Auto
            } else {
                Compression::Off
            },
            zstd_level: 1,
            local_send_compressible: flags & CLIENT_COMPRESSIBLE != 0,
            dial_timeout: Duration::from_secs(10),
            stream_connections: flags & CLIENT_STREAM_CONN != 0,
            limits: Default::default(),
        },
    )
}

/// Reads everything the client writes until it closes its side.
async fn drain<R: AsyncRead + Unpin>(mut r: R) {
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Every connection: the server writes `bytes`, then closes its side.
fn raw_dialer(bytes: Vec<u8>) -> Dialer {
    Arc::new(move || {
        let bytes = bytes.clone();
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(1 << 16);
            tokio::spawn(async move {
                let (rd, mut wr) = tokio::io::split(server);
                let write = async {
                    let _ = wr.write_all(&bytes).await;
                    let _ = wr.shutdown().await;
                };
                tokio::join!(write, drain(rd));
            });
            Ok(Box::new(client) as Box<dyn Conn>)
        })
    })
}

fn scripted_dialer(banner: Vec<u8>, script: Script) -> Dialer {
    Arc::new(move || {
        let (banner, script) = (banner.clone(), script.clone());
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(1 << 16);
            tokio::spawn(serve(server, banner, script));
            Ok(Box::new(client) as Box<dyn Conn>)
        })
    })
}

/// The scripted server: its banner, the client's, then HTTP/2 or a stream connection.
async fn serve(mut io: DuplexStream, banner: Vec<u8>, script: Script) {
    if io.write_all(&banner).await.is_err() {
        return;
    }
    let mut h = [0u8; 11];
    if io.read_exact(&mut h).await.is_err() {
        return;
    }
    let n = handshake::decode_header(&h).expect("the client's banner");
    let mut b = vec![0u8; n];
    if io.read_exact(&mut b).await.is_err() {
        return;
    }
    let mut first = [0u8; 8];
    if io.read_exact(&mut first).await.is_err() {
        return;
    }
    if &first == script::MAGIC {
        let bytes = next(&script).map(|a| a.bytes).unwrap_or_default();
        let (rd, mut wr) = tokio::io::split(io);
        let write = async {
            let _ = wr.write_all(&bytes).await;
            let _ = wr.shutdown().await;
        };
        tokio::join!(write, drain(rd));
        return;
    }
    let (rd, wr) = tokio::io::split(io);
    let io = Joined {
        rd: std::io::Cursor::new(first.to_vec()).chain(rd),
        wr,
    };
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let answer = next(&script);
        async move {
            // Read (part of) the request body, as a server would before it answers.
            let mut body = req.into_body();
            let mut seen = 0usize;
            while seen < 1 << 20 {
                match body.frame().await {
                    Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            let a = answer.unwrap_or(Answer {
                status: 0,
                flags: script::TRAILER_NONE,
                bytes: Vec::new(),
            });
            let mut resp = http::Response::new(script::body(a.flags, &a.bytes));
            if a.status % 16 == 15 {
                *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            }
            let enc = match a.flags & 3 {
                0 => None,
                ENC_IDENTITY => Some("identity"),
                ENC_ZSTD => Some("zstd"),
                _ => Some("gzip"),
            };
            if let Some(e) = enc {
                resp.headers_mut().insert(
                    zrepl_rpc::wire::HDR_ENCODING,
                    http::HeaderValue::from_static(e),
                );
            }
            if a.flags & REPLY_PARTS != 0 {
                resp.headers_mut().insert(
                    zrepl_rpc::wire::HDR_REPLY_PARTS,
                    http::HeaderValue::from_static("1"),
                );
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn next(script: &Script) -> Option<Answer> {
    script.lock().expect("script lock").pop_front()
}

/// A read half with the bytes already read put back in front, and the write half.
struct Joined<R, W> {
    rd: R,
    wr: W,
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for Joined<R, W> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.rd).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for Joined<R, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.wr).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.wr).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.wr).poll_shutdown(cx)
    }
}

/// A zfs stream as the client hands it on: read in chunks (a decompression bomb must not be
/// collected), at most 64 MiB here.
async fn read_stream(mut s: zrepl_protocol::ByteStream) -> std::io::Result<usize> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        let n = s.read(&mut buf).await?;
        total += n;
        if n == 0 || total > 64 << 20 {
            return Ok(total);
        }
    }
}

fn receive_request(deferred: bool) -> ReceiveRequest {
    ReceiveRequest {
        intermediates: Vec::new(),
        filesystem: fs("pool/a"),
        to: snap("s2", 2),
        clear_resume_token: false,
        replication: ReplicationConfig::default(),
        from: Some(snap("s1", 1)),
        deferred,
    }
}

fn converge_request() -> ConvergeRequest {
    ConvergeRequest {
        filesystem: fs("pool/a"),
        common: snap("s2", 2),
        held: vec![snap("s1", 1)],
        bookmarks: vec![],
        replication: ReplicationConfig::default(),
    }
}

/// With `ZREPL_FUZZ_TRACE` set, prints what each call returned (to see what an input reaches).
fn show<T: std::fmt::Debug>(op: &str, r: T) {
    if std::env::var_os("ZREPL_FUZZ_TRACE").is_some() {
        eprintln!("{op}: {r:?}");
    }
}

async fn call(c: &Client, op: u8) {
    let a = fs("pool/a");
    let fss = [a.clone(), fs("pool/b")];
    let req = send_request(Some(1), 2);
    let reqs = [req.clone(), send_request(Some(2), 3)];
    let name = OPS[op as usize % OPS.len()];
    match name {
        "ping" => show(name, c.ping("fuzz").await),
        "sender.list_filesystems" => show(name, Sender::list_filesystems(c).await),
        "list_versions" => show(name, Sender::list_versions(c, &a).await),
        "list_versions_many" => show(name, Sender::list_versions_many(c, &fss).await),
        "send_dry" => show(name, c.send_dry(&req).await),
        "send" => match c.send(req).await {
            Ok((res, s)) => {
                let read = read_stream(s).await;
                show(name, (res, read));
            }
            Err(e) => show(name, e),
        },
        "send_completed" => show(name, c.send_completed(&req).await),
        "replication_cursor" => show(name, c.replication_cursor(&a).await),
        "replication_cursors" => show(name, c.replication_cursors(&fss).await),
        "prepare_sends" => show(name, c.prepare_sends(&reqs).await),
        "sends_completed" => show(name, c.sends_completed(&reqs).await),
        "sender.converge" => show(name, Sender::converge(c, &[converge_request()]).await),
        "destroy_snapshots" => show(
            name,
            Sender::destroy_snapshots(c, &a, &[snap("s1", 1), snap("s2", 2)]).await,
        ),
        "receiver.list_filesystems" => show(name, Receiver::list_filesystems(c).await),
        "receive" => {
            let stream = Box::pin(std::io::Cursor::new(b"a zfs stream".to_vec()));
            show(name, c.receive(receive_request(true), stream).await)
        }
        "receives_completed" => show(name, c.receives_completed(&[receive_request(true)]).await),
        "receiver.converge" => show(name, Receiver::converge(c, &[converge_request()]).await),
        other => unreachable!("{other}"),
    }
}

fn op(out: &mut Vec<u8>, name: &str, flags: u8, bytes: &[u8]) {
    out.push(OPS.iter().position(|o| *o == name).expect("known op") as u8);
    out.push(0);
    out.push(flags);
    chunk(out, bytes);
}

fn ok<T: serde::Serialize>(v: T) -> Vec<u8> {
    serde_json::to_vec(&Reply::Ok(v)).expect("serializes")
}

/// Seeds: a well-behaved server's answer to every operation, on HTTP/2 and on stream
/// connections, and some banners.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use serde_json::json;
    let versions = vec![snap("s1", 1), snap("s2", 2)];
    let res = SendResponse {
        used_resume_token: false,
        expected_size: 12,
    };
    // Batched replies: one serde `Result` per request inside the `Reply`.
    type R<T> = Result<T, EndpointError>;
    let unit_results = || ok(vec![R::Ok(()), Err(EndpointError::zfs("dataset is busy"))]);
    let answers: Vec<(&str, u8, Vec<u8>)> = vec![
        ("ping", 0, ok("fuzz")),
        (
            "sender.list_filesystems",
            0,
            ok(json!([{ "path": "pool/a", "is_placeholder": false, "resume_token": null }])),
        ),
        ("list_versions", 0, ok(&versions)),
        (
            "list_versions_many",
            0,
            ok(vec![
                R::Ok(versions.clone()),
                Err(EndpointError::not_found("no such filesystem")),
            ]),
        ),
        ("send_dry", 0, ok(4096u64)),
        ("send_completed", 0, ok(())),
        ("replication_cursor", 0, ok(Some(snap("s1", 1)))),
        (
            "replication_cursors",
            0,
            ok(vec![R::Ok(Some(snap("s1", 1))), Ok(None)]),
        ),
        ("prepare_sends", 0, ok(())),
        ("sends_completed", 0, unit_results()),
        ("sender.converge", 0, ok(vec![R::Ok(())])),
        (
            "destroy_snapshots",
            0,
            ok(json!([{ "snapshot": "s1", "error": null }, { "snapshot": "s2", "error": "busy" }])),
        ),
        ("receiver.list_filesystems", 0, ok(json!([]))),
        ("receives_completed", 0, unit_results()),
        ("receiver.converge", 0, ok(vec![R::Ok(())])),
    ];
    let mut out = Vec::new();
    for (name, flags, m) in &answers {
        let mut s = vec![0u8];
        op(&mut s, name, *flags, &script::framed(m, &[]));
        out.push((format!("h2-{name}"), s));
    }
    // Lists in parts (PROTOCOL.md §4b): the message's list empty, the items in frames.
    let part = |items: serde_json::Value| {
        let j = items.to_string().into_bytes();
        let mut f = (j.len() as u32).to_be_bytes().to_vec();
        f.extend(j);
        f
    };
    let empty = ok(json!([]));
    let mut p = vec![OFFER_PARTS];
    let many = [
        part(json!([{ "versions": { "index": 0, "versions": [snap("s1", 1)] } }])),
        part(json!([
            { "versions": { "index": 0, "versions": [snap("s2", 2)] } },
            { "error": { "index": 1, "error": EndpointError::not_found("no such filesystem") } }
        ])),
    ]
    .concat();
    op(
        &mut p,
        "list_versions_many",
        REPLY_PARTS,
        &script::framed(&empty, &many),
    );
    let vs = [part(json!([snap("s1", 1)])), part(json!([snap("s2", 2)]))].concat();
    op(
        &mut p,
        "list_versions",
        REPLY_PARTS,
        &script::framed(&empty, &vs),
    );
    let destroyed =
        part(json!([{ "snapshot": "s1", "error": null }, { "snapshot": "s2", "error": "busy" }]));
    op(
        &mut p,
        "destroy_snapshots",
        REPLY_PARTS,
        &script::framed(&empty, &destroyed),
    );
    op(&mut p, "prepare_sends", 0, &script::framed(&ok(()), &[]));
    let results = part(json!([{ "Ok": null }, { "Err": EndpointError::zfs("dataset is busy") }]));
    op(
        &mut p,
        "sends_completed",
        REPLY_PARTS,
        &script::framed(&empty, &results),
    );
    out.push(("h2-parts".into(), p));
    // Sends and receives inside HTTP/2.
    let mut s = vec![OFFER_ZSTD];
    op(
        &mut s,
        "send",
        ENC_IDENTITY,
        &script::framed(&ok(&res), b"zfs stream bytes"),
    );
    op(&mut s, "receive", 0, &script::framed(&ok(()), &[]));
    op(
        &mut s,
        "send",
        ENC_IDENTITY | script::TRAILER_ERR,
        &script::framed(&ok(&res), b"partial"),
    );
    out.push(("h2-send-receive".into(), s));
    let mut z = vec![OFFER_ZSTD | CLIENT_ZSTD_ALWAYS];
    let compressed = zstd_frame(b"zfs stream bytes, compressed");
    op(
        &mut z,
        "send",
        ENC_ZSTD,
        &script::framed(&ok(&res), &compressed),
    );
    op(&mut z, "receive", 0, &script::framed(&ok(()), &[]));
    out.push(("h2-send-zstd".into(), z));
    // Stream connections.
    let reply = json!({ "result": { "ok": res }, "encoding": "identity" }).to_string();
    let mut sc = Vec::new();
    sc.extend(script::frame(script::KEEPALIVE, &[]));
    sc.extend(script::frame(script::REPLY, reply.as_bytes()));
    sc.extend(script::frame(script::DATA, b"zfs stream bytes"));
    sc.extend(script::frame(script::KEEPALIVE, &[]));
    sc.extend(script::frame(script::END, &[]));
    let mut aborted = Vec::new();
    aborted.extend(script::frame(script::REPLY, reply.as_bytes()));
    aborted.extend(script::frame(script::DATA, b"zfs"));
    aborted.extend(script::frame(
        script::ABORT,
        b"zfs send exited with status 1",
    ));
    let mut recv = Vec::new();
    recv.extend(script::frame(script::KEEPALIVE, &[]));
    recv.extend(script::frame(script::REPLY, &ok(())));
    let mut s = vec![OFFER_STREAM_CONN | OFFER_ZSTD | CLIENT_STREAM_CONN];
    op(
        &mut s,
        "list_versions",
        0,
        &script::framed(&ok(&versions), &[]),
    );
    op(&mut s, "send", 0, &sc);
    op(&mut s, "send", 0, &aborted);
    op(&mut s, "receive", 0, &recv);
    out.push(("sc-send-receive".into(), s));
    let zreply = json!({ "result": { "ok": res }, "encoding": "zstd" }).to_string();
    let mut zs = Vec::new();
    zs.extend(script::frame(script::REPLY, zreply.as_bytes()));
    zs.extend(script::frame(script::DATA, &compressed));
    zs.extend(script::frame(script::END, &[]));
    let mut s = vec![OFFER_STREAM_CONN | OFFER_ZSTD | CLIENT_STREAM_CONN | CLIENT_ZSTD_ALWAYS];
    op(&mut s, "send", 0, &zs);
    out.push(("sc-send-zstd".into(), s));
    // Banners: ours, zrepl 0.7's, an empty one and a refusal.
    for (name, b) in [
        ("banner-ours", Banner::ours().encode()),
        (
            "banner-zrepl",
            b"0000000056 ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\n".to_vec(),
        ),
        ("banner-empty", Vec::new()),
        (
            "banner-refusing",
            Banner::refusing("too many connections from this client").encode(),
        ),
    ] {
        let mut s = vec![RAW_BANNER];
        s.extend(b);
        out.push((name.into(), s));
    }
    out
}

/// A zstd frame of `data`, made by the crate's own decoder's counterpart.
fn zstd_frame(data: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::ZstdEncoder;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut e = ZstdEncoder::new(data);
        let mut out = Vec::new();
        e.read_to_end(&mut out).await.expect("in-memory zstd");
        out
    })
}
