//! The reference of every bench run: the same fixed work, measured on this machine at the start of the
//! run, so a figure can travel between machines as its ratio to it. Two pieces of single-threaded CPU work
//! of the kinds users wait for, neither of which the platform's own tuning changes: compiling a fixed set
//! of Python's standard library (what an import does, in the hub image's Python) and one bcrypt hash at
//! cost 12 (a login's work at bcrypt's default cost, whatever cost the hub is set to), each the median of
//! three fresh processes, timed by the process's own CPU clock so a busy machine's waiting does not count.
//!
//! Runs recorded before this work was fixed measured the single-user server's imports instead
//! (`ReferenceWork::ServerImports`): work that shrinks when the server starts faster, so a ratio to it hid
//! exactly the savings it should show. Runs whose references measured different work are compared as
//! measured.

use std::time::Duration;

use bollard::Docker;
use serde::{Deserialize, Serialize};

use crate::engine;
use crate::ui::UserError;

/// How long the reference's containers may take (three compilations, three hashes, on a slow machine).
const REFERENCE_TIMEOUT: Duration = Duration::from_secs(180);

/// Compiles five standard-library packages (66 files, 1.3 million characters of Python in Debian's 3.13)
/// four times over, read before the clock starts: parsing and compiling only, no disk, no third-party
/// code; about half a CPU-second, as long as the server's imports took.
const COMPILE_SCRIPT: &str = "import pathlib, sysconfig, time;     root = pathlib.Path(sysconfig.get_paths()['stdlib']);     sources = [(str(f), f.read_text()) for d in ('asyncio', 'email', 'json', 'http', 'logging') for f in sorted((root / d).glob('*.py'))];     t = time.process_time(); [compile(text, name, 'exec') for _ in range(4) for name, text in sources]; print(time.process_time() - t)";
/// One hash at cost 12, bcrypt's default: fixed, so lowering the hub's cost shows as faster logins.
const BCRYPT_SCRIPT: &str =
    "import time, bcrypt; t = time.process_time();     bcrypt.hashpw(b'reference', bcrypt.gensalt(12)); print(time.process_time() - t)";

/// What a run's reference measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceWork {
    /// Runs before the work was fixed: the datascience image's server imports (and bcrypt at 12).
    #[default]
    ServerImports,
    /// Compiling the standard library's packages in the hub image's Python (and bcrypt at 12).
    StdlibCompile,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Absent in older records, which measured the server's imports.
    #[serde(default)]
    pub work: ReferenceWork,
    /// CPU-seconds of the Python work (median of 3); older records name it `import_cpu_seconds`.
    #[serde(alias = "import_cpu_seconds")]
    pub python_cpu_seconds: f64,
    /// CPU-seconds of one bcrypt hash at cost 12 in the hub image (median of 3).
    pub bcrypt_cpu_seconds: f64,
}

impl Reference {
    /// A reference of today's work (the tests' and `measure`'s constructor).
    pub fn new(python_cpu_seconds: f64, bcrypt_cpu_seconds: f64) -> Reference {
        Reference { work: ReferenceWork::StdlibCompile, python_cpu_seconds, bcrypt_cpu_seconds }
    }

    /// What every time figure is divided by: both pieces of work together.
    pub fn seconds(&self) -> f64 {
        self.python_cpu_seconds + self.bcrypt_cpu_seconds
    }

    /// `value` (of `unit`) as a multiple of the reference: for times (`s`, `cpu-s`) only; memory and
    /// percentages do not scale with a machine's speed.
    pub fn ratio(&self, unit: &str, value: f64) -> Option<f64> {
        matches!(unit, "s" | "cpu-s").then(|| super::stats::ratio(value, self.seconds())).flatten()
    }

    /// How the table names the Python work.
    pub fn python_work(&self) -> &'static str {
        match self.work {
            ReferenceWork::ServerImports => "the server's imports",
            ReferenceWork::StdlibCompile => "compiling stdlib packages",
        }
    }
}

/// Measures the reference in the hub image (on `docker`).
pub async fn measure(docker: &Docker, hub_image: &str) -> anyhow::Result<Reference> {
    Ok(Reference::new(
        median_of_three(docker, hub_image, COMPILE_SCRIPT, "python3").await?,
        median_of_three(docker, hub_image, BCRYPT_SCRIPT, "python3").await?,
    ))
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
    use super::{Reference, ReferenceWork, median};

    #[test]
    fn the_median_of_three_timings_is_the_middle_one() {
        assert_eq!(median("0.9\n0.7\n1.4\n"), Some(0.9));
        assert_eq!(median("0.5\n0.5\n"), None, "two timings are not three");
        assert_eq!(median("0.5\nnan\n0.5\n"), None);
        assert_eq!(median("0.5\nerror\n0.5\n"), None);
    }

    #[test]
    fn times_are_divided_by_both_pieces_of_work_and_nothing_else_is() {
        let reference = Reference::new(0.75, 0.25);
        assert_eq!(reference.seconds(), 1.0);
        assert_eq!(reference.ratio("s", 2.5), Some(2.5));
        assert_eq!(reference.ratio("cpu-s", 0.5), Some(0.5));
        assert_eq!(reference.ratio("MB", 300.0), None);
        assert_eq!(reference.ratio("%", 12.0), None);
        let nothing = Reference::new(0.0, 0.0);
        assert_eq!(nothing.ratio("s", 1.0), None, "no ratio to a reference of zero");
    }

    #[test]
    fn older_records_read_as_the_server_imports_they_measured() {
        let old: Reference = serde_json::from_str(r#"{"import_cpu_seconds": 0.5, "bcrypt_cpu_seconds": 0.2}"#).expect("an old record");
        assert_eq!(old.work, ReferenceWork::ServerImports);
        assert_eq!(old.python_cpu_seconds, 0.5);
        let new = Reference::new(0.3, 0.2);
        let written = serde_json::to_string(&new).expect("serializable");
        assert!(written.contains(r#""work":"stdlib-compile""#), "{written}");
        assert_eq!(serde_json::from_str::<Reference>(&written).expect("round trip"), new);
    }
}
