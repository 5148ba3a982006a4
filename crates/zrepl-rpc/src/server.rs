//! Serving a local endpoint to one authenticated peer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use zrepl_protocol::{EndpointError, ReceiveRequest, Receiver, SendRequest, Sender};

use crate::body::{InStream, OutBody};
use crate::wire::{self, method, Reply};
use crate::{handshake, RpcError};

#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Our sends are plain (not raw, not `-c`): zstd helps when the client asks for `auto`.
    pub send_compressible: bool,
    /// Time allowed for the peer's version banner (zero: none).
    pub handshake_timeout: Duration,
    /// The message limits (the defaults unless a test lowers them).
    pub limits: wire::Limits,
}

fn builder() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .keep_alive_interval(Some(crate::KEEPALIVE_INTERVAL))
        .keep_alive_timeout(crate::KEEPALIVE_TIMEOUT)
        .initial_stream_window_size(crate::STREAM_WINDOW)
        .initial_connection_window_size(crate::CONNECTION_WINDOW)
        .max_frame_size(crate::MAX_FRAME)
        .max_header_list_size(crate::MAX_HEADER_LIST)
        .max_concurrent_streams(crate::MAX_STREAMS)
        .max_send_buf_size(crate::STREAM_WINDOW as usize);
    b
}

/// What a connection turned out to be after the handshake.
enum Opened<S> {
    /// HTTP/2: every RPC of a job invocation.
    Http2(crate::streamconn::Prefixed<S>),
    /// One `send` or `receive` with its zfs stream (PROTOCOL.md §5).
    Stream(S),
    /// The peer closed the connection after the handshake.
    Closed,
}

/// The version handshake, then the first 8 bytes tell a stream connection from HTTP/2.
async fn open_conn<S>(mut io: S, opts: &ServeOptions) -> Result<Opened<S>, RpcError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    handshake::exchange(&mut io, opts.handshake_timeout).await?;
    let limit = if opts.handshake_timeout.is_zero() {
        crate::streamconn::IDLE_LIMIT
    } else {
        opts.handshake_timeout
    };
    let mut first = [0u8; 8];
    match tokio::time::timeout(limit, io.read_exact(&mut first)).await {
        Err(_) => Err(RpcError::Connection(format!(
            "nothing sent within {limit:?} after the handshake"
        ))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Opened::Closed),
        Ok(Err(e)) => Err(RpcError::Connection(e.to_string())),
        Ok(Ok(_)) if &first == crate::streamconn::MAGIC => Ok(Opened::Stream(io)),
        Ok(Ok(_)) => Ok(Opened::Http2(crate::streamconn::Prefixed::new(
            first.to_vec(),
            io,
        ))),
    }
}

async fn serve_http2<S, H, F>(io: S, handler: H) -> Result<(), RpcError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<OutBody>> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let fut = handler(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    builder()
        .serve_connection(TokioIo::new(io), svc)
        .await
        .map_err(|e| RpcError::Connection(e.to_string()))
}

/// A peer's connection after the version handshake, told apart but not served yet: the caller
/// can decide per kind (a sink's session hooks run once per control connection, not per zfs
/// stream).
pub struct Accepted<S> {
    opened: Opened<S>,
    opts: ServeOptions,
}

/// The version handshake and the first bytes of a connection (see [`Accepted`]).
pub async fn accept<S>(io: S, opts: ServeOptions) -> Result<Accepted<S>, RpcError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    Ok(Accepted {
        opened: open_conn(io, &opts).await?,
        opts,
    })
}

impl<S> Accepted<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    /// The connection carries the control RPCs of a job invocation (HTTP/2), not one zfs
    /// stream (and was not closed right after the handshake).
    pub fn is_control(&self) -> bool {
        matches!(self.opened, Opened::Http2(_))
    }

    /// Serves `sender` (a source job's endpoint) until the peer closes the connection.
    pub async fn serve_sender<E: Sender + 'static>(self, ep: Arc<E>) -> Result<(), RpcError> {
        let opts = self.opts;
        match self.opened {
            Opened::Http2(io) => {
                serve_http2(io, move |req| sender_dispatch(ep.clone(), opts, req)).await
            }
            Opened::Stream(io) => stream_send(io, ep, opts).await,
            Opened::Closed => Ok(()),
        }
    }

    /// Serves `receiver` (a sink job's endpoint for this peer's identity).
    pub async fn serve_receiver<E: Receiver + 'static>(self, ep: Arc<E>) -> Result<(), RpcError> {
        let opts = self.opts;
        match self.opened {
            Opened::Http2(io) => {
                serve_http2(io, move |req| receiver_dispatch(ep.clone(), opts, req)).await
            }
            Opened::Stream(io) => stream_receive(io, ep).await,
            Opened::Closed => Ok(()),
        }
    }
}

