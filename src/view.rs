//! The hub's resolved view: the single-user images (with this engine's image id for the build the lock
//! records, home and default URL) and the profiles, computed from a valid catalog and lock and written as
//! JSON for the hub, which checks only its version and shape. Every catalog rule lives in `catalog`; the
//! hub never re-validates what this view says.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::HintedError;
use crate::catalog::Catalog;
use crate::lock::Lock;

/// The view format's version; the hub refuses any other.
pub const VIEW_VERSION: u32 = 3;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HubView {
    pub version: u32,
    /// The single-user images, in dropdown (catalog) order.
    pub images: Vec<ViewImage>,
    pub profiles: Vec<ViewProfile>,
    /// The catalog's groups: the hub creates each at start and gives its members the group's limits.
    pub groups: Vec<ViewGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewImage {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub home: String,
    pub default_url: String,
    /// What the hub spawns: on one host, the engine's id for the image the lock's content key names; in
    /// the Swarm mode, the registry's reference pinned by the digest the lock records (nodes pull it).
    pub image_id: String,
    /// Swarm mode: the constraints a node must meet to run it (the catalog's `placement`).
    pub placement: Vec<String>,
    /// The groups whose members are offered it; empty: everyone.
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewProfile {
    pub name: String,
    pub display_name: String,
    /// The `name` of one of the view's images.
    pub image: String,
    pub cpu_limit: f64,
    pub mem_limit: String,
    /// The groups whose members are offered it; empty: everyone.
    pub groups: Vec<String>,
}

/// A group of the catalog with its optional limits (`null` when the group sets none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewGroup {
    pub name: String,
    pub cpu_limit: Option<f64>,
    /// A size as the catalog writes it (`2G`), or bytes once lowered to what the engine has.
    pub mem_limit: Option<String>,
    pub named_server_limit: Option<u32>,
    /// `~/<group>/course`: read-only for members, read-write for the instructors.
    pub course_folder: bool,
    /// `~/<group>/shared`: read-write for members and instructors.
    pub shared_folder: bool,
    /// The group whose members are this one's instructors.
    pub instructors: Option<String>,
}

impl HubView {
    /// The view of `catalog`'s single-user images and profiles. `image_ids` maps image names to the ids
    /// this engine has for the lock's keyed tags (the caller asks the engine; this library does not).
    pub fn resolve(catalog: &Catalog, lock: &Lock, image_ids: &BTreeMap<String, String>) -> Result<HubView, HintedError> {
        let ids = image_ids.iter().filter(|(_, id)| is_image_id(id)).map(|(name, id)| (name.clone(), id.clone())).collect();
        Self::resolve_spawning(catalog, lock, &ids, |name, tag| {
            HintedError::new(
                format!("image `{name}` ({tag}) is not on this Docker engine"),
                "run `cargo xtask build-images` (it builds what the lock records and this engine lacks)",
            )
        })
    }

    /// The view of the Swarm mode: every single-user image as the registry at `registry` has it, pinned
    /// by the digest `cargo xtask push` recorded in the lock for exactly the build the lock names.
    pub fn resolve_for_swarm(catalog: &Catalog, lock: &Lock, registry: &str) -> Result<HubView, HintedError> {
        let references = lock
            .image
            .iter()
            .filter_map(|(name, image)| {
                image.registry.as_ref().map(|pushed| (name.clone(), format!("{registry}/jhub/{name}@{}", pushed.digest)))
            })
            .collect();
        Self::resolve_spawning(catalog, lock, &references, |name, _| {
            HintedError::new(
                format!("images.lock records no push of the single-user image `{name}` to the registry"),
                "run `cargo xtask push` (it pushes every image of the lock and records each digest)",
            )
        })
    }

    /// The view whose images spawn what `spawned` maps their names to; `missing(name, keyed tag)` is the
    /// error for an image it lacks.
    fn resolve_spawning(
        catalog: &Catalog,
        lock: &Lock,
        spawned: &BTreeMap<String, String>,
        missing: impl Fn(&str, &str) -> HintedError,
    ) -> Result<HubView, HintedError> {
        let mut images = Vec::new();
        for (entry, single_user) in catalog.single_user_images() {
            let Some(locked) = lock.image.get(&entry.name) else {
                return Err(HintedError::new(
                    format!("images.lock has no entry for the single-user image `{}`", entry.name),
                    "run `cargo xtask build-images` to build it and record it in images.lock",
                ));
            };
            let tag = locked.keyed_tag().unwrap_or_default();
            let Some(image_id) = spawned.get(&entry.name) else {
                return Err(missing(&entry.name, tag));
            };
            images.push(ViewImage {
                name: entry.name.clone(),
                display_name: single_user.display_name.clone(),
                description: single_user.description.clone(),
                home: single_user.home.clone(),
                default_url: single_user.default_url.clone(),
                image_id: image_id.clone(),
                placement: single_user.placement.clone(),
                groups: single_user.groups.clone(),
            });
        }
        if images.is_empty() {
            return Err(HintedError::new(
                "images/catalog.toml has no single-user image: users could spawn nothing",
                "add an [[image]] with single_user = true, display_name, home and default_url",
            ));
        }
        let profiles = catalog
            .profiles
            .iter()
            .map(|profile| ViewProfile {
                name: profile.name.clone(),
                display_name: profile.display_name.clone(),
                image: profile.image.clone(),
                cpu_limit: profile.cpu_limit,
                mem_limit: profile.mem_limit.clone(),
                groups: profile.groups.clone(),
            })
            .collect();
        let groups = catalog
            .groups
            .iter()
            .map(|group| ViewGroup {
                name: group.name.clone(),
                cpu_limit: group.cpu_limit,
                mem_limit: group.mem_limit.clone(),
                named_server_limit: group.named_server_limit,
                course_folder: group.course_folder,
                shared_folder: group.shared_folder,
                instructors: group.instructors.clone(),
            })
            .collect();
        Ok(HubView { version: VIEW_VERSION, images, profiles, groups })
    }

    /// Lowers every profile's CPU and memory limits to what the engine has (`cpus`, `memory` in bytes),
    /// returning one warning per lowered limit. Docker refuses a container asking for more CPUs than the
    /// machine has (the spawn would fail with a 500), so a catalog written for bigger machines (the
    /// PRD's 4-CPU code-server profile) still works on a 2-core one, and says so.
    pub fn fit_to_engine(&mut self, cpus: f64, memory: u64) -> Vec<String> {
        let mut warnings = Vec::new();
        let limits = self
            .profiles
            .iter_mut()
            .map(|profile| (format!("profile `{}`", profile.name), Some(&mut profile.cpu_limit), Some(&mut profile.mem_limit)))
            .chain(
                self.groups.iter_mut().map(|group| (format!("group `{}`", group.name), group.cpu_limit.as_mut(), group.mem_limit.as_mut())),
            );
        for (owner, cpu_limit, mem_limit) in limits {
            if let Some(cpu_limit) = cpu_limit
                && cpus > 0.0
                && *cpu_limit > cpus
            {
                warnings.push(format!("{owner} asks for {cpu_limit} CPUs; this engine has {cpus}: lowered to {cpus}"));
                *cpu_limit = cpus;
            }
            if let Some(mem_limit) = mem_limit {
                let asked = crate::catalog::memory_bytes(mem_limit).unwrap_or(0);
                if memory > 0 && asked > memory {
                    warnings.push(format!(
                        "{owner} asks for {mem_limit} of memory; this engine has {:.1}G: lowered to that",
                        memory as f64 / f64::from(1u32 << 30)
                    ));
                    *mem_limit = memory.to_string();
                }
            }
        }
        warnings
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a view always serializes");
        text.push('\n');
        text
    }

    /// Writes the view atomically (temporary file, then rename) with mode 644: the hub reads it through a
    /// read-only bind mount. Returns the text written, whose digest tells compose when to recreate the hub.
    pub fn write_atomically(&self, path: &Path) -> Result<String, HintedError> {
        let text = self.to_json();
        let failed = |err: std::io::Error| {
            HintedError::new(format!("cannot write the hub's view {}: {err}", path.display()), "check that the folder is writable")
        };
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(failed)?;
        }
        crate::write_atomically(path, text.as_bytes(), 0o644).map_err(failed)?;
        Ok(text)
    }
}

