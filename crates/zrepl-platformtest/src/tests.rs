//! The platform tests. Each is an `async fn(Ctx) -> TestResult` on a fresh pool. Operations
//! under test go through zrepl-zfs; `sh` is only used for setup that zrepl never does itself
//! (encrypted datasets) and for independent cross-checks.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use zrepl_zfs::{
    DatasetPath, FilesystemVersion, PlaceholderEncryption, PropertySource, RecvRequest, SendFlags,
    SendRequest, VersionPath, VersionType, VersionTypes, Zfs, ZfsError,
};
use zrepl_zfs_types::resume_token;

use crate::pool::sh;
use crate::{Ctx, TestResult};

macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err(format!("{}:{}: check failed: {}", file!(), line!(), stringify!($cond)).into());
        }
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!(
                "{}:{}: check failed: {}: {}",
                file!(),
                line!(),
                stringify!($cond),
                format!($($fmt)+)
            )
            .into());
        }
    };
}

macro_rules! check_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!(
                "{}:{}: {} != {}: {:?} != {:?}",
                file!(),
                line!(),
                stringify!($a),
                stringify!($b),
                a,
                b
            )
            .into());
        }
    }};
}

impl Ctx {
    fn ds(&self, rel: &str) -> DatasetPath {
        DatasetPath::parse(&format!("{}/{rel}", self.pool)).expect("valid test dataset name")
    }

    fn snap(&self, rel: &str, name: &str) -> VersionPath {
        VersionPath::snapshot(&self.ds(rel), name).expect("valid test snapshot name")
    }

    fn bm(&self, rel: &str, name: &str) -> VersionPath {
        VersionPath::bookmark(&self.ds(rel), name).expect("valid test bookmark name")
    }

    async fn create(&self, rel: &str) -> Result<DatasetPath, ZfsError> {
        let fs = self.ds(rel);
        self.zfs.create_filesystem(&fs, &[], false).await?;
        Ok(fs)
    }

    /// Writes `len` bytes of incompressible data to `<mountpoint of fs>/<file>`.
    async fn write_random(
        &self,
        fs: &DatasetPath,
        file: &str,
        len: usize,
        seed: u64,
    ) -> TestResult {
        let mp = self.zfs.get_property(fs, "mountpoint").await?.value;
        let mut x = seed | 1;
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        data.truncate(len);
        let path = std::path::Path::new(&mp).join(file);
        // Blocking I/O is fine here: setup runs before anything else is in flight.
        let mut f = std::fs::File::create(&path)?;
        std::io::Write::write_all(&mut f, &data)?;
        f.sync_all()?;
        Ok(())
    }

    async fn snapshot(&self, rel: &str, name: &str) -> Result<FilesystemVersion, ZfsError> {
        let s = self.snap(rel, name);
        self.zfs.snapshot(std::slice::from_ref(&s)).await?;
        self.zfs.get_version(&s).await
    }

    /// Full or incremental send of `req` received into `target` (with `-s`).
    async fn replicate(&self, req: &SendRequest, target: &VersionPath) -> TestResult {
        let stream = self.zfs.send(req).await?;
        let mut r = RecvRequest::new(target.clone());
        r.save_partial = true;
        self.zfs.receive(&r, stream).await?;
        Ok(())
    }
}

fn no_flags() -> SendFlags {
    SendFlags::default()
}

pub async fn feature_detection(t: Ctx) -> TestResult {
    let f = t.zfs.features().await?;
    check!(f.resumable_send, "{f:?}");
    check!(f.resumable_recv_cli, "{f:?}");
    check!(f.encryption, "{f:?}");
    check!(f.bookmark_copy, "{f:?}");
    check!(f.comma_destroy, "{f:?}");
    let v = f.version.clone().ok_or("no zfs version")?;
    // OpenZFS 2.1 or newer, the series the VM was built with if tools/platform-test.sh says
    // which (ZREPL_VM_ZFS; unset for the default 2.3 or a direct run), and what it has:
    // `snapshots_changed` since 2.2.
    let Some((2, minor, _)) = v.numeric else {
        return Err(format!("not OpenZFS 2.x: {v:?}").into());
    };
    check!(minor >= 1, "{v:?}");
    if let Ok(series) = std::env::var("ZREPL_VM_ZFS") {
        check_eq!(format!("2.{minor}"), series);
    }
    check_eq!(f.snapshots_changed, minor >= 2);
    check!(t.zfs.pool_resumable_recv(&t.pool).await?);
    check!(t.zfs.resumable_recv_supported(&t.ds("x")).await?);
    // Cached: no further probes.
    let n = t.zfs.total_commands_started();
    t.zfs.features().await?;
    t.zfs.pool_resumable_recv(&t.pool).await?;
    check_eq!(t.zfs.total_commands_started(), n);
    Ok(())
}

pub async fn get_set_user_properties(t: Ctx) -> TestResult {
    let parent = t.create("parent").await?;
    let child = t.create("parent/child").await?;
    t.zfs
        .set_properties(
            &parent,
            &[("zrepl:foo", "bar"), ("com.example:x", "with space")],
        )
        .await?;
    let p = t
        .zfs
        .get_properties(&parent, &["zrepl:foo", "com.example:x", "zrepl:unset"])
        .await?;
    check_eq!(p["zrepl:foo"].value, "bar");
    check_eq!(p["zrepl:foo"].source, PropertySource::Local);
    check_eq!(p["com.example:x"].value, "with space");
    // User properties are read from local values only (`-s local,none`): an unset one is
    // `-` with source none, an inherited (or received) one is absent.
    check_eq!(p["zrepl:unset"].value, "-");
    check_eq!(p["zrepl:unset"].source, PropertySource::None);
    check!(!t
        .zfs
        .get_properties(&child, &["zrepl:foo"])
        .await?
        .contains_key("zrepl:foo"));
    let all = t
        .zfs
        .get_properties_recursive(&parent, None, &["zrepl:foo"])
        .await?;
    check_eq!(all.len(), 2);
    check_eq!(all[&parent]["zrepl:foo"].value, "bar");
    check!(!all[&child].contains_key("zrepl:foo"));
    t.zfs.inherit_property(&parent, "zrepl:foo").await?;
    check_eq!(
        t.zfs.get_properties(&parent, &["zrepl:foo"]).await?["zrepl:foo"].source,
        PropertySource::None
    );
    // Properties of snapshots work the same way.
    let s = t.snapshot("parent", "s").await?;
    let sp = t.snap("parent", "s");
    t.zfs
        .set_properties(&sp, &[("zrepl:snapprop", "1")])
        .await?;
    check_eq!(t.zfs.get_property(&sp, "zrepl:snapprop").await?.value, "1");
    check_eq!(t.zfs.guid(&sp).await?, s.guid);
    Ok(())
}

