//! `/tasks/v1/`: create, list, cancel and logs, against a real scheduler and Postgres.

use harness::TestScheduler;
use serde_json::{Value, json};

fn assert_error(status: u16, body: &Value, expected_status: u16, code: u64) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["name"].is_string() && body["message"].is_string(),
        "{body}"
    );
}

fn is_iso_millis(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() == 24 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
    })
}

#[tokio::test]
async fn create_with_defaults_and_explicit_fields() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;

    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (status, task) = app.post("/tasks/v1/", &json!({"functionName": "fn"})).await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["status"], "new");
    assert_eq!(task["functionName"], "fn");
    assert_eq!(task["data"], json!({}));
    assert_eq!(task["tags"], json!([]));
    assert_eq!(task["priority"], 0);
    let id = task["id"].as_str().unwrap();
    assert!(
        id.len() == 24 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    for field in [
        "startTimestamp",
        "statusChangedTimestamp",
        "creationTimestamp",
        "updateTimestamp",
    ] {
        assert!(is_iso_millis(&task[field]), "{field}: {}", task[field]);
    }
    let start =
        chrono::DateTime::parse_from_rfc3339(task["startTimestamp"].as_str().unwrap()).unwrap();
    assert!(
        start >= before && start <= chrono::Utc::now(),
        "start defaults to now"
    );

    let (status, task) = app
        .post(
            "/tasks/v1",
            &json!({
                "functionName": "fn",
                "data": {"my_key": 1, "nested": {"a": [1, 2]}},
                "priority": 9007199254740991_i64,
                "tags": ["t1", "t2"],
                "startTimestamp": "2030-01-01T00:00:00.000Z"
            }),
        )
        .await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["data"], json!({"my_key": 1, "nested": {"a": [1, 2]}}));
    assert_eq!(task["priority"], 9007199254740991_i64);
    assert_eq!(task["tags"], json!(["t1", "t2"]));
    assert_eq!(task["startTimestamp"], "2030-01-01T00:00:00.000Z");

    // The list shows what was created, with an exact total.
    let (status, list) = app.get("/tasks/v1/").await;
    assert_eq!(status, 200);
    assert_eq!(list["page"], json!({"total": 2, "offset": 0, "limit": 20}));
    assert_eq!(list["data"][1], task);
    app.stop().await;
}

#[tokio::test]
async fn priority_defaults_to_the_functions_default_priority() {
    let app = TestScheduler::start().await;
    let (status, _) = app
        .post(
            "/tasks/v1/functions",
            &json!({
                "name": "prio", "code": harness::function_code("noop"),
                "entryPoint": "handler.handle", "runtime": "python3.11",
                "executionOptions": {"defaultPriority": 42}
            }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, task) = app
        .post("/tasks/v1", &json!({"functionName": "prio"}))
        .await;
    assert_eq!(task["priority"], 42);
    let (_, task) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": "prio", "priority": -5}),
        )
        .await;
    assert_eq!(task["priority"], -5);
    app.stop().await;
}

#[tokio::test]
async fn invalid_tasks_are_rejected_and_change_nothing() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    let cases: Vec<(Value, u16, u64)> = vec![
        (json!({}), 400, 14),
        (json!({"data": {}}), 400, 14),
        (json!({"functionName": "does-not-exist"}), 404, 16),
        (
            json!({"functionName": "fn", "priority": 9007199254740992_i64}),
            400,
            15,
        ),
        (json!({"functionName": "fn", "priority": 1.5}), 400, 15),
        (json!({"functionName": "fn", "priority": "high"}), 400, 15),
        (json!({"functionName": "fn", "data": [1, 2]}), 400, 15),
        (json!({"functionName": "fn", "tags": "t"}), 400, 15),
        (
            json!({"functionName": "fn", "startTimestamp": "tomorrow"}),
            400,
            15,
        ),
        (json!({"functionName": 12}), 400, 15),
        (
            json!({"functionName": "fn", "data": {"big": "x".repeat(300 * 1024)}}),
            400,
            15,
        ),
    ];
    for (body, expected_status, code) in cases {
        let (status, response) = app.post("/tasks/v1", &body).await;
        assert_error(status, &response, expected_status, code);
    }
    let response = app
        .http
        .post(app.url("/tasks/v1/"))
        .header("content-type", "application/json")
        .body("[\"not an object\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], 22);
    let response = app
        .http
        .post(app.url("/tasks/v1/"))
        .body(vec![b'{'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], 22);

    let (_, list) = app.get("/tasks/v1").await;
    assert_eq!(list["page"]["total"], 0, "nothing was stored: {list}");
    app.stop().await;
}

