//! Attacks on a real jhub-docker stack, each as an attacker would run it: a cross-site link opened by the
//! logged-in admin (headless Chromium), a new account that takes a deleted user's name, forwarded headers
//! forged from inside a user's container (with and without the TLS front door), a stranger's wrong
//! passwords that try to lock `admin` out, a home whose contents try to break a restore half way (a folder
//! named like the restore's staging area, odd names and links, 100 000 files, a cut tar), and what a user's
//! container can reach (the Docker socket, the proxy's API, the hub's API beyond its own user, another
//! user's server), a page a user serves, opened by the admin, that tries to read hub pages and call the
//! hub's API with the admin's cookies (with per-user origins over https, in headless Chromium), and a spawn
//! naming an image the catalog does not offer. Each case asserts the attack fails and what still works.
//!
//! Run with `cargo test --test security -- --test-threads=1` after `cargo xtask build-images`: one stack
//! at a time. Artifacts of a failed case land in `target/acceptance-artifacts/security-<case>/`.

// The shared test support (crates/harness): the stack, the hub client, the browser, the engine helpers.
use jhub_harness::{browser, cases, client, docker, hub, lab, preflight, probes, progress, stack, steps, tls, wait};
use steps::{Door, Failure, Run, start_image, start_scenario};

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, ensure};
use bollard::Docker;
use bollard::query_parameters::ListVolumesOptionsBuilder;
use jhub_docker::contract;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::browser::{Browser, Chromedriver};
use crate::cases::{ADMIN_PASSWORD, Case, IMAGE, settings};
use crate::client::Session;
use crate::preflight::Setup;
use crate::stack::Stack;
use crate::tls::Front;

/// The id of the compose service `service`'s container.
async fn service_id(setup: &Setup, stack: &Stack, service: &str) -> Result<String> {
    docker::service_container(&setup.docker, &stack.project, service).await?.id.ok_or_else(|| anyhow!("the {service} container has no id"))
}

/// `cargo xtask ARGS` at the repository root, pointed at the test stack by its variables.
fn xtask(stack: &Stack, args: &[&str]) -> Result<(bool, String)> {
    let env = [
        ("JHUB_STACK_NAME", stack.project.as_str()),
        ("JHUB_NETWORK", stack.network.as_str()),
        ("JHUB_USER_VOLUME_PREFIX", stack.volume_prefix.as_str()),
        ("NO_COLOR", "1"),
    ];
    cases::xtask(args, &env)
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
    let case = Case::open("security", "s01-link", &settings(&[])).await?;
    let driver = Chromedriver::start(&case.artifacts.dir.join("chromedriver.log")).await?;
    let admin = driver.session("admin").await?;
    let result = no_state_change_by_link(&case.stack, &admin).await;
    case.finish(std::slice::from_ref(&admin), result).await
}

async fn no_state_change_by_link(stack: &Stack, admin: &Browser) -> Result<()> {
    // bob signs up (open signup: approved at once) and can log in.
    let (_, _, bob_password) = cases::new_user(stack, "bob").await?;
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
    cases::run("security", "s02-namesake", &settings(&[]), async |case| deleted_user_is_archived(&case.setup, &case.stack).await).await
}

