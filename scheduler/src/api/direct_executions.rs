//! `POST /tasks/v1/functions/{name}/execute`: run a function now and answer with its result.
//! A task is created as for any execution and kept: the request travels to a worker over
//! RabbitMQ with the task in it, the worker stores the task as it claims it, and its answer
//! comes back on a direct reply-to queue.

use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api::auth::{FunctionCall, Identity};
use common::domain::{PermissionMode, Task, TaskErrorType, TaskStatus};
use common::id::ObjectId;
use common::messages::{DirectExecution, DirectTask};

use super::AppState;
use super::body::OptionalJsonObject;
use super::error::{ApiError, ErrorBody};
use super::functions::unknown_function;
use super::tasks::check_data_size;

/// Longest `timeLimit` a function may have to be executed directly.
pub const MAX_DIRECT_TIME_LIMIT: i32 = 30;
/// Extra wait beyond the function's time limit for dispatching and storing the outcome.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

#[utoipa::path(post, path = "/tasks/v1/functions/{name}/execute", tag = "functions",
    params(("name" = String, Path, description = "Function name")),
    request_body(content = Object, description = "`{\"data\": …}`, or an empty body"),
    responses(
        (status = 200, description = "The completed task with the function's `result`", body = Task),
        (status = 400, description = "1404 timeLimit over 30 s, 1405 invocation failed, 1406 the function failed (with `taskId` and `runtimeError`)", body = ErrorBody),
        (status = 401, description = "Not authenticated (104) or not allowed by the function's permissionMode (10)", body = ErrorBody),
        (status = 404, description = "Unknown function (16)", body = ErrorBody)))]
pub async fn execute(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    OptionalJsonObject(mut body): OptionalJsonObject,
) -> Result<Response, ApiError> {
    let data = body
        .remove("data")
        .unwrap_or(Value::Object(Default::default()));
    check_data_size(&data)?;
    let function = state.definitions.get(&name).await?;
    // An unknown function is refused like a known one, so names are not revealed to callers
    // who could not execute them anyway.
    let mode = function
        .as_ref()
        .map_or(PermissionMode::PermissionRequired, |f| {
            f.execution_options.permission_mode
        });
    identity.require_function_mode(mode, FunctionCall::Execute, &name)?;
    let function = function.ok_or_else(|| unknown_function(&name))?;
    if function.time_limit > MAX_DIRECT_TIME_LIMIT {
        return Err(ApiError::TimeLimitExceedsDirectMaximum(function.time_limit));
    }
    if !function.enabled {
        return Err(ApiError::LambdaInvocation {
            message: format!("The function `{name}` is disabled"),
            task_id: None,
        });
    }
    let execution = DirectExecution {
        execute: DirectTask {
            task_id: ObjectId::generate(),
            function_name: name.clone(),
            data,
            requested_at: common::time::now(),
            created_by_application_id: identity.application_id(),
            created_by_user_id: identity.user_id(),
        },
    };
    let task_id = execution.execute.task_id;
    state
        .metrics
        .tasks_created
        .with_label_values(&["direct"])
        .inc();
    let wait = Duration::from_secs(function.time_limit.max(1) as u64) + ANSWER_MARGIN;
    let answer = match state.requester.request(&execution, wait).await {
        Ok(answer) => answer,
        Err(error) => {
            // Never let an execution the caller was told failed run later.
            if let Err(cancel_error) = state.lifecycle.cancel_direct(&execution.execute).await {
                tracing::warn!(task_id = %task_id, error = %cancel_error, "could not cancel an unanswered execution");
            }
            return Err(ApiError::LambdaInvocation {
                message: format!("The function could not be executed: {error}"),
                task_id: Some(task_id.to_string()),
            });
        }
    };
    if let Some(completed) = completed_task(&answer) {
        return Ok(Json(completed).into_response());
    }
    // The worker did not store the task when its function was deleted meanwhile.
    let task = state
        .tasks
        .find(&task_id)
        .await?
        .ok_or_else(|| unknown_function(&name))?;
    match (task.status, &task.error) {
        (TaskStatus::Complete, _) => Ok(Json(task).into_response()),
        (TaskStatus::Failed, Some(error)) if error.kind == TaskErrorType::Runtime => {
            Err(ApiError::LambdaRuntime {
                task_id: Some(task.id.to_string()),
                name: error.name.clone(),
                message: error.message.clone(),
            })
        }
        (_, error) => Err(ApiError::LambdaInvocation {
            message: error
                .as_ref()
                .map(|e| format!("{}: {}", e.name, e.message))
                .unwrap_or_else(|| {
                    format!("The execution ended with status `{}`", task.status.as_str())
                }),
            task_id: Some(task.id.to_string()),
        }),
    }
}

/// The task a worker completed, as it stored it, when it sent it with its answer (a failed
/// task's error is read from the store).
fn completed_task(answer: &[u8]) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Answer {
        task: Option<Value>,
    }
    let task = serde_json::from_slice::<Answer>(answer).ok()?.task?;
    (task["status"] == TaskStatus::Complete.as_str()).then_some(task)
}
