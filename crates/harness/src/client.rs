//! The hub as a script sees it, without a browser: NativeAuthenticator's signup and login forms (the `_xsrf`
//! token read from the form, as tornado checks it), pages opened as a browser opens them (redirects
//! followed, the OAuth handshake of a user's server included), requests authenticated as a browser's (the
//! session's cookies, the `_xsrf` cookie as `X-XSRFToken`) or with an API token, the REST spawn and stop,
//! the single-user server's contents API, and a kernel driven over its websocket.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::stack::HubAddress;
use crate::wait;

/// A browser-like session of one person: cookies kept, redirects not followed (a login answers 302).
pub struct Session {
    pub user: String,
    http: reqwest::Client,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
    base: String,
}

/// The hidden `_xsrf` input of a page's form.
fn xsrf_of(page: &str) -> Option<String> {
    let at = page.find("name=\"_xsrf\"")?;
    let tag_start = page[..at].rfind('<')?;
    let tag_end = at + page[at..].find('>')?;
    let tag = &page[tag_start..tag_end];
    let value = tag.split("value=\"").nth(1)?;
    Some(value[..value.find('"')?].to_string())
}

/// What a spawn's progress stream said: its messages in order, and how it ended.
pub struct SpawnProgress {
    pub messages: Vec<String>,
    pub end: SpawnEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnEnd {
    Ready,
    Failed,
    /// The hub closed the stream before either.
    StreamEnded,
}

impl SpawnProgress {
    /// The last message, or "" when there was none.
    pub fn last_message(&self) -> &str {
        self.messages.last().map(String::as_str).unwrap_or_default()
    }
}

/// A page as a browser ends up with it: the status and path where the redirects ended, and the body.
pub struct Page {
    pub status: StatusCode,
    pub path: String,
    pub body: String,
}

/// How many redirects `Session::open` follows, as browsers bound them.
const MAX_REDIRECTS: usize = 10;

impl Session {
    pub fn new(stack: &impl HubAddress, user: &str) -> Result<Session> {
        Session::at(&stack.url(""), user, Duration::from_secs(60))
    }

    /// A session of `user` with the hub at `base` (its origin), whose every request may take `timeout`
    /// (a spawn's progress stream lasts as long as the spawn).
    pub fn at(base: &str, user: &str, timeout: Duration) -> Result<Session> {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let http =
            reqwest::Client::builder().cookie_provider(jar.clone()).redirect(reqwest::redirect::Policy::none()).timeout(timeout).build()?;
        Ok(Session { user: user.to_string(), http, jar, base: base.to_string() })
    }

