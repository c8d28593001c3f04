//! `cargo xtask bench`: a benchmark, not a test. It brings up a stack of its own, drives the hub as many
//! users would (signup, login, spawn, Lab, a kernel running `5 * 4`, stop) and prints p50 / p95 / max per
//! phase, every failure named, and keeps every sample as JSON under `target/bench/` for `--compare`.

mod reference;
mod report;
mod stack;
mod stats;
mod swarm;
mod users;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::StatsOptionsBuilder;
use futures_util::StreamExt;
use jhub_docker::catalog::Catalog;
use jhub_docker::lock::Lock;
use tokio::signal::unix::{SignalKind, signal};

use self::report::{Failure, Machine, Run, Sample};
use self::users::{User, WaitMode};
use crate::engine;
use crate::ui::{self, ProgressBar, UserError};

/// What `cargo xtask bench --help` adds below the options: the scenarios and the defaults.
const SCENARIOS: &str = "\
scenarios:
  spawn   one user, --cycles spawn/stop cycles per single-user image (or --image): request → ready,
          the container's CPU-seconds until ready, Lab, a kernel, stop; at the last cycle the server's
          memory and CPU at rest (Lab and the kernel open)
  burst   --users users at the same instant: signup, login, spawn, Lab, kernel `5 * 4`, stop
  ramp    --users users arriving evenly over --duration seconds, the same journey
  idle    --users servers running, each with a kernel open (or its app): hub, proxy and server memory
          and CPU once they settle";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// One user's spawn/stop cycles per single-user image
    Spawn,
    /// Users all at the same instant
    Burst,
    /// Users arriving evenly over --duration
    Ramp,
    /// Servers running, hub and proxy at rest
    Idle,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Spawn => "spawn",
            Scenario::Burst => "burst",
            Scenario::Ramp => "ramp",
            Scenario::Idle => "idle",
        }
    }
}

/// `cargo xtask bench`'s command line: the scenario (a word, or `--scenario NAME`) and its options, each
/// as `--name value` or `--name=value`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
#[command(after_help = SCENARIOS)]
pub struct BenchArgs {
    /// The scenario: spawn, burst, ramp or idle
    #[arg(value_enum, value_name = "SCENARIO", required_unless_present = "scenario_option")]
    scenario: Option<Scenario>,
    /// The scenario, as an option instead of the word
    #[arg(long = "scenario", value_enum, value_name = "NAME", conflicts_with = "scenario", hide_possible_values = true)]
    scenario_option: Option<Scenario>,
    /// How many users [default: burst 10, ramp 30, idle 50; spawn always one]
    #[arg(long, value_name = "N", value_parser = whole_number_above_zero)]
    users: Option<usize>,
    /// ramp: the seconds over which users arrive [default: 60]
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    duration: Option<Duration>,
    /// spawn: cycles per image [default: 5]
    #[arg(long, value_name = "N", value_parser = whole_number_above_zero)]
    cycles: Option<usize>,
    /// The single-user image (spawn: every one; others: the catalog's first)
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// Wait for spawns by asking for the user model every 0.2 s instead of following the progress event
    /// stream as the spawn page does
    #[arg(long)]
    poll: bool,
    /// Print the ratio new/old of every figure against an earlier run
    #[arg(long, value_name = "OLD.json")]
    compare: Option<PathBuf>,
    /// Where to write the run [default: target/bench/<UTC time>-<scenario>.json]
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// spawn, burst, ramp: run it on one host, then on the test cluster (`cargo xtask cluster up`), and
    /// print both side by side with where the cluster's spawns landed
    #[arg(long)]
    swarm: bool,
}

fn whole_number_above_zero(text: &str) -> Result<usize, String> {
    text.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| format!("{text:?} is not a whole number above 0"))
}

/// Seconds, with or without a trailing `s` (`60`, `60s`, `1.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    let seconds = text.trim_end_matches('s').parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0);
    seconds.map(Duration::from_secs_f64).ok_or_else(|| format!("{text:?} is not a number of seconds"))
}

/// The bench's options, as the command line gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    pub scenario: Scenario,
    /// burst 10, ramp 30, idle 50 when not given; spawn always uses one user.
    pub users: Option<usize>,
    /// ramp: the time over which users arrive (60 s when not given).
    pub duration: Option<Duration>,
    /// spawn: cycles per image (5 when not given).
    pub cycles: Option<usize>,
    pub image: Option<String>,
    pub poll: bool,
    pub compare: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub swarm: bool,
}

impl BenchArgs {
    fn options(self) -> BenchOptions {
        BenchOptions {
            // clap requires one of the two.
            scenario: self.scenario.or(self.scenario_option).expect("clap requires a scenario"),
            users: self.users,
            duration: self.duration,
            cycles: self.cycles,
            image: self.image,
            poll: self.poll,
            compare: self.compare,
            output: self.output,
            swarm: self.swarm,
        }
    }
}

/// `cargo xtask bench …`, as clap parsed it.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    run_with(&args.options())
}

