use super::*;

const H: i64 = 3600;
const D: i64 = 86400;

fn snap(name: &str, txg: u64, creation: i64) -> Snapshot {
    Snapshot {
        name: name.into(),
        guid: txg * 7 + 1,
        createtxg: txg,
        creation,
    }
}

fn re(s: &str) -> regex::Regex {
    regex::Regex::new(s).unwrap()
}

/// Parses `1x1h(keep=all) | 24x1h` (test helper; the config crate owns the real parser).
fn grid_rule(spec: &str, regex: &str) -> Rule {
    let mut buckets = Vec::new();
    for part in spec.split('|') {
        let part = part.trim();
        let (n, rest) = part.split_once('x').unwrap();
        let (len, keep) = match rest.split_once('(') {
            Some((l, k)) => (l, Some(k.trim_end_matches(')').trim_start_matches("keep="))),
            None => (rest, None),
        };
        let unit = match &len[len.len() - 1..] {
            "s" => 1,
            "m" => 60,
            "h" => H,
            "d" => D,
            "w" => 7 * D,
            u => panic!("unit {u}"),
        };
        let length = len[..len.len() - 1].parse::<i64>().unwrap() * unit;
        let keep = match keep {
            None => Some(1),
            Some("all") => None,
            Some(k) => Some(k.parse().unwrap()),
        };
        for _ in 0..n.parse::<usize>().unwrap() {
            buckets.push(Bucket { length, keep });
        }
    }
    Rule::Grid {
        buckets,
        regex: re(regex),
        spec: spec.into(),
    }
}

fn destroyed(snaps: &[Snapshot], rules: &[Rule], ctx: &Context) -> Vec<String> {
    decide(snaps, rules, ctx)
        .into_iter()
        .filter(|d| d.destroy())
        .map(|d| d.snapshot.name)
        .collect()
}

/// Snapshots `a`, `b`, `c`, ... one hour apart, oldest first.
fn hourly(n: usize) -> Vec<Snapshot> {
    (0..n)
        .map(|i| {
            snap(
                &format!("zrepl_{}", (b'a' + i as u8) as char),
                i as u64 + 1,
                i as i64 * H,
            )
        })
        .collect()
}

#[test]
fn no_rules_destroys_nothing() {
    assert!(destroyed(&hourly(5), &[], &Context::default()).is_empty());
}

#[test]
fn single_rules_table() {
    let s = hourly(5); // a..e
    let ctx = Context::default();
    let cases: Vec<(&str, Rule, Vec<&str>)> = vec![
        (
            "last_n 2",
            Rule::LastN {
                count: 2,
                regex: None,
            },
            vec!["zrepl_a", "zrepl_b", "zrepl_c"],
        ),
        (
            "last_n more than exist",
            Rule::LastN {
                count: 10,
                regex: None,
            },
            vec![],
        ),
        (
            "last_n with regex: non-matching are not kept by it",
            Rule::LastN {
                count: 1,
                regex: Some(re("_[bcd]$")),
            },
            vec!["zrepl_a", "zrepl_b", "zrepl_c", "zrepl_e"],
        ),
        (
            "regex",
            Rule::Regex {
                regex: re("_[ae]$"),
                negate: false,
            },
            vec!["zrepl_b", "zrepl_c", "zrepl_d"],
        ),
        (
            "regex negate",
            Rule::Regex {
                regex: re("_[ae]$"),
                negate: true,
            },
            vec!["zrepl_a", "zrepl_e"],
        ),
        (
            "regex is unanchored",
            Rule::Regex {
                regex: re("repl"),
                negate: false,
            },
            vec![],
        ),
    ];
    for (name, rule, want) in cases {
        assert_eq!(destroyed(&s, &[rule], &ctx), want, "{name}");
    }
}

#[test]
fn last_n_orders_by_creation_then_name() {
    let s = vec![snap("b", 1, 100), snap("a", 2, 100), snap("c", 3, 50)];
    assert_eq!(
        destroyed(
            &s,
            &[Rule::LastN {
                count: 1,
                regex: None
            }],
            &Context::default()
        ),
        ["a", "c"]
    );
}

#[test]
fn not_replicated() {
    let s = hourly(5);
    let cursor = Some(s[2].guid); // zrepl_c
    let rule = |k| Rule::NotReplicated {
        keep_snapshot_at_cursor: k,
    };
    let sender = Context {
        cursor_guid: cursor,
        sender_side: true,
        ..Default::default()
    };
    let receiver = Context {
        cursor_guid: cursor,
        sender_side: false,
        ..Default::default()
    };
    assert_eq!(
        destroyed(&s, &[rule(true)], &sender),
        ["zrepl_a", "zrepl_b"]
    );
    assert_eq!(
        destroyed(&s, &[rule(false)], &sender),
        ["zrepl_a", "zrepl_b", "zrepl_c"]
    );
    // Only honoured on the sender.
    assert_eq!(
        destroyed(&s, &[rule(false)], &receiver),
        ["zrepl_a", "zrepl_b"]
    );
    // Cursor unknown or not on this side: nothing counts as replicated.
    assert!(destroyed(&s, &[rule(true)], &Context::default()).is_empty());
    let other = Context {
        cursor_guid: Some(999_999),
        sender_side: true,
        ..Default::default()
    };
    assert!(destroyed(&s, &[rule(true)], &other).is_empty());
}

