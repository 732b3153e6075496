//! The `schedules` table.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::Row;

use super::StoreError;
use super::list::{ListRequest, Page, fetch_page};
use crate::domain::Schedule;
use crate::id::ObjectId;
use crate::rql::{Field, FieldKind, Schema};

pub static SCHEDULE_SCHEMA: Schema = Schema {
    fields: &[
        Field {
            name: "id",
            column: "id",
            kind: FieldKind::Text,
        },
        Field {
            name: "functionName",
            column: "function_name",
            kind: FieldKind::Text,
        },
        Field {
            name: "interval",
            column: "interval_seconds",
            kind: FieldKind::Integer,
        },
        Field {
            name: "data",
            column: "data",
            kind: FieldKind::Json,
        },
        Field {
            name: "priority",
            column: "priority",
            kind: FieldKind::Integer,
        },
        Field {
            name: "startTimestamp",
            column: "start_timestamp",
            kind: FieldKind::Timestamp,
        },
        Field {
            name: "nextTimestamp",
            column: "next_timestamp",
            kind: FieldKind::Timestamp,
        },
        Field {
            name: "creationTimestamp",
            column: "creation_timestamp",
            kind: FieldKind::Timestamp,
        },
        Field {
            name: "updateTimestamp",
            column: "update_timestamp",
            kind: FieldKind::Timestamp,
        },
    ],
};

const COLUMNS: &str = "id, function_name, interval_seconds, data, priority, start_timestamp, \
    next_timestamp, creation_timestamp, update_timestamp";

#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub function_name: String,
    pub interval_seconds: i64,
    pub data: Value,
    pub priority: Option<i64>,
    pub start_timestamp: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Schedules {
    pool: Pool,
}

impl Schedules {
    pub fn new(pool: Pool) -> Self {
        Schedules { pool }
    }

    /// Stores a schedule whose first task is due at its start time.
    pub async fn insert(&self, schedule: NewSchedule) -> Result<Schedule, StoreError> {
        let client = self.pool.get().await?;
        let start = crate::time::truncate_to_millis(schedule.start_timestamp);
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO schedules ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $7) \
                     RETURNING {COLUMNS}"
                ),
                &[
                    &ObjectId::generate().to_string(),
                    &schedule.function_name,
                    &schedule.interval_seconds,
                    &schedule.data,
                    &schedule.priority,
                    &start,
                    &crate::time::now(),
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
            .map_err(|e: crate::id::InvalidObjectId| StoreError::Corrupt(e.to_string()))?,
        function_name: row.try_get("function_name")?,
        interval: row.try_get("interval_seconds")?,
        data: row.try_get("data")?,
        priority: row.try_get("priority")?,
        start_timestamp: row.try_get("start_timestamp")?,
        next_timestamp: row.try_get("next_timestamp")?,
        creation_timestamp: row.try_get("creation_timestamp")?,
        update_timestamp: row.try_get("update_timestamp")?,
    })
}
