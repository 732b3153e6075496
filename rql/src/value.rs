//! Value tokens → [`Value`]: the second percent-decoding, typed prefixes and auto-typing.
//!
//! Prefixes are syntax, so they are recognised on the token as written (decoded once): the SDK
//! encodes a `:` inside a value, so user data such as `date:x` sent by it stays a string.
//! Auto-typing looks at the fully decoded text, as the reference's `auto` converter does.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use percent_encoding::percent_decode_str;

use super::Value;
use super::error::{RqlError, quote};

/// The second decoding of a value (the SDK encodes values twice).
pub(super) fn decode(text: &str) -> Result<String, RqlError> {
    let decoded = percent_decode_str(text).decode_utf8().map_err(|_| {
        RqlError::Invalid(format!(
            "the value `{}` is not valid UTF-8 once percent-decoded",
            quote(text)
        ))
    })?;
    if decoded.contains('\0') {
        // PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database.
        return Err(RqlError::Invalid(format!(
            "the value `{}` contains a NUL character",
            quote(text)
        )));
    }
    Ok(decoded.into_owned())
}

/// A value token (decoded once) → its typed value.
pub(super) fn typed(text: &str, quoted: bool) -> Result<Value, RqlError> {
    if quoted {
        return decode(text).map(Value::String);
    }
    if let Some((prefix, rest)) = text.split_once(':') {
        let invalid =
            || RqlError::Invalid(format!("`{}` is not a valid {prefix} value", quote(text)));
        match prefix {
            "string" => return decode(rest).map(Value::String),
            "number" => {
                return decode(rest)?
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .map(Value::Number)
                    .ok_or_else(invalid);
            }
            "boolean" => {
                return match decode(rest)?.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(invalid()),
                };
            }
            "date" | "isodate" => {
                return parse_timestamp(&decode(rest)?)
                    .map(Value::Date)
                    .ok_or_else(invalid);
            }
            "epoch" => {
                return decode(rest)?
                    .parse::<i64>()
                    .ok()
                    .and_then(DateTime::from_timestamp_millis)
                    .filter(in_database_range)
                    .map(Value::Date)
                    .ok_or_else(invalid);
            }
            // Not a prefix (an unencoded `12:00`, `env:prod`): the text is the value.
            _ => {}
        }
    }
    let text = decode(text)?;
    Ok(match text.as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => match canonical_number(&text) {
            Some(number) => Value::Number(number),
            None => Value::String(text),
        },
    })
}

/// `text` as a number when it is written the way the number prints (`12`, `-3.5`, `0.25`), as
/// the reference's `+s + "" == s` test: `1.0`, `01`, `1e3`, `.5` and `NaN` stay strings. That
/// makes the text of a number value recoverable exactly (see [`number_text`]).
fn canonical_number(text: &str) -> Option<f64> {
    let number = text.parse::<f64>().ok().filter(|n| n.is_finite())?;
    (number_text(number) == text).then_some(number)
}

/// How a number value reads as text (for text fields): the shortest form that parses back,
/// with `-0` as `0` like JavaScript.
pub(super) fn number_text(number: f64) -> String {
    if number == 0.0 {
        "0".to_owned()
    } else {
        number.to_string()
    }
}

/// How a date value reads as text: ISO-8601 UTC with milliseconds, as the API prints dates.
pub(super) fn date_text(date: &DateTime<Utc>) -> String {
    date.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// ISO-8601 / RFC 3339 with `Z` or an offset and any fraction; also without a zone (taken as
/// UTC) and a bare date (midnight UTC). Dates PostgreSQL cannot store are refused.
pub(super) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
        .filter(in_database_range)
}

/// Well inside `timestamptz`'s range (4713 BC to 294276 AD), so no value fails in the database.
fn in_database_range(date: &DateTime<Utc>) -> bool {
    (-4000..=200_000).contains(&date.year())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Value {
        Value::Date(
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc),
        )
    }

    #[test]
    fn auto_typing() {
        assert_eq!(typed("true", false).unwrap(), Value::Bool(true));
        assert_eq!(typed("false", false).unwrap(), Value::Bool(false));
        assert_eq!(typed("null", false).unwrap(), Value::Null);
        assert_eq!(typed("12", false).unwrap(), Value::Number(12.0));
        assert_eq!(typed("-3.5", false).unwrap(), Value::Number(-3.5));
        assert_eq!(typed("0", false).unwrap(), Value::Number(0.0));
        for text in [
            "1.0", "01", "1e3", ".5", "NaN", "inf", "-0", "+1", "abc", "",
        ] {
            assert_eq!(
                typed(text, false).unwrap(),
                Value::String(text.to_owned()),
                "{text}"
            );
        }
        // Large integers that f64 cannot hold exactly stay strings, so no digit is lost.
        assert_eq!(
            typed("9007199254740993", false).unwrap(),
            Value::String("9007199254740993".to_owned())
        );
    }

    #[test]
    fn quoted_values_are_strings() {
        assert_eq!(typed("12", true).unwrap(), Value::String("12".to_owned()));
        assert_eq!(
            typed("a%2520b", true).unwrap(),
            Value::String("a%20b".to_owned())
        );
    }

    #[test]
    fn second_decoding() {
        assert_eq!(
            typed("my%2Dfn", false).unwrap(),
            Value::String("my-fn".to_owned())
        );
        assert_eq!(typed("%2D5", false).unwrap(), Value::Number(-5.0));
        assert!(typed("%FF", false).is_err());
        assert!(typed("%00", false).is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            typed("string:12", false).unwrap(),
            Value::String("12".to_owned())
        );
        assert_eq!(typed("number:1.50", false).unwrap(), Value::Number(1.5));
        assert_eq!(typed("boolean:true", false).unwrap(), Value::Bool(true));
        assert_eq!(
            typed("date:2024-01-01T01:00:00+01:00", false).unwrap(),
            date("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            typed("isodate:2024-01-01", false).unwrap(),
            date("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            typed("epoch:1704067200000", false).unwrap(),
            date("2024-01-01T00:00:00Z")
        );
        for bad in [
            "number:abc",
            "number:NaN",
            "boolean:yes",
            "date:soon",
            "epoch:1.5",
        ] {
            assert!(typed(bad, false).is_err(), "{bad}");
        }
        assert!(typed("epoch:9223372036854775807", false).is_err());
        // Not prefixes: the whole text is the value.
        assert_eq!(
            typed("env:prod", false).unwrap(),
            Value::String("env:prod".to_owned())
        );
        assert_eq!(
            typed("2024-01-01T00:00:00Z", false).unwrap(),
            Value::String("2024-01-01T00:00:00Z".to_owned())
        );
        // A `:` that was encoded (as the SDK does) is data, not a prefix.
        assert_eq!(
            typed("number%3A5", false).unwrap(),
            Value::String("number:5".to_owned())
        );
    }

    #[test]
    fn timestamps() {
        let midnight = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for text in [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.000Z",
            "2024-01-01T01:00:00+01:00",
            "2023-12-31T23:00:00.000-01:00",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.0",
            "2024-01-01",
        ] {
            assert_eq!(parse_timestamp(text), Some(midnight), "{text}");
        }
        for text in ["yesterday", "2024-13-01", "", "2024-01-01T25:00:00Z"] {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
        assert_eq!(date_text(&midnight), "2024-01-01T00:00:00.000Z");
    }

    #[test]
    fn number_texts() {
        assert_eq!(number_text(123.0), "123");
        assert_eq!(number_text(-0.0), "0");
        assert_eq!(number_text(0.25), "0.25");
    }
}
