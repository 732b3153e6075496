//! A function as stored and shown: its validated name, runtime, environment variables,
//! execution options and retry policy.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A function name: it is part of URLs, so it is limited to letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FunctionName(String);

impl FunctionName {
    pub const MAX_LENGTH: usize = 128;

    pub fn parse(name: &str) -> Result<Self, String> {
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if name.is_empty() || name.len() > Self::MAX_LENGTH || !valid_chars {
            return Err(format!(
                "a function name has 1 to {} characters among A-Z, a-z, 0-9, `-` and `_`",
                Self::MAX_LENGTH
            ));
        }
        Ok(FunctionName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The language family of a Lambda runtime identifier; decides how the worker starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `python3.*`, entry point `module.function`.
    Python,
    /// `nodejs*.x`, entry point `file.export`.
    Node,
    /// `provided`, `provided.al2`, `provided.al2023`: an executable `bootstrap` in the archive.
    Provided,
}

impl Runtime {
    pub fn from_identifier(identifier: &str) -> Option<Runtime> {
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        if let Some(minor) = identifier.strip_prefix("python3.") {
            return digits(minor).then_some(Runtime::Python);
        }
        if let Some(major) = identifier
            .strip_prefix("nodejs")
            .and_then(|rest| rest.strip_suffix(".x"))
        {
            return digits(major).then_some(Runtime::Node);
        }
        matches!(identifier, "provided" | "provided.al2" | "provided.al2023")
            .then_some(Runtime::Provided)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    #[default]
    PermissionRequired,
    AllUsers,
    Public,
}

impl PermissionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionMode::PermissionRequired => "permissionRequired",
            PermissionMode::AllUsers => "allUsers",
            PermissionMode::Public => "public",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            PermissionMode::PermissionRequired,
            PermissionMode::AllUsers,
            PermissionMode::Public,
        ]
        .into_iter()
        .find(|mode| mode.as_str() == text)
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentVariable {
    pub value: String,
}

/// Values may be secrets: debug output (and so any log line) never shows them.
impl std::fmt::Debug for EnvironmentVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvironmentVariable { value: <redacted> }")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionOptions {
    pub permission_mode: PermissionMode,
    /// Priority of tasks created without one; not applied to direct or API execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::domain::Priority>)]
    pub default_priority: Option<i64>,
    /// Extension: days this function's finished tasks and API requests are kept (0: for
    /// ever), instead of the service's `retention.days`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 36500)]
    pub retention_days: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    pub enabled: bool,
    /// Error names that qualify for a retry; empty means every error does.
    pub errors_to_retry: Vec<String>,
}

impl RetryPolicy {
    pub fn applies_to(&self, error_name: &str) -> bool {
        self.enabled
            && (self.errors_to_retry.is_empty()
                || self.errors_to_retry.iter().any(|e| e == error_name))
    }
}

/// A function as stored (its code lives apart, addressed by `code_sha256`) and as returned by
/// `GET /functions/{name}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDefinition {
    #[schema(value_type = String)]
    pub name: FunctionName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub enabled: bool,
    pub entry_point: String,
    pub runtime: String,
    /// Seconds, 3 to 300.
    pub time_limit: i32,
    /// Megabytes, 128 to 10240.
    pub memory_limit: i32,
    pub environment_variables: BTreeMap<String, EnvironmentVariable>,
    pub execution_options: ExecutionOptions,
    pub retry_policy: RetryPolicy,
    /// Hex SHA-256 of the code archive; workers cache unpacked code by it.
    #[serde(skip)]
    pub code_sha256: String,
    /// Bumped on every change, so warm runtime processes of an older version are retired.
    #[serde(skip)]
    pub version: i64,
    #[serde(with = "crate::time::millis")]
    pub creation_timestamp: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    pub update_timestamp: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_lambda_runtime_identifiers() {
        assert_eq!(
            Runtime::from_identifier("python3.12"),
            Some(Runtime::Python)
        );
        assert_eq!(Runtime::from_identifier("nodejs20.x"), Some(Runtime::Node));
        assert_eq!(
            Runtime::from_identifier("provided.al2023"),
            Some(Runtime::Provided)
        );
        for unsupported in [
            "java21",
            "python2.7",
            "python3.",
            "nodejs.x",
            "nodejs20",
            "ruby3.3",
        ] {
            assert_eq!(Runtime::from_identifier(unsupported), None, "{unsupported}");
        }
    }

    #[test]
    fn validates_names() {
        assert!(FunctionName::parse("my-fn_2").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(FunctionName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_policy_matches_error_names() {
        let all = RetryPolicy {
            enabled: true,
            errors_to_retry: vec![],
        };
        assert!(all.applies_to("Anything"));
        let some = RetryPolicy {
            enabled: true,
            errors_to_retry: vec!["Timeout".into()],
        };
        assert!(some.applies_to("Timeout") && !some.applies_to("Other"));
        assert!(!RetryPolicy::default().applies_to("Timeout"));
    }
}
