//! Status changes of tasks once created, shared by workers (claim, complete, fail) and the
//! scheduler (cancels, zombies, tasks of deleted functions): every transition is here. Every write after the claim is fenced by
//! the attempt number, so a slow worker can never overwrite a newer attempt. A task fails for
//! good in one place, [`fail_for_good`], which also writes its `task_failed` event.
//!
//! The statements that change a task reach it by id and test its status as
//! `(status = '…') IS TRUE`, which no partial index on status can use: the planner then has
//! only the primary key to choose (the searches for expired leases and for tasks of deleted
//! functions are the ones meant to go through a status index). Statistics of a queue table are always stale (analyzed
//! while nothing was `new`, a backlog of thousands minutes later), and a plain
//! `status = 'new'` let a cached plan read the whole backlog through the due-tasks index to
//! find the few rows it was given.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use serde_json::{Value, json};

use super::StoreError;
use super::log_lines::LogColumns;
use super::task_logs::TASK_LOGS;
use super::tasks::{DirectTaskRow, parse_status, task_from_row};
use super::text::storable_text;
use crate::domain::{LogLine, RetryPolicy, Task, TaskError, TaskErrorType, TaskSource, TaskStatus};
use crate::id::ObjectId;
use crate::messages::DirectTask;
use tokio_postgres::types::Type;

/// Waits before retry 1, 2 and 3; after the third retry a task fails for good.
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// A task this worker now owns.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub task: Task,
    pub attempt: i32,
    /// The version of the task's function when it was claimed; `None` if it was deleted.
    pub function_version: Option<i64>,
}

/// The result of an attempt that ran to the end, with its output lines.
#[derive(Debug, Clone)]
pub struct Completion {
    pub task_id: String,
    pub attempt: i32,
    pub result: Value,
    pub logs: Vec<LogLine>,
    /// When the attempt ended: the task's new status and update timestamps.
    pub finished_at: DateTime<Utc>,
}

/// Which attempt a write is for.
#[derive(Debug, Clone, Copy)]
pub struct Fence {
    pub attempt: i32,
    /// Only for the sweeper: the write applies only if the lease has really expired.
    pub lease_expired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// The task is `failed` and its `task_failed` event is in the outbox.
    Failed,
    /// The task is `retried`; the retry task has this id.
    Retried(String),
    /// The attempt no longer owns the task; nothing was written.
    Stale,
}

/// What became of a request to cancel a task.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Canceled,
    NotCancelable(TaskStatus),
    NotFound,
}

#[derive(Clone)]
pub struct Lifecycle {
    pool: Pool,
}

impl Lifecycle {
    pub fn new(pool: Pool) -> Self {
        Lifecycle { pool }
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

    /// Stores the task of a direct execution whose caller stopped waiting as `canceled`,
    /// unless a worker stored (so started) it already; then no worker can start it later.
    /// Says whether it was canceled.
    pub async fn cancel_direct(&self, task: &DirectTask) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO tasks (id, function_name, status, status_changed_timestamp, data, \
                   start_timestamp, priority, created_by_application_id, created_by_user_id, \
                   source, creation_timestamp, update_timestamp) \
                 VALUES ($1, $2, 'canceled', $6, $3, $7, 0, $4, $5, 'direct', $7, $6) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        let inserted = client
            .execute(&statement, &DirectTaskRow::of(task).params())
            .await?;
        Ok(inserted == 1)
    }

