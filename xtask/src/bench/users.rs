//! A simulated user of the hub, as a browser would be one, on the harness's hub client
//! (`jhub_harness::client::Session`: its own cookie jar, NativeAuthenticator's signup and login forms,
//! pages opened with redirects followed, a kernel's websocket): the REST spawn API, the spawn's progress
//! event stream (or, in `--poll` mode, the user model every 0.2 s), Lab through the hub's OAuth handshake,
//! a kernel started through the server's REST API and `5 * 4` run over its websocket, and the stop. Each
//! phase's failure is one line naming the request, with the user's name as `<u>`.
//!
//! Requests authenticate as the browser does, with the session cookies and the `_xsrf` cookie's value in
//! `X-XSRFToken`, not with an API token: the OAuth handshake Lab's first load triggers, and the cookie
//! checks on every request, are load the hub carries for real users.

use std::time::{Duration, Instant};

use jhub_harness::client::{Session, SpawnEnd};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The longest any single request may take (a spawn request blocks up to the hub's slow_spawn_timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a user waits for a spawn, a stop or a kernel result before counting it as failed.
pub const PATIENCE: Duration = Duration::from_secs(300);
/// How often a `--poll` user (and every user waiting for a stop) asks for the server's state.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// How a user waits for the spawn to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitMode {
    /// Follows `/hub/api/users/<u>/server/progress` (text/event-stream), as the spawn page does.
    Progress,
    /// Asks for `/hub/api/users/<u>` every 0.2 s from the moment of the request, as impatient users do.
    Poll,
}

pub struct User {
    pub name: String,
    password: String,
    session: Session,
}

/// The state of the user's default server in the hub's user model.
#[derive(Debug, PartialEq, Eq)]
enum ServerState {
    Ready,
    Pending(String),
    Absent,
}

/// The first 200 characters of a response body's `message` (JSON errors) or of the body itself.
fn body_message(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body).ok().and_then(|json| json["message"].as_str().map(str::to_string));
    let text = message.unwrap_or_else(|| body.split_whitespace().collect::<Vec<_>>().join(" "));
    text.chars().take(200).collect()
}

