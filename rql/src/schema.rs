//! The static description of a resource's table, and the lookup of wire field names in it.
//!
//! This lookup is what keeps user text out of the SQL text: a field either names a schema
//! entry, whose `column` is trusted, or the query is rejected. Paths inside a JSON column are
//! only ever sent as bound parameters (or, for sorting, as validated literals).

use super::error::{RqlError, quote};

/// How a column is stored, which decides how values are coerced and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    /// `text[]`.
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

impl FieldKind {
    /// For messages: "`priority` is an integer field".
    pub(super) fn describe(self) -> &'static str {
        match self {
            FieldKind::Text => "a text",
            FieldKind::TextArray => "a text array",
            FieldKind::Integer => "an integer",
            FieldKind::Number => "a number",
            FieldKind::Bool => "a boolean",
            FieldKind::Timestamp => "a timestamp",
            FieldKind::Json => "a JSON",
        }
    }
}

/// One queryable field of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Wire name, camelCase, e.g. `functionName`.
    pub name: &'static str,
    /// SQL expression, e.g. `function_name`. Trusted: it is written into the SQL as is.
    pub column: &'static str,
    pub kind: FieldKind,
}

impl Field {
    pub const fn new(name: &'static str, column: &'static str, kind: FieldKind) -> Field {
        Field { name, column, kind }
    }
}

/// The fields of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    pub fields: &'static [Field],
}

impl Schema {
    /// The field with this exact wire name.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// A wire name, possibly dotted (`data.a.b`), → its field and the path inside it. Only JSON
    /// fields have paths.
    pub(super) fn resolve(&self, name: &str) -> Result<(&'static Field, Vec<String>), RqlError> {
        if let Some(field) = self.field(name) {
            return Ok((field, Vec::new()));
        }
        let Some((head, rest)) = name.split_once('.') else {
            return Err(RqlError::unknown_field(name));
        };
        let field = self
            .field(head)
            .ok_or_else(|| RqlError::unknown_field(name))?;
        if field.kind != FieldKind::Json {
            return Err(RqlError::Invalid(format!(
                "`{head}` is {} field and has no subfields (in `{}`)",
                field.kind.describe(),
                quote(name)
            )));
        }
        Ok((field, path_segments(rest, name)?))
    }
}

/// `a.b.c` → `["a", "b", "c"]`; empty segments (`a..b`, `a.`) are refused.
pub(super) fn path_segments(path: &str, whole: &str) -> Result<Vec<String>, RqlError> {
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(RqlError::Invalid(format!(
            "the field `{}` has an empty path segment",
            quote(whole)
        )));
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    static SCHEMA: Schema = Schema {
        fields: &[
            Field {
                name: "status",
                column: "status",
                kind: FieldKind::Text,
            },
            Field {
                name: "data",
                column: "data",
                kind: FieldKind::Json,
            },
        ],
    };

    #[test]
    fn resolves_plain_and_json_paths() {
        let (field, path) = SCHEMA.resolve("status").unwrap();
        assert_eq!((field.column, path.len()), ("status", 0));
        let (field, path) = SCHEMA.resolve("data.a.b").unwrap();
        assert_eq!(field.column, "data");
        assert_eq!(path, vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn refuses_unknown_fields_and_bad_paths() {
        assert_eq!(
            SCHEMA.resolve("nope").unwrap_err().to_string(),
            "unknown field `nope`"
        );
        assert_eq!(
            SCHEMA.resolve("nope.a").unwrap_err().to_string(),
            "unknown field `nope.a`"
        );
        assert!(
            SCHEMA
                .resolve("status.a")
                .unwrap_err()
                .to_string()
                .contains("no subfields")
        );
        assert!(SCHEMA.resolve("data..a").is_err());
        assert!(SCHEMA.resolve("data.").is_err());
    }
}
