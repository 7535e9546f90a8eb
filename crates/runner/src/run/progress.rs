//! Progress of long work on stderr: an indicatif bar on a terminal (cells done, rate,
//! ETA), plain lines elsewhere (logs, CI: at most one every few seconds), nothing
//! under `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

const TERMINAL: &str = "{bar:40} {pos}/{len} cells  {rate}  ETA {eta}";
const PLAIN: &str = "swept {pos}/{len} cells ({percent}%), {rate}, ETA {eta}";
/// How often a plain line is printed at most.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Bar,
    Lines,
    Silent,
}

impl ProgressMode {
    /// A bar on a terminal, plain lines when stderr is a file or pipe, nothing when
    /// `quiet`.
    pub fn detect(quiet: bool) -> ProgressMode {
        if quiet {
            ProgressMode::Silent
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        }
    }
}

/// A bar counting `total` cells.
pub fn cells_bar(total: u64, mode: ProgressMode) -> ProgressBar {
    let (target, template) = match mode {
        ProgressMode::Silent => {
            // Still counting, for a caller that watches it (`RunControl::progress`).
            let bar = ProgressBar::hidden();
            bar.set_length(total);
            return bar;
        }
        ProgressMode::Bar => (ProgressDrawTarget::stderr(), TERMINAL),
        ProgressMode::Lines => (
            ProgressDrawTarget::term_like(Box::new(PlainLines::default())),
            PLAIN,
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} cells/s", state.per_sec());
            },
        ));
    }
    bar
}

/// A "terminal" that prints each drawn state of the bar as one plain line, at most
/// one every [`PLAIN_EVERY`], and ignores cursor movement.
#[derive(Debug, Default)]
struct PlainLines {
    state: Mutex<PlainState>,
}

#[derive(Debug, Default)]
struct PlainState {
    pending: String,
    last: Option<Instant>,
}

impl TermLike for PlainLines {
    fn width(&self) -> u16 {
        200
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        if let Ok(mut state) = self.state.lock() {
            state.pending.push_str(s);
        }
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let Ok(mut state) = self.state.lock() else {
            return Ok(());
        };
        let line = state.pending.replace('\r', "").trim().to_string();
        state.pending.clear();
        let due = state.last.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
        if !line.is_empty() && due {
            eprintln!("{line}");
            state.last = Some(Instant::now());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_are_throttled_and_trimmed() {
        let term = PlainLines::default();
        term.write_str("\rswept 1/9 cells    ").unwrap();
        term.flush().unwrap();
        let first = term.state.lock().unwrap().last;
        assert!(first.is_some());
        term.write_str("swept 2/9 cells").unwrap();
        term.flush().unwrap();
        // Within PLAIN_EVERY of the first line: not printed, pending cleared.
        let state = term.state.lock().unwrap();
        assert_eq!(state.last, first);
        assert!(state.pending.is_empty());
    }
}
