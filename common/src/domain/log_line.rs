//! One output line of an execution, as a task's or an API request's log holds it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LogLine {
    pub message: String,
    #[serde(with = "crate::time::millis")]
    pub timestamp: DateTime<Utc>,
}
