//! `zfs send` as an [`AsyncRead`] ([`SendStream`]) and the dry-run size estimate.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;

use crate::command::{args, Binary, CommandResult, StdinMode, Tracker, Zfs};
use crate::error::{Argv, ZfsError};
use crate::names::{check_resume_token, VersionPath};
use crate::parse::{dataset_does_not_exist_path, parse_send_dry_run, DryRunKind, SendDryRunInfo};
use crate::pipe::{capture, ring_contents, set_pipe_capacity, SharedRing};

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendSource {
    /// `zfs send <flags> <fs>@<to>`.
    Full { to: VersionPath },
    /// `zfs send <flags> -i <fs>@<from>|<fs>#<from> <fs>@<to>`.
    Incremental { from: VersionPath, to: VersionPath },
    /// `zfs send <flags> -I <fs>@<from> <fs>@<to>`: every snapshot after `from` up to `to`.
    Package { from: VersionPath, to: VersionPath },
    /// `zfs send -t <token>`: the token carries the flags, so [`SendFlags`] are ignored.
    Resume { token: String },
}

/// `zfs send` flags (not probed: an unsupported one fails at run time, as in zrepl).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendFlags {
    /// `-w`: raw (required for encrypted sends).
    pub raw: bool,
    /// `-p`: include properties.
    pub properties: bool,
    /// `-b`: send only received property values (backup).
    pub backup_properties: bool,
    /// `-L`: large blocks.
    pub large_blocks: bool,
    /// `-c`: compressed.
    pub compressed: bool,
    /// `-e`: embedded data.
    pub embedded_data: bool,
    /// `-S`: saved (partially received) state.
    pub saved: bool,
}

/// A validated send request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    pub source: SendSource,
    pub flags: SendFlags,
}

impl SendRequest {
    pub fn full(to: VersionPath, flags: SendFlags) -> Self {
        SendRequest {
            source: SendSource::Full { to },
            flags,
        }
    }

    pub fn incremental(from: VersionPath, to: VersionPath, flags: SendFlags) -> Self {
        SendRequest {
            source: SendSource::Incremental { from, to },
            flags,
        }
    }

    /// `-I`: `from` must be a snapshot (OpenZFS refuses a bookmark there).
    pub fn package(from: VersionPath, to: VersionPath, flags: SendFlags) -> Self {
        SendRequest {
            source: SendSource::Package { from, to },
            flags,
        }
    }

    pub fn resume(token: impl Into<String>) -> Self {
        SendRequest {
            source: SendSource::Resume {
                token: token.into(),
            },
            flags: SendFlags::default(),
        }
    }

    /// The arguments after `zfs send` (and after `-n -v -P` for dry runs).
    pub(crate) fn args(&self) -> Result<Vec<String>, ZfsError> {
        let mut a = Vec::new();
        let f = &self.flags;
        let push_flags = |a: &mut Vec<String>| {
            for (on, flag) in [
                (f.raw, "-w"),
                (f.properties, "-p"),
                (f.backup_properties, "-b"),
                (f.large_blocks, "-L"),
                (f.compressed, "-c"),
                (f.embedded_data, "-e"),
                (f.saved, "-S"),
            ] {
                if on {
                    a.push(flag.to_string());
                }
            }
        };
        match &self.source {
            SendSource::Full { to } => {
                if !to.is_snapshot() {
                    return Err(ZfsError::InvalidArgument(format!(
                        "send: {to} is not a snapshot"
                    )));
                }
                push_flags(&mut a);
                a.extend(args!["--", to.to_string()]);
            }
            SendSource::Incremental { from, to } => {
                if !to.is_snapshot() {
                    return Err(ZfsError::InvalidArgument(format!(
                        "send: {to} is not a snapshot"
                    )));
                }
                if from.fs() != to.fs() {
                    return Err(ZfsError::InvalidArgument(format!(
                        "send: {from} and {to} are on different filesystems"
                    )));
                }
                push_flags(&mut a);
                a.extend(args!["-i", from.to_string(), "--", to.to_string()]);
            }
            SendSource::Package { from, to } => {
                if !to.is_snapshot() || !from.is_snapshot() {
                    return Err(ZfsError::InvalidArgument(format!(
                        "send -I: {from} and {to} must be snapshots"
                    )));
                }
                if from.fs() != to.fs() {
                    return Err(ZfsError::InvalidArgument(format!(
                        "send: {from} and {to} are on different filesystems"
                    )));
                }
                push_flags(&mut a);
                a.extend(args!["-I", from.to_string(), "--", to.to_string()]);
            }
            SendSource::Resume { token } => {
                check_resume_token(token)?;
                a.extend(args!["-t", token.clone()]);
            }
        }
        Ok(a)
    }
}

