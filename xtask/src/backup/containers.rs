//! The engine work backup, restore and `adopt-volumes` share: the throwaway helper containers (hub image,
//! no network) they run scripts and tar streams through, whether a stack runs, and the accounts of the
//! hub's database.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    DownloadFromContainerOptions, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptions,
};
use futures_util::StreamExt;
use jhub_docker::contract::{self, PURPOSE_LABEL, STACK_LABEL};

use super::{DATA_DIR, DATABASE};
use crate::engine;
use crate::stack::locked_hub_image;
use crate::ui::UserError;

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

/// Users of `stack` with a running server container.
pub(super) async fn running_users(docker: &Docker, stack: &str) -> anyhow::Result<Vec<String>> {
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

/// Prints every user of the hub's database with the creation time of the account, one JSON object, as the
/// hub's spawner writes it into a volume's label (`user.created.isoformat()`: SQLAlchemy stores the naive
/// UTC time as text, which `fromisoformat` reads back exactly). A plain connection: a journal a killed hub
/// left behind is rolled back first, as the hub would at its next start.
pub(super) const ACCOUNTS_SCRIPT: &str = "\
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

/// The one regular file of the tar the engine sends for `path` in `container`.
pub(super) async fn download_file(docker: &Docker, container: &str, path: &str) -> anyhow::Result<Vec<u8>> {
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
