//! User-facing text: errors with a `hint:` line, notes and progress on stderr, colour only when wanted
//! (NO_COLOR unset and stderr a terminal). Every verb's progress (bars, spinners, the lines that replace
//! them in logs) comes from here, so they all look alike.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::ProgressStyle;
pub use indicatif::{MultiProgress, ProgressBar};

/// An error the user can act on: a one-line message naming the failing thing, and the next step.
pub type UserError = jhub_docker::HintedError;

pub fn colour_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()) && std::io::stderr().is_terminal()
}

fn paint(code: &str, text: &str) -> String {
    if colour_wanted() { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
}

/// Prints `error: …` and, for errors the user can act on, `hint: …`, on stderr.
pub fn report_error(err: &anyhow::Error) {
    if let Some(user_error) = err.downcast_ref::<UserError>() {
        eprintln!("{}: {}", paint("1;31", "error"), user_error.message);
        eprintln!("{}: {}", paint("1;36", "hint"), user_error.hint);
    } else {
        eprintln!("{}: {err:#}", paint("1;31", "error"));
    }
}

/// A `warning: …` with its `hint: …`, on stderr: something worked, but not as asked.
pub fn warn(message: &str, hint: &str) {
    eprintln!("{}: {message}", paint("1;33", "warning"));
    eprintln!("{}: {hint}", paint("1;36", "hint"));
}

/// A progress note on stderr.
pub fn note(text: &str) {
    eprintln!("{text}");
}

/// How often a spinner turns: often enough to show that something is alive.
const TICK: Duration = Duration::from_millis(120);

/// The one progress line: spinner, what it is about, elapsed time, then (for counted work) the bar and the
/// count, then the current message. Bold and cyan only when colour is wanted.
fn style(counted: bool) -> ProgressStyle {
    let template = match (counted, colour_wanted()) {
        (true, true) => "{spinner:.cyan} {prefix:<12.bold} {elapsed:>4} [{bar:30.cyan/blue}] {pos}/{len} {wide_msg}",
        (true, false) => "{spinner} {prefix:<12} {elapsed:>4} [{bar:30}] {pos}/{len} {wide_msg}",
        (false, true) => "{spinner:.cyan} {prefix:<12.bold} {elapsed:>4} {wide_msg}",
        (false, false) => "{spinner} {prefix:<12} {elapsed:>4} {wide_msg}",
    };
    ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> ")
}

/// A bar over `steps` on stderr. indicatif hides it when stderr is not a terminal; the functions below then
/// print plain lines instead.
pub fn bar(steps: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(steps).with_prefix(prefix.to_string()).with_style(style(true));
    tick(&bar);
    bar
}

/// A spinner for one of several jobs that run at once, each on its own line of `group`.
pub fn spinner(group: &MultiProgress, prefix: &str) -> ProgressBar {
    let spinner = group.add(ProgressBar::new_spinner().with_prefix(prefix.to_string()).with_style(style(false)));
    tick(&spinner);
    spinner
}

/// Keeps a visible bar's spinner and clock moving between updates (again after a `reset`).
pub fn tick(bar: &ProgressBar) {
    if !bar.is_hidden() {
        bar.enable_steady_tick(TICK);
    }
}

/// A line for logs only: where bars are not drawn it says what a visible bar already shows.
pub fn say(bar: &ProgressBar, text: &str) {
    if bar.is_hidden() {
        note(text);
    }
}

/// What the bar is doing now: its message on a terminal, a plain line in logs.
pub fn status(bar: &ProgressBar, text: &str) {
    if bar.is_hidden() {
        note(text);
    } else {
        bar.set_message(text.to_string());
    }
}

/// A line that stays: printed above the bar on a terminal, plain in logs.
pub fn line(bar: &ProgressBar, text: &str) {
    if bar.is_hidden() {
        note(text);
    } else {
        bar.println(text);
    }
}

/// Formats a byte count the way people read image sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_like_docker_images() {
        assert_eq!(super::human_size(512), "512 B");
        assert_eq!(super::human_size(1_610_000_000), "1.6 GB");
        assert_eq!(super::human_size(280_400_000), "280.4 MB");
    }
}
