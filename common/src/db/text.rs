//! Text PostgreSQL cannot store, decided in one place. `text` refuses the NUL character
//! (U+0000), and `jsonb` refuses it in any string or key, where it travels as the escape
//! `\u0000` of the JSON text. Everything stored from outside goes through here:
//!
//! - an event or a function result, whose content is the point, is refused whole
//!   ([`json_is_storable`]): the event is dead-lettered, the task fails;
//! - a function's output lines and error messages, kept for the reader, are stored with each
//!   NUL replaced by U+FFFD, the Unicode replacement character ([`storable_text`],
//!   [`storable_json`]).

use std::borrow::Cow;

use serde_json::{Map, Value};

/// What stored text shows where a NUL was.
pub const NUL_REPLACEMENT: &str = "\u{FFFD}";

/// Why a value is refused, to end the sentence that names it ("the event …").
pub const HOLDS_NUL: &str =
    "holds a NUL character (\\u0000), which the database cannot store in text";

/// Whether Postgres can store `value` as `jsonb`: no NUL in any string or key.
pub fn json_is_storable(value: &Value) -> bool {
    match value {
        Value::String(text) => !text.contains('\0'),
        Value::Array(items) => items.iter().all(json_is_storable),
        Value::Object(fields) => fields
            .iter()
            .all(|(key, value)| !key.contains('\0') && json_is_storable(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
    }
}

/// `text` as Postgres can store it: each NUL replaced by [`NUL_REPLACEMENT`].
pub fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', NUL_REPLACEMENT))
    } else {
        Cow::Borrowed(text)
    }
}

/// `value` as Postgres can store it: each NUL of its strings and keys replaced.
pub fn storable_json(value: Value) -> Value {
    if json_is_storable(&value) {
        return value;
    }
    match value {
        Value::String(text) => Value::String(storable_text(&text).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(storable_json).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (storable_text(&key).into_owned(), storable_json(value)))
                .collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_in_any_string_or_key_is_unstorable() {
        assert!(json_is_storable(&json!({"a": ["x", 1, null, {"b": true}]})));
        // As it arrives in JSON text: the escape.
        let escaped: Value = serde_json::from_str(r#"{"a": "x\u0000y"}"#).unwrap();
        assert!(!json_is_storable(&escaped));
        assert!(!json_is_storable(&json!([{"k\u{0}": 1}])));
        assert!(!json_is_storable(&json!({"deep": [[["\u{0}"]]]})));
    }

    #[test]
    fn nul_is_replaced_and_the_rest_kept() {
        assert_eq!(storable_text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert!(matches!(storable_text("clean"), Cow::Borrowed("clean")));
        assert_eq!(
            storable_json(json!({"k\u{0}": ["x\u{0}", 2], "ok": "y"})),
            json!({"k\u{FFFD}": ["x\u{FFFD}", 2], "ok": "y"})
        );
        let stored = storable_json(json!({"k\u{0}": "x\u{0}"}));
        assert!(json_is_storable(&stored));
    }
}
