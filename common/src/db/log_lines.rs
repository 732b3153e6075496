//! Output lines of executions, stored the same way for tasks (`task_logs`) and API requests
//! (`api_request_logs`): appended in one statement, listed oldest first.

use chrono::{DateTime, Utc};
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
        client: &deadpool_postgres::Client,
        owner: &str,
        lines: &[LogLine],
    ) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO {} ({}, timestamp, message) \
                 SELECT $1, t, m FROM UNNEST($2::timestamptz[], $3::text[]) AS l(t, m)",
                self.table, self.owner
            ))
            .await?;
        let timestamps: Vec<DateTime<Utc>> = lines.iter().map(|l| l.timestamp).collect();
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        client
            .execute(&statement, &[&owner, &timestamps, &messages])
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
