//! Commands around a replication run (`hooks: {pre, post}` of push and pull jobs, zrepl#394;
//! the syntax of zrepl's fork dsh2dsh). `pre` runs before the replication; a failure with
//! `err_is_fatal` prevents the run. `post` runs after the run's pruning, also after a failed or
//! prevented run, and learns the result from its environment.

use std::collections::BTreeMap;
use std::time::Duration;

use zrepl_config::JobHook;

/// At most this much hook output is logged.
const MAX_OUTPUT: usize = 1 << 20;

/// The environment a hook gets (besides the daemon's own and the hook's `env`), decided from
/// the run: pure.
pub(crate) fn hook_env(
    job: &str,
    edge: &str,
    run: u64,
    result: Option<(&str, Option<&str>, u64)>,
) -> BTreeMap<&'static str, String> {
    let mut env = BTreeMap::new();
    env.insert("ZREPL_JOB_NAME", job.to_string());
    env.insert("ZREPL_HOOKTYPE", format!("{edge}_replication"));
    env.insert("ZREPL_RUN", run.to_string());
    if let Some((state, err, bytes)) = result {
        env.insert("ZREPL_RESULT", state.to_string());
        env.insert("ZREPL_JOB_ERR", err.unwrap_or("").to_string());
        env.insert("ZREPL_BYTES", bytes.to_string());
    }
    env
}

/// Reads `r` to its end, keeping the first [`MAX_OUTPUT`] bytes (the rest is read and
/// dropped, so the hook never blocks on a full pipe and its output never fills our memory).
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(mut r: R) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut cut = false;
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return (kept, cut),
            Ok(n) => {
                let room = MAX_OUTPUT - kept.len();
                cut |= n > room;
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// Runs `hook` directly (no shell) with `env`; its output is logged (at most [`MAX_OUTPUT`]
/// bytes of each stream). On `timeout` the hook's process is killed. `Err` says why it failed.
pub(crate) async fn run(
    hook: &JobHook,
    job: &str,
    env: &BTreeMap<&'static str, String>,
) -> Result<(), String> {
    let edge = env.get("ZREPL_HOOKTYPE").cloned().unwrap_or_default();
    let mut cmd = crate::hook_process::command(
        &hook.path,
        &hook.args,
        env.iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(hook.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    );
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{edge} hook {}: cannot run: {e}", hook.path))?;
    // Cancelled (reset, shutdown) while the hook runs: its whole group goes.
    let group = crate::hook_process::GroupGuard::new(&child);
    let timeout = u64::try_from(hook.timeout.as_nanos())
        .ok()
        .filter(|n| *n > 0)
        .map(Duration::from_nanos);
    let stdout = tokio::spawn(read_capped(child.stdout.take().expect("piped")));
    let stderr = tokio::spawn(read_capped(child.stderr.take().expect("piped")));
    let status = match timeout {
        None => child.wait().await,
        Some(t) => match tokio::time::timeout(t, child.wait()).await {
            Ok(r) => r,
            Err(_) => {
                // The hook and everything it started (its process group), before the leader
                // is reaped (its pid, the group's id, could be reused after that).
                crate::hook_process::kill_group(&child);
                let _ = child.kill().await;
                group.disarm();
                stdout.abort();
                stderr.abort();
                return Err(format!("{edge} hook {} timed out after {t:?}", hook.path));
            }
        },
    }
    .map_err(|e| format!("{edge} hook {}: {e}", hook.path))?;
    group.disarm();
    // A process the hook left running in the background may keep the pipes open: its output
    // is not waited for.
    let collect = |h: tokio::task::JoinHandle<(Vec<u8>, bool)>| async move {
        let abort = h.abort_handle();
        match tokio::time::timeout(Duration::from_secs(2), h).await {
            Ok(Ok(x)) => x,
            _ => {
                abort.abort();
                (Vec::new(), false)
            }
        }
    };
    let ((out, out_cut), (err, err_cut)) = (collect(stdout).await, collect(stderr).await);
    for line in String::from_utf8_lossy(&out).lines() {
        tracing::info!(job, hook = %hook.path, edge = %edge, stdout = line, "hook output");
    }
    for line in String::from_utf8_lossy(&err).lines() {
        tracing::warn!(job, hook = %hook.path, edge = %edge, stderr = line, "hook output");
    }
    if out_cut || err_cut {
        tracing::warn!(job, hook = %hook.path, edge = %edge, max_bytes = MAX_OUTPUT, "hook output cut");
    }
    if status.success() {
        Ok(())
    } else {
        Err(format!("{edge} hook {} failed: {status}", hook.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, fatal: bool, timeout_s: i64) -> (tempfile::TempDir, JobHook) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hook.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let h = JobHook {
            path: p.display().to_string(),
            args: vec!["one".into(), "two words".into()],
            env: [("MY_VAR".to_string(), "mine".to_string())].into(),
            timeout: zrepl_config::units::GoDuration::from_secs(timeout_s),
            err_is_fatal: fatal,
        };
        (dir, h)
    }

    #[test]
    fn env_table() {
        let pre = hook_env("push", "pre", 3, None);
        assert_eq!(pre["ZREPL_HOOKTYPE"], "pre_replication");
        assert_eq!(pre["ZREPL_RUN"], "3");
        assert!(!pre.contains_key("ZREPL_RESULT"));
        let post = hook_env("push", "post", 3, Some(("failed", Some("boom"), 42)));
        assert_eq!(post["ZREPL_RESULT"], "failed");
        assert_eq!(post["ZREPL_JOB_ERR"], "boom");
        assert_eq!(post["ZREPL_BYTES"], "42");
        let ok = hook_env("push", "post", 4, Some(("done", None, 0)));
        assert_eq!(ok["ZREPL_JOB_ERR"], "");
    }

    #[tokio::test]
    async fn hooks_get_args_env_and_fail_or_time_out() {
        let (dir, h) = hook(
            "echo \"$1|$2|$MY_VAR|$ZREPL_JOB_NAME|$ZREPL_HOOKTYPE\" > \"$(dirname \"$0\")/out\"",
            false,
            10,
        );
        run(&h, "push", &hook_env("push", "pre", 1, None))
            .await
            .unwrap();
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(out.trim(), "one|two words|mine|push|pre_replication");

        let (_d, h) = hook("exit 7", true, 10);
        let e = run(&h, "push", &hook_env("push", "pre", 1, None))
            .await
            .unwrap_err();
        assert!(
            e.contains("pre_replication hook") && e.contains("failed") && e.contains("7"),
            "{e}"
        );

        let (_d, h) = hook("sleep 30", true, 1);
        let t = std::time::Instant::now();
        let e = run(&h, "push", &hook_env("push", "post", 1, None))
            .await
            .unwrap_err();
        assert!(e.contains("timed out after 1s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));

        // Much more output than is kept: the hook neither blocks nor fills memory.
        let (_d, big) = hook("head -c 5000000 /dev/zero; echo done >&2", true, 20);
        run(&big, "push", &hook_env("push", "post", 1, None))
            .await
            .unwrap();
        let (kept, cut) = read_capped(std::io::Cursor::new(vec![1u8; MAX_OUTPUT + 10])).await;
        assert!(cut && kept.len() == MAX_OUTPUT);

        let mut h = h;
        h.path = "/nonexistent/hook".into();
        let e = run(&h, "push", &hook_env("push", "pre", 1, None))
            .await
            .unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
    }
}
