//! API functions: HTTP requests served by a function, and the record of each call.

use std::time::Duration;

use harness::{TestScheduler, base64, zip_files};
use serde_json::{Value, json};

const ECHO: &str = r#"
import base64, json
def handle(event, context):
    print("handling", event["requestContext"]["http"]["method"], event["rawPath"])
    body = event.get("body")
    if event.get("isBase64Encoded"):
        body = {"base64": body, "length": len(base64.b64decode(body))}
    elif body and event["headers"].get("content-type") == "application/json":
        body = json.loads(body)
    return {
        "statusCode": 201 if event["requestContext"]["http"]["method"] == "POST" else 200,
        "headers": {"x-echo": "yes"},
        "body": {
            "method": event["requestContext"]["http"]["method"],
            "rawPath": event["rawPath"],
            "rawQueryString": event["rawQueryString"],
            "query": event["queryStringParameters"],
            "headers": event["headers"],
            "body": body,
        },
    }
"#;

const SHAPES: &str = r#"
import base64
def handle(event, context):
    kind = event["rawPath"].strip("/")
    if kind == "bad-status":
        return {"statusCode": 500, "body": "no"}
    if kind == "not-an-object":
        return "hello"
    if kind == "binary":
        return {"statusCode": 200, "isBase64Encoded": True, "headers": {"content-type": "image/png"},
                "body": base64.b64encode(bytes([137, 80, 78, 71, 0, 255])).decode()}
    if kind == "text":
        return {"statusCode": 404, "headers": {"content-type": "text/plain; charset=utf-8"}, "body": "not here"}
    raise ValueError("unexpected " + kind)
"#;

