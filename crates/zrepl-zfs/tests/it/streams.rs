//! `zfs send` streams and `zfs recv` against the mock.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use zrepl_zfs::{DatasetPath, RecvRequest, SendFlags, SendRequest, VersionPath, ZfsError};

use crate::mock::{v, Mock};

fn p(s: &str) -> DatasetPath {
    DatasetPath::parse(s).unwrap()
}

fn snap(fs: &str, name: &str) -> VersionPath {
    VersionPath::snapshot(&p(fs), name).unwrap()
}

fn all_flags() -> SendFlags {
    SendFlags {
        raw: true,
        properties: true,
        backup_properties: true,
        large_blocks: true,
        compressed: true,
        embedded_data: true,
        saved: true,
    }
}

#[tokio::test]
async fn send_argv_variants() {
    let m = Mock::new("printf 'stream'");
    let zfs = m.zfs();
    let reqs = [
        SendRequest::full(snap("pool/a b", "s 2"), SendFlags::default()),
        SendRequest::full(snap("pool/a b", "s 2"), all_flags()),
        SendRequest::incremental(
            VersionPath::bookmark(&p("pool/a b"), "bm 1").unwrap(),
            snap("pool/a b", "s 2"),
            SendFlags {
                raw: true,
                ..Default::default()
            },
        ),
        SendRequest::incremental(
            snap("pool/a b", "s 1"),
            snap("pool/a b", "s 2"),
            SendFlags::default(),
        ),
        SendRequest::package(
            snap("pool/a b", "s 1"),
            snap("pool/a b", "s 5"),
            SendFlags {
                compressed: true,
                ..Default::default()
            },
        ),
        SendRequest {
            flags: all_flags(), // ignored with a token
            ..SendRequest::resume("1-abc-12-789c")
        },
    ];
    for r in &reqs {
        let mut s = zfs.send(r).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        assert_eq!(buf, b"stream");
        s.finish().await.unwrap();
    }
    assert_eq!(
        m.calls(),
        [
            v(&["send", "--", "pool/a b@s 2"]),
            v(&[
                "send",
                "-w",
                "-p",
                "-b",
                "-L",
                "-c",
                "-e",
                "-S",
                "--",
                "pool/a b@s 2"
            ]),
            v(&["send", "-w", "-i", "pool/a b#bm 1", "--", "pool/a b@s 2"]),
            v(&["send", "-i", "pool/a b@s 1", "--", "pool/a b@s 2"]),
            v(&["send", "-c", "-I", "pool/a b@s 1", "--", "pool/a b@s 5"]),
            v(&["send", "-t", "1-abc-12-789c"]),
        ]
    );
    // Invalid requests spawn nothing.
    let n = zfs.total_commands_started();
    for bad in [
        SendRequest::full(
            VersionPath::bookmark(&p("pool/a"), "b").unwrap(),
            SendFlags::default(),
        ),
        SendRequest::incremental(
            snap("pool/x", "a"),
            snap("pool/y", "b"),
            SendFlags::default(),
        ),
        SendRequest::resume(""),
        // -I cannot start at a bookmark.
        SendRequest::package(
            VersionPath::bookmark(&p("pool/a"), "b").unwrap(),
            snap("pool/a", "c"),
            SendFlags::default(),
        ),
    ] {
        assert!(zfs.send(&bad).await.is_err());
    }
    assert_eq!(zfs.total_commands_started(), n);
}