/// Serves `sender` (a source job's endpoint) on one connection until the peer closes it.
pub async fn serve_sender<S, E>(io: S, ep: Arc<E>, opts: ServeOptions) -> Result<(), RpcError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Sender + 'static,
{
    accept(io, opts).await?.serve_sender(ep).await
}

/// Serves `receiver` (a sink job's endpoint for this peer's identity) on one connection.
pub async fn serve_receiver<S, E>(io: S, ep: Arc<E>, opts: ServeOptions) -> Result<(), RpcError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Receiver + 'static,
{
    accept(io, opts).await?.serve_receiver(ep).await
}

fn conn(e: std::io::Error) -> RpcError {
    RpcError::Connection(e.to_string())
}

/// Reads the `REQUEST` frame of a stream connection.
async fn stream_request<R: AsyncRead + Unpin>(
    rd: &mut R,
) -> Result<Result<crate::streamconn::StreamRequest, EndpointError>, RpcError> {
    let (kind, m) = tokio::time::timeout(
        crate::streamconn::IDLE_LIMIT,
        crate::streamconn::read_control(rd, wire::MAX_REQUEST),
    )
    .await
    .map_err(|_| RpcError::Connection("no request on the stream connection".into()))?
    .map_err(conn)?;
    if kind != crate::streamconn::REQUEST {
        return Err(RpcError::Connection(format!(
            "stream connection: frame kind {kind} instead of a request"
        )));
    }
    Ok(parse(&m))
}

async fn stream_reply<W: AsyncWrite + Unpin, T: Serialize>(
    wr: &mut W,
    reply: &T,
) -> Result<(), RpcError> {
    let m = serde_json::to_vec(reply).expect("replies serialize");
    crate::streamconn::write_frame(wr, crate::streamconn::REPLY, &m)
        .await
        .map_err(conn)
}

/// Refuses a stream request with the reply its method's client reads.
async fn stream_refuse<W: AsyncWrite + Unpin>(
    wr: &mut W,
    method: &str,
    e: EndpointError,
) -> Result<(), RpcError> {
    if method == method::SEND {
        stream_reply(
            wr,
            &crate::streamconn::SendReply {
                result: Reply::Err(e),
                encoding: "identity".into(),
            },
        )
        .await
    } else {
        stream_reply(wr, &Reply::<()>::Err(e)).await
    }
}

/// A `send` on a stream connection: the reply, then the zfs stream, while the client's
/// keepalives say it still reads.
async fn stream_send<S, E>(io: S, ep: Arc<E>, opts: ServeOptions) -> Result<(), RpcError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Sender + 'static,
{
    use crate::streamconn::{heartbeat, pump, watch_keepalives, SendReply};
    let (mut rd, mut wr) = tokio::io::split(io);
    let req = match stream_request(&mut rd).await? {
        Ok(r) if r.method == method::SEND => r,
        Ok(r) => {
            let e = EndpointError::invalid(format!(
                "unknown method {:?} on a stream connection (this peer is a sender)",
                r.method
            ));
            return stream_refuse(&mut wr, &r.method, e).await;
        }
        Err(e) => return stream_refuse(&mut wr, "", e).await,
    };
    let send: SendRequest = match serde_json::from_value(req.message) {
        Ok(r) => r,
        Err(e) => {
            let e = EndpointError::invalid(format!("malformed request: {e}"));
            return stream_refuse(&mut wr, method::SEND, e).await;
        }
    };
    let started = tokio::select! {
        r = ep.send(send) => r,
        e = heartbeat(&mut wr) => return Err(conn(e)),
    };
    let (res, stream) = match started {
        Ok(x) => x,
        Err(e) => return stream_refuse(&mut wr, method::SEND, e).await,
    };
    let zstd = match req.accept_zstd.as_deref() {
        Some("always") => true,
        Some("auto") => opts.send_compressible,
        _ => false,
    };
    let (stream, encoding) = if zstd {
        (
            crate::zstd_encode(stream, req.zstd_level.unwrap_or(3)),
            "zstd",
        )
    } else {
        (stream, "identity")
    };
    stream_reply(
        &mut wr,
        &SendReply {
            result: Reply::Ok(res),
            encoding: encoding.into(),
        },
    )
    .await?;
    tokio::select! {
        r = pump(stream, &mut wr) => r.map_err(conn),
        r = watch_keepalives(&mut rd) => Err(match r {
            Ok(()) => RpcError::Connection("the client closed the stream connection mid-stream".into()),
            Err(e) => conn(e),
        }),
    }
}

