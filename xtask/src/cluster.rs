//! `cargo xtask cluster up | down`: a Docker Swarm of engine-in-container nodes on this one machine, for
//! the Swarm mode's tests and for trying it: real engines (images/node) on their own bridge network, joined
//! into one swarm, the registry started and filled, the lock's images pulled by digest on every node, and
//! the stack deployed as `cargo xtask up --swarm` deploys it on real machines.
//!
//! The host reaches each node's engine through a socket file (`/run/jhub-cluster/node-N/docker.sock`),
//! never through a TCP port, which a user's container could reach over the network.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, NodeSpec, PortBinding, SwarmInitRequest, SwarmJoinRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, UpdateNodeOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use jhub_docker::contract::{HUB_NODE_LABEL, PURPOSE_LABEL};
use jhub_docker::lock::Lock;

use crate::registry::{self, REGISTRY_PORT};
use crate::ui::{self, UserError};
use crate::{engine, swarm};

use jhub_docker::contract::{CLUSTER_NETWORK as NETWORK, CLUSTER_NODE_PURPOSE as PURPOSE, cluster_node_name, cluster_node_socket};
/// How long a node's engine may take to answer after its container starts.
const NODE_START_LIMIT: Duration = Duration::from_secs(90);

/// What `cluster up` builds.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    /// The loopback port the hub is published on (the proxy's port on the first node).
    pub http_port: u16,
    /// The loopback port nginx's https is published on, with JHUB_TLS on (the same port on the first node,
    /// so nginx's redirects name the port this machine uses).
    pub https_port: u16,
    /// Single-user images every node pulls at once; `None`: all of them.
    pub pull: Option<Vec<String>>,
}

/// A swarm node's hostname, as the manager reports it ("" when it reports none).
pub fn node_hostname(node: &bollard::models::Node) -> String {
    node.description.as_ref().and_then(|description| description.hostname.clone()).unwrap_or_default()
}

/// `DOCKER_HOST` for the first node (the manager): what the other verbs and the tests talk to.
pub fn manager_host() -> String {
    format!("unix://{}", cluster_node_socket(1).display())
}

/// The registry as every node reaches it (the first node's name on the cluster network).
pub fn registry_address() -> String {
    format!("{}:{REGISTRY_PORT}", cluster_node_name(1))
}

/// The cluster's settings file, written by `cluster up` (mode 600, git-ignored).
pub fn env_file() -> PathBuf {
    crate::stack::stack_dir().join("cluster.env")
}

/// Connects to node `index`'s engine through its socket.
pub async fn connect_node(index: usize) -> anyhow::Result<Docker> {
    let socket = cluster_node_socket(index);
    let docker = Docker::connect_with_unix(&socket.to_string_lossy(), 3600, API_DEFAULT_VERSION)?;
    Ok(docker.negotiate_version().await?)
}

