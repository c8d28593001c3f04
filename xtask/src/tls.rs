//! The TLS front door for `cargo xtask up`: reads JHUB_TLS (off, self-signed, files), makes or checks the
//! certificate before anything starts, tests nginx's config with it in a throwaway container, and returns
//! the compose overlay (stack/docker-compose.tls.yml) and variables that put nginx in front of the proxy.

use jhub_docker::certs;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use jhub_docker::compose::{self, Compose};
use jhub_docker::lock::Lock;
use time::OffsetDateTime;

use certs::{CaChange, Name, SelfSignedFiles};

use crate::engine;
use crate::ui::{self, UserError};

const NGINX_TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How the stack is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP from the proxy, as without this module.
    Off,
    /// A local CA in stack/tls signs the server certificate.
    SelfSigned,
    /// JHUB_TLS_CERT / JHUB_TLS_KEY name the certificate and key (from a real CA).
    Files,
}

pub fn mode(value: &str) -> Result<Mode, UserError> {
    match value {
        "" | "off" => Ok(Mode::Off),
        "self-signed" => Ok(Mode::SelfSigned),
        "files" => Ok(Mode::Files),
        other => Err(UserError::new(
            format!("JHUB_TLS={other} is not a TLS mode"),
            "set JHUB_TLS in stack/.env to off, self-signed (a local CA) or files (JHUB_TLS_CERT and JHUB_TLS_KEY)",
        )),
    }
}

/// What `up` adds to the stack: compose files after the base one, variables for compose, and the URL
/// users open. With TLS off, nothing.
#[derive(Debug, Default)]
pub struct Plan {
    pub compose_files: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    /// `https://localhost[:port]` with TLS on (`https://HOST[:port]` with per-user origins).
    pub url: Option<String>,
    /// The certificate and key nginx gets (TLS on).
    pair: Option<(PathBuf, PathBuf)>,
}

impl Plan {
    /// With TLS on, after the images are built: `nginx -t` on the locked nginx image's config with the
    /// certificate and key, in a throwaway container; then the image is what the overlay runs.
    pub fn test_nginx(&mut self, docker: &Docker, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        if self.pair.is_none() {
            return Ok(());
        }
        let nginx_image = locked_nginx_image()?;
        if !runtime.block_on(engine::image_exists(docker, &nginx_image)) {
            return Err(UserError::new(
                format!("the locked nginx image {nginx_image} is not on this engine"),
                "run `cargo xtask build-images nginx` (or `cargo xtask up` without --no-build)",
            )
            .into());
        }
        runtime.block_on(self.test_nginx_image(docker, &nginx_image))
    }

    /// With TLS on: `nginx -t` with `image` (on `docker`, which holds it) and the certificate and key,
    /// copied into a throwaway container (so any engine will do, a swarm manager's too); then `image` is
    /// what the overlay runs.
    pub async fn test_nginx_image(&mut self, docker: &Docker, image: &str) -> anyhow::Result<()> {
        let Some((cert, key)) = &self.pair else { return Ok(()) };
        test_nginx_config(docker, image, cert, key).await?;
        self.env.push(("JHUB_NGINX_IMAGE".to_string(), image.to_string()));
        Ok(())
    }

    /// The certificate and key nginx gets, with TLS on.
    pub fn pair(&self) -> Option<(&Path, &Path)> {
        self.pair.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()))
    }

    /// `compose` with the overlay files and variables added.
    pub fn apply(&self, compose: Compose) -> Compose {
        let compose = self.compose_files.iter().fold(compose, |compose, file| compose.with_overlay(file));
        self.env.iter().fold(compose, |compose, (key, value)| compose.with_env(key, value))
    }
}

fn stack_dir() -> PathBuf {
    jhub_docker::repo_root().join("stack")
}

