//! The hub's own pages, used as a person would: NativeAuthenticator's signup, login and authorization
//! area, the spawn form (image dropdown or profile list), the home page's stop/start buttons and the
//! React admin panel, and the requests the hub's pages make from a logged-in browser (the REST spawn API,
//! the spawn form's POST) when a test needs their HTTP answer.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};
use fantoccini::Locator;
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::stack::HubAddress;
use crate::wait;

/// The outcome of a signup: the alert's Bootstrap class (`alert-success`, `alert-info`, `alert-danger`)
/// and its text.
pub struct SignupResult {
    pub class: String,
    pub message: String,
}

pub async fn sign_up(browser: &Browser, stack: &impl HubAddress, user: &str, password: &str) -> Result<SignupResult> {
    browser.goto(&stack.url("/hub/signup")).await?;
    browser.fill("#username_input", user).await?;
    browser.fill("#password_input", password).await?;
    browser.fill("#password_confirmation_input", password).await?;
    browser.click("#signup_submit", wait::DEFAULT).await?;
    let alert = browser.visible("#login-main .alert", wait::DEFAULT).await?;
    let class = alert.attr("class").await?.unwrap_or_default();
    let class = class.split_whitespace().find(|name| name.starts_with("alert-")).unwrap_or_default().to_string();
    let message = alert.text().await?.trim().to_string();
    Ok(SignupResult { class, message })
}

/// Submits the login form; returns `Ok(None)` when the hub let the user in (it left `/hub/login`),
/// `Ok(Some(error))` with the page's login error otherwise, or the status and message of the hub's error page
/// when the authenticator refused with one (403, 503).
pub async fn submit_login(browser: &Browser, stack: &impl HubAddress, user: &str, password: &str) -> Result<Option<String>> {
    browser.open(&stack.url("/hub/login")).await?;
    browser.fill("#username_input", user).await?;
    browser.fill("#password_input", password).await?;
    browser.click("#login_submit", wait::DEFAULT).await?;
    wait::until("the login to be accepted or refused", wait::DEFAULT, || async {
        let url = browser.client.current_url().await?;
        if !url.path().starts_with("/hub/login") {
            return Ok(Some(None));
        }
        let errors = browser.texts(".login_error").await?;
        if let Some(error) = errors.into_iter().find(|error| !error.is_empty()) {
            return Ok(Some(Some(error)));
        }
        // The hub's error page (the authenticator refused with a status of its own, e.g. a directory down):
        // its status line, then its message.
        let Some(status) = browser.texts("div.error h1").await?.into_iter().next() else { return Ok(None) };
        let message = browser.texts("div.error p").await?.join(" ");
        Ok(Some(Some(format!("{status}: {message}"))))
    })
    .await
}

pub async fn log_in(browser: &Browser, stack: &impl HubAddress, user: &str, password: &str) -> Result<()> {
    if let Some(error) = submit_login(browser, stack, user, password).await? {
        bail!("login of `{user}` was refused: {error}");
    }
    Ok(())
}

/// Authorizes `user` in NativeAuthenticator's authorization area by clicking its Authorize button (a form
/// that POSTs with `_xsrf`: a GET changes no account).
pub async fn authorize(admin: &Browser, stack: &impl HubAddress, user: &str) -> Result<()> {
    admin.goto(&stack.url("/hub/authorize")).await?;
    let row = format!("tr[id='{user}']");
    let state = admin.texts(&format!("{row} td")).await?;
    ensure!(
        state.iter().any(|cell| cell == "No"),
        "the authorization area does not list `{user}` as waiting for approval (row cells: {state:?})"
    );
    admin.click(&format!("{row} form[action$='/authorize/{user}'] button"), wait::DEFAULT).await?;
    admin.visible(&format!("{row}.success"), wait::DEFAULT).await?;
    Ok(())
}

/// An entry of the spawn form's choice (an `<option>` or a radio button with its label).
#[derive(Debug, Clone)]
pub struct Choice {
    pub value: String,
    pub text: String,
}

/// The choices the spawn form offers under the field `name`, as `<select name=…>` options or radio
/// buttons; empty when the form has no such field.
pub async fn spawn_choices(browser: &Browser, name: &str) -> Result<Vec<Choice>> {
    let value = browser
        .js(
            r#"
            const name = arguments[0];
            const select = document.querySelector(`#spawn_form select[name="${name}"]`);
            if (select) {
                return Array.from(select.options).map(o => ({ value: o.value, text: o.textContent.trim() }));
            }
            return Array.from(document.querySelectorAll(`#spawn_form input[type=radio][name="${name}"]`)).map(r => {
                const label = r.labels && r.labels.length ? r.labels[0] : r.closest('label');
                return { value: r.value, text: label ? label.textContent.trim() : '' };
            });
            "#,
            vec![json!(name)],
        )
        .await?;
    let choices: Vec<serde_json::Value> = serde_json::from_value(value)?;
    Ok(choices
        .into_iter()
        .map(|choice| Choice {
            value: choice["value"].as_str().unwrap_or_default().to_string(),
            text: choice["text"].as_str().unwrap_or_default().to_string(),
        })
        .collect())
}

