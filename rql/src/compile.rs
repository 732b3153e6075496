//! [`Expr`] → a parameterized SQL condition for one table.
//!
//! The only identifiers written into the SQL are `column`s of the static [`Schema`] and aliases
//! this module makes up (`rql_1`, …); every value, pattern and JSON path is a bound parameter,
//! cast to its type (`$3::bigint`) so PostgreSQL never has to guess it. Parameters are never
//! reused: each placeholder appears once, numbered in the order of the SQL text.
//!
//! Missing values follow the reference's document-store semantics: `ne`, `out` and `excludes`
//! also match a row whose field is NULL (missing), and every negation is written so that it can
//! never be NULL itself (`IS DISTINCT FROM`, `NOT COALESCE(…, FALSE)`, `NOT EXISTS`).

use super::coerce::{self, json_type, json_value};
use super::error::{RqlError, quote};
use super::params::{SqlFilter, SqlParam};
use super::schema::{FieldKind, Schema, path_segments};
use super::{CompareOp, Expr, MAX_DEPTH, Value};

/// Most parameters one filter may bind: far below PostgreSQL's 65 535, far above what an
/// 8 KiB query can legitimately need.
pub const MAX_PARAMS: usize = 16_384;

/// Deepest [`Expr`] compiled. Parsed queries nest at most [`MAX_DEPTH`]; this also bounds the
/// recursion for expressions built by hand.
const MAX_EXPR_DEPTH: usize = 2 * MAX_DEPTH;

/// `ILIKE … ESCAPE` with a backslash, written as an escape string so it means the same whatever
/// `standard_conforming_strings` is.
const ESCAPE: &str = "ESCAPE E'\\\\'";

/// Compiles `expr` for `schema`, numbering placeholders from `$first_param`.
pub fn compile_filter(
    expr: &Expr,
    schema: &Schema,
    first_param: usize,
) -> Result<SqlFilter, RqlError> {
    if first_param == 0 {
        return Err(RqlError::Invalid(
            "placeholders start at $1: first_param must be at least 1".to_owned(),
        ));
    }
    let mut compiler = Compiler {
        first_param,
        params: Vec::new(),
        aliases: 0,
    };
    let sql = compiler.expr(expr, &Scope::Table(schema), 0)?;
    Ok(SqlFilter {
        sql,
        params: compiler.params,
    })
}

/// What field names refer to.
enum Scope<'a> {
    /// The table: names are looked up in the schema.
    Table(&'a Schema),
    /// Inside `contains(textArray, …)`: the element, called by the array's own name.
    TextElement { name: &'a str, column: String },
    /// Inside `contains(jsonArray, …)`: any dotted path addresses inside the element.
    JsonElement { column: String },
}

/// A resolved field: a trusted SQL expression, how it is stored, and the path inside it (JSON
/// only).
struct Target {
    column: String,
    kind: FieldKind,
    path: Vec<String>,
}

impl Scope<'_> {
    fn resolve(&self, name: &str) -> Result<Target, RqlError> {
        match self {
            Scope::Table(schema) => {
                let (field, path) = schema.resolve(name)?;
                Ok(Target {
                    column: field.column.to_owned(),
                    kind: field.kind,
                    path,
                })
            }
            Scope::TextElement {
                name: element,
                column,
            } => {
                if name == *element {
                    Ok(Target {
                        column: column.clone(),
                        kind: FieldKind::Text,
                        path: Vec::new(),
                    })
                } else {
                    Err(RqlError::Invalid(format!(
                        "inside contains({element},…) the conditions refer to the element as \
                         `{element}`, not `{}`",
                        quote(name)
                    )))
                }
            }
            Scope::JsonElement { column } => Ok(Target {
                column: column.clone(),
                kind: FieldKind::Json,
                path: path_segments(name, name)?,
            }),
        }
    }
}

struct Compiler {
    first_param: usize,
    params: Vec<SqlParam>,
    aliases: usize,
}

impl Compiler {
    /// Adds a parameter; returns its cast placeholder.
    fn bind(&mut self, param: SqlParam) -> Result<String, RqlError> {
        let too_complex = || RqlError::Invalid("the query is too complex".to_owned());
        if self.params.len() >= MAX_PARAMS {
            return Err(too_complex());
        }
        let number = self
            .first_param
            .checked_add(self.params.len())
            .ok_or_else(too_complex)?;
        let placeholder = format!("${number}::{}", param.sql_type());
        self.params.push(param);
        Ok(placeholder)
    }

