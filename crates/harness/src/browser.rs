//! Headless Chromium driven through chromedriver (fantoccini): one chromedriver child per test, one fresh
//! browser session (own profile, own cookies) per user, and the few page operations the scenario needs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use jhub_docker::host::{chromedriver_program, chromium_binary};
use serde_json::{Value, json};

use crate::wait;

/// The Chromium flags proven on this machine kind (FACTS "Browser"): headless as root, and quiet on a
/// closed network (without the background-networking flags Chromium keeps dialling out).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
];

/// A chromedriver child process in its own process group, with a scratch folder for browser profiles.
/// Dropping it kills the whole group (chromedriver and every Chromium it started) and removes the folder.
pub struct Chromedriver {
    child: Child,
    url: String,
    profiles: PathBuf,
    sessions: AtomicU32,
    /// Flags added to CHROMIUM_FLAGS for every session (the HTTPS test's key pin).
    extra_args: Vec<String>,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits until it answers `/status`; its log goes to `log_file`.
    pub async fn start(log_file: &Path) -> Result<Chromedriver> {
        let port = crate::stack::free_port()?;
        let log = std::fs::File::create(log_file).with_context(|| format!("cannot create {}", log_file.display()))?;
        let mut command = Command::new(chromedriver_program());
        command.arg(format!("--port={port}")).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|err| {
            anyhow!("cannot start {}: {err}\nhint: apt-get install -y chromium chromium-driver", chromedriver_program().display())
        })?;
        let profiles = std::env::temp_dir().join(format!("jhub-acceptance-browser-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profiles)?;
        let driver =
            Chromedriver { child, url: format!("http://127.0.0.1:{port}"), profiles, sessions: AtomicU32::new(0), extra_args: Vec::new() };
        let status_url = format!("{}/status", driver.url);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        wait::until("chromedriver to answer /status", Duration::from_secs(20), || async {
            let response = http.get(&status_url).send().await?;
            Ok(response.status().is_success().then_some(()))
        })
        .await?;
        Ok(driver)
    }

    /// Adds Chromium flags to every session opened from now on.
    pub fn with_args(mut self, args: Vec<String>) -> Chromedriver {
        self.extra_args.extend(args);
        self
    }

    /// Opens a fresh browser session for `user`: its own profile folder, so no cookie is shared.
    pub async fn session(&self, user: &str) -> Result<Browser> {
        let number = self.sessions.fetch_add(1, Ordering::SeqCst);
        let profile = self.profiles.join(format!("{number}-{user}"));
        std::fs::create_dir_all(&profile)?;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| flag.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(self.extra_args.iter().cloned());
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_string(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".to_string(), json!({ "binary": chromium_binary().display().to_string(), "args": args }));
        // Keep the page's console messages, so a failed step can save them (`Browser::console_log`).
        capabilities.insert("goog:loggingPrefs".to_string(), json!({ "browser": "ALL" }));
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .map_err(|err| anyhow!("cannot open a Chromium session through chromedriver: {err}\nhint: check that chromium and chromium-driver have the same version (`chromium --version`, `chromedriver --version`)"))?;
        Ok(Browser { user: user.to_string(), client, console: Arc::new(Mutex::new(String::new())) })
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // A negative pid addresses the process group: chromedriver and the browsers it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profiles);
    }
}

/// One user's browser session.
#[derive(Clone)]
pub struct Browser {
    pub user: String,
    pub client: Client,
    /// Every console line read from chromedriver so far (reading drains chromedriver's buffer).
    console: Arc<Mutex<String>>,
}

impl Browser {
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await.with_context(|| format!("cannot open {url}"))
    }

    /// Opens `url` as `goto` does, and reloads it (at most three times, saying so) while Chromium shows
    /// its network error page instead: a container that started or stopped a moment before is a network
    /// change to Chromium, which can abort this navigation (see `arrive_at`). For pages a GET may load again.
    pub async fn open(&self, url: &str) -> Result<()> {
        self.goto(url).await?;
        for _ in 0..3 {
            let Some(code) = self.network_error().await? else { return Ok(()) };
            progress!("{url} did not load ({code}, Chromium's error page); loading it again");
            self.goto(url).await?;
        }
        Ok(())
    }

    pub async fn url(&self) -> Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the current page and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// The first element matching `css` that is displayed, waiting up to `timeout` for one.
    pub async fn visible(&self, css: &str, timeout: Duration) -> Result<Element> {
        wait::until(&format!("`{css}` to be visible"), timeout, || async {
            for element in self.client.find_all(Locator::Css(css)).await? {
                if element.is_displayed().await.unwrap_or(false) {
                    return Ok(Some(element));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Whether some element matching `css` is displayed right now.
    pub async fn is_visible(&self, css: &str) -> Result<bool> {
        for element in self.client.find_all(Locator::Css(css)).await? {
            if element.is_displayed().await.unwrap_or(false) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Waits until no element matches `css`.
    pub async fn gone(&self, css: &str, timeout: Duration) -> Result<()> {
        wait::until(&format!("`{css}` to be gone"), timeout, || async {
            Ok(self.client.find_all(Locator::Css(css)).await?.is_empty().then_some(()))
        })
        .await
    }

    /// Clicks the first visible element matching `css`, retrying while it is covered or re-rendered.
    pub async fn click(&self, css: &str, timeout: Duration) -> Result<()> {
        wait::until(&format!("`{css}` to be clickable"), timeout, || async {
            for element in self.client.find_all(Locator::Css(css)).await? {
                if element.is_displayed().await.unwrap_or(false) {
                    element.click().await?;
                    return Ok(Some(()));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Types `text` into the visible field `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let field = self.visible(css, wait::DEFAULT).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    /// Types `text` on the keyboard into whatever has the focus (for inputs WebDriver deems not
    /// interactable, such as xterm's hidden textarea). Special keys are `fantoccini::key::Key` chars.
    pub async fn type_keys(&self, text: &str) -> Result<()> {
        let mut keys = KeyActions::new("keyboard".to_string());
        for value in text.chars() {
            keys = keys.then(KeyAction::Down { value }).then(KeyAction::Up { value });
        }
        self.client.perform_actions(keys).await?;
        self.client.release_actions().await?;
        Ok(())
    }

    /// The trimmed text content of every element matching `css`, in document order.
    pub async fn texts(&self, css: &str) -> Result<Vec<String>> {
        let value =
            self.js("return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent.trim());", vec![json!(css)]).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Waits until the page's path starts with `prefix`, returning the full URL.
    pub async fn path_starts_with(&self, prefix: &str, timeout: Duration) -> Result<String> {
        wait::until(&format!("the page's path to start with {prefix}"), timeout, || async {
            let url = self.client.current_url().await?;
            Ok(url.path().starts_with(prefix).then(|| url.to_string()))
        })
        .await
    }

    /// Waits until the page's whole URL starts with `prefix` (scheme, host and port included), returning it.
    pub async fn url_starts_with(&self, prefix: &str, timeout: Duration) -> Result<String> {
        wait::until(&format!("the page's URL to start with {prefix}"), timeout, || async {
            let url = self.client.current_url().await?.to_string();
            Ok(url.starts_with(prefix).then_some(url))
        })
        .await
    }

    /// Waits until the page's URL starts with `prefix`, as `url_starts_with`, reloading the page (at most
    /// three times, saying so) while it is Chromium's own network error page. A spawn's last redirect can
    /// land there: the engine adding the new container's interface is a network change to Chromium, which
    /// aborts the navigation in flight (`ERR_NETWORK_CHANGED`) and leaves its error page under the URL it
    /// was loading, for good. A person reloads. On timeout the error says what the page shows.
    pub async fn arrive_at(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let reloads = std::cell::Cell::new(0u32);
        let arrived = wait::until(&format!("the page's URL to start with {prefix}"), timeout, || async {
            let url = self.client.current_url().await?.to_string();
            if url.starts_with(prefix) {
                return Ok(Some(url));
            }
            if reloads.get() < 3
                && let Some(code) = self.network_error().await?
            {
                reloads.set(reloads.get() + 1);
                progress!("{url} shows Chromium's network error page ({code}); reloading it");
                self.client.refresh().await?;
            }
            Ok(None)
        })
        .await;
        match arrived {
            Ok(url) => Ok(url),
            Err(err) => Err(anyhow!("{err:#}; the page shows: {}", self.page_summary().await)),
        }
    }

    /// `Some(error code)` when the page is Chromium's own error page for a load that failed on the network
    /// (its `#main-frame-error`, `body.neterror`), with the code it shows (e.g. `ERR_NETWORK_CHANGED`).
    pub async fn network_error(&self) -> Result<Option<String>> {
        let code = self
            .js(
                r#"
                const page = document.getElementById('main-frame-error')
                    || (document.body && document.body.classList.contains('neterror') ? document.body : null);
                if (!page) { return null; }
                const code = document.querySelector('.error-code');
                return code && code.textContent.trim() ? code.textContent.trim() : 'no error code shown';
                "#,
                Vec::new(),
            )
            .await?;
        Ok(code.as_str().map(str::to_owned))
    }

    /// The page's URL, title and the start of its text, for a failure message; best effort.
    pub async fn page_summary(&self) -> String {
        let summary = self
            .js(
                "return `${location.href} - title ${JSON.stringify(document.title)}: ${(document.body ? document.body.innerText : '').replace(/\\s+/g, ' ').trim().slice(0, 300)}`;",
                Vec::new(),
            )
            .await;
        match summary {
            Ok(summary) => summary.as_str().unwrap_or_default().to_owned(),
            Err(err) => format!("(cannot read the page: {err:#})"),
        }
    }

    pub async fn windows(&self) -> Result<Vec<WindowHandle>> {
        Ok(self.client.windows().await?)
    }

    /// The console messages (and failed loads) Chromium logged for this session since the last call, one a
    /// line, through chromedriver's log endpoint; they are also kept for `save_state`.
    pub async fn new_console_lines(&self) -> Result<String> {
        let entries = self.client.issue_cmd(BrowserLog).await?;
        let entries = entries.as_array().cloned().unwrap_or_default();
        let lines: String = entries
            .iter()
            .map(|entry| {
                let level = entry["level"].as_str().unwrap_or_default();
                let message = entry["message"].as_str().unwrap_or_default();
                format!("{} {level} {message}\n", entry["timestamp"])
            })
            .collect();
        self.console.lock().expect("not poisoned").push_str(&lines);
        Ok(lines)
    }

    /// Saves a screenshot and the page source of every tab as `<prefix>[-tabN].png/.html`, and the console
    /// log as `<prefix>-console.log`; best effort.
    pub async fn save_state(&self, folder: &Path, prefix: &str) -> Vec<PathBuf> {
        let mut saved = Vec::new();
        let current = self.client.window().await.ok();
        let windows = self.client.windows().await.unwrap_or_default();
        for (index, window) in windows.iter().enumerate() {
            let name = if windows.len() > 1 { format!("{prefix}-tab{index}") } else { prefix.to_string() };
            if self.client.switch_to_window(window.clone()).await.is_err() {
                continue;
            }
            if let Ok(png) = self.client.screenshot().await {
                let path = folder.join(format!("{name}.png"));
                if std::fs::write(&path, png).is_ok() {
                    saved.push(path);
                }
            }
            if let Ok(html) = self.client.source().await {
                let url = self.client.current_url().await.map(|url| url.to_string()).unwrap_or_default();
                let path = folder.join(format!("{name}.html"));
                if std::fs::write(&path, format!("<!-- {url} -->\n{html}")).is_ok() {
                    saved.push(path);
                }
            }
        }
        if let Some(window) = current {
            let _ = self.client.switch_to_window(window).await;
        }
        let _ = self.new_console_lines().await;
        let log = self.console.lock().expect("not poisoned").clone();
        let path = folder.join(format!("{prefix}-console.log"));
        if std::fs::write(&path, log).is_ok() {
            saved.push(path);
        }
        saved
    }

    pub async fn close(self) -> Result<()> {
        self.client.close().await.map_err(|err| anyhow!("cannot close the browser session of {}: {err}", self.user))
    }
}

/// chromedriver's `POST /session/{id}/se/log` for the `browser` log (its extension to WebDriver; the
/// session asked for it with `goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}
