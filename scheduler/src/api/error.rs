//! The one place where errors become HTTP responses in the Extra Horizon error format:
//! `{"code": <int>, "name": "<UPPER_SNAKE>", "message": "<text>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use common::db::StoreError;

use crate::api::auth::Denied;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    IdFormat(String),
    #[error("The request body is empty")]
    EmptyBody,
    #[error("Missing required fields: {}", .0.join(", "))]
    MissingFields(Vec<&'static str>),
    #[error("{0}")]
    FieldFormat(String),
    #[error("{0}")]
    ResourceUnknown(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("Invalid RQL: {0}")]
    InvalidRql(String),
    #[error("{0}")]
    BodyFormat(String),
    #[error("The request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("{0}")]
    IllegalState(String),
    #[error("{0}")]
    InvalidFunctionCode(String),
    #[error("{0}")]
    InvalidFunctionConfiguration(String),
    #[error("{0}")]
    InvalidFunctionName(String),
    #[error("No logs were found for this task")]
    NoTaskLogsFound,
    #[error("The function's timeLimit of {0} s exceeds the direct execution maximum of 30 s")]
    TimeLimitExceedsDirectMaximum(i32),
    /// The function could not be invoked; `task_id` when a task was created.
    #[error("{message}")]
    LambdaInvocation {
        message: String,
        task_id: Option<String>,
    },
    /// The function ran and failed; `task_id` for direct executions.
    #[error("The function failed: {name}: {message}")]
    LambdaRuntime {
        task_id: Option<String>,
        name: String,
        message: String,
    },
    #[error("{0}")]
    InvalidApiFunctionResult(String),
    #[error("The function's timeLimit of {0} s exceeds the API function maximum of 30 s")]
    TimeLimitExceedsApiMaximum(i32),
    #[error("No logs were found for this API request")]
    NoApiRequestLogsFound,
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    NotAuthenticated(String),
    #[error("{0}")]
    NoPermission(String),
    #[error(
        "The request is not valid HTTP: its method, target or a header holds characters HTTP \
         does not allow (percent-encode `\"`, `<`, `>`, spaces and the like in the path and query)"
    )]
    MalformedRequest,
    #[error("The request path and query are longer than {0} bytes")]
    UriTooLong(usize),
    #[error("The request headers take more than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("The request has more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("The query took too long and was cancelled; narrow it down")]
    LongQuery,
    #[error("An internal error occurred")]
    Server,
}

/// The error body every endpoint returns; executions add the task and the function's error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: u32,
    pub name: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_error: Option<RuntimeError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeError {
    pub name: String,
    pub message: String,
}

