//! Build contexts: an image folder as a deterministic tar made in memory (sorted entries, fixed owners,
//! modes and times), the sha256 of every file, and the content key that decides whether to rebuild.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ui::UserError;

/// Files of an image folder that describe the image but are not part of its build context: the smoke
/// checks run against the built image from outside, so editing them reruns checks without a rebuild.
pub const NOT_IN_CONTEXT: &[&str] = &["checks.toml"];

/// Whether `relative` (a path inside an image folder) is a checks file: `checks.toml`, or a flavour's
/// `checks.<flavour>.toml` beside it. Checks are run against the built image, not copied into it.
pub fn is_checks_file(relative: &str) -> bool {
    NOT_IN_CONTEXT.contains(&relative) || (!relative.contains('/') && relative.starts_with("checks.") && relative.ends_with(".toml"))
}

/// Folders that appear in an image folder when someone works in it by hand and are never inputs:
/// Python's byte-code caches, and npm's install tree (the image installs from the lockfile itself).
pub const IGNORED_DIRS: &[&str] = &["__pycache__", "node_modules"];

/// The name under which the pipeline adds the build CA bundle to every context (never to the folder).
pub const BUILD_CA_NAME: &str = "jhub-build-ca.crt";

/// `sha256:<hex>` of an image's context tar followed by its parent's content key. Keys chain through the
/// parents and depend on inputs only (never on an engine's image ids), so equal keys mean equal inputs on
/// any machine: an image whose key matches the lock, and whose keyed tag the engine has, is not rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentKey(String);

