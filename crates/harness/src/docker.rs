//! The Docker API view of a stack (bollard): the hub and proxy containers by their compose labels, user
//! containers by the labels the hub puts on them, their image and limits, restarts and logs; and the docker
//! CLI for cleanup that must go on whatever fails.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder, LogsOptionsBuilder, RestartContainerOptionsBuilder,
};
use futures_util::StreamExt;
use jhub_docker::contract::{STACK_LABEL, USER_LABEL};

use crate::wait;

/// The lines the docker CLI prints for `args` (none when it fails): for cleanup, which must go on whatever
/// fails, and for checks a person would make with the CLI.
pub fn cli_lines(args: &[&str]) -> Vec<String> {
    std::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).filter(|line| !line.is_empty()).collect())
        .unwrap_or_default()
}

/// Runs the docker CLI with `args`, output discarded: cleanup that goes on whatever fails.
pub fn cli_quiet(args: &[&str]) {
    use std::process::{Command, Stdio};
    let _ = Command::new("docker").args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Containers (running or not) carrying every one of `labels` (`key=value`).
pub async fn containers_with_labels(docker: &Docker, labels: &[String], all: bool) -> Result<Vec<ContainerSummary>> {
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", labels.iter().map(String::as_str).collect())]);
    let options = ListContainersOptionsBuilder::default().all(all).filters(&filters).build();
    docker.list_containers(Some(options)).await.with_context(|| format!("cannot list containers labelled {labels:?}"))
}

/// The one running container of compose service `service` in `project`.
pub async fn service_container(docker: &Docker, project: &str, service: &str) -> Result<ContainerSummary> {
    let labels = [format!("com.docker.compose.project={project}"), format!("com.docker.compose.service={service}")];
    let mut found = containers_with_labels(docker, &labels, false).await?;
    match found.len() {
        1 => Ok(found.remove(0)),
        count => Err(anyhow!("expected one running `{service}` container in compose project {project}, found {count}")),
    }
}

fn user_labels(stack: &str, user: &str) -> [String; 2] {
    [format!("{STACK_LABEL}={stack}"), format!("{USER_LABEL}={user}")]
}

/// The user's containers in the stack, running or not.
pub async fn user_containers(docker: &Docker, stack: &str, user: &str) -> Result<Vec<ContainerSummary>> {
    containers_with_labels(docker, &user_labels(stack, user), true).await
}

/// The user's one running container, inspected; waits for it (a spawn may still be settling).
pub async fn running_user_container(docker: &Docker, stack: &str, user: &str) -> Result<ContainerInspectResponse> {
    let labels = user_labels(stack, user);
    let summary = wait::until(&format!("one running container labelled {labels:?}"), wait::DEFAULT, || async {
        let mut running = containers_with_labels(docker, &labels, false).await?;
        Ok((running.len() == 1).then(|| running.remove(0)))
    })
    .await?;
    let id = summary.id.ok_or_else(|| anyhow!("a container summary without an id"))?;
    Ok(docker.inspect_container(&id, None::<InspectContainerOptions>).await?)
}

/// Waits until the user has no container at all in the stack (DockerSpawner removes it on stop).
pub async fn wait_user_container_gone(docker: &Docker, stack: &str, user: &str, timeout: Duration) -> Result<()> {
    wait::until(&format!("the container of {user} in stack {stack} to be removed"), timeout, || async {
        Ok(user_containers(docker, stack, user).await?.is_empty().then_some(()))
    })
    .await
}

/// `at` as the engine's API takes a time: Unix seconds with a fraction.
fn engine_time(at: SystemTime) -> String {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", since_epoch.as_secs(), since_epoch.subsec_nanos())
}

/// Every engine event (`action container-name`) of a container labelled for `user` in `stack` between
/// `since` and `until`: a container created and removed again in between shows here, not in a listing.
pub async fn user_container_events(docker: &Docker, stack: &str, user: &str, since: SystemTime, until: SystemTime) -> Result<Vec<String>> {
    let labels = user_labels(stack, user);
    let filters: HashMap<&str, Vec<&str>> =
        HashMap::from([("type", vec!["container"]), ("label", labels.iter().map(String::as_str).collect())]);
    let options = EventsOptionsBuilder::default().since(&engine_time(since)).until(&engine_time(until)).filters(&filters).build();
    let mut stream = docker.events(Some(options));
    let mut seen = Vec::new();
    let read = async {
        while let Some(event) = stream.next().await {
            let event = event.with_context(|| format!("cannot read the engine's events for containers labelled {labels:?}"))?;
            let actor = event.actor.unwrap_or_default();
            let name = actor.attributes.unwrap_or_default().remove("name").or(actor.id).unwrap_or_default();
            seen.push(format!("{} {name}", event.action.unwrap_or_default()));
        }
        Ok::<(), anyhow::Error>(())
    };
    // With `until` in the past the engine sends what it kept and closes the stream at once.
    tokio::time::timeout(wait::DEFAULT, read)
        .await
        .map_err(|_| anyhow!("the engine's event stream did not end within {} s", wait::DEFAULT.as_secs()))??;
    Ok(seen)
}

pub async fn restart(docker: &Docker, id: &str) -> Result<()> {
    let options = RestartContainerOptionsBuilder::default().t(10).build();
    docker.restart_container(id, Some(options)).await.with_context(|| format!("cannot restart container {id}"))
}

/// Runs `argv` in the running `container` through the Engine API's exec (as the container's user unless
/// `user`); returns the exit code and the output.
pub async fn exec(docker: &Docker, container: &str, argv: &[&str], user: Option<&str>) -> Result<(i64, String)> {
    let options = bollard::exec::CreateExecOptions {
        cmd: Some(argv.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        user,
        ..Default::default()
    };
    let created = docker.create_exec(container, options).await?;
    let mut text = String::new();
    if let bollard::exec::StartExecResults::Attached { mut output, .. } = docker.start_exec(&created.id, None).await? {
        while let Some(chunk) = output.next().await {
            text.push_str(&chunk?.to_string());
        }
    }
    let code = docker.inspect_exec(&created.id).await?.exit_code.unwrap_or(-1);
    Ok((code, text))
}

/// The whole log (stdout and stderr, timestamped) of container `id`.
pub async fn logs(docker: &Docker, id: &str) -> String {
    let options = LogsOptionsBuilder::default().stdout(true).stderr(true).timestamps(true).tail("all").build();
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(output) => text.push_str(&output.to_string()),
            Err(err) => {
                text.push_str(&format!("\n(log stream ended: {err})\n"));
                break;
            }
        }
    }
    text
}

