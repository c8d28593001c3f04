//! Logging in with the institution's accounts (AUTH_STRATEGY=ldap) against a real directory: the test
//! directory image (images/ldap, Debian's slapd seeded with people and groups), on the stack's network as
//! `directory`, over StartTLS on a certificate of the test's own CA, which the hub trusts through the LDAP
//! folder (LDAP_CA_FILE). In headless Chromium: a member logs in and is offered her course's image (the
//! directory's group became her JupyterHub group); a wrong password is refused; an account outside
//! LDAP_ALLOWED_GROUPS is turned away with a message saying so; a member of LDAP_ADMIN_GROUPS is an admin; a
//! group membership changed in the directory counts at the next login; a directory whose certificate the
//! CA did not sign is refused (a man in the middle); with the directory down the login page says it cannot
//! be reached while a user already logged in keeps working, and logins work again once it is back.
//!
//! `ldaps_with_a_search_account` does the other way in: ldaps, people found by a search account whose
//! password is a file of the LDAP folder, and names built to widen the search refused.
//!
//! Run with `cargo test --test ldap` after `cargo xtask build-images`. Artifacts of a failed step land in
//! `target/acceptance-artifacts/<test>/`.

// The shared test support (crates/harness): the stack, the hub client, the browser, the engine helpers.
use jhub_harness::{browser, cases, docker, hub, progress, stack, steps, wait};
use steps::{Door, Failure, Run};

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, ensure};
use bollard::Docker;
use jhub_docker::certs::{self, Name, SelfSignedFiles};
use jhub_docker::contract;

use crate::browser::Browser;
use crate::stack::Stack;

