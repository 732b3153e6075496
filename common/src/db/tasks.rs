//! The `tasks` table.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rql::{Field, FieldKind, Schema};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::StoreError;
use super::list::{ListRequest, Page, fetch_page};
use crate::domain::{Task, TaskError, TaskSource, TaskStatus};
use crate::id::ObjectId;
use crate::messages::DirectTask;

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

/// A task just stored.
#[derive(Debug)]
pub struct Created {
    pub task: Task,
    /// Stored as dispatched: its creator is to publish it.
    pub dispatched: bool,
}

/// A create waiting to be stored (with whether its creator publishes it), and where its
/// answer goes.
type PendingInsert = (
    (NewTask, bool),
    oneshot::Sender<Result<Option<Created>, StoreError>>,
);

/// Most creates stored by one statement.
const INSERT_BATCH: usize = 64;
/// Batches written at once: while one waits for its commit, the next one is executed.
const INSERT_WRITERS: usize = 2;

#[derive(Clone)]
pub struct Tasks {
    pool: Pool,
    inserts: mpsc::Sender<PendingInsert>,
}

impl Tasks {
    /// Starts the writers that store new tasks (see `insert`), on the current Tokio runtime;
    /// they stop when the last clone of this `Tasks` is dropped.
    pub fn new(pool: Pool) -> Self {
        let (inserts, receiver) = mpsc::channel(INSERT_BATCH * INSERT_WRITERS);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..INSERT_WRITERS {
            tokio::spawn(write_inserts(pool.clone(), receiver.clone()));
        }
        Tasks { pool, inserts }
    }

    /// Stores a new task of an existing function; `None` when there is no such function.
    /// Checking the function and inserting is one statement, so the task of a function
    /// deleted meanwhile is never stored. Creates that arrive while others are being written
    /// are stored together, in one statement and one commit: a commit waits for its flush to
    /// disk, and one per task was most of the cost of creating tasks under load.
    ///
    /// With `published_by_creator`, the caller publishes the task right after it is stored,
    /// not the dispatcher: it is stored as dispatched (if its function is enabled), so the
    /// dispatcher only publishes it again if that message is lost.
    pub async fn insert(
        &self,
        task: NewTask,
        published_by_creator: bool,
    ) -> Result<Option<Created>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inserts
            .send(((task, published_by_creator), reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
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
}

/// The parameters `$1` to `$7` of the statements that store a direct execution's task: id,
/// function name, data, application, user, now, and the time of the request.
pub(super) struct DirectTaskRow<'a> {
    id: String,
    task: &'a DirectTask,
    now: DateTime<Utc>,
    requested_at: DateTime<Utc>,
}

impl<'a> DirectTaskRow<'a> {
    pub(super) fn of(task: &'a DirectTask) -> Self {
        DirectTaskRow {
            id: task.task_id.to_string(),
            task,
            now: crate::time::now(),
            requested_at: crate::time::truncate_to_millis(task.requested_at),
        }
    }

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.task.function_name,
            &self.task.data,
            &self.task.created_by_application_id,
            &self.task.created_by_user_id,
            &self.now,
            &self.requested_at,
        ]
    }
}

