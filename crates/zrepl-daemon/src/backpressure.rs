//! Back-pressure of snapshotting on replication (`snapshotting.backpressure`, zrepl#808): a
//! filesystem whose replication lags behind by more than `max_lag` gets no new snapshot
//! (`skip`) or a warning (`warn`), so that snapshots do not pile up by the ten thousand while
//! replication keeps failing.
//!
//! The lag of a filesystem is the age of its oldest snapshot with the job's prefix that is not
//! replicated yet, i.e. newer than the job's replication cursor (`#zrepl_CURSOR_G_.._J_<job>`,
//! moved by the sending side after every step, also when a pull client drives the replication
//! of a source job). It is read from ZFS in the snapshotter's survey (no extra command), so it
//! survives daemon restarts and one failing filesystem does not hold back the others. A
//! filesystem whose snapshots are all replicated has no lag, however old they are. Pure: the
//! caller passes the listing and `now`.

use std::sync::{Arc, Mutex};

use zrepl_config::BackpressureAction;
use zrepl_zfs::{FilesystemVersion, VersionType};
use zrepl_zfs_types::abstraction::{parse_cursor_bookmark, AbstractionType};

/// A job's back-pressure, ready for the snapshotter.
#[derive(Debug, Clone)]
pub struct Backpressure {
    /// The job whose replication cursor tells what is replicated (the sending job: push or
    /// source).
    pub job: String,
    pub max_lag_secs: i64,
    pub action: BackpressureAction,
    /// Whether a filesystem without the job's cursor counts as never replicated (push jobs:
    /// their protection keeps a cursor). A source cannot tell a filesystem never pulled from
    /// one pulled with `guarantee_nothing` (no cursor): there it does not count.
    pub without_cursor_counts: bool,
}

/// A filesystem whose replication lags by more than `max_lag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lagging {
    pub filesystem: String,
    /// Age in seconds of its oldest snapshot not replicated yet.
    pub lag_secs: i64,
}

/// The last round's lagging filesystems, for the metrics; `None` before a round with
/// back-pressure.
pub type Shared = Arc<Mutex<Option<Vec<Lagging>>>>;

/// The creation time (Unix seconds) of the oldest snapshot with `prefix` that is newer than
/// `job`'s replication cursor; `None` when there is none (all replicated), or when the
/// filesystem has no cursor of the job and `without_cursor_counts` is false.
pub fn oldest_unreplicated(
    versions: &[FilesystemVersion],
    job: &str,
    prefix: &str,
    without_cursor_counts: bool,
) -> Option<i64> {
    let cursor = versions
        .iter()
        .filter(|v| v.typ == VersionType::Bookmark)
        .filter(|v| {
            matches!(
                parse_cursor_bookmark(&v.name),
                Some((AbstractionType::ReplicationCursorV2, _, Some(j))) if j == job
            )
        })
        .map(|v| v.createtxg)
        .max();
    if cursor.is_none() && !without_cursor_counts {
        return None;
    }
    let after = cursor.unwrap_or(0);
    versions
        .iter()
        .filter(|v| v.typ == VersionType::Snapshot && v.name.starts_with(prefix))
        .filter(|v| v.createtxg > after)
        .min_by_key(|v| v.createtxg)
        .map(|v| v.creation)
}

/// The lag (seconds) of a filesystem whose oldest unreplicated snapshot was created at
/// `oldest`, if it exceeds `max_lag_secs` at `now`; `None`: no back-pressure. A creation time
/// in the future (clock moved backwards) is no lag.
pub fn exceeded(oldest: Option<i64>, max_lag_secs: i64, now: i64) -> Option<i64> {
    let lag = now.saturating_sub(oldest?);
    (lag > max_lag_secs).then_some(lag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(typ: VersionType, name: &str, txg: u64, creation: i64) -> FilesystemVersion {
        FilesystemVersion {
            typ,
            name: name.to_string(),
            guid: txg * 1000,
            createtxg: txg,
            creation,
            userrefs: (typ == VersionType::Snapshot).then_some(0),
        }
    }

    fn snap(name: &str, txg: u64, creation: i64) -> FilesystemVersion {
        v(VersionType::Snapshot, name, txg, creation)
    }

    fn cursor(job: &str, txg: u64) -> FilesystemVersion {
        v(
            VersionType::Bookmark,
            &zrepl_zfs_types::abstraction::cursor_bookmark_name(txg * 1000, job),
            txg,
            0,
        )
    }

    #[test]
    fn oldest_unreplicated_table() {
        let tentative = v(
            VersionType::Bookmark,
            &zrepl_zfs_types::abstraction::tentative_cursor_bookmark_name(5000, "push"),
            5,
            0,
        );
        let cases: Vec<(&str, Vec<FilesystemVersion>, bool, Option<i64>)> = vec![
            ("nothing at all", vec![], true, None),
            (
                "never replicated: the oldest own snapshot",
                vec![snap("z_1", 1, 100), snap("z_2", 2, 200)],
                true,
                Some(100),
            ),
            (
                "never replicated, cursor required (source)",
                vec![snap("z_1", 1, 100)],
                false,
                None,
            ),
            (
                "all replicated",
                vec![snap("z_1", 1, 100), snap("z_2", 2, 200), cursor("push", 2)],
                true,
                None,
            ),
            (
                "the first one after the cursor",
                vec![
                    snap("z_1", 1, 100),
                    cursor("push", 1),
                    snap("z_2", 2, 200),
                    snap("z_3", 3, 300),
                ],
                false,
                Some(200),
            ),
            (
                "other prefixes do not count",
                vec![
                    cursor("push", 1),
                    snap("manual", 2, 150),
                    snap("z_3", 3, 300),
                ],
                true,
                Some(300),
            ),
            (
                "another job's cursor and a tentative cursor are not ours",
                vec![
                    snap("z_1", 1, 100),
                    cursor("other", 3),
                    tentative,
                    snap("z_6", 6, 600),
                ],
                true,
                Some(100),
            ),
            (
                "the newest of two cursors (a crash left the old one)",
                vec![
                    snap("z_1", 1, 100),
                    cursor("push", 1),
                    snap("z_2", 2, 200),
                    cursor("push", 2),
                    snap("z_3", 3, 300),
                ],
                true,
                Some(300),
            ),
        ];
        for (name, versions, counts, want) in cases {
            assert_eq!(
                oldest_unreplicated(&versions, "push", "z_", counts),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn exceeded_table() {
        // (oldest unreplicated, max_lag, now, lag if exceeded)
        let cases = [
            (None, 3600, 10_000, None),
            (Some(10_000 - 3600), 3600, 10_000, None),
            (Some(10_000 - 3601), 3600, 10_000, Some(3601)),
            (Some(0), 60, 86_400, Some(86_400)),
            (Some(20_000), 60, 10_000, None),
        ];
        for (oldest, max, now, want) in cases {
            assert_eq!(exceeded(oldest, max, now), want, "{oldest:?} {max} {now}");
        }
    }
}
