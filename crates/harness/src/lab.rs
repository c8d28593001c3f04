//! JupyterLab as a person uses it: readiness, the Launcher's cards, apps opened from it through
//! jupyter-server-proxy (new tab or in-Lab iframe), a terminal, the file browser and a notebook.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use fantoccini::Locator;
use fantoccini::key::Key;
use fantoccini::wd::WindowHandle;
use serde_json::json;

use crate::browser::Browser;
use crate::stack::HubAddress;
use crate::wait;

/// Waits until `user`'s JupyterLab has loaded: on `/user/<user>/lab` of the user's origin (the hub's, or
/// the user's own with per-user origins), the splash gone, the shell shown. Lab's page loads many script
/// chunks right after a spawn, when the engine changes the host's network interfaces (this stack's new
/// container, or another stack's on the shared engine) and Chromium aborts them
/// (`net::ERR_NETWORK_CHANGED`, seen: a blank page for good): the page is reloaded then, as for the apps
/// (`apps::land_in`), counting that error from a few minutes back (the spawn began before this wait), and
/// so is Chromium's error page when that change aborted the redirect to Lab itself (`Browser::arrive_at`).
pub async fn wait_ready(browser: &Browser, stack: &impl HubAddress, user: &str, timeout: Duration) -> Result<()> {
    let since = std::time::SystemTime::now() - Duration::from_secs(300);
    browser.arrive_at(&stack.user_url(user, &format!("/user/{user}/lab")), timeout).await?;
    crate::apps::land_in(browser, "#main.jp-LabShell, .jp-LabShell", since).await?;
    browser.gone("#jupyterlab-splash", timeout).await?;
    Ok(())
}

/// Lets the notebooks a restored workspace reopens settle on a kernel, answering JupyterLab's "Select
/// Kernel" dialog as a person would (its preselected kernel). The workspace lives in the user's home, so it
/// follows the user across images: a notebook saved before its kernel was chosen, or whose kernel the new
/// image lacks (a Python notebook in the R image), asks for one when Lab starts. Returns once every open
/// notebook shows a kernel and no dialog is up.
pub async fn settle_restored_notebooks(browser: &Browser) -> Result<()> {
    wait::until("the restored notebooks to settle on a kernel", wait::DEFAULT, || async {
        let headers = browser.texts(".jp-Dialog .jp-Dialog-header").await?;
        if headers.iter().any(|header| header.contains("Select Kernel")) {
            browser.click(".jp-Dialog .jp-mod-accept", wait::DEFAULT).await?;
            return Ok(None);
        }
        if !headers.is_empty() {
            bail!("JupyterLab shows a dialog: {}", headers.join(" / "));
        }
        let kernels = browser.texts(".jp-NotebookPanel .jp-Toolbar-kernelName").await?;
        Ok(kernels.iter().all(|kernel| !kernel.is_empty() && kernel != "No Kernel").then_some(()))
    })
    .await
}

/// Makes sure a Launcher is shown (a restored workspace may not have one): File > New Launcher otherwise.
pub async fn show_launcher(browser: &Browser) -> Result<()> {
    if browser.is_visible(".jp-Launcher").await? {
        return Ok(());
    }
    // The file browser's toolbar has a "+" (New Launcher) button; the File menu has the same command.
    let plus = "[data-command='launcher:create'], .jp-FileBrowser-toolbar [title^='New Launcher']";
    if browser.is_visible(plus).await? {
        browser.click(plus, wait::DEFAULT).await?;
    } else {
        open_menu_item(browser, "File", "New Launcher").await?;
    }
    browser.visible(".jp-Launcher", wait::DEFAULT).await?;
    Ok(())
}

