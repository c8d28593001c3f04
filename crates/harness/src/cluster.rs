//! The test cluster, for the Swarm mode's tests: `cargo xtask cluster up` (engine-in-container nodes on
//! this machine, the registry filled, the stack deployed on a free loopback port) and `cluster down` on
//! drop, also when the test fails (`JHUB_ACCEPTANCE_KEEP=1` keeps it). Its engines are reached through the
//! nodes' socket files; the cluster's hub is a `HubAddress` like a compose stack's.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::models::{NodeState, TaskState};
use bollard::query_parameters::{ListNodesOptions, ListTasksOptionsBuilder};
use jhub_docker::contract;
use jhub_docker::settings::Settings;

use crate::cases::xtask;
use crate::stack::{HubAddress, free_port, keeps};
use crate::tls::Front;
use crate::wait;

pub struct Cluster {
    pub nodes: usize,
    pub port: u16,
    /// The loopback port of nginx's https on node 1, when the stack is deployed with JHUB_TLS on.
    pub https_port: u16,
    /// The engine of node 1, the manager (the hub, the proxy, the registry).
    pub manager: Docker,
    /// This machine's engine, which runs the nodes themselves.
    pub host: Docker,
    pub admin_password: String,
    pub stack: String,
    keep: bool,
}

impl HubAddress for Cluster {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// The cluster's hub behind its TLS front door (`Cluster::deploy` with JHUB_TLS on): nginx on node 1,
/// its https port published on this machine's loopback, a certificate naming localhost.
pub struct TlsCluster<'a> {
    pub front: &'a Front,
}

impl HubAddress for TlsCluster<'_> {
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.front.hub_authority())
    }
}

/// Connects to the engine behind a socket file.
pub async fn connect_socket(socket: &std::path::Path) -> Result<Docker> {
    let docker = Docker::connect_with_unix(&socket.to_string_lossy(), 600, bollard::API_DEFAULT_VERSION)?;
    Ok(docker.negotiate_version().await?)
}

impl Cluster {
    /// A fresh cluster of `nodes` (whatever an interrupted run left is removed first) whose nodes pull the
    /// single-user images `pull` before the deploy.
    pub async fn up(nodes: usize, pull: &[&str]) -> Result<Cluster> {
        let host = Docker::connect_with_local_defaults()?.negotiate_version().await.context("cannot reach this machine's Docker engine")?;
        let (removed, output) = xtask(&["cluster", "down"], &[])?;
        if !removed {
            bail!("`cargo xtask cluster down` (before the test) failed:\n{output}");
        }
        let (port, https_port) = (free_port()?, free_port()?);
        let (nodes_arg, port_arg, https_arg, pull_arg) = (nodes.to_string(), port.to_string(), https_port.to_string(), pull.join(","));
        let keep = keeps();
        // Made before `up` returns, so a failed start is torn down too.
        let mut cluster =
            Cluster { nodes, port, https_port, manager: host.clone(), host, admin_password: String::new(), stack: String::new(), keep };
        let (started, output) = xtask(
            &["cluster", "up", "--nodes", &nodes_arg, "--http-port", &port_arg, "--https-port", &https_arg, "--pull", &pull_arg],
            &[("DOCKER_HOST", "")],
        )?;
        if !started {
            bail!("`cargo xtask cluster up` failed:\n{output}");
        }
        let settings = Settings::load(&Cluster::env_file())?;
        cluster.admin_password = settings.value("ADMIN_PASSWORD").context("stack/cluster.env has no ADMIN_PASSWORD")?.to_string();
        cluster.stack = settings.stack_name.clone();
        cluster.manager = cluster.node(1).await?;
        Ok(cluster)
    }

    /// `DOCKER_HOST` for node 1, the manager: how `cargo xtask` run by a test reaches the swarm.
    pub fn manager_host() -> String {
        format!("unix://{}", contract::cluster_node_socket(1).display())
    }

    /// The cluster's stack settings, written by `cargo xtask cluster up`.
    pub fn env_file() -> std::path::PathBuf {
        jhub_docker::repo_root().join("stack/cluster.env")
    }

