//! `zrepl status` as a live terminal view.
//!
//! * [`model`]: the daemon's `/status` JSON, deserialized leniently.
//! * [`view::render`]: a pure function from the status and the view state to one frame; tested
//!   on ratatui's `TestBackend` and benchmarked (`benches/render.rs`, 1,000 filesystems).
//! * [`rate`]: transfer rates from successive samples, with the time passed in.
//! * [`app`]: the terminal loop (polling, keys, wakeup/reset, terminal restore).

pub mod app;
pub mod model;
pub mod rate;
pub mod view;

pub use app::{handle_key, run, Action, Daemon};
pub use model::Status;
pub use view::{render, UiState};

#[cfg(test)]
mod tests;

/// A synthetic status document (a push job mid-replication with `filesystems` filesystems, a sink
/// and a snap job) for tests and the render benchmark.
#[doc(hidden)]
pub fn sample_status(filesystems: usize) -> Status {
    let fss: Vec<serde_json::Value> = (0..filesystems)
        .map(|i| {
            let (state, cur, blocked) = match i % 4 {
                0 => ("stepping", 0, "nothing"),
                1 => ("done", 2, "nothing"),
                2 => ("stepping", 1, "repl-queue"),
                _ => ("planning", 0, "plan-queue"),
            };
            serde_json::json!({
                "name": format!("zroot/data/fs{i:04}"), "state": state, "blocked_on": blocked,
                "plan_error": null, "step_error": null, "current_step": cur,
                "steps": [
                    {"from": "@a", "to": "@b", "resumed": false, "bytes_expected": 4 << 20, "bytes_replicated": (i as u64 * 4096) % (4 << 20)},
                    {"from": "@b", "to": "@c", "resumed": false, "bytes_expected": 1 << 20, "bytes_replicated": 0}
                ]
            })
        })
        .collect();
    let v = serde_json::json!({
        "jobs": {
            "_control": {"type": "internal", "state": "serving"},
            "backup": {"type": "push", "state": "replicating", "error": null,
                "last_successful_replication": "2026-11-24T10:00:00Z",
                "replication": {"state": "running", "started_at": "2026-11-24T11:59:00Z", "finished_at": null,
                    "attempts": [{"state": "fan-out-filesystems", "started_at": "2026-11-24T11:59:00Z",
                        "finished_at": null, "plan_error": null, "filesystems": fss}]},
                "pruning": {"sender": {"error": null, "filesystems": [
                    {"filesystem": "zroot/data/fs0000", "skipped": null, "destroy": ["zrepl_1"], "keep": [["zrepl_2", ["last_n"]]], "errors": []}]},
                    "receiver": {"error": "connection refused while listing the receiver's filesystems", "filesystems": []}},
                "snapshotting": {"state": "waiting", "next_round_at": "2026-11-24T12:10:00Z", "error": null,
                    "last_round": {"started_at": "2026-11-24T11:59:00Z", "snapshot_name": "zrepl_20261124_115900_000", "filesystems": ["zroot/data"], "error": null}}},
            "sink": {"type": "sink", "state": "serving"},
            "snapjob": {"type": "snap", "state": "idle", "error": "pruning failed: dataset is busy"}
        },
        "global": {"zfs_commands": {"active": [], "started": {}}}
    });
    serde_json::from_value(v).expect("sample status is valid")
}