/// Waits for the spawn form (the user may land on it after login or after "Start My Server").
pub async fn wait_spawn_form(browser: &Browser) -> Result<()> {
    browser.visible("#spawn_form", wait::DEFAULT).await?;
    Ok(())
}

/// Picks the choice whose visible text is `text` in field `name` (dropdown or radio), as a person would,
/// and submits the form. Returns when the form was submitted (the spawn clock starts here).
pub async fn choose_and_start(browser: &Browser, name: &str, text: &str) -> Result<Instant> {
    let select = format!("#spawn_form select[name='{name}']");
    if browser.is_visible(&select).await? {
        let field = browser.visible(&select, wait::DEFAULT).await?;
        let mut picked = false;
        for option in field.find_all(Locator::Css("option")).await? {
            if option.text().await?.trim() == text {
                // chromedriver selects an option on click without opening the native popup.
                option.click().await?;
                picked = true;
                break;
            }
        }
        ensure!(picked, "no option of `{select}` reads `{text}`");
        let chosen =
            browser.js("return document.querySelector(arguments[0]).selectedOptions[0].textContent.trim();", vec![json!(select)]).await?;
        ensure!(chosen.as_str() == Some(text), "the dropdown shows {chosen} after picking `{text}`");
    } else {
        let choices = spawn_choices(browser, name).await?;
        let Some(choice) = choices.iter().find(|choice| choice.text == text) else {
            bail!("the spawn form has no `{name}` choice reading `{text}` (it offers {choices:?})");
        };
        browser.click(&format!("#spawn_form input[type=radio][name='{name}'][value='{}']", choice.value), wait::DEFAULT).await?;
    }
    let started = Instant::now();
    browser.click("#spawn_form [type=submit]", wait::DEFAULT).await?;
    Ok(started)
}

/// The hub's answer to a request a page made: its HTTP status and the message it carried.
#[derive(Debug)]
pub struct Answer {
    pub status: u64,
    pub message: String,
}

/// From the current page (under `/hub/`, where the `_xsrf` cookie lives), as the hub's own JavaScript
/// does: `POST /hub/api/users/<user>/server` with the JSON `options` and the `_xsrf` cookie's value in
/// `X-XSRFToken`. Returns the status and the JSON error's `message` (the raw body if it is not one).
pub async fn api_spawn(browser: &Browser, user: &str, options: &Value) -> Result<Answer> {
    let answer = browser
        .js(
            r#"
            const [user, options] = arguments;
            const cookie = document.cookie.split('; ').find(c => c.startsWith('_xsrf='));
            if (!cookie) {
                return { missing: `no _xsrf cookie is visible to the page ${location.pathname}` };
            }
            return fetch(`/hub/api/users/${encodeURIComponent(user)}/server`, {
                method: 'POST',
                headers: { 'X-XSRFToken': cookie.slice('_xsrf='.length), 'Content-Type': 'application/json' },
                body: JSON.stringify(options),
            }).then(response => response.text().then(body => ({ status: response.status, body })));
            "#,
            vec![json!(user), options.clone()],
        )
        .await?;
    if let Some(missing) = answer["missing"].as_str() {
        bail!("cannot call the hub's API as the page would: {missing}");
    }
    let status = answer["status"].as_u64().ok_or_else(|| anyhow!("the page's fetch returned no status: {answer}"))?;
    let body = answer["body"].as_str().unwrap_or_default().to_string();
    let message = serde_json::from_str::<Value>(&body).ok().and_then(|json| json["message"].as_str().map(str::to_string)).unwrap_or(body);
    Ok(Answer { status, message })
}

