//! `cargo xtask archives [--purge NAME | --purge-all] [--yes]`: the volumes the hub archived deleted users'
//! files into (a user's volume is copied into `<stack>-archive-<user>-<UTC time>` and then removed, so a
//! new account of the name starts empty). Lists them; a purge deletes them, and is a dry run unless --yes.

use std::collections::HashMap;

use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptions};

use crate::engine;
use crate::stack_settings::{self, Settings};
use crate::ui::{self, UserError};

use jhub_docker::contract::{ARCHIVED_AT_LABEL, ARCHIVED_USER_LABEL, STACK_LABEL};

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Only list.
    Nothing,
    /// The archive of this volume name, or every archive of this user name.
    Named(String),
    /// Every archive of the stack.
    All,
}

/// One archive volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub volume: String,
    pub user: String,
    pub archived_at: String,
}

impl Archive {
    fn from_labels(volume: String, labels: &HashMap<String, String>) -> Option<Archive> {
        let user = labels.get(ARCHIVED_USER_LABEL)?.clone();
        Some(Archive { volume, user, archived_at: labels.get(ARCHIVED_AT_LABEL).cloned().unwrap_or_default() })
    }
}

/// The archives `purge` picks: one named by its volume, else every one of that user.
pub fn chosen<'a>(archives: &'a [Archive], purge: &Purge) -> Result<Vec<&'a Archive>, UserError> {
    match purge {
        Purge::Nothing => Ok(Vec::new()),
        Purge::All => Ok(archives.iter().collect()),
        Purge::Named(name) => {
            let by_volume: Vec<&Archive> = archives.iter().filter(|archive| archive.volume == *name).collect();
            let picked = if by_volume.is_empty() { archives.iter().filter(|archive| archive.user == *name).collect() } else { by_volume };
            if picked.is_empty() {
                return Err(UserError::new(
                    format!("no archive named `{name}` and none of a user `{name}`"),
                    "`cargo xtask archives` lists the archives (volume and user names)",
                ));
            }
            Ok(picked)
        }
    }
}

pub fn run(purge: Purge, yes: bool) -> anyhow::Result<()> {
    let stack_name = Settings::load(&stack_settings::default_env_file())?.stack_name;
    let runtime = tokio::runtime::Runtime::new()?;
    let docker = runtime.block_on(engine::connect())?;
    let labels = [format!("{STACK_LABEL}={stack_name}"), ARCHIVED_USER_LABEL.to_string()];
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", labels.iter().map(String::as_str).collect())]);
    let volumes = runtime.block_on(docker.list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filters).build())))?;
    let mut archives: Vec<Archive> =
        volumes.volumes.unwrap_or_default().into_iter().filter_map(|volume| Archive::from_labels(volume.name, &volume.labels)).collect();
    archives.sort_by(|a, b| (&a.user, &a.archived_at).cmp(&(&b.user, &b.archived_at)));
    let picked = chosen(&archives, &purge)?;
    if purge == Purge::Nothing {
        if archives.is_empty() {
            ui::note(&format!("the stack `{stack_name}` has no archives of deleted users"));
            return Ok(());
        }
        println!("{:<24} {:<22} VOLUME", "USER", "ARCHIVED AT (UTC)");
        for archive in &archives {
            println!("{:<24} {:<22} {}", archive.user, archive.archived_at, archive.volume);
        }
        ui::note("an archive is kept until purged: `cargo xtask archives --purge NAME --yes` (NAME: a volume or a user)");
        return Ok(());
    }
    if picked.is_empty() {
        ui::note(&format!("the stack `{stack_name}` has no archives of deleted users: nothing to purge"));
        return Ok(());
    }
    if !yes {
        for archive in &picked {
            println!("would delete {} (files of `{}`, archived {})", archive.volume, archive.user, archive.archived_at);
        }
        ui::note("a dry run: nothing was deleted; add --yes to delete these archives for good");
        return Ok(());
    }
    runtime.block_on(async {
        for archive in &picked {
            docker.remove_volume(&archive.volume, None::<RemoveVolumeOptions>).await.map_err(|err| {
                UserError::new(
                    format!("cannot delete the archive {}: {err}", archive.volume),
                    format!("a container still uses it: `docker ps -a --filter volume={}` shows which", archive.volume),
                )
            })?;
            println!("deleted {} (files of `{}`, archived {})", archive.volume, archive.user, archive.archived_at);
        }
        Ok::<_, anyhow::Error>(())
    })
}

#[cfg(test)]
mod tests {
    use super::{Archive, Purge, chosen};

    fn archive(volume: &str, user: &str) -> Archive {
        Archive { volume: volume.to_string(), user: user.to_string(), archived_at: "2026-12-05T07:00:00Z".to_string() }
    }

    #[test]
    fn a_purge_picks_a_volume_by_name_or_every_archive_of_a_user() {
        let archives = [archive("jhub-archive-bob-1", "bob"), archive("jhub-archive-bob-2", "bob"), archive("jhub-archive-eve-1", "eve")];
        let volumes = |picked: Vec<&Archive>| picked.into_iter().map(|archive| archive.volume.clone()).collect::<Vec<_>>();
        assert_eq!(volumes(chosen(&archives, &Purge::Named("bob".into())).unwrap()), ["jhub-archive-bob-1", "jhub-archive-bob-2"]);
        assert_eq!(volumes(chosen(&archives, &Purge::Named("jhub-archive-bob-2".into())).unwrap()), ["jhub-archive-bob-2"]);
        assert_eq!(chosen(&archives, &Purge::All).unwrap().len(), 3);
        assert!(chosen(&archives, &Purge::Nothing).unwrap().is_empty());
        let refused = chosen(&archives, &Purge::Named("mallory".into())).unwrap_err();
        assert_eq!(refused.message, "no archive named `mallory` and none of a user `mallory`");
    }

    #[test]
    fn only_volumes_with_the_archive_label_are_archives() {
        let labels = std::collections::HashMap::from([(jhub_docker::contract::STACK_LABEL.to_string(), "jhub".to_string())]);
        assert_eq!(Archive::from_labels("jupyterhub-user-bob".into(), &labels), None);
    }
}
