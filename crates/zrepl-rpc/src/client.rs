//! The active side: one HTTP/2 connection per job invocation, re-dialed when it breaks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use zrepl_protocol::{
    ByteStream, DestroyResult, EndpointError, ErrorKind, FilesystemInfo, ReceiveRequest, Receiver,
    SendRequest as SendReq, SendResponse, Sender,
};
use zrepl_zfs_types::{DatasetPath, FilesystemVersion};

use crate::body::{InStream, OutBody};
use crate::handshake::{self, Banner};
use crate::wire::{self, method, Reply};

/// Something to talk over: a connected, authenticated transport stream.
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

/// Opens a new transport connection (the transport's connector).
pub type Dialer = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Box<dyn Conn>, String>> + Send>> + Send + Sync,
>;

/// Stream compression on the wire (`replication.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    Off,
    /// zstd unless the stream is raw/encrypted or `-c` compressed (decided by its producer).
    #[default]
    Auto,
    Always,
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub compression: Compression,
    pub zstd_level: i32,
    /// Our own sends (push) are plain, so `Auto` compresses them.
    pub local_send_compressible: bool,
    /// Dial plus version handshake must complete within this (zero: no limit).
    pub dial_timeout: Duration,
    /// Carry each zfs stream on a connection of its own (PROTOCOL.md §5) when the peer offers
    /// it, instead of inside the HTTP/2 connection.
    pub stream_connections: bool,
    /// The message limits (the defaults unless a test lowers them).
    pub limits: wire::Limits,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            compression: Compression::Auto,
            zstd_level: 3,
            local_send_compressible: false,
            dial_timeout: Duration::from_secs(10),
            stream_connections: true,
            limits: wire::Limits::default(),
        }
    }
}

/// A remote endpoint. Implements both [`Sender`] (for pull jobs) and [`Receiver`] (push jobs);
/// the peer refuses the methods of the role it does not have.
pub struct Client {
    dial: Dialer,
    opts: ClientOptions,
    peer: String,
    conn: tokio::sync::Mutex<Option<(SendRequest<OutBody>, Banner)>>,
}

fn conn_err(peer: &str, e: impl std::fmt::Display) -> EndpointError {
    EndpointError::new(ErrorKind::Connectivity, format!("{peer}: {e}"))
}

impl Client {
    /// `peer` names the remote side in errors (e.g. `tls://host:8888`).
    pub fn new(peer: impl Into<String>, dial: Dialer, opts: ClientOptions) -> Self {
        Client {
            dial,
            opts,
            peer: peer.into(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection, dialing and handshaking if there is none or it broke.
    async fn connection(&self) -> Result<(SendRequest<OutBody>, Banner), EndpointError> {
        let mut g = self.conn.lock().await;
        if let Some((s, b)) = g.as_ref() {
            if !s.is_closed() {
                return Ok((s.clone(), b.clone()));
            }
        }
        *g = None;
        let establish = async {
            let mut io = (self.dial)().await.map_err(|e| conn_err(&self.peer, e))?;
            let banner =
                handshake::exchange(&mut io, Duration::ZERO)
                    .await
                    .map_err(|e| match e {
                        // Different versions will not fix themselves: do not retry.
                        handshake::HandshakeError::VersionMismatch { .. }
                        | handshake::HandshakeError::Malformed(_) => EndpointError::new(
                            ErrorKind::InvalidRequest,
                            format!("{}: {e}", self.peer),
                        ),
                        _ => conn_err(&self.peer, e),
                    })?;
            let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .keep_alive_interval(crate::KEEPALIVE_INTERVAL)
                .keep_alive_timeout(crate::KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .initial_stream_window_size(crate::STREAM_WINDOW)
                .initial_connection_window_size(crate::CONNECTION_WINDOW)
                .max_frame_size(crate::MAX_FRAME)
                .max_header_list_size(crate::MAX_HEADER_LIST)
                .max_send_buf_size(crate::STREAM_WINDOW as usize);
            let (send, conn) = b
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| conn_err(&self.peer, e))?;
            let peer = self.peer.clone();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(subsystem = "rpc", peer = %peer, error = %e, "connection ended");
                }
            });
            Ok::<_, EndpointError>((send, banner))
        };
        let t = self.opts.dial_timeout;
        let c = if t.is_zero() {
            establish.await?
        } else {
            tokio::time::timeout(t, establish).await.map_err(|_| {
                conn_err(
                    &self.peer,
                    format!("connect and handshake timed out after {t:?}"),
                )
            })??
        };
        *g = Some(c.clone());
        Ok(c)
    }

