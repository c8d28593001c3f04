//! What this host needs and has: `up` sets up what is missing (through `ci/setup-host.sh`, as root) and
//! `cargo xtask doctor` reports everything the pipeline, the stack and the acceptance test need, each
//! missing piece with how to install it. The programs and their hints are `jhub_docker::host`'s one list,
//! which the tests' preflight reads too; the engine and Compose v2 are probed here, as the verbs reach them.

use std::path::PathBuf;
use std::process::Stdio;

use jhub_docker::host::{self, NeededBy};

use crate::engine;
use crate::ui::{self, UserError};

/// What `up` needs from the host that `ci/setup-host.sh` installs; what a build needs (mmdebstrap) only when
/// it may build.
fn missing_on_host(runtime: &tokio::runtime::Runtime, building: bool) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if runtime.block_on(engine::connect()).is_err() {
        missing.push("a running Docker engine");
    }
    if jhub_docker::compose::detect().is_err() {
        missing.push("Compose v2");
    }
    let build_programs = host::PROGRAMS.iter().filter(|program| building && program.needed_by == NeededBy::Build);
    missing.extend(build_programs.filter(|program| host::which(program.name).is_none()).map(|program| program.name));
    missing
}

/// Runs `ci/setup-host.sh` when the host lacks what `up` needs: itself as root, or says which command to
/// run otherwise.
pub(crate) fn set_up_host(runtime: &tokio::runtime::Runtime, building: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let missing = missing_on_host(runtime, building);
    if missing.is_empty() {
        return Ok(());
    }
    let script = jhub_docker::repo_root().join("ci").join("setup-host.sh");
    // /proc/self belongs to the process's effective user.
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0);
    if !is_root {
        // A socket that exists but does not answer this user is a permission, not a missing engine.
        let socket_exists = std::path::Path::new("/var/run/docker.sock").exists();
        let hint = if missing == ["a running Docker engine"] && socket_exists {
            "if dockerd runs, this user may not use its socket: run as root or join the `docker` group; \
             otherwise sudo bash ci/setup-host.sh starts it"
        } else {
            "sudo bash ci/setup-host.sh (it installs and starts them), then run `cargo xtask up` again"
        };
        return Err(UserError::new(format!("this host lacks {}", missing.join(", ")), hint).into());
    }
    ui::note(&format!("this host lacks {}: running `bash {}` as root", missing.join(", "), script.display()));
    let status = std::process::Command::new("bash").arg(&script).stdin(Stdio::null()).status()?;
    let still_missing = missing_on_host(runtime, building);
    let outcome = if status.success() { "ran".to_string() } else { format!("failed ({status})") };
    if !status.success() || !still_missing.is_empty() {
        let lacks = if still_missing.is_empty() { String::new() } else { format!("; this host still lacks {}", still_missing.join(", ")) };
        return Err(UserError::new(
            format!("ci/setup-host.sh {outcome}{lacks}"),
            "read its `error:` lines above, fix what they name and run `cargo xtask up` again",
        )
        .into());
    }
    Ok(())
}

/// Below this much free space a cold build of every image is likely to fail midway.
const MIN_FREE_GB: u64 = 15;

/// `cargo xtask doctor`: every requirement of the host, found or missing, each missing one with its hint.
pub fn doctor() -> anyhow::Result<()> {
    let mut problems = 0;
    let mut report = |ok: bool, what: &str, detail: String, fix: &str| {
        // What only `cargo xtask lock` needs: without it the platform builds, runs and tests.
        let optional = host::PROGRAMS.iter().any(|program| program.name == what && program.needed_by == NeededBy::Lock);
        if ok {
            println!("ok       {what}: {detail}");
        } else if optional {
            println!("optional {what}: {detail}");
            println!("         hint: {fix}");
        } else {
            problems += 1;
            println!("missing  {what}: {detail}");
            println!("         hint: {fix}");
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    match runtime.block_on(async {
        let docker = engine::connect().await?;
        let version = docker.version().await.map_err(|err| UserError::new(err.to_string(), ""))?;
        Ok::<_, UserError>(format!("{} (API {})", version.version.unwrap_or_default(), version.api_version.unwrap_or_default()))
    }) {
        Ok(version) => report(true, "docker engine", version, ""),
        Err(err) => report(false, "docker engine", err.message, host::ENGINE_INSTALL),
    }
    for program in host::PROGRAMS {
        // A variable that names the program is what the tests use, so it is checked alone: falling back to
        // PATH would say ok while the tests fail.
        let overridden = program.override_variable.and_then(|variable| Some((variable, PathBuf::from(std::env::var_os(variable)?))));
        match overridden {
            Some((_, path)) if path.is_file() => report(true, program.name, format!("{} ({})", path.display(), program.purpose), ""),
            Some((variable, path)) => {
                report(false, program.name, format!("{variable}={} is no file ({})", path.display(), program.purpose), program.install)
            }
            None => match host::which(program.name) {
                Some(path) => report(true, program.name, format!("{} ({})", path.display(), program.purpose), ""),
                None => report(false, program.name, format!("not on PATH ({})", program.purpose), program.install),
            },
        }
    }
    match jhub_docker::compose::detect() {
        Ok(cli) => report(true, "compose", format!("{} (version {})", cli.program.join(" "), cli.version), ""),
        Err(err) => report(false, "compose", err.message, &err.hint),
    }
    match free_gigabytes("/var/lib/docker").or_else(|| free_gigabytes("/")) {
        Some(free) => report(
            free >= MIN_FREE_GB,
            "disk",
            format!("{free} GB free for images"),
            &format!("free at least {MIN_FREE_GB} GB (docker system prune, or a larger disk)"),
        ),
        None => report(false, "disk", "cannot tell free space".to_string(), "check `df -h /var/lib/docker`"),
    }
    if problems > 0 {
        return Err(UserError::new(
            format!("{problems} thing(s) missing on this host"),
            "install them as hinted above, or run `bash ci/setup-host.sh` as root",
        )
        .into());
    }
    ui::note("this host has everything jhub-docker needs");
    Ok(())
}

fn free_gigabytes(path: &str) -> Option<u64> {
    let output = std::process::Command::new("df").args(["--output=avail", "-B1G", path]).output().ok()?;
    String::from_utf8_lossy(&output.stdout).lines().nth(1)?.trim().parse().ok()
}
