//! Fault and recovery tests of jhub-docker: real stacks, the real engine, REST, websockets and the Docker
//! API. Each case asserts what a user would see and that nothing was lost: backup and restore (two round
//! trips, the labels of every restored volume), the adoption of unlabelled volumes, the login lockout,
//! dummy authentication, the idle culler, forwarded client addresses, the hub killed mid-spawn and during signups, a kernel past its memory limit, a fork bomb, an
//! upgrade under a running user, a class whose starts queue, and (last, only with `JHUB_TEST_RESTART_ENGINE=1`) a Docker daemon restart.
//!
//! Run with `cargo test --test resilience -- --test-threads=1` after `cargo xtask build-images`: one stack
//! at a time, in the order of the names. The engine-restart case stops and starts `dockerd` (every container
//! on the host goes down meanwhile) and fails, naming the variable, when `JHUB_TEST_RESTART_ENGINE` is not
//! set. Artifacts of a failed case land in `target/acceptance-artifacts/resilience-<case>/`.

// The shared test support (crates/harness): the stack, the hub client, the browser, the engine helpers.
use jhub_harness::{artifacts, cases, client, docker, preflight, progress, stack, wait};

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bollard::Docker;
use bollard::query_parameters::{InspectContainerOptions, ListVolumesOptionsBuilder};
use jhub_docker::contract;
use serde_json::json;

use crate::artifacts::Artifacts;
use crate::cases::{ADMIN_PASSWORD, Case, IMAGE, settings};
use crate::client::Session;
use crate::preflight::Setup;
use crate::stack::Stack;

/// The hub's container, inspected.
async fn hub_container(setup: &Setup, stack: &Stack) -> Result<bollard::models::ContainerInspectResponse> {
    let summary = docker::service_container(&setup.docker, &stack.project, "hub").await?;
    let id = summary.id.ok_or_else(|| anyhow!("the hub container has no id"))?;
    Ok(setup.docker.inspect_container(&id, None::<InspectContainerOptions>).await?)
}

/// Kills the hub's process with SIGKILL from the host, as a crash or the OOM killer would (not `docker
/// kill`, which the engine counts as a deliberate stop), and waits until the restart policy brought it back.
async fn crash_hub(setup: &Setup, stack: &Stack) -> Result<()> {
    let hub = hub_container(setup, stack).await?;
    let pid = hub.state.as_ref().and_then(|state| state.pid).filter(|pid| *pid > 0).ok_or_else(|| anyhow!("the hub has no pid"))?;
    let restarts = hub.restart_count.unwrap_or(0);
    let status = Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
    ensure!(status.success(), "kill -KILL {pid} failed");
    progress!("killed the hub's process {pid} (SIGKILL)");
    let id = hub.id.clone().unwrap_or_default();
    wait::until("the engine to restart the hub", Duration::from_secs(60), || async {
        let now = setup.docker.inspect_container(&id, None::<InspectContainerOptions>).await?;
        let running = now.state.and_then(|state| state.running).unwrap_or(false);
        Ok((running && now.restart_count.unwrap_or(0) > restarts).then_some(()))
    })
    .await?;
    stack.wait_healthy().await
}

fn folder_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        total += if path.is_dir() { folder_size(&path) } else { entry.metadata().map(|meta| meta.len()).unwrap_or(0) };
    }
    total
}

// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c01_backup_down_volumes_restore() -> Result<()> {
    cases::run("resilience", "c01-backup-restore", &settings(&[("OPEN_SIGNUP", "false")]), async |case| {
        backup_restore(&case.setup, &case.stack, &case.artifacts).await
    })
    .await
}

