//! The project's verbs, reached as `cargo xtask <verb>`: build images, refresh pinned inputs, run the stack
//! and check the host. `main` parses the command line and dispatches to one module per verb.

mod base;
mod build;
mod checks;
mod context;
mod doctor;
mod engine;
mod pin;
mod stack;
mod tls;
mod ui;

use std::process::ExitCode;

use ui::UserError;

const USAGE: &str = "\
usage: cargo xtask <verb> [options]

verbs:
  build-images [IMAGE…] [--locked] [--ca-bundle FILE]
                    build every catalog image (or IMAGE and its parents) and record them in images.lock
  lock              refresh pinned inputs: requirements.in → requirements.txt, package.json → package-lock.json
  up [--no-build]   build missing images, start the stack, wait for it and print the URL and admin login
  down [--volumes]  stop the stack and remove user containers (user volumes are kept unless --volumes)
  logs [SERVICE…]   follow the stack's logs
  doctor            check the engine, mmdebstrap, disk space, compose, chromium and chromedriver

environment:
  JHUB_CA_BUNDLE    CA bundle build stages trust (default /etc/ssl/certs/ca-certificates.crt)
  NO_COLOR          plain output";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((verb, rest)) = args.split_first() else {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let result = match verb.as_str() {
        "build-images" => build::run(rest),
        "lock" => pin::run(rest),
        "up" => stack::up(rest),
        "down" => stack::down(rest),
        "logs" => stack::logs(rest),
        "doctor" => doctor::run(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(UserError::new(format!("unknown verb `{other}`"), "run `cargo xtask` to list the verbs").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            ui::report_error(&err);
            ExitCode::FAILURE
        }
    }
}