    /// A request as the hub's pages' JavaScript makes it: the session's cookies, and the value of the
    /// `_xsrf` cookie for `path` (the hub's under `/hub/`, a user server's under `/user/<u>/`) as
    /// `X-XSRFToken`. Redirects are not followed.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = self.xsrf_cookie(path) {
            request = request.header("X-XSRFToken", token);
        }
        request
    }

    /// GETs `path` (or an absolute URL) as a browser does, following redirects with the session's cookies.
    pub async fn open(&self, path: &str) -> Result<Page> {
        let mut url = reqwest::Url::parse(&self.base)?.join(path)?;
        for _ in 0..=MAX_REDIRECTS {
            let response = self.http.get(url.clone()).send().await.with_context(|| format!("GET {}", url.path()))?;
            let location = response.headers().get(reqwest::header::LOCATION).and_then(|value| value.to_str().ok());
            match location {
                Some(location) if response.status().is_redirection() => url = url.join(location)?,
                _ => {
                    let status = response.status();
                    return Ok(Page { status, path: url.path().to_string(), body: response.text().await? });
                }
            }
        }
        bail!("GET {path}: more than {MAX_REDIRECTS} redirects")
    }

    /// Posts a form of the page `form_page` to `action` with `fields` and the page's `_xsrf`, as a browser
    /// submits it; the answer is returned as it is (redirects not followed).
    pub async fn post_form(&self, form_page: &str, action: &str, fields: &[(&str, &str)]) -> Result<reqwest::Response> {
        let xsrf = self.form_token(form_page).await?;
        let mut form = fields.to_vec();
        form.push(("_xsrf", xsrf.as_str()));
        self.http.post(format!("{}{action}", self.base)).form(&form).send().await.with_context(|| format!("POST {action}"))
    }

    /// The form's `_xsrf` input, or else the `_xsrf` cookie the page set (tornado accepts either value).
    async fn form_token(&self, path: &str) -> Result<String> {
        let page = self.http.get(format!("{}{path}", self.base)).send().await?.text().await?;
        match xsrf_of(&page) {
            Some(token) => Ok(token),
            None => self.xsrf_cookie(path).ok_or_else(|| anyhow!("{path} has no _xsrf input and set no _xsrf cookie")),
        }
    }

    fn xsrf_cookie(&self, path: &str) -> Option<String> {
        use reqwest::cookie::CookieStore;
        let url: reqwest::Url = format!("{}{path}", self.base).parse().ok()?;
        let cookies = self.jar.cookies(&url)?.to_str().ok()?.to_string();
        cookies.split("; ").find_map(|pair| pair.strip_prefix("_xsrf=")).map(str::to_string)
    }

    /// Posts the signup form; returns the page's alert class (`alert-success`, `alert-info` for "sent to
    /// the admin", `alert-danger`) or an error when no page came back.
    pub async fn sign_up(&self, password: &str) -> Result<String> {
        let (status, page) = self.post_signup(password).await?;
        ensure!(status == StatusCode::OK, "signup of {} answered {status}", self.user);
        for class in ["alert-success", "alert-info", "alert-danger", "alert-warning"] {
            if page.contains(class) {
                return Ok(class.to_string());
            }
        }
        bail!("signup of {} answered a page without an alert", self.user)
    }

    /// Posts NativeAuthenticator's signup form (from the signup page, with its `_xsrf`); returns the status
    /// and the page that came back.
    pub async fn post_signup(&self, password: &str) -> Result<(StatusCode, String)> {
        let form = [("username", self.user.as_str()), ("signup_password", password), ("signup_password_confirmation", password)];
        let response = self.post_form("/hub/signup", "/hub/signup", &form).await?;
        let status = response.status();
        Ok((status, response.text().await?))
    }

    /// Posts the login form: `Ok(None)` when the hub let the person in (a redirect away from the login
    /// page), `Ok(Some(page text))` when it showed the login page again.
    pub async fn log_in(&self, password: &str) -> Result<Option<String>> {
        Ok(self.log_in_at("/hub/login?next=%2Fhub%2Fhome", password).await?.err())
    }

    /// Posts the login form to `action` (`/hub/login`, with a `next` or without): `Ok(Ok(location))` when
    /// the hub let the person in (a redirect away from the login page, to `location`), `Ok(Err(error))`
    /// with the page's login error when it showed the login page again.
    pub async fn log_in_at(&self, action: &str, password: &str) -> Result<Result<String, String>> {
        let response = self.post_form("/hub/login", action, &[("username", self.user.as_str()), ("password", password)]).await?;
        let status = response.status();
        let location = response.headers().get("location").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
        let page = response.text().await?;
        if status.is_redirection() && !location.contains("/hub/login") {
            return Ok(Ok(location));
        }
        let error = page
            .split("login_error")
            .nth(1)
            .and_then(|rest| rest.split_once('>'))
            .map(|(_, text)| text.split('<').next().unwrap_or_default().trim().to_string())
            .unwrap_or_else(|| format!("status {status}, no login error shown"));
        Ok(Err(error))
    }

    pub async fn must_log_in(&self, password: &str) -> Result<()> {
        if let Some(error) = self.log_in(password).await? {
            bail!("login of `{}` was refused: {error}", self.user);
        }
        Ok(())
    }

    /// An API token of the logged-in person (what the hub's token page makes).
    pub async fn api_token(&self) -> Result<Api> {
        // The hub's pages set the `_xsrf` cookie; its value goes back as X-XSRFToken, as the pages' own
        // JavaScript sends it.
        let page = self.http.get(format!("{}/hub/token", self.base)).send().await?;
        ensure!(page.status() == StatusCode::OK, "the token page of {} answered {}", self.user, page.status());
        let xsrf = self.xsrf_cookie("/hub/api/").ok_or_else(|| anyhow!("no _xsrf cookie after the token page of {}", self.user))?;
        let response = self
            .http
            .post(format!("{}/hub/api/users/{}/tokens", self.base, self.user))
            .header("X-XSRFToken", &xsrf)
            .json(&json!({"note": "resilience test", "expires_in": 7200}))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let token = body["token"].as_str().ok_or_else(|| anyhow!("token request of {} answered {status}: {body}", self.user))?;
        Api::new(&self.base, token)
    }

    /// NativeAuthenticator's authorization toggle, as the admin's Authorize button posts it from
    /// `/hub/authorize` (with the page's `_xsrf`).
    pub async fn authorize(&self, user: &str) -> Result<()> {
        let response = self.post_form("/hub/authorize", &format!("/hub/authorize/{user}"), &[]).await?;
        ensure!(
            response.status().is_redirection() || response.status() == StatusCode::OK,
            "authorizing {user} answered {}",
            response.status()
        );
        Ok(())
    }

    /// The text of the page at `path`, which must answer 200 (e.g. the spawn page, to read its form).
    pub async fn page(&self, path: &str) -> Result<String> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.with_context(|| format!("GET {path}"))?;
        let status = response.status();
        ensure!(status == StatusCode::OK, "GET {path} as {} answered {status}", self.user);
        Ok(response.text().await?)
    }

    /// Connects to the channels websocket of `user`'s kernel `kernel_id` as the browser's Lab does: with the
    /// session's cookies, the `_xsrf` cookie as `X-XSRFToken` and the hub's origin.
    pub async fn connect_kernel(&self, user: &str, kernel_id: &str) -> Result<Kernel> {
        let path = format!("/user/{user}/api/kernels/{kernel_id}/channels");
        let mut request = websocket_url(&self.base, &path).into_client_request()?;
        let cookies = format!("{}{path}", self.base).parse().ok().and_then(|url| {
            use reqwest::cookie::CookieStore;
            self.jar.cookies(&url)
        });
        let headers = request.headers_mut();
        if let Some(cookies) = cookies {
            headers.insert("Cookie", cookies);
        }
        if let Some(token) = self.xsrf_cookie(&path) {
            headers.insert("X-XSRFToken", token.parse()?);
        }
        headers.insert("Origin", self.base.parse()?);
        Kernel::connect(request, &self.user).await
    }

    /// Reads `user`'s spawn progress as the spawn page does (`/hub/api/users/<u>/server/progress`, an event
    /// stream) until its `ready` or `failed` event, or until the hub ends it: every message in order.
    pub async fn follow_spawn_progress(&self) -> Result<SpawnProgress> {
        let path = format!("/hub/api/users/{}/server/progress", self.user);
        let mut response = self.request(reqwest::Method::GET, &path).header("Accept", "text/event-stream").send().await?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            bail!("HTTP {}: {}", status.as_u16(), body.chars().take(200).collect::<String>());
        }
        let mut progress = SpawnProgress { messages: Vec::new(), end: SpawnEnd::StreamEnded };
        let mut pending = String::new();
        while let Some(chunk) = response.chunk().await? {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                let Some(data) = line.trim_end().strip_prefix("data:") else { continue };
                let Ok(event) = serde_json::from_str::<Value>(data.trim()) else { continue };
                if let Some(message) = event["message"].as_str() {
                    progress.messages.push(message.to_string());
                }
                if event["ready"] == json!(true) {
                    progress.end = SpawnEnd::Ready;
                    return Ok(progress);
                }
                if event["failed"] == json!(true) {
                    progress.end = SpawnEnd::Failed;
                    return Ok(progress);
                }
            }
        }
        Ok(progress)
    }

    /// A plain GET of the session (for a header-carrying probe), returning the status.
    pub async fn get_with_header(&self, path: &str, header: (&str, &str)) -> Result<StatusCode> {
        Ok(self.http.get(format!("{}{path}", self.base)).header(header.0, header.1).send().await?.status())
    }
}

