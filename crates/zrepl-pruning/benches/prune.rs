//! Pruning decisions for 100,000 snapshots with zrepl's typical rule set.
//!
//! Prints the time and the ratio against a baseline measured in the same run (matching every
//! snapshot name against the rules' regexes once, the least any implementation must do).
//! `cargo bench -p zrepl-pruning --bench prune`.

use std::time::Instant;

use zrepl_pruning::{decide, Bucket, Context, Rule, Snapshot};

fn main() {
    let n = 100_000u64;
    let snaps: Vec<Snapshot> = (0..n)
        .map(|i| Snapshot {
            name: format!("zrepl_{i:08}"),
            guid: i * 31 + 7,
            createtxg: i + 1,
            creation: i as i64 * 600,
        })
        .collect();
    let re = regex::Regex::new("^zrepl_").unwrap();
    let mut buckets = vec![Bucket {
        length: 3600,
        keep: None,
    }];
    buckets.extend((0..24).map(|_| Bucket {
        length: 3600,
        keep: Some(1),
    }));
    buckets.extend((0..35).map(|_| Bucket {
        length: 86400,
        keep: Some(1),
    }));
    buckets.extend((0..6).map(|_| Bucket {
        length: 30 * 86400,
        keep: Some(1),
    }));
    let rules = vec![
        Rule::NotReplicated {
            keep_snapshot_at_cursor: true,
        },
        Rule::LastN {
            count: 10,
            regex: None,
        },
        Rule::Grid {
            buckets,
            regex: re.clone(),
            spec: "1x1h(keep=all) | 24x1h | 35x1d | 6x30d".into(),
        },
        Rule::Regex {
            regex: re.clone(),
            negate: true,
        },
    ];
    let ctx = Context {
        cursor_guid: Some(snaps[(n - 5) as usize].guid),
        sender_side: true,
        protected: vec![],
    };

    let t = Instant::now();
    let mut matched = 0usize;
    for _ in 0..3 {
        matched += snaps.iter().filter(|s| re.is_match(&s.name)).count();
    }
    let baseline = t.elapsed();

    let t = Instant::now();
    let d = decide(&snaps, &rules, &ctx);
    let took = t.elapsed();
    let destroyed = d.iter().filter(|x| x.destroy()).count();
    assert_eq!(matched, 3 * n as usize);
    println!(
        "decided {n} snapshots ({destroyed} to destroy) in {:.3} s; baseline (3 regex passes) {:.3} s; ratio {:.1}",
        took.as_secs_f64(),
        baseline.as_secs_f64(),
        took.as_secs_f64() / baseline.as_secs_f64()
    );
}
