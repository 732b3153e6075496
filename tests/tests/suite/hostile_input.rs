//! Hostile and oversized input: bounded, answered with a clear error, and harmless.

use std::time::Duration;

use harness::{TestScheduler, wait_for_readiness};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_statement_stuck_past_the_timeout_is_cancelled_with_code_21() {
    let app = TestScheduler::start_with(|config| config.database.statement_timeout_ms = 500).await;
    let mut blocker = app.database.connect().await;
    let lock = blocker.transaction().await.unwrap();
    lock.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE", &[])
        .await
        .unwrap();
    let (status, body) = app.get("/tasks/v1").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 21, "{body}");
    lock.rollback().await.unwrap();
    let (status, body) = app.get("/tasks/v1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]));
}

async fn send(app: &TestScheduler, request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "{} answered a non-JSON body: {}",
            app.base_url,
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, body)
}

#[tokio::test]
async fn oversized_and_malformed_requests_get_an_error_body_and_change_nothing() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    let deep_json = format!(
        "{{\"functionName\":\"fn\",\"data\":{{\"a\":{}1{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let long_rql = format!("/tasks/v1?{}", "eq(status,new)&".repeat(2_000));
    let deep_rql = format!(
        "/tasks/v1?{}eq(status,new){}",
        "and(".repeat(500),
        ")".repeat(500)
    );
    let many_headers = (0..120).fold(app.http.get(app.url("/tasks/v1")), |request, i| {
        request.header(format!("x-field-{i}"), "v")
    });
    // (what, request, status, code)
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, u32)> = vec![
        (
            "JSON nested 100,000 deep",
            app.http
                .post(app.url("/tasks/v1"))
                .header("content-type", "application/json")
                .body(deep_json),
            400,
            22,
        ),
        (
            "a body that is not UTF-8",
            app.http
                .post(app.url("/tasks/v1"))
                .header("content-type", "application/json")
                .body(vec![0xff, 0xfe, 0x00, 0x7b]),
            400,
            22,
        ),
        (
            "a NUL character in a string",
            app.http
                .post(app.url("/tasks/v1"))
                .json(&json!({"functionName": "fn", "data": {"note": "a\u{0}b"}})),
            400,
            22,
        ),
        (
            "a NUL character in a path",
            app.http.get(app.url("/tasks/v1/functions/fn%00")),
            400,
            15,
        ),
        (
            "a 2 MiB body",
            app.http
                .post(app.url("/tasks/v1"))
                .header("content-type", "application/json")
                .body(vec![b' '; 2 * 1024 * 1024]),
            413,
            22,
        ),
        (
            "an RQL query of 30 KB",
            app.http.get(app.url(&long_rql)),
            414,
            26,
        ),
        (
            "RQL nested 500 deep",
            app.http.get(app.url(&deep_rql)),
            400,
            19,
        ),
        (
            "a path of 20 KB",
            app.http
                .get(app.url(&format!("/tasks/v1/functions/{}", "a".repeat(20_000)))),
            414,
            26,
        ),
        (
            "40 KB of headers",
            app.http
                .get(app.url("/tasks/v1"))
                .header("x-padding-1", "p".repeat(20_000))
                .header("x-padding-2", "p".repeat(20_000)),
            431,
            26,
        ),
        ("120 header fields", many_headers, 431, 26),
    ];
    for (what, request, status, code) in cases {
        let (got, body) = send(&app, request).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    let (_, tasks) = app.get("/tasks/v1").await;
    assert_eq!(tasks["page"]["total"], 0, "nothing was created: {tasks}");
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200, "the scheduler is still serving");
}

/// Sends raw bytes on one connection and reads until the server closes it.
async fn raw_exchange(app: &TestScheduler, bytes: &[u8]) -> String {
    let address = app.base_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The body of the last response in `answer`, as JSON.
fn last_body(answer: &str) -> serde_json::Value {
    let body = answer.rsplit("\r\n\r\n").next().unwrap();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON body: {answer}"))
}

#[tokio::test]
async fn requests_the_http_parser_refuses_get_the_error_body_too() {
    let app = TestScheduler::start().await;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "a raw quote in the query",
            b"GET /tasks/v1?eq(data.a,\"x\") HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            "HTTP/1.1 400 ",
        ),
        (
            "a header name with a space",
            b"GET /tasks/v1 HTTP/1.1\r\nhost: x\r\nbad name: y\r\n\r\n".to_vec(),
            "HTTP/1.1 400 ",
        ),
        (
            "a request target of 70 KB",
            format!(
                "GET /tasks/v1?{} HTTP/1.1\r\nhost: x\r\n\r\n",
                "a".repeat(70_000)
            )
            .into_bytes(),
            "HTTP/1.1 414 ",
        ),
    ];
    for (what, request, status) in cases {
        let answer = raw_exchange(&app, &request).await;
        assert!(answer.starts_with(status), "{what}: {answer}");
        assert!(
            answer.contains("content-type: application/json"),
            "{what}: {answer}"
        );
        assert_eq!(last_body(&answer)["code"], 26, "{what}: {answer}");
    }
    // Later on a kept-alive connection, too.
    let answer = raw_exchange(
        &app,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /tasks/v1?a=\"b\" HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("HTTP/1.1 400 "), "{answer}");
    assert_eq!(last_body(&answer)["code"], 26, "{answer}");
}

