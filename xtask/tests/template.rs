//! The PRD's workflow for a team's own image, end to end through the real engine and a real hub: in a
//! checkout holding the real `base`, `hub` and uv template (`uv-marimo`), `cargo xtask new-image` makes
//! `team-demo` from the template's marimo flavour, a package is added to its `requirements.in`, `lock` pins
//! it, `build-images` builds it, `up` offers it (the hub's view and its spawn page), and a server spawned
//! from it through the hub's REST API imports the package. The checkout, its stack and the hub client are
//! the harness's (`jhub_harness::checkout`, `client`): everything it starts is removed at the end; the
//! real images it reuses (same inputs, so the same content keys) are kept.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use jhub_docker::lock::Lock;
use jhub_harness::checkout::Checkout;
use jhub_harness::client::Session;
use jhub_harness::docker::cli_lines;
use serde_json::{Value, json};

const NAME: &str = "team-demo";
/// A small pure-Python package the real template does not have (newest on PyPI, late 2026).
const PACKAGE: &str = "tomli-w==1.2.0";
const MODULE: &str = "tomli_w";
/// The catalog images of the real checkout the test's checkout holds, with their folders.
const REAL_IMAGES: &[&str] = &["base", "hub", "uv-marimo"];
const REAL_FOLDERS: &[&str] = &["base", "hub", "singleuser-uv"];
/// How long a spawn may take to be ready (a first start compiles nothing; 2 cores shared with others).
const SPAWN: Duration = Duration::from_secs(240);

fn real_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ is inside the checkout").to_path_buf()
}

