//! The reference of every bench run: the same fixed work, measured on this machine at the start of the
//! run, so a figure can travel between machines as its ratio to it. Two pieces of single-threaded CPU work
//! that dominate what users wait for: importing the single-user server in the datascience image (most of a
//! spawn's CPU) and one bcrypt hash at the hub's cost (a login), each the median of three fresh processes,
//! timed by the process's own CPU clock so a busy machine's waiting does not count.

use std::time::Duration;

use bollard::Docker;
use serde::{Deserialize, Serialize};

use crate::engine;
use crate::ui::UserError;

/// How long the reference's containers may take (three imports, three hashes, on a slow machine).
const REFERENCE_TIMEOUT: Duration = Duration::from_secs(180);

/// The image whose single-user server import is timed, and what it imports: the server, its web app and
/// JupyterLab's extension, as `jupyterhub-singleuser` does before it listens.
pub const IMPORT_IMAGE: &str = "datascience";
const IMPORT_SCRIPT: &str = "import time; t = time.process_time(); \
    import jupyterhub.singleuser, jupyter_server.serverapp, jupyterlab.labapp; print(time.process_time() - t)";
/// The hub's own cost: bcrypt's default of 12 rounds, which NativeAuthenticator and `jhub_hub.auth` use.
const BCRYPT_SCRIPT: &str = "import time, bcrypt; t = time.process_time(); \
    bcrypt.hashpw(b'reference', bcrypt.gensalt(12)); print(time.process_time() - t)";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// CPU-seconds of importing the single-user server in the datascience image (median of 3).
    pub import_cpu_seconds: f64,
    /// CPU-seconds of one bcrypt hash at cost 12 in the hub image (median of 3).
    pub bcrypt_cpu_seconds: f64,
}

impl Reference {
    /// What every time figure is divided by: both pieces of work together.
    pub fn seconds(&self) -> f64 {
        self.import_cpu_seconds + self.bcrypt_cpu_seconds
    }

    /// `value` (of `unit`) as a multiple of the reference: for times (`s`, `cpu-s`) only; memory and
    /// percentages do not scale with a machine's speed.
    pub fn ratio(&self, unit: &str, value: f64) -> Option<f64> {
        matches!(unit, "s" | "cpu-s").then(|| super::stats::ratio(value, self.seconds())).flatten()
    }
}

/// Measures the reference with the locked datascience image and the hub image (both on `docker`).
pub async fn measure(docker: &Docker, import_image: &str, hub_image: &str) -> anyhow::Result<Reference> {
    Ok(Reference {
        import_cpu_seconds: median_of_three(docker, import_image, IMPORT_SCRIPT, "python3").await?,
        bcrypt_cpu_seconds: median_of_three(docker, hub_image, BCRYPT_SCRIPT, "python3").await?,
    })
}

/// Runs `script` three times, each in a fresh process, in one throwaway container of `image`.
async fn median_of_three(docker: &Docker, image: &str, script: &str, python: &str) -> anyhow::Result<f64> {
    let loop_script = format!("for i in 1 2 3; do {python} -c \"{script}\" || exit 1; done");
    let argv = ["sh".to_string(), "-c".to_string(), loop_script];
    let output = engine::run_in_container(docker, image, &argv, REFERENCE_TIMEOUT).await?;
    if output.exit_code != 0 {
        return Err(UserError::new(
            format!("the bench's reference work failed in {image}: {}", output.stderr.trim().lines().last().unwrap_or("no output")),
            "rebuild the images (`cargo xtask build-images`) and run the bench again",
        )
        .into());
    }
    median(&output.stdout).ok_or_else(|| {
        UserError::new(
            format!("the bench's reference work in {image} printed no three timings: {:?}", output.stdout.trim()),
            "rebuild the images (`cargo xtask build-images`) and run the bench again",
        )
        .into()
    })
}

/// The median of the three numbers `text` holds, one a line; None unless it holds exactly three.
fn median(text: &str) -> Option<f64> {
    let mut values: Vec<f64> = text.lines().map(|line| line.trim().parse::<f64>()).collect::<Result<_, _>>().ok()?;
    if values.len() != 3 || values.iter().any(|value| !value.is_finite() || *value < 0.0) {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[1])
}

#[cfg(test)]
mod tests {
    use super::{Reference, median};

    #[test]
    fn the_median_of_three_timings_is_the_middle_one() {
        assert_eq!(median("0.9\n0.7\n1.4\n"), Some(0.9));
        assert_eq!(median("0.5\n0.5\n"), None, "two timings are not three");
        assert_eq!(median("0.5\nnan\n0.5\n"), None);
        assert_eq!(median("0.5\nerror\n0.5\n"), None);
    }

    #[test]
    fn times_are_divided_by_both_pieces_of_work_and_nothing_else_is() {
        let reference = Reference { import_cpu_seconds: 0.75, bcrypt_cpu_seconds: 0.25 };
        assert_eq!(reference.seconds(), 1.0);
        assert_eq!(reference.ratio("s", 2.5), Some(2.5));
        assert_eq!(reference.ratio("cpu-s", 0.5), Some(0.5));
        assert_eq!(reference.ratio("MB", 300.0), None);
        assert_eq!(reference.ratio("%", 12.0), None);
        let nothing = Reference { import_cpu_seconds: 0.0, bcrypt_cpu_seconds: 0.0 };
        assert_eq!(nothing.ratio("s", 1.0), None, "no ratio to a reference of zero");
    }
}
