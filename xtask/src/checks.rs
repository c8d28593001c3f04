//! Smoke checks: after a build, the image is run and must do what its folder's `checks.toml` promises
//! (commands that exit 0, optionally printing an expected text), what every ancestor's `checks.toml`
//! promises (what the base promises holds in every image built from it, as docker-stacks does), and what
//! the pipeline promises of every image of its kind (built-in checks), and report its component versions.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use serde::Deserialize;

use jhub_docker::catalog::{Catalog, ImageEntry, Recipe};

use crate::context::BUILD_CA_NAME;
use crate::engine;
use crate::ui::UserError;

const CHECK_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    #[serde(default)]
    check: Vec<Check>,
    versions: Option<VersionsCommand>,
    /// Inherited checks this image is excused from, each with its reason.
    #[serde(default)]
    waive: Vec<Waiver>,
}

/// An inherited check an image may not pass, named as the build names it (`<image>: <check>`), and why:
/// a test fixture's package that needs what the base keeps out. Every other inherited check still runs,
/// and a waiver that names no inherited check fails the build (a renamed check is not silently skipped).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Waiver {
    check: String,
    because: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    name: String,
    argv: Vec<String>,
    stdout_contains: Option<String>,
    /// Run on every image built from or using this one, not on this one: an intermediate image's promise
    /// about what its children install (the shared Jupyter layer's settings need Jupyter to be read).
    #[serde(default)]
    children_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionsCommand {
    argv: Vec<String>,
}

/// What the pipeline promises of every image of a kind, so no image folder has to remember to check it:
/// a Dockerfile image keeps the build CA out of its final stage (file and variables), and a single-user
/// image runs as a non-root user whose home, where the user's volume is mounted, belongs to uid 1000.
fn builtin_checks(image: &ImageEntry) -> Vec<Check> {
    let mut checks = Vec::new();
    if matches!(image.recipe, Recipe::Dockerfile { .. }) {
        checks.push(Check {
            name: "the build CA stays in the build stage (no file, no CA variables)".to_string(),
            argv: vec![
                "sh".to_string(),
                "-c".to_string(),
                format!(
                    "for v in SSL_CERT_FILE PIP_CERT REQUESTS_CA_BUNDLE NODE_EXTRA_CA_CERTS npm_config_cafile; do \
                     if printenv $v >/dev/null; then echo \"$v is set\"; exit 1; fi; done; \
                     f=$(find / -xdev -name {BUILD_CA_NAME} 2>/dev/null | head -n 1); \
                     if [ -n \"$f\" ]; then echo \"found $f\"; exit 1; fi"
                ),
            ],
            stdout_contains: None,
            children_only: false,
        });
    }
    if let Some(single_user) = &image.single_user {
        let home = &single_user.home;
        checks.push(Check {
            name: format!("runs as uid 1000 with HOME={home}, owned by uid 1000 and writable"),
            argv: vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("test \"$(id -u)\" = 1000 && test \"$HOME\" = {home} && test \"$(stat -c %u {home})\" = 1000 && test -w {home}"),
            ],
            stdout_contains: None,
            children_only: false,
        });
    }
    checks
}

impl Checks {
    /// Everything `image` must pass: its folder's checks (but those `children_only`), then those of every
    /// image it builds on, FROM or `uses`, and theirs (nearest first, each once, named `<image>: <check>`),
    /// then the built-in ones. The `[versions]` command is the image's own. The returned hash covers every
    /// `checks.toml` read, so editing any of them reruns the checks.
    pub fn for_image(catalog: &Catalog, image: &ImageEntry, root: &Path) -> Result<(Checks, String), UserError> {
        let (mut checks, own_hash) = Checks::load_image(image, root)?;
        checks.check.retain(|check| !check.children_only);
        let mut chain_hashes = vec![format!("{}={own_hash}", image.name)];
        let mut pending: std::collections::VecDeque<&str> = image.inputs().collect();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(name) = pending.pop_front() {
            let Some(entry) = catalog.get(name).filter(|_| seen.insert(name)) else { continue };
            let (inherited, hash) = Checks::load_image(entry, root)?;
            checks
                .check
                .extend(inherited.check.into_iter().map(|check| Check { name: format!("{}: {}", entry.name, check.name), ..check }));
            chain_hashes.push(format!("{}={hash}", entry.name));
            pending.extend(entry.inputs());
        }
        for waiver in std::mem::take(&mut checks.waive) {
            let before = checks.check.len();
            checks.check.retain(|check| check.name != waiver.check);
            if checks.check.len() == before || waiver.because.trim().is_empty() {
                return Err(UserError::new(
                    format!(
                        "image `{}`: checks.toml waives `{}`, which is no check it inherits (or gives no reason)",
                        image.name, waiver.check
                    ),
                    "name an inherited check as the build log names it (`<image>: <check>`) and say why in `because`",
                ));
            }
        }
        let hash = if chain_hashes.len() == 1 { own_hash } else { crate::context::sha256_hex(chain_hashes.join("\n").as_bytes()) };
        Ok((checks.with_builtin(image), hash))
    }

