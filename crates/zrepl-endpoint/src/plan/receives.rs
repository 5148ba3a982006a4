//! The receiver's part of a round's completion, decided without I/O: which received snapshots
//! to look at, which steps completed (the received GUID is the requested one), where the
//! last-received holds go and which older ones are released. [`crate::receiver`] lists,
//! applies in the order stated here (new holds before old ones go) and feeds outcomes back.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use zrepl_protocol::{EndpointError, Protection, ReceiveRequest};
use zrepl_zfs::VersionPath;
use zrepl_zfs_types::{DatasetPath, FilesystemVersion, VersionType};

/// What completion must list to check the round's receives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiveListing {
    /// Received snapshots looked up by name (one command for all): those of filesystems whose
    /// held snapshots are known from this round's planning.
    pub named: Vec<VersionPath>,
    /// Filesystems listed whole (their held snapshots are not known).
    pub whole: Vec<DatasetPath>,
}

/// Per request of [`complete_receives`]: where it was received (`None`: refused by the
/// receiver's confinement, already failed) and whether this process checked its stream.
#[derive(Debug, Clone)]
pub struct Received {
    pub local: Option<DatasetPath>,
    /// The stream's first record was checked by this process's `receive`, and `zfs recv`
    /// succeeded: the GUID is proven, no listing needed.
    pub verified: bool,
}

/// The deferred requests (their completion is this call's) with their local path.
fn deferred<'a>(
    reqs: &'a [ReceiveRequest],
    rx: &'a [Received],
) -> impl Iterator<Item = (usize, &'a ReceiveRequest, &'a DatasetPath, bool)> {
    reqs.iter()
        .zip(rx)
        .enumerate()
        .filter(|(_, (r, _))| r.deferred)
        .filter_map(|(i, (r, x))| Some((i, r, x.local.as_ref()?, x.verified)))
}

/// Decides what to list. `held` is, per filesystem, the names of its held snapshots as the
/// round's planning listed them.
pub fn receive_listing(
    reqs: &[ReceiveRequest],
    rx: &[Received],
    held: &HashMap<DatasetPath, Vec<String>>,
) -> ReceiveListing {
    let mut named = BTreeSet::new();
    let mut whole = BTreeSet::new();
    for (_, r, lp, verified) in deferred(reqs, rx) {
        if !held.contains_key(lp) {
            whole.insert(lp.clone());
        } else if !verified {
            named.extend(VersionPath::snapshot(lp, &r.to.name).ok());
        }
    }
    ReceiveListing {
        named: named.into_iter().collect(),
        whole: whole.into_iter().collect(),
    }
}

/// What completion does, once the received snapshots were listed.
#[derive(Debug, Clone, Default)]
pub struct ReceiveCompletion {
    /// Per filesystem: the request whose `to` is its newest completed snapshot, and whether
    /// it gets the last-received hold (not under `guarantee_nothing`).
    pub newest: BTreeMap<DatasetPath, (usize, bool)>,
    /// The new last-received holds, in one command, before any old one goes.
    pub hold: Vec<VersionPath>,
}

/// Checks every deferred request's received snapshot (by GUID) into `results` and decides the
/// new last-received holds. `listed` holds what [`receive_listing`] asked for.
pub fn complete_receives(
    reqs: &[ReceiveRequest],
    rx: &[Received],
    listed: &BTreeMap<DatasetPath, Vec<FilesystemVersion>>,
    results: &mut [Result<(), EndpointError>],
) -> ReceiveCompletion {
    let mut newest: BTreeMap<DatasetPath, (usize, bool)> = BTreeMap::new();
    for (i, r, lp, verified) in deferred(reqs, rx) {
        if results[i].is_err() {
            continue;
        }
        let target = format!("{lp}@{}", r.to.name);
        let got = if verified {
            Some(r.to.guid)
        } else {
            listed.get(lp).and_then(|vs| {
                vs.iter()
                    .find(|v| v.typ == VersionType::Snapshot && v.name == r.to.name)
                    .map(|v| v.guid)
            })
        };
        results[i] = match got {
            None => Err(EndpointError::not_found(format!(
                "received snapshot {target} not found"
            ))),
            Some(g) if g != r.to.guid => Err(EndpointError::invalid(format!(
                "received snapshot {target} has guid {g:#x}, expected {:#x} (kept for inspection)",
                r.to.guid
            ))),
            Some(_) => Ok(()),
        };
        if results[i].is_ok() {
            let hold = r.replication.for_step(r.from.is_some()) != Protection::GuaranteeNothing;
            let e = newest.entry(lp.clone()).or_insert((i, hold));
            if r.to.createtxg > reqs[e.0].to.createtxg {
                *e = (i, hold);
            }
        }
    }
    let hold = newest
        .iter()
        .filter(|(_, (_, hold))| *hold)
        .filter_map(|(lp, (i, _))| VersionPath::snapshot(lp, &reqs[*i].to.name).ok())
        .collect();
    ReceiveCompletion { newest, hold }
}

