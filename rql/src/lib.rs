//! RQL (Resource Query Language), the list query language of the Extra Horizon API, parsed and
//! compiled to parameterized PostgreSQL: [`parse`] turns a raw query string into a [`Query`],
//! and [`compile_filter`], [`compile_order_by`] and [`check_select`] check it against a
//! resource's [`Schema`] and produce SQL whose values are bound [`SqlParam`]s. The grammar,
//! what each operator compiles to and the decisions behind both are in the crate's
//! `README.md`.
//!
//! Files: `lexer` (decoding, tokens), `parser` (syntax tree), `value` (typing of values),
//! `interpret` (operators → [`Query`]), `schema`, `coerce` (values → field types), `params`,
//! `compile` (filters), `order` (sort and select), `error`.

mod coerce;
mod compile;
mod error;
mod interpret;
mod lexer;
mod order;
mod params;
mod parser;
mod schema;
mod value;

use chrono::{DateTime, Utc};

pub use compile::{MAX_PARAMS, compile_filter};
pub use error::RqlError;
pub use interpret::parse;
pub use order::{check_select, compile_order_by};
pub use params::{SqlFilter, SqlParam};
pub use schema::{Field, FieldKind, Schema};

/// Longest accepted raw query, in bytes.
pub const MAX_QUERY_BYTES: usize = 8192;
/// Most parentheses open at once.
pub const MAX_DEPTH: usize = 32;

/// A parsed query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub filter: Option<Expr>,
    pub select: Option<Vec<String>>,
    pub sort: Vec<SortKey>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    pub skip_count: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: String,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    /// The RQL operator name.
    pub fn name(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    /// The SQL operator.
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "<>",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        }
    }
}

/// A filter. Field names are as written in the query (`functionName`, `data.a.b`).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Compare {
        field: String,
        op: CompareOp,
        value: Value,
    },
    In {
        field: String,
        values: Vec<Value>,
    },
    Out {
        field: String,
        values: Vec<Value>,
    },
    /// `pattern` is the decoded text; `*` is the wildcard.
    Like {
        field: String,
        pattern: String,
    },
    Contains {
        field: String,
        conditions: Option<Box<Expr>>,
    },
    Excludes {
        field: String,
        conditions: Option<Box<Expr>>,
    },
}

