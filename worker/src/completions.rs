//! Stores the results of completed attempts in batches: every attempt that finishes while a
//! batch is being committed goes into the next one, so a busy worker pays one transaction
//! (one WAL flush) for many tasks instead of one each.

use common::db::lifecycle::Completion;
use common::db::{Lifecycle, StoreError};
use tokio::sync::{mpsc, oneshot};

use common::db::patiently;

/// Most completions written in one transaction.
const MAX_BATCH: usize = 256;

struct Pending {
    completion: Completion,
    stored: oneshot::Sender<Result<bool, StoreError>>,
}

/// The handle executions store their results through; the writer stops when the last
/// handle is dropped, after storing what it was given.
#[derive(Clone)]
pub struct Completions {
    sender: mpsc::Sender<Pending>,
}

impl Completions {
    pub fn start(lifecycle: Lifecycle) -> Completions {
        let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write(lifecycle, receiver));
        Completions { sender }
    }

    /// Stores an attempt's result and log lines, waiting out a database outage. Says
    /// whether the attempt still owned its task.
    pub async fn store(&self, completion: Completion) -> Result<bool, StoreError> {
        let (stored, answer) = oneshot::channel();
        let unavailable = || StoreError::Config("the result writer has stopped".into());
        self.sender
            .send(Pending { completion, stored })
            .await
            .map_err(|_| unavailable())?;
        answer.await.unwrap_or_else(|_| Err(unavailable()))
    }
}

async fn write(lifecycle: Lifecycle, mut receiver: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (completions, answers): (Vec<Completion>, Vec<_>) =
            batch.drain(..).map(|p| (p.completion, p.stored)).unzip();
        match patiently("store the results of tasks", || {
            lifecycle.complete(&completions)
        })
        .await
        {
            Ok(stored) => {
                for (answer, stored) in answers.into_iter().zip(stored) {
                    let _ = answer.send(Ok(stored));
                }
            }
            // One result the database refuses (a string it cannot store, say) must not
            // fail the others: store them one by one, each with its own answer.
            Err(_) => {
                for (completion, answer) in completions.iter().zip(answers) {
                    let single = std::slice::from_ref(completion);
                    let stored =
                        patiently("store the result of a task", || lifecycle.complete(single))
                            .await
                            .map(|stored| stored.first().copied().unwrap_or(false));
                    let _ = answer.send(stored);
                }
            }
        }
    }
}
