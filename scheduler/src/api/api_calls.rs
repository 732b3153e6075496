//! `/tasks/v1/api/{functionName}[/path][?query]`: an HTTP endpoint served by a function. The
//! request becomes an API Gateway v2.0 event, a worker runs the function (request/reply over
//! RabbitMQ), and its return value becomes the HTTP response after validation. Every call is
//! recorded as an API request once the response is on its way.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

use common::db::StoreError;
use common::db::api_requests::ApiRequest;
use common::domain::{FunctionDefinition, TaskErrorType};
use common::messages::{ApiInvocation, ApiOutcome, WorkMessage};

use super::AppState;
use super::error::ApiError;
use crate::api::auth::{FunctionCall, Identity};
use common::domain::PermissionMode;

pub const PREFIX: &str = "/tasks/v1/api/";
/// Largest request body and response body, as the reference's 6 MB.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Longest `timeLimit` of a function served as an API.
pub const MAX_API_TIME_LIMIT: i32 = 30;
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// The `function` label of calls to a name no function has: anyone may call any name, and a
/// label per name would grow the metrics without bound and list what callers tried.
pub const UNKNOWN_FUNCTION_LABEL: &str = "(unknown)";

/// Headers only the service may set: a caller's own copies are dropped.
const USER_HEADER: &str = "x-exh-requesting-user-id";
const APPLICATION_HEADER: &str = "x-exh-requesting-application-id";

pub async fn invoke(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let started = Instant::now();
    let timestamp = common::time::now();
    let id = common::id::ObjectId::generate().to_string();
    let (function_name, raw_path) = split_path(uri.path());
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let function = state.definitions.get(&function_name).await;
    let label = match &function {
        Ok(Some(_)) => function_name.as_str(),
        _ => UNKNOWN_FUNCTION_LABEL,
    };
    let outcome = call(
        &state,
        &identity,
        &id,
        &method,
        &function_name,
        function,
        &raw_path,
        &query,
        &headers,
        body,
    )
    .await;
    let (response, status, error) = match outcome {
        Ok(response) => {
            let status = response.status().as_u16();
            (response, status, None)
        }
        Err((error, kind)) => {
            let status = error.status().as_u16();
            let recorded =
                json!({"type": kind, "name": error.body().name, "message": error.to_string()});
            (error.into_response(), status, Some(recorded))
        }
    };
    state
        .metrics
        .api_requests
        .with_label_values(&[label, &status.to_string()])
        .inc();
    let record = ApiRequest {
        id,
        function_name,
        method: method.to_string(),
        path: format!("{raw_path}{query}"),
        user_id: identity.user_id(),
        application_id: identity.application_id(),
        status_code: i32::from(status),
        timestamp,
        duration: started.elapsed().as_secs_f64(),
        error,
    };
    // Recording never delays or breaks the response.
    let requests = state.api_requests.clone();
    tokio::spawn(async move {
        if let Err(error) = requests.insert(&record).await {
            tracing::warn!(api_request_id = %record.id, %error, "could not record an API request");
        }
    });
    response
}

/// `/tasks/v1/api/name/a/b` → (`name`, `/a/b`); no path → `/`.
fn split_path(path: &str) -> (String, String) {
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    match rest.split_once('/') {
        Some((name, tail)) => (name.to_owned(), format!("/{tail}")),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

/// What went wrong and at which stage (`invocation`, `runtime` or `response`), for the record.
type CallError = (ApiError, &'static str);

#[allow(clippy::too_many_arguments)]
async fn call(
    state: &AppState,
    identity: &Identity,
    id: &str,
    method: &Method,
    function_name: &str,
    function: Result<Option<FunctionDefinition>, StoreError>,
    raw_path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, CallError> {
    let invocation = |error: ApiError| (error, "invocation");
    const METHODS: [Method; 7] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ];
    if !METHODS.contains(method) {
        return Err(invocation(ApiError::MethodNotAllowed(format!(
            "{method} is not supported by API functions"
        ))));
    }
    let body = body.map_err(|_| invocation(ApiError::BodyTooLarge(MAX_PAYLOAD_BYTES)))?;
    let function = function.map_err(|e| invocation(e.into()))?;
    // An unknown function is refused like a protected one: names are not revealed.
    let mode = function
        .as_ref()
        .map_or(PermissionMode::PermissionRequired, |f| {
            f.execution_options.permission_mode
        });
    identity
        .require_function_mode(mode, FunctionCall::Api, function_name)
        .map_err(|denied| invocation(denied.into()))?;
    let function =
        function.ok_or_else(|| invocation(super::functions::unknown_function(function_name)))?;
    if function.time_limit > MAX_API_TIME_LIMIT {
        return Err(invocation(ApiError::TimeLimitExceedsApiMaximum(
            function.time_limit,
        )));
    }
    if !function.enabled {
        return Err(invocation(ApiError::LambdaInvocation {
            message: format!("The function `{function_name}` is disabled"),
            task_id: None,
        }));
    }
    let hidden = state.auth.credential_headers();
    let event = request_event(
        id, identity, &hidden, method, raw_path, query, headers, &body,
    );
    let message = WorkMessage::Api(ApiInvocation {
        api_request_id: id.to_owned(),
        function_name: function_name.to_owned(),
        event,
        function_version: Some(function.version),
    });
    let wait = Duration::from_secs(function.time_limit.max(1) as u64) + ANSWER_MARGIN;
    let reply = state.requester.request(&message, wait).await.map_err(|e| {
        invocation(ApiError::LambdaInvocation {
            message: format!("The function could not be executed: {e}"),
            task_id: None,
        })
    })?;
    let outcome: ApiOutcome = serde_json::from_slice(&reply).map_err(|e| {
        invocation(ApiError::LambdaInvocation {
            message: format!("The worker's answer is unreadable: {e}"),
            task_id: None,
        })
    })?;
    match outcome {
        ApiOutcome::Returned(value) => http_response(value).map_err(|e| (e, "response")),
        ApiOutcome::Failed(error) if error.kind == TaskErrorType::Runtime => Err((
            ApiError::LambdaRuntime {
                task_id: None,
                name: error.name,
                message: error.message,
            },
            "runtime",
        )),
        ApiOutcome::Failed(error) => Err(invocation(ApiError::LambdaInvocation {
            message: format!("{}: {}", error.name, error.message),
            task_id: None,
        })),
    }
}

/// The API Gateway payload v2.0 request event.
#[allow(clippy::too_many_arguments)]
fn request_event(
    id: &str,
    identity: &Identity,
    hidden: &[&str],
    method: &Method,
    raw_path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Value {
    let mut header_map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str().to_ascii_lowercase();
        // The caller's credentials stay here; the function learns who called from the
        // service's own headers below, which a caller cannot forge.
        if [USER_HEADER, APPLICATION_HEADER].contains(&name.as_str())
            || hidden.contains(&name.as_str())
        {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        header_map
            .entry(name)
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    if let Some(user_id) = identity.user_id() {
        header_map.insert(USER_HEADER.to_owned(), user_id);
    }
    if let Some(application_id) = identity.application_id() {
        header_map.insert(APPLICATION_HEADER.to_owned(), application_id);
    }
    let mut parameters: BTreeMap<String, String> = BTreeMap::new();
    for pair in query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(&text.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        parameters
            .entry(decode(key))
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&decode(value));
            })
            .or_insert_with(|| decode(value));
    }
    let (body, is_base64) = match std::str::from_utf8(body) {
        Ok(text) => (Value::String(text.to_owned()), false),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    };
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": header_map,
        "queryStringParameters": parameters,
        "requestContext": {
            "http": {
                "method": method.as_str(),
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "userAgent": headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default(),
            },
            "requestId": id,
            "timeEpoch": chrono::Utc::now().timestamp_millis(),
        },
        "body": body,
        "isBase64Encoded": is_base64,
    })
}

