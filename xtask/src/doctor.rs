//! `cargo xtask doctor`: checks what the pipeline, the stack and the acceptance test need on this host, and
//! says how to install what is missing.

use crate::base::which;
use crate::engine;
use crate::ui::{self, UserError};

/// Below this much free space a cold build of every image is likely to fail midway.
const MIN_FREE_GB: u64 = 15;

pub fn run() -> anyhow::Result<()> {
    let mut problems = 0;
    let mut report = |ok: bool, what: &str, detail: String, fix: &str| {
        // uv and npm serve only `cargo xtask lock`: without them the platform builds, runs and tests.
        let optional = matches!(what, "uv" | "npm");
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
        Err(err) => {
            report(false, "docker engine", err.message, "apt-get install -y docker.io, then start `dockerd` (ci/setup-host.sh does both)")
        }
    }
    for (program, override_variable, purpose, fix) in [
        ("mmdebstrap", "", "makes the base image", "apt-get install -y mmdebstrap"),
        ("chromium", "JHUB_CHROMIUM", "the acceptance test's browser", "apt-get install -y chromium (or set JHUB_CHROMIUM)"),
        (
            "chromedriver",
            "JHUB_CHROMEDRIVER",
            "drives chromium for the acceptance test",
            "apt-get install -y chromium-driver (or set JHUB_CHROMEDRIVER)",
        ),
        (
            "uv",
            "",
            "`cargo xtask lock` compiles Python pins with it",
            "pipx install uv==0.13.9 (or pip install it in a venv; README, Build)",
        ),
        ("npm", "", "`cargo xtask lock` resolves npm pins with it", "apt-get install -y npm"),
    ] {
        let overridden = std::env::var_os(override_variable).map(std::path::PathBuf::from).filter(|path| path.is_file());
        match overridden.or_else(|| which(program)) {
            Some(path) => report(true, program, format!("{} ({purpose})", path.display()), ""),
            None => report(false, program, format!("not on PATH ({purpose})"), fix),
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
