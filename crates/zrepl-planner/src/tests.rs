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
                if let Ok(steps) = plan(&sfs, &rfs, &Policy { initial_replication: pol }) {
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
    }
}