    /// A fresh alias for a subquery, unique in the whole filter so nested ones never shadow.
    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("rql_{}", self.aliases)
    }

    /// The JSON value a target addresses: the column itself, or `(column #> $n::text[])`.
    fn json(&mut self, target: &Target) -> Result<String, RqlError> {
        if target.path.is_empty() {
            Ok(target.column.clone())
        } else {
            let path = self.bind(SqlParam::TextArray(target.path.clone()))?;
            Ok(format!("({} #> {path})", target.column))
        }
    }

    fn expr(&mut self, expr: &Expr, scope: &Scope, depth: usize) -> Result<String, RqlError> {
        if depth > MAX_EXPR_DEPTH {
            return Err(RqlError::TooDeep { max: MAX_DEPTH });
        }
        match expr {
            Expr::And(items) => self.junction(items, "AND", "TRUE", scope, depth),
            Expr::Or(items) => self.junction(items, "OR", "FALSE", scope, depth),
            Expr::Compare { field, op, value } => {
                let target = scope.resolve(field)?;
                self.compare(&target, field, *op, value)
            }
            Expr::In { field, values } => {
                let target = scope.resolve(field)?;
                self.any_of(&target, field, values)
            }
            Expr::Out { field, values } => {
                let target = scope.resolve(field)?;
                if values.is_empty() {
                    return Ok("TRUE".to_owned());
                }
                let any = self.any_of(&target, field, values)?;
                Ok(format!("NOT COALESCE({any}, FALSE)"))
            }
            Expr::Like { field, pattern } => {
                let target = scope.resolve(field)?;
                self.like(&target, field, pattern)
            }
            Expr::Contains { field, conditions } => {
                let target = scope.resolve(field)?;
                self.contains(&target, field, conditions.as_deref(), depth)
            }
            Expr::Excludes { field, conditions } => {
                let target = scope.resolve(field)?;
                let contains = self.contains(&target, field, conditions.as_deref(), depth)?;
                Ok(format!("NOT ({contains})"))
            }
        }
    }

    /// `and`/`or`: no items is the neutral element, one is itself, more are parenthesized.
    fn junction(
        &mut self,
        items: &[Expr],
        operator: &str,
        neutral: &str,
        scope: &Scope,
        depth: usize,
    ) -> Result<String, RqlError> {
        let mut parts = Vec::with_capacity(items.len());
        for item in items {
            parts.push(self.expr(item, scope, depth + 1)?);
        }
        Ok(match parts.len() {
            0 => neutral.to_owned(),
            1 => parts.pop().unwrap_or_default(),
            _ => format!("({})", parts.join(&format!(" {operator} "))),
        })
    }

    fn compare(
        &mut self,
        target: &Target,
        field: &str,
        op: CompareOp,
        value: &Value,
    ) -> Result<String, RqlError> {
        let column = &target.column;
        if *value == Value::Null {
            return match (target.kind, op) {
                // A JSON null and a missing key are both "null".
                (FieldKind::Json, CompareOp::Eq) => Ok(format!(
                    "COALESCE({}, 'null'::jsonb) = 'null'::jsonb",
                    self.json(target)?
                )),
                (FieldKind::Json, CompareOp::Ne) => Ok(format!(
                    "COALESCE({}, 'null'::jsonb) <> 'null'::jsonb",
                    self.json(target)?
                )),
                (_, CompareOp::Eq) => Ok(format!("{column} IS NULL")),
                (_, CompareOp::Ne) => Ok(format!("{column} IS NOT NULL")),
                _ => Err(RqlError::Invalid(format!(
                    "`{}` cannot compare `{}` with null; use eq or ne",
                    op.name(),
                    quote(field)
                ))),
            };
        }
        match target.kind {
            FieldKind::TextArray => {
                let v = self.bind(coerce::param(target.kind, field, value)?)?;
                // "Some element is greater than v" reads `v < ANY(column)`: flip the operator.
                Ok(match op {
                    CompareOp::Eq => has_any(column, &format!("ARRAY[{v}]")),
                    CompareOp::Ne => format!("NOT COALESCE({v} = ANY({column}), FALSE)"),
                    CompareOp::Gt => format!("{v} < ANY({column})"),
                    CompareOp::Ge => format!("{v} <= ANY({column})"),
                    CompareOp::Lt => format!("{v} > ANY({column})"),
                    CompareOp::Le => format!("{v} >= ANY({column})"),
                })
            }
            FieldKind::Json => match op {
                // `@>` is equality for a scalar and membership for an array.
                CompareOp::Eq => {
                    let x = self.json(target)?;
                    let v = self.bind(SqlParam::Json(json_value(field, value)?))?;
                    Ok(format!("{x} @> {v}"))
                }
                CompareOp::Ne => {
                    let x = self.json(target)?;
                    let v = self.bind(SqlParam::Json(json_value(field, value)?))?;
                    Ok(format!("NOT COALESCE({x} @> {v}, FALSE)"))
                }
                // jsonb orders across types (any string < any number < any boolean); only
                // values of the query value's own type compare, as in the reference.
                _ => {
                    let kind = json_type(value);
                    let x = self.json(target)?;
                    let y = self.json(target)?;
                    let v = self.bind(SqlParam::Json(json_value(field, value)?))?;
                    Ok(format!(
                        "(jsonb_typeof({x}) = '{kind}' AND {y} {} {v})",
                        op.symbol()
                    ))
                }
            },
            kind => {
                let v = self.bind(coerce::param(kind, field, value)?)?;
                Ok(match op {
                    CompareOp::Ne => format!("{column} IS DISTINCT FROM {v}"),
                    _ => format!("{column} {} {v}", op.symbol()),
                })
            }
        }
    }

    /// `in`: the field (or, for arrays, one of its elements) is one of `values`.
    fn any_of(
        &mut self,
        target: &Target,
        field: &str,
        values: &[Value],
    ) -> Result<String, RqlError> {
        let column = &target.column;
        let listed: Vec<&Value> = values.iter().filter(|v| **v != Value::Null).collect();
        let null_test = if listed.len() < values.len() {
            Some(match target.kind {
                FieldKind::Json => format!(
                    "COALESCE({}, 'null'::jsonb) = 'null'::jsonb",
                    self.json(target)?
                ),
                _ => format!("{column} IS NULL"),
            })
        } else {
            None
        };
        let list_test = if listed.is_empty() {
            None
        } else {
            Some(match target.kind {
                FieldKind::TextArray => {
                    let texts = listed.iter().map(|v| coerce::text(v)).collect();
                    let list = self.bind(SqlParam::TextArray(texts))?;
                    has_any(column, &list)
                }
                FieldKind::Json => {
                    let json = listed
                        .iter()
                        .map(|v| json_value(field, v))
                        .collect::<Result<_, _>>()?;
                    let list = self.bind(SqlParam::Json(serde_json::Value::Array(json)))?;
                    let element = self.alias();
                    let x = self.json(target)?;
                    format!(
                        "EXISTS (SELECT 1 FROM jsonb_array_elements({list}) AS {element}(v) \
                         WHERE {x} @> {element}.v)"
                    )
                }
                kind => {
                    let mut placeholders = Vec::with_capacity(listed.len());
                    for value in listed {
                        placeholders.push(self.bind(coerce::param(kind, field, value)?)?);
                    }
                    format!("{column} IN ({})", placeholders.join(", "))
                }
            })
        };
        Ok(match (null_test, list_test) {
            (Some(nulls), Some(list)) => format!("({nulls} OR {list})"),
            (Some(test), None) | (None, Some(test)) => test,
            (None, None) => "FALSE".to_owned(),
        })
    }

    /// `like`: case-insensitive; on arrays, any element matches.
    fn like(&mut self, target: &Target, field: &str, pattern: &str) -> Result<String, RqlError> {
        let column = &target.column;
        let pattern = SqlParam::Text(like_pattern(pattern));
        match target.kind {
            FieldKind::Text => {
                let p = self.bind(pattern)?;
                Ok(format!("{column} ILIKE {p} {ESCAPE}"))
            }
            FieldKind::TextArray => {
                let element = self.alias();
                let p = self.bind(pattern)?;
                Ok(format!(
                    "EXISTS (SELECT 1 FROM unnest({column}) AS {element}(v) \
                     WHERE {element}.v ILIKE {p} {ESCAPE})"
                ))
            }
            FieldKind::Json => {
                // A scalar is matched on its text (`#>>` form), an array on each element's.
                let x = self.json(target)?;
                let value = self.alias();
                let element = self.alias();
                let p = self.bind(pattern)?;
                Ok(format!(
                    "EXISTS (SELECT 1 FROM (SELECT {x} AS v) AS {value}, \
                     jsonb_array_elements_text(CASE jsonb_typeof({value}.v) WHEN 'array' \
                     THEN {value}.v ELSE jsonb_build_array({value}.v) END) AS {element}(v) \
                     WHERE {element}.v ILIKE {p} {ESCAPE})"
                ))
            }
            kind => Err(RqlError::Invalid(format!(
                "`like` needs a text field, but `{}` is {} field",
                quote(field),
                kind.describe()
            ))),
        }
    }

    /// `contains(field)`: present, not null, not empty. `contains(field, conditions)`: some
    /// element of the array satisfies the conditions.
    fn contains(
        &mut self,
        target: &Target,
        field: &str,
        conditions: Option<&Expr>,
        depth: usize,
    ) -> Result<String, RqlError> {
        let column = &target.column;
        match (target.kind, conditions) {
            (FieldKind::TextArray, None) => {
                Ok(format!("COALESCE(cardinality({column}) > 0, FALSE)"))
            }
            (FieldKind::Json, None) => Ok(format!(
                "COALESCE({} NOT IN ('null'::jsonb, '[]'::jsonb), FALSE)",
                self.json(target)?
            )),
            (_, None) => Ok(format!("{column} IS NOT NULL")),
            (FieldKind::TextArray, Some(conditions)) => {
                let element = self.alias();
                let scope = Scope::TextElement {
                    name: field,
                    column: format!("{element}.v"),
                };
                let condition = self.expr(conditions, &scope, depth + 1)?;
                Ok(format!(
                    "EXISTS (SELECT 1 FROM unnest({column}) AS {element}(v) WHERE {condition})"
                ))
            }
            (FieldKind::Json, Some(conditions)) => {
                let x = self.json(target)?;
                let value = self.alias();
                let element = self.alias();
                let scope = Scope::JsonElement {
                    column: format!("{element}.v"),
                };
                let condition = self.expr(conditions, &scope, depth + 1)?;
                // Anything but an array has no elements (and must not reach
                // jsonb_array_elements, which rejects scalars).
                Ok(format!(
                    "EXISTS (SELECT 1 FROM (SELECT {x} AS v) AS {value}, \
                     jsonb_array_elements(CASE jsonb_typeof({value}.v) WHEN 'array' \
                     THEN {value}.v ELSE '[]'::jsonb END) AS {element}(v) WHERE {condition})"
                ))
            }
            (kind, Some(_)) => Err(RqlError::Invalid(format!(
                "conditions on elements need an array field, but `{}` is {} field",
                quote(field),
                kind.describe()
            ))),
        }
    }
}

