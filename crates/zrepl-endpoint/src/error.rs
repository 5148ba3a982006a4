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