/// The function's return value as an HTTP response, validated as the reference says.
fn http_response(value: Value) -> Result<Response, ApiError> {
    let invalid = ApiError::InvalidApiFunctionResult;
    let Value::Object(mut result) = value else {
        return Err(invalid(
            "The result is expected to be an object with a statusCode".into(),
        ));
    };
    let status = match result.get("statusCode") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|s| (200..=499).contains(&s)) => {
            n.as_u64().unwrap_or(200) as u16
        }
        other => {
            return Err(invalid(format!(
                "The status code is expected to be a number between 200 and 499. Returned value: {}",
                other
                    .map(Value::to_string)
                    .unwrap_or_else(|| "undefined".into())
            )));
        }
    };
    let status = StatusCode::from_u16(status).map_err(|e| invalid(e.to_string()))?;
    let headers = match result.remove("headers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(headers)) => headers,
        Some(_) => return Err(invalid("headers is expected to be an object".into())),
    };
    let base64 = matches!(result.get("isBase64Encoded"), Some(Value::Bool(true)));
    let body: Vec<u8> = match result.remove("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) if base64 => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| invalid("body is marked isBase64Encoded but is not base64".into()))?,
        Some(Value::String(text)) => text.into_bytes(),
        Some(_) if base64 => return Err(invalid("a base64 body must be a string".into())),
        Some(other) => serde_json::to_vec(&other).unwrap_or_default(),
    };
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(invalid(format!(
            "The response body exceeds {MAX_PAYLOAD_BYTES} bytes"
        )));
    }
    let mut response = Response::builder().status(status);
    let mut has_content_type = false;
    for (name, value) in headers {
        let value = match value {
            Value::String(text) => text,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(invalid(format!("header `{name}` must have a string value"))),
        };
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        let valid_value = value.chars().all(|c| (' '..='~').contains(&c) || c == '\t');
        if !valid_name || !valid_value {
            return Err(invalid(format!(
                "header `{name}` has an invalid name or value"
            )));
        }
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            continue;
        }
        has_content_type |= lower == "content-type";
        let name = HeaderName::from_bytes(lower.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let value = HeaderValue::from_str(&value).map_err(|e| invalid(e.to_string()))?;
        response = response.header(name, value);
    }
    if !has_content_type {
        response = response.header("content-type", "application/json");
    }
    response
        .body(Body::from(body))
        .map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_function_name_from_the_path() {
        assert_eq!(split_path("/tasks/v1/api/fn"), ("fn".into(), "/".into()));
        assert_eq!(split_path("/tasks/v1/api/fn/"), ("fn".into(), "/".into()));
        assert_eq!(
            split_path("/tasks/v1/api/fn/hello/world"),
            ("fn".into(), "/hello/world".into())
        );
    }

    #[test]
    fn validates_function_results() {
        assert!(http_response(json!({"statusCode": 200, "body": {"a": 1}})).is_ok());
        assert!(http_response(json!({"statusCode": 499})).is_ok());
        for bad in [
            json!({"statusCode": 500}),
            json!({"statusCode": 199}),
            json!({"statusCode": "200"}),
            json!({"body": "x"}),
            json!("just a string"),
            json!({"statusCode": 200, "headers": {"bad name": "x"}}),
            json!({"statusCode": 200, "headers": {"x": "line\nbreak"}}),
            json!({"statusCode": 200, "isBase64Encoded": true, "body": "***"}),
        ] {
            assert!(http_response(bad.clone()).is_err(), "{bad}");
        }
    }
}
