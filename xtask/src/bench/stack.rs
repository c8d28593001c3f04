//! The benchmark's own stack: a compose project of its own (project, port, network and user-volume names
//! no other stack uses), started from `stack/docker-compose.yml` with the lock's hub image and the bench
//! settings, and removed at the end with the user containers DockerSpawner made (found by label).
//!
//! This is the ONE place that knows how the hub is given its images: the resolved view (as `up` resolves
//! it) in a file of the stack's own, mounted by the compose file through JHUB_HUB_VIEW.

use jhub_docker::contract::{STACK_LABEL, USER_LABEL};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder};
use jhub_docker::compose::{self, Compose};
use jhub_docker::lock::Lock;

use crate::ui::{self, UserError};

/// How long the hub may take to answer `/hub/health` after `up -d`.
const HEALTHY: Duration = Duration::from_secs(180);

pub struct BenchStack {
    pub project: String,
    pub port: u16,
    pub network: String,
    pub volume_prefix: String,
    compose: Compose,
    env_file: PathBuf,
    view_file: PathBuf,
    /// The compose file's variables the bench does not set: removed from every compose call's environment.
    unset: Vec<String>,
    removed: AtomicBool,
}

/// The lock's hub image (its content-keyed tag), checked present in the engine.
pub async fn hub_image(docker: &Docker, lock: &Lock) -> Result<String, UserError> {
    let image = lock
        .keyed_tag("hub")
        .map(str::to_string)
        .ok_or_else(|| UserError::new("images.lock has no hub image", "run `cargo xtask build-images`"))?;
    if !crate::engine::image_exists(docker, &image).await {
        return Err(UserError::new(
            format!("the locked hub image {image} is not on this engine"),
            "run `cargo xtask build-images` (it reuses whatever is already built)",
        ));
    }
    Ok(image)
}

