//! Graceful drain: on SIGTERM a worker finishes what it runs, or hands it back when the grace
//! period is too short, and exits 0.

use std::time::Duration;

use harness::{TestScheduler, spawn_worker_binary, terminate};
use serde_json::json;

async fn start_sleep_task(app: &TestScheduler, seconds: f64) -> String {
    app.create_function(
        "sleepy",
        "sleep",
        "python3.11",
        "handler.handle",
        json!({"timeLimit": 60}),
    )
    .await;
    let (_, task) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": "sleepy", "data": {"seconds": seconds}}),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let running = app
        .wait_for_task(&id, Duration::from_secs(30), |t| {
            t["status"] == "inProgress"
        })
        .await;
    assert_eq!(running["status"], "inProgress", "{running}");
    id
}

#[tokio::test]
async fn sigterm_lets_the_running_task_finish_then_exits_0() {
    let app = TestScheduler::start().await;
    let mut worker = spawn_worker_binary(&app, &[("TASKS__WORKER__CONCURRENCY", "1")]);
    let id = start_sleep_task(&app, 5.0).await;
    terminate(&worker);
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the worker exits 0: {status}");
    let (_, list) = app.get(&format!("/tasks/v1/?eq(id,{id})")).await;
    assert_eq!(list["data"][0]["status"], "complete", "{list}");
    app.stop().await;
}

#[tokio::test]
async fn a_task_longer_than_the_grace_period_is_handed_back_and_run_elsewhere() {
    let app = TestScheduler::start().await;
    let mut draining = spawn_worker_binary(
        &app,
        &[
            ("TASKS__WORKER__CONCURRENCY", "1"),
            ("TASKS__WORKER__DRAIN_GRACE_MS", "500"),
        ],
    );
    let id = start_sleep_task(&app, 5.0).await;
    terminate(&draining);
    let status = tokio::time::timeout(Duration::from_secs(30), draining.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the worker exits 0: {status}");
    let (_, list) = app.get(&format!("/tasks/v1/?eq(id,{id})")).await;
    assert_eq!(
        list["data"][0]["status"], "new",
        "handed back, not a zombie: {list}"
    );

    let other = app.start_worker(1).await;
    let task = app.wait_until_finished(&id).await;
    assert_eq!(task["status"], "complete", "{task}");
    let db = app.database.connect().await;
    let attempt: i32 = db
        .query_one("SELECT attempt FROM tasks WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempt, 2, "the second attempt completed it");
    other.stop().await;
    app.stop().await;
}
