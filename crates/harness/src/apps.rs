//! The apps beside JupyterLab as a person uses them: VS Code (code-server) and marimo, whether opened from
//! Lab's Launcher or landed in directly (the uv-code and uv-marimo images, behind jupyter-standaloneproxy).

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, ensure};
use fantoccini::key::Key;
use serde_json::json;

use crate::browser::Browser;
use crate::wait;

/// The selector that proves code-server's workbench rendered.
pub const VSCODE_RENDERED: &str = ".monaco-workbench";

/// A row of VS Code's Explorer: the folder's files come over the remote file system once the workbench
/// has settled its workspace trust state (seen: with trust on, the Restricted Mode indicator shows about
/// 0.3 s before these rows), so once a row shows, a missing indicator means trust is really off.
const VSCODE_EXPLORER_ROW: &str = ".explorer-folders-view .monaco-list-row";

/// marimo started without a file shows its home page; its "Create a new notebook" link opens a tab.
pub const MARIMO_HOME_NEW_NOTEBOOK: &str = "#root a[href*='file=__new__']";

/// A marimo notebook's cell with its editor: the cells arrive over marimo's websocket, so this proves
/// the session works through the proxy, not only that the HTML shell loaded.
pub const MARIMO_NOTEBOOK_RENDERED: &str = ".marimo-cell [data-testid='cell-editor']";

/// After a spawn of an image whose server is the app itself: waits until `rendered` shows. When it does
/// not, the error also says what the page loaded (`page_report`), since the app's HTML shell alone leaves
/// an empty page.
///
/// Chromium here runs on the Docker host: when the engine adds or removes a container's network interface
/// it reports a network change and aborts every load in flight (`net::ERR_NETWORK_CHANGED`, seen right
/// after a spawn, while marimo's page fetched its 200 script modules), which leaves the page blank for
/// good. A person reloads; so does this wait, at most twice and saying so, and only on that error logged
/// after `since` (when the spawn was asked for).
pub async fn land_in(browser: &Browser, rendered: &str, since: SystemTime) -> Result<()> {
    let since_ms = since.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let reloads = Cell::new(0u32);
    let mut polls = 0u32;
    let landed = wait::until(&format!("`{rendered}` to be visible"), wait::SPAWN, || {
        polls += 1;
        let check_console = polls.is_multiple_of(4);
        let reloads = &reloads;
        async move {
            if browser.is_visible(rendered).await? {
                return Ok(Some(()));
            }
            if reloads.get() < 3
                && let Some(code) = browser.network_error().await?
            {
                // The page itself did not load (its navigation was aborted): Chromium's error page.
                reloads.set(reloads.get() + 1);
                progress!("the page did not load ({code}, Chromium's error page); reloading it");
                browser.client.refresh().await?;
                return Ok(None);
            }
            if check_console && reloads.get() < 2 {
                let lines = browser.new_console_lines().await?;
                let aborted = lines.lines().find(|line| {
                    let logged_at: u128 = line.split_whitespace().next().and_then(|ms| ms.parse().ok()).unwrap_or_default();
                    logged_at >= since_ms && line.contains("ERR_NETWORK_CHANGED")
                });
                if let Some(aborted) = aborted {
                    reloads.set(reloads.get() + 1);
                    progress!("the page's loads were aborted by a network change on the Docker host; reloading it ({aborted})");
                    browser.client.refresh().await?;
                }
            }
            Ok(None)
        }
    })
    .await;
    if let Err(err) = landed {
        let report = page_report(browser).await.unwrap_or_else(|report_err| format!("(no report: {report_err:#})"));
        return Err(anyhow!("{err:#}; the page: {report}"));
    }
    Ok(())
}

/// What the current page loaded, for a failure message: its ready state, the service worker controlling
/// it (apps share the user's path /user/<name>/, so one app's worker can control another's page), and every
/// resource that did not load with status 200.
pub async fn page_report(browser: &Browser) -> Result<String> {
    let report = browser
        .js(
            r#"
            const resources = performance.getEntriesByType('resource');
            return {
                readyState: document.readyState,
                serviceWorker: navigator.serviceWorker && navigator.serviceWorker.controller ? navigator.serviceWorker.controller.scriptURL : null,
                resources: resources.length,
                notOk: resources.filter(r => r.responseStatus !== 200).map(r => `${r.responseStatus} ${r.initiatorType} ${r.name}`),
            };
            "#,
            vec![],
        )
        .await?;
    Ok(report.to_string())
}

/// Waits until VS Code's Explorer shows the folder's files, then fails if the workbench is in Restricted
/// Mode or asks whether to trust the folder (workspace trust is switched off in the images).
pub async fn vscode_trusted(browser: &Browser) -> Result<()> {
    browser.visible(VSCODE_EXPLORER_ROW, wait::APP).await?;
    let restricted = browser
        .js(
            "const w = document.querySelector('.monaco-workbench'); return !w || !!document.getElementById('status.workspaceTrust') || /Restricted Mode|trust the authors/i.test(w.innerText);",
            vec![],
        )
        .await?;
    let url = browser.url().await.unwrap_or_default();
    ensure!(restricted == json!(false), "VS Code opened in Restricted Mode (workspace trust is on) at {url}");
    Ok(())
}

