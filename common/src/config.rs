//! Configuration shared by both binaries and the loader every binary uses: built-in defaults,
//! then an optional file (`TASKS_CONFIG=path/to/file.toml`), then `TASKS__SECTION__KEY`
//! environment variables. A bad value fails at start with a message that names the key.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The environment variable that names an optional configuration file.
pub const CONFIG_FILE_VARIABLE: &str = "TASKS_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Postgres connection URL. The database is created on first start if it does not exist.
    pub url: String,
    /// Maximum number of pooled connections.
    pub pool_size: usize,
    /// Longest a single statement may run before Postgres cancels it (0: no limit), so a
    /// pathological query cannot hold a connection and its locks indefinitely.
    pub statement_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "postgres://postgres@127.0.0.1:5432/tasks".into(),
            pool_size: 16,
            statement_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// RabbitMQ URL, vhost included.
    pub url: String,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `scheduler=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

/// Loads `T` from its defaults, the optional file named by `TASKS_CONFIG` and the `TASKS__*`
/// environment variables, in that order of increasing precedence.
pub fn load<T>() -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let file = std::env::var_os(CONFIG_FILE_VARIABLE).map(PathBuf::from);
    load_from(file, std::env::vars())
}

/// [`load`] with the file and the environment given explicitly, so tests need not touch the
/// process environment.
pub fn load_from<T>(
    file: Option<PathBuf>,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let variables = environment
        .into_iter()
        .filter(|(key, _)| key.starts_with("TASKS__"))
        .collect();
    let mut builder =
        config::Config::builder().add_source(config::Config::try_from(&T::default())?);
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file).required(true));
    }
    builder = builder.add_source(
        config::Environment::with_prefix("TASKS")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(variables)),
    );
    Ok(builder.build()?.try_deserialize()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Sample {
        database: DatabaseConfig,
        log: LogConfig,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_reach_local_services() {
        let sample: Sample = load_from(None, env(&[])).unwrap();
        assert_eq!(
            sample.database.url,
            "postgres://postgres@127.0.0.1:5432/tasks"
        );
        assert_eq!(sample.log.format, LogFormat::Pretty);
    }

    #[test]
    fn environment_overrides_defaults() {
        let sample: Sample = load_from(
            None,
            env(&[
                ("TASKS__DATABASE__URL", "postgres://db/other"),
                ("TASKS__DATABASE__POOL_SIZE", "3"),
                ("TASKS__LOG__FORMAT", "json"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(sample.database.url, "postgres://db/other");
        assert_eq!(sample.database.pool_size, 3);
        assert_eq!(sample.log.format, LogFormat::Json);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let error = load_from::<Sample>(None, env(&[("TASKS__DATABASE__POOL_SIZE", "many")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("database.pool_size"), "{error}");
        let error = load_from::<Sample>(None, env(&[("TASKS__LOG__FORMAT", "xml")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("log.format"), "{error}");
    }
}
