//! Consumes the `tasks` and `tasks.sync` queues: claim (what has arrived together, in one
//! statement), ack, run. At most `concurrency` tasks run at once, from both queues together;
//! a task whose claim fails (canceled, already claimed, duplicate) is dropped; a message
//! nobody can understand is dead-lettered with the reason. A message may name several tasks:
//! they start as slots free up, and what has not started within [`HOLD`] goes back to the
//! queue.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::broker::{self, SYNC_QUEUE, TASKS_QUEUE};
use common::db::lifecycle::Claimed;
use common::db::{Lifecycle, StoreError};
use common::messages::{
    ApiInvocation, DirectTask, MAX_API_MESSAGE_BYTES, MAX_TASK_MESSAGE_BYTES, TaskMessage,
    WorkMessage,
};
use common::reconnect::Reconnect;
use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::runner::{ReplyTo, Runner};

pub struct Consumer {
    pub amqp_url: String,
    pub concurrency: usize,
    pub lease: Duration,
    /// How long running tasks may take to finish once the worker is told to stop.
    pub drain_grace: Duration,
    pub lifecycle: Lifecycle,
    pub runner: Arc<Runner>,
    /// How many of [`QUEUES`] are being consumed (for readiness).
    pub connected: Arc<AtomicUsize>,
}

/// The queues a worker consumes, each on a channel of its own (acks with `multiple` count on
/// the order of one channel's deliveries), with the reconnection's name in logs.
pub const QUEUES: [(&str, &str); 2] = [
    (TASKS_QUEUE, "broker (task consumer)"),
    (SYNC_QUEUE, "broker (synchronous request consumer)"),
];

/// A queue being consumed and the channel its deliveries came on.
struct Inlet {
    queue: &'static str,
    channel: Channel,
}

