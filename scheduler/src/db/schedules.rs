//! The `schedules` table.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::Row;

use common::db::StoreError;
use common::db::list::{ListRequest, Page, fetch_page};
use common::domain::{Recurrence, Schedule};
use common::id::ObjectId;
use rql::{Field, FieldKind, Schema};

pub static SCHEDULE_SCHEMA: Schema = Schema {
    fields: &[
        Field::new("id", "id", FieldKind::Text),
        Field::new("functionName", "function_name", FieldKind::Text),
        Field::new("interval", "interval_seconds", FieldKind::Integer),
        Field::new("data", "data", FieldKind::Json),
        Field::new("priority", "priority", FieldKind::Integer),
        Field::new("startTimestamp", "start_timestamp", FieldKind::Timestamp),
        Field::new("nextTimestamp", "next_timestamp", FieldKind::Timestamp),
        Field::new(
            "creationTimestamp",
            "creation_timestamp",
            FieldKind::Timestamp,
        ),
        Field::new("updateTimestamp", "update_timestamp", FieldKind::Timestamp),
    ],
};

const COLUMNS: &str = "id, function_name, interval_seconds, cron, timezone, data, priority, \
    start_timestamp, next_timestamp, creation_timestamp, update_timestamp";

#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub function_name: String,
    pub interval_seconds: Option<i64>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub data: Value,
    pub priority: Option<i64>,
    pub start_timestamp: DateTime<Utc>,
    /// The first slot, at or after the start.
    pub next_timestamp: DateTime<Utc>,
}

/// What one call of [`Schedules::fire_due`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    /// Due schedules taken (a full batch means more may be due).
    pub schedules: usize,
    /// Tasks created (fewer when a slot already had its task).
    pub tasks: u64,
}

#[derive(Clone)]
pub struct Schedules {
    pool: Pool,
}

impl Schedules {
    pub fn new(pool: Pool) -> Self {
        Schedules { pool }
    }

    pub async fn insert(&self, schedule: NewSchedule) -> Result<Schedule, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO schedules ({COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING {COLUMNS}"
                ),
                &[
                    &ObjectId::generate().to_string(),
                    &schedule.function_name,
                    &schedule.interval_seconds,
                    &schedule.cron,
                    &schedule.timezone,
                    &schedule.data,
                    &schedule.priority,
                    &common::time::truncate_to_millis(schedule.start_timestamp),
                    &common::time::truncate_to_millis(schedule.next_timestamp),
                    &common::time::now(),
                ],
            )
            .await?;
        schedule_from_row(&row)
    }

    pub async fn list(&self, request: &ListRequest) -> Result<Page<Schedule>, StoreError> {
        let client = self.pool.get().await?;
        fetch_page(
            &client,
            "schedules",
            COLUMNS,
            None,
            "creation_timestamp ASC, id ASC",
            request,
            schedule_from_row,
        )
        .await
    }

    /// Creates the task of every due schedule and moves each to its next slot, in one
    /// transaction per batch. Row locks let several schedulers fire at once without taking the
    /// same schedule, and the unique (schedule, slot) index makes a second task for a slot
    /// impossible even so.
    pub async fn fire_due(&self, limit: i64) -> Result<Fired, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let rows = transaction
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM schedules WHERE next_timestamp <= now() \
                     ORDER BY next_timestamp LIMIT $1 FOR UPDATE SKIP LOCKED"
                ),
                &[&limit],
            )
            .await?;
        let now = common::time::now();
        let mut created = 0;
        for row in &rows {
            let schedule = schedule_from_row(row)?;
            let id = schedule.id.to_string();
            let recurrence = Recurrence::parse(
                schedule.interval,
                schedule.cron.as_deref(),
                schedule.timezone.as_deref(),
            )
            .map_err(|e| StoreError::Corrupt(format!("schedule {id}: {e}")))?;
            let slot = schedule.next_timestamp;
            created += transaction
                .execute(
                    "INSERT INTO tasks (id, function_name, status, status_changed_timestamp, data, \
                       start_timestamp, priority, source, schedule_id, schedule_slot, \
                       creation_timestamp, update_timestamp) \
                     VALUES ($1, $2, 'new', $3, $4, $5, \
                       COALESCE($6, (SELECT default_priority FROM functions WHERE name = $2), 0), \
                       'schedule', $7, $5, $3, $3) \
                     ON CONFLICT (schedule_id, schedule_slot) WHERE schedule_id IS NOT NULL DO NOTHING",
                    &[
                        &ObjectId::generate().to_string(),
                        &schedule.function_name,
                        &now,
                        &schedule.data,
                        &slot,
                        &schedule.priority,
                        &id,
                    ],
                )
                .await?;
            match recurrence.next_slot(slot, now) {
                Some(next) => {
                    transaction
                        .execute(
                            "UPDATE schedules SET next_timestamp = $2, update_timestamp = $3 WHERE id = $1",
                            &[&id, &next, &now],
                        )
                        .await?;
                }
                None => {
                    // A cron expression with no future time (a past year): it is finished.
                    tracing::info!(schedule_id = %id, "schedule has no future slot; deleting it");
                    transaction
                        .execute("DELETE FROM schedules WHERE id = $1", &[&id])
                        .await?;
                }
            }
        }
        transaction.commit().await?;
        Ok(Fired {
            schedules: rows.len(),
            tasks: created,
        })
    }

    /// How long until the earliest schedule is due (`None` when there is none).
    pub async fn next_due_in(&self) -> Result<Option<std::time::Duration>, StoreError> {
        let client = self.pool.get().await?;
        let row = common::db::aggregate_row(
            &client,
            "SELECT EXTRACT(EPOCH FROM (min(next_timestamp) - now()))::float8 FROM schedules",
        )
        .await?;
        common::db::time_until(&row)
    }

    /// Returns the number of schedules deleted.
    pub async fn delete(&self, id: &ObjectId) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute("DELETE FROM schedules WHERE id = $1", &[&id.to_string()])
            .await?)
    }
}

fn schedule_from_row(row: &Row) -> Result<Schedule, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(Schedule {
        id: id
            .parse()
            .map_err(|e: common::id::InvalidObjectId| StoreError::Corrupt(e.to_string()))?,
        function_name: row.try_get("function_name")?,
        interval: row.try_get("interval_seconds")?,
        cron: row.try_get("cron")?,
        timezone: row.try_get("timezone")?,
        data: row.try_get("data")?,
        priority: row.try_get("priority")?,
        start_timestamp: row.try_get("start_timestamp")?,
        next_timestamp: row.try_get("next_timestamp")?,
        creation_timestamp: row.try_get("creation_timestamp")?,
        update_timestamp: row.try_get("update_timestamp")?,
    })
}
