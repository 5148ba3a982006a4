//! The protocol end to end over in-memory pipes: mock endpoints on both sides.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zrepl_protocol::{
    ByteStream, DestroyResult, EndpointError, ErrorKind, FilesystemInfo, ReceiveRequest, Receiver,
    ReplicationConfig, SendRequest, SendResponse, Sender,
};
use zrepl_rpc::{serve_receiver, serve_sender, Client, ClientOptions, Compression, ServeOptions};
use zrepl_zfs_types::{DatasetPath, FilesystemVersion, VersionType};

fn fs(s: &str) -> DatasetPath {
    DatasetPath::parse(s).unwrap()
}

fn snap(name: &str, guid: u64) -> FilesystemVersion {
    FilesystemVersion {
        typ: VersionType::Snapshot,
        name: name.into(),
        guid,
        createtxg: guid,
        creation: 1_700_000_000,
        userrefs: None,
    }
}

/// A sender whose stream is `data` (optionally failing after it).
struct MockSender {
    data: Vec<u8>,
    fail_after: bool,
    completed: Mutex<Vec<String>>,
}

impl Sender for MockSender {
    async fn list_filesystems(&self) -> zrepl_protocol::Result<Vec<FilesystemInfo>> {
        Ok(vec![FilesystemInfo {
            path: fs("pool/a"),
            is_placeholder: false,
            resume_token: None,
        }])
    }
    async fn list_versions(
        &self,
        f: &DatasetPath,
    ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
        if f.to_string() != "pool/a" {
            return Err(EndpointError::invalid(format!(
                "endpoint does not allow access to filesystem {f}"
            )));
        }
        Ok(vec![snap("s1", 1), snap("s2", 2)])
    }
    async fn send_dry(&self, _: &SendRequest) -> zrepl_protocol::Result<u64> {
        Ok(self.data.len() as u64)
    }
    async fn send(&self, _: SendRequest) -> zrepl_protocol::Result<(SendResponse, ByteStream)> {
        let s: ByteStream = if self.fail_after {
            Box::pin(tokio::io::AsyncReadExt::chain(
                std::io::Cursor::new(self.data.clone()),
                Failing,
            ))
        } else {
            Box::pin(std::io::Cursor::new(self.data.clone()))
        };
        Ok((
            SendResponse {
                used_resume_token: false,
                expected_size: self.data.len() as u64,
            },
            s,
        ))
    }
    async fn send_completed(&self, r: &SendRequest) -> zrepl_protocol::Result<()> {
        self.completed.lock().unwrap().push(r.to.name.clone());
        Ok(())
    }
    async fn prepare_sends(&self, reqs: &[SendRequest]) -> zrepl_protocol::Result<()> {
        self.completed
            .lock()
            .unwrap()
            .push(format!("prepared {}", reqs.len()));
        Ok(())
    }
    async fn converge(
        &self,
        reqs: &[zrepl_protocol::ConvergeRequest],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<()>>> {
        let mut c = self.completed.lock().unwrap();
        Ok(reqs
            .iter()
            .map(|r| {
                c.push(format!("converge {}@{}", r.filesystem, r.common.name));
                if r.filesystem.to_string() == "pool/a" {
                    Ok(())
                } else {
                    Err(EndpointError::invalid("not allowed"))
                }
            })
            .collect())
    }
    async fn replication_cursor(
        &self,
        _: &DatasetPath,
    ) -> zrepl_protocol::Result<Option<FilesystemVersion>> {
        Ok(Some(snap("cursor", 7)))
    }
    async fn destroy_snapshots(
        &self,
        _: &DatasetPath,
        s: &[FilesystemVersion],
    ) -> zrepl_protocol::Result<Vec<DestroyResult>> {
        Ok(s.iter()
            .map(|v| DestroyResult {
                snapshot: v.name.clone(),
                error: None,
            })
            .collect())
    }
}

/// An AsyncRead that fails: a `zfs send` dying mid-stream.
struct Failing;
impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::other("zfs send exited with status 1")))
    }
}

type Received = Vec<(ReceiveRequest, Result<Vec<u8>, String>)>;

/// A receiver recording what it got.
#[derive(Default)]
struct MockReceiver {
    got: Mutex<Received>,
    completed: Mutex<Vec<ReceiveRequest>>,
    converged: Mutex<Vec<zrepl_protocol::ConvergeRequest>>,
}

