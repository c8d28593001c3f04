//! Named steps: each is timed, and a failing one is reported with its name, its user and the URL that
//! user's browser was on, after its artifacts were saved.

use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};

use crate::artifacts::Artifacts;
use crate::browser::{Browser, Chromedriver};
use crate::preflight::{self, Setup};
use crate::stack::Stack;
use crate::{hub, tls};

pub struct Run<'a> {
    pub setup: &'a Setup,
    pub stack: &'a Stack,
    pub artifacts: &'a Artifacts,
    browsers: Mutex<Vec<Browser>>,
}

impl<'a> Run<'a> {
    pub fn new(setup: &'a Setup, stack: &'a Stack, artifacts: &'a Artifacts) -> Run<'a> {
        Run { setup, stack, artifacts, browsers: Mutex::new(Vec::new()) }
    }

    /// A fresh browser session for `user`, whose state is saved when a step fails.
    pub async fn session(&self, driver: &Chromedriver, user: &str) -> Result<Browser> {
        let browser = driver.session(user).await?;
        self.browsers.lock().expect("not poisoned").push(browser.clone());
        Ok(browser)
    }

    /// Runs step `name` on behalf of `user`; on failure saves the artifacts and names step, user and URL.
    pub async fn step<T>(&self, name: &str, user: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        progress!("step {name} ({user}): started");
        let started = Instant::now();
        match work.await {
            Ok(value) => {
                progress!("step {name} ({user}): passed in {:.1} s", started.elapsed().as_secs_f64());
                Ok(value)
            }
            Err(err) => {
                let browsers = self.browsers.lock().expect("not poisoned").clone();
                let url = match browsers.iter().find(|browser| browser.user == user) {
                    Some(browser) => browser.url().await.unwrap_or_else(|err| format!("<no URL: {err}>")),
                    None => self.stack.url("/"),
                };
                self.artifacts.capture(name, &browsers, &self.setup.docker, &self.stack.project).await;
                Err(anyhow!(
                    "step `{name}` failed for user `{user}` at {url} after {:.1} s: {err:#}\nartifacts: {}",
                    started.elapsed().as_secs_f64(),
                    self.artifacts.dir.display()
                ))
            }
        }
    }
}

/// A test's failure as the harness prints it: the message and its causes, without the backtrace anyhow
/// adds under RUST_BACKTRACE=1 (the step name, user and URL say where it failed).
pub struct Failure(pub anyhow::Error);

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Failure {
        Failure(err)
    }
}

/// How a scenario's stack is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// Plain HTTP from the proxy's published port.
    Http,
    /// Through nginx with a fresh CA; every user's server on the hub's origin.
    Https,
    /// Through nginx, the hub at `https://hub.localhost:<port>` and each user's server at
    /// `https://<user>.hub.localhost:<port>` (JHUB_SUBDOMAINS).
    HttpsSubdomains,
}

/// What every scenario starts from: the preflight's findings, the test's artifacts folder, a stack of its
/// own with `settings` (behind nginx with a fresh CA unless `door` is plain HTTP), and a chromedriver
/// whose Chromium trusts that stack's server key only.
pub async fn start_scenario(test: &str, settings: &[(&str, &str)], door: Door) -> Result<(Setup, Artifacts, Stack, Chromedriver)> {
    start_scenario_of(preflight::check().await?, test, settings, door).await
}

/// `start_scenario` with the hub offering the checkout's catalog as `edit` rewrites its text (a course's
/// groups added): the edited catalog goes through the catalog's own validation and the view `cargo xtask
/// up` writes, and `Setup::catalog` is the edited one, so the steps expect what the hub offers.
pub async fn start_scenario_with_catalog(
    test: &str,
    settings: &[(&str, &str)],
    door: Door,
    edit: impl FnOnce(String) -> String,
) -> Result<(Setup, Artifacts, Stack, Chromedriver)> {
    let mut setup = preflight::check().await?;
    let path = jhub_docker::catalog_path(&setup.root);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    setup.catalog =
        jhub_docker::catalog::Catalog::parse(&edit(text)).map_err(|err| anyhow!("the test's edit of {}: {err}", path.display()))?;
    start_scenario_of(setup, test, settings, door).await
}

/// The catalog `text` with `lines` (TOML: more fields of the entry, then maybe more tables) added at the end of
/// the [[image]] entry named `image`: where its fields end, at the blank line before the next entry.
pub fn append_to_image(text: &str, image: &str, lines: &str) -> String {
    let entry = text.find(&format!("\nname = \"{image}\"\n")).unwrap_or_else(|| panic!("the catalog has no image `{image}`"));
    let end = text[entry + 1..].find("\n\n").map_or(text.trim_end_matches('\n').len(), |blank| entry + 1 + blank);
    format!("{}\n{}{}", &text[..end], lines.trim_end_matches('\n'), &text[end..])
}

async fn start_scenario_of(
    setup: Setup,
    test: &str,
    settings: &[(&str, &str)],
    door: Door,
) -> Result<(Setup, Artifacts, Stack, Chromedriver)> {
    let artifacts = Artifacts::for_test(&setup.root, test)?;
    let front = match door {
        Door::Http => None,
        Door::Https => Some(tls::Front::make(&artifacts.dir, false)?),
        Door::HttpsSubdomains => Some(tls::Front::make(&artifacts.dir, true)?),
    };
    let chromium_args = front.as_ref().map(tls::Front::chromium_args).unwrap_or_default();
    let stack = Stack::start_with(&setup, settings, &artifacts.dir, front).await?;
    let driver = Chromedriver::start(&artifacts.dir.join("chromedriver.log")).await?.with_args(chromium_args);
    Ok((setup, artifacts, stack, driver))
}

/// What the spawn form shows for the catalog image `image` (its display name).
pub fn display_name(setup: &Setup, image: &str) -> Result<String> {
    let entry = setup.catalog.get(image).ok_or_else(|| anyhow!("the catalog has no image `{image}`"))?;
    let single_user = entry.single_user.as_ref().ok_or_else(|| anyhow!("catalog image `{image}` is not single-user"))?;
    Ok(single_user.display_name.clone())
}

/// From the hub's home page with no server running: Start My Server, then `image` from the dropdown.
/// Returns when the form was submitted (the spawn clock starts there).
pub async fn start_image(run: &Run<'_>, browser: &Browser, image: &str) -> Result<Instant> {
    hub::start_from_home(browser, run.stack).await?;
    hub::choose_and_start(browser, "image", &display_name(run.setup, image)?).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_go_at_the_end_of_the_named_image_entry() {
        let text = "[[image]]\nname = \"a\"\nhome = \"/a\"\n\n[[image]]\nname = \"b\"\nhome = \"/b\"\n";
        let edited = super::append_to_image(text, "a", "groups = [\"g\"]\n\n[[group]]\nname = \"g\"\n");
        assert_eq!(
            edited,
            "[[image]]\nname = \"a\"\nhome = \"/a\"\ngroups = [\"g\"]\n\n[[group]]\nname = \"g\"\n\n[[image]]\nname = \"b\"\nhome = \"/b\"\n"
        );
        assert_eq!(super::append_to_image(text, "b", "x = 1"), format!("{text}x = 1\n"), "the last entry too");
    }
}
