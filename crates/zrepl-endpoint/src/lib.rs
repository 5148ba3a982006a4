//! ZFS-backed [`Sender`](zrepl_protocol::Sender) and [`Receiver`](zrepl_protocol::Receiver).
//!
//! This is where zrepl's replication semantics meet ZFS (spec §3.4-§3.8):
//! * the sender enforces its job's `filesystems` filter on **every** request, validates that
//!   `from`/`to` exist with the GUIDs the planner saw, applies the encryption policy, checks that a
//!   resume token resumes exactly the requested transfer, protects the step (step holds or
//!   tentative cursors) and, once the receiver confirms, moves the replication cursor and releases
//!   the step's protection;
//! * the receiver maps every request below its root (`root_fs[/client identity]`), never
//!   outside it, creates placeholders for missing parents, replaces placeholders on the first real
//!   receive, checks the received GUID and keeps the last-received hold.
//!
//! The names of holds and bookmarks are zrepl 0.7's (`zrepl_zfs_types::abstraction`), so a
//! filesystem replicated by zrepl 0.7 continues incrementally here.

pub mod abstractions;
mod error;
pub mod listings;
pub mod plan;
mod ratelimit;
mod receiver;
mod registry;
mod sender;

pub use plan::sends::ClientDestroy;
pub use ratelimit::BandwidthLimit;
pub use receiver::{LocalReceiver, PlaceholderPolicy, ReceiverConfig};
pub use registry::Registry;
pub use sender::{LocalSender, SenderConfig};

/// The classifier of `zfs recv` stderr (text a peer's stream influences), for the fuzz targets
/// (`fuzz/src/zfs_output.rs`); not an API.
#[doc(hidden)]
pub use error::{classify_recv_failure, RecvFailure};
