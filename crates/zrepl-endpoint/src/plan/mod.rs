//! What converging a filesystem does to ZFS, decided without I/O: pure functions from a
//! [`ConvergeRequest`] (and, for step holds, the tags `zfs holds` reported) to the operations the
//! endpoints then apply in a crash-safe order: first what protects (the new cursor, the new
//! last-received hold), then what only cleans up (older cursors, tentative cursors, stale holds),
//! so that a crash between any two of them leaves state the next run converges from.

pub mod mapping;
pub mod parents;
pub mod receives;
pub mod sends;

use zrepl_protocol::{ConvergeRequest, Protection};
use zrepl_zfs_types::abstraction::{
    cursor_bookmark_name, parse_cursor_bookmark, parse_step_hold_tag, AbstractionType,
};
use zrepl_zfs_types::{FilesystemVersion, VersionType};

/// The sender's part of converging one filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderConverge {
    /// Create the replication cursor: (source version, bookmark name). `None` when it exists
    /// already or the protection keeps no cursor.
    pub create_cursor: Option<(FilesystemVersion, String)>,
    /// This job's bookmarks to destroy (older cursors, tentative cursors), once the cursor exists.
    pub destroy: Vec<FilesystemVersion>,
    /// Snapshots to ask `zfs holds` about: this job's step holds may be on them
    /// ([`stale_step_holds`] decides).
    pub check_holds: Vec<FilesystemVersion>,
}

/// Decides the sender's convergence for `job`: the cursor on `common` (under
/// `guarantee_resumability` and `guarantee_incremental`), every other cursor and every tentative
/// cursor of the job gone, and no step hold of the job left. `common` itself is never destroyed,
/// even if it is one of the job's bookmarks (it may be the only incremental source left).
pub fn sender_converge(job: &str, req: &ConvergeRequest) -> SenderConverge {
    let level = req.replication.incremental;
    let keep_cursor = level != Protection::GuaranteeNothing;
    let want = cursor_bookmark_name(req.common.guid, job);
    let is_ours = |b: &&FilesystemVersion| {
        b.typ == VersionType::Bookmark
            && matches!(parse_cursor_bookmark(&b.name),
                Some((AbstractionType::ReplicationCursorV2 | AbstractionType::TentativeReplicationCursorV2, _, Some(j))) if j == job)
    };
    let has_cursor = req
        .bookmarks
        .iter()
        .any(|b| b.typ == VersionType::Bookmark && b.name == want && b.guid == req.common.guid);
    // A newer cursor is never destroyed (`sends::newer_cursors`); the cursor on `common` is made
    // anyway, so that the common version stays protected.
    let newer = sends::newer_cursors(job, &req.bookmarks, &req.common);
    let create_cursor = (keep_cursor && !has_cursor).then(|| (req.common.clone(), want.clone()));
    let destroy = req
        .bookmarks
        .iter()
        .filter(is_ours)
        .filter(|b| !(keep_cursor && b.name == want))
        .filter(|b| !newer.iter().any(|n| n.name == b.name))
        .filter(|b| !(b.typ == req.common.typ && b.name == req.common.name))
        .cloned()
        .collect();
    let check_holds = req
        .held
        .iter()
        .filter(|v| v.typ == VersionType::Snapshot)
        .cloned()
        .collect();
    SenderConverge {
        create_cursor,
        destroy,
        check_holds,
    }
}

/// A sender's [`ConvergeRequest`] rebuilt from this side's own listing of the filesystem:
/// `common` must exist with its type, name and GUID (its `createtxg` is taken from the listing),
/// `held` are the listed snapshots with holds and `bookmarks` the listed cursor-like bookmarks,
/// whatever the peer sent.
pub fn sender_converge_request(
    req: &ConvergeRequest,
    versions: &[FilesystemVersion],
) -> Result<ConvergeRequest, zrepl_protocol::EndpointError> {
    let common = sends::listed_version(versions, &req.common).ok_or_else(|| {
        zrepl_protocol::EndpointError::not_found(format!(
            "{} (guid {:#x}) does not exist",
            req.common.full_path(&req.filesystem),
            req.common.guid
        ))
    })?;
    Ok(ConvergeRequest {
        filesystem: req.filesystem.clone(),
        common: common.clone(),
        held: versions
            .iter()
            .filter(|v| v.typ == VersionType::Snapshot && v.userrefs.unwrap_or(0) > 0)
            .cloned()
            .collect(),
        bookmarks: versions
            .iter()
            .filter(|v| v.typ == VersionType::Bookmark && parse_cursor_bookmark(&v.name).is_some())
            .cloned()
            .collect(),
        replication: req.replication,
    })
}

