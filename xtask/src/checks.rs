//! Smoke checks: after a build, the image is run and must do what its folder's `checks.toml` promises
//! (commands that exit 0, optionally printing an expected text), and report its component versions.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use serde::Deserialize;

use crate::engine;
use crate::ui::UserError;

const CHECK_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    #[serde(default)]
    check: Vec<Check>,
    versions: Option<VersionsCommand>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    name: String,
    argv: Vec<String>,
    stdout_contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionsCommand {
    argv: Vec<String>,
}

impl Checks {
    /// Reads `<folder>/checks.toml`; an image without one has no checks. Also returns the file's hash.
    pub fn load(image_name: &str, folder: &Path) -> Result<(Checks, String), UserError> {
        let path = folder.join("checks.toml");
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Checks::default(), String::new())),
            Err(err) => {
                return Err(UserError::new(
                    format!("image `{image_name}`: cannot read checks.toml: {err}"),
                    "check the file's permissions",
                ));
            }
        };
        let hash = crate::context::sha256_hex(&text);
        let checks: Checks = toml::from_str(&String::from_utf8_lossy(&text)).map_err(|err| {
            UserError::new(
                format!("image `{image_name}`: checks.toml is not valid: {}", err.to_string().lines().next().unwrap_or_default()),
                "each [[check]] has name, argv and optionally stdout_contains; [versions] has argv",
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
    pub async fn run(&self, docker: &Docker, image_name: &str, image: &str, mut on_check: impl FnMut(&str)) -> anyhow::Result<()> {
        for check in &self.check {
            on_check(&check.name);
            let output = engine::run_in_container(docker, image, &check.argv, CHECK_TIMEOUT).await?;
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

    /// Runs the `[versions]` command and parses its `key=value` lines.
    pub async fn versions(&self, docker: &Docker, image_name: &str, image: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let Some(command) = &self.versions else { return Ok(BTreeMap::new()) };
        let output = engine::run_in_container(docker, image, &command.argv, CHECK_TIMEOUT).await?;
        if output.exit_code != 0 {
            return Err(UserError::new(
                format!("image `{image_name}`: the [versions] command exited with {}: {}", output.exit_code, output.stderr.trim()),
                format!("run it yourself: docker run --rm --entrypoint {} {image} {}", command.argv[0], shell_words(&command.argv[1..])),
            )
            .into());
        }
        Ok(parse_versions(&output.stdout))
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
