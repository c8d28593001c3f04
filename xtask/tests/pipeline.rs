//! The build pipeline end to end through the real Docker engine and mmdebstrap: a tiny catalog (a
//! bootstrapped base and two children, built side by side) is built, rebuilt as a no-op, built again on an
//! engine without its images (as a newcomer's machine is) without changing the lock, edited, checked with
//! `--locked`, and fed bad input, through the `xtask` binary exactly as a person runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jhub_docker::lock::Lock;

const BASE: &str = "pipeline-test-base";
const CHILD: &str = "pipeline-test-child";
/// A second child of the base: with two images ready at once the pipeline builds them side by side.
const SIBLING: &str = "pipeline-test-sibling";

struct Tree {
    root: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let root = std::env::temp_dir().join(format!("jhub-pipeline-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        write(
            &root,
            "images/catalog.toml",
            &format!(
                "[[image]]\nname = \"{BASE}\"\nfolder = \"base\"\nbootstrap = \"mmdebstrap\"\n\n\
             [[image]]\nname = \"{CHILD}\"\nfolder = \"child\"\nparent = \"{BASE}\"\n\n\
             [[image]]\nname = \"{SIBLING}\"\nfolder = \"sibling\"\nparent = \"{BASE}\"\n"
            ),
        );
        write(
            &root,
            "images/base/base.toml",
            "suite = \"trixie\"\nvariant = \"minbase\"\nmirror = \"http://deb.debian.org/debian\"\npython_version = \"3.13\"\nsource_date_epoch = 1767225600\npackages = []\n",
        );
        write(
            &root,
            "images/base/checks.toml",
            "[[check]]\nname = \"debian_version is there\"\nargv = [\"test\", \"-s\", \"/etc/debian_version\"]\n\n\
             [versions]\nargv = [\"sh\", \"-c\", \"echo debian=$(cat /etc/debian_version)\"]\n",
        );
        write(
            &root,
            "images/child/Dockerfile",
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS build\nCOPY jhub-build-ca.crt /tmp/ca.crt\nRUN test -s /tmp/ca.crt\nFROM ${BASE_IMAGE}\nCOPY hello.txt /hello.txt\n",
        );
        write(&root, "images/child/hello.txt", "hello from the child\n");
        write(&root, "images/sibling/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo sibling > /sibling.txt\n");
        write(
            &root,
            "images/sibling/checks.toml",
            "[[check]]\nname = \"the sibling's file is baked in\"\nargv = [\"cat\", \"/sibling.txt\"]\nstdout_contains = \"sibling\"\n\n\
             [versions]\nargv = [\"sh\", \"-c\", \"echo debian=$(cat /etc/debian_version)\"]\n",
        );
        write(
            &root,
            "images/child/checks.toml",
            "[[check]]\nname = \"hello is baked in\"\nargv = [\"cat\", \"/hello.txt\"]\nstdout_contains = \"hello from the child\"\n\n[[check]]\nname = \"the build CA stays in the build stage\"\nargv = [\"sh\", \"-c\", \"test ! -e /tmp/ca.crt\"]\n\n[versions]\nargv = [\"sh\", \"-c\", \"echo debian=$(cat /etc/debian_version)\"]\n",
        );
        Tree { root }
    }

    fn xtask(&self, args: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("JHUB_REPO_ROOT", &self.root)
            .env("NO_COLOR", "1")
            .output()
            .expect("the xtask binary runs");
        eprintln!("$ xtask {}\n{}{}", args.join(" "), String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        output
    }

    fn lock_text(&self) -> String {
        std::fs::read_to_string(self.root.join("images.lock")).unwrap_or_default()
    }

    fn lock(&self) -> Lock {
        Lock::parse(&self.lock_text()).expect("a valid lock")
    }

    /// The engine's id for the image the lock's keyed tag names.
    fn image_id(&self, image: &str) -> String {
        let tag = self.lock().image[image].keyed_tag().expect("a keyed tag").to_string();
        docker_lines(&["image", "inspect", "-f", "{{.Id}}", &tag]).pop().unwrap_or_else(|| panic!("the engine has no {tag}"))
    }

    fn log(&self, image: &str) -> String {
        std::fs::read_to_string(self.root.join("target/xtask-logs").join(format!("{image}.log"))).unwrap_or_default()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        remove_test_images();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).filter(|line| !line.is_empty()).collect())
        .unwrap_or_default()
}

/// Removes every image the test made: the tagged ones, child first, and the untagged leaves of its builds
/// (a multi-stage build's build stage, a failed build's last step) that stand on the test's base, which
/// would otherwise keep the base alive.
fn remove_test_images() {
    let base_ids = docker_lines(&["images", "-q", "--no-trunc", &format!("jhub/{BASE}")]);
    let child_ids: Vec<String> =
        [CHILD, SIBLING].iter().flat_map(|child| docker_lines(&["images", "-q", "--no-trunc", &format!("jhub/{child}")])).collect();
    let stands_on_test_base = |id: &str| {
        let mut current = id.to_string();
        for _ in 0..200 {
            if base_ids.contains(&current) {
                return true;
            }
            match docker_lines(&["image", "inspect", "-f", "{{.Parent}}", &current]).pop() {
                Some(parent) if !parent.is_empty() => current = parent,
                _ => return false,
            }
        }
        false
    };
    let leaves: Vec<String> =
        docker_lines(&["images", "-q", "--no-trunc", "-f", "dangling=true"]).into_iter().filter(|id| stands_on_test_base(id)).collect();
    for id in child_ids.iter().chain(&leaves).chain(&base_ids) {
        let _ = Command::new("docker").args(["image", "rm", "-f", id]).output();
    }
}

fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The summary table's status column for `image`.
fn status_of(output: &Output, image: &str) -> String {
    let text = stdout(output);
    let row = text
        .lines()
        .find(|line| line.split_whitespace().next() == Some(image))
        .unwrap_or_else(|| panic!("no summary row for {image}:\n{text}"));
    row.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn builds_caches_rebuilds_only_what_changed_and_refuses_bad_input() {
    let docker = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    assert!(
        docker.is_ok_and(|output| output.status.success()),
        "no Docker engine answers; hint: run `bash ci/setup-host.sh` as root (it installs and starts one)"
    );
    remove_test_images();
    let tree = Tree::new();

    let first = tree.xtask(&["build-images"]);
    assert!(first.status.success(), "the first build failed");
    assert_eq!(status_of(&first, BASE), "built");
    assert_eq!(status_of(&first, CHILD), "built");
    assert_eq!(status_of(&first, SIBLING), "built");
    let lock = tree.lock();
    assert!(lock.image.contains_key(SIBLING), "both children of the base are recorded");
    let child = &lock.image[CHILD];
    let child_id = tree.image_id(CHILD);
    assert!(child_id.starts_with("sha256:"));
    let parent_of_child = docker_lines(&["image", "inspect", "-f", "{{.Parent}}", &child_id]);
    assert!(!parent_of_child.is_empty(), "the child stands on a build of this engine");
    assert!(tree.log(CHILD).contains("check: pipeline-test-base: debian_version is there"), "the base's checks run on the child too");
    assert_eq!(child.versions.get("debian").map(|v| v.starts_with("13")), Some(true));
    assert!(child.files.contains_key("hello.txt") && !child.files.contains_key("checks.toml"));
    assert!(!lock.image[BASE].packages.is_empty(), "the base's Debian packages are recorded");
    assert!(lock.image[BASE].versions.contains_key("debian"), "the base's [versions] are recorded");

    let second = tree.xtask(&["build-images"]);
    assert!(second.status.success());
    assert_eq!(status_of(&second, BASE), "cached");
    assert_eq!(status_of(&second, CHILD), "cached");
    assert_eq!(tree.image_id(CHILD), child_id, "a no-op run keeps the image");

    // A newcomer's machine: same checkout, an engine without the images. Everything is built again and
    // the committed lock does not change by a byte (keys depend on inputs, ids are not recorded).
    let committed = tree.lock_text();
    remove_test_images();
    let newcomer = tree.xtask(&["build-images", "--locked"]);
    assert!(newcomer.status.success(), "a cold build against the committed lock passes --locked");
    assert_eq!(status_of(&newcomer, BASE), "built");
    assert_eq!(status_of(&newcomer, CHILD), "built");
    assert_eq!(status_of(&newcomer, SIBLING), "built");
    assert_eq!(tree.lock_text(), committed, "a cold build leaves the committed lock as it was");
    let child_id = tree.image_id(CHILD);

    write(&tree.root, "images/child/hello.txt", "hello from the child, edited\n");
    let locked = tree.xtask(&["build-images", "--locked"]);
    assert!(!locked.status.success());
    assert!(stderr(&locked).contains("images.lock is out of date: pipeline-test-child: hello.txt changed"), "--locked names the drift");
    assert!(stderr(&locked).contains("hint: "));

    let third = tree.xtask(&["build-images"]);
    assert!(third.status.success());
    assert_eq!(status_of(&third, BASE), "cached");
    assert_eq!(status_of(&third, CHILD), "built");
    assert_ne!(tree.image_id(CHILD), child_id);
    assert_ne!(tree.lock().image[CHILD].content_key, child.content_key);
    assert_eq!(tree.lock().image[BASE], lock.image[BASE], "the base's record is untouched");
    assert!(tree.xtask(&["build-images", "--locked"]).status.success(), "--locked passes once the lock is current");

    // A check that fails fails the build, names the check and leaves the lock as it was.
    let before = tree.lock_text();
    write(&tree.root, "images/child/hello.txt", "goodbye\n");
    let failed = tree.xtask(&["build-images", CHILD]);
    assert!(!failed.status.success());
    assert!(
        stderr(&failed)
            .contains("error: image `pipeline-test-child`: check `hello is baked in` failed: its output lacks `hello from the child`")
    );
    assert_eq!(tree.lock_text(), before);

    // A build step that fails names the image and points at the log; the lock is untouched.
    write(&tree.root, "images/child/hello.txt", "hello from the child\n");
    write(&tree.root, "images/child/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN exit 3\n");
    let broken = tree.xtask(&["build-images"]);
    assert!(!broken.status.success());
    assert!(stderr(&broken).contains("error: image `pipeline-test-child`: build failed"), "the failing image is named");
    assert!(stderr(&broken).contains("hint: the full log is"));
    assert_eq!(tree.lock_text(), before);

    let unknown = tree.xtask(&["build-images", "pipeline-test-chld"]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains(
        "error: unknown image `pipeline-test-chld`\nhint: the catalog has: pipeline-test-base, pipeline-test-child, pipeline-test-sibling"
    ));

    std::fs::remove_file(tree.root.join("images/child/Dockerfile")).unwrap();
    let missing = tree.xtask(&["build-images"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("error: image `pipeline-test-child`: images/child/Dockerfile does not exist"));
    assert_eq!(tree.lock_text(), before);
}
