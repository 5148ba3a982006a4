//! [`ZfsError`]: every way a `zfs`/`zpool` invocation can fail, classified where zrepl needs to
//! react differently (missing dataset, held snapshot, resumable receive, ...).

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use zrepl_zfs_types::NameError;

/// The argv of a command, for error messages. Printed space-joined like zrepl's `cmd` log field;
/// arguments containing spaces are quoted so the message stays unambiguous.
#[derive(Clone, PartialEq, Eq)]
pub struct Argv(pub Vec<String>);

impl fmt::Display for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if a.is_empty() || a.contains([' ', '\'', '"', '\\']) {
                write!(f, "{a:?}")?;
            } else {
                f.write_str(a)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// One snapshot that a batched `zfs destroy fs@a,b,c` could not destroy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undestroyable {
    /// Short snapshot name (after `@`).
    pub snapshot: String,
    /// ZFS's reason, e.g. `dataset is busy` (held, ZFS < 2.4).
    pub reason: String,
}

impl Undestroyable {
    /// True if the reason is a user hold: `dataset is busy` (ZFS < 2.4) or
    /// `it's being held. Run 'zfs holds -r ...' to see holders.` (ZFS >= 2.4).
    pub fn is_held(&self) -> bool {
        self.reason == "dataset is busy"
            || (self
                .reason
                .starts_with("it's being held. Run 'zfs holds -r ")
                && self.reason.ends_with("' to see holders."))
    }
}

/// Errors of this crate. Every variant that stems from a failed command carries what is needed to
/// understand it (argv and/or stderr); classified variants exist where callers branch on them.
#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    /// A name was rejected before any command was built.
    #[error("invalid name {name:?}: {source}")]
    InvalidName {
        name: String,
        #[source]
        source: NameError,
    },
    /// A non-name argument was rejected before any command was built.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The binary could not be started at all.
    #[error("cannot start {binary:?}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    /// `execve` refused the argument list (E2BIG); batched callers split and retry.
    #[error("argument list too long ({bytes} bytes) for {verb}")]
    ArgListTooLong { verb: String, bytes: usize },
    /// The command ran and failed; nothing more specific could be said.
    #[error("command failed: {argv}: {status}\nstderr:\n{stderr}")]
    Command {
        argv: Argv,
        status: ExitStatus,
        stderr: String,
    },
    /// The command was refused for lack of a delegated permission (`zfs allow`), as a non-root
    /// user (an agentless remote's) meets it.
    #[error("permission denied: {argv}: the user needs `zfs allow <user> {permissions} <dataset>` on the dataset or a parent (see README, agentless remotes)\nstderr:\n{stderr}")]
    PermissionDenied {
        argv: Argv,
        permissions: &'static str,
        stderr: String,
    },
    /// The command did not finish within the handle's timeout and was killed.
    #[error("command timed out after {after:?}: {argv}")]
    Timeout { argv: Argv, after: Duration },
    /// Reading from or writing to a command's pipes failed.
    #[error("i/o with {argv}: {source}")]
    Io {
        argv: Argv,
        #[source]
        source: std::io::Error,
    },
    /// The command succeeded but its output is not what we expected; nothing was guessed.
    #[error("unexpected output of {argv}: {reason}\noutput:\n{output}")]
    UnexpectedOutput {
        argv: Argv,
        reason: String,
        output: String,
    },
    /// `cannot open '<path>': dataset does not exist` and friends.
    #[error("dataset {path:?} does not exist")]
    DatasetDoesNotExist { path: String },
    /// A bookmark with the wanted name exists but belongs to another snapshot.
    #[error("bookmark {bookmark} exists but has guid {existing_guid}, wanted guid {wanted_guid}")]
    BookmarkExists {
        bookmark: String,
        existing_guid: u64,
        wanted_guid: u64,
    },
    /// Copying a bookmark (`zfs bookmark fs#a fs#b`) is not supported by this ZFS.
    #[error("bookmark cloning feature is not supported by this ZFS")]
    BookmarkCloningNotSupported,
    /// A (batched) snapshot destroy failed for the listed snapshots; the others in the same
    /// command may or may not have been destroyed (ZFS destroys none if any fails).
    #[error(
        "cannot destroy snapshots of {filesystem}: {}",
        fmt_undestroyable(undestroyable)
    )]
    DestroySnapshots {
        filesystem: String,
        undestroyable: Vec<Undestroyable>,
        stderr: String,
    },
    /// The entity exists but its guid is not the one the caller wanted destroyed.
    #[error("refusing to destroy {path}: guid is {actual}, expected {expected}")]
    GuidMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    /// `zfs recv -s` failed and left resumable state.
    #[error("receive failed, resumable with token {token}{}\nstderr:\n{stderr}",
        input_error.as_ref().map(|e| format!(" (input stream error: {e})")).unwrap_or_default())]
    RecvFailedWithResumeToken {
        token: String,
        stderr: String,
        /// Set if reading the stream we fed into `zfs recv` failed (the likely root cause).
        input_error: Option<String>,
    },
    /// `zfs receive -F cannot be used to destroy an encrypted filesystem or overwrite an
    /// unencrypted one with an encrypted one`.
    #[error("zfs receive -F cannot destroy an encrypted filesystem or overwrite an unencrypted one with an encrypted one\nstderr:\n{stderr}")]
    RecvDestroyOrOverwriteEncrypted { stderr: String },
    /// Reading the stream we fed into `zfs recv` failed; `zfs recv` then failed too.
    #[error("reading the send stream failed: {source}\nzfs recv stderr:\n{stderr}")]
    RecvInput {
        #[source]
        source: std::io::Error,
        stderr: String,
    },
    /// The installed ZFS lacks a feature the request needs.
    #[error("not supported by this ZFS: {0}")]
    NotSupported(&'static str),
}