/// The overlay for verbs that only drive an existing stack (`down`, `logs`): no certificate work, and
/// values that only let compose interpolate the file (they must work with the lock or the files gone).
pub fn for_running_stack(setting: impl Fn(&str, &str) -> String) -> Plan {
    match mode(&setting("JHUB_TLS", "off")) {
        Ok(Mode::Off) | Err(_) => Plan::default(),
        Ok(_) => Plan {
            compose_files: vec![stack_dir().join("docker-compose.tls.yml")],
            env: vec![
                ("JHUB_NGINX_IMAGE".to_string(), locked_nginx_image().unwrap_or_else(|_| "jhub/nginx:latest".to_string())),
                ("JHUB_TLS_CERT_MOUNT".to_string(), "/dev/null".to_string()),
                ("JHUB_TLS_KEY_MOUNT".to_string(), "/dev/null".to_string()),
            ],
            url: None,
            pair: None,
        },
    }
}

/// What `up` needs for TLS, done before anything is built or started: `setting(key, default)` reads the
/// stack's settings (stack/.env overlaid by the environment). Refuses bad input with `error:` + `hint:`,
/// makes or renews the self-signed certificate; `Plan::test_nginx` runs `nginx -t` once images exist.
pub fn prepare(setting: impl Fn(&str, &str) -> String) -> anyhow::Result<Plan> {
    let mode = mode(&setting("JHUB_TLS", "off"))?;
    // Read only with TLS on, as before per-user origins: a stack without TLS ignores the names.
    let public_hosts = if mode == Mode::Off { Vec::new() } else { certs::parse_public_hosts(&setting("JHUB_PUBLIC_HOSTS", ""))? };
    let subdomain_host = subdomain_host(mode, &setting("JHUB_SUBDOMAINS", ""), &public_hosts)?;
    if let Some((message, hint)) = exposure_warning(&setting("JHUB_BIND_ADDRESS", "127.0.0.1"), mode, subdomain_host.is_some()) {
        ui::warn(&message, &hint);
    }
    if mode == Mode::Off {
        return Ok(Plan::default());
    }
    require_compose_with_reset()?;
    let wildcard = subdomain_host.as_ref().map(|host| Name::Dns(format!("*.{host}")));
    let now = OffsetDateTime::now_utc();
    let (cert, key) = match mode {
        Mode::SelfSigned => {
            let files = SelfSignedFiles { dir: stack_dir().join("tls") };
            // The wildcard lies inside HOST's permitted subtree, so adding it keeps a CA made for HOST.
            let names = certs::server_names(host_name().as_deref(), &public_hosts.iter().chain(&wildcard).cloned().collect::<Vec<_>>());
            let outcome = certs::ensure_self_signed(&files, &names, now)?;
            report_self_signed(&files, &names, &outcome);
            (files.server_cert(), files.server_key())
        }
        Mode::Files => {
            let cert = setting_path(&setting("JHUB_TLS_CERT", ""), "JHUB_TLS_CERT")?;
            let key = setting_path(&setting("JHUB_TLS_KEY", ""), "JHUB_TLS_KEY")?;
            let info = certs::check_pair(&cert, &key, now)?;
            let missing: Vec<String> = public_hosts.iter().filter(|name| !covers(&info.names, name)).map(Name::to_string).collect();
            if !missing.is_empty() {
                ui::note(&format!("warning: {} does not name {} (JHUB_PUBLIC_HOSTS)", cert.display(), missing.join(", ")));
            }
            if let Some(host) = &subdomain_host {
                require_wildcard(&info.names, host, &cert)?;
            }
            ui::note(&format!("TLS certificate {} (valid until {})", cert.display(), certs::date(info.not_after)));
            (cert, key)
        }
        Mode::Off => unreachable!("handled above"),
    };
    // A single-file bind mount keeps the file it found at start (a renewal replaces the file, and a
    // Let's Encrypt `live/` link moves on): a digest of both in nginx's environment makes compose
    // recreate it, and so remount them, whenever they changed.
    let mut pair = std::fs::read(&cert)?;
    pair.extend(std::fs::read(&key)?);
    let digest = crate::context::sha256_hex(&pair);
    let https_port = setting("JHUB_HTTPS_PORT", "443");
    let port_suffix = if https_port == "443" { String::new() } else { format!(":{https_port}") };
    let url = format!("https://{}{port_suffix}", subdomain_host.as_deref().unwrap_or("localhost"));
    let mut env = vec![
        ("JHUB_TLS_CERT_MOUNT".to_string(), cert.display().to_string()),
        ("JHUB_TLS_KEY_MOUNT".to_string(), key.display().to_string()),
        ("JHUB_TLS_DIGEST".to_string(), digest),
    ];
    if let Some(host) = &subdomain_host {
        ui::note(&format!("per-user origins: the hub at {url}, each user's server at https://<user>.{host}{port_suffix}"));
        // JupyterHub's subdomain_host: the hub's public URL, with the port browsers use.
        env.push(("JHUB_SUBDOMAIN_HOST".to_string(), url.clone()));
    }
    Ok(Plan { compose_files: vec![stack_dir().join("docker-compose.tls.yml")], env, url: Some(url), pair: Some((cert, key)) })
}

