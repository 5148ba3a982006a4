//! Writes the committed seed corpus, `fuzz/seeds/<target>/<name>`: real inputs for every
//! target (the configs of docs/examples, resume tokens from the decoder's tests, zfs stream
//! headers, HTTP/2 and stream-connection requests captured from our own client, well-behaved
//! replies, captured `zfs` output and messages). From `fuzz/`: `cargo run --example seeds`.
//! zrepl's own sample configs are not copied (their README asks not to): `tools/fuzz.sh` adds
//! `../shared/zrepl-samples` (or `ZREPL_SAMPLES_DIR`) to the config target's corpus when present.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWrite;
use zrepl_fuzz::mock::{fs, snap, NullReceiver};
use zrepl_fuzz::script::{self, ScriptBody};
use zrepl_rpc::handshake::{self, Banner};

type Seeds = Vec<(String, Vec<u8>)>;

fn main() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let repo = here.parent().expect("fuzz/ is in the repository");
    let out = here.join("seeds");
    let targets: Vec<(&str, Seeds)> = vec![
        ("config", config(&repo.join("docs/examples"))),
        ("resume_token", resume_tokens(repo)),
        ("send_stream_header", stream_headers()),
        ("wire", wire()),
        ("sender_dispatch", zrepl_fuzz::sender_dispatch::seeds()),
        ("client", zrepl_fuzz::client::seeds()),
        ("zfs_output", zrepl_fuzz::zfs_output::seeds()),
    ];
    for (target, seeds) in targets {
        let dir = out.join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create seed dir");
        assert!(!seeds.is_empty(), "{target}: no seeds");
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).expect("write seed");
        }
        println!("{target}: {} seeds", seeds.len());
    }
}

fn yml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            yml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
}

fn config(examples: &Path) -> Seeds {
    let mut files = Vec::new();
    yml_files(examples, &mut files);
    assert!(!files.is_empty(), "no configs in {}", examples.display());
    files.sort();
    files
        .iter()
        .map(|p| {
            let name = p.strip_prefix(examples).unwrap().to_string_lossy();
            (
                name.replace('/', "-"),
                std::fs::read(p).expect("read config"),
            )
        })
        .collect()
}

/// The real tokens in the decoder's tests (`token: "1-..."`).
fn resume_tokens(repo: &Path) -> Seeds {
    let src = std::fs::read_to_string(repo.join("crates/zrepl-zfs-types/src/resume_token.rs"))
        .expect("resume_token.rs");
    let mut out = Vec::new();
    for (i, part) in src.split("token: \"").skip(1).enumerate() {
        let t = &part[..part.find('"').expect("closing quote")];
        if t.starts_with("1-") {
            out.push((format!("token-{i}"), t.as_bytes().to_vec()));
        }
    }
    out
}

/// A `DRR_BEGIN` record (see `zrepl_zfs::parse_send_begin`).
fn begin(little: bool, hdrtype: u64, payload: u32, to: u64, from: u64, name: &str) -> Vec<u8> {
    let mut b = vec![0u8; zrepl_zfs::SEND_BEGIN_LEN];
    let put64 = |b: &mut Vec<u8>, at: usize, v: u64| {
        let x = if little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        b[at..at + 8].copy_from_slice(&x);
    };
    let put32 = |b: &mut Vec<u8>, at: usize, v: u32| {
        let x = if little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        b[at..at + 4].copy_from_slice(&x);
    };
    put32(&mut b, 0, 0); // DRR_BEGIN
    put32(&mut b, 4, payload);
    put64(&mut b, 8, 0x2_f5ba_cbac);
    put64(&mut b, 16, hdrtype | (17 << 2)); // header type, feature flags
    put64(&mut b, 24, 1_700_000_000);
    put32(&mut b, 32, 2); // DMU_OST_ZFS
    put64(&mut b, 40, to);
    put64(&mut b, 48, from);
    b[56..56 + name.len()].copy_from_slice(name.as_bytes());
    b
}

