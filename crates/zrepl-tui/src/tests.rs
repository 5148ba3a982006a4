//! The renderer on ratatui's TestBackend: what an 80x24 terminal shows.

use chrono::{DateTime, Utc};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

use crate::{handle_key, render, sample_status, Action, Status, UiState};

fn now() -> DateTime<Utc> {
    "2026-11-24T12:00:00Z".parse().expect("time")
}

fn screen(status: &Status, ui: &mut UiState, w: u16, h: u16) -> Vec<String> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    t.draw(|f| render(f, status, ui)).expect("draw");
    let buf = t.backend().buffer().clone();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect()
}

fn ui() -> UiState {
    UiState {
        now: now(),
        ..UiState::default()
    }
}

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

#[test]
fn overview_fits_80x24() {
    let st = sample_status(6);
    let mut u = ui();
    u.rates.record("backup", "x", 0.0, 0);
    let s = screen(&st, &mut u, 80, 24);
    let all = s.join("\n");
    // Internal jobs are hidden; jobs listed; the first one selected.
    assert!(!all.contains("_control"), "{all}");
    for j in ["backup", "sink", "snapjob"] {
        assert!(all.contains(j), "{j} missing:\n{all}");
    }
    assert!(all.contains(" backup (push) "), "{all}");
    assert!(all.contains("State: replicating"), "{all}");
    // The gauge shows bytes replicated / expected.
    assert!(all.contains("/ 30.0 MiB"), "{all}");
    // A filesystem in progress, with its step.
    assert!(
        all.contains("* zroot/data/fs0000 STEPPING 1/2 0 B/5.0 MiB @a => @b"),
        "{all}"
    );
    assert!(
        all.contains("zroot/data/fs0001 DONE 2/2 4.0 KiB/5.0 MiB"),
        "{all}"
    );
    assert!(all.contains("q quit"), "{all}");
    assert_eq!(s.len(), 24);
}

#[test]
fn rate_and_eta_in_gauge() {
    let st = sample_status(2);
    let mut u = ui();
    u.rates.record("backup", "r", 0.0, 0);
    u.rates.record("backup", "r", 2.0, 2 << 20);
    let all = screen(&st, &mut u, 80, 24).join("\n");
    assert!(all.contains("@ 1.0 MiB/s"), "{all}");
    assert!(all.contains("left)"), "{all}");
}

#[test]
fn scrolling_reaches_pruning_and_snapshotting_and_clamps() {
    let st = sample_status(40);
    let mut u = ui();
    let top = screen(&st, &mut u, 80, 24).join("\n");
    assert!(!top.contains("Snapshotting:"), "{top}");
    u.scroll = usize::MAX;
    let bottom = screen(&st, &mut u, 80, 24).join("\n");
    assert!(bottom.contains("Snapshotting:"), "{bottom}");
    assert!(bottom.contains("Next round:"), "{bottom}");
    assert!(bottom.contains("Pruning Receiver:"), "{bottom}");
    assert!(u.scroll < 200, "scroll clamped: {}", u.scroll);
    // A page down from the top moves by the body height.
    u.scroll = 0;
    assert_eq!(
        handle_key(&mut u, &st, key(KeyCode::PageDown)),
        Action::Nothing
    );
    assert_eq!(u.scroll, u.page);
}

#[test]
fn errors_are_shown_in_full_wrapped() {
    let mut st = sample_status(1);
    let long = "cannot receive: ".to_string() + &"x".repeat(150) + " THE END";
    st.jobs.get_mut("backup").expect("job").error = Some(long);
    let all = screen(&st, &mut ui(), 80, 24).join("\n");
    assert!(all.contains("Error: cannot receive:"), "{all}");
    assert!(all.contains("THE END"), "{all}");
}

#[test]
fn keys_switch_jobs_and_send_signals() {
    let st = sample_status(1);
    let mut u = ui();
    assert_eq!(handle_key(&mut u, &st, key(KeyCode::Tab)), Action::Nothing);
    assert_eq!(u.selected.as_deref(), Some("sink"));
    handle_key(&mut u, &st, key(KeyCode::Right));
    assert_eq!(u.selected.as_deref(), Some("snapjob"));
    handle_key(&mut u, &st, key(KeyCode::Tab));
    assert_eq!(u.selected.as_deref(), Some("backup"), "wraps around");
    handle_key(&mut u, &st, key(KeyCode::BackTab));
    assert_eq!(u.selected.as_deref(), Some("snapjob"));
    let all = screen(&st, &mut u, 80, 24).join("\n");
    assert!(
        all.contains("Error: pruning failed: dataset is busy"),
        "{all}"
    );

    assert_eq!(
        handle_key(&mut u, &st, key(KeyCode::Char('w'))),
        Action::Signal {
            job: "snapjob".into(),
            op: "wakeup"
        }
    );
    // Reset asks first; anything but y cancels.
    assert_eq!(
        handle_key(&mut u, &st, key(KeyCode::Char('r'))),
        Action::Nothing
    );
    assert!(u.confirm_reset);
    let all = screen(&st, &mut u, 80, 24).join("\n");
    assert!(all.contains("Reset job snapjob"), "{all}");
    assert_eq!(
        handle_key(&mut u, &st, key(KeyCode::Char('n'))),
        Action::Nothing
    );
    assert!(!u.confirm_reset);
    handle_key(&mut u, &st, key(KeyCode::Char('r')));
    assert_eq!(
        handle_key(&mut u, &st, key(KeyCode::Char('y'))),
        Action::Signal {
            job: "snapjob".into(),
            op: "reset"
        }
    );
    assert_eq!(
        handle_key(&mut u, &st, key(KeyCode::Char('q'))),
        Action::Quit
    );
    assert_eq!(
        handle_key(
            &mut u,
            &st,
            KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)
        ),
        Action::Quit
    );
}

#[test]
fn start_on_a_given_job_and_fetch_error() {
    let st = sample_status(1);
    let mut u = UiState {
        selected: Some("sink".into()),
        fetch_error: Some("connection refused".into()),
        ..ui()
    };
    let all = screen(&st, &mut u, 80, 24).join("\n");
    assert!(all.contains(" sink (sink) "), "{all}");
    assert!(all.contains("status fetch: connection refused"), "{all}");
}

#[test]
fn empty_status_and_tiny_terminal_do_not_panic() {
    let st = Status::default();
    let all = screen(&st, &mut ui(), 80, 24).join("\n");
    assert!(all.contains("no jobs"), "{all}");
    let big = sample_status(3);
    for (w, h) in [(20, 5), (1, 1), (80, 3)] {
        let s = screen(&big, &mut ui(), w, h);
        assert_eq!(s.len(), h as usize);
    }
}

#[test]
fn long_filesystem_names_are_shortened_from_the_left() {
    let mut st = sample_status(2);
    let run = st
        .jobs
        .get_mut("backup")
        .and_then(|j| j.replication.as_mut())
        .expect("run");
    run.attempts[0].filesystems[0].name = "zreplplatformtest270_0/very/deep/tree/src/a".into();
    let all = screen(&st, &mut ui(), 80, 24).join("\n");
    assert!(
        all.lines().any(|l| l.contains("…")
            && l.contains("tree/src/a STEPPING")
            && l.contains("@a => @b")),
        "{all}"
    );
}