/// When the batch of new holds failed: of the snapshots to hold, those that exist with the
/// received GUID (`found`: what `zfs list` shows of them now), as full names. The others were
/// destroyed since, or never created by a `zfs recv` that reported success.
pub fn present_received(
    reqs: &[ReceiveRequest],
    c: &ReceiveCompletion,
    found: &BTreeMap<DatasetPath, Vec<FilesystemVersion>>,
) -> HashSet<String> {
    let mut p = HashSet::new();
    for (fs, vs) in found {
        let Some((i, _)) = c.newest.get(fs) else {
            continue;
        };
        for v in vs.iter().filter(|v| v.guid == reqs[*i].to.guid) {
            p.insert(format!("{fs}{}", v.relative_name()));
        }
    }
    p
}

/// After a failed batch of new holds and a retry of the `present` ones (`None`: the lookup
/// failed too) that succeeded or not (`held_now`): a filesystem whose snapshot is missing
/// fails with "not found", one whose hold could not be made fails with `err`; both drop out of
/// `c.newest` (their old holds stay).
pub fn after_hold_failure(
    reqs: &[ReceiveRequest],
    rx: &[Received],
    c: &mut ReceiveCompletion,
    present: Option<&HashSet<String>>,
    held_now: bool,
    err: &EndpointError,
    results: &mut [Result<(), EndpointError>],
) {
    let mut failed: HashSet<DatasetPath> = HashSet::new();
    for (i, _, lp, _) in deferred(reqs, rx) {
        let Some((ni, true)) = c.newest.get(lp) else {
            continue;
        };
        if results[i].is_err() {
            continue;
        }
        let snap = format!("{lp}@{}", reqs[*ni].to.name);
        if present.is_some_and(|p| !p.contains(&snap)) {
            results[i] = Err(EndpointError::not_found(format!(
                "received snapshot {snap} not found"
            )));
            failed.insert(lp.clone());
        } else if !held_now {
            results[i] = Err(err.clone());
            failed.insert(lp.clone());
        }
    }
    c.newest.retain(|l, _| !failed.contains(l));
    c.hold.retain(|h| !failed.contains(h.fs()));
}