/// Opens the top menu `menu` and clicks its entry labelled `item`.
pub async fn open_menu_item(browser: &Browser, menu: &str, item: &str) -> Result<()> {
    let menu_path =
        format!("//li[contains(@class,'lm-MenuBar-item')][.//div[contains(@class,'lm-MenuBar-itemLabel')][normalize-space()='{menu}']]");
    let entry = browser.client.wait().at_most(wait::DEFAULT).for_element(Locator::XPath(&menu_path)).await?;
    entry.click().await?;
    let item_path =
        format!("//li[contains(@class,'lm-Menu-item')][.//div[contains(@class,'lm-Menu-itemLabel')][normalize-space()='{item}']]");
    let entry = browser.client.wait().at_most(wait::DEFAULT).for_element(Locator::XPath(&item_path)).await?;
    entry.click().await?;
    Ok(())
}

/// The labels of the visible Launcher's cards, in order.
pub async fn launcher_cards(browser: &Browser) -> Result<Vec<String>> {
    let value = browser
        .js(
            r#"
            const launcher = Array.from(document.querySelectorAll('.jp-Launcher')).find(l => l.offsetParent !== null);
            if (!launcher) { return null; }
            return Array.from(launcher.querySelectorAll('.jp-LauncherCard')).map(card => {
                const label = card.querySelector('.jp-LauncherCard-label');
                return (label ? label.textContent : card.getAttribute('title') || '').trim();
            });
            "#,
            vec![],
        )
        .await?;
    if value.is_null() {
        bail!("no Launcher is visible");
    }
    Ok(serde_json::from_value(value)?)
}

/// Whether a card label names the app `wanted` (case-insensitive, e.g. "VS Code", "marimo").
pub fn names(label: &str, wanted: &str) -> bool {
    label.to_lowercase().contains(&wanted.to_lowercase())
}

/// Waits until the Launcher shows cards for the kernels and the terminal (its built-in entries), which
/// says its sections have rendered, and returns every card label.
pub async fn settled_launcher_cards(browser: &Browser) -> Result<Vec<String>> {
    show_launcher(browser).await?;
    wait::until("the Launcher to show its Notebook and Terminal cards", wait::DEFAULT, || async {
        let cards = launcher_cards(browser).await?;
        let has_terminal = cards.iter().any(|card| card == "Terminal");
        let has_kernel = browser.is_visible(".jp-Launcher-section .jp-LauncherCard[data-category='Notebook']").await?;
        Ok((has_terminal && has_kernel).then_some(cards))
    })
    .await
}

/// Clicks the Launcher card whose label names `wanted`.
pub async fn click_card(browser: &Browser, wanted: &str) -> Result<()> {
    show_launcher(browser).await?;
    let cards = browser.client.find_all(Locator::Css(".jp-Launcher .jp-LauncherCard")).await?;
    for card in cards {
        if !card.is_displayed().await.unwrap_or(false) {
            continue;
        }
        let label = card.find(Locator::Css(".jp-LauncherCard-label")).await?.text().await?;
        if names(&label, wanted) {
            card.click().await?;
            return Ok(());
        }
    }
    Err(anyhow!("the Launcher has no card named `{wanted}` (cards: {:?})", launcher_cards(browser).await.unwrap_or_default()))
}

/// Where a proxied app opened: a browser tab of its own (jupyter-server-proxy's `new_browser_tab`, the
/// default) or an iframe in a Lab panel, which the browser has entered.
pub enum AppView {
    Tab { lab: WindowHandle },
    Frame,
}

