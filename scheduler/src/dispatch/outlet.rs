//! The dispatcher's outlet: publishes tasks already marked dispatched, for the dispatcher's
//! passes and the fast lane, and counts the tasks waiting in the broker.

use std::collections::VecDeque;
use std::sync::Arc;

use common::broker::{AmqpError, Publisher, TASKS_QUEUE};
use common::messages::TaskMessage;
use common::metrics::Metrics;
use tokio::sync::{Notify, RwLock};

use super::queries::DispatchQueries;

/// What publishes tasks marked dispatched, for the dispatcher's passes and the fast lane.
#[derive(Clone)]
pub(super) struct Outlet {
    publisher: Arc<Publisher>,
    pub(super) queries: DispatchQueries,
    /// Wakes the dispatcher.
    wakeup: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Held shared by every batch of messages from its send until its confirm (or failure),
    /// so counting the queue can first wait for all of them.
    unconfirmed: Arc<RwLock<()>>,
    sent: Arc<SentMessages>,
}

impl Outlet {
    pub(super) fn new(
        publisher: Arc<Publisher>,
        queries: DispatchQueries,
        metrics: Arc<Metrics>,
    ) -> Self {
        Outlet {
            publisher,
            queries,
            wakeup: Arc::default(),
            metrics,
            unconfirmed: Arc::default(),
            sent: Arc::default(),
        }
    }

    /// Has the dispatcher make a pass at once.
    pub(super) fn wake_dispatcher(&self) {
        self.wakeup.notify_one();
    }

    /// Resolves when [`Self::wake_dispatcher`] was called since the last time it resolved.
    pub(super) async fn woken(&self) {
        self.wakeup.notified().await;
    }

    /// How many tasks the messages waiting in the `tasks` queue name, counting every message
    /// this outlet sent before. A quorum queue counts a message once it is committed, which
    /// its confirm tells: a count taken before the confirms still due would miss those
    /// messages and let a pass overfill the window. (The client's own `wait_for_confirms` is
    /// no substitute: it waits for the newest message at the time of the call, and when
    /// another one is sent before that one's confirm arrives, it is never woken.)
    pub(super) async fn waiting_tasks(&self) -> Result<i64, AmqpError> {
        drop(self.unconfirmed.write().await);
        let messages = self.publisher.ready_messages(TASKS_QUEUE).await?;
        Ok(self.sent.tasks_in_newest(messages as usize))
    }

    /// Publishes tasks already marked dispatched (by a pass or by the API's fast lane): hands
    /// their messages to the broker, in order, and returns; their confirms are awaited in the
    /// background, so the next pass does not wait for the broker's round trip and log flush
    /// (which its disk sometimes stretches to milliseconds). Tasks whose messages the broker
    /// does not take are marked undispatched again and the dispatcher woken, so the next pass
    /// publishes them rather than the redispatch timeout (a send that fails is the caller's to
    /// retry); a crash in between leaves them to that timeout.
    pub(super) async fn publish_marked(
        &self,
        task_ids: Vec<String>,
        per_message: usize,
    ) -> Result<(), AmqpError> {
        // Each message with the number of tasks it names, so the two never disagree.
        let (sizes, messages): (Vec<usize>, Vec<_>) = task_ids
            .chunks(per_message.max(1))
            .filter_map(|chunk| Some((chunk.len(), due_message(chunk)?)))
            .unzip();
        let unconfirmed = self.unconfirmed.clone().read_owned().await;
        match self.publisher.send_all("", messages).await {
            Ok(sent) => {
                self.sent.record(sizes);
                let outlet = self.clone();
                tokio::spawn(async move {
                    let confirmed = outlet.publisher.confirmed(sent).await;
                    drop(unconfirmed);
                    match confirmed {
                        Ok(()) => outlet
                            .metrics
                            .tasks_dispatched
                            .inc_by(task_ids.len() as u64),
                        Err(error) => {
                            outlet.hand_back(&task_ids, &error).await;
                            outlet.wake_dispatcher();
                        }
                    }
                });
                Ok(())
            }
            // The caller retries, with its own backoff while the broker is unreachable.
            Err(error) => {
                self.hand_back(&task_ids, &error).await;
                Err(error)
            }
        }
    }

    /// Marks tasks whose messages the broker did not take as undispatched again.
    async fn hand_back(&self, task_ids: &[String], error: &AmqpError) {
        tracing::warn!(tasks = task_ids.len(), %error, "the broker did not take due tasks; the next dispatch pass publishes them");
        if let Err(undispatch) = self.queries.undispatch(task_ids).await {
            tracing::warn!(tasks = task_ids.len(), error = %undispatch, "could not hand unpublished tasks back; they are republished after the redispatch timeout");
        }
    }
}

/// How many tasks each of the newest messages sent names, newest last. The broker counts
/// messages and the window is in tasks; the ready messages of a queue consumed in order are
/// the newest ones.
#[derive(Default)]
struct SentMessages(std::sync::Mutex<VecDeque<usize>>);

/// More messages than a window ever holds (a window is bounded by the tasks it names).
const SENT_MESSAGES_KEPT: usize = 4096;

impl SentMessages {
    fn record(&self, sizes: impl IntoIterator<Item = usize>) {
        if let Ok(mut kept) = self.0.lock() {
            kept.extend(sizes);
            let excess = kept.len().saturating_sub(SENT_MESSAGES_KEPT);
            kept.drain(..excess);
        }
    }

    /// The tasks named by the newest `messages` messages; one each for those this outlet did
    /// not send (another scheduler's, a worker's hand-back, a synchronous request).
    fn tasks_in_newest(&self, messages: usize) -> i64 {
        let Ok(kept) = self.0.lock() else {
            return messages as i64;
        };
        let known = kept.len().min(messages);
        let tasks: usize = kept.iter().rev().take(known).sum();
        (tasks + (messages - known)) as i64
    }
}

/// The message telling workers that tasks are due, for the default exchange.
fn due_message(task_ids: &[String]) -> Option<(String, Vec<u8>)> {
    let body = serde_json::to_vec(&TaskMessage::of(task_ids)?).ok()?;
    Some((TASKS_QUEUE.to_owned(), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_counts_the_tasks_of_the_newest_messages() {
        let sent = SentMessages::default();
        sent.record([1, 8, 8, 3]);
        assert_eq!(sent.tasks_in_newest(0), 0);
        assert_eq!(sent.tasks_in_newest(2), 11);
        assert_eq!(sent.tasks_in_newest(4), 20);
        assert_eq!(
            sent.tasks_in_newest(6),
            22,
            "one each for messages sent by others"
        );
        sent.record(std::iter::repeat_n(2, SENT_MESSAGES_KEPT));
        assert_eq!(sent.0.lock().unwrap().len(), SENT_MESSAGES_KEPT);
    }
}
