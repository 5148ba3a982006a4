//! The pure renderer: one frame from a status document and the view state.
//!
//! Layout (fits 80x24): a title bar, the job list on the left, the selected job on the right
//! (a fixed header with the replication progress gauge, then a scrollable body with every
//! filesystem, pruning of both sides and snapshotting), and a key/message bar at the bottom.

use chrono::{DateTime, Local, Utc};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, List, ListItem, ListState, Paragraph};
use ratatui::Frame;

use crate::model::{
    known_time, Attempt, AttemptState, BlockedOn, Filesystem, FsState, Job, JobState, PruneSide,
    Run, Snapshotting, Status,
};
use crate::rate::RateTracker;

/// What the user sees besides the daemon's data: selection, scroll position, messages.
#[derive(Debug, Clone)]
pub struct UiState {
    /// The selected job's name (kept by name so that jobs appearing or vanishing do not move it).
    pub selected: Option<String>,
    /// First visible line of the job's body; clamped by [`render`].
    pub scroll: usize,
    /// Lines of the body that fit on screen (set by [`render`], used for page up/down).
    pub page: usize,
    /// Waiting for `y` to reset the selected job.
    pub confirm_reset: bool,
    /// The outcome of the last key action; `true` = error.
    pub message: Option<(String, bool)>,
    /// Why the last status fetch failed (the view keeps showing the previous document).
    pub fetch_error: Option<String>,
    /// The refresh period, for the title bar.
    pub delay: std::time::Duration,
    /// The wall clock of this frame (a parameter, so that rendering stays pure).
    pub now: DateTime<Utc>,
    pub rates: RateTracker,
}

impl Default for UiState {
    fn default() -> Self {
        UiState {
            selected: None,
            scroll: 0,
            page: 1,
            confirm_reset: false,
            message: None,
            fetch_error: None,
            delay: std::time::Duration::from_secs(1),
            now: DateTime::<Utc>::UNIX_EPOCH,
            rates: RateTracker::default(),
        }
    }
}

impl UiState {
    /// The selected job, falling back to the first visible one.
    pub fn selected_job<'a>(&self, status: &'a Status) -> Option<(&'a String, &'a Job)> {
        let sel = self.selected.as_deref();
        status
            .visible_jobs()
            .find(|(n, _)| Some(n.as_str()) == sel)
            .or_else(|| status.visible_jobs().next())
    }

    /// Moves the selection by `delta` jobs (wrapping) and scrolls to the top.
    pub fn select_relative(&mut self, status: &Status, delta: isize) {
        let names: Vec<&String> = status.visible_jobs().map(|(n, _)| n).collect();
        if names.is_empty() {
            return;
        }
        let cur = self
            .selected_job(status)
            .and_then(|(n, _)| names.iter().position(|x| *x == n))
            .unwrap_or(0);
        let next = (cur as isize + delta).rem_euclid(names.len() as isize) as usize;
        self.selected = Some(names[next].clone());
        self.scroll = 0;
    }
}

const HELP: &str = "q quit  Tab/←→ job  ↑↓/PgUp/PgDn scroll  w wakeup  r reset";

/// Renders one frame. Clamps `ui.scroll` to the content and records the page height.
pub fn render(frame: &mut Frame, status: &Status, ui: &mut UiState) {
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_title(frame, top, ui);

    let name_w = status
        .visible_jobs()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(4);
    let list_w = (name_w as u16 + 4).clamp(10, 24).min(body.width / 3);
    let [list_area, detail_area] =
        Layout::horizontal([Constraint::Length(list_w), Constraint::Min(10)]).areas(body);
    let selected = ui.selected_job(status).map(|(n, _)| n.clone());
    render_job_list(frame, list_area, status, selected.as_deref());
    match selected
        .as_deref()
        .and_then(|n| status.jobs.get_key_value(n))
    {
        Some((name, job)) => render_job(frame, detail_area, name, job, ui),
        None => frame.render_widget(
            Paragraph::new("no jobs").block(Block::default().borders(Borders::ALL)),
            detail_area,
        ),
    }
    render_bottom(frame, bottom, ui, selected.as_deref());
}

