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
    modifiers(&Security),
    tags(
        (name = "tasks", description = "Tasks: one execution of a function"),
        (name = "functions", description = "Functions: code, runtime and limits"),
        (name = "schedules", description = "Recurring tasks"),
        (name = "triggers", description = "Platform events that create tasks"),
        (name = "api functions", description = "HTTP endpoints served by functions under /tasks/v1/api/{functionName}"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer token and adds the authentication failures (104, 10) to every
/// operation, which all answer them.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        document.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        let unauthorized = ResponseBuilder::new()
            .description("Not authenticated (104) or missing the permission (10)")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in document.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                operation
                    .responses
                    .responses
                    .entry("401".to_owned())
                    .or_insert_with(|| RefOr::T(unauthorized.clone()));
            }
        }
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Requirement, permission::requirement};

    /// Every documented operation has an entry in the permissions table.
    #[test]
    fn every_documented_operation_has_a_requirement() {
        let document = ApiDoc::openapi();
        for (path, item) in &document.paths.paths {
            let methods = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("DELETE", item.delete.is_some()),
            ];
            for (method, present) in methods {
                if present {
                    let found = requirement(method, path);
                    assert!(
                        !matches!(found, Requirement::Unlisted | Requirement::Public),
                        "{method} {path} has no permission"
                    );
                }
            }
        }
    }
}