/// The snapshots to release the job's older last-received hold from, after the new holds
/// exist: per completed filesystem, its other held snapshots (from `held`, the planning's
/// knowledge, else from the whole listing). A release of a tag a snapshot does not carry is a
/// no-op, so no `zfs holds` is needed first.
pub fn older_holds(
    reqs: &[ReceiveRequest],
    c: &ReceiveCompletion,
    held: &HashMap<DatasetPath, Vec<String>>,
    listed: &BTreeMap<DatasetPath, Vec<FilesystemVersion>>,
) -> Vec<VersionPath> {
    c.newest
        .iter()
        .flat_map(|(lp, (i, _))| {
            let names: Vec<&String> = match held.get(lp) {
                Some(names) => names.iter().collect(),
                None => listed
                    .get(lp)
                    .into_iter()
                    .flatten()
                    .filter(|v| v.typ == VersionType::Snapshot && v.userrefs.unwrap_or(0) > 0)
                    .map(|v| &v.name)
                    .collect(),
            };
            names
                .into_iter()
                .filter(|n| **n != reqs[*i].to.name)
                .filter_map(|n| VersionPath::snapshot(lp, n).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Properties a received stream may not set on this host unless the operator decides their
/// value (`recv.properties.override`): where a filesystem is mounted, whether it is shared over
/// NFS/SMB, whether setuid binaries, executables and device nodes in it work, and the systemd
/// mount generator's unit dependencies. A sending peer (a client of a
/// sink, the source of a pull) could otherwise mount its data over any path of the receiving
/// host (`mountpoint=/etc/cron.d`), export it, or tie the host's boot to it. With them inherited,
/// a received filesystem mounts below its parent inside `root_fs`. The sent values are still
/// stored as received values (`zfs get -o received`), so a restore can take them back with
/// `zfs inherit -S`.
pub const PROTECTED_RECEIVED_PROPERTIES: &[&str] = &[
    "mountpoint",
    "sharenfs",
    "sharesmb",
    // What a mounted replica may do on this host: the receiving side's values apply (set
    // `setuid=off exec=off devices=off` on `root_fs` to keep a peer's setuid binaries and
    // device nodes inert here).
    "setuid",
    "exec",
    "devices",
    "org.openzfs.systemd:requires",
    "org.openzfs.systemd:requires-mounts-for",
    "org.openzfs.systemd:before",
    "org.openzfs.systemd:after",
    "org.openzfs.systemd:wanted-by",
    "org.openzfs.systemd:required-by",
    "org.openzfs.systemd:nofail",
    "org.openzfs.systemd:ignore",
];

/// The `-x` list of a `zfs recv`: the operator's `recv.properties.inherit` (always, as zrepl
/// passes it), then, if the stream may carry properties (`stream_properties`: a compound
/// stream with a header, told by its first records before `zfs recv` starts), each protected
/// property the operator does not set with `override` (`-x` and `-o` of the same property are
/// refused by `zfs recv`), each once.
///
/// A plain stream (one substream) cannot set any property, and neither can a package without
/// a header (`zfs send -I`), whose every later record the receiver checks on its way
/// (`zrepl_zfs::CheckedPackage`: no compound header nested after a substream). Those need no
/// protection, and every `-x` costs: `zfs recv` forces an inherit of each excluded property
/// that is not set locally, for every snapshot of the stream, one more transaction group each.
pub fn receive_excludes(
    inherit: &[String],
    override_: &[(String, String)],
    stream_properties: bool,
) -> Vec<String> {
    let protected: &[&str] = if stream_properties {
        PROTECTED_RECEIVED_PROPERTIES
    } else {
        &[]
    };
    let mut out: Vec<String> = Vec::new();
    for p in inherit
        .iter()
        .map(String::as_str)
        .chain(protected.iter().copied())
    {
        if !override_.iter().any(|(k, _)| k == p) && !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use zrepl_protocol::ReplicationConfig;

    fn fs(s: &str) -> DatasetPath {
        DatasetPath::parse(s).unwrap()
    }

    fn snap(name: &str, guid: u64, txg: u64, userrefs: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ: VersionType::Snapshot,
            name: name.into(),
            guid,
            createtxg: txg,
            creation: 0,
            userrefs: Some(userrefs),
        }
    }

    fn req(f: &str, from: Option<u64>, to: u64, p: Protection) -> ReceiveRequest {
        ReceiveRequest {
            intermediates: Vec::new(),
            filesystem: fs(f),
            from: from.map(|g| snap(&format!("s{g}"), g, g * 10, 0)),
            to: snap(&format!("s{to}"), to, to * 10, 0),
            clear_resume_token: false,
            replication: ReplicationConfig {
                initial: p,
                incremental: p,
            },
            deferred: true,
        }
    }

    fn rx(local: &str, verified: bool) -> Received {
        Received {
            local: Some(fs(local)),
            verified,
        }
    }

    fn paths(v: &[VersionPath]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    const R: Protection = Protection::GuaranteeResumability;

    #[test]
    fn listing_table() {
        let held: HashMap<DatasetPath, Vec<String>> =
            [(fs("r/a"), vec!["s1".to_string()])].into_iter().collect();
        type Case = (
            &'static str,
            Vec<ReceiveRequest>,
            Vec<Received>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "known holds: the received snapshot by name",
                vec![req("p/a", Some(1), 2, R)],
                vec![rx("r/a", false)],
                vec!["r/a@s2"],
                vec![],
            ),
            (
                "verified stream: nothing to look at",
                vec![req("p/a", Some(1), 2, R)],
                vec![rx("r/a", true)],
                vec![],
                vec![],
            ),
            (
                "unknown holds: listed whole, verified or not",
                vec![req("p/b", None, 1, R), req("p/c", None, 1, R)],
                vec![rx("r/b", true), rx("r/c", false)],
                vec![],
                vec!["r/b", "r/c"],
            ),
            (
                "refused by confinement or not deferred: nothing",
                vec![
                    req("p/a", Some(1), 2, R),
                    ReceiveRequest {
                        deferred: false,
                        ..req("p/a", Some(2), 3, R)
                    },
                ],
                vec![
                    Received {
                        local: None,
                        verified: false,
                    },
                    rx("r/a", false),
                ],
                vec![],
                vec![],
            ),
        ];
        for (name, reqs, rxs, named, whole) in cases {
            let l = receive_listing(&reqs, &rxs, &held);
            assert_eq!(paths(&l.named), named, "{name}");
            let w: Vec<String> = l.whole.iter().map(ToString::to_string).collect();
            assert_eq!(w, whole, "{name}");
        }
    }

    #[test]
    fn completion_table() {
        type Case = (
            &'static str,
            Vec<ReceiveRequest>,
            Vec<Received>,
            Vec<(&'static str, Vec<FilesystemVersion>)>,
            Vec<bool>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "two steps: the newest is held",
                vec![req("p/a", Some(1), 2, R), req("p/a", Some(2), 3, R)],
                vec![rx("r/a", false), rx("r/a", false)],
                vec![("r/a", vec![snap("s2", 2, 20, 0), snap("s3", 3, 30, 0)])],
                vec![true, true],
                vec!["r/a@s3"],
            ),
            (
                "received snapshot replaced (other guid): fails, kept, not held",
                vec![req("p/a", Some(1), 2, R)],
                vec![rx("r/a", false)],
                vec![("r/a", vec![snap("s2", 99, 20, 0)])],
                vec![false],
                vec![],
            ),
            (
                "missing (crash between recv and completion, then destroyed): fails",
                vec![req("p/a", Some(1), 2, R)],
                vec![rx("r/a", false)],
                vec![("r/a", vec![])],
                vec![false],
                vec![],
            ),
            (
                "verified: no listing needed",
                vec![req("p/a", Some(1), 2, R)],
                vec![rx("r/a", true)],
                vec![],
                vec![true],
                vec!["r/a@s2"],
            ),
            (
                "guarantee_nothing: completes without a hold",
                vec![req("p/a", Some(1), 2, Protection::GuaranteeNothing)],
                vec![rx("r/a", true)],
                vec![],
                vec![true],
                vec![],
            ),
        ];
        for (name, reqs, rxs, listed, ok, hold) in cases {
            let listed: BTreeMap<DatasetPath, Vec<FilesystemVersion>> =
                listed.into_iter().map(|(f, v)| (fs(f), v)).collect();
            let mut results = vec![Ok(()); reqs.len()];
            let c = complete_receives(&reqs, &rxs, &listed, &mut results);
            let got: Vec<bool> = results.iter().map(Result::is_ok).collect();
            assert_eq!(got, ok, "{name}");
            assert_eq!(paths(&c.hold), hold, "{name}");
        }
    }

    #[test]
    fn a_failed_hold_fails_only_its_filesystem() {
        let reqs = vec![req("p/a", Some(1), 2, R), req("p/b", Some(1), 2, R)];
        let rxs = vec![rx("r/a", true), rx("r/b", true)];
        let mut results = vec![Ok(()); 2];
        let mut c = complete_receives(&reqs, &rxs, &BTreeMap::new(), &mut results);
        // r/b's snapshot is gone; r/a's is there and the retry held it.
        let found: BTreeMap<DatasetPath, Vec<FilesystemVersion>> =
            [(fs("r/a"), vec![snap("s2", 2, 20, 0)])]
                .into_iter()
                .collect();
        let present = present_received(&reqs, &c, &found);
        assert_eq!(present, ["r/a@s2".to_string()].into_iter().collect());
        let err = EndpointError::zfs("hold failed");
        after_hold_failure(
            &reqs,
            &rxs,
            &mut c,
            Some(&present),
            true,
            &err,
            &mut results,
        );
        assert!(results[0].is_ok());
        assert!(results[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("not found"));
        assert_eq!(paths(&c.hold), vec!["r/a@s2"]);
        // The retry failed too: every filesystem fails with the hold's error, none releases.
        let mut results = vec![Ok(()); 2];
        let mut c = complete_receives(&reqs, &rxs, &BTreeMap::new(), &mut results);
        after_hold_failure(&reqs, &rxs, &mut c, None, false, &err, &mut results);
        assert!(results.iter().all(|r| r.as_ref().unwrap_err() == &err));
        assert!(c.newest.is_empty());
        assert!(older_holds(&reqs, &c, &HashMap::new(), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn older_holds_from_planning_or_listing() {
        let reqs = vec![req("p/a", Some(1), 2, R), req("p/b", Some(1), 2, R)];
        let rxs = vec![rx("r/a", false), rx("r/b", false)];
        let held: HashMap<DatasetPath, Vec<String>> =
            [(fs("r/a"), vec!["s1".to_string(), "s0".to_string()])]
                .into_iter()
                .collect();
        let listed: BTreeMap<DatasetPath, Vec<FilesystemVersion>> = [
            (fs("r/a"), vec![snap("s2", 2, 20, 0)]),
            (
                fs("r/b"),
                vec![
                    snap("s0", 7, 5, 0),
                    snap("s1", 1, 10, 2),
                    snap("s2", 2, 20, 0),
                ],
            ),
        ]
        .into_iter()
        .collect();
        let mut results = vec![Ok(()); 2];
        let c = complete_receives(&reqs, &rxs, &listed, &mut results);
        assert_eq!(
            paths(&older_holds(&reqs, &c, &held, &listed)),
            vec!["r/a@s1", "r/a@s0", "r/b@s1"]
        );
    }

    #[test]
    fn protected_properties_are_inherited_unless_overridden() {
        let protected: Vec<String> = PROTECTED_RECEIVED_PROPERTIES
            .iter()
            .map(|p| p.to_string())
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // Nothing configured: every protected property is inherited.
        assert_eq!(receive_excludes(&[], &[], true), protected);
        // A stream without properties cannot set any: only what the operator asks for.
        assert_eq!(receive_excludes(&[], &[], false), Vec::<String>::new());
        assert_eq!(
            receive_excludes(&s(&["compression"]), &[], false),
            s(&["compression"])
        );
        // zrepl's sample: inherit mountpoint, override the generator's ignore.
        let got = receive_excludes(
            &s(&["mountpoint", "compression"]),
            &[("org.openzfs.systemd:ignore".into(), "on".into())],
            true,
        );
        assert_eq!(got[..2], s(&["mountpoint", "compression"])[..]);
        assert!(!got.contains(&"org.openzfs.systemd:ignore".to_string()));
        assert_eq!(got.iter().filter(|p| *p == "mountpoint").count(), 1);
        assert!(got.contains(&"sharenfs".to_string()));
        // The operator chooses the mountpoint: no -x for it.
        let got = receive_excludes(&[], &[("mountpoint".into(), "/backups/x".into())], true);
        assert!(!got.contains(&"mountpoint".to_string()));
        assert!(got.contains(&"sharesmb".to_string()));
    }
}