fn render_title(frame: &mut Frame, area: Rect, ui: &UiState) {
    let mut spans = vec![Span::styled(
        format!(
            " zrepl status  {}  every {} ",
            ui.now.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S"),
            if ui.delay < std::time::Duration::from_secs(1) {
                format!("{}ms", ui.delay.as_millis())
            } else {
                duration(ui.delay.as_secs_f64())
            }
        ),
        Style::default().add_modifier(Modifier::REVERSED),
    )];
    if let Some(e) = &ui.fetch_error {
        spans.push(Span::styled(
            format!(" status fetch: {e}"),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    frame.render_widget(Line::from(spans), area);
}

fn job_marker(job: &Job) -> (&'static str, Style) {
    if job.error.is_some() || job.state == JobState::Error {
        ("!", Style::default().fg(Color::Red))
    } else if job.replication.as_ref().is_some_and(Run::is_active) {
        ("»", Style::default().fg(Color::Yellow))
    } else {
        (" ", Style::default())
    }
}

fn render_job_list(frame: &mut Frame, area: Rect, status: &Status, selected: Option<&str>) {
    let mut state = ListState::default();
    let items: Vec<ListItem> = status
        .visible_jobs()
        .enumerate()
        .map(|(i, (name, job))| {
            if Some(name.as_str()) == selected {
                state.select(Some(i));
            }
            let (m, style) = job_marker(job);
            ListItem::new(Line::from(vec![
                Span::styled(m, style),
                Span::raw(name.as_str()),
            ]))
        })
        .collect();
    let list = List::new(items)
        .block(Block::default().borders(Borders::ALL).title("Jobs"))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(list, area, &mut state);
}

fn render_job(frame: &mut Frame, area: Rect, name: &str, job: &Job, ui: &mut UiState) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {name} ({}) ", job.kind));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [head, gauge, rest] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(inner);

    let mut head_spans = vec![
        Span::raw("State: "),
        Span::styled(job.state.as_str(), state_style(job.state.as_str())),
    ];
    match job.last_successful_replication {
        Some(t) => head_spans.push(Span::raw(format!(
            "  Last success: {} ({} ago)",
            local_time(t),
            duration((ui.now - t).num_milliseconds() as f64 / 1e3)
        ))),
        None if job.replication.is_some() => head_spans.push(Span::raw("  Last success: never")),
        None => {}
    }
    frame.render_widget(Line::from(head_spans), head);

    if let Some(run) = &job.replication {
        render_gauge(frame, gauge, name, run, ui);
    }

    let width = rest.width as usize;
    let lines = body_lines(job, width, ui.now);
    let h = rest.height as usize;
    ui.page = h.max(1);
    ui.scroll = ui.scroll.min(lines.len().saturating_sub(h));
    let end = (ui.scroll + h).min(lines.len());
    let visible: Vec<Line> = lines[ui.scroll..end].to_vec();
    frame.render_widget(Paragraph::new(visible), rest);
}

fn render_gauge(frame: &mut Frame, area: Rect, job: &str, run: &Run, ui: &UiState) {
    let Some(att) = run.attempts.last() else {
        frame.render_widget(Line::from(format!("Replication: {}", run.state)), area);
        return;
    };
    let (done, total) = att.bytes();
    let ratio = if total == 0 {
        if run.is_active() {
            0.0
        } else {
            1.0
        }
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let mut label = format!("{} / {}", bytes(done), bytes(total));
    if run.is_active() {
        if let Some(r) = ui.rates.rate(job) {
            label.push_str(&format!(" @ {}/s", bytes(r as u64)));
            if r > 0.0 && total > done {
                label.push_str(&format!(" ({} left)", duration((total - done) as f64 / r)));
            }
        }
    } else {
        label.push_str(&format!(" ({})", run.state));
    }
    let color = match run.state.as_str() {
        "failed" | "cancelled" => Color::Red,
        "done" => Color::Green,
        _ => Color::Cyan,
    };
    frame.render_widget(
        Gauge::default()
            .gauge_style(Style::default().fg(color).bg(Color::DarkGray))
            .ratio(ratio)
            .label(label),
        area,
    );
}

fn render_bottom(frame: &mut Frame, area: Rect, ui: &UiState, selected: Option<&str>) {
    let line = if ui.confirm_reset {
        Line::styled(
            format!(
                "Reset job {}: cancel its replication and pruning now? y/N",
                selected.unwrap_or("")
            ),
            Style::default()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
        )
    } else if let Some((m, err)) = &ui.message {
        Line::styled(
            m.as_str(),
            if *err {
                Style::default().fg(Color::Red)
            } else {
                Style::default().fg(Color::Green)
            },
        )
    } else {
        Line::styled(HELP, Style::default().add_modifier(Modifier::DIM))
    };
    frame.render_widget(line, area);
}

fn state_style(state: &str) -> Style {
    match state {
        "done" | "idle" | "serving" | "waiting" => Style::default().fg(Color::Green),
        "planning"
        | "stepping"
        | "replicating"
        | "running"
        | "snapshotting"
        | "sync_up"
        | "fan-out-filesystems" => Style::default().fg(Color::Yellow),
        s if s.contains("error") || s == "failed" || s == "cancelled" => {
            Style::default().fg(Color::Red)
        }
        _ => Style::default(),
    }
}

/// The scrollable part of a job: replication details, pruning, snapshotting, errors in full.
pub fn body_lines(job: &Job, width: usize, now: DateTime<Utc>) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let red = Style::default().fg(Color::Red);
    if let Some(e) = &job.error {
        wrapped(&mut out, "Error: ", e, width, red);
    }
    if let Some(run) = &job.replication {
        replication_lines(&mut out, run, width, now);
    }
    if let Some(p) = &job.pruning {
        prune_lines(&mut out, "Pruning Sender", &p.sender, width);
        prune_lines(&mut out, "Pruning Receiver", &p.receiver, width);
    }
    if let Some(p) = &job.pruning_local {
        prune_lines(&mut out, "Pruning snapshots", p, width);
    }
    if let Some(s) = &job.snapshotting {
        snapshot_lines(&mut out, s, width, now);
    }
    if out.is_empty() {
        out.push(Line::raw("(nothing to report yet)"));
    }
    out
}

fn section(title: &str) -> Line<'static> {
    Line::styled(
        title.to_string(),
        Style::default().add_modifier(Modifier::BOLD),
    )
}

fn replication_lines<'a>(out: &mut Vec<Line<'a>>, run: &'a Run, width: usize, now: DateTime<Utc>) {
    out.push(section("Replication:"));
    let red = Style::default().fg(Color::Red);
    if let Some(e) = &run.wait_reconnect_error {
        wrapped(out, "   Connectivity: ", e, width, red);
    }
    if let Some(until) = run.wait_reconnect_until {
        out.push(Line::raw(format!(
            "   Reconnecting, next attempt at {}",
            local_time(until)
        )));
    }
    let n = run.attempts.len();
    let Some(att) = run.attempts.last() else {
        out.push(Line::raw(format!("   {}", run.state)));
        return;
    };
    out.push(Line::from(vec![
        Span::raw(format!("   Attempt #{n}  Status: ")),
        Span::styled(att.state.as_str(), state_style(att.state.as_str())),
    ]));
    match (known_time(run.started_at), run.finished_at) {
        (Some(s), Some(f)) => out.push(Line::raw(format!(
            "   Last run: {} (lasted {})",
            local_time(s),
            duration((f - s).num_milliseconds() as f64 / 1e3)
        ))),
        (Some(s), None) => out.push(Line::raw(format!(
            "   Started: {} (lasting {})",
            local_time(s),
            duration((now - s).num_milliseconds() as f64 / 1e3)
        ))),
        _ => {}
    }
    if n > 1 {
        let prev: Vec<String> = run.attempts[..n - 1]
            .iter()
            .enumerate()
            .map(|(i, a)| format!("#{}: {}", i + 1, a.state))
            .collect();
        out.push(Line::raw(format!(
            "   Previous attempts: {}",
            prev.join(", ")
        )));
    }
    if let Some(e) = &att.plan_error {
        wrapped(out, "   Problem: ", e, width, red);
    } else if att.filesystems.iter().any(|f| f.error().is_some()) {
        out.push(Line::styled(
            "   Problem: one or more of the filesystems encountered errors",
            red,
        ));
    }
    if att.filesystems.is_empty() && att.state == AttemptState::Done {
        out.push(Line::raw(
            "   NOTE: no filesystems were considered for replication!",
        ));
    } else if run.is_active() && att.lacks_estimates() {
        out.push(Line::raw(
            "   NOTE: not all steps could be size-estimated, total estimate is likely imprecise!",
        ));
    }
    filesystem_lines(out, att, width);
}

