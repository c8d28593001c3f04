//! `images.lock`: what the build pipeline built, per image: content key, parent and image ids, size, tags,
//! the hashes of the image folder's files and pinned inputs, and the versions of its key components.
//! The hub spawns exactly the `image_id`s recorded here; the acceptance test asserts against them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The lock format's version; a lock with another version is refused rather than misread.
pub const LOCK_VERSION: u32 = 1;

const HEADER: &str = "# images.lock: what `cargo xtask build-images` built and pinned. Written by the pipeline;\n\
# do not edit by hand. Commit it: the hub spawns exactly these image ids.\n\n";

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
    /// `sha256:` of the image folder's deterministic context tar and the parent's image id.
    pub content_key: String,
    /// The parent's image id; empty for a bootstrapped root image.
    #[serde(default)]
    pub parent_id: String,
    pub image_id: String,
    /// Bytes, as the engine reports them.
    pub size: u64,
    pub tags: Vec<String>,
    /// `sha256:` of the image's `checks.toml`, so changed checks run again without a rebuild.
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
}

impl LockedImage {
    /// The content-keyed tag (`jhub/<name>:<short key>`), how compose names the hub image.
    pub fn keyed_tag(&self) -> Option<&str> {
        self.tags.iter().map(String::as_str).find(|tag| !tag.ends_with(":latest"))
    }
}

/// A lock that cannot be read, with the reason and the next step.
pub type LockError = crate::HintedError;

impl Lock {
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

    pub fn parse(text: &str) -> Result<Lock, LockError> {
        let lock: Lock = toml::from_str(text).map_err(|err| LockError {
            message: format!("images.lock is not a valid lock: {}", err.to_string().lines().next().unwrap_or_default()),
            hint: "restore it with `git checkout images.lock`, or delete it and run `cargo xtask build-images`".to_string(),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError {
                message: format!("images.lock has version {}, this checkout reads version {LOCK_VERSION}", lock.version),
                hint: "run `cargo xtask build-images` to write it anew".to_string(),
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
        let temporary = path.with_extension(format!("lock.tmp-{}", std::process::id()));
        let result = (|| {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(self.to_text().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        result
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
                parent_id: "sha256:bb".to_string(),
                image_id: "sha256:cc".to_string(),
                size: 42,
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
                image_id: "sha256:bb".to_string(),
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
        assert!(Lock::parse("version = 2\n").unwrap_err().message.contains("version 2"));
        assert!(Lock::parse("version = ").unwrap_err().message.contains("not a valid lock"));
        assert_eq!(Lock::load(Path::new("/nonexistent/images.lock")).unwrap(), Lock::new());
    }
}
