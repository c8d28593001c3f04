//! `cargo xtask backup DIR`: the hub's database (sqlite's online backup), its cookie secret, the settings,
//! the lock and every user volume as tar, written to a hidden sibling folder renamed to DIR once complete.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bollard::Docker;
use bollard::query_parameters::{DownloadFromContainerOptions, ListVolumesOptionsBuilder};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use jhub_docker::contract::{self, STACK_LABEL};
use sha2::{Digest, Sha256};

use super::containers::{create_helper, download_file, engine_failed, remove_container, run_helper, running_users};
use super::manifest::{FORMAT, FileEntry, FileKind, MANIFEST, Manifest, digest_hex, write_private};
use super::{BackupOptions, COOKIE_SECRET, DATA_DIR, DATABASE, STAGING, Target, bar, say};
use crate::engine;
use crate::ui::{self, UserError};

/// Copies the live database with sqlite's online backup API (consistent even while the hub writes) and
/// checks the copy. A plain connection, not a read-only one: with the hub down, a journal a killed hub left
/// behind must be rolled back, as the hub itself would at its next start.
pub(super) const DATABASE_COPY_SCRIPT: &str = "\
import os, sqlite3, sys
source_path, copy_path = sys.argv[1], sys.argv[2]
if not os.path.exists(source_path):
    sys.exit(f'no database at {source_path}')
source = sqlite3.connect(source_path)
copy = sqlite3.connect(copy_path)
source.backup(copy)
verdict = copy.execute('PRAGMA integrity_check').fetchone()[0]
copy.close()
source.close()
if verdict != 'ok':
    sys.exit(f'integrity_check of the copy: {verdict}')
";

pub fn run_backup(options: &BackupOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let target = Target::from_env_file(&options.env_file)?;
    let dir = &options.dir;
    if dir.exists() {
        return Err(UserError::new(
            format!("{} already exists", dir.display()),
            "name a new folder: a backup never writes into an existing one",
        )
        .into());
    }
    let name = dir
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| UserError::new(format!("{} does not name a folder", dir.display()), "name a new folder, e.g. backups/2026-11-26"))?;
    let partial = dir.with_file_name(format!(".{name}.partial"));
    if partial.exists() {
        // Left by a backup that stopped half way; never a complete backup (those are renamed to DIR).
        std::fs::remove_dir_all(&partial).with_context(|| format!("cannot remove the unfinished backup {}", partial.display()))?;
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(partial.join("hub")).map_err(|err| {
        UserError::new(format!("cannot create {}: {err}", partial.display()), "check that the parent folder exists and is writable")
    })?;
    std::fs::DirBuilder::new().mode(0o700).create(partial.join("users"))?;
    std::fs::DirBuilder::new().mode(0o700).create(partial.join("groups"))?;

    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(write_backup(&target, options, &partial));
    let manifest = match outcome {
        Ok(manifest) => manifest,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(err);
        }
    };
    std::fs::rename(&partial, dir).with_context(|| format!("cannot rename {} to {}", partial.display(), dir.display()))?;

    let size = |kind: FileKind| manifest.files.iter().filter(|file| file.kind == kind).map(|file| file.bytes).sum::<u64>();
    let count = |kind: FileKind| manifest.files.iter().filter(|file| file.kind == kind).count();
    println!(
        "backed up stack `{}` to {} in {:.1} s: the hub's database ({}), {} user volume(s) ({}), {} group folder(s) ({}), cookie secret, \
         settings, images.lock",
        target.stack,
        dir.display(),
        started.elapsed().as_secs_f64(),
        ui::human_size(size(FileKind::Database)),
        count(FileKind::UserVolume),
        ui::human_size(size(FileKind::UserVolume)),
        count(FileKind::GroupFolder),
        ui::human_size(size(FileKind::GroupFolder)),
    );
    if !manifest.running_servers.is_empty() {
        ui::note(&format!(
            "note: these users' servers were running, so files they changed during the copy may be partly saved: {}",
            manifest.running_servers.join(", ")
        ));
    }
    Ok(())
}

