//! `/tasks/v1/apiRequests`: the record of API-function calls and their logs.

use axum::Json;
use axum::extract::{Path, RawQuery, State};

use common::db::api_requests::{API_REQUEST_SCHEMA, ApiRequest};
use common::db::task_logs::LOG_SCHEMA;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::paging::{LOG_LIMITS, ListQuery, PageInfo, PagedResult, RESOURCE_LIMITS};
use super::tasks::LogPage;

#[utoipa::path(get, path = "/tasks/v1/apiRequests", tag = "api functions",
    description = "Filter, sort and page with RQL in the query string: `sort(-timestamp)`",
    responses(
        (status = 200, description = "A page of API requests", body = PagedResult),
        (status = 400, description = "Invalid RQL (19)", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<PagedResult>, ApiError> {
    let query = ListQuery::parse(query.as_deref(), &API_REQUEST_SCHEMA, RESOURCE_LIMITS)?;
    let page = state.api_requests.list(&query.request).await?;
    Ok(Json(query.respond(page)?))
}

#[utoipa::path(get, path = "/tasks/v1/apiRequests/{apiRequestId}/logs", tag = "api functions",
    params(
        ("apiRequestId" = String, Path, description = "API request id")),
    description = "RQL in the query string: only a bound on `timestamp`",
    responses(
        (status = 200, description = "Log lines, oldest first", body = LogPage),
        (status = 400, description = "No logs (1413), invalid RQL (19)", body = ErrorBody),
        (status = 404, description = "Unknown API request (16)", body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(api_request_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<LogPage>, ApiError> {
    let mut query = ListQuery::parse(query.as_deref(), &LOG_SCHEMA, LOG_LIMITS)?;
    query.request.count_total = false;
    let page = state
        .api_requests
        .logs(&api_request_id, &query.request)
        .await?;
    if page.items.is_empty() {
        let known: Option<ApiRequest> = state.api_requests.find(&api_request_id).await?;
        return Err(match known {
            Some(_) => ApiError::NoApiRequestLogsFound,
            None => ApiError::unknown(format_args!("API request {api_request_id}")),
        });
    }
    Ok(Json(LogPage::new(
        PageInfo {
            total: None,
            offset: query.request.offset,
            limit: query.request.limit,
        },
        page.items,
    )))
}
