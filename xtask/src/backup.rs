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

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, VolumeCreateRequest};
use bollard::query_parameters::{
    DownloadFromContainerOptions, ListContainersOptionsBuilder, ListVolumesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptions,
};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use jhub_docker::contract::{self, PURPOSE_LABEL, STACK_LABEL};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine;
use crate::stack::{Settings, locked_hub_image};
use crate::ui::{self, UserError};

const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;
const DATA_DIR: &str = "/srv/jupyterhub/data";
const DATABASE: &str = "jupyterhub.sqlite";
const COOKIE_SECRET: &str = "jupyterhub_cookie_secret";
/// Where a user's volume is mounted while it is saved, hence the top folder of every user's tar; a restore
/// extracts that tar into its stage inside the target volume, then moves this folder's entries to the top.
const STAGING: &str = ".jhub-staging";

/// Copies the live database with sqlite's online backup API (consistent even while the hub writes) and
/// checks the copy. A plain connection, not a read-only one: with the hub down, a journal a killed hub left
/// behind must be rolled back, as the hub itself would at its next start.
const DATABASE_COPY_SCRIPT: &str = "\
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

/// Where a restore stages a volume's tar inside that volume (`<prefix><nonce>/.jhub-staging/…`), so the
/// final moves are renames within one filesystem. A nonce per restore, so no name a home may hold (a
/// user's own `.jhub-staging` folder, say) is ever taken for the staging area.
const RESTORE_STAGE_PREFIX: &str = ".jhub-restore-";

/// Runs in one throwaway container with every target volume at /target/<n> once each tar is staged in
/// /target/<n>/<stage>/.jhub-staging: for each volume, with `force`, removes what it held; gives its root
/// the owner and mode the backup recorded; moves the staged entries into place; removes the stage; says
/// which volume is done. Arguments: the stage's name, then `force` or `keep`, then the volume numbers in
/// the order to finish them.
const FINISH_SCRIPT: &str = "\
set -eu
stage=$1 mode=$2
shift 2
for number in \"$@\"; do
  cd \"/target/$number\"
  if [ \"$mode\" = force ]; then find . -mindepth 1 -maxdepth 1 ! -name \"$stage\" -exec rm -rf {} +; fi
  chown --reference=\"$stage/.jhub-staging\" .
  chmod --reference=\"$stage/.jhub-staging\" .
  find \"$stage/.jhub-staging\" -mindepth 1 -maxdepth 1 -exec mv -t . {} +
  rm -rf \"$stage\"
  echo \"finished $number\"
done
";

/// `cargo xtask backup` options (plain, so a CLI parser can wrap them).
pub struct BackupOptions {
    /// The new folder the backup is written to.
    pub dir: PathBuf,
    /// The stack's settings (`stack/.env` by default); the backup keeps a copy.
    pub env_file: PathBuf,
}

/// `cargo xtask restore` options.
pub struct RestoreOptions {
    /// A folder `cargo xtask backup` wrote.
    pub dir: PathBuf,
    /// Where the backup's copy of the settings goes back to (`stack/.env` by default).
    pub env_file: PathBuf,
    /// Replace the stack's existing data (database, users' files, differing settings or lock).
    pub force: bool,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    created_unix: u64,
    stack: String,
    user_volume_prefix: String,
    /// Users whose server ran while the backup was made: their files may have changed during the copy.
    running_servers: Vec<String>,
    files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize, Clone)]
struct FileEntry {
    /// Path inside the backup folder, `/`-separated.
    path: String,
    kind: FileKind,
    /// For a user volume, the user it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    bytes: u64,
    sha256: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "kebab-case")]
