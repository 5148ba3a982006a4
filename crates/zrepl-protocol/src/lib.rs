//! The endpoint contract: what the replication driver asks of a sender and a receiver.
//!
//! A push job talks to its local sender and a (local or remote) receiver; a pull job to a remote
//! sender and its local receiver. Both sides implement [`Sender`] / [`Receiver`], whether they are
//! `zrepl-endpoint`'s ZFS-backed endpoints or an RPC client. Every type here may cross the
//! network, so every field a peer sends is untrusted and the endpoints validate it.
//!
//! The traits use `impl Future + Send` so the driver can run filesystems on a multi-threaded
//! runtime without boxing every call.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use zrepl_zfs_types::{DatasetPath, FilesystemVersion};

/// A `zfs send` stream on its way to `zfs recv`.
pub type ByteStream = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// Protection of a replication step's source and target (`replication.protection`, spec §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// Step holds on `from` and `to` while the step runs: it can always be resumed.
    #[default]
    GuaranteeResumability,
    /// Tentative cursor bookmarks instead of holds: incremental replication stays possible.
    GuaranteeIncremental,
    /// Nothing.
    GuaranteeNothing,
}

/// The protection levels for initial (full) and incremental steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReplicationConfig {
    pub initial: Protection,
    pub incremental: Protection,
}

impl ReplicationConfig {
    /// The level for a step that is incremental or not.
    pub fn for_step(&self, incremental: bool) -> Protection {
        if incremental {
            self.incremental
        } else {
            self.initial
        }
    }
}

/// One filesystem as an endpoint lists it. On a receiver, `path` is relative to its root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemInfo {
    pub path: DatasetPath,
    pub is_placeholder: bool,
    /// The receiver's `receive_resume_token`, if a partial receive waits.
    pub resume_token: Option<String>,
}

/// Send `to` (incrementally from `from`) of `filesystem`, or resume with `resume_token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub filesystem: DatasetPath,
    pub from: Option<FilesystemVersion>,
    pub to: FilesystemVersion,
    pub resume_token: Option<String>,
    pub replication: ReplicationConfig,
    /// A package (`zfs send -I from to`, `replication.packages`): the snapshots the stream
    /// creates before `to`, oldest first, as the planner listed them. The sender sends the
    /// package only if these are exactly the snapshots between `from` (a snapshot) and `to`.
    /// Empty: one snapshot (`-i`), as in zrepl.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intermediates: Vec<FilesystemVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    pub used_resume_token: bool,
    /// The sender's size estimate in bytes (0 if unknown).
    pub expected_size: u64,
}

/// Receive a stream into `filesystem` (relative to the receiver's root) as snapshot `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveRequest {
    pub filesystem: DatasetPath,
    pub to: FilesystemVersion,
    /// Abort a partial receive before receiving (the stream is not a resumed one).
    pub clear_resume_token: bool,
    pub replication: ReplicationConfig,
    /// The step's incremental source as the planner saw it, if any. Only a hint: `zfs recv`
    /// itself refuses an incremental stream whose source the target does not have.
    #[serde(default)]
    pub from: Option<FilesystemVersion>,
    /// The driver calls [`Receiver::receives_completed`] for this request after the round: the
    /// receiver may leave the GUID check and the last-received hold to that call.
    #[serde(default)]
    pub deferred: bool,
    /// A package: the snapshots the stream creates before `to` (see [`SendRequest`]); the
    /// stream's first record must recreate the first of them. Received into the filesystem
    /// (the names come from the stream), and checked by listing afterwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intermediates: Vec<FilesystemVersion>,
}

/// `converge`: bring one filesystem's replication abstractions of this side's job to the version
/// both sides have in common, for a filesystem the round had nothing to send for (its steps, if
/// it had any, are completed by `sends_completed`/`receives_completed`). This is what makes a run
/// converge after a crash lost a completion: a quiet filesystem gets no new step, so nothing else
/// would ever move its cursor or release its stale holds.
///
/// The evidence is what this side's own listing showed when the round was planned (the driver
/// passes it back), so converging lists nothing; every operation it leads to is idempotent and
/// touches only this side's job's abstractions, and the cursor is created only on a snapshot
/// whose GUID is still `common`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvergeRequest {
    /// On a receiver, relative to its root.
    pub filesystem: DatasetPath,
    /// The newest version both sides have, as this side lists it: on a sender its snapshot (or
    /// bookmark) with that GUID, on a receiver its newest snapshot.
    pub common: FilesystemVersion,
    /// This side's snapshots that had holds (`userrefs > 0`) in its listing.
    #[serde(default)]
    pub held: Vec<FilesystemVersion>,
    /// This side's bookmarks named like zrepl's cursors (of any job) in its listing.
    #[serde(default)]
    pub bookmarks: Vec<FilesystemVersion>,
    pub replication: ReplicationConfig,
}

