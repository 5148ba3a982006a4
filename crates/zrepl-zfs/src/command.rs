//! The [`Zfs`] handle and the command runner every operation goes through.
//!
//! The runner owns three cross-cutting concerns so that no operation can forget them:
//! * process hygiene: argv only (never a shell), `LC_ALL=C` (we classify English error strings)
//!   and `TZ=UTC` (timestamps zfs prints for people),
//!   stdin closed unless streaming, stdout/stderr captured, `kill_on_drop(true)` so dropping a
//!   future (cancellation, timeout) kills the child;
//! * accounting: per `(binary, verb)` counters and durations ([`Zfs::command_stats`]) and an
//!   optional [`CommandObserver`] for logging and Prometheus;
//! * the list of currently running commands ([`Zfs::active_commands`]) for `zrepl status`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::process::{Child, Command};

use crate::error::{Argv, ZfsError};
use crate::features::{FeatureOverrides, Features, PoolFeatureCache};

/// Which binary a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Binary {
    Zfs,
    Zpool,
    /// A call into libzfs_core (no process; see `lzc.rs`), accounted like a command.
    LibzfsCore,
}

impl Binary {
    pub fn as_str(self) -> &'static str {
        match self {
            Binary::Zfs => "zfs",
            Binary::Zpool => "zpool",
            Binary::LibzfsCore => "libzfs_core",
        }
    }
}

/// A command as reported to observers and in [`Zfs::active_commands`].
#[derive(Debug, Clone)]
pub struct CommandInfo {
    /// Unique per [`Zfs`] handle (shared by its clones).
    pub id: u64,
    pub binary: Binary,
    /// The first argument (`list`, `send`, ...), the label zrepl's metrics use.
    pub verb: String,
    /// The full argv, binary path first.
    pub argv: Vec<String>,
    pub started_at: SystemTime,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    /// Exit status 0.
    Success,
    /// Non-zero exit or killed by a signal. Feature probes and idempotent operations expect
    /// some of these, so this is not necessarily an error for the caller.
    Failure,
    /// The future or stream owning the child was dropped, or the timeout fired: it was killed.
    Cancelled,
}

/// Hooks for logging and metrics. Both methods are called synchronously on the task running the
/// command, so implementations must be cheap and must not block.
pub trait CommandObserver: Send + Sync + 'static {
    fn started(&self, _cmd: &CommandInfo) {}
    fn finished(&self, _cmd: &CommandInfo, _result: CommandResult, _elapsed: Duration) {}
}

/// Counters of one `(binary, verb)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerbStats {
    /// Processes spawned (a name rejected before spawning is not counted).
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Sum of wall-clock durations of finished commands.
    pub total_duration: Duration,
    pub max_duration: Duration,
}

/// Tunables of a [`Zfs`] handle. Defaults match zrepl 0.7.
#[derive(Clone)]
pub struct ZfsConfig {
    /// `zfs` binary; default `zfs` from `$PATH`.
    pub zfs_binary: PathBuf,
    /// `zpool` binary; default `zpool` from `$PATH`.
    pub zpool_binary: PathBuf,
    /// Kill non-streaming commands after this long (send/recv streams have no timeout).
    pub command_timeout: Option<Duration>,
    /// Maximum bytes of batched arguments per command before we split (zrepl: 12 × page size).
    /// On `E2BIG` anyway, batches are halved.
    pub argv_batch_limit: usize,
    /// Maximum snapshots per batched `zfs destroy fs@a,b,c` (0 = unlimited;
    /// `ZREPL_DESTROY_MAX_BATCH_SIZE`).
    pub destroy_max_batch: usize,
    /// Capacity to request for send/recv pipes (Linux `F_SETPIPE_SZ`), capped at
    /// `/proc/sys/fs/pipe-max-size`; `None` = the cap itself (zrepl's default).
    pub pipe_capacity_hint: Option<usize>,
    /// Bytes of stderr kept for send/recv (the last ones win).
    pub stream_stderr_capture: usize,
    /// Dry-run size estimates at or above this are reported as 0 (OpenZFS #12265).
    pub send_size_estimate_incorrect_threshold: u64,
    /// Forced feature-detection results (zrepl's `ZREPL_EXPERIMENTAL_*` variables).
    pub feature_overrides: FeatureOverrides,
    /// How long a negative pool feature check stays cached.
    pub pool_feature_negative_recheck: Duration,
    pub observer: Option<Arc<dyn CommandObserver>>,
    /// Hold, release and destroy bookmarks of many snapshots through libzfs_core (one ioctl,
    /// one transaction group per pool and batch) when it can be loaded. Only ever used with the
    /// system's `zfs` (`zfs_binary` = `zfs`): a handle running another binary (a mock) never
    /// talks to the kernel behind its back. Default on.
    pub libzfs_core: bool,
    /// Run every command on this agentless remote over ssh instead of locally (see
    /// [`crate::remote`]); libzfs_core is then never used.
    pub remote: Option<crate::remote::Remote>,
}

