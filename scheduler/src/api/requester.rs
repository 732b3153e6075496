//! Request/reply over RabbitMQ for synchronous executions: the request goes to the
//! `tasks.sync` queue, which every worker consumes besides `tasks`, with `reply_to` set to
//! RabbitMQ's direct reply-to pseudo-queue, and the worker that runs it answers there. Any
//! worker can serve it; nothing polls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::broker::{self, SYNC_QUEUE};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::oneshot;

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the broker is unavailable: {0}")]
    Broker(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

pub struct Requester {
    url: String,
    channel: tokio::sync::Mutex<Option<(Connection, Channel)>>,
    pending: Pending,
}

impl Requester {
    pub fn new(url: impl Into<String>) -> Self {
        Requester {
            url: url.into(),
            channel: tokio::sync::Mutex::new(None),
            pending: Arc::default(),
        }
    }

    /// The channel that consumes the replies, (re)opened on demand. Direct reply-to requires
    /// publishing on the channel that consumes the pseudo-queue.
    async fn channel(&self) -> Result<Channel, RequestError> {
        self.open()
            .await
            .map_err(|e| RequestError::Broker(e.to_string()))
    }

    async fn open(&self) -> anyhow::Result<Channel> {
        let mut state = self.channel.lock().await;
        if let Some((connection, channel)) = state.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let connection = broker::connect(&self.url).await?;
        let channel = connection.create_channel().await?;
        // Without the queue, a request published before any worker or dispatch declared it
        // (a fresh broker) would be dropped unroutable, and its caller would wait in vain.
        broker::declare_topology(&channel).await?;
        let mut replies = channel
            .basic_consume(
                REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let pending = self.pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = replies.next().await {
                let waiter = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .and_then(|id| pending.lock().ok()?.remove(id.as_str()));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(delivery.data);
                }
            }
        });
        *state = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Whether the broker can be reached now (for readiness).
    pub async fn is_connected(&self) -> bool {
        self.channel().await.is_ok()
    }

    /// Sends work to a worker (a [`common::messages::WorkMessage`], or the body of one of its
    /// variants) and waits for its answer. The request expires in the queue when its caller
    /// stops waiting: a function must not run for a caller who was told it failed, when
    /// workers come back after an outage, say.
    pub async fn request(
        &self,
        message: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let channel = self.channel().await?;
        let correlation = common::id::ObjectId::generate().to_string();
        let (sender, answer) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(correlation.clone(), sender);
        }
        let body = serde_json::to_vec(message).unwrap_or_default();
        let published = channel
            .basic_publish(
                "".into(),
                SYNC_QUEUE.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_reply_to(REPLY_TO.into())
                    .with_correlation_id(correlation.as_str().into())
                    .with_expiration(timeout.as_millis().to_string().as_str().into()),
            )
            .await;
        let outcome = match published {
            Err(error) => Err(RequestError::Broker(error.to_string())),
            Ok(_) => match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(RequestError::Broker("the reply channel closed".into())),
                Err(_) => Err(RequestError::Timeout(timeout)),
            },
        };
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&correlation);
        }
        outcome
    }
}
