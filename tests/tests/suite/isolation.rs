//! What a function process can see, and what happens when its worker dies.

use std::time::Duration;

use harness::{TestScheduler, base64, zip_files};
use serde_json::{Value, json};

#[tokio::test]
async fn a_function_sees_only_its_own_variables_and_the_lambda_ones() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(1).await;
    let code = base64(&zip_files(&[(
        "env.py",
        "import os\ndef handle(event, context):\n    return dict(os.environ)\n",
    )]));
    let (status, body) = app
        .post(
            "/tasks/v1/functions",
            &json!({
                "name": "env", "code": code, "entryPoint": "env.handle", "runtime": "python3.11",
                "environmentVariables": {"MY_SETTING": {"value": "42"}}
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, task) = app.post("/tasks/v1", &json!({"functionName": "env"})).await;
    let task = app.wait_until_finished(task["id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "complete", "{task}");
    let environment = task["result"].as_object().unwrap();
    assert_eq!(environment["MY_SETTING"], "42");
    assert_eq!(environment["_HANDLER"], "env.handle");
    assert_eq!(environment["AWS_LAMBDA_FUNCTION_NAME"], "env");
    assert!(
        environment["AWS_LAMBDA_RUNTIME_API"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let allowed = [
        "MY_SETTING",
        "PATH",
        "LANG",
        "TZ",
        "HOME",
        "TMPDIR",
        "AWS_LAMBDA_RUNTIME_API",
        "_HANDLER",
        "LAMBDA_TASK_ROOT",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_TIMEOUT",
        "_X_AMZN_TRACE_ID",
    ];
    for name in environment.keys() {
        // Python may add a few of its own (LC_CTYPE); nothing of the worker's may leak.
        assert!(
            allowed.contains(&name.as_str()) || name == "LC_CTYPE",
            "unexpected variable {name} in the function's environment: {environment:?}"
        );
    }
    for secret in [&app.database.url, &app.vhost.url] {
        let text = Value::Object(environment.clone()).to_string();
        assert!(!text.contains(secret.as_str()), "the function saw {secret}");
    }
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_task_whose_worker_is_killed_is_failed_as_a_zombie() {
    let app = TestScheduler::start().await;
    let mut worker = harness::spawn_worker_binary(
        &app,
        &[
            ("TASKS__WORKER__CONCURRENCY", "1"),
            ("TASKS__WORKER__LEASE_MS", "1500"),
        ],
    );
    app.create_function(
        "sleepy",
        "sleep",
        "python3.11",
        "handler.handle",
        json!({"timeLimit": 120}),
    )
    .await;
    let (_, task) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": "sleepy", "data": {"seconds": 60}}),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let running = app
        .wait_for_task(&id, Duration::from_secs(30), |t| {
            t["status"] == "inProgress"
        })
        .await;
    assert_eq!(running["status"], "inProgress", "{running}");

    worker.start_kill().expect("SIGKILL the worker");
    let _ = worker.wait().await;
    let task = app.wait_until_finished(&id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["type"], "invocation");
    assert_eq!(task["error"]["name"], "zombieTaskCleaned");
    app.stop().await;
}
