//! A scratch checkout for tests of the verbs themselves: some image folders of the real checkout with their
//! catalog entries, its lock and its stack files, copied to a temporary folder; `cargo xtask` run in it as
//! a person would run it (none of the shell's stack settings); the stack its `up` starts held as a harness
//! `Stack`. On drop the stack goes first, then the images its builds made (never one the engine had
//! before), then the folder. `JHUB_ACCEPTANCE_KEEP=1` keeps all of it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use jhub_docker::lock::Lock;

use crate::docker::cli_lines;
use crate::stack::{self, Stack};

pub struct Checkout {
    pub root: PathBuf,
    /// The stack `up` starts from the checkout's settings: held from the start, so a failed `up` is
    /// removed too. An `Option` only so that drop removes it before the images its containers use.
    stack: Option<Stack>,
    /// The xtask binary the test runs (the one cargo built for it).
    xtask: PathBuf,
    /// PATH for the xtask (`lock` needs uv, which a test may add).
    path: OsString,
    /// The catalog images copied from the real checkout: a tag of theirs the engine did not have before is
    /// removed at the end, like every tag of an image the test adds.
    images: Vec<String>,
    /// Image ids on the engine before the test: whatever was there is never removed.
    images_before: BTreeSet<String>,
    started: SystemTime,
}

