//! Log outlets against a real syslog daemon: rsyslogd on /dev/log receives the daemon's
//! entries with zrepl's facility, severity, tag and structured replication fields.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pool::sh;
use crate::replication::spawn_daemon;
use crate::{Ctx, TestResult};

/// Kills and reaps a child on drop.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `key=value` pairs of a logfmt line (bare or quoted values; quotes kept out).
fn logfmt_pairs(line: &str) -> Vec<(String, String)> {
    let re = regex::Regex::new(r#"([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)"#).expect("valid regex");
    re.captures_iter(line)
        .map(|c| {
            let v = &c[2];
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                .unwrap_or_else(|| v.to_string());
            (c[1].to_string(), v)
        })
        .collect()
}

/// A push and a sink job over `local`, a stdout and a syslog outlet (`local5`, logfmt); rsyslogd
/// (started here, listening on /dev/log as the system's would) writes facility, severity, tag and
/// message of every local5 entry to a file.
pub async fn logging_syslog_outlet_to_rsyslogd(t: Ctx) -> TestResult {
    if std::path::Path::new("/dev/log").exists() {
        return Err("/dev/log already exists: this test starts its own rsyslogd there".into());
    }
    let dir = format!("/tmp/{}-logging", t.pool);
    std::fs::create_dir_all(&dir)?;
    let out = format!("{dir}/local5.log");
    let conf = format!("{dir}/rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{dir}\")\n\
             module(load=\"imuxsock\" SysSock.Name=\"/dev/log\" SysSock.RateLimit.Interval=\"0\")\n\
             template(name=\"t\" type=\"string\" string=\"%syslogfacility-text% %syslogseverity-text% %syslogtag% %msg%\\n\")\n\
             local5.* action(type=\"omfile\" file=\"{out}\" template=\"t\")\n"
        ),
    )?;
    let _rsyslogd = Reap(
        Command::new("rsyslogd")
            .args(["-n", "-f", &conf, "-i", &format!("{dir}/rsyslogd.pid")])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start rsyslogd (guest package rsyslog): {e}"))?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::path::Path::new("/dev/log").exists() {
        if Instant::now() > deadline {
            return Err("rsyslogd did not create /dev/log".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let res = run_daemon(&t, &dir, &out).await;
    let _ = std::fs::remove_file("/dev/log");
    res
}

async fn run_daemon(t: &Ctx, dir: &str, out: &str) -> TestResult {
    let pool = &t.pool;
    let src = format!("{pool}/src/a");
    sh(&["zfs", "create", "-p", &src])?;
    sh(&["zfs", "create", "-p", &format!("{pool}/sink")])?;
    sh(&["zfs", "snapshot", &format!("{src}@1")])?;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control:\n    sockpath: {dir}/run/control\n  logging:\n\
             \x20   - {{type: stdout, level: info, format: human}}\n\
             \x20   - {{type: syslog, level: info, format: logfmt, facility: local5}}\n\
             jobs:\n\
             - type: sink\n  name: sink\n  root_fs: {pool}/sink\n  serve: {{type: local, listener_name: l}}\n\
             - type: push\n  name: push\n  connect: {{type: local, listener_name: l, client_identity: client}}\n  filesystems: {{\"{src}\": true}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: last_n, count: 5}}], keep_receiver: [{{type: last_n, count: 5}}]}}\n"
        ),
    )?;
    let log_path = format!("{dir}/daemon.log");
    let daemon = Reap(spawn_daemon(&cfg, &log_path)?);
    let pid = daemon.0.id();
    sh(&["zrepl", "--config", &cfg, "signal", "wakeup", "push"])?;

    // Wait for the step entry of the initial replication in rsyslogd's file.
    let deadline = Instant::now() + Duration::from_secs(120);
    let step_line = loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        if let Some(l) = text
            .lines()
            .find(|l| l.contains("msg=\"replicating step\""))
        {
            break l.to_string();
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no 'replicating step' entry from rsyslogd:\n{text}\ndaemon stdout:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut parts = step_line.splitn(4, ' ');
    let (facility, severity, tag, msg) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").trim(),
    );
    let ctx = format!("{step_line:?}");
    if facility != "local5" || severity != "info" || tag != format!("zrepl[{pid}]:") {
        return Err(format!("facility/severity/tag: {ctx}").into());
    }
    let kv = logfmt_pairs(msg);
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    if get("subsystem") != Some("repl")
        || get("fs") != Some(src.as_str())
        || get("step") != Some("full send of @1")
        || get("span").is_none_or(|s| !s.ends_with("repl$fs$step"))
    {
        return Err(format!("structured fields: {kv:?} in {ctx}").into());
    }
    // The syslog formatter has no time/level metadata (syslog has its own).
    if get("time").is_some() || get("level").is_some() {
        return Err(format!("metadata in syslog message: {ctx}").into());
    }
    // The stdout outlet got the same entry in the human format.
    let stdout = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !stdout.lines().any(|l| {
        l.contains("[INFO]")
            && l.contains("[repl]")
            && l.contains(": replicating step")
            && l.contains(&format!("fs=\"{src}\""))
    }) {
        return Err(format!("stdout lacks the step entry:\n{stdout}").into());
    }
    Ok(())
}
