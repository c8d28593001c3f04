//! A backup's manifest: what it holds (each file's kind, size and sha256), written beside the files,
//! read back with every path checked to stay inside the backup folder, and verified against the files
//! before a restore writes anything.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{bar, say};
use crate::ui::{self, UserError};

/// The manifest's file in a backup folder, and the format this xtask writes and reads.
pub(super) const MANIFEST: &str = "manifest.json";
pub(super) const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
pub(super) struct Manifest {
    pub(super) format: u32,
    pub(super) created_unix: u64,
    pub(super) stack: String,
    pub(super) user_volume_prefix: String,
    /// Users whose server ran while the backup was made: their files may have changed during the copy.
    pub(super) running_servers: Vec<String>,
    pub(super) files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize, Clone)]
pub(super) struct FileEntry {
    /// Path inside the backup folder, `/`-separated.
    pub(super) path: String,
    pub(super) kind: FileKind,
    /// For a user volume, the user it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<String>,
    /// For a user volume of a swarm stack, the node (hostname) that held it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) node: Option<String>,
    /// For a group folder, its group and which folder (`course` or `shared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) folder: Option<String>,
    pub(super) bytes: u64,
    pub(super) sha256: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "kebab-case")]
pub(super) enum FileKind {
    Database,
    CookieSecret,
    Env,
    Lock,
    UserVolume,
    GroupFolder,
}

/// Writes `bytes` to `dir/relative` with mode 600 (the backup holds password hashes and secrets) and
/// returns its manifest entry.
pub(super) fn write_private(dir: &Path, relative: &str, bytes: &[u8], kind: FileKind) -> anyhow::Result<FileEntry> {
    let path = dir.join(relative);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(FileEntry {
        path: relative.to_string(),
        kind,
        user: None,
        node: None,
        group: None,
        folder: None,
        bytes: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    })
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    digest_hex(Sha256::digest(bytes).as_slice())
}

pub(super) fn digest_hex(digest: &[u8]) -> String {
    format!("sha256:{}", digest.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
}

pub(super) fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|err| {
        UserError::new(
            format!("cannot read {}: {err}", path.display()),
            "name a folder `cargo xtask backup` wrote (an unfinished one has no manifest and a `.partial` name)",
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|err| {
        UserError::new(format!("{} is not a backup manifest: {err}", path.display()), "use the folder as backup wrote it")
    })?;
    if manifest.format != FORMAT {
        return Err(UserError::new(
            format!("{} has format {}, this xtask reads format {FORMAT}", path.display(), manifest.format),
            "restore it with the checkout that made it",
        )
        .into());
    }
    if !valid_volume_part(&manifest.stack) || !valid_volume_part(&manifest.user_volume_prefix) {
        return Err(UserError::new(
            format!("{} names an unsafe stack `{}` or volume prefix `{}`", path.display(), manifest.stack, manifest.user_volume_prefix),
            "use the folder as backup wrote it",
        )
        .into());
    }
    for file in &manifest.files {
        if let Some(problem) = entry_problem(dir, file) {
            return Err(UserError::new(
                format!("{} lists an unsafe entry `{}`: {problem}", path.display(), file.path),
                "use the folder as backup wrote it",
            )
            .into());
        }
    }
    Ok(manifest)
}

/// Why `file` may not be read from the backup folder `dir`, if it may not: its path must stay inside the
/// folder (not empty, not absolute, no `..` or empty part) and reach its file without a symbolic link (a
/// backup folder holds none; a link could hand a restore any file of this host), and a user volume must
/// name a user that can follow a volume prefix.
fn entry_problem(dir: &Path, file: &FileEntry) -> Option<&'static str> {
    let relative = file.path.as_str();
    if relative.is_empty() {
        return Some("an empty path");
    }
    if relative.starts_with('/') {
        return Some("an absolute path");
    }
    if relative.split('/').any(|part| part == "..") {
        return Some("a path that leaves the backup folder");
    }
    if relative.split('/').any(str::is_empty) {
        return Some("a path with an empty part");
    }
    let mut path = dir.to_path_buf();
    for part in relative.split('/') {
        path.push(part);
        if std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Some("a path through a symbolic link");
        }
    }
    if file.kind == FileKind::UserVolume && !file.user.as_deref().is_some_and(valid_volume_part) {
        return Some("a user volume without a user name a volume can carry");
    }
    if file.kind == FileKind::GroupFolder
        && !(file.group.as_deref().is_some_and(jhub_docker::catalog::is_group_name)
            && file.folder.as_deref().is_some_and(|folder| jhub_docker::contract::GROUP_FOLDERS.contains(&folder)))
    {
        return Some("a group folder without a group name and a folder (course or shared)");
    }
    None
}

