//! [`Expr`] → parameterized SQL against a [`Schema`]. The only identifiers that reach the SQL
//! text are the static column expressions of the schema (and, for sorting on JSON, path
//! segments restricted to `[A-Za-z0-9_-]`); every user value is a bound parameter.

use chrono::{DateTime, Utc};

use super::{
    CompareOp, Expr, Field, FieldKind, RqlError, Schema, SortKey, SqlFilter, SqlParam, Value,
};

/// What a field name resolves to.
enum Target {
    Column {
        column: String,
        kind: FieldKind,
    },
    /// A path inside a jsonb expression.
    JsonPath {
        root: String,
        path: Vec<String>,
    },
}

struct Compiler<'a> {
    schema: &'a Schema,
    params: Vec<SqlParam>,
    first_param: usize,
    /// Nesting of `contains(field, conditions)`: each level has its own element alias.
    element_scopes: Vec<String>,
}

pub fn compile_filter(
    expr: &Expr,
    schema: &Schema,
    first_param: usize,
) -> Result<SqlFilter, RqlError> {
    let mut compiler = Compiler {
        schema,
        params: Vec::new(),
        first_param,
        element_scopes: Vec::new(),
    };
    let sql = compiler.expr(expr)?;
    Ok(SqlFilter {
        sql,
        params: compiler.params,
    })
}

pub fn compile_order_by(sort: &[SortKey], schema: &Schema) -> Result<String, RqlError> {
    let mut terms = Vec::new();
    for key in sort {
        let direction = if key.descending { "DESC" } else { "ASC" };
        let expression = match resolve_in_schema(schema, &key.field)? {
            Target::Column { column, .. } => column,
            Target::JsonPath { root, path } => {
                if !path.iter().all(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                }) {
                    return Err(RqlError::new(format!(
                        "cannot sort on `{}`: path segments may only use letters, digits, `_` and `-`",
                        key.field
                    )));
                }
                format!("{root} #> '{{{}}}'", path.join(","))
            }
        };
        terms.push(format!("{expression} {direction}"));
    }
    Ok(terms.join(", "))
}

pub fn check_select(select: &[String], schema: &Schema) -> Result<(), RqlError> {
    for field in select {
        resolve_in_schema(schema, field)?;
        let nested_prefix = format!("{field}.");
        if select.iter().any(|other| other.starts_with(&nested_prefix)) {
            return Err(RqlError::new(format!(
                "select cannot name both `{field}` and a field inside it"
            )));
        }
    }
    Ok(())
}

fn resolve_in_schema(schema: &Schema, name: &str) -> Result<Target, RqlError> {
    let unknown = || {
        RqlError::new(format!(
            "unknown field `{}`",
            name.chars().take(64).collect::<String>()
        ))
    };
    let (head, rest) = match name.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (name, None),
    };
    let field: &Field = schema
        .fields
        .iter()
        .find(|f| f.name == head)
        .ok_or_else(unknown)?;
    match (field.kind, rest) {
        (kind, None) => Ok(Target::Column {
            column: field.column.to_owned(),
            kind,
        }),
        (FieldKind::Json, Some(rest)) => Ok(Target::JsonPath {
            root: field.column.to_owned(),
            path: rest.split('.').map(str::to_owned).collect(),
        }),
        _ => Err(unknown()),
    }
}

