//! The sweeper: fails tasks whose worker stopped renewing their lease (it died) with the error
//! `zombieTaskCleaned`; the function's retry policy then applies as for any error.

use std::time::Duration;

use common::db::Lifecycle;
use common::db::lifecycle::{FailOutcome, Fence};
use common::domain::{TaskError, TaskErrorType};
use tokio::sync::watch;

use common::metrics::Metrics;
use std::sync::Arc;

pub const ZOMBIE_ERROR_NAME: &str = "zombieTaskCleaned";

/// After the database was unreachable (for the sweeper, or restarted), how long live workers
/// get to renew the leases that ran out meanwhile before their tasks count as zombies.
/// Workers retry a failed renewal every half second, so a few seconds suffice.
pub const OUTAGE_GRACE: Duration = Duration::from_secs(5);

pub async fn run(
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let error = TaskError {
        kind: TaskErrorType::Invocation,
        name: ZOMBIE_ERROR_NAME.to_owned(),
        message: "The worker running this task stopped responding before the task finished"
            .to_owned(),
    };
    // Until when expired leases are left alone because the sweeper itself could not reach
    // the database: a restart it slept through is caught by `expired_leases`.
    let mut quiet_until: Option<tokio::time::Instant> = None;
    loop {
        match lifecycle.expired_leases(100, OUTAGE_GRACE).await {
            Ok(_) if quiet_until.is_some_and(|t| tokio::time::Instant::now() < t) => {}
            Ok(zombies) => {
                for (task_id, attempt, function) in zombies {
                    let fence = Fence {
                        attempt,
                        lease_expired: true,
                    };
                    match lifecycle.fail(&task_id, fence, &error, &[]).await {
                        Ok(FailOutcome::Stale) => {}
                        Ok(outcome) => {
                            metrics.zombies_cleaned.inc();
                            if let FailOutcome::Retried(_) = outcome {
                                metrics.retries.inc();
                                metrics.tasks_created.with_label_values(&["retry"]).inc();
                            }
                            tracing::warn!(task_id = %task_id, function = %function, attempt, ?outcome, "cleaned a zombie task")
                        }
                        Err(e) => {
                            tracing::warn!(task_id = %task_id, function = %function, error = %e, "could not clean a zombie task")
                        }
                    }
                }
            }
            Err(e) => {
                quiet_until = Some(tokio::time::Instant::now() + OUTAGE_GRACE);
                tracing::warn!(error = %e, "looking for zombie tasks failed")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
    }
}
