//! Acceptance test of jhub-docker: real stacks (compose), real user containers, a real headless Chromium
//! driven as a person would, and the catalog and images.lock as the expected truth.
//!
//! Run with `cargo test --test acceptance` after `cargo xtask build-images`. Five tests, run one after
//! the other (one stack each): `signup_spawn_switch_restart_stop` walks steps a–f of the scenario on a
//! stack with closed signup, then spawns the rest of the image family one after the other (i1–i4:
//! uv-lab, uv-code, uv-marimo, r-notebook), `profiles_limit_the_container` walks step g on a stack with
//! `SPAWNER=profiles`, and `the_scenario_over_https` walks a–f again through the nginx front door
//! (stack/docker-compose.tls.yml) with Chromium trusting only the test's server key, plus the front
//! door's own checks (h: redirect, TLS versions, Secure cookies, a 50 MB upload, the client's address).
//! `the_scenario_over_https_with_subdomains` walks the same with per-user origins (the hub at
//! `hub.localhost`, alice at `alice.hub.localhost`; h4: the certificate names the users; j: an escaped
//! user name). `groups_limits_and_announcements` walks k on a stack whose catalog holds a course (README,
//! "Teams and classes"): group dropdowns and limits, a forged hidden image, the course and shared folders,
//! an announcement, an nbgitpuller link.
//!
//! Environment: `JHUB_ACCEPTANCE_KEEP=1` leaves the stacks up (and prints their URL, the users'
//! passwords and how to remove them); `JHUB_CHROMIUM` and `JHUB_CHROMEDRIVER` override the browser and
//! driver binaries. Progress and timings go to stderr in every run. A failed step names itself, its user
//! and its URL, and leaves screenshots, page sources and container logs under
//! `target/acceptance-artifacts/<test>/` (with `stack.env`, the variables the stack ran with).

// The shared test support (crates/harness): the stack, the hub client, the browser, the engine helpers.
use jhub_harness::{apps, artifacts, browser, cases, docker, gitserver, hub, lab, preflight, progress, stack, steps, tls, wait};

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, ensure};
use jhub_docker::contract;
use serde_json::json;

use crate::artifacts::Artifacts;
use crate::browser::Browser;
use crate::preflight::Setup;
use crate::stack::Stack;
use crate::steps::{Door, Failure, Run, display_name, start_image, start_scenario};

/// One stack at a time: the machine has two cores, and each stack spawns Chromium and user containers.
static ONE_STACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The file alice writes from a terminal in step d (datascience, as jovyan) and finds again in minimal,
/// after the hub's restart, and in VS Code as ewn (uv-code): her volume follows her across images.
const PERSISTED_FILE: &str = "persist.txt";

/// What the hub says when a spawn names an image the catalog does not offer (`image_for_choice` in
/// images/hub/jhub_hub/spawner.py: "unknown image '…': choose one of …").
const UNKNOWN_IMAGE_REFUSAL: &str = "unknown image";

/// A password no one guesses and NativeAuthenticator's common-password check does not know.
fn fresh_password() -> String {
    cases::fresh_password("Acc")
}

/// A nonce written into the user's file, so its content proves it is the file this run wrote.
fn fresh_nonce() -> String {
    format!("jhub-acceptance-{}", cases::random_hex())
}

/// `2G` → bytes, the way Docker (and DockerSpawner's `mem_limit`) reads it: powers of 1024.
fn memory_bytes(size: &str) -> Result<i64> {
    let (digits, unit) = size.split_at(size.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let number: i64 = digits.parse().with_context(|| format!("memory size `{size}`"))?;
    let factor: i64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        other => return Err(anyhow!("memory size `{size}` has the unknown unit `{other}`")),
    };
    Ok(number * factor)
}

/// A spawn request the hub must refuse: status 400 and the config's "unknown image" message.
fn expect_refused(request: &str, answer: &hub::Answer) -> Result<()> {
    ensure!(
        answer.status == 400 && answer.message.contains(UNKNOWN_IMAGE_REFUSAL),
        "{request} should be refused with status 400 and a message containing `{UNKNOWN_IMAGE_REFUSAL}`; the hub answered {}: {}",
        answer.status,
        answer.message
    );
    progress!("refused as it should be: {request}: {} {}", answer.status, answer.message);
    Ok(())
}

/// The user's one running container, checked to run exactly the image id images.lock records for the
/// catalog entry `image` and to be labelled with that entry.
async fn running_locked_image(setup: &Setup, project: &str, user: &str, image: &str) -> Result<bollard::models::ContainerInspectResponse> {
    let container = docker::running_user_container(&setup.docker, project, user).await?;
    let running = container.image.clone().unwrap_or_default();
    ensure!(
        running == setup.image_id(image),
        "{user}'s container runs image {running}, images.lock says {image} is {}",
        setup.image_id(image)
    );
    let labels = container.config.as_ref().and_then(|config| config.labels.clone()).unwrap_or_default();
    let label = labels.get(contract::IMAGE_LABEL).map(String::as_str);
    ensure!(label == Some(image), "{user}'s container is labelled io.jhub-docker.image={label:?}, expected {image}");
    Ok(container)
}

/// The stack-1 scenario, steps a–f (a2: spawns naming an image the catalog does not offer are refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_spawn_switch_restart_stop() -> Result<(), Failure> {
    let _one = ONE_STACK_AT_A_TIME.lock().await;
    Ok(stack_one().await?)
}

/// Prints each spawn's duration and the test's total, and keeps them in `timings.txt` of its artifacts.
fn report_timings(test: &str, artifacts: &Artifacts, spawns: &[(String, f64)], test_started: Instant) -> Result<()> {
    let mut timings = String::new();
    for (what, seconds) in spawns {
        progress!("spawn time (form submitted → Lab or app ready): {what}: {seconds:.1} s");
        timings.push_str(&format!("spawn {what} {seconds:.1} s\n"));
    }
    let total = test_started.elapsed().as_secs_f64();
    timings.push_str(&format!("total {total:.1} s\n"));
    std::fs::write(artifacts.dir.join("timings.txt"), timings)?;
    progress!("{test}: {total:.1} s in total");
    Ok(())
}

async fn stack_one() -> Result<()> {
    scenario_a_to_f("signup_spawn_switch_restart_stop", Door::Http).await
}