impl ApiError {
    /// HTTP status, Extra Horizon code and name.
    fn parts(&self) -> (StatusCode, u32, &'static str) {
        use ApiError::*;
        match self {
            Server => (StatusCode::INTERNAL_SERVER_ERROR, 1, "SERVER_EXCEPTION"),
            IdFormat(_) => (StatusCode::BAD_REQUEST, 12, "ID_FORMAT_EXCEPTION"),
            EmptyBody => (StatusCode::BAD_REQUEST, 13, "EMPTY_BODY_EXCEPTION"),
            MissingFields(_) => (
                StatusCode::BAD_REQUEST,
                14,
                "MISSING_REQUIRED_FIELDS_EXCEPTION",
            ),
            FieldFormat(_) => (StatusCode::BAD_REQUEST, 15, "FIELD_FORMAT_EXCEPTION"),
            ResourceUnknown(_) => (StatusCode::NOT_FOUND, 16, "RESOURCE_UNKNOWN_EXCEPTION"),
            AlreadyExists(_) => (
                StatusCode::BAD_REQUEST,
                17,
                "RESOURCE_ALREADY_EXISTS_EXCEPTION",
            ),
            InvalidRql(_) => (StatusCode::BAD_REQUEST, 19, "INVALID_RQL_EXCEPTION"),
            BodyFormat(_) => (StatusCode::BAD_REQUEST, 22, "BODY_FORMAT_EXCEPTION"),
            BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, 22, "BODY_FORMAT_EXCEPTION"),
            IllegalState(_) => (StatusCode::BAD_REQUEST, 27, "ILLEGAL_STATE_EXCEPTION"),
            InvalidFunctionCode(_) => (
                StatusCode::BAD_REQUEST,
                1401,
                "INVALID_FUNCTION_CODE_EXCEPTION",
            ),
            InvalidFunctionConfiguration(_) => (
                StatusCode::BAD_REQUEST,
                1402,
                "INVALID_FUNCTION_CONFIGURATION_EXCEPTION",
            ),
            InvalidFunctionName(_) => (
                StatusCode::BAD_REQUEST,
                1407,
                "INVALID_FUNCTION_NAME_EXCEPTION",
            ),
            NoTaskLogsFound => (StatusCode::BAD_REQUEST, 1408, "NO_TASK_LOGS_FOUND"),
            TimeLimitExceedsDirectMaximum(_) => (
                StatusCode::BAD_REQUEST,
                1404,
                "TIME_LIMIT_EXCEEDS_DIRECT_EXECUTION_MAXIMUM_EXCEPTION",
            ),
            LambdaInvocation { .. } => {
                (StatusCode::BAD_REQUEST, 1405, "LAMBDA_INVOCATION_EXCEPTION")
            }
            LambdaRuntime { .. } => (StatusCode::BAD_REQUEST, 1406, "LAMBDA_RUNTIME_EXCEPTION"),
            InvalidApiFunctionResult(_) => {
                (StatusCode::BAD_REQUEST, 1409, "INVALID_API_FUNCTION_RESULT")
            }
            TimeLimitExceedsApiMaximum(_) => (
                StatusCode::BAD_REQUEST,
                1411,
                "TIME_LIMIT_EXCEEDS_API_FUNCTION_MAXIMUM_EXCEPTION",
            ),
            NoApiRequestLogsFound => (StatusCode::BAD_REQUEST, 1413, "NO_API_REQUEST_LOGS_FOUND"),
            NotAuthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                104,
                "USER_NOT_AUTHENTICATED_EXCEPTION",
            ),
            NoPermission(_) => (StatusCode::UNAUTHORIZED, 10, "NO_PERMISSION_EXCEPTION"),
            // The reference documents 401, which clients would take for an auth failure.
            UriTooLong(_) => (StatusCode::URI_TOO_LONG, 26, "ILLEGAL_ARGUMENT_EXCEPTION"),
            MalformedRequest => (StatusCode::BAD_REQUEST, 26, "ILLEGAL_ARGUMENT_EXCEPTION"),
            HeadersTooLarge(_) | TooManyHeaders(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                26,
                "ILLEGAL_ARGUMENT_EXCEPTION",
            ),
            LongQuery => (StatusCode::BAD_REQUEST, 21, "LONG_QUERY_EXCEPTION"),
            MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                26,
                "ILLEGAL_ARGUMENT_EXCEPTION",
            ),
        }
    }

    pub fn unknown(what: impl std::fmt::Display) -> ApiError {
        ApiError::ResourceUnknown(format!("Requested resource is unknown: {what}"))
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn body(&self) -> ErrorBody {
        let (_, code, name) = self.parts();
        let (task_id, runtime_error) = match self {
            ApiError::LambdaInvocation { task_id, .. } => (task_id.clone(), None),
            ApiError::LambdaRuntime {
                task_id,
                name,
                message,
            } => (
                task_id.clone(),
                Some(RuntimeError {
                    name: name.clone(),
                    message: message.clone(),
                }),
            ),
            _ => (None, None),
        };
        ErrorBody {
            code,
            name,
            message: self.to_string(),
            task_id,
            runtime_error,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_timeout() {
            tracing::warn!(%error, "a statement ran into database.statement_timeout_ms");
            return ApiError::LongQuery;
        }
        if error.is_data_exception() {
            tracing::warn!(%error, "refused a value the database cannot store");
            return ApiError::FieldFormat(
                "A value cannot be stored: it is out of range or holds characters that cannot be stored"
                    .to_owned(),
            );
        }
        // The client learns only that something failed; the details go to the log.
        tracing::error!(%error, "storage error while serving a request");
        ApiError::Server
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::NotAuthenticated(reason) => ApiError::NotAuthenticated(reason),
            Denied::NoPermission(_) => ApiError::NoPermission(denied.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.parts();
        (status, Json(self.body())).into_response()
    }
}
