//! `/tasks/v1/functions`: create, list, get, update, delete, enable and disable functions.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use common::code_archive::CodeArchive;
use common::domain::{
    EnvironmentVariable, ExecutionOptions, FunctionDefinition, FunctionName, PermissionMode,
    Priority, RetryPolicy, Runtime,
};

use super::body::{self, JsonObject, OptionalJsonObject, Required};
use super::error::{ApiError, ErrorBody};
use super::{AffectedRecords, AppState};

pub const TIME_LIMIT_SECONDS: std::ops::RangeInclusive<i64> = 3..=300;
pub const MEMORY_LIMIT_MB: std::ops::RangeInclusive<i64> = 128..=10240;
const DEFAULT_TIME_LIMIT: i64 = 30;
const DEFAULT_MEMORY_LIMIT: i64 = 128;
/// The serialized `environmentVariables` object may not exceed this, as in the reference.
pub const MAX_ENVIRONMENT_BYTES: usize = 4096;
const MAX_DESCRIPTION_CHARS: usize = 4096;
const MAX_ENTRY_POINT_CHARS: usize = 256;

/// Body of `POST /functions` and `PUT /functions/{name}`: on update every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionInput {
    name: Option<String>,
    description: Option<String>,
    /// Base64 of a zip archive of the code; write-only.
    code: Option<String>,
    entry_point: Option<String>,
    /// A Lambda runtime identifier: `python3.x`, `nodejsNN.x`, `provided`, `provided.al2023`.
    runtime: Option<String>,
    #[serde(default, deserialize_with = "body::whole_number")]
    #[schema(value_type = Option<i64>, minimum = 3, maximum = 300)]
    time_limit: Option<i64>,
    #[serde(default, deserialize_with = "body::whole_number")]
    #[schema(value_type = Option<i64>, minimum = 128, maximum = 10240)]
    memory_limit: Option<i64>,
    environment_variables: Option<BTreeMap<String, EnvironmentVariable>>,
    execution_options: Option<ExecutionOptionsInput>,
    retry_policy: Option<RetryPolicyInput>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ExecutionOptionsInput {
    permission_mode: Option<PermissionMode>,
    default_priority: Option<Priority>,
    /// Extension: days this function's finished tasks and API requests are kept (0: for
    /// ever), instead of the service's `retention.days`.
    #[serde(default, deserialize_with = "body::whole_number")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 36500)]
    retention_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RetryPolicyInput {
    enabled: Option<bool>,
    errors_to_retry: Option<Vec<String>>,
}

/// One line of the function list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSummary {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(with = "common::time::millis")]
    #[schema(value_type = String)]
    update_timestamp: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionList {
    page: super::paging::PageInfo,
    data: Vec<FunctionSummary>,
}

#[utoipa::path(get, path = "/tasks/v1/functions", tag = "functions",
    responses((status = 200, description = "Every function, in one page; RQL is ignored", body = FunctionList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<FunctionList>, ApiError> {
    let functions = state.functions.list().await?;
    let total = functions.len() as i64;
    Ok(Json(FunctionList {
        page: super::paging::PageInfo {
            total: Some(total),
            offset: 0,
            limit: total,
        },
        data: functions
            .into_iter()
            .map(|f| FunctionSummary {
                name: f.name,
                description: f.description,
                update_timestamp: f.update_timestamp,
            })
            .collect(),
    }))
}

#[utoipa::path(post, path = "/tasks/v1/functions", tag = "functions", request_body = FunctionInput,
    responses(
        (status = 200, description = "The created function", body = FunctionDefinition),
        (status = 400, description = "Invalid input (14, 15, 17, 1401, 1402, 1407)", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    JsonObject(object): JsonObject,
) -> Result<Json<FunctionDefinition>, ApiError> {
    let input: FunctionInput = body::parse(object)?;
    Required::default()
        .check("name", &input.name)
        .check("code", &input.code)
        .check("entryPoint", &input.entry_point)
        .check("runtime", &input.runtime)
        .finish()?;
    let name = input.name.as_deref().unwrap_or_default();
    let name = FunctionName::parse(name).map_err(ApiError::InvalidFunctionName)?;
    let now = common::time::now();
    let blank = FunctionDefinition {
        name,
        description: None,
        enabled: true,
        entry_point: String::new(),
        runtime: String::new(),
        time_limit: DEFAULT_TIME_LIMIT as i32,
        memory_limit: DEFAULT_MEMORY_LIMIT as i32,
        environment_variables: BTreeMap::new(),
        execution_options: ExecutionOptions::default(),
        retry_policy: RetryPolicy::default(),
        code_sha256: String::new(),
        version: 1,
        creation_timestamp: now,
        update_timestamp: now,
    };
    let (function, code) = apply(blank, input).await?;
    let Some(code) = code else {
        return Err(ApiError::MissingFields(vec!["code"]));
    };
    match state.functions.create(&function, &code).await {
        Ok(created) => Ok(Json(created)),
        Err(e) if e.is_unique_violation() => Err(ApiError::AlreadyExists(format!(
            "A function named `{}` already exists",
            function.name
        ))),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/tasks/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = "Function name")),
    responses(
        (status = 200, description = "The function, without its code", body = FunctionDefinition),
        (status = 404, description = "Unknown function (16)", body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FunctionDefinition>, ApiError> {
    state
        .functions
        .get(&name)
        .await?
        .map(Json)
        .ok_or_else(|| unknown_function(&name))
}

#[utoipa::path(put, path = "/tasks/v1/functions/{name}", tag = "functions", request_body = FunctionInput,
    params(("name" = String, Path, description = "Function name")),
    responses(
        (status = 200, description = "Updated", body = AffectedRecords),
        (status = 400, description = "Invalid input (15, 1401, 1402)", body = ErrorBody),
        (status = 404, description = "Unknown function (16)", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(object): JsonObject,
) -> Result<Json<AffectedRecords>, ApiError> {
    let input: FunctionInput = body::parse(object)?;
    let existing = state
        .functions
        .get(&name)
        .await?
        .ok_or_else(|| unknown_function(&name))?;
    if input.name.as_deref().is_some_and(|new| new != name) {
        return Err(ApiError::FieldFormat(
            "A function cannot be renamed: `name` must match the URL".into(),
        ));
    }
    let (function, code) = apply(existing, input).await?;
    let affected = state.functions.update(&function, code.as_ref()).await?;
    state.definitions.forget_all();
    if affected == 0 {
        return Err(unknown_function(&name));
    }
    Ok(Json(AffectedRecords::new(affected)))
}

#[utoipa::path(delete, path = "/tasks/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = "Function name")),
    responses(
        (status = 200, description = "Deleted; its tasks and logs are kept", body = AffectedRecords),
        (status = 404, description = "Unknown function (16)", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AffectedRecords>, ApiError> {
    let deleted = state.functions.delete(&name).await?;
    state.definitions.forget_all();
    match deleted {
        0 => Err(unknown_function(&name)),
        n => Ok(Json(AffectedRecords::new(n))),
    }
}

#[utoipa::path(method(get, post), path = "/tasks/v1/functions/{name}/enable", tag = "functions",
    params(("name" = String, Path, description = "Function name")),
    responses(
        (status = 200, description = "Enabled (a no-op when already enabled)", body = AffectedRecords),
        (status = 404, description = "Unknown function (16)", body = ErrorBody)))]
pub async fn enable(
    State(state): State<AppState>,
    Path(name): Path<String>,
    _body: OptionalJsonObject,
) -> Result<Json<AffectedRecords>, ApiError> {
    set_enabled(&state, &name, true).await
}

#[utoipa::path(method(get, post), path = "/tasks/v1/functions/{name}/disable", tag = "functions",
    params(("name" = String, Path, description = "Function name")),
    responses(
        (status = 200, description = "Disabled: its tasks wait until it is enabled again", body = AffectedRecords),
        (status = 404, description = "Unknown function (16)", body = ErrorBody)))]
pub async fn disable(
    State(state): State<AppState>,
    Path(name): Path<String>,
    _body: OptionalJsonObject,
) -> Result<Json<AffectedRecords>, ApiError> {
    set_enabled(&state, &name, false).await
}

async fn set_enabled(
    state: &AppState,
    name: &str,
    enabled: bool,
) -> Result<Json<AffectedRecords>, ApiError> {
    let matched = state.functions.set_enabled(name, enabled).await?;
    state.definitions.forget_all();
    match matched {
        0 => Err(unknown_function(name)),
        n => Ok(Json(AffectedRecords::new(n))),
    }
}

pub fn unknown_function(name: &str) -> ApiError {
    ApiError::unknown(format_args!("function `{name}` does not exist"))
}

/// Applies the given fields of `input` to `function` and validates the result. Returns the new
/// definition and, when `code` was given, the validated archive.
async fn apply(
    mut function: FunctionDefinition,
    input: FunctionInput,
) -> Result<(FunctionDefinition, Option<CodeArchive>), ApiError> {
    let config_error = ApiError::InvalidFunctionConfiguration;
    if let Some(description) = input.description {
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::FieldFormat(format!(
                "description has more than {MAX_DESCRIPTION_CHARS} characters"
            )));
        }
        function.description = Some(description);
    }
    if let Some(runtime) = input.runtime {
        function.runtime = runtime;
    }
    let runtime = Runtime::from_identifier(&function.runtime).ok_or_else(|| {
        config_error(format!(
            "runtime `{}` is not supported: use python3.x, nodejsNN.x, provided, provided.al2 or provided.al2023",
            function.runtime.chars().take(64).collect::<String>()
        ))
    })?;
    if let Some(entry_point) = input.entry_point {
        function.entry_point = entry_point;
    }
    validate_entry_point(&function.entry_point, runtime).map_err(config_error)?;
    if let Some(time_limit) = input.time_limit {
        function.time_limit = in_range("timeLimit", time_limit, TIME_LIMIT_SECONDS)?;
    }
    if let Some(memory_limit) = input.memory_limit {
        function.memory_limit = in_range("memoryLimit", memory_limit, MEMORY_LIMIT_MB)?;
    }
    if let Some(variables) = input.environment_variables {
        validate_environment(&variables).map_err(config_error)?;
        function.environment_variables = variables;
    }
    if let Some(options) = input.execution_options {
        if let Some(mode) = options.permission_mode {
            function.execution_options.permission_mode = mode;
        }
        if let Some(priority) = options.default_priority {
            function.execution_options.default_priority = Some(priority.get());
        }
        if let Some(days) = options.retention_days {
            function.execution_options.retention_days = Some(in_range(
                "executionOptions.retentionDays",
                days,
                0..=36_500,
            )?);
        }
    }
    if let Some(policy) = input.retry_policy {
        if let Some(enabled) = policy.enabled {
            function.retry_policy.enabled = enabled;
        }
        if let Some(errors) = policy.errors_to_retry {
            function.retry_policy.errors_to_retry = errors;
        }
    }
    let code = match input.code {
        // Checking an archive decompresses all of it (up to 250 MB): not on a thread that
        // serves requests.
        Some(code) => Some(
            tokio::task::spawn_blocking(move || CodeArchive::from_base64(&code))
                .await
                .map_err(|_| ApiError::Server)?
                .map_err(|e| ApiError::InvalidFunctionCode(e.to_string()))?,
        ),
        None => None,
    };
    Ok((function, code))
}

fn in_range(
    field: &str,
    value: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i32, ApiError> {
    if range.contains(&value) {
        Ok(value as i32)
    } else {
        Err(ApiError::FieldFormat(format!(
            "{field} must be between {} and {}, got {value}",
            range.start(),
            range.end()
        )))
    }
}

fn validate_entry_point(entry_point: &str, runtime: Runtime) -> Result<(), String> {
    if entry_point.is_empty() || entry_point.chars().count() > MAX_ENTRY_POINT_CHARS {
        return Err(format!(
            "entryPoint must have 1 to {MAX_ENTRY_POINT_CHARS} characters"
        ));
    }
    if entry_point.chars().any(char::is_control) {
        return Err("entryPoint contains control characters".into());
    }
    let needs_export = matches!(runtime, Runtime::Python | Runtime::Node);
    if needs_export && !entry_point.contains('.') {
        return Err(format!(
            "entryPoint `{entry_point}` must have the form `file.handler`"
        ));
    }
    Ok(())
}

/// Names that the runtime itself sets for every function process.
const RESERVED_VARIABLES: &[&str] = &["_HANDLER", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR"];

fn validate_environment(variables: &BTreeMap<String, EnvironmentVariable>) -> Result<(), String> {
    for name in variables.keys() {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "environment variable name `{}` is invalid: use letters, digits and `_`, not starting with a digit",
                name.chars().take(64).collect::<String>()
            ));
        }
        if RESERVED_VARIABLES.contains(&name.as_str()) || name.starts_with("AWS_LAMBDA_") {
            return Err(format!("environment variable `{name}` is reserved"));
        }
    }
    if variables.values().any(|v| v.value.contains('\0')) {
        return Err("environment variable values cannot contain NUL characters".into());
    }
    let size = serde_json::to_vec(variables)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_ENVIRONMENT_BYTES {
        return Err(format!(
            "environmentVariables take {size} bytes, more than the limit of {MAX_ENVIRONMENT_BYTES}"
        ));
    }
    Ok(())
}
