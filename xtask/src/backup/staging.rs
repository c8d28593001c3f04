//! The all-or-nothing part of a restore: every volume's tar extracted into a stage of its own inside that
//! volume, removed again if any fails, and only once all arrived moved into place (renames), in order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bollard::Docker;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::UploadToContainerOptions;
use futures_util::StreamExt;
use indicatif::ProgressBar;

use super::containers::{create_helper, engine_failed, remove_container, run_helper_once};
use crate::ui::UserError;

/// Where a restore stages a volume's tar inside that volume (`<prefix><nonce>/.jhub-staging/…`), so the
/// final moves are renames within one filesystem. A nonce per restore, so no name a home may hold (a
/// user's own `.jhub-staging` folder, say) is ever taken for the staging area.
pub(super) const RESTORE_STAGE_PREFIX: &str = ".jhub-restore-";

/// Runs in one throwaway container with every target volume at /target/<n> once each tar is staged in
/// /target/<n>/<stage>/.jhub-staging: for each volume, with `force`, removes what it held; gives its root
/// the owner and mode the backup recorded; moves the staged entries into place; removes the stage; says
/// which volume is done. Arguments: the stage's name, then `force` or `keep`, then the volume numbers in
/// the order to finish them.
pub(super) const FINISH_SCRIPT: &str = "\
set -eu
stage=$1 mode=$2
shift 2
for number in \"$@\"; do
  cd \"/target/$number\"
  if [ \"$mode\" = force ]; then find . -mindepth 1 -maxdepth 1 ! -name \"$stage\" -exec rm -rf {} +; fi
  chown --reference=\"$stage/.jhub-staging\" .
  chmod --reference=\"$stage/.jhub-staging\" .
  find \"$stage/.jhub-staging\" -mindepth 1 -maxdepth 1 -exec mv -t . {} +
  rm -rf \"$stage\"
  echo \"finished $number\"
done
";

/// A volume the restore fills: its name, who it is for, the tar that goes into it, and the labels the
/// running platform gives such a volume (a volume that lacks them is made anew; see `prepare_volumes`).
pub(super) struct VolumeJob {
    pub(super) volume: String,
    pub(super) what: String,
    pub(super) tar: TarSource,
    pub(super) labels: HashMap<String, String>,
}

pub(super) enum TarSource {
    File(PathBuf, u64),
    Bytes(Vec<u8>),
}

/// The jobs whose volume exists and holds anything (the stage a stopped restore left aside).
pub(super) async fn occupied_volumes(docker: &Docker, helper_image: &str, jobs: &[VolumeJob]) -> anyhow::Result<Vec<String>> {
    let mut binds = Vec::new();
    let mut checked = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        if docker.inspect_volume(&job.volume).await.is_ok() {
            binds.push(format!("{}:/check/{index}:ro", job.volume));
            checked.push(index);
        }
    }
    if checked.is_empty() {
        return Ok(Vec::new());
    }
    let script = format!("for d in /check/*; do if ls -A \"$d\" | grep -qv '^{RESTORE_STAGE_PREFIX}'; then basename \"$d\"; fi; done");
    let (code, output) = run_helper_once(docker, helper_image, binds, &["sh", "-c", &script], "restore-check").await?;
    anyhow::ensure!(code == 0, "the check of the target volumes failed: {}", output.trim());
    Ok(output
        .split_whitespace()
        .filter_map(|word| word.parse::<usize>().ok())
        .filter_map(|index| jobs.get(index))
        .map(|job| format!("{} (volume {})", job.what, job.volume))
        .collect())
}