/// A `receive` on a stream connection: the zfs stream into the endpoint, keepalives back while
/// it runs, then the reply.
async fn stream_receive<S, E>(io: S, ep: Arc<E>) -> Result<(), RpcError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Receiver + 'static,
{
    use crate::streamconn::{heartbeat, FrameReader};
    let (mut rd, mut wr) = tokio::io::split(io);
    let req = match stream_request(&mut rd).await? {
        Ok(r) if r.method == method::RECEIVE => r,
        Ok(r) => {
            let e = EndpointError::invalid(format!(
                "unknown method {:?} on a stream connection (this peer is a receiver)",
                r.method
            ));
            return stream_refuse(&mut wr, &r.method, e).await;
        }
        Err(e) => return stream_reply(&mut wr, &Reply::<()>::Err(e)).await,
    };
    let recv: ReceiveRequest = match serde_json::from_value(req.message) {
        Ok(r) => r,
        Err(e) => {
            let e = EndpointError::invalid(format!("malformed request: {e}"));
            return stream_reply(&mut wr, &Reply::<()>::Err(e)).await;
        }
    };
    let frames: zrepl_protocol::ByteStream = Box::pin(FrameReader::new(rd, None));
    let stream = match req.encoding.as_deref() {
        None | Some("identity") => frames,
        Some("zstd") => crate::zstd_decode(frames),
        Some(other) => {
            let e = EndpointError::invalid(format!("unknown stream encoding {other:?}"));
            return stream_reply(&mut wr, &Reply::<()>::Err(e)).await;
        }
    };
    let result = tokio::select! {
        r = ep.receive(recv, stream) => r,
        e = heartbeat(&mut wr) => return Err(conn(e)),
    };
    stream_reply(&mut wr, &Reply::from(result)).await
}

fn reply<T: Serialize>(r: Result<T, EndpointError>) -> Response<OutBody> {
    let m = serde_json::to_vec(&Reply::from(r)).expect("replies serialize");
    Response::new(OutBody::new(&m, None))
}

fn parse<T: DeserializeOwned>(m: &[u8]) -> Result<T, EndpointError> {
    serde_json::from_slice(m).map_err(|e| EndpointError::invalid(format!("malformed request: {e}")))
}

/// How one control request's list and its list reply travel (PROTOCOL.md §4b).
struct Parts {
    /// The rest of the body when the request's list follows its message as parts.
    request: Option<InStream>,
    /// The client reads a list reply in parts.
    reply: bool,
    limits: wire::Limits,
}

impl Parts {
    /// The batched request: its message, with its list read from the parts if it has them.
    async fn batch<Q: wire::Batch>(&mut self, msg: &[u8]) -> Result<Q, EndpointError> {
        let mut q: Q = parse(msg)?;
        if let Some(mut body) = self.request.take() {
            if !q.take_items().is_empty() {
                return Err(EndpointError::invalid(
                    "malformed request: a request in parts carries items in its message",
                ));
            }
            let items = crate::parts::read(&mut body, self.limits.request, wire::REQUEST_DEADLINE)
                .await
                .map_err(|e| EndpointError::invalid(format!("request parts: {e}")))?;
            q.put_items(items);
        }
        Ok(q)
    }

    /// A request of a method whose message is all there is.
    fn single<Q: DeserializeOwned>(&self, msg: &[u8]) -> Result<Q, EndpointError> {
        if self.request.is_some() {
            return Err(EndpointError::invalid(
                "malformed request: this method takes no parts",
            ));
        }
        parse(msg)
    }

    /// A list reply: in parts when the client reads them (also when short, so that one path
    /// serves every size), else as one message.
    fn reply_list<T>(&self, r: Result<Vec<T>, EndpointError>) -> Response<OutBody>
    where
        T: Serialize + Send + Unpin + 'static,
    {
        match r {
            Ok(items) if self.reply => {
                let m = serde_json::to_vec(&Reply::Ok(Vec::<T>::new())).expect("replies serialize");
                let budget = crate::parts::budget(self.limits.reply);
                let mut resp =
                    Response::new(OutBody::new(&m, Some(crate::parts::stream(items, budget))));
                resp.headers_mut()
                    .insert(wire::HDR_REPLY_PARTS, http::HeaderValue::from_static("1"));
                resp
            }
            r => reply(r),
        }
    }

