//! The one error type of the crate. Its messages are shown to API users as they are, so each
//! says what is wrong and, where the parser knows it, where.

/// Longest piece of user text quoted back in a message, so an error stays readable (and small)
/// whatever the query.
const MAX_QUOTED_CHARS: usize = 64;

/// Why a query was rejected. `position` is the 1-based byte offset in the query string as it was
/// received (still percent-encoded once), which is what the user typed or sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RqlError {
    #[error("the query is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("the query nests deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("the query is not valid UTF-8 once percent-decoded")]
    InvalidUtf8,
    #[error("{message} at position {position}")]
    Syntax { message: String, position: usize },
    #[error("unknown operator `{0}`")]
    UnknownOperator(String),
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// A value that does not fit the field it is compared with.
    #[error("`{field}` expects {expected}, got `{got}`")]
    InvalidValue {
        field: String,
        expected: &'static str,
        got: String,
    },
    /// Any other misuse: wrong arguments, an operator in the wrong place, an operator that does
    /// not apply to a field.
    #[error("{0}")]
    Invalid(String),
}

impl RqlError {
    pub(super) fn syntax(message: impl Into<String>, position: usize) -> Self {
        RqlError::Syntax {
            message: message.into(),
            position,
        }
    }

    pub(super) fn unknown_operator(name: &str) -> Self {
        RqlError::UnknownOperator(quote(name))
    }

    pub(super) fn unknown_field(name: &str) -> Self {
        RqlError::UnknownField(quote(name))
    }

    pub(super) fn invalid_value(field: &str, expected: &'static str, got: &str) -> Self {
        RqlError::InvalidValue {
            field: quote(field),
            expected,
            got: quote(got),
        }
    }
}

/// User text as quoted in messages: cut (on a character boundary) to a readable length.
pub(super) fn quote(text: &str) -> String {
    let mut chars = text.chars();
    let mut quoted: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() {
        quoted.push('…');
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_cut_on_character_boundaries() {
        let long = "é".repeat(100);
        let quoted = quote(&long);
        assert_eq!(quoted.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(quoted.ends_with('…'));
        assert_eq!(quote("short"), "short");
    }

    #[test]
    fn messages_say_what_and_where() {
        assert_eq!(
            RqlError::syntax("expected `)`", 12).to_string(),
            "expected `)` at position 12"
        );
        assert_eq!(
            RqlError::invalid_value("priority", "an integer", "abc").to_string(),
            "`priority` expects an integer, got `abc`"
        );
        assert_eq!(
            RqlError::unknown_operator("foo").to_string(),
            "unknown operator `foo`"
        );
    }
}
