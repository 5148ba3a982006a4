//! How the daemon starts users' hook commands (snapshot, replication and session hooks): with an
//! explicit environment and in a process group of their own, so that a timeout ends the hook and
//! everything it started (a script's `sleep`, a backgrounded helper), not only the first process.

use std::collections::BTreeMap;

/// The `PATH` hooks get when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment of a hook: `PATH` and `HOME` of the daemon (so scripts find their tools),
/// then `vars` (zrepl's `ZREPL_*` variables, a hook's own `env`); nothing else of the daemon's
/// environment (credentials, a systemd notify socket, ...) leaks into users' commands.
pub(crate) fn hook_env<'a>(
    daemon: impl Fn(&str) -> Option<String>,
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        daemon("PATH").unwrap_or_else(|| DEFAULT_PATH.to_string()),
    );
    if let Some(h) = daemon("HOME") {
        env.insert("HOME".to_string(), h);
    }
    for (k, v) in vars {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// A command for a hook: no shell, stdin from /dev/null, output piped, the environment of
/// [`hook_env`], a new process group (see [`kill_group`]), killed if dropped.
pub(crate) fn command<'a>(
    path: &str,
    args: &[String],
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(args)
        .env_clear()
        .envs(hook_env(|k| std::env::var(k).ok(), vars))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Kills the process group a hook leads (SIGKILL): the hook and whatever it started.
pub(crate) fn kill_group(child: &tokio::process::Child) {
    kill_group_id(child.id());
}

/// [`kill_group`] by the leader's pid (as `Child::id` returned it before the child was
/// consumed).
pub(crate) fn kill_group_id(leader: Option<u32>) {
    let pid = leader
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Kills a hook's process group when dropped before [`GroupGuard::disarm`]: a hook whose
/// caller is cancelled (`zrepl signal reset`, shutdown) ends with everything it started. A hook
/// that finished may leave background processes on purpose: those are not touched.
pub(crate) struct GroupGuard(Option<u32>);

impl GroupGuard {
    pub(crate) fn new(child: &tokio::process::Child) -> Self {
        GroupGuard(child.id())
    }

    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group_id(self.0.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_explicit() {
        let daemon = |k: &str| match k {
            "PATH" => Some("/opt/bin:/usr/bin".to_string()),
            "HOME" => Some("/root".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_string()),
            _ => None,
        };
        let env = hook_env(daemon, [("ZREPL_FS", "pool/a"), ("MINE", "1")]);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["HOME", "MINE", "PATH", "ZREPL_FS"]);
        assert_eq!(env["PATH"], "/opt/bin:/usr/bin");
        // Without PATH in the daemon's environment, a usual one.
        let env = hook_env(|_| None, []);
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert!(!env.contains_key("HOME"));
        // A hook's own variables win over the daemon's PATH.
        let env = hook_env(daemon, [("PATH", "/x")]);
        assert_eq!(env["PATH"], "/x");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The hook starts a background sleeper, records its pid, and waits.
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let mut child = command("/bin/sh", &["-c".to_string(), script], [])
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let sleeper: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        kill_group(&child);
        let _ = child.wait().await;
        // The grandchild is gone too (reaped by init; give it a moment).
        let alive = |pid: i32| {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
        };
        for _ in 0..200 {
            if !alive(sleeper) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the hook's background process {sleeper} survived the kill");
    }
}
