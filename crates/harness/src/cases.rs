//! What every case of the stack-per-case test binaries (resilience, security) does around its stack
//! (`Case`, `run`): one stack at a time, an artifacts folder per case, the stack's settings with the
//! admin's password, a verdict that saves the stack's logs when it failed,
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
use crate::tls::Front;

/// One stack at a time in a test binary: two cores, and some cases touch every container.
static ONE_STACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The admin's password in a case's stack (`settings` gives it to every stack that has an admin).
pub const ADMIN_PASSWORD: &str = "Case-admin-pw-1";
/// The single-user image the cases spawn: the smallest of the catalog's contract names.
pub const IMAGE: &str = "minimal";

/// The settings of a case's stack: the admin's password, then `extra`.
pub fn settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("ADMIN_PASSWORD", ADMIN_PASSWORD)];
    all.extend_from_slice(extra);
    all
}

/// The serialisation guard alone, for a case that starts its stack another way (a browser scenario).
pub async fn one_stack_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_STACK_AT_A_TIME.lock().await
}

/// One case of a stack-per-case binary, opened: the preflight passed, its artifacts folder
/// `<binary>-<case>` exists, its stack is healthy, and no other case's stack runs meanwhile.
pub struct Case {
    // Fields drop in this order: the stack is removed before the next case may start its own.
    pub stack: Stack,
    pub artifacts: Artifacts,
    pub setup: Setup,
    pub name: String,
    _one_stack_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

impl Case {
    /// The preflight, the artifacts folder and a plain-HTTP stack with `settings`.
    pub async fn open(binary: &str, case: &str, settings: &[(&str, &str)]) -> Result<Case> {
        Case::open_with(binary, case, settings, None).await
    }

    /// Like `open`, with the TLS front door (nginx) in front of the stack; `subdomains` gives every user's
    /// server its own origin.
    pub async fn open_behind_front(binary: &str, case: &str, settings: &[(&str, &str)], subdomains: bool) -> Result<Case> {
        Case::open_with(binary, case, settings, Some(subdomains)).await
    }

    async fn open_with(binary: &str, case: &str, settings: &[(&str, &str)], front: Option<bool>) -> Result<Case> {
        let (guard, setup, artifacts) = prepare(binary, case).await?;
        let front = front.map(|subdomains| Front::make(&artifacts.dir, subdomains)).transpose()?;
        let stack = Stack::start_with(&setup, settings, &artifacts.dir, front).await?;
        Ok(Case { stack, artifacts, setup, name: case.to_string(), _one_stack_at_a_time: guard })
    }

    /// The case's verdict: `result`, or its error with the stack's container logs (and the pages of
    /// `browsers`) saved to the artifacts folder.
    pub async fn finish(&self, browsers: &[Browser], result: Result<()>) -> Result<()> {
        finish(&self.name, &self.setup, &self.stack, &self.artifacts, browsers, result).await
    }
}

/// A whole case: opens it with `settings`, runs `body` and gives its verdict (`Case::finish`). A case
/// with browsers, or with work after the verdict, opens and finishes it itself.
pub async fn run(binary: &str, case: &str, settings: &[(&str, &str)], body: impl AsyncFnOnce(&Case) -> Result<()>) -> Result<()> {
    let case = Case::open(binary, case, settings).await?;
    let result = body(&case).await;
    case.finish(&[], result).await
}

/// The preflight, an artifacts folder `<binary>-<case>` and the serialisation guard.
async fn prepare(binary: &str, case: &str) -> Result<(tokio::sync::MutexGuard<'static, ()>, Setup, Artifacts)> {
    let guard = ONE_STACK_AT_A_TIME.lock().await;
    let setup = preflight::check().await?;
    let artifacts = Artifacts::for_test(&setup.root, &format!("{binary}-{case}"))?;
    progress!("case {case}: started");
    Ok((guard, setup, artifacts))
}

/// Saves the stack's container logs (and the browsers' pages) when a case failed, and adds where they are
/// to the error.
async fn finish(case: &str, setup: &Setup, stack: &Stack, artifacts: &Artifacts, browsers: &[Browser], result: Result<()>) -> Result<()> {
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