impl Compiler<'_> {
    fn param(&mut self, value: SqlParam) -> String {
        self.params.push(value);
        format!("${}", self.first_param + self.params.len() - 1)
    }

    fn resolve(&self, name: &str) -> Result<Target, RqlError> {
        match self.element_scopes.last() {
            // Inside contains(list, …) names address fields of the list's elements.
            Some(element) => Ok(Target::JsonPath {
                root: element.clone(),
                path: name.split('.').map(str::to_owned).collect(),
            }),
            None => resolve_in_schema(self.schema, name),
        }
    }

    fn expr(&mut self, expr: &Expr) -> Result<String, RqlError> {
        Ok(match expr {
            Expr::And(parts) => self.join(parts, " AND ", "TRUE")?,
            Expr::Or(parts) => self.join(parts, " OR ", "FALSE")?,
            Expr::Compare { field, op, value } => {
                let target = self.resolve(field)?;
                self.compare(target, field, *op, value)?
            }
            Expr::In { field, values } => {
                let parts: Vec<Expr> = values
                    .iter()
                    .map(|value| Expr::Compare {
                        field: field.clone(),
                        op: CompareOp::Eq,
                        value: value.clone(),
                    })
                    .collect();
                self.join(&parts, " OR ", "FALSE")?
            }
            Expr::Out { field, values } => {
                let parts: Vec<Expr> = values
                    .iter()
                    .map(|value| Expr::Compare {
                        field: field.clone(),
                        op: CompareOp::Ne,
                        value: value.clone(),
                    })
                    .collect();
                self.join(&parts, " AND ", "TRUE")?
            }
            Expr::Like { field, pattern } => {
                let target = self.resolve(field)?;
                let pattern = self.param(SqlParam::Text(like_pattern(pattern)));
                match target {
                    Target::Column {
                        column,
                        kind: FieldKind::Text,
                    } => format!("{column} ILIKE {pattern} ESCAPE '\\'"),
                    Target::Column {
                        column,
                        kind: FieldKind::TextArray,
                    } => format!(
                        "EXISTS (SELECT 1 FROM unnest({column}) AS element WHERE element ILIKE {pattern} ESCAPE '\\')"
                    ),
                    Target::Column { column, .. } => {
                        format!("{column}::text ILIKE {pattern} ESCAPE '\\'")
                    }
                    Target::JsonPath { root, path } => {
                        let path = self.param(SqlParam::TextArray(path));
                        format!("({root} #>> {path}) ILIKE {pattern} ESCAPE '\\'")
                    }
                }
            }
            Expr::Contains { field, conditions } => self.contains(field, conditions.as_deref())?,
            Expr::Excludes { field, conditions } => {
                format!("NOT ({})", self.contains(field, conditions.as_deref())?)
            }
        })
    }

    fn join(&mut self, parts: &[Expr], separator: &str, empty: &str) -> Result<String, RqlError> {
        if parts.is_empty() {
            return Ok(empty.to_owned());
        }
        let compiled = parts
            .iter()
            .map(|p| self.expr(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(format!("({})", compiled.join(separator)))
    }

    fn contains(&mut self, field: &str, conditions: Option<&Expr>) -> Result<String, RqlError> {
        let target = self.resolve(field)?;
        match (target, conditions) {
            (
                Target::Column {
                    column,
                    kind: FieldKind::TextArray,
                },
                None,
            ) => Ok(format!("cardinality({column}) > 0")),
            (
                Target::Column {
                    column,
                    kind: FieldKind::Json,
                },
                None,
            ) => Ok(format!(
                "({column} IS NOT NULL AND {column} <> 'null'::jsonb)"
            )),
            (Target::Column { column, .. }, None) => Ok(format!("{column} IS NOT NULL")),
            (Target::JsonPath { root, path }, None) => {
                let path = self.param(SqlParam::TextArray(path));
                Ok(format!(
                    "(({root} #> {path}) IS NOT NULL AND ({root} #> {path}) <> 'null'::jsonb)"
                ))
            }
            (Target::JsonPath { root, path }, Some(conditions)) => {
                let path = self.param(SqlParam::TextArray(path));
                self.elements_matching(format!("{root} #> {path}"), conditions)
            }
            (
                Target::Column {
                    column,
                    kind: FieldKind::Json,
                },
                Some(conditions),
            ) => self.elements_matching(column, conditions),
            (Target::Column { .. }, Some(_)) => Err(RqlError::new(format!(
                "contains with conditions needs a JSON array field such as `data.items`, not `{field}`"
            ))),
        }
    }

    /// Some element of the JSON array `array` satisfies `conditions`.
    fn elements_matching(&mut self, array: String, conditions: &Expr) -> Result<String, RqlError> {
        let alias = format!("element_{}", self.element_scopes.len());
        self.element_scopes.push(format!("{alias}.value"));
        let inner = self.expr(conditions);
        self.element_scopes.pop();
        Ok(format!(
            "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({array}) = 'array' \
             THEN {array} ELSE '[]'::jsonb END) AS {alias} WHERE {})",
            inner?
        ))
    }

    fn compare(
        &mut self,
        target: Target,
        name: &str,
        op: CompareOp,
        value: &Value,
    ) -> Result<String, RqlError> {
        let symbol = match op {
            CompareOp::Eq => "=",
            CompareOp::Ne => "<>",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        };
        let (column, kind) = match target {
            Target::JsonPath { root, path } => {
                return Ok(self.compare_json(&root, path, op, symbol, value));
            }
            Target::Column {
                column,
                kind: FieldKind::Json,
            } => {
                return Ok(self.compare_json(&column, Vec::new(), op, symbol, value));
            }
            Target::Column { column, kind } => (column, kind),
        };
        if let Value::Null = value {
            return match op {
                CompareOp::Eq => Ok(format!("{column} IS NULL")),
                CompareOp::Ne => Ok(format!("{column} IS NOT NULL")),
                _ => Err(RqlError::new(format!(
                    "`{name}` cannot be ordered against null"
                ))),
            };
        }
        let param = match kind {
            FieldKind::Text | FieldKind::TextArray | FieldKind::Json => {
                SqlParam::Text(value.as_text())
            }
            FieldKind::Integer => SqlParam::Int(as_integer(name, value)?),
            FieldKind::Number => SqlParam::Float(as_number(name, value)?),
            FieldKind::Bool => SqlParam::Bool(as_bool(name, value)?),
            FieldKind::Timestamp => SqlParam::Timestamp(as_timestamp(name, value)?),
        };
        let placeholder = self.param(param);
        Ok(match (kind, op) {
            (FieldKind::TextArray, CompareOp::Eq) => format!("{placeholder} = ANY({column})"),
            (FieldKind::TextArray, CompareOp::Ne) => format!("NOT ({placeholder} = ANY({column}))"),
            (FieldKind::TextArray, _) => {
                return Err(RqlError::new(format!(
                    "`{name}` is a list: only eq, ne, in, out, like and contains apply"
                )));
            }
            (_, CompareOp::Ne) => format!("{column} IS DISTINCT FROM {placeholder}"),
            _ => format!("{column} {symbol} {placeholder}"),
        })
    }

    /// Comparison of a value inside a jsonb column. Values compare as JSON of the same type
    /// (numbers numerically, strings as text); `eq` on an array tests membership.
    fn compare_json(
        &mut self,
        root: &str,
        path: Vec<String>,
        op: CompareOp,
        symbol: &str,
        value: &Value,
    ) -> String {
        let path = self.param(SqlParam::TextArray(path));
        let target = format!("({root} #> {path})");
        let json = self.param(SqlParam::Json(value.to_json()));
        let same_type = format!("jsonb_typeof({target}) = jsonb_typeof({json}::jsonb)");
        let equal = format!(
            "({target} = {json}::jsonb OR (jsonb_typeof({target}) = 'array' AND {target} @> jsonb_build_array({json}::jsonb)))"
        );
        match (op, value) {
            (CompareOp::Eq, Value::Null) => {
                format!("({target} IS NULL OR {target} = 'null'::jsonb)")
            }
            (CompareOp::Ne, Value::Null) => {
                format!("({target} IS NOT NULL AND {target} <> 'null'::jsonb)")
            }
            (CompareOp::Eq, _) => equal,
            (CompareOp::Ne, _) => format!("({target} IS NULL OR NOT {equal})"),
            _ => format!("({same_type} AND {target} {symbol} {json}::jsonb)"),
        }
    }
}

/// `*` is the wildcard; without one the pattern matches anywhere in the text.
fn like_pattern(pattern: &str) -> String {
    let mut escaped = String::with_capacity(pattern.len() + 2);
    for c in pattern.chars() {
        match c {
            '%' | '_' | '\\' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '*' => escaped.push('%'),
            c => escaped.push(c),
        }
    }
    if pattern.contains('*') {
        escaped
    } else {
        format!("%{escaped}%")
    }
}

fn as_integer(name: &str, value: &Value) -> Result<i64, RqlError> {
    let invalid = || {
        RqlError::new(format!(
            "`{name}` expects a whole number, got `{}`",
            value.as_text()
        ))
    };
    match value {
        Value::Number(n) if n.fract() == 0.0 && n.abs() <= 9.007_199_254_740_991e15 => {
            Ok(*n as i64)
        }
        Value::String(text) => text.parse().map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

fn as_number(name: &str, value: &Value) -> Result<f64, RqlError> {
    match value {
        Value::Number(n) => Ok(*n),
        Value::String(text) => text
            .parse()
            .map_err(|_| RqlError::new(format!("`{name}` expects a number, got `{text}`"))),
        _ => Err(RqlError::new(format!("`{name}` expects a number"))),
    }
}

fn as_bool(name: &str, value: &Value) -> Result<bool, RqlError> {
    match value {
        Value::Bool(b) => Ok(*b),
        _ => Err(RqlError::new(format!("`{name}` expects true or false"))),
    }
}

fn as_timestamp(name: &str, value: &Value) -> Result<DateTime<Utc>, RqlError> {
    match value {
        Value::Date(date) => Ok(*date),
        Value::String(text) => crate::time::parse(text).ok_or_else(|| {
            RqlError::new(format!(
                "`{name}` expects an ISO-8601 timestamp, got `{}`",
                text.chars().take(64).collect::<String>()
            ))
        }),
        Value::Number(millis) => DateTime::from_timestamp_millis(*millis as i64)
            .ok_or_else(|| RqlError::new(format!("`{name}`: {millis} is out of range"))),
        _ => Err(RqlError::new(format!("`{name}` expects a timestamp"))),
    }
}
