//! `cargo xtask backup DIR` / `cargo xtask restore DIR`: what a stack needs to come back (the hub's database
//! as a consistent copy through sqlite's online backup, its cookie secret, `stack/.env`, `images.lock` and
//! every user's volume streamed as tar through the Engine API), with a manifest of sha256 sums.
//!
//! A backup is written to a hidden sibling folder and renamed to DIR once its manifest is complete, so DIR
//! never holds half a backup. A restore checks every sum before it writes anything, restores into the
//! backup's own stack (refusing settings that name another without `--force`), refuses to overwrite a
//! stack's data without `--force`, labels every volume it creates as the platform does, and is
//! all-or-nothing up to the last step: every volume's tar is first extracted into a stage of its own inside
//! that volume, and only once all arrived are the stages moved into place (renames), users first.
//!
//! By responsibility: `manifest` (what a backup holds, its path checks and sums), `save` (the backup),
//! `restore` (choosing and checking the target, then writing it), `staging` (the all-or-nothing volume
//! moves), `containers` (the throwaway helper containers all of them, and `adopt-volumes`, run), `engines`
//! (where the volumes live: one host's engine, or each node of a swarm).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jhub_docker::contract;

use crate::stack_settings::Settings;
use crate::ui::UserError;
// The xtask's one progress style: a bar on a terminal, plain lines in logs.
use crate::ui::{bar, status as say};

mod containers;
mod engines;
mod manifest;
mod restore;
mod save;
mod staging;

pub(crate) use containers::{
    AccountsFrom, create_helper, engine_failed, helper_image, read_accounts, refuse_while_running, remove_container, run_helper_once,
};
pub use engines::SwarmAccess;
pub use restore::run_restore;
pub use save::run_backup;

/// The hub's data folder in its image, and the two files of it a backup keeps.
const DATA_DIR: &str = "/srv/jupyterhub/data";
const DATABASE: &str = "jupyterhub.sqlite";
const COOKIE_SECRET: &str = "jupyterhub_cookie_secret";

/// Where a user's volume is mounted while it is saved, hence the top folder of every user's tar; a restore
/// extracts that tar into its stage inside the target volume, then moves this folder's entries to the top.
const STAGING: &str = ".jhub-staging";

/// `cargo xtask backup` options (plain, so a CLI parser can wrap them).
pub struct BackupOptions {
    /// The new folder the backup is written to.
    pub dir: PathBuf,
    /// The stack's settings (`stack/.env` by default); the backup keeps a copy.
    pub env_file: PathBuf,
    /// The stack runs on the swarm `DOCKER_HOST` manages: the homes are read on every node.
    pub swarm: Option<SwarmAccess>,
}

/// `cargo xtask restore` options.
pub struct RestoreOptions {
    /// A folder `cargo xtask backup` wrote.
    pub dir: PathBuf,
    /// Where the backup's copy of the settings goes back to (`stack/.env` by default).
    pub env_file: PathBuf,
    /// Replace the stack's existing data (database, users' files, differing settings or lock).
    pub force: bool,
    /// The stack runs on the swarm `DOCKER_HOST` manages: each home goes back to its node.
    pub swarm: Option<SwarmAccess>,
}

/// The stack a verb works on, from its settings.
pub(crate) struct Target {
    pub(crate) stack: String,
    pub(crate) user_volume_prefix: String,
}

impl Target {
    pub(crate) fn from_env_file(env_file: &Path) -> Result<Target, UserError> {
        let settings = Settings::load(env_file)?;
        Ok(Target { stack: settings.stack_name, user_volume_prefix: settings.user_volume_prefix })
    }

    /// The hub's data volume: compose prefixes the file's `jupyterhub_data` with the project name.
    pub(crate) fn data_volume(&self) -> String {
        contract::data_volume_name(&self.stack)
    }

    /// The volume of the user whose escaped name (DockerSpawner's) is `escaped_user`.
    fn user_volume(&self, escaped_user: &str) -> String {
        contract::user_volume_name(&self.user_volume_prefix, escaped_user)
    }

    /// The labels the hub gives the volume of `escaped_user` (see `contract::user_volume_labels`); a name
    /// the spawner could not have made (an old backup's) is labelled as it is spelled.
    /// `accounts` (`read_accounts`) gives the account's creation time.
    fn user_volume_labels(&self, escaped_user: &str, accounts: &HashMap<String, String>) -> HashMap<String, String> {
        let user = contract::user_of_escaped_name(escaped_user).unwrap_or_else(|| escaped_user.to_string());
        let created = accounts.get(&user).map(String::as_str).unwrap_or_default();
        contract::user_volume_labels(&self.stack, &user, created).into_iter().collect()
    }
}