async fn backup_restore(setup: &Setup, stack: &Stack, artifacts: &Artifacts) -> Result<()> {
    let admin_session = Session::new(stack, "admin")?;
    admin_session.must_log_in(ADMIN_PASSWORD).await?;
    // alice is approved before the backup, bob is not: both states must come back. carol-2's volume name is
    // escaped by DockerSpawner (`carol-2d2`), while her volume's user label is her name as it is.
    let alice_password = cases::fresh_password("Res");
    let alice = Session::new(stack, "alice")?;
    let alert = alice.sign_up(&alice_password).await?;
    ensure!(alert == "alert-info", "with OPEN_SIGNUP=false, signup should say the request went to the admin; it showed {alert}");
    ensure!(alice.log_in(&alice_password).await?.is_some(), "alice logged in before the admin approved her");
    admin_session.authorize("alice").await?;
    alice.must_log_in(&alice_password).await?;
    let bob_password = cases::fresh_password("Res");
    let bob = Session::new(stack, "bob")?;
    bob.sign_up(&bob_password).await?;
    let carol_password = cases::fresh_password("Res");
    let carol = Session::new(stack, "carol-2")?;
    carol.sign_up(&carol_password).await?;
    admin_session.authorize("carol-2").await?;
    carol.must_log_in(&carol_password).await?;
    let alice_api = alice.api_token().await?;
    alice_api.spawn("alice", IMAGE).await?;
    let file = cases::random_bytes(3 << 20);
    alice_api.put_file("alice", "resilience.bin", &file).await?;
    ensure!(alice_api.get_file("alice", "resilience.bin").await? == file, "the file read back differs before the backup");
    let carol_api = carol.api_token().await?;
    carol_api.spawn("carol-2", IMAGE).await?;
    let carol_file = cases::random_bytes(64 << 10);
    carol_api.put_file("carol-2", "notes.bin", &carol_file).await?;
    carol_api.stop("carol-2").await?;

    // The labels the running platform gives: the hub's on the users' volumes, compose's on its data volume.
    let platform_labels = volume_labels(setup, stack).await?;
    for (user, escaped) in [("alice", "alice"), ("carol-2", "carol-2d2")] {
        let volume = contract::user_volume_name(&stack.volume_prefix, escaped);
        let labels = platform_labels.get(&volume).with_context(|| format!("{volume} does not exist"))?;
        let created = labels.get(contract::ACCOUNT_LABEL).cloned().unwrap_or_default();
        ensure!(!created.is_empty(), "the hub did not label {volume} with its account's creation time: {labels:?}");
        let wanted: HashMap<String, String> = contract::user_volume_labels(&stack.project, user, &created).into_iter().collect();
        ensure!(*labels == wanted, "the hub labelled {volume} {labels:?}, expected {wanted:?}");
    }

    // A course's folder, as the hub makes one at a member's first spawn (its volume and labels), with files.
    let course_folder = contract::group_folder_volume(&stack.project, "physics-101", "course");
    let labels = contract::group_folder_labels(&stack.project, "physics-101", "course");
    let options = bollard::models::VolumeCreateRequest {
        name: Some(course_folder.clone()),
        labels: Some(labels.into_iter().collect()),
        ..Default::default()
    };
    setup.docker.create_volume(options).await?;
    let fill =
        "mkdir -p /volume/week1 && printf 'Read chapter 1.\\n' > /volume/week1/notes.md && chown -R 1000:100 /volume && chmod 2775 /volume";
    docker::run_on_volume(&setup.docker, setup.hub_image(), &course_folder, true, &["sh", "-c", fill], "test-group-folder").await?;
    let course_sum = docker::volume_tree_sum(&setup.docker, setup.hub_image(), &course_folder).await?;
    let platform_labels = volume_labels(setup, stack).await?;

    let env = stack.env_file().to_path_buf();
    let env_arg = env.to_str().expect("a UTF-8 path");
    for round in 1..=2 {
        let backup = artifacts.dir.join(format!("backup-{round}"));
        let backup_arg = backup.to_str().expect("UTF-8");
        let started = Instant::now();
        let (ok, text) = cases::xtask(&["backup", backup_arg, "--env-file", env_arg], &[])?;
        ensure!(ok, "round {round}: cargo xtask backup failed:\n{text}");
        progress!("round {round}: backup: {} bytes in {:.1} s", folder_size(&backup), started.elapsed().as_secs_f64());
        ensure!(text.contains("2 user volume"), "round {round}: the backup should hold two user volumes:\n{text}");
        ensure!(text.contains("1 group folder"), "round {round}: the backup should hold the course's folder:\n{text}");

        if round == 1 {
            // A backup never overwrites: the same folder again is refused.
            let (ok, text) = cases::xtask(&["backup", backup_arg, "--env-file", env_arg], &[])?;
            ensure!(
                !ok && text.contains("error:") && text.contains("hint:"),
                "a second backup into the same folder should be refused:\n{text}"
            );
        }

        // `down --volumes` as an admin runs it: it deletes the volumes labelled for this stack only.
        let (ok, text) = cases::xtask(&["down", "--volumes", "--env-file", env_arg], &[])?;
        ensure!(ok, "round {round}: cargo xtask down --volumes failed:\n{text}");
        let left = docker::user_volume_names(&setup.docker, &stack.volume_prefix).await?;
        ensure!(left.is_empty(), "round {round}: `down --volumes` kept the stack's user volumes {left:?}:\n{text}");
        ensure!(
            setup.docker.inspect_volume(&course_folder).await.is_err(),
            "round {round}: `down --volumes` kept the group folder {course_folder}"
        );

        if round == 1 {
            // A damaged copy is refused before anything is written.
            let damaged = artifacts.dir.join("backup-damaged");
            Command::new("cp").args(["-a", backup_arg, damaged.to_str().expect("UTF-8")]).status()?;
            let tar = damaged.join("users/alice.tar");
            let mut bytes = std::fs::read(&tar)?;
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(&tar, bytes)?;
            let (ok, text) = cases::xtask(&["restore", damaged.to_str().expect("UTF-8"), "--env-file", env_arg], &[])?;
            ensure!(!ok && text.contains("damaged"), "a damaged backup should be refused:\n{text}");
            ensure!(
                docker::user_volume_names(&setup.docker, &stack.volume_prefix).await?.is_empty(),
                "a refused restore wrote a user volume"
            );
        }

        // Into the emptied stack, without --force: the round trip needs nothing more.
        let started = Instant::now();
        let (ok, text) = cases::xtask(&["restore", backup_arg, "--env-file", env_arg], &[])?;
        ensure!(ok, "round {round}: cargo xtask restore failed:\n{text}");
        progress!("round {round}: restore: {:.1} s", started.elapsed().as_secs_f64());
        if round == 1 {
            // Restoring again over the restored data is refused without --force, and allowed with it.
            let (ok, text) = cases::xtask(&["restore", backup_arg, "--env-file", env_arg], &[])?;
            ensure!(
                !ok && text.contains("would overwrite") && text.contains("--force"),
                "a restore over existing data should be refused:\n{text}"
            );
            let (ok, text) = cases::xtask(&["restore", backup_arg, "--env-file", env_arg, "--force"], &[])?;
            ensure!(ok, "restore --force failed:\n{text}");
        }
        // Every restored volume carries exactly the labels the platform gave it.
        let restored_labels = volume_labels(setup, stack).await?;
        for (volume, labels) in &platform_labels {
            let restored = restored_labels.get(volume);
            ensure!(
                restored == Some(labels),
                "round {round}: restored volume {volume} is labelled {restored:?}, the platform gave {labels:?}"
            );
        }
        progress!("round {round}: every restored volume carries the platform's labels: {restored_labels:?}");
        let restored_sum = docker::volume_tree_sum(&setup.docker, setup.hub_image(), &course_folder).await?;
        ensure!(restored_sum == course_sum, "round {round}: the restored course folder differs ({restored_sum}, {course_sum} before)");

        stack.compose(&["up", "-d", "--no-build"])?;
        stack.wait_healthy().await?;
        let alice = Session::new(stack, "alice")?;
        alice.must_log_in(&alice_password).await?;
        let bob = Session::new(stack, "bob")?;
        ensure!(
            bob.log_in(&bob_password).await?.is_some(),
            "round {round}: bob was not approved before the backup but logs in after the restore"
        );
        let admin_session = Session::new(stack, "admin")?;
        admin_session.must_log_in(ADMIN_PASSWORD).await?;
        let alice_api = alice.api_token().await?;
        let model = alice_api.user("alice").await?;
        ensure!(model["servers"].get("").is_none(), "after a restore into a fresh stack alice should have no server running: {model}");
        alice_api.spawn("alice", IMAGE).await?;
        let restored = alice_api.get_file("alice", "resilience.bin").await?;
        ensure!(restored == file, "round {round}: the restored file differs ({} bytes, {} expected)", restored.len(), file.len());
        progress!("round {round}: alice logs in, her {} byte file is byte-identical, bob is still waiting for approval", file.len());
    }
    let carol = Session::new(stack, "carol-2")?;
    carol.must_log_in(&carol_password).await?;
    let carol_api = carol.api_token().await?;
    carol_api.spawn("carol-2", IMAGE).await?;
    ensure!(carol_api.get_file("carol-2", "notes.bin").await? == carol_file, "carol-2's file differs after two round trips");
    Ok(())
}

