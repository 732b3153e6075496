//! RabbitMQ: connection, the topology both binaries declare, and the messages they exchange.

use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};

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
/// Largest platform event accepted.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Largest task message accepted; real ones are a few dozen bytes.
pub const MAX_TASK_MESSAGE_BYTES: usize = 4096;

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

/// The body of a message on the `tasks` queue: just enough to claim its tasks in Postgres,
/// which holds everything else. Like [`ApiInvocation`], it ignores fields it does not know,
/// so a newer scheduler can add one without older workers dead-lettering its messages in
/// the middle of a rolling upgrade.
///
/// Under a backlog one message names several due tasks (the broker's cost is per message,
/// whatever it holds), in the order they are to start. The first stays in `taskId`, so a
/// worker of a version before `moreTaskIds` still runs that one; the dispatcher publishes
/// the others again after its redispatch timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskMessage {
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_task_ids: Vec<String>,
}

impl TaskMessage {
    /// The message naming `task_ids` (at least one), in that order.
    pub fn of(task_ids: &[String]) -> Option<TaskMessage> {
        let (first, more) = task_ids.split_first()?;
        Some(TaskMessage {
            task_id: first.clone(),
            more_task_ids: more.to_vec(),
        })
    }

    /// Every task the message names, in order.
    pub fn task_ids(self) -> impl Iterator<Item = String> {
        std::iter::once(self.task_id).chain(self.more_task_ids)
    }
}

/// Largest API-function invocation message: a 6 MB request plus its envelope.
pub const MAX_API_MESSAGE_BYTES: usize = 9 * 1024 * 1024;

/// An API-function call to run now: the Lambda event (API Gateway v2.0 request) travels in
/// the message, and the outcome goes back to the caller's reply queue; no task is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiInvocation {
    pub api_request_id: String,
    pub function_name: String,
    pub event: serde_json::Value,
    /// The version of the function the scheduler authorized the call against. A worker that
    /// has loaded that version runs it without reading the definition again; without it (a
    /// message from an older scheduler), the worker reads the current definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_version: Option<i64>,
}

/// A direct execution: the task travels in the message, and the worker that takes it stores
/// it already claimed. One statement then does what the API's insert and the worker's claim
/// did, on the caller's time; the task exists from the moment it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectExecution {
    pub execute: DirectTask,
}

/// The task of a direct execution, as the API received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectTask {
    /// Chosen by the API, which names it in its errors, and the key that keeps a task from
    /// being stored (so run) twice.
    pub task_id: crate::id::ObjectId,
    pub function_name: String,
    pub data: serde_json::Value,
    /// When the API received the request: the task's start and creation time.
    pub requested_at: chrono::DateTime<chrono::Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_application_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_user_id: Option<String>,
}

/// Everything a worker may find on the `tasks` and `tasks.sync` queues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkMessage {
    Task(TaskMessage),
    Api(ApiInvocation),
    Direct(DirectExecution),
}

/// A worker's answer to an API-function invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ApiOutcome {
    /// The function's return value, unvalidated.
    Returned(serde_json::Value),
    Failed(crate::domain::TaskError),
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_calls_carry_the_function_version_they_were_authorized_against() {
        let call = WorkMessage::Api(ApiInvocation {
            api_request_id: "r1".into(),
            function_name: "f".into(),
            event: serde_json::json!({}),
            function_version: Some(7),
        });
        let text = serde_json::to_string(&call).unwrap();
        assert!(text.contains(r#""functionVersion":7"#), "{text}");
        assert_eq!(serde_json::from_str::<WorkMessage>(&text).unwrap(), call);
    }

    #[test]
    fn a_message_of_one_task_is_what_every_worker_version_reads() {
        let ids = ["t1".to_string(), "t2".into(), "t3".into()];
        let one = serde_json::to_string(&TaskMessage::of(&ids[..1]).unwrap()).unwrap();
        assert_eq!(one, r#"{"taskId":"t1"}"#);
        let three = serde_json::to_string(&TaskMessage::of(&ids).unwrap()).unwrap();
        assert_eq!(three, r#"{"taskId":"t1","moreTaskIds":["t2","t3"]}"#);
        let read: TaskMessage = serde_json::from_str(&three).unwrap();
        assert_eq!(read.task_ids().collect::<Vec<_>>(), ids);
        assert_eq!(TaskMessage::of(&[]), None);
    }

    #[test]
    fn work_messages_with_fields_added_by_a_newer_version_are_still_understood() {
        let task: WorkMessage =
            serde_json::from_str(r#"{"taskId": "t1", "functionVersion": 3}"#).unwrap();
        assert_eq!(
            task,
            WorkMessage::Task(TaskMessage {
                task_id: "t1".into(),
                more_task_ids: vec![]
            })
        );
        let call: WorkMessage = serde_json::from_str(
            r#"{"apiRequestId": "r1", "functionName": "f", "event": {}, "region": "eu"}"#,
        )
        .unwrap();
        assert!(
            matches!(call, WorkMessage::Api(ApiInvocation { ref api_request_id, .. }) if api_request_id == "r1")
        );
        // An API call from a scheduler older than the function version in the message.
        let call: WorkMessage =
            serde_json::from_str(r#"{"apiRequestId": "r1", "functionName": "f", "event": {}}"#)
                .unwrap();
        assert!(matches!(
            call,
            WorkMessage::Api(ApiInvocation {
                function_version: None,
                ..
            })
        ));
        // What either kind requires is still required.
        assert!(
            serde_json::from_str::<WorkMessage>(r#"{"functionName": "f", "event": {}}"#).is_err()
        );
    }
}