/// With per-user origins, a given certificate must name `*.HOST` itself: a wildcard one level up
/// (`*.example.org`) covers `HOST` but not `alice.HOST`.
fn require_wildcard(names: &BTreeSet<Name>, host: &str, cert: &Path) -> Result<(), UserError> {
    let wildcard = Name::Dns(format!("*.{host}"));
    if names.contains(&wildcard) {
        return Ok(());
    }
    Err(UserError::new(
        format!("{} does not name {wildcard}, which per-user origins need (JHUB_SUBDOMAINS)", cert.display()),
        format!(
            "get a certificate that also names {wildcard} (Let's Encrypt: a DNS-01 challenge), or set JHUB_SUBDOMAINS=false to \
             serve every user's server on the hub's origin"
        ),
    ))
}

/// The hub's host name when each user's server gets an origin of its own (`https://<user>.HOST`), from
/// JHUB_SUBDOMAINS (true, false, or empty: on whenever it can be) and HOST, the first DNS name of
/// JHUB_PUBLIC_HOSTS with at least two labels: a wildcard directly under one label (`*.localhost`,
/// `*.myhost`) is refused by OpenSSL's and Chromium's name matching, and an IP address has no names
/// under it. Needs TLS: the user's names are served by nginx with a certificate naming `*.HOST`.
pub fn subdomain_host(mode: Mode, setting: &str, public_hosts: &[Name]) -> Result<Option<String>, UserError> {
    let wanted = match setting.trim().to_ascii_lowercase().as_str() {
        "" => None,
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        other => {
            return Err(UserError::new(
                format!("JHUB_SUBDOMAINS={other} is neither true nor false"),
                "set JHUB_SUBDOMAINS=true, false, or leave it empty (on whenever JHUB_TLS is on and JHUB_PUBLIC_HOSTS names a host)",
            ));
        }
    };
    let host = public_hosts.iter().find_map(|name| match name {
        Name::Dns(dns) if !dns.starts_with("*.") && dns.contains('.') => Some(dns.clone()),
        _ => None,
    });
    match (wanted, mode, host) {
        (Some(false), _, _) | (None, Mode::Off, _) | (None, _, None) => Ok(None),
        (Some(true), Mode::Off, _) => Err(UserError::new(
            "JHUB_SUBDOMAINS=true needs JHUB_TLS (the users' names are served by nginx)",
            "set JHUB_TLS=self-signed (or files) and JHUB_PUBLIC_HOSTS=hub.example.org in stack/.env",
        )),
        (Some(true), _, None) => Err(UserError::new(
            "JHUB_SUBDOMAINS=true, but JHUB_PUBLIC_HOSTS names no host with a dot to put the users' names under",
            "set JHUB_PUBLIC_HOSTS=hub.example.org (its first such name is the hub's; users get alice.hub.example.org), \
             or hub.localhost on a single machine",
        )),
        (_, _, Some(host)) => Ok(Some(host)),
    }
}