/// What a scenario needs: the engine, the stack, how users wait, and where samples and failures go.
struct Bench {
    docker: Docker,
    /// The bench stack of its own once it is healthy (none on the test cluster).
    stack: OnceLock<jhub_harness::stack::Stack>,
    /// On the test cluster: its engines, and how many servers landed on each node.
    swarm: Option<swarm::SwarmSide>,
    /// Before every user's name: the cluster's hub outlives a run, so each run's users are new there.
    user_prefix: String,
    mode: WaitMode,
    /// When users started (reset once the stack is up): samples' `at` and the wall time count from here.
    started: Mutex<Instant>,
    samples: Mutex<Vec<Sample>>,
    failures: Mutex<Vec<Failure>>,
    tracker: Tracker,
    /// Each benchmarked image's `default_url`: where its users land (Lab, or an app such as marimo).
    default_urls: BTreeMap<String, String>,
}

pub fn run_with(options: &BenchOptions) -> anyhow::Result<()> {
    let root = jhub_docker::repo_root();
    let catalog = Catalog::load(&root)?;
    let lock = Lock::load(&jhub_docker::lock_path(&root))?;
    let single_user: Vec<String> = catalog.single_user_images().map(|(entry, _)| entry.name.clone()).collect();
    let images: Vec<String> = match &options.image {
        Some(name) if single_user.contains(name) => vec![name.clone()],
        Some(name) => {
            return Err(UserError::new(
                format!("`{name}` is not a single-user image of the catalog"),
                format!("use one of: {}", single_user.join(", ")),
            )
            .into());
        }
        None if options.scenario == Scenario::Spawn => single_user.clone(),
        None => single_user[..1].to_vec(),
    };
    let old = options.compare.as_deref().map(report::load).transpose()?;
    let users = options.users.unwrap_or(match options.scenario {
        Scenario::Spawn => 1,
        Scenario::Burst => 10,
        Scenario::Ramp => 30,
        Scenario::Idle => 50,
    });
    let duration = options.duration.unwrap_or(Duration::from_secs(60));
    let cycles = options.cycles.unwrap_or(5);
    let mode = if options.poll { WaitMode::Poll } else { WaitMode::Progress };

    let runtime = tokio::runtime::Runtime::new()?;
    let docker = runtime.block_on(engine::connect())?;
    // The view says which id each image has on this engine (and refuses what the engine lacks).
    let view = runtime.block_on(crate::view::resolve(&docker, &root))?;
    let mut image_ids = BTreeMap::new();
    for name in &images {
        let Some(image) = view.images.iter().find(|image| &image.name == name) else {
            return Err(
                UserError::new(format!("image `{name}` is not a single-user image of the catalog"), "see images/catalog.toml").into()
            );
        };
        image_ids.insert(name.clone(), image.image_id.clone());
    }
    let hub_image = runtime.block_on(stack::hub_image(&docker, &lock))?;
    let machine = runtime.block_on(machine(&docker))?;
    // The fixed work every figure is also shown against, measured before anything else loads the machine.
    ui::note("measuring the reference: compiling stdlib packages and one bcrypt hash at cost 12, three times each");
    let reference = runtime.block_on(reference::measure(&docker, &hub_image))?;
    let (commit, dirty) = git_commit(&root);
    let unix_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let started_utc = report::utc_stamp(unix_now);
    let settings = serde_json::json!({
        "users": if options.scenario == Scenario::Spawn { 1 } else { users },
        "duration_s": (options.scenario == Scenario::Ramp).then_some(duration.as_secs_f64()),
        "cycles": (options.scenario == Scenario::Spawn).then_some(cycles),
        "images": image_ids,
        "wait": if options.poll { "poll" } else { "progress" },
        "hub_image": hub_image,
    });

    if options.swarm && options.scenario == Scenario::Idle {
        return Err(UserError::new("--swarm runs spawn, burst or ramp", "measure idle servers on one host (without --swarm)").into());
    }
    let pass = Pass {
        options,
        images: &images,
        users,
        duration,
        cycles,
        mode,
        settings: &settings,
        started_utc: &started_utc,
        commit: &commit,
        dirty,
        machine: &machine,
        reference,
    };
    let run = run_pass(&runtime, &docker, &pass, &hub_image, &view, None)?;
    print!("{}", report::render(&run));
    let path = options.output.clone().unwrap_or_else(|| root.join("target/bench").join(format!("{started_utc}-{}.json", run.scenario)));
    report::save(&run, &path)?;
    if let (Some(old), Some(old_path)) = (&old, &options.compare) {
        print!("{}", report::render_comparison(&run, old, old_path));
    }
    println!("\nrecorded in {}", display_relative(&path, &root));
    if options.swarm {
        let side = runtime.block_on(swarm::SwarmSide::connect())?;
        ui::note(&format!("the same {} on the test cluster at {}", options.scenario.name(), side.url));
        let on_swarm = run_pass(&runtime, &docker, &pass, &hub_image, &view, Some(side))?;
        print!("{}", report::render(&on_swarm));
        let landed: Vec<String> = on_swarm.settings["placements"]
            .as_object()
            .map(|nodes| nodes.iter().map(|(node, count)| format!("{node}: {count}")).collect())
            .unwrap_or_default();
        println!("  spawns landed on the cluster's nodes: {}", if landed.is_empty() { "none".to_string() } else { landed.join(", ") });
        let swarm_path = path.with_file_name(format!("{started_utc}-{}-swarm.json", run.scenario));
        report::save(&on_swarm, &swarm_path)?;
        print!("{}", report::render_comparison(&on_swarm, &run, &path));
        println!(
            "\nrecorded in {}; on 2 cores the three nodes share the same cores: the ratios show the cost of the \
                  swarm's extra hop and spread, not a speed-up",
            display_relative(&swarm_path, &root)
        );
    }
    Ok(())
}

