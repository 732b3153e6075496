//! Test harness: isolated databases, a real scheduler started in-process, HTTP helpers and
//! function archives built from `deploy/examples/functions`.

use std::io::Write;
use std::path::{Path, PathBuf};

pub mod faults;
pub mod private;
pub mod test_host;

use base64::Engine;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Server of the PostgreSQL instance tests use, without a database name.
pub fn postgres_server_url() -> String {
    std::env::var("TASKS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of its own for one test, dropped (with its connections) when the value is.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    server: String,
}

impl TestDatabase {
    /// Names a fresh database; the scheduler creates it on start, as it would in production.
    pub fn new() -> TestDatabase {
        Self::on(&postgres_server_url())
    }

    /// A fresh database on another server (`postgres://user@host:port`).
    pub fn on(server: &str) -> TestDatabase {
        let name = format!("tasks_test_{}", common::id::ObjectId::generate());
        TestDatabase {
            url: format!("{server}/{name}"),
            name,
            server: server.to_owned(),
        }
    }

    pub fn config(&self) -> common::config::DatabaseConfig {
        common::config::DatabaseConfig {
            url: self.url.clone(),
            pool_size: 8,
            ..Default::default()
        }
    }

    /// A direct connection, for assertions on what is stored.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }
}

impl TestDatabase {
    /// Terminates every other connection to this database, as a Postgres restart would.
    pub async fn terminate_connections(&self) -> u64 {
        let admin = format!("{}/postgres", self.server);
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect("connect to the postgres database");
        tokio::spawn(connection);
        client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .expect("terminate backends")
            .len() as u64
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = self.server.clone();
        // Drop runs inside the test's runtime, which cannot block on async work: use a thread
        // with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let url = format!("{server}/postgres");
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// A RabbitMQ virtual host of its own for one test, deleted when the value is dropped.
pub struct TestVhost {
    pub name: String,
    pub url: String,
}

impl TestVhost {
    pub fn new() -> TestVhost {
        let name = format!("tasks_test_{}", common::id::ObjectId::generate());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        let server = std::env::var("TASKS_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
        TestVhost {
            url: format!("{server}/{name}"),
            name,
        }
    }

    /// A channel on this vhost, for publishing or consuming as another service would.
    pub async fn channel(&self) -> lapin::Channel {
        let connection = common::broker::connect(&self.url)
            .await
            .expect("connect to the test vhost");
        let channel = connection.create_channel().await.expect("channel");
        common::broker::declare_topology(&channel)
            .await
            .expect("topology");
        // The connection closes when the last handle drops; keep it alive with the channel.
        std::mem::forget(connection);
        channel
    }
}

impl TestVhost {
    /// Closes every client connection to this vhost, as a broker restart would.
    pub fn close_all_connections(&self) {
        rabbitmqctl(&[
            "close_all_connections",
            "--vhost",
            &self.name,
            "--limit",
            "1000",
            "test: connections closed",
        ]);
    }
}

impl Default for TestVhost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

fn rabbitmqctl(arguments: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(arguments)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {arguments:?} failed");
}

/// The HS256 secret of test schedulers.
pub const TEST_SECRET: &str = "test-secret-of-the-task-service-suite";
/// The key test schedulers and workers seal environment variables with.
pub const TEST_SECRETS_KEY: &str = "test:dGVzdC1rZXktb2YtdGhlLXRhc2stc2VydmljZS0zMmI=";
/// The user every test token names.
pub const TEST_USER: &str = "5f0c9b6e2a1d4c3b2a190807";
/// The application every test token names.
pub const TEST_APPLICATION: &str = "6a1b2c3d4e5f6a7b8c9d0e1f";

/// A token for [`TEST_USER`] of [`TEST_APPLICATION`] holding these permissions.
pub fn token(permissions: &[String]) -> String {
    scheduler::api::auth::jwt::mint(
        TEST_SECRET,
        &scheduler::api::auth::jwt::Claims {
            sub: TEST_USER.to_owned(),
            application_id: Some(TEST_APPLICATION.to_owned()),
            permissions: permissions.to_vec(),
            exp: chrono::Utc::now().timestamp() as u64 + 3600,
            iat: None,
        },
    )
    .expect("token minted")
}

pub fn all_permissions() -> Vec<String> {
    scheduler::api::auth::token::all_permissions()
}

/// An HTTP client sending this bearer token with every request.
pub fn authorized_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_idle_timeout(CLIENT_IDLE_TIMEOUT)
        .build()
        .expect("http client")
}

/// How long test clients keep an idle connection: less than the scheduler's header timeout
/// (10 s), which also closes idle connections, so no request goes out on one as it closes.
pub const CLIENT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A real scheduler serving on an ephemeral port, with its own database and vhost.
pub struct TestScheduler {
    pub base_url: String,
    pub http: reqwest::Client,
    pub database: TestDatabase,
    pub vhost: TestVhost,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestScheduler {
    pub async fn start() -> TestScheduler {
        Self::start_with(|_| {}).await
    }

    /// Starts a scheduler after `adjust` changed its test configuration.
    pub async fn start_with(
        adjust: impl FnOnce(&mut scheduler::config::SchedulerConfig),
    ) -> TestScheduler {
        Self::start_on(TestDatabase::new(), adjust).await
    }

    /// Starts a scheduler on the given database, after `adjust` changed its configuration.
    pub async fn start_on(
        database: TestDatabase,
        adjust: impl FnOnce(&mut scheduler::config::SchedulerConfig),
    ) -> TestScheduler {
        let vhost = TestVhost::new();
        let mut config = Self::config(&database, &vhost);
        adjust(&mut config);
        let application = scheduler::startup::Application::build(config)
            .await
            .expect("scheduler starts");
        let base_url = format!("http://{}", application.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(application.run_until(async {
            let _ = stopped.await;
        }));
        TestScheduler {
            base_url,
            http: authorized_client(&token(&all_permissions())),
            database,
            vhost,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn config(
        database: &TestDatabase,
        vhost: &TestVhost,
    ) -> scheduler::config::SchedulerConfig {
        let mut config = scheduler::config::SchedulerConfig::default();
        config.database = database.config();
        config.amqp.url = vhost.url.clone();
        config.http.listen = "127.0.0.1:0".parse().expect("address");
        config.dispatch.sweep_interval_ms = 200;
        config.auth.jwt_secret = Some(TEST_SECRET.to_owned());
        config.secrets.key = Some(TEST_SECRETS_KEY.to_owned());
        config
    }

    /// Starts another scheduler on the same database and vhost, as a second replica would run.
    pub async fn start_replica(&self) -> (oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>) {
        let config = Self::config(&self.database, &self.vhost);
        let application = scheduler::startup::Application::build(config)
            .await
            .expect("replica starts");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(application.run_until(async {
            let _ = stopped.await;
        }));
        (stop, handle)
    }

    /// Starts a worker on this scheduler's database and vhost.
    pub async fn start_worker(&self, concurrency: usize) -> TestWorker {
        TestWorker::start(self, |config| config.worker.concurrency = concurrency).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends a request and returns the status and the JSON body (`Null` when empty).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("response body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("response is not JSON: {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a python function that returns `{"ok": true}`; returns its name.
    pub async fn create_noop_function(&self, name: &str) -> Value {
        let (status, body) = self
            .post(
                "/tasks/v1/functions/",
                &serde_json::json!({
                    "name": name,
                    "code": example_code("testing/noop"),
                    "entryPoint": "handler.handle",
                    "runtime": "python3.11",
                }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Stops the server and waits for it to finish its requests.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for TestScheduler {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

/// The repository's root directory.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Zips a directory (recursively, keeping executable bits).
pub fn zip_directory(directory: &Path) -> Vec<u8> {
    let mut files = Vec::new();
    collect_files(directory, directory, &mut files);
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (relative, path) in files {
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode()
        };
        #[cfg(not(unix))]
        let mode = 0o644;
        let options = zip::write::SimpleFileOptions::default().unix_permissions(mode);
        writer.start_file(relative, options).expect("zip entry");
        writer
            .write_all(&std::fs::read(&path).expect("read file"))
            .expect("zip write");
    }
    writer.finish().expect("zip finish").into_inner()
}

fn collect_files(root: &Path, directory: &Path, files: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(directory)
        .expect("read dir")
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "__pycache__") {
                continue;
            }
            collect_files(root, &path, files);
        } else {
            let relative = path
                .strip_prefix(root)
                .expect("inside root")
                .to_string_lossy()
                .replace('\\', "/");
            files.push((relative, path));
        }
    }
}

/// Zips files given in memory.
pub fn zip_files(files: &[(&str, &str)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, contents) in files {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        writer.write_all(contents.as_bytes()).expect("zip write");
    }
    writer.finish().expect("zip finish").into_inner()
}

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Base64 zip of `deploy/examples/functions/<name>`.
pub fn example_code(name: &str) -> String {
    let directory = repository_root()
        .join("deploy/examples/functions")
        .join(name);
    assert!(
        directory.is_dir(),
        "no example function at {}",
        directory.display()
    );
    base64(&zip_directory(&directory))
}

/// A real worker in-process, on the database and vhost of a [`TestScheduler`].
pub struct TestWorker {
    /// Base URL of the worker's `/metrics`, `/healthz` and `/readyz`.
    pub base_url: String,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    pub async fn start(
        scheduler: &TestScheduler,
        adjust: impl FnOnce(&mut worker::config::WorkerConfig),
    ) -> TestWorker {
        let mut config = worker::config::WorkerConfig::default();
        config.database = scheduler.database.config();
        config.secrets.key = Some(TEST_SECRETS_KEY.to_owned());
        config.amqp.url = scheduler.vhost.url.clone();
        config.metrics.listen = "127.0.0.1:0".parse().expect("address");
        config.worker.lease_ms = 2_000;
        adjust(&mut config);
        let worker = worker::startup::Worker::build(config)
            .await
            .expect("worker starts");
        let base_url = format!("http://{}", worker.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run_until(async {
            let _ = stopped.await;
        }));
        TestWorker {
            base_url,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Stops taking tasks and waits for the running ones.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

impl TestScheduler {
    /// Polls the task until `done` says so or `timeout` passes; returns its last state.
    pub async fn wait_for_task(
        &self,
        task_id: &str,
        timeout: std::time::Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (_, list) = self.get(&format!("/tasks/v1/?eq(id,{task_id})")).await;
            let task = list["data"][0].clone();
            if done(&task) || std::time::Instant::now() > deadline {
                return task;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Creates `count` tasks of `function`, retrying while the API cannot reach its database
    /// (after a connection loss); returns their ids.
    pub async fn create_tasks(&self, function: &str, count: usize) -> Vec<String> {
        let mut ids = Vec::new();
        while ids.len() < count {
            let (status, task) = self
                .post("/tasks/v1", &serde_json::json!({"functionName": function}))
                .await;
            if status == 200 {
                ids.push(task["id"].as_str().expect("task id").to_owned());
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        ids
    }

    /// Waits for every task and asserts it completed; a failure shows the task's logs (its
    /// function process's output), which say why.
    pub async fn assert_all_complete(&self, ids: &[String]) {
        for id in ids {
            let task = self.wait_until_finished(id).await;
            if task["status"] != "complete" {
                let (_, logs) = self.get(&format!("/tasks/v1/{id}/logs")).await;
                panic!("task {id} did not complete: {task}\nits logs: {logs}");
            }
        }
    }

    /// Waits until the task reaches a terminal status.
    pub async fn wait_until_finished(&self, task_id: &str) -> Value {
        self.wait_for_task(task_id, std::time::Duration::from_secs(60), |task| {
            matches!(
                task["status"].as_str(),
                Some("complete" | "failed" | "canceled" | "retried")
            )
        })
        .await
    }

    /// Creates a function from an example folder.
    pub async fn create_function(
        &self,
        name: &str,
        example: &str,
        runtime: &str,
        entry_point: &str,
        extra: Value,
    ) -> Value {
        let mut body = serde_json::json!({
            "name": name,
            "code": example_code(example),
            "entryPoint": entry_point,
            "runtime": runtime,
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        let (status, created) = self.post("/tasks/v1/functions", &body).await;
        assert_eq!(status, 200, "{created}");
        created
    }
}

/// Path of a binary of the workspace, built by `cargo test` next to the test executables.
pub fn binary(name: &str) -> PathBuf {
    let executable = std::env::current_exe().expect("test executable path");
    let directory = executable
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = directory.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build --workspace --bins`, as tests/run does)",
        path.display()
    );
    path
}

/// A third-party API stub on a host of its own (see [`test_host`]): answers every request with
/// `status` and records each request line with whether it carried
/// `Authorization: Bearer secret-token`. It serves until the returned server is dropped.
pub fn third_party_stub(
    status: u16,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    test_host::TestHostServer,
) {
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = requests.clone();
    let server = test_host::TestHost::create(&[]).serve(80, move |request| {
        let first_line = request.lines().next().unwrap_or_default().to_owned();
        let authorized = request
            .to_ascii_lowercase()
            .contains("authorization: bearer secret-token");
        if let Ok(mut recorded) = recorded.lock() {
            recorded.push(format!("{first_line} auth={authorized}"));
        }
        test_host::http_response(status, "{}")
    });
    (format!("http://{}", server.address), requests, server)
}

/// Publishes a platform event as a platform service would: JSON, persistent, routing key =
/// event type, on the `platform.events` exchange.
pub async fn publish_event(channel: &lapin::Channel, event_type: &str, body: &[u8]) {
    let confirm = channel
        .basic_publish(
            common::broker::EVENTS_EXCHANGE.into(),
            event_type.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            common::broker::persistent_json(),
        )
        .await
        .expect("publish");
    confirm.await.expect("confirm");
}

/// The value of one sample in a Prometheus text exposition (`name{labels}` exactly as written),
/// or 0 when it is absent.
pub fn metric_value(exposition: &str, sample: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Starts the real `worker` binary as a child process on this scheduler's database and vhost,
/// with a clean environment plus `settings` (`TASKS__…` variables).
pub fn spawn_worker_binary(
    scheduler: &TestScheduler,
    settings: &[(&str, &str)],
) -> tokio::process::Child {
    worker_binary_command(scheduler, settings)
        .spawn()
        .expect("the worker binary starts")
}

/// The command [`spawn_worker_binary`] runs, for tests that capture its output.
pub fn worker_binary_command(
    scheduler: &TestScheduler,
    settings: &[(&str, &str)],
) -> tokio::process::Command {
    let cache = std::env::temp_dir().join(format!(
        "worker-binary-{}",
        common::id::ObjectId::generate()
    ));
    let mut command = tokio::process::Command::new(binary("worker"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TASKS__DATABASE__URL", &scheduler.database.url)
        .env("TASKS__AMQP__URL", &scheduler.vhost.url)
        .env("TASKS__METRICS__LISTEN", "127.0.0.1:0")
        .env("TASKS__WORKER__CACHE_DIR", &cache)
        .env("TASKS__SECRETS__KEY", TEST_SECRETS_KEY)
        .env("TASKS__LOG__LEVEL", "warn")
        .kill_on_drop(true);
    for (key, value) in settings {
        command.env(key, value);
    }
    command
}

/// The real `scheduler` binary on `database` and `vhost`, serving on `listen`, with a clean
/// environment plus `settings` (`TASKS__…` variables), for tests that capture its output.
pub fn scheduler_binary_command(
    database: &TestDatabase,
    vhost: &TestVhost,
    listen: std::net::SocketAddr,
    settings: &[(&str, &str)],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary("scheduler"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TASKS__DATABASE__URL", &database.url)
        .env("TASKS__AMQP__URL", &vhost.url)
        .env("TASKS__HTTP__LISTEN", listen.to_string())
        .env("TASKS__AUTH__JWT_SECRET", TEST_SECRET)
        .env("TASKS__SECRETS__KEY", TEST_SECRETS_KEY)
        .kill_on_drop(true);
    for (key, value) in settings {
        command.env(key, value);
    }
    command
}

/// A loopback address no process listens on now.
pub fn free_address() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// Sends SIGTERM to a child process.
pub fn terminate(child: &tokio::process::Child) {
    let pid = child.id().expect("the child is running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}");
}

/// Waits until `{base}/readyz` answers `status` (200 ready, 503 not ready); panics after 30 s.
pub async fn wait_for_readiness(http: &reqwest::Client, base: &str, status: u16) {
    for _ in 0..300 {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status().as_u16() == status
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{base}/readyz never answered {status}");
}
