//! Start-up and cross-cutting behaviour of the scheduler: migrations, routes, documents.

use harness::{TestDatabase, TestScheduler};
use serde_json::{Value, json};

#[tokio::test]
async fn two_schedulers_starting_at_once_migrate_the_schema_once() {
    let database = TestDatabase::new();
    let first = scheduler::config::SchedulerConfig {
        database: database.config(),
        http: scheduler::config::HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        auth: scheduler::api::auth::AuthConfig {
            jwt_secret: Some(harness::TEST_SECRET.to_owned()),
            ..Default::default()
        },
        secrets: common::secrets::SecretsConfig {
            key: Some(harness::TEST_SECRETS_KEY.to_owned()),
            previous_keys: None,
        },
        ..Default::default()
    };
    let second = first.clone();
    let (a, b) = tokio::join!(
        scheduler::startup::Application::build(first),
        scheduler::startup::Application::build(second)
    );
    assert!(a.is_ok() && b.is_ok(), "both schedulers come up");
    let db = database.connect().await;
    let applied: i64 = db
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    let files = std::fs::read_dir(harness::repository_root().join("common/migrations"))
        .unwrap()
        .count() as i64;
    assert_eq!(applied, files, "each migration recorded exactly once");
}

#[tokio::test]
async fn routes_answer_with_and_without_trailing_slash() {
    let app = TestScheduler::start().await;
    for path in [
        "/tasks/v1",
        "/tasks/v1/",
        "/tasks/v1/schedules",
        "/tasks/v1/schedules/",
        "/tasks/v1/functions",
        "/tasks/v1/functions/",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body["page"].is_object(), "{path}");
    }
    let (status, body) = app.get("/tasks/v1/nothing/here/at/all").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], 16);
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            "/tasks/v1/schedules",
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 405, "{body}");
    assert!(body["code"].is_number());
    let (status, _) = app.get("/tasks/v1/health").await;
    assert_eq!(status, 200);
    let (status, body) = app.get("/readyz").await;
    assert_eq!(
        (status, body),
        (200, json!({"database": true, "broker": true}))
    );
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let app = TestScheduler::start().await;
    let (status, document) = app.get("/tasks/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    let expect = [
        ("/tasks/v1", &["get", "post"][..]),
        ("/tasks/v1/{taskId}/cancel", &["post"]),
        ("/tasks/v1/{taskId}/logs", &["get"]),
        ("/tasks/v1/functions", &["get", "post"]),
        ("/tasks/v1/functions/{name}", &["get", "put", "delete"]),
        ("/tasks/v1/functions/{name}/enable", &["post"]),
        ("/tasks/v1/functions/{name}/disable", &["post"]),
        ("/tasks/v1/functions/{name}/execute", &["post"]),
        ("/tasks/v1/schedules", &["get", "post"]),
        ("/tasks/v1/schedules/{scheduleId}", &["delete"]),
        ("/tasks/v1/triggers", &["get", "post"]),
        ("/tasks/v1/apiRequests", &["get"]),
        ("/tasks/v1/apiRequests/{apiRequestId}/logs", &["get"]),
        ("/tasks/v1/triggers/{triggerId}", &["get", "put", "delete"]),
    ];
    for (path, methods) in expect {
        let item: &Value = paths.get(path).unwrap_or_else(|| panic!("{path} missing"));
        for method in methods {
            assert!(item.get(*method).is_some(), "{method} {path}");
        }
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in [
        "Task",
        "FunctionDefinition",
        "Schedule",
        "ErrorBody",
        "TaskInput",
        "FunctionInput",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_idle_service_leaves_the_database_alone() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(2).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let before = app.database.transactions().await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let during = app.database.transactions().await - before;
    // Periodic checks (schedules, sweeper, relay, gauges) cost a few transactions a second;
    // a loop that never sleeps costs hundreds.
    assert!(
        during < 400,
        "{during} transactions in 4 s with nothing to do"
    );
    worker.stop().await;
}

#[tokio::test]
async fn nothing_to_wait_for_is_no_wake_up_time() {
    let app = TestScheduler::start().await;
    let config = app.database.config();
    let dispatch =
        scheduler::dispatch::DispatchQueries::new(common::db::queue_pool(&config).unwrap());
    let schedules = scheduler::db::Schedules::new(common::db::pool(&config).unwrap());
    assert_eq!(
        dispatch
            .next_start(std::time::Duration::ZERO)
            .await
            .unwrap(),
        None
    );
    assert_eq!(schedules.next_due_in().await.unwrap(), None);

    app.create_noop_function("later").await;
    let start = chrono::Utc::now() + chrono::Duration::seconds(60);
    let (status, body) = app
        .post(
            "/tasks/v1/",
            &json!({"functionName": "later", "startTimestamp": common::time::format(&start)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let wait = dispatch
        .next_start(std::time::Duration::ZERO)
        .await
        .unwrap()
        .expect("a task waits");
    assert!(
        (55..=60).contains(&wait.as_secs()),
        "the task starts in a minute: {wait:?}"
    );
}
