//! RabbitMQ and PostgreSQL restarts while tasks flow, on instances the test starts itself:
//! every task completes and both binaries report ready again.

use std::time::Duration;

use harness::private::{PrivatePostgres, PrivateRabbit};
use harness::{TestDatabase, TestScheduler, TestWorker};
use serde_json::json;

/// Creates tasks, retrying while the API cannot reach its database.
async fn create_tasks(app: &TestScheduler, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < count {
        let (status, task) = app
            .post("/tasks/v1", &json!({"functionName": "noop"}))
            .await;
        if status == 200 {
            ids.push(task["id"].as_str().unwrap().to_owned());
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    ids
}

async fn all_complete(app: &TestScheduler, ids: &[String]) {
    for id in ids {
        let task = app.wait_until_finished(id).await;
        assert_eq!(task["status"], "complete", "{task}");
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} did not report ready again");
}

async fn wait_not_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status() == 503
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} did not report that it is not ready");
}

#[tokio::test]
async fn a_rabbitmq_restart_loses_no_task() {
    let mut rabbit = PrivateRabbit::start();
    let url = rabbit.url();
    let app = TestScheduler::start_with(|config| config.amqp.url = url.clone()).await;
    let url = rabbit.url();
    let worker = TestWorker::start(&app, |config| {
        config.amqp.url = url;
        config.worker.concurrency = 2;
    })
    .await;
    app.create_function(
        "noop",
        "testing/noop",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;
    let before = create_tasks(&app, 10).await;
    all_complete(&app, &before).await;

    rabbit.stop();
    wait_not_ready(&app.http, &worker.base_url).await;
    let during = create_tasks(&app, 10).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    rabbit.resume();
    let after = create_tasks(&app, 10).await;
    all_complete(&app, &during).await;
    all_complete(&app, &after).await;
    wait_ready(&app.http, &app.base_url).await;
    wait_ready(&app.http, &worker.base_url).await;
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_postgres_restart_loses_no_task() {
    let mut postgres = PrivatePostgres::start();
    let app = TestScheduler::start_on(TestDatabase::on(&postgres.server_url()), |_| {}).await;
    let worker = app.start_worker(2).await;
    app.create_function(
        "noop",
        "testing/noop",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;
    let before = create_tasks(&app, 10).await;

    postgres.stop();
    wait_not_ready(&app.http, &app.base_url).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres.resume();
    let after = create_tasks(&app, 10).await;
    all_complete(&app, &before).await;
    all_complete(&app, &after).await;
    wait_ready(&app.http, &app.base_url).await;
    wait_ready(&app.http, &worker.base_url).await;
    worker.stop().await;
    app.stop().await;
}
