//! `cargo xtask restore DIR`: the backup's stack chosen and checked against the settings, what would be
//! overwritten refused without `--force`, then every volume staged and moved into place, the settings and
//! the lock last.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jhub_docker::contract;

use super::containers::{AccountsFrom, helper_image, read_accounts, refuse_while_running};
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
    let bytes: u64 = manifest.files.iter().map(|file| file.bytes).sum();
    println!(
        "restored stack `{}` from {} ({}) in {:.1} s: the hub's database, cookie secret, {users} user volume(s), {}",
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
    println!("start it with `cargo xtask up`");
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
    let docker = engine::connect().await?;
    refuse_while_running(&docker, &target.stack, "a restore").await?;
    let helper_image = helper_image(&docker).await?;
    let file_of = |kind: FileKind| manifest.files.iter().find(|file| file.kind == kind);

    let (Some(database), Some(secret)) = (file_of(FileKind::Database), file_of(FileKind::CookieSecret)) else {
        return Err(UserError::new("the backup has no hub database or cookie secret", "use a folder `cargo xtask backup` wrote").into());
    };
    let database_bytes = std::fs::read(options.dir.join(&database.path))?;
    // Each account's creation time, for the label the hub checks before it mounts a volume.
    let accounts = read_accounts(&docker, &helper_image, AccountsFrom::Copy(&database_bytes)).await?;

    // The volumes, users first and the hub's data last: a restore that stops half way then leaves a hub
    // that does not know the restored users yet, rather than users whose files are missing.
    let mut jobs = Vec::new();
    for file in manifest.files.iter().filter(|file| file.kind == FileKind::UserVolume) {
        let user = file.user.clone().expect("checked by read_manifest");
        jobs.push(VolumeJob {
            volume: target.user_volume(&user),
            what: format!("files of {user}"),
            tar: TarSource::File(options.dir.join(&file.path), file.bytes),
            labels: target.user_volume_labels(&user, &accounts),
        });
    }
    let hub_tar = hub_data_tar(&database_bytes, &std::fs::read(options.dir.join(&secret.path))?)?;
    jobs.push(VolumeJob {
        volume: target.data_volume(),
        what: "the hub's database and cookie secret".to_string(),
        tar: TarSource::Bytes(hub_tar),
        // Compose then finds the volume as its own `jupyterhub_data`, labelled as if it had made it.
        labels: contract::data_volume_labels(&target.stack, &compose_label_version()?).into_iter().collect(),
    });

    // What is already there.
    let mut conflicts = occupied_volumes(&docker, &helper_image, &jobs).await?;
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
        return Err(UserError::new(
            format!("restoring into stack `{}` would overwrite: {}", target.stack, conflicts.join(", ")),
            "restore into a fresh stack (`cargo xtask down --volumes` deletes this one's data), or pass --force to replace it",
        )
        .into());
    }

    // Stage every volume's tar inside that volume, next to what it holds. Until all are staged nothing of
    // the stack has changed: a failure removes the stages and the volumes this restore created.
    let stage = format!("{RESTORE_STAGE_PREFIX}{}", random_hex());
    let created = prepare_volumes(&docker, &helper_image, &jobs, &stage).await?;
    let total: u64 = jobs
        .iter()
        .map(|job| match &job.tar {
            TarSource::File(_, bytes) => *bytes,
            TarSource::Bytes(bytes) => bytes.len() as u64,
        })
        .sum();
    let bar = bar(total, "restore");
    for job in &jobs {
        say(&bar, &format!("staging {} in volume {}", job.what, job.volume));
        if let Err(err) = stage_volume(&docker, &helper_image, job, &stage, &bar).await {
            bar.finish_and_clear();
            undo_stages(&docker, &helper_image, &jobs, &stage, &created).await;
            return Err(UserError::new(
                format!("nothing was restored: staging the {} in volume {} failed: {err:#}", job.what, job.volume),
                "check the engine's free disk space (`docker system df`) and the backup's files, then run the restore again",
            )
            .into());
        }
    }
    bar.finish_and_clear();

    // Everything arrived: move each stage into place, users first and the hub's data last (renames within
    // each volume; a stop here leaves a hub that does not know the restored users yet, never the reverse).
    written.pending = jobs.iter().map(|job| format!("{} (volume {})", job.what, job.volume)).collect();
    if settings_file.is_some() {
        written.pending.push(format!("settings ({})", options.env_file.display()));
    }
    if lock_bytes.is_some() {
        written.pending.push("images.lock".to_string());
    }
    let finished = finish_volumes(&docker, &helper_image, &jobs, &stage, options.force).await;
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