#[test]
fn combination_keeps_if_any_rule_keeps_and_reports_reasons() {
    let s = hourly(5);
    let rules = [
        Rule::LastN {
            count: 1,
            regex: None,
        },
        Rule::Regex {
            regex: re("_a$"),
            negate: false,
        },
    ];
    let d = decide(&s, &rules, &Context::default());
    let names: Vec<&str> = d
        .iter()
        .filter(|d| d.destroy())
        .map(|d| d.snapshot.name.as_str())
        .collect();
    assert_eq!(names, ["zrepl_b", "zrepl_c", "zrepl_d"]);
    assert_eq!(
        d[0].kept_by[0].to_string(),
        "kept by rule #2 regex(\"_a$\")"
    );
    assert_eq!(
        d[4].kept_by[0].to_string(),
        "kept by rule #1 last_n(count=1)"
    );
}

#[test]
fn protected_snapshots_are_always_kept() {
    let s = hourly(3);
    let ctx = Context {
        protected: vec![(s[0].guid, "replication cursor".into())],
        ..Default::default()
    };
    assert_eq!(
        destroyed(
            &s,
            &[Rule::LastN {
                count: 1,
                regex: None
            }],
            &ctx
        ),
        ["zrepl_b"]
    );
}

#[test]
fn grid_buckets_and_edges() {
    // now = youngest matching = 10h. 1x1h(keep=all): ages [0,1h); 2x2h: [1h,3h), [3h,5h).
    let g = grid_rule("1x1h(keep=all) | 2x2h", "^s_");
    let s = vec![
        snap("s_10h", 10, 10 * H),          // age 0: bucket 0, keep=all
        snap("s_9h30", 9, 9 * H + 30 * 60), // age 30m: bucket 0
        snap("s_9h", 8, 9 * H),             // age 1h exactly: on the edge -> older bucket 1
        snap("s_8h", 7, 8 * H),             // age 2h: bucket 1 (keeps the oldest: s_8h)
        snap("s_7h", 6, 7 * H),             // age 3h exactly: bucket 2
        snap("s_5h30", 5, 5 * H + 30 * 60), // age 4h30: bucket 2, oldest -> kept
        snap("s_5h", 4, 5 * H),             // age 5h: beyond the last bucket
        snap("other", 3, 0),                // not matching the regex: not kept by grid
    ];
    assert_eq!(
        destroyed(&s, &[g], &Context::default()),
        ["s_9h", "s_7h", "s_5h", "other"]
    );
}

#[test]
fn grid_keep_n_keeps_the_oldest_n() {
    let g = grid_rule("1x1d(keep=2)", ".*");
    let s = hourly(5); // ages 4h..0h, all in the one bucket
    assert_eq!(
        destroyed(&s, &[g], &Context::default()),
        ["zrepl_c", "zrepl_d", "zrepl_e"]
    );
}

#[test]
fn grid_now_is_the_youngest_matching_snapshot_not_the_clock() {
    // Future-dated snapshots relative to any wall clock do not matter: the grid is anchored at
    // the youngest matching snapshot, so the result is the same however far in the future.
    let g = || grid_rule("1x1h(keep=all) | 1x1d", ".*");
    let base = hourly(30);
    let shifted: Vec<Snapshot> = base
        .iter()
        .map(|s| Snapshot {
            creation: s.creation + 1_000 * 365 * D,
            ..s.clone()
        })
        .collect();
    assert_eq!(
        destroyed(&base, &[g()], &Context::default()),
        destroyed(&shifted, &[g()], &Context::default())
    );
}

