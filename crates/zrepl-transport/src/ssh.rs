//! `ssh+stdinserver` connect: the system's OpenSSH client, whose stdin/stdout are the connection.
//! On the server, `authorized_keys` forces `zrepl stdinserver IDENTITY` (see `stdinserver.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::TransportError;

#[derive(Debug, Clone)]
pub struct SshConnector {
    pub ssh_command: String,
    pub host: String,
    pub user: String,
    pub port: u16,
    pub identity_file: String,
    pub options: Vec<String>,
    pub dial_timeout: Duration,
}

impl SshConnector {
    /// The ssh command line, as zrepl builds it.
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![
            self.ssh_command.clone(),
            "-p".into(),
            self.port.to_string(),
            "-T".into(),
            "-i".into(),
            self.identity_file.clone(),
            "-o".into(),
            "BatchMode=yes".into(),
        ];
        for o in &self.options {
            v.push("-o".into());
            v.push(o.clone());
        }
        v.push(format!("{}@{}", self.user, self.host));
        v
    }

    /// Spawns ssh with an empty environment (as zrepl: no agent, no locale surprises).
    pub(crate) fn spawn(&self) -> Result<SshIo, TransportError> {
        let argv = self.argv();
        let program = resolve(&argv[0]).ok_or_else(|| {
            TransportError::Config(format!("ssh command {:?} not found in PATH", argv[0]))
        })?;
        let mut child = tokio::process::Command::new(program)
            .args(&argv[1..])
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Connect(format!("cannot run {}: {e}", argv[0])))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let errors = Arc::new(Mutex::new(String::new()));
        let sink = errors.clone();
        let host = self.host.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::warn!(subsystem = "transport", host = %host, stderr = %l, "ssh");
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                if s.len() < 4096 {
                    if !s.is_empty() {
                        s.push_str("; ");
                    }
                    s.push_str(&l);
                }
            }
        });
        Ok(SshIo {
            child,
            stdin,
            stdout,
            errors,
            exit_wait: None,
        })
    }
}

/// Finds a program in the daemon's PATH (the child's environment is empty).
fn resolve(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return Some(program.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The ssh child as a byte stream. Dropping it kills ssh.
pub struct SshIo {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    errors: Arc<Mutex<String>>,
    /// At EOF: polling for ssh's exit status, until this deadline.
    exit_wait: Option<(tokio::time::Instant, Pin<Box<tokio::time::Sleep>>)>,
}

/// How long EOF waits for ssh to exit before its stderr is taken as the reason.
const EXIT_GRACE: Duration = Duration::from_secs(2);

impl AsyncRead for SshIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stdout).poll_read(cx, buf);
        if !matches!(r, Poll::Ready(Ok(()))) || buf.filled().len() != before {
            return r;
        }
        // EOF. ssh writes warnings too ("Permanently added ... to the list of known hosts"), so
        // what it wrote to stderr is the error only if it failed: wait (briefly) for its exit
        // status, and after a failure for its last words to be read.
        let stderr = || {
            this.errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        loop {
            let now = tokio::time::Instant::now();
            let status = match this.child.try_wait() {
                Ok(s) => s,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let (deadline, sleep) = this.exit_wait.get_or_insert_with(|| {
                (
                    now + EXIT_GRACE,
                    Box::pin(tokio::time::sleep(Duration::from_millis(10))),
                )
            });
            let late = now >= *deadline;
            match status {
                Some(st) if st.success() => return Poll::Ready(Ok(())),
                Some(st) => {
                    let e = stderr();
                    if !e.is_empty() || late {
                        return Poll::Ready(Err(std::io::Error::other(format!(
                            "ssh exited ({st}): {e}"
                        ))));
                    }
                }
                None if late => {
                    // Still running although its output ended: what it said is all we know.
                    let e = stderr();
                    return Poll::Ready(if e.is_empty() {
                        Ok(())
                    } else {
                        Err(std::io::Error::other(format!("ssh: {e}")))
                    });
                }
                None => {}
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            sleep.as_mut().reset(now + Duration::from_millis(10));
        }
    }
}

impl AsyncWrite for SshIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}
