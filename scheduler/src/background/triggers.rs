//! Platform events → tasks. Consumes the `tasks.events` queue (bound to every event on the
//! `platform.events` exchange) and creates one task per matching trigger. Events nobody can
//! understand, and events whose tasks could never be stored, are dead-lettered with the
//! reason; none of them stops the consumer or waits in the queue for ever.

use std::time::Duration;

use common::broker::{self, EVENTS_QUEUE};
use common::db::StoreError;
use common::messages::MAX_EVENT_BYTES;
use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use serde_json::Value;
use std::sync::Arc;

use common::metrics::Metrics;
use common::reconnect::Reconnect;
use tokio::sync::watch;

use crate::db::Triggers;
use crate::db::triggers::{Event, EventOutcome};
use crate::dispatch::DispatchHandle;

/// Most events stored in one transaction (the consumer's prefetch).
const BATCH: usize = 64;

pub struct EventConsumer {
    pub amqp_url: String,
    pub triggers: Triggers,
    pub metrics: Arc<Metrics>,
    /// Woken for the tasks an event created.
    pub dispatch: DispatchHandle,
}

impl EventConsumer {
    /// Consumes until `stop`, reconnecting with backoff when the broker goes away.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut reconnect = Reconnect::new("broker (event consumer)");
        while !*stop.borrow() {
            match self.consume(&mut stop, &mut reconnect).await {
                Ok(()) => return,
                Err(error) => {
                    self.metrics
                        .broker_reconnects
                        .with_label_values(&["events"])
                        .inc();
                    let wait = reconnect.failed(&error);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = common::shutdown::stopped(&mut stop) => return,
                    }
                }
            }
        }
    }

    async fn consume(
        &self,
        stop: &mut watch::Receiver<bool>,
        reconnect: &mut Reconnect,
    ) -> anyhow::Result<()> {
        let (_connection, channel, mut deliveries) =
            broker::open_consumer(&self.amqp_url, EVENTS_QUEUE, BATCH as u16).await?;
        reconnect.connected();
        tracing::info!("consuming platform events");
        loop {
            let delivery = tokio::select! {
                delivery = deliveries.next() => delivery,
                _ = common::shutdown::stopped(stop) => return Ok(()),
            };
            // Whatever else has already arrived is stored with it in one transaction.
            let mut batch = vec![broker::delivered(delivery)?];
            while batch.len() < BATCH {
                match deliveries.next().now_or_never() {
                    Some(delivery) => batch.push(broker::delivered(delivery)?),
                    None => break,
                }
            }
            let mut received = Vec::with_capacity(batch.len());
            let mut events = Vec::with_capacity(batch.len());
            for delivery in batch {
                match parse(&delivery.data) {
                    Ok(event) => {
                        received.push(delivery);
                        events.push(event);
                    }
                    Err(reason) => {
                        self.dead_letter(&channel, &delivery, None, &reason, "malformed")
                            .await?
                    }
                }
            }
            if events.is_empty() {
                continue;
            }
            match self.triggers.create_tasks_for(&events).await {
                Ok(outcomes) => self.settle(&channel, &received, &events, outcomes).await?,
                // One event the database refuses must not hold back the others: store
                // them one by one.
                Err(error) if events.len() > 1 => {
                    tracing::warn!(events = events.len(), %error, "could not store the tasks of a batch of events; storing them one by one");
                    for (delivery, event) in received.iter().zip(&events) {
                        let alone = std::slice::from_ref(event);
                        match self.triggers.create_tasks_for(alone).await {
                            Ok(outcomes) => {
                                let delivery = std::slice::from_ref(delivery);
                                self.settle(&channel, delivery, alone, outcomes).await?
                            }
                            Err(error) => self.refused(&channel, delivery, event, &error).await?,
                        }
                    }
                }
                Err(error) => {
                    for (delivery, event) in received.iter().zip(&events) {
                        self.refused(&channel, delivery, event, &error).await?;
                    }
                }
            }
        }
    }

    /// Settles events whose outcome is known: dead-letters those that can never become
    /// tasks, then acks the others.
    async fn settle(
        &self,
        channel: &Channel,
        deliveries: &[Delivery],
        events: &[Event],
        outcomes: Vec<EventOutcome>,
    ) -> anyhow::Result<()> {
        let mut last_stored = None;
        for ((delivery, event), outcome) in deliveries.iter().zip(events).zip(outcomes) {
            match outcome {
                EventOutcome::Stored { matched, created } => {
                    self.count_stored(event, matched, created);
                    last_stored = Some(delivery);
                }
                EventOutcome::Unusable(reason) => {
                    self.dead_letter(channel, delivery, Some(event), &reason, "unusable")
                        .await?
                }
            }
        }
        // One ack for the stored ones: every earlier delivery of this channel is settled
        // already (stored in an earlier batch, dead-lettered or requeued), so `multiple`
        // covers exactly these.
        if let Some(last) = last_stored {
            last.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
    }

    /// Counts an event whose tasks are stored, and tells the dispatcher about them.
    fn count_stored(&self, event: &Event, matched: usize, created: u64) {
        if matched == 0 {
            tracing::debug!(event_id = %event.id, event_type = %event.event_type, "no trigger for this event");
            self.metrics
                .events_consumed
                .with_label_values(&["unmatched"])
                .inc();
            return;
        }
        tracing::info!(event_id = %event.id, event_type = %event.event_type, matched, created, "event turned into tasks");
        self.metrics
            .events_consumed
            .with_label_values(&["matched"])
            .inc();
        self.metrics
            .tasks_created
            .with_label_values(&["event"])
            .inc_by(created);
        self.dispatch.wake();
    }

    /// Moves an event that can never become tasks to the dead-letter queue with `reason`,
    /// counted under `outcome`.
    async fn dead_letter(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        event: Option<&Event>,
        reason: &str,
        outcome: &str,
    ) -> anyhow::Result<()> {
        let event_id = event.map(|event| event.id.as_str());
        tracing::warn!(event_id, %reason, "dead-lettering an event");
        if broker::dead_letter(channel, EVENTS_QUEUE, delivery, reason).await? {
            self.metrics
                .dead_lettered
                .with_label_values(&[EVENTS_QUEUE])
                .inc();
            self.metrics
                .events_consumed
                .with_label_values(&[outcome])
                .inc();
        }
        Ok(())
    }

    /// Settles an event whose tasks the database refused. When the event is at fault (a
    /// value the database cannot hold), it would be refused for ever: it is dead-lettered.
    /// Otherwise (the database is unavailable) it is given back, and the consumer slows down.
    async fn refused(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        event: &Event,
        error: &StoreError,
    ) -> anyhow::Result<()> {
        if error.is_data_exception() {
            let reason = format!("the database refused the event's tasks: {error}");
            return self
                .dead_letter(channel, delivery, Some(event), &reason, "unusable")
                .await;
        }
        tracing::warn!(event_id = %event.id, %error, "could not store the tasks of an event; requeued");
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
        self.metrics
            .events_consumed
            .with_label_values(&["requeued"])
            .inc();
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }
}

