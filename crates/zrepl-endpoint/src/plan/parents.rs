//! Which parents a new received filesystem needs, decided from one listing of its ancestors.
//!
//! `root_fs` and everything above it must exist (they are never created); every missing level
//! between `root_fs` and the filesystem becomes a placeholder, top-down. With
//! `recv.placeholder.encryption` unspecified that is an error, except for a sink's client
//! identity level (created with inherited encryption, as zrepl does); the error comes before
//! anything is created.

use std::collections::BTreeMap;

use zrepl_protocol::EndpointError;
use zrepl_zfs::{DatasetPath, PlaceholderEncryption, PlaceholderState};

use crate::receiver::PlaceholderPolicy;

/// The datasets whose state [`missing_parents`] needs for `lp`: its ancestors from the pool
/// down, then `lp` itself.
pub fn to_inspect(lp: &DatasetPath) -> Vec<DatasetPath> {
    lp.ancestors_top_down()
        .chain(std::iter::once(lp.clone()))
        .collect()
}

/// The placeholders to create for `lp`, top-down, given the state of its ancestors
/// (`states`, as [`to_inspect`] asks for; a dataset absent from it counts as missing).
/// `root` is where this receiver's filesystems land (`root_fs`, or a sink's
/// `root_fs/<identity>`).
pub fn missing_parents(
    lp: &DatasetPath,
    root_fs: &DatasetPath,
    root: &DatasetPath,
    policy: PlaceholderPolicy,
    states: &BTreeMap<DatasetPath, PlaceholderState>,
) -> Result<Vec<(DatasetPath, PlaceholderEncryption)>, EndpointError> {
    let exists = |d: &DatasetPath| states.get(d).is_some_and(|s| s.exists);
    let mut create = Vec::new();
    for anc in lp.ancestors_top_down() {
        if root_fs.has_prefix(&anc) {
            // root_fs itself or above: must exist, never created by us.
            if !exists(&anc) {
                return Err(EndpointError::not_found(if anc.len() == 1 {
                    format!("pool {:?} not imported", anc.to_string())
                } else {
                    format!("root_fs {:?} does not exist", root_fs.to_string())
                }));
            }
            continue;
        }
        if exists(&anc) {
            continue;
        }
        let is_identity_level = anc == *root && root != root_fs;
        let enc = match (policy, is_identity_level) {
            (_, true) | (PlaceholderPolicy::Inherit, _) => PlaceholderEncryption::Inherit,
            (PlaceholderPolicy::Off, _) => PlaceholderEncryption::Off,
            (PlaceholderPolicy::Unspecified, false) => {
                return Err(EndpointError::invalid(format!(
                    "cannot create placeholder filesystem {anc}: placeholder filesystem encryption handling is unspecified in receiver config (set recv.placeholder.encryption to inherit or off)"
                )))
            }
        };
        create.push((anc, enc));
    }
    Ok(create)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zrepl_protocol::ErrorKind;

    fn p(s: &str) -> DatasetPath {
        DatasetPath::parse(s).unwrap()
    }

    fn states(existing: &[&str]) -> BTreeMap<DatasetPath, PlaceholderState> {
        existing
            .iter()
            .map(|d| {
                (
                    p(d),
                    PlaceholderState {
                        exists: true,
                        is_placeholder: false,
                        raw_local_value: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn to_inspect_lists_ancestors_then_the_filesystem() {
        assert_eq!(to_inspect(&p("a/b/c")), vec![p("a"), p("a/b"), p("a/b/c")]);
        assert_eq!(to_inspect(&p("a")), vec![p("a")]);
    }

    #[test]
    fn table() {
        use PlaceholderEncryption::{Inherit, Off};
        use PlaceholderPolicy::{Inherit as PInherit, Off as POff, Unspecified};
        type Want = Result<Vec<(&'static str, PlaceholderEncryption)>, ErrorKind>;
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            PlaceholderPolicy,
            Vec<&'static str>,
            Want,
        );
        let cases: Vec<Case> = vec![
            // Everything there: nothing to create, whatever the policy.
            (
                "pool/sink/c/x",
                "pool/sink",
                "pool/sink/c",
                Unspecified,
                vec!["pool", "pool/sink", "pool/sink/c"],
                Ok(vec![]),
            ),
            // The identity level is created with inherited encryption even if unspecified.
            (
                "pool/sink/c/x",
                "pool/sink",
                "pool/sink/c",
                Unspecified,
                vec!["pool", "pool/sink"],
                Ok(vec![("pool/sink/c", Inherit)]),
            ),
            // Below the identity level an unspecified policy is an error, and nothing is
            // created (not even the identity level).
            (
                "pool/sink/c/a/x",
                "pool/sink",
                "pool/sink/c",
                Unspecified,
                vec!["pool", "pool/sink"],
                Err(ErrorKind::InvalidRequest),
            ),
            (
                "pool/sink/c/a/b/x",
                "pool/sink",
                "pool/sink/c",
                POff,
                vec!["pool", "pool/sink"],
                Ok(vec![
                    ("pool/sink/c", Inherit),
                    ("pool/sink/c/a", Off),
                    ("pool/sink/c/a/b", Off),
                ]),
            ),
            (
                "pool/sink/c/a/b/x",
                "pool/sink",
                "pool/sink/c",
                PInherit,
                vec!["pool", "pool/sink", "pool/sink/c"],
                Ok(vec![
                    ("pool/sink/c/a", Inherit),
                    ("pool/sink/c/a/b", Inherit),
                ]),
            ),
            // Pull (root == root_fs).
            (
                "pool/dst/a/x",
                "pool/dst",
                "pool/dst",
                POff,
                vec!["pool", "pool/dst"],
                Ok(vec![("pool/dst/a", Off)]),
            ),
            (
                "pool/dst/a/x",
                "pool/dst",
                "pool/dst",
                Unspecified,
                vec!["pool", "pool/dst"],
                Err(ErrorKind::InvalidRequest),
            ),
            // root_fs or the pool missing: never created.
            (
                "pool/dst/a/x",
                "pool/dst",
                "pool/dst",
                PInherit,
                vec!["pool"],
                Err(ErrorKind::NotFound),
            ),
            (
                "pool/dst/a/x",
                "pool/dst",
                "pool/dst",
                PInherit,
                vec![],
                Err(ErrorKind::NotFound),
            ),
        ];
        for (lp, root_fs, root, policy, existing, want) in cases {
            let got = missing_parents(&p(lp), &p(root_fs), &p(root), policy, &states(&existing));
            let got = got
                .map(|v| {
                    v.into_iter()
                        .map(|(d, e)| (d.to_string(), e))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.kind);
            let want = want.map(|v| v.into_iter().map(|(d, e)| (d.to_string(), e)).collect());
            assert_eq!(
                got, want,
                "{lp} below {root_fs} ({root}), {policy:?}, existing {existing:?}"
            );
        }
    }

    #[test]
    fn missing_pool_says_not_imported() {
        let e = missing_parents(
            &p("pool/dst/x"),
            &p("pool/dst"),
            &p("pool/dst"),
            PlaceholderPolicy::Off,
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.message.contains("not imported"), "{e}");
    }
}
