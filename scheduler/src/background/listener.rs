//! Postgres LISTEN: wakes the dispatcher, the outbox relay, the schedules loop and the check
//! for tasks of deleted functions as soon as there is work, instead of making them poll, and
//! tells the definition cache when a function changed.
//! Reconnects by itself; while it is down the loops fall back on their timers and the cache
//! keeps nothing.

use std::sync::Arc;

use common::reconnect::Reconnect;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::api::definition_cache::{DefinitionCache, FUNCTIONS_CHANNEL};
use crate::dispatch::DispatchHandle;

/// Notified when a task due later is inserted (a retry, say), a task is handed back by a
/// draining worker, or a function is enabled. Tasks this scheduler creates wake its
/// dispatcher in-process instead, and claims are polled for: see `dispatch`.
pub const TASKS_CHANNEL: &str = "tasks_changed";
/// Notified when events are written to the outbox.
pub const OUTBOX_CHANNEL: &str = "outbox";
/// Notified when a schedule is created.
pub const SCHEDULES_CHANNEL: &str = "schedules_created";

/// What the notifications reach: the loops they wake, and the cache they keep fresh.
#[derive(Clone)]
pub struct Wakeups {
    pub dispatch: DispatchHandle,
    pub outbox: Arc<Notify>,
    pub schedules: Arc<Notify>,
    /// Woken with the definition cache when a function changes: the check for tasks of
    /// deleted functions.
    pub functions_changed: Arc<Notify>,
    pub definitions: DefinitionCache,
}

impl Wakeups {
    /// One pass of each loop, for what happened while nobody listened.
    fn wake_all(&self) {
        self.dispatch.wake();
        self.outbox.notify_one();
        self.schedules.notify_one();
        self.functions_changed.notify_one();
    }
}

/// Listens until the process ends.
pub async fn run(database_url: String, wakeups: Wakeups) {
    let mut reconnect = Reconnect::new("database notifications");
    loop {
        let wait = match listen(&database_url, &wakeups, &mut reconnect).await {
            Ok(()) => reconnect.failed(&"the connection closed"),
            Err(error) => reconnect.failed(&error),
        };
        wakeups.definitions.set_listening(false);
        wakeups.wake_all();
        tokio::time::sleep(wait).await;
    }
}

async fn listen(
    database_url: &str,
    wakeups: &Wakeups,
    reconnect: &mut Reconnect,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(database_url, NoTls).await?;
    let targets = wakeups.clone();
    // The connection delivers notifications; the client must live as long as it runs.
    let pump = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(notification) = message? {
                match notification.channel() {
                    TASKS_CHANNEL => targets.dispatch.wake(),
                    OUTBOX_CHANNEL => targets.outbox.notify_one(),
                    SCHEDULES_CHANNEL => targets.schedules.notify_one(),
                    FUNCTIONS_CHANNEL => {
                        targets.definitions.forget_all();
                        targets.functions_changed.notify_one();
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!(
            "LISTEN {TASKS_CHANNEL}; LISTEN {OUTBOX_CHANNEL}; LISTEN {SCHEDULES_CHANNEL}; \
             LISTEN {FUNCTIONS_CHANNEL};"
        ))
        .await?;
    wakeups.definitions.set_listening(true);
    // What changed before this connection listened is picked up by one pass of each loop.
    wakeups.wake_all();
    reconnect.connected();
    let outcome = pump.await.unwrap_or(Ok(()));
    drop(client);
    outcome
}