#[test]
fn zrepl_docs_example_fade_out() {
    // `1x1h(keep=all) | 24x1h | 14x1d` with snapshots every 15 minutes for 20 days.
    let g = grid_rule("1x1h(keep=all) | 24x1h | 14x1d", "^zrepl_");
    let n = 20 * 24 * 4;
    let s: Vec<Snapshot> = (0..n)
        .map(|i| snap(&format!("zrepl_{i:05}"), i as u64 + 1, i as i64 * 900))
        .collect();
    let d = decide(
        &s,
        &[
            g,
            Rule::Regex {
                regex: re("^zrepl_"),
                negate: true,
            },
        ],
        &Context::default(),
    );
    let kept: Vec<&Snapshot> = d
        .iter()
        .filter(|d| !d.destroy())
        .map(|d| &d.snapshot)
        .collect();
    let now = s.last().unwrap().creation;
    let last_hour = kept.iter().filter(|s| now - s.creation < H).count();
    assert_eq!(last_hour, 4, "keep=all in the first hour");
    let hourly = kept
        .iter()
        .filter(|s| (H..25 * H).contains(&(now - s.creation)))
        .count();
    assert_eq!(hourly, 24);
    let daily = kept
        .iter()
        .filter(|s| (25 * H..25 * H + 14 * D).contains(&(now - s.creation)))
        .count();
    assert_eq!(daily, 14);
    assert_eq!(kept.len(), 4 + 24 + 14);
}

#[test]
fn a_year_of_hourly_snapshots_replayed_with_an_injected_clock() {
    // Each hour: take a snapshot, then prune with the grid, as a snap job does.
    let spec = "1x1h(keep=all) | 24x1h | 30x1d | 6x30d";
    let mut live: Vec<Snapshot> = Vec::new();
    for hour in 0..365 * 24u64 {
        live.push(snap(&format!("zrepl_{hour:06}"), hour + 1, hour as i64 * H));
        let d = decide(&live, &[grid_rule(spec, "^zrepl_")], &Context::default());
        live = d
            .into_iter()
            .filter(|d| !d.destroy())
            .map(|d| d.snapshot)
            .collect();
    }
    let now = live.last().unwrap().creation;
    let Rule::Grid { buckets, .. } = grid_rule(spec, ".*") else {
        unreachable!()
    };
    let mut start = 0;
    let mut counts = Vec::new();
    for b in &buckets {
        let n = live
            .iter()
            .filter(|s| (start..start + b.length).contains(&(now - s.creation)))
            .count();
        counts.push(n);
        start += b.length;
    }
    // keep=all hour: the current snapshot; every other bucket exactly one survivor.
    assert_eq!(counts[0], 1);
    assert!(counts[1..].iter().all(|&c| c == 1), "{counts:?}");
    assert_eq!(live.len(), 1 + 24 + 30 + 6);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn history() -> impl Strategy<Value = Vec<Snapshot>> {
        proptest::collection::vec((0i64..200_000, any::<bool>()), 0..40).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (t, z))| {
                    snap(
                        &format!("{}_{i}", if z { "zrepl" } else { "manual" }),
                        i as u64 + 1,
                        t,
                    )
                })
                .collect()
        })
    }

    fn rules() -> impl Strategy<Value = Vec<Rule>> {
        let one = prop_oneof![
            (1u64..5).prop_map(|count| Rule::LastN { count, regex: None }),
            (1u64..5).prop_map(|count| Rule::LastN {
                count,
                regex: Some(re("^zrepl_"))
            }),
            any::<bool>().prop_map(|negate| Rule::Regex {
                regex: re("^zrepl_"),
                negate
            }),
            any::<bool>().prop_map(|k| Rule::NotReplicated {
                keep_snapshot_at_cursor: k
            }),
            Just(grid_rule("1x1h(keep=all) | 6x1h | 3x1d(keep=2)", "^zrepl_")),
        ];
        proptest::collection::vec(one, 0..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn pruning_is_safe(snaps in history(), rules in rules(), cursor in 0usize..40, held in 0usize..40) {
            let cursor_guid = snaps.get(cursor).map(|s| s.guid);
            let mut protected = Vec::new();
            if let Some(g) = cursor_guid { protected.push((g, "replication cursor".to_string())); }
            if let Some(s) = snaps.get(held) { protected.push((s.guid, "step hold".to_string())); }
            let ctx = Context { cursor_guid, sender_side: true, protected: protected.clone() };
            let d = decide(&snaps, &rules, &ctx);
            prop_assert_eq!(d.len(), snaps.len());
            let destroyed: Vec<&Snapshot> = d.iter().filter(|x| x.destroy()).map(|x| &x.snapshot).collect();
            // A subset of the input.
            for s in &destroyed { prop_assert!(snaps.contains(s)); }
            // Nothing any single rule keeps is destroyed.
            for r in &rules {
                let kept_by_r = decide(&snaps, std::slice::from_ref(r), &Context { protected: vec![], ..ctx.clone() });
                for k in kept_by_r.iter().filter(|k| !k.destroy()) {
                    prop_assert!(!destroyed.contains(&&k.snapshot), "{} kept by {} but destroyed", k.snapshot.name, r);
                }
            }
            // Never a protected snapshot; no rules, nothing destroyed.
            for (g, _) in &protected { prop_assert!(!destroyed.iter().any(|s| s.guid == *g)); }
            if rules.is_empty() { prop_assert!(destroyed.is_empty()); }
        }
    }
}
