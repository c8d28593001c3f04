//! `stack/.env` as `up` keeps it: where it is, the admin password written into it once (mode 600, never
//! readable by others), and the warning for settings that open the hub to anyone who reaches its port.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::stack::stack_dir;
use crate::ui::{self, UserError};

/// The stack's settings: `stack/.env` overlaid by the process environment (as compose does it), read by
/// the shared crate's one reader.
pub(crate) use jhub_docker::settings::Settings;

/// The stack's settings file, where `up` keeps them; `down`, `backup`, `restore` and `adopt-volumes` take
/// another with `--env-file`.
pub(crate) fn default_env_file() -> PathBuf {
    stack_dir().join(".env")
}

/// Whether `address` (JHUB_BIND_ADDRESS) serves this machine only: 127.0.0.0/8, ::1 or localhost.
pub(crate) fn is_loopback(address: &str) -> bool {
    let address = address.trim().trim_start_matches('[').trim_end_matches(']');
    address.eq_ignore_ascii_case("localhost") || address.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The warning `up` prints when OPEN_SIGNUP=true is set explicitly for a stack published beyond loopback
/// (where the hub's default is signup with the admin's approval), as (message, hint).
pub(crate) fn signup_exposure(bind_address: &str, open_signup: &str) -> Option<(String, String)> {
    let open = matches!(open_signup.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on");
    (open && !is_loopback(bind_address)).then(|| {
        (
            format!(
                "OPEN_SIGNUP=true with JHUB_BIND_ADDRESS={bind_address}: anyone who reaches the port gets an approved account \
                 and a shell in a container"
            ),
            "remove OPEN_SIGNUP from stack/.env (beyond loopback the default is approval by the admin at /hub/authorize), \
             or bind to 127.0.0.1"
                .to_string(),
        )
    })
}

/// Makes sure `stack/.env` (mode 600) names an admin password: creates the file with a generated one, or
/// appends one to a file (such as a copy of .env.example) that has no `ADMIN_PASSWORD=` line at all. An
/// explicit empty `ADMIN_PASSWORD=` is left alone: that admin chose the sign-up-as-admin path. Returns the
/// password when it made one, so it is printed exactly once.
pub(crate) fn ensure_admin_password(env_file: &Path) -> anyhow::Result<Option<String>> {
    use std::os::unix::fs::OpenOptionsExt;
    let existing = match std::fs::read_to_string(env_file) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(UserError::new(format!("cannot read {}: {err}", env_file.display()), "check its permissions").into()),
    };
    if existing.is_some() {
        keep_private(env_file)?;
    }
    let names_password = |text: &str| text.lines().any(|line| line.trim_start().starts_with("ADMIN_PASSWORD="));
    if existing.as_deref().is_some_and(names_password) || std::env::var_os("ADMIN_PASSWORD").is_some() {
        return Ok(None);
    }
    let password = random_password();
    let mut text = String::new();
    if existing.is_none() {
        text.push_str("# Written by `cargo xtask up`; see stack/.env.example for every setting.\n");
    }
    text.push_str(&format!("# The admin account `admin` is created with this password at the hub's start.\nADMIN_PASSWORD={password}\n"));
    let mut file = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(env_file)?;
    file.write_all(text.as_bytes())?;
    Ok(Some(password))
}

/// A new password of 18 characters from an alphabet without look-alikes (about 105 bits).
pub(crate) fn random_password() -> String {
    let mut random = [0u8; 18];
    std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut random)).expect("/dev/urandom is readable");
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    random.iter().map(|byte| ALPHABET[*byte as usize % ALPHABET.len()] as char).collect()
}

/// Gives an existing settings file mode 600 when others could read it (a copy of `.env.example` keeps
/// that file's 644, and appending the password does not change a mode), and says so.
fn keep_private(env_file: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env_file)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(env_file, std::fs::Permissions::from_mode(0o600))
            .map_err(|err| UserError::new(format!("cannot make {} private: {err}", env_file.display()), "check who owns it"))?;
        ui::note(&format!("{} was mode {mode:o}; made it 600: it holds the admin password", env_file.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::keep_private;

    #[test]
    fn a_settings_file_others_can_read_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("jhub-env-mode-{}", std::process::id()));
        std::fs::write(&path, "ADMIN_PASSWORD=x\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        keep_private(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        std::fs::remove_file(&path).unwrap();
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn open_signup_beyond_loopback_is_warned_about() {
        for loopback in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"] {
            assert!(super::is_loopback(loopback), "{loopback}");
            assert_eq!(super::signup_exposure(loopback, "true"), None);
        }
        for exposed in ["0.0.0.0", "::", "192.168.1.20"] {
            assert!(!super::is_loopback(exposed), "{exposed}");
            let (message, hint) = super::signup_exposure(exposed, "True").expect("a warning");
            assert!(message.starts_with(&format!("OPEN_SIGNUP=true with JHUB_BIND_ADDRESS={exposed}: anyone")), "{message}");
            assert!(hint.contains("approval by the admin"), "{hint}");
            // Unset (the hub's default there is approval) or false: nothing to warn about.
            assert_eq!(super::signup_exposure(exposed, ""), None);
            assert_eq!(super::signup_exposure(exposed, "false"), None);
        }
    }
}
