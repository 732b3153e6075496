//! A trigger: which platform events create tasks of which function, and how event types
//! match its pattern.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::id::ObjectId;

/// Which platform events create which tasks.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    #[schema(value_type = String, example = "64ad169e4d29c1b246ee25df")]
    pub id: ObjectId,
    /// An event type (`measurement_created`) or a pattern where `*` matches any text
    /// (`measurement_*`, `*`).
    pub event_type: String,
    pub function_name: String,
    /// Static data of the created tasks; the event itself is added under the key `event`.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Priority of the created tasks; the function's `defaultPriority` (else 0) when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::domain::Priority>)]
    pub priority: Option<i64>,
    /// The created task starts this many seconds after the event arrived.
    pub delay_seconds: i64,
    /// Tags of the created tasks, besides `event:<event id>`.
    pub tags: Vec<String>,
    pub enabled: bool,
    #[serde(with = "crate::time::millis")]
    pub creation_timestamp: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    pub update_timestamp: DateTime<Utc>,
}

/// Whether an event type matches a trigger's `eventType` (`*` matches any run of characters).
pub fn event_type_matches(pattern: &str, event_type: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = event_type.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: an exact match.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(index) => rest = &rest[index + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The key under which a trigger's task holds the event in its `data`.
pub const EVENT_KEY: &str = "event";

#[cfg(test)]
mod tests {
    use super::event_type_matches;

    #[test]
    fn patterns() {
        assert!(event_type_matches(
            "measurement_created",
            "measurement_created"
        ));
        assert!(!event_type_matches(
            "measurement_created",
            "measurement_created_x"
        ));
        assert!(event_type_matches("measurement_*", "measurement_created"));
        assert!(event_type_matches("*", "anything"));
        assert!(event_type_matches("*_deleted", "user_deleted"));
        assert!(!event_type_matches("*_deleted", "user_created"));
        assert!(event_type_matches("a*b*c", "a-x-b-y-c"));
        assert!(!event_type_matches("a*b*c", "a-c-b"));
        assert!(!event_type_matches("ab*ba", "aba"));
    }
}
