//! The stack's settings: a `.env` file read as compose reads it (quotes, comments, `export`), overlaid by
//! the process environment as compose overlays it, with the names every verb needs typed and checked
//! (`Settings`). The one reader: the xtask's verbs and the test harness take their settings from here, and
//! a bad line or value is a `HintedError` naming the file, the line and the setting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::{HintedError, contract};

/// The hint of every error about a line's shape.
const LINE_HINT: &str = "a settings line is NAME=value (NAME of letters, digits and `_`, not starting with a digit); \
                         a line starting with `#` is a comment; see stack/.env.example";

/// The stack's settings: the file's values, overlaid by the process environment, with the stack's names
/// checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `JHUB_STACK_NAME` (default `jhub`): compose's project name and the stack label of user containers
    /// and volumes.
    pub stack_name: String,
    /// `JHUB_USER_VOLUME_PREFIX` (default `jupyterhub-user-`): the start of every user volume's name.
    pub user_volume_prefix: String,
    /// Where the values came from, for error messages (the file's path).
    source: String,
    values: BTreeMap<String, String>,
    /// The names the file itself sets (not the environment): what `unknown_keys` looks at.
    file_keys: BTreeSet<String>,
}

impl Settings {
    /// The settings in `env_file` (none when it does not exist) overlaid by the process environment: a
    /// variable the file sets, and any `JHUB_*` one, comes from the environment when it is set there.
    pub fn load(env_file: &Path) -> Result<Settings, HintedError> {
        let text = match std::fs::read_to_string(env_file) {
            Ok(text) => Some(text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(HintedError::new(format!("cannot read {}: {err}", env_file.display()), "check its permissions")),
        };
        Settings::from_sources(text.as_deref(), &env_file.display().to_string(), std::env::vars())
    }

    /// The settings of a file's `text` alone (no environment); `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Settings, HintedError> {
        Settings::from_sources(Some(text), source, std::iter::empty())
    }

    /// The file's `text` (if any) overlaid by `environment`, as `load` does with the process's.
    pub fn from_sources(
        text: Option<&str>,
        source: &str,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, HintedError> {
        let lines = match text {
            Some(text) => parse_lines(text, source)?,
            None => Vec::new(),
        };
        let file_keys: BTreeSet<String> = lines.iter().map(|(key, _)| key.clone()).collect();
        let mut values: BTreeMap<String, String> = lines.into_iter().collect();
        for (key, value) in environment {
            if values.contains_key(&key) || key.starts_with("JHUB_") {
                values.insert(key, value);
            }
        }
        let mut settings =
            Settings { stack_name: String::new(), user_volume_prefix: String::new(), source: source.to_string(), values, file_keys };
        settings.stack_name = settings.get("JHUB_STACK_NAME", contract::DEFAULT_STACK_NAME);
        settings.user_volume_prefix = settings.get("JHUB_USER_VOLUME_PREFIX", contract::DEFAULT_USER_VOLUME_PREFIX);
        settings.check_names()?;
        Ok(settings)
    }

    /// Compose refuses a project name other than lowercase letters, digits, `-` and `_` (starting with a
    /// letter or digit), and the engine a volume name other than letters, digits, `_`, `.` and `-`
    /// (starting with a letter or digit): said here, with the setting to change, before either is asked.
    fn check_names(&self) -> Result<(), HintedError> {
        let project_ok = self.stack_name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && self.stack_name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !project_ok {
            return Err(HintedError::new(
                format!("JHUB_STACK_NAME=`{}` (in {}) is not a compose project name", self.stack_name, self.source),
                "use lowercase letters, digits, `-` and `_`, starting with a letter or a digit",
            ));
        }
        let prefix_ok = self.user_volume_prefix.starts_with(|c: char| c.is_ascii_alphanumeric())
            && self.user_volume_prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !prefix_ok {
            return Err(HintedError::new(
                format!("JHUB_USER_VOLUME_PREFIX=`{}` (in {}) cannot start a volume name", self.user_volume_prefix, self.source),
                "use letters, digits, `_`, `.` and `-`, starting with a letter or a digit",
            ));
        }
        Ok(())
    }

    /// The value of `key`, or `default` when it is unset or empty (compose's `${KEY:-default}`).
    pub fn get(&self, key: &str, default: &str) -> String {
        self.values.get(key).filter(|value| !value.is_empty()).cloned().unwrap_or_else(|| default.to_string())
    }

    /// The value of `key` as set (an empty value included), or None when it is not set at all.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// `JHUB_HTTP_PORT` (default 8000): the port the stack publishes on the host.
    pub fn http_port(&self) -> Result<u16, HintedError> {
        let raw = self.get("JHUB_HTTP_PORT", "8000");
        raw.parse::<u16>().ok().filter(|port| *port != 0).ok_or_else(|| {
            HintedError::new(format!("JHUB_HTTP_PORT=`{raw}` (in {}) is not a port", self.source), "set a number from 1 to 65535")
        })
    }

    /// The names the file sets that are not in `known` (a misspelt setting is otherwise ignored without
    /// a word), sorted.
    pub fn unknown_keys(&self, known: &[String]) -> Vec<String> {
        self.file_keys.iter().filter(|key| !known.contains(key)).cloned().collect()
    }
}

/// The `NAME=value` lines of a settings file, in order (a name set twice appears twice; the last wins).
fn parse_lines(text: &str, source: &str) -> Result<Vec<(String, String)>, HintedError> {
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((name, raw)) = line.split_once('=') else {
            // A bare name takes its value from the environment in compose; it sets nothing here.
            if is_name(line) {
                continue;
            }
            return Err(HintedError::new(format!("{source} line {number}: `{line}` is not a NAME=value line"), LINE_HINT));
        };
        let name = name.trim();
        if !is_name(name) {
            return Err(HintedError::new(format!("{source} line {number}: `{name}` is not a variable name"), LINE_HINT));
        }
        let value = value_of(raw).ok_or_else(|| {
            HintedError::new(
                format!("{source} line {number}: the value of {name} opens a quote it never closes"),
                "close the quote on the same line, or remove it",
            )
        })?;
        lines.push((name.to_string(), value));
    }
    Ok(lines)
}

