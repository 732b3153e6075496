//! Syntax tree → [`Query`]: what each operator means and which arguments it takes.
//!
//! `select`, `sort`, `limit` and `skipCount` shape the result rather than filter it, so they are
//! only accepted at the top level: in the top-level `&` chain or in a top-level `and(…)`. A
//! repeated one replaces the earlier one (the last one wins).

use super::error::{RqlError, quote};
use super::lexer::tokenize;
use super::parser::{Node, parse_tokens};
use super::value::{decode, typed};
use super::{CompareOp, Expr, Query, SortKey, Value};

/// Parses the raw query string (as received over HTTP, still percent-encoded once).
pub fn parse(raw_query: &str) -> Result<Query, RqlError> {
    let tokens = tokenize(raw_query)?;
    let mut query = Query::default();
    if let Some(node) = parse_tokens(&tokens)? {
        query.filter = top(node, &mut query)?;
    }
    Ok(query)
}

/// A top-level node: applies result-shaping operators to `query`, returns the filter part.
fn top(node: Node, query: &mut Query) -> Result<Option<Expr>, RqlError> {
    let Node::Call { name, args, pos } = node else {
        return expr(node).map(Some);
    };
    match name.as_str() {
        "and" => {
            let mut filters = Vec::new();
            for arg in args {
                filters.extend(top(arg, query)?);
            }
            Ok(match filters.len() {
                0 => None,
                1 => filters.pop(),
                _ => Some(Expr::And(filters)),
            })
        }
        "select" => {
            if args.is_empty() {
                return Err(RqlError::Invalid(format!(
                    "`select` needs at least one field, at position {pos}"
                )));
            }
            let fields = args
                .iter()
                .map(|arg| field_name(arg, "select"))
                .collect::<Result<_, _>>()?;
            query.select = Some(fields);
            Ok(None)
        }
        "sort" => {
            query.sort = args.iter().map(sort_key).collect::<Result<_, RqlError>>()?;
            Ok(None)
        }
        "limit" => {
            let (limit, offset) = match args.as_slice() {
                [count] => (count_arg(count, "limit")?, None),
                [count, offset] => (
                    count_arg(count, "limit")?,
                    Some(count_arg(offset, "offset")?),
                ),
                _ => {
                    return Err(RqlError::Invalid(format!(
                        "`limit` takes a count and an optional offset, e.g. limit(10,20), at position {pos}"
                    )));
                }
            };
            query.limit = Some(limit);
            query.offset = offset;
            Ok(None)
        }
        "skipCount" | "skip_count" => {
            if !args.is_empty() {
                return Err(RqlError::Invalid(format!(
                    "`{name}` takes no arguments, at position {pos}"
                )));
            }
            query.skip_count = true;
            Ok(None)
        }
        _ => expr(Node::Call { name, args, pos }).map(Some),
    }
}

