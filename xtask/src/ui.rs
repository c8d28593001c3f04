//! User-facing text: errors with a `hint:` line, logs on stderr, colour only when wanted (NO_COLOR).

use std::io::IsTerminal;

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
