//! The Swarm mode on a real three-node cluster (`cargo xtask cluster up`: engine-in-container nodes, the
//! registry filled, the stack deployed): two users whose servers land on different nodes; Lab, a kernel,
//! VS Code and marimo through the proxy in headless Chromium; an image switch that keeps the user's file
//! on the node holding the home; a hub restart with the servers alive; the admin stopping a server; a
//! node killed while users run (the others keep working, the lost node's user is told so and gets the
//! files back when the node returns); a home moved to another node; the TLS front door turned on (nginx on
//! the hub's node, the key a swarm secret) with a running server kept; every container gone at the end.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bollard::models::NodeState;
use jhub_docker::contract::{self, CLUSTER_NODE_PURPOSE, PURPOSE_LABEL, STACK_LABEL, USER_LABEL};
use jhub_harness::artifacts::Artifacts;
use jhub_harness::browser::{Browser, Chromedriver};
use jhub_harness::client::{Api, Session};
use jhub_harness::cluster::{Cluster, TlsCluster};
use jhub_harness::stack::HubAddress;
use jhub_harness::steps::{Failure, display_name};
use jhub_harness::tls::{self, Front};
use jhub_harness::{apps, cases, docker, hub, lab, preflight, probes, progress, wait};
use sha2::Digest;

/// How long the swarm may take to call a killed node down (its heartbeats stop; the default period is 5 s).
const NODE_DOWN: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn the_journey_on_three_nodes() -> Result<(), Failure> {
    Ok(the_journey().await?)
}

async fn the_journey() -> Result<()> {
    let setup = preflight::check().await?;
    let artifacts = Artifacts::for_test(&setup.root, "cluster")?;
    let cluster = Cluster::up(3, &["minimal", "datascience"]).await?;
    let driver = Chromedriver::start(&artifacts.dir.join("chromedriver.log")).await?;
    let alice = driver.session("alice").await?;
    let admin = driver.session("admin").await?;
    let result = journey(&setup, &cluster, &alice, &admin, &artifacts).await;
    if let Err(err) = &result {
        progress!("cluster journey failed: {err:#}");
        for (browser, name) in [(&alice, "alice"), (&admin, "admin")] {
            browser.save_state(&artifacts.dir, name).await;
        }
        let _ = hub_logs(&cluster, &artifacts).await;
    }
    let _ = alice.close().await;
    let _ = admin.close().await;
    let host = cluster.host.clone();
    drop(cluster);
    result?;
    // Every node (and with it every container it ran) is gone.
    let left = docker::containers_with_labels(&host, &[format!("{PURPOSE_LABEL}={CLUSTER_NODE_PURPOSE}")], true).await?;
    let names: Vec<_> = left.iter().map(|container| container.names.clone()).collect();
    ensure!(left.is_empty(), "`cargo xtask cluster down` left node containers: {names:?}");
    Ok(())
}

async fn hub_logs(cluster: &Cluster, artifacts: &Artifacts) -> Result<()> {
    let filters = std::collections::HashMap::from([("label", vec!["com.docker.swarm.service.name=jhub_hub"])]);
    let containers = cluster
        .manager
        .list_containers(Some(bollard::query_parameters::ListContainersOptionsBuilder::default().all(true).filters(&filters).build()))
        .await?;
    for container in containers.iter().filter_map(|container| container.id.as_deref()) {
        std::fs::write(artifacts.dir.join(format!("hub-{}.log", &container[..12])), docker::logs(&cluster.manager, container).await)?;
    }
    Ok(())
}

/// A user of the cluster's hub (open signup there) with a REST client of their own.
async fn api_user(cluster: &Cluster, user: &str) -> Result<(Session, Api, String)> {
    let session = Session::new(cluster, user)?;
    let password = cases::fresh_password("Cluster");
    session.sign_up(&password).await?;
    session.must_log_in(&password).await?;
    let api = session.api_token().await?;
    Ok((session, api, password))
}