/// The outcome of destroying one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyResult {
    #[serde(deserialize_with = "de_printable")]
    pub snapshot: String,
    #[serde(default, deserialize_with = "de_printable_opt")]
    pub error: Option<String>,
}

/// What went wrong at an endpoint. `kind` decides whether the driver retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct EndpointError {
    pub kind: ErrorKind,
    /// From a peer, its control characters arrive escaped (see [`printable`]).
    #[serde(deserialize_with = "de_printable")]
    pub message: String,
}

/// Text as it may be shown on a terminal or written to a log: control characters (terminal
/// escape sequences, carriage returns, newlines that would forge log lines) become visible
/// escapes (`\u{1b}`, `\n`). Every error text a peer sends is decoded through this, so a
/// compromised peer cannot drive an operator's terminal through `zrepl status` or the logs.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn de_printable<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let s = String::deserialize(d)?;
    Ok(printable(&s))
}

fn de_printable_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.as_deref().map(printable))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or names something it may not touch. Never retried.
    InvalidRequest,
    /// A filesystem or version does not exist.
    NotFound,
    /// A ZFS command failed.
    Zfs,
    /// The peer cannot be reached right now; the driver waits for it and tries again.
    Connectivity,
    /// Anything else.
    Internal,
}

impl EndpointError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EndpointError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn zfs(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Zfs, message)
    }
    pub fn is_temporary(&self) -> bool {
        self.kind == ErrorKind::Connectivity
    }
}

pub type Result<T> = std::result::Result<T, EndpointError>;

/// The sending side.
pub trait Sender: Send + Sync {
    /// The filesystems this sender may send (its filter applied).
    fn list_filesystems(&self) -> impl Future<Output = Result<Vec<FilesystemInfo>>> + Send;
    fn list_versions(
        &self,
        fs: &DatasetPath,
    ) -> impl Future<Output = Result<Vec<FilesystemVersion>>> + Send;
    /// [`Sender::list_versions`] of many filesystems, one entry per filesystem in order; one
    /// filesystem's failure is its own entry.
    fn list_versions_many(
        &self,
        fss: &[DatasetPath],
    ) -> impl Future<Output = Result<Vec<Result<Vec<FilesystemVersion>>>>> + Send {
        async move {
            let mut out = Vec::with_capacity(fss.len());
            for fs in fss {
                out.push(self.list_versions(fs).await);
            }
            Ok(out)
        }
    }
    /// Before the steps of a round: protect (and validate) all of them at once, so that `send`
    /// need not do it step by step. Best effort: a request this could not prepare is prepared
    /// by `send` itself. The default does nothing.
    fn prepare_sends(&self, reqs: &[SendRequest]) -> impl Future<Output = Result<()>> + Send {
        let _ = reqs;
        async { Ok(()) }
    }
    /// After the steps of a round: [`Sender::send_completed`] of every received step (in step
    /// order per filesystem), one result per request.
    fn sends_completed(
        &self,
        reqs: &[SendRequest],
    ) -> impl Future<Output = Result<Vec<Result<()>>>> + Send {
        async move {
            let mut out = Vec::with_capacity(reqs.len());
            for r in reqs {
                out.push(self.send_completed(r).await);
            }
            Ok(out)
        }
    }
    /// [`ConvergeRequest`]: move this job's cursor to `common`, release its stale step holds and
    /// destroy its stale cursors and tentative cursors; one result per request.
    fn converge(
        &self,
        reqs: &[ConvergeRequest],
    ) -> impl Future<Output = Result<Vec<Result<()>>>> + Send;
    /// Size estimate of a send, in bytes.
    fn send_dry(&self, req: &SendRequest) -> impl Future<Output = Result<u64>> + Send;
    fn send(
        &self,
        req: SendRequest,
    ) -> impl Future<Output = Result<(SendResponse, ByteStream)>> + Send;
    /// The receiver has the stream: move the cursor, release step protection.
    fn send_completed(&self, req: &SendRequest) -> impl Future<Output = Result<()>> + Send;
    /// The newest replication cursor of this sender's job on `fs`.
    fn replication_cursor(
        &self,
        fs: &DatasetPath,
    ) -> impl Future<Output = Result<Option<FilesystemVersion>>> + Send;
    /// [`Sender::replication_cursor`] of many filesystems, one entry per filesystem in order.
    fn replication_cursors(
        &self,
        fss: &[DatasetPath],
    ) -> impl Future<Output = Result<Vec<Result<Option<FilesystemVersion>>>>> + Send {
        async move {
            let mut out = Vec::with_capacity(fss.len());
            for fs in fss {
                out.push(self.replication_cursor(fs).await);
            }
            Ok(out)
        }
    }
    /// What pruning needs of this sender: [`Sender::replication_cursors`] and
    /// [`Sender::list_versions_many`] of `fss`, asked at the same time. An endpoint that finds
    /// its cursors among the versions lists them once.
    #[allow(clippy::type_complexity)]
    fn cursors_and_versions(
        &self,
        fss: &[DatasetPath],
    ) -> impl Future<
        Output = (
            Result<Vec<Result<Option<FilesystemVersion>>>>,
            Result<Vec<Result<Vec<FilesystemVersion>>>>,
        ),
    > + Send {
        futures::future::join(self.replication_cursors(fss), self.list_versions_many(fss))
    }
    fn destroy_snapshots(
        &self,
        fs: &DatasetPath,
        snapshots: &[FilesystemVersion],
    ) -> impl Future<Output = Result<Vec<DestroyResult>>> + Send;
}

