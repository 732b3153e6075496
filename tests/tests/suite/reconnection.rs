//! Losing the broker or the database connections never crashes a process: both binaries
//! reconnect by themselves, report ready again, and every task completes.

use std::time::Duration;

use harness::{TestScheduler, TestWorker, metric_value, wait_for_readiness};

#[tokio::test]
async fn processes_recover_from_lost_broker_and_database_connections() {
    let app = TestScheduler::start().await;
    let worker: TestWorker = app.start_worker(2).await;
    app.create_noop_function("noop").await;
    let ids = app.create_tasks("noop", 5).await;
    app.assert_all_complete(&ids).await;

    app.vhost.close_all_connections();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = app.create_tasks("noop", 5).await;
    app.assert_all_complete(&ids).await;
    wait_for_readiness(&app.http, &app.base_url, 200).await;
    wait_for_readiness(&app.http, &worker.base_url, 200).await;
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
    let ids = app.create_tasks("noop", 5).await;
    app.assert_all_complete(&ids).await;
    wait_for_readiness(&app.http, &app.base_url, 200).await;
    wait_for_readiness(&app.http, &worker.base_url, 200).await;
    worker.stop().await;
    app.stop().await;
}