/// The REST API with a token: the hub's, and a user's server through the proxy.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    pub token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Result<Api> {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(60)).build()?;
        Ok(Api { http, base: base.to_string(), token: token.to_string() })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).header("Authorization", format!("token {}", self.token))
    }

    pub async fn user(&self, user: &str) -> Result<Value> {
        let response = self.request(reqwest::Method::GET, &format!("/hub/api/users/{user}")).send().await?;
        let status = response.status();
        ensure!(status == StatusCode::OK, "GET /hub/api/users/{user} answered {status}");
        Ok(response.json().await?)
    }

    /// Asks for the default server with `options`; returns the status (201 ready, 202 pending).
    pub async fn request_spawn(&self, user: &str, options: Value) -> Result<StatusCode> {
        let (status, body) = self.try_spawn(user, options).await?;
        ensure!(status.is_success(), "spawn of {user} answered {status}: {body}");
        Ok(status)
    }

    /// Asks for the default server with `options` and returns the answer as it is, refusals included.
    pub async fn try_spawn(&self, user: &str, options: Value) -> Result<(StatusCode, String)> {
        let response = self.request(reqwest::Method::POST, &format!("/hub/api/users/{user}/server")).json(&options).send().await?;
        let status = response.status();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    /// Spawns the default server with the catalog image `image` and waits until the hub calls it ready.
    pub async fn spawn(&self, user: &str, image: &str) -> Result<()> {
        self.request_spawn(user, json!({"image": image})).await?;
        self.wait_ready(user).await
    }

    pub async fn wait_ready(&self, user: &str) -> Result<()> {
        wait::until(&format!("the server of {user} to be ready"), wait::SPAWN, || async {
            let model = self.user(user).await?;
            Ok((model["servers"][""]["ready"] == json!(true)).then_some(()))
        })
        .await
    }

    /// Waits until the hub calls the server of `user` ready, within `timeout`; a server that is gone after
    /// the first 10 s (a spawn that failed) ends the wait at once, with the user's model.
    pub async fn wait_started(&self, user: &str, timeout: Duration) -> Result<()> {
        /// Before this, the hub may not yet show a server it was just asked for.
        const REGISTERED: Duration = Duration::from_secs(10);
        let started = std::time::Instant::now();
        wait::until(&format!("the server of {user} to be ready"), timeout, || async {
            let model = self.user(user).await?;
            if model["servers"][""]["ready"] == json!(true) {
                return Ok(Some(Ok(())));
            }
            if !model["servers"][""].is_object() && started.elapsed() >= REGISTERED {
                return Ok(Some(Err(anyhow!("the server of {user} stopped while starting: {model}"))));
            }
            Ok(None)
        })
        .await?
    }

    pub async fn stop(&self, user: &str) -> Result<()> {
        let response = self.request(reqwest::Method::DELETE, &format!("/hub/api/users/{user}/server")).send().await?;
        ensure!(response.status().is_success(), "stop of {user} answered {}", response.status());
        wait::until(&format!("the server of {user} to stop"), Duration::from_secs(90), || async {
            let model = self.user(user).await?;
            Ok(model["servers"].get("").is_none().then_some(()))
        })
        .await
    }

    /// Writes `bytes` as `path` in the user's home through the server's contents API.
    pub async fn put_file(&self, user: &str, path: &str, bytes: &[u8]) -> Result<()> {
        let body = json!({"type": "file", "format": "base64", "content": base64_encode(bytes)});
        let response = self.request(reqwest::Method::PUT, &format!("/user/{user}/api/contents/{path}")).json(&body).send().await?;
        ensure!(response.status().is_success(), "writing {path} for {user} answered {}", response.status());
        Ok(())
    }

    /// Reads `path` of the user's home, raw, through the server's files handler.
    pub async fn get_file(&self, user: &str, path: &str) -> Result<Vec<u8>> {
        let response = self.request(reqwest::Method::GET, &format!("/user/{user}/files/{path}")).send().await?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("reading {path} of {user} answered {status}: {}", body.chars().take(400).collect::<String>());
        }
        Ok(response.bytes().await?.to_vec())
    }

    /// A DELETE (e.g. of a user through the admin API), returning the status.
    pub async fn delete(&self, path: &str) -> Result<StatusCode> {
        Ok(self.request(reqwest::Method::DELETE, path).send().await?.status())
    }

    /// Any GET, returning status and body.
    pub async fn get(&self, path: &str) -> Result<(StatusCode, String)> {
        let response = self.request(reqwest::Method::GET, path).send().await?;
        Ok((response.status(), response.text().await.unwrap_or_default()))
    }

    /// Starts a kernel in the user's server and connects to its channels websocket through the proxy.
    pub async fn kernel(&self, user: &str) -> Result<Kernel> {
        let response = self.request(reqwest::Method::POST, &format!("/user/{user}/api/kernels")).json(&json!({})).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let id = body["id"].as_str().ok_or_else(|| anyhow!("starting a kernel for {user} answered {status}: {body}"))?.to_string();
        let mut request = websocket_url(&self.base, &format!("/user/{user}/api/kernels/{id}/channels")).into_client_request()?;
        request.headers_mut().insert("Authorization", format!("token {}", self.token).parse()?);
        Kernel::connect(request, "resilience").await
    }
}