pub fn up(options: Options) -> anyhow::Result<()> {
    if !(1..=9).contains(&options.nodes) {
        return Err(UserError::new(format!("--nodes {} is out of range", options.nodes), "give 1 to 9 nodes (3 is the tested size)").into());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(up_async(&options))
}

async fn up_async(options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let host = engine::connect().await?;
    let lock = Lock::load(&jhub_docker::lock_path(&jhub_docker::repo_root()))?;
    let node_image = lock
        .keyed_tag("node")
        .filter(|_| true)
        .ok_or_else(|| UserError::new("images.lock has no node image", "run `cargo xtask build-images node registry`"))?
        .to_string();
    if !engine::image_exists(&host, &node_image).await {
        return Err(UserError::new(
            format!("the node image {node_image} is not on this engine"),
            "run `cargo xtask build-images` (it builds the node and registry images too)",
        )
        .into());
    }
    ensure_network(&host).await?;
    for index in 1..=options.nodes {
        ensure_node(&host, &node_image, index, options).await?;
    }
    let mut nodes = Vec::new();
    for index in 1..=options.nodes {
        nodes.push(wait_for_node(index).await?);
    }
    form_swarm(&host, &nodes).await?;
    ui::note(&format!("swarm of {} node(s) ready in {:.0} s", nodes.len(), started.elapsed().as_secs_f64()));

    // The registry on the manager, published on the cluster network (for the nodes) and on this machine's
    // loopback (for the push: an engine trusts a loopback registry over plain HTTP without being told).
    registry::start(&nodes[0], &host, "0.0.0.0").await?;
    wait_for_registry(&host).await?;
    registry::push(&host, &format!("127.0.0.1:{REGISTRY_PORT}")).await?;

    let pulled = Instant::now();
    pull_on_nodes(&nodes, options.pull.as_deref()).await?;
    ui::note(&format!("images pulled by digest on every node in {:.0} s", pulled.elapsed().as_secs_f64()));

    write_env_file(options)?;
    let reach = swarm::Reach {
        http: format!("http://localhost:{}", options.http_port),
        https: format!("https://localhost:{}", options.https_port),
    };
    swarm::up(&nodes[0], &manager_host(), &env_file(), &reach).await?;
    println!("cluster of {} nodes up in {:.0} s", nodes.len(), started.elapsed().as_secs_f64());
    println!("  the other verbs reach its manager with: export DOCKER_HOST={}", manager_host());
    Ok(())
}

async fn ensure_network(host: &Docker) -> anyhow::Result<()> {
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([("name", vec![NETWORK])]);
    let found = host.list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filters).build())).await?;
    if found.iter().any(|network| network.name.as_deref() == Some(NETWORK)) {
        return Ok(());
    }
    host.create_network(NetworkCreateRequest {
        name: NETWORK.to_string(),
        driver: Some("bridge".to_string()),
        labels: Some([(PURPOSE_LABEL.to_string(), PURPOSE.to_string())].into()),
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// Creates (or starts) node `index`'s container: an engine with what FACTS says it needs here
/// (`--privileged` is refused on this machine kind: every capability but SYS_RESOURCE, no seccomp,
/// AppArmor or masked paths, /dev/net/tun for the overlay), its state in a volume.
async fn ensure_node(host: &Docker, image: &str, index: usize, options: &Options) -> anyhow::Result<()> {
    let name = cluster_node_name(index);
    if let Ok(existing) = host.inspect_container(&name, None).await {
        if !existing.state.and_then(|state| state.running).unwrap_or(false) {
            host.start_container(&name, None).await?;
        }
        return Ok(());
    }
    let socket_dir = cluster_node_socket(index).parent().expect("a socket has a folder").to_path_buf();
    std::fs::create_dir_all(&socket_dir).with_context(|| format!("creating {}", socket_dir.display()))?;
    let mut ports = HashMap::new();
    let mut exposed = Vec::new();
    if index == 1 {
        // The proxy (a host-mode port of the swarm service on this node; nginx's port 80 with TLS on),
        // nginx's https and the registry, for this machine only.
        let https = options.https_port;
        for (inner, outer) in [(8000, options.http_port), (https, https), (REGISTRY_PORT, REGISTRY_PORT)] {
            let port = format!("{inner}/tcp");
            exposed.push(port.clone());
            ports.insert(port, Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(outer.to_string()) }]));
        }
    }
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        hostname: Some(name.clone()),
        env: Some(vec![format!("JHUB_NODE_NAME={name}"), format!("JHUB_NODE_REGISTRY={}", registry_address())]),
        labels: Some([(PURPOSE_LABEL.to_string(), PURPOSE.to_string())].into()),
        exposed_ports: Some(exposed),
        host_config: Some(HostConfig {
            cap_add: Some(vec!["ALL".into()]),
            cap_drop: Some(vec!["SYS_RESOURCE".into()]),
            security_opt: Some(vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()]),
            // The CLI's `--security-opt systempaths=unconfined` is these two, sent by the client.
            masked_paths: Some(Vec::new()),
            readonly_paths: Some(Vec::new()),
            devices: Some(vec![bollard::models::DeviceMapping {
                path_on_host: Some("/dev/net/tun".into()),
                path_in_container: Some("/dev/net/tun".into()),
                cgroup_permissions: Some("rwm".into()),
            }]),
            binds: Some(vec![format!("{name}-engine:/var/lib/docker"), format!("{}:/run/jhub-node", socket_dir.display())]),
            network_mode: Some(NETWORK.to_string()),
            port_bindings: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    };
    host.create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body).await?;
    host.start_container(&name, None).await?;
    ui::note(&format!("{name}: started"));
    Ok(())
}