/// Steps a–f once more through https:// (nginx, TLS, wss:// for the kernel, terminal, VS Code and
/// marimo websockets), plus the front door's own checks (h1–h3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_over_https() -> Result<(), Failure> {
    let _one = ONE_STACK_AT_A_TIME.lock().await;
    Ok(scenario_a_to_f("the_scenario_over_https", Door::Https).await?)
}

/// Steps a–f through https:// with per-user origins (JHUB_SUBDOMAINS): the hub at
/// `https://hub.localhost:<port>`, alice's Lab, terminal, VS Code and marimo at
/// `https://alice.hub.localhost:<port>/user/alice/…` (every wait for her pages checks that origin), the
/// front door's checks (h1–h3) plus the certificate for the users' names (h4), and a user whose name is
/// no DNS label (j: `bob.smith`, at JupyterHub's escaped `u-bobsmith--<hash>.hub.localhost`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_over_https_with_subdomains() -> Result<(), Failure> {
    let _one = ONE_STACK_AT_A_TIME.lock().await;
    Ok(scenario_a_to_f("the_scenario_over_https_with_subdomains", Door::HttpsSubdomains).await?)
}

/// Steps a–f on a stack with closed signup, served over plain HTTP or through nginx (`door`); over plain
/// HTTP, then step i: the rest of the image family; with per-user origins, then step j: an escaped name.
async fn scenario_a_to_f(test: &str, door: Door) -> Result<()> {
    let test_started = Instant::now();
    let settings = [("AUTH_STRATEGY", "native"), ("OPEN_SIGNUP", "false"), ("SPAWNER", "dockerspawner"), ("IDLE_CULL_TIMEOUT", "0")];
    let (setup, artifacts, stack, driver) = start_scenario(test, &settings, door).await?;
    let run = Run::new(&setup, &stack, &artifacts);
    let admin = run.session(&driver, "admin").await?;
    let alice = run.session(&driver, "alice").await?;
    let admin_password = fresh_password();
    let alice_password = fresh_password();
    if stack::keeps() {
        progress!("passwords (JHUB_ACCEPTANCE_KEEP): admin={admin_password} alice={alice_password}");
    }
    let nonce = fresh_nonce();
    let mut spawns: Vec<(String, f64)> = Vec::new();

    run.step("a.signup-and-authorize", "admin", step_a(&run, &admin, &admin_password, &alice, &alice_password)).await?;
    run.step("a2.unlisted-image-refused", "alice", step_a2(&run, &alice)).await?;
    let seconds = run.step("b.spawn-datascience", "alice", step_b(&run, &alice)).await?;
    spawns.push(("alice, datascience".to_string(), seconds));
    run.step("c.vscode-and-marimo", "alice", step_c(&alice)).await?;
    if let Some(front) = &stack.tls {
        run.step("h1.redirect-tls-versions-secure-cookies", "admin", step_h1(front, &admin, &stack)).await?;
        run.step("h2.upload-50mb", "alice", tls::upload_50mb(&alice)).await?;
        if front.subdomain_host.is_some() {
            let labels = [stack::user_label("alice"), stack::user_label(ESCAPED_USER)];
            run.step("h4.certificate-names-users", "alice", async { tls::user_names_verify(front, &labels) }).await?;
        }
    }
    let seconds = run.step("d.switch-to-minimal", "alice", step_d(&run, &alice, &nonce)).await?;
    spawns.push(("alice, minimal".to_string(), seconds));
    run.step("e.hub-restart-keeps-servers", "alice", step_e(&run, &alice, &nonce)).await?;
    run.step("f.admin-stops-alice", "admin", step_f(&run, &admin)).await?;
    if stack.tls.is_some() {
        run.step("h3.hub-logs-client-address", "admin", tls::hub_logs_client_address(&stack)).await?;
        if door == Door::HttpsSubdomains {
            let bob = run.session(&driver, ESCAPED_USER).await?;
            let seconds = run.step("j.escaped-name-own-origin", ESCAPED_USER, step_j(&run, &admin, &bob)).await?;
            spawns.push((format!("{ESCAPED_USER}, minimal"), seconds));
            let _ = bob.close().await;
        }
    } else {
        // i. The rest of the image family, once (over plain HTTP): one server at a time, each stopped
        // before the next image starts.
        let seconds = run.step("i1.uv-lab-tiles-vscode-marimo", "alice", step_i_uv_lab(&run, &alice)).await?;
        spawns.push(("alice, uv-lab".to_string(), seconds));
        let seconds = run.step("i2.uv-code-lands-in-vscode", "alice", step_i_uv_code(&run, &alice)).await?;
        spawns.push(("alice, uv-code".to_string(), seconds));
        let seconds = run.step("i3.uv-marimo-runs-a-cell", "alice", step_i_uv_marimo(&run, &alice)).await?;
        spawns.push(("alice, uv-marimo".to_string(), seconds));
        let seconds = run.step("i4.r-notebook-runs-r", "alice", step_i_r_notebook(&run, &alice)).await?;
        spawns.push(("alice, r-notebook".to_string(), seconds));
    }

    report_timings(test, &artifacts, &spawns, test_started)?;
    let _ = admin.close().await;
    let _ = alice.close().await;
    Ok(())
}

/// A user whose name is no DNS label: JupyterHub's subdomain hook escapes it (`stack::user_label`).
const ESCAPED_USER: &str = "bob.smith";

/// j. With per-user origins, `bob.smith` signs up, the admin authorizes him, he starts `minimal`, and his
/// Lab loads at `https://u-bobsmith--<hash>.hub.localhost:<port>/user/bob.smith/lab`; then he stops it.
async fn step_j(run: &Run<'_>, admin: &Browser, bob: &Browser) -> Result<f64> {
    let stack = run.stack;
    let password = fresh_password();
    let signed_up = hub::sign_up(bob, stack, ESCAPED_USER, &password).await?;
    ensure!(signed_up.class == "alert-info", "signing up `{ESCAPED_USER}` gave ({}) {}", signed_up.class, signed_up.message);
    hub::authorize(admin, stack, ESCAPED_USER).await?;
    hub::log_in(bob, stack, ESCAPED_USER, &password).await?;
    let started = start_image(run, bob, "minimal").await?;
    lab::wait_ready(bob, stack, ESCAPED_USER, wait::SPAWN).await?;
    let seconds = started.elapsed().as_secs_f64();
    let url = bob.url().await?;
    progress!("spawn time: {ESCAPED_USER}, minimal: {seconds:.1} s, Lab at {url}");
    stop_and_wait_gone(run, bob).await?;
    Ok(seconds)
}