/// The receiving side. Paths are relative to its root.
pub trait Receiver: Send + Sync {
    fn list_filesystems(&self) -> impl Future<Output = Result<Vec<FilesystemInfo>>> + Send;
    fn list_versions(
        &self,
        fs: &DatasetPath,
    ) -> impl Future<Output = Result<Vec<FilesystemVersion>>> + Send;
    /// [`Receiver::list_versions`] of many filesystems, one entry per filesystem in order.
    fn list_versions_many(
        &self,
        fss: &[DatasetPath],
    ) -> impl Future<Output = Result<Vec<Result<Vec<FilesystemVersion>>>>> + Send {
        async move {
            let mut out = Vec::with_capacity(fss.len());
            for fs in fss {
                out.push(self.list_versions(fs).await);
            }
            Ok(out)
        }
    }
    fn receive(
        &self,
        req: ReceiveRequest,
        stream: ByteStream,
    ) -> impl Future<Output = Result<()>> + Send;
    /// After the round: the work `receive` left for later on `deferred` requests (the GUID
    /// check of the received snapshot, the last-received hold), one result per request; the
    /// sender's cursor only moves for the requests that succeed here. The default has nothing
    /// left to do.
    fn receives_completed(
        &self,
        reqs: &[ReceiveRequest],
    ) -> impl Future<Output = Result<Vec<Result<()>>>> + Send {
        let n = reqs.len();
        async move { Ok((0..n).map(|_| Ok(())).collect()) }
    }
    /// [`ConvergeRequest`]: the last-received hold of this job on `common` (unless the protection
    /// is `guarantee_nothing`) and on no other snapshot; one result per request.
    fn converge(
        &self,
        reqs: &[ConvergeRequest],
    ) -> impl Future<Output = Result<Vec<Result<()>>>> + Send;
    fn destroy_snapshots(
        &self,
        fs: &DatasetPath,
        snapshots: &[FilesystemVersion],
    ) -> impl Future<Output = Result<Vec<DestroyResult>>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_arrives_printable() {
        let e: EndpointError = serde_json::from_str(
            r#"{"kind":"zfs","message":"boom\u001b[2J\u001b]0;owned\u0007\nfake log line\rx"}"#,
        )
        .unwrap();
        assert_eq!(
            e.message,
            "boom\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\nfake log line\\rx"
        );
        assert!(!e.message.chars().any(char::is_control));
        let d: DestroyResult =
            serde_json::from_str(r#"{"snapshot":"a\u001b","error":"x\ny"}"#).unwrap();
        assert_eq!(d.snapshot, "a\\u{1b}");
        assert_eq!(d.error.as_deref(), Some("x\\ny"));
        let d: DestroyResult = serde_json::from_str(r#"{"snapshot":"a"}"#).unwrap();
        assert_eq!(d.error, None);
        // Plain text is unchanged.
        assert_eq!(
            printable("pool/a@snap: dataset is busy"),
            "pool/a@snap: dataset is busy"
        );
    }
}
