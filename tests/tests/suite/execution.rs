//! End to end: tasks created over HTTP are dispatched by a real scheduler, run by a real worker
//! in python, node and `provided` processes, and end with their result, logs and events.

use std::time::Duration;

use futures_util::StreamExt;
use harness::{TestScheduler, TestVhost, TestWorker, base64, zip_files};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

/// Collects the `task_failed` events published on the vhost from now on.
async fn listen_for_task_failed(vhost: &TestVhost) -> lapin::Consumer {
    let channel = vhost.channel().await;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            "platform.events".into(),
            "task_failed".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// The events received within `wait`.
async fn received_events(consumer: &mut lapin::Consumer, wait: Duration) -> Vec<Value> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, consumer.next()).await {
        events.push(serde_json::from_slice(&delivery.data).unwrap());
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    events
}

async fn run_task(app: &TestScheduler, function: &str, data: Value) -> Value {
    let (status, task) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": function, "data": data}),
        )
        .await;
    assert_eq!(status, 200, "{task}");
    app.wait_until_finished(task["id"].as_str().unwrap()).await
}

async fn logs_of(app: &TestScheduler, task: &Value) -> Vec<String> {
    let (status, logs) = app
        .get(&format!("/tasks/v1/{}/logs", task["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200, "{logs}");
    logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn python_node_and_provided_functions_complete_with_result_and_logs() {
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
        "node-noop",
        "node-noop",
        "nodejs20.x",
        "index.handler",
        json!({}),
    )
    .await;
    app.create_function(
        "echo",
        "echo-provided",
        "provided.al2023",
        "unused",
        json!({}),
    )
    .await;
    app.create_function(
        "lines",
        "log-lines",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;

    let task = run_task(&app, "measure", json!({
        "measurementId": "m1", "userId": "u1", "type": "heart_rate", "values": [72, 118, 95], "unit": "bpm"
    }))
    .await;
    assert_eq!(task["status"], "complete", "{task}");
    assert_eq!(task["result"]["measurementId"], "m1");
    assert_eq!(
        task["result"]["status"], "attention",
        "118 bpm is tachycardia: {task}"
    );
    assert!(!logs_of(&app, &task).await.is_empty());

    let task = run_task(&app, "node-noop", json!({})).await;
    assert_eq!(task["status"], "complete", "{task}");
    assert_eq!(task["result"], json!({"ok": true, "runtime": "node"}));

    let task = run_task(&app, "echo", json!({"hello": "world"})).await;
    assert_eq!(task["status"], "complete", "{task}");
    assert_eq!(task["result"]["echo"], json!({"hello": "world"}));

    let task = run_task(&app, "lines", json!({"count": 5})).await;
    assert_eq!(task["status"], "complete", "{task}");
    let lines = logs_of(&app, &task).await;
    let printed: Vec<&String> = lines.iter().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(
        printed,
        vec!["line 1", "line 2", "line 3", "line 4", "line 5"],
        "{lines:?}"
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn failures_end_failed_with_their_error_and_one_task_failed_event() {
    let app = TestScheduler::start().await;
    let mut events = listen_for_task_failed(&app.vhost).await;
    let worker = app.start_worker(2).await;
    app.create_function(
        "raise",
        "raise-error",
        "python3.11",
        "handler.handle",
        json!({}),
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
        "missing",
        "missing-handler",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;
    app.create_function(
        "slow",
        "sleep",
        "python3.11",
        "handler.handle",
        json!({"timeLimit": 3}),
    )
    .await;
    app.create_function(
        "hog",
        "alloc",
        "python3.11",
        "handler.handle",
        json!({"memoryLimit": 128}),
    )
    .await;

    let cases = [
        (
            "raise",
            json!({"message": "boom"}),
            "runtime",
            "CustomError",
        ),
        (
            "syntax",
            json!({}),
            "invocation",
            "Runtime.UserCodeSyntaxError",
        ),
        (
            "missing",
            json!({}),
            "invocation",
            "Runtime.HandlerNotFound",
        ),
        (
            "slow",
            json!({"seconds": 30}),
            "runtime",
            "TimeLimitExceeded",
        ),
        (
            "hog",
            json!({"megabytes": 400}),
            "runtime",
            "MemoryLimitExceeded",
        ),
    ];
    let mut failed_ids = Vec::new();
    for (function, data, kind, name) in cases {
        let task = run_task(&app, function, data).await;
        assert_eq!(task["status"], "failed", "{function}: {task}");
        assert_eq!(task["error"]["type"], kind, "{function}: {task}");
        assert_eq!(task["error"]["name"], name, "{function}: {task}");
        assert!(
            task["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        if function == "raise" {
            assert_eq!(task["error"]["message"], "boom");
        }
        if function == "hog" {
            assert!(
                task["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("128 MB"),
                "{task}"
            );
        }
        failed_ids.push(task["id"].as_str().unwrap().to_owned());
    }

    let events = received_events(&mut events, Duration::from_secs(3)).await;
    assert_eq!(
        events.len(),
        failed_ids.len(),
        "one event per failed task: {events:#?}"
    );
    for id in &failed_ids {
        let event = events
            .iter()
            .find(|e| e["content"]["id"] == json!(id))
            .unwrap_or_else(|| panic!("no event for {id}"));
        assert_eq!(event["type"], "task_failed");
        assert!(event["id"].as_str().is_some_and(|i| i.len() == 24));
        assert!(event["creation_timestamp"].is_i64());
        assert!(event["content"]["error"]["name"].is_string());
        assert!(event["content"]["functionName"].is_string());
    }
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_retry_chain_of_three_with_2_5_10_second_spacing() {
    let app = TestScheduler::start().await;
    let mut events = listen_for_task_failed(&app.vhost).await;
    let worker = app.start_worker(1).await;
    app.create_function(
        "flaky",
        "raise-error",
        "python3.11",
        "handler.handle",
        json!({
            "retryPolicy": {"enabled": true, "errorsToRetry": ["CustomError"]}
        }),
    )
    .await;
    let (_, first) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": "flaky", "tags": ["t"], "priority": 4, "data": {"k": 1}}),
        )
        .await;
    let first_id = first["id"].as_str().unwrap().to_owned();

    let mut chain = vec![app.wait_until_finished(&first_id).await];
    for _ in 0..3 {
        let previous = chain.last().unwrap();
        assert_eq!(previous["status"], "retried", "{previous}");
        let next_id = previous["retriedByTaskId"].as_str().unwrap().to_owned();
        let next = app
            .wait_for_task(&next_id, Duration::from_secs(30), |t| {
                matches!(
                    t["status"].as_str(),
                    Some("retried" | "failed" | "complete")
                )
            })
            .await;
        chain.push(next);
    }
    let last = chain.last().unwrap();
    assert_eq!(
        last["status"], "failed",
        "after 3 retries the task fails: {last}"
    );
    assert!(last.get("retriedByTaskId").is_none());
    let ids: Vec<String> = chain
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    for (i, task) in chain.iter().enumerate() {
        assert_eq!(task["functionName"], "flaky");
        assert_eq!(task["data"], json!({"k": 1}));
        assert_eq!(task["tags"], json!(["t"]));
        assert_eq!(task["priority"], 4);
        assert_eq!(task["error"]["name"], "CustomError");
        let expected_chain: Vec<String> = ids[..i].to_vec();
        let actual: Vec<String> = task
            .get("retryForTaskIds")
            .map(|v| serde_json::from_value(v.clone()).unwrap())
            .unwrap_or_default();
        assert_eq!(actual, expected_chain, "retryForTaskIds of retry {i}");
    }
    let time = |task: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(task[field].as_str().unwrap()).unwrap()
    };
    for (i, expected) in [2.0, 5.0, 10.0].into_iter().enumerate() {
        // The retry starts `expected` seconds after the attempt before it failed.
        let failed_at = time(&chain[i], "statusChangedTimestamp");
        let start = time(&chain[i + 1], "startTimestamp");
        let spacing = (start - failed_at).num_milliseconds() as f64 / 1000.0;
        assert!(
            (spacing - expected).abs() < 0.5,
            "retry {}: {spacing} s, expected {expected}",
            i + 1
        );
    }
    let events = received_events(&mut events, Duration::from_secs(2)).await;
    assert_eq!(
        events.len(),
        1,
        "only the final failure is announced: {events:#?}"
    );
    assert_eq!(events[0]["content"]["id"], json!(ids[3]));
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn backlog_starts_in_priority_then_start_time_order() {
    let app = TestScheduler::start_with(|config| config.dispatch.window = 1).await;
    app.create_function("order", "noop", "python3.11", "handler.handle", json!({}))
        .await;
    // The function is disabled while the backlog builds, so nothing starts early.
    app.post("/tasks/v1/functions/order/disable", &json!({}))
        .await;
    let base = chrono::Utc::now() - chrono::Duration::seconds(600);
    let mut created = Vec::new();
    for i in 0..200i64 {
        let priority = (i * 7919) % 5;
        let start = base + chrono::Duration::milliseconds((i * 104_729) % 200_000);
        let (status, task) = app
            .post(
                "/tasks/v1",
                &json!({
                    "functionName": "order", "priority": priority,
                    "startTimestamp": common::time::format(&start),
                }),
            )
            .await;
        assert_eq!(status, 200);
        created.push((priority, start, task["id"].as_str().unwrap().to_owned()));
    }
    let worker = app.start_worker(1).await;
    app.post("/tasks/v1/functions/order/enable", &json!({}))
        .await;
    let last = created
        .iter()
        .map(|(_, _, id)| id.clone())
        .collect::<Vec<_>>();
    for id in &last {
        let task = app.wait_until_finished(id).await;
        assert_eq!(task["status"], "complete", "{task}");
    }
    // The order in which tasks were claimed is the order of their `statusChangedTimestamp`
    // when they went inProgress; the store keeps the claim order in `attempt` timestamps, so
    // compare the completion order, which with one slot is the start order.
    let db = app.database.connect().await;
    let rows = db
        .query(
            "SELECT id FROM tasks ORDER BY status_changed_timestamp, id",
            &[],
        )
        .await
        .unwrap();
    let actual: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut expected = created.clone();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let expected: Vec<String> = expected.into_iter().map(|(_, _, id)| id).collect();
    assert_eq!(actual, expected);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn tasks_created_while_others_wait_start_by_priority() {
    // Tasks created due on an idle service go to the broker straight from their request; once
    // tasks wait, new ones must queue behind by priority like any other.
    let app = TestScheduler::start_with(|config| config.dispatch.window = 1).await;
    app.create_function("queue", "sleep", "python3.11", "handler.handle", json!({}))
        .await;
    let worker = app.start_worker(1).await;
    let (_, first) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": "queue", "data": {"seconds": 1}}),
        )
        .await;
    let first = first["id"].as_str().unwrap().to_owned();
    app.wait_for_task(&first, std::time::Duration::from_secs(30), |task| {
        task["status"] == "inProgress"
    })
    .await;
    let mut low = Vec::new();
    for _ in 0..5 {
        let (status, task) = app
            .post(
                "/tasks/v1",
                &json!({"functionName": "queue", "priority": 0, "data": {"seconds": 0}}),
            )
            .await;
        assert_eq!(status, 200, "{task}");
        low.push(task["id"].as_str().unwrap().to_owned());
    }
    let (_, high) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": "queue", "priority": 9, "data": {"seconds": 0}}),
        )
        .await;
    let high = high["id"].as_str().unwrap().to_owned();
    app.assert_all_complete(&[vec![first, high.clone()], low.clone()].concat())
        .await;
    let db = app.database.connect().await;
    let order: Vec<String> = db
        .query(
            "SELECT id FROM tasks WHERE id = ANY($1) ORDER BY claimed_at",
            &[&[vec![high.clone()], low].concat()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let position = order.iter().position(|id| *id == high).unwrap();
    // At most two start before it: one prefetched by the worker, one in the broker's window
    // of one (without a backlog check, all five would).
    assert!(
        position <= 2,
        "the priority-9 task started {position}th: {order:?}"
    );
    worker.stop().await;
    app.stop().await;
}

/// Creates `count` tasks of `function` due together `after` from now, with priorities
/// `count - 1` down to 0; returns their ids, highest priority first.
async fn create_due_together(
    app: &TestScheduler,
    function: &str,
    data: Value,
    count: usize,
    after: Duration,
) -> Vec<String> {
    let start = chrono::Utc::now() + after;
    let start = start.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let mut ids = Vec::new();
    for priority in (0..count).rev() {
        let (status, task) = app
            .post(
                "/tasks/v1",
                &json!({"functionName": function, "priority": priority, "startTimestamp": start, "data": data}),
            )
            .await;
        assert_eq!(status, 200, "{task}");
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test]
async fn a_backlog_goes_out_several_tasks_to_a_message_within_the_window() {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    let app = TestScheduler::start_with(|config| {
        config.dispatch.window = 8;
        config.dispatch.tasks_per_message = 4;
    })
    .await;
    app.create_noop_function("noop").await;
    let ids = create_due_together(&app, "noop", json!({}), 10, Duration::from_secs(1)).await;

    // No worker: once due, the window fills with the eight tasks of highest priority, four
    // to a message, and stays full.
    let channel = app.vhost.channel().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while channel
        .queue_declare(
            "tasks".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "nothing dispatched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut messages = Vec::new();
    while let Some(message) = channel
        .basic_get("tasks".into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        messages.push(message);
    }
    let named: Vec<Vec<String>> = messages
        .iter()
        .map(|message| {
            let body: Value = serde_json::from_slice(&message.delivery.data).unwrap();
            let mut named = vec![body["taskId"].as_str().unwrap().to_owned()];
            for id in body["moreTaskIds"].as_array().unwrap() {
                named.push(id.as_str().unwrap().to_owned());
            }
            named
        })
        .collect();
    assert_eq!(named[..2], [ids[0..4].to_vec(), ids[4..8].to_vec()]);
    // Taking the messages emptied the window, so a re-check may have sent the rest already,
    // one to a message as they fit.
    assert!(
        named[2..]
            .iter()
            .all(|rest| rest.len() == 1 && ids[8..].contains(&rest[0])),
        "{named:?}"
    );
    for message in &messages {
        message
            .delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    let worker = app.start_worker(3).await;
    app.assert_all_complete(&ids).await;
    let db = app.database.connect().await;
    let attempts: i64 = db
        .query_one("SELECT sum(attempt) FROM tasks WHERE id = ANY($1)", &[&ids])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 10, "each task ran once");
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_busy_worker_hands_the_tasks_it_cannot_start_back_to_an_idle_one() {
    let app = TestScheduler::start_with(|config| {
        config.dispatch.window = 2;
        config.dispatch.tasks_per_message = 2;
    })
    .await;
    app.create_function("long", "sleep", "python3.11", "handler.handle", json!({}))
        .await;
    let first = app.start_worker(1).await;
    let second = app.start_worker(1).await;
    // One message names both; whichever worker takes it can start only one.
    let ids = create_due_together(
        &app,
        "long",
        json!({"seconds": 4}),
        2,
        Duration::from_secs(1),
    )
    .await;
    app.assert_all_complete(&ids).await;
    let db = app.database.connect().await;
    let overlap: bool = db
        .query_one(
            "SELECT max(claimed_at) < min(status_changed_timestamp) FROM tasks WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        overlap,
        "the second task ran beside the first, on the other worker"
    );
    let mut handed_back = 0.0;
    for worker in [&first, &second] {
        let exposition = reqwest::get(format!("{}/metrics", worker.base_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        handed_back += harness::metric_value(&exposition, "tasks_handed_back_total");
    }
    assert!(handed_back >= 1.0, "the hand-back is counted");
    first.stop().await;
    second.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn canceled_tasks_never_run_even_when_cancel_races_dispatch() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(4).await;
    app.create_noop_function("noop").await;
    let mut canceled = Vec::new();
    for _ in 0..40 {
        let (_, task) = app
            .post("/tasks/v1", &json!({"functionName": "noop"}))
            .await;
        let id = task["id"].as_str().unwrap().to_owned();
        let (status, _) = app
            .post(&format!("/tasks/v1/{id}/cancel"), &json!({}))
            .await;
        if status == 200 {
            canceled.push(id);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let db = app.database.connect().await;
    for id in &canceled {
        let row = db
            .query_one("SELECT status, attempt FROM tasks WHERE id = $1", &[id])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "canceled");
        assert_eq!(row.get::<_, i32>(1), 0, "a canceled task was never claimed");
    }
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn two_workers_never_run_the_same_attempt() {
    let app = TestScheduler::start_with(|config| config.dispatch.redispatch_after_ms = 300).await;
    let first = app.start_worker(4).await;
    let second = app.start_worker(4).await;
    app.create_noop_function("noop").await;
    let mut ids = Vec::new();
    for _ in 0..60 {
        let (_, task) = app
            .post("/tasks/v1", &json!({"functionName": "noop"}))
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let task = app.wait_until_finished(id).await;
        assert_eq!(task["status"], "complete", "{task}");
    }
    let db = app.database.connect().await;
    let attempts: Vec<i32> = db
        .query("SELECT attempt FROM tasks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        attempts.iter().all(|a| *a == 1),
        "every task claimed exactly once: {attempts:?}"
    );
    first.stop().await;
    second.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn tasks_of_a_deleted_function_fail_with_an_invocation_error() {
    let app = TestScheduler::start().await;
    app.create_function("gone", "noop", "python3.11", "handler.handle", json!({}))
        .await;
    let (_, task) = app
        .post("/tasks/v1", &json!({"functionName": "gone", "startTimestamp": common::time::format(&(chrono::Utc::now() + chrono::Duration::seconds(1)))}))
        .await;
    app.delete("/tasks/v1/functions/gone").await;
    let task = app.wait_until_finished(task["id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["type"], "invocation");
    assert_eq!(task["error"]["name"], "FunctionNotFound");
    app.stop().await;
}

#[tokio::test]
async fn warm_processes_are_reused_and_oversized_results_fail_the_task() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(1).await;
    // A function `pid` whose handler runs `body`.
    let create_pid = async |body: &str| {
        let source = format!("import os\ndef handle(event, context):\n    {body}\n");
        let code = harness::base64(&harness::zip_files(&[("pid.py", source.as_str())]));
        let (status, _) = app
            .post("/tasks/v1/functions", &json!({"name": "pid", "code": code, "entryPoint": "pid.handle", "runtime": "python3.11"}))
            .await;
        assert_eq!(status, 200);
    };
    create_pid("return os.getpid()").await;
    let first = run_task(&app, "pid", json!({})).await;
    let second = run_task(&app, "pid", json!({})).await;
    assert_eq!(first["status"], "complete");
    assert_eq!(
        first["result"], second["result"],
        "the same warm process served both"
    );
    // A new version gets a new process.
    app.put("/tasks/v1/functions/pid", &json!({"description": "v2"}))
        .await;
    let third = run_task(&app, "pid", json!({})).await;
    assert_ne!(third["result"], first["result"]);
    // A function deleted and created again under the same name is a new function, however
    // warm the old one's process is.
    app.delete("/tasks/v1/functions/pid").await;
    create_pid("return 'recreated'").await;
    let fourth = run_task(&app, "pid", json!({})).await;
    assert_eq!(fourth["result"], "recreated", "{fourth}");

    app.create_function(
        "big",
        "big-result",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;
    let task = run_task(&app, "big", json!({"bytes": 300 * 1024})).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["name"], "ResultTooLarge");
    assert!(task.get("result").is_none());
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn malformed_task_messages_are_dead_lettered_and_lost_messages_republished() {
    use lapin::options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions,
    };
    let app = TestScheduler::start_with(|config| config.dispatch.redispatch_after_ms = 1000).await;
    app.create_noop_function("noop").await;
    let channel = app.vhost.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    // No worker yet: the task is published, then its message is lost.
    let (_, task) = app
        .post("/tasks/v1", &json!({"functionName": "noop"}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let db = app.database.connect().await;
    for _ in 0..100 {
        let row = db
            .query_one(
                "SELECT dispatched_at IS NOT NULL FROM tasks WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        if row.get::<_, bool>(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    channel
        .queue_purge("tasks".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    // A message of several tasks with one bad id among them is refused whole.
    let one_bad =
        json!({"taskId": common::id::ObjectId::generate().to_string(), "moreTaskIds": ["zz"]})
            .to_string();
    // So is a direct execution whose function cannot exist, on the synchronous queue.
    let bad_name = json!({"execute": {
        "taskId": common::id::ObjectId::generate().to_string(),
        "functionName": "no spaces allowed",
        "data": {},
        "requestedAt": "2026-11-30T12:00:00Z"
    }})
    .to_string();
    for (queue, poison) in [
        ("tasks", &b"not json"[..]),
        ("tasks", br#"{"taskId":"zz"}"#),
        ("tasks", one_bad.as_bytes()),
        ("tasks.sync", bad_name.as_bytes()),
    ] {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                poison,
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let worker = app.start_worker(1).await;
    let task = app.wait_until_finished(&id).await;
    assert_eq!(
        task["status"], "complete",
        "the lost message was published again: {task}"
    );

    let mut dead = 0;
    while let Some(message) = channel
        .basic_get("tasks.dead-letter".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        assert!(headers.inner().contains_key("x-reason"));
        dead += 1;
    }
    assert_eq!(dead, 4, "every poison message was dead-lettered");
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn unpacked_code_no_function_uses_any_more_leaves_the_workers_disk() {
    let app = TestScheduler::start().await;
    let cache_dir = std::env::temp_dir().join(format!(
        "task-service-test-cache-{}",
        common::id::ObjectId::generate()
    ));
    let start_worker = async |app: &TestScheduler| {
        TestWorker::start(app, |config| {
            config.worker.concurrency = 1;
            config.worker.cache_dir = cache_dir.clone();
            config.worker.released_code_grace_ms = 300;
        })
        .await
    };
    let worker = start_worker(&app).await;
    // Another deployment (its own database) whose worker shares the cache directory: none of
    // the code above is in its database, and it must not delete it.
    let other = TestScheduler::start().await;
    let other_worker = start_worker(&other).await;
    let code = |answer: u32| {
        base64(&zip_files(&[(
            "main.py",
            &format!("def run(event, context):\n    return {answer}\n"),
        )]))
    };
    let (status, body) = app
        .post(
            "/tasks/v1/functions",
            &json!({"name": "cached", "code": code(1), "entryPoint": "main.run", "runtime": "python3.11"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let db = app.database.connect().await;
    let unpacked = async || -> std::path::PathBuf {
        let hash: String = db
            .query_one(
                "SELECT code_sha256 FROM functions WHERE name = 'cached'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        worker::runtime::code_cache::code_root(&cache_dir, &app.database.config().url).join(hash)
    };
    let run = async |answer: u32| {
        let (_, task) = app
            .post("/tasks/v1", &json!({"functionName": "cached"}))
            .await;
        let task = app.wait_until_finished(task["id"].as_str().unwrap()).await;
        assert_eq!(task["status"], "complete", "{task}");
        assert_eq!(task["result"], json!(answer), "{task}");
    };
    let replace_code_and_run = async |answer: u32| {
        let (status, body) = app
            .put("/tasks/v1/functions/cached", &json!({"code": code(answer)}))
            .await;
        assert_eq!(status, 200, "{body}");
        run(answer).await;
    };
    run(1).await;
    let first = unpacked().await;
    assert!(first.is_dir(), "the code is unpacked to run it");

    replace_code_and_run(2).await;
    let second = unpacked().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while first.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!first.exists(), "code no function uses leaves the disk");
    assert!(second.is_dir(), "code a function uses stays");
    // Long enough for several sweeps of both workers after the grace.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        second.is_dir(),
        "the other deployment's worker leaves this one's code alone"
    );

    // The same code uploaded again is unpacked again.
    replace_code_and_run(1).await;
    assert!(first.is_dir());
    worker.stop().await;
    other_worker.stop().await;
    app.stop().await;
    other.stop().await;
    let _ = std::fs::remove_dir_all(&cache_dir);
}