/// The warning `up` prints when the stack is served beyond this machine while every user's server shares
/// the hub's origin: a page a user serves then runs with the hub's origin in an admin's browser.
pub fn exposure_warning(bind_address: &str, mode: Mode, subdomains: bool) -> Option<(String, String)> {
    if crate::stack_settings::is_loopback(bind_address) || subdomains {
        return None;
    }
    let hint = if mode == Mode::Off {
        "set JHUB_TLS=self-signed (or files) and JHUB_PUBLIC_HOSTS=hub.example.org, with a DNS record *.hub.example.org \
         pointing here: each user's server then gets its own origin (README, \"Serving other machines with TLS\")"
    } else {
        "set JHUB_PUBLIC_HOSTS=hub.example.org (a name with a dot, DNS wildcard *.hub.example.org pointing here) and leave \
         JHUB_SUBDOMAINS empty or true: each user's server then gets its own origin (README, \"Serving other machines with TLS\")"
    };
    Some((
        format!(
            "JHUB_BIND_ADDRESS={bind_address} serves other machines, and every user's server shares the hub's origin: a page a \
             user serves can read hub pages and call the hub's API as any admin who opens it"
        ),
        hint.to_string(),
    ))
}

/// The overlay closes the proxy's port with `ports: !reset []`, which Compose understands from v2.24.
fn require_compose_with_reset() -> Result<(), UserError> {
    let cli = jhub_docker::compose::detect_cli()?;
    let output = std::process::Command::new(&cli[0]).args(&cli[1..]).args(["version", "--short"]).output();
    let version =
        output.map(|output| String::from_utf8_lossy(&output.stdout).trim().trim_start_matches('v').to_string()).unwrap_or_default();
    if compose_supports_reset(&version) {
        return Ok(());
    }
    Err(UserError::new(
        format!(
            "JHUB_TLS needs Compose v2.24 or later (`{}` is {})",
            cli.join(" "),
            if version.is_empty() { "of unknown version" } else { &version }
        ),
        "install the Compose v2 plugin (`docker compose`); on Debian 12, trixie's docker-compose package works (README, Set up)",
    ))
}

fn compose_supports_reset(version: &str) -> bool {
    let mut numbers = version.split(['.', '-', '+']).map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (2, 24)
}

/// A path from stack/.env: relative ones are relative to stack/, where the file lives.
fn setting_path(value: &str, key: &str) -> Result<PathBuf, UserError> {
    if value.is_empty() {
        return Err(UserError::new(
            format!("JHUB_TLS=files needs {key}"),
            "set JHUB_TLS_CERT and JHUB_TLS_KEY in stack/.env to the PEM certificate (with its chain) and its private key",
        ));
    }
    let path = Path::new(value);
    Ok(if path.is_absolute() { path.to_path_buf() } else { stack_dir().join(path) })
}

/// Whether a certificate's names cover `name` (a `*.` name covers one label).
fn covers(names: &BTreeSet<Name>, name: &Name) -> bool {
    names.contains(name)
        || matches!(name, Name::Dns(dns) if dns.split_once('.').is_some_and(|(_, parent)| names.contains(&Name::Dns(format!("*.{parent}")))))
}

/// This machine's host name, as the kernel has it.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|name| name.trim().to_string()).filter(|name| !name.is_empty())
}