/// Opens the app of Launcher card `wanted` and waits until `rendered` (a CSS selector proving the app's
/// own UI rendered, not only its HTML shell) shows. The browser stays in the app's tab or frame; `leave_app`
/// goes back to Lab. Returns the view and the URL the app is served at.
pub async fn open_proxied_app(browser: &Browser, wanted: &str, rendered: &str) -> Result<(AppView, String)> {
    let lab_window = browser.client.window().await?;
    let known = browser.windows().await?;
    let frames = ".jp-MainAreaWidget iframe";
    let frames_before = browser.client.find_all(Locator::Css(frames)).await?.len();
    let opening = std::time::SystemTime::now();
    click_card(browser, wanted).await?;
    let opened = wait::until(&format!("`{wanted}` to open in a new tab or a Lab panel"), wait::DEFAULT, || async {
        let windows = browser.windows().await?;
        if let Some(handle) = windows.into_iter().find(|handle| !known.contains(handle)) {
            return Ok(Some(Some(handle)));
        }
        let frames_now = browser.client.find_all(Locator::Css(frames)).await?.len();
        Ok((frames_now > frames_before).then_some(None))
    })
    .await?;
    let view = match opened {
        Some(handle) => {
            browser.client.switch_to_window(handle).await?;
            AppView::Tab { lab: lab_window }
        }
        None => {
            let all = browser.client.find_all(Locator::Css(frames)).await?;
            let frame = all.last().ok_or_else(|| anyhow!("the iframe of `{wanted}` went away"))?;
            frame.clone().enter_frame().await?;
            AppView::Frame
        }
    };
    // A network change on the Docker host can abort the app's page loads as it opens: reloaded as in land_in.
    let shown = crate::apps::land_in(browser, rendered, opening).await;
    let url = browser.url().await.unwrap_or_default();
    shown.map_err(|err| anyhow!("`{wanted}` opened {url} but did not render `{rendered}`: {err:#}"))?;
    Ok((view, url))
}

/// Clicks `link` (which opens a new tab, like marimo's "Create a new notebook") and switches to that tab.
pub async fn follow_into_new_tab(browser: &Browser, link: &str) -> Result<String> {
    let known = browser.windows().await?;
    browser.click(link, wait::DEFAULT).await?;
    let handle = wait::until(&format!("`{link}` to open a new tab"), wait::DEFAULT, || async {
        Ok(browser.windows().await?.into_iter().find(|handle| !known.contains(handle)))
    })
    .await?;
    browser.client.switch_to_window(handle).await?;
    browser.url().await
}

/// Goes back to the Lab from a proxied app: closes every tab but Lab's, or leaves the iframe.
pub async fn leave_app(browser: &Browser, view: AppView) -> Result<()> {
    match view {
        AppView::Tab { lab } => {
            for handle in browser.windows().await? {
                if handle != lab {
                    browser.client.switch_to_window(handle).await?;
                    browser.client.close_window().await?;
                }
            }
            browser.client.switch_to_window(lab).await?;
        }
        AppView::Frame => browser.client.enter_parent_frame().await?,
    }
    Ok(())
}

/// Opens a terminal from the Launcher and types `command` into it, followed by Enter.
pub async fn run_in_new_terminal(browser: &Browser, command: &str) -> Result<()> {
    click_card(browser, "Terminal").await?;
    // The terminal's websocket must be up before typing, or the keys are lost: wait for its screen and
    // for the panel not to be marked disconnected. xterm's input is a hidden textarea (present, not shown).
    browser.visible(".jp-Terminal .xterm-screen", wait::DEFAULT).await?;
    wait::until("the terminal to connect", wait::DEFAULT, || async {
        let connected = browser
            .js("const t = document.querySelector('.jp-Terminal'); return !!t && !t.classList.contains('jp-mod-disconnected');", vec![])
            .await?;
        Ok((connected == json!(true)).then_some(()))
    })
    .await?;
    // xterm reads keys from a hidden textarea that WebDriver will not type into: focus the terminal by
    // clicking it, then type on the keyboard as a person would.
    browser.click(".jp-Terminal .xterm-screen", wait::DEFAULT).await?;
    browser.type_keys(&format!("{command}{}", char::from(Key::Enter))).await
}

/// Makes the file browser visible (left sidebar) if a restored layout hid it.
pub async fn show_file_browser(browser: &Browser) -> Result<()> {
    if !browser.is_visible(".jp-FileBrowser .jp-DirListing").await? {
        browser.click(".jp-SideBar [data-id='filebrowser']", wait::DEFAULT).await?;
        browser.visible(".jp-FileBrowser .jp-DirListing", wait::DEFAULT).await?;
    }
    Ok(())
}

