//! `/tasks/v1/`: create and list tasks, cancel one, read its logs.

use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use common::db::lifecycle::CancelOutcome;
use common::db::task_logs::LOG_SCHEMA;
use common::db::tasks::{NewTask, TASK_SCHEMA};
use common::domain::LogLine;
use common::domain::{Priority, Task, TaskSource, TaskStatus, task};
use common::id::ObjectId;

use crate::api::auth::Identity;

use super::body::{self, JsonObject, OptionalJsonObject, Required};
use super::error::{ApiError, ErrorBody};
use super::functions::unknown_function;
use super::paging::{LOG_LIMITS, ListQuery, PageInfo, PagedResult, RESOURCE_LIMITS};
use super::{AffectedRecords, AppState};

const MAX_TAGS: usize = 100;
const MAX_TAG_CHARS: usize = 256;

/// Body of `POST /tasks/v1/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskInput {
    function_name: Option<String>,
    /// Input handed to the function.
    #[schema(value_type = Option<Object>)]
    data: Option<Map<String, Value>>,
    /// Earliest execution time; now when absent.
    #[serde(default, with = "common::time::millis_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    start_timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// Higher runs first; the function's `defaultPriority` (else 0) when absent.
    priority: Option<Priority>,
    tags: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/tasks/v1", tag = "tasks", request_body = TaskInput,
    responses(
        (status = 200, description = "The created task, status `new`", body = Task),
        (status = 400, description = "Invalid input (13, 14, 15, 22)", body = ErrorBody),
        (status = 404, description = "The function does not exist (16)", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    JsonObject(object): JsonObject,
) -> Result<Json<Task>, ApiError> {
    let input: TaskInput = body::parse(object)?;
    Required::default()
        .check("functionName", &input.function_name)
        .finish()?;
    let function_name = input.function_name.unwrap_or_default();
    let data = Value::Object(input.data.unwrap_or_default());
    check_data_size(&data)?;
    let tags = input.tags.unwrap_or_default();
    check_tags(&tags)?;
    let created = state
        .dispatch
        .submit(NewTask {
            function_name: function_name.clone(),
            data,
            tags,
            priority: input.priority.map(Priority::get),
            start_timestamp: input.start_timestamp.unwrap_or_else(common::time::now),
            created_by_application_id: identity.application_id(),
            created_by_user_id: identity.user_id(),
            retry_for_task_ids: Vec::new(),
            source: TaskSource::Api,
        })
        .await?
        .ok_or_else(|| unknown_function(&function_name))?;
    state
        .metrics
        .tasks_created
        .with_label_values(&["api"])
        .inc();
    Ok(Json(created))
}

pub fn check_data_size(data: &Value) -> Result<(), ApiError> {
    match task::data_size_error(data) {
        Some(error) => Err(ApiError::FieldFormat(error)),
        None => Ok(()),
    }
}

pub fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS || tags.iter().any(|t| t.chars().count() > MAX_TAG_CHARS) {
        return Err(ApiError::FieldFormat(format!(
            "tags: at most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters"
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/tasks/v1", tag = "tasks",
    description = "Filter, sort and page with RQL in the query string: `eq(status,new)&sort(-priority)&limit(10)`",
    responses(
        (status = 200, description = "A page of tasks", body = PagedResult),
        (status = 400, description = "Invalid RQL (19)", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<PagedResult>, ApiError> {
    let query = ListQuery::parse(query.as_deref(), &TASK_SCHEMA, RESOURCE_LIMITS)?;
    let page = state.tasks.list(&query.request).await?;
    Ok(Json(query.respond(page)?))
}

#[utoipa::path(post, path = "/tasks/v1/{taskId}/cancel", tag = "tasks",
    params(("taskId" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "Canceled", body = AffectedRecords),
        (status = 400, description = "The task is not `new` (27) or the id is malformed (12)", body = ErrorBody),
        (status = 404, description = "Unknown task (16)", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    _body: OptionalJsonObject,
) -> Result<Json<AffectedRecords>, ApiError> {
    let id = parse_id(&task_id)?;
    match state.lifecycle.cancel(&id).await? {
        CancelOutcome::Canceled => Ok(Json(AffectedRecords::new(1))),
        CancelOutcome::NotCancelable(status) => Err(ApiError::IllegalState(format!(
            "Only a task with status `new` can be canceled; this one is `{}`",
            status.as_str()
        ))),
        CancelOutcome::NotFound => Err(ApiError::unknown(format_args!("task {id}"))),
    }
}

/// The page of log lines: like [`PagedResult`] but without a total, as in the reference.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct LogPage {
    page: PageInfo,
    data: Vec<LogLine>,
}

impl LogPage {
    pub fn new(page: PageInfo, data: Vec<LogLine>) -> Self {
        LogPage { page, data }
    }
}

#[utoipa::path(get, path = "/tasks/v1/{taskId}/logs", tag = "tasks",
    params(
        ("taskId" = String, Path, description = "Task id")),
    description = "RQL in the query string: only a bound on `timestamp`, e.g. `ge(timestamp,2024-01-01T00:00:00.000Z)`",
    responses(
        (status = 200, description = "Log lines, oldest first", body = LogPage),
        (status = 400, description = "Not run yet (27), no logs (1408), invalid RQL (19)", body = ErrorBody),
        (status = 404, description = "Unknown task (16)", body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<LogPage>, ApiError> {
    let id = parse_id(&task_id)?;
    let mut query = ListQuery::parse(query.as_deref(), &LOG_SCHEMA, LOG_LIMITS)?;
    query.request.count_total = false;
    let task = state
        .tasks
        .find(&id)
        .await?
        .ok_or_else(|| ApiError::unknown(format_args!("task {id}")))?;
    if task.status == TaskStatus::New || task.status == TaskStatus::Canceled {
        return Err(ApiError::IllegalState(format!(
            "The task has not run yet (status `{}`)",
            task.status.as_str()
        )));
    }
    let page = state.logs.list(&id, &query.request).await?;
    if page.items.is_empty() && !state.logs.any(&id).await? {
        return Err(ApiError::NoTaskLogsFound);
    }
    Ok(Json(LogPage {
        page: PageInfo {
            total: None,
            offset: query.request.offset,
            limit: query.request.limit,
        },
        data: page.items,
    }))
}

pub fn parse_id(text: &str) -> Result<ObjectId, ApiError> {
    text.parse()
        .map_err(|e: common::id::InvalidObjectId| ApiError::IdFormat(e.to_string()))
}