impl Default for ZfsConfig {
    fn default() -> Self {
        ZfsConfig {
            zfs_binary: PathBuf::from("zfs"),
            zpool_binary: PathBuf::from("zpool"),
            command_timeout: None,
            argv_batch_limit: 12 * 4096,
            destroy_max_batch: 0,
            pipe_capacity_hint: None,
            stream_stderr_capture: 32 * 1024,
            send_size_estimate_incorrect_threshold: i64::MAX as u64,
            feature_overrides: FeatureOverrides::default(),
            pool_feature_negative_recheck: Duration::from_secs(30),
            observer: None,
            libzfs_core: true,
            remote: None,
        }
    }
}

impl std::fmt::Debug for ZfsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZfsConfig")
            .field("zfs_binary", &self.zfs_binary)
            .field("zpool_binary", &self.zpool_binary)
            .field("command_timeout", &self.command_timeout)
            .field("argv_batch_limit", &self.argv_batch_limit)
            .field("destroy_max_batch", &self.destroy_max_batch)
            .field("feature_overrides", &self.feature_overrides)
            .field("observer", &self.observer.is_some())
            .field("libzfs_core", &self.libzfs_core)
            .finish_non_exhaustive()
    }
}

/// Handle to the ZFS command line. Cheap to clone; clones share the feature cache, counters and
/// the list of running commands.
#[derive(Clone)]
pub struct Zfs {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ZfsConfig,
    pub(crate) features: tokio::sync::OnceCell<Features>,
    pub(crate) pool_features: PoolFeatureCache,
    /// Shared with the handles made by [`Zfs::with_remote`]: one account of every command.
    stats: Arc<Mutex<BTreeMap<(Binary, String), VerbStats>>>,
    active: Arc<Mutex<BTreeMap<u64, CommandInfo>>>,
    next_id: Arc<AtomicU64>,
    /// On a remote: the ssh sessions a command may use at once (sshd's `MaxSessions` is 10 per
    /// connection by default; every command and stream is one session of the shared one).
    sessions: Option<Arc<tokio::sync::Semaphore>>,
}

/// Commands (and streams) that run at once on one remote; the others wait.
pub const REMOTE_SESSIONS: usize = 8;