    async fn request(
        &self,
        method: &str,
        message: &[u8],
        stream: Option<ByteStream>,
        headers: &[(&'static str, HeaderValue)],
    ) -> Result<(InStream, http::HeaderMap), EndpointError> {
        let (mut send, _) = self.connection().await?;
        let mut req = Request::post(format!("http://zrepl/v1/{method}"))
            .body(OutBody::new(message, stream))
            .expect("valid request");
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.clone());
        }
        send.ready().await.map_err(|e| conn_err(&self.peer, e))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| conn_err(&self.peer, e))?;
        if resp.status() != http::StatusCode::OK {
            return Err(EndpointError::new(
                ErrorKind::Internal,
                format!("{}: unexpected HTTP status {}", self.peer, resp.status()),
            ));
        }
        let (parts, body) = resp.into_parts();
        Ok((InStream::new(body), parts.headers))
    }

    async fn reply<T: DeserializeOwned>(&self, body: &mut InStream) -> Result<T, EndpointError> {
        let m = body
            .message(self.opts.limits.reply)
            .await
            .map_err(|e| self.io_err(e))?;
        let r: Reply<T> = serde_json::from_slice(&m).map_err(|e| {
            EndpointError::new(
                ErrorKind::Internal,
                format!("{}: malformed reply: {e}", self.peer),
            )
        })?;
        r.into()
    }

    fn io_err(&self, e: std::io::Error) -> EndpointError {
        match e.kind() {
            std::io::ErrorKind::InvalidData => {
                EndpointError::new(ErrorKind::Internal, format!("{}: {e}", self.peer))
            }
            _ => conn_err(&self.peer, e),
        }
    }

    /// Whether the zfs streams of this connection's peer go on stream connections.
    async fn use_stream_connections(&self) -> Result<bool, EndpointError> {
        if !self.opts.stream_connections {
            return Ok(false);
        }
        let (_, banner) = self.connection().await?;
        Ok(banner.has(handshake::EXT_STREAM_CONN))
    }

    /// A new stream connection (PROTOCOL.md §5): dial, handshake, the magic and the request.
    async fn stream_connection(
        &self,
        req: &crate::streamconn::StreamRequest,
    ) -> Result<Box<dyn Conn>, EndpointError> {
        use tokio::io::AsyncWriteExt;
        let establish = async {
            let mut io = (self.dial)().await.map_err(|e| conn_err(&self.peer, e))?;
            let banner = handshake::exchange(&mut io, Duration::ZERO)
                .await
                .map_err(|e| conn_err(&self.peer, e))?;
            if !banner.has(handshake::EXT_STREAM_CONN) {
                return Err(EndpointError::new(
                    ErrorKind::Internal,
                    format!("{}: peer stopped offering stream connections", self.peer),
                ));
            }
            io.write_all(crate::streamconn::MAGIC)
                .await
                .map_err(|e| conn_err(&self.peer, e))?;
            let m = serde_json::to_vec(req).expect("requests serialize");
            crate::streamconn::write_frame(&mut io, crate::streamconn::REQUEST, &m)
                .await
                .map_err(|e| conn_err(&self.peer, e))?;
            Ok::<_, EndpointError>(io)
        };
        let t = self.opts.dial_timeout;
        if t.is_zero() {
            establish.await
        } else {
            tokio::time::timeout(t, establish).await.map_err(|_| {
                conn_err(
                    &self.peer,
                    format!("connect and handshake timed out after {t:?}"),
                )
            })?
        }
    }

    fn decode<T: DeserializeOwned>(&self, m: &[u8]) -> Result<T, EndpointError> {
        serde_json::from_slice(m).map_err(|e| {
            EndpointError::new(
                ErrorKind::Internal,
                format!("{}: malformed reply: {e}", self.peer),
            )
        })
    }

    /// `send` on a stream connection.
    async fn send_on_stream_connection(
        &self,
        req: &SendReq,
    ) -> Result<(SendResponse, ByteStream), EndpointError> {
        use crate::streamconn::{heartbeat, read_reply, AbortOnDrop, FrameReader, SendReply};
        let sreq = crate::streamconn::StreamRequest {
            method: method::SEND.into(),
            message: serde_json::to_value(req).expect("requests serialize"),
            encoding: None,
            accept_zstd: match self.opts.compression {
                Compression::Off => None,
                Compression::Auto => Some("auto".into()),
                Compression::Always => Some("always".into()),
            },
            zstd_level: Some(self.opts.zstd_level),
        };
        let io = self.stream_connection(&sreq).await?;
        let (mut rd, mut wr) = tokio::io::split(io);
        let m = read_reply(&mut rd, wire::MAX_REPLY)
            .await
            .map_err(|e| self.io_err(e))?;
        let r: SendReply = self.decode(&m)?;
        let res = Result::from(r.result)?;
        // While the stream is read, keepalives tell the sender that we are still there.
        let hb = tokio::spawn(async move {
            heartbeat(&mut wr).await;
        });
        let frames: ByteStream =
            Box::pin(FrameReader::new(rd, Some(AbortOnDrop(hb.abort_handle()))));
        let stream = match r.encoding.as_str() {
            "identity" => frames,
            "zstd" => crate::zstd_decode(frames),
            other => {
                return Err(EndpointError::new(
                    ErrorKind::Internal,
                    format!("{}: unknown stream encoding {other:?}", self.peer),
                ))
            }
        };
        Ok((res, stream))
    }

    /// `receive` on a stream connection.
    async fn receive_on_stream_connection(
        &self,
        req: &ReceiveRequest,
        stream: ByteStream,
        encoding: &str,
    ) -> Result<(), EndpointError> {
        use crate::streamconn::{pump, read_reply};
        let sreq = crate::streamconn::StreamRequest {
            method: method::RECEIVE.into(),
            message: serde_json::to_value(req).expect("requests serialize"),
            encoding: Some(encoding.into()),
            accept_zstd: None,
            zstd_level: None,
        };
        let io = self.stream_connection(&sreq).await?;
        let (mut rd, mut wr) = tokio::io::split(io);
        let replied = read_reply(&mut rd, wire::MAX_REPLY);
        tokio::pin!(replied);
        let m = tokio::select! {
            // The receiver answers before the stream ended only to refuse it.
            r = &mut replied => r.map_err(|e| self.io_err(e))?,
            p = pump(stream, &mut wr) => match p {
                Ok(()) => replied.await.map_err(|e| self.io_err(e))?,
                // Our producer failed (the receiver was told why) or the connection broke:
                // the receiver's reply, if it can still give one, says what happened there.
                Err(e) => match replied.await {
                    Ok(m) => m,
                    Err(_) => return Err(self.io_err(e)),
                },
            },
        };
        let r: Reply<()> = self.decode(&m)?;
        r.into()
    }

    /// A control RPC: message in, message out.
    async fn call<Q: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        req: &Q,
    ) -> Result<T, EndpointError> {
        let m = serde_json::to_vec(req).expect("requests serialize");
        let (mut body, _) = self.request(method, &m, None, &[]).await?;
        let r = self.reply(&mut body).await;
        body.finish().await.map_err(|e| self.io_err(e))?;
        r
    }

    /// Whether the peer reads and writes lists as parts (PROTOCOL.md §4b).
    async fn parts(&self) -> Result<bool, EndpointError> {
        Ok(self.connection().await?.1.has(handshake::EXT_PARTS))
    }

    /// Sends a batched request: its list as parts (asking for a list reply in parts too) when
    /// the peer reads them, else all in one message (a peer from before parts).
    async fn send_batch<Q: wire::Batch>(
        &self,
        method: &str,
        mut req: Q,
    ) -> Result<(crate::body::InStream, http::HeaderMap), EndpointError>
    where
        Q::Item: Send + Unpin + 'static,
    {
        if !self.parts().await? {
            let m = serde_json::to_vec(&req).expect("requests serialize");
            return self.request(method, &m, None, &[]).await;
        }
        let items = req.take_items();
        let m = serde_json::to_vec(&req).expect("requests serialize");
        let budget = crate::parts::budget(self.opts.limits.request);
        let one = HeaderValue::from_static("1");
        self.request(
            method,
            &m,
            Some(crate::parts::stream(items, budget)),
            &[
                (wire::HDR_REQUEST_PARTS, one.clone()),
                (wire::HDR_REPLY_PARTS, one),
            ],
        )
        .await
    }

    /// Reads a list reply, from its parts if the peer sent it so.
    async fn read_list<I: DeserializeOwned>(
        &self,
        mut body: crate::body::InStream,
        headers: &http::HeaderMap,
    ) -> Result<Vec<I>, EndpointError> {
        let r: Result<Vec<I>, EndpointError> = self.reply(&mut body).await;
        let mut v = match r {
            Ok(v) => v,
            Err(e) => {
                body.finish().await.map_err(|e| self.io_err(e))?;
                return Err(e);
            }
        };
        if headers.contains_key(wire::HDR_REPLY_PARTS) {
            if !v.is_empty() {
                return Err(EndpointError::new(
                    ErrorKind::Internal,
                    format!(
                        "{}: malformed reply: items in the message of a reply in parts",
                        self.peer
                    ),
                ));
            }
            v = crate::parts::read(&mut body, self.opts.limits.reply, Duration::ZERO)
                .await
                .map_err(|e| self.io_err(e))?;
        }
        body.finish().await.map_err(|e| self.io_err(e))?;
        Ok(v)
    }

    /// A batched RPC with a list reply.
    async fn call_batch_list<Q: wire::Batch, I: DeserializeOwned>(
        &self,
        method: &str,
        req: Q,
    ) -> Result<Vec<I>, EndpointError>
    where
        Q::Item: Send + Unpin + 'static,
    {
        let (body, headers) = self.send_batch(method, req).await?;
        self.read_list(body, &headers).await
    }

    /// A batched RPC with a reply that is not a list.
    async fn call_batch<Q: wire::Batch, T: DeserializeOwned>(
        &self,
        method: &str,
        req: Q,
    ) -> Result<T, EndpointError>
    where
        Q::Item: Send + Unpin + 'static,
    {
        let (mut body, _) = self.send_batch(method, req).await?;
        let r = self.reply(&mut body).await;
        body.finish().await.map_err(|e| self.io_err(e))?;
        r
    }

    /// An RPC with one message and a list reply.
    async fn call_list<Q: Serialize, I: DeserializeOwned>(
        &self,
        method: &str,
        req: &Q,
    ) -> Result<Vec<I>, EndpointError> {
        let m = serde_json::to_vec(req).expect("requests serialize");
        let h = if self.parts().await? {
            vec![(wire::HDR_REPLY_PARTS, HeaderValue::from_static("1"))]
        } else {
            vec![]
        };
        let (body, headers) = self.request(method, &m, None, &h).await?;
        self.read_list(body, &headers).await
    }

    /// Round trip to the peer (`zrepl test`).
    pub async fn ping(&self, message: &str) -> Result<String, EndpointError> {
        let echo: String = self
            .call(
                method::PING,
                &wire::Ping {
                    message: message.into(),
                },
            )
            .await?;
        if echo != message {
            return Err(EndpointError::new(
                ErrorKind::Internal,
                format!("{}: ping echo mismatch", self.peer),
            ));
        }
        Ok(echo)
    }

    /// The peer's banner (after a successful connection).
    pub async fn peer_banner(&self) -> Result<Banner, EndpointError> {
        Ok(self.connection().await?.1)
    }

    async fn list_filesystems_(&self) -> Result<Vec<FilesystemInfo>, EndpointError> {
        self.call_list(method::LIST_FILESYSTEMS, &wire::Empty {})
            .await
    }
    async fn list_versions_(
        &self,
        fs: &DatasetPath,
    ) -> Result<Vec<FilesystemVersion>, EndpointError> {
        self.call_list(
            method::LIST_VERSIONS,
            &wire::FilesystemReq {
                filesystem: fs.clone(),
            },
        )
        .await
    }
    async fn list_versions_many_(
        &self,
        fss: &[DatasetPath],
    ) -> Result<wire::Results<Vec<FilesystemVersion>>, EndpointError> {
        let req = wire::FilesystemsReq {
            filesystems: fss.to_vec(),
        };
        if !self.parts().await? {
            return self.call(method::LIST_VERSIONS_MANY, &req).await;
        }
        let items: Vec<wire::ManyItem> = self
            .call_batch_list(method::LIST_VERSIONS_MANY, req)
            .await?;
        wire::from_many_items(fss.len(), items).map_err(|e| {
            EndpointError::new(
                ErrorKind::Internal,
                format!("{}: malformed reply: {e}", self.peer),
            )
        })
    }
    async fn converge_(
        &self,
        reqs: &[zrepl_protocol::ConvergeRequest],
    ) -> Result<wire::Results<()>, EndpointError> {
        self.call_batch_list(
            method::CONVERGE,
            wire::ConvergeReq {
                requests: reqs.to_vec(),
            },
        )
        .await
    }
    async fn destroy_(
        &self,
        fs: &DatasetPath,
        snapshots: &[FilesystemVersion],
    ) -> Result<Vec<DestroyResult>, EndpointError> {
        self.call_batch_list(
            method::DESTROY_SNAPSHOTS,
            wire::DestroyReq {
                filesystem: fs.clone(),
                snapshots: snapshots.to_vec(),
            },
        )
        .await
    }
}