pub async fn nonexistent_datasets_are_classified(t: Ctx) -> TestResult {
    t.create("a").await?;
    let missing_fs = t.ds("nope");
    for target in [
        zrepl_zfs::Target::Dataset(missing_fs.clone()),
        zrepl_zfs::Target::Version(t.snap("a", "nope")),
        zrepl_zfs::Target::Version(t.bm("a", "nope")),
        zrepl_zfs::Target::Version(t.snap("nope", "x")),
    ] {
        match t.zfs.get_property(target.clone(), "guid").await {
            Err(ZfsError::DatasetDoesNotExist { path }) => check_eq!(path, target.to_string()),
            other => return Err(format!("{target}: {other:?}").into()),
        }
    }
    match t.zfs.list_versions(&missing_fs, VersionTypes::All).await {
        Err(ZfsError::DatasetDoesNotExist { path }) => check_eq!(path, missing_fs.to_string()),
        other => return Err(format!("{other:?}").into()),
    }
    check!(t
        .zfs
        .list_versions(&t.ds("a"), VersionTypes::All)
        .await?
        .is_empty());
    check!(t
        .zfs
        .list_subtree_versions(&missing_fs)
        .await
        .is_err_and(|e| e.is_does_not_exist()));
    check!(t
        .zfs
        .destroy_version(&t.snap("a", "nope"))
        .await
        .is_err_and(|e| e.is_does_not_exist()));
    check!(t
        .zfs
        .destroy_version(&t.bm("a", "nope"))
        .await
        .is_err_and(|e| e.is_does_not_exist()));
    check!(t
        .zfs
        .destroy_dataset(&missing_fs, false)
        .await
        .is_err_and(|e| e.is_does_not_exist()));
    t.zfs
        .destroy_version_idempotent(&t.snap("a", "nope"))
        .await?;
    t.zfs.destroy_version_idempotent(&t.bm("a", "nope")).await?;
    Ok(())
}

pub async fn multi_dataset_snapshot_is_one_command(t: Ctx) -> TestResult {
    let names = ["a", "b", "c d"];
    for n in names {
        t.create(n).await?;
    }
    let snaps: Vec<VersionPath> = names.iter().map(|n| t.snap(n, "same")).collect();
    let before = t.zfs.zfs_commands_started("snapshot");
    t.zfs.snapshot(&snaps).await?;
    check_eq!(t.zfs.zfs_commands_started("snapshot") - before, 1);
    let mut txgs = Vec::new();
    for s in &snaps {
        txgs.push(t.zfs.get_version(s).await?.createtxg);
    }
    check!(
        txgs.iter().all(|x| *x == txgs[0]),
        "createtxgs differ: {txgs:?}"
    );
    Ok(())
}

pub async fn bookmark_idempotent_and_exists_error(t: Ctx) -> TestResult {
    let fs = t.create("fs").await?;
    let a = t.snapshot("fs", "a").await?;
    t.write_random(&fs, "f", 4096, 1).await?;
    let b = t.snapshot("fs", "b").await?;
    let bm = t.zfs.bookmark(&fs, &a, "bm").await?;
    check_eq!(bm.guid, a.guid);
    check_eq!(bm.typ, VersionType::Bookmark);
    // Same again: idempotent.
    t.zfs.bookmark(&fs, &a, "bm").await?;
    // Same name for another snapshot: BookmarkExists.
    match t.zfs.bookmark(&fs, &b, "bm").await {
        Err(ZfsError::BookmarkExists {
            existing_guid,
            wanted_guid,
            ..
        }) => {
            check_eq!(existing_guid, a.guid);
            check_eq!(wanted_guid, b.guid);
        }
        other => return Err(format!("expected BookmarkExists, got {other:?}").into()),
    }
    // Bookmark copy (OpenZFS >= 2.0).
    let copy = t.zfs.bookmark(&fs, &bm, "bm copy").await?;
    check_eq!(t.zfs.guid(&t.bm("fs", "bm copy")).await?, a.guid);
    check_eq!(copy.createtxg, a.createtxg);
    let listed = t.zfs.list_versions(&fs, VersionTypes::Bookmarks).await?;
    check_eq!(listed.len(), 2);
    check!(listed
        .iter()
        .all(|v| v.userrefs.is_none() && v.guid == a.guid));
    // Source snapshot gone: DatasetDoesNotExist.
    t.zfs.destroy_version(&t.snap("fs", "a")).await?;
    match t.zfs.bookmark(&fs, &a, "bm2").await {
        Err(ZfsError::DatasetDoesNotExist { path }) => {
            check_eq!(path, t.snap("fs", "a").to_string())
        }
        other => return Err(format!("expected DatasetDoesNotExist, got {other:?}").into()),
    }
    Ok(())
}

/// libzfs_core calls of `verb` started so far by `zfs`.
fn lzc_calls(zfs: &Zfs, verb: &str) -> u64 {
    zfs.command_stats()
        .get(&(zrepl_zfs::Binary::LibzfsCore, verb.to_string()))
        .map_or(0, |s| s.started)
}

