//! The vocabulary every other zrepl crate speaks about ZFS, without touching ZFS.
//!
//! This crate owns dataset paths ([`DatasetPath`]), OpenZFS's name rules for datasets, snapshots,
//! bookmarks and hold tags ([`name`]), filesystem versions ([`FilesystemVersion`]) and the decoder for
//! `receive_resume_token` values ([`resume_token`]).
//!
//! It is pure by design: no process, no file, no socket, no clock. Everything here can be
//! unit-tested and fuzzed without a pool, and everything that takes names from the outside world
//! (config files, RPC peers, `zfs` output) validates them here before any command is built.

pub mod abstraction;
pub mod name;
pub mod resume_token;
pub mod version;

pub use name::{DatasetPath, NameError};
pub use version::{FilesystemVersion, VersionType};