impl Sender for Client {
    async fn list_filesystems(&self) -> zrepl_protocol::Result<Vec<FilesystemInfo>> {
        self.list_filesystems_().await
    }
    async fn list_versions(
        &self,
        fs: &DatasetPath,
    ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
        self.list_versions_(fs).await
    }
    async fn send_dry(&self, req: &SendReq) -> zrepl_protocol::Result<u64> {
        self.call(method::SEND_DRY, req).await
    }
    async fn send(&self, req: SendReq) -> zrepl_protocol::Result<(SendResponse, ByteStream)> {
        if self.use_stream_connections().await? {
            return self.send_on_stream_connection(&req).await;
        }
        let m = serde_json::to_vec(&req).expect("requests serialize");
        let mut h = Vec::new();
        match self.opts.compression {
            Compression::Off => {}
            Compression::Auto => h.push((wire::HDR_ACCEPT_ZSTD, HeaderValue::from_static("auto"))),
            Compression::Always => {
                h.push((wire::HDR_ACCEPT_ZSTD, HeaderValue::from_static("always")))
            }
        }
        if self.opts.compression != Compression::Off {
            h.push((
                wire::HDR_ZSTD_LEVEL,
                HeaderValue::from(self.opts.zstd_level),
            ));
        }
        let (mut body, headers) = self.request(method::SEND, &m, None, &h).await?;
        let res: SendResponse = self.reply(&mut body).await?;
        let stream = match headers.get(wire::HDR_ENCODING).map(|v| v.as_bytes()) {
            None | Some(b"identity") => body.into_stream(),
            Some(b"zstd") => crate::zstd_decode(body.into_stream()),
            Some(other) => {
                return Err(EndpointError::new(
                    ErrorKind::Internal,
                    format!(
                        "{}: unknown stream encoding {:?}",
                        self.peer,
                        String::from_utf8_lossy(other)
                    ),
                ))
            }
        };
        Ok((res, stream))
    }
    async fn send_completed(&self, req: &SendReq) -> zrepl_protocol::Result<()> {
        self.call(method::SEND_COMPLETED, req).await
    }
    async fn list_versions_many(
        &self,
        fss: &[DatasetPath],
    ) -> zrepl_protocol::Result<wire::Results<Vec<FilesystemVersion>>> {
        self.list_versions_many_(fss).await
    }
    async fn replication_cursors(
        &self,
        fss: &[DatasetPath],
    ) -> zrepl_protocol::Result<wire::Results<Option<FilesystemVersion>>> {
        self.call_batch_list(
            method::REPLICATION_CURSORS,
            wire::FilesystemsReq {
                filesystems: fss.to_vec(),
            },
        )
        .await
    }
    async fn prepare_sends(&self, reqs: &[SendReq]) -> zrepl_protocol::Result<()> {
        self.call_batch(
            method::PREPARE_SENDS,
            wire::SendsReq {
                requests: reqs.to_vec(),
            },
        )
        .await
    }
    async fn sends_completed(&self, reqs: &[SendReq]) -> zrepl_protocol::Result<wire::Results<()>> {
        self.call_batch_list(
            method::SENDS_COMPLETED,
            wire::SendsReq {
                requests: reqs.to_vec(),
            },
        )
        .await
    }
    async fn converge(
        &self,
        reqs: &[zrepl_protocol::ConvergeRequest],
    ) -> zrepl_protocol::Result<wire::Results<()>> {
        self.converge_(reqs).await
    }
    async fn replication_cursor(
        &self,
        fs: &DatasetPath,
    ) -> zrepl_protocol::Result<Option<FilesystemVersion>> {
        self.call(
            method::REPLICATION_CURSOR,
            &wire::FilesystemReq {
                filesystem: fs.clone(),
            },
        )
        .await
    }
    async fn destroy_snapshots(
        &self,
        fs: &DatasetPath,
        snapshots: &[FilesystemVersion],
    ) -> zrepl_protocol::Result<Vec<DestroyResult>> {
        self.destroy_(fs, snapshots).await
    }
}