type ReapFuture = Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send>>;

enum State {
    /// Reading stdout.
    Reading,
    /// stdout hit EOF; waiting for the child to exit and stderr to be drained.
    Reaping(ReapFuture),
    /// The child exited (successfully or not) and was reaped.
    Done(Result<(), (ExitStatus, String)>),
    /// A pipe error happened; the child is killed on drop.
    Failed,
}

/// A running `zfs send`: read its stream through [`AsyncRead`].
///
/// * At EOF of stdout the child is waited for; a non-zero exit turns the final read into an error
///   (an `io::Error` wrapping [`ZfsError::Command`] with the captured stderr, see
///   [`ZfsError::from_io_ref`]) instead of a clean EOF, so a truncated stream is never mistaken
///   for a complete one.
/// * Dropping the stream before that kills `zfs send` (SIGKILL via `kill_on_drop`) and closes our
///   end of the pipe, which also unblocks an in-kernel writer (OpenZFS #12500).
/// * stderr is captured concurrently into a ring of the last `stream_stderr_capture` bytes.
pub struct SendStream {
    // Field order matters for Drop: the pipe is closed before the child is killed and reaped in
    // the background by tokio.
    stdout: Option<ChildStdout>,
    child: Option<Child>,
    stderr: SharedRing,
    stderr_task: Option<JoinHandle<()>>,
    tracker: Option<Tracker>,
    argv: Argv,
    state: State,
}

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendStream")
            .field("argv", &self.argv)
            .finish_non_exhaustive()
    }
}

impl SendStream {
    /// The argv of the running `zfs send`.
    pub fn argv(&self) -> &Argv {
        &self.argv
    }

    /// stderr captured so far (the last bytes, bounded).
    pub fn stderr(&self) -> String {
        ring_contents(&self.stderr)
    }

    fn start_reaping(&mut self) {
        let child = self.child.take();
        let task = self.stderr_task.take();
        self.state = State::Reaping(Box::pin(async move {
            let status = match child {
                Some(mut c) => c.wait().await,
                None => Err(io::Error::other("child already reaped")),
            };
            if let Some(t) = task {
                // The stderr pipe reaches EOF when the child exits; a panicked task only loses
                // stderr text.
                let _ = t.await;
            }
            status
        }));
    }

    fn command_error(&self, status: ExitStatus, stderr: String) -> ZfsError {
        ZfsError::Command {
            argv: self.argv.clone(),
            status,
            stderr,
        }
    }

