//! The ZFS holds and bookmarks zrepl owns, with zrepl 0.7's exact names (spec §3.5).
//!
//! These names are an on-disk contract: a zrepl 0.7 installation that switches to this
//! implementation must find its cursors and holds under the same names, so the formats here are
//! byte-for-byte zrepl's (including the double underscore of the tentative cursor).

use std::fmt;

/// The kinds of abstractions, with zrepl's type strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum AbstractionType {
    /// Hold on the sender's `from` and `to` snapshots while a step runs.
    #[serde(rename = "step-hold")]
    StepHold,
    /// Hold on the receiver's newest received snapshot.
    #[serde(rename = "last-received-hold")]
    LastReceivedHold,
    /// The legacy (zrepl <= 0.2) cursor `#zrepl_replication_cursor`, without a job.
    #[serde(rename = "replication-cursor-bookmark-v1")]
    ReplicationCursorV1,
    /// The sender's replication cursor `#zrepl_CURSOR_G_<guid>_J_<job>`.
    #[serde(rename = "replication-cursor-bookmark-v2")]
    ReplicationCursorV2,
    /// `#zrepl_CURSORTENTATIVE__G_<guid>_J_<job>`, made before a step under `guarantee_incremental`.
    #[serde(rename = "tentative-replication-cursor-bookmark-v2")]
    TentativeReplicationCursorV2,
}