impl Receiver for Client {
    async fn list_filesystems(&self) -> zrepl_protocol::Result<Vec<FilesystemInfo>> {
        self.list_filesystems_().await
    }
    async fn list_versions(
        &self,
        fs: &DatasetPath,
    ) -> zrepl_protocol::Result<Vec<FilesystemVersion>> {
        self.list_versions_(fs).await
    }
    async fn list_versions_many(
        &self,
        fss: &[DatasetPath],
    ) -> zrepl_protocol::Result<wire::Results<Vec<FilesystemVersion>>> {
        self.list_versions_many_(fss).await
    }
    async fn receives_completed(
        &self,
        reqs: &[ReceiveRequest],
    ) -> zrepl_protocol::Result<wire::Results<()>> {
        self.call_batch_list(
            method::RECEIVES_COMPLETED,
            wire::ReceivesReq {
                requests: reqs.to_vec(),
            },
        )
        .await
    }
    async fn converge(
        &self,
        reqs: &[zrepl_protocol::ConvergeRequest],
    ) -> zrepl_protocol::Result<wire::Results<()>> {
        self.converge_(reqs).await
    }
    async fn receive(&self, req: ReceiveRequest, stream: ByteStream) -> zrepl_protocol::Result<()> {
        let (_, banner) = self.connection().await?;
        let zstd = banner.has(handshake::EXT_ZSTD)
            && match self.opts.compression {
                Compression::Off => false,
                Compression::Auto => self.opts.local_send_compressible,
                Compression::Always => true,
            };
        let (stream, enc) = if zstd {
            (crate::zstd_encode(stream, self.opts.zstd_level), "zstd")
        } else {
            (stream, "identity")
        };
        if self.use_stream_connections().await? {
            return self.receive_on_stream_connection(&req, stream, enc).await;
        }
        let m = serde_json::to_vec(&req).expect("requests serialize");
        let (mut body, _) = self
            .request(
                method::RECEIVE,
                &m,
                Some(stream),
                &[(wire::HDR_ENCODING, HeaderValue::from_static(enc))],
            )
            .await?;
        let r = self.reply(&mut body).await;
        body.finish().await.map_err(|e| self.io_err(e))?;
        r
    }
    async fn destroy_snapshots(
        &self,
        fs: &DatasetPath,
        snapshots: &[FilesystemVersion],
    ) -> zrepl_protocol::Result<Vec<DestroyResult>> {
        self.destroy_(fs, snapshots).await
    }
}
