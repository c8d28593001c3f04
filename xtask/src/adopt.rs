//! `cargo xtask adopt-volumes`: gives this stack's unlabelled user volumes (made by restores before they
//! labelled, or by hand) the labels the hub gives its own, so `down --volumes`, backups and every other
//! reader find them again. Docker cannot add labels to a volume: each is copied into a labelled temporary
//! volume, the copy's checksum compared with the original's, the original removed, made anew with the
//! labels, filled from the copy, compared again, and only then the copy removed. Only volumes of users the
//! hub's database knows are adopted; others are listed and left alone. A dry run unless `--yes`.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::Docker;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptions};
use jhub_docker::contract::{self, PURPOSE_LABEL, STACK_LABEL};

use crate::backup::{AccountsFrom, Target, engine_failed, helper_image, read_accounts, refuse_while_running, run_helper_once};
use crate::engine;
use crate::ui::{self, UserError};

/// `cargo xtask adopt-volumes` options.
pub struct AdoptOptions {
    /// The stack's settings (`stack/.env` by default).
    pub env_file: PathBuf,
    /// Adopt; without it, only say what would be adopted.
    pub yes: bool,
}

/// Copies /from into /to (everything: owners, modes, times, links, special files), then prints each tree's
/// checksum (`jhub_docker::tree_sum`).
fn copy_and_sum_script() -> String {
    format!(
        "{}\n{}",
        jhub_docker::tree_sum::TREE_SUM_PY,
        r#"
import subprocess, sys
copy = subprocess.run(["cp", "-a", "/from/.", "/to/"], capture_output=True, text=True)
if copy.returncode != 0:
    sys.exit("cp -a failed: " + copy.stderr.strip())
print("from", tree_sum(b"/from"))
print("to", tree_sum(b"/to"))
"#
    )
}

/// One volume to adopt: its name, the user it belongs to, and whether an earlier run already removed the
/// original and left the data in the temporary copy.
struct Adoption {
    volume: String,
    user: String,
    resume_from_copy: bool,
}

/// The temporary copy of `volume` while it is adopted. Its name is no escaped user name (`.` is always
/// escaped), so no backup or listing takes it for a user's volume.
fn copy_name(volume: &str) -> String {
    format!("{volume}.adopting")
}

pub fn run(options: &AdoptOptions) -> anyhow::Result<()> {
    let target = Target::from_env_file(&options.env_file)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(adopt(&target, options))
}

async fn adopt(target: &Target, options: &AdoptOptions) -> anyhow::Result<()> {
    let docker = engine::connect().await?;
    refuse_while_running(&docker, &target.stack, "adopting its volumes").await?;
    let helper_image = helper_image(&docker).await?;
    let accounts = hub_accounts(&docker, target, &helper_image).await?;

    let volumes = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().build())).await?.volumes.unwrap_or_default();
    let labels_of: HashMap<&str, &HashMap<String, String>> = volumes.iter().map(|volume| (volume.name.as_str(), &volume.labels)).collect();
    let mut adoptions = Vec::new();
    let mut unknown = Vec::new();
    for volume in &volumes {
        let escaped = volume.name.strip_prefix(&target.user_volume_prefix);
        let (Some(user), None) = (escaped.and_then(contract::user_of_escaped_name), volume.labels.get(STACK_LABEL)) else { continue };
        if accounts.contains_key(&user) {
            adoptions.push(Adoption { volume: volume.name.clone(), user, resume_from_copy: false });
        } else {
            unknown.push(volume.name.clone());
        }
    }
    // A run that stopped after removing an original: its data is in the copy alone (the original is gone,
    // or is the labelled one being refilled). A copy beside an unlabelled original is a leftover of a copy
    // that did not finish; the adoption above starts it again.
    for volume in &volumes {
        let Some(original) = volume.name.strip_suffix(".adopting") else { continue };
        let ours = |labels: &HashMap<String, String>| labels.get(STACK_LABEL) == Some(&target.stack);
        let adopt_copy = ours(&volume.labels) && volume.labels.get(PURPOSE_LABEL).is_some_and(|purpose| purpose == "adopt");
        if adopt_copy
            && labels_of.get(original).is_none_or(|labels| ours(labels))
            && let Some(user) = volume.labels.get(contract::USER_LABEL)
        {
            adoptions.push(Adoption { volume: original.to_string(), user: user.clone(), resume_from_copy: true });
        }
    }
    adoptions.sort_by(|a, b| a.volume.cmp(&b.volume));
    unknown.sort();

    if !unknown.is_empty() {
        eprintln!("note: left alone, no user of stack `{}` has these names in the hub's database: {}", target.stack, unknown.join(", "));
    }
    if adoptions.is_empty() {
        println!("stack `{}` has no unlabelled volume of a known user: nothing to adopt", target.stack);
        return Ok(());
    }
    let listed: Vec<String> = adoptions.iter().map(|adoption| format!("{} (user {})", adoption.volume, adoption.user)).collect();
    if !options.yes {
        println!("would adopt {} volume(s) into stack `{}`: {}", adoptions.len(), target.stack, listed.join(", "));
        println!("nothing was changed; run `cargo xtask adopt-volumes --yes` to adopt them");
        return Ok(());
    }
    let mut done = Vec::new();
    for adoption in &adoptions {
        ui::note(&format!("adopting {} (user {})", adoption.volume, adoption.user));
        if let Err(err) = adopt_volume(&docker, &helper_image, target, &accounts, adoption).await {
            if !done.is_empty() {
                eprintln!("adopted before the failure: {}", done.join(", "));
            }
            return Err(err);
        }
        done.push(adoption.volume.clone());
    }
    println!("adopted {} volume(s) into stack `{}`: {}", done.len(), target.stack, listed.join(", "));
    Ok(())
}

