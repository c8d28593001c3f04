//! `cargo xtask up --swarm` / `down --swarm` / `doctor --swarm`: the same stack on a Docker Swarm. The
//! single-host compose file merged with `stack/docker-compose.swarm.yml`, made a stack file
//! (`compose::swarm_stack`) and deployed with `docker stack deploy` through a manager; every image pulled
//! by the digest `cargo xtask push` recorded; the hub's view names those digests and the catalog's
//! placement, and the hub's swarm spawner runs each user's server as a service.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{NodeSpecRoleEnum, NodeState, TaskState};
use bollard::query_parameters::{ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder};
use jhub_docker::catalog::Catalog;
use jhub_docker::compose::{self, Compose, HUB_VIEW_TARGET, SwarmFile, TLS_CERT_TARGET, TLS_KEY_TARGET};
use jhub_docker::contract::{HUB_NODE_LABEL, STACK_LABEL};
use jhub_docker::lock::Lock;
use jhub_docker::view::HubView;

use crate::stack::stack_dir;
use crate::stack_settings::Settings;
use crate::ui::{self, UserError};
use crate::{registry, tls};

/// How long the hub may take to answer through the proxy after the deploy (nodes may still be pulling).
const READY_LIMIT: Duration = Duration::from_secs(300);

fn view_path() -> PathBuf {
    stack_dir().join("hub-view.swarm.json")
}

/// What is wrong with the swarm behind `manager` for this stack, each with its hint: not a manager, no
/// node or several carrying the hub's label (or it is no manager, or down), nodes down, no registry set,
/// images the registry lacks. Empty: ready to deploy.
pub async fn problems(manager: &Docker, settings: &Settings) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let info = match manager.info().await {
        Ok(info) => info,
        Err(err) => return vec![(format!("cannot reach the manager's engine: {err}"), "set DOCKER_HOST to a manager's socket".into())],
    };
    if !info.swarm.as_ref().and_then(|swarm| swarm.control_available).unwrap_or(false) {
        return vec![(
            "this engine is no Swarm manager".into(),
            "run on a manager, or set DOCKER_HOST to one (`docker swarm init` makes this engine one)".into(),
        )];
    }
    let nodes = manager.list_nodes(None::<ListNodesOptions>).await.unwrap_or_default();
    let hostname = crate::cluster::node_hostname;
    let hub_nodes: Vec<_> = nodes
        .iter()
        .filter(|node| {
            node.spec.as_ref().and_then(|spec| spec.labels.as_ref()).and_then(|labels| labels.get(HUB_NODE_LABEL)).map(String::as_str)
                == Some("true")
        })
        .collect();
    match hub_nodes.as_slice() {
        [] => found.push((
            format!("no node carries the label {HUB_NODE_LABEL}=true, so the hub has nowhere to run"),
            format!("label one manager: docker node update --label-add {HUB_NODE_LABEL}=true <node>"),
        )),
        [node] => {
            if node.spec.as_ref().and_then(|spec| spec.role) != Some(NodeSpecRoleEnum::MANAGER) {
                found.push((
                    format!("the hub's node {} is no manager; the hub drives the swarm through its engine", hostname(node)),
                    format!("promote it (docker node promote {}) or label a manager instead", hostname(node)),
                ));
            }
        }
        several => found.push((
            format!("{} nodes carry {HUB_NODE_LABEL}=true; the hub's volumes live on one", several.len()),
            format!("keep the label on one node: docker node update --label-rm {HUB_NODE_LABEL} <node>"),
        )),
    }
    for node in &nodes {
        if node.status.as_ref().and_then(|status| status.state) != Some(NodeState::READY) {
            found.push((
                format!("node {} is not ready", hostname(node)),
                "start its engine, or `docker node rm` it if it is gone for good".into(),
            ));
        }
    }
    let registry = settings.get("JHUB_REGISTRY", "");
    if registry.is_empty() {
        found.push((
            "JHUB_REGISTRY is not set".into(),
            "set it in the settings to the registry's host:port as every node reaches it".into(),
        ));
        return found;
    }
    match Lock::load(&jhub_docker::lock_path(&jhub_docker::repo_root())) {
        Err(err) => found.push((err.message, err.hint)),
        Ok(lock) => {
            for (name, image) in &lock.image {
                let Some(pushed) = &image.registry else { continue };
                let reference = registry::pinned_reference(&registry, name, &pushed.digest);
                if !registry::registry_has(manager, &reference).await {
                    found.push((
                        format!("the registry at {registry} lacks {reference}, as the manager sees it"),
                        "run `cargo xtask push` (and check that every node trusts the registry: README, \"Growing past one machine\")"
                            .into(),
                    ));
                }
            }
        }
    }
    found
}

