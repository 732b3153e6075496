//! Load generator: drives a running system through its public interfaces (HTTP API, and
//! Postgres for the timestamps the service records) and prints a table and a JSON summary.
//!
//! ```text
//! loadgen lag     [--count 400] [--rate 200]   dispatch lag: claim time − startTimestamp
//! loadgen latency [--count 200]                one task at a time: create → result visible
//! loadgen cold    [--count 5]                  first invocation of a new version vs. warm
//! loadgen direct  [--count 500] [--clients 1]   direct executions and API calls (sequential,
//!                                              or from N concurrent clients)
//! loadgen throughput [--count 5000] [--clients 16]  tasks created through the API by N
//!                                              clients, then through platform events
//! loadgen burst   [--count 500]                that many tasks due at the same instant
//! loadgen memory  [--count 2000]               RSS of scheduler, workers and runtime
//!                                              processes, idle and under load
//! loadgen summary <results.txt>…               median and range of each figure over runs
//! ```
//! Options: `--api http://127.0.0.1:8080` `--database postgres://postgres@127.0.0.1:5432/tasks`
//! `--amqp amqp://guest:guest@127.0.0.1:5672/%2f` (events).
//! Credentials: the bearer token in `TASKS_TOKEN`, or one minted with the scheduler's secret
//! from `TASKS__AUTH__JWT_SECRET` (as `scheduler token` does).

mod summary;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

