//! What a function can reach over the network: third-party APIs (played by hosts of their own,
//! in network namespaces this suite makes), and nothing of the service's own: not its
//! database, broker or HTTP listeners, not another process's Runtime API, not cloud metadata.

use std::net::Ipv4Addr;

use harness::test_host::{TestHost, http_response};
use harness::{TestScheduler, TestWorker, base64, zip_files};
use serde_json::{Value, json};
use worker::runtime::sandbox::cidr::Cidr;
use worker::runtime::sandbox::config::CommaList;
use worker::runtime::sandbox::config::Isolation;

/// Tries each target (`[name, host, port]`) as an attacker would: connect, send an HTTP
/// request, read what comes back. Fetches `thirdParty` as a function calling an API would.
const PROBE: &str = r#"
import os, socket, urllib.request

def connect(host, port):
    if host.startswith("/"):
        connection = socket.socket(socket.AF_UNIX)
        connection.settimeout(3)
        connection.connect(host)
        return connection
    return socket.create_connection((host, port), timeout=3)

def attempt(host, port):
    try:
        connection = connect(host, port)
    except ConnectionRefusedError:
        return "refused"
    except PermissionError:
        return "denied"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error %d" % e.errno
    try:
        connection.settimeout(3)
        connection.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = connection.recv(64)
        return "answered: %r" % answer if answer else "closed"
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    except socket.timeout:
        return "connected, no answer"
    finally:
        connection.close()

def handle(event, context):
    data = event["data"]
    outcome = {name: attempt(host, port) for name, host, port in data["targets"]}
    try:
        with urllib.request.urlopen(data["thirdParty"], timeout=5) as response:
            outcome["thirdParty"] = response.read().decode()
    except OSError as e:
        outcome["thirdParty"] = "failed: %s" % e
    return outcome
"#;

/// Returns its own Runtime API address, and stays warm with its Runtime API listening.
const BYSTANDER: &str = r#"
import os
def handle(event, context):
    return os.environ["AWS_LAMBDA_RUNTIME_API"]
"#;

