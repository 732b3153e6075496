//! Bound parameters of a compiled filter, and their encoding for `tokio-postgres`.

use std::error::Error;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// One bound parameter. The compiler casts every placeholder to the SQL type of its variant
/// (`$1::bigint`), so PostgreSQL always asks for exactly that type.
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

impl SqlParam {
    /// The SQL type the placeholder is cast to.
    pub(super) fn sql_type(&self) -> &'static str {
        match self {
            SqlParam::Text(_) => "text",
            SqlParam::TextArray(_) => "text[]",
            SqlParam::Int(_) => "bigint",
            SqlParam::Float(_) => "double precision",
            SqlParam::Bool(_) => "boolean",
            SqlParam::Timestamp(_) => "timestamptz",
            SqlParam::Json(_) => "jsonb",
        }
    }
}

/// A compiled filter: SQL with `$n` placeholders, and their values in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SqlFilter {
    pub sql: String,
    pub params: Vec<SqlParam>,
}

impl ToSql for SqlParam {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            SqlParam::Text(v) => encode(v, ty, out),
            SqlParam::TextArray(v) => encode(v, ty, out),
            SqlParam::Int(v) => encode(v, ty, out),
            SqlParam::Float(v) => encode(v, ty, out),
            SqlParam::Bool(v) => encode(v, ty, out),
            SqlParam::Timestamp(v) => encode(v, ty, out),
            SqlParam::Json(v) => encode(v, ty, out),
        }
    }

    /// Any type here; [`encode`] checks the real one against the variant, so a mismatch is an
    /// error instead of wrongly encoded bytes.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn encode<T: ToSql>(
    value: &T,
    ty: &Type,
    out: &mut BytesMut,
) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
    if T::accepts(ty) {
        value.to_sql(ty, out)
    } else {
        Err(format!(
            "cannot send a {} as PostgreSQL type {ty}",
            std::any::type_name::<T>()
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_matching_types_and_refuses_others() {
        let mut out = BytesMut::new();
        assert!(SqlParam::Int(7).to_sql(&Type::INT8, &mut out).is_ok());
        assert_eq!(out.as_ref(), 7i64.to_be_bytes());
        let mut out = BytesMut::new();
        assert!(SqlParam::Int(7).to_sql(&Type::INT4, &mut out).is_err());
        assert!(
            SqlParam::TextArray(vec!["a".to_owned()])
                .to_sql_checked(&Type::TEXT_ARRAY, &mut out)
                .is_ok()
        );
        assert!(
            SqlParam::Json(serde_json::json!({"a": 1}))
                .to_sql_checked(&Type::JSONB, &mut out)
                .is_ok()
        );
        assert!(
            SqlParam::Text("a".to_owned())
                .to_sql_checked(&Type::BOOL, &mut out)
                .is_err()
        );
    }
}
