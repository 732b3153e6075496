//! RQL, the Resource Query Language of the Extra Horizon API, compiled to parameterized SQL.
//!
//! - [`parse`] turns the raw query string (`eq(status,new)&sort(-priority)&limit(10)`) into a
//!   [`Query`]: a filter [`Expr`] plus `select`, `sort`, `limit` and `skipCount`.
//!   Operators: `eq ne gt ge lt le in out like and or contains excludes`, FIQL shorthands
//!   (`f=v`, `f!=v`, `f>=v`, `f=ge=v`, `|` for or), typed values (`string:`, `number:`,
//!   `boolean:`, `date:`, `isodate:`, `epoch:`), `'quoted'` strings and the SDK's
//!   double-encoded values.
//! - [`compile_filter`] and [`compile_order_by`] turn it into SQL for one resource, described
//!   by a static [`Schema`]. Unknown fields are errors, so user text never reaches the SQL
//!   text: it is always a bound [`SqlParam`].
//!
//! Decisions: `like` is case-insensitive and matches anywhere unless the pattern has a `*`
//! wildcard; a repeated `select`/`sort`/`limit` replaces the earlier one; `in()` with no
//! values matches nothing and `out()` everything; sorting inside a JSON field accepts path
//! segments of letters, digits, `_` and `-` only; `contains(field, conditions)` applies to JSON
//! arrays, whose elements the conditions address.

mod compile;
mod parse;

use chrono::{DateTime, Utc};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

pub use compile::{check_select, compile_filter, compile_order_by};
pub use parse::{MAX_DEPTH, MAX_QUERY_BYTES, parse};

/// A parsed query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub filter: Option<Expr>,
    pub select: Option<Vec<String>>,
    pub sort: Vec<SortKey>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    pub skip_count: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: String,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Compare {
        field: String,
        op: CompareOp,
        value: Value,
    },
    In {
        field: String,
        values: Vec<Value>,
    },
    Out {
        field: String,
        values: Vec<Value>,
    },
    Like {
        field: String,
        pattern: String,
    },
    Contains {
        field: String,
        conditions: Option<Box<Expr>>,
    },
    Excludes {
        field: String,
        conditions: Option<Box<Expr>>,
    },
}

/// A value as typed by the query (auto-typed or with a prefix).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Number(f64),
    Bool(bool),
    Null,
    Date(DateTime<Utc>),
}

impl Value {
    /// The value as text, for text columns (`eq(functionName,123)` means the name `123`).
    pub fn as_text(&self) -> String {
        match self {
            Value::String(text) => text.clone(),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => "null".to_owned(),
            Value::Date(date) => crate::time::format(date),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::String(text) => serde_json::Value::String(text.clone()),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                serde_json::Value::from(*n as i64)
            }
            Value::Number(n) => serde_json::Number::from_f64(*n)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Null => serde_json::Value::Null,
            Value::Date(date) => serde_json::Value::String(crate::time::format(date)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RqlError(String);

impl RqlError {
    pub fn new(message: impl Into<String>) -> Self {
        RqlError(message.into())
    }
}

/// How a field is stored, which decides how values are coerced and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    /// `text[]`: `eq` tests membership.
    TextArray,
    /// `bigint`.
    Integer,
    /// `double precision`.
    Number,
    Bool,
    /// `timestamptz`, compared as instants.
    Timestamp,
    /// `jsonb`; `field.a.b` addresses inside it.
    Json,
}

/// One queryable field of a resource: its wire name, its SQL column and how it is stored.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub column: &'static str,
    pub kind: FieldKind,
}

#[derive(Debug)]
pub struct Schema {
    pub fields: &'static [Field],
}

/// A bound parameter of a compiled filter.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    Text(String),
    TextArray(Vec<String>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Timestamp(DateTime<Utc>),
    Json(serde_json::Value),
}

impl ToSql for SqlParam {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            SqlParam::Text(v) => v.to_sql_checked(ty, out),
            SqlParam::TextArray(v) => v.to_sql_checked(ty, out),
            SqlParam::Int(v) => v.to_sql_checked(ty, out),
            SqlParam::Float(v) => v.to_sql_checked(ty, out),
            SqlParam::Bool(v) => v.to_sql_checked(ty, out),
            SqlParam::Timestamp(v) => v.to_sql_checked(ty, out),
            SqlParam::Json(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each variant is checked against the column type by its inner value at bind time.
        true
    }

    to_sql_checked!();
}

/// A compiled filter: SQL with placeholders and their values.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    pub sql: String,
    pub params: Vec<SqlParam>,
}

#[cfg(test)]
mod tests;