/// The labels of the stack's volumes: its user volumes, its group folders and its hub data volume, by name.
async fn volume_labels(setup: &Setup, stack: &Stack) -> Result<HashMap<String, HashMap<String, String>>> {
    let data_volume = contract::data_volume_name(&stack.project);
    let volumes = setup.docker.list_volumes(Some(ListVolumesOptionsBuilder::default().build())).await?;
    Ok(volumes
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter(|volume| {
            volume.name.starts_with(&stack.volume_prefix)
                || volume.name == data_volume
                || volume.name.starts_with(&contract::group_folder_prefix(&stack.project))
        })
        .map(|volume| (volume.name, volume.labels))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_login_lockout() -> Result<()> {
    cases::run("resilience", "c02-login-lockout", &settings(&[]), async |case| {
        let stack = &case.stack;
        let (carol, _, carol_password) = cases::new_user(stack, "carol").await?;
        let (dave, _, dave_password) = cases::new_user(stack, "dave").await?;
        for attempt in 1..=5 {
            let refused = carol.log_in("wrong-password-123").await?;
            ensure!(refused.is_some(), "wrong password {attempt} was accepted");
        }
        let refused = carol.log_in(&carol_password).await?;
        let Some(message) = refused else { bail!("after 5 wrong passwords carol's right password was accepted: no lockout") };
        progress!("carol's right password during the lockout: refused with `{message}`");
        dave.must_log_in(&dave_password).await.context("another account must not be affected by carol's lockout")?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c03_dummy_authentication() -> Result<()> {
    let shared = "Shared-demo-pw-42";
    cases::run("resilience", "c03-dummy-auth", &[("AUTH_STRATEGY", "dummy"), ("DUMMY_PASSWORD", shared)], async |case| {
        let stack = &case.stack;
        let anyone = Session::new(stack, "anyone")?;
        ensure!(anyone.log_in("not-the-password").await?.is_some(), "a wrong password was accepted in dummy mode");
        anyone.must_log_in(shared).await?;
        let someone_else = Session::new(stack, "someone-else")?;
        someone_else.must_log_in(shared).await?;
        let admin = Session::new(stack, "admin")?;
        admin.must_log_in(shared).await?;
        let api = admin.api_token().await?;
        let model = api.user("admin").await?;
        ensure!(model["admin"] == json!(false), "`admin` is an admin in dummy mode: {model}");
        let (status, _) = api.get("/hub/api/users").await?;
        ensure!(status == reqwest::StatusCode::FORBIDDEN, "listing every user as `admin` in dummy mode answered {status}, expected 403");
        let anyone_api = anyone.api_token().await?;
        ensure!(anyone_api.user("anyone").await?["admin"] == json!(false), "`anyone` is an admin");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c04_idle_culler() -> Result<()> {
    cases::run("resilience", "c04-idle-culler", &settings(&[("IDLE_CULL_TIMEOUT", "60")]), async |case| {
        let (setup, stack) = (&case.setup, &case.stack);
        let (_, erin, _) = cases::new_user(stack, "erin").await?;
        let (_, frank, _) = cases::new_user(stack, "frank").await?;
        erin.spawn("erin", IMAGE).await?;
        let erin_ready = Instant::now();
        frank.spawn("frank", IMAGE).await?;
        // frank's kernel prints every 5 s over a websocket kept open through the proxy: the activity
        // the proxy records (and the hub collects every 30 s) is what the culler sees.
        let mut kernel = frank.kernel("frank").await?;
        let _cell = kernel.submit("import time\nfor i in range(100000):\n    print(i, flush=True)\n    time.sleep(5)").await?;
        let mut erin_culled = None;
        let mut messages = 0;
        while erin_ready.elapsed() < Duration::from_secs(300) {
            messages += kernel.drain_for(Duration::from_secs(5)).await?;
            if erin_culled.is_none() && docker::user_containers(&setup.docker, &stack.project, "erin").await?.is_empty() {
                erin_culled = Some(erin_ready.elapsed());
                progress!("erin's idle server was culled {:.0} s after it was ready", erin_ready.elapsed().as_secs_f64());
            }
            if let Some(culled) = erin_culled
                && erin_ready.elapsed() > culled + Duration::from_secs(75)
            {
                break;
            }
            let frank_model = frank.user("frank").await?;
            ensure!(
                frank_model["servers"].get("").is_some(),
                "frank's server with a busy kernel was stopped after {:.0} s ({messages} kernel messages received); last_activity {}",
                erin_ready.elapsed().as_secs_f64(),
                frank_model["last_activity"]
            );
        }
        let Some(culled) = erin_culled else { bail!("erin's idle server was not culled within 300 s (IDLE_CULL_TIMEOUT=60)") };
        ensure!(culled <= Duration::from_secs(150), "erin's idle server was culled only after {:.0} s", culled.as_secs_f64());
        let erin_model = erin.user("erin").await?;
        ensure!(erin_model["servers"].get("").is_none(), "the hub still lists erin's culled server: {erin_model}");
        docker::running_user_container(&setup.docker, &stack.project, "frank").await.context("frank's busy server must keep running")?;
        let frank_model = frank.user("frank").await?;
        progress!(
            "frank's busy server kept running ({messages} kernel messages over the websocket); its last_activity as the culler reads it: {}",
            frank_model["servers"][""]["last_activity"]
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c06_trust_xheaders() -> Result<()> {
    cases::run("resilience", "c06-xheaders", &settings(&[("TRUST_XHEADERS", "true")]), async |case| {
        let (setup, stack) = (&case.setup, &case.stack);
        let (ivan_session, ivan, _) = cases::new_user(stack, "ivan").await?;
        ivan.spawn("ivan", IMAGE).await?;
        let through_proxy = format!("proxied{}", cases::random_hex());
        let direct = format!("direct{}", cases::random_hex());
        ivan_session.get_with_header(&format!("/hub/login?probe={through_proxy}"), ("X-Forwarded-For", "198.51.100.23")).await?;
        let container = docker::running_user_container(&setup.docker, &stack.project, "ivan").await?;
        let script = format!(
            "import urllib.request\nr = urllib.request.Request('http://hub:8081/hub/login?probe={direct}', headers={{'X-Forwarded-For': '203.0.113.99'}})\nprint(urllib.request.urlopen(r, timeout=5).status)"
        );
        let (code, output) = docker::exec(&setup.docker, container.id.as_deref().unwrap_or_default(), &["python3", "-c", &script], None).await?;
        ensure!(code == 0, "the direct request from ivan's container failed: {output}");
        let ivan_ip = container
            .network_settings
            .and_then(|settings| settings.networks)
            .and_then(|mut networks| networks.remove(&stack.network))
            .and_then(|network| network.ip_address)
            .unwrap_or_default();
        let hub = hub_container(setup, stack).await?;
        let log_line = |marker: String| {
            let docker = setup.docker.clone();
            let id = hub.id.clone().unwrap_or_default();
            async move {
                wait::until(&format!("the hub's log line for {marker}"), wait::DEFAULT, || async {
                    let logs = docker::logs(&docker, &id).await;
                    Ok(logs.lines().find(|line| line.contains(&marker)).map(str::to_string))
                })
                .await
            }
        };
        let proxied_line = log_line(through_proxy).await?;
        let direct_line = log_line(direct).await?;
        progress!("through the proxy: {proxied_line}\ndirect from ivan's container: {direct_line}");
        let proxy = docker::service_container(&setup.docker, &stack.project, "proxy").await?;
        let proxy_ip = setup
            .docker
            .inspect_container(proxy.id.as_deref().unwrap_or_default(), None::<InspectContainerOptions>)
            .await?
            .network_settings
            .and_then(|settings| settings.networks)
            .and_then(|mut networks| networks.remove(&stack.network))
            .and_then(|network| network.ip_address)
            .unwrap_or_default();
        ensure!(
            !proxy_ip.is_empty() && !proxied_line.contains(&format!("@{proxy_ip}")),
            "with TRUST_XHEADERS=true the hub logged the proxy's own address {proxy_ip} for a proxied request: {proxied_line}"
        );
        ensure!(
            !direct_line.contains("203.0.113.99"),
            "the hub logged the address a user's container forged in X-Forwarded-For (it should log {ivan_ip}): {direct_line}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c07_hub_killed_mid_spawn() -> Result<()> {
    cases::run("resilience", "c07-kill-mid-spawn", &settings(&[]), async |case| {
        let (setup, stack) = (&case.setup, &case.stack);
        let (_, jack, _) = cases::new_user(stack, "jack").await?;
        // The spawn request blocks while the hub starts the container (up to its 10 s slow-spawn limit):
        // it runs aside, and the hub is killed once the container exists but the spawn has not finished.
        let request = {
            let jack = jack.clone();
            tokio::spawn(async move { jack.request_spawn("jack", json!({"image": IMAGE})).await })
        };
        wait::until("jack's container to be created by the spawn", wait::DEFAULT, || async {
            Ok((!docker::user_containers(&setup.docker, &stack.project, "jack").await?.is_empty()).then_some(()))
        })
        .await?;
        let model = jack.user("jack").await?;
        progress!("killing the hub while jack's spawn is in progress: server {}", model["servers"][""]);
        ensure!(model["servers"][""]["ready"] != json!(true), "jack's server was ready before the hub could be killed mid-spawn");
        crash_hub(setup, stack).await?;
        let answer = request.await?;
        progress!("jack's spawn request, cut by the crash: {answer:?}");
        // Once the hub is back, its view settles and must match the engine's.
        let model = wait::until("jack's server to leave `pending` after the hub's restart", Duration::from_secs(90), || async {
            let model = jack.user("jack").await?;
            Ok((model["servers"][""]["pending"].is_null()).then_some(model))
        })
        .await?;
        let hub_says_running = model["servers"].get("").is_some_and(|server| server["ready"] == json!(true));
        let running: Vec<_> = docker::containers_with_labels(
            &setup.docker,
            &[format!("{}={}", contract::STACK_LABEL, stack.project), format!("{}=jack", contract::USER_LABEL)],
            false,
        )
        .await?;
        progress!(
            "after the crash: the hub says jack's server is {}, the engine runs {} container(s) of jack",
            if hub_says_running { "ready" } else { "stopped" },
            running.len()
        );
        ensure!(
            hub_says_running != running.is_empty(),
            "the hub and the engine disagree: hub ready={hub_says_running}, running containers={} (an orphan or a ghost)",
            running.len()
        );
        if hub_says_running {
            jack.stop("jack").await?;
        }
        jack.spawn("jack", IMAGE).await.context("jack must be able to spawn again after the crash")?;
        let (status, _) = jack.get("/user/jack/api/status").await?;
        ensure!(status == reqwest::StatusCode::OK, "jack's new server answered {status}");
        Ok(())
    })
    .await
}

const INTEGRITY_CHECK: &str = "import sqlite3; c = sqlite3.connect('/srv/jupyterhub/data/jupyterhub.sqlite'); print(c.execute('PRAGMA integrity_check').fetchone()[0])";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c08_concurrent_signups_hub_killed() -> Result<()> {
    cases::run("resilience", "c08-signups-kill", &settings(&[]), async |case| {
        let (setup, stack) = (&case.setup, &case.stack);
        let passwords: Vec<(String, String)> = (0..20).map(|index| (format!("signup{index:02}"), cases::fresh_password("Res"))).collect();
        let mut tasks = Vec::new();
        for (user, password) in passwords.clone() {
            let session = Session::new(stack, &user)?;
            tasks.push(tokio::spawn(async move { (user, password.clone(), session.sign_up(&password).await) }));
        }
        // The hub hashes one password at a time per core but one: once the first signup has its answer, the
        // others are queued or half-way, and the hub is killed then.
        let (first, _, others) = futures_util::future::select_all(tasks).await;
        crash_hub(setup, stack).await?;
        let mut succeeded = Vec::new();
        let mut failed = Vec::new();
        for outcome in std::iter::once(first).chain(futures_util::future::join_all(others).await) {
            let (user, password, outcome) = outcome?;
            match outcome {
                Ok(class) if class == "alert-success" => succeeded.push((user, password)),
                Ok(class) => failed.push(format!("{user}: {class}")),
                Err(err) => failed.push(format!("{user}: {err:#}")),
            }
        }
        progress!("signups: {} got a success page, {} did not ({})", succeeded.len(), failed.len(), failed.join("; "));
        let hub = hub_container(setup, stack).await?;
        let (code, verdict) =
            docker::exec(&setup.docker, hub.id.as_deref().unwrap_or_default(), &["python3", "-c", INTEGRITY_CHECK], None).await?;
        ensure!(code == 0 && verdict.trim() == "ok", "PRAGMA integrity_check after the crash: {verdict}");
        for (user, password) in &succeeded {
            Session::new(stack, user)?
                .must_log_in(password)
                .await
                .with_context(|| format!("{user} got a success page before the crash"))?;
        }
        ensure!(!failed.is_empty() || !succeeded.is_empty(), "no signup finished at all");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c09_kernel_out_of_memory() -> Result<()> {
    cases::run("resilience", "c09-oom", &settings(&[("JHUB_MEM_LIMIT", "512M")]), async |case| {
        let (setup, stack) = (&case.setup, &case.stack);
        let (_, kate, _) = cases::new_user(stack, "kate").await?;
        let (_, leo, _) = cases::new_user(stack, "leo").await?;
        kate.spawn("kate", IMAGE).await?;
        leo.spawn("leo", IMAGE).await?;
        let since = SystemTime::now();
        let mut kernel = kate.kernel("kate").await?;
        let outcome = kernel.run("chunks = []\nwhile True:\n    chunks.append(b'x' * 50_000_000)", Duration::from_secs(120)).await?;
        progress!("kate's greedy cell: {outcome:?}");
        ensure!(
            outcome.kernel_lost || outcome.error.as_deref().is_some_and(|e| e.contains("MemoryError")),
            "the cell ended without losing its kernel: {outcome:?}"
        );
        let events = docker::user_container_events(&setup.docker, &stack.project, "kate", since, SystemTime::now()).await?;
        ensure!(events.iter().any(|event| event.starts_with("oom")), "no OOM event for kate's container (events: {events:?})");
        docker::running_user_container(&setup.docker, &stack.project, "kate")
            .await
            .context("kate's server must survive its kernel's OOM")?;
        let (status, _) = kate.get("/user/kate/api/status").await?;
        ensure!(status == reqwest::StatusCode::OK, "kate's server answered {status} after the OOM");
        let mut fresh = kate.kernel("kate").await?;
        let after = fresh.run("print(6 * 7)", Duration::from_secs(60)).await?;
        ensure!(after.stdout.trim() == "42", "a new kernel of kate's does not compute: {after:?}");
        let mut other = leo.kernel("leo").await?;
        let leo_outcome = other.run("print(6 * 7)", Duration::from_secs(60)).await?;
        ensure!(leo_outcome.stdout.trim() == "42", "leo's kernel does not compute: {leo_outcome:?}");
        let health = reqwest::get(stack.url("/hub/health")).await?.status();
        ensure!(health == reqwest::StatusCode::OK, "the hub answered {health}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_fork_bomb() -> Result<()> {
    let limit = 128;
    cases::run("resilience", "c10-fork-bomb", &settings(&[("JHUB_PIDS_LIMIT", "128")]), async |case| {
        let stack = &case.stack;
        let (_, mia, _) = cases::new_user(stack, "mia").await?;
        let (_, ned, _) = cases::new_user(stack, "ned").await?;
        mia.spawn("mia", IMAGE).await?;
        ned.spawn("ned", IMAGE).await?;
        let mut kernel = mia.kernel("mia").await?;
        let bomb = "import os, time\nn = 0\ntry:\n    for _ in range(100000):\n        if os.fork() == 0:\n            time.sleep(20)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('stopped', n, e.errno)";
        let outcome = kernel.run(bomb, Duration::from_secs(120)).await?;
        progress!("mia's fork bomb: {outcome:?}");
        // Python warns about fork() in a threaded process on the same stream: the verdict is its own line.
        let verdict = outcome.stdout.lines().find(|line| line.starts_with("stopped ")).unwrap_or_default();
        let words: Vec<&str> = verdict.split_whitespace().collect();
        ensure!(words.first() == Some(&"stopped"), "the fork loop was not stopped by the process limit: {outcome:?}");
        let forks: u32 = words.get(1).and_then(|n| n.parse().ok()).unwrap_or(u32::MAX);
        ensure!(forks < limit, "mia forked {forks} processes with JHUB_PIDS_LIMIT={limit}");
        let mut other = ned.kernel("ned").await?;
        let ned_outcome = other.run("import subprocess; print(subprocess.run(['echo', 'fine'], capture_output=True, text=True).stdout.strip())", Duration::from_secs(60)).await?;
        ensure!(ned_outcome.stdout.trim() == "fine", "ned cannot start a process while mia's bomb runs: {ned_outcome:?}");
        let health = reqwest::get(stack.url("/hub/health")).await?.status();
        ensure!(health == reqwest::StatusCode::OK, "the hub answered {health}");
        // The forked children are the kernel's: they stay zombies (holding their pids) until it reaps them,
        // so mia's own server cannot start a process meanwhile. Reaping them (what a kernel restart does
        // too) gives the pids back.
        let reaped = kernel
            .run("import os\nn = 0\nwhile True:\n    try:\n        os.waitpid(-1, 0)\n        n += 1\n    except ChildProcessError:\n        break\nprint('reaped', n)", Duration::from_secs(90))
            .await?;
        progress!("mia's kernel reaped its children: {}", reaped.stdout.trim());
        ensure!(reaped.stdout.contains(&format!("reaped {forks}")), "mia's kernel did not reap its {forks} children: {reaped:?}");
        let after = wait::until("mia's kernel to compute again after the bomb", Duration::from_secs(90), || async {
            let mut fresh = mia.kernel("mia").await?;
            let outcome = fresh.run("print(6 * 7)", Duration::from_secs(30)).await?;
            Ok((outcome.stdout.trim() == "42").then_some(()))
        })
        .await;
        after.context("mia's server after the fork bomb")?;
        Ok(())
    })
    .await
}

/// The compose variables of a test stack, for `cargo xtask up`/`down` run against it.
fn stack_env(stack: &Stack, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("JHUB_STACK_NAME", stack.project.clone()),
        ("JHUB_NETWORK", stack.network.clone()),
        ("JHUB_USER_VOLUME_PREFIX", stack.volume_prefix.clone()),
        ("JHUB_HTTP_PORT", stack.port.to_string()),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
    ];
    env.extend(extra.iter().cloned());
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c11_upgrade_under_a_running_user() -> Result<()> {
    let case = Case::open("resilience", "c11-upgrade", &settings(&[("OPEN_SIGNUP", "false")])).await?;
    let (setup, stack) = (&case.setup, &case.stack);
    let copy = case.artifacts.dir.join("checkout");
    let result = upgrade(setup, stack, &copy).await;
    // The stack stays up while the tags go back, as it did before the verdict became one call.
    let outcome = case.finish(&[], result).await;
    // The copy's rebuilt image is the test's own: the checkout's tags go back to the locked image.
    let minimal = &setup.lock.image[IMAGE];
    for tag in &minimal.tags {
        let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let options = bollard::query_parameters::TagImageOptionsBuilder::default().repo(repo).tag(version).build();
        let _ = setup.docker.tag_image(setup.image_id(IMAGE), Some(options)).await;
    }
    outcome
}

async fn upgrade(setup: &Setup, stack: &Stack, copy: &Path) -> Result<()> {
    let admin = Session::new(stack, "admin")?;
    admin.must_log_in(ADMIN_PASSWORD).await?;
    let password = cases::fresh_password("Res");
    let olga = Session::new(stack, "olga")?;
    olga.sign_up(&password).await?;
    admin.authorize("olga").await?;
    olga.must_log_in(&password).await?;
    let olga_api = olga.api_token().await?;
    olga_api.spawn("olga", IMAGE).await?;
    let file = cases::random_bytes(1 << 20);
    olga_api.put_file("olga", "upgrade.bin", &file).await?;
    olga_api.stop("olga").await?;

    // 1. `xtask down` + `xtask up` without --volumes: everything kept.
    let env = stack_env(stack, &[("OPEN_SIGNUP", "false".to_string())]);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(key, value)| (*key, value.as_str())).collect();
    let (ok, text) = cases::xtask(&["down"], &env_refs)?;
    ensure!(ok, "cargo xtask down failed:\n{text}");
    let (ok, text) = cases::xtask(&["up", "--no-build"], &env_refs)?;
    ensure!(ok, "cargo xtask up failed:\n{text}");
    let olga = Session::new(stack, "olga")?;
    olga.must_log_in(&password).await.context("olga after down + up")?;
    let olga_api = olga.api_token().await?;
    olga_api.spawn("olga", IMAGE).await?;
    ensure!(olga_api.get_file("olga", "upgrade.bin").await? == file, "olga's file changed across down + up");
    let old = docker::running_user_container(&setup.docker, &stack.project, "olga").await?;
    let old_image = old.image.clone().unwrap_or_default();
    ensure!(old_image == setup.image_id(IMAGE), "olga runs {old_image}, the lock says {}", setup.image_id(IMAGE));

    // 2. A changed single-user image, rebuilt, and `xtask up` while olga's server runs. The change is
    // made in a copy of the checkout (JHUB_REPO_ROOT), so the real one is left alone.
    if copy.exists() {
        std::fs::remove_dir_all(copy)?;
    }
    std::fs::create_dir_all(copy)?;
    for part in ["images", "images.lock", "stack"] {
        let status = Command::new("cp").args(["-a"]).arg(setup.root.join(part)).arg(copy).status()?;
        ensure!(status.success(), "cannot copy {part} into {}", copy.display());
    }
    let _ = std::fs::remove_file(copy.join("stack/.env"));
    let dockerfile = copy.join("images").join(IMAGE).join("Dockerfile");
    let mut text = std::fs::read_to_string(&dockerfile)?;
    text.push_str(&format!("\nLABEL io.jhub-docker.resilience-upgrade=\"{}\"\n", cases::random_hex()));
    std::fs::write(&dockerfile, text)?;
    let mut copy_env = env.clone();
    copy_env.push(("JHUB_REPO_ROOT", copy.to_string_lossy().into_owned()));
    let copy_refs: Vec<(&str, &str)> = copy_env.iter().map(|(key, value)| (*key, value.as_str())).collect();
    let started = Instant::now();
    let (ok, text) = cases::xtask(&["build-images", IMAGE], &copy_refs)?;
    ensure!(ok, "rebuilding the changed image failed:\n{text}");
    progress!("rebuilt {IMAGE} in {:.0} s", started.elapsed().as_secs_f64());
    let new_lock = jhub_docker::lock::Lock::load(&copy.join("images.lock"))?;
    let new_tag = new_lock.image[IMAGE].keyed_tag().context("the new lock has no keyed tag")?.to_string();
    let new_image = setup.docker.inspect_image(&new_tag).await?.id.unwrap_or_default();
    ensure!(new_image != old_image, "the changed image got the old id {old_image}");
    let (ok, text) = cases::xtask(&["up", "--no-build"], &copy_refs)?;
    ensure!(ok, "cargo xtask up with the new lock failed:\n{text}");

    let still = docker::running_user_container(&setup.docker, &stack.project, "olga").await?;
    ensure!(still.id == old.id, "olga's running container was replaced by the upgrade");
    ensure!(setup.docker.inspect_image(&old_image).await.is_ok(), "the old image {old_image} was deleted while olga's server uses it");
    let olga = Session::new(stack, "olga")?;
    olga.must_log_in(&password).await.context("olga after the upgrade")?;
    let olga_api = olga.api_token().await?;
    // The proxy runs the hub image too: when compose recreated it, its routes come back with the hub's
    // next routes check (every 30 s).
    let upgraded = Instant::now();
    wait::until("olga's running server to answer through the proxy after the upgrade", Duration::from_secs(90), || async {
        let (status, _) = olga_api.get("/user/olga/api/status").await?;
        Ok((status == reqwest::StatusCode::OK).then_some(()))
    })
    .await?;
    progress!("olga's running server answered {:.0} s after `xtask up` returned", upgraded.elapsed().as_secs_f64());
    ensure!(olga_api.get_file("olga", "upgrade.bin").await? == file, "olga's file changed across the upgrade");
    olga_api.stop("olga").await?;
    olga_api.spawn("olga", IMAGE).await?;
    let next = docker::running_user_container(&setup.docker, &stack.project, "olga").await?;
    ensure!(next.image.as_deref() == Some(new_image.as_str()), "olga's next spawn runs {:?}, the new lock says {new_image}", next.image);
    ensure!(olga_api.get_file("olga", "upgrade.bin").await? == file, "olga's file changed on the new image");
    progress!("upgrade: the running server kept {old_image}; the next spawn got {new_image}");
    olga_api.stop("olga").await?;
    let _ = setup
        .docker
        .remove_image(&new_image, Some(bollard::query_parameters::RemoveImageOptionsBuilder::default().force(true).build()), None)
        .await;
    Ok(())
}

/// The engine's pid file, as `dockerd` writes it by default.
/// A class arriving at once on a host that starts one server at a time (JHUB_CONCURRENT_STARTS=1): every
/// pupil's server starts, in turn; those who wait read on the spawn page how many are ahead of them, then
/// that their turn came; no spawn fails for waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_a_class_waits_its_turn_to_start() -> Result<()> {
    const PUPILS: usize = 6;
    cases::run("resilience", "c13-start-queue", &settings(&[("JHUB_CONCURRENT_STARTS", "1")]), async |case| {
        let stack = &case.stack;
        let mut pupils = Vec::new();
        for index in 1..=PUPILS {
            let (session, api, _) = cases::new_user(stack, &format!("pupil{index}")).await?;
            pupils.push((session, api));
        }
        let mut spawns = Vec::new();
        for (session, api) in pupils {
            spawns.push(tokio::spawn(async move {
                let user = session.user.clone();
                // The spawn page's way: the request, and the progress stream once the hub shows it pending.
                let request = {
                    let (api, user) = (api.clone(), user.clone());
                    tokio::spawn(async move { api.request_spawn(&user, json!({"image": IMAGE})).await })
                };
                wait::until(&format!("the spawn of {user} to be pending or done"), wait::SPAWN, || async {
                    let server = &api.user(&user).await?["servers"][""];
                    Ok((server["pending"] == json!("spawn") || server["ready"] == json!(true)).then_some(()))
                })
                .await?;
                let progress = session.follow_spawn_progress().await.with_context(|| format!("the progress of {user}"))?;
                request.await??;
                anyhow::Ok((user, progress))
            }));
        }
        let mut told = Vec::new();
        for spawn in spawns {
            let (user, progress) = spawn.await??;
            ensure!(
                progress.end == client::SpawnEnd::Ready,
                "{user}'s spawn did not end ready ({:?}): {:?}",
                progress.end,
                progress.messages
            );
            let waiting: Vec<&String> = progress.messages.iter().filter(|m| m.starts_with("Many people are starting servers")).collect();
            if let Some(first) = waiting.first() {
                ensure!(
                    progress.messages.iter().any(|m| m == "Your turn: starting your server"),
                    "{user} was told {first:?} but never that its turn came: {:?}",
                    progress.messages
                );
                told.push(format!("{user}: {first:?}"));
            }
        }
        progress!("told while waiting: {}", told.join("; "));
        ensure!(!told.is_empty(), "{PUPILS} spawns at once with one start at a time, and nobody was told they wait");
        for index in 1..=PUPILS {
            let name = format!("pupil{index}");
            let container = docker::running_user_container(&case.setup.docker, &stack.project, &name).await?;
            ensure!(
                container.state.and_then(|state| state.running) == Some(true),
                "{name}'s server is not running after its spawn was ready"
            );
        }
        Ok(())
    })
    .await
}

const DOCKERD_PID_FILE: &str = "/var/run/docker.pid";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c12_adopt_unlabelled_volumes() -> Result<()> {
    cases::run("resilience", "c12-adopt-volumes", &settings(&[]), async |case| adopt_volumes(&case.setup, &case.stack).await).await
}

/// Volumes made without labels (as restores made them before they labelled) are adopted: those of users
/// the hub knows get the hub's labels with every file kept; another one is listed and left alone.
async fn adopt_volumes(setup: &Setup, stack: &Stack) -> Result<()> {
    let unlabelled = |name: &str| bollard::models::VolumeCreateRequest { name: Some(name.to_string()), ..Default::default() };
    let dave_volume = contract::user_volume_name(&stack.volume_prefix, "dave");
    let stranger_volume = contract::user_volume_name(&stack.volume_prefix, "stranger");
    for volume in [&dave_volume, &stranger_volume] {
        setup.docker.create_volume(unlabelled(volume)).await?;
    }
    // dave's server mounts the unlabelled volume that is there already (Docker returns it as it is).
    let (_, dave_api, dave_password) = cases::new_user(stack, "dave").await?;
    dave_api.spawn("dave", IMAGE).await?;
    let file = cases::random_bytes(1 << 20);
    dave_api.put_file("dave", "kept.bin", &file).await?;
    let labels_of = |volume: String| async move { Ok::<_, anyhow::Error>(setup.docker.inspect_volume(&volume).await?.labels) };
    ensure!(labels_of(dave_volume.clone()).await?.is_empty(), "{dave_volume} should start unlabelled");

    let env = stack.env_file().to_path_buf();
    let env_arg = env.to_str().expect("a UTF-8 path");
    let (ok, text) = cases::xtask(&["adopt-volumes", "--env-file", env_arg], &[])?;
    ensure!(!ok && text.contains("is running") && text.contains("hint:"), "adopting while the stack runs should be refused:\n{text}");
    let (ok, text) = cases::xtask(&["down", "--env-file", env_arg], &[])?;
    ensure!(ok, "cargo xtask down failed:\n{text}");

    // A dry run names what it would do and changes nothing.
    let (ok, text) = cases::xtask(&["adopt-volumes", "--env-file", env_arg], &[])?;
    ensure!(ok && text.contains("would adopt 1 volume") && text.contains(&dave_volume), "the dry run should name {dave_volume}:\n{text}");
    ensure!(text.contains(&stranger_volume), "the dry run should list {stranger_volume} as left alone:\n{text}");
    ensure!(labels_of(dave_volume.clone()).await?.is_empty(), "the dry run changed {dave_volume}");

    let (ok, text) = cases::xtask(&["adopt-volumes", "--yes", "--env-file", env_arg], &[])?;
    ensure!(ok && text.contains("adopted 1 volume"), "adopt-volumes --yes failed:\n{text}");
    // The account's creation time comes from the hub's database; the spawn below refuses (409) a volume whose
    // label names another account, so it proves the value.
    let adopted = labels_of(dave_volume.clone()).await?;
    let created = adopted.get(contract::ACCOUNT_LABEL).cloned().unwrap_or_default();
    let wanted: HashMap<String, String> = contract::user_volume_labels(&stack.project, "dave", &created).into_iter().collect();
    ensure!(!created.is_empty() && adopted == wanted, "{dave_volume} is labelled {adopted:?} after adopt-volumes, expected {wanted:?}");
    ensure!(labels_of(stranger_volume.clone()).await?.is_empty(), "{stranger_volume} (no such user) was changed");
    let volumes = setup.docker.list_volumes(Some(ListVolumesOptionsBuilder::default().build())).await?.volumes.unwrap_or_default();
    let copies: Vec<String> = volumes.into_iter().map(|volume| volume.name).filter(|name| name.ends_with(".adopting")).collect();
    ensure!(copies.is_empty(), "adopt-volumes left its temporary copies: {copies:?}");
    // Nothing left to adopt: a second run says so.
    let (ok, text) = cases::xtask(&["adopt-volumes", "--yes", "--env-file", env_arg], &[])?;
    ensure!(ok && text.contains("nothing to adopt"), "a second adopt-volumes should find nothing:\n{text}");

    stack.compose(&["up", "-d", "--no-build"])?;
    stack.wait_healthy().await?;
    let dave = Session::new(stack, "dave")?;
    dave.must_log_in(&dave_password).await?;
    let dave_api = dave.api_token().await?;
    dave_api.spawn("dave", IMAGE).await?;
    ensure!(dave_api.get_file("dave", "kept.bin").await? == file, "dave's file differs after the adoption");
    progress!("adopted {dave_volume}: labelled {adopted:?}, dave's file byte-identical; {stranger_volume} left alone");
    setup.docker.remove_volume(&stranger_volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn z_docker_daemon_restart() -> Result<()> {
    if std::env::var("JHUB_TEST_RESTART_ENGINE").as_deref() != Ok("1") {
        bail!(
            "this case restarts the Docker daemon (every container on the host stops meanwhile) and runs only with \
             JHUB_TEST_RESTART_ENGINE=1 (.ci/run sets it)\nhint: JHUB_TEST_RESTART_ENGINE=1 flock /tmp/jhub-heavy.lock cargo test --test resilience -- --test-threads=1"
        );
    }
    cases::run("resilience", "z-engine-restart", &settings(&[]), async |case| engine_restart(&case.stack).await).await
}

async fn engine_restart(stack: &Stack) -> Result<()> {
    let mut users = Vec::new();
    for name in ["pia", "quinn"] {
        let (_, api, password) = cases::new_user(stack, name).await?;
        api.spawn(name, IMAGE).await?;
        let file = cases::random_bytes(256 << 10);
        api.put_file(name, "engine.bin", &file).await?;
        users.push((name, password, file));
    }
    let pid: i32 = std::fs::read_to_string(DOCKERD_PID_FILE)
        .with_context(|| format!("cannot read {DOCKERD_PID_FILE}: is dockerd running as started by ci/setup-host.sh?"))?
        .trim()
        .parse()?;
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    ensure!(status.success(), "kill -TERM {pid} (dockerd) failed");
    wait::until("dockerd to exit", Duration::from_secs(60), || async { Ok((!Path::new(&format!("/proc/{pid}")).exists()).then_some(())) })
        .await?;
    progress!("dockerd {pid} stopped; starting it again as ci/setup-host.sh does");
    let log = std::fs::OpenOptions::new().create(true).append(true).open("/var/log/dockerd.log")?;
    // setsid: the engine must outlive this test; it is never waited for.
    // The engine must not inherit this process's other descriptors (a lock file a developer's runner
    // holds, a pipe of the test harness): it would hold them for as long as it runs.
    // bash, not sh: dash cannot name a descriptor above 9 in a redirection, and exits instead of starting
    // the engine.
    let close_inherited = "for path in /proc/$$/fd/*; do fd=${path##*/}; \
                           if [ \"$fd\" -gt 2 ] && [ -e \"$path\" ]; then eval \"exec $fd>&-\"; fi; done; exec setsid dockerd";
    let _engine = Command::new("bash").args(["-c", close_inherited]).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?;
    let restarted = Instant::now();
    let docker = wait::until("the engine to answer again", Duration::from_secs(60), || async {
        let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
        docker.ping().await?;
        Ok(Some(docker))
    })
    .await?;
    stack.wait_healthy().await.context("the stack must come back by itself (restart policy)")?;
    progress!("stack healthy {:.0} s after the engine restart", restarted.elapsed().as_secs_f64());
    for (name, password, file) in &users {
        let session = Session::new(stack, name)?;
        session.must_log_in(password).await?;
        let api = session.api_token().await?;
        // The hub must show the real state: the container died with the engine, so the server is either
        // reported stopped, or (if the hub has not polled yet) a spawn request must still get it back.
        wait::until(&format!("{name} to get a working server again"), Duration::from_secs(60), || async {
            let model = api.user(name).await?;
            let server = model["servers"].get("").cloned();
            match server {
                None => {
                    api.request_spawn(name, json!({"image": IMAGE})).await?;
                    Ok(None)
                }
                Some(server) if server["ready"] == json!(true) => {
                    let (status, _) = api.get(&format!("/user/{name}/api/status")).await?;
                    Ok((status == reqwest::StatusCode::OK).then_some(()))
                }
                Some(_) => Ok(None),
            }
        })
        .await?;
        ensure!(api.get_file(name, "engine.bin").await? == *file, "{name}'s file changed across the engine restart");
        let running = docker::containers_with_labels(
            &docker,
            &[format!("{}={}", contract::STACK_LABEL, stack.project), format!("{}={name}", contract::USER_LABEL)],
            false,
        )
        .await?;
        ensure!(running.len() == 1, "{name} has {} running containers after the restart", running.len());
    }
    progress!("both users back with their files {:.0} s after the engine restart", restarted.elapsed().as_secs_f64());
    Ok(())
}
