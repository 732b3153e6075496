//! An idle scheduler rests: with nothing due it sleeps until a timer or a notification
//! wakes it, whatever ran before, instead of polling the database.

use std::time::Duration;

use harness::private::PrivatePostgres;
use harness::{TestDatabase, TestScheduler};
use serde_json::json;

#[tokio::test]
async fn an_idle_scheduler_runs_at_most_a_query_a_second_after_a_load() {
    // A server of its own, which counts every statement (pg_stat_statements).
    let postgres = PrivatePostgres::start();
    // The default sweep interval: the suite's shorter one only speeds tests of zombies up.
    let app = TestScheduler::start_on(TestDatabase::on(&postgres.server_url()), |config| {
        config.dispatch.sweep_interval_ms = 5_000
    })
    .await;
    let worker = app.start_worker(4).await;
    app.create_noop_function("noop").await;
    let ids = app.create_tasks("noop", 100).await;
    app.assert_all_complete(&ids).await;
    worker.stop().await;
    // What waits: a task due in an hour and a schedule whose first slot is tomorrow.
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    let (status, _) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": "noop", "startTimestamp": common::time::format(&in_an_hour)}),
        )
        .await;
    assert_eq!(status, 200);
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    let (status, body) = app
        .post(
            "/tasks/v1/schedules",
            &json!({"functionName": "noop", "interval": 86_400,
                    "startTimestamp": common::time::format(&tomorrow)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = postgres.statements(&app.database.name).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let queries = postgres.statements(&app.database.name).await - before;
    assert!(
        queries <= 20,
        "the idle scheduler ran {queries} statements in 20 s"
    );
    app.stop().await;
}
