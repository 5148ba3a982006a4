//! Integration tests of config loading: zrepl's sample configs, a table of malformed configs with
//! the exact position of each error, includes, and the resolved-config round trip.

use std::path::{Path, PathBuf};

use zrepl_config::{load, load_str, Config, MemLoader, SourceLoader};

/// The file system (the binary has its own; the config crate touches no file).
struct FsLoader;

impl SourceLoader for FsLoader {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn is_dir(&self, path: &Path) -> std::io::Result<bool> {
        std::fs::metadata(path).map(|m| m.is_dir())
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }
}

/// zrepl's own samples live in the shared folder beside the repository.
fn samples_dir() -> PathBuf {
    if let Ok(d) = std::env::var("ZREPL_SAMPLES_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/zrepl-samples")
}

fn sample_files() -> Vec<PathBuf> {
    let dir = samples_dir();
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "zrepl samples not found at {} ({e}); set ZREPL_SAMPLES_DIR",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_valid_sample_is_accepted() {
    let files = sample_files();
    assert!(
        files.len() >= 18,
        "expected zrepl's sample set, found {} files",
        files.len()
    );
    for f in files {
        if let Err(e) = load(&f, &FsLoader) {
            panic!("{} rejected:\n{e}", f.display());
        }
    }
}

#[test]
fn every_invalid_sample_is_rejected_naming_its_problem() {
    let dir = samples_dir().join("invalid");
    let cases = [
        ("duplicate_job_names", "duplicate job name \"my_job\""),
        (
            "duplicate_job_names_with_include",
            "duplicate job name \"my_job\"",
        ),
        ("internal_job_name", "reserved for internal use"),
    ];
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found,
        cases.map(|c| c.0.to_string()),
        "the invalid sample set changed: add the new case here"
    );
    for (case, want) in cases {
        let f = dir.join(case).join("zrepl.yml");
        match load(&f, &FsLoader) {
            Ok(_) => panic!("{case} accepted"),
            Err(e) => assert!(e.to_string().contains(want), "{case}: {e}"),
        }
    }
}

#[test]
fn samples_have_expected_shapes() {
    let cfg = load(&samples_dir().join("push.yml"), &FsLoader)
        .unwrap()
        .config;
    let zrepl_config::Job::Push(p) = &cfg.jobs[0] else {
        panic!()
    };
    assert_eq!(p.name, "push");
    assert!(p.filesystems.accepts(&"tank/x".parse().unwrap()));
    assert!(!p.filesystems.accepts(&"tmp".parse().unwrap()));
    assert_eq!(p.pruning.keep_sender.len(), 3);
    let zrepl_config::KeepRule::Grid { grid, .. } = &p.pruning.keep_sender[2] else {
        panic!()
    };
    assert_eq!(grid.buckets().count(), 1 + 24 + 14);

    let cfg = load(&samples_dir().join("include_directory.yml"), &FsLoader)
        .unwrap()
        .config;
    assert_eq!(cfg.jobs.len(), 1);
    assert_eq!(cfg.jobs[0].name(), "snapjob");

    let cfg = load(&samples_dir().join("bandwidth_limit.yml"), &FsLoader)
        .unwrap()
        .config;
    let zrepl_config::Job::Push(p) = &cfg.jobs[1] else {
        panic!()
    };
    assert_eq!(p.send.bandwidth_limit.max.bytes(), 54321.0);
    assert_eq!(p.send.bandwidth_limit.bucket_capacity.bytes(), 1024.0);

    let cfg = load(&samples_dir().join("empty.yml"), &FsLoader)
        .unwrap()
        .config;
    assert!(cfg.jobs.is_empty());
    assert_eq!(cfg.global.control.sockpath, "/var/run/zrepl/control");
}

/// Every sample's resolved form, printed as JSON and as YAML, loads back to the same config.
#[test]
fn resolved_config_round_trips() {
    for f in sample_files() {
        let a = load(&f, &FsLoader).unwrap().config;
        let json = serde_json::to_string_pretty(&zrepl_config::emit::to_json_value(&a)).unwrap();
        let b = reload(&json);
        assert_eq!(a, b, "{} via json:\n{json}", f.display());
        let yaml = zrepl_config::emit::to_yaml_string(&zrepl_config::emit::to_json_value(&a));
        let c = reload(&yaml);
        assert_eq!(a, c, "{} via yaml:\n{yaml}", f.display());
    }
}

/// The extensions of issue 19 (session hooks, backpressure) print back to the same config.
#[test]
fn session_hooks_and_backpressure_round_trip() {
    let src = format!(
        "{}{}",
        PUSH_BP.replace("BP", "{max_lag: 2d, action: warn}"),
        SOURCE_HOOKS
            .replace("HOOK", "{path: /pre, args: [a], env: {E: v}, err_is_fatal: true, timeout: 0s}")
            .replace("jobs:\n", "")
            .replace("snapshotting: {type: manual}", "snapshotting: {type: periodic, prefix: z_, interval: 1h, backpressure: {max_lag: 90m}}")
    );
    let a = reload(&src);
    let json = serde_json::to_string_pretty(&zrepl_config::emit::to_json_value(&a)).unwrap();
    assert_eq!(a, reload(&json), "via json:\n{json}");
    let yaml = zrepl_config::emit::to_yaml_string(&zrepl_config::emit::to_json_value(&a));
    assert_eq!(a, reload(&yaml), "via yaml:\n{yaml}");
    assert!(
        json.contains("\"max_lag\": \"2d\"") && json.contains("\"action\": \"warn\""),
        "{json}"
    );
}

/// `replication.snapshots`, `replication.prefix` and `pruning.scope` (issue 18's extensions)
/// load as written and print back to the same config.
#[test]
fn snapshot_selection_and_pruning_scope() {
    let src = PUSH_BP
        .replace("    backpressure: BP\n", "")
        .replace("    keep_receiver", "    scope: own\n    keep_receiver")
        + "  replication:\n    snapshots:\n      include: [{prefix: z_}, {regex: \"^manual-\"}]\n      exclude: [{regex: _tmp$}]\n";
    let a = reload(&src);
    let zrepl_config::Job::Push(p) = &a.jobs[0] else {
        panic!()
    };
    let f = &p.replication.snapshots;
    assert!(f.selects("z_1") && f.selects("manual-x") && !f.selects("z_tmp") && !f.selects("pve"));
    assert_eq!(p.pruning.scope, zrepl_config::PruningScope::Own);
    let json = serde_json::to_string_pretty(&zrepl_config::emit::to_json_value(&a)).unwrap();
    assert_eq!(a, reload(&json), "via json:\n{json}");
    let yaml = zrepl_config::emit::to_yaml_string(&zrepl_config::emit::to_json_value(&a));
    assert_eq!(a, reload(&yaml), "via yaml:\n{yaml}");

    // dsh2dsh's shorthand, and scope: selected on a pull job.
    let pull = "jobs:\n- name: pl\n  type: pull\n  connect: {type: tcp, address: \"h:1\"}\n  root_fs: pool/b\n  interval: 10m\n  pruning:\n    scope: selected\n    keep_sender: [{type: last_n, count: 1}]\n    keep_receiver: [{type: last_n, count: 1}]\n  replication: {prefix: zrepl_}\n";
    let b = reload(pull);
    let zrepl_config::Job::Pull(p) = &b.jobs[0] else {
        panic!()
    };
    assert_eq!(
        p.replication.snapshots,
        zrepl_filters::SnapshotFilter::prefix("zrepl_")
    );
    assert_eq!(p.pruning.scope, zrepl_config::PruningScope::Selected);
    let e = load_str(
        &pull.replace("scope: selected", "scope: own"),
        Path::new("/x.yml"),
        &MemLoader::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("a pull job makes no snapshots"),
        "{e}"
    );

    // zrepl 0.7 configs keep zrepl's meaning.
    let c = reload(&PUSH_BP.replace("    backpressure: BP\n", ""));
    let zrepl_config::Job::Push(p) = &c.jobs[0] else {
        panic!()
    };
    assert!(p.replication.snapshots.is_all());
    assert_eq!(p.pruning.scope, zrepl_config::PruningScope::All);
}

