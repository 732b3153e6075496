use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::id::ObjectId;

/// A recurring task: every `interval` seconds from `startTimestamp`, a task of `functionName`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    #[schema(value_type = String, example = "64ad169e4d29c1b246ee25df")]
    pub id: ObjectId,
    pub function_name: String,
    /// Seconds between two tasks.
    pub interval: i64,
    #[schema(value_type = Object)]
    pub data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(with = "crate::time::millis")]
    pub start_timestamp: DateTime<Utc>,
    /// When the next task is due.
    #[serde(with = "crate::time::millis")]
    pub next_timestamp: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    pub creation_timestamp: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    pub update_timestamp: DateTime<Utc>,
}
