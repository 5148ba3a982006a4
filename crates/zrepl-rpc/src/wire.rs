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

/// The message limits a side enforces: a message (or one part, PROTOCOL.md §4b) longer than
/// these is refused. Both sides must use the same values; only tests lower them (see
/// [`Limits::lowered_by_env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub request: usize,
    pub reply: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request: MAX_REQUEST,
            reply: MAX_REPLY,
        }
    }
}

/// The environment variable that lowers the message limits (`<request>,<reply>` in bytes), so
/// that tests on real ZFS can exceed them with a few thousand snapshots instead of half a
/// million. Values above the defaults (or malformed ones) are ignored: it can never raise them.
pub const LIMITS_ENV: &str = "ZREPL_RPC_MESSAGE_LIMITS";

impl Limits {
    /// The defaults, lowered by `value` (the content of [`LIMITS_ENV`]) where it asks for less.
    pub fn lowered(value: Option<&str>) -> Limits {
        let d = Limits::default();
        let Some((q, r)) = value.and_then(|v| v.split_once(',')) else {
            return d;
        };
        let parse = |s: &str, max: usize| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1024)
                .map_or(max, |n| n.min(max))
        };
        Limits {
            request: parse(q, d.request),
            reply: parse(r, d.reply),
        }
    }

    /// [`Limits::lowered`] by this process's environment.
    pub fn lowered_by_env() -> Limits {
        Limits::lowered(std::env::var(LIMITS_ENV).ok().as_deref())
    }
}

/// The most bytes of parts one request or reply may carry in total (PROTOCOL.md §4b): bounds
/// what a peer can make us hold while leaving room for millions of snapshots.
pub const MAX_PARTS_TOTAL: usize = 1 << 30;
/// Request header: the message's list is empty and its items follow as parts.
pub const HDR_REQUEST_PARTS: &str = "zrepl-request-parts";
/// Request header: the client reads a list reply in parts. Response header: it is in parts.
pub const HDR_REPLY_PARTS: &str = "zrepl-reply-parts";
/// How many versions one `list_versions_many` reply item carries for a part budget of
/// `budget` bytes: a version's JSON is at most ~400 bytes (a 255-byte name), so an item never
/// outgrows its part.
pub fn versions_per_item(budget: usize) -> usize {
    (budget / 512).max(1)
}

/// A request whose one list can travel as parts: the message carries the rest with the list
/// empty.
pub trait Batch: Serialize + serde::de::DeserializeOwned {
    type Item: Serialize + serde::de::DeserializeOwned;
    fn take_items(&mut self) -> Vec<Self::Item>;
    fn put_items(&mut self, items: Vec<Self::Item>);
}

macro_rules! batch {
    ($t:ty, $field:ident, $item:ty) => {
        impl Batch for $t {
            type Item = $item;
            fn take_items(&mut self) -> Vec<$item> {
                std::mem::take(&mut self.$field)
            }
            fn put_items(&mut self, items: Vec<$item>) {
                self.$field = items;
            }
        }
    };
}
batch!(FilesystemsReq, filesystems, DatasetPath);
batch!(SendsReq, requests, zrepl_protocol::SendRequest);
batch!(ReceivesReq, requests, zrepl_protocol::ReceiveRequest);
batch!(ConvergeReq, requests, zrepl_protocol::ConvergeRequest);
batch!(DestroyReq, snapshots, FilesystemVersion);

/// One item of a `list_versions_many` reply in parts: versions of the request's `index`-th
/// filesystem (a filesystem's listing may span several items, in order), or its error.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ManyItem {
    Versions {
        index: u32,
        versions: Vec<FilesystemVersion>,
    },
    Error {
        index: u32,
        error: EndpointError,
    },
}

/// A `list_versions_many` result as reply items of at most `per_item` versions: every
/// filesystem has at least one item.
pub fn many_items(r: Results<Vec<FilesystemVersion>>, per_item: usize) -> Vec<ManyItem> {
    let per_item = per_item.max(1);
    let mut out = Vec::with_capacity(r.len());
    for (i, res) in r.into_iter().enumerate() {
        let index = i as u32;
        match res {
            Err(error) => out.push(ManyItem::Error { index, error }),
            Ok(mut v) if v.len() > per_item => {
                let mut rest = v.split_off(per_item);
                out.push(ManyItem::Versions { index, versions: v });
                while !rest.is_empty() {
                    let tail = rest.split_off(rest.len().min(per_item));
                    out.push(ManyItem::Versions {
                        index,
                        versions: rest,
                    });
                    rest = tail;
                }
            }
            Ok(versions) => out.push(ManyItem::Versions { index, versions }),
        }
    }
    out
}

