//! The REST API under `/tasks/v1`, wire-compatible with the Extra Horizon Tasks Service.
//!
//! A request goes from the HTTP [`server`] through [`authorize`] (who is calling, from
//! [`auth`], and whether they may) to the route of its resource, one file each; errors
//! become responses in [`error`] only. Tasks created here are submitted to the dispatcher;
//! direct executions and API calls instead wait for a worker's answer ([`requester`]),
//! reading function definitions from the [`definition_cache`].

pub mod api_calls;
pub mod api_requests;
pub mod auth;
pub mod authorize;
pub mod body;
pub mod definition_cache;
pub mod direct_executions;
pub mod error;
pub mod functions;
pub mod health;
pub mod openapi;
pub mod paging;
mod parser_errors;
pub mod requester;
pub mod schedules;
pub mod server;
pub mod tasks;
pub mod triggers;

use crate::dispatch::DispatchHandle;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use deadpool_postgres::Pool;
use definition_cache::DefinitionCache;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use common::db::{ApiRequests, Functions, Lifecycle, TaskLogs, Tasks};

use crate::db::{Schedules, Triggers};

use auth::Authenticator;
use common::metrics::Metrics;
use error::ApiError;
use requester::Requester;

/// Largest request body in general.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Largest body on function routes, which carry a base64 code archive of up to 10 MB.
pub const FUNCTION_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub functions: Functions,
    /// Function definitions read by direct executions and API calls; forget them after a
    /// function write.
    pub definitions: DefinitionCache,
    pub tasks: Tasks,
    /// Status changes the API makes: cancels.
    pub lifecycle: Lifecycle,
    pub logs: TaskLogs,
    pub schedules: Schedules,
    pub triggers: Triggers,
    pub requester: Arc<Requester>,
    pub api_requests: ApiRequests,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Authenticator>,
    /// Where created tasks are submitted, to be stored and published.
    pub dispatch: DispatchHandle,
}

impl AppState {
    pub fn new(
        pool: Pool,
        tasks: Tasks,
        dispatch: DispatchHandle,
        requester: Arc<Requester>,
        metrics: Arc<Metrics>,
        auth: Authenticator,
        definitions: DefinitionCache,
    ) -> Self {
        AppState {
            dispatch,
            metrics,
            auth: Arc::new(auth),
            requester,
            functions: definitions.store().clone(),
            definitions,
            tasks,
            lifecycle: Lifecycle::new(pool.clone()),
            logs: TaskLogs::new(pool.clone()),
            schedules: Schedules::new(pool.clone()),
            triggers: Triggers::new(pool.clone()),
            api_requests: ApiRequests::new(pool.clone()),
            pool,
        }
    }
}

/// The answer of mutations that return no entity.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AffectedRecords {
    affected_records: u64,
}

impl AffectedRecords {
    pub fn new(affected_records: u64) -> Self {
        AffectedRecords { affected_records }
    }
}

/// The body limit that applies to a path (used for the error message).
pub fn body_limit(path: &str) -> usize {
    if path.starts_with("/tasks/v1/functions") {
        FUNCTION_BODY_LIMIT
    } else {
        BODY_LIMIT
    }
}

pub fn router(state: AppState) -> Router {
    let functions = Router::new()
        .route(
            "/tasks/v1/functions",
            get(functions::list).post(functions::create),
        )
        .route(
            "/tasks/v1/functions/{name}",
            get(functions::get)
                .put(functions::update)
                .delete(functions::delete),
        )
        // The 1.2.0 changelog says GET; the spec and the SDK use POST. Both are served.
        .route(
            "/tasks/v1/functions/{name}/enable",
            post(functions::enable).get(functions::enable),
        )
        .route(
            "/tasks/v1/functions/{name}/disable",
            post(functions::disable).get(functions::disable),
        )
        .route(
            "/tasks/v1/functions/{name}/execute",
            post(direct_executions::execute),
        )
        .layer(DefaultBodyLimit::max(FUNCTION_BODY_LIMIT));

    let rest = Router::new()
        .route("/tasks/v1", get(tasks::list).post(tasks::create))
        .route("/tasks/v1/{task_id}/cancel", post(tasks::cancel))
        .route("/tasks/v1/{task_id}/logs", get(tasks::logs))
        .route(
            "/tasks/v1/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route(
            "/tasks/v1/schedules/{schedule_id}",
            delete(schedules::delete),
        )
        .route(
            "/tasks/v1/triggers",
            get(triggers::list).post(triggers::create),
        )
        .route(
            "/tasks/v1/triggers/{trigger_id}",
            get(triggers::get)
                .put(triggers::update)
                .delete(triggers::delete),
        )
        .route("/tasks/v1/apiRequests", get(api_requests::list))
        .route(
            "/tasks/v1/apiRequests/{api_request_id}/logs",
            get(api_requests::logs),
        )
        .route("/tasks/v1/health", get(health::alive))
        .route("/tasks/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(health::alive))
        .route("/metrics", get(health::metrics))
        .route("/readyz", get(health::ready))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));

    let api = Router::new()
        .route("/tasks/v1/api/{function_name}", any(api_calls::invoke))
        .route("/tasks/v1/api/{function_name}/", any(api_calls::invoke))
        .route(
            "/tasks/v1/api/{function_name}/{*path}",
            any(api_calls::invoke),
        )
        .layer(DefaultBodyLimit::max(api_calls::MAX_PAYLOAD_BYTES));

    functions
        .merge(rest)
        .merge(api)
        .fallback(not_found)
        .layer(axum::middleware::map_response(method_not_allowed))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize::authorize,
        ))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::unknown(format_args!("no endpoint at {}", uri.path()))
}

/// The router answers an unsupported method with an empty 405 and the `Allow` header; the
/// body becomes the Extra Horizon error, the header stays.
async fn method_not_allowed(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let allowed = allow
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let mut rewritten = ApiError::MethodNotAllowed(format!(
        "This method is not supported here; allowed: {allowed}"
    ))
    .into_response();
    if let Some(allow) = allow {
        rewritten.headers_mut().insert(header::ALLOW, allow);
    }
    rewritten
}

/// Longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Most bytes of request headers accepted, names and values together.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields accepted (hyper's own bound, which it enforces with a bare 431; it is
/// given more room, see [`server::PARSED_HEADERS`], so that this check answers).
pub const MAX_HEADER_FIELDS: usize = 100;

/// Bounds the request line and headers before routing (the HTTP server's own limits are far
/// larger and answer without the Extra Horizon error body).
pub async fn check_request_size(request: Request) -> Result<Request, ApiError> {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong(MAX_URI_BYTES));
    }
    if request.headers().len() > MAX_HEADER_FIELDS {
        return Err(ApiError::TooManyHeaders(MAX_HEADER_FIELDS));
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge(MAX_HEADER_BYTES));
    }
    Ok(request)
}

/// Clients use both `/tasks/v1/functions/` and `/tasks/v1/schedules`: a trailing slash is
/// removed before routing, so every route answers to both forms.
pub async fn trim_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    // The path of an API function is the function's business, trailing slash included.
    if path.len() > 1 && path.ends_with('/') && !path.starts_with(api_calls::PREFIX) {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let rebuilt = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    request
}
