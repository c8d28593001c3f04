//! The model of jhub-docker's source of truth, shared by the xtask (which writes it) and the acceptance
//! harness (which asserts against it): the image catalog, the lock the build pipeline writes, and the
//! compose CLI both use to drive the stack.

pub mod catalog;
pub mod compose;
pub mod lock;

use std::path::{Path, PathBuf};

/// The repository root: the folder holding this crate's `Cargo.toml`.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the catalog lives inside a checkout.
pub fn catalog_path(root: &Path) -> PathBuf {
    root.join("images").join("catalog.toml")
}

/// Where the lock lives inside a checkout.
pub fn lock_path(root: &Path) -> PathBuf {
    root.join("images.lock")
}