fn parse(body: &[u8]) -> Result<Event, String> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(format!(
            "event of {} bytes exceeds {MAX_EVENT_BYTES}",
            body.len()
        ));
    }
    let envelope: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(fields) = &envelope else {
        return Err("the event is not a JSON object".into());
    };
    let id = match fields.get("id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 128 => id.clone(),
        Some(Value::Number(id)) => id.to_string(),
        _ => return Err("the event has no `id` (a string of 1 to 128 characters)".into()),
    };
    let event_type = match fields.get("type") {
        Some(Value::String(kind)) if !kind.is_empty() && kind.len() <= 256 => kind.clone(),
        _ => return Err("the event has no `type` (a string of 1 to 256 characters)".into()),
    };
    Ok(Event {
        id,
        event_type,
        envelope,
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn validates_envelopes() {
        let event = parse(
            br#"{"id":"e1","type":"user_deleted","content":{"id":"u"},"creation_timestamp":1}"#,
        )
        .unwrap();
        assert_eq!(
            (event.id.as_str(), event.event_type.as_str()),
            ("e1", "user_deleted")
        );
        assert_eq!(parse(br#"{"id":7,"type":"x"}"#).unwrap().id, "7");
        for bad in [
            &b"not json"[..],
            b"[1]",
            br#"{"type":"x"}"#,
            br#"{"id":"e"}"#,
            br#"{"id":"","type":"x"}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
