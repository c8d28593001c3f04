//! Where a stack's volumes live, for backup and restore: on one host, its engine; on a swarm, the hub's
//! data on the node labelled for the hub and each user's home on the node that holds it, every node's
//! engine reached through a socket (the test cluster's by default, `--node-engine NODE=unix://…` on real
//! machines), each with a helper image it has (the hub image the registry holds, pulled by digest).

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{Node, NodeState};
use bollard::query_parameters::{ListNodesOptions, ListServicesOptionsBuilder};
use jhub_docker::contract::{self, HUB_NODE_LABEL, STACK_LABEL};

use super::containers::helper_image;
use crate::stack_settings::Settings;
use crate::ui::UserError;
use crate::{cluster, move_home};

/// How a verb reaches a swarm's nodes (absent: the stack runs on one host).
#[derive(Debug, Clone, Default)]
pub struct SwarmAccess {
    /// `NODE=unix:///path/docker.sock` for nodes that are not the test cluster's.
    pub node_engines: Vec<String>,
    /// Restore only: the node that gets the homes whose node the swarm no longer has (or a single-host
    /// backup's homes, which name no node).
    pub homes_to: Option<String>,
}

/// One engine that holds volumes of the stack.
pub(super) struct NodeEngine {
    /// The node's hostname on a swarm; `None` on one host.
    pub(super) node: Option<String>,
    pub(super) docker: Docker,
    /// An image with python3 and tar this engine has, for the throwaway containers.
    pub(super) helper_image: String,
    /// Whether the hub's data volume lives here.
    pub(super) holds_hub: bool,
}

/// The engines of the stack: this host's, or one per node of the swarm whose manager `DOCKER_HOST` names
/// (`docker`, the engine `DOCKER_HOST` names, connected once by the caller).
pub(super) async fn engines(docker: &Docker, settings: &Settings, swarm: Option<&SwarmAccess>) -> anyhow::Result<Vec<NodeEngine>> {
    let Some(access) = swarm else {
        let helper_image = helper_image(docker).await?;
        return Ok(vec![NodeEngine { node: None, docker: docker.clone(), helper_image, holds_hub: true }]);
    };
    let nodes = swarm_nodes(docker).await?;
    let given = move_home::given_node_engines(&access.node_engines)?;
    let mut engines = Vec::new();
    for node in &nodes {
        let hostname = cluster::node_hostname(node);
        if node.status.as_ref().and_then(|status| status.state) != Some(NodeState::READY) {
            return Err(UserError::new(
                format!("node {hostname} is not ready, and the homes on it cannot be read or written"),
                "start its engine (or `cargo xtask move-home` its users elsewhere and `docker node rm` it), then run this again",
            )
            .into());
        }
        let engine = move_home::engine_of(given.get(hostname.as_str()).copied(), &hostname).await?;
        let labels = node.spec.as_ref().and_then(|spec| spec.labels.clone()).unwrap_or_default();
        engines.push(NodeEngine {
            holds_hub: labels.get(HUB_NODE_LABEL).is_some_and(|value| value == "true"),
            node: Some(hostname),
            helper_image: String::new(),
            docker: engine,
        });
    }
    let dockers: Vec<&Docker> = engines.iter().map(|engine| &engine.docker).collect();
    let helper = move_home::helper_image_on(settings, &dockers).await?;
    for engine in &mut engines {
        engine.helper_image = helper.clone();
    }
    if engines.iter().filter(|engine| engine.holds_hub).count() != 1 {
        return Err(UserError::new(
            format!("not exactly one node carries {HUB_NODE_LABEL}=true, so the hub's data has no one place"),
            "run `cargo xtask doctor --swarm`",
        )
        .into());
    }
    Ok(engines)
}

async fn swarm_nodes(manager: &Docker) -> anyhow::Result<Vec<Node>> {
    manager.list_nodes(None::<ListNodesOptions>).await.map_err(|err| {
        UserError::new(format!("cannot list the swarm's nodes: {err}"), "set DOCKER_HOST to a manager's engine, or leave out --swarm")
            .into()
    })
}

/// The homes of the swarm's users by their node labels: the node each home is pinned to (value `true`), and
/// the (user, node) pairs of homes set aside when their account was deleted (value `deleted`), each by
/// escaped name.
#[derive(Default)]
pub(super) struct HomeLabels {
    pub(super) pinned: HashMap<String, String>,
    pub(super) set_aside: Vec<(String, String)>,
}

pub(super) async fn home_labels(manager: &Docker, stack: &str) -> anyhow::Result<HomeLabels> {
    let prefix = contract::home_node_label(stack, "");
    let mut found = HomeLabels::default();
    for node in swarm_nodes(manager).await? {
        let hostname = cluster::node_hostname(&node);
        for (label, value) in node.spec.and_then(|spec| spec.labels).unwrap_or_default() {
            let Some(escaped) = label.strip_prefix(&prefix) else { continue };
            match value.as_str() {
                contract::HOME_PINNED => {
                    found.pinned.insert(escaped.to_string(), hostname.clone());
                }
                contract::HOME_DELETED => found.set_aside.push((escaped.to_string(), hostname.clone())),
                _ => {}
            }
        }
    }
    Ok(found)
}

/// Pins each restored home to the node it went to, and takes the pin off every other node.
pub(super) async fn pin_homes(manager: &Docker, stack: &str, homes: &[(String, String)]) -> anyhow::Result<()> {
    for node in swarm_nodes(manager).await? {
        let (Some(id), hostname) = (node.id.clone(), cluster::node_hostname(&node)) else { continue };
        for (escaped, home_node) in homes {
            let label = contract::home_node_label(stack, escaped);
            let value = node.spec.as_ref().and_then(|spec| spec.labels.as_ref()).and_then(|labels| labels.get(&label)).cloned();
            let pinned = value.as_deref() == Some(contract::HOME_PINNED);
            if *home_node == hostname && !pinned {
                cluster::set_node_label(manager, &id, &label, Some(contract::HOME_PINNED)).await?;
            } else if *home_node != hostname && pinned {
                // A home set aside for a deleted namesake keeps its label: it is another account's.
                cluster::set_node_label(manager, &id, &label, None).await?;
            }
        }
    }
    Ok(())
}

/// A restore writes under a stack that must not run: on a swarm, none of its services (the stack's and
/// the users' servers) may exist.
pub(super) async fn refuse_while_deployed(manager: &Docker, stack: &str) -> anyhow::Result<()> {
    for label in [format!("com.docker.stack.namespace={stack}"), format!("{STACK_LABEL}={stack}")] {
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let services = manager.list_services(Some(ListServicesOptionsBuilder::default().filters(&filters).build())).await?;
        if !services.is_empty() {
            return Err(UserError::new(
                format!("stack `{stack}` is deployed on this swarm ({} service(s)); a restore needs it removed", services.len()),
                "remove it with `cargo xtask down --swarm` (volumes stay), then run this again and `cargo xtask up --swarm`",
            )
            .into());
        }
    }
    Ok(())
}
