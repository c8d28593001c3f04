//! One compose project per test: unique project, port and network names, started with Compose v2's
//! `up -d --wait` (the services' healthchecks decide when it is up), and removed on drop (user containers by label, `down -v`, the test's user volumes),
//! also when the test fails or panics. `JHUB_ACCEPTANCE_KEEP=1` keeps it up for debugging.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jhub_docker::catalog::Catalog;
use jhub_docker::compose::Compose;
use jhub_docker::settings::Settings;
use jhub_docker::view::HubView;

use crate::docker::{cli_lines, cli_quiet};
use crate::preflight::Setup;
use crate::tls::Front;

/// The variables the compose file reads (every `${NAME…}` in it): any of them the test does not set is
/// removed from the compose CLI's environment, so the developer's shell cannot leak into a test stack.
/// Read from the file itself, so a variable added there is covered without a list to keep in step.
fn compose_variables() -> Vec<String> {
    let stack = jhub_docker::repo_root().join("stack");
    let text: String = ["docker-compose.yml", "docker-compose.tls.yml", "docker-compose.ldap.yml"]
        .iter()
        .map(|file| std::fs::read_to_string(stack.join(file)).unwrap_or_default())
        .collect();
    jhub_docker::compose::variables_of(&text)
}

/// Reads a test stack's settings file back with the one reader (`jhub_docker::settings`, what the xtask
/// reads it with, as compose does): each value must come back as the test set it, and each name must be a
/// variable the compose files read, so a test setting that compose would misread or ignore fails the test
/// before a stack starts.
pub(crate) fn check_settings(text: &str, env: &[(String, String)], source: &str) -> Result<()> {
    let settings = Settings::parse(text, source)?;
    let wanted: std::collections::BTreeMap<&str, &str> = env.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    for (key, value) in wanted {
        let read = settings.value(key);
        if read != Some(value) {
            bail!("the test setting {key}=`{value}` reads back from {source} as {read:?}: write it so compose reads it as it is");
        }
    }
    let unknown = settings.unknown_keys(&compose_variables());
    if !unknown.is_empty() {
        bail!("the test sets {}, which no compose file of stack/ reads: a misspelt setting?", unknown.join(", "));
    }
    Ok(())
}

/// How long every service may take to pass its healthcheck after `up` (or after a restart).
pub const HEALTHY: Duration = Duration::from_secs(120);

static STACKS: AtomicU32 = AtomicU32::new(0);

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn truthy(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|value| !value.is_empty() && value != "0" && value != "false")
}

/// Where a hub under test answers: a compose stack of the test's own, or the test cluster's swarm stack.
/// What a person does in the browser (`hub`, `lab`, `client`) needs nothing else.
pub trait HubAddress {
    /// The URL of `path` on the hub's origin.
    fn url(&self, path: &str) -> String;
    /// The URL of `path` (which starts with `/user/<user>/`) on `user`'s server, as their browser reaches it.
    fn user_url(&self, user: &str, path: &str) -> String {
        let _ = user;
        self.url(path)
    }
}

impl HubAddress for Stack {
    fn url(&self, path: &str) -> String {
        Stack::url(self, path)
    }
    fn user_url(&self, user: &str, path: &str) -> String {
        Stack::user_url(self, user, path)
    }
}

pub struct Stack {
    pub project: String,
    pub port: u16,
    pub network: String,
    pub volume_prefix: String,
    /// The TLS front door (nginx) when the stack runs with the TLS overlay.
    pub tls: Option<Front>,
    compose: Compose,
    env: Vec<(String, String)>,
    env_file: std::path::PathBuf,
    /// The `down -v` command line, printed when the stack is kept.
    down_command: String,
    keep: bool,
    /// Set by the first `remove` (or drop): the stack is removed once.
    removed: AtomicBool,
}

