//! Consumes the `tasks` queue: claim (what has arrived together, in one statement), ack, run.
//! At most `concurrency` tasks run at once; a task whose claim fails (canceled, already
//! claimed, duplicate) is dropped; a message nobody can understand is dead-lettered with the
//! reason. A message may name several tasks: they start as slots free up, and what has not
//! started within [`HOLD`] goes back to the queue.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::amqp::{
    self, ApiInvocation, MAX_API_MESSAGE_BYTES, MAX_TASK_MESSAGE_BYTES, TASKS_QUEUE, TaskMessage,
    WorkMessage,
};
use common::db::Lifecycle;
use common::db::lifecycle::Claimed;
use common::reconnect::Reconnect;
use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::execute::{Executor, ReplyTo};

pub struct Consumer {
    pub amqp_url: String,
    pub concurrency: usize,
    pub lease: Duration,
    /// How long running tasks may take to finish once the worker is told to stop.
    pub drain_grace: Duration,
    pub lifecycle: Lifecycle,
    pub executor: Arc<Executor>,
    /// True while consuming from the broker (for readiness).
    pub connected: Arc<AtomicBool>,
}

impl Consumer {
    /// Consumes until `stop` turns true, reconnecting to the broker when it goes away, then
    /// waits for the running tasks.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut running = JoinSet::new();
        let mut reconnect = Reconnect::new("broker (task consumer)");
        while !*stop.borrow() {
            match self
                .consume(&slots, &mut running, &mut stop, &mut reconnect)
                .await
            {
                Ok(()) => break,
                Err(error) => {
                    self.connected.store(false, Ordering::Relaxed);
                    self.executor
                        .metrics
                        .broker_reconnects
                        .with_label_values(&["worker"])
                        .inc();
                    let wait = reconnect.failed(&error);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = common::shutdown::stopped(&mut stop) => break,
                    }
                }
            }
        }
        self.drain(running).await;
    }

    /// Lets running tasks finish within the grace period, then stops the rest and hands their
    /// tasks back (`new`, attempt fenced) so another worker runs them instead of the sweeper
    /// failing them as zombies.
    async fn drain(&self, mut running: JoinSet<()>) {
        let finished = tokio::time::timeout(self.drain_grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if finished.is_ok() {
            return;
        }
        let unfinished = self.executor.running.snapshot();
        // Dropping the executions kills their function processes.
        running.abort_all();
        while running.join_next().await.is_some() {}
        for (task_id, attempt) in unfinished {
            match self.lifecycle.hand_back(&task_id, attempt).await {
                Ok(true) => {
                    tracing::info!(task_id = %task_id, attempt, "handed a task back for another worker")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(task_id = %task_id, %error, "could not hand a task back; the sweeper will settle it")
                }
            }
        }
    }

    async fn consume(
        &self,
        slots: &Arc<Semaphore>,
        running: &mut JoinSet<()>,
        stop: &mut watch::Receiver<bool>,
        reconnect: &mut Reconnect,
    ) -> anyhow::Result<()> {
        let prefetch = self.concurrency.min(u16::MAX as usize) as u16;
        let (_connection, channel, mut deliveries) =
            amqp::open_consumer(&self.amqp_url, TASKS_QUEUE, prefetch).await?;
        reconnect.connected();
        tracing::info!("consuming tasks");
        self.connected.store(true, Ordering::Relaxed);
        // Messages delivered, oldest first, whose work has not all started. On a lost
        // connection they go back to the queue unacked.
        let mut taken = VecDeque::new();
        loop {
            while running.try_join_next().is_some() {}
            let deadline = taken
                .front()
                .map(|oldest: &Taken| tokio::time::Instant::from_std(oldest.since + HOLD));
            // A task is claimed only when a slot is free to start it: a worker that dies takes
            // no waiting task down with it.
            let permit = tokio::select! {
                biased;
                _ = common::shutdown::stopped(stop) => {
                    // Back to the queue at once, not when the connection closes after the
                    // drain: another worker can start them meanwhile.
                    let taken: Vec<&Delivery> = taken.iter().map(|t| &t.delivery).collect();
                    requeue(&taken).await?;
                    return Ok(());
                }
                delivery = deliveries.next() => {
                    self.take(&channel, amqp::delivered(delivery)?, &mut taken).await?;
                    continue;
                }
                _ = sleep_until(deadline) => {
                    if let Some(oldest) = taken.pop_front() {
                        self.hand_back(&channel, oldest).await?;
                    }
                    continue;
                }
                permit = slots.clone().acquire_owned(), if !taken.is_empty() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
            };
            self.start(
                &channel,
                permit,
                slots,
                &mut taken,
                &mut deliveries,
                running,
            )
            .await?;
        }
    }

    /// Parses a delivery into work waiting for a slot, or dead-letters it with the reason.
    async fn take(
        &self,
        channel: &Channel,
        delivery: Delivery,
        taken: &mut VecDeque<Taken>,
    ) -> anyhow::Result<()> {
        let work = parse(&delivery.data).and_then(|message| match message {
            WorkMessage::Api(invocation) => Ok(Work::Api(invocation)),
            WorkMessage::Task(message) => {
                let task_ids: VecDeque<String> = message.task_ids().collect();
                let reply = ReplyTo::of(channel, &delivery);
                if reply.is_some() && task_ids.len() > 1 {
                    return Err("a message awaiting a reply names one task only".into());
                }
                Ok(Work::Tasks { task_ids, reply })
            }
        });
        match work {
            Ok(work) => taken.push_back(Taken {
                delivery,
                work,
                since: Instant::now(),
            }),
            Err(reason) => {
                tracing::warn!(%reason, "dead-lettering an unusable task message");
                if amqp::dead_letter(channel, TASKS_QUEUE, &delivery, &reason).await? {
                    self.executor
                        .metrics
                        .dead_lettered
                        .with_label_values(&[TASKS_QUEUE])
                        .inc();
                }
            }
        }
        Ok(())
    }

    /// Starts the oldest work waiting, one unit per free slot, with whatever else the broker
    /// has delivered meanwhile: API calls at once, tasks once claimed in Postgres (one
    /// statement for all of them). A message is acked once all its work has started.
    async fn start(
        &self,
        channel: &Channel,
        permit: OwnedSemaphorePermit,
        slots: &Arc<Semaphore>,
        taken: &mut VecDeque<Taken>,
        deliveries: &mut lapin::Consumer,
        running: &mut JoinSet<()>,
    ) -> anyhow::Result<()> {
        let mut tasks = Vec::new();
        // The messages all of whose tasks are in `tasks`, in delivery order.
        let mut settled = Vec::new();
        let mut permit = Some(permit);
        while let Some(slot) = permit.take() {
            if taken.is_empty() {
                while let Some(delivery) = deliveries.next().now_or_never() {
                    self.take(channel, amqp::delivered(delivery)?, taken)
                        .await?;
                }
            }
            let Some(oldest) = taken.front_mut() else {
                break;
            };
            match &mut oldest.work {
                Work::Api(_) => {
                    if let Some(Taken {
                        delivery,
                        work: Work::Api(invocation),
                        ..
                    }) = taken.pop_front()
                    {
                        // A lost API call only fails, as its caller times out.
                        delivery.ack(BasicAckOptions::default()).await?;
                        let reply = ReplyTo::of(channel, &delivery);
                        let executor = self.executor.clone();
                        running
                            .spawn(async move { executor.run_api(invocation, reply, slot).await });
                    }
                }
                Work::Tasks { task_ids, reply } => {
                    if let Some(task_id) = task_ids.pop_front() {
                        tasks.push((task_id, reply.take(), slot));
                    }
                    if task_ids.is_empty()
                        && let Some(done) = taken.pop_front()
                    {
                        settled.push(done.delivery);
                    }
                }
            }
            permit = slots.clone().try_acquire_owned().ok();
        }
        if tasks.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = tasks.iter().map(|(id, _, _)| id.as_str()).collect();
        let claimed = match self.lifecycle.claim(&ids, self.lease).await {
            Ok(claimed) => claimed,
            Err(error) => {
                // Postgres is unavailable: give every message back (tasks already claimed
                // from them are not claimed twice) and slow down.
                tracing::warn!(tasks = tasks.len(), %error, "could not claim tasks; messages requeued");
                let unacked: Vec<&Delivery> = settled
                    .iter()
                    .chain(taken.iter().map(|t| &t.delivery))
                    .collect();
                requeue(&unacked).await?;
                taken.clear();
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(());
            }
        };
        let mut claimed: HashMap<String, Claimed> = claimed
            .into_iter()
            .map(|claimed| (claimed.task.id.to_string(), claimed))
            .collect();
        // Every claimed task starts before its message is acked: if the broker connection
        // fails meanwhile, the message comes back, and the claims already held make a second
        // delivery a no-op.
        for (task_id, reply, slot) in tasks {
            match claimed.remove(&task_id) {
                Some(claimed) => {
                    let executor = self.executor.clone();
                    running.spawn(async move { executor.run(claimed, reply, slot).await });
                }
                None => {
                    tracing::debug!(task_id = %task_id, "message for a task that is not claimable; dropped")
                }
            }
        }
        // One ack for them all: every message delivered before the last of them is settled
        // already (acked, dead-lettered, handed back, or among them), so `multiple` covers
        // exactly these.
        if let Some(last) = settled.last() {
            last.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
    }

    /// Gives the work of a message that waited too long for a slot back to the queue, for
    /// another worker: its tasks not started yet go out again in a new message (with the
    /// original's reply address), then the original is acked. If the broker does not take
    /// the new one, the original goes back whole instead (its tasks started meanwhile are
    /// not claimed twice).
    async fn hand_back(&self, channel: &Channel, oldest: Taken) -> anyhow::Result<()> {
        let Taken { delivery, work, .. } = oldest;
        let (body, tasks) = match work {
            Work::Api(_) => (Some(delivery.data.clone()), 0),
            Work::Tasks { task_ids, .. } => {
                let task_ids = Vec::from(task_ids);
                let body = TaskMessage::of(&task_ids)
                    .and_then(|message| serde_json::to_vec(&message).ok());
                (body, task_ids.len())
            }
        };
        let republished = match body {
            Some(body) => {
                amqp::republish(channel, TASKS_QUEUE, &body, delivery.properties.clone()).await
            }
            None => Ok(()),
        };
        match republished {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await?;
                self.executor.metrics.tasks_handed_back.inc_by(tasks as u64);
            }
            Err(error) => {
                tracing::warn!(%error, "could not hand a message back; it is requeued");
                requeue(&[&delivery]).await?;
            }
        }
        Ok(())
    }
}

