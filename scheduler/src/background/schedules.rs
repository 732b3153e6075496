//! Fires schedules: each due schedule creates the task of its slot and moves to the next one.

use std::time::Duration;

use std::sync::Arc;

use common::metrics::Metrics;
use tokio::sync::{Notify, watch};

use crate::db::Schedules;
use crate::dispatch::DispatchHandle;

/// Longest sleep between two looks at the schedules. A new schedule wakes the loop through
/// its database notification; this only bounds the wait while notifications are down.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Most schedules fired in one transaction.
const BATCH: usize = 100;

/// Fires due schedules until `stop`, sleeping until the next one is due or `created` is
/// notified (a schedule was created); `dispatch` wakes the dispatcher for the tasks created.
pub async fn run(
    schedules: Schedules,
    metrics: Arc<Metrics>,
    dispatch: DispatchHandle,
    created: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wait = match schedules.fire_due(BATCH as i64).await {
            Ok(fired) => {
                metrics
                    .tasks_created
                    .with_label_values(&["schedule"])
                    .inc_by(fired.tasks);
                if fired.tasks > 0 {
                    tracing::debug!(tasks = fired.tasks, "fired schedules");
                    dispatch.wake();
                }
                if fired.schedules == BATCH {
                    // A full batch: more schedules may be due right now.
                    continue;
                }
                match schedules.next_due_in().await {
                    Ok(Some(next)) => next.min(MAX_SLEEP),
                    Ok(None) => MAX_SLEEP,
                    Err(error) => {
                        tracing::warn!(%error, "reading the next schedule failed");
                        MAX_SLEEP
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "firing schedules failed, retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = created.notified() => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
    }
}
