use super::*;

/// A version from a compact spec: `@a:1` is snapshot `a` with txg 1 and guid 1; `#a:1` a bookmark
/// of the same snapshot; `@a:3/77` overrides the guid.
fn v(spec: &str) -> FilesystemVersion {
    let (typ, rest) = match spec.as_bytes()[0] {
        b'@' => (VersionType::Snapshot, &spec[1..]),
        b'#' => (VersionType::Bookmark, &spec[1..]),
        _ => panic!("bad spec {spec}"),
    };
    let (name, nums) = rest.split_once(':').expect("name:txg");
    let (txg, guid) = match nums.split_once('/') {
        Some((t, g)) => (t.parse().unwrap(), g.parse().unwrap()),
        None => (nums.parse().unwrap(), nums.parse().unwrap()),
    };
    FilesystemVersion {
        typ,
        name: name.to_string(),
        guid,
        createtxg: txg,
        creation: txg as i64 * 100,
        userrefs: (typ == VersionType::Snapshot).then_some(0),
    }
}

fn vs(specs: &str) -> Vec<FilesystemVersion> {
    specs.split_whitespace().map(v).collect()
}

fn sender(specs: &str) -> SenderFs {
    SenderFs {
        is_placeholder: false,
        versions: vs(specs),
    }
}

fn receiver(specs: &str) -> ReceiverFs {
    ReceiverFs {
        exists: true,
        is_placeholder: false,
        versions: vs(specs),
        resume_token: None,
    }
}

fn show(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A table row: name, sender, receiver, policy, expected steps (rendered) or error substring.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    InitialReplication,
    Result<&'static str, &'static str>,
);