fn report_self_signed(files: &SelfSignedFiles, names: &BTreeSet<Name>, outcome: &certs::Outcome) {
    let shown: Vec<String> = names.iter().map(Name::to_string).collect();
    let ca = files.ca_cert();
    let ca = ca.display();
    match &outcome.ca {
        CaChange::Kept => {}
        CaChange::Made => ui::note(&format!("made a local CA: {ca}")),
        // A new CA breaks every client that trusted the old one, so it is a warning, never a quiet note.
        CaChange::Replaced { why, old_subject } => ui::warn(
            &format!("made a new local CA, {ca}, because the old one could not be kept ({why}): every client must trust the new ca.crt"),
            &format!(
                "on each client, remove the old CA{} from its trust store and trust the new ca.crt as below; its key was replaced, \
                 so the old CA signs nothing more",
                old_subject.as_deref().map(|subject| format!(" ({subject})")).unwrap_or_default()
            ),
        ),
    }
    let server_until = certs::date(outcome.server_not_after);
    match &outcome.new_server {
        Some(why) => ui::note(&format!("issued the server certificate for {} ({why}), valid until {server_until}", shown.join(", "))),
        None => ui::note(&format!("kept the server certificate for {}, valid until {server_until}", shown.join(", "))),
    }
    println!("TLS: browsers trust this stack once they trust its local CA {ca}");
    println!(
        "  The CA is valid until {} ({} years; `up` makes a new one {} days before) and can sign only for",
        certs::date(outcome.ca_not_after),
        certs::CA_DAYS / 365,
        certs::RENEW_WITHIN_DAYS
    );
    println!("  {}", describe_permits(&outcome.ca_permits));
    println!("  (X.509 name constraints, enforced by OpenSSL, Firefox and Chromium: a copy of ca.key cannot impersonate other sites).");
    println!("  Debian/Ubuntu: sudo cp {ca} /usr/local/share/ca-certificates/jhub-docker-ca.crt && sudo update-ca-certificates");
    println!("  Firefox:       Settings → Privacy & Security → Certificates → View Certificates → Authorities → Import… → {ca}");
    println!("                 (tick \"Trust this CA to identify websites\")");
    println!("  Chromium:      chrome://certificate-manager → Local certificates → Custom → Import → {ca}");
    println!("                 (or: certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n jhub-docker -i {ca})");
    println!("  Other machines need the same file: copy ca.crt, never ca.key.");
}

/// What a CA's permitted subtrees allow, for people: `localhost, hub.example.org (each with the names
/// under it) and 127.0.0.1, ::1`.
fn describe_permits(permits: &BTreeSet<certs::Subtree>) -> String {
    let dns: Vec<String> = permits.iter().filter(|subtree| matches!(subtree, certs::Subtree::Dns(_))).map(|s| s.to_string()).collect();
    let ips: Vec<String> = permits.iter().filter(|subtree| matches!(subtree, certs::Subtree::Ip(..))).map(|s| s.to_string()).collect();
    match (dns.is_empty(), ips.is_empty()) {
        (false, false) => format!("{} (each with the names under it) and {}", dns.join(", "), ips.join(", ")),
        (false, true) => format!("{} (each with the names under it)", dns.join(", ")),
        (true, false) => ips.join(", "),
        (true, true) => "no name at all".to_string(),
    }
}

fn locked_nginx_image() -> Result<String, UserError> {
    let lock = Lock::load(&jhub_docker::lock_path(&jhub_docker::repo_root()))?;
    lock.keyed_tag("nginx")
        .map(str::to_string)
        .ok_or_else(|| UserError::new("images.lock has no nginx image (needed with JHUB_TLS on)", "run `cargo xtask build-images nginx`"))
}

/// `nginx -t` on the image's config with the real certificate and key, in a throwaway container without
/// a network: a bad pair (a key of another certificate, a broken chain) stops `up` here, not at start.
async fn test_nginx_config(docker: &Docker, image: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let config = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["test".to_string()]),
        network_disabled: Some(true),
        labels: Some([(jhub_docker::contract::PURPOSE_LABEL.to_string(), "nginx-config-test".to_string())].into()),
        ..Default::default()
    };
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|err| UserError::new(format!("cannot read {}: {err}", path.display()), "check the file and its permissions"))
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let files = [
        engine::FileIn { path: compose::TLS_CERT_TARGET, content: &cert_pem, mode: 0o444 },
        engine::FileIn { path: compose::TLS_KEY_TARGET, content: &key_pem, mode: 0o400 },
    ];
    let output = engine::run_configured(docker, config, &files, NGINX_TEST_TIMEOUT).await?;
    if output.exit_code != 0 {
        let said = format!("{}{}", output.stdout, output.stderr);
        let hint = if said.contains("key values mismatch") {
            "JHUB_TLS_KEY is not the key of JHUB_TLS_CERT: point both at the matching pair"
        } else {
            "nginx could not load the certificate or key: check both files (PEM, key unencrypted)"
        };
        return Err(
            UserError::new(format!("nginx -t refused the configuration with {}:\n{}", cert.display(), said.trim_end()), hint).into()
        );
    }
    ui::note("nginx -t: the configuration and certificate load");
    Ok(())
}

#[cfg(test)]
mod tests;
