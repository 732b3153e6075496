//! The `functions` and `function_code` tables.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::Row;

use std::sync::Arc;

use super::StoreError;
use crate::code_archive::CodeArchive;
use crate::domain::{
    EnvironmentVariable, ExecutionOptions, FunctionDefinition, FunctionName, PermissionMode,
    RetryPolicy,
};
use crate::secrets::SecretBox;

const COLUMNS: &str = "name, description, enabled, entry_point, runtime, time_limit, memory_limit, \
    environment_variables, permission_mode, default_priority, retry_enabled, errors_to_retry, \
    code_sha256, version, creation_timestamp, update_timestamp, retention_days";

/// One line of `GET /functions`.
#[derive(Debug, Clone)]
pub struct FunctionSummary {
    pub name: String,
    pub description: Option<String>,
    pub update_timestamp: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Functions {
    pool: Pool,
    /// Environment variable values are sealed on the way in and opened on the way out.
    secrets: Arc<SecretBox>,
}

impl Functions {
    pub fn new(pool: Pool, secrets: Arc<SecretBox>) -> Self {
        Functions { pool, secrets }
    }

    /// Stores a new function and its code. A taken name is a unique violation
    /// ([`StoreError::is_unique_violation`]).
    pub async fn create(
        &self,
        function: &FunctionDefinition,
        code: &CodeArchive,
    ) -> Result<FunctionDefinition, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        store_code(&transaction, code).await?;
        let row = transaction
            .query_one(
                &format!(
                    "INSERT INTO functions ({COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, nextval('function_versions'), $14, $14, $15) \
                     RETURNING {COLUMNS}"
                ),
                &[
                    &function.name.as_str(),
                    &function.description,
                    &function.enabled,
                    &function.entry_point,
                    &function.runtime,
                    &function.time_limit,
                    &function.memory_limit,
                    &self.sealed_environment(function.name.as_str(), &function.environment_variables),
                    &function.execution_options.permission_mode.as_str(),
                    &function.execution_options.default_priority,
                    &function.retry_policy.enabled,
                    &function.retry_policy.errors_to_retry,
                    &code.sha256,
                    &crate::time::now(),
                    &function.execution_options.retention_days,
                ],
            )
            .await?;
        transaction.commit().await?;
        self.function_from_row(&row)
    }

    pub async fn get(&self, name: &str) -> Result<Option<FunctionDefinition>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {COLUMNS} FROM functions WHERE name = $1"))
            .await?;
        let row = client.query_opt(&statement, &[&name]).await?;
        row.as_ref().map(|r| self.function_from_row(r)).transpose()
    }

    /// Every function, by name. The reference returns them all in one page.
    pub async fn list(&self) -> Result<Vec<FunctionSummary>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT name, description, update_timestamp FROM functions ORDER BY name",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(FunctionSummary {
                    name: row.try_get(0)?,
                    description: row.try_get(1)?,
                    update_timestamp: row.try_get(2)?,
                })
            })
            .collect()
    }

    /// Replaces the stored definition of `function.name` (and its code when given), bumping
    /// its version. Returns the number of functions updated (0 when it does not exist).
    pub async fn update(
        &self,
        function: &FunctionDefinition,
        code: Option<&CodeArchive>,
    ) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let code_sha256 = match code {
            Some(code) => {
                store_code(&transaction, code).await?;
                &code.sha256
            }
            None => &function.code_sha256,
        };
        let updated = transaction
            .execute(
                "UPDATE functions SET description = $2, enabled = $3, entry_point = $4, \
                 runtime = $5, time_limit = $6, memory_limit = $7, environment_variables = $8, \
                 permission_mode = $9, default_priority = $10, retry_enabled = $11, \
                 errors_to_retry = $12, code_sha256 = $13, version = nextval('function_versions'), \
                 update_timestamp = $14, retention_days = $15 \
                 WHERE name = $1",
                &[
                    &function.name.as_str(),
                    &function.description,
                    &function.enabled,
                    &function.entry_point,
                    &function.runtime,
                    &function.time_limit,
                    &function.memory_limit,
                    &self.sealed_environment(
                        function.name.as_str(),
                        &function.environment_variables,
                    ),
                    &function.execution_options.permission_mode.as_str(),
                    &function.execution_options.default_priority,
                    &function.retry_policy.enabled,
                    &function.retry_policy.errors_to_retry,
                    code_sha256,
                    &crate::time::now(),
                    &function.execution_options.retention_days,
                ],
            )
            .await?;
        transaction.commit().await?;
        Ok(updated)
    }

    /// Deletes a function; its tasks and their logs are kept. Returns the number deleted.
    pub async fn delete(&self, name: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute("DELETE FROM functions WHERE name = $1", &[&name])
            .await?)
    }

    /// Enables or disables a function. Returns the number of functions matched (0 when it does
    /// not exist); setting the state it already has is a no-op that still matches.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let matched = client
            .query_opt(
                "WITH changed AS ( \
                   UPDATE functions SET enabled = $2, version = nextval('function_versions'), update_timestamp = $3 \
                   WHERE name = $1 AND enabled <> $2 RETURNING 1) \
                 SELECT 1 FROM functions WHERE name = $1",
                &[&name, &enabled, &crate::time::now()],
            )
            .await?;
        Ok(matched.map_or(0, |_| 1))
    }

    /// The code archive with this content hash.
    pub async fn code(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT archive FROM function_code WHERE sha256 = $1",
                &[&sha256],
            )
            .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    /// Which of these content hashes have a code archive stored.
    pub async fn stored_code(
        &self,
        hashes: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        if hashes.is_empty() {
            return Ok(Default::default());
        }
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT sha256 FROM function_code WHERE sha256 = ANY($1)",
                &[&hashes],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?)
    }
}

