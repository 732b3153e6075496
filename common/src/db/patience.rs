//! Retrying database work through an outage, for work that must not give up at the first
//! dropped connection: a worker's attempts that own their task (loading the function and its
//! code, storing the outcome).

use std::time::Duration;

use super::StoreError;

/// How long a running attempt keeps trying to reach the database (to load its function and
/// code, to store its outcome) while it is unreachable.
const STORE_PATIENCE: Duration = Duration::from_secs(300);

/// Runs a database operation until it succeeds, fails with an error that will not go away,
/// or [`STORE_PATIENCE`] runs out, backing off from 100 ms to 2 s between tries.
pub async fn patiently<T, F, Fut>(what: &str, mut operation: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = std::time::Instant::now() + STORE_PATIENCE;
    let mut wait = Duration::from_millis(100);
    loop {
        let error = match operation().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if !error.is_transient() || std::time::Instant::now() + wait > deadline {
            return Err(error);
        }
        tracing::warn!(%error, "could not {what}; trying again");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}
