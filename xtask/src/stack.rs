//! `cargo xtask up` / `down` / `logs`: the compose stack in `stack/`, started with the hub image the lock
//! records, waited for until `/hub/health` answers, and torn down together with the user containers that
//! DockerSpawner started (compose does not know those; they carry the stack's label).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
};
use jhub_docker::compose::{self, Compose};
use jhub_docker::lock::Lock;

use crate::ui::{self, UserError};
use crate::{engine, tls};

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
                    values.insert(key.trim().to_string(), env_value(value));
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

/// A value of a `.env` line as compose reads it: quotes removed; for an unquoted value, a ` #` starts a
/// comment.
fn env_value(raw: &str) -> String {
    let raw = raw.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = raw.strip_prefix(quote).and_then(|rest| rest.split_once(quote)) {
            return inner.0.to_string();
        }
    }
    match raw.find(" #") {
        Some(comment) => raw[..comment].trim_end().to_string(),
        None => raw.to_string(),
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

/// The hub image for verbs that only need compose to interpolate the file (`down`, `logs`): they must work
/// even when the lock or the image is gone.
fn hub_image_to_interpolate() -> String {
    locked_hub_image().unwrap_or_else(|_| "jhub/hub:latest".to_string())
}

pub fn up(args: &[String]) -> anyhow::Result<()> {
    let mut build = true;
    for arg in args {
        match arg.as_str() {
            "--no-build" => build = false,
            other => return Err(UserError::new(format!("unknown option `{other}` for up"), "the only option is --no-build").into()),
        }
    }
    let env_file = stack_dir().join(".env");
    // JHUB_TLS: bad input refused and the certificate made or renewed before anything is built or started.
    let mut tls = tls::prepare(|key, default| Settings::load(&env_file).get(key, default))?;
    if build {
        // Cached images cost a few seconds; missing or changed ones are built.
        crate::build::run(&[])?;
    }
    let new_password = ensure_admin_password(&env_file)?;
    if let Some(password) = &new_password {
        // Printed now, not after the start: a start that fails must not swallow the only showing.
        println!("admin login: user `admin`, password `{password}`");
        println!("  (shown once; it is kept in stack/.env, mode 600)");
    }
    let settings = Settings::load(&env_file);
    let hub_image = locked_hub_image()?;
    let root = jhub_docker::repo_root();
    // The hub reads the catalog and the lock at start: a digest of both in its environment makes compose
    // recreate it when either changed (a rebuilt image), so it never spawns an id the lock left behind.
    let mut catalog_and_lock = std::fs::read(jhub_docker::catalog_path(&root))?;
    catalog_and_lock.extend(std::fs::read(jhub_docker::lock_path(&root))?);
    let config_digest = crate::context::sha256_hex(&catalog_and_lock);
    let runtime = tokio::runtime::Runtime::new()?;
    let docker = runtime.block_on(engine::connect())?;
    if !runtime.block_on(engine::image_exists(&docker, &hub_image)) {
        return Err(UserError::new(
            format!("the locked hub image {hub_image} is not on this engine"),
            "run `cargo xtask build-images` (or `cargo xtask up` without --no-build)",
        )
        .into());
    }
    tls.test_nginx(&docker, &runtime)?;
    let compose = tls.apply(compose_for(&settings, &hub_image)?.with_env("JHUB_CONFIG_DIGEST", &config_digest));
    ui::note(&format!("starting the stack `{}`", compose.project()));
    compose.run(&["up", "-d", "--remove-orphans"])?;
    let port = settings.get("JHUB_HTTP_PORT", "8000");
    let host = match settings.get("JHUB_BIND_ADDRESS", "127.0.0.1").as_str() {
        "0.0.0.0" | "::" => "127.0.0.1".to_string(),
        address => address.to_string(),
    };
    let started = Instant::now();
    let mut last_state_check = Instant::now();
    let healthy = || if tls.enabled() { tls::front_door_healthy(&compose, &runtime, &docker) } else { hub_is_healthy(&host, &port) };
    while !healthy() {
        if started.elapsed() > HEALTH_TIMEOUT {
            return Err(UserError::new(
                format!("the hub did not answer http://{host}:{port}/hub/health within {} s", HEALTH_TIMEOUT.as_secs()),
                "see why with `cargo xtask logs hub`",
            )
            .into());
        }
        if last_state_check.elapsed() > Duration::from_secs(3) {
            last_state_check = Instant::now();
            stop_if_hub_exited(&compose, &runtime, &docker)?;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let shown_host = if host == "127.0.0.1" { "localhost" } else { host.as_str() };
    let url = tls.url.clone().unwrap_or_else(|| format!("http://{shown_host}:{port}"));
    println!("jhub-docker is up at {url} (ready in {:.0} s)", started.elapsed().as_secs_f64());
    match new_password {
        Some(_) => println!("log in as `admin` with the password shown above"),
        None if settings.get("ADMIN_PASSWORD", "").is_empty() => {
            println!("admin login: sign up as `admin` at {url}/hub/signup before anyone else does");
        }
        None => println!("admin login: user `admin`, password from ADMIN_PASSWORD in stack/.env"),
    }
    Ok(())
}

/// Makes sure `stack/.env` (mode 600) names an admin password: creates the file with a generated one, or
/// appends one to a file (such as a copy of .env.example) that has no `ADMIN_PASSWORD=` line at all. An
/// explicit empty `ADMIN_PASSWORD=` is left alone: that admin chose the sign-up-as-admin path. Returns the
/// password when it made one, so it is printed exactly once.
fn ensure_admin_password(env_file: &Path) -> anyhow::Result<Option<String>> {
    use std::os::unix::fs::OpenOptionsExt;
    let existing = match std::fs::read_to_string(env_file) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(UserError::new(format!("cannot read {}: {err}", env_file.display()), "check its permissions").into()),
    };
    let names_password = |text: &str| text.lines().any(|line| line.trim_start().starts_with("ADMIN_PASSWORD="));
    if existing.as_deref().is_some_and(names_password) || std::env::var_os("ADMIN_PASSWORD").is_some() {
        return Ok(None);
    }
    let mut random = [0u8; 18];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let password: String = random.iter().map(|byte| ALPHABET[*byte as usize % ALPHABET.len()] as char).collect();
    let mut text = String::new();
    if existing.is_none() {
        text.push_str("# Written by `cargo xtask up`; see stack/.env.example for every setting.\n");
    }
    text.push_str(&format!("# The admin account `admin` is created with this password at the hub's start.\nADMIN_PASSWORD={password}\n"));
    let mut file = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(env_file)?;
    file.write_all(text.as_bytes())?;
    Ok(Some(password))
}

/// Fails fast, with the hub's last log lines, when the hub container stopped or keeps restarting (a
/// configuration error ends it with an `error:` and a `hint:` line) instead of waiting out the timeout.
fn stop_if_hub_exited(compose: &Compose, runtime: &tokio::runtime::Runtime, docker: &Docker) -> anyhow::Result<()> {
    let id = compose.run(&["ps", "-q", "hub"])?.trim().to_string();
    if id.is_empty() {
        return Ok(());
    }
    let inspected = runtime.block_on(docker.inspect_container(&id, None::<InspectContainerOptions>))?;
    let running = inspected.state.and_then(|state| state.running).unwrap_or(false);
    let restarted = inspected.restart_count.unwrap_or(0) > 0;
    if !running || restarted {
        let logs = compose.command(&["logs", "--no-color", "--tail", "15", "hub"]).output()?;
        eprintln!("{}", String::from_utf8_lossy(&logs.stdout).trim_end());
        return Err(UserError::new(
            "the hub stopped during start-up; its last log lines are above",
            "fix what its `error:` line names in stack/.env, then run `cargo xtask up` again",
        )
        .into());
    }
    Ok(())
}

fn hub_is_healthy(host: &str, port: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(format!("{host}:{port}")) else { return false };
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
    let compose =
        tls::for_running_stack(|key, default| settings.get(key, default)).apply(compose_for(&settings, &hub_image_to_interpolate())?);
    // Stop the hub first, so it cannot spawn (or the culler restart) a container while they are removed.
    compose.run(&["stop", "hub"])?;
    let runtime = tokio::runtime::Runtime::new()?;
    let docker = runtime.block_on(engine::connect())?;
    let removed = runtime.block_on(async {
        let labels = HashMap::from([("label", vec![format!("io.jhub-docker.stack={stack}")])]);
        let containers = docker.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&labels).build())).await?;
        for container in &containers {
            let id = container.id.as_deref().unwrap_or_default();
            docker.remove_container(id, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await?;
        }
        Ok::<_, anyhow::Error>(containers.len())
    })?;
    ui::note(&format!("removed {removed} user container(s)"));
    let mut compose_args = vec!["down", "--remove-orphans"];
    if remove_volumes {
        compose_args.push("--volumes");
    }
    compose.run(&compose_args)?;
    if remove_volumes {
        let prefix = settings.get("JHUB_USER_VOLUME_PREFIX", "jupyterhub-user-");
        let count = runtime.block_on(async {
            let volumes = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().build())).await?;
            let mut count = 0;
            for volume in volumes.volumes.unwrap_or_default().iter().filter(|volume| volume.name.starts_with(&prefix)) {
                docker.remove_volume(&volume.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await.map_err(|err| {
                    UserError::new(
                        format!("cannot remove the user volume {}: {err}", volume.name),
                        "a container still uses it: `docker ps -a --filter volume=<name>` shows which",
                    )
                })?;
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
    let compose =
        tls::for_running_stack(|key, default| settings.get(key, default)).apply(compose_for(&settings, &hub_image_to_interpolate())?);
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

#[cfg(test)]
mod tests {
    use super::env_value;

    #[test]
    fn env_values_read_like_compose() {
        assert_eq!(env_value("8080 # the port"), "8080");
        assert_eq!(env_value("\"a # b\""), "a # b");
        assert_eq!(env_value("'x'"), "x");
        assert_eq!(env_value("pass#word"), "pass#word");
        assert_eq!(env_value(""), "");
    }
}
