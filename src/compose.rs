//! Drives the stack's compose file through Compose v2: the `docker compose` plugin, or a standalone v2
//! `docker-compose` binary. Compose 1.x (Debian 12's `docker-compose` 1.29, unsupported since 2023) is
//! refused: the stack relies on v2's `up --wait` and healthchecks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A compose project: the CLI, the compose file, the project name and the variables it is run with.
#[derive(Debug, Clone)]
pub struct Compose {
    program: Vec<String>,
    file: PathBuf,
    /// Overlays after `file` (`-f` each, in order), e.g. stack/docker-compose.tls.yml.
    overlays: Vec<PathBuf>,
    project: String,
    env: Vec<(String, String)>,
    /// A settings file compose reads instead of the `.env` beside the compose file.
    env_file: Option<PathBuf>,
}

/// A compose CLI that is missing or failed, with the next step.
pub type ComposeError = crate::HintedError;

/// A Compose v2 CLI found on this host: how to run it, and the version it reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeCli {
    pub program: Vec<String>,
    pub version: String,
}

/// Where Docker's CLI looks for plugins (docker/cli `defaultSystemPluginDirs`, and the user's own): a v2
/// plugin there can be run directly even when the `docker` CLI in front of it does not find it.
const PLUGIN_DIRS: [&str; 4] = [
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
];

/// The hint for a host without Compose v2.
pub const INSTALL_HINT: &str = "run `sudo bash ci/setup-host.sh` (or `cargo xtask up` as root), which installs Compose v2";

/// The major version in what `compose version --short` prints (`2.26.1-4`, `v2.29.7`, `1.29.2`).
pub fn major_version(short: &str) -> Option<u32> {
    short.trim().trim_start_matches('v').split('.').next()?.parse().ok()
}

/// The version compose writes into its `com.docker.compose.version` labels: the core `major.minor.patch`
/// of what `version --short` prints (Debian's `2.26.1-4` labels `2.26.1`).
pub fn label_version(short: &str) -> String {
    let version = short.trim().trim_start_matches('v');
    version.split(['-', '+']).next().unwrap_or(version).to_string()
}

