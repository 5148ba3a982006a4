//! The only crate that runs `zfs` and `zpool`.
//!
//! It owns every command line zrepl uses (spec §5.1), the parsing of their output, the
//! classification of their error messages, feature detection (§5.3), and the streaming `zfs
//! send`/`zfs recv` plumbing. Callers hand in typed, validated names ([`DatasetPath`],
//! [`VersionPath`]) and get typed results ([`FilesystemVersion`], [`Properties`], [`ZfsError`]).
//! It deliberately knows nothing about zrepl's policies (which snapshot to hold, when to force a
//! receive, what a placeholder means for replication); that is the endpoint's job.
//!
//! Key design choices:
//! * **One handle, [`Zfs`]**: cheap to clone; holds the binary paths (overridable, so tests run
//!   against a mock script), the feature cache, per-verb counters and durations, and the list of
//!   running commands.
//! * **Validate before spawning**: every name passes zrepl-zfs-types' OpenZFS name checks (or
//!   the property/tag/token checks in [`names`]) before an argv is built; argv is never a shell
//!   string; a rejected name spawns nothing (observable through [`Zfs::total_commands_started`]).
//! * **Few commands**: a whole subtree with all snapshots and bookmarks is listed with one
//!   `zfs list` ([`Zfs::list_subtree_versions`]); snapshot, hold, release, holds and destroy take
//!   many names per command, split only at the argv limit. Hold, release and the destruction
//!   of bookmarks go through libzfs_core where it loads (`lzc.rs`, the crate's only FFI): one
//!   ioctl and one transaction group per pool and batch instead of one per snapshot.
//! * **Cancellation kills**: every child has `kill_on_drop`, so dropping a future or a
//!   [`SendStream`] kills the process; stderr is always captured into the error.
//! * **Pure parsers**: [`parse`] works on text only and is unit-tested on captured output; the
//!   listing parser is benchmarked by `benches/parse_list.rs`.

pub mod command;
pub mod datasets;
pub mod error;
pub mod features;
mod lzc;
pub mod names;
pub mod parse;
mod pipe;
pub mod recv;
pub mod remote;
pub mod send;
pub mod stream_check;
pub mod versions;

pub use command::{
    Binary, CommandInfo, CommandObserver, CommandResult, VerbStats, Zfs, ZfsConfig, REMOTE_SESSIONS,
};
pub use datasets::{
    is_placeholder_value, legacy_placeholder_value, PlaceholderEncryption, PlaceholderState,
    Target, VersionTypes, PLACEHOLDER_PROPERTY, PLACEHOLDER_REPLACING,
};
pub use error::{Argv, Undestroyable, ZfsError};
pub use features::{FeatureOverrides, Features};
pub use names::VersionPath;
pub use parse::{
    parse_send_begin, send_record_type, DryRunKind, Properties, PropertySource, PropertyValue,
    SendBegin, SendDryRunInfo, VersionsByFilesystem, ZfsVersion, SEND_BEGIN_LEN,
};
pub use recv::RecvRequest;
pub use remote::Remote;
pub use send::{
    read_send_begin, SendFlags, SendRequest, SendSource, SendStream, StreamHeaderError,
};
pub use stream_check::{CheckedPackage, PackageCheck};
pub use versions::DestroyOutcome;
pub use zrepl_zfs_types::{DatasetPath, FilesystemVersion, VersionType};
