//! `cargo xtask build-images`: builds every catalog image (or the named ones and their parents), parents
//! first and two at a time, skips those whose content key matches the lock and whose image exists, runs
//! each image's smoke checks, and records the result in `images.lock`, written atomically after every image
//! that succeeds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use jhub_docker::catalog::{Catalog, ImageEntry, Recipe};
use jhub_docker::lock::{Lock, LockedImage};
use tokio::io::AsyncWriteExt;

use crate::base::{self, BaseSpec};
use crate::checks::Checks;
use crate::context::{BUILD_CA_NAME, ContentKey, Context};
use crate::ui::{self, MultiProgress, ProgressBar, UserError};
use crate::{engine, pin};

/// What `build-images` was asked for (parsed in main.rs).
pub struct Options {
    /// Catalog images to build with their parents; empty for every image.
    pub selection: Vec<String>,
    pub locked: bool,
    pub ca_bundle: PathBuf,
}

/// How one image fared, for the summary table.
struct Outcome {
    name: String,
    status: &'static str,
    size: u64,
    image_id: String,
    seconds: f64,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let outcomes = runtime.block_on(build_images(&jhub_docker::repo_root(), &options))?;
    print_summary(&outcomes);
    Ok(())
}

async fn build_images(root: &Path, options: &Options) -> anyhow::Result<Vec<Outcome>> {
    let catalog = Catalog::load(root)?;
    let images = catalog.with_ancestors(&options.selection)?;
    let lock_path = jhub_docker::lock_path(root);
    let mut lock = if options.locked { Lock::load(&lock_path)? } else { Lock::load_for_rebuild(&lock_path)? };
    if options.locked {
        check_locked(root, &catalog, &images, &lock)?;
    }
    let ca_bundle = std::fs::read(&options.ca_bundle).map_err(|err| {
        UserError::new(
            format!("cannot read the build CA bundle {}: {err}", options.ca_bundle.display()),
            "pass --ca-bundle FILE or set JHUB_CA_BUNDLE to the CA bundle your HTTPS proxy needs (any PEM bundle)",
        )
    })?;
    let docker = engine::connect().await?;
    let logs_dir = root.join("target").join("xtask-logs");
    std::fs::create_dir_all(&logs_dir)?;

    let progress = MultiProgress::new();
    let bars: HashMap<&str, ProgressBar> = images.iter().map(|image| (image.name.as_str(), new_bar(&progress, &image.name))).collect();
    let mut outcomes = Vec::new();
    // What this run resolved per image: children chain their parent's key and build FROM its image id.
    let mut resolved: HashMap<String, Resolved> = HashMap::new();
    // Images wait here, in catalog order, until their parent is resolved; then up to PARALLEL_BUILDS run
    // at once. Each build reads a snapshot of the lock; the lock itself is updated and written here, one
    // finished image at a time, so it is never written by two builds at once.
    let mut waiting: Vec<&ImageEntry> = images.clone();
    let waited_for: HashMap<&str, usize> =
        images.iter().map(|image| (image.name.as_str(), descendants(&images, &catalog, &image.name))).collect();
    let mut running = FuturesUnordered::new();
    let mut first_error: Option<anyhow::Error> = None;
    loop {
        while first_error.is_none() && running.len() < PARALLEL_BUILDS {
            // Of the images whose inputs (parent, used images) are ready, the one most others wait for goes
            // first (code-server before hub): the longest chain sets the whole build's length.
            let ready = waiting.iter().enumerate().filter(|(_, image)| image.inputs().all(|input| resolved.contains_key(input)));
            let Some(position) =
                ready.min_by_key(|(index, image)| (std::cmp::Reverse(waited_for[image.name.as_str()]), *index)).map(|(index, _)| index)
            else {
                break;
            };
            let image = waiting.remove(position);
            let parent = image.parent().map(|parent| resolved[parent].clone());
            let used: Vec<(String, Resolved)> = image.uses.iter().map(|used| (used.clone(), resolved[used].clone())).collect();
            let snapshot = lock.clone();
            let (docker, catalog, ca_bundle, bar) = (&docker, &catalog, ca_bundle.as_slice(), &bars[image.name.as_str()]);
            let log = logs_dir.join(format!("{}.log", image.name));
            running.push(async move {
                let started = Instant::now();
                let inputs = Inputs { parent: parent.as_ref(), used: &used };
                let result = build_one(docker, root, catalog, image, inputs, &snapshot, ca_bundle, &log, bar).await;
                (image, started.elapsed().as_secs_f64(), log, result)
            });
        }
        let Some((image, seconds, log, result)) = running.next().await else { break };
        let bar = &bars[image.name.as_str()];
        match result {
            Ok(built) => {
                let status = built.status;
                bar.finish_with_message(format!("{status} in {seconds:.0} s ({})", ui::human_size(built.size)));
                ui::say(bar, &format!("{}: {status} in {seconds:.0} s", image.name));
                outcomes.push(Outcome { name: image.name.clone(), status, size: built.size, image_id: built.image_id.clone(), seconds });
                resolved.insert(image.name.clone(), Resolved { key: built.entry.content_key.clone(), image_id: built.image_id });
                if lock.image.get(&image.name) == Some(&built.entry) {
                    continue; // Same inputs, same record: the committed lock stays byte-identical.
                }
                let superseded = lock.image.insert(image.name.clone(), built.entry);
                write_lock(&lock, &lock_path)?;
                if let Some(old_tag) = superseded
                    .as_ref()
                    .and_then(LockedImage::keyed_tag)
                    .filter(|tag| !lock.image[&image.name].tags.iter().any(|new| new == tag))
                {
                    // The image the lock no longer names goes with its tag, unless something still uses it
                    // (a container, a child image): then the engine refuses and it stays.
                    let _ = docker.remove_image(old_tag, None::<bollard::query_parameters::RemoveImageOptions>, None).await;
                }
            }
            Err(err) => {
                bar.abandon_with_message("failed");
                print_log_tail(&log);
                // Nothing new starts; a build already running finishes (and is recorded if it succeeds),
                // so its work is not thrown away. The first failure is the one reported.
                // The intermediate images a failed classic build leaves are kept on purpose: they are the
                // cache that makes the retry fast, and pruning dangling images engine-wide would pull the
                // parents from under any other build running at the same time.
                first_error.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first_error {
        for other in bars.values().filter(|other| !other.is_finished()) {
            other.abandon_with_message("not built");
        }
        return Err(err);
    }
    // The summary lists images in catalog order, whichever finished first.
    outcomes.sort_by_key(|outcome| images.iter().position(|image| image.name == outcome.name));
    if options.selection.is_empty() && lock.image.keys().any(|name| catalog.get(name).is_none()) {
        // Images that left the catalog leave the lock; the hub must not be offered them.
        lock.image.retain(|name, _| catalog.get(name).is_some());
        write_lock(&lock, &lock_path)?;
    }
    Ok(outcomes)
}

/// How many images build at once. Two, for the 2-core machines this runs on: a cold build's long steps
/// alternate between the CPU (code-server's native modules, pip's bytecode) and the network or disk
/// (downloads, apt, layer commits), so a second build fills the gaps (a cold build of every image took
/// about 12 minutes one at a time); more would only contend for the same two cores.
const PARALLEL_BUILDS: usize = 2;

/// An image this run has ready: its content key and this engine's id for it.
#[derive(Clone)]
struct Resolved {
    key: String,
    image_id: String,
}

/// What one build starts from: the parent this run resolved, and each image it uses by name.
#[derive(Clone, Copy)]
struct Inputs<'a> {
    parent: Option<&'a Resolved>,
    used: &'a [(String, Resolved)],
}

impl Inputs<'_> {
    /// What the content key chains: the parent's key, and for each used image its name and key (nothing
    /// more when it uses none, so the keys of images without `uses` are what they always were).
    fn key_material(&self) -> String {
        let mut material = self.parent.map_or(String::new(), |parent| parent.key.clone());
        for (name, used) in self.used {
            material.push_str(&format!("\nuses {name}={}", used.key));
        }
        material
    }
}

/// How many of `images` build on `name` (FROM it or using it), directly or through other images.
fn descendants(images: &[&ImageEntry], catalog: &Catalog, name: &str) -> usize {
    images
        .iter()
        .filter(|image| {
            let mut pending: Vec<&str> = image.inputs().collect();
            while let Some(input) = pending.pop() {
                if input == name {
                    return true;
                }
                pending.extend(catalog.get(input).into_iter().flat_map(ImageEntry::inputs));
            }
            false
        })
        .count()
}

/// One image made ready: its lock entry, this engine's id and size for it, and what it took.
struct Built {
    status: &'static str,
    entry: LockedImage,
    image_id: String,
    size: u64,
}

fn write_lock(lock: &Lock, lock_path: &Path) -> Result<(), UserError> {
    lock.write_atomically(lock_path)
        .map_err(|err| UserError::new(format!("cannot write {}: {err}", lock_path.display()), "check that the checkout is writable"))
}

/// Builds (or finds) one image and returns its lock entry and id. An image is found when the engine
/// has its content-keyed tag: same key, same inputs, whoever built it. Whatever the lock records for an
/// unchanged key (versions, Debian packages, rootfs hash) stays as recorded, so a newcomer's first build
/// does not rewrite the committed lock; a rebuild whose versions differ (Debian's archive moved on) is
/// reported, not recorded.
#[allow(clippy::too_many_arguments)]
async fn build_one(
    docker: &Docker,
    root: &Path,
    catalog: &Catalog,
    image: &ImageEntry,
    inputs: Inputs<'_>,
    lock: &Lock,
    ca_bundle: &[u8],
    log: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<Built> {
    let folder = image.folder_path(root);
    let context = Context::read(&image.name, &folder)?;
    let (checks, checks_sha256) = Checks::for_image(catalog, image, root)?;
    // The log speaks of this run only: a failure never shows the tail of an earlier one.
    std::fs::File::create(log)
        .map_err(|err| UserError::new(format!("cannot write {}: {err}", log.display()), "check that target/ is writable"))?;
    let context_tar = context.tar();
    let key = ContentKey::of(&context_tar, &inputs.key_material());
    let keyed_tag = format!("jhub/{}:{}", image.name, key.short());
    let latest_tag = format!("jhub/{}:latest", image.name);
    let recorded = lock.image.get(&image.name).filter(|recorded| recorded.content_key == key.as_str());

    let found = engine::image_id(docker, &keyed_tag).await;
    let built_now = found.is_none();
    let mut rootfs_sha256 = String::new();
    let image_id = match found {
        Some(id) => id,
        None => match &image.recipe {
            Recipe::Mmdebstrap => {
                bar.set_message("bootstrapping with mmdebstrap");
                ui::say(bar, &format!("{}: bootstrapping a Debian rootfs with mmdebstrap (log: {})", image.name, log.display()));
                let spec = BaseSpec::load(&image.name, &folder)?;
                let work_dir = root.join("target").join("xtask-work");
                let made = base::bootstrap(docker, &image.name, &spec, &work_dir, log, &keyed_tag).await?;
                rootfs_sha256 = made.rootfs_sha256;
                made.image_id
            }
            Recipe::Dockerfile { dockerfile, parent: parent_name } => {
                // FROM the parent's image id, not a tag: the build uses exactly the parent this run
                // resolved, whatever another checkout sharing this engine tags meanwhile.
                let parent_id = inputs.parent.map_or("", |parent| parent.image_id.as_str());
                ui::say(bar, &format!("{}: building FROM {parent_name} {parent_id} (log: {})", image.name, log.display()));
                let upload = context.tar_with(&[(BUILD_CA_NAME, ca_bundle)]);
                let mut build_args = HashMap::from([("BASE_IMAGE".to_string(), parent_id.to_string())]);
                build_args.extend(inputs.used.iter().map(|(name, used)| (ImageEntry::build_arg_for(name), used.image_id.clone())));
                build_dockerfile(docker, &image.name, dockerfile, &build_args, &keyed_tag, upload, log, bar).await?
            }
        },
    };
    let mut entry = recorded.cloned().unwrap_or_else(|| LockedImage { content_key: key.as_str().to_string(), ..LockedImage::default() });
    entry.files = context.file_hashes();
    if built_now {
        // A push records the id it pushed; this build is another image, to be pushed again.
        entry.registry = None;
    }
    let needs_checks = built_now || entry.checks_sha256 != checks_sha256;
    if needs_checks {
        let total = checks.count();
        let mut done = 0;
        checks
            .run(docker, &image.name, &image_id, log, |name| {
                done += 1;
                bar.set_message(format!("check {done}/{total}: {name}"));
            })
            .await?;
        bar.set_message("reading versions");
        let versions = checks.versions(docker, &image.name, &image_id).await?;
        let packages = if image.recipe == Recipe::Mmdebstrap {
            base::package_versions(docker, &image_id)
                .await
                .map_err(|err| engine::engine_error(&image.name, "listing Debian packages", err))?
        } else {
            BTreeMap::new()
        };
        let keeps_record = recorded.is_some_and(|recorded| recorded.checks_sha256 == checks_sha256);
        if keeps_record {
            if entry.versions != versions || entry.packages != packages {
                ui::note(&format!(
                    "{}: rebuilt from the inputs images.lock records, with other component versions (Debian's archive moved on); \
                     the lock keeps the recorded ones",
                    image.name
                ));
            }
        } else {
            entry.versions = versions;
            entry.packages = packages;
            if built_now {
                entry.rootfs_sha256 = rootfs_sha256;
            }
        }
        entry.checks_sha256 = checks_sha256;
    }
    // `latest` only ever names an image that passed its checks.
    engine::tag(docker, &image_id, &latest_tag)
        .await
        .map_err(|err| engine::engine_error(&image.name, &format!("tagging {latest_tag}"), err))?;
    entry.tags = vec![keyed_tag, latest_tag];
    let inspected = docker.inspect_image(&image_id).await.map_err(|err| engine::engine_error(&image.name, "inspecting the image", err))?;
    let size = inspected.size.unwrap_or_default().max(0) as u64;
    let status = match (built_now, needs_checks) {
        (true, _) => "built",
        (false, true) => "cached, checked",
        (false, false) => "cached",
    };
    Ok(Built { status, entry, image_id, size })
}

/// Runs a classic-builder build of `upload` and returns the image id. The full output goes to `log`.
#[allow(clippy::too_many_arguments)]
async fn build_dockerfile(
    docker: &Docker,
    image_name: &str,
    dockerfile: &str,
    build_args: &HashMap<String, String>,
    tag: &str,
    upload: Vec<u8>,
    log: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<String> {
    let options = BuildImageOptionsBuilder::default().dockerfile(dockerfile).t(tag).rm(true).forcerm(true).buildargs(build_args).build();
    let mut log_file = tokio::fs::OpenOptions::new().append(true).create(true).open(log).await?;
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(upload.into())));
    let mut image_id = None;
    while let Some(info) = stream.next().await {
        let info = match info {
            Ok(info) => info,
            Err(err) => {
                log_file.write_all(format!("error: {err}\n").as_bytes()).await?;
                log_file.flush().await?;
                let cause = err.to_string();
                let cause = cause.lines().next().unwrap_or_default();
                return Err(UserError::new(
                    format!("image `{image_name}`: build failed: {cause}"),
                    format!("the full log is {}; a hash mismatch or an unreachable package is named there", log.display()),
                )
                .into());
            }
        };
        if let Some(text) = info.stream.as_deref() {
            log_file.write_all(text.as_bytes()).await?;
            let line = text.trim();
            if line.starts_with("Step ") {
                let short: String = line.chars().take(110).collect();
                bar.set_message(short.clone());
                ui::say(bar, &format!("{image_name}: {short}"));
            }
        }
        if let Some(status) = info.status.as_deref() {
            log_file.write_all(format!("{status}\n").as_bytes()).await?;
        }
        if let Some(id) = info.aux.and_then(|aux| aux.id) {
            image_id = Some(id);
        }
    }
    log_file.flush().await?;
    let image_id = match image_id {
        Some(id) => id,
        None => docker.inspect_image(tag).await?.id.unwrap_or_default(),
    };
    anyhow::ensure!(!image_id.is_empty(), "image `{image_name}`: the engine reported no image id");
    Ok(image_id)
}

/// `--locked`: the folders and pinned inputs must be exactly what the lock recorded. Image ids may still
/// change (an engine that lacks an image builds it anew), but the inputs may not.
fn check_locked(root: &Path, catalog: &Catalog, images: &[&ImageEntry], lock: &Lock) -> Result<(), UserError> {
    let mut drift = Vec::new();
    for image in images {
        let Some(locked) = lock.image.get(&image.name) else {
            drift.push(format!("{}: not in images.lock", image.name));
            continue;
        };
        let current = Context::read(&image.name, &image.folder_path(root))?.file_hashes();
        drift.extend(describe_file_drift(&image.name, &locked.files, &current));
    }
    drift.extend(pin::stale_inputs(root, catalog, lock)?);
    if drift.is_empty() {
        return Ok(());
    }
    let hint = if drift.iter().any(|line| line.contains("cargo xtask lock")) {
        "run `cargo xtask lock`, then `cargo xtask build-images`, and commit images.lock"
    } else {
        "run `cargo xtask build-images` without --locked and commit images.lock"
    };
    Err(UserError::new(format!("images.lock is out of date: {}", drift.join("; ")), hint))
}

fn describe_file_drift(image_name: &str, locked: &BTreeMap<String, String>, current: &BTreeMap<String, String>) -> Vec<String> {
    let mut changes = Vec::new();
    for (path, hash) in current {
        match locked.get(path) {
            None => changes.push(format!("{image_name}: {path} added")),
            Some(locked_hash) if locked_hash != hash => changes.push(format!("{image_name}: {path} changed")),
            Some(_) => {}
        }
    }
    changes.extend(locked.keys().filter(|path| !current.contains_key(*path)).map(|path| format!("{image_name}: {path} removed")));
    changes
}

fn new_bar(progress: &MultiProgress, name: &str) -> ProgressBar {
    let bar = ui::spinner(progress, name);
    bar.set_message("waiting");
    bar
}

fn print_log_tail(log: &Path) {
    let Ok(text) = std::fs::read_to_string(log) else { return };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(25);
    eprintln!("--- last lines of {} ---", log.display());
    for line in &lines[start..] {
        eprintln!("{line}");
    }
    eprintln!("---");
}

fn print_summary(outcomes: &[Outcome]) {
    println!("{:<14} {:<16} {:>10}  {:<19} {:>8}", "image", "status", "size", "id", "seconds");
    for outcome in outcomes {
        let short_id: String = outcome.image_id.trim_start_matches("sha256:").chars().take(12).collect();
        println!(
            "{:<14} {:<16} {:>10}  sha256:{short_id} {:>8.1}",
            outcome.name,
            outcome.status,
            ui::human_size(outcome.size),
            outcome.seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_names_added_changed_and_removed_files() {
        let locked = BTreeMap::from([("Dockerfile".to_string(), "sha256:1".to_string()), ("old.txt".to_string(), "sha256:2".to_string())]);
        let current = BTreeMap::from([("Dockerfile".to_string(), "sha256:9".to_string()), ("new.txt".to_string(), "sha256:3".to_string())]);
        assert_eq!(
            describe_file_drift("lab", &locked, &current),
            ["lab: Dockerfile changed", "lab: new.txt added", "lab: old.txt removed"]
        );
        assert!(describe_file_drift("lab", &locked, &locked).is_empty());
    }

    #[test]
    fn the_images_most_others_wait_for_count_the_most_descendants() {
        let catalog = Catalog::parse(
            "[[image]]\nname = \"base\"\nbootstrap = \"mmdebstrap\"\n\n\
             [[image]]\nname = \"hub\"\nparent = \"base\"\n\n\
             [[image]]\nname = \"code\"\nparent = \"base\"\n\n\
             [[image]]\nname = \"full\"\nparent = \"code\"\n\n\
             [[image]]\nname = \"fuller\"\nparent = \"full\"\n\n\
             [[image]]\nname = \"shared\"\nparent = \"base\"\n\n\
             [[image]]\nname = \"lab\"\nparent = \"code\"\nuses = [\"shared\"]\n",
        )
        .unwrap();
        let images: Vec<&ImageEntry> = catalog.images.iter().collect();
        let count = |name| descendants(&images, &catalog, name);
        // `lab` counts for `code` (its parent), `shared` (which it uses) and `base` (through both, once).
        assert_eq!((count("base"), count("code"), count("full"), count("hub"), count("fuller")), (6, 3, 1, 0, 0));
        assert_eq!(count("shared"), 1);
        // Only the images of this run count: building `hub` alone, nothing waits for `code`.
        let selection: Vec<&ImageEntry> = images.iter().copied().filter(|image| ["base", "hub"].contains(&image.name.as_str())).collect();
        assert_eq!(descendants(&selection, &catalog, "code"), 0);
    }
}