/// h1. Through the real nginx: port 80 redirects to https, TLS 1.1 is refused and 1.2 and 1.3 accepted
/// (HTTP/2 offered), and the hub's cookies in the admin's browser are Secure.
async fn step_h1(front: &tls::Front, admin: &Browser, stack: &Stack) -> Result<()> {
    tls::redirects_to_https(front).await?;
    tls::tls_versions(front)?;
    admin.goto(&stack.url("/hub/home")).await?;
    admin.path_starts_with("/hub/home", wait::DEFAULT).await?;
    tls::hub_cookies_are_secure(admin).await
}

/// a. admin and alice sign up; alice is told to wait, cannot log in, the admin authorizes her, she logs in.
async fn step_a(run: &Run<'_>, admin: &Browser, admin_password: &str, alice: &Browser, alice_password: &str) -> Result<()> {
    let stack = run.stack;
    let signed_up = hub::sign_up(admin, stack, "admin", admin_password).await?;
    ensure!(signed_up.class == "alert-success", "signing up `admin` (always authorized) gave {}: {}", signed_up.class, signed_up.message);
    let signed_up = hub::sign_up(alice, stack, "alice", alice_password).await?;
    ensure!(
        signed_up.class == "alert-info" && signed_up.message.contains("sent to the admin"),
        "signing up `alice` with closed signup should say the request went to the admin, said ({}) {}",
        signed_up.class,
        signed_up.message
    );
    let refused = hub::submit_login(alice, stack, "alice", alice_password).await?;
    ensure!(
        refused.as_deref().is_some_and(|error| error.contains("not been authorized")),
        "`alice` should not log in before approval; the login page said {refused:?}"
    );
    hub::log_in(admin, stack, "admin", admin_password).await?;
    hub::authorize(admin, stack, "alice").await?;
    hub::log_in(alice, stack, "alice", alice_password).await?;
    Ok(())
}

/// a2. Before her first spawn, alice's browser asks the hub for images the catalog does not offer: through
/// the REST API (the lock's `base` image id, then the hub's keyed tag) and through the spawn form (a value
/// its dropdown does not have). Each is refused with a 400 saying the image is unknown, and no container
/// of hers exists afterwards, nor did one exist in between (the engine's events).
async fn step_a2(run: &Run<'_>, alice: &Browser) -> Result<()> {
    let (setup, stack) = (run.setup, run.stack);
    let since = SystemTime::now();
    let before = docker::user_containers(&setup.docker, &stack.project, "alice").await?;
    ensure!(before.is_empty(), "alice has {} container(s) before her first spawn: {before:?}", before.len());
    alice.goto(&stack.url("/hub/spawn")).await?;
    hub::wait_spawn_form(alice).await?;
    let offered = hub::spawn_choices(alice, "image").await?;
    let unlisted = [("the lock's `base` image id", setup.image_id("base")), ("the lock's keyed `hub` tag", setup.hub_image())];
    for (what, image) in unlisted {
        ensure!(!offered.iter().any(|choice| choice.value == image), "the spawn form offers {what} {image}: {offered:?}");
        let answer = hub::api_spawn(alice, "alice", &json!({ "image": image })).await?;
        expect_refused(&format!("POST /hub/api/users/alice/server naming {what} ({image})"), &answer)?;
    }
    let image = setup.image_id("base");
    let answer = hub::post_spawn_form_with(alice, "image", image).await?;
    expect_refused(&format!("the spawn form posted with image={image} (not in its dropdown)"), &answer)?;
    let after = docker::user_containers(&setup.docker, &stack.project, "alice").await?;
    let names: Vec<_> = after.iter().map(|container| (container.names.clone(), container.image.clone())).collect();
    ensure!(after.is_empty(), "refused spawns left alice with container(s) labelled for stack {}: {names:?}", stack.project);
    let events = docker::user_container_events(&setup.docker, &stack.project, "alice", since, SystemTime::now()).await?;
    ensure!(events.is_empty(), "refused spawns still made containers for alice in stack {} (engine events: {events:?})", stack.project);
    Ok(())
}

/// b. the spawn form lists every single-user catalog image in order; alice starts the full image.
async fn step_b(run: &Run<'_>, alice: &Browser) -> Result<f64> {
    let setup = run.setup;
    alice.goto(&run.stack.url("/hub/spawn")).await?;
    hub::wait_spawn_form(alice).await?;
    let offered: Vec<String> = hub::spawn_choices(alice, "image").await?.into_iter().map(|choice| choice.text).collect();
    let catalog: Vec<String> = setup.catalog.single_user_images().map(|(_, single_user)| single_user.display_name.clone()).collect();
    ensure!(offered == catalog, "the image dropdown offers {offered:?}, the catalog's single-user images are {catalog:?}");
    let started = hub::choose_and_start(alice, "image", &display_name(setup, "datascience")?).await?;
    lab::wait_ready(alice, run.stack, "alice", wait::SPAWN).await?;
    lab::settled_launcher_cards(alice).await?;
    let seconds = started.elapsed().as_secs_f64();
    progress!("spawn time: alice, datascience: {seconds:.1} s (form submitted → Lab ready)");
    running_locked_image(setup, &run.stack.project, "alice", "datascience").await?;
    Ok(seconds)
}

/// c. the Launcher has VS Code and marimo; each opens and renders through the proxy.
async fn step_c(alice: &Browser) -> Result<()> {
    let cards = lab::settled_launcher_cards(alice).await?;
    apps::vscode_and_marimo_from_launcher(alice, &cards, "/home/jovyan").await
}

