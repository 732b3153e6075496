//! The `task_logs` table: the output lines of task executions.

use deadpool_postgres::Pool;
use rql::{Field, FieldKind, Schema};

use super::StoreError;
use super::list::{ListRequest, Page};
use super::log_lines::LogTable;
use crate::domain::LogLine;
use crate::id::ObjectId;

/// Log lines can only be filtered by time, as in the reference.
pub static LOG_SCHEMA: Schema = Schema {
    fields: &[Field::new("timestamp", "timestamp", FieldKind::Timestamp)],
};

pub(crate) const TASK_LOGS: LogTable = LogTable {
    table: "task_logs",
    owner: "task_id",
};

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
        let client = self.pool.get().await?;
        TASK_LOGS.append(&client, &task_id.to_string(), lines).await
    }

    pub async fn list(
        &self,
        task_id: &ObjectId,
        request: &ListRequest,
    ) -> Result<Page<LogLine>, StoreError> {
        let client = self.pool.get().await?;
        TASK_LOGS.page(&client, &task_id.to_string(), request).await
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
