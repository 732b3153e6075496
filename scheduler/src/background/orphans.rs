//! Fails the due tasks whose function was deleted: no worker could ever run them. This check
//! reads every due task, so it runs on its own clock rather than in the dispatcher's passes,
//! which it would otherwise hold up.

use std::time::Duration;

use common::db::Lifecycle;
use tokio::sync::watch;

/// Looks every second (less often while a large backlog makes the check slow), until `stop`.
/// `lifecycle` is on a [`common::db::queue_pool`], as the search reads the due tasks.
pub async fn run(lifecycle: Lifecycle, mut stop: watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
        let started = std::time::Instant::now();
        match lifecycle.fail_orphans().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "failed tasks whose function was deleted"),
            Err(error) => tracing::warn!(%error, "checking for tasks of deleted functions failed"),
        }
        wait = super::paced(Duration::from_secs(1), started.elapsed());
    }
}
