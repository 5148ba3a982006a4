//! Which filesystems a round converges, decided from the planning listings alone (pure).
//!
//! A filesystem with steps is completed by `receives_completed`/`sends_completed`. One without
//! steps (up to date) is converged when its listings show state a lost completion leaves behind
//! (a crash after a receive and before its completion, or during the completion): a snapshot
//! with holds that may be step holds or older last-received holds, a tentative cursor, a cursor
//! that is not at the common version, or no hold on the receiver's newest snapshot. A filesystem
//! whose listings show none of that costs nothing.

use zrepl_planner::{sort_versions, ReceiverFs, SenderFs};
use zrepl_protocol::{ConvergeRequest, Protection, ReplicationConfig};
use zrepl_zfs_types::abstraction::{parse_cursor_bookmark, AbstractionType};
use zrepl_zfs_types::{DatasetPath, FilesystemVersion, VersionType};

/// The convergence requests of one up-to-date filesystem, for each side that needs one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converge {
    pub sender: Option<ConvergeRequest>,
    pub receiver: Option<ConvergeRequest>,
}

fn held(vs: &[FilesystemVersion]) -> Vec<FilesystemVersion> {
    vs.iter()
        .filter(|v| v.typ == VersionType::Snapshot && v.userrefs.unwrap_or(0) > 0)
        .cloned()
        .collect()
}