    /// Polls the reaping future and records the result.
    fn poll_reap(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ZfsError>> {
        let fut = match &mut self.state {
            State::Reaping(fut) => fut,
            State::Done(Ok(())) => return Poll::Ready(Ok(())),
            State::Done(Err((status, stderr))) => {
                let (status, stderr) = (*status, stderr.clone());
                return Poll::Ready(Err(self.command_error(status, stderr)));
            }
            State::Reading | State::Failed => {
                return Poll::Ready(Err(ZfsError::Io {
                    argv: self.argv.clone(),
                    source: io::Error::other("zfs send stream failed earlier"),
                }))
            }
        };
        let status = match fut.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(s) => s,
        };
        let status = match status {
            Ok(s) => s,
            Err(source) => {
                self.state = State::Failed;
                if let Some(t) = self.tracker.take() {
                    t.finish(CommandResult::Failure);
                }
                return Poll::Ready(Err(ZfsError::Io {
                    argv: self.argv.clone(),
                    source,
                }));
            }
        };
        let ok = status.success();
        if let Some(t) = self.tracker.take() {
            t.finish(if ok {
                CommandResult::Success
            } else {
                CommandResult::Failure
            });
        }
        if ok {
            self.state = State::Done(Ok(()));
            Poll::Ready(Ok(()))
        } else {
            let stderr = ring_contents(&self.stderr);
            self.state = State::Done(Err((status, stderr.clone())));
            Poll::Ready(Err(self.command_error(status, stderr)))
        }
    }

    /// Ends the send. After the stream was read to EOF this returns `zfs send`'s result. Before
    /// EOF it aborts the send: kills `zfs send`, closes the pipe, reaps the child and returns
    /// the resulting error (killed by a signal, with stderr).
    pub async fn finish(mut self) -> Result<(), ZfsError> {
        if matches!(self.state, State::Reading | State::Failed) && self.child.is_some() {
            if let Some(c) = self.child.as_mut() {
                // Ignore errors: the child may have exited on its own already.
                let _ = c.start_kill();
            }
            // Close our read end before waiting (OpenZFS #12500, see the type docs).
            self.stdout = None;
            self.start_reaping();
        }
        std::future::poll_fn(|cx| self.poll_reap(cx)).await
    }
}

impl AsyncRead for SendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &this.state {
                State::Reading => {
                    let Some(stdout) = this.stdout.as_mut() else {
                        this.state = State::Failed;
                        continue;
                    };
                    let before = buf.filled().len();
                    match Pin::new(stdout).poll_read(cx, buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => {
                            this.state = State::Failed;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(())) => {
                            if buf.filled().len() > before || buf.remaining() == 0 {
                                return Poll::Ready(Ok(()));
                            }
                            // EOF: the child closed stdout; find out how it exited.
                            this.stdout = None;
                            this.start_reaping();
                        }
                    }
                }
                State::Done(Ok(())) => return Poll::Ready(Ok(())),
                State::Reaping(_) | State::Done(Err(_)) | State::Failed => {
                    return this.poll_reap(cx).map_err(io::Error::other)
                }
            }
        }
    }
}

impl Zfs {
    /// Starts `zfs send` and returns its stream.
    pub async fn send(&self, req: &SendRequest) -> Result<SendStream, ZfsError> {
        let mut a = args!["send"];
        a.extend(req.args()?);
        let session = self.session().await;
        let (mut child, tracker) = self.spawn(Binary::Zfs, &a, StdinMode::Null, session)?;
        let argv = tracker.argv();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ZfsError::Io {
                argv,
                source: io::Error::other("child pipes missing"),
            });
        };
        set_pipe_capacity(&stdout, self.inner.config.pipe_capacity_hint);
        let (ring, task) = capture(stderr, self.inner.config.stream_stderr_capture);
        Ok(SendStream {
            stdout: Some(stdout),
            child: Some(child),
            stderr: ring,
            stderr_task: Some(task),
            tracker: Some(tracker),
            argv,
            state: State::Reading,
        })
    }

    /// Size estimate: `zfs send -n -v -P <same args>`. As in zrepl, an incremental send from a
    /// bookmark is not estimated (size 0, no command).
    pub async fn send_dry(&self, req: &SendRequest) -> Result<SendDryRunInfo, ZfsError> {
        let rest = req.args()?;
        if let SendSource::Incremental { from, to } = &req.source {
            if from.is_bookmark() {
                return Ok(SendDryRunInfo {
                    kind: DryRunKind::Incremental,
                    from: Some(from.to_string()),
                    to: to.to_string(),
                    size: 0,
                });
            }
        }
        let mut a = args!["send", "-n", "-v", "-P"];
        a.extend(rest);
        let out = self.zfs(&a).await?;
        if !out.success() {
            if let Some(p) = dataset_does_not_exist_path(&out.stderr) {
                return Err(ZfsError::DatasetDoesNotExist {
                    path: p.to_string(),
                });
            }
            return Err(out.into_error());
        }
        let text = out.combined();
        parse_send_dry_run(
            &text,
            self.inner.config.send_size_estimate_incorrect_threshold,
        )
        .map_err(|reason| ZfsError::UnexpectedOutput {
            argv: out.argv,
            reason,
            output: text.clone(),
        })
    }
}
/// Why the header of a `zfs send` stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StreamHeaderError {
    /// The stream failed or ended (for a [`SendStream`], with `zfs send`'s error).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The bytes are not the start of a `zfs send` stream as OpenZFS writes it.
    #[error("unexpected stream: {0}")]
    Format(String),
}

