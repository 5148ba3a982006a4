//! Text rendering of the daemon status (`zrepl status --mode dump`), in the spirit of zrepl's.

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use zrepl_status::{known_time, DaemonStatus, JobStatus, SideReport};

/// Human-readable byte count (binary units): the same as the interactive view's.
pub use zrepl_tui::view::bytes;

/// A time as the document writes it (RFC 3339, `Z`); empty for a time the document lacked.
fn time(t: DateTime<Utc>) -> String {
    known_time(t)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let frac = if total == 0 {
        0.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = (frac * width as f64) as usize;
    format!("[{}{}]", "=".repeat(filled), "-".repeat(width - filled))
}

/// Renders every job (or only `only`), separated by a line of dashes.
pub fn render(status: &DaemonStatus, only: Option<&str>) -> String {
    let mut out = String::new();
    if status.jobs.is_empty() {
        return "no jobs\n".into();
    }
    let mut first = true;
    for (name, job) in &status.jobs {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        if !first {
            out.push_str(&"-".repeat(80));
            out.push('\n');
        }
        first = false;
        render_job(&mut out, name, job);
    }
    out
}

fn render_job(out: &mut String, name: &str, job: &JobStatus) {
    let _ = writeln!(out, "Job: {name}");
    let _ = writeln!(out, "Type: {}", job.kind);
    let _ = writeln!(out, "State: {}", job.state);
    if let Some(e) = &job.error {
        let _ = writeln!(out, "Error: {e}");
    }
    if let Some(t) = job.last_successful_replication {
        let _ = writeln!(out, "Last successful replication: {}", time(t));
    }
    render_replication(out, job);
    if let Some(p) = &job.pruning {
        render_prune_side(out, "Pruning Sender", &p.sender);
        render_prune_side(out, "Pruning Receiver", &p.receiver);
    }
    if let Some(p) = &job.pruning_local {
        render_prune_side(out, "Pruning snapshots", p);
    }
    if let Some(sn) = &job.snapshotting {
        let _ = writeln!(out, "Snapshotting:");
        let _ = writeln!(out, "   Status: {}", sn.state);
        if let Some(t) = sn.next_round_at {
            let _ = writeln!(out, "   Next round: {}", time(t));
        }
        if let Some(e) = &sn.error {
            let _ = writeln!(out, "   Error: {e}");
        }
        if let Some(r) = &sn.last_round {
            let n = r.filesystems.len();
            let skipped = match r.skipped.len() {
                0 => String::new(),
                k => format!(", {k} unchanged skipped"),
            };
            let _ = writeln!(
                out,
                "   Last round: {} snap name: {:?} ({n} filesystems{skipped})",
                time(r.started_at),
                r.snapshot_name
            );
        }
    }
}

fn render_prune_side(out: &mut String, title: &str, side: &SideReport) {
    let _ = writeln!(out, "{title}:");
    if let Some(e) = &side.error {
        let _ = writeln!(out, "   Error: {e}");
    }
    for f in &side.filesystems {
        let fs = &f.filesystem;
        if let Some(why) = &f.skipped {
            let _ = writeln!(out, "   {fs} skipped: {why}");
            continue;
        }
        let _ = writeln!(
            out,
            "   {fs} Completed (destroyed {}, kept {})",
            f.destroy.len(),
            f.keep.len()
        );
        for (snap, e) in &f.errors {
            let _ = writeln!(out, "      ERROR: {snap}: {e}");
        }
    }
}

fn render_replication(out: &mut String, job: &JobStatus) {
    let Some(rep) = &job.replication else {
        return;
    };
    let _ = writeln!(out, "Replication:");
    let _ = writeln!(out, "   State: {}", rep.state);
    let Some(att) = rep.attempts.last() else {
        return;
    };
    let _ = writeln!(out, "   Attempt #{}", rep.attempts.len());
    let _ = writeln!(out, "   Status: {}", att.state);
    if let Some(e) = &att.plan_error {
        let _ = writeln!(out, "   Problem: {e}");
    }
    let (done, total) = att.bytes();
    let _ = writeln!(
        out,
        "   Progress: {} {} / {}",
        progress_bar(done, total, 30),
        bytes(done),
        bytes(total)
    );
    let width = att
        .filesystems
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(0);
    for fs in &att.filesystems {
        let (fdone, ftotal) = fs.bytes();
        let state = fs.state.as_str().to_uppercase();
        let mut line = format!(
            "   {:<width$} {state} (step {}/{}, {}/{})",
            fs.name,
            fs.current_step.min(fs.steps.len()),
            fs.steps.len(),
            bytes(fdone),
            bytes(ftotal)
        );
        if let Some(st) = fs.steps.get(fs.current_step) {
            let from = st.from.as_deref().unwrap_or("full");
            let _ = write!(line, " next: {from} => {}", st.to);
        }
        if let Some(e) = fs.error() {
            let _ = write!(line, "\n      error: {e}");
        }
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document as `zrepl status` parses it (leniently: these samples leave fields out).
    fn doc(v: serde_json::Value) -> DaemonStatus {
        serde_json::from_value(v).expect("a status document")
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(624), "624 B");
        assert_eq!(bytes(1229), "1.2 KiB");
        assert_eq!(bytes(264 * 1024 * 1024 + 734003), "264.7 MiB");
    }

    #[test]
    fn renders_a_job() {
        let v = doc(
            serde_json::json!({"jobs": {"push": {"type": "push", "state": "replicating", "replication": {
            "state": "running", "attempts": [{"state": "fan-out-filesystems", "filesystems": [
                {"name": "zroot", "state": "stepping", "current_step": 0, "steps": [
                    {"from": "@a", "to": "@b", "bytes_expected": 2048, "bytes_replicated": 1024}]}]}]}}}}),
        );
        let t = render(&v, None);
        assert!(t.contains("Job: push"), "{t}");
        assert!(
            t.contains("zroot STEPPING (step 0/1, 1.0 KiB/2.0 KiB) next: @a => @b"),
            "{t}"
        );
        assert!(t.contains("Progress: [==============="), "{t}");
        assert_eq!(render(&v, Some("other")), "");
    }

    #[test]
    fn renders_pruning_and_snapshotting() {
        let v = doc(
            serde_json::json!({"jobs": {"snap": {"type": "snap", "state": "idle",
            "pruning_local": {"error": null, "filesystems": [
                {"filesystem": "pool/a", "skipped": null, "destroy": ["x", "y"], "keep": [["z", ["kept by rule #1"]]],
                 "errors": [["y", "dataset is busy"]]},
                {"filesystem": "pool/p", "skipped": "filesystem is placeholder", "destroy": [], "keep": [], "errors": []}]},
            "snapshotting": {"state": "waiting", "next_round_at": "2026-01-01T00:00:00Z", "error": null,
                "last_round": {"started_at": "2025-12-31T23:00:00Z", "snapshot_name": "zrepl_1", "filesystems": ["pool/a"]}}}}}),
        );
        let t = render(&v, None);
        assert!(t.contains("Pruning snapshots:\n   pool/a Completed (destroyed 2, kept 1)\n      ERROR: y: dataset is busy\n   pool/p skipped: filesystem is placeholder"), "{t}");
        assert!(
            t.contains("Snapshotting:\n   Status: waiting\n   Next round: 2026-01-01T00:00:00Z"),
            "{t}"
        );
        assert!(t.contains("snap name: \"zrepl_1\" (1 filesystems)"), "{t}");
    }

    #[test]
    fn renders_skipped_unchanged_filesystems() {
        let v = doc(
            serde_json::json!({"jobs": {"snap": {"type": "snap", "state": "idle",
            "snapshotting": {"state": "waiting", "error": null,
                "last_round": {"started_at": "2025-12-31T23:00:00Z", "snapshot_name": "zrepl_1",
                    "filesystems": ["pool/a"], "skipped": [{"filesystem": "pool/b", "written": 0}]}}}}}),
        );
        let t = render(&v, None);
        assert!(
            t.contains("snap name: \"zrepl_1\" (1 filesystems, 1 unchanged skipped)"),
            "{t}"
        );
    }

    /// Changed when the dump became typed: a step error is shown even though the daemon writes
    /// `"plan_error": null` (the untyped reader looked only at `plan_error` when the key was
    /// there), and a state this version does not know reads as `unknown`.
    #[test]
    fn renders_step_errors_and_unknown_states() {
        let v = doc(
            serde_json::json!({"version": 2, "jobs": {"push": {"type": "push", "state": "paused",
            "future": {"x": 1}, "replication": {"state": "failed", "started_at": "2026-01-01T00:00:00Z",
            "attempts": [{"state": "done", "filesystems": [{"name": "pool/a", "state": "step-error",
                "blocked_on": "nothing", "plan_error": null, "step_error": "dataset is busy",
                "current_step": 1, "steps": [{"from": null, "to": "@1", "resumed": false,
                "bytes_expected": 0, "bytes_replicated": 0, "to_creation": 0}]}]}]}}}}),
        );
        let t = render(&v, None);
        assert!(t.contains("State: unknown\n"), "{t}");
        assert!(
            t.contains("pool/a STEP-ERROR (step 1/1, 0 B/0 B)\n      error: dataset is busy"),
            "{t}"
        );
    }

    #[test]
    fn times_as_the_document_has_them() {
        let v = doc(
            serde_json::json!({"jobs": {"push": {"type": "push", "state": "idle",
            "last_successful_replication": "2026-01-01T10:00:00.250Z"}}}),
        );
        assert!(
            render(&v, None).contains("Last successful replication: 2026-01-01T10:00:00.250Z\n"),
            "{}",
            render(&v, None)
        );
    }
}