    /// `new → inProgress` for those of `task_ids` still `new` and due, each with a fresh
    /// lease, in one statement. Returns the tasks claimed (in no particular order); an id
    /// listed twice is claimed once.
    pub async fn claim(
        &self,
        task_ids: &[&str],
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "UPDATE tasks SET status = 'inProgress', attempt = attempt + 1, \
                   lease_expires_at = now() + $2 * interval '1 second', dispatched_at = NULL, \
                   claimed_at = clock_timestamp(), status_changed_timestamp = $3, update_timestamp = $3 \
                 FROM UNNEST($1::text[]) AS c(id) \
                 WHERE tasks.id = c.id AND (tasks.status = 'new') IS TRUE AND tasks.start_timestamp <= now() \
                 RETURNING tasks.*, \
                   (SELECT f.version FROM functions f WHERE f.name = tasks.function_name) AS function_version",
            )
            .await?;
        let now = crate::time::now();
        let rows = client
            .query(&statement, &[&task_ids, &lease.as_secs_f64(), &now])
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Claimed {
                    task: task_from_row(row)?,
                    attempt: row.try_get("attempt")?,
                    function_version: row.try_get("function_version")?,
                })
            })
            .collect()
    }

    /// Stores a direct execution's task already claimed (`inProgress`, attempt 1, a fresh
    /// lease) if its function exists and no task has its id yet. `None` when it was not
    /// stored: a second delivery of its message, a task the API canceled once its caller
    /// stopped waiting, or a function deleted since the request.
    pub async fn claim_direct(
        &self,
        task: &DirectTask,
        lease: Duration,
    ) -> Result<Option<Claimed>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO tasks (id, function_name, status, status_changed_timestamp, data, \
                   start_timestamp, priority, created_by_application_id, created_by_user_id, \
                   source, attempt, lease_expires_at, claimed_at, creation_timestamp, update_timestamp) \
                 SELECT $1, f.name, 'inProgress', $6, $3, $7, 0, $4, $5, 'direct', 1, \
                   now() + $8 * interval '1 second', clock_timestamp(), $7, $6 \
                 FROM functions f WHERE f.name = $2 \
                 ON CONFLICT (id) DO NOTHING \
                 RETURNING tasks.*, \
                   (SELECT f.version FROM functions f WHERE f.name = tasks.function_name) AS function_version",
            )
            .await?;
        let stored = DirectTaskRow::of(task);
        let lease = lease.as_secs_f64();
        let mut params = stored.params();
        params.push(&lease);
        let row = client.query_opt(&statement, &params).await?;
        row.map(|row| {
            Ok(Claimed {
                task: task_from_row(&row)?,
                attempt: row.try_get("attempt")?,
                function_version: row.try_get("function_version")?,
            })
        })
        .transpose()
    }

    /// Extends the leases of running attempts; returns how many are still owned.
    pub async fn renew_leases(
        &self,
        running: &[(String, i32)],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        if running.is_empty() {
            return Ok(0);
        }
        let client = self.pool.get().await?;
        let ids: Vec<&str> = running.iter().map(|(id, _)| id.as_str()).collect();
        let attempts: Vec<i32> = running.iter().map(|(_, attempt)| *attempt).collect();
        Ok(client
            .execute(
                "UPDATE tasks SET lease_expires_at = now() + $3 * interval '1 second' \
                 FROM UNNEST($1::text[], $2::int[]) AS r(id, attempt) \
                 WHERE tasks.id = r.id AND tasks.attempt = r.attempt AND (tasks.status = 'inProgress') IS TRUE",
                &[&ids, &attempts, &lease.as_secs_f64()],
            )
            .await?)
    }

    /// `inProgress → complete` for each attempt with its function's result, and their log
    /// lines, in one statement (so one round trip and one commit). Says for each whether it
    /// was stored: false when the attempt is stale (its log lines are kept all the same).
    pub async fn complete(&self, completions: &[Completion]) -> Result<Vec<bool>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH logs AS ({}) \
                 UPDATE tasks SET status = 'complete', result = c.result, lease_expires_at = NULL, \
                   status_changed_timestamp = c.finished_at, update_timestamp = c.finished_at \
                 FROM UNNEST($1::text[], $2::int[], $3::jsonb[], $4::timestamptz[]) \
                   AS c(id, attempt, result, finished_at) \
                 WHERE tasks.id = c.id AND tasks.attempt = c.attempt AND (tasks.status = 'inProgress') IS TRUE \
                 RETURNING tasks.id",
                TASK_LOGS.insert_sql(5)
            ))
            .await?;
        let entries: Vec<(&str, &[LogLine])> = completions
            .iter()
            .map(|c| (c.task_id.as_str(), c.logs.as_slice()))
            .collect();
        let logs = LogColumns::of(&entries);
        let ids: Vec<&str> = completions.iter().map(|c| c.task_id.as_str()).collect();
        let attempts: Vec<i32> = completions.iter().map(|c| c.attempt).collect();
        let results: Vec<&Value> = completions.iter().map(|c| &c.result).collect();
        let finished: Vec<DateTime<Utc>> = completions.iter().map(|c| c.finished_at).collect();
        let [owners, timestamps, messages] = logs.params();
        let rows = client
            .query(
                &statement,
                &[
                    &ids, &attempts, &results, &finished, owners, timestamps, messages,
                ],
            )
            .await?;
        let stored = rows
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<HashSet<_>, _>>()?;
        Ok(ids.iter().map(|id| stored.contains(*id)).collect())
    }

    /// `inProgress → retried` (and a retry task) when the function's retry policy covers the
    /// error and fewer than three retries were made, else `inProgress → failed` with a
    /// `task_failed` event in the outbox. One transaction, which also stores the attempt's
    /// log lines (kept even when the attempt is stale, as for a completion).
    pub async fn fail(
        &self,
        task_id: &str,
        fence: Fence,
        error: &TaskError,
        logs: &[LogLine],
    ) -> Result<FailOutcome, StoreError> {
        let error = &storable_error(error);
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        TASK_LOGS.append(&transaction, task_id, logs).await?;
        let row = transaction
            .query_opt(
                "SELECT t.*, f.retry_enabled, f.errors_to_retry FROM tasks t \
                 LEFT JOIN functions f ON f.name = t.function_name \
                 WHERE t.id = $1 AND t.attempt = $2 AND (t.status = 'inProgress') IS TRUE \
                   AND (NOT $3 OR t.lease_expires_at < now()) \
                 FOR UPDATE OF t",
                &[&task_id, &fence.attempt, &fence.lease_expired],
            )
            .await?;
        let Some(row) = row else {
            transaction.commit().await?;
            return Ok(FailOutcome::Stale);
        };
        let task = task_from_row(&row)?;
        // A direct execution answers its caller once: it is never retried.
        let direct = row.try_get::<_, String>("source")? == TaskSource::Direct.as_str();
        let policy = RetryPolicy {
            enabled: !direct
                && row
                    .try_get::<_, Option<bool>>("retry_enabled")?
                    .unwrap_or(false),
            errors_to_retry: row
                .try_get::<_, Option<Vec<String>>>("errors_to_retry")?
                .unwrap_or_default(),
        };
        let now = crate::time::now();
        let retries_done = task.retry_for_task_ids.len();
        let outcome = match RETRY_DELAYS.get(retries_done) {
            Some(delay) if policy.applies_to(&error.name) => {
                let retry_id = ObjectId::generate().to_string();
                let mut chain = task.retry_for_task_ids.clone();
                chain.push(task_id.to_owned());
                let start = now + chrono::Duration::from_std(*delay).unwrap_or_default();
                let error_json = serde_json::to_value(error).unwrap_or(Value::Null);
                transaction
                    .execute(
                        "INSERT INTO tasks (id, function_name, status, status_changed_timestamp, data, \
                           tags, start_timestamp, priority, created_by_application_id, \
                           created_by_user_id, retry_for_task_ids, source, creation_timestamp, \
                           update_timestamp) \
                         VALUES ($1, $2, 'new', $3, $4, $5, $6, $7, $8, $9, $10, 'retry', $3, $3)",
                        &[
                            &retry_id,
                            &task.function_name,
                            &now,
                            &task.data,
                            &task.tags,
                            &start,
                            &task.priority,
                            &task.created_by_application_id,
                            &task.created_by_user_id,
                            &chain,
                        ],
                    )
                    .await?;
                transaction
                    .execute(
                        "UPDATE tasks SET status = 'retried', retried_by_task_id = $2, error = $3, \
                           lease_expires_at = NULL, status_changed_timestamp = $4, update_timestamp = $4 \
                         WHERE id = $1",
                        &[&task_id, &retry_id, &error_json, &now],
                    )
                    .await?;
                FailOutcome::Retried(retry_id)
            }
            _ => {
                let failed = [(task_id.to_owned(), task.function_name)];
                fail_for_good(&transaction, &failed, error, now).await?;
                FailOutcome::Failed
            }
        };
        transaction.commit().await?;
        Ok(outcome)
    }

    /// `inProgress → new` for an attempt this worker gives up on (a drain that ran out of
    /// time): the task runs again elsewhere, and the attempt number it keeps fences any late
    /// write of the abandoned attempt. Returns whether the task was handed back.
    pub async fn hand_back(&self, task_id: &str, attempt: i32) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let now = crate::time::now();
        // The dispatcher is told (hand-backs are rare, so the NOTIFY costs nothing), so the
        // task runs again at once rather than at the dispatcher's next timer.
        Ok(client
            .query_one(
                "WITH back AS ( \
                   UPDATE tasks SET status = 'new', lease_expires_at = NULL, dispatched_at = NULL, \
                     claimed_at = NULL, status_changed_timestamp = $3, update_timestamp = $3 \
                   WHERE id = $1 AND attempt = $2 AND (status = 'inProgress') IS TRUE RETURNING id) \
                 SELECT count(*), max(pg_notify('tasks_changed', '')::text) FROM back",
                &[&task_id, &attempt, &now],
            )
            .await?
            .try_get::<_, i64>(0)?
            == 1)
    }

    /// `new → failed` for the due tasks whose function was deleted, which no worker could
    /// run, each with a `task_failed` event. Returns how many. The search reads the due tasks
    /// in the dispatcher's order: this `Lifecycle` should be on a [`super::queue_pool`].
    pub async fn fail_orphans(&self) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let search = transaction
            .prepare_cached(
                "SELECT t.id, t.function_name FROM tasks t \
                 WHERE t.status = 'new' AND t.start_timestamp <= now() \
                   AND NOT EXISTS (SELECT 1 FROM functions f WHERE f.name = t.function_name) \
                 FOR UPDATE OF t",
            )
            .await?;
        let orphans = transaction
            .query(&search, &[])
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<(String, String)>, StoreError>>()?;
        if !orphans.is_empty() {
            let error = TaskError {
                kind: TaskErrorType::Invocation,
                name: "FunctionNotFound".to_owned(),
                message: "The function of this task was deleted before the task could run"
                    .to_owned(),
            };
            fail_for_good(&transaction, &orphans, &error, crate::time::now()).await?;
        }
        transaction.commit().await?;
        Ok(orphans.len() as u64)
    }

    /// Running attempts whose lease has expired: (task id, attempt, function name). None
    /// during the first `grace` after the database server started: while it was down no
    /// worker could renew a lease, so an expired one says nothing about its worker yet.
    pub async fn expired_leases(
        &self,
        limit: i64,
        grace: Duration,
    ) -> Result<Vec<(String, i32, String)>, StoreError> {
        let client = self.pool.get().await?;
        // Typed parameters: one round trip and one transaction. The sweeper runs this every
        // few seconds for ever, and a query that is prepared first costs two of each.
        let rows = client
            .query_typed(
                "SELECT id, attempt, function_name FROM tasks \
                 WHERE status = 'inProgress' AND lease_expires_at < now() \
                   AND pg_postmaster_start_time() < now() - $2 * interval '1 second' \
                 ORDER BY lease_expires_at LIMIT $1",
                &[(&limit, Type::INT8), (&grace.as_secs_f64(), Type::FLOAT8)],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }
}

