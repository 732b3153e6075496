//! Fault injection: the real `scheduler` and `worker` binaries on a PostgreSQL and a RabbitMQ
//! of the suite's own, a load driver, a recorder of the side effects functions produce, and
//! an audit that compares what the service stored with what happened outside it.
//!
//! The function every scenario runs sleeps for a while (so tasks are in flight when a fault
//! hits), then reports `context.aws_request_id` (`<task id>-<attempt>`) to the [`Recorder`]
//! and returns it. Double execution is therefore seen from outside the service: two effects
//! for one task id are two attempts that both ran to the end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::private::{PrivatePostgres, PrivateRabbit};
use crate::{TEST_SECRET, TEST_SECRETS_KEY, TestDatabase, all_permissions, base64, token};

/// Statuses a task never leaves.
pub const TERMINAL: [&str; 4] = ["complete", "failed", "canceled", "retried"];

/// The error the sweeper gives a task whose worker died.
pub const ZOMBIE: &str = "zombieTaskCleaned";

/// The handler of every scenario: sleep `data.sleepMs`, record the attempt, return it.
const EFFECT_HANDLER: &str = r#"import os
import time
import urllib.request


def handle(event, context):
    data = event.get("data") or {}
    time.sleep(data.get("sleepMs", 0) / 1000.0)
    request = urllib.request.Request(
        os.environ["RECORDER_URL"], data=context.aws_request_id.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
    return {"effect": context.aws_request_id}
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A deterministic pseudo-random number for the `index`-th item (splitmix64), so a run can
/// be repeated exactly.
pub fn mix(index: u64) -> u64 {
    let mut z = index.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where the suite writes process logs and the figure lines: `target/faults/`.
pub fn output_directory() -> PathBuf {
    let binary = crate::binary("scheduler");
    let directory = binary
        .parent()
        .and_then(Path::parent)
        .expect("the target directory")
        .join("faults");
    std::fs::create_dir_all(&directory).expect("the faults output directory");
    directory
}

/// One PostgreSQL and one RabbitMQ of the suite's own, shared by the scenarios of a run.
pub struct Cluster {
    pub postgres: PrivatePostgres,
    pub rabbit: PrivateRabbit,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster {
            postgres: PrivatePostgres::start(),
            rabbit: PrivateRabbit::start(),
        }
    }

    /// A fresh database and virtual host for one scenario.
    pub fn environment(&self, scenario: &str) -> Environment {
        let database = TestDatabase::on(&self.postgres.server_url());
        let vhost = database.name.clone();
        self.rabbit.add_vhost(&vhost);
        let logs = output_directory().join("logs").join(scenario);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("the scenario's log directory");
        Environment {
            scenario: scenario.to_owned(),
            amqp_url: self.rabbit.vhost_url(&vhost),
            vhost,
            database,
            logs,
        }
    }

    /// Deletes the scenario's virtual host; its database goes when the value drops.
    pub fn release(&self, environment: Environment) {
        self.rabbit.delete_vhost(&environment.vhost);
    }
}

/// The database and virtual host of one scenario, and how to start processes on them.
pub struct Environment {
    pub scenario: String,
    pub database: TestDatabase,
    pub vhost: String,
    pub amqp_url: String,
    logs: PathBuf,
}

impl Environment {
    /// A scheduler binary on a port of its own that it keeps across restarts.
    pub fn scheduler(&self, name: &str) -> Process {
        let port = free_port();
        let settings = vec![
            ("TASKS__DATABASE__URL", self.database.url.clone()),
            ("TASKS__DATABASE__POOL_SIZE", "8".to_owned()),
            ("TASKS__AMQP__URL", self.amqp_url.clone()),
            ("TASKS__HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("TASKS__AUTH__JWT_SECRET", TEST_SECRET.to_owned()),
            ("TASKS__SECRETS__KEY", TEST_SECRETS_KEY.to_owned()),
            // Short enough that crash-cut tasks and lost messages settle within a scenario.
            ("TASKS__DISPATCH__SWEEP_INTERVAL_MS", "500".to_owned()),
            ("TASKS__DISPATCH__REDISPATCH_AFTER_MS", "5000".to_owned()),
            ("TASKS__LOG__LEVEL", "warn".to_owned()),
        ];
        self.process(name, "scheduler", port, settings)
    }

    /// A worker binary running `concurrency` tasks at once, with a short lease so the
    /// sweeper finds its tasks soon after it is killed.
    pub fn worker(&self, name: &str, concurrency: usize) -> Process {
        let port = free_port();
        let cache = std::env::temp_dir().join(format!("faults-{}-{name}", self.database.name));
        let settings = vec![
            ("TASKS__DATABASE__URL", self.database.url.clone()),
            ("TASKS__DATABASE__POOL_SIZE", "6".to_owned()),
            ("TASKS__AMQP__URL", self.amqp_url.clone()),
            ("TASKS__METRICS__LISTEN", format!("127.0.0.1:{port}")),
            ("TASKS__WORKER__CACHE_DIR", cache.display().to_string()),
            ("TASKS__WORKER__CONCURRENCY", concurrency.to_string()),
            ("TASKS__WORKER__LEASE_MS", "3000".to_owned()),
            ("TASKS__WORKER__DRAIN_GRACE_MS", "20000".to_owned()),
            ("TASKS__SECRETS__KEY", TEST_SECRETS_KEY.to_owned()),
            ("TASKS__LOG__LEVEL", "warn".to_owned()),
        ];
        self.process(name, "worker", port, settings)
    }

    fn process(
        &self,
        name: &str,
        binary: &str,
        port: u16,
        settings: Vec<(&str, String)>,
    ) -> Process {
        Process {
            name: name.to_owned(),
            program: crate::binary(binary),
            settings: settings
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
            port,
            log: self.logs.join(format!("{name}.log")),
            child: None,
        }
    }
}

/// A real binary as a child process, which the suite starts, kills and restarts. Its output
/// goes to `target/faults/logs/<scenario>/<name>.log`, appended across restarts.
pub struct Process {
    pub name: String,
    program: PathBuf,
    settings: Vec<(String, String)>,
    port: u16,
    log: PathBuf,
    child: Option<std::process::Child>,
}

impl Process {
    pub fn start(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the process log");
        let child = std::process::Command::new(&self.program)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.settings.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().expect("the process log"))
            .stderr(log)
            .spawn()
            .expect("the binary starts");
        self.child = Some(child);
    }

    /// `/healthz`, `/readyz` (and the API, for a scheduler) live here.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash or an out-of-memory kill would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit (a drain); `None` if it did not exit in two minutes.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill is a plain system call on the pid of a child we have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Whether the process is alive (it may have exited by itself, which it never should).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `{base}/readyz` answers 200.
pub async fn is_ready(http: &reqwest::Client, base: &str) -> bool {
    match http.get(format!("{base}/readyz")).send().await {
        Ok(response) => response.status().as_u16() == 200,
        Err(_) => false,
    }
}

/// Waits until every process answers `/readyz` 200; false if they did not within `timeout`.
pub async fn all_ready(http: &reqwest::Client, bases: &[String], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut ready = true;
        for base in bases {
            ready &= is_ready(http, base).await;
        }
        if ready {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP client of the API that spreads requests over every scheduler it knows.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    bases: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
}

impl Api {
    pub fn new(bases: Vec<String>) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token(&all_permissions()))
                .parse()
                .expect("header value"),
        );
        Api {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .timeout(Duration::from_secs(10))
                .pool_idle_timeout(crate::CLIENT_IDLE_TIMEOUT)
                .build()
                .expect("http client"),
            bases: Arc::new(bases),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// One POST to the next scheduler: its status and JSON body, or `None` if it did not
    /// answer (down, restarting, cut off).
    pub async fn post(&self, path: &str, body: &Value) -> Option<(u16, Value)> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
        let response = self
            .http
            .post(format!("{}/tasks/v1{path}", self.bases[index]))
            .json(body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Some((status, body))
    }

    /// POSTs until an answer 200 (a dependency may be down for a while); `None` after
    /// `patience`.
    pub async fn post_until_ok(
        &self,
        path: &str,
        body: &Value,
        patience: Duration,
    ) -> Option<Value> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some((200, answer)) = self.post(path, body).await {
                return Some(answer);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    pub async fn delete(&self, path: &str) -> bool {
        let base = &self.bases[0];
        self.http
            .delete(format!("{base}/tasks/v1{path}"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    }

    /// Creates the scenario function, retrying its zombies when `retry_zombies`.
    pub async fn create_effect_function(&self, name: &str, recorder: &str, retry_zombies: bool) {
        let code = base64(&crate::zip_files(&[("handler.py", EFFECT_HANDLER)]));
        let body = json!({
            "name": name,
            "runtime": "python3.11",
            "entryPoint": "handler.handle",
            "code": code,
            "timeLimit": 60,
            "environmentVariables": {"RECORDER_URL": {"value": recorder}},
            "retryPolicy": {"enabled": retry_zombies, "errorsToRetry": [ZOMBIE]},
        });
        let created = self
            .post_until_ok("/functions", &body, Duration::from_secs(30))
            .await;
        assert!(created.is_some(), "the function {name} was created");
    }
}

/// A tiny HTTP server recording every side effect functions report: the body of each POST
/// (an `aws_request_id`), with when it arrived. It runs on a host of its own, as the third
/// party a function calls would (functions cannot reach this machine's loopback).
pub struct Recorder {
    pub url: String,
    effects: Arc<Mutex<Vec<(String, Instant)>>>,
    _host: crate::test_host::TestHost,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let host = crate::test_host::TestHost::create(&[]);
        let listener = host.listen(80);
        listener.set_nonblocking(true).expect("nonblocking");
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("the recorder's listener");
        let address = listener.local_addr().expect("recorder address");
        let address = std::net::SocketAddr::from((host.address, address.port()));
        let effects = Arc::new(Mutex::new(Vec::new()));
        let recorded = effects.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(record(socket, recorded.clone()));
            }
        });
        Recorder {
            url: format!("http://{address}/effects"),
            effects,
            _host: host,
        }
    }

    /// Every effect so far: request id and arrival.
    pub fn effects(&self) -> Vec<(String, Instant)> {
        self.effects.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Whether an effect arrived after `instant`.
    pub fn any_after(&self, instant: Instant) -> bool {
        self.effects
            .lock()
            .map(|e| e.iter().rev().any(|(_, at)| *at > instant))
            .unwrap_or(false)
    }
}

/// Reads one request (head, then `content-length` bytes of body), records the body and
/// answers 200. The effect counts only once fully read, before the function hears back.
async fn record(mut socket: tokio::net::TcpStream, effects: Arc<Mutex<Vec<(String, Instant)>>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let body = loop {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        if let Some(body) = complete_body(&buffer) {
            break body;
        }
        if buffer.len() > 64 * 1024 {
            return;
        }
    };
    if let Ok(mut effects) = effects.lock() {
        effects.push((body, Instant::now()));
    }
    let _ = socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .await;
}

/// The body of a request once it is complete in `buffer`.
fn complete_body(buffer: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(buffer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (body.len() >= length).then(|| body[..length].to_owned())
}

/// The tasks a scenario creates through the API while faults are injected.
#[derive(Clone)]
pub struct LoadPlan {
    pub tasks: usize,
    /// Creates are spread evenly over this long.
    pub over: Duration,
    /// A third of the tasks start up to this long after they were created.
    pub later: Duration,
    /// Each task sleeps up to this long before its effect.
    pub max_sleep_ms: u64,
    /// Functions the tasks are spread over, in turn.
    pub functions: Vec<String>,
}

impl LoadPlan {
    /// The body creating the `index`-th task: mixed priorities and start times.
    fn body(&self, index: usize) -> Value {
        let random = mix(index as u64);
        let mut body = json!({
            "functionName": self.functions[index % self.functions.len()],
            "data": {"sleepMs": random % (self.max_sleep_ms + 1), "job": index},
            "priority": (random >> 16) % 10,
        });
        if (random >> 24).is_multiple_of(3) && !self.later.is_zero() {
            let delay = (random >> 32) % (self.later.as_millis() as u64).max(1);
            let start = chrono::Utc::now() + chrono::Duration::milliseconds(delay as i64);
            body["startTimestamp"] = json!(common::time::format(&start));
        }
        body
    }
}

/// Creates the plan's tasks from several concurrent clients, each retrying a create until it
/// is answered 200 (a scheduler or a dependency may be down). Returns the ids of the tasks
/// the API confirmed: the submitted ones.
pub async fn drive_load(api: Api, plan: LoadPlan) -> Vec<String> {
    const CLIENTS: usize = 8;
    let start = tokio::time::Instant::now();
    let plan = Arc::new(plan);
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (api, plan) = (api.clone(), plan.clone());
        clients.spawn(async move {
            let mut ids = Vec::new();
            for index in (client..plan.tasks).step_by(CLIENTS) {
                let due = start + plan.over.mul_f64(index as f64 / plan.tasks as f64);
                tokio::time::sleep_until(due).await;
                let created = api
                    .post_until_ok("/", &plan.body(index), Duration::from_secs(120))
                    .await;
                if let Some(id) = created.as_ref().and_then(|task| task["id"].as_str()) {
                    ids.push(id.to_owned());
                }
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(created) = clients.join_next().await {
        ids.extend(created.unwrap_or_default());
    }
    ids
}

/// The longest time, over a scenario's faults, from the end of a fault until every process
/// is ready again and a new side effect was recorded.
#[derive(Default)]
pub struct Recovery {
    pub worst: Duration,
    /// Faults after which a process never reported ready again.
    pub unrecovered: Vec<String>,
}

impl Recovery {
    /// Waits for the recovery from a fault that ended at `ended`.
    pub async fn measure(
        &mut self,
        fault: &str,
        ended: Instant,
        http: &reqwest::Client,
        processes: &[String],
        recorder: &Recorder,
    ) {
        if !all_ready(http, processes, Duration::from_secs(90)).await {
            self.unrecovered.push(fault.to_owned());
            return;
        }
        let ready = ended.elapsed();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !recorder.any_after(ended) {
            if Instant::now() > deadline {
                // The work ran out: readiness is the recovery.
                self.worst = self.worst.max(ready);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.worst = self.worst.max(ended.elapsed());
    }
}

/// What a scenario must find: which errors crash-cut tasks may end with, and how many
/// messages it dead-lettered on purpose.
pub struct Expectations {
    pub allowed_errors: Vec<&'static str>,
    pub dead_letters: u64,
}

/// One scenario's outcome, printed as its figure line.
#[derive(Debug, Default)]
pub struct Figure {
    pub scenario: String,
    /// Creates the API answered 200.
    pub submitted: usize,
    /// Every task in the database: submitted ones, retries, schedule and event tasks.
    pub tasks: usize,
    pub completed: usize,
    pub failed: BTreeMap<String, usize>,
    pub retried: BTreeMap<String, usize>,
    pub canceled: usize,
    /// Not terminal after the settle time, or confirmed by the API and not stored, or
    /// `retried` without a retry task.
    pub lost: usize,
    /// Task ids with more than one recorded side effect.
    pub double: usize,
    /// `complete` tasks whose result names no recorded side effect.
    pub unbacked: usize,
    /// `failed` or `retried` tasks whose last attempt ran to its side effect: the function
    /// finished, the service recorded a failure (a crash between the two does that).
    pub discarded: usize,
    pub dead_lettered: u64,
    pub dead_letters_expected: u64,
    pub recovery: Duration,
    pub unrecovered: Vec<String>,
    /// Examples of what went wrong, for the failure message.
    pub examples: Vec<String>,
}

impl Figure {
    pub fn line(&self) -> String {
        let failed: usize = self.failed.values().sum();
        let retried: usize = self.retried.values().sum();
        format!(
            "faults {}: submitted={} tasks={} completed={} failed={} {} retried={} {} canceled={} lost={} double={} unbacked={} discarded={} dead-lettered={}/{} recovery={}ms",
            self.scenario,
            self.submitted,
            self.tasks,
            self.completed,
            failed,
            by_name(&self.failed),
            retried,
            by_name(&self.retried),
            self.canceled,
            self.lost,
            self.double,
            self.unbacked,
            self.discarded,
            self.dead_lettered,
            self.dead_letters_expected,
            self.recovery.as_millis()
        )
    }

    /// What breaks the scenario's guarantees; empty when it passed.
    pub fn violations(&self, expected: &Expectations) -> Vec<String> {
        let mut violations = Vec::new();
        for (what, count) in [
            ("lost", self.lost),
            ("double", self.double),
            ("unbacked", self.unbacked),
        ] {
            if count > 0 {
                violations.push(format!("{}: {what}={count}", self.scenario));
            }
        }
        for name in self.failed.keys().chain(self.retried.keys()) {
            if !expected.allowed_errors.contains(&name.as_str()) {
                violations.push(format!("{}: a task ended with error {name}", self.scenario));
            }
        }
        if self.dead_lettered != expected.dead_letters {
            violations.push(format!(
                "{}: dead-lettered {} of {} messages",
                self.scenario, self.dead_lettered, expected.dead_letters
            ));
        }
        for fault in &self.unrecovered {
            violations.push(format!("{}: no recovery after {fault}", self.scenario));
        }
        if !violations.is_empty() {
            violations.extend(self.examples.iter().map(|e| format!("  {e}")));
        }
        violations
    }
}

fn by_name(counts: &BTreeMap<String, usize>) -> String {
    let inner: Vec<String> = counts.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// Waits until no task is left in a non-terminal state, or `timeout`; returns how many are.
pub async fn settle(database: &tokio_postgres::Client, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let unsettled = database
            .query_one(
                "SELECT count(*) FROM tasks WHERE status <> ALL($1)",
                &[&TERMINAL.to_vec()],
            )
            .await
            .map(|row| row.get::<_, i64>(0))
            .unwrap_or(i64::MAX);
        if unsettled == 0 || Instant::now() > deadline {
            return unsettled;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A stored task, as far as the audit cares.
struct Stored {
    status: String,
    attempt: i32,
    error: Option<String>,
    effect: Option<String>,
    retried_by: Option<String>,
}

async fn stored_tasks(database: &tokio_postgres::Client) -> HashMap<String, Stored> {
    database
        .query(
            "SELECT id, status, attempt, error->>'name', result->>'effect', retried_by_task_id \
             FROM tasks",
            &[],
        )
        .await
        .expect("read the tasks")
        .iter()
        .map(|row| {
            let stored = Stored {
                status: row.get(1),
                attempt: row.get(2),
                error: row.get(3),
                effect: row.get(4),
                retried_by: row.get(5),
            };
            (row.get(0), stored)
        })
        .collect()
}

/// Reads the final states after the settle time and compares them with the side effects.
pub async fn audit(
    scenario: &str,
    database: &tokio_postgres::Client,
    recorder: &Recorder,
    submitted: &[String],
    settle_for: Duration,
) -> Figure {
    settle(database, settle_for).await;
    let tasks = stored_tasks(database).await;
    let mut figure = Figure {
        scenario: scenario.to_owned(),
        submitted: submitted.len(),
        tasks: tasks.len(),
        ..Figure::default()
    };
    count_statuses(&mut figure, &tasks);
    for id in submitted {
        if !tasks.contains_key(id) {
            figure.lost += 1;
            figure
                .examples
                .push(format!("{id}: confirmed by the API, not stored"));
        }
    }
    check_effects(&mut figure, &tasks, &recorder.effects());
    figure.examples.truncate(20);
    figure
}

fn count_statuses(figure: &mut Figure, tasks: &HashMap<String, Stored>) {
    for (id, task) in tasks {
        let error = task.error.clone().unwrap_or_default();
        match task.status.as_str() {
            "complete" => figure.completed += 1,
            "failed" => *figure.failed.entry(error).or_default() += 1,
            "canceled" => figure.canceled += 1,
            "retried" => {
                *figure.retried.entry(error).or_default() += 1;
                if !task
                    .retried_by
                    .as_ref()
                    .is_some_and(|r| tasks.contains_key(r))
                {
                    figure.lost += 1;
                    figure
                        .examples
                        .push(format!("{id}: retried without a retry task"));
                }
            }
            status => {
                figure.lost += 1;
                figure
                    .examples
                    .push(format!("{id}: still {status} (attempt {})", task.attempt));
            }
        }
    }
}

fn check_effects(
    figure: &mut Figure,
    tasks: &HashMap<String, Stored>,
    effects: &[(String, Instant)],
) {
    let mut per_task: HashMap<&str, Vec<&str>> = HashMap::new();
    for (request_id, _) in effects {
        let task_id = request_id
            .rsplit_once('-')
            .map_or(request_id.as_str(), |(t, _)| t);
        per_task.entry(task_id).or_default().push(request_id);
    }
    for (task_id, attempts) in &per_task {
        if attempts.len() > 1 {
            figure.double += 1;
            figure
                .examples
                .push(format!("{task_id}: effects {attempts:?}"));
        }
    }
    let recorded: HashSet<&str> = effects.iter().map(|(id, _)| id.as_str()).collect();
    for (id, task) in tasks {
        let backed = task.effect.as_deref().is_some_and(|e| recorded.contains(e));
        if task.status == "complete" && !backed {
            figure.unbacked += 1;
            figure
                .examples
                .push(format!("{id}: complete without its effect"));
        }
        let last_attempt = format!("{id}-{}", task.attempt);
        if matches!(task.status.as_str(), "failed" | "retried")
            && recorded.contains(last_attempt.as_str())
        {
            figure.discarded += 1;
        }
    }
}

/// Whether this is the long run (`FAULTS_SOAK=1`).
pub fn soak() -> bool {
    std::env::var("FAULTS_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Prints the figure line and appends it to `target/faults/figures.txt`, so a soak run
/// leaves a record.
pub fn report(figure: &Figure) {
    let line = figure.line();
    println!("{line}");
    let mode = if soak() { "soak" } else { "ci" };
    let stamp = common::time::format(&chrono::Utc::now());
    if let Ok(mut file) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(output_directory().join("figures.txt"))
    {
        use std::io::Write;
        let _ = writeln!(file, "{stamp} {mode} {line}");
    }
}