async fn create_python(app: &TestScheduler, name: &str, source: &str) {
    let code = base64(&zip_files(&[("app.py", source)]));
    let (status, body) = app
        .post("/tasks/v1/functions", &json!({"name": name, "code": code, "entryPoint": "app.handle", "runtime": "python3.11"}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The recorded calls of `function`, oldest first, once there are `count` (calls are recorded
/// after their response is sent).
async fn recorded_calls(app: &TestScheduler, function: &str, count: u64) -> Value {
    let mut list = Value::Null;
    for _ in 0..50 {
        list = app
            .get(&format!(
                "/tasks/v1/apiRequests?eq(functionName,{function})&sort(timestamp)"
            ))
            .await
            .1;
        if list["page"]["total"] == count {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not {count} calls recorded: {list}");
}

#[tokio::test]
async fn api_functions_answer_requests_and_are_recorded() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(2).await;
    create_python(&app, "echo", ECHO).await;
    create_python(&app, "shapes", SHAPES).await;

    let response = app
        .http
        .get(app.url("/tasks/v1/api/echo/hello/world?x=1&y=a%20b"))
        .header("X-Custom", "abc")
        .header("x-exh-requesting-user-id", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-echo"], "yes");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["method"], "GET");
    assert_eq!(body["rawPath"], "/hello/world");
    assert_eq!(body["rawQueryString"], "?x=1&y=a%20b");
    assert_eq!(body["query"], json!({"x": "1", "y": "a b"}));
    assert_eq!(body["headers"]["x-custom"], "abc");
    assert_eq!(
        body["headers"]["x-exh-requesting-user-id"],
        harness::TEST_USER,
        "callers cannot forge identity headers"
    );
    assert_eq!(
        body["headers"]["x-exh-requesting-application-id"],
        harness::TEST_APPLICATION
    );
    assert!(
        body["headers"].get("authorization").is_none(),
        "the caller's token is not passed to the function"
    );

    let (status, body) = app
        .post("/tasks/v1/api/echo/", &json!({"reading": 42}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["rawPath"], "/");
    assert_eq!(body["body"], json!({"reading": 42}));

    let binary: Vec<u8> = vec![0, 159, 146, 150, 255];
    let response = app
        .http
        .put(app.url("/tasks/v1/api/echo/upload"))
        .body(binary)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["body"]["length"], 5,
        "a non-UTF-8 body arrives base64 encoded: {body}"
    );

    let response = app
        .http
        .get(app.url("/tasks/v1/api/shapes/binary"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(
        response.bytes().await.unwrap().to_vec(),
        vec![137, 80, 78, 71, 0, 255]
    );
    let response = app
        .http
        .get(app.url("/tasks/v1/api/shapes/text"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.text().await.unwrap(), "not here");

    for (path, code) in [
        ("bad-status", 1409),
        ("not-an-object", 1409),
        ("other", 1406),
    ] {
        let (status, body) = app.get(&format!("/tasks/v1/api/shapes/{path}")).await;
        assert_eq!(
            (status, body["code"].as_u64()),
            (400, Some(code)),
            "{path}: {body}"
        );
    }
    let (status, body) = app.get("/tasks/v1/api/shapes/other").await;
    assert_eq!(
        body["runtimeError"]["name"], "ValueError",
        "{status}: {body}"
    );
    let (status, body) = app.get("/tasks/v1/api/missing/x").await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(16)));

    // Every call is recorded, with its logs.
    let recorded = recorded_calls(&app, "echo", 3).await;
    let first = &recorded["data"][0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/hello/world?x=1&y=a%20b");
    assert_eq!(first["statusCode"], 200);
    assert!(first["duration"].as_f64().unwrap() > 0.0);
    let (status, logs) = app
        .get(&format!(
            "/tasks/v1/apiRequests/{}/logs",
            first["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["data"][0]["message"], "handling GET /hello/world");

    let (_, failures) = app
        .get("/tasks/v1/apiRequests?eq(statusCode,400)&eq(functionName,shapes)")
        .await;
    let kinds: Vec<&str> = failures["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"]["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"response") && kinds.contains(&"runtime"),
        "{failures}"
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn api_functions_refuse_long_time_limits() {
    let app = TestScheduler::start().await;
    app.create_function(
        "slow",
        "noop",
        "python3.11",
        "handler.handle",
        json!({"timeLimit": 60}),
    )
    .await;
    let (status, body) = app.get("/tasks/v1/api/slow/").await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(1411)), "{body}");
    app.stop().await;
}

/// A call whose caller was told it failed (no worker answered in time) never runs later: its
/// request expires in the queue with the caller's wait.
#[tokio::test]
async fn an_unanswered_api_call_never_runs_later() {
    let app = TestScheduler::start().await;
    let code = base64(&zip_files(&[(
        "app.py",
        "def handle(event, context):\n    print('ran')\n    return {'statusCode': 200, 'body': {'ok': True}}\n",
    )]));
    let (status, body) = app
        .post("/tasks/v1/functions", &json!({"name": "late", "code": code, "entryPoint": "app.handle", "runtime": "python3.11", "timeLimit": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    // No worker: the caller waits the time limit and a margin, then gets an error.
    let (status, error) = app.get("/tasks/v1/api/late/first").await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (400, Some(1405)),
        "{error}"
    );

    // A 1-slot worker started now would take a request still queued before the next one.
    let worker = app.start_worker(1).await;
    let (status, _) = app.get("/tasks/v1/api/late/second").await;
    assert_eq!(status, 200);
    let calls = recorded_calls(&app, "late", 2).await;
    let logs_of = async |call: &Value| {
        app.get(&format!(
            "/tasks/v1/apiRequests/{}/logs",
            call["id"].as_str().unwrap()
        ))
        .await
        .1
    };
    let logs = logs_of(&calls["data"][0]).await;
    assert_eq!(logs["code"], 1413, "the first call never ran: {logs}");
    let logs = logs_of(&calls["data"][1]).await;
    assert_eq!(logs["data"][0]["message"], "ran", "{logs}");
    worker.stop().await;
    app.stop().await;
}