/// The image id of the running container of `user`'s server on the node `hostname`.
async fn server_image_id(cluster: &Cluster, user: &str, hostname: &str) -> Result<String> {
    let node = cluster.node(cluster.index_of(hostname)?).await?;
    let container = docker::running_user_container(&node, &cluster.stack, user).await?;
    container.image.context("the server's container names no image")
}

async fn journey(setup: &preflight::Setup, cluster: &Cluster, alice: &Browser, admin: &Browser, artifacts: &Artifacts) -> Result<()> {
    let workers = [contract::cluster_node_name(2), contract::cluster_node_name(3)];

    // `doctor --swarm` asks every node's own engine for the registry: ready as `cluster up` left it; a
    // node that cannot reach the registry (its engine's connections to port 5000 refused) is named.
    doctor_sees_every_node(cluster).await?;

    // Alice signs up in the browser and starts the full image; Lab, a kernel, VS Code and marimo work
    // through the proxy of the manager, her server on a worker.
    let password = cases::fresh_password("Cluster");
    let signed_up = hub::sign_up(alice, cluster, "alice", &password).await?;
    ensure!(signed_up.class == "alert-success", "signing up alice gave ({}) {}", signed_up.class, signed_up.message);
    hub::log_in(alice, cluster, "alice", &password).await?;
    hub::start_from_home(alice, cluster).await?;
    let started = hub::choose_and_start(alice, "image", &display_name(setup, "datascience")?).await?;
    lab::wait_ready(alice, cluster, "alice", wait::SPAWN).await?;
    let cards = lab::settled_launcher_cards(alice).await?;
    progress!("cluster spawn: alice, datascience: {:.1} s (form → Lab ready)", started.elapsed().as_secs_f64());
    let alice_node = cluster.server_node("alice").await?;
    ensure!(
        workers.contains(&alice_node),
        "alice's server runs on {alice_node}, not on a worker (JHUB_SWARM_CONSTRAINTS=node.role==worker)"
    );
    ensure!(cluster.home_node("alice").await?.as_deref() == Some(alice_node.as_str()), "alice's home label is not on {alice_node}");
    // The node pulled exactly the build the lock records (an image id is the digest of its config, the
    // same on every engine): never another image of that name.
    // `cluster up` pushed after the preflight read the lock: read what it recorded.
    let lock = jhub_docker::lock::Lock::load(&jhub_docker::lock_path(&setup.root))?;
    let pushed = lock.image["datascience"].registry.clone().context("images.lock records no push of datascience")?;
    let running = server_image_id(cluster, "alice", &alice_node).await?;
    ensure!(running == pushed.image_id, "alice's server on {alice_node} runs {running}, the lock's datascience is {}", pushed.image_id);
    lab::run_in_new_notebook(alice, "print(6 * 7)", "42").await?;
    apps::vscode_and_marimo_from_launcher(alice, &cards, "/home/jovyan").await?;

    // Bob, through the REST API, starts `minimal`: the spread puts him on the other worker.
    let (_bob_session, bob, _) = api_user(cluster, "bob").await?;
    bob.spawn("bob", "minimal").await?;
    let bob_node = cluster.server_node("bob").await?;
    ensure!(bob_node != alice_node && workers.contains(&bob_node), "bob's server runs on {bob_node}, alice's on {alice_node}");
    let mut kernel = bob.kernel("bob").await?;
    let outcome = kernel.run("print(2 + 3)", wait::DEFAULT).await?;
    ensure!(outcome.stdout.contains('5'), "bob's kernel printed {:?}", outcome.stdout);
    progress!("alice runs on {alice_node}, bob on {bob_node}");
    // What bob's server reaches: the hub's API for his own user only, alice's server not without her
    // token, and nothing of the nodes' own network (the registry, which takes pushes from anyone who
    // reaches it; the swarm's control plane; the engines), which every node drops (images/node/jhub-node).
    user_reach(cluster, ("bob", &bob_node), ("alice", &alice_node)).await?;

    // Image switch: alice's file survives the switch to `minimal`, on the node holding her home.
    let alice_session = Session::new(cluster, "alice")?;
    alice_session.must_log_in(&password).await?;
    let alice_api = alice_session.api_token().await?;
    let kept = cases::random_bytes(4096);
    alice_api.put_file("alice", "kept.bin", &kept).await?;
    hub::stop_from_home(alice, cluster).await?;
    hub::start_from_home(alice, cluster).await?;
    hub::choose_and_start(alice, "image", &display_name(setup, "minimal")?).await?;
    lab::wait_ready(alice, cluster, "alice", wait::SPAWN).await?;
    let switched_node = cluster.server_node("alice").await?;
    ensure!(switched_node == alice_node, "alice's second server runs on {switched_node}, her home is on {alice_node}");
    ensure!(alice_api.get_file("alice", "kept.bin").await? == kept, "alice's file changed across the image switch");

    // The hub restarts (its container on the manager is stopped; the swarm starts a new one): both
    // servers keep running and answer.
    restart_hub(cluster).await?;
    let outcome = kernel.run("print(7 + 3)", wait::DEFAULT).await;
    let answered = match outcome {
        Ok(outcome) => outcome.stdout.contains("10"),
        // The websocket went through the proxy, which the hub's restart does not touch; a new one must work.
        Err(_) => bob.kernel("bob").await?.run("print(7 + 3)", wait::DEFAULT).await?.stdout.contains("10"),
    };
    ensure!(answered, "bob's kernel does not answer after the hub's restart");
    ensure!(alice_api.get_file("alice", "kept.bin").await? == kept, "alice's server lost her file across the hub restart");

    // The admin stops bob's server from the admin panel; his service goes away.
    hub::log_in(admin, cluster, "admin", &cluster.admin_password).await?;
    hub::stop_from_admin_panel(admin, cluster, "bob").await?;
    wait_service_gone(cluster, "bob").await?;
    bob.spawn("bob", "minimal").await?;
    ensure!(cluster.server_node("bob").await? == bob_node, "bob's restarted server left the node holding his home");

    // Alice's node dies while both run. Bob keeps working; alice is told where her files are and that the
    // node is down, and gets no server elsewhere (no empty home); when the node is back, so are her files.
    let alice_index = cluster.index_of(&alice_node)?;
    let killed = std::time::Instant::now();
    cluster.kill_node(alice_index).await?;
    cluster.wait_node_state(alice_index, NodeState::DOWN, NODE_DOWN).await?;
    progress!("{alice_node} killed: the swarm calls it down after {:.1} s", killed.elapsed().as_secs_f64());
    let mut kernel = bob.kernel("bob").await?;
    ensure!(
        kernel.run("print(4 * 4)", wait::DEFAULT).await?.stdout.contains("16"),
        "bob's kernel stopped answering when another node died"
    );
    let admin_session = Session::new(cluster, "admin")?;
    admin_session.must_log_in(&cluster.admin_password).await?;
    let admin_api = admin_session.api_token().await?;
    admin_api.stop("alice").await?;
    let (status, body) = alice_api.try_spawn("alice", serde_json::json!({"image": "minimal"})).await?;
    ensure!(!status.is_success(), "the hub accepted alice's start with her home's node down ({status}: {body})");
    let refusal = format!("{status}: {body}");
    ensure!(
        refusal.contains(&alice_node) && refusal.contains("down"),
        "alice's start with her node down should name the node and say it is down; the hub said: {refusal}"
    );
    ensure!(cluster.home_node("alice").await?.as_deref() == Some(alice_node.as_str()), "the refused start moved alice's home label");
    progress!("with {alice_node} down, alice is told: {refusal}");
    let restarted = std::time::Instant::now();
    cluster.restart_node(alice_index).await?;
    cluster.wait_node_state(alice_index, NodeState::READY, NODE_DOWN).await?;
    progress!("{alice_node} started again: ready after {:.1} s", restarted.elapsed().as_secs_f64());
    alice_api.spawn("alice", "minimal").await?;
    ensure!(cluster.server_node("alice").await? == alice_node, "alice's server did not go back to her home's node");
    ensure!(alice_api.get_file("alice", "kept.bin").await? == kept, "alice's file is not there after her node came back");

    // Backup and restore across nodes: both homes (on two workers) and the hub's data are saved; the
    // stack, its volumes on every node and the home pins are lost; a restore puts each home back on its
    // node and pins it there, and after `up --swarm` both users' servers run where their files are.
    backup_and_restore(cluster, artifacts, &[("alice", &alice_api, &alice_node), ("bob", &bob, &bob_node)], &kept).await?;

    // Account rescue reaches the swarm's hub as it does one host's: `reset-password` through the manager.
    let manager_host = Cluster::manager_host();
    let (reset, output) =
        cases::xtask(&["reset-password", "bob"], &[("DOCKER_HOST", manager_host.as_str()), ("JHUB_STACK_NAME", cluster.stack.as_str())])?;
    ensure!(reset, "reset-password on the swarm failed:\n{output}");
    let new_password =
        output.lines().find_map(|line| line.strip_prefix("new password: ")).context("reset-password printed no new password")?;
    Session::new(cluster, "bob")?.must_log_in(new_password.trim()).await?;

    // The admin deletes bob. His files stay on his node, set aside (the hub reaches no other node's volumes
    // to archive them); a new account named bob starts on another node with an empty home, never his.
    bob.put_file("bob", "private.txt", b"bob's own notes").await?;
    admin_api.stop("bob").await?;
    wait_service_gone(cluster, "bob").await?;
    let deleted = admin_api.delete("/hub/api/users/bob").await?;
    ensure!(deleted.as_u16() == 204, "deleting bob answered {deleted}");
    let label = cluster.home_label_on("bob", &bob_node).await?;
    ensure!(label.as_deref() == Some(contract::HOME_DELETED), "bob's home label on {bob_node} is {label:?} after his deletion");
    let (_namesake_session, namesake, _) = api_user(cluster, "bob").await?;
    namesake.spawn("bob", "minimal").await?;
    let namesake_node = cluster.server_node("bob").await?;
    ensure!(namesake_node != bob_node, "the new account bob started on {bob_node}, where the deleted bob's files are");
    ensure!(namesake.get_file("bob", "private.txt").await.is_err(), "the new account bob can read the deleted bob's private.txt");
    progress!("bob deleted: his home set aside on {bob_node}; the new bob runs on {namesake_node} with an empty home");
    namesake.stop("bob").await?;

    // The admin moves alice's home to the other worker: the copy is checked, the next start runs there,
    // with the file.
    alice_api.stop("alice").await?;
    wait_service_gone(cluster, "alice").await?;
    // The service goes at once; its container stops within the engine's stop timeout, and move-home
    // refuses to copy a home a program still has open.
    let home_node = cluster.node(alice_index).await?;
    let labels = [format!("{STACK_LABEL}={}", cluster.stack), format!("{USER_LABEL}=alice")];
    wait::until("alice's container on her home's node to stop", Duration::from_secs(60), || async {
        Ok(docker::containers_with_labels(&home_node, &labels, false).await?.is_empty().then_some(()))
    })
    .await?;
    let env_file = Cluster::env_file();
    let manager_host = Cluster::manager_host();
    let (moved, output) = cases::xtask(
        &["move-home", "alice", "--to", &bob_node, "--env-file", &env_file.to_string_lossy()],
        &[("DOCKER_HOST", &manager_host)],
    )?;
    ensure!(moved, "move-home failed:\n{output}");
    alice_api.spawn("alice", "minimal").await?;
    ensure!(cluster.server_node("alice").await? == bob_node, "alice's server does not run where her home moved");
    ensure!(alice_api.get_file("alice", "kept.bin").await? == kept, "alice's file did not move with her home");

    // The admin turns the TLS front door on: the same stack deployed again with JHUB_TLS=files. nginx
    // takes the hub node's ports (its port 80 only redirects), the certificate and key come as a swarm
    // config and secret; alice's server, started before, still runs and answers through nginx.
    tls_front_door(cluster, artifacts, &password, &kept).await
}