#[test]
fn plans() {
    use InitialReplication::*;
    let cases: &[Case] = &[
        (
            "initial most_recent",
            "@a:1 @b:2 @c:3",
            "",
            MostRecent,
            Ok("full send of @c"),
        ),
        (
            "initial all",
            "@a:1 @b:2 @c:3",
            "",
            All,
            Ok("full send of @a; @a => @b; @b => @c"),
        ),
        (
            "initial fail",
            "@a:1",
            "",
            Fail,
            Err("conflict_resolution.initial_replication: fail"),
        ),
        (
            "initial order by txg, not name",
            "@z:1 @y:2 @x:3",
            "",
            All,
            Ok("full send of @z; @z => @y; @y => @x"),
        ),
        (
            "initial ignores bookmarks",
            "#a:1 @b:2 #c:3",
            "",
            All,
            Ok("full send of @b"),
        ),
        (
            "only bookmarks on sender",
            "#a:1 #b:2",
            "",
            MostRecent,
            Err("no snapshots available on sender side"),
        ),
        (
            "incremental chain",
            "@a:1 @b:2 @c:3 @d:4",
            "@a:1 @b:2",
            MostRecent,
            Ok("@b => @c; @c => @d"),
        ),
        ("up to date", "@a:1 @b:2", "@a:1 @b:2", MostRecent, Ok("")),
        (
            "from bookmark after snapshot destroyed",
            "#b:2 @c:3",
            "@a:1 @b:2",
            MostRecent,
            Ok("#b => @c"),
        ),
        (
            "cursor bookmark beside snapshot prefers snapshot",
            "#cur:2/2 @b:2 @c:3",
            "@b:2",
            MostRecent,
            Ok("@b => @c"),
        ),
        (
            "bookmarks after mrca are skipped",
            "@a:1 #x:2 @c:3 #y:4 @e:5",
            "@a:1",
            MostRecent,
            Ok("@a => @c; @c => @e"),
        ),
        (
            "receiver bookmarks never conflict",
            "@a:1 @b:2",
            "@a:1 #zz:9/99",
            MostRecent,
            Ok("@a => @b"),
        ),
        (
            "diverged",
            "@a:1 @b:2",
            "@a:1 @x:5/55",
            MostRecent,
            Err("the receiver's latest snapshot is not present on sender"),
        ),
        (
            "no common ancestor",
            "@a:1 @b:2",
            "@x:5/55",
            MostRecent,
            Err("no common snapshot or suitable bookmark"),
        ),
        (
            "no common ancestor is not auto-resolved even with all",
            "@a:1",
            "@x:5/55",
            All,
            Err("no common snapshot"),
        ),
        (
            "mrca found by guid despite rename",
            "@a:1 @renamed:2/22 @c:3",
            "@a:1 @b:2/22",
            MostRecent,
            Ok("@renamed => @c"),
        ),
        (
            "duplicate guid skipped",
            "@a:1 @b:2 @b2:2/2 @c:3",
            "@a:1",
            MostRecent,
            Ok("@a => @b; @b => @c"),
        ),
        (
            "sender empty",
            "",
            "",
            MostRecent,
            Err("sender does not have any versions"),
        ),
    ];
    for (name, s, r, pol, want) in cases {
        let rcv = if r.is_empty() {
            ReceiverFs::default()
        } else {
            receiver(r)
        };
        let got = plan(
            &sender(s),
            &rcv,
            &Policy {
                initial_replication: *pol,
                ..Policy::default()
            },
        );
        match (want, got) {
            (Ok(w), Ok(steps)) => assert_eq!(show(&steps), *w, "{name}"),
            (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{name}: {e}"),
            (w, g) => panic!("{name}: want {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn receiver_placeholder_means_initial_replication() {
    let r = ReceiverFs {
        exists: true,
        is_placeholder: true,
        versions: vs("@old:1/77"),
        resume_token: None,
    };
    assert_eq!(
        show(&plan(&sender("@a:1 @b:2"), &r, &Policy::default()).unwrap()),
        "full send of @b"
    );
}

#[test]
fn sender_placeholder() {
    let s = SenderFs {
        is_placeholder: true,
        versions: vec![],
    };
    assert_eq!(
        plan(&s, &ReceiverFs::default(), &Policy::default()).unwrap(),
        vec![]
    );
    let r = ReceiverFs {
        is_placeholder: true,
        ..receiver("")
    };
    assert_eq!(plan(&s, &r, &Policy::default()).unwrap(), vec![]);
    assert_eq!(
        plan(&s, &receiver("@a:1"), &Policy::default()).unwrap_err(),
        PlanError::SenderPlaceholderReceiverNot
    );
}

fn token(toguid: u64, fromguid: Option<u64>) -> String {
    let mut t = ResumeToken::new(toguid, "pool/fs@x");
    t.fromguid = fromguid;
    resume_token::encode(&t)
}

#[test]
fn resume() {
    let s = sender("@a:1 #b:2 @b:2 @c:3 @d:4");
    let mut r = receiver("@a:1");
    r.resume_token = Some(token(2, Some(1)));
    let steps = plan(&s, &r, &Policy::default()).unwrap();
    assert_eq!(show(&steps), "@a => @b (resuming); @b => @c; @c => @d");
    assert_eq!(steps[0].resume_token, r.resume_token);

    // A resumed full send.
    r.resume_token = Some(token(3, None));
    assert_eq!(
        show(&plan(&s, &r, &Policy::default()).unwrap()),
        "full send of @c (resuming); @c => @d"
    );

    // Resuming from a bookmark when the snapshot is gone.
    let s2 = sender("#a:1 @b:2");
    r.resume_token = Some(token(2, Some(1)));
    assert_eq!(
        show(&plan(&s2, &r, &Policy::default()).unwrap()),
        "#a => @b (resuming)"
    );

    r.resume_token = Some(token(99, None));
    assert!(matches!(
        plan(&s, &r, &Policy::default()),
        Err(PlanError::ResumeToNotFound { toguid: 99, .. })
    ));
    r.resume_token = Some(token(3, Some(98)));
    assert!(matches!(
        plan(&s, &r, &Policy::default()),
        Err(PlanError::ResumeFromNotFound { fromguid: 98 })
    ));
    r.resume_token = Some(token(3, Some(3)));
    assert!(matches!(
        plan(&s, &r, &Policy::default()),
        Err(PlanError::ResumeFromEqualsTo { .. })
    ));
    r.resume_token = Some("1-garbage".into());
    assert!(matches!(
        plan(&s, &r, &Policy::default()),
        Err(PlanError::ResumeTokenUndecodable(_))
    ));
}

#[test]
fn conflict_messages_tell_what_to_do() {
    let e = plan(
        &sender("@a:1 @b:2"),
        &receiver("@a:1 @x:5/55"),
        &Policy::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("last common version @a"), "{msg}");
    assert!(msg.contains("receiver-only: @x"), "{msg}");
    assert!(msg.contains("zfs rollback -r <receiving fs>@a"), "{msg}");
    let e = plan(&sender("@a:1"), &receiver("@x:5/55"), &Policy::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("destroy or rename the receiving filesystem"),
        "{e}"
    );
}

/// `replication.snapshots`: excluded snapshots are never targets; steps skip over them with `-i`
/// from the last selected or common version.
#[test]
fn snapshot_filter_table() {
    use zrepl_filters::{SnapshotFilter, SnapshotPattern};
    let zrepl_only = SnapshotFilter::prefix("zrepl_");
    let no_tmp = SnapshotFilter {
        include: vec![],
        exclude: vec![SnapshotPattern::Regex(regex_lite("_tmp$"))],
    };
    #[allow(clippy::type_complexity)]
    let cases: &[(&str, &str, &str, InitialReplication, &SnapshotFilter, Result<&str, &str>)] = &[
        (
            "initial most recent takes the newest selected",
            "@zrepl_1:1 @pve_2:2 @zrepl_3:3 @pve_4:4",
            "",
            InitialReplication::MostRecent,
            &zrepl_only,
            Ok("full send of @zrepl_3"),
        ),
        (
            "initial all chains the selected ones only",
            "@pve_0:1 @zrepl_1:2 @pve_2:3 @zrepl_3:4 @pve_4:5",
            "",
            InitialReplication::All,
            &zrepl_only,
            Ok("full send of @zrepl_1; @zrepl_1 => @zrepl_3"),
        ),
        (
            "incremental steps over foreign snapshots",
            "@zrepl_1:1 @pve_2:2 @pve_3:3 @zrepl_4:4 @zrepl_5:5 @pve_6:6",
            "@zrepl_1:1",
            InitialReplication::MostRecent,
            &zrepl_only,
            Ok("@zrepl_1 => @zrepl_4; @zrepl_4 => @zrepl_5"),
        ),
        (
            "a common but now excluded snapshot is still a base",
            "@zrepl_1:1 @manual_2:2 @zrepl_3:3",
            "@zrepl_1:1 @manual_2:2",
            InitialReplication::MostRecent,
            &zrepl_only,
            Ok("@manual_2 => @zrepl_3"),
        ),
        (
            "a bookmark base works as without a filter",
            "#zrepl_1:1 @pve_2:2 @zrepl_3:3",
            "@zrepl_1:1",
            InitialReplication::MostRecent,
            &zrepl_only,
            Ok("#zrepl_1 => @zrepl_3"),
        ),
        (
            "only foreign snapshots newer than the base: up to date",
            "@zrepl_1:1 @pve_2:2 @pve_3:3",
            "@zrepl_1:1",
            InitialReplication::MostRecent,
            &zrepl_only,
            Ok(""),
        ),
        (
            "nothing selected: a clear error",
            "@pve_1:1 @pve_2:2",
            "",
            InitialReplication::MostRecent,
            &zrepl_only,
            Err("no snapshot of this filesystem is selected for replication (replication.snapshots selects snapshots matching prefix \"zrepl_\")"),
        ),
        (
            "exclude only",
            "@a:1 @b_tmp:2 @c:3",
            "",
            InitialReplication::All,
            &no_tmp,
            Ok("full send of @a; @a => @c"),
        ),
        (
            "receiver-only snapshots still diverge",
            "@zrepl_1:1 @zrepl_2:2",
            "@zrepl_1:1 @pve_9:9/99",
            InitialReplication::MostRecent,
            &zrepl_only,
            Err("receiver-only: @pve_9"),
        ),
    ];
    for (name, s, r, pol, filter, want) in cases {
        let rcv = if r.is_empty() {
            ReceiverFs::default()
        } else {
            receiver(r)
        };
        let policy = Policy {
            initial_replication: *pol,
            snapshots: (*filter).clone(),
            packages: false,
        };
        match (want, plan(&sender(s), &rcv, &policy)) {
            (Ok(w), Ok(steps)) => assert_eq!(show(&steps), *w, "{name}"),
            (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{name}: {e}"),
            (w, g) => panic!("{name}: want {w:?}, got {g:?}"),
        }
    }
}

/// A resumed transfer finishes whatever the filter says, then only selected snapshots follow.
#[test]
fn snapshot_filter_and_resume() {
    let s = sender("@zrepl_1:1 @pve_2:2 @zrepl_3:3 @pve_4:4 @zrepl_5:5");
    let token = token(2, Some(1));
    let r = ReceiverFs {
        exists: true,
        is_placeholder: false,
        versions: vs("@zrepl_1:1"),
        resume_token: Some(token),
    };
    let policy = Policy {
        snapshots: zrepl_filters::SnapshotFilter::prefix("zrepl_"),
        ..Policy::default()
    };
    assert_eq!(
        show(&plan(&s, &r, &policy).unwrap()),
        "@zrepl_1 => @pve_2 (resuming); @pve_2 => @zrepl_3; @zrepl_3 => @zrepl_5"
    );
}

fn regex_lite(s: &str) -> regex::Regex {
    regex::Regex::new(s).unwrap()
}

/// A backlog longer than a package may be goes as packages of `MAX_PACKAGE_SNAPSHOTS`, in order
/// and without a gap.
#[test]
fn long_backlogs_split_into_bounded_packages() {
    let max = crate::MAX_PACKAGE_SNAPSHOTS;
    let n = 2 * max + max / 2;
    let s: Vec<String> = (1..=n + 1).map(|i| format!("@s{i}:{i}")).collect();
    let policy = Policy {
        packages: true,
        ..Default::default()
    };
    let steps = plan(&sender(&s.join(" ")), &receiver("@s1:1"), &policy).unwrap();
    let sizes: Vec<usize> = steps.iter().map(|s| s.intermediates.len() + 1).collect();
    assert_eq!(sizes, [max, max, max / 2]);
    let mut prev = 1u64;
    for st in &steps {
        assert_eq!(st.from.as_ref().unwrap().guid, prev);
        prev = st.to.guid;
    }
    assert_eq!(prev, n as u64 + 1);
}

/// `replication.packages`: runs of consecutive steps go as one `-I` stream, never across an
/// unselected snapshot, never from a bookmark, never merged with a resumed transfer.
#[test]
fn packages_table() {
    use zrepl_filters::SnapshotFilter;
    let cases: &[(&str, &str, &str, &SnapshotFilter, &str)] = &[
        (
            "a backlog is one package",
            "@a:1 @b:2 @c:3 @d:4",
            "@a:1",
            &SnapshotFilter::all(),
            "@a => @d (-I, 3 snapshots)",
        ),
        (
            "one new snapshot stays a single step",
            "@a:1 @b:2",
            "@a:1",
            &SnapshotFilter::all(),
            "@a => @b",
        ),
        (
            "an unselected snapshot splits the run",
            "@z_1:1 @z_2:2 @pve:3 @z_4:4 @z_5:5",
            "@z_1:1",
            &SnapshotFilter::prefix("z_"),
            "@z_1 => @z_2; @z_2 => @z_4; @z_4 => @z_5",
        ),
        (
            "packages on both sides of it",
            "@z_1:1 @z_2:2 @z_3:3 @pve:4 @z_5:5 @z_6:6 @z_7:7",
            "@z_1:1",
            &SnapshotFilter::prefix("z_"),
            "@z_1 => @z_3 (-I, 2 snapshots); @z_3 => @z_5; @z_5 => @z_7 (-I, 2 snapshots)",
        ),
        (
            "a bookmark base goes alone first",
            "#a:1 @b:2 @c:3 @d:4",
            "@a:1",
            &SnapshotFilter::all(),
            "#a => @b; @b => @d (-I, 2 snapshots)",
        ),
        (
            "initial all: full send, then one package",
            "@a:1 @b:2 @c:3",
            "",
            &SnapshotFilter::all(),
            "full send of @a; @a => @c (-I, 2 snapshots)",
        ),
    ];
    for (name, s, r, filter, want) in cases {
        let rcv = if r.is_empty() {
            ReceiverFs::default()
        } else {
            receiver(r)
        };
        let policy = Policy {
            initial_replication: InitialReplication::All,
            snapshots: (*filter).clone(),
            packages: true,
        };
        assert_eq!(
            show(&plan(&sender(s), &rcv, &policy).unwrap()),
            *want,
            "{name}"
        );
    }
    // A resumed transfer is finished alone; what follows is packaged.
    let r = ReceiverFs {
        exists: true,
        is_placeholder: false,
        versions: vs("@a:1"),
        resume_token: Some(token(2, Some(1))),
    };
    let policy = Policy {
        packages: true,
        ..Policy::default()
    };
    assert_eq!(
        show(&plan(&sender("@a:1 @b:2 @c:3 @d:4"), &r, &policy).unwrap()),
        "@a => @b (resuming); @b => @d (-I, 2 snapshots)"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn history() -> impl Strategy<Value = Vec<FilesystemVersion>> {
        proptest::collection::vec((any::<bool>(), 0u64..6), 0..30).prop_map(|items| {
            let mut out = Vec::new();
            for (i, (bm, guid_jitter)) in items.into_iter().enumerate() {
                let txg = i as u64 + 1;
                out.push(FilesystemVersion {
                    typ: if bm {
                        VersionType::Bookmark
                    } else {
                        VersionType::Snapshot
                    },
                    name: format!("v{txg}"),
                    guid: txg * 10 + guid_jitter % 2,
                    createtxg: txg,
                    creation: txg as i64,
                    userrefs: None,
                });
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the histories, a plan is a chain of sender versions ending at the newest
        /// sender snapshot, each step moving forward in txg; or an error, never a panic.
        #[test]
        fn plans_are_forward_chains(s in history(), cut in 0usize..30, extra in history()) {
            let mut r: Vec<FilesystemVersion> = s.iter().take(cut).cloned().collect();
            if cut % 3 == 0 {
                r.extend(extra.into_iter().map(|mut v| { v.guid += 1_000_000; v.createtxg += 100; v }));
            }
            let sfs = SenderFs { is_placeholder: false, versions: s.clone() };
            let rfs = ReceiverFs { exists: true, is_placeholder: false, versions: r, resume_token: None };
            for pol in [InitialReplication::MostRecent, InitialReplication::All] {
                if let Ok(steps) = plan(&sfs, &rfs, &Policy { initial_replication: pol, ..Policy::default() }) {
                    for w in steps.windows(2) {
                        prop_assert_eq!(w[0].to.guid, w[1].from.as_ref().unwrap().guid);
                    }
                    for st in &steps {
                        prop_assert_eq!(st.to.typ, VersionType::Snapshot);
                        prop_assert!(s.contains(&st.to));
                        if let Some(f) = &st.from {
                            prop_assert!(f.createtxg < st.to.createtxg);
                            prop_assert!(s.contains(f));
                        }
                    }
                    if let Some(last) = steps.last() {
                        let newest = s.iter().filter(|v| v.typ == VersionType::Snapshot).max_by_key(|v| v.createtxg).unwrap();
                        prop_assert_eq!(last.to.guid, newest.guid);
                    }
                }
            }
        }

        /// With a snapshot filter: the plan sends exactly the selected sender snapshots newer
        /// than the common base, oldest first, one stream each, and never a foreign one.
        #[test]
        fn filtered_plans_send_exactly_the_selected(
            items in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..40),
            replicated in 0usize..40,
            all in any::<bool>(),
        ) {
            let s: Vec<FilesystemVersion> = items.iter().enumerate().map(|(i, (selected, bm))| {
                let txg = i as u64 + 1;
                FilesystemVersion {
                    typ: if *bm && i > 0 { VersionType::Bookmark } else { VersionType::Snapshot },
                    name: format!("{}{txg}", if *selected { "zrepl_" } else { "pve_" }),
                    guid: txg,
                    createtxg: txg,
                    creation: txg as i64,
                    userrefs: None,
                }
            }).collect();
            let selected = |v: &&FilesystemVersion| v.typ == VersionType::Snapshot && v.name.starts_with("zrepl_");
            // The receiver got the selected snapshots up to some point.
            let r: Vec<FilesystemVersion> = s.iter().filter(selected).take(replicated).cloned().collect();
            let policy = Policy {
                initial_replication: if all { InitialReplication::All } else { InitialReplication::MostRecent },
                snapshots: zrepl_filters::SnapshotFilter::prefix("zrepl_"),
                packages: false,
            };
            let sfs = SenderFs { is_placeholder: false, versions: s.clone() };
            let rfs = ReceiverFs { exists: !r.is_empty(), is_placeholder: false, versions: r.clone(), resume_token: None };
            let wanted: Vec<u64> = match r.last() {
                Some(base) => s.iter().filter(selected).filter(|v| v.createtxg > base.createtxg).map(|v| v.guid).collect(),
                None if all => s.iter().filter(selected).map(|v| v.guid).collect(),
                None => s.iter().rfind(selected).map(|v| v.guid).into_iter().collect(),
            };
            match plan(&sfs, &rfs, &policy) {
                Ok(steps) => {
                    let got: Vec<u64> = steps.iter().map(|st| st.to.guid).collect();
                    prop_assert_eq!(&got, &wanted);
                    for w in steps.windows(2) {
                        prop_assert_eq!(w[0].to.guid, w[1].from.as_ref().unwrap().guid);
                    }
                    if let (Some(first), Some(base)) = (steps.first(), r.last()) {
                        prop_assert_eq!(first.from.as_ref().map(|f| f.guid), Some(base.guid));
                    }
                }
                Err(e) => {
                    prop_assert!(wanted.is_empty() && r.is_empty(), "{}", e);
                    prop_assert!(matches!(e, PlanError::Conflict(Conflict::NoSelectedSnapshots { .. })), "{}", e);
                }
            }
        }

        /// Packages carry exactly the snapshots the single steps would, in order, each from a
        /// snapshot base and with no unselected sender snapshot inside; and no two neighbouring
        /// packages could have been one (the fewest streams).
        #[test]
        fn packages_carry_exactly_the_single_steps(
            items in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..40),
            replicated in 0usize..40,
        ) {
            let s: Vec<FilesystemVersion> = items.iter().enumerate().map(|(i, (selected, bm))| {
                let txg = i as u64 + 1;
                FilesystemVersion {
                    typ: if *bm && i > 0 { VersionType::Bookmark } else { VersionType::Snapshot },
                    name: format!("{}{txg}", if *selected { "zrepl_" } else { "pve_" }),
                    guid: txg,
                    createtxg: txg,
                    creation: txg as i64,
                    userrefs: None,
                }
            }).collect();
            let r: Vec<FilesystemVersion> = s.iter()
                .filter(|v| v.typ == VersionType::Snapshot && v.name.starts_with("zrepl_"))
                .take(replicated).cloned().collect();
            let sfs = SenderFs { is_placeholder: false, versions: s.clone() };
            let rfs = ReceiverFs { exists: !r.is_empty(), is_placeholder: false, versions: r, resume_token: None };
            let single = Policy {
                initial_replication: InitialReplication::All,
                snapshots: zrepl_filters::SnapshotFilter::prefix("zrepl_"),
                packages: false,
            };
            let packed = Policy { packages: true, ..single.clone() };
            let (Ok(a), Ok(b)) = (plan(&sfs, &rfs, &single), plan(&sfs, &rfs, &packed)) else {
                return Ok(());
            };
            let flat: Vec<u64> = b.iter().flat_map(|st| st.intermediates.iter().chain([&st.to]).map(|v| v.guid)).collect();
            let single_tos: Vec<u64> = a.iter().map(|st| st.to.guid).collect();
            prop_assert_eq!(flat, single_tos);
            for st in &b {
                if st.intermediates.is_empty() { continue; }
                let from = st.from.as_ref().unwrap();
                prop_assert_eq!(from.typ, VersionType::Snapshot);
                for v in s.iter().filter(|v| v.typ == VersionType::Snapshot && v.createtxg > from.createtxg && v.createtxg < st.to.createtxg) {
                    prop_assert!(v.name.starts_with("zrepl_"), "{} inside a package", v.name);
                }
            }
            for w in b.windows(2) {
                let merged_ok = w[0].from.as_ref().is_some_and(|f| f.typ == VersionType::Snapshot)
                    && !s.iter().any(|v| v.typ == VersionType::Snapshot && !v.name.starts_with("zrepl_")
                        && v.createtxg > w[0].from.as_ref().unwrap().createtxg && v.createtxg < w[1].to.createtxg);
                prop_assert!(!merged_ok, "{} and {} could be one package", w[0], w[1]);
            }
        }
    }
}
