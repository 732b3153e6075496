//! The transactional outbox of platform events (see the `outbox` table): the lifecycle
//! writes a task's `task_failed` event in the transaction that fails it, and the relay reads
//! it from here.

use deadpool_postgres::Pool;
use serde_json::Value;

use common::db::StoreError;

#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: i64,
    pub routing_key: String,
    pub payload: Value,
}

#[derive(Clone)]
pub struct Outbox {
    pool: Pool,
}

impl Outbox {
    pub fn new(pool: Pool) -> Self {
        Outbox { pool }
    }

    /// Hands up to `limit` events to `publish` (oldest first) and deletes them once it
    /// succeeds, all under row locks so two relays never publish the same event. If `publish`
    /// fails nothing is deleted and the events are tried again later.
    pub async fn relay<F, Fut, E>(&self, limit: i64, publish: F) -> Result<usize, RelayError<E>>
    where
        F: FnOnce(Vec<OutboxEvent>) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let transaction = client.transaction().await.map_err(StoreError::from)?;
        let rows = transaction
            .query(
                "SELECT id, routing_key, payload FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&limit],
            )
            .await
            .map_err(StoreError::from)?;
        let events = rows
            .iter()
            .map(|row| {
                Ok(OutboxEvent {
                    id: row.try_get(0)?,
                    routing_key: row.try_get(1)?,
                    payload: row.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(StoreError::from)?;
        if events.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        publish(events).await.map_err(RelayError::Publish)?;
        transaction
            .execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(StoreError::from)?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(ids.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publishing events: {0}")]
    Publish(E),
}
