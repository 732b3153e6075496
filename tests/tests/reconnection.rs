//! Losing the broker or the database connections never crashes a process: both binaries
//! reconnect by themselves, report ready again, and every task completes.

use std::time::Duration;

use harness::{TestScheduler, TestWorker, metric_value};
use serde_json::json;

async fn run_tasks(app: &TestScheduler, count: usize) {
    let mut ids = Vec::new();
    for _ in 0..count {
        // The first request after a connection loss may find a dead pooled connection.
        let mut created = None;
        for _ in 0..20 {
            let (status, task) = app
                .post("/tasks/v1", &json!({"functionName": "noop"}))
                .await;
            if status == 200 {
                created = Some(task);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ids.push(
            created.expect("the API recovers")["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for id in &ids {
        let task = app.wait_until_finished(id).await;
        assert_eq!(task["status"], "complete", "{task}");
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} did not report ready again");
}

#[tokio::test]
async fn processes_recover_from_lost_broker_and_database_connections() {
    let app = TestScheduler::start().await;
    let worker: TestWorker = app.start_worker(2).await;
    app.create_function(
        "noop",
        "testing/noop",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;
    run_tasks(&app, 5).await;

    app.vhost.close_all_connections();
    tokio::time::sleep(Duration::from_millis(300)).await;
    run_tasks(&app, 5).await;
    wait_ready(&app.http, &app.base_url).await;
    wait_ready(&app.http, &worker.base_url).await;
    let metrics = app
        .http
        .get(format!("{}/metrics", worker.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric_value(
            &metrics,
            "tasks_broker_reconnects_total{component=\"worker\"}"
        ) >= 1.0,
        "{metrics}"
    );

    let terminated = app.database.terminate_connections().await;
    assert!(terminated > 0);
    run_tasks(&app, 5).await;
    wait_ready(&app.http, &app.base_url).await;
    wait_ready(&app.http, &worker.base_url).await;
    worker.stop().await;
    app.stop().await;
}