/// The folder VS Code has open, as code-server puts it in the page's query (`?folder=/home/ewn`).
pub async fn vscode_folder(browser: &Browser) -> Result<Option<String>> {
    let url = browser.client.current_url().await?;
    Ok(url.query_pairs().find(|(key, _)| key == "folder").map(|(_, value)| value.into_owned()))
}

/// Waits until VS Code's Explorer lists `file` at the top of the open folder.
pub async fn vscode_lists(browser: &Browser, file: &str, timeout: Duration) -> Result<()> {
    wait::until(&format!("VS Code's Explorer to list `{file}`"), timeout, || async {
        let rows = browser
            .js(
                "return Array.from(document.querySelectorAll(arguments[0])).map(r => (r.getAttribute('aria-label') || r.textContent || '').trim());",
                vec![json!(VSCODE_EXPLORER_ROW)],
            )
            .await?;
        let rows: Vec<String> = serde_json::from_value(rows)?;
        Ok(rows.iter().any(|row| row == file || row.split_whitespace().next() == Some(file)).then_some(()))
    })
    .await
}

/// On marimo's home page: opens "Create a new notebook" (a new tab, which the browser switches to) and
/// waits until its first cell's editor rendered. Returns the notebook's URL.
pub async fn marimo_new_notebook(browser: &Browser) -> Result<String> {
    let opening = SystemTime::now();
    let url = crate::lab::follow_into_new_tab(browser, MARIMO_HOME_NEW_NOTEBOOK).await?;
    // The new tab loads marimo's many script modules: reloaded if a network change aborted them.
    land_in(browser, MARIMO_NOTEBOOK_RENDERED, opening).await?;
    Ok(url)
}

/// In a marimo notebook: types `code` into the first cell, runs it (Ctrl+Enter, as a person would) and
/// waits until the cell's output reads `expected`. A run sent before marimo's kernel took the websocket
/// is lost, so the run is asked again while the output stays empty.
pub async fn marimo_run_first_cell(browser: &Browser, code: &str, expected: &str) -> Result<()> {
    let editor_css = ".marimo-cell [data-testid='cell-editor'] .cm-content";
    let editor = browser.visible(editor_css, wait::APP).await?;
    editor.click().await?;
    editor.send_keys(code).await?;
    let typed = browser.texts(editor_css).await?;
    ensure!(typed.first().is_some_and(|text| text.contains(code)), "marimo's first cell reads {typed:?} after typing `{code}`");
    let run_keys = format!("{}{}{}", char::from(Key::Control), char::from(Key::Enter), char::from(Key::Null));
    let mut polls = 0u32;
    wait::until(&format!("marimo's first cell to output `{expected}`"), Duration::from_secs(90), || {
        let ask = polls.is_multiple_of(20);
        polls += 1;
        let run_keys = run_keys.as_str();
        async move {
            let outputs = browser.texts(".marimo-cell .output-area").await?;
            if outputs.first().is_some_and(|output| output == expected) {
                return Ok(Some(()));
            }
            if ask && outputs.first().is_none_or(|output| output.is_empty()) {
                let editor = browser.visible(editor_css, wait::DEFAULT).await?;
                editor.click().await?;
                editor.send_keys(run_keys).await?;
            }
            Ok(None)
        }
    })
    .await
    .map_err(|err| anyhow!("{err:#} (the cell reads {:?})", typed))
}

/// The Launcher's `cards` name VS Code and marimo; VS Code opens (on the image's `home`, whatever folder
/// VS Code had open in another image, and not in Restricted Mode) and marimo opens and makes a new notebook, each through jupyter-server-proxy; back in
/// Lab, no error dialog.
pub async fn vscode_and_marimo_from_launcher(browser: &Browser, cards: &[String], home: &str) -> Result<()> {
    for wanted in ["VS Code", "marimo"] {
        ensure!(cards.iter().any(|card| crate::lab::names(card, wanted)), "the Launcher has no `{wanted}` card (cards: {cards:?})");
    }
    let (view, url) = crate::lab::open_proxied_app(browser, "VS Code", VSCODE_RENDERED).await?;
    progress!("VS Code workbench rendered at {url}");
    vscode_trusted(browser).await?;
    let folder = vscode_folder(browser).await?;
    ensure!(folder.as_deref() == Some(home), "VS Code has the folder {folder:?} open at {url}, expected {home}");
    crate::lab::leave_app(browser, view).await?;
    let (view, url) = crate::lab::open_proxied_app(browser, "marimo", MARIMO_HOME_NEW_NOTEBOOK).await?;
    progress!("marimo home rendered at {url}");
    let url = marimo_new_notebook(browser).await?;
    progress!("marimo notebook rendered at {url}");
    crate::lab::leave_app(browser, view).await?;
    crate::lab::no_error_dialog(browser).await
}