/// What every pass of one bench run shares.
struct Pass<'a> {
    options: &'a BenchOptions,
    images: &'a [String],
    users: usize,
    duration: Duration,
    cycles: usize,
    mode: WaitMode,
    settings: &'a serde_json::Value,
    started_utc: &'a str,
    commit: &'a str,
    dirty: bool,
    machine: &'a Machine,
    reference: reference::Reference,
}

/// Runs the scenario once: on a bench stack of its own (`swarm` None, the stack removed after), or on the
/// test cluster's hub, with users of their own names.
fn run_pass(
    runtime: &tokio::runtime::Runtime,
    docker: &Docker,
    pass: &Pass<'_>,
    hub_image: &str,
    view: &jhub_docker::view::HubView,
    swarm: Option<swarm::SwarmSide>,
) -> anyhow::Result<Run> {
    let Pass { options, images, users, duration, cycles, mode, .. } = *pass;
    let docker = docker.clone();
    let on_swarm = swarm.is_some();
    let mut settings = pass.settings.clone();
    let total = match options.scenario {
        Scenario::Spawn => (images.len() * cycles) as u64,
        _ => users as u64,
    };
    let bench = Arc::new(Bench {
        docker: docker.clone(),
        stack: OnceLock::new(),
        user_prefix: swarm.as_ref().map(|side| side.user_prefix.clone()).unwrap_or_default(),
        swarm,
        mode,
        started: Mutex::new(Instant::now()),
        samples: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
        tracker: Tracker::new(options.scenario.name(), total),
        default_urls: view.images.iter().map(|image| (image.name.clone(), image.default_url.clone())).collect(),
    });
    let outcome = runtime.block_on(async {
        // Registered before anything starts: Ctrl-C (or a TERM) ends the run, then the stack is removed.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let scenario = async {
            if !on_swarm {
                // A start that fails or is interrupted removes what it started.
                let started = stack::start(hub_image, view).await?;
                bench.stack.set(started).map_err(|_| anyhow::anyhow!("the bench stack was started twice"))?;
            }
            *bench.started.lock().expect("no poisoned lock") = Instant::now();
            bench.tracker.reset();
            let host_before = host_busy_cpu_seconds();
            let parts_before = if on_swarm { None } else { cpu_by_part(&bench).await.ok() };
            let outcome = match options.scenario {
                Scenario::Spawn => spawn_cycles(&bench, images, cycles).await,
                Scenario::Burst => crowd(&bench, &images[0], users, Duration::ZERO).await,
                Scenario::Ramp => crowd(&bench, &images[0], users, duration).await,
                Scenario::Idle => idle(&bench, &images[0], users).await,
            };
            // The whole machine's CPU over the scenario (the hub, the proxy, the engine, every server): what
            // a class costs a host, per user, for the sizing guide. On the cluster the nodes' are elsewhere.
            // Spawn's figures are per spawn, under the account's group; the others' per user, under the stack.
            let (group, per, suffix) = if options.scenario == Scenario::Spawn {
                ("session", (images.len() * cycles) as f64, "per spawn")
            } else {
                ("stack", users as f64, "per user")
            };
            if let (false, Some(before), Some(after)) = (on_swarm, host_before, host_busy_cpu_seconds()) {
                let used = after - before;
                bench.sample(group, "host cpu", "cpu-s", used, "");
                if options.scenario != Scenario::Spawn {
                    bench.sample(group, "host cpu per user", "cpu-s", used / users as f64, "");
                }
                let wall = bench.at();
                let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1) as f64;
                if wall > 0.0 {
                    bench.sample(group, "host busy", "%", used / wall / cores * 100.0, "");
                }
            }
            // Whose CPU it was: the hub's, the proxy's and the engine's (the rest is the users' servers).
            if let (Some(before), Ok(after)) = (parts_before, cpu_by_part(&bench).await) {
                for (part, used) in
                    [("hub", after.hub - before.hub), ("proxy", after.proxy - before.proxy), ("engine", after.engine - before.engine)]
                {
                    bench.sample(group, &format!("{part} cpu {suffix}"), "cpu-s", used / per, "");
                }
            }
            outcome
        };
        tokio::select! {
            outcome = scenario => outcome,
            _ = interrupt.recv() => Err(UserError::new("interrupted", "the bench stack was removed; nothing was recorded").into()),
            _ = terminate.recv() => Err(UserError::new("terminated", "the bench stack was removed; nothing was recorded").into()),
        }
    });
    bench.tracker.bar.finish_and_clear();
    let wall_seconds = bench.at();
    if let Some(stack) = bench.stack.get() {
        stack::remove(stack);
    }
    outcome?;
    if let Some(side) = &bench.swarm {
        settings["on"] = serde_json::json!("swarm");
        settings["placements"] = serde_json::json!(side.placements());
    }
    let scenario = if options.poll { format!("{}-poll", options.scenario.name()) } else { options.scenario.name().to_string() };
    Ok(Run {
        scenario,
        started_utc: pass.started_utc.to_string(),
        wall_seconds,
        commit: pass.commit.to_string(),
        dirty: pass.dirty,
        machine: pass.machine.clone(),
        settings,
        reference: Some(pass.reference),
        samples: std::mem::take(&mut *bench.samples.lock().expect("no poisoned lock")),
        failures: std::mem::take(&mut *bench.failures.lock().expect("no poisoned lock")),
    })
}