/// Hold and release are idempotent and batched, through libzfs_core (one call per pool and
/// batch, falling back to the command line for a batch it cannot complete cleanly) and through
/// the command line alone, with the same outcome either way.
pub async fn idempotent_hold_and_release(t: Ctx) -> TestResult {
    check!(
        t.zfs.uses_libzfs_core(),
        "libzfs_core must load where OpenZFS is installed"
    );
    let cli = Zfs::new(zrepl_zfs::ZfsConfig {
        libzfs_core: false,
        ..zrepl_zfs::ZfsConfig::default()
    });
    check!(!cli.uses_libzfs_core());
    for (i, zfs) in [&t.zfs, &cli].into_iter().enumerate() {
        let lzc = zfs.uses_libzfs_core();
        let fs = format!("fs{i}");
        t.create(&fs).await?;
        t.snapshot(&fs, "s").await?;
        let s = t.snap(&fs, "s");
        let snaps = [s.clone()];
        zfs.hold("zrepl_STEP_J_my job", &snaps).await?;
        zfs.hold("zrepl_STEP_J_my job", &snaps).await?;
        zfs.hold("other tag", &snaps).await?;
        let holds = zfs.holds(&snaps).await?;
        let mut tags = holds[&s].clone();
        tags.sort();
        check_eq!(tags, ["other tag", "zrepl_STEP_J_my job"]);
        check_eq!(zfs.get_version(&s).await?.userrefs, Some(2));
        zfs.release("zrepl_STEP_J_my job", &snaps).await?;
        zfs.release("zrepl_STEP_J_my job", &snaps).await?;
        zfs.release("never held", &snaps).await?;
        check_eq!(zfs.holds(&snaps).await?[&s], ["other tag"]);
        // Many snapshots (of two filesystems) at once.
        t.create(&format!("{fs}/child")).await?;
        let mut many: Vec<VersionPath> = (0..5).map(|i| t.snap(&fs, &format!("m{i}"))).collect();
        many.push(t.snap(&format!("{fs}/child"), "m"));
        for m in &many {
            zfs.snapshot(std::slice::from_ref(m)).await?;
        }
        let (h0, r0, q0) = (
            zfs.zfs_commands_started("hold"),
            zfs.zfs_commands_started("release"),
            zfs.zfs_commands_started("holds"),
        );
        let (lh0, lr0) = (lzc_calls(zfs, "hold"), lzc_calls(zfs, "release"));
        zfs.hold("batch", &many).await?;
        zfs.hold("batch", &many).await?;
        let h = zfs.holds(&many).await?;
        check!(h.values().all(|tags| tags == &["batch"]), "{h:?}");
        zfs.release("batch", &many).await?;
        zfs.release("batch", &many).await?;
        check_eq!(zfs.zfs_commands_started("holds") - q0, 1);
        check!(zfs.holds(&many).await?.values().all(Vec::is_empty));
        let (h, r) = (
            zfs.zfs_commands_started("hold") - h0,
            zfs.zfs_commands_started("release") - r0,
        );
        let (lh, lr) = (
            lzc_calls(zfs, "hold") - lh0,
            lzc_calls(zfs, "release") - lr0,
        );
        // The CLI splits 6 snapshots over 2 concurrent commands (at least 5 each).
        if lzc {
            // One call each. A repeated hold fails in the kernel (tag exists) and is redone,
            // idempotently, by the CLI; a repeated release only reports the missing tags, which
            // is success, as for the CLI.
            check_eq!((lh, lr, h, r), (2, 2, 2, 0));
        } else {
            check_eq!((lh, lr, h, r), (0, 0, 4, 4));
        }
        // A missing snapshot is an error naming it; the others are held all the same.
        let mut with_missing = many.clone();
        with_missing.push(t.snap(&fs, "missing"));
        match zfs.hold("partly", &with_missing).await {
            Err(e) => check!(e.to_string().contains("missing"), "{e}"),
            Ok(()) => return Err("hold of a missing snapshot succeeded".into()),
        }
        let h = zfs.holds(&many).await?;
        check!(h.values().all(|tags| tags == &["partly"]), "{h:?}");
        zfs.release("partly", &many).await?;
        check!(zfs.holds(&many).await?.values().all(Vec::is_empty));
    }
    Ok(())
}

/// Bookmarks are destroyed in one libzfs_core call (idempotently: missing ones are fine), and
/// through `zfs destroy` without it.
pub async fn destroy_bookmarks_batched_and_idempotent(t: Ctx) -> TestResult {
    let cli = Zfs::new(zrepl_zfs::ZfsConfig {
        libzfs_core: false,
        ..zrepl_zfs::ZfsConfig::default()
    });
    for (i, zfs) in [&t.zfs, &cli].into_iter().enumerate() {
        let fs = format!("fs{i}");
        t.create(&fs).await?;
        t.create(&format!("{fs}/c")).await?;
        let mut bms = Vec::new();
        let mut first = None;
        for f in [fs.clone(), format!("{fs}/c")] {
            let v = t.snapshot(&f, "s").await?;
            for b in ["b1", "b 2"] {
                zfs.bookmark(&t.ds(&f), &v, b).await?;
                bms.push(t.bm(&f, b));
            }
            first.get_or_insert(v);
        }
        let keep = t.bm(&fs, "keep");
        zfs.bookmark(&t.ds(&fs), first.as_ref().ok_or("no snapshot")?, "keep")
            .await?;
        let mut doomed = bms.clone();
        doomed.push(t.bm(&fs, "never existed"));
        let (d0, l0) = (
            zfs.zfs_commands_started("destroy"),
            lzc_calls(zfs, "destroy"),
        );
        let failed = zfs.destroy_bookmarks(&doomed).await;
        check!(failed.is_empty(), "{failed:?}");
        for b in &bms {
            check!(!zfs.exists(b).await?, "{b} still exists");
        }
        check!(zfs.exists(&keep).await?, "{keep} was destroyed");
        // Again: all missing now, still success.
        check!(zfs.destroy_bookmarks(&doomed).await.is_empty());
        let (d, l) = (
            zfs.zfs_commands_started("destroy") - d0,
            lzc_calls(zfs, "destroy") - l0,
        );
        if zfs.uses_libzfs_core() {
            check_eq!((d, l), (0, 2));
        } else {
            check_eq!((d, l), (2 * doomed.len() as u64, 0));
        }
        // A snapshot is not a bookmark: refused before anything runs.
        let failed = zfs.destroy_bookmarks(&[t.snap(&fs, "s")]).await;
        check!(failed.len() == 1, "{failed:?}");
        check!(zfs.exists(&t.snap(&fs, "s")).await?);
    }
    Ok(())
}

