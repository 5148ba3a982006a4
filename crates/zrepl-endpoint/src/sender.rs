//! The sending endpoint.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use zrepl_filters::DatasetFilter;
use zrepl_protocol::{
    ByteStream, ConvergeRequest, DestroyResult, EndpointError, FilesystemInfo, Protection,
    SendRequest, SendResponse,
};
use zrepl_zfs::{
    DatasetPath, FilesystemVersion, SendFlags, SendSource, VersionPath, VersionType, VersionTypes,
    Zfs, PLACEHOLDER_PROPERTY,
};
use zrepl_zfs_types::abstraction::{
    cursor_bookmark_name, parse_cursor_bookmark, step_hold_tag, tentative_cursor_bookmark_name,
    AbstractionType,
};
use zrepl_zfs_types::resume_token;

use crate::error::zfs_err;
use crate::listings::Listings;
use crate::plan::sends::{self as plan, check_request, prepared_key};
use crate::registry::Registry;

/// What a sending job allows and how it sends.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The sending job's name: part of step hold tags and cursor bookmark names.
    pub job: String,
    pub filesystems: DatasetFilter,
    /// `send.encrypted`: raw sends only, and only of encrypted filesystems.
    pub encrypted: bool,
    /// `send.raw`: `-w` for every send.
    pub raw: bool,
    pub send_properties: bool,
    pub backup_properties: bool,
    pub large_blocks: bool,
    pub compressed: bool,
    pub embedded_data: bool,
    pub saved: bool,
    /// `send.bandwidth_limit`.
    pub bandwidth_limit: Option<crate::BandwidthLimit>,
    /// What a client may destroy through `destroy_snapshots` (a source's `client_pruning`).
    pub client_destroy: plan::ClientDestroy,
}

impl SenderConfig {
    /// A config with every send option off.
    pub fn new(job: impl Into<String>, filesystems: DatasetFilter) -> Self {
        SenderConfig {
            job: job.into(),
            filesystems,
            encrypted: false,
            raw: false,
            send_properties: false,
            backup_properties: false,
            large_blocks: false,
            compressed: false,
            embedded_data: false,
            saved: false,
            bandwidth_limit: None,
            client_destroy: plan::ClientDestroy::Allow,
        }
    }

    fn flags(&self) -> SendFlags {
        SendFlags {
            raw: self.encrypted || self.raw,
            properties: self.send_properties,
            backup_properties: self.backup_properties,
            large_blocks: self.large_blocks,
            compressed: self.compressed,
            embedded_data: self.embedded_data,
            saved: self.saved,
        }
    }
}

/// A sender over the local `zfs`.
#[derive(Clone)]
pub struct LocalSender {
    zfs: Zfs,
    cfg: Arc<SenderConfig>,
    /// What `prepare_sends` established for the round. Cleared by every `prepare_sends`.
    prepared: Arc<std::sync::Mutex<Prepared>>,
    /// `send.bandwidth_limit`, shared by all streams of the job in this process.
    bucket: Option<Arc<crate::ratelimit::Bucket>>,
    /// Versions listings kept between runs (see [`crate::listings`]), the job's.
    listings: Arc<Listings>,
}

/// The state `prepare_sends` leaves for the round's `send`s and `sends_completed`.
#[derive(Default)]
pub(crate) struct Prepared {
    /// Requests whose step holds exist and that were checked against a listing (`planned`,
    /// or one taken under the holds): their `send` skips the per-step listing and holds (the
    /// GUIDs are proven by the stream itself). An entry is used once.
    steps: HashSet<String>,
    /// The listing the round's requests were checked against, of each filesystem all of whose
    /// requests were prepared; `sends_completed` uses it (once) instead of listing again. What
    /// completion reads from it stays exact: the held `from`/`to` cannot be destroyed, and this
    /// job's cursors change only in this job's completion.
    listing: BTreeMap<DatasetPath, Vec<FilesystemVersion>>,
    /// The last `list_versions_many` (the one the round was planned on), for the next
    /// `prepare_sends` (each entry taken once) and for `converge` of the filesystems the round
    /// had no step for. Requests are checked against it; GUIDs are checked again, race-free, on
    /// the stream `zfs send` produces ([`check_stream_begin`]). A filesystem's entry is dropped
    /// when a completion or convergence moves its cursors, so that it never shows cursors that
    /// are gone.
    planned: BTreeMap<DatasetPath, Vec<FilesystemVersion>>,
    /// The versions `list_filesystems` listed together with the filesystems (when the
    /// listings cache could not serve most of them), for the `list_versions_many` that
    /// follows it, possibly on another connection of the same peer.
    prefetched: crate::listings::Prefetch,
}

/// Per pool, the deepest dataset that contains all of `paths` of that pool: one recursive
/// listing of these covers every path.
pub(crate) fn covering_roots(paths: &[DatasetPath]) -> Vec<DatasetPath> {
    let mut roots: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in paths {
        let Some(pool) = p.pool() else { continue };
        match roots.get_mut(pool) {
            None => {
                roots.insert(pool.to_string(), p.components().to_vec());
            }
            Some(common) => {
                let n = common
                    .iter()
                    .zip(p.components())
                    .take_while(|(a, b)| a == b)
                    .count();
                common.truncate(n);
            }
        }
    }
    roots
        .into_values()
        .filter_map(|c| DatasetPath::from_components(c).ok())
        .collect()
}

/// Versions of `paths` from one recursive listing per covering root, one entry per path.
/// A path that is not in the listing does not exist (any more).
pub(crate) async fn list_versions_many(
    zfs: &Zfs,
    paths: &[DatasetPath],
) -> Result<Vec<Result<Vec<FilesystemVersion>, EndpointError>>, EndpointError> {
    use futures::StreamExt;
    let mut all = zrepl_zfs::VersionsByFilesystem::new();
    let parts = listing_parts(paths, listing_parallelism());
    if parts.len() > 1 {
        // Many filesystems: listed by name in parts, one command per part at once (a
        // listing's cost is CPU in the kernel, one thread per command).
        let mut listings = futures::stream::iter(parts)
            .map(|part| async move { zfs.list_versions_of(&part).await })
            .buffer_unordered(LISTING_CONCURRENCY);
        while let Some(r) = listings.next().await {
            all.extend(r.map_err(|e| zfs_err("cannot list versions", e))?);
        }
    } else {
        // Independent subtrees are listed concurrently.
        let mut listings = futures::stream::iter(covering_roots(paths))
            .map(|root| async move { (zfs.list_subtree_versions(&root).await, root) })
            .buffered(LISTING_CONCURRENCY);
        while let Some((r, root)) = listings.next().await {
            match r {
                Ok(m) => all.extend(m),
                Err(zrepl_zfs::ZfsError::DatasetDoesNotExist { .. }) => {}
                Err(e) => return Err(zfs_err(format!("cannot list versions below {root}"), e)),
            }
        }
    }
    Ok(paths
        .iter()
        .map(|p| {
            all.get(p).cloned().ok_or_else(|| {
                EndpointError::not_found(format!(
                    "cannot list versions of {p}: dataset does not exist"
                ))
            })
        })
        .collect())
}

