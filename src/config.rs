//! Reading configuration. Every environment variable the functions and the CLI read goes through
//! an [`Env`], once, at start; each feature owns its settings and reads its own variables
//! (`ingest::config`, `router::config`, `feed::config`, `delivery`, `aws`, `logging`, `metrics`).
//! Every variable and its default is listed in docs/configuration.md (a test below keeps the
//! two in step); a bad value stops the function with a message naming the variable.

use std::time::Duration;

/// How long start-up may spend opening connections to DynamoDB and SQS (`WARM_UP_TIMEOUT_MS`).
pub const DEFAULT_WARM_UP_MS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
    /// A feature's own check failed; its message names the variable.
    #[error(transparent)]
    Refused(Box<dyn std::error::Error + Send + Sync>),
}

impl ConfigError {
    pub fn refused(e: impl std::error::Error + Send + Sync + 'static) -> ConfigError {
        ConfigError::Refused(Box::new(e))
    }

    /// Whether it is about a secret setting (every message names its variable).
    pub fn about_secrets(&self) -> bool {
        let text = self.to_string();
        crate::secret_refs::SECRET_VARIABLES
            .iter()
            .any(|v| text.contains(v))
    }
}

/// Reads variables through `lookup`, so tests need not touch the process environment.
pub struct Env<F: Fn(&str) -> Option<String>>(pub F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, var: &'static str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    /// The value as set, blank included.
    pub fn raw(&self, var: &'static str) -> Option<String> {
        (self.0)(var)
    }

    /// A comma-separated list (empty when unset).
    pub fn list(&self, var: &'static str) -> Vec<String> {
        self.optional(var)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    }

    /// A positive number of milliseconds.
    pub fn millis(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(
            self.number(var, default, |v| *v > 0)?,
        ))
    }

    /// How long start-up may spend opening connections (`WARM_UP_TIMEOUT_MS`); 0 turns it off.
    pub fn warm_up(&self) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.number(
            "WARM_UP_TIMEOUT_MS",
            DEFAULT_WARM_UP_MS,
            |_| true,
        )?))
    }

    pub fn optional(&self, var: &'static str) -> Option<String> {
        self.get(var).map(|v| v.trim().to_string())
    }

    /// An http(s) URL, when set.
    pub fn url(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        match self.optional(var) {
            None => Ok(None),
            Some(u) if crate::clock::is_http_url(&u) => Ok(Some(u)),
            Some(_) => Err(ConfigError::Invalid {
                var,
                reason: "expected an http(s) URL".into(),
            }),
        }
    }

    pub fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.get(var).ok_or(ConfigError::Missing(var))
    }

    pub fn number<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
        valid: impl Fn(&T) -> bool,
    ) -> Result<T, ConfigError> {
        let Some(text) = self.get(var) else {
            return Ok(default);
        };
        match text.trim().parse::<T>() {
            Ok(v) if valid(&v) => Ok(v),
            _ => Err(ConfigError::Invalid {
                var,
                reason: format!("expected a positive number, got {:?}", text.trim()),
            }),
        }
    }
}

pub fn process_env() -> Env<impl Fn(&str) -> Option<String>> {
    Env(|k: &str| std::env::var(k).ok())
}

/// `env` with the secrets fetched by reference (`crate::secret_refs`) in place of the
/// references.
pub fn with_resolved<'a, F: Fn(&str) -> Option<String>>(
    env: &'a Env<F>,
    resolved: &'a crate::secret_refs::Resolved,
) -> Env<impl Fn(&str) -> Option<String> + 'a> {
    Env(move |k: &str| match resolved.get(k) {
        Some(v) => Some(v.clone()),
        None => (env.0)(k),
    })
}

/// An environment of these pairs only, for the tests.
#[cfg(test)]
pub fn env_of(vars: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String> + use<>> {
    let map: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Env(move |k: &str| map.get(k).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// Upper-case names in the code that are not environment variables.
    const NOT_VARIABLES: &[&str] = &[
        "IN_PROGRESS",       // the idempotency record's status
        "RATE_LIMIT",        // HubSpot error categories
        "RATE_LIMITS",       //
        "VALIDATION_ERROR",  //
        "CARGO_PKG_VERSION", // read at compile time
        "ALL_OLD",
        "ALL_NEW", // DynamoDB's ReturnValuesOnConditionCheckFailure
    ];
    /// Documented, but read by the AWS SDK rather than by our code.
    const READ_BY_THE_SDK: &[&str] = &["AWS_MAX_ATTEMPTS"];

    fn sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }

    /// String literals shaped like a variable name: upper case, digits, and an underscore.
    fn variable_like(text: &str) -> BTreeSet<String> {
        text.split('"')
            .skip(1)
            .step_by(2)
            .filter(|t| {
                t.contains('_')
                    && t.starts_with(|c: char| c.is_ascii_uppercase())
                    && t.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .map(str::to_string)
            .collect()
    }

    /// The first cell of each row of the variables table: `NAME`, `A` / `B`, `NAME` (`_SUFFIX`).
    fn documented(markdown: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for row in markdown.lines().filter(|l| l.starts_with("| `")) {
            let cell = row.split('|').nth(1).unwrap_or_default();
            let ticked: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
            for name in &ticked {
                match name.strip_prefix('_') {
                    Some(_) => names.insert(format!("{}{name}", ticked[0])),
                    None => names.insert(name.to_string()),
                };
            }
        }
        names
    }

    #[test]
    fn every_variable_read_is_documented_and_every_documented_one_is_read() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        sources(&root.join("src"), &mut files);
        let mut read = BTreeSet::new();
        for (path, text) in &files {
            if !path.ends_with("src/config.rs") {
                assert!(
                    !text.contains(concat!("std::env::", "var")),
                    "{}: read the environment through config::Env",
                    path.display()
                );
            }
            read.extend(variable_like(text));
        }
        for name in NOT_VARIABLES {
            read.remove(*name);
        }
        let table =
            std::fs::read_to_string(root.join("docs/configuration.md")).expect("the docs table");
        let documented = documented(&table);
        let undocumented: Vec<&String> = read.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "read but not in docs/configuration.md: {undocumented:?}"
        );
        let unread: Vec<&String> = documented
            .difference(&read)
            .filter(|n| !READ_BY_THE_SDK.contains(&n.as_str()))
            .collect();
        assert!(unread.is_empty(), "documented but never read: {unread:?}");
    }

    #[test]
    fn blank_values_count_as_unset_except_when_read_raw() {
        let env = Env(|k: &str| (k == "A").then(|| "  ".to_string()));
        assert_eq!(env.optional("A"), None);
        assert_eq!(env.raw("A").as_deref(), Some("  "));
        assert!(matches!(env.required("A"), Err(ConfigError::Missing("A"))));
        assert_eq!(env.list("A"), Vec::<String>::new());
        assert_eq!(env.millis("A", 7).unwrap(), Duration::from_millis(7));
    }
}