/// PATH with uv on it: the host's uv when it has one, else uv 0.13.9 installed (hash-checked, from the
/// template's own tools.txt) into a venv of the test's target folder, as README's Build section says.
fn path_with_uv() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if Command::new("uv").arg("--version").output().is_ok_and(|output| output.status.success()) {
        return path;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("uv-venv");
    let uv = venv.join("bin/uv");
    if !uv.is_file() {
        let tools = real_root().join("images/singleuser-uv/tools.txt");
        let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|status| status.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--require-hashes", "--no-deps", "--only-binary=:all:", "-r"])
                .arg(&tools)
                .status()
                .is_ok_and(|status| status.success());
        assert!(made, "uv is not on PATH and installing it into {} failed; hint: pipx install uv==0.13.9", venv.display());
    }
    let mut paths = vec![venv.join("bin")];
    paths.extend(std::env::split_paths(&path));
    std::env::join_paths(paths).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The summary table's status column for `image`.
fn status_of(output: &Output, image: &str) -> String {
    let text = String::from_utf8_lossy(&output.stdout);
    let row = text.lines().find(|line| line.split_whitespace().next() == Some(image)).unwrap_or_else(|| panic!("no row for {image}"));
    row.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn a_team_image_from_the_template_is_built_offered_and_spawned() {
    let docker = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    assert!(
        docker.is_ok_and(|output| output.status.success()),
        "no Docker engine answers; hint: run `bash ci/setup-host.sh` as root (it installs and starts one)"
    );
    let admin_password = format!("template-test-{}", std::process::id());
    let settings = [("ADMIN_PASSWORD", admin_password.as_str()), ("IDLE_CULL_TIMEOUT", "0")];
    let mut checkout = Checkout::new(Path::new(env!("CARGO_BIN_EXE_xtask")), "template", REAL_FOLDERS, REAL_IMAGES, &settings)
        .unwrap_or_else(|err| panic!("cannot make the test's checkout: {err:#}"));
    checkout.set_path(path_with_uv());

    // 1. One command makes the image: the template copied, the catalog entry from the flavour's.
    let made = checkout.xtask(&["new-image", NAME, "--from", "singleuser-uv", "--variant", "marimo"]);
    assert!(made.status.success(), "new-image failed");
    assert!(stderr(&made).contains(&format!("cargo xtask build-images {NAME}")), "new-image names the next steps");
    let again = checkout.xtask(&["new-image", NAME, "--from", "singleuser-uv", "--variant", "marimo"]);
    assert!(stderr(&again).contains(&format!("error: image `{NAME}` is already in images/catalog.toml\nhint: ")));

    // 2. The team adds a package and pins it.
    let requirements = checkout.root.join("images").join(NAME).join("requirements.in");
    let mut text = std::fs::read_to_string(&requirements).unwrap();
    text.push_str(&format!("{PACKAGE}\n"));
    std::fs::write(&requirements, text).unwrap();
    assert!(checkout.xtask(&["lock"]).status.success(), "lock failed");
    let flavour_lock = std::fs::read_to_string(checkout.root.join("images").join(NAME).join("flavours/marimo.txt")).unwrap();
    assert!(flavour_lock.contains(&format!("{PACKAGE} \\\n    --hash=sha256:")), "the marimo flavour's lock pins {PACKAGE} with hashes");
    // 3. It builds on the real base: same inputs as the real checkout, so the base is the engine's.
    let built = checkout.xtask(&["build-images", NAME]);
    assert!(built.status.success(), "build-images {NAME} failed");
    assert_eq!(status_of(&built, NAME), "built");
    let base_key = checkout.lock().expect("a valid lock").image["base"].content_key.clone();
    let real_base_key =
        Lock::parse(&std::fs::read_to_string(real_root().join("images.lock")).unwrap()).unwrap().image["base"].content_key.clone();
    assert_eq!(base_key, real_base_key, "the test's base is the real base (same content key)");

    // 4. `up` offers it: the hub's view names it with the lock's image id.
    let up = checkout.xtask(&["up"]);
    assert!(up.status.success(), "up failed");
    let image_id = checkout.locked_image_id(NAME).unwrap_or_else(|err| panic!("{err:#}"));
    let view: Value = serde_json::from_str(&std::fs::read_to_string(checkout.root.join("stack/hub-view.json")).unwrap()).unwrap();
    let offered = view["images"].as_array().unwrap().iter().find(|image| image["name"] == NAME).expect("the view offers team-demo");
    assert_eq!(offered["image_id"], image_id.as_str());
    assert_eq!(offered["display_name"], "team-demo (marimo only)");
    assert_eq!((offered["home"].as_str(), offered["default_url"].as_str()), (Some("/home/ewn"), Some("/")));

    let locked = checkout.xtask(&["build-images", "--locked"]);
    assert!(locked.status.success(), "the team's checkout passes `build-images --locked` (what CI runs)");
    assert_eq!(status_of(&locked, NAME), "cached");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = Session::new(checkout.stack(), "admin").unwrap();
        admin.must_log_in(&admin_password).await.unwrap_or_else(|err| panic!("the admin's login was refused: {err:#}"));
        let spawn_page = admin.page("/hub/spawn").await.unwrap_or_else(|err| panic!("{err:#}"));
        assert!(spawn_page.contains("team-demo (marimo only)"), "the spawn page's dropdown lists team-demo");

        // 5. A server spawned from it through the REST API imports the package.
        let api = admin.api_token().await.unwrap_or_else(|err| panic!("no API token for the admin: {err:#}"));
        let started = Instant::now();
        api.request_spawn("admin", json!({"image": NAME})).await.unwrap_or_else(|err| panic!("{err:#}"));
        api.wait_started("admin", SPAWN).await.unwrap_or_else(|err| panic!("{err:#}"));
        eprintln!("team-demo server ready after {:.1} s", started.elapsed().as_secs_f64());
    });

    let label = format!("label=io.jhub-docker.stack={}", checkout.stack().project);
    let containers = cli_lines(&["ps", "-q", "--filter", &label, "--filter", &format!("label=io.jhub-docker.image={NAME}")]);
    assert_eq!(containers.len(), 1, "one running container of team-demo");
    let container = &containers[0];
    let running_image = cli_lines(&["inspect", "-f", "{{.Image}}", container]).pop().unwrap_or_default();
    assert_eq!(running_image, image_id, "the container runs the lock's build of team-demo");
    let import = Command::new("docker")
        .args(["exec", container, "python", "-c", &format!("import {MODULE}; print({MODULE}.dumps({{'ok': True}}), end='')")])
        .output()
        .unwrap();
    assert!(import.status.success(), "import {MODULE} failed: {}", String::from_utf8_lossy(&import.stderr));
    assert_eq!(String::from_utf8_lossy(&import.stdout), "ok = true\n");
    let user = cli_lines(&["exec", container, "id", "-un"]).pop().unwrap_or_default();
    assert_eq!(user, "ewn", "the server runs as the template's user");
}