/// On the spawn form: posts it as the browser would (multipart, to the form's action, which carries the
/// `_xsrf` token) with field `name` set to `value`, offered or not, without leaving the page. Returns the
/// status and the error alert of the page that came back (empty when it has none).
pub async fn post_spawn_form_with(browser: &Browser, name: &str, value: &str) -> Result<Answer> {
    let answer = browser
        .js(
            r#"
            const [name, value] = arguments;
            const form = document.querySelector('#spawn_form');
            if (!form) {
                return { missing: `no spawn form on ${location.pathname}` };
            }
            const data = new FormData(form);
            data.set(name, value);
            return fetch(form.action, { method: 'POST', body: data }).then(response => response.text().then(html => {
                const page = new DOMParser().parseFromString(html, 'text/html');
                const error = page.querySelector('.spawn-error-msg');
                return { status: response.status, message: error ? error.textContent.trim() : '' };
            }));
            "#,
            vec![json!(name), json!(value)],
        )
        .await?;
    if let Some(missing) = answer["missing"].as_str() {
        bail!("cannot post the spawn form: {missing}");
    }
    let status = answer["status"].as_u64().ok_or_else(|| anyhow!("the page's fetch returned no status: {answer}"))?;
    Ok(Answer { status, message: answer["message"].as_str().unwrap_or_default().to_string() })
}

/// On `/hub/home`: clicks "Stop My Server" and waits until the page offers "Start My Server" again.
pub async fn stop_from_home(browser: &Browser, stack: &impl HubAddress) -> Result<()> {
    browser.goto(&stack.url("/hub/home")).await?;
    // home.js attaches the button's handler after its require.js modules load; a click before that does
    // nothing. Its handler disables #start at once, so click until that shows.
    wait::until("the home page's Stop My Server button to take the click", wait::DEFAULT, || async {
        let taken = browser.js("const s = document.querySelector('#start'); return !!s && s.hasAttribute('disabled');", vec![]).await?;
        if taken == json!(true) || !browser.is_visible("#stop").await? {
            return Ok(Some(()));
        }
        browser.click("#stop", wait::DEFAULT).await?;
        Ok(None)
    })
    .await?;
    wait::until("the home page to offer `Start My Server` after stopping", Duration::from_secs(90), || async {
        let stop_visible = browser.is_visible("#stop").await?;
        let start = browser.texts("#start").await?.join(" ");
        let disabled = browser.js("return document.querySelector('#start').hasAttribute('disabled') && document.querySelector('#start').getAttribute('disabled') !== 'false';", vec![]).await?;
        Ok((!stop_visible && start.contains("Start My Server") && disabled == json!(false)).then_some(()))
    })
    .await
}

/// On `/hub/home` with no server running: clicks "Start My Server", which leads to the spawn form.
pub async fn start_from_home(browser: &Browser, stack: &impl HubAddress) -> Result<()> {
    browser.goto(&stack.url("/hub/home")).await?;
    browser.click("#start", wait::DEFAULT).await?;
    wait_spawn_form(browser).await
}

/// The CSS path of `user`'s row in the React admin panel (`data-testid="user-row-…"`) plus `inner`,
/// evaluated in the page because the row's test id carries the user's name only as part of a longer id.
async fn admin_row_has(admin: &Browser, user: &str, inner: &str) -> Result<bool> {
    let found = admin
        .js(
            r#"
            const [user, inner] = arguments;
            const rows = Array.from(document.querySelectorAll('tr')).filter(row =>
                Array.from(row.querySelectorAll('[data-testid="user-row-name"]')).some(cell => cell.textContent.trim().startsWith(user)));
            return rows.some(row => inner === '' || row.querySelector(inner) !== null);
            "#,
            vec![json!(user), json!(inner)],
        )
        .await?;
    Ok(found == json!(true))
}

/// In `/hub/admin`: finds `user`'s row, checks its server runs (a Stop Server button), clicks it and waits
/// until the row offers to start the server again.
pub async fn stop_from_admin_panel(admin: &Browser, stack: &impl HubAddress, user: &str) -> Result<()> {
    admin.goto(&stack.url("/hub/admin")).await?;
    wait::until(&format!("the admin panel to list `{user}` with a Stop Server button"), wait::DEFAULT, || async {
        Ok(admin_row_has(admin, user, "button.stop-button").await?.then_some(()))
    })
    .await?;
    admin
        .js(
            r#"
            const user = arguments[0];
            const row = Array.from(document.querySelectorAll('tr')).find(row =>
                Array.from(row.querySelectorAll('[data-testid="user-row-name"]')).some(cell => cell.textContent.trim().startsWith(user)));
            row.querySelector('button.stop-button').setAttribute('data-jhub-acceptance', 'stop');
            "#,
            vec![json!(user)],
        )
        .await?;
    admin.click("button[data-jhub-acceptance='stop']", wait::DEFAULT).await?;
    wait::until(&format!("`{user}`'s row to lose its Stop Server button"), Duration::from_secs(90), || async {
        Ok((!admin_row_has(admin, user, "button.stop-button").await?).then_some(()))
    })
    .await
}