/// Of the snapshots' hold tags (as `zfs holds` lists them), the snapshots that carry `job`'s
/// step hold: every one of them is stale once the filesystem converged (no step is running).
pub fn stale_step_holds<'a, K>(
    job: &str,
    holds: impl IntoIterator<Item = (&'a K, &'a Vec<String>)>,
) -> Vec<&'a K>
where
    K: 'a,
{
    holds
        .into_iter()
        .filter(|(_, tags)| tags.iter().any(|t| parse_step_hold_tag(t) == Some(job)))
        .map(|(k, _)| k)
        .collect()
}

/// Of the snapshots' holds with when each was taken (as `zfs holds` lists them), the snapshots
/// whose `job` step hold was taken more than `max_age_secs` before `now` (Unix seconds): a
/// pull client that prepared steps and never completed them keeps snapshots no longer than
/// that. A hold whose time did not read is kept (no evidence of its age).
pub fn expired_step_holds<'a, K>(
    job: &str,
    holds: impl IntoIterator<Item = (&'a K, &'a Vec<(String, Option<i64>)>)>,
    now: i64,
    max_age_secs: i64,
) -> Vec<&'a K>
where
    K: 'a,
{
    holds
        .into_iter()
        .filter(|(_, tags)| {
            tags.iter().any(|(t, since)| {
                parse_step_hold_tag(t) == Some(job)
                    && since.is_some_and(|s| now.saturating_sub(s) > max_age_secs)
            })
        })
        .map(|(k, _)| k)
        .collect()
}

/// The receiver's part of converging one filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiverConverge {
    /// Snapshot to put the job's last-received hold on (idempotent).
    pub hold: Option<FilesystemVersion>,
    /// Snapshots to release the job's last-received hold from, after `hold` exists (a release
    /// of a tag a snapshot does not carry is a no-op).
    pub release: Vec<FilesystemVersion>,
}

/// Decides the receiver's convergence: the last-received hold on `common` (the receiver's newest
/// snapshot) unless the protection is `guarantee_nothing`, and on no other snapshot.
pub fn receiver_converge(req: &ConvergeRequest) -> ReceiverConverge {
    let hold = (req.replication.incremental != Protection::GuaranteeNothing
        && req.common.typ == VersionType::Snapshot)
        .then(|| req.common.clone());
    let release = req
        .held
        .iter()
        .filter(|v| v.typ == VersionType::Snapshot && v.name != req.common.name)
        .cloned()
        .collect();
    ReceiverConverge { hold, release }
}

/// A filesystem marked `zrepl:placeholder=replacing` (a receive started replacing the
/// placeholder; see `zrepl_zfs::PLACEHOLDER_REPLACING`), by what it holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacing {
    /// No snapshot and no partial receive: the receive never took over (a crash or a failure
    /// in between). Still a placeholder: the next full receive replaces it with `-F`.
    StillPlaceholder,
    /// A partial receive waits: the filesystem is being received (resumed without `-F`).
    BeingReceived,
    /// It has snapshots: real data replaced the placeholder; the mark is a leftover of a crash
    /// before it became `off`, and is repaired to `off`. Never replaced again.
    Replaced,
}

/// Classifies a filesystem marked `replacing`.
pub fn replacing_state(has_snapshots: bool, has_resume_token: bool) -> Replacing {
    match (has_snapshots, has_resume_token) {
        (true, _) => Replacing::Replaced,
        (false, true) => Replacing::BeingReceived,
        (false, false) => Replacing::StillPlaceholder,
    }
}

