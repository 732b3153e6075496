//! `sort(…)` → `ORDER BY` terms, and the checks on `select(…)`.
//!
//! `ORDER BY` is appended to a statement whose parameters are numbered by the caller, so it
//! binds nothing: a path inside a JSON field is written as a literal, and to keep that safe its
//! segments may only use letters, digits, `_` and `-` (anything else is an error).

use std::collections::HashSet;

use super::SortKey;
use super::error::{RqlError, quote};
use super::schema::Schema;

/// `[-priority, startTimestamp]` → `priority DESC, start_timestamp ASC`; nothing → `""`.
pub fn compile_order_by(sort: &[SortKey], schema: &Schema) -> Result<String, RqlError> {
    let mut terms = Vec::with_capacity(sort.len());
    for key in sort {
        let (field, path) = schema.resolve(&key.field)?;
        let direction = if key.descending { "DESC" } else { "ASC" };
        if path.is_empty() {
            terms.push(format!("{} {direction}", field.column));
            continue;
        }
        if let Some(bad) = path.iter().find(|segment| !is_plain_segment(segment)) {
            return Err(RqlError::Invalid(format!(
                "cannot sort on `{}`: path segments to sort on may only contain letters, digits, \
                 `_` and `-`, not `{}`",
                quote(&key.field),
                quote(bad)
            )));
        }
        // `{"a","b"}`: quoted elements, so a segment such as `NULL` stays a key.
        let literal: Vec<String> = path
            .iter()
            .map(|segment| format!("\"{segment}\""))
            .collect();
        terms.push(format!(
            "{} #> '{{{}}}'::text[] {direction}",
            field.column,
            literal.join(",")
        ));
    }
    Ok(terms.join(", "))
}

fn is_plain_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every selected field must exist; a field and one of its own subfields (`data`, `data.a`)
/// cannot both be selected, since the projection would be ambiguous.
pub fn check_select(select: &[String], schema: &Schema) -> Result<(), RqlError> {
    for name in select {
        schema.resolve(name)?;
    }
    let chosen: HashSet<&str> = select.iter().map(String::as_str).collect();
    for name in select {
        for (dot, _) in name.match_indices('.') {
            if let Some(parent) = name.get(..dot)
                && chosen.contains(parent)
            {
                return Err(RqlError::Invalid(format!(
                    "`{}` and `{}` cannot both be selected",
                    quote(parent),
                    quote(name)
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::SCHEMA;
    use super::*;

    fn key(field: &str, descending: bool) -> SortKey {
        SortKey {
            field: field.to_owned(),
            descending,
        }
    }

    fn names(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn order_by_columns() {
        assert_eq!(
            compile_order_by(
                &[key("priority", true), key("startTimestamp", false)],
                &SCHEMA
            )
            .unwrap(),
            "priority DESC, start_timestamp ASC"
        );
        assert_eq!(compile_order_by(&[], &SCHEMA).unwrap(), "");
    }

    #[test]
    fn order_by_json_paths() {
        assert_eq!(
            compile_order_by(&[key("data.a.NULL", false)], &SCHEMA).unwrap(),
            "data #> '{\"a\",\"NULL\"}'::text[] ASC"
        );
        assert_eq!(
            compile_order_by(&[key("data", true)], &SCHEMA).unwrap(),
            "data DESC"
        );
        for bad in ["data.a'b", "data.a b", "data.é", "data.a\"", "data.a}"] {
            assert!(
                compile_order_by(&[key(bad, false)], &SCHEMA).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn order_by_unknown_field() {
        assert_eq!(
            compile_order_by(&[key("nope", false)], &SCHEMA)
                .unwrap_err()
                .to_string(),
            "unknown field `nope`"
        );
        assert!(compile_order_by(&[key("status.x", false)], &SCHEMA).is_err());
    }

    #[test]
    fn select_checks() {
        assert!(check_select(&names(&["id", "status", "data.n", "data.m.x"]), &SCHEMA).is_ok());
        assert!(check_select(&names(&["id", "id"]), &SCHEMA).is_ok());
        assert_eq!(
            check_select(&names(&["nope"]), &SCHEMA)
                .unwrap_err()
                .to_string(),
            "unknown field `nope`"
        );
        assert!(check_select(&names(&["data", "data.n"]), &SCHEMA).is_err());
        assert!(check_select(&names(&["data.a.b", "data.a"]), &SCHEMA).is_err());
        assert!(check_select(&names(&["status.x"]), &SCHEMA).is_err());
    }
}
