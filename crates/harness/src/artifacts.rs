//! What a failed step leaves for the person debugging it, under `target/acceptance-artifacts/<test>/`:
//! a screenshot and the page source of every open browser tab, and the logs of the stack's containers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bollard::Docker;

use crate::browser::Browser;
use crate::docker;

pub struct Artifacts {
    pub dir: PathBuf,
}

impl Artifacts {
    /// A fresh (emptied) folder for `test`; `CARGO_TARGET_DIR` is honoured.
    pub fn for_test(root: &Path, test: &str) -> Result<Artifacts> {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        let dir = target.join("acceptance-artifacts").join(test);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Artifacts { dir })
    }

    /// Saves everything about the moment step `step` failed; best effort, never fails itself.
    pub async fn capture(&self, step: &str, browsers: &[Browser], docker: &Docker, project: &str) {
        let prefix = step.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
        for browser in browsers {
            browser.save_state(&self.dir, &format!("{prefix}-{}", browser.user)).await;
        }
        for (name, id) in docker::stack_containers(docker, project).await {
            let log = docker::logs(docker, &id).await;
            let _ = std::fs::write(self.dir.join(format!("{prefix}-{name}.log")), log);
        }
    }
}
