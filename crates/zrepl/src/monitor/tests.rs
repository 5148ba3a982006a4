use super::*;

const NOW: i64 = 1_800_000_000;
const H: i64 = 3600;

fn p(s: &str) -> DatasetPath {
    DatasetPath::parse(s).unwrap()
}

fn snap(name: &str, txg: u64, creation: i64) -> FilesystemVersion {
    FilesystemVersion {
        typ: VersionType::Snapshot,
        name: name.into(),
        guid: txg * 1000,
        createtxg: txg,
        creation,
        userrefs: Some(0),
    }
}

fn bookmark(name: &str, guid: u64, txg: u64, creation: i64) -> FilesystemVersion {
    FilesystemVersion {
        typ: VersionType::Bookmark,
        name: name.into(),
        guid,
        createtxg: txg,
        creation,
        userrefs: None,
    }
}

fn newest(name: &str, creation: i64) -> Observation {
    Observation::Newest {
        name: name.into(),
        creation,
    }
}

fn check(w: Option<i64>, c: Option<i64>) -> Check<'static> {
    Check {
        name: "SNAPSHOTS",
        what: "newest snapshot",
        thresholds: Thresholds::new(w, c).unwrap(),
    }
}

#[test]
fn state_table() {
    type Case = (
        Option<i64>,
        Option<i64>,
        Vec<(&'static str, Observation)>,
        State,
    );
    let cases: Vec<Case> = vec![
        (Some(H), Some(2 * H), vec![], State::Critical),
        (
            Some(H),
            Some(2 * H),
            vec![("a", Observation::Missing(String::new()))],
            State::Critical,
        ),
        (
            Some(H),
            Some(2 * H),
            vec![("a", newest("@s", NOW - 10))],
            State::Ok,
        ),
        // Exactly at a threshold is still within it.
        (
            Some(H),
            Some(2 * H),
            vec![("a", newest("@s", NOW - H))],
            State::Ok,
        ),
        (
            Some(H),
            Some(2 * H),
            vec![("a", newest("@s", NOW - H - 1))],
            State::Warning,
        ),
        (
            Some(H),
            Some(2 * H),
            vec![("a", newest("@s", NOW - 2 * H))],
            State::Warning,
        ),
        (
            Some(H),
            Some(2 * H),
            vec![("a", newest("@s", NOW - 2 * H - 1))],
            State::Critical,
        ),
        // Only a critical threshold: never WARNING.
        (
            None,
            Some(2 * H),
            vec![("a", newest("@s", NOW - 2 * H + 1))],
            State::Ok,
        ),
        (
            None,
            Some(2 * H),
            vec![("a", newest("@s", NOW - 3 * H))],
            State::Critical,
        ),
        // Only a warning threshold: never CRITICAL by age.
        (
            Some(H),
            None,
            vec![("a", newest("@s", NOW - 100 * H))],
            State::Warning,
        ),
        // A snapshot from the future (clock skew) has age 0.
        (
            Some(H),
            Some(2 * H),
            vec![("a", newest("@s", NOW + 5 * H))],
            State::Ok,
        ),
        // The worst filesystem decides.
        (
            Some(H),
            Some(2 * H),
            vec![
                ("a", newest("@s", NOW)),
                ("b", newest("@s", NOW - 90 * 60)),
                ("c", newest("@s", NOW)),
            ],
            State::Warning,
        ),
        (
            Some(H),
            Some(2 * H),
            vec![
                ("a", newest("@s", NOW - 90 * 60)),
                ("b", Observation::Missing("no snapshot".into())),
            ],
            State::Critical,
        ),
    ];
    for (i, (w, c, items, want)) in cases.iter().enumerate() {
        let items: Vec<(String, Observation)> = items
            .iter()
            .map(|(l, o)| (l.to_string(), o.clone()))
            .collect();
        let r = evaluate(&check(*w, *c), NOW, &items);
        assert_eq!(r.state, *want, "case {i}:\n{}", r.text);
        assert!(
            r.text
                .starts_with(&format!("ZREPL SNAPSHOTS {} - ", want.as_str())),
            "case {i}: {}",
            r.text
        );
    }
}

#[test]
fn exit_codes_are_nagios() {
    let codes: Vec<u8> = [State::Ok, State::Warning, State::Critical, State::Unknown]
        .iter()
        .map(|s| s.code())
        .collect();
    assert_eq!(codes, [0, 1, 2, 3]);
}

#[test]
fn output_has_status_line_details_and_perfdata() {
    let items = vec![
        ("pool/ok".to_string(), newest("@zrepl_1", NOW - 300)),
        (
            "pool/old one".to_string(),
            newest("@zrepl_0", NOW - 3 * H - 120),
        ),
        (
            "pool/none".to_string(),
            Observation::Missing("no snapshot with prefix \"zrepl_\"".into()),
        ),
    ];
    let r = evaluate(&check(Some(H), Some(2 * H)), NOW, &items);
    assert_eq!(r.state, State::Critical);
    assert_eq!(
        r.text,
        "ZREPL SNAPSHOTS CRITICAL - 2 critical of 3 filesystems: pool/none: no snapshot with prefix \"zrepl_\"\n\
         CRITICAL: pool/none: no snapshot with prefix \"zrepl_\"\n\
         CRITICAL: pool/old one: newest snapshot @zrepl_0 is 3h2m old\n\
         OK: pool/ok: newest snapshot @zrepl_1 is 5m old\n\
         | 'pool/none'=U;3600;7200;0\n'pool/old one'=10920s;3600;7200;0\n'pool/ok'=300s;3600;7200;0\n"
    );
    let ok = evaluate(&check(None, Some(2 * H)), NOW, &items[..1]);
    assert_eq!(
        ok.text,
        "ZREPL SNAPSHOTS OK - 1 filesystem ok, max age 5m\n\
         OK: pool/ok: newest snapshot @zrepl_1 is 5m old\n\
         | 'pool/ok'=300s;;7200;0\n"
    );
}

#[test]
fn thresholds_and_durations() {
    assert!(Thresholds::new(None, None).is_err());
    assert!(Thresholds::new(Some(2 * H), Some(H)).is_err());
    assert!(Thresholds::new(Some(H), Some(H)).is_err());
    assert!(Thresholds::new(Some(H), Some(H + 1)).is_ok());
    assert_eq!(parse_threshold("90m"), Ok(90 * 60));
    assert_eq!(parse_threshold("2d"), Ok(48 * H));
    assert_eq!(parse_threshold("1w"), Ok(7 * 24 * H));
    assert_eq!(parse_threshold("1h30m"), Ok(90 * 60));
    assert!(parse_threshold("0s").is_err());
    assert!(parse_threshold("-5m").is_err());
    assert!(parse_threshold("soon").is_err());
    assert!(parse_threshold("10").is_err());
    assert_eq!(age(59), "59s");
    assert_eq!(age(60), "1m");
    assert_eq!(age(2 * H), "2h");
    assert_eq!(age(2 * H + 60), "2h1m");
    assert_eq!(age(49 * H + 59), "2d1h");
    assert_eq!(age(48 * H), "2d");
}

#[test]
fn snapshot_items_pick_the_newest_matching_by_txg() {
    let listing: VersionsByFilesystem = [
        (
            p("pool/a"),
            vec![
                snap("zrepl_1", 10, NOW - 2 * H),
                // Newer by txg although its creation time is older (clock set back).
                snap("zrepl_2", 20, NOW - 3 * H),
                snap("manual", 30, NOW),
                bookmark("zrepl_3", 1, 40, NOW),
            ],
        ),
        (p("pool/b"), vec![snap("other", 5, NOW)]),
    ]
    .into_iter()
    .collect();
    let fss = [p("pool/a"), p("pool/b"), p("pool/c")];
    let m = SnapshotMatcher {
        prefix: Some("zrepl_".into()),
        regex: None,
    };
    assert_eq!(
        snapshot_items(&fss, &listing, &m),
        vec![
            ("pool/a".to_string(), newest("@zrepl_2", NOW - 3 * H)),
            (
                "pool/b".to_string(),
                Observation::Missing("no snapshot with prefix \"zrepl_\"".into())
            ),
            (
                "pool/c".to_string(),
                Observation::Missing("no snapshot with prefix \"zrepl_\"".into())
            ),
        ]
    );
    let any = SnapshotMatcher::default();
    assert_eq!(
        snapshot_items(&fss[..1], &listing, &any),
        vec![("pool/a".to_string(), newest("@manual", NOW))]
    );
    let re = SnapshotMatcher {
        prefix: None,
        regex: Some(Regex::new("^zrepl_1$").unwrap()),
    };
    assert_eq!(
        snapshot_items(&fss[..1], &listing, &re),
        vec![("pool/a".to_string(), newest("@zrepl_1", NOW - 2 * H))]
    );
}

#[test]
fn sender_lag_follows_the_jobs_cursor() {
    let cursor =
        |guid: u64, job: &str| zrepl_zfs_types::abstraction::cursor_bookmark_name(guid, job);
    let listing: VersionsByFilesystem = [
        (
            p("pool/a"),
            vec![
                snap("zrepl_1", 10, NOW - 5 * H),
                bookmark(&cursor(10_000, "push"), 10_000, 10, NOW - 5 * H),
                snap("zrepl_2", 20, NOW - H),
                // Another job's cursor is newer: not ours.
                bookmark(&cursor(20_000, "other"), 20_000, 20, NOW - H),
            ],
        ),
        (
            p("pool/b"),
            // The cursor's snapshot was pruned: named after the bookmark.
            vec![bookmark(&cursor(7, "push"), 7, 3, NOW - 2 * H)],
        ),
        (p("pool/c"), vec![snap("zrepl_1", 10, NOW)]),
    ]
    .into_iter()
    .collect();
    let items = sender_lag_items("push", &[p("pool/a"), p("pool/b"), p("pool/c")], &listing);
    assert_eq!(
        items,
        vec![
            ("pool/a".to_string(), newest("@zrepl_1", NOW - 5 * H)),
            (
                "pool/b".to_string(),
                newest(&format!("#{}", cursor(7, "push")), NOW - 2 * H)
            ),
            (
                "pool/c".to_string(),
                Observation::Missing(
                    "never replicated (no replication cursor of job \"push\")".into()
                )
            ),
        ]
    );
}

#[test]
fn receiver_lag_skips_root_placeholders_and_containers() {
    let listing: VersionsByFilesystem = [
        (p("backup"), vec![]),
        (p("backup/sink"), vec![]),
        (p("backup/sink/host"), vec![]),
        (
            p("backup/sink/host/pool"),
            vec![snap("zrepl_2", 20, NOW - H)],
        ),
        (
            p("backup/sink/host/pool/data"),
            vec![
                snap("zrepl_1", 10, NOW - 2 * H),
                snap("zrepl_2", 20, NOW - H),
            ],
        ),
        (p("backup/sink/host/pool/empty"), vec![]),
        (p("backup/sink2"), vec![snap("x", 1, NOW)]),
    ]
    .into_iter()
    .collect();
    let items = receiver_lag_items(&p("backup/sink"), &listing, &[p("backup/sink/host")]);
    assert_eq!(
        items,
        vec![
            (
                "backup/sink/host/pool".to_string(),
                newest("@zrepl_2", NOW - H)
            ),
            (
                "backup/sink/host/pool/data".to_string(),
                newest("@zrepl_2", NOW - H)
            ),
            (
                "backup/sink/host/pool/empty".to_string(),
                Observation::Missing("no snapshot received yet".into())
            ),
        ]
    );
}

#[test]
fn alive_table() {
    // Read typed and leniently, as `zrepl monitor alive` reads the daemon's answer: a state this
    // version does not know (a newer daemon's) reads as `unknown`, a missing one too.
    let st: zrepl_status::DaemonStatus = serde_json::from_value(serde_json::json!({"jobs": {
        "ok": {"state": "idle", "error": null, "snapshotting": {"state": "waiting", "error": null}},
        "failing": {"state": "idle", "error": "replication failed: boom\nsecond line"},
        "snapfail": {"state": "idle", "error": null, "snapshotting": {"error": "snapshot failed"}},
        "broken": {"state": "error", "error": "cannot start"},
        "newer": {"state": "paused", "error": null, "added_later": [1, 2]},
    }}))
    .expect("lenient parse");
    type Case<'a> = (
        Result<&'a zrepl_status::DaemonStatus, &'a str>,
        Option<&'a str>,
        State,
        &'a str,
    );
    let cases: &[Case] = &[
        (Ok(&st), None, State::Ok, "ZREPL ALIVE OK - daemon answers, 5 jobs\n"),
        (Ok(&st), Some("newer"), State::Ok, "ZREPL ALIVE OK - job \"newer\" is unknown\n"),
        (Ok(&st), Some("ok"), State::Ok, "ZREPL ALIVE OK - job \"ok\" is idle\n"),
        (
            Ok(&st),
            Some("failing"),
            State::Warning,
            "ZREPL ALIVE WARNING - job \"failing\" is idle: job error: replication failed: boom second line\njob error: replication failed: boom\nsecond line\n",
        ),
        (
            Ok(&st),
            Some("snapfail"),
            State::Warning,
            "ZREPL ALIVE WARNING - job \"snapfail\" is idle: snapshotting error: snapshot failed\n",
        ),
        (
            Ok(&st),
            Some("broken"),
            State::Critical,
            "ZREPL ALIVE CRITICAL - job \"broken\" is error: job error: cannot start\n",
        ),
        (
            Ok(&st),
            Some("gone"),
            State::Critical,
            "ZREPL ALIVE CRITICAL - the daemon runs no job \"gone\" (restart it after a config change)\n",
        ),
        (
            Err("connection refused"),
            None,
            State::Critical,
            "ZREPL ALIVE CRITICAL - daemon does not answer: connection refused\n",
        ),
    ];
    for (status, job, want, text) in cases {
        let r = alive(*status, *job);
        assert_eq!((r.state, r.text.as_str()), (*want, *text), "{job:?}");
    }
    assert_eq!(
        Report::unknown("SNAPSHOTS", "bad | arg\nx"),
        Report {
            state: State::Unknown,
            text: "ZREPL SNAPSHOTS UNKNOWN - bad / arg x\n".into()
        }
    );
}
