//! The interactive loop: polls the daemon every `delay`, redraws, and maps keys to actions.
//!
//! The terminal is put into raw mode on the alternate screen and restored on every way out:
//! normal exit, an error, `q`/Esc/Ctrl-C (Ctrl-C arrives as a key in raw mode) and a panic
//! (ratatui's init installs a panic hook that restores the terminal before the message prints).

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::model::Status;
use crate::view::{render, UiState};

/// The daemon as the view needs it (the binary implements it over the control socket).
pub trait Daemon {
    fn status(&mut self) -> Result<Status, String>;
    /// `op` is `wakeup` or `reset`.
    fn signal(&mut self, job: &str, op: &str) -> Result<(), String>;
}

/// What a key asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Quit,
    Signal { job: String, op: &'static str },
}

/// Applies a key press to the view state (selection, scrolling, the reset confirmation) and
/// says what else to do.
pub fn handle_key(ui: &mut UiState, status: &Status, key: KeyEvent) -> Action {
    let selected = ui.selected_job(status).map(|(n, _)| n.clone());
    if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        return Action::Quit;
    }
    if ui.confirm_reset {
        ui.confirm_reset = false;
        return match (key.code, selected) {
            (KeyCode::Char('y') | KeyCode::Char('Y'), Some(job)) => {
                Action::Signal { job, op: "reset" }
            }
            _ => {
                ui.message = Some(("reset cancelled".into(), false));
                Action::Nothing
            }
        };
    }
    ui.message = None;
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
        KeyCode::Tab | KeyCode::Right => ui.select_relative(status, 1),
        KeyCode::BackTab | KeyCode::Left => ui.select_relative(status, -1),
        KeyCode::Down | KeyCode::Char('j') => ui.scroll = ui.scroll.saturating_add(1),
        KeyCode::Up | KeyCode::Char('k') => ui.scroll = ui.scroll.saturating_sub(1),
        KeyCode::PageDown | KeyCode::Char(' ') => ui.scroll = ui.scroll.saturating_add(ui.page),
        KeyCode::PageUp => ui.scroll = ui.scroll.saturating_sub(ui.page),
        KeyCode::Home => ui.scroll = 0,
        KeyCode::End => ui.scroll = usize::MAX,
        KeyCode::Char('w') => {
            if let Some(job) = selected {
                return Action::Signal { job, op: "wakeup" };
            }
        }
        KeyCode::Char('r') => ui.confirm_reset = selected.is_some(),
        _ => {}
    }
    Action::Nothing
}

/// Feeds the byte counts of every running replication into the rate tracker.
pub fn record_rates(ui: &mut UiState, status: &Status, clock_secs: f64) {
    for (name, job) in status.visible_jobs() {
        if let Some(run) = &job.replication {
            let done = run.attempts.last().map_or(0, |a| a.bytes().0);
            let id = crate::model::known_time(run.started_at)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            ui.rates.record(name, &id, clock_secs, done);
        }
    }
}

/// Runs the interactive view until the user quits. `first` is a status already fetched (so that
/// an unreachable daemon is reported before the screen switches).
pub fn run(
    daemon: &mut impl Daemon,
    first: Status,
    delay: Duration,
    job: Option<String>,
) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let r = run_loop(&mut terminal, daemon, first, delay, job);
    ratatui::restore();
    r
}

fn run_loop(
    terminal: &mut ratatui::DefaultTerminal,
    daemon: &mut impl Daemon,
    first: Status,
    delay: Duration,
    job: Option<String>,
) -> std::io::Result<()> {
    let clock = Instant::now();
    let mut status = first;
    let mut ui = UiState {
        selected: job,
        delay,
        ..UiState::default()
    };
    record_rates(&mut ui, &status, 0.0);
    let mut next_fetch = Instant::now() + delay;
    loop {
        if Instant::now() >= next_fetch {
            match daemon.status() {
                Ok(s) => {
                    status = s;
                    ui.fetch_error = None;
                    record_rates(&mut ui, &status, clock.elapsed().as_secs_f64());
                }
                Err(e) => ui.fetch_error = Some(e),
            }
            next_fetch = Instant::now() + delay;
        }
        ui.now = chrono::Utc::now();
        terminal.draw(|f| render(f, &status, &mut ui))?;
        let timeout = next_fetch.saturating_duration_since(Instant::now());
        if !event::poll(timeout)? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match handle_key(&mut ui, &status, key) {
            Action::Nothing => {}
            Action::Quit => return Ok(()),
            Action::Signal { job, op } => {
                ui.message = Some(match daemon.signal(&job, op) {
                    Ok(()) => (format!("{op} sent to job {job}"), false),
                    Err(e) => (format!("{op} {job}: {e}"), true),
                });
                // Show the effect soon.
                next_fetch = Instant::now() + Duration::from_millis(200);
            }
        }
    }
}