/// Every account of the hub's database with its creation time, read on the (stopped) hub's data volume.
async fn hub_accounts(docker: &Docker, target: &Target, helper_image: &str) -> anyhow::Result<HashMap<String, String>> {
    let data_volume = target.data_volume();
    if docker.inspect_volume(&data_volume).await.is_err() {
        return Err(UserError::new(
            format!("stack `{}` has no hub data (no volume {data_volume}), so no user is known", target.stack),
            "check JHUB_STACK_NAME in the settings (or --env-file); restore the hub's data first",
        )
        .into());
    }
    read_accounts(docker, helper_image, AccountsFrom::DataVolume(&data_volume)).await
}

/// original → labelled copy (sums compared) → original removed → original made anew with the labels →
/// filled from the copy (sums compared) → copy removed. At every step one whole copy of the data exists.
async fn adopt_volume(
    docker: &Docker,
    helper_image: &str,
    target: &Target,
    accounts: &HashMap<String, String>,
    adoption: &Adoption,
) -> anyhow::Result<()> {
    let created = accounts.get(&adoption.user).map(String::as_str).unwrap_or_default();
    let labels: HashMap<String, String> = contract::user_volume_labels(&target.stack, &adoption.user, created).into_iter().collect();
    let copy = copy_name(&adoption.volume);
    if !adoption.resume_from_copy {
        if docker.inspect_volume(&copy).await.is_ok() {
            // Left by a run that stopped before it removed the original, which is still whole.
            remove_volume(docker, &copy).await?;
        }
        let mut copy_labels = labels.clone();
        copy_labels.insert(PURPOSE_LABEL.to_string(), "adopt".to_string());
        create_volume(docker, &copy, copy_labels).await?;
        copy_and_compare(docker, helper_image, &adoption.volume, &copy).await?;
        remove_volume(docker, &adoption.volume).await?;
    } else if docker.inspect_volume(&adoption.volume).await.is_ok() {
        // Made anew by a run that stopped while filling it: the copy is whole, this one may not be.
        remove_volume(docker, &adoption.volume).await?;
    }
    create_volume(docker, &adoption.volume, labels).await?;
    copy_and_compare(docker, helper_image, &copy, &adoption.volume).await?;
    remove_volume(docker, &copy).await
}

/// Copies volume `from` into the empty volume `to` and fails unless both trees have the same checksum.
async fn copy_and_compare(docker: &Docker, helper_image: &str, from: &str, to: &str) -> anyhow::Result<()> {
    let binds = vec![format!("{from}:/from:ro"), format!("{to}:/to")];
    let script = copy_and_sum_script();
    let (code, output) = run_helper_once(docker, helper_image, binds, &["python3", "-c", &script], "adopt-copy").await?;
    let sum_of =
        |tree: &str| output.lines().find_map(|line| line.strip_prefix(tree).and_then(|rest| rest.strip_prefix(' '))).map(str::to_string);
    match (code, sum_of("from"), sum_of("to")) {
        (0, Some(from_sum), Some(to_sum)) if from_sum == to_sum => Ok(()),
        _ => Err(UserError::new(
            format!("the copy of volume {from} into {to} does not match its original, nothing was removed: {}", output.trim()),
            "check free disk space (`docker system df`) and run `cargo xtask adopt-volumes --yes` again",
        )
        .into()),
    }
}

async fn create_volume(docker: &Docker, name: &str, labels: HashMap<String, String>) -> anyhow::Result<()> {
    let request = VolumeCreateRequest { name: Some(name.to_string()), labels: Some(labels), ..Default::default() };
    docker.create_volume(request).await.map_err(|err| engine_failed(&format!("creating volume {name}"), err))?;
    Ok(())
}

async fn remove_volume(docker: &Docker, name: &str) -> anyhow::Result<()> {
    docker.remove_volume(name, None::<RemoveVolumeOptions>).await.map_err(|err| {
        UserError::new(
            format!("cannot remove volume {name}: {err}"),
            format!("a container still uses it: `docker ps -a --filter volume={name}` shows which"),
        )
    })?;
    Ok(())
}