/// `cargo xtask doctor --swarm`: every problem of the swarm for this stack, or that it is ready. Beyond
/// what the manager sees, each node's own engine is asked for the hub's pushed manifest, so a node that
/// does not reach (or trust) the registry is named: the test cluster's nodes through their sockets, other
/// nodes through `node_engines` (`NODE=unix:///path/docker.sock`); a node with neither is listed as not
/// checked.
pub fn doctor_cli(env_file: &Path, node_engines: &[String]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let manager = crate::engine::connect().await?;
        let settings = Settings::load(env_file)?;
        let mut found = problems(&manager, &settings).await;
        let mut unchecked = Vec::new();
        if found.is_empty() {
            let (more, skipped) = registry_from_every_node(&manager, &settings, node_engines).await?;
            found.extend(more);
            unchecked = skipped;
        }
        for (message, hint) in &found {
            ui::warn(message, hint);
        }
        if !found.is_empty() {
            return Err(
                UserError::new(format!("{} problem(s) with the swarm", found.len()), "fix each one above, then run this again").into()
            );
        }
        if !unchecked.is_empty() {
            ui::note(&format!(
                "not checked from {} (no way to reach its engine): give --node-engine NODE=unix:///path/docker.sock",
                unchecked.join(", ")
            ));
        }
        println!(
            "the swarm is ready for the stack: a manager, the hub's node, every node ready, the registry has every pushed image{}",
            if unchecked.is_empty() { " and every node reaches it" } else { "" }
        );
        Ok(())
    })
}

/// Each node whose engine this machine reaches asks the registry for the hub's pushed manifest, as it does
/// before it pulls. Returns the nodes that cannot (each with a hint), and the nodes not checked.
async fn registry_from_every_node(
    manager: &Docker,
    settings: &Settings,
    node_engines: &[String],
) -> anyhow::Result<(Vec<(String, String)>, Vec<String>)> {
    let registry = settings.get("JHUB_REGISTRY", "");
    let lock = Lock::load(&jhub_docker::lock_path(&jhub_docker::repo_root()))?;
    let Some(pushed) = lock.image.get("hub").and_then(|image| image.registry.as_ref()) else {
        return Ok((vec![("images.lock records no push of the hub image".into(), "run `cargo xtask push`".into())], Vec::new()));
    };
    let reference = registry::pinned_reference(&registry, "hub", &pushed.digest);
    let given = crate::move_home::given_node_engines(node_engines)?;
    let (mut found, mut unchecked) = (Vec::new(), Vec::new());
    for node in manager.list_nodes(None::<ListNodesOptions>).await? {
        let hostname = crate::cluster::node_hostname(&node);
        let Ok(engine) = crate::move_home::engine_of(given.get(hostname.as_str()).copied(), &hostname).await else {
            unchecked.push(hostname);
            continue;
        };
        if !registry::registry_has(&engine, &reference).await {
            found.push((
                format!("node {hostname} cannot read {reference} from the registry at {registry}"),
                format!(
                    "on {hostname}, list {registry} under \"insecure-registries\" in /etc/docker/daemon.json and open {registry}'s port to it \
                     (README, \"Growing past one machine\")"
                ),
            ));
        }
    }
    Ok((found, unchecked))
}

/// Where this machine reaches the hub's node: the proxy's plain port, and nginx's https port (with TLS).
pub struct Reach {
    pub http: String,
    pub https: String,
}