async fn doctor_sees_every_node(cluster: &Cluster) -> Result<()> {
    let env_file = Cluster::env_file();
    let env_arg = env_file.to_string_lossy().into_owned();
    let manager_host = Cluster::manager_host();
    let doctor = || cases::xtask(&["doctor", "--swarm", "--env-file", &env_arg], &[("DOCKER_HOST", manager_host.as_str())]);
    let (ready, output) = doctor()?;
    ensure!(ready && output.contains("every node reaches it"), "doctor --swarm on the fresh cluster:\n{output}");
    let cut_off = contract::cluster_node_name(3);
    let rule = ["OUTPUT", "-p", "tcp", "--dport", "5000", "-j", "REJECT"];
    let iptables = |action: &'static str| {
        let mut argv = vec!["iptables", action];
        argv.extend(rule);
        argv
    };
    let (code, said) = docker::exec(&cluster.host, &cut_off, &iptables("-I"), None).await?;
    ensure!(code == 0, "cutting {cut_off} off the registry failed: {said}");
    let outcome = doctor();
    let (code, said) = docker::exec(&cluster.host, &cut_off, &iptables("-D"), None).await?;
    ensure!(code == 0, "giving {cut_off} the registry back failed: {said}");
    let (ready, output) = outcome?;
    ensure!(
        !ready && output.contains(&format!("node {cut_off} cannot read")),
        "doctor --swarm with {cut_off} cut off the registry should name it:\n{output}"
    );
    progress!(
        "doctor --swarm names a node cut off the registry: {}",
        output.lines().find(|line| line.contains("cannot read")).unwrap_or_default()
    );
    Ok(())
}