    /// `cargo xtask up --swarm --env-file env_file` on the cluster's manager: the stack deployed again
    /// with these settings (the cluster's own are stack/cluster.env).
    pub fn deploy(&self, env_file: &std::path::Path) -> Result<()> {
        let manager_host = Cluster::manager_host();
        let (deployed, output) = xtask(&["up", "--swarm", "--env-file", &env_file.to_string_lossy()], &[("DOCKER_HOST", &manager_host)])?;
        if !deployed {
            bail!("`cargo xtask up --swarm --env-file {}` failed:\n{output}", env_file.display());
        }
        Ok(())
    }

    /// The engine of node `index` (1-based).
    pub async fn node(&self, index: usize) -> Result<Docker> {
        connect_socket(&contract::cluster_node_socket(index))
            .await
            .with_context(|| format!("cannot reach {}", contract::cluster_node_name(index)))
    }

    /// Node `index`'s address on the cluster's own network (what the nodes reach each other, the registry
    /// and the swarm's control plane at).
    pub async fn node_address(&self, index: usize) -> Result<String> {
        let name = contract::cluster_node_name(index);
        let inspected = self.host.inspect_container(&name, None).await?;
        inspected
            .network_settings
            .and_then(|settings| settings.networks)
            .and_then(|mut networks| networks.remove(contract::CLUSTER_NETWORK))
            .and_then(|network| network.ip_address)
            .filter(|address| !address.is_empty())
            .with_context(|| format!("{name} has no address on {}", contract::CLUSTER_NETWORK))
    }

    /// The index of the node called `hostname`.
    pub fn index_of(&self, hostname: &str) -> Result<usize> {
        (1..=self.nodes).find(|index| contract::cluster_node_name(*index) == hostname).with_context(|| format!("no node {hostname}"))
    }

    /// The service of `user`'s default server, as the hub's swarm spawner names it.
    pub fn user_service(&self, user: &str) -> String {
        format!("{}-user-{}", self.stack, contract::escaped_user_name(user))
    }

    /// The node `user`'s server runs on (its running task's node), waiting for it to run.
    pub async fn server_node(&self, user: &str) -> Result<String> {
        let service = self.user_service(user);
        wait::until(&format!("a running task of {service}"), wait::DEFAULT, || async {
            let filters = std::collections::HashMap::from([("service", vec![service.as_str()]), ("desired-state", vec!["running"])]);
            let tasks = self.manager.list_tasks(Some(ListTasksOptionsBuilder::default().filters(&filters).build())).await?;
            let running = tasks.into_iter().find(|task| task.status.as_ref().and_then(|status| status.state) == Some(TaskState::RUNNING));
            let Some(node_id) = running.and_then(|task| task.node_id) else { return Ok(None) };
            let node = self.manager.inspect_node(&node_id).await?;
            Ok(node.description.and_then(|description| description.hostname))
        })
        .await
    }

