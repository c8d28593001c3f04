//! Attacks on a real jhub-docker stack, each as an attacker would run it: a cross-site link opened by the
//! logged-in admin (headless Chromium), a new account that takes a deleted user's name, forwarded headers
//! forged from inside a user's container (with and without the TLS front door), and a stranger's wrong
//! passwords that try to lock `admin` out. Each case asserts the attack fails and what still works.
//!
//! Run with `cargo test --test security -- --test-threads=1` after `cargo xtask build-images`: one stack
//! at a time. Artifacts of a failed case land in `target/acceptance-artifacts/security-<case>/`.

/// Progress and timings on stderr, past libtest's capture (as in the acceptance test).
macro_rules! progress {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[allow(dead_code)]
#[path = "acceptance/artifacts.rs"]
mod artifacts;
#[allow(dead_code)]
#[path = "acceptance/browser.rs"]
mod browser;
/// The xtask's certificate code, which the harness's front-door module uses.
#[path = "../xtask/src/tls/certs.rs"]
#[allow(dead_code)]
mod certs;
#[allow(dead_code)]
#[path = "resilience/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "acceptance/docker.rs"]
mod docker;
#[allow(dead_code)]
#[path = "acceptance/hub.rs"]
mod hub;
#[allow(dead_code)]
#[path = "acceptance/preflight.rs"]
mod preflight;
#[allow(dead_code)]
#[path = "acceptance/stack.rs"]
mod stack;
#[path = "acceptance/tls.rs"]
#[allow(dead_code)]
mod tls;
#[path = "acceptance/wait.rs"]
#[allow(dead_code)]
mod wait;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, ensure};
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::ListVolumesOptionsBuilder;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::artifacts::Artifacts;
use crate::browser::{Browser, Chromedriver};
use crate::client::{Api, Session};
use crate::preflight::Setup;
use crate::stack::Stack;
use crate::tls::Front;

/// One stack at a time: two cores, shared with other work.
static ONE_STACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ADMIN_PASSWORD: &str = "Security-admin-pw-1";
/// The single-user image the cases spawn: the smallest of the catalog's contract names.
const IMAGE: &str = "minimal";

fn random_hex() -> String {
    format!("{:016x}", std::collections::hash_map::RandomState::new().build_hasher().finish())
}

fn fresh_password() -> String {
    format!("Sec-{}-pw", random_hex())
}

/// The preflight, an artifacts folder for `case` and the serialisation guard.
async fn prepare(case: &str) -> Result<(tokio::sync::MutexGuard<'static, ()>, Setup, Artifacts)> {
    let guard = ONE_STACK_AT_A_TIME.lock().await;
    let setup = preflight::check().await?;
    let artifacts = Artifacts::for_test(&setup.root, &format!("security-{case}"))?;
    progress!("case {case}: started");
    Ok((guard, setup, artifacts))
}

/// Saves the stack's container logs (and the browsers' pages) when a case failed.
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

fn settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("ADMIN_PASSWORD", ADMIN_PASSWORD)];
    all.extend_from_slice(extra);
    all
}

/// Signs `user` up (open signup), logs in and returns the session, its API and the password.
async fn new_user(stack: &Stack, user: &str) -> Result<(Session, Api, String)> {
    let password = fresh_password();
    let session = Session::new(stack, user)?;
    let alert = session.sign_up(&password).await?;
    ensure!(alert == "alert-success", "signup of {user} showed {alert}, expected alert-success");
    session.must_log_in(&password).await?;
    let api = session.api_token().await?;
    Ok((session, api, password))
}

/// Runs `argv` in `container` through the Engine API's exec; returns the exit code and the output.
async fn exec(docker: &Docker, container: &str, argv: &[&str]) -> Result<(i64, String)> {
    let options =
        CreateExecOptions { cmd: Some(argv.to_vec()), attach_stdout: Some(true), attach_stderr: Some(true), ..Default::default() };
    let created = docker.create_exec(container, options).await?;
    let mut text = String::new();
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&created.id, None).await? {
        while let Some(chunk) = output.next().await {
            text.push_str(&chunk?.to_string());
        }
    }
    let code = docker.inspect_exec(&created.id).await?.exit_code.unwrap_or(-1);
    Ok((code, text))
}