async fn store_code(
    transaction: &deadpool_postgres::Transaction<'_>,
    code: &CodeArchive,
) -> Result<(), StoreError> {
    // `DO UPDATE` rather than `DO NOTHING`: it locks the stored archive, so a function
    // change that is deleting it as unused (migration V11) either waits for this
    // transaction and keeps it, or has deleted it already and this stores it again.
    transaction
        .execute(
            "INSERT INTO function_code (sha256, archive, size_bytes) VALUES ($1, $2, $3) \
             ON CONFLICT (sha256) DO UPDATE SET sha256 = EXCLUDED.sha256",
            &[&code.sha256, &code.bytes, &(code.bytes.len() as i32)],
        )
        .await?;
    Ok(())
}

impl Functions {
    fn sealed_environment(
        &self,
        function: &str,
        variables: &BTreeMap<String, EnvironmentVariable>,
    ) -> Value {
        let sealed: BTreeMap<&String, EnvironmentVariable> = variables
            .iter()
            .map(|(name, variable)| {
                let value = self.secrets.seal(function, name, &variable.value);
                (name, EnvironmentVariable { value })
            })
            .collect();
        serde_json::to_value(sealed).unwrap_or_default()
    }

    fn function_from_row(&self, row: &Row) -> Result<FunctionDefinition, StoreError> {
        let mut function = function_from_row(row)?;
        for (name, variable) in function.environment_variables.iter_mut() {
            // The error names the variable and the reason, never the value.
            variable.value = self
                .secrets
                .open(function.name.as_str(), name, &variable.value)
                .map_err(|e| {
                    StoreError::Secret(format!(
                        "the environment variable {name} of function {} cannot be opened: {e}",
                        function.name.as_str()
                    ))
                })?;
        }
        Ok(function)
    }

    /// Reseals every environment variable value not sealed with the current key (after a
    /// key rotation, or values stored before a key was configured). Returns the number of
    /// functions rewritten.
    pub async fn reseal_environment(&self) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let rows = transaction
            .query(
                "SELECT name, environment_variables FROM functions FOR UPDATE",
                &[],
            )
            .await?;
        let mut rewritten = 0;
        for row in rows {
            let name: String = row.try_get("name")?;
            let stored: BTreeMap<String, EnvironmentVariable> =
                serde_json::from_value(row.try_get("environment_variables")?)
                    .map_err(|e| StoreError::Corrupt(format!("function {name}: {e}")))?;
            if !stored
                .values()
                .any(|v| self.secrets.needs_resealing(&v.value))
            {
                continue;
            }
            let mut opened = BTreeMap::new();
            for (variable, value) in stored {
                let plain = self
                    .secrets
                    .open(&name, &variable, &value.value)
                    .map_err(|e| {
                        StoreError::Corrupt(format!(
                            "function {name}: environment variable {variable}: {e}"
                        ))
                    })?;
                opened.insert(variable, EnvironmentVariable { value: plain });
            }
            // The version is not bumped: the function itself did not change.
            transaction
                .execute(
                    "UPDATE functions SET environment_variables = $2 WHERE name = $1",
                    &[&name, &self.sealed_environment(&name, &opened)],
                )
                .await?;
            rewritten += 1;
        }
        transaction.commit().await?;
        Ok(rewritten)
    }
}

fn function_from_row(row: &Row) -> Result<FunctionDefinition, StoreError> {
    let name: String = row.try_get("name")?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("function {name}: {what}"));
    let environment: Value = row.try_get("environment_variables")?;
    let permission_mode: String = row.try_get("permission_mode")?;
    Ok(FunctionDefinition {
        name: FunctionName::parse(&name).map_err(|e| corrupt(&e))?,
        description: row.try_get("description")?,
        enabled: row.try_get("enabled")?,
        entry_point: row.try_get("entry_point")?,
        runtime: row.try_get("runtime")?,
        time_limit: row.try_get("time_limit")?,
        memory_limit: row.try_get("memory_limit")?,
        environment_variables: serde_json::from_value(environment)
            .map_err(|e| corrupt(&e.to_string()))?,
        execution_options: ExecutionOptions {
            permission_mode: PermissionMode::parse(&permission_mode)
                .ok_or_else(|| corrupt("unknown permission mode"))?,
            default_priority: row.try_get("default_priority")?,
            retention_days: row.try_get("retention_days")?,
        },
        retry_policy: RetryPolicy {
            enabled: row.try_get("retry_enabled")?,
            errors_to_retry: row.try_get("errors_to_retry")?,
        },
        code_sha256: row.try_get("code_sha256")?,
        version: row.try_get("version")?,
        creation_timestamp: row.try_get("creation_timestamp")?,
        update_timestamp: row.try_get("update_timestamp")?,
    })
}
