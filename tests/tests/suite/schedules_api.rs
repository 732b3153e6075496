//! `/tasks/v1/schedules` against a real scheduler and Postgres.

use harness::TestScheduler;
use serde_json::{Value, json};

fn assert_error(status: u16, body: &Value, expected_status: u16, code: u64) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
}

#[tokio::test]
async fn create_list_delete() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    let (status, schedule) = app
        .post(
            "/tasks/v1/schedules",
            &json!({
                "interval": 60, "functionName": "fn", "data": {"a_b": 1}, "priority": 2,
                "startTimestamp": "2030-01-01T00:00:00.000Z"
            }),
        )
        .await;
    assert_eq!(status, 200, "{schedule}");
    assert_eq!(schedule["interval"], 60);
    assert_eq!(schedule["functionName"], "fn");
    assert_eq!(schedule["data"], json!({"a_b": 1}));
    assert_eq!(schedule["priority"], 2);
    assert_eq!(schedule["startTimestamp"], "2030-01-01T00:00:00.000Z");
    assert_eq!(schedule["nextTimestamp"], "2030-01-01T00:00:00.000Z");
    assert!(schedule["creationTimestamp"].is_string() && schedule["updateTimestamp"].is_string());

    let (status, other) = app
        .post(
            "/tasks/v1/schedules/",
            &json!({"interval": 3600, "functionName": "fn"}),
        )
        .await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["data"], json!({}));
    assert_eq!(other["startTimestamp"], other["nextTimestamp"]);

    let (status, list) = app.get("/tasks/v1/schedules").await;
    assert_eq!(status, 200);
    assert_eq!(list["page"], json!({"total": 2, "offset": 0, "limit": 20}));
    assert_eq!(list["data"][0], schedule);
    let (_, list) = app
        .get("/tasks/v1/schedules?gt(interval,100)&select(id,interval)")
        .await;
    assert_eq!(list["data"], json!([{"id": other["id"], "interval": 3600}]));

    let id = schedule["id"].as_str().unwrap();
    let (status, body) = app.delete(&format!("/tasks/v1/schedules/{id}")).await;
    assert_eq!((status, body), (200, json!({"affectedRecords": 1})));
    let (status, body) = app.delete(&format!("/tasks/v1/schedules/{id}")).await;
    assert_error(status, &body, 404, 16);
    let (_, list) = app.get("/tasks/v1/schedules").await;
    assert_eq!(list["page"]["total"], 1);
    app.stop().await;
}

#[tokio::test]
async fn invalid_schedules_are_rejected() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    let cases: Vec<(Value, u16, u64)> = vec![
        (json!({"functionName": "fn"}), 400, 14),
        (json!({"interval": 10}), 400, 14),
        (json!({"interval": 0, "functionName": "fn"}), 400, 15),
        (json!({"interval": 1.5, "functionName": "fn"}), 400, 15),
        (json!({"interval": "daily", "functionName": "fn"}), 400, 15),
        (json!({"interval": 10, "functionName": "nope"}), 404, 16),
        (
            json!({"interval": 10, "functionName": "fn", "startTimestamp": 5}),
            400,
            15,
        ),
    ];
    for (body, expected_status, code) in cases {
        let (status, response) = app.post("/tasks/v1/schedules", &body).await;
        assert_error(status, &response, expected_status, code);
    }
    let (_, list) = app.get("/tasks/v1/schedules").await;
    assert_eq!(list["page"]["total"], 0);
    let (status, body) = app.delete("/tasks/v1/schedules/xyz").await;
    assert_error(status, &body, 400, 12);
    app.stop().await;
}