/// The id of the compose service `service`'s container.
async fn service_id(setup: &Setup, stack: &Stack, service: &str) -> Result<String> {
    docker::service_container(&setup.docker, &stack.project, service).await?.id.ok_or_else(|| anyhow!("the {service} container has no id"))
}

/// `cargo xtask ARGS` at the repository root, pointed at the test stack by its variables.
fn xtask(stack: &Stack, args: &[&str]) -> Result<(bool, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .current_dir(jhub_docker::repo_root())
        .args(["xtask"])
        .args(args)
        .env("JHUB_STACK_NAME", &stack.project)
        .env("JHUB_NETWORK", &stack.network)
        .env("JHUB_USER_VOLUME_PREFIX", &stack.volume_prefix)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .context("cannot run cargo xtask")?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    progress!("cargo xtask {}: {}\n{}", args.join(" "), output.status, text.trim_end());
    Ok((output.status.success(), text))
}

/// The hub's log lines (JupyterHub's request log) that contain `marker`, waiting for at least one.
async fn hub_log_lines(setup: &Setup, stack: &Stack, marker: &str) -> Result<Vec<String>> {
    let id = service_id(setup, stack, "hub").await?;
    wait::until(&format!("the hub's log line for {marker}"), wait::DEFAULT, || async {
        let logs = docker::logs(&setup.docker, &id).await;
        let lines: Vec<String> = logs.lines().filter(|line| line.contains(marker)).map(str::to_string).collect();
        Ok((!lines.is_empty()).then_some(lines))
    })
    .await
}

// ---------------------------------------------------------------------------------------------------------
// 1. No state change by link.

