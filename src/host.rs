//! The programs a host needs besides the Docker engine and Compose v2 (`compose` finds those), as one list:
//! each with who needs it, the variable that names another copy, what it is for and how to install it.
//! `cargo xtask up` (what it sets up), `cargo xtask doctor` (what it reports) and the tests' preflight
//! read their names and hints here, so the three cannot drift apart; each looks for the programs itself,
//! and none of this talks to the engine.

use std::path::{Path, PathBuf};

/// Which work a program serves: without it only that work stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeededBy {
    /// `cargo xtask build-images` (and `up` unless `--no-build`): the base image is made with it.
    Build,
    /// The Docker tests: their browser.
    Tests,
    /// `cargo xtask lock` only: without it the platform still builds, runs and is tested.
    Lock,
}

/// A program the host needs, and how a person gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    pub name: &'static str,
    /// The environment variable that names another copy (a browser outside Debian's paths).
    pub override_variable: Option<&'static str>,
    pub purpose: &'static str,
    /// The next step when it is missing, as a `hint:`.
    pub install: &'static str,
    pub needed_by: NeededBy,
}

pub const MMDEBSTRAP: Program = Program {
    name: "mmdebstrap",
    override_variable: None,
    purpose: "makes the base image",
    install: "apt-get install -y mmdebstrap",
    needed_by: NeededBy::Build,
};

/// Names the tests' Chromium binary, instead of Debian's `/usr/bin/chromium`.
const CHROMIUM_VARIABLE: &str = "JHUB_CHROMIUM";
/// Names the tests' chromedriver, instead of the one on PATH.
const CHROMEDRIVER_VARIABLE: &str = "JHUB_CHROMEDRIVER";

pub const CHROMIUM: Program = Program {
    name: "chromium",
    override_variable: Some(CHROMIUM_VARIABLE),
    purpose: "the acceptance test's browser",
    install: "apt-get install -y chromium (or set JHUB_CHROMIUM)",
    needed_by: NeededBy::Tests,
};

pub const CHROMEDRIVER: Program = Program {
    name: "chromedriver",
    override_variable: Some(CHROMEDRIVER_VARIABLE),
    purpose: "drives chromium for the acceptance test",
    install: "apt-get install -y chromium-driver (or set JHUB_CHROMEDRIVER)",
    needed_by: NeededBy::Tests,
};

pub const UV: Program = Program {
    name: "uv",
    override_variable: None,
    purpose: "`cargo xtask lock` compiles Python pins with it",
    install: "pipx install uv==0.13.9 (or pip install it in a venv; README, Build)",
    needed_by: NeededBy::Lock,
};

pub const NPM: Program = Program {
    name: "npm",
    override_variable: None,
    purpose: "`cargo xtask lock` resolves npm pins with it",
    install: "apt-get install -y npm",
    needed_by: NeededBy::Lock,
};

/// Every program of the list, in the order `doctor` reports them.
pub const PROGRAMS: [Program; 5] = [MMDEBSTRAP, CHROMIUM, CHROMEDRIVER, UV, NPM];

/// The next step for a host whose Docker engine does not answer.
pub const ENGINE_INSTALL: &str = "apt-get install -y docker.io, then start `dockerd` (ci/setup-host.sh does both)";

/// The path of `program` on PATH, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|path| path.is_file())
}

/// Where the tests' Chromium is; `JHUB_CHROMIUM` overrides Debian's path.
pub fn chromium_binary() -> PathBuf {
    std::env::var_os(CHROMIUM_VARIABLE).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The chromedriver program the tests run; `JHUB_CHROMEDRIVER` overrides the one on PATH.
pub fn chromedriver_program() -> PathBuf {
    std::env::var_os(CHROMEDRIVER_VARIABLE).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("chromedriver"))
}

#[cfg(test)]
mod tests {
    use super::PROGRAMS;

    #[test]
    fn each_override_variable_is_named_in_its_hint() {
        // The hint is the admin's only pointer to the variable the tests and `doctor` read.
        for program in PROGRAMS {
            if let Some(variable) = program.override_variable {
                assert!(program.install.contains(variable), "{}: {}", program.name, program.install);
            }
        }
    }
}
