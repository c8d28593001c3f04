//! What a bench run records and prints: every sample and every failure (with its reason), the machine and
//! the commit, as JSON under `target/bench/`; a table per group (p50 / p95 / max per phase, failures
//! counted and named) on stdout; and, against an older run, the ratio new/old of every figure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::reference::Reference;
use super::stats::{self, Summary};
use crate::ui::UserError;

/// The order phases are shown in; others (measures of `idle`) follow in the order they were recorded.
const PHASE_ORDER: &[&str] = &["signup", "login", "spawn", "cpu-until-ready", "lab", "kernel", "stop"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: u64,
    pub engine_version: String,
    pub kernel: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// What the figure belongs to: the image for `spawn`, the scenario's image otherwise, `session` for
    /// the account steps of `spawn`, `stack` for the hub and proxy of `idle`.
    pub group: String,
    pub phase: String,
    /// `s`, `cpu-s`, `MB` or `%` (of one core).
    pub unit: String,
    pub value: f64,
    pub user: String,
    /// Seconds from the start of the scenario to the end of this sample.
    pub at: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub group: String,
    pub phase: String,
    pub user: String,
    pub reason: String,
    pub at: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub scenario: String,
    pub started_utc: String,
    pub wall_seconds: f64,
    pub commit: String,
    pub dirty: bool,
    pub machine: Machine,
    pub settings: serde_json::Value,
    /// The fixed work measured on this machine at the start of the run (absent in runs before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    pub samples: Vec<Sample>,
    pub failures: Vec<Failure>,
}

/// A (group, phase) figure: its unit, its samples' summary and the failures in that phase.
struct Figure {
    unit: String,
    summary: Option<Summary>,
    failed: usize,
}

fn figures(run: &Run) -> BTreeMap<(String, String), Figure> {
    let mut values: BTreeMap<(String, String), (String, Vec<f64>)> = BTreeMap::new();
    for sample in &run.samples {
        let entry = values.entry((sample.group.clone(), sample.phase.clone())).or_insert_with(|| (sample.unit.clone(), Vec::new()));
        entry.1.push(sample.value);
    }
    for failure in &run.failures {
        values.entry((failure.group.clone(), failure.phase.clone())).or_insert_with(|| ("s".to_string(), Vec::new()));
    }
    values
        .into_iter()
        .map(|(key, (unit, samples))| {
            let failed = run.failures.iter().filter(|failure| failure.group == key.0 && failure.phase == key.1).count();
            (key, Figure { unit, summary: stats::summarize(&samples), failed })
        })
        .collect()
}

/// Groups in the order they first appear in the run; phases in [`PHASE_ORDER`], then as recorded.
fn ordered_keys(run: &Run) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = Vec::new();
    let seen = run.samples.iter().map(|s| (&s.group, &s.phase)).chain(run.failures.iter().map(|f| (&f.group, &f.phase)));
    for (group, phase) in seen {
        if !keys.iter().any(|(g, p)| g == group && p == phase) {
            keys.push((group.clone(), phase.clone()));
        }
    }
    let group_rank = |group: &str| keys.iter().position(|(g, _)| g == group).unwrap_or(usize::MAX);
    let phase_rank = |phase: &str| PHASE_ORDER.iter().position(|p| *p == phase).unwrap_or(PHASE_ORDER.len());
    let mut sorted = keys.clone();
    sorted.sort_by_key(|(group, phase)| (group_rank(group), phase_rank(phase), keys.iter().position(|(g, p)| g == group && p == phase)));
    sorted
}

pub fn format_value(unit: &str, value: f64) -> String {
    match unit {
        "s" => stats::format_seconds(value),
        "cpu-s" => format!("{value:.2} CPU-s"),
        "MB" => format!("{value:.0} MB"),
        "%" => format!("{value:.1} %"),
        other => format!("{value:.3} {other}"),
    }
}

