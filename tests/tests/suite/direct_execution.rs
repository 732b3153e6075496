//! `POST /tasks/v1/functions/{name}/execute`: synchronous execution through a worker.

use harness::TestScheduler;
use serde_json::json;

#[tokio::test]
async fn direct_execution_returns_the_result_and_each_error() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(2).await;
    app.create_function(
        "measure",
        "measurement-processor",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;
    app.create_function(
        "raise",
        "raise-error",
        "python3.11",
        "handler.handle",
        json!({
            "retryPolicy": {"enabled": true, "errorsToRetry": []}
        }),
    )
    .await;
    app.create_function(
        "syntax",
        "syntax-error",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;
    app.create_function(
        "long",
        "noop",
        "python3.11",
        "handler.handle",
        json!({"timeLimit": 60}),
    )
    .await;
    app.create_noop_function("noop").await;

    let (status, task) = app
        .post("/tasks/v1/functions/measure/execute", &json!({"data": {"measurementId": "m1", "userId": "u1", "type": "heart_rate", "values": [60, 70]}}))
        .await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["status"], "complete");
    assert_eq!(task["functionName"], "measure");
    assert_eq!(task["result"]["status"], "normal", "{task}");
    assert_eq!(task["data"]["measurementId"], "m1");
    // The task is kept, as for any task.
    let (_, listed) = app
        .get(&format!(
            "/tasks/v1/?eq(id,{})",
            task["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(listed["data"][0]["status"], "complete");
    // The answer is the task as stored (the worker sends it rather than the API reading it
    // back).
    assert_eq!(listed["data"][0], task);

    // An empty body is accepted.
    let response = app
        .http
        .post(app.url("/tasks/v1/functions/noop/execute"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["result"], json!({"ok": true}));

    let (status, error) = app
        .post(
            "/tasks/v1/functions/raise/execute",
            &json!({"data": {"message": "bad input"}}),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (400, Some(1406)),
        "{error}"
    );
    assert_eq!(error["name"], "LAMBDA_RUNTIME_EXCEPTION");
    assert_eq!(
        error["runtimeError"],
        json!({"name": "CustomError", "message": "bad input"})
    );
    let task_id = error["taskId"].as_str().unwrap();
    let (_, listed) = app.get(&format!("/tasks/v1/?eq(id,{task_id})")).await;
    assert_eq!(
        listed["data"][0]["status"], "failed",
        "a direct execution is never retried"
    );

    let (status, error) = app
        .post("/tasks/v1/functions/syntax/execute", &json!({}))
        .await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (400, Some(1405)),
        "{error}"
    );
    assert!(error["taskId"].is_string());
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Runtime.UserCodeSyntaxError"),
        "{error}"
    );

    let (status, error) = app
        .post("/tasks/v1/functions/long/execute", &json!({}))
        .await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (400, Some(1404)),
        "{error}"
    );
    let (status, error) = app
        .post("/tasks/v1/functions/missing/execute", &json!({}))
        .await;
    assert_eq!((status, error["code"].as_u64()), (404, Some(16)), "{error}");
    app.post("/tasks/v1/functions/noop/disable", &json!({}))
        .await;
    let (status, error) = app
        .post("/tasks/v1/functions/noop/execute", &json!({}))
        .await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (400, Some(1405)),
        "{error}"
    );
    worker.stop().await;
    app.stop().await;
}

/// A direct execution whose caller was told it failed never runs later: its request waits in
/// the queue while no worker is up, and the worker that takes it afterwards finds its task
/// canceled.
#[tokio::test]
async fn an_unanswered_direct_execution_is_canceled_and_never_runs_later() {
    let app = TestScheduler::start().await;
    app.create_function(
        "quick",
        "noop",
        "python3.11",
        "handler.handle",
        json!({"timeLimit": 3}),
    )
    .await;
    // No worker: the caller waits the time limit and a margin, then gets an error naming the
    // task.
    let (status, error) = app
        .post("/tasks/v1/functions/quick/execute", &json!({}))
        .await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (400, Some(1405)),
        "{error}"
    );
    let task_id = error["taskId"].as_str().unwrap().to_owned();
    let status_of = async |id: &str| {
        let (_, listed) = app.get(&format!("/tasks/v1/?eq(id,{id})")).await;
        listed["data"][0]["status"].clone()
    };
    assert_eq!(status_of(&task_id).await, "canceled");

    // One slot: the stale request is taken first, and a later execution only gets the slot
    // once that request is settled.
    let worker = app.start_worker(1).await;
    let (status, task) = app
        .post("/tasks/v1/functions/quick/execute", &json!({}))
        .await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(status_of(&task_id).await, "canceled", "it never ran");
    worker.stop().await;
    app.stop().await;
}

/// Direct executions and API calls keep function definitions in memory; a change made
/// elsewhere (another replica, an operator in the database) must still reach them.
#[tokio::test]
async fn a_function_changed_elsewhere_is_seen_by_the_next_execution() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(1).await;
    app.create_noop_function("noop").await;
    // Twice, so that the second execution reads the definition the first one kept.
    for _ in 0..2 {
        let (status, task) = app
            .post("/tasks/v1/functions/noop/execute", &json!({}))
            .await;
        assert_eq!(status, 200, "{task}");
    }

    let database = app.database.connect().await;
    database
        .execute(
            "UPDATE functions SET enabled = false WHERE name = 'noop'",
            &[],
        )
        .await
        .unwrap();
    let (status, refused) = execute_until(&app, "noop", 400).await;
    assert_eq!(
        (status, refused["code"].as_u64()),
        (400, Some(1405)),
        "{refused}"
    );
    assert!(
        refused["message"].as_str().unwrap().contains("disabled"),
        "{refused}"
    );

    // Deleted elsewhere: unknown from then on.
    database
        .execute("DELETE FROM functions WHERE name = 'noop'", &[])
        .await
        .unwrap();
    let (status, unknown) = execute_until(&app, "noop", 404).await;
    assert_eq!(status, 404, "{unknown}");
    worker.stop().await;
    app.stop().await;
}

/// Executes `function` until the answer has `status`, for at most 3 s: a change is announced
/// to the scheduler, not read by it, so allow the announcement time to arrive (far less than
/// the longest a kept definition is trusted). Returns the last answer.
async fn execute_until(
    app: &TestScheduler,
    function: &str,
    status: u16,
) -> (u16, serde_json::Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let answer = app
            .post(
                &format!("/tasks/v1/functions/{function}/execute"),
                &json!({}),
            )
            .await;
        if answer.0 == status || std::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
