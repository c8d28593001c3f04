//! `cargo xtask move-home USER --to NODE`: moves a user's home (a node-local named volume) to another node
//! of the swarm, through both engines' APIs: the volume streamed as a tar from a helper container on the
//! old node into a new volume (same name, same labels) on the new one, the trees' checksums compared
//! (`jhub_docker::tree_sum`), then the home label moved, then the old volume removed. Until the label
//! moves, the user's server starts where it always did; a failure removes the partial copy.

use std::collections::HashMap;

use anyhow::Context;
use bollard::Docker;
use bollard::models::{Node, NodeState, VolumeCreateRequest};
use bollard::query_parameters::{
    DownloadFromContainerOptions, ListContainersOptionsBuilder, ListNodesOptions, ListServicesOptionsBuilder, UploadToContainerOptions,
};
use futures_util::StreamExt;
use jhub_docker::contract::{self, STACK_LABEL, USER_LABEL};
use jhub_docker::lock::Lock;
use jhub_docker::settings::Settings;

use crate::backup::{create_helper, engine_failed, remove_container, run_helper_once};
use crate::ui::{self, UserError};
use crate::{cluster, registry};

/// What `move-home` is told.
pub struct Options {
    pub user: String,
    pub to: String,
    pub env_file: std::path::PathBuf,
    /// The engines of the two nodes, as DOCKER_HOST spells them; default: the test cluster's sockets.
    pub from_engine: Option<String>,
    pub to_engine: Option<String>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run_async(options))
}

async fn run_async(options: &Options) -> anyhow::Result<()> {
    let settings = Settings::load(&options.env_file)?;
    let (stack, prefix) = (settings.stack_name.clone(), settings.user_volume_prefix.clone());
    let manager = crate::engine::connect().await?;
    let escaped = contract::escaped_user_name(&options.user);
    let label = contract::home_node_label(&stack, &escaped);
    let volume = contract::user_volume_name(&prefix, &escaped);
    let nodes = manager.list_nodes(None::<ListNodesOptions>).await.context("listing the swarm's nodes (is DOCKER_HOST a manager?)")?;
    let labelled = |node: &&Node| {
        node.spec
            .as_ref()
            .and_then(|spec| spec.labels.as_ref())
            .is_some_and(|labels| labels.get(&label).is_some_and(|v| v == contract::HOME_PINNED))
    };
    let Some(from) = nodes.iter().find(labelled) else {
        return Err(UserError::new(
            format!("`{}` has no home on this swarm yet (no node carries {label})", options.user),
            "a home is made at the user's first start; there is nothing to move",
        )
        .into());
    };
    let Some(to) = nodes.iter().find(|node| cluster::node_hostname(node) == options.to || node.id.as_deref() == Some(options.to.as_str()))
    else {
        let names: Vec<String> = nodes.iter().map(cluster::node_hostname).collect();
        return Err(UserError::new(format!("no node `{}` in this swarm", options.to), format!("name one of: {}", names.join(", "))).into());
    };
    if from.id == to.id {
        return Err(
            UserError::new(format!("`{}`'s home is on {} already", options.user, cluster::node_hostname(to)), "name another node").into()
        );
    }
    for (node, role) in [(from, "holding the home"), (to, "to move it to")] {
        if node.status.as_ref().and_then(|status| status.state) != Some(NodeState::READY) {
            return Err(UserError::new(
                format!("node {} ({role}) is not ready", cluster::node_hostname(node)),
                "start its engine first: the files are read from and written to the nodes themselves",
            )
            .into());
        }
    }
    let filters = HashMap::from([("label", vec![format!("{STACK_LABEL}={stack}"), format!("{USER_LABEL}={}", options.user)])]);
    let services = manager.list_services(Some(ListServicesOptionsBuilder::default().filters(&filters).build())).await?;
    if !services.is_empty() {
        return Err(UserError::new(
            format!("`{}` has {} server(s) running; a home cannot move under a running server", options.user, services.len()),
            "stop them (admin page, or the user's home page), then run this again",
        )
        .into());
    }
    let source = engine_of(options.from_engine.as_deref(), &cluster::node_hostname(from)).await?;
    let target = engine_of(options.to_engine.as_deref(), &cluster::node_hostname(to)).await?;
    let filters = HashMap::from([("volume", vec![volume.clone()])]);
    let running = source.list_containers(Some(ListContainersOptionsBuilder::default().filters(&filters).build())).await?;
    if !running.is_empty() {
        let names: Vec<String> =
            running.into_iter().filter_map(|container| container.names.and_then(|names| names.first().cloned())).collect();
        return Err(UserError::new(
            format!("node {} runs containers using {volume}: {}", cluster::node_hostname(from), names.join(", ")),
            "stop them first: a home cannot move under a running program",
        )
        .into());
    }
    let helper = helper_image_on(&settings, &[&source, &target]).await?;
    let labels = source
        .inspect_volume(&volume)
        .await
        .map_err(|err| {
            UserError::new(
                format!("node {} has no volume {volume}: {err}", cluster::node_hostname(from)),
                "check the node's engine (`docker volume ls`)",
            )
        })?
        .labels;
    if target.inspect_volume(&volume).await.is_ok() {
        return Err(UserError::new(
            format!("node {} already has a volume {volume}; moving would mix two homes", cluster::node_hostname(to)),
            "look at it (an earlier move's copy?) and remove it by hand if it holds nothing needed",
        )
        .into());
    }
    target.create_volume(VolumeCreateRequest { name: Some(volume.clone()), labels: Some(labels), ..Default::default() }).await?;
    let copied = copy_and_compare(&source, &target, &helper, &volume).await;
    if let Err(err) = copied {
        let _ = target.remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
        return Err(err.context(format!(
            "moving {volume} from {} to {}; the home stays where it was",
            cluster::node_hostname(from),
            cluster::node_hostname(to)
        )));
    }
    let (from_id, to_id) = (from.id.clone().unwrap_or_default(), to.id.clone().unwrap_or_default());
    cluster::set_node_label(&manager, &to_id, &label, Some(contract::HOME_PINNED)).await?;
    cluster::set_node_label(&manager, &from_id, &label, None).await?;
    // The swarm keeps the stopped containers of a service's earlier tasks (a node that died and came
    // back still has its own); they hold the volume, and no server runs (checked above).
    for container in containers_using(&source, &volume).await? {
        source
            .remove_container(&container, None::<bollard::query_parameters::RemoveContainerOptions>)
            .await
            .map_err(|err| engine_failed(&format!("removing the stopped container {container}"), err))?;
    }
    source
        .remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
        .map_err(|err| engine_failed(&format!("removing the old copy of {volume}"), err))?;
    ui::note(&format!(
        "`{}`'s home moved from {} to {} (checksums equal); the next start runs there",
        options.user,
        cluster::node_hostname(from),
        cluster::node_hostname(to)
    ));
    Ok(())
}