async fn user_reach(cluster: &Cluster, (user, node): (&str, &str), (other, other_node): (&str, &str)) -> Result<()> {
    let engine = cluster.node(cluster.index_of(node)?).await?;
    let container = docker::running_user_container(&engine, &cluster.stack, user).await?;
    let other_engine = cluster.node(cluster.index_of(other_node)?).await?;
    let other_container = docker::running_user_container(&other_engine, &cluster.stack, other).await?;
    let other_ip = other_container
        .network_settings
        .and_then(|settings| settings.networks)
        .and_then(|networks| networks.into_values().find_map(|network| network.ip_address.filter(|address| !address.is_empty())))
        .with_context(|| format!("{other}'s server has no address"))?;
    let manager = cluster.node_address(1).await?;
    let mut targets = vec![format!("{manager}:5000"), format!("{manager}:2377")];
    for index in 1..=cluster.nodes {
        let address = cluster.node_address(index).await?;
        targets.extend([7946, 2375, 2376].map(|port| format!("{address}:{port}")));
    }
    let mut argv = vec!["python3", "-c", probes::REACH_PROBE, other, &other_ip];
    argv.extend(targets.iter().map(String::as_str));
    let (code, output) = docker::exec(&engine, container.id.as_deref().unwrap_or_default(), &argv, None).await?;
    ensure!(code == 0, "the probe failed in {user}'s container: {output}");
    let seen: serde_json::Value = serde_json::from_str(output.trim().lines().last().unwrap_or_default())?;
    progress!("from {user}'s server on {node}: {seen}");
    let problems = probes::reach_problems(&seen);
    ensure!(problems.is_empty(), "{user}'s server on a swarm reaches too much: {}", problems.join("; "));
    Ok(())
}

