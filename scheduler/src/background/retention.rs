//! Deletes what has aged out (see `db::retention`), every `retention.interval_ms`, batch
//! after batch until nothing older is left. Several schedulers share the work: a batch skips
//! the rows another one holds.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::RetentionConfig;
use crate::db::Retention;
use crate::db::retention::Scope;

/// Between two batches: lets the writes of a large first clean-up interleave with the
/// service's own instead of queueing behind them.
const PAUSE: Duration = Duration::from_millis(20);

/// Runs until `stop`: the functions with a retention of their own by it, the others by
/// `config.days` (0 keeps everything).
pub async fn run(retention: Retention, config: RetentionConfig, mut stop: watch::Receiver<bool>) {
    loop {
        match retention.overrides().await {
            Ok(overrides) => {
                let scopes = overrides
                    .iter()
                    .map(|(name, days)| (Scope::Function(name), *days))
                    .chain([(Scope::Others, config.days)]);
                for (scope, days) in scopes.filter(|(_, days)| *days > 0) {
                    let (tasks, requests) =
                        delete_aged(&retention, scope, days, config.batch(), &stop).await;
                    if tasks + requests > 0 {
                        tracing::info!(
                            tasks,
                            api_requests = requests,
                            days,
                            ?scope,
                            "deleted what aged out"
                        );
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "reading the functions' retention failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval()) => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
    }
}

/// Tasks, then API requests, of `scope` older than `days`, a batch at a time; returns how
/// many of each went.
async fn delete_aged(
    retention: &Retention,
    scope: Scope<'_>,
    days: u32,
    batch: i64,
    stop: &watch::Receiver<bool>,
) -> (u64, u64) {
    let tasks = in_batches(batch, stop, || retention.delete_tasks(scope, days, batch)).await;
    let requests = in_batches(batch, stop, || {
        retention.delete_api_requests(scope, days, batch)
    })
    .await;
    (tasks, requests)
}

/// Runs `delete` until a batch comes back short, `stop` turns true or it fails (it is tried
/// again at the next interval); returns how many rows went.
async fn in_batches<F, Fut>(batch: i64, stop: &watch::Receiver<bool>, mut delete: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, common::db::StoreError>>,
{
    let mut deleted = 0;
    loop {
        let count = match delete().await {
            Ok(count) => count,
            Err(error) => {
                tracing::warn!(%error, "deleting what aged out failed; trying again later");
                return deleted;
            }
        };
        deleted += count;
        // A task batch may delete more rows than it selected (retry chains).
        if count < batch as u64 || *stop.borrow() {
            return deleted;
        }
        tokio::time::sleep(PAUSE).await;
    }
}
