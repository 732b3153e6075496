//! Deletes what has aged out (see `db::retention`), every `retention.interval_ms`, batch
//! after batch until nothing older is left. Several schedulers share the work: a batch skips
//! the rows another one holds.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::RetentionConfig;
use crate::db::Retention;

/// Between two batches: lets the writes of a large first clean-up interleave with the
/// service's own instead of queueing behind them.
const PAUSE: Duration = Duration::from_millis(20);

/// Runs until `stop`; does nothing when `config.days` is 0 (keep everything).
pub async fn run(retention: Retention, config: RetentionConfig, mut stop: watch::Receiver<bool>) {
    if config.days == 0 {
        return;
    }
    loop {
        let (tasks, requests) = delete_aged(&retention, &config, &mut stop).await;
        if tasks + requests > 0 {
            tracing::info!(
                tasks,
                api_requests = requests,
                days = config.days,
                "deleted what aged out"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval()) => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
    }
}

/// Tasks, then API requests, a batch at a time; returns how many of each went.
async fn delete_aged(
    retention: &Retention,
    config: &RetentionConfig,
    stop: &mut watch::Receiver<bool>,
) -> (u64, u64) {
    let batch = config.batch();
    let mut deleted = (0, 0);
    for requests in [false, true] {
        loop {
            let outcome = if requests {
                retention.delete_api_requests(config.days, batch).await
            } else {
                retention.delete_tasks(config.days, batch).await
            };
            let count = match outcome {
                Ok(count) => count,
                Err(error) => {
                    tracing::warn!(%error, "deleting what aged out failed; trying again later");
                    return deleted;
                }
            };
            if requests {
                deleted.1 += count;
            } else {
                deleted.0 += count;
            }
            // A task batch may delete more rows than it selected (retry chains).
            if count < batch as u64 || *stop.borrow() {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    deleted
}