impl Receiver for MockReceiver {
    async fn list_filesystems(&self) -> zrepl_protocol::Result<Vec<FilesystemInfo>> {
        Ok(vec![])
    }
    async fn list_versions(
        &self,
        _: &DatasetPath,
    ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
        Err(EndpointError::not_found("no such filesystem"))
    }
    async fn receive(&self, req: ReceiveRequest, mut s: ByteStream) -> zrepl_protocol::Result<()> {
        let mut buf = Vec::new();
        let r = s
            .read_to_end(&mut buf)
            .await
            .map(|_| buf)
            .map_err(|e| e.to_string());
        let out = r.clone();
        self.got.lock().unwrap().push((req, r));
        out.map(|_| ()).map_err(EndpointError::zfs)
    }
    async fn converge(
        &self,
        reqs: &[zrepl_protocol::ConvergeRequest],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<()>>> {
        self.converged.lock().unwrap().extend(reqs.iter().cloned());
        Ok(reqs.iter().map(|_| Ok(())).collect())
    }
    async fn receives_completed(
        &self,
        reqs: &[ReceiveRequest],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<()>>> {
        self.completed.lock().unwrap().extend(reqs.iter().cloned());
        Ok(reqs
            .iter()
            .map(|r| match r.to.name.as_str() {
                "bad" => Err(EndpointError::invalid(
                    "received snapshot has the wrong guid",
                )),
                _ => Ok(()),
            })
            .collect())
    }
    async fn destroy_snapshots(
        &self,
        _: &DatasetPath,
        _: &[FilesystemVersion],
    ) -> zrepl_protocol::Result<Vec<DestroyResult>> {
        Ok(vec![])
    }
}

fn opts(c: Compression) -> ClientOptions {
    ClientOptions {
        compression: c,
        zstd_level: 3,
        local_send_compressible: true,
        dial_timeout: Duration::from_secs(5),
        stream_connections: true,
        limits: Default::default(),
    }
}

/// A client whose every dial is a new in-memory connection to `serve`.
fn client<F, Fut>(o: ClientOptions, serve: F) -> Client
where
    F: Fn(tokio::io::DuplexStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    Client::new(
        "mock",
        Arc::new(move || {
            let (a, b) = tokio::io::duplex(1 << 20);
            tokio::spawn(serve(b));
            Box::pin(async move { Ok(Box::new(a) as Box<dyn zrepl_rpc::ClientConn>) })
        }),
        o,
    )
}

fn sender_client(data: Vec<u8>, fail_after: bool, c: Compression) -> (Client, Arc<MockSender>) {
    let ep = Arc::new(MockSender {
        data,
        fail_after,
        completed: Mutex::new(vec![]),
    });
    let e = ep.clone();
    let cl = client(opts(c), move |io| {
        let e = e.clone();
        async move {
            let _ = serve_sender(
                io,
                e,
                ServeOptions {
                    send_compressible: true,
                    handshake_timeout: Duration::from_secs(5),
                    ..Default::default()
                },
            )
            .await;
        }
    });
    (cl, ep)
}

fn receiver_client(c: Compression) -> (Client, Arc<MockReceiver>) {
    let ep = Arc::new(MockReceiver::default());
    let e = ep.clone();
    let cl = client(opts(c), move |io| {
        let e = e.clone();
        async move {
            let _ = serve_receiver(io, e, ServeOptions::default()).await;
        }
    });
    (cl, ep)
}

fn send_req() -> SendRequest {
    SendRequest {
        intermediates: Vec::new(),
        filesystem: fs("pool/a"),
        from: Some(snap("s1", 1)),
        to: snap("s2", 2),
        resume_token: None,
        replication: ReplicationConfig::default(),
    }
}

fn recv_req() -> ReceiveRequest {
    ReceiveRequest {
        intermediates: Vec::new(),
        filesystem: fs("pool/a"),
        to: snap("s2", 2),
        clear_resume_token: false,
        replication: ReplicationConfig::default(),
        from: None,
        deferred: false,
    }
}

fn data(n: usize, compressible: bool) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..n)
        .map(|i| {
            if compressible {
                (i % 251) as u8 / 16
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

#[tokio::test]
async fn control_rpcs_round_trip() {
    let (c, ep) = sender_client(vec![], false, Compression::Off);
    assert_eq!(c.ping("hello").await.unwrap(), "hello");
    let l = Sender::list_filesystems(&c).await.unwrap();
    assert_eq!(l[0].path.to_string(), "pool/a");
    let v = Sender::list_versions(&c, &fs("pool/a")).await.unwrap();
    assert_eq!(v, vec![snap("s1", 1), snap("s2", 2)]);
    let e = Sender::list_versions(&c, &fs("pool/b")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(e.message.contains("does not allow access"), "{e}");
    assert_eq!(
        c.replication_cursor(&fs("pool/a")).await.unwrap(),
        Some(snap("cursor", 7))
    );
    c.send_completed(&send_req()).await.unwrap();
    assert_eq!(*ep.completed.lock().unwrap(), vec!["s2".to_string()]);
    let d = Sender::destroy_snapshots(&c, &fs("pool/a"), &[snap("s1", 1)])
        .await
        .unwrap();
    assert_eq!(d[0].snapshot, "s1");
    // A sender refuses receiver methods.
    let e = c
        .receive(recv_req(), Box::pin(std::io::Cursor::new(vec![])))
        .await
        .unwrap_err();
    assert!(e.message.contains("unknown method"), "{e}");
}

#[tokio::test]
async fn batched_round_rpcs_round_trip() {
    let (c, ep) = sender_client(vec![1, 2, 3], false, Compression::Off);
    // One entry per filesystem; a refused filesystem is its own error, not the call's.
    let got = Sender::list_versions_many(&c, &[fs("pool/a"), fs("pool/b")])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].as_ref().unwrap(),
        &vec![snap("s1", 1), snap("s2", 2)]
    );
    assert_eq!(got[1].as_ref().unwrap_err().kind, ErrorKind::InvalidRequest);
    let cursors = Sender::replication_cursors(&c, &[fs("pool/a"), fs("pool/b")])
        .await
        .unwrap();
    assert_eq!(cursors.len(), 2);
    assert_eq!(cursors[0].as_ref().unwrap(), &Some(snap("cursor", 7)));
    let mut second = send_req();
    second.from = Some(snap("s2", 2));
    second.to = snap("s3", 3);
    let reqs = vec![send_req(), second];
    Sender::prepare_sends(&c, &reqs).await.unwrap();
    // The server's endpoint has no batched completion: the default completes step by step.
    let done = Sender::sends_completed(&c, &reqs).await.unwrap();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(Result::is_ok));
    assert_eq!(*ep.completed.lock().unwrap(), ["prepared 2", "s2", "s3"]);

    let (rc, rep) = receiver_client(Compression::Off);
    let got = Receiver::list_versions_many(&rc, &[fs("pool/a")])
        .await
        .unwrap();
    assert_eq!(got[0].as_ref().unwrap_err().kind, ErrorKind::NotFound);
    let mut good = recv_req();
    good.from = Some(snap("s1", 1));
    good.deferred = true;
    let mut bad = good.clone();
    bad.to = snap("bad", 3);
    let res = Receiver::receives_completed(&rc, &[good.clone(), bad.clone()])
        .await
        .unwrap();
    assert!(res[0].is_ok());
    assert_eq!(res[1].as_ref().unwrap_err().kind, ErrorKind::InvalidRequest);
    // The new fields cross the wire.
    assert_eq!(*rep.completed.lock().unwrap(), [good, bad]);

    // `converge` on both sides: one result per request, a refused filesystem is its own error,
    // and every field crosses the wire.
    let creq = |f: &str| zrepl_protocol::ConvergeRequest {
        filesystem: fs(f),
        common: snap("s2", 2),
        held: vec![snap("s1", 1)],
        bookmarks: vec![snap("cursor", 7)],
        replication: Default::default(),
    };
    let res = Sender::converge(&c, &[creq("pool/a"), creq("pool/b")])
        .await
        .unwrap();
    assert!(res[0].is_ok());
    assert_eq!(res[1].as_ref().unwrap_err().kind, ErrorKind::InvalidRequest);
    assert!(ep.completed.lock().unwrap().ends_with(&[
        "converge pool/a@s2".to_string(),
        "converge pool/b@s2".to_string()
    ]));
    let res = Receiver::converge(&rc, &[creq("pool/a")]).await.unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(*rep.converged.lock().unwrap(), [creq("pool/a")]);
}

#[tokio::test]
async fn send_streams_arrive_intact_with_and_without_zstd() {
    for (comp, compressible) in [
        (Compression::Off, false),
        (Compression::Auto, true),
        (Compression::Always, false),
    ] {
        let d = data(5 << 20, compressible);
        let (c, _) = sender_client(d.clone(), false, comp);
        let (res, mut s) = c.send(send_req()).await.unwrap();
        assert_eq!(res.expected_size, d.len() as u64);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert!(got == d, "{comp:?}: stream differs");
    }
}

#[tokio::test]
async fn receive_streams_arrive_intact_with_and_without_zstd() {
    for comp in [Compression::Off, Compression::Auto, Compression::Always] {
        let d = data(3 << 20, true);
        let (c, ep) = receiver_client(comp);
        c.receive(recv_req(), Box::pin(std::io::Cursor::new(d.clone())))
            .await
            .unwrap();
        let got = ep.got.lock().unwrap();
        assert_eq!(got[0].0, recv_req());
        assert!(got[0].1.as_ref().unwrap() == &d);
    }
}

#[tokio::test]
async fn accept_tells_the_control_connection_from_stream_connections() {
    let ep = Arc::new(MockReceiver::default());
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let (e, k) = (ep.clone(), kinds.clone());
    let c = client(opts(Compression::Off), move |io| {
        let (e, k) = (e.clone(), k.clone());
        async move {
            let a = zrepl_rpc::accept(io, ServeOptions::default())
                .await
                .unwrap();
            k.lock().unwrap().push(a.is_control());
            let _ = a.serve_receiver(e).await;
        }
    });
    Receiver::list_filesystems(&c).await.unwrap();
    c.receive(recv_req(), Box::pin(std::io::Cursor::new(vec![7u8; 1000])))
        .await
        .unwrap();
    c.receives_completed(&[recv_req()]).await.unwrap();
    c.receive(recv_req(), Box::pin(std::io::Cursor::new(vec![8u8; 1000])))
        .await
        .unwrap();
    // One control connection (all RPCs but the streams), one stream connection per receive.
    assert_eq!(*kinds.lock().unwrap(), [true, false, false]);
    assert_eq!(ep.got.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_failing_producer_is_an_error_on_the_consumer_not_a_short_stream() {
    // Sender side fails mid-stream: the client's reader gets the error.
    let (c, _) = sender_client(data(1 << 20, false), true, Compression::Off);
    let (_, mut s) = c.send(send_req()).await.unwrap();
    let mut got = Vec::new();
    let e = s.read_to_end(&mut got).await.unwrap_err();
    assert!(
        e.to_string().contains("zfs send exited with status 1"),
        "{e}"
    );

    // Local producer fails during a push: the remote receiver sees the error and says so.
    let (c, ep) = receiver_client(Compression::Off);
    let s: ByteStream = Box::pin(tokio::io::AsyncReadExt::chain(
        std::io::Cursor::new(vec![1u8; 100_000]),
        Failing,
    ));
    let e = c.receive(recv_req(), s).await.unwrap_err();
    assert!(e.message.contains("zfs send exited with status 1"), "{e}");
    assert!(ep.got.lock().unwrap()[0].1.is_err());
}

#[tokio::test]
async fn many_concurrent_rpcs_share_one_connection() {
    // Control RPCs share one HTTP/2 connection; each zfs stream gets a stream connection of its
    // own (or, without them, shares the HTTP/2 connection too).
    for (stream_connections, want_dials) in [(true, 17), (false, 1)] {
        let dials = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let d2 = dials.clone();
        let ep = Arc::new(MockSender {
            data: data(1 << 20, false),
            fail_after: false,
            completed: Mutex::new(vec![]),
        });
        let c = Arc::new(Client::new(
            "mock",
            Arc::new(move || {
                d2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (a, b) = tokio::io::duplex(1 << 20);
                let ep = ep.clone();
                tokio::spawn(async move {
                    let _ = serve_sender(b, ep, ServeOptions::default()).await;
                });
                Box::pin(async move { Ok(Box::new(a) as Box<dyn zrepl_rpc::ClientConn>) })
            }),
            ClientOptions {
                stream_connections,
                ..opts(Compression::Off)
            },
        ));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let (_, mut s) = c.send(send_req()).await.unwrap();
                let mut n = Vec::new();
                s.read_to_end(&mut n).await.unwrap();
                Sender::list_versions(&*c, &fs("pool/a")).await.unwrap();
                n.len()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1 << 20);
        }
        assert_eq!(
            dials.load(std::sync::atomic::Ordering::SeqCst),
            want_dials,
            "stream connections: {stream_connections}"
        );
    }
}

/// Serves raw bytes of our choosing after the handshake (a hostile or broken peer).
async fn hostile_server(mut io: tokio::io::DuplexStream, after_banner: Vec<u8>, banner: Vec<u8>) {
    let mut h = [0u8; 11];
    if io.read_exact(&mut h).await.is_err() {
        return;
    }
    let n = zrepl_rpc::handshake::decode_header(&h).unwrap();
    let mut b = vec![0u8; n];
    let _ = io.read_exact(&mut b).await;
    let _ = io.write_all(&banner).await;
    let _ = io.write_all(&after_banner).await;
    let mut sink = vec![0u8; 1 << 16];
    while let Ok(n) = io.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

#[tokio::test]
async fn wrong_version_and_garbage_are_clear_errors() {
    let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
        (
            b"0000000056 ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\n".to_vec(),
            vec![],
            "protocol versions do not match",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            vec![],
            "malformed protocol banner",
        ),
        (
            zrepl_rpc::handshake::Banner::ours().encode(),
            b"\x00\x00\x12\x04garbage garbage garbage".to_vec(),
            "mock",
        ),
    ];
    for (banner, after, want) in cases {
        let c = client(opts(Compression::Off), move |io| {
            hostile_server(io, after.clone(), banner.clone())
        });
        let e = c.ping("x").await.unwrap_err();
        assert!(e.message.contains(want), "{want}: {e}");
    }
}

#[tokio::test]
async fn server_refuses_malformed_and_oversized_requests() {
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    type Framed =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>;
    let body = |b: Vec<u8>, trailer: bool| -> Framed {
        let mut frames = vec![Ok(Frame::data(Bytes::from(b)))];
        if trailer {
            let mut t = http::HeaderMap::new();
            t.insert("zrepl-stream-status", http::HeaderValue::from_static("ok"));
            frames.push(Ok(Frame::trailers(t)));
        }
        StreamBody::new(futures::stream::iter(frames))
    };
    // Talk HTTP/2 to the server by hand, sending bodies a client would never send.
    let ep = Arc::new(MockReceiver::default());
    let (mut a, b) = tokio::io::duplex(1 << 20);
    tokio::spawn(serve_receiver(b, ep.clone(), ServeOptions::default()));
    zrepl_rpc::handshake::exchange(&mut a, Duration::from_secs(5))
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, Framed>(hyper_util::rt::TokioIo::new(a))
            .await
            .unwrap();
    tokio::spawn(conn);
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        ("list_filesystems", vec![0, 0], true, "early eof"),
        (
            "list_filesystems",
            vec![0xff, 0xff, 0xff, 0xff],
            true,
            "exceeds the limit",
        ),
        ("list_filesystems", framed(b"{}"), false, "cut off"),
        (
            "list_filesystems",
            [framed(b"{}"), vec![1]].concat(),
            true,
            "unexpected data",
        ),
        (
            "list_versions",
            framed(b"{\"filesystem\": \"../../etc\"}"),
            true,
            "malformed request",
        ),
        (
            "list_versions",
            framed(b"{\"filesystem\": 7}"),
            true,
            "malformed request",
        ),
        (
            "list_versions",
            framed(b"{not json"),
            true,
            "malformed request",
        ),
        ("nope", framed(b"{}"), true, "unknown method"),
        ("receive", framed(b"{}"), true, "malformed request"),
    ];
    for (m, b, trailer, want) in cases {
        let req = http::Request::post(format!("http://zrepl/v1/{m}"))
            .body(body(b, trailer))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        use http_body_util::BodyExt;
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&b[4..]).to_string();
        assert!(
            text.contains("invalid_request") && text.contains(want),
            "{m}: {text}"
        );
    }
    // Requests in parts (PROTOCOL.md §4b) a client would never send.
    let parted: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "converge",
            [framed(b"{\"requests\": []}"), vec![0, 0xff, 0xff, 0xff]].concat(),
            "exceeds the limit",
        ),
        (
            "converge",
            [framed(b"{\"requests\": []}"), framed(b"[{\"x\": 1}]")].concat(),
            "malformed part",
        ),
        (
            "receives_completed",
            [framed(b"{\"requests\": []}"), vec![0, 0, 0, 9, b'[']].concat(),
            "early eof",
        ),
        ("list_filesystems", framed(b"{}"), "takes no parts"),
    ];
    for (m, b, want) in parted {
        let req = http::Request::post(format!("http://zrepl/v1/{m}"))
            .header(zrepl_rpc::wire::HDR_REQUEST_PARTS, "1")
            .body(body(b, true))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        use http_body_util::BodyExt;
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&b[4..]).to_string();
        assert!(
            text.contains("invalid_request") && text.contains(want),
            "{m}: {text}"
        );
    }
    assert!(ep.got.lock().unwrap().is_empty());
    assert!(ep.converged.lock().unwrap().is_empty());
    assert!(ep.completed.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_request_sent_too_slowly_is_refused_at_its_deadline() {
    use bytes::Bytes;
    use hyper::body::Frame;
    // A body that sends half a message, then nothing, forever.
    type Slow = http_body_util::StreamBody<
        futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>,
    >;
    let ep = Arc::new(MockReceiver::default());
    let (mut a, b) = tokio::io::duplex(1 << 20);
    tokio::spawn(serve_receiver(b, ep.clone(), ServeOptions::default()));
    zrepl_rpc::handshake::exchange(&mut a, Duration::from_secs(5))
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake::<_, Slow>(hyper_util::rt::TokioIo::new(a))
            .await
            .unwrap();
    tokio::spawn(conn);
    use futures::StreamExt;
    let half = futures::stream::iter(vec![Ok(Frame::data(Bytes::from(vec![0, 0, 0, 100, b'{'])))])
        .chain(futures::stream::pending())
        .boxed();
    let req = http::Request::post("http://zrepl/v1/list_filesystems")
        .body(http_body_util::StreamBody::new(half))
        .unwrap();
    let start = tokio::time::Instant::now();
    let resp = send.send_request(req).await.unwrap();
    use http_body_util::BodyExt;
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&b[4..]).to_string();
    assert!(text.contains("did not arrive within"), "{text}");
    assert!(start.elapsed() <= zrepl_rpc::wire::REQUEST_DEADLINE + Duration::from_secs(1));
    assert!(ep.got.lock().unwrap().is_empty());
}