/// Deploys the stack whose settings are `env_file` on the swarm `manager` (reached by the `docker` CLI as
/// `docker_host`), with nginx in front when JHUB_TLS is on (as `up`), then waits until the hub answers.
pub async fn up(manager: &Docker, docker_host: &str, env_file: &Path, reach: &Reach) -> anyhow::Result<()> {
    let settings = Settings::load(env_file)?;
    if settings.get("AUTH_STRATEGY", "native") == "ldap" {
        // The LDAP folder is a bind mount of this machine's stack/ldap/, which the hub's node does not have.
        return Err(UserError::new(
            "AUTH_STRATEGY=ldap is not supported on a swarm yet: the hub's node has no stack/ldap/ folder",
            "run the hub on one host with `cargo xtask up`, or use AUTH_STRATEGY=native on the swarm",
        )
        .into());
    }
    // A swarm publishes on every address of its node (host-mode ports have no bind address): what
    // JHUB_BIND_ADDRESS=0.0.0.0 means to the TLS checks and their warnings.
    let mut tls = tls::prepare(|key, default| if key == "JHUB_BIND_ADDRESS" { "0.0.0.0".to_string() } else { settings.get(key, default) })?;
    if let Some((message, hint)) = problems(manager, &settings).await.into_iter().next() {
        return Err(UserError::new(message, hint).into());
    }
    let root = jhub_docker::repo_root();
    let catalog = Catalog::load(&root)?;
    let lock = Lock::load(&jhub_docker::lock_path(&root))?;
    let registry = settings.get("JHUB_REGISTRY", "");
    let view = HubView::resolve_for_swarm(&catalog, &lock, &registry)?;
    let pushed = |name: &str| {
        lock.image
            .get(name)
            .and_then(|image| image.registry.as_ref())
            .map(|pushed| registry::pinned_reference(&registry, name, &pushed.digest))
    };
    let Some(hub_image) = pushed("hub") else {
        return Err(UserError::new("images.lock records no push of the hub image", "run `cargo xtask push`").into());
    };
    let pair = tls.pair().map(|(cert, key)| (cert.to_path_buf(), key.to_path_buf()));
    if pair.is_some() {
        let Some(nginx_image) = pushed("nginx") else {
            return Err(
                UserError::new("images.lock records no push of the nginx image, which JHUB_TLS needs", "run `cargo xtask push`").into()
            );
        };
        // `nginx -t` on the manager, which runs nginx: it pulls the pinned image from the registry as the
        // deploy would.
        registry::pull(manager, &nginx_image).await?;
        tls.test_nginx_image(manager, &nginx_image).await?;
    }
    let view_text = view.write_atomically(&view_path())?;
    let view_digest = crate::context::sha256_hex(view_text.as_bytes());
    let project = settings.stack_name.clone();
    let mut compose = Compose::new(compose::detect_cli()?, &stack_dir().join("docker-compose.yml"), &project);
    compose = tls.apply(compose).with_overlay(&stack_dir().join("docker-compose.swarm.yml"));
    if pair.is_some() {
        compose = compose.with_overlay(&stack_dir().join("docker-compose.swarm-tls.yml"));
    }
    let merged = compose
        .with_env_file(env_file)
        .with_env("JHUB_HUB_IMAGE", &hub_image)
        .with_env("JHUB_HUB_VIEW", &view_path().to_string_lossy())
        .with_env("JHUB_CONFIG_DIGEST", &view_digest)
        .run(&["config", "--format", "json"])?;
    let merged: serde_json::Value = serde_json::from_str(&merged)?;
    let view_file = view_path();
    let mut files = vec![SwarmFile { name: "hub_view", target: HUB_VIEW_TARGET, source: &view_file, digest: &view_digest, secret: false }];
    let pair_digests = match &pair {
        Some((cert, key)) => Some((file_digest(cert)?, file_digest(key)?)),
        None => None,
    };
    if let (Some((cert, key)), Some((cert_digest, key_digest))) = (&pair, &pair_digests) {
        // The key goes to the hub's node as a secret: kept encrypted in the swarm's store, on the node
        // only in memory (tmpfs), readable by root in nginx's container alone.
        files.push(SwarmFile { name: "tls_cert", target: TLS_CERT_TARGET, source: cert, digest: cert_digest, secret: false });
        files.push(SwarmFile { name: "tls_key", target: TLS_KEY_TARGET, source: key, digest: key_digest, secret: true });
    }
    let stack = compose::swarm_stack(&merged, &files)?;
    // It holds the settings' secrets (ADMIN_PASSWORD): private, and gone after the deploy.
    let stack_file = stack_dir().join(".swarm-stack.json");
    jhub_docker::write_atomically(&stack_file, serde_json::to_string_pretty(&stack)?.as_bytes(), 0o600)?;
    ui::note(&format!("deploying the stack `{project}` on the swarm"));
    let output = Command::new("docker")
        .env("DOCKER_HOST", docker_host)
        .args(["stack", "deploy", "--prune", "--resolve-image", "never", "-c"])
        .arg(&stack_file)
        .arg(&project)
        .output();
    let _ = std::fs::remove_file(&stack_file);
    let output = output.map_err(|err| UserError::new(format!("cannot run the docker CLI: {err}"), "install it (Debian: docker.io)"))?;
    if !output.status.success() {
        return Err(UserError::new(
            format!("`docker stack deploy` failed: {}", String::from_utf8_lossy(&output.stderr).trim()),
            "run `cargo xtask doctor --swarm`",
        )
        .into());
    }
    let started = Instant::now();
    // Until every service runs a task of its new spec, the old hub still answers /hub/health (with its
    // old settings), so the checks below alone would say ready too early.
    wait_converged(manager, docker_host, &project).await?;
    let url = if pair.is_some() {
        wait_for_front(manager, &reach.http, docker_host, &project).await?;
        // The URL users open: the per-user origins' host, else the address this machine reached.
        match tls.url.as_deref() {
            Some(url) if !url.starts_with("https://localhost") => url.to_string(),
            _ => reach.https.clone(),
        }
    } else {
        wait_for_hub(&reach.http, docker_host, &project).await?;
        reach.http.clone()
    };
    println!("jhub-docker is up on the swarm at {url} (ready in {:.0} s)", started.elapsed().as_secs_f64());
    println!("admin login: user `admin`, password from ADMIN_PASSWORD in {}", env_file.display());
    Ok(())
}