/// Waits until the file browser lists `file`, pressing its refresh button now and then (files written by a
/// terminal show up on the next poll otherwise).
pub async fn wait_listed(browser: &Browser, file: &str, timeout: Duration) -> Result<()> {
    show_file_browser(browser).await?;
    let mut polls = 0u32;
    wait::until(&format!("the file browser to list `{file}`"), timeout, || {
        polls += 1;
        let refresh = polls.is_multiple_of(12);
        async move {
            if refresh {
                let button = ".jp-FileBrowser [data-command='filebrowser:refresh'], .jp-FileBrowser [title^='Refresh']";
                if browser.is_visible(button).await? {
                    browser.click(button, wait::DEFAULT).await?;
                }
            }
            let names = browser.texts(".jp-FileBrowser .jp-DirListing-itemText").await?;
            Ok(names.iter().any(|name| name == file).then_some(()))
        }
    })
    .await
}

/// Opens a new notebook from the Launcher's first Notebook card, runs `code` in its first cell and waits
/// until the cell's output contains `expected`.
pub async fn run_in_new_notebook(browser: &Browser, code: &str, expected: &str) -> Result<()> {
    show_launcher(browser).await?;
    browser.click(".jp-Launcher .jp-LauncherCard[data-category='Notebook']", wait::DEFAULT).await?;
    run_in_opened_notebook(browser, code, expected).await
}

/// Opens a new notebook from the Launcher's Notebook card labelled exactly `kernel` (a kernel's display
/// name, e.g. "R"), runs `code` in its first cell and waits until the cell's output contains `expected`.
pub async fn run_in_new_notebook_of(browser: &Browser, kernel: &str, code: &str, expected: &str) -> Result<()> {
    show_launcher(browser).await?;
    // The card is marked in the page, then clicked as a person would: its label is only its text.
    let mark = "[data-jhub-acceptance='kernel-card']";
    wait::until(&format!("the Launcher's Notebook card `{kernel}`"), wait::DEFAULT, || async {
        let marked = browser
            .js(
                r#"
                const kernel = arguments[0];
                const cards = Array.from(document.querySelectorAll(".jp-Launcher .jp-LauncherCard[data-category='Notebook']"));
                const card = cards.find(c => c.offsetParent !== null && (c.querySelector('.jp-LauncherCard-label')?.textContent.trim() === kernel));
                if (!card) { return false; }
                card.setAttribute('data-jhub-acceptance', 'kernel-card');
                return true;
                "#,
                vec![json!(kernel)],
            )
            .await?;
        Ok((marked == json!(true)).then_some(()))
    })
    .await?;
    browser.click(mark, wait::DEFAULT).await?;
    run_in_opened_notebook(browser, code, expected).await
}