enum FileKind {
    Database,
    CookieSecret,
    Env,
    Lock,
    UserVolume,
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

// ---------------------------------------------------------------------------------------------------------
// backup

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
    let users = manifest.files.iter().filter(|file| file.kind == FileKind::UserVolume).count();
    println!(
        "backed up stack `{}` to {} in {:.1} s: the hub's database ({}), {users} user volume(s) ({}), cookie secret, settings, images.lock",
        target.stack,
        dir.display(),
        started.elapsed().as_secs_f64(),
        ui::human_size(size(FileKind::Database)),
        ui::human_size(size(FileKind::UserVolume)),
    );
    if !manifest.running_servers.is_empty() {
        ui::note(&format!(
            "note: these users' servers were running, so files they changed during the copy may be partly saved: {}",
            manifest.running_servers.join(", ")
        ));
    }
    Ok(())
}

async fn write_backup(target: &Target, options: &BackupOptions, partial: &Path) -> anyhow::Result<Manifest> {
    let docker = engine::connect().await?;
    let helper_image = helper_image(&docker).await?;
    let data_volume = target.data_volume();
    if docker.inspect_volume(&data_volume).await.is_err() {
        return Err(UserError::new(
            format!("stack `{}` has no hub data (no volume {data_volume})", target.stack),
            "check JHUB_STACK_NAME in the settings; `cargo xtask up` creates the stack",
        )
        .into());
    }
    let users = user_volumes(&docker, target).await?;
    let running_servers = running_users(&docker, &target.stack).await?;
    let bar = bar(users.len() as u64 + 2, "backup");
    let mut files = Vec::new();

    say(&bar, "copying the hub's database (sqlite online backup) and cookie secret");
    let (database, cookie_secret) = copy_hub_data(&docker, target, &helper_image).await?;
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

    for user in &users {
        bar.set_message(format!("user {user}"));
        say(&bar, &format!("saving the files of {user} (volume {})", target.user_volume(user)));
        let relative = format!("users/{user}.tar");
        let (bytes, sha256) = save_volume(&docker, &helper_image, &target.user_volume(user), &partial.join(&relative), &bar).await?;
        files.push(FileEntry { path: relative, kind: FileKind::UserVolume, user: Some(user.clone()), bytes, sha256 });
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

/// Writes `bytes` to `dir/relative` with mode 600 (the backup holds password hashes and secrets) and
/// returns its manifest entry.
fn write_private(dir: &Path, relative: &str, bytes: &[u8], kind: FileKind) -> anyhow::Result<FileEntry> {
    let path = dir.join(relative);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(FileEntry { path: relative.to_string(), kind, user: None, bytes: bytes.len() as u64, sha256: sha256_hex(bytes) })
}

fn sha256_hex(bytes: &[u8]) -> String {
    digest_hex(Sha256::digest(bytes).as_slice())
}

fn digest_hex(digest: &[u8]) -> String {
    format!("sha256:{}", digest.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
}

/// The image the throwaway containers run: the locked hub image (it has python3, sh and coreutils), or the
/// hub's `latest` tag when the lock names none the engine has.
pub(crate) async fn helper_image(docker: &Docker) -> anyhow::Result<String> {
    let candidates: Vec<String> = locked_hub_image().into_iter().chain(["jhub/hub:latest".to_string()]).collect();
    for candidate in &candidates {
        if engine::image_exists(docker, candidate).await {
            return Ok(candidate.clone());
        }
    }
    Err(UserError::new(format!("none of the hub images {} is on this engine", candidates.join(", ")), "run `cargo xtask build-images hub`")
        .into())
}

/// The users with a volume in this stack, by escaped name (the volume's name after the prefix), sorted:
/// every volume named with the prefix and a name the spawner makes, labelled for this stack or carrying no
/// stack label (made before volumes were labelled); never one labelled for another stack, nor an adoption's
/// temporary copy (its name is no escaped name).
async fn user_volumes(docker: &Docker, target: &Target) -> anyhow::Result<Vec<String>> {
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

/// Users of `stack` with a running server container.
async fn running_users(docker: &Docker, stack: &str) -> anyhow::Result<Vec<String>> {
    let filters = HashMap::from([("label", vec![format!("{STACK_LABEL}={stack}")])]);
    let containers = docker.list_containers(Some(ListContainersOptionsBuilder::default().filters(&filters).build())).await?;
    let mut users: Vec<String> = containers
        .into_iter()
        .filter_map(|container| container.labels.and_then(|mut labels| labels.remove(contract::USER_LABEL)))
        .collect();
    users.sort();
    users.dedup();
    Ok(users)
}

/// Whether the stack's hub or any of its user servers runs.
pub(crate) async fn stack_is_running(docker: &Docker, stack: &str) -> anyhow::Result<bool> {
    Ok(engine::service_container(docker, stack, "hub").await?.is_some() || !running_users(docker, stack).await?.is_empty())
}

/// Prints every user of the hub's database with the creation time of the account, one JSON object, as the
/// hub's spawner writes it into a volume's label (`user.created.isoformat()`: SQLAlchemy stores the naive
/// UTC time as text, which `fromisoformat` reads back exactly). A plain connection: a journal a killed hub
/// left behind is rolled back first, as the hub would at its next start.
const ACCOUNTS_SCRIPT: &str = "\
import datetime, json, os, sqlite3, sys
path = sys.argv[1]
if not os.path.exists(path):
    sys.exit(f'no database at {path}')
rows = sqlite3.connect(path).execute('SELECT name, created FROM users')
print(json.dumps({name: datetime.datetime.fromisoformat(created).isoformat() if created else '' for name, created in rows}))
";

/// Where `read_accounts` finds the hub's database.
pub(crate) enum AccountsFrom<'a> {
    /// The hub's data volume of a stopped stack.
    DataVolume(&'a str),
    /// A copy of the database (a backup's).
    Copy(&'a [u8]),
}

/// Every user of the hub's database with the creation time of the account (see ACCOUNTS_SCRIPT), read in a
/// throwaway container of the hub image.
pub(crate) async fn read_accounts(docker: &Docker, helper_image: &str, from: AccountsFrom<'_>) -> anyhow::Result<HashMap<String, String>> {
    let database = format!("{DATA_DIR}/{DATABASE}");
    let argv = ["python3", "-c", ACCOUNTS_SCRIPT, database.as_str()];
    let (code, output) = match from {
        AccountsFrom::DataVolume(volume) => {
            run_helper_once(docker, helper_image, vec![format!("{volume}:{DATA_DIR}")], &argv, "read-accounts").await?
        }
        AccountsFrom::Copy(bytes) => {
            let container = create_helper(docker, helper_image, Vec::new(), &argv, "read-accounts").await?;
            let outcome = async {
                let mut builder = tar::Builder::new(Vec::new());
                let mut header = tar::Header::new_gnu();
                header.set_mode(0o600);
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, format!("{}/{DATABASE}", DATA_DIR.trim_start_matches('/')), bytes)?;
                let options = UploadToContainerOptions { path: "/".to_string(), ..Default::default() };
                docker
                    .upload_to_container(&container, Some(options), bollard::body_full(builder.into_inner()?.into()))
                    .await
                    .map_err(|err| engine_failed("copying the hub's database into a helper container", err))?;
                run_helper(docker, &container).await
            }
            .await;
            remove_container(docker, &container).await;
            outcome?
        }
    };
    let last_line = output.lines().last().unwrap_or_default();
    if code != 0 {
        return Err(UserError::new(
            format!("cannot read the users of the hub's database: {last_line}"),
            "check the hub's data (`cargo xtask logs hub`, or the backup's hub/jupyterhub.sqlite)",
        )
        .into());
    }
    Ok(serde_json::from_str(last_line)?)
}

/// The database (copied by sqlite's online backup) and the cookie secret: inside the running hub through
/// an exec, or, when the hub is down, in a throwaway container of the hub image mounting its data volume.
async fn copy_hub_data(docker: &Docker, target: &Target, helper_image: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
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
async fn save_volume(
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

/// The one regular file of the tar the engine sends for `path` in `container`.
async fn download_file(docker: &Docker, container: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = docker.download_from_container(container, Some(DownloadFromContainerOptions { path: path.to_string() }));
    let mut tar_bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        tar_bytes.extend_from_slice(&chunk.map_err(|err| engine_failed(&format!("reading {path}"), err))?);
    }
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            return Ok(data);
        }
    }
    Err(UserError::new(format!("the engine sent no file for {path}"), "check the hub's data volume with `cargo xtask logs hub`").into())
}

pub(crate) fn engine_failed(doing: &str, err: impl std::fmt::Display) -> anyhow::Error {
    UserError::new(
        format!("the engine failed {doing}: {}", err.to_string().lines().next().unwrap_or_default()),
        "check `docker info` (is the engine up, is the disk full?) and run the command again",
    )
    .into()
}

/// Creates (does not start) a throwaway root container of `image` with `binds`, no network, running `argv`.
pub(crate) async fn create_helper(
    docker: &Docker,
    image: &str,
    binds: Vec<String>,
    argv: &[&str],
    purpose: &str,
) -> anyhow::Result<String> {
    let argv: Vec<String> = argv.iter().map(|word| word.to_string()).collect();
    let config = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(argv[..1].to_vec()),
        cmd: Some(argv[1..].to_vec()),
        user: Some("0:0".to_string()),
        network_disabled: Some(true),
        labels: Some([(PURPOSE_LABEL.to_string(), purpose.to_string())].into()),
        host_config: Some(HostConfig { binds: Some(binds), ..Default::default() }),
        ..Default::default()
    };
    Ok(docker.create_container(None, config).await.map_err(|err| engine_failed("creating a helper container", err))?.id)
}

/// Runs `argv` in a throwaway helper container (see `create_helper`) to its end and removes it; returns
/// its exit code and output.
pub(crate) async fn run_helper_once(
    docker: &Docker,
    image: &str,
    binds: Vec<String>,
    argv: &[&str],
    purpose: &str,
) -> anyhow::Result<(i64, String)> {
    let container = create_helper(docker, image, binds, argv, purpose).await?;
    let outcome = run_helper(docker, &container).await;
    remove_container(docker, &container).await;
    outcome
}

/// Refuses to go on while the stack's hub or any of its user servers runs: `doing` needs it stopped.
pub(crate) async fn refuse_while_running(docker: &Docker, stack: &str, doing: &str) -> anyhow::Result<()> {
    if stack_is_running(docker, stack).await? {
        return Err(UserError::new(
            format!("stack `{stack}` is running; {doing} needs it stopped"),
            "stop it with `cargo xtask down` (it keeps volumes), then run this again and `cargo xtask up`",
        )
        .into());
    }
    Ok(())
}

/// Starts a helper, waits for it to exit (at most ten minutes) and returns its exit code and output.
pub(crate) async fn run_helper(docker: &Docker, container: &str) -> anyhow::Result<(i64, String)> {
    docker.start_container(container, None).await.map_err(|err| engine_failed("starting a helper container", err))?;
    let waited = tokio::time::timeout(Duration::from_secs(600), docker.wait_container(container, None).next()).await;
    let code = match waited {
        Err(_) => anyhow::bail!("a helper container ({container}) did not finish within 600 s"),
        Ok(Some(Ok(response))) => response.status_code,
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
        Ok(Some(Err(err))) => return Err(engine_failed("waiting for a helper container", err)),
        Ok(None) => anyhow::bail!("the engine ended the wait for {container} without an exit code"),
    };
    let mut logs = docker.logs(container, Some(LogsOptionsBuilder::default().stdout(true).stderr(true).build()));
    let mut output = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        output.push_str(&chunk.to_string());
    }
    Ok((code, output))
}

pub(crate) async fn remove_container(docker: &Docker, container: &str) {
    let _ = docker.remove_container(container, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await;
}

/// A bar over `steps` when stderr is a terminal; hidden (and replaced by plain lines) otherwise.
fn bar(steps: u64, prefix: &str) -> ProgressBar {
    let template = if ui::colour_wanted() {
        "{spinner:.cyan} {prefix:.bold} [{bar:30}] {pos}/{len} {elapsed:>4} {wide_msg}"
    } else {
        "{spinner} {prefix} [{bar:30}] {pos}/{len} {elapsed:>4} {wide_msg}"
    };
    let bar = ProgressBar::new(steps).with_prefix(prefix.to_string());
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A line for logs that are not a terminal (CI), where the bar is not drawn.
fn say(bar: &ProgressBar, text: &str) {
    if bar.is_hidden() {
        ui::note(text);
    } else {
        bar.set_message(text.to_string());
    }
}

// ---------------------------------------------------------------------------------------------------------
// restore

/// One thing a restore writes, for the account it gives when it stops half way.
struct Written {
    done: Vec<String>,
    pending: Vec<String>,
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
fn restore_target(manifest: &Manifest, options: &RestoreOptions) -> anyhow::Result<Target> {
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

fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|err| {
        UserError::new(
            format!("cannot read {}: {err}", path.display()),
            "name a folder `cargo xtask backup` wrote (an unfinished one has no manifest and a `.partial` name)",
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|err| {
        UserError::new(format!("{} is not a backup manifest: {err}", path.display()), "use the folder as backup wrote it")
    })?;
    if manifest.format != FORMAT {
        return Err(UserError::new(
            format!("{} has format {}, this xtask reads format {FORMAT}", path.display(), manifest.format),
            "restore it with the checkout that made it",
        )
        .into());
    }
    if !valid_volume_part(&manifest.stack) || !valid_volume_part(&manifest.user_volume_prefix) {
        return Err(UserError::new(
            format!("{} names an unsafe stack `{}` or volume prefix `{}`", path.display(), manifest.stack, manifest.user_volume_prefix),
            "use the folder as backup wrote it",
        )
        .into());
    }
    for file in &manifest.files {
        let safe =
            !file.path.is_empty() && !file.path.starts_with('/') && !file.path.split('/').any(|part| part == ".." || part.is_empty());
        let user_ok = file.kind != FileKind::UserVolume || file.user.as_deref().is_some_and(valid_volume_part);
        if !safe || !user_ok {
            return Err(UserError::new(
                format!("{} lists an unsafe entry `{}`", path.display(), file.path),
                "use the folder as backup wrote it",
            )
            .into());
        }
    }
    Ok(manifest)
}

/// What may follow a volume prefix in a Docker volume name (and so what a user's name in a manifest may be).
fn valid_volume_part(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Checks every file's size and sum before anything is written.
fn verify(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let total: u64 = manifest.files.iter().map(|file| file.bytes).sum();
    let bar = bar(total, "verify");
    let mut bad = Vec::new();
    for file in &manifest.files {
        say(&bar, &format!("checking {} ({})", file.path, ui::human_size(file.bytes)));
        let path = dir.join(&file.path);
        let Ok(mut reader) = std::fs::File::open(&path) else {
            bad.push(format!("{} is missing", file.path));
            continue;
        };
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let read = reader.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            bytes += read as u64;
            bar.inc(read as u64);
        }
        let sum = digest_hex(hasher.finalize().as_slice());
        if bytes != file.bytes || sum != file.sha256 {
            bad.push(format!("{} ({} bytes, {sum}; the manifest says {} bytes, {})", file.path, bytes, file.bytes, file.sha256));
        }
    }
    bar.finish_and_clear();
    if !bad.is_empty() {
        return Err(UserError::new(
            format!("the backup in {} is damaged, nothing was restored: {}", dir.display(), bad.join("; ")),
            "restore from another copy of the backup",
        )
        .into());
    }
    ui::note(&format!("verified {} file(s), {} against the manifest", manifest.files.len(), ui::human_size(total)));
    Ok(())
}

/// A volume the restore fills: its name, who it is for, the tar that goes into it, and the labels the
/// running platform gives such a volume (a volume that lacks them is made anew; see `prepare_volumes`).
struct VolumeJob {
    volume: String,
    what: String,
    tar: TarSource,
    labels: HashMap<String, String>,
}

enum TarSource {
    File(PathBuf, u64),
    Bytes(Vec<u8>),
}

async fn write_restore(target: &Target, options: &RestoreOptions, manifest: &Manifest, written: &mut Written) -> anyhow::Result<()> {
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
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    format!("{:016x}", std::collections::hash_map::RandomState::new().build_hasher().finish())
}

/// The version this host's compose writes into its labels (a restored data volume carries it, as one
/// compose made does).
fn compose_label_version() -> anyhow::Result<String> {
    Ok(jhub_docker::compose::label_version(&jhub_docker::compose::detect()?.version))
}

/// The tar that goes into the hub's data volume: the staging folder (root, 700, as the hub image makes its
/// data folder) with the database and the cookie secret (root, 600, as the hub requires).
fn hub_data_tar(database: &[u8], secret: &[u8]) -> anyhow::Result<Vec<u8>> {
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

/// The jobs whose volume exists and holds anything (the stage a stopped restore left aside).
async fn occupied_volumes(docker: &Docker, helper_image: &str, jobs: &[VolumeJob]) -> anyhow::Result<Vec<String>> {
    let mut binds = Vec::new();
    let mut checked = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        if docker.inspect_volume(&job.volume).await.is_ok() {
            binds.push(format!("{}:/check/{index}:ro", job.volume));
            checked.push(index);
        }
    }
    if checked.is_empty() {
        return Ok(Vec::new());
    }
    let script = format!("for d in /check/*; do if ls -A \"$d\" | grep -qv '^{RESTORE_STAGE_PREFIX}'; then basename \"$d\"; fi; done");
    let (code, output) = run_helper_once(docker, helper_image, binds, &["sh", "-c", &script], "restore-check").await?;
    anyhow::ensure!(code == 0, "the check of the target volumes failed: {}", output.trim());
    Ok(output
        .split_whitespace()
        .filter_map(|word| word.parse::<usize>().ok())
        .filter_map(|index| jobs.get(index))
        .map(|job| format!("{} (volume {})", job.what, job.volume))
        .collect())
}

/// Gives every job a volume with its labels, removes the stages a stopped restore left and makes this
/// restore's `stage` folder in each; returns the volumes it created. Docker cannot add labels to a volume,
/// so an existing one that lacks them (an earlier restore's, before restores labelled) is removed and made
/// anew: by now it is known to be empty or, with `--force`, to be replaced, and the backup holds
/// everything that goes into it.
async fn prepare_volumes(docker: &Docker, helper_image: &str, jobs: &[VolumeJob], stage: &str) -> anyhow::Result<Vec<String>> {
    let mut created = Vec::new();
    for job in jobs {
        if let Ok(existing) = docker.inspect_volume(&job.volume).await {
            let labelled = job.labels.iter().all(|(key, value)| existing.labels.get(key) == Some(value));
            if labelled {
                continue;
            }
            docker.remove_volume(&job.volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await.map_err(|err| {
                UserError::new(
                    format!("cannot replace volume {} (it lacks the stack's labels): {err}", job.volume),
                    format!("a container still uses it: `docker ps -a --filter volume={}` shows which", job.volume),
                )
            })?;
        } else {
            created.push(job.volume.clone());
        }
        let request = VolumeCreateRequest { name: Some(job.volume.clone()), labels: Some(job.labels.clone()), ..Default::default() };
        docker.create_volume(request).await.map_err(|err| engine_failed(&format!("creating volume {}", job.volume), err))?;
    }
    let binds = target_binds(jobs);
    let script = format!("set -eu; rm -rf /target/*/{RESTORE_STAGE_PREFIX}*; for d in /target/*; do mkdir -m 700 \"$d/{stage}\"; done");
    let (code, output) = run_helper_once(docker, helper_image, binds, &["sh", "-c", &script], "restore-prepare").await?;
    anyhow::ensure!(code == 0, "preparing the volumes for the restore failed: {}", output.trim());
    Ok(created)
}

/// Every job's volume at `/target/<its number>`, for the scripts that work on all of them at once.
fn target_binds(jobs: &[VolumeJob]) -> Vec<String> {
    jobs.iter().enumerate().map(|(index, job)| format!("{}:/target/{index}", job.volume)).collect()
}

/// Extracts the job's tar into `stage` inside its volume (the tar's own top folder is `.jhub-staging`).
/// The throwaway container is created, never started: the engine writes into its mounts all the same.
async fn stage_volume(docker: &Docker, helper_image: &str, job: &VolumeJob, stage: &str, bar: &ProgressBar) -> anyhow::Result<()> {
    let binds = vec![format!("{}:/target", job.volume)];
    let container = create_helper(docker, helper_image, binds, &["true"], "restore-stage").await?;
    let outcome = async {
        let body = match &job.tar {
            TarSource::Bytes(bytes) => {
                bar.inc(bytes.len() as u64);
                bollard::body_full(bytes.clone().into())
            }
            TarSource::File(path, _) => bollard::body_try_stream(file_chunks(path, bar.clone())?.map(|chunk| chunk.map(Into::into))),
        };
        let options = UploadToContainerOptions { path: format!("/target/{stage}"), ..Default::default() };
        docker
            .upload_to_container(&container, Some(options), body)
            .await
            .map_err(|err| engine_failed(&format!("writing volume {}", job.volume), err))
    }
    .await;
    remove_container(docker, &container).await;
    outcome
}

/// After a failed staging: removes every stage, and the volumes this restore created, so the stack is as
/// it was. Best effort: what it cannot remove, the next restore's preparation does.
async fn undo_stages(docker: &Docker, helper_image: &str, jobs: &[VolumeJob], stage: &str, created: &[String]) {
    let _ = run_helper_once(docker, helper_image, target_binds(jobs), &["sh", "-c", &format!("rm -rf /target/*/{stage}")], "restore-undo")
        .await;
    for volume in created {
        let _ = docker.remove_volume(volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
    }
}

/// Moves every staged volume into place (see FINISH_SCRIPT), in the jobs' order; returns how many were
/// finished, with the error when not all were.
async fn finish_volumes(
    docker: &Docker,
    helper_image: &str,
    jobs: &[VolumeJob],
    stage: &str,
    force: bool,
) -> Result<usize, (usize, anyhow::Error)> {
    let binds = target_binds(jobs);
    let mode = if force { "force" } else { "keep" };
    let numbers: Vec<String> = (0..jobs.len()).map(|index| index.to_string()).collect();
    let mut argv = vec!["sh", "-c", FINISH_SCRIPT, "finish", stage, mode];
    argv.extend(numbers.iter().map(String::as_str));
    let (code, output) = run_helper_once(docker, helper_image, binds, &argv, "restore-finish").await.map_err(|err| (0, err))?;
    let finished = output.lines().filter(|line| line.starts_with("finished ")).count();
    if code != 0 {
        let job = &jobs[finished.min(jobs.len() - 1)];
        return Err((finished, anyhow::anyhow!("moving the {} into place in volume {} failed: {}", job.what, job.volume, output.trim())));
    }
    Ok(finished)
}

/// The file as a stream of 1 MiB chunks, advancing `bar`.
fn file_chunks(
    path: &Path,
    bar: ProgressBar,
) -> anyhow::Result<impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(futures_util::stream::unfold((tokio::fs::File::from_std(file), bar), |(mut file, bar)| async move {
        let mut buffer = vec![0u8; 1 << 20];
        match tokio::io::AsyncReadExt::read(&mut file, &mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                bar.inc(read as u64);
                Some((Ok(buffer), (file, bar)))
            }
            Err(err) => Some((Err(err), (file, bar))),
        }
    }))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename (mode 600: the
/// settings hold the admin password).
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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

    #[test]
    fn manifest_users_must_be_volume_name_parts() {
        assert!(valid_volume_part("alice-2.x_y"));
        assert!(!valid_volume_part("../etc"));
        assert!(!valid_volume_part(""));
    }
}