fn file_digest(path: &Path) -> anyhow::Result<String> {
    let content = std::fs::read(path)
        .map_err(|err| UserError::new(format!("cannot read {}: {err}", path.display()), "check the file and its permissions"))?;
    Ok(crate::context::sha256_hex(&content))
}

/// Waits until each service of the stack has a running task (a swarm reports a task with a healthcheck
/// running only once healthy) whose image and environment are the service's current ones, and no update
/// in progress.
async fn wait_converged(manager: &Docker, docker_host: &str, project: &str) -> anyhow::Result<()> {
    let namespace = format!("com.docker.stack.namespace={project}");
    let filters = std::collections::HashMap::from([("label", vec![namespace.as_str()])]);
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let services = manager.list_services(Some(ListServicesOptionsBuilder::default().filters(&filters).build())).await?;
        let mut waiting = Vec::new();
        for service in &services {
            let name = service.spec.as_ref().and_then(|spec| spec.name.clone()).unwrap_or_default();
            let wanted =
                service.spec.as_ref().and_then(|spec| spec.task_template.as_ref()).and_then(|template| template.container_spec.as_ref());
            let updating = service.update_status.as_ref().and_then(|status| status.state).is_some_and(|state| {
                !matches!(
                    state,
                    bollard::models::ServiceUpdateStatusStateEnum::COMPLETED | bollard::models::ServiceUpdateStatusStateEnum::EMPTY
                )
            });
            let task_filters = std::collections::HashMap::from([("service", vec![name.as_str()]), ("desired-state", vec!["running"])]);
            let tasks = manager.list_tasks(Some(ListTasksOptionsBuilder::default().filters(&task_filters).build())).await?;
            let current = tasks.iter().any(|task| {
                let spec = task.spec.as_ref().and_then(|spec| spec.container_spec.as_ref());
                task.status.as_ref().and_then(|status| status.state) == Some(TaskState::RUNNING)
                    && spec.map(|spec| (&spec.image, &spec.env)) == wanted.map(|spec| (&spec.image, &spec.env))
            });
            if updating || !current {
                waiting.push(name);
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(UserError::new(
                format!("the swarm did not run the new spec of {} within {} s", waiting.join(", "), READY_LIMIT.as_secs()),
                format!("see `DOCKER_HOST={docker_host} docker service ps --no-trunc {}`", waiting[0]),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// With TLS on, the proxy's plain port is closed and nginx's port 80 only redirects: the stack is up when
/// the redirect answers and nginx's task runs, which a swarm reports only once its healthcheck (a request
/// for /hub/health through nginx, the proxy and the hub) passed.
async fn wait_for_front(manager: &Docker, http_url: &str, docker_host: &str, project: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).redirect(reqwest::redirect::Policy::none()).build()?;
    let health = format!("{http_url}/hub/health");
    let service = format!("{project}_nginx");
    let filters = std::collections::HashMap::from([("service", vec![service.as_str()]), ("desired-state", vec!["running"])]);
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let redirects = client.get(&health).send().await.is_ok_and(|response| response.status().as_u16() == 301);
        let tasks = manager.list_tasks(Some(ListTasksOptionsBuilder::default().filters(&filters).build())).await.unwrap_or_default();
        let healthy = tasks.iter().any(|task| task.status.as_ref().and_then(|status| status.state) == Some(TaskState::RUNNING));
        if redirects && healthy {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(UserError::new(
                format!("nginx did not become healthy (or {health} did not redirect to https) within {} s", READY_LIMIT.as_secs()),
                format!("see `DOCKER_HOST={docker_host} docker service ps --no-trunc {service}` and `docker service logs {service}`"),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_for_hub(url: &str, docker_host: &str, project: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let health = format!("{url}/hub/health");
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        if client.get(&health).send().await.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(UserError::new(
                format!("the hub did not answer at {health} within {} s", READY_LIMIT.as_secs()),
                format!(
                    "see `DOCKER_HOST={docker_host} docker service ps --no-trunc {project}_hub` and `docker service logs {project}_hub`"
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `cargo xtask up --swarm`: on the manager `DOCKER_HOST` names (or this host's engine), with the hub
/// reached at the hub node's address.
pub fn up_cli(env_file: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let manager = crate::engine::connect().await?;
        let docker_host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let settings = Settings::load(env_file)?;
        let https_port = settings.get("JHUB_HTTPS_PORT", "443");
        let reach = match settings.value("JHUB_CLUSTER_URL").filter(|url| !url.is_empty()) {
            // The test cluster (stack/cluster.env): its ports are published on this machine's loopback, where
            // the certificate's `localhost` is the name to use.
            Some(url) => Reach { http: url.to_string(), https: format!("https://localhost:{https_port}") },
            None => {
                let address = hub_node_address(&manager).await.unwrap_or_else(|| "127.0.0.1".into());
                Reach {
                    http: format!("http://{address}:{}", settings.get("JHUB_HTTP_PORT", "8000")),
                    https: format!("https://{address}:{https_port}"),
                }
            }
        };
        up(&manager, &docker_host, env_file, &reach).await
    })
}

async fn hub_node_address(manager: &Docker) -> Option<String> {
    let nodes = manager.list_nodes(None::<ListNodesOptions>).await.ok()?;
    nodes
        .into_iter()
        .find(|node| {
            node.spec
                .as_ref()
                .and_then(|spec| spec.labels.as_ref())
                .is_some_and(|labels| labels.get(HUB_NODE_LABEL).is_some_and(|v| v == "true"))
        })
        .and_then(|node| node.status.and_then(|status| status.addr))
}

/// `cargo xtask down --swarm`: removes the stack and every user server service of it; the volumes (the
/// hub's, the users' on their nodes) stay.
pub fn down_cli(env_file: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let manager = crate::engine::connect().await?;
        let settings = Settings::load(env_file)?;
        let project = settings.stack_name.clone();
        remove_user_services(&manager, &project).await?;
        let docker_host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let status = Command::new("docker").env("DOCKER_HOST", &docker_host).args(["stack", "rm", &project]).status()?;
        if !status.success() {
            return Err(UserError::new(format!("`docker stack rm {project}` failed"), "see its output above").into());
        }
        Ok(())
    })
}

/// Removes the services the hub's spawner made for this stack's users.
pub async fn remove_user_services(manager: &Docker, project: &str) -> anyhow::Result<usize> {
    let label = format!("{STACK_LABEL}={project}");
    let filters = std::collections::HashMap::from([("label", vec![label.as_str()])]);
    let services = manager.list_services(Some(ListServicesOptionsBuilder::default().filters(&filters).build())).await?;
    for service in &services {
        if let Some(id) = &service.id {
            manager.delete_service(id).await?;
        }
    }
    Ok(services.len())
}