/// d. alice writes a file from a terminal, stops her server, starts `minimal`: the container runs the
/// locked minimal image, VS Code and marimo are gone from the Launcher, and the file is still there.
async fn step_d(run: &Run<'_>, alice: &Browser, nonce: &str) -> Result<f64> {
    let (setup, stack) = (run.setup, run.stack);
    lab::run_in_new_terminal(alice, &format!("echo {nonce} > ~/{PERSISTED_FILE}")).await?;
    lab::wait_listed(alice, PERSISTED_FILE, wait::DEFAULT).await?;
    hub::stop_from_home(alice, stack).await?;
    docker::wait_user_container_gone(&setup.docker, &stack.project, "alice", Duration::from_secs(60)).await?;
    hub::start_from_home(alice, stack).await?;
    let started = hub::choose_and_start(alice, "image", &display_name(setup, "minimal")?).await?;
    lab::wait_ready(alice, run.stack, "alice", wait::SPAWN).await?;
    let cards = lab::settled_launcher_cards(alice).await?;
    let seconds = started.elapsed().as_secs_f64();
    progress!("spawn time: alice, minimal: {seconds:.1} s (form submitted → Lab ready)");
    running_locked_image(setup, &stack.project, "alice", "minimal").await?;
    for gone in ["VS Code", "marimo"] {
        ensure!(!cards.iter().any(|card| lab::names(card, gone)), "the minimal Launcher still offers `{gone}` (cards: {cards:?})");
    }
    lab::wait_listed(alice, PERSISTED_FILE, wait::DEFAULT).await?;
    Ok(seconds)
}

/// e. the hub restarts while alice's server runs: her container stays, her open Lab keeps working
/// (a new notebook's kernel reads the file back) and the file is still listed.
async fn step_e(run: &Run<'_>, alice: &Browser, nonce: &str) -> Result<()> {
    let (setup, stack) = (run.setup, run.stack);
    let before = docker::running_user_container(&setup.docker, &stack.project, "alice").await?;
    let hub_container = docker::service_container(&setup.docker, &stack.project, "hub").await?;
    let hub_id = hub_container.id.ok_or_else(|| anyhow!("the hub container has no id"))?;
    let started_at = |inspected: bollard::models::ContainerInspectResponse| inspected.state.and_then(|state| state.started_at);
    let before_restart = started_at(setup.docker.inspect_container(&hub_id, None).await?);
    let restarted = Instant::now();
    docker::restart(&setup.docker, &hub_id).await?;
    let after_restart = started_at(setup.docker.inspect_container(&hub_id, None).await?);
    ensure!(before_restart != after_restart, "the hub container's start time did not change across `docker restart` ({before_restart:?})");
    stack.wait_healthy().await?;
    progress!("hub restart → healthy: {:.1} s", restarted.elapsed().as_secs_f64());
    let after = docker::running_user_container(&setup.docker, &stack.project, "alice").await?;
    ensure!(before.id == after.id, "alice's container changed across the hub restart ({:?} → {:?})", before.id, after.id);
    lab::no_error_dialog(alice).await?;
    lab::wait_listed(alice, PERSISTED_FILE, wait::DEFAULT).await?;
    lab::run_in_new_notebook(alice, &format!("print(open('{PERSISTED_FILE}').read().strip())"), nonce).await?;
    lab::no_error_dialog(alice).await
}

/// f. the admin stops alice's server from the admin panel; her container goes away.
async fn step_f(run: &Run<'_>, admin: &Browser) -> Result<()> {
    let (setup, stack) = (run.setup, run.stack);
    hub::stop_from_admin_panel(admin, stack, "alice").await?;
    docker::wait_user_container_gone(&setup.docker, &stack.project, "alice", Duration::from_secs(60)).await
}

/// Stops the browser's user's server from the home page and waits until the container is removed.
async fn stop_and_wait_gone(run: &Run<'_>, browser: &Browser) -> Result<()> {
    hub::stop_from_home(browser, run.stack).await?;
    docker::wait_user_container_gone(&run.setup.docker, &run.stack.project, &browser.user, Duration::from_secs(60)).await
}

/// i1. uv-lab: JupyterLab whose Launcher has the three tiles, a Python notebook, VS Code and marimo, and
/// both apps open as in step c; the container runs the locked uv-lab image.
async fn step_i_uv_lab(run: &Run<'_>, alice: &Browser) -> Result<f64> {
    let started = start_image(run, alice, "uv-lab").await?;
    lab::wait_ready(alice, run.stack, "alice", wait::SPAWN).await?;
    lab::settle_restored_notebooks(alice).await?;
    let cards = lab::settled_launcher_cards(alice).await?;
    let seconds = started.elapsed().as_secs_f64();
    progress!("spawn time: alice, uv-lab: {seconds:.1} s (form submitted → Lab ready)");
    running_locked_image(run.setup, &run.stack.project, "alice", "uv-lab").await?;
    let notebooks = alice.texts(".jp-Launcher .jp-LauncherCard[data-category='Notebook'] .jp-LauncherCard-label").await?;
    ensure!(
        notebooks.iter().any(|label| lab::names(label, "Python")),
        "the uv-lab Launcher has no Python notebook card (Notebook cards: {notebooks:?}, all cards: {cards:?})"
    );
    apps::vscode_and_marimo_from_launcher(alice, &cards, "/home/ewn").await?;
    stop_and_wait_gone(run, alice).await?;
    Ok(seconds)
}

