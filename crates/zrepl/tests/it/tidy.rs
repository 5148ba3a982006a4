//! The architecture's machine-checkable invariants (ARCHITECTURE.md, "Checked by tidy"), in the
//! spirit of rust-analyzer's tidy tests: the crate tiers, pure crates that touch no clock, file,
//! process, socket or environment, and `anyhow` only in the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Each workspace crate's tier: a crate may depend only on crates of a lower tier.
const TIERS: &[(&str, u8)] = &[
    ("zrepl-zfs-types", 0),
    ("zrepl-failpoint", 0),
    ("zrepl-status", 0),
    ("zrepl-filters", 1),
    ("zrepl-planner", 2),
    ("zrepl-pruning", 1),
    ("zrepl-config", 2),
    ("zrepl-protocol", 2),
    ("zrepl-zfs", 2),
    ("zrepl-endpoint", 3),
    ("zrepl-replication", 3),
    ("zrepl-rpc", 3),
    ("zrepl-transport", 3),
    ("zrepl-logging", 3),
    ("zrepl-tui", 3),
    ("zrepl-daemon", 4),
    ("zrepl-platformtest", 5),
    ("zrepl", 5),
];

/// Pure crates: decisions only, everything they need is a parameter.
const PURE: &[&str] = &[
    "zrepl-zfs-types",
    "zrepl-filters",
    "zrepl-config",
    "zrepl-planner",
    "zrepl-pruning",
    "zrepl-status",
];

/// What a pure crate's source must not contain: clocks, files, processes, sockets, the
/// environment, an async runtime.
const IMPURE: &[&str] = &[
    "::now(",
    "std::fs",
    "std::process",
    "std::env::",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "UnixStream",
    "tokio",
    "Command::new",
];

/// Crates a pure crate must not depend on.
const IMPURE_DEPS: &[&str] = &["tokio", "libc", "rustix", "nix", "hyper", "libloading"];

/// The `[dependencies]` names of a Cargo.toml (normal dependencies only).
fn dependencies(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_deps = l == "[dependencies]";
            continue;
        }
        if in_deps && !l.is_empty() && !l.starts_with('#') {
            if let Some(name) = l.split(['=', '.', ' ']).next() {
                out.push(name.trim().to_string());
            }
        }
    }
    out
}

fn manifests() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(crates_dir()).unwrap() {
        let dir = e.unwrap().path();
        let m = dir.join("Cargo.toml");
        if m.exists() {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, std::fs::read_to_string(m).unwrap());
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_crate_has_a_tier_and_depends_only_downwards() {
    let tiers: BTreeMap<&str, u8> = TIERS.iter().copied().collect();
    let mut problems = Vec::new();
    for (name, manifest) in manifests() {
        let Some(mine) = tiers.get(name.as_str()) else {
            problems.push(format!(
                "{name} has no tier in tidy.rs (and ARCHITECTURE.md)"
            ));
            continue;
        };
        for dep in dependencies(&manifest) {
            if let Some(theirs) = tiers.get(dep.as_str()) {
                if theirs >= mine {
                    problems.push(format!(
                        "{name} (tier {mine}) depends on {dep} (tier {theirs})"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn pure_crates_stay_pure() {
    let manifests = manifests();
    let mut problems = Vec::new();
    for name in PURE {
        for dep in dependencies(&manifests[*name]) {
            if IMPURE_DEPS.contains(&dep.as_str()) {
                problems.push(format!("{name} depends on {dep}"));
            }
        }
        let dir = crates_dir().join(name).join("src");
        problems.extend(lines_containing(&dir, IMPURE));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Where `path` (a file or a directory of sources) has a line whose code contains one of `bad`.
fn lines_containing(path: &Path, bad: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    if path.is_dir() {
        rust_files(path, &mut files);
    } else {
        files.push(path.to_path_buf());
    }
    assert!(!files.is_empty(), "{} has no sources", path.display());
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for b in bad {
                if code.contains(b) {
                    problems.push(format!("{}:{}: {b}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    problems
}

/// Pure modules inside adapter crates: the decisions of a round (plan, then apply). Besides
/// what a pure crate must not do, they do no async work, hold no lock and reach no failpoint:
/// everything is a parameter, the result is a value.
const PURE_MODULES: &[&str] = &[
    "zrepl-endpoint/src/plan",
    "zrepl-replication/src/converge.rs",
];

#[test]
fn pure_modules_stay_pure() {
    let mut bad: Vec<&str> = IMPURE.to_vec();
    bad.extend([".await", "async ", "Mutex", "zrepl_failpoint", "Registry"]);
    let mut problems = Vec::new();
    for m in PURE_MODULES {
        problems.extend(lines_containing(&crates_dir().join(m), &bad));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn anyhow_only_in_the_binary() {
    let mut problems = Vec::new();
    for (name, manifest) in manifests() {
        if name != "zrepl"
            && manifest
                .lines()
                .any(|l| l.trim_start().starts_with("anyhow"))
        {
            problems.push(format!("{name} uses anyhow (libraries use thiserror)"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The rule behind `dependencies`: the table above must see the real dependencies.
#[test]
fn the_dependency_reader_reads_dependencies() {
    let m = "[package]\nname = \"x\"\n[dependencies]\nzrepl-a.workspace = true\nfoo = \"1\"\n# c\nbar = { version = \"1\" }\n[dev-dependencies]\nbaz = \"1\"\n";
    assert_eq!(dependencies(m), ["zrepl-a", "foo", "bar"]);
}