    /// `list_versions_many`'s reply: in parts as [`wire::ManyItem`]s.
    fn reply_many(
        &self,
        r: Result<wire::Results<Vec<zrepl_zfs_types::FilesystemVersion>>, EndpointError>,
    ) -> Response<OutBody> {
        if self.reply {
            let per_item = wire::versions_per_item(crate::parts::budget(self.limits.reply));
            self.reply_list(r.map(|r| wire::many_items(r, per_item)))
        } else {
            reply(r)
        }
    }
}

/// Splits a request into its method, message and parts, or refuses it. A request without
/// parts must end cleanly after its message (within the deadline) unless it carries a stream.
async fn open(
    req: Request<Incoming>,
    limits: wire::Limits,
    takes_stream: impl Fn(&str) -> bool,
) -> Result<(String, Vec<u8>, Option<InStream>, Parts, http::HeaderMap), EndpointError> {
    let (parts, body) = req.into_parts();
    if parts.method != http::Method::POST {
        return Err(EndpointError::invalid("requests must be POST"));
    }
    let method = parts
        .uri
        .path()
        .strip_prefix("/v1/")
        .ok_or_else(|| EndpointError::invalid(format!("unknown path {}", parts.uri.path())))?
        .to_string();
    let mut body = InStream::new(body);
    let msg = tokio::time::timeout(wire::REQUEST_DEADLINE, body.message(limits.request))
        .await
        .map_err(|_| {
            EndpointError::invalid(format!(
                "request {method}: its message did not arrive within {:?}",
                wire::REQUEST_DEADLINE
            ))
        })?
        .map_err(|e| EndpointError::invalid(format!("request {method}: {e}")))?;
    let headers = parts.headers;
    let mut p = Parts {
        request: None,
        reply: headers.contains_key(wire::HDR_REPLY_PARTS),
        limits,
    };
    if takes_stream(&method) {
        return Ok((method, msg, Some(body), p, headers));
    }
    if headers.contains_key(wire::HDR_REQUEST_PARTS) {
        p.request = Some(body);
        return Ok((method, msg, None, p, headers));
    }
    let finished = tokio::time::timeout(wire::REQUEST_DEADLINE, body.finish())
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("it did not end within {:?}", wire::REQUEST_DEADLINE),
            ))
        });
    if let Err(e) = finished {
        return Err(EndpointError::invalid(format!("request {method}: {e}")));
    }
    Ok((method, msg, None, p, headers))
}

/// The methods both roles serve, for an endpoint `$ep` of either trait.
macro_rules! common {
    ($ep:expr, $method:expr, $msg:expr, $p:expr) => {
        match $method {
            method::PING => return reply($p.single::<wire::Ping>($msg).map(|p| p.message)),
            method::LIST_FILESYSTEMS => {
                return match $p.single::<wire::Empty>($msg) {
                    Ok(_) => $p.reply_list($ep.list_filesystems().await),
                    Err(e) => reply::<()>(Err(e)),
                }
            }
            method::LIST_VERSIONS => {
                return match $p.single::<wire::FilesystemReq>($msg) {
                    Ok(r) => $p.reply_list($ep.list_versions(&r.filesystem).await),
                    Err(e) => reply::<()>(Err(e)),
                }
            }
            method::LIST_VERSIONS_MANY => {
                return match $p.batch::<wire::FilesystemsReq>($msg).await {
                    Ok(r) => $p.reply_many($ep.list_versions_many(&r.filesystems).await),
                    Err(e) => reply::<()>(Err(e)),
                }
            }
            method::DESTROY_SNAPSHOTS => {
                return match $p.batch::<wire::DestroyReq>($msg).await {
                    Ok(r) => {
                        $p.reply_list($ep.destroy_snapshots(&r.filesystem, &r.snapshots).await)
                    }
                    Err(e) => reply::<()>(Err(e)),
                }
            }
            _ => {}
        }
    };
}