impl Checkout {
    /// A checkout named after `test` holding the real checkout's `folders` (under `images/`), the catalog
    /// entries of `images`, the real lock and the stack's compose files; its `stack/.env` gives the stack
    /// names, a port and a network of its own, plus `settings` (e.g. ADMIN_PASSWORD). `xtask` is the
    /// binary `xtask` runs.
    pub fn new(xtask: &Path, test: &str, folders: &[&str], images: &[&str], settings: &[(&str, &str)]) -> Result<Checkout> {
        let real = jhub_docker::repo_root();
        let project = format!("jhub{test}{}", std::process::id());
        let root = std::env::temp_dir().join(format!("jhub-{test}-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for folder in folders {
            copy_folder(&real.join("images").join(folder), &root.join("images").join(folder))?;
        }
        let catalog = std::fs::read_to_string(real.join("images/catalog.toml")).context("cannot read the real images/catalog.toml")?;
        write(&root, "images/catalog.toml", &catalog_blocks(&catalog, images)?)?;
        // The real lock: its records of the copied images are current when their inputs are, so those are
        // found on the engine and not built or checked again.
        std::fs::copy(jhub_docker::lock_path(&real), jhub_docker::lock_path(&root)).context("cannot copy images.lock")?;
        std::fs::create_dir_all(root.join("stack"))?;
        for file in ["docker-compose.yml", "docker-compose.tls.yml"] {
            std::fs::copy(real.join("stack").join(file), root.join("stack").join(file))
                .with_context(|| format!("cannot copy stack/{file}"))?;
        }
        let port = stack::free_port()?;
        // The stack's own names, so it stays apart from a running `jhub` stack and from other tests.
        let mut env: Vec<(String, String)> = vec![
            ("JHUB_STACK_NAME".into(), project.clone()),
            ("JHUB_NETWORK".into(), format!("{project}-net")),
            ("JHUB_USER_VOLUME_PREFIX".into(), format!("{project}-user-")),
            ("JHUB_HTTP_PORT".into(), port.to_string()),
        ];
        env.extend(settings.iter().map(|(key, value)| (key.to_string(), value.to_string())));
        let env_file = root.join("stack/.env");
        let text: String = env.iter().map(|(key, value)| format!("{key}={value}\n")).collect();
        stack::check_settings(&text, &env, &env_file.display().to_string())?;
        jhub_docker::write_atomically(&env_file, text.as_bytes(), 0o600).with_context(|| format!("cannot write {}", env_file.display()))?;
        let lock = Lock::load(&jhub_docker::lock_path(&root))?;
        let hub_image =
            lock.keyed_tag("hub").context("images.lock has no content-keyed tag for `hub`; hint: run `cargo xtask build-images`")?;
        // What `up` passes compose besides the settings file, which `down` needs too.
        let view = root.join("stack/hub-view.json");
        let stack = Stack::adopt(
            &root.join("stack/docker-compose.yml"),
            &env_file,
            &[("JHUB_HUB_IMAGE", hub_image), ("JHUB_HUB_VIEW", &view.to_string_lossy())],
        )?;
        Ok(Checkout {
            root,
            stack: Some(stack),
            xtask: xtask.to_path_buf(),
            path: std::env::var_os("PATH").unwrap_or_default(),
            images: images.iter().map(|image| image.to_string()).collect(),
            images_before: cli_lines(&["images", "-aq", "--no-trunc"]).into_iter().collect(),
            started: SystemTime::now(),
        })
    }

    /// The PATH the xtask runs with (the test's own by default).
    pub fn set_path(&mut self, path: OsString) {
        self.path = path;
    }

    /// The stack the checkout's `up` starts (its URL, its project).
    pub fn stack(&self) -> &Stack {
        self.stack.as_ref().expect("the stack is only taken on drop")
    }

    /// Runs the xtask on this checkout as a person would, with none of the shell's stack settings (every
    /// variable the compose file reads, every `JHUB_*` but the build's CA bundle) and no colour; what it
    /// printed goes to the test's output.
    pub fn xtask(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let mut command = Command::new(&self.xtask);
        command.args(args).env("NO_COLOR", "1").stdin(Stdio::null());
        let compose_file = std::fs::read_to_string(self.root.join("stack/docker-compose.yml")).unwrap_or_default();
        for variable in jhub_docker::compose::variables_of(&compose_file) {
            command.env_remove(variable);
        }
        for (variable, _) in std::env::vars().filter(|(variable, _)| variable.starts_with("JHUB_") && variable != "JHUB_CA_BUNDLE") {
            command.env_remove(variable);
        }
        let output = command.env("JHUB_REPO_ROOT", &self.root).env("PATH", &self.path).output().expect("the xtask binary runs");
        eprintln!(
            "$ xtask {} ({:.0} s)\n{}{}",
            args.join(" "),
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// The checkout's lock as it is now.
    pub fn lock(&self) -> Result<Lock> {
        Ok(Lock::load(&jhub_docker::lock_path(&self.root))?)
    }

    /// The engine's id for the image the checkout's lock's keyed tag names.
    pub fn locked_image_id(&self, image: &str) -> Result<String> {
        let lock = self.lock()?;
        let tag = lock.keyed_tag(image).with_context(|| format!("the checkout's lock has no keyed tag for `{image}`"))?;
        match cli_lines(&["image", "inspect", "-f", "{{.Id}}", tag]).pop() {
            Some(id) => Ok(id),
            None => bail!("the engine has no {tag}"),
        }
    }

    /// Removes the images this test made: the tags of every catalog image of the checkout (the copied ones
    /// and any the test added) whose image the engine did not have before, and the untagged images its
    /// builds left (a multi-stage build's build stage) that are new since the start.
    fn remove_new_images(&self) {
        let mut names = self.images.clone();
        if let Ok(catalog) = jhub_docker::catalog::Catalog::load(&self.root) {
            names.extend(catalog.images.into_iter().map(|image| image.name));
        }
        names.sort();
        names.dedup();
        let mut tags = Vec::new();
        for name in &names {
            for line in cli_lines(&["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}", &format!("jhub/{name}")]) {
                if let Some((id, tag)) = line.split_once(' ')
                    && !self.images_before.contains(id)
                {
                    tags.push(tag.to_string());
                }
            }
        }
        for tag in &tags {
            let _ = Command::new("docker").args(["image", "rm", tag]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        let started = time_of(self.started);
        for id in cli_lines(&["images", "-q", "--no-trunc", "-f", "dangling=true"]) {
            let created = cli_lines(&["image", "inspect", "-f", "{{.Created}}", &id]).pop().unwrap_or_default();
            if !self.images_before.contains(&id) && created >= started {
                let _ = Command::new("docker").args(["image", "rm", &id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
            }
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if stack::keeps() {
            progress!("checkout {} and the images its builds made kept (JHUB_ACCEPTANCE_KEEP=1)", self.root.display());
            return;
        }
        // The stack first: its containers hold the images.
        drop(self.stack.take());
        self.remove_new_images();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The `[[image]]` tables of a catalog's `text` for `images`, verbatim, without the comment lines (which
/// introduce the tables left out).
pub fn catalog_blocks(text: &str, images: &[&str]) -> Result<String> {
    let mut blocks = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut flush = |current: &mut Vec<&str>| {
        let block = current.join("\n");
        let named = images.iter().any(|name| block.lines().any(|line| line == format!("name = \"{name}\"")));
        if block.starts_with("[[image]]") && named {
            let kept: Vec<&str> = block.lines().filter(|line| !line.starts_with('#')).collect();
            blocks.push(kept.join("\n").trim_end().to_string());
        }
        current.clear();
    };
    for line in text.lines() {
        if line.starts_with("[[") {
            flush(&mut current);
        }
        current.push(line);
    }
    flush(&mut current);
    if blocks.len() != images.len() {
        bail!("the real catalog does not list each of {images:?} once ({} tables found)", blocks.len());
    }
    Ok(blocks.join("\n\n") + "\n")
}

/// Copies an image folder as the build context reads it: regular files with their modes, no caches.
fn copy_folder(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if entry.file_name() != "__pycache__" && entry.file_name() != "node_modules" {
                copy_folder(&entry.path(), &to.join(entry.file_name()))?;
            }
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn write(root: &Path, relative: &str, text: &str) -> Result<()> {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().expect("a relative path with a folder"))?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A time as the engine prints `.Created` (RFC 3339, UTC), for comparing as text.
fn time_of(time: SystemTime) -> String {
    let seconds = time.duration_since(std::time::UNIX_EPOCH).map(|since| since.as_secs()).unwrap_or_default();
    let output = Command::new("date").args(["-u", "-d", &format!("@{seconds}"), "+%Y-%m-%dT%H:%M:%S"]).output();
    output.map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn catalog_blocks_keep_the_named_tables_without_comments() {
        let text = "# the catalog\n[[image]]\nname = \"base\"\nrecipe = \"x\"\n\n# a comment\n[[image]]\nname = \"hub\"\n\n[[image]]\nname = \"other\"\n";
        assert_eq!(
            super::catalog_blocks(text, &["base", "hub"]).unwrap(),
            "[[image]]\nname = \"base\"\nrecipe = \"x\"\n\n[[image]]\nname = \"hub\"\n"
        );
        assert!(super::catalog_blocks(text, &["base", "missing"]).is_err());
    }
}
