//! `zrepl daemon` with the config's logging outlets.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

fn config(dir: &std::path::Path, logging: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = dir.join("zrepl.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  control:\n    sockpath: {}\n  logging:\n{logging}jobs:\n- type: sink\n  name: sink\n  root_fs: pool/sink\n  serve: {{type: local, listener_name: l}}\n",
            dir.join("run/control").display()
        ),
    )
    .unwrap();
    config
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn daemon_logs_json_to_stdout_and_logfmt_to_syslog() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("syslog.sock");
    let syslog = UnixDatagram::bind(&sock_path).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let cfg = config(
        dir.path(),
        "    - {type: stdout, level: info, format: json}\n    - {type: syslog, level: info, format: logfmt, facility: daemon}\n",
    );
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_zrepl"))
            .args(["--config", cfg.to_str().unwrap(), "daemon"])
            .env_remove("ZREPL_LOG")
            .env("ZREPL_SYSLOG_SOCKET", &sock_path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let mut running = None;
    for line in out.lines() {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(
            v["time"].as_str().is_some_and(|t| t.contains('T')),
            "{line}"
        );
        if v["msg"] == "daemon running" {
            running = Some(v);
            break;
        }
    }
    let v = running.expect("no 'daemon running' entry on stdout");
    assert_eq!(v["level"], "info");
    assert_eq!(v["jobs"], 1);

    // The same entry on syslog: facility daemon (3), severity info (6), tag zrepl[pid].
    let tag = "<30>";
    let pid = format!(" zrepl[{}]: ", child.0.id());
    let mut buf = vec![0u8; 65536];
    loop {
        let n = syslog.recv(&mut buf).expect("no syslog datagram");
        let d = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(d.starts_with(tag), "{d:?}");
        assert!(d.contains(&pid), "{d:?}");
        if d.contains("msg=\"daemon running\"") {
            assert!(d.contains(" jobs=1"), "{d:?}");
            break;
        }
    }
}

#[test]
fn daemon_refuses_to_start_with_unreadable_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "    - type: tcp\n      level: info\n      format: json\n      address: 127.0.0.1:1\n      tls: {ca: /nonexistent/ca.pem, cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_zrepl"))
        .args(["--config", cfg.to_str().unwrap(), "daemon"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot set up logging outlets") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
    assert!(
        !dir.path().join("run/control").exists(),
        "the daemon must not have started"
    );
}
