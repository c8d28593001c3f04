//! The benchmark's own stack: the harness's `Stack` (`jhub_harness::stack`: a compose project, port,
//! network and user-volume names no other stack uses, the lock's hub image, the view resolved as `up`
//! resolves it, removed with the user containers DockerSpawner made), started with the bench's settings,
//! and the containers the bench measures, found by their labels.

use bollard::Docker;
use jhub_docker::contract::{STACK_LABEL, USER_LABEL};
use jhub_docker::lock::Lock;
use jhub_docker::view::HubView;
use jhub_harness::stack::{Source, Stack};

use crate::ui::UserError;

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

/// The folder of the stack's view and settings file (mode 600: the admin's password), removed with it.
pub fn folder() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("jhubbench{}", std::process::id()))
}

/// Starts the bench stack (open signup on 127.0.0.1, no culling) and waits until it is healthy. A start
/// that fails, or is interrupted, removes what it started.
pub async fn start(hub_image: &str, view: &HubView) -> anyhow::Result<Stack> {
    let folder = folder();
    std::fs::create_dir_all(&folder)?;
    let compose_cli = jhub_docker::compose::detect_cli()?;
    let compose_file = jhub_docker::repo_root().join("stack/docker-compose.yml");
    let source =
        Source { project_prefix: "jhubbench", compose_cli: &compose_cli, compose_file: &compose_file, hub_image, nginx_image: None, view };
    // The admin's password: random, never shown, gone with the stack.
    let password = crate::stack_settings::random_password();
    let settings = [
        ("JHUB_BIND_ADDRESS", "127.0.0.1"),
        ("AUTH_STRATEGY", "native"),
        ("SPAWNER", "dockerspawner"),
        ("OPEN_SIGNUP", "true"),
        ("ADMIN_PASSWORD", password.as_str()),
        ("IDLE_CULL_TIMEOUT", "0"),
    ];
    let started = Stack::start_from(&source, &settings, &folder, None).await;
    started.map_err(|err| {
        // The harness removed the stack; its folder (the settings with the admin's password) goes too.
        if !jhub_harness::stack::keeps() {
            let _ = std::fs::remove_dir_all(&folder);
        }
        UserError::new(
            format!("the bench stack did not start: {err:#}"),
            "check `docker info` and that the locked images exist (`cargo xtask build-images`)",
        )
        .into()
    })
}

/// Removes the stack and its folder, now (the harness keeps both with JHUB_ACCEPTANCE_KEEP=1).
pub fn remove(stack: &Stack) {
    stack.remove();
    if !jhub_harness::stack::keeps() {
        let _ = std::fs::remove_dir_all(folder());
    }
}

/// The id of the running container of compose service `service` (hub, proxy) of the stack.
pub async fn service_container(stack: &Stack, docker: &Docker, service: &str) -> anyhow::Result<String> {
    let container = jhub_harness::docker::service_container(docker, &stack.project, service).await?;
    container.id.ok_or_else(|| anyhow::anyhow!("the bench stack {} has a `{service}` container without an id", stack.project))
}

/// The id of `user`'s running container, found by the labels the hub's spawner sets.
pub async fn user_container(stack: &Stack, docker: &Docker, user: &str) -> anyhow::Result<String> {
    let labels = [format!("{STACK_LABEL}={}", stack.project), format!("{USER_LABEL}={user}")];
    let found = jhub_harness::docker::containers_with_labels(docker, &labels, false).await?;
    found.into_iter().find_map(|container| container.id).ok_or_else(|| anyhow::anyhow!("no running container labelled for `{user}`"))
}

/// Every user container of the stack, running or not.
pub async fn user_containers(stack: &Stack, docker: &Docker) -> anyhow::Result<Vec<String>> {
    let found = jhub_harness::docker::containers_with_labels(docker, &[format!("{STACK_LABEL}={}", stack.project)], true).await?;
    Ok(found.into_iter().filter_map(|container| container.id).collect())
}
