//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/tasks/v1/openapi.json`, so it cannot drift from the code.

use axum::Json;
use utoipa::OpenApi;

use super::{
    AffectedRecords, api_requests, direct_executions, error, functions, paging, schedules, tasks,
    triggers,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Task Service API", description = "Runs functions as tasks. Wire-compatible with the Extra Horizon Tasks Service API."),
    paths(
        tasks::list, tasks::create, tasks::cancel, tasks::logs,
        functions::list, functions::create, functions::get, functions::update, functions::delete,
        functions::enable, functions::disable, direct_executions::execute,
        api_requests::list, api_requests::logs,
        schedules::list, schedules::create, schedules::delete,
        triggers::list, triggers::create, triggers::get, triggers::update, triggers::delete,
    ),
    components(schemas(
        AffectedRecords, error::ErrorBody, paging::PagedResult, paging::PageInfo,
        common::domain::Task, common::domain::TaskStatus, common::domain::TaskError,
        common::domain::TaskErrorType, common::domain::FunctionDefinition,
        common::domain::Schedule, common::domain::Trigger, common::domain::LogLine,
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

/// What every operation shares, added here once: the bearer token; the failures any request
/// can meet before its handler (400 malformed id or value, 401, 405, 413, 414, 431); and the
/// shape of path parameters, so generated clients and fuzzers send well-formed ids.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
        let common = [
            (
                "400",
                "Invalid input: a malformed id (12) or a value that cannot be stored (15)",
            ),
            (
                "401",
                "Not authenticated (104) or missing the permission (10)",
            ),
            (
                "405",
                "Method not allowed (26); the `Allow` header lists the allowed ones",
            ),
            ("413", "The body is too large (22)"),
            ("414", "The path and query are too long (26)"),
            ("431", "The headers are too large or too many (26)"),
        ];
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
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_response(description));
                }
                for parameter in operation.parameters.iter_mut().flatten() {
                    constrain_path_parameter(parameter);
                }
            }
        }
    }
}

fn error_response(
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::response::Response> {
    use utoipa::openapi::{ResponseBuilder, content::ContentBuilder};
    utoipa::openapi::RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// Ids are 24 hex digits; function names are `[A-Za-z0-9_-]{1,128}`.
fn constrain_path_parameter(parameter: &mut utoipa::openapi::path::Parameter) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ObjectBuilder, Type};
    if parameter.parameter_in != ParameterIn::Path {
        return;
    }
    let pattern = if parameter.name.ends_with("Id") {
        "^[0-9a-fA-F]{24}$"
    } else if parameter.name == "name" {
        "^[A-Za-z0-9_-]{1,128}$"
    } else {
        return;
    };
    parameter.schema = Some(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .into(),
    );
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::{Requirement, permission::requirement};

    /// Every `priority` the document describes, in bodies and answers, states the bounds the
    /// service enforces.
    #[test]
    fn every_priority_declares_its_bounds() {
        let document = serde_json::to_value(ApiDoc::openapi()).expect("serializable");
        let schemas = &document["components"]["schemas"];
        let mut found = 0;
        let mut pending = vec![&document];
        while let Some(value) = pending.pop() {
            match value {
                serde_json::Value::Object(object) => {
                    if let Some(serde_json::Value::Object(properties)) = object.get("properties") {
                        for name in ["priority", "defaultPriority"] {
                            if let Some(property) = properties.get(name) {
                                found += 1;
                                let bounds = bounds(property, schemas);
                                assert_eq!(
                                    bounds,
                                    (Some(-9_007_199_254_740_991), Some(9_007_199_254_740_991)),
                                    "{name}: {property}"
                                );
                            }
                        }
                    }
                    pending.extend(object.values());
                }
                serde_json::Value::Array(items) => pending.extend(items),
                _ => {}
            }
        }
        // Task, function (in and out), schedule (in and out), trigger (in and out), new task.
        assert!(found >= 8, "{found} priorities found");
    }

    /// The minimum and maximum of a property, through a nullable `oneOf` and a `$ref`.
    fn bounds(
        property: &serde_json::Value,
        schemas: &serde_json::Value,
    ) -> (Option<i64>, Option<i64>) {
        if let Some(variants) = property["oneOf"].as_array() {
            return variants
                .iter()
                .find(|variant| variant["type"] != "null")
                .map_or((None, None), |variant| bounds(variant, schemas));
        }
        if let Some(reference) = property["$ref"].as_str() {
            let name = reference.trim_start_matches("#/components/schemas/");
            return bounds(&schemas[name], schemas);
        }
        (property["minimum"].as_i64(), property["maximum"].as_i64())
    }

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
