//! The `api_requests` and `api_request_logs` tables.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rql::{Field, FieldKind, Schema};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::ToSchema;

use super::StoreError;
use super::list::{ListRequest, Page, fetch_page};
use super::log_lines::LogTable;
use super::text::storable_json;
use crate::domain::LogLine;

pub static API_REQUEST_SCHEMA: Schema = Schema {
    fields: &[
        Field::new("id", "id", FieldKind::Text),
        Field::new("functionName", "function_name", FieldKind::Text),
        Field::new("method", "method", FieldKind::Text),
        Field::new("path", "path", FieldKind::Text),
        Field::new("userId", "user_id", FieldKind::Text),
        Field::new("applicationId", "application_id", FieldKind::Text),
        Field::new("statusCode", "status_code", FieldKind::Integer),
        Field::new("timestamp", "timestamp", FieldKind::Timestamp),
        Field::new("duration", "duration", FieldKind::Number),
        Field::new("error", "error", FieldKind::Json),
    ],
};

const COLUMNS: &str = "id, function_name, method, path, user_id, application_id, status_code, timestamp, duration, error";

/// One call of an API function, as `GET /apiRequests` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiRequest {
    pub id: String,
    pub function_name: String,
    pub method: String,
    /// Path after the function name, with the query string.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    pub status_code: i32,
    #[serde(with = "crate::time::millis")]
    pub timestamp: DateTime<Utc>,
    /// Seconds.
    pub duration: f64,
    /// `{type: invocation | runtime | response, name, message}` when the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

#[derive(Clone)]
pub struct ApiRequests {
    pool: Pool,
}

impl ApiRequests {
    pub fn new(pool: Pool) -> Self {
        ApiRequests { pool }
    }

    pub async fn insert(&self, request: &ApiRequest) -> Result<(), StoreError> {
        // The error may carry the function's own error type and message.
        let error = request.error.clone().map(storable_json);
        let client = self.pool.get().await?;
        client
            .execute(
                &format!("INSERT INTO api_requests ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
                &[
                    &request.id,
                    &request.function_name,
                    &request.method,
                    &request.path,
                    &request.user_id,
                    &request.application_id,
                    &request.status_code,
                    &request.timestamp,
                    &request.duration,
                    &error,
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn find(&self, id: &str) -> Result<Option<ApiRequest>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM api_requests WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(api_request_from_row).transpose()
    }

    pub async fn list(&self, request: &ListRequest) -> Result<Page<ApiRequest>, StoreError> {
        let client = self.pool.get().await?;
        fetch_page(
            &client,
            "api_requests",
            COLUMNS,
            None,
            "timestamp ASC, id ASC",
            request,
            api_request_from_row,
        )
        .await
    }

    pub async fn append_logs(
        &self,
        api_request_id: &str,
        lines: &[LogLine],
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        API_REQUEST_LOGS
            .append(&client, api_request_id, lines)
            .await
    }

    pub async fn logs(
        &self,
        api_request_id: &str,
        request: &ListRequest,
    ) -> Result<Page<LogLine>, StoreError> {
        let client = self.pool.get().await?;
        API_REQUEST_LOGS
            .page(&client, api_request_id, request)
            .await
    }
}

const API_REQUEST_LOGS: LogTable = LogTable {
    table: "api_request_logs",
    owner: "api_request_id",
};

fn api_request_from_row(row: &Row) -> Result<ApiRequest, StoreError> {
    Ok(ApiRequest {
        id: row.try_get("id")?,
        function_name: row.try_get("function_name")?,
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        user_id: row.try_get("user_id")?,
        application_id: row.try_get("application_id")?,
        status_code: row.try_get("status_code")?,
        timestamp: row.try_get("timestamp")?,
        duration: row.try_get("duration")?,
        error: row.try_get("error")?,
    })
}