pub async fn holds_block_destroy(t: Ctx) -> TestResult {
    t.create("fs").await?;
    t.snapshot("fs", "s").await?;
    let s = t.snap("fs", "s");
    t.zfs.hold("keep", std::slice::from_ref(&s)).await?;
    match t.zfs.destroy_version(&s).await {
        Err(ZfsError::DestroySnapshots { undestroyable, .. }) => {
            check_eq!(undestroyable.len(), 1);
            check_eq!(undestroyable[0].snapshot, "s");
            check!(undestroyable[0].is_held(), "{:?}", undestroyable[0]);
        }
        other => return Err(format!("expected DestroySnapshots, got {other:?}").into()),
    }
    check!(t.zfs.exists(&s).await?);
    t.zfs.release("keep", std::slice::from_ref(&s)).await?;
    t.zfs.destroy_version(&s).await?;
    check!(!t.zfs.exists(&s).await?);
    Ok(())
}

pub async fn destroy_refuses_when_guid_changed(t: Ctx) -> TestResult {
    let fs = t.create("fs").await?;
    let old = t.snapshot("fs", "s").await?;
    let s = t.snap("fs", "s");
    t.zfs.destroy_version(&s).await?;
    t.write_random(&fs, "f", 4096, 2).await?;
    let new = t.snapshot("fs", "s").await?;
    check!(old.guid != new.guid);
    match t.zfs.destroy_if_guid_matches(&s, old.guid).await {
        Err(ZfsError::GuidMismatch {
            expected, actual, ..
        }) => {
            check_eq!(expected, old.guid);
            check_eq!(actual, new.guid);
        }
        other => return Err(format!("expected GuidMismatch, got {other:?}").into()),
    }
    check_eq!(t.zfs.get_version(&s).await?.guid, new.guid);
    t.zfs.destroy_if_guid_matches(&s, new.guid).await?;
    check!(!t.zfs.exists(&s).await?);
    // Bookmarks too.
    let again = t.snapshot("fs", "s").await?;
    t.zfs.bookmark(&fs, &again, "b").await?;
    check!(t
        .zfs
        .destroy_if_guid_matches(&t.bm("fs", "b"), old.guid)
        .await
        .is_err());
    t.zfs
        .destroy_if_guid_matches(&t.bm("fs", "b"), again.guid)
        .await?;
    check!(!t.zfs.exists(&t.bm("fs", "b")).await?);
    Ok(())
}

pub async fn batched_destroy_reports_exactly_the_held_snapshot(t: Ctx) -> TestResult {
    let fs = t.create("with space").await?;
    let names = ["s 1", "s 2", "s 3"];
    for n in names {
        t.snapshot("with space", n).await?;
    }
    t.zfs.hold("hold", &[t.snap("with space", "s 2")]).await?;
    // Feature detection probes `zfs destroy` too: do it before counting.
    check!(t.zfs.features().await?.comma_destroy);
    let before = t.zfs.zfs_commands_started("destroy");
    let out = t
        .zfs
        .destroy_snapshots(&fs, &names.map(String::from))
        .await?;
    let failed: Vec<&str> = out
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| n.as_str())
        .collect();
    check!(failed == ["s 2"], "{out:#?}");
    let err = out
        .iter()
        .find_map(|(n, r)| (n == "s 2").then_some(r))
        .and_then(|r| r.as_ref().err())
        .ok_or("no error for s 2")?;
    match &**err {
        ZfsError::DestroySnapshots { undestroyable, .. } => {
            check_eq!(undestroyable.len(), 1);
            check_eq!(undestroyable[0].snapshot, "s 2");
            check!(undestroyable[0].is_held(), "{:?}", undestroyable[0]);
        }
        e => return Err(format!("unexpected error {e}").into()),
    }
    // The batch, the batch without the held one, the held one alone.
    check!(
        t.zfs.zfs_commands_started("destroy") - before == 3,
        "{out:#?}"
    );
    let left: Vec<String> = t
        .zfs
        .list_versions(&fs, VersionTypes::Snapshots)
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    check_eq!(left, ["s 2"]);
    Ok(())
}

pub async fn send_dry_run_estimate_nonzero(t: Ctx) -> TestResult {
    let fs = t.create("fs").await?;
    t.write_random(&fs, "a", 2 << 20, 3).await?;
    t.snapshot("fs", "1").await?;
    t.write_random(&fs, "b", 1 << 20, 4).await?;
    t.snapshot("fs", "2").await?;
    let full = t
        .zfs
        .send_dry(&SendRequest::full(t.snap("fs", "1"), no_flags()))
        .await?;
    check!(full.size > 1 << 20, "{full:?}");
    let inc = t
        .zfs
        .send_dry(&SendRequest::incremental(
            t.snap("fs", "1"),
            t.snap("fs", "2"),
            no_flags(),
        ))
        .await?;
    check!(inc.size > 512 << 10, "{inc:?}");
    check!(inc.size < full.size + (2 << 20), "{inc:?}");
    Ok(())
}

