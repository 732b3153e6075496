//! The queues and the exchange, declared by every process at start.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::AmqpError;

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
