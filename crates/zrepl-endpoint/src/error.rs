//! Mapping ZFS errors to endpoint errors.

use zrepl_protocol::{EndpointError, ErrorKind};
use zrepl_zfs::ZfsError;

pub(crate) fn zfs_err(context: impl std::fmt::Display, e: ZfsError) -> EndpointError {
    let kind = match &e {
        ZfsError::DatasetDoesNotExist { .. } => ErrorKind::NotFound,
        ZfsError::InvalidName { .. } | ZfsError::InvalidArgument(_) => ErrorKind::InvalidRequest,
        _ => ErrorKind::Zfs,
    };
    EndpointError::new(kind, format!("{context}: {e}"))
}

/// Why a `zfs recv` failed, when its stderr says something a user must act on.
///
/// `pub` (in this private module) only for the re-export the fuzz targets use (see `lib.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvFailure {
    /// A quota, a reservation elsewhere or a full pool.
    OutOfSpace,
    /// The receiving filesystem was written to since its newest snapshot.
    Modified,
}

/// Classifies a failed receive's stderr (OpenZFS's wording under `LC_ALL=C`).
pub fn classify_recv_failure(stderr: &str) -> Option<RecvFailure> {
    classify_recv_failure_naming(stderr, &[])
}

/// [`classify_recv_failure`] of stderr that echoes `names` (the target, the filesystem): a
/// peer chooses those names (`.../out of space@has been modified`), so they are taken out of
/// the text before it is read.
pub(crate) fn classify_recv_failure_naming(stderr: &str, names: &[&str]) -> Option<RecvFailure> {
    let mut s = stderr.to_ascii_lowercase();
    let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    // The longest first: a snapshot's name contains its filesystem's.
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names.iter().filter(|n| !n.is_empty()) {
        s = s.replace(n.as_str(), " ");
    }
    if s.contains("out of space") || s.contains("quota exceeded") || s.contains("no space left") {
        Some(RecvFailure::OutOfSpace)
    } else if s.contains("has been modified") {
        Some(RecvFailure::Modified)
    } else {
        None
    }
}

/// Whether [`recv_err`]'s hint depends on a resume token the error does not carry.
pub(crate) fn needs_token_check(e: &ZfsError, names: &[&str]) -> bool {
    !matches!(e, ZfsError::RecvFailedWithResumeToken { .. })
        && e.stderr()
            .and_then(|s| classify_recv_failure_naming(s, names))
            == Some(RecvFailure::OutOfSpace)
}

/// The endpoint error of a failed `zfs recv` into `target` (a snapshot of `fs`), with what to do
/// about it when the failure is one a user must act on.
///
/// `resumable`: the failed receive left a resume token (OpenZFS does not always print it: a
/// quota stops a receive with partial state kept and no token on stderr).
pub(crate) fn recv_err(
    target: impl std::fmt::Display,
    fs: impl std::fmt::Display,
    e: ZfsError,
    resumable: bool,
) -> EndpointError {
    let names = [target.to_string(), fs.to_string()];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let hint = match e
        .stderr()
        .and_then(|s| classify_recv_failure_naming(s, &names))
    {
        Some(RecvFailure::OutOfSpace) => Some(format!(
            "the receiving side is out of space (a quota, a reservation or a full pool): free space or raise the quota of {fs} or its parents; {}",
            if resumable {
                "the partial receive is kept and the next run resumes it"
            } else {
                "the next run sends the step again"
            }
        )),
        Some(RecvFailure::Modified) => Some(format!(
            "{fs} was written to on the receiving side since its newest snapshot, and received data is never rolled back implicitly: \
             look at what changed, then `zfs rollback` it to its newest snapshot; setting `recv.properties.override: {{readonly: \"on\"}}` \
             on the receiving job prevents this"
        )),
        None => None,
    };
    let mut out = zfs_err(format!("zfs recv into {target} failed"), e);
    if let Some(h) = hint {
        out.message = format!("{h}: {}", out.message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_failures_are_classified() {
        let cases: &[(&str, Option<RecvFailure>)] = &[
            ("cannot receive incremental stream: destination pool/sink/a space quota exceeded.\n", Some(RecvFailure::OutOfSpace)),
            ("cannot receive new filesystem stream: out of space\n", Some(RecvFailure::OutOfSpace)),
            ("cannot receive resume stream: out of space\n", Some(RecvFailure::OutOfSpace)),
            ("write error: No space left on device\n", Some(RecvFailure::OutOfSpace)),
            ("cannot receive incremental stream: destination pool/sink/a has been modified\nsince most recent snapshot\n", Some(RecvFailure::Modified)),
            ("cannot receive incremental stream: most recent snapshot of pool/a does not\nmatch incremental source\n", None),
            ("cannot receive: failed to read from stream\n", None),
            ("", None),
        ];
        for (stderr, want) in cases {
            assert_eq!(classify_recv_failure(stderr), *want, "{stderr:?}");
        }
    }

    /// Names a peer chose cannot make a failure look like another.
    #[test]
    fn names_in_stderr_are_not_read_as_wording() {
        let fs = "pool/sink/c/out of space";
        let target = "pool/sink/c/out of space@has been modified";
        let cases: &[(String, Option<RecvFailure>)] = &[
            (
                format!("cannot receive incremental stream: most recent snapshot of {fs} does not\nmatch incremental source\n"),
                None,
            ),
            (format!("cannot receive new filesystem stream: destination '{target}' exists\n"), None),
            (
                format!("cannot receive incremental stream: destination {fs} has been modified\nsince most recent snapshot\n"),
                Some(RecvFailure::Modified),
            ),
            (
                format!("cannot receive resume stream of {target}: out of space\n"),
                Some(RecvFailure::OutOfSpace),
            ),
        ];
        for (stderr, want) in cases {
            assert_eq!(
                classify_recv_failure_naming(stderr, &[fs, target]),
                *want,
                "{stderr:?}"
            );
        }
    }
}