/// i2. uv-code: the spawn lands in VS Code's workbench (no JupyterLab), trusted, on the home folder
/// /home/ewn, whose Explorer lists the file alice wrote as jovyan in step d; the container runs the
/// locked uv-code image.
async fn step_i_uv_code(run: &Run<'_>, alice: &Browser) -> Result<f64> {
    let started = start_image(run, alice, "uv-code").await?;
    alice.arrive_at(&run.stack.user_url("alice", "/user/alice/"), wait::SPAWN).await?;
    apps::land_in(alice, apps::VSCODE_RENDERED, SystemTime::now() - started.elapsed()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let url = alice.url().await?;
    progress!("spawn time: alice, uv-code: {seconds:.1} s (form submitted → VS Code workbench at {url})");
    running_locked_image(run.setup, &run.stack.project, "alice", "uv-code").await?;
    ensure!(!alice.is_visible(".jp-LabShell").await?, "uv-code landed in JupyterLab at {url}, not in VS Code");
    apps::vscode_trusted(alice).await?;
    let folder = apps::vscode_folder(alice).await?;
    ensure!(folder.as_deref() == Some("/home/ewn"), "VS Code has the folder {folder:?} open at {url}, expected /home/ewn");
    apps::vscode_lists(alice, PERSISTED_FILE, wait::DEFAULT).await?;
    stop_and_wait_gone(run, alice).await?;
    Ok(seconds)
}

/// i3. uv-marimo: the spawn lands in marimo's home page (no JupyterLab); a new notebook's cell runs
/// `20 + 22` and shows 42; the container runs the locked uv-marimo image.
async fn step_i_uv_marimo(run: &Run<'_>, alice: &Browser) -> Result<f64> {
    let started = start_image(run, alice, "uv-marimo").await?;
    alice.arrive_at(&run.stack.user_url("alice", "/user/alice/"), wait::SPAWN).await?;
    apps::land_in(alice, apps::MARIMO_HOME_NEW_NOTEBOOK, SystemTime::now() - started.elapsed()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let url = alice.url().await?;
    progress!("spawn time: alice, uv-marimo: {seconds:.1} s (form submitted → marimo home at {url})");
    running_locked_image(run.setup, &run.stack.project, "alice", "uv-marimo").await?;
    ensure!(!alice.is_visible(".jp-LabShell").await?, "uv-marimo landed in JupyterLab at {url}, not in marimo");
    let home = alice.client.window().await?;
    let url = apps::marimo_new_notebook(alice).await?;
    progress!("marimo notebook rendered at {url}");
    apps::marimo_run_first_cell(alice, "20 + 22", "42").await?;
    lab::leave_app(alice, lab::AppView::Tab { lab: home }).await?;
    stop_and_wait_gone(run, alice).await?;
    Ok(seconds)
}

/// i4. r-notebook: JupyterLab whose Launcher offers an R notebook; its cell prints `1 + 1` and shows
/// `[1] 2`; the container runs the locked r-notebook image. (`print`, because a bare `1 + 1` comes back
/// from IRkernel with an HTML form, `2`, which Lab renders in place of the plain-text `[1] 2`.)
async fn step_i_r_notebook(run: &Run<'_>, alice: &Browser) -> Result<f64> {
    let started = start_image(run, alice, "r-notebook").await?;
    lab::wait_ready(alice, run.stack, "alice", wait::SPAWN).await?;
    lab::settle_restored_notebooks(alice).await?;
    lab::settled_launcher_cards(alice).await?;
    let seconds = started.elapsed().as_secs_f64();
    progress!("spawn time: alice, r-notebook: {seconds:.1} s (form submitted → Lab ready)");
    running_locked_image(run.setup, &run.stack.project, "alice", "r-notebook").await?;
    lab::run_in_new_notebook_of(alice, "R", "print(1 + 1)", "[1] 2").await?;
    lab::no_error_dialog(alice).await?;
    stop_and_wait_gone(run, alice).await?;
    Ok(seconds)
}

/// The stack-2 scenario, step g: profiles replace the image dropdown and set the container's limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_limit_the_container() -> Result<(), Failure> {
    let _one = ONE_STACK_AT_A_TIME.lock().await;
    Ok(stack_two().await?)
}

async fn stack_two() -> Result<()> {
    let test_started = Instant::now();
    let test = "profiles_limit_the_container";
    let admin_password = fresh_password();
    let settings = [
        ("AUTH_STRATEGY", "native"),
        ("OPEN_SIGNUP", "true"),
        ("ADMIN_PASSWORD", admin_password.as_str()),
        ("SPAWNER", "profiles"),
        ("IDLE_CULL_TIMEOUT", "0"),
    ];
    let (setup, artifacts, stack, driver) = start_scenario(test, &settings, Door::Http).await?;
    let run = Run::new(&setup, &stack, &artifacts);
    let admin = run.session(&driver, "admin").await?;
    let bob = run.session(&driver, "bob").await?;
    let bob_password = fresh_password();
    if stack::keeps() {
        progress!("passwords (JHUB_ACCEPTANCE_KEEP): admin={admin_password} bob={bob_password}");
    }

    run.step("g1.admin-exists-open-signup", "admin", step_g_accounts(&run, &admin, &admin_password, &bob, &bob_password)).await?;
    let seconds = run.step("g2.profile-limits", "bob", step_g_profiles(&run, &bob)).await?;

    report_timings(test, &artifacts, &[("bob, profile".to_string(), seconds)], test_started)?;
    let _ = admin.close().await;
    let _ = bob.close().await;
    Ok(())
}

/// g1. With ADMIN_PASSWORD set, `admin` exists: signing up as admin is refused, the password logs in; with
/// open signup, bob signs up and logs in at once.
async fn step_g_accounts(run: &Run<'_>, admin: &Browser, admin_password: &str, bob: &Browser, bob_password: &str) -> Result<()> {
    let stack = run.stack;
    let refused = hub::sign_up(admin, stack, "admin", &fresh_password()).await?;
    ensure!(
        refused.class == "alert-danger" && refused.message.contains("already in use"),
        "signing up as `admin` when ADMIN_PASSWORD created it should be refused, said ({}) {}",
        refused.class,
        refused.message
    );
    hub::log_in(admin, stack, "admin", admin_password).await?;
    let signed_up = hub::sign_up(bob, stack, "bob", bob_password).await?;
    ensure!(
        signed_up.class == "alert-success",
        "with open signup `bob` should be let in at once, the page said ({}) {}",
        signed_up.class,
        signed_up.message
    );
    hub::log_in(bob, stack, "bob", bob_password).await
}

/// g2. The profile list replaces the image dropdown; the chosen profile's limits reach the container.
async fn step_g_profiles(run: &Run<'_>, bob: &Browser) -> Result<f64> {
    let (setup, stack) = (run.setup, run.stack);
    let profile = setup
        .catalog
        .profiles
        .iter()
        .find(|profile| profile.name == "minimal-small")
        .or_else(|| setup.catalog.profiles.first())
        .ok_or_else(|| anyhow!("the catalog lists no [[profile]]"))?
        .clone();
    bob.goto(&stack.url("/hub/spawn")).await?;
    hub::wait_spawn_form(bob).await?;
    let images = hub::spawn_choices(bob, "image").await?;
    ensure!(images.is_empty(), "with SPAWNER=profiles the spawn form still has an image field ({images:?})");
    let offered: Vec<String> = hub::spawn_choices(bob, "profile").await?.into_iter().map(|choice| choice.text).collect();
    let catalog: Vec<String> = setup.catalog.profiles.iter().map(|profile| profile.display_name.clone()).collect();
    ensure!(offered == catalog, "the profile list offers {offered:?}, the catalog's profiles are {catalog:?}");
    let started = hub::choose_and_start(bob, "profile", &profile.display_name).await?;
    lab::wait_ready(bob, run.stack, "bob", wait::SPAWN).await?;
    let seconds = started.elapsed().as_secs_f64();
    progress!("spawn time: bob, {}: {seconds:.1} s (form submitted → Lab ready)", profile.name);
    let container = running_locked_image(setup, &stack.project, "bob", &profile.image).await?;
    let host = container.host_config.ok_or_else(|| anyhow!("bob's container has no HostConfig"))?;
    let memory = host.memory.unwrap_or_default();
    let expected_memory = memory_bytes(&profile.mem_limit)?;
    ensure!(
        memory == expected_memory,
        "profile {} asks mem_limit {} = {expected_memory} bytes, the container has HostConfig.Memory {memory}",
        profile.name,
        profile.mem_limit
    );
    // DockerSpawner 14 sets cpu_period 100000 and cpu_quota = cpu_limit × cpu_period; NanoCpus would be
    // the other way to say the same, so either is accepted.
    let nano = host.nano_cpus.unwrap_or_default();
    let (quota, period) = (host.cpu_quota.unwrap_or_default(), host.cpu_period.unwrap_or_default());
    let cpus = if nano > 0 {
        nano as f64 / 1e9
    } else if quota > 0 && period > 0 {
        quota as f64 / period as f64
    } else {
        0.0
    };
    progress!("bob's container ({}): HostConfig.Memory {memory}, NanoCpus {nano}, CpuQuota {quota}, CpuPeriod {period}", profile.name);
    ensure!(
        (cpus - profile.cpu_limit).abs() < 1e-6,
        "profile {} asks cpu_limit {}, the container has NanoCpus {nano}, CpuQuota {quota}, CpuPeriod {period}",
        profile.name,
        profile.cpu_limit
    );
    Ok(seconds)
}

/// The course of the stack-3 scenario: the minimal image kept to its members, who get its limits, a
/// course folder its instructors (the group COURSE_STAFF) write and its members read, and a shared folder.
const COURSE: &str = "physics-101";
const COURSE_STAFF: &str = "physics-101-staff";
const COURSE_CPUS: f64 = 1.0;
const COURSE_MEMORY: &str = "1G";

/// The stack-3 scenario, steps k: teams and classes. The checkout's catalog with a course added (minimal
/// kept to the group `physics-101`, whose members' servers get 1 CPU and 1G), as an admin would write it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_limits_and_announcements() -> Result<(), Failure> {
    let _one = ONE_STACK_AT_A_TIME.lock().await;
    Ok(stack_three().await?)
}

