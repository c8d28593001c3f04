//! `cargo xtask unlock NAME`, `cargo xtask reset-password NAME` and `cargo xtask announce`: what the admin asks
//! of the running hub from the host. Account rescue goes through `jhub-account` run in the hub's container
//! (images/hub/jhub_hub/accounts.py), which leaves a request the hub applies at the name's next login attempt;
//! the announcement through `jhub-announce` (announcement.py), which writes the file every hub page reads. No
//! hub restart, nobody logged out.

use crate::engine;
use crate::stack_settings::{self, Settings};
use crate::ui::{self, UserError};

/// What to do to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forget every failed login of the name (all client addresses).
    Unlock,
    /// Set a new random password (printed once) and unlock.
    ResetPassword,
}

impl Action {
    fn command(self) -> &'static str {
        match self {
            Action::Unlock => "unlock",
            Action::ResetPassword => "reset-password",
        }
    }
}

pub fn run(action: Action, name: &str) -> anyhow::Result<()> {
    print!("{}", in_hub(&["jhub-account", action.command(), name])?);
    if action == Action::Unlock {
        ui::note(&format!("`{name}` can log in again from every address (lockouts are per name and client address)"));
    }
    Ok(())
}

/// What `cargo xtask announce` was asked: set a text for a while, clear it, or show what is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    Set { text: String, seconds: u64 },
    Clear,
    Show,
}

pub fn announce(announcement: &Announcement) -> anyhow::Result<()> {
    let seconds;
    let argv: Vec<&str> = match announcement {
        Announcement::Set { text, seconds: duration } => {
            seconds = duration.to_string();
            vec!["jhub-announce", "set", seconds.as_str(), text.as_str()]
        }
        Announcement::Clear => vec!["jhub-announce", "clear"],
        Announcement::Show => vec!["jhub-announce", "show"],
    };
    print!("{}", in_hub(&argv)?);
    Ok(())
}

/// A duration as an admin writes it: a whole number with `m`, `h` or `d` (30m, 2h, 3d), in seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let hint = "write minutes, hours or days, such as 30m, 2h or 3d";
    let unit = match text.chars().last() {
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(format!("`{text}` is not a duration; {hint}")),
    };
    match text[..text.len() - 1].parse::<u64>() {
        Ok(count) if count > 0 && count <= 366 * 86_400 / unit => Ok(count * unit),
        _ => Err(format!("`{text}` is not a duration of a minute to a year; {hint}")),
    }
}

/// Runs `argv` in the stack's running hub container and returns what it printed; its `error:` / `hint:`
/// lines become the xtask's own error.
fn in_hub(argv: &[&str]) -> anyhow::Result<String> {
    let project = Settings::load(&stack_settings::default_env_file())?.stack_name;
    let runtime = tokio::runtime::Runtime::new()?;
    let docker = runtime.block_on(engine::connect())?;
    let hub = runtime.block_on(engine::service_container(&docker, &project, "hub"))?.ok_or_else(|| {
        UserError::new(
            format!("the hub of the stack `{project}` is not running"),
            "start it with `cargo xtask up` (the running hub applies the request)",
        )
    })?;
    let output = runtime.block_on(engine::exec(&docker, &hub, argv))?;
    if output.exit_code != 0 {
        return Err(refusal(argv[0], &output.stderr, output.exit_code).into());
    }
    Ok(output.stdout)
}

/// The `error:` / `hint:` lines `program` printed in the hub's container, as the xtask's own error.
fn refusal(program: &str, stderr: &str, exit_code: i64) -> UserError {
    let line = |prefix: &str| stderr.lines().find_map(|line| line.strip_prefix(prefix)).map(str::trim).map(str::to_string);
    match (line("error:"), line("hint:")) {
        (Some(message), Some(hint)) => UserError::new(message, hint),
        _ => UserError::new(
            format!("{program} in the hub's container failed ({exit_code}): {}", stderr.trim()),
            "is the hub image older than this checkout? run `cargo xtask up`",
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hubs_error_and_hint_become_the_xtasks() {
        let refused = super::refusal("jhub-account", "error: no account 'bob'\nhint: names are case-sensitive\n", 1);
        assert_eq!((refused.message.as_str(), refused.hint.as_str()), ("no account 'bob'", "names are case-sensitive"));
        let odd = super::refusal("jhub-account", "exec: jhub-account: not found", 127);
        assert!(odd.message.contains("jhub-account in the hub's container failed (127): exec: jhub-account: not found"), "{}", odd.message);
    }

    #[test]
    fn durations_are_minutes_hours_or_days() {
        assert_eq!(super::parse_duration("30m"), Ok(1800));
        assert_eq!(super::parse_duration("2h"), Ok(7200));
        assert_eq!(super::parse_duration("3d"), Ok(259_200));
        for bad in ["", "2", "h", "0h", "-1h", "1.5h", "2w", "400d"] {
            assert!(super::parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