pub async fn incremental_send_from_bookmark_after_snapshot_destroyed(t: Ctx) -> TestResult {
    let src = t.create("src").await?;
    t.write_random(&src, "a", 1 << 20, 5).await?;
    let s1 = t.snapshot("src", "1").await?;
    t.replicate(
        &SendRequest::full(t.snap("src", "1"), no_flags()),
        &t.snap("dst", "1"),
    )
    .await?;
    t.zfs.bookmark(&src, &s1, "1").await?;
    t.zfs.destroy_version(&t.snap("src", "1")).await?;
    t.write_random(&src, "b", 1 << 20, 6).await?;
    let s2 = t.snapshot("src", "2").await?;
    t.replicate(
        &SendRequest::incremental(t.bm("src", "1"), t.snap("src", "2"), no_flags()),
        &t.snap("dst", "2"),
    )
    .await?;
    check_eq!(t.zfs.guid(&t.snap("dst", "2")).await?, s2.guid);
    check_eq!(t.zfs.guid(&t.snap("dst", "1")).await?, s1.guid);
    Ok(())
}

pub async fn raw_send_of_encrypted_dataset_received_without_key(t: Ctx) -> TestResult {
    std::fs::write(&t.key_file, "platformtest-passphrase")?;
    let enc = t.ds("enc");
    let keylocation = format!("keylocation=file://{}", t.key_file.display());
    sh(&[
        "zfs",
        "create",
        "-o",
        "encryption=on",
        "-o",
        "keyformat=passphrase",
        "-o",
        &keylocation,
        &enc.to_string(),
    ])?;
    check!(t.zfs.is_encrypted(&enc).await?);
    t.write_random(&enc, "secret", 1 << 20, 7).await?;
    let s = t.snapshot("enc", "s").await?;
    let flags = SendFlags {
        raw: true,
        ..no_flags()
    };
    t.replicate(
        &SendRequest::full(t.snap("enc", "s"), flags),
        &t.snap("recv", "s"),
    )
    .await?;
    let recv = t.ds("recv");
    check_eq!(t.zfs.guid(&t.snap("recv", "s")).await?, s.guid);
    check!(t.zfs.is_encrypted(&recv).await?);
    let p = t
        .zfs
        .get_properties(&recv, &["keystatus", "mounted", "encryptionroot"])
        .await?;
    check_eq!(p["keystatus"].value, "unavailable");
    check_eq!(p["mounted"].value, "no");
    check_eq!(p["encryptionroot"].value, recv.to_string());
    // The data cannot be read: the dataset cannot even be mounted without the key.
    let mount = sh(&["zfs", "mount", &recv.to_string()]);
    check!(mount.is_err(), "mounting without key succeeded");
    let mp = t.zfs.get_property(&recv, "mountpoint").await?.value;
    check!(!std::path::Path::new(&mp).join("secret").exists());
    Ok(())
}

/// Sends `req` but cuts the stream after `cut` bytes, received with `-s` into `target`;
/// returns the resume token from the error.
async fn interrupted_replication(
    t: &Ctx,
    req: &SendRequest,
    target: &VersionPath,
    cut: u64,
) -> Result<String, String> {
    let stream = t.zfs.send(req).await.map_err(|e| e.to_string())?;
    let mut r = RecvRequest::new(target.clone());
    r.save_partial = true;
    match t.zfs.receive(&r, stream.take(cut)).await {
        Err(ZfsError::RecvFailedWithResumeToken { token, .. }) => Ok(token),
        other => Err(format!("expected a resumable receive error, got {other:?}")),
    }
}

pub async fn interrupted_full_receive_resumes_with_token(t: Ctx) -> TestResult {
    let src = t.create("src").await?;
    t.write_random(&src, "data", 8 << 20, 8).await?;
    let s = t.snapshot("src", "s").await?;
    let dst = t.ds("dst");
    let token = interrupted_replication(
        &t,
        &SendRequest::full(t.snap("src", "s"), no_flags()),
        &t.snap("dst", "s"),
        1 << 20,
    )
    .await?;
    check_eq!(t.zfs.receive_resume_token(&dst).await?, Some(token.clone()));
    let decoded = resume_token::decode(&token).map_err(|e| format!("decode: {e}"))?;
    check_eq!(decoded.toguid, s.guid);
    check_eq!(decoded.toname, t.snap("src", "s").to_string());
    check_eq!(decoded.fromguid, None);
    t.replicate(&SendRequest::resume(token), &t.snap("dst", "s"))
        .await?;
    check_eq!(t.zfs.guid(&t.snap("dst", "s")).await?, s.guid);
    check_eq!(t.zfs.receive_resume_token(&dst).await?, None);
    Ok(())
}

pub async fn interrupted_incremental_receive_resumes_with_token(t: Ctx) -> TestResult {
    let src = t.create("src").await?;
    t.write_random(&src, "a", 1 << 20, 9).await?;
    let s1 = t.snapshot("src", "1").await?;
    t.replicate(
        &SendRequest::full(t.snap("src", "1"), no_flags()),
        &t.snap("dst", "1"),
    )
    .await?;
    t.write_random(&src, "b", 8 << 20, 10).await?;
    let s2 = t.snapshot("src", "2").await?;
    let token = interrupted_replication(
        &t,
        &SendRequest::incremental(t.snap("src", "1"), t.snap("src", "2"), no_flags()),
        &t.snap("dst", "2"),
        1 << 20,
    )
    .await?;
    let decoded = resume_token::decode(&token).map_err(|e| format!("decode: {e}"))?;
    check_eq!(decoded.toguid, s2.guid);
    check_eq!(decoded.fromguid, Some(s1.guid));
    check_eq!(decoded.toname, t.snap("src", "2").to_string());
    t.replicate(&SendRequest::resume(token), &t.snap("dst", "2"))
        .await?;
    check_eq!(t.zfs.guid(&t.snap("dst", "2")).await?, s2.guid);
    check_eq!(t.zfs.receive_resume_token(&t.ds("dst")).await?, None);
    Ok(())
}

