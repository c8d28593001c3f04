//! What a run needs before it starts anything: Docker, the docker and compose CLIs, chromedriver and
//! Chromium, the catalog, images.lock and every locked image present in the engine (found by its
//! content-keyed tag, whose id the run then expects). A missing piece fails the test with its reason and a
//! `hint:`; nothing is skipped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Result, bail};
use bollard::Docker;
use jhub_docker::catalog::Catalog;
use jhub_docker::host::{self, CHROMEDRIVER, CHROMIUM};
use jhub_docker::lock::Lock;

/// Everything a run reads from the checkout and the host, checked.
pub struct Setup {
    pub root: PathBuf,
    pub catalog: Catalog,
    pub lock: Lock,
    pub compose_cli: Vec<String>,
    pub compose_file: PathBuf,
    pub docker: Docker,
    /// This engine's id for each locked image the run needs (the image its keyed tag names).
    pub image_ids: BTreeMap<String, String>,
}

impl Setup {
    /// This engine's id for the build the lock records for the catalog entry `name` (checked by `check`).
    pub fn image_id(&self, name: &str) -> &str {
        &self.image_ids[name]
    }

    /// The hub image reference the stack runs: the lock's content-keyed tag for `hub`.
    pub fn hub_image(&self) -> &str {
        self.lock.keyed_tag("hub").expect("checked by preflight")
    }
}

fn answers(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Checks the host and the checkout; on failure lists every problem found, each with its hint.
pub async fn check() -> Result<Setup> {
    let root = jhub_docker::repo_root();
    let mut problems: Vec<String> = Vec::new();

    let docker = match Docker::connect_with_local_defaults() {
        Ok(docker) => match docker.negotiate_version().await {
            Ok(docker) => match docker.ping().await {
                Ok(_) => Some(docker),
                Err(err) => {
                    problems.push(format!("the Docker engine does not answer a ping: {err}\nhint: start dockerd"));
                    None
                }
            },
            Err(err) => {
                problems.push(format!(
                    "cannot reach the Docker engine at /var/run/docker.sock: {err}\nhint: start dockerd (or set DOCKER_HOST)"
                ));
                None
            }
        },
        Err(err) => {
            problems.push(format!("cannot set up a Docker client: {err}\nhint: start dockerd (or set DOCKER_HOST)"));
            None
        }
    };
    if !answers("docker", &["--version"]) {
        problems.push("the docker CLI is not on PATH (the harness uses it to clean up)\nhint: apt-get install -y docker.io".to_string());
    }
    let compose_cli = match jhub_docker::compose::detect_cli() {
        Ok(cli) => cli,
        Err(err) => {
            problems.push(format!("{}\nhint: {}", err.message, err.hint));
            Vec::new()
        }
    };
    // The browser the tests drive, looked for where they will start it, with `jhub_docker::host`'s hints
    // (the ones `cargo xtask doctor` gives).
    let chromedriver = host::chromedriver_program();
    if !answers(&chromedriver.to_string_lossy(), &["--version"]) {
        problems.push(format!("chromedriver (`{}`) does not run\nhint: {}", chromedriver.display(), CHROMEDRIVER.install));
    }
    let chromium = host::chromium_binary();
    if !chromium.is_file() {
        problems.push(format!("Chromium is not at {}\nhint: {}", chromium.display(), CHROMIUM.install));
    }
    let compose_file = root.join("stack").join("docker-compose.yml");
    if !compose_file.is_file() {
        problems.push(format!(
            "the compose file {} does not exist\nhint: it is part of the checkout; restore it with `git checkout stack/`",
            compose_file.display()
        ));
    }

    let catalog = match Catalog::load(&root) {
        Ok(catalog) => Some(catalog),
        Err(err) => {
            problems.push(err.to_string());
            None
        }
    };
    let lock_path = jhub_docker::lock_path(&root);
    let lock = match Lock::load(&lock_path) {
        Ok(lock) if lock.image.is_empty() => {
            problems.push(format!("{} does not exist or lists no image\nhint: run `cargo xtask build-images`", lock_path.display()));
            None
        }
        Ok(lock) => Some(lock),
        Err(err) => {
            problems.push(err.to_string());
            None
        }
    };
    let mut image_ids = BTreeMap::new();
    if let (Some(catalog), Some(lock)) = (&catalog, &lock) {
        let mut needed: Vec<&str> = vec!["base", "hub"];
        needed.extend(catalog.single_user_images().map(|(image, _)| image.name.as_str()));
        // The HTTPS test's front door.
        needed.extend(catalog.get("nginx").map(|image| image.name.as_str()));
        // The LDAP test's directory.
        needed.extend(catalog.get("ldap").map(|image| image.name.as_str()));
        let unlocked: Vec<&str> = needed.iter().copied().filter(|name| !lock.image.contains_key(*name)).collect();
        if !unlocked.is_empty() {
            problems.push(format!(
                "images.lock has no entry for {}\nhint: run `cargo xtask build-images`",
                unlocked.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        if lock.image.get("hub").is_some_and(|hub| hub.keyed_tag().is_none()) {
            problems.push("images.lock lists no content-keyed tag for `hub`\nhint: run `cargo xtask build-images`".to_string());
        }
        let mut absent = Vec::new();
        for name in needed {
            if let (Some(docker), Some(locked)) = (&docker, lock.image.get(name)) {
                let tag = locked.keyed_tag().unwrap_or_default();
                match docker.inspect_image(tag).await.ok().and_then(|image| image.id) {
                    Some(id) => {
                        image_ids.insert(name.to_string(), id);
                    }
                    None => absent.push(format!("`{name}` ({tag})")),
                }
            }
        }
        if !absent.is_empty() {
            problems.push(format!(
                "images.lock names images the Docker engine does not have: {}\nhint: run `cargo xtask build-images`",
                absent.join(", ")
            ));
        }
    }

    match (docker, catalog, lock) {
        (Some(docker), Some(catalog), Some(lock)) if problems.is_empty() => {
            Ok(Setup { root, catalog, lock, compose_cli, compose_file, docker, image_ids })
        }
        _ => bail!("acceptance preflight failed:\n{}", problems.join("\n")),
    }
}