/// The websocket URL of `path` on the hub at `base` (plain ws:// on 127.0.0.1: the harness has no TLS).
fn websocket_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.replacen("http://", "ws://", 1))
}

/// Standard base64 (the contents API's `format: base64`).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for index in 0..4 {
            if index <= chunk.len() {
                text.push(ALPHABET[(n >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// A kernel's channels over one websocket (Jupyter's JSON message protocol).
pub struct Kernel {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    session: String,
    counter: u32,
}

/// What a cell printed, and how its execution ended.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    /// The cell's value as text (`execute_result`'s `text/plain`), when it had one.
    pub result: Option<String>,
    pub error: Option<String>,
    /// The kernel died or restarted while the cell ran (status `dead`/`restarting`, or the reply never came).
    pub kernel_lost: bool,
}

impl Kernel {
    /// Opens the kernel's channels websocket with `request` (its URL and authentication); `who` starts the
    /// session's name, which the kernel only compares.
    async fn connect(request: tokio_tungstenite::tungstenite::handshake::client::Request, who: &str) -> Result<Kernel> {
        let url = request.uri().to_string();
        let (socket, _) = tokio_tungstenite::connect_async(request).await.with_context(|| format!("websocket {url}"))?;
        Ok(Kernel { socket, session: format!("{who}-{}-{}", std::process::id(), crate::cases::random_hex()), counter: 0 })
    }

    /// Sends an execute request for `code`; returns its message id.
    pub async fn submit(&mut self, code: &str) -> Result<String> {
        self.counter += 1;
        let msg_id = format!("{}-{}", self.session, self.counter);
        let message = json!({
            "header": {"msg_id": msg_id, "username": "resilience", "session": self.session, "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": false, "store_history": false, "user_expressions": {}, "allow_stdin": false, "stop_on_error": true},
        });
        self.socket.send(Message::text(message.to_string())).await?;
        Ok(msg_id)
    }

    /// Reads messages for `msg_id` until its execution is idle again, the kernel is lost, or `timeout`.
    pub async fn collect(&mut self, msg_id: &str, timeout: Duration) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        let read = async {
            while let Some(message) = self.socket.next().await {
                let Message::Text(text) = message? else { continue };
                let value: Value = serde_json::from_str(text.as_str())?;
                let msg_type = value["msg_type"].as_str().or(value["header"]["msg_type"].as_str()).unwrap_or_default();
                if msg_type == "status" {
                    let state = value["content"]["execution_state"].as_str().unwrap_or_default();
                    if state == "dead" || state == "restarting" {
                        outcome.kernel_lost = true;
                        return Ok::<_, anyhow::Error>(());
                    }
                }
                if value["parent_header"]["msg_id"].as_str() != Some(msg_id) {
                    continue;
                }
                match msg_type {
                    "stream" => outcome.stdout.push_str(value["content"]["text"].as_str().unwrap_or_default()),
                    "execute_result" => outcome.result = value["content"]["data"]["text/plain"].as_str().map(str::to_string),
                    "error" => {
                        let content = &value["content"];
                        let text = |key: &str| content[key].as_str().unwrap_or("?").to_string();
                        outcome.error = Some(format!("{}: {}", text("ename"), text("evalue")));
                    }
                    "status" if value["content"]["execution_state"] == "idle" => return Ok(()),
                    _ => {}
                }
            }
            outcome.kernel_lost = true;
            Ok(())
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(result) => result?,
            Err(_) => outcome.kernel_lost = true,
        }
        Ok(outcome)
    }

    pub async fn run(&mut self, code: &str, timeout: Duration) -> Result<Outcome> {
        let msg_id = self.submit(code).await?;
        self.collect(&msg_id, timeout).await
    }

    /// Reads whatever arrives for `duration` (keeps a long-running cell's output flowing) and returns how
    /// many messages came.
    pub async fn drain_for(&mut self, duration: Duration) -> Result<usize> {
        let mut count = 0;
        let _ = tokio::time::timeout(duration, async {
            while let Some(message) = self.socket.next().await {
                if message.is_ok() {
                    count += 1;
                }
            }
        })
        .await;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(super::base64_encode(b""), "");
        assert_eq!(super::base64_encode(b"f"), "Zg==");
        assert_eq!(super::base64_encode(b"fo"), "Zm8=");
        assert_eq!(super::base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn xsrf_input_is_found() {
        let page = r#"<form><input type="hidden" name="_xsrf" value="2|ab|cd|1"/></form>"#;
        assert_eq!(super::xsrf_of(page).as_deref(), Some("2|ab|cd|1"));
    }
}
