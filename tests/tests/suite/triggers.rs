//! Platform events become tasks through triggers.

use std::time::Duration;

use harness::{
    TestDatabase, TestScheduler, TestVhost, all_permissions, authorized_client, free_address,
    function_code, publish_event, scheduler_binary_command, terminate, third_party_stub, token,
    wait_for_readiness,
};
use lapin::options::{BasicGetOptions, ConfirmSelectOptions};
use serde_json::{Value, json};

async fn tasks_of(app: &TestScheduler, function: &str) -> Vec<Value> {
    let (_, list) = app
        .get(&format!(
            "/tasks/v1/?eq(functionName,{function})&sort(creationTimestamp)"
        ))
        .await;
    list["data"].as_array().unwrap().clone()
}

async fn wait_for_tasks(app: &TestScheduler, function: &str, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let tasks = tasks_of(app, function).await;
        if tasks.len() >= count {
            return tasks;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tasks_of(app, function).await
}

/// The `x-reason` of every message in `tasks.dead-letter`, oldest first (taking them off).
async fn dead_letter_reasons(channel: &lapin::Channel) -> Vec<String> {
    let mut reasons = Vec::new();
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
        let reason = match headers.inner().get("x-reason") {
            Some(lapin::types::AMQPValue::LongString(text)) => {
                String::from_utf8_lossy(text.as_bytes()).into_owned()
            }
            other => panic!("no x-reason header: {other:?}"),
        };
        reasons.push(reason);
    }
    reasons
}

#[tokio::test]
async fn trigger_crud_and_validation() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    let (status, trigger) = app
        .post("/tasks/v1/triggers", &json!({"eventType": "measurement_*", "functionName": "fn", "data": {"a": 1}, "priority": 5, "delaySeconds": 2, "tags": ["t"]}))
        .await;
    assert_eq!(status, 200, "{trigger}");
    assert_eq!(trigger["eventType"], "measurement_*");
    assert_eq!(trigger["enabled"], true);
    assert_eq!(trigger["delaySeconds"], 2);
    let id = trigger["id"].as_str().unwrap();
    let (status, fetched) = app.get(&format!("/tasks/v1/triggers/{id}")).await;
    assert_eq!((status, &fetched), (200, &trigger));
    let (_, list) = app
        .get("/tasks/v1/triggers/?eq(eventType,measurement_*)")
        .await;
    assert_eq!(list["page"]["total"], 1);
    let (status, body) = app
        .put(
            &format!("/tasks/v1/triggers/{id}"),
            &json!({"enabled": false}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"affectedRecords": 1})));
    let (_, fetched) = app.get(&format!("/tasks/v1/triggers/{id}")).await;
    assert_eq!(fetched["enabled"], false);
    assert_eq!(fetched["priority"], 5, "other fields are kept");

    for (body, status, code) in [
        (json!({"functionName": "fn"}), 400, 14),
        (
            json!({"eventType": "x", "functionName": "missing"}),
            404,
            16,
        ),
        (
            json!({"eventType": "bad type!", "functionName": "fn"}),
            400,
            15,
        ),
        (
            json!({"eventType": "x", "functionName": "fn", "delaySeconds": -1}),
            400,
            15,
        ),
    ] {
        let (got, response) = app.post("/tasks/v1/triggers", &body).await;
        assert_eq!(
            (got, response["code"].as_u64()),
            (status, Some(code)),
            "{body}: {response}"
        );
    }
    let (status, _) = app.delete(&format!("/tasks/v1/triggers/{id}")).await;
    assert_eq!(status, 200);
    let (status, body) = app.get(&format!("/tasks/v1/triggers/{id}")).await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(16)));
    app.stop().await;
}

