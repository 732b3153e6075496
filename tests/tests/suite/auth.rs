//! Authentication and permissions, seen from a caller: every endpoint refuses anonymous
//! callers (104) and callers without its permission (10), and serves the ones holding it.

use harness::{
    TEST_APPLICATION, TEST_USER, TestScheduler, all_permissions, authorized_client, base64, binary,
    token, zip_files,
};
use reqwest::{Client, Method};
use serde_json::{Value, json};

async fn call(
    app: &TestScheduler,
    client: &Client,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = client.request(method.clone(), app.url(path));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn client_with(permissions: &[&str]) -> Client {
    let permissions: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
    authorized_client(&token(&permissions))
}

fn all_but(permission: &str) -> Client {
    let others: Vec<String> = all_permissions()
        .into_iter()
        .filter(|p| p != permission)
        .collect();
    authorized_client(&token(&others))
}

fn assert_refused(status: u16, body: &Value, code: u32, what: &str) {
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["code"], code, "{what}: {body}");
}

struct Endpoint {
    method: Method,
    path: String,
    body: Option<Value>,
    permission: &'static str,
    allowed_status: u16,
}

fn endpoint(
    method: Method,
    path: impl Into<String>,
    body: Option<Value>,
    permission: &'static str,
    allowed_status: u16,
) -> Endpoint {
    Endpoint {
        method,
        path: path.into(),
        body,
        permission,
        allowed_status,
    }
}

