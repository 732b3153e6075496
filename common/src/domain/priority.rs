//! Task priorities, bounded to the integers a JavaScript client holds exactly.

use serde::{Deserialize, Deserializer, Serialize};

/// A task priority: any integer a JavaScript client can represent exactly, ±(2^53 − 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Priority(i64);

impl Priority {
    pub const MAX: i64 = 9_007_199_254_740_991;
    pub const MIN: i64 = -Self::MAX;

    pub fn new(value: i64) -> Result<Self, String> {
        if (Self::MIN..=Self::MAX).contains(&value) {
            Ok(Priority(value))
        } else {
            Err(format!(
                "priority must be an integer between {} and {}",
                Self::MIN,
                Self::MAX
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Documented with its bounds, so generated clients and fuzzers stay within them.
impl utoipa::PartialSchema for Priority {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(Self::MIN as f64))
            .maximum(Some(Self::MAX as f64))
            .description(Some(
                "Higher runs first; any integer a JavaScript client represents exactly",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Priority {}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Clients send JSON numbers; `5.0` is an integer to a JavaScript client, `5.5` is not.
        let number = serde_json::Number::deserialize(deserializer)?;
        let value = match (number.as_i64(), number.as_f64()) {
            (Some(value), _) => Some(value),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() <= Self::MAX as f64 => Some(f as i64),
            _ => None,
        };
        value
            .ok_or_else(|| format!("priority must be an integer, got {number}"))
            .and_then(Priority::new)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_javascript_safe_range_only() {
        let ok: Priority = serde_json::from_str("9007199254740991").unwrap();
        assert_eq!(ok.get(), Priority::MAX);
        let ok: Priority = serde_json::from_str("-3.0").unwrap();
        assert_eq!(ok.get(), -3);
        for bad in ["9007199254740992", "1.5", "\"1\"", "-9007199254740992"] {
            assert!(serde_json::from_str::<Priority>(bad).is_err(), "{bad}");
        }
    }
}
