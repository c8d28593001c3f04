//! The Swarm mode's images on other engines: `cargo xtask push` (every locked image into the registry, each
//! digest recorded in images.lock), `cargo xtask load` (the air-gapped way: each image copied into another
//! engine through both engines' APIs), the registry container itself, and pulling by digest on a node.

use std::collections::BTreeMap;

use anyhow::Context;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ImportImageOptionsBuilder, PushImageOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use jhub_docker::catalog::Catalog;
use jhub_docker::contract::PURPOSE_LABEL;
use jhub_docker::lock::{Lock, Pushed};

use crate::engine;
use crate::ui::{self, UserError};

/// The registry's container on the engine that runs it (a manager), and its blobs' volume.
pub const REGISTRY_CONTAINER: &str = "jhub-registry";
const REGISTRY_VOLUME: &str = "jhub-registry-data";
/// The registry's port, inside its container and where it is published.
pub const REGISTRY_PORT: u16 = 5000;

/// Images nodes never run, so never pushed: the test cluster's machine itself and the test directory.
const NOT_PUSHED: [&str; 2] = ["node", "ldap"];

/// The repository an image has in the registry at `address`: `<address>/jhub/<name>`.
pub fn repository(address: &str, name: &str) -> String {
    format!("{address}/jhub/{name}")
}

/// What a node pulls and the hub spawns: the repository pinned by the recorded digest.
pub fn pinned_reference(address: &str, name: &str, digest: &str) -> String {
    format!("{}@{digest}", repository(address, name))
}

/// The digest in a push's last status line ("<tag>: digest: sha256:… size: 1234").
fn digest_of_status(status: &str) -> Option<String> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    (digest.starts_with("sha256:") && digest.len() == 71).then(|| digest.to_string())
}

/// Pushes every locked image (but the node's) from the engine `docker` to the registry at `address` (as
/// that engine reaches it) and records each digest in images.lock, written after every image so an
/// interrupted push keeps what it did. An image whose recorded push is of its current id and whose
/// manifest the registry still has is skipped.
pub async fn push(docker: &Docker, address: &str) -> anyhow::Result<()> {
    let root = jhub_docker::repo_root();
    let lock_path = jhub_docker::lock_path(&root);
    let catalog = Catalog::load(&root)?;
    let mut lock = Lock::load(&lock_path)?;
    let mut pushed = 0;
    for entry in catalog.images.iter().filter(|entry| !NOT_PUSHED.contains(&entry.name.as_str())) {
        let name = &entry.name;
        let Some(tag) = lock.keyed_tag(name).map(str::to_string) else {
            return Err(UserError::new(format!("images.lock has no image `{name}`"), "run `cargo xtask build-images`").into());
        };
        let Some(image_id) = engine::image_id(docker, &tag).await else {
            return Err(UserError::new(
                format!("image `{name}` ({tag}) is not on this engine, so it cannot be pushed"),
                "run `cargo xtask build-images` first",
            )
            .into());
        };
        let recorded = lock.image.get(name).and_then(|image| image.registry.clone());
        if let Some(recorded) = recorded.filter(|recorded| recorded.image_id == image_id)
            && registry_has(docker, &pinned_reference(address, name, &recorded.digest)).await
        {
            ui::note(&format!("{name}: already in the registry as {}", &recorded.digest[..19]));
            continue;
        }
        let short = tag.rsplit_once(':').map_or("latest", |(_, key)| key).to_string();
        let target = format!("{}:{short}", repository(address, name));
        engine::tag(docker, &image_id, &target).await?;
        ui::note(&format!("{name}: pushing to {target}"));
        let result = push_tag(docker, &repository(address, name), &short).await;
        // The registry's tag stays on the registry; on this engine it would only shadow the keyed tag.
        let _ = docker.remove_image(&target, Some(RemoveImageOptionsBuilder::default().noprune(true).build()), None).await;
        let digest = result.with_context(|| format!("pushing `{name}` to the registry at {address}"))?;
        lock.image.get_mut(name).expect("checked above").registry = Some(Pushed { image_id, digest: digest.clone() });
        lock.write_atomically(&lock_path)?;
        ui::note(&format!("{name}: pushed as {digest}"));
        pushed += 1;
    }
    ui::note(&format!("{pushed} image(s) pushed; images.lock records every digest"));
    Ok(())
}

