//! The RPCs: names, messages and limits (PROTOCOL.md §3). Every message is JSON; every field a
//! peer sends is untrusted and validated by the endpoint that serves it.

use serde::{Deserialize, Serialize};
use zrepl_protocol::EndpointError;
use zrepl_zfs_types::{DatasetPath, FilesystemVersion};

/// Largest request message (a destroy of many snapshots is the biggest).
pub const MAX_REQUEST: usize = 4 << 20;
/// How long the server waits for a control request's message (and, where no stream follows,
/// its end) once the request started: a peer cannot hold a request slot by sending slowly.
pub const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
/// Largest reply message (a listing of a filesystem with very many snapshots).
pub const MAX_REPLY: usize = 64 << 20;
/// Request header: the encoding of the stream that follows the request message (`recv`).
pub const HDR_ENCODING: &str = "zrepl-encoding";
/// Request header (`send`): the client accepts a zstd stream, `auto` or `always`.
pub const HDR_ACCEPT_ZSTD: &str = "zrepl-accept-zstd";
/// Request header (`send`): zstd level the client asks for.
pub const HDR_ZSTD_LEVEL: &str = "zrepl-zstd-level";

/// The methods, as `/v1/<name>` paths.
pub mod method {
    pub const PING: &str = "ping";
    pub const LIST_FILESYSTEMS: &str = "list_filesystems";
    pub const LIST_VERSIONS: &str = "list_versions";
    pub const DESTROY_SNAPSHOTS: &str = "destroy_snapshots";
    pub const REPLICATION_CURSOR: &str = "replication_cursor";
    pub const SEND_DRY: &str = "send_dry";
    pub const SEND: &str = "send";
    pub const SEND_COMPLETED: &str = "send_completed";
    pub const RECEIVE: &str = "receive";
    pub const LIST_VERSIONS_MANY: &str = "list_versions_many";
    pub const PREPARE_SENDS: &str = "prepare_sends";
    pub const SENDS_COMPLETED: &str = "sends_completed";
    pub const RECEIVES_COMPLETED: &str = "receives_completed";
    pub const REPLICATION_CURSORS: &str = "replication_cursors";
    pub const CONVERGE: &str = "converge";
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemReq {
    pub filesystem: DatasetPath,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemsReq {
    pub filesystems: Vec<DatasetPath>,
}

/// `prepare_sends` and `sends_completed`: the steps of a round.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendsReq {
    pub requests: Vec<zrepl_protocol::SendRequest>,
}

/// `receives_completed`: the received steps of a round.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceivesReq {
    pub requests: Vec<zrepl_protocol::ReceiveRequest>,
}

/// `converge` (sender and receiver): the filesystems the round had no step for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvergeReq {
    pub requests: Vec<zrepl_protocol::ConvergeRequest>,
}

/// One result per item of a batched request.
pub type Results<T> = Vec<Result<T, EndpointError>>;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyReq {
    pub filesystem: DatasetPath,
    pub snapshots: Vec<FilesystemVersion>,
}

/// Every reply: the result or the endpoint's error (its kind decides retries).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    Ok(T),
    Err(EndpointError),
}

impl<T> From<Result<T, EndpointError>> for Reply<T> {
    fn from(r: Result<T, EndpointError>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Err(e),
        }
    }
}

impl<T> From<Reply<T>> for Result<T, EndpointError> {
    fn from(r: Reply<T>) -> Self {
        match r {
            Reply::Ok(v) => Ok(v),
            Reply::Err(e) => Err(e),
        }
    }
}
