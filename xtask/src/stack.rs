//! `cargo xtask up` / `down` / `logs`: the compose stack in `stack/`, started with the hub image the lock
//! records, waited for until `/hub/health` answers, and torn down together with the user containers that
//! DockerSpawner started (compose does not know those; they carry the stack's label).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder};
use jhub_docker::compose::{self, Compose};
use jhub_docker::lock::Lock;

use crate::engine;
use crate::ui::{self, UserError};

const HEALTH_TIMEOUT: Duration = Duration::from_secs(180);

/// The stack's settings: `stack/.env` overlaid by the process environment (as compose does it).
struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    fn load(env_file: &Path) -> Settings {
        let mut values = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(env_file) {
            for line in text.lines().map(str::trim).filter(|line| !line.starts_with('#')) {
                if let Some((key, value)) = line.split_once('=') {
                    values.insert(key.trim().to_string(), value.trim().trim_matches('"').to_string());
                }
            }
        }
        for (key, value) in std::env::vars() {
            if values.contains_key(&key) || key.starts_with("JHUB_") {
                values.insert(key, value);
            }
        }
        Settings { values }
    }

    fn get(&self, key: &str, default: &str) -> String {
        self.values.get(key).filter(|value| !value.is_empty()).cloned().unwrap_or_else(|| default.to_string())
    }
}

fn stack_dir() -> PathBuf {
    jhub_docker::repo_root().join("stack")
}

fn compose_for(settings: &Settings, hub_image: &str) -> Result<Compose, UserError> {
    let cli = compose::detect_cli()?;
    let project = settings.get("JHUB_STACK_NAME", "jhub");
    Ok(Compose::new(cli, &stack_dir().join("docker-compose.yml"), &project).with_env("JHUB_HUB_IMAGE", hub_image))
}

/// The hub image the lock records, as its content-keyed tag.
fn locked_hub_image() -> Result<String, UserError> {
    let lock = Lock::load(&jhub_docker::lock_path(&jhub_docker::repo_root()))?;
    lock.image
        .get("hub")
        .and_then(|hub| hub.keyed_tag().map(str::to_string))
        .ok_or_else(|| UserError::new("images.lock has no hub image", "run `cargo xtask build-images`"))
}