fn framed(m: &[u8]) -> Vec<u8> {
    let mut v = (m.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(m);
    v
}

#[tokio::test(start_paused = true)]
async fn a_frozen_peer_is_detected_by_keepalive() {
    // The peer completes the handshake and HTTP/2 setup, then stops answering anything.
    let (c, _) = {
        let c = client(
            opts(Compression::Off),
            |mut io: tokio::io::DuplexStream| async move {
                let mut h = [0u8; 11];
                io.read_exact(&mut h).await.unwrap();
                let mut b = vec![0u8; zrepl_rpc::handshake::decode_header(&h).unwrap()];
                io.read_exact(&mut b).await.unwrap();
                io.write_all(&zrepl_rpc::handshake::Banner::ours().encode())
                    .await
                    .unwrap();
                // Hold the pipe open, never reading or writing again.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(io);
            },
        );
        (c, ())
    };
    let start = tokio::time::Instant::now();
    let e = c.ping("x").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Connectivity, "{e}");
    let took = start.elapsed();
    assert!(took <= Duration::from_secs(30), "detected after {took:?}");
}

/// A `serve_receiver` on a new in-memory connection, after the handshake and the
/// stream-connection magic: the client's end, the server task and its endpoint.
async fn open_stream_connection() -> (
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<Result<(), zrepl_rpc::RpcError>>,
    Arc<MockReceiver>,
) {
    let ep = Arc::new(MockReceiver::default());
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(serve_receiver(b, ep.clone(), ServeOptions::default()));
    a.write_all(&zrepl_rpc::handshake::Banner::ours().encode())
        .await
        .unwrap();
    let mut h = [0u8; 11];
    a.read_exact(&mut h).await.unwrap();
    let mut body = vec![0u8; zrepl_rpc::handshake::decode_header(&h).unwrap()];
    a.read_exact(&mut body).await.unwrap();
    a.write_all(b"ZRSTRM01").await.unwrap();
    (a, server, ep)
}