impl AbstractionType {
    pub const ALL: [AbstractionType; 5] = [
        AbstractionType::LastReceivedHold,
        AbstractionType::ReplicationCursorV1,
        AbstractionType::ReplicationCursorV2,
        AbstractionType::StepHold,
        AbstractionType::TentativeReplicationCursorV2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AbstractionType::StepHold => "step-hold",
            AbstractionType::LastReceivedHold => "last-received-hold",
            AbstractionType::ReplicationCursorV1 => "replication-cursor-bookmark-v1",
            AbstractionType::ReplicationCursorV2 => "replication-cursor-bookmark-v2",
            AbstractionType::TentativeReplicationCursorV2 => {
                "tentative-replication-cursor-bookmark-v2"
            }
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Holds are tags on snapshots; the others are bookmarks.
    pub fn is_hold(self) -> bool {
        matches!(
            self,
            AbstractionType::StepHold | AbstractionType::LastReceivedHold
        )
    }
}

impl fmt::Display for AbstractionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const STEP_HOLD_PREFIX: &str = "zrepl_STEP_J_";
const LAST_RECEIVED_PREFIX: &str = "zrepl_last_received_J_";
const CURSOR_PREFIX: &str = "zrepl_CURSOR";
const TENTATIVE_PREFIX: &str = "zrepl_CURSORTENTATIVE_";
/// The name of the legacy v1 replication cursor bookmark.
pub const V1_CURSOR_NAME: &str = "zrepl_replication_cursor";

/// `zrepl_STEP_J_<job>`.
pub fn step_hold_tag(job: &str) -> String {
    format!("{STEP_HOLD_PREFIX}{job}")
}

/// `zrepl_last_received_J_<job>` (the receiving job's name).
pub fn last_received_hold_tag(job: &str) -> String {
    format!("{LAST_RECEIVED_PREFIX}{job}")
}

/// `zrepl_CURSOR_G_<guid as 16 hex digits>_J_<job>`.
pub fn cursor_bookmark_name(guid: u64, job: &str) -> String {
    format!("{CURSOR_PREFIX}_G_{guid:016x}_J_{job}")
}

/// `zrepl_CURSORTENTATIVE__G_<guid as 16 hex digits>_J_<job>` (double underscore, as zrepl).
pub fn tentative_cursor_bookmark_name(guid: u64, job: &str) -> String {
    format!("{TENTATIVE_PREFIX}_G_{guid:016x}_J_{job}")
}

fn valid_job(job: &str) -> bool {
    !job.is_empty() && crate::name::check_component(job).is_ok()
}

/// The job of a step hold tag, if it is one.
pub fn parse_step_hold_tag(tag: &str) -> Option<&str> {
    tag.strip_prefix(STEP_HOLD_PREFIX).filter(|j| valid_job(j))
}

/// The job of a last-received hold tag, if it is one.
pub fn parse_last_received_hold_tag(tag: &str) -> Option<&str> {
    tag.strip_prefix(LAST_RECEIVED_PREFIX)
        .filter(|j| valid_job(j))
}

/// Parses a bookmark's short name into its abstraction type, embedded GUID and job.
/// The v1 cursor has neither GUID nor job.
pub fn parse_cursor_bookmark(name: &str) -> Option<(AbstractionType, Option<u64>, Option<&str>)> {
    if name == V1_CURSOR_NAME {
        return Some((AbstractionType::ReplicationCursorV1, None, None));
    }
    let (typ, rest) = if let Some(r) = name.strip_prefix(TENTATIVE_PREFIX) {
        (AbstractionType::TentativeReplicationCursorV2, r)
    } else if let Some(r) = name.strip_prefix(CURSOR_PREFIX) {
        (AbstractionType::ReplicationCursorV2, r)
    } else {
        return None;
    };
    let rest = rest.strip_prefix("_G_")?;
    let hex = rest.get(..16)?;
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let guid = u64::from_str_radix(hex, 16).ok()?;
    let job = rest.get(16..)?.strip_prefix("_J_")?;
    valid_job(job).then_some((typ, Some(guid), Some(job)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_zrepls() {
        assert_eq!(step_hold_tag("job"), "zrepl_STEP_J_job");
        assert_eq!(last_received_hold_tag("sink"), "zrepl_last_received_J_sink");
        assert_eq!(
            cursor_bookmark_name(0xab, "push"),
            "zrepl_CURSOR_G_00000000000000ab_J_push"
        );
        assert_eq!(
            tentative_cursor_bookmark_name(u64::MAX, "a b"),
            "zrepl_CURSORTENTATIVE__G_ffffffffffffffff_J_a b"
        );
    }

    #[test]
    fn parsing_round_trips_and_rejects_lookalikes() {
        assert_eq!(parse_step_hold_tag("zrepl_STEP_J_job"), Some("job"));
        assert_eq!(parse_step_hold_tag("zrepl_STEP_J_"), None);
        assert_eq!(parse_step_hold_tag("zrepl_STEP_J_a/b"), None);
        assert_eq!(
            parse_last_received_hold_tag("zrepl_last_received_J_s"),
            Some("s")
        );
        assert_eq!(parse_last_received_hold_tag("zrepl_STEP_J_s"), None);
        let c = cursor_bookmark_name(0x1234, "push");
        assert_eq!(
            parse_cursor_bookmark(&c),
            Some((
                AbstractionType::ReplicationCursorV2,
                Some(0x1234),
                Some("push")
            ))
        );
        let t = tentative_cursor_bookmark_name(7, "push");
        assert_eq!(
            parse_cursor_bookmark(&t),
            Some((
                AbstractionType::TentativeReplicationCursorV2,
                Some(7),
                Some("push")
            ))
        );
        assert_eq!(
            parse_cursor_bookmark("zrepl_replication_cursor"),
            Some((AbstractionType::ReplicationCursorV1, None, None))
        );
        for bad in [
            "zrepl_CURSOR_G_123_J_job",
            "zrepl_CURSOR_G_000000000000000G_J_job",
            "zrepl_CURSOR_G_00000000000000AB_J_job",
            "zrepl_CURSOR_G_00000000000000ab_J_",
            "zrepl_CURSOR_G_00000000000000ab_X_job",
            "zrepl_CURSORTENTATIVE_G_00000000000000ab_J_job",
            "my_bookmark",
        ] {
            assert_eq!(parse_cursor_bookmark(bad), None, "{bad}");
        }
        for t in AbstractionType::ALL {
            assert_eq!(AbstractionType::parse(t.as_str()), Some(t));
        }
    }
}

/// The facts about one abstraction that staleness depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbstractionKey<'a> {
    pub typ: AbstractionType,
    pub fs: &'a str,
    pub job: Option<&'a str>,
    pub createtxg: u64,
}

/// Which abstractions are stale (zrepl's `ListStale`, spec §3.5), by index into `items`.
///
/// Grouped by filesystem and job:
/// * step holds are stale if their createtxg is at or before the newest replication cursor's;
///   without a cursor, all but the newest step hold are stale (an interrupted initial replication
///   keeps the newest);
/// * replication cursors (v2) and last-received holds: all but the newest are stale;
/// * v1 cursors and tentative cursors are never reported stale here (v1 is migrated with
///   `zrepl migrate`, tentative cursors are cleaned up by the next step).
pub fn stale(items: &[AbstractionKey<'_>]) -> Vec<usize> {
    use std::collections::HashMap;
    let mut newest: HashMap<(AbstractionType, &str, &str), u64> = HashMap::new();
    for it in items {
        if let Some(job) = it.job {
            let e = newest.entry((it.typ, it.fs, job)).or_insert(0);
            *e = (*e).max(it.createtxg);
        }
    }
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let Some(job) = it.job else { continue };
        let newest_of = |t| newest.get(&(t, it.fs, job)).copied();
        let is_stale = match it.typ {
            AbstractionType::StepHold => match newest_of(AbstractionType::ReplicationCursorV2) {
                Some(cursor) => it.createtxg <= cursor,
                None => newest_of(AbstractionType::StepHold).is_some_and(|n| it.createtxg < n),
            },
            AbstractionType::ReplicationCursorV2 | AbstractionType::LastReceivedHold => {
                newest_of(it.typ).is_some_and(|n| it.createtxg < n)
            }
            AbstractionType::ReplicationCursorV1
            | AbstractionType::TentativeReplicationCursorV2 => false,
        };
        if is_stale {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod stale_tests {
    use super::*;

    #[test]
    fn staleness_rules() {
        use AbstractionType::*;
        let k = |typ, fs, job: Option<&'static str>, createtxg| AbstractionKey {
            typ,
            fs,
            job,
            createtxg,
        };
        let items = [
            k(StepHold, "p/a", Some("j"), 5),            // 0: <= cursor 7: stale
            k(StepHold, "p/a", Some("j"), 9),            // 1: after cursor: live (step in flight)
            k(ReplicationCursorV2, "p/a", Some("j"), 3), // 2: older cursor: stale
            k(ReplicationCursorV2, "p/a", Some("j"), 7), // 3: newest: live
            k(StepHold, "p/b", Some("j"), 2),            // 4: no cursor, not newest: stale
            k(StepHold, "p/b", Some("j"), 4),            // 5: no cursor, newest: live
            k(LastReceivedHold, "p/c", Some("s"), 1),    // 6: stale
            k(LastReceivedHold, "p/c", Some("s"), 2),    // 7: live
            k(LastReceivedHold, "p/c", Some("other"), 1), // 8: other job: live
            k(TentativeReplicationCursorV2, "p/a", Some("j"), 1), // 9: live
            k(ReplicationCursorV1, "p/a", None, 1),      // 10: live
            k(StepHold, "p/a", Some("k"), 5),            // 11: other job, no cursor of k: live
        ];
        assert_eq!(stale(&items), vec![0, 2, 4, 6]);
    }
}