/// At the end of a round's completion: the held snapshots of a filesystem whose step holds may
/// be stale leftovers of earlier attempts. Only snapshots at or before the newest `to` that
/// completed (`completed_txg`) qualify: a newer held snapshot may belong to a step that is still
/// pending (a partial receive waiting to be resumed), whose holds must outlive this round.
/// `own` (the round's own step snapshots, released anyway) are left out.
pub fn completion_hold_candidates(
    versions: &[FilesystemVersion],
    completed_txg: u64,
    own: impl Fn(&FilesystemVersion) -> bool,
) -> Vec<&FilesystemVersion> {
    versions
        .iter()
        .filter(|v| v.typ == VersionType::Snapshot && v.userrefs.unwrap_or(0) > 0)
        .filter(|v| v.createtxg <= completed_txg)
        .filter(|v| !own(v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zrepl_protocol::ReplicationConfig;
    use zrepl_zfs_types::abstraction::tentative_cursor_bookmark_name;
    use zrepl_zfs_types::DatasetPath;

    fn snap(name: &str, guid: u64, txg: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ: VersionType::Snapshot,
            name: name.into(),
            guid,
            createtxg: txg,
            creation: txg as i64,
            userrefs: Some(0),
        }
    }

    fn bm(name: &str, guid: u64, txg: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ: VersionType::Bookmark,
            userrefs: None,
            ..snap(name, guid, txg)
        }
    }

    fn req(
        common: FilesystemVersion,
        held: Vec<FilesystemVersion>,
        bookmarks: Vec<FilesystemVersion>,
        level: Protection,
    ) -> ConvergeRequest {
        ConvergeRequest {
            filesystem: DatasetPath::parse("p/a").unwrap(),
            common,
            held,
            bookmarks,
            replication: ReplicationConfig {
                initial: level,
                incremental: level,
            },
        }
    }

    fn names(vs: &[FilesystemVersion]) -> Vec<&str> {
        vs.iter().map(|v| v.name.as_str()).collect()
    }

    /// The crash states zrepl's platform tests build by hand, and the ones a kill between the
    /// round's commands leaves.
    #[test]
    fn sender_table() {
        let s1 = snap("1", 0x11, 10);
        let s2 = snap("2", 0x22, 20);
        let c1 = bm(&cursor_bookmark_name(0x11, "j"), 0x11, 10);
        let c2 = bm(&cursor_bookmark_name(0x22, "j"), 0x22, 20);
        let t1 = bm(&tentative_cursor_bookmark_name(0x11, "j"), 0x11, 10);
        let t2 = bm(&tentative_cursor_bookmark_name(0x22, "j"), 0x22, 20);
        let other_job = bm(&cursor_bookmark_name(0x11, "other"), 0x11, 10);
        let user = bm("mine", 0x11, 10);
        use Protection::*;
        struct Case {
            what: &'static str,
            req: ConvergeRequest,
            create: Option<&'static str>,
            destroy: Vec<String>,
        }
        let cases = [
            Case {
                what: "completion lost: cursor lags on @1, step holds on @1 and @2",
                req: req(s2.clone(), vec![s1.clone(), s2.clone()], vec![c1.clone()], GuaranteeResumability),
                create: Some("c2"),
                destroy: vec![c1.name.clone()],
            },
            Case {
                what: "crash after the new cursor: both cursors exist",
                req: req(s2.clone(), vec![], vec![c1.clone(), c2.clone()], GuaranteeResumability),
                create: None,
                destroy: vec![c1.name.clone()],
            },
            Case {
                what: "converged: nothing to do",
                req: req(s2.clone(), vec![], vec![c2.clone()], GuaranteeResumability),
                create: None,
                destroy: vec![],
            },
            Case {
                what: "guarantee_incremental: tentative cursors go, the cursor moves",
                req: req(s2.clone(), vec![], vec![c1.clone(), t1.clone(), t2.clone()], GuaranteeIncremental),
                create: Some("c2"),
                destroy: vec![c1.name.clone(), t1.name.clone(), t2.name.clone()],
            },
            Case {
                what: "other jobs' cursors and users' bookmarks stay",
                req: req(s2.clone(), vec![], vec![other_job.clone(), user.clone(), c1.clone()], GuaranteeResumability),
                create: Some("c2"),
                destroy: vec![c1.name.clone()],
            },
            Case {
                what: "guarantee_nothing keeps no cursor",
                req: req(s2.clone(), vec![], vec![c1.clone(), c2.clone()], GuaranteeNothing),
                create: None,
                destroy: vec![c1.name.clone(), c2.name.clone()],
            },
            Case {
                what: "the common version is the job's tentative cursor (its snapshot is gone): kept",
                req: req(t1.clone(), vec![], vec![t1.clone()], GuaranteeIncremental),
                create: Some("c1"),
                destroy: vec![],
            },
            Case {
                what: "the common version is the cursor itself",
                req: req(c1.clone(), vec![], vec![c1.clone()], GuaranteeResumability),
                create: None,
                destroy: vec![],
            },
            Case {
                what: "converging to an older version: its cursor exists and stays, the newer one stays too",
                req: req(s1.clone(), vec![], vec![c1.clone(), c2.clone(), t1.clone()], GuaranteeResumability),
                create: None,
                destroy: vec![t1.name.clone()],
            },
            Case {
                what: "a bookmark named like the cursor but of another guid: creating the cursor fails clearly, nothing goes",
                req: req(s2.clone(), vec![], vec![bm(&c2.name, 0x99, 20)], GuaranteeResumability),
                create: Some("c2"),
                destroy: vec![],
            },
        ];
        for c in cases {
            let got = sender_converge("j", &c.req);
            let want_create = c.create.map(|n| {
                let (src, name) = if n == "c2" {
                    (&s2, &c2.name)
                } else {
                    (&t1, &c1.name)
                };
                (src.clone(), name.clone())
            });
            assert_eq!(got.create_cursor, want_create, "{}", c.what);
            let mut d: Vec<String> = got.destroy.iter().map(|v| v.name.clone()).collect();
            d.sort();
            let mut want = c.destroy.clone();
            want.sort();
            assert_eq!(d, want, "{}", c.what);
            assert_eq!(names(&got.check_holds), names(&c.req.held), "{}", c.what);
        }
    }

    #[test]
    fn completion_hold_candidates_spare_pending_steps() {
        let held = |name: &str, txg: u64, refs: u64| FilesystemVersion {
            userrefs: Some(refs),
            ..snap(name, txg, txg)
        };
        let vs = vec![
            held("1", 1, 1),
            held("2", 2, 0),
            held("3", 3, 2),
            held("4", 4, 1),
            held("5", 5, 1),
            FilesystemVersion {
                typ: VersionType::Bookmark,
                ..held("b", 2, 1)
            },
        ];
        // (what, newest completed txg, own step snapshots, candidates)
        let cases: &[(&str, u64, &[&str], &[&str])] = &[
            (
                "held snapshots up to the completed step",
                3,
                &[],
                &["1", "3"],
            ),
            (
                "the round's own steps are released anyway",
                3,
                &["3"],
                &["1"],
            ),
            (
                "a pending later step keeps its holds",
                4,
                &["4"],
                &["1", "3"],
            ),
            (
                "everything held once the newest completed",
                5,
                &[],
                &["1", "3", "4", "5"],
            ),
            ("nothing before the first snapshot", 0, &[], &[]),
        ];
        for (what, txg, own, want) in cases {
            let got: Vec<&str> =
                completion_hold_candidates(&vs, *txg, |v| own.contains(&v.name.as_str()))
                    .into_iter()
                    .map(|v| v.name.as_str())
                    .collect();
            assert_eq!(got, *want, "{what}");
        }
    }

    #[test]
    fn expired_step_holds_by_age() {
        use zrepl_zfs_types::abstraction::{last_received_hold_tag, step_hold_tag};
        let now = 1_000_000;
        type Tags = Vec<(String, Option<i64>)>;
        let h = |tags: &[(String, Option<i64>)]| -> Tags { tags.to_vec() };
        let holds: Vec<(String, Tags)> = vec![
            (
                "a@old".into(),
                h(&[(step_hold_tag("j"), Some(now - 3_601))]),
            ),
            (
                "a@young".into(),
                h(&[(step_hold_tag("j"), Some(now - 3_600))]),
            ),
            ("a@other".into(), h(&[(step_hold_tag("k"), Some(0))])),
            ("a@user".into(), h(&[("keep".into(), Some(0))])),
            ("a@lr".into(), h(&[(last_received_hold_tag("j"), Some(0))])),
            ("a@unknown".into(), h(&[(step_hold_tag("j"), None)])),
            (
                "a@both".into(),
                h(&[("keep".into(), Some(0)), (step_hold_tag("j"), Some(5))]),
            ),
            (
                "a@future".into(),
                h(&[(step_hold_tag("j"), Some(now + 60))]),
            ),
        ];
        let got = expired_step_holds("j", holds.iter().map(|(k, v)| (k, v)), now, 3_600);
        assert_eq!(got, [&"a@old".to_string(), &"a@both".to_string()]);
    }

    #[test]
    fn stale_step_holds_only_of_the_job() {
        use zrepl_zfs_types::abstraction::{last_received_hold_tag, step_hold_tag};
        let holds: Vec<(String, Vec<String>)> = vec![
            ("a@1".into(), vec![step_hold_tag("j")]),
            ("a@2".into(), vec![step_hold_tag("other"), "user".into()]),
            (
                "a@3".into(),
                vec![last_received_hold_tag("j"), step_hold_tag("j")],
            ),
            ("a@4".into(), vec![]),
        ];
        let got = stale_step_holds("j", holds.iter().map(|(k, v)| (k, v)));
        assert_eq!(got, vec!["a@1", "a@3"]);
    }

    #[test]
    fn replacing_table() {
        // Real data is never taken for a placeholder, whatever else is there.
        for (snaps, token, want) in [
            (false, false, Replacing::StillPlaceholder),
            (false, true, Replacing::BeingReceived),
            (true, false, Replacing::Replaced),
            (true, true, Replacing::Replaced),
        ] {
            assert_eq!(replacing_state(snaps, token), want, "{snaps} {token}");
        }
    }

    #[test]
    fn receiver_table() {
        let s1 = FilesystemVersion {
            userrefs: Some(1),
            ..snap("1", 0x11, 10)
        };
        let s2 = snap("2", 0x22, 20);
        use Protection::*;
        let cases = [
            (
                "hold lost: the newest has none, the older one still has it",
                req(s2.clone(), vec![s1.clone()], vec![], GuaranteeResumability),
                Some("2"),
                vec!["1"],
            ),
            (
                "crash after the new hold: both held",
                req(
                    s2.clone(),
                    vec![s1.clone(), s2.clone()],
                    vec![],
                    GuaranteeIncremental,
                ),
                Some("2"),
                vec!["1"],
            ),
            (
                "guarantee_nothing: no hold, the old ones released",
                req(s2.clone(), vec![s1.clone()], vec![], GuaranteeNothing),
                None,
                vec!["1"],
            ),
        ];
        for (what, r, hold, release) in cases {
            let got = receiver_converge(&r);
            assert_eq!(got.hold.as_ref().map(|v| v.name.as_str()), hold, "{what}");
            assert_eq!(names(&got.release), release, "{what}");
        }
    }

    #[test]
    fn a_converge_request_is_rebuilt_from_this_sides_listing() {
        let s1 = snap("1", 0x11, 10);
        let s2 = snap("2", 0x22, 20);
        let c2 = bm(&cursor_bookmark_name(0x22, "j"), 0x22, 20);
        let held = FilesystemVersion {
            userrefs: Some(1),
            ..snap("0", 0x10, 5)
        };
        let listing = vec![
            held.clone(),
            s1.clone(),
            s2.clone(),
            c2.clone(),
            bm("mine", 0x11, 10),
        ];
        // The peer claims s1 is the newest (createtxg), names a bookmark to destroy that is
        // not there and holds that are not there, and leaves out the real cursor.
        let lying = req(
            FilesystemVersion {
                createtxg: u64::MAX,
                ..s1.clone()
            },
            vec![snap("2", 0x22, 20)],
            vec![bm(&cursor_bookmark_name(0x99, "j"), 0x99, 1)],
            Protection::GuaranteeResumability,
        );
        let t = sender_converge_request(&lying, &listing).unwrap();
        assert_eq!(t.common, s1);
        assert_eq!(names(&t.held), vec!["0"]);
        assert_eq!(names(&t.bookmarks), vec![c2.name.as_str()]);
        // The plan from it keeps the newer cursor and makes s1's.
        let p = sender_converge("j", &t);
        assert!(p.destroy.is_empty(), "{:?}", p.destroy);
        assert_eq!(p.create_cursor.map(|(v, _)| v.name), Some("1".to_string()));
        // A common version that is not here (name or guid) is an error, not a plan.
        let gone = req(
            snap("1", 0x99, 10),
            vec![],
            vec![],
            Protection::GuaranteeResumability,
        );
        assert!(sender_converge_request(&gone, &listing).is_err());
    }
}
