//! The receiving endpoint.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Mutex;
use zrepl_protocol::{
    ByteStream, ConvergeRequest, DestroyResult, EndpointError, FilesystemInfo, Protection,
    ReceiveRequest,
};
use zrepl_zfs::{
    DatasetPath, FilesystemVersion, RecvRequest, VersionPath, VersionType, VersionTypes, Zfs,
    ZfsError, PLACEHOLDER_PROPERTY,
};
use zrepl_zfs_types::abstraction::{last_received_hold_tag, parse_last_received_hold_tag};

use crate::error::zfs_err;
use crate::plan::Replacing;
use crate::registry::Registry;

/// How to create placeholders for missing parents (`recv.placeholder.encryption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceholderPolicy {
    /// Creating a placeholder is an error: the user has to decide.
    Unspecified,
    Inherit,
    Off,
}

/// A receiving job's settings.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// The receiving job's name: part of the last-received hold tag.
    pub job: String,
    /// `root_fs`: must exist; nothing above or beside it is ever touched.
    pub root_fs: DatasetPath,
    /// For a sink, the client identity: filesystems land in `root_fs/<identity>/...`, and the
    /// identity dataset is created on demand (with inherited encryption, as in zrepl).
    pub client_identity: Option<String>,
    pub placeholder: PlaceholderPolicy,
    /// `recv.properties.inherit`: `-x <prop>`.
    pub inherit: Vec<String>,
    /// `recv.properties.override`: `-o <prop>=<value>`.
    pub override_: Vec<(String, String)>,
    /// `recv.bandwidth_limit`.
    pub bandwidth_limit: Option<crate::BandwidthLimit>,
    /// `mapping.identity_component` (a sink's; true as in zrepl): `false` receives below
    /// `root_fs` itself, whatever `client_identity` says.
    pub identity_component: bool,
    /// `mapping.strip_prefix`: removed from every sender path ([`crate::plan::mapping`]).
    pub strip_prefix: Option<DatasetPath>,
}

/// A receiver over the local `zfs`.
#[derive(Clone)]
pub struct LocalReceiver {
    zfs: Zfs,
    cfg: Arc<ReceiverConfig>,
    root: DatasetPath,
    /// `mapping.strip_prefix`: removed from every sender path.
    strip_prefix: Option<DatasetPath>,
    /// Serializes placeholder creation (zrepl's per-receiver mutex), shared by every receiver
    /// of the same root in this process: a peer's concurrent streams arrive on connections of
    /// their own, each served by its own `LocalReceiver`.
    /// State shared by every receiver of the same root in this process (see [`RootShared`]).
    shared: Arc<RootShared>,
    /// Per local filesystem, the snapshots that had holds (`userrefs > 0`) in the last full
    /// listing of it: where older last-received holds may be, so that completing a receive
    /// looks only at those snapshots instead of listing the filesystem again.
    held: Arc<std::sync::Mutex<std::collections::HashMap<DatasetPath, Vec<String>>>>,
    /// The versions listed together with the filesystems by the last `list_filesystems`.
    prefetched: Arc<std::sync::Mutex<crate::listings::Prefetch>>,
    /// `recv.bandwidth_limit`, shared by all streams of the job in this process.
    bucket: Option<Arc<crate::ratelimit::Bucket>>,
    /// Versions listings kept between runs (see [`crate::listings`]), the root's.
    listings: Arc<crate::listings::Listings>,
}

/// What the receivers of one root in this process share: a peer's control RPCs and its
/// streams arrive on different connections, each served by its own `LocalReceiver`.
#[derive(Default)]
pub(crate) struct RootShared {
    /// Serializes placeholder creation (zrepl's per-receiver mutex).
    create_lock: Mutex<()>,
    /// Receives whose stream was checked (its BEGIN record names the requested GUIDs) and
    /// that `zfs recv` completed into the requested snapshot: (local filesystem, snapshot
    /// name, guid). `receives_completed` needs no listing to check those (used once).
    verified: std::sync::Mutex<HashSet<(DatasetPath, String, u64)>>,
    /// Filesystems a receive created (they did not exist before it, so they have no
    /// holds but those completion makes). Used once by `receives_completed`, where the
    /// round's planning did not list the filesystem.
    created: std::sync::Mutex<HashSet<DatasetPath>>,
}

/// At most this many [`RootShared::verified`] (and `created`) entries are kept.
const MAX_VERIFIED: usize = 1 << 16;

/// Adds `item` to one of [`RootShared`]'s sets. Entries of rounds that never completed stay;
/// they are bounded (losing only the shortcut: `receives_completed` then lists).
fn insert_bounded<T: std::hash::Hash + Eq>(set: &std::sync::Mutex<HashSet<T>>, item: T) {
    let mut s = set.lock().unwrap_or_else(|e| e.into_inner());
    if s.len() >= MAX_VERIFIED {
        s.clear();
    }
    s.insert(item);
}

