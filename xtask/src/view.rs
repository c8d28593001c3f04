//! The hub's resolved view, made for a stack: the catalog and the lock (validated once, here) with this
//! engine's id for each locked single-user image and the profiles fitted to its CPUs and memory, written
//! where the compose file mounts it.

use std::collections::BTreeMap;
use std::path::Path;

use bollard::Docker;
use jhub_docker::catalog::Catalog;
use jhub_docker::lock::Lock;
use jhub_docker::view::HubView;

use crate::engine;

/// Writes the view of the checkout at `root` to `path` and returns its text (whose digest tells compose
/// to recreate the hub when it changed).
pub async fn write(docker: &Docker, root: &Path, path: &Path) -> anyhow::Result<String> {
    Ok(resolve(docker, root).await?.write_atomically(path)?)
}

/// The view of the checkout at `root` on this engine: its ids, its CPUs and memory.
pub async fn resolve(docker: &Docker, root: &Path) -> anyhow::Result<HubView> {
    let catalog = Catalog::load(root)?;
    let lock = Lock::load(&jhub_docker::lock_path(root))?;
    let mut image_ids = BTreeMap::new();
    for (entry, _) in catalog.single_user_images() {
        let tag = lock.keyed_tag(&entry.name);
        if let Some(id) = match tag {
            Some(tag) => engine::image_id(docker, tag).await,
            None => None,
        } {
            image_ids.insert(entry.name.clone(), id);
        }
    }
    let mut view = HubView::resolve(&catalog, &lock, &image_ids)?;
    let info = docker.info().await?;
    let cpus = info.ncpu.unwrap_or_default() as f64;
    let memory = info.mem_total.unwrap_or_default().max(0) as u64;
    for warning in view.fit_to_engine(cpus, memory) {
        crate::ui::warn(&warning, "profiles are written for the machines a site runs on; edit images/catalog.toml to match this one");
    }
    Ok(view)
}
