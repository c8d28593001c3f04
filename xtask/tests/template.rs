//! The PRD's workflow for a team's own image, end to end through the real engine and a real hub: in a
//! checkout holding the real `base`, `hub` and uv template (`uv-marimo`), `cargo xtask new-image` makes
//! `team-demo` from the template's marimo flavour, a package is added to its `requirements.in`, `lock` pins
//! it, `build-images` builds it, `up` offers it (the hub's view and its spawn page), and a server spawned
//! from it through the hub's REST API imports the package. Everything it starts is removed at the end; the
//! real images it reuses (same inputs, so the same content keys) are kept.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jhub_docker::lock::Lock;
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

/// The test's checkout and stack: removed on drop (stack, volumes, the images the test made, the folder).
struct Checkout {
    root: PathBuf,
    project: String,
    port: u16,
    admin_password: String,
    /// Image ids on the engine before the test: whatever was there is never removed.
    images_before: BTreeSet<String>,
    started: std::time::SystemTime,
    /// PATH for the xtask: `lock` needs uv.
    path: std::ffi::OsString,
}

impl Checkout {
    fn new() -> Checkout {
        let real = real_root();
        let project = format!("jhubtemplate{}", std::process::id());
        let root = std::env::temp_dir().join(format!("jhub-template-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for folder in REAL_FOLDERS {
            copy_folder(&real.join("images").join(folder), &root.join("images").join(folder));
        }
        write(&root, "images/catalog.toml", &catalog_blocks(&std::fs::read_to_string(real.join("images/catalog.toml")).unwrap()));
        // The real lock: its records of base and hub are current when their inputs are, so those are
        // found on the engine and not checked again.
        std::fs::copy(real.join("images.lock"), root.join("images.lock")).unwrap();
        for file in ["docker-compose.yml", "docker-compose.tls.yml"] {
            std::fs::create_dir_all(root.join("stack")).unwrap();
            std::fs::copy(real.join("stack").join(file), root.join("stack").join(file)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let admin_password = format!("template-test-{}", std::process::id());
        // The stack's own names, so it stays apart from a running `jhub` stack and other tests.
        write(
            &root,
            "stack/.env",
            &format!(
                "JHUB_STACK_NAME={project}\nJHUB_NETWORK={project}-net\nJHUB_USER_VOLUME_PREFIX={project}-user-\n\
                 JHUB_HTTP_PORT={port}\nADMIN_PASSWORD={admin_password}\nIDLE_CULL_TIMEOUT=0\n"
            ),
        );
        let images_before = docker_lines(&["images", "-aq", "--no-trunc"]).into_iter().collect();
        let path = std::env::var_os("PATH").unwrap_or_default();
        Checkout { root, project, port, admin_password, images_before, started: std::time::SystemTime::now(), path }
    }

    /// Runs the xtask binary on this checkout as a person would, with none of the shell's stack settings.
    fn xtask(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command.args(args).env("JHUB_REPO_ROOT", &self.root).env("NO_COLOR", "1").stdin(Stdio::null());
        let compose_file = std::fs::read_to_string(self.root.join("stack/docker-compose.yml")).unwrap();
        for variable in jhub_docker::compose::variables_of(&compose_file) {
            command.env_remove(variable);
        }
        for (variable, _) in std::env::vars().filter(|(variable, _)| variable.starts_with("JHUB_") && variable != "JHUB_CA_BUNDLE") {
            command.env_remove(variable);
        }
        let output = command.env("JHUB_REPO_ROOT", &self.root).env("PATH", &self.path).output().expect("the xtask binary runs");
        eprintln!(
            "$ xtask {} ({:.0} s)\n{}{}",
            args.join(" "),
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn lock(&self) -> Lock {
        Lock::parse(&std::fs::read_to_string(self.root.join("images.lock")).unwrap()).expect("a valid lock")
    }

    /// The engine's id for the image the lock's keyed tag names.
    fn locked_image_id(&self, image: &str) -> String {
        let tag = self.lock().image[image].keyed_tag().expect("a keyed tag").to_string();
        docker_lines(&["image", "inspect", "-f", "{{.Id}}", &tag]).pop().unwrap_or_else(|| panic!("the engine has no {tag}"))
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Removes the images this test made: the new image's tags, any catalog image the engine did not have
    /// before (its tags), and the untagged images its builds left (a multi-stage build's build stage) that
    /// are new since the start. An image that existed before the test is never removed.
    fn remove_test_images(&self) {
        let mut tags: Vec<String> = docker_lines(&["images", "--format", "{{.Repository}}:{{.Tag}}", &format!("jhub/{NAME}")]);
        for image in REAL_IMAGES {
            for line in docker_lines(&["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}", &format!("jhub/{image}")]) {
                if let Some((id, tag)) = line.split_once(' ')
                    && !self.images_before.contains(id)
                {
                    tags.push(tag.to_string());
                }
            }
        }
        for tag in &tags {
            let _ = Command::new("docker").args(["image", "rm", tag]).output();
        }
        let started = time_of(self.started);
        for id in docker_lines(&["images", "-q", "--no-trunc", "-f", "dangling=true"]) {
            let created = docker_lines(&["image", "inspect", "-f", "{{.Created}}", &id]).pop().unwrap_or_default();
            if !self.images_before.contains(&id) && created >= started {
                let _ = Command::new("docker").args(["image", "rm", &id]).output();
            }
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        // `down --volumes` removes the user containers (by the stack's label), the hub, the proxy, the
        // network and this stack's volumes.
        let down = self.xtask(&["down", "--volumes"]);
        if !down.status.success() {
            eprintln!("cleanup: `xtask down --volumes` failed");
        }
        let label = format!("label=io.jhub-docker.stack={}", self.project);
        for id in docker_lines(&["ps", "-aq", "--filter", &label]) {
            let _ = Command::new("docker").args(["rm", "-f", "-v", &id]).output();
        }
        for volume in docker_lines(&["volume", "ls", "-q", "--filter", &format!("name={}", self.project)]) {
            if volume.starts_with(&self.project) {
                let _ = Command::new("docker").args(["volume", "rm", "-f", &volume]).output();
            }
        }
        self.remove_test_images();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The `[[image]]` tables of the real catalog for `REAL_IMAGES`, verbatim, without the comments that
/// introduce the tables left out.
fn catalog_blocks(text: &str) -> String {
    let mut blocks = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut flush = |current: &mut Vec<&str>| {
        let block = current.join("\n");
        let named = REAL_IMAGES.iter().any(|name| block.lines().any(|line| line == format!("name = \"{name}\"")));
        if block.starts_with("[[image]]") && named {
            let kept: Vec<&str> = block.lines().filter(|line| !line.starts_with('#')).collect();
            blocks.push(kept.join("\n").trim_end().to_string());
        }
        current.clear();
    };
    for line in text.lines() {
        if line.starts_with("[[") {
            flush(&mut current);
        }
        current.push(line);
    }
    flush(&mut current);
    assert_eq!(blocks.len(), REAL_IMAGES.len(), "the real catalog lists {REAL_IMAGES:?}");
    blocks.join("\n\n") + "\n"
}

/// Copies an image folder as the build context reads it: regular files with their modes, no caches.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            if entry.file_name() != "__pycache__" && entry.file_name() != "node_modules" {
                copy_folder(&entry.path(), &to.join(entry.file_name()));
            }
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
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

fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).filter(|line| !line.is_empty()).collect())
        .unwrap_or_default()
}

/// A time as the engine prints `.Created` (RFC 3339, UTC), for comparing as text.
fn time_of(time: std::time::SystemTime) -> String {
    let seconds = time.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let output = Command::new("date").args(["-u", "-d", &format!("@{seconds}"), "+%Y-%m-%dT%H:%M:%S"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
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

/// The hidden `_xsrf` input of a page's form.
fn xsrf_of(page: &str) -> Option<String> {
    let at = page.find("name=\"_xsrf\"")?;
    let tag = &page[page[..at].rfind('<')?..at + page[at..].find('>')?];
    let value = tag.split("value=\"").nth(1)?;
    Some(value[..value.find('"')?].to_string())
}

/// The admin as a script sees the hub: logs in through NativeAuthenticator's form, reads the spawn page,
/// makes an API token and spawns through the REST API.
struct Admin {
    http: reqwest::Client,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
    base: String,
}

impl Admin {
    async fn log_in(checkout: &Checkout) -> Admin {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let admin = Admin { http, jar, base: checkout.url("") };
        let page = admin.get("/hub/login").await;
        let xsrf = xsrf_of(&page).expect("the login form has an _xsrf input");
        let form = [("username", "admin"), ("password", checkout.admin_password.as_str()), ("_xsrf", xsrf.as_str())];
        let response = admin.http.post(admin.url("/hub/login?next=%2Fhub%2Fhome")).form(&form).send().await.unwrap();
        let location = response.headers().get("location").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
        assert!(response.status().is_redirection() && !location.contains("/hub/login"), "the admin's login was refused");
        admin
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> String {
        let response = self.http.get(self.url(path)).send().await.unwrap_or_else(|err| panic!("GET {path}: {err}"));
        assert!(response.status().is_success(), "GET {path} answered {}", response.status());
        response.text().await.unwrap()
    }

    /// An API token of the admin, made as the hub's token page makes it (the `_xsrf` cookie as header).
    async fn token(&self) -> String {
        use reqwest::cookie::CookieStore;
        self.get("/hub/token").await;
        let cookies = self.jar.cookies(&self.url("/hub/api/").parse().unwrap()).expect("the hub set cookies");
        let cookies = cookies.to_str().unwrap().to_string();
        let xsrf = cookies.split("; ").find_map(|pair| pair.strip_prefix("_xsrf=")).expect("an _xsrf cookie").to_string();
        let response = self
            .http
            .post(self.url("/hub/api/users/admin/tokens"))
            .header("X-XSRFToken", xsrf)
            .json(&json!({"note": "template test", "expires_in": 3600}))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap_or_else(|| panic!("no token: {body}")).to_string()
    }
}

#[test]
fn a_team_image_from_the_template_is_built_offered_and_spawned() {
    let docker = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    assert!(
        docker.is_ok_and(|output| output.status.success()),
        "no Docker engine answers; hint: run `bash ci/setup-host.sh` as root (it installs and starts one)"
    );
    let mut checkout = Checkout::new();
    checkout.path = path_with_uv();

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
    let base_key = checkout.lock().image["base"].content_key.clone();
    let real_base_key =
        Lock::parse(&std::fs::read_to_string(real_root().join("images.lock")).unwrap()).unwrap().image["base"].content_key.clone();
    assert_eq!(base_key, real_base_key, "the test's base is the real base (same content key)");

    // 4. `up` offers it: the hub's view names it with the lock's image id.
    let up = checkout.xtask(&["up"]);
    assert!(up.status.success(), "up failed");
    let image_id = checkout.locked_image_id(NAME);
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
        let admin = Admin::log_in(&checkout).await;
        let spawn_page = admin.get("/hub/spawn").await;
        assert!(spawn_page.contains("team-demo (marimo only)"), "the spawn page's dropdown lists team-demo");

        // 5. A server spawned from it through the REST API imports the package.
        let token = admin.token().await;
        let api = |method: reqwest::Method, path: &str| {
            admin.http.request(method, admin.url(path)).header("Authorization", format!("token {token}"))
        };
        let started = Instant::now();
        let response = api(reqwest::Method::POST, "/hub/api/users/admin/server").json(&json!({"image": NAME})).send().await.unwrap();
        let status = response.status();
        assert!(status.is_success(), "the spawn answered {status}: {}", response.text().await.unwrap_or_default());
        loop {
            let model: Value = api(reqwest::Method::GET, "/hub/api/users/admin").send().await.unwrap().json().await.unwrap();
            if model["servers"][""]["ready"] == json!(true) {
                break;
            }
            assert!(
                model["servers"][""].is_object() || started.elapsed() < Duration::from_secs(10),
                "the server stopped while starting: {model}"
            );
            assert!(started.elapsed() < SPAWN, "the server was not ready within {SPAWN:?}: {model}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("team-demo server ready after {:.1} s", started.elapsed().as_secs_f64());
    });

    let label = format!("label=io.jhub-docker.stack={}", checkout.project);
    let containers = docker_lines(&["ps", "-q", "--filter", &label, "--filter", &format!("label=io.jhub-docker.image={NAME}")]);
    assert_eq!(containers.len(), 1, "one running container of team-demo");
    let container = &containers[0];
    let running_image = docker_lines(&["inspect", "-f", "{{.Image}}", container]).pop().unwrap_or_default();
    assert_eq!(running_image, image_id, "the container runs the lock's build of team-demo");
    let import = Command::new("docker")
        .args(["exec", container, "python", "-c", &format!("import {MODULE}; print({MODULE}.dumps({{'ok': True}}), end='')")])
        .output()
        .unwrap();
    assert!(import.status.success(), "import {MODULE} failed: {}", String::from_utf8_lossy(&import.stderr));
    assert_eq!(String::from_utf8_lossy(&import.stdout), "ok = true\n");
    let user = docker_lines(&["exec", container, "id", "-un"]).pop().unwrap_or_default();
    assert_eq!(user, "ewn", "the server runs as the template's user");
}
