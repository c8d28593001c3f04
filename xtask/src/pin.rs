//! `cargo xtask lock`: refreshes every image's pinned inputs — each `*.in` requirements file compiled by uv
//! into a hash-locked `.txt` for the image's Python, each `package.json` resolved by npm into a
//! `package-lock.json` with integrity hashes — and records the sources' hashes in `images.lock`, so
//! `build-images --locked` can tell a stale pin.

use std::path::{Path, PathBuf};
use std::process::Command;

use jhub_docker::catalog::{Catalog, ImageEntry};
use jhub_docker::host::which;
use jhub_docker::lock::Lock;

use crate::base::BaseSpec;
use crate::context::sha256_hex;
use crate::ui::{self, UserError};

/// A pinned input: the source a person edits and the file generated from it.
#[derive(Debug, PartialEq)]
struct PinnedInput {
    /// `<image folder>/<path>`, the key in images.lock's `[pinned]` table.
    key: String,
    source: PathBuf,
    kind: InputKind,
}

#[derive(Debug, PartialEq)]
enum InputKind {
    Requirements,
    Npm,
}

/// Pins the inputs of the images named in `selection` (their folders'), or of every image when it is empty.
pub fn run(selection: &[String]) -> anyhow::Result<()> {
    let root = jhub_docker::repo_root();
    let catalog = Catalog::load(&root)?;
    let lock_path = jhub_docker::lock_path(&root);
    let mut lock = Lock::load_for_rebuild(&lock_path)?;
    let mut folders = std::collections::BTreeSet::new();
    for name in selection {
        let image = catalog.get(name).ok_or_else(|| {
            let known: Vec<&str> = catalog.images.iter().map(|image| image.name.as_str()).collect();
            UserError::new(format!("unknown image `{name}`"), format!("the catalog has: {}", known.join(", ")))
        })?;
        folders.insert(image.folder.clone());
    }
    let all_inputs = pinned_inputs(&root, &catalog)?;
    let inputs: Vec<_> = all_inputs.iter().filter(|(image, _)| selection.is_empty() || folders.contains(&image.folder)).collect();
    for (image, input) in &inputs {
        let folder = input.source.parent().expect("a file has a folder");
        let file_name = input.source.file_name().expect("a file has a name").to_string_lossy().into_owned();
        ui::note(&format!("{}: pinning {}", image.name, input.key));
        let mut command = match input.kind {
            InputKind::Requirements => {
                require_program("uv", "pip install uv==0.13.9")?;
                let python = python_version_for(&root, &catalog, image)?;
                let output = file_name.trim_end_matches(".in").to_string() + ".txt";
                let mut command = Command::new("uv");
                command.args(["pip", "compile", "--quiet", "--generate-hashes", "--python-version", &python]);
                command.args(["--python-platform", "x86_64-unknown-linux-gnu", "--custom-compile-command", "cargo xtask lock"]);
                command.args([&file_name, "-o", &output]);
                if folder.join(EXCLUDES).is_file() {
                    command.args(["--excludes", EXCLUDES]);
                }
                command
            }
            InputKind::Npm => {
                require_program("npm", "apt-get install -y npm, or any Node.js that ships npm")?;
                let mut command = Command::new("npm");
                command.args(["install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"]);
                command
            }
        };
        let output = command.current_dir(folder).output()?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr.lines().find(|line| !line.trim().is_empty()).unwrap_or("no output");
            return Err(UserError::new(
                format!("image `{}`: pinning {} failed: {first}", image.name, input.key),
                "a requirement that does not exist or versions that conflict are named above; fix the source file",
            )
            .into());
        }
        lock.pinned.insert(input.key.clone(), pinned_hash(input)?);
    }
    // Sources that no longer exist drop out of the lock.
    lock.pinned.retain(|key, _| all_inputs.iter().any(|(_, input)| &input.key == key));
    lock.write_atomically(&lock_path)?;
    ui::note(&format!("pinned {} inputs; now run `cargo xtask build-images`", inputs.len()));
    Ok(())
}

/// Every pinned input whose source changed since `cargo xtask lock` compiled it, described for a person.
pub fn stale_inputs(root: &Path, catalog: &Catalog, lock: &Lock) -> Result<Vec<String>, UserError> {
    let mut stale = Vec::new();
    for (_, input) in pinned_inputs(root, catalog)? {
        let current = pinned_hash(&input)?;
        if lock.pinned.get(&input.key) != Some(&current) {
            stale.push(format!("{} changed since it was pinned (run `cargo xtask lock`)", input.key));
        }
    }
    Ok(stale)
}

