//! Named steps: each is timed, and a failing one is reported with its name, its user and the URL that
//! user's browser was on, after its artifacts were saved.

use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Result, anyhow};

use crate::artifacts::Artifacts;
use crate::browser::{Browser, Chromedriver};
use crate::preflight::Setup;
use crate::stack::Stack;

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
