//! `cargo xtask restore DIR`: the backup's stack chosen and checked against the settings, what would be
//! overwritten refused without `--force`, then every volume staged and moved into place, the settings and
//! the lock last.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jhub_docker::contract;

use super::containers::{AccountsFrom, read_accounts, refuse_while_running};
use super::manifest::{FileKind, Manifest, read_manifest, verify};
use super::staging::{
    RESTORE_STAGE_PREFIX, TarSource, VolumeJob, finish_volumes, occupied_volumes, prepare_volumes, stage_volume, undo_stages,
};
use super::{COOKIE_SECRET, DATABASE, RestoreOptions, STAGING, Target, bar, say};
use crate::engine;
use crate::ui::{self, UserError};

/// One thing a restore writes, for the account it gives when it stops half way.
pub(super) struct Written {
    pub(super) done: Vec<String>,
    pub(super) pending: Vec<String>,
}

pub fn run_restore(options: &RestoreOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let manifest = read_manifest(&options.dir)?;
    verify(&options.dir, &manifest)?;
    let target = restore_target(&manifest, options)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut written = Written { done: Vec::new(), pending: Vec::new() };
    let outcome = runtime.block_on(write_restore(&target, options, &manifest, &mut written));
    if let Err(err) = outcome {
        if !written.done.is_empty() {
            eprintln!("the restore stopped half way; written in full: {}", written.done.join("; "));
            eprintln!("not written (left as they were): {}", written.pending.join("; "));
        }
        return Err(err);
    }
    let users = manifest.files.iter().filter(|file| file.kind == FileKind::UserVolume).count();
    let group_folders = manifest.files.iter().filter(|file| file.kind == FileKind::GroupFolder).count();
    let bytes: u64 = manifest.files.iter().map(|file| file.bytes).sum();
    println!(
        "restored stack `{}` from {} ({}) in {:.1} s: the hub's database, cookie secret, {users} user volume(s), \
         {group_folders} group folder(s), {}",
        target.stack,
        options.dir.display(),
        ui::human_size(bytes),
        started.elapsed().as_secs_f64(),
        written
            .done
            .iter()
            .filter(|item| item.contains("settings") || item.contains("images.lock"))
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("start it with `cargo xtask up{}`", if options.swarm.is_some() { " --swarm" } else { "" });
    Ok(())
}

/// The stack a restore writes into: the backup's own (its name and user-volume prefix), whatever the
/// settings file says, since the backup's settings go back there too. Settings that name another stack
/// are refused unless `--force` replaces them with the backup's; a backup without settings (its stack ran
/// on defaults) cannot replace them, so a clash is refused even with `--force`.
pub(super) fn restore_target(manifest: &Manifest, options: &RestoreOptions) -> anyhow::Result<Target> {
    let backup = Target { stack: manifest.stack.clone(), user_volume_prefix: manifest.user_volume_prefix.clone() };
    // A checkout without settings (a new machine) takes the backup's, unless the shell names a stack.
    let named_elsewhere = ["JHUB_STACK_NAME", "JHUB_USER_VOLUME_PREFIX"].iter().any(|key| std::env::var_os(key).is_some());
    if !options.env_file.exists() && !named_elsewhere {
        return Ok(backup);
    }
    let current = Target::from_env_file(&options.env_file)?;
    if current.stack == backup.stack && current.user_volume_prefix == backup.user_volume_prefix {
        return Ok(backup);
    }
    let has_settings = manifest.files.iter().any(|file| file.kind == FileKind::Env);
    if options.force && has_settings {
        ui::note(&format!(
            "the settings in {} name stack `{}`; restoring the backup's stack `{}` and its settings (--force)",
            options.env_file.display(),
            current.stack,
            backup.stack
        ));
        return Ok(backup);
    }
    let hint = if has_settings {
        "restore into a checkout whose settings name the backup's stack (or have none; --env-file FILE), or pass \
         --force to replace the settings with the backup's"
            .to_string()
    } else {
        format!(
            "the backup holds no settings (its stack ran on defaults): set JHUB_STACK_NAME={} and \
             JHUB_USER_VOLUME_PREFIX={} in {} (or remove them), then restore",
            backup.stack,
            backup.user_volume_prefix,
            options.env_file.display()
        )
    };
    Err(UserError::new(
        format!(
            "the backup is of stack `{}` (user volumes `{}…`), the settings in {} name stack `{}` (`{}…`)",
            backup.stack,
            backup.user_volume_prefix,
            options.env_file.display(),
            current.stack,
            current.user_volume_prefix
        ),
        hint,
    )
    .into())
}

pub(super) async fn write_restore(
    target: &Target,
    options: &RestoreOptions,
    manifest: &Manifest,
    written: &mut Written,
) -> anyhow::Result<()> {
    let settings = crate::stack_settings::Settings::load(&options.env_file)?;
    let manager = engine::connect().await?;
    match options.swarm {
        Some(_) => super::engines::refuse_while_deployed(&manager, &target.stack).await?,
        None => refuse_while_running(&manager, &target.stack, "a restore").await?,
    }
    let engines = super::engines::engines(&manager, &settings, options.swarm.as_ref()).await?;
    let hub_index = engines.iter().position(|engine| engine.holds_hub).expect("engines() names the hub's engine");
    let hub = &engines[hub_index];
    let file_of = |kind: FileKind| manifest.files.iter().find(|file| file.kind == kind);

    let (Some(database), Some(secret)) = (file_of(FileKind::Database), file_of(FileKind::CookieSecret)) else {
        return Err(UserError::new("the backup has no hub database or cookie secret", "use a folder `cargo xtask backup` wrote").into());
    };
    let database_bytes = std::fs::read(options.dir.join(&database.path))?;
    // Each account's creation time, for the label the hub checks before it mounts a volume.
    let accounts = read_accounts(&hub.docker, &hub.helper_image, AccountsFrom::Copy(&database_bytes)).await?;

    // The volumes, users first and the hub's data last: a restore that stops half way then leaves a hub
    // that does not know the restored users yet, rather than users whose files are missing. On a swarm,
    // each home goes back to its node (the hub's node last), and is pinned there at the end.
    let mut groups: Vec<Vec<VolumeJob>> = engines.iter().map(|_| Vec::new()).collect();
    let mut homes = Vec::new();
    for file in manifest.files.iter().filter(|file| file.kind == FileKind::UserVolume) {
        let user = file.user.clone().expect("checked by read_manifest");
        let index = engine_for_home(&engines, file.node.as_deref(), options, &user)?;
        if let Some(node) = &engines[index].node {
            homes.push((user.clone(), node.clone()));
        }
        groups[index].push(VolumeJob {
            volume: target.user_volume(&user),
            what: format!("files of {user}{}", super::save::on_node(engines[index].node.as_deref())),
            tar: TarSource::File(options.dir.join(&file.path), file.bytes),
            labels: target.user_volume_labels(&user, &accounts),
        });
    }
    // The groups' folders go back next to the hub (a single-host feature), before its data.
    for file in manifest.files.iter().filter(|file| file.kind == FileKind::GroupFolder) {
        let (group, folder) = (file.group.clone().expect("checked by read_manifest"), file.folder.clone().expect("checked"));
        groups[hub_index].push(VolumeJob {
            volume: contract::group_folder_volume(&target.stack, &group, &folder),
            what: format!("{folder} folder of group {group}"),
            tar: TarSource::File(options.dir.join(&file.path), file.bytes),
            labels: contract::group_folder_labels(&target.stack, &group, &folder).into_iter().collect(),
        });
    }
    let hub_tar = hub_data_tar(&database_bytes, &std::fs::read(options.dir.join(&secret.path))?)?;
    let data_labels = match options.swarm {
        // `docker stack deploy` finds the volume as its own `jupyterhub_data` by name; it labels what it makes so.
        Some(_) => [("com.docker.stack.namespace".to_string(), target.stack.clone())].into(),
        // Compose then finds the volume as its own `jupyterhub_data`, labelled as if it had made it.
        None => contract::data_volume_labels(&target.stack, &compose_label_version()?).into_iter().collect(),
    };
    groups[hub_index].push(VolumeJob {
        volume: target.data_volume(),
        what: "the hub's database and cookie secret".to_string(),
        tar: TarSource::Bytes(hub_tar),
        labels: data_labels,
    });
    // The order every step takes: the other nodes first, the hub's last (its data volume is its last job).
    let order: Vec<usize> =
        (0..engines.len()).filter(|index| *index != hub_index && !groups[*index].is_empty()).chain([hub_index]).collect();

    // What is already there.
    let mut conflicts = Vec::new();
    for &index in &order {
        conflicts.extend(occupied_volumes(&engines[index].docker, &engines[index].helper_image, &groups[index]).await?);
    }
    let settings_file = file_of(FileKind::Env).map(|file| std::fs::read(options.dir.join(&file.path))).transpose()?;
    let lock_bytes = file_of(FileKind::Lock).map(|file| std::fs::read(options.dir.join(&file.path))).transpose()?;
    let lock_path = jhub_docker::lock_path(&jhub_docker::repo_root());
    let differs = |path: &Path, wanted: &[u8]| std::fs::read(path).is_ok_and(|current| current != wanted);
    if let Some(text) = &settings_file
        && differs(&options.env_file, text)
    {
        conflicts.push(format!("the settings in {}", options.env_file.display()));
    }
    if let Some(bytes) = &lock_bytes
        && differs(&lock_path, bytes)
    {
        conflicts.push(format!("{} (it records other images)", lock_path.display()));
    }
    if !conflicts.is_empty() && !options.force {
        let fresh =
            if options.swarm.is_some() { "`cargo xtask down --swarm` and removing its volumes" } else { "`cargo xtask down --volumes`" };
        return Err(UserError::new(
            format!("restoring into stack `{}` would overwrite: {}", target.stack, conflicts.join(", ")),
            format!("restore into a fresh stack ({fresh} deletes this one's data), or pass --force to replace it"),
        )
        .into());
    }

    // Stage every volume's tar inside that volume, next to what it holds. Until all are staged nothing of
    // the stack has changed: a failure removes the stages and the volumes this restore created.
    let stage = format!("{RESTORE_STAGE_PREFIX}{}", random_hex());
    let mut created: Vec<Vec<String>> = engines.iter().map(|_| Vec::new()).collect();
    for &index in &order {
        created[index] = prepare_volumes(&engines[index].docker, &engines[index].helper_image, &groups[index], &stage).await?;
    }
    let total: u64 = groups
        .iter()
        .flatten()
        .map(|job| match &job.tar {
            TarSource::File(_, bytes) => *bytes,
            TarSource::Bytes(bytes) => bytes.len() as u64,
        })
        .sum();
    let bar = bar(total, "restore");
    for &index in &order {
        let engine = &engines[index];
        for job in &groups[index] {
            say(&bar, &format!("staging {} in volume {}", job.what, job.volume));
            if let Err(err) = stage_volume(&engine.docker, &engine.helper_image, job, &stage, &bar).await {
                bar.finish_and_clear();
                for &undo in &order {
                    undo_stages(&engines[undo].docker, &engines[undo].helper_image, &groups[undo], &stage, &created[undo]).await;
                }
                return Err(UserError::new(
                    format!("nothing was restored: staging the {} in volume {} failed: {err:#}", job.what, job.volume),
                    "check the engine's free disk space (`docker system df`) and the backup's files, then run the restore again",
                )
                .into());
            }
        }
    }
    bar.finish_and_clear();

    // Everything arrived: move each stage into place, users first and the hub's data last (renames within
    // each volume; a stop here leaves a hub that does not know the restored users yet, never the reverse).
    written.pending = order.iter().flat_map(|index| &groups[*index]).map(|job| format!("{} (volume {})", job.what, job.volume)).collect();
    if settings_file.is_some() {
        written.pending.push(format!("settings ({})", options.env_file.display()));
    }
    if lock_bytes.is_some() {
        written.pending.push("images.lock".to_string());
    }
    for &index in &order {
        let engine = &engines[index];
        let finished = finish_volumes(&engine.docker, &engine.helper_image, &groups[index], &stage, options.force).await;
        let count = match &finished {
            Ok(count) | Err((count, _)) => *count,
        };
        for _ in 0..count {
            let item = written.pending.remove(0);
            written.done.push(item);
        }
        if let Err((_, err)) = finished {
            return Err(err);
        }
    }
    if options.swarm.is_some() {
        super::engines::pin_homes(&manager, &target.stack, &homes).await?;
    }
    if let Some(text) = settings_file {
        write_atomically(&options.env_file, &text)?;
        written.done.push(written.pending.remove(0));
    }
    if let Some(bytes) = lock_bytes {
        write_atomically(&lock_path, &bytes)?;
        written.done.push(written.pending.remove(0));
    }
    Ok(())
}

/// The engine a user's home goes back to: one host's; on a swarm, the node the backup found it on, or
/// `--homes-to` for a home whose node this swarm lacks (or a single-host backup's).
fn engine_for_home(
    engines: &[super::engines::NodeEngine],
    node: Option<&str>,
    options: &RestoreOptions,
    user: &str,
) -> anyhow::Result<usize> {
    if options.swarm.is_none() {
        return Ok(0);
    }
    let position = |name: &str| engines.iter().position(|engine| engine.node.as_deref() == Some(name));
    if let Some(index) = node.and_then(position) {
        return Ok(index);
    }
    let homes_to = options.swarm.as_ref().and_then(|access| access.homes_to.as_deref());
    match homes_to {
        Some(name) => position(name).ok_or_else(|| {
            let names: Vec<&str> = engines.iter().filter_map(|engine| engine.node.as_deref()).collect();
            UserError::new(
                format!("--homes-to names `{name}`, which is no node of this swarm"),
                format!("name one of: {}", names.join(", ")),
            )
            .into()
        }),
        None => Err(UserError::new(
            match node {
                Some(node) => format!("the home of `{user}` was on node {node}, which this swarm does not have"),
                None => format!("the backup is of a single-host stack, so the home of `{user}` names no node"),
            },
            "pass --homes-to NODE to put such homes on one node (move them later with `cargo xtask move-home`)",
        )
        .into()),
    }
}

/// 16 random hex digits, for names no one else picks.
pub(super) fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    format!("{:016x}", std::collections::hash_map::RandomState::new().build_hasher().finish())
}

