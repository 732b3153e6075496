//! The outbox relay: publishes the outbox (`task_failed` events) to the `platform.events`
//! exchange, routing key = event type, and deletes what the broker confirmed.

use std::sync::Arc;
use std::time::Duration;

use common::broker::{EVENTS_EXCHANGE, Publisher};
use tokio::sync::{Notify, watch};

use crate::db::Outbox;

pub async fn run(
    outbox: Outbox,
    publisher: Arc<Publisher>,
    wakeup: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let published = outbox
            .relay(100, |events| {
                let publisher = publisher.clone();
                async move {
                    let messages = events.into_iter().map(|event| {
                        let body = serde_json::to_vec(&event.payload).unwrap_or_default();
                        (event.routing_key, body)
                    });
                    publisher.publish_all(EVENTS_EXCHANGE, messages).await
                }
            })
            .await;
        let wait = match published {
            Ok(100) => continue,
            // Writes to the outbox notify the relay; the timer only covers a missed one.
            Ok(_) => Duration::from_secs(30),
            Err(error) => {
                tracing::warn!(%error, "publishing events failed, retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
    }
}