/// What a stack is started from, whoever starts it: a test (`Stack::start_with`, from the preflight's
/// `Setup`) or a program that resolved these itself (`cargo xtask bench`).
pub struct Source<'a> {
    /// The start of the compose project's name (`<prefix><pid><n>`): whose stack it is, in `docker ps`.
    pub project_prefix: &'a str,
    pub compose_cli: &'a [String],
    pub compose_file: &'a Path,
    /// The hub image the stack runs (the lock's content-keyed tag).
    pub hub_image: &'a str,
    /// The front door's image (the lock's nginx): needed only for a stack with TLS.
    pub nginx_image: Option<&'a str>,
    /// The hub's view, resolved as `cargo xtask up` resolves it and fitted to the engine.
    pub view: &'a HubView,
}

impl Stack {
    /// Starts a plain-HTTP stack (no front door): what every resilience case runs on.
    pub async fn start(setup: &Setup, settings: &[(&str, &str)], artifacts: &Path) -> Result<Stack> {
        Stack::start_with(setup, settings, artifacts, None).await
    }

    /// Starts a stack with the contract's isolation variables plus `settings` (e.g. SPAWNER=profiles) and
    /// waits until the hub is healthy. `artifacts` receives the stack's env file. With `tls`, nginx stands in
    /// front (stack/docker-compose.tls.yml) and the proxy's port is closed.
    pub async fn start_with(setup: &Setup, settings: &[(&str, &str)], artifacts: &Path, tls: Option<Front>) -> Result<Stack> {
        Stack::start_with_catalog(setup, &setup.catalog, settings, artifacts, tls).await
    }

    /// `start_with`, the hub offering the images of `catalog` (the checkout's, edited by a test: a course's
    /// groups) with the ids the preflight found for the lock's builds.
    pub async fn start_with_catalog(
        setup: &Setup,
        catalog: &Catalog,
        settings: &[(&str, &str)],
        artifacts: &Path,
        tls: Option<Front>,
    ) -> Result<Stack> {
        // The hub's view, resolved as `cargo xtask up` resolves it, from the same catalog, lock and ids the
        // test expects.
        let mut view = HubView::resolve(catalog, &setup.lock, &setup.image_ids)?;
        let info = setup.docker.info().await?;
        view.fit_to_engine(info.ncpu.unwrap_or_default() as f64, info.mem_total.unwrap_or_default().max(0) as u64);
        let source = Source {
            project_prefix: "jhubtest",
            compose_cli: &setup.compose_cli,
            compose_file: &setup.compose_file,
            hub_image: setup.hub_image(),
            nginx_image: setup.lock.keyed_tag("nginx"),
            view: &view,
        };
        Stack::start_from(&source, settings, artifacts, tls).await
    }