/// Properties of one filesystem in a compound stream's header (`-p`, `-b`) are far below this.
const MAX_HEADER_PAYLOAD: usize = 16 << 20;

/// Reads the header of a `zfs send` stream: its first BEGIN record and, for a compound stream
/// (`-p`, `-b`), the properties, the END record and the substream's BEGIN record. A
/// replication stream (`-R`) is refused. Returns the
/// bytes read, to be put back in front of the rest of the stream, and the BEGIN record with
/// the stream's real GUIDs: what the stream recreates, whatever it was asked or said to be,
/// and whether it may carry properties ([`crate::parse::SendBegin::may_carry_properties`]).
pub async fn read_send_begin<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(Vec<u8>, crate::parse::SendBegin), StreamHeaderError> {
    use crate::parse::{parse_send_begin, send_record_type, SEND_BEGIN_LEN as LEN};
    use tokio::io::AsyncReadExt;
    let mut head = vec![0u8; LEN];
    r.read_exact(&mut head).await?;
    let mut begin = parse_send_begin(&head).map_err(StreamHeaderError::Format)?;
    if begin.compound {
        let payload = begin.payload_len as usize;
        if payload > MAX_HEADER_PAYLOAD {
            return Err(StreamHeaderError::Format(format!(
                "{payload} bytes of stream header"
            )));
        }
        let at = head.len();
        head.resize(at + payload + 2 * LEN, 0);
        r.read_exact(&mut head[at..]).await?;
        let end = at + payload;
        // `zfs recv` treats a header without `not_recursive` (an empty header: none at all) as
        // a replication stream (`zfs send -R`): it would create, rename and (with -F) destroy
        // datasets below the target as the stream's sender lists them. Nothing we send is
        // one, and no peer may make us receive one.
        if payload > 0 {
            let names = zrepl_zfs_types::resume_token::packed_nvlist_names(&head[at..end])
                .map_err(|e| StreamHeaderError::Format(format!("stream header: {e}")))?;
            if !names.iter().any(|n| n == "not_recursive") {
                return Err(StreamHeaderError::Format(
                    "a replication stream (zfs send -R), which would create, rename or destroy datasets below its target; refusing it".into(),
                ));
            }
        }
        if send_record_type(&head[..LEN], &head[end..end + LEN]) != Some(5) {
            return Err(StreamHeaderError::Format(
                "no END record after the stream header".into(),
            ));
        }
        begin = parse_send_begin(&head[end + LEN..]).map_err(StreamHeaderError::Format)?;
        if begin.compound {
            return Err(StreamHeaderError::Format("nested compound stream".into()));
        }
        // A header lists properties (`fss`); without one, a package can set none as long as
        // no compound header follows any of its substreams, which the receiver proves with
        // `crate::CheckedPackage` on the rest of the stream.
        begin.may_carry_properties = payload > 0;
    }
    Ok((head, begin))
}
