//! The model of jhub-docker's source of truth, shared by the xtask (which writes it) and the acceptance
//! harness (which asserts against it): the image catalog, the lock the build pipeline writes, the resolved
//! view the hub reads, the stack's names and labels (the contract both sides keep), the stack's settings
//! (its `.env` reader), the compose CLI both use to drive the stack, and the programs a host needs.

pub mod catalog;
pub mod certs;
pub mod compose;
pub mod contract;
pub mod host;
pub mod lock;
pub mod settings;
pub mod tree_sum;
pub mod view;

use std::fmt;
use std::path::{Path, PathBuf};

/// An error a person can act on: a one-line message naming the failing thing, and the next step to take.
/// Every module of this library reports its errors this way; the xtask prints them as `error:` / `hint:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintedError {
    pub message: String,
    pub hint: String,
}

impl HintedError {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> HintedError {
        HintedError { message: message.into(), hint: hint.into() }
    }
}

impl fmt::Display for HintedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\nhint: {}", self.message, self.hint)
    }
}

impl std::error::Error for HintedError {}

/// The repository root: the folder holding this crate's `Cargo.toml`, unless `JHUB_REPO_ROOT` names
/// another tree (the pipeline's own tests build a tiny catalog that way).
pub fn repo_root() -> PathBuf {
    match std::env::var_os("JHUB_REPO_ROOT") {
        Some(root) if !root.is_empty() => PathBuf::from(root),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// Replaces `path` with `bytes` through a temporary file beside it (created with `mode`), flushed, then
/// renamed over it: a reader sees the old file or the new one, never half of one, and a failure removes
/// the temporary file and leaves `path` as it was. The one way this project writes a file it replaces
/// (the lock, the hub's view, the catalog, restored settings).
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Where the catalog lives inside a checkout.
pub fn catalog_path(root: &Path) -> PathBuf {
    root.join("images").join("catalog.toml")
}

/// Where the lock lives inside a checkout.
pub fn lock_path(root: &Path) -> PathBuf {
    root.join("images.lock")
}