/// What may follow a volume prefix in a Docker volume name (and so what a user's name in a manifest may be).
pub(super) fn valid_volume_part(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Checks every file's size and sum before anything is written.
pub(super) fn verify(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let total: u64 = manifest.files.iter().map(|file| file.bytes).sum();
    let bar = bar(total, "verify");
    let mut bad = Vec::new();
    for file in &manifest.files {
        say(&bar, &format!("checking {} ({})", file.path, ui::human_size(file.bytes)));
        let path = dir.join(&file.path);
        let Ok(mut reader) = std::fs::File::open(&path) else {
            bad.push(format!("{} is missing", file.path));
            continue;
        };
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let read = reader.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            bytes += read as u64;
            bar.inc(read as u64);
        }
        let sum = digest_hex(hasher.finalize().as_slice());
        if bytes != file.bytes || sum != file.sha256 {
            bad.push(format!("{} ({} bytes, {sum}; the manifest says {} bytes, {})", file.path, bytes, file.bytes, file.sha256));
        }
    }
    bar.finish_and_clear();
    if !bad.is_empty() {
        return Err(UserError::new(
            format!("the backup in {} is damaged, nothing was restored: {}", dir.display(), bad.join("; ")),
            "restore from another copy of the backup",
        )
        .into());
    }
    ui::note(&format!("verified {} file(s), {} against the manifest", manifest.files.len(), ui::human_size(total)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::*;

    /// A fresh folder under the system's temporary folder, removed when the test ends.
    struct Folder(PathBuf);

    impl Folder {
        fn new(name: &str) -> Folder {
            let dir = std::env::temp_dir().join(format!("jhub-manifest-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("users")).unwrap();
            Folder(dir)
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn entry(path: &str, kind: FileKind, user: Option<&str>) -> FileEntry {
        FileEntry {
            path: path.to_string(),
            kind,
            user: user.map(str::to_string),
            node: None,
            group: None,
            folder: None,
            bytes: 0,
            sha256: String::new(),
        }
    }

    #[test]
    fn a_group_folder_names_a_catalog_group_and_one_of_its_folders() {
        let folder = Folder::new("group-folders");
        let group_folder = |group: Option<&str>, name: Option<&str>| FileEntry {
            group: group.map(str::to_string),
            folder: name.map(str::to_string),
            ..entry("groups/x.tar", FileKind::GroupFolder, None)
        };
        assert!(entry_problem(&folder.0, &group_folder(Some("physics-101"), Some("course"))).is_none());
        assert!(entry_problem(&folder.0, &group_folder(Some("physics-101"), Some("shared"))).is_none());
        for (group, name) in
            [(None, Some("course")), (Some("physics-101"), None), (Some("../x"), Some("course")), (Some("p"), Some("home"))]
        {
            assert_eq!(
                entry_problem(&folder.0, &group_folder(group, name)),
                Some("a group folder without a group name and a folder (course or shared)"),
                "{group:?} {name:?}"
            );
        }
    }

    fn manifest(files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format: FORMAT,
            created_unix: 0,
            stack: "jhub".to_string(),
            user_volume_prefix: "jupyterhub-user-".to_string(),
            running_servers: Vec::new(),
            files,
        }
    }

    fn write_manifest(dir: &Path, manifest: &Manifest) {
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec(manifest).unwrap()).unwrap();
    }

    /// The error `read_manifest` gives for `dir`, as `error:` text.
    fn refusal(dir: &Path) -> String {
        let err = read_manifest(dir).err().expect("the manifest should be refused");
        let hinted = err.downcast_ref::<UserError>().expect("a refusal with a hint");
        assert!(!hinted.hint.is_empty());
        hinted.message.clone()
    }

    #[test]
    fn a_backup_as_backup_writes_it_is_read() {
        let folder = Folder::new("plain");
        let files = vec![
            entry("hub/jupyterhub.sqlite", FileKind::Database, None),
            entry("stack.env", FileKind::Env, None),
            entry("users/alice.tar", FileKind::UserVolume, Some("alice")),
            entry("users/carol-2d2.tar", FileKind::UserVolume, Some("carol-2d2")),
        ];
        write_manifest(&folder.0, &manifest(files));
        let read = read_manifest(&folder.0).unwrap();
        assert_eq!(read.files.len(), 4);
        // A missing file is no path problem: `verify` reports it as missing.
        assert!(entry_problem(&folder.0, &entry("users/nobody.tar", FileKind::UserVolume, Some("nobody"))).is_none());
    }

    #[test]
    fn paths_that_leave_the_backup_folder_are_refused() {
        let folder = Folder::new("escape");
        for (path, problem) in [
            ("/etc/shadow", "an absolute path"),
            ("../outside.tar", "a path that leaves the backup folder"),
            ("users/../../outside.tar", "a path that leaves the backup folder"),
            ("users/..", "a path that leaves the backup folder"),
            ("", "an empty path"),
            ("users//alice.tar", "a path with an empty part"),
            ("users/", "a path with an empty part"),
        ] {
            assert_eq!(entry_problem(&folder.0, &entry(path, FileKind::Lock, None)), Some(problem), "{path:?}");
            write_manifest(&folder.0, &manifest(vec![entry(path, FileKind::Lock, None)]));
            let message = refusal(&folder.0);
            assert!(message.contains(&format!("lists an unsafe entry `{path}`: {problem}")), "{path:?}: {message}");
        }
    }

    #[test]
    fn paths_through_symbolic_links_are_refused() {
        let folder = Folder::new("links");
        let outside = Folder::new("links-outside");
        std::fs::write(outside.0.join("secret"), "not the backup's").unwrap();
        // A file that is a link to a file outside, and a folder that is a link to a folder outside.
        symlink(outside.0.join("secret"), folder.0.join("users/alice.tar")).unwrap();
        symlink(&outside.0, folder.0.join("hub")).unwrap();
        // Even a link that stays inside is refused: a backup folder holds none.
        std::fs::write(folder.0.join("users/real.tar"), "tar").unwrap();
        symlink("real.tar", folder.0.join("users/inside.tar")).unwrap();
        for (path, user) in [("users/alice.tar", Some("alice")), ("hub/secret", None), ("users/inside.tar", Some("inside"))] {
            let kind = if user.is_some() { FileKind::UserVolume } else { FileKind::Database };
            assert_eq!(entry_problem(&folder.0, &entry(path, kind, user)), Some("a path through a symbolic link"), "{path}");
        }
        write_manifest(&folder.0, &manifest(vec![entry("users/alice.tar", FileKind::UserVolume, Some("alice"))]));
        assert!(refusal(&folder.0).contains("a path through a symbolic link"));
        assert!(entry_problem(&folder.0, &entry("users/real.tar", FileKind::UserVolume, Some("real"))).is_none());
    }

    #[test]
    fn user_volumes_need_a_user_a_volume_name_can_carry() {
        let folder = Folder::new("users");
        for user in [None, Some(""), Some("../etc"), Some("a/b"), Some("x y")] {
            let file = entry("users/x.tar", FileKind::UserVolume, user);
            assert_eq!(entry_problem(&folder.0, &file), Some("a user volume without a user name a volume can carry"), "{user:?}");
        }
    }

    #[test]
    fn unsafe_stacks_and_prefixes_and_other_formats_are_refused() {
        let folder = Folder::new("names");
        let mut bad_stack = manifest(Vec::new());
        bad_stack.stack = "../jhub".to_string();
        write_manifest(&folder.0, &bad_stack);
        assert!(refusal(&folder.0).contains("names an unsafe stack `../jhub`"));
        let mut bad_prefix = manifest(Vec::new());
        bad_prefix.user_volume_prefix = "/var/lib/".to_string();
        write_manifest(&folder.0, &bad_prefix);
        assert!(refusal(&folder.0).contains("volume prefix `/var/lib/`"));
        let mut newer = manifest(Vec::new());
        newer.format = FORMAT + 1;
        write_manifest(&folder.0, &newer);
        assert!(refusal(&folder.0).contains(&format!("has format {}", FORMAT + 1)));
        std::fs::write(folder.0.join(MANIFEST), "{").unwrap();
        assert!(refusal(&folder.0).contains("is not a backup manifest"));
        std::fs::remove_file(folder.0.join(MANIFEST)).unwrap();
        assert!(refusal(&folder.0).starts_with("cannot read "));
    }

    #[test]
    fn manifest_users_must_be_volume_name_parts() {
        assert!(valid_volume_part("alice-2.x_y"));
        assert!(!valid_volume_part("../etc"));
        assert!(!valid_volume_part(""));
    }

    #[test]
    fn verify_finds_a_changed_or_missing_file() {
        let folder = Folder::new("verify");
        let good = write_private(&folder.0, "users/alice.tar", b"alice's files", FileKind::UserVolume).unwrap();
        let mut changed = write_private(&folder.0, "users/bob.tar", b"bob's files", FileKind::UserVolume).unwrap();
        assert!(verify(&folder.0, &manifest(vec![good.clone(), changed.clone()])).is_ok());
        changed.sha256 = sha256_hex(b"something else");
        let missing = entry("users/carol.tar", FileKind::UserVolume, Some("carol"));
        let err = verify(&folder.0, &manifest(vec![good, changed, missing])).unwrap_err();
        let message = &err.downcast_ref::<UserError>().unwrap().message;
        assert!(message.contains("is damaged, nothing was restored"), "{message}");
        assert!(message.contains("users/bob.tar (11 bytes"), "{message}");
        assert!(message.contains("users/carol.tar is missing"), "{message}");
    }
}