async fn backup_and_restore(cluster: &Cluster, artifacts: &Artifacts, users: &[(&str, &Api, &str)], kept: &[u8]) -> Result<()> {
    let env_file = Cluster::env_file();
    let env_arg = env_file.to_string_lossy().into_owned();
    let settings = jhub_docker::settings::Settings::load(&env_file)?;
    let manager_host = Cluster::manager_host();
    let docker_host = [("DOCKER_HOST", manager_host.as_str())];
    let dir = artifacts.dir.join("swarm-backup");
    let dir_arg = dir.to_string_lossy().into_owned();
    let (saved, output) = cases::xtask(&["backup", &dir_arg, "--swarm", "--env-file", &env_arg], &docker_host)?;
    ensure!(saved, "backup --swarm failed:\n{output}");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    for (user, _, node) in users {
        let recorded = manifest["files"].as_array().into_iter().flatten().any(|file| file["user"] == *user && file["node"] == *node);
        ensure!(recorded, "the backup's manifest does not record {user}'s home on {node}: {manifest}");
    }
    progress!("backup --swarm: {}", output.lines().rev().find(|line| line.starts_with("backed up")).unwrap_or("(no summary)"));

    // The loss: the stack removed, every node's volumes of it deleted, the pins gone.
    let (removed, output) = cases::xtask(&["down", "--swarm", "--env-file", &env_arg], &docker_host)?;
    ensure!(removed, "down --swarm failed:\n{output}");
    for index in 1..=cluster.nodes {
        cluster.clear_stack_containers(index).await?;
        let node = cluster.node(index).await?;
        let volumes = node.list_volumes(None::<bollard::query_parameters::ListVolumesOptions>).await?.volumes.unwrap_or_default();
        let ours = |name: &str| name == contract::data_volume_name(&cluster.stack) || name.starts_with(&settings.user_volume_prefix);
        for volume in volumes.iter().filter(|volume| ours(&volume.name)) {
            node.remove_volume(&volume.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await?;
        }
    }
    for (user, _, _) in users {
        cluster.unpin_home(user).await?;
    }

    let (restored, output) = cases::xtask(&["restore", &dir_arg, "--swarm", "--env-file", &env_arg], &docker_host)?;
    ensure!(restored, "restore --swarm failed:\n{output}");
    for (user, _, node) in users {
        ensure!(cluster.home_node(user).await?.as_deref() == Some(*node), "the restore did not pin {user}'s home to {node}");
    }
    cluster.deploy(&env_file)?;
    for (user, api, node) in users {
        api.spawn(user, "minimal").await?;
        let running = cluster.server_node(user).await?;
        ensure!(running == *node, "after the restore {user}'s server runs on {running}, the home went back to {node}");
    }
    let alice = users.iter().find(|(user, _, _)| *user == "alice").context("alice is one of the users")?;
    ensure!(alice.1.get_file("alice", "kept.bin").await? == kept, "alice's file is not the same after the restore");
    progress!("restore --swarm: both homes back on their nodes, pinned, servers there");
    Ok(())
}

async fn tls_front_door(cluster: &Cluster, artifacts: &Artifacts, alice_password: &str, kept: &[u8]) -> Result<()> {
    let mut front = Front::make(&artifacts.dir, false)?;
    front.https_port = cluster.https_port;
    // nginx's port 80 is published where the proxy's port was.
    front.http_port = cluster.port;
    // The test cluster opens signup (OPEN_SIGNUP=true); this deploy leaves it at its default, which on a
    // swarm (published on every address of the hub's node) is the admin's approval.
    let cluster_env: String = std::fs::read_to_string(Cluster::env_file())?
        .lines()
        .filter(|line| !line.starts_with("OPEN_SIGNUP="))
        .map(|line| format!("{line}\n"))
        .collect();
    let env_file = artifacts.dir.join("cluster-tls.env");
    let tls_settings = format!(
        "{cluster_env}JHUB_TLS=files\nJHUB_TLS_CERT={}\nJHUB_TLS_KEY={}\n",
        front.files.server_cert().display(),
        front.files.server_key().display()
    );
    std::fs::write(&env_file, tls_settings)?;
    let deployed = std::time::Instant::now();
    cluster.deploy(&env_file)?;
    progress!("redeployed with TLS in {:.1} s", deployed.elapsed().as_secs_f64());
    tls::redirects_to_https(&front).await?;
    tls::tls_versions(&front)?;
    let https = TlsCluster { front: &front };
    let driver = Chromedriver::start(&artifacts.dir.join("chromedriver-tls.log")).await?.with_args(front.chromium_args());
    let browser = driver.session("alice-tls").await?;
    let outcome = async {
        // The attack: a stranger who reaches the hub's node signs up and logs in. With the default,
        // the signup waits for the admin and the login is refused.
        let stranger = driver.session("mallory").await?;
        let password = cases::fresh_password("Stranger");
        let signed_up = hub::sign_up(&stranger, &https, "mallory", &password).await?;
        let refused = hub::submit_login(&stranger, &https, "mallory", &password).await?;
        let _ = stranger.close().await;
        ensure!(
            signed_up.class == "alert-info" && refused.as_deref().is_some_and(|error| error.contains("not been authorized")),
            "a stranger's signup on the swarm gave ({}) {} and the login said {refused:?}: signup is open by default",
            signed_up.class,
            signed_up.message
        );
        progress!("swarm signup by default: {} / login: {}", signed_up.message, refused.unwrap_or_default());
        hub::log_in(&browser, &https, "alice", alice_password).await?;
        tls::hub_cookies_are_secure(&browser).await?;
        browser.goto(&https.url("/user/alice/lab")).await?;
        lab::wait_ready(&browser, &https, "alice", wait::SPAWN).await?;
        // Her workspace reopens the notebook of her earlier session, which asks for its kernel.
        lab::settle_restored_notebooks(&browser).await?;
        let digest: String = sha2::Sha256::digest(kept).iter().map(|byte| format!("{byte:02x}")).collect();
        let code = "import hashlib; print(hashlib.sha256(open('kept.bin', 'rb').read()).hexdigest())";
        lab::run_in_new_notebook(&browser, code, &digest).await
    }
    .await;
    if outcome.is_err() {
        browser.save_state(&artifacts.dir, "alice-tls").await;
    }
    let _ = browser.close().await;
    outcome
}

/// Stops the hub's container on the manager and waits until a new one answers through the proxy.
async fn restart_hub(cluster: &Cluster) -> Result<()> {
    let filters = std::collections::HashMap::from([("label", vec!["com.docker.swarm.service.name=jhub_hub"])]);
    let containers = cluster
        .manager
        .list_containers(Some(bollard::query_parameters::ListContainersOptionsBuilder::default().filters(&filters).build()))
        .await?;
    let old = containers.first().and_then(|container| container.id.clone()).context("no running hub container on the manager")?;
    cluster.manager.stop_container(&old, None::<bollard::query_parameters::StopContainerOptions>).await?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let health = jhub_harness::stack::HubAddress::url(cluster, "/hub/health");
    wait::until("a new hub container to answer", wait::APP, || async {
        let containers = cluster
            .manager
            .list_containers(Some(bollard::query_parameters::ListContainersOptionsBuilder::default().filters(&filters).build()))
            .await?;
        let new = containers.iter().any(|container| container.id.as_deref() != Some(old.as_str()));
        let healthy = client.get(&health).send().await.is_ok_and(|response| response.status().is_success());
        Ok((new && healthy).then_some(()))
    })
    .await
}

async fn wait_service_gone(cluster: &Cluster, user: &str) -> Result<()> {
    let service = cluster.user_service(user);
    wait::until(&format!("the service {service} to be removed"), Duration::from_secs(60), || async {
        Ok(cluster.manager.inspect_service(&service, None).await.is_err().then_some(()))
    })
    .await
}
