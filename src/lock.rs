//! `images.lock`: what the build pipeline built, per image: its content key (a function of its inputs only),
//! its tags, the hashes of the image folder's files and pinned inputs, and the versions of its key
//! components. Machine-specific facts (image ids, sizes) are not recorded: an image id is read from the
//! engine through the content-keyed tag, so a newcomer's first build leaves the committed lock unchanged.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The lock format's version; a lock with another version is refused rather than misread.
pub const LOCK_VERSION: u32 = 2;

const HEADER: &str = "# images.lock: what `cargo xtask build-images` built and pinned. Written by the pipeline;\n\
# do not edit by hand. Commit it: the hub spawns the images these content keys name (jhub/<name>:<key>).\n\n";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    /// For each pinned input source (`datascience/requirements.in`, `hub/package.json`), its `sha256:` when
    /// `cargo xtask lock` last compiled it; a source that differs means its pinned file is stale.
    #[serde(default)]
    pub pinned: BTreeMap<String, String>,
    #[serde(default)]
    pub image: BTreeMap<String, LockedImage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// `sha256:` of the image folder's deterministic context tar and the parent's content key: equal keys
    /// mean equal inputs, on any machine.
    pub content_key: String,
    /// `jhub/<name>:<short key>` (the keyed tag, which names this build on every engine) and `:latest`.
    pub tags: Vec<String>,
    /// `sha256:` of the image's `checks.toml` and its ancestors' (their checks run against it too), so
    /// changed checks run again without a rebuild.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checks_sha256: String,
    /// For a bootstrapped image, `sha256:` of the rootfs tar that was imported.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rootfs_sha256: String,
    /// `sha256:` of every file in the image folder, by path relative to it.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Versions of the key components (python, jupyterhub, jupyterlab, code-server, marimo, node, …).
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// For a bootstrapped image, the Debian packages in its rootfs and their versions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, String>,
    /// Where `cargo xtask push` put this build in the Swarm mode's registry: nodes pull it by this digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<Pushed>,
}

/// One push of an image to the registry: the engine id that was pushed (a rebuilt image has another, so a
/// stale record is seen) and the manifest digest the registry gave it, which every node pulls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pushed {
    pub image_id: String,
    pub digest: String,
}

impl LockedImage {
    /// The content-keyed tag (`jhub/<name>:<short key>`): how compose names the hub image, and how the
    /// xtask and the tests find the image id of what the lock records.
    pub fn keyed_tag(&self) -> Option<&str> {
        self.tags.iter().map(String::as_str).find(|tag| !tag.ends_with(":latest"))
    }
}

/// A lock that cannot be read, with the reason and the next step.
pub type LockError = crate::HintedError;

impl Lock {
    /// The content-keyed tag of the image `name` records (`jhub/hub:<key12>`), if it records one: how
    /// compose runs the hub and nginx, and how every reader finds the id of what was built.
    pub fn keyed_tag(&self, name: &str) -> Option<&str> {
        self.image.get(name).and_then(LockedImage::keyed_tag)
    }

    pub fn new() -> Lock {
        Lock { version: LOCK_VERSION, pinned: BTreeMap::new(), image: BTreeMap::new() }
    }