#[tokio::test]
async fn every_endpoint_refuses_anonymous_and_unpermitted_callers_and_serves_permitted_ones() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    app.create_noop_function("doomed").await;
    let later = "2099-01-01T00:00:00.000Z";
    let (_, task) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": "fn", "startTimestamp": later}),
        )
        .await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    let (_, schedule) = app
        .post(
            "/tasks/v1/schedules",
            &json!({"interval": 3600, "functionName": "fn", "startTimestamp": later}),
        )
        .await;
    let schedule_id = schedule["id"].as_str().unwrap().to_owned();
    let (_, trigger) = app
        .post(
            "/tasks/v1/triggers",
            &json!({"eventType": "user_deleted", "functionName": "fn"}),
        )
        .await;
    let trigger_id = trigger["id"].as_str().unwrap().to_owned();
    let code = base64(&zip_files(&[(
        "handler.py",
        "def handle(event, context):\n    return {}\n",
    )]));
    let unknown_id = "000000000000000000000000";

    let endpoints = [
        endpoint(Method::GET, "/tasks/v1", None, "VIEW_TASKS", 200),
        endpoint(
            Method::POST,
            "/tasks/v1",
            Some(json!({"functionName": "fn", "startTimestamp": later})),
            "CREATE_TASKS",
            200,
        ),
        endpoint(
            Method::GET,
            format!("/tasks/v1/{task_id}/logs"),
            None,
            "VIEW_TASK_LOGS",
            400,
        ),
        endpoint(
            Method::POST,
            format!("/tasks/v1/{task_id}/cancel"),
            None,
            "CANCEL_TASKS",
            200,
        ),
        endpoint(
            Method::GET,
            "/tasks/v1/functions",
            None,
            "VIEW_TASK_FUNCTIONS",
            200,
        ),
        endpoint(
            Method::POST,
            "/tasks/v1/functions",
            Some(
                json!({"name": "created", "code": code, "entryPoint": "handler.handle", "runtime": "python3.11"}),
            ),
            "CREATE_TASK_FUNCTION",
            200,
        ),
        endpoint(
            Method::GET,
            "/tasks/v1/functions/fn",
            None,
            "VIEW_TASK_FUNCTION_DETAILS",
            200,
        ),
        endpoint(
            Method::PUT,
            "/tasks/v1/functions/fn",
            Some(json!({"description": "updated"})),
            "UPDATE_TASK_FUNCTION",
            200,
        ),
        endpoint(
            Method::POST,
            "/tasks/v1/functions/fn/disable",
            None,
            "UPDATE_TASK_FUNCTION",
            200,
        ),
        endpoint(
            Method::POST,
            "/tasks/v1/functions/fn/enable",
            None,
            "UPDATE_TASK_FUNCTION",
            200,
        ),
        endpoint(
            Method::DELETE,
            "/tasks/v1/functions/doomed",
            None,
            "DELETE_TASK_FUNCTION",
            200,
        ),
        endpoint(
            Method::GET,
            "/tasks/v1/schedules",
            None,
            "VIEW_TASK_SCHEDULES",
            200,
        ),
        endpoint(
            Method::POST,
            "/tasks/v1/schedules",
            Some(json!({"interval": 60, "functionName": "fn", "startTimestamp": later})),
            "CREATE_TASK_SCHEDULE",
            200,
        ),
        endpoint(
            Method::DELETE,
            format!("/tasks/v1/schedules/{schedule_id}"),
            None,
            "DELETE_TASK_SCHEDULE",
            200,
        ),
        endpoint(
            Method::GET,
            "/tasks/v1/triggers",
            None,
            "VIEW_TASK_TRIGGERS",
            200,
        ),
        endpoint(
            Method::GET,
            format!("/tasks/v1/triggers/{trigger_id}"),
            None,
            "VIEW_TASK_TRIGGERS",
            200,
        ),
        endpoint(
            Method::POST,
            "/tasks/v1/triggers",
            Some(json!({"eventType": "x", "functionName": "fn"})),
            "CREATE_TASK_TRIGGER",
            200,
        ),
        endpoint(
            Method::PUT,
            format!("/tasks/v1/triggers/{trigger_id}"),
            Some(json!({"eventType": "y", "functionName": "fn"})),
            "UPDATE_TASK_TRIGGER",
            200,
        ),
        endpoint(
            Method::DELETE,
            format!("/tasks/v1/triggers/{trigger_id}"),
            None,
            "DELETE_TASK_TRIGGER",
            200,
        ),
        endpoint(
            Method::GET,
            "/tasks/v1/apiRequests",
            None,
            "VIEW_API_FUNCTION_REQUESTS",
            200,
        ),
        endpoint(
            Method::GET,
            format!("/tasks/v1/apiRequests/{unknown_id}/logs"),
            None,
            "VIEW_API_FUNCTION_REQUEST_LOGS",
            404,
        ),
    ];

    let anonymous = Client::new();
    // HEAD answers like GET without the body: its status and `Content-Length` would tell a
    // caller what the body holds, so it needs the same permission.
    let heads: Vec<Endpoint> = endpoints
        .iter()
        .filter(|e| e.method == Method::GET)
        .map(|e| {
            endpoint(
                Method::HEAD,
                e.path.clone(),
                None,
                e.permission,
                e.allowed_status,
            )
        })
        .collect();
    for e in &heads {
        let what = format!("{} {}", e.method, e.path);
        let (status, _) = call(&app, &anonymous, &e.method, &e.path, None).await;
        assert_eq!(status, 401, "anonymous {what}");
        let (status, _) = call(&app, &all_but(e.permission), &e.method, &e.path, None).await;
        assert_eq!(status, 401, "without {} {what}", e.permission);
        let (status, _) = call(
            &app,
            &client_with(&[e.permission]),
            &e.method,
            &e.path,
            None,
        )
        .await;
        assert_eq!(status, e.allowed_status, "with {} {what}", e.permission);
    }
    for e in &endpoints {
        let what = format!("{} {}", e.method, e.path);
        let (status, body) = call(&app, &anonymous, &e.method, &e.path, e.body.as_ref()).await;
        assert_refused(status, &body, 104, &format!("anonymous {what}"));
        let (status, body) = call(
            &app,
            &all_but(e.permission),
            &e.method,
            &e.path,
            e.body.as_ref(),
        )
        .await;
        assert_refused(
            status,
            &body,
            10,
            &format!("without {} {what}", e.permission),
        );
        assert!(
            body["message"].as_str().unwrap().contains(e.permission),
            "{body}"
        );
        let (status, body) = call(
            &app,
            &client_with(&[e.permission]),
            &e.method,
            &e.path,
            e.body.as_ref(),
        )
        .await;
        assert_eq!(
            status, e.allowed_status,
            "with {} {what}: {body}",
            e.permission
        );
    }

    // Refused calls changed nothing: the allowed calls above did the one deletion each.
    let (_, functions) = app.get("/tasks/v1/functions").await;
    let names: Vec<&str> = functions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"fn") && names.contains(&"created"));
}

