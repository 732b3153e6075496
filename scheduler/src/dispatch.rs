//! The dispatcher: publishes each task to the `tasks` queue when it is due, highest priority
//! first. Postgres is the queue; the broker only holds a bounded window of due-but-unclaimed
//! tasks, refilled in priority order as workers claim them, because the broker cannot order
//! 2^53 priorities itself.

use std::sync::Arc;
use std::time::Duration;

use common::amqp::{Publisher, TASKS_QUEUE, TaskMessage};
use common::db::DispatchQueries;
use tokio::sync::{Notify, watch};

use crate::config::DispatchConfig;

/// How often the window is re-checked while tasks are in flight: claims free room in it
/// without telling the scheduler (a NOTIFY per claim would serialize every commit).
const IN_FLIGHT_POLL: Duration = Duration::from_millis(10);
use common::metrics::Metrics;

pub struct Dispatcher {
    pub queries: DispatchQueries,
    pub publisher: Arc<Publisher>,
    pub config: DispatchConfig,
    pub wakeup: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let redispatch_after = self.config.redispatch_after();
        let mut orphan_check = tokio::time::interval(Duration::from_secs(1));
        loop {
            let wait = match self.pass(redispatch_after).await {
                Ok(pass) => {
                    let next = pass.next.unwrap_or(self.config.max_sleep());
                    let next = next.min(self.config.max_sleep());
                    if pass.in_flight {
                        next.min(IN_FLIGHT_POLL)
                    } else {
                        next
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "dispatch pass failed, retrying");
                    Duration::from_millis(500)
                }
            };
            let check_orphans = tokio::select! {
                _ = self.wakeup.notified() => false,
                _ = tokio::time::sleep(wait) => false,
                _ = orphan_check.tick() => true,
                _ = common::shutdown::stopped(&mut stop) => return,
            };
            if check_orphans {
                match self.queries.fail_orphans().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(tasks = n, "failed tasks whose function was deleted"),
                    Err(error) => {
                        tracing::warn!(%error, "checking for tasks of deleted functions failed")
                    }
                }
            }
        }
    }

    /// Fills the window, then says how long nothing needs doing.
    async fn pass(&self, redispatch_after: Duration) -> anyhow::Result<Pass> {
        let mut in_flight;
        loop {
            in_flight = self.queries.in_flight(redispatch_after).await?;
            let room = self.config.window - in_flight;
            if room <= 0 {
                break;
            }
            let mut client = self.queries.client().await?;
            let batch = self
                .queries
                .take_due(&mut client, room.min(self.config.batch), redispatch_after)
                .await?;
            if batch.tasks.is_empty() {
                break;
            }
            let count = batch.tasks.len() as i64;
            let messages: Vec<(String, Vec<u8>)> = batch
                .tasks
                .iter()
                .map(|task| {
                    let message = TaskMessage {
                        task_id: task.id.clone(),
                    };
                    let body = serde_json::to_vec(&message).unwrap_or_default();
                    (TASKS_QUEUE.to_owned(), body)
                })
                .collect();
            // Commit only once the broker confirmed: a failed publish leaves the tasks
            // undispatched, and a crash between the two at worst publishes them twice, which
            // the worker's conditional claim makes harmless.
            self.publisher.publish_all("", messages).await?;
            batch.commit().await?;
            self.metrics.tasks_dispatched.inc_by(count as u64);
            tracing::debug!(tasks = count, "dispatched");
            in_flight += count;
            if count < room.min(self.config.batch) {
                break;
            }
        }
        Ok(Pass {
            next: self.queries.next_wake(redispatch_after).await?,
            in_flight: in_flight > 0,
        })
    }
}

/// What one dispatch pass leaves behind.
struct Pass {
    /// When the next task falls due or needs republishing, if any.
    next: Option<Duration>,
    /// Published tasks not claimed yet: their claims will free room in the window.
    in_flight: bool,
}