fn filesystem_lines<'a>(out: &mut Vec<Line<'a>>, att: &'a Attempt, width: usize) {
    // Room for the state, step, bytes and `from => to` (about 46 columns) comes first; longer
    // names are shortened from the left, so that the leaf stays visible.
    let name_w = att
        .filesystems
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(width.saturating_sub(46).max(12));
    for fs in &att.filesystems {
        out.push(fs_line(fs, name_w));
        if let Some(e) = fs.error() {
            wrapped(out, "      ", e, width, Style::default().fg(Color::Red));
        }
    }
}

fn fs_line(fs: &Filesystem, name_w: usize) -> Line<'_> {
    let (done, total) = fs.bytes();
    let n = fs.steps.len();
    // 1-based while a step runs, like zrepl.
    let shown = if fs.current_step < n {
        fs.current_step + 1
    } else {
        n
    };
    let state = fs.state.as_str().to_uppercase().replace('-', "_");
    let mut spans = vec![
        Span::raw(if fs.is_active() { " * " } else { "   " }),
        Span::raw(format!("{:<name_w$} ", elide_left(&fs.name, name_w))),
        Span::styled(state, state_style(fs.state.as_str())),
        Span::raw(format!(" {shown}/{n} {}/{}", bytes(done), bytes(total))),
    ];
    if let Some(st) = fs.steps.get(fs.current_step) {
        let from = st.from.as_deref().unwrap_or("full");
        let package = match st.intermediates.len() {
            0 => String::new(),
            n => format!(" (-I, {} snapshots)", n + 1),
        };
        spans.push(Span::raw(format!(
            " {from} => {}{package}{}",
            st.to,
            if st.resumed { " (resumed)" } else { "" }
        )));
    }
    if fs.blocked_on != BlockedOn::Nothing && fs.state != FsState::Done {
        spans.push(Span::styled(
            format!(" [{}]", fs.blocked_on),
            Style::default().add_modifier(Modifier::DIM),
        ));
    }
    Line::from(spans)
}