/// A value as the query typed it. A number is only auto-typed when written canonically, so its
/// text is exactly what it prints as: nothing is lost by keeping an `f64`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Number(f64),
    Bool(bool),
    Null,
    Date(DateTime<Utc>),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The sample resource of the crate's tests.
    pub(super) static SCHEMA: Schema = Schema {
        fields: &[
            Field {
                name: "id",
                column: "id",
                kind: FieldKind::Text,
            },
            Field {
                name: "functionName",
                column: "function_name",
                kind: FieldKind::Text,
            },
            Field {
                name: "status",
                column: "status",
                kind: FieldKind::Text,
            },
            Field {
                name: "tags",
                column: "tags",
                kind: FieldKind::TextArray,
            },
            Field {
                name: "priority",
                column: "priority",
                kind: FieldKind::Integer,
            },
            Field {
                name: "score",
                column: "score",
                kind: FieldKind::Number,
            },
            Field {
                name: "enabled",
                column: "enabled",
                kind: FieldKind::Bool,
            },
            Field {
                name: "startTimestamp",
                column: "start_timestamp",
                kind: FieldKind::Timestamp,
            },
            Field {
                name: "data",
                column: "data",
                kind: FieldKind::Json,
            },
        ],
    };

    /// The numbers of the `$n` placeholders in `sql`, in order of appearance.
    fn placeholders(sql: &str) -> Vec<usize> {
        let mut found = Vec::new();
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                found.push(digits.parse().unwrap());
            }
        }
        found
    }

    /// Parses and compiles everything `raw` holds; must never panic, and a compiled filter
    /// must number exactly its parameters, once each, in order, from `first`.
    fn check_everything(raw: &str, first: usize) {
        let Ok(query) = parse(raw) else { return };
        if let Some(filter) = &query.filter
            && let Ok(compiled) = compile_filter(filter, &SCHEMA, first)
        {
            let expected: Vec<usize> = (first..first + compiled.params.len()).collect();
            assert_eq!(
                placeholders(&compiled.sql),
                expected,
                "{raw}: {}",
                compiled.sql
            );
        }
        let _ = compile_order_by(&query.sort, &SCHEMA);
        if let Some(select) = &query.select {
            let _ = check_select(select, &SCHEMA);
        }
    }

    #[test]
    fn placeholder_counting() {
        assert_eq!(
            placeholders("a = $1::text AND b IN ($2, $13)"),
            vec![1, 2, 13]
        );
    }

    #[test]
    fn the_whole_pipeline() {
        let query = parse(
            "select(id,status)&sort(-priority)&in(status,new,failed)&like(functionName,a%2520b)&skipCount()",
        )
        .unwrap();
        assert!(check_select(query.select.as_deref().unwrap(), &SCHEMA).is_ok());
        assert_eq!(
            compile_order_by(&query.sort, &SCHEMA).unwrap(),
            "priority DESC"
        );
        let filter = compile_filter(query.filter.as_ref().unwrap(), &SCHEMA, 1).unwrap();
        assert_eq!(filter.params.len(), 3);
    }

    /// A field with values that fit it, so most generated leaves compile.
    fn typed_leaf() -> impl Strategy<Value = String> {
        let pairs: Vec<(&str, Vec<&str>)> = vec![
            (
                "status",
                vec!["new", "a%252Ab", "'x,y'", "null", "string:1"],
            ),
            ("tags", vec!["a", "b*", "null", "%2525"]),
            ("priority", vec!["1", "-2", "number:3", "null", "007"]),
            ("score", vec!["1.5", "-2", "0"]),
            ("enabled", vec!["true", "false", "boolean:true"]),
            (
                "startTimestamp",
                vec!["2024-01-01T00:00:00Z", "epoch:0", "2024%252D01%252D01"],
            ),
            (
                "data.n",
                vec!["1", "abc", "null", "true", "date:2024-01-01"],
            ),
            ("data", vec!["1", "x"]),
        ];
        let op = prop::sample::select(vec![
            "eq", "ne", "gt", "ge", "lt", "le", "in", "out", "like", "contains", "excludes",
        ]);
        (op, prop::sample::select(pairs), 0usize..3).prop_map(|(op, (field, values), n)| match op {
            "in" | "out" => format!("{op}({field},{})", values[..n.min(values.len())].join(",")),
            "contains" | "excludes" => format!("{op}({field})"),
            "like" => format!("like({field},{})", values[n % values.len()]),
            _ if field == "startTimestamp" || field == "score" || field == "enabled" => {
                format!("{field}={op}={}", values[n % values.len()])
            }
            _ => format!("{op}({field},{})", values[n % values.len()]),
        })
    }

    /// A leaf from any operator, field and values, valid or not.
    fn wild_leaf() -> impl Strategy<Value = String> {
        let field = prop::sample::select(vec![
            "id",
            "status",
            "tags",
            "priority",
            "score",
            "enabled",
            "startTimestamp",
            "data",
            "data.n",
            "data.items",
            "data.a.b",
            "k",
            "nope",
            "status.x",
        ]);
        let value = prop::sample::select(vec![
            "1",
            "-2.5",
            "abc",
            "null",
            "true",
            "2024-01-01T00:00:00Z",
            "2024%252D01%252D01",
            "epoch:0",
            "number:3",
            "string:x",
            "'q,)'",
            "a*b%2525",
            "",
            "%FF",
            "9223372036854775808",
        ]);
        let op = prop::sample::select(vec![
            "eq", "ne", "gt", "ge", "lt", "le", "in", "out", "like", "contains", "excludes",
        ]);
        (op, field, prop::collection::vec(value, 0..4)).prop_map(|(op, field, values)| {
            if values.is_empty() {
                format!("{op}({field})")
            } else {
                format!("{op}({field},{})", values.join(","))
            }
        })
    }

    fn leaf() -> impl Strategy<Value = String> {
        prop_oneof![9 => typed_leaf(), 1 => wild_leaf()]
    }

    /// Nested, mostly valid expressions: and/or/contains around leaves, FIQL chains on top.
    fn expression() -> impl Strategy<Value = String> {
        leaf().prop_recursive(4, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("and({})", items.join(","))),
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("or({})", items.join(","))),
                (
                    prop::sample::select(vec!["contains", "excludes"]),
                    prop::sample::select(vec!["data.items", "data", "k", "tags", "status"]),
                    prop::collection::vec(inner.clone(), 1..3)
                )
                    .prop_map(|(op, field, items)| format!("{op}({field},{})", items.join(","))),
                (inner.clone(), inner).prop_map(|(a, b)| format!("({a}|{b})")),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_strings_never_panic(raw in any::<String>(), first in 1usize..100) {
            check_everything(&raw, first);
        }

        #[test]
        fn rql_alphabet_strings_never_panic(
            raw in "[()&|,=<>!%a-z0-9.:'*-]{0,80}",
            first in 1usize..100,
        ) {
            check_everything(&raw, first);
        }

        #[test]
        fn generated_queries_never_panic(
            terms in prop::collection::vec(expression(), 1..4),
            tail in "(&sort\\((-|\\+)?(priority|data\\.n|nope)\\))?(&limit\\([0-9]{1,3}\\))?",
            first in 1usize..100,
        ) {
            let raw = format!("{}{tail}", terms.join("&"));
            check_everything(&raw, first);
        }
    }
}
