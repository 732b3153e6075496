//! What the processes tell each other through the broker: the bodies of the messages on the
//! work queues (`tasks`, `tasks.sync`), a worker's answer to a synchronous call, and the
//! largest message (platform events included) a consumer reads. Plain serde types: the
//! connection and the queues are `crate::broker`'s, and the database layer stores a direct
//! execution's task without depending on either.

use serde::{Deserialize, Serialize};

/// Largest platform event accepted.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Largest task message accepted; real ones are a few dozen bytes.
pub const MAX_TASK_MESSAGE_BYTES: usize = 4096;

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
