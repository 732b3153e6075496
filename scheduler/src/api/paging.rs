//! List endpoints: RQL in the query string → a [`ListRequest`]; rows → the paged response
//! `{page: {total, offset, limit}, data}` with `select` applied.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use common::db::{ListRequest, Page};
use rql::Schema;

use super::error::ApiError;

/// Page sizes of one kind of list.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default: i64,
    pub max: i64,
}

/// Tasks, schedules: 20 by default, at most 100 (a larger `limit` is clamped and echoed).
pub const RESOURCE_LIMITS: Limits = Limits {
    default: 20,
    max: 100,
};
/// Log lines: 100 by default, at most 1000.
pub const LOG_LIMITS: Limits = Limits {
    default: 100,
    max: 1000,
};

/// A parsed list query for one resource.
pub struct ListQuery {
    pub request: ListRequest,
    select: Option<Vec<String>>,
}

impl ListQuery {
    pub fn parse(raw: Option<&str>, schema: &Schema, limits: Limits) -> Result<Self, ApiError> {
        let invalid = |e: rql::RqlError| ApiError::InvalidRql(e.to_string());
        let query = rql::parse(raw.unwrap_or("")).map_err(invalid)?;
        let filter = query
            .filter
            .as_ref()
            .map(|expr| rql::compile_filter(expr, schema, 1))
            .transpose()
            .map_err(invalid)?;
        let order_by = rql::compile_order_by(&query.sort, schema).map_err(invalid)?;
        if let Some(select) = &query.select {
            rql::check_select(select, schema).map_err(invalid)?;
        }
        Ok(ListQuery {
            request: ListRequest {
                filter,
                order_by,
                limit: query.limit.unwrap_or(limits.default).clamp(0, limits.max),
                offset: query.offset.unwrap_or(0).max(0),
                count_total: !query.skip_count,
            },
            select: query.select,
        })
    }

    /// The response body for a page of items.
    pub fn respond<T: Serialize>(&self, page: Page<T>) -> Result<PagedResult, ApiError> {
        let data = page
            .items
            .iter()
            .map(|item| {
                let value = serde_json::to_value(item).map_err(|error| {
                    tracing::error!(%error, "could not serialize a list item");
                    ApiError::Server
                })?;
                Ok(match &self.select {
                    Some(fields) => project(value, fields),
                    None => value,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(PagedResult {
            page: PageInfo {
                total: page.total,
                offset: self.request.offset,
                limit: self.request.limit,
            },
            data,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PageInfo {
    /// Number of matching items; omitted when the query has `skipCount()`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PagedResult {
    pub page: PageInfo,
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
}

/// Keeps only the selected fields (`a`, or `a.b` for a nested one) of a JSON object.
fn project(value: Value, fields: &[String]) -> Value {
    let Value::Object(source) = value else {
        return value;
    };
    let mut target = Map::new();
    for field in fields {
        let path: Vec<&str> = field.split('.').collect();
        copy_path(&source, &mut target, &path);
    }
    Value::Object(target)
}

fn copy_path(source: &Map<String, Value>, target: &mut Map<String, Value>, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(value) = source.get(*first) else {
        return;
    };
    if rest.is_empty() {
        target.insert((*first).to_owned(), value.clone());
        return;
    }
    if let Value::Object(inner) = value {
        let entry = target
            .entry((*first).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(entry) = entry {
            copy_path(inner, entry, rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn projects_top_level_and_nested_fields() {
        let value = json!({"id": "x", "status": "new", "data": {"a": 1, "b": {"c": 2}}});
        let fields = vec!["id".to_string(), "data.b.c".to_string()];
        assert_eq!(
            project(value, &fields),
            json!({"id": "x", "data": {"b": {"c": 2}}})
        );
    }
}
