//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// The process is up.
pub async fn alive() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Postgres answers (the schema was migrated before the server started listening).
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = match state.pool.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    let status = if database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"database": database})))
}
