//! RQL on the task list: every operator, the SDK's double encoding, paging and errors.

use harness::TestScheduler;
use serde_json::json;

/// Five tasks with distinct priorities, tags, data and start times; returns their ids in order.
async fn seed(app: &TestScheduler) -> Vec<String> {
    app.create_noop_function("my-fn").await;
    app.create_noop_function("other").await;
    let specs = [
        json!({"functionName": "my-fn", "priority": 1, "tags": ["a", "b"], "data": {"n": 1, "kind": "heart rate", "items": [{"k": "x"}]}, "startTimestamp": "2024-01-01T00:00:00.000Z"}),
        json!({"functionName": "my-fn", "priority": 5, "tags": ["b"], "data": {"n": 2, "kind": "spo2"}, "startTimestamp": "2024-01-02T00:00:00.000Z"}),
        json!({"functionName": "other", "priority": 3, "tags": [], "data": {"n": 3, "flag": true, "items": [{"k": "y"}]}, "startTimestamp": "2024-01-03T00:00:00.000Z"}),
        json!({"functionName": "other", "priority": -2, "tags": ["c"], "data": {"n": 10}, "startTimestamp": "2023-12-31T23:00:00.000+01:00"}),
        json!({}),
    ];
    let mut ids = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if i == 4 {
            // `a b` is not a valid function name, so this failed task is stored directly.
            let db = app.database.connect().await;
            let id = common::id::ObjectId::generate().to_string();
            db.execute(
                "INSERT INTO tasks (id, function_name, status, status_changed_timestamp, \
                 start_timestamp, source, creation_timestamp, update_timestamp) \
                 VALUES ($1, 'a b', 'failed', now(), now(), 'api', now(), now())",
                &[&id],
            )
            .await
            .unwrap();
            ids.push(id);
            continue;
        }
        let (status, task) = app.post("/tasks/v1", spec).await;
        assert_eq!(status, 200, "{task}");
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn ids_for(app: &TestScheduler, query: &str) -> Vec<String> {
    let (status, body) = app.get(&format!("/tasks/v1/?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

fn pick(ids: &[String], indexes: &[usize]) -> Vec<String> {
    indexes.iter().map(|&i| ids[i].clone()).collect()
}

#[tokio::test]
async fn every_operator_filters_as_documented() {
    let app = TestScheduler::start().await;
    let ids = seed(&app).await;
    let cases: Vec<(&str, Vec<usize>)> = vec![
        ("eq(functionName,my%252Dfn)&sort(priority)", vec![0, 1]),
        ("eq(functionName,my-fn)&sort(priority)", vec![0, 1]),
        ("ne(functionName,my-fn)&sort(priority)", vec![3, 4, 2]),
        ("gt(priority,1)&sort(priority)", vec![2, 1]),
        ("ge(priority,1)&sort(priority)", vec![0, 2, 1]),
        ("lt(priority,1)&sort(priority)", vec![3, 4]),
        ("le(priority,1)&sort(priority)", vec![3, 4, 0]),
        ("in(priority,1,3)&sort(priority)", vec![0, 2]),
        ("out(priority,1,3,0)&sort(priority)", vec![3, 1]),
        ("eq(status,failed)", vec![4]),
        ("in(status,new,failed)&sort(-priority)", vec![1, 2, 0, 4, 3]),
        ("like(functionName,a%2520b)", vec![4]),
        ("like(functionName,*fn)", vec![0, 1]),
        ("eq(tags,b)&sort(priority)", vec![0, 1]),
        ("in(tags,a,c)&sort(priority)", vec![3, 0]),
        ("out(tags,b)&sort(priority)", vec![3, 4, 2]),
        ("contains(tags)&sort(priority)", vec![3, 0, 1]),
        ("excludes(tags)&sort(priority)", vec![4, 2]),
        ("eq(data.n,2)", vec![1]),
        ("gt(data.n,2)&sort(priority)", vec![3, 2]),
        ("eq(data.flag,true)", vec![2]),
        ("like(data.kind,heart)", vec![0]),
        ("contains(data.items,eq(k,y))", vec![2]),
        ("contains(data.flag)", vec![2]),
        ("and(eq(functionName,other),gt(priority,0))", vec![2]),
        (
            "or(eq(priority,5),eq(priority,-2))&sort(priority)",
            vec![3, 1],
        ),
        (
            "ge(startTimestamp,2024%252D01%252D02T00%253A00%253A00%252E000Z)&lt(startTimestamp,2025-01-01T00:00:00Z)&sort(startTimestamp)",
            vec![1, 2],
        ),
        // 2023-12-31T23:00+01:00 is 2023-12-31T22:00Z: compared as instants, not text.
        ("lt(startTimestamp,2023-12-31T22:30:00.000Z)", vec![3]),
        ("priority=5", vec![1]),
        ("priority=gt=3", vec![1]),
        ("functionName!=other&priority>=1&sort(priority)", vec![0, 1]),
    ];
    for (query, expected) in cases {
        assert_eq!(ids_for(&app, query).await, pick(&ids, &expected), "{query}");
    }
    let by_id = ids_for(&app, &format!("eq(id,{})", ids[2])).await;
    assert_eq!(by_id, vec![ids[2].clone()]);
    app.stop().await;
}

#[tokio::test]
async fn select_sort_limit_and_skip_count() {
    let app = TestScheduler::start().await;
    let ids = seed(&app).await;

    let (_, body) = app
        .get("/tasks/v1/?select(id,status)&sort(-priority)&in(status,new,failed)&like(functionName,a%2520b)&skipCount()")
        .await;
    assert_eq!(
        body["page"],
        json!({"offset": 0, "limit": 20}),
        "no total with skipCount()"
    );
    assert_eq!(body["data"], json!([{"id": ids[4], "status": "failed"}]));

    let (_, body) = app.get("/tasks/v1/?sort(-priority)&limit(2,1)").await;
    assert_eq!(body["page"], json!({"total": 5, "offset": 1, "limit": 2}));
    let got: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[0].as_str()]);

    // A limit above the maximum is clamped and echoed.
    let (_, body) = app.get("/tasks/v1/?limit(5000)").await;
    assert_eq!(body["page"]["limit"], 100);
    let (_, body) = app.get("/tasks/v1/?select(data.n)&eq(priority,5)").await;
    assert_eq!(body["data"], json!([{"data": {"n": 2}}]));
    app.stop().await;
}

#[tokio::test]
async fn invalid_rql_is_error_19_and_never_a_server_error() {
    let app = TestScheduler::start().await;
    seed(&app).await;
    for query in [
        "eq(status,new",
        "eq(status,a%29b)",
        "unknownop(a,b)",
        "eq(nope,1)",
        "eq(priority,abc)",
        "limit(-1)",
        "limit(abc)",
        "sort(nope)",
        "select(nope)",
        "ge(startTimestamp,yesterday)",
        "((((((((((((((((((((((((((((((((((((((((eq(a,b))))))))))))))))))))))))))))))))))))))))",
        "%FF%FE",
    ] {
        let (status, body) = app.get(&format!("/tasks/v1/?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], 19, "{query}: {body}");
        assert_eq!(body["name"], "INVALID_RQL_EXCEPTION");
    }
    // User text never reaches the SQL text: an injection attempt is a harmless filter at most.
    let (status, body) = app
        .get("/tasks/v1/?eq(data.a%27;DROP%20TABLE%20tasks;--,1)")
        .await;
    assert!(status == 200 || body["code"] == 19, "{status}: {body}");
    let (_, body) = app.get("/tasks/v1/").await;
    assert_eq!(body["page"]["total"], 5, "the table is intact");
    app.stop().await;
}

#[tokio::test]
async fn arbitrary_queries_never_cause_a_server_error() {
    let app = TestScheduler::start().await;
    seed(&app).await;
    let pieces = [
        "eq(",
        "ne(",
        "gt(",
        "in(",
        "out(",
        "like(",
        "and(",
        "or(",
        "contains(",
        "excludes(",
        "sort(",
        "limit(",
        "select(",
        "skipCount()",
        ")",
        ",",
        "&",
        "|",
        "=",
        ">=",
        "<",
        "!=",
        "status",
        "priority",
        "tags",
        "data.n",
        "data.items",
        "startTimestamp",
        "id",
        "new",
        "5",
        "-1",
        "null",
        "true",
        "%2528",
        "%252C",
        "%25",
        "'q'",
        "*",
        "date:2024-01-01",
        "epoch:0",
        "string:x",
        "number:1",
        "2024-01-01T00:00:00Z",
        "error.name",
        "result",
    ];
    // A deterministic generator, so a failure can be reproduced.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let length = 1 + next() % 12;
        let query: String = (0..length)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        let (status, body) = app.get(&format!("/tasks/v1/?{query}")).await;
        assert!(
            status == 200 || (status == 400 && body["code"] == 19),
            "{query}: {status} {body}"
        );
    }
    app.stop().await;
}

/// Tag filters are written so that the tag index can answer them; it leaves out untagged
/// tasks, so a filter the planner cannot match to it would scan the whole table.
#[tokio::test]
async fn tag_filters_can_use_the_tag_index() {
    let app = TestScheduler::start().await;
    let db = app.database.connect().await;
    // With sequential scans priced out, a plan without the index means it cannot be used.
    db.batch_execute("SET enable_seqscan = off").await.unwrap();
    for filter in ["eq(tags,b)", "in(tags,a,c)"] {
        let query = rql::parse(filter).unwrap();
        let compiled = rql::compile_filter(
            query.filter.as_ref().unwrap(),
            &common::db::tasks::TASK_SCHEMA,
            1,
        )
        .unwrap();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = compiled
            .params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let plan: Vec<String> = db
            .query(
                &format!("EXPLAIN SELECT id FROM tasks WHERE {}", compiled.sql),
                &params,
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(
            plan.iter().any(|line| line.contains("tasks_tags")),
            "{filter}: {plan:#?}"
        );
    }
    app.stop().await;
}
