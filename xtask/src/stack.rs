//! `cargo xtask up` / `down` / `logs`: the compose lifecycle of the stack in `stack/`, started with the hub
//! image the lock records after setting up what the host lacks (`host`) and the admin password
//! (`stack_settings`), waited for by Compose v2's `up --wait` (the services' healthchecks), and torn down
//! together with the user containers that DockerSpawner started (compose does not know those; they carry
//! the stack's label) and, on request, this stack's user volumes only.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use jhub_docker::compose::{self, Compose};
use jhub_docker::contract::{ARCHIVED_USER_LABEL, STACK_LABEL};
use jhub_docker::lock::Lock;

use crate::stack_settings::{Settings, default_env_file, ensure_admin_password, signup_exposure};
use crate::ui::{self, UserError};
use crate::{build, engine, host, tls};

/// How long `up --wait` may take for every service to pass its healthcheck.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(180);

pub(crate) fn stack_dir() -> PathBuf {
    jhub_docker::repo_root().join("stack")
}

/// Where `up` writes the hub's resolved view (not committed: it holds this engine's image ids).
fn hub_view_path() -> PathBuf {
    stack_dir().join("hub-view.json")
}

fn compose_for(settings: &Settings, hub_image: &str) -> Result<Compose, UserError> {
    let cli = compose::detect_cli()?;
    let mut compose = Compose::new(cli, &stack_dir().join("docker-compose.yml"), &settings.stack_name)
        .with_env("JHUB_HUB_IMAGE", hub_image)
        .with_env("JHUB_HUB_VIEW", &hub_view_path().to_string_lossy());
    if settings.get("AUTH_STRATEGY", "native") == "ldap" {
        // The directory's CA and the search account's password file, from stack/ldap/ (or JHUB_LDAP_DIR).
        compose = compose.with_overlay(&stack_dir().join("docker-compose.ldap.yml"));
    }
    Ok(compose)
}

/// The hub image the lock records, as its content-keyed tag.
pub(crate) fn locked_hub_image() -> Result<String, UserError> {
    let lock = Lock::load(&jhub_docker::lock_path(&jhub_docker::repo_root()))?;
    lock.keyed_tag("hub")
        .map(str::to_string)
        .ok_or_else(|| UserError::new("images.lock has no hub image", "run `cargo xtask build-images`"))
}

/// The hub image for verbs that only need compose to interpolate the file (`down`, `logs`): they must work
/// even when the lock or the image is gone.
fn hub_image_to_interpolate() -> String {
    locked_hub_image().unwrap_or_else(|_| "jhub/hub:latest".to_string())
}

/// `cargo xtask up`; `build` is None with --no-build.
pub fn up(build: Option<build::Options>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    host::set_up_host(&runtime, build.is_some())?;
    let env_file = default_env_file();
    let early = Settings::load(&env_file)?;
    // The swarm spawner on one engine would make services no swarm runs: `up --swarm` sets the mode. Checked
    // before anything is written (the admin password) or built.
    if early.get("JHUB_MODE", "single") != "single" {
        return Err(UserError::new(
            format!(
                "{} sets JHUB_MODE={}, and `cargo xtask up` runs the single-host stack",
                env_file.display(),
                early.get("JHUB_MODE", "")
            ),
            "deploy on a swarm with `cargo xtask up --swarm` (it sets the mode itself), or remove the line",
        )
        .into());
    }
    // JHUB_TLS: bad input refused and the certificate made or renewed before anything is built or started.
    let mut tls = tls::prepare(|key, default| early.get(key, default))?;
    if let Some(options) = build {
        // Cached images cost a few seconds; missing or changed ones are built.
        build::run(options)?;
    }
    // With the directory checking passwords there is no `admin` account to make.
    let ldap = early.get("AUTH_STRATEGY", "native") == "ldap";
    let new_password = if ldap { None } else { ensure_admin_password(&env_file)? };
    if let Some(password) = &new_password {
        // Printed now, not after the start: a start that fails must not swallow the only showing.
        println!("admin login: user `admin`, password `{password}`");
        println!("  (shown once; it is kept in stack/.env, mode 600)");
    }
    let settings = Settings::load(&env_file)?;
    if let Some((message, hint)) = signup_exposure(&settings.get("JHUB_BIND_ADDRESS", "127.0.0.1"), &settings.get("OPEN_SIGNUP", "")) {
        ui::warn(&message, &hint);
    }
    let hub_image = locked_hub_image()?;
    let docker = runtime.block_on(engine::connect())?;
    // The hub reads its view once at start, and the view is replaced by rename, so a running container's
    // bind mount keeps showing the old file: its digest in the hub's environment makes compose recreate
    // the hub when it changed (a rebuilt image), so it never spawns an id the lock left behind.
    let view_path = hub_view_path();
    let view = runtime.block_on(crate::view::write(&docker, &jhub_docker::repo_root(), &view_path))?;
    let config_digest = crate::context::sha256_hex(view.as_bytes());
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
    let started = Instant::now();
    runtime.block_on(up_and_wait(&compose, &docker))?;
    let port = settings.http_port()?;
    let host = match settings.get("JHUB_BIND_ADDRESS", "127.0.0.1").as_str() {
        "0.0.0.0" | "::" => "127.0.0.1".to_string(),
        address => address.to_string(),
    };
    let shown_host = if host == "127.0.0.1" { "localhost" } else { host.as_str() };
    let url = tls.url.clone().unwrap_or_else(|| format!("http://{shown_host}:{port}"));
    println!("jhub-docker is up at {url} (ready in {:.0} s)", started.elapsed().as_secs_f64());
    match new_password {
        None if ldap => println!("log in with a directory account; admins are the members of LDAP_ADMIN_GROUPS"),
        Some(_) => println!("log in as `admin` with the password shown above"),
        // ADMIN_PASSWORD may come from the shell instead of stack/.env (compose passes either on).
        None if settings.get("ADMIN_PASSWORD", "").is_empty() && std::env::var("ADMIN_PASSWORD").unwrap_or_default().is_empty() => {
            println!("admin login: sign up as `admin` at {url}/hub/signup before anyone else does");
        }
        None => println!("admin login: user `admin`, password from ADMIN_PASSWORD (stack/.env or the environment)"),
    }
    Ok(())
}