fn is_name(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value as compose reads it: quotes removed (what follows the closing quote is ignored); for an
/// unquoted value, a ` #` starts a comment. None for a quote that is never closed.
fn value_of(raw: &str) -> Option<String> {
    let raw = raw.trim();
    for quote in ['"', '\''] {
        if let Some(rest) = raw.strip_prefix(quote) {
            return rest.split_once(quote).map(|(inner, _)| inner.to_string());
        }
    }
    Some(match raw.find(" #") {
        Some(comment) => raw[..comment].trim_end().to_string(),
        None => raw.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::Settings;

    fn parse(text: &str) -> Settings {
        Settings::parse(text, "stack/.env").unwrap_or_else(|err| panic!("{text:?} should parse: {err}"))
    }

    #[test]
    fn values_are_read_like_compose() {
        let settings = parse(
            "# a comment\n\nPORT_A=8080 # the port\nQUOTED=\"a # b\"\nSINGLE='x'\nHASH=pass#word\nEMPTY=\n  SPACED = v  \nexport EXPORTED=yes\n",
        );
        assert_eq!(settings.value("PORT_A"), Some("8080"));
        assert_eq!(settings.value("QUOTED"), Some("a # b"));
        assert_eq!(settings.value("SINGLE"), Some("x"));
        assert_eq!(settings.value("HASH"), Some("pass#word"));
        assert_eq!(settings.value("EMPTY"), Some(""));
        assert_eq!(settings.value("SPACED"), Some("v"));
        assert_eq!(settings.value("EXPORTED"), Some("yes"));
        assert_eq!(settings.value("MISSING"), None);
    }

    #[test]
    fn an_empty_value_falls_back_to_the_default() {
        let settings = parse("EMPTY=\nSET=1\n");
        assert_eq!(settings.get("EMPTY", "fallback"), "fallback");
        assert_eq!(settings.get("MISSING", "fallback"), "fallback");
        assert_eq!(settings.get("SET", "fallback"), "1");
    }

    #[test]
    fn the_last_of_a_name_set_twice_wins() {
        assert_eq!(parse("A=1\nA=2\n").value("A"), Some("2"));
    }

    #[test]
    fn the_stack_names_have_the_contracts_defaults() {
        let settings = parse("");
        assert_eq!(settings.stack_name, "jhub");
        assert_eq!(settings.user_volume_prefix, "jupyterhub-user-");
        let settings = parse("JHUB_STACK_NAME=team_2\nJHUB_USER_VOLUME_PREFIX=team2.user-\n");
        assert_eq!(settings.stack_name, "team_2");
        assert_eq!(settings.user_volume_prefix, "team2.user-");
        // Empty is unset, as compose's `${JHUB_STACK_NAME:-jhub}` has it.
        assert_eq!(parse("JHUB_STACK_NAME=\n").stack_name, "jhub");
    }

    #[test]
    fn the_environment_overlays_the_file_for_its_names_and_every_jhub_one() {
        let environment =
            [("JHUB_STACK_NAME", "from-env"), ("ADMIN_PASSWORD", "env-password"), ("UNRELATED", "not taken"), ("JHUB_TLS", "self-signed")]
                .map(|(key, value)| (key.to_string(), value.to_string()));
        let settings =
            Settings::from_sources(Some("JHUB_STACK_NAME=from-file\nADMIN_PASSWORD=file-password\n"), "stack/.env", environment).unwrap();
        assert_eq!(settings.stack_name, "from-env");
        assert_eq!(settings.value("ADMIN_PASSWORD"), Some("env-password"));
        assert_eq!(settings.value("UNRELATED"), None);
        assert_eq!(settings.value("JHUB_TLS"), Some("self-signed"));
        let without_file = Settings::from_sources(None, "stack/.env", [("JHUB_STACK_NAME".to_string(), "other".to_string())]).unwrap();
        assert_eq!(without_file.stack_name, "other");
    }

    #[test]
    fn unknown_keys_are_kept_and_listed() {
        let settings = parse("OPEN_SIGNUPS=true\nOPEN_SIGNUP=false\n");
        assert_eq!(settings.value("OPEN_SIGNUPS"), Some("true"));
        let known = vec!["OPEN_SIGNUP".to_string(), "JHUB_STACK_NAME".to_string()];
        assert_eq!(settings.unknown_keys(&known), ["OPEN_SIGNUPS"]);
        // Only what the file sets counts: a JHUB_* variable of the environment is not the file's typo.
        let overlaid = Settings::from_sources(Some(""), "stack/.env", [("JHUB_ELSEWHERE".to_string(), "1".to_string())]).unwrap();
        assert!(overlaid.unknown_keys(&known).is_empty());
    }

    #[test]
    fn bad_lines_are_errors_with_the_line_and_a_hint() {
        for (text, wanted) in [
            ("A=1\nthis is not a setting\n", "stack/.env line 2: `this is not a setting` is not a NAME=value line"),
            ("1ABC=x\n", "stack/.env line 1: `1ABC` is not a variable name"),
            ("MY VAR=x\n", "stack/.env line 1: `MY VAR` is not a variable name"),
            ("\nPASSWORD=\"open\n", "stack/.env line 2: the value of PASSWORD opens a quote it never closes"),
        ] {
            let err = Settings::parse(text, "stack/.env").expect_err(text);
            assert_eq!(err.message, wanted);
            assert!(!err.hint.is_empty(), "{text:?}: no hint");
        }
        // A bare name is compose's "from the environment": allowed, and it sets nothing.
        assert_eq!(parse("BARE\n").value("BARE"), None);
    }

    #[test]
    fn bad_values_are_errors_naming_the_setting_and_the_file() {
        let err = Settings::parse("JHUB_STACK_NAME=My Stack\n", "stack/.env").unwrap_err();
        assert_eq!(err.message, "JHUB_STACK_NAME=`My Stack` (in stack/.env) is not a compose project name");
        assert!(err.hint.contains("lowercase"));
        let err = Settings::parse("JHUB_USER_VOLUME_PREFIX=/home/\n", "stack/.env").unwrap_err();
        assert!(err.message.starts_with("JHUB_USER_VOLUME_PREFIX=`/home/`"), "{}", err.message);
        assert!(!err.hint.is_empty());
        let settings = parse("JHUB_HTTP_PORT=eighty\n");
        let err = settings.http_port().unwrap_err();
        assert_eq!(err.message, "JHUB_HTTP_PORT=`eighty` (in stack/.env) is not a port");
        assert_eq!(err.hint, "set a number from 1 to 65535");
        assert!(parse("JHUB_HTTP_PORT=0\n").http_port().is_err());
        assert!(parse("JHUB_HTTP_PORT=65536\n").http_port().is_err());
        assert_eq!(parse("JHUB_HTTP_PORT=8443\n").http_port(), Ok(8443));
        assert_eq!(parse("").http_port(), Ok(8000));
    }

    #[test]
    fn the_committed_example_reads_on_its_defaults() {
        let example = crate::repo_root().join("stack").join(".env.example");
        let text = std::fs::read_to_string(&example).unwrap();
        let settings = Settings::parse(&text, &example.display().to_string()).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(settings.stack_name, "jhub");
        assert!(settings.http_port().is_ok());
    }

    #[test]
    fn a_missing_file_is_no_settings_and_an_unreadable_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("jhub-settings-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Settings::load(&dir.join("absent.env")).is_ok());
        // A folder where the file should be: reading it fails, and says so.
        let err = Settings::load(&dir).unwrap_err();
        assert!(err.message.starts_with("cannot read "), "{}", err.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
