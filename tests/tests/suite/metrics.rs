//! Both binaries serve Prometheus metrics that move as tasks are created, run and fail.

use harness::{TestScheduler, metric_value};
use serde_json::json;

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn counters_and_histograms_move_as_tasks_run() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(2).await;
    app.create_function("ok", "noop", "python3.11", "handler.handle", json!({}))
        .await;
    app.create_function(
        "bad",
        "raise-error",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;

    let before = scrape(&app.http, &app.base_url).await;
    assert_eq!(
        metric_value(&before, "tasks_created_total{source=\"api\"}"),
        0.0
    );
    let mut ids = Vec::new();
    for function in ["ok", "ok", "ok", "bad"] {
        let (_, task) = app
            .post("/tasks/v1", &json!({"functionName": function}))
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_until_finished(id).await;
    }

    let scheduler = scrape(&app.http, &app.base_url).await;
    assert_eq!(
        metric_value(&scheduler, "tasks_created_total{source=\"api\"}"),
        4.0,
        "{scheduler}"
    );
    assert!(
        metric_value(&scheduler, "tasks_dispatched_total") >= 4.0,
        "{scheduler}"
    );
    assert!(scheduler.contains("tasks_work_in_system"), "{scheduler}");
    assert!(
        scheduler.contains("tasks_db_pool_connections{state=\"max\"}"),
        "{scheduler}"
    );

    let ready = app
        .http
        .get(format!("{}/readyz", worker.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap(),
        json!({"database": true, "broker": true})
    );
    let worker_metrics = scrape(&app.http, &worker.base_url).await;
    let value = |sample: &str| metric_value(&worker_metrics, sample);
    assert_eq!(
        value("tasks_started_total{function=\"ok\"}"),
        3.0,
        "{worker_metrics}"
    );
    assert_eq!(
        value("tasks_finished_total{function=\"ok\",status=\"complete\"}"),
        3.0
    );
    assert_eq!(
        value("tasks_finished_total{function=\"bad\",status=\"failed\"}"),
        1.0
    );
    assert_eq!(value("tasks_queue_lag_seconds_count{function=\"ok\"}"), 3.0);
    assert_eq!(
        value("tasks_execution_duration_seconds_count{function=\"bad\"}"),
        1.0
    );
    // At least one process per function; concurrent tasks of one function may start another.
    let cold = value("tasks_runtime_cold_starts_total{runtime=\"python\"}");
    assert!((2.0..=4.0).contains(&cold), "{worker_metrics}");
    assert_eq!(
        value("tasks_runtime_processes_warm"),
        cold,
        "every process stayed warm"
    );
    assert_eq!(value("tasks_running"), 0.0);
    worker.stop().await;
    app.stop().await;
}

/// Anyone may call any name under `/tasks/v1/api/`: a name no function has is counted under
/// one fixed label, so such calls neither grow the metrics nor show what was tried.
#[tokio::test]
async fn api_calls_to_unknown_names_share_one_label() {
    let app = TestScheduler::start().await;
    app.create_noop_function("known").await;
    let anonymous = reqwest::Client::new();
    let names: Vec<String> = (0..200)
        .map(|_| format!("probe-{}", common::id::ObjectId::generate()))
        .collect();
    for name in &names {
        let response = anonymous
            .get(app.url(&format!("/tasks/v1/api/{name}/path")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    // A caller who may execute every function learns the name is unknown; same label.
    let (status, _) = app.get("/tasks/v1/api/another-probe").await;
    assert_eq!(status, 404);
    let response = anonymous
        .get(app.url("/tasks/v1/api/known"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let exposition = scrape(&app.http, &app.base_url).await;
    for name in names.iter().map(String::as_str).chain(["another-probe"]) {
        assert!(!exposition.contains(name), "{name} is named in the metrics");
    }
    assert_eq!(
        metric_value(
            &exposition,
            "tasks_api_requests_total{function=\"(unknown)\",status=\"401\"}"
        ),
        200.0,
        "{exposition}"
    );
    assert_eq!(
        metric_value(
            &exposition,
            "tasks_api_requests_total{function=\"(unknown)\",status=\"404\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &exposition,
            "tasks_api_requests_total{function=\"known\",status=\"401\"}"
        ),
        1.0
    );
}