/// A filtering node → [`Expr`]. Recursion follows the tree, whose depth the parser bounds.
fn expr(node: Node) -> Result<Expr, RqlError> {
    let (name, args, pos) = match node {
        Node::Call { name, args, pos } => (name, args, pos),
        Node::Value { text, pos, .. } => {
            return Err(RqlError::Invalid(format!(
                "expected an operator such as eq(field,value) at position {pos}, found the value `{}`",
                quote(&text)
            )));
        }
        Node::Array { pos, .. } => {
            return Err(RqlError::Invalid(format!(
                "expected an operator such as eq(field,value) at position {pos}, found a list of values"
            )));
        }
    };
    let compare = |op| compare(op, &name, &args, pos);
    match name.as_str() {
        "and" => Ok(Expr::And(sub_exprs(args)?)),
        "or" => Ok(Expr::Or(sub_exprs(args)?)),
        "eq" => compare(CompareOp::Eq),
        "ne" => compare(CompareOp::Ne),
        "gt" => compare(CompareOp::Gt),
        "ge" => compare(CompareOp::Ge),
        "lt" => compare(CompareOp::Lt),
        "le" => compare(CompareOp::Le),
        "in" | "out" => {
            let (field, rest) = field_and_rest(&args, &name, pos)?;
            let values = values(rest, &name)?;
            Ok(if name == "in" {
                Expr::In { field, values }
            } else {
                Expr::Out { field, values }
            })
        }
        "like" => {
            let (field, rest) = field_and_rest(&args, &name, pos)?;
            let pattern = match rest {
                [Node::Value { text, .. }] => decode(text)?,
                _ => {
                    return Err(RqlError::Invalid(format!(
                        "`like` takes a field and one pattern, e.g. like(functionName,*fn), at position {pos}"
                    )));
                }
            };
            Ok(Expr::Like { field, pattern })
        }
        "contains" | "excludes" => {
            let (field, rest) = field_and_rest(&args, &name, pos)?;
            if let Some(Node::Value { pos, .. } | Node::Array { pos, .. }) =
                rest.iter().find(|arg| !matches!(arg, Node::Call { .. }))
            {
                return Err(RqlError::Invalid(format!(
                    "`{name}` takes a field and conditions on its elements such as eq(key,value), \
                     not a value, at position {pos}; to test membership use eq(field,value)"
                )));
            }
            let mut conditions = sub_exprs(rest.to_vec())?;
            let conditions = match conditions.len() {
                0 => None,
                1 => conditions.pop().map(Box::new),
                _ => Some(Box::new(Expr::And(conditions))),
            };
            Ok(if name == "contains" {
                Expr::Contains { field, conditions }
            } else {
                Expr::Excludes { field, conditions }
            })
        }
        "select" | "sort" | "limit" | "skipCount" | "skip_count" => Err(RqlError::Invalid(
            format!("`{name}` is only allowed at the top level of the query, at position {pos}"),
        )),
        _ => Err(RqlError::unknown_operator(&name)),
    }
}

fn sub_exprs(args: Vec<Node>) -> Result<Vec<Expr>, RqlError> {
    args.into_iter().map(expr).collect()
}

/// `eq(field,value)` and the other comparisons: exactly one value.
fn compare(op: CompareOp, name: &str, args: &[Node], pos: usize) -> Result<Expr, RqlError> {
    let (field, rest) = field_and_rest(args, name, pos)?;
    match rest {
        [Node::Value { text, quoted, .. }] => Ok(Expr::Compare {
            field,
            op,
            value: typed(text, *quoted)?,
        }),
        _ => Err(RqlError::Invalid(format!(
            "`{name}` takes a field and one value, e.g. {name}(priority,3), at position {pos}"
        ))),
    }
}

fn field_and_rest<'a>(
    args: &'a [Node],
    operator: &str,
    pos: usize,
) -> Result<(String, &'a [Node]), RqlError> {
    match args.split_first() {
        Some((first, rest)) => Ok((field_name(first, operator)?, rest)),
        None => Err(RqlError::Invalid(format!(
            "`{operator}` needs a field, at position {pos}"
        ))),
    }
}

/// A field name as written: never decoded a second time, never quoted.
fn field_name(node: &Node, operator: &str) -> Result<String, RqlError> {
    match node {
        Node::Value {
            text,
            quoted: false,
            ..
        } if !text.is_empty() => Ok(text.clone()),
        Node::Value { pos, .. } | Node::Array { pos, .. } | Node::Call { pos, .. } => {
            Err(RqlError::Invalid(format!(
                "`{operator}` expects a field name at position {pos}"
            )))
        }
    }
}

/// The values of `in`/`out`: listed one by one, as an array, or both.
fn values(args: &[Node], operator: &str) -> Result<Vec<Value>, RqlError> {
    let mut values = Vec::new();
    for arg in args {
        match arg {
            Node::Value { text, quoted, .. } => values.push(typed(text, *quoted)?),
            Node::Array { items, .. } => {
                for item in items {
                    if let Node::Value { text, quoted, .. } = item {
                        values.push(typed(text, *quoted)?);
                    }
                }
            }
            Node::Call { pos, .. } => {
                return Err(RqlError::Invalid(format!(
                    "`{operator}` takes a field and values, not an operator, at position {pos}"
                )));
            }
        }
    }
    Ok(values)
}