impl std::fmt::Debug for Zfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zfs")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Default for Zfs {
    fn default() -> Self {
        Zfs::new(ZfsConfig::default())
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (counters only).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The captured result of a non-streaming command.
#[derive(Debug)]
pub(crate) struct Output {
    pub argv: Argv,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The generic error for this failed command.
    pub fn into_error(self) -> ZfsError {
        let verb = self.argv.0.get(1).map(String::as_str).unwrap_or("");
        if self
            .stderr
            .to_ascii_lowercase()
            .contains("permission denied")
        {
            if let Some(permissions) = crate::error::delegated_permissions(verb) {
                return ZfsError::PermissionDenied {
                    argv: self.argv,
                    permissions,
                    stderr: self.stderr,
                };
            }
        }
        ZfsError::Command {
            argv: self.argv,
            status: self.status,
            stderr: self.stderr,
        }
    }

    /// `Ok(self)` if the command succeeded, else the generic error.
    pub fn check(self) -> Result<Output, ZfsError> {
        if self.success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }

    /// stdout followed by stderr, for usage-text probes and zrepl's "combined output" checks.
    pub fn combined(&self) -> String {
        let mut s = self.stdout.clone();
        s.push_str(&self.stderr);
        s
    }
}

fn lossy(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Accounting for one spawned process; records its end exactly once (on `finish` or on drop,
/// which means the owner went away and `kill_on_drop` killed the child).
pub(crate) struct Tracker {
    inner: Arc<Inner>,
    info: CommandInfo,
    start: Instant,
    done: bool,
    /// The remote session the command holds until it ends.
    _session: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Tracker {
    pub fn argv(&self) -> Argv {
        Argv(self.info.argv.clone())
    }

    pub fn finish(mut self, result: CommandResult) {
        self.record(result);
    }

    fn record(&mut self, result: CommandResult) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.start.elapsed();
        lock(&self.inner.active).remove(&self.info.id);
        {
            let mut stats = lock(&self.inner.stats);
            let s = stats
                .entry((self.info.binary, self.info.verb.clone()))
                .or_default();
            match result {
                CommandResult::Success => s.succeeded += 1,
                CommandResult::Failure => s.failed += 1,
                CommandResult::Cancelled => s.cancelled += 1,
            }
            s.total_duration += elapsed;
            s.max_duration = s.max_duration.max(elapsed);
        }
        if let Some(o) = &self.inner.config.observer {
            o.finished(&self.info, result, elapsed);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.record(CommandResult::Cancelled);
    }
}

/// How a spawned command's stdin is connected.
pub(crate) enum StdinMode {
    Null,
    Piped,
}

impl Zfs {
    /// A handle with the given configuration. No command runs until an operation is called.
    pub fn new(config: ZfsConfig) -> Self {
        Zfs {
            inner: Arc::new(Inner {
                sessions: config
                    .remote
                    .as_ref()
                    .map(|_| Arc::new(tokio::sync::Semaphore::new(REMOTE_SESSIONS))),
                config,
                features: tokio::sync::OnceCell::new(),
                pool_features: PoolFeatureCache::default(),
                stats: Arc::new(Mutex::new(BTreeMap::new())),
                active: Arc::new(Mutex::new(BTreeMap::new())),
                next_id: Arc::new(AtomicU64::new(1)),
            }),
        }
    }

    /// A handle running the given `zfs` and `zpool` binaries (tests, mock scripts).
    pub fn with_binaries(zfs: impl Into<PathBuf>, zpool: impl Into<PathBuf>) -> Self {
        Zfs::new(ZfsConfig {
            zfs_binary: zfs.into(),
            zpool_binary: zpool.into(),
            ..ZfsConfig::default()
        })
    }

    pub fn config(&self) -> &ZfsConfig {
        &self.inner.config
    }

    /// Whether this handle runs its commands on an agentless remote.
    pub fn is_remote(&self) -> bool {
        self.inner.config.remote.is_some()
    }

    /// A handle with this one's config that runs its commands on `remote` (see
    /// [`crate::remote`]); its commands are counted and listed with this handle's
    /// ([`Zfs::command_stats`], [`Zfs::active_commands`]), so status and metrics show them.
    pub fn with_remote(&self, remote: crate::remote::Remote) -> Zfs {
        let config = ZfsConfig {
            remote: Some(remote),
            ..self.inner.config.clone()
        };
        Zfs {
            inner: Arc::new(Inner {
                sessions: Some(Arc::new(tokio::sync::Semaphore::new(REMOTE_SESSIONS))),
                config,
                features: tokio::sync::OnceCell::new(),
                pool_features: PoolFeatureCache::default(),
                stats: self.inner.stats.clone(),
                active: self.inner.active.clone(),
                next_id: self.inner.next_id.clone(),
            }),
        }
    }

    /// Counters per `(binary, verb)` since the handle was created.
    pub fn command_stats(&self) -> BTreeMap<(Binary, String), VerbStats> {
        lock(&self.inner.stats).clone()
    }

    /// Number of `zfs <verb>` processes spawned so far.
    pub fn zfs_commands_started(&self, verb: &str) -> u64 {
        lock(&self.inner.stats)
            .get(&(Binary::Zfs, verb.to_string()))
            .map_or(0, |s| s.started)
    }

    /// Number of processes (`zfs` and `zpool`) spawned so far.
    pub fn total_commands_started(&self) -> u64 {
        lock(&self.inner.stats)
            .iter()
            .filter(|((b, _), _)| *b != Binary::LibzfsCore)
            .map(|(_, s)| s.started)
            .sum()
    }

    /// Commands running right now, oldest first (zrepl status `ZFSCmds.Active`).
    pub fn active_commands(&self) -> Vec<CommandInfo> {
        lock(&self.inner.active).values().cloned().collect()
    }

    fn binary_path(&self, b: Binary) -> &Path {
        match b {
            Binary::Zfs => &self.inner.config.zfs_binary,
            Binary::Zpool => &self.inner.config.zpool_binary,
            Binary::LibzfsCore => Path::new("libzfs_core"),
        }
    }

    fn argv_of(&self, b: Binary, args: &[String]) -> Argv {
        let mut v = Vec::with_capacity(args.len() + 1);
        match (&self.inner.config.remote, b) {
            (Some(r), Binary::Zfs) => v.push(format!("{}@{}:{}", r.user, r.host, r.zfs_binary)),
            (Some(r), Binary::Zpool) => v.push(format!("{}@{}:{}", r.user, r.host, r.zpool_binary)),
            _ => v.push(self.binary_path(b).to_string_lossy().into_owned()),
        }
        v.extend(args.iter().cloned());
        Argv(v)
    }

    /// Spawns `binary args...` with stdout and stderr piped and registers it as running.
    pub(crate) fn spawn(
        &self,
        binary: Binary,
        args: &[String],
        stdin: StdinMode,
        session: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<(Child, Tracker), ZfsError> {
        let argv = self.argv_of(binary, args);
        let mut cmd = match &self.inner.config.remote {
            Some(r) => {
                // The shared connection's socket directory (the daemon's own).
                if let Some(dir) = r.control_path.parent() {
                    use std::os::unix::fs::DirBuilderExt;
                    let _ = std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir);
                }
                let remote_binary = match binary {
                    Binary::Zpool => &r.zpool_binary,
                    _ => &r.zfs_binary,
                };
                let mut c = Command::new(&r.ssh_binary);
                c.args(r.argv(remote_binary, args));
                c
            }
            None => {
                let mut c = Command::new(self.binary_path(binary));
                c.args(args.iter().map(OsString::from));
                c
            }
        };
        cmd.env("LC_ALL", "C")
            // Times zfs prints for people (`zfs holds` timestamps) read the same everywhere.
            .env("TZ", "UTC")
            .stdin(match stdin {
                StdinMode::Null => Stdio::null(),
                StdinMode::Piped => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let verb = args.first().cloned().unwrap_or_default();
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::ArgumentListTooLong {
                ZfsError::ArgListTooLong {
                    verb: verb.clone(),
                    bytes: args.iter().map(|a| a.len() + 1).sum(),
                }
            } else {
                ZfsError::Spawn {
                    binary: argv.0[0].clone(),
                    source: e,
                }
            }
        })?;
        let mut tracker = self.begin(binary, verb, argv.0);
        tracker._session = session;
        Ok((child, tracker))
    }

    /// Registers a started command (or libzfs_core call): counters, the running list, the
    /// observer. The returned tracker records its end.
    pub(crate) fn begin(&self, binary: Binary, verb: String, argv: Vec<String>) -> Tracker {
        let info = CommandInfo {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            binary,
            verb,
            argv,
            started_at: SystemTime::now(),
        };
        lock(&self.inner.stats)
            .entry((binary, info.verb.clone()))
            .or_default()
            .started += 1;
        lock(&self.inner.active).insert(info.id, info.clone());
        if let Some(o) = &self.inner.config.observer {
            o.started(&info);
        }
        Tracker {
            inner: self.inner.clone(),
            info,
            start: Instant::now(),
            done: false,
            _session: None,
        }
    }

    /// On a remote, a session for one more command (waits while [`REMOTE_SESSIONS`] run).
    pub(crate) async fn session(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let s = self.inner.sessions.clone()?;
        s.acquire_owned().await.ok()
    }

    /// libzfs_core, if this handle may use it (see [`ZfsConfig::libzfs_core`]) and it loads.
    pub(crate) fn lzc(&self) -> Option<&'static crate::lzc::Lzc> {
        let c = &self.inner.config;
        if c.libzfs_core && c.remote.is_none() && c.zfs_binary == Path::new("zfs") {
            crate::lzc::get()
        } else {
            None
        }
    }

    /// Whether hold, release and bookmark destruction go through libzfs_core.
    pub fn uses_libzfs_core(&self) -> bool {
        self.lzc().is_some()
    }

    /// Runs a non-streaming command to completion and captures its output. A non-zero exit is
    /// not an error here: callers classify stderr first and fall back to [`Output::check`].
    pub(crate) async fn run(&self, binary: Binary, args: &[String]) -> Result<Output, ZfsError> {
        let session = self.session().await;
        let (child, tracker) = self.spawn(binary, args, StdinMode::Null, session)?;
        let argv = tracker.argv();
        // `wait_with_output` reads stdout and stderr concurrently, so neither pipe can fill up
        // and block the child. If this future is dropped, the child is dropped and killed.
        let fut = child.wait_with_output();
        let out = match self.inner.config.command_timeout {
            None => fut.await,
            Some(d) => match tokio::time::timeout(d, fut).await {
                Ok(r) => r,
                Err(_) => {
                    // The timed-out future (and with it the child) is already dropped: killed.
                    tracker.finish(CommandResult::Cancelled);
                    return Err(ZfsError::Timeout { argv, after: d });
                }
            },
        };
        let out = match out {
            Ok(o) => o,
            Err(source) => {
                tracker.finish(CommandResult::Failure);
                return Err(ZfsError::Io { argv, source });
            }
        };
        tracker.finish(if out.status.success() {
            CommandResult::Success
        } else {
            CommandResult::Failure
        });
        Ok(Output {
            argv,
            status: out.status,
            stdout: lossy(out.stdout),
            stderr: lossy(out.stderr),
        })
    }

    /// [`Zfs::run`] with `input` (small: it is written before the output is read) on stdin.
    pub(crate) async fn run_with_stdin(
        &self,
        binary: Binary,
        args: &[String],
        input: &[u8],
    ) -> Result<Output, ZfsError> {
        use tokio::io::AsyncWriteExt;
        let session = self.session().await;
        let (mut child, tracker) = self.spawn(binary, args, StdinMode::Piped, session)?;
        let argv = tracker.argv();
        if let Some(mut stdin) = child.stdin.take() {
            // A command that exits without reading its input is judged by its exit status.
            let _ = stdin.write_all(input).await;
        }
        let fut = child.wait_with_output();
        let out = match self.inner.config.command_timeout {
            None => fut.await,
            Some(d) => match tokio::time::timeout(d, fut).await {
                Ok(r) => r,
                Err(_) => {
                    tracker.finish(CommandResult::Cancelled);
                    return Err(ZfsError::Timeout { argv, after: d });
                }
            },
        };
        let out = match out {
            Ok(o) => o,
            Err(source) => {
                tracker.finish(CommandResult::Failure);
                return Err(ZfsError::Io { argv, source });
            }
        };
        tracker.finish(if out.status.success() {
            CommandResult::Success
        } else {
            CommandResult::Failure
        });
        Ok(Output {
            argv,
            status: out.status,
            stdout: lossy(out.stdout),
            stderr: lossy(out.stderr),
        })
    }

    /// `run` for `zfs`.
    pub(crate) async fn zfs(&self, args: &[String]) -> Result<Output, ZfsError> {
        self.run(Binary::Zfs, args).await
    }
}

/// Builds an argv vector from string-likes.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        ::std::vec::Vec::<::std::string::String>::from([$(::std::string::String::from($a)),*])
    };
}
pub(crate) use args;

/// Splits `items` into consecutive batches whose summed argv size (bytes + NUL each) stays within
/// `limit`; every batch has at least one item, so one oversized item gets its own batch.
pub(crate) fn split_batches<T: AsRef<str>>(items: &[T], limit: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, it) in items.iter().enumerate() {
        let len = it.as_ref().len() + 1;
        if i > start && size + len > limit {
            out.push(&items[start..i]);
            start = i;
            size = 0;
        }
        size += len;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Per-pool cache entries: (supported, when checked).
pub(crate) type PoolCacheMap = HashMap<String, (bool, Instant)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_limit() {
        let items: Vec<String> = (0..10).map(|i| format!("p/fs@s{i}")).collect(); // 7 bytes + NUL
        let b = split_batches(&items, 16);
        assert_eq!(b.len(), 5);
        assert!(b.iter().all(|b| b.len() == 2));
        assert_eq!(split_batches(&items, 1).len(), 10);
        assert_eq!(split_batches(&items, 1 << 20).len(), 1);
        assert!(split_batches::<String>(&[], 10).is_empty());
        let flat: Vec<&String> = split_batches(&items, 20).into_iter().flatten().collect();
        assert_eq!(flat.len(), 10);
    }

    #[test]
    fn argv_display_quotes_spaces() {
        let a = Argv(vec!["zfs".into(), "list".into(), "pool/with space".into()]);
        assert_eq!(a.to_string(), "zfs list \"pool/with space\"");
    }
}
