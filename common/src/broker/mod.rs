//! RabbitMQ: the connection, the topology both binaries declare, and publishing with
//! confirms. The messages that travel through it are in `crate::messages`.

use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

/// Notifications that a task is due, consumed by workers.
pub const TASKS_QUEUE: &str = "tasks";
/// Synchronous requests (direct executions and API-function calls), consumed by workers like
/// `tasks`. A classic queue, unlike the others: a quorum queue delivers a message only once it
/// is on disk, which cost every synchronous call about 0.4 ms, and buys such a request
/// nothing. Its caller waits on a reply channel that does not survive a broker restart
/// either, and a direct execution's task is in Postgres whatever becomes of its message. The
/// queue is durable and its messages persistent all the same.
pub const SYNC_QUEUE: &str = "tasks.sync";
/// Messages no consumer could understand, with the reason in the `x-reason` header.
pub const DEAD_LETTER_QUEUE: &str = "tasks.dead-letter";
/// Topic exchange of platform events (`task_failed` included); routing key = event type.
pub const EVENTS_EXCHANGE: &str = "platform.events";
/// The scheduler's queue of platform events, bound to every routing key of the exchange.
pub const EVENTS_QUEUE: &str = "tasks.events";
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker refused a publish (nack)")]
    Nacked,
    #[error("the broker did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("the broker closed the consumer")]
    ConsumerClosed,
    #[error("broker address: {0}")]
    Address(String),
}

/// What a consumer stream yielded: the next delivery, or why there is none.
pub fn delivered(
    next: Option<Result<lapin::message::Delivery, lapin::Error>>,
) -> Result<lapin::message::Delivery, AmqpError> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(error)) => Err(error.into()),
        None => Err(AmqpError::ConsumerClosed),
    }
}

/// Longest wait for the broker to open a channel or to confirm a batch of publishes. A
/// confirm can stay pending for ever on a connection the broker closed, and a publisher that
/// waits for it stalls everything behind it (the dispatcher, the outbox relay).
pub const BROKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn connect(url: &str) -> Result<Connection, AmqpError> {
    let mut uri: lapin::uri::AMQPUri = url.parse().map_err(AmqpError::Address)?;
    // The client keeps two buffers of 32 frames per connection, written in full: at the
    // broker's usual 128 KiB frames, 8 MiB of memory for each of a process's connections.
    // Messages here are small; larger ones travel in more frames.
    uri.query.frame_max = uri.query.frame_max.or(Some(FRAME_MAX));
    Ok(Connection::connect_uri(uri, ConnectionProperties::default()).await?)
}

/// Largest frame this service proposes to the broker, unless the URL asks for another.
const FRAME_MAX: u32 = 16 * 1024;

/// A consumer of `queue` on a fresh connection in confirm mode (so dead-lettering can wait
/// for the broker), with the topology declared and at most `prefetch` unacked messages. The
/// connection must be kept as long as the consumer is used.
pub async fn open_consumer(
    url: &str,
    queue: &str,
    prefetch: u16,
) -> Result<(Connection, Channel, lapin::Consumer), AmqpError> {
    let connection = connect(url).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    declare_topology(&channel).await?;
    channel
        .basic_qos(prefetch, lapin::options::BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            lapin::options::BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel, consumer))
}

/// Durable quorum queues survive a broker restart and replicate where there are several nodes.
fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    arguments
}

/// Declares the queues and the exchange; idempotent, so every process declares them at start.
pub async fn declare_topology(channel: &Channel) -> Result<(), AmqpError> {
    for queue in [TASKS_QUEUE, DEAD_LETTER_QUEUE] {
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), quorum())
            .await?;
    }
    channel
        .queue_declare(
            SYNC_QUEUE.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            EVENTS_QUEUE.into(),
            QueueDeclareOptions::durable(),
            quorum(),
        )
        .await?;
    channel
        .queue_bind(
            EVENTS_QUEUE.into(),
            EVENTS_EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

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