pub fn up(args: &[String]) -> anyhow::Result<()> {
    let mut build = true;
    for arg in args {
        match arg.as_str() {
            "--no-build" => build = false,
            other => return Err(UserError::new(format!("unknown option `{other}` for up"), "the only option is --no-build").into()),
        }
    }
    if build {
        // Cached images cost a few seconds; missing or changed ones are built.
        crate::build::run(&[])?;
    }
    let env_file = stack_dir().join(".env");
    let new_password = ensure_env_file(&env_file)?;
    let settings = Settings::load(&env_file);
    let hub_image = locked_hub_image()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let docker = engine::connect().await?;
        if !engine::image_exists(&docker, &hub_image).await {
            return Err(UserError::new(
                format!("the locked hub image {hub_image} is not on this engine"),
                "run `cargo xtask build-images` (or `cargo xtask up` without --no-build)",
            )
            .into());
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let compose = compose_for(&settings, &hub_image)?;
    ui::note(&format!("starting the stack `{}`", compose.project()));
    compose.run(&["up", "-d", "--remove-orphans"])?;
    let port = settings.get("JHUB_HTTP_PORT", "8000");
    let started = Instant::now();
    while !hub_is_healthy(&port) {
        if started.elapsed() > HEALTH_TIMEOUT {
            return Err(UserError::new(
                format!("the hub did not answer http://127.0.0.1:{port}/hub/health within {} s", HEALTH_TIMEOUT.as_secs()),
                "see why with `cargo xtask logs hub`",
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("jhub-docker is up at http://localhost:{port} (ready in {:.0} s)", started.elapsed().as_secs_f64());
    match new_password {
        Some(password) => {
            println!("admin login: user `admin`, password `{password}`");
            println!("  (shown once; it is kept in stack/.env, mode 600)");
        }
        None if settings.get("ADMIN_PASSWORD", "").is_empty() => {
            println!("admin login: sign up as `admin` at http://localhost:{port}/hub/signup before anyone else does");
        }
        None => println!("admin login: user `admin`, password from ADMIN_PASSWORD in stack/.env"),
    }
    Ok(())
}

/// Creates `stack/.env` (mode 600) with a generated admin password when it does not exist; returns the
/// password when it made one, so it is printed exactly once.
fn ensure_env_file(env_file: &Path) -> anyhow::Result<Option<String>> {
    if env_file.exists() {
        return Ok(None);
    }
    let mut random = [0u8; 18];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let password: String = random.iter().map(|byte| ALPHABET[*byte as usize % ALPHABET.len()] as char).collect();
    let text = format!(
        "# Written by `cargo xtask up`; see stack/.env.example for every setting.\n# The admin account `admin` is created with this password at the hub's start.\nADMIN_PASSWORD={password}\n"
    );
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(env_file)?;
    file.write_all(text.as_bytes())?;
    Ok(Some(password))
}

fn hub_is_healthy(port: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"GET /hub/health HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

pub fn down(args: &[String]) -> anyhow::Result<()> {
    let mut remove_volumes = false;
    for arg in args {
        match arg.as_str() {
            "--volumes" => remove_volumes = true,
            other => {
                return Err(UserError::new(
                    format!("unknown option `{other}` for down"),
                    "the only option is --volumes (also deletes user files)",
                )
                .into());
            }
        }
    }
    let settings = Settings::load(&stack_dir().join(".env"));
    let stack = settings.get("JHUB_STACK_NAME", "jhub");
    // `down` must work even when the lock or the hub image is gone; the reference is only interpolated.
    let hub_image = locked_hub_image().unwrap_or_else(|_| "jhub/hub:latest".to_string());
    let runtime = tokio::runtime::Runtime::new()?;
    let removed = runtime.block_on(async {
        let docker = engine::connect().await?;
        let labels = HashMap::from([("label", vec![format!("io.jhub-docker.stack={stack}")])]);
        let containers = docker.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&labels).build())).await?;
        for container in &containers {
            let id = container.id.as_deref().unwrap_or_default();
            docker.remove_container(id, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await?;
        }
        Ok::<_, anyhow::Error>(containers.len())
    })?;
    ui::note(&format!("removed {removed} user container(s)"));
    let compose = compose_for(&settings, &hub_image)?;
    let mut compose_args = vec!["down", "--remove-orphans"];
    if remove_volumes {
        compose_args.push("--volumes");
    }
    compose.run(&compose_args)?;
    if remove_volumes {
        let prefix = settings.get("JHUB_USER_VOLUME_PREFIX", "jupyterhub-user-");
        let count = runtime.block_on(async {
            let docker = engine::connect().await?;
            let volumes = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().build())).await?;
            let mut count = 0;
            for volume in volumes.volumes.unwrap_or_default().iter().filter(|volume| volume.name.starts_with(&prefix)) {
                docker.remove_volume(&volume.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await?;
                count += 1;
            }
            Ok::<_, anyhow::Error>(count)
        })?;
        ui::note(&format!("removed the hub's data volume and {count} user volume(s)"));
    } else {
        ui::note("user volumes and the hub's data are kept (`cargo xtask down --volumes` deletes them)");
    }
    Ok(())
}

pub fn logs(args: &[String]) -> anyhow::Result<()> {
    let settings = Settings::load(&stack_dir().join(".env"));
    let hub_image = locked_hub_image().unwrap_or_else(|_| "jhub/hub:latest".to_string());
    let compose = compose_for(&settings, &hub_image)?;
    if compose.run(&["ps", "-q"])?.trim().is_empty() {
        return Err(UserError::new(format!("the stack `{}` is not running", compose.project()), "start it with `cargo xtask up`").into());
    }
    let mut compose_args = vec!["logs", "--follow", "--tail", "200"];
    compose_args.extend(args.iter().map(String::as_str));
    let status = compose.command(&compose_args).status()?;
    if !status.success() {
        return Err(UserError::new(format!("compose logs failed ({status})"), "is the stack up? `cargo xtask up` starts it").into());
    }
    Ok(())
}
