//! The Docker Engine, reached through bollard: connecting with a useful error, and the few calls the verbs
//! share (does an image exist, run a command in a throwaway container, tag an image).

use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{LogsOptionsBuilder, RemoveContainerOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;

use crate::ui::UserError;

/// Uploads of large contexts and rootfs tars take longer than bollard's default of 120 s for headers.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(3600);

pub async fn connect() -> Result<Docker, UserError> {
    let unreachable = |err: bollard::errors::Error| {
        UserError::new(
            format!("cannot reach the Docker engine: {err}"),
            "start it (`dockerd &`, or `systemctl start docker`); `cargo xtask doctor` checks the host",
        )
    };
    let docker = Docker::connect_with_local_defaults().map_err(unreachable)?.with_timeout(ENGINE_TIMEOUT);
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// An engine call that failed while working on `image_name`, as an error that names the image, what was
/// being done, and where to look next.
pub fn engine_error(image_name: &str, doing: &str, err: impl std::fmt::Display) -> anyhow::Error {
    let first_line = err.to_string().lines().next().unwrap_or_default().to_string();
    UserError::new(
        format!("image `{image_name}`: the engine failed {doing}: {first_line}"),
        "check `docker info` (is the engine up, is the disk full?) and run the command again",
    )
    .into()
}

/// Whether the engine has an image with this id or reference.
pub async fn image_exists(docker: &Docker, reference: &str) -> bool {
    !reference.is_empty() && docker.inspect_image(reference).await.is_ok()
}

/// The id of the image a reference (such as a content-keyed tag) names, if the engine has it.
pub async fn image_id(docker: &Docker, reference: &str) -> Option<String> {
    docker.inspect_image(reference).await.ok().and_then(|image| image.id).filter(|id| !id.is_empty())
}

pub async fn tag(docker: &Docker, image_id: &str, tag: &str) -> anyhow::Result<()> {
    let (repo, version) = tag.rsplit_once(':').expect("tags are repo:version");
    docker.tag_image(image_id, Some(TagImageOptionsBuilder::default().repo(repo).tag(version).build())).await?;
    Ok(())
}

/// What a command printed in a throwaway container, and how it exited.
pub struct RunOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `argv` in a fresh container of `image` (the image's entrypoint is replaced by `argv[0]`, so the
/// command runs as written, as the image's default user), waits up to `timeout`, then removes it.
pub async fn run_in_container(docker: &Docker, image: &str, argv: &[String], timeout: Duration) -> anyhow::Result<RunOutput> {
    let config = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(argv[..1].to_vec()),
        cmd: Some(argv[1..].to_vec()),
        network_disabled: Some(true),
        labels: Some([(jhub_docker::contract::PURPOSE_LABEL.to_string(), "smoke-check".to_string())].into()),
        ..Default::default()
    };
    run_configured(docker, config, &[], timeout).await
}

/// A file put into a throwaway container before it starts: its absolute path there, content and mode.
/// Copied through the Engine API, so it works on any engine, also one whose disk is another machine's
/// (a bind mount names a path on the engine's own host).
pub struct FileIn<'a> {
    pub path: &'a str,
    pub content: &'a [u8],
    pub mode: u32,
}

/// Runs a throwaway container made from `config` with `files` in it, waits up to `timeout`, collects its
/// output, removes it.
pub async fn run_configured(
    docker: &Docker,
    config: ContainerCreateBody,
    files: &[FileIn<'_>],
    timeout: Duration,
) -> anyhow::Result<RunOutput> {
    let container = docker.create_container(None, config).await?.id;
    let outcome = async {
        if !files.is_empty() {
            let mut builder = tar::Builder::new(Vec::new());
            for file in files {
                let mut header = tar::Header::new_gnu();
                header.set_size(file.content.len() as u64);
                header.set_mode(file.mode);
                header.set_cksum();
                builder.append_data(&mut header, file.path.trim_start_matches('/'), file.content)?;
            }
            let options = bollard::query_parameters::UploadToContainerOptions { path: "/".to_string(), ..Default::default() };
            docker.upload_to_container(&container, Some(options), bollard::body_full(builder.into_inner()?.into())).await?;
        }
        docker.start_container(&container, None).await?;
        let exit_code = match tokio::time::timeout(timeout, docker.wait_container(&container, None).next()).await {
            Err(_) => anyhow::bail!("timed out after {} s", timeout.as_secs()),
            Ok(Some(Ok(response))) => response.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
            Ok(Some(Err(err))) => return Err(err.into()),
            Ok(None) => anyhow::bail!("the engine ended the wait without an exit code"),
        };
        let mut logs = docker.logs(&container, Some(LogsOptionsBuilder::default().stdout(true).stderr(true).build()));
        let (mut stdout, mut stderr) = (String::new(), String::new());
        while let Some(chunk) = logs.next().await {
            match chunk? {
                bollard::container::LogOutput::StdErr { message } => stderr.push_str(&String::from_utf8_lossy(&message)),
                other => stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
            }
        }
        Ok(RunOutput { exit_code, stdout, stderr })
    }
    .await;
    let _ = docker.remove_container(&container, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await;
    outcome
}

/// What a command run in a running container (an exec) printed, and how it exited.
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `argv` in the running container `container` as its default user and collects its output.
pub async fn exec(docker: &Docker, container: &str, argv: &[&str]) -> anyhow::Result<ExecOutput> {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    let options =
        CreateExecOptions { cmd: Some(argv.to_vec()), attach_stdout: Some(true), attach_stderr: Some(true), ..Default::default() };
    let created = docker.create_exec(container, options).await?;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&created.id, None).await? {
        while let Some(chunk) = output.next().await {
            match chunk? {
                bollard::container::LogOutput::StdErr { message } => stderr.push_str(&String::from_utf8_lossy(&message)),
                other => stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
            }
        }
    }
    let exit_code = docker.inspect_exec(&created.id).await?.exit_code.unwrap_or(-1);
    Ok(ExecOutput { exit_code, stdout, stderr })
}

/// The running container of service `service` of stack `project` (compose on one host, or a swarm task on
/// this engine), or None.
pub async fn service_container(docker: &Docker, project: &str, service: &str) -> anyhow::Result<Option<String>> {
    use std::collections::HashMap;

    use bollard::query_parameters::ListContainersOptionsBuilder;
    // Compose's labels on one host; a swarm's task containers carry their service's name instead.
    let compose = vec![format!("com.docker.compose.project={project}"), format!("com.docker.compose.service={service}")];
    let swarm = vec![format!("com.docker.swarm.service.name={project}_{service}")];
    for labels in [compose, swarm] {
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", labels.iter().map(String::as_str).collect())]);
        let found = docker.list_containers(Some(ListContainersOptionsBuilder::default().filters(&filters).build())).await?;
        if let Some(id) = found.into_iter().find_map(|container| container.id) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}