/// The tables of a run, one per group, then every failure reason with its count and its users.
pub fn render(run: &Run) -> String {
    let figures = figures(run);
    let mut out = String::new();
    let mut current_group: Option<&str> = None;
    let keys = ordered_keys(run);
    if let Some(reference) = &run.reference {
        out.push_str(&format!(
            "\nreference on this machine: {} {} + one bcrypt hash {} = {} (×ref: a figure divided by it)\n",
            reference.python_work(),
            format_value("cpu-s", reference.python_cpu_seconds),
            format_value("cpu-s", reference.bcrypt_cpu_seconds),
            format_value("cpu-s", reference.seconds()),
        ));
    }
    for (group, phase) in &keys {
        if current_group != Some(group.as_str()) {
            current_group = Some(group.as_str());
            out.push_str(&format!("\n{} · {group}\n", run.scenario));
            out.push_str(&format!(
                "  {:<16} {:>5} {:>6} {:>12} {:>12} {:>12} {:>9}\n",
                "phase", "ok", "failed", "p50", "p95", "max", "p50 ×ref"
            ));
        }
        let figure = &figures[&(group.clone(), phase.clone())];
        let (count, p50, p95, max) = match figure.summary {
            Some(summary) => (
                summary.count.to_string(),
                format_value(&figure.unit, summary.p50),
                format_value(&figure.unit, summary.p95),
                format_value(&figure.unit, summary.max),
            ),
            None => ("0".to_string(), "-".to_string(), "-".to_string(), "-".to_string()),
        };
        let times_reference = figure
            .summary
            .zip(run.reference)
            .and_then(|(summary, reference)| reference.ratio(&figure.unit, summary.p50))
            .map(|ratio| format!("{ratio:.2}"))
            .unwrap_or_else(|| "-".to_string());
        out.push_str(&format!("  {phase:<16} {count:>5} {:>6} {p50:>12} {p95:>12} {max:>12} {times_reference:>9}\n", figure.failed));
    }
    let users: Vec<&str> = {
        let mut users: Vec<&str> =
            run.samples.iter().map(|s| s.user.as_str()).chain(run.failures.iter().map(|f| f.user.as_str())).collect();
        users.retain(|user| !user.is_empty());
        users.sort();
        users.dedup();
        users
    };
    let failed_users: Vec<&str> = {
        let mut failed: Vec<&str> = run.failures.iter().map(|f| f.user.as_str()).filter(|user| !user.is_empty()).collect();
        failed.sort();
        failed.dedup();
        failed
    };
    if !users.is_empty() {
        out.push_str(&format!(
            "\n  users: {} of {} went through without a failure; wall time {:.1} s\n",
            users.len() - failed_users.len(),
            users.len(),
            run.wall_seconds
        ));
    }
    if run.failures.is_empty() {
        out.push_str("  failures: none\n");
    } else {
        let mut reasons: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
        for failure in &run.failures {
            reasons.entry((failure.phase.clone(), failure.reason.clone())).or_default().push(&failure.user);
        }
        let mut reasons: Vec<_> = reasons.into_iter().collect();
        reasons.sort_by_key(|(_, users)| std::cmp::Reverse(users.len()));
        out.push_str(&format!("  failures: {}\n", run.failures.len()));
        for ((phase, reason), users) in reasons {
            out.push_str(&format!("    {:>3} × {phase}: {reason}\n          users: {}\n", users.len(), users.join(", ")));
        }
    }
    out
}

/// Whether two runs' figures are compared as ratios to each run's reference: when they ran on machines
/// that differ (cores, memory, kernel or engine) and both measured the same work. On one machine the raw
/// figures are compared, as the reference would only add its own noise.
pub fn compares_by_reference(new: &Run, old: &Run) -> bool {
    let machine = |run: &Run| (run.machine.cores, run.machine.memory_bytes, run.machine.kernel.clone(), run.machine.engine_version.clone());
    same_reference_work(new, old) && machine(new) != machine(old)
}

/// Whether both runs measured a reference, and the same work for it.
fn same_reference_work(new: &Run, old: &Run) -> bool {
    matches!((new.reference, old.reference), (Some(n), Some(o)) if n.work == o.work)
}

/// new/old of one summary value of a figure: raw, or, by reference, each value divided by its run's
/// reference first.
fn compared(new: &Run, old: &Run, unit: &str, new_value: f64, old_value: f64) -> Option<f64> {
    if compares_by_reference(new, old) {
        let (new_reference, old_reference) = (new.reference?, old.reference?);
        stats::ratio(new_reference.ratio(unit, new_value)?, old_reference.ratio(unit, old_value)?)
    } else {
        stats::ratio(new_value, old_value)
    }
}

