//! Drives the stack's compose file through whichever compose CLI the host has: the `docker compose` v2
//! plugin most users run, or Debian's standalone `docker-compose` 1.29. The file is kept valid for both.

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
}

/// A compose CLI that is missing or failed, with the next step.
pub type ComposeError = crate::HintedError;

/// Finds a compose CLI: `docker compose` (v2) first, then `docker-compose`.
pub fn detect_cli() -> Result<Vec<String>, ComposeError> {
    let candidates: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    for candidate in candidates {
        let answered = Command::new(candidate[0]).args(&candidate[1..]).arg("version").output().is_ok_and(|output| output.status.success());
        if answered {
            return Ok(candidate.iter().map(|word| word.to_string()).collect());
        }
    }
    Err(ComposeError {
        message: "no compose CLI found (tried `docker compose` and `docker-compose`)".to_string(),
        hint: "install the compose plugin, or on Debian `apt-get install docker-compose`".to_string(),
    })
}

impl Compose {
    pub fn new(program: Vec<String>, file: &Path, project: &str) -> Compose {
        Compose { program, file: file.to_path_buf(), overlays: Vec::new(), project: project.to_string(), env: Vec::new() }
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
        command.arg("-p").arg(&self.project).args(args);
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
        command
    }

    /// Runs `args` and returns stdout; a failure carries the last lines compose printed.
    pub fn run(&self, args: &[&str]) -> Result<String, ComposeError> {
        let output: Output = self.command(args).output().map_err(|err| ComposeError {
            message: format!("cannot run {}: {err}", self.program.join(" ")),
            hint: "install a compose CLI (`cargo xtask doctor` says how)".to_string(),
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
