//! Timestamps as the API shows them: ISO-8601 UTC with exactly three fractional digits and `Z`.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Now, truncated to milliseconds so a value written to Postgres (microseconds) reads back
/// exactly as it was shown to the client.
pub fn now() -> DateTime<Utc> {
    truncate_to_millis(Utc::now())
}

pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond() / 1_000_000 * 1_000_000;
    t.with_nanosecond(nanos).unwrap_or(t)
}

pub fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp with any offset and any precision.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| truncate_to_millis(t.with_timezone(&Utc)))
}

/// `#[serde(with = "common::time::millis")]` for `DateTime<Utc>` fields.
pub mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not an ISO-8601 timestamp"))
        })
    }
}

/// Same as [`millis`] for optional fields.
pub mod millis_opt {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => parse(&text).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!("`{text}` is not an ISO-8601 timestamp"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        let t = parse("2024-01-01T01:00:00.123456+01:00").unwrap();
        assert_eq!(format(&t), "2024-01-01T00:00:00.123Z");
    }
}