/// A raw stream connection to `serve_receiver`: handshake, magic, then `frames`; returns what
/// the server wrote back after its banner.
async fn raw_stream_connection(frames: Vec<u8>) -> (Vec<u8>, Arc<MockReceiver>) {
    let (mut a, server, ep) = open_stream_connection().await;
    a.write_all(&frames).await.unwrap();
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), a.read_to_end(&mut back)).await;
    drop(a);
    let _ = server.await;
    (back, ep)
}

fn frame(kind: u8, p: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&(p.len() as u32).to_be_bytes());
    v.extend_from_slice(p);
    v
}

fn stream_request(method: &str, message: serde_json::Value) -> Vec<u8> {
    frame(
        1,
        &serde_json::to_vec(&serde_json::json!({
            "method": method, "message": message, "encoding": "identity"
        }))
        .unwrap(),
    )
}

#[tokio::test]
async fn stream_connections_refuse_malformed_frames_clearly() {
    let recv = serde_json::to_value(recv_req()).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A stream that is not framed as it must be: the endpoint sees an error, never a
        // short stream, and the reply says why.
        (
            [
                stream_request("receive", recv.clone()),
                frame(2, b"abc"),
                vec![2, 0xff, 0xff, 0xff, 0xff],
            ]
            .concat(),
            "DATA of",
        ),
        (
            [
                stream_request("receive", recv.clone()),
                frame(2, b"abc"),
                frame(7, b""),
            ]
            .concat(),
            "unexpected frame kind 7",
        ),
        (
            [
                stream_request("receive", recv.clone()),
                frame(5, b"zfs send died"),
            ]
            .concat(),
            "zfs send died",
        ),
        // Requests that make no sense.
        (
            stream_request("destroy_snapshots", recv.clone()),
            "unknown method",
        ),
        (
            stream_request("receive", serde_json::json!({"evil": 1})),
            "malformed request",
        ),
        (frame(1, b"{not json"), "malformed request"),
    ];
    for (frames, want) in cases {
        let (back, ep) = raw_stream_connection(frames.clone()).await;
        let text = String::from_utf8_lossy(&back);
        assert!(text.contains(want), "{frames:?}: server wrote {text:?}");
        for (_, got) in ep.got.lock().unwrap().iter() {
            assert!(
                got.is_err(),
                "a broken stream must not arrive as data: {got:?}"
            );
        }
    }
    // Oversized request frames and a wrong first frame end the connection without a reply.
    for frames in [vec![1, 0x7f, 0xff, 0xff, 0xff], frame(2, b"data first")] {
        let (back, ep) = raw_stream_connection(frames).await;
        assert!(back.is_empty(), "{back:?}");
        assert!(ep.got.lock().unwrap().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn a_frozen_stream_connection_peer_is_detected() {
    // The peer serves control RPCs normally, but its stream connections go silent after the
    // handshake: the receive must fail within seconds, not hang.
    let ep = Arc::new(MockReceiver::default());
    let dials = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = Client::new(
        "mock",
        Arc::new(move || {
            let n = dials.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (a, mut b) = tokio::io::duplex(1 << 20);
            let ep = ep.clone();
            tokio::spawn(async move {
                if n == 0 {
                    let _ = serve_receiver(b, ep, ServeOptions::default()).await;
                } else {
                    b.write_all(&zrepl_rpc::handshake::Banner::ours().encode())
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(b);
                }
            });
            Box::pin(async move { Ok(Box::new(a) as Box<dyn zrepl_rpc::ClientConn>) })
        }),
        opts(Compression::Off),
    );
    // A producer that never ends, so only the peer's silence can end the receive.
    let endless: ByteStream = Box::pin(tokio::io::repeat(7).take(u64::MAX));
    let start = tokio::time::Instant::now();
    let e = c.receive(recv_req(), endless).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Connectivity, "{e}");
    let took = start.elapsed();
    assert!(took <= Duration::from_secs(30), "detected after {took:?}");
}

#[tokio::test]
async fn mutated_stream_connections_never_panic_the_server() {
    // A cheap in-tree fuzz pass over the stream-connection decoder (the `wire` fuzz target goes
    // further): valid frame sequences with random bytes flipped, cut or appended.
    let recv = serde_json::to_value(recv_req()).unwrap();
    let valid = [
        stream_request("receive", recv),
        frame(2, b"some stream bytes"),
        frame(3, b""),
        frame(2, &[0u8; 300]),
        frame(4, b""),
    ]
    .concat();
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let mut input = valid.clone();
        match next() % 3 {
            0 => {
                for _ in 0..=(next() % 4) {
                    let i = (next() as usize) % input.len();
                    input[i] = next() as u8;
                }
            }
            1 => input.truncate((next() as usize) % input.len()),
            _ => input.extend((0..(next() % 64)).map(|_| next() as u8)),
        }
        let (mut a, server, ep) = open_stream_connection().await;
        a.write_all(&input).await.unwrap();
        drop(a);
        let joined = tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("the server ends when the peer is gone");
        assert!(joined.is_ok(), "server panicked on {input:?}");
        for (_, got) in ep.got.lock().unwrap().iter() {
            if let Ok(data) = got {
                // Whatever arrived as a complete stream was framed as one.
                assert!(data.len() <= 317, "{data:?}");
            }
        }
    }
}

