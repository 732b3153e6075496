use proptest::prelude::*;

use super::*;

static SCHEMA: Schema = Schema {
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

fn filter(query: &str) -> SqlFilter {
    let parsed = parse(query).unwrap();
    compile_filter(parsed.filter.as_ref().unwrap(), &SCHEMA, 1).unwrap()
}

fn error(query: &str) -> String {
    match parse(query) {
        Err(e) => e.to_string(),
        Ok(parsed) => {
            let compiled = parsed
                .filter
                .as_ref()
                .map(|f| compile_filter(f, &SCHEMA, 1).map(|_| ()))
                .unwrap_or(Ok(()))
                .and(compile_order_by(&parsed.sort, &SCHEMA).map(|_| ()))
                .and(
                    parsed
                        .select
                        .as_deref()
                        .map(|s| check_select(s, &SCHEMA))
                        .unwrap_or(Ok(())),
                );
            compiled.expect_err(query).to_string()
        }
    }
}

fn placeholders(sql: &str) -> usize {
    let mut max = 0;
    let bytes = sql.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'$' {
            let digits: String = sql[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse::<usize>() {
                max = max.max(n);
            }
        }
    }
    max
}

#[test]
fn the_sdks_double_encoded_queries() {
    let query = parse("eq(status,new)&eq(functionName,my%252Dfn)&ge(startTimestamp,2024%252D01%252D01T00%253A00%253A00%252E000Z)&limit(10,20)").unwrap();
    assert_eq!((query.limit, query.offset), (Some(10), Some(20)));
    let compiled = compile_filter(query.filter.as_ref().unwrap(), &SCHEMA, 1).unwrap();
    assert_eq!(
        compiled.sql,
        "(status = $1 AND function_name = $2 AND start_timestamp >= $3)"
    );
    assert_eq!(compiled.params[1], SqlParam::Text("my-fn".into()));
    assert_eq!(
        compiled.params[2],
        SqlParam::Timestamp(crate::time::parse("2024-01-01T00:00:00.000Z").unwrap())
    );

    let query = parse("select(id,status)&sort(-priority)&in(status,new,failed)&like(functionName,a%2520b)&skipCount()").unwrap();
    assert_eq!(
        query.select,
        Some(vec!["id".to_string(), "status".to_string()])
    );
    assert_eq!(
        query.sort,
        vec![SortKey {
            field: "priority".into(),
            descending: true
        }]
    );
    assert!(query.skip_count);
    let compiled = compile_filter(query.filter.as_ref().unwrap(), &SCHEMA, 1).unwrap();
    assert_eq!(compiled.params[2], SqlParam::Text("%a b%".into()));
    assert_eq!(
        compile_order_by(&query.sort, &SCHEMA).unwrap(),
        "priority DESC"
    );

    let compiled = filter("eq(id,757f191a810c19729de860ae)");
    assert_eq!(compiled.sql, "id = $1");
    assert_eq!(
        compiled.params,
        vec![SqlParam::Text("757f191a810c19729de860ae".into())]
    );
}

#[test]
fn every_operator_compiles() {
    assert_eq!(filter("ne(status,new)").sql, "status IS DISTINCT FROM $1");
    assert_eq!(filter("gt(priority,3)").sql, "priority > $1");
    assert_eq!(filter("gt(priority,3)").params, vec![SqlParam::Int(3)]);
    assert_eq!(filter("lt(score,1.5)").params, vec![SqlParam::Float(1.5)]);
    assert_eq!(filter("le(priority,3)").sql, "priority <= $1");
    assert_eq!(
        filter("eq(enabled,true)").params,
        vec![SqlParam::Bool(true)]
    );
    assert_eq!(
        filter("in(status,new,failed)").sql,
        "(status = $1 OR status = $2)"
    );
    assert_eq!(filter("in(status,(new,failed))").params.len(), 2);
    assert_eq!(
        filter("out(status,new)").sql,
        "(status IS DISTINCT FROM $1)"
    );
    assert_eq!(filter("in(status)").sql, "FALSE");
    assert_eq!(filter("out(status)").sql, "TRUE");
    assert_eq!(filter("eq(tags,a)").sql, "$1 = ANY(tags)");
    assert!(filter("like(tags,a*)").sql.contains("unnest(tags)"));
    assert_eq!(
        filter("like(tags,a*)").params,
        vec![SqlParam::Text("a%".into())]
    );
    assert_eq!(
        filter("like(functionName,50%25_x)").params,
        vec![SqlParam::Text("%50\\%\\_x%".into())]
    );
    assert_eq!(filter("contains(tags)").sql, "cardinality(tags) > 0");
    assert_eq!(filter("excludes(tags)").sql, "NOT (cardinality(tags) > 0)");
    assert_eq!(filter("eq(status,null)").sql, "status IS NULL");
    assert_eq!(
        filter("and(eq(status,new),or(eq(priority,1),eq(priority,2)))").sql,
        "(status = $1 AND (priority = $2 OR priority = $3))"
    );
    let json = filter("eq(data.a.b,5)");
    assert_eq!(
        json.params[0],
        SqlParam::TextArray(vec!["a".into(), "b".into()])
    );
    assert_eq!(json.params[1], SqlParam::Json(serde_json::json!(5)));
    assert!(filter("gt(data.n,2)").sql.contains("jsonb_typeof"));
    assert!(
        filter("contains(data.items,eq(k,y))")
            .sql
            .contains("jsonb_array_elements")
    );
    assert!(
        filter("contains(data.items,eq(k,y),ne(z,1))")
            .sql
            .contains("element_0.value")
    );
    assert!(filter("excludes(data.flag)").sql.starts_with("NOT"));
    // Numbers compare as text on text fields.
    assert_eq!(
        filter("eq(functionName,123)").params,
        vec![SqlParam::Text("123".into())]
    );
    assert_eq!(
        filter("eq(functionName,string:true)").params,
        vec![SqlParam::Text("true".into())]
    );
    assert_eq!(
        filter("eq(functionName,'a,b')").params,
        vec![SqlParam::Text("a,b".into())]
    );
    assert_eq!(
        filter("ge(startTimestamp,epoch:0)").params,
        vec![SqlParam::Timestamp(
            chrono::DateTime::from_timestamp_millis(0).unwrap()
        )]
    );
}

#[test]
fn fiql_shorthands() {
    assert_eq!(filter("status=new").sql, "status = $1");
    assert_eq!(filter("status==new").sql, "status = $1");
    assert_eq!(filter("status!=new").sql, "status IS DISTINCT FROM $1");
    assert_eq!(filter("priority>3").sql, "priority > $1");
    assert_eq!(filter("priority>=3").sql, "priority >= $1");
    assert_eq!(filter("priority<3").sql, "priority < $1");
    assert_eq!(filter("priority<=3").sql, "priority <= $1");
    assert_eq!(filter("priority=gt=3").sql, "priority > $1");
    assert_eq!(
        filter("status=new|status=failed").sql,
        "(status = $1 OR status = $2)"
    );
    assert_eq!(
        filter("status=new&priority=1|status=failed").sql,
        "((status = $1 AND priority = $2) OR status = $3)"
    );
    // `+` is not a space: timezone offsets survive.
    assert_eq!(
        filter("startTimestamp>=2024-01-01T01:00:00+01:00").params,
        vec![SqlParam::Timestamp(
            crate::time::parse("2024-01-01T00:00:00Z").unwrap()
        )]
    );
}

#[test]
fn paging_and_projection() {
    let query = parse("limit(5)&and(sort(+functionName,-priority),select(data.a))").unwrap();
    assert_eq!(query.limit, Some(5));
    assert_eq!(query.offset, None);
    assert_eq!(
        compile_order_by(&query.sort, &SCHEMA).unwrap(),
        "function_name ASC, priority DESC"
    );
    assert!(query.filter.is_none());
    assert!(parse("skip_count()").unwrap().skip_count);
    assert_eq!(parse("").unwrap(), Query::default());
    assert_eq!(
        compile_order_by(&parse("sort(-data.x)").unwrap().sort, &SCHEMA).unwrap(),
        "data #> '{x}' DESC"
    );
}

#[test]
fn invalid_queries_are_errors() {
    for query in [
        "eq(status,new",
        "eq(status,a%29b)",
        "eq(status,new))",
        "nope(a,b)",
        "eq(unknown,1)",
        "eq(priority,abc)",
        "eq(priority,1.5)",
        "gt(tags,a)",
        "limit(-1)",
        "limit(x)",
        "limit(1,2,3)",
        "sort(unknown)",
        "sort(-data.a'b)",
        "select(data,data.a)",
        "select(nope)",
        "ge(startTimestamp,yesterday)",
        "eq(status)",
        "eq(status,a,b)",
        "contains(status,eq(a,1))",
        "or(select(id))",
        "status",
        "%FF",
        "eq(priority.x,1)",
    ] {
        assert!(!error(query).is_empty(), "{query}");
    }
    let deep = format!("{}eq(status,new){}", "and(".repeat(40), ")".repeat(40));
    assert!(error(&deep).contains("deeper"));
    assert!(error(&"a".repeat(MAX_QUERY_BYTES + 1)).contains("longer"));
    assert!(error("eq(nope,1)").contains("unknown field `nope`"));
    assert!(error("foo(a)").contains("unknown operator `foo`"));
}

fn check_never_panics(input: &str) {
    let Ok(query) = parse(input) else {
        return;
    };
    if let Some(expr) = &query.filter
        && let Ok(compiled) = compile_filter(expr, &SCHEMA, 3)
    {
        // Placeholders are numbered from 3 and match the parameters one to one.
        let expected = if compiled.params.is_empty() {
            0
        } else {
            compiled.params.len() + 2
        };
        assert_eq!(
            placeholders(&compiled.sql),
            expected,
            "{input}: {}",
            compiled.sql
        );
    }
    let _ = compile_order_by(&query.sort, &SCHEMA);
    if let Some(select) = &query.select {
        let _ = check_select(select, &SCHEMA);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(input in ".{0,200}") {
        check_never_panics(&input);
    }

    #[test]
    fn rql_shaped_text_never_panics(input in "[()&|,=<>!%a-z0-9.:'*-]{0,120}") {
        check_never_panics(&input);
    }

    #[test]
    fn field_and_operator_soup_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("eq(".to_string()), Just("and(".to_string()), Just("or(".to_string()),
                Just("in(".to_string()), Just("contains(".to_string()), Just("like(".to_string()),
                Just("sort(".to_string()), Just("limit(".to_string()), Just("select(".to_string()),
                Just(")".to_string()), Just(",".to_string()), Just("&".to_string()), Just("|".to_string()),
                Just("status".to_string()), Just("tags".to_string()), Just("data.a".to_string()),
                Just("priority".to_string()), Just("startTimestamp".to_string()), Just("5".to_string()),
                Just("null".to_string()), Just("%2528".to_string()), Just("'x'".to_string()),
                Just(">=".to_string()), Just("=".to_string()), Just("-".to_string()),
            ],
            0..40,
        )
    ) {
        check_never_panics(&parts.concat());
    }
}