fn display_relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

async fn machine(docker: &Docker) -> anyhow::Result<Machine> {
    let version = docker.version().await?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_default();
    Ok(Machine {
        cores: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        memory_bytes: memory_kib * 1024,
        engine_version: version.version.unwrap_or_default(),
        kernel: version.kernel_version.unwrap_or_default(),
    })
}

/// The checkout's commit and whether tracked files differ from it.
fn git_commit(root: &Path) -> (String, bool) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|status| !status.is_empty());
    (commit, dirty)
}

impl Bench {
    /// Where users reach the hub: the test cluster's URL, or the bench stack's.
    fn url(&self) -> String {
        match (&self.swarm, self.stack.get()) {
            (Some(side), _) => side.url.clone(),
            (None, Some(stack)) => stack.url(""),
            (None, None) => unreachable!("users start once the bench stack is healthy"),
        }
    }

    fn at(&self) -> f64 {
        self.started.lock().expect("no poisoned lock").elapsed().as_secs_f64()
    }

    fn sample(&self, group: &str, phase: &str, unit: &str, value: f64, user: &str) {
        let sample = Sample { group: group.into(), phase: phase.into(), unit: unit.into(), value, user: user.into(), at: self.at() };
        self.samples.lock().expect("no poisoned lock").push(sample);
    }

    fn fail(&self, group: &str, phase: &str, user: &str, reason: &str) {
        // The user's name is replaced so that one cause reads as one reason across users.
        let reason = if user.is_empty() { reason.to_string() } else { reason.replace(user, "<u>") };
        self.tracker.failed(user, phase, &reason);
        let failure = Failure { group: group.into(), phase: phase.into(), user: user.into(), reason, at: self.at() };
        self.failures.lock().expect("no poisoned lock").push(failure);
    }

    /// Runs one phase of a user's journey, timed; records its duration or its failure.
    async fn step<T>(&self, user: &User, group: &str, phase: &str, work: impl Future<Output = Result<T, String>>) -> Option<T> {
        self.tracker.enter(&user.name, phase);
        let (seconds, outcome) = users::timed(work).await;
        match outcome {
            Ok(value) => {
                self.sample(group, phase, "s", seconds, &user.name);
                Some(value)
            }
            Err(reason) => {
                self.fail(group, phase, &user.name, &reason);
                None
            }
        }
    }

    fn new_user(&self, name: &str) -> anyhow::Result<User> {
        User::new(&self.url(), &format!("{}{name}", self.user_prefix))
    }

    /// From a running server to its stop: for a JupyterLab image, Lab and a kernel running `5 * 4`; for an
    /// image whose users land in an app without Lab (code-server or marimo behind the standalone proxy),
    /// that app's first page, which starts it; then the stop (also when a phase failed). `group` is the
    /// image's name. Returns whether every phase passed.
    async fn use_and_stop(&self, user: &User, group: &str) -> bool {
        let used = self.use_server(user, group).await;
        let stopped = self.step(user, group, "stop", user.stop()).await.is_some();
        used && stopped
    }

    /// Opens what the user lands on: Lab and a kernel running `5 * 4` (which stays open), or the app.
    async fn use_server(&self, user: &User, group: &str) -> bool {
        let default_url = self.default_urls.get(group).map(String::as_str).unwrap_or("/lab");
        if default_url.starts_with("/lab") {
            self.step(user, group, "lab", user.open_lab()).await.is_some()
                && self.step(user, group, "kernel", user.run_kernel()).await.is_some()
        } else {
            self.step(user, group, "app", user.open_app(default_url)).await.is_some()
        }
    }

