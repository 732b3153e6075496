//! The `task_logs` table: the output lines of task executions.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use tokio_postgres::types::ToSql;
use utoipa::ToSchema;

use super::StoreError;
use super::list::{ListRequest, Page, fetch_page};
use crate::id::ObjectId;
use crate::rql::{Field, FieldKind, Schema};

/// Log lines can only be filtered by time, as in the reference.
pub static LOG_SCHEMA: Schema = Schema {
    fields: &[Field {
        name: "timestamp",
        column: "timestamp",
        kind: FieldKind::Timestamp,
    }],
};

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LogLine {
    pub message: String,
    #[serde(with = "crate::time::millis")]
    pub timestamp: DateTime<Utc>,
}

#[derive(Clone)]
pub struct TaskLogs {
    pool: Pool,
}

impl TaskLogs {
    pub fn new(pool: Pool) -> Self {
        TaskLogs { pool }
    }

    /// Appends lines to a task's log in one statement.
    pub async fn append(&self, task_id: &ObjectId, lines: &[LogLine]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO task_logs (task_id, timestamp, message) \
                 SELECT $1, t, m FROM UNNEST($2::timestamptz[], $3::text[]) AS l(t, m)",
            )
            .await?;
        let timestamps: Vec<DateTime<Utc>> = lines.iter().map(|l| l.timestamp).collect();
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        client
            .execute(&statement, &[&task_id.to_string(), &timestamps, &messages])
            .await?;
        Ok(())
    }

    pub async fn list(
        &self,
        task_id: &ObjectId,
        request: &ListRequest,
    ) -> Result<Page<LogLine>, StoreError> {
        let client = self.pool.get().await?;
        let task_id = task_id.to_string();
        let scope: &[&(dyn ToSql + Sync)] = &[&task_id];
        fetch_page(
            &client,
            "task_logs",
            "message, timestamp",
            Some((|first| format!("task_id = ${first}"), scope)),
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

    /// Whether the task has any log line at all.
    pub async fn any(&self, task_id: &ObjectId) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM task_logs WHERE task_id = $1)",
                &[&task_id.to_string()],
            )
            .await?;
        Ok(row.try_get(0)?)
    }
}