async fn create_python(app: &TestScheduler, name: &str, source: &str) {
    let (status, body) = app
        .post(
            "/tasks/v1/functions",
            &json!({"name": name, "code": base64(&zip_files(&[("handler.py", source)])),
                    "entryPoint": "handler.handle", "runtime": "python3.11", "timeLimit": 60}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn run(app: &TestScheduler, function: &str, data: Value) -> Value {
    let (status, task) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": function, "data": data}),
        )
        .await;
    assert_eq!(status, 200, "{task}");
    let task = app.wait_until_finished(task["id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "complete", "{task}");
    task["result"].clone()
}

async fn filtered_worker(
    app: &TestScheduler,
    uid_base: u32,
    deny: &str,
    allow: &str,
) -> TestWorker {
    let deny: CommaList<Cidr> = serde_json::from_value(json!(deny)).unwrap();
    let allow: CommaList<Cidr> = serde_json::from_value(json!(allow)).unwrap();
    TestWorker::start(app, |config| {
        config.worker.concurrency = 2;
        config.worker.sandbox.isolation = Isolation::Users;
        config.worker.sandbox.uid_base = uid_base;
        config.worker.sandbox.uid_count = 8;
        config.worker.sandbox.egress_deny = deny;
        config.worker.sandbox.egress_allow = allow;
    })
    .await
}

fn host_and_port(url: &str) -> (String, u16) {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let authority = authority.rsplit('@').next().unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap();
    (host.to_owned(), port.parse().unwrap())
}

#[tokio::test]
async fn a_function_reaches_a_third_party_but_nothing_of_the_service_nor_metadata() {
    let app = TestScheduler::start().await;
    // An address where clouds serve instance credentials; here the third party answers on it
    // too, so only the filter can keep the function from it.
    let metadata = Ipv4Addr::new(169, 254, 170, 2);
    let third_party = TestHost::create(&[metadata])
        .serve(80, |_| http_response(200, "hello from the third party"));
    let worker = filtered_worker(&app, 290_000, "", "").await;
    create_python(&app, "bystander", BYSTANDER).await;
    create_python(&app, "probe", PROBE).await;
    let other_runtime_api = run(&app, "bystander", json!({})).await;
    let (other_host, other_port) =
        host_and_port(&format!("http://{}", other_runtime_api.as_str().unwrap()));

    let (database_host, database_port) = host_and_port(&app.database.url);
    let (broker_host, broker_port) = host_and_port(&app.vhost.url);
    let (api_host, api_port) = host_and_port(&app.base_url);
    let (metrics_host, metrics_port) = host_and_port(&worker.base_url);
    // Where the machine's PostgreSQL also listens on a Unix socket, open to every local user.
    let database_socket = format!("/var/run/postgresql/.s.PGSQL.{database_port}");
    let mut targets = json!([
        ["database", database_host, database_port],
        ["broker", broker_host, broker_port],
        ["schedulerApi", api_host, api_port],
        ["workerMetrics", metrics_host, metrics_port],
        ["otherRuntimeApi", other_host, other_port],
        ["metadata", metadata.to_string(), 80],
    ]);
    let has_socket = std::path::Path::new(&database_socket).exists();
    if has_socket {
        targets
            .as_array_mut()
            .unwrap()
            .push(json!(["databaseSocket", database_socket, 0]));
    }
    let outcome = run(
        &app,
        "probe",
        json!({"targets": targets, "thirdParty": format!("http://{}/", third_party.address)}),
    )
    .await;
    assert_eq!(
        outcome["thirdParty"], "hello from the third party",
        "{outcome}"
    );
    for refused in [
        "database",
        "broker",
        "schedulerApi",
        "workerMetrics",
        "metadata",
    ] {
        assert_eq!(outcome[refused], "refused", "{refused}: {outcome}");
    }
    if has_socket {
        assert_eq!(outcome["databaseSocket"], "denied", "{outcome}");
    }
    // Its listener is open to sandbox uids; it hangs up on any but its own process's.
    assert_eq!(outcome["otherRuntimeApi"], "closed", "{outcome}");
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_operator_denies_ranges_and_carves_exceptions_out_of_them() {
    let app = TestScheduler::start().await;
    let first = TestHost::create(&[]).serve(80, |_| http_response(200, "first"));
    let second = TestHost::create(&[]).serve(80, |_| http_response(200, "second"));
    create_python(&app, "probe", PROBE).await;
    let fetch = |host: Ipv4Addr| json!({"targets": [], "thirdParty": format!("http://{host}/")});

    // All test hosts live in 10.248.0.0/13; the first is allowed back.
    let worker = filtered_worker(
        &app,
        291_000,
        "10.248.0.0/13",
        &format!("{}/32", first.address),
    )
    .await;
    let outcome = run(&app, "probe", fetch(first.address)).await;
    assert_eq!(outcome["thirdParty"], "first", "{outcome}");
    let outcome = run(&app, "probe", fetch(second.address)).await;
    assert!(
        outcome["thirdParty"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{outcome}"
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_worker_that_cannot_filter_the_network_refuses_to_isolate_without_it() {
    let app = TestScheduler::start().await;
    // Without /usr/sbin on the PATH the worker finds no `nft`.
    let settings = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("TASKS__WORKER__SANDBOX__ISOLATION", "users"),
        ("TASKS__WORKER__SANDBOX__UID_BASE", "292000"),
    ];
    let output = harness::worker_binary_command(&app, &settings)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success(), "the worker started");
    // The worker logs to its standard output.
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("worker.sandbox.network"), "{log}");
    assert!(log.contains("nft"), "{log}");

    // Told explicitly, it starts (and says so loudly).
    let mut opted_out = settings.to_vec();
    opted_out.push(("TASKS__WORKER__SANDBOX__NETWORK", "unfiltered"));
    opted_out.push(("TASKS__LOG__LEVEL", "info"));
    let mut worker = harness::worker_binary_command(&app, &opted_out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = worker.stdout.take().unwrap();
    let warning = tokio::time::timeout(std::time::Duration::from_secs(30), async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(log).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("FUNCTION NETWORK NOT FILTERED") {
                return line;
            }
        }
        String::new()
    })
    .await
    .unwrap();
    assert!(!warning.is_empty(), "no warning at start");
    worker.kill().await.unwrap();
    app.stop().await;
}
