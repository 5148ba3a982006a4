//! `zrepl monitor`: Nagios plugin exit codes and output, against a mock `zfs` and a real daemon.

use super::{mock_zfs_dir, start_daemon, stderr, stdout, zrepl, zrepl_with_path};

/// A config with a push job over the mock's pool/a (snapshot prefix `s`, cursors of job
/// `push`) and a control socket nobody listens on.
fn push_config(dir: &std::path::Path) -> String {
    let config = dir.join("zrepl.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  control:\n    sockpath: {}\njobs:\n- name: push\n  type: push\n  connect: {{type: tcp, address: \"h:1\"}}\n  filesystems: {{\"pool/a\": true}}\n  snapshotting: {{type: periodic, prefix: s, interval: 10m}}\n  pruning:\n    keep_sender: [{{type: last_n, count: 1}}]\n    keep_receiver: [{{type: last_n, count: 1}}]\n- name: snap\n  type: snap\n  filesystems: {{\"pool/a\": true}}\n  snapshotting: {{type: manual}}\n  pruning:\n    keep: [{{type: last_n, count: 1}}]\n",
            dir.join("nobody/control").display()
        ),
    )
    .unwrap();
    config.to_string_lossy().into_owned()
}

#[test]
fn monitor_argument_errors_are_unknown() {
    for args in [
        &["monitor"][..],
        &["monitor", "snapshots", "--bogus"],
        &["monitor", "snapshots", "pool/a"],
        &["monitor", "snapshots", "-c", "soon", "pool/a"],
        &["monitor", "snapshots", "-c", "0s", "pool/a"],
        &["monitor", "snapshots", "-w", "2h", "-c", "1h", "pool/a"],
        &["monitor", "snapshots", "-c", "1h"],
        &["monitor", "snapshots", "-c", "1h", "--regex", "(", "pool/a"],
        &["monitor", "snapshots", "-c", "1h", "--job", "j", "pool/a"],
        &["monitor", "replication", "-c", "1h"],
        &[
            "--config",
            "/nonexistent/zrepl.yml",
            "monitor",
            "replication",
            "push",
            "-c",
            "1h",
        ],
        &["--config", "/nonexistent/zrepl.yml", "monitor", "nope"],
    ] {
        let o = zrepl(args);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    // What the check prints itself follows the plugin format.
    let o = zrepl(&["monitor", "snapshots", "-w", "2h", "-c", "1h", "pool/a"]);
    assert_eq!(
        stdout(&o),
        "ZREPL SNAPSHOTS UNKNOWN - --warning (2h) must be shorter than --critical (1h)\n"
    );
    // Help is not an error.
    let o = zrepl(&["monitor", "snapshots", "--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("--critical"), "{}", stdout(&o));
}

#[test]
fn monitor_snapshots_and_replication_thresholds() {
    let dir = mock_zfs_dir();
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let cfg = push_config(dir.path());
    // The mock's newest snapshot with prefix `s` (pool/a@s2) was created at Unix time 2000.
    let o = zrepl_with_path(
        &[
            "--config",
            &cfg,
            "monitor",
            "snapshots",
            "--job",
            "push",
            "-w",
            "1h",
            "-c",
            "1d",
        ],
        &path,
    );
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("ZREPL SNAPSHOTS CRITICAL - 1 critical of 1 filesystem: pool/a: newest snapshot @s2 is "),
        "{out}"
    );
    assert!(out.contains("\n| 'pool/a'="), "{out}");
    assert!(out.trim_end().ends_with(";3600;86400;0"), "{out}");
    // Thresholds beyond the snapshot's age: OK.
    let o = zrepl_with_path(
        &[
            "--config",
            &cfg,
            "monitor",
            "snapshots",
            "--job",
            "push",
            "-c",
            "100000w",
        ],
        &path,
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("ZREPL SNAPSHOTS OK - 1 filesystem ok"),
        "{}",
        stdout(&o)
    );
    // Only a warning threshold: WARNING.
    let o = zrepl_with_path(
        &[
            "--config",
            &cfg,
            "monitor",
            "snapshots",
            "--job",
            "push",
            "-w",
            "1h",
        ],
        &path,
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    // A prefix nothing has: CRITICAL, naming it.
    let o = zrepl_with_path(
        &[
            "--config",
            &cfg,
            "monitor",
            "snapshots",
            "--job",
            "push",
            "--prefix",
            "zrepl_",
            "-c",
            "100000w",
        ],
        &path,
    );
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("pool/a: no snapshot with prefix \"zrepl_\""),
        "{}",
        stdout(&o)
    );

    // Replication lag from the job's cursor: the newest cursor marks @s2.
    let o = zrepl_with_path(
        &[
            "--config",
            &cfg,
            "monitor",
            "replication",
            "push",
            "-c",
            "1d",
        ],
        &path,
    );
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("ZREPL REPLICATION CRITICAL - 1 critical of 1 filesystem: pool/a: last replicated snapshot @s2 is "),
        "{}",
        stdout(&o)
    );
    // A snap job does not replicate; an unknown job is not in the config.
    for job in ["snap", "nope"] {
        let o = zrepl_with_path(
            &["--config", &cfg, "monitor", "replication", job, "-c", "1d"],
            &path,
        );
        assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).starts_with("ZREPL REPLICATION UNKNOWN - "),
            "{}",
            stdout(&o)
        );
    }
    // zfs failing is UNKNOWN, not CRITICAL.
    let o = zrepl_with_path(&["monitor", "snapshots", "-c", "1d", "pool/b"], &path);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn monitor_alive_asks_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = push_config(dir.path());
    let o = zrepl(&["--config", &cfg, "monitor", "alive"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("ZREPL ALIVE CRITICAL - daemon does not answer: "),
        "{}",
        stdout(&o)
    );

    let d = start_daemon();
    let cfg = d.config.to_str().unwrap();
    let o = zrepl(&["--config", cfg, "monitor", "alive"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "ZREPL ALIVE OK - daemon answers, 1 job\n");
    let o = zrepl(&["--config", cfg, "monitor", "alive", "--job", "sink"]);
    assert_eq!(stdout(&o), "ZREPL ALIVE OK - job \"sink\" is serving\n");
    let o = zrepl(&["--config", cfg, "monitor", "alive", "--job", "gone"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
}
