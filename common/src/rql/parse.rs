//! RQL text → [`Query`].
//!
//! The query string arrives percent-encoded once by HTTP; the official SDK encodes every value
//! once more. So the whole string is decoded once, parsed, and each value decoded again.
//! Field names and operators are never encoded.

use percent_encoding::percent_decode_str;

use super::{Expr, Query, RqlError, SortKey, Value};

/// Longest accepted raw query.
pub const MAX_QUERY_BYTES: usize = 8192;
/// Deepest accepted nesting of calls.
pub const MAX_DEPTH: usize = 32;

/// A parsed but not yet interpreted piece of the query.
#[derive(Debug, Clone)]
enum Node {
    Call { name: String, args: Vec<Node> },
    Value(RawValue),
    Array(Vec<RawValue>),
}

#[derive(Debug, Clone)]
struct RawValue {
    text: String,
    quoted: bool,
}

pub fn parse(raw: &str) -> Result<Query, RqlError> {
    if raw.len() > MAX_QUERY_BYTES {
        return Err(RqlError::new(format!(
            "the query is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| RqlError::new("the query is not valid UTF-8 once decoded"))?;
    let chars: Vec<char> = decoded.chars().collect();
    let mut parser = Parser { chars, position: 0 };
    let mut query = Query::default();
    if parser.chars.iter().all(|c| c.is_whitespace()) {
        return Ok(query);
    }
    let node = parser.query(0)?;
    if parser.position < parser.chars.len() {
        return Err(parser.error("unexpected character"));
    }
    let filter = interpret_top(node, &mut query)?;
    query.filter = filter;
    Ok(query)
}

struct Parser {
    chars: Vec<char>,
    position: usize,
}

/// Characters that end a name or a value.
fn is_delimiter(c: char) -> bool {
    matches!(c, '(' | ')' | '&' | '|' | ',' | '=' | '<' | '>' | '!')
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.position).copied()
    }

    fn error(&self, what: &str) -> RqlError {
        match self.peek() {
            Some(c) => RqlError::new(format!("{what} `{c}` at position {}", self.position)),
            None => RqlError::new(format!("{what}: the query ends too early")),
        }
    }

    fn expect(&mut self, expected: char) -> Result<(), RqlError> {
        if self.peek() == Some(expected) {
            self.position += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{expected}`, found")))
        }
    }

    /// `term (('&' | '|') term)*`, `&` binding tighter than `|`.
    fn query(&mut self, depth: usize) -> Result<Node, RqlError> {
        let mut alternatives = vec![self.conjunction(depth)?];
        while self.peek() == Some('|') {
            self.position += 1;
            alternatives.push(self.conjunction(depth)?);
        }
        Ok(combine("or", alternatives))
    }

    fn conjunction(&mut self, depth: usize) -> Result<Node, RqlError> {
        let mut terms = vec![self.term(depth)?];
        while self.peek() == Some('&') {
            self.position += 1;
            terms.push(self.term(depth)?);
        }
        Ok(combine("and", terms))
    }

    fn term(&mut self, depth: usize) -> Result<Node, RqlError> {
        if depth > MAX_DEPTH {
            return Err(RqlError::new(format!(
                "the query nests deeper than {MAX_DEPTH} levels"
            )));
        }
        if self.peek() == Some('(') {
            self.position += 1;
            let inner = self.query(depth + 1)?;
            self.expect(')')?;
            return Ok(inner);
        }
        let name = self.word()?;
        match self.peek() {
            Some('(') => {
                self.position += 1;
                let args = self.arguments(depth + 1)?;
                self.expect(')')?;
                Ok(Node::Call {
                    name: name.text,
                    args,
                })
            }
            Some('=' | '<' | '>' | '!') => self.comparison(name),
            _ => Err(self.error("expected an operator after a name, found")),
        }
    }

    /// `f=v`, `f==v`, `f!=v`, `f>v`, `f>=v`, `f<v`, `f<=v`, `f=op=v`.
    fn comparison(&mut self, field: RawValue) -> Result<Node, RqlError> {
        let rest: String = self.chars[self.position..].iter().take(2).collect();
        let operator = if rest.starts_with("==") {
            self.position += 2;
            "eq".to_owned()
        } else if rest.starts_with("!=") {
            self.position += 2;
            "ne".to_owned()
        } else if rest.starts_with(">=") {
            self.position += 2;
            "ge".to_owned()
        } else if rest.starts_with("<=") {
            self.position += 2;
            "le".to_owned()
        } else if rest.starts_with('>') {
            self.position += 1;
            "gt".to_owned()
        } else if rest.starts_with('<') {
            self.position += 1;
            "lt".to_owned()
        } else if rest.starts_with('=') {
            self.position += 1;
            // `f=op=v` names the operator between two `=`.
            let start = self.position;
            let mut end = start;
            while end < self.chars.len() && self.chars[end].is_ascii_alphabetic() {
                end += 1;
            }
            if end > start && self.chars.get(end) == Some(&'=') {
                let operator: String = self.chars[start..end].iter().collect();
                self.position = end + 1;
                operator
            } else {
                "eq".to_owned()
            }
        } else {
            return Err(self.error("expected a comparison, found"));
        };
        let value = if self.peek() == Some('(') {
            self.position += 1;
            let values = self.array_values()?;
            self.expect(')')?;
            Node::Array(values)
        } else {
            Node::Value(self.word()?)
        };
        Ok(Node::Call {
            name: operator,
            args: vec![Node::Value(field), value],
        })
    }

    fn arguments(&mut self, depth: usize) -> Result<Vec<Node>, RqlError> {
        let mut args = Vec::new();
        if self.peek() == Some(')') {
            return Ok(args);
        }
        loop {
            args.push(self.argument(depth)?);
            if self.peek() == Some(',') {
                self.position += 1;
            } else {
                return Ok(args);
            }
        }
    }

    fn argument(&mut self, depth: usize) -> Result<Node, RqlError> {
        if depth > MAX_DEPTH {
            return Err(RqlError::new(format!(
                "the query nests deeper than {MAX_DEPTH} levels"
            )));
        }
        if self.peek() == Some('(') {
            self.position += 1;
            let values = self.array_values()?;
            self.expect(')')?;
            return Ok(Node::Array(values));
        }
        let word = self.word()?;
        match self.peek() {
            Some('(') if !word.quoted => {
                self.position += 1;
                let args = self.arguments(depth + 1)?;
                self.expect(')')?;
                Ok(Node::Call {
                    name: word.text,
                    args,
                })
            }
            Some('=' | '<' | '>' | '!') if !word.quoted => self.comparison(word),
            _ => Ok(Node::Value(word)),
        }
    }

    fn array_values(&mut self) -> Result<Vec<RawValue>, RqlError> {
        let mut values = Vec::new();
        if self.peek() == Some(')') {
            return Ok(values);
        }
        loop {
            values.push(self.word()?);
            if self.peek() == Some(',') {
                self.position += 1;
            } else {
                return Ok(values);
            }
        }
    }

    /// A name or a value: a `'quoted string'` or a run of non-delimiter characters (possibly
    /// empty, as in `eq(name,)`).
    fn word(&mut self) -> Result<RawValue, RqlError> {
        if self.peek() == Some('\'') {
            self.position += 1;
            let start = self.position;
            while self.peek().is_some_and(|c| c != '\'') {
                self.position += 1;
            }
            let text: String = self.chars[start..self.position].iter().collect();
            self.expect('\'')?;
            return Ok(RawValue { text, quoted: true });
        }
        let start = self.position;
        while self.peek().is_some_and(|c| !is_delimiter(c)) {
            self.position += 1;
        }
        Ok(RawValue {
            text: self.chars[start..self.position].iter().collect(),
            quoted: false,
        })
    }
}

fn combine(operator: &str, mut nodes: Vec<Node>) -> Node {
    if nodes.len() == 1 {
        nodes.remove(0)
    } else {
        Node::Call {
            name: operator.to_owned(),
            args: nodes,
        }
    }
}

/// Top level (and inside a top-level `and`): `select`, `sort`, `limit` and `skipCount`
/// configure the query; everything else filters. A repeated one replaces the earlier one.
fn interpret_top(node: Node, query: &mut Query) -> Result<Option<Expr>, RqlError> {
    match node {
        Node::Call { name, args } if name == "and" => {
            let mut filters = Vec::new();
            for arg in args {
                if let Some(filter) = interpret_top(arg, query)? {
                    filters.push(filter);
                }
            }
            Ok(match filters.len() {
                0 => None,
                1 => filters.pop(),
                _ => Some(Expr::And(filters)),
            })
        }
        Node::Call { name, args } => match name.as_str() {
            "select" => {
                query.select = Some(args.iter().map(field_name).collect::<Result<_, _>>()?);
                Ok(None)
            }
            "sort" => {
                query.sort = args
                    .iter()
                    .map(|arg| {
                        let name = field_name(arg)?;
                        Ok(match name.strip_prefix('-') {
                            Some(field) => SortKey {
                                field: field.to_owned(),
                                descending: true,
                            },
                            None => SortKey {
                                field: name.strip_prefix('+').unwrap_or(&name).to_owned(),
                                descending: false,
                            },
                        })
                    })
                    .collect::<Result<_, RqlError>>()?;
                Ok(None)
            }
            "limit" => {
                let number = |node: &Node| -> Result<i64, RqlError> {
                    let text = value_text(node)?;
                    text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        RqlError::new(format!(
                            "limit expects non-negative whole numbers, got `{text}`"
                        ))
                    })
                };
                match args.as_slice() {
                    [count] => query.limit = Some(number(count)?),
                    [count, offset] => {
                        query.limit = Some(number(count)?);
                        query.offset = Some(number(offset)?);
                    }
                    _ => return Err(RqlError::new("limit takes a count and an optional offset")),
                }
                Ok(None)
            }
            "skipCount" | "skip_count" => {
                query.skip_count = true;
                Ok(None)
            }
            _ => interpret(Node::Call { name, args }).map(Some),
        },
        other => interpret(other).map(Some),
    }
}

/// A filtering node → [`Expr`].
fn interpret(node: Node) -> Result<Expr, RqlError> {
    let Node::Call { name, args } = node else {
        return Err(RqlError::new(
            "expected an operator such as eq(field,value)",
        ));
    };
    let field = || -> Result<String, RqlError> {
        args.first()
            .map(field_name)
            .transpose()?
            .ok_or_else(|| RqlError::new(format!("{name} needs a field")))
    };
    let values = |from: usize| -> Result<Vec<Value>, RqlError> {
        let mut values = Vec::new();
        for arg in args.iter().skip(from) {
            match arg {
                Node::Value(raw) => values.push(typed_value(raw)?),
                Node::Array(raws) => {
                    for raw in raws {
                        values.push(typed_value(raw)?);
                    }
                }
                Node::Call { .. } => return Err(RqlError::new(format!("{name} expects values"))),
            }
        }
        Ok(values)
    };
    let single_value = |values: Vec<Value>| -> Result<Value, RqlError> {
        match <[Value; 1]>::try_from(values) {
            Ok([value]) => Ok(value),
            Err(_) => Err(RqlError::new(format!("{name} takes a field and one value"))),
        }
    };
    let compare = |op| -> Result<Expr, RqlError> {
        Ok(Expr::Compare {
            field: field()?,
            op,
            value: single_value(values(1)?)?,
        })
    };
    use super::CompareOp::*;
    match name.as_str() {
        "and" | "or" => {
            let parts = args
                .into_iter()
                .map(interpret)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if name == "and" {
                Expr::And(parts)
            } else {
                Expr::Or(parts)
            })
        }
        "eq" => compare(Eq),
        "ne" => compare(Ne),
        "gt" => compare(Gt),
        "ge" => compare(Ge),
        "lt" => compare(Lt),
        "le" => compare(Le),
        "in" => Ok(Expr::In {
            field: field()?,
            values: values(1)?,
        }),
        "out" => Ok(Expr::Out {
            field: field()?,
            values: values(1)?,
        }),
        "like" => {
            let field = field()?;
            let pattern = match args.get(1..) {
                Some([node]) => value_text(node)?,
                _ => return Err(RqlError::new("like takes a field and a pattern")),
            };
            Ok(Expr::Like { field, pattern })
        }
        "contains" | "excludes" => {
            let field = field()?;
            let conditions = args
                .into_iter()
                .skip(1)
                .map(interpret)
                .collect::<Result<Vec<_>, _>>()?;
            let conditions = match conditions.len() {
                0 => None,
                1 => conditions.into_iter().next().map(Box::new),
                _ => Some(Box::new(Expr::And(conditions))),
            };
            Ok(if name == "contains" {
                Expr::Contains { field, conditions }
            } else {
                Expr::Excludes { field, conditions }
            })
        }
        "select" | "sort" | "limit" | "skipCount" | "skip_count" => Err(RqlError::new(format!(
            "{name} may only appear at the top level of the query"
        ))),
        other => Err(RqlError::new(format!(
            "unknown operator `{}`",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

fn field_name(node: &Node) -> Result<String, RqlError> {
    match node {
        Node::Value(raw) if !raw.text.is_empty() => Ok(raw.text.clone()),
        _ => Err(RqlError::new("expected a field name")),
    }
}

/// The text of a value, decoded a second time (the SDK's double encoding).
fn value_text(node: &Node) -> Result<String, RqlError> {
    match node {
        Node::Value(raw) => decode_value(&raw.text),
        _ => Err(RqlError::new("expected a value")),
    }
}

fn decode_value(text: &str) -> Result<String, RqlError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|t| t.into_owned())
        .map_err(|_| RqlError::new("a value is not valid UTF-8 once decoded"))
}

/// Typed prefixes (`string:`, `number:`, `boolean:`, `date:`, `epoch:`, `isodate:`) or
/// auto-typing: `true`, `false`, `null` and numbers are not strings.
fn typed_value(raw: &RawValue) -> Result<Value, RqlError> {
    let text = decode_value(&raw.text)?;
    if raw.quoted {
        return Ok(Value::String(text));
    }
    if let Some((prefix, rest)) = text.split_once(':') {
        let invalid = || RqlError::new(format!("`{text}` is not a valid {prefix} value"));
        match prefix {
            "string" => return Ok(Value::String(rest.to_owned())),
            "number" => {
                return rest
                    .parse::<f64>()
                    .map(Value::Number)
                    .map_err(|_| invalid());
            }
            "boolean" => {
                return match rest {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(invalid()),
                };
            }
            "date" | "isodate" => {
                return crate::time::parse(rest)
                    .or_else(|| date_only(rest))
                    .map(Value::Date)
                    .ok_or_else(invalid);
            }
            "epoch" => {
                return rest
                    .parse::<i64>()
                    .ok()
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(Value::Date)
                    .ok_or_else(invalid);
            }
            _ => {}
        }
    }
    Ok(match text.as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => match text.parse::<f64>() {
            Ok(number) if number.is_finite() && looks_numeric(&text) => Value::Number(number),
            _ => Value::String(text),
        },
    })
}

/// Canonical number text only: `12`, `-3.5`, `1e3`; not `inf`, `NaN` or `0x1`.
fn looks_numeric(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        && text.chars().any(|c| c.is_ascii_digit())
}

fn date_only(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}
