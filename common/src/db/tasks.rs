//! The `tasks` table.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::Row;

use super::StoreError;
use super::list::{ListRequest, Page, fetch_page};
use crate::domain::{Task, TaskError, TaskSource, TaskStatus};
use crate::id::ObjectId;
use crate::rql::{Field, FieldKind, Schema};

/// The fields of a task that RQL may filter, sort and select on.
pub static TASK_SCHEMA: Schema = Schema {
    fields: &[
        Field::new("id", "id", FieldKind::Text),
        Field::new("functionName", "function_name", FieldKind::Text),
        Field::new("status", "status", FieldKind::Text),
        Field::new(
            "statusChangedTimestamp",
            "status_changed_timestamp",
            FieldKind::Timestamp,
        ),
        Field::new("data", "data", FieldKind::Json),
        Field::new("tags", "tags", FieldKind::TextArray),
        Field::new("startTimestamp", "start_timestamp", FieldKind::Timestamp),
        Field::new("priority", "priority", FieldKind::Integer),
        Field::new(
            "createdByApplicationId",
            "created_by_application_id",
            FieldKind::Text,
        ),
        Field::new("createdByUserId", "created_by_user_id", FieldKind::Text),
        Field::new("retriedByTaskId", "retried_by_task_id", FieldKind::Text),
        Field::new(
            "retryForTaskIds",
            "retry_for_task_ids",
            FieldKind::TextArray,
        ),
        Field::new("error", "error", FieldKind::Json),
        Field::new("result", "result", FieldKind::Json),
        Field::new(
            "creationTimestamp",
            "creation_timestamp",
            FieldKind::Timestamp,
        ),
        Field::new("updateTimestamp", "update_timestamp", FieldKind::Timestamp),
    ],
};

const COLUMNS: &str = "id, function_name, status, status_changed_timestamp, data, tags, \
    start_timestamp, priority, created_by_application_id, created_by_user_id, retried_by_task_id, \
    retry_for_task_ids, error, result, creation_timestamp, update_timestamp";

/// A task about to be stored.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub function_name: String,
    pub data: Value,
    pub tags: Vec<String>,
    /// `None`: the function's default priority, else 0.
    pub priority: Option<i64>,
    pub start_timestamp: DateTime<Utc>,
    pub created_by_application_id: Option<String>,
    pub created_by_user_id: Option<String>,
    pub retry_for_task_ids: Vec<String>,
    pub source: TaskSource,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Canceled,
    NotCancelable(TaskStatus),
    NotFound,
}

#[derive(Clone)]
pub struct Tasks {
    pool: Pool,
}

impl Tasks {
    pub fn new(pool: Pool) -> Self {
        Tasks { pool }
    }

    /// Stores a new task of an existing function; `None` when there is no such function.
    /// Checking the function and inserting is one statement, so the task of a function
    /// deleted meanwhile is never stored.
    pub async fn insert(&self, task: NewTask) -> Result<Option<Task>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO tasks (id, function_name, status, status_changed_timestamp, data, tags, \
                 start_timestamp, priority, created_by_application_id, created_by_user_id, \
                 retry_for_task_ids, source, dispatched_at, creation_timestamp, update_timestamp) \
                 SELECT $1, f.name, 'new', $3, $4, $5, $6, COALESCE($7, f.default_priority, 0), \
                   $8, $9, $10, $11, $12, $3, $3 \
                 FROM functions f WHERE f.name = $2 \
                 RETURNING {COLUMNS}"
            ))
            .await?;
        let now = crate::time::now();
        let id = ObjectId::generate().to_string();
        // A direct execution is published by its requester at once, not by the dispatcher; it
        // counts as dispatched, so the dispatcher only republishes it if that message is lost.
        let dispatched_at = (task.source == TaskSource::Direct).then_some(now);
        let row = client
            .query_opt(
                &statement,
                &[
                    &id,
                    &task.function_name,
                    &now,
                    &task.data,
                    &task.tags,
                    &crate::time::truncate_to_millis(task.start_timestamp),
                    &task.priority,
                    &task.created_by_application_id,
                    &task.created_by_user_id,
                    &task.retry_for_task_ids,
                    &task.source.as_str(),
                    &dispatched_at,
                ],
            )
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// Cancels a task if it is still `new`; returns whether it was.
    pub async fn cancel_if_new(&self, id: &ObjectId) -> Result<bool, StoreError> {
        Ok(self.cancel(id).await? == CancelOutcome::Canceled)
    }

    pub async fn find(&self, id: &ObjectId) -> Result<Option<Task>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"))
            .await?;
        let row = client.query_opt(&statement, &[&id.to_string()]).await?;
        row.as_ref().map(task_from_row).transpose()
    }

    pub async fn list(&self, request: &ListRequest) -> Result<Page<Task>, StoreError> {
        let client = self.pool.get().await?;
        fetch_page(
            &client,
            "tasks",
            COLUMNS,
            None,
            "creation_timestamp ASC, id ASC",
            request,
            task_from_row,
        )
        .await
    }

    /// Cancels a task that has not started; only `new` tasks can be canceled.
    pub async fn cancel(&self, id: &ObjectId) -> Result<CancelOutcome, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "WITH target AS (SELECT id, status FROM tasks WHERE id = $1), \
                 canceled AS ( \
                   UPDATE tasks SET status = 'canceled', status_changed_timestamp = $2, \
                     update_timestamp = $2 \
                   WHERE id = $1 AND status = 'new' RETURNING id) \
                 SELECT target.status, EXISTS (SELECT 1 FROM canceled) FROM target",
            )
            .await?;
        let now = crate::time::now();
        let Some(row) = client
            .query_opt(&statement, &[&id.to_string(), &now])
            .await?
        else {
            return Ok(CancelOutcome::NotFound);
        };
        if row.try_get::<_, bool>(1)? {
            return Ok(CancelOutcome::Canceled);
        }
        let status: String = row.try_get(0)?;
        Ok(CancelOutcome::NotCancelable(parse_status(&status)?))
    }
}

fn parse_status(text: &str) -> Result<TaskStatus, StoreError> {
    TaskStatus::parse(text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown task status `{text}`")))
}

pub(crate) fn task_from_row(row: &Row) -> Result<Task, StoreError> {
    let id: String = row.try_get("id")?;
    let error: Option<Value> = row.try_get("error")?;
    let error = error
        .map(serde_json::from_value::<TaskError>)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("task {id} error: {e}")))?;
    Ok(Task {
        id: id
            .parse()
            .map_err(|e: crate::id::InvalidObjectId| StoreError::Corrupt(e.to_string()))?,
        function_name: row.try_get("function_name")?,
        status: parse_status(row.try_get("status")?)?,
        status_changed_timestamp: row.try_get("status_changed_timestamp")?,
        data: row.try_get("data")?,
        tags: row.try_get("tags")?,
        start_timestamp: row.try_get("start_timestamp")?,
        priority: row.try_get("priority")?,
        created_by_application_id: row.try_get("created_by_application_id")?,
        created_by_user_id: row.try_get("created_by_user_id")?,
        retried_by_task_id: row.try_get("retried_by_task_id")?,
        retry_for_task_ids: row.try_get("retry_for_task_ids")?,
        error,
        result: row.try_get("result")?,
        creation_timestamp: row.try_get("creation_timestamp")?,
        update_timestamp: row.try_get("update_timestamp")?,
    })
}
