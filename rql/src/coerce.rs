//! Typed query values → parameters of the type a field is stored as.
//!
//! The query's own typing (auto-typed or prefixed) is a hint; the field's kind decides. So
//! `eq(functionName,123)` looks for the name `123`, and `eq(priority,abc)` is an error that
//! names the field, the expected type and the offending text.

use serde_json::json;

use super::Value;
use super::error::RqlError;
use super::params::SqlParam;
use super::schema::FieldKind;
use super::value::{date_text, number_text, parse_timestamp};

const DATE: &str = "a date (ISO-8601 such as 2024-01-01T00:00:00.000Z, or epoch:<milliseconds>)";

/// `value` (not null) as a parameter for a column of `kind`; `field` is the wire name for
/// messages. A text array's elements take text.
pub(super) fn param(kind: FieldKind, field: &str, value: &Value) -> Result<SqlParam, RqlError> {
    if *value == Value::Null {
        return Err(RqlError::Invalid(format!(
            "`{}` cannot be compared with null this way",
            super::error::quote(field)
        )));
    }
    Ok(match kind {
        FieldKind::Text | FieldKind::TextArray => SqlParam::Text(text(value)),
        FieldKind::Integer => SqlParam::Int(integer(field, value)?),
        FieldKind::Number => SqlParam::Float(number(field, value)?),
        FieldKind::Bool => SqlParam::Bool(boolean(field, value)?),
        FieldKind::Timestamp => match value {
            Value::Date(date) => SqlParam::Timestamp(*date),
            Value::String(s) => SqlParam::Timestamp(
                parse_timestamp(s).ok_or_else(|| RqlError::invalid_value(field, DATE, s))?,
            ),
            other => return Err(RqlError::invalid_value(field, DATE, &text(other))),
        },
        FieldKind::Json => SqlParam::Json(json_value(field, value)?),
    })
}

/// The value as text: what it reads as in the query.
pub(super) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => number_text(*n),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        Value::Date(date) => date_text(date),
    }
}

/// The value as JSON, for comparisons inside `jsonb`. Dates become the ISO strings the API
/// writes, integral numbers JSON integers.
pub(super) fn json_value(field: &str, value: &Value) -> Result<serde_json::Value, RqlError> {
    Ok(match value {
        Value::String(s) => json!(s),
        Value::Number(n) => match exact_integer(*n) {
            Some(i) => json!(i),
            None => serde_json::Number::from_f64(*n)
                .map(serde_json::Value::Number)
                .ok_or_else(|| RqlError::invalid_value(field, "a finite number", &text(value)))?,
        },
        Value::Bool(b) => json!(b),
        Value::Null => serde_json::Value::Null,
        Value::Date(date) => json!(date_text(date)),
    })
}

/// The name of the JSON type of a non-null value, as `jsonb_typeof` reports it.
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
        Value::String(_) | Value::Date(_) => "string",
    }
}

fn integer(field: &str, value: &Value) -> Result<i64, RqlError> {
    let found = match value {
        Value::Number(n) => exact_integer(*n),
        Value::String(s) => s.parse::<i64>().ok().or_else(|| {
            s.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .and_then(exact_integer)
        }),
        _ => None,
    };
    found.ok_or_else(|| RqlError::invalid_value(field, "an integer", &text(value)))
}

fn number(field: &str, value: &Value) -> Result<f64, RqlError> {
    let found = match value {
        Value::Number(n) => Some(*n),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    found
        .filter(|n| n.is_finite())
        .ok_or_else(|| RqlError::invalid_value(field, "a number", &text(value)))
}

fn boolean(field: &str, value: &Value) -> Result<bool, RqlError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        _ => Err(RqlError::invalid_value(
            field,
            "a boolean (true or false)",
            &text(value),
        )),
    }
}

/// `n` as an `i64` when it is a whole number in range.
fn exact_integer(n: f64) -> Option<i64> {
    // 2^63 is exactly representable; `as` saturates, so check the range first.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (n.fract() == 0.0 && (-LIMIT..LIMIT).contains(&n)).then_some(n as i64)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn s(text: &str) -> Value {
        Value::String(text.to_owned())
    }

    #[test]
    fn text_fields_take_the_text() {
        assert_eq!(
            param(FieldKind::Text, "f", &Value::Number(123.0)).unwrap(),
            SqlParam::Text("123".to_owned())
        );
        assert_eq!(
            param(FieldKind::Text, "f", &Value::Bool(true)).unwrap(),
            SqlParam::Text("true".to_owned())
        );
        assert_eq!(
            param(FieldKind::TextArray, "f", &s("x")).unwrap(),
            SqlParam::Text("x".to_owned())
        );
    }

    #[test]
    fn integers() {
        let int = |v: &Value| param(FieldKind::Integer, "priority", v);
        assert_eq!(int(&Value::Number(3.0)).unwrap(), SqlParam::Int(3));
        assert_eq!(
            int(&s("9007199254740993")).unwrap(),
            SqlParam::Int(9_007_199_254_740_993)
        );
        assert_eq!(int(&s("1e3")).unwrap(), SqlParam::Int(1000));
        assert_eq!(
            int(&s("abc")).unwrap_err().to_string(),
            "`priority` expects an integer, got `abc`"
        );
        assert!(int(&Value::Number(1.5)).is_err());
        assert!(int(&Value::Number(1e19)).is_err());
        assert!(int(&s("99999999999999999999")).is_err());
        assert!(int(&Value::Bool(true)).is_err());
        assert!(int(&Value::Null).is_err());
    }

    #[test]
    fn numbers_booleans_timestamps() {
        assert_eq!(
            param(FieldKind::Number, "n", &s("2.5")).unwrap(),
            SqlParam::Float(2.5)
        );
        assert!(param(FieldKind::Number, "n", &s("NaN")).is_err());
        assert_eq!(
            param(FieldKind::Bool, "b", &s("false")).unwrap(),
            SqlParam::Bool(false)
        );
        assert!(param(FieldKind::Bool, "b", &Value::Number(1.0)).is_err());
        let t = DateTime::parse_from_rfc3339("2023-12-31T22:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            param(
                FieldKind::Timestamp,
                "t",
                &s("2023-12-31T23:00:00.000+01:00")
            )
            .unwrap(),
            SqlParam::Timestamp(t)
        );
        assert_eq!(
            param(FieldKind::Timestamp, "t", &Value::Date(t)).unwrap(),
            SqlParam::Timestamp(t)
        );
        assert!(
            param(FieldKind::Timestamp, "startTimestamp", &s("yesterday"))
                .unwrap_err()
                .to_string()
                .starts_with("`startTimestamp` expects a date")
        );
        assert!(param(FieldKind::Timestamp, "t", &Value::Number(2024.0)).is_err());
    }

    #[test]
    fn json_values() {
        assert_eq!(
            json_value("d", &Value::Number(2.0)).unwrap(),
            serde_json::json!(2)
        );
        assert_eq!(
            json_value("d", &Value::Number(2.5)).unwrap(),
            serde_json::json!(2.5)
        );
        assert_eq!(json_type(&s("x")), "string");
        assert_eq!(json_type(&Value::Number(1.0)), "number");
    }
}