async fn sender_dispatch<E: Sender + 'static>(
    ep: Arc<E>,
    opts: ServeOptions,
    req: Request<Incoming>,
) -> Response<OutBody> {
    // No sender method carries a stream in.
    let (method, msg, _, mut p, headers) = match open(req, opts.limits, |_| false).await {
        Ok(x) => x,
        Err(e) => return reply::<()>(Err(e)),
    };
    common!(ep, method.as_str(), &msg, p);
    match method.as_str() {
        method::REPLICATION_CURSOR => match p.single::<wire::FilesystemReq>(&msg) {
            Ok(r) => reply(ep.replication_cursor(&r.filesystem).await),
            Err(e) => reply::<()>(Err(e)),
        },
        method::SEND_DRY => match p.single::<SendRequest>(&msg) {
            Ok(r) => reply(ep.send_dry(&r).await),
            Err(e) => reply::<()>(Err(e)),
        },
        method::SEND_COMPLETED => match p.single::<SendRequest>(&msg) {
            Ok(r) => reply(ep.send_completed(&r).await),
            Err(e) => reply::<()>(Err(e)),
        },
        method::REPLICATION_CURSORS => match p.batch::<wire::FilesystemsReq>(&msg).await {
            Ok(r) => p.reply_list(ep.replication_cursors(&r.filesystems).await),
            Err(e) => reply::<()>(Err(e)),
        },
        method::PREPARE_SENDS => match p.batch::<wire::SendsReq>(&msg).await {
            Ok(r) => reply(ep.prepare_sends(&r.requests).await),
            Err(e) => reply::<()>(Err(e)),
        },
        method::SENDS_COMPLETED => match p.batch::<wire::SendsReq>(&msg).await {
            Ok(r) => p.reply_list(ep.sends_completed(&r.requests).await),
            Err(e) => reply::<()>(Err(e)),
        },
        method::CONVERGE => match p.batch::<wire::ConvergeReq>(&msg).await {
            Ok(r) => p.reply_list(Sender::converge(&*ep, &r.requests).await),
            Err(e) => reply::<()>(Err(e)),
        },
        method::SEND => {
            let r = match p.single::<SendRequest>(&msg) {
                Ok(r) => r,
                Err(e) => return reply::<()>(Err(e)),
            };
            let (res, stream) = match ep.send(r).await {
                Ok(x) => x,
                Err(e) => return reply::<()>(Err(e)),
            };
            let level = headers
                .get(wire::HDR_ZSTD_LEVEL)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or(3);
            let zstd = match headers.get(wire::HDR_ACCEPT_ZSTD).map(|v| v.as_bytes()) {
                Some(b"always") => true,
                Some(b"auto") => opts.send_compressible,
                _ => false,
            };
            let (stream, encoding) = if zstd {
                (crate::zstd_encode(stream, level), "zstd")
            } else {
                (stream, "identity")
            };
            let m = serde_json::to_vec(&Reply::Ok(res)).expect("replies serialize");
            let mut resp = Response::new(OutBody::new(&m, Some(stream)));
            resp.headers_mut()
                .insert(wire::HDR_ENCODING, http::HeaderValue::from_static(encoding));
            resp
        }
        m => reply::<()>(Err(EndpointError::invalid(format!(
            "unknown method {m:?} (this peer is a sender)"
        )))),
    }
}

async fn receiver_dispatch<E: Receiver + 'static>(
    ep: Arc<E>,
    opts: ServeOptions,
    req: Request<Incoming>,
) -> Response<OutBody> {
    let (method, msg, body, mut p, headers) =
        match open(req, opts.limits, |m| m == method::RECEIVE).await {
            Ok(x) => x,
            Err(e) => return reply::<()>(Err(e)),
        };
    if let Some(body) = body {
        let r = match parse::<ReceiveRequest>(&msg) {
            Ok(r) => r,
            Err(e) => return reply::<()>(Err(e)),
        };
        let stream = match headers.get(wire::HDR_ENCODING).map(|v| v.as_bytes()) {
            None | Some(b"identity") => body.into_stream(),
            Some(b"zstd") => crate::zstd_decode(body.into_stream()),
            Some(other) => {
                return reply::<()>(Err(EndpointError::invalid(format!(
                    "unknown stream encoding {:?}",
                    String::from_utf8_lossy(other)
                ))))
            }
        };
        return reply(ep.receive(r, stream).await);
    }
    common!(ep, method.as_str(), &msg, p);
    if method == method::RECEIVES_COMPLETED {
        return match p.batch::<wire::ReceivesReq>(&msg).await {
            Ok(r) => p.reply_list(ep.receives_completed(&r.requests).await),
            Err(e) => reply::<()>(Err(e)),
        };
    }
    if method == method::CONVERGE {
        return match p.batch::<wire::ConvergeReq>(&msg).await {
            Ok(r) => p.reply_list(Receiver::converge(&*ep, &r.requests).await),
            Err(e) => reply::<()>(Err(e)),
        };
    }
    reply::<()>(Err(EndpointError::invalid(format!(
        "unknown method {method:?} (this peer is a receiver)"
    ))))
}