async fn deleted_user_is_archived(setup: &Setup, stack: &Stack) -> Result<()> {
    let admin = Session::new(stack, "admin")?;
    admin.must_log_in(ADMIN_PASSWORD).await?;
    let admin_api = admin.api_token().await?;
    let secret = format!("bob's diary {}", cases::random_hex());
    let (_, bob, _) = cases::new_user(stack, "bob").await?;
    bob.spawn("bob", IMAGE).await?;
    bob.put_file("bob", "diary.txt", secret.as_bytes()).await?;

    // Deleted while his server runs: the hub stops it first, then archives the volume.
    let status = admin_api.delete("/hub/api/users/bob").await?;
    ensure!(status == reqwest::StatusCode::NO_CONTENT, "DELETE /hub/api/users/bob answered {status}");
    progress!("admin deleted bob (REST, {status})");

    // Someone else signs up as bob and starts a server.
    let (_, namesake, _) = cases::new_user(stack, "bob").await?;
    namesake.spawn("bob", IMAGE).await?;
    let (status, body) = namesake.get("/user/bob/files/diary.txt").await?;
    ensure!(
        status == reqwest::StatusCode::NOT_FOUND,
        "the new account `bob` reads the deleted bob's diary.txt ({status}: {})",
        body.chars().take(80).collect::<String>()
    );
    progress!("the new bob's home has no diary.txt ({status})");

    // The old files are in one archive volume, labelled with the stack, the old account and the date.
    let labels = [format!("{}={}", contract::STACK_LABEL, stack.project), format!("{}=bob", contract::ARCHIVED_USER_LABEL)];
    let archives = volumes_labelled(&setup.docker, &labels).await?;
    ensure!(archives.len() == 1, "expected one archive volume labelled {labels:?}, found {archives:?}");
    let (archive, archive_labels) = &archives[0];
    ensure!(!archive.starts_with(&stack.volume_prefix), "the archive {archive} is named like a user volume ({}…)", stack.volume_prefix);
    let archived_at = archive_labels.get(contract::ARCHIVED_AT_LABEL).cloned().unwrap_or_default();
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
    let marker = format!("forged{}", cases::random_hex());
    let (code, output) = docker::exec(
        &setup.docker,
        container.id.as_deref().unwrap_or_default(),
        &["python3", "-c", FORGE_PROBE, &bases.join(" "), &marker, "ivy", password],
        None,
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
    cases::run("security", "s03-forged-headers", &settings(&[]), async |case| {
        let (setup, stack) = (&case.setup, &case.stack);
        let (_, ivy, password) = cases::new_user(stack, "ivy").await?;
        ivy.spawn("ivy", IMAGE).await?;
        forged_headers(setup, stack, &password, &["http://proxy:8000"]).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_forged_headers_with_tls() -> Result<()> {
    let case = Case::open_behind_front("security", "s04-forged-headers-tls", &settings(&[]), false).await?;
    let (setup, stack, artifacts) = (&case.setup, &case.stack, &case.artifacts);
    let chromium_args = stack.tls.as_ref().map(Front::chromium_args).unwrap_or_default();
    // The harness speaks no TLS itself: ivy signs up and starts her server in Chromium, over https.
    let driver = Chromedriver::start(&artifacts.dir.join("chromedriver.log")).await?.with_args(chromium_args);
    let ivy = driver.session("ivy").await?;
    let result = async {
        let password = cases::fresh_password("Sec");
        let signup = hub::sign_up(&ivy, stack, "ivy", &password).await?;
        ensure!(signup.class == "alert-success", "signup of ivy over https showed {}: {}", signup.class, signup.message);
        hub::log_in(&ivy, stack, "ivy", &password).await?;
        ivy.goto(&stack.url("/hub/home")).await?;
        let answer = hub::api_spawn(&ivy, "ivy", &serde_json::json!({"image": IMAGE})).await?;
        ensure!(matches!(answer.status, 201 | 202), "ivy's spawn over https answered {}: {}", answer.status, answer.message);
        // The user's container reaches both: the proxy (skipping nginx) and nginx itself.
        forged_headers(setup, stack, &password, &["http://proxy:8000", "https://nginx"]).await
    }
    .await;
    case.finish(std::slice::from_ref(&ivy), result).await
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
    let (code, output) = docker::exec(
        &setup.docker,
        container,
        &["python3", "-c", LOGIN_PROBE, "http://proxy:8000", user, password, &count.to_string()],
        None,
    )
    .await?;
    ensure!(code == 0, "the login probe failed in the container: {output}");
    Ok(serde_json::from_str(output.trim().lines().last().unwrap_or_default())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05_stranger_cannot_lock_out_the_admin() -> Result<()> {
    cases::run("security", "s05-lockout", &settings(&[]), async |case| lockout_per_address(&case.setup, &case.stack).await).await
}

async fn lockout_per_address(setup: &Setup, stack: &Stack) -> Result<()> {
    let (_, mallory, mallory_password) = cases::new_user(stack, "mallory").await?;
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

// ---------------------------------------------------------------------------------------------------------
// 6. A restore that a user's home cannot break.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s06_restore_cannot_be_broken_by_a_home() -> Result<()> {
    cases::run("security", "s06-half-way-restore", &settings(&[]), async |case| restore_odd_homes(&case.setup, &case.stack).await).await
}

/// What a home may hold that a restore must carry through: a folder named like the restore's own staging
/// folder, names with a newline, unicode and a leading dash, absolute, relative and dangling symlinks, a
/// file its owner cannot read, a fifo, a socket (skipped, as Docker's archive skips sockets), 100 000
/// small files. Written by the user herself, in her running server.
const ODD_HOME_SCRIPT: &str = r#"
import os, socket
home = os.path.expanduser("~")
os.makedirs(home + "/.jhub-staging/deeper")
open(home + "/.jhub-staging/inside.txt", "w").write("mine")
open(home + "/weird name\nwith newline", "w").write("newline")
open(home + "/ünïcödé ✓", "w").write("unicode")
open(home + "/-dash", "w").write("dash")
os.symlink("/etc/passwd", home + "/absolute-link")
os.symlink(".jhub-staging/inside.txt", home + "/relative-link")
os.symlink("nowhere", home + "/dangling-link")
open(home + "/unreadable.bin", "wb").write(os.urandom(4096))
os.chmod(home + "/unreadable.bin", 0)
os.mkfifo(home + "/pipe")
socket.socket(socket.AF_UNIX).bind(home + "/socket")
for folder in range(100):
    os.makedirs(f"{home}/many/{folder:03}")
    for number in range(1000):
        with open(f"{home}/many/{folder:03}/{number:04}", "w") as handle:
            handle.write(str(folder * 1000 + number))
print("odd home written")
"#;

async fn restore_odd_homes(setup: &Setup, stack: &Stack) -> Result<()> {
    let artifacts = stack.env_file().parent().context("the stack's settings file has a folder")?;
    let (_, eve_api, eve_password) = cases::new_user(stack, "eve").await?;
    eve_api.spawn("eve", IMAGE).await?;
    let eve_container = docker::running_user_container(&setup.docker, &stack.project, "eve").await?.id.unwrap_or_default();
    let (code, output) = docker::exec(&setup.docker, &eve_container, &["python3", "-c", ODD_HOME_SCRIPT], None).await?;
    ensure!(code == 0 && output.contains("odd home written"), "writing eve's odd home failed ({code}): {output}");
    eve_api.stop("eve").await?;
    let (_, frank_api, _) = cases::new_user(stack, "frank").await?;
    frank_api.spawn("frank", IMAGE).await?;
    frank_api.put_file("frank", "frank.bin", &cases::random_bytes(256 << 10)).await?;
    frank_api.stop("frank").await?;
    let eve_volume = contract::user_volume_name(&stack.volume_prefix, "eve");
    let before = docker::volume_tree_sum(&setup.docker, setup.hub_image(), &eve_volume).await?;

    let env = stack.env_file().to_path_buf();
    let env_arg = env.to_str().expect("a UTF-8 path");
    let backup = artifacts.join("backup");
    let backup_arg = backup.to_str().expect("UTF-8");
    let (ok, text) = cases::xtask(&["backup", backup_arg, "--env-file", env_arg], &[])?;
    ensure!(ok && text.contains("2 user volume"), "cargo xtask backup failed:\n{text}");
    let (ok, text) = cases::xtask(&["down", "--volumes", "--env-file", env_arg], &[])?;
    ensure!(ok, "cargo xtask down --volumes failed:\n{text}");
    let data_volume = contract::data_volume_name(&stack.project);
    let nothing_restored = || async {
        let volumes = docker::user_volume_names(&setup.docker, &stack.volume_prefix).await?;
        ensure!(volumes.is_empty(), "user volumes exist after a refused or failed restore: {volumes:?}");
        ensure!(setup.docker.inspect_volume(&data_volume).await.is_err(), "{data_volume} exists after a refused or failed restore");
        Ok::<_, anyhow::Error>(())
    };

    // Settings that name another stack are refused: the backup restores into its own stack.
    let other_env = artifacts.join("other-stack.env");
    std::fs::write(
        &other_env,
        std::fs::read_to_string(&env)?.replace(&format!("JHUB_STACK_NAME={}", stack.project), "JHUB_STACK_NAME=another"),
    )?;
    let (ok, text) = cases::xtask(&["restore", backup_arg, "--env-file", other_env.to_str().expect("UTF-8")], &[])?;
    ensure!(
        !ok && text.contains("the backup is of stack") && text.contains("hint:"),
        "settings of another stack should be refused:\n{text}"
    );
    nothing_restored().await?;

    // All or nothing: frank's tar cut in half (the manifest made to agree, so the sums pass) fails while
    // it is staged, after eve's volume was staged whole; the stack is left as it was.
    let cut = artifacts.join("backup-cut");
    Command::new("cp").args(["-a", backup_arg, cut.to_str().expect("UTF-8")]).status()?;
    let frank_tar = cut.join("users/frank.tar");
    let bytes = std::fs::read(&frank_tar)?;
    let half = bytes[..bytes.len() / 2].to_vec();
    std::fs::write(&frank_tar, &half)?;
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(cut.join("manifest.json"))?)?;
    for file in manifest["files"].as_array_mut().context("the manifest lists no files")? {
        if file["path"] == "users/frank.tar" {
            file["bytes"] = json!(half.len());
            file["sha256"] = json!(sha256_hex(&half));
        }
    }
    std::fs::write(cut.join("manifest.json"), serde_json::to_vec_pretty(&manifest)?)?;
    let fresh_env = artifacts.join("fresh-checkout").join("stack.env");
    std::fs::create_dir_all(fresh_env.parent().expect("a folder"))?;
    let fresh_arg = fresh_env.to_str().expect("UTF-8");
    let (ok, text) = cases::xtask(&["restore", cut.to_str().expect("UTF-8"), "--env-file", fresh_arg], &[])?;
    ensure!(!ok && text.contains("nothing was restored"), "a restore whose second tar is cut should fail whole:\n{text}");
    nothing_restored().await?;
    ensure!(!fresh_env.exists(), "a failed restore wrote the settings {}", fresh_env.display());

    // Into a checkout without settings (a new machine): the backup's stack, prefix and settings.
    let (ok, text) = cases::xtask(&["restore", backup_arg, "--env-file", fresh_arg], &[])?;
    ensure!(ok, "cargo xtask restore into a fresh checkout failed:\n{text}");
    ensure!(std::fs::read(&fresh_env)? == std::fs::read(&env)?, "the restored settings differ from the backup's");
    let after = docker::volume_tree_sum(&setup.docker, setup.hub_image(), &eve_volume).await?;
    ensure!(after == before, "eve's home differs after the round trip (tree sum {after}, {before} before)");
    progress!("eve's odd home (100 000 small files, links, a fifo, a folder named .jhub-staging) came back identical");

    stack.compose(&["up", "-d", "--no-build"])?;
    stack.wait_healthy().await?;
    let eve = Session::new(stack, "eve")?;
    eve.must_log_in(&eve_password).await?;
    let eve_api = eve.api_token().await?;
    eve_api.spawn("eve", IMAGE).await?;
    // Jupyter's files handler hides dot folders: eve reads it in her server, as she would in a terminal.
    let eve_container = docker::running_user_container(&setup.docker, &stack.project, "eve").await?.id.unwrap_or_default();
    let (code, inside) = docker::exec(&setup.docker, &eve_container, &["sh", "-c", "cat \"$HOME/.jhub-staging/inside.txt\""], None).await?;
    ensure!(code == 0 && inside == "mine", "eve's .jhub-staging/inside.txt reads {inside:?} ({code}) after the restore");
    Ok(())
}

/// sha256 of `bytes`, hex, as the backup's manifest writes it.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", sha2::Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect::<String>())
}

// ---------------------------------------------------------------------------------------------------------
// 7. What a user's container can reach: the Docker socket, the proxy's API, the hub's API beyond its own
// user, another user's server.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s07_user_container_reaches_only_its_own() -> Result<()> {
    cases::run("security", "s07-isolation", &settings(&[]), async |case| {
        let (setup, stack) = (&case.setup, &case.stack);
        let (_, gina, _) = cases::new_user(stack, "gina").await?;
        let (_, hank, _) = cases::new_user(stack, "hank").await?;
        gina.spawn("gina", IMAGE).await?;
        hank.spawn("hank", IMAGE).await?;
        let gina_container = docker::running_user_container(&setup.docker, &stack.project, "gina").await?;
        let hank_container = docker::running_user_container(&setup.docker, &stack.project, "hank").await?;
        let hank_ip = hank_container
            .network_settings
            .and_then(|settings| settings.networks)
            .and_then(|mut networks| networks.remove(&stack.network))
            .and_then(|network| network.ip_address)
            .ok_or_else(|| anyhow!("hank's container has no address on {}", stack.network))?;
        let id = gina_container.id.unwrap_or_default();
        let (code, output) = docker::exec(&setup.docker, &id, &["python3", "-c", probes::REACH_PROBE, "hank", &hank_ip], None).await?;
        ensure!(code == 0, "the probe failed in gina's container: {output}");
        let seen: Value = serde_json::from_str(output.trim().lines().last().unwrap_or_default())?;
        progress!("from gina's container: {seen}");
        let problems = probes::reach_problems(&seen);
        ensure!(problems.is_empty(), "a user's container reaches too much: {}", problems.join("; "));
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------------------
// 8. A page a user serves, opened by the admin: with per-user origins it runs on the user's own origin.

/// The port mallory's own web server listens on inside her container (on 127.0.0.1; jupyter-server-proxy
/// reaches it at `/user/mallory/proxy/<port>/`).
const MALLORY_PORT: u16 = 8765;

/// The page mallory serves: its script tries, with the browser's cookies, to read a hub page as whoever
/// opens it (the `_xsrf` token the hub puts in `window.jhdata`, only if the page is a logged-in admin's
/// `/hub/home`) and to list the hub's users through `/hub/api/users`, on its own origin and on the hub's
/// (`HUB_ORIGIN`, replaced by the test). What it managed, and every answer it got, go into
/// `#jhub-attack-result` as JSON once it is done.
const EVIL_PAGE: &str = r#"<!doctype html>
<html><head><title>mallory's page</title></head><body>
<p>Nothing to see here.</p>
<pre id="jhub-attack-result">running</pre>
<script>
(async () => {
  const result = { origin: location.origin, xsrf: null, users: null, own: null, tries: [] };
  // The control: the page can fetch from the server it is served by (the admin's access to mallory's
  // server), so a failure below is the browser keeping the hub from it, not a page that cannot fetch.
  try {
    const xsrf = (document.cookie.split('; ').find(c => c.startsWith('_xsrf=')) || '').slice('_xsrf='.length);
    const own = await fetch(location.pathname.split('/').slice(0, 3).join('/') + '/api/status', { headers: { 'X-XSRFToken': xsrf } });
    result.own = own.status;
  } catch (err) {
    result.own = `${err}`;
  }
  for (const base of [...new Set([location.origin, 'HUB_ORIGIN'])]) {
    try {
      const page = await fetch(base + '/hub/home', { credentials: 'include' });
      const text = await page.text();
      const user = (text.match(/user:\s*"([^"]*)"/) || [])[1];
      const xsrf = (text.match(/xsrf_token:\s*"([^"]+)"/) || [])[1];
      result.tries.push(`GET ${base}/hub/home: ${page.status} at ${page.url}, jhdata.user=${user}, xsrf_token ${xsrf ? 'read' : 'absent'}`);
      if (user === 'admin' && xsrf && new URL(page.url).pathname.endsWith('/hub/home')) { result.xsrf = xsrf; }
    } catch (err) {
      result.tries.push(`GET ${base}/hub/home: ${err}`);
    }
    try {
      const headers = result.xsrf ? { 'X-XSRFToken': result.xsrf } : {};
      const api = await fetch(base + '/hub/api/users', { credentials: 'include', headers });
      const body = await api.text();
      result.tries.push(`GET ${base}/hub/api/users: ${api.status} ${body.slice(0, 120)}`);
      const users = api.ok ? JSON.parse(body) : null;
      if (Array.isArray(users)) { result.users = users.map(u => u.name); }
    } catch (err) {
      result.tries.push(`GET ${base}/hub/api/users: ${err}`);
    }
  }
  const out = document.getElementById('jhub-attack-result');
  out.textContent = JSON.stringify(result);
  out.setAttribute('data-done', 'yes');
})();
</script>
</body></html>
"#;

/// Attack: a page a user serves from her own server, opened by the admin, acts as the admin on the hub
/// (issue 14, item 4: one origin for the hub and every user's server). mallory writes `evil.html` into
/// her home through the contents API and serves her home with `python3 -m http.server` inside her
/// container, reached at `/user/mallory/proxy/8765/evil.html` through jupyter-server-proxy (any user can
/// run a process in her server, and she owns its Python; jupyter_server's own `/files/` answers with
/// `Content-Security-Policy: sandbox allow-scripts`, which already gives its pages an opaque origin). The
/// admin, logged in to the hub, opens the link. Its script tries to read the admin's `/hub/home` (and its
/// `_xsrf` token) and to list the users through `/hub/api/users` with the admin's cookies. Both must
/// fail: the page must not run on the hub's origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s08_user_page_cannot_act_as_admin() -> Result<(), Failure> {
    let _one = cases::one_stack_at_a_time().await;
    Ok(user_page_attack("security-s08-user-page").await?)
}

async fn user_page_attack(test: &str) -> Result<()> {
    let test_started = Instant::now();
    let admin_password = cases::fresh_password("Sec");
    let settings = [
        ("AUTH_STRATEGY", "native"),
        ("OPEN_SIGNUP", "true"),
        ("ADMIN_PASSWORD", admin_password.as_str()),
        ("SPAWNER", "dockerspawner"),
        ("IDLE_CULL_TIMEOUT", "0"),
    ];
    let (setup, artifacts, stack, driver) = start_scenario(test, &settings, Door::HttpsSubdomains).await?;
    let run = Run::new(&setup, &stack, &artifacts);
    let admin = run.session(&driver, "admin").await?;
    let mallory = run.session(&driver, "mallory").await?;
    let mallory_password = cases::fresh_password("Sec");
    if stack::keeps() {
        progress!("passwords (JHUB_ACCEPTANCE_KEEP): admin={admin_password} mallory={mallory_password}");
    }
    run.step("s1.admin-logs-in", "admin", hub::log_in(&admin, &stack, "admin", &admin_password)).await?;
    let page = run.step("s2.mallory-serves-a-page", "mallory", serve_evil_page(&run, &mallory, &mallory_password)).await?;
    let result = run.step("s3.admin-opens-it", "admin", open_evil_page(&admin, &page)).await?;
    run.step("s4.page-read-nothing", "admin", async {
        let tries = result["tries"].as_array().cloned().unwrap_or_default();
        let tries: Vec<&str> = tries.iter().filter_map(|line| line.as_str()).collect();
        progress!(
            "the page ran on {}, its own server's /api/status answered {}, and it tried:\n  {}",
            result["origin"],
            result["own"],
            tries.join("\n  ")
        );
        // Two attempts per origin it tried (its own, and the hub's when they differ): the script ran them all.
        ensure!(tries.len() >= 2, "the page's script reported {} attempts, expected at least 2: {result}", tries.len());
        ensure!(result["own"] == json!(200), "the page could not even fetch its own server's /api/status: {result}");
        let mut managed = Vec::new();
        if let Some(xsrf) = result["xsrf"].as_str() {
            managed.push(format!("read the admin's /hub/home and its _xsrf token {xsrf}"));
        }
        if let Some(users) = result["users"].as_array() {
            let names: Vec<&str> = users.iter().filter_map(|name| name.as_str()).collect();
            managed.push(format!("listed the hub's users {names:?} through /hub/api/users with the admin's cookies"));
        }
        ensure!(managed.is_empty(), "the page mallory serves ({page}) runs with the hub's privileges: it {}", managed.join("; and it "));
        Ok(())
    })
    .await?;
    if stack.tls.as_ref().is_some_and(|front| front.subdomain_host.is_some()) {
        run.step("s5.hub-pages-only-on-the-hubs-name", "admin", hub_pages_leave_user_names(&stack, &admin)).await?;
    }
    progress!("{test}: {:.1} s", test_started.elapsed().as_secs_f64());
    let _ = admin.close().await;
    let _ = mallory.close().await;
    Ok(())
}

/// s5. The same attack through the hub's own login page: mallory sends the admin
/// `https://mallory.HOST/hub/login?next=<her page>`. The proxy sends every path it has no route for to the
/// hub, whatever the name, so the hub would show its real login page on mallory's origin, and set its
/// login cookie there once the admin signs in; her script could then call the API on its own origin. The
/// hub's pages must be served on the hub's name only: the admin's browser ends on the hub's origin.
/// (The lure here has no `next`: the admin's browser, logged in on the hub's origin, then rests on a hub
/// page of whichever origin served the login page, which is what this step checks.)
async fn hub_pages_leave_user_names(stack: &Stack, admin: &Browser) -> Result<()> {
    let lure = stack.user_url("mallory", "/hub/login");
    admin.goto(&lure).await?;
    let hub_pages = stack.url("/hub/");
    let landed = admin.url_starts_with(&hub_pages, wait::DEFAULT).await;
    let url = admin.url().await?;
    landed.map_err(|_| anyhow!("{lure} left the admin's browser on {url}: the hub's login page is served on mallory's origin"))?;
    progress!("{lure} → {url}");
    Ok(())
}

/// mallory signs up, starts the default image, writes `evil.html` (with the hub's origin in it) into her
/// home through the contents API and serves her home on 127.0.0.1:MALLORY_PORT from a terminal. Returns
/// the page's URL once her own browser loads it through the proxy.
async fn serve_evil_page(run: &Run<'_>, mallory: &Browser, password: &str) -> Result<String> {
    let stack = run.stack;
    let signed_up = hub::sign_up(mallory, stack, "mallory", password).await?;
    ensure!(signed_up.class == "alert-success", "signing up `mallory` gave ({}) {}", signed_up.class, signed_up.message);
    hub::log_in(mallory, stack, "mallory", password).await?;
    start_image(run, mallory, "datascience").await?;
    lab::wait_ready(mallory, run.stack, "mallory", wait::SPAWN).await?;
    let hub_origin = stack.url("");
    let html = EVIL_PAGE.replace("HUB_ORIGIN", &hub_origin);
    // Tried again while a network change on the Docker host fails the request (the write is idempotent).
    let answer = wait::until("evil.html to be written through the contents API", wait::DEFAULT, || async {
        let answer = mallory
            .js(
                r#"
            const html = arguments[0];
            return (async () => {
            const cookie = document.cookie.split('; ').find(c => c.startsWith('_xsrf='));
            const base = location.pathname.replace(/\/lab.*$/, '/');
            const headers = { 'Content-Type': 'application/json' };
            if (cookie) { headers['X-XSRFToken'] = cookie.slice('_xsrf='.length); }
            const put = await fetch(`${base}api/contents/evil.html`, {
                method: 'PUT', headers, body: JSON.stringify({ type: 'file', format: 'text', content: html }),
            });
            return { status: put.status, body: (await put.text()).slice(0, 300) };
            })();
            "#,
                vec![json!(html)],
            )
            .await?;
        Ok(Some(answer))
    })
    .await?;
    let status = answer["status"].as_u64().unwrap_or_default();
    ensure!(status == 201 || status == 200, "writing evil.html through the contents API answered {status}: {}", answer["body"]);
    // Her web server starts in a terminal of her server, through the terminals API and its websocket
    // (what Lab's terminal uses), from her page: plain requests, which a network change on the Docker host
    // merely fails (they are tried again), where Lab's terminal panel first loads script chunks that such
    // a change can abort for good (seen). A second start finds the port taken and exits.
    let command = format!("cd ~ && (nohup python3 -m http.server {MALLORY_PORT} --bind 127.0.0.1 >/dev/null 2>&1 &)");
    let path = format!("/user/mallory/proxy/{MALLORY_PORT}/evil.html");
    let mut polls = 0u32;
    wait::until("mallory's web server to serve evil.html through the proxy", wait::DEFAULT, || {
        let start = polls.is_multiple_of(20);
        polls += 1;
        let (path, command) = (path.as_str(), command.as_str());
        async move {
            let state = mallory
                .js(
                    r#"
                    const [path, command, start] = arguments;
                    return (async () => {
                    const page = await fetch(path).catch(() => null);
                    if (page && page.status === 200 && (await page.text()).includes('jhub-attack-result')) { return 'served'; }
                    if (!start) { return 'waiting'; }
                    const cookie = document.cookie.split('; ').find(c => c.startsWith('_xsrf='));
                    const headers = cookie ? { 'X-XSRFToken': cookie.slice('_xsrf='.length) } : {};
                    const base = location.pathname.replace(/\/lab.*$/, '/');
                    const terminal = await fetch(`${base}api/terminals`, { method: 'POST', headers }).then(r => r.json());
                    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
                    await new Promise((resolve, reject) => {
                        const ws = new WebSocket(`${scheme}//${location.host}${base}terminals/websocket/${terminal.name}`);
                        ws.onopen = () => {
                            ws.send(JSON.stringify(['stdin', command + '\r']));
                            setTimeout(() => { ws.close(); resolve(); }, 1000);
                        };
                        ws.onerror = () => reject(new Error('the terminal websocket failed'));
                    });
                    return 'started';
                    })();
                    "#,
                    vec![json!(path), json!(command), json!(start)],
                )
                .await?;
            Ok((state == json!("served")).then_some(()))
        }
    })
    .await?;
    let url = stack.user_url("mallory", &path);
    progress!("mallory serves {url}");
    Ok(url)
}

/// The admin opens `url` (approving the hub's "Authorize access" page for mallory's server, as an admin
/// following the link would) and waits for the page's script to report. Returns its report.
async fn open_evil_page(admin: &Browser, url: &str) -> Result<serde_json::Value> {
    admin.goto(url).await?;
    let report = wait::until("the page mallory serves to report what its script read", wait::DEFAULT, || async {
        let current = admin.client.current_url().await?;
        if current.path().ends_with("/hub/api/oauth2/authorize") {
            admin.click("form button[type=submit]", wait::DEFAULT).await?;
            return Ok(None);
        }
        let done = admin
            .js("const r = document.querySelector('#jhub-attack-result[data-done]'); return r ? r.textContent : null;", vec![])
            .await?;
        Ok(done.as_str().map(str::to_string))
    })
    .await?;
    let opened = admin.url().await?;
    progress!("the admin's browser opened {opened}");
    Ok(serde_json::from_str(&report)?)
}

// ---------------------------------------------------------------------------------------------------------
// 9. A spawn that names an image the catalog does not offer.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s09_forged_image_is_refused() -> Result<()> {
    cases::run("security", "s09-forged-image", &settings(&[]), async |case| forged_image(&case.setup, &case.stack).await).await
}

/// oscar asks the REST API for images the hub must never run for a user: the base image (root, no Jupyter),
/// the hub's own image (which holds the proxy's code) and one the catalog never heard of. Each is refused
/// with a 400 naming the image unknown, and no container of oscar's exists afterwards.
async fn forged_image(setup: &Setup, stack: &Stack) -> Result<()> {
    let (_, oscar, _) = cases::new_user(stack, "oscar").await?;
    for image in [setup.image_id("base"), setup.hub_image(), "debian:trixie"] {
        let (status, body) = oscar.try_spawn("oscar", json!({ "image": image })).await?;
        ensure!(status == 400 && body.contains("unknown image"), "a spawn naming {image} answered {status}: {body}");
    }
    let containers = docker::user_containers(&setup.docker, &stack.project, "oscar").await?;
    ensure!(containers.is_empty(), "refused spawns left {} container(s) of oscar's", containers.len());
    progress!("the base image, the hub's image and debian:trixie were each refused with a 400; oscar has no container");
    Ok(())
}