fn is_image_id(id: &str) -> bool {
    id.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LockedImage;

    const CATALOG: &str = r#"
[[image]]
name = "base"
bootstrap = "mmdebstrap"

[[image]]
name = "lab"
parent = "base"
single_user = true
display_name = "Lab <b>"
description = "JupyterLab"
home = "/home/jovyan"
default_url = "/lab"

[[profile]]
name = "lab-small"
display_name = "Lab, small"
image = "lab"
cpu_limit = 0.5
mem_limit = "1.5G"
"#;

    fn lock() -> Lock {
        lock_of(&["base", "lab"])
    }

    /// A lock with one content-keyed tag for each of `names`.
    fn lock_of(names: &[&str]) -> Lock {
        let mut lock = Lock::new();
        for name in names {
            lock.image.insert(
                name.to_string(),
                LockedImage { content_key: "sha256:aa".into(), tags: vec![format!("jhub/{name}:aaaaaaaaaaaa")], ..LockedImage::default() },
            );
        }
        lock
    }

    const ID: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_view_lists_single_user_images_with_ids_and_the_profiles() {
        let catalog = Catalog::parse(CATALOG).unwrap();
        let ids = BTreeMap::from([("lab".to_string(), ID.to_string())]);
        let view = HubView::resolve(&catalog, &lock(), &ids).unwrap();
        let json: serde_json::Value = serde_json::from_str(&view.to_json()).unwrap();
        assert_eq!(json["version"], 3);
        assert_eq!(json["images"].as_array().unwrap().len(), 1, "base is not offered to users");
        assert_eq!(json["images"][0]["image_id"], ID);
        assert_eq!(json["images"][0]["display_name"], "Lab <b>", "escaping is the hub's job, at render time");
        assert_eq!(json["profiles"][0]["cpu_limit"], 0.5);
        assert_eq!(json["profiles"][0]["mem_limit"], "1.5G");
        assert_eq!(json["images"][0]["groups"], serde_json::json!([]), "no groups: offered to everyone");
        assert_eq!(json["groups"], serde_json::json!([]));
    }

    #[test]
    fn groups_and_their_limits_reach_the_view_and_are_lowered_to_the_engine() {
        let text = CATALOG.replace("default_url = \"/lab\"", "default_url = \"/lab\"\ngroups = [\"physics-101\"]")
            + "groups = [\"physics-101\"]\n\n[[group]]\nname = \"physics-101\"\ncpu_limit = 8.0\nmem_limit = \"3G\"\nnamed_server_limit = 1\n\n\
               [[group]]\nname = \"staff\"\n";
        let catalog = Catalog::parse(&text).unwrap();
        let ids = BTreeMap::from([("lab".to_string(), ID.to_string())]);
        let mut view = HubView::resolve(&catalog, &lock(), &ids).unwrap();
        let json: serde_json::Value = serde_json::from_str(&view.to_json()).unwrap();
        assert_eq!(json["images"][0]["groups"], serde_json::json!(["physics-101"]));
        assert_eq!(json["profiles"][0]["groups"], serde_json::json!(["physics-101"]));
        assert_eq!(
            json["groups"],
            serde_json::json!([
                {"name": "physics-101", "cpu_limit": 8.0, "mem_limit": "3G", "named_server_limit": 1,
                 "course_folder": false, "shared_folder": false, "instructors": null},
                {"name": "staff", "cpu_limit": null, "mem_limit": null, "named_server_limit": null,
                 "course_folder": false, "shared_folder": false, "instructors": null},
            ])
        );
        let warnings = view.fit_to_engine(2.0, 2 << 30);
        assert_eq!(
            warnings,
            [
                "group `physics-101` asks for 8 CPUs; this engine has 2: lowered to 2",
                "group `physics-101` asks for 3G of memory; this engine has 2.0G: lowered to that"
            ]
        );
        assert_eq!((view.groups[0].cpu_limit, view.groups[0].mem_limit.as_deref()), (Some(2.0), Some("2147483648")));
        assert_eq!(view.groups[1].cpu_limit, None, "a group without limits gets none");
    }

    #[test]
    fn an_image_missing_from_the_lock_or_the_engine_is_named() {
        let catalog = Catalog::parse(CATALOG).unwrap();
        let missing = HubView::resolve(&catalog, &lock(), &BTreeMap::new()).unwrap_err();
        assert_eq!(missing.message, "image `lab` (jhub/lab:aaaaaaaaaaaa) is not on this Docker engine");
        let mut unlocked = lock();
        unlocked.image.remove("lab");
        let ids = BTreeMap::from([("lab".to_string(), ID.to_string())]);
        let err = HubView::resolve(&catalog, &unlocked, &ids).unwrap_err();
        assert_eq!(err.message, "images.lock has no entry for the single-user image `lab`");
    }

    #[test]
    fn the_swarm_view_spawns_the_pushed_digest_with_the_placement() {
        let catalog =
            Catalog::parse(&CATALOG.replace("default_url = \"/lab\"", "default_url = \"/lab\"\nplacement = [\"node.labels.gpu==true\"]"))
                .unwrap();
        let missing = HubView::resolve_for_swarm(&catalog, &lock(), "node-1:5000").unwrap_err();
        assert_eq!(missing.message, "images.lock records no push of the single-user image `lab` to the registry");
        let mut pushed = lock();
        let digest = format!("sha256:{}", "b".repeat(64));
        pushed.image.get_mut("lab").unwrap().registry = Some(crate::lock::Pushed { image_id: ID.into(), digest: digest.clone() });
        let view = HubView::resolve_for_swarm(&catalog, &pushed, "node-1:5000").unwrap();
        assert_eq!(view.images[0].image_id, format!("node-1:5000/jhub/lab@{digest}"));
        assert_eq!(view.images[0].placement, ["node.labels.gpu==true"]);
    }

    #[test]
    fn profiles_bigger_than_the_engine_are_lowered_with_a_warning() {
        let catalog = Catalog::parse(&CATALOG.replace("cpu_limit = 0.5", "cpu_limit = 4.0").replace("\"1.5G\"", "\"64G\"")).unwrap();
        let ids = BTreeMap::from([("lab".to_string(), ID.to_string())]);
        let mut view = HubView::resolve(&catalog, &lock(), &ids).unwrap();
        let warnings = view.fit_to_engine(2.0, 24 << 30);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(warnings[0], "profile `lab-small` asks for 4 CPUs; this engine has 2: lowered to 2");
        assert_eq!(view.profiles[0].cpu_limit, 2.0);
        assert_eq!(view.profiles[0].mem_limit, (24u64 << 30).to_string());
        assert!(crate::catalog::is_memory_size(&view.profiles[0].mem_limit), "the lowered size is still a valid size");
        assert!(view.fit_to_engine(2.0, 24 << 30).is_empty(), "a view that fits is left alone");
    }

    #[test]
    fn a_catalog_without_single_user_images_has_no_view() {
        let catalog = Catalog::parse("[[image]]\nname = \"base\"\nbootstrap = \"mmdebstrap\"\n").unwrap();
        let err = HubView::resolve(&catalog, &lock(), &BTreeMap::new()).unwrap_err();
        assert_eq!(err.message, "images/catalog.toml has no single-user image: users could spawn nothing");
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let folder = std::env::temp_dir().join(format!("jhub-view-test-{}", std::process::id()));
        let path = folder.join("hub-view.json");
        let catalog = Catalog::parse(CATALOG).unwrap();
        let ids = BTreeMap::from([("lab".to_string(), ID.to_string())]);
        let text = HubView::resolve(&catalog, &lock(), &ids).unwrap().write_atomically(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let names: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(names, ["hub-view.json"]);
        std::fs::remove_dir_all(&folder).unwrap();
    }

    /// The catalog the hub's pytest sample comes from: two single-user images and a profile for each.
    const HUB_FIXTURE_CATALOG: &str = r#"
[[image]]
name = "base"
bootstrap = "mmdebstrap"

[[image]]
name = "datascience"
parent = "base"
single_user = true
display_name = "Full stack: Lab + VS Code + marimo"
description = "JupyterLab, VS Code and marimo"
home = "/home/jovyan"
default_url = "/lab"

[[image]]
name = "minimal"
parent = "base"
single_user = true
display_name = "Minimal: Python only"
description = "JupyterLab on Python"
home = "/home/user"
default_url = "/tree"
placement = ["node.labels.small==true"]

[[image]]
name = "physics"
parent = "base"
single_user = true
display_name = "Physics 101"
description = "The course's image, for its members"
home = "/home/jovyan"
default_url = "/lab"
groups = ["physics-101"]

[[group]]
name = "physics-101"
cpu_limit = 1.5
mem_limit = "3G"
named_server_limit = 1
course_folder = true
shared_folder = true
instructors = "staff"

[[group]]
name = "staff"

[[profile]]
name = "datascience-small"
display_name = "Full stack, 1 CPU, 2 GB"
image = "datascience"
cpu_limit = 1.0
mem_limit = "2G"

[[profile]]
name = "minimal-tiny"
display_name = "Minimal, half a CPU, 512 MB"
image = "minimal"
cpu_limit = 0.5
mem_limit = "512M"

[[profile]]
name = "physics-big"
display_name = "Physics 101, 2 CPUs, 4 GB"
image = "physics"
cpu_limit = 2.0
mem_limit = "4G"
groups = ["physics-101", "staff"]
"#;

    /// The hub's unit tests (images/hub/tests/conftest.py) read this file as their sample view: it is
    /// what `HubView::resolve` writes for HUB_FIXTURE_CATALOG, so the hub's reader is tested on the
    /// writer's real output and the two cannot drift. A change to the view's shape fails here until the
    /// fixture is written again (`JHUB_UPDATE_FIXTURES=1`), and then in the hub's pytest if the hub does
    /// not read the new shape.
    #[test]
    fn the_hubs_test_fixture_is_what_resolve_writes() {
        let catalog = Catalog::parse(HUB_FIXTURE_CATALOG).unwrap();
        let lock = lock_of(&["base", "datascience", "minimal", "physics"]);
        let ids = BTreeMap::from([
            ("datascience".to_string(), format!("sha256:{}", "a".repeat(64))),
            ("minimal".to_string(), format!("sha256:{}", "b".repeat(64))),
            ("physics".to_string(), format!("sha256:{}", "c".repeat(64))),
        ]);
        let text = HubView::resolve(&catalog, &lock, &ids).unwrap().to_json();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/hub/tests/fixtures/hub-view.json");
        if std::env::var_os("JHUB_UPDATE_FIXTURES").is_some_and(|value| value == "1") {
            std::fs::create_dir_all(fixture.parent().unwrap()).unwrap();
            std::fs::write(&fixture, &text).unwrap();
        }
        let written = std::fs::read_to_string(&fixture).unwrap_or_default();
        assert!(
            written == text,
            "{} is not what HubView::resolve writes now:\n{text}\nhint: JHUB_UPDATE_FIXTURES=1 cargo test -p jhub-docker --lib view, \
             then rebuild the hub (its pytest reads the file)",
            fixture.display()
        );
    }
}