/// A `provided` runtime that misbehaves towards the Runtime API in the way `MODE` says.
const HOSTILE_BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import http.client, os, socket, time
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
mode = os.environ["MODE"]
api = http.client.HTTPConnection(host, int(port))
if mode == "noise":
    raw = socket.create_connection((host, int(port)))
    raw.sendall(b"\x00\x01GARBAGE\r\n\r\n")
    raw.close()
    api.request("POST", "/2018-06-01/runtime/invocation/not-mine/response", body=b"{}")
    api.getresponse().read()
    api.request("GET", "/anything/else")
    api.getresponse().read()
api.request("GET", "/2018-06-01/runtime/invocation/next")
answer = api.getresponse()
request_id = answer.getheader("lambda-runtime-aws-request-id")
answer.read()
if mode == "noise":
    raise SystemExit(3)
body = b"this is not json {" if mode == "garbage" else b"x" * (7 * 1024 * 1024)
try:
    api.request("POST", f"/2018-06-01/runtime/invocation/{request_id}/response", body=body)
    api.getresponse().read()
except OSError:
    pass
time.sleep(30)
"#;

fn hostile_code() -> String {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .start_file(
            "bootstrap",
            zip::write::SimpleFileOptions::default().unix_permissions(0o755),
        )
        .unwrap();
    writer.write_all(HOSTILE_BOOTSTRAP.as_bytes()).unwrap();
    harness::base64(&writer.finish().unwrap().into_inner())
}