/// `-field` descending, `field` or `+field` ascending.
fn sort_key(node: &Node) -> Result<SortKey, RqlError> {
    let name = field_name(node, "sort")?;
    let (field, descending) = match name.strip_prefix('-') {
        Some(field) => (field, true),
        None => (name.strip_prefix('+').unwrap_or(&name), false),
    };
    if field.is_empty() {
        return Err(RqlError::Invalid(format!(
            "`sort` expects a field name at position {}",
            node_pos(node)
        )));
    }
    Ok(SortKey {
        field: field.to_owned(),
        descending,
    })
}

fn node_pos(node: &Node) -> usize {
    match node {
        Node::Call { pos, .. } | Node::Value { pos, .. } | Node::Array { pos, .. } => *pos,
    }
}

/// A non-negative integer argument of `limit`.
fn count_arg(node: &Node, what: &str) -> Result<i64, RqlError> {
    let (text, pos) = match node {
        Node::Value { text, pos, .. } => (decode(text)?, *pos),
        Node::Array { pos, .. } | Node::Call { pos, .. } => {
            return Err(RqlError::Invalid(format!(
                "`limit` expects a non-negative integer {what} at position {pos}"
            )));
        }
    };
    text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
        RqlError::Invalid(format!(
            "`limit` expects a non-negative integer {what}, got `{}` at position {pos}",
            quote(&text)
        ))
    })
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::super::MAX_DEPTH;
    use super::*;

    fn filter(raw: &str) -> Expr {
        parse(raw).unwrap().filter.unwrap()
    }

    fn eq(field: &str, value: Value) -> Expr {
        Expr::Compare {
            field: field.to_owned(),
            op: CompareOp::Eq,
            value,
        }
    }

    fn text(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    fn instant(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn empty_query_has_no_filter() {
        assert_eq!(parse("").unwrap(), Query::default());
    }

    #[test]
    fn sdk_example_filters_and_paging() {
        let query = parse(
            "eq(status,new)&eq(functionName,my%252Dfn)&ge(startTimestamp,2024%252D01%252D01T00%253A00%253A00%252E000Z)&limit(10,20)",
        )
        .unwrap();
        assert_eq!(
            query.filter,
            Some(Expr::And(vec![
                eq("status", text("new")),
                eq("functionName", text("my-fn")),
                Expr::Compare {
                    field: "startTimestamp".to_owned(),
                    op: CompareOp::Ge,
                    value: text("2024-01-01T00:00:00.000Z"),
                },
            ]))
        );
        assert_eq!((query.limit, query.offset), (Some(10), Some(20)));
        assert!(!query.skip_count);
    }

    #[test]
    fn sdk_example_select_sort_like_skip_count() {
        let query = parse(
            "select(id,status)&sort(-priority)&in(status,new,failed)&like(functionName,a%2520b)&skipCount()",
        )
        .unwrap();
        assert_eq!(
            query.select,
            Some(vec!["id".to_owned(), "status".to_owned()])
        );
        assert_eq!(
            query.sort,
            vec![SortKey {
                field: "priority".to_owned(),
                descending: true
            }]
        );
        assert_eq!(
            query.filter,
            Some(Expr::And(vec![
                Expr::In {
                    field: "status".to_owned(),
                    values: vec![text("new"), text("failed")],
                },
                Expr::Like {
                    field: "functionName".to_owned(),
                    pattern: "a b".to_owned(),
                },
            ]))
        );
        assert!(query.skip_count);
        assert_eq!(query.limit, None);
    }

    #[test]
    fn sdk_example_object_id() {
        assert_eq!(
            filter("eq(id,757f191a810c19729de860ae)"),
            eq("id", text("757f191a810c19729de860ae"))
        );
    }

    #[test]
    fn every_operator() {
        let cmp = |op, raw: &str| {
            assert_eq!(
                filter(raw),
                Expr::Compare {
                    field: "priority".to_owned(),
                    op,
                    value: Value::Number(3.0)
                },
                "{raw}"
            );
        };
        cmp(CompareOp::Eq, "eq(priority,3)");
        cmp(CompareOp::Ne, "ne(priority,3)");
        cmp(CompareOp::Gt, "gt(priority,3)");
        cmp(CompareOp::Ge, "ge(priority,3)");
        cmp(CompareOp::Lt, "lt(priority,3)");
        cmp(CompareOp::Le, "le(priority,3)");
        cmp(CompareOp::Eq, "priority=3");
        cmp(CompareOp::Eq, "priority==3");
        cmp(CompareOp::Ne, "priority!=3");
        cmp(CompareOp::Gt, "priority>3");
        cmp(CompareOp::Ge, "priority>=3");
        cmp(CompareOp::Lt, "priority<3");
        cmp(CompareOp::Le, "priority<=3");
        cmp(CompareOp::Ge, "priority=ge=3");
        cmp(CompareOp::Ne, "priority=ne=3");

        assert_eq!(
            filter("in(status,(a,b),c)"),
            Expr::In {
                field: "status".to_owned(),
                values: vec![text("a"), text("b"), text("c")]
            }
        );
        assert_eq!(
            filter("status=out=(a,b)"),
            Expr::Out {
                field: "status".to_owned(),
                values: vec![text("a"), text("b")]
            }
        );
        assert_eq!(
            filter("in(status)"),
            Expr::In {
                field: "status".to_owned(),
                values: vec![]
            }
        );
        assert_eq!(
            filter("like(functionName,*fn)"),
            Expr::Like {
                field: "functionName".to_owned(),
                pattern: "*fn".to_owned()
            }
        );
        assert_eq!(
            filter("or(eq(a,1),and(eq(b,2),eq(c,3)))"),
            Expr::Or(vec![
                eq("a", Value::Number(1.0)),
                Expr::And(vec![
                    eq("b", Value::Number(2.0)),
                    eq("c", Value::Number(3.0))
                ]),
            ])
        );
        assert_eq!(
            filter("a=1|b=2"),
            Expr::Or(vec![
                eq("a", Value::Number(1.0)),
                eq("b", Value::Number(2.0))
            ])
        );
        assert_eq!(
            filter("contains(tags)"),
            Expr::Contains {
                field: "tags".to_owned(),
                conditions: None
            }
        );
        assert_eq!(
            filter("excludes(data.items,eq(k,x),gt(n,1))"),
            Expr::Excludes {
                field: "data.items".to_owned(),
                conditions: Some(Box::new(Expr::And(vec![
                    eq("k", text("x")),
                    Expr::Compare {
                        field: "n".to_owned(),
                        op: CompareOp::Gt,
                        value: Value::Number(1.0)
                    },
                ])))
            }
        );
        assert_eq!(
            filter("contains(data.items,k=x)"),
            Expr::Contains {
                field: "data.items".to_owned(),
                conditions: Some(Box::new(eq("k", text("x"))))
            }
        );
    }

    #[test]
    fn typed_and_quoted_values() {
        assert_eq!(filter("eq(a,'12')"), eq("a", text("12")));
        assert_eq!(filter("eq(a,'x,y)')"), eq("a", text("x,y)")));
        assert_eq!(filter("eq(a,string:true)"), eq("a", text("true")));
        assert_eq!(filter("eq(a,true)"), eq("a", Value::Bool(true)));
        assert_eq!(filter("eq(a,null)"), eq("a", Value::Null));
        assert_eq!(filter("eq(a,number:5)"), eq("a", Value::Number(5.0)));
        assert_eq!(filter("eq(a,boolean:false)"), eq("a", Value::Bool(false)));
        assert_eq!(
            filter("eq(a,epoch:1704067200000)"),
            eq("a", Value::Date(instant("2024-01-01T00:00:00Z")))
        );
        assert_eq!(
            filter("eq(a,date:2024-01-01T00:00:00Z)"),
            eq("a", Value::Date(instant("2024-01-01T00:00:00Z")))
        );
        assert_eq!(
            filter("eq(a,isodate:2024-01-01T02:00:00+02:00)"),
            eq("a", Value::Date(instant("2024-01-01T00:00:00Z")))
        );
        // ISO offsets keep their `+`.
        assert_eq!(
            filter("eq(a,2024-01-01T00:00:00+01:00)"),
            eq("a", text("2024-01-01T00:00:00+01:00"))
        );
        assert_eq!(filter("eq(a,)"), eq("a", text("")));
    }

    #[test]
    fn result_shaping_operators() {
        let query =
            parse("and(select(a,data.b),sort(+a,-b,c),limit(5),skip_count())&eq(a,1)").unwrap();
        assert_eq!(
            query.select,
            Some(vec!["a".to_owned(), "data.b".to_owned()])
        );
        let sort: Vec<(String, bool)> = query
            .sort
            .into_iter()
            .map(|k| (k.field, k.descending))
            .collect();
        assert_eq!(
            sort,
            vec![
                ("a".to_owned(), false),
                ("b".to_owned(), true),
                ("c".to_owned(), false)
            ]
        );
        assert_eq!((query.limit, query.offset), (Some(5), None));
        assert!(query.skip_count);
        assert_eq!(query.filter, Some(eq("a", Value::Number(1.0))));
        // The last one wins.
        let query = parse("limit(5,1)&limit(7)&sort(a)&sort(-b)").unwrap();
        assert_eq!((query.limit, query.offset), (Some(7), None));
        assert_eq!(query.sort.len(), 1);
        assert_eq!(parse("limit(0,0)").unwrap().limit, Some(0));
    }

    #[test]
    fn errors() {
        let message = |raw: &str| parse(raw).unwrap_err().to_string();
        assert_eq!(message("foo(a,b)"), "unknown operator `foo`");
        assert_eq!(message("a=foo=1"), "unknown operator `foo`");
        assert!(message("limit(-1)").contains("non-negative integer"));
        assert!(message("limit(abc)").contains("non-negative integer"));
        assert!(message("limit(1.5)").contains("non-negative integer"));
        assert!(message("limit(1,-2)").contains("offset"));
        assert!(message("limit()").contains("count"));
        assert!(message("limit(1,2,3)").contains("count"));
        assert!(message("or(sort(a),eq(a,1))").contains("top level"));
        assert!(message("a=1|limit(1)").contains("top level"));
        assert!(message("eq(a)").contains("one value"));
        assert!(message("eq(a,1,2)").contains("one value"));
        assert!(message("eq(a,(1,2))").contains("one value"));
        assert!(message("eq('a',1)").contains("field name"));
        assert!(message("eq(,1)").contains("field name"));
        assert!(message("eq()").contains("needs a field"));
        assert!(message("contains(tags,a)").contains("membership"));
        assert!(message("in(a,eq(b,c))").contains("not an operator"));
        assert!(message("like(a)").contains("pattern"));
        assert!(message("and(a)").contains("expected an operator"));
        assert!(message("sort(-)").contains("field name"));
        assert!(message("select()").contains("at least one"));
        assert!(message("skipCount(1)").contains("no arguments"));
        assert!(message("eq(status,new").contains("expected `)`"));
        assert!(message("eq(status,new%29").contains("percent-encoded only once"));
        assert!(message("eq(a,number:x)").contains("number"));
        assert_eq!(message("%FF%FE"), RqlError::InvalidUtf8.to_string());
        let deep = format!("{}eq(a,b){}", "(".repeat(40), ")".repeat(40));
        assert_eq!(
            parse(&deep).unwrap_err(),
            RqlError::TooDeep { max: MAX_DEPTH }
        );
        let long = format!("eq(a,{})", "x".repeat(super::super::MAX_QUERY_BYTES));
        assert!(matches!(parse(&long), Err(RqlError::TooLong { .. })));
    }
}