async fn stack_three() -> Result<()> {
    let test_started = Instant::now();
    let test = "groups_limits_and_announcements";
    let admin_password = fresh_password();
    let settings =
        [("AUTH_STRATEGY", "native"), ("OPEN_SIGNUP", "true"), ("ADMIN_PASSWORD", admin_password.as_str()), ("IDLE_CULL_TIMEOUT", "0")];
    let course = format!(
        "groups = [\"{COURSE}\"]\n\n[[group]]\nname = \"{COURSE}\"\ncpu_limit = {COURSE_CPUS:.1}\nmem_limit = \"{COURSE_MEMORY}\"\n\
         course_folder = true\nshared_folder = true\ninstructors = \"{COURSE_STAFF}\"\n\n[[group]]\nname = \"{COURSE_STAFF}\"\n"
    );
    let (setup, artifacts, stack, driver) =
        steps::start_scenario_with_catalog(test, &settings, Door::Http, |text| steps::append_to_image(&text, "minimal", &course)).await?;
    let run = Run::new(&setup, &stack, &artifacts);
    let admin = run.session(&driver, "admin").await?;
    let alice = run.session(&driver, "alice").await?;
    let bob = run.session(&driver, "bob").await?;
    let carol = run.session(&driver, "carol").await?;
    let (alice_password, bob_password, carol_password) = (fresh_password(), fresh_password(), fresh_password());
    run.step("k1.accounts", "admin", async {
        hub::log_in(&admin, &stack, "admin", &admin_password).await?;
        for (browser, name, password) in
            [(&alice, "alice", &alice_password), (&bob, "bob", &bob_password), (&carol, "carol", &carol_password)]
        {
            let signed_up = hub::sign_up(browser, &stack, name, password).await?;
            ensure!(signed_up.class == "alert-success", "signing up `{name}` said ({}) {}", signed_up.class, signed_up.message);
            hub::log_in(browser, &stack, name, password).await?;
        }
        Ok(())
    })
    .await?;
    run.step("k2.admin-adds-alice-and-her-instructor", "admin", async {
        add_to_group(&admin, &stack, COURSE, "alice").await?;
        add_to_group(&admin, &stack, COURSE_STAFF, "carol").await
    })
    .await?;
    run.step("k3.dropdowns-follow-groups", "bob", step_k_dropdowns(&run, &alice, &bob)).await?;
    run.step("k4.forged-hidden-image-refused", "bob", step_k_forged(&run, &bob)).await?;
    let seconds = run.step("k5.course-limits", "alice", step_k_limits(&run, &alice)).await?;
    run.step("k5b.course-and-shared-folders", "alice", step_k_folders(&run, &alice, &carol)).await?;
    run.step("k6.announcement", "bob", step_k_announcement(&run, &bob)).await?;
    run.step("k7.nbgitpuller-link-pulls-then-merges", "bob", step_k_nbgitpuller(&run, &bob)).await?;
    report_timings(test, &artifacts, &[("alice, minimal (course)".to_string(), seconds)], test_started)?;
    for browser in [admin, alice, bob, carol] {
        let _ = browser.close().await;
    }
    Ok(())
}

/// k2. The admin adds `user` to `group` as the admin panel does, through the hub's REST API from the
/// admin's page (the group exists from the hub's start: the catalog declares it).
async fn add_to_group(admin: &Browser, stack: &Stack, group: &str, user: &str) -> Result<()> {
    admin.goto(&stack.url("/hub/admin")).await?;
    let answer = admin
        .js(
            r#"
            const [group, user] = arguments;
            const cookie = document.cookie.split('; ').find(c => c.startsWith('_xsrf='));
            return fetch(`/hub/api/groups/${encodeURIComponent(group)}/users`, {
                method: 'POST',
                headers: { 'X-XSRFToken': cookie ? cookie.slice('_xsrf='.length) : '', 'Content-Type': 'application/json' },
                body: JSON.stringify({ users: [user] }),
            }).then(async r => ({ status: r.status, body: (await r.text()).slice(0, 300) }));
            "#,
            vec![json!(group), json!(user)],
        )
        .await?;
    ensure!(answer["status"] == json!(200), "adding {user} to the group {group} answered {answer}");
    progress!("{user} is in {group}: {}", answer["body"]);
    Ok(())
}

