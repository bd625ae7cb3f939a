//! The live summary area: the bottom rows of a terminal, redrawn in place,
//! while log lines scroll above it.
//!
//! The rows above the area are made the terminal's scrolling region
//! (DECSTBM, as apt's progress bar does), so lines that anything writes to
//! stdout scroll there and never over the summary, without passing through
//! this module. A frame is drawn in one locked write of stdout, so it never
//! interleaves with a log line; lines wider than the terminal are clipped,
//! not wrapped.
//!
//! It only starts on a terminal that can move its cursor (not `TERM=dumb`)
//! and is tall enough, and it always gives the terminal back as it found it
//! (scrolling region, cursor shown, line wrapping, the area cleared): on
//! [`Live::finish`], and on drop, so also when the demo fails or panics.

use std::io::{IsTerminal, Write};

/// Rows a terminal needs for the live area: the summary and a few log lines.
const MIN_ROWS: u16 = 16;

/// Columns a terminal needs for the live area.
const MIN_COLS: u16 = 60;

/// The live area of a terminal.
pub(crate) struct Live {
    /// The terminal's size at the last frame.
    rows: u16,
    cols: u16,
    /// Rows the area takes at the bottom; 0 before the first frame.
    reserved: u16,
    finished: bool,
}

/// The terminal's rows and columns, when stdout is one.
#[cfg(unix)]
fn size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

#[cfg(not(unix))]
fn size() -> Option<(u16, u16)> {
    None
}

/// Writes `bytes` to stdout in one locked write. A closed or failing stdout
/// loses the frame only: there is nowhere else to show it.
fn emit(bytes: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes.as_bytes());
    let _ = out.flush();
}

impl Live {
    /// The live area, when stdout is a terminal that can redraw in place
    /// (`TERM` is not `dumb`) with at least 16 rows and 60 columns; `None`
    /// otherwise, and then the caller prints plain lines.
    pub(crate) fn start() -> Option<Live> {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        if dumb || !std::io::stdout().is_terminal() {
            return None;
        }
        let (rows, cols) = size()?;
        if rows < MIN_ROWS || cols < MIN_COLS {
            return None;
        }
        emit("\x1b[?25l");
        Some(Live {
            rows,
            cols,
            reserved: 0,
            finished: false,
        })
    }

    /// The terminal's width in columns, as of now.
    pub(crate) fn width(&mut self) -> usize {
        if let Some((rows, cols)) = size() {
            (self.rows, self.cols) = (rows, cols);
        }
        usize::from(self.cols)
    }

    /// Draws `lines` as the area. When they do not all fit (leaving at
    /// least three rows for log lines), the first and the last `keep_last`
    /// lines are kept and lines in between are left out.
    pub(crate) fn draw(&mut self, lines: &[String], keep_last: usize) {
        let (rows, cols) = size().unwrap_or((self.rows, self.cols));
        if rows < 4 {
            return;
        }
        let room = usize::from(rows.saturating_sub(3)).max(1);
        let shown = fit(lines, room, keep_last);
        let reserved = u16::try_from(shown.len()).unwrap_or(u16::MAX);
        let mut frame = String::with_capacity(256 * shown.len());
        if (rows, reserved) != (self.rows, self.reserved) {
            self.layout(&mut frame, rows, reserved);
        }
        (self.rows, self.cols) = (rows, cols);
        // Save the cursor (in the log rows), draw without wrapping, restore.
        frame.push_str("\x1b7\x1b[?7l");
        let top = rows - reserved + 1;
        for (i, line) in shown.iter().enumerate() {
            let line = clip(line, usize::from(cols));
            frame.push_str(&format!("\x1b[{};1H\x1b[2K{line}", top + i as u16));
        }
        frame.push_str("\x1b[?7h\x1b8");
        emit(&frame);
    }

    /// Moves the area to the bottom `reserved` rows of a terminal of `rows`
    /// rows: clears the area drawn before, makes room by scrolling what is
    /// above if the cursor is too low, and sets the scrolling region to the
    /// rows above.
    fn layout(&mut self, frame: &mut String, rows: u16, reserved: u16) {
        // DECSTBM homes the cursor, so it is saved and restored around it.
        frame.push_str("\x1b7\x1b[r");
        if self.reserved > 0 {
            let old_top = (self.rows - self.reserved + 1).min(rows);
            frame.push_str(&format!("\x1b[{old_top};1H\x1b[J"));
        }
        frame.push_str("\x1b8");
        frame.push_str(&"\n".repeat(usize::from(reserved)));
        frame.push_str(&format!("\x1b[{reserved}A\x1b7"));
        frame.push_str(&format!("\x1b[1;{}r\x1b8", rows - reserved));
        (self.rows, self.reserved) = (rows, reserved);
    }

    /// Gives the terminal back: the whole screen scrolls again, the area is
    /// cleared, the cursor is shown where the log lines ended (on a clean
    /// line, over the `^C` the terminal echoed). Then plain `println!`s
    /// follow the log lines.
    pub(crate) fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut frame = String::from("\x1b7\x1b[r");
        if self.reserved > 0 {
            let top = self.rows - self.reserved + 1;
            frame.push_str(&format!("\x1b[{top};1H\x1b[J"));
        }
        frame.push_str("\x1b8\r\x1b[K\x1b[?7h\x1b[?25h");
        emit(&frame);
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `line` cut to `width` visible characters; its escape sequences (CSI:
/// `ESC [`, parameters, one final byte) take no room, and a line that was
/// cut ends with a reset, so no colour runs on.
fn clip(line: &str, width: usize) -> std::borrow::Cow<'_, str> {
    let mut visible = 0;
    let mut in_escape = false;
    for (at, c) in line.char_indices() {
        match c {
            '\x1b' => in_escape = true,
            c if in_escape => in_escape = c == '[' || !('\x40'..='\x7e').contains(&c),
            _ if visible == width => {
                let mut cut = line[..at].to_owned();
                if cut.contains('\x1b') {
                    cut.push_str("\x1b[0m");
                }
                return cut.into();
            }
            _ => visible += 1,
        }
    }
    line.into()
}

/// `lines` cut to at most `room`: the first line, then as many of the
/// following as fit, then the last `keep_last`.
fn fit(lines: &[String], room: usize, keep_last: usize) -> Vec<&String> {
    if lines.len() <= room {
        return lines.iter().collect();
    }
    let keep_last = keep_last.min(room.saturating_sub(1)).min(lines.len());
    let head = room - keep_last;
    lines[..head]
        .iter()
        .chain(&lines[lines.len() - keep_last..])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    #[test]
    fn a_line_is_clipped_to_the_width_without_counting_escape_codes() {
        assert_eq!(clip("abcdef", 4), "abcd");
        assert_eq!(clip("abcd", 4), "abcd");
        assert_eq!(clip("─│·é", 2), "─│");
        assert_eq!(clip("\x1b[1mab\x1b[0mcd", 3), "\x1b[1mab\x1b[0mc\x1b[0m");
        assert_eq!(clip("\x1b[31mab\x1b[0m", 2), "\x1b[31mab\x1b[0m");
    }

    #[test]
    fn lines_that_fit_are_all_shown() {
        assert_eq!(fit(&lines(3), 5, 2), ["0", "1", "2"]);
    }

    #[test]
    fn when_lines_do_not_fit_the_first_ones_and_the_last_few_are_kept() {
        assert_eq!(fit(&lines(10), 5, 2), ["0", "1", "2", "8", "9"]);
        assert_eq!(fit(&lines(10), 2, 2), ["0", "9"]);
        assert_eq!(fit(&lines(10), 1, 2), ["0"]);
    }
}