async fn push_tag(docker: &Docker, repository: &str, tag: &str) -> anyhow::Result<String> {
    let mut stream = docker.push_image(repository, Some(PushImageOptionsBuilder::default().tag(tag).build()), None);
    let mut digest = None;
    while let Some(info) = stream.next().await {
        let info = info?;
        if let Some(error) = info.error_detail.and_then(|detail| detail.message) {
            return Err(UserError::new(
                format!("the registry refused the push: {error}"),
                "check that the registry runs (`cargo xtask doctor --swarm`) and that this engine trusts it",
            )
            .into());
        }
        if let Some(found) = info.status.as_deref().and_then(digest_of_status) {
            digest = Some(found);
        }
    }
    digest.ok_or_else(|| anyhow::anyhow!("the push of {repository}:{tag} ended without a digest"))
}

/// Whether the registry has the manifest `reference` pins, asked through the engine (which reaches the
/// registry as nodes do).
pub async fn registry_has(docker: &Docker, reference: &str) -> bool {
    docker.inspect_registry_image(reference, None).await.is_ok()
}

/// How often a pull is tried when its progress stream breaks off (the engine keeps the layers it has).
const PULL_ATTEMPTS: usize = 3;

/// Pulls `reference` (pinned by digest) into the engine `docker` unless it has it; returns whether it pulled.
/// An error the engine reports (the registry refused, no such manifest) ends it at once; a progress stream
/// that breaks off ("bytes remaining on stream", seen once in a few dozen cluster starts) is tried again,
/// and the engine goes on from the layers it already has.
pub async fn pull(docker: &Docker, reference: &str) -> anyhow::Result<bool> {
    if engine::image_exists(docker, reference).await {
        return Ok(false);
    }
    let mut attempt = 1;
    loop {
        let options = CreateImageOptionsBuilder::default().from_image(reference).build();
        let mut stream = docker.create_image(Some(options), None, None);
        let mut broken = None;
        while let Some(info) = stream.next().await {
            match info {
                Ok(info) => {
                    if let Some(error) = info.error_detail.and_then(|detail| detail.message) {
                        anyhow::bail!("pulling {reference}: {error}");
                    }
                }
                Err(err) => {
                    broken = Some(err);
                    break;
                }
            }
        }
        match broken {
            None => return Ok(true),
            Some(err) if attempt < PULL_ATTEMPTS => {
                ui::note(&format!("pulling {reference}: the engine's stream broke off ({err}); trying again"));
                attempt += 1;
            }
            Some(err) => anyhow::bail!("pulling {reference}: the engine's stream broke off {PULL_ATTEMPTS} times, last: {err}"),
        }
    }
}

/// Copies the image `reference` from the engine `from` into the engine `to` (a `docker save | docker load`
/// through both APIs, streamed), unless `to` has it. The tags travel with it.
pub async fn load_into(from: &Docker, to: &Docker, reference: &str) -> anyhow::Result<bool> {
    if engine::image_exists(to, reference).await {
        return Ok(false);
    }
    let tar = from.export_image(reference).map_err(std::io::Error::other);
    let mut stream = to.import_image_stream(ImportImageOptionsBuilder::default().quiet(true).build(), tar, None);
    while let Some(info) = stream.next().await {
        if let Some(error) = info?.error_detail.and_then(|detail| detail.message) {
            anyhow::bail!("loading {reference}: {error}");
        }
    }
    Ok(true)
}