/// Decides convergence for a filesystem the planner found up to date (no steps). `None` on
/// either side: nothing there needs it (or the filesystem is not a plain replicated one:
/// placeholders, a pending resume, nothing in common).
pub fn converge_requests(
    path: &DatasetPath,
    sender: &SenderFs,
    receiver: &ReceiverFs,
    replication: ReplicationConfig,
) -> Converge {
    if sender.is_placeholder
        || !receiver.exists
        || receiver.is_placeholder
        || receiver.resume_token.is_some()
    {
        return Converge::default();
    }
    let mut rsnaps: Vec<FilesystemVersion> = receiver
        .versions
        .iter()
        .filter(|v| v.typ == VersionType::Snapshot)
        .cloned()
        .collect();
    sort_versions(&mut rsnaps);
    let Some(newest) = rsnaps.last().cloned() else {
        return Converge::default();
    };
    let common = sender
        .versions
        .iter()
        .filter(|v| v.guid == newest.guid)
        .min_by_key(|v| v.typ != VersionType::Snapshot)
        .cloned();
    let Some(common) = common else {
        return Converge::default();
    };
    let keeps = replication.incremental != Protection::GuaranteeNothing;

    let sheld = held(&sender.versions);
    let bookmarks: Vec<FilesystemVersion> = sender
        .versions
        .iter()
        .filter(|v| v.typ == VersionType::Bookmark && parse_cursor_bookmark(&v.name).is_some())
        .cloned()
        .collect();
    let kind = |b: &FilesystemVersion| parse_cursor_bookmark(&b.name).map(|(t, g, _)| (t, g));
    let tentative = bookmarks.iter().any(|b| {
        matches!(
            kind(b),
            Some((AbstractionType::TentativeReplicationCursorV2, _))
        )
    });
    let cursor_elsewhere = bookmarks.iter().any(|b| {
        matches!(kind(b), Some((AbstractionType::ReplicationCursorV2, _))) && b.guid != common.guid
    });
    let cursor_here = bookmarks.iter().any(|b| {
        matches!(kind(b), Some((AbstractionType::ReplicationCursorV2, Some(g)))
            if g == common.guid && b.guid == common.guid)
    });
    let sender_needs =
        !sheld.is_empty() || tentative || cursor_elsewhere || (keeps && !cursor_here);

    let rheld = held(&rsnaps);
    let receiver_needs =
        rheld.iter().any(|v| v.name != newest.name) || (keeps && newest.userrefs.unwrap_or(0) == 0);

    Converge {
        sender: sender_needs.then(|| ConvergeRequest {
            filesystem: path.clone(),
            common: common.clone(),
            held: sheld,
            bookmarks,
            replication,
        }),
        receiver: receiver_needs.then(|| ConvergeRequest {
            filesystem: path.clone(),
            common: newest.clone(),
            held: rheld,
            bookmarks: Vec::new(),
            replication,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zrepl_zfs_types::abstraction::{cursor_bookmark_name, tentative_cursor_bookmark_name};

    fn snap(name: &str, guid: u64, txg: u64, userrefs: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ: VersionType::Snapshot,
            name: name.into(),
            guid,
            createtxg: txg,
            creation: txg as i64,
            userrefs: Some(userrefs),
        }
    }

    fn bm(name: String, guid: u64, txg: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ: VersionType::Bookmark,
            name,
            guid,
            createtxg: txg,
            creation: txg as i64,
            userrefs: None,
        }
    }

    fn rfs(versions: Vec<FilesystemVersion>) -> ReceiverFs {
        ReceiverFs {
            exists: true,
            is_placeholder: false,
            versions,
            resume_token: None,
        }
    }

    fn sfs(versions: Vec<FilesystemVersion>) -> SenderFs {
        SenderFs {
            is_placeholder: false,
            versions,
        }
    }

    const RES: ReplicationConfig = ReplicationConfig {
        initial: Protection::GuaranteeResumability,
        incremental: Protection::GuaranteeResumability,
    };
    const NOTHING: ReplicationConfig = ReplicationConfig {
        initial: Protection::GuaranteeNothing,
        incremental: Protection::GuaranteeNothing,
    };

    #[test]
    fn table() {
        let p = DatasetPath::parse("p/a").unwrap();
        let c = |g: u64, t: u64| bm(cursor_bookmark_name(g, "push"), g, t);
        let other = |g: u64, t: u64| bm(cursor_bookmark_name(g, "other"), g, t);
        // (what, sender versions, receiver versions, config, sender needs, receiver needs)
        type Case = (
            &'static str,
            Vec<FilesystemVersion>,
            Vec<FilesystemVersion>,
            ReplicationConfig,
            bool,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "converged",
                vec![snap("1", 1, 1, 0), snap("2", 2, 2, 0), c(2, 2)],
                vec![snap("1", 1, 1, 0), snap("2", 2, 2, 1)],
                RES, false, false,
            ),
            (
                "completion lost after the receive: step holds, lagging cursor, hold on the older one",
                vec![snap("1", 1, 1, 1), snap("2", 2, 2, 1), c(1, 1)],
                vec![snap("1", 1, 1, 1), snap("2", 2, 2, 0)],
                RES, true, true,
            ),
            (
                "crash between new and old cursor",
                vec![snap("1", 1, 1, 0), snap("2", 2, 2, 0), c(1, 1), c(2, 2)],
                vec![snap("2", 2, 2, 1)],
                RES, true, false,
            ),
            (
                "crash between new and old last-received hold",
                vec![snap("2", 2, 2, 0), c(2, 2)],
                vec![snap("1", 1, 1, 1), snap("2", 2, 2, 1)],
                RES, false, true,
            ),
            (
                "tentative cursor left (guarantee_incremental)",
                vec![snap("2", 2, 2, 0), c(2, 2), bm(tentative_cursor_bookmark_name(2, "push"), 2, 2)],
                vec![snap("2", 2, 2, 1)],
                RES, true, false,
            ),
            (
                "guarantee_nothing: no cursor, no hold wanted",
                vec![snap("1", 1, 1, 0), snap("2", 2, 2, 0)],
                vec![snap("2", 2, 2, 0)],
                NOTHING, false, false,
            ),
            (
                "another job's cursor elsewhere: asks the sender, which keeps it",
                vec![snap("1", 1, 1, 0), snap("2", 2, 2, 0), c(2, 2), other(1, 1)],
                vec![snap("2", 2, 2, 1)],
                RES, true, false,
            ),
            (
                "the common version is a bookmark (snapshot pruned)",
                vec![c(2, 2), snap("3", 3, 3, 0)],
                vec![snap("2", 2, 2, 1)],
                RES, false, false,
            ),
        ];
        for (what, s, r, cfg, sn, rn) in cases {
            let got = converge_requests(&p, &sfs(s), &rfs(r), cfg);
            assert_eq!(got.sender.is_some(), sn, "{what}: {got:?}");
            assert_eq!(got.receiver.is_some(), rn, "{what}: {got:?}");
            if let Some(s) = &got.sender {
                assert_eq!(s.common.guid, 2, "{what}");
            }
            if let Some(r) = &got.receiver {
                assert_eq!(r.common.name, "2", "{what}");
                assert!(r.held.iter().all(|v| v.userrefs.unwrap_or(0) > 0));
            }
        }
    }

    #[test]
    fn not_for_placeholders_resumes_or_missing_receivers() {
        let p = DatasetPath::parse("p/a").unwrap();
        let s = sfs(vec![snap("1", 1, 1, 1)]);
        let r = rfs(vec![snap("1", 1, 1, 0)]);
        assert!(converge_requests(&p, &s, &r, RES).sender.is_some());
        let mut ph = s.clone();
        ph.is_placeholder = true;
        assert_eq!(converge_requests(&p, &ph, &r, RES), Converge::default());
        let mut rph = r.clone();
        rph.is_placeholder = true;
        assert_eq!(converge_requests(&p, &s, &rph, RES), Converge::default());
        let mut tok = r.clone();
        tok.resume_token = Some("1-abc".into());
        assert_eq!(converge_requests(&p, &s, &tok, RES), Converge::default());
        assert_eq!(
            converge_requests(&p, &s, &ReceiverFs::default(), RES),
            Converge::default()
        );
        // Nothing in common (the planner reports the conflict): nothing to converge to.
        let r2 = rfs(vec![snap("9", 9, 9, 0)]);
        assert_eq!(converge_requests(&p, &s, &r2, RES), Converge::default());
    }
}