    /// Starts a stack from `source` with the contract's isolation variables plus `settings`, and waits
    /// until the hub is healthy. `artifacts` receives the stack's view and env file (mode 600: it may hold
    /// the admin's password).
    pub async fn start_from(source: &Source<'_>, settings: &[(&str, &str)], artifacts: &Path, tls: Option<Front>) -> Result<Stack> {
        let number = STACKS.fetch_add(1, Ordering::SeqCst);
        let project = format!("{}{}{number}", source.project_prefix, std::process::id());
        let port = free_port()?;
        let network = format!("{project}-net");
        let volume_prefix = format!("{project}-user-");
        let mut env: Vec<(String, String)> = vec![
            ("JHUB_STACK_NAME".into(), project.clone()),
            ("JHUB_NETWORK".into(), network.clone()),
            ("JHUB_USER_VOLUME_PREFIX".into(), volume_prefix.clone()),
            ("JHUB_HUB_IMAGE".into(), source.hub_image.to_string()),
            ("JHUB_HTTP_PORT".into(), port.to_string()),
        ];
        if let Some(front) = &tls {
            let nginx = source.nginx_image.context("images.lock has no nginx image")?;
            env.retain(|(key, _)| key != "JHUB_HTTP_PORT");
            env.extend([
                ("JHUB_NGINX_IMAGE".into(), nginx.to_string()),
                ("JHUB_HTTPS_PORT".into(), front.https_port.to_string()),
                ("JHUB_HTTP_PORT".into(), front.http_port.to_string()),
                ("JHUB_TLS_CERT_MOUNT".into(), front.files.server_cert().display().to_string()),
                ("JHUB_TLS_KEY_MOUNT".into(), front.files.server_key().display().to_string()),
            ]);
            if front.subdomain_host.is_some() {
                // What `cargo xtask up` sets for JHUB_SUBDOMAINS: the hub's origin as browsers reach it.
                env.push(("JHUB_SUBDOMAIN_HOST".into(), format!("https://{}", front.hub_authority())));
            }
        }
        env.extend(settings.iter().map(|(key, value)| (key.to_string(), value.to_string())));
        let view_file = artifacts.join("hub-view.json");
        source.view.write_atomically(&view_file)?;
        env.push(("JHUB_HUB_VIEW".into(), view_file.to_string_lossy().into_owned()));
        // Compose reads stack/.env unless told otherwise; the test's own env file replaces it and also
        // records what the stack got.
        let env_file = artifacts.join("stack.env");
        let text: String = env.iter().map(|(key, value)| format!("{key}={value}\n")).collect();
        check_settings(&text, &env, &env_file.display().to_string())?;
        jhub_docker::write_atomically(&env_file, text.as_bytes(), 0o600).with_context(|| format!("cannot write {}", env_file.display()))?;
        let mut compose = Compose::new(source.compose_cli.to_vec(), source.compose_file, &project);
        let overlay = source.compose_file.with_file_name("docker-compose.tls.yml");
        if tls.is_some() {
            compose = compose.with_overlay(&overlay);
        }
        // AUTH_STRATEGY=ldap: the LDAP folder (JHUB_LDAP_DIR) mounted into the hub, as `cargo xtask up` does.
        if settings.iter().any(|(key, value)| *key == "AUTH_STRATEGY" && *value == "ldap") {
            compose = compose.with_overlay(&source.compose_file.with_file_name("docker-compose.ldap.yml"));
        }
        for (key, value) in &env {
            compose = compose.with_env(key, value);
        }
        let overlay_args = if tls.is_some() { format!(" -f {}", overlay.display()) } else { String::new() };
        let down_command = format!(
            "{} -f {}{overlay_args} -p {project} --env-file {} down -v",
            source.compose_cli.join(" "),
            source.compose_file.display(),
            env_file.display()
        );
        let keep = truthy("JHUB_ACCEPTANCE_KEEP");
        // The guard exists before `up`, so a failed start is cleaned up too.
        let stack = Stack {
            project,
            port,
            network,
            volume_prefix,
            tls,
            compose,
            env,
            env_file,
            down_command,
            keep,
            removed: AtomicBool::new(false),
        };
        stack.wait_healthy().await?;
        Ok(stack)
    }

    /// Holds a stack that something else starts from `env_file` (`cargo xtask up` in a scratch checkout,
    /// whose compose file is `compose_file`): nothing is started here, and from now on it is removed like
    /// the harness's own stacks (on drop, after a failed start too). `env` is what that starter passes
    /// compose besides the file (the hub image and view), which `down` needs as well.
    pub fn adopt(compose_file: &Path, env_file: &Path, env: &[(&str, &str)]) -> Result<Stack> {
        let settings = Settings::load(env_file)?;
        let project = settings.stack_name.clone();
        let compose_cli = jhub_docker::compose::detect_cli().map_err(|err| anyhow::anyhow!("{}\nhint: {}", err.message, err.hint))?;
        let mut compose = Compose::new(compose_cli.clone(), compose_file, &project);
        for (key, value) in env {
            compose = compose.with_env(key, value);
        }
        let down_command =
            format!("{} -f {} -p {project} --env-file {} down -v", compose_cli.join(" "), compose_file.display(), env_file.display());
        Ok(Stack {
            port: settings.http_port()?,
            network: settings.get("JHUB_NETWORK", "jupyterhub-net"),
            volume_prefix: settings.user_volume_prefix.clone(),
            project,
            tls: None,
            compose,
            env: env.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
            env_file: env_file.to_path_buf(),
            down_command,
            keep: truthy("JHUB_ACCEPTANCE_KEEP"),
            removed: AtomicBool::new(false),
        })
    }

