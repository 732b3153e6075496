//! The example functions in `deploy/examples/functions` do their job end to end.

use harness::{TestScheduler, third_party_stub};
use serde_json::json;

#[tokio::test]
async fn gdpr_user_delete_calls_the_third_party_and_reports_outages() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(2).await;
    let (url, requests, _third_party) = third_party_stub(204);
    app.create_function(
        "gdpr",
        "gdpr-user-delete",
        "nodejs20.x",
        "index.handler",
        json!({
            "environmentVariables": {
                "THIRD_PARTY_API_URL": {"value": url},
                "THIRD_PARTY_API_TOKEN": {"value": "secret-token"}
            }
        }),
    )
    .await;
    let (_, task) = app
        .post("/tasks/v1", &json!({"functionName": "gdpr", "data": {"event": {"id": "e1", "type": "user_deleted", "content": {"id": "user-42"}}}}))
        .await;
    let task = app.wait_until_finished(task["id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "complete", "{task}");
    assert_eq!(
        task["result"],
        json!({"userId": "user-42", "deleted": true, "thirdPartyStatus": 204})
    );
    assert_eq!(
        requests.lock().unwrap().clone(),
        vec!["DELETE /users/user-42 HTTP/1.1 auth=true".to_owned()]
    );

    let (down, _, _down) = third_party_stub(503);
    app.put(
        "/tasks/v1/functions/gdpr",
        &json!({"environmentVariables": {"THIRD_PARTY_API_URL": {"value": down}}}),
    )
    .await;
    let (_, task) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": "gdpr", "data": {"userId": "user-7"}}),
        )
        .await;
    let task = app.wait_until_finished(task["id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["type"], "runtime");
    assert_eq!(task["error"]["name"], "ThirdPartyUnavailable");
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn daily_report_aggregates_measurements() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(1).await;
    app.create_function(
        "report",
        "daily-report",
        "python3.12",
        "report.build",
        json!({}),
    )
    .await;
    let measurements = json!([
        {"userId": "u1", "type": "heart_rate", "values": [60, 80], "timestamp": "2024-03-01T08:00:00Z"},
        {"userId": "u1", "type": "heart_rate", "values": [130], "timestamp": "2024-03-01T09:00:00Z"},
        {"userId": "u2", "type": "spo2", "values": [97], "timestamp": "2024-03-01T10:00:00Z"},
        {"userId": "u2", "type": "spo2", "values": [97], "timestamp": "2024-02-28T10:00:00Z"},
    ]);
    let (_, task) = app
        .post("/tasks/v1", &json!({"functionName": "report", "data": {"date": "2024-03-01", "measurements": measurements}}))
        .await;
    let task = app.wait_until_finished(task["id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "complete", "{task}");
    let report = &task["result"];
    assert_eq!(report["date"], "2024-03-01");
    assert_eq!(report["totalMeasurements"], 3, "{report}");
    assert_eq!(report["countsByType"], json!({"heart_rate": 2, "spo2": 1}));
    assert_eq!(report["users"]["u1"]["heart_rate"]["average"], 90.0);
    assert_eq!(
        report["flaggedUsers"],
        json!(["u1"]),
        "130 bpm is flagged: {report}"
    );
    assert_eq!(report["skipped"], 1);
    worker.stop().await;
    app.stop().await;
}
