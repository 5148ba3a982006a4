//! An in-memory sender endpoint for the server side: its answers depend on the request (so the
//! fuzzer reaches both results and errors of every method) and it never touches ZFS.

use tokio::io::AsyncReadExt;
use zrepl_protocol::{
    ByteStream, ConvergeRequest, DestroyResult, EndpointError, FilesystemInfo, ReplicationConfig,
    Result, SendRequest, SendResponse, Sender,
};
use zrepl_zfs_types::{DatasetPath, FilesystemVersion, VersionType};

pub fn fs(s: &str) -> DatasetPath {
    DatasetPath::parse(s).expect("valid dataset name")
}

pub fn snap(name: &str, guid: u64) -> FilesystemVersion {
    FilesystemVersion {
        typ: VersionType::Snapshot,
        name: name.into(),
        guid,
        createtxg: guid,
        creation: 1_700_000_000,
        userrefs: Some(1),
    }
}

pub fn send_request(from: Option<u64>, to: u64) -> SendRequest {
    SendRequest {
        intermediates: Vec::new(),
        filesystem: fs("pool/a"),
        from: from.map(|g| snap(&format!("s{g}"), g)),
        to: snap(&format!("s{to}"), to),
        resume_token: None,
        replication: ReplicationConfig::default(),
    }
}

pub struct MockSender;

fn allowed(f: &DatasetPath) -> Result<()> {
    if f.to_string().starts_with("pool/a") {
        Ok(())
    } else {
        Err(EndpointError::invalid(format!(
            "endpoint does not allow access to filesystem {f}"
        )))
    }
}

/// The stream of a send: some bytes, failing at the end for some GUIDs (a `zfs send` that died).
fn stream(req: &SendRequest) -> ByteStream {
    let data = format!("stream of {}@{}", req.filesystem, req.to.name).into_bytes();
    if req.to.guid % 3 == 2 {
        Box::pin(std::io::Cursor::new(data).chain(Failing))
    } else {
        Box::pin(std::io::Cursor::new(data))
    }
}

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

impl Sender for MockSender {
    async fn list_filesystems(&self) -> Result<Vec<FilesystemInfo>> {
        Ok(vec![
            FilesystemInfo {
                path: fs("pool/a"),
                is_placeholder: false,
                resume_token: None,
            },
            FilesystemInfo {
                path: fs("pool/a/b"),
                is_placeholder: true,
                resume_token: Some("1-abc-10-789c".into()),
            },
        ])
    }
    async fn list_versions(&self, f: &DatasetPath) -> Result<Vec<FilesystemVersion>> {
        allowed(f)?;
        Ok(vec![snap("s1", 1), snap("s2", 2)])
    }
    async fn converge(&self, reqs: &[ConvergeRequest]) -> Result<Vec<Result<()>>> {
        Ok(reqs.iter().map(|r| allowed(&r.filesystem)).collect())
    }
    async fn send_dry(&self, req: &SendRequest) -> Result<u64> {
        allowed(&req.filesystem)?;
        Ok(req.to.guid.wrapping_mul(4096))
    }
    async fn send(&self, req: SendRequest) -> Result<(SendResponse, ByteStream)> {
        allowed(&req.filesystem)?;
        if req.to.guid.is_multiple_of(3) {
            return Err(EndpointError::zfs("cannot hold snapshot: dataset is busy"));
        }
        Ok((
            SendResponse {
                used_resume_token: req.resume_token.is_some(),
                expected_size: 1 << 20,
            },
            stream(&req),
        ))
    }
    async fn send_completed(&self, req: &SendRequest) -> Result<()> {
        allowed(&req.filesystem)
    }
    async fn prepare_sends(&self, reqs: &[SendRequest]) -> Result<()> {
        reqs.iter().try_for_each(|r| allowed(&r.filesystem))
    }
    async fn replication_cursor(&self, f: &DatasetPath) -> Result<Option<FilesystemVersion>> {
        allowed(f)?;
        Ok(Some(FilesystemVersion {
            typ: VersionType::Bookmark,
            name: "zrepl_CURSOR_G_0000000000000001_J_job".into(),
            guid: 1,
            createtxg: 1,
            creation: 1_700_000_000,
            userrefs: None,
        }))
    }
    async fn destroy_snapshots(
        &self,
        f: &DatasetPath,
        snapshots: &[FilesystemVersion],
    ) -> Result<Vec<DestroyResult>> {
        allowed(f)?;
        Ok(snapshots
            .iter()
            .map(|s| DestroyResult {
                snapshot: s.name.clone(),
                error: (s.userrefs.unwrap_or(0) > 0).then(|| "dataset is busy".to_string()),
            })
            .collect())
    }
}

/// A receiver that reads every stream it is given to the end and accepts everything.
pub struct NullReceiver;

impl zrepl_protocol::Receiver for NullReceiver {
    async fn list_filesystems(&self) -> Result<Vec<FilesystemInfo>> {
        Ok(vec![])
    }
    async fn list_versions(&self, _: &DatasetPath) -> Result<Vec<FilesystemVersion>> {
        Ok(vec![])
    }
    async fn receive(&self, _: zrepl_protocol::ReceiveRequest, mut s: ByteStream) -> Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(EndpointError::zfs(e.to_string())),
            }
        }
    }
    async fn converge(&self, reqs: &[ConvergeRequest]) -> Result<Vec<Result<()>>> {
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
