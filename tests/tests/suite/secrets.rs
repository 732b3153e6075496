//! Function environment variables at rest: sealed in the database, clear for the function and
//! its owner, absent from logs, and resealable under a new key.

use std::process::Stdio;

use harness::{TEST_SECRETS_KEY, TestScheduler, TestWorker, base64, zip_files};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const SECRET: &str = "s3cr3t-Val-42-do-not-leak";

async fn create_env_function(app: &TestScheduler) {
    let code = base64(&zip_files(&[(
        "env.py",
        "import os\ndef handle(event, context):\n    return {'secret': os.environ.get('API_TOKEN')}\n",
    )]));
    let (status, body) = app
        .post(
            "/tasks/v1/functions",
            &json!({"name": "env", "code": code, "entryPoint": "env.handle", "runtime": "python3.11",
                    "environmentVariables": {"API_TOKEN": {"value": SECRET}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn stored_environment(app: &TestScheduler) -> String {
    app.database
        .connect()
        .await
        .query_one(
            "SELECT environment_variables::text FROM functions WHERE name = 'env'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn run_env_task(app: &TestScheduler) -> Value {
    let (_, task) = app.post("/tasks/v1", &json!({"functionName": "env"})).await;
    app.wait_until_finished(task["id"].as_str().unwrap()).await
}

#[tokio::test]
async fn values_are_sealed_at_rest_and_clear_for_the_function_and_its_owner() {
    let app = TestScheduler::start().await;
    create_env_function(&app).await;
    let stored = stored_environment(&app).await;
    assert!(!stored.contains(SECRET), "stored in clear: {stored}");
    assert!(stored.contains("enc:v2:test:"), "{stored}");

    let (_, function) = app.get("/tasks/v1/functions/env").await;
    assert_eq!(
        function["environmentVariables"]["API_TOKEN"]["value"],
        SECRET
    );

    // The worker binary at debug level runs the function; its whole output is kept.
    let mut worker = harness::worker_binary_command(&app, &[("TASKS__LOG__LEVEL", "debug")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let task = run_env_task(&app).await;
    assert_eq!(task["status"], "complete", "{task}");
    assert_eq!(task["result"]["secret"], SECRET);
    worker.start_kill().unwrap();
    let mut output = String::new();
    worker
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .await
        .unwrap();
    worker
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .await
        .unwrap();
    assert!(
        output.contains("debug") || output.contains("DEBUG"),
        "the worker logged"
    );
    assert!(!output.contains(SECRET), "the worker's log shows the value");
}

#[tokio::test]
async fn a_key_rotation_reseals_every_value_under_the_new_key() {
    let app = TestScheduler::start().await;
    create_env_function(&app).await;

    let new_key = "k2:bmV3LWtleS1vZi10aGUtdGFzay1zZXJ2aWNlLTMyYnk=";
    let mut config = TestScheduler::config(&app.database, &app.vhost);
    config.secrets.key = Some(new_key.to_owned());
    config.secrets.previous_keys = Some(TEST_SECRETS_KEY.to_owned());
    assert_eq!(
        scheduler::startup::reseal_secrets(&config).await.unwrap(),
        1
    );
    assert_eq!(
        scheduler::startup::reseal_secrets(&config).await.unwrap(),
        0,
        "idempotent"
    );
    let stored = stored_environment(&app).await;
    assert!(
        stored.contains("enc:v2:k2:") && !stored.contains("enc:v2:test:"),
        "{stored}"
    );

    // After the rotation, schedulers and workers need only the new key.
    config.secrets.previous_keys = None;
    let rotated = scheduler::startup::Application::build(config)
        .await
        .unwrap();
    let rotated_url = format!("http://{}", rotated.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(rotated.run_until(async {
        let _ = stopped.await;
    }));
    let function: Value = app
        .http
        .get(format!("{rotated_url}/tasks/v1/functions/env"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        function["environmentVariables"]["API_TOKEN"]["value"],
        SECRET
    );
    let _worker = TestWorker::start(&app, |config| {
        config.secrets.key = Some(new_key.to_owned());
        config.worker.concurrency = 1;
    })
    .await;
    let task: Value = app
        .http
        .post(format!("{rotated_url}/tasks/v1"))
        .json(&json!({"functionName": "env"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task = app.wait_until_finished(task["id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "complete", "{task}");
    assert_eq!(task["result"]["secret"], SECRET);
    let _ = stop.send(());
    let _ = served.await;
}

#[tokio::test]
async fn a_value_copied_to_another_function_does_not_open_and_fails_its_task() {
    let app = TestScheduler::start().await;
    let _worker = app.start_worker(1).await;
    create_env_function(&app).await;
    let code = base64(&zip_files(&[(
        "env.py",
        "import os\ndef handle(event, context):\n    return {'secret': os.environ.get('API_TOKEN')}\n",
    )]));
    let (status, body) = app
        .post(
            "/tasks/v1/functions",
            &json!({"name": "attacker", "code": code, "entryPoint": "env.handle", "runtime": "python3.11",
                    "environmentVariables": {"API_TOKEN": {"value": "mine"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // What a function that reached the database did: the victim's sealed values, copied.
    app.database
        .connect()
        .await
        .execute(
            "UPDATE functions SET environment_variables = (SELECT environment_variables FROM functions WHERE name = 'env'), \
             version = nextval('function_versions') WHERE name = 'attacker'",
            &[],
        )
        .await
        .unwrap();
    let (_, task) = app
        .post("/tasks/v1", &json!({"functionName": "attacker"}))
        .await;
    let task = app.wait_until_finished(task["id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["type"], "invocation", "{task}");
    assert_eq!(
        task["error"]["name"], "EnvironmentVariableUnreadable",
        "{task}"
    );
    let message = task["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("API_TOKEN") && message.contains("attacker"),
        "{message}"
    );
    assert!(!task.to_string().contains(SECRET), "{task}");
    // The victim still runs with its own value.
    let task = run_env_task(&app).await;
    assert_eq!(task["result"]["secret"], SECRET, "{task}");
}

#[tokio::test]
async fn a_scheduler_without_a_key_refuses_to_start_unless_auth_is_off() {
    let app = TestScheduler::start().await;
    let mut config = TestScheduler::config(&app.database, &app.vhost);
    config.secrets.key = None;
    let error = scheduler::startup::Application::build(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("TASKS__SECRETS__KEY"), "{error}");
    config.auth.mode = scheduler::api::auth::AuthMode::None;
    assert!(scheduler::startup::Application::build(config).await.is_ok());
}
