//! The project's verbs, reached as `cargo xtask <verb>`: build images, refresh pinned inputs, run the stack
//! (on one host, or on a Docker Swarm and its test cluster) and check the host. `main` parses the command
//! line (clap) and dispatches to one module per verb.

mod accounts;
mod adopt;
mod archives;
mod backup;
mod base;
mod bench;
mod build;
mod checks;
mod cluster;
mod context;
mod engine;
mod host;
mod move_home;
mod new_image;
mod pin;
mod registry;
mod stack;
mod stack_settings;
mod swarm;
mod tls;
mod ui;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

/// The bundle build stages trust when neither --ca-bundle nor JHUB_CA_BUNDLE names one.
const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, lock, run and check jhub-docker",
    after_help = "Environment:\n  JHUB_CA_BUNDLE  CA bundle build stages trust (default /etc/ssl/certs/ca-certificates.crt)\n  \
                  NO_COLOR        plain output"
)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Build every catalog image (or IMAGE and its parents) and record them in images.lock
    BuildImages(BuildImagesArgs),
    /// Refresh pinned inputs: requirements.in → requirements.txt, package.json → package-lock.json
    Lock(LockArgs),
    /// Make your own image from a template folder: copy it to images/NAME and add its catalog entry
    NewImage(NewImageArgs),
    /// Set up what the host lacks (as root), build missing images, start the stack, wait for it and print
    /// the URL and admin login
    Up(UpArgs),
    /// Stop the stack and remove user containers (user volumes are kept unless --volumes)
    Down(DownArgs),
    /// Follow the stack's logs
    Logs(LogsArgs),
    /// Check the engine, mmdebstrap, disk space, Compose v2, chromium and chromedriver
    Doctor(DoctorArgs),
    /// Save the hub's database, cookie secret, settings, images.lock, every user's files and the groups'
    /// folders to DIR
    Backup(BackupArgs),
    /// Bring a backup back into a stopped stack (every sum is checked first)
    Restore(RestoreArgs),
    /// Label this stack's unlabelled user volumes (an earlier restore's) as the hub labels its own; a dry
    /// run unless --yes
    AdoptVolumes(AdoptVolumesArgs),
    /// List the archives of deleted users' files; purge them (a dry run unless --yes)
    Archives(ArchivesArgs),
    /// Lift the login lockouts of account NAME (every client address), in the running hub
    Unlock(AccountArgs),
    /// Give account NAME a new random password (printed once) and lift its lockouts
    ResetPassword(AccountArgs),
    /// Show TEXT on every hub page for a while (--for), or --clear it; with neither, show what is in force
    Announce(AnnounceArgs),
    /// Push every image of images.lock to the Swarm mode's registry and record each digest in the lock
    Push(PushArgs),
    /// Copy every image of images.lock into other engines through their APIs (Swarm mode without a registry)
    Load(LoadArgs),
    /// Move a user's home to another node of the swarm (copied, checksums compared, then the pin moved)
    MoveHome(MoveHomeArgs),
    /// A Swarm of engine-in-container nodes on this machine, with the registry and the stack deployed
    #[command(subcommand)]
    Cluster(ClusterVerb),
    /// Load-test a stack of its own: spawn, burst, ramp or idle (`cargo xtask bench --help`)
    Bench(bench::BenchArgs),
}