#[tokio::test]
async fn created_tasks_name_the_user_and_application_that_created_them() {
    let app = TestScheduler::start().await;
    app.create_noop_function("fn").await;
    let (status, task) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": "fn", "startTimestamp": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["createdByUserId"], TEST_USER);
    assert_eq!(task["createdByApplicationId"], TEST_APPLICATION);
    let (_, listed) = app
        .get(&format!("/tasks/v1?createdByUserId={TEST_USER}"))
        .await;
    assert_eq!(listed["data"][0]["id"], task["id"]);
}

const WHO: &str = "def handle(event, context):\n    headers = event.get('headers') if isinstance(event, dict) else None\n    if headers is not None:\n        return {'statusCode': 200, 'body': {'user': headers.get('x-exh-requesting-user-id')}}\n    return {'ran': True}\n";

async fn create_with_mode(app: &TestScheduler, name: &str, mode: &str) {
    let code = base64(&zip_files(&[("who.py", WHO)]));
    let (status, body) = app
        .post(
            "/tasks/v1/functions",
            &json!({"name": name, "code": code, "entryPoint": "who.handle", "runtime": "python3.11",
                    "executionOptions": {"permissionMode": mode}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn permission_modes_govern_direct_execution_and_api_functions() {
    let app = TestScheduler::start().await;
    let _worker = app.start_worker(2).await;
    create_with_mode(&app, "required", "permissionRequired").await;
    create_with_mode(&app, "users", "allUsers").await;
    create_with_mode(&app, "open", "public").await;

    let anonymous = Client::new();
    let nobody = client_with(&[]);
    let execute_all = client_with(&["EXECUTE_TASK_FUNCTION"]);
    let execute_required = client_with(&["EXECUTE_TASK_FUNCTION:required"]);
    let execute_other = client_with(&["EXECUTE_TASK_FUNCTION:users"]);
    let api_all = client_with(&["EXECUTE_API_FUNCTION"]);
    let api_required = client_with(&["EXECUTE_API_FUNCTION:required"]);
    let broken = authorized_client("not-a-token");

    let execute = |name: &str| format!("/tasks/v1/functions/{name}/execute");
    let api = |name: &str| format!("/tasks/v1/api/{name}/path");
    let post = Method::POST;
    let get = Method::GET;
    // (client, method, path, expected status, expected error code)
    let cases: Vec<(&Client, &Method, String, u16, Option<u32>)> = vec![
        (&anonymous, &post, execute("required"), 401, Some(104)),
        (&nobody, &post, execute("required"), 401, Some(10)),
        (&execute_other, &post, execute("required"), 401, Some(10)),
        (&api_all, &post, execute("required"), 401, Some(10)),
        (&execute_required, &post, execute("required"), 200, None),
        (&execute_all, &post, execute("required"), 200, None),
        (&anonymous, &post, execute("users"), 401, Some(104)),
        (&nobody, &post, execute("users"), 200, None),
        (&anonymous, &post, execute("open"), 200, None),
        (&broken, &post, execute("open"), 401, Some(104)),
        // Unknown functions are refused like protected ones, so names are not revealed.
        (&anonymous, &post, execute("missing"), 401, Some(104)),
        (&nobody, &post, execute("missing"), 401, Some(10)),
        (&execute_all, &post, execute("missing"), 404, Some(16)),
        (&anonymous, &get, api("required"), 401, Some(104)),
        (&nobody, &get, api("required"), 401, Some(10)),
        (&execute_all, &get, api("required"), 401, Some(10)),
        (&api_required, &get, api("required"), 200, None),
        (&api_all, &get, api("required"), 200, None),
        (&anonymous, &get, api("users"), 401, Some(104)),
        (&nobody, &get, api("users"), 200, None),
        (&anonymous, &get, api("open"), 200, None),
        (&nobody, &get, api("missing"), 401, Some(10)),
    ];
    for (client, method, path, status, code) in &cases {
        let (got, body) = call(&app, client, method, path, Some(&json!({}))).await;
        assert_eq!(got, *status, "{method} {path}: {body}");
        if let Some(code) = code {
            assert_eq!(body["code"], *code, "{method} {path}: {body}");
        }
    }
    // The API function learns who called, from headers the caller cannot forge.
    let response = nobody
        .get(app.url(&api("users")))
        .header("x-exh-requesting-user-id", "forged")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"], TEST_USER);
    let (_, body) = call(&app, &anonymous, &get, &api("open"), None).await;
    assert_eq!(body["user"], Value::Null);
}

#[tokio::test]
async fn a_gateway_can_vouch_for_callers_with_headers() {
    let app = TestScheduler::start_with(|config| {
        config.auth.mode = scheduler::api::auth::AuthMode::Headers;
    })
    .await;
    let client = Client::new();
    let response = client
        .post(app.url("/tasks/v1/functions"))
        .header("X-Forwarded-User", "admin")
        .header("X-Forwarded-Permissions", "CREATE_TASK_FUNCTION")
        .json(
            &json!({"name": "fn", "code": harness::function_code("noop"),
                      "entryPoint": "handler.handle", "runtime": "python3.11"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request = |permissions: &str| {
        client
            .post(app.url("/tasks/v1"))
            .header("X-Forwarded-User", "gateway-user")
            .header("X-Forwarded-Application", "gateway-app")
            .header("X-Forwarded-Permissions", permissions)
            .json(&json!({"functionName": "fn", "startTimestamp": "2099-01-01T00:00:00Z"}))
    };
    let response = request("VIEW_TASKS,CREATE_TASKS").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["createdByUserId"], "gateway-user");
    assert_eq!(task["createdByApplicationId"], "gateway-app");
    let response = request("VIEW_TASKS").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], 10);
    let response = client.get(app.url("/tasks/v1")).send().await.unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["code"], 104);
    // Two copies of an identity header: which one the gateway checked is unknown; refused.
    let response = client
        .get(app.url("/tasks/v1"))
        .header("X-Forwarded-User", "gateway-user")
        .header("X-Forwarded-User", "someone-else")
        .header("X-Forwarded-Permissions", "VIEW_TASKS")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 104, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("x-forwarded-user header is sent more than once"),
        "{body}"
    );
}

/// A token that does not verify is refused with a message of the service's own, whatever the
/// JWT library calls the fault.
#[tokio::test]
async fn refused_tokens_are_told_why_in_plain_words() {
    let app = TestScheduler::start().await;
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let secret = harness::TEST_SECRET;
    let cases = [
        (
            sign(json!({"sub": TEST_USER, "exp": now - 600}), secret),
            "The token has expired",
        ),
        (
            sign(
                json!({"sub": TEST_USER, "exp": now + 7200, "nbf": now + 3600}),
                secret,
            ),
            "The token is not valid yet",
        ),
        (
            sign(
                json!({"sub": TEST_USER, "exp": now + 600}),
                "some-other-secret-that-is-long-enough",
            ),
            "The token's signature does not verify",
        ),
        ("a.b.c".to_owned(), "The token is malformed"),
    ];
    for (token, message) in cases {
        let (status, body) = call(
            &app,
            &authorized_client(&token),
            &Method::GET,
            "/tasks/v1",
            None,
        )
        .await;
        assert_refused(status, &body, 104, message);
        assert_eq!(body["message"], message);
    }
}

#[tokio::test]
async fn none_mode_lets_every_caller_do_everything() {
    let app = TestScheduler::start_with(|config| {
        config.auth.mode = scheduler::api::auth::AuthMode::None;
    })
    .await;
    let (status, body) = call(
        &app,
        &Client::new(),
        &Method::GET,
        "/tasks/v1/functions",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_token_subcommand_mints_tokens_the_scheduler_accepts() {
    let app = TestScheduler::start().await;
    let minted = std::process::Command::new(binary("scheduler"))
        .args(["token", "--sub", "cli-user", "--permissions", "VIEW_TASKS"])
        .env("TASKS__AUTH__JWT_SECRET", harness::TEST_SECRET)
        .output()
        .unwrap();
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8(minted.stdout).unwrap();
    let client = authorized_client(token.trim());
    let (status, _) = call(&app, &client, &Method::GET, "/tasks/v1", None).await;
    assert_eq!(status, 200);
    let (status, body) = call(&app, &client, &Method::GET, "/tasks/v1/functions", None).await;
    assert_refused(status, &body, 10, "functions with a VIEW_TASKS token");

    let refused = std::process::Command::new(binary("scheduler"))
        .args(["token"])
        .env_remove("TASKS__AUTH__JWT_SECRET")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("TASKS__AUTH__JWT_SECRET"));
}

/// Public keys from a JWKS file: RS256 and ES256 tokens are accepted; an HS256 token signed
/// with the public key text (the classic algorithm confusion) is not.
#[tokio::test]
async fn rs256_and_es256_tokens_are_verified_against_the_jwks_file() {
    let keys = tempdir();
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&keys)
            .output()
            .unwrap();
        assert!(status.status.success(), "openssl {args:?}: {status:?}");
        status.stdout
    };
    run(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
    run(&[
        "rsa",
        "-in",
        "rsa.pem",
        "-outform",
        "DER",
        "-traditional",
        "-out",
        "rsa.der",
    ]);
    let modulus = String::from_utf8(run(&["rsa", "-in", "rsa.pem", "-noout", "-modulus"])).unwrap();
    let modulus = hex(modulus.trim().trim_start_matches("Modulus="));
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ec.pem",
    ]);
    run(&[
        "pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-outform", "DER", "-out", "ec.der",
    ]);
    let public = run(&["ec", "-in", "ec.pem", "-pubout", "-outform", "DER"]);
    let point = &public[public.len() - 64..];
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": b64url(&modulus), "e": "AQAB"},
        {"kty": "EC", "kid": "ec-1", "use": "sig", "alg": "ES256", "crv": "P-256", "x": b64url(&point[..32]), "y": b64url(&point[32..])},
    ]});
    let jwks_file = keys.join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();

    let app = TestScheduler::start_with(|config| {
        config.auth.jwt_secret = None;
        config.auth.jwks_file = Some(jwks_file.clone());
    })
    .await;
    let claims = json!({"sub": "rsa-user", "permissions": ["VIEW_TASKS"], "exp": chrono::Utc::now().timestamp() + 600});
    let sign = |algorithm: jsonwebtoken::Algorithm, kid: &str, key: &jsonwebtoken::EncodingKey| {
        let mut header = jsonwebtoken::Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    let rsa =
        jsonwebtoken::EncodingKey::from_rsa_der(&std::fs::read(keys.join("rsa.der")).unwrap());
    let ec = jsonwebtoken::EncodingKey::from_ec_der(&std::fs::read(keys.join("ec.der")).unwrap());
    for token in [
        sign(jsonwebtoken::Algorithm::RS256, "rsa-1", &rsa),
        sign(jsonwebtoken::Algorithm::ES256, "ec-1", &ec),
    ] {
        let (status, body) = call(
            &app,
            &authorized_client(&token),
            &Method::GET,
            "/tasks/v1",
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // A token whose kid names the other key does not verify.
    let mismatched = sign(jsonwebtoken::Algorithm::RS256, "ec-1", &rsa);
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&std::fs::read(keys.join("rsa.pem")).unwrap()),
    )
    .unwrap();
    for token in [mismatched, confused] {
        let (status, body) = call(
            &app,
            &authorized_client(&token),
            &Method::GET,
            "/tasks/v1",
            None,
        )
        .await;
        assert_refused(status, &body, 104, "a token that must not verify");
    }
    let _ = std::fs::remove_dir_all(&keys);
}

fn tempdir() -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!(
        "task-service-auth-{}",
        common::id::ObjectId::generate()
    ));
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