#[tokio::test]
async fn a_function_abusing_the_runtime_api_fails_only_its_own_task() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(1).await;
    app.create_noop_function("noop").await;
    let code = hostile_code();
    let cases = [
        ("garbage", "Runtime.InvalidResponse"),
        ("huge", "Runtime.ResponseTooLarge"),
        ("noise", "Runtime.ExitError"),
    ];
    for (mode, error) in cases {
        let (status, body) = app
            .post(
                "/tasks/v1/functions",
                &json!({"name": mode, "code": code, "entryPoint": "unused", "runtime": "provided.al2023",
                        "timeLimit": 20, "environmentVariables": {"MODE": {"value": mode}}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (_, task) = app.post("/tasks/v1", &json!({"functionName": mode})).await;
        let task = app.wait_until_finished(task["id"].as_str().unwrap()).await;
        assert_eq!(task["status"], "failed", "{mode}: {task}");
        assert_eq!(task["error"]["name"], error, "{mode}: {task}");
        // The worker is unharmed: the next task completes.
        let ids = app.create_tasks("noop", 1).await;
        app.assert_all_complete(&ids).await;
    }
    let ready = app
        .http
        .get(format!("{}/readyz", worker.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

/// A `provided` runtime whose every answer holds NUL, which Postgres cannot store: in its
/// output line, in its result (`data.mode` = `result`: in a value, `key`: in a key) or in its
/// error's type and message (any other mode, and API calls).
const NUL_BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import http.client, json, os
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
api = http.client.HTTPConnection(host, int(port))
while True:
    api.request("GET", "/2018-06-01/runtime/invocation/next")
    answer = api.getresponse()
    request_id = answer.getheader("lambda-runtime-aws-request-id")
    event = json.loads(answer.read())
    mode = (event.get("data") or {}).get("mode", "error")
    print("before\0after", flush=True)
    if mode == "result":
        path, body = "response", b'{"a": "x\\u0000y"}'
    elif mode == "key":
        path, body = "response", b'{"k\\u0000": 1}'
    else:
        path, body = "error", b'{"errorType": "Bad\\u0000Type", "errorMessage": "bad\\u0000input"}'
    api.request("POST", f"/2018-06-01/runtime/invocation/{request_id}/{path}", body=body)
    api.getresponse().read()
"#;

#[tokio::test]
async fn function_output_holding_nul_is_stored_cleaned_or_fails_its_task_at_once() {
    use std::io::Write;
    let app = TestScheduler::start().await;
    let worker = app.start_worker(1).await;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let executable = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    writer.start_file("bootstrap", executable).unwrap();
    writer.write_all(NUL_BOOTSTRAP.as_bytes()).unwrap();
    let code = harness::base64(&writer.finish().unwrap().into_inner());
    let (status, body) = app
        .post(
            "/tasks/v1/functions",
            &json!({"name": "nul", "code": code, "entryPoint": "unused",
                    "runtime": "provided.al2023", "timeLimit": 20}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = async |mode: &str| {
        let (status, task) = app
            .post(
                "/tasks/v1",
                &json!({"functionName": "nul", "data": {"mode": mode}}),
            )
            .await;
        assert_eq!(status, 200, "{task}");
        let id = task["id"].as_str().unwrap().to_owned();
        let task = app.wait_until_finished(&id).await;
        let (_, logs) = app.get(&format!("/tasks/v1/{id}/logs")).await;
        assert_eq!(
            logs["data"][0]["message"], "before\u{FFFD}after",
            "{mode}: the output line is kept, its NUL replaced: {logs}"
        );
        task
    };
    for mode in ["result", "key"] {
        let task = run(mode).await;
        assert_eq!(task["status"], "failed", "{mode}: {task}");
        assert_eq!(task["error"]["type"], "runtime", "{task}");
        assert_eq!(task["error"]["name"], "Runtime.InvalidResponse", "{task}");
        assert!(
            task["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("NUL")),
            "{task}"
        );
    }
    let task = run("error").await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(
        (&task["error"]["name"], &task["error"]["message"]),
        (&json!("Bad\u{FFFD}Type"), &json!("bad\u{FFFD}input")),
        "{task}"
    );

    let (status, error) = app
        .post(
            "/tasks/v1/functions/nul/execute",
            &json!({"data": {"mode": "result"}}),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (400, Some(1406)),
        "{error}"
    );
    assert_eq!(
        error["runtimeError"]["name"], "Runtime.InvalidResponse",
        "{error}"
    );

    let (status, error) = app.get("/tasks/v1/api/nul").await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (400, Some(1406)),
        "{error}"
    );
    let mut recorded = json!(null);
    for _ in 0..100 {
        let (_, requests) = app.get("/tasks/v1/apiRequests").await;
        recorded = requests["data"][0].clone();
        if !recorded.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        recorded["error"]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("Bad\u{FFFD}Type: bad\u{FFFD}input")),
        "the call is recorded: {recorded}"
    );
    worker.stop().await;
    app.stop().await;
}

/// A connection that sends the start of a request line and nothing more.
async fn slow_client(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    // The server may have closed it already (beyond the cap): the write's outcome is moot.
    let _ = stream.write_all(b"GET /tasks/v1 HT").await;
    stream
}

/// Waits until the server closes the connection; what it sent before closing is returned.
/// The bound is not a timing requirement: it turns "never closed" into a failure.
async fn until_closed(mut stream: TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = stream.read_to_end(&mut received);
    // A reset is a close too.
    let _reset = tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the server closes the connection");
    received
}

/// This process holds both ends of every connection: raise its soft open-files limit.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= 8_000,
        "the test needs 8,000 open files; the hard limit is {}",
        limit.rlim_cur
    );
}

/// Slowloris: thousands of connections that never finish their request head. Those beyond
/// the connection cap are closed at once, the others after the header timeout, and the
/// probes answer throughout.
#[tokio::test]
async fn thousands_of_slow_clients_are_dropped_while_probes_keep_answering() {
    raise_open_files_limit();
    let app = TestScheduler::start_with(|config| {
        config.http.max_connections = 64;
        config.http.header_read_timeout_ms = 1_000;
    })
    .await;
    wait_for_readiness(&reqwest::Client::new(), &app.base_url, 200).await;
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..3_000 {
        slow.push(slow_client(&address).await);
    }
    let probe = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let response = probe.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // Without a header timeout they would stay open for ever.
    futures_util::future::join_all(slow.into_iter().map(until_closed)).await;
    let (status, body) = app.get("/tasks/v1").await;
    assert_eq!(status, 200, "{body}");
}

/// Beyond the cap a request is refused at once, without an answer, while the probes answer;
/// once slots free up the API serves again.
#[tokio::test]
async fn beyond_the_connection_cap_only_probes_are_answered() {
    let app = TestScheduler::start_with(|config| {
        config.http.max_connections = 8;
        // The slow clients below hold their slots for the whole test.
        config.http.header_read_timeout_ms = 600_000;
    })
    .await;
    wait_for_readiness(&reqwest::Client::new(), &app.base_url, 200).await;
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(slow_client(&address).await);
    }
    let mut refused = TcpStream::connect(&address).await.unwrap();
    let _ = refused
        .write_all(b"GET /tasks/v1 HTTP/1.1\r\nHost: tasks\r\n\r\n")
        .await;
    assert_eq!(
        until_closed(refused).await,
        b"",
        "refused without an answer"
    );
    for path in ["/healthz", "/readyz"] {
        let response = reqwest::Client::new()
            .get(app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let head = reqwest::Client::new()
        .head(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);

    drop(held);
    let served = async {
        loop {
            if let Ok(response) = app.http.get(app.url("/tasks/v1")).send().await
                && response.status() == 200
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("the API serves again once the slow clients left");
}
