//! Fails the due tasks whose function was deleted: no worker could ever run them. This check
//! reads every due task, so it runs on its own clock rather than in the dispatcher's passes,
//! which it would otherwise hold up.

use std::time::Duration;

use std::sync::Arc;

use common::db::Lifecycle;
use tokio::sync::{Notify, watch};

/// How often the check runs when no function changes: a task of a function deleted earlier
/// that falls due later (it was not due at the deletion) waits at most this long.
const INTERVAL: Duration = Duration::from_secs(10);

/// Looks when `functions_changed` is notified (a function was deleted, say) and every
/// [`INTERVAL`] (less often while a large backlog makes the check slow), until `stop`.
/// `lifecycle` is on a [`common::db::queue_pool`], as the search reads the due tasks.
pub async fn run(
    lifecycle: Lifecycle,
    functions_changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = INTERVAL;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = functions_changed.notified() => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
        let started = std::time::Instant::now();
        match lifecycle.fail_orphans().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "failed tasks whose function was deleted"),
            Err(error) => tracing::warn!(%error, "checking for tasks of deleted functions failed"),
        }
        wait = super::paced(INTERVAL, started.elapsed());
    }
}
