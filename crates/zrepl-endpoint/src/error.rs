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
    let s = stderr.to_ascii_lowercase();
    if s.contains("out of space") || s.contains("quota exceeded") || s.contains("no space left") {
        Some(RecvFailure::OutOfSpace)
    } else if s.contains("has been modified") {
        Some(RecvFailure::Modified)
    } else {
        None
    }
}

/// Whether [`recv_err`]'s hint depends on a resume token the error does not carry.
pub(crate) fn needs_token_check(e: &ZfsError) -> bool {
    !matches!(e, ZfsError::RecvFailedWithResumeToken { .. })
        && e.stderr().and_then(classify_recv_failure) == Some(RecvFailure::OutOfSpace)
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
    let hint = match e.stderr().and_then(classify_recv_failure) {
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
}