/// A `like` pattern → an `ILIKE` pattern: `%`, `_` and `\` are escaped, `*` is the wildcard,
/// and a pattern without `*` matches anywhere.
fn like_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 2);
    let anywhere = !pattern.contains('*');
    if anywhere {
        out.push('%');
    }
    for c in pattern.chars() {
        match c {
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '*' => out.push('%'),
            _ => out.push(c),
        }
    }
    if anywhere {
        out.push('%');
    }
    out
}

/// Whether the array `column` shares an element with the array `elements`, written so that a
/// GIN index on the column can answer it: `&&` rather than `= ANY`, and the array indexes
/// leave out empty arrays (most tasks have no tags), so the planner must be told, in the
/// index's own words, that an empty array cannot match.
fn has_any(column: &str, elements: &str) -> String {
    format!("({column} <> '{{}}' AND {column} && {elements})")
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::super::parse;
    use super::super::tests::SCHEMA;
    use super::*;

    /// Parses and compiles from `$1`.
    fn sql(raw: &str) -> (String, Vec<SqlParam>) {
        let filter = parse(raw).unwrap().filter.unwrap();
        let compiled = compile_filter(&filter, &SCHEMA, 1).unwrap();
        (compiled.sql, compiled.params)
    }

    fn error(raw: &str) -> String {
        let filter = parse(raw).unwrap().filter.unwrap();
        compile_filter(&filter, &SCHEMA, 1).unwrap_err().to_string()
    }

    fn text(s: &str) -> SqlParam {
        SqlParam::Text(s.to_owned())
    }

    fn path(segments: &[&str]) -> SqlParam {
        SqlParam::TextArray(segments.iter().map(|s| (*s).to_owned()).collect())
    }

    fn instant(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn sdk_examples() {
        let (sql_text, params) = sql(
            "eq(status,new)&eq(functionName,my%252Dfn)&ge(startTimestamp,2024%252D01%252D01T00%253A00%253A00%252E000Z)&limit(10,20)",
        );
        assert_eq!(
            sql_text,
            "(status = $1::text AND function_name = $2::text AND start_timestamp >= $3::timestamptz)"
        );
        assert_eq!(
            params,
            vec![
                text("new"),
                text("my-fn"),
                SqlParam::Timestamp(instant("2024-01-01T00:00:00Z"))
            ]
        );
        let (sql_text, params) = sql(
            "select(id,status)&sort(-priority)&in(status,new,failed)&like(functionName,a%2520b)&skipCount()",
        );
        assert_eq!(
            sql_text,
            "(status IN ($1::text, $2::text) AND function_name ILIKE $3::text ESCAPE E'\\\\')"
        );
        assert_eq!(params, vec![text("new"), text("failed"), text("%a b%")]);
        let (sql_text, params) = sql("eq(id,757f191a810c19729de860ae)");
        assert_eq!(sql_text, "id = $1::text");
        assert_eq!(params, vec![text("757f191a810c19729de860ae")]);
    }

    #[test]
    fn comparisons_on_scalar_fields() {
        let cases = [
            ("eq(priority,3)", "priority = $1::bigint"),
            ("ne(priority,3)", "priority IS DISTINCT FROM $1::bigint"),
            ("gt(priority,3)", "priority > $1::bigint"),
            ("ge(priority,3)", "priority >= $1::bigint"),
            ("lt(priority,3)", "priority < $1::bigint"),
            ("le(priority,3)", "priority <= $1::bigint"),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                sql(raw),
                (expected.to_owned(), vec![SqlParam::Int(3)]),
                "{raw}"
            );
        }
        assert_eq!(
            sql("eq(functionName,123)"),
            ("function_name = $1::text".to_owned(), vec![text("123")])
        );
        assert_eq!(
            sql("gt(score,2.5)"),
            (
                "score > $1::double precision".to_owned(),
                vec![SqlParam::Float(2.5)]
            )
        );
        assert_eq!(
            sql("eq(enabled,true)"),
            (
                "enabled = $1::boolean".to_owned(),
                vec![SqlParam::Bool(true)]
            )
        );
        assert_eq!(
            sql("lt(startTimestamp,epoch:1704067200000)"),
            (
                "start_timestamp < $1::timestamptz".to_owned(),
                vec![SqlParam::Timestamp(instant("2024-01-01T00:00:00Z"))]
            )
        );
        assert_eq!(
            sql("lt(startTimestamp,2023-12-31T23:00:00.000+01:00)").1,
            vec![SqlParam::Timestamp(instant("2023-12-31T22:00:00Z"))]
        );
        assert_eq!(sql("eq(status,null)").0, "status IS NULL");
        assert_eq!(sql("ne(status,null)").0, "status IS NOT NULL");
        assert_eq!(sql("eq(status,null)").1, vec![]);
    }

    #[test]
    fn fiql_compiles_like_calls() {
        assert_eq!(sql("priority=ge=3"), sql("ge(priority,3)"));
        assert_eq!(
            sql("functionName!=other&priority>=1"),
            sql("and(ne(functionName,other),ge(priority,1))")
        );
        assert_eq!(
            sql("priority=1|priority=2").0,
            "(priority = $1::bigint OR priority = $2::bigint)"
        );
    }

    #[test]
    fn in_and_out() {
        assert_eq!(
            sql("in(priority,1,3)"),
            (
                "priority IN ($1::bigint, $2::bigint)".to_owned(),
                vec![SqlParam::Int(1), SqlParam::Int(3)]
            )
        );
        assert_eq!(
            sql("out(priority,1,3)").0,
            "NOT COALESCE(priority IN ($1::bigint, $2::bigint), FALSE)"
        );
        assert_eq!(sql("in(priority)"), ("FALSE".to_owned(), vec![]));
        assert_eq!(sql("out(priority)"), ("TRUE".to_owned(), vec![]));
        assert_eq!(sql("in(status,(a,b))").1, vec![text("a"), text("b")]);
        assert_eq!(
            sql("in(status,a,null)").0,
            "(status IS NULL OR status IN ($1::text))"
        );
        assert_eq!(sql("in(status,null)").0, "status IS NULL");
    }

    #[test]
    fn text_arrays() {
        let tags = |v: &[&str]| SqlParam::TextArray(v.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(
            sql("eq(tags,b)"),
            (
                "(tags <> '{}' AND tags && ARRAY[$1::text])".to_owned(),
                vec![text("b")]
            )
        );
        assert_eq!(
            sql("ne(tags,b)").0,
            "NOT COALESCE($1::text = ANY(tags), FALSE)"
        );
        assert_eq!(sql("gt(tags,b)").0, "$1::text < ANY(tags)");
        assert_eq!(
            sql("in(tags,a,c)"),
            (
                "(tags <> '{}' AND tags && $1::text[])".to_owned(),
                vec![tags(&["a", "c"])]
            )
        );
        assert_eq!(
            sql("out(tags,b)").0,
            "NOT COALESCE((tags <> '{}' AND tags && $1::text[]), FALSE)"
        );
        assert_eq!(
            sql("like(tags,x*)"),
            (
                "EXISTS (SELECT 1 FROM unnest(tags) AS rql_1(v) WHERE rql_1.v ILIKE $1::text ESCAPE E'\\\\')"
                    .to_owned(),
                vec![text("x%")]
            )
        );
        assert_eq!(
            sql("contains(tags)").0,
            "COALESCE(cardinality(tags) > 0, FALSE)"
        );
        assert_eq!(
            sql("excludes(tags)").0,
            "NOT (COALESCE(cardinality(tags) > 0, FALSE))"
        );
        assert_eq!(
            sql("contains(tags,like(tags,a*),ne(tags,ab))"),
            (
                "EXISTS (SELECT 1 FROM unnest(tags) AS rql_1(v) WHERE (rql_1.v ILIKE $1::text ESCAPE E'\\\\' AND rql_1.v IS DISTINCT FROM $2::text))"
                    .to_owned(),
                vec![text("a%"), text("ab")]
            )
        );
        assert!(error("contains(tags,eq(status,a))").contains("refer to the element as `tags`"));
    }

    #[test]
    fn json_fields() {
        assert_eq!(
            sql("eq(data.n,2)"),
            (
                "(data #> $1::text[]) @> $2::jsonb".to_owned(),
                vec![path(&["n"]), SqlParam::Json(json!(2))]
            )
        );
        assert_eq!(
            sql("ne(data.a.b,x)"),
            (
                "NOT COALESCE((data #> $1::text[]) @> $2::jsonb, FALSE)".to_owned(),
                vec![path(&["a", "b"]), SqlParam::Json(json!("x"))]
            )
        );
        assert_eq!(
            sql("gt(data.n,2)"),
            (
                "(jsonb_typeof((data #> $1::text[])) = 'number' AND (data #> $2::text[]) > $3::jsonb)"
                    .to_owned(),
                vec![path(&["n"]), path(&["n"]), SqlParam::Json(json!(2))]
            )
        );
        assert_eq!(
            sql("eq(data.n,null)").0,
            "COALESCE((data #> $1::text[]), 'null'::jsonb) = 'null'::jsonb"
        );
        assert_eq!(
            sql("in(data.k,a,1)"),
            (
                "EXISTS (SELECT 1 FROM jsonb_array_elements($1::jsonb) AS rql_1(v) WHERE (data #> $2::text[]) @> rql_1.v)"
                    .to_owned(),
                vec![SqlParam::Json(json!(["a", 1])), path(&["k"])]
            )
        );
        assert_eq!(
            sql("like(data.kind,heart)"),
            (
                "EXISTS (SELECT 1 FROM (SELECT (data #> $1::text[]) AS v) AS rql_1, jsonb_array_elements_text(CASE jsonb_typeof(rql_1.v) WHEN 'array' THEN rql_1.v ELSE jsonb_build_array(rql_1.v) END) AS rql_2(v) WHERE rql_2.v ILIKE $2::text ESCAPE E'\\\\')"
                    .to_owned(),
                vec![path(&["kind"]), text("%heart%")]
            )
        );
        assert_eq!(
            sql("contains(data.flag)").0,
            "COALESCE((data #> $1::text[]) NOT IN ('null'::jsonb, '[]'::jsonb), FALSE)"
        );
        assert_eq!(
            sql("contains(data.items,eq(k,y))"),
            (
                "EXISTS (SELECT 1 FROM (SELECT (data #> $1::text[]) AS v) AS rql_1, jsonb_array_elements(CASE jsonb_typeof(rql_1.v) WHEN 'array' THEN rql_1.v ELSE '[]'::jsonb END) AS rql_2(v) WHERE (rql_2.v #> $2::text[]) @> $3::jsonb)"
                    .to_owned(),
                vec![path(&["items"]), path(&["k"]), SqlParam::Json(json!("y"))]
            )
        );
        assert!(
            sql("excludes(data.items,contains(sub,eq(x.y,1)))")
                .0
                .starts_with("NOT (EXISTS")
        );
        // The whole column is JSON too.
        assert_eq!(
            sql("contains(data)").0,
            "COALESCE(data NOT IN ('null'::jsonb, '[]'::jsonb), FALSE)"
        );
        // Path segments are parameters, never SQL.
        let (sql_text, params) = sql("eq(data.a%27;DROP%20TABLE%20tasks;--,1)");
        assert!(!sql_text.contains("DROP"));
        assert_eq!(params[0], path(&["a';DROP TABLE tasks;--"]));
    }

    #[test]
    fn like_patterns() {
        assert_eq!(like_pattern("a b"), "%a b%");
        assert_eq!(like_pattern("*fn"), "%fn");
        assert_eq!(like_pattern("a*b*"), "a%b%");
        assert_eq!(like_pattern("50%_\\"), "%50\\%\\_\\\\%");
        assert_eq!(like_pattern(""), "%%");
    }

    #[test]
    fn placeholders_start_where_asked() {
        let filter = parse("eq(status,a)&in(priority,1,2)")
            .unwrap()
            .filter
            .unwrap();
        let compiled = compile_filter(&filter, &SCHEMA, 4).unwrap();
        assert_eq!(
            compiled.sql,
            "(status = $4::text AND priority IN ($5::bigint, $6::bigint))"
        );
        assert!(compile_filter(&filter, &SCHEMA, 0).is_err());
        assert!(compile_filter(&filter, &SCHEMA, usize::MAX).is_err());
    }

    #[test]
    fn and_or_edge_cases() {
        assert_eq!(sql("and(eq(status,a))").0, "status = $1::text");
        assert_eq!(sql("or()").0, "FALSE");
        assert_eq!(
            compile_filter(&Expr::And(vec![]), &SCHEMA, 1).unwrap().sql,
            "TRUE"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(error("eq(nope,1)"), "unknown field `nope`");
        assert_eq!(
            error("eq(priority,abc)"),
            "`priority` expects an integer, got `abc`"
        );
        assert!(
            error("ge(startTimestamp,yesterday)").starts_with("`startTimestamp` expects a date")
        );
        assert!(error("like(priority,1)").contains("needs a text field"));
        assert!(error("contains(status,eq(a,1))").contains("array field"));
        assert!(error("gt(status,null)").contains("with null"));
        assert!(error("eq(status.x,1)").contains("no subfields"));
        assert!(error("in(priority,1,x)").contains("integer"));
    }

    #[test]
    fn hand_built_deep_expressions_are_refused() {
        let mut expr = Expr::Compare {
            field: "status".to_owned(),
            op: CompareOp::Eq,
            value: Value::String("a".to_owned()),
        };
        for _ in 0..200 {
            expr = Expr::And(vec![expr]);
        }
        assert!(matches!(
            compile_filter(&expr, &SCHEMA, 1),
            Err(RqlError::TooDeep { .. })
        ));
    }
}
