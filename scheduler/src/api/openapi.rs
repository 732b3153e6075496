//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/tasks/v1/openapi.json`, so it cannot drift from the code.

use axum::Json;
use utoipa::OpenApi;

use super::{
    AffectedRecords, api_requests, error, execute, functions, paging, schedules, tasks, triggers,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Task Service API", description = "Runs functions as tasks. Wire-compatible with the Extra Horizon Tasks Service API."),
    paths(
        tasks::list, tasks::create, tasks::cancel, tasks::logs,
        functions::list, functions::create, functions::get, functions::update, functions::delete,
        functions::enable, functions::disable, execute::execute,
        api_requests::list, api_requests::logs,
        schedules::list, schedules::create, schedules::delete,
        triggers::list, triggers::create, triggers::get, triggers::update, triggers::delete,
    ),
    components(schemas(
        AffectedRecords, error::ErrorBody, paging::PagedResult, paging::PageInfo,
        common::domain::Task, common::domain::TaskStatus, common::domain::TaskError,
        common::domain::TaskErrorType, common::domain::FunctionDefinition,
        common::domain::Schedule, common::domain::Trigger, common::db::task_logs::LogLine,
        common::db::api_requests::ApiRequest,
    )),
    tags(
        (name = "tasks", description = "Tasks: one execution of a function"),
        (name = "functions", description = "Functions: code, runtime and limits"),
        (name = "schedules", description = "Recurring tasks"),
        (name = "triggers", description = "Platform events that create tasks"),
        (name = "api functions", description = "HTTP endpoints served by functions under /tasks/v1/api/{functionName}"),
    )
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