/// A web server of the attacker's on another origin (`http://localhost:PORT`, while the hub is at
/// `http://127.0.0.1:…`: another site, so Chromium marks requests from its pages `Sec-Fetch-Site:
/// cross-site`). It answers every path with the page `pages` names for it.
struct AttackerSite {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl AttackerSite {
    async fn start(pages: HashMap<&'static str, String>) -> Result<AttackerSite> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0u8; 8192];
                let read = socket.read(&mut request).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&request[..read]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = match pages.get(path.as_str()) {
                    Some(page) => ("200 OK", page.clone()),
                    None => ("404 Not Found", "not here".to_string()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        Ok(AttackerSite { port, task })
    }

    fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.port)
    }
}

impl Drop for AttackerSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `user` can log in with `password` right now (a fresh session, as the user would).
async fn can_log_in(stack: &Stack, user: &str, password: &str) -> Result<bool> {
    Ok(Session::new(stack, user)?.log_in(password).await?.is_none())
}

/// Opens `url` (the attacker's page) in `browser` and waits until the page it sends the browser to, on the
/// hub's origin, has loaded.
async fn open_attack(browser: &Browser, stack: &Stack, url: &str) -> Result<String> {
    browser.goto(url).await?;
    let hub_origin = stack.url("");
    wait::until(&format!("{url} to send the browser to {hub_origin}"), wait::DEFAULT, || async {
        let now = browser.url().await?;
        if !now.starts_with(&hub_origin) {
            return Ok(None);
        }
        let state = browser.js("return document.readyState;", vec![]).await?;
        Ok((state == "complete").then_some(now))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_no_state_change_by_link() -> Result<()> {
    let (_guard, setup, artifacts) = prepare("s01-link").await?;
    let stack = Stack::start(&setup, &settings(&[]), &artifacts.dir).await?;
    let driver = Chromedriver::start(&artifacts.dir.join("chromedriver.log")).await?;
    let admin = driver.session("admin").await?;
    let result = no_state_change_by_link(&stack, &admin).await;
    finish("s01-link", &setup, &stack, &artifacts, std::slice::from_ref(&admin), result).await
}

async fn no_state_change_by_link(stack: &Stack, admin: &Browser) -> Result<()> {
    // bob signs up (open signup: approved at once) and can log in.
    let (_, _, bob_password) = new_user(stack, "bob").await?;
    ensure!(can_log_in(stack, "bob", &bob_password).await?, "bob cannot log in before any attack");
    hub::log_in(admin, stack, "admin", ADMIN_PASSWORD).await?;

    let target = stack.url("/hub/authorize/bob");
    let discard = stack.url("/hub/discard/bob");
    let pages = HashMap::from([
        // A link the admin follows (or a page that sends the browser on by itself).
        ("/link", format!("<!doctype html><title>cat pictures</title><script>location.href = {target:?};</script>")),
        // A form that posts itself: the request the admin's Authorize buttons make, but without `_xsrf`.
        (
            "/form",
            format!(
                "<!doctype html><title>cat pictures</title><form id=f method=post action={target:?}></form>\
                 <script>document.getElementById('f').submit();</script>"
            ),
        ),
        ("/discard", format!("<!doctype html><title>cat pictures</title><script>location.href = {discard:?};</script>")),
    ]);
    let site = AttackerSite::start(pages).await?;

    let landed = open_attack(admin, stack, &site.url("/link")).await?;
    progress!("the admin's browser followed the cross-site link to {target} and landed on {landed}");
    ensure!(
        can_log_in(stack, "bob", &bob_password).await?,
        "a cross-site link opened by the admin ({} → GET {target}) changed bob's approval: bob can no longer log in",
        site.url("/link")
    );
    let landed = open_attack(admin, stack, &site.url("/form")).await?;
    progress!("the cross-site form post to {target} landed on {landed}");
    ensure!(
        can_log_in(stack, "bob", &bob_password).await?,
        "a cross-site form post without `_xsrf` ({} → POST {target}) changed bob's approval",
        site.url("/form")
    );

    // The admin's own buttons still work, in the browser: unauthorize bob, then authorize him again.
    admin.goto(&stack.url("/hub/authorize")).await?;
    admin.click("tr[id='bob'] form[action$='/authorize/bob'] button", wait::DEFAULT).await?;
    admin.visible("tr[id='bob']:not(.success)", wait::DEFAULT).await?;
    ensure!(!can_log_in(stack, "bob", &bob_password).await?, "the admin's Unauthorize button did not take bob's approval");
    hub::authorize(admin, stack, "bob").await?;
    ensure!(can_log_in(stack, "bob", &bob_password).await?, "the admin's Authorize button did not give bob's approval back");

    // Discard acts on unapproved users only: take bob's approval, then try the cross-site discard link.
    admin.goto(&stack.url("/hub/authorize")).await?;
    admin.click("tr[id='bob'] form[action$='/authorize/bob'] button", wait::DEFAULT).await?;
    admin.visible("tr[id='bob']:not(.success)", wait::DEFAULT).await?;
    open_attack(admin, stack, &site.url("/discard")).await?;
    admin.goto(&stack.url("/hub/authorize")).await?;
    ensure!(
        admin.is_visible("tr[id='bob']").await?,
        "a cross-site link ({} → GET {discard}) discarded bob's account",
        site.url("/discard")
    );

    // The hub's cookies are SameSite=Lax, the `_xsrf` cookie included.
    let cookies = admin.client.get_all_cookies().await?;
    let hub_cookies: Vec<_> =
        cookies.iter().filter(|cookie| cookie.name().starts_with("jupyterhub-") || cookie.name() == "_xsrf").collect();
    ensure!(hub_cookies.iter().any(|cookie| cookie.name() == "_xsrf"), "no _xsrf cookie in the admin's browser");
    for cookie in &hub_cookies {
        let same_site = format!("{:?}", cookie.same_site());
        ensure!(same_site == "Some(Lax)", "the cookie {} came with SameSite {same_site}, expected Lax", cookie.name());
    }
    progress!("SameSite=Lax: {:?}", hub_cookies.iter().map(|cookie| cookie.name()).collect::<Vec<_>>());
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// 2. A deleted user's files never go to a namesake.

/// Volumes carrying every one of `labels` (`key=value`), by name.
async fn volumes_labelled(docker: &Docker, labels: &[String]) -> Result<Vec<(String, HashMap<String, String>)>> {
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", labels.iter().map(String::as_str).collect())]);
    let volumes = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filters).build())).await?;
    Ok(volumes.volumes.unwrap_or_default().into_iter().map(|volume| (volume.name, volume.labels)).collect())
}

/// `path` inside volume `volume`, read in a throwaway container of the hub image (no network).
fn read_from_volume(setup: &Setup, volume: &str, path: &str) -> Result<String> {
    let output = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--label", "io.jhub-docker.purpose=security-test", "-v"])
        .arg(format!("{volume}:/archive:ro"))
        .args(["--entrypoint", "cat", setup.hub_image()])
        .arg(format!("/archive/{path}"))
        .stdin(Stdio::null())
        .output()?;
    ensure!(output.status.success(), "cannot read {path} in volume {volume}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s02_deleted_user_is_archived() -> Result<()> {
    let (_guard, setup, artifacts) = prepare("s02-namesake").await?;
    let stack = Stack::start(&setup, &settings(&[]), &artifacts.dir).await?;
    let result = deleted_user_is_archived(&setup, &stack).await;
    finish("s02-namesake", &setup, &stack, &artifacts, &[], result).await
}

async fn deleted_user_is_archived(setup: &Setup, stack: &Stack) -> Result<()> {
    let admin = Session::new(stack, "admin")?;
    admin.must_log_in(ADMIN_PASSWORD).await?;
    let admin_api = admin.api_token().await?;
    let secret = format!("bob's diary {}", random_hex());
    let (_, bob, _) = new_user(stack, "bob").await?;
    bob.spawn("bob", IMAGE).await?;
    bob.put_file("bob", "diary.txt", secret.as_bytes()).await?;

    // Deleted while his server runs: the hub stops it first, then archives the volume.
    let status = admin_api.delete("/hub/api/users/bob").await?;
    ensure!(status == reqwest::StatusCode::NO_CONTENT, "DELETE /hub/api/users/bob answered {status}");
    progress!("admin deleted bob (REST, {status})");

    // Someone else signs up as bob and starts a server.
    let (_, namesake, _) = new_user(stack, "bob").await?;
    namesake.spawn("bob", IMAGE).await?;
    let (status, body) = namesake.get("/user/bob/files/diary.txt").await?;
    ensure!(
        status == reqwest::StatusCode::NOT_FOUND,
        "the new account `bob` reads the deleted bob's diary.txt ({status}: {})",
        body.chars().take(80).collect::<String>()
    );
    progress!("the new bob's home has no diary.txt ({status})");

    // The old files are in one archive volume, labelled with the stack, the old account and the date.
    let labels = [format!("io.jhub-docker.stack={}", stack.project), "io.jhub-docker.archived-user=bob".to_string()];
    let archives = volumes_labelled(&setup.docker, &labels).await?;
    ensure!(archives.len() == 1, "expected one archive volume labelled {labels:?}, found {archives:?}");
    let (archive, archive_labels) = &archives[0];
    ensure!(!archive.starts_with(&stack.volume_prefix), "the archive {archive} is named like a user volume ({}…)", stack.volume_prefix);
    let archived_at = archive_labels.get("io.jhub-docker.archived-at").cloned().unwrap_or_default();
    ensure!(
        archived_at.len() >= 10 && archived_at.ends_with('Z'),
        "the archive {archive} has no UTC io.jhub-docker.archived-at label: {archive_labels:?}"
    );
    let kept = read_from_volume(setup, archive, "diary.txt")?;
    ensure!(kept == secret, "the archive {archive} holds a different diary.txt: {kept:?}");
    progress!("archive {archive} (archived-at {archived_at}) holds the deleted bob's diary.txt");

    // `cargo xtask archives` lists it; a purge is a dry run unless --yes.
    let (ok, text) = xtask(stack, &["archives"])?;
    ensure!(ok && text.contains(archive.as_str()), "`cargo xtask archives` does not list {archive}:\n{text}");
    let (ok, text) = xtask(stack, &["archives", "--purge", "bob"])?;
    ensure!(ok && text.contains(archive.as_str()), "`cargo xtask archives --purge bob` should name {archive}:\n{text}");
    ensure!(volumes_labelled(&setup.docker, &labels).await?.len() == 1, "a purge without --yes deleted the archive");
    let (ok, text) = xtask(stack, &["archives", "--purge", "nobody-here"])?;
    ensure!(!ok && text.contains("error:") && text.contains("hint:"), "purging an unknown name should fail with a hint:\n{text}");
    let (ok, text) = xtask(stack, &["archives", "--purge", "bob", "--yes"])?;
    ensure!(ok, "`cargo xtask archives --purge bob --yes` failed:\n{text}");
    ensure!(volumes_labelled(&setup.docker, &labels).await?.is_empty(), "the archive is still there after --purge bob --yes");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// 3. Forwarded headers only from the edge.

/// Run inside a user's container: requests to the hub with forged forwarded headers, directly to the proxy
/// (and, with TLS, through nginx). argv: base URLs (space-separated), probe marker, user, password.
/// Prints one JSON object: per base URL the status of the probe and the Set-Cookie lines of a login.
const FORGE_PROBE: &str = r#"
import http.cookiejar, json, re, ssl, sys, urllib.error, urllib.parse, urllib.request

bases, marker, user, password = sys.argv[1].split(), sys.argv[2], sys.argv[3], sys.argv[4]
forged = {
    "X-Real-Ip": "203.0.113.7",
    "X-Forwarded-For": "203.0.113.8",
    "X-Forwarded-Proto": "https",
    "X-Scheme": "https",
    "Forwarded": "for=203.0.113.9;proto=https",
}

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

def opener():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return urllib.request.build_opener(
        NoRedirect, urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), urllib.request.HTTPSHandler(context=context)
    )

def call(o, url, form=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        response = o.open(urllib.request.Request(url, data=data, headers=forged), timeout=30)
    except urllib.error.HTTPError as e:
        response = e
    return response.status, response.headers.get_all("Set-Cookie") or [], response.read().decode("utf-8", "replace")

seen = {}
for base in bases:
    o = opener()
    status, _, page = call(o, f"{base}/hub/login?probe={marker}")
    found = re.search(r'name="_xsrf"[^>]*value="([^"]+)"', page)
    login_status, cookies, _ = call(o, f"{base}/hub/login?next=%2Fhub%2Fhome", {"username": user, "password": password, "_xsrf": found.group(1) if found else ""})
    seen[base] = {"probe": status, "login": login_status, "cookies": cookies}
print(json.dumps(seen))
"#;

/// Runs FORGE_PROBE in ivy's running server (ivy logs in with `password`) and checks what the hub made of
/// the forged headers: the address it logged, and over plain HTTP the scheme (a Secure cookie).
async fn forged_headers(setup: &Setup, stack: &Stack, password: &str, bases: &[&str]) -> Result<()> {
    let container = docker::running_user_container(&setup.docker, &stack.project, "ivy").await?;
    let marker = format!("forged{}", random_hex());
    let (code, output) = exec(
        &setup.docker,
        container.id.as_deref().unwrap_or_default(),
        &["python3", "-c", FORGE_PROBE, &bases.join(" "), &marker, "ivy", password],
    )
    .await?;
    ensure!(code == 0, "the probe failed in ivy's container: {output}");
    let seen: Value = serde_json::from_str(output.trim().lines().last().unwrap_or_default())?;
    progress!("from ivy's container, with forged X-Real-Ip, X-Forwarded-*, X-Scheme and Forwarded: {seen}");
    let ivy_ip = container
        .network_settings
        .and_then(|settings| settings.networks)
        .and_then(|mut networks| networks.remove(&stack.network))
        .and_then(|network| network.ip_address)
        .unwrap_or_default();
    let lines = wait::until(&format!("a hub log line for each of {bases:?}"), wait::DEFAULT, || async {
        let lines = hub_log_lines(setup, stack, &marker).await?;
        Ok((lines.len() >= bases.len()).then_some(lines))
    })
    .await?;
    progress!("the hub logged:\n{}", lines.join("\n"));
    for line in &lines {
        ensure!(!line.contains("203.0.113."), "the hub logged an address forged in a header from ivy's container ({ivy_ip}): {line}");
    }
    ensure!(
        lines.iter().any(|line| line.contains(&format!("@{ivy_ip})"))),
        "no log line names ivy's container's own address {ivy_ip}: {lines:?}"
    );
    for base in bases {
        let login = &seen[base];
        ensure!(login["login"] == 302, "ivy's login from her container through {base} answered {} (expected 302)", login["login"]);
        let cookies: Vec<&str> = login["cookies"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        ensure!(cookies.iter().any(|cookie| cookie.starts_with("_xsrf=")), "the login through {base} set no _xsrf cookie: {cookies:?}");
        for cookie in &cookies {
            ensure!(cookie.contains("; SameSite=Lax"), "the cookie set through {base} is not SameSite=Lax: {cookie}");
        }
        let secure: Vec<&&str> = cookies.iter().filter(|cookie| cookie.to_ascii_lowercase().contains("; secure")).collect();
        if stack.tls.is_none() {
            // Over plain HTTP a Secure cookie means the hub believed the forged https scheme.
            ensure!(secure.is_empty(), "over plain HTTP the hub set Secure cookies, so it believed the forged https scheme: {secure:?}");
        } else {
            // Behind the TLS front door every hub cookie is Secure, `_xsrf` included.
            ensure!(secure.len() == cookies.len(), "behind the TLS front door some hub cookies came without Secure: {cookies:?}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s03_forged_headers_without_tls() -> Result<()> {
    let (_guard, setup, artifacts) = prepare("s03-forged-headers").await?;
    let stack = Stack::start(&setup, &settings(&[]), &artifacts.dir).await?;
    let result = async {
        let (_, ivy, password) = new_user(&stack, "ivy").await?;
        ivy.spawn("ivy", IMAGE).await?;
        forged_headers(&setup, &stack, &password, &["http://proxy:8000"]).await
    }
    .await;
    finish("s03-forged-headers", &setup, &stack, &artifacts, &[], result).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_forged_headers_with_tls() -> Result<()> {
    let (_guard, setup, artifacts) = prepare("s04-forged-headers-tls").await?;
    let front = Front::make(&artifacts.dir, false)?;
    let chromium_args = front.chromium_args();
    let stack = Stack::start_with(&setup, &settings(&[]), &artifacts.dir, Some(front)).await?;
    // The harness speaks no TLS itself: ivy signs up and starts her server in Chromium, over https.
    let driver = Chromedriver::start(&artifacts.dir.join("chromedriver.log")).await?.with_args(chromium_args);
    let ivy = driver.session("ivy").await?;
    let result = async {
        let password = fresh_password();
        let signup = hub::sign_up(&ivy, &stack, "ivy", &password).await?;
        ensure!(signup.class == "alert-success", "signup of ivy over https showed {}: {}", signup.class, signup.message);
        hub::log_in(&ivy, &stack, "ivy", &password).await?;
        ivy.goto(&stack.url("/hub/home")).await?;
        let answer = hub::api_spawn(&ivy, "ivy", &serde_json::json!({"image": IMAGE})).await?;
        ensure!(matches!(answer.status, 201 | 202), "ivy's spawn over https answered {}: {}", answer.status, answer.message);
        // The user's container reaches both: the proxy (skipping nginx) and nginx itself.
        forged_headers(&setup, &stack, &password, &["http://proxy:8000", "https://nginx"]).await
    }
    .await;
    finish("s04-forged-headers-tls", &setup, &stack, &artifacts, std::slice::from_ref(&ivy), result).await
}

// ---------------------------------------------------------------------------------------------------------
// 4. A stranger cannot lock the admin out.

/// Run inside a user's container: `count` logins as `user` with `password` through the proxy, each with a
/// fresh form; prints whether each was let in (a redirect away from the login page).
const LOGIN_PROBE: &str = r#"
import http.cookiejar, json, re, sys, urllib.error, urllib.parse, urllib.request

base, user, password, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

def call(o, url, form=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        response = o.open(urllib.request.Request(url, data=data), timeout=30)
    except urllib.error.HTTPError as e:
        response = e
    return response.status, response.headers.get("Location", ""), response.read().decode("utf-8", "replace")

results = []
for _ in range(count):
    o = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    _, _, page = call(o, f"{base}/hub/login")
    xsrf = re.search(r'name="_xsrf"[^>]*value="([^"]+)"', page).group(1)
    status, location, _ = call(o, f"{base}/hub/login?next=%2Fhub%2Fhome", {"username": user, "password": password, "_xsrf": xsrf})
    results.append(status == 302 and "/hub/login" not in location)
print(json.dumps(results))
"#;

/// Logs in as `user` from inside `container` `count` times; returns whether each attempt was let in.
async fn logins_from_container(setup: &Setup, container: &str, user: &str, password: &str, count: u32) -> Result<Vec<bool>> {
    let (code, output) =
        exec(&setup.docker, container, &["python3", "-c", LOGIN_PROBE, "http://proxy:8000", user, password, &count.to_string()]).await?;
    ensure!(code == 0, "the login probe failed in the container: {output}");
    Ok(serde_json::from_str(output.trim().lines().last().unwrap_or_default())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05_stranger_cannot_lock_out_the_admin() -> Result<()> {
    let (_guard, setup, artifacts) = prepare("s05-lockout").await?;
    let stack = Stack::start(&setup, &settings(&[]), &artifacts.dir).await?;
    let result = lockout_per_address(&setup, &stack).await;
    finish("s05-lockout", &setup, &stack, &artifacts, &[], result).await
}

async fn lockout_per_address(setup: &Setup, stack: &Stack) -> Result<()> {
    let (_, mallory, mallory_password) = new_user(stack, "mallory").await?;
    mallory.spawn("mallory", IMAGE).await?;
    let container = docker::running_user_container(&setup.docker, &stack.project, "mallory").await?;
    let id = container.id.clone().unwrap_or_default();
    let wrong = logins_from_container(setup, &id, "admin", "not-the-admin-password", 5).await?;
    ensure!(wrong.iter().all(|accepted| !accepted), "a wrong admin password was accepted: {wrong:?}");
    progress!("5 wrong passwords for admin from mallory's container: all refused");

    let admin = Session::new(stack, "admin")?;
    admin
        .must_log_in(ADMIN_PASSWORD)
        .await
        .context("after a stranger's 5 wrong passwords from another address, the admin is locked out")?;
    progress!("the admin logs in from the host");

    // From the address that failed five times, even the right password is refused for now.
    let again = logins_from_container(setup, &id, "admin", ADMIN_PASSWORD, 1).await?;
    ensure!(again == [false], "the admin's right password was accepted from the address that failed 5 times: no lockout there");
    // mallory's own account is not affected by what her address did to `admin`.
    let own = logins_from_container(setup, &id, "mallory", &mallory_password, 1).await?;
    ensure!(own == [true], "mallory cannot log in to her own account from her container");

    // `cargo xtask unlock admin` lifts the lockout from the host.
    let (ok, text) = xtask(stack, &["unlock", "admin"])?;
    ensure!(ok, "`cargo xtask unlock admin` failed:\n{text}");
    let after = logins_from_container(setup, &id, "admin", ADMIN_PASSWORD, 1).await?;
    ensure!(after == [true], "after `cargo xtask unlock admin` the right password is still refused from that address");
    let (ok, text) = xtask(stack, &["unlock", "nobody-here"])?;
    ensure!(!ok && text.contains("error:") && text.contains("hint:"), "unlocking an unknown account should fail with a hint:\n{text}");

    // `cargo xtask reset-password mallory` sets a new password, printed once.
    let (ok, text) = xtask(stack, &["reset-password", "mallory"])?;
    ensure!(ok, "`cargo xtask reset-password mallory` failed:\n{text}");
    let new_password = text
        .lines()
        .find_map(|line| line.split("new password: ").nth(1))
        .map(|rest| rest.trim().trim_matches('`').to_string())
        .ok_or_else(|| anyhow!("`reset-password` printed no `new password:` line:\n{text}"))?;
    ensure!(!can_log_in(stack, "mallory", &mallory_password).await?, "mallory's old password still works after reset-password");
    ensure!(can_log_in(stack, "mallory", &new_password).await?, "mallory's new password from reset-password does not work");
    Ok(())
}