/// Every container of the stack, compose services and user containers: (name, id).
pub async fn stack_containers(docker: &Docker, project: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for label in [format!("com.docker.compose.project={project}"), format!("{STACK_LABEL}={project}")] {
        for container in containers_with_labels(docker, &[label], true).await.unwrap_or_default() {
            let name = container.names.as_ref().and_then(|names| names.first()).cloned().unwrap_or_default();
            let id = container.id.clone().unwrap_or_default();
            found.push((name.trim_start_matches('/').to_string(), id));
        }
    }
    found
}

/// The names of the volumes that start with `prefix` (a stack's user volumes).
pub async fn user_volume_names(docker: &Docker, prefix: &str) -> Result<Vec<String>> {
    let volumes = docker.list_volumes(Some(bollard::query_parameters::ListVolumesOptionsBuilder::default().build())).await?;
    Ok(volumes.volumes.unwrap_or_default().into_iter().map(|volume| volume.name).filter(|name| name.starts_with(prefix)).collect())
}

/// The tree sum (`jhub_docker::tree_sum`) of `volume`, computed in a throwaway container of
/// `image` (one with python3: the hub's).
pub async fn volume_tree_sum(docker: &Docker, image: &str, volume: &str) -> Result<String> {
    let script = jhub_docker::tree_sum::print_tree_sum_script();
    let logs = run_on_volume(docker, image, volume, false, &["python3", "-c", &script, "/volume"], "test-tree-sum").await?;
    // The log lines carry the engine's timestamps: the sum is the last word.
    logs.lines().last().and_then(|line| line.split_whitespace().last()).map(str::to_string).context("the tree sum printed nothing")
}

/// Runs `argv` as root in a throwaway container of `image` (no network) with `volume` at /volume
/// (read-write when `writable`); returns its log, or fails with it when `argv` failed.
pub async fn run_on_volume(docker: &Docker, image: &str, volume: &str, writable: bool, argv: &[&str], purpose: &str) -> Result<String> {
    let mode = if writable { "rw" } else { "ro" };
    let config = bollard::models::ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(argv.iter().map(|word| word.to_string()).collect()),
        user: Some("0:0".to_string()),
        network_disabled: Some(true),
        labels: Some([(jhub_docker::contract::PURPOSE_LABEL.to_string(), purpose.to_string())].into()),
        host_config: Some(bollard::models::HostConfig { binds: Some(vec![format!("{volume}:/volume:{mode}")]), ..Default::default() }),
        ..Default::default()
    };
    let id = docker.create_container(None::<bollard::query_parameters::CreateContainerOptions>, config).await?.id;
    let outcome = async {
        docker.start_container(&id, None::<bollard::query_parameters::StartContainerOptions>).await?;
        let code = match docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>).next().await {
            Some(Ok(response)) => response.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            other => anyhow::bail!("waiting for `{}` on {volume}: {other:?}", argv.join(" ")),
        };
        let logs = logs(docker, &id).await;
        anyhow::ensure!(code == 0, "`{}` on {volume} failed ({code}): {logs}", argv.join(" "));
        Ok(logs)
    }
    .await;
    let _ =
        docker.remove_container(&id, Some(bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build())).await;
    outcome
}