fn prune_lines<'a>(out: &mut Vec<Line<'a>>, title: &str, side: &'a PruneSide, width: usize) {
    out.push(section(&format!("{title}:")));
    let red = Style::default().fg(Color::Red);
    if let Some(e) = &side.error {
        wrapped(out, "   Error: ", e, width, red);
    }
    let destroyed: usize = side.filesystems.iter().map(|f| f.destroy.len()).sum();
    out.push(Line::raw(format!(
        "   {} filesystems, {destroyed} snapshots destroyed",
        side.filesystems.len()
    )));
    for f in &side.filesystems {
        if let Some(why) = &f.skipped {
            out.push(Line::raw(format!("   {} skipped: {why}", f.filesystem)));
            continue;
        }
        out.push(Line::raw(format!(
            "   {} Completed (destroyed {}, kept {})",
            f.filesystem,
            f.destroy.len(),
            f.keep.len()
        )));
        for (snap, e) in &f.errors {
            wrapped(out, "      ERROR: ", &format!("{snap}: {e}"), width, red);
        }
    }
}

fn snapshot_lines<'a>(
    out: &mut Vec<Line<'a>>,
    s: &'a Snapshotting,
    width: usize,
    now: DateTime<Utc>,
) {
    out.push(section("Snapshotting:"));
    let mut l = vec![
        Span::raw("   Status: "),
        Span::styled(s.state.as_str(), state_style(s.state.as_str())),
    ];
    if let Some(t) = s.next_round_at {
        l.push(Span::raw(format!(
            "  Next round: {} (in {})",
            local_time(t),
            duration(((t - now).num_milliseconds() as f64 / 1e3).max(0.0))
        )));
    }
    out.push(Line::from(l));
    if let Some(e) = &s.error {
        wrapped(out, "   Error: ", e, width, Style::default().fg(Color::Red));
    }
    if let Some(r) = &s.last_round {
        let skipped = match r.skipped.len() {
            0 => String::new(),
            n => format!(", {n} unchanged skipped"),
        };
        out.push(Line::raw(format!(
            "   Last round: {} snap name: {:?} ({} filesystems{skipped})",
            known_time(r.started_at).map(local_time).unwrap_or_default(),
            r.snapshot_name,
            r.filesystems.len()
        )));
        if let Some(e) = &r.error {
            wrapped(out, "   Error: ", e, width, Style::default().fg(Color::Red));
        }
    }
}

/// Appends `prefix` + `text`, hard-wrapped at `width` columns (continuation lines indented like
/// the prefix), every line of a multi-line text included: errors are shown in full.
fn wrapped(out: &mut Vec<Line<'_>>, prefix: &str, text: &str, width: usize, style: Style) {
    let indent = prefix.chars().count();
    let avail = width.saturating_sub(indent).max(10);
    let mut first = true;
    for para in text.lines() {
        for c in wrap_words(para, avail) {
            let p = if first {
                prefix.to_string()
            } else {
                " ".repeat(indent)
            };
            first = false;
            out.push(Line::styled(format!("{p}{c}"), style));
        }
    }
    if first {
        out.push(Line::styled(prefix.to_string(), style));
    }
}

/// `name`, or `…` and its last `width - 1` characters if it is longer than `width`.
fn elide_left(name: &str, width: usize) -> std::borrow::Cow<'_, str> {
    let n = name.chars().count();
    if n <= width || width == 0 {
        return name.into();
    }
    let skip = n - (width - 1);
    format!("…{}", name.chars().skip(skip).collect::<String>()).into()
}

/// Greedy word wrap at `width` characters; words longer than a line are split.
fn wrap_words(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    for word in text.split(' ') {
        let wl = word.chars().count();
        if cur_len > 0 && cur_len + 1 + wl > width {
            lines.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if cur_len > 0 {
            cur.push(' ');
            cur_len += 1;
        }
        for ch in word.chars() {
            if cur_len == width {
                lines.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
            cur.push(ch);
            cur_len += 1;
        }
    }
    lines.push(cur);
    lines
}

fn local_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Human-readable byte count (binary units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `45s`, `1m 2s`, `3h 4m`, `2d 3h`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}