impl LocalReceiver {
    /// The local paths of those of `fss` this receiver maps.
    fn local_paths<'a>(&self, fss: impl Iterator<Item = &'a DatasetPath>) -> Vec<DatasetPath> {
        fss.filter_map(|f| self.local_path(f).ok()).collect()
    }

    /// The filesystems below the root with the placeholder mark, resume token and
    /// `snapshots_changed`, and the versions of those marked `replacing` (which
    /// `list_filesystems` must look at): one filesystem listing, no snapshot listing in the
    /// usual case.
    async fn list_filesystems_only(
        &self,
    ) -> Result<
        (
            std::collections::BTreeMap<DatasetPath, zrepl_zfs::Properties>,
            zrepl_zfs::VersionsByFilesystem,
        ),
        ZfsError,
    > {
        let props = self
            .zfs
            .get_properties_recursive(
                &self.root,
                None,
                &[
                    PLACEHOLDER_PROPERTY,
                    "receive_resume_token",
                    crate::listings::SNAPSHOTS_CHANGED,
                ],
            )
            .await?;
        let mut versions = zrepl_zfs::VersionsByFilesystem::new();
        for (path, p) in &props {
            let marked = p.get(PLACEHOLDER_PROPERTY).is_some_and(|v| {
                v.source == zrepl_zfs::PropertySource::Local
                    && v.value == zrepl_zfs::PLACEHOLDER_REPLACING
            });
            if marked {
                versions.insert(
                    path.clone(),
                    self.zfs.list_versions(path, VersionTypes::All).await?,
                );
            }
        }
        Ok((props, versions))
    }

    /// Fails if the client identity is not a single valid dataset name component.
    /// State shared with the other receivers of the same root (placeholder creation, checked
    /// receives) and the job's bandwidth bucket come from `reg`.
    pub fn new(zfs: Zfs, cfg: ReceiverConfig, reg: &Registry) -> Result<Self, EndpointError> {
        let root = match cfg
            .client_identity
            .as_ref()
            .filter(|_| cfg.identity_component)
        {
            None => cfg.root_fs.clone(),
            Some(id) => {
                let idp = DatasetPath::from_components([id.clone()]).map_err(|e| {
                    EndpointError::invalid(format!("invalid client identity {id:?}: {e}"))
                })?;
                cfg.root_fs.join(&idp).map_err(|e| {
                    EndpointError::invalid(format!("invalid client identity {id:?}: {e}"))
                })?
            }
        };
        let strip_prefix = cfg.strip_prefix.clone().filter(|p| !p.is_empty());
        let bucket = cfg
            .bandwidth_limit
            .map(|l| reg.bucket(&format!("recv\0{}", cfg.job), l));
        Ok(LocalReceiver {
            zfs,
            cfg: Arc::new(cfg),
            listings: reg.listings(&format!("receiver\0{root}")),
            shared: reg.root(&root),
            root,
            strip_prefix,
            held: Arc::default(),
            prefetched: Arc::default(),
            bucket,
        })
    }

    /// Where this receiver puts filesystems: `root_fs[/identity]`.
    pub fn root(&self) -> &DatasetPath {
        &self.root
    }

    /// Maps a peer's path below our root ([`crate::plan::mapping`]). The path is a validated
    /// `DatasetPath` (no empty, `.` or `..` components), so the result is always strictly
    /// inside the root.
    fn local_path(&self, fs: &DatasetPath) -> Result<DatasetPath, EndpointError> {
        let p = crate::plan::mapping::receiving_path(&self.root, self.strip_prefix.as_ref(), fs)
            .map_err(EndpointError::invalid)?;
        debug_assert!(p.has_prefix(&self.root) && p != self.root);
        Ok(p)
    }

    async fn check_root_fs(&self) -> Result<(), EndpointError> {
        match self.zfs.exists(&self.cfg.root_fs).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                // An exported (or not yet imported) pool is the usual reason: say so.
                let pool = self
                    .cfg
                    .root_fs
                    .pool()
                    .and_then(|p| DatasetPath::parse(p).ok());
                let imported = match &pool {
                    Some(p) if *p != self.cfg.root_fs => self.zfs.exists(p).await.unwrap_or(true),
                    _ => false,
                };
                Err(EndpointError::not_found(match (pool, imported) {
                    (Some(p), false) => format!(
                        "pool {:?} of root_fs {:?} is not imported; nothing was received (import it and the next run catches up)",
                        p.to_string(),
                        self.cfg.root_fs.to_string()
                    ),
                    _ => format!(
                        "root_fs {:?} does not exist",
                        self.cfg.root_fs.to_string()
                    ),
                }))
            }
            Err(e) => Err(zfs_err("cannot check root_fs", e)),
        }
    }

    /// Creates every missing ancestor of `lp` between root_fs and `lp` as a placeholder
    /// ([`crate::plan::parents`]). `seen`: the ancestors' state as the caller just listed it;
    /// if it shows them all present nothing else is asked. Otherwise they are listed again
    /// under the creation lock (another receiver of the same root may be creating them) and
    /// created top-down.
    async fn ensure_parents(
        &self,
        lp: &DatasetPath,
        seen: &std::collections::BTreeMap<DatasetPath, zrepl_zfs::PlaceholderState>,
    ) -> Result<(), EndpointError> {
        use crate::plan::parents;
        let decide = |states: &std::collections::BTreeMap<_, _>| {
            parents::missing_parents(
                lp,
                &self.cfg.root_fs,
                &self.root,
                self.cfg.placeholder,
                states,
            )
        };
        if decide(seen).is_ok_and(|c| c.is_empty()) {
            return Ok(());
        }
        let _guard = self.shared.create_lock.lock().await;
        let states = self
            .zfs
            .placeholder_states(&parents::to_inspect(lp))
            .await
            .map_err(|e| zfs_err("cannot check parents", e))?;
        for (anc, enc) in decide(&states)? {
            match self.zfs.create_placeholder(&anc, enc).await {
                Ok(()) => {}
                // Someone (another receiver of the same root) created it meanwhile.
                Err(e) if matches!(self.zfs.exists(&anc).await, Ok(true)) => {
                    tracing::debug!(fs = %anc, error = %e, "placeholder appeared concurrently");
                }
                Err(e) => {
                    return Err(zfs_err(
                        format!("cannot create placeholder filesystem {anc}"),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Rolls a placeholder back to its oldest snapshot and destroys that, so `recv -F` replaces
    /// it entirely (zrepl's rollback+force receive).
    async fn clear_placeholder_snapshots(&self, lp: &DatasetPath) -> Result<(), EndpointError> {
        let snaps = self
            .zfs
            .list_versions(lp, VersionTypes::Snapshots)
            .await
            .map_err(|e| zfs_err(format!("cannot list snapshots of {lp}"), e))?;
        if let Some(oldest) = snaps.iter().min_by_key(|s| s.createtxg) {
            let v = VersionPath::of(lp, oldest).map_err(|e| zfs_err("rollback", e))?;
            self.zfs
                .rollback(&v, true)
                .await
                .map_err(|e| zfs_err(format!("cannot roll back placeholder {lp}"), e))?;
            self.zfs
                .destroy_version(&v)
                .await
                .map_err(|e| zfs_err(format!("cannot destroy {v}"), e))?;
        }
        Ok(())
    }

    /// After a successful receive: hold `to` (unless the protection is `guarantee_nothing`),
    /// then release older last-received holds of this job (the new hold exists before the old one
    /// goes). Releasing is best-effort: a failure is logged, the received data stays valid.
    async fn post_recv(
        &self,
        lp: &DatasetPath,
        to: &FilesystemVersion,
        hold: bool,
    ) -> Result<(), EndpointError> {
        let tag = last_received_hold_tag(&self.cfg.job);
        let snap = VersionPath::of(lp, to).map_err(|e| zfs_err("hold", e))?;
        if hold {
            self.zfs
                .hold(&tag, std::slice::from_ref(&snap))
                .await
                .map_err(|e| zfs_err(format!("cannot create last-received hold on {snap}"), e))?;
        }
        if let Err(e) = self.release_old_holds(lp, to, &tag).await {
            tracing::warn!(fs = %lp, error = %e, "cannot release older last-received holds");
        }
        Ok(())
    }

    async fn release_old_holds(
        &self,
        lp: &DatasetPath,
        to: &FilesystemVersion,
        tag: &str,
    ) -> Result<(), EndpointError> {
        let others: Vec<VersionPath> = self
            .zfs
            .list_versions(lp, VersionTypes::Snapshots)
            .await
            .map_err(|e| zfs_err(format!("cannot list snapshots of {lp}"), e))?
            .iter()
            .filter(|v| v.name != to.name && v.userrefs.unwrap_or(0) > 0)
            .filter_map(|v| VersionPath::of(lp, v).ok())
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let holds = self
            .zfs
            .holds(&others)
            .await
            .map_err(|e| zfs_err(format!("cannot list holds on {lp}"), e))?;
        let stale: Vec<VersionPath> = holds
            .into_iter()
            .filter(|(_, tags)| {
                tags.iter()
                    .any(|t| parse_last_received_hold_tag(t) == Some(self.cfg.job.as_str()))
            })
            .map(|(v, _)| v)
            .collect();
        if !stale.is_empty() {
            self.zfs.release(tag, &stale).await.map_err(|e| {
                zfs_err(format!("cannot release old last-received holds on {lp}"), e)
            })?;
        }
        Ok(())
    }
}

/// The GUIDs of the snapshots among `vs`.
fn snapshot_guids(vs: &[FilesystemVersion]) -> Vec<u64> {
    vs.iter()
        .filter(|v| v.typ == VersionType::Snapshot)
        .map(|v| v.guid)
        .collect()
}

impl zrepl_protocol::Receiver for LocalReceiver {
    async fn list_filesystems(&self) -> Result<Vec<FilesystemInfo>, EndpointError> {
        self.prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.check_root_fs().await?;
        // One command for names, placeholder state, resume tokens and all versions of the
        // whole subtree; the versions serve the `list_versions_many` that usually follows (and
        // fill the cache, see `crate::listings`). Where most filesystems are cached, the
        // filesystems only: their versions come from the cache, the others' are listed.
        let cache = crate::sender::listings_enabled(&self.zfs, &self.listings).await;
        let fs_only = cache && self.listings.mostly_cached();
        let (started, wall) = (std::time::Instant::now(), crate::sender::unix_now());
        let generation = self.listings.generation();
        let listed = if fs_only {
            self.list_filesystems_only().await
        } else {
            let mut props = vec![PLACEHOLDER_PROPERTY, "receive_resume_token"];
            if cache {
                props.push(crate::listings::SNAPSHOTS_CHANGED);
            }
            self.zfs
                .list_subtree_with_properties(&self.root, &props)
                .await
        };
        let props = match listed {
            Ok((props, versions)) => {
                // Filesystems marked `replacing`: still placeholders, being received, or
                // replaced (a leftover mark, repaired below).
                let mut unreplaced = HashSet::new();
                let mut leftover = Vec::new();
                for (path, p) in &props {
                    let marked = p.get(PLACEHOLDER_PROPERTY).is_some_and(|v| {
                        v.source == zrepl_zfs::PropertySource::Local
                            && v.value == zrepl_zfs::PLACEHOLDER_REPLACING
                    });
                    if !marked {
                        continue;
                    }
                    let token = p
                        .get("receive_resume_token")
                        .is_some_and(|v| !v.value.is_empty() && v.value != "-");
                    let snaps = versions
                        .get(path)
                        .is_some_and(|vs| vs.iter().any(|v| v.typ == VersionType::Snapshot));
                    match crate::plan::replacing_state(snaps, token) {
                        Replacing::StillPlaceholder => {
                            unreplaced.insert(path.clone());
                        }
                        Replacing::BeingReceived => {}
                        Replacing::Replaced => leftover.push(path.clone()),
                    }
                }
                for path in leftover {
                    match self.zfs.set_placeholder(&path, false).await {
                        Ok(()) => {
                            tracing::info!(fs = %path, "cleared the placeholder mark a crash left on a received filesystem")
                        }
                        Err(e) => {
                            tracing::warn!(fs = %path, error = %e, "cannot clear a leftover placeholder mark")
                        }
                    }
                }
                if cache {
                    let changed = props
                        .iter()
                        .filter_map(|(path, p)| {
                            let v = p.get(crate::listings::SNAPSHOTS_CHANGED)?;
                            Some((path.clone(), crate::listings::parse_changed(&v.value)?))
                        })
                        .collect();
                    self.listings.observe(started, wall, changed);
                    if !fs_only {
                        for (path, vs) in &versions {
                            self.listings.store(path, vs, generation);
                        }
                    }
                } else {
                    self.listings.unobserve();
                }
                if !fs_only {
                    self.prefetched
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .put(generation, versions);
                }
                (props, unreplaced)
            }
            // The client's dataset does not exist yet: nothing received so far.
            Err(ZfsError::DatasetDoesNotExist { .. }) => {
                self.listings.unobserve();
                return Ok(Vec::new());
            }
            Err(e) => {
                return Err(zfs_err(
                    format!("cannot list filesystems below {}", self.root),
                    e,
                ))
            }
        };
        let (props, unreplaced) = props;
        let mut out = Vec::new();
        for (path, p) in props {
            let Some(rel) =
                crate::plan::mapping::sender_path(&self.root, self.strip_prefix.as_ref(), &path)
            else {
                continue;
            };
            let is_placeholder = unreplaced.contains(&path)
                || p.get(PLACEHOLDER_PROPERTY).is_some_and(|v| {
                    v.source == zrepl_zfs::PropertySource::Local
                        && zrepl_zfs::is_placeholder_value(&path, &v.value)
                });
            let resume_token = p
                .get("receive_resume_token")
                .map(|v| v.value.clone())
                .filter(|v| !v.is_empty() && v != "-");
            out.push(FilesystemInfo {
                path: rel,
                is_placeholder,
                resume_token,
            });
        }
        Ok(out)
    }

    async fn list_versions(
        &self,
        fs: &DatasetPath,
    ) -> Result<Vec<FilesystemVersion>, EndpointError> {
        let lp = self.local_path(fs)?;
        self.zfs
            .list_versions(&lp, VersionTypes::All)
            .await
            .map_err(|e| zfs_err(format!("cannot list versions of {lp}"), e))
    }

    async fn list_versions_many(
        &self,
        fss: &[DatasetPath],
    ) -> Result<Vec<Result<Vec<FilesystemVersion>, EndpointError>>, EndpointError> {
        let mut local = Vec::new();
        let mut out: Vec<Result<Vec<FilesystemVersion>, EndpointError>> = Vec::new();
        for f in fss {
            match self.local_path(f) {
                Ok(lp) => {
                    local.push(lp);
                    out.push(Ok(Vec::new()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let prefetched = self
            .prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(self.listings.generation(), &local);
        let listed = match prefetched {
            Some(vs) => vs.into_iter().map(Ok).collect(),
            None => crate::sender::cached_versions_many(&self.zfs, &self.listings, &local).await?,
        };
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            for (lp, vs) in local.iter().zip(&listed) {
                if let Ok(vs) = vs {
                    let names = vs
                        .iter()
                        .filter(|v| v.typ == VersionType::Snapshot && v.userrefs.unwrap_or(0) > 0)
                        .map(|v| v.name.clone())
                        .collect();
                    held.insert(lp.clone(), names);
                }
            }
        }
        let mut listed = listed.into_iter();
        for o in out.iter_mut().filter(|o| o.is_ok()) {
            *o = listed
                .next()
                .unwrap_or_else(|| Err(EndpointError::not_found("not listed")));
        }
        Ok(out)
    }

    async fn receive(&self, req: ReceiveRequest, stream: ByteStream) -> Result<(), EndpointError> {
        if req.to.typ != VersionType::Snapshot {
            return Err(EndpointError::invalid("'to' must be a snapshot"));
        }
        let lp = self.local_path(&req.filesystem)?;
        let target =
            VersionPath::snapshot(&lp, &req.to.name).map_err(|e| zfs_err("invalid 'to'", e))?;
        // What the stream really recreates, before anything changes here: a stream of another
        // snapshot than the request names is refused.
        let mut stream = stream;
        let (head, begin) = zrepl_zfs::read_send_begin(&mut stream)
            .await
            .map_err(|e| match e {
                // As if `zfs recv` had failed reading it (nothing was received yet).
                zrepl_zfs::StreamHeaderError::Io(e) => {
                    EndpointError::zfs(format!("stream for {target} failed: {e}"))
                }
                e @ zrepl_zfs::StreamHeaderError::Format(_) => {
                    EndpointError::invalid(format!("stream for {target}: {e}"))
                }
            })?;
        let from = req.from.as_ref().map_or(0, |f| f.guid);
        let package = !req.intermediates.is_empty();
        if package && req.from.is_none() {
            return Err(EndpointError::invalid(
                "a package (intermediates) must be incremental",
            ));
        }
        // A package's stream begins with its first snapshot.
        let first = req.intermediates.first().unwrap_or(&req.to).guid;
        if begin.toguid != first || begin.fromguid != from {
            return Err(EndpointError::invalid(format!(
                "the stream for {target} recreates guid {:#x} from guid {:#x}, the request says guid {first:#x} from guid {from:#x}; refusing to receive it",
                begin.toguid, begin.fromguid
            )));
        }
        // The rest of a compound stream (a package) is checked record by record on its way to
        // `zfs recv`: every substream is the next one requested, none recreates a snapshot the
        // target has, and no compound header (which could carry properties) follows any of
        // them. That is what lets a package without a header go without the protected `-x`
        // list (`begin.may_carry_properties`).
        let compound = head.len() > zrepl_zfs::SEND_BEGIN_LEN;
        // The target's snapshots as this round's listing left them, if the cache confirms
        // them (a compound stream's check needs their GUIDs; see below). Looked up before
        // the guard below drops them; nothing has changed on ZFS so far.
        // What this endpoint's previous receive into it left serves as well (a package right
        // after the full step that created the filesystem), taken with the guard.
        let now = std::time::Instant::now();
        let cached = compound
            .then(|| {
                self.listings
                    .lookup(std::slice::from_ref(&lp), now)
                    .0
                    .remove(&lp)
                    .map(|vs| snapshot_guids(&vs))
            })
            .flatten();
        let (changing, left) = self.listings.begin_receive(&lp, now);
        let cached = cached.or_else(|| left.clone().filter(|_| compound));
        // Every snapshot GUID the target had before this receive, where known.
        let mut before: Option<Vec<u64>> = left;
        let stream: ByteStream = if compound {
            let rest: Vec<u64> = if package {
                req.intermediates
                    .iter()
                    .skip(1)
                    .chain(std::iter::once(&req.to))
                    .map(|v| v.guid)
                    .collect()
            } else {
                Vec::new()
            };
            let forbidden: Vec<u64> = match cached {
                Some(g) => g,
                None => match self.zfs.list_versions(&lp, VersionTypes::Snapshots).await {
                    Ok(vs) => snapshot_guids(&vs),
                    Err(ZfsError::DatasetDoesNotExist { .. }) => Vec::new(),
                    Err(e) => return Err(zfs_err(format!("cannot list snapshots of {lp}"), e)),
                },
            };
            before = Some(forbidden.clone());
            let forbidden = forbidden.into_iter().collect();
            let check = zrepl_zfs::PackageCheck::new(
                &head[head.len() - zrepl_zfs::SEND_BEGIN_LEN..],
                &rest,
                forbidden,
            )
            .map_err(|e| EndpointError::invalid(format!("stream for {target}: {e}")))?;
            let rest = zrepl_zfs::CheckedPackage::new(
                tokio::io::BufReader::with_capacity(128 << 10, stream),
                check,
            );
            Box::pin(tokio::io::AsyncReadExt::chain(
                std::io::Cursor::new(head),
                rest,
            ))
        } else {
            Box::pin(tokio::io::AsyncReadExt::chain(
                std::io::Cursor::new(head),
                stream,
            ))
        };
        // An incremental step into what the planner saw as an existing filesystem needs no
        // inspection: `zfs recv` without `-F` only applies an incremental stream on top of its
        // source snapshot, so a missing filesystem or a placeholder (which never has the
        // source) makes it fail, and it never destroys anything.
        let st = if req.from.is_some() && !req.clear_resume_token {
            zrepl_zfs::PlaceholderState {
                exists: true,
                is_placeholder: false,
                raw_local_value: None,
            }
        } else {
            // The filesystem and its ancestors in one command.
            let states = self
                .zfs
                .placeholder_states(&crate::plan::parents::to_inspect(&lp))
                .await
                .map_err(|e| zfs_err(format!("cannot inspect {lp}"), e))?;
            let st = states
                .get(&lp)
                .cloned()
                .unwrap_or(zrepl_zfs::PlaceholderState::MISSING);
            // An existing filesystem has its parents; only a new one may need placeholders.
            if !st.exists {
                self.ensure_parents(&lp, &states).await?;
            }
            st
        };
        // Everything that can fail comes before the placeholder flag is cleared, so a failure
        // never leaves an empty filesystem that is no longer marked as a placeholder.
        let resumable = self
            .zfs
            .resumable_recv_supported(&lp)
            .await
            .map_err(|e| zfs_err("feature detection", e))?;
        if req.clear_resume_token && st.exists {
            self.zfs
                .recv_abort(&lp)
                .await
                .map_err(|e| zfs_err(format!("cannot abort partial receive of {lp}"), e))?;
        }
        let mut force = false;
        let mut cleared_placeholder = false;
        // A placeholder whose replacement an earlier receive started (and a crash cut short
        // before `zfs recv` took over) is replaced like any placeholder; one that has real
        // data or a partial receive never is (asked only on this rare path).
        let marked = st.exists
            && req.from.is_none()
            && st.raw_local_value.as_deref() == Some(zrepl_zfs::PLACEHOLDER_REPLACING);
        let replacing = marked && {
            let snaps = self
                .zfs
                .list_versions(&lp, VersionTypes::Snapshots)
                .await
                .map_err(|e| zfs_err(format!("cannot list snapshots of {lp}"), e))?;
            let token = self
                .zfs
                .receive_resume_token(&lp)
                .await
                .map_err(|e| zfs_err(format!("cannot inspect {lp}"), e))?;
            crate::plan::replacing_state(!snaps.is_empty(), token.is_some())
                == Replacing::StillPlaceholder
        };
        if st.exists && (st.is_placeholder || replacing) {
            self.clear_placeholder_snapshots(&lp).await?;
            // Marked, not cleared: until the receive succeeds the filesystem still counts as a
            // placeholder (`list_filesystems`), whatever happens to this process.
            self.zfs
                .mark_placeholder_replacing(&lp)
                .await
                .map_err(|e| {
                    zfs_err(format!("cannot mark placeholder {lp} as being replaced"), e)
                })?;
            cleared_placeholder = true;
            force = true;
        }
        if !st.exists {
            // A new filesystem: it has nothing before this receive.
            before = Some(Vec::new());
        }
        if force {
            before = None;
        }
        if cleared_placeholder {
            zrepl_failpoint::hit("receiver.receive.after_placeholder_cleared")
                .map_err(|e| EndpointError::zfs(e.to_string()))?;
        }
        let mut rr = RecvRequest::new(target.clone());
        // Incremental into an existing filesystem: never forced (checked above).
        rr.package = package && !force;
        rr.force_rollback = force;
        rr.save_partial = resumable;
        rr.exclude_props = crate::plan::receives::receive_excludes(
            &self.cfg.inherit,
            &self.cfg.override_,
            begin.may_carry_properties,
        );
        rr.override_props = self.cfg.override_.clone();
        let stream = crate::ratelimit::limit(self.bucket.as_ref(), stream);
        let result = self.zfs.receive(&rr, stream).await;
        if result.is_ok() && (cleared_placeholder || marked) {
            zrepl_failpoint::hit("receiver.receive.after_recv_before_unmark")
                .map_err(|e| EndpointError::zfs(e.to_string()))?;
            // Real data replaced the placeholder: now the flag goes (`recv -F` keeps the
            // filesystem's local properties). Should this fail, the filesystem has snapshots,
            // so it is no placeholder any more either.
            if let Err(e) = self.zfs.set_placeholder(&lp, false).await {
                tracing::warn!(fs = %lp, error = %e, "cannot clear the placeholder flag after receiving");
            }
        }
        if let Err(e) = result {
            if cleared_placeholder {
                // Without resumable state the filesystem is still the empty placeholder: say so.
                let partial = self
                    .zfs
                    .receive_resume_token(&lp)
                    .await
                    .ok()
                    .flatten()
                    .is_some();
                // With a partial receive the filesystem is being received (resumed later
                // without `-F`); without one it is still the empty placeholder.
                if let Err(e2) = self.zfs.set_placeholder(&lp, !partial).await {
                    tracing::warn!(fs = %lp, error = %e2, "cannot restore placeholder flag");
                }
            }
            if matches!(e, ZfsError::RecvDestroyOrOverwriteEncrypted { .. }) && cleared_placeholder
            {
                return Err(EndpointError::zfs(format!(
                    "zfs recv into {target} failed: {e}. OpenZFS cannot replace the placeholder {lp} with an encrypted filesystem (recv -F). \
                     To fix: stop the daemon, `zfs destroy {lp}` if it holds no data (it is a placeholder), and restart: the next \
                     replication receives the filesystem anew"
                )));
            }
            let resumable = matches!(e, ZfsError::RecvFailedWithResumeToken { .. })
                || (crate::error::needs_token_check(&e, &[&target.to_string(), &lp.to_string()])
                    && matches!(self.zfs.receive_resume_token(&lp).await, Ok(Some(_))));
            return Err(crate::error::recv_err(&target, &lp, e, resumable));
        }
        // What the target has now, where what it had before is known: the stream added
        // exactly the requested snapshots (`zfs recv` without `-F` destroys none). Not kept
        // for an agentless remote, whose other users are unknown (as for the listings cache).
        let after = before.filter(|_| !self.zfs.is_remote()).map(|mut b| {
            b.extend(req.intermediates.iter().map(|v| v.guid));
            b.push(req.to.guid);
            b
        });
        let settle = move || changing.succeeded(after);
        if req.deferred && package {
            // Only the package's first snapshot was checked in the stream: `receives_completed`
            // lists and checks `to` by GUID before it holds it.
            settle();
            return Ok(());
        }
        if req.deferred {
            // The hold follows in `receives_completed`; the stream was checked, so the
            // received snapshot has the requested GUID.
            insert_bounded(
                &self.shared.verified,
                (lp.clone(), req.to.name.clone(), req.to.guid),
            );
            if !st.exists {
                // This receive created the filesystem: its only snapshot is the one just
                // received, without holds. Completion (maybe on another connection of the
                // same root) needs no listing of it to know which last-received holds to
                // release: none.
                insert_bounded(&self.shared.created, lp.clone());
            }
            settle();
            return Ok(());
        }
        // The stream must have produced exactly the snapshot the planner asked for.
        let got = self
            .zfs
            .guid(&target)
            .await
            .map_err(|e| zfs_err(format!("received snapshot {target} not found"), e))?;
        if got != req.to.guid {
            return Err(EndpointError::invalid(format!(
                "received snapshot {target} has guid {got:#x}, expected {:#x} (kept for inspection)",
                req.to.guid
            )));
        }
        let incremental = st.exists;
        let hold = req.replication.for_step(incremental) != Protection::GuaranteeNothing;
        self.post_recv(&lp, &req.to, hold).await?;
        settle();
        Ok(())
    }

    async fn receives_completed(
        &self,
        reqs: &[ReceiveRequest],
    ) -> Result<Vec<Result<(), EndpointError>>, EndpointError> {
        // Decided by `plan::receives`: what to list, which steps completed (GUID checks),
        // the new last-received holds (before any old one goes), the old ones to release.
        use crate::plan::receives as plan;
        let _changing = self
            .listings
            .changing(self.local_paths(reqs.iter().map(|r| &r.filesystem)));
        let mut results: Vec<Result<(), EndpointError>> = Vec::with_capacity(reqs.len());
        let mut locals = Vec::with_capacity(reqs.len());
        for r in reqs {
            let lp = self.local_path(&r.filesystem);
            results.push(lp.as_ref().map(|_| ()).map_err(Clone::clone));
            locals.push(lp.ok());
        }
        if !reqs
            .iter()
            .zip(&locals)
            .any(|(r, l)| r.deferred && l.is_some())
        {
            return Ok(results);
        }
        // Where the last full listing of a filesystem (this round's planning) told which of
        // its snapshots have holds, only the received snapshots are listed (one command for
        // all); a filesystem not listed before is listed whole.
        // A filesystem a receive of this round created has none.
        let held: std::collections::HashMap<DatasetPath, Vec<String>> = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let mut created = self
                .shared
                .created
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            locals
                .iter()
                .flatten()
                .filter_map(|f| {
                    let new = created.remove(f);
                    match held.get(f) {
                        Some(h) => Some((f.clone(), h.clone())),
                        None => new.then(|| (f.clone(), Vec::new())),
                    }
                })
                .collect()
        };
        // Receives whose stream this process checked need no look at all.
        let rx: Vec<plan::Received> = {
            let mut v = self
                .shared
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            reqs.iter()
                .zip(locals)
                .map(|(r, local)| plan::Received {
                    verified: local.as_ref().is_some_and(|lp| {
                        r.deferred && v.remove(&(lp.clone(), r.to.name.clone(), r.to.guid))
                    }),
                    local,
                })
                .collect()
        };
        let need = plan::receive_listing(reqs, &rx, &held);
        let mut listed: std::collections::BTreeMap<DatasetPath, Vec<FilesystemVersion>> =
            if need.named.is_empty() {
                std::collections::BTreeMap::new()
            } else {
                self.zfs
                    .get_versions(&need.named)
                    .await
                    .map_err(|e| zfs_err("cannot list the received snapshots", e))?
            };
        if !need.whole.is_empty() {
            let whole = crate::sender::list_versions_many(&self.zfs, &need.whole).await?;
            for (f, vs) in need.whole.into_iter().zip(whole) {
                if let Ok(vs) = vs {
                    listed.insert(f, vs);
                }
            }
        }
        let mut c = plan::complete_receives(reqs, &rx, &listed, &mut results);
        let tag = last_received_hold_tag(&self.cfg.job);
        if !c.hold.is_empty() {
            if let Err(e) = self.zfs.hold(&tag, &c.hold).await {
                // Which received snapshots are not there (destroyed since, or a receive that
                // `zfs recv` reported done without creating it)? Those fail alone; the others
                // are held again (idempotently) and complete.
                let e = zfs_err("cannot create last-received holds", e);
                let present = self
                    .zfs
                    .get_versions(&c.hold)
                    .await
                    .ok()
                    .map(|found| plan::present_received(reqs, &c, &found));
                let retry: Vec<VersionPath> = c
                    .hold
                    .iter()
                    .filter(|h| present.as_ref().is_some_and(|p| p.contains(&h.to_string())))
                    .cloned()
                    .collect();
                let held_now = !retry.is_empty() && self.zfs.hold(&tag, &retry).await.is_ok();
                plan::after_hold_failure(
                    reqs,
                    &rx,
                    &mut c,
                    present.as_ref(),
                    held_now,
                    &e,
                    &mut results,
                );
            }
        }
        zrepl_failpoint::hit("receiver.complete.after_new_hold")
            .map_err(|e| EndpointError::zfs(e.to_string()))?;
        // Older last-received holds of this job: best effort, as after a single receive.
        let others = plan::older_holds(reqs, &c, &held, &listed);
        if !others.is_empty() {
            if let Err(e) = self.zfs.release(&tag, &others).await {
                tracing::warn!(error = %e, "cannot release older last-received holds");
            }
        }
        Ok(results)
    }

    /// Plans every request with [`crate::plan::receiver_converge`], then puts the new holds in
    /// place (one batch) before it releases the old ones (one batch): a crash in between leaves
    /// two holds, which the next run releases.
    async fn converge(
        &self,
        reqs: &[ConvergeRequest],
    ) -> Result<Vec<Result<(), EndpointError>>, EndpointError> {
        let _changing = self
            .listings
            .changing(self.local_paths(reqs.iter().map(|r| &r.filesystem)));
        let tag = last_received_hold_tag(&self.cfg.job);
        let mut results = Vec::with_capacity(reqs.len());
        let mut hold: Vec<(usize, VersionPath)> = Vec::new();
        let mut release = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let lp = match self.local_path(&r.filesystem) {
                Ok(lp) => lp,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            results.push(Ok(()));
            let plan = crate::plan::receiver_converge(r);
            if let Some(h) = &plan.hold {
                match VersionPath::of(&lp, h) {
                    Ok(v) => hold.push((i, v)),
                    Err(e) => results[i] = Err(zfs_err("converge", e)),
                }
            }
            release.push((i, lp, plan.release));
        }
        if !hold.is_empty() {
            let snaps: Vec<VersionPath> = hold.iter().map(|(_, v)| v.clone()).collect();
            if let Err(e) = self.zfs.hold(&tag, &snaps).await {
                // One by one, so that a snapshot destroyed meanwhile fails alone.
                tracing::debug!(error = %e, "converge: batched hold failed, holding one by one");
                for (i, v) in &hold {
                    if let Err(e) = self.zfs.hold(&tag, std::slice::from_ref(v)).await {
                        results[*i] = Err(zfs_err(
                            format!("cannot create last-received hold on {v}"),
                            e,
                        ));
                    }
                }
            }
        }
        zrepl_failpoint::hit("converge.receiver.after_new_hold")
            .map_err(|e| EndpointError::zfs(e.to_string()))?;
        let old: Vec<VersionPath> = release
            .into_iter()
            .filter(|(i, _, _)| results[*i].is_ok())
            .flat_map(|(_, lp, vs)| {
                vs.into_iter()
                    .filter_map(move |v| VersionPath::of(&lp, &v).ok())
            })
            .collect();
        if !old.is_empty() {
            if let Err(e) = self.zfs.release(&tag, &old).await {
                tracing::warn!(error = %e, "converge: cannot release older last-received holds");
            }
        }
        Ok(results)
    }

    async fn destroy_snapshots(
        &self,
        fs: &DatasetPath,
        snapshots: &[FilesystemVersion],
    ) -> Result<Vec<DestroyResult>, EndpointError> {
        let lp = self.local_path(fs)?;
        let _changing = self.listings.changing(vec![lp.clone()]);
        crate::sender::destroy_snapshots(&self.zfs, &lp, snapshots).await
    }
}