    /// The whole journey of one user of `burst` and `ramp`.
    async fn journey(&self, name: &str, image: &str) {
        let user = match self.new_user(name) {
            Ok(user) => user,
            Err(err) => {
                self.fail(image, "signup", name, &format!("cannot make an HTTP client: {err}"));
                self.tracker.done(name, false);
                return;
            }
        };
        let ok = self.step(&user, image, "signup", user.sign_up()).await.is_some()
            && self.step(&user, image, "login", user.log_in()).await.is_some()
            && match self.step(&user, image, "spawn", user.spawn(image, self.mode)).await {
                Some(()) => {
                    if let Some(swarm) = &self.swarm {
                        swarm.count_placement(&user.name).await;
                    }
                    self.use_and_stop(&user, image).await
                }
                None => {
                    // Whatever the hub left of a failed spawn goes, unrecorded; the stack's removal takes
                    // the rest.
                    let _ = user.stop().await;
                    false
                }
            };
        self.tracker.done(name, ok);
    }
}

/// `spawn`: one user, `cycles` spawn/stop cycles of every image in turn.
async fn spawn_cycles(bench: &Arc<Bench>, images: &[String], cycles: usize) -> anyhow::Result<()> {
    let user = bench.new_user("bench-spawn")?;
    if bench.step(&user, "session", "signup", user.sign_up()).await.is_none()
        || bench.step(&user, "session", "login", user.log_in()).await.is_none()
    {
        return Err(UserError::new("the bench user could not sign up and log in; the failure is above", "see the hub's log").into());
    }
    for image in images {
        for cycle in 1..=cycles {
            bench.tracker.line(&format!("{image}: cycle {cycle} of {cycles}"));
            let spawned = bench.step(&user, image, "spawn", user.spawn(image, bench.mode)).await.is_some();
            if !spawned {
                let _ = user.stop().await;
                bench.tracker.done(&user.name, false);
                continue;
            }
            match user_cpu_seconds(bench, &user.name).await {
                Ok(seconds) => bench.sample(image, "cpu-until-ready", "cpu-s", seconds, &user.name),
                Err(err) => bench.fail(image, "cpu-until-ready", &user.name, &format!("engine stats: {err:#}")),
            }
            let used = bench.use_server(&user, image).await;
            if used && cycle == cycles && bench.swarm.is_none() {
                // Once per image, the sizing guide's figures: the server's memory and CPU at rest.
                if let Err(err) = idle_server_usage(bench, image, &user.name).await {
                    bench.fail(image, "server rss", &user.name, &format!("engine stats: {err:#}"));
                }
            }
            let stopped = bench.step(&user, image, "stop", user.stop()).await.is_some();
            bench.tracker.done(&user.name, used && stopped);
        }
    }
    Ok(())
}

/// How long a server rests after Lab and its kernel opened before its idle use is measured, and over what.
const SERVER_REST: Duration = Duration::from_secs(5);
const SERVER_IDLE_WINDOW: Duration = Duration::from_secs(10);

/// A user's server at rest (Lab and a kernel open, or the app): its resident memory and CPU use.
async fn idle_server_usage(bench: &Bench, image: &str, user: &str) -> anyhow::Result<()> {
    let stack = bench.stack.get().ok_or_else(|| anyhow::anyhow!("no bench stack"))?;
    let id = stack::user_container(stack, &bench.docker, user).await?;
    tokio::time::sleep(SERVER_REST).await;
    let server = one_usage_over(&bench.docker, &id, SERVER_IDLE_WINDOW).await?;
    bench.sample(image, "server rss", "MB", server.rss_mb, user);
    bench.sample(image, "server cpu", "%", server.cpu_percent, user);
    Ok(())
}

/// CPU-seconds used so far by the bench stack's hub and proxy containers and by the engine's own processes.
struct CpuByPart {
    hub: f64,
    proxy: f64,
    engine: f64,
}

async fn cpu_by_part(bench: &Bench) -> anyhow::Result<CpuByPart> {
    let stack = bench.stack.get().ok_or_else(|| anyhow::anyhow!("no bench stack"))?;
    let hub = stack::service_container(stack, &bench.docker, "hub").await?;
    let proxy = stack::service_container(stack, &bench.docker, "proxy").await?;
    Ok(CpuByPart {
        hub: container_usage(&bench.docker, &hub).await?.cpu_ns as f64 / 1e9,
        proxy: container_usage(&bench.docker, &proxy).await?.cpu_ns as f64 / 1e9,
        engine: engine_cpu_seconds(),
    })
}

/// The engine's processes (dockerd, containerd and the shims of the containers, the port proxies), from
/// `/proc`: their own CPU and that of the children they reaped (runc, which exits after each call).
fn engine_cpu_seconds() -> f64 {
    const ENGINE: &[&str] = &["dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-proxy"];
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|byte| byte.is_ascii_digit()))
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| process_cpu_seconds(&stat, ENGINE))
        .sum()
}

/// utime + stime + cutime + cstime of one `/proc/<pid>/stat` line, in seconds, if its command is one of
/// `names` (clock ticks of 1/100 s).
fn process_cpu_seconds(stat: &str, names: &[&str]) -> Option<f64> {
    let (head, rest) = stat.rsplit_once(')')?;
    let command = head.split_once('(')?.1;
    if !names.contains(&command) {
        return None;
    }
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(0) ppid … utime(11) stime(12) cutime(13) cstime(14).
    let ticks: u64 = (11..=14).map(|index| fields.get(index).and_then(|field| field.parse::<u64>().ok())).sum::<Option<u64>>()?;
    Some(ticks as f64 / 100.0)
}

