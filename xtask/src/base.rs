//! The root image: `images/base/base.toml` names a Debian suite and packages; mmdebstrap makes the rootfs
//! tar and the Engine API imports it. No registry is reachable on our machines, so this is where every
//! image chain starts.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use jhub_docker::host::which;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::engine;
use crate::ui::UserError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseSpec {
    pub suite: String,
    pub variant: String,
    pub mirror: String,
    /// The Python the suite ships, which pinned Python inputs are compiled for.
    pub python_version: String,
    /// SOURCE_DATE_EPOCH for mmdebstrap: the same package versions give the same rootfs tar.
    pub source_date_epoch: u64,
    pub packages: Vec<String>,
    /// dpkg `path-exclude` patterns, kept in the image so that children's installs obey them too.
    #[serde(default)]
    pub dpkg_path_exclude: Vec<String>,
    /// dpkg `path-include` patterns: exceptions to `dpkg_path_exclude`.
    #[serde(default)]
    pub dpkg_path_include: Vec<String>,
    /// A script in the image's folder that mmdebstrap runs as a customize hook, with the rootfs as `$1`.
    #[serde(default)]
    pub customize: Option<String>,
    /// The folder base.toml was read from.
    #[serde(skip)]
    pub folder: std::path::PathBuf,
}

impl BaseSpec {
    pub fn load(image_name: &str, folder: &Path) -> Result<BaseSpec, UserError> {
        let path = folder.join("base.toml");
        let text = std::fs::read_to_string(&path).map_err(|err| {
            UserError::new(
                format!("image `{image_name}`: cannot read {}: {err}", path.display()),
                "a bootstrapped image needs base.toml in its folder",
            )
        })?;
        let mut spec: BaseSpec = toml::from_str(&text).map_err(|err| {
            UserError::new(
                format!("image `{image_name}`: base.toml is not valid: {}", err.to_string().lines().next().unwrap_or_default()),
                "base.toml has suite, variant, mirror, python_version, source_date_epoch and packages (see images/base/base.toml)",
            )
        })?;
        if let Some(bad) =
            spec.packages.iter().find(|name| name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
        {
            return Err(UserError::new(
                format!("image `{image_name}`: `{bad}` in base.toml is not a Debian package name"),
                "package names use a-z, 0-9, +, - and .",
            ));
        }
        if let Some(bad) = spec.dpkg_path_exclude.iter().chain(&spec.dpkg_path_include).find(|pattern| !pattern.starts_with('/')) {
            return Err(UserError::new(
                format!("image `{image_name}`: dpkg path pattern `{bad}` in base.toml is not absolute"),
                "dpkg matches path-exclude and path-include patterns against absolute paths: start them with /",
            ));
        }
        if let Some(script) = &spec.customize {
            let path = folder.join(script);
            if script.contains('/') || !path.is_file() {
                return Err(UserError::new(
                    format!("image `{image_name}`: customize script `{script}` named in base.toml is not a file in {}", folder.display()),
                    "name a script that sits next to base.toml",
                ));
            }
        }
        spec.folder = folder.to_path_buf();
        Ok(spec)
    }

    /// mmdebstrap's arguments, from the options to the mirror.
    pub fn mmdebstrap_args(&self, rootfs: &Path) -> Vec<String> {
        let mut args = vec![format!("--variant={}", self.variant)];
        if !self.packages.is_empty() {
            args.push(format!("--include={}", self.packages.join(",")));
        }
        // Keep apt's lists out of the image: every build stage runs `apt-get update` itself.
        args.push("--aptopt=Acquire::Languages \"none\"".to_string());
        // Excludes first, then includes: dpkg applies the last pattern that matches a path.
        args.extend(self.dpkg_path_exclude.iter().map(|pattern| format!("--dpkgopt=path-exclude={pattern}")));
        args.extend(self.dpkg_path_include.iter().map(|pattern| format!("--dpkgopt=path-include={pattern}")));
        if let Some(script) = &self.customize {
            // mmdebstrap runs a hook with shell syntax under sh, the rootfs directory in $1.
            let path = self.folder.join(script).display().to_string().replace('\'', "'\\''");
            args.push(format!("--customize-hook=sh '{path}' \"$1\""));
        }
        args.push("--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/*".to_string());
        args.push(self.suite.clone());
        args.push(rootfs.display().to_string());
        args.push(self.mirror.clone());
        args
    }
}

/// What bootstrapping produced.
pub struct Bootstrapped {
    pub image_id: String,
    pub rootfs_sha256: String,
}

/// Makes the rootfs with mmdebstrap (its output goes to `log`) and imports it tagged `tag`.
pub async fn bootstrap(
    docker: &Docker,
    image_name: &str,
    spec: &BaseSpec,
    work_dir: &Path,
    log: &Path,
    tag: &str,
) -> anyhow::Result<Bootstrapped> {
    if which("mmdebstrap").is_none() {
        return Err(UserError::new(
            "mmdebstrap is not installed, so the base image cannot be made",
            "apt-get install -y mmdebstrap (or run ci/setup-host.sh)",
        )
        .into());
    }
    std::fs::create_dir_all(work_dir)?;
    let rootfs = work_dir.join(format!("{image_name}-rootfs.tar"));
    let log_file = std::fs::OpenOptions::new().append(true).create(true).open(log)?;
    let mut command = tokio::process::Command::new("mmdebstrap");
    // On a host that is not Debian (an Ubuntu CI runner), apt does not trust Debian's archive keys.
    let debian_keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
    let host_is_debian = std::fs::read_to_string("/etc/os-release").is_ok_and(|text| text.lines().any(|line| line == "ID=debian"));
    if !host_is_debian && debian_keyring.is_file() {
        command.arg(format!("--keyring={}", debian_keyring.display()));
    }
    let status = command
        .args(spec.mmdebstrap_args(&rootfs))
        .env("SOURCE_DATE_EPOCH", spec.source_date_epoch.to_string())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .await?;
    if !status.success() {
        let _ = std::fs::remove_file(&rootfs);
        return Err(UserError::new(
            format!("image `{image_name}`: mmdebstrap failed ({status}); the last lines of its log are above"),
            format!(
                "a package that cannot be fetched is named in the log ({}); check images/{image_name}/base.toml and that {} is reachable",
                log.display(),
                spec.mirror
            ),
        )
        .into());
    }
    let tar = tokio::fs::read(&rootfs).await?;
    let rootfs_sha256 = crate::context::sha256_hex(&tar);
    let (repo, version) = tag.rsplit_once(':').expect("tags are repo:version");
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(version)
        .changes(vec!["ENV LANG=C.UTF-8".to_string(), "CMD [\"/bin/bash\"]".to_string()])
        .build();
    let mut stream = docker.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
    let mut log = tokio::fs::OpenOptions::new().append(true).open(log).await?;
    while let Some(info) = stream.next().await {
        let info = info.map_err(|err| {
            UserError::new(
                format!("image `{image_name}`: the engine refused the rootfs import: {err}"),
                "check `docker info` and free disk space",
            )
        })?;
        if let Some(status) = info.status {
            log.write_all(format!("import: {status}\n").as_bytes()).await?;
        }
    }
    let _ = std::fs::remove_file(&rootfs);
    let image_id = docker.inspect_image(tag).await?.id.unwrap_or_default();
    Ok(Bootstrapped { image_id, rootfs_sha256 })
}

/// The Debian packages in an image and their versions, read with dpkg-query.
pub async fn package_versions(docker: &Docker, image: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let argv: Vec<String> = ["dpkg-query", "-W", "-f", "${Package}=${Version}\\n"].map(String::from).to_vec();
    let output = engine::run_in_container(docker, image, &argv, std::time::Duration::from_secs(60)).await?;
    anyhow::ensure!(output.exit_code == 0, "dpkg-query failed in {image}: {}", output.stderr.trim());
    Ok(output
        .stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, version)| (name.to_string(), version.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_base_toml_loads_and_its_options_reach_mmdebstrap() {
        let folder = jhub_docker::repo_root().join("images").join("base");
        let spec = BaseSpec::load("base", &folder).expect("images/base/base.toml is valid");
        let args = spec.mmdebstrap_args(Path::new("/tmp/rootfs.tar"));
        assert!(args.contains(&"--dpkgopt=path-exclude=/usr/share/doc/*".to_string()));
        assert!(args.contains(&"--dpkgopt=path-include=/usr/share/doc/*/copyright".to_string()));
        // dpkg applies the last matching pattern: every include comes after every exclude.
        let last_exclude = args.iter().rposition(|arg| arg.contains("path-exclude")).unwrap();
        let first_include = args.iter().position(|arg| arg.contains("path-include")).unwrap();
        assert!(last_exclude < first_include);
        let hook = args.iter().find(|arg| arg.contains("customize.sh")).expect("the customize script is a hook");
        assert!(hook.ends_with("customize.sh' \"$1\""), "{hook}");
        assert_eq!(&args[args.len() - 3..], [spec.suite.as_str(), "/tmp/rootfs.tar", spec.mirror.as_str()]);
    }

    #[test]
    fn relative_dpkg_patterns_and_missing_scripts_are_refused() {
        let folder = std::env::temp_dir().join(format!("jhub-base-spec-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let head = "suite = \"trixie\"\nvariant = \"minbase\"\nmirror = \"http://deb.debian.org/debian\"\npython_version = \"3.13\"\nsource_date_epoch = 1\npackages = []\n";
        std::fs::write(folder.join("base.toml"), format!("{head}dpkg_path_exclude = [\"usr/share/doc/*\"]\n")).unwrap();
        let err = BaseSpec::load("base", &folder).unwrap_err();
        assert!(err.to_string().contains("not absolute"), "{err}");
        std::fs::write(folder.join("base.toml"), format!("{head}customize = \"missing.sh\"\n")).unwrap();
        let err = BaseSpec::load("base", &folder).unwrap_err();
        assert!(err.to_string().contains("missing.sh"), "{err}");
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
