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
/// Where nginx reads the TLS certificate (with its chain) and its key (docker-compose.tls.yml).
pub const TLS_CERT_TARGET: &str = "/etc/jhub-tls/server.crt";
pub const TLS_KEY_TARGET: &str = "/etc/jhub-tls/server.key";

/// A file of this machine that a service of the stack bind-mounts (one file, at `target`), which a swarm
/// gets as a config instead, or as a secret when it must stay private (a key): a bind mount's source
/// would have to exist on whichever node runs the task.
#[derive(Debug, Clone)]
pub struct SwarmFile<'a> {
    /// The config's or secret's name, before the digest (`hub_view`, `tls_key`).
    pub name: &'a str,
    pub target: &'a str,
    pub source: &'a Path,
    /// sha256 (hex) of the content. Swarm configs and secrets cannot change, so the digest is part of
    /// the name: new content is a new name, and the services mounting it are redeployed with it.
    pub digest: &'a str,
    pub secret: bool,
}

impl SwarmFile<'_> {
    fn swarm_name(&self) -> String {
        let hex = self.digest.strip_prefix("sha256:").unwrap_or(self.digest);
        format!("{}_{}", self.name, &hex[..hex.len().min(12)])
    }
}

/// Turns the merged compose file (`compose -f docker-compose.yml [-f docker-compose.tls.yml] -f
/// docker-compose.swarm.yml config --format json`, variables already filled in) into a stack file
/// `docker stack deploy` takes: the Compose-only keys dropped (`name`, `depends_on`, `restart`,
/// `security_opt`, `cpu_shares`, nulls), each published port in host mode (this kernel kind has no IPVS
/// for the ingress mesh; a swarm port binds every address of its node), and each of `files` (the hub's
/// view, nginx's certificate and key), a bind mount of a file on one host, made a Swarm config or secret
/// named after its digest. Each of `files` must be mounted by some service.
pub fn swarm_stack(merged: &serde_json::Value, files: &[SwarmFile]) -> Result<serde_json::Value, ComposeError> {
    use serde_json::{Map, Value, json};
    let invalid = |what: &str| {
        ComposeError::new(
            format!("the merged compose file has no {what}"),
            "check stack/docker-compose.yml and its overlays (`docker compose config`)",
        )
    };
    let mut stack = merged.clone();
    let root = stack.as_object_mut().ok_or_else(|| invalid("top-level mapping"))?;
    root.remove("name");
    root.insert("version".into(), json!("3.9"));
    let services = root.get_mut("services").and_then(Value::as_object_mut).ok_or_else(|| invalid("services"))?;
    let mut mounted = vec![false; files.len()];
    for (name, service) in services.iter_mut() {
        let service = service.as_object_mut().ok_or_else(|| invalid(&format!("mapping for the service {name}")))?;
        service.retain(|key, value| {
            !value.is_null() && !["depends_on", "restart", "security_opt", "container_name", "cpu_shares"].contains(&key.as_str())
        });
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
        let Some(volumes) = service.get_mut("volumes").and_then(Value::as_array_mut) else { continue };
        let (mut configs, mut secrets) = (Vec::new(), Vec::new());
        volumes.retain(|volume| {
            let target = volume.get("target").and_then(Value::as_str);
            let Some(index) = files.iter().position(|file| Some(file.target) == target) else { return true };
            mounted[index] = true;
            let file = &files[index];
            let mode = if file.secret { 0o400 } else { 0o444 };
            let entry = json!({"source": file.swarm_name(), "target": file.target, "mode": mode});
            if file.secret {
                secrets.push(entry)
            } else {
                configs.push(entry)
            }
            false
        });
        for volume in volumes.iter_mut().filter_map(Value::as_object_mut) {
            // `create_host_path` is Compose's own; a swarm bind's source must exist on the node.
            volume.remove("bind");
        }
        if volumes.is_empty() {
            service.remove("volumes");
        }
        if !configs.is_empty() {
            service.insert("configs".into(), Value::Array(configs));
        }
        if !secrets.is_empty() {
            service.insert("secrets".into(), Value::Array(secrets));
        }
    }
    if let Some(unmounted) = files.iter().zip(&mounted).find_map(|(file, mounted)| (!mounted).then_some(file)) {
        return Err(invalid(&format!("service mounting {} at {}", file_kind(unmounted), unmounted.target)));
    }
    let (mut configs, mut secrets) = (Map::new(), Map::new());
    for file in files {
        let definition = json!({ "file": file.source.to_string_lossy() });
        if file.secret {
            secrets.insert(file.swarm_name(), definition)
        } else {
            configs.insert(file.swarm_name(), definition)
        };
    }
    if !configs.is_empty() {
        root.insert("configs".into(), Value::Object(configs));
    }
    if !secrets.is_empty() {
        root.insert("secrets".into(), Value::Object(secrets));
    }
    Ok(stack)
}