/// The seconds every core of this machine has spent busy since boot (`/proc/stat`: user, nice, system,
/// irq, softirq and steal, in clock ticks of 1/100 s), None where there is no such file.
fn host_busy_cpu_seconds() -> Option<f64> {
    busy_seconds(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn busy_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<u64> =
        stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().map(|field| field.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal …
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&index| fields.get(index)).sum();
    (fields.len() >= 8).then_some(busy as f64 / 100.0)
}

/// The CPU time a user's container has used since it started (Engine stats API).
async fn user_cpu_seconds(bench: &Bench, user: &str) -> anyhow::Result<f64> {
    if let Some(swarm) = &bench.swarm {
        swarm.count_placement(user).await;
        let (node, id) = swarm.user_container(user).await?;
        return Ok(container_usage(&node, &id).await?.cpu_ns as f64 / 1e9);
    }
    let stack = bench.stack.get().ok_or_else(|| anyhow::anyhow!("no bench stack"))?;
    let id = stack::user_container(stack, &bench.docker, user).await?;
    Ok(container_usage(&bench.docker, &id).await?.cpu_ns as f64 / 1e9)
}

struct Usage {
    cpu_ns: u64,
    rss_bytes: u64,
    taken: Instant,
}

/// A container's CPU time so far and its resident memory (cgroup v1 `rss`, v2 `anon`; else the usage).
async fn container_usage(docker: &Docker, id: &str) -> anyhow::Result<Usage> {
    let options = StatsOptionsBuilder::default().stream(false).one_shot(true).build();
    let stats = docker.stats(id, Some(options)).next().await.ok_or_else(|| anyhow::anyhow!("the engine sent no stats for {id}"))??;
    let cpu_ns = stats.cpu_stats.and_then(|cpu| cpu.cpu_usage).and_then(|usage| usage.total_usage).unwrap_or_default();
    let memory = stats.memory_stats.unwrap_or_default();
    let from_stats = memory.stats.as_ref().and_then(|values| values.get("rss").or_else(|| values.get("anon")).copied());
    Ok(Usage { cpu_ns, rss_bytes: from_stats.or(memory.usage).unwrap_or_default(), taken: Instant::now() })
}

/// A container over a window: its memory at the end, its CPU over the whole window.
struct WindowUsage {
    rss_mb: f64,
    cpu_percent: f64,
}

/// Reads each container, waits `window`, reads them again (one window for all): one result per container,
/// in the order given.
async fn usage_over(docker: &Docker, ids: &[String], window: Duration) -> anyhow::Result<Vec<WindowUsage>> {
    let mut before = Vec::new();
    for id in ids {
        before.push(container_usage(docker, id).await?);
    }
    tokio::time::sleep(window).await;
    let mut usages = Vec::new();
    for (id, earlier) in ids.iter().zip(&before) {
        let now = container_usage(docker, id).await?;
        usages.push(WindowUsage { rss_mb: now.rss_bytes as f64 / 1e6, cpu_percent: cpu_percent(earlier, &now) });
    }
    Ok(usages)
}

/// `usage_over` of one container.
async fn one_usage_over(docker: &Docker, id: &str, window: Duration) -> anyhow::Result<WindowUsage> {
    let mut usages = usage_over(docker, &[id.to_string()], window).await?;
    usages.pop().ok_or_else(|| anyhow::anyhow!("no usage read for {id}"))
}

/// CPU use between two readings, in % of one core.
fn cpu_percent(before: &Usage, after: &Usage) -> f64 {
    let wall = after.taken.duration_since(before.taken).as_secs_f64();
    if wall <= 0.0 { 0.0 } else { after.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1e9 / wall * 100.0 }
}

/// `burst` (over = 0) and `ramp`: `count` users, the i-th starting at i · over / count.
async fn crowd(bench: &Arc<Bench>, image: &str, count: usize, over: Duration) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let mut journeys = tokio::task::JoinSet::new();
    for index in 0..count {
        let bench = bench.clone();
        let image = image.to_string();
        let offset = over.mul_f64(index as f64 / count as f64);
        journeys.spawn(async move {
            tokio::time::sleep_until(start + offset).await;
            bench.journey(&format!("bench-{:03}", index + 1), &image).await;
        });
    }
    while let Some(joined) = journeys.join_next().await {
        joined?;
    }
    Ok(())
}

/// How many `idle` users sign up and spawn at a time: enough to be quick, few enough to not be a burst.
const IDLE_SETUP_CONCURRENCY: usize = 4;
/// The hub is settled when its CPU use over [`SETTLE_WINDOW`] is below this (% of one core)…
const SETTLED_CPU_PERCENT: f64 = 5.0;
const SETTLE_WINDOW: Duration = Duration::from_secs(5);
/// …or, if it never is, after this long (the figures then say how busy it stayed).
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// The window over which idle CPU is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(30);