pub async fn recv_abort_clears_resume_token(t: Ctx) -> TestResult {
    let src = t.create("src").await?;
    t.write_random(&src, "data", 8 << 20, 11).await?;
    t.snapshot("src", "s").await?;
    let dst = t.ds("dst");
    // Nothing to abort yet (dataset does not exist either): the abort on a missing dataset is
    // an error, on an existing one without state a success.
    t.create("other").await?;
    t.zfs.recv_abort(&t.ds("other")).await?;
    interrupted_replication(
        &t,
        &SendRequest::full(t.snap("src", "s"), no_flags()),
        &t.snap("dst", "s"),
        1 << 20,
    )
    .await?;
    check!(t.zfs.receive_resume_token(&dst).await?.is_some());
    t.zfs.recv_abort(&dst).await?;
    // A full receive that was aborted leaves nothing behind.
    check!(!t.zfs.exists(&dst).await?);
    // Incremental: the filesystem stays, the token goes.
    t.replicate(
        &SendRequest::full(t.snap("src", "s"), no_flags()),
        &t.snap("dst", "s"),
    )
    .await?;
    t.write_random(&src, "more", 8 << 20, 12).await?;
    t.snapshot("src", "t").await?;
    interrupted_replication(
        &t,
        &SendRequest::incremental(t.snap("src", "s"), t.snap("src", "t"), no_flags()),
        &t.snap("dst", "t"),
        1 << 20,
    )
    .await?;
    check!(t.zfs.receive_resume_token(&dst).await?.is_some());
    t.zfs.recv_abort(&dst).await?;
    check_eq!(t.zfs.receive_resume_token(&dst).await?, None);
    t.zfs.recv_abort(&dst).await?; // idempotent
    Ok(())
}