#[tokio::test]
async fn cancel_only_new_tasks() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    let (_, task) = app.post("/tasks/v1", &json!({"functionName": "fn"})).await;
    let id = task["id"].as_str().unwrap();

    let (status, body) = app
        .post(&format!("/tasks/v1/{id}/cancel"), &json!({}))
        .await;
    assert_eq!((status, body), (200, json!({"affectedRecords": 1})));
    let (_, list) = app.get(&format!("/tasks/v1/?eq(id,{id})")).await;
    assert_eq!(list["data"][0]["status"], "canceled");
    assert_ne!(
        list["data"][0]["statusChangedTimestamp"],
        task["statusChangedTimestamp"]
    );

    let (status, body) = app
        .post(&format!("/tasks/v1/{id}/cancel"), &json!({}))
        .await;
    assert_error(status, &body, 400, 27);

    // A task that is running cannot be canceled either.
    let (_, running) = app.post("/tasks/v1", &json!({"functionName": "fn"})).await;
    let running_id = running["id"].as_str().unwrap();
    let db = app.database.connect().await;
    db.execute(
        "UPDATE tasks SET status = 'inProgress' WHERE id = $1",
        &[&running_id],
    )
    .await
    .unwrap();
    let (status, body) = app
        .post(&format!("/tasks/v1/{running_id}/cancel"), &json!({}))
        .await;
    assert_error(status, &body, 400, 27);

    let (status, body) = app
        .post("/tasks/v1/757f191a810c19729de860ae/cancel", &json!({}))
        .await;
    assert_error(status, &body, 404, 16);
    let (status, body) = app.post("/tasks/v1/not-an-id/cancel", &json!({})).await;
    assert_error(status, &body, 400, 12);
    // The SDK sends `{}`, other clients nothing at all.
    let (_, other) = app.post("/tasks/v1", &json!({"functionName": "fn"})).await;
    let response = app
        .http
        .post(app.url(&format!(
            "/tasks/v1/{}/cancel",
            other["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn logs_of_a_task() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    let (_, task) = app.post("/tasks/v1", &json!({"functionName": "fn"})).await;
    let id = task["id"].as_str().unwrap().to_owned();

    let (status, body) = app.get(&format!("/tasks/v1/{id}/logs")).await;
    assert_error(status, &body, 400, 27);

    // The task ran (as a worker would record it) without output.
    let db = app.database.connect().await;
    db.execute("UPDATE tasks SET status = 'complete' WHERE id = $1", &[&id])
        .await
        .unwrap();
    let (status, body) = app.get(&format!("/tasks/v1/{id}/logs")).await;
    assert_error(status, &body, 400, 1408);

    let logs = common::db::TaskLogs::new(common::db::pool(&app.database.config()).unwrap());
    let t0 = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00.000Z")
        .unwrap()
        .to_utc();
    let lines: Vec<_> = (0..3)
        .map(|i| common::domain::LogLine {
            message: format!("line {i}"),
            timestamp: t0 + chrono::Duration::seconds(i),
        })
        .collect();
    logs.append(&id.parse().unwrap(), &lines).await.unwrap();

    let (status, body) = app.get(&format!("/tasks/v1/{id}/logs")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["page"], json!({"offset": 0, "limit": 100}));
    assert_eq!(
        body["data"],
        json!([
            {"message": "line 0", "timestamp": "2024-01-01T00:00:00.000Z"},
            {"message": "line 1", "timestamp": "2024-01-01T00:00:01.000Z"},
            {"message": "line 2", "timestamp": "2024-01-01T00:00:02.000Z"},
        ])
    );
    // The SDK's double-encoded lower bound, and the FIQL form.
    for query in [
        "ge(timestamp,2024%252D01%252D01T00%253A00%253A01%252E000Z)",
        "timestamp>=2024-01-01T00:00:01.000Z",
    ] {
        let (status, body) = app.get(&format!("/tasks/v1/{id}/logs?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["data"].as_array().unwrap().len(), 2, "{query}");
        assert_eq!(body["data"][0]["message"], "line 1");
    }
    let (status, body) = app.get(&format!("/tasks/v1/{id}/logs?eq(message,x)")).await;
    assert_error(status, &body, 400, 19);
    let (status, body) = app.get("/tasks/v1/757f191a810c19729de860ae/logs").await;
    assert_error(status, &body, 404, 16);
    app.stop().await;
}