/// `idle`: `count` servers started a few at a time, each with Lab and a kernel open (or its app); once the
/// hub settles, the hub's and the proxy's memory and CPU, and each server's; then every server is stopped.
async fn idle(bench: &Arc<Bench>, image: &str, count: usize) -> anyhow::Result<()> {
    let gate = Arc::new(tokio::sync::Semaphore::new(IDLE_SETUP_CONCURRENCY));
    let mut setups = tokio::task::JoinSet::new();
    for index in 0..count {
        let (bench, gate, image) = (bench.clone(), gate.clone(), image.to_string());
        setups.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("the gate is never closed");
            let name = format!("bench-{:03}", index + 1);
            let user = match bench.new_user(&name) {
                Ok(user) => user,
                Err(err) => {
                    bench.fail(&image, "signup", &name, &format!("cannot make an HTTP client: {err}"));
                    bench.tracker.done(&name, false);
                    return None;
                }
            };
            let signed_in = bench.step(&user, &image, "signup", user.sign_up()).await.is_some()
                && bench.step(&user, &image, "login", user.log_in()).await.is_some();
            let spawned = signed_in && bench.step(&user, &image, "spawn", user.spawn(&image, bench.mode)).await.is_some();
            // Idle as a user leaves it: Lab open with a kernel (or the app) running.
            if !spawned || !bench.use_server(&user, &image).await {
                if signed_in {
                    let _ = user.stop().await;
                }
                bench.tracker.done(&user.name, false);
                return None;
            }
            bench.tracker.enter(&user.name, "running");
            Some(user)
        });
    }
    let mut running = Vec::new();
    while let Some(joined) = setups.join_next().await {
        running.extend(joined?);
    }
    ui::note(&format!("idle: {} of {count} servers running; waiting for the hub to settle", running.len()));

    let stack = bench.stack.get().ok_or_else(|| anyhow::anyhow!("idle runs on a bench stack of its own"))?;
    let hub = stack::service_container(stack, &bench.docker, "hub").await?;
    let proxy = stack::service_container(stack, &bench.docker, "proxy").await?;
    let settling = Instant::now();
    loop {
        if one_usage_over(&bench.docker, &hub, SETTLE_WINDOW).await?.cpu_percent < SETTLED_CPU_PERCENT || settling.elapsed() > SETTLE_LIMIT
        {
            break;
        }
    }
    bench.sample("stack", "settle", "s", settling.elapsed().as_secs_f64(), "");
    ui::note(&format!("idle: measuring over {} s", IDLE_WINDOW.as_secs()));

    let measured: Vec<String> =
        [hub.clone(), proxy.clone()].into_iter().chain(stack::user_containers(stack, &bench.docker).await?).collect();
    let usages = usage_over(&bench.docker, &measured, IDLE_WINDOW).await?;
    for (id, usage) in measured.iter().zip(usages) {
        let (group, who) = if *id == hub {
            ("stack", "hub")
        } else if *id == proxy {
            ("stack", "proxy")
        } else {
            (image, "server")
        };
        bench.sample(group, &format!("{who} rss"), "MB", usage.rss_mb, "");
        bench.sample(group, &format!("{who} cpu"), "%", usage.cpu_percent, "");
    }

    let mut stops = tokio::task::JoinSet::new();
    for user in running {
        let (bench, gate, image) = (bench.clone(), gate.clone(), image.to_string());
        stops.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("the gate is never closed");
            let ok = bench.step(&user, &image, "stop", user.stop()).await.is_some();
            bench.tracker.done(&user.name, ok);
        });
    }
    while let Some(joined) = stops.join_next().await {
        joined?;
    }
    Ok(())
}

/// The progress bar on stderr: users done out of all, and how many are in each phase; plain lines instead
/// when stderr is not a terminal.
struct Tracker {
    bar: ProgressBar,
    phases: Mutex<BTreeMap<String, String>>,
    started: Mutex<Instant>,
}

impl Tracker {
    fn new(scenario: &str, total: u64) -> Tracker {
        let bar = ui::bar(total, scenario);
        Tracker { bar, phases: Mutex::new(BTreeMap::new()), started: Mutex::new(Instant::now()) }
    }

    /// Starts the clock and the bar again (after the stack is up, when users start).
    fn reset(&self) {
        *self.started.lock().expect("no poisoned lock") = Instant::now();
        self.bar.reset();
        ui::tick(&self.bar);
    }

    fn line(&self, text: &str) {
        let elapsed = self.started.lock().expect("no poisoned lock").elapsed().as_secs_f64();
        ui::line(&self.bar, &format!("{elapsed:>7.1} s  {text}"));
    }

    fn refresh(&self, phases: &BTreeMap<String, String>) {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for phase in phases.values() {
            *counts.entry(phase.as_str()).or_default() += 1;
        }
        let text: Vec<String> = counts.iter().map(|(phase, count)| format!("{phase} {count}")).collect();
        self.bar.set_message(text.join(" · "));
    }