/// `error` as the database can store it: the name and message of an error a function
/// reported are its own text, and may hold NUL.
fn storable_error(error: &TaskError) -> TaskError {
    TaskError {
        kind: error.kind,
        name: storable_text(&error.name).into_owned(),
        message: storable_text(&error.message).into_owned(),
    }
}

/// `→ failed` for `tasks` (id, function name) the caller holds locked, with `error`, and
/// their `task_failed` events in the outbox, in the caller's transaction: the one way a task
/// fails for good, whether its last attempt failed or it could not be run at all.
async fn fail_for_good(
    transaction: &Transaction<'_>,
    tasks: &[(String, String)],
    error: &TaskError,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let ids: Vec<&str> = tasks.iter().map(|(id, _)| id.as_str()).collect();
    let error_json = serde_json::to_value(error).unwrap_or(Value::Null);
    transaction
        .execute(
            "UPDATE tasks SET status = 'failed', error = $2, lease_expires_at = NULL, \
               dispatched_at = NULL, status_changed_timestamp = $3, update_timestamp = $3 \
             WHERE id = ANY($1)",
            &[&ids, &error_json, &now],
        )
        .await?;
    let events: Vec<Value> = tasks
        .iter()
        .map(|(id, function_name)| task_failed_event(id, function_name, error))
        .collect();
    transaction
        .execute(
            "INSERT INTO outbox (routing_key, payload) SELECT 'task_failed', UNNEST($1::jsonb[])",
            &[&events],
        )
        .await?;
    Ok(())
}

/// The `task_failed` platform event, as in the reference.
fn task_failed_event(task_id: &str, function_name: &str, error: &TaskError) -> Value {
    json!({
        "id": ObjectId::generate().to_string(),
        "type": "task_failed",
        "content": {
            "id": task_id,
            "functionName": function_name,
            "error": error,
        },
        "creation_timestamp": chrono::Utc::now().timestamp_millis(),
    })
}