fn stream_headers() -> Seeds {
    let full = begin(true, 1, 0, 0xe175_b5b7_dde1_a7d7, 0, "pool/a@s1");
    let incr_be = begin(false, 1, 0, 22, 11, "pool/a b@zrepl_20251201_000000_000");
    // Compound (`zfs send -p`): BEGIN with a properties payload, END, then the substream's BEGIN.
    let nvlist = b"\x00\x01\x00\x00properties";
    let mut compound = begin(true, 2, nvlist.len() as u32, 0, 0, "pool/a@s2");
    compound.extend_from_slice(nvlist);
    let mut end = vec![0u8; zrepl_zfs::SEND_BEGIN_LEN];
    end[..4].copy_from_slice(&5u32.to_le_bytes());
    compound.extend(end);
    compound.extend(begin(true, 1, 0, 33, 22, "pool/a@s2"));
    let mut with_data = full.clone();
    with_data.extend_from_slice(&[7u8; 64]);
    vec![
        ("full-le".into(), full),
        ("incremental-be".into(), incr_be),
        ("compound".into(), compound),
        ("full-then-records".into(), with_data),
    ]
}

/// Records what our client writes.
struct Recorder<T> {
    inner: T,
    log: Arc<Mutex<Vec<u8>>>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Recorder<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Recorder<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = r {
            self.log.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The HTTP/2 bytes (after the preface) of `requests` to a real `serve_receiver`.
fn capture_h2(requests: Vec<(&str, Vec<u8>, Option<&'static str>)>) -> Vec<u8> {
    zrepl_fuzz::runtime().block_on(async move {
        let (mut c, s) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(zrepl_rpc::serve_receiver(
            s,
            Arc::new(NullReceiver),
            zrepl_rpc::ServeOptions::default(),
        ));
        handshake::exchange(&mut c, Duration::ZERO).await.unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let rec = Recorder {
            inner: c,
            log: log.clone(),
        };
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake::<_, ScriptBody>(TokioIo::new(rec))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        for (method, body, encoding) in requests {
            let mut r = http::Request::post(format!("http://zrepl/v1/{method}"));
            if let Some(e) = encoding {
                r = r.header(zrepl_rpc::wire::HDR_ENCODING, e);
            }
            let req = r.body(script::body(0, &body)).unwrap();
            send.ready().await.unwrap();
            let resp = send.send_request(req).await.unwrap();
            let _ = resp.into_body().collect().await;
        }
        drop(send);
        let _ = conn.await;
        let _ = srv.await;
        let log = log.lock().unwrap().clone();
        assert!(log.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        log[24..].to_vec()
    })
}

fn wire() -> Seeds {
    use serde_json::json;
    let recv = zrepl_protocol::ReceiveRequest {
        intermediates: Vec::new(),
        filesystem: fs("pool/a"),
        to: snap("s2", 2),
        clear_resume_token: false,
        replication: Default::default(),
        from: Some(snap("s1", 1)),
        deferred: true,
    };
    let recv_json = serde_json::to_vec(&recv).unwrap();
    let listing = capture_h2(vec![
        ("list_filesystems", b"{}".to_vec(), None),
        (
            "list_versions_many",
            json!({ "filesystems": ["pool/a"] })
                .to_string()
                .into_bytes(),
            None,
        ),
    ]);
    let receive = capture_h2(vec![(
        "receive",
        script::framed(&recv_json, b"zfs stream bytes"),
        Some("identity"),
    )]);
    let completed = capture_h2(vec![(
        "receives_completed",
        json!({ "requests": [recv] }).to_string().into_bytes(),
        None,
    )]);
    let mut out: Seeds = vec![
        (
            "banner-ours".into(),
            [&[0u8][..], &Banner::ours().encode()[11..]].concat(),
        ),
        (
            "banner-zrepl".into(),
            b"\x00ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\n".to_vec(),
        ),
    ];
    for (name, h2) in [
        ("h2-listing", listing),
        ("h2-receive", receive),
        ("h2-receives-completed", completed),
    ] {
        out.push((name.into(), [&[1u8][..], &h2].concat()));
    }
    let sreq = json!({ "method": "receive", "message": recv, "encoding": "identity" });
    let mut sc = vec![3u8];
    sc.extend(script::frame(script::REQUEST, sreq.to_string().as_bytes()));
    sc.extend(script::frame(script::DATA, b"zfs stream bytes"));
    sc.extend(script::frame(script::END, &[]));
    out.push(("sc-receive".into(), sc));
    let mut aborted = vec![3u8];
    aborted.extend(script::frame(script::REQUEST, sreq.to_string().as_bytes()));
    aborted.extend(script::frame(script::DATA, b"zfs"));
    aborted.extend(script::frame(
        script::ABORT,
        b"zfs send exited with status 1",
    ));
    out.push(("sc-receive-aborted".into(), aborted));
    out
}