struct Options {
    scenario: String,
    api: String,
    database: String,
    amqp: String,
    count: usize,
    rate: f64,
    clients: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut arguments = std::env::args().skip(1);
    let scenario = arguments
        .next()
        .context("usage: loadgen <lag|latency|cold> [options]")?;
    let mut options = Options {
        count: match scenario.as_str() {
            "lag" => 400,
            "latency" => 200,
            "direct" => 500,
            "throughput" => 5000,
            "burst" => 500,
            "memory" => 2000,
            _ => 5,
        },
        scenario,
        api: "http://127.0.0.1:8080".into(),
        database: "postgres://postgres@127.0.0.1:5432/tasks".into(),
        amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        rate: 200.0,
        clients: 0,
    };
    while let Some(flag) = arguments.next() {
        let value = arguments
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--api" => options.api = value,
            "--database" => options.database = value,
            "--count" => options.count = value.parse()?,
            "--rate" => options.rate = value.parse()?,
            "--amqp" => options.amqp = value,
            "--clients" => options.clients = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(options)
}

struct Client {
    http: reqwest::Client,
    api: String,
    db: tokio_postgres::Client,
}

impl Client {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}/tasks/v1{path}", self.api))
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {body}");
        }
        Ok(body)
    }

    /// A fresh python no-op function; returns its name.
    async fn noop_function(&self) -> anyhow::Result<String> {
        let name = format!("loadgen-noop-{}", common::id::ObjectId::generate());
        self.post(
            "/functions",
            &json!({
                "name": name, "runtime": "python3.11", "entryPoint": "handler.handle",
                "code": harness::function_code("noop"),
            }),
        )
        .await?;
        Ok(name)
    }

    async fn wait_all_finished(
        &self,
        function: &str,
        count: i64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        // Figures come from the stored timestamps, not from when this poll noticed; polling
        // a large run less often keeps this count's own cost out of the system measured.
        let poll = if count < 100 {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(250)
        };
        loop {
            let row = self
                .db
                .query_one(
                    "SELECT count(*) FROM tasks WHERE function_name = $1 AND status IN ('complete', 'failed')",
                    &[&function],
                )
                .await?;
            if row.get::<_, i64>(0) >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("tasks of {function} did not finish within {timeout:?}");
            }
            tokio::time::sleep(poll).await;
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(name: &str, values: &mut [f64]) -> Value {
    values.sort_by(|a, b| a.total_cmp(b));
    let row = json!({
        "figure": name,
        "samples": values.len(),
        "p50_ms": percentile(values, 50.0),
        "p99_ms": percentile(values, 99.0),
        "max_ms": values.last().copied().unwrap_or(f64::NAN),
    });
    println!(
        "{:<44} {:>7} {:>10.2} {:>10.2} {:>10.2}",
        name,
        values.len(),
        percentile(values, 50.0),
        percentile(values, 99.0),
        values.last().copied().unwrap_or(f64::NAN)
    );
    row
}

fn bearer_token() -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("TASKS_TOKEN") {
        return Ok(token);
    }
    let auth = scheduler::api::auth::AuthConfig {
        jwt_secret: std::env::var("TASKS__AUTH__JWT_SECRET").ok(),
        ..Default::default()
    };
    scheduler::api::auth::token::command(&auth, &[])
        .map_err(|e| anyhow::anyhow!("{e} (or set TASKS_TOKEN)"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if arguments.first().map(String::as_str) == Some("summary") {
        return summary::print(&arguments[1..]);
    }
    let options = options()?;
    let (db, connection) = tokio_postgres::connect(&options.database, tokio_postgres::NoTls)
        .await
        .context("connecting to the service's database")?;
    tokio::spawn(connection);
    let client = Client {
        http: harness::authorized_client(&bearer_token()?),
        api: options.api.clone(),
        db,
    };
    let environment = environment(&client, &options).await;
    println!("loadgen {} — {environment}", options.scenario);
    println!(
        "{:<44} {:>7} {:>10} {:>10} {:>10}",
        "figure", "n", "p50 ms", "p99 ms", "max ms"
    );
    let results = match options.scenario.as_str() {
        "lag" => lag(&client, &options).await?,
        "latency" => latency(&client, &options).await?,
        "cold" => cold(&client, &options).await?,
        "direct" => direct(&client, &options).await?,
        "throughput" => throughput(&client, &options).await?,
        "burst" => burst(&client, &options).await?,
        "memory" => memory(&client, &options).await?,
        other => bail!("unknown scenario {other}"),
    };
    println!(
        "{}",
        json!({"scenario": options.scenario, "environment": environment, "results": results})
    );
    Ok(())
}

/// The versions and settings the figures were taken with.
async fn environment(client: &Client, options: &Options) -> Value {
    let postgres: String = match client.db.query_one("SHOW server_version", &[]).await {
        Ok(row) => row.get(0),
        Err(_) => "unknown".into(),
    };
    let rabbitmq = std::process::Command::new("rabbitmqctl")
        .arg("version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into());
    json!({
        "service": env!("CARGO_PKG_VERSION"),
        "date": chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "postgres": postgres,
        "rabbitmq": rabbitmq,
        "api": options.api,
        "count": options.count,
        "rate": options.rate,
        "clients": options.clients,
    })
}

/// Tasks due at a steady rate: how late does each start?
async fn lag(client: &Client, options: &Options) -> anyhow::Result<Vec<Value>> {
    let timeout = Duration::from_secs(60 + options.count as u64);
    let spacing = Duration::from_secs_f64(1.0 / options.rate);
    let mut lags = start_lags(
        client,
        options.count,
        Duration::from_secs(3),
        spacing,
        timeout,
    )
    .await?;
    Ok(vec![summary(
        &format!("dispatch lag at {} tasks/s", options.rate),
        &mut lags,
    )])
}

/// Creates `count` tasks of a warm no-op function, the first due `lead` after the runtimes
/// are warm and each next one `spacing` later, waits until all have run, and returns how late
/// each started (claim − `startTimestamp`, ms). `lead` must leave time to create them all.
async fn start_lags(
    client: &Client,
    count: usize,
    lead: Duration,
    spacing: Duration,
    timeout: Duration,
) -> anyhow::Result<Vec<f64>> {
    let function = client.noop_function().await?;
    // Warm the runtimes first (tasks overlap, so more than one process runs) so the figure
    // is about dispatch, not cold starts.
    client.warm(&function, 16).await?;
    // Stored creation times are truncated to milliseconds.
    let since = common::time::now();
    let first = chrono::Utc::now() + lead;
    for i in 0..count {
        let start = first + spacing * i as u32;
        client
            .post(
                "/",
                &json!({"functionName": function, "startTimestamp": common::time::format(&start)}),
            )
            .await?;
    }
    client
        .wait_all_finished(&function, count as i64 + 16, timeout)
        .await?;
    client
        .millis_since(&function, since, "claimed_at - start_timestamp")
        .await
}

/// One task at a time on an idle system: from the create request to the result in Postgres.
async fn latency(client: &Client, options: &Options) -> anyhow::Result<Vec<Value>> {
    let function = client.noop_function().await?;
    let mut samples = Vec::new();
    for i in 0..=options.count {
        let started = Instant::now();
        let task = client.post("/", &json!({"functionName": function})).await?;
        let id = task["id"].as_str().context("task id")?.to_owned();
        loop {
            let row = client
                .db
                .query_one("SELECT status FROM tasks WHERE id = $1", &[&id])
                .await?;
            if row.get::<_, String>(0) == "complete" {
                break;
            }
            // Tokio's timers sleep whole milliseconds, which would add up to one to the
            // figure; a thread sleeps 200 µs.
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_micros(200))).await?;
        }
        if i > 0 {
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(vec![summary(
        "create → result visible (warm, sequential)",
        &mut samples,
    )])
}

/// Sequential direct executions and API-function calls of a warm python no-op, as a client
/// sees them (request sent → response read).
async fn direct(client: &Client, options: &Options) -> anyhow::Result<Vec<Value>> {
    let function = client.noop_function().await?;
    let api_function = format!("loadgen-api-{}", common::id::ObjectId::generate());
    let api_code = harness::base64(&harness::zip_files(&[(
        "app.py",
        "def handle(event, context):\n    return {\"statusCode\": 200, \"body\": {\"ok\": True}}\n",
    )]));
    client
        .post("/functions", &json!({"name": api_function, "runtime": "python3.11", "entryPoint": "app.handle", "code": api_code}))
        .await?;
    let mut executions = Vec::new();
    let mut calls = Vec::new();
    for i in 0..=options.count {
        let started = Instant::now();
        client
            .post(
                &format!("/functions/{function}/execute"),
                &json!({"data": {}}),
            )
            .await?;
        let execution = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let response = client
            .http
            .get(format!("{}/tasks/v1/api/{api_function}/ping", client.api))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("API call: {}", response.status());
        }
        response.bytes().await?;
        let call = started.elapsed().as_secs_f64() * 1000.0;
        // The first of each warms the runtime process.
        if i > 0 {
            executions.push(execution);
            calls.push(call);
        }
    }
    let mut results = vec![
        summary("direct execution, warm python no-op", &mut executions),
        summary("API function call, warm python no-op", &mut calls),
    ];
    if options.clients > 1 {
        for (what, path, method) in [
            (
                "direct execution",
                format!("/tasks/v1/functions/{function}/execute"),
                reqwest::Method::POST,
            ),
            (
                "API function call",
                format!("/tasks/v1/api/{api_function}/ping"),
                reqwest::Method::GET,
            ),
        ] {
            // Unmeasured calls first, ten per client, so that as many runtime processes run
            // as the measured calls keep busy. One round was not enough: a call that ended
            // early let its process serve another client's first call, and the measured
            // calls then paid for the process starts (p99 of 100-300 ms in some runs).
            concurrent_calls(
                client,
                method.clone(),
                &path,
                options.clients * 10,
                options.clients,
            )
            .await?;
            let started = Instant::now();
            let mut latencies =
                concurrent_calls(client, method, &path, options.count, options.clients).await?;
            let seconds = started.elapsed().as_secs_f64();
            let name = format!("{what}, {} concurrent clients", options.clients);
            results.push(summary(&name, &mut latencies));
            results.push(rate_row(
                &format!("  {what} requests/s"),
                latencies.len(),
                seconds,
            ));
        }
    }
    Ok(results)
}

/// `count` calls spread over `clients` concurrent clients; each call's latency in ms.
async fn concurrent_calls(
    client: &Client,
    method: reqwest::Method,
    path: &str,
    count: usize,
    clients: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..clients {
        let http = client.http.clone();
        let url = format!("{}{path}", client.api);
        let method = method.clone();
        let share = count / clients + usize::from(c < count % clients);
        callers.spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let started = Instant::now();
                let response = http
                    .request(method.clone(), &url)
                    .json(&json!({"data": {}}))
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("{url}: {}", response.status());
                }
                response.bytes().await?;
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = callers.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// The first invocation of each new function version, against warm ones.
async fn cold(client: &Client, options: &Options) -> anyhow::Result<Vec<Value>> {
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for runtime in [
        ("python3.11", "noop", "handler.handle"),
        ("nodejs20.x", "node-noop", "index.handler"),
    ] {
        let name = format!("loadgen-cold-{}", common::id::ObjectId::generate());
        client
            .post("/functions", &json!({"name": name, "runtime": runtime.0, "entryPoint": runtime.2, "code": harness::function_code(runtime.1)}))
            .await?;
        let mut cold_runtime = Vec::new();
        let mut warm_runtime = Vec::new();
        let mut created = 0;
        for version in 0..options.count {
            // A configuration change is a new version: its first invocation starts a process.
            let response = client
                .http
                .put(format!("{}/tasks/v1/functions/{name}", client.api))
                .json(&json!({"description": format!("version {version}")}))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("updating {name}: {}", response.status());
            }
            for _ in 0..4 {
                client.post("/", &json!({"functionName": name})).await?;
                created += 1;
                client
                    .wait_all_finished(&name, created, Duration::from_secs(30))
                    .await?;
            }
            let rows = client
                .db
                .query(
                    "SELECT (extract(epoch FROM status_changed_timestamp - claimed_at) * 1000)::float8 \
                     FROM tasks WHERE function_name = $1 ORDER BY creation_timestamp DESC LIMIT 4",
                    &[&name],
                )
                .await?;
            let mut times: Vec<f64> = rows.iter().map(|r| r.get(0)).collect();
            times.reverse();
            cold_runtime.push(times[0]);
            warm_runtime.extend_from_slice(&times[1..]);
        }
        cold.push(summary(
            &format!("cold start, {} (claim → complete)", runtime.0),
            &mut cold_runtime,
        ));
        warm.push(summary(
            &format!("warm invocation, {} (claim → complete)", runtime.0),
            &mut warm_runtime,
        ));
    }
    cold.extend(warm);
    Ok(cold)
}

/// Creates `count` tasks of `function` from `clients` concurrent HTTP clients.
async fn create_concurrently(
    client: &Client,
    function: &str,
    count: usize,
    clients: usize,
) -> anyhow::Result<()> {
    let mut workers = tokio::task::JoinSet::new();
    for c in 0..clients {
        let http = client.http.clone();
        let url = format!("{}/tasks/v1/", client.api);
        let function = function.to_owned();
        let share = count / clients + usize::from(c < count % clients);
        workers.spawn(async move {
            for i in 0..share {
                let body = json!({"functionName": function, "priority": i % 10});
                let response = http.post(&url).json(&body).send().await?;
                if !response.status().is_success() {
                    bail!("creating a task: {}", response.status());
                }
                response.bytes().await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

impl Client {
    /// Seconds from the first task's creation to the last one's completion, and each task's
    /// create → complete time, over the tasks of `function` created since `since`.
    async fn end_to_end(
        &self,
        function: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<(f64, Vec<f64>)> {
        let span: f64 = self
            .db
            .query_one(
                "SELECT extract(epoch FROM max(status_changed_timestamp) - min(creation_timestamp))::float8 \
                 FROM tasks WHERE function_name = $1 AND creation_timestamp >= $2",
                &[&function, &since],
            )
            .await?
            .get(0);
        let latencies = self
            .millis_since(
                function,
                since,
                "status_changed_timestamp - creation_timestamp",
            )
            .await?;
        Ok((span, latencies))
    }

    /// Milliseconds of `interval` (an expression over a task's timestamps) for each task of
    /// `function` created since `since` (the warm-up tasks before it are left out).
    async fn millis_since(
        &self,
        function: &str,
        since: chrono::DateTime<chrono::Utc>,
        interval: &str,
    ) -> anyhow::Result<Vec<f64>> {
        let sql = format!(
            "SELECT (extract(epoch FROM {interval}) * 1000)::float8 \
             FROM tasks WHERE function_name = $1 AND creation_timestamp >= $2"
        );
        Ok(self
            .db
            .query(&sql, &[&function, &since])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn warm(&self, function: &str, processes: usize) -> anyhow::Result<()> {
        for _ in 0..processes {
            self.post("/", &json!({"functionName": function})).await?;
        }
        self.wait_all_finished(function, processes as i64, Duration::from_secs(60))
            .await
    }
}

fn rate_row(name: &str, count: usize, seconds: f64) -> Value {
    let rate = count as f64 / seconds;
    println!("{name:<44} {count:>7} {rate:>10.0} tasks/s over {seconds:.2} s");
    json!({"figure": name, "tasks": count, "seconds": seconds, "tasks_per_second": rate})
}

/// End-to-end throughput of a warm python no-op: tasks created through the API by concurrent
/// clients, then tasks created by platform events through a trigger.
async fn throughput(client: &Client, options: &Options) -> anyhow::Result<Vec<Value>> {
    let clients = options.clients.max(1);
    let clients = if options.clients == 0 { 16 } else { clients };
    let timeout = Duration::from_secs(120 + options.count as u64 / 10);
    let mut results = Vec::new();

    let function = client.noop_function().await?;
    client.warm(&function, 16).await?;
    // Stored creation times are truncated to milliseconds.
    let since = common::time::now();
    let cpu = cpu_by_role();
    create_concurrently(client, &function, options.count, clients).await?;
    client
        .wait_all_finished(&function, options.count as i64 + 16, timeout)
        .await?;
    let cpu_after = cpu_by_role();
    let (seconds, mut latencies) = client.end_to_end(&function, since).await?;
    results.extend(phase_rows(
        &format!("throughput, API-created ({clients} clients)"),
        options.count,
        seconds,
        (&cpu, cpu_after),
        &mut latencies,
    ));

    let function = client.noop_function().await?;
    client.warm(&function, 16).await?;
    let event_type = format!("loadgen.{}", common::id::ObjectId::generate());
    client
        .post(
            "/triggers",
            &json!({"eventType": event_type, "functionName": function}),
        )
        .await?;
    let connection =
        lapin::Connection::connect(&options.amqp, lapin::ConnectionProperties::default())
            .await
            .context("connecting to RabbitMQ (--amqp)")?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    // Stored creation times are truncated to milliseconds.
    let since = common::time::now();
    let cpu = cpu_by_role();
    let mut confirms = Vec::with_capacity(options.count);
    for i in 0..options.count {
        let body =
            json!({"id": format!("{event_type}-{i}"), "type": event_type, "content": {"n": i}});
        confirms.push(
            channel
                .basic_publish(
                    common::broker::EVENTS_EXCHANGE.into(),
                    event_type.as_str().into(),
                    lapin::options::BasicPublishOptions::default(),
                    body.to_string().as_bytes(),
                    common::broker::persistent_json(),
                )
                .await?,
        );
    }
    for confirm in confirms {
        confirm.await?;
    }
    client
        .wait_all_finished(&function, options.count as i64 + 16, timeout)
        .await?;
    let cpu_after = cpu_by_role();
    let (_, mut latencies) = client.end_to_end(&function, since).await?;
    let seconds: f64 = client
        .db
        .query_one(
            "SELECT extract(epoch FROM max(status_changed_timestamp) - $2::timestamptz)::float8 \
             FROM tasks WHERE function_name = $1 AND creation_timestamp >= $2",
            &[&function, &since],
        )
        .await?
        .get(0);
    results.extend(phase_rows(
        "throughput, event-created (first publish → last complete)",
        options.count,
        seconds,
        (&cpu, cpu_after),
        &mut latencies,
    ));
    Ok(results)
}

/// The figures of one throughput phase: its rate, the CPU per task of each kind of process
/// between the two readings, and the end-to-end latencies under that load.
fn phase_rows(
    name: &str,
    count: usize,
    seconds: f64,
    (cpu_before, cpu_after): (&BTreeMap<String, f64>, BTreeMap<String, f64>),
    latencies: &mut [f64],
) -> Vec<Value> {
    let mut rows = vec![rate_row(name, count, seconds)];
    rows.extend(cpu_rows(cpu_before, cpu_after, count));
    rows.push(summary("  create → complete under that load", latencies));
    rows
}

/// `count` tasks all due at the same instant: how late does each start?
async fn burst(client: &Client, options: &Options) -> anyhow::Result<Vec<Value>> {
    let (lead, timeout) = (Duration::from_secs(5), Duration::from_secs(120));
    let mut lags = start_lags(client, options.count, lead, Duration::ZERO, timeout).await?;
    Ok(vec![summary(
        &format!("burst: {} tasks due at once, lag", options.count),
        &mut lags,
    )])
}

/// A process on this machine: its name, pid and parent's pid, and its `/proc/<pid>/status`.
struct Process {
    name: String,
    pid: u32,
    parent: u32,
    status: String,
}

fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            Some(Process {
                name: field("Name:"),
                parent: field("PPid:").parse().unwrap_or(0),
                pid,
                status,
            })
        })
        .collect()
}

/// What a process is to the service: `scheduler`, `worker`, or `runtime (<name>)` for a
/// worker's function process.
fn service_role(process: &Process, workers: &[u32]) -> Option<String> {
    match process.name.as_str() {
        "scheduler" | "worker" => Some(process.name.clone()),
        // A worker's short-lived helper children are threads' names, not runtimes.
        name if workers.contains(&process.parent) && !name.starts_with("tokio") => {
            Some(format!("runtime ({name})"))
        }
        _ => None,
    }
}

fn worker_pids(processes: &[Process]) -> Vec<u32> {
    processes
        .iter()
        .filter(|p| p.name == "worker")
        .map(|p| p.pid)
        .collect()
}

/// Resident memory (kB) of the service's processes on this machine, by role.
fn resident_memory() -> Vec<(String, u32, u64)> {
    let processes = processes();
    let workers = worker_pids(&processes);
    processes
        .iter()
        .filter_map(|process| {
            let role = service_role(process, &workers)?;
            let rss = process
                .status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                .unwrap_or(0);
            Some((role, process.pid, rss))
        })
        .collect()
}

/// CPU seconds used so far by everything a task passes through on this machine, by role:
/// the service's processes, Postgres and RabbitMQ. Each process counts with its exited
/// children, so the Postgres backends that came and went are in the postmaster's share.
fn cpu_by_role() -> BTreeMap<String, f64> {
    // /proc reports times in USER_HZ, 100 per second on Linux whatever the kernel's tick.
    const TICKS_PER_SECOND: f64 = 100.0;
    let processes = processes();
    let workers = worker_pids(&processes);
    let mut seconds = BTreeMap::new();
    for process in &processes {
        let role = match process.name.as_str() {
            "postgres" => "postgres".to_owned(),
            "beam.smp" => "rabbitmq".to_owned(),
            _ => match service_role(process, &workers) {
                Some(role) => role,
                None => continue,
            },
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", process.pid)) else {
            continue;
        };
        // The fields after the command's closing parenthesis start with the state; user,
        // system, children's user and children's system time are the 12th to 15th of them.
        let Some((_, fields)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ticks: f64 = fields
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|v| v.parse::<f64>().ok())
            .sum();
        *seconds.entry(role).or_default() += ticks / TICKS_PER_SECOND;
    }
    seconds
}

/// One row per role: the CPU time it used between two readings, per task of `count`.
fn cpu_rows(
    before: &BTreeMap<String, f64>,
    after: BTreeMap<String, f64>,
    count: usize,
) -> Vec<Value> {
    after
        .into_iter()
        .map(|(role, after)| {
            let used = after - before.get(&role).copied().unwrap_or(0.0);
            let per_task = used * 1000.0 / count.max(1) as f64;
            let name = format!("  CPU per task, {role}");
            println!("{name:<44} {count:>7} {per_task:>10.3} ms");
            json!({"figure": name, "tasks": count, "ms_per_task": per_task})
        })
        .collect()
}

fn memory_rows(when: &str, samples: &[(String, u32, u64)]) -> Vec<Value> {
    let mut roles: Vec<&String> = samples.iter().map(|(role, _, _)| role).collect();
    roles.sort();
    roles.dedup();
    roles
        .into_iter()
        .map(|role| {
            let sizes: Vec<u64> = samples
                .iter()
                .filter(|(r, _, _)| r == role)
                .map(|(_, _, rss)| *rss)
                .collect();
            let max = sizes.iter().max().copied().unwrap_or(0);
            println!(
                "{:<44} {:>7} {:>10.1} MB max per process",
                format!("RSS {role}, {when}"),
                sizes.len(),
                max as f64 / 1024.0
            );
            json!({"figure": format!("RSS {role}, {when}"), "processes": sizes.len(), "max_kb": max, "each_kb": sizes})
        })
        .collect()
}

/// RSS of every scheduler, worker and runtime process on this machine: idle, then the
/// highest seen while `count` tasks run.
async fn memory(client: &Client, options: &Options) -> anyhow::Result<Vec<Value>> {
    let mut results = memory_rows("idle", &resident_memory());
    let function = client.noop_function().await?;
    let clients = if options.clients == 0 {
        16
    } else {
        options.clients
    };
    let load = create_concurrently(client, &function, options.count, clients);
    tokio::pin!(load);
    let mut peak: Vec<(String, u32, u64)> = Vec::new();
    let mut sample = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            done = &mut load => { done?; break; }
            _ = sample.tick() => {
                for (role, pid, rss) in resident_memory() {
                    match peak.iter_mut().find(|(_, p, _)| *p == pid) {
                        Some(entry) => entry.2 = entry.2.max(rss),
                        None => peak.push((role, pid, rss)),
                    }
                }
            }
        }
    }
    client
        .wait_all_finished(&function, options.count as i64, Duration::from_secs(300))
        .await?;
    results.extend(memory_rows("under load (peak)", &peak));
    Ok(results)
}