pub(super) async fn write_backup(target: &Target, options: &BackupOptions, partial: &Path) -> anyhow::Result<Manifest> {
    let settings = crate::stack_settings::Settings::load(&options.env_file)?;
    let manager = crate::engine::connect().await?;
    let engines = super::engines::engines(&manager, &settings, options.swarm.as_ref()).await?;
    let hub = engines.iter().find(|engine| engine.holds_hub).expect("engines() names the hub's engine");
    let (docker, helper_image) = (&hub.docker, hub.helper_image.as_str());
    let data_volume = target.data_volume();
    if docker.inspect_volume(&data_volume).await.is_err() {
        return Err(UserError::new(
            format!("stack `{}` has no hub data (no volume {data_volume}{})", target.stack, on_node(hub.node.as_deref())),
            "check JHUB_STACK_NAME in the settings; `cargo xtask up` (or `up --swarm`) creates the stack",
        )
        .into());
    }
    // Every home on every engine; on a swarm, a home found on two nodes is the one its pin names (the
    // other is a copy a move or a lost node left behind, which the hub never mounts).
    let labels = match options.swarm {
        Some(_) => super::engines::home_labels(&manager, &target.stack).await?,
        None => Default::default(),
    };
    let pins = &labels.pinned;
    let mut found: Vec<(String, usize)> = Vec::new();
    let mut running_servers = Vec::new();
    for (index, engine) in engines.iter().enumerate() {
        for user in user_volumes(&engine.docker, target).await? {
            // A deleted account's home, set aside on its node, is not the stack's any more (on one host it
            // is an archive under another name, which no backup holds either).
            if engine.node.as_ref().is_some_and(|node| labels.set_aside.contains(&(user.clone(), node.clone())))
                && pins.get(&user) != engine.node.as_ref()
            {
                ui::note(&format!("skipping the home of a deleted account `{user}`{}", on_node(engine.node.as_deref())));
                continue;
            }
            found.push((user, index));
        }
        running_servers.extend(running_users(&engine.docker, &target.stack).await?);
    }
    running_servers.sort();
    running_servers.dedup();
    let mut users: Vec<(String, usize)> = Vec::new();
    for (user, index) in &found {
        let copies: Vec<usize> = found.iter().filter(|(other, _)| other == user).map(|(_, index)| *index).collect();
        let chosen = if copies.len() == 1 {
            copies[0]
        } else {
            let pinned = pins.get(user).and_then(|node| copies.iter().copied().find(|index| engines[*index].node.as_ref() == Some(node)));
            let Some(pinned) = pinned else {
                let nodes: Vec<String> = copies.iter().map(|index| engines[*index].node.clone().unwrap_or_default()).collect();
                return Err(UserError::new(
                    format!("`{user}` has a home on each of {} and no pin names one of them", nodes.join(", ")),
                    "keep the right one (`cargo xtask move-home` pins it) and remove the other volume, then run this again",
                )
                .into());
            };
            pinned
        };
        if chosen == *index {
            users.push((user.clone(), chosen));
        } else {
            ui::note(&format!(
                "skipping the stale copy of {user}'s home{} (the home is pinned elsewhere)",
                on_node(engines[*index].node.as_deref())
            ));
        }
    }
    users.sort();
    // The groups' folders (course material, shared work) live next to the hub: group folders are a
    // single-host feature (the hub refuses them on a swarm).
    let group_folders = group_folders(docker, &target.stack).await?;
    let bar = bar(users.len() as u64 + group_folders.len() as u64 + 2, "backup");
    let mut files = Vec::new();

    say(&bar, "copying the hub's database (sqlite online backup) and cookie secret");
    let (database, cookie_secret) = copy_hub_data(docker, target, helper_image).await?;
    files.push(write_private(partial, "hub/jupyterhub.sqlite", &database, FileKind::Database)?);
    files.push(write_private(partial, "hub/jupyterhub_cookie_secret", &cookie_secret, FileKind::CookieSecret)?);
    bar.inc(1);

    match std::fs::read(&options.env_file) {
        Ok(text) => files.push(write_private(partial, "stack.env", &text, FileKind::Env)?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            say(&bar, &format!("no settings file at {} (the stack runs on defaults)", options.env_file.display()));
        }
        Err(err) => {
            return Err(UserError::new(format!("cannot read {}: {err}", options.env_file.display()), "check its permissions").into());
        }
    }
    let lock_path = jhub_docker::lock_path(&jhub_docker::repo_root());
    let lock = std::fs::read(&lock_path).map_err(|err| {
        UserError::new(format!("cannot read {}: {err}", lock_path.display()), "run `cargo xtask build-images` to write it")
    })?;
    files.push(write_private(partial, "images.lock", &lock, FileKind::Lock)?);
    bar.inc(1);

    for (user, index) in &users {
        let engine = &engines[*index];
        bar.set_message(format!("user {user}"));
        say(&bar, &format!("saving the files of {user} (volume {}{})", target.user_volume(user), on_node(engine.node.as_deref())));
        let relative = format!("users/{user}.tar");
        let (bytes, sha256) =
            save_volume(&engine.docker, &engine.helper_image, &target.user_volume(user), &partial.join(&relative), &bar).await?;
        files.push(FileEntry {
            path: relative,
            kind: FileKind::UserVolume,
            user: Some(user.clone()),
            node: engine.node.clone(),
            group: None,
            folder: None,
            bytes,
            sha256,
        });
        bar.inc(1);
    }
    for (group, folder) in &group_folders {
        let volume = contract::group_folder_volume(&target.stack, group, folder);
        bar.set_message(format!("group {group}, {folder}"));
        say(&bar, &format!("saving the {folder} folder of group {group} (volume {volume})"));
        let relative = format!("groups/{group}.{folder}.tar");
        let (bytes, sha256) = save_volume(docker, helper_image, &volume, &partial.join(&relative), &bar).await?;
        files.push(FileEntry {
            path: relative,
            kind: FileKind::GroupFolder,
            user: None,
            node: None,
            group: Some(group.clone()),
            folder: Some(folder.clone()),
            bytes,
            sha256,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    let manifest = Manifest {
        format: FORMAT,
        created_unix: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
        stack: target.stack.clone(),
        user_volume_prefix: target.user_volume_prefix.clone(),
        running_servers,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)?;
    write_private(partial, MANIFEST, &text, FileKind::Lock)?;
    Ok(manifest)
}

/// ` on node N` on a swarm, nothing on one host.
pub(super) fn on_node(node: Option<&str>) -> String {
    node.map(|node| format!(" on node {node}")).unwrap_or_default()
}

/// The users with a volume in this stack, by escaped name (the volume's name after the prefix), sorted:
/// every volume named with the prefix and a name the spawner makes, labelled for this stack or carrying no
/// stack label (made before volumes were labelled); never one labelled for another stack, nor an adoption's
/// temporary copy (its name is no escaped name).
pub(super) async fn user_volumes(docker: &Docker, target: &Target) -> anyhow::Result<Vec<String>> {
    let volumes = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().build())).await?;
    let mut users: Vec<String> = volumes
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter(|volume| volume.labels.get(STACK_LABEL).is_none_or(|stack| *stack == target.stack))
        .filter_map(|volume| volume.name.strip_prefix(&target.user_volume_prefix).map(str::to_string))
        .filter(|user| contract::user_of_escaped_name(user).is_some())
        .collect();
    users.sort();
    Ok(users)
}

/// The group folders of `stack` on this engine, as (group, folder), sorted: the volumes the hub labelled
/// with the stack, a catalog group name and one of the folders, named as the hub names them.
pub(super) async fn group_folders(docker: &Docker, stack: &str) -> anyhow::Result<Vec<(String, String)>> {
    let volumes = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().build())).await?;
    let mut folders: Vec<(String, String)> = volumes
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter(|volume| volume.labels.get(STACK_LABEL).is_some_and(|owner| owner == stack))
        .filter_map(|volume| {
            let group = volume.labels.get(contract::GROUP_LABEL)?.clone();
            let folder = volume.labels.get(contract::GROUP_FOLDER_LABEL)?.clone();
            let named = volume.name == contract::group_folder_volume(stack, &group, &folder);
            (named && jhub_docker::catalog::is_group_name(&group) && contract::GROUP_FOLDERS.contains(&folder.as_str()))
                .then_some((group, folder))
        })
        .collect();
    folders.sort();
    Ok(folders)
}

