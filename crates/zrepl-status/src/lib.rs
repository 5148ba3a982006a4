//! The daemon's `/status` document (`zrepl status --mode raw`): one set of types that the daemon
//! fills and every reader (the interactive view, `--mode dump`, `zrepl monitor`, `zrepl run`,
//! the tests) parses. `docs/schemas/status.schema.json` describes the same shape.
//!
//! # Compatibility
//!
//! The document carries a schema [`VERSION`] in its top-level `"version"` field. Within a
//! version, and from one version to the next, the shape only grows:
//!
//! * fields are only ever added, never renamed, removed or given another type;
//! * readers ignore fields they do not know (no `deny_unknown_fields` anywhere) and take the
//!   default of a field that is missing (every struct is `#[serde(default)]`: empty string,
//!   zero, `null`, empty list, the Unix epoch for a time);
//! * a state value a reader does not know (a newer daemon's) reads as `Unknown` (serialized as
//!   `"unknown"`) instead of failing the document.
//!
//! So a client one version apart from the daemon still works. A document without `"version"`
//! comes from a daemon older than the field and reads as version 0. `VERSION` goes up when
//! fields are added; a change that breaks the rules above would need a new endpoint.
//!
//! The crate is pure: no clock (times are parameters), no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod prune;
mod replication;
mod snapshot;

pub use prune::{FsPrune, PruneReport, SideReport};
pub use replication::{
    AttemptReport, AttemptState, BlockedOn, Counter, FilesystemReport, FsState, RunReport,
    RunState, StepReport,
};
pub use snapshot::{RoundReport, Skipped, SnapState, SnapshotterStatus};

/// The schema version this crate writes (the `"version"` field).
pub const VERSION: u32 = 1;

/// Defines a state enum with its wire names, an `Unknown` variant that every unknown value
/// reads as, `as_str` (the wire name) and `Display`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident (default $default:ident) {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant, )*
            /// A value this version does not know (from a newer daemon).
            #[serde(rename = "unknown", other)]
            Unknown,
        }

        impl $name {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire, )*
                    $name::Unknown => "unknown",
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_enum;

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DaemonStatus {
    /// Schema version ([`VERSION`] when written by this crate; 0 when the field is missing).
    pub version: u32,
    /// Every job by name (internal ones start with `_`).
    pub jobs: BTreeMap<String, JobStatus>,
    pub global: GlobalStatus,
}

impl DaemonStatus {
    /// An empty document of the current version.
    pub fn new() -> Self {
        DaemonStatus {
            version: VERSION,
            ..Default::default()
        }
    }

    /// Parses the body of `POST /status` leniently (see the compatibility rules above).
    pub fn from_json(body: &[u8]) -> Result<DaemonStatus, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The jobs users see: internal ones (names starting with `_`) are hidden, as in zrepl.
    pub fn visible_jobs(&self) -> impl Iterator<Item = (&String, &JobStatus)> {
        self.jobs.iter().filter(|(n, _)| !n.starts_with('_'))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GlobalStatus {
    pub zfs_commands: ZfsCommands,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ZfsCommands {
    /// The `zfs`/`zpool` commands running now.
    pub active: Vec<ActiveCommand>,
    /// Commands started since the daemon started, per `binary verb` (e.g. `zfs send`).
    pub started: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActiveCommand {
    pub argv: Vec<String>,
    pub running_for_secs: f64,
}

wire_enum! {
    /// What a job is doing.
    pub enum JobState (default Unknown) {
        /// Waiting for a wakeup.
        Idle = "idle",
        Replicating = "replicating",
        /// A passive job serving its peers.
        Serving = "serving",
        /// The job could not start or stopped with an error.
        Error = "error",
    }
}

/// One job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobStatus {
    pub name: String,
    /// The config's job type: `push`, `pull`, `sink`, `source`, `snap`.
    #[serde(rename = "type")]
    pub kind: String,
    pub state: JobState,
    pub error: Option<String>,
    /// The current or last replication run.
    pub replication: Option<RunReport>,
    /// The last pruning of both sides (after the replication run).
    pub pruning: Option<PruneReport>,
    /// The last pruning of a snap job.
    pub pruning_local: Option<SideReport>,
    pub snapshotting: Option<SnapshotterStatus>,
    pub last_successful_replication: Option<DateTime<Utc>>,
}

/// A time the document had: `None` for the Unix epoch, which is what a missing time field of
/// a lenient parse reads as (the daemon always writes its times).
pub fn known_time(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (t != DateTime::<Utc>::default()).then_some(t)
}