    /// Adds the pipeline's built-in checks for `image`'s kind to those of its folder.
    fn with_builtin(mut self, image: &ImageEntry) -> Checks {
        self.check.extend(builtin_checks(image));
        self
    }

    /// The checks of `image`'s folder: `checks.toml`, plus `checks.<flavour>.toml` when the image is built
    /// from `Dockerfile.<flavour>` (the flavours of a template share one folder and some of its checks).
    /// Also returns a hash of the files read.
    fn load_image(image: &ImageEntry, root: &Path) -> Result<(Checks, String), UserError> {
        let folder = image.folder_path(root);
        let (mut checks, hash) = Checks::load(&image.name, &folder, "checks.toml")?;
        let Some(flavour) = image.flavour() else { return Ok((checks, hash)) };
        let (own, own_hash) = Checks::load(&image.name, &folder, &format!("checks.{flavour}.toml"))?;
        checks.check.extend(own.check);
        if own.versions.is_some() {
            checks.versions = own.versions;
        }
        Ok((checks, crate::context::sha256_hex(format!("{hash}\n{own_hash}").as_bytes())))
    }

    /// Reads `<folder>/<file>`; a missing file means no checks. Also returns the file's hash.
    fn load(image_name: &str, folder: &Path, file: &str) -> Result<(Checks, String), UserError> {
        let path = folder.join(file);
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Checks::default(), String::new())),
            Err(err) => {
                return Err(UserError::new(format!("image `{image_name}`: cannot read {file}: {err}"), "check the file's permissions"));
            }
        };
        let hash = crate::context::sha256_hex(&text);
        let checks: Checks = toml::from_str(&String::from_utf8_lossy(&text)).map_err(|err| {
            UserError::new(
                format!("image `{image_name}`: {file} is not valid: {}", err.to_string().lines().next().unwrap_or_default()),
                "each [[check]] has name, argv and optionally stdout_contains and children_only; [versions] has argv; \
                 each [[waive]] has check and because",
            )
        })?;
        for check in &checks.check {
            if check.argv.is_empty() {
                return Err(UserError::new(
                    format!("image `{image_name}`: check `{}` has an empty argv", check.name),
                    "argv is the command to run, as a list",
                ));
            }
        }
        if checks.versions.as_ref().is_some_and(|versions| versions.argv.is_empty()) {
            return Err(UserError::new(
                format!("image `{image_name}`: [versions] has an empty argv"),
                "argv is the command to run, as a list",
            ));
        }
        Ok((checks, hash))
    }

    pub fn count(&self) -> usize {
        self.check.len()
    }

    /// Runs every check against `image`; the first failure names the check, its command and its output.
    pub async fn run(
        &self,
        docker: &Docker,
        image_name: &str,
        image: &str,
        log: &Path,
        mut on_check: impl FnMut(&str),
    ) -> anyhow::Result<()> {
        for check in &self.check {
            on_check(&check.name);
            let output = engine::run_in_container(docker, image, &check.argv, CHECK_TIMEOUT)
                .await
                .map_err(|err| engine::engine_error(image_name, &format!("running check `{}`", check.name), err))?;
            append_to_log(
                log,
                &format!(
                    "check: {}\n$ {}\n{}{}exit {}\n",
                    check.name,
                    shell_words(&check.argv),
                    output.stdout,
                    output.stderr,
                    output.exit_code
                ),
            );
            let missing_text = check.stdout_contains.as_ref().filter(|expected| !output.stdout.contains(expected.as_str()));
            if output.exit_code != 0 || missing_text.is_some() {
                let why = match missing_text {
                    Some(expected) if output.exit_code == 0 => format!("its output lacks `{expected}`"),
                    _ => format!("it exited with {}", output.exit_code),
                };
                let printed = format!("{}{}", output.stdout, output.stderr);
                let tail: Vec<&str> = printed.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
                return Err(UserError::new(
                    format!(
                        "image `{image_name}`: check `{}` failed: {why}\n  command: {}\n  output:\n    {}",
                        check.name,
                        shell_words(&check.argv),
                        tail.join("\n    ")
                    ),
                    format!("run it yourself: docker run --rm --entrypoint {} {image} {}", check.argv[0], shell_words(&check.argv[1..])),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Runs the `[versions]` command and parses its `key=value` lines. Every image has one: the lock
    /// records what each image carries, and an image that reports nothing is a mistake, not a choice.
    pub async fn versions(&self, docker: &Docker, image_name: &str, image: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let Some(command) = &self.versions else {
            return Err(UserError::new(
                format!("image `{image_name}`: checks.toml has no [versions] command"),
                "add `[versions]` with an argv that prints key=value lines (python=3.13.5, jupyterhub=5.5.4, …)",
            )
            .into());
        };
        let output = engine::run_in_container(docker, image, &command.argv, CHECK_TIMEOUT)
            .await
            .map_err(|err| engine::engine_error(image_name, "reading versions", err))?;
        if output.exit_code != 0 {
            return Err(UserError::new(
                format!("image `{image_name}`: the [versions] command exited with {}: {}", output.exit_code, output.stderr.trim()),
                format!("run it yourself: docker run --rm --entrypoint {} {image} {}", command.argv[0], shell_words(&command.argv[1..])),
            )
            .into());
        }
        let versions = parse_versions(&output.stdout);
        if versions.is_empty() {
            return Err(UserError::new(
                format!("image `{image_name}`: the [versions] command printed no key=value line"),
                format!("run it yourself: docker run --rm --entrypoint {} {image} {}", command.argv[0], shell_words(&command.argv[1..])),
            )
            .into());
        }
        Ok(versions)
    }
}

/// Appends to the image's build log; a log that cannot be written must not fail the build.
fn append_to_log(log: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = file.write_all(text.as_bytes());
    }
}

fn parse_versions(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .filter(|(key, value)| !key.is_empty() && !value.is_empty())
        .collect()
}

/// A command as a person would type it, quoting words with spaces or quotes.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            if word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c)) {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_runs_its_ancestors_checks_and_their_edits_change_the_hash() {
        let root = std::env::temp_dir().join(format!("jhub-checks-chain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for folder in ["base", "mid", "leaf"] {
            std::fs::create_dir_all(root.join("images").join(folder)).unwrap();
        }
        let write = |folder: &str, text: &str| std::fs::write(root.join("images").join(folder).join("checks.toml"), text).unwrap();
        write("base", "[[check]]\nname = \"no docs\"\nargv = [\"true\"]\n[versions]\nargv = [\"echo\", \"debian=13\"]\n");
        write("leaf", "[[check]]\nname = \"lab\"\nargv = [\"true\"]\n[versions]\nargv = [\"echo\", \"lab=4\"]\n");
        let catalog = Catalog::parse(
            "[[image]]\nname = \"base\"\nbootstrap = \"mmdebstrap\"\n\
             [[image]]\nname = \"mid\"\nparent = \"base\"\n\
             [[image]]\nname = \"leaf\"\nparent = \"mid\"\n",
        )
        .unwrap();
        let leaf = catalog.get("leaf").unwrap();
        let (checks, hash) = Checks::for_image(&catalog, leaf, &root).unwrap();
        let names: Vec<&str> = checks.check.iter().map(|check| check.name.as_str()).collect();
        assert_eq!(names[..2], ["lab", "base: no docs"]);
        assert_eq!(checks.versions.as_ref().unwrap().argv, ["echo", "lab=4"], "versions are the image's own");
        write("base", "[[check]]\nname = \"no docs, no man pages\"\nargv = [\"true\"]\n");
        let (_, edited) = Checks::for_image(&catalog, leaf, &root).unwrap();
        assert_ne!(hash, edited, "an ancestor's edit reruns the child's checks");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_image_runs_the_checks_of_what_it_uses_and_a_layer_skips_its_children_only_checks() {
        let root = std::env::temp_dir().join(format!("jhub-checks-uses-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for folder in ["base", "layer", "tools", "lab"] {
            std::fs::create_dir_all(root.join("images").join(folder)).unwrap();
        }
        let write = |folder: &str, text: &str| std::fs::write(root.join("images").join(folder).join("checks.toml"), text).unwrap();
        write("base", "[[check]]\nname = \"debian\"\nargv = [\"true\"]\n");
        write(
            "layer",
            "[[check]]\nname = \"settings\"\nargv = [\"true\"]\n[[check]]\nname = \"lab offline\"\nargv = [\"true\"]\nchildren_only = true\n",
        );
        write("tools", "[[check]]\nname = \"editor\"\nargv = [\"true\"]\n");
        write("lab", "[[check]]\nname = \"lab\"\nargv = [\"true\"]\n");
        let catalog = Catalog::parse(
            "[[image]]\nname = \"base\"\nbootstrap = \"mmdebstrap\"\n\
             [[image]]\nname = \"layer\"\nparent = \"base\"\n\
             [[image]]\nname = \"tools\"\nparent = \"base\"\n\
             [[image]]\nname = \"lab\"\nparent = \"tools\"\nuses = [\"layer\"]\n",
        )
        .unwrap();
        let names = |image: &str| -> Vec<String> {
            let (checks, _) = Checks::for_image(&catalog, catalog.get(image).unwrap(), &root).unwrap();
            checks.check.iter().filter(|check| check.argv == ["true"]).map(|check| check.name.clone()).collect()
        };
        assert_eq!(names("layer"), ["settings", "base: debian"], "the layer skips its children_only check");
        assert_eq!(names("lab"), ["lab", "tools: editor", "layer: settings", "layer: lab offline", "base: debian"], "base once");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_image_may_waive_an_inherited_check_with_a_reason_but_not_a_missing_one() {
        let root = std::env::temp_dir().join(format!("jhub-checks-waive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for folder in ["base", "fixture"] {
            std::fs::create_dir_all(root.join("images").join(folder)).unwrap();
        }
        let write = |folder: &str, text: &str| std::fs::write(root.join("images").join(folder).join("checks.toml"), text).unwrap();
        write("base", "[[check]]\nname = \"no perl\"\nargv = [\"true\"]\n[[check]]\nname = \"slim\"\nargv = [\"true\"]\n");
        let catalog =
            Catalog::parse("[[image]]\nname = \"base\"\nbootstrap = \"mmdebstrap\"\n[[image]]\nname = \"fixture\"\nparent = \"base\"\n")
                .unwrap();
        let fixture = catalog.get("fixture").unwrap();
        write("fixture", "[[waive]]\ncheck = \"base: no perl\"\nbecause = \"slapd links libperl\"\n");
        let (checks, _) = Checks::for_image(&catalog, fixture, &root).unwrap();
        let names: Vec<&str> = checks.check.iter().filter(|check| check.argv == ["true"]).map(|check| check.name.as_str()).collect();
        assert_eq!(names, ["base: slim"]);
        for bad in ["check = \"base: no python\"\nbecause = \"x\"", "check = \"base: no perl\"\nbecause = \" \""] {
            write("fixture", &format!("[[waive]]\n{bad}\n"));
            let err = Checks::for_image(&catalog, fixture, &root).unwrap_err();
            assert!(err.message.contains("which is no check it inherits"), "{}", err.message);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn versions_are_key_value_lines() {
        let parsed = parse_versions("python=3.13.5\nnoise\njupyterhub = 5.5.4\nempty=\n");
        assert_eq!(parsed, BTreeMap::from([("jupyterhub".into(), "5.5.4".into()), ("python".into(), "3.13.5".into())]));
    }

    #[test]
    fn commands_are_quoted_for_a_shell() {
        let argv = ["python3".to_string(), "-c".to_string(), "print('hi')".to_string()];
        assert_eq!(shell_words(&argv), r#"python3 -c 'print('\''hi'\'')'"#);
    }
}