    fn enter(&self, user: &str, phase: &str) {
        let mut phases = self.phases.lock().expect("no poisoned lock");
        phases.insert(user.to_string(), phase.to_string());
        self.refresh(&phases);
        if self.bar.is_hidden() {
            self.line(&format!("{user}: {phase}"));
        }
    }

    fn failed(&self, user: &str, phase: &str, reason: &str) {
        self.line(&format!("{user}: {phase} failed: {reason}"));
    }

    fn done(&self, user: &str, ok: bool) {
        let mut phases = self.phases.lock().expect("no poisoned lock");
        phases.remove(user);
        self.refresh(&phases);
        self.bar.inc(1);
        if self.bar.is_hidden() {
            self.line(&format!(
                "{user}: {} ({}/{})",
                if ok { "done" } else { "failed" },
                self.bar.position(),
                self.bar.length().unwrap_or(0)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// `bench`'s arguments alone, as main.rs's `Verb::Bench` takes them.
    #[derive(Parser, Debug)]
    #[command(name = "bench")]
    struct Bench {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(text: &str) -> Result<BenchOptions, clap::Error> {
        Bench::try_parse_from(std::iter::once("bench").chain(text.split_whitespace())).map(|bench| bench.args.options())
    }

    fn refusal(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    #[test]
    fn an_engine_process_counts_its_own_and_its_reaped_childrens_cpu() {
        let dockerd = "812 (dockerd) S 1 812 812 0 -1 4194560 9 0 0 0 250 50 7 3 20 0 30 0 100 1 1\n";
        assert_eq!(super::process_cpu_seconds(dockerd, &["dockerd"]), Some(3.1));
        assert_eq!(super::process_cpu_seconds(dockerd, &["containerd"]), None, "another command");
        let odd = "9 (a) b (c)) S 1 9 9 0 -1 0 0 0 0 0 100 0 0 0 20 0 1 0 1 1 1\n";
        assert_eq!(super::process_cpu_seconds(odd, &["a) b (c)"]), Some(1.0), "a command with parentheses");
    }

    #[test]
    fn the_hosts_busy_time_leaves_idle_and_iowait_out() {
        let stat = "cpu  100 20 30 5000 70 1 2 3 0 0\ncpu0 50 10 15 2500 35 0 1 1 0 0\n";
        assert_eq!(super::busy_seconds(stat), Some(1.56));
        assert_eq!(super::busy_seconds("intr 1 2 3\n"), None);
        assert_eq!(super::busy_seconds("cpu  1 2 3\n"), None, "too few fields");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Bench::command().debug_assert();
    }

    #[test]
    fn scenarios_are_words_or_options() {
        assert_eq!(parse("burst").unwrap().scenario, Scenario::Burst);
        assert_eq!(parse("--scenario ramp").unwrap().scenario, Scenario::Ramp);
        let options = parse("--scenario=idle --users=20").unwrap();
        assert_eq!((options.scenario, options.users), (Scenario::Idle, Some(20)));
        assert_eq!(parse("--users 3 spawn").unwrap().scenario, Scenario::Spawn);
    }

    #[test]
    fn options_take_values() {
        let options = parse("ramp --users 30 --duration 60s --poll --compare old.json --output new.json").unwrap();
        assert_eq!(options.users, Some(30));
        assert_eq!(options.duration, Some(Duration::from_secs(60)));
        assert!(options.poll);
        assert_eq!(options.compare, Some(PathBuf::from("old.json")));
        assert_eq!(options.output, Some(PathBuf::from("new.json")));
        let options = parse("spawn --cycles 3 --image minimal").unwrap();
        assert_eq!((options.cycles, options.image.as_deref()), (Some(3), Some("minimal")));
        assert_eq!(parse("ramp --duration 1.5").unwrap().duration, Some(Duration::from_millis(1500)));
        let defaults = parse("burst").unwrap();
        assert_eq!((defaults.users, defaults.duration, defaults.cycles, defaults.poll), (None, None, None, false));
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(refusal("").contains("<SCENARIO>"), "{}", refusal(""));
        assert!(refusal("storm").contains("storm"));
        assert!(refusal("burst --users 0").contains("\"0\" is not a whole number above 0"), "{}", refusal("burst --users 0"));
        assert!(refusal("burst --users").contains("--users"));
        assert!(refusal("burst extra").contains("extra"));
        assert!(refusal("ramp --duration soon").contains("is not a number of seconds"));
        assert!(refusal("burst --scenario ramp").contains("cannot be used with"));
        assert!(refusal("burst --polll").contains("--polll"));
    }

    #[test]
    fn help_lists_every_option_and_scenario() {
        let help = Bench::command().render_long_help().to_string();
        for option in ["--scenario", "--users", "--duration", "--cycles", "--image", "--poll", "--compare", "--output"] {
            assert!(help.contains(option), "bench --help does not list {option}:\n{help}");
        }
        for scenario in ["spawn", "burst", "ramp", "idle"] {
            assert!(help.contains(scenario), "bench --help does not name the scenario {scenario}:\n{help}");
        }
    }
}