/// How many subtree listings run at once.
pub(crate) const LISTING_CONCURRENCY: usize = 4;

/// Fewer filesystems than this per part are not worth a command of their own.
pub(crate) const LISTING_PART_MIN: usize = 8;

/// How many listings of parts run at once: the CPUs of this host, at most
/// [`LISTING_CONCURRENCY`].
fn listing_parallelism() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(LISTING_CONCURRENCY)
}

/// `paths` in at most `parallelism` parts of at least [`LISTING_PART_MIN`] filesystems each
/// (consecutive in name order, sizes differing by at most one), listed by name one command
/// per part; a single part means one recursive listing of the covering root is better.
pub(crate) fn listing_parts(paths: &[DatasetPath], parallelism: usize) -> Vec<Vec<DatasetPath>> {
    let mut sorted: Vec<DatasetPath> = paths.to_vec();
    sorted.sort();
    sorted.dedup();
    let n = (sorted.len() / LISTING_PART_MIN).clamp(1, parallelism.max(1));
    let (size, extra) = (sorted.len() / n, sorted.len() % n);
    let mut parts = Vec::with_capacity(n);
    let mut rest = sorted.as_slice();
    for i in 0..n {
        let (part, r) = rest.split_at(size + usize::from(i < extra));
        parts.push(part.to_vec());
        rest = r;
    }
    parts
}