async fn wait_for_node(index: usize) -> anyhow::Result<Docker> {
    let deadline = Instant::now() + NODE_START_LIMIT;
    loop {
        if cluster_node_socket(index).exists()
            && let Ok(docker) = connect_node(index).await
            && docker.ping().await.is_ok()
        {
            return Ok(docker);
        }
        if Instant::now() > deadline {
            return Err(UserError::new(
                format!("the engine of {} did not answer within {} s", cluster_node_name(index), NODE_START_LIMIT.as_secs()),
                format!("see `docker logs {}`", cluster_node_name(index)),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The first node initialises the swarm (if it has none) and carries the hub's label; the others join it
/// as workers.
async fn form_swarm(host: &Docker, nodes: &[Docker]) -> anyhow::Result<()> {
    let manager = &nodes[0];
    let manager_addr = node_address(host, 1).await?;
    let info = manager.info().await?;
    let in_swarm =
        |info: &bollard::models::SystemInfo| info.swarm.as_ref().and_then(|swarm| swarm.node_id.clone()).is_some_and(|id| !id.is_empty());
    if !in_swarm(&info) {
        manager
            .init_swarm(SwarmInitRequest {
                listen_addr: Some("0.0.0.0:2377".into()),
                advertise_addr: Some(manager_addr.clone()),
                ..Default::default()
            })
            .await?;
    }
    let token = manager.inspect_swarm().await?.join_tokens.and_then(|tokens| tokens.worker).context("the swarm has no worker token")?;
    for (offset, worker) in nodes.iter().enumerate().skip(1) {
        if in_swarm(&worker.info().await?) {
            continue;
        }
        let address = node_address(host, offset + 1).await?;
        worker
            .join_swarm(SwarmJoinRequest {
                listen_addr: Some("0.0.0.0:2377".into()),
                advertise_addr: Some(address),
                remote_addrs: Some(vec![format!("{manager_addr}:2377")]),
                join_token: Some(token.clone()),
                ..Default::default()
            })
            .await?;
    }
    let node_id = manager.info().await?.swarm.and_then(|swarm| swarm.node_id).context("the manager has no node id")?;
    set_node_label(manager, &node_id, HUB_NODE_LABEL, Some("true")).await
}

/// Sets (`Some`) or removes (`None`) one label of a swarm node, through a manager.
pub async fn set_node_label(manager: &Docker, node_id: &str, key: &str, value: Option<&str>) -> anyhow::Result<()> {
    let node = manager.inspect_node(node_id).await?;
    let version = node.version.and_then(|version| version.index).context("a node without a version")?;
    let mut spec: NodeSpec = node.spec.unwrap_or_default();
    let mut labels = spec.labels.take().unwrap_or_default();
    match value {
        Some(value) => labels.insert(key.to_string(), value.to_string()),
        None => labels.remove(key),
    };
    spec.labels = Some(labels);
    manager.update_node(node_id, spec, UpdateNodeOptionsBuilder::default().version(version as i64).build()).await?;
    Ok(())
}

/// Node `index`'s address on the cluster network, as this machine's engine gave it.
async fn node_address(host: &Docker, index: usize) -> anyhow::Result<String> {
    let inspected = host.inspect_container(&cluster_node_name(index), None).await?;
    inspected
        .network_settings
        .and_then(|settings| settings.networks)
        .and_then(|networks| networks.get(NETWORK).and_then(|network| network.ip_address.clone()))
        .filter(|address| !address.is_empty())
        .with_context(|| format!("{} has no address on {NETWORK}", cluster_node_name(index)))
}

async fn wait_for_registry(host: &Docker) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("http://127.0.0.1:{REGISTRY_PORT}/v2/");
    let client = reqwest::Client::new();
    loop {
        if client.get(&url).send().await.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = host;
            return Err(UserError::new(
                format!("the registry did not answer at {url} within 60 s"),
                format!("see `DOCKER_HOST={} docker logs {}`", manager_host(), registry::REGISTRY_CONTAINER),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every node pulls, by digest, the hub image and the single-user images named in `pull` (all when None),
/// so a first spawn on any node does not wait for a download.
async fn pull_on_nodes(nodes: &[Docker], pull: Option<&[String]>) -> anyhow::Result<()> {
    let root = jhub_docker::repo_root();
    let catalog = jhub_docker::catalog::Catalog::load(&root)?;
    let lock = Lock::load(&jhub_docker::lock_path(&root))?;
    let mut names = vec!["hub".to_string()];
    for (entry, _) in catalog.single_user_images() {
        if pull.is_none_or(|wanted| wanted.contains(&entry.name)) {
            names.push(entry.name.clone());
        }
    }
    if let Some(wanted) = pull
        && let Some(unknown) = wanted.iter().find(|name| !names.contains(name))
    {
        return Err(UserError::new(
            format!("--pull names `{unknown}`, which is no single-user image"),
            "name images of images/catalog.toml",
        )
        .into());
    }
    for name in &names {
        let digest = lock.image.get(name).and_then(|image| image.registry.as_ref()).map(|pushed| pushed.digest.clone());
        let digest = digest.with_context(|| format!("images.lock records no push of `{name}`"))?;
        let reference = registry::pinned_reference(&registry_address(), name, &digest);
        for (index, node) in nodes.iter().enumerate() {
            let pulled = registry::pull(node, &reference).await.map_err(|err| {
                UserError::new(
                    format!("{}: {err:#}", cluster_node_name(index + 1)),
                    "run `cargo xtask cluster up` again (it keeps what the nodes have); `cargo xtask cluster down` starts afresh",
                )
            })?;
            if pulled {
                ui::note(&format!("{}: pulled {name}", cluster_node_name(index + 1)));
            }
        }
    }
    Ok(())
}

/// The cluster's stack settings: the Swarm mode with this cluster's registry, open signup (the hub is
/// published on this machine's loopback only), and a new admin password.
fn write_env_file(options: &Options) -> anyhow::Result<()> {
    let (http_port, https_port) = (options.http_port, options.https_port);
    let path = env_file();
    // A new password at every `cluster up`: the hub sets the admin's hash from it at each start.
    let password = crate::stack_settings::random_password();
    let text = format!(
        "# The test cluster's stack settings, written by `cargo xtask cluster up` (see .env.example for each).\n\
         JHUB_MODE=swarm\n\
         JHUB_REGISTRY={}\n\
         JHUB_STACK_NAME=jhub\n\
         JHUB_NETWORK=jupyterhub-net\n\
         # The proxy listens on port 8000 of the first node, which this machine publishes on 127.0.0.1:{http_port}.\n\
         JHUB_HTTP_PORT=8000\n\
         # With JHUB_TLS on (add it here, then `cargo xtask up --swarm --env-file stack/cluster.env`), nginx's\n\
         # https port, published by this machine on 127.0.0.1:{https_port}.\n\
         JHUB_HTTPS_PORT={https_port}\n\
         # Users' servers on the workers: the manager runs the hub, the proxy and the registry.\n\
         JHUB_SWARM_CONSTRAINTS=node.role==worker\n\
         OPEN_SIGNUP=true\n\
         ADMIN_PASSWORD={password}\n\
         # Where this machine reaches the hub (read by `cargo xtask bench --swarm`; the hub ignores it).\n\
         JHUB_CLUSTER_URL=http://127.0.0.1:{http_port}\n",
        registry_address()
    );
    jhub_docker::write_atomically(&path, text.as_bytes(), 0o600)?;
    Ok(())
}

pub fn down() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let host = engine::connect().await?;
        let filters: HashMap<&str, Vec<String>> = HashMap::from([("label", vec![format!("{PURPOSE_LABEL}={PURPOSE}")])]);
        let nodes = host.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build())).await?;
        for node in nodes {
            let name = node.names.and_then(|names| names.first().cloned()).unwrap_or_default();
            let name = name.trim_start_matches('/').to_string();
            host.remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build())).await?;
            let _ = host.remove_volume(&format!("{name}-engine"), Some(RemoveVolumeOptionsBuilder::default().force(true).build())).await;
            if let Some(index) = name.rsplit_once('-').and_then(|(_, index)| index.parse::<usize>().ok())
                && let Some(folder) = cluster_node_socket(index).parent()
            {
                let _ = std::fs::remove_dir_all(folder);
            }
            ui::note(&format!("{name}: removed, with its engine's state"));
        }
        let _ = host.remove_network(NETWORK).await;
        Ok(())
    })
}
