//! RabbitMQ: the connection, the topology both binaries declare, and publishing with
//! confirms. The messages that travel through it are in `crate::messages`.

mod publisher;
mod topology;

use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

pub use publisher::{Publisher, Unconfirmed, dead_letter, persistent_json, republish};
pub use topology::{
    DEAD_LETTER_QUEUE, EVENTS_EXCHANGE, EVENTS_QUEUE, SYNC_QUEUE, TASKS_QUEUE, declare_topology,
};

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