/// The database (copied by sqlite's online backup) and the cookie secret: inside the running hub through
/// an exec, or, when the hub is down, in a throwaway container of the hub image mounting its data volume.
pub(super) async fn copy_hub_data(docker: &Docker, target: &Target, helper_image: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let database = format!("{DATA_DIR}/{DATABASE}");
    let secret = format!("{DATA_DIR}/{COOKIE_SECRET}");
    let copy = format!("/tmp/jhub-backup-{}.sqlite", std::process::id());
    let failed = |output: &str| {
        UserError::new(
            format!("the copy of the hub's database failed: {}", output.trim().lines().last().unwrap_or("no output")),
            "check the hub with `cargo xtask logs hub`; a damaged database shows in `PRAGMA integrity_check`",
        )
    };
    if let Some(hub) = engine::service_container(docker, &target.stack, "hub").await? {
        let copied = engine::exec(docker, &hub, &["python3", "-c", DATABASE_COPY_SCRIPT, &database, &copy]).await?;
        let (code, output) = (copied.exit_code, format!("{}{}", copied.stdout, copied.stderr));
        let downloaded = if code == 0 { download_file(docker, &hub, &copy).await } else { Err(failed(&output).into()) };
        let _ = engine::exec(docker, &hub, &["rm", "-f", &copy]).await;
        let database_bytes = downloaded?;
        return Ok((database_bytes, download_file(docker, &hub, &secret).await?));
    }
    let argv = ["python3", "-c", DATABASE_COPY_SCRIPT, database.as_str(), copy.as_str()];
    let binds = vec![format!("{}:{DATA_DIR}", target.data_volume())];
    let container = create_helper(docker, helper_image, binds, &argv, "backup").await?;
    let outcome = async {
        let (code, output) = run_helper(docker, &container).await?;
        if code != 0 {
            return Err(failed(&output).into());
        }
        // The engine reads a stopped container's files (and its volumes) as well as a running one's.
        Ok((download_file(docker, &container, &copy).await?, download_file(docker, &container, &secret).await?))
    }
    .await;
    remove_container(docker, &container).await;
    outcome
}

/// Streams the volume as a tar (its top folder named `.jhub-staging`) into `destination`, mode 600, and
/// returns its size and sum. The throwaway container is created, never started: the engine reads its
/// mounts all the same.
pub(super) async fn save_volume(
    docker: &Docker,
    helper_image: &str,
    volume: &str,
    destination: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, String)> {
    let container = create_helper(docker, helper_image, vec![format!("{volume}:/{STAGING}:ro")], &["true"], "backup").await?;
    let outcome = async {
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(destination)?;
        let mut file = tokio::fs::File::from_std(file);
        let mut stream = docker.download_from_container(&container, Some(DownloadFromContainerOptions { path: format!("/{STAGING}") }));
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| engine_failed(&format!("reading volume {volume}"), err))?;
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
            bytes += chunk.len() as u64;
            bar.set_message(format!("{volume}: {}", ui::human_size(bytes)));
        }
        file.sync_all().await?;
        Ok((bytes, digest_hex(hasher.finalize().as_slice())))
    }
    .await;
    remove_container(docker, &container).await;
    outcome
}