impl Consumer {
    /// Consumes every queue of [`QUEUES`] until `stop` turns true, then waits for the running
    /// tasks.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let [(tasks, tasks_name), (sync, sync_name)] = QUEUES;
        let running = tokio::join!(
            self.consume_queue(tasks, tasks_name, &slots, stop.clone()),
            self.consume_queue(sync, sync_name, &slots, stop),
        );
        self.drain([running.0, running.1]).await;
    }

    /// Consumes `queue` until `stop` turns true, reconnecting to the broker when it goes away;
    /// returns the executions it started that may still run.
    async fn consume_queue(
        &self,
        queue: &'static str,
        name: &'static str,
        slots: &Arc<Semaphore>,
        mut stop: watch::Receiver<bool>,
    ) -> JoinSet<()> {
        let mut running = JoinSet::new();
        let mut reconnect = Reconnect::new(name);
        while !*stop.borrow() {
            match self
                .consume(queue, slots, &mut running, &mut stop, &mut reconnect)
                .await
            {
                Ok(()) => break,
                Err(error) => {
                    self.runner
                        .metrics
                        .shared
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
        running
    }

    /// Lets running tasks finish within the grace period, then stops the rest and hands their
    /// tasks back (`new`, attempt fenced) so another worker runs them instead of the sweeper
    /// failing them as zombies.
    async fn drain<const N: usize>(&self, mut running: [JoinSet<()>; N]) {
        let finished = tokio::time::timeout(self.drain_grace, async {
            for set in &mut running {
                while set.join_next().await.is_some() {}
            }
        })
        .await;
        if finished.is_ok() {
            return;
        }
        let unfinished = self.runner.running.snapshot();
        // Dropping the executions kills their function processes.
        for set in &mut running {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
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
        queue: &'static str,
        slots: &Arc<Semaphore>,
        running: &mut JoinSet<()>,
        stop: &mut watch::Receiver<bool>,
        reconnect: &mut Reconnect,
    ) -> anyhow::Result<()> {
        let prefetch = self.concurrency.min(u16::MAX as usize) as u16;
        let (_connection, channel, mut deliveries) =
            broker::open_consumer(&self.amqp_url, queue, prefetch).await?;
        let inlet = Inlet { queue, channel };
        reconnect.connected();
        tracing::info!(queue, "consuming");
        self.connected.fetch_add(1, Ordering::Relaxed);
        let _consuming = Consuming(&self.connected);
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
                    self.take(&inlet, broker::delivered(delivery)?, &mut taken).await?;
                    continue;
                }
                _ = sleep_until(deadline) => {
                    if let Some(oldest) = taken.pop_front() {
                        self.hand_back(&inlet, oldest).await?;
                    }
                    continue;
                }
                permit = slots.clone().acquire_owned(), if !taken.is_empty() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
            };
            self.start(&inlet, permit, slots, &mut taken, &mut deliveries, running)
                .await?;
        }
    }

    /// Parses a delivery into work waiting for a slot, or dead-letters it with the reason.
    async fn take(
        &self,
        inlet: &Inlet,
        delivery: Delivery,
        taken: &mut VecDeque<Taken>,
    ) -> anyhow::Result<()> {
        let work = parse(&delivery.data).and_then(|message| match message {
            WorkMessage::Api(invocation) => Ok(Work::Api(invocation)),
            WorkMessage::Direct(direct) => Ok(Work::Direct {
                task: direct.execute,
                reply: ReplyTo::of(&inlet.channel, &delivery),
                redelivered: delivery.redelivered,
            }),
            WorkMessage::Task(message) => {
                let task_ids: VecDeque<String> = message.task_ids().collect();
                let reply = ReplyTo::of(&inlet.channel, &delivery);
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
                if broker::dead_letter(&inlet.channel, inlet.queue, &delivery, &reason).await? {
                    self.runner
                        .metrics
                        .shared
                        .dead_lettered
                        .with_label_values(&[inlet.queue])
                        .inc();
                }
            }
        }
        Ok(())
    }

    /// Starts the oldest work waiting, one unit per free slot, with whatever else the broker
    /// has delivered meanwhile: API calls at once, tasks once claimed in Postgres (one
    /// statement for all of them, and one for each direct execution's, which is stored as it
    /// is claimed). A message is acked once all its work has started.
    async fn start(
        &self,
        inlet: &Inlet,
        permit: OwnedSemaphorePermit,
        slots: &Arc<Semaphore>,
        taken: &mut VecDeque<Taken>,
        deliveries: &mut lapin::Consumer,
        running: &mut JoinSet<()>,
    ) -> anyhow::Result<()> {
        let mut tasks = Vec::new();
        let mut direct = Vec::new();
        // The messages all of whose tasks are in `tasks` or `direct`, in delivery order.
        let mut settled = Vec::new();
        let mut permit = Some(permit);
        while let Some(slot) = permit.take() {
            if taken.is_empty() {
                while let Some(delivery) = deliveries.next().now_or_never() {
                    self.take(inlet, broker::delivered(delivery)?, taken)
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
                        let reply = ReplyTo::of(&inlet.channel, &delivery);
                        let runner = self.runner.clone();
                        running.spawn(async move { runner.run_api(invocation, reply, slot).await });
                    }
                }
                Work::Direct { .. } => {
                    if let Some(Taken {
                        delivery,
                        work:
                            Work::Direct {
                                task,
                                reply,
                                redelivered,
                            },
                        ..
                    }) = taken.pop_front()
                    {
                        direct.push((task, reply, redelivered, slot));
                        settled.push(delivery);
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
        if settled.is_empty() && tasks.is_empty() {
            return Ok(());
        }
        // Every claimed task starts before its message is acked: if the broker connection
        // fails meanwhile, the message comes back, and the claims already held make a second
        // delivery a no-op.
        let mut unavailable = self.start_tasks(tasks, running).await.err();
        for (task, reply, redelivered, slot) in direct {
            match self.lifecycle.claim_direct(&task, self.lease).await {
                Ok(Some(claimed)) => {
                    let runner = self.runner.clone();
                    running.spawn(async move { runner.run(claimed, reply, slot).await });
                }
                // Its caller reads what became of the task. Not after a redelivery: the task
                // may be running from the first delivery, whose worker is to answer.
                Ok(None) => {
                    if let Some(reply) = reply.filter(|_| !redelivered) {
                        reply.send_task(&task.task_id.to_string(), None).await;
                    }
                }
                Err(error) => unavailable = Some(error),
            }
        }
        if let Some(error) = unavailable {
            // Postgres is unavailable: give every message back (tasks already claimed from
            // them are not claimed twice) and slow down.
            tracing::warn!(%error, "could not claim tasks; messages requeued");
            let unacked: Vec<&Delivery> = settled
                .iter()
                .chain(taken.iter().map(|t| &t.delivery))
                .collect();
            requeue(&unacked).await?;
            taken.clear();
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok(());
        }
        // One ack for them all: every message delivered before the last of them is settled
        // already (acked, dead-lettered, handed back, or among them), so `multiple` covers
        // exactly these.
        if let Some(last) = settled.last() {
            last.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
    }

    /// Claims `tasks` (one statement) and starts those claimed.
    async fn start_tasks(
        &self,
        tasks: Vec<(String, Option<ReplyTo>, OwnedSemaphorePermit)>,
        running: &mut JoinSet<()>,
    ) -> Result<(), StoreError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = tasks.iter().map(|(id, _, _)| id.as_str()).collect();
        let mut claimed: HashMap<String, Claimed> = self
            .lifecycle
            .claim(&ids, self.lease)
            .await?
            .into_iter()
            .map(|claimed| (claimed.task.id.to_string(), claimed))
            .collect();
        for (task_id, reply, slot) in tasks {
            match claimed.remove(&task_id) {
                Some(claimed) => {
                    let runner = self.runner.clone();
                    running.spawn(async move { runner.run(claimed, reply, slot).await });
                }
                None => {
                    tracing::debug!(task_id = %task_id, "message for a task that is not claimable; dropped")
                }
            }
        }
        Ok(())
    }

    /// Gives the work of a message that waited too long for a slot back to the queue, for
    /// another worker: its tasks not started yet go out again in a new message (with the
    /// original's reply address), then the original is acked. If the broker does not take
    /// the new one, the original goes back whole instead (its tasks started meanwhile are
    /// not claimed twice).
    async fn hand_back(&self, inlet: &Inlet, oldest: Taken) -> anyhow::Result<()> {
        let Taken {
            delivery,
            work,
            since,
        } = oldest;
        // A synchronous request expires when its caller stops waiting: it goes back with what
        // is left of that wait, and not at all once nothing is.
        let mut properties = delivery.properties.clone();
        let expiration_left = expiration_left(&properties, since.elapsed());
        if let Some(left) = expiration_left {
            properties = properties.with_expiration(left.to_string().as_str().into());
        }
        let (body, tasks) = match work {
            Work::Api(_) | Work::Direct { .. } => (
                Some(delivery.data.clone()).filter(|_| expiration_left != Some(0)),
                0,
            ),
            Work::Tasks { task_ids, .. } => {
                let task_ids = Vec::from(task_ids);
                let body = TaskMessage::of(&task_ids)
                    .and_then(|message| serde_json::to_vec(&message).ok());
                (body, task_ids.len())
            }
        };
        let republished = match body {
            Some(body) => broker::republish(&inlet.channel, inlet.queue, &body, properties).await,
            None => Ok(()),
        };
        match republished {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await?;
                self.runner.metrics.tasks_handed_back.inc_by(tasks as u64);
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
    Direct {
        task: DirectTask,
        /// The synchronous caller waiting for it.
        reply: Option<ReplyTo>,
        redelivered: bool,
    },
    Tasks {
        /// Those not started yet, in order.
        task_ids: VecDeque<String>,
        /// The synchronous caller waiting for the task (direct execution).
        reply: Option<ReplyTo>,
    },
}

/// Counts a queue as consumed while it lives.
struct Consuming<'a>(&'a AtomicUsize);

impl Drop for Consuming<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What is left of a message's expiry, in milliseconds, once it was held for `held`.
fn expiration_left(properties: &lapin::BasicProperties, held: Duration) -> Option<u128> {
    let expiration: u128 = properties.expiration().as_ref()?.as_str().parse().ok()?;
    Some(expiration.saturating_sub(held.as_millis()))
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
        WorkMessage::Direct(direct) => {
            common::domain::FunctionName::parse(&direct.execute.function_name)?;
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
    running: crate::runner::RunningAttempts,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_back_request_keeps_only_what_is_left_of_its_expiry() {
        let with =
            |expiration: &str| lapin::BasicProperties::default().with_expiration(expiration.into());
        let held = Duration::from_millis(1500);
        assert_eq!(expiration_left(&with("8000"), held), Some(6500));
        assert_eq!(expiration_left(&with("1000"), held), Some(0));
        assert_eq!(expiration_left(&with("soon"), held), None);
        assert_eq!(
            expiration_left(&lapin::BasicProperties::default(), held),
            None
        );
    }
}
