//! The dispatcher's queries: which due tasks go to the broker next, and when to look again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use common::db::{SKIP_FLUSH, StoreError};

/// A due task selected for publishing.
#[derive(Debug, Clone)]
pub struct DueTask {
    pub id: String,
    pub function_name: String,
    pub priority: i64,
    pub start_timestamp: DateTime<Utc>,
}

#[derive(Clone)]
pub struct DispatchQueries {
    /// A [`common::db::queue_pool`].
    pool: Pool,
}

impl DispatchQueries {
    pub fn new(pool: Pool) -> Self {
        DispatchQueries { pool }
    }

    /// Marks up to `limit` due tasks of enabled functions as dispatched, highest priority
    /// first, then earliest start, and returns them in that order, for the caller to publish
    /// (or to [`Self::undispatch`] if it cannot). Tasks dispatched more than
    /// `redispatch_after` ago and still not claimed are taken again: their message was lost,
    /// or their dispatcher stopped before publishing them. `SKIP LOCKED` lets several
    /// schedulers dispatch at once without taking the same task.
    ///
    /// The commit does not wait for its WAL flush. The mark only keeps a task from being
    /// published again before `redispatch_after`; if a crash loses it, the task is published
    /// twice, which the worker's conditional claim makes harmless (and a claim's own flush
    /// makes every earlier mark durable anyway).
    pub async fn take_due(
        &self,
        limit: i64,
        redispatch_after: Duration,
    ) -> Result<Vec<DueTask>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH due AS ( \
                   SELECT t.id FROM tasks t JOIN functions f ON f.name = t.function_name AND f.enabled \
                   WHERE t.status = 'new' AND t.start_timestamp <= now() \
                     AND (t.dispatched_at IS NULL OR t.dispatched_at <= now() - $2 * interval '1 second') \
                   ORDER BY t.priority DESC, t.start_timestamp ASC \
                   LIMIT $1 FOR UPDATE OF t SKIP LOCKED), \
                 commit_mode AS (SELECT {SKIP_FLUSH}) \
                 UPDATE tasks SET dispatched_at = now() FROM due, commit_mode WHERE tasks.id = due.id \
                 RETURNING tasks.id, tasks.function_name, tasks.priority, tasks.start_timestamp"
            ))
            .await?;
        let rows = client
            .query(&statement, &[&limit, &redispatch_after.as_secs_f64()])
            .await?;
        let mut tasks = rows
            .iter()
            .map(|row| {
                Ok(DueTask {
                    id: row.try_get(0)?,
                    function_name: row.try_get(1)?,
                    priority: row.try_get(2)?,
                    start_timestamp: row.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING has no order; publish in the order workers should start them.
        tasks.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.start_timestamp.cmp(&b.start_timestamp))
        });
        Ok(tasks)
    }

    /// How long until the earliest start of an undispatched task that was not due yet
    /// `lookback` ago; `None` when no task waits for one. Zero for a task that fell due
    /// within the lookback (while the last pass ran, after it looked for due tasks), so that
    /// task is not left waiting for the next timer.
    pub async fn next_start(&self, lookback: Duration) -> Result<Option<Duration>, StoreError> {
        let client = self.pool.get().await?;
        // `ORDER BY … LIMIT 1`, not `min()`: believing the table nearly empty, the planner
        // aggregates every future task for `min()` rather than read the first index entry.
        let statement = client
            .prepare_cached(
                "SELECT EXTRACT(EPOCH FROM (start_timestamp - now()))::float8 \
                 FROM tasks WHERE status = 'new' AND dispatched_at IS NULL \
                   AND start_timestamp > now() - $1 * interval '1 second' \
                 ORDER BY start_timestamp LIMIT 1",
            )
            .await?;
        client
            .query_opt(&statement, &[&lookback.as_secs_f64()])
            .await?
            .map_or(Ok(None), |row| common::db::time_until(&row))
    }

    /// Marks tasks stored as dispatched as not dispatched after all (their messages could
    /// not be published), so the next pass publishes them instead of the redispatch timeout.
    pub async fn undispatch(&self, task_ids: &[String]) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE tasks SET dispatched_at = NULL WHERE id = ANY($1) AND status = 'new'",
                &[&task_ids],
            )
            .await?;
        Ok(())
    }
}
