//! `/tasks/v1/triggers`: which platform events create which tasks.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::db::triggers::{TRIGGER_SCHEMA, TriggerFields};
use common::domain::{Priority, Trigger};

use super::body::{self, JsonObject, Required};
use super::error::{ApiError, ErrorBody};
use super::functions::unknown_function;
use super::paging::{ListQuery, PagedResult, RESOURCE_LIMITS};
use super::tasks::{check_data_size, check_tags, parse_id};
use super::{AffectedRecords, AppState};

/// Longest accepted delay: 30 days.
const MAX_DELAY_SECONDS: i64 = 30 * 24 * 3600;
const MAX_EVENT_TYPE_CHARS: usize = 256;

/// Body of `POST /tasks/v1/triggers` and `PUT /tasks/v1/triggers/{id}` (any subset on update).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerInput {
    /// An event type, or a pattern where `*` matches any text (`measurement_*`).
    event_type: Option<String>,
    function_name: Option<String>,
    /// Static data of the created tasks; the event is added under `event`.
    #[schema(value_type = Option<Object>)]
    data: Option<Map<String, Value>>,
    priority: Option<Priority>,
    #[serde(default, deserialize_with = "body::whole_number")]
    #[schema(value_type = Option<i64>, minimum = 0)]
    delay_seconds: Option<i64>,
    tags: Option<Vec<String>>,
    enabled: Option<bool>,
}

#[utoipa::path(post, path = "/tasks/v1/triggers", tag = "triggers", request_body = TriggerInput,
    responses(
        (status = 200, description = "The created trigger", body = Trigger),
        (status = 400, description = "Invalid input (13, 14, 15, 22)", body = ErrorBody),
        (status = 404, description = "The function does not exist (16)", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    JsonObject(object): JsonObject,
) -> Result<Json<Trigger>, ApiError> {
    let input: TriggerInput = body::parse(object)?;
    Required::default()
        .check("eventType", &input.event_type)
        .check("functionName", &input.function_name)
        .finish()?;
    let blank = TriggerFields {
        event_type: String::new(),
        function_name: String::new(),
        data: Value::Object(Map::new()),
        priority: None,
        delay_seconds: 0,
        tags: Vec::new(),
        enabled: true,
    };
    let fields = apply(&state, blank, input).await?;
    Ok(Json(state.triggers.insert(&fields).await?))
}

#[utoipa::path(get, path = "/tasks/v1/triggers", tag = "triggers",
    description = "Filter, sort and page with RQL in the query string: `eq(field,value)&sort(-field)&limit(n)`",
    responses(
        (status = 200, description = "A page of triggers", body = PagedResult),
        (status = 400, description = "Invalid RQL (19)", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<PagedResult>, ApiError> {
    let query = ListQuery::parse(query.as_deref(), &TRIGGER_SCHEMA, RESOURCE_LIMITS)?;
    let page = state.triggers.list(&query.request).await?;
    Ok(Json(query.respond(page)?))
}

#[utoipa::path(get, path = "/tasks/v1/triggers/{triggerId}", tag = "triggers",
    params(("triggerId" = String, Path, description = "Trigger id")),
    responses(
        (status = 200, description = "The trigger", body = Trigger),
        (status = 404, description = "Unknown trigger (16)", body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(trigger_id): Path<String>,
) -> Result<Json<Trigger>, ApiError> {
    let id = parse_id(&trigger_id)?;
    state
        .triggers
        .get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::unknown(format_args!("trigger {id}")))
}

#[utoipa::path(put, path = "/tasks/v1/triggers/{triggerId}", tag = "triggers", request_body = TriggerInput,
    params(("triggerId" = String, Path, description = "Trigger id")),
    responses(
        (status = 200, description = "Updated", body = AffectedRecords),
        (status = 400, description = "Invalid input (15, 22)", body = ErrorBody),
        (status = 404, description = "Unknown trigger or function (16)", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Path(trigger_id): Path<String>,
    JsonObject(object): JsonObject,
) -> Result<Json<AffectedRecords>, ApiError> {
    let id = parse_id(&trigger_id)?;
    let input: TriggerInput = body::parse(object)?;
    let existing = state
        .triggers
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::unknown(format_args!("trigger {id}")))?;
    let fields = apply(&state, TriggerFields::from(&existing), input).await?;
    match state.triggers.update(&id, &fields).await? {
        0 => Err(ApiError::unknown(format_args!("trigger {id}"))),
        n => Ok(Json(AffectedRecords::new(n))),
    }
}

#[utoipa::path(delete, path = "/tasks/v1/triggers/{triggerId}", tag = "triggers",
    params(("triggerId" = String, Path, description = "Trigger id")),
    responses(
        (status = 200, description = "Deleted: its events no longer create tasks", body = AffectedRecords),
        (status = 404, description = "Unknown trigger (16)", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(trigger_id): Path<String>,
) -> Result<Json<AffectedRecords>, ApiError> {
    let id = parse_id(&trigger_id)?;
    match state.triggers.delete(&id).await? {
        0 => Err(ApiError::unknown(format_args!("trigger {id}"))),
        n => Ok(Json(AffectedRecords::new(n))),
    }
}

/// Applies the given fields and validates the result.
async fn apply(
    state: &AppState,
    mut fields: TriggerFields,
    input: TriggerInput,
) -> Result<TriggerFields, ApiError> {
    if let Some(event_type) = input.event_type {
        let valid_chars = event_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '*'));
        if event_type.is_empty() || event_type.len() > MAX_EVENT_TYPE_CHARS || !valid_chars {
            return Err(ApiError::FieldFormat(format!(
                "eventType has 1 to {MAX_EVENT_TYPE_CHARS} characters among letters, digits, `_`, `-`, `.`, `:` and the wildcard `*`"
            )));
        }
        fields.event_type = event_type;
    }
    if let Some(function_name) = input.function_name {
        if state.functions.get(&function_name).await?.is_none() {
            return Err(unknown_function(&function_name));
        }
        fields.function_name = function_name;
    }
    if let Some(data) = input.data {
        let data = Value::Object(data);
        check_data_size(&data)?;
        fields.data = data;
    }
    if let Some(priority) = input.priority {
        fields.priority = Some(priority.get());
    }
    if let Some(delay) = input.delay_seconds {
        if !(0..=MAX_DELAY_SECONDS).contains(&delay) {
            return Err(ApiError::FieldFormat(format!(
                "delaySeconds must be between 0 and {MAX_DELAY_SECONDS}, got {delay}"
            )));
        }
        fields.delay_seconds = delay;
    }
    if let Some(tags) = input.tags {
        check_tags(&tags)?;
        fields.tags = tags;
    }
    if let Some(enabled) = input.enabled {
        fields.enabled = enabled;
    }
    Ok(fields)
}