/// The text of the first `<div class="alert alert-danger">` of a page, tags removed (every hub page also
/// carries a hidden `ajax-error alert-danger` modal, which is not an alert).
fn danger_alert(page: &str) -> Option<String> {
    let start = page.find("\"alert alert-danger\"")?;
    let after = &page[start..];
    let body = &after[after.find('>')? + 1..];
    let end = body.find("</div>").unwrap_or(body.len());
    let mut text = String::new();
    let mut in_tag = false;
    for c in body[..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

impl User {
    pub fn new(base: &str, name: &str) -> anyhow::Result<User> {
        Ok(User { name: name.to_string(), password: format!("{name}-bench-pw-1"), session: Session::at(base, name, REQUEST_TIMEOUT)? })
    }

    /// A request from the logged-in browser: cookies from the jar, `X-XSRFToken` from the `_xsrf` cookie
    /// for that path.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.session.request(method, path)
    }

    /// Sends `request` (which `what` names in errors): its status and body.
    async fn send(&self, what: &str, request: reqwest::RequestBuilder) -> Result<(StatusCode, String), String> {
        let response = request.send().await.map_err(|err| format!("{what}: {}", request_error(&err)))?;
        let status = response.status();
        let body = response.text().await.map_err(|err| format!("{what}: reading the body: {}", request_error(&err)))?;
        Ok((status, body))
    }

    /// Opens the signup page (which sets `_xsrf`) and posts NativeAuthenticator's signup form.
    pub async fn sign_up(&self) -> Result<(), String> {
        let (status, page) = self.session.post_signup(&self.password).await.map_err(|err| format!("POST /hub/signup: {}", short(&err)))?;
        if !status.is_success() {
            return Err(format!("POST /hub/signup: HTTP {}", status.as_u16()));
        }
        match danger_alert(&page) {
            Some(alert) => Err(format!("POST /hub/signup: {alert}")),
            None => Ok(()),
        }
    }

    /// Opens the login page and posts the login form; following the redirect, the user lands where the
    /// hub sends a browser (the spawn form).
    pub async fn log_in(&self) -> Result<(), String> {
        let login =
            self.session.log_in_at("/hub/login", &self.password).await.map_err(|err| format!("POST /hub/login: {}", short(&err)))?;
        let location =
            login.map_err(|error| format!("POST /hub/login: refused ({})", if error.is_empty() { "no message" } else { &error }))?;
        let landed = self.session.open(&location).await.map_err(|err| format!("POST /hub/login: {}", short(&err)))?;
        if !landed.status.is_success() {
            return Err(format!("POST /hub/login: landed on {} with HTTP {}", landed.path, landed.status.as_u16()));
        }
        Ok(())
    }

    /// `POST /hub/api/users/<u>/server`: `Ok(true)` when the hub answered that the server is ready (201),
    /// `Ok(false)` when it is still starting (202).
    async fn request_spawn(&self, image: &str) -> Result<bool, String> {
        let path = format!("/hub/api/users/{}/server", self.name);
        let (status, body) =
            self.send("POST /hub/api/users/<u>/server", self.request(Method::POST, &path).json(&json!({ "image": image }))).await?;
        match status {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => Ok(false),
            other => Err(format!("POST /hub/api/users/<u>/server: HTTP {}: {}", other.as_u16(), body_message(&body))),
        }
    }

    async fn server_state(&self) -> Result<ServerState, String> {
        let path = format!("/hub/api/users/{}", self.name);
        let (status, body) = self.send("GET /hub/api/users/<u>", self.request(Method::GET, &path)).await?;
        if status != StatusCode::OK {
            return Err(format!("GET /hub/api/users/<u>: HTTP {}: {}", status.as_u16(), body_message(&body)));
        }
        let model: Value = serde_json::from_str(&body).map_err(|err| format!("GET /hub/api/users/<u>: not JSON: {err}"))?;
        let server = &model["servers"][""];
        if server.is_null() {
            return Ok(ServerState::Absent);
        }
        if server["ready"] == json!(true) {
            return Ok(ServerState::Ready);
        }
        Ok(ServerState::Pending(server["pending"].as_str().unwrap_or("none").to_string()))
    }

    /// Requests the spawn of `image` and returns once the server is ready, waiting as `mode` says.
    pub async fn spawn(&self, image: &str, mode: WaitMode) -> Result<(), String> {
        let wait = async {
            match mode {
                WaitMode::Progress => {
                    if self.request_spawn(image).await? {
                        return Ok(());
                    }
                    self.follow_progress().await
                }
                WaitMode::Poll => self.spawn_polling(image).await,
            }
        };
        tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| Err(format!("spawn: not ready after {} s", PATIENCE.as_secs())))
    }

    /// Reads the spawn's progress event stream until its `ready` (or `failed`) event.
    async fn follow_progress(&self) -> Result<(), String> {
        let what = "GET /hub/api/users/<u>/server/progress";
        let progress = self.session.follow_spawn_progress().await.map_err(|err| format!("{what}: {}", short(&err)))?;
        match progress.end {
            SpawnEnd::Ready => Ok(()),
            SpawnEnd::Failed => Err(format!("spawn failed: {}", progress.last_message().chars().take(200).collect::<String>())),
            SpawnEnd::StreamEnded => {
                Err(format!("{what}: the stream ended before the server was ready (last event: {:?})", progress.last_message()))
            }
        }
    }

    /// Requests the spawn and, from that moment, asks for the user model every 0.2 s until it shows the
    /// server ready (or the request answers 201).
    async fn spawn_polling(&self, image: &str) -> Result<(), String> {
        let request = self.request_spawn(image);
        tokio::pin!(request);
        let mut answered = false;
        let mut ticker = tokio::time::interval(POLL_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ready = &mut request, if !answered => {
                    if ready? {
                        return Ok(());
                    }
                    answered = true;
                }
                _ = ticker.tick() => match self.server_state().await? {
                    ServerState::Ready => return Ok(()),
                    // Before the request is answered the hub may not have registered the spawn yet.
                    ServerState::Absent if answered => {
                        return Err("spawn failed: the server went away while starting (the hub's log says why)".to_string());
                    }
                    _ => {}
                },
            }
        }
    }

    /// Opens Lab as the browser does: `/user/<u>/lab`, through the hub's OAuth handshake on first visit.
    pub async fn open_lab(&self) -> Result<(), String> {
        self.open_page("/lab", "/lab").await
    }

    /// Opens an app that runs without Lab (behind jupyter-standaloneproxy) as the browser does:
    /// `/user/<u><default_url>`, through the hub's OAuth handshake on first visit; the proxy starts the app
    /// on this first request, so the phase includes the app's start-up.
    pub async fn open_app(&self, default_url: &str) -> Result<(), String> {
        self.open_page(default_url, "/").await
    }

    /// GETs `/user/<u><path>` following redirects; it must answer 200 at a URL under `/user/<u><under>`.
    async fn open_page(&self, path: &str, under: &str) -> Result<(), String> {
        let url_path = format!("/user/{}{path}", self.name);
        let what = format!("GET /user/<u>{path}");
        let page = self.session.open(&url_path).await.map_err(|err| format!("{what}: {}", short(&err)))?;
        if page.status != StatusCode::OK || !page.path.starts_with(&format!("/user/{}{under}", self.name)) {
            let landed = page.path.replace(&self.name, "<u>");
            return Err(format!("{what}: HTTP {} at {landed}: {}", page.status.as_u16(), body_message(&page.body)));
        }
        Ok(())
    }

    /// Starts a kernel through the server's REST API and runs `5 * 4` over its websocket; checks that the
    /// result is `20`.
    pub async fn run_kernel(&self) -> Result<(), String> {
        let kernels = format!("/user/{}/api/kernels", self.name);
        let (status, body) = self.send("POST /user/<u>/api/kernels", self.request(Method::POST, &kernels).json(&json!({}))).await?;
        if status != StatusCode::CREATED {
            return Err(format!("POST /user/<u>/api/kernels: HTTP {}: {}", status.as_u16(), body_message(&body)));
        }
        let kernel: Value = serde_json::from_str(&body).map_err(|err| format!("POST /user/<u>/api/kernels: not JSON: {err}"))?;
        let id = kernel["id"].as_str().ok_or("POST /user/<u>/api/kernels: no kernel id in the answer")?;
        let what = "websocket /user/<u>/api/kernels/<id>/channels";
        let mut kernel = self.session.connect_kernel(&self.name, id).await.map_err(|err| format!("{what}: {}", short(&err)))?;
        let outcome = kernel.run("5 * 4", PATIENCE).await.map_err(|err| format!("{what}: {}", short(&err)))?;
        if let Some(error) = outcome.error {
            return Err(format!("kernel: {error}"));
        }
        let Some(result) = outcome.result else {
            return Err(if outcome.kernel_lost {
                format!("kernel: no result after {} s (or the kernel died)", PATIENCE.as_secs())
            } else {
                "kernel: `5 * 4` gave no result".to_string()
            });
        };
        // Python prints `20`; the R kernel (r-notebook's only one) `[1] 20`.
        if result != "20" && result != "[1] 20" {
            return Err(format!("kernel: `5 * 4` gave {result:?}"));
        }
        Ok(())
    }

    /// `DELETE /hub/api/users/<u>/server`, then, if the hub answered 202, the user model every 0.2 s until
    /// the server is gone.
    pub async fn stop(&self) -> Result<(), String> {
        let path = format!("/hub/api/users/{}/server", self.name);
        let (status, body) = self.send("DELETE /hub/api/users/<u>/server", self.request(Method::DELETE, &path)).await?;
        match status {
            StatusCode::NO_CONTENT => return Ok(()),
            StatusCode::ACCEPTED => {}
            other => return Err(format!("DELETE /hub/api/users/<u>/server: HTTP {}: {}", other.as_u16(), body_message(&body))),
        }
        let gone = async {
            loop {
                if self.server_state().await? == ServerState::Absent {
                    return Ok(());
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        };
        tokio::time::timeout(PATIENCE, gone)
            .await
            .unwrap_or_else(|_| Err(format!("stop: server still there after {} s", PATIENCE.as_secs())))
    }
}

/// A reqwest error as one line, with its cause (reqwest's own text hides it: "error sending request").
fn request_error(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() { "timed out".to_string() } else { err.to_string() };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text.chars().take(200).collect()
}

/// An error of the harness's client as one line, with its causes, at most 200 characters.
fn short(err: &anyhow::Error) -> String {
    format!("{err:#}").chars().take(200).collect()
}

/// How long `work` took, and its outcome.
pub async fn timed<T>(work: impl std::future::Future<Output = Result<T, String>>) -> (f64, Result<T, String>) {
    let started = Instant::now();
    let outcome = work.await;
    (started.elapsed().as_secs_f64(), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn danger_alerts_are_read_without_tags() {
        let page = r#"<div class="alert alert-danger" role="alert">Something <b>went</b> wrong.
        </div>"#;
        assert_eq!(danger_alert(page).as_deref(), Some("Something went wrong."));
        assert_eq!(danger_alert("<div class=\"alert alert-success\">ok</div>"), None);
        assert_eq!(danger_alert("<div class=\"ajax-error alert-danger\">The error</div>"), None);
    }

    #[test]
    fn json_errors_give_their_message() {
        assert_eq!(body_message(r#"{"status": 400, "message": "already running"}"#), "already running");
        assert_eq!(body_message("<html>\n  oops </html>"), "<html> oops </html>");
    }
}
