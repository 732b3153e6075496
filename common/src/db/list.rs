//! Paged listing shared by every repository: an RQL filter compiled to SQL, an order, a page.

use rql::SqlFilter;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::StoreError;

/// What a list endpoint asks of a repository. `filter` placeholders start at `$1`.
#[derive(Debug, Default)]
pub struct ListRequest {
    pub filter: Option<SqlFilter>,
    /// Validated `ORDER BY` terms from the schema, or empty for the table's default order.
    pub order_by: String,
    pub limit: i64,
    pub offset: i64,
    pub count_total: bool,
}

#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Number of matching rows regardless of the page; `None` when not asked for.
    pub total: Option<i64>,
}

/// A repository-owned condition: given the number of its first placeholder it writes its SQL,
/// and these are its parameters.
pub type Scope<'a> = (
    &'a (dyn Fn(usize) -> String + Sync),
    &'a [&'a (dyn ToSql + Sync)],
);

/// Runs the page query (and the count when asked) against `table`.
///
/// `scope` is an extra condition owned by the repository (for example the task whose logs are
/// listed): given the number of its first placeholder, it writes the SQL for its parameters. `default_order` also serves as
/// the tie-breaker so pages are stable.
pub async fn fetch_page<T>(
    client: &deadpool_postgres::Client,
    table: &str,
    columns: &str,
    scope: Option<Scope<'_>>,
    default_order: &str,
    request: &ListRequest,
    map: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(filter) = &request.filter {
        conditions.push(format!("({})", filter.sql));
        params.extend(filter.params.iter().map(|p| p as &(dyn ToSql + Sync)));
    }
    if let Some((condition, scope_params)) = scope {
        conditions.push(condition(params.len() + 1));
        params.extend_from_slice(scope_params);
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let order = if request.order_by.is_empty() {
        default_order.to_owned()
    } else {
        format!("{}, {default_order}", request.order_by)
    };

    let total = if request.count_total {
        let sql = format!("SELECT count(*) FROM {table} {where_clause}");
        Some(
            client
                .query_one(&sql, &params)
                .await?
                .try_get::<_, i64>(0)?,
        )
    } else {
        None
    };
    let sql = format!(
        "SELECT {columns} FROM {table} {where_clause} ORDER BY {order} LIMIT ${} OFFSET ${}",
        params.len() + 1,
        params.len() + 2
    );
    params.push(&request.limit);
    params.push(&request.offset);
    let rows = client.query(&sql, &params).await?;
    let items = rows.iter().map(map).collect::<Result<_, _>>()?;
    Ok(Page { items, total })
}