fn short_version(program: &[String]) -> Option<String> {
    let output = Command::new(&program[0]).args(&program[1..]).args(["version", "--short"]).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Finds Compose v2: `docker compose`, then a `docker-compose` that is v2, then the plugin binary in
/// Docker's plugin folders. A Compose 1.x that answers is named in the error.
pub fn detect() -> Result<ComposeCli, ComposeError> {
    let mut candidates: Vec<Vec<String>> = vec![vec!["docker".into(), "compose".into()], vec!["docker-compose".into()]];
    let home_plugins = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/cli-plugins"));
    for dir in home_plugins.into_iter().chain(PLUGIN_DIRS.iter().map(PathBuf::from)) {
        let binary = dir.join("docker-compose");
        if binary.is_file() {
            candidates.push(vec![binary.to_string_lossy().into_owned()]);
        }
    }
    let mut too_old = None;
    for program in candidates {
        let Some(version) = short_version(&program) else { continue };
        match major_version(&version) {
            Some(major) if major >= 2 => return Ok(ComposeCli { program, version }),
            _ => too_old = too_old.or(Some((program.join(" "), version))),
        }
    }
    Err(match too_old {
        Some((program, version)) => ComposeError::new(
            format!("`{program}` is Compose {version}; jhub-docker needs Compose v2 (1.x is unsupported since 2023)"),
            INSTALL_HINT,
        ),
        None => {
            ComposeError::new("no Compose v2 found (tried `docker compose`, `docker-compose` and Docker's plugin folders)", INSTALL_HINT)
        }
    })
}

/// The command words of the host's Compose v2 (see [`detect`]).
pub fn detect_cli() -> Result<Vec<String>, ComposeError> {
    detect().map(|cli| cli.program)
}

impl Compose {
    pub fn new(program: Vec<String>, file: &Path, project: &str) -> Compose {
        Compose { program, file: file.to_path_buf(), overlays: Vec::new(), project: project.to_string(), env: Vec::new(), env_file: None }
    }

    /// Reads the variables of `file` instead of the `.env` beside the compose file.
    pub fn with_env_file(mut self, file: &Path) -> Compose {
        self.env_file = Some(file.to_path_buf());
        self
    }

    /// Adds a compose file merged over the base one.
    pub fn with_overlay(mut self, file: &Path) -> Compose {
        self.overlays.push(file.to_path_buf());
        self
    }

    pub fn with_env(mut self, key: &str, value: &str) -> Compose {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// The command for `compose -f <file> -p <project> <args>`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command.args(&self.program[1..]).arg("-f").arg(&self.file);
        for overlay in &self.overlays {
            command.arg("-f").arg(overlay);
        }
        command.arg("-p").arg(&self.project);
        if let Some(env_file) = &self.env_file {
            command.arg("--env-file").arg(env_file);
        }
        command.args(args);
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
        command
    }

    /// Runs `args` and returns stdout; a failure carries the last lines compose printed.
    pub fn run(&self, args: &[&str]) -> Result<String, ComposeError> {
        let output: Output = self.command(args).output().map_err(|err| ComposeError {
            message: format!("cannot run {}: {err}", self.program.join(" ")),
            hint: INSTALL_HINT.to_string(),
        })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        Err(ComposeError {
            message: format!("`{} {}` failed ({}):\n{}", self.program.join(" "), args.join(" "), output.status, tail.join("\n")),
            hint: format!("see the stack's logs with `{} -p {} logs`", self.program.join(" "), self.project),
        })
    }
}

/// Where the hub reads its view, in the hub's container (the single-host stack bind-mounts the file there).
pub const HUB_VIEW_TARGET: &str = "/srv/jhub/hub-view.json";

/// Turns the merged compose file (`compose -f docker-compose.yml -f docker-compose.swarm.yml config
/// --format json`, variables already filled in) into a stack file `docker stack deploy` takes: the
/// Compose-only keys dropped (`name`, `depends_on`, `restart`, `security_opt`, nulls), each published port
/// in host mode (this kernel kind has no IPVS for the ingress mesh; a swarm port binds every address of
/// its node), and the hub's view, a bind mount of a file on one host, made a Swarm config named after its
/// digest (configs cannot change, so a new view is a new config and the hub is redeployed with it).
pub fn swarm_stack(merged: &serde_json::Value, view_file: &Path, view_digest: &str) -> Result<serde_json::Value, ComposeError> {
    use serde_json::{Value, json};
    let invalid = |what: &str| {
        ComposeError::new(
            format!("the merged compose file has no {what}"),
            "check stack/docker-compose.yml and stack/docker-compose.swarm.yml (`docker compose config`)",
        )
    };
    let mut stack = merged.clone();
    let root = stack.as_object_mut().ok_or_else(|| invalid("top-level mapping"))?;
    root.remove("name");
    root.insert("version".into(), json!("3.9"));
    let hex = view_digest.strip_prefix("sha256:").unwrap_or(view_digest);
    let config_name = format!("hub_view_{}", &hex[..hex.len().min(12)]);
    let services = root.get_mut("services").and_then(Value::as_object_mut).ok_or_else(|| invalid("services"))?;
    let mut view_mounted = false;
    for (name, service) in services.iter_mut() {
        let service = service.as_object_mut().ok_or_else(|| invalid(&format!("mapping for the service {name}")))?;
        service
            .retain(|key, value| !value.is_null() && !["depends_on", "restart", "security_opt", "container_name"].contains(&key.as_str()));
        // An overlay's `disable: true` merges into the base's healthcheck; swarm refuses a test beside it.
        if service.get("healthcheck").and_then(|check| check.get("disable")).and_then(Value::as_bool) == Some(true) {
            service.insert("healthcheck".into(), json!({"disable": true}));
        }
        if let Some(ports) = service.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                port.remove("host_ip");
                port.insert("mode".into(), json!("host"));
                if let Some(published) = port.get("published").and_then(Value::as_str).and_then(|text| text.parse::<u64>().ok()) {
                    port.insert("published".into(), json!(published));
                }
            }
        }
        if let Some(volumes) = service.get_mut("volumes").and_then(Value::as_array_mut) {
            let before = volumes.len();
            volumes.retain(|volume| volume.get("target").and_then(Value::as_str) != Some(HUB_VIEW_TARGET));
            if volumes.len() < before {
                view_mounted = true;
                service.insert("configs".into(), json!([{"source": config_name, "target": HUB_VIEW_TARGET, "mode": 0o444}]));
            }
            if let Some(volumes) = service.get_mut("volumes").and_then(Value::as_array_mut) {
                for volume in volumes.iter_mut().filter_map(Value::as_object_mut) {
                    // `create_host_path` is Compose's own; a swarm bind's source must exist on the node.
                    volume.remove("bind");
                }
            }
        }
    }
    if !view_mounted {
        return Err(invalid(&format!("service mounting the hub's view at {HUB_VIEW_TARGET}")));
    }
    root.insert("configs".into(), json!({ config_name: { "file": view_file.to_string_lossy() } }));
    Ok(stack)
}

/// The variables compose text reads (every `${NAME…}` in it), sorted, once each: what a stack of the
/// harness or the bench must set or remove from the CLI's environment, so the caller's shell cannot leak
/// into it. Read from the files themselves, so a variable added there is covered without a list to keep.
pub fn variables_of(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split("${")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>())
        .filter(|name| !name.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::{label_version, major_version};

    #[test]
    fn reads_the_major_version_of_every_known_format() {
        assert_eq!(major_version("2.26.1-4"), Some(2));
        assert_eq!(major_version("v2.29.7\n"), Some(2));
        assert_eq!(major_version("1.29.2"), Some(1));
        assert_eq!(major_version(""), None);
    }

    #[test]
    fn labels_carry_the_core_version() {
        assert_eq!(label_version("2.26.1-4\n"), "2.26.1");
        assert_eq!(label_version("v2.29.7"), "2.29.7");
        assert_eq!(label_version("2.30.0+ds1"), "2.30.0");
    }
}