/// `compose up -d --wait`: compose waits for every healthcheck to pass. Meanwhile the engine's events say
/// whether the hub's process ended on its own (a `die` that no `kill` preceded: compose's stop and
/// recreate send a kill first); a configuration error ends it with an `error:` and a `hint:` line, and then
/// `up` stops at once with the hub's last log lines instead of waiting out the timeout.
async fn up_and_wait(compose: &Compose, docker: &Docker) -> anyhow::Result<()> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let since = format!("{}.{:09}", since.as_secs(), since.subsec_nanos());
    let labels = [format!("com.docker.compose.project={}", compose.project()), "com.docker.compose.service=hub".to_string()];
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([
        ("type", vec!["container"]),
        ("event", vec!["kill", "die"]),
        ("label", labels.iter().map(String::as_str).collect()),
    ]);
    // `since` = now: events are delivered even if the stream is first read after compose has begun.
    let mut events = docker.events(Some(EventsOptionsBuilder::default().since(&since).filters(&filters).build()));
    let timeout = HEALTH_TIMEOUT.as_secs().to_string();
    let args = ["up", "-d", "--wait", "--wait-timeout", &timeout, "--remove-orphans"];
    let mut child = tokio::process::Command::from(compose.command(&args)).stdin(Stdio::null()).kill_on_drop(true).spawn()?;
    let mut killed: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                if status.success() {
                    return Ok(());
                }
                // A hub that had already crashed before this `up` (restart loop) shows as unhealthy at once.
                if hub_has_stopped(compose, docker).await {
                    return Err(hub_stopped(compose)?);
                }
                return Err(UserError::new(
                    format!("`compose {}` failed ({status}): the stack did not become healthy", args.join(" ")),
                    "see why with `cargo xtask logs hub` (`docker compose ps` shows each service's health)",
                )
                .into());
            }
            Some(event) = events.next() => {
                let Ok(event) = event else { continue };
                let id = event.actor.and_then(|actor| actor.id).unwrap_or_default();
                match event.action.as_deref() {
                    Some("kill") => {
                        killed.insert(id);
                    }
                    Some("die") if !killed.contains(&id) => {
                        let _ = child.kill().await;
                        return Err(hub_stopped(compose)?);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Whether the hub container has exited or restarted (its restart policy brings a crashed hub back).
async fn hub_has_stopped(compose: &Compose, docker: &Docker) -> bool {
    let Ok(ids) = compose.run(&["ps", "--all", "--quiet", "hub"]) else { return false };
    let Some(id) = ids.lines().next().filter(|id| !id.is_empty()) else { return false };
    match docker.inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>).await {
        Ok(inspected) => {
            let running = inspected.state.as_ref().and_then(|state| state.running).unwrap_or(false);
            let restarting = inspected.state.as_ref().and_then(|state| state.restarting).unwrap_or(false);
            !running || restarting || inspected.restart_count.unwrap_or(0) > 0
        }
        Err(_) => false,
    }
}

/// Prints the hub's last log lines and returns the error that points at them.
fn hub_stopped(compose: &Compose) -> anyhow::Result<anyhow::Error> {
    let logs = compose.command(&["logs", "--no-color", "--no-log-prefix", "--tail", "15", "hub"]).output()?;
    eprintln!("{}", without_terminal_codes(&String::from_utf8_lossy(&logs.stdout)).trim_end());
    Ok(UserError::new(
        "the hub stopped during start-up; its last log lines are above",
        "fix what its `error:` line names in stack/.env, then run `cargo xtask up` again",
    )
    .into())
}

/// `text` without the terminal control sequences (`ESC [ … letter`) compose writes even with --no-color.
fn without_terminal_codes(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    plain
}

/// `cargo xtask down [--volumes [--force]]`.
pub fn down(remove_volumes: bool, force: bool, env_file: &Path) -> anyhow::Result<()> {
    let settings = Settings::load(env_file)?;
    let stack = settings.stack_name.clone();
    let mut compose = compose_for(&settings, &hub_image_to_interpolate())?;
    if env_file != default_env_file() {
        compose = compose.with_env_file(env_file);
    }
    let compose = tls::for_running_stack(|key, default| settings.get(key, default)).apply(compose);
    // Stop the hub first, so it cannot spawn (or the culler restart) a container while they are removed.
    compose.run(&["stop", "hub"])?;
    let runtime = tokio::runtime::Runtime::new()?;
    let docker = runtime.block_on(engine::connect())?;
    // The volumes this stack's user containers mount: this stack's, label or not (read before removal).
    let (removed, mounted) = runtime.block_on(async {
        let labels = HashMap::from([("label", vec![format!("{STACK_LABEL}={stack}")])]);
        let containers = docker.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&labels).build())).await?;
        let mut mounted = BTreeSet::new();
        for container in &containers {
            for mount in container.mounts.iter().flatten() {
                if mount.typ.as_deref() == Some("volume")
                    && let Some(name) = &mount.name
                {
                    mounted.insert(name.clone());
                }
            }
            let id = container.id.as_deref().unwrap_or_default();
            docker.remove_container(id, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await?;
        }
        Ok::<_, anyhow::Error>((containers.len(), mounted))
    })?;
    ui::note(&format!("removed {removed} user container(s)"));
    let mut compose_args = vec!["down", "--remove-orphans"];
    if remove_volumes {
        compose_args.push("--volumes");
    }
    compose.run(&compose_args)?;
    if !remove_volumes {
        ui::note("user volumes and the hub's data are kept (`cargo xtask down --volumes` deletes them)");
        return Ok(());
    }
    let prefix = settings.user_volume_prefix.clone();
    let volumes = runtime.block_on(docker.list_volumes(Some(ListVolumesOptionsBuilder::default().build())))?;
    let candidates: Vec<(String, HashMap<String, String>)> =
        volumes.volumes.unwrap_or_default().into_iter().map(|volume| (volume.name, volume.labels)).collect();
    let choice = choose_user_volumes(&candidates, &stack, &prefix, &mounted, force);
    runtime.block_on(async {
        for name in &choice.remove {
            docker.remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>).await.map_err(|err| {
                UserError::new(
                    format!("cannot remove the user volume {name}: {err}"),
                    format!("a container still uses it: `docker ps -a --filter volume={name}` shows which"),
                )
            })?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    ui::note(&format!("removed the hub's data volume and {} user volume(s) of the stack `{stack}`", choice.remove.len()));
    if !choice.archives.is_empty() {
        ui::note(&format!(
            "kept {} archive(s) of deleted users' files (`cargo xtask archives` lists them, `--purge-all --yes` deletes them)",
            choice.archives.len()
        ));
    }
    if !choice.unlabelled.is_empty() {
        eprintln!(
            "warning: kept {} volume(s) named `{prefix}…` that carry no `{STACK_LABEL}` label, so may belong to another \
             deployment: {}",
            choice.unlabelled.len(),
            choice.unlabelled.join(", ")
        );
        eprintln!(
            "hint: volumes an earlier restore made carry no label: `cargo xtask adopt-volumes` labels those of this stack's \
             users; if no other deployment uses the prefix `{prefix}`, `cargo xtask down --volumes --force` deletes them"
        );
    }
    Ok(())
}

/// Which volumes `down --volumes` deletes, which unlabelled ones it keeps, and which archives of deleted
/// users it keeps.
#[derive(Debug, PartialEq, Eq)]
struct VolumeChoice {
    remove: Vec<String>,
    unlabelled: Vec<String>,
    archives: Vec<String>,
}

/// The rule for user volumes, label first: a volume labelled `io.jhub-docker.stack=<stack>` is this
/// stack's; one labelled for another stack never is, whatever its name. A volume without the label is this
/// stack's when a container of this stack mounted it; other unlabelled volumes named `<prefix>…` are only
/// deleted with `force` (the prefix alone does not say which deployment made them). Archives of deleted
/// users (labelled `io.jhub-docker.archived-user`) are never deleted here: only `xtask archives --yes` does.
fn choose_user_volumes(
    volumes: &[(String, HashMap<String, String>)],
    stack: &str,
    prefix: &str,
    mounted: &BTreeSet<String>,
    force: bool,
) -> VolumeChoice {
    let mut choice = VolumeChoice { remove: Vec::new(), unlabelled: Vec::new(), archives: Vec::new() };
    for (name, labels) in volumes {
        if labels.contains_key(ARCHIVED_USER_LABEL) {
            if labels.get(STACK_LABEL).is_some_and(|owner| owner == stack) {
                choice.archives.push(name.clone());
            }
            continue;
        }
        match labels.get(STACK_LABEL) {
            Some(owner) if owner == stack => choice.remove.push(name.clone()),
            Some(_) => {}
            None if mounted.contains(name) => choice.remove.push(name.clone()),
            None if name.starts_with(prefix) && force => choice.remove.push(name.clone()),
            None if name.starts_with(prefix) => choice.unlabelled.push(name.clone()),
            None => {}
        }
    }
    choice.remove.sort();
    choice.unlabelled.sort();
    choice.archives.sort();
    choice
}

/// `cargo xtask logs [SERVICE…]`.
pub fn logs(services: &[String]) -> anyhow::Result<()> {
    let settings = Settings::load(&default_env_file())?;
    let compose =
        tls::for_running_stack(|key, default| settings.get(key, default)).apply(compose_for(&settings, &hub_image_to_interpolate())?);
    if compose.run(&["ps", "-q"])?.trim().is_empty() {
        return Err(UserError::new(format!("the stack `{}` is not running", compose.project()), "start it with `cargo xtask up`").into());
    }
    let mut compose_args = vec!["logs", "--follow", "--tail", "200"];
    compose_args.extend(services.iter().map(String::as_str));
    let status = compose.command(&compose_args).status()?;
    if !status.success() {
        return Err(UserError::new(format!("compose logs failed ({status})"), "is the stack up? `cargo xtask up` starts it").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::{VolumeChoice, choose_user_volumes, without_terminal_codes};

    #[test]
    fn terminal_codes_are_dropped_from_log_lines() {
        assert_eq!(without_terminal_codes("\u{1b}[2Kerror: bad\n\u{1b}[1;31mhint\u{1b}[0m: x"), "error: bad\nhint: x");
    }

    #[test]
    fn down_volumes_deletes_only_this_stacks_user_volumes() {
        let labelled = |stack: &str| HashMap::from([("io.jhub-docker.stack".to_string(), stack.to_string())]);
        let volumes = vec![
            ("jupyterhub-user-alice".to_string(), labelled("jhub")),
            ("jupyterhub-user-bob".to_string(), labelled("other")),
            ("jupyterhub-user-carol".to_string(), HashMap::new()),
            ("jupyterhub-user-dave".to_string(), HashMap::new()),
            ("unrelated".to_string(), HashMap::new()),
            ("custom-name".to_string(), labelled("jhub")),
            (
                "jhub-archive-erin-20261205T070000Z".to_string(),
                HashMap::from([
                    ("io.jhub-docker.stack".to_string(), "jhub".to_string()),
                    ("io.jhub-docker.archived-user".to_string(), "erin".to_string()),
                ]),
            ),
        ];
        let mounted = BTreeSet::from(["jupyterhub-user-carol".to_string()]);
        assert_eq!(
            choose_user_volumes(&volumes, "jhub", "jupyterhub-user-", &mounted, false),
            VolumeChoice {
                remove: vec!["custom-name".into(), "jupyterhub-user-alice".into(), "jupyterhub-user-carol".into()],
                unlabelled: vec!["jupyterhub-user-dave".into()],
                archives: vec!["jhub-archive-erin-20261205T070000Z".into()],
            }
        );
        // --force takes the unlabelled ones with the prefix, never another stack's.
        let forced = choose_user_volumes(&volumes, "jhub", "jupyterhub-user-", &mounted, true);
        assert_eq!(forced.remove, ["custom-name", "jupyterhub-user-alice", "jupyterhub-user-carol", "jupyterhub-user-dave"]);
        assert!(forced.unlabelled.is_empty());
    }
}