    pub fn url(&self, path: &str) -> String {
        match &self.tls {
            Some(front) => format!("https://{}{path}", front.hub_authority()),
            None => format!("http://127.0.0.1:{}{path}", self.port),
        }
    }

    /// The settings file the stack runs with (in its artifacts folder): what `--env-file` gives the xtask.
    pub fn env_file(&self) -> &Path {
        &self.env_file
    }

    /// The URL of `path` (which starts with `/user/<user>/`) on `user`'s server, as that user's browser
    /// reaches it: on the hub's origin, or with per-user origins on `https://<label>.HOST:<port>`.
    pub fn user_url(&self, user: &str, path: &str) -> String {
        match self.tls.as_ref().and_then(|front| front.subdomain_host.as_ref().map(|host| (front, host))) {
            Some((front, host)) => format!("https://{}.{host}:{}{path}", user_label(user), front.https_port),
            None => self.url(path),
        }
    }

    /// Runs the compose CLI with this stack's file, project and environment (and nothing else's).
    pub fn compose(&self, args: &[&str]) -> Result<String> {
        let mut full_args = vec!["--env-file", self.env_file.to_str().expect("a UTF-8 temp path")];
        full_args.extend_from_slice(args);
        let mut command = self.compose.command(&full_args);
        for knob in compose_variables() {
            if !self.env.iter().any(|(key, _)| *key == knob) {
                command.env_remove(&knob);
            }
        }
        let output = command.stdin(Stdio::null()).output().with_context(|| format!("cannot run compose {}", args.join(" ")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("`compose {}` failed ({}) for project {}:\n{}", args.join(" "), output.status, self.project, tail.join("\n"));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The last `lines` lines of every service's log, for error messages.
    pub fn logs_tail(&self, lines: u32) -> String {
        match self.compose(&["logs", "--no-color", &format!("--tail={lines}")]) {
            Ok(logs) => logs,
            Err(err) => format!("(no compose logs: {err:#})"),
        }
    }

    /// Brings the stack up (or back, after a restart of one of its containers) with `compose up -d --wait
    /// --no-recreate`, which returns once every service's healthcheck passes (with TLS, nginx's: /hub/health
    /// through nginx, the proxy and the hub), then checks once that the hub answers through the published
    /// port. On failure the compose logs go to the artifacts.
    pub async fn wait_healthy(&self) -> Result<()> {
        let started = Instant::now();
        let timeout = HEALTHY.as_secs().to_string();
        let up = self.compose(&["up", "-d", "--wait", "--wait-timeout", &timeout, "--no-recreate", "--no-build"]);
        let through_proxy = match &up {
            Ok(_) => self.answers_through_proxy().await,
            Err(_) => Ok(()),
        };
        if let Err(err) = up.and(through_proxy) {
            if let Some(folder) = self.env_file.parent() {
                let _ = std::fs::write(folder.join("compose-logs.txt"), self.logs_tail(2000));
            }
            bail!("stack {} did not become healthy: {err:#}\ncompose logs (tail):\n{}", self.project, self.logs_tail(40));
        }
        progress!("stack {}: healthy after {:.1} s at {}", self.project, started.elapsed().as_secs_f64(), self.url("/hub/"));
        Ok(())
    }

    /// One request to `/hub/health` through the proxy's published port: the front door works too.
    async fn answers_through_proxy(&self) -> Result<()> {
        let url = self.url("/hub/health");
        if self.tls.is_some() {
            // The harness has no TLS client: ask from inside nginx's container (tls.rs checks the front door).
            let code = self.compose(&[
                "exec",
                "-T",
                "nginx",
                "curl",
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "https://127.0.0.1/hub/health",
            ])?;
            if code.trim() != "200" {
                bail!("{url} answered {} inside nginx although compose reports every service healthy", code.trim());
            }
            return Ok(());
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let status = http.get(&url).send().await.with_context(|| format!("GET {url}"))?.status();
        if status != reqwest::StatusCode::OK {
            bail!("GET {url} answered {status} although compose reports every service healthy");
        }
        Ok(())
    }

    fn teardown(&self) {
        // The hub first: it would restart (or respawn) what is being removed.
        let _ = self.compose(&["stop", "-t", "5", "hub"]);
        // User containers next: compose does not know them, and they hold the network and the volumes.
        let label = format!("label=io.jhub-docker.stack={}", self.project);
        let containers = cli_lines(&["ps", "-aq", "--filter", &label]);
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            cli_quiet(&args);
        }
        if let Err(err) = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]) {
            progress!("stack {}: cleanup: {err:#}", self.project);
        }
        let mut volumes: Vec<String> = cli_lines(&["volume", "ls", "-q", "--filter", &format!("name={}", self.volume_prefix)])
            .into_iter()
            .filter(|name| name.starts_with(&self.volume_prefix))
            .collect();
        // Archives of deleted users carry the stack's label, not the user-volume prefix.
        volumes.extend(cli_lines(&["volume", "ls", "-q", "--filter", &label]));
        if !volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(volumes.iter().map(String::as_str));
            cli_quiet(&args);
        }
        if !cli_lines(&["network", "ls", "-q", "--filter", &format!("name=^{}$", self.network)]).is_empty() {
            cli_quiet(&["network", "rm", &self.network]);
        }
    }
}

