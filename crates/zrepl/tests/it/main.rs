//! Black-box tests of the `zrepl` binary: exit codes, output formats, error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod logging;
mod monitor;
mod tidy;

fn zrepl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zrepl"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run zrepl")
}

fn zrepl_with_path(args: &[&str], path: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zrepl"))
        .args(args)
        .env("PATH", path)
        .output()
        .expect("run zrepl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn samples() -> PathBuf {
    match std::env::var("ZREPL_SAMPLES_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/zrepl-samples"),
    }
}

fn sample(name: &str) -> String {
    samples().join(name).to_string_lossy().into_owned()
}

/// Failpoints are for tests; a spec that names none we know must fail loudly before any work
/// (a typo would make a crash test pass without crashing).
#[test]
fn a_bad_failpoint_spec_is_refused_at_start() {
    for (spec, want) in [
        ("driver.step.after_recieve=kill", "unknown failpoint"),
        ("driver.step.after_receive=explode", "unknown action"),
        ("driver.step.after_receive", "is not NAME=ACTION"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_zrepl"))
            .args(["version"])
            .env("ZREPL_FAILPOINTS", spec)
            .output()
            .expect("run zrepl");
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{spec}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{spec}: did work: {}", stdout(&o));
    }
    // A valid spec names itself on stderr and does not change the command.
    let o = Command::new(env!("CARGO_BIN_EXE_zrepl"))
        .args(["version"])
        .env("ZREPL_FAILPOINTS", "driver.step.after_receive=off")
        .output()
        .expect("run zrepl");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("failpoints enabled"), "{}", stderr(&o));
}

#[test]
fn configcheck_accepts_every_sample_and_rejects_invalid_ones() {
    let mut n = 0;
    for e in std::fs::read_dir(samples()).expect("zrepl samples (set ZREPL_SAMPLES_DIR)") {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yml") {
            let path = p.to_str().unwrap();
            let o = zrepl(&["--config", path, "configcheck", "--skip-cert-check"]);
            // zrepl's bandwidth_limit sample serves two sinks on one local listener: zrepl
            // hands each connection to either of them; we refuse it (README, deviations).
            if p.ends_with("bandwidth_limit.yml") {
                assert_eq!(o.status.code(), Some(1));
                assert!(
                    stderr(&o)
                        .contains("local listener \"localsink\" is served by more than one job"),
                    "{}",
                    stderr(&o)
                );
                n += 1;
                continue;
            }
            assert!(o.status.success(), "{}: {}", p.display(), stderr(&o));
            assert_eq!(
                stdout(&o),
                "",
                "configcheck without --format prints nothing"
            );
            // Without --skip-cert-check, exactly what the daemon's compile step says.
            let cfg =
                zrepl_config::load_str(&std::fs::read_to_string(&p).unwrap(), &p, &TestLoader)
                    .unwrap()
                    .config;
            let zfs = zrepl_zfs::Zfs::new(zrepl_zfs::ZfsConfig::default());
            let daemon = zrepl_daemon::compile(&cfg, &zfs, false);
            let o = zrepl(&["--config", path, "configcheck"]);
            assert_eq!(
                o.status.success(),
                daemon.is_ok(),
                "{}: {}",
                p.display(),
                stderr(&o)
            );
            if let Err(problems) = daemon {
                for pr in problems {
                    assert!(pr.tls_material, "{}: {}", p.display(), pr.message);
                    assert!(
                        stderr(&o).contains(&pr.message),
                        "{}: {}",
                        p.display(),
                        stderr(&o)
                    );
                }
            }
            n += 1;
        }
    }
    assert!(n >= 18);
    for (case, want) in [
        ("duplicate_job_names", "duplicate job name \"my_job\""),
        (
            "duplicate_job_names_with_include",
            "duplicate job name \"my_job\"",
        ),
        (
            "internal_job_name",
            "job name \"_internal_job\" is reserved for internal use",
        ),
    ] {
        let p = sample(&format!("invalid/{case}/zrepl.yml"));
        let o = zrepl(&["--config", &p, "configcheck"]);
        assert_eq!(o.status.code(), Some(1), "{case}");
        assert!(stderr(&o).contains(want), "{case}: {}", stderr(&o));
    }
}

