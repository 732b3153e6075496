//! The services under test: a real scheduler and worker started in-process (their startup
//! functions, as the binaries call them), the HTTP helpers to drive them, and the real binaries
//! as child processes for tests that need a process of their own. `TEST_LOG` shows their logs.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::{TEST_SECRET, TEST_SECRETS_KEY, all_permissions, authorized_client, token};
use crate::broker::TestVhost;
use crate::database::TestDatabase;

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
        show_logs_if_asked();
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
        show_logs_if_asked();
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
        .env(
            "TASKS__LOG__LEVEL",
            test_log_level().unwrap_or_else(|| "warn".to_owned()),
        )
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
    if let Some(level) = test_log_level() {
        command.env("TASKS__LOG__LEVEL", level);
    }
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

/// With `TEST_LOG` set (to a level or filter such as `debug` or `scheduler=trace`; `1` means
/// `info`), the in-process services log to the test's output, as the binaries would to theirs;
/// without it they stay quiet. The binaries a test starts log at `TEST_LOG`'s level too.
fn show_logs_if_asked() {
    if let Some(level) = test_log_level() {
        common::telemetry::init(&common::config::LogConfig {
            level,
            ..Default::default()
        });
    }
}

fn test_log_level() -> Option<String> {
    let level = std::env::var("TEST_LOG")
        .ok()
        .filter(|level| !level.is_empty())?;
    Some(if level == "1" {
        "info".to_owned()
    } else {
        level
    })
}