impl ContentKey {
    pub fn of(context_tar: &[u8], parent_key: &str) -> ContentKey {
        let mut hasher = Sha256::new();
        hasher.update(context_tar);
        hasher.update(parent_key.as_bytes());
        ContentKey(format!("sha256:{}", hex(&hasher.finalize())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, used in the `jhub/<name>:<short key>` tag.
    pub fn short(&self) -> &str {
        &self.0["sha256:".len().."sha256:".len() + 12]
    }
}

impl fmt::Display for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image folder read into memory: its files by relative path (sorted), ready to tar.
pub struct Context {
    files: BTreeMap<String, ContextFile>,
}

struct ContextFile {
    contents: Vec<u8>,
    executable: bool,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Context {
    /// Reads every regular file below `folder` except [`NOT_IN_CONTEXT`]. Symbolic links and other special
    /// files are refused: they would make the context depend on what lies outside the folder.
    pub fn read(image_name: &str, folder: &Path) -> Result<Context, UserError> {
        let mut files = BTreeMap::new();
        let mut pending: Vec<PathBuf> = vec![folder.to_path_buf()];
        while let Some(directory) = pending.pop() {
            let entries = std::fs::read_dir(&directory).map_err(|err| {
                UserError::new(
                    format!("image `{image_name}`: cannot read {}: {err}", directory.display()),
                    "check that the folder exists and is readable",
                )
            })?;
            for entry in entries {
                let entry =
                    entry.map_err(|err| UserError::new(format!("image `{image_name}`: {err}"), "check the folder's permissions"))?;
                let path = entry.path();
                let relative = path.strip_prefix(folder).expect("below the folder").to_string_lossy().into_owned();
                let metadata = std::fs::symlink_metadata(&path)
                    .map_err(|err| UserError::new(format!("image `{image_name}`: {relative}: {err}"), "check the file's permissions"))?;
                if metadata.is_dir() {
                    if !IGNORED_DIRS.iter().any(|ignored| entry.file_name() == *ignored) {
                        pending.push(path);
                    }
                } else if metadata.is_file() {
                    if is_checks_file(&relative) {
                        continue;
                    }
                    use std::os::unix::fs::PermissionsExt;
                    let contents = std::fs::read(&path).map_err(|err| {
                        UserError::new(format!("image `{image_name}`: cannot read {relative}: {err}"), "check the file's permissions")
                    })?;
                    files.insert(relative, ContextFile { contents, executable: metadata.permissions().mode() & 0o111 != 0 });
                } else {
                    return Err(UserError::new(
                        format!("image `{image_name}`: images/{}/{relative} is a link or special file", image_name),
                        "image folders hold regular files only: copy the file in instead of linking it",
                    ));
                }
            }
        }
        Ok(Context { files })
    }

    /// The `sha256:` of every file, by relative path: what the lock records so drift can be named.
    pub fn file_hashes(&self) -> BTreeMap<String, String> {
        self.files.iter().map(|(path, file)| (path.clone(), sha256_hex(&file.contents))).collect()
    }

    /// The folder as a tar with sorted entries and fixed headers (owner 0:0, mode 0644 or 0755, time 0),
    /// so the same contents give the same bytes whatever the checkout's mtimes or directory order.
    pub fn tar(&self) -> Vec<u8> {
        self.tar_with(&[])
    }

    /// The context tar plus `extra` files (such as the build CA bundle), which are not part of the key.
    pub fn tar_with(&self, extra: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let entries = self
            .files
            .iter()
            .map(|(path, file)| (path.as_str(), file.contents.as_slice(), file.executable))
            .chain(extra.iter().map(|(path, contents)| (*path, *contents, false)));
        for (path, contents, executable) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, contents).expect("writing a tar to memory cannot fail");
        }
        builder.into_inner().expect("writing a tar to memory cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let folder = std::env::temp_dir().join(format!("jhub-context-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(folder.join("sub")).unwrap();
        std::fs::write(folder.join("Dockerfile"), "FROM x\n").unwrap();
        std::fs::write(folder.join("sub/a.txt"), "a").unwrap();
        std::fs::write(folder.join("sub/b.txt"), "b").unwrap();
        folder
    }

    fn key_of(folder: &Path) -> ContentKey {
        ContentKey::of(&Context::read("test", folder).unwrap().tar(), "sha256:parent")
    }

    #[test]
    fn key_ignores_mtimes_and_creation_order() {
        let first = scratch("order-a");
        let second = std::env::temp_dir().join(format!("jhub-context-order-b-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&second);
        std::fs::create_dir_all(second.join("sub")).unwrap();
        // Same contents, written in the opposite order and a second later.
        std::fs::write(second.join("sub/b.txt"), "b").unwrap();
        std::fs::write(second.join("sub/a.txt"), "a").unwrap();
        std::fs::write(second.join("Dockerfile"), "FROM x\n").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        std::fs::File::options().write(true).open(second.join("Dockerfile")).unwrap().set_modified(old).unwrap();
        assert_eq!(key_of(&first), key_of(&second));
        std::fs::remove_dir_all(&first).unwrap();
        std::fs::remove_dir_all(&second).unwrap();
    }

    #[test]
    fn key_changes_with_any_content_name_mode_or_parent() {
        let folder = scratch("change");
        let original = key_of(&folder);
        std::fs::write(folder.join("sub/a.txt"), "A").unwrap();
        let edited = key_of(&folder);
        assert_ne!(original, edited);
        std::fs::rename(folder.join("sub/a.txt"), folder.join("sub/c.txt")).unwrap();
        let renamed = key_of(&folder);
        assert_ne!(edited, renamed);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(folder.join("sub/c.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(renamed, key_of(&folder));
        let tar = Context::read("test", &folder).unwrap().tar();
        assert_ne!(ContentKey::of(&tar, "sha256:one"), ContentKey::of(&tar, "sha256:two"));
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn checks_and_extra_files_stay_out_of_the_key() {
        let folder = scratch("checks");
        let before = key_of(&folder);
        std::fs::write(folder.join("checks.toml"), "[[check]]\n").unwrap();
        assert_eq!(before, key_of(&folder));
        let context = Context::read("test", &folder).unwrap();
        assert_ne!(context.tar(), context.tar_with(&[(BUILD_CA_NAME, b"ca")]));
        assert!(!context.file_hashes().contains_key("checks.toml"));
        assert_eq!(before.short().len(), 12);
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn links_are_refused_with_the_image_named() {
        let folder = scratch("link");
        std::os::unix::fs::symlink("/etc/hostname", folder.join("link")).unwrap();
        let err = Context::read("lab", &folder).err().unwrap();
        assert!(err.message.starts_with("image `lab`: images/lab/link is a link"));
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