/// `configcheck`'s advice: keep rules of scope all that destroy foreign snapshots are named;
/// scope own, or a negated regex rule keeping what the job did not make, silences it.
#[test]
fn lint_names_rules_that_destroy_foreign_snapshots() {
    let base = PUSH_BP.replace("    backpressure: BP\n", "");
    let w = zrepl_config::lint::foreign_pruning(&reload(&base));
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("job \"p\": pruning.keep_sender destroys every snapshot no rule keeps"),
        "{w:?}"
    );
    assert!(
        w[0].contains("snapshots matching prefix \"z_\" are its own"),
        "{w:?}"
    );
    let scoped = base.replace("    keep_receiver", "    scope: own\n    keep_receiver");
    assert!(zrepl_config::lint::foreign_pruning(&reload(&scoped)).is_empty());
    let spared = base.replace(
        "keep_sender: [{type: last_n, count: 1}]",
        "keep_sender: [{type: last_n, count: 1}, {type: regex, negate: true, regex: \"^z_\"}]",
    );
    let w = zrepl_config::lint::foreign_pruning(&reload(&spared));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("pruning.keep_receiver"), "{w:?}");
    // Manual snapshotting, no selection: nothing is known to be the job's own.
    let manual = push_with(TCP, "");
    assert!(zrepl_config::lint::foreign_pruning(&reload(&manual)).is_empty());
}

/// `mapping` (issue 18 item 3): a 1:1 mirror below root_fs, loaded and printed back; a local
/// sink without the identity component refuses two connecting identities.
#[test]
fn mapping_round_trips_and_local_identities_are_counted() {
    let sink = sink_with(
        TCP_SERVE,
        "  mapping: {identity_component: false, strip_prefix: tank/data}\n",
    );
    let a = reload(&sink);
    let zrepl_config::Job::Sink(j) = &a.jobs[0] else {
        panic!()
    };
    assert!(!j.mapping.identity_component);
    assert_eq!(
        j.mapping
            .strip_prefix
            .as_ref()
            .map(|p| p.to_string())
            .as_deref(),
        Some("tank/data")
    );
    let json = serde_json::to_string_pretty(&zrepl_config::emit::to_json_value(&a)).unwrap();
    assert_eq!(a, reload(&json), "via json:\n{json}");
    let yaml = zrepl_config::emit::to_yaml_string(&zrepl_config::emit::to_json_value(&a));
    assert_eq!(a, reload(&yaml), "via yaml:\n{yaml}");

    let local = |ids: &[&str]| {
        let mut s = "jobs:\n- name: s\n  type: sink\n  root_fs: pool/sink\n  mapping: {identity_component: false}\n  serve: {type: local, listener_name: l}\n".to_string();
        for (i, id) in ids.iter().enumerate() {
            s += &format!("- name: p{i}\n  type: push\n  connect: {{type: local, listener_name: l, client_identity: {id}}}\n  filesystems: {{\"<\": true}}\n  snapshotting: {{type: manual}}\n  pruning:\n    keep_sender: [{{type: last_n, count: 1}}]\n    keep_receiver: [{{type: last_n, count: 1}}]\n");
        }
        s
    };
    reload(&local(&["a"]));
    reload(&local(&["a", "a"]));
    let e = load_str(
        &local(&["a", "b"]),
        Path::new("/x.yml"),
        &MemLoader::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("push jobs connect to local listener \"l\" as a, b"),
        "{e}"
    );
}

fn reload(src: &str) -> Config {
    match load_str(src, Path::new("/resolved.yml"), &MemLoader::default()) {
        Ok(l) => l.config,
        Err(e) => panic!("resolved config rejected: {e}\n{src}"),
    }
}

#[test]
fn includes_resolve_relative_to_main_file_and_do_not_nest() {
    let mut l = MemLoader::default();
    l.files.insert(
        "/etc/zrepl/zrepl.yml".into(),
        "include:\n  - jobs.d\n  - ./extra.yml\n".into(),
    );
    l.files
        .insert("/etc/zrepl/jobs.d/b.yml".into(), SNAP.replace("NAME", "b"));
    l.files
        .insert("/etc/zrepl/jobs.d/a.yml".into(), SNAP.replace("NAME", "a"));
    l.files
        .insert("/etc/zrepl/jobs.d/ignored.yaml".into(), "garbage: [".into());
    l.files
        .insert("/etc/zrepl/extra.yml".into(), SNAP.replace("NAME", "c"));
    let cfg = zrepl_config::load(Path::new("/etc/zrepl/zrepl.yml"), &l).unwrap();
    let names: Vec<&str> = cfg.config.jobs.iter().map(|j| j.name()).collect();
    assert_eq!(names, ["a", "b", "c"]);

    l.files.insert(
        "/etc/zrepl/extra.yml".into(),
        format!("{}include: [x.yml]\n", SNAP.replace("NAME", "c")),
    );
    let e = zrepl_config::load(Path::new("/etc/zrepl/zrepl.yml"), &l)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/etc/zrepl/extra.yml:") && e.contains("must not contain include"),
        "{e}"
    );

    l.files.insert(
        "/etc/zrepl/zrepl.yml".into(),
        "include: [missing.yml, notyml.txt]\n".into(),
    );
    let e = zrepl_config::load(Path::new("/etc/zrepl/zrepl.yml"), &l).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    assert!(e.0[0].message.contains("/etc/zrepl/missing.yml"), "{e}");

    // Duplicate across files: reported in the included file, naming the first definition.
    l.files.insert(
        "/etc/zrepl/zrepl.yml".into(),
        format!("{}include: [extra.yml]\n", SNAP.replace("NAME", "c")),
    );
    l.files
        .insert("/etc/zrepl/extra.yml".into(), SNAP.replace("NAME", "c"));
    let e = zrepl_config::load(Path::new("/etc/zrepl/zrepl.yml"), &l).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].file, PathBuf::from("/etc/zrepl/extra.yml"));
    assert!(
        e.0[0]
            .message
            .contains("first defined at /etc/zrepl/zrepl.yml:2:"),
        "{e}"
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let src = "jobs:\n- name: _bad\n  type: snap\n  filesystems: {\"a<b\": true}\n  snapshotting: {type: periodic, prefix: p, interval: 10}\n  pruning: {keep: [{type: last_n, count: 0}]}\n  extra: 1\n";
    let e = load_str(src, Path::new("/x.yml"), &MemLoader::default()).unwrap_err();
    assert_eq!(e.0.len(), 5, "{e}");
}

