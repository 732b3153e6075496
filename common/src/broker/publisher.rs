//! Publishing: persistent messages whose broker confirms are awaited, on a channel that is
//! re-opened after it broke; and giving back or dead-lettering what a consumer took.

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};

use super::{AmqpError, BROKER_TIMEOUT, DEAD_LETTER_QUEUE, connect, declare_topology};

/// Persistent JSON message properties.
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// Moves a delivery nobody can use to the dead-letter queue with the reason, then acks it.
/// When the dead-letter queue does not take it, gives it back to its queue instead. Returns
/// whether it was dead-lettered.
pub async fn dead_letter(
    channel: &Channel,
    source_queue: &str,
    delivery: &lapin::message::Delivery,
    reason: &str,
) -> Result<bool, AmqpError> {
    match publish_dead_letter(channel, source_queue, &delivery.data, reason).await {
        Ok(()) => {
            delivery
                .ack(lapin::options::BasicAckOptions::default())
                .await?;
            Ok(true)
        }
        Err(error) => {
            tracing::error!(%error, queue = source_queue, "could not dead-letter a message; it is requeued");
            delivery
                .nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?;
            Ok(false)
        }
    }
}

/// Publishes the evidence of an unusable message to the dead-letter queue, waiting for the
/// broker's confirm when the channel is in confirm mode.
async fn publish_dead_letter(
    channel: &Channel,
    source_queue: &str,
    body: &[u8],
    reason: &str,
) -> Result<(), AmqpError> {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-reason".into(),
        AMQPValue::LongString(LongString::from(reason)),
    );
    headers.insert(
        "x-source-queue".into(),
        AMQPValue::LongString(LongString::from(source_queue)),
    );
    // Keep the evidence but never let a huge poison message fill the dead-letter queue.
    let kept = &body[..body.len().min(64 * 1024)];
    let properties = BasicProperties::default().with_headers(headers);
    republish(channel, DEAD_LETTER_QUEUE, kept, properties).await
}

/// Publishes a persistent message to `queue` with `properties` (a consumer giving a message
/// back, as it is or in part), waiting for the broker's confirm when the channel is in
/// confirm mode.
pub async fn republish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), AmqpError> {
    let published = async {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(2),
            )
            .await?
            .await
    };
    // Bounded, as a confirm may never come on a connection the broker closed: the caller
    // then gives the message back and reconnects instead of waiting for ever.
    let confirm = tokio::time::timeout(BROKER_TIMEOUT, published)
        .await
        .map_err(|_| AmqpError::TimedOut(BROKER_TIMEOUT))??;
    if confirm.is_nack() {
        return Err(AmqpError::Nacked);
    }
    Ok(())
}

/// Messages handed to the broker whose confirms [`Publisher::confirmed`] waits for.
pub struct Unconfirmed(Vec<lapin::PublisherConfirm>);

/// A publishing channel in confirm mode that is re-opened (connection, topology and all) on
/// first use after it broke, so a broker restart costs failed publishes, never a crash.
pub struct Publisher {
    url: String,
    state: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    pub fn new(url: impl Into<String>) -> Self {
        Publisher {
            url: url.into(),
            state: tokio::sync::Mutex::new(None),
        }
    }

    /// The current channel, connecting first if needed; an error if that takes longer than
    /// [`BROKER_TIMEOUT`].
    pub async fn channel(&self) -> Result<Channel, AmqpError> {
        tokio::time::timeout(BROKER_TIMEOUT, self.open_channel())
            .await
            .map_err(|_| AmqpError::TimedOut(BROKER_TIMEOUT))?
    }

    async fn open_channel(&self) -> Result<Channel, AmqpError> {
        let mut state = self.state.lock().await;
        if let Some((connection, channel)) = state.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let connection = connect(&self.url).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await?;
        declare_topology(&channel).await?;
        tracing::info!("connected to the broker");
        *state = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Publishes persistent JSON messages and waits until the broker confirmed all of them.
    /// On any failure the connection is dropped, so the next publish starts on a fresh one
    /// rather than on a channel that may never answer.
    pub async fn publish_all(
        &self,
        exchange: &str,
        messages: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<(), AmqpError> {
        let sent = self.send_all(exchange, messages).await?;
        self.confirmed(sent).await
    }

    /// Hands persistent JSON messages to the broker, in order, without waiting for its
    /// confirms: [`Self::confirmed`] does, so a caller can go on meanwhile. At most
    /// [`BROKER_TIMEOUT`]; on failure the connection is dropped.
    pub async fn send_all(
        &self,
        exchange: &str,
        messages: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Unconfirmed, AmqpError> {
        let channel = self.channel().await?;
        let sent = tokio::time::timeout(BROKER_TIMEOUT, Self::send(&channel, exchange, messages))
            .await
            .unwrap_or(Err(AmqpError::TimedOut(BROKER_TIMEOUT)));
        if sent.is_err() {
            self.forget_channel().await;
        }
        sent
    }

    /// Waits until the broker confirmed every message of `sent`, at most [`BROKER_TIMEOUT`]
    /// (a confirm may never come on a connection the broker closed); on failure the
    /// connection is dropped.
    pub async fn confirmed(&self, sent: Unconfirmed) -> Result<(), AmqpError> {
        let confirmed = tokio::time::timeout(BROKER_TIMEOUT, async {
            for confirm in sent.0 {
                if confirm.await?.is_nack() {
                    return Err(AmqpError::Nacked);
                }
            }
            Ok(())
        })
        .await
        .unwrap_or(Err(AmqpError::TimedOut(BROKER_TIMEOUT)));
        if confirmed.is_err() {
            self.forget_channel().await;
        }
        confirmed
    }

    async fn forget_channel(&self) {
        *self.state.lock().await = None;
    }

    async fn send(
        channel: &Channel,
        exchange: &str,
        messages: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Unconfirmed, AmqpError> {
        let mut confirms = Vec::new();
        for (routing_key, body) in messages {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    persistent_json(),
                )
                .await?;
            confirms.push(confirm);
        }
        Ok(Unconfirmed(confirms))
    }

    /// How many messages wait in `queue`, not yet delivered to any consumer. Like a publish,
    /// drops the connection on failure.
    pub async fn ready_messages(&self, queue: &str) -> Result<u32, AmqpError> {
        let channel = self.channel().await?;
        let declared = tokio::time::timeout(
            BROKER_TIMEOUT,
            channel.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await;
        let error = match declared {
            Ok(Ok(queue)) => return Ok(queue.message_count()),
            Ok(Err(error)) => AmqpError::from(error),
            Err(_) => AmqpError::TimedOut(BROKER_TIMEOUT),
        };
        self.forget_channel().await;
        Err(error)
    }

    /// Whether the broker connection is up (for readiness).
    pub async fn is_connected(&self) -> bool {
        self.channel().await.is_ok()
    }
}
