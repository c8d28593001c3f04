//! `bench --swarm`: the side of a run on the test cluster (`cargo xtask cluster up`): its hub's URL, its
//! engines (the manager for tasks, each node's for a server's CPU), and where each spawn landed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use anyhow::Context;
use bollard::Docker;
use bollard::models::TaskState;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListTasksOptionsBuilder};
use jhub_docker::contract::{self, STACK_LABEL, USER_LABEL};
use jhub_docker::settings::Settings;

use crate::ui::UserError;

pub struct SwarmSide {
    pub url: String,
    pub user_prefix: String,
    stack: String,
    manager: Docker,
    /// Each node's hostname and engine.
    nodes: Vec<(String, Docker)>,
    placements: Mutex<BTreeMap<String, usize>>,
}

impl SwarmSide {
    /// The running test cluster, as `cluster up` left its settings.
    pub async fn connect() -> anyhow::Result<SwarmSide> {
        let env_file = crate::cluster::env_file();
        let settings = Settings::load(&env_file).map_err(|_| {
            UserError::new(
                "no test cluster is up (stack/cluster.env is missing)",
                "start one with `cargo xtask cluster up`, then run this again",
            )
        })?;
        let url = settings.value("JHUB_CLUSTER_URL").context("stack/cluster.env has no JHUB_CLUSTER_URL")?.to_string();
        let mut nodes = Vec::new();
        for index in 1..=9 {
            if !contract::cluster_node_socket(index).exists() {
                break;
            }
            nodes.push((contract::cluster_node_name(index), crate::cluster::connect_node(index).await?));
        }
        let Some((_, manager)) = nodes.first().cloned() else {
            return Err(UserError::new("no node of the test cluster answers", "start it with `cargo xtask cluster up`").into());
        };
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() % 100_000;
        Ok(SwarmSide {
            url,
            user_prefix: format!("s{stamp}-"),
            stack: settings.stack_name.clone(),
            manager,
            nodes,
            placements: Mutex::new(BTreeMap::new()),
        })
    }

    /// Counts the node `user`'s running server is on.
    pub async fn count_placement(&self, user: &str) {
        let service = format!("{}-user-{}", self.stack, contract::escaped_user_name(user));
        let filters = HashMap::from([("service", vec![service.as_str()]), ("desired-state", vec!["running"])]);
        let Ok(tasks) = self.manager.list_tasks(Some(ListTasksOptionsBuilder::default().filters(&filters).build())).await else { return };
        let node_id = tasks
            .into_iter()
            .find(|task| task.status.as_ref().and_then(|status| status.state) == Some(TaskState::RUNNING))
            .and_then(|task| task.node_id);
        let hostname = match node_id {
            Some(id) => self.manager.inspect_node(&id).await.ok().and_then(|node| node.description.and_then(|d| d.hostname)),
            None => None,
        };
        *self.placements.lock().expect("no poisoned lock").entry(hostname.unwrap_or_else(|| "unknown".into())).or_default() += 1;
    }

    pub fn placements(&self) -> BTreeMap<String, usize> {
        self.placements.lock().expect("no poisoned lock").clone()
    }

    /// The engine running `user`'s server and its container's id.
    pub async fn user_container(&self, user: &str) -> anyhow::Result<(Docker, String)> {
        let labels = vec![format!("{STACK_LABEL}={}", self.stack), format!("{USER_LABEL}={user}")];
        let filters = HashMap::from([("label", labels)]);
        for (_, node) in &self.nodes {
            let found = node.list_containers(Some(ListContainersOptionsBuilder::default().filters(&filters).build())).await?;
            if let Some(id) = found.into_iter().find_map(|container| container.id) {
                return Ok((node.clone(), id));
            }
        }
        anyhow::bail!("no node runs a server of {user}")
    }
}