const SNAP: &str = "jobs:\n- name: NAME\n  type: snap\n  filesystems: {\"tank<\": true}\n  snapshotting: {type: manual}\n  pruning:\n    keep:\n    - type: last_n\n      count: 1\n";

/// A malformed config: the error must be at `line`, in the column where `at` starts on that line,
/// and its message must contain `msg`.
struct Bad {
    name: &'static str,
    src: String,
    line: usize,
    at: &'static str,
    msg: &'static str,
}

fn bad(
    name: &'static str,
    src: impl Into<String>,
    line: usize,
    at: &'static str,
    msg: &'static str,
) -> Bad {
    Bad {
        name,
        src: src.into(),
        line,
        at,
        msg,
    }
}

fn snap_with(snapshotting: &str, keep: &str) -> String {
    format!(
        "jobs:\n- name: j\n  type: snap\n  filesystems: {{\"tank<\": true}}\n  snapshotting:\n{snapshotting}  pruning:\n    keep:\n{keep}"
    )
}

const KEEP1: &str = "    - type: last_n\n      count: 1\n";
const MANUAL: &str = "    type: manual\n";

fn push_with(connect: &str, extra: &str) -> String {
    format!(
        "jobs:\n- name: p\n  type: push\n  connect:\n{connect}  filesystems: {{\"<\": true}}\n  snapshotting: {{type: manual}}\n  pruning:\n    keep_sender: [{{type: last_n, count: 1}}]\n    keep_receiver: [{{type: last_n, count: 1}}]\n{extra}"
    )
}

const TCP: &str = "    type: tcp\n    address: \"h:1\"\n";

fn sink_with(serve: &str, extra: &str) -> String {
    format!("jobs:\n- name: s\n  type: sink\n  root_fs: pool/sink\n  serve:\n{serve}{extra}")
}

/// A push job with periodic snapshotting whose `backpressure` (line 10) is `BP`.
const PUSH_BP: &str = "jobs:\n- name: p\n  type: push\n  connect: {type: tcp, address: \"h:1\"}\n  filesystems: {\"<\": true}\n  snapshotting:\n    type: periodic\n    prefix: z_\n    interval: 10m\n    backpressure: BP\n  pruning:\n    keep_sender: [{type: last_n, count: 1}]\n    keep_receiver: [{type: last_n, count: 1}]\n";

const TCP_SERVE: &str = "    type: tcp\n    listen: \":1\"\n    clients: {\"10.0.0.1\": c}\n";

/// A source job whose pre hook (line 12) is `HOOK`.
const SOURCE_HOOKS: &str = "jobs:\n- name: src\n  type: source\n  serve:\n    type: tcp\n    listen: \":1\"\n    clients: {\"10.0.0.1\": c}\n  filesystems: {\"<\": true}\n  snapshotting: {type: manual}\n  hooks:\n    post: {path: /post}\n    pre: HOOK\n";

fn global(g: &str) -> String {
    format!("global:\n{g}")
}