/// A password the bench stack gives its admin: random, never shown, gone with the stack.
fn random_password() -> std::io::Result<String> {
    use std::io::Read;
    let mut random = [0u8; 18];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    Ok(random.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// The variables the compose file reads: those the bench does not set are removed from the compose CLI's
/// environment, so the developer's shell cannot change the bench stack.
fn compose_variables(compose_file: &std::path::Path) -> Vec<String> {
    compose::variables_of(&std::fs::read_to_string(compose_file).unwrap_or_default())
}

impl BenchStack {
    /// The stack's names and settings, nothing started yet: the caller holds it (and removes it) before
    /// anything exists, so an interrupted start is cleaned up too.
    pub fn prepare(hub_image: &str, view: &jhub_docker::view::HubView) -> anyhow::Result<BenchStack> {
        let project = format!("jhubbench{}", std::process::id());
        // The hub's view, resolved as `up` resolves it, in a file of this stack's own.
        let view_file = std::env::temp_dir().join(format!("{project}-hub-view.json"));
        view.write_atomically(&view_file)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let network = format!("{project}-net");
        let volume_prefix = format!("{project}-user-");
        let settings: Vec<(&str, String)> = vec![
            ("JHUB_STACK_NAME", project.clone()),
            ("JHUB_NETWORK", network.clone()),
            ("JHUB_USER_VOLUME_PREFIX", volume_prefix.clone()),
            ("JHUB_HUB_IMAGE", hub_image.to_string()),
            ("JHUB_HTTP_PORT", port.to_string()),
            ("JHUB_BIND_ADDRESS", "127.0.0.1".to_string()),
            ("AUTH_STRATEGY", "native".to_string()),
            ("SPAWNER", "dockerspawner".to_string()),
            ("OPEN_SIGNUP", "true".to_string()),
            ("ADMIN_PASSWORD", random_password()?),
            ("IDLE_CULL_TIMEOUT", "0".to_string()),
            ("JHUB_HUB_VIEW", view_file.to_string_lossy().into_owned()),
        ];
        let compose_file = jhub_docker::repo_root().join("stack/docker-compose.yml");
        // Compose reads stack/.env unless given another env file: this one holds exactly the bench's settings.
        let env_file = std::env::temp_dir().join(format!("{project}.env"));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let text: String = settings.iter().map(|(key, value)| format!("{key}={value}\n")).collect();
            let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&env_file)?;
            std::io::Write::write_all(&mut file, text.as_bytes())?;
        }
        let mut compose = Compose::new(compose::detect_cli()?, &compose_file, &project);
        for (key, value) in &settings {
            compose = compose.with_env(key, value);
        }
        let unset: Vec<String> =
            compose_variables(&compose_file).into_iter().filter(|name| !settings.iter().any(|(key, _)| key == name)).collect();
        Ok(BenchStack { project, port, network, volume_prefix, compose, env_file, view_file, unset, removed: AtomicBool::new(false) })
    }

    /// `up -d`, then waits until `/hub/health` answers; on failure prints the services' last log lines.
    pub async fn start(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let up = self.run_compose(&["up", "-d", "--no-build"]);
        let healthy = match up {
            Ok(()) => self.wait_healthy().await,
            Err(err) => Err(err),
        };
        if let Err(err) = healthy {
            let mut logs =
                self.compose.command(&["--env-file", self.env_file.to_str().unwrap_or_default(), "logs", "--no-color", "--tail=30"]);
            for name in &self.unset {
                logs.env_remove(name);
            }
            if let Ok(logs) = logs.stdin(Stdio::null()).output() {
                eprintln!("{}", String::from_utf8_lossy(&logs.stdout).trim_end());
            }
            return Err(err);
        }
        ui::note(&format!("bench stack {} healthy after {:.1} s at {}", self.project, started.elapsed().as_secs_f64(), self.url("/hub/")));
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn run_compose(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["--env-file", self.env_file.to_str().expect("a UTF-8 temp path")];
        full.extend_from_slice(args);
        let mut command = self.compose.command(&full);
        for name in &self.unset {
            command.env_remove(name);
        }
        let output = command.stdin(Stdio::null()).output()?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(UserError::new(
                format!("`compose {}` failed for the bench stack {}:\n{}", args.join(" "), self.project, tail.join("\n")),
                "check `docker info` and that the locked images exist (`cargo xtask build-images`)",
            )
            .into());
        }
        Ok(())
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let url = self.url("/hub/health");
        let started = Instant::now();
        loop {
            if http.get(&url).send().await.is_ok_and(|response| response.status() == reqwest::StatusCode::OK) {
                return Ok(());
            }
            if started.elapsed() > HEALTHY {
                return Err(UserError::new(
                    format!("the bench stack's hub did not answer {url} within {} s", HEALTHY.as_secs()),
                    "its last log lines are above",
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The running containers of this stack: the hub and proxy services, and every user container.
    pub async fn service_container(&self, docker: &Docker, service: &str) -> anyhow::Result<String> {
        let filters = HashMap::from([(
            "label",
            vec![format!("com.docker.compose.project={}", self.project), format!("com.docker.compose.service={service}")],
        )]);
        let found = docker.list_containers(Some(ListContainersOptionsBuilder::default().filters(&filters).build())).await?;
        found
            .into_iter()
            .find_map(|container| container.id)
            .ok_or_else(|| anyhow::anyhow!("the bench stack {} has no running `{service}` container", self.project))
    }

    /// The id of `user`'s running container, found by the labels the hub's spawner sets.
    pub async fn user_container(&self, docker: &Docker, user: &str) -> anyhow::Result<String> {
        let filters = HashMap::from([("label", vec![format!("{STACK_LABEL}={}", self.project), format!("{USER_LABEL}={user}")])]);
        let found = docker.list_containers(Some(ListContainersOptionsBuilder::default().filters(&filters).build())).await?;
        found.into_iter().find_map(|container| container.id).ok_or_else(|| anyhow::anyhow!("no running container labelled for `{user}`"))
    }

    /// Every user container of this stack, running or not.
    pub async fn user_containers(&self, docker: &Docker) -> anyhow::Result<Vec<String>> {
        let filters = HashMap::from([("label", vec![format!("{STACK_LABEL}={}", self.project)])]);
        let found = docker.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build())).await?;
        Ok(found.into_iter().filter_map(|container| container.id).collect())
    }

    /// Removes everything the stack made: user containers first (they hold the network and the volumes),
    /// then `down -v`, then the user volumes and the network. Errors are printed, never fatal.
    pub async fn remove(&self, docker: &Docker) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        // The hub would restart (or respawn) what is being removed.
        let _ = self.run_compose(&["stop", "-t", "5", "hub"]);
        match self.user_containers(docker).await {
            Ok(containers) => {
                for id in containers {
                    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
                    if let Err(err) = docker.remove_container(&id, Some(options)).await {
                        ui::note(&format!("bench stack {}: cannot remove user container {id}: {err}", self.project));
                    }
                }
            }
            Err(err) => ui::note(&format!("bench stack {}: cannot list user containers: {err}", self.project)),
        }
        if let Err(err) = self.run_compose(&["down", "-v", "--remove-orphans", "-t", "5"]) {
            ui::note(&format!("bench stack {}: {err:#}", self.project));
        }
        if let Ok(volumes) = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().build())).await {
            for volume in volumes.volumes.unwrap_or_default().iter().filter(|volume| volume.name.starts_with(&self.volume_prefix)) {
                if let Err(err) = docker.remove_volume(&volume.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
                    ui::note(&format!("bench stack {}: cannot remove volume {}: {err}", self.project, volume.name));
                }
            }
        }
        let _ = docker.remove_network(&self.network).await;
        let _ = std::fs::remove_file(&self.env_file);
        let _ = std::fs::remove_file(&self.view_file);
        ui::note(&format!("bench stack {} removed in {:.1} s", self.project, started.elapsed().as_secs_f64()));
    }
}

impl Drop for BenchStack {
    fn drop(&mut self) {
        if !self.removed.load(Ordering::SeqCst) {
            ui::note(&format!(
                "bench stack {project} was left running; remove it with:\n  \
                 docker rm -f $(docker ps -aq --filter label=io.jhub-docker.stack={project}); \
                 docker compose -p {project} -f stack/docker-compose.yml --env-file {env} down -v; \
                 docker volume rm $(docker volume ls -q --filter name={prefix})",
                project = self.project,
                env = self.env_file.display(),
                prefix = self.volume_prefix,
            ));
        }
    }
}
