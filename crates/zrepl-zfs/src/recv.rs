//! `zfs recv` fed from an [`AsyncRead`].

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;

use crate::command::{args, Binary, CommandResult, StdinMode, Zfs};
use crate::error::ZfsError;
use crate::names::{check_property_name, check_property_value, VersionPath};
use crate::parse::{is_recv_destroy_or_overwrite_encrypted, recv_resume_token};
use crate::pipe::{capture, ring_contents, set_pipe_capacity};

/// Size of the buffer between the input stream and `zfs recv`'s stdin.
const COPY_BUF: usize = 1 << 20;

/// A validated receive request: `zfs recv [-F] [-s] [-u] [-x p]... [-o p=v]... <fs>@<snap>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvRequest {
    /// The snapshot to create (`fs@snap`).
    pub target: VersionPath,
    /// `-F`: roll back / destroy what is in the way. Only if explicitly wanted.
    pub force_rollback: bool,
    /// `-s`: keep partial state on failure (resumable). Callers check
    /// [`Zfs::resumable_recv_supported`] first.
    pub save_partial: bool,
    /// `-u`: do not mount.
    pub no_mount: bool,
    /// `-x <prop>`.
    pub exclude_props: Vec<String>,
    /// `-o <prop>=<value>`.
    pub override_props: Vec<(String, String)>,
    /// The stream is a `zfs send -I` package: received into `target`'s filesystem, each
    /// snapshot named as in the stream (OpenZFS refuses a snapshot name for a multi-snapshot
    /// stream). Never with `force_rollback`.
    pub package: bool,
}

impl RecvRequest {
    /// A plain `zfs recv <target>`.
    pub fn new(target: VersionPath) -> Self {
        RecvRequest {
            target,
            force_rollback: false,
            save_partial: false,
            no_mount: false,
            exclude_props: Vec::new(),
            override_props: Vec::new(),
            package: false,
        }
    }

    pub(crate) fn args(&self) -> Result<Vec<String>, ZfsError> {
        if !self.target.is_snapshot() {
            return Err(ZfsError::InvalidArgument(format!(
                "must receive into a snapshot, got {}",
                self.target
            )));
        }
        let mut a = args!["recv"];
        if self.force_rollback {
            a.push("-F".into());
        }
        if self.save_partial {
            a.push("-s".into());
        }
        if self.no_mount {
            a.push("-u".into());
        }
        for p in &self.exclude_props {
            check_property_name(p)?;
            a.extend(args!["-x", p.clone()]);
        }
        for (k, v) in &self.override_props {
            check_property_name(k)?;
            check_property_value(v)?;
            a.extend(args!["-o", format!("{k}={v}")]);
        }
        if self.package {
            if self.force_rollback {
                return Err(ZfsError::InvalidArgument(
                    "a package is never received with -F".into(),
                ));
            }
            a.extend(args!["--", self.target.fs().to_string()]);
        } else {
            a.extend(args!["--", self.target.to_string()]);
        }
        Ok(a)
    }
}

/// Why copying into `zfs recv` stopped early.
enum CopyError {
    /// Reading the input failed: the likely root cause of the receive failure.
    Input(io::Error),
    /// Writing to `zfs recv` failed: it exited; its status and stderr tell why.
    Output,
}

async fn copy_into<R: AsyncRead + Unpin>(
    input: &mut R,
    mut stdin: ChildStdin,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).await.map_err(CopyError::Input)?;
        if n == 0 {
            break;
        }
        stdin
            .write_all(&buf[..n])
            .await
            .map_err(|_| CopyError::Output)?;
        total += n as u64;
    }
    // Dropping stdin closes the pipe: `zfs recv` sees EOF. A stream cut short therefore ends as a
    // truncated stream, which `zfs recv -s` turns into resumable state.
    drop(stdin);
    Ok(total)
}

impl Zfs {
    /// Runs `zfs recv` with `input` as its stdin and returns the number of bytes fed.
    ///
    /// The input is copied until EOF (then stdin is closed) while stdout and stderr are drained
    /// concurrently; if `zfs recv` exits first, copying stops. Errors are classified:
    /// [`ZfsError::RecvFailedWithResumeToken`] (with the token from stderr),
    /// [`ZfsError::RecvDestroyOrOverwriteEncrypted`], [`ZfsError::RecvInput`] (the input failed),
    /// else [`ZfsError::Command`]. Dropping the returned future kills `zfs recv`.
    pub async fn receive<R>(&self, req: &RecvRequest, mut input: R) -> Result<u64, ZfsError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let a = req.args()?;
        let session = self.session().await;
        let (mut child, tracker) = self.spawn(Binary::Zfs, &a, StdinMode::Piped, session)?;
        let argv = tracker.argv();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ZfsError::Io {
                argv,
                source: io::Error::other("child pipes missing"),
            });
        };
        set_pipe_capacity(&stdin, self.inner.config.pipe_capacity_hint);
        let cap = self.inner.config.stream_stderr_capture;
        let (err_ring, err_task) = capture(stderr, cap);
        // stdout is discarded but must be drained (old ZoL wrote to it and blocked).
        let (_out_ring, out_task) = capture(stdout, 4096);

        let copy = copy_into(&mut input, stdin);
        tokio::pin!(copy);
        let mut copied: Option<Result<u64, CopyError>> = None;
        let status = loop {
            tokio::select! {
                r = &mut copy, if copied.is_none() => copied = Some(r),
                s = child.wait() => break s,
            }
        };
        let _ = out_task.await;
        let _ = err_task.await;
        let stderr = ring_contents(&err_ring);
        let status = match status {
            Ok(s) => s,
            Err(source) => {
                tracker.finish(CommandResult::Failure);
                return Err(ZfsError::Io { argv, source });
            }
        };
        if status.success() {
            tracker.finish(CommandResult::Success);
            return Ok(match copied {
                Some(Ok(n)) => n,
                _ => 0,
            });
        }
        tracker.finish(CommandResult::Failure);
        let input_error = match copied {
            Some(Err(CopyError::Input(e))) => Some(e),
            _ => None,
        };
        if let Some(token) = recv_resume_token(&stderr) {
            return Err(ZfsError::RecvFailedWithResumeToken {
                token: token.to_string(),
                input_error: input_error.map(|e| e.to_string()),
                stderr,
            });
        }
        if is_recv_destroy_or_overwrite_encrypted(&stderr) {
            return Err(ZfsError::RecvDestroyOrOverwriteEncrypted { stderr });
        }
        if let Some(source) = input_error {
            return Err(ZfsError::RecvInput { source, stderr });
        }
        Err(ZfsError::Command {
            argv,
            status,
            stderr,
        })
    }
}
