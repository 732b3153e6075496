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
    loop {
        match lifecycle.expired_leases(100).await {
            Ok(zombies) => {
                for (task_id, attempt, function) in zombies {
                    let fence = Fence {
                        attempt,
                        lease_expired: true,
                    };
                    match lifecycle.fail(&task_id, fence, &error).await {
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
            Err(e) => tracing::warn!(error = %e, "looking for zombie tasks failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
    }
}