/// The cache is used where nothing but this process changes what it caches without changing
/// `snapshots_changed`: not on an agentless remote (its clock and its other users are
/// unknown), and only where the property exists.
pub(crate) async fn listings_enabled(zfs: &Zfs, cache: &Listings) -> bool {
    cache.enabled() && !zfs.is_remote() && zfs.features().await.is_ok_and(|f| f.snapshots_changed)
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn filesystems_of(reqs: &[SendRequest]) -> Vec<DatasetPath> {
    reqs.iter().map(|r| r.filesystem.clone()).collect()
}

/// [`list_versions_many`] where `cache` has no confirmed listing (see [`crate::listings`]).
pub(crate) async fn cached_versions_many(
    zfs: &Zfs,
    cache: &Listings,
    paths: &[DatasetPath],
) -> Result<Vec<Result<Vec<FilesystemVersion>, EndpointError>>, EndpointError> {
    let (hits, misses, generation) = cache.lookup(paths, std::time::Instant::now());
    let mut listed: BTreeMap<DatasetPath, Result<Vec<FilesystemVersion>, EndpointError>> =
        BTreeMap::new();
    if !misses.is_empty() {
        let got = list_versions_many(zfs, &misses).await?;
        for (p, r) in misses.into_iter().zip(got) {
            if let Ok(v) = &r {
                cache.store(&p, v, generation);
            }
            listed.insert(p, r);
        }
    }
    Ok(paths
        .iter()
        .map(|p| match hits.get(p) {
            Some(v) => Ok(v.clone()),
            None => listed
                .get(p)
                .cloned()
                .unwrap_or_else(|| Err(EndpointError::not_found(format!("{p} not listed")))),
        })
        .collect())
}

/// Completes `listed` (what this side already knows from the round) with one listing of the
/// filesystems of `fss` it does not cover.
async fn list_missing(
    zfs: &Zfs,
    fss: &[DatasetPath],
    listed: &mut plan::Listing,
) -> Result<(), EndpointError> {
    let rest: Vec<DatasetPath> = fss
        .iter()
        .filter(|f| !listed.contains_key(*f))
        .cloned()
        .collect();
    if !rest.is_empty() {
        let got = list_versions_many(zfs, &rest).await?;
        listed.extend(rest.into_iter().zip(got));
    }
    Ok(())
}

fn send_bucket(cfg: &SenderConfig, reg: &Registry) -> Option<Arc<crate::ratelimit::Bucket>> {
    cfg.bandwidth_limit
        .map(|l| reg.bucket(&format!("send\0{}", cfg.job), l))
}

impl LocalSender {
    /// A sender of its own (the active side of a job): its round state is its own; the
    /// bandwidth bucket is the job's in `reg`.
    pub fn new(zfs: Zfs, cfg: SenderConfig, reg: &Registry) -> Self {
        LocalSender {
            bucket: send_bucket(&cfg, reg),
            listings: reg.listings(&format!("sender\0{}", cfg.job)),
            zfs,
            cfg: Arc::new(cfg),
            prepared: Arc::default(),
        }
    }

    /// A sender that shares its prepared steps with every other sender created from `reg` with
    /// the same job and `peer`: a peer's control RPCs (`prepare_sends`) and its streams
    /// (`send`) arrive on different connections, each served by its own `LocalSender`.
    pub fn shared(zfs: Zfs, cfg: SenderConfig, peer: &str, reg: &Registry) -> Self {
        LocalSender {
            bucket: send_bucket(&cfg, reg),
            prepared: reg.prepared(&cfg.job, peer),
            // Per job, not per peer: what one peer's calls (or the step-hold expiry) change
            // must drop what another peer's calls cached.
            listings: reg.listings(&format!("sender\0{}", cfg.job)),
            zfs,
            cfg: Arc::new(cfg),
        }
    }

    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// Refuses any filesystem outside the job's filter, whatever the request says.
    fn check_allowed(&self, fs: &DatasetPath) -> Result<(), EndpointError> {
        if fs.is_empty() || !self.cfg.filesystems.accepts(fs) {
            return Err(EndpointError::invalid(format!(
                "filesystem {fs:?} is not allowed by the filesystems filter of job {:?}",
                self.cfg.job
            )));
        }
        Ok(())
    }

    /// The filesystem's versions, checked against the request's `from` and `to` by GUID.
    async fn resolve(&self, req: &SendRequest) -> Result<Vec<FilesystemVersion>, EndpointError> {
        let fs = &req.filesystem;
        let versions = self
            .zfs
            .list_versions(fs, VersionTypes::All)
            .await
            .map_err(|e| zfs_err(format!("cannot list versions of {fs}"), e))?;
        check_request(req, &versions)?;
        Ok(versions)
    }
}

/// Reads the first record of the stream `zfs send` produces for `req` and checks that it
/// recreates exactly the requested `to` from the requested `from` (by GUID): whatever happened
/// to the names since the request was checked, no byte of another snapshot leaves this host.
/// Returns the whole stream, the record included. Dropping `stream` on an error kills
/// `zfs send`.
async fn check_stream_begin(
    req: &SendRequest,
    mut stream: zrepl_zfs::SendStream,
) -> Result<zrepl_protocol::ByteStream, EndpointError> {
    use tokio::io::AsyncReadExt;
    let what = format!("zfs send of {}", req.to.full_path(&req.filesystem));
    let (head, begin) = zrepl_zfs::read_send_begin(&mut stream)
        .await
        .map_err(|e| EndpointError::zfs(format!("{what}: {e}")))?;
    let from = req.from.as_ref().map_or(0, |f| f.guid);
    // A package's stream begins with its first snapshot.
    let first = req.intermediates.first().unwrap_or(&req.to).guid;
    if begin.toguid != first || begin.fromguid != from {
        return Err(EndpointError::invalid(format!(
            "{what} produces a stream of {} (guid {:#x}, from guid {:#x}), the request expected guid {first:#x} from guid {from:#x}; refusing to send it",
            begin.toname, begin.toguid, begin.fromguid
        )));
    }
    Ok(Box::pin(std::io::Cursor::new(head).chain(stream)))
}

impl LocalSender {
    /// zrepl's encryption policy (spec §2.9) plus the resume-token checks (spec §3.7).
    async fn validate_send(&self, req: &SendRequest) -> Result<(), EndpointError> {
        let fs = &req.filesystem;
        let wants_raw = self.cfg.encrypted || self.cfg.raw || self.cfg.backup_properties;
        let features = self
            .zfs
            .features()
            .await
            .map_err(|e| zfs_err("feature detection", e))?;
        if wants_raw && !features.encryption {
            return Err(EndpointError::invalid(
                "raw sends which are required for encrypted zfs send are not supported by this ZFS",
            ));
        }
        let token = match &req.resume_token {
            Some(t) => Some(
                resume_token::decode(t)
                    .map_err(|e| EndpointError::invalid(format!("invalid resume token: {e}")))?,
            ),
            None => None,
        };
        // The filesystem's encryption only matters for these policies (and for raw resume
        // tokens); skip the `zfs get` otherwise.
        let needs_encryption =
            self.cfg.encrypted || self.cfg.raw || token.as_ref().is_some_and(|t| t.rawok);
        let fs_encrypted = if features.encryption && needs_encryption {
            self.zfs
                .is_encrypted(fs)
                .await
                .map_err(|e| zfs_err(format!("cannot get encryption of {fs}"), e))?
        } else {
            false
        };
        if self.cfg.encrypted && !fs_encrypted {
            return Err(EndpointError::invalid(format!(
                "encrypted send mandated by policy, but filesystem {:?} is not encrypted",
                fs.to_string()
            )));
        }
        if self.cfg.raw && !self.cfg.encrypted && fs_encrypted {
            return Err(EndpointError::invalid(format!(
                "policy mandates raw+unencrypted sends, but filesystem {:?} is encrypted",
                fs.to_string()
            )));
        }
        if let Some(t) = &token {
            if t.to_filesystem() != Some(fs.to_string().as_str()) {
                return Err(EndpointError::invalid(format!(
                    "resume token is for {:?}, not for the requested filesystem {:?}",
                    t.toname,
                    fs.to_string()
                )));
            }
            if t.toguid != req.to.guid {
                return Err(EndpointError::invalid(format!(
                    "resume token 'toguid' {:#x} does not match requested 'to' {:#x}",
                    t.toguid, req.to.guid
                )));
            }
            let token_from = t.fromguid.filter(|g| *g != 0);
            if token_from != req.from.as_ref().map(|f| f.guid) {
                return Err(EndpointError::invalid(
                    "resume token 'fromguid' does not match the requested incremental source",
                ));
            }
            let resumed_encrypted = fs_encrypted && t.rawok;
            if self.cfg.encrypted && !resumed_encrypted {
                return Err(EndpointError::invalid(
                    "resume token does not have rawok=true which would result in unencrypted send, but policy mandates encrypted sends only",
                ));
            }
            if !self.cfg.encrypted && resumed_encrypted {
                return Err(EndpointError::invalid(
                    "resume token has rawok=true which would result in encrypted send, but policy mandates unencrypted sends only",
                ));
            }
        }
        Ok(())
    }

    fn send_source(&self, req: &SendRequest) -> Result<zrepl_zfs::SendRequest, EndpointError> {
        if let Some(t) = &req.resume_token {
            return Ok(zrepl_zfs::SendRequest::resume(t.clone()));
        }
        let fs = &req.filesystem;
        let to = VersionPath::of(fs, &req.to).map_err(|e| zfs_err("invalid 'to'", e))?;
        let flags = self.cfg.flags();
        Ok(match &req.from {
            None => zrepl_zfs::SendRequest::full(to, flags),
            Some(f) => {
                let from = VersionPath::of(fs, f).map_err(|e| zfs_err("invalid 'from'", e))?;
                if req.intermediates.is_empty() {
                    zrepl_zfs::SendRequest::incremental(from, to, flags)
                } else {
                    zrepl_zfs::SendRequest::package(from, to, flags)
                }
            }
        })
    }

    /// Creates the step's protection before sending (spec §3.5, SenderPreSend).
    async fn pre_send(
        &self,
        req: &SendRequest,
        versions: &[FilesystemVersion],
    ) -> Result<Vec<FilesystemVersion>, EndpointError> {
        let fs = &req.filesystem;
        let level = req.replication.for_step(req.from.is_some());
        let mut keep: Vec<FilesystemVersion> = Vec::new();
        match level {
            Protection::GuaranteeResumability => {
                let tag = step_hold_tag(&self.cfg.job);
                let mut snaps = vec![VersionPath::of(fs, &req.to).map_err(|e| zfs_err("hold", e))?];
                keep.push(req.to.clone());
                if let Some(f) = req.from.as_ref().filter(|f| f.typ == VersionType::Snapshot) {
                    snaps.push(VersionPath::of(fs, f).map_err(|e| zfs_err("hold", e))?);
                    keep.push(f.clone());
                }
                self.zfs
                    .hold(&tag, &snaps)
                    .await
                    .map_err(|e| zfs_err(format!("cannot create step holds on {fs}"), e))?;
            }
            Protection::GuaranteeIncremental => {
                for v in std::iter::once(&req.to).chain(req.from.as_ref()) {
                    let name = tentative_cursor_bookmark_name(v.guid, &self.cfg.job);
                    match self.zfs.bookmark(fs, v, &name).await {
                        Ok(bm) => keep.push(bm),
                        // A bookmark `from` cannot be bookmarked again without bookmark copying;
                        // zrepl tolerates that for the tentative cursor of `from`.
                        Err(zrepl_zfs::ZfsError::BookmarkCloningNotSupported)
                            if v.typ == VersionType::Bookmark => {}
                        Err(e) => {
                            return Err(zfs_err(
                                format!("cannot create tentative cursor on {fs}"),
                                e,
                            ))
                        }
                    }
                }
            }
            Protection::GuaranteeNothing => {}
        }
        // `from` itself may be one of our tentative cursors: never clean it up under us.
        if let Some(f) = &req.from {
            keep.push(f.clone());
        }
        if let Err(e) = self.cleanup(fs, versions, &keep, false).await {
            // Stale abstractions of earlier attempts are only clutter: never fail a step for them.
            tracing::warn!(fs = %fs, error = %e, "cannot clean up stale step holds or tentative cursors");
        }
        Ok(keep)
    }

    /// Releases this job's step holds and destroys its tentative cursors on `fs`, except the
    /// versions in `keep`; with `older_cursors`, also every replication cursor but the ones kept.
    async fn cleanup(
        &self,
        fs: &DatasetPath,
        versions: &[FilesystemVersion],
        keep: &[FilesystemVersion],
        older_cursors: bool,
    ) -> Result<(), EndpointError> {
        let job = self.cfg.job.as_str();
        let plan = plan::cleanup(job, fs, versions, keep, older_cursors)?;
        // Step holds: only held snapshots can carry one; ask `zfs holds` about those in one call.
        if !plan.check_holds.is_empty() {
            let holds = self
                .zfs
                .holds(&plan.check_holds)
                .await
                .map_err(|e| zfs_err(format!("cannot list holds on {fs}"), e))?;
            let stale: Vec<VersionPath> = crate::plan::stale_step_holds(job, &holds)
                .into_iter()
                .cloned()
                .collect();
            if !stale.is_empty() {
                self.zfs
                    .release(&step_hold_tag(job), &stale)
                    .await
                    .map_err(|e| zfs_err(format!("cannot release stale step holds on {fs}"), e))?;
            }
        }
        for bm in &plan.destroy {
            self.zfs
                .destroy_version_idempotent(bm)
                .await
                .map_err(|e| zfs_err(format!("cannot destroy stale bookmark {bm}"), e))?;
        }
        Ok(())
    }
}

impl zrepl_protocol::Sender for LocalSender {
    async fn list_filesystems(&self) -> Result<Vec<FilesystemInfo>, EndpointError> {
        lock(&self.prepared).prefetched.clear();
        // Sender-side placeholders (chained replication) are replicated as "nothing to do".
        // Usually the filter names its subtrees: then one recursive `zfs get` of the
        // placeholder property per subtree lists the filesystems and their placeholder state
        // together, without visiting the rest of the pools. Unless the listings cache holds
        // most filesystems' versions, that `zfs get` lists all versions too, for the
        // `list_versions_many` that usually follows (one command instead of two).
        let cache = listings_enabled(&self.zfs, &self.listings).await;
        let with_versions = !(cache && self.listings.mostly_cached());
        let mut props_wanted = vec![PLACEHOLDER_PROPERTY];
        if cache {
            props_wanted.push(crate::listings::SNAPSHOTS_CHANGED);
        }
        let (started, wall) = (std::time::Instant::now(), unix_now());
        let generation = self.listings.generation();
        let mut changed = BTreeMap::new();
        let mut prefetched: Option<zrepl_zfs::VersionsByFilesystem> = None;
        let states = match self.cfg.filesystems.roots() {
            Some(roots) => {
                let mut out = std::collections::BTreeMap::new();
                let mut versions = zrepl_zfs::VersionsByFilesystem::new();
                for root in roots {
                    let listed = if with_versions {
                        self.zfs
                            .list_subtree_with_properties(&root, &props_wanted)
                            .await
                            .map(|(props, v)| {
                                versions.extend(v);
                                props
                            })
                    } else {
                        self.zfs
                            .get_properties_recursive(&root, None, &props_wanted)
                            .await
                    };
                    match listed {
                        Ok(props) => out.extend(props.into_iter().map(|(path, p)| {
                            let ph = is_placeholder(&path, &p);
                            if let Some(c) = p
                                .get(crate::listings::SNAPSHOTS_CHANGED)
                                .and_then(|v| crate::listings::parse_changed(&v.value))
                            {
                                changed.insert(path.clone(), c);
                            }
                            (path, ph)
                        })),
                        Err(zrepl_zfs::ZfsError::DatasetDoesNotExist { .. }) => {}
                        Err(e) => {
                            return Err(zfs_err(format!("cannot list filesystems below {root}"), e))
                        }
                    }
                }
                if with_versions {
                    prefetched = Some(versions);
                }
                out
            }
            None => {
                let all = self
                    .zfs
                    .list_filesystems(None)
                    .await
                    .map_err(|e| zfs_err("cannot list filesystems", e))?;
                let accepted: Vec<DatasetPath> = all
                    .into_iter()
                    .filter(|p| self.cfg.filesystems.accepts(p))
                    .collect();
                placeholder_map(&self.zfs, &accepted).await?
            }
        };
        if changed.is_empty() {
            self.listings.unobserve();
        } else {
            self.listings.observe(started, wall, changed);
        }
        if let Some(mut versions) = prefetched {
            // Only the filter's filesystems are kept (the subtrees may hold others).
            versions.retain(|path, _| self.cfg.filesystems.accepts(path));
            if cache {
                for (path, vs) in &versions {
                    self.listings.store(path, vs, generation);
                }
            }
            lock(&self.prepared).prefetched.put(generation, versions);
        }
        Ok(states
            .into_iter()
            .filter(|(p, _)| self.cfg.filesystems.accepts(p))
            .map(|(path, is_placeholder)| FilesystemInfo {
                path,
                is_placeholder,
                resume_token: None,
            })
            .collect())
    }

    async fn list_versions(
        &self,
        fs: &DatasetPath,
    ) -> Result<Vec<FilesystemVersion>, EndpointError> {
        self.check_allowed(fs)?;
        self.zfs
            .list_versions(fs, VersionTypes::All)
            .await
            .map_err(|e| zfs_err(format!("cannot list versions of {fs}"), e))
    }

    async fn list_versions_many(
        &self,
        fss: &[DatasetPath],
    ) -> Result<Vec<Result<Vec<FilesystemVersion>, EndpointError>>, EndpointError> {
        let allowed: Vec<DatasetPath> = fss
            .iter()
            .filter(|f| self.check_allowed(f).is_ok())
            .cloned()
            .collect();
        let generation = self.listings.generation();
        let prefetched = lock(&self.prepared).prefetched.take(generation, &allowed);
        let listed: BTreeMap<DatasetPath, Result<Vec<FilesystemVersion>, EndpointError>> =
            match prefetched {
                Some(vs) => allowed
                    .iter()
                    .cloned()
                    .zip(vs.into_iter().map(Ok))
                    .collect(),
                None => allowed
                    .iter()
                    .cloned()
                    .zip(cached_versions_many(&self.zfs, &self.listings, &allowed).await?)
                    .collect(),
            };
        let out = fss
            .iter()
            .map(|f| {
                self.check_allowed(f)?;
                listed
                    .get(f)
                    .cloned()
                    .unwrap_or_else(|| Err(EndpointError::not_found(format!("{f} not listed"))))
            })
            .collect();
        // Kept for `prepare_sends` (moved, not copied again: listings can be large).
        lock(&self.prepared).planned = listed
            .into_iter()
            .filter_map(|(f, v)| Some((f, v.ok()?)))
            .collect();
        Ok(out)
    }

    async fn prepare_sends(&self, reqs: &[SendRequest]) -> Result<(), EndpointError> {
        let _changing = self.listings.changing(filesystems_of(reqs));
        let mut planned = std::mem::take(&mut *lock(&self.prepared)).planned;
        // Step holds (guarantee_resumability) on every `from` and `to` of the round in one
        // command; the requests are checked against the listing the round was planned on (a
        // filesystem without one is listed now, under the holds). What is held cannot be
        // destroyed; that the held names still carry the planned GUIDs is checked by `send`
        // on the stream itself. Decisions: `plan::step_holds`, `plan::prepared`.
        let holds = match plan::step_holds(reqs, |f| self.check_allowed(f).is_ok()) {
            Ok(h) if !h.requests.is_empty() => h,
            other => {
                lock(&self.prepared).planned = planned;
                return other.map(|_| ());
            }
        };
        let tag = step_hold_tag(&self.cfg.job);
        self.zfs
            .hold(&tag, &holds.snapshots)
            .await
            .map_err(|e| zfs_err("cannot create the step holds of this round", e))?;
        zrepl_failpoint::hit("sender.prepare_sends.after_holds")
            .map_err(|e| EndpointError::zfs(e.to_string()))?;
        let mut listed: plan::Listing = holds
            .filesystems
            .iter()
            .filter_map(|f| Some((f.clone(), Ok(planned.remove(f)?))))
            .collect();
        list_missing(&self.zfs, &holds.filesystems, &mut listed).await?;
        let done = plan::prepared(reqs, &holds, &listed);
        {
            let mut prepared = lock(&self.prepared);
            prepared
                .steps
                .extend(done.steps.iter().map(|&i| prepared_key(&reqs[i])));
            prepared.listing = done
                .keep_listing
                .iter()
                .filter_map(|f| Some((f.clone(), listed.remove(f)?.ok()?)))
                .collect();
            // The filesystems without steps keep their planning listing for `converge`.
            prepared.planned = planned;
        }
        // Requests that do not match what exists (their `send` fails) keep no holds of ours.
        if !done.release.is_empty() {
            if let Err(e) = self.zfs.release(&tag, &done.release).await {
                tracing::warn!(error = %e, "cannot release the step holds of unprepared steps");
            }
        }
        Ok(())
    }

    async fn sends_completed(
        &self,
        reqs: &[SendRequest],
    ) -> Result<Vec<Result<(), EndpointError>>, EndpointError> {
        let _changing = self.listings.changing(filesystems_of(reqs));
        match self.sends_completed_batched(reqs).await {
            Ok(r) => Ok(r),
            Err(e) => {
                // E.g. no channel programs: step by step, as zrepl does.
                tracing::warn!(error = %e, "cannot complete the steps of this round at once; completing them one by one");
                let mut out = Vec::with_capacity(reqs.len());
                for r in reqs {
                    out.push(zrepl_protocol::Sender::send_completed(self, r).await);
                }
                Ok(out)
            }
        }
    }

    async fn converge(
        &self,
        reqs: &[ConvergeRequest],
    ) -> Result<Vec<Result<(), EndpointError>>, EndpointError> {
        let _changing = self
            .listings
            .changing(reqs.iter().map(|r| r.filesystem.clone()).collect());
        self.converge_(reqs).await
    }

    async fn send_dry(&self, req: &SendRequest) -> Result<u64, EndpointError> {
        self.check_allowed(&req.filesystem)?;
        // An estimate sends nothing: it is checked against the listing the round was planned
        // on (or was prepared: checked and held) rather than a listing of its own; `send`
        // checks the stream's GUIDs.
        let checked = {
            let p = lock(&self.prepared);
            if p.steps.contains(&prepared_key(req)) {
                Some(Ok(()))
            } else {
                p.planned
                    .get(&req.filesystem)
                    .map(|v| check_request(req, v))
            }
        };
        match checked {
            Some(r) => r?,
            None => {
                self.resolve(req).await?;
            }
        }
        self.validate_send(req).await?;
        // zrepl does not estimate incrementals from bookmarks.
        if req.resume_token.is_none()
            && req
                .from
                .as_ref()
                .is_some_and(|f| f.typ == VersionType::Bookmark)
        {
            return Ok(0);
        }
        let src = self.send_source(req)?;
        let info = self.zfs.send_dry(&src).await.map_err(|e| {
            zfs_err(
                format!("cannot estimate send size of {}", req.filesystem),
                e,
            )
        })?;
        Ok(info.size)
    }

    async fn send(&self, req: SendRequest) -> Result<(SendResponse, ByteStream), EndpointError> {
        self.check_allowed(&req.filesystem)?;
        let _changing = self.listings.changing(vec![req.filesystem.clone()]);
        if lock(&self.prepared).steps.remove(&prepared_key(&req)) {
            // Held and checked by `prepare_sends`.
            self.validate_send(&req).await?;
        } else {
            let versions = self.resolve(&req).await?;
            self.validate_send(&req).await?;
            self.pre_send(&req, &versions).await?;
        }
        let src = self.send_source(&req)?;
        if let SendSource::Resume { .. } = &src.source {
            tracing::debug!(fs = %req.filesystem, "resuming send from token");
        }
        let stream = self
            .zfs
            .send(&src)
            .await
            .map_err(|e| zfs_err(format!("cannot start zfs send of {}", req.filesystem), e))?;
        let stream = check_stream_begin(&req, stream).await?;
        Ok((
            SendResponse {
                used_resume_token: req.resume_token.is_some(),
                expected_size: 0,
            },
            crate::ratelimit::limit(self.bucket.as_ref(), stream),
        ))
    }

    async fn send_completed(&self, req: &SendRequest) -> Result<(), EndpointError> {
        self.check_allowed(&req.filesystem)?;
        let _changing = self.listings.changing(vec![req.filesystem.clone()]);
        let fs = &req.filesystem;
        let versions = self.resolve(req).await?;
        // Its cursors change: a kept planning listing would show gone ones.
        lock(&self.prepared).planned.remove(fs);
        let level = req.replication.for_step(req.from.is_some());
        let mut keep = Vec::new();
        // A newer cursor is never destroyed (see `plan::newer_cursors`; `to` as listed here,
        // not as the request claims).
        if let Some(to) = plan::listed_version(&versions, &req.to) {
            for n in plan::newer_cursors(&self.cfg.job, &versions, to) {
                tracing::warn!(job = %self.cfg.job, fs = %fs, cursor = %n.name, "the completed step is older than this replication cursor: the cursor is kept");
                keep.push(n.clone());
            }
        }
        if level != Protection::GuaranteeNothing {
            let name = cursor_bookmark_name(req.to.guid, &self.cfg.job);
            let cursor = self
                .zfs
                .bookmark(fs, &req.to, &name)
                .await
                .map_err(|e| zfs_err(format!("cannot move replication cursor of {fs}"), e))?;
            keep.push(cursor);
        }
        // Release the step's holds. Under guarantee_resumability we put them on `to` and a
        // snapshot `from` ourselves: release them directly (idempotent) instead of asking
        // `zfs holds` first; other held snapshots are still inspected by the cleanup below.
        if level == Protection::GuaranteeResumability {
            let mut snaps = vec![VersionPath::of(fs, &req.to).map_err(|e| zfs_err("release", e))?];
            if let Some(f) = req.from.as_ref().filter(|f| f.typ == VersionType::Snapshot) {
                snaps.push(VersionPath::of(fs, f).map_err(|e| zfs_err("release", e))?);
                keep.push(f.clone());
            }
            keep.push(req.to.clone());
            if let Err(e) = self
                .zfs
                .release(&step_hold_tag(&self.cfg.job), &snaps)
                .await
            {
                tracing::warn!(fs = %fs, error = %e, "cannot release step holds after the step");
            }
        }
        // Drop stale step holds elsewhere, tentative cursors and older cursors of this job.
        if let Err(e) = self.cleanup(fs, &versions, &keep, true).await {
            // The data is on the receiver and the cursor moved: the step succeeded.
            tracing::warn!(fs = %fs, error = %e, "cannot release step holds or old cursors after the step");
        }
        Ok(())
    }

    async fn replication_cursor(
        &self,
        fs: &DatasetPath,
    ) -> Result<Option<FilesystemVersion>, EndpointError> {
        self.check_allowed(fs)?;
        let bms = self
            .zfs
            .list_versions(fs, VersionTypes::Bookmarks)
            .await
            .map_err(|e| zfs_err(format!("cannot list bookmarks of {fs}"), e))?;
        Ok(pruning_cursor(&bms, &self.cfg.job))
    }

    async fn replication_cursors(
        &self,
        fss: &[DatasetPath],
    ) -> Result<Vec<Result<Option<FilesystemVersion>, EndpointError>>, EndpointError> {
        zrepl_protocol::Sender::cursors_and_versions(self, fss)
            .await
            .0
    }

    /// One listing: the cursors are among the versions.
    async fn cursors_and_versions(
        &self,
        fss: &[DatasetPath],
    ) -> (
        Result<Vec<Result<Option<FilesystemVersion>, EndpointError>>, EndpointError>,
        Result<Vec<Result<Vec<FilesystemVersion>, EndpointError>>, EndpointError>,
    ) {
        let listed = zrepl_protocol::Sender::list_versions_many(self, fss).await;
        let cursors = match &listed {
            Ok(l) => Ok(l
                .iter()
                .map(|v| match v {
                    Ok(v) => Ok(pruning_cursor(v, &self.cfg.job)),
                    Err(e) => Err(e.clone()),
                })
                .collect()),
            Err(e) => Err(e.clone()),
        };
        (cursors, listed)
    }

    async fn destroy_snapshots(
        &self,
        fs: &DatasetPath,
        snapshots: &[FilesystemVersion],
    ) -> Result<Vec<DestroyResult>, EndpointError> {
        self.check_allowed(fs)?;
        let _changing = self.listings.changing(vec![fs.clone()]);
        let policy = &self.cfg.client_destroy;
        let listing = match policy {
            plan::ClientDestroy::Keep(_) => self
                .zfs
                .list_versions(fs, VersionTypes::All)
                .await
                .map_err(|e| zfs_err(format!("cannot list {fs}"), e))?,
            _ => Vec::new(),
        };
        let (ok, mut refused) =
            plan::client_destroy(&self.cfg.job, policy, fs, snapshots, &listing);
        let mut out = if ok.is_empty() {
            Vec::new()
        } else {
            destroy_snapshots(&self.zfs, fs, &ok).await?
        };
        out.append(&mut refused);
        out.sort_by(|a, b| a.snapshot.cmp(&b.snapshot));
        Ok(out)
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalSender {
    /// `sends_completed` in a few commands for the whole round: one listing (checks every
    /// `to`), one channel program (the newest `to` of each filesystem becomes its cursor, all
    /// in one transaction group), one `zfs destroy` per older cursor or tentative cursor of this
    /// job (only where the new cursor exists; channel programs cannot destroy bookmarks), one
    /// release of the step holds, and stale step holds elsewhere in at most two more.
    /// Errs (before changing anything) if the channel program cannot run.
    async fn sends_completed_batched(
        &self,
        reqs: &[SendRequest],
    ) -> Result<Vec<Result<(), EndpointError>>, EndpointError> {
        let job = self.cfg.job.as_str();
        let fss: Vec<DatasetPath> = reqs
            .iter()
            .filter(|r| self.check_allowed(&r.filesystem).is_ok())
            .map(|r| r.filesystem.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // The listing `prepare_sends` checked this round against, where it covers a
        // filesystem; the others are listed now.
        let mut listed: plan::Listing = {
            let mut p = lock(&self.prepared);
            fss.iter()
                .filter_map(|f| Some((f.clone(), Ok(p.listing.remove(f)?))))
                .collect()
        };
        list_missing(&self.zfs, &fss, &mut listed).await?;
        // Decided by `plan::complete_sends`: the new cursors first (one channel program, one
        // transaction group), then what they replace and this round's step holds.
        let mut c = plan::complete_sends(job, reqs, |f| self.check_allowed(f), &listed)?;
        for why in &c.not_moved {
            tracing::warn!(job, "{why}");
        }
        let create: Vec<(VersionPath, VersionPath, u64)> = c
            .cursors
            .iter()
            .map(|n| (n.source.clone(), n.bookmark.clone(), n.guid))
            .collect();
        let outcome = self
            .zfs
            .create_bookmarks(&create)
            .await
            .map_err(|e| zfs_err("cannot move the replication cursors", e))?;
        zrepl_failpoint::hit("sender.complete.after_new_cursor")
            .map_err(|e| EndpointError::zfs(e.to_string()))?;
        // Replaced cursors go only where the new cursor exists (channel programs cannot
        // destroy bookmarks: `Zfs::destroy_bookmarks` batches them), while this round's step
        // holds are released: both only clean up after the new cursors exist.
        let doomed = plan::after_cursors(reqs, &mut c, &outcome);
        let tag = step_hold_tag(job);
        let release = async {
            if !c.release.is_empty() {
                if let Err(e) = self.zfs.release(&tag, &c.release).await {
                    tracing::warn!(error = %e, "cannot release step holds after the round");
                }
            }
        };
        let (failed, ()) = tokio::join!(self.zfs.destroy_bookmarks(&doomed), release);
        for (bm, e) in failed {
            tracing::warn!(bookmark = %bm, error = %e, "cannot destroy stale cursor");
        }
        // Stale step holds of earlier attempts on other held snapshots, up to the newest
        // completed step (a newer one may be held for a step still pending).
        let others = plan::stale_hold_checks(&c, &listed);
        if !others.is_empty() {
            match self.zfs.holds(&others).await {
                Ok(holds) => {
                    let stale: Vec<VersionPath> = crate::plan::stale_step_holds(job, &holds)
                        .into_iter()
                        .cloned()
                        .collect();
                    if !stale.is_empty() {
                        if let Err(e) = self.zfs.release(&tag, &stale).await {
                            tracing::warn!(error = %e, "cannot release stale step holds");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list holds to release stale step holds")
                }
            }
        }
        {
            let mut p = lock(&self.prepared);
            for (r, res) in reqs.iter().zip(&c.results) {
                if res.is_ok() {
                    p.steps.remove(&prepared_key(r));
                }
            }
            for f in &fss {
                p.planned.remove(f);
            }
        }
        Ok(c.results)
    }
}

impl LocalSender {
    /// [`zrepl_protocol::Sender::converge`]: plans every request with
    /// [`crate::plan::sender_converge`] and applies the plans in a crash-safe order: the new
    /// cursors (one channel program, which checks each source's GUID), then, only where the
    /// cursor exists, the destruction of older cursors and tentative cursors, and the release of
    /// the job's step holds. A crash anywhere in between leaves what the next run converges from.
    async fn converge_(
        &self,
        reqs: &[ConvergeRequest],
    ) -> Result<Vec<Result<(), EndpointError>>, EndpointError> {
        let job = self.cfg.job.as_str();
        let mut results: Vec<Result<(), EndpointError>> = reqs
            .iter()
            .map(|r| self.check_allowed(&r.filesystem))
            .collect();
        // What the request says exists is a peer's claim: the plan is made from this side's
        // own listing (one command for all), so a client cannot name bookmarks to destroy,
        // holds to release or a `createtxg` that is not ours.
        let fss: Vec<DatasetPath> = reqs
            .iter()
            .zip(&results)
            .filter(|(_, ok)| ok.is_ok())
            .map(|(r, _)| r.filesystem.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // This round's planning listing covers them (a round converges the filesystems it had
        // no step for); the others are listed now, in one command.
        let mut listed: plan::Listing = {
            let p = lock(&self.prepared);
            fss.iter()
                .filter_map(|f| Some((f.clone(), Ok(p.planned.get(f)?.clone()))))
                .collect()
        };
        list_missing(&self.zfs, &fss, &mut listed).await?;
        let trusted: Vec<Option<ConvergeRequest>> = reqs
            .iter()
            .zip(results.iter_mut())
            .map(|(r, res)| {
                res.as_ref().ok()?;
                match listed.get(&r.filesystem) {
                    Some(Ok(vs)) => match crate::plan::sender_converge_request(r, vs) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            *res = Err(e);
                            None
                        }
                    },
                    Some(Err(e)) => {
                        *res = Err(e.clone());
                        None
                    }
                    None => None,
                }
            })
            .collect();
        let reqs: &[ConvergeRequest] = &trusted
            .iter()
            .zip(reqs)
            .map(|(t, r)| t.clone().unwrap_or_else(|| r.clone()))
            .collect::<Vec<_>>();
        let plans: Vec<Option<crate::plan::SenderConverge>> = reqs
            .iter()
            .zip(&results)
            .map(|(r, ok)| ok.is_ok().then(|| crate::plan::sender_converge(job, r)))
            .collect();
        // 1. The cursors: snapshots in one channel program; a bookmark source (the common
        // version is a bookmark) needs `zfs bookmark`'s bookmark copying.
        let mut by_program = Vec::new();
        let mut one_by_one = Vec::new();
        for (i, (r, p)) in reqs.iter().zip(&plans).enumerate() {
            let Some((src, name)) = p.as_ref().and_then(|p| p.create_cursor.as_ref()) else {
                continue;
            };
            let fs = &r.filesystem;
            match (VersionPath::of(fs, src), VersionPath::bookmark(fs, name)) {
                (Ok(sp), Ok(bm)) if src.typ == VersionType::Snapshot => {
                    by_program.push((i, (sp, bm, src.guid)))
                }
                (Ok(_), Ok(_)) => one_by_one.push(i),
                (Err(e), _) | (_, Err(e)) => results[i] = Err(zfs_err("converge", e)),
            }
        }
        let mut failed: BTreeMap<usize, String> = BTreeMap::new();
        if !by_program.is_empty() {
            let create: Vec<_> = by_program.iter().map(|(_, c)| c.clone()).collect();
            match self.zfs.create_bookmarks(&create).await {
                Ok(outcome) => {
                    for (i, (_, bm, _)) in &by_program {
                        if let Some(Err(errno)) = outcome.get(&bm.to_string()) {
                            failed.insert(
                                *i,
                                if *errno == 3 {
                                    "the common snapshot no longer has that name and guid"
                                        .to_string()
                                } else {
                                    format!("errno {errno}")
                                },
                            );
                        }
                    }
                }
                Err(e) => {
                    // No channel programs here: one `zfs bookmark` each.
                    tracing::debug!(error = %e, "converge: channel program unavailable");
                    one_by_one.extend(by_program.iter().map(|(i, _)| *i));
                }
            }
        }
        for i in one_by_one {
            let r = &reqs[i];
            let Some((src, name)) = plans[i].as_ref().and_then(|p| p.create_cursor.as_ref()) else {
                continue;
            };
            if let Err(e) = self.zfs.bookmark(&r.filesystem, src, name).await {
                failed.insert(i, e.to_string());
            }
        }
        for (i, why) in failed {
            results[i] = Err(EndpointError::zfs(format!(
                "cannot move replication cursor of {} to {}: {why}",
                reqs[i].filesystem,
                reqs[i].common.relative_name()
            )));
        }
        zrepl_failpoint::hit("converge.sender.after_new_cursor")
            .map_err(|e| EndpointError::zfs(e.to_string()))?;
        // 2. Cleanup where the cursor is in place (or none is kept).
        let mut doomed = Vec::new();
        let mut check = Vec::new();
        for ((r, p), res) in reqs.iter().zip(&plans).zip(&results) {
            let (Some(p), Ok(())) = (p, res) else {
                continue;
            };
            for b in &p.destroy {
                if let Ok(v) = VersionPath::of(&r.filesystem, b) {
                    doomed.push(v);
                }
            }
            for s in &p.check_holds {
                if let Ok(v) = VersionPath::of(&r.filesystem, s) {
                    check.push(v);
                }
            }
        }
        let release = async {
            if check.is_empty() {
                return;
            }
            match self.zfs.holds(&check).await {
                Ok(holds) => {
                    let stale: Vec<VersionPath> = crate::plan::stale_step_holds(job, holds.iter())
                        .into_iter()
                        .cloned()
                        .collect();
                    if !stale.is_empty() {
                        if let Err(e) = self.zfs.release(&step_hold_tag(job), &stale).await {
                            tracing::warn!(error = %e, "converge: cannot release stale step holds");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "converge: cannot list holds"),
            }
        };
        let (failed, ()) = tokio::join!(self.zfs.destroy_bookmarks(&doomed), release);
        for (bm, e) in failed {
            tracing::warn!(bookmark = %bm, error = %e, "converge: cannot destroy stale cursor");
        }
        {
            // Their cursors changed: a kept planning listing would show gone ones.
            let mut p = lock(&self.prepared);
            for r in reqs {
                p.planned.remove(&r.filesystem);
            }
        }
        Ok(results)
    }
}

/// Placeholder state of `paths`, from one recursive `zfs get` per pool. Paths that vanished
/// meanwhile are missing from the map.
pub(crate) async fn placeholder_map(
    zfs: &Zfs,
    paths: &[DatasetPath],
) -> Result<std::collections::BTreeMap<DatasetPath, bool>, EndpointError> {
    let pools: std::collections::BTreeSet<&str> = paths.iter().filter_map(|p| p.pool()).collect();
    let mut out = std::collections::BTreeMap::new();
    for pool in pools {
        let root = DatasetPath::parse(pool).map_err(|e| EndpointError::invalid(e.to_string()))?;
        let props = match zfs
            .get_properties_recursive(&root, None, &[PLACEHOLDER_PROPERTY])
            .await
        {
            Ok(p) => p,
            Err(zrepl_zfs::ZfsError::DatasetDoesNotExist { .. }) => continue,
            Err(e) => {
                return Err(zfs_err(
                    format!("cannot get {PLACEHOLDER_PROPERTY} of pool {pool}"),
                    e,
                ))
            }
        };
        for (path, p) in props {
            let ph = is_placeholder(&path, &p);
            out.insert(path, ph);
        }
    }
    Ok(out)
}

/// zrepl's rule: a placeholder has `zrepl:placeholder` set locally to `on` (or the legacy hash).
fn is_placeholder(path: &DatasetPath, p: &zrepl_zfs::Properties) -> bool {
    p.get(PLACEHOLDER_PROPERTY).is_some_and(|v| {
        v.source == zrepl_zfs::PropertySource::Local
            && zrepl_zfs::is_placeholder_value(path, &v.value)
    })
}

/// The newest v2 cursor of `job` among `bookmarks` whose embedded GUID is its real GUID
/// (a bookmark whose name lies about its GUID is ignored, as in zrepl).
pub(crate) fn pruning_cursor(
    bookmarks: &[FilesystemVersion],
    job: &str,
) -> Option<FilesystemVersion> {
    // Usually there is one. Two exist between a completion's new cursor and the destruction
    // of the old one (a crash in between), or when a completion was older than the cursor
    // (`plan::newer_cursors` keeps the newer one): pruning then goes by the oldest, which
    // counts more snapshots as not replicated, never fewer.
    bookmarks
        .iter()
        .filter(|b| b.typ == VersionType::Bookmark)
        .filter(|b| {
            matches!(parse_cursor_bookmark(&b.name),
                Some((AbstractionType::ReplicationCursorV2, Some(g), Some(j))) if j == job && g == b.guid)
        })
        .min_by_key(|b| b.createtxg)
        .cloned()
}

/// Destroys snapshots (never bookmarks) of `fs` whose GUIDs still match, batched.
pub(crate) async fn destroy_snapshots(
    zfs: &Zfs,
    fs: &DatasetPath,
    snapshots: &[FilesystemVersion],
) -> Result<Vec<DestroyResult>, EndpointError> {
    if let Some(b) = snapshots.iter().find(|s| s.typ != VersionType::Snapshot) {
        return Err(EndpointError::invalid(format!(
            "only snapshots can be destroyed, not {}",
            b.relative_name()
        )));
    }
    let current = zfs
        .list_versions(fs, VersionTypes::Snapshots)
        .await
        .map_err(|e| zfs_err(format!("cannot list snapshots of {fs}"), e))?;
    let mut results = Vec::new();
    let mut names = Vec::new();
    for s in snapshots {
        match current.iter().find(|c| c.name == s.name) {
            Some(c) if c.guid == s.guid => names.push(s.name.clone()),
            Some(_) => results.push(DestroyResult {
                snapshot: s.name.clone(),
                error: Some("snapshot was replaced (guid changed); not destroyed".into()),
            }),
            None => results.push(DestroyResult {
                snapshot: s.name.clone(),
                error: None,
            }),
        }
    }
    if !names.is_empty() {
        let outcome = zfs
            .destroy_snapshots(fs, &names)
            .await
            .map_err(|e| zfs_err(format!("cannot destroy snapshots of {fs}"), e))?;
        for (name, r) in outcome {
            results.push(DestroyResult {
                snapshot: name,
                error: r.err().map(|e| e.to_string()),
            });
        }
    }
    results.sort_by(|a, b| a.snapshot.cmp(&b.snapshot));
    Ok(results)
}

impl LocalSender {
    /// Releases this job's step holds taken more than `max_age` before `now` (Unix seconds) on
    /// the filesystems the job may send (a source's `step_holds.max_age`): a pull client that
    /// prepares steps and never completes them keeps snapshots from being destroyed no longer
    /// than that. Only snapshots with holds are asked for theirs. Returns what was released.
    pub async fn release_expired_step_holds(
        &self,
        now: i64,
        max_age: std::time::Duration,
    ) -> Result<Vec<VersionPath>, EndpointError> {
        self.listings.invalidate(None);
        let _changing = self.listings.changing(Vec::new());
        use zrepl_protocol::Sender as _;
        let fss: Vec<DatasetPath> = self
            .list_filesystems()
            .await?
            .into_iter()
            .filter(|f| !f.is_placeholder)
            .map(|f| f.path)
            .collect();
        let mut held = Vec::new();
        // The versions `list_filesystems` just listed with the filesystems (the cache is empty).
        let listed = zrepl_protocol::Sender::list_versions_many(self, &fss).await?;
        for (fs, versions) in fss.iter().zip(listed) {
            let Ok(versions) = versions else { continue };
            for v in versions {
                if v.typ == VersionType::Snapshot && v.userrefs.unwrap_or(0) > 0 {
                    if let Ok(p) = VersionPath::of(fs, &v) {
                        held.push(p);
                    }
                }
            }
        }
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let holds = self
            .zfs
            .holds_timed(&held)
            .await
            .map_err(|e| zfs_err("cannot list holds", e))?;
        let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        let expired: Vec<VersionPath> =
            crate::plan::expired_step_holds(&self.cfg.job, holds.iter(), now, max_age)
                .into_iter()
                .cloned()
                .collect();
        if !expired.is_empty() {
            self.zfs
                .release(&step_hold_tag(&self.cfg.job), &expired)
                .await
                .map_err(|e| zfs_err("cannot release expired step holds", e))?;
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(n: usize) -> Vec<DatasetPath> {
        // Given out of order: parts are consecutive in name order.
        (0..n)
            .rev()
            .map(|i| DatasetPath::parse(&format!("pool/fs{i:03}")).unwrap())
            .collect()
    }

    #[test]
    fn listing_parts_table() {
        // (filesystems, parallelism, part sizes)
        let cases: &[(usize, usize, &[usize])] = &[
            (0, 4, &[0]),
            (1, 4, &[1]),
            (15, 4, &[15]),
            (16, 4, &[8, 8]),
            (30, 2, &[15, 15]),
            (30, 4, &[10, 10, 10]),
            (33, 4, &[9, 8, 8, 8]),
            (31, 1, &[31]),
            (31, 0, &[31]),
            (1000, 4, &[250, 250, 250, 250]),
        ];
        for &(n, par, want) in cases {
            let parts = listing_parts(&paths(n), par);
            let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
            assert_eq!(sizes, want, "{n} filesystems, parallelism {par}");
            let flat: Vec<DatasetPath> = parts.into_iter().flatten().collect();
            let mut all = paths(n);
            all.sort();
            assert_eq!(flat, all, "every filesystem once, in order");
        }
    }
}
