//! Load generator: drives a running system through its public interfaces (HTTP API, and
//! Postgres for the timestamps the service records) and prints a table and a JSON summary.
//!
//! ```text
//! loadgen lag     [--count 400] [--rate 200]   dispatch lag: claim time − startTimestamp
//! loadgen latency [--count 200]                one task at a time: create → result visible
//! loadgen cold    [--count 5]                  first invocation of a new version vs. warm
//! loadgen direct  [--count 500]                sequential direct executions and API calls
//! ```
//! Options: `--api http://127.0.0.1:8080` `--database postgres://postgres@127.0.0.1:5432/tasks`.
//! Credentials: the bearer token in `TASKS_TOKEN`, or one minted with the scheduler's secret
//! from `TASKS__AUTH__JWT_SECRET` (as `scheduler token` does).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

struct Options {
    scenario: String,
    api: String,
    database: String,
    count: usize,
    rate: f64,
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
            _ => 5,
        },
        scenario,
        api: "http://127.0.0.1:8080".into(),
        database: "postgres://postgres@127.0.0.1:5432/tasks".into(),
        rate: 200.0,
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
                "code": harness::example_code("testing/noop"),
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Milliseconds of `expression` over the tasks of a function, sorted.
    async fn millis(&self, function: &str, expression: &str) -> anyhow::Result<Vec<f64>> {
        let sql = format!(
            "SELECT (extract(epoch FROM {expression}) * 1000)::float8 FROM tasks WHERE function_name = $1 ORDER BY 1"
        );
        Ok(self
            .db
            .query(&sql, &[&function])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
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
    let auth = scheduler::auth::AuthConfig {
        jwt_secret: std::env::var("TASKS__AUTH__JWT_SECRET").ok(),
        ..Default::default()
    };
    scheduler::auth::token::command(&auth, &[])
        .map_err(|e| anyhow::anyhow!("{e} (or set TASKS_TOKEN)"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    println!(
        "loadgen {} — {} cores, api {}, {}",
        options.scenario,
        std::thread::available_parallelism().map_or(0, usize::from),
        options.api,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "{:<44} {:>7} {:>10} {:>10} {:>10}",
        "figure", "n", "p50 ms", "p99 ms", "max ms"
    );
    let results = match options.scenario.as_str() {
        "lag" => lag(&client, &options).await?,
        "latency" => latency(&client, &options).await?,
        "cold" => cold(&client, &options).await?,
        "direct" => direct(&client, &options).await?,
        other => bail!("unknown scenario {other}"),
    };
    println!(
        "{}",
        json!({"scenario": options.scenario, "count": options.count, "rate": options.rate, "results": results})
    );
    Ok(())
}

/// Tasks due at a steady rate: how late does each start?
async fn lag(client: &Client, options: &Options) -> anyhow::Result<Vec<Value>> {
    let function = client.noop_function().await?;
    // Warm the runtime first so the figure is about dispatch, not a cold start.
    client.post("/", &json!({"functionName": function})).await?;
    client
        .wait_all_finished(&function, 1, Duration::from_secs(30))
        .await?;
    let first = chrono::Utc::now() + chrono::Duration::seconds(3);
    let interval = 1.0 / options.rate;
    for i in 0..options.count {
        let start = first + chrono::Duration::microseconds((i as f64 * interval * 1e6) as i64);
        client
            .post(
                "/",
                &json!({"functionName": function, "startTimestamp": common::time::format(&start)}),
            )
            .await?;
    }
    client
        .wait_all_finished(
            &function,
            options.count as i64 + 1,
            Duration::from_secs(60 + options.count as u64),
        )
        .await?;
    let mut lags = client
        .millis(&function, "claimed_at - start_timestamp")
        .await?;
    lags.remove(0);
    Ok(vec![summary(
        &format!("dispatch lag at {} tasks/s", options.rate),
        &mut lags,
    )])
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
            tokio::time::sleep(Duration::from_micros(200)).await;
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
    Ok(vec![
        summary("direct execution, warm python no-op", &mut executions),
        summary("API function call, warm python no-op", &mut calls),
    ])
}

/// The first invocation of each new function version, against warm ones.
async fn cold(client: &Client, options: &Options) -> anyhow::Result<Vec<Value>> {
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for runtime in [
        ("python3.11", "testing/noop", "handler.handle"),
        ("nodejs20.x", "testing/node-noop", "index.handler"),
    ] {
        let name = format!("loadgen-cold-{}", common::id::ObjectId::generate());
        client
            .post("/functions", &json!({"name": name, "runtime": runtime.0, "entryPoint": runtime.2, "code": harness::example_code(runtime.1)}))
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
