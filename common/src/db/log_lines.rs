//! Output lines of executions, stored the same way for tasks (`task_logs`) and API requests
//! (`api_request_logs`): appended in one statement, listed oldest first.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::StoreError;
use super::list::{ListRequest, Page, fetch_page};
use super::task_logs::LogLine;

/// A log table and the column naming what the lines belong to. Both are constants of this
/// crate, never user input.
pub(crate) struct LogTable {
    pub table: &'static str,
    pub owner: &'static str,
}

impl LogTable {
    pub async fn append(
        &self,
        client: &impl GenericClient,
        owner: &str,
        lines: &[LogLine],
    ) -> Result<(), StoreError> {
        self.append_all(client, &[(owner, lines)]).await
    }

    /// Appends the lines of several owners in one statement.
    pub async fn append_all(
        &self,
        client: &impl GenericClient,
        entries: &[(&str, &[LogLine])],
    ) -> Result<(), StoreError> {
        let count = entries.iter().map(|(_, lines)| lines.len()).sum();
        if count == 0 {
            return Ok(());
        }
        let mut owners = Vec::with_capacity(count);
        let mut timestamps: Vec<DateTime<Utc>> = Vec::with_capacity(count);
        let mut messages = Vec::with_capacity(count);
        for (owner, lines) in entries {
            for line in *lines {
                owners.push(*owner);
                timestamps.push(line.timestamp);
                messages.push(line.message.as_str());
            }
        }
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO {} ({}, timestamp, message) \
                 SELECT o, t, m FROM UNNEST($1::text[], $2::timestamptz[], $3::text[]) AS l(o, t, m)",
                self.table, self.owner
            ))
            .await?;
        client
            .execute(&statement, &[&owners, &timestamps, &messages])
            .await?;
        Ok(())
    }

    pub async fn page(
        &self,
        client: &deadpool_postgres::Client,
        owner: &str,
        request: &ListRequest,
    ) -> Result<Page<LogLine>, StoreError> {
        let owner = owner.to_owned();
        let scope_params: &[&(dyn ToSql + Sync)] = &[&owner];
        let condition = |first: usize| format!("{} = ${first}", self.owner);
        fetch_page(
            client,
            self.table,
            "message, timestamp",
            Some((&condition, scope_params)),
            "timestamp ASC, id ASC",
            request,
            |row| {
                Ok(LogLine {
                    message: row.try_get(0)?,
                    timestamp: row.try_get(1)?,
                })
            },
        )
        .await
    }
}
