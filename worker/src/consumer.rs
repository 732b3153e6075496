//! Consumes the `tasks` queue: claim (what has arrived together, in one statement), ack, run.
//! At most `concurrency` tasks run at once; a message whose claim fails (canceled, already
//! claimed, duplicate) is acked and dropped; a message nobody can understand is dead-lettered
//! with the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::amqp::{self, MAX_API_MESSAGE_BYTES, MAX_TASK_MESSAGE_BYTES, TASKS_QUEUE, WorkMessage};
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
        loop {
            // Take a message only when a slot is free, so prefetched messages wait in the
            // broker's accounting instead of piling up here (and a task is claimed only when
            // it can start: a worker that dies takes no waiting task down with it).
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
                _ = common::shutdown::stopped(stop) => return Ok(()),
            };
            let delivery = tokio::select! {
                delivery = deliveries.next() => delivery,
                _ = common::shutdown::stopped(stop) => return Ok(()),
            };
            let mut batch = vec![(amqp::delivered(delivery)?, permit)];
            // Whatever else has already arrived, while slots are free, is claimed with it in
            // one statement.
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                match deliveries.next().now_or_never() {
                    Some(delivery) => batch.push((amqp::delivered(delivery)?, permit)),
                    None => break,
                }
            }
            while running.try_join_next().is_some() {}
            self.accept(&channel, batch, running).await?;
        }
    }

    /// Acks each message once its work is secured: tasks claimed in Postgres (one statement
    /// for the whole batch), or an API call (which a lost message only fails, as its caller
    /// times out), and starts the work.
    async fn accept(
        &self,
        channel: &Channel,
        batch: Vec<(Delivery, OwnedSemaphorePermit)>,
        running: &mut JoinSet<()>,
    ) -> anyhow::Result<()> {
        let mut tasks = Vec::with_capacity(batch.len());
        for (delivery, permit) in batch {
            match parse(&delivery.data) {
                Ok(WorkMessage::Task(message)) => tasks.push((message.task_id, delivery, permit)),
                Ok(WorkMessage::Api(invocation)) => {
                    delivery.ack(BasicAckOptions::default()).await?;
                    let reply = ReplyTo::of(channel, &delivery);
                    let executor = self.executor.clone();
                    running.spawn(async move { executor.run_api(invocation, reply, permit).await });
                }
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
        }
        if tasks.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = tasks.iter().map(|(id, _, _)| id.as_str()).collect();
        let claimed = match self.lifecycle.claim(&ids, self.lease).await {
            Ok(claimed) => claimed,
            Err(error) => {
                // Postgres is unavailable: give the messages back and slow down.
                tracing::warn!(tasks = tasks.len(), %error, "could not claim tasks; messages requeued");
                for (_, delivery, _) in &tasks {
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await?;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(());
            }
        };
        let mut claimed: HashMap<String, Claimed> = claimed
            .into_iter()
            .map(|claimed| (claimed.task.id.to_string(), claimed))
            .collect();
        // Every claimed task starts before the messages are acked: if the broker connection
        // fails meanwhile, the messages come back, and the claims already held make a second
        // delivery a no-op.
        let mut last = None;
        for (task_id, delivery, permit) in tasks {
            match claimed.remove(&task_id) {
                Some(claimed) => {
                    let reply = ReplyTo::of(channel, &delivery);
                    let executor = self.executor.clone();
                    running.spawn(async move { executor.run(claimed, reply, permit).await });
                }
                None => {
                    tracing::debug!(task_id = %task_id, "message for a task that is not claimable; dropped")
                }
            }
            last = Some(delivery);
        }
        // One ack for the batch: every earlier message of this channel has been settled
        // already (acked, dead-lettered or requeued), so `multiple` covers exactly these.
        if let Some(last) = last {
            last.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
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
            task.task_id
                .parse::<common::id::ObjectId>()
                .map_err(|e| e.to_string())?;
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
