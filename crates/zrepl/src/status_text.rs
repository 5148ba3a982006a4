//! Text rendering of the daemon status (`zrepl status --mode dump`), in the spirit of zrepl's.

use std::fmt::Write;

use serde_json::Value;

/// Human-readable byte count (binary units): the same as the interactive view's.
pub use zrepl_tui::view::bytes;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
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
pub fn render(status: &Value, only: Option<&str>) -> String {
    let mut out = String::new();
    let Some(jobs) = status.get("jobs").and_then(Value::as_object) else {
        return "no jobs\n".into();
    };
    let mut first = true;
    for (name, job) in jobs {
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

fn render_job(out: &mut String, name: &str, job: &Value) {
    let _ = writeln!(out, "Job: {name}");
    let _ = writeln!(out, "Type: {}", s(job, "type"));
    let _ = writeln!(out, "State: {}", s(job, "state"));
    if let Some(e) = job.get("error").and_then(Value::as_str) {
        let _ = writeln!(out, "Error: {e}");
    }
    if let Some(t) = job
        .get("last_successful_replication")
        .and_then(Value::as_str)
    {
        let _ = writeln!(out, "Last successful replication: {t}");
    }
    render_replication(out, job);
    if let Some(p) = job.get("pruning").filter(|p| !p.is_null()) {
        render_prune_side(out, "Pruning Sender", &p["sender"]);
        render_prune_side(out, "Pruning Receiver", &p["receiver"]);
    }
    if let Some(p) = job.get("pruning_local").filter(|p| !p.is_null()) {
        render_prune_side(out, "Pruning snapshots", p);
    }
    if let Some(sn) = job.get("snapshotting").filter(|p| !p.is_null()) {
        let _ = writeln!(out, "Snapshotting:");
        let _ = writeln!(out, "   Status: {}", s(sn, "state"));
        if let Some(t) = sn.get("next_round_at").and_then(Value::as_str) {
            let _ = writeln!(out, "   Next round: {t}");
        }
        if let Some(e) = sn.get("error").and_then(Value::as_str) {
            let _ = writeln!(out, "   Error: {e}");
        }
        if let Some(r) = sn.get("last_round").filter(|r| !r.is_null()) {
            let n = r
                .get("filesystems")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let skipped = r
                .get("skipped")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let skipped = match skipped {
                0 => String::new(),
                k => format!(", {k} unchanged skipped"),
            };
            let _ = writeln!(
                out,
                "   Last round: {} snap name: {:?} ({n} filesystems{skipped})",
                s(r, "started_at"),
                s(r, "snapshot_name")
            );
        }
    }
}

fn render_prune_side(out: &mut String, title: &str, side: &Value) {
    let _ = writeln!(out, "{title}:");
    if let Some(e) = side.get("error").and_then(Value::as_str) {
        let _ = writeln!(out, "   Error: {e}");
    }
    for f in side
        .get("filesystems")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let fs = s(f, "filesystem");
        if let Some(why) = f.get("skipped").and_then(Value::as_str) {
            let _ = writeln!(out, "   {fs} skipped: {why}");
            continue;
        }
        let destroyed = f
            .get("destroy")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let kept = f.get("keep").and_then(Value::as_array).map_or(0, Vec::len);
        let errors = f
            .get("errors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "   {fs} Completed (destroyed {destroyed}, kept {kept})"
        );
        for e in errors {
            let _ = writeln!(
                out,
                "      ERROR: {}",
                e.as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(": "))
                    .unwrap_or_default()
            );
        }
    }
}

fn render_replication(out: &mut String, job: &Value) {
    let Some(rep) = job.get("replication").filter(|r| !r.is_null()) else {
        return;
    };
    let _ = writeln!(out, "Replication:");
    let _ = writeln!(out, "   State: {}", s(rep, "state"));
    let attempts = rep
        .get("attempts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(att) = attempts.last() else {
        return;
    };
    let _ = writeln!(out, "   Attempt #{}", attempts.len());
    let _ = writeln!(out, "   Status: {}", s(att, "state"));
    if let Some(e) = att.get("plan_error").and_then(Value::as_str) {
        let _ = writeln!(out, "   Problem: {e}");
    }
    let fss = att
        .get("filesystems")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (mut done, mut total) = (0, 0);
    for fs in &fss {
        for st in fs
            .get("steps")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            done += u(st, "bytes_replicated");
            total += u(st, "bytes_expected");
        }
    }
    let _ = writeln!(
        out,
        "   Progress: {} {} / {}",
        progress_bar(done, total, 30),
        bytes(done),
        bytes(total)
    );
    let width = fss.iter().map(|f| s(f, "name").len()).max().unwrap_or(0);
    for fs in &fss {
        let steps = fs
            .get("steps")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let cur = u(fs, "current_step") as usize;
        let (fdone, ftotal): (u64, u64) = steps.iter().fold((0, 0), |(a, b), st| {
            (a + u(st, "bytes_replicated"), b + u(st, "bytes_expected"))
        });
        let state = s(fs, "state").to_uppercase();
        let mut line = format!(
            "   {:<width$} {state} (step {}/{}, {}/{})",
            s(fs, "name"),
            cur.min(steps.len()),
            steps.len(),
            bytes(fdone),
            bytes(ftotal)
        );
        if let Some(st) = steps.get(cur) {
            let from = st.get("from").and_then(Value::as_str).unwrap_or("full");
            let _ = write!(line, " next: {from} => {}", s(st, "to"));
        }
        if let Some(e) = fs
            .get("plan_error")
            .or(fs.get("step_error"))
            .and_then(Value::as_str)
        {
            let _ = write!(line, "\n      error: {e}");
        }
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_units() {
        assert_eq!(bytes(624), "624 B");
        assert_eq!(bytes(1229), "1.2 KiB");
        assert_eq!(bytes(264 * 1024 * 1024 + 734003), "264.7 MiB");
    }

    #[test]
    fn renders_a_job() {
        let v = serde_json::json!({"jobs": {"push": {"type": "push", "state": "replicating", "replication": {
            "state": "running", "attempts": [{"state": "fan-out-filesystems", "filesystems": [
                {"name": "zroot", "state": "stepping", "current_step": 0, "steps": [
                    {"from": "@a", "to": "@b", "bytes_expected": 2048, "bytes_replicated": 1024}]}]}]}}}});
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
        let v = serde_json::json!({"jobs": {"snap": {"type": "snap", "state": "idle",
            "pruning_local": {"error": null, "filesystems": [
                {"filesystem": "pool/a", "skipped": null, "destroy": ["x", "y"], "keep": [["z", ["kept by rule #1"]]],
                 "errors": [["y", "dataset is busy"]]},
                {"filesystem": "pool/p", "skipped": "filesystem is placeholder", "destroy": [], "keep": [], "errors": []}]},
            "snapshotting": {"state": "waiting", "next_round_at": "2026-01-01T00:00:00Z", "error": null,
                "last_round": {"started_at": "2025-12-31T23:00:00Z", "snapshot_name": "zrepl_1", "filesystems": ["pool/a"]}}}}});
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
        let v = serde_json::json!({"jobs": {"snap": {"type": "snap", "state": "idle",
            "snapshotting": {"state": "waiting", "error": null,
                "last_round": {"started_at": "2025-12-31T23:00:00Z", "snapshot_name": "zrepl_1",
                    "filesystems": ["pool/a"], "skipped": [{"filesystem": "pool/b", "written": 0}]}}}}});
        let t = render(&v, None);
        assert!(
            t.contains("snap name: \"zrepl_1\" (1 filesystems, 1 unchanged skipped)"),
            "{t}"
        );
    }
}