/// The directory's name on the stack's network, which its certificate carries.
const DIRECTORY: &str = "directory";
const SUFFIX: &str = "dc=jhub,dc=test";
/// The test directory's published fixture passwords (images/ldap/seed.ldif).
const ALICE: (&str, &str) = ("alice", "alice-in-ldap");
const BOB: (&str, &str) = ("bob", "bob-in-ldap");
const CAROL: (&str, &str) = ("carol", "carol-in-ldap");
const DAVE: (&str, &str) = ("dave", "dave-in-ldap");
/// The course group the catalog edit keeps the minimal image to; alice is in it, bob joins it.
const COURSE: &str = "physics-101";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_logins() -> Result<(), Failure> {
    let _one = cases::one_stack_at_a_time().await;
    Ok(scenario().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_with_a_search_account() -> Result<(), Failure> {
    let _one = cases::one_stack_at_a_time().await;
    Ok(search_scenario().await?)
}

/// What a test gives the hub and the directory: the LDAP folder (the hub's view of stack/ldap/, holding
/// the CA), and the directory's certificate for `directory`, made by the test's own CA.
struct Folders {
    root: std::path::PathBuf,
    tls: SelfSignedFiles,
    names: BTreeSet<Name>,
    ldap_dir: std::path::PathBuf,
}

impl Folders {
    fn make(test: &str) -> Result<Folders> {
        let root = jhub_docker::repo_root().join("target").join(format!("{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let tls = SelfSignedFiles { dir: root.join("directory-tls") };
        let names: BTreeSet<Name> = certs::server_names(None, &[Name::Dns(DIRECTORY.to_string())]);
        certs::ensure_self_signed(&tls, &names, time::OffsetDateTime::now_utc()).map_err(|err| anyhow!("{err}"))?;
        let ldap_dir = root.join("hub");
        std::fs::create_dir_all(&ldap_dir)?;
        std::fs::copy(tls.ca_cert(), ldap_dir.join("ca.pem"))?;
        Ok(Folders { root, tls, names, ldap_dir })
    }
}

impl Drop for Folders {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The same directory over ldaps (TLS from the first byte, port 636), people found by a search account
/// whose password the hub reads from a file of the LDAP folder (never from the settings): alice logs in
/// through the search; a wrong password, a name the directory does not have, and names built to widen the
/// search (`*`, a filter) are refused.
async fn search_scenario() -> Result<()> {
    let test = "ldaps_with_a_search_account";
    let folders = Folders::make(test)?;
    let password_file = folders.ldap_dir.join("search-password");
    jhub_docker::write_atomically(&password_file, b"jhub-ldap-admin\n", 0o600)?;
    let ldap_dir_text = folders.ldap_dir.display().to_string();
    let (people, groups, manager) = (format!("ou=people,{SUFFIX}"), format!("ou=groups,{SUFFIX}"), format!("cn=admin,{SUFFIX}"));
    let settings = [
        ("AUTH_STRATEGY", "ldap"),
        ("LDAP_SERVER", DIRECTORY),
        ("LDAP_TLS", "ldaps"),
        ("LDAP_CA_FILE", "ca.pem"),
        ("LDAP_USER_SEARCH_BASE", people.as_str()),
        ("LDAP_USER_ATTRIBUTE", "uid"),
        ("LDAP_SEARCH_USER", manager.as_str()),
        ("LDAP_SEARCH_PASSWORD_FILE", "search-password"),
        ("LDAP_GROUP_SEARCH_BASE", groups.as_str()),
        ("LDAP_ALLOWED_GROUPS", "jhub-users"),
        ("JHUB_LDAP_DIR", ldap_dir_text.as_str()),
        ("IDLE_CULL_TIMEOUT", "0"),
    ];
    let (setup, artifacts, stack, driver) = steps::start_scenario(test, &settings, Door::Http).await?;
    let _directory = Directory::create(&setup.docker, setup.image_id("ldap"), &stack, &folders.tls).await?;
    let run = Run::new(&setup, &stack, &artifacts);
    let alice = run.session(&driver, "alice").await?;
    let mallory = run.session(&driver, "mallory").await?;
    run.step("s1.found-by-the-search-over-ldaps", "alice", hub::log_in(&alice, &stack, ALICE.0, ALICE.1)).await?;
    run.step("s2.refused", "mallory", async {
        for (name, password, what) in [
            (BOB.0, "not-bobs-password", "a wrong password"),
            ("zed", "zed-in-ldap", "a name the directory does not have"),
            ("*", ALICE.1, "`*`, which would match everyone"),
            ("alice)(uid=*", ALICE.1, "a name that closes the search filter"),
        ] {
            let refused = hub::submit_login(&mallory, &stack, name, password).await?;
            ensure!(refused.is_some(), "{what} ({name:?}) logged in");
            progress!("{what}: refused ({})", refused.unwrap_or_default());
        }
        Ok(())
    })
    .await?;
    let _ = alice.close().await;
    let _ = mallory.close().await;
    Ok(())
}

async fn scenario() -> Result<()> {
    let started = Instant::now();
    let test = "ldap_logins";
    let folders = Folders::make(test)?;
    let (tls, names, ldap_dir) = (&folders.tls, &folders.names, &folders.ldap_dir);
    let ldap_dir_text = ldap_dir.display().to_string();
    let bind_template = format!("uid={{username}},ou=people,{SUFFIX}");
    let group_base = format!("ou=groups,{SUFFIX}");
    let settings = [
        ("AUTH_STRATEGY", "ldap"),
        ("LDAP_SERVER", DIRECTORY),
        ("LDAP_TLS", "starttls"),
        ("LDAP_CA_FILE", "ca.pem"),
        ("LDAP_BIND_DN_TEMPLATE", bind_template.as_str()),
        ("LDAP_GROUP_SEARCH_BASE", group_base.as_str()),
        ("LDAP_ALLOWED_GROUPS", "jhub-users"),
        ("LDAP_ADMIN_GROUPS", "jhub-admins"),
        ("JHUB_LDAP_DIR", ldap_dir_text.as_str()),
        ("IDLE_CULL_TIMEOUT", "0"),
    ];
    let course = format!("groups = [\"{COURSE}\"]\n\n[[group]]\nname = \"{COURSE}\"\n");
    let (setup, artifacts, stack, driver) =
        steps::start_scenario_with_catalog(test, &settings, Door::Http, |text| steps::append_to_image(&text, "minimal", &course)).await?;
    let directory = Directory::create(&setup.docker, setup.image_id("ldap"), &stack, tls).await?;
    let run = Run::new(&setup, &stack, &artifacts);
    let course_image = steps::display_name(&setup, "minimal")?;
    let alice = run.session(&driver, "alice").await?;
    let bob = run.session(&driver, "bob").await?;
    let carol = run.session(&driver, "carol").await?;
    let dave = run.session(&driver, "dave").await?;

    run.step("l1.member-logs-in-with-her-course", "alice", async {
        hub::log_in(&alice, &stack, ALICE.0, ALICE.1).await?;
        ensure!(
            offered(&alice, &stack).await?.contains(&course_image),
            "alice (in {COURSE} in the directory) is not offered {course_image}"
        );
        ensure!(!is_admin_page(&alice, &stack).await?, "alice (in no admin group) reaches the admin panel");
        Ok(())
    })
    .await?;
    run.step("l2.wrong-password-refused", "bob", async {
        let refused = hub::submit_login(&bob, &stack, BOB.0, "not-bobs-password").await?;
        ensure!(refused.is_some(), "bob logged in with a wrong password");
        progress!("a wrong password: {}", refused.unwrap_or_default());
        Ok(())
    })
    .await?;
    run.step("l3.outside-the-allowed-groups", "dave", async {
        let refused = hub::submit_login(&dave, &stack, DAVE.0, DAVE.1).await?.context("dave (in no allowed group) logged in")?;
        ensure!(refused.contains("none of the directory groups allowed"), "dave was refused with {refused:?}, not told why");
        progress!("dave: {refused}");
        Ok(())
    })
    .await?;
    run.step("l4.admin-from-the-admin-group", "carol", async {
        hub::log_in(&carol, &stack, CAROL.0, CAROL.1).await?;
        ensure!(is_admin_page(&carol, &stack).await?, "carol (in jhub-admins) does not reach the admin panel");
        Ok(())
    })
    .await?;
    run.step("l5.membership-changed-in-the-directory", "bob", async {
        hub::log_in(&bob, &stack, BOB.0, BOB.1).await?;
        ensure!(!offered(&bob, &stack).await?.contains(&course_image), "bob (not in {COURSE}) is offered {course_image}");
        directory.add_member(COURSE, "bob").await?;
        bob.open(&stack.url("/hub/logout")).await?;
        hub::log_in(&bob, &stack, BOB.0, BOB.1).await?;
        ensure!(
            offered(&bob, &stack).await?.contains(&course_image),
            "bob, added to {COURSE} in the directory, is not offered {course_image} at his next login"
        );
        Ok(())
    })
    .await?;
    run.step("l6.a-directory-the-ca-did-not-sign-is-refused", "carol", async {
        // A man in the middle: the hub now trusts another CA, as if the directory's certificate were forged.
        let other = SelfSignedFiles { dir: folders.root.join("other-ca") };
        certs::ensure_self_signed(&other, names, time::OffsetDateTime::now_utc()).map_err(|err| anyhow!("{err}"))?;
        std::fs::copy(other.ca_cert(), ldap_dir.join("ca.pem"))?;
        carol.open(&stack.url("/hub/logout")).await?;
        let refused = hub::submit_login(&carol, &stack, CAROL.0, CAROL.1)
            .await?
            .context("carol logged in through a certificate the CA did not sign")?;
        ensure!(refused.contains("cannot be reached"), "an unverified directory gave {refused:?}");
        std::fs::copy(tls.ca_cert(), ldap_dir.join("ca.pem"))?;
        hub::log_in(&carol, &stack, CAROL.0, CAROL.1).await
    })
    .await?;
    run.step("l7.directory-down", "carol", async {
        directory.stop().await?;
        carol.open(&stack.url("/hub/logout")).await?;
        let refused = hub::submit_login(&carol, &stack, CAROL.0, CAROL.1).await?.context("carol logged in with the directory down")?;
        ensure!(refused.contains("cannot be reached"), "with the directory down a login gave {refused:?}");
        progress!("directory down: {refused}");
        alice.open(&stack.url("/hub/home")).await?;
        alice.visible("#start", wait::DEFAULT).await.context("alice, logged in before the directory went down, lost her home page")?;
        directory.start().await?;
        hub::log_in(&carol, &stack, CAROL.0, CAROL.1).await
    })
    .await?;
    progress!("{test}: {:.1} s", started.elapsed().as_secs_f64());
    for browser in [alice, bob, carol, dave] {
        let _ = browser.close().await;
    }
    Ok(())
}

/// The image choices the spawn form offers the logged-in user.
async fn offered(browser: &Browser, stack: &Stack) -> Result<Vec<String>> {
    browser.open(&stack.url("/hub/spawn")).await?;
    hub::wait_spawn_form(browser).await?;
    Ok(hub::spawn_choices(browser, "image").await?.into_iter().map(|choice| choice.text).collect())
}

/// Whether the admin panel loads for the logged-in user (a 403 page otherwise).
async fn is_admin_page(browser: &Browser, stack: &Stack) -> Result<bool> {
    browser.open(&stack.url("/hub/admin")).await?;
    let denied = !browser.texts("div.error h1").await?.is_empty();
    Ok(!denied && browser.client.current_url().await?.path().starts_with("/hub/admin"))
}

/// The test directory's container on the stack's network.
struct Directory {
    docker: Docker,
    id: String,
}

impl Directory {
    /// Creates and starts images/ldap on `stack`'s network as `directory`, with the certificate of `tls` at /certs.
    async fn create(docker: &Docker, image: &str, stack: &Stack, tls: &SelfSignedFiles) -> Result<Directory> {
        let certs = tls.dir.join("directory-certs");
        std::fs::create_dir_all(&certs)?;
        std::fs::copy(tls.server_cert(), certs.join("server.pem"))?;
        std::fs::copy(tls.server_key(), certs.join("server-key.pem"))?;
        std::fs::copy(tls.ca_cert(), certs.join("ca.pem"))?;
        let endpoint = bollard::models::EndpointSettings { aliases: Some(vec![DIRECTORY.to_string()]), ..Default::default() };
        let config = bollard::models::ContainerCreateBody {
            image: Some(image.to_string()),
            labels: Some(
                [
                    (contract::STACK_LABEL.to_string(), stack.project.clone()),
                    (contract::PURPOSE_LABEL.to_string(), "test-directory".to_string()),
                ]
                .into(),
            ),
            host_config: Some(bollard::models::HostConfig {
                binds: Some(vec![format!("{}:/certs:ro", certs.display())]),
                network_mode: Some(stack.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(bollard::models::NetworkingConfig {
                endpoints_config: Some([(stack.network.clone(), endpoint)].into()),
            }),
            ..Default::default()
        };
        let options =
            bollard::query_parameters::CreateContainerOptionsBuilder::default().name(&format!("{}-directory", stack.project)).build();
        let id = docker.create_container(Some(options), config).await.context("cannot create the test directory")?.id;
        let directory = Directory { docker: docker.clone(), id };
        directory.start().await?;
        Ok(directory)
    }

    /// Starts the container and waits until slapd answers over StartTLS on its certificate.
    async fn start(&self) -> Result<()> {
        self.docker.start_container(&self.id, None::<bollard::query_parameters::StartContainerOptions>).await?;
        wait::until("the test directory to answer", wait::DEFAULT, || async {
            let (code, _) = self.ldap(&["ldapsearch", "-x", "-ZZ", "-H", "ldap://directory", "-b", SUFFIX, "-s", "base", "dn"]).await?;
            Ok((code == 0).then_some(()))
        })
        .await
        .map_err(|err| anyhow!("{err:#}; its log: {}", tail_of(&self.id)))
    }

    async fn stop(&self) -> Result<()> {
        let options = bollard::query_parameters::StopContainerOptionsBuilder::default().t(5).build();
        self.docker.stop_container(&self.id, Some(options)).await.context("cannot stop the test directory")
    }

    /// Adds `user` to the group `group`, as the directory's manager.
    async fn add_member(&self, group: &str, user: &str) -> Result<()> {
        let script = format!(
            "printf 'dn: cn={group},ou=groups,{SUFFIX}\\nchangetype: modify\\nadd: member\\nmember: uid={user},ou=people,{SUFFIX}\\n' \
             | ldapmodify -x -H ldapi:/// -D cn=admin,{SUFFIX} -w jhub-ldap-admin"
        );
        let (code, output) = self.ldap(&["sh", "-c", &script]).await?;
        ensure!(code == 0, "adding {user} to {group} in the directory failed ({code}): {output}");
        progress!("the directory: {user} joined {group}");
        Ok(())
    }

    /// Runs `argv` in the directory's container, trusting the test's CA as the hub does.
    async fn ldap(&self, argv: &[&str]) -> Result<(i64, String)> {
        let mut with_ca = vec!["env", "LDAPTLS_CACERT=/certs/ca.pem"];
        with_ca.extend_from_slice(argv);
        docker::exec(&self.docker, &self.id, &with_ca, None).await
    }
}

fn tail_of(id: &str) -> String {
    let lines = docker::cli_lines(&["logs", "--tail", "20", id]);
    lines.join("\n")
}