fn file_kind(file: &SwarmFile) -> String {
    format!("the file {} ({})", file.source.display(), file.name)
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
    use super::{HUB_VIEW_TARGET, SwarmFile, TLS_CERT_TARGET, TLS_KEY_TARGET, label_version, major_version, swarm_stack};
    use serde_json::json;
    use std::path::Path;

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

    /// What `docker compose config --format json` gives for a hub and nginx (trimmed to what matters).
    fn merged() -> serde_json::Value {
        json!({
            "name": "jhub",
            "services": {
                "hub": {
                    "image": "127.0.0.1:5000/jhub/hub@sha256:aa",
                    "restart": "unless-stopped",
                    "depends_on": {"nginx": {"condition": "service_started"}},
                    "security_opt": ["no-new-privileges:true"],
                    "container_name": null,
                    "cpu_shares": 8192,
                    "healthcheck": {"test": ["CMD", "true"], "disable": true},
                    "volumes": [
                        {"type": "volume", "source": "jupyterhub_data", "target": "/srv/jupyterhub"},
                        {"type": "bind", "source": "/x/stack/hub-view.swarm.json", "target": HUB_VIEW_TARGET, "read_only": true,
                         "bind": {"create_host_path": true}}
                    ]
                },
                "nginx": {
                    "image": "127.0.0.1:5000/jhub/nginx@sha256:bb",
                    "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 443, "published": "8843", "protocol": "tcp"}],
                    "volumes": [
                        {"type": "bind", "source": "/x/tls/server.crt", "target": TLS_CERT_TARGET, "read_only": true},
                        {"type": "bind", "source": "/x/tls/server.key", "target": TLS_KEY_TARGET, "read_only": true}
                    ]
                }
            }
        })
    }

    fn files<'a>(view: &'a Path, cert: &'a Path, key: &'a Path) -> Vec<SwarmFile<'a>> {
        vec![
            SwarmFile { name: "hub_view", target: HUB_VIEW_TARGET, source: view, digest: "sha256:0123456789abcdef", secret: false },
            SwarmFile { name: "tls_cert", target: TLS_CERT_TARGET, source: cert, digest: "fedcba9876543210", secret: false },
            SwarmFile { name: "tls_key", target: TLS_KEY_TARGET, source: key, digest: "1111111111119999", secret: true },
        ]
    }

    #[test]
    fn a_swarm_stack_drops_compose_only_keys_and_publishes_in_host_mode() {
        let (view, cert, key) = (Path::new("/x/view"), Path::new("/x/crt"), Path::new("/x/key"));
        let stack = swarm_stack(&merged(), &files(view, cert, key)).unwrap();
        assert_eq!(stack.get("name"), None);
        let hub = &stack["services"]["hub"];
        for key in ["restart", "depends_on", "security_opt", "container_name", "cpu_shares"] {
            assert_eq!(hub.get(key), None, "{key} is Compose's own");
        }
        assert_eq!(hub["healthcheck"], json!({"disable": true}), "a swarm refuses a test beside disable");
        let port = &stack["services"]["nginx"]["ports"][0];
        assert_eq!(port["mode"], "host");
        assert_eq!(port["published"], 8843);
        assert_eq!(port.get("host_ip"), None);
    }

    #[test]
    fn mounted_files_become_configs_and_the_key_a_secret_named_by_digest() {
        let (view, cert, key) = (Path::new("/x/view"), Path::new("/x/crt"), Path::new("/x/key"));
        let stack = swarm_stack(&merged(), &files(view, cert, key)).unwrap();
        let hub = &stack["services"]["hub"];
        assert_eq!(hub["configs"], json!([{"source": "hub_view_0123456789ab", "target": HUB_VIEW_TARGET, "mode": 0o444}]));
        assert_eq!(hub["volumes"], json!([{"type": "volume", "source": "jupyterhub_data", "target": "/srv/jupyterhub"}]));
        let nginx = &stack["services"]["nginx"];
        assert_eq!(nginx.get("volumes"), None, "no bind of a host file is left");
        assert_eq!(nginx["configs"], json!([{"source": "tls_cert_fedcba987654", "target": TLS_CERT_TARGET, "mode": 0o444}]));
        assert_eq!(nginx["secrets"], json!([{"source": "tls_key_111111111111", "target": TLS_KEY_TARGET, "mode": 0o400}]));
        assert_eq!(stack["secrets"], json!({"tls_key_111111111111": {"file": "/x/key"}}));
        assert_eq!(stack["configs"]["hub_view_0123456789ab"], json!({"file": "/x/view"}));
        assert_eq!(stack["configs"]["tls_cert_fedcba987654"], json!({"file": "/x/crt"}));
    }

    #[test]
    fn a_file_no_service_mounts_is_refused() {
        let (view, cert, key) = (Path::new("/x/view"), Path::new("/x/crt"), Path::new("/x/key"));
        let mut merged = merged();
        merged["services"].as_object_mut().unwrap().remove("nginx");
        let err = swarm_stack(&merged, &files(view, cert, key)).unwrap_err();
        assert!(err.message.contains(TLS_CERT_TARGET), "{}", err.message);
    }
}