#[derive(Args, Debug)]
struct PushArgs {
    /// The registry as this machine's engine reaches it (a loopback address needs no TLS)
    #[arg(long = "to", value_name = "HOST:PORT", default_value = "127.0.0.1:5000")]
    registry: String,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Engines to load the images into, as DOCKER_HOST spells them (unix:///path/docker.sock)
    #[arg(value_name = "ENGINE", required = true)]
    engines: Vec<String>,
}

#[derive(Args, Debug)]
struct MoveHomeArgs {
    /// The user whose home moves
    user: String,
    /// The node it moves to (its hostname or id)
    #[arg(long, value_name = "NODE")]
    to: String,
    /// The stack's settings [default: stack/.env]
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// The engine of the node holding the home, as unix:///path [default: the test cluster's socket]
    #[arg(long, value_name = "ENGINE")]
    from_engine: Option<String>,
    /// The engine of the node it moves to, as unix:///path [default: the test cluster's socket]
    #[arg(long, value_name = "ENGINE")]
    to_engine: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ClusterVerb {
    /// Start the nodes, form the swarm, fill the registry, pull on every node, deploy the stack
    Up(ClusterUpArgs),
    /// Remove every node with its engine's state (and so every user's files on it)
    Down,
}

#[derive(Args, Debug)]
struct ClusterUpArgs {
    /// How many nodes (the first is the manager that runs the hub and the registry)
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The port on this machine's loopback the hub is published on
    #[arg(long, default_value_t = 8800)]
    http_port: u16,
    /// The port on this machine's loopback nginx's https is published on, with JHUB_TLS on
    #[arg(long, default_value_t = 8843)]
    https_port: u16,
    /// Single-user images every node pulls before the deploy, comma-separated [default: all]
    #[arg(long, value_name = "IMAGES", value_delimiter = ',')]
    pull: Option<Vec<String>>,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// A new folder to write the backup to
    dir: PathBuf,
    /// The stack's settings [default: stack/.env]
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    #[command(flatten)]
    swarm: SwarmBackupArgs,
}

/// How backup and restore reach a swarm stack's nodes.
#[derive(Args, Debug)]
struct SwarmBackupArgs {
    /// The stack runs on the swarm DOCKER_HOST manages: homes are read from (or written to) every node
    #[arg(long)]
    swarm: bool,
    /// A node's engine, as NODE=unix:///path/docker.sock (repeat for each node; default: the test cluster's sockets)
    #[arg(long, value_name = "NODE=ENGINE", requires = "swarm")]
    node_engine: Vec<String>,
}

impl SwarmBackupArgs {
    fn access(self, homes_to: Option<String>) -> Option<backup::SwarmAccess> {
        self.swarm.then_some(backup::SwarmAccess { node_engines: self.node_engine, homes_to })
    }
}

#[derive(Args, Debug)]
struct RestoreArgs {
    /// A folder `cargo xtask backup` wrote
    dir: PathBuf,
    /// Replace the stack's existing data (database, users' files, differing settings or lock)
    #[arg(long)]
    force: bool,
    /// Where the backup's settings go back to [default: stack/.env]
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    #[command(flatten)]
    swarm: SwarmBackupArgs,
    /// With --swarm: the node that gets the homes whose node the swarm lacks (or a single-host backup's)
    #[arg(long, value_name = "NODE", requires = "swarm")]
    homes_to: Option<String>,
}

#[derive(Args, Debug)]
struct AdoptVolumesArgs {
    /// Adopt them (copy, compare checksums, replace); without it, only list what would be adopted
    #[arg(long)]
    yes: bool,
    /// The stack's settings [default: stack/.env]
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ArchivesArgs {
    /// Delete the archive of this volume name, or every archive of this user name
    #[arg(long, value_name = "NAME", conflicts_with = "purge_all")]
    purge: Option<String>,
    /// Delete every archive of the stack
    #[arg(long)]
    purge_all: bool,
    /// Really delete (without it, a purge only says what it would delete)
    #[arg(long)]
    yes: bool,
}

#[derive(Args, Debug)]
struct LockArgs {
    /// Catalog images whose folders' inputs to pin; every image's when none is named
    #[arg(value_name = "IMAGE")]
    images: Vec<String>,
}

#[derive(Args, Debug)]
struct AnnounceArgs {
    /// The message, one line of at most 500 characters (plain text)
    #[arg(value_name = "TEXT", conflicts_with = "clear")]
    text: Option<String>,
    /// How long it shows: 30m, 2h, 3d
    #[arg(long = "for", value_name = "DURATION", default_value = "1d", value_parser = accounts::parse_duration)]
    duration: u64,
    /// Remove the announcement now
    #[arg(long)]
    clear: bool,
}

#[derive(Args, Debug)]
struct AccountArgs {
    /// The account's user name
    name: String,
}

#[derive(Args, Debug)]
struct BuildImagesArgs {
    /// Catalog images to build (with their parents); every image when none is named
    #[arg(value_name = "IMAGE")]
    images: Vec<String>,
    /// Fail instead of building when an input differs from images.lock (CI)
    #[arg(long)]
    locked: bool,
    /// CA bundle the build stages trust [env: JHUB_CA_BUNDLE] [default: /etc/ssl/certs/ca-certificates.crt]
    #[arg(long, value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct NewImageArgs {
    /// The new image's name (lowercase letters, digits and `-`), also its folder under images/
    name: String,
    /// The template folder under images/, such as singleuser-uv
    #[arg(long = "from", value_name = "TEMPLATE")]
    template: String,
    /// The template's flavour: the suffix of its Dockerfile.<flavour> (singleuser-uv: jupyterlab, codeserver, marimo)
    #[arg(long, value_name = "FLAVOUR")]
    variant: String,
    /// The spawn dropdown's text [default: NAME and the flavour in words]
    #[arg(long, value_name = "TEXT")]
    display_name: Option<String>,
    /// The line under it [default: which template and flavour it was made from]
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Start with the images images.lock records; build nothing
    #[arg(long)]
    no_build: bool,
    /// Deploy on the Docker Swarm whose manager DOCKER_HOST names (README, "Growing past one machine")
    #[arg(long)]
    swarm: bool,
    /// The stack's settings [default: stack/.env]
    #[arg(long, value_name = "FILE", requires = "swarm")]
    env_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DownArgs {
    /// Also delete the hub's data and this stack's user volumes (user files!)
    #[arg(long)]
    volumes: bool,
    /// With --volumes: also delete volumes with the user-volume prefix that carry no stack label
    #[arg(long, requires = "volumes")]
    force: bool,
    /// Remove the stack from the Docker Swarm whose manager DOCKER_HOST names (volumes stay)
    #[arg(long, conflicts_with = "volumes")]
    swarm: bool,
    /// The stack's settings [default: stack/.env]
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DoctorArgs {
    /// Check the Docker Swarm whose manager DOCKER_HOST names instead of this host
    #[arg(long)]
    swarm: bool,
    /// The stack's settings, with --swarm [default: stack/.env]
    #[arg(long, value_name = "FILE", requires = "swarm")]
    env_file: Option<PathBuf>,
    /// With --swarm: a node's engine, as NODE=unix:///path/docker.sock, to check that node's own view of the
    /// registry (repeat for each node; default: the test cluster's sockets)
    #[arg(long, value_name = "NODE=ENGINE", requires = "swarm")]
    node_engine: Vec<String>,
}

#[derive(Args, Debug)]
struct LogsArgs {
    /// Services to show (proxy, hub); all when none is named
    #[arg(value_name = "SERVICE")]
    services: Vec<String>,
}

/// The bundle build stages trust: --ca-bundle, else JHUB_CA_BUNDLE, else the system bundle.
fn ca_bundle(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("JHUB_CA_BUNDLE").filter(|value| !value.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| DEFAULT_CA_BUNDLE.into())
}

/// Parses the command line; help goes to stdout, a mistake becomes one `error:` and one `hint:` line.
fn parse() -> Result<Cli, ExitCode> {
    let err = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(err) => err,
    };
    let text = err.render().to_string();
    if !err.use_stderr() || err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // --help, --version, or `cargo xtask` alone: the help is the answer.
        print!("{text}");
        return Err(ExitCode::SUCCESS);
    }
    // clap's first paragraph, on one line: "the following required arguments were not provided: --volumes".
    let first_paragraph: Vec<&str> = text.lines().take_while(|line| !line.trim().is_empty()).map(str::trim).collect();
    let message = first_paragraph.join(" ").trim_start_matches("error: ").to_string();
    let usage = text.lines().find_map(|line| line.strip_prefix("Usage: ")).unwrap_or("cargo xtask <VERB>");
    let hint = format!("usage: {usage} (`--help` explains every option)");
    ui::report_error(&ui::UserError::new(message, hint).into());
    Err(ExitCode::from(2))
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let result = match cli.verb {
        Verb::BuildImages(args) => {
            build::run(build::Options { selection: args.images, locked: args.locked, ca_bundle: ca_bundle(args.ca_bundle) })
        }
        Verb::Lock(args) => pin::run(&args.images),
        Verb::NewImage(args) => new_image::run(&new_image::Options {
            name: args.name,
            template: args.template,
            flavour: args.variant,
            display_name: args.display_name,
            description: args.description,
        }),
        Verb::Up(args) if args.swarm => swarm::up_cli(&args.env_file.unwrap_or_else(stack_settings::default_env_file)),
        Verb::Up(args) => {
            let build = (!args.no_build).then(|| build::Options { selection: Vec::new(), locked: false, ca_bundle: ca_bundle(None) });
            stack::up(build)
        }
        Verb::Down(args) if args.swarm => swarm::down_cli(&args.env_file.unwrap_or_else(stack_settings::default_env_file)),
        Verb::Down(args) => stack::down(args.volumes, args.force, &args.env_file.unwrap_or_else(stack_settings::default_env_file)),
        Verb::Logs(args) => stack::logs(&args.services),
        Verb::Doctor(args) if args.swarm => {
            swarm::doctor_cli(&args.env_file.unwrap_or_else(stack_settings::default_env_file), &args.node_engine)
        }
        Verb::Doctor(_) => host::doctor(),
        Verb::Push(args) => registry::push_cli(&args.registry),
        Verb::Load(args) => registry::load_cli(&args.engines),
        Verb::Cluster(ClusterVerb::Up(args)) => {
            cluster::up(cluster::Options { nodes: args.nodes, http_port: args.http_port, https_port: args.https_port, pull: args.pull })
        }
        Verb::Cluster(ClusterVerb::Down) => cluster::down(),
        Verb::MoveHome(args) => move_home::run(&move_home::Options {
            user: args.user,
            to: args.to,
            env_file: args.env_file.unwrap_or_else(stack_settings::default_env_file),
            from_engine: args.from_engine,
            to_engine: args.to_engine,
        }),
        Verb::Bench(args) => bench::run(args),
        Verb::Backup(args) => backup::run_backup(&backup::BackupOptions {
            dir: args.dir,
            env_file: args.env_file.unwrap_or_else(stack_settings::default_env_file),
            swarm: args.swarm.access(None),
        }),
        Verb::Restore(args) => backup::run_restore(&backup::RestoreOptions {
            dir: args.dir,
            env_file: args.env_file.unwrap_or_else(stack_settings::default_env_file),
            force: args.force,
            swarm: args.swarm.access(args.homes_to),
        }),
        Verb::AdoptVolumes(args) => {
            adopt::run(&adopt::AdoptOptions { env_file: args.env_file.unwrap_or_else(stack_settings::default_env_file), yes: args.yes })
        }
        Verb::Archives(args) => {
            let purge = match (args.purge, args.purge_all) {
                (Some(name), _) => archives::Purge::Named(name),
                (None, true) => archives::Purge::All,
                (None, false) => archives::Purge::Nothing,
            };
            if args.yes && purge == archives::Purge::Nothing {
                Err(ui::UserError::new("--yes confirms a purge, and none was asked for", "add --purge NAME or --purge-all").into())
            } else {
                archives::run(purge, args.yes)
            }
        }
        Verb::Unlock(args) => accounts::run(accounts::Action::Unlock, &args.name),
        Verb::ResetPassword(args) => accounts::run(accounts::Action::ResetPassword, &args.name),
        Verb::Announce(args) => accounts::announce(&match (args.text, args.clear) {
            (Some(text), _) => accounts::Announcement::Set { text, seconds: args.duration },
            (None, true) => accounts::Announcement::Clear,
            (None, false) => accounts::Announcement::Show,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            ui::report_error(&err);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Verb};

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn build_images_takes_images_and_flags_in_any_order() {
        let cli = Cli::try_parse_from(["xtask", "build-images", "minimal", "--locked", "--ca-bundle", "/tmp/ca.crt", "lab"]).unwrap();
        let Verb::BuildImages(args) = cli.verb else { panic!("parsed as {:?}", cli.verb) };
        assert_eq!(args.images, ["minimal", "lab"]);
        assert!(args.locked);
        assert_eq!(args.ca_bundle.as_deref(), Some(std::path::Path::new("/tmp/ca.crt")));
    }

    #[test]
    fn unknown_flags_and_force_without_volumes_are_refused() {
        assert!(Cli::try_parse_from(["xtask", "build-images", "--lockd"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "down", "--force"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "doctor", "extra"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "down", "--volumes", "--force"]).is_ok());
    }

    #[test]
    fn bench_parses_its_scenario_and_options_and_lists_them_in_its_help() {
        let cli = Cli::try_parse_from(["xtask", "bench", "ramp", "--users", "30", "--poll"]).unwrap();
        assert!(matches!(cli.verb, Verb::Bench(_)), "parsed as {:?}", cli.verb);
        let help = Cli::try_parse_from(["xtask", "bench", "--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = help.to_string();
        for option in ["--users", "--duration", "--cycles", "--image", "--poll", "--compare", "--output", "--scenario"] {
            assert!(help.contains(option), "`cargo xtask bench --help` does not list {option}:\n{help}");
        }
    }

    #[test]
    fn new_image_needs_a_template_and_a_flavour() {
        let cli = Cli::try_parse_from(["xtask", "new-image", "team-demo", "--from", "singleuser-uv", "--variant", "marimo"]).unwrap();
        let Verb::NewImage(args) = cli.verb else { panic!("parsed as {:?}", cli.verb) };
        assert_eq!((args.name.as_str(), args.template.as_str(), args.variant.as_str()), ("team-demo", "singleuser-uv", "marimo"));
        assert_eq!(args.display_name, None);
        assert!(Cli::try_parse_from(["xtask", "new-image", "team-demo", "--from", "singleuser-uv"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "new-image", "--from", "singleuser-uv", "--variant", "marimo"]).is_err());
    }

    #[test]
    fn announce_takes_a_text_for_a_while_or_clears() {
        let cli = Cli::try_parse_from(["xtask", "announce", "Exam week", "--for", "2h"]).unwrap();
        let Verb::Announce(args) = cli.verb else { panic!("parsed as {:?}", cli.verb) };
        assert_eq!((args.text.as_deref(), args.duration, args.clear), (Some("Exam week"), 7200, false));
        let cli = Cli::try_parse_from(["xtask", "announce", "Maintenance"]).unwrap();
        let Verb::Announce(args) = cli.verb else { panic!("parsed as {:?}", cli.verb) };
        assert_eq!(args.duration, 86_400, "a day unless told");
        assert!(Cli::try_parse_from(["xtask", "announce", "x", "--clear"]).is_err(), "a text and --clear");
        let bad = Cli::try_parse_from(["xtask", "announce", "x", "--for", "2 weeks"]).unwrap_err().to_string();
        assert!(bad.contains("not a duration"), "{bad}");
    }

    #[test]
    fn archives_purge_one_name_or_all_never_both() {
        let cli = Cli::try_parse_from(["xtask", "archives", "--purge", "bob", "--yes"]).unwrap();
        let Verb::Archives(args) = cli.verb else { panic!("parsed as {:?}", cli.verb) };
        assert_eq!((args.purge.as_deref(), args.purge_all, args.yes), (Some("bob"), false, true));
        assert!(Cli::try_parse_from(["xtask", "archives", "--purge", "bob", "--purge-all"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "archives", "--purge"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "unlock"]).is_err(), "unlock needs a name");
        let cli = Cli::try_parse_from(["xtask", "reset-password", "carol"]).unwrap();
        let Verb::ResetPassword(args) = cli.verb else { panic!("parsed as {:?}", cli.verb) };
        assert_eq!(args.name, "carol");
    }

    #[test]
    fn backup_and_restore_take_one_folder() {
        let cli = Cli::try_parse_from(["xtask", "restore", "b", "--force", "--env-file", "x.env"]).unwrap();
        let Verb::Restore(args) = cli.verb else { panic!("parsed as {:?}", cli.verb) };
        assert_eq!(args.dir, std::path::PathBuf::from("b"));
        assert!(args.force);
        assert_eq!(args.env_file.as_deref(), Some(std::path::Path::new("x.env")));
        assert!(Cli::try_parse_from(["xtask", "backup", "b", "--force"]).is_err(), "backup overwrites nothing");
        assert!(Cli::try_parse_from(["xtask", "backup"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "backup", "a", "b"]).is_err());
    }
}
