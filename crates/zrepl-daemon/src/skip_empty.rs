//! Skipping unchanged filesystems in a snapshot round (`written_threshold`, zrepl#728).
//!
//! `written` is what a filesystem changed since its newest snapshot, whatever that snapshot's
//! name. So it tells how much changed since the job's own newest snapshot only if that is the
//! filesystem's newest snapshot: a newer snapshot of another tool (or a received one) hides the
//! changes made before it, and then the filesystem is snapshotted. A filesystem without a
//! snapshot of the job is always snapshotted (replication and pruning need a first one), and so
//! is one whose `written` could not be read: skipping is a saving, never a reason to lose a
//! change.

use std::collections::BTreeMap;

use zrepl_zfs::DatasetPath;

/// Which snapshot of a filesystem is its newest, as far as the job is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newest {
    /// The filesystem has no snapshot with the job's prefix.
    NoOwn,
    /// The newest snapshot has the job's prefix.
    Own,
    /// The job has a snapshot, but a snapshot of another name is newer.
    Foreign,
}

/// A filesystem the round left out, for status and logs (a `/status` contract type).
pub use zrepl_status::Skipped;

/// Whether a filesystem with `newest` and `written` bytes (None: unknown) is skipped under
/// `threshold` bytes (0: never).
pub fn skip(threshold: u64, newest: Newest, written: Option<u64>) -> bool {
    threshold > 0 && newest == Newest::Own && written.is_some_and(|w| w < threshold)
}

/// Splits the round's filesystems into those to snapshot (in the given order) and those skipped.
/// `written` holds the parsed `written` property of the filesystems it could be read for.
pub fn partition(
    threshold: u64,
    filesystems: &[(DatasetPath, Newest)],
    written: &BTreeMap<DatasetPath, u64>,
) -> (Vec<DatasetPath>, Vec<Skipped>) {
    let mut take = Vec::new();
    let mut skipped = Vec::new();
    for (fs, newest) in filesystems {
        let w = written.get(fs).copied();
        match w {
            Some(w) if skip(threshold, *newest, Some(w)) => skipped.push(Skipped {
                filesystem: fs.to_string(),
                written: w,
            }),
            _ => take.push(fs.clone()),
        }
    }
    (take, skipped)
}

/// The `written` values of a `zfs get` result; a value that is not a byte count is left out
/// (the filesystem is then snapshotted).
pub fn written_values(
    props: &BTreeMap<DatasetPath, zrepl_zfs::Properties>,
) -> BTreeMap<DatasetPath, u64> {
    props
        .iter()
        .filter_map(|(fs, p)| {
            let w = p.get("written")?.value.parse::<u64>().ok()?;
            Some((fs.clone(), w))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_table() {
        use Newest::*;
        let cases: &[(u64, Newest, Option<u64>, bool, &str)] = &[
            (
                0,
                Own,
                Some(0),
                false,
                "threshold 0 never skips (zrepl 0.7)",
            ),
            (1, Own, Some(0), true, "nothing written"),
            (1, Own, Some(1), false, "one byte written"),
            (4096, Own, Some(4095), true, "below the threshold"),
            (4096, Own, Some(4096), false, "at the threshold"),
            (4096, Own, None, false, "written unknown"),
            (4096, NoOwn, Some(0), false, "no snapshot of the job yet"),
            (4096, NoOwn, None, false, "no snapshot, unknown"),
            (
                4096,
                Foreign,
                Some(0),
                false,
                "a newer foreign snapshot hides changes",
            ),
            (u64::MAX, Own, Some(u64::MAX - 1), true, "huge threshold"),
        ];
        for (threshold, newest, written, want, what) in cases {
            assert_eq!(skip(*threshold, *newest, *written), *want, "{what}");
        }
    }

    #[test]
    fn partition_keeps_order_and_reports_skipped() {
        let p = |s: &str| DatasetPath::parse(s).unwrap();
        let fss = vec![
            (p("pool/a"), Newest::Own),
            (p("pool/b"), Newest::Own),
            (p("pool/c"), Newest::NoOwn),
            (p("pool/d"), Newest::Own),
            (p("pool/e"), Newest::Foreign),
        ];
        let written: BTreeMap<DatasetPath, u64> = [
            (p("pool/a"), 0),
            (p("pool/b"), 10_000),
            (p("pool/c"), 0),
            // pool/d: not read (vanished, or the command failed): snapshotted.
            (p("pool/e"), 0),
        ]
        .into_iter()
        .collect();
        let (take, skipped) = partition(1024, &fss, &written);
        assert_eq!(
            take,
            vec![p("pool/b"), p("pool/c"), p("pool/d"), p("pool/e")]
        );
        assert_eq!(
            skipped,
            vec![Skipped {
                filesystem: "pool/a".into(),
                written: 0
            }]
        );
        let (take, skipped) = partition(0, &fss, &written);
        assert_eq!(take.len(), 5);
        assert!(skipped.is_empty());
    }

    #[test]
    fn written_values_ignore_non_numbers() {
        let p = |s: &str| DatasetPath::parse(s).unwrap();
        let v = |s: &str| zrepl_zfs::PropertyValue {
            value: s.into(),
            source: zrepl_zfs::PropertySource::None,
        };
        let props: BTreeMap<DatasetPath, zrepl_zfs::Properties> = [
            (p("pool/a"), [("written".to_string(), v("512"))].into()),
            (p("pool/b"), [("written".to_string(), v("-"))].into()),
            (p("pool/c"), BTreeMap::new()),
        ]
        .into_iter()
        .collect();
        let w = written_values(&props);
        assert_eq!(w.len(), 1);
        assert_eq!(w[&p("pool/a")], 512);
    }
}
