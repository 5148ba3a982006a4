//! Planning benchmark: 10,000 filesystems with 100 versions on each side (receiver 1 behind).
//!
//! Prints the time for planning everything and the ratio against a baseline measured in the same
//! run: cloning and sorting the same version lists, the least any planner has to do. Run with
//! `cargo bench -p zrepl-planner --bench plan`.

use std::time::Instant;

use zrepl_planner::{plan, Policy, ReceiverFs, SenderFs};
use zrepl_zfs_types::{FilesystemVersion, VersionType};

fn main() {
    let fs_count = 10_000;
    let versions = 100;
    let mut work = Vec::with_capacity(fs_count);
    for f in 0..fs_count as u64 {
        let mk = |i: u64, typ| FilesystemVersion {
            typ,
            name: format!("zrepl_{i:08}"),
            guid: f * 1_000_000 + i,
            createtxg: i + 1,
            creation: i as i64 * 600,
            userrefs: Some(0),
        };
        let mut s: Vec<FilesystemVersion> = (0..versions)
            .map(|i| mk(i, VersionType::Snapshot))
            .collect();
        s.reverse(); // not pre-sorted
        let r: Vec<FilesystemVersion> = (0..versions - 1)
            .map(|i| mk(i, VersionType::Snapshot))
            .collect();
        work.push((
            SenderFs {
                is_placeholder: false,
                versions: s,
            },
            ReceiverFs {
                exists: true,
                is_placeholder: false,
                versions: r,
                resume_token: None,
            },
        ));
    }

    let t = Instant::now();
    let mut sorted = 0usize;
    for (s, r) in &work {
        let mut a = s.versions.clone();
        let mut b = r.versions.clone();
        a.sort_by_key(FilesystemVersion::order_key);
        b.sort_by_key(FilesystemVersion::order_key);
        sorted += a.len() + b.len();
    }
    let baseline = t.elapsed();

    let t = Instant::now();
    let mut steps = 0usize;
    for (s, r) in &work {
        steps += plan(s, r, &Policy::default()).expect("plannable").len();
    }
    let planning = t.elapsed();

    assert_eq!(steps, fs_count);
    assert_eq!(sorted, fs_count * (2 * versions as usize - 1));
    println!(
        "planned {fs_count} filesystems x {versions} versions in {:.3} s ({:.1} us/fs); \
         baseline (clone+sort only) {:.3} s; ratio plan/baseline = {:.2}",
        planning.as_secs_f64(),
        planning.as_secs_f64() * 1e6 / fs_count as f64,
        baseline.as_secs_f64(),
        planning.as_secs_f64() / baseline.as_secs_f64()
    );
}