    /// The node carrying `user`'s home label, if any.
    pub async fn home_node(&self, user: &str) -> Result<Option<String>> {
        let label = contract::home_node_label(&self.stack, &contract::escaped_user_name(user));
        let nodes = self.manager.list_nodes(None::<ListNodesOptions>).await?;
        let holding: Vec<String> = nodes
            .into_iter()
            .filter(|node| {
                node.spec
                    .as_ref()
                    .and_then(|spec| spec.labels.as_ref())
                    .is_some_and(|labels| labels.get(&label).is_some_and(|v| v == contract::HOME_PINNED))
            })
            .filter_map(|node| node.description.and_then(|description| description.hostname))
            .collect();
        match holding.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            several => bail!("{} nodes carry {label}: {several:?}; a home is on one node", several.len()),
        }
    }

    /// The value of `user`'s home label on the node `hostname` (`true` pins the home there, `deleted` marks
    /// the home of a deleted account set aside), if it carries one.
    pub async fn home_label_on(&self, user: &str, hostname: &str) -> Result<Option<String>> {
        let label = contract::home_node_label(&self.stack, &contract::escaped_user_name(user));
        let nodes = self.manager.list_nodes(None::<ListNodesOptions>).await?;
        let node = nodes
            .into_iter()
            .find(|node| node.description.as_ref().and_then(|description| description.hostname.as_deref()) == Some(hostname))
            .with_context(|| format!("no node {hostname}"))?;
        Ok(node.spec.and_then(|spec| spec.labels).and_then(|mut labels| labels.remove(&label)))
    }

    /// Takes `user`'s home label off every node that carries it (as a swarm rebuilt from scratch would
    /// have none), so a test can see who sets it again.
    pub async fn unpin_home(&self, user: &str) -> Result<()> {
        let label = contract::home_node_label(&self.stack, &contract::escaped_user_name(user));
        for node in self.manager.list_nodes(None::<ListNodesOptions>).await? {
            let Some(mut spec) = node.spec else { continue };
            let Some(labels) = spec.labels.as_mut().filter(|labels| labels.contains_key(&label)) else { continue };
            labels.remove(&label);
            let (id, version) = (
                node.id.context("a node without an id")?,
                node.version.and_then(|version| version.index).context("a node without a version")?,
            );
            let options = bollard::query_parameters::UpdateNodeOptionsBuilder::default().version(version as i64).build();
            self.manager.update_node(&id, spec, options).await?;
        }
        Ok(())
    }

    /// Waits until node `index`'s engine holds no container of the stack (its services', its users'
    /// servers') and removes what stays stopped: a swarm keeps a removed task's container a while, and it
    /// holds its volumes.
    pub async fn clear_stack_containers(&self, index: usize) -> Result<()> {
        let node = self.node(index).await?;
        for label in [format!("com.docker.stack.namespace={}", self.stack), format!("{}={}", contract::STACK_LABEL, self.stack)] {
            let labels = [label];
            wait::until(&format!("the stack's containers on {} to stop", contract::cluster_node_name(index)), wait::APP, || async {
                Ok(crate::docker::containers_with_labels(&node, &labels, false).await?.is_empty().then_some(()))
            })
            .await?;
            for container in crate::docker::containers_with_labels(&node, &labels, true).await? {
                let Some(id) = container.id else { continue };
                node.remove_container(&id, Some(bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build()))
                    .await?;
            }
        }
        Ok(())
    }

    /// Waits until the manager sees node `index` in `state` (a killed node is `down` after the swarm's
    /// heartbeats stop; a restarted one `ready` again).
    pub async fn wait_node_state(&self, index: usize, state: NodeState, timeout: Duration) -> Result<()> {
        let hostname = contract::cluster_node_name(index);
        wait::until(&format!("{hostname} to be {state:?}"), timeout, || async {
            let nodes = self.manager.list_nodes(None::<ListNodesOptions>).await?;
            let found =
                nodes.into_iter().find(|node| node.description.as_ref().and_then(|d| d.hostname.as_deref()) == Some(hostname.as_str()));
            Ok(found.and_then(|node| node.status.and_then(|status| status.state)).filter(|seen| *seen == state).map(|_| ()))
        })
        .await
    }

    /// Kills node `index`'s container: its engine and every container on it stop at once, as a machine
    /// that loses power.
    pub async fn kill_node(&self, index: usize) -> Result<()> {
        self.host.kill_container(&contract::cluster_node_name(index), None::<bollard::query_parameters::KillContainerOptions>).await?;
        Ok(())
    }

    /// Starts node `index`'s container again and waits for its engine.
    pub async fn restart_node(&self, index: usize) -> Result<Docker> {
        self.host.start_container(&contract::cluster_node_name(index), None::<bollard::query_parameters::StartContainerOptions>).await?;
        wait::until(&format!("the engine of {}", contract::cluster_node_name(index)), wait::APP, || async {
            match self.node(index).await {
                Ok(docker) if docker.ping().await.is_ok() => Ok(Some(docker)),
                _ => Ok(None),
            }
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            crate::progress!("JHUB_ACCEPTANCE_KEEP: the cluster stays up at {}; `cargo xtask cluster down` removes it", self.url(""));
            return;
        }
        match xtask(&["cluster", "down"], &[]) {
            Ok((true, _)) => {}
            Ok((false, output)) => crate::progress!("`cargo xtask cluster down` failed:\n{output}"),
            Err(err) => crate::progress!("cannot run `cargo xtask cluster down`: {err:#}"),
        }
    }
}