/// In the notebook just opened: waits for its kernel, runs `code` in the first cell and waits until the
/// cell's output contains `expected`.
async fn run_in_opened_notebook(browser: &Browser, code: &str, expected: &str) -> Result<()> {
    let editor_css = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .cm-content";
    let editor = browser.visible(editor_css, wait::DEFAULT).await?;
    // A cell run before the kernel connected is dropped (its prompt stays `[ ]`): wait for the kernel.
    wait::until("the notebook's kernel to be idle", Duration::from_secs(90), || async {
        let idle = browser
            .js(
                "return Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator')).some(i => i.dataset.status === 'idle');",
                vec![],
            )
            .await?;
        Ok((idle == json!(true)).then_some(()))
    })
    .await?;
    editor.click().await?;
    editor.send_keys(code).await?;
    // Ctrl+Enter runs the cell in place (the modifier stays down until the Null key releases it). Should
    // the run still be dropped, the prompt stays `[ ]` and the run is asked again.
    let run_keys = format!("{}{}{}", char::from(Key::Control), char::from(Key::Enter), char::from(Key::Null));
    let mut polls = 0u32;
    wait::until(&format!("the notebook cell's output to contain `{expected}`"), Duration::from_secs(90), || {
        let ask = polls.is_multiple_of(20);
        polls += 1;
        let run_keys = run_keys.as_str();
        async move {
            let outputs = browser.texts(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").await?;
            if outputs.iter().any(|output| output.contains(expected)) {
                return Ok(Some(()));
            }
            let prompts = browser.texts(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt").await?;
            if ask && prompts.first().is_some_and(|prompt| prompt.replace(' ', "") == "[]:") {
                let editor = browser.visible(editor_css, wait::DEFAULT).await?;
                editor.click().await?;
                editor.send_keys(run_keys).await?;
            }
            Ok(None)
        }
    })
    .await
}

/// Fails when JupyterLab shows a dialog (e.g. "Server Connection Error"), naming it.
pub async fn no_error_dialog(browser: &Browser) -> Result<()> {
    let dialogs = browser.texts(".jp-Dialog .jp-Dialog-header").await?;
    if let Some(title) = dialogs.first() {
        bail!("JupyterLab shows a dialog: {title}");
    }
    Ok(())
}

/// One request to the user's server's contents API (`/api/contents/<path>`), from a page of that server
/// (Lab), with the `_xsrf` cookie as Lab sends it: returns the status and the body.
pub async fn contents(browser: &Browser, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<(u64, String)> {
    // A request a network change on the Docker host aborted (status 0: no answer) is sent again, at most
    // twice: the requests of these tests are the same whether they ran once or twice.
    let mut answer = contents_once(browser, method, path, body.clone()).await?;
    for _ in 0..2 {
        if answer.0 != 0 {
            break;
        }
        progress!("{method} {path}: {}; sending it again", answer.1);
        answer = contents_once(browser, method, path, body.clone()).await?;
    }
    Ok(answer)
}

async fn contents_once(browser: &Browser, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<(u64, String)> {
    let answer = browser
        .js(
            r#"
            const [method, path, body] = arguments;
            const base = location.pathname.replace(/\/(lab|tree|notebooks|edit).*$/, '/');
            const cookie = document.cookie.split('; ').find(c => c.startsWith('_xsrf='));
            const headers = { 'Content-Type': 'application/json' };
            if (cookie) { headers['X-XSRFToken'] = cookie.slice('_xsrf='.length); }
            const options = { method, headers };
            if (body !== null) { options.body = JSON.stringify(body); }
            return fetch(`${base}api/contents/${path}`, options)
                .then(async r => ({ status: r.status, body: await r.text() }))
                .catch(e => ({ status: 0, body: `the request did not complete: ${e}` }));
            "#,
            vec![json!(method), json!(path), body.unwrap_or(serde_json::Value::Null)],
        )
        .await?;
    Ok((answer["status"].as_u64().unwrap_or_default(), answer["body"].as_str().unwrap_or_default().to_string()))
}

/// The text of `path` (relative to the home) through the contents API; None when there is no such file.
pub async fn read_file(browser: &Browser, path: &str) -> Result<Option<String>> {
    let (status, body) = contents(browser, "GET", &format!("{path}?type=file&format=text&content=1"), None).await?;
    match status {
        200 => {
            let model: serde_json::Value =
                serde_json::from_str(&body).map_err(|err| anyhow!("the contents API's model of {path}: {err}"))?;
            Ok(model["content"].as_str().map(str::to_owned))
        }
        404 => Ok(None),
        _ => bail!("reading {path} through the contents API answered {status}: {body}"),
    }
}

/// Writes `text` to `path` (relative to the home) through the contents API, as the editor saves.
pub async fn write_file(browser: &Browser, path: &str, text: &str) -> Result<()> {
    let (status, body) = contents(browser, "PUT", path, Some(json!({ "type": "file", "format": "text", "content": text }))).await?;
    if status != 200 && status != 201 {
        bail!("writing {path} through the contents API answered {status}: {body}");
    }
    Ok(())
}