fn fmt_undestroyable(u: &[Undestroyable]) -> String {
    u.iter()
        .map(|u| format!("@{}: {}", u.snapshot, u.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ZfsError {
    pub(crate) fn invalid_name(name: impl Into<String>, source: NameError) -> Self {
        ZfsError::InvalidName {
            name: name.into(),
            source,
        }
    }

    /// True for [`ZfsError::DatasetDoesNotExist`].
    pub fn is_does_not_exist(&self) -> bool {
        matches!(self, ZfsError::DatasetDoesNotExist { .. })
    }

    /// The captured stderr, if the error has one.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ZfsError::Command { stderr, .. }
            | ZfsError::PermissionDenied { stderr, .. }
            | ZfsError::DestroySnapshots { stderr, .. }
            | ZfsError::RecvFailedWithResumeToken { stderr, .. }
            | ZfsError::RecvDestroyOrOverwriteEncrypted { stderr }
            | ZfsError::RecvInput { stderr, .. } => Some(stderr),
            _ => None,
        }
    }

    /// Recovers a `ZfsError` that travelled through an `std::io::Error` (as returned from
    /// [`crate::SendStream`]'s `AsyncRead` implementation).
    pub fn from_io_ref(e: &std::io::Error) -> Option<&ZfsError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ZfsError>())
    }
}

/// The `zfs allow` permissions a `zfs <verb>` of zrepl's needs (for a non-root user).
pub fn delegated_permissions(verb: &str) -> Option<&'static str> {
    Some(match verb {
        "create" => "create,mount,userprop,mountpoint",
        "recv" | "receive" => "receive,create,mount",
        "hold" => "hold",
        "release" => "release",
        "destroy" => "destroy,mount",
        "bookmark" => "bookmark",
        "send" => "send",
        "snapshot" => "snapshot,mount",
        "set" | "inherit" => "userprop",
        "rollback" => "rollback,mount",
        _ => return None,
    })
}