fn cases() -> Vec<Bad> {
    vec![
        bad("unknown top-level key", format!("foo: 1\n{SNAP}").replace("NAME", "j"), 1, "foo", "unknown field \"foo\""),
        bad("unknown job key", format!("{}  bogus: 1\n", SNAP.replace("NAME", "j")), 10, "bogus", "unknown field \"bogus\" (expected one of: type, name"),
        bad("missing job name", SNAP.replace("- name: NAME\n  type: snap\n", "- type: snap\n"), 2, "type", "field \"name\" is required but not given"),
        bad("missing job type", SNAP.replace("  type: snap\n", ""), 2, "name", "must specify type"),
        bad("invalid job type", SNAP.replace("NAME", "j").replace("type: snap", "type: snip"), 3, "snip", "invalid type name \"snip\""),
        bad("job name with slash", SNAP.replace("NAME", "'a/b'"), 2, "'a/b'", "invalid job name"),
        bad("reserved job name", SNAP.replace("NAME", "_x"), 2, "_x", "reserved for internal use"),
        bad("job name with @", SNAP.replace("NAME", "'a@b'"), 2, "'a@b'", "invalid job name"),
        bad("empty job name", SNAP.replace("NAME", "''"), 2, "''", "job name must not be empty"),
        bad("job name too long", SNAP.replace("NAME", &"n".repeat(210)), 2, "nnn", "too long"),
        bad("duplicate job names", format!("{}{}", SNAP.replace("NAME", "j"), SNAP.replace("NAME", "j").replace("jobs:\n", "")), 10, "j", "duplicate job name \"j\""),
        bad("duplicate key", SNAP.replace("NAME", "j").replace("  type: snap\n", "  type: snap\n  type: snap\n"), 4, "type", "duplicate key \"type\""),
        bad("jobs is a map", "jobs:\n  a: 1\n", 2, "a", "expected a list of jobs"),
        bad("yaml syntax error", "jobs: [\n", 2, "", "YAML syntax error"),
        bad("not_replicated in snap job", snap_with(MANUAL, "    - type: not_replicated\n"), 9, "- type", "single-site pruner cannot support not_replicated"),
        bad("empty keep list", snap_with(MANUAL, "    []\n").replace("    keep:\n    []", "    keep: []"), 8, "[]", "keep rule list must not be empty"),
        bad("last_n count zero", snap_with(MANUAL, "    - type: last_n\n      count: 0\n"), 10, "0", "count must be positive"),
        bad("last_n count not a number", snap_with(MANUAL, "    - type: last_n\n      count: ten\n"), 10, "ten", "expected an integer"),
        bad("last_n bad regex", snap_with(MANUAL, "    - type: last_n\n      count: 1\n      regex: \"(\"\n"), 11, "\"(\"", "invalid regular expression"),
        bad("grid syntax", snap_with(MANUAL, "    - type: grid\n      grid: 1x\n      regex: .*\n"), 10, "1x", "invalid grid specification"),
        bad("grid keep=0", snap_with(MANUAL, "    - type: grid\n      grid: 1x1h(keep=0)\n      regex: .*\n"), 10, "1x1h", "keep=0 is not allowed"),
        bad("grid decreasing", snap_with(MANUAL, "    - type: grid\n      grid: 1x1d | 1x1h\n      regex: .*\n"), 10, "1x1d", "shorter than"),
        bad("grid missing regex", snap_with(MANUAL, "    - type: grid\n      grid: 1x1h\n"), 9, "type", "field \"regex\" is required but not given"),
        bad("grid empty regex", snap_with(MANUAL, "    - type: grid\n      grid: 1x1h\n      regex: \"\"\n"), 11, "\"\"", "zero value"),
        bad("regex rule without regex", snap_with(MANUAL, "    - type: regex\n      negate: true\n"), 9, "type", "field \"regex\" is required"),
        bad("negate not bool", snap_with(MANUAL, "    - type: regex\n      regex: x\n      negate: maybe\n"), 11, "maybe", "expected true or false"),
        bad("unknown keep rule", snap_with(MANUAL, "    - type: keep_all\n"), 9, "keep_all", "invalid type name \"keep_all\""),
        bad("interval without unit", snap_with("    type: periodic\n    prefix: z_\n    interval: 10\n", KEEP1), 8, "10", "missing unit"),
        bad("interval zero", snap_with("    type: periodic\n    prefix: z_\n    interval: 0s\n", KEEP1), 8, "0s", "must be positive"),
        bad("interval compound", snap_with("    type: periodic\n    prefix: z_\n    interval: 1h30m\n", KEEP1), 8, "1h30m", "compound"),
        bad("periodic without prefix", snap_with("    type: periodic\n    interval: 10m\n", KEEP1), 6, "type", "field \"prefix\" is required"),
        bad("prefix with slash", snap_with("    type: periodic\n    prefix: a/b\n    interval: 10m\n", KEEP1), 7, "a/b", "invalid snapshot prefix"),
        bad("dense outside UTC", snap_with("    type: periodic\n    prefix: z_\n    interval: 10m\n    timestamp_format: dense\n    timestamp_location: Europe/Berlin\n", KEEP1), 9, "dense", "requires UTC"),
        bad("unknown time zone", snap_with("    type: periodic\n    prefix: z_\n    interval: 10m\n    timestamp_location: Mars/Base\n", KEEP1), 9, "Mars", "unknown time zone"),
        bad("plus in custom format", snap_with("    type: periodic\n    prefix: z_\n    interval: 10m\n    timestamp_format: 2006+01\n", KEEP1), 9, "2006", "must not contain '+'"),
        bad("cron four fields", snap_with("    type: cron\n    prefix: z_\n    cron: \"*/5 * * *\"\n", KEEP1), 8, "\"", "expected 5 fields"),
        bad("cron descriptor", snap_with("    type: cron\n    prefix: z_\n    cron: \"@daily\"\n", KEEP1), 8, "\"", "descriptors"),
        bad("cron out of range", snap_with("    type: cron\n    prefix: z_\n    cron: \"61 * * * *\"\n", KEEP1), 8, "\"", "out of range"),
        bad("written_threshold negative", snap_with("    type: periodic\n    prefix: z_\n    interval: 10m\n    written_threshold: -1\n", KEEP1), 9, "-1", "invalid written_threshold"),
        bad("written_threshold without number", snap_with("    type: cron\n    prefix: z_\n    cron: \"* * * * *\"\n    written_threshold: MiB\n", KEEP1), 9, "MiB", "invalid written_threshold"),
        bad("written_threshold is a list", snap_with("    type: periodic\n    prefix: z_\n    interval: 10m\n    written_threshold: [1]\n", KEEP1), 9, "[", "expected a string"),
        bad("written_threshold on manual", snap_with("    type: manual\n    written_threshold: 1\n", KEEP1), 7, "written_threshold", "unknown field \"written_threshold\""),
        bad("backpressure on snap job", snap_with("    type: periodic\n    prefix: z_\n    interval: 10m\n    backpressure: {max_lag: 1h}\n", KEEP1), 9, "{max_lag", "backpressure is not available on snap jobs"),
        bad("backpressure max_lag without unit", PUSH_BP.replace("BP", "{max_lag: 10}"), 10, "10}", "missing unit"),
        bad("backpressure max_lag zero", PUSH_BP.replace("BP", "{max_lag: 0s}"), 10, "0s}", "must be positive"),
        bad("backpressure without max_lag", PUSH_BP.replace("BP", "{action: warn}"), 10, "{action", "field \"max_lag\" is required"),
        bad("backpressure bad action", PUSH_BP.replace("BP", "{max_lag: 1h, action: stop}"), 10, "stop}", "invalid backpressure action \"stop\" (expected one of: skip, warn)"),
        bad("backpressure unknown key", PUSH_BP.replace("BP", "{max_lag: 1h, lag: 1h}"), 10, "lag: 1h}", "unknown field \"lag\""),
        bad("backpressure with guarantee_nothing", format!("{}  replication:\n    protection: {{initial: guarantee_nothing, incremental: guarantee_nothing}}\n", PUSH_BP.replace("BP", "{max_lag: 1h}")), 2, "name", "guarantee_nothing does not keep"),
        bad("sink hook relative path", sink_with(TCP_SERVE, "  hooks:\n    pre: {path: bin/pre}\n"), 10, "bin/pre", "must be absolute"),
        bad("source hook unknown key", SOURCE_HOOKS.replace("HOOK", "{path: /p, shell: true}"), 12, "shell", "unknown field \"shell\""),
        bad("manual with prefix", snap_with("    type: manual\n    prefix: z_\n", KEEP1), 7, "prefix", "unknown field \"prefix\""),
        bad("snapshotting without type", snap_with("    prefix: z_\n", KEEP1), 6, "prefix", "must specify type"),
        bad("filter misplaced wildcard", SNAP.replace("NAME", "j").replace("\"tank<\"", "\"tank<x\""), 4, "\"tank<x\"", "'<' may appear only once"),
        bad("filter value not bool", SNAP.replace("NAME", "j").replace("true}", "sure}"), 4, "sure", "expected true or false"),
        bad("filter empty", SNAP.replace("NAME", "j").replace("{\"tank<\": true}", "{}"), 4, "{}", "filter must not be empty"),
        bad("filter with snapshot", SNAP.replace("NAME", "j").replace("\"tank<\"", "\"tank@x\""), 4, "\"tank@x\"", "invalid dataset path"),
        bad("filter is a list", SNAP.replace("NAME", "j").replace("{\"tank<\": true}", "[tank]"), 4, "[", "expected a map"),
        bad("push without connect", push_with(TCP, "").replace("  connect:\n    type: tcp\n    address: \"h:1\"\n", ""), 2, "name", "field \"connect\" is required"),
        bad("tcp connect without address", push_with("    type: tcp\n", ""), 5, "type", "field \"address\" is required"),
        bad("address without port", push_with("    type: tcp\n    address: host\n", ""), 6, "host", "invalid address"),
        bad("dial_timeout without unit", push_with(&format!("{TCP}    dial_timeout: 10\n"), ""), 7, "10", "missing unit"),
        bad("dial_timeout in days", push_with(&format!("{TCP}    dial_timeout: 1d\n"), ""), 7, "1d", "unknown unit \"d\""),
        bad("tls without server_cn", push_with("    type: tls\n    address: \"h:1\"\n    ca: a\n    cert: b\n    key: c\n", ""), 5, "type", "field \"server_cn\" is required"),
        bad("ssh port zero", push_with("    type: ssh+stdinserver\n    host: h\n    user: u\n    port: 0\n    identity_file: /i\n", ""), 8, "0", "out of range"),
        bad("ssh port not a number", push_with("    type: ssh+stdinserver\n    host: h\n    user: u\n    port: ssh\n    identity_file: /i\n", ""), 8, "ssh", "expected an integer"),
        bad("local client_identity with slash", push_with("    type: local\n    listener_name: l\n    client_identity: a/b\n", ""), 7, "a/b", "invalid client identity"),
        bad("recv options in push job", push_with(TCP, "  recv: {}\n"), 12, "recv", "unknown field \"recv\""),
        bad("push without keep_receiver", push_with(TCP, "").replace("    keep_receiver: [{type: last_n, count: 1}]\n", ""), 10, "keep_sender", "field \"keep_receiver\" is required"),
        bad("encrypted not bool", push_with(TCP, "  send:\n    encrypted: yesplease\n"), 13, "yesplease", "expected true or false"),
        bad("bandwidth without unit", push_with(TCP, "  send:\n    bandwidth_limit:\n      max: 12345\n"), 14, "12345", "invalid data size"),
        bad("bandwidth below one byte", push_with(TCP, "  send:\n    bandwidth_limit:\n      max: 0.5 B\n"), 14, "0.5", "at least 1 byte"),
        bad("bucket capacity zero", push_with(TCP, "  send:\n    bandwidth_limit:\n      bucket_capacity: 0 B\n"), 14, "0 B", "at least 1 byte"),
        bad("protection level unknown", push_with(TCP, "  replication:\n    protection:\n      initial: guarantee_all\n"), 14, "guarantee_all", "invalid protection level"),
        bad("concurrency zero", push_with(TCP, "  replication:\n    concurrency:\n      steps: 0\n"), 14, "0", "must be between 1 and"),
        bad("initial replication policy unknown", push_with(TCP, "  conflict_resolution:\n    initial_replication: newest\n"), 13, "newest", "invalid initial_replication policy"),
        bad("sink without root_fs", sink_with("    type: local\n    listener_name: l\n", "").replace("  root_fs: pool/sink\n", ""), 2, "name", "field \"root_fs\" is required"),
        bad("root_fs trailing slash", sink_with("    type: local\n    listener_name: l\n", "").replace("pool/sink", "pool/"), 4, "pool/", "invalid dataset path"),
        bad("cidr client without star", sink_with("    type: tcp\n    listen: \":1\"\n    clients: {\"10.0.0.0/8\": \"c\"}\n", ""), 8, "\"10.0.0.0/8\"", "exactly one '*'"),
        bad("client key not an ip", sink_with("    type: tcp\n    listen: \":1\"\n    clients: {\"host\": \"c\"}\n", ""), 8, "\"host\"", "invalid client address"),
        bad("client_cns empty", sink_with("    type: tls\n    listen: \":1\"\n    ca: a\n    cert: b\n    key: c\n    client_cns: []\n", ""), 11, "[]", "at least one"),
        bad("stdinserver bad identity", sink_with("    type: stdinserver\n    client_identities: [\"a/b\"]\n", ""), 7, "\"a/b\"", "invalid client identity"),
        bad("recv inherit bad property", sink_with("    type: local\n    listener_name: l\n", "  recv:\n    properties:\n      inherit: [\"-foo\"]\n"), 10, "\"-foo\"", "invalid ZFS property name"),
        bad("placeholder encryption unknown", sink_with("    type: local\n    listener_name: l\n", "  recv:\n    placeholder:\n      encryption: maybe\n"), 10, "maybe", "invalid placeholder encryption"),
        bad("pull interval garbage", "jobs:\n- name: p\n  type: pull\n  connect: {type: tcp, address: \"h:1\"}\n  root_fs: pool/p\n  interval: manualx\n  pruning: {keep_sender: [{type: last_n, count: 1}], keep_receiver: [{type: last_n, count: 1}]}\n", 6, "manualx", "invalid duration"),
        bad("pull without interval", "jobs:\n- name: p\n  type: pull\n  connect: {type: tcp, address: \"h:1\"}\n  root_fs: pool/p\n  pruning: {keep_sender: [{type: last_n, count: 1}], keep_receiver: [{type: last_n, count: 1}]}\n", 2, "name", "field \"interval\" is required"),
        bad("outlet without level", global("  logging:\n  - type: stdout\n    format: human\n"), 3, "type", "field \"level\" is required"),
        bad("outlet level unknown", global("  logging:\n  - type: stdout\n    level: verbose\n    format: human\n"), 4, "verbose", "invalid log level"),
        bad("outlet format unknown", global("  logging:\n  - type: stdout\n    level: info\n    format: xml\n"), 5, "xml", "invalid log format"),
        bad("two stdout outlets", global("  logging:\n  - {type: stdout, level: info, format: human}\n  - {type: stdout, level: info, format: json}\n"), 3, "-", "at most one stdout"),
        bad("syslog facility unknown", global("  logging:\n  - type: syslog\n    level: info\n    format: human\n    facility: local9\n"), 6, "local9", "invalid syslog facility"),
        bad("syslog retry zero", global("  logging:\n  - type: syslog\n    level: info\n    format: human\n    retry_interval: 0s\n"), 6, "0s", "must be positive"),
        bad("tcp outlet without address", global("  logging:\n  - type: tcp\n    level: info\n    format: json\n"), 3, "type", "field \"address\" is required"),
        bad("monitoring without port", global("  monitoring:\n  - type: prometheus\n    listen: localhost\n"), 4, "localhost", "invalid address"),
        bad("two monitoring endpoints", global("  monitoring:\n  - {type: prometheus, listen: \":1\"}\n  - {type: prometheus, listen: \":2\"}\n"), 3, "-", "at most one prometheus"),
        bad("empty control sockpath", global("  control:\n    sockpath: ''\n"), 3, "''", "must not be empty"),
        bad("hook without path", snap_with("    type: periodic\n    prefix: z_\n    interval: 10m\n    hooks:\n    - type: command\n", KEEP1), 10, "type", "field \"path\" is required"),
        bad("hook timeout without unit", snap_with("    type: periodic\n    prefix: z_\n    interval: 10m\n    hooks:\n    - type: command\n      path: /x\n      timeout: 30\n", KEEP1), 12, "30", "missing unit"),
        bad("postgres hook without filesystems", snap_with("    type: periodic\n    prefix: z_\n    interval: 10m\n    hooks:\n    - type: postgres-checkpoint\n      dsn: host=x\n", KEEP1), 10, "type", "field \"filesystems\" is required"),
        bad("hook type unknown", snap_with("    type: periodic\n    prefix: z_\n    interval: 10m\n    hooks:\n    - type: webhook\n", KEEP1), 10, "webhook", "invalid type name \"webhook\""),
        bad("stall_timeout negative", push_with(TCP, "  replication:\n    stall_timeout: -5s\n"), 13, "-5s", "must not be negative"),
        bad("stall_timeout without unit", push_with(TCP, "  replication:\n    stall_timeout: 600\n"), 13, "600", "missing unit"),
        bad("command_timeout negative", global("  zfs:\n    command_timeout: -1m\n"), 3, "-1m", "must not be negative"),
        bad("unknown key in global.zfs", global("  zfs:\n    binary: /sbin/zfs\n"), 3, "binary", "unknown field \"binary\""),
        bad("push interval without unit", push_with(TCP, "  interval: 10\n"), 12, "10", "missing unit"),
        bad("push interval zero", push_with(TCP, "  interval: 0s\n"), 12, "0s", "must be positive"),
        bad("push cron invalid", push_with(TCP, "  cron: \"61 * * * *\"\n"), 12, "\"", "out of range"),
        bad("pull cron invalid", "jobs:\n- name: p\n  type: pull\n  connect: {type: tcp, address: \"h:1\"}\n  root_fs: pool/p\n  cron: \"* * *\"\n  pruning: {keep_sender: [{type: last_n, count: 1}], keep_receiver: [{type: last_n, count: 1}]}\n", 6, "\"", "expected 5 fields"),
        bad("replication hook relative path", push_with(TCP, "  hooks:\n    pre: {path: hook.sh}\n"), 13, "hook.sh", "must be absolute"),
        bad("replication hook bad env name", push_with(TCP, "  hooks:\n    post: {path: /h, env: {\"A-B\": x}}\n"), 13, "\"A-B\"", "invalid environment variable name"),
        bad("replication hook unknown edge", push_with(TCP, "  hooks:\n    during: {path: /h}\n"), 13, "during", "unknown field \"during\""),
        bad("include is not a list", "include: x.yml\n", 1, "x.yml", "expected a list of paths"),
        bad("global is a list", "global: []\n", 1, "[]", "expected a map"),
        bad("replication prefix and snapshots", push_with(TCP, "  replication:\n    prefix: z_\n    snapshots: {include: [{prefix: z_}]}\n"), 13, "prefix", "replication.prefix is a shorthand for replication.snapshots"),
        bad("snapshot pattern with prefix and regex", push_with(TCP, "  replication:\n    snapshots:\n      include: [{prefix: a, regex: b}]\n"), 14, "{prefix", "a snapshot pattern is {prefix"),
        bad("snapshot pattern without either", push_with(TCP, "  replication:\n    snapshots:\n      include: [{}]\n"), 14, "{}", "a snapshot pattern is {prefix"),
        bad("empty replication prefix", push_with(TCP, "  replication: {prefix: \"\"}\n"), 12, "\"\"", "invalid snapshot name prefix"),
        bad("snapshot prefix with @", push_with(TCP, "  replication:\n    snapshots: {exclude: [{prefix: \"a@b\"}]}\n"), 13, "\"a@b\"", "invalid snapshot name prefix"),
        bad("bad snapshot regex", push_with(TCP, "  replication:\n    snapshots: {include: [{regex: \"(\"}]}\n"), 13, "\"(\"", "invalid regular expression"),
        bad("unknown snapshots key", push_with(TCP, "  replication:\n    snapshots: {only: [{regex: a}]}\n"), 13, "only", "unknown field \"only\""),
        bad("scope selected without a filter", push_with(TCP, "").replace("    keep_receiver", "    scope: selected\n    keep_receiver"), 2, "name", "scope: selected needs replication.snapshots"),
        bad("scope own with manual snapshotting", push_with(TCP, "").replace("    keep_receiver", "    scope: own\n    keep_receiver"), 2, "name", "manual snapshotting has none"),
        bad("scope selected in a snap job", format!("{}    scope: selected\n", snap_with(MANUAL, KEEP1)), 2, "name", "a snap job prunes by its own prefix"),
        bad("unknown pruning scope", format!("{}    scope: mine\n", snap_with(MANUAL, KEEP1)), 11, "mine", "invalid pruning scope"),
        bad("identity off with two tcp identities", sink_with("    type: tcp\n    listen: \":1\"\n    clients: {\"10.0.0.1\": a, \"10.0.0.2\": b}\n", "  mapping: {identity_component: false}\n"), 2, "name", "serves exactly one client identity"),
        bad("identity off with a wildcard tcp identity", sink_with("    type: tcp\n    listen: \":1\"\n    clients: {\"10.0.0.0/24\": \"c-*\"}\n", "  mapping: {identity_component: false}\n"), 2, "name", "maps a network to many identities"),
        bad("identity off in a pull job", "jobs:\n- name: pl\n  type: pull\n  connect: {type: tcp, address: \"h:1\"}\n  root_fs: pool/b\n  mapping: {identity_component: false}\n  interval: 10m\n  pruning:\n    keep_sender: [{type: last_n, count: 1}]\n    keep_receiver: [{type: last_n, count: 1}]\n", 6, "false", "identity_component applies to sinks"),
        bad("strip prefix not a dataset path", sink_with(TCP_SERVE, "  mapping: {strip_prefix: \"a//b\"}\n"), 9, "\"a//b\"", "invalid"),
        bad("unknown mapping key", sink_with(TCP_SERVE, "  mapping: {strip: 1}\n"), 9, "strip", "unknown field \"strip\""),
    ]
}

