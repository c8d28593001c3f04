//! `cargo xtask unlock NAME` and `cargo xtask reset-password NAME`: account rescue from the host, through
//! `jhub-account` run in the hub's container (images/hub/jhub_hub/accounts.py), which leaves a request the
//! running hub applies at the name's next login attempt; no hub restart, nobody else logged out.

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
    let project = Settings::load(&stack_settings::default_env_file())?.stack_name;
    let runtime = tokio::runtime::Runtime::new()?;
    let docker = runtime.block_on(engine::connect())?;
    let hub = runtime.block_on(engine::service_container(&docker, &project, "hub"))?.ok_or_else(|| {
        UserError::new(
            format!("the hub of the stack `{project}` is not running"),
            "start it with `cargo xtask up` (the running hub applies the request)",
        )
    })?;
    let output = runtime.block_on(engine::exec(&docker, &hub, &["jhub-account", action.command(), name]))?;
    if output.exit_code != 0 {
        return Err(refusal(&output.stderr, output.exit_code).into());
    }
    print!("{}", output.stdout);
    if action == Action::Unlock {
        ui::note(&format!("`{name}` can log in again from every address (lockouts are per name and client address)"));
    }
    Ok(())
}

/// The `error:` / `hint:` lines `jhub-account` printed, as the xtask's own error.
fn refusal(stderr: &str, exit_code: i64) -> UserError {
    let line = |prefix: &str| stderr.lines().find_map(|line| line.strip_prefix(prefix)).map(str::trim).map(str::to_string);
    match (line("error:"), line("hint:")) {
        (Some(message), Some(hint)) => UserError::new(message, hint),
        _ => UserError::new(
            format!("jhub-account in the hub's container failed ({exit_code}): {}", stderr.trim()),
            "is the hub image older than this checkout? run `cargo xtask up`",
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hubs_error_and_hint_become_the_xtasks() {
        let refused = super::refusal("error: no account 'bob'\nhint: names are case-sensitive\n", 1);
        assert_eq!((refused.message.as_str(), refused.hint.as_str()), ("no account 'bob'", "names are case-sensitive"));
        let odd = super::refusal("exec: jhub-account: not found", 127);
        assert!(odd.message.contains("(127): exec: jhub-account: not found"), "{}", odd.message);
    }
}