/// Takes the creates waiting (at most a batch), stores them, answers each; until every
/// sender is gone.
async fn write_inserts(pool: Pool, waiting: Arc<Mutex<mpsc::Receiver<PendingInsert>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < INSERT_BATCH {
                match waiting.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let (tasks, replies): (Vec<(NewTask, bool)>, Vec<_>) = batch.into_iter().unzip();
        match insert_all(&pool, &tasks).await {
            Ok(stored) => {
                for (reply, task) in replies.into_iter().zip(stored) {
                    let _ = reply.send(Ok(task));
                }
            }
            // One task the database refuses (a value it cannot store) must not fail the
            // others: each is tried alone, and gets its own answer.
            Err(error) if tasks.len() > 1 => {
                tracing::debug!(tasks = tasks.len(), %error, "a batch of new tasks failed; storing them one by one");
                for (task, reply) in tasks.iter().zip(replies) {
                    let stored = insert_all(&pool, std::slice::from_ref(task)).await;
                    let _ = reply.send(stored.map(|mut stored| stored.pop().flatten()));
                }
            }
            Err(error) => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }
}

/// Stores `tasks` (each with whether its creator publishes it) in one statement; for each,
/// the stored task or `None` when its function does not exist.
async fn insert_all(
    pool: &Pool,
    tasks: &[(NewTask, bool)],
) -> Result<Vec<Option<Created>>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "INSERT INTO tasks (id, function_name, status, status_changed_timestamp, data, tags, \
               start_timestamp, priority, created_by_application_id, created_by_user_id, \
               retry_for_task_ids, source, dispatched_at, creation_timestamp, update_timestamp) \
             SELECT n.id, f.name, 'new', $1::timestamptz, n.data, \
               ARRAY(SELECT jsonb_array_elements_text(n.tags)), n.start_timestamp, \
               COALESCE(n.priority, f.default_priority, 0), n.application_id, n.user_id, \
               ARRAY(SELECT jsonb_array_elements_text(n.retry_for)), n.source, \
               CASE WHEN n.published_by_creator AND f.enabled THEN $1::timestamptz END, $1, $1 \
             FROM UNNEST($2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::timestamptz[], \
               $7::int8[], $8::text[], $9::text[], $10::jsonb[], $11::text[], $12::bool[]) \
               AS n(id, function_name, data, tags, start_timestamp, priority, application_id, \
                 user_id, retry_for, source, published_by_creator) \
             JOIN functions f ON f.name = n.function_name \
             RETURNING {COLUMNS}, dispatched_at IS NOT NULL AS dispatched"
        ))
        .await?;
    let now = crate::time::now();
    let ids: Vec<String> = tasks
        .iter()
        .map(|_| ObjectId::generate().to_string())
        .collect();
    let published_by_creator: Vec<bool> = tasks.iter().map(|(_, by_creator)| *by_creator).collect();
    let tasks: Vec<&NewTask> = tasks.iter().map(|(task, _)| task).collect();
    // Arrays of arrays must be rectangular in Postgres: each task's lists travel as JSON.
    let tags: Vec<Value> = tasks
        .iter()
        .map(|task| Value::from(task.tags.clone()))
        .collect();
    let retry_for: Vec<Value> = tasks
        .iter()
        .map(|task| Value::from(task.retry_for_task_ids.clone()))
        .collect();
    let rows = client
        .query(
            &statement,
            &[
                &now,
                &ids,
                &tasks.iter().map(|t| &t.function_name).collect::<Vec<_>>(),
                &tasks.iter().map(|t| &t.data).collect::<Vec<_>>(),
                &tags,
                &tasks
                    .iter()
                    .map(|t| crate::time::truncate_to_millis(t.start_timestamp))
                    .collect::<Vec<_>>(),
                &tasks.iter().map(|t| t.priority).collect::<Vec<_>>(),
                &tasks
                    .iter()
                    .map(|t| &t.created_by_application_id)
                    .collect::<Vec<_>>(),
                &tasks
                    .iter()
                    .map(|t| &t.created_by_user_id)
                    .collect::<Vec<_>>(),
                &retry_for,
                &tasks.iter().map(|t| t.source.as_str()).collect::<Vec<_>>(),
                &published_by_creator,
            ],
        )
        .await?;
    let mut stored = rows
        .iter()
        .map(|row| {
            let task = task_from_row(row)?;
            let dispatched = row.try_get("dispatched")?;
            Ok((task.id.to_string(), Created { task, dispatched }))
        })
        .collect::<Result<HashMap<_, _>, StoreError>>()?;
    Ok(ids.iter().map(|id| stored.remove(id)).collect())
}

pub(super) fn parse_status(text: &str) -> Result<TaskStatus, StoreError> {
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