pub async fn send_stream_drop_kills_zfs_send(t: Ctx) -> TestResult {
    let src = t.create("src").await?;
    t.write_random(&src, "data", 16 << 20, 13).await?;
    t.snapshot("src", "s").await?;
    let mut stream = t
        .zfs
        .send(&SendRequest::full(t.snap("src", "s"), no_flags()))
        .await?;
    let mut buf = vec![0u8; 64 << 10];
    stream.read_exact(&mut buf).await?;
    // Give zfs send time to fill the pipe and block on it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    check_eq!(t.zfs.active_commands().len(), 1);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = sh(&["pgrep", "-f", "^zfs send"]).unwrap_or_default();
        if running.trim().is_empty() {
            break;
        }
        check!(
            Instant::now() < deadline,
            "zfs send still running: {running}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check!(t.zfs.active_commands().is_empty());
    // The pool is usable afterwards: destroying the snapshot works (no lingering send holds it).
    t.zfs.destroy_version(&t.snap("src", "s")).await?;
    Ok(())
}

pub async fn placeholder_creation_and_detection(t: Ctx) -> TestResult {
    let ph = t.ds("ph");
    t.zfs
        .create_placeholder(&ph, PlaceholderEncryption::Off)
        .await?;
    let st = t.zfs.placeholder_state(&ph).await?;
    check!(st.exists && st.is_placeholder, "{st:?}");
    let p = t
        .zfs
        .get_properties(&ph, &["mountpoint", "encryption", "mounted"])
        .await?;
    check_eq!(p["mountpoint"].value, "none");
    check_eq!(p["encryption"].value, "off");
    check_eq!(p["mounted"].value, "no");
    // A child of a placeholder inherits zrepl:placeholder=on but is not a placeholder (and
    // user properties are read from local values only: the inherited one is not reported).
    let child = t.create("ph/child").await?;
    check!(!t
        .zfs
        .get_properties(&child, &[zrepl_zfs::PLACEHOLDER_PROPERTY])
        .await?
        .contains_key(zrepl_zfs::PLACEHOLDER_PROPERTY));
    let st = t.zfs.placeholder_state(&child).await?;
    check!(
        st.exists && !st.is_placeholder && st.raw_local_value.is_none(),
        "{st:?}"
    );
    // A normal dataset is not a placeholder.
    let normal = t.create("normal").await?;
    check!(!t.zfs.placeholder_state(&normal).await?.is_placeholder);
    // Nonexistent: reported, not an error.
    let st = t.zfs.placeholder_state(&t.ds("missing")).await?;
    check!(!st.exists && !st.is_placeholder);
    // Clearing the flag, and the legacy hash value.
    t.zfs.set_placeholder(&ph, false).await?;
    check!(!t.zfs.placeholder_state(&ph).await?.is_placeholder);
    let legacy = zrepl_zfs::legacy_placeholder_value(&normal);
    t.zfs
        .set_properties(&normal, &[(zrepl_zfs::PLACEHOLDER_PROPERTY, &legacy)])
        .await?;
    check!(t.zfs.placeholder_state(&normal).await?.is_placeholder);
    // Inherit-encryption variant creates without -o encryption.
    t.zfs
        .create_placeholder(&t.ds("ph2"), PlaceholderEncryption::Inherit)
        .await?;
    check!(t.zfs.placeholder_state(&t.ds("ph2")).await?.is_placeholder);
    Ok(())
}

pub async fn names_with_spaces_end_to_end(t: Ctx) -> TestResult {
    let fs = t.create("with space").await?;
    let child = t.create("with space/child two").await?;
    t.write_random(&fs, "f", 256 << 10, 14).await?;
    let s = t.snapshot("with space", "snap one").await?;
    let fss = t.zfs.list_filesystems(Some(&fs)).await?;
    check_eq!(fss, [fs.clone(), child.clone()]);
    let bm = t.zfs.bookmark(&fs, &s, "bm one").await?;
    let sp = t.snap("with space", "snap one");
    t.zfs
        .hold("tag with space", std::slice::from_ref(&sp))
        .await?;
    check_eq!(
        t.zfs.holds(std::slice::from_ref(&sp)).await?[&sp],
        ["tag with space"]
    );
    let versions = t.zfs.list_versions(&fs, VersionTypes::All).await?;
    check_eq!(
        versions
            .iter()
            .map(|v| v.relative_name())
            .collect::<Vec<_>>(),
        ["#bm one", "@snap one"]
    );
    check_eq!(versions[1].userrefs, Some(1));
    t.replicate(
        &SendRequest::full(sp.clone(), no_flags()),
        &t.snap("recv space", "snap one"),
    )
    .await?;
    check_eq!(t.zfs.guid(&t.snap("recv space", "snap one")).await?, s.guid);
    t.write_random(&fs, "g", 64 << 10, 15).await?;
    let s2 = t.snapshot("with space", "snap two").await?;
    t.replicate(
        &SendRequest::incremental(
            VersionPath::of(&fs, &bm)?,
            t.snap("with space", "snap two"),
            no_flags(),
        ),
        &t.snap("recv space", "snap two"),
    )
    .await?;
    check_eq!(
        t.zfs.guid(&t.snap("recv space", "snap two")).await?,
        s2.guid
    );
    let sub = t.zfs.list_subtree_versions(&t.ds("recv space")).await?;
    check_eq!(sub[&t.ds("recv space")].len(), 2);
    t.zfs
        .release("tag with space", std::slice::from_ref(&sp))
        .await?;
    let out = t
        .zfs
        .destroy_snapshots(&fs, &["snap one".into(), "snap two".into()])
        .await?;
    check!(out.iter().all(|(_, r)| r.is_ok()), "{out:?}");
    t.zfs.destroy_version(&t.bm("with space", "bm one")).await?;
    t.zfs.destroy_dataset(&fs, true).await?;
    check!(!t.zfs.exists(&fs).await?);
    Ok(())
}

pub async fn invalid_names_rejected_before_any_command(t: Ctx) -> TestResult {
    let fs = t.create("fs").await?;
    let good = t.snapshot("fs", "good").await?;
    let before = t.zfs.total_commands_started();
    let bad = [
        "ünïcödé",
        "per%cent",
        "tab\there",
        "new\nline",
        "bell\u{7}",
        "nul\0x",
    ];
    for b in bad {
        check!(
            DatasetPath::parse(&format!("{}/{b}", t.pool)).is_err(),
            "{b:?}"
        );
        check!(VersionPath::snapshot(&fs, b).is_err(), "{b:?}");
        check!(VersionPath::bookmark(&fs, b).is_err(), "{b:?}");
        let r = t.zfs.destroy_snapshots(&fs, &[b.to_string()]).await;
        check!(
            matches!(r, Err(ZfsError::InvalidName { .. })),
            "{b:?}: {r:?}"
        );
        let r = t.zfs.bookmark(&fs, &good, b).await;
        check!(
            matches!(r, Err(ZfsError::InvalidName { .. })),
            "{b:?}: {r:?}"
        );
        let mut v = good.clone();
        v.name = b.to_string();
        check!(t.zfs.bookmark(&fs, &v, "ok").await.is_err(), "{b:?}");
        check!(VersionPath::of(&fs, &v).is_err());
    }
    for tag in ["tab\ttag", "nl\ntag", "-r", ""] {
        check!(
            t.zfs.hold(tag, &[t.snap("fs", "good")]).await.is_err(),
            "{tag:?}"
        );
        check!(
            t.zfs.release(tag, &[t.snap("fs", "good")]).await.is_err(),
            "{tag:?}"
        );
    }
    check!(t
        .zfs
        .set_properties(&fs, &[("zrepl:x", "new\nline")])
        .await
        .is_err());
    check!(t
        .zfs
        .set_properties(&fs, &[("zrepl:ü", "x")])
        .await
        .is_err());
    check!(t.zfs.get_properties(&fs, &["a b"]).await.is_err());
    check!(t.zfs.send(&SendRequest::resume("-nv")).await.is_err());
    check!(t.zfs.send(&SendRequest::resume("1-ü")).await.is_err());
    check_eq!(t.zfs.total_commands_started(), before);
    // Nothing was created behind our back.
    let listed = t.zfs.list_subtree_versions(&t.ds("fs")).await?;
    check_eq!(listed.len(), 1);
    check_eq!(listed[&fs].len(), 1);
    Ok(())
}

pub async fn subtree_listing_200x20_is_one_command(t: Ctx) -> TestResult {
    const FILESYSTEMS: usize = 200;
    const SNAPSHOTS: usize = 20;
    // mountpoint=none is inherited: no mount per create keeps the setup fast under emulation.
    let root = t.ds("many");
    t.zfs
        .create_filesystem(&root, &[("mountpoint", "none")], false)
        .await?;
    let start = Instant::now();
    let children: Vec<DatasetPath> = (0..FILESYSTEMS)
        .map(|i| t.ds(&format!("many/fs {i:03}")))
        .collect();
    // A few creates in flight at once; each is still one `zfs create`.
    for chunk in children.chunks(4) {
        let mut set = tokio::task::JoinSet::new();
        for c in chunk {
            let (zfs, c) = (t.zfs.clone(), c.clone());
            set.spawn(async move { zfs.create_filesystem(&c, &[], false).await });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    let created = start.elapsed();
    let start = Instant::now();
    let before_snap = t.zfs.zfs_commands_started("snapshot");
    // `zfs snapshot` opens every dataset in userland (~20 ms each under emulation), so each
    // round runs as two concurrent multi-snapshot commands over disjoint halves; the rounds of
    // one filesystem stay strictly ordered.
    let halves: Vec<&[DatasetPath]> = children.chunks(FILESYSTEMS / 2).collect();
    for s in 0..SNAPSHOTS {
        let mut set = tokio::task::JoinSet::new();
        for half in &halves {
            let snaps: Vec<VersionPath> = half
                .iter()
                .map(|c| VersionPath::snapshot(c, &format!("s{s:02}")))
                .collect::<Result<_, _>>()?;
            let zfs = t.zfs.clone();
            set.spawn(async move { zfs.snapshot(&snaps).await });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    let snapshotted = start.elapsed();
    let snap_cmds = t.zfs.zfs_commands_started("snapshot") - before_snap;
    let before_total = t.zfs.total_commands_started();
    let before_list = t.zfs.zfs_commands_started("list");
    let start = Instant::now();
    let map = t.zfs.list_subtree_versions(&root).await?;
    let listed = start.elapsed();
    let list_cmds = t.zfs.zfs_commands_started("list") - before_list;
    let total_cmds = t.zfs.total_commands_started() - before_total;
    eprintln!(
        "  200x20: {FILESYSTEMS} creates {:.1}s, {SNAPSHOTS}x{FILESYSTEMS} snapshots in {snap_cmds} \
         commands {:.1}s, listing {} versions in {list_cmds} zfs list ({total_cmds} commands total) {:.2}s",
        created.as_secs_f64(),
        snapshotted.as_secs_f64(),
        map.values().map(Vec::len).sum::<usize>(),
        listed.as_secs_f64()
    );
    check_eq!(list_cmds, 1);
    check_eq!(total_cmds, 1);
    check_eq!(snap_cmds, 2 * SNAPSHOTS as u64);
    check_eq!(map.len(), FILESYSTEMS + 1);
    check!(map[&root].is_empty());
    for c in &children {
        let vs = map.get(c).ok_or_else(|| format!("{c} missing"))?;
        check_eq!(vs.len(), SNAPSHOTS);
        let names: Vec<String> = vs.iter().map(|v| v.name.clone()).collect();
        let want: Vec<String> = (0..SNAPSHOTS).map(|s| format!("s{s:02}")).collect();
        check_eq!(names, want);
        check!(vs.windows(2).all(|w| w[0].createtxg < w[1].createtxg));
    }
    // All snapshots of one command share a txg.
    for half in &halves {
        let txg0: Vec<u64> = half.iter().map(|c| map[c][0].createtxg).collect();
        check!(txg0.iter().all(|x| *x == txg0[0]), "{txg0:?}");
    }

    // The same versions listed by name, in two parts at once (as the endpoints do for many
    // filesystems on a host with two CPUs), one of them naming a filesystem that is gone
    // and the root (which has children but no versions of its own).
    let gone = t.ds("many/gone");
    let mut first: Vec<DatasetPath> = halves[0].to_vec();
    first.push(gone.clone());
    let mut second: Vec<DatasetPath> = halves[1].to_vec();
    second.push(root.clone());
    let start = Instant::now();
    let (a, b) = tokio::join!(
        t.zfs.list_versions_of(&first),
        t.zfs.list_versions_of(&second)
    );
    let by_name = start.elapsed();
    let mut parts = a?;
    parts.extend(b?);
    eprintln!(
        "  200x20: the same listing by name in two concurrent parts {:.2}s (ratio {:.2} of the subtree listing)",
        by_name.as_secs_f64(),
        by_name.as_secs_f64() / listed.as_secs_f64()
    );
    check!(!parts.contains_key(&gone));
    check_eq!(parts, map);
    Ok(())
}

/// A received user property whose value holds tabs and newlines (a peer's `zfs send -p`)
/// cannot forge rows of `zfs get -H`: user properties are read with `-s local,none`, so a
/// received value (or one inherited from it) is never printed. Here the value would otherwise
/// make the received filesystem a placeholder (source `local`) and invent a dataset.
pub async fn received_user_property_cannot_forge_listing_rows(t: Ctx) -> TestResult {
    let evil = t.create("evil").await?;
    let recv_root = t.create("recvroot").await?;
    let x = t.ds("recvroot/x");
    let forged = format!(
        "on\tlocal\n{recv_root}/phantom\tguid\t1\t-\n{recv_root}/phantom\tcreatetxg\t1\t-\n{recv_root}/phantom\tcreation\t1\t-\n{recv_root}/phantom\tuserrefs\t-\t-\n{recv_root}/phantom\tzrepl:placeholder\ton"
    );
    let st = std::process::Command::new("zfs")
        .arg("set")
        .arg(format!("{}={forged}", zrepl_zfs::PLACEHOLDER_PROPERTY))
        .arg(evil.to_string())
        .status()?;
    check!(st.success(), "zfs set of a value with tabs and newlines");
    t.snapshot("evil", "1").await?;
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("zfs send -p {evil}@1 | zfs recv -u {x}"))
        .status()?;
    check!(st.success(), "zfs send -p | zfs recv");
    let (props, versions) = t
        .zfs
        .list_subtree_with_properties(
            &recv_root,
            &[zrepl_zfs::PLACEHOLDER_PROPERTY, "receive_resume_token"],
        )
        .await?;
    let names: Vec<String> = props.keys().map(|k| k.to_string()).collect();
    check_eq!(names, vec![recv_root.to_string(), x.to_string()]);
    check!(!props[&x].contains_key(zrepl_zfs::PLACEHOLDER_PROPERTY));
    check_eq!(versions[&x].len(), 1);
    check!(!t.zfs.placeholder_state(&x).await?.is_placeholder);
    let rec = t
        .zfs
        .get_properties_recursive(&recv_root, None, &[zrepl_zfs::PLACEHOLDER_PROPERTY])
        .await?;
    check_eq!(rec.len(), 2);
    check!(!rec[&x].contains_key(zrepl_zfs::PLACEHOLDER_PROPERTY));
    check!(rec.values().all(|p| p
        .get(zrepl_zfs::PLACEHOLDER_PROPERTY)
        .is_none_or(|v| v.source == PropertySource::None && v.value == "-")));
    // The received value itself is intact (it is the peer's to keep, just never parsed).
    let out = std::process::Command::new("zfs")
        .args([
            "get",
            "-H",
            "-o",
            "received",
            zrepl_zfs::PLACEHOLDER_PROPERTY,
        ])
        .arg(x.to_string())
        .output()?;
    check!(String::from_utf8_lossy(&out.stdout).starts_with("on\tlocal\n"));
    Ok(())
}