/// Reassembles the result of `n` filesystems from reply items; a peer's items that name a
/// filesystem out of order, twice with an error, or leave one out are a malformed reply.
pub fn from_many_items(
    n: usize,
    items: Vec<ManyItem>,
) -> Result<Results<Vec<FilesystemVersion>>, String> {
    let mut out: Vec<Option<Result<Vec<FilesystemVersion>, EndpointError>>> =
        (0..n).map(|_| None).collect();
    let mut last = 0usize;
    for it in items {
        let i = match &it {
            ManyItem::Versions { index, .. } | ManyItem::Error { index, .. } => *index as usize,
        };
        if i >= n || i < last {
            return Err(format!(
                "reply item for filesystem #{i} out of order or range ({n} asked)"
            ));
        }
        last = i;
        match (it, &mut out[i]) {
            (ManyItem::Versions { versions, .. }, slot @ None) => *slot = Some(Ok(versions)),
            (ManyItem::Versions { versions, .. }, Some(Ok(v))) => v.extend(versions),
            (ManyItem::Error { error, .. }, slot @ None) => *slot = Some(Err(error)),
            _ => {
                return Err(format!(
                    "reply items for filesystem #{i} contradict each other"
                ))
            }
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, r)| r.ok_or_else(|| format!("reply has no item for filesystem #{i}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zrepl_protocol::ErrorKind;
    use zrepl_zfs_types::VersionType;

    fn v(g: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ: VersionType::Snapshot,
            name: format!("s{g}"),
            guid: g,
            createtxg: g,
            creation: 0,
            userrefs: None,
        }
    }

    fn listing(n: u64) -> Vec<FilesystemVersion> {
        (1..=n).map(v).collect()
    }

    #[test]
    fn many_items_round_trip_at_every_item_size() {
        let results = || -> Results<Vec<FilesystemVersion>> {
            vec![
                Ok(listing(10)),
                Ok(vec![]),
                Err(EndpointError::invalid("refused")),
                Ok(listing(1)),
                Ok(listing(7)),
            ]
        };
        for per_item in [0, 1, 2, 3, 7, 10, 100] {
            let items = many_items(results(), per_item);
            assert!(items.iter().all(|i| match i {
                ManyItem::Versions { versions, .. } => versions.len() <= per_item.max(1),
                ManyItem::Error { .. } => true,
            }));
            let back = from_many_items(5, items).unwrap();
            let want = results();
            assert_eq!(back.len(), want.len());
            for (b, w) in back.iter().zip(&want) {
                match (b, w) {
                    (Ok(b), Ok(w)) => assert_eq!(b, w, "per_item {per_item}"),
                    (Err(b), Err(w)) => assert_eq!(b.kind, w.kind),
                    _ => panic!("per_item {per_item}: {b:?} != {w:?}"),
                }
            }
        }
    }

    #[test]
    fn malformed_many_items_are_refused() {
        let ver = |index, n| ManyItem::Versions {
            index,
            versions: listing(n),
        };
        let err = |index| ManyItem::Error {
            index,
            error: EndpointError::new(ErrorKind::Zfs, "x"),
        };
        let cases: Vec<(usize, Vec<ManyItem>, &str)> = vec![
            (1, vec![], "no item for filesystem #0"),
            (2, vec![ver(0, 1)], "no item for filesystem #1"),
            (1, vec![ver(1, 1)], "out of order or range"),
            (2, vec![ver(1, 1), ver(0, 1)], "out of order or range"),
            (1, vec![ver(0, 1), err(0)], "contradict"),
            (1, vec![err(0), ver(0, 1)], "contradict"),
            (1, vec![err(0), err(0)], "contradict"),
        ];
        for (n, items, want) in cases {
            let e = from_many_items(n, items).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
