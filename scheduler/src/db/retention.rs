//! Deleting what has aged out: finished tasks with their logs, API requests with theirs.
//!
//! Bounded batches, oldest first, each its own short transaction, rather than partitions
//! dropped whole: a batch walks the creation-time index from its old end, so it reads about
//! the rows it deletes however large the table is, holds its row locks for milliseconds, and
//! works on the tables as they are (partitioning `tasks` would change its primary key and
//! every unique index, which must then hold the partition key). Autovacuum reclaims the space.

use deadpool_postgres::Pool;

use common::db::StoreError;

#[derive(Clone)]
pub struct Retention {
    pool: Pool,
}

impl Retention {
    pub fn new(pool: Pool) -> Self {
        Retention { pool }
    }

    /// Deletes up to `limit` finished tasks created and finished more than `days` ago, each
    /// with its logs (by cascade) and the earlier tasks of its retry chain; returns how many
    /// tasks went. Kept whatever their age: tasks not finished; a retried task, which goes
    /// only with the end of its chain (so a chain whose last retry is still to run stays
    /// whole); and the newest task of each schedule.
    pub async fn delete_tasks(&self, days: u32, limit: i64) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "WITH aged AS ( \
                   SELECT t.id, t.retry_for_task_ids FROM tasks t \
                   WHERE t.creation_timestamp < now() - make_interval(days => $1) \
                     AND t.status_changed_timestamp < now() - make_interval(days => $1) \
                     AND t.status IN ('complete', 'failed', 'canceled') \
                     AND (t.schedule_id IS NULL OR EXISTS ( \
                       SELECT 1 FROM tasks later \
                       WHERE later.schedule_id = t.schedule_id \
                         AND later.schedule_slot > t.schedule_slot)) \
                   ORDER BY t.creation_timestamp \
                   LIMIT $2 \
                   FOR UPDATE OF t SKIP LOCKED) \
                 DELETE FROM tasks \
                 WHERE id IN (SELECT id FROM aged UNION ALL SELECT unnest(retry_for_task_ids) FROM aged) \
                   AND status NOT IN ('new', 'inProgress')",
            )
            .await?;
        let days = i32::try_from(days).unwrap_or(i32::MAX);
        Ok(client.execute(&statement, &[&days, &limit]).await?)
    }

    /// Deletes up to `limit` API requests older than `days`, with their logs; returns how
    /// many requests went.
    pub async fn delete_api_requests(&self, days: u32, limit: i64) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "WITH aged AS ( \
                   DELETE FROM api_requests WHERE id IN ( \
                     SELECT id FROM api_requests \
                     WHERE timestamp < now() - make_interval(days => $1) \
                     ORDER BY timestamp LIMIT $2 FOR UPDATE SKIP LOCKED) \
                   RETURNING id), \
                 logs AS ( \
                   DELETE FROM api_request_logs WHERE api_request_id IN (SELECT id FROM aged)) \
                 SELECT count(*) FROM aged",
            )
            .await?;
        let days = i32::try_from(days).unwrap_or(i32::MAX);
        let row = client.query_one(&statement, &[&days, &limit]).await?;
        Ok(row.try_get::<_, i64>(0)? as u64)
    }
}