#[test]
fn configcheck_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("zrepl.yml");
    std::fs::write(
        &f,
        "jobs:\n- name: j\n  type: snap\n  filesystems: {\"<\": true}\n  snapshotting: {type: periodic, prefix: z_, interval: 10}\n  pruning: {keep: [{type: grid, grid: \"1x1h(keep=0)\", regex: x}]}\n",
    )
    .unwrap();
    let o = zrepl(&["--config", f.to_str().unwrap(), "configcheck"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("2 errors"), "{err}");
    assert!(err.contains(&format!("{}:5:", f.display())), "{err}");
    assert!(err.contains("jobs[0].snapshotting.interval"), "{err}");
    assert!(
        err.contains(&format!("{}:6:", f.display())) && err.contains("keep=0"),
        "{err}"
    );
}

#[test]
fn configcheck_json_output_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "local.yml",
        "pull.yml",
        "source.yml",
        "quickstart_backup_to_external_disk.yml",
        "snap_cron.yml",
    ] {
        let o = zrepl(&[
            "--config",
            &sample(name),
            "configcheck",
            "--format",
            "json",
            "--skip-cert-check",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let json = stdout(&o);
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert!(
            v["global"]["logging"].is_array(),
            "defaults are filled in: {json}"
        );
        let f = dir.path().join(format!("{name}.json.yml"));
        std::fs::write(&f, &json).unwrap();
        let o2 = zrepl(&[
            "--config",
            f.to_str().unwrap(),
            "configcheck",
            "--format",
            "json",
            "--skip-cert-check",
        ]);
        assert!(o2.status.success(), "{name} fed back: {}", stderr(&o2));
        assert_eq!(
            json,
            stdout(&o2),
            "{name}: resolved config changed on the second pass"
        );

        let o3 = zrepl(&[
            "--config",
            &sample(name),
            "configcheck",
            "--format",
            "yaml",
            "--skip-cert-check",
        ]);
        assert!(o3.status.success());
        let f = dir.path().join(format!("{name}.resolved.yml"));
        std::fs::write(&f, stdout(&o3)).unwrap();
        let o4 = zrepl(&[
            "--config",
            f.to_str().unwrap(),
            "configcheck",
            "--format",
            "json",
            "--skip-cert-check",
        ]);
        assert_eq!(json, stdout(&o4), "{name}: yaml output does not round-trip");
    }
}

#[test]
fn configcheck_what_selects_parts() {
    let o = zrepl(&[
        "--config",
        &sample("local.yml"),
        "configcheck",
        "--format",
        "json",
        "--what",
        "jobs",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["type"], "push");
    assert_eq!(
        v[1]["replication"]["protection"]["initial"],
        "guarantee_resumability"
    );
    let o = zrepl(&[
        "--config",
        &sample("local.yml"),
        "configcheck",
        "--format",
        "json",
        "--what",
        "logging",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["type"], "stdout");
    assert_eq!(v[0]["level"], "warn");
    let o = zrepl(&[
        "--config",
        &sample("local.yml"),
        "configcheck",
        "--format",
        "pretty",
    ]);
    assert!(stdout(&o).contains("PushJob"), "{}", stdout(&o));
}

#[test]
fn configcheck_checks_tls_material() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let cert = dir.path().join("cert.crt");
    let key = dir.path().join("key.pem");
    let cfg = dir.path().join("zrepl.yml");
    let write_cfg = || {
        std::fs::write(
            &cfg,
            format!(
                "jobs:\n- name: sink\n  type: sink\n  root_fs: pool/sink\n  serve:\n    type: tls\n    listen: \":8888\"\n    ca: {}\n    cert: {}\n    key: {}\n    client_cns: [a]\n",
                ca.display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap()
    };
    write_cfg();
    // Missing files: the daemon would refuse to start, so configcheck fails, naming the file.
    let o = zrepl(&["--config", cfg.to_str().unwrap(), "configcheck"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("cannot read CA file {}", ca.display())),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("--skip-cert-check"), "{}", stderr(&o));
    // Present but garbage: an error, unless skipped.
    for f in [&ca, &cert, &key] {
        std::fs::write(f, "not a pem file\n").unwrap();
    }
    let o = zrepl(&["--config", cfg.to_str().unwrap(), "configcheck"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("job \"sink\": serve:") && stderr(&o).contains("ca.crt"),
        "{}",
        stderr(&o)
    );
    let o = zrepl(&[
        "--config",
        cfg.to_str().unwrap(),
        "configcheck",
        "--skip-cert-check",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn missing_default_config_is_a_clear_error() {
    // No --config and (on a test machine) no /etc/zrepl/zrepl.yml.
    if Path::new("/etc/zrepl/zrepl.yml").exists()
        || Path::new("/usr/local/etc/zrepl/zrepl.yml").exists()
    {
        return assert!(zrepl(&["configcheck"]).status.code().is_some());
    }
    let o = zrepl(&["configcheck"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no config file found at /etc/zrepl/zrepl.yml"),
        "{}",
        stderr(&o)
    );
    let o = zrepl(&["--config", "/nonexistent/zrepl.yml", "configcheck"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read config file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn version_prints_client_version() {
    let o = zrepl(&["version"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).starts_with("client: zrepl version="),
        "{}",
        stdout(&o)
    );
    let o = zrepl(&["version", "--show", "nonsense"]);
    assert_eq!(o.status.code(), Some(2), "clap usage error");
}

#[test]
fn test_filesystems_input_and_all() {
    let push = sample("push.yml");
    let o = zrepl(&[
        "--config",
        &push,
        "test",
        "filesystems",
        "--job",
        "push",
        "--input",
        "tmp",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "REJECT\ttmp\t\n");
    let o = zrepl(&[
        "--config",
        &push,
        "test",
        "filesystems",
        "--job",
        "push",
        "--input",
        "tank/x",
    ]);
    assert_eq!(stdout(&o), "ACCEPT\ttank/x\t\n");
    let o = zrepl(&[
        "--config",
        &push,
        "test",
        "filesystems",
        "--job",
        "push",
        "--input",
        "bad@name",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid dataset name"),
        "{}",
        stderr(&o)
    );
    let o = zrepl(&[
        "--config",
        &push,
        "test",
        "filesystems",
        "--job",
        "nope",
        "--input",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("job \"nope\" is not defined"),
        "{}",
        stderr(&o)
    );
    let o = zrepl(&[
        "--config",
        &sample("sink.yml"),
        "test",
        "filesystems",
        "--job",
        "laptop_sink",
        "--input",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not have a filesystems filter"),
        "{}",
        stderr(&o)
    );
    let o = zrepl(&["--config", &push, "test", "filesystems", "--job", "push"]);
    assert_eq!(o.status.code(), Some(2), "one of --all/--input is required");

    // --all reads `zfs list`: a mock zfs on PATH stands in for the real one.
    let dir = tempfile::tempdir().unwrap();
    let zfs = dir.path().join("zfs");
    std::fs::write(
        &zfs,
        "#!/bin/sh\n[ \"$1\" = list ] || exit 1\nprintf 'tank\\ntank/home\\ntmp\\ntmp/cache\\n'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&zfs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let o = zrepl_with_path(
        &[
            "--config",
            &push,
            "test",
            "filesystems",
            "--job",
            "push",
            "--all",
        ],
        &path,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "ACCEPT\ttank\t\nACCEPT\ttank/home\t\nREJECT\ttmp\t\nACCEPT\ttmp/cache\t\n"
    );

    // Without zfs at all: a clear error.
    let empty = tempfile::tempdir().unwrap();
    let o = zrepl_with_path(
        &[
            "--config",
            &push,
            "test",
            "filesystems",
            "--job",
            "push",
            "--all",
        ],
        empty.path().to_str().unwrap(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("zfs"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not installed") || stderr(&o).contains("No such file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn decoderesumetoken_prints_zrepl_json() {
    // A real token (zrepl's platform test data, ZoL 0.8.1): incremental, raw.
    let token = "1-1164f8d409-120-789c636064000310a501c49c50360710a715e5e7a69766a63040416445bb6a3cd7a2290a40363b92bafca4acd4e412060626a83a0cf9b4b4e2d412908c0e5c9e0d493ea9b224b51848f368eb61d55f920f714515bf9b3fc3c396ef0648f29c60f9bcc4dc54a07c516a414e414e62495a7e512ed0c812fde2a2648724b079dc0c087f26e7e71614a51617e76743c424a0ee81c9172596c3a41800dd2c2818";
    let o = zrepl(&["test", "decoderesumetoken", "--token", token]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ToName"], "zreplplatformtest/src@b");
    assert_eq!(v["ToGUID"], 0xf784e1004f460f7au64);
    assert_eq!(v["FromGUID"], 0x94a20a5f25877859u64);
    assert_eq!(v["HasFromGUID"], true);
    assert_eq!(v["RawOK"], true);
    let o = zrepl(&["test", "decoderesumetoken", "--token", "1-abc-12-zz"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot decode resume token"),
        "{}",
        stderr(&o)
    );
}

/// A running daemon (a sink job only, so no zfs command runs), killed on drop.
struct Daemon {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon() -> Daemon {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = dir.path().join("run/control");
    let config = dir.path().join("zrepl.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  control:\n    sockpath: {}\njobs:\n- type: sink\n  name: sink\n  root_fs: pool/sink\n  serve: {{type: local, listener_name: l}}\n",
            sock.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_zrepl"))
        .args(["--config", config.to_str().unwrap(), "daemon"])
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(sock.exists(), "daemon did not create its control socket");
    Daemon {
        child,
        _dir: dir,
        config,
    }
}

#[test]
fn daemon_control_socket_status_signal_version() {
    let d = start_daemon();
    let cfg = d.config.to_str().unwrap();
    let o = zrepl(&["--config", cfg, "status", "--mode", "raw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_valid(&schema("status.schema.json"), &v);
    assert_eq!(v["version"], 1);
    assert_eq!(v["jobs"]["sink"]["type"], "sink");
    assert_eq!(v["jobs"]["sink"]["state"], "serving");
    assert!(v["global"]["zfs_commands"]["active"].is_array());

    let o = zrepl(&["--config", cfg, "status", "--mode", "dump"]);
    assert!(stdout(&o).contains("Job: sink"), "{}", stdout(&o));

    let o = zrepl(&["--config", cfg, "signal", "wakeup", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Job nope does not exist"),
        "{}",
        stderr(&o)
    );
    let o = zrepl(&["--config", cfg, "signal", "wakeup", "sink"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot be woken up"), "{}", stderr(&o));
    let o = zrepl(&["--config", cfg, "signal", "reset", "sink"]);
    assert!(stderr(&o).contains("already reset"), "{}", stderr(&o));

    let o = zrepl(&["--config", cfg, "version", "--show", "daemon"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("server: zrepl version="),
        "{}",
        stdout(&o)
    );

    // A second daemon on the same socket refuses to start.
    let o = zrepl(&["--config", cfg, "daemon"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("another zrepl daemon is running"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn daemon_refuses_world_accessible_socket_dir_and_unreadable_certificates() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("zrepl.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  control:\n    sockpath: {}/control\njobs: []\n",
            run.display()
        ),
    )
    .unwrap();
    let o = zrepl(&["--config", config.to_str().unwrap(), "daemon"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("must not be accessible by others"),
        "{}",
        stderr(&o)
    );

    // A symlinked socket directory (it could point anywhere) is refused too.
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::fs::write(
        &config,
        format!(
            "global:\n  control:\n    sockpath: {}/control\njobs: []\n",
            link.display()
        ),
    )
    .unwrap();
    let o = zrepl(&["--config", config.to_str().unwrap(), "daemon"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("must not be a symlink"),
        "{}",
        stderr(&o)
    );

    // zrepl's pull sample names certificate files that do not exist here.
    let o = zrepl(&["--config", &sample("pull.yml"), "daemon"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("job \"pull_servers\": connect: cannot read CA file /certs/ca.crt"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn signal_reload_checks_the_tls_material_of_the_running_daemon() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "test CA");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let mut p = CertificateParams::new(vec!["server".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "server");
    let k = KeyPair::generate().unwrap();
    let c = p.signed_by(&k, &ca).unwrap();
    let (ca_f, cert_f, key_f) = (
        dir.path().join("ca.crt"),
        dir.path().join("server.crt"),
        dir.path().join("server.key"),
    );
    std::fs::write(&ca_f, ca.pem()).unwrap();
    std::fs::write(&cert_f, c.pem()).unwrap();
    std::fs::write(&key_f, k.serialize_pem()).unwrap();
    let sock = dir.path().join("run/control");
    let config = dir.path().join("zrepl.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  control:\n    sockpath: {}\njobs:\n- type: sink\n  name: sink\n  root_fs: pool/sink\n  serve:\n    type: tls\n    listen: \"127.0.0.1:0\"\n    ca: {}\n    cert: {}\n    key: {}\n    client_cns: [a]\n",
            sock.display(),
            ca_f.display(),
            cert_f.display(),
            key_f.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_zrepl"))
        .args(["--config", config.to_str().unwrap(), "daemon"])
        .spawn()
        .unwrap();
    let _d = Daemon {
        child,
        _dir: dir,
        config: config.clone(),
    };
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let cfg = config.to_str().unwrap();
    let o = zrepl(&["--config", cfg, "signal", "reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("TLS material of 1 "), "{}", stdout(&o));
    // A renewal gone wrong: reported, naming the job and the file; the daemon keeps serving.
    std::fs::write(&key_f, "not a key\n").unwrap();
    let o = zrepl(&["--config", cfg, "signal", "reload"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("job \"sink\": serve:") && stderr(&o).contains("server.key"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("previous files stay in use"),
        "{}",
        stderr(&o)
    );
    let o = zrepl(&["--config", cfg, "signal", "reload", "nope"]);
    assert!(
        stderr(&o).contains("Job nope does not exist"),
        "{}",
        stderr(&o)
    );
    // wakeup and reset still need a job.
    let o = zrepl(&["--config", cfg, "signal", "wakeup"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = zrepl(&["--config", cfg, "status", "--mode", "raw"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn signal_without_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zrepl.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  control:\n    sockpath: {}/nope/control\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let o = zrepl(&[
        "--config",
        config.to_str().unwrap(),
        "signal",
        "wakeup",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is `zrepl daemon` running?"),
        "{}",
        stderr(&o)
    );
}

fn schema(name: &str) -> jsonschema::Validator {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/schemas")
        .join(name);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    jsonschema::validator_for(&v).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_valid(validator: &jsonschema::Validator, v: &serde_json::Value) {
    let errors: Vec<String> = validator.iter_errors(v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{v:#}");
}

/// Splits a stream of pretty-printed JSON objects (zrepl's `--json` format) into values.
fn json_stream(s: &str) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_str(s)
        .into_iter::<serde_json::Value>()
        .map(|v| v.expect("valid JSON object"))
        .collect()
}

/// A mock `zfs` answering the listing commands of `zfs-abstraction list` with a fixed state:
/// pool/a with a cursor, a tentative cursor, a stale older cursor, a step hold and a v1 cursor.
fn mock_zfs_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let g1 = 0x1111u64;
    let g2 = 0x2222u64;
    let script = format!(
        r#"#!/bin/sh
case "$*" in
  "list -H -p -o name -r -t filesystem,volume") printf 'pool\npool/a\n' ;;
  *"-t filesystem,volume,snapshot,bookmark"*)
    printf 'pool\t-\t1\t100\t-\n'
    printf 'pool/a\t-\t1\t100\t-\n'
    printf 'pool/a@s1\t{g1}\t10\t1000\t1\n'
    printf 'pool/a#zrepl_CURSOR_G_{g1:016x}_J_push\t{g1}\t10\t1000\t-\n'
    printf 'pool/a#zrepl_replication_cursor\t{g1}\t10\t1000\t-\n'
    printf 'pool/a@s2\t{g2}\t20\t2000\t0\n'
    printf 'pool/a#zrepl_CURSOR_G_{g2:016x}_J_push\t{g2}\t20\t2000\t-\n'
    printf 'pool/a#zrepl_CURSORTENTATIVE__G_{g2:016x}_J_push\t{g2}\t20\t2000\t-\n'
    printf 'pool/a#zrepl_CURSOR_G_0000000000000bad_J_push\t{g2}\t20\t2000\t-\n'
    ;;
  "holds -H -- pool/a@s1") printf 'pool/a@s1\tzrepl_STEP_J_push\tTue Nov 24 12:00 2026\n' ;;
  *) echo "mock zfs: unexpected: $*" >&2; exit 1 ;;
esac
"#
    );
    let p = dir.path().join("zfs");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn zfs_abstraction_list_json_matches_schema_and_staleness() {
    let dir = mock_zfs_dir();
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let o = zrepl_with_path(&["zfs-abstraction", "list", "--json"], &path);
    assert!(o.status.success(), "{}", stderr(&o));
    let items = json_stream(&stdout(&o));
    let v = schema("zfs-abstraction.schema.json");
    for it in &items {
        assert_valid(&v, it);
    }
    let types: Vec<&str> = items.iter().map(|i| i["Type"].as_str().unwrap()).collect();
    // The bookmark whose name lies about its guid is not listed.
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "replication-cursor-bookmark-v2")
            .count(),
        2,
        "{types:?}"
    );
    assert!(
        types.contains(&"step-hold") && types.contains(&"replication-cursor-bookmark-v1"),
        "{types:?}"
    );
    assert!(
        types.contains(&"tentative-replication-cursor-bookmark-v2"),
        "{types:?}"
    );

    let o = zrepl_with_path(&["zfs-abstraction", "list", "--type", "step-hold"], &path);
    assert_eq!(stdout(&o), "step-hold \"zrepl_STEP_J_push\" on pool/a@s1\n");

    // Stale: the older cursor and the step hold at/before the newest cursor.
    let o = zrepl_with_path(&["zfs-abstraction", "release-stale", "--dry-run"], &path);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "would destroy replication-cursor-bookmark-v2 pool/a#zrepl_CURSOR_G_0000000000001111_J_push\n\
         would destroy step-hold \"zrepl_STEP_J_push\" on pool/a@s1\n"
    );
    let o = zrepl_with_path(
        &[
            "zfs-abstraction",
            "release-stale",
            "--type",
            "step-hold",
            "--dry-run",
        ],
        &path,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("needs both step-hold and replication-cursor-bookmark-v2"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn zfs_abstraction_argument_errors() {
    let o = zrepl(&["zfs-abstraction", "list", "--type", "nonsense"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown abstraction type \"nonsense\""),
        "{}",
        stderr(&o)
    );
    let o = zrepl(&["zfs-abstraction", "list", "--fs", "a@b"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid --fs dataset"),
        "{}",
        stderr(&o)
    );
    let o = zrepl(&["zfs-abstraction", "list", "--fs", "tank<:maybe"]);
    assert_eq!(o.status.code(), Some(1));
    let o = zrepl(&[
        "zfs-abstraction",
        "create",
        "step",
        "-t",
        "pool/a",
        "-j",
        "job",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid --target"), "{}", stderr(&o));
    let empty = tempfile::tempdir().unwrap();
    let o = zrepl_with_path(&["zfs-abstraction", "list"], empty.path().to_str().unwrap());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("ZFS is not installed or not in PATH"),
        "{}",
        stderr(&o)
    );
    let o = zrepl_with_path(
        &["test", "placeholder", "--all"],
        empty.path().to_str().unwrap(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("ZFS is not installed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn decoderesumetoken_json_matches_schema() {
    let token = "1-e3f40c323-f8-789c636064000310a500c4ec50360710e72765a52697303030419460caa7a515a796806474e0f26c48f2499525a9c540da454f0fabfe92fcf4d2cc140686c88a76d578ae45530c90e439c1f27989b9a90c0c5545a905390539892569f945b940234bf48b8b921d12c1e6713320dc9f9c9f5b50945a5c9c9f0d119380ba07265f94580e936200004ff12141";
    let o = zrepl(&["test", "decoderesumetoken", "--token", token]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_valid(&schema("decoderesumetoken.schema.json"), &v);
}

#[test]
fn completions_and_man_page() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, needle) in [
        ("bash", "_zrepl()"),
        ("zsh", "#compdef zrepl"),
        ("fish", "complete -c zrepl"),
    ] {
        let p = dir.path().join(format!("zrepl.{shell}"));
        let o = zrepl(&["gencompletion", shell, p.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains(needle), "{shell}: {}", &s[..s.len().min(200)]);
        assert!(
            s.contains("configcheck") && s.contains("zfs-abstraction"),
            "{shell}"
        );
    }
    let p = dir.path().join("zrepl.1");
    let o = zrepl(&["genman", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let man = std::fs::read_to_string(&p).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH zrepl"),
        "{}",
        &man[..man.len().min(200)]
    );
    let o = zrepl(&["gencompletion", "bash", "/nonexistent/dir/x"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn daemon_refuses_database_hooks_with_bad_dsns() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // (hook, part of the error)
    let table = [
        (
            "{type: mysql-lock-tables, dsn: \"u:pw@tcp(localhost)\", filesystems: {\"p<\": true}}",
            "missing the slash",
        ),
        (
            "{type: mysql-lock-tables, dsn: \"u@tcp(localhost)/?tls=true\", filesystems: {\"p<\": true}}",
            "without TLS",
        ),
        (
            "{type: postgres-checkpoint, dsn: \"host=h user=u sslmode=require\", filesystems: {\"p<\": true}}",
            "without TLS",
        ),
        (
            "{type: postgres-checkpoint, dsn: \"host=h user=u nonsense=1\", filesystems: {\"p<\": true}}",
            "nonsense",
        ),
    ];
    for (hook, want) in table {
        let config = dir.path().join("zrepl.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  control:\n    sockpath: {}/control\njobs:\n- type: snap\n  name: s\n  filesystems: {{\"p<\": true}}\n  snapshotting:\n    type: periodic\n    prefix: zrepl_\n    interval: 1h\n    hooks:\n    - {{type: command, path: /bin/true}}\n    - {hook}\n  pruning: {{keep: [{{type: last_n, count: 1}}]}}\n",
                run.display()
            ),
        )
        .unwrap();
        let o = zrepl(&["--config", config.to_str().unwrap(), "daemon"]);
        assert_eq!(o.status.code(), Some(1), "{hook}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("snapshotting hook #2") && stderr(&o).contains(want),
            "{hook}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn status_interactive_needs_a_tty() {
    // stdout is a pipe here: zrepl's rule allows only dump and raw.
    let push = sample("push.yml");
    for args in [
        vec!["--config", push.as_str(), "status"],
        vec!["--config", push.as_str(), "status", "--mode", "interactive"],
    ] {
        let o = zrepl(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("stdout is not a tty, please use --mode dump or --mode raw"),
            "{}",
            stderr(&o)
        );
    }
    // The delay is a Go duration.
    let o = zrepl(&["--config", &push, "status", "-d", "1 fortnight"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // dump still runs (and fails only because no daemon listens).
    let o = zrepl(&["--config", &push, "status", "--mode", "dump", "-d", "500ms"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("control socket"), "{}", stderr(&o));
}

/// `GET path` over plain HTTP/1.0; returns the whole response.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn daemon_serves_prometheus_metrics() {
    use std::os::unix::fs::PermissionsExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = dir.path().join("run/control");
    let config = dir.path().join("zrepl.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  control:\n    sockpath: {}\n  monitoring:\n  - {{type: prometheus, listen: \"{addr}\", listen_freebind: true}}\n\
             jobs:\n- type: sink\n  name: sink\n  root_fs: pool/sink\n  serve: {{type: local, listener_name: l}}\n",
            sock.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_zrepl"))
        .args(["--config", config.to_str().unwrap(), "daemon"])
        .spawn()
        .unwrap();
    let _d = Daemon {
        child,
        _dir: dir,
        config: config.clone(),
    };
    let mut resp = String::new();
    for _ in 0..200 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            resp = http_get(&addr, "/metrics");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(
        resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"),
        "{resp}"
    );
    assert!(resp.contains("text/plain; version=0.0.4"), "{resp}");
    assert!(resp.contains("# TYPE zrepl_start_time gauge"), "{resp}");
    assert!(
        resp.contains("zrepl_job_error{zrepl_job=\"sink\"} 0"),
        "{resp}"
    );
    assert!(http_get(&addr, "/nope").contains(" 404 "));

    // The port is taken now: a second daemon refuses to start, naming the listener.
    let o = zrepl(&["--config", config.to_str().unwrap(), "daemon"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("prometheus listener {addr}")),
        "{}",
        stderr(&o)
    );
}

/// A `zfs` that lists nothing, or fails while a file `fail` exists next to it.
fn switchable_zfs_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("zfs");
    std::fs::write(
        &p,
        "#!/bin/sh\nif [ -e \"$(dirname \"$0\")/fail\" ]; then echo 'mock zfs: broken pool' >&2; exit 1; fi\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn snap_config(dir: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = dir.join("zrepl.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  control:\n    sockpath: {}/run/control\njobs:\n- type: snap\n  name: snap\n  filesystems: {{\"pool<\": true}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep: [{{type: last_n, count: 1}}]}}\n- type: sink\n  name: sink\n  root_fs: pool/sink\n  serve: {{type: local, listener_name: l}}\n- type: source\n  name: src\n  filesystems: {{\"pool<\": true}}\n  snapshotting: {{type: periodic, prefix: zrepl_, interval: 1h}}\n  serve: {{type: local, listener_name: srcl}}\n",
            dir.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn wakeup_wait_reports_the_run_and_its_exit_code() {
    let zfs = switchable_zfs_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = snap_config(dir.path());
    let cfg = config.to_str().unwrap();
    let path = format!(
        "{}:{}",
        zfs.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_zrepl"))
        .args(["--config", cfg, "daemon"])
        .env("PATH", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sock = dir.path().join("run/control");
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let run = |args: &[&str]| zrepl_with_path(args, &path);
    // A good run: exit 0 and a summary.
    let o = run(&["--config", cfg, "signal", "wakeup", "snap", "--wait"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("job \"snap\" run #1: no replication (snap job); pruning done"),
        "{}",
        stdout(&o)
    );
    // Pruning cannot list: exit 4, the summary says why.
    std::fs::write(zfs.path().join("fail"), "").unwrap();
    let o = run(&[
        "--config",
        cfg,
        "signal",
        "wakeup",
        "snap",
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("run #2")
            && stdout(&o).contains("pruning failed")
            && stdout(&o).contains("broken pool"),
        "{}",
        stdout(&o)
    );
    // Jobs that cannot be woken up, and --wait with reset, fail with exit 1.
    let o = run(&["--config", cfg, "signal", "wakeup", "sink", "--wait"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be woken up"), "{}", stderr(&o));
    // A source replicates when its pull job runs: no run to wait for.
    let o = run(&["--config", cfg, "signal", "wakeup", "src", "--wait"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be woken up"), "{}", stderr(&o));
    let o = run(&["--config", cfg, "signal", "reset", "snap", "--wait"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--wait works with wakeup only"),
        "{}",
        stderr(&o)
    );
    // `zrepl run` refuses a job the daemon runs.
    let o = run(&["--config", cfg, "run", "snap"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("use `zrepl signal wakeup snap --wait`"),
        "{}",
        stderr(&o)
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn run_runs_one_cycle_without_a_daemon() {
    let zfs = switchable_zfs_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = snap_config(dir.path());
    let cfg = config.to_str().unwrap();
    let path = format!(
        "{}:{}",
        zfs.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = zrepl_with_path(&["--config", cfg, "run", "snap"], &path);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("pruning done, 0 destroyed"),
        "{}",
        stdout(&o)
    );
    std::fs::write(zfs.path().join("fail"), "").unwrap();
    let o = zrepl_with_path(&["--config", cfg, "run", "snap"], &path);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    let o = zrepl_with_path(&["--config", cfg, "run", "nope"], &path);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("job \"nope\" does not exist"),
        "{}",
        stderr(&o)
    );
    let o = zrepl_with_path(&["--config", cfg, "run", "sink"], &path);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is a sink job"), "{}", stderr(&o));
    // --timeout needs --wait (a usage error).
    let o = zrepl_with_path(
        &[
            "--config",
            cfg,
            "signal",
            "wakeup",
            "snap",
            "--timeout",
            "5s",
        ],
        &path,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// The config crate's loader for the tests: the real file system.
struct TestLoader;

impl zrepl_config::SourceLoader for TestLoader {
    fn read(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn is_dir(&self, path: &std::path::Path) -> std::io::Result<bool> {
        Ok(std::fs::metadata(path)?.is_dir())
    }
    fn list_dir(&self, path: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }
}

#[test]
fn configcheck_and_daemon_report_every_problem_at_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = dir.path().join("zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control:\n    sockpath: {d}/run/control\njobs:\n\
             - {{type: sink, name: a, root_fs: pool/a, serve: {{type: local, listener_name: l}}}}\n\
             - {{type: sink, name: b, root_fs: pool/b, serve: {{type: local, listener_name: l}}}}\n\
             - {{type: sink, name: t, root_fs: pool/t, serve: {{type: tls, listen: \":8888\", ca: {d}/no-ca.crt, cert: {d}/no.crt, key: {d}/no.key, client_cns: [x]}}}}\n\
             - {{type: push, name: p, connect: {{type: local, listener_name: nowhere, client_identity: c}}, filesystems: {{\"pool<\": true}}, snapshotting: {{type: manual}}, pruning: {{keep_sender: [{{type: last_n, count: 1}}], keep_receiver: [{{type: last_n, count: 1}}]}}}}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let want = [
        "local listener \"l\" is served by more than one job: \"a\", \"b\"",
        "job \"p\": connect: no sink job of this config serves local listener \"nowhere\"",
        "job \"t\": serve: cannot read CA file",
    ];
    let o = zrepl(&["--config", c, "configcheck"]);
    assert_eq!(o.status.code(), Some(1));
    for w in want {
        assert!(stderr(&o).contains(w), "configcheck: {w}: {}", stderr(&o));
    }
    assert!(stderr(&o).contains("3 problem(s)"), "{}", stderr(&o));
    // --skip-cert-check leaves out only the certificate problem.
    let o = zrepl(&["--config", c, "configcheck", "--skip-cert-check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("2 problem(s)") && !stderr(&o).contains("CA file"),
        "{}",
        stderr(&o)
    );
    // The daemon refuses the same config with the same problems, before it starts anything.
    let o = zrepl(&["--config", c, "daemon"]);
    assert_eq!(o.status.code(), Some(1));
    for w in want {
        assert!(stderr(&o).contains(w), "daemon: {w}: {}", stderr(&o));
    }
    assert!(
        !dir.path().join("run/control").exists(),
        "the daemon started"
    );
}