/// Packages left out of every requirements file's resolution in the same folder (`uv pip compile
/// --excludes`): optional extras that dependencies ask for but that the image does without.
const EXCLUDES: &str = "excludes.txt";

/// The hash images.lock records for a pinned input: its source, and for requirements the folder's
/// excludes file too, since both decide the compiled file.
fn pinned_hash(input: &PinnedInput) -> Result<String, UserError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|err| UserError::new(format!("cannot read {}: {err}", path.display()), "check the file's permissions"))
    };
    let mut bytes = read(&input.source)?;
    let excludes = input.source.with_file_name(EXCLUDES);
    if input.kind == InputKind::Requirements && excludes.is_file() {
        bytes.extend_from_slice(b"\0excludes\0");
        bytes.extend(read(&excludes)?);
    }
    Ok(sha256_hex(&bytes))
}

fn pinned_inputs<'a>(root: &Path, catalog: &'a Catalog) -> Result<Vec<(&'a ImageEntry, PinnedInput)>, UserError> {
    let mut inputs = Vec::new();
    let mut folders_seen = std::collections::BTreeSet::new();
    for image in &catalog.images {
        // Images that share a folder (the flavours of a template) share its pinned inputs: pin them once.
        if !folders_seen.insert(image.folder.as_str()) {
            continue;
        }
        let folder = image.folder_path(root);
        let mut pending = vec![folder.clone()];
        while let Some(directory) = pending.pop() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&directory)
                .map_err(|err| UserError::new(format!("cannot read {}: {err}", directory.display()), "check the folder's permissions"))?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .collect();
            entries.sort();
            for path in entries {
                let name = path.file_name().expect("entries have names").to_string_lossy().into_owned();
                if path.is_dir() {
                    if !crate::context::IGNORED_DIRS.contains(&name.as_str()) {
                        pending.push(path);
                    }
                    continue;
                }
                let kind = if name.ends_with(".in") {
                    InputKind::Requirements
                } else if name == "package.json" {
                    InputKind::Npm
                } else {
                    continue;
                };
                let relative = path.strip_prefix(&folder).expect("below the folder").to_string_lossy().into_owned();
                inputs.push((image, PinnedInput { key: format!("{}/{relative}", image.folder), source: path, kind }));
            }
        }
    }
    // A folder's `requirements.in` compiles before its other `requirements*.in`, which may constrain
    // themselves with `-c requirements.txt` (the hub's test tools do) and must see the fresh lock.
    inputs.sort_by_key(|(_, input)| input.source.file_name().is_none_or(|name| name != "requirements.in"));
    Ok(inputs)
}

/// The Python version of the bootstrapped image at the root of `image`'s chain.
fn python_version_for(root: &Path, catalog: &Catalog, image: &ImageEntry) -> Result<String, UserError> {
    let mut current = image;
    while let Some(parent) = current.parent() {
        current = catalog.get(parent).expect("validated: parents exist");
    }
    Ok(BaseSpec::load(&current.name, &current.folder_path(root))?.python_version)
}

fn require_program(program: &str, install: &str) -> Result<(), UserError> {
    match which(program) {
        Some(_) => Ok(()),
        None => Err(UserError::new(format!("`{program}` is not installed; `cargo xtask lock` needs it"), install)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excludes_file_is_part_of_a_requirements_pin_only() {
        let folder = std::env::temp_dir().join(format!("jhub-pin-excludes-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("requirements.in"), "jupyterlab\n").unwrap();
        std::fs::write(folder.join("package.json"), "{}\n").unwrap();
        let requirements =
            PinnedInput { key: "x/requirements.in".into(), source: folder.join("requirements.in"), kind: InputKind::Requirements };
        let npm = PinnedInput { key: "x/package.json".into(), source: folder.join("package.json"), kind: InputKind::Npm };
        let (plain, plain_npm) = (pinned_hash(&requirements).unwrap(), pinned_hash(&npm).unwrap());
        assert_eq!(plain, sha256_hex(b"jupyterlab\n"));
        std::fs::write(folder.join(EXCLUDES), "rfc3987-syntax\n").unwrap();
        let excluded = pinned_hash(&requirements).unwrap();
        assert_ne!(excluded, plain);
        assert_eq!(pinned_hash(&npm).unwrap(), plain_npm);
        std::fs::write(folder.join(EXCLUDES), "lark\n").unwrap();
        assert_ne!(pinned_hash(&requirements).unwrap(), excluded);
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
