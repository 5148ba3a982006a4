//! Throughput of the `zfs list -Hp` versions parser against a trivial baseline in the same run.
//!
//! Generates 1,000,000 lines shaped like `zfs list -H -p -o name,guid,createtxg,creation,userrefs
//! -r -t filesystem,volume,snapshot,bookmark -s createtxg` output of a busy zrepl host (2,000
//! filesystems, snapshots taken for all of them at once so lines of different filesystems
//! interleave, about one bookmark per ten snapshots), then times
//! * the baseline: splitting the text into lines and tab-separated fields, nothing else;
//! * `zrepl_zfs::parse::parse_versions_listing`.
//!
//! It prints lines/s of both and their ratio; no numbers are hard-coded. Run with
//! `cargo bench -p zrepl-zfs --bench parse_list`.

use std::hint::black_box;
use std::time::{Duration, Instant};

const LINES: usize = 1_000_000;
const FILESYSTEMS: usize = 2_000;
const ROUNDS: usize = 5;

/// Deterministic xorshift so every run parses the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn generate() -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::with_capacity(LINES * 90);
    let fs_name = |i: usize| {
        format!(
            "tank/hosts/host-{:03}/vm-{:02}/disk{}",
            i / 100,
            (i / 4) % 25,
            i % 4
        )
    };
    let mut lines = 0;
    let mut txg = 100u64;
    let mut creation = 1_700_000_000i64;
    for i in 0..FILESYSTEMS {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t-\n",
            fs_name(i),
            rng.next(),
            txg,
            creation
        ));
        txg += 1;
        lines += 1;
    }
    let mut round = 0u64;
    'outer: loop {
        round += 1;
        creation += 900;
        txg += 7;
        let stamp = format!(
            "zrepl_{}_{:06}_000",
            20240101 + round / 96,
            (round % 96) * 1500
        );
        for i in 0..FILESYSTEMS {
            if lines == LINES {
                break 'outer;
            }
            let guid = rng.next();
            let userrefs = u64::from(rng.next() % 10 == 0);
            out.push_str(&format!(
                "{}@{stamp}\t{guid}\t{txg}\t{creation}\t{userrefs}\n",
                fs_name(i)
            ));
            lines += 1;
            if round % 10 == 0 && lines < LINES {
                out.push_str(&format!(
                    "{}#zrepl_CURSOR_G_{guid:016x}_J_push\t{guid}\t{txg}\t{creation}\t-\n",
                    fs_name(i)
                ));
                lines += 1;
            }
        }
    }
    out
}

fn baseline(text: &str) -> usize {
    let mut fields = 0;
    for line in text.split('\n') {
        for f in line.split('\t') {
            fields += black_box(f).len() & 1;
        }
    }
    fields
}

fn best_of<T>(mut f: impl FnMut() -> T) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed());
    }
    best
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to configure here.
    let text = generate();
    let n = text.lines().count();
    assert_eq!(n, LINES);
    let parsed = zrepl_zfs::parse::parse_versions_listing(&text).expect("generated text parses");
    assert_eq!(parsed.len(), FILESYSTEMS);
    assert_eq!(
        parsed.values().map(Vec::len).sum::<usize>(),
        LINES - FILESYSTEMS
    );

    let base = best_of(|| baseline(&text));
    let parse = best_of(|| zrepl_zfs::parse::parse_versions_listing(&text).map(|m| m.len()));
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "input: {n} lines, {:.1} MiB, {FILESYSTEMS} filesystems; best of {ROUNDS} rounds",
        text.len() as f64 / (1 << 20) as f64
    );
    println!(
        "baseline (split lines and fields): {:>8.1} ms  {:>12.0} lines/s",
        base.as_secs_f64() * 1e3,
        rate(base)
    );
    println!(
        "parse_versions_listing:            {:>8.1} ms  {:>12.0} lines/s",
        parse.as_secs_f64() * 1e3,
        rate(parse)
    );
    println!(
        "ratio parse/baseline time: {:.2}x",
        parse.as_secs_f64() / base.as_secs_f64()
    );
}
