//! `/tasks/v1/functions` against a real scheduler and Postgres.

use harness::{TestScheduler, base64, function_code, zip_files};
use serde_json::{Value, json};

fn function_body(name: &str) -> Value {
    json!({
        "name": name,
        "description": "adds numbers",
        "code": function_code("noop"),
        "entryPoint": "handler.handle",
        "runtime": "python3.12",
        "timeLimit": 60,
        "memoryLimit": 256,
        "environmentVariables": {"MY_VAR": {"value": "v"}},
        "executionOptions": {"permissionMode": "allUsers", "defaultPriority": 3},
        "retryPolicy": {"enabled": true, "errorsToRetry": ["CONNECTION_ERROR"]}
    })
}

fn assert_error(status: u16, body: &Value, expected_status: u16, code: u64) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["name"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test]
async fn create_get_list_update_delete() {
    let app = TestScheduler::start().await;

    let (status, created) = app
        .post("/tasks/v1/functions/", &function_body("adder"))
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["name"], "adder");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["runtime"], "python3.12");
    assert_eq!(created["entryPoint"], "handler.handle");
    assert_eq!(created["timeLimit"], 60);
    assert_eq!(created["memoryLimit"], 256);
    assert_eq!(
        created["environmentVariables"],
        json!({"MY_VAR": {"value": "v"}})
    );
    assert_eq!(
        created["executionOptions"],
        json!({"permissionMode": "allUsers", "defaultPriority": 3})
    );
    assert_eq!(
        created["retryPolicy"],
        json!({"enabled": true, "errorsToRetry": ["CONNECTION_ERROR"]})
    );
    assert!(created.get("code").is_none(), "code is write-only");
    let updated_at = created["updateTimestamp"].as_str().unwrap();
    assert!(
        updated_at.ends_with('Z') && updated_at.len() == 24,
        "{updated_at}"
    );

    let (status, fetched) = app.get("/tasks/v1/functions/adder").await;
    assert_eq!(status, 200);
    assert_eq!(fetched, created);

    app.post(
        "/tasks/v1/functions",
        &json!({
            "name": "second", "code": function_code("noop"),
            "entryPoint": "handler.handle", "runtime": "nodejs20.x"
        }),
    )
    .await;
    for path in ["/tasks/v1/functions/", "/tasks/v1/functions"] {
        let (status, list) = app.get(path).await;
        assert_eq!(status, 200);
        assert_eq!(list["page"]["total"], 2);
        assert_eq!(list["data"].as_array().unwrap().len(), 2);
        assert_eq!(list["data"][0]["name"], "adder");
        assert_eq!(list["data"][0]["description"], "adds numbers");
        assert!(list["data"][0]["updateTimestamp"].is_string());
        assert!(list["data"][0].get("runtime").is_none());
    }
    let (_, second) = app.get("/tasks/v1/functions/second").await;
    assert_eq!(second["timeLimit"], 30, "default time limit");
    assert_eq!(second["memoryLimit"], 128, "default memory limit");
    assert_eq!(
        second["executionOptions"]["permissionMode"],
        "permissionRequired"
    );
    assert_eq!(second["retryPolicy"]["enabled"], false);

    let db = app.database.connect().await;
    let version = async || -> i64 {
        db.query_one("SELECT version FROM functions WHERE name = 'adder'", &[])
            .await
            .unwrap()
            .get(0)
    };
    let created_version = version().await;

    // Any subset; unknown fields are tolerated; nested objects are merged.
    let (status, body) = app
        .put(
            "/tasks/v1/functions/adder",
            &json!({
                "description": "x", "timeLimit": 90, "unknownField": 1,
                "executionOptions": {"defaultPriority": 7}
            }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"affectedRecords": 1}));
    let (_, fetched) = app.get("/tasks/v1/functions/adder").await;
    assert_eq!(fetched["description"], "x");
    assert_eq!(fetched["timeLimit"], 90);
    assert_eq!(fetched["memoryLimit"], 256);
    assert_eq!(fetched["executionOptions"]["permissionMode"], "allUsers");
    assert_eq!(fetched["executionOptions"]["defaultPriority"], 7);
    let updated_version = version().await;
    assert!(
        updated_version > created_version,
        "an update bumps the version"
    );

    // Code and configuration together, as the CLI's sync sends them.
    let new_code = base64(&zip_files(&[("main.py", "def run(e, c):\n    return 2\n")]));
    let (status, _) = app
        .put(
            "/tasks/v1/functions/adder",
            &json!({
                "name": "adder", "code": new_code, "entryPoint": "main.run", "runtime": "python3.12"
            }),
        )
        .await;
    assert_eq!(status, 200);
    let row = db
        .query_one(
            "SELECT version, code_sha256 FROM functions WHERE name = 'adder'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, i64>(0) > updated_version,
        "every update bumps the version"
    );
    let stored: Vec<u8> = db
        .query_one(
            "SELECT archive FROM function_code WHERE sha256 = $1",
            &[&row.get::<_, String>(1)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        harness::base64(&stored),
        new_code,
        "code is stored by its hash"
    );

    let (status, body) = app.delete("/tasks/v1/functions/adder").await;
    assert_eq!((status, body), (200, json!({"affectedRecords": 1})));
    let (status, body) = app.get("/tasks/v1/functions/adder").await;
    assert_error(status, &body, 404, 16);
    let (status, body) = app.delete("/tasks/v1/functions/adder").await;
    assert_error(status, &body, 404, 16);
    let (status, body) = app
        .put("/tasks/v1/functions/adder", &json!({"description": "y"}))
        .await;
    assert_error(status, &body, 404, 16);
    app.stop().await;
}

