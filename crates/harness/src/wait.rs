//! Bounded polling: every wait in the harness is a condition checked until it holds or a deadline passes.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// The default bound for a condition in the UI (JupyterHub's own browser tests use 30 s too).
pub const DEFAULT: Duration = Duration::from_secs(30);

/// The bound for a spawn: form submitted → JupyterLab (or the image's app) ready.
pub const SPAWN: Duration = Duration::from_secs(180);

/// The bound for a proxied app (code-server, marimo) to start and render behind jupyter-server-proxy.
pub const APP: Duration = Duration::from_secs(120);

/// How long to sleep between two checks of a condition; short, so a wait ends soon after it holds.
const INTERVAL: Duration = Duration::from_millis(250);

/// Checks `probe` until it yields `Some`, and fails after `timeout` naming `what` was awaited. An `Err`
/// from the probe counts as "not yet" (pages reload, elements go stale) but is kept for the timeout message.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last_error = Some(err),
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(err) => bail!("timed out after {} s waiting for {what} (last error: {err:#})", timeout.as_secs()),
                None => bail!("timed out after {} s waiting for {what}", timeout.as_secs()),
            }
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