/// new/old for every figure both runs have, and the failure counts side by side.
pub fn render_comparison(new: &Run, old: &Run, old_path: &Path) -> String {
    let new_figures = figures(new);
    let old_figures = figures(old);
    let by_reference = compares_by_reference(new, old);
    let mut out = format!(
        "\ncompared with {} ({}, commit {}{}, {} cores): ratios new/old, below 1 is faster or smaller\n",
        old_path.display(),
        old.started_utc,
        &old.commit[..old.commit.len().min(12)],
        if old.dirty { "+dirty" } else { "" },
        old.machine.cores
    );
    if let (Some(new_reference), Some(old_reference)) = (new.reference, old.reference) {
        out.push_str(&format!(
            "  reference: {} now, {} then ({}){}\n",
            format_value("cpu-s", new_reference.seconds()),
            format_value("cpu-s", old_reference.seconds()),
            stats::format_ratio(stats::ratio(new_reference.seconds(), old_reference.seconds())),
            if by_reference {
                "; the machines differ, so times are compared as multiples of each run's reference (memory and % as they are)"
            } else if !same_reference_work(new, old) {
                "; the references measured different work (the old run timed the server's imports), so figures are compared as measured"
            } else {
                "; the same machine, so figures are compared as measured"
            }
        ));
    }
    if old.scenario != new.scenario {
        out.push_str(&format!("  note: the old run is scenario `{}`, this one `{}`\n", old.scenario, new.scenario));
    }
    out.push_str(&format!("  {:<28} {:>22} {:>22} {:>22} {:>9}\n", "figure", "p50 new/old", "p95 new/old", "max new/old", "failed"));
    for key in ordered_keys(new) {
        let Some(old_figure) = old_figures.get(&key) else { continue };
        let new_figure = &new_figures[&key];
        let cell = |pick: fn(&Summary) -> f64| match (new_figure.summary, old_figure.summary) {
            (Some(n), Some(o)) => {
                let ratio = compared(new, old, &new_figure.unit, pick(&n), pick(&o)).or_else(|| stats::ratio(pick(&n), pick(&o)));
                format!("{} ({})", stats::format_ratio(ratio), format_value(&new_figure.unit, pick(&n)))
            }
            _ => "-".to_string(),
        };
        out.push_str(&format!(
            "  {:<28} {:>22} {:>22} {:>22} {:>9}\n",
            format!("{} · {}", key.0, key.1),
            cell(|s| s.p50),
            cell(|s| s.p95),
            cell(|s| s.max),
            format!("{} / {}", new_figure.failed, old_figure.failed)
        ));
    }
    out.push_str(&format!("  failures in total: {} now, {} before\n", new.failures.len(), old.failures.len()));
    out
}

pub fn load(path: &Path) -> Result<Run, UserError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        UserError::new(format!("cannot read {}: {err}", path.display()), "give --compare the JSON file of an earlier bench run")
    })?;
    serde_json::from_str(&text).map_err(|err| {
        UserError::new(
            format!("{} is not a bench run: {err}", path.display()),
            "give --compare a file written under target/bench/ by `cargo xtask bench`",
        )
    })
}