impl Stack {
    /// Removes the stack now (user containers, `down -v`, its volumes and network), or with
    /// `JHUB_ACCEPTANCE_KEEP=1` says how to; only the first call (or the drop) does anything. For a
    /// program that must know the stack is gone at a point of its own, whoever still holds it.
    pub fn remove(&self) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.keep {
            progress!(
                "stack {project} kept (JHUB_ACCEPTANCE_KEEP=1): {url}\n  remove it with: \
                 docker rm -f $(docker ps -aq --filter label=io.jhub-docker.stack={project}); \
                 {down}; docker volume rm $(docker volume ls -q --filter name={prefix})",
                project = self.project,
                url = self.url("/hub/"),
                down = self.down_command,
                prefix = self.volume_prefix,
            );
            return;
        }
        let started = Instant::now();
        self.teardown();
        progress!("stack {}: removed in {:.1} s", self.project, started.elapsed().as_secs_f64());
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Whether `JHUB_ACCEPTANCE_KEEP` asks to leave the stacks up.
pub fn keeps() -> bool {
    truthy("JHUB_ACCEPTANCE_KEEP")
}

/// The DNS label JupyterHub 5.5 gives `user`'s server with subdomain_host (its default `idna` subdomain
/// hook, `jupyterhub.utils._strict_dns_safe_encode`), for ASCII names: a name that is a valid DNS label
/// and holds no `--` is kept; any other (a `.`, a `_`, a leading `-`…) becomes `u-<up to 8 of its
/// letters and digits, or x>--<first 7 hex digits of its sha256>`. (IDNA, which the hook tries for
/// non-ASCII names, never helps an ASCII one: it keeps dots and refuses `_`.)
pub fn user_label(user: &str) -> String {
    assert!(user.is_ascii(), "user_label covers ASCII names only; `{user}` is not one");
    let safe = (1..=63).contains(&user.len())
        && !user.bytes().all(|byte| byte.is_ascii_digit())
        && !user.starts_with('-')
        && !user.ends_with('-')
        && user.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
    if safe && !user.contains("--") {
        return user.to_string();
    }
    use sha2::Digest as _;
    let hash: String = sha2::Sha256::digest(user.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect();
    let stub: String = user.to_ascii_lowercase().chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    format!("u-{}--{}", if stub.is_empty() { "x" } else { &stub }, &hash[..7])
}