/// How long a worker keeps a message whose work it has no free slot for before handing that
/// work back to the queue, so that a busy worker never sits on tasks an idle one could run.
/// Long enough that a worker busy with short tasks starts what it took without handing
/// anything back.
const HOLD: Duration = Duration::from_secs(1);

/// A message taken from the broker whose work has not all started yet.
struct Taken {
    delivery: Delivery,
    work: Work,
    since: Instant,
}

enum Work {
    Api(ApiInvocation),
    Tasks {
        /// Those not started yet, in order.
        task_ids: VecDeque<String>,
        /// The synchronous caller waiting for the task (direct execution).
        reply: Option<ReplyTo>,
    },
}

/// Gives messages back to the queue whole.
async fn requeue(deliveries: &[&Delivery]) -> Result<(), lapin::Error> {
    for delivery in deliveries {
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn parse(body: &[u8]) -> Result<WorkMessage, String> {
    if body.len() > MAX_API_MESSAGE_BYTES {
        return Err(format!(
            "message of {} bytes exceeds {MAX_API_MESSAGE_BYTES}",
            body.len()
        ));
    }
    let message: WorkMessage =
        serde_json::from_slice(body).map_err(|e| format!("not a task message: {e}"))?;
    match &message {
        WorkMessage::Task(task) => {
            if body.len() > MAX_TASK_MESSAGE_BYTES {
                return Err(format!(
                    "task message of {} bytes exceeds {MAX_TASK_MESSAGE_BYTES}",
                    body.len()
                ));
            }
            for task_id in std::iter::once(&task.task_id).chain(&task.more_task_ids) {
                task_id
                    .parse::<common::id::ObjectId>()
                    .map_err(|e| e.to_string())?;
            }
        }
        WorkMessage::Api(invocation) => {
            if invocation.api_request_id.is_empty() || invocation.api_request_id.len() > 64 {
                return Err("an API invocation needs an apiRequestId of 1 to 64 characters".into());
            }
        }
    }
    Ok(message)
}

/// Renews the leases of running attempts every third of the lease, until `stop`. After a
/// failed renewal (the database was unreachable) it tries again every half second, so the
/// leases are renewed as soon as the database is back, before the sweeper takes the
/// attempts for zombies.
pub async fn renew_leases(
    lifecycle: Lifecycle,
    running: crate::execute::Running,
    lease: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
        wait = match lifecycle.renew_leases(&running.snapshot(), lease).await {
            Ok(_) => lease / 3,
            Err(error) => {
                tracing::warn!(%error, "could not renew task leases");
                RENEW_RETRY.min(lease / 3)
            }
        };
    }
}

/// How soon a failed lease renewal is tried again.
const RENEW_RETRY: Duration = Duration::from_millis(500);