/// k3. alice (in the course) is offered every image; bob (in no group) every image but the course's.
async fn step_k_dropdowns(run: &Run<'_>, alice: &Browser, bob: &Browser) -> Result<()> {
    let course_image = display_name(run.setup, "minimal")?;
    let all: Vec<String> = run.setup.catalog.single_user_images().map(|(_, single_user)| single_user.display_name.clone()).collect();
    for (browser, name, expected) in
        [(alice, "alice", all.clone()), (bob, "bob", all.iter().filter(|shown| **shown != course_image).cloned().collect::<Vec<_>>())]
    {
        browser.goto(&run.stack.url("/hub/spawn")).await?;
        hub::wait_spawn_form(browser).await?;
        let offered: Vec<String> = hub::spawn_choices(browser, "image").await?.into_iter().map(|choice| choice.text).collect();
        ensure!(offered == expected, "{name}'s spawn form offers {offered:?}, expected {expected:?}");
        progress!("{name} is offered {offered:?}");
    }
    Ok(())
}

/// k4. bob names the course's image anyway, through the REST API and through the form: each refused as an
/// unknown image (400), and no container of his exists.
async fn step_k_forged(run: &Run<'_>, bob: &Browser) -> Result<()> {
    let (setup, stack) = (run.setup, run.stack);
    let since = SystemTime::now();
    let course_image = display_name(setup, "minimal")?;
    for choice in ["minimal", course_image.as_str()] {
        let answer = hub::api_spawn(bob, "bob", &json!({ "image": choice })).await?;
        expect_refused(&format!("bob's POST /hub/api/users/bob/server naming the course's image ({choice})"), &answer)?;
    }
    let answer = hub::post_spawn_form_with(bob, "image", &course_image).await?;
    expect_refused(&format!("bob's spawn form posted with image={course_image} (not in his dropdown)"), &answer)?;
    let events = docker::user_container_events(&setup.docker, &stack.project, "bob", since, SystemTime::now()).await?;
    ensure!(events.is_empty(), "refused spawns still made containers for bob (engine events: {events:?})");
    ensure!(docker::user_containers(&setup.docker, &stack.project, "bob").await?.is_empty(), "bob has a container after refusals");
    Ok(())
}

/// k5. alice starts the course's image: her container has the course's CPU and memory, not the hub's.
async fn step_k_limits(run: &Run<'_>, alice: &Browser) -> Result<f64> {
    let started = start_image(run, alice, "minimal").await?;
    lab::wait_ready(alice, run.stack, "alice", wait::SPAWN).await?;
    let seconds = started.elapsed().as_secs_f64();
    let container = running_locked_image(run.setup, &run.stack.project, "alice", "minimal").await?;
    let host = container.host_config.ok_or_else(|| anyhow!("alice's container has no HostConfig"))?;
    let memory = host.memory.unwrap_or_default();
    ensure!(memory == memory_bytes(COURSE_MEMORY)?, "alice's container has HostConfig.Memory {memory}, the course sets {COURSE_MEMORY}");
    let (quota, period) = (host.cpu_quota.unwrap_or_default(), host.cpu_period.unwrap_or_default());
    let nano = host.nano_cpus.unwrap_or_default();
    let cpus = if nano > 0 {
        nano as f64 / 1e9
    } else if period > 0 {
        quota as f64 / period as f64
    } else {
        0.0
    };
    ensure!(
        (cpus - COURSE_CPUS).abs() < 1e-6,
        "alice's container has {cpus} CPUs (NanoCpus {nano}, CpuQuota {quota}), the course sets {COURSE_CPUS}"
    );
    progress!("alice's course server: {cpus} CPUs, {memory} bytes, ready in {seconds:.1} s");
    Ok(seconds)
}

/// k5b. The course's folders. carol, the course's instructor, writes course material into
/// ~/physics-101/course from her own server; alice's server, running since before, shows it at once (no
/// restart). alice can neither write, delete nor rename there (her mount is read-only: every user is uid
/// 1000, so file modes could not stop her), and what carol wrote stays as it was. Both write and read
/// ~/physics-101/shared.
async fn step_k_folders(run: &Run<'_>, alice: &Browser, carol: &Browser) -> Result<()> {
    let stack = run.stack;
    start_image(run, carol, "datascience").await?;
    lab::wait_ready(carol, stack, "carol", wait::SPAWN).await?;
    let course = format!("{COURSE}/course");
    let shared = format!("{COURSE}/shared");
    let material = "# Week 1\nRead chapter 1.\n";
    lab::write_file(carol, &format!("{course}/week1.md"), material).await?;
    let seen = lab::read_file(alice, &format!("{course}/week1.md")).await?;
    ensure!(seen.as_deref() == Some(material), "alice's running server shows {course}/week1.md as {seen:?}, carol wrote {material:?}");
    let attempts = [
        ("write a new file", "PUT", format!("{course}/mine.md"), Some(json!({ "type": "file", "format": "text", "content": "mine" }))),
        (
            "overwrite the material",
            "PUT",
            format!("{course}/week1.md"),
            Some(json!({ "type": "file", "format": "text", "content": "gone" })),
        ),
        ("rename the material", "PATCH", format!("{course}/week1.md"), Some(json!({ "path": format!("{course}/renamed.md") }))),
        ("delete the material", "DELETE", format!("{course}/week1.md"), None),
    ];
    for (what, method, path, body) in attempts {
        let (status, answer) = lab::contents(alice, method, &path, body).await?;
        ensure!(status >= 400, "alice could {what} in the course folder ({method} {path} answered {status}: {answer})");
        progress!("alice cannot {what}: {method} {path} → {status}");
    }
    let after = lab::read_file(alice, &format!("{course}/week1.md")).await?;
    ensure!(after.as_deref() == Some(material), "the course material is {after:?} after alice's attempts");
    ensure!(lab::read_file(alice, &format!("{course}/mine.md")).await?.is_none(), "alice's file appeared in the course folder");
    lab::write_file(alice, &format!("{shared}/from-alice.md"), "hello group\n").await?;
    let shared_seen = lab::read_file(carol, &format!("{shared}/from-alice.md")).await?;
    ensure!(shared_seen.as_deref() == Some("hello group\n"), "carol sees alice's shared file as {shared_seen:?}");
    stop_and_wait_gone(run, alice).await?;
    stop_and_wait_gone(run, carol).await
}