#[test]
fn replication_schedules_of_push_and_pull() {
    let load = |src: &str| {
        load_str(src, Path::new("/t/zrepl.yml"), &MemLoader::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    };
    let push = |c: &Config| match &c.jobs[0] {
        zrepl_config::Job::Push(p) => p.clone(),
        other => panic!("not a push job: {other:?}"),
    };
    // zrepl configs: push jobs replicate only after snapshotting and on wakeups.
    let p = push(&load(&push_with(TCP, "")));
    assert_eq!(p.interval, zrepl_config::PullInterval::Manual);
    assert!(p.cron.is_none());
    let p = push(&load(&push_with(
        TCP,
        "  interval: 10s\n  cron: \"*/5 * * * *\"\n",
    )));
    assert_eq!(
        p.interval,
        zrepl_config::PullInterval::Every(
            zrepl_config::units::ZreplDuration::parse("10s").unwrap()
        )
    );
    assert_eq!(
        p.cron.map(|c| c.to_string()).as_deref(),
        Some("*/5 * * * *")
    );
    let pull = "jobs:\n- name: p\n  type: pull\n  connect: {type: tcp, address: \"h:1\"}\n  root_fs: pool/p\n  cron: \"0 3 * * *\"\n  pruning: {keep_sender: [{type: last_n, count: 1}], keep_receiver: [{type: last_n, count: 1}]}\n";
    match &load(pull).jobs[0] {
        zrepl_config::Job::Pull(p) => {
            assert_eq!(
                p.interval,
                zrepl_config::PullInterval::Manual,
                "cron replaces interval"
            );
            assert!(p.cron.is_some());
        }
        other => panic!("{other:?}"),
    }
    // Without cron, a pull job still needs its interval (zrepl's rule).
    let no_interval = pull.replace("  cron: \"0 3 * * *\"\n", "");
    let err = load_str(
        &no_interval,
        Path::new("/t/zrepl.yml"),
        &MemLoader::default(),
    )
    .map(|_| ())
    .expect_err("a pull job without interval or cron is refused")
    .to_string();
    assert!(err.contains("\"interval\" is required"), "{err}");
}

#[test]
fn replication_hooks_parse_with_defaults() {
    let cfg = load_str(
        &push_with(
            TCP,
            "  hooks:\n    pre: {path: /usr/local/bin/pre, args: [a, b], env: {X: \"1\"}, err_is_fatal: true}\n    post: {path: /p, timeout: 0s}\n",
        ),
        Path::new("/t/zrepl.yml"),
        &MemLoader::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .config;
    let zrepl_config::Job::Push(p) = &cfg.jobs[0] else {
        panic!("not a push job")
    };
    let pre = p.hooks.pre.as_ref().unwrap();
    assert_eq!(pre.args, ["a", "b"]);
    assert_eq!(pre.env.get("X").map(String::as_str), Some("1"));
    assert!(pre.err_is_fatal);
    assert_eq!(pre.timeout.as_nanos(), 60_000_000_000, "default 1m");
    let post = p.hooks.post.as_ref().unwrap();
    assert!(!post.err_is_fatal);
    assert_eq!(post.timeout.as_nanos(), 0);
}

#[test]
fn serving_hooks_parse_on_sink_and_source() {
    let load = |src: &str| {
        load_str(src, Path::new("/t/zrepl.yml"), &MemLoader::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    };
    let cfg = load(&sink_with(
        TCP_SERVE,
        "  hooks:\n    pre: {path: /pre, err_is_fatal: true, timeout: 5s}\n",
    ));
    let zrepl_config::Job::Sink(s) = &cfg.jobs[0] else {
        panic!("not a sink job")
    };
    let pre = s.hooks.pre.as_ref().unwrap();
    assert!(pre.err_is_fatal);
    assert_eq!(pre.timeout.as_nanos(), 5_000_000_000);
    assert!(s.hooks.post.is_none());
    let cfg = load(&SOURCE_HOOKS.replace("HOOK", "{path: /pre, args: [x]}"));
    let zrepl_config::Job::Source(s) = &cfg.jobs[0] else {
        panic!("not a source job")
    };
    assert_eq!(s.hooks.pre.as_ref().unwrap().args, ["x"]);
    assert_eq!(s.hooks.post.as_ref().unwrap().path, "/post");
    // Without the key: no hooks, as zrepl 0.7.
    let cfg = load(&sink_with(TCP_SERVE, ""));
    let zrepl_config::Job::Sink(s) = &cfg.jobs[0] else {
        panic!("not a sink job")
    };
    assert_eq!(s.hooks, zrepl_config::ReplicationHooks::default());
}

/// A source job whose `client_pruning` (line 7) is `CP`.
const SOURCE_CP: &str = "jobs:\n- name: s\n  type: source\n  serve: {type: tcp, listen: \":1\", clients: {\"1.2.3.4\": c}}\n  filesystems: {\"<\": true}\n  snapshotting: {type: manual}\n  client_pruning: CP\n";

#[test]
fn client_pruning_of_a_source() {
    let load = |src: &str| {
        load_str(src, Path::new("/t/zrepl.yml"), &MemLoader::default())
            .map(|c| c.config)
            .map_err(|e| e.to_string())
    };
    let source = |cfg: zrepl_config::Config| match cfg.jobs.into_iter().next() {
        Some(zrepl_config::Job::Source(s)) => s.client_pruning,
        _ => panic!("not a source job"),
    };
    // Absent: zrepl 0.7's meaning, a client may destroy what is not held.
    let no_key = SOURCE_CP.replace("  client_pruning: CP\n", "");
    assert_eq!(
        source(load(&no_key).unwrap()),
        zrepl_config::ClientPruning::default()
    );
    assert!(zrepl_config::ClientPruning::default().allow);
    let p = source(load(&SOURCE_CP.replace("CP", "{allow: false}")).unwrap());
    assert!(!p.allow && p.keep.is_empty());
    let p = source(
        load(&SOURCE_CP.replace(
            "CP",
            "{keep: [{type: not_replicated}, {type: last_n, count: 5}]}",
        ))
        .unwrap(),
    );
    assert!(p.allow);
    assert_eq!(p.keep.len(), 2);
    let e = load(&SOURCE_CP.replace("CP", "{allow: false, keep: [{type: last_n, count: 5}]}"))
        .unwrap_err();
    assert!(e.contains("keep has no effect with allow: false"), "{e}");
    assert!(e.contains(":7:"), "{e}");
    let e = load(&SOURCE_CP.replace("CP", "{allow: maybe}")).unwrap_err();
    assert!(e.contains("allow"), "{e}");
    let e = load(&SOURCE_CP.replace("CP", "{keep: [{type: last_n}]}")).unwrap_err();
    assert!(e.contains("count"), "{e}");
}

#[test]
fn agentless_connect() {
    let push = |connect: &str| {
        format!("jobs:\n- name: p\n  type: push\n  connect: {connect}\n  filesystems: {{\"tank<\": true}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: last_n, count: 1}}], keep_receiver: [{{type: last_n, count: 1}}]}}\n")
    };
    let pull = |connect: &str| {
        format!("jobs:\n- name: q\n  type: pull\n  connect: {connect}\n  root_fs: tank/pulled\n  interval: manual\n  pruning: {{keep_sender: [{{type: last_n, count: 1}}], keep_receiver: [{{type: last_n, count: 1}}]}}\n")
    };
    let load = |src: &str| {
        load_str(src, Path::new("/t/zrepl.yml"), &MemLoader::default())
            .map(|c| c.config)
            .map_err(|e| e.to_string())
    };
    let base = "type: ssh+zfs, host: b.example, user: z, identity_file: /k";
    let cfg = load(&push(&format!(
        "{{{base}, root_fs: backup/h, recv: {{placeholder: {{encryption: inherit}}}}}}"
    )))
    .unwrap();
    match &cfg.jobs[0] {
        zrepl_config::Job::Push(j) => match &j.connect {
            zrepl_config::Connect::Agentless(a) => {
                assert_eq!(a.port, 22);
                assert_eq!(a.root_fs.as_ref().unwrap().to_string(), "backup/h");
                assert!(a.filesystems.is_none());
                assert!(a.known_hosts.is_none());
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let cfg = load(&pull(&format!(
        "{{{base}, port: 2222, known_hosts: /kh, filesystems: {{\"pool/data<\": true}}}}"
    )))
    .unwrap();
    match &cfg.jobs[0] {
        zrepl_config::Job::Pull(j) => match &j.connect {
            zrepl_config::Connect::Agentless(a) => {
                assert_eq!(a.port, 2222);
                assert!(a.filesystems.is_some() && a.root_fs.is_none());
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    for (src, want) in [
        (push(&format!("{{{base}}}")), "needs connect.root_fs"),
        (
            push(&format!(
                "{{{base}, root_fs: b/h, filesystems: {{\"x\": true}}}}"
            )),
            "connect.filesystems is for pull jobs",
        ),
        (pull(&format!("{{{base}}}")), "needs connect.filesystems"),
        (
            pull(&format!(
                "{{{base}, root_fs: b/h, filesystems: {{\"x\": true}}}}"
            )),
            "connect.root_fs is for push jobs",
        ),
        (
            push(&format!("{{{base}, root_fs: b/h, port: 70000}}")),
            "out of range",
        ),
        (
            push("{type: ssh+zfs, host: b, user: z, root_fs: b/h}"),
            "identity_file",
        ),
        (
            push(&format!("{{{base}, root_fs: b/h, bogus: 1}}")),
            "bogus",
        ),
    ] {
        let e = load(&src).unwrap_err();
        assert!(e.contains(want), "{src}: {e}");
    }
}

#[test]
fn step_holds_of_a_source() {
    let load = |src: &str| {
        load_str(src, Path::new("/t/zrepl.yml"), &MemLoader::default())
            .map(|c| c.config)
            .map_err(|e| e.to_string())
    };
    let of = |cfg: zrepl_config::Config| match cfg.jobs.into_iter().next() {
        Some(zrepl_config::Job::Source(s)) => s.step_holds,
        _ => panic!("not a source job"),
    };
    let src =
        |v: &str| SOURCE_CP.replace("  client_pruning: CP\n", &format!("  step_holds: {v}\n"));
    // Absent: zrepl 0.7's meaning, a step hold stays until the client completes a step.
    assert_eq!(
        of(load(&SOURCE_CP.replace("  client_pruning: CP\n", "")).unwrap()),
        None
    );
    let h = of(load(&src("{max_age: 7d}")).unwrap()).unwrap();
    assert_eq!(h.max_age.as_secs(), 7 * 86400);
    for (bad, want) in [
        ("{}", "max_age"),
        ("{max_age: 0s}", "max_age"),
        ("{max_age: soon}", "max_age"),
        ("{max_age: 1h, other: 1}", "other"),
    ] {
        let e = load(&src(bad)).unwrap_err();
        assert!(e.contains(want) && e.contains(":7:"), "{bad}: {e}");
    }
}

#[test]
fn backpressure_parses_off_by_default() {
    let bp = |src: &str| {
        let cfg = load_str(src, Path::new("/t/zrepl.yml"), &MemLoader::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        match &cfg.jobs[0] {
            zrepl_config::Job::Push(j) => j.snapshotting.backpressure(),
            zrepl_config::Job::Source(j) => j.snapshotting.backpressure(),
            other => panic!("unexpected job {other:?}"),
        }
    };
    use zrepl_config::units::ZreplDuration;
    use zrepl_config::{Backpressure, BackpressureAction};
    assert_eq!(bp(&PUSH_BP.replace("    backpressure: BP\n", "")), None);
    assert_eq!(
        bp(&PUSH_BP.replace("BP", "{max_lag: 1d}")),
        Some(Backpressure {
            max_lag: ZreplDuration::from_secs(86400),
            action: BackpressureAction::Skip
        })
    );
    assert_eq!(
        bp(&PUSH_BP.replace("BP", "{max_lag: 90m, action: warn}")),
        Some(Backpressure {
            max_lag: ZreplDuration::from_secs(5400),
            action: BackpressureAction::Warn
        })
    );
    // Only the initial step without guarantees is fine: incremental steps keep the cursor.
    assert!(bp(&format!(
        "{}  replication:\n    protection: {{initial: guarantee_nothing, incremental: guarantee_resumability}}\n",
        PUSH_BP.replace("BP", "{max_lag: 1h}")
    ))
    .is_some());
    let source = SOURCE_HOOKS
        .replace("  snapshotting: {type: manual}\n", "  snapshotting: {type: cron, prefix: z_, cron: \"0 * * * *\", backpressure: {max_lag: 2h}}\n")
        .replace("HOOK", "{path: /pre}");
    assert_eq!(
        bp(&source).map(|b| b.max_lag),
        Some(ZreplDuration::from_secs(7200))
    );
}

#[test]
fn timeouts_default_and_zero_disables() {
    use std::time::Duration;
    let load = |src: &str| {
        load_str(src, Path::new("/t/zrepl.yml"), &MemLoader::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    };
    let push = |j: &Config| match &j.jobs[0] {
        zrepl_config::Job::Push(p) => p.replication.clone(),
        other => panic!("not a push job: {other:?}"),
    };
    let d = load(&push_with(TCP, ""));
    assert_eq!(
        d.global.zfs.command_timeout(),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(push(&d).stall_timeout(), Some(Duration::from_secs(600)));
    assert_eq!(d.global.shutdown_timeout(), Duration::from_secs(60));
    let g = load(&format!(
        "global:\n  shutdown_timeout: 0s\n{}",
        push_with(TCP, "")
    ));
    assert_eq!(
        g.global.shutdown_timeout(),
        Duration::ZERO,
        "0s: abort at once"
    );
    let set = load(&format!(
        "global:\n  zfs:\n    command_timeout: 90s\n{}",
        push_with(TCP, "  replication:\n    stall_timeout: 30s\n")
    ));
    assert_eq!(
        set.global.zfs.command_timeout(),
        Some(Duration::from_secs(90))
    );
    assert_eq!(push(&set).stall_timeout(), Some(Duration::from_secs(30)));
    let off = load(&format!(
        "global:\n  zfs:\n    command_timeout: 0s\n{}",
        push_with(TCP, "  replication:\n    stall_timeout: 0s\n")
    ));
    assert_eq!(off.global.zfs.command_timeout(), None);
    assert_eq!(push(&off).stall_timeout(), None);
}

#[test]
fn written_threshold_bytes_or_size_default_never_skips() {
    let threshold = |snapshotting: &str| {
        let cfg = load_str(
            &snap_with(snapshotting, KEEP1),
            Path::new("/t/zrepl.yml"),
            &MemLoader::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
        match &cfg.jobs[0] {
            zrepl_config::Job::Snap(j) => match &j.snapshotting {
                zrepl_config::Snapshotting::Periodic {
                    written_threshold, ..
                }
                | zrepl_config::Snapshotting::Cron {
                    written_threshold, ..
                } => *written_threshold,
                zrepl_config::Snapshotting::Manual => panic!("manual"),
            },
            other => panic!("not a snap job: {other:?}"),
        }
    };
    let periodic = "    type: periodic\n    prefix: z_\n    interval: 10m\n";
    let cron = "    type: cron\n    prefix: z_\n    cron: \"*/5 * * * *\"\n";
    let cases: &[(&str, &str, u64)] = &[
        (periodic, "", 0),
        (periodic, "    written_threshold: 0\n", 0),
        (periodic, "    written_threshold: 1024\n", 1024),
        (periodic, "    written_threshold: 1 MiB\n", 1 << 20),
        (periodic, "    written_threshold: \"1.5 KiB\"\n", 1536),
        (periodic, "    written_threshold: 10 B\n", 10),
        (cron, "", 0),
        (cron, "    written_threshold: 64 KiB\n", 64 << 10),
    ];
    for (kind, key, want) in cases {
        assert_eq!(threshold(&format!("{kind}{key}")), *want, "{kind}{key}");
    }
}

#[test]
fn malformed_configs_are_rejected_at_the_right_place() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let errs = match load_str(&c.src, Path::new("/t/zrepl.yml"), &MemLoader::default()) {
            Ok(_) => {
                failures.push(format!("{}: accepted\n{}", c.name, c.src));
                continue;
            }
            Err(e) => e,
        };
        let line_text = c.src.lines().nth(c.line.wrapping_sub(1)).unwrap_or("");
        let col = if c.at.is_empty() {
            None
        } else {
            match line_text.find(c.at) {
                Some(i) => Some(i + 1),
                None => {
                    failures.push(format!(
                        "{}: test bug: {:?} not on line {}",
                        c.name, c.at, c.line
                    ));
                    continue;
                }
            }
        };
        let hit = errs.0.iter().any(|e| {
            e.message.contains(c.msg)
                && e.mark.line == c.line
                && col.is_none_or(|col| e.mark.col == col)
        });
        if !hit {
            failures.push(format!(
                "{}: want line {} col {:?} msg {:?}, got:\n{errs}",
                c.name, c.line, col, c.msg
            ));
        }
        // The error names its file, and every error names a line.
        assert!(
            errs.0.iter().all(|e| e.file == Path::new("/t/zrepl.yml")),
            "{}",
            c.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