/// The version this host's compose writes into its labels (a restored data volume carries it, as one
/// compose made does).
pub(super) fn compose_label_version() -> anyhow::Result<String> {
    Ok(jhub_docker::compose::label_version(&jhub_docker::compose::detect()?.version))
}

/// The tar that goes into the hub's data volume: the staging folder (root, 700, as the hub image makes its
/// data folder) with the database and the cookie secret (root, 600, as the hub requires).
pub(super) fn hub_data_tar(database: &[u8], secret: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o700);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    header.set_mtime(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    builder.append_data(&mut header, format!("{STAGING}/"), std::io::empty())?;
    for (name, bytes) in [(DATABASE, database), (COOKIE_SECRET, secret)] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(bytes.len() as u64);
        header.set_mtime(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
        builder.append_data(&mut header, format!("{STAGING}/{name}"), bytes)?;
    }
    Ok(builder.into_inner()?)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename (mode 600: the
/// settings hold the admin password).
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    jhub_docker::write_atomically(path, bytes, 0o600).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_data_tar_holds_the_staged_files_private() {
        let bytes = hub_data_tar(b"db", b"secret").unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (entry.path().unwrap().to_string_lossy().into_owned(), entry.header().mode().unwrap())
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                (".jhub-staging/".to_string(), 0o700),
                (".jhub-staging/jupyterhub.sqlite".to_string(), 0o600),
                (".jhub-staging/jupyterhub_cookie_secret".to_string(), 0o600)
            ]
        );
    }
}