pub fn save(run: &Run, path: &Path) -> anyhow::Result<PathBuf> {
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(run)? + "\n")?;
    Ok(path.to_path_buf())
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time, for file names and the record (UTC, no time-zone database needed).
pub fn utc_stamp(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let seconds_of_day = unix_seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", seconds_of_day / 3600, seconds_of_day % 3600 / 60, seconds_of_day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::reference::ReferenceWork;

    fn sample(group: &str, phase: &str, value: f64, user: &str) -> Sample {
        Sample { group: group.into(), phase: phase.into(), unit: "s".into(), value, user: user.into(), at: 0.0 }
    }

    fn run(samples: Vec<Sample>, failures: Vec<Failure>) -> Run {
        Run {
            scenario: "burst".into(),
            started_utc: "20261126T013000Z".into(),
            wall_seconds: 12.0,
            commit: "0123456789abcdef".into(),
            dirty: false,
            machine: Machine { cores: 2, memory_bytes: 1 << 34, engine_version: "20.10".into(), kernel: "6.1".into() },
            settings: serde_json::json!({}),
            reference: None,
            samples,
            failures,
        }
    }

    #[test]
    fn runs_on_different_machines_compare_times_as_multiples_of_their_reference() {
        let mut old = run(vec![sample("minimal", "spawn", 1.0, "u1")], Vec::new());
        old.samples.push(Sample { unit: "MB".into(), ..sample("stack", "hub-rss", 200.0, "") });
        let mut new = run(vec![sample("minimal", "spawn", 3.0, "u1")], Vec::new());
        new.samples.push(Sample { unit: "MB".into(), ..sample("stack", "hub-rss", 300.0, "") });
        // The same machine: figures as measured, the reference only shown.
        assert!(!compares_by_reference(&new, &old));
        assert_eq!(compared(&new, &old, "s", 3.0, 1.0), Some(3.0));
        // A machine half as fast (its reference took twice as long): a spawn three times as long is 1.5×.
        old.reference = Some(Reference::new(0.8, 0.2));
        new.reference = Some(Reference::new(1.6, 0.4));
        new.machine.cores = 4;
        assert!(compares_by_reference(&new, &old));
        assert_eq!(compared(&new, &old, "s", 3.0, 1.0), Some(1.5));
        assert_eq!(compared(&new, &old, "MB", 300.0, 200.0), None, "memory has no reference ratio");
        let table = render_comparison(&new, &old, Path::new("old.json"));
        assert!(table.contains("the machines differ"), "{table}");
        assert!(table.contains("1.50×"), "{table}");
        assert!(table.contains("1.50× (300 MB)"), "memory is compared as measured: {table}");
        // A reference of other work (an older file timed the server's imports) is compared as measured.
        old.reference = Some(Reference { work: ReferenceWork::ServerImports, ..Reference::new(0.8, 0.2) });
        assert!(!compares_by_reference(&new, &old));
        assert!(render_comparison(&new, &old, Path::new("old.json")).contains("measured different work"));
        // A run without a reference (an older file) is compared as measured.
        old.reference = None;
        assert!(!compares_by_reference(&new, &old));
    }

    #[test]
    fn the_table_shows_each_time_as_a_multiple_of_the_reference() {
        let mut measured = run(vec![sample("minimal", "spawn", 2.0, "u1")], Vec::new());
        let spawn_line = |table: &str| table.lines().find(|line| line.trim_start().starts_with("spawn")).unwrap_or_default().to_string();
        assert!(spawn_line(&render(&measured)).trim_end().ends_with('-'), "no reference, no multiple");
        measured.reference = Some(Reference::new(0.75, 0.25));
        let table = render(&measured);
        assert!(table.contains("reference on this machine"), "{table}");
        assert!(spawn_line(&table).trim_end().ends_with("2.00"), "{table}");
    }

    #[test]
    fn utc_stamps_are_civil_dates() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_795_656_562), "20261126T012922Z");
    }

    #[test]
    fn failures_are_counted_and_named() {
        let run = run(
            vec![sample("minimal", "spawn", 2.0, "u1"), sample("minimal", "login", 0.5, "u1"), sample("minimal", "login", 0.7, "u2")],
            vec![Failure { group: "minimal".into(), phase: "spawn".into(), user: "u2".into(), reason: "HTTP 500".into(), at: 1.0 }],
        );
        let table = render(&run);
        let login = table.lines().position(|line| line.trim_start().starts_with("login")).unwrap();
        let spawn = table.lines().position(|line| line.trim_start().starts_with("spawn")).unwrap();
        assert!(login < spawn, "phases in journey order:\n{table}");
        assert!(table.contains("1 of 2 went through"), "{table}");
        assert!(table.contains("1 × spawn: HTTP 500"), "{table}");
        assert!(table.contains("users: u2"), "{table}");
    }

    #[test]
    fn comparisons_divide_new_by_old() {
        let old = run(vec![sample("minimal", "spawn", 4.0, "u1")], vec![]);
        let new = run(vec![sample("minimal", "spawn", 2.0, "u1")], vec![]);
        let text = render_comparison(&new, &old, Path::new("old.json"));
        assert!(text.contains("0.50× (2.00 s)"), "{text}");
    }

    #[test]
    fn runs_survive_a_json_round_trip() {
        let before = run(vec![sample("minimal", "spawn", 2.5, "u1")], vec![]);
        let after: Run = serde_json::from_str(&serde_json::to_string(&before).unwrap()).unwrap();
        assert_eq!(after.samples[0].value, 2.5);
        assert_eq!(after.machine.cores, 2);
    }
}