/// The node engines an admin gave as `--node-engine NODE=ENGINE`, by node; a pair without `=` is refused.
pub(crate) fn given_node_engines(pairs: &[String]) -> Result<std::collections::HashMap<&str, &str>, UserError> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=').ok_or_else(|| {
                UserError::new(format!("--node-engine {pair} is not NODE=ENGINE"), "write it as NODE=unix:///path/docker.sock")
            })
        })
        .collect()
}

/// The engine of the node `hostname`: `given` (a unix:// socket), else the test cluster's socket for it.
pub(crate) async fn engine_of(given: Option<&str>, hostname: &str) -> anyhow::Result<Docker> {
    let socket = match given {
        Some(address) => address.strip_prefix("unix://").map(str::to_string),
        None => (1..=9)
            .find(|index| contract::cluster_node_name(*index) == hostname)
            .map(|index| contract::cluster_node_socket(index).to_string_lossy().into_owned()),
    };
    let Some(socket) = socket else {
        return Err(UserError::new(
            format!("no way to reach the engine of node {hostname}"),
            "give --from-engine/--to-engine as unix:///path/docker.sock (e.g. `ssh -L /tmp/n.sock:/var/run/docker.sock NODE`)",
        )
        .into());
    };
    let docker = Docker::connect_with_unix(&socket, 3600, bollard::API_DEFAULT_VERSION)?;
    docker.negotiate_version().await.with_context(|| format!("reaching the engine of node {hostname} at {socket}"))
}

