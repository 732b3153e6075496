//! `/tasks/v1/schedules`: recurring tasks.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::db::schedules::{NewSchedule, SCHEDULE_SCHEMA};
use common::domain::{Priority, Recurrence, Schedule};

use super::body::{self, JsonObject, Required};
use super::error::{ApiError, ErrorBody};
use super::functions::unknown_function;
use super::paging::{ListQuery, PagedResult, RESOURCE_LIMITS};
use super::tasks::{check_data_size, parse_id};
use super::{AffectedRecords, AppState};

/// Longest accepted interval: ten years.
const MAX_INTERVAL_SECONDS: i64 = 10 * 366 * 24 * 3600;

/// Body of `POST /tasks/v1/schedules`: `interval`, or `cron` (with an optional `timezone`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleInput {
    /// Seconds between two tasks (a whole number, at least 1).
    #[serde(default, deserialize_with = "body::whole_number")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    interval: Option<i64>,
    /// Instead of `interval`: a cron expression, 5 fields (`0 9 * * 1-5`) or 6 with seconds.
    cron: Option<String>,
    /// IANA time zone of `cron`, e.g. `Europe/Brussels`; UTC when absent.
    timezone: Option<String>,
    function_name: Option<String>,
    #[schema(value_type = Option<Object>)]
    data: Option<Map<String, Value>>,
    priority: Option<Priority>,
    /// When the first task is due; now when absent.
    #[serde(default, with = "common::time::millis_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    start_timestamp: Option<chrono::DateTime<chrono::Utc>>,
}

#[utoipa::path(post, path = "/tasks/v1/schedules", tag = "schedules", request_body = ScheduleInput,
    responses(
        (status = 200, description = "The created schedule", body = Schedule),
        (status = 400, description = "Invalid input (13, 14, 15, 22)", body = ErrorBody),
        (status = 404, description = "The function does not exist (16)", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    JsonObject(object): JsonObject,
) -> Result<Json<Schedule>, ApiError> {
    let input: ScheduleInput = body::parse(object)?;
    let mut required = Required::default();
    if input.cron.is_none() {
        required.check("interval", &input.interval);
    }
    required
        .check("functionName", &input.function_name)
        .finish()?;
    if let Some(interval) = input.interval
        && !(1..=MAX_INTERVAL_SECONDS).contains(&interval)
    {
        return Err(ApiError::FieldFormat(format!(
            "interval must be between 1 and {MAX_INTERVAL_SECONDS} seconds, got {interval}"
        )));
    }
    let recurrence = Recurrence::parse(
        input.interval,
        input.cron.as_deref(),
        input.timezone.as_deref(),
    )
    .map_err(ApiError::FieldFormat)?;
    let start_timestamp = input.start_timestamp.unwrap_or_else(common::time::now);
    let next_timestamp = recurrence.first_slot(start_timestamp).ok_or_else(|| {
        ApiError::FieldFormat("the cron expression has no time after startTimestamp".into())
    })?;
    let data = Value::Object(input.data.unwrap_or_default());
    check_data_size(&data)?;
    let function_name = input.function_name.unwrap_or_default();
    if state.functions.get(&function_name).await?.is_none() {
        return Err(unknown_function(&function_name));
    }
    let schedule = state
        .schedules
        .insert(NewSchedule {
            function_name,
            interval_seconds: input.interval,
            cron: input.cron,
            timezone: input.timezone,
            data,
            priority: input.priority.map(Priority::get),
            start_timestamp,
            next_timestamp,
        })
        .await?;
    Ok(Json(schedule))
}

#[utoipa::path(get, path = "/tasks/v1/schedules", tag = "schedules",
    description = "Filter, sort and page with RQL in the query string: `eq(field,value)&sort(-field)&limit(n)`",
    responses(
        (status = 200, description = "A page of schedules", body = PagedResult),
        (status = 400, description = "Invalid RQL (19)", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<PagedResult>, ApiError> {
    let query = ListQuery::parse(query.as_deref(), &SCHEDULE_SCHEMA, RESOURCE_LIMITS)?;
    let page = state.schedules.list(&query.request).await?;
    Ok(Json(query.respond(page)?))
}

#[utoipa::path(delete, path = "/tasks/v1/schedules/{scheduleId}", tag = "schedules",
    params(("scheduleId" = String, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "Deleted: no more tasks are created", body = AffectedRecords),
        (status = 404, description = "Unknown schedule (16)", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(schedule_id): Path<String>,
) -> Result<Json<AffectedRecords>, ApiError> {
    let id = parse_id(&schedule_id)?;
    match state.schedules.delete(&id).await? {
        0 => Err(ApiError::unknown(format_args!("schedule {id}"))),
        n => Ok(Json(AffectedRecords::new(n))),
    }
}
