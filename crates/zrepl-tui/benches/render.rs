//! Time to render one frame of a job with 1,000 filesystems on an 80x24 terminal, against the
//! 5 ms target (prints the ratio; < 1 meets it). Run: `cargo bench -p zrepl-tui`.

use std::time::Instant;

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use zrepl_tui::{render, sample_status, UiState};

fn main() {
    const TARGET_MS: f64 = 5.0;
    let status = sample_status(1000);
    let mut ui = UiState {
        now: "2026-11-24T12:00:00Z".parse().expect("time"),
        ..UiState::default()
    };
    ui.rates.record("backup", "r", 0.0, 0);
    ui.rates.record("backup", "r", 1.0, 1 << 20);
    let mut term = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    let mut frame = |scroll: usize| {
        ui.scroll = scroll;
        term.draw(|f| render(f, &status, &mut ui)).expect("draw");
    };
    for i in 0..20 {
        frame(i * 37);
    }
    let n = 500;
    let start = Instant::now();
    for i in 0..n {
        // Scroll around, so that every frame differs from the previous one.
        frame((i * 37) % 1200);
    }
    let per_frame_ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
    println!(
        "render 80x24, 1000 filesystems: {per_frame_ms:.3} ms/frame; ratio to the {TARGET_MS} ms target: {:.3}",
        per_frame_ms / TARGET_MS
    );
}