/// An image with python3 that both engines have: the hub's, as the registry has it (nodes pull it).
pub(crate) async fn helper_image_on(settings: &Settings, engines: &[&Docker]) -> anyhow::Result<String> {
    let root = jhub_docker::repo_root();
    let lock = Lock::load(&jhub_docker::lock_path(&root))?;
    let registry_address = settings.value("JHUB_REGISTRY").filter(|value| !value.is_empty()).map(str::to_string);
    let pushed = lock.image.get("hub").and_then(|image| image.registry.clone());
    let (Some(address), Some(pushed)) = (registry_address, pushed) else {
        return Err(UserError::new("no pushed hub image to copy a home with", "run `cargo xtask push`").into());
    };
    let reference = registry::pinned_reference(&address, "hub", &pushed.digest);
    for engine in engines {
        registry::pull(engine, &reference).await?;
    }
    Ok(reference)
}

async fn copy_and_compare(source: &Docker, target: &Docker, helper: &str, volume: &str) -> anyhow::Result<()> {
    let reader = create_helper(source, helper, vec![format!("{volume}:/home-volume:ro")], &["true"], "move-home").await?;
    let writer = create_helper(target, helper, vec![format!("{volume}:/home-volume")], &["true"], "move-home").await?;
    let outcome = async {
        // The archive of `/home-volume/.`: its entries are the volume's, relative, owners and modes kept.
        let tar = source
            .download_from_container(&reader, Some(DownloadFromContainerOptions { path: "/home-volume/.".to_string() }))
            .map(|chunk| chunk.map_err(std::io::Error::other));
        let options = UploadToContainerOptions { path: "/home-volume".to_string(), ..Default::default() };
        target
            .upload_to_container(&writer, Some(options), bollard::body_try_stream(tar))
            .await
            .map_err(|err| engine_failed("writing the copy", err))?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    remove_container(source, &reader).await;
    remove_container(target, &writer).await;
    outcome?;
    // The archive carries the entries below the volume's root, not the root itself, which the new volume
    // got from the engine (root, 755): give it the original's owner and mode (a home is jovyan's, 700).
    let (code, root) = run_helper_once(
        source,
        helper,
        vec![format!("{volume}:/home-volume:ro")],
        &["stat", "-c", "%u:%g %a", "/home-volume"],
        "move-home-root",
    )
    .await?;
    let Some((owner, mode)) = root.trim().lines().last().and_then(|line| line.split_once(' ')).filter(|_| code == 0) else {
        anyhow::bail!("cannot read the owner and mode of {volume}: {root}");
    };
    let fix = format!("chown {owner} /home-volume && chmod {mode} /home-volume");
    let (code, output) =
        run_helper_once(target, helper, vec![format!("{volume}:/home-volume")], &["sh", "-c", &fix], "move-home-root").await?;
    if code != 0 {
        anyhow::bail!("cannot give the copy's root the owner {owner} and mode {mode}: {output}");
    }
    let (from_sum, to_sum) = (tree_sum(source, helper, volume).await?, tree_sum(target, helper, volume).await?);
    if from_sum != to_sum {
        anyhow::bail!("the copy's checksum {to_sum:?} differs from the original's {from_sum:?}");
    }
    Ok(())
}

/// The checksum of the volume's tree (`jhub_docker::tree_sum`), computed on the engine holding it.
async fn tree_sum(docker: &Docker, helper: &str, volume: &str) -> anyhow::Result<String> {
    let script = jhub_docker::tree_sum::print_tree_sum_script();
    let argv = ["python3", "-c", script.as_str(), "/home-volume"];
    let (code, output) = run_helper_once(docker, helper, vec![format!("{volume}:/home-volume:ro")], &argv, "move-home-sum").await?;
    let sum = output.trim().lines().last().unwrap_or_default().to_string();
    if code != 0 || sum.len() != 64 {
        anyhow::bail!("cannot take the checksum of {volume}: {output}");
    }
    Ok(sum)
}

/// The stopped containers on `docker` that mount `volume`.
async fn containers_using(docker: &Docker, volume: &str) -> anyhow::Result<Vec<String>> {
    let filters = HashMap::from([("volume", vec![volume.to_string()]), ("status", vec!["exited".into(), "created".into(), "dead".into()])]);
    let found = docker.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build())).await?;
    Ok(found.into_iter().filter_map(|container| container.id).collect())
}
