//! What every case of the stack-per-case test binaries (resilience, security) does around its stack: one
//! stack at a time, an artifacts folder per case, a verdict that saves the stack's logs when it failed,
//! users signed up through the hub's forms, fresh passwords and random data, and `cargo xtask` run as an
//! admin would run it.

use std::hash::{BuildHasher, Hasher};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, ensure};

use crate::artifacts::Artifacts;
use crate::browser::Browser;
use crate::client::{Api, Session};
use crate::preflight::{self, Setup};
use crate::stack::Stack;

/// One stack at a time in a test binary: two cores, and some cases touch every container.
static ONE_STACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The serialisation guard alone, for a case that starts its stack another way (a browser scenario).
pub async fn one_stack_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_STACK_AT_A_TIME.lock().await
}

/// The preflight, an artifacts folder `<binary>-<case>` and the serialisation guard.
pub async fn prepare(binary: &str, case: &str) -> Result<(tokio::sync::MutexGuard<'static, ()>, Setup, Artifacts)> {
    let guard = ONE_STACK_AT_A_TIME.lock().await;
    let setup = preflight::check().await?;
    let artifacts = Artifacts::for_test(&setup.root, &format!("{binary}-{case}"))?;
    progress!("case {case}: started");
    Ok((guard, setup, artifacts))
}

/// Saves the stack's container logs (and the browsers' pages) when a case failed, and adds where they are
/// to the error.
pub async fn finish(
    case: &str,
    setup: &Setup,
    stack: &Stack,
    artifacts: &Artifacts,
    browsers: &[Browser],
    result: Result<()>,
) -> Result<()> {
    match result {
        Ok(()) => {
            progress!("case {case}: passed");
            Ok(())
        }
        Err(err) => {
            artifacts.capture(case, browsers, &setup.docker, &stack.project).await;
            Err(anyhow!("case `{case}` failed on stack {}: {err:#}\nartifacts: {}", stack.project, artifacts.dir.display()))
        }
    }
}

pub fn random_hex() -> String {
    format!("{:016x}", std::collections::hash_map::RandomState::new().build_hasher().finish())
}

/// A password no other run uses, recognisable by `prefix` in logs.
pub fn fresh_password(prefix: &str) -> String {
    format!("{prefix}-{}-pw", random_hex())
}

/// Random bytes (not text), so a byte-identical comparison means something.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&std::collections::hash_map::RandomState::new().build_hasher().finish().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Signs `user` up (open signup) with a fresh password, logs in and returns the session, its API and the
/// password.
pub async fn new_user(stack: &Stack, user: &str) -> Result<(Session, Api, String)> {
    let password = fresh_password("Case");
    let session = Session::new(stack, user)?;
    let alert = session.sign_up(&password).await?;
    ensure!(alert == "alert-success", "signup of {user} showed {alert}, expected alert-success");
    session.must_log_in(&password).await?;
    let api = session.api_token().await?;
    Ok((session, api, password))
}

/// `cargo xtask ARGS` at the repository root with `env` added, no terminal (so no colour or progress bars);
/// returns whether it succeeded and what it printed (stdout, then stderr).
pub fn xtask(args: &[&str], env: &[(&str, &str)]) -> Result<(bool, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command.current_dir(jhub_docker::repo_root()).args(["xtask"]).args(args).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().context("cannot run cargo xtask")?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    progress!("cargo xtask {}: {}\n{}", args.join(" "), output.status, text.trim_end());
    Ok((output.status.success(), text))
}