/// Gives every job a volume with its labels, removes the stages a stopped restore left and makes this
/// restore's `stage` folder in each; returns the volumes it created. Docker cannot add labels to a volume,
/// so an existing one that lacks them (an earlier restore's, before restores labelled) is removed and made
/// anew: by now it is known to be empty or, with `--force`, to be replaced, and the backup holds
/// everything that goes into it.
pub(super) async fn prepare_volumes(docker: &Docker, helper_image: &str, jobs: &[VolumeJob], stage: &str) -> anyhow::Result<Vec<String>> {
    let mut created = Vec::new();
    for job in jobs {
        if let Ok(existing) = docker.inspect_volume(&job.volume).await {
            let labelled = job.labels.iter().all(|(key, value)| existing.labels.get(key) == Some(value));
            if labelled {
                continue;
            }
            docker.remove_volume(&job.volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await.map_err(|err| {
                UserError::new(
                    format!("cannot replace volume {} (it lacks the stack's labels): {err}", job.volume),
                    format!("a container still uses it: `docker ps -a --filter volume={}` shows which", job.volume),
                )
            })?;
        } else {
            created.push(job.volume.clone());
        }
        let request = VolumeCreateRequest { name: Some(job.volume.clone()), labels: Some(job.labels.clone()), ..Default::default() };
        docker.create_volume(request).await.map_err(|err| engine_failed(&format!("creating volume {}", job.volume), err))?;
    }
    let binds = target_binds(jobs);
    let script = format!("set -eu; rm -rf /target/*/{RESTORE_STAGE_PREFIX}*; for d in /target/*; do mkdir -m 700 \"$d/{stage}\"; done");
    let (code, output) = run_helper_once(docker, helper_image, binds, &["sh", "-c", &script], "restore-prepare").await?;
    anyhow::ensure!(code == 0, "preparing the volumes for the restore failed: {}", output.trim());
    Ok(created)
}

/// Every job's volume at `/target/<its number>`, for the scripts that work on all of them at once.
pub(super) fn target_binds(jobs: &[VolumeJob]) -> Vec<String> {
    jobs.iter().enumerate().map(|(index, job)| format!("{}:/target/{index}", job.volume)).collect()
}

/// Extracts the job's tar into `stage` inside its volume (the tar's own top folder is `.jhub-staging`).
/// The throwaway container is created, never started: the engine writes into its mounts all the same.
pub(super) async fn stage_volume(
    docker: &Docker,
    helper_image: &str,
    job: &VolumeJob,
    stage: &str,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let binds = vec![format!("{}:/target", job.volume)];
    let container = create_helper(docker, helper_image, binds, &["true"], "restore-stage").await?;
    let outcome = async {
        let body = match &job.tar {
            TarSource::Bytes(bytes) => {
                bar.inc(bytes.len() as u64);
                bollard::body_full(bytes.clone().into())
            }
            TarSource::File(path, _) => bollard::body_try_stream(file_chunks(path, bar.clone())?.map(|chunk| chunk.map(Into::into))),
        };
        let options = UploadToContainerOptions { path: format!("/target/{stage}"), ..Default::default() };
        docker
            .upload_to_container(&container, Some(options), body)
            .await
            .map_err(|err| engine_failed(&format!("writing volume {}", job.volume), err))
    }
    .await;
    remove_container(docker, &container).await;
    outcome
}

/// After a failed staging: removes every stage, and the volumes this restore created, so the stack is as
/// it was. Best effort: what it cannot remove, the next restore's preparation does.
pub(super) async fn undo_stages(docker: &Docker, helper_image: &str, jobs: &[VolumeJob], stage: &str, created: &[String]) {
    let _ = run_helper_once(docker, helper_image, target_binds(jobs), &["sh", "-c", &format!("rm -rf /target/*/{stage}")], "restore-undo")
        .await;
    for volume in created {
        let _ = docker.remove_volume(volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
    }
}

/// Moves every staged volume into place (see FINISH_SCRIPT), in the jobs' order; returns how many were
/// finished, with the error when not all were.
pub(super) async fn finish_volumes(
    docker: &Docker,
    helper_image: &str,
    jobs: &[VolumeJob],
    stage: &str,
    force: bool,
) -> Result<usize, (usize, anyhow::Error)> {
    let binds = target_binds(jobs);
    let mode = if force { "force" } else { "keep" };
    let numbers: Vec<String> = (0..jobs.len()).map(|index| index.to_string()).collect();
    let mut argv = vec!["sh", "-c", FINISH_SCRIPT, "finish", stage, mode];
    argv.extend(numbers.iter().map(String::as_str));
    let (code, output) = run_helper_once(docker, helper_image, binds, &argv, "restore-finish").await.map_err(|err| (0, err))?;
    let finished = output.lines().filter(|line| line.starts_with("finished ")).count();
    if code != 0 {
        let job = &jobs[finished.min(jobs.len() - 1)];
        return Err((finished, anyhow::anyhow!("moving the {} into place in volume {} failed: {}", job.what, job.volume, output.trim())));
    }
    Ok(finished)
}

/// The file as a stream of 1 MiB chunks, advancing `bar`.
pub(super) fn file_chunks(
    path: &Path,
    bar: ProgressBar,
) -> anyhow::Result<impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(futures_util::stream::unfold((tokio::fs::File::from_std(file), bar), |(mut file, bar)| async move {
        let mut buffer = vec![0u8; 1 << 20];
        match tokio::io::AsyncReadExt::read(&mut file, &mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                bar.inc(read as u64);
                Some((Ok(buffer), (file, bar)))
            }
            Err(err) => Some((Err(err), (file, bar))),
        }
    }))
}