#[tokio::test]
async fn code_no_function_uses_any_more_is_deleted() {
    let app = TestScheduler::start().await;
    let db = app.database.connect().await;
    let stored_code = async || -> Vec<String> {
        db.query("SELECT sha256 FROM function_code ORDER BY sha256", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    let code_of = async |name: &str| -> String {
        db.query_one(
            "SELECT code_sha256 FROM functions WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
    };
    let first_code = base64(&zip_files(&[("main.py", "def run(e, c):\n    return 1\n")]));
    let second_code = base64(&zip_files(&[("main.py", "def run(e, c):\n    return 2\n")]));
    for name in ["one", "two"] {
        let (status, body) = app
            .post(
                "/tasks/v1/functions",
                &json!({"name": name, "code": first_code, "entryPoint": "main.run", "runtime": "python3.12"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let first = code_of("one").await;
    assert_eq!(
        stored_code().await,
        vec![first.clone()],
        "stored once for both"
    );

    let (status, _) = app
        .put("/tasks/v1/functions/one", &json!({"code": second_code}))
        .await;
    assert_eq!(status, 200);
    let second = code_of("one").await;
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(stored_code().await, both, "`two` still uses the first code");

    let (status, _) = app.delete("/tasks/v1/functions/two").await;
    assert_eq!(status, 200);
    assert_eq!(
        stored_code().await,
        vec![second.clone()],
        "nothing uses the first code"
    );

    let (status, _) = app
        .put(
            "/tasks/v1/functions/one",
            &json!({"description": "same code"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        stored_code().await,
        vec![second],
        "an update without code keeps it"
    );

    // The code of a deleted function comes back with a new function that uploads it.
    let (status, _) = app.delete("/tasks/v1/functions/one").await;
    assert_eq!(status, 200);
    assert!(stored_code().await.is_empty());
    let (status, _) = app
        .post(
            "/tasks/v1/functions",
            &json!({"name": "three", "code": first_code, "entryPoint": "main.run", "runtime": "python3.12"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(stored_code().await, vec![first]);
    app.stop().await;
}

#[tokio::test]
async fn enable_and_disable() {
    let app = TestScheduler::start().await;
    app.create_noop_function("toggle").await;
    let (status, body) = app
        .post("/tasks/v1/functions/toggle/disable", &json!({}))
        .await;
    assert_eq!((status, body), (200, json!({"affectedRecords": 1})));
    let (_, fetched) = app.get("/tasks/v1/functions/toggle").await;
    assert_eq!(fetched["enabled"], false);
    // Disabling again is a no-op.
    let (status, _) = app
        .post("/tasks/v1/functions/toggle/disable", &json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .post("/tasks/v1/functions/toggle/enable", &json!({}))
        .await;
    assert_eq!(status, 200);
    let (_, fetched) = app.get("/tasks/v1/functions/toggle").await;
    assert_eq!(fetched["enabled"], true);
    let (status, body) = app
        .post("/tasks/v1/functions/missing/enable", &json!({}))
        .await;
    assert_error(status, &body, 404, 16);
    app.stop().await;
}

#[tokio::test]
async fn invalid_functions_are_rejected_and_change_nothing() {
    let app = TestScheduler::start().await;
    let with = |field: &str, value: Value| {
        let mut body = function_body("fn-x");
        body[field] = value;
        body
    };
    let cases: Vec<(Value, u16, u64)> = vec![
        (json!({"name": "only-name"}), 400, 14),
        (with("code", json!("not base64 at all!")), 400, 1401),
        (
            with("code", json!(base64(b"plain text, not a zip"))),
            400,
            1401,
        ),
        (with("code", json!(base64(&zip_files(&[])))), 400, 1401),
        (with("code", json!("A".repeat(15 * 1024 * 1024))), 400, 1401),
        (with("name", json!("bad name/with slash")), 400, 1407),
        (with("runtime", json!("java21")), 400, 1402),
        (with("entryPoint", json!("nodot")), 400, 1402),
        (with("timeLimit", json!(301)), 400, 15),
        (with("timeLimit", json!(2)), 400, 15),
        (with("timeLimit", json!("30")), 400, 15),
        (with("memoryLimit", json!(100)), 400, 15),
        (with("memoryLimit", json!(10241)), 400, 15),
        (
            with(
                "environmentVariables",
                json!({"BIG": {"value": "x".repeat(5000)}}),
            ),
            400,
            1402,
        ),
        (
            with("environmentVariables", json!({"1BAD": {"value": "x"}})),
            400,
            1402,
        ),
        (
            with("environmentVariables", json!({"OK": "not an object"})),
            400,
            15,
        ),
        (
            with("executionOptions", json!({"permissionMode": "everyone"})),
            400,
            15,
        ),
        (with("retryPolicy", json!({"enabled": "yes"})), 400, 15),
    ];
    for (body, status_expected, code) in cases {
        let (status, response) = app.post("/tasks/v1/functions", &body).await;
        assert_error(status, &response, status_expected, code);
    }
    // Bodies that are not JSON objects.
    let response = app
        .http
        .post(app.url("/tasks/v1/functions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 22);
    let response = app
        .http
        .post(app.url("/tasks/v1/functions"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_error(status, &body, 400, 13);

    let (_, list) = app.get("/tasks/v1/functions").await;
    assert_eq!(list["page"]["total"], 0, "nothing was stored: {list}");

    app.create_noop_function("taken").await;
    let (status, body) = app
        .post("/tasks/v1/functions", &function_body("taken"))
        .await;
    assert_error(status, &body, 400, 17);
    // A failed update leaves the function as it was.
    let (status, body) = app
        .put(
            "/tasks/v1/functions/taken",
            &json!({"timeLimit": 1000, "description": "changed"}),
        )
        .await;
    assert_error(status, &body, 400, 15);
    let (_, fetched) = app.get("/tasks/v1/functions/taken").await;
    assert!(fetched.get("description").is_none(), "{fetched}");
    app.stop().await;
}

/// Writes `size` as the uncompressed size of the entry `name`, in its local header and in the
/// central directory, leaving its data as it is: an archive whose sizes lie.
fn lie_about_size(archive: &mut [u8], name: &str, size: u32) {
    let read_u16 = |at: usize| usize::from(u16::from_le_bytes([archive[at], archive[at + 1]]));
    let mut patched = Vec::new();
    for at in 0..archive.len().saturating_sub(46) {
        // (signature, offset of the uncompressed size, of the name length, of the name)
        let layout = match &archive[at..at + 4] {
            b"PK\x03\x04" => (22, 26, 30),
            b"PK\x01\x02" => (24, 28, 46),
            _ => continue,
        };
        let length = read_u16(at + layout.1);
        let start = at + layout.2;
        if archive.get(start..start + length) == Some(name.as_bytes()) {
            patched.push(at + layout.0);
        }
    }
    assert_eq!(patched.len(), 2, "one local header and one directory entry");
    for at in patched {
        archive[at..at + 4].copy_from_slice(&size.to_le_bytes());
    }
}

/// Archives that unpack to something other than what their directory says are refused at
/// upload, not when their function first runs.
#[tokio::test]
async fn archives_that_could_not_be_unpacked_are_refused_at_upload() {
    let app = TestScheduler::start().await;
    let zeros = "\0".repeat(1024 * 1024);
    let mut lying = zip_files(&[
        ("handler.py", "def handle(e, c): return 1"),
        ("data.bin", &zeros),
    ]);
    lie_about_size(&mut lying, "data.bin", 16);
    let clashing = zip_files(&[
        ("handler.py", "def handle(e, c): return 1"),
        ("lib", "a file"),
        ("lib/module.py", "in a directory of the same name"),
    ]);
    for (archive, said) in [(lying, "data.bin"), (clashing, "`lib`")] {
        let mut body = function_body("fn-x");
        body["code"] = json!(base64(&archive));
        let (status, response) = app.post("/tasks/v1/functions", &body).await;
        assert_error(status, &response, 400, 1401);
        assert!(
            response["message"].as_str().unwrap().contains(said),
            "{response}"
        );
    }
    let (_, list) = app.get("/tasks/v1/functions").await;
    assert_eq!(list["page"]["total"], 0, "nothing was stored: {list}");
}