/// `cargo xtask load`: the air-gapped way to a node without the registry: every locked image (but the
/// node's) copied from the engine `from` into each engine of `to`, by its keyed tag.
pub async fn load_locked(from: &Docker, to: &[(String, Docker)]) -> anyhow::Result<()> {
    let root = jhub_docker::repo_root();
    let catalog = Catalog::load(&root)?;
    let lock = Lock::load(&jhub_docker::lock_path(&root))?;
    for entry in catalog.images.iter().filter(|entry| !NOT_PUSHED.contains(&entry.name.as_str())) {
        let tag = lock.keyed_tag(&entry.name).context("images.lock lacks an image of the catalog")?;
        for (node, engine) in to {
            if load_into(from, engine, tag).await? {
                ui::note(&format!("{node}: loaded {tag}"));
            }
        }
    }
    Ok(())
}

/// Starts the registry on the engine `docker` (a manager): the locked registry image loaded from the engine
/// `images` if missing, its blobs in a named volume, port 5000 published on `bind_address`. Does nothing
/// when it runs already.
pub async fn start(docker: &Docker, images: &Docker, bind_address: &str) -> anyhow::Result<()> {
    let lock = Lock::load(&jhub_docker::lock_path(&jhub_docker::repo_root()))?;
    let tag = lock
        .keyed_tag("registry")
        .ok_or_else(|| UserError::new("images.lock has no registry image", "run `cargo xtask build-images registry`"))?
        .to_string();
    load_into(images, docker, &tag).await?;
    if let Ok(existing) = docker.inspect_container(REGISTRY_CONTAINER, None).await {
        if existing.state.and_then(|state| state.running).unwrap_or(false) {
            return Ok(());
        }
        docker.start_container(REGISTRY_CONTAINER, None).await?;
        return Ok(());
    }
    let port = format!("{REGISTRY_PORT}/tcp");
    let body = ContainerCreateBody {
        image: Some(tag),
        labels: Some([(PURPOSE_LABEL.to_string(), "registry".to_string())].into()),
        exposed_ports: Some(vec![port.clone()]),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{REGISTRY_VOLUME}:/var/lib/docker-registry")]),
            port_bindings: Some(
                BTreeMap::from([(
                    port,
                    Some(vec![PortBinding { host_ip: Some(bind_address.to_string()), host_port: Some(REGISTRY_PORT.to_string()) }]),
                )])
                .into_iter()
                .collect(),
            ),
            restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::ALWAYS), maximum_retry_count: None }),
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges:true".to_string()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker.create_container(Some(CreateContainerOptionsBuilder::default().name(REGISTRY_CONTAINER).build()), body).await?;
    docker.start_container(REGISTRY_CONTAINER, None).await?;
    Ok(())
}

/// `cargo xtask push --to ADDRESS`, from this machine's engine.
pub fn push_cli(address: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async { push(&engine::connect().await?, address).await })
}

/// `cargo xtask load ENGINE...`: every locked image from this machine's engine into each of `engines`.
pub fn load_cli(engines: &[String]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let from = engine::connect().await?;
        let mut targets = Vec::new();
        for address in engines {
            let Some(socket) = address.strip_prefix("unix://") else {
                return Err(UserError::new(
                    format!("engine `{address}` is not a unix:// socket"),
                    "give each engine as unix:///path/to/docker.sock (reach a remote one through an ssh-forwarded socket)",
                )
                .into());
            };
            let docker = bollard::Docker::connect_with_unix(socket, 3600, bollard::API_DEFAULT_VERSION)?;
            let docker = docker.negotiate_version().await.map_err(|err| {
                UserError::new(format!("cannot reach the engine at {address}: {err}"), "check that it runs and the socket is readable")
            })?;
            targets.push((address.clone(), docker));
        }
        load_locked(&from, &targets).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_read_from_the_push_status() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest_of_status(&format!("fdbd8f29a7c0: digest: {digest} size: 1234")), Some(digest.clone()));
        assert_eq!(digest_of_status("Pushed"), None);
        assert_eq!(digest_of_status("x: digest: sha256:short size: 1"), None);
    }

    #[test]
    fn references_pin_the_digest() {
        assert_eq!(repository("node-1:5000", "hub"), "node-1:5000/jhub/hub");
        assert_eq!(pinned_reference("node-1:5000", "hub", "sha256:ab"), "node-1:5000/jhub/hub@sha256:ab");
    }
}
