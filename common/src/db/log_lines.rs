//! Output lines of executions, stored the same way for tasks (`task_logs`) and API requests
//! (`api_request_logs`): appended in one statement, listed oldest first.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::StoreError;
use super::list::{ListRequest, Page, fetch_page};
use crate::domain::LogLine;

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
        let lines = LogColumns::of(entries);
        if lines.messages.is_empty() {
            return Ok(());
        }
        let statement = client.prepare_cached(&self.insert_sql(1)).await?;
        client.execute(&statement, &lines.params()).await?;
        Ok(())
    }

    /// The `INSERT` of the lines of [`LogColumns::params`], given as parameters `$first` to
    /// `$first + 2`; it can also run as a `WITH` clause of another statement.
    pub fn insert_sql(&self, first: usize) -> String {
        format!(
            "INSERT INTO {} ({}, timestamp, message) \
             SELECT o, t, m FROM UNNEST(${first}::text[], ${}::timestamptz[], ${}::text[]) AS l(o, t, m)",
            self.table,
            self.owner,
            first + 1,
            first + 2
        )
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

/// Log lines of several owners as the three arrays [`LogTable::insert_sql`] takes.
pub(crate) struct LogColumns<'a> {
    owners: Vec<&'a str>,
    timestamps: Vec<DateTime<Utc>>,
    messages: Vec<&'a str>,
}

impl<'a> LogColumns<'a> {
    pub fn of(entries: &[(&'a str, &'a [LogLine])]) -> Self {
        let count = entries.iter().map(|(_, lines)| lines.len()).sum();
        let mut columns = LogColumns {
            owners: Vec::with_capacity(count),
            timestamps: Vec::with_capacity(count),
            messages: Vec::with_capacity(count),
        };
        for (owner, lines) in entries {
            for line in *lines {
                columns.owners.push(owner);
                columns.timestamps.push(line.timestamp);
                columns.messages.push(line.message.as_str());
            }
        }
        columns
    }

    pub fn params(&self) -> [&(dyn ToSql + Sync); 3] {
        [&self.owners, &self.timestamps, &self.messages]
    }
}
