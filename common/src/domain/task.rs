//! A task: its status and the transitions between statuses, where it came from, how an
//! attempt failed, and the limit on its input.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::id::ObjectId;

/// The lifecycle of a task. Every status change in the code base goes through
/// [`TaskStatus::can_become`], so the allowed transitions are written down once:
///
/// ```text
/// new ──claim──▶ inProgress ──▶ complete | failed | retried
///  │  ◀─handed back on drain─┘
///  ├──cancel──▶ canceled
///  └──function deleted──▶ failed
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum TaskStatus {
    New,
    InProgress,
    Complete,
    Failed,
    Canceled,
    Retried,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::New,
        TaskStatus::InProgress,
        TaskStatus::Complete,
        TaskStatus::Failed,
        TaskStatus::Canceled,
        TaskStatus::Retried,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::New => "new",
            TaskStatus::InProgress => "inProgress",
            TaskStatus::Complete => "complete",
            TaskStatus::Failed => "failed",
            TaskStatus::Canceled => "canceled",
            TaskStatus::Retried => "retried",
        }
    }

    pub fn parse(text: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Complete | TaskStatus::Failed | TaskStatus::Canceled | TaskStatus::Retried
        )
    }

    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, next),
            (New, InProgress | Canceled | Failed) | (InProgress, Complete | Failed | Retried | New)
        )
    }
}

/// Where a task came from; kept for metrics and debugging, not shown by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSource {
    Api,
    Event,
    Schedule,
    Retry,
    Direct,
}

impl TaskSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSource::Api => "api",
            TaskSource::Event => "event",
            TaskSource::Schedule => "schedule",
            TaskSource::Retry => "retry",
            TaskSource::Direct => "direct",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum TaskErrorType {
    /// The function could not be started (bad code, missing handler, lost worker…).
    Invocation,
    /// The function ran and failed (raised, timed out, ran out of memory…).
    Runtime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskError {
    #[serde(rename = "type")]
    pub kind: TaskErrorType,
    pub name: String,
    pub message: String,
}

impl TaskError {
    /// The function could not be started.
    pub fn invocation(name: &str, message: impl Into<String>) -> TaskError {
        TaskError {
            kind: TaskErrorType::Invocation,
            name: name.to_owned(),
            message: message.into(),
        }
    }

    /// The function ran and failed.
    pub fn runtime(name: &str, message: impl Into<String>) -> TaskError {
        TaskError {
            kind: TaskErrorType::Runtime,
            name: name.to_owned(),
            message: message.into(),
        }
    }
}

/// Largest serialized `data` of a task (the size of a Lambda async payload), whoever creates
/// it: the API, a schedule, a trigger from its data and an event.
pub const MAX_DATA_BYTES: usize = 256 * 1024;

/// Why `data` cannot be a task's, when it is too large.
pub fn data_size_error(data: &Value) -> Option<String> {
    let mut size = SerializedSize(0);
    let size = match serde_json::to_writer(&mut size, data) {
        Ok(()) => size.0,
        Err(_) => usize::MAX,
    };
    (size > MAX_DATA_BYTES)
        .then(|| format!("data takes {size} bytes, more than the limit of {MAX_DATA_BYTES}"))
}

/// Counts the bytes written to it, so a size is measured without building the text.
struct SerializedSize(usize);

impl std::io::Write for SerializedSize {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A task as stored and as returned by the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[schema(value_type = String, example = "757f191a810c19729de860ae")]
    pub id: ObjectId,
    pub function_name: String,
    pub status: TaskStatus,
    #[serde(with = "crate::time::millis")]
    pub status_changed_timestamp: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub data: Value,
    pub tags: Vec<String>,
    #[serde(with = "crate::time::millis")]
    pub start_timestamp: DateTime<Utc>,
    #[schema(value_type = crate::domain::Priority)]
    pub priority: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_application_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried_by_task_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retry_for_task_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// The function's return value, once the task is `complete`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    #[serde(with = "crate::time::millis")]
    pub creation_timestamp: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    pub update_timestamp: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_wire_names() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
    }

    #[test]
    fn data_is_measured_as_serialized() {
        let at_limit = serde_json::json!({"a": "x".repeat(MAX_DATA_BYTES - 8)});
        assert_eq!(serde_json::to_vec(&at_limit).unwrap().len(), MAX_DATA_BYTES);
        assert_eq!(data_size_error(&at_limit), None);
        let over = serde_json::json!({"a": "x".repeat(MAX_DATA_BYTES - 7)});
        assert_eq!(
            data_size_error(&over).as_deref(),
            Some("data takes 262145 bytes, more than the limit of 262144")
        );
    }

    #[test]
    fn terminal_statuses_never_change() {
        for from in TaskStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in TaskStatus::ALL {
                assert!(!from.can_become(to), "{from:?} -> {to:?}");
            }
        }
        assert!(TaskStatus::New.can_become(TaskStatus::Canceled));
        assert!(!TaskStatus::InProgress.can_become(TaskStatus::Canceled));
    }
}
