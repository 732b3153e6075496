//! Deleting what has aged out: finished tasks with their logs, API requests with theirs.
//!
//! Bounded batches, oldest first, each its own short transaction, rather than partitions
//! dropped whole: a batch walks the creation-time index from its old end, so it reads about
//! the rows it deletes however large the table is, holds its row locks for milliseconds, and
//! works on the tables as they are (partitioning `tasks` would change its primary key and
//! every unique index, which must then hold the partition key). Autovacuum reclaims the space.

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use common::db::StoreError;

/// Whose rows a deletion looks at: one function's (its own `retentionDays`), or those of
/// every function without one (the service's `retention.days`, deleted functions included).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Function(&'a str),
    Others,
}

impl Scope<'_> {
    /// The statement's parameters: `$1` days, `$2` limit, and `$3` the function's name.
    fn parameters<'a>(&'a self, days: &'a i32, limit: &'a i64) -> Vec<&'a (dyn ToSql + Sync)> {
        match self {
            Scope::Function(name) => vec![days, limit, name],
            Scope::Others => vec![days, limit],
        }
    }

    /// The condition on the `function_name` of the rows `alias` names (`$3` for a function's
    /// name). A filter of its own per scope, so each statement is planned for it: one
    /// function's rows by the (function, time) index, the others' by the time index.
    fn condition(self, alias: &str) -> String {
        match self {
            Scope::Function(_) => format!("{alias}.function_name = $3"),
            Scope::Others => format!(
                "NOT EXISTS (SELECT 1 FROM functions f \
                 WHERE f.name = {alias}.function_name AND f.retention_days IS NOT NULL)"
            ),
        }
    }
}

#[derive(Clone)]
pub struct Retention {
    pool: Pool,
}

impl Retention {
    pub fn new(pool: Pool) -> Self {
        Retention { pool }
    }

    /// The functions with a retention of their own, and its days.
    pub async fn overrides(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT name, retention_days FROM functions WHERE retention_days IS NOT NULL",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let days: i32 = row.try_get(1)?;
                Ok((row.try_get(0)?, days.max(0) as u32))
            })
            .collect()
    }

    /// Deletes up to `limit` finished tasks of `scope` created and finished more than `days`
    /// ago, each with its logs (by cascade) and the earlier tasks of its retry chain; returns
    /// how many tasks went. Kept whatever their age: tasks not finished; a retried task, which goes
    /// only with the end of its chain (so a chain whose last retry is still to run stays
    /// whole); and the newest task of each schedule.
    pub async fn delete_tasks(
        &self,
        scope: Scope<'_>,
        days: u32,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH aged AS ( \
                   SELECT t.id, t.retry_for_task_ids FROM tasks t \
                   WHERE t.creation_timestamp < now() - make_interval(days => $1) \
                     AND t.status_changed_timestamp < now() - make_interval(days => $1) \
                     AND t.status IN ('complete', 'failed', 'canceled') \
                     AND {scope} \
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
                scope = scope.condition("t"),
            ))
            .await?;
        let days = sql_days(days);
        Ok(client
            .execute(&statement, &scope.parameters(&days, &limit))
            .await?)
    }

    /// Deletes up to `limit` API requests of `scope` older than `days`, with their logs;
    /// returns how many requests went.
    pub async fn delete_api_requests(
        &self,
        scope: Scope<'_>,
        days: u32,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH aged AS ( \
                   DELETE FROM api_requests WHERE id IN ( \
                     SELECT id FROM api_requests r \
                     WHERE timestamp < now() - make_interval(days => $1) AND {scope} \
                     ORDER BY timestamp LIMIT $2 FOR UPDATE SKIP LOCKED) \
                   RETURNING id), \
                 logs AS ( \
                   DELETE FROM api_request_logs WHERE api_request_id IN (SELECT id FROM aged)) \
                 SELECT count(*) FROM aged",
                scope = scope.condition("r"),
            ))
            .await?;
        let days = sql_days(days);
        let row = client
            .query_one(&statement, &scope.parameters(&days, &limit))
            .await?;
        Ok(row.try_get::<_, i64>(0)? as u64)
    }
}

/// `make_interval` takes its days as an `integer`.
fn sql_days(days: u32) -> i32 {
    i32::try_from(days).unwrap_or(i32::MAX)
}
