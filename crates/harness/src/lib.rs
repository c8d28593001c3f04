//! The test support every Docker test of jhub-docker uses (acceptance, resilience, security, cluster, the
//! xtask's template test), and `cargo xtask bench` too: one stack lifecycle (`stack`: an isolated compose
//! project, port, network and volume prefix, removed on drop; `checkout`: a scratch checkout of the
//! project whose `up` starts it), one hub client without a browser (`client`: signup, login, `_xsrf`, REST
//! spawn, contents, kernels), headless Chromium (`browser`) and what a person does with it (`hub`, `lab`,
//! `apps`, `steps`), the TLS front door (`tls`, on `jhub_docker::certs`), engine helpers (`docker`), the
//! preflight (`preflight`), what a user's container reaches (`probes`), the test cluster (`cluster`),
//! artifacts of failed steps (`artifacts`) and waiting for a condition (`wait`).

/// Progress and timings on stderr, written past libtest's output capture so they show in every run (CI
/// logs included), not only for failing tests or with `--nocapture`.
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod apps;
pub mod artifacts;
pub mod browser;
pub mod cases;
pub mod checkout;
pub mod client;
pub mod cluster;
pub mod docker;
pub mod gitserver;
pub mod hub;
pub mod lab;
pub mod preflight;
pub mod probes;
pub mod stack;
pub mod steps;
pub mod tls;
pub mod wait;