#[tokio::test]
async fn send_failure_surfaces_at_eof_with_stderr() {
    let m =
        Mock::new("printf 'partial'; echo 'warning: cannot send pool/a@s: I/O error' >&2; exit 1");
    let zfs = m.zfs();
    let mut s = zfs
        .send(&SendRequest::full(
            snap("pool/a", "s"),
            SendFlags::default(),
        ))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let e = s.read_to_end(&mut buf).await.unwrap_err();
    assert_eq!(buf, b"partial");
    match ZfsError::from_io_ref(&e) {
        Some(ZfsError::Command { status, stderr, .. }) => {
            assert_eq!(status.code(), Some(1));
            assert!(stderr.contains("I/O error"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
    let e = s.finish().await.unwrap_err();
    assert!(matches!(e, ZfsError::Command { .. }));
}

fn process_gone(pid: u32) -> bool {
    // Gone, or a zombie waiting for tokio's background reaper: either way it was killed.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_gone(pid: u32) {
    let t = Instant::now();
    while !process_gone(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "pid {pid} still alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_pid(m: &Mock) -> u32 {
    let path = m.dir().join("pid");
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(&path) {
            if let Ok(p) = s.trim().parse() {
                return p;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn dropping_send_stream_kills_writer() {
    let m = Mock::new(r#"echo $$ > "$D/pid"; exec yes zfs-send-stream-data"#);
    let zfs = m.zfs();
    let mut s = zfs
        .send(&SendRequest::full(
            snap("pool/a", "s"),
            SendFlags::default(),
        ))
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    s.read_exact(&mut buf).await.unwrap();
    let pid = read_pid(&m).await;
    assert_eq!(zfs.active_commands().len(), 1);
    assert_eq!(zfs.active_commands()[0].argv[1], "send");
    drop(s);
    wait_gone(pid).await;
    assert!(zfs.active_commands().is_empty());
    let st = &zfs.command_stats()[&(zrepl_zfs::Binary::Zfs, "send".to_string())];
    assert_eq!(st.cancelled, 1);
}

#[tokio::test]
async fn finish_before_eof_kills_and_reports() {
    let m = Mock::new(r#"echo $$ > "$D/pid"; exec yes zfs-send-stream-data"#);
    let zfs = m.zfs();
    let mut s = zfs
        .send(&SendRequest::full(
            snap("pool/a", "s"),
            SendFlags::default(),
        ))
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    s.read_exact(&mut buf).await.unwrap();
    let pid = read_pid(&m).await;
    let e = s.finish().await.unwrap_err();
    match e {
        ZfsError::Command { status, .. } => assert!(status.code().is_none(), "{status}"),
        e => panic!("{e}"),
    }
    assert!(process_gone(pid));
}

#[tokio::test]
async fn send_dry_run_parsing_and_bookmark_skip() {
    let m = Mock::new(r#"printf 'full\tpool/a@s\t10518512\nsize\t10518512\n'"#);
    let zfs = m.zfs();
    let i = zfs
        .send_dry(&SendRequest::full(
            snap("pool/a", "s"),
            SendFlags::default(),
        ))
        .await
        .unwrap();
    assert_eq!(i.size, 10518512);
    let i = zfs
        .send_dry(&SendRequest::incremental(
            VersionPath::bookmark(&p("pool/a"), "b").unwrap(),
            snap("pool/a", "s"),
            SendFlags::default(),
        ))
        .await
        .unwrap();
    assert_eq!(i.size, 0);
    assert_eq!(
        m.calls(),
        [v(&["send", "-n", "-v", "-P", "--", "pool/a@s"])]
    );
}

#[tokio::test]
async fn receive_feeds_stdin_and_builds_argv() {
    let m = Mock::new(r#"cat > "$D/received""#);
    let zfs = m.zfs();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let req = RecvRequest {
        force_rollback: true,
        save_partial: true,
        no_mount: true,
        exclude_props: vec!["zrepl:ignored".into()],
        override_props: vec![("zrepl:o".into(), "v w".into())],
        ..RecvRequest::new(snap("pool/r x", "s 1"))
    };
    let n = zfs.receive(&req, &data[..]).await.unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(std::fs::read(m.dir().join("received")).unwrap(), data);
    assert_eq!(
        m.calls(),
        [v(&[
            "recv",
            "-F",
            "-s",
            "-u",
            "-x",
            "zrepl:ignored",
            "-o",
            "zrepl:o=v w",
            "--",
            "pool/r x@s 1"
        ])]
    );
    assert!(zfs
        .receive(
            &RecvRequest::new(VersionPath::bookmark(&p("pool/a"), "b").unwrap()),
            &b""[..]
        )
        .await
        .is_err());
}

const RESUMABLE_STDERR: &str =
    "cannot receive new filesystem stream: checksum mismatch or incomplete stream.\n\
Partially received snapshot is saved.\n\
A resuming stream can be generated on the sending system by running:\n    \
zfs send -t 1-10a5c0d4a5-f8-789c636064000310a500c4ec50360710e72765a526973030c4b8\n";

/// A reader that yields `ok` bytes, then an error.
struct FailingReader {
    ok: usize,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.ok == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "peer went away",
            )));
        }
        let n = self.ok.min(buf.remaining()).min(4096);
        buf.put_slice(&vec![7u8; n]);
        self.ok -= n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn receive_resumable_error_has_token_and_input_error() {
    let m = Mock::new(&format!(
        "cat > /dev/null; printf '%s' '{RESUMABLE_STDERR}' >&2; exit 1"
    ));
    let zfs = m.zfs();
    let mut req = RecvRequest::new(snap("pool/r", "s"));
    req.save_partial = true;
    let e = zfs
        .receive(&req, FailingReader { ok: 100_000 })
        .await
        .unwrap_err();
    match e {
        ZfsError::RecvFailedWithResumeToken {
            token, input_error, ..
        } => {
            assert_eq!(
                token,
                "1-10a5c0d4a5-f8-789c636064000310a500c4ec50360710e72765a526973030c4b8"
            );
            assert!(input_error.unwrap().contains("peer went away"));
        }
        e => panic!("{e}"),
    }
}

#[tokio::test]
async fn receive_input_error_and_early_exit() {
    let m =
        Mock::new("cat > /dev/null; echo 'cannot receive: failed to read from stream' >&2; exit 1");
    let zfs = m.zfs();
    let e = zfs
        .receive(
            &RecvRequest::new(snap("pool/r", "s")),
            FailingReader { ok: 10 },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ZfsError::RecvInput { .. }), "{e}");

    // zfs recv fails immediately while the input never ends: we must not hang.
    let m = Mock::new(
        "echo \"cannot receive new filesystem stream: destination 'pool/r' exists\" >&2; exit 1",
    );
    let zfs = m.zfs();
    let never = tokio::io::repeat(0);
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        zfs.receive(&RecvRequest::new(snap("pool/r", "s")), never),
    )
    .await
    .expect("receive hung")
    .unwrap_err();
    match e {
        ZfsError::Command { stderr, .. } => assert!(stderr.contains("exists")),
        e => panic!("{e}"),
    }

    let m = Mock::new("cat >/dev/null; echo 'cannot receive new filesystem stream: zfs receive -F cannot be used to destroy an encrypted filesystem or overwrite an unencrypted one with an encrypted one' >&2; exit 1");
    let e = m
        .zfs()
        .receive(&RecvRequest::new(snap("pool/r", "s")), &b"x"[..])
        .await
        .unwrap_err();
    assert!(
        matches!(e, ZfsError::RecvDestroyOrOverwriteEncrypted { .. }),
        "{e}"
    );
}

#[tokio::test]
async fn send_into_receive_pipeline() {
    // The mock's send produces 5 MB; its recv counts bytes.
    let m = Mock::new(
        r#"case "$1" in
  send) head -c 5000000 /dev/zero ;;
  recv) wc -c > "$D/count" ;;
esac"#,
    );
    let zfs = m.zfs();
    let s = zfs
        .send(&SendRequest::full(
            snap("pool/a", "s"),
            SendFlags::default(),
        ))
        .await
        .unwrap();
    let n = zfs
        .receive(&RecvRequest::new(snap("pool/b", "s")), s)
        .await
        .unwrap();
    assert_eq!(n, 5_000_000);
    let count = std::fs::read_to_string(m.dir().join("count")).unwrap();
    assert_eq!(count.trim(), "5000000");
}

/// A little-endian stream record: BEGIN (`typ` 0) of header type `hdrtype` (1 substream,
/// 2 compound) with `payload` bytes announced, or any other record type.
fn record(typ: u32, hdrtype: u64, payload: u32, to: u64, from: u64) -> Vec<u8> {
    let mut b = vec![0u8; zrepl_zfs::SEND_BEGIN_LEN];
    b[0..4].copy_from_slice(&typ.to_le_bytes());
    b[4..8].copy_from_slice(&payload.to_le_bytes());
    if typ == 0 {
        b[8..16].copy_from_slice(&0x2_f5ba_cbac_u64.to_le_bytes());
        b[16..24].copy_from_slice(&((0x4 << 2) | hdrtype).to_le_bytes());
        b[40..48].copy_from_slice(&to.to_le_bytes());
        b[48..56].copy_from_slice(&from.to_le_bytes());
        b[56..61].copy_from_slice(b"p/f@s");
    }
    b
}

/// A compound stream's header nvlist as libzfs packs it (XDR): `tosnap`, then each of `flags`
/// as a boolean (`not_recursive`, `raw`).
fn header_nvlist(flags: &[&str]) -> Vec<u8> {
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let mut out = vec![1, 1, 0, 0]; // NV_ENCODE_XDR
    out.extend_from_slice(&0u32.to_be_bytes()); // version
    out.extend_from_slice(&1u32.to_be_bytes()); // NV_UNIQUE_NAME
    let mut pair = |name: &str, typ: u32, value: Option<&str>| {
        let mut p = Vec::new();
        bytes(&mut p, name.as_bytes());
        p.extend_from_slice(&typ.to_be_bytes());
        p.extend_from_slice(&u32::from(value.is_some()).to_be_bytes());
        if let Some(v) = value {
            bytes(&mut p, v.as_bytes());
        }
        let size = (p.len() + 8) as u32;
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&p);
    };
    pair("tosnap", 9, Some("s")); // DATA_TYPE_STRING
    for f in flags {
        pair(f, 1, None); // DATA_TYPE_BOOLEAN
    }
    out.extend_from_slice(&[0; 8]);
    out
}

#[tokio::test]
async fn send_stream_headers() {
    let props = header_nvlist(&["not_recursive"]);
    let recursive = header_nvlist(&[]);
    let compound = [
        record(0, 2, props.len() as u32, 0, 0),
        props.clone(),
        record(5, 0, 0, 0, 0),
        record(0, 1, 0, 11, 10),
    ]
    .concat();
    let data = [record(0, 1, 0, 11, 10), vec![1, 2, 3]].concat();
    let mut compound_stream = compound.clone();
    compound_stream.extend_from_slice(&[9; 50]);
    // Ok(bytes consumed, toguid, fromguid) or Err(substring of the error).
    type Want = Result<(usize, u64, u64), &'static str>;
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("plain stream", data.clone(), Ok((312, 11, 10))),
        (
            "compound stream (-p)",
            compound_stream,
            Ok((compound.len(), 11, 10)),
        ),
        (
            "truncated compound header",
            compound[..500].to_vec(),
            Err("early eof"),
        ),
        ("short stream", data[..100].to_vec(), Err("early eof")),
        (
            "compound stream without a header (-b)",
            [
                record(0, 2, 0, 0, 0),
                record(5, 0, 0, 0, 0),
                record(0, 1, 0, 11, 10),
            ]
            .concat(),
            Ok((3 * 312, 11, 10)),
        ),
        (
            "replication stream (-R)",
            [
                record(0, 2, recursive.len() as u32, 0, 0),
                recursive,
                record(5, 0, 0, 0, 0),
                record(0, 1, 0, 11, 10),
            ]
            .concat(),
            Err("replication stream (zfs send -R)"),
        ),
        (
            "compound header that is no nvlist",
            [
                record(0, 2, 100, 0, 0),
                vec![7; 100],
                record(5, 0, 0, 0, 0),
                record(0, 1, 0, 11, 10),
            ]
            .concat(),
            Err("stream header:"),
        ),
        (
            "compound header without END",
            [
                record(0, 2, props.len() as u32, 0, 0),
                props.clone(),
                record(3, 0, 0, 0, 0),
                record(0, 1, 0, 1, 2),
            ]
            .concat(),
            Err("no END record"),
        ),
        (
            "nested compound",
            [
                record(0, 2, 0, 0, 0),
                record(5, 0, 0, 0, 0),
                record(0, 2, 0, 0, 0),
            ]
            .concat(),
            Err("nested compound"),
        ),
        (
            "oversized header",
            record(0, 2, u32::MAX, 0, 0),
            Err("bytes of stream header"),
        ),
        ("garbage", vec![0x5a; 1000], Err("not a zfs send stream")),
    ];
    for (what, input, want) in cases {
        let mut r = std::io::Cursor::new(input.clone());
        let got = zrepl_zfs::read_send_begin(&mut r).await;
        match (got, want) {
            (Ok((head, b)), Ok((n, to, from))) => {
                assert_eq!((head.len(), b.toguid, b.fromguid), (n, to, from), "{what}");
                assert_eq!(
                    head[..],
                    input[..n],
                    "{what}: the bytes read are the prefix"
                );
                assert_eq!(r.position() as usize, n, "{what}: nothing read beyond");
            }
            (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{what}: {e}"),
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
    // Whether a stream may carry properties: a compound stream with a header may (`fss`, which
    // libzfs requires in any header); a plain stream, or a compound one without a header (a
    // package, `zfs send -I`, whose later records `zrepl_zfs::CheckedPackage` checks), cannot.
    let with_header = |flags: &[&str]| {
        let h = header_nvlist(flags);
        [
            record(0, 2, h.len() as u32, 0, 0),
            h,
            record(5, 0, 0, 0, 0),
            record(0, 1, 0, 11, 10),
        ]
        .concat()
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("plain stream", data.clone(), false),
        (
            "compound header with filesystems (-p)",
            with_header(&["not_recursive", "fss"]),
            true,
        ),
        (
            "compound header without filesystems",
            with_header(&["not_recursive"]),
            true,
        ),
        (
            "compound stream without a header (zfs send -I)",
            [
                record(0, 2, 0, 0, 0),
                record(5, 0, 0, 0, 0),
                record(0, 1, 0, 11, 10),
            ]
            .concat(),
            false,
        ),
    ];
    for (what, input, want) in cases {
        let (_, b) = zrepl_zfs::read_send_begin(&mut std::io::Cursor::new(input))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(b.may_carry_properties, want, "{what}");
    }
}