/// A sender with one filesystem of `n` snapshots (`pool/big`), one of two, and one it refuses.
struct ScaleSender {
    n: usize,
    prepared: Mutex<usize>,
}

impl ScaleSender {
    fn versions(&self, f: &DatasetPath) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
        match f.to_string().as_str() {
            "pool/big" => Ok((1..=self.n as u64)
                .map(|g| snap(&format!("zrepl_20261206_{g:09}_000"), g))
                .collect()),
            "pool/small" => Ok(vec![snap("s1", 1), snap("s2", 2)]),
            _ => Err(EndpointError::invalid(format!("{f} not allowed"))),
        }
    }
}

impl Sender for ScaleSender {
    async fn list_filesystems(&self) -> zrepl_protocol::Result<Vec<FilesystemInfo>> {
        Ok((0..self.n / 10)
            .map(|i| FilesystemInfo {
                path: fs(&format!("pool/fs{i}")),
                is_placeholder: false,
                resume_token: None,
            })
            .collect())
    }
    async fn list_versions(
        &self,
        f: &DatasetPath,
    ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
        self.versions(f)
    }
    async fn list_versions_many(
        &self,
        fss: &[DatasetPath],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<Vec<FilesystemVersion>>>> {
        Ok(fss.iter().map(|f| self.versions(f)).collect())
    }
    async fn send_dry(&self, _: &SendRequest) -> zrepl_protocol::Result<u64> {
        Ok(0)
    }
    async fn send(&self, _: SendRequest) -> zrepl_protocol::Result<(SendResponse, ByteStream)> {
        Err(EndpointError::invalid("no sends here"))
    }
    async fn send_completed(&self, _: &SendRequest) -> zrepl_protocol::Result<()> {
        Ok(())
    }
    async fn prepare_sends(&self, reqs: &[SendRequest]) -> zrepl_protocol::Result<()> {
        *self.prepared.lock().unwrap() = reqs.len();
        Ok(())
    }
    async fn converge(
        &self,
        reqs: &[zrepl_protocol::ConvergeRequest],
    ) -> zrepl_protocol::Result<Vec<zrepl_protocol::Result<()>>> {
        Ok(reqs.iter().map(|_| Ok(())).collect())
    }
    async fn replication_cursor(
        &self,
        _: &DatasetPath,
    ) -> zrepl_protocol::Result<Option<FilesystemVersion>> {
        Ok(None)
    }
    async fn destroy_snapshots(
        &self,
        _: &DatasetPath,
        s: &[FilesystemVersion],
    ) -> zrepl_protocol::Result<Vec<DestroyResult>> {
        Ok(s.iter()
            .map(|v| DestroyResult {
                snapshot: v.name.clone(),
                error: None,
            })
            .collect())
    }
}

/// Every batched RPC of a round and of pruning with lists larger than `limits` allow in one
/// message: all of it arrives, in order.
async fn beyond_the_limits(n: usize, steps: usize, limits: zrepl_rpc::wire::Limits) {
    let ep = Arc::new(ScaleSender {
        n,
        prepared: Mutex::new(0),
    });
    let e = ep.clone();
    let c = client(
        ClientOptions {
            limits,
            ..opts(Compression::Off)
        },
        move |io| {
            let e = e.clone();
            async move {
                let _ = serve_sender(
                    io,
                    e,
                    ServeOptions {
                        limits,
                        ..Default::default()
                    },
                )
                .await;
            }
        },
    );
    let big = Sender::list_versions(&c, &fs("pool/big")).await.unwrap();
    assert_eq!(big, ep.versions(&fs("pool/big")).unwrap());
    assert!(serde_json::to_vec(&big).unwrap().len() > limits.reply);

    let many = Sender::list_versions_many(
        &c,
        &[
            fs("pool/small"),
            fs("pool/big"),
            fs("pool/nope"),
            fs("pool/big"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(many.len(), 4);
    assert_eq!(many[0].as_ref().unwrap().len(), 2);
    assert_eq!(many[1].as_ref().unwrap(), &big);
    assert_eq!(
        many[2].as_ref().unwrap_err().kind,
        ErrorKind::InvalidRequest
    );
    assert_eq!(many[3].as_ref().unwrap(), &big);

    let fss = Sender::list_filesystems(&c).await.unwrap();
    assert_eq!(fss.len(), n / 10);

    let reqs: Vec<SendRequest> = (0..steps)
        .map(|i| {
            let mut r = send_req();
            r.filesystem = fs(&format!("pool/fs{i}"));
            r
        })
        .collect();
    assert!(serde_json::to_vec(&reqs).unwrap().len() > limits.request);
    Sender::prepare_sends(&c, &reqs).await.unwrap();
    assert_eq!(*ep.prepared.lock().unwrap(), steps);
    let done = Sender::sends_completed(&c, &reqs).await.unwrap();
    assert_eq!(done.len(), steps);
    let cursors = Sender::replication_cursors(
        &c,
        &reqs
            .iter()
            .map(|r| r.filesystem.clone())
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(cursors.len(), steps);

    let destroyed = Sender::destroy_snapshots(&c, &fs("pool/big"), &big)
        .await
        .unwrap();
    assert_eq!(destroyed.len(), big.len());
    assert!(destroyed
        .iter()
        .zip(&big)
        .all(|(d, v)| d.snapshot == v.name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_beyond_the_real_message_limits_arrive_whole() {
    // 700,000 snapshots: a listing of ~80 MB (the reply limit is 64 MiB); 30,000 steps: a
    // request of ~12 MB (the request limit is 4 MiB). Before parts, both failed every time.
    beyond_the_limits(700_000, 30_000, zrepl_rpc::wire::Limits::default()).await;
}

#[tokio::test]
async fn batches_beyond_lowered_limits_arrive_whole() {
    let limits = zrepl_rpc::wire::Limits::lowered(Some("4096,16384"));
    assert_eq!(limits.request, 4096);
    beyond_the_limits(3000, 200, limits).await;
}

#[test]
fn limits_can_only_be_lowered() {
    use zrepl_rpc::wire::Limits;
    let d = Limits::default();
    let cases: &[(Option<&str>, Limits)] = &[
        (None, d),
        (Some(""), d),
        (Some("junk"), d),
        (Some("1,2"), d),
        (
            Some("2048,4096"),
            Limits {
                request: 2048,
                reply: 4096,
            },
        ),
        (
            Some("99999999999,4096"),
            Limits {
                request: d.request,
                reply: 4096,
            },
        ),
    ];
    for (v, want) in cases {
        assert_eq!(Limits::lowered(*v), *want, "{v:?}");
    }
}
