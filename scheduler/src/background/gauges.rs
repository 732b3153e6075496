//! Cluster-wide gauges computed from Postgres: due-but-not-started, in progress, and their sum,
//! work in system, which autoscalers use (it counts in-flight work and tasks waiting in
//! Postgres, which a queue length does not).

use std::sync::Arc;
use std::time::Duration;

use common::metrics::Metrics;
use deadpool_postgres::Pool;
use tokio::sync::watch;

/// Counting the backlog reads every due task: often enough for autoscalers, which act on
/// minutes, without a query every second of an idle scheduler.
const INTERVAL: Duration = Duration::from_secs(15);

pub async fn run(pool: Pool, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    loop {
        let started = std::time::Instant::now();
        match counts(&pool).await {
            Ok((due, in_progress)) => {
                metrics.tasks_due.set(due);
                metrics.tasks_in_progress.set(in_progress);
                metrics.work_in_system.set(due + in_progress);
            }
            Err(error) => tracing::debug!(%error, "could not count tasks for the gauges"),
        }
        let wait = super::paced(INTERVAL, started.elapsed());
        metrics.observe_pool(&pool);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
    }
}

async fn counts(pool: &Pool) -> Result<(i64, i64), common::db::StoreError> {
    let client = pool.get().await?;
    let row = common::db::aggregate_row(
        &client,
        "SELECT \
               (SELECT count(*) FROM tasks t JOIN functions f ON f.name = t.function_name AND f.enabled \
                WHERE t.status = 'new' AND t.start_timestamp <= now()), \
               (SELECT count(*) FROM tasks WHERE status = 'inProgress')",
    )
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}
