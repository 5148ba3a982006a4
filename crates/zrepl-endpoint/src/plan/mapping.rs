//! Where a receiver puts a sender's filesystem, and back (`mapping.strip_prefix`, zrepl#253).
//!
//! zrepl 0.7 puts the sender's `a/b/c` at `<root>/a/b/c`, where `<root>` is `root_fs` (pull) or
//! `root_fs/<client identity>` (sink). With a strip prefix `a/b`, it goes to `<root>/c`. Removing
//! a fixed prefix is one-to-one, so two sender filesystems never map onto one dataset, and the
//! receiver's listing maps back without any state. Everything still lands strictly below
//! `<root>`: the names are validated `DatasetPath`s (no empty, `.` or `..` components).

use zrepl_zfs_types::DatasetPath;

/// The receiving dataset of the sender's `fs`, or why it has none.
pub fn receiving_path(
    root: &DatasetPath,
    strip: Option<&DatasetPath>,
    fs: &DatasetPath,
) -> Result<DatasetPath, String> {
    let rel = match strip {
        None => fs.clone(),
        Some(p) => match fs.strip_prefix(p) {
            Some(rel) if !rel.is_empty() => rel,
            Some(_) => {
                return Err(format!(
                    "{fs} is the sink's mapping.strip_prefix itself: it would map onto {root}, which is never received into; leave it out of the job's filesystems (\"{fs}\": false)"
                ))
            }
            None => {
                return Err(format!(
                    "{fs} is outside the receiver's mapping.strip_prefix {p}: nothing outside it is received"
                ))
            }
        },
    };
    if rel.is_empty() {
        return Err("empty filesystem path".into());
    }
    let p = root
        .join(&rel)
        .map_err(|e| format!("cannot receive {fs} below {root}: {e}"))?;
    if !p.has_prefix(root) || p == *root {
        return Err(format!("{fs} does not map below {root}"));
    }
    Ok(p)
}

/// The sender's name of a dataset strictly below `root` (the inverse of [`receiving_path`]).
pub fn sender_path(
    root: &DatasetPath,
    strip: Option<&DatasetPath>,
    local: &DatasetPath,
) -> Option<DatasetPath> {
    let rel = local.strip_prefix(root).filter(|r| !r.is_empty())?;
    match strip {
        None => Some(rel),
        Some(p) => p.join(&rel).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> DatasetPath {
        s.parse().unwrap()
    }

    #[test]
    fn mapping_table() {
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, Option<&str>, &str, Result<&str, &str>)] = &[
            (
                "backup/client",
                None,
                "tank/data/x",
                Ok("backup/client/tank/data/x"),
            ),
            ("backup", Some("tank/data"), "tank/data/x", Ok("backup/x")),
            (
                "backup",
                Some("tank/data"),
                "tank/data/x/y",
                Ok("backup/x/y"),
            ),
            ("backup", Some("tank"), "tank/data", Ok("backup/data")),
            (
                "backup",
                Some("tank/data"),
                "tank/data",
                Err("is the sink's mapping.strip_prefix itself"),
            ),
            (
                "backup",
                Some("tank/data"),
                "tank/database",
                Err("outside the receiver's mapping.strip_prefix"),
            ),
            ("backup", Some("tank/data"), "pool/data/x", Err("outside")),
            ("backup", Some("tank/data"), "tank", Err("outside")),
        ];
        for (root, strip, fs, want) in cases {
            let strip = strip.map(p);
            let got = receiving_path(&p(root), strip.as_ref(), &p(fs));
            match (want, &got) {
                (Ok(w), Ok(g)) => {
                    assert_eq!(g.to_string(), *w, "{fs}");
                    assert_eq!(
                        sender_path(&p(root), strip.as_ref(), g),
                        Some(p(fs)),
                        "{fs} back"
                    );
                }
                (Err(w), Err(e)) => assert!(e.contains(w), "{fs}: {e}"),
                _ => panic!("{fs}: want {want:?}, got {got:?}"),
            }
        }
        assert_eq!(sender_path(&p("backup"), None, &p("backup")), None);
        assert_eq!(sender_path(&p("backup"), None, &p("other/x")), None);
    }

    /// One-to-one: distinct sender paths map to distinct datasets below the root.
    #[test]
    fn no_two_senders_share_a_dataset() {
        let strip = p("tank/data");
        let fss = [
            "tank/data/a",
            "tank/data/a/b",
            "tank/data/b",
            "tank/data/ab",
            "tank/data/a/a",
        ];
        let mut seen = std::collections::HashSet::new();
        for fs in fss {
            let r = receiving_path(&p("backup"), Some(&strip), &p(fs)).unwrap();
            assert!(seen.insert(r.to_string()), "{fs} collides");
        }
    }
}