#[tokio::test]
async fn measurement_and_user_deleted_events_run_the_example_functions() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(2).await;
    let (url, requests, _third_party) = third_party_stub(200);
    app.create_function(
        "measure",
        "measurement-processor",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;
    app.create_function("gdpr", "gdpr-user-delete", "nodejs20.x", "index.handler", json!({
        "environmentVariables": {"THIRD_PARTY_API_URL": {"value": url}, "THIRD_PARTY_API_TOKEN": {"value": "secret-token"}}
    }))
    .await;
    app.post("/tasks/v1/triggers", &json!({"eventType": "measurement_created", "functionName": "measure", "data": {"source": "trigger"}, "tags": ["device"]})).await;
    app.post(
        "/tasks/v1/triggers",
        &json!({"eventType": "user_*", "functionName": "gdpr"}),
    )
    .await;

    let channel = app.vhost.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let measurement = json!({
        "id": "evt-1", "type": "measurement_created", "creation_timestamp": 1700000000000_i64,
        "content": {"measurementId": "m-9", "userId": "u-3", "type": "spo2", "values": [95, 88], "unit": "%"}
    });
    publish_event(
        &channel,
        "measurement_created",
        measurement.to_string().as_bytes(),
    )
    .await;
    publish_event(
        &channel,
        "user_deleted",
        json!({"id": "evt-2", "type": "user_deleted", "content": {"id": "u-3"}})
            .to_string()
            .as_bytes(),
    )
    .await;
    publish_event(
        &channel,
        "document_created",
        json!({"id": "evt-3", "type": "document_created", "content": {}})
            .to_string()
            .as_bytes(),
    )
    .await;

    let tasks = wait_for_tasks(&app, "measure", 1).await;
    let task = app
        .wait_until_finished(tasks[0]["id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "complete", "{task}");
    assert_eq!(task["data"]["source"], "trigger");
    assert_eq!(task["data"]["event"], measurement);
    assert_eq!(task["tags"], json!(["device", "event:evt-1"]));
    assert_eq!(task["result"]["measurementId"], "m-9");
    assert_eq!(
        task["result"]["status"], "attention",
        "88% SpO2 is low: {task}"
    );

    let tasks = wait_for_tasks(&app, "gdpr", 1).await;
    let task = app
        .wait_until_finished(tasks[0]["id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "complete", "{task}");
    assert_eq!(task["result"]["userId"], "u-3");
    assert_eq!(
        requests.lock().unwrap().clone(),
        vec!["DELETE /users/u-3 HTTP/1.1 auth=true".to_owned()]
    );
    let (_, all) = app.get("/tasks/v1/").await;
    assert_eq!(
        all["page"]["total"], 2,
        "an event without trigger creates nothing"
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_redelivered_event_creates_one_task_and_malformed_events_are_dead_lettered() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    app.post(
        "/tasks/v1/triggers",
        &json!({"eventType": "ping", "functionName": "fn"}),
    )
    .await;
    let channel = app.vhost.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let event = json!({"id": "same", "type": "ping", "content": {}}).to_string();
    publish_event(&channel, "ping", event.as_bytes()).await;
    publish_event(&channel, "ping", event.as_bytes()).await;
    publish_event(&channel, "ping", b"{this is not json").await;
    publish_event(
        &channel,
        "ping",
        json!({"type": "ping"}).to_string().as_bytes(),
    )
    .await;
    publish_event(
        &channel,
        "ping",
        json!({"id": "next", "type": "ping"}).to_string().as_bytes(),
    )
    .await;

    let tasks = wait_for_tasks(&app, "fn", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tasks_after = tasks_of(&app, "fn").await;
    assert_eq!(
        tasks_after.len(),
        2,
        "one task for `same`, one for `next`: {tasks:?}"
    );
    let event_tags: Vec<&Value> = tasks_after.iter().map(|t| &t["tags"][0]).collect();
    assert_eq!(event_tags, vec![&json!("event:same"), &json!("event:next")]);

    let reasons = dead_letter_reasons(&channel).await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("`id`"), "{reasons:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_trigger_on_task_failed_reacts_to_failures() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(2).await;
    app.create_function(
        "fails",
        "raise-error",
        "python3.11",
        "handler.handle",
        json!({}),
    )
    .await;
    app.create_noop_function("alert").await;
    app.post(
        "/tasks/v1/triggers",
        &json!({"eventType": "task_failed", "functionName": "alert"}),
    )
    .await;
    let (_, task) = app
        .post("/tasks/v1", &json!({"functionName": "fails"}))
        .await;
    let failed_id = task["id"].as_str().unwrap().to_owned();
    let alerts = wait_for_tasks(&app, "alert", 1).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["data"]["event"]["type"], "task_failed");
    assert_eq!(
        alerts[0]["data"]["event"]["content"]["id"],
        json!(failed_id)
    );
    assert_eq!(
        alerts[0]["data"]["event"]["content"]["error"]["name"],
        "CustomError"
    );
    worker.stop().await;
    app.stop().await;
}

/// Events whose tasks could never be stored (text Postgres refuses, task data over the
/// limit) are dead-lettered with the reason at once, create no task, and do not hold back the
/// events behind them.
#[tokio::test]
async fn events_whose_tasks_cannot_be_stored_are_dead_lettered() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    app.create_noop_function("big").await;
    app.post(
        "/tasks/v1/triggers",
        &json!({"eventType": "ping", "functionName": "fn"}),
    )
    .await;
    let (status, trigger) = app
        .post(
            "/tasks/v1/triggers",
            &json!({"eventType": "large", "functionName": "big", "data": {"pad": "t".repeat(150_000)}}),
        )
        .await;
    assert_eq!(status, 200, "{trigger}");
    let channel = app.vhost.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let unusable = [
        (
            "ping",
            json!({"id": "nul-value", "type": "ping", "content": {"a": "x\u{0}y"}}),
        ),
        (
            "ping",
            json!({"id": "nul-key", "type": "ping", "content": {"k\u{0}": 1}}),
        ),
        // Each alone is within its limit; the task's data (the trigger's plus the event) is not.
        (
            "large",
            json!({"id": "large", "type": "large", "content": {"pad": "e".repeat(150_000)}}),
        ),
    ];
    for (kind, event) in &unusable {
        publish_event(&channel, kind, event.to_string().as_bytes()).await;
    }
    publish_event(
        &channel,
        "ping",
        json!({"id": "valid", "type": "ping"})
            .to_string()
            .as_bytes(),
    )
    .await;

    let tasks = wait_for_tasks(&app, "fn", 1).await;
    assert_eq!(tasks[0]["tags"], json!(["event:valid"]), "{tasks:?}");
    let mut reasons = Vec::new();
    for _ in 0..100 {
        reasons.extend(dead_letter_reasons(&channel).await);
        if reasons.len() >= unusable.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    let naming = |text: &str| reasons.iter().filter(|r| r.contains(text)).count();
    assert_eq!((naming("NUL"), naming("262144")), (2, 1), "{reasons:?}");
    assert_eq!(tasks_of(&app, "fn").await.len(), 1, "only the valid event");
    assert!(tasks_of(&app, "big").await.is_empty());
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        harness::metric_value(
            &metrics,
            "tasks_events_consumed_total{outcome=\"unusable\"}"
        ),
        3.0
    );
    assert_eq!(
        harness::metric_value(
            &metrics,
            "tasks_events_consumed_total{outcome=\"requeued\"}"
        ),
        0.0
    );
    app.stop().await;
}

/// An event's id is outside text, and the service logs it: a newline in it must not start a
/// line of the scheduler's log that a reader would take for the service's own.
#[tokio::test]
async fn an_event_id_cannot_forge_a_line_of_the_schedulers_log() {
    let database = TestDatabase::new();
    let vhost = TestVhost::new();
    let listen = free_address();
    let child = scheduler_binary_command(
        &database,
        &vhost,
        listen,
        &[
            ("TASKS__LOG__LEVEL", "info"),
            ("TASKS__LOG__FORMAT", "pretty"),
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("the scheduler binary starts");
    let base = format!("http://{listen}");
    let http = authorized_client(&token(&all_permissions()));
    wait_for_readiness(&http, &base, 200).await;
    let function = json!({"name": "fn", "code": function_code("noop"),
        "entryPoint": "handler.handle", "runtime": "python3.11"});
    let trigger = json!({"eventType": "ping", "functionName": "fn"});
    for (path, body) in [("functions", function), ("triggers", trigger)] {
        let response = http
            .post(format!("{base}/tasks/v1/{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let channel = vhost.channel().await;
    let event = json!({"id": "evt\nFORGED ERROR the database was wiped", "type": "ping"});
    publish_event(&channel, "ping", event.to_string().as_bytes()).await;
    for _ in 0..200 {
        let list: Value = http
            .get(format!("{base}/tasks/v1/?eq(functionName,fn)"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if list["page"]["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terminate(&child);
    let output = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("evt\\nFORGED"),
        "the event was logged with its newline escaped: {log}"
    );
    assert!(!log.lines().any(|line| line.starts_with("FORGED")), "{log}");
}