/// k7. A course's nbgitpuller link (README, "Teams and classes"): bob, whose home has never seen the
/// course, opens it from his running server; nbgitpuller clones the course's repository (on a git server of
/// the stack's network) into `~/course` and lands in Lab on its first file. bob edits that file; the teacher
/// pushes a change to another file and a new one; bob opens the same link again: the change and the new
/// file arrive, and bob's edit is still there.
async fn step_k_nbgitpuller(run: &Run<'_>, bob: &Browser) -> Result<()> {
    let (setup, stack) = (run.setup, run.stack);
    let server = gitserver::GitServer::start(
        &setup.docker,
        setup.image_id("base"),
        &stack.project,
        &stack.network,
        "course",
        &[("intro.md", "# Week 1\nRead me first.\n"), ("data.csv", "x,y\n1,2\n")],
    )
    .await?;
    start_image(run, bob, "datascience").await?;
    lab::wait_ready(bob, stack, "bob", wait::SPAWN).await?;
    let link = nbgitpuller_link(stack, &server.repo_url, "lab/tree/course/intro.md");
    progress!("the course's link: {link}");
    bob.goto(&link).await?;
    bob.arrive_at(&stack.user_url("bob", "/user/bob/lab/tree/course/intro.md"), wait::SPAWN).await?;
    lab::wait_ready(bob, stack, "bob", wait::SPAWN).await?;
    let intro = lab::read_file(bob, "course/intro.md").await?;
    ensure!(intro.as_deref() == Some("# Week 1\nRead me first.\n"), "after the first click ~/course/intro.md is {intro:?}");
    let notes = "# Week 1\nRead me first.\nbob's notes: ask about y.\n";
    lab::write_file(bob, "course/intro.md", notes).await?;
    server.commit(&[("data.csv", "x,y\n1,2\n3,4\n"), ("week2.md", "# Week 2\n")], "second week").await?;
    bob.goto(&link).await?;
    bob.arrive_at(&stack.user_url("bob", "/user/bob/lab/tree/course/intro.md"), wait::SPAWN).await?;
    lab::wait_ready(bob, stack, "bob", wait::SPAWN).await?;
    let (intro, data, week2) = (
        lab::read_file(bob, "course/intro.md").await?,
        lab::read_file(bob, "course/data.csv").await?,
        lab::read_file(bob, "course/week2.md").await?,
    );
    ensure!(intro.as_deref() == Some(notes), "the second click lost bob's edit: ~/course/intro.md is {intro:?}");
    ensure!(data.as_deref() == Some("x,y\n1,2\n3,4\n"), "the teacher's change did not arrive: ~/course/data.csv is {data:?}");
    ensure!(week2.as_deref() == Some("# Week 2\n"), "the teacher's new file did not arrive: ~/course/week2.md is {week2:?}");
    progress!("second click: bob's edit kept, data.csv updated, week2.md added");
    stop_and_wait_gone(run, bob).await
}

/// An nbgitpuller link as README "Teams and classes" shows how to make one: the hub's `user-redirect`
/// (whoever clicks lands on their own server), then `git-pull` with the repository, its branch and the
/// page to open, each URL-encoded.
fn nbgitpuller_link(stack: &Stack, repo: &str, urlpath: &str) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
                _ => format!("%{byte:02X}"),
            })
            .collect()
    };
    stack.url(&format!("/hub/user-redirect/git-pull?repo={}&branch={}&urlpath={}", encode(repo), gitserver::BRANCH, encode(urlpath)))
}

/// k6. `cargo xtask announce` shows its text on bob's hub pages at once (as text: the tags are shown, not
/// run), and `--clear` takes it away.
async fn step_k_announcement(run: &Run<'_>, bob: &Browser) -> Result<()> {
    let stack = run.stack;
    let text = "Exam week: <b>save</b> your notebooks often";
    let env = [("JHUB_STACK_NAME", stack.project.as_str())];
    let (ok, output) = cases::xtask(&["announce", text, "--for", "2h"], &env)?;
    ensure!(ok, "cargo xtask announce failed:\n{output}");
    bob.goto(&stack.url("/hub/home")).await?;
    let shown = bob.visible(".announcement", wait::DEFAULT).await?.text().await?;
    ensure!(shown.trim() == text, "bob's home shows the announcement {shown:?}, expected {text:?}");
    ensure!(bob.texts(".announcement b").await?.is_empty(), "the announcement's <b> became markup: the text was not escaped");
    let (ok, output) = cases::xtask(&["announce", "--clear"], &env)?;
    ensure!(ok, "cargo xtask announce --clear failed:\n{output}");
    bob.goto(&stack.url("/hub/home")).await?;
    bob.visible("#start", wait::DEFAULT).await?; // the home page itself, loaded
    ensure!(!bob.is_visible(".announcement").await?, "the announcement is still shown after --clear");
    Ok(())
}

#[test]
fn user_labels_follow_jupyterhubs_idna_hook() {
    // Computed by JupyterHub 5.5.4's own `subdomain_hook_idna` in the hub image.
    let expected = [
        ("alice", "alice"),
        ("Bob", "Bob"),
        ("bob.smith", "u-bobsmith--365b77f"),
        ("carol_x", "u-carolx--7b77967"),
        ("a--b", "u-ab--90827a2"),
        ("-x", "u-x--a420962"),
        ("123", "u-123--a665a45"),
    ];
    for (user, label) in expected {
        assert_eq!(stack::user_label(user), label, "{user}");
    }
}

#[test]
fn memory_sizes_read_like_docker() {
    assert_eq!(memory_bytes("2G").unwrap(), 2 * 1024 * 1024 * 1024);
    assert_eq!(memory_bytes("512M").unwrap(), 512 * 1024 * 1024);
    assert!(memory_bytes("2X").is_err());
}
