//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use serde_json::{Value, json};

use super::AppState;

/// Prometheus metrics.
pub async fn metrics(
    State(state): State<AppState>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    state.metrics.observe_pool(&state.pool);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// The process is up.
pub async fn alive() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Postgres and RabbitMQ answer (the schema was migrated before the server started
/// listening).
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = common::db::is_reachable(&state.pool).await;
    let broker = state.requester.is_connected().await;
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"database": database, "broker": broker})),
    )
}