    /// Reads the lock at `path`; a missing file is an empty lock (nothing built yet).
    pub fn load(path: &Path) -> Result<Lock, LockError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Lock::parse(&text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Lock::new()),
            Err(err) => Err(LockError {
                message: format!("cannot read {}: {err}", path.display()),
                hint: "check the file's permissions".to_string(),
            }),
        }
    }

    /// Reads the lock at `path` for a build that will write it anew: a lock of an older format keeps its
    /// pinned-input hashes (the format of `[pinned]` never changed) and forgets its images, which are then
    /// built or found again and recorded in this format.
    pub fn load_for_rebuild(path: &Path) -> Result<Lock, LockError> {
        match Lock::load(path) {
            Err(err) if err.message.contains("this checkout reads version") => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let pinned = toml::from_str::<toml::Table>(&text)
                    .ok()
                    .and_then(|table| table.get("pinned").cloned())
                    .and_then(|pinned| pinned.try_into::<BTreeMap<String, String>>().ok())
                    .unwrap_or_default();
                Ok(Lock { pinned, ..Lock::new() })
            }
            other => other,
        }
    }

    pub fn parse(text: &str) -> Result<Lock, LockError> {
        // The version first: another format's fields must be reported as another version, not garbage.
        let version = toml::from_str::<toml::Table>(text).ok().and_then(|table| table.get("version").and_then(toml::Value::as_integer));
        if let Some(version) = version.filter(|version| *version != i64::from(LOCK_VERSION)) {
            return Err(LockError {
                message: format!("images.lock has version {version}, this checkout reads version {LOCK_VERSION}"),
                hint: "run `cargo xtask build-images` (without --locked) to write it anew, and commit it".to_string(),
            });
        }
        let lock: Lock = toml::from_str(text).map_err(|err| LockError {
            message: format!("images.lock is not a valid lock: {}", err.to_string().lines().next().unwrap_or_default()),
            hint: "restore it with `git checkout images.lock`, or delete it and run `cargo xtask build-images`".to_string(),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError {
                message: format!("images.lock has version {}, this checkout reads version {LOCK_VERSION}", lock.version),
                hint: "run `cargo xtask build-images` (without --locked) to write it anew, and commit it".to_string(),
            });
        }
        Ok(lock)
    }

    /// The lock as text: sorted tables, one field a line, stable for diffs.
    pub fn to_text(&self) -> String {
        let body = toml::to_string_pretty(self).expect("a lock always serializes");
        format!("{HEADER}{body}")
    }

    /// Writes the lock atomically: a temporary file beside it, flushed, then renamed over it, so an
    /// interrupted or failed run never leaves a half-written lock.
    pub fn write_atomically(&self, path: &Path) -> std::io::Result<()> {
        crate::write_atomically(path, self.to_text().as_bytes(), 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        let mut lock = Lock::new();
        lock.pinned.insert("minimal/requirements.in".to_string(), "sha256:ee".to_string());
        lock.image.insert(
            "minimal".to_string(),
            LockedImage {
                content_key: "sha256:aa".to_string(),
                tags: vec!["jhub/minimal:aa".to_string(), "jhub/minimal:latest".to_string()],
                files: BTreeMap::from([("Dockerfile".to_string(), "sha256:dd".to_string())]),
                versions: BTreeMap::from([("python".to_string(), "3.13.5".to_string())]),
                ..LockedImage::default()
            },
        );
        lock.image.insert(
            "base".to_string(),
            LockedImage {
                content_key: "sha256:11".to_string(),
                rootfs_sha256: "sha256:22".to_string(),
                packages: BTreeMap::from([("bash".to_string(), "5.2.37-2".to_string())]),
                ..LockedImage::default()
            },
        );
        lock
    }

    #[test]
    fn round_trips_through_text_and_sorts_images() {
        let lock = sample();
        let text = lock.to_text();
        assert_eq!(Lock::parse(&text).unwrap(), lock);
        assert!(text.find("[image.base]").unwrap() < text.find("[image.minimal]").unwrap());
        assert_eq!(lock.image["minimal"].keyed_tag(), Some("jhub/minimal:aa"));
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let folder = std::env::temp_dir().join(format!("jhub-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("images.lock");
        std::fs::write(&path, "old").unwrap();
        sample().write_atomically(&path).unwrap();
        assert_eq!(Lock::load(&path).unwrap(), sample());
        let names: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(names, ["images.lock"]);
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        assert!(Lock::parse("version = 1\n").unwrap_err().message.contains("version 1"));
        assert!(Lock::parse("version = ").unwrap_err().message.contains("not a valid lock"));
        assert_eq!(Lock::load(Path::new("/nonexistent/images.lock")).unwrap(), Lock::new());
    }

    #[test]
    fn an_older_lock_keeps_its_pins_for_a_rebuild() {
        let folder = std::env::temp_dir().join(format!("jhub-lock-v1-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("images.lock");
        std::fs::write(&path, "version = 1\n[pinned]\n\"hub/requirements.in\" = \"sha256:ab\"\n[image.hub]\nimage_id = \"sha256:cd\"\n")
            .unwrap();
        assert!(Lock::load(&path).is_err());
        let upgraded = Lock::load_for_rebuild(&path).unwrap();
        assert_eq!(upgraded.version, LOCK_VERSION);
        assert_eq!(upgraded.pinned["hub/requirements.in"], "sha256:ab");
        assert!(upgraded.image.is_empty());
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
